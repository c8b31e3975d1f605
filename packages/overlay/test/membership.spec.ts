import t from 'tap'
import { overrides, Membership, type PeerId } from '@sipring/overlay'
import { addMember, agreed, cluster, drive, settle, until, type Cluster } from './helpers.js'

const T = 1000 // protocol period (default)
const ids = (n: number): PeerId[] => Array.from({ length: n }, (_, i) => `n${String(i).padStart(2, '0')}`)

async function formCluster (seed: number, n: number, loss = 0): Promise<Cluster> {
  const c = cluster(seed, { loss })
  for (const id of ids(n)) {
    const m = await addMember(c, id)
    if (id !== 'n00') await settle(c, m.join(['n00']).catch(async () => { await m.join(['n00']) }))
  }
  const took = await until(c, () => agreed(c, ids(n)), 60 * T)
  if (took < 0) throw new Error('cluster did not form')
  return c
}

t.test('SWIM precedence rules', async t => {
  t.ok(overrides({ id: 'a', incarnation: 1, status: 'alive' }, { incarnation: 0, status: 'suspect' }))
  t.notOk(overrides({ id: 'a', incarnation: 0, status: 'alive' }, { incarnation: 0, status: 'suspect' }), 'same incarnation alive does not clear a suspicion')
  t.ok(overrides({ id: 'a', incarnation: 0, status: 'suspect' }, { incarnation: 0, status: 'alive' }))
  t.notOk(overrides({ id: 'a', incarnation: 0, status: 'suspect' }, { incarnation: 1, status: 'alive' }), 'older suspicion ignored')
  t.ok(overrides({ id: 'a', incarnation: 0, status: 'dead' }, { incarnation: 0, status: 'suspect' }))
  t.notOk(overrides({ id: 'a', incarnation: 3, status: 'alive' }, { incarnation: 3, status: 'dead' }), 'stale alive cannot resurrect')
  t.ok(overrides({ id: 'a', incarnation: 4, status: 'alive' }, { incarnation: 3, status: 'dead' }), 'rejoin with higher incarnation')
})

t.test('bad parameters are refused', async t => {
  const c = cluster(1)
  t.throws(() => new Membership({ clock: c.clock, rng: c.rng, logger: c.logger, network: c.hub.connect('x') }, { pingTimeout: 2000, protocolPeriod: 1000 }), RangeError)
  const m = await addMember(c, 'solo')
  await t.rejects(m.join([]), { code: 'ERR_NO_SEEDS' })
  await t.rejects(m.join(['nobody']), { code: 'ERR_UNREACHABLE' })
  await m.stop()
})

