// Group-call forking benchmark: distributed vs centralized, side by side.
//
//   node --import tsx --conditions=sipring-source test/bench/fork.ts [--members 10,50,200] [--nodes 4]
//        [--calls 20] [--rate 2] [--limit 1] [--hold-ms 200] [--modes centralized,distributed] [--uas sipp|node] [--out FILE]
//
// --uas node: the members are one in-process MemberFarm (test/lib/member-farm.ts: a UDP socket per
// member, same behaviour as the SIPp member scenarios) instead of one SIPp per member — an idle SIPp
// costs ~0.6 % of a core here, ~1.3 cores for 200 of them on a 2-core machine.
// Starts `--nodes` real `sipring start --overlay` daemons on loopback (3–8; each with
// --group-max-branches 256). Two of them are the forking nodes S: n1 runs `--group-forking
// centralized`, n2 `--group-forking distributed`; both hold the same groups (admin API), so the two
// modes run against the same cluster and the same registrations. For each group size, that many
// members (SIPp UAS processes, one per member: forked legs share one Call-ID) register round-robin at
// every node; one member (registered away from both S) answers after ringing 300 ms, the others ring
// until cancelled. A SIPp UAC (test/sipp/uac-group.xml) places `--calls` calls at `--rate`/s, at most
// `--limit` at once (default 1: one group call at a time, so the figures are per call, not queueing), to
// the group at S. Per mode it records, at S: SIP messages received/sent (GET /status `sip` counters) and
// proxy branches/CANCELs per call, CPU-ms per call (utime+stime of S's process from /proc), the same
// CPU summed over every node; at the caller: time to the first 180 and to the 200 (SIPp -trace_rtt).
// Prints a table with the centralized/distributed ratios and writes test/bench/results/fork-<date>.json.
// Not part of `npm test`.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cpuSeconds, haveTool, sleep, stopAll, tempDir } from '../lib/proc.js'
import { DOMAIN } from '../lib/servers.js'
import { describe, runSipp, type SippResult } from '../lib/sipp.js'
import { lookupAll, overlayNodeSpec, ringAgrees, startOverlayNode, waitUntil, type OverlayNode, type OverlayNodeSpec } from '../lib/overlay.js'
import { aor, disposeMembers, groupScenario, makeMembers, putGroupApi, registerMembers, sippPortArgs, startMembers, stopMembers, type Member, type MemberRole } from '../lib/group.js'
import { MemberFarm } from '../lib/member-farm.js'
import { summarizeProfile } from '../lib/cpuprofile.js'

type Mode = 'centralized' | 'distributed'

