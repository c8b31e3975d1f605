/**
 * The simulator's command line. Wall-clock time is read here only (progress, ETA, perf.json);
 * it never reaches the simulation, whose results depend on the scenario and seed alone.
 */
import { writeFileSync, mkdirSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { getHeapStatistics } from 'node:v8'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { createHasher } from '@sipring/overlay'
import { SimulationCrash, runScenario, type Progress, type Summary } from './engine.js'
import { aggregate, reproduceCommand, stableJson, writeRun } from './output.js'
import { ScenarioError, configHash, describeScenario, loadScenario, type Scenario } from './scenario.js'
import { wallClockMs } from '@sipring/testkit'

const USAGE = `usage: sipring-sim run <scenario.yaml> [--seed N] [--reps N] [--out DIR] [--set path=value ...] [--no-events] [--quiet]
       sipring-sim validate <scenario.yaml> [--set path=value ...]
       sipring-sim compare <scenario.yaml> [--reps N] [--seed N] [--out DIR] [--set path=value ...]
                  runs the scenario in mode sim and in mode emulation (real libp2p nodes), --reps each,
                  and prints lookup success and repair time with 95% CIs side by side

  --seed N       master seed (default: the scenario's seed); with --reps, seeds N, N+1, ...
  --reps N       independent replications; summary.json then holds 95% confidence intervals
  --out DIR      output directory (default: simulations/out/<name>, git-ignored)
  --set p=v      override a scenario field by dotted path, e.g. --set nodes=1000 --set churn.session.median=1.4min
  --no-events    do not write events.jsonl
  --quiet        no progress line

exit codes: 0 ok, 1 usage / scenario error, 2 simulation crash, 3 checker violation`

export interface Args { cmd: string, file: string, seed?: number, reps: number, out?: string, sets: Array<[string, unknown]>, events: boolean, quiet: boolean }

export function parseArgs (argv: string[]): Args {
  const a: Args = { cmd: argv[0] ?? '', file: '', reps: 1, sets: [], events: true, quiet: false }
  const rest = argv.slice(1)
  const int = (v: string | undefined, what: string, lo: number, hi: number): number => {
    const n = Number(v)
    if (v === undefined || !Number.isInteger(n) || n < lo || n > hi) throw new ScenarioError(`${what}: expected an integer in [${lo}, ${hi}], got ${JSON.stringify(v)}`)
    return n
  }
  for (let i = 0; i < rest.length; i++) {
    const x = rest[i]!
    switch (x) {
      case '--seed': a.seed = int(rest[++i], '--seed', 0, 0xffffffff); break
      case '--reps': a.reps = int(rest[++i], '--reps', 1, 1000); break
      case '--out': a.out = rest[++i]; if (a.out === undefined) throw new ScenarioError('--out needs a directory'); break
      case '--set': {
        const kv = rest[++i]
        const eq = kv?.indexOf('=') ?? -1
        if (kv === undefined || eq <= 0) throw new ScenarioError('--set needs path=value')
        a.sets.push([kv.slice(0, eq), parseYaml(kv.slice(eq + 1)) as unknown])
        break
      }
      case '--no-events': a.events = false; break
      case '--quiet': a.quiet = true; break
      default:
        if (x.startsWith('-')) throw new ScenarioError(`unknown option ${x}`)
        if (a.file !== '') throw new ScenarioError(`unexpected argument ${x}`)
        a.file = x
    }
  }
  if (a.file === '') throw new ScenarioError('missing scenario file')
  return a
}

const wallMs = wallClockMs

function progressLine (label: string, p: Progress, started: number): string {
  const wall = (wallMs() - started) / 1000
  const frac = p.simTime / p.duration
  const eta = frac > 0 ? wall * (1 - frac) / frac : NaN
  const evs = wall > 0 ? p.events / wall : 0
  return `\r${label} sim ${(p.simTime / 60_000).toFixed(1)}/${(p.duration / 60_000).toFixed(1)} min (${(100 * frac).toFixed(0)}%) live ${p.live} events ${p.events} (${evs.toFixed(0)}/s) wall ${wall.toFixed(0)} s ETA ${Number.isFinite(eta) ? eta.toFixed(0) : '?'} s rss ${(process.memoryUsage().rss / 1048576).toFixed(0)} MiB   `
}

export async function main (argv: string[]): Promise<number> {
  let args: Args
  let scenario: Scenario
  try {
    if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') { console.log(USAGE); return argv.length === 0 ? 1 : 0 }
    args = parseArgs(argv)
    if (args.cmd !== 'run' && args.cmd !== 'validate' && args.cmd !== 'compare') throw new ScenarioError(`unknown command ${JSON.stringify(args.cmd)}`)
    scenario = loadScenario(args.file, { overrides: args.sets })
  } catch (err) {
    if (err instanceof ScenarioError) { console.error(`sipring-sim: ${err.message}\n\n${USAGE}`); return 1 }
    throw err
  }
  if (args.cmd === 'compare') {
    const { compare } = await import('./emulation/compare.js')
    return await compare(args, scenario)
  }
  if (args.cmd === 'validate') {
    const d = describeScenario(scenario)
    console.log(stableJson({ configHash: configHash({ ...d, seed: undefined }), scenario: d }).trimEnd())
    return 0
  }
  // ≈ 50 KiB of heap per node with its share of the workload: a 100k-node run needs more than the default ~4 GiB
  const heapMiB = getHeapStatistics().heap_size_limit / 1048576
  if (scenario.nodes * 50 / 1024 > heapMiB * 0.8) {
    console.error(`sipring-sim: warning: ${scenario.nodes} nodes need about ${Math.ceil(scenario.nodes * 50 / 1024)} MiB of heap, the limit is ${Math.round(heapMiB)} MiB: run with NODE_OPTIONS=--max-old-space-size=${Math.ceil(scenario.nodes * 120 / 1024)}`)
  }
  // a promise rejected with nobody listening inside the code under test would kill the process:
  // report it as a crash of this seed instead
  let current = { seed: args.seed ?? scenario.seed }
  const onUnhandled = (err: unknown): void => {
    console.error(`\nCRASH (unhandled rejection) in ${scenario.name} with seed ${current.seed}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    console.error(`reproduce: ${reproduceCommand(args.file, current.seed, args.sets)}`)
    process.exit(2)
  }
  process.on('unhandledRejection', onUnhandled)
  const out = resolve(args.out ?? fileURLToPath(new URL(`../out/${scenario.name}`, import.meta.url)))
  const base = args.seed ?? scenario.seed
  const hasher = await createHasher()
  const summaries: Summary[] = []
  const perf: Array<Record<string, number>> = []
  let status = 0
  for (let r = 0; r < args.reps; r++) {
    const seed = (base + r) >>> 0
    const dir = args.reps === 1 ? out : join(out, `seed-${seed}`)
    current = { seed }
    const started = wallMs()
    let peakRss = process.memoryUsage().rss
    const label = args.reps === 1 ? `[${scenario.name} seed ${seed}]` : `[${scenario.name} rep ${r + 1}/${args.reps} seed ${seed}]`
    try {
      const res = await runScenario(scenario, {
        seed,
        hasher,
        recordEvents: args.events,
        onProgress: p => {
          peakRss = Math.max(peakRss, process.memoryUsage().rss)
          if (!args.quiet) process.stderr.write(progressLine(label, p, started))
        }
      })
      if (!args.quiet) process.stderr.write('\n')
      writeRun(dir, res, scenario.warmup)
      const wall = wallMs() - started
      const pf = { wallMs: Math.round(wall), simEvents: res.simEvents, eventsPerSec: Math.round(res.simEvents / (wall / 1000)), peakRssMiB: Math.round(peakRss / 1048576), simMsPerWallMs: Math.round(scenario.duration / wall) }
      writeFileSync(join(dir, 'perf.json'), stableJson(pf))
      perf.push(pf)
      summaries.push(res.summary)
      const s = res.summary
      console.log(`${label} lookups ${s.lookups.success} ok (p50 ${s.lookups.latency.p50} / p99 ${s.lookups.latency.p99} ms), availability ${s.availability.mean}, losses ${s.losses.measured}, maintenance ${s.maintenance.msgsPerNodeSec} msg/node/s, ${pf.wallMs} ms wall → ${relative(process.cwd(), dir) || '.'}`)
      if (s.violations.length > 0) {
        status = 3
        console.error(`VIOLATION in ${scenario.name} with seed ${seed}:`)
        for (const v of s.violations.slice(0, 10)) console.error(`  ${v}`)
        console.error(`reproduce: ${reproduceCommand(args.file, seed, args.sets)}`)
      }
    } catch (err) {
      if (!args.quiet) process.stderr.write('\n')
      const e = err instanceof SimulationCrash && err.cause !== undefined ? err.cause : err
      console.error(`CRASH in ${scenario.name} with seed ${seed}: ${e instanceof Error ? e.stack ?? e.message : String(e)}`)
      console.error(`reproduce: ${reproduceCommand(args.file, seed, args.sets)}`)
      return 2
    }
  }
  process.off('unhandledRejection', onUnhandled)
  if (args.reps > 1) {
    mkdirSync(out, { recursive: true })
    const first = summaries[0]!
    writeFileSync(join(out, 'summary.json'), stableJson({
      name: first.name, configHash: first.configHash, commit: first.commit, seeds: summaries.map(s => s.seed),
      config: { ...first.config, seed: undefined },
      aggregate: aggregate(summaries),
      runs: summaries.map(s => ({ seed: s.seed, dir: `seed-${s.seed}`, violations: s.violations.length }))
    }))
    writeFileSync(join(out, 'perf.json'), stableJson(perf))
    const ag = aggregate(summaries)
    const show = (k: string): string => `${ag[k]!.mean} ± ${ag[k]!.ci95}`
    console.log(`[${first.name}] ${args.reps} reps (95% CI): lookup success ${show('lookups.success')}, p99 ${show('lookups.latency.p99')} ms, availability ${show('availability.mean')}, losses ${show('losses.measured')}`)
  }
  return status
}
