import t from 'tap'
import { SeededRng } from '@sipring/testkit'
import {
  ScenarioError, gamma, makeDistribution, parseDistribution, parseDuration, parseFraction, readAvt, readChurnCsv,
  startBatchFailures, startChurn, type ChurnHost, type Distribution
} from '@sipring/simulations'
import { mean, quantile } from '@sipring/simulations'

const N = 20_000
function draw (d: Distribution, seed = 7): number[] {
  const rng = new SeededRng(seed)
  return Array.from({ length: N }, () => d.sample(rng))
}
const near = (t: typeof import('tap').default, got: number, want: number, tol: number, what: string): void => {
  t.ok(Math.abs(got - want) <= tol * want, `${what}: ${got.toFixed(1)} within ${(tol * 100).toFixed(0)}% of ${want.toFixed(1)}`)
}

t.test('gamma function', async t => {
  t.ok(Math.abs(gamma(5) - 24) < 1e-9)
  t.ok(Math.abs(gamma(0.5) - Math.sqrt(Math.PI)) < 1e-12)
  t.ok(Math.abs(gamma(1 + 1 / 0.5) - 2) < 1e-12)
})

t.test('exponential: sample mean and median', async t => {
  const d = parseDistribution({ dist: 'exponential', mean: '10min' })
  const xs = draw(d)
  near(t, mean(xs), 600_000, 0.03, 'mean')
  near(t, quantile(xs, 0.5), 600_000 * Math.LN2, 0.03, 'median')
  t.equal(parseDistribution({ dist: 'exponential', median: '1.4min' }).median(), 84_000)
})

t.test('weibull by shape+scale, by median and by mean', async t => {
  const byMedian = parseDistribution({ dist: 'weibull', shape: 0.5, median: '1.4min' })
  t.ok(Math.abs(byMedian.median() - 84_000) < 1e-6)
  const xs = draw(byMedian)
  near(t, quantile(xs, 0.5), 84_000, 0.04, 'median (shape 0.5)')
  const byMean = parseDistribution({ dist: 'weibull', shape: 2, mean: '1h' })
  near(t, mean(draw(byMean, 3)), 3_600_000, 0.02, 'mean (shape 2)')
  const raw = makeDistribution({ dist: 'weibull', shape: 1.5, scale: 1000 })
  near(t, mean(draw(raw, 4)), 1000 * gamma(1 + 1 / 1.5), 0.02, 'mean (scale)')
  near(t, quantile(draw(raw, 5), 0.5), 1000 * Math.pow(Math.LN2, 1 / 1.5), 0.02, 'median (scale)')
})

t.test('pareto: minimum, median, mean', async t => {
  const d = parseDistribution({ dist: 'pareto', shape: 3, median: '2min' })
  const xs = draw(d)
  t.ok(xs.every(x => x >= (d.spec as { scale: number }).scale), 'never below the scale (minimum)')
  near(t, quantile(xs, 0.5), 120_000, 0.03, 'median')
  near(t, mean(xs), d.mean(), 0.05, 'mean')
  const m = parseDistribution({ dist: 'pareto', shape: 2.5, mean: '10s' })
  t.ok(Math.abs(m.mean() - 10_000) < 1e-6)
  t.equal(parseDistribution({ dist: 'pareto', shape: 1, scale: 5 }).mean(), Infinity)
  t.throws(() => parseDistribution({ dist: 'pareto', shape: 1, mean: 5 }), ScenarioError)
})

t.test('the same seed gives the same samples, another seed others', async t => {
  const d = parseDistribution({ dist: 'weibull', shape: 0.7, median: '3d' })
  t.same(draw(d, 1).slice(0, 50), draw(d, 1).slice(0, 50))
  t.not(draw(d, 1)[0], draw(d, 2)[0])
})

t.test('distribution and duration validation', async t => {
  t.throws(() => parseDistribution({ dist: 'gauss', mean: 1 }), /expected one of/)
  t.throws(() => parseDistribution({ dist: 'weibull', median: '1min' }), /shape/)
  t.throws(() => parseDistribution({ dist: 'weibull', shape: 1 }), /needs scale, median or mean/)
  t.throws(() => parseDistribution({ dist: 'exponential', mean: -1 }), /non-negative|positive/)
  t.throws(() => parseDistribution({ dist: 'exponential', mean: 1, typo: 2 }), /unknown field "typo"/)
  t.throws(() => parseDistribution('exp'), ScenarioError)
  t.equal(parseDuration('1.4min'), 84_000)
  t.equal(parseDuration('1.4m'), 84_000)
  t.equal(parseDuration('2h'), 7_200_000)
  t.equal(parseDuration('500ms'), 500)
  t.equal(parseDuration(250), 250)
  t.equal(parseDuration('3d'), 259_200_000)
  t.throws(() => parseDuration('soon'), /duration like/)
  t.throws(() => parseDuration(-5), ScenarioError)
  t.equal(parseFraction('10%'), 0.1)
  t.equal(parseFraction(0.25), 0.25)
  t.throws(() => parseFraction('150%'), /within \[0, 1\]/)
  t.throws(() => parseFraction('ten'), ScenarioError)
})

