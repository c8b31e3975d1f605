import t from 'tap'
import { createHasher } from '@sipring/overlay'
import { parseScenario, runScenario, windowsCsv, type Summary } from '@sipring/simulations'
import { compareSummaries, formatComparison } from '../src/emulation/compare.js'

// mode: emulation — the scenario on 8 real libp2p nodes (TCP on 127.0.0.1) in this process, on a
// RealClock running 4× real time: 100 simulated seconds in 25 real seconds.
const hasher = await createHasher()
const yaml = `
name: emulation-test
duration: 100s
warmup: 40s
window: 20s
nodes: 8
bootstrapOver: 16s
mode: emulation
emulation: { timeScale: 4 }
repairProbe: 1s
overlay: { vnodes: 16, replicas: 3, requestTimeout: 2s, pingTimeout: 400ms }
workload: { clients: 40, expires: 10min, lookupRate: 3/s, registerOver: 12s, lookupTimeout: 3s }
churn:
  model: trace
  trace: { file: churn.csv }
`
const listeners = (): number => process.getActiveResourcesInfo().filter(r => r === 'TCPServerWrap').length

t.test('8 libp2p nodes: same scenario, same outputs; crashes and restarts over real connections', async t => {
  // a crash at 50 s and a restart (fresh libp2p identity, same host id) at 70 s, from a CSV trace
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(join(tmpdir(), 'sipring-emu-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  writeFileSync(join(dir, 'churn.csv'), 'time,node,event\n50,n00003,crash\n70,n00003,join\n')
  const s = parseScenario(yaml, { baseDir: dir })
  t.equal(s.mode, 'emulation')
  const before = listeners()
  const wall0 = Date.now()
  const r = await runScenario(s, { seed: 3, hasher })
  const wall = Date.now() - wall0
  const x: Summary = r.summary
  t.ok(wall >= 24_000 && wall < 40_000, `100 simulated s in ${wall} real ms (time scale 4)`)
  // listening sockets close asynchronously: give them a moment
  for (let i = 0; i < 30 && listeners() > before; i++) await new Promise(resolve => { setTimeout(resolve, 100) })
  t.equal(listeners(), before, 'every libp2p node was stopped at the end')
  t.equal(x.config.mode, 'emulation')
  t.equal(r.windows.length, 5, 'the same windows as in the simulator')
  t.equal(x.churn.crashes, 1)
  t.ok(x.churn.joins >= 9, `every node joined, and the crashed one again (${x.churn.joins} joins)`)
  t.ok(x.lookups.total > 40, `${x.lookups.total} lookups measured`)
  t.ok(x.lookups.success > 0.5, `lookup success ${x.lookups.success} (real time on a shared machine: loose bound)`)
  t.ok(x.availability.anyOwner > 0.5, `keys held (${x.availability.anyOwner})`)
  t.ok((x.maintenance.byType['swim.ping']?.msgsPerNodeSec ?? 0) > 0.3, 'SWIM probes counted on the libp2p path')
  t.ok((x.maintenance.byType['store.put']?.msgsPerNodeSec ?? 0) > 0, 'store writes counted')
  t.ok(x.repair !== undefined && x.repair.episodes === 1, `the crash opened one repair episode ${JSON.stringify(x.repair)}`)
  t.same(x.violations, [])
  // same outputs as the simulator: a sim run of the same scenario has the same summary fields and CSV columns
  const sim = await runScenario({ ...s, mode: 'sim' }, { seed: 3, hasher })
  t.same(Object.keys(x).sort(), Object.keys(sim.summary).sort(), 'summary.json has the same fields')
  t.equal(windowsCsv(r.windows).split('\n')[0], windowsCsv(sim.windows).split('\n')[0], 'windows.csv has the same columns')
  t.equal(sim.summary.repair?.episodes, 1)
})

t.test('compare: intervals side by side, agreement = overlap', async t => {
  const sum = (success: number, repair: number): Summary => ({
    lookups: { success, latency: { p50: 20, p95: 30 } }, repair: { mean: repair, p50: repair, abandoned: 0 }, availability: { mean: 1 }, maintenance: { msgsPerNodeSec: 5 }, losses: { measured: 0 }
  }) as unknown as Summary
  const a = [sum(0.98, 10_000), sum(0.99, 12_000), sum(0.97, 11_000)]
  const close = [sum(0.975, 11_500), sum(0.985, 12_500), sum(0.99, 10_500)]
  const far = [sum(0.5, 40_000), sum(0.52, 41_000), sum(0.51, 39_000)]
  const rows = compareSummaries(a, close)
  t.ok(rows.filter(r => r.primary).every(r => r.agree === true), 'overlapping intervals agree')
  t.equal(rows.find(r => r.metric === 'lookups.success')!.sim.n, 3)
  const bad = compareSummaries(a, far)
  t.equal(bad.find(r => r.metric === 'lookups.success')!.agree, false)
  t.equal(bad.find(r => r.metric === 'repair.mean')!.agree, false)
  t.equal(bad.find(r => r.metric === 'repair.p50')!.agree, false)
  t.equal(compareSummaries([a[0]!], [close[0]!])[0]!.agree, undefined, 'one rep per mode cannot decide')
  const text = formatComparison(bad)
  t.match(text, /lookup success \| 0\.98 ± [0-9.]+ \| 0\.51 ± [0-9.]+ \| NO/)
})

t.test('repair tracker: episode per crash of an owner, closed when every key is back on R owners', async t => {
  const { RepairTracker } = await import('@sipring/simulations')
  let now = 0
  // a toy ring: owners of a key are the first R nodes of `up` after rotating by the key's number
  let up = ['a', 'b', 'c', 'd']
  const held = new Map<string, Set<string>>() // node → keys held (current version)
  const seqs = new Map<string, number>([['k1', 1], ['k2', 1]])
  const ring = (): { owners(key: string, n: number): string[], size: number } => ({
    size: up.length,
    owners: (key, n) => { const i = Number(key.slice(1)) % up.length; return [...up.slice(i), ...up.slice(0, i)].slice(0, n) }
  })
  const tr = new RepairTracker({
    now: () => now,
    ring,
    holds: (id, key) => held.get(id)?.has(key) ?? false,
    current: key => seqs.get(key),
    liveKeys: () => seqs.keys(),
    storeKey: k => k
  }, { replicas: 2, probe: 1000, from: 100 })
  const place = (): void => { held.clear(); for (const k of seqs.keys()) for (const o of ring().owners(k, 2)) { if (!held.has(o)) held.set(o, new Set()); held.get(o)!.add(k) } }
  place()
  tr.onCrash('b') // before the warm-up: ignored
  now = 1000
  tr.onCrash('d') // owns nothing with R = 2 (k1 → b,c; k2 → c,d): owns k2
  up = ['a', 'b', 'c']
  now = 2000; tr.probe()
  t.equal(tr.summary().open, 1, 'k2 has one replica left: still open')
  now = 7000; place(); tr.probe()
  t.same({ ...tr.summary(), mean: tr.summary().mean }, { episodes: 1, repaired: 1, open: 0, abandoned: 0, mean: 6000, p50: 6000, p95: 6000, max: 6000, probe: 1000 })
  // a crash whose key expires before it is repaired is abandoned, not averaged
  tr.onCrash('c')
  up = ['a', 'b']
  now = 8000; seqs.delete('k1'); seqs.delete('k2'); tr.probe()
  const s = tr.summary()
  t.equal(s.abandoned, 1)
  t.equal(s.repaired, 1)
  t.equal(s.mean, 6000)
})
