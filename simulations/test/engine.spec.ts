import t from 'tap'
import { createHasher } from '@sipring/overlay'
import { parseScenario, runScenario, windowsCsv, stableJson, type Scenario, type RunResult } from '@sipring/simulations'
import { moderateChurn } from './scenarios.js'

const hasher = await createHasher()
const base = `
name: engine-test
duration: 3min
warmup: 1min
window: 20s
nodes: 50
bootstrapOver: 10s
overlay: { vnodes: 16, replicas: 3 }
workload: { clients: 150, expires: 10min, lookupRate: 4/s, registerOver: 30s }
`
const scenario = (extra: string): Scenario => parseScenario(base + extra)
const run = (s: Scenario, seed = 1): Promise<RunResult> => runScenario(s, { seed, hasher })

const moderate = moderateChurn

t.test('same seed → byte-identical summary, windows and events; another seed differs', async t => {
  const s = scenario(moderate)
  const a = await run(s, 42)
  const b = await run(s, 42)
  const c = await run(s, 43)
  t.equal(stableJson(a.summary), stableJson(b.summary), 'summary.json identical')
  t.equal(windowsCsv(a.windows), windowsCsv(b.windows), 'windows.csv identical')
  t.same(a.events, b.events, 'events identical')
  t.not(stableJson(a.summary), stableJson(c.summary), 'seed 43 gives another run')
  t.equal(a.summary.seed, 42)
  t.equal(a.summary.configHash, c.summary.configHash, 'the config hash does not include the seed')
  t.match(a.summary.commit, /^([0-9a-f]{40}|unknown)$/)
  t.ok(a.summary.churn.crashes + a.summary.churn.leaves > 0, 'churn happened')
})

t.test('no churn: every lookup succeeds, everything available, nothing lost', async t => {
  const r = await run(scenario(''))
  const s = r.summary
  t.equal(s.churn.meanLive, 50)
  t.ok(s.lookups.total > 300, `${s.lookups.total} lookups measured`)
  t.ok(s.lookups.success >= 0.99, `lookup success ${s.lookups.success}`)
  t.ok(s.lookups.latency.p99 < 100, `p99 ${s.lookups.latency.p99} ms`)
  t.equal(s.availability.mean, 1)
  t.equal(s.losses.total, 0)
  t.ok(s.registrations.success === 1 || s.registrations.total === 0)
  t.ok(s.maintenance.byType['swim.ping']!.msgsPerNodeSec > 0.8 && s.maintenance.byType['swim.ping']!.msgsPerNodeSec < 1.3, 'about one probe per node per protocol period')
  t.ok(s.load.maxOverMean >= 1 && s.load.cv > 0, 'load stats present')
  t.same(s.violations, [])
  t.equal(r.windows.length, 9)
  t.equal(r.windows.filter(w => w.start >= 60_000).length, s.measured.windows)
})

t.test('slow churn with R=3: no losses, high availability', async t => {
  const r = await run(scenario(`
churn:
  model: alternating
  start: 30s
  session: { dist: exponential, mean: 10min }
  downtime: { dist: exponential, mean: 2min }
  crashFraction: 50%
`))
  const s = r.summary
  t.ok(s.churn.crashes + s.churn.leaves > 0, `${s.churn.crashes} crashes, ${s.churn.leaves} leaves`)
  t.equal(s.losses.total, 0)
  t.ok(s.lookups.success >= 0.97, `lookup success ${s.lookups.success}`)
  t.ok(s.availability.mean >= 0.97, `availability ${s.availability.mean}`)
})

t.test('heavy churn (Bamboo-like, median session 30 s, all crashes) hurts', async t => {
  const r = await run(scenario(`
churn:
  model: alternating
  start: 30s
  session: { dist: exponential, median: 30s }
  downtime: { dist: exponential, median: 30s }
  crashFraction: 100%
`))
  const s = r.summary
  t.ok(s.churn.crashes > 50, `${s.churn.crashes} crashes`)
  t.equal(s.churn.leaves, 0)
  t.ok(s.lookups.success < 0.97, `lookup success drops: ${s.lookups.success}`)
  t.ok(s.lookups.latency.p99 >= 1000, `failures count at the timeout: p99 ${s.lookups.latency.p99}`)
  t.ok(s.availability.mean < 0.99, `availability ${s.availability.mean}`)
  t.ok(s.losses.total > 0, `${s.losses.total} keys lost`)
})

