import type { Clock, Endpoint, Logger, Rng, SipTransport, Source, Startable, Timer } from '@sipring/interface'
import { SipStack, createResponse, type SipRequest, type SipResponse, type ServerTransaction, type StackStats } from '@sipring/sip'
import { LocationStore, type LocationDb } from '@sipring/location'
import { createRegistrar, type Registrar } from '@sipring/registrar'
import { createProxy, type GroupForking, type GroupLimits, type Proxy, type ProxyOptions, type ProxyStats } from '@sipring/proxy'
import { OverlayNode, type Hasher, type OverlayNetwork, type OverlayNodeInit, type PeerId, type StoreDb } from '@sipring/overlay'
import { LocationReplicator, type PortionSigner, type ReplicaValue, type ReplicationStats } from './replication.js'
import { overlayAccountRpc } from './core-node.js'
import { ownerResolver } from './fork.js'
import { GroupCache, type GroupStoreLike } from './group-cache.js'
import { OverloadGuard, type OverloadLimits, type OverloadStats } from './overload.js'
import { RemoteAccountStore, type RemoteAccountStoreOptions } from '@sipring/auth'
import { DigestServer, contactLimitExceeded, registerAor, type Account, type AccountStore, type ChallengeAlgorithm, type DigestLimits, type DigestStats } from '@sipring/auth'

/**
 * The overlay a super node joins: a ready {@link OverlayNode} (started and stopped by the super node),
 * or its parts (the network port from overlay-libp2p or SimOverlayHub, the xxhash64 hasher, a db).
 */
export type SuperNodeOverlay =
  | { node: OverlayNode<ReplicaValue> }
  | { network: OverlayNetwork, hasher: Hasher, db?: StoreDb }

export interface SuperNodeComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  /** Listening transports (not necessarily started: `start()` starts them through the stack). */
  transports: SipTransport[]
  /** Persistence for the location service (classic-level in the daemon, memory-level in tests). */
  db?: LocationDb
  /** Share one location service with other super nodes over this overlay. */
  overlay?: SuperNodeOverlay
  /**
   * Accounts read by digest authentication (used only with `init.auth.enabled`); with `getGroup`, a
   * request to a group AOR is forked by this node to the group's members (centralized mode).
   */
  accounts?: Pick<AccountStore, 'getUser'> & Partial<Pick<AccountStore, 'onChange' | 'getGroup'>>
}

/** Digest authentication of requests before the registrar and proxy (off by default). */
export interface SuperNodeAuthInit {
  enabled?: boolean
  /** Realm challenged (default: the first served domain). */
  realm?: string
  /** Nonce HMAC secret shared by the super nodes (default: random per node). */
  secret?: Uint8Array
  algorithms?: ChallengeAlgorithm[]
  nonceTtlMs?: number
  credentialTtlMs?: number
  /** From (To for REGISTER) user must be the authenticated user (default true). */
  checkIdentity?: boolean
  /** Source addresses trusted without authentication (besides known overlay peers). */
  trustedSources?: string[]
  limits?: Partial<DigestLimits>
}

export interface SuperNodeOverlayInit {
  /** Overlay ids to join through (any live member); none = start a new ring. */
  seeds?: PeerId[]
  /** Replicas per AOR (R, default 3), write and read quorums (default 2). */
  replicas?: number
  writeQuorum?: number
  readQuorum?: number
  /**
   * This node's SIP URI as other super nodes reach it (default: the first TCP, else TLS, else UDP
   * listener, with `viaHost` for wildcard addresses, e.g. `sip:10.0.0.1:5060;transport=tcp`).
   */
  sipUri?: string
  /** Retry a failed join every this many ms (default 5000; 0 = no retry). */
  rejoinInterval?: number
  /** See {@link ReplicationOptions}: re-read delay after a publish (default 1000 ms). */
  verifyDelay?: number
  /** Publishes running at once (default 512). */
  concurrency?: number
  /** See {@link ReplicationOptions}: own replica trusted instead of a quorum pre-read for this long (default 3,600,000 ms; 0 = never). */
  trustLocalFor?: number
  /** See {@link ReplicationOptions}: sign the own AOR portions and accept only validly signed ones of other nodes (default: none). */
  signer?: PortionSigner
  /**
   * A 2xx to a REGISTER with Contacts is sent only once the AOR's new state reached the write quorum
   * in the overlay, waiting at most this long (ms, default 2000); past it the answer is
   * `503 Overlay write quorum not reached` with `Retry-After: 5` (the local binding stays).
   */
  ackTimeout?: number
  /** Membership / store tuning passed to the OverlayNode built from parts. */
  node?: OverlayNodeInit
}

