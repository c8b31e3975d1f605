/**
 * Scale mode (`overlay.membership: oracle`): one global membership service for the whole simulation,
 * like OverSim's global observer. Failure detection and dissemination are *modeled* (delays sampled
 * from distributions calibrated against real SWIM runs, see docs/simulation.md); the ring, the
 * replicated store, its handoff, anti-entropy and routing are sipring's production code.
 *
 * All nodes share one {@link LiveRing} (a chunked sorted array of token positions: a join or leave
 * costs O(vnodes · log N), not a rebuild). Each node reads it through its own {@link RingHandle}.
 * When a member joins, leaves or is detected dead, only the members whose replicated ranges change
 * (`affectedBy`: at most (2R−1)·vnodes ring neighbours, those holding data) get any work: their handle is pinned to a snapshot
 * of the ring before the change, and after their own sampled learning delay they install a fresh
 * handle on the live ring, so their store's handoff sees exactly the old → new difference. Everybody
 * else keeps serving on the live ring and does nothing.
 */
import type { AbortOptions, Clock, Rng, Timer } from '@sipring/interface'
import {
  LiveRing, OverlayError, Ring, RingMinus, RingPlus, TypedEmitter, type RingArc, type RingHandle, type Hasher, type MemberState, type MembershipEvents,
  type MembershipService, type PeerId
} from '@sipring/overlay'
import type { Distribution } from './churn.js'

export interface OracleDelays {
  /** A joiner's join request → answer (it then has the full view). */
  joinRtt: Distribution
  /** After a join: when each affected neighbour learns of it. */
  joinSpread: Distribution
  /** After a graceful leave announcement: when each affected neighbour learns of it. */
  leaveSpread: Distribution
  /** Crash → the first member declares it dead (the global view drops it then). */
  crashDetect: Distribution
  /** After that first detection: when each affected neighbour has removed it. */
  crashSpread: Distribution
}

export interface OracleInit {
  clock: Clock
  rng: Rng
  hasher: Hasher
  vnodes: number
  replicas: number
  delays: OracleDelays
  /** Is the peer's process reachable now (the network's view, for join seeds)? */
  isUp: (id: PeerId) => boolean
  /**
   * Does the peer hold any item? A member without items has nothing to hand off: it just follows the
   * live ring (no pin, no delayed switch). Default: every member is told.
   */
  hasData?: (id: PeerId) => boolean
}

export interface OracleStats {
  joins: number
  leaves: number
  crashes: number
  detections: number
  /** Members told of a change (handoff work), summed over changes. */
  notices: number
  /** Changes (ring mutations). */
  changes: number
}

interface Pending { at: number, timer: Timer }


/** The global membership service; {@link MembershipOracle.member} gives each node its view of it. */
export class MembershipOracle {
  readonly ring: LiveRing
  readonly stats: OracleStats = { joins: 0, leaves: 0, crashes: 0, detections: 0, notices: 0, changes: 0 }
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly R: number
  private readonly delays: OracleDelays
  private readonly isUp: (id: PeerId) => boolean
  private readonly hasher: Hasher
  private readonly hasData: (id: PeerId) => boolean
  /** The current process of each id (the latest OracleMembership created for it). */
  private readonly nodes = new Map<PeerId, OracleMembership>()
  /** Members still in the live ring whose crash or leave the crowd has not learnt of yet. */
  private readonly removals = new Map<PeerId, Timer>()
  /** Members whose handle is pinned, with the time they switch to the live ring. */
  private readonly pending = new Map<PeerId, Pending>()

  constructor (init: OracleInit) {
    this.clock = init.clock
    this.rng = init.rng
    this.R = init.replicas
    this.delays = init.delays
    this.isUp = init.isUp
    this.hasher = init.hasher
    this.hasData = init.hasData ?? (() => true)
    this.ring = new LiveRing(init.hasher, { vnodes: init.vnodes })
  }

  /** The membership service of a (new) process `id`. */
  member (id: PeerId): OracleMembership {
    const m = new OracleMembership(this, id)
    this.nodes.set(id, m)
    return m
  }

  get pendingNotices (): number { return this.pending.size }

  /** @internal a one-member ring (a started process before its join). */
  alone (id: PeerId): Ring { return new Ring(this.hasher, [id], { vnodes: this.ring.vnodes }) }

  /** @internal a process starts: with nobody in the ring it forms the overlay alone (as SWIM's start). */
  started (m: OracleMembership): void {
    if (this.ring.size === 0 && !this.removals.has(m.self)) this.change(m.self, 'add', undefined, 0, m)
  }

