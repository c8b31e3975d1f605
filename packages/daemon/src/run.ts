/**
 * `sipring start` as a library: open the data dir, create and start the transports, assemble the
 * super node, serve the admin API. `startDaemon` resolves once everything listens; `stop()` shuts
 * down in reverse order and flushes the location service to level.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { createSecureContext } from 'node:tls'
import { join, resolve } from 'node:path'
import { ClassicLevel } from 'classic-level'
import type { Binding, Clock, Endpoint, Logger, Rng, SipTransport } from '@sipring/interface'
import { aorOf, createTransport } from '@sipring/sip'
import { createSuperNode, overlayAccountRpc, type SuperNode } from '@sipring/node'
import { createHasher, RING_SIZE, arcLength, type StoreDb } from '@sipring/overlay'
import { CredentialError, ed25519Signer, libp2pOverlay, loadOrCreatePrivateKey, type Libp2pOverlay } from '@sipring/overlay-libp2p'
import { loadAdmission } from './enroll.js'
import { AdminError, AdminServer } from './admin.js'
import { LevelAccountStore, RemoteAccountStore, type AccountStore } from '@sipring/auth'
import { createAccountsAdmin } from './accounts-admin.js'
import { accountsSublevel, adminToken, authSecret } from './accounts-files.js'
import { DEFAULT_OVERLAY_LISTEN, overlayEnabled, type ListenerConfig, type SipringConfig } from './config.js'
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
  /** The libp2p overlay node, when the overlay is enabled. */
  readonly overlay: Libp2pOverlay | undefined
  stop(): Promise<void>
}

/** The peer id at the end of a join multiaddr (`.../p2p/<id>`). */
export function peerIdOf (multiaddr: string): string | undefined {
  return /\/p2p\/([1-9A-HJ-NP-Za-km-z]+)$/.exec(multiaddr)?.[1]
}

/**
 * Start the libp2p overlay network. When the default listeners are used and IPv6 is unavailable,
 * retries with the IPv4 one only (as the SIP listeners do).
 */
export async function startOverlayNetwork (config: SipringConfig, deps: DaemonDeps, dataDir: string): Promise<Libp2pOverlay> {
  let admission
  try {
    admission = await loadAdmission(config)
  } catch (err) {
    throw new DaemonError(`cannot load the overlay admission settings: ${(err as Error).message}`, 2, { cause: err })
  }
  const defaults = config.overlayListen.length === 0
  const listen = defaults ? [...DEFAULT_OVERLAY_LISTEN] : config.overlayListen
  const make = async (addrs: string[]): Promise<Libp2pOverlay> => await libp2pOverlay({
    clock: deps.clock,
    logger: deps.logger.child({ component: 'overlay-libp2p' }),
    listen: addrs,
    join: config.join,
    ...(config.overlayAnnounce.length > 0 ? { announce: config.overlayAnnounce } : {}),
    keyPath: join(dataDir, 'peer.key'),
    ...(admission !== undefined ? { admission } : {})
  })
  let net: Libp2pOverlay
  try {
    net = await make(listen)
  } catch (err) {
    throw new DaemonError(`cannot create the overlay node: ${(err as Error).message}`, err instanceof TypeError || err instanceof CredentialError ? 2 : 1, { cause: err })
  }
  try {
    await net.start()
    return net
  } catch (err) {
    await net.stop().catch(() => {})
    const v4 = listen.filter(a => !a.startsWith('/ip6/'))
    if (defaults && v4.length > 0 && v4.length < listen.length) {
      deps.logger.warn({ err: (err as Error).message }, 'overlay: IPv6 listener unavailable; continuing with IPv4 only')
      const again = await make(v4)
      try { await again.start(); return again } catch (err2) { await again.stop().catch(() => {}); err = err2 }
    }
    const msg = (err as Error).message
    if (/EADDRINUSE/.test(msg)) throw new DaemonError(`cannot listen on overlay ${listen.join(', ')}: address already in use (choose another with --overlay-listen)`, 1, { cause: err })
    throw new DaemonError(`cannot start the overlay on ${listen.join(', ')}: ${msg}`, 1, { cause: err })
  }
}

/** Admission state for /status: `enforced` (closed overlay), peers admitted now, failures and refusals since start. */
export function admissionView (net: Libp2pOverlay | undefined): { enforced: boolean, admitted: number, failures: number, refused: number, refusedStreams: number } {
  const st = net?.stats()
  return { enforced: net?.admission !== undefined, admitted: net?.admission?.admittedPeers().length ?? 0, failures: st?.admissionFailures ?? 0, refused: st?.unadmitted ?? 0, refusedStreams: (st?.unadmittedStreams ?? 0) + (st?.unadmittedDials ?? 0) }
}

