/**
 * `sipring-sim compare scenario.yaml --reps N`: the validation of the simulator against real libp2p
 * nodes. Runs the scenario N times in `mode: sim` and N times in `mode: emulation` (seeds N, N+1, …
 * in both), then prints lookup success and time to repair with 95% confidence intervals side by side
 * and whether the two modes agree (their intervals overlap). Other metrics are printed for
 * information. Writes `compare.json` and every run's files under `<out>/sim/seed-<n>/` and
 * `<out>/emulation/seed-<n>/`.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHasher, type Hasher } from '@sipring/overlay'
import { runScenario, type Summary } from '../engine.js'
import type { Args } from '../main.js'
import { stableJson, writeRun } from '../output.js'
import type { Scenario } from '../scenario.js'
import { confidence, round, type Interval } from '../stats.js'
import { wallClockMs } from '@sipring/testkit'

/** Metrics compared: [key, label, value, primary (decides agreement)]. */
export const COMPARED: Array<[string, string, (s: Summary) => number | undefined, boolean]> = [
  ['lookups.success', 'lookup success', s => s.lookups.success, true],
  ['repair.p50', 'time to repair, median (ms)', s => s.repair?.p50, true],
  ['repair.mean', 'time to repair, mean (ms)', s => s.repair?.mean, true],
  ['repair.abandoned', 'repair episodes abandoned', s => s.repair?.abandoned, false],
  ['availability.mean', 'availability', s => s.availability.mean, false],
  ['lookups.latency.p50', 'lookup latency p50 (ms)', s => s.lookups.latency.p50, false],
  ['lookups.latency.p95', 'lookup latency p95 (ms)', s => s.lookups.latency.p95, false],
  ['maintenance.msgsPerNodeSec', 'overlay msgs/node/s', s => s.maintenance.msgsPerNodeSec, false],
  ['losses.measured', 'losses', s => s.losses.measured, false]
]

export interface MetricComparison {
  metric: string
  label: string
  primary: boolean
  sim: Interval
  emulation: Interval
  /** The 95% intervals overlap; undefined when either side has fewer than 2 values. */
  agree: boolean | undefined
}

const interval = (xs: number[]): Interval => {
  const c = confidence(xs)
  return { mean: round(c.mean), ci95: round(c.ci95), n: c.n, low: round(c.low), high: round(c.high) }
}

/** Side-by-side intervals; the modes agree on a metric when |m1 − m2| ≤ h1 + h2. */
export function compareSummaries (sim: Summary[], emulation: Summary[]): MetricComparison[] {
  return COMPARED.map(([metric, label, f, primary]) => {
    const a = interval(sim.map(s => f(s) ?? NaN))
    const b = interval(emulation.map(s => f(s) ?? NaN))
    const agree = a.n < 2 || b.n < 2 ? undefined : Math.abs(a.mean - b.mean) <= a.ci95 + b.ci95 + 1e-9
    return { metric, label, primary, sim: a, emulation: b, agree }
  })
}

export function formatComparison (rows: MetricComparison[]): string {
  const fmt = (i: Interval): string => Number.isFinite(i.mean) ? `${+i.mean.toPrecision(4)} ± ${+i.ci95.toPrecision(2)}` : 'n/a'
  const lines = [['metric', 'sim (95% CI)', 'emulation (95% CI)', 'agree'].join(' | ')]
  for (const r of rows) {
    lines.push([r.label, fmt(r.sim), fmt(r.emulation), r.agree === undefined ? 'n/a' : r.primary ? (r.agree ? 'yes' : 'NO') : (r.agree ? '(yes)' : '(no)')].join(' | '))
  }
  return lines.join('\n')
}

interface ModeRun { summaries: Summary[], perf: Array<{ seed: number, wallMs: number, cpuMs: number, simEvents: number }> }

