import t from 'tap'
import { fileURLToPath } from 'node:url'
import { dirname } from 'node:path'
import { ScenarioError, configHash, describeScenario, parseRate, parseScenario, setPath } from '@sipring/simulations'
import { confidence, cv, quantile, tQuantile975 } from '@sipring/simulations'

const here = dirname(fileURLToPath(import.meta.url))

t.test('defaults and units', async t => {
  const s = parseScenario('name: x\nduration: 10min\nnodes: 20\n')
  t.equal(s.duration, 600_000)
  t.equal(s.nodes, 20)
  t.equal(s.churn.model, 'none')
  t.equal(s.overlay.replicas, 3)
  t.equal(s.workload.expires, 600_000)
  t.ok(s.warmup > 0 && s.warmup < s.duration)
  t.equal(parseRate('30/min', 'r'), 0.0005)
  t.equal(parseRate(2, 'r'), 0.002)
  t.throws(() => parseRate('fast', 'r'), /rate like/)
})

t.test('clear errors name the field', async t => {
  const bad: Array<[string, RegExp]> = [
    ['nodez: 3', /scenario: unknown field "nodez"/],
    ['duration: 1min\nwarmup: 2min', /warmup .* must be shorter than duration/],
    ['churn: { model: alternating, session: { dist: exponential, mean: 1min } }', /churn.downtime: expected an object/],
    ['churn: { model: alternating, session: { dist: weibul, mean: 1min }, downtime: { dist: exponential, mean: 1s } }', /churn.session.dist: expected one of/],
    ['churn: { model: poisson, session: { dist: exponential, mean: 1min } }', /churn.arrivalRate: required/],
    ['churn: { model: warp }', /churn.model: expected none, alternating, poisson or trace/],
    ['overlay: { replicas: 3, writeQuorum: 4 }', /overlay.writeQuorum: must be within \[1, 3\]/],
    ['overlay: { pingTimeout: 2s }', /pingTimeout must be shorter/],
    ['failures: [{ at: 1min }]', /failures\[0\]: needs at and fraction/],
    ['failures: [{ at: 1min, fraction: 120% }]', /failures\[0\].fraction: must be within/],
    ['nodes: 2.5', /nodes: expected an integer/],
    ['workload: { lookupRate: lots }', /workload.lookupRate: expected a rate/],
    ['churn: { model: trace, trace: { file: nope.avt } }', /churn.trace.file: cannot read/],
    ['{ unclosed', /not valid YAML/],
    ['- a list', /scenario: expected a mapping/]
  ]
  for (const [yaml, re] of bad) t.throws(() => parseScenario(yaml), re, yaml)
  try { parseScenario('nodez: 3') } catch (err) { t.type(err, ScenarioError) }
})

t.test('trace scenario loads the .avt file relative to the scenario', async t => {
  const s = parseScenario('nodes: 1\nchurn: { model: trace, trace: { file: fixtures/tiny.avt } }\n', { baseDir: here })
  t.equal(s.churn.model, 'trace')
  if (s.churn.model === 'trace') t.equal(s.churn.events.length, 8)
})

t.test('overrides by dotted path, and the config hash', async t => {
  const yaml = 'name: x\nchurn: { model: alternating, session: { dist: exponential, mean: 1min }, downtime: { dist: exponential, mean: 1min } }\n'
  const a = parseScenario(yaml)
  const b = parseScenario(yaml, { overrides: [['churn.session.mean', '2min'], ['nodes', 7]] })
  t.equal(b.nodes, 7)
  t.equal(b.churn.model === 'alternating' ? b.churn.session.mean() : 0, 120_000)
  t.not(configHash(describeScenario(a)), configHash(describeScenario(b)))
  t.equal(configHash(describeScenario(a)), configHash(describeScenario(parseScenario(yaml))))
  t.throws(() => setPath({}, 'a.__proto__.b', 1), /bad override path/)
})

t.test('statistics helpers', async t => {
  t.equal(quantile([5, 1, 4, 2, 3], 0.5), 3)
  t.equal(quantile([1, 2, 3, 4], 0.99), 4)
  t.ok(Number.isNaN(quantile([], 0.5)))
  t.equal(tQuantile975(1), 12.706)
  t.equal(tQuantile975(10), 2.228)
  t.ok(Math.abs(tQuantile975(1000) - 1.962) < 0.002)
  const c = confidence([1, 2, 3, 4, 5])
  t.equal(c.mean, 3)
  t.ok(Math.abs(c.ci95 - 2.776 * Math.sqrt(2.5) / Math.sqrt(5)) < 1e-9)
  t.equal(confidence([4]).ci95, 0)
  t.equal(cv([2, 2, 2]), 0)
  t.ok(Math.abs(cv([1, 3]) - 0.5) < 1e-12)
})