/** This node's multiaddrs, the ones other hosts can dial first (loopback last). */
export function joinAddresses (net: Libp2pOverlay | undefined): string[] {
  const all = net?.multiaddrs() ?? []
  const loop = (m: string): boolean => m.startsWith('/ip4/127.') || m.startsWith('/ip6/::1/')
  return [...all.filter(m => !loop(m)), ...all.filter(loop)]
}

/** GET /ring: the members of the ring with their status, SIP address and share of the key space. */
export function ringView (node: SuperNode, net: Libp2pOverlay | undefined): Record<string, unknown> {
  const ov = node.overlay!
  const ring = ov.ring
  const r = ov.store.replicas
  const stats = ring.loadStats(r)
  const ranges = new Map<string, number>()
  const primary = new Map<string, bigint>()
  for (const rg of ring.ranges(r)) {
    for (const o of rg.owners) ranges.set(o, (ranges.get(o) ?? 0) + 1)
    const p = rg.owners[0]
    if (p !== undefined) primary.set(p, (primary.get(p) ?? 0n) + arcLength(rg.start, rg.end))
  }
  const ids = [...new Set([...ring.members, ...ov.membership.view()])].sort()
  const round = (x: number): number => Math.round(x * 10000) / 10000
  return {
    self: node.nodeId,
    multiaddrs: joinAddresses(net),
    replicas: r,
    writeQuorum: ov.store.writeQuorum,
    readQuorum: ov.store.readQuorum,
    loadRatio: round(stats.ratio),
    members: ids.map(id => {
      const m = ov.membership.get(id)
      return {
        id,
        self: id === node.nodeId,
        status: m?.status ?? 'unknown',
        incarnation: m?.incarnation,
        inRing: ring.members.includes(id),
        sipUri: node.replication!.nodeRoute(id),
        ranges: ranges.get(id) ?? 0,
        primaryShare: round(Number(primary.get(id) ?? 0n) / Number(RING_SIZE)),
        load: round(stats.load.get(id) ?? 0)
      }
    }),
    store: ov.store.getStats(),
    replication: { ...node.replication!.stats, pending: node.replication!.pending }
  }
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
    try {
      createSecureContext({ cert: tls.cert, key: tls.key }) // bad PEM or a key not matching the certificate
    } catch (err) {
      throw new DaemonError(`invalid TLS certificate/key (tls.cert ${config.tls.cert}, tls.key ${config.tls.key}): ${(err as Error).message}; expected PEM files, the key matching the certificate`, 1, { cause: err })
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

  let net: Libp2pOverlay | undefined
  if (overlayEnabled(config)) {
    try {
      net = await startOverlayNetwork(config, deps, dataDir)
    } catch (err) {
      await Promise.allSettled(transports.map(async t => { await t.stop() }))
      await db.close()
      throw err
    }
  }
  const quorum = Math.floor(config.replicas / 2) + 1
  // a closed overlay (admission on): every AOR portion is signed by its super node's libp2p key, and
  // portions not signed by the node they name are ignored (binding writes only from that node)
  const signer = net !== undefined && config.overlayCa !== undefined ? ed25519Signer((await loadOrCreatePrivateKey(join(dataDir, 'peer.key'))).key) : undefined
  // accounts: in the `accounts` sublevel; the nonce secret persisted in the data dir
  // with core nodes (--core-node), accounts are read from them over the overlay and admin writes forwarded there
  let accounts: AccountStore
  let remoteAccounts: RemoteAccountStore | undefined
  if (net !== undefined && config.coreNodes.length > 0) {
    let cores: string[]
    try {
      cores = net.pinAddresses(config.coreNodes)
    } catch (err) {
      await Promise.allSettled(transports.map(async t => { await t.stop() }))
      await net.stop().catch(() => {})
      await db.close()
      throw new DaemonError(`coreNodes: ${(err as Error).message}`, 2, { cause: err })
    }
    void net.join(config.coreNodes) // connect now (failures are logged; reads fail over and redial)
    remoteAccounts = new RemoteAccountStore({ rpc: overlayAccountRpc(net), clock: deps.clock, logger: log, cores })
    accounts = remoteAccounts
  } else {
    accounts = new LevelAccountStore({ db: accountsSublevel(db), clock: deps.clock })
  }
  const authRealm = config.auth.realm ?? config.domains[0]
  const node = createSuperNode({
    accounts,
    clock: deps.clock,
    rng: deps.rng,
    logger: log,
    transports,
    db,
    ...(net !== undefined ? { overlay: { network: net, hasher: await createHasher(), db: db.sublevel<string, string>('overlay', { valueEncoding: 'utf8' }) as unknown as StoreDb } } : {})
  }, {
    ...(net !== undefined
      ? { overlay: { seeds: config.join.map(peerIdOf).filter((x): x is string => x !== undefined), replicas: config.replicas, writeQuorum: Math.min(quorum, config.replicas), readQuorum: Math.min(quorum, config.replicas), ackTimeout: config.overlayAckTimeout, trustLocalFor: config.overlayTrustLocalFor, ...(signer !== undefined ? { signer } : {}) } }
      : {}),
    domains: config.domains,
    minExpires: config.minExpires,
    maxExpires: config.maxExpires,
    defaultExpires: config.defaultExpires,
    maxContactsPerAor: config.maxContactsPerAor,
    nodeId,
    recordRoute: config.recordRoute,
    viaHost: config.advertise ?? defaultAdvertise(),
    groups: { maxBranches: config.groupMaxBranches, memberTimeout: config.groupMemberTimeout * 1000, maxDepth: config.groupMaxDepth },
    overload: { maxInFlight: config.overloadMaxInFlight, retryAfter: config.overloadRetryAfter },
    ...(config.groupForking !== undefined ? { groupForking: config.groupForking } : {}),
    ...(config.auth.enabled
      ? {
          auth: {
            enabled: true,
            ...(authRealm !== undefined ? { realm: authRealm } : {}),
            secret: authSecret(dataDir, deps.rng),
            nonceTtlMs: config.auth.nonceTtl * 1000,
            algorithms: config.auth.algorithms,
            limits: {
              maxFailuresPerSource: config.auth.maxFailuresPerSource,
              maxFailuresPerUser: config.auth.maxFailuresPerUser,
              failureWindowMs: config.auth.failureWindow * 1000,
              banMs: config.auth.banTime * 1000,
              banStatus: config.auth.banStatus
            }
          }
        }
      : {})
  })
  try {
    await node.start()
  } catch (err) {
    await Promise.allSettled(transports.map(async t => { await t.stop() }))
    await net?.stop().catch(() => {})
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
      accounts: createAccountsAdmin({
        accounts,
        token: adminToken(dataDir, deps.rng),
        defaultRealm: authRealm,
        logger: log.child({ component: 'admin' }),
        ...(node.auth !== undefined ? { bans: () => node.auth!.bans() } : {})
      }),
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
            proxy: s.proxy,
            overload: s.overload,
            ...(s.auth !== undefined ? { auth: s.auth } : {}),
            ...(remoteAccounts !== undefined ? { coreNodes: { cores: remoteAccounts.coreStatus(), cached: remoteAccounts.cacheSize, ...remoteAccounts.stats } } : {}),
            ...(s.overlay !== undefined ? { overlay: { ...s.overlay, multiaddrs: joinAddresses(net), peers: net?.peers().length ?? 0, admission: admissionView(net) } } : {})
          }
        },
        ...(node.overlay !== undefined
          ? {
              ring: () => ringView(node, net),
              lookup: async (aor: string) => {
                let normalized: string
                try {
                  normalized = aorOf(aor)
                } catch (err) {
                  throw new AdminError(400, `aor is not a valid SIP URI: ${(err as Error).message}`)
                }
                const now = deps.clock.now()
                const ov = node.overlay!
                const found = await node.replication!.inspect(normalized)
                return {
                  aor: normalized,
                  key: found.key,
                  owners: found.owners.map((id, i) => ({ id, primary: i === 0, status: ov.membership.get(id)?.status ?? 'unknown', sipUri: node.replication!.nodeRoute(id) })),
                  ...(found.error !== undefined ? { error: found.error } : {}),
                  nodes: Object.entries(found.nodes).map(([id, p]) => ({ node: id, sipUri: p.uri, version: p.v, contacts: p.b.map(b => bindingView(b, now)) })),
                  local: node.location.lookup(normalized).map(b => bindingView(b, now))
                }
              }
            }
          : {}),
        health: () => ({ status: 'ok', nodeId: node.nodeId }),
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

  if (net !== undefined) {
    const addrs = joinAddresses(net)
    log.info({ peerId: net.self, multiaddrs: addrs, join: config.join }, `overlay peer ${net.self}; others join with --join ${addrs[0] ?? `/ip4/<this host>/tcp/7070/p2p/${net.self}`}`)
  }
  const listeners = (): Endpoint[] => transports.map(t => ({ ...t.local }))
  const adminAddress = (): { host: string, port: number } | undefined => admin?.address()
  const a = adminAddress()
  log.info({
    nodeId: node.nodeId,
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
    overlay: net,
    async stop () {
      stopping ??= (async () => {
        log.info({}, 'stopping: closing listeners and flushing registrations')
        await admin?.stop().catch((err: unknown) => { log.warn({ err: (err as Error).message }, 'admin stop failed') })
        let failure: unknown
        try { await node.stop() } catch (err) { failure = err }
        try { await net?.stop() } catch (err) { log.warn({ err: (err as Error).message }, 'overlay stop failed') }
        await db.close()
        log.info({}, 'stopped')
        if (failure !== undefined) throw failure
      })()
      await stopping
    }
  }
}
