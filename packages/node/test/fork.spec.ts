/**
 * Distributed forking of group INVITEs over the overlay: 5 super nodes (SimClock + SimNetwork +
 * SimOverlayHub), member UAs attached to several nodes, the caller at n1 (the originating node S).
 */
import t from 'tap'
import { crash, request, responses, run, send, until } from './overlay-helpers.js'
import {
  call, caller, cancel, finals, forkCluster, member, node, ownersAt, provisionals, shutdown,
  type ForkCluster, type Member
} from './fork-helpers.js'

const u = (n: string): string => `sip:${n}@example.org`
const SEED = Number(process.env.OVERLAY_SEED ?? 0) * 100

/** Register members `names`, the i-th attached to `at(i)`. */
async function members (c: ForkCluster, names: string[], at: (i: number, name: string) => string): Promise<Member[]> {
  const out: Member[] = []
  for (let i = 0; i < names.length; i++) out.push(await member(c, names[i]!, at(i, names[i]!)))
  await run(c, 200)
  return out
}

const rang = (ms: Member[]): number[] => ms.map(m => m.invites.length)

t.test('ring-all over 5 nodes: one fork request per owner node; one answer connects, every other member is CANCELled', async t => {
  const names = Array.from({ length: 12 }, (_, i) => `m${i}`)
  const c = await forkCluster(11 + SEED, 5, [{ aor: u('sales'), members: names.map(u) }])
  t.teardown(() => shutdown(c))
  const ms = await members(c, names, i => c.ids[i % 5]!)
  const s = node(c, 'n1')
  const primary = names.map(n => ownersAt(c, 'n1', u(n))[0]!)
  const owners = new Set(primary.filter(o => o !== 'n1'))
  const own = primary.filter(o => o === 'n1').length
  // members attached to n1 but owned elsewhere: n1 forks to them itself (fork-from: their owner leaves them out)
  const attached = primary.filter((o, i) => o !== 'n1' && c.ids[i % 5] === 'n1').length
  t.ok(owners.size >= 2, `members owned by ${owners.size} other nodes`)
  const alice = await caller(c, 'n1')
  const before = s.proxy.stats()
  await call(alice, u('sales'))
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 5000, 5) >= 0, 'every member rings')
  const after = s.proxy.stats()
  t.equal(after.forkRequests - before.forkRequests, owners.size, 'S sends exactly one fork request per owner node')
  t.equal(after.branches - before.branches, owners.size + own + attached, 'S forks only to its own and its attached members besides')
  for (const id of owners) t.equal(node(c, id).proxy.stats().forksAccepted, 1, `${id} accepted one fork request`)
  t.ok(await until(c, () => provisionals(alice).length > 0, 2000, 5) >= 0, 'caller hears ringing')
  await run(c, 200)
  const ringing = provisionals(alice).length
  t.ok(ringing <= owners.size + own + attached && ringing < names.length, `an owner relays one 180 for its members (${ringing} for ${names.length} members)`)
  await ms[5]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0 && ms.every((m, i) => i === 5 || m.cancels.length > 0), 5000, 5) >= 0, 'everyone else is cancelled')
  await run(c, 500)
  t.same(rang(ms), ms.map(() => 1), 'no member rang twice')
  t.same(finals(alice), [200], 'exactly one final: the 200')
  t.match(responses(alice, 'INVITE').find(r => r.status === 200)!.get('to'), /tag=m5-tag/, 'from the answering member')
  t.same(ms.map(m => m.cancels.length), ms.map((_, i) => i === 5 ? 0 : 1), 'each other member sees one CANCEL')
  for (const id of c.ids) t.equal(node(c, id).proxy.stats().activeContexts, 0, `${id}: no context left`)
})

