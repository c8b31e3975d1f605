// One way to start "the SIP server under test": sipring (the daemon CLI) or Kamailio (the yardstick),
// with the same listeners, so every interop scenario and the benchmark run against both.
// Env: SIPRING_INTEROP_TARGET=kamailio runs the interop tests against Kamailio (to validate the
// tests themselves); SIPRING_CLI=dist|source picks how the daemon is started (default: source for
// tests, dist for the bench when built); SIPRING_ECHO=1 echoes the server's output.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startKamailio, type RunningServer } from './kamailio.js'
import { freePort, sipUdpAlive, tcpListening } from './ports.js'
import { startProcess, tempDir } from './proc.js'

export type { RunningServer } from './kamailio.js'
const NODE_FLAGS = ['--max-semi-space-size=64']

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const DOMAIN = 'sipring.test'

export type ServerKind = 'sipring' | 'kamailio'

export interface Listener { proto: 'udp' | 'tcp', host: string, port: number }

export interface ServerOptions {
  listen: Listener[]
  /** sipring data directory (kept across restarts when given). */
  dataDir?: string
  adminPort?: number
  domain?: string
  children?: number
  cli?: 'dist' | 'source'
  logLevel?: string
  extraArgs?: string[]
  /** Extra arguments for node itself (sipring), e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']. */
  nodeArgs?: string[]
}

export interface TestServer extends RunningServer {
  kind: ServerKind
  /** Contacts currently bound to `user@domain` (via admin HTTP for sipring, kamcmd for Kamailio). */
  bindings (user: string): Promise<string[]>
  /** Admin GET (sipring only). */
  admin?: (path: string) => Promise<{ status: number, body: any }>
  dataDir?: string
  adminPort?: number
}

const hp = (host: string, port: number): string => host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`

export function targetKind (): ServerKind {
  return process.env.SIPRING_INTEROP_TARGET === 'kamailio' ? 'kamailio' : 'sipring'
}

/** The argv that runs the sipring CLI: [node, ...args]. */
export function sipringCommand (mode: 'dist' | 'source'): string[] {
  // the Node flags of the `sipring` command's shebang and of `npm start` (NODE_FLAGS in daemon main.ts)
  if (mode === 'dist') return [...NODE_FLAGS, join(ROOT, 'packages', 'daemon', 'dist', 'cli.js')]
  return [...NODE_FLAGS, '--import', 'tsx', '--conditions=sipring-source', join(ROOT, 'packages', 'daemon', 'src', 'cli.ts')]
}

export function sipringAvailable (mode: 'dist' | 'source' = 'source'): boolean {
  return existsSync(mode === 'dist' ? join(ROOT, 'packages', 'daemon', 'dist', 'cli.js') : join(ROOT, 'packages', 'daemon', 'src', 'cli.ts'))
}

async function httpGet (port: number, path: string): Promise<{ status: number, body: any }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) })
  const text = await res.text()
  let body: any = text
  try { body = JSON.parse(text) } catch { /* not json */ }
  return { status: res.status, body }
}

async function aliveAll (listen: Listener[]): Promise<boolean> {
  for (const l of listen) {
    const ok = l.proto === 'udp' ? await sipUdpAlive(l.host, l.port) : await tcpListening(l.host, l.port)
    if (!ok) return false
  }
  return true
}

export async function startSipring (o: ServerOptions): Promise<TestServer> {
  const mode = o.cli ?? (process.env.SIPRING_CLI === 'dist' ? 'dist' : 'source')
  const own = o.dataDir ? undefined : tempDir('sipring-data')
  const dataDir = o.dataDir ?? own!.dir
  const adminPort = o.adminPort ?? await freePort()
  const domain = o.domain ?? DOMAIN
  const args = [...(o.nodeArgs ?? []), ...sipringCommand(mode), 'start',
    ...o.listen.flatMap(l => ['--sip', `${l.proto}:${hp(l.host, l.port)}`]),
    '--data', dataDir, '--admin', `127.0.0.1:${adminPort}`, '--domain', domain,
    '--log-level', o.logLevel ?? process.env.SIPRING_LOG_LEVEL ?? 'warn', ...(o.extraArgs ?? [])]
  // SIPRING_CLI selects how the harness starts the daemon; the daemon rejects unknown SIPRING_* variables
  const { SIPRING_CLI: _cli, ...env } = process.env
  const proc = await startProcess('sipring', process.execPath, args, {
    cwd: ROOT,
    env,
    echo: process.env.SIPRING_ECHO ? process.stderr : undefined,
    ready: async () => (await httpGet(adminPort, '/status')).status === 200 && await aliveAll(o.listen),
    readyTimeoutMs: 30000
  })
  const udp = o.listen.find(l => l.proto === 'udp')
  const tcp = o.listen.find(l => l.proto === 'tcp')
  return {
    kind: 'sipring',
    name: 'sipring',
    proc,
    pid: proc.pid,
    udp: udp ? hp(udp.host, udp.port) : undefined,
    tcp: tcp ? hp(tcp.host, tcp.port) : undefined,
    dataDir,
    adminPort,
    admin: path => httpGet(adminPort, path),
    async bindings (user) {
      const r = await httpGet(adminPort, `/bindings?aor=${encodeURIComponent(`sip:${user}@${domain}`)}`)
      if (r.status !== 200) throw new Error(`GET /bindings for ${user}: HTTP ${r.status} ${JSON.stringify(r.body)}`)
      const list = Array.isArray(r.body?.bindings) ? r.body.bindings : []
      return list.map((b: { contact?: string }) => String(b.contact ?? ''))
    },
    async stop () { await proc.stop(5000); own?.cleanup() }
  }
}

export async function startKamailioServer (o: ServerOptions): Promise<TestServer> {
  const k = await startKamailio({ listen: o.listen, domain: o.domain ?? DOMAIN, children: o.children })
  return {
    ...k,
    kind: 'kamailio',
    async bindings (user) {
      const r = spawnSync('kamcmd', ['-s', `unix:${k.dir!}/kamailio_ctl`, 'ul.lookup', 'location', user], { encoding: 'utf8', timeout: 5000 })
      return [...r.stdout.matchAll(/Address: (\S+)/g)].map(m => m[1]!)
    }
  }
}

export function startServer (kind: ServerKind, o: ServerOptions): Promise<TestServer> {
  return kind === 'kamailio' ? startKamailioServer(o) : startSipring(o)
}