export interface SuperNodeInit {
  /** Domains served; empty or omitted = any. */
  domains?: string[]
  minExpires?: number
  maxExpires?: number
  defaultExpires?: number
  maxContactsPerAor?: number
  /** Node id (default: a random 16-character token from the injected Rng). */
  nodeId?: string
  /** Add Record-Route to dialog-creating requests (default true). */
  recordRoute?: boolean
  /** Host written in Via (and so Record-Route) for transports bound to 0.0.0.0 / ::. */
  viaHost?: string
  /** Extra host names / addresses that mean "this node" (public name, NAT address). */
  aliases?: string[]
  /** Overlay settings (used only with `components.overlay`). */
  overlay?: SuperNodeOverlayInit
  /** Digest authentication (needs `components.accounts`). */
  auth?: SuperNodeAuthInit
  /** Group calls (with `components.accounts`): depth, branch cap, hunt per-member timeout. */
  groups?: Partial<GroupLimits>
  /**
   * Core nodes holding the accounts (their overlay ids). Without `components.accounts`, the node reads
   * accounts and groups from them over its overlay network (a {@link RemoteAccountStore}: failover,
   * TTL cache, stale entries served while every core node is down, invalidations pushed by them).
   */
  coreNodes?: PeerId[]
  /** Tuning of that store (timeouts, TTLs). */
  coreAccounts?: Omit<RemoteAccountStoreOptions, 'rpc' | 'clock' | 'logger' | 'cores'>
  /**
   * Group calls: `distributed` (default with an overlay) sends one fork request per owner node of the
   * members, which forks to them; `centralized` (default without an overlay) forks here to every member.
   */
  groupForking?: GroupForking
  /** Distributed group forking: a fork request with no provisional after this many ms is re-resolved (default 2000). */
  forkTimeout?: number
  /**
   * Distributed group forking: members this node owns are forked by their next replica owner
   * (`replica`, default: the originating node keeps only its attached members and one request per
   * owner) or `here` (one hop less for those members, more load at the originating node).
   */
  forkOwnMembers?: 'here' | 'replica'
  /** Requests processed at once before new ones are answered 503 + Retry-After (see {@link OverloadLimits}). */
  overload?: Partial<OverloadLimits>
}

export interface SuperNodeStatus {
  nodeId: string
  /** ms since epoch when start() completed; undefined before. */
  startedAt: number | undefined
  uptimeMs: number
  running: boolean
  listeners: Endpoint[]
  aors: number
  contacts: number
  transactions: number
  /** REGISTERs handled / registrar failures answered 500. */
  registers: number
  registrarErrors: number
  /** Transaction-layer counters (messages received/sent, parse errors…). */
  stack: StackStats
  /** Proxy counters. */
  proxy: ProxyStats
  /** Digest authentication counters, when authentication is on. */
  auth?: DigestStats
  /** Requests in progress and those shed with 503 (overload bound). */
  overload: OverloadStats
  /** Overlay state, with an overlay only. */
  overlay?: {
    self: PeerId
    sipUri: string
    members: number
    joined: boolean
    replication: ReplicationStats
    store: { items: number, tombstones: number }
  }
}

