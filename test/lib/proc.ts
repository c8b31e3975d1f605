// Child-process management for interop tests and benchmarks: every process started here is
// tracked and killed when the Node process exits (normally, on an uncaught error, or on a signal),
// so a failing test never leaves a SIP server or SIPp behind. Durations are always bounded.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface ManagedProcess {
  readonly name: string
  readonly pid: number
  readonly child: ChildProcess
  /** stdout + stderr collected so far (bounded to the last `maxOutput` characters). */
  output (): string
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  readonly exited: Promise<number | string>
  /** True while the process has not exited. */
  running (): boolean
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop (graceMs?: number): Promise<number | string>
  /** Waits until `re` matches the collected output (or rejects after `timeoutMs` / early exit). */
  waitFor (re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>
}

export interface StartOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Resolves true once the process is ready; polled every 50 ms. */
  ready?: () => Promise<boolean> | boolean
  readyTimeoutMs?: number
  /** Kill the whole process group (the child is started detached). Default true. */
  group?: boolean
  maxOutput?: number
  /** Write each output chunk here as well (e.g. process.stderr when debugging). */
  echo?: NodeJS.WritableStream
  stdin?: 'pipe' | 'ignore'
  /**
   * Ask the kernel to SIGTERM the child when this Node process dies, even by SIGKILL (a tap
   * timeout), via util-linux `setpriv --pdeathsig` when installed. Default true.
   */
  parentDeathSignal?: boolean
}

const live = new Set<ManagedProcess>()

function killGroup (p: ManagedProcess, signal: NodeJS.Signals): void {
  try { process.kill(-p.pid, signal) } catch { try { p.child.kill(signal) } catch { /* gone */ } }
}

let hooked = false
function hookExit (): void {
  if (hooked) return
  hooked = true
  const killAll = (): void => { for (const p of live) killGroup(p, 'SIGKILL') }
  process.on('exit', killAll)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => { killAll(); process.exit(130) })
  }
}

let setprivAvailable: boolean | undefined
function hasSetpriv (): boolean {
  setprivAvailable ??= spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0
  return setprivAvailable
}

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

export class StartError extends Error {
  constructor (message: string, readonly output: string) { super(`${message}\n--- output ---\n${output.slice(-4000)}`) }
}

/** Starts `cmd args` and, when `ready` is given, waits until it answers true. */
export async function startProcess (name: string, cmd: string, args: string[], opts: StartOptions = {}): Promise<ManagedProcess> {
  hookExit()
  const group = opts.group ?? true
  const maxOutput = opts.maxOutput ?? 256 * 1024
  const [file, argv] = (opts.parentDeathSignal ?? true) && hasSetpriv()
    ? ['setpriv', ['--pdeathsig', 'TERM', '--', cmd, ...args]]
    : [cmd, args]
  const child = spawn(file, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    detached: group,
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe']
  })
  let out = ''
  let exitValue: number | string | undefined
  const waiters = new Set<() => void>()
  const onData = (chunk: Buffer): void => {
    out += chunk.toString('utf8')
    if (out.length > maxOutput) out = out.slice(out.length - maxOutput)
    opts.echo?.write(chunk)
    for (const w of waiters) w()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = new Promise<number | string>(resolve => {
    child.on('error', err => { out += `\n[spawn error] ${err.message}\n`; exitValue = -1; resolve(-1) })
    child.on('exit', (code, signal) => { exitValue = code ?? signal ?? -1; resolve(exitValue) })
  })
  const p: ManagedProcess = {
    name,
    pid: child.pid ?? -1,
    child,
    output: () => out,
    exited,
    running: () => exitValue === undefined,
    async stop (graceMs = 3000) {
      if (exitValue !== undefined) { live.delete(p); return exitValue }
      killGroup(p, 'SIGTERM')
      const t = setTimeout(() => killGroup(p, 'SIGKILL'), graceMs)
      const v = await exited
      clearTimeout(t)
      if (group) killGroup(p, 'SIGKILL') // leftovers of the group (kamailio children)
      live.delete(p)
      return v
    },
    waitFor (re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const m = re.exec(out)
          if (m) { done(); resolve(m); return }
          if (exitValue !== undefined) { done(); reject(new StartError(`${name} exited (${exitValue}) before ${re}`, out)) }
        }
        const timer = setTimeout(() => { done(); reject(new StartError(`${name}: ${re} not seen within ${timeoutMs} ms`, out)) }, timeoutMs)
        const done = (): void => { clearTimeout(timer); waiters.delete(check) }
        waiters.add(check)
        void exited.then(check)
        check()
      })
    }
  }
  if (child.pid === undefined) {
    await exited
    throw new StartError(`${name}: could not start ${cmd}`, out)
  }
  live.add(p)
  void exited.then(() => live.delete(p))
  if (opts.ready) {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 15000)
    for (;;) {
      if (exitValue !== undefined) throw new StartError(`${name} exited (${exitValue}) during start`, out)
      let ok = false
      try { ok = await opts.ready() } catch { ok = false }
      if (ok) break
      if (Date.now() > deadline) { await p.stop(500); throw new StartError(`${name} not ready within ${opts.readyTimeoutMs ?? 15000} ms`, out) }
      await sleep(50)
    }
  }
  return p
}

