import type { AbortOptions, Clock, Logger, Rng, Startable, Timer } from '@sipring/interface'
import { TypedEmitter } from './events.js'
import {
  OverlayError, type MemberStatus, type MemberUpdate, type OverlayMessage, type OverlayNetwork, type PeerId
} from './network.js'
import type { Ring, RingArc } from './ring.js'

export interface MembershipComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  network: OverlayNetwork
}

export interface MembershipInit {
  /** SWIM protocol period T: one probe per node per period. Default 1000 ms. */
  protocolPeriod?: number
  /** Direct ping timeout (must exceed a round trip). Default 200 ms. */
  pingTimeout?: number
  /** k: members asked to ping a silent target indirectly. Default 3. */
  indirectProbes?: number
  /** Suspicion timeout = suspicionMult × max(1, log10(N)) × T (Lifeguard-style scaling). Default 5. */
  suspicionMult?: number
  /** Each update is piggybacked retransmitMult × ceil(log10(N + 1)) times. Default 4. */
  retransmitMult?: number
  /** At most this many updates ride on one message. Default 16. */
  maxPiggyback?: number
  /** Dead/left members are remembered (so stale gossip cannot resurrect them) this long. Default 300,000 ms. */
  deadRetention?: number
  /** Members told directly on a graceful leave (the rest learn by gossip). Default: all (one message each, once). */
  leaveFanout?: number
  /** Timeout of a join request. Default 2000 ms. */
  joinTimeout?: number
  /**
   * Push-pull period: every this many ms (jittered) exchange the full member list with one random
   * member, so a node that missed some gossip still converges (as memberlist does). 0 disables. Default 30,000 ms.
   */
  syncInterval?: number
}

export interface MemberState {
  id: PeerId
  incarnation: number
  status: MemberStatus
  /** When the status last changed (ms). */
  since: number
}

export interface MembershipEvents {
  /** A member entered the view (joined, or came back after dead/left). */
  'member:join': (id: PeerId) => void
  /** A member left gracefully. */
  'member:leave': (id: PeerId) => void
  /** A member is suspected (still in the view). */
  'member:suspect': (id: PeerId) => void
  /** A suspected member refuted the suspicion. */
  'member:alive': (id: PeerId) => void
  /** A member was declared dead (removed from the view). */
  'member:dead': (id: PeerId) => void
  /** The view (alive + suspect members) changed: the ring must be rebuilt. */
  'view:change': (members: PeerId[]) => void
}

/**
 * What an {@link OverlayNode} needs from a membership service: SWIM ({@link Membership}) in
 * production; a simulator may inject a global membership oracle with modeled detection delays.
 */
export interface MembershipService {
  readonly self: PeerId
  /** Alive + suspect members (self included), sorted. */
  view (): PeerId[]
  get (id: PeerId): MemberState | undefined
  on<K extends keyof MembershipEvents>(event: K, fn: MembershipEvents[K]): () => void
  start (): Promise<void>
  join (seeds: PeerId[], opts?: AbortOptions): Promise<void>
  leave (opts?: AbortOptions): Promise<void>
  stop (): Promise<void>
  /**
   * Optional: the ring this member uses now, for a service that maintains rings itself (a
   * simulator's shared incremental ring). The node then installs it at once on every `view:change`
   * instead of building a ring from `view()`.
   */
  ring?: () => Ring | undefined
  /**
   * Optional, with `ring()`: what changed since the ring installed before, taken once per
   * `view:change` — arcs outside which both rings have the same owners (see {@link Ring.changedArcs}),
   * or undefined when unknown (the store then checks every item).
   */
  takeRingHint?: () => readonly RingArc[] | undefined
}

interface Gossip { update: MemberUpdate, transmits: number }

const inView = (s: MemberStatus): boolean => s === 'alive' || s === 'suspect'

/**
 * SWIM membership with full views (one-hop routing): periodic ping, indirect ping through k members,
 * suspicion with a timeout, incarnation numbers for refutation, dissemination piggybacked on the
 * protocol messages (bounded per message). Everything runs on the injected Clock/Rng/network.
 */
export class Membership extends TypedEmitter<MembershipEvents> implements Startable, MembershipService {
  readonly self: PeerId
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly log: Logger
  private readonly net: OverlayNetwork
  readonly period: number
  readonly pingTimeout: number
  private readonly k: number
  private readonly suspicionMult: number
  private readonly retransmitMult: number
  private readonly maxPiggyback: number
  private readonly deadRetention: number
  private readonly leaveFanout: number
  private readonly joinTimeout: number
  private readonly syncInterval: number
  private syncTimer: Timer | undefined