export interface SuperNode extends Startable {
  readonly nodeId: string
  readonly stack: SipStack
  readonly location: LocationStore
  readonly registrar: Registrar
  readonly proxy: Proxy
  /** The overlay node (membership, ring, replicated store), with an overlay only. */
  readonly overlay: OverlayNode<ReplicaValue> | undefined
  /** usrloc ↔ overlay replication and the proxy's shared lookup, with an overlay only. */
  readonly replication: LocationReplicator | undefined
  /** The digest server, when authentication is on. */
  readonly auth: DigestServer | undefined
  status(): SuperNodeStatus
  /**
   * Stop. With an overlay, `leave: true` (default) announces the departure and hands the items
   * this node replicates to their new owners first; `leave: false` just stops (like a crash).
   */
  stop(opts?: { leave?: boolean }): Promise<void>
}

export const DEFAULTS = Object.freeze({
  minExpires: 60, maxExpires: 3600, defaultExpires: 3600, maxContactsPerAor: 10, recordRoute: true
})

class SuperNodeImpl implements SuperNode {
  readonly nodeId: string
  readonly stack: SipStack
  readonly location: LocationStore
  readonly registrar: Registrar
  readonly proxy: Proxy
  readonly overlay: OverlayNode<ReplicaValue> | undefined
  readonly replication: LocationReplicator | undefined
  readonly auth: DigestServer | undefined
  private readonly overlayInit: SuperNodeOverlayInit
  private readonly overloadGuard: OverloadGuard
  private readonly viaHost: string | undefined
  private joined = false
  private rejoinTimer: Timer | undefined
  private unwatch: (() => void) | undefined
  private readonly clock: Clock
  private readonly log: Logger
  private readonly transports: SipTransport[]
  private readonly tagRng: Rng
  private startedAt: number | undefined
  private running = false
  private registers = 0
  private registrarErrors = 0

