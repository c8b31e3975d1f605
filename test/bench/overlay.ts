// Overlay benchmarks, not part of `npm test`:
//
//   node --import tsx test/bench/overlay.ts [--part register,lookup,ram] [--rates 600,1200,2400,3600,4800,6000]
//        [--seconds 5] [--lookups 2000] [--bindings 50000] [--refresh]
//
// register: REGISTER/s of a single node (no overlay) next to a 3-node overlay with R = 3 (W = 2), same
//   machine, same method: three SIPp instances at rate/3 each (for the overlay one per node, for the
//   single node all three at it), distinct users per step, rates stepped up until a step fails. A
//   step passes with 0 failed REGISTERs, every REGISTER answered and ≥ 80 % of the target achieved;
//   for the overlay also every publish drained (replication `pending` back to 0 within 15 s of the
//   step's end, nothing abandoned) and 30 users of the step found by GET /lookup at another node.
//   The ratio = overlay knee / single knee (target ≥ 0.5).
// lookup: (1) in process: two OverlayNodes on libp2p TCP loopback, timing store.get (see
//   overlay-inproc.ts); (2) between two daemons: GET /lookup at node B for users attached at A,
//   sequential, timed by the client (HTTP + admin JSON included, so an upper bound).
// ram: bytes per stored binding in a replica (overlay-inproc.ts ram), N = --bindings.
//
// Env: BENCH_KEEP_PROFILE=<file> keeps node a's CPU profile (--profile). SIPRING_CLI=dist runs the daemons from packages/daemon/dist (default: TypeScript sources, the
// same for both sides of the ratio).
import { spawnSync } from 'node:child_process'
import { copyFileSync, readdirSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { summarizeProfile } from '../lib/cpuprofile.js'
import { freePort } from '../lib/ports.js'
import { cpuSeconds, haveTool, processTree, sleep, stopAll, tempDir } from '../lib/proc.js'
import { DOMAIN, ROOT, startSipring, type TestServer } from '../lib/servers.js'
import { rttStats, runSipp, scenario, userNames, writeUsersCsv, type SippResult } from '../lib/sipp.js'
import { lookup, overlayNodeSpec, ring, ringAgrees, startOverlayNode, waitUntil, type OverlayNode } from '../lib/overlay.js'

const { values: args } = parseArgs({
  options: {
    part: { type: 'string', default: 'register,lookup,ram' },
    rates: { type: 'string', default: '600,1200,2400,3600,4800,6000,8000' },
    seconds: { type: 'string', default: '5' },
    lookups: { type: 'string', default: '2000' },
    bindings: { type: 'string', default: '50000' },
    only: { type: 'string', default: 'single,overlay' },
    refresh: { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false }
  }
})
const parts = new Set(args.part!.split(','))
const rates = args.rates!.split(',').map(Number)
const seconds = Number(args.seconds)
const INSTANCES = 3
const only = new Set(args.only!.split(','))
// --refresh: every step registers the same users again (refreshes: the steady state of a campus),
// registered once beforehand at `PRE_RATE` per SIPp instance; default: distinct users per step (new AORs)
const refresh = args.refresh === true
const PRE_RATE = 1000

interface Step { target: number, achieved: number, ok: boolean, failed: number, successful: number, p50: number, p99: number, cpuPct: number, cpuMsPerRegister: number, wallMs: number, drainMs?: number, replicated?: number, note?: string }

async function registerStep (label: string, targets: TestServer[], rate: number, run: number, tmp: string): Promise<{ step: Step, users: string[][] }> {
  const per = Math.ceil(rate / INSTANCES)
  const calls = per * seconds
  const users = Array.from({ length: INSTANCES }, (_, i) => userNames(refresh ? `${label}ri${i}u` : `${label}s${run}i${i}u`, calls))
  const pids = (await Promise.all(targets.map(s => processTree(s.pid)))).flat()
  const cpu0 = await cpuSeconds(pids)
  const t0 = Date.now()
  const results: SippResult[] = await Promise.all(users.map(async (list, i) => {
    const csv = join(tmp, `${label}-${run}-${i}.csv`)
    writeUsersCsv(csv, list)
    return await runSipp({
      scenario: scenario('register'), remote: targets[i % targets.length]!.udp!, transport: 'u1', calls, rate: per, limit: Math.max(500, per * 2),
      inf: csv, keys: { domain: DOMAIN, contact: '127.0.0.1:9', expires: '3600' }, recvTimeoutMs: 5000, timeoutMs: (seconds + 30) * 1000
    })
  }))
  const wall = (Date.now() - t0) / 1000
  const cpu = await cpuSeconds(pids) - cpu0
  const successful = results.reduce((s, r) => s + r.successful, 0)
  const failed = results.reduce((s, r) => s + r.failed, 0)
  const created = results.reduce((s, r) => s + r.created, 0)
  const achieved = results.reduce((s, r) => s + r.achievedRate, 0)
  const rtt = rttStats(results.flatMap(r => r.rttSamples[1] ?? []))
  const ok = failed === 0 && successful === created && created === calls * INSTANCES && achieved >= 0.8 * rate && !results.some(r => r.timedOut)
  const step: Step = { target: rate, achieved: Math.round(achieved), ok, failed, successful, p50: rtt.p50, p99: rtt.p99, cpuPct: Math.round(100 * cpu / wall), cpuMsPerRegister: +(1000 * cpu / Math.max(1, successful)).toFixed(3), wallMs: Math.round(wall * 1000) }
  if (!ok) step.note = failed > 0 ? `${failed} failed` : achieved < 0.8 * rate ? 'achieved < 80 %' : 'incomplete'
  return { step, users }
}

/** --refresh: register every user the steps will use (the most a step needs), unmeasured. */
async function preRegister (label: string, targets: TestServer[], tmp: string): Promise<void> {
  if (!refresh) return
  const calls = Math.ceil(Math.max(...rates) / INSTANCES) * seconds
  const t0 = Date.now()
  const results = await Promise.all(Array.from({ length: INSTANCES }, async (_, i) => {
    const csv = join(tmp, `${label}-pre-${i}.csv`)
    writeUsersCsv(csv, userNames(`${label}ri${i}u`, calls))
    return await runSipp({
      scenario: scenario('register'), remote: targets[i % targets.length]!.udp!, transport: 'u1', calls, rate: PRE_RATE, limit: 500,
      inf: csv, keys: { domain: DOMAIN, contact: '127.0.0.1:9', expires: '3600' }, recvTimeoutMs: 5000, timeoutMs: (calls / PRE_RATE + 60) * 1000
    })
  }))
  const ok = results.reduce((s, r) => s + r.successful, 0)
  console.log(`  ${label}: ${ok} users registered beforehand in ${Date.now() - t0} ms (--refresh: every step refreshes them)`)
  if (ok !== calls * INSTANCES) throw new Error(`--refresh: only ${ok} of ${calls * INSTANCES} users registered beforehand`)
  await sleep(2000)
}

function show (label: string, s: Step): void {
  console.log(`  ${label} ${String(s.target).padStart(5)}/s: achieved ${String(s.achieved).padStart(5)}/s ok=${s.successful} failed=${s.failed} p50=${s.p50}ms p99=${s.p99}ms cpu(all daemons)=${s.cpuPct}% (${s.cpuMsPerRegister} ms/REGISTER)` +
    `${s.drainMs !== undefined ? ` publishes drained ${s.drainMs} ms after the last 200 (${s.replicated}/s replicated)` : ''} ${s.ok ? 'PASS' : `FAIL (${s.note ?? ''})`} load=${loadavg()[0]!.toFixed(1)}`)
}

async function registerPart (): Promise<Record<string, unknown>> {
  const tmp = tempDir('bench-overlay')
  const out: Record<string, Step[]> = { single: [], overlay: [] }
  try {
    // single node
    if (only.has('single')) {
    const port = await freePort()
    const single = await startSipring({ listen: [{ proto: 'udp', host: '127.0.0.1', port }], logLevel: 'error' })
    try {
      await preRegister('one', [single], tmp.dir)
      let run = 0
      for (const rate of rates) {
        let r = await registerStep('one', [single], rate, ++run, tmp.dir)
        if (!r.step.ok) { show('single (retry)', r.step); await sleep(2000); r = await registerStep('one', [single], rate, ++run, tmp.dir) }
        show('single ', r.step)
        out.single!.push(r.step)
        if (!r.step.ok) break
        await sleep(1000)
      }
    } finally { await single.stop() }
    }
    if (!only.has('overlay')) return { single: out.single }

    // 3-node overlay, R = 3
    const prof = args.profile ? tempDir('bench-prof') : undefined
    const specs = await Promise.all(['a', 'b', 'c'].map(n => overlayNodeSpec(n, { extraArgs: ['--log-level', 'error'], nodeArgs: prof !== undefined && n === 'a' ? ['--cpu-prof', `--cpu-prof-dir=${prof.dir}`] : undefined })))
    const nodes: OverlayNode[] = [await startOverlayNode(specs[0]!)]
    nodes.push(...await Promise.all(specs.slice(1).map(s => startOverlayNode(s, [nodes[0]!.joinAddr]))))
    try {
      await waitUntil('a ring of 3', () => ringAgrees(nodes, nodes.map(n => n.id)), 20_000)
      await preRegister('ovl', nodes.map(n => n.server), tmp.dir)
      let run = 0
      for (const rate of rates) {
        const attempt = async (): Promise<Step> => {
          const { step, users } = await registerStep('ovl', nodes.map(n => n.server), rate, ++run, tmp.dir)
          const end = Date.now()
          try {
            await waitUntil('publishes drained', async () => {
              for (const n of nodes) {
                const r = await ring(n)
                if ((r.replication.pending ?? 0) > 0) return `${n.spec.name} pending ${r.replication.pending}`
              }
              return true
            }, 15_000, 100)
            step.drainMs = Date.now() - end
            // registrations in the overlay per second: from the first REGISTER until every publish is done
            step.replicated = Math.round(step.successful / ((step.wallMs + step.drainMs) / 1000))
          } catch (err) { step.ok = false; step.note = (err as Error).message }
          let abandoned = 0
          for (const n of nodes) abandoned += (await ring(n)).replication.abandoned ?? 0
          if (abandoned > 0) { step.ok = false; step.note = `${abandoned} publishes abandoned` }
          // spot check (when every REGISTER was answered 200): 10 users of each SIPp instance, looked up at the next node
          for (let i = 0; i < (step.failed === 0 ? INSTANCES : 0); i++) {
            for (let k = 0; k < 10; k++) {
              const u = users[i]![Math.floor((k * users[i]!.length) / 10)]!
              const l = await lookup(nodes[(i + 1) % nodes.length]!, u)
              if (!l.nodes.some(p => p.node === nodes[i]!.id && p.contacts.length > 0)) { step.ok = false; step.note = `${u} not found at ${nodes[(i + 1) % nodes.length]!.spec.name}` }
            }
          }
          return step
        }
        let s = await attempt()
        if (!s.ok) { show('overlay (retry)', s); await sleep(2000); s = await attempt() }
        show('overlay', s)
        out.overlay!.push(s)
        if (!s.ok) break
        await sleep(1000)
      }
      const st = await ring(nodes[0]!)
      const ss = st.store as unknown as Record<string, number>
      console.log(`  overlay node a: ${st.store.items} items, store.put messages ${ss.putMessages}, read messages ${ss.getMessages}, db batches ${ss.dbBatches}, replication ${JSON.stringify(st.replication)}`)
    } finally {
      await Promise.all(nodes.map(n => n.server.stop()))
      for (const s of specs) s.cleanup()
      if (prof !== undefined) {
        const f = readdirSync(prof.dir).find(x => x.endsWith('.cpuprofile'))
        if (f !== undefined) {
          if (process.env.BENCH_KEEP_PROFILE !== undefined) copyFileSync(join(prof.dir, f), process.env.BENCH_KEEP_PROFILE)
          const p = summarizeProfile(join(prof.dir, f), 25)
          console.log(`  overlay node a CPU profile (${p.totalMs.toFixed(0)} ms sampled): ${p.packages.map(([k, v]) => `${k} ${v.toFixed(1)}%`).join(', ')}`)
          for (const [k, v] of p.functions) console.log(`    ${v.toFixed(1).padStart(5)}%  ${k}`)
        } else console.log('  (no CPU profile written)')
        prof.cleanup()
      }
    }
  } finally { tmp.cleanup() }
  const knee = (steps: Step[]): number => Math.max(0, ...steps.filter(s => s.ok).map(s => s.achieved))
  const k1 = knee(out.single!); const k3 = knee(out.overlay!)
  const ratio = k1 > 0 ? k3 / k1 : NaN
  // sustained: the best replicated rate of a passing step (REGISTERs stored in the overlay per second)
  const sustained = Math.max(0, ...out.overlay!.filter(s => s.ok).map(s => s.replicated ?? 0))
  console.log(`REGISTER knee: single node ${k1}/s, 3-node overlay R=3 ${k3}/s, ratio ${ratio.toFixed(2)} (target >= 0.5)${out.single!.length > 0 && out.single!.every(s => s.ok) ? ' — the single node passed every step: raise --rates' : ''}`)
  console.log(`overlay sustained (answered and replicated, first REGISTER → last publish): ${sustained}/s, ratio to the single node ${(k1 > 0 ? sustained / k1 : NaN).toFixed(2)}`)
  return { single: out.single, overlay: out.overlay, kneeSingle: k1, kneeOverlay: k3, ratio, sustained }
}

function inproc (part: string, extra: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=sipring-source', '--expose-gc', join(ROOT, 'test', 'bench', 'overlay-inproc.ts'), part, ...extra], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 })
  const line = r.stdout.trim().split('\n').pop() ?? ''
  try { return JSON.parse(line) } catch { throw new Error(`overlay-inproc ${part} failed (${r.status}): ${r.stdout}${r.stderr}`) }
}

async function lookupPart (): Promise<Record<string, unknown>> {
  const inProc = inproc('lookup', [])
  console.log(`  in process, store.get A→B over libp2p TCP: ${JSON.stringify(inProc)}`)
  // two daemons: users registered at A, GET /lookup at B
  const specs = await Promise.all(['a', 'b'].map(n => overlayNodeSpec(n, { extraArgs: ['--log-level', 'error'] })))
  const a = await startOverlayNode(specs[0]!)
  const b = await startOverlayNode(specs[1]!, [a.joinAddr])
  const tmp = tempDir('bench-lookup')
  try {
    await waitUntil('a ring of 2', () => ringAgrees([a, b], [a.id, b.id]), 20_000)
    const users = userNames('lk', 200)
    const csv = join(tmp.dir, 'lk.csv')
    writeUsersCsv(csv, users)
    const reg = await runSipp({ scenario: scenario('register'), remote: a.udp, calls: users.length, rate: 200, inf: csv, keys: { domain: DOMAIN, contact: '127.0.0.1:9', expires: '3600' }, timeoutMs: 30000, rtt: false })
    if (reg.successful !== users.length) throw new Error(`registration failed: ${reg.successful}/${users.length}`)
    await waitUntil('users visible at B', async () => (await lookup(b, users[users.length - 1]!)).nodes.length === 1, 10_000)
    const n = Number(args.lookups)
    const lat: number[] = []
    for (let i = 0; i < n + 200; i++) {
      const t0 = process.hrtime.bigint()
      const l = await lookup(b, users[i % users.length]!)
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      if (l.nodes.length !== 1) throw new Error(`lookup of ${users[i % users.length]} at B found ${l.nodes.length} nodes`)
      if (i >= 200) lat.push(ms) // the first 200 warm up
    }
    const s = rttStats(lat)
    const daemons = { n: s.count, p50ms: +s.p50.toFixed(3), p90ms: +s.p90.toFixed(3), p99ms: +s.p99.toFixed(3), maxMs: +s.max.toFixed(3) }
    // the same HTTP round trip without the overlay read (GET /health at B): the HTTP share of it
    const h: number[] = []
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint()
      const r = await b.server.admin!('/health')
      if (r.status !== 200) throw new Error('health')
      h.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
    const hs = rttStats(h)
    const http = { p50ms: +hs.p50.toFixed(3), p99ms: +hs.p99.toFixed(3) }
    console.log(`  two daemons, GET /lookup at B for users attached at A: ${JSON.stringify(daemons)}; GET /health alone: ${JSON.stringify(http)}`)
    return { inProcess: inProc, daemons, httpOnly: http }
  } finally {
    await a.server.stop(); await b.server.stop()
    for (const s of specs) s.cleanup()
    tmp.cleanup()
  }
}

async function main (): Promise<void> {
  if (!haveTool('sipp') && (parts.has('register') || parts.has('lookup'))) { console.error('bench: sipp not installed (run scripts/install-tools.sh)'); process.exit(2) }
  console.log(`overlay bench: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, node ${process.version}, load average ${loadavg().map(x => x.toFixed(1)).join(' ')}, sipring from ${process.env.SIPRING_CLI === 'dist' ? 'dist' : 'source'}`)
  const result: Record<string, unknown> = { date: new Date().toISOString(), loadavg: loadavg() }
  if (parts.has('lookup')) { console.log('lookup latency'); result.lookup = await lookupPart() }
  if (parts.has('ram')) {
    console.log('RAM per stored binding')
    const r = inproc('ram', ['--n', String(args.bindings)])
    console.log(`  ${JSON.stringify(r)}`)
    result.ram = r
  }
  if (parts.has('register')) { console.log(`REGISTER/s, ${seconds} s steps, ${INSTANCES} SIPp instances`); result.register = await registerPart() }
  console.log(JSON.stringify(result))
}

main().then(() => process.exit(0), async err => { console.error(err); await stopAll(); process.exit(1) })
