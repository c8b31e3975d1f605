/**
 * The `sipring` command line: `start`, `status`, `help`, `--version`.
 * Exit codes: 0 ok, 1 runtime failure (port in use, admin unreachable…), 2 bad usage or configuration.
 */
import { request } from 'node:http'
import { ConfigError, UsageError, loadConfig, startHelp } from './config.js'
import { DaemonError, formatEndpoint, startDaemon } from './run.js'
import { startCoreDaemon } from './core.js'
import { createPinoLogger, cryptoRng, systemClock } from './system.js'
import { VERSION } from './version.js'
import { groupCommand, groupHelp, userCommand, userHelp } from './accounts-cli.js'
import { nodeCommand, nodeHelp, overlayCommand, overlayHelp } from './enroll.js'

/**
 * Node flags a super node runs with (the `sipring` command's shebang and `npm start` pass them).
 * 64 MiB semi-spaces: an overlay REGISTER holds its request, transaction and response for the
 * write quorum's round trip (tens of ms under load), so with V8's 16 MiB default most of them are
 * copied by a scavenge; measured with SIPp on this project's benchmark machine: −15 % CPU per
 * REGISTER through a 3-node overlay, single node unchanged to slightly faster (test/bench/README.md).
 */
export const NODE_FLAGS = ['--max-semi-space-size=64']

/** Whether the process was started with a young-generation size of its own choosing. */
export function youngGenerationSet (execArgv: readonly string[], nodeOptions: string | undefined): boolean {
  return [...execArgv, nodeOptions ?? ''].some(a => a.includes('--max-semi-space-size') || a.includes('--semi-space-growth'))
}

export interface Io {
  out: (s: string) => void
  err: (s: string) => void
  /** All of stdin (`sipring user add --password-stdin`); default: process.stdin. */
  stdin?: () => Promise<string>
}

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

const defaultIo: Io = {
  out: s => { process.stdout.write(s.endsWith('\n') ? s : s + '\n') },
  err: s => { process.stderr.write(s.endsWith('\n') ? s : s + '\n') }
}

export function mainHelp (): string {
  return [
    `sipring ${VERSION} — P2P SIP platform: super node (SIP registrar + stateful proxy)`,
    '',
    'Usage:',
    '  sipring start [options]           start a super node (see `sipring start --help`)',
    '  sipring start --role core …       start a core node (accounts replicated among core nodes)',
    '  sipring status [--admin H:P] [--json]',
    '                                    show a running node\'s status (admin API, default 127.0.0.1:5080)',
    '  sipring ring [--admin H:P] [--json]',
    '                                    show the overlay ring: members, status, SIP address, load',
    '  sipring lookup <aor> [--admin H:P] [--json]',
    '                                    look an AOR up in the overlay: owners and contacts with expiry',
    '  sipring user add|passwd|del|enable|disable|show|list …',
    '                                    manage accounts (digest authentication; see `sipring help user`)',
    '  sipring group add|members|del|list …',
    '                                    manage groups (see `sipring help group`)',
    '  sipring overlay init-ca --out PATH  create the overlay core key (enrolls super nodes)',
    '  sipring node id|enroll …          print this node\'s PeerId; sign a node\'s credential (see `sipring help node`)',
    '  sipring help [command]            this help, or a command\'s help',
    '  sipring --version                 print the version',
    '',
    'Documentation: README.md and docs/operations.md'
  ].join('\n')
}

export function statusHelp (): string {
  return [
    'Usage: sipring status [--admin HOST:PORT] [--json]',
    '',
    'Fetches GET /status from a running node\'s admin API and prints it.',
    '  --admin HOST:PORT   admin API address (default: $SIPRING_ADMIN, else 127.0.0.1:5080)',
    '  --json              print the raw JSON',
    'Exits 1 when the admin API cannot be reached.'
  ].join('\n')
}

