/**
 * Digest authentication at the super node over a SimNetwork: the full challenge → response flow.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import type { Source } from '@sipring/interface'
import { SimClock, SeededRng, SimNetwork, MemoryLogger, type SimTransport } from '@sipring/testkit'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader, parseMessage, serialize, SipRequest, SipResponse, type SipMessage } from '@sipring/sip'
import { LevelAccountStore, type AccountDb } from '@sipring/auth'
import { createSuperNode, type SuperNodeInit } from '../src/index.js'

import { NODE, nextSeq, phone, request, type Phone } from './sim-phone.js'

function register (user: string, host: string, to = user): SipRequest {
  return request('REGISTER', 'sip:example.org', `sip:${user}@example.org`, `sip:${to}@example.org`, host, [
    ['contact', `<sip:${user}@${host}:5060>`], ['expires', '3600']
  ])
}

/** Same request, new branch and CSeq, with credentials answering `ch`. */
function withCredentials (req: SipRequest, ch: SipResponse, user: string, password: string, nc = 1): SipRequest {
  const hdr = ch.status === 401 ? 'www-authenticate' : 'proxy-authenticate'
  const c = parseAuthHeader(ch.getAll(hdr)[0]!).params
  const alg = c.get('algorithm')!
  const r = req.clone()
  const seq = nextSeq()
  r.set('via', r.get('via')!.replace(/branch=[^;]+/, `branch=z9hG4bKauth${seq}`))
  r.set('cseq', `${seq} ${req.method}`)
  const ncs = nc.toString(16).padStart(8, '0')
  const response = digestResponse({ algorithm: alg, ha1: ha1(alg, user, c.get('realm')!, password), nonce: c.get('nonce')!, nc: ncs, cnonce: 'feedbeef', qop: 'auth', method: r.method, uri: r.uri })
  r.set(ch.status === 401 ? 'authorization' : 'proxy-authorization', formatAuthHeader({ scheme: 'Digest', params: new Map([
    ['username', user], ['realm', c.get('realm')!], ['nonce', c.get('nonce')!], ['uri', r.uri], ['response', response], ['algorithm', alg], ['cnonce', 'feedbeef'], ['qop', 'auth'], ['nc', ncs]
  ]) }))
  return r
}

const responses = (p: Phone): SipResponse[] => p.inbox.map(e => e.msg).filter((m): m is SipResponse => !m.isRequest)
const requests = (p: Phone): SipRequest[] => p.inbox.map(e => e.msg).filter((m): m is SipRequest => m.isRequest)
const last = (p: Phone): SipResponse => { const r = responses(p); return r[r.length - 1]! }

async function run (clock: SimClock, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    clock.advance(1)
    await new Promise(resolve => setImmediate(resolve))
  }
}

async function setup (auth: SuperNodeInit['auth'] | null = { enabled: true, realm: 'example.org', limits: { maxFailuresPerSource: 3, banMs: 60_000 } }) {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(42)
  const net = new SimNetwork({ clock, rng: rng.fork('net'), latencyMs: 2 })
  const accounts = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  await accounts.addUser({ user: 'alice', realm: 'example.org', password: 'alice-pw' })
  await accounts.addUser({ user: 'bob', realm: 'example.org', password: 'bob-pw', maxContacts: 1 })
  const node = createSuperNode({ clock, rng, logger: new MemoryLogger(), transports: [net.transport(NODE)], accounts }, {
    domains: ['example.org'], nodeId: 'node-a', ...(auth !== null ? { auth } : {})
  })
  await node.start()
  return { clock, net, node, accounts }
}

t.test('REGISTER: 401, then 200 with credentials; INVITE: 407, then forwarded without Proxy-Authorization', async tt => {
  const { clock, net, node } = await setup()
  tt.teardown(() => node.stop())
  const alice = await phone(net, '10.0.0.2')
  const bob = await phone(net, '10.0.0.3')
  const reg = register('bob', '10.0.0.3')
  await bob.send(reg)
  await run(clock, 10)
  const ch = last(bob)
  tt.equal(ch.status, 401)
  tt.equal(ch.getAll('www-authenticate').length, 2)
  tt.match(ch.getAll('www-authenticate')[0], /algorithm=SHA-256/)
  tt.equal(node.location.lookup('sip:bob@example.org').length, 0, 'nothing bound before authentication')
  await bob.send(withCredentials(reg, ch, 'bob', 'bob-pw'))
  await run(clock, 10)
  tt.equal(last(bob).status, 200)
  tt.equal(node.location.lookup('sip:bob@example.org').length, 1)

  const inv = request('INVITE', 'sip:bob@example.org', 'sip:alice@example.org', 'sip:bob@example.org', '10.0.0.2', [['contact', '<sip:alice@10.0.0.2:5060>']])
  await alice.send(inv)
  await run(clock, 10)
  tt.equal(last(alice).status, 407)
  tt.equal(requests(bob).length, 0, 'bob not rung before authentication')
  // ACK for the 407 is absorbed by the INVITE server transaction (not challenged)
  await alice.send(withCredentials(inv, last(alice), 'alice', 'alice-pw'))
  await run(clock, 10)
  const fwd = requests(bob).find(r => r.method === 'INVITE')
  tt.ok(fwd, 'bob received the INVITE')
  tt.notOk(fwd!.has('proxy-authorization'), 'our credentials are not forwarded')
  tt.match(node.status().auth, { challenges: 2, authenticated: 2 })
})