async function runMode (s: Scenario, seeds: number[], hasher: Hasher, out: string, events: boolean, quiet: boolean): Promise<ModeRun> {
  const r: ModeRun = { summaries: [], perf: [] }
  for (const seed of seeds) {
    const wall0 = wallClockMs()
    const cpu0 = process.cpuUsage()
    const res = await runScenario(s, { seed, hasher, recordEvents: events })
    const wallMs = wallClockMs() - wall0
    const cpu = process.cpuUsage(cpu0)
    const dir = join(out, s.mode, `seed-${seed}`)
    writeRun(dir, res, s.warmup)
    const perf = { seed, wallMs: Math.round(wallMs), cpuMs: Math.round((cpu.user + cpu.system) / 1000), simEvents: res.simEvents }
    writeFileSync(join(dir, 'perf.json'), stableJson(perf))
    r.summaries.push(res.summary)
    r.perf.push(perf)
    const x = res.summary
    if (!quiet) {
      console.log(`[${s.name} ${s.mode} seed ${seed}] lookups ${x.lookups.success} (p50 ${x.lookups.latency.p50} ms), repair ${x.repair?.mean ?? 'n/a'} ms (${x.repair?.repaired ?? 0}/${x.repair?.episodes ?? 0}), availability ${x.availability.mean}, losses ${x.losses.measured}; ${perf.wallMs} ms wall, ${perf.cpuMs} ms CPU`)
    }
    if (x.violations.length > 0) console.error(`  violations: ${x.violations.slice(0, 3).join('; ')}`)
  }
  return r
}

/** The `compare` command (arguments already parsed, scenario loaded). */
export async function compare (args: Args, scenario: Scenario): Promise<number> {
  if (scenario.node !== 'overlay') { console.error('sipring-sim compare: the emulation runs overlay nodes only (node: overlay)'); return 1 }
  const base: Scenario = { ...scenario, repairProbe: scenario.repairProbe > 0 ? scenario.repairProbe : 1000 }
  const seed0 = args.seed ?? scenario.seed
  const seeds = Array.from({ length: args.reps }, (_, i) => (seed0 + i) >>> 0)
  const out = resolve(args.out ?? fileURLToPath(new URL(`../../out/${scenario.name}-compare`, import.meta.url)))
  const onUnhandled = (err: unknown): void => {
    console.error(`\nCRASH (unhandled rejection) in ${scenario.name}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    process.exit(2)
  }
  process.on('unhandledRejection', onUnhandled)
  try {
    const hasher = await createHasher()
    const sim = await runMode({ ...base, mode: 'sim' }, seeds, hasher, out, args.events, args.quiet)
    const emu = await runMode({ ...base, mode: 'emulation' }, seeds, hasher, out, args.events, args.quiet)
    const rows = compareSummaries(sim.summaries, emu.summaries)
    const primary = rows.filter(r => r.primary)
    const verdict = primary.some(r => r.agree === undefined) ? 'undecided (needs --reps ≥ 2)' : primary.every(r => r.agree === true) ? 'AGREE' : 'DISAGREE'
    mkdirSync(out, { recursive: true })
    writeFileSync(join(out, 'compare.json'), stableJson({
      name: scenario.name, seeds, timeScale: base.emulation.timeScale, transport: base.emulation.transport,
      configHash: sim.summaries[0]?.configHash, commit: sim.summaries[0]?.commit, verdict, metrics: rows,
      perf: { sim: sim.perf, emulation: emu.perf }
    }))
    console.log(`\n${scenario.name}: ${seeds.length} reps per mode, ${scenario.nodes} nodes, emulation at ${base.emulation.timeScale}× real time over libp2p ${base.emulation.transport}`)
    console.log(formatComparison(rows))
    console.log(`verdict on lookup success and time to repair: ${verdict} → ${relative(process.cwd(), join(out, 'compare.json'))}`)
    return 0
  } finally {
    process.off('unhandledRejection', onUnhandled)
  }
}