t.test('caller CANCEL during ringing; all busy → 486; 6xx precedence', async t => {
  const names = ['b0', 'b1', 'b2', 'b3', 'b4', 'b5']
  const c = await forkCluster(12 + SEED, 4, [{ aor: u('team'), members: names.map(u) }])
  t.teardown(() => shutdown(c))
  const ms = await members(c, names, i => c.ids[i % 4]!)
  const alice = await caller(c, 'n1')

  const inv = await call(alice, u('team'))
  t.ok(await until(c, () => ms.every(m => m.invites.length === 1), 5000, 5) >= 0, 'all ring')
  await cancel(alice, inv)
  t.ok(await until(c, () => finals(alice).length > 0 && ms.every(m => m.cancels.length === 1), 5000, 5) >= 0, 'CANCEL reaches every member')
  t.same(finals(alice), [487], 'caller gets 487')

  for (const m of ms) m.behaviour = 'busy'
  const inv2 = await call(alice, u('team'))
  t.ok(await until(c, () => finals(alice, inv2.get('call-id')).length > 0, 5000, 5) >= 0, 'final')
  t.same(finals(alice, inv2.get('call-id')), [486], 'all busy → 486')
  t.same(rang(ms), ms.map(() => 2))

  for (const m of ms) m.behaviour = 'ring'
  ms[4]!.behaviour = 'decline'
  const inv3 = await call(alice, u('team'))
  t.ok(await until(c, () => finals(alice, inv3.get('call-id')).length > 0, 5000, 5) >= 0, 'final')
  t.same(finals(alice, inv3.get('call-id')), [603], '6xx wins and ends the call')
  t.ok(await until(c, () => ms.every((m, i) => i === 4 || m.cancels.length === 2), 5000, 5) >= 0, 'the ringing members are CANCELled after the 603')
})

t.test('member attached to a dead node: skipped (TCP) or reached directly (UDP); its owner dead too', async t => {
  const c = await forkCluster(13 + SEED, 5, [{ aor: u('desk'), members: [u('d1'), u('d2'), u('d3')] }])
  t.teardown(() => shutdown(c))
  const d1 = await member(c, 'd1', 'n2')
  const d2 = await member(c, 'd2', 'n5', true) // TCP behind NAT at n5: unreachable once n5 is gone
  const d3 = await member(c, 'd3', 'n5') // plain UDP at n5: reached directly
  await run(c, 500)
  await crash(c, 'n5')
  t.ok(await until(c, () => node(c, 'n1').overlay!.membership.get('n5')?.status === 'dead', 60_000) >= 0, 'n1 sees n5 dead')
  await run(c, 1000)
  const alice = await caller(c, 'n1')
  await call(alice, u('desk'))
  t.ok(await until(c, () => d1.invites.length > 0 && d3.invites.length > 0, 5000, 5) >= 0, 'd1 and d3 ring')
  await run(c, 200)
  t.equal(d2.invites.length, 0, 'd2 not tried')
  await d3.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  t.same(finals(alice), [200])
  t.ok(await until(c, () => d1.cancels.length === 1, 5000, 5) >= 0, 'd1 cancelled')
})

t.test('owner node killed just before the fork: its members are re-resolved through a replica, the call connects', async t => {
  const names = Array.from({ length: 16 }, (_, i) => `k${i}`)
  const c = await forkCluster(14 + SEED, 5, [])
  t.teardown(() => shutdown(c))
  // the node owning most members (not n1) is killed; nobody is attached to it
  const count = new Map<string, number>()
  for (const n of names) { const o = ownersAt(c, 'n1', u(n))[0]!; if (o !== 'n1') count.set(o, (count.get(o) ?? 0) + 1) }
  const victim = [...count].sort((a, b) => b[1] - a[1])[0]![0]
  const mine = names.filter(n => ownersAt(c, 'n1', u(n))[0] === victim)
  await c.accounts.addGroup({ aor: u('ops'), members: mine.map(u) })
  const others = c.ids.filter(id => id !== victim)
  const ms = await members(c, mine, i => others[i % others.length]!)
  const alice = await caller(c, 'n1')
  await crash(c, victim) // not yet noticed by SWIM at n1
  t.equal(node(c, 'n1').overlay!.membership.get(victim)?.status, 'alive', 'n1 still believes the owner alive')
  await call(alice, u('ops'))
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 10_000, 5) >= 0, 'every member rings')
  const st = node(c, 'n1').proxy.stats()
  t.ok(st.forkRetries >= 1, `the failed fork was re-resolved (${st.forkRetries})`)
  await ms[0]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  t.same(finals(alice), [200], 'the call connects')
  await run(c, 500)
  t.same(rang(ms), ms.map(() => 1), 'nobody rang twice')
})