export function ringHelp (): string {
  return [
    'Usage: sipring ring [--admin HOST:PORT] [--json]',
    '',
    'Fetches GET /ring from a running node\'s admin API: the overlay members (status, SIP address,',
    'share of the key space as primary, load with replicas, number of key ranges) and this node\'s multiaddrs.',
    '  --admin HOST:PORT   admin API address (default: $SIPRING_ADMIN, else 127.0.0.1:5080)',
    '  --json              print the raw JSON',
    'Exits 1 when the admin API cannot be reached or the overlay is off.'
  ].join('\n')
}

export function lookupHelp (): string {
  return [
    'Usage: sipring lookup <aor> [--admin HOST:PORT] [--json]',
    '',
    'Fetches GET /lookup?aor=<aor>: the AOR\'s owners on the ring (R replicas) and the contacts each',
    'super node holds for it, with their expiry (a read quorum of the overlay).',
    '  --admin HOST:PORT   admin API address (default: $SIPRING_ADMIN, else 127.0.0.1:5080)',
    '  --json              print the raw JSON',
    'Exits 1 when the admin API cannot be reached or the overlay is off, 2 on bad usage.'
  ].join('\n')
}

/** Run the CLI. Resolves with the exit code (for `start`: once the node has stopped). */
export async function main (argv: string[], env: NodeJS.ProcessEnv = process.env, io: Io = defaultIo): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case undefined: case 'help': case '--help': case '-h': {
      const sub = rest[0]
      if (sub === 'start') io.out(startHelp())
      else if (sub === 'status') io.out(statusHelp())
      else if (sub === 'user') io.out(userHelp())
      else if (sub === 'group') io.out(groupHelp())
      else if (sub === 'ring') io.out(ringHelp())
      else if (sub === 'lookup') io.out(lookupHelp())
      else if (sub === 'overlay') io.out(overlayHelp())
      else if (sub === 'node') io.out(nodeHelp())
      else if (sub !== undefined && cmd === 'help') { io.err(`sipring: unknown command ${JSON.stringify(sub)}\n\n${mainHelp()}`); return 2 }
      else io.out(mainHelp())
      return 0
    }
    case '--version': case '-v': case 'version':
      io.out(VERSION)
      return 0
    case 'start': return await startCommand(rest, env, io)
    case 'user': return await userCommand(rest, env, { ...io, stdin: io.stdin ?? readStdin })
    case 'group': return await groupCommand(rest, env, io)
    case 'status': return await statusCommand(rest, env, io)
    case 'ring': return await adminCommand('ring', rest, env, io)
    case 'lookup': return await adminCommand('lookup', rest, env, io)
    case 'overlay': return await overlayCommand(rest, io)
    case 'node': return await nodeCommand(rest, env, io, systemClock)
    default:
      io.err(`sipring: unknown command ${JSON.stringify(cmd)}\n\n${mainHelp()}`)
      return 2
  }
}

async function startCommand (args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  let config
  try {
    const r = loadConfig(args, env)
    if (r.help) { io.out(startHelp()); return 0 }
    config = r.config
  } catch (err) {
    if (err instanceof ConfigError) { for (const i of err.issues) io.err(`sipring: invalid config: ${i}`); return 2 }
    if (err instanceof UsageError) { io.err(`sipring: ${err.message} (see \`sipring start --help\`)`); return 2 }
    throw err
  }
  const { logger, pino } = createPinoLogger({ level: config.logLevel })
  if (!youngGenerationSet(process.execArgv, env.NODE_OPTIONS)) {
    logger.info(`V8's default young generation (16 MiB semi-spaces): start Node with ${NODE_FLAGS.join(' ')} (the sipring command and npm start do) for ≈ 15 % less CPU per REGISTER under load`)
  }
  let daemon: { stop(): Promise<void> }
  try {
    const deps = { clock: systemClock, rng: cryptoRng, logger }
    daemon = config.role === 'core' ? await startCoreDaemon(config, deps) : await startDaemon(config, deps)
  } catch (err) {
    const code = err instanceof DaemonError ? err.exitCode : 1
    logger.error({ err: (err as Error).message }, 'start failed')
    io.err(`sipring: ${(err as Error).message}`)
    return code
  }

  process.on('uncaughtException', (err) => { logger.error({ err: err.stack ?? err.message }, 'uncaught exception (kept running)') })
  process.on('unhandledRejection', (err) => { logger.error({ err: err instanceof Error ? (err.stack ?? err.message) : String(err) }, 'unhandled rejection (kept running)') })

  return await new Promise<number>((resolve) => {
    let signals = 0
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++
      if (signals > 1) {
        logger.warn({ signal: sig }, 'second signal: forcing exit')
        pino.flush()
        process.exit(1)
      }
      logger.info({ signal: sig }, `${sig} received: stopping (send it again to force exit)`)
      daemon.stop().then(() => { resolve(0) }, (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'clean stop failed')
        resolve(1)
      })
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
}

function parseAdmin (s: string): { host: string, port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s)
  if (m === null) return undefined
  const port = Number(m[2])
  if (port < 1 || port > 65535) return undefined
  return { host: m[1]!, port }
}

