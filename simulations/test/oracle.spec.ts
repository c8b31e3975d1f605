import t from 'tap'
import { createHasher, type PeerId } from '@sipring/overlay'
import { SimClock, SeededRng } from '@sipring/testkit'
import {
  MembershipOracle, makeDistribution, parseDistribution, parseScenario, runScenario, ScenarioError, stableJson, windowsCsv,
  type OracleMembership, type RunResult
} from '@sipring/simulations'
import { moderateChurnFrom } from './scenarios.js'

const hasher = await createHasher()

t.test('scenario: overlay.membership and overlay.oracle are validated; defaults are swim and the calibration', async t => {
  const s = parseScenario('overlay: { membership: oracle, digestBuckets: 16, oracle: { crashDetect: { dist: constant, value: 3s } } }')
  t.equal(s.membership, 'oracle')
  t.equal(s.digestBuckets, 16)
  t.equal(s.oracle.crashDetect.median(), 3000)
  t.ok(s.oracle.joinSpread.median() > 1000, 'joinSpread from the calibration')
  t.equal(parseScenario('{}').membership, 'swim')
  t.throws(() => parseScenario('overlay: { membership: gossip }'), ScenarioError)
  t.throws(() => parseScenario('overlay: { digestBuckets: 12 }'), /power of two/)
  t.throws(() => parseScenario('overlay: { oracle: { nope: { dist: constant, value: 1s } } }'), /unknown field/)
})

t.test('empirical distribution: piecewise-linear inverse CDF through the quantiles', async t => {
  const d = parseDistribution({ dist: 'empirical', points: [[0, '1s'], [0.5, '3s'], [1, '20s']] })
  t.equal(d.median(), 3000)
  t.equal(d.mean(), 0.5 * (1000 + 3000) / 2 + 0.5 * (3000 + 20000) / 2)
  const rng = new SeededRng(7)
  let below = 0
  for (let i = 0; i < 4000; i++) {
    const x = d.sample(rng)
    if (x < 1000 || x > 20000) t.fail(`sample ${x} out of range`)
    if (x <= 3000) below++
  }
  t.ok(Math.abs(below / 4000 - 0.5) < 0.03, `half the samples below the median (${below})`)
  t.throws(() => makeDistribution({ dist: 'empirical', points: [[0, 5], [1, 2]] }), ScenarioError, 'decreasing values')
  t.throws(() => makeDistribution({ dist: 'empirical', points: [[0.1, 1], [1, 2]] }), ScenarioError, 'must start at p 0')
  t.throws(() => parseDistribution({ dist: 'empirical', points: 'x' }), ScenarioError)
})

t.test('oracle: a crash is invisible until detection; then only the ring neighbours are told, each after its own delay', async t => {
  const clock = new SimClock(0)
  const delays = {
    joinRtt: makeDistribution({ dist: 'constant', value: 20 }),
    joinSpread: makeDistribution({ dist: 'constant', value: 1000 }),
    leaveSpread: makeDistribution({ dist: 'constant', value: 10 }),
    crashDetect: makeDistribution({ dist: 'constant', value: 5000 }),
    crashSpread: makeDistribution({ dist: 'uniform', min: 100, max: 2000 })
  }
  const up = new Set<PeerId>()
  const oracle = new MembershipOracle({ clock, rng: new SeededRng(1), hasher, vnodes: 4, replicas: 3, delays, isUp: id => up.has(id) })
  const ms = new Map<PeerId, OracleMembership>()
  const changes = new Map<PeerId, number>()
  const N = 60
  for (let i = 0; i < N; i++) {
    const id = `n${i}`
    const m = oracle.member(id)
    ms.set(id, m); up.add(id); changes.set(id, 0)
    // a view change that may move items (a switch told that nothing changed is the member keeping the ring it had)
    m.on('view:change', () => { const h = m.takeRingHint(); if (h === undefined || h.length > 0) changes.set(id, changes.get(id)! + 1) })
    await m.start()
    if (i > 0) { const p = m.join(['n0']); clock.advance(20); await p }
  }
  t.ok(oracle.ring.size < N, 'the last joiners are not known to the others yet (joinSpread)')
  t.ok([...ms.values()].every(m => m.ring()!.has(m.self)), 'but each joiner sees itself')
  clock.advance(2000) // every join spread done
  t.equal(oracle.ring.size, N, 'everybody in the live ring')
  t.ok([...ms.values()].every(m => m.ring()!.size === N), 'and in every view')
  for (const id of changes.keys()) changes.set(id, 0)

  const victim = 'n17'
  const neighbours = oracle.ring.affectedBy(victim, 3)
  up.delete(victim)
  await ms.get(victim)!.stop()
  clock.advance(4999)
  t.ok(oracle.ring.has(victim), 'not detected before crashDetect')
  t.ok([...changes.values()].every(c => c === 0), 'nobody told yet')
  let waited = 0
  while (oracle.stats.detections === 0 && waited++ < 3000) clock.advance(1)
  t.ok(waited >= 100 && waited <= 2001, `the crowd learns crashSpread after the detection (${waited} ms)`)
  t.notOk(oracle.ring.has(victim), 'removed from the global view')
  const notYet = neighbours.filter(id => changes.get(id) === 0)
  t.ok(notYet.length > 0 && notYet.every(id => ms.get(id)!.ring()!.has(victim)), `neighbours that have not learnt yet (${notYet.length}) still see the old ring (pinned)`)
  const others = [...ms.keys()].filter(id => id !== victim && !neighbours.includes(id))
  t.ok(others.every(id => !ms.get(id)!.ring()!.has(victim)), 'the others read the live ring: no notice, no handoff')
  clock.advance(2000)
  t.ok(neighbours.every(id => !ms.get(id)!.ring()!.has(victim) && changes.get(id) === 1), 'each neighbour switched once')
  t.ok(others.every(id => changes.get(id) === 0), 'nobody else got a view change')
  t.ok(neighbours.length <= (2 * 3 - 1) * 4 && neighbours.length < N / 2, `${neighbours.length} of ${N} told`)
  t.equal(oracle.stats.detections, 1)
})