  private incarnation = 0
  private status: 'idle' | 'running' | 'left' | 'stopped' = 'idle'
  private readonly members = new Map<PeerId, MemberState>()
  private viewSize = 1
  private viewDirty = false
  private viewCache: PeerId[] | undefined
  /** While a leave is being announced: pings are answered with this update so no one suspects us. */
  private leaving: MemberUpdate | undefined
  private readonly gossip = new Map<PeerId, Gossip>()
  private readonly suspicions = new Map<PeerId, Timer>()
  private readonly tombstones: Array<{ at: number, id: PeerId }> = []
  private probeOrder: PeerId[] = []
  private probeIdx = 0
  private timer: Timer | undefined
  private unhandle: (() => void) | undefined
  /** Counters for measurements. */
  readonly stats = { probes: 0, indirect: 0, suspicions: 0, refutations: 0, messages: 0, syncs: 0 }

  constructor (components: MembershipComponents, init: MembershipInit = {}) {
    super()
    this.clock = components.clock
    this.rng = components.rng
    this.net = components.network
    this.self = this.net.self
    this.log = components.logger.child({ component: 'membership', self: this.self })
    this.period = init.protocolPeriod ?? 1000
    this.pingTimeout = init.pingTimeout ?? 200
    this.k = init.indirectProbes ?? 3
    this.suspicionMult = init.suspicionMult ?? 5
    this.retransmitMult = init.retransmitMult ?? 4
    this.maxPiggyback = init.maxPiggyback ?? 16
    this.deadRetention = init.deadRetention ?? 300_000
    this.leaveFanout = init.leaveFanout ?? Number.POSITIVE_INFINITY
    this.joinTimeout = init.joinTimeout ?? 2000
    this.syncInterval = init.syncInterval ?? 30_000
    if (!(this.period > 0) || !(this.pingTimeout > 0) || this.pingTimeout >= this.period) {
      throw new RangeError('need 0 < pingTimeout < protocolPeriod')
    }
    this.onListenerError = err => { this.log.error({ err }, 'membership listener threw') }
  }

  // ------------------------------------------------------------ lifecycle

  /** Start as a one-member cluster and run the protocol; call {@link join} to merge with others. */
  async start (): Promise<void> {
    if (this.status === 'running') return
    this.status = 'running'
    this.viewCache = undefined
    this.unhandle = this.net.onRequest((msg, from) => this.handle(msg, from))
    this.schedule()
    this.scheduleSync()
  }

  /** Stop without telling anyone (a crash, as far as the others can tell). */
  async stop (): Promise<void> {
    if (this.status === 'running') this.status = 'stopped'
    this.viewCache = undefined
    this.timer?.cancel(); this.timer = undefined
    this.syncTimer?.cancel(); this.syncTimer = undefined
    for (const t of this.suspicions.values()) t.cancel()
    this.suspicions.clear()
    this.unhandle?.(); this.unhandle = undefined
    this.leaving = undefined
  }

  /** Join through any of `seeds`: the first that answers sends its member list. */
  async join (seeds: PeerId[], opts: AbortOptions = {}): Promise<void> {
    if (this.status !== 'running') throw new OverlayError('ERR_NOT_STARTED', 'membership is not running')
    let lastErr: unknown = new OverlayError('ERR_NO_SEEDS', 'no seed to join through')
    for (const seed of seeds) {
      if (seed === this.self) continue
      opts.signal?.throwIfAborted()
      try {
        const res = await this.net.send(seed, { type: 'swim.join', self: this.selfUpdate() }, { signal: opts.signal, timeout: this.joinTimeout })
        if (res.type !== 'swim.join-ok') throw new OverlayError('ERR_PROTOCOL', `join answered ${res.type}`)
        // the full list is state, not news: merge it without re-gossiping it
        for (const u of res.members) this.apply(u, false)
        this.enqueue(this.selfUpdate())
        this.log.info({ seed, members: this.viewSize }, 'joined')
        return
      } catch (err) {
        lastErr = err
        this.log.warn({ seed, err: String(err) }, 'join through seed failed')
      }
    }
    throw lastErr
  }

