// Runs SIPp with one of the scenarios in test/sipp/ and parses what it reports: the last row of
// its -trace_stat CSV (cumulative counters), the -trace_rtt response times, the exit code and the
// -trace_err log. Every run has a hard timeout and is killed on it.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from './ports.js'
import { runProcess, startProcess, tempDir, type ManagedProcess } from './proc.js'

export const SIPP_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'sipp')
export const scenario = (name: 'register' | 'uac' | 'uas'): string => join(SIPP_DIR, `${name}.xml`)

export type SippTransport = 'u1' | 'un' | 't1' | 'tn'

export interface SippOptions {
  scenario: string
  /** The server, host:port (IPv6 as [::1]:port). */
  remote?: string
  transport?: SippTransport
  /** Local IP for Via/Contact (default 127.0.0.1) and local port (default: SIPp picks). */
  localIp?: string
  localPort?: number
  /** Calls to run (-m); omitted for a UAS that runs until stopped. */
  calls?: number
  rate?: number
  /** Max simultaneous calls (-l). */
  limit?: number
  /** -inf file. */
  inf?: string
  /** -key k v pairs. */
  keys?: Record<string, string>
  /** -s service (callee user). */
  service?: string
  /** -d pause, ms. */
  durationMs?: number
  /** Hard timeout for the whole run (ms); SIPp is killed when it elapses. */
  timeoutMs: number
  /** Per-message receive timeout (-recv_timeout, ms), so a lost answer fails the call fast. */
  recvTimeoutMs?: number
  extraArgs?: string[]
  /** Collect -trace_rtt (default true). */
  rtt?: boolean
}

export interface RttStats { count: number, p50: number, p90: number, p99: number, max: number, mean: number }

export interface SippResult {
  exitCode: number | string
  timedOut: boolean
  created: number
  successful: number
  failed: number
  retransmissions: number
  outOfCallMsgs: number
  deadCallMsgs: number
  /** Counters from the last -trace_stat row, by column name. */
  stat: Record<string, string>
  /** Response times in ms per rtd number (1 = first measured request). */
  rtt: Record<number, RttStats>
  /** Raw response-time samples (ms) per rtd number, for merging several instances. */
  rttSamples: Record<number, number[]>
  /** Calls per second achieved, measured from the first to the last rtt sample (0 when unknown). */
  achievedRate: number
  wallMs: number
  errors: string
  output: string
  /** SIPp's working directory (its CSV and log files); removed after parsing unless SIPP_KEEP=1. */
  dir: string
}

export function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]!
}

export function rttStats (values: number[]): RttStats {
  const s = [...values].sort((a, b) => a - b)
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN
  return { count: s.length, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s.length ? s[s.length - 1]! : NaN, mean }
}

/** Parses the `;`-separated -trace_stat CSV; returns the last data row keyed by header. */
export function parseStatCsv (text: string): Record<string, string> {
  const lines = text.split(/\r?\n/).filter(l => l.trim() !== '')
  if (lines.length < 2) return {}
  const header = lines[0]!.split(';')
  const last = lines[lines.length - 1]!.split(';')
  const out: Record<string, string> = {}
  header.forEach((h, i) => { if (h) out[h] = last[i] ?? '' })
  return out
}

/** Parses -trace_rtt files: `Date_ms;response_time_ms;rtd_no`. */
export function parseRttCsv (text: string): { byRtd: Record<number, number[]>, firstMs: number, lastMs: number } {
  const byRtd: Record<number, number[]> = {}
  let firstMs = Infinity
  let lastMs = -Infinity
  for (const line of text.split(/\r?\n/)) {
    const [d, rt, no] = line.split(';')
    const date = Number(d); const ms = Number(rt); const n = Number(no)
    if (!Number.isFinite(date) || !Number.isFinite(ms) || !Number.isInteger(n) || d === '' || rt === '') continue
    ;(byRtd[n] ??= []).push(ms)
    if (date < firstMs) firstMs = date
    if (date > lastMs) lastMs = date
  }
  return { byRtd, firstMs, lastMs }
}

/** Writes a SIPp injection file: SEQUENTIAL, then one user per line. */
export function writeUsersCsv (path: string, users: string[]): void {
  writeFileSync(path, ['SEQUENTIAL', ...users].join('\n') + '\n')
}

export const userNames = (prefix: string, n: number, from = 1): string[] =>
  Array.from({ length: n }, (_, i) => `${prefix}${String(from + i).padStart(6, '0')}`)

function buildArgs (o: SippOptions, dir: string): string[] {
  const a: string[] = []
  if (o.remote) a.push(o.remote)
  a.push('-sf', o.scenario, '-t', o.transport ?? 'u1', '-i', o.localIp ?? '127.0.0.1', '-nostdin')
  if (o.localPort !== undefined) a.push('-p', String(o.localPort))
  if (o.calls !== undefined) a.push('-m', String(o.calls))
  if (o.rate !== undefined) a.push('-r', String(o.rate))
  if (o.limit !== undefined) a.push('-l', String(o.limit))
  if (o.inf) a.push('-inf', o.inf)
  if (o.service) a.push('-s', o.service)
  a.push('-d', String(o.durationMs ?? 0))
  if (o.recvTimeoutMs) a.push('-recv_timeout', String(o.recvTimeoutMs))
  for (const [k, v] of Object.entries(o.keys ?? {})) a.push('-key', k, v)
  a.push('-trace_stat', '-stf', join(dir, 'stat.csv'), '-fd', '1', '-trace_err', '-error_file', join(dir, 'errors.log'))
  if (o.rtt !== false) a.push('-trace_rtt', '-rtt_freq', '100')
  a.push('-max_socket', '2000', '-buff_size', '4194304')
  if (o.extraArgs) a.push(...o.extraArgs)
  return a
}