  constructor (c: SuperNodeComponents, init: SuperNodeInit) {
    this.clock = c.clock
    this.overlayInit = init.overlay ?? {}
    this.viaHost = init.viaHost
    const o = c.overlay
    if (o === undefined) {
      this.overlay = undefined
    } else if ('node' in o) {
      this.overlay = o.node
    } else {
      const oi = this.overlayInit
      const nodeInit: OverlayNodeInit = {
        ...oi.node,
        store: {
          // an item must live as long as the longest registration (default store maxTtl: 24 h)
          maxTtl: Math.max(86_400_000, (init.maxExpires ?? DEFAULTS.maxExpires) * 1000 + 60_000),
          ...oi.node?.store,
          ...(oi.replicas !== undefined ? { replicas: oi.replicas } : {}),
          ...(oi.writeQuorum !== undefined ? { writeQuorum: oi.writeQuorum } : {}),
          ...(oi.readQuorum !== undefined ? { readQuorum: oi.readQuorum } : {})
        }
      }
      this.overlay = new OverlayNode<ReplicaValue>({
        clock: c.clock, rng: c.rng.fork('overlay'), logger: c.logger, network: o.network, hasher: o.hasher, ...(o.db !== undefined ? { db: o.db } : {})
      }, nodeInit)
    }
    // with an overlay, the node id is the overlay id: bindings name their attachment node by it
    this.nodeId = this.overlay?.self ?? init.nodeId ?? c.rng.fork('node-id').token(16)
    this.log = c.logger.child({ node: this.nodeId })
    this.transports = c.transports
    this.tagRng = c.rng.fork('node-tags')
    const domains = init.domains ?? []
    // viaHost names this node on its own ports only: several super nodes may share one address
    // (one host, different ports), and a bare host alias would make each see the others' Vias as
    // its own (482 Loop Detected when a peer node forwards with the Request-URI kept)
    const vh = init.viaHost
    const ports = [...new Set(c.transports.map(t => t.local.port))]
    const viaAliases = vh === undefined ? [] : ports.length > 0 && !ports.includes(0) ? ports.map(p => `${vh.includes(':') && !vh.startsWith('[') ? `[${vh}]` : vh}:${p}`) : [vh]
    const aliases = [...(init.aliases ?? []), ...viaAliases]
    this.stack = new SipStack({
      clock: c.clock,
      rng: c.rng.fork('stack'),
      logger: this.log,
      transports: c.transports,
      ...(init.viaHost !== undefined ? { viaHost: init.viaHost } : {})
    })
    this.location = new LocationStore({
      clock: c.clock,
      logger: this.log,
      ...(c.db !== undefined ? { db: c.db } : {}),
      limits: { maxContactsPerAor: init.maxContactsPerAor ?? DEFAULTS.maxContactsPerAor }
    })
    this.registrar = createRegistrar({
      location: this.location,
      clock: c.clock,
      logger: this.log,
      domains,
      minExpires: init.minExpires ?? DEFAULTS.minExpires,
      maxExpires: init.maxExpires ?? DEFAULTS.maxExpires,
      defaultExpires: init.defaultExpires ?? DEFAULTS.defaultExpires,
      nodeId: this.nodeId
    })
    if (this.overlay !== undefined) {
      const overlay = this.overlay
      this.replication = new LocationReplicator({
        clock: c.clock,
        logger: this.log,
        location: this.location,
        store: overlay.store,
        self: this.nodeId,
        sipUri: this.overlayInit.sipUri ?? this.defaultSipUri(),
        memberStatus: id => overlay.membership.get(id)?.status,
        ...(this.overlayInit.verifyDelay !== undefined ? { verifyDelay: this.overlayInit.verifyDelay } : {}),
        ...(this.overlayInit.concurrency !== undefined ? { concurrency: this.overlayInit.concurrency } : {}),
        ...(this.overlayInit.trustLocalFor !== undefined ? { trustLocalFor: this.overlayInit.trustLocalFor } : {}),
        ...(this.overlayInit.signer !== undefined ? { signer: this.overlayInit.signer } : {})
      })
    } else {
      this.replication = undefined
    }
    const replication = this.replication
    this.proxy = createProxy({
      stack: this.stack,
      location: replication ?? this.location,
      ...(replication !== undefined ? { nodeRoute: (id: string) => replication.liveRoute(id) } : {}),
      clock: c.clock,
      rng: c.rng.fork('proxy'),
      logger: c.logger, // the proxy adds { component, node } itself
      domains,
      recordRoute: init.recordRoute ?? DEFAULTS.recordRoute,
      aliases,
      nodeId: this.nodeId,
      ...groupsOf(c.accounts, init.groups, c.clock),
      // distributed group forking: fork requests to the members' owner nodes, accepted from peer nodes only
      groupForking: init.groupForking ?? (this.overlay !== undefined ? 'distributed' : 'centralized'),
      ...(this.overlay !== undefined
        ? { owners: ownerResolver(this.overlay), forkPeer: (src: Source) => this.isPeerNode(src.address), localLookup: (aor: string) => this.location.lookup(aor) }
        : {}),
      ...(init.forkTimeout !== undefined ? { timers: { forkTimeout: init.forkTimeout } } : {}),
      ...(init.forkOwnMembers !== undefined ? { forkOwnMembers: init.forkOwnMembers } : {})
    })
    this.auth = this.createAuth(c, init)
    this.overloadGuard = new OverloadGuard(init.overload)
    this.stack.onRequest = (req, tx) => {
      // shed past the bound before any authentication or lookup (ACK/CANCEL never come here)
      if (!this.overloadGuard.enter(req)) { this.respond(tx, this.overloadGuard.reject(req, this.stackTag())); return }
      const done = this.auth !== undefined ? this.authorize(this.auth, req, tx) : this.onRequest(req, tx)
      done.catch((err: unknown) => {
        this.log.error({ err: errText(err), method: req.method, callId: req.get('call-id') }, 'request handling failed; answering 500')
        if (tx.state === 'trying' || tx.state === 'proceeding') this.respond(tx, createResponse(req, 500, 'Server Internal Error', this.stackTag()))
      }).finally(() => { this.overloadGuard.leave() })
    }
    this.stack.onAck = (ack, source) => {
      this.proxy.handleAck(ack, source).catch((err: unknown) => {
        this.log.error({ err: errText(err), callId: ack.get('call-id') }, 'proxy failed on ACK')
      })
    }
    this.stack.onStrayResponse = (res, source) => {
      try {
        this.proxy.handleStrayResponse(res, source)
      } catch (err) {
        this.log.error({ err: errText(err), callId: res.get('call-id') }, 'proxy failed on a stray response')
      }
    }
  }