export function fetchJson (host: string, port: number, path: string, timeoutMs = 3000): Promise<{ status: number, body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET', timeout: timeoutMs, headers: { accept: 'application/json' } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
        } catch {
          reject(Object.assign(new Error('the admin API answered something that is not JSON'), { code: 'EBADJSON' }))
        }
      })
    })
    req.on('timeout', () => { req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' })) })
    req.on('error', reject)
    req.end()
  })
}

function duration (s: number): string {
  const d = Math.floor(s / 86400); const h = Math.floor(s % 86400 / 3600); const m = Math.floor(s % 3600 / 60); const sec = s % 60
  return [d > 0 ? `${d}d` : '', h > 0 ? `${h}h` : '', m > 0 ? `${m}m` : '', `${sec}s`].filter(x => x !== '').join(' ')
}

/** Human-readable rendering of GET /status. */
export function formatStatus (s: Record<string, any>): string {
  const counts = (s.counts ?? {}) as Record<string, unknown>
  const row = (k: string, v: unknown): string => `  ${k.padEnd(14)}${String(v)}`
  if (s.role === 'core') {
    const core = (s.core ?? {}) as Record<string, any>
    const peers = Array.isArray(core.peers) ? core.peers as Array<Record<string, any>> : []
    return [
      `sipring core node ${String(s.nodeId)} (version ${String(s.version)})`,
      row('uptime', duration(Number(s.uptimeSeconds ?? 0))),
      row('admin', s.admin ?? '-'),
      row('data dir', s.dataDir ?? '-'),
      row('accounts', `${String(core.users ?? '-')} user(s), ${String(core.groups ?? '-')} group(s), ${String(core.tombstones ?? '-')} tombstone(s)`),
      ...peers.map(p => row('core peer', `${String(p.id)} ${p.reachable === true ? 'reachable' : 'unreachable'}${p.lastSync !== undefined ? `, synced ${new Date(Number(p.lastSync)).toISOString()}` : ''}${p.lastError !== undefined ? ` (${String(p.lastError)})` : ''}`)),
      row('readers', core.subscribers ?? 0),
      row('address', Array.isArray(s.overlay?.multiaddrs) && s.overlay.multiaddrs.length > 0 ? `--core-node ${String(s.overlay.multiaddrs[0])}` : '-')
    ].join('\n')
  }
  return [
    `sipring node ${String(s.nodeId)} (version ${String(s.version)})`,
    row('uptime', `${duration(Number(s.uptimeSeconds ?? 0))}${s.startedAt !== undefined ? ` (since ${String(s.startedAt)})` : ''}`),
    row('listeners', Array.isArray(s.listeners) ? s.listeners.join(', ') : '-'),
    row('admin', s.admin ?? '-'),
    row('data dir', s.dataDir ?? '-'),
    row('domains', Array.isArray(s.domains) && s.domains.length > 0 ? s.domains.join(', ') : 'any'),
    row('AORs', counts.aors ?? '-'),
    row('contacts', counts.contacts ?? '-'),
    row('transactions', counts.transactions ?? '-'),
    ...(s.overlay !== undefined && s.overlay !== null
      ? [row('overlay', `${String(s.overlay.members)} member(s)${s.overlay.joined === false ? ' (not joined yet)' : ''}, SIP ${String(s.overlay.sipUri)}`),
          row('join with', Array.isArray(s.overlay.multiaddrs) && s.overlay.multiaddrs.length > 0 ? `--join ${String(s.overlay.multiaddrs[0])}` : '-')]
      : [])
  ].join('\n')
}

