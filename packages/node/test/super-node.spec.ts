import t from 'tap'
import { MemoryLevel } from 'memory-level'
import type { Source } from '@sipring/interface'
import { SimClock, SeededRng, SimNetwork, MemoryLogger, type SimTransport } from '@sipring/testkit'
import { parseMessage, serialize, SipRequest, SipResponse, type SipMessage } from '@sipring/sip'
import { createSuperNode, type SuperNode } from '../src/index.js'

import { NODE, phone, request, type Phone } from './sim-phone.js'

function register (user: string, host: string, expires = 3600): SipRequest {
  return request('REGISTER', 'sip:example.org', `sip:${user}@example.org`, `sip:${user}@example.org`, host, [
    ['contact', `<sip:${user}@${host}:5060>`], ['expires', String(expires)]
  ])
}

function responses (p: Phone): SipResponse[] {
  return p.inbox.map(e => e.msg).filter((m): m is SipResponse => !m.isRequest)
}
function requests (p: Phone): SipRequest[] {
  return p.inbox.map(e => e.msg).filter((m): m is SipRequest => m.isRequest)
}

async function setup (db?: MemoryLevel<string, any>) {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(42)
  const net = new SimNetwork({ clock, rng: rng.fork('net'), latencyMs: 2 })
  const logger = new MemoryLogger()
  const transport = net.transport(NODE)
  const node = createSuperNode({ clock, rng, logger, transports: [transport], ...(db !== undefined ? { db } : {}) }, {
    domains: ['example.org'], nodeId: 'node-a', minExpires: 60
  })
  await node.start()
  return { clock, net, logger, node }
}

/** Advance simulated time in small steps, letting promises (db writes, async handlers) settle. */
async function run (clock: SimClock, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    clock.advance(1)
    await new Promise(resolve => setImmediate(resolve))
  }
}

t.test('REGISTER goes to the registrar, then an INVITE is routed to the registered contact', async t => {
  const { clock, net, node, logger } = await setup()
  t.teardown(() => node.stop())
  const alice = await phone(net, '10.0.0.2')
  const bob = await phone(net, '10.0.0.3')

  await bob.send(register('bob', '10.0.0.3'))
  await run(clock, 20)
  const reg = responses(bob)
  t.equal(reg.length, 1)
  t.equal(reg[0]!.status, 200)
  t.match(reg[0]!.get('contact'), /sip:bob@10\.0\.0\.3:5060/)
  t.equal(node.location.lookup('sip:bob@example.org').length, 1)
  t.equal(node.location.lookup('sip:bob@example.org')[0]!.node, 'node-a', 'binding tagged with the node id')
  t.match(node.status(), { nodeId: 'node-a', aors: 1, contacts: 1, registers: 1, running: true, stack: { received: 1 } })

  const invite = request('INVITE', 'sip:bob@example.org', 'sip:alice@example.org', 'sip:bob@example.org', '10.0.0.2', [
    ['contact', '<sip:alice@10.0.0.2:5060>'], ['content-type', 'application/sdp']
  ])
  invite.body = Buffer.from('v=0\r\n')
  await alice.send(invite)
  await run(clock, 20)
  const forwarded = requests(bob).find(r => r.method === 'INVITE')
  t.ok(forwarded, 'bob received the INVITE')
  t.equal(forwarded!.uri, 'sip:bob@10.0.0.3:5060', 'Request-URI rewritten to the contact')
  t.equal(forwarded!.getAll('via').length, 2, 'the proxy added its Via')
  t.equal(forwarded!.get('max-forwards'), '69')
  t.equal(forwarded!.body.toString(), 'v=0\r\n')

  // bob rings then answers; alice sees both through the proxy
  const ringing = new SipResponse(180, 'Ringing')
  const ok = new SipResponse(200, 'OK')
  for (const res of [ringing, ok]) {
    for (const h of forwarded!.headers) if (['via', 'from', 'to', 'call-id', 'cseq', 'record-route'].includes(h.name)) res.append(h.name, h.value)
    res.set('to', forwarded!.get('to') + ';tag=bobtag')
    res.append('contact', '<sip:bob@10.0.0.3:5060>')
    await bob.t.send(serialize(res), { protocol: 'udp', address: '10.0.0.1', port: 5060 })
  }
  await run(clock, 20)
  const got = responses(alice).map(r => r.status)
  t.ok(got.includes(180), `alice got 180 (${got.join(',')})`)
  t.ok(got.includes(200), 'alice got 200')
  t.equal(responses(alice).find(r => r.status === 200)!.getAll('via').length, 1, 'the proxy removed its Via')
  t.match(node.status().proxy, { requestsIn: 1, branches: 1 })
})

t.test('an unknown AOR gets 404; a registrar failure gets 500 and is logged, never a crash', async t => {
  const { clock, net, node, logger } = await setup()
  t.teardown(() => node.stop())
  const alice = await phone(net, '10.0.0.2')
  await alice.send(request('INVITE', 'sip:nobody@example.org', 'sip:alice@example.org', 'sip:nobody@example.org', '10.0.0.2', [['contact', '<sip:alice@10.0.0.2>']]))
  await run(clock, 20)
  t.ok(responses(alice).some(r => r.status === 404), 'INVITE to an unknown AOR: 404')

  ;(node.registrar as { handle: unknown }).handle = async () => { throw new Error('disk on fire') }
  await alice.send(register('alice', '10.0.0.2'))
  await run(clock, 20)
  const r500 = responses(alice).find(r => r.status === 500)
  t.ok(r500, 'registrar exception answered 500')
  t.match(r500!.reason, /registrar/)
  t.ok(logger.records.some(r => r.level === 'error' && /registrar failed/.test(String(r.msg)) && /disk on fire/.test(String(r.err))))
  t.match(node.status(), { registrarErrors: 1 })
})

t.test('stop flushes the location service; a new node on the same db has the bindings back', async t => {
  const db = new MemoryLevel<string, any>({ valueEncoding: 'json' })
  const first = await setup(db)
  const bob = await phone(first.net, '10.0.0.3')
  await bob.send(register('bob', '10.0.0.3'))
  await run(first.clock, 10)
  t.equal(responses(bob)[0]?.status, 200)
  await first.node.stop()
  t.equal(first.node.status().running, false)

  const second = await setup(db)
  t.teardown(() => second.node.stop())
  const b = second.node.location.lookup('sip:bob@example.org')
  t.equal(b.length, 1, 'binding survived the restart')
  t.equal(b[0]!.contact, 'sip:bob@10.0.0.3:5060')
})

t.test('start is idempotent and status reports listeners', async t => {
  const { node } = await setup()
  await node.start()
  const s = node.status()
  t.same(s.listeners, [{ protocol: 'udp', address: '10.0.0.1', port: 5060 }])
  t.equal(s.transactions, 0)
  await node.stop()
  await node.stop()
})

t.test('a node id is generated when none is given', async t => {
  const clock = new SimClock()
  const net = new SimNetwork({ clock, rng: new SeededRng(1) })
  const node: SuperNode = createSuperNode({ clock, rng: new SeededRng(7), logger: new MemoryLogger(), transports: [net.transport(NODE)] }, {})
  t.match(node.nodeId, /^[a-z0-9]{16}$/)
  t.equal(createSuperNode({ clock, rng: new SeededRng(7), logger: new MemoryLogger(), transports: [] }, {}).nodeId, node.nodeId, 'deterministic from the seed')
})