t.test('join: 20 nodes converge; a 21st joiner is in every view within a bound', async t => {
  const c = await formCluster(11, 20)
  const joined: PeerId[] = []
  c.nodes.get('n05')!.on('member:join', id => { joined.push(id) })
  const m = await addMember(c, 'new')
  const t0 = c.clock.now()
  await settle(c, m.join(['n07']))
  t.equal(m.view().length, 21, 'the joiner got the full member list in the join answer')
  const took = await until(c, () => agreed(c, [...ids(20), 'new']), 30 * T, 10)
  // bound: dissemination by piggybacking reaches all N in O(log N) periods; 4·ceil(log10 21)=8 sends per holder
  const bound = 8 * T
  t.ok(took >= 0 && took <= bound, `all 21 views agree after ${took} ms (bound ${bound} ms)`)
  t.ok(c.clock.now() - t0 >= took)
  t.same(joined, ['new'], 'member:join fired once on a bystander')
  t.comment(`join convergence (N=21, T=${T} ms): ${took} ms`)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('crash: detected, declared dead everywhere, within suspicion timeout + probe + dissemination', async t => {
  const c = await formCluster(12, 20)
  const dead: PeerId[] = []; const suspects: PeerId[] = []
  const watcher = c.nodes.get('n03')!
  watcher.on('member:dead', id => { dead.push(id) })
  watcher.on('member:suspect', id => { suspects.push(id) })
  const victim = c.nodes.get('n09')!
  await victim.stop(); c.hub.crash('n09'); c.nodes.delete('n09')
  const rest = ids(20).filter(id => id !== 'n09')
  const took = await until(c, () => agreed(c, rest), 60 * T, 10)
  const suspicion = watcher.suspicionTimeout()
  // first probe of the victim by someone: ~1-3 periods; +1 period for the indirect round;
  // each node times its own suspicion; then the dead fact spreads in O(log N) periods
  const bound = suspicion + 8 * T
  t.ok(took >= suspicion, `not before the suspicion timeout (${suspicion} ms): ${took} ms`)
  t.ok(took > 0 && took <= bound, `all 19 views agree after ${took} ms (bound ${bound} ms)`)
  t.same(dead, ['n09'])
  t.same(suspects, ['n09'])
  t.equal(watcher.get('n09')?.status, 'dead')
  t.comment(`crash convergence (N=20, T=${T} ms, suspicion ${suspicion} ms): ${took} ms`)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('graceful leave: everyone drops the leaver quickly, no suspicion', async t => {
  const c = await formCluster(13, 20)
  const suspects: PeerId[] = []; const left: PeerId[] = []
  for (const n of c.nodes.values()) { n.on('member:suspect', id => { suspects.push(id) }); n.on('member:leave', id => { left.push(id) }) }
  const leaver = c.nodes.get('n04')!
  await Promise.all([leaver.leave(), drive(c.clock, 100)])
  c.nodes.delete('n04')
  const rest = ids(20).filter(id => id !== 'n04')
  const took = await until(c, () => agreed(c, rest), 30 * T, 10)
  t.ok(took >= 0 && took <= 6 * T, `all 19 views agree ${took} ms after the leave`)
  t.same(suspects, [], 'nobody suspected the leaver')
  t.equal(left.length, 19, 'member:leave fired on every remaining node')
  t.comment(`leave convergence (N=20): ${took} ms`)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('false suspicion is refuted: no dead, no flapping', async t => {
  const c = await formCluster(14, 20)
  const dead: PeerId[] = []; const suspected: PeerId[] = []; const back: PeerId[] = []
  for (const n of c.nodes.values()) {
    n.on('member:dead', id => { dead.push(id) })
    n.on('member:suspect', id => { suspected.push(id) })
    n.on('member:alive', id => { back.push(id) })
  }
  // n06 is cut off from everyone for 2.5 periods: long enough to be suspected, shorter than the suspicion timeout
  for (const id of ids(20)) if (id !== 'n06') c.hub.partition('n06', id)
  await drive(c.clock, 2.5 * T)
  for (const id of ids(20)) if (id !== 'n06') c.hub.partition('n06', id, false)
  t.ok(suspected.includes('n06'), 'n06 was suspected')
  await drive(c.clock, 20 * T)
  t.same(dead, [], 'nobody declared dead')
  t.ok(c.nodes.get('n06')!.currentIncarnation >= 1, 'n06 refuted with a higher incarnation')
  t.ok(agreed(c, ids(20)), 'all views still hold all 20')
  for (const n of c.nodes.values()) t.equal(n.get('n06')?.status ?? 'alive', 'alive')
  t.ok(back.length > 0, 'member:alive fired after the refutation')
  for (const n of c.nodes.values()) await n.stop()
})

t.test('a restarted node (same id, fresh state) rejoins above its old incarnation', async t => {
  const c = await formCluster(15, 8)
  const old = c.nodes.get('n02')!
  await old.stop(); c.hub.crash('n02'); c.nodes.delete('n02')
  const rest = ids(8).filter(id => id !== 'n02')
  t.ok(await until(c, () => agreed(c, rest), 60 * T) >= 0, 'declared dead')
  const fresh = await addMember(c, 'n02')
  await settle(c, fresh.join(['n00']))
  t.ok(fresh.currentIncarnation >= 1, `fresh incarnation ${fresh.currentIncarnation}`)
  t.ok(await until(c, () => agreed(c, ids(8)), 20 * T) >= 0, 'back in every view')
  for (const n of c.nodes.values()) await n.stop()
})

t.test('under 5% message loss the views stay stable (no member declared dead)', async t => {
  const c = await formCluster(16, 12, 0.05)
  const dead: PeerId[] = []
  for (const n of c.nodes.values()) n.on('member:dead', id => { dead.push(id) })
  await drive(c.clock, 60 * T)
  t.same(dead, [])
  t.ok(agreed(c, ids(12)))
  for (const n of c.nodes.values()) await n.stop()
})

t.test('push-pull sync converges views even when no gossip is piggybacked', async t => {
  const run = async (syncInterval: number): Promise<number> => {
    const c = cluster(17)
    for (const id of ids(10)) {
      const m = await addMember(c, id, { maxPiggyback: 0, syncInterval })
      if (id !== 'n00') await settle(c, m.join(['n00']))
    }
    const took = await until(c, () => agreed(c, ids(10)), 60 * T, 100)
    for (const n of c.nodes.values()) await n.stop()
    return took
  }
  t.equal(await run(0), -1, 'without sync and without gossip only the seed learns of the joiners')
  const took = await run(2000)
  t.ok(took >= 0 && took <= 30 * T, `with a 2 s push-pull all 10 views agree after ${took} ms`)
})

t.test('graceful leave with a fanout of 2: the rest learn it by gossip, still no suspicion', async t => {
  const c = cluster(18)
  for (const id of ids(20)) {
    const m = await addMember(c, id, { leaveFanout: 2 })
    if (id !== 'n00') await settle(c, m.join(['n00']))
  }
  t.ok(await until(c, () => agreed(c, ids(20)), 60 * T) >= 0)
  const suspects: PeerId[] = []
  for (const n of c.nodes.values()) n.on('member:suspect', id => { suspects.push(id) })
  const leaver = c.nodes.get('n11')!
  c.nodes.delete('n11')
  await settle(c, leaver.leave())
  const took = await until(c, () => agreed(c, ids(20).filter(id => id !== 'n11')), 30 * T, 10)
  t.ok(took >= 0 && took <= 6 * T, `all 19 views agree ${took} ms after the leave`)
  t.same(suspects, [])
  t.comment(`leave convergence by gossip (N=20, fanout 2): ${took} ms`)
  for (const n of c.nodes.values()) await n.stop()
})
