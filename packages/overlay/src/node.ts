import type { AbortOptions, Clock, Logger, Rng, Startable, Timer } from '@sipring/interface'
import { Membership, type MembershipInit } from './membership.js'
import type { OverlayNetwork, PeerId } from './network.js'
import { RingFactory, type Hasher, type Ring } from './ring.js'
import { ReplicatedStore, type StoreDb, type StoreInit } from './store.js'

export interface OverlayNodeComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  network: OverlayNetwork
  hasher: Hasher
  /** Shared ring factory (interns rings: simulated nodes with equal views share one). Default: a private one. */
  ringFactory?: RingFactory
  db?: StoreDb
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
export class OverlayNode<V> implements Startable {
  readonly membership: Membership
  readonly store: ReplicatedStore<V>
  private readonly rings: RingFactory
  private current: Ring
  private readonly clock: Clock
  private readonly ringDelay: number
  private ringTimer: Timer | undefined

  constructor (components: OverlayNodeComponents, init: OverlayNodeInit = {}) {
    const { clock, rng, logger, network, hasher } = components
    this.rings = components.ringFactory ?? new RingFactory(hasher, { vnodes: init.vnodes })
    this.membership = new Membership({ clock, rng: rng.fork('membership'), logger, network }, init.membership)
    this.store = new ReplicatedStore<V>({ clock, rng: rng.fork('store'), logger, network, hasher, db: components.db }, init.store)
    this.current = this.rings.of([network.self])
    this.clock = clock
    this.ringDelay = init.ringUpdateDelay ?? 200
    this.membership.on('view:change', () => { this.scheduleRing() })
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

export function createOverlayNode<V> (components: OverlayNodeComponents, init?: OverlayNodeInit): OverlayNode<V> {
  return new OverlayNode<V>(components, init)
}