/**
 * Options shared by the commands that talk to a running node's admin API (`status`, `ring`, `lookup`):
 * `--help`, `--json`, `--admin HOST:PORT` (default `SIPRING_ADMIN` or 127.0.0.1:5080) and up to
 * `maxPositional` plain arguments. Returns the exit code when the command must stop here.
 */
function adminClientArgs (command: string, args: string[], env: NodeJS.ProcessEnv, io: Io, help: () => string, maxPositional: number):
{ adminText: string, json: boolean, positional: string[] } | number {
  let adminText = env.SIPRING_ADMIN ?? '127.0.0.1:5080'
  let json = false
  const positional: string[] = []
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === '--help' || a === '-h') { io.out(help()); return 0 }
    if (a === '--json') { json = true; continue }
    if (a === '--admin' || a.startsWith('--admin=')) {
      const v = a === '--admin' ? args[++i] : a.slice('--admin='.length)
      if (v === undefined) { io.err('sipring: option --admin needs a value (HOST:PORT)'); return 2 }
      adminText = v
      continue
    }
    if (!a.startsWith('-') && positional.length < maxPositional) { positional.push(a); continue }
    io.err(`sipring: ${a.startsWith('-') || command === 'status' ? 'unknown option' : 'unexpected argument'} ${a} (see \`sipring ${command} --help\`)`)
    return 2
  }
  return { adminText, json, positional }
}

async function statusCommand (args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const opts = adminClientArgs('status', args, env, io, statusHelp, 0)
  if (typeof opts === 'number') return opts
  const { adminText, json } = opts
  const admin = parseAdmin(adminText)
  if (admin === undefined) { io.err(`sipring: --admin: expected host:port (e.g. 127.0.0.1:5080), got ${JSON.stringify(adminText)}`); return 2 }
  const url = `http://${formatEndpoint({ address: admin.host, port: admin.port })}/status`
  let r
  try {
    r = await fetchJson(admin.host, admin.port, '/status')
  } catch (err) {
    const code = (err as { code?: string }).code
    io.err(`sipring: cannot reach the admin API at ${url}${code !== undefined ? ` (${code})` : ''}: ${(err as Error).message}. Is sipring running? Use --admin HOST:PORT.`)
    return 1
  }
  if (r.status !== 200) { io.err(`sipring: ${url} answered HTTP ${r.status}: ${JSON.stringify(r.body)}`); return 1 }
  io.out(json ? JSON.stringify(r.body, null, 2) : formatStatus(r.body as Record<string, any>))
  return 0
}

