import type { AbortOptions, Clock, Logger, Rng, Startable, Timer } from '@sipring/interface'
import { Membership, type MembershipInit, type MembershipService } from './membership.js'
import type { OverlayNetwork, PeerId } from './network.js'
import { RingFactory, type Hasher, type Ring } from './ring.js'
import { ReplicatedStore, type StoreDb, type StoreInit } from './store.js'

export interface OverlayNodeComponents<M extends MembershipService = Membership> {
  clock: Clock
  rng: Rng
  logger: Logger
  network: OverlayNetwork
  hasher: Hasher
  /** Shared ring factory (interns rings: simulated nodes with equal views share one). Default: a private one. */
  ringFactory?: RingFactory
  db?: StoreDb
  /**
   * Membership to use instead of SWIM (e.g. a simulator's global oracle). When it provides `ring()`,
   * the node installs that ring at every `view:change` (no rebuild, no delay).
   */
  membership?: M
}

export interface OverlayNodeInit {
  /** Virtual nodes per member when no ringFactory is given. */
  vnodes?: number
  /**
   * Ring rebuilds are coalesced: the first view change schedules one rebuild this many ms later
   * (from the view at that time), so a burst of joins costs one ring and one handoff. Default 200 ms.
   */
  ringUpdateDelay?: number
  membership?: MembershipInit
  store?: StoreInit
}

/** Membership → ring → store, wired: every view change rebuilds the ring and triggers handoff. */
export class OverlayNode<V, M extends MembershipService = Membership> implements Startable {
  readonly membership: M
  readonly store: ReplicatedStore<V>
  private readonly rings: RingFactory
  private current: Ring
  private readonly clock: Clock
  private readonly ringDelay: number
  private ringTimer: Timer | undefined

  constructor (components: OverlayNodeComponents<M>, init: OverlayNodeInit = {}) {
    const { clock, rng, logger, network, hasher } = components
    this.rings = components.ringFactory ?? new RingFactory(hasher, { vnodes: init.vnodes })
    this.membership = components.membership ?? new Membership({ clock, rng: rng.fork('membership'), logger, network }, init.membership) as unknown as M
    this.store = new ReplicatedStore<V>({ clock, rng: rng.fork('store'), logger, network, hasher, db: components.db }, init.store)
    this.current = this.membership.ring?.() ?? this.rings.of([network.self])
    this.clock = clock
    this.ringDelay = init.ringUpdateDelay ?? 200
    if (this.membership.ring !== undefined) this.membership.on('view:change', () => { this.adoptRing() })
    else this.membership.on('view:change', () => { this.scheduleRing() })
  }

  /** Install the ring the injected membership provides (it models the delays itself). */
  private adoptRing (): void {
    const ring = this.membership.ring?.()
    const changed = this.membership.takeRingHint?.()
    if (ring === undefined || ring === this.current || ring.size === 0) return
    this.current = ring
    this.store.setRing(ring, { changed })
  }

  get self (): PeerId { return this.membership.self }
  get ring (): Ring { return this.current }

  /** Is a ring rebuild scheduled but not done yet? */
  get ringPending (): boolean { return this.ringTimer !== undefined }

  private scheduleRing (): void {
    if (this.ringTimer !== undefined) return
    this.ringTimer = this.clock.setTimer(this.ringDelay, () => {
      this.ringTimer = undefined
      this.updateRing(this.membership.view())
    })
  }

  private updateRing (view: PeerId[]): void {
    if (view.length === 0) return
    const ring = this.rings.of(view, this.current)
    if (ring === this.current) return
    this.current = ring
    this.store.setRing(ring)
  }

  async start (): Promise<void> {
    await this.store.start()
    this.store.setRing(this.current)
    await this.membership.start()
  }

  async join (seeds: PeerId[], opts?: AbortOptions): Promise<void> {
    await this.membership.join(seeds, opts)
  }

  /** Graceful leave: announce it, hand every item to the ring without this node, then stop. */
  async leave (opts?: AbortOptions): Promise<void> {
    this.ringTimer?.cancel(); this.ringTimer = undefined
    if (this.membership.ring !== undefined) {
      // the injected membership takes this node out of its ring; hand everything to the ring without us
      await this.membership.leave(opts)
      this.adoptRing()
      await this.store.settled()
      await this.store.stop()
      return
    }
    const without = this.rings.of(this.membership.view().filter(m => m !== this.self), this.current)
    await this.membership.leave(opts)
    if (without.size > 0) {
      this.current = without
      this.store.setRing(without)
      await this.store.settled()
    }
    await this.store.stop()
  }

  /** Stop without announcing anything (what a crash looks like to the others). */
  async stop (): Promise<void> {
    this.ringTimer?.cancel(); this.ringTimer = undefined
    await this.membership.stop()
    await this.store.stop()
  }
}

export function createOverlayNode<V, M extends MembershipService = Membership> (components: OverlayNodeComponents<M>, init?: OverlayNodeInit): OverlayNode<V, M> {
  return new OverlayNode<V, M>(components, init)
}
