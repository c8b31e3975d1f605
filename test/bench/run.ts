// sipring vs Kamailio on loopback: SIPp REGISTER load and INVITE–ACK–BYE load, stepping the rate
// up until failures appear (the knee). For each step: achieved rate, failures, p50/p99 response time
// (SIPp -trace_rtt), CPU of the server's process tree (/proc/<pid>/stat utime+stime). Prints a table
// and writes test/bench/results/<date>.json. Not part of `npm test`.
//
//   npm run bench                      full run (both servers, both scenarios)
//   npm run bench -- --quick           short steps, low rates (a smoke test of the harness, ~1 min)
//   npm run bench -- --only kamailio   one server; --scenario register|calls; --step-seconds N;
//   npm run bench -- --register-rates 5000,10000 --call-rates 500,1000 --sipp N --transport tcp
//   npm run bench -- --profile         also profile sipring (node --cpu-prof) and print its hot spots
//
// Env: SIPRING_CLI=source runs the daemon from TypeScript (default: packages/daemon/dist when built).
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { summarizeProfile, type ProfileSummary } from '../lib/cpuprofile.js'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { freePort } from '../lib/ports.js'
import { cpuSeconds, machineCpuTicks, processTree, sleep, stopAll, tempDir } from '../lib/proc.js'
import { DOMAIN, ROOT, sipringAvailable, startServer, type ServerKind, type TestServer } from '../lib/servers.js'
import { rttStats, runSipp, scenario, startSippServer, userNames, writeUsersCsv, type RttStats, type SippResult } from '../lib/sipp.js'

interface Args {
  quick: boolean
  only?: ServerKind
  scenarios: Array<'register' | 'calls'>
  stepSeconds: number
  registerRates: number[]
  callRates: number[]
  /** SIPp instances per step (0 = automatic: one per `perSipp` calls/s). */
  sipp: number
  perSippRegister: number
  perSippCalls: number
  children: number
  /** Pause between ACK and BYE (ms). A multi-process proxy may reorder an ACK and a BYE sent
   *  back to back, which SIPp's UAS counts as a failure, so calls last a little. */
  callHoldMs: number
  transport: 'udp' | 'tcp'
  /** Run sipring under `node --cpu-prof` and print where its time went (per scenario). */
  profile: boolean
  /** Run a failing step a second time before calling it the knee (default on; --no-retry). */
  retry: boolean
  out?: string
}

