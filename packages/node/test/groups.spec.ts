/**
 * Group calls at one super node over a SimNetwork (centralized mode): groups from the
 * accounts store, ring-all and hunt, with real transactions, CANCELs and 487s.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import type { Source } from '@sipring/interface'
import { SimClock, SeededRng, SimNetwork, MemoryLogger, type SimTransport } from '@sipring/testkit'
import { createResponse, parseMessage, serialize, SipRequest, SipResponse, type SipMessage } from '@sipring/sip'
import { LevelAccountStore, type AccountDb } from '@sipring/auth'
import { createSuperNode } from '../src/index.js'

import { NODE, phone, request, type Phone } from './sim-phone.js'

const responses = (p: Phone): SipResponse[] => p.inbox.map(e => e.msg).filter((m): m is SipResponse => !m.isRequest)
const requests = (p: Phone, method?: string): SipRequest[] =>
  p.inbox.map(e => e.msg).filter((m): m is SipRequest => m.isRequest && (method === undefined || m.method === method))
const finals = (p: Phone): number[] => responses(p).map(r => r.status).filter(s => s >= 200)

async function run (clock: SimClock, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    clock.advance(1)
    await new Promise(resolve => setImmediate(resolve))
  }
}

/**
 * A member phone as a UAS: rings (180) on INVITE; answers a CANCEL 200 and its INVITE 487;
 * `answer(status)` sends a final for the INVITE it got.
 */
class Member {
  private readonly seen = new Set<SipMessage>()
  constructor (readonly p: Phone) {}
  get invites (): SipRequest[] { return requests(this.p, 'INVITE') }
  get cancels (): SipRequest[] { return requests(this.p, 'CANCEL') }
  async pump (): Promise<void> {
    for (const { msg } of this.p.inbox) {
      if (this.seen.has(msg) || !(msg instanceof SipRequest)) continue
      this.seen.add(msg)
      if (msg.method === 'INVITE') await this.p.send(createResponse(msg, 180, 'Ringing', `tag-${this.p.host}`))
      if (msg.method === 'CANCEL') {
        await this.p.send(createResponse(msg, 200, 'OK'))
        const inv = this.invites.find(i => i.get('via') === msg.get('via'))
        if (inv !== undefined) await this.p.send(createResponse(inv, 487, 'Request Terminated', `tag-${this.p.host}`))
      }
    }
  }

  async answer (status: number): Promise<void> {
    const inv = this.invites[this.invites.length - 1]!
    await this.p.send(createResponse(inv, status, undefined, `tag-${this.p.host}`))
  }
}

async function setup (groups: Array<{ aor: string, members: string[], policy?: 'ring-all' | 'hunt' }>, init: { memberTimeout?: number, auth?: boolean } = {}) {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(7)
  const net = new SimNetwork({ clock, rng: rng.fork('net'), latencyMs: 2 })
  const accounts = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  for (const g of groups) await accounts.addGroup(g)
  const node = createSuperNode({ clock, rng, logger: new MemoryLogger(), transports: [net.transport(NODE)], accounts }, {
    domains: ['example.org'], nodeId: 'node-a', ...(init.auth === true ? { auth: { enabled: true, realm: 'example.org' } } : {}), ...(init.memberTimeout !== undefined ? { groups: { memberTimeout: init.memberTimeout } } : {})
  })
  await node.start()
  const caller = await phone(net, '10.0.1.1')
  /** Register `user` from each host; returns one Member per host. */
  const member = async (user: string, ...hosts: string[]): Promise<Member[]> => {
    const out: Member[] = []
    for (const host of hosts) {
      const p = await phone(net, host)
      await p.send(request('REGISTER', 'sip:example.org', `sip:${user}@example.org`, `sip:${user}@example.org`, host, [
        ['contact', `<sip:${user}@${host}:5060>`], ['expires', '3600']
      ]))
      out.push(new Member(p))
    }
    await run(clock, 20)
    for (const m of out) t.equal(finals(m.p)[0], 200, `${user}@${m.p.host} registered`)
    return out
  }
  const call = async (to: string): Promise<SipRequest> => {
    const inv = request('INVITE', to, 'sip:alice@example.org', to, '10.0.1.1', [['contact', '<sip:alice@10.0.1.1:5060>']])
    await caller.send(inv)
    return inv
  }
  /** Let the network run, the members answer as UAS. */
  const settle = async (members: Member[], ms = 30): Promise<void> => {
    for (let i = 0; i < ms; i += 5) {
      await run(clock, 5)
      for (const m of members) await m.pump()
    }
  }
  return { clock, node, caller, member, call, settle, stop: async () => { await node.stop() } }
}