t.test('oracle: a restart before detection keeps the view; a leave is announced at once', async t => {
  const clock = new SimClock(0)
  const c = (v: number): ReturnType<typeof makeDistribution> => makeDistribution({ dist: 'constant', value: v })
  const up = new Set<PeerId>(['a', 'b', 'c'])
  const oracle = new MembershipOracle({ clock, rng: new SeededRng(1), hasher, vnodes: 4, replicas: 2, delays: { joinRtt: c(10), joinSpread: c(100), leaveSpread: c(10), crashDetect: c(5000), crashSpread: c(100) }, isUp: id => up.has(id) })
  const a = oracle.member('a'); await a.start()
  const b = oracle.member('b'); await b.start(); let p = b.join(['a']); clock.advance(10); await p; clock.advance(100)
  const c1 = oracle.member('c'); await c1.start(); p = c1.join(['a']); clock.advance(10); await p; clock.advance(100)
  t.equal(oracle.ring.size, 3)
  await c1.stop() // crash
  clock.advance(1000)
  const c2 = oracle.member('c'); await c2.start(); p = c2.join(['b']); clock.advance(10); await p
  clock.advance(10_000)
  t.ok(oracle.ring.has('c'), 'back before anyone noticed: still a member')
  t.equal(oracle.stats.detections, 0)
  await b.leave()
  t.notOk(b.ring()!.has('b'), 'the leaver hands off at once')
  t.ok(oracle.ring.has('b'), 'the others learn after leaveSpread')
  clock.advance(10)
  t.notOk(oracle.ring.has('b'))
  await t.rejects(oracle.member('d').start().then(async () => { const d = oracle.member('d'); await d.start(); const q = d.join(['zz']); clock.advance(10); await q }), /no seed/)
})

const scen = (membership: string): string => `
name: oracle-test
duration: 4min
warmup: 1min
window: 30s
nodes: 60
bootstrapOver: 10s
overlay: { vnodes: 16, replicas: 3, membership: ${membership}, antiEntropyInterval: 1min, digestBuckets: 16 }
${moderateChurnFrom('1min')}workload: { clients: 200, expires: 10min, lookupRate: 5/s, registerOver: 30s }
`

t.test('scale mode through the engine: deterministic, and it agrees with SWIM on lookup success', async t => {
  const s = parseScenario(scen('oracle'))
  const run = (seed: number): Promise<RunResult> => runScenario(s, { seed, hasher })
  const a = await run(5); const b = await run(5)
  t.equal(stableJson(a.summary), stableJson(b.summary), 'same seed → identical summary')
  t.equal(windowsCsv(a.windows), windowsCsv(b.windows))
  t.same(a.summary.violations, [])
  t.ok(a.summary.churn.crashes + a.summary.churn.leaves > 5, 'churn happened')
  t.ok(a.summary.lookups.success >= 0.97, `oracle lookup success ${a.summary.lookups.success}`)
  t.equal(a.summary.config.membership, 'oracle', 'recorded in the config')
  t.notOk('swim.ping' in a.summary.maintenance.byType, 'no SWIM traffic')
  const swim = await runScenario(parseScenario(scen('swim')), { seed: 5, hasher })
  t.ok(Math.abs(swim.summary.lookups.success - a.summary.lookups.success) < 0.03, `swim ${swim.summary.lookups.success} vs oracle ${a.summary.lookups.success}`)
  t.ok(a.simEvents * 3 < swim.simEvents, `far fewer events: ${a.simEvents} vs ${swim.simEvents}`)
})