function parseArgs (argv: string[]): { members: number[], nodes: number, calls: number, rate: number, holdMs: number, modes: Mode[], uas: 'sipp' | 'node', limit: number, out?: string } {
  const o = { members: [10, 50, 200], nodes: 4, calls: 20, rate: 2, limit: 1, holdMs: 200, modes: ['centralized', 'distributed'] as Mode[], uas: 'sipp' as 'sipp' | 'node', out: undefined as string | undefined }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const v = (): string => { const x = argv[++i]; if (x === undefined) throw new Error(`${a} needs a value`); return x }
    const int = (s: string, min: number, max: number): number => {
      const n = Number(s)
      if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${a}: expected an integer ${min}–${max}, got ${JSON.stringify(s)}`)
      return n
    }
    switch (a) {
      case '--members': o.members = v().split(',').map(s => int(s.trim(), 1, 256)); break
      case '--nodes': o.nodes = int(v(), 3, 8); break
      case '--calls': o.calls = int(v(), 1, 10_000); break
      case '--rate': o.rate = int(v(), 1, 1000); break
      case '--limit': o.limit = int(v(), 1, 1000); break
      case '--hold-ms': o.holdMs = int(v(), 0, 60_000); break
      case '--modes': {
        const m = v().split(',').map(s => s.trim())
        for (const x of m) if (x !== 'centralized' && x !== 'distributed') throw new Error(`--modes: expected centralized and/or distributed, got ${JSON.stringify(x)}`)
        o.modes = m as Mode[]
        break
      }
      case '--uas': {
        const u = v()
        if (u !== 'sipp' && u !== 'node') throw new Error(`--uas: expected sipp or node, got ${JSON.stringify(u)}`)
        o.uas = u
        break
      }
      case '--out': o.out = v(); break
      case '-h': case '--help':
        console.log('usage: node --import tsx --conditions=sipring-source test/bench/fork.ts [--members 10,50,200] [--nodes 3..8] [--calls 20] [--rate 2] [--limit 1] [--hold-ms 200] [--modes centralized,distributed] [--uas sipp|node] [--out FILE]')
        process.exit(0)
      // eslint-disable-next-line no-fallthrough
      default: throw new Error(`unknown option ${a} (see --help)`)
    }
  }
  return o
}

interface StatusCounters { received: number, sent: number, branches: number, cancelsSent: number, responsesForwarded: number, forkRequests: number }

async function counters (n: OverlayNode): Promise<StatusCounters> {
  const r = await n.server.admin!('/status')
  if (r.status !== 200) throw new Error(`GET /status at ${n.spec.name}: HTTP ${r.status}`)
  const b = r.body as { sip: { received: number, sent: number }, proxy: { branches: number, cancelsSent: number, responsesForwarded: number, forkRequests?: number } }
  return { received: b.sip.received, sent: b.sip.sent, branches: b.proxy.branches, cancelsSent: b.proxy.cancelsSent, responsesForwarded: b.proxy.responsesForwarded, forkRequests: b.proxy.forkRequests ?? 0 }
}

interface ModeResult {
  mode: Mode
  members: number
  nodes: number
  calls: number
  successful: number
  failed: number
  /** At S, per call. */
  msgsReceived: number
  msgsSent: number
  msgsTotal: number
  branches: number
  cancels: number
  /** Responses S forwarded to the caller (the members' 180s, the 200). */
  forwarded: number
  /** Fork requests S sent to owner nodes (distributed). */
  forkRequests: number
  cpuMsS: number
  /** S's CPU per call minus its idle CPU rate over the same time (SWIM, anti-entropy, timers). */
  cpuMsSNet: number
  /** S's idle CPU, ms per second. */
  idleCpuS: number
  /** Every daemon's CPU, per call. */
  cpuMsAll: number
  first180: { p50: number, p90: number, mean: number, count: number }
  to200: { p50: number, p90: number, mean: number, count: number }
  legs: { rang: number, cancelled: number, failed: number, answered: number }
  uac: string
  /** Members as SIPp processes or as the in-process MemberFarm. */
  uas: 'sipp' | 'node'
  wallMs: number
}

const round = (x: number, d = 1): number => Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : NaN

async function main (): Promise<void> {
  const opts = parseArgs(process.argv.slice(2))
  if (!haveTool('sipp')) throw new Error('sipp is not installed')
  const tmp = tempDir('bench-fork')
  const specs: Array<OverlayNodeSpec & { cleanup: () => void }> = []
  const nodes: OverlayNode[] = []
  let members: Member[] = []
  const results: ModeResult[] = []
  const startedAt = new Date()
  const loadAtStart = loadavg()
  try {
    // FORK_PROFILE=1: CPU profile of S in distributed mode (n2), summarized at the end
    const prof = process.env.FORK_PROFILE === '1' ? tempDir('fork-prof') : undefined
    for (let i = 0; i < opts.nodes; i++) {
      specs.push(await overlayNodeSpec(`n${i + 1}`, {
        extraArgs: ['--group-max-branches', '256', '--log-level', 'error'],
        ...(prof !== undefined && i === 1 ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${prof.dir}`] } : {})
      }))
    }
    profDir = prof
    specs[0]!.extraArgs.push('--group-forking', 'centralized')
    specs[1]!.extraArgs.push('--group-forking', 'distributed')
    nodes.push(await startOverlayNode(specs[0]!))
    nodes.push(...await Promise.all(specs.slice(1).map(s => startOverlayNode(s, [nodes[0]!.joinAddr]))))
    await waitUntil(`${opts.nodes} alive members in every /ring`, () => ringAgrees(nodes, nodes.map(n => n.id)), 120_000, 500)
    const S: Record<Mode, OverlayNode> = { centralized: nodes[0]!, distributed: nodes[1]! }
    console.error(`ring of ${opts.nodes} up; S(centralized) = n1 pid ${nodes[0]!.server.pid}, S(distributed) = n2 pid ${nodes[1]!.server.pid}`)

    for (const size of opts.members) {
      members = await makeMembers(`g${size}m`, size, nodes)
      const regs = await registerMembers(members, tmp.dir, 3600)
      for (const { node, result } of regs) if (result.failed > 0) throw new Error(`registration at ${node.spec.name} failed: ${describe(result)}`)
      await waitUntil(`${size} members visible from both S`, async () => {
        const f = await lookupAll([S.centralized, S.distributed], members.map(m => m.user), u => members.find(m => m.user === u)!.node.id)
        return f.length === 0 || `${f.length} missing`
      }, 30_000, 500)
      const group = `group${size}`
      for (const s of [S.centralized, S.distributed]) await putGroupApi(s, aor(group), members.map(m => aor(m.user)))
      // the answerer: registered at neither S (nodes 3.. exist since --nodes >= 3)
      const answerer = members.find(m => m.node !== S.centralized && m.node !== S.distributed)!

      for (const mode of opts.modes) {
        const s = S[mode]
        const role = (m: Member): MemberRole => m === answerer ? 'answer' : 'ring'
        const farm = opts.uas === 'node' ? new MemberFarm() : undefined
        if (farm !== undefined) await farm.start(members.map(m => ({ user: m.user, port: m.port, role: role(m) })))
        else await startMembers(members, role, 30 * 60_000)
        await sleep(500)
        // S's idle CPU (SWIM, anti-entropy, timers) over a quiet window, subtracted for the net figure
        const idle0 = await cpuSeconds([s.server.pid]); const ti0 = Date.now()
        await sleep(IDLE_WINDOW_MS)
        const idleRate = (await cpuSeconds([s.server.pid]) - idle0) / ((Date.now() - ti0) / 1000)
        const before = await counters(s)
        const pids = nodes.map(n => n.server.pid)
        const tc0 = Date.now()
        const cpuS0 = await cpuSeconds([s.server.pid])
        const cpuAll0 = await cpuSeconds(pids)
        const t0 = Date.now()
        const uac = await runSipp({
          scenario: groupScenario('uac-group'), remote: s.udp, transport: 'u1', service: group, calls: opts.calls, rate: opts.rate, limit: opts.limit,
          keys: { domain: DOMAIN }, durationMs: opts.holdMs, recvTimeoutMs: 10_000, timeoutMs: 120_000 + opts.calls * 2000, extraArgs: ['-rtt_freq', '1', ...await sippPortArgs()]
        })
        const wallMs = Date.now() - t0
        if (uac.created === 0 || uac.failed > 0) console.error(`UAC problem (${describe(uac)}):\n${uac.output.slice(-1500)}\n${uac.errors.slice(0, 1500)}`)
        await sleep(1500) // let CANCEL/487/ACK and BYE exchanges finish before reading the counters
        const cpuS1 = await cpuSeconds([s.server.pid])
        const measuredS = (Date.now() - tc0) / 1000
        const cpuAll1 = await cpuSeconds(pids)
        const after = await counters(s)
        const legs: Map<string, { created: number, successful: number, failed: number }> = farm !== undefined ? await farm.stop() : await stopMembers(members)
        let rang = 0; let cancelled = 0; let failed = 0
        for (const m of members) {
          if (m === answerer) continue
          const r = legs.get(m.user)!
          rang += r.created; cancelled += r.successful; failed += r.failed
        }
        const a = legs.get(answerer.user)!
        const c = opts.calls
        const res: ModeResult = {
          mode,
          members: size,
          nodes: opts.nodes,
          calls: c,
          successful: uac.successful,
          failed: uac.failed,
          msgsReceived: round((after.received - before.received) / c),
          msgsSent: round((after.sent - before.sent) / c),
          msgsTotal: round((after.received - before.received + after.sent - before.sent) / c),
          branches: round((after.branches - before.branches) / c),
          cancels: round((after.cancelsSent - before.cancelsSent) / c),
          forwarded: round((after.responsesForwarded - before.responsesForwarded) / c),
          forkRequests: round((after.forkRequests - before.forkRequests) / c),
          cpuMsS: round((cpuS1 - cpuS0) * 1000 / c),
          cpuMsSNet: round(Math.max(0, cpuS1 - cpuS0 - idleRate * measuredS) * 1000 / c),
          idleCpuS: round(idleRate * 1000),
          cpuMsAll: round((cpuAll1 - cpuAll0) * 1000 / c),
          first180: pick(uac, 2),
          to200: pick(uac, 1),
          legs: { rang, cancelled, failed, answered: a.successful },
          uac: describe(uac),
          uas: opts.uas,
          wallMs
        }
        results.push(res)
        console.error(`${size} members, ${mode}: ${res.uac}; S msgs/call ${res.msgsTotal}, S CPU ${res.cpuMsS} ms/call; legs rang ${rang}, cancelled ${cancelled}, failed ${failed}; answered ${a.successful}`)
        await disposeMembers(members)
      }
      await disposeMembers(members)
    }
  } finally {
    await disposeMembers(members)
    await Promise.all(nodes.map(async n => { await n.server.stop() }))
    await stopAll()
    if (profDir !== undefined) {
      const f = readdirSync(profDir.dir).find(x => x.endsWith('.cpuprofile'))
      if (f !== undefined) {
        const p = summarizeProfile(join(profDir.dir, f), 30)
        console.log(`S (distributed, n2) CPU profile (${p.totalMs.toFixed(0)} ms sampled): ${p.packages.map(([k, v]) => `${k} ${v.toFixed(1)}%`).join(', ')}`)
        for (const [k, v] of p.functions) console.log(`  ${v.toFixed(1).padStart(5)}%  ${k}`)
      }
      profDir.cleanup()
    }
    for (const s of specs) s.cleanup()
    tmp.cleanup()
  }
  print(results)
  const here = dirname(fileURLToPath(import.meta.url))
  const out = opts.out ?? join(here, 'results', `fork-${startedAt.toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`)
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, JSON.stringify({
    bench: 'fork', startedAt: startedAt.toISOString(), options: opts,
    env: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, loadavgAtStart: loadAtStart, loadavgAtEnd: loadavg() },
    results, ratios: ratios(results)
  }, null, 2) + '\n')
  console.log(`\nresults: ${out}`)
}

