/**
 * Overload protection: past `overload.maxInFlight` requests in progress, new ones are answered
 * 503 + Retry-After at once, before authentication or any lookup; the bound recovers once the
 * backlog drains. SimClock + SimNetwork; the backlog is made by an account store that holds its answers.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock, SeededRng, SimNetwork, MemoryLogger } from '@sipring/testkit'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader, type SipRequest, type SipResponse } from '@sipring/sip'
import { LevelAccountStore, type Account, type AccountDb } from '@sipring/auth'
import { createSuperNode, OverloadGuard, type SuperNodeInit } from '../src/index.js'
import { NODE, phone, request, type Phone } from './sim-phone.js'

const USERS = Array.from({ length: 12 }, (_, i) => `u${i}`)

async function run (clock: SimClock, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    clock.advance(1)
    await new Promise(resolve => setImmediate(resolve))
  }
}

/** An account store whose reads wait until `release()` (while `held`). */
async function heldStore (clock: SimClock): Promise<{ accounts: { getUser: (u: string, r: string) => Promise<Account | undefined> }, reads: string[], hold: () => void, release: () => void }> {
  const store = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  for (const u of USERS) await store.addUser({ user: u, realm: 'example.org', password: `${u}-pw` })
  let gate: Promise<void> | undefined
  let open: () => void = () => {}
  const reads: string[] = []
  return {
    reads,
    hold: () => { gate = new Promise<void>(resolve => { open = resolve }) },
    release: () => { gate = undefined; open() },
    accounts: {
      getUser: async (u, r) => {
        reads.push(u)
        if (gate !== undefined) await gate
        return await store.getUser(u, r)
      }
    }
  }
}

async function setup (overload: SuperNodeInit['overload'], withAuth = true) {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(5)
  const net = new SimNetwork({ clock, rng: rng.fork('net'), latencyMs: 1 })
  const held = await heldStore(clock)
  const node = createSuperNode({ clock, rng, logger: new MemoryLogger(), transports: [net.transport(NODE)], accounts: held.accounts }, {
    domains: ['example.org'], nodeId: 'node-o', ...(withAuth ? { auth: { enabled: true, credentialTtlMs: 1 } } : {}), ...(overload !== undefined ? { overload } : {})
  })
  await node.start()
  return { clock, net, node, ...held }
}

function register (user: string, host: string): SipRequest {
  return request('REGISTER', 'sip:example.org', `sip:${user}@example.org`, `sip:${user}@example.org`, host, [
    ['contact', `<sip:${user}@${host}:5060>`], ['expires', '3600']
  ])
}

/** `user`'s REGISTER answering challenge `ch` (new branch, CSeq), nc as given. */
function signed (user: string, host: string, ch: SipResponse, nc: number): SipRequest {
  const r = register(user, host)
  const c = parseAuthHeader(ch.getAll('www-authenticate')[0]!).params
  const alg = c.get('algorithm')!
  const ncs = nc.toString(16).padStart(8, '0')
  const response = digestResponse({ algorithm: alg, ha1: ha1(alg, user, 'example.org', `${user}-pw`), nonce: c.get('nonce')!, nc: ncs, cnonce: 'c0c0', qop: 'auth', method: r.method, uri: r.uri })
  r.set('authorization', formatAuthHeader({ scheme: 'Digest', params: new Map([
    ['username', user], ['realm', 'example.org'], ['nonce', c.get('nonce')!], ['uri', r.uri], ['response', response], ['algorithm', alg], ['cnonce', 'c0c0'], ['qop', 'auth'], ['nc', ncs]
  ]) }))
  return r
}

const finals = (p: Phone): SipResponse[] => p.inbox.map(e => e.msg).filter((m): m is SipResponse => !m.isRequest && m.status >= 200)
const byCallId = (p: Phone, r: SipRequest): SipResponse | undefined => finals(p).find(x => x.get('call-id') === r.get('call-id'))

/** A challenge to answer (one nonce for every user: nc values keep them apart). */
async function challenge (clock: SimClock, p: Phone): Promise<SipResponse> {
  const r = register('u0', p.host)
  await p.send(r)
  await run(clock, 5)
  const ch = byCallId(p, r)!
  if (ch.status !== 401) throw new Error(`expected 401, got ${ch.status}`)
  return ch
}

t.test('flood beyond maxInFlight → 503 + Retry-After at once, none of them processed; the bound recovers after the backlog drains', async tt => {
  const { clock, net, node, reads, hold, release } = await setup({ maxInFlight: 5, retryAfter: 7 })
  tt.teardown(() => node.stop())
  const p = await phone(net, '10.0.0.2')
  const ch = await challenge(clock, p)
  const challenges = node.status().auth!.challenges
  hold()
  const reqs = USERS.slice(0, 9).map((u, i) => signed(u, p.host, ch, i + 1))
  for (const r of reqs) await p.send(r)
  await run(clock, 10)
  tt.same(node.status().overload, { inFlight: 5, peakInFlight: 5, rejected: 4, maxInFlight: 5, retryAfter: 7 })
  for (const r of reqs.slice(5)) {
    const res = byCallId(p, r)
    tt.equal(res?.status, 503, `${r.get('from')!} shed`)
    tt.equal(res?.reason, 'Service Unavailable')
    tt.equal(res?.get('retry-after'), '7')
    tt.match(res?.get('to') ?? '', /;tag=/, 'the 503 carries a To tag')
  }
  for (const r of reqs.slice(0, 5)) tt.equal(byCallId(p, r), undefined, 'the first five are still in progress')
  tt.same([...new Set(reads)].sort(), ['u0', 'u1', 'u2', 'u3', 'u4'], 'no account read for a shed request')
  tt.equal(node.status().auth!.challenges, challenges, 'nor any digest work')
  tt.equal(node.location.aors().length, 0)

  release()
  await run(clock, 10)
  for (const r of reqs.slice(0, 5)) tt.equal(byCallId(p, r)?.status, 200, `${r.get('from')!} registered`)
  tt.equal(node.status().overload.inFlight, 0, 'backlog drained')
  tt.equal(node.location.aors().length, 5)

  // recovered: the shed users retry (as Retry-After says) and pass
  clock.advance(7000)
  const retry = USERS.slice(5, 9).map((u, i) => signed(u, p.host, ch, 20 + i))
  for (const r of retry) await p.send(r)
  await run(clock, 10)
  for (const r of retry) tt.equal(byCallId(p, r)?.status, 200, `${r.get('from')!} registered on retry`)
  tt.equal(node.status().overload.rejected, 4)
  tt.equal(node.location.aors().length, 9)
})