  /**
   * @internal The joiner gets the full view at once (a private ring: the live ring plus itself); the
   * others learn of it after joinSpread: the live ring (everybody who is not a ring neighbour) after
   * one sample d, each neighbour after max(its own sample, d) — so a neighbour hands data to the
   * joiner no earlier than the crowd starts routing to it, as when both learn from the same gossip.
   */
  async join (m: OracleMembership, seeds: PeerId[], opts: AbortOptions): Promise<void> {
    const rtt = this.delays.joinRtt.sample(this.rng)
    await new Promise<void>((resolve, reject) => {
      const timer = this.clock.setTimer(rtt, () => { opts.signal?.removeEventListener('abort', onAbort); resolve() })
      const onAbort = (): void => { timer.cancel(); reject(new OverlayError('ERR_ABORTED', 'join aborted')) }
      opts.signal?.addEventListener('abort', onAbort, { once: true })
    })
    if (this.nodes.get(m.self) !== m || m.status !== 'running') throw new OverlayError('ERR_NOT_STARTED', 'stopped while joining')
    if (!seeds.some(s => s !== m.self && this.isUp(s) && this.ring.has(s))) throw new OverlayError('ERR_JOIN_FAILED', `no seed answered (${seeds.join(', ')})`)
    this.stats.joins++
    const id = m.self
    const removal = this.removals.get(id)
    if (removal !== undefined || this.ring.has(id)) {
      // back before the others noticed it was gone: the view does not change (as in SWIM, same id)
      removal?.cancel(); this.removals.delete(id)
      m.follow(this.ring)
      return
    }
    // its own view: the live ring plus itself (follows every change, copies nothing)
    m.usePrivate(this.ring.plus(id))
    const d = this.delays.joinSpread.sample(this.rng)
    this.clock.setTimer(d, () => {
      if (this.nodes.get(id) === m && m.status === 'running' && !this.ring.has(id)) this.change(id, 'add', this.delays.joinSpread, d, m)
    })
  }

  /** @internal graceful leave: the leaver hands off at once; the others learn after leaveSpread. */
  leave (m: OracleMembership): void {
    const id = m.self
    if (this.nodes.get(id) !== m) return
    if (!this.ring.has(id) || this.removals.has(id)) {
      // nobody knows it yet (join still spreading): just hand what it holds to the live ring
      if (!m.pinnable()) m.usePrivate(this.ring.handle())
      return
    }
    this.stats.leaves++
    m.usePrivate(this.ring.minus(id))
    const d = this.delays.leaveSpread.sample(this.rng)
    this.removals.set(id, this.clock.setTimer(d, () => {
      this.removals.delete(id)
      if (this.ring.has(id)) this.change(id, 'remove', this.delays.leaveSpread, d, undefined)
    }))
  }

  /**
   * @internal The process stopped without a word: first declared dead after crashDetect; the live
   * ring drops it crashSpread (one sample d) later, each neighbour after max(its own sample, d).
   */
  crashed (m: OracleMembership): void {
    const id = m.self
    if (this.nodes.get(id) !== m || !this.ring.has(id) || this.removals.has(id)) return
    this.stats.crashes++
    const d = this.delays.crashSpread.sample(this.rng)
    this.removals.set(id, this.clock.setTimer(this.delays.crashDetect.sample(this.rng) + d, () => {
      this.removals.delete(id)
      if (!this.ring.has(id)) return
      this.stats.detections++
      this.change(id, 'remove', this.delays.crashSpread, d, undefined)
    }))
  }

  /**
   * One ring change, at the moment the crowd learns of it: pin the affected members (ring neighbours
   * holding data) to the ring as it is, change the live ring, and let each affected member switch to
   * the live ring max(0, its own sample − `crowd`) later. `self` (a joiner) follows the live ring at once.
   */
  private change (id: PeerId, op: 'add' | 'remove', spread: Distribution | undefined, crowd: number, self: OracleMembership | undefined): void {
    const affected = spread === undefined ? [] : this.ring.affectedBy(id, this.R).filter(a => this.hasData(a))
    // where owner sets change (computed on the ring holding `id`: before a remove, after an add)
    let arcs: readonly RingArc[] | undefined = op === 'remove' && affected.length > 0 ? this.ring.changedArcs(id, this.R) : undefined
    // the ring as the affected members still see it: the live ring with this change undone (a view
    // that copies nothing and follows every other change, which does not move their items)
    let before: Ring | undefined
    for (const a of affected) {
      const n = this.nodes.get(a)
      if (n === undefined || n.status !== 'running') continue
      before ??= op === 'add' ? new RingMinus(this.ring, id) : new RingPlus(this.ring, id)
      // a member still behind on an earlier change learns it now (so its view lags by one change at
      // most, as a SWIM member hears gossip continuously), with a handoff; one that was up to date
      // just keeps serving (its handoff is told nothing changed)
      n.usePrivate(before, true)
    }
    if (op === 'add') this.ring.add(id); else this.ring.remove(id)
    if (op === 'add' && affected.length > 0) arcs = this.ring.changedArcs(id, this.R)
    this.stats.changes++
    if (self !== undefined && self.status === 'running') self.follow(this.ring)
    if (spread === undefined) return
    const now = this.clock.now()
    for (const a of affected) {
      const n = this.nodes.get(a)
      if (n === undefined || n.status !== 'running') continue
      this.stats.notices++
      n.changedBy(arcs)
      const at = now + Math.max(0, spread.sample(this.rng) - crowd)
      this.pending.get(a)?.timer.cancel()
      this.pending.set(a, {
        at,
        timer: this.clock.setTimer(at - now, () => {
          this.pending.delete(a)
          const cur = this.nodes.get(a)
          if (cur !== undefined && cur.status === 'running') cur.follow(this.ring)
        })
      })
    }
  }

