import t from 'tap'
import { createHasher } from '@sipring/overlay'
import {
  ScenarioError, parseScenario, runScenario, stableJson, superNodeFactoryFor, windowsCsv, newestOf,
  type RunResult, type Scenario, type SuperNodeAdapter
} from '@sipring/simulations'
import { moderateChurn, superNodesHead } from './scenarios.js'

// node: super — every simulated host is a real createSuperNode() (SIP stack, registrar, proxy,
// LocationReplicator), registered to over SIP by simulated UAs on a SimNetwork.
const hasher = await createHasher()
const base = superNodesHead('super-test') + `repairProbe: 1s
overlay: { vnodes: 16, replicas: 3 }
workload: { clients: 120, expires: 2min, lookupRate: 5/s, registerOver: 30s }
`
const churn = moderateChurn
const scenario = (extra = churn): Scenario => parseScenario(base + extra)

t.test('24 super nodes under churn: same seed → identical outputs, another seed differs', async t => {
  const s = scenario()
  const a = await runScenario(s, { seed: 5, hasher })
  const b = await runScenario(s, { seed: 5, hasher })
  const c = await runScenario(s, { seed: 6, hasher })
  t.equal(stableJson(a.summary), stableJson(b.summary), 'summary.json identical')
  t.equal(windowsCsv(a.windows), windowsCsv(b.windows), 'windows.csv identical')
  t.same(a.events, b.events, 'events identical')
  t.not(stableJson(a.summary), stableJson(c.summary), 'seed 6 gives another run')
  const x = a.summary
  t.ok(x.churn.crashes > 0 && x.churn.leaves > 0 && x.churn.joins > 24, `churn happened (${JSON.stringify(x.churn)})`)
  t.ok(x.lookups.total > 500, `${x.lookups.total} lookups measured`)
  t.ok(x.lookups.success > 0.9, `lookup success ${x.lookups.success}`)
  t.ok(x.registrations.total > 100 && x.registrations.success > 0.9, `REGISTER refreshes acknowledged: ${x.registrations.ok}/${x.registrations.total}`)
  t.ok(x.availability.mean > 0.9, `availability ${x.availability.mean}`)
  t.ok(x.repair !== undefined && x.repair.episodes > 0 && x.repair.repaired > 0, `repair measured ${JSON.stringify(x.repair)}`)
  t.ok(x.repair!.mean > 1000 && x.repair!.mean < 120_000, 'repair takes detection + re-replication time')
  t.ok(x.maintenance.byType['swim.ping'] !== undefined && x.maintenance.byType['store.put'] !== undefined, 'overlay traffic counted')
  t.equal(x.config.node, 'super')
  t.same(x.violations, [])
})

t.test('no churn: every registration reaches the overlay, every lookup finds the newest REGISTER', async t => {
  let factory: ReturnType<typeof superNodeFactoryFor> | undefined
  const nodes: SuperNodeAdapter[] = []
  const r: RunResult = await runScenario(scenario(''), {
    seed: 1,
    hasher,
    nodeFactory: ctx => {
      const f = superNodeFactoryFor(ctx)
      factory = f
      return { ...f, create: (id, rng) => { const n = f.create(id, rng) as SuperNodeAdapter; nodes.push(n); return n } }
    }
  })
  const x = r.summary
  // (a request still in flight at a window's end is counted in that window as failed: hence not exactly 1)
  t.ok(x.lookups.success >= 0.995, `lookup success ${x.lookups.success} of ${x.lookups.total}`)
  t.equal(x.availability.mean, 1)
  t.equal(x.losses.total, 0)
  t.ok(x.registrations.success >= 0.99, `registrations ${x.registrations.ok}/${x.registrations.total}`)
  t.same(x.violations, [])
  // the writes really went through SIP: REGISTERs and their 200s crossed the SimNetwork, and the
  // super nodes' registrars and usrloc hold the bindings
  t.ok(factory!.net.stats.delivered >= 2 * 120, `${factory!.net.stats.delivered} SIP messages delivered`)
  const registers = nodes.reduce((n, a) => n + a.node.status().registers, 0)
  t.ok(registers >= 120, `${registers} REGISTERs handled by the super nodes`)
  const contacts = nodes.reduce((n, a) => n + a.node.location.stats().contacts, 0)
  t.ok(contacts >= 120, `${contacts} contacts in the nodes' usrloc`)
  // the AOR item, as the replicas hold it, names the contact and the newest CSeq (the workload's sequence number)
  const held = nodes.map(n => n.local('sip:u7@sim.sipring')).filter(v => v !== undefined)
  t.equal(held.length, 3, 'R = 3 replicas hold the AOR item')
  t.ok(held.every(v => v!.s >= 1 && v!.c.startsWith('sip:u7@')), 'each names the contact and its CSeq')
})

t.test('newestOf: highest unexpired CSeq over every portion', async t => {
  const v = { v: 1, nodes: { a: { uri: 'sip:a', v: [1, 1], b: [{ contact: 'sip:x@h', cseq: 4, expires: 2000 }, { contact: 'sip:y@h', cseq: 9, expires: 500 }] }, b: { uri: 'sip:b', v: [1, 1], b: [{ contact: 'sip:z@h', cseq: 6, expires: 3000 }] } } }
  t.same(newestOf(v, 'sip:u@d', 1000), { c: 'sip:z@h', s: 6 }, 'the expired CSeq 9 is ignored')
  t.equal(newestOf(v, 'sip:u@d', 5000), undefined, 'all expired')
  t.equal(newestOf(null, 'sip:u@d', 0), undefined)
  t.equal(newestOf({ v: 1 }, 'sip:u@d', 0), undefined)
})

t.test('scenario: node and mode are validated', async t => {
  t.equal(parseScenario('node: super').node, 'super')
  t.equal(parseScenario('').node, 'overlay')
  t.equal(parseScenario('').mode, 'sim')
  t.throws(() => parseScenario('node: kamailio'), ScenarioError)
  t.throws(() => parseScenario('mode: real'), ScenarioError)
  t.throws(() => parseScenario('mode: emulation\nnode: super'), /emulation runs overlay nodes only/)
  t.throws(() => parseScenario('emulation: { timeScale: 0 }'), /emulation.timeScale/)
  t.throws(() => parseScenario('emulation: { transport: udp }'), /emulation.transport/)
  t.equal(parseScenario('repairProbe: 2s').repairProbe, 2000)
})