t.test('wrong password → 401 again, then banned (403 + Retry-After) after N failures', async tt => {
  const { clock, net, node } = await setup()
  tt.teardown(() => node.stop())
  const mallory = await phone(net, '10.0.0.66')
  const reg = register('alice', '10.0.0.66')
  const statuses: number[] = []
  for (let i = 0; i < 5; i++) {
    await mallory.send(reg.clone())
    await run(clock, 10)
    const ch = last(mallory)
    if (ch.status !== 401) { statuses.push(ch.status); continue }
    await mallory.send(withCredentials(reg, ch, 'alice', 'guess' + String(i)))
    await run(clock, 10)
    statuses.push(last(mallory).status)
  }
  tt.same(statuses, [401, 401, 401, 403, 403])
  tt.equal(last(mallory).get('retry-after'), '60')
  tt.equal(node.location.lookup('sip:alice@example.org').length, 0)
})

t.test('replayed nc → 401; stale nonce → 401 stale=true; another user\'s To → 403', async tt => {
  const { clock, net, node } = await setup()
  tt.teardown(() => node.stop())
  const alice = await phone(net, '10.0.0.2')
  const reg = register('alice', '10.0.0.2')
  await alice.send(reg)
  await run(clock, 10)
  const ch = last(alice)
  const ok = withCredentials(reg, ch, 'alice', 'alice-pw')
  await alice.send(ok)
  await run(clock, 10)
  tt.equal(last(alice).status, 200)
  // the same credentials (same nonce and nc) in a new transaction
  const replay = ok.clone()
  replay.set('via', replay.get('via')!.replace(/branch=[^;]+/, 'branch=z9hG4bKreplay1'))
  replay.set('cseq', '9999 REGISTER')
  await alice.send(replay)
  await run(clock, 10)
  tt.equal(last(alice).status, 401, 'replayed nc refused')
  tt.notMatch(last(alice).get('www-authenticate')!, /stale/)
  // next nc on the same nonce is fine
  await alice.send(withCredentials(reg, ch, 'alice', 'alice-pw', 2))
  await run(clock, 10)
  tt.equal(last(alice).status, 200)
  // stale: the nonce is older than 300 s
  clock.advance(301_000)
  await alice.send(withCredentials(reg, ch, 'alice', 'alice-pw', 3))
  await run(clock, 10)
  tt.equal(last(alice).status, 401)
  tt.match(last(alice).get('www-authenticate')!, /stale=true/)
  // alice authenticates but registers bob's AOR
  const evil = register('alice', '10.0.0.2', 'bob')
  await alice.send(evil)
  await run(clock, 10)
  await alice.send(withCredentials(evil, last(alice), 'alice', 'alice-pw'))
  await run(clock, 10)
  tt.equal(last(alice).status, 403)
  tt.match(last(alice).reason, /To user does not match/)
  tt.equal(node.location.lookup('sip:bob@example.org').length, 0)
})

t.test('per-user maxContacts: a second contact for bob is refused with 403', async tt => {
  const { clock, net, node } = await setup()
  tt.teardown(() => node.stop())
  const p1 = await phone(net, '10.0.0.3')
  const p2 = await phone(net, '10.0.0.4')
  for (const [p, host, want] of [[p1, '10.0.0.3', 200], [p1, '10.0.0.3', 200], [p2, '10.0.0.4', 403]] as const) {
    const reg = register('bob', host)
    await p.send(reg)
    await run(clock, 10)
    await p.send(withCredentials(reg, last(p), 'bob', 'bob-pw'))
    await run(clock, 10)
    tt.equal(last(p).status, want, `${host} → ${want}`)
  }
  tt.match(last(p2).reason, /too many registered contacts/)
  tt.equal(node.location.lookup('sip:bob@example.org').length, 1)
})

t.test('auth off by default: REGISTER goes straight through; enabled without accounts is a clear error', async tt => {
  const { clock, net, node } = await setup(null)
  tt.teardown(() => node.stop())
  tt.equal(node.auth, undefined)
  const p = await phone(net, '10.0.0.9')
  await p.send(register('anyone', '10.0.0.9'))
  await run(clock, 10)
  tt.equal(last(p).status, 200)
  const clock2 = new SimClock(0)
  tt.throws(() => createSuperNode({ clock: clock2, rng: new SeededRng(1), logger: new MemoryLogger(), transports: [] }, { auth: { enabled: true, realm: 'x.org' } }), /needs components.accounts/)
})