t.test('a correlated batch failure shows in the window where it happens', async t => {
  const r = await run(scenario(`
failures:
  - { at: 100s, fraction: 20%, kind: crash, recoverAfter: 40s }
`))
  // windows are (start, end]: an event at exactly 100 s belongs to the window ending at 100 s
  const w = r.windows.find(x => x.end === 100_000)!
  t.equal(w.crashes, 10, '20% of 50 crash at once')
  t.equal(w.live, 40)
  t.equal(r.summary.churn.batchFailures, 1)
  t.ok(r.events.some(e => e.includes('"ev":"batch"')))
  const after = r.windows.at(-1)!
  t.equal(after.live, 50, 'they came back')
})

t.test('a bug in the node under test is a violation, not a crash of the simulator', async t => {
  const s = scenario('expect: { lookupSuccess: 90% }\n')
  const r = await runScenario(s, {
    hasher,
    nodeFactory: ctx => {
      t.ok(ctx.hub !== undefined && ctx.scenario.nodes === 50, 'the factory gets the hub and the scenario')
      let n = 0
      return {
        create: (id) => ({
          id,
          start: async () => {},
          join: async () => {},
          leave: async () => {},
          crash: async () => {},
          put: async () => {},
          get: async () => { if (++n % 2 === 0) throw new TypeError('boom'); return undefined },
          local: () => undefined,
          localItems: () => 0,
          viewSize: () => 1
        })
      }
    }
  })
  t.ok(r.summary.violations.some(v => v.includes('TypeError: boom')), 'exception recorded as a violation')
  t.ok(r.summary.violations.some(v => v.startsWith('expect.lookupSuccess')), 'threshold miss recorded')
})

t.test('trace-driven churn (.avt) through the whole engine', async t => {
  const here = (await import('node:path')).dirname((await import('node:url')).fileURLToPath(import.meta.url))
  const s = parseScenario(`
name: trace
duration: 70s
warmup: 10s
window: 10s
nodes: 1
churn: { model: trace, trace: { file: fixtures/tiny.avt, timeUnit: 100ms } }
workload: { clients: 20, expires: 5min, lookupRate: 5/s, registerOver: 5s }
`, { baseDir: here })
  const r = await runScenario(s, { hasher })
  t.equal(r.summary.churn.joins, 5, 'bootstrap node + 4 trace sessions')
  t.equal(r.summary.churn.crashes, 4)
  t.equal(r.summary.churn.finalLive, 1)
  const crashAt = r.events.map(e => JSON.parse(e) as { t: number, ev: string, node: string }).filter(e => e.ev === 'crash').map(e => `${e.t}:${e.node}`)
  t.same(crashAt, ['12000:n-a', '20000:n-c', '50000:n-b', '60000:n-a'])
})

t.test('poisson arrivals keep a population of about rate × mean session', async t => {
  const r = await run(parseScenario(base.replace('nodes: 50', 'nodes: 10') + `
churn:
  model: poisson
  start: 10s
  arrivalRate: 1/s
  session: { dist: exponential, mean: 30s }
  crashFraction: 0%
`))
  const s = r.summary
  t.ok(s.churn.joins > 120, `${s.churn.joins} joins`)
  t.equal(s.churn.crashes, 0, 'crashFraction 0: only graceful leaves')
  t.ok(s.churn.meanLive > 18 && s.churn.meanLive < 45, `mean live ${s.churn.meanLive} near 30`)
  t.same(s.violations, [])
})

t.test('nodes starting together with nobody up form one overlay, not many', async t => {
  const here = (await import('node:path')).dirname((await import('node:url')).fileURLToPath(import.meta.url))
  const s = parseScenario(`
name: together
duration: 40s
warmup: 10s
window: 10s
nodes: 0
churn: { model: trace, trace: { file: fixtures/simultaneous.csv } }
workload: { clients: 30, expires: 5min, lookupRate: 5/s, registerOver: 5s }
`, { baseDir: here })
  const r = await runScenario(s, { hasher })
  const joins = r.events.map(e => JSON.parse(e) as { ev: string, seeds?: number }).filter(e => e.ev === 'join')
  t.equal(joins.length, 5)
  t.equal(joins.filter(e => e.seeds === 0).length, 1, 'one bootstrap node, the others join through it')
  t.ok(r.summary.lookups.success >= 0.99, `lookup success ${r.summary.lookups.success}`)
})