  /** Leave gracefully: tell a few members (they gossip it), then stop. */
  async leave (opts: AbortOptions = {}): Promise<void> {
    if (this.status !== 'running') return
    this.status = 'left'
    this.viewCache = undefined
    this.incarnation++
    const update: MemberUpdate = { id: this.self, incarnation: this.incarnation, status: 'left' }
    this.leaving = update
    const targets = this.pick(this.aliveOthers(), this.leaveFanout)
    await Promise.allSettled(targets.map(t => this.net.send(t, { type: 'swim.leave', update }, { signal: opts.signal, timeout: this.period })))
    await this.stop()
  }

  // ------------------------------------------------------------ view

  /** The current view: alive and suspect members, self included, sorted. */
  view (): PeerId[] {
    if (this.viewCache === undefined) {
      const out: PeerId[] = this.status === 'running' ? [this.self] : []
      for (const m of this.members.values()) if (inView(m.status)) out.push(m.id)
      this.viewCache = out.sort()
    }
    return [...this.viewCache]
  }

  /** State of a member (self included), or undefined if unknown/forgotten. */
  get (id: PeerId): MemberState | undefined {
    if (id === this.self) return { id, incarnation: this.incarnation, status: this.status === 'running' ? 'alive' : 'left', since: 0 }
    const m = this.members.get(id)
    return m === undefined ? undefined : { ...m }
  }

  get currentIncarnation (): number { return this.incarnation }

  /** Number of updates waiting to be piggybacked. */
  get pendingGossip (): number { return this.gossip.size }

  suspicionTimeout (): number {
    return this.suspicionMult * Math.max(1, Math.log10(this.viewSize)) * this.period
  }

  // ------------------------------------------------------------ protocol: probing

  private schedule (): void {
    if (this.status !== 'running') return
    this.timer = this.clock.setTimer(this.period, () => { this.tick() })
  }

  private scheduleSync (): void {
    if (this.status !== 'running' || this.syncInterval <= 0) return
    this.syncTimer = this.clock.setTimer(this.syncInterval * (0.75 + this.rng.next() * 0.5), () => {
      void this.sync().finally(() => { this.scheduleSync() })
    })
  }

  /** One push-pull exchange of the full member list with `peer` (default: a random alive member). */
  async sync (peer?: PeerId): Promise<boolean> {
    const target = peer ?? this.pick(this.aliveOthers(), 1)[0]
    if (target === undefined || this.status !== 'running') return false
    try {
      const res = await this.net.send(target, { type: 'swim.sync', members: this.fullState() }, { timeout: this.period })
      if (res.type !== 'swim.sync-ok') return false
      this.stats.syncs++
      this.merge(res.members)
      return true
    } catch {
      return false
    }
  }

  private fullState (): MemberUpdate[] {
    const out: MemberUpdate[] = [this.selfUpdate()]
    for (const m of this.members.values()) out.push({ id: m.id, incarnation: m.incarnation, status: m.status })
    return out
  }

  private tick (): void {
    if (this.status !== 'running') return
    this.schedule()
    this.pruneTombstones()
    const target = this.nextTarget()
    if (target !== undefined) void this.probe(target)
  }

  private nextTarget (): PeerId | undefined {
    for (let pass = 0; pass < 2; pass++) {
      while (this.probeIdx < this.probeOrder.length) {
        const id = this.probeOrder[this.probeIdx++]!
        const m = this.members.get(id)
        if (m !== undefined && inView(m.status)) return id
      }
      // round-robin over a fresh random permutation (SWIM §4.3: bounded time to first detection)
      this.probeOrder = this.shuffle([...this.members.values()].filter(m => inView(m.status)).map(m => m.id))
      this.probeIdx = 0
    }
    return undefined
  }

  private async probe (target: PeerId): Promise<void> {
    this.stats.probes++
    const incarnation = this.members.get(target)?.incarnation ?? 0
    if (await this.ping(target, this.pingTimeout)) return
    if (this.status !== 'running') return
    const helpers = this.pick(this.aliveOthers().filter(id => id !== target), this.k)
    let ok = false
    if (helpers.length > 0) {
      this.stats.indirect++
      const remaining = this.period - this.pingTimeout
      const tries = helpers.map(async h => {
        try {
          const res = await this.request(h, { type: 'swim.ping-req', target, updates: this.piggyback() }, remaining)
          if (res.type === 'swim.ack') ok = true
        } catch { /* helper silent too */ }
      })
      await Promise.all(tries)
    }
    if (ok || this.status !== 'running') return
    const m = this.members.get(target)
    if (m !== undefined && m.status === 'alive' && m.incarnation === incarnation) {
      this.log.debug({ target }, 'no ack, suspecting')
      this.apply({ id: target, incarnation, status: 'suspect' })
    }
  }