  private createAuth (c: SuperNodeComponents, init: SuperNodeInit): DigestServer | undefined {
    const a = init.auth
    if (a?.enabled !== true) return undefined
    if (c.accounts === undefined) throw new TypeError('createSuperNode: auth.enabled needs components.accounts')
    const realm = a.realm ?? init.domains?.[0]
    if (realm === undefined) throw new TypeError('createSuperNode: auth.enabled needs auth.realm (or a served domain)')
    const trustedSources = new Set(a.trustedSources ?? [])
    return new DigestServer({
      clock: c.clock,
      rng: c.rng.fork('auth'),
      logger: this.log,
      accounts: c.accounts,
      realm,
      nodeId: this.nodeId, // nonces are bound to this node: nc replays cannot pass at another super node
      ...(a.secret !== undefined ? { secret: a.secret } : {}),
      ...(a.algorithms !== undefined ? { algorithms: a.algorithms } : {}),
      ...(a.nonceTtlMs !== undefined ? { nonceTtlMs: a.nonceTtlMs } : {}),
      ...(a.credentialTtlMs !== undefined ? { credentialTtlMs: a.credentialTtlMs } : {}),
      ...(a.checkIdentity !== undefined ? { checkIdentity: a.checkIdentity } : {}),
      ...(a.limits !== undefined ? { limits: a.limits } : {}),
      // requests relayed by known super nodes of the overlay (Route `<us;lr;sr=local>`) were authenticated there
      trusted: (req, source) => trustedSources.has(source.address) || (/[;]sr=(?:local|fork)\b/i.test(req.get('route') ?? '') && this.isPeerNode(source.address))
    })
  }