function parseArgs (argv: string[]): Args {
  const quick = argv.includes('--quick')
  const a: Args = {
    quick,
    scenarios: ['register', 'calls'],
    stepSeconds: quick ? 3 : 6,
    registerRates: quick ? [1000, 3000] : [5000, 10000, 15000, 20000, 25000, 30000, 35000, 40000],
    callRates: quick ? [200, 500] : [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000],
    sipp: 0,
    perSippRegister: 5000,
    perSippCalls: 1000,
    children: 4,
    callHoldMs: 100,
    retry: true,
    transport: 'udp',
    profile: false
  }
  const num = (s: string | undefined, name: string): number => {
    const n = Number(s)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}: expected a positive number, got ${String(s)}`)
    return n
  }
  const list = (s: string | undefined, name: string): number[] => (s ?? '').split(',').map(x => num(x, name))
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!
    const v = (): string | undefined => argv[++i]
    switch (f) {
      case '--quick': break
      case '--only': { const k = v(); if (k !== 'sipring' && k !== 'kamailio') throw new Error('--only sipring|kamailio'); a.only = k; break }
      case '--scenario': { const s = v(); if (s !== 'register' && s !== 'calls') throw new Error('--scenario register|calls'); a.scenarios = [s]; break }
      case '--step-seconds': a.stepSeconds = num(v(), f); break
      case '--register-rates': a.registerRates = list(v(), f); break
      case '--call-rates': a.callRates = list(v(), f); break
      case '--sipp': a.sipp = num(v(), f); break
      case '--children': a.children = num(v(), f); break
      case '--no-retry': a.retry = false; break
      case '--profile': a.profile = true; break
      case '--transport': { const x = v(); if (x !== 'udp' && x !== 'tcp') throw new Error('--transport udp|tcp'); a.transport = x; break }
      case '--hold-ms': a.callHoldMs = num(v(), f); break
      case '--out': a.out = v(); break
      case '--help': case '-h':
        console.log(readFileSync(new URL(import.meta.url), 'utf8').split('\n').filter(l => l.startsWith('//')).map(l => l.slice(3)).join('\n'))
        process.exit(0)
        break
      default: throw new Error(`unknown option ${f} (see --help)`)
    }
  }
  return a
}

export interface Step {
  target: number
  instances: number
  attempted: number
  successful: number
  failed: number
  retransmissions: number
  achieved: number
  /** Response time 1 (REGISTER→200 or INVITE→200), ms. */
  rtt?: RttStats
  /** BYE→200 for calls. */
  rtt2?: RttStats
  /** Server CPU, % of one core, over the step. */
  cpu: number
  /** Whole-machine CPU busy %, over the step (SIPp instances included): ~100 means the box, not the server, is the limit. */
  machineCpu?: number
  wallSeconds: number
  ok: boolean
  note?: string
  /** 1-minute load average when the step started (other work on the machine skews results). */
  load: number
  /** The step failed once and was run again (the result is the second run's). */
  retried?: boolean
}

export interface ScenarioResult {
  steps: Step[]
  /** Achieved rate of the highest step that passed: 0 failures, every call completed, ≥ 80 % of
   *  the target rate achieved. A failing step is run a second time before it counts. */
  knee: number
  kneeStep?: Step
}

/** SIPp transport mode: one UDP socket, or one TCP connection per SIPp instance. */
const sippMode = (a: Args): 'u1' | 't1' => a.transport === 'udp' ? 'u1' : 't1'
const remoteOf = (s: TestServer, a: Args): string => a.transport === 'udp' ? s.udp! : s.tcp!

const pidsOf = async (s: TestServer): Promise<number[]> => processTree(s.pid)

function merge (results: SippResult[], rtd: number): RttStats | undefined {
  // percentiles over the samples of all instances together
  const all: number[] = []
  for (const r of results) for (const v of r.rttSamples[rtd] ?? []) all.push(v)
  return all.length ? rttStats(all) : undefined
}

function describeStep (s: Step): string {
  const r = s.rtt
  return `${String(s.target).padStart(6)}/s x${s.instances}: ok=${s.successful} failed=${s.failed} retrans=${s.retransmissions} achieved=${s.achieved.toFixed(0)}/s ` +
    `p50=${r ? Math.round(r.p50) : '-'}ms p99=${r ? Math.round(r.p99) : '-'}ms cpu=${s.cpu.toFixed(0)}% box=${s.machineCpu?.toFixed(0) ?? '-'}% load=${s.load.toFixed(1)} ${s.ok ? 'PASS' : 'FAIL'}${s.note ? ` (${s.note})` : ''}`
}

/** Runs `runStep` at each rate until a step fails (a failing step is run once more first). */
async function stepUp (rates: number[], a: Args, label: string, runStep: (rate: number) => Promise<Step>): Promise<ScenarioResult> {
  const steps: Step[] = []
  for (const rate of rates) {
    let step: Step | undefined
    for (let attempt = 0; attempt < (a.retry ? 2 : 1); attempt++) {
      const load = loadavg()[0]!
      step = { ...(await runStep(rate)), load, retried: attempt > 0 }
      console.log(`  ${label} ${describeStep(step)}`)
      await sleep(1000)
      if (step.ok) break
    }
    steps.push(step!)
    if (!step!.ok) break
  }
  return knee(steps)
}

async function registerLoad (server: TestServer, a: Args, tag: string): Promise<ScenarioResult> {
  const tmp = tempDir('bench-reg')
  let run = 0
  try {
    return await stepUp(a.registerRates, a, `${tag} REGISTER`, async rate => {
      const instances = a.sipp > 0 ? a.sipp : Math.max(1, Math.ceil(rate / a.perSippRegister))
      const per = Math.ceil(rate / instances)
      const calls = per * a.stepSeconds
      run++
      const files = Array.from({ length: instances }, (_, i) => {
        const f = join(tmp.dir, `${tag}-${run}-${i}.csv`)
        writeUsersCsv(f, userNames(`${tag}r${i}u`, Math.min(calls, 20000)))
        return f
      })
      const pids = await pidsOf(server)
      const cpu0 = await cpuSeconds(pids)
      const m0 = machineCpuTicks()
      const t0 = Date.now()
      const results = await Promise.all(files.map(async f => runSipp({
        scenario: scenario('register'), remote: remoteOf(server, a), transport: sippMode(a), calls, rate: per, limit: Math.max(1000, per * 2),
        inf: f, keys: { domain: DOMAIN, contact: '127.0.0.1:9', expires: '3600' }, recvTimeoutMs: 5000,
        timeoutMs: (a.stepSeconds + 20) * 1000
      })))
      const wall = (Date.now() - t0) / 1000
      const cpu = (await cpuSeconds(pids)) - cpu0
      const m1 = machineCpuTicks()
      const box = m1.total > m0.total ? 100 * (m1.busy - m0.busy) / (m1.total - m0.total) : undefined
      for (const r of results) if (r.failed > 0 && process.env.BENCH_VERBOSE) console.log(`    SIPp failures:\n${r.errors.slice(0, 3000)}`)
      return { ...summarize(rate, instances, results, cpu, wall, 1), machineCpu: box }
    })
  } finally { tmp.cleanup() }
}

async function callLoad (server: TestServer, a: Args, tag: string): Promise<ScenarioResult> {
  const tmp = tempDir('bench-call')
  let run = 0
  try {
    return await stepUp(a.callRates, a, `${tag} CALLS   `, async rate => {
      const instances = a.sipp > 0 ? a.sipp : Math.max(1, Math.ceil(rate / a.perSippCalls))
      const per = Math.ceil(rate / instances)
      const calls = per * a.stepSeconds
      run++
      // one UAS per UAC, each registered under its own user from its own port
      const uases = []
      for (let i = 0; i < instances; i++) {
        const user = `${tag}callee${run}x${i}`
        const port = await freePort()
        const csv = join(tmp.dir, `${user}.csv`)
        writeUsersCsv(csv, [user])
        const reg = await runSipp({
          scenario: scenario('register'), remote: remoteOf(server, a), transport: sippMode(a), calls: 1, inf: csv,
          localPort: a.transport === 'udp' ? port : undefined, // UDP: from the UAS's own port (source = Contact)
          keys: { domain: DOMAIN, contact: `127.0.0.1:${port}`, expires: '3600' }, recvTimeoutMs: 5000, timeoutMs: 15000, rtt: false
        })
        if (reg.successful !== 1) throw new Error(`${tag}: could not register ${user}: exit ${reg.exitCode}\n${reg.errors.slice(0, 500)}`)
        uases.push({ user, uas: await startSippServer({ scenario: scenario('uas'), transport: sippMode(a), localPort: port, maxLifeMs: (a.stepSeconds + 60) * 1000, rtt: false, extraArgs: ['-l', String(Math.max(2000, per * 4))] }) })
      }
      const pids = await pidsOf(server)
      const cpu0 = await cpuSeconds(pids)
      const m0 = machineCpuTicks()
      const t0 = Date.now()
      const results = await Promise.all(uases.map(async ({ user }) => runSipp({
        scenario: scenario('uac'), remote: remoteOf(server, a), transport: sippMode(a), service: user, calls, rate: per, limit: Math.max(1000, per * 3),
        keys: { domain: DOMAIN }, durationMs: a.callHoldMs, recvTimeoutMs: 8000, timeoutMs: (a.stepSeconds + 30) * 1000
      })))
      const wall = (Date.now() - t0) / 1000
      const cpu = (await cpuSeconds(pids)) - cpu0
      const m1 = machineCpuTicks()
      const box = m1.total > m0.total ? 100 * (m1.busy - m0.busy) / (m1.total - m0.total) : undefined
      await sleep(2500) // the UAS keeps each call 1 s after its BYE (timewait)
      const uasResults = await Promise.all(uases.map(async u => u.uas.stop()))
      if (process.env.BENCH_VERBOSE) {
        for (const r of results) if (r.failed > 0) console.log(`    UAC failures:\n${r.errors.slice(0, 3000)}`)
        for (const r of uasResults) if (r.failed > 0) console.log(`    UAS failures:\n${r.errors.slice(0, 1500)}`)
      }
      const step: Step = { ...summarize(rate, instances, results, cpu, wall, 1), machineCpu: box }
      step.rtt2 = merge(results, 2)
      const uasFailed = uasResults.reduce((s, r) => s + r.failed, 0)
      if (uasFailed > 0) { step.ok = false; step.note = `${uasFailed} failed at the UAS` }
      return step
    })
  } finally { tmp.cleanup() }
}

function summarize (target: number, instances: number, results: SippResult[], cpuSec: number, wall: number, rtd: number): Step {
  const successful = results.reduce((s, r) => s + r.successful, 0)
  const failed = results.reduce((s, r) => s + r.failed, 0)
  const attempted = results.reduce((s, r) => s + r.created, 0)
  const retransmissions = results.reduce((s, r) => s + r.retransmissions, 0)
  // achieved: sum of each instance's successful / its own sending span
  const achieved = results.reduce((s, r) => s + r.achievedRate, 0)
  const timedOut = results.some(r => r.timedOut)
  const ok = failed === 0 && !timedOut && successful === attempted && attempted > 0 && achieved >= 0.8 * target
  const note = timedOut ? 'SIPp timed out' : achieved < 0.8 * target && failed === 0 ? 'achieved < 80% of target (load generator or server saturated)' : undefined
  return { target, instances, attempted, successful, failed, retransmissions, achieved, rtt: merge(results, rtd), cpu: (cpuSec / Math.max(wall, 0.001)) * 100, wallSeconds: wall, ok, note, load: 0 }
}

function knee (steps: Step[]): ScenarioResult {
  const passed = steps.filter(s => s.ok)
  const best = passed[passed.length - 1]
  return { steps, knee: best ? Math.round(best.achieved) : 0, kneeStep: best }
}

function toolVersion (cmd: string, args: string[], re: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 })
  return re.exec(`${r.stdout}${r.stderr}`)?.[1] ?? 'unknown'
}

async function main (): Promise<void> {
  const a = parseArgs(process.argv.slice(2))
  const kinds: ServerKind[] = a.only ? [a.only] : ['kamailio', 'sipring']
  const mode = process.env.SIPRING_CLI === 'source' ? 'source' : (sipringAvailable('dist') ? 'dist' : 'source')
  for (const tool of ['sipp', ...(kinds.includes('kamailio') ? ['kamailio'] : [])]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) { console.error(`bench: ${tool} not installed (run scripts/install-tools.sh)`); process.exit(2) }
  }
  const env = {
    date: new Date().toISOString(),
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    loadavg: loadavg(),
    node: process.version,
    sipp: toolVersion('sipp', ['-v'], /SIPp (v[\d.]+)/),
    kamailio: toolVersion('kamailio', ['-v'], /version: kamailio ([\d.]+)/),
    sipringCli: mode,
    quick: a.quick,
    transport: a.transport,
    stepSeconds: a.stepSeconds,
    kamailioChildren: a.children
  }
  if (env.loadavg[0]! > 1.5) console.log(`WARNING: load average ${env.loadavg[0]!.toFixed(1)} on ${env.cpus} CPUs: other work is running, results will be low and noisy`)
  console.log(`bench: ${env.cpus} × ${env.cpuModel}, node ${env.node}, SIPp ${env.sipp}, Kamailio ${env.kamailio}, sipring from ${mode}, ${a.stepSeconds} s steps${a.quick ? ' (quick)' : ''}`)
  const results: Record<string, Record<string, ScenarioResult>> = {}
  const profiles: Record<string, ProfileSummary> = {}
  for (const kind of kinds) {
    results[kind] = {}
    for (const sc of a.scenarios) {
      // a fresh server per scenario, so one scenario's leftovers never load the next
      const port = await freePort()
      const profDir = a.profile && kind === 'sipring' ? tempDir('bench-prof') : undefined
      const server = await startServer(kind, {
        listen: [{ proto: 'udp', host: '127.0.0.1', port }, { proto: 'tcp', host: '127.0.0.1', port }],
        children: a.children, cli: mode, logLevel: 'error',
        nodeArgs: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir.dir}`] : undefined
      })
      console.log(`${kind} ${sc} over ${a.transport.toUpperCase()} (pid ${server.pid}, ${remoteOf(server, a)})`)
      try {
        results[kind]![sc] = sc === 'register' ? await registerLoad(server, a, kind.slice(0, 3)) : await callLoad(server, a, kind.slice(0, 3))
      } finally {
        await server.stop()
      }
      if (profDir) {
        const f = readdirSync(profDir.dir).find(x => x.endsWith('.cpuprofile'))
        if (f) {
          const p = summarizeProfile(join(profDir.dir, f))
          profiles[`${kind}-${sc}`] = p
          console.log(`  sipring CPU profile (${p.totalMs.toFixed(0)} ms sampled): ${p.packages.map(([k, v]) => `${k} ${v.toFixed(1)}%`).join(', ')}`)
          for (const [k, v] of p.functions) console.log(`    ${v.toFixed(1).padStart(5)}%  ${k}`)
        } else console.log('  (no CPU profile written: did sipring exit cleanly?)')
        profDir.cleanup()
      }
      await sleep(1000)
    }
  }

  // table
  const rows: string[][] = [['scenario', 'server', 'knee (0 fail)', 'achieved', 'p50 ms', 'p99 ms', 'CPU % (1 core)', 'first failing step']]
  for (const sc of a.scenarios) {
    for (const kind of kinds) {
      const r = results[kind]?.[sc]
      if (!r) continue
      const k = r.kneeStep
      const fail = r.steps.find(s => !s.ok)
      rows.push([sc, kind, `${r.knee}/s`, k ? `${k.achieved.toFixed(0)}/s` : '-', k?.rtt ? String(Math.round(k.rtt.p50)) : '-', k?.rtt ? String(Math.round(k.rtt.p99)) : '-', k ? k.cpu.toFixed(0) : '-',
        fail ? `${fail.target}/s: ${fail.failed} failed${fail.note ? `, ${fail.note}` : ''}` : 'none (raise the rates)'])
    }
  }
  const ratios: Record<string, number | null> = {}
  if (kinds.length === 2) {
    for (const sc of a.scenarios) {
      const s = results.sipring?.[sc]?.knee ?? 0
      const k = results.kamailio?.[sc]?.knee ?? 0
      ratios[sc] = k > 0 ? s / k : null
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(r => r[i]!.length)))
  console.log('')
  for (const [i, r] of rows.entries()) {
    console.log(r.map((c, j) => c.padEnd(widths[j]!)).join('  '))
    if (i === 0) console.log(widths.map(w => '-'.repeat(w)).join('  '))
  }
  for (const [sc, v] of Object.entries(ratios)) console.log(`sipring / Kamailio ${sc} knee ratio: ${v === null ? 'n/a' : v.toFixed(2)}`)

  const dir = join(ROOT, 'test', 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const file = a.out ?? join(dir, `${env.date.replace(/[:]/g, '-').replace(/\..*$/, '')}${a.transport === 'tcp' ? '-tcp' : ''}${a.quick ? '-quick' : ''}.json`)
  writeFileSync(file, JSON.stringify({ env, args: a, results, ratios, ...(a.profile ? { profiles } : {}) }, null, 2) + '\n')
  console.log(`results written to ${file}`)
}

main().then(async () => { await stopAll(); process.exit(0) }, async err => {
  console.error(`bench failed: ${(err as Error).stack ?? String(err)}`)
  await stopAll()
  process.exit(1)
})