t.test('owner node silent (UDP, SIP partitioned from S): no 100 within forkTimeout → next owner', async t => {
  const names = Array.from({ length: 16 }, (_, i) => `p${i}`)
  const c = await forkCluster(15 + SEED, 5, [], { udpRoutes: true, forkTimeout: 1500 })
  t.teardown(() => shutdown(c))
  const count = new Map<string, number>()
  for (const n of names) { const o = ownersAt(c, 'n1', u(n))[0]!; if (o !== 'n1') count.set(o, (count.get(o) ?? 0) + 1) }
  const victim = [...count].sort((a, b) => b[1] - a[1])[0]![0]
  const mine = names.filter(n => ownersAt(c, 'n1', u(n))[0] === victim)
  await c.accounts.addGroup({ aor: u('quiet'), members: mine.map(u) })
  const others = c.ids.filter(id => id !== victim && id !== 'n1')
  const ms = await members(c, mine, i => others[i % others.length]!)
  const alice = await caller(c, 'n1')
  c.net.partition(['10.0.0.1'], [`10.0.0.${victim.slice(1)}`])
  const t0 = c.clock.now()
  await call(alice, u('quiet'))
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 10_000, 5) >= 0, 'every member rings')
  const first = c.clock.now() - t0
  t.ok(first >= 1500 && first < 2500, `after the fork timeout (${first} ms)`)
  t.equal(node(c, 'n1').proxy.stats().forkRetries, 1, 'one re-fork')
  t.equal(node(c, victim).proxy.stats().forksAccepted, 0, 'the silent owner never got it')
  await ms[ms.length - 1]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  t.same(finals(alice), [200])
  c.net.heal()
})

t.test('nested group with a loop; a member in two nested groups rings once', async t => {
  const c = await forkCluster(16 + SEED, 4, [
    { aor: u('all'), members: [u('x1'), u('sub'), u('x3')] },
    { aor: u('sub'), members: [u('x2'), u('all'), u('x1'), u('sub2')] },
    { aor: u('sub2'), members: [u('x3'), u('x4')] }
  ])
  t.teardown(() => shutdown(c))
  const ms = await members(c, ['x1', 'x2', 'x3', 'x4'], i => c.ids[(i + 1) % 4]!)
  const alice = await caller(c, 'n1')
  await call(alice, u('all'))
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 5000, 5) >= 0, 'all four ring')
  await run(c, 500)
  t.same(rang(ms), [1, 1, 1, 1], 'each once (loop cut, duplicates dropped)')
  await ms[1]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  t.same(finals(alice), [200])
})