/** Human-readable rendering of GET /ring. */
export function formatRing (r: Record<string, any>): string {
  const members = Array.isArray(r.members) ? r.members as Array<Record<string, any>> : []
  const pct = (x: unknown): string => `${(Number(x ?? 0) * 100).toFixed(1)}%`
  const lines = [
    `overlay ring seen by ${String(r.self)}: ${members.length} member(s), R=${String(r.replicas)} W=${String(r.writeQuorum)} read=${String(r.readQuorum)}, load max/mean ${String(r.loadRatio)}`,
    ...(Array.isArray(r.multiaddrs) && r.multiaddrs.length > 0 ? [`  join this node with: --join ${String(r.multiaddrs[0])}`] : []),
    '',
    `  ${'member'.padEnd(54)} ${'status'.padEnd(8)} ${'primary'.padStart(8)} ${'load'.padStart(7)} ${'ranges'.padStart(6)}  sip`
  ]
  for (const m of members) {
    lines.push(`${m.self === true ? '* ' : '  '}${String(m.id).padEnd(54)} ${String(m.status).padEnd(8)} ${pct(m.primaryShare).padStart(8)} ${pct(m.load).padStart(7)} ${String(m.ranges).padStart(6)}  ${String(m.sipUri ?? '-')}`)
  }
  const st = r.store as Record<string, unknown> | undefined
  if (st !== undefined) lines.push('', `  store: ${String(st.items)} item(s), ${String(st.tombstones)} tombstone(s); handoff sent ${String(st.handoffSent)}, repairs ${String(st.repairs)}`)
  return lines.join('\n')
}

/** Human-readable rendering of GET /lookup. */
export function formatLookup (r: Record<string, any>): string {
  const owners = Array.isArray(r.owners) ? r.owners as Array<Record<string, any>> : []
  const nodes = Array.isArray(r.nodes) ? r.nodes as Array<Record<string, any>> : []
  const lines = [`${String(r.aor)} (key ${String(r.key)})`, '  owners:']
  owners.forEach(o => { lines.push(`    ${o.primary === true ? 'primary ' : 'replica '} ${String(o.id)} (${String(o.status)})`) })
  if (r.error !== undefined) lines.push(`  overlay read failed: ${String(r.error)}`)
  if (nodes.length === 0) lines.push('  no contact registered')
  for (const n of nodes) {
    lines.push(`  attached to ${String(n.node)} (${String(n.sipUri)}):`)
    for (const c of (Array.isArray(n.contacts) ? n.contacts : []) as Array<Record<string, any>>) {
      lines.push(`    ${String(c.contact)}  expires in ${String(c.expiresIn)} s (${String(c.expires)})  q=${String(c.q)}`)
    }
  }
  return lines.join('\n')
}

/** `sipring ring` / `sipring lookup <aor>`: GET the overlay routes of the admin API. */
async function adminCommand (what: 'ring' | 'lookup', args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const opts = adminClientArgs(what, args, env, io, what === 'ring' ? ringHelp : lookupHelp, what === 'lookup' ? 1 : 0)
  if (typeof opts === 'number') return opts
  const { adminText, json } = opts
  const aor: string | undefined = opts.positional[0]
  if (what === 'lookup' && aor === undefined) { io.err('sipring: lookup needs an AOR, e.g. sipring lookup sip:alice@example.org'); return 2 }
  const admin = parseAdmin(adminText)
  if (admin === undefined) { io.err(`sipring: --admin: expected host:port (e.g. 127.0.0.1:5080), got ${JSON.stringify(adminText)}`); return 2 }
  const path = what === 'ring' ? '/ring' : `/lookup?aor=${encodeURIComponent(aor!)}`
  const url = `http://${formatEndpoint({ address: admin.host, port: admin.port })}${path}`
  let r
  try {
    r = await fetchJson(admin.host, admin.port, path, 10_000)
  } catch (err) {
    const code = (err as { code?: string }).code
    io.err(`sipring: cannot reach the admin API at ${url}${code !== undefined ? ` (${code})` : ''}: ${(err as Error).message}. Is sipring running? Use --admin HOST:PORT.`)
    return 1
  }
  if (r.status !== 200) {
    const msg = (r.body as { error?: unknown } | undefined)?.error
    io.err(`sipring: ${url} answered HTTP ${r.status}: ${typeof msg === 'string' ? msg : JSON.stringify(r.body)}`)
    return r.status === 400 ? 2 : 1
  }
  io.out(json ? JSON.stringify(r.body, null, 2) : what === 'ring' ? formatRing(r.body as Record<string, any>) : formatLookup(r.body as Record<string, any>))
  return 0
}