t.test('below the bound every request is processed; a sustained flood keeps in-flight (memory) at the bound', async tt => {
  const { clock, net, node, hold, release } = await setup({ maxInFlight: 10 })
  tt.teardown(() => node.stop())
  const p = await phone(net, '10.0.0.2')
  const ch = await challenge(clock, p)
  hold()
  const ten = USERS.slice(0, 10).map((u, i) => signed(u, p.host, ch, i + 1))
  for (const r of ten) await p.send(r)
  await run(clock, 5)
  release()
  await run(clock, 10)
  tt.same(ten.map(r => byCallId(p, r)?.status), Array(10).fill(200), 'exactly at the bound: all processed')
  tt.equal(node.status().overload.rejected, 0)

  hold()
  const flood: SipRequest[] = []
  for (let i = 0; i < 500; i++) flood.push(signed(USERS[i % USERS.length]!, p.host, ch, 100 + i))
  for (const r of flood) await p.send(r)
  await run(clock, 20)
  const st = node.status().overload
  tt.equal(st.inFlight, 10, 'in progress stays at the bound')
  tt.equal(st.peakInFlight, 10)
  tt.equal(st.rejected, 490)
  tt.equal(finals(p).filter(r => r.status === 503).length, 490)
  tt.ok(node.status().stack.serverTransactions <= 500 + 11, 'the shed transactions are only the stack\'s (answered, timer J)')
  release()
  await run(clock, 10)
  tt.equal(node.status().overload.inFlight, 0)
  tt.equal(finals(p).filter(r => r.status === 200).length, 20)
})

t.test('in-dialog requests get headroom past the bound; new dialogs and REGISTER do not', async tt => {
  const { clock, net, node, hold, release } = await setup({ maxInFlight: 2, retryAfter: 3 })
  tt.teardown(() => node.stop())
  const p = await phone(net, '10.0.0.2')
  const ch = await challenge(clock, p)
  hold()
  const regs = [signed('u1', p.host, ch, 1), signed('u2', p.host, ch, 2)]
  for (const r of regs) await p.send(r)
  await run(clock, 5)
  tt.equal(node.status().overload.inFlight, 2)
  const invite = request('INVITE', 'sip:u3@example.org', 'sip:u1@example.org', 'sip:u3@example.org', p.host, [['contact', `<sip:u1@${p.host}:5060>`]])
  const bye = request('BYE', 'sip:u3@10.0.0.3:5060', 'sip:u1@example.org', 'sip:u3@example.org', p.host)
  bye.set('to', `${bye.get('to')!};tag=callee1`)
  const reg = register('u4', p.host)
  for (const r of [invite, bye, reg]) await p.send(r)
  await run(clock, 20)
  tt.equal(byCallId(p, invite)?.status, 503, 'new INVITE shed')
  tt.equal(byCallId(p, reg)?.status, 503, 'REGISTER shed (even unauthenticated: no challenge work)')
  tt.equal(byCallId(p, reg)?.get('retry-after'), '3')
  tt.not(byCallId(p, bye)?.status, 503, 'in-dialog BYE is processed')
  tt.equal(node.status().overload.rejected, 2)
  release()
  await run(clock, 10)
})

t.test('without authentication the bound holds too; 0 turns it off; bad limits are refused', async tt => {
  const g = new OverloadGuard({ maxInFlight: 0 })
  const r = register('u1', '10.0.0.2')
  let admitted = 0
  for (let i = 0; i < 10_000; i++) if (g.enter(r)) admitted++
  tt.equal(admitted, 10_000, 'maxInFlight 0: no bound')
  tt.equal(g.stats().inFlight, 10_000)
  const one = new OverloadGuard({ maxInFlight: 1, retryAfter: 0 })
  tt.ok(one.enter(r)); tt.notOk(one.enter(r))
  tt.notOk(one.reject(r, 'x').has('retry-after'), 'retryAfter 0: no header')
  one.leave(); one.leave()
  tt.equal(one.stats().inFlight, 0, 'never negative')
  for (const bad of [{ maxInFlight: -1 }, { maxInFlight: 1.5 }, { retryAfter: -1 }, { retryAfter: 100_000 }]) {
    tt.throws(() => new OverloadGuard(bad), TypeError)
  }
  const { clock, net, node } = await setup({ maxInFlight: 3 }, false)
  tt.teardown(() => node.stop())
  const p = await phone(net, '10.0.0.2')
  const regs = USERS.slice(0, 3).map(u => register(u, p.host))
  for (const x of regs) await p.send(x)
  await run(clock, 10)
  tt.same(regs.map(x => byCallId(p, x)?.status), [200, 200, 200])
  tt.equal(node.status().overload.rejected, 0)
})