function collect (dir: string, code: number | string, timedOut: boolean, output: string, wallMs: number): SippResult {
  const statPath = join(dir, 'stat.csv')
  const stat = existsSync(statPath) ? parseStatCsv(readFileSync(statPath, 'utf8')) : {}
  const rttFiles = readdirSync(dir).filter(f => f.endsWith('_rtt.csv'))
  const byRtd: Record<number, number[]> = {}
  let firstMs = Infinity; let lastMs = -Infinity
  for (const f of rttFiles) {
    const r = parseRttCsv(readFileSync(join(dir, f), 'utf8'))
    for (const [k, v] of Object.entries(r.byRtd)) (byRtd[Number(k)] ??= []).push(...v)
    firstMs = Math.min(firstMs, r.firstMs); lastMs = Math.max(lastMs, r.lastMs)
  }
  const rtt: Record<number, RttStats> = {}
  for (const [k, v] of Object.entries(byRtd)) rtt[Number(k)] = rttStats(v)
  const num = (k: string): number => Number(stat[k] ?? 0) || 0
  const successful = num('SuccessfulCall(C)')
  const span = (lastMs - firstMs) / 1000
  const errPath = join(dir, 'errors.log')
  return {
    exitCode: code,
    timedOut,
    created: num('TotalCallCreated'),
    successful,
    failed: num('FailedCall(C)'),
    retransmissions: num('Retransmissions(C)'),
    outOfCallMsgs: num('OutOfCallMsgs(C)'),
    deadCallMsgs: num('DeadCallMsgs(C)'),
    stat,
    rtt,
    rttSamples: byRtd,
    achievedRate: span > 0 && rtt[1] ? (rtt[1].count - 1) / span : 0,
    wallMs,
    errors: existsSync(errPath) ? readFileSync(errPath, 'utf8').slice(0, 20000) : '',
    output,
    dir
  }
}

/** Runs SIPp to completion (bounded by `timeoutMs`) in its own temp dir and parses its reports. */
export async function runSipp (o: SippOptions): Promise<SippResult> {
  const { dir, cleanup } = tempDir('sipp')
  const started = Date.now()
  // never let SIPp default to 5060 (it may be taken, and every run would share it)
  const localPort = o.localPort ?? await freePort([o.localIp ?? '127.0.0.1'])
  const r = await runProcess('sipp', 'sipp', buildArgs({ ...o, localPort }, dir), o.timeoutMs, { cwd: dir, maxOutput: 64 * 1024 })
  const result = collect(dir, r.code, r.timedOut, r.output, Date.now() - started)
  if (!process.env.SIPP_KEEP) cleanup()
  return result
}

export interface SippServer {
  proc: ManagedProcess
  dir: string
  /** Stops SIPp (SIGUSR1 asks for a clean stop; then SIGTERM) and parses its reports. */
  stop (): Promise<SippResult>
  /** Kills SIPp if still running and removes its directory (for teardowns). */
  dispose (): Promise<void>
}

/** Starts a long-running SIPp (a UAS) and waits until its socket is bound. */
export async function startSippServer (o: Omit<SippOptions, 'timeoutMs'> & { maxLifeMs: number }): Promise<SippServer> {
  const { dir, cleanup } = tempDir('sipp-uas')
  const started = Date.now()
  const proc = await startProcess('sipp-uas', 'sipp', [...buildArgs({ ...o, timeoutMs: o.maxLifeMs }, dir), '-timeout', `${Math.ceil(o.maxLifeMs / 1000)}s`], {
    cwd: dir,
    maxOutput: 64 * 1024,
    ready: () => existsSync(join(dir, 'stat.csv')),
    readyTimeoutMs: 5000
  })
  return {
    proc,
    dir,
    async stop () {
      if (proc.running()) {
        try { process.kill(proc.pid, 'SIGUSR1') } catch { /* exited */ }
        const t = setTimeout(() => { void proc.stop(1000) }, 3000)
        await proc.exited
        clearTimeout(t)
      }
      const result = collect(dir, await proc.exited, false, proc.output(), Date.now() - started)
      if (!process.env.SIPP_KEEP) cleanup()
      return result
    },
    async dispose () {
      await proc.stop(1000)
      if (!process.env.SIPP_KEEP) cleanup()
    }
  }
}

/** One-line human summary of a SIPp result, for assertion messages. */
export function describe (r: SippResult): string {
  const rt = r.rtt[1]
  return `exit=${r.exitCode}${r.timedOut ? ' TIMEOUT' : ''} created=${r.created} ok=${r.successful} failed=${r.failed} ` +
    `retrans=${r.retransmissions} outOfCall=${r.outOfCallMsgs} rate=${r.achievedRate.toFixed(0)}/s` +
    (rt ? ` rtt1 p50=${rt.p50} p99=${rt.p99} max=${rt.max} ms` : '')
}