/** Runs a command to completion with a hard timeout; the process group is killed on timeout. */
export async function runProcess (name: string, cmd: string, args: string[], timeoutMs: number, opts: StartOptions = {}): Promise<{ code: number | string, output: string, timedOut: boolean }> {
  const p = await startProcess(name, cmd, args, opts)
  let timedOut = false
  const t = setTimeout(() => { timedOut = true; void p.stop(1000) }, timeoutMs)
  const code = await p.exited
  clearTimeout(t)
  live.delete(p)
  return { code, output: p.output(), timedOut }
}

/** Stops every process started by this module that is still running. */
export async function stopAll (): Promise<void> {
  await Promise.all([...live].map(p => p.stop(2000)))
}

/** True when `tool` is on the PATH (or is an absolute executable path). */
export function haveTool (tool: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${JSON.stringify(tool)}`], { encoding: 'utf8' })
  return r.status === 0 && r.stdout.trim() !== ''
}

/** A fresh temp directory, removed by the returned cleanup function. */
export function tempDir (prefix: string): { dir: string, cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `sipring-${prefix}-`))
  return { dir, cleanup: () => { try { rmSync(dir, { recursive: true, force: true }) } catch { /* ignore */ } } }
}

/** utime + stime of a process and all its live descendants' own counters, in clock ticks → seconds. */
export async function cpuSeconds (pids: number[]): Promise<number> {
  let ticks = 0
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // fields after ")" start at field 3 (state): utime is field 14, stime field 15
      ticks += Number(rest[14 - 3]) + Number(rest[15 - 3])
    } catch { /* exited */ }
  }
  return ticks / 100 // CLK_TCK is 100 on Linux
}

/** The pid and all descendants (from /proc/<pid>/task/<tid>/children). */
export async function processTree (pid: number): Promise<number[]> {
  const { readdirSync } = await import('node:fs')
  const out: number[] = []
  const stack = [pid]
  while (stack.length > 0) {
    const p = stack.pop()!
    out.push(p)
    try {
      for (const tid of readdirSync(`/proc/${p}/task`)) {
        const kids = readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8').trim()
        if (kids) for (const k of kids.split(/\s+/)) stack.push(Number(k))
      }
    } catch { /* gone */ }
  }
  return [...new Set(out)]
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat), for machine CPU %. */
export function machineCpuTicks (): { busy: number, total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!
    const v = line.trim().split(/\s+/).slice(1).map(Number)
    const idle = (v[3] ?? 0) + (v[4] ?? 0)
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0)
    return { busy: total - idle, total }
  } catch { return { busy: 0, total: 0 } }
}