t.test('ring-all over the network: 3 members × 2 phones ring; one answers; the other 5 are CANCELled', async t => {
  const s = await setup([{ aor: 'sip:sales@example.org', members: ['sip:m1@example.org', 'm2@example.org', 'sip:m3@example.org'] }])
  const all = [
    ...await s.member('m1', '10.0.2.1', '10.0.2.2'),
    ...await s.member('m2', '10.0.2.3', '10.0.2.4'),
    ...await s.member('m3', '10.0.2.5', '10.0.2.6')
  ]
  await s.call('sip:sales@example.org')
  await s.settle(all)
  t.same(all.map(m => m.invites.length), [1, 1, 1, 1, 1, 1], 'every phone rings once')
  t.ok(responses(s.caller).some(r => r.status === 180), 'caller hears ringing')
  await all[3]!.answer(200)
  await s.settle(all, 60)
  t.same(all.map(m => m.cancels.length), [1, 1, 1, 0, 1, 1], 'the other 5 phones get a CANCEL')
  t.same(finals(s.caller), [200], 'exactly one final: the 200')
  t.equal(responses(s.caller).find(r => r.status === 200)!.get('to')!.includes('tag-10.0.2.4'), true, 'from the answering phone')
  t.equal(s.node.status().proxy.activeContexts, 0)
  await s.stop()
})

t.test('hunt over the network: member 2 rings after member 1 is busy, member 3 after member 2 times out', async t => {
  const s = await setup([{ aor: 'sip:desk@example.org', members: ['sip:m1@example.org', 'sip:m2@example.org', 'sip:m3@example.org'], policy: 'hunt' }], { memberTimeout: 2_000 })
  const [m1] = await s.member('m1', '10.0.3.1')
  const [m2] = await s.member('m2', '10.0.3.2')
  const [m3] = await s.member('m3', '10.0.3.3')
  const ms = [m1!, m2!, m3!]
  await s.call('sip:desk@example.org')
  await s.settle(ms)
  t.same(ms.map(m => m.invites.length), [1, 0, 0], 'member 1 first')
  await m1!.answer(486)
  await s.settle(ms)
  t.same(ms.map(m => m.invites.length), [1, 1, 0], 'member 2 after 486')
  await s.settle(ms, 1_900)
  t.equal(m3!.invites.length, 0, 'member 3 not yet')
  await s.settle(ms, 200)
  t.equal(m2!.cancels.length, 1, 'member 2 cancelled after its 2 s')
  t.equal(m3!.invites.length, 1, 'member 3 rings')
  await m3!.answer(486)
  await s.settle(ms, 60)
  t.same(finals(s.caller), [486], 'all busy → 486')
  await s.stop()
})

t.test('caller CANCEL during ringing and an unreachable group', async t => {
  const s = await setup([
    { aor: 'sip:sales@example.org', members: ['sip:m1@example.org', 'sip:m2@example.org'] },
    { aor: 'sip:ghosts@example.org', members: ['sip:nobody@example.org'] }
  ])
  const all = [...await s.member('m1', '10.0.4.1'), ...await s.member('m2', '10.0.4.2')]
  const inv = await s.call('sip:sales@example.org')
  await s.settle(all)
  const cancel = new SipRequest('CANCEL', inv.uri)
  for (const h of ['via', 'from', 'to', 'call-id']) cancel.append(h, inv.get(h)!)
  cancel.append('max-forwards', '70')
  cancel.append('cseq', inv.get('cseq')!.replace('INVITE', 'CANCEL'))
  await s.caller.send(cancel)
  await s.settle(all, 60)
  t.same(all.map(m => m.cancels.length), [1, 1], 'every branch cancelled')
  t.ok(finals(s.caller).includes(487), 'caller gets 487 for the INVITE')

  await s.call('sip:ghosts@example.org')
  await s.settle(all, 30)
  t.equal(finals(s.caller).at(-1), 480, 'no member reachable → 480')
  await s.stop()
})

t.test('with digest auth on, an unauthenticated caller of a group is challenged and nobody rings', async t => {
  const s = await setup([{ aor: 'sip:sales@example.org', members: ['sip:m1@example.org'] }], { auth: true })
  await s.call('sip:sales@example.org')
  await s.settle([], 30)
  t.same(finals(s.caller), [407], 'Proxy-Authenticate challenge')
  t.equal(s.node.status().proxy.branches, 0, 'no branch forked')
  await s.stop()
})