function pick (r: SippResult, rtd: number): { p50: number, p90: number, mean: number, count: number } {
  const s = r.rtt[rtd]
  return s === undefined ? { p50: NaN, p90: NaN, mean: NaN, count: 0 } : { p50: s.p50, p90: s.p90, mean: round(s.mean), count: s.count }
}

let profDir: { dir: string, cleanup: () => void } | undefined

/** Quiet window before each run over which S's idle CPU is measured. */
const IDLE_WINDOW_MS = 5000

function ratios (results: ModeResult[]): Array<Record<string, number>> {
  const out: Array<Record<string, number>> = []
  for (const size of [...new Set(results.map(r => r.members))]) {
    const c = results.find(r => r.members === size && r.mode === 'centralized')
    const d = results.find(r => r.members === size && r.mode === 'distributed')
    if (c === undefined || d === undefined) continue
    out.push({
      members: size,
      msgsAtS: round(c.msgsTotal / d.msgsTotal, 2),
      cpuAtS: round(c.cpuMsS / d.cpuMsS, 2),
      cpuAtSNet: round(c.cpuMsSNet / Math.max(0.01, d.cpuMsSNet), 2),
      cpuAllNodes: round(c.cpuMsAll / d.cpuMsAll, 2),
      first180P50: round(c.first180.p50 / d.first180.p50, 2),
      to200P50: round(c.to200.p50 / d.to200.p50, 2)
    })
  }
  return out
}

