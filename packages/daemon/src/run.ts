/**
 * `sipring start` as a library: open the data dir, create and start the transports, assemble the
 * super node, serve the admin API. `startDaemon` resolves once everything listens; `stop()` shuts
 * down in reverse order and flushes the location service to level.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { join, resolve } from 'node:path'
import { ClassicLevel } from 'classic-level'
import type { Binding, Clock, Endpoint, Logger, Rng, SipTransport } from '@sipring/interface'
import { aorOf, createTransport } from '@sipring/sip'
import { createSuperNode, type SuperNode } from '@sipring/node'
import { AdminError, AdminServer } from './admin.js'
import type { ListenerConfig, SipringConfig } from './config.js'
import { VERSION } from './version.js'

/** A start-up failure with the process exit code it maps to (1 = runtime, 2 = configuration). */
export class DaemonError extends Error {
  constructor (message: string, readonly exitCode = 1, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'DaemonError'
  }
}

export interface DaemonDeps {
  clock: Clock
  rng: Rng
  logger: Logger
  /** Transport factory (default: @sipring/sip `createTransport`); tests inject failing ones. */
  createTransport?: (listener: ListenerConfig, tls: { cert?: Buffer, key?: Buffer }) => SipTransport
}

export interface Daemon {
  readonly node: SuperNode
  readonly config: SipringConfig
  /** Bound SIP endpoints (ports resolved). */
  listeners(): Endpoint[]
  /** Bound admin address, or undefined when disabled. */
  adminAddress(): { host: string, port: number } | undefined
  stop(): Promise<void>
}

export function formatEndpoint (e: { protocol?: string, address: string, port: number }): string {
  const host = e.address.includes(':') ? `[${e.address}]` : e.address
  return e.protocol === undefined ? `${host}:${e.port}` : `${e.protocol}:${host}:${e.port}`
}

const NO_IPV6 = new Set(['EAFNOSUPPORT', 'EADDRNOTAVAIL', 'EPROTONOSUPPORT', 'EINVAL'])

function errCode (err: unknown): string | undefined {
  const c = (err as { code?: unknown } | undefined)?.code
  return typeof c === 'string' ? c : undefined
}

/** The node id is generated once and kept in `<dataDir>/node-id` unless configured. */
function nodeIdFor (config: SipringConfig, dataDir: string, rng: Rng): string {
  if (config.nodeId !== undefined) return config.nodeId
  const file = join(dataDir, 'node-id')
  try {
    const id = readFileSync(file, 'utf8').trim()
    if (/^[A-Za-z0-9._~-]{1,128}$/.test(id)) return id
  } catch {}
  const id = rng.token(16)
  writeFileSync(file, id + '\n')
  return id
}

/** The host's first non-internal IPv4 address, else 127.0.0.1: what Via says for 0.0.0.0 listeners. */
export function defaultAdvertise (): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  return '127.0.0.1'
}

function bindingView (b: Binding, now: number): Record<string, unknown> {
  return {
    contact: b.contact,
    expires: new Date(b.expires).toISOString(),
    expiresIn: Math.max(0, Math.round((b.expires - now) / 1000)),
    q: b.q,
    callId: b.callId,
    cseq: b.cseq,
    path: b.path,
    ...(b.instance !== undefined ? { instance: b.instance } : {}),
    ...(b.regId !== undefined ? { regId: b.regId } : {}),
    ...(b.received !== undefined ? { received: { ...b.received } } : {}),
    ...(b.node !== undefined ? { node: b.node } : {}),
    ...(b.userAgent !== undefined ? { userAgent: b.userAgent } : {}),
    updated: new Date(b.updated).toISOString()
  }
}