  /** Direct ping; true when acked. */
  private async ping (target: PeerId, timeout: number): Promise<boolean> {
    try {
      const res = await this.request(target, { type: 'swim.ping', updates: this.piggyback() }, timeout)
      return res.type === 'swim.ack'
    } catch {
      return false
    }
  }

  private async request (to: PeerId, msg: OverlayMessage, timeout: number): Promise<OverlayMessage> {
    this.stats.messages++
    const res = await this.net.send(to, msg, { timeout })
    if ('updates' in res) this.merge(res.updates)
    return res
  }

  // ------------------------------------------------------------ protocol: handling

  private async handle (msg: OverlayMessage, from: PeerId): Promise<OverlayMessage | undefined> {
    if (this.status === 'left' && this.leaving !== undefined && (msg.type === 'swim.ping' || msg.type === 'swim.ping-req')) {
      return { type: 'swim.ack', updates: [this.leaving] }
    }
    if (this.status !== 'running') return undefined
    switch (msg.type) {
      case 'swim.ping':
        this.merge(msg.updates)
        return { type: 'swim.ack', updates: this.piggyback() }
      case 'swim.ping-req': {
        this.merge(msg.updates)
        const ok = msg.target === this.self || await this.ping(msg.target, this.pingTimeout)
        return { type: ok ? 'swim.ack' : 'swim.nack', updates: this.piggyback() }
      }
      case 'swim.join': {
        const u = msg.self
        if (u.id !== from) return { type: 'error', code: 'ERR_PROTOCOL', message: 'join for another peer' }
        const cur = this.members.get(u.id)
        // a restarted node does not know its last incarnation: lift it above what we remember
        const incarnation = cur !== undefined && cur.incarnation >= u.incarnation && !(cur.status === 'alive' && cur.incarnation === u.incarnation)
          ? cur.incarnation + 1
          : u.incarnation
        this.apply({ id: u.id, incarnation, status: 'alive' })
        return { type: 'swim.join-ok', members: this.fullState() }
      }
      case 'swim.sync':
        this.stats.syncs++
        this.merge(msg.members)
        return { type: 'swim.sync-ok', members: this.fullState() }
      case 'swim.leave':
        if (msg.update.id !== from || msg.update.status !== 'left') return { type: 'error', code: 'ERR_PROTOCOL', message: 'bad leave' }
        this.apply(msg.update)
        return { type: 'swim.ack', updates: [] }
      default:
        return undefined
    }
  }

  private merge (updates: MemberUpdate[]): void {
    for (const u of updates) this.apply(u)
  }

  private selfUpdate (): MemberUpdate {
    return { id: this.self, incarnation: this.incarnation, status: 'alive' }
  }

  /** Apply one membership fact with SWIM precedence; returns true when it changed the state. */
  private apply (u: MemberUpdate, gossip = true): boolean {
    if (u.id === this.self) {
      if (this.status !== 'running') return false
      const refute = (u.status !== 'alive' && u.incarnation >= this.incarnation) || (u.status === 'alive' && u.incarnation > this.incarnation)
      if (refute) {
        this.incarnation = u.status === 'alive' ? u.incarnation : u.incarnation + 1
        if (u.status !== 'alive') this.stats.refutations++
        this.log.debug({ about: u, incarnation: this.incarnation }, 'refuting')
        this.enqueue(this.selfUpdate())
      }
      return refute
    }
    const cur = this.members.get(u.id)
    const now = this.clock.now()
    if (cur === undefined) {
      this.members.set(u.id, { id: u.id, incarnation: u.incarnation, status: u.status, since: now })
      if (gossip) this.enqueue(u)
      if (inView(u.status)) {
        this.viewSize++
        this.addToProbeOrder(u.id)
        this.emit('member:join', u.id)
        if (u.status === 'suspect') this.startSuspicion(u.id, u.incarnation)
        this.viewChanged()
      } else {
        this.tombstones.push({ at: now, id: u.id })
      }
      return true
    }
    if (!overrides(u, cur)) return false
    const before = cur.status
    cur.incarnation = u.incarnation
    cur.status = u.status
    cur.since = now
    if (gossip) this.enqueue(u)
    switch (u.status) {
      case 'alive':
        this.cancelSuspicion(u.id)
        if (before === 'suspect') this.emit('member:alive', u.id)
        else if (!inView(before)) { this.viewSize++; this.addToProbeOrder(u.id); this.emit('member:join', u.id); this.viewChanged() }
        break
      case 'suspect':
        if (before === 'alive') this.stats.suspicions++
        this.startSuspicion(u.id, u.incarnation)
        if (before === 'alive') this.emit('member:suspect', u.id)
        break
      case 'dead': case 'left':
        this.cancelSuspicion(u.id)
        this.tombstones.push({ at: now, id: u.id })
        if (inView(before)) {
          this.viewSize--
          this.emit(u.status === 'dead' ? 'member:dead' : 'member:leave', u.id)
          this.viewChanged()
        }
        break
    }
    return true
  }