  private isPeerNode (address: string): boolean {
    if (this.replication === undefined) return false
    for (const [id, uri] of this.replication.knownNodes()) {
      if (id === this.nodeId) continue
      const m = /^sips?:\[?([^\];>]+?)\]?(?::\d+)?(?:[;>]|$)/.exec(uri)
      if (m !== null && m[1] === address) return true
    }
    return false
  }

  /** Authenticate, then route; the per-user contact limit is checked on REGISTER. */
  private async authorize (auth: DigestServer, req: SipRequest, tx: ServerTransaction): Promise<void> {
    let account: Account | undefined
    try {
      const o = await auth.authenticate(req, tx.source)
      if (o.action === 'respond') { this.respond(tx, o.response); return }
      account = o.account
    } catch (err) {
      this.log.error({ err: errText(err), method: req.method, callId: req.get('call-id') }, 'authentication failed; answering 500')
      this.respond(tx, createResponse(req, 500, 'Server Internal Error (auth)', this.stackTag()))
      return
    }
    if (req.method === 'REGISTER' && account?.maxContacts !== undefined) {
      let aor: string | undefined
      aor = registerAor(req)
      if (aor !== undefined && contactLimitExceeded(req, this.location.lookup(aor), account.maxContacts)) {
        this.respond(tx, createResponse(req, 403, 'Forbidden (too many registered contacts for this user)', this.stackTag()))
        return
      }
    }
    await this.onRequest(req, tx)
  }

  /** Resolves once the request is answered or forwarded (never rejects). */
  private async onRequest (req: SipRequest, tx: ServerTransaction): Promise<void> {
    if (req.method === 'REGISTER') {
      await this.onRegister(req, tx)
      return
    }
    await this.proxy.handleRequest(req, tx).catch((err: unknown) => {
      this.log.error({ err: errText(err), method: req.method, callId: req.get('call-id') }, 'proxy failed on a request')
      this.respond(tx, createResponse(req, 500, 'Server Internal Error', this.stackTag()))
    })
  }

  private async onRegister (req: SipRequest, tx: ServerTransaction): Promise<void> {
    this.registers++
    let res: SipResponse
    try {
      res = await this.registrar.handle(req, tx.source)
    } catch (err) {
      this.registrarErrors++
      this.log.error({ err: errText(err), callId: req.get('call-id'), to: req.get('to') }, 'registrar failed; answering 500')
      res = createResponse(req, 500, 'Server Internal Error (registrar)', this.stackTag())
    }
    // acknowledge a binding change only once the overlay holds it on W replicas
    if (this.replication !== undefined && res.status >= 200 && res.status < 300 && req.has('contact')) {
      const aor = registerAor(req)
      const ok = aor === undefined || await this.replication.settled(aor, { timeoutMs: this.overlayInit.ackTimeout ?? 2000 })
      if (!ok) {
        this.log.warn({ aor, callId: req.get('call-id') }, 'overlay write quorum not reached; answering 503')
        res = createResponse(req, 503, 'Overlay write quorum not reached', this.stackTag())
        res.set('retry-after', '5')
      }
    }
    this.respond(tx, res)
  }

  private respond (tx: ServerTransaction, res: SipResponse): void {
    try {
      tx.respond(res)
    } catch (err) {
      this.log.warn({ err: errText(err), status: res.status }, 'could not send a response')
    }
  }

  private stackTag (): string { return this.tagRng.token(10) }

  /** SIP URI other super nodes use to reach this one: TCP preferred (reliable, keeps flows simple). */
  private defaultSipUri (): string {
    const order = ['tcp', 'tls', 'udp', 'ws', 'wss']
    const t = [...this.transports].sort((a, b) => order.indexOf(a.protocol) - order.indexOf(b.protocol))[0]
    if (t === undefined) return `sip:${this.viaHost ?? '127.0.0.1'}`
    let host = t.local.address
    if ((host === '0.0.0.0' || host === '::') && this.viaHost !== undefined) host = this.viaHost
    if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`
    const scheme = t.protocol === 'tls' || t.protocol === 'wss' ? 'sips' : 'sip'
    return `${scheme}:${host}:${t.local.port}${t.protocol === 'udp' || t.protocol === 'tls' ? '' : `;transport=${t.protocol}`}`
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.location.start()
    try {
      if (this.overlay !== undefined) await this.overlay.start()
      await this.stack.start()
    } catch (err) {
      await this.overlay?.stop().catch(() => {})
      await this.location.stop().catch(() => {})
      throw err
    }
    this.running = true
    this.startedAt = this.clock.now()
    if (this.overlay !== undefined) {
      if (this.overlayInit.sipUri === undefined) this.replication!.setSipUri(this.defaultSipUri()) // ports known now
      const seeds = (this.overlayInit.seeds ?? []).filter(s => s !== this.nodeId)
      if (seeds.length === 0) this.joined = true
      else await this.tryJoin(seeds)
      this.replication!.start()
      const overlay = this.overlay
      const replication = this.replication!
      replication.learnNodes(overlay.membership.view())
      this.unwatch = overlay.membership.on('view:change', ids => { replication.learnNodes(ids) })
    }
    this.log.info({ listeners: this.listeners().map(fmt), ...(this.overlay !== undefined ? { overlay: this.nodeId, sipUri: this.replication!.sipUri } : {}) }, 'super node started')
  }

  /** Join through the seeds; on failure keep serving alone and retry every `rejoinInterval`. */
  private async tryJoin (seeds: PeerId[]): Promise<void> {
    try {
      await this.overlay!.join(seeds)
      this.joined = true
    } catch (err) {
      const every = this.overlayInit.rejoinInterval ?? 5000
      this.log.warn({ seeds, err: errText(err), retryMs: every }, 'could not join the overlay; serving alone for now')
      if (every > 0 && this.running) {
        this.rejoinTimer = this.clock.setTimer(every, () => {
          this.rejoinTimer = undefined
          if (this.running) void this.tryJoin(seeds)
        })
      }
    }
  }

  async stop (opts: { leave?: boolean } = {}): Promise<void> {
    if (!this.running) return
    this.running = false
    let first: unknown
    this.rejoinTimer?.cancel(); this.rejoinTimer = undefined
    this.auth?.close()
    this.unwatch?.(); this.unwatch = undefined
    try { await this.replication?.stop() } catch (err) { first = err; this.log.error({ err: errText(err) }, 'replication stop failed') }
    try { await this.stack.stop() } catch (err) { first ??= err; this.log.error({ err: errText(err) }, 'stack stop failed') }
    if (this.overlay !== undefined) {
      try {
        if (opts.leave ?? true) await this.overlay.leave(); else await this.overlay.stop()
      } catch (err) { first ??= err; this.log.error({ err: errText(err) }, 'overlay stop failed') }
    }
    try { await this.location.stop() } catch (err) { first ??= err; this.log.error({ err: errText(err) }, 'location flush failed') }
    this.log.info({}, 'super node stopped')
    if (first !== undefined) throw first
  }

  private listeners (): Endpoint[] {
    return this.transports.map(t => ({ protocol: t.local.protocol, address: t.local.address, port: t.local.port }))
  }

  status (): SuperNodeStatus {
    const loc = this.location.stats()
    const stack = this.stack.stats()
    return {
      nodeId: this.nodeId,
      startedAt: this.startedAt,
      uptimeMs: this.startedAt === undefined ? 0 : this.clock.now() - this.startedAt,
      running: this.running,
      listeners: this.listeners(),
      aors: loc.aors,
      contacts: loc.contacts,
      transactions: stack.serverTransactions + stack.clientTransactions,
      registers: this.registers,
      registrarErrors: this.registrarErrors,
      stack,
      proxy: this.proxy.stats(),
      ...(this.auth !== undefined ? { auth: this.auth.stats() } : {}),
      overload: this.overloadGuard.stats(),
      ...(this.overlay !== undefined
        ? {
            overlay: {
              self: this.nodeId,
              sipUri: this.replication!.sipUri,
              members: this.overlay.membership.view().length,
              joined: this.joined,
              replication: { ...this.replication!.stats },
              store: (({ items, tombstones }) => ({ items, tombstones }))(this.overlay.store.getStats())
            }
          }
        : {})
    }
  }
}

function fmt (e: Endpoint): string {
  return `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`
}

function errText (err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err)
}

/** Build (not start) a super node from its components. */
export function createSuperNode (components: SuperNodeComponents, init: SuperNodeInit = {}): SuperNode {
  if (components.accounts === undefined && (init.coreNodes?.length ?? 0) > 0) {
    const o = components.overlay
    if (o === undefined || !('network' in o)) throw new TypeError('createSuperNode: coreNodes needs components.overlay with its network')
    components = {
      ...components,
      accounts: new RemoteAccountStore({ ...init.coreAccounts, rpc: overlayAccountRpc(o.network), clock: components.clock, logger: components.logger, cores: init.coreNodes! })
    }
  }
  return new SuperNodeImpl(components, init)
}

/** Group calls: the proxy reads groups from the accounts store when it has them. */
function groupsOf (accounts: SuperNodeComponents['accounts'], limits: Partial<GroupLimits> | undefined, clock: Clock): Pick<ProxyOptions, 'groups' | 'groupLimits'> {
  if (accounts?.getGroup === undefined) return {}
  const store = accounts as GroupStoreLike
  return { groups: new GroupCache(store, clock), ...(limits !== undefined ? { groupLimits: limits } : {}) }
}