t.test('.avt availability traces', async t => {
  const text = [
    '# node n intervals (seconds)',
    'alpha 2 0 100 250 400',
    'beta 1 50 60',
    '',
    'gamma 0'
  ].join('\n')
  const ev = readAvt(text)
  t.same(ev, [
    { at: 0, node: 'alpha', kind: 'join' },
    { at: 50_000, node: 'beta', kind: 'join' },
    { at: 60_000, node: 'beta', kind: 'crash' },
    { at: 100_000, node: 'alpha', kind: 'crash' },
    { at: 250_000, node: 'alpha', kind: 'join' },
    { at: 400_000, node: 'alpha', kind: 'crash' }
  ])
  t.equal(readAvt('a 1 1 2', { timeUnit: 1, departure: 'leave' })[1]!.kind, 'leave')
  t.equal(readAvt('a 1 1 2', { timeUnit: 1 })[1]!.at, 2)
  t.throws(() => readAvt('a 2 0 10'), /line 1: 2 intervals need 6 fields, found 4/)
  t.throws(() => readAvt('a x'), /interval count/)
  t.throws(() => readAvt('a 1 10 5'), /ends \(5\) before it starts \(10\)/)
  t.throws(() => readAvt('a 2 0 10 5 20'), /overlaps/)
  t.throws(() => readAvt('a 1 0 1\na 1 2 3'), /line 2: node a appears twice/)
  t.throws(() => readAvt('a 1 0 1\nb 1 0 1\nc 1 0 1', { limits: { maxNodes: 2, maxEvents: 100 } }), /more than 2 nodes/)
})

t.test('CSV churn traces', async t => {
  const ev = readChurnCsv('time,node,event\n10,a,join\n5,b,join\n20,a,crash\n20,b,leave\n')
  t.same(ev.map(e => `${e.at}:${e.node}:${e.kind}`), ['5000:b:join', '10000:a:join', '20000:a:crash', '20000:b:leave'])
  t.throws(() => readChurnCsv('1,a,explode'), /line 1: event must be join, leave or crash/)
  t.throws(() => readChurnCsv('x,a,join'), /bad time/)
  t.throws(() => readChurnCsv('1,a'), /expected time,node,event/)
  t.throws(() => readChurnCsv('-1,a,join'), /bad time/)
})

/** A toy host: no overlay, just a live set driven by a tiny event queue. */
function toyHost (): ChurnHost & { run: (until: number) => void, log: string[] } {
  const live = new Set<string>()
  const q: Array<{ at: number, seq: number, fn: () => void }> = []
  let now = 0; let seq = 0; let next = 0
  const log: string[] = []
  const h = {
    log,
    live: () => [...live].sort(),
    isLive: (id: string) => live.has(id),
    at: (at: number, fn: () => void) => { q.push({ at, seq: seq++, fn }) },
    now: () => now,
    up: (id: string) => { live.add(id); log.push(`${now}:up:${id}`) },
    down: (id: string, kind: string) => { live.delete(id); log.push(`${now}:${kind}:${id}`) },
    newId: () => `p${next++}`,
    run (until: number) {
      for (;;) {
        q.sort((a, b) => a.at - b.at || a.seq - b.seq)
        const e = q[0]
        if (e === undefined || e.at > until) break
        q.shift(); now = e.at; e.fn()
      }
      now = until
    }
  }
  return h
}

t.test('alternating churn: long-run availability = E[session] / (E[session] + E[down])', async t => {
  const h = toyHost()
  for (let i = 0; i < 200; i++) h.up(`n${i}`)
  const root = new SeededRng(11)
  startChurn({ model: 'alternating', session: parseDistribution({ dist: 'exponential', mean: '3min' }), downtime: parseDistribution({ dist: 'exponential', mean: '1min' }), crashFraction: 0.25 }, h, 0, l => root.fork(l))
  const samples: number[] = []
  for (let m = 10; m <= 120; m++) { h.run(m * 60_000); samples.push(h.live().length) }
  near(t, mean(samples), 150, 0.05, 'mean live of 200 hosts')
  const crashes = h.log.filter(l => l.includes(':crash:')).length
  const leaves = h.log.filter(l => l.includes(':leave:')).length
  near(t, crashes / (crashes + leaves), 0.25, 0.15, 'crash share')
})

t.test('poisson arrivals: population ≈ λ·E[session], arrivals ≈ λ·T', async t => {
  const h = toyHost()
  const root = new SeededRng(5)
  startChurn({ model: 'poisson', arrivalRate: 1 / 1000, session: parseDistribution({ dist: 'exponential', mean: '100s' }), crashFraction: 1 }, h, 0, l => root.fork(l))
  h.run(3_600_000)
  const arrivals = h.log.filter(l => l.includes(':up:')).length
  near(t, arrivals, 3600, 0.05, 'arrivals in one hour at 1/s')
  t.ok(Math.abs(h.live().length - 100) < 35, `population ${h.live().length} near 100`)
  t.notOk(h.log.some(l => l.includes(':leave:')), 'crashFraction 1: every departure is a crash')
})

t.test('trace churn replays events; batch failure takes a fraction and brings it back', async t => {
  const h = toyHost()
  startChurn({ model: 'trace', events: readChurnCsv('0,a,join\n0,b,join\n5,a,leave\n6,a,crash\n7,b,crash') }, h, 1000, () => new SeededRng(1))
  h.run(6_500)
  t.same(h.live(), ['b'])
  h.run(10_000)
  t.same(h.live(), [])
  t.same(h.log, ['1000:up:a', '1000:up:b', '6000:leave:a', '8000:crash:b'], 'a crash of a node already gone is ignored')

  const g = toyHost()
  for (let i = 0; i < 100; i++) g.up(`n${i}`)
  let victims: string[] = []
  startBatchFailures([{ at: 1000, fraction: 0.1, kind: 'crash', recoverAfter: 5000 }], g, new SeededRng(3), (_b, ids) => { victims = ids })
  g.run(1000)
  t.equal(victims.length, 10)
  t.equal(g.live().length, 90)
  t.equal(new Set(victims).size, 10)
  g.run(6000)
  t.equal(g.live().length, 100, 'recovered')
})