async function startTransports (config: SipringConfig, deps: DaemonDeps, tls: { cert?: Buffer, key?: Buffer }): Promise<SipTransport[]> {
  const started: SipTransport[] = []
  const log = deps.logger
  const stopAll = async (): Promise<void> => { await Promise.allSettled(started.map(async t => { await t.stop() })) }
  for (const l of config.sip) {
    const transport = deps.createTransport !== undefined ? deps.createTransport(l, tls) : makeTransport(l, deps, tls)
    try {
      await transport.start()
      started.push(transport)
    } catch (err) {
      const code = errCode(err)
      const where = formatEndpoint({ protocol: l.protocol, address: l.host, port: l.port })
      if (l.host.includes(':') && code !== undefined && NO_IPV6.has(code)) {
        log.warn({ listener: where, code }, `IPv6 listener ${where} unavailable on this host (${code}); continuing without it`)
        continue
      }
      await stopAll()
      if (code === 'EADDRINUSE') throw new DaemonError(`cannot listen on ${where}: address already in use (is another SIP server running? choose another port with --sip)`, 1, { cause: err })
      if (code === 'EACCES') throw new DaemonError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges)`, 1, { cause: err })
      if (code === 'EADDRNOTAVAIL') throw new DaemonError(`cannot listen on ${where}: address not available on this host`, 1, { cause: err })
      throw new DaemonError(`cannot listen on ${where}: ${(err as Error).message}`, 1, { cause: err })
    }
  }
  if (started.length === 0) throw new DaemonError('no SIP listener could be opened', 1)
  return started
}

function makeTransport (l: ListenerConfig, deps: DaemonDeps, tls: { cert?: Buffer, key?: Buffer }): SipTransport {
  const base = { address: l.host, port: l.port, clock: deps.clock, logger: deps.logger }
  switch (l.protocol) {
    case 'udp': return createTransport({ protocol: 'udp', ...base })
    case 'tcp': return createTransport({ protocol: 'tcp', ...base })
    case 'ws': return createTransport({ protocol: 'ws', ...base })
    case 'tls': return createTransport({ protocol: 'tls', ...base, cert: tls.cert!, key: tls.key! })
    case 'wss': return createTransport({ protocol: 'wss', ...base, cert: tls.cert!, key: tls.key! })
  }
}

/** Start a daemon from a validated config. Throws DaemonError with a clear message on failure. */
export async function startDaemon (config: SipringConfig, deps: DaemonDeps): Promise<Daemon> {
  const log = deps.logger
  const dataDir = resolve(config.dataDir)
  try {
    mkdirSync(dataDir, { recursive: true })
  } catch (err) {
    throw new DaemonError(`cannot create data dir ${dataDir}: ${(err as Error).message}`, 1, { cause: err })
  }
  const tls: { cert?: Buffer, key?: Buffer } = {}
  if (config.tls.cert !== undefined && config.tls.key !== undefined) {
    try {
      tls.cert = readFileSync(config.tls.cert)
      tls.key = readFileSync(config.tls.key)
    } catch (err) {
      throw new DaemonError(`cannot read TLS certificate/key: ${(err as Error).message}`, 1, { cause: err })
    }
  }
  const nodeId = nodeIdFor(config, dataDir, deps.rng)

  const db = new ClassicLevel<string, any>(join(dataDir, 'location'), { keyEncoding: 'utf8', valueEncoding: 'json' })
  try {
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: string, message?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(cause?.message ?? '')) {
      throw new DaemonError(`data dir ${dataDir} is in use by another sipring process`, 1, { cause: err })
    }
    throw new DaemonError(`cannot open the database in ${dataDir}: ${cause?.message ?? (err as Error).message}`, 1, { cause: err })
  }

  let transports: SipTransport[]
  try {
    transports = await startTransports(config, deps, tls)
  } catch (err) {
    await db.close()
    throw err
  }

  const node = createSuperNode({ clock: deps.clock, rng: deps.rng, logger: log, transports, db }, {
    domains: config.domains,
    minExpires: config.minExpires,
    maxExpires: config.maxExpires,
    defaultExpires: config.defaultExpires,
    maxContactsPerAor: config.maxContactsPerAor,
    nodeId,
    recordRoute: config.recordRoute,
    viaHost: config.advertise ?? defaultAdvertise()
  })
  try {
    await node.start()
  } catch (err) {
    await Promise.allSettled(transports.map(async t => { await t.stop() }))
    await db.close()
    throw new DaemonError(`cannot start the node: ${(err as Error).message}`, 1, { cause: err })
  }

  const startedAt = deps.clock.now()
  let admin: AdminServer | undefined
  if (config.admin !== null) {
    admin = new AdminServer({
      host: config.admin.host,
      port: config.admin.port,
      logger: log.child({ component: 'admin' }),
      source: {
        status: () => {
          const s = node.status()
          return {
            nodeId: s.nodeId,
            version: VERSION,
            startedAt: new Date(startedAt).toISOString(),
            uptimeSeconds: Math.floor((deps.clock.now() - startedAt) / 1000),
            listeners: s.listeners.map(formatEndpoint),
            admin: admin !== undefined ? formatEndpoint({ address: admin.address().host, port: admin.address().port }) : undefined,
            dataDir,
            domains: config.domains,
            counts: { aors: s.aors, contacts: s.contacts, transactions: s.transactions },
            registers: s.registers,
            registrarErrors: s.registrarErrors,
            sip: s.stack,
            proxy: s.proxy
          }
        },
        health: () => ({ status: 'ok', nodeId }),
        bindings: (aor: string) => {
          let normalized: string
          try {
            normalized = aorOf(aor)
          } catch (err) {
            throw new AdminError(400, `aor is not a valid SIP URI: ${(err as Error).message}`)
          }
          const now = deps.clock.now()
          return { aor: normalized, bindings: node.location.lookup(normalized).map(b => bindingView(b, now)) }
        }
      }
    })
    try {
      await admin.start()
    } catch (err) {
      await node.stop().catch(() => {})
      await db.close()
      const where = formatEndpoint({ address: config.admin.host, port: config.admin.port })
      if (errCode(err) === 'EADDRINUSE') throw new DaemonError(`cannot listen on admin ${where}: address already in use (choose another with --admin)`, 1, { cause: err })
      throw new DaemonError(`cannot listen on admin ${where}: ${(err as Error).message}`, 1, { cause: err })
    }
  }

  const listeners = (): Endpoint[] => transports.map(t => ({ ...t.local }))
  const adminAddress = (): { host: string, port: number } | undefined => admin?.address()
  const a = adminAddress()
  log.info({
    nodeId,
    sip: listeners().map(formatEndpoint),
    admin: a !== undefined ? formatEndpoint({ address: a.host, port: a.port }) : 'off',
    dataDir,
    version: VERSION
  }, `sipring ${VERSION} listening on ${listeners().map(formatEndpoint).join(', ')}; admin ${a !== undefined ? `http://${formatEndpoint({ address: a.host, port: a.port })}` : 'off'}`)

  let stopping: Promise<void> | undefined
  return {
    node,
    config,
    listeners,
    adminAddress,
    async stop () {
      stopping ??= (async () => {
        log.info({}, 'stopping: closing listeners and flushing registrations')
        await admin?.stop().catch((err: unknown) => { log.warn({ err: (err as Error).message }, 'admin stop failed') })
        let failure: unknown
        try { await node.stop() } catch (err) { failure = err }
        await db.close()
        log.info({}, 'stopped')
        if (failure !== undefined) throw failure
      })()
      await stopping
    }
  }
}