t.test('hunt: members in order through their owners, per-member timeout, 486 moves on', async t => {
  const c = await forkCluster(17 + SEED, 4, [{ aor: u('hunt'), members: [u('h1'), u('h2'), u('h3')], policy: 'hunt' }], { memberTimeout: 2000 })
  t.teardown(() => shutdown(c))
  const ms = await members(c, ['h1', 'h2', 'h3'], i => c.ids[(i + 2) % 4]!)
  const alice = await caller(c, 'n1')
  const before = node(c, 'n1').proxy.stats()
  await call(alice, u('hunt'))
  t.ok(await until(c, () => ms[0]!.invites.length > 0, 5000, 5) >= 0, 'h1 first')
  await run(c, 100)
  t.same(rang(ms), [1, 0, 0])
  await ms[0]!.answer(486)
  t.ok(await until(c, () => ms[1]!.invites.length > 0, 5000, 5) >= 0, 'h2 after the 486')
  const t0 = c.clock.now()
  t.ok(await until(c, () => ms[2]!.invites.length > 0, 5000, 5) >= 0, 'h3 after h2 rang its time')
  const waited = c.clock.now() - t0
  t.ok(waited >= 1900 && waited < 2300, `per-member timeout (${waited} ms)`)
  t.ok(await until(c, () => ms[1]!.cancels.length === 1, 1000, 5) >= 0, 'h2 cancelled')
  await ms[2]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  t.same(finals(alice), [200])
  const after = node(c, 'n1').proxy.stats()
  const remote = ['h1', 'h2', 'h3'].filter(n => ownersAt(c, 'n1', u(n))[0] !== 'n1').length
  t.equal(after.forkRequests - before.forkRequests, remote, 'one single-member fork per step owned elsewhere')
})

t.test('a client-sent Sipring-Fork header is not honoured (at S or sent straight to an owner)', async t => {
  const c = await forkCluster(18 + SEED, 4, [{ aor: u('grp'), members: [u('g1'), u('g2'), u('g3')] }])
  t.teardown(() => shutdown(c))
  const ms = await members(c, ['g1', 'g2', 'g3'], i => c.ids[(i + 1) % 4]!)
  const alice = await caller(c, 'n1')
  // to S: the list would narrow the call to g1 only
  await call(alice, u('grp'), [['sipring-fork', `<${u('g1')}>`]])
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 5000, 5) >= 0, 'the whole group rings')
  t.ok(node(c, 'n1').proxy.stats().forksRejected >= 1, 'counted as rejected')
  await ms[0]!.answer(486); await ms[1]!.answer(486); await ms[2]!.answer(486)
  t.ok(await until(c, () => finals(alice).length > 0, 5000, 5) >= 0)
  // to an owner directly, with a forged sr=fork Route: g3 (not in the group's list given) is not called from the list
  const o = 'n2'
  const before = node(c, o).proxy.stats()
  const forged = request(alice, 'INVITE', u('g2'), u('g2'), [['contact', `<${alice.contact}>`], ['route', '<sip:10.0.0.2:5060;lr;sr=fork>'], ['sipring-fork', `<${u('g3')}>`]])
  await send(alice, forged, { protocol: 'udp', address: '10.0.0.2', port: 5060 }) // straight to n2
  t.ok(await until(c, () => ms[1]!.invites.length === 2, 5000, 5) >= 0, 'the Request-URI (g2) is called')
  await run(c, 300)
  t.equal(ms[2]!.invites.length, 1, 'g3 not rung from the forged list')
  t.equal(node(c, o).proxy.stats().forksAccepted - before.forksAccepted, 0, `${o} accepted no fork`)
  t.equal(node(c, o).proxy.stats().forksRejected - before.forksRejected, 1, `${o} removed the forged header`)
})

t.test('centralized mode on the same cluster: S forks to every member itself, no fork request', async t => {
  const names = Array.from({ length: 8 }, (_, i) => `c${i}`)
  const c = await forkCluster(19 + SEED, 4, [{ aor: u('cent'), members: names.map(u) }], { forking: 'centralized' })
  t.teardown(() => shutdown(c))
  const ms = await members(c, names, i => c.ids[i % 4]!)
  const alice = await caller(c, 'n1')
  await call(alice, u('cent'))
  t.ok(await until(c, () => ms.every(m => m.invites.length > 0), 5000, 5) >= 0, 'every member rings')
  const st = node(c, 'n1').proxy.stats()
  t.equal(st.forkRequests, 0)
  t.equal(st.branches, 8, 'one branch per member at S')
  await ms[2]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 0 && ms.every((m, i) => i === 2 || m.cancels.length === 1), 5000, 5) >= 0)
  t.same(finals(alice), [200])
})