  /** @internal */
  forget (m: OracleMembership): void {
    const p = this.pending.get(m.self)
    if (p !== undefined && this.nodes.get(m.self) === m) { p.timer.cancel(); this.pending.delete(m.self) }
  }
}

/**
 * One process's membership service in oracle mode: the view is the global one (as seen through its
 * ring handle), `ring()` is what OverlayNode installs on every `view:change`.
 */
export class OracleMembership extends TypedEmitter<MembershipEvents> implements MembershipService {
  status: 'idle' | 'running' | 'left' | 'stopped' = 'idle'
  /** Set while it reads the live ring (possibly pinned to a snapshot); undefined with a view of its own. */
  private handle: RingHandle | undefined
  /** The ring it uses (the handle, or a view of its own). */
  private current: Ring | undefined
  /** Before joining: a one-member ring of this process. */
  private alone: Ring | undefined
  /**
   * Arcs of the changes since the ring installed last that this member was told of (undefined: not
   * tracked — a private view — so its next switch walks every item). A change it is not told of
   * does not change the owners of anything it owns (see MembershipOracle.change).
   */
  private since: RingArc[] | undefined
  /** The hint for the `view:change` being emitted (taken by OverlayNode). */
  private hint: readonly RingArc[] | undefined

  constructor (private readonly oracle: MembershipOracle, readonly self: PeerId) { super() }

  ring (): Ring | undefined { return this.current ?? this.alone }

  takeRingHint (): readonly RingArc[] | undefined { const h = this.hint; this.hint = undefined; return h }

  /** @internal a change this member was told of: its arcs count for its next switch. */
  changedBy (arcs: readonly RingArc[] | undefined): void {
    if (this.since === undefined) return
    if (arcs === undefined) this.since = undefined; else for (const a of arcs) this.since.push(a)
  }

  view (): PeerId[] { return [...(this.ring()?.members ?? [this.self])] }

  get (id: PeerId): MemberState | undefined {
    const r = this.ring()
    if (r === undefined || !r.has(id)) return undefined
    return { id, incarnation: 0, status: 'alive', since: 0 }
  }

  async start (): Promise<void> {
    if (this.status === 'running') return
    this.status = 'running'
    this.alone = this.oracle.alone(this.self)
    this.oracle.started(this)
  }

  async join (seeds: PeerId[], opts: AbortOptions = {}): Promise<void> {
    if (this.status !== 'running') throw new OverlayError('ERR_NOT_STARTED', 'membership is not running')
    await this.oracle.join(this, seeds, opts)
  }

  async leave (_opts: AbortOptions = {}): Promise<void> {
    if (this.status !== 'running') return
    this.oracle.leave(this)
    this.status = 'left'
    this.oracle.forget(this)
  }

  async stop (): Promise<void> {
    if (this.status === 'running') this.oracle.crashed(this)
    if (this.status !== 'left') this.status = 'stopped'
    this.oracle.forget(this)
  }

  /** @internal does this member follow the live ring (up to date on every change)? */
  pinnable (): boolean { return this.handle !== undefined && this.handle.follows(this.oracle.ring) }

  /**
   * @internal a view of its own (a joiner before the others know it, a leaver, a member that has not
   * learnt of a change yet): the store hands off to it. `tracked`: `ring` is the live ring with one
   * change undone, so the changes this member is told of from here on describe its next switch (and
   * what it was told of so far, nothing when it followed the live ring, describes this one).
   */
  usePrivate (ring: Ring, tracked = false): void {
    this.handle = undefined
    this.current = ring
    this.hint = tracked ? this.since : undefined
    this.since = tracked ? [] : undefined
    this.emit('view:change', [])
    this.hint = undefined
  }

  /** @internal learnt of every change so far: a fresh handle on the live ring (the store hands off old → new). */
  follow (live: LiveRing): void {
    if (this.handle !== undefined && this.handle.follows(live)) return
    this.handle = live.handle()
    this.current = this.handle
    this.hint = this.since
    this.since = []
    this.emit('view:change', [])
    this.hint = undefined
  }
}