function print (results: ModeResult[]): void {
  const head = ['members', 'mode', 'calls ok/failed', 'S msgs in/out per call', 'S branches', 'S forks', 'S fwd resp', 'S CPU ms/call (net of idle)', 'S idle CPU ms/s', 'all nodes CPU ms/call', 'first 180 p50/p90 ms', '200 p50/p90 ms', 'legs rang/cancelled/failed']
  const rows = results.map(r => [String(r.members), r.mode, `${r.successful}/${r.failed}`, `${r.msgsReceived}/${r.msgsSent}`, String(r.branches), String(r.forkRequests), String(r.forwarded), `${r.cpuMsS} (${r.cpuMsSNet})`, String(r.idleCpuS), String(r.cpuMsAll),
    `${r.first180.p50}/${r.first180.p90}`, `${r.to200.p50}/${r.to200.p90}`, `${r.legs.rang}/${r.legs.cancelled}/${r.legs.failed}`])
  const w = head.map((h, i) => Math.max(h.length, ...rows.map(r => r[i]!.length)))
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(w[i]!)).join(' | ') + ' |'
  console.log(line(head))
  console.log('|' + w.map(n => '-'.repeat(n + 2)).join('|') + '|')
  for (const r of rows) console.log(line(r))
  const rs = ratios(results)
  if (rs.length > 0) {
    console.log('\ncentralized / distributed (> 1: distributed is lighter / faster)')
    console.log('| members | S msgs | S CPU | S CPU net of idle | all-nodes CPU | first 180 p50 | 200 p50 |')
    console.log('|---|---|---|---|---|---|---|')
    for (const r of rs) console.log(`| ${r.members} | ${r.msgsAtS} | ${r.cpuAtS} | ${r.cpuAtSNet} | ${r.cpuAllNodes} | ${r.first180P50} | ${r.to200P50} |`)
  }
  console.log('(SIPp timestamps have ~4 ms granularity here; "200" includes the answering member\'s 300 ms of ringing)')
}

main().catch(err => {
  console.error(err instanceof Error ? err.stack ?? err.message : err)
  void stopAll().finally(() => process.exit(1))
})