  /** Coalesces the view changes of one batch (e.g. a join answer with N members) into one event. */
  /** SWIM §4.3: a new member goes to a random position of the rest of the current round. */
  private addToProbeOrder (id: PeerId): void {
    const lo = this.probeIdx
    const at = lo + this.rng.int(this.probeOrder.length - lo + 1)
    this.probeOrder.splice(at, 0, id)
  }

  private viewChanged (): void {
    this.viewCache = undefined
    if (this.viewDirty) return
    this.viewDirty = true
    queueMicrotask(() => {
      this.viewDirty = false
      this.emit('view:change', this.view())
    })
  }

  private startSuspicion (id: PeerId, incarnation: number): void {
    this.suspicions.get(id)?.cancel()
    this.suspicions.set(id, this.clock.setTimer(this.suspicionTimeout(), () => {
      this.suspicions.delete(id)
      const m = this.members.get(id)
      if (this.status === 'running' && m !== undefined && m.status === 'suspect' && m.incarnation === incarnation) {
        this.log.info({ id }, 'suspicion timed out: dead')
        this.apply({ id, incarnation, status: 'dead' })
      }
    }))
  }

  private cancelSuspicion (id: PeerId): void {
    this.suspicions.get(id)?.cancel()
    this.suspicions.delete(id)
  }

  private pruneTombstones (): void {
    const limit = this.clock.now() - this.deadRetention
    while (this.tombstones.length > 0 && this.tombstones[0]!.at <= limit) {
      const { id } = this.tombstones.shift()!
      const m = this.members.get(id)
      if (m !== undefined && !inView(m.status) && m.since <= limit) this.members.delete(id)
    }
  }

  // ------------------------------------------------------------ dissemination

  private enqueue (u: MemberUpdate): void {
    this.gossip.set(u.id, { update: { ...u }, transmits: 0 })
  }

  private retransmitLimit (): number {
    return this.retransmitMult * Math.max(1, Math.ceil(Math.log10(this.viewSize + 1)))
  }

  /** Up to maxPiggyback updates, least transmitted first; each is dropped after its retransmit limit. */
  private piggyback (): MemberUpdate[] {
    if (this.gossip.size === 0) return []
    const limit = this.retransmitLimit()
    const all = [...this.gossip.values()].sort((a, b) => a.transmits - b.transmits)
    const out: MemberUpdate[] = []
    for (const g of all.slice(0, this.maxPiggyback)) {
      out.push(g.update)
      if (++g.transmits >= limit) this.gossip.delete(g.update.id)
    }
    return out
  }

  // ------------------------------------------------------------ helpers

  private aliveOthers (): PeerId[] {
    const out: PeerId[] = []
    for (const m of this.members.values()) if (m.status === 'alive') out.push(m.id)
    return out
  }

  private pick (ids: PeerId[], n: number): PeerId[] {
    return this.shuffle(ids).slice(0, n)
  }

  private shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1)
      ;[a[i], a[j]] = [a[j]!, a[i]!]
    }
    return a
  }
}

/** SWIM precedence: does update `u` override the current state `cur` of the same member? */
export function overrides (u: MemberUpdate, cur: { incarnation: number, status: MemberStatus }): boolean {
  switch (u.status) {
    case 'alive':
      return u.incarnation > cur.incarnation
    case 'suspect':
      return (cur.status === 'alive' && u.incarnation >= cur.incarnation) || (cur.status === 'suspect' && u.incarnation > cur.incarnation)
    case 'dead': case 'left':
      return inView(cur.status) ? u.incarnation >= cur.incarnation : u.incarnation > cur.incarnation
  }
}

export function createMembership (components: MembershipComponents, init?: MembershipInit): Membership {
  return new Membership(components, init)
}
