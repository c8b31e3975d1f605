/**
 * The "node under test" behind a small adapter, so the engine can later drive `createSuperNode()`
 * instead of a bare overlay node without changing the churn, workload or metrics code.
 */
import type { Clock, Logger, Rng, Timer } from '@sipring/interface'
import type { MembershipOracle } from './oracle.js'
import {
  OverlayNode, SimOverlayHub, type Hasher, type MembershipService, type OverlayMessage, type OverlayNodeInit, type PeerId,
  type RingFactory, type SendOptions, type SimOverlayInit
} from '@sipring/overlay'

/** A registration as the workload stores it: the contact and the client's write sequence number. */
export interface RegValue { c: string, s: number }

export interface SimNode<V = RegValue> {
  readonly id: string
  /** Start the process (a one-member overlay until {@link join}). */
  start (): Promise<void>
  /** Join through any of `seeds`. */
  join (seeds: string[]): Promise<void>
  /** Graceful leave (hand data over, tell peers). */
  leave (): Promise<void>
  /** Vanish without a word (process crash / host failure). */
  crash (): Promise<void>
  put (key: string, value: V, ttl: number, signal?: AbortSignal): Promise<void>
  get (key: string, signal?: AbortSignal): Promise<V | undefined>
  /** This node's local replica of `key`, without network (for the oracle's checks). */
  local (key: string): V | undefined
  /** Optional: the write sequence number `s` of the local replica of `key` (what the checkers compare), without decoding the whole value. */
  localSeq? (key: string): number | undefined
  /** Number of live items stored locally (replicas counted). */
  localItems (): number
  /** Size of the node's current membership view. */
  viewSize (): number
  /** Has this node ever stored an item? (cheap; scale mode skips handoff notices to nodes without data) */
  holdsData? (): boolean
}

export interface NodeFactory<V = RegValue> {
  create (id: string, rng: Rng): SimNode<V>
  /** The overlay store key of a workload key, for the oracle's owners (default: the key itself). */
  storeKey?: (key: string) => string
}

/** Per message type: count and serialized bytes (JSON, as a wire-size proxy). */
export interface TypeCounter { count: number, bytes: number }

/**
 * A SimOverlayHub that counts every request a live node sends and every response delivered, by
 * message type, with its JSON size in bytes (sampled, see {@link InstrumentedHub.byteSampleEvery}).
 */
export class InstrumentedHub extends SimOverlayHub {
  readonly traffic = new Map<string, TypeCounter & { sampled: number, sampledBytes: number }>()
  /**
   * Measure the JSON size of every `byteSampleEvery`-th message of each type (the first always) and
   * count the others at the running mean size of their type. 1 measures every message.
   */
  byteSampleEvery = 8

  constructor (init: SimOverlayInit) { super(init) }

  private count (msg: OverlayMessage): void {
    let c = this.traffic.get(msg.type)
    if (c === undefined) { c = { count: 0, bytes: 0, sampled: 0, sampledBytes: 0 }; this.traffic.set(msg.type, c) }
    if (c.count % this.byteSampleEvery === 0) {
      const b = Buffer.byteLength(JSON.stringify(msg))
      c.sampled++; c.sampledBytes += b
      c.bytes += b
    } else {
      c.bytes += c.sampledBytes / c.sampled
    }
    c.count++
  }

  override request (from: PeerId, to: PeerId, msg: OverlayMessage, opts: SendOptions): Promise<OverlayMessage> {
    if (this.isUp(from)) this.count(msg)
    return super.request(from, to, msg, opts)
  }

  protected override responded (res: OverlayMessage): void { this.count(res) }

  /** Totals so far (a copy). */
  snapshot (): Map<string, TypeCounter> {
    return new Map([...this.traffic].map(([k, v]) => [k, { count: v.count, bytes: v.bytes }]))
  }
}

/**
 * A Clock view that rounds every timer up to a multiple of `resolution` ms, so timers of many
 * nodes share instants and the driver yields to the microtask queue once per instant rather than
 * once per timer. resolution 0 keeps exact times.
 */
export function quantizedClock (inner: Clock, resolution: number): Clock {
  if (!(resolution > 0)) return inner
  return {
    now: () => inner.now(),
    setTimer (ms: number, fn: () => void): Timer {
      const now = inner.now()
      const at = Math.ceil((now + Math.max(0, ms)) / resolution) * resolution
      return inner.setTimer(at - now, fn)
    }
  }
}

export interface OverlayFactoryInit {
  clock: Clock
  logger: Logger
  hub: SimOverlayHub
  hasher: Hasher
  rings: RingFactory
  init: OverlayNodeInit
  /** Scale mode: the global membership oracle (instead of one SWIM instance per node). */
  oracle?: MembershipOracle
}

/** The node under test today: sipring's own {@link OverlayNode} (SWIM membership → ring → replicated store). */
export class OverlayNodeAdapter implements SimNode<RegValue> {
  readonly node: OverlayNode<RegValue, MembershipService>
  constructor (readonly id: string, rng: Rng, private readonly f: OverlayFactoryInit) {
    this.node = new OverlayNode<RegValue, MembershipService>({
      clock: f.clock, rng, logger: f.logger, network: f.hub.connect(id), hasher: f.hasher, ringFactory: f.rings,
      ...(f.oracle !== undefined ? { membership: f.oracle.member(id) } : {})
    }, f.init)
    const off = this.node.store.on('change', () => { this.stored = true; off() })
  }

  async start (): Promise<void> { await this.node.start() }
  async join (seeds: string[]): Promise<void> { await this.node.join(seeds) }
  async leave (): Promise<void> {
    try { await this.node.leave() } finally { this.f.hub.crash(this.id) }
  }

  async crash (): Promise<void> {
    this.f.hub.crash(this.id)
    await this.node.stop()
  }

  async put (key: string, value: RegValue, ttl: number, signal?: AbortSignal): Promise<void> {
    await this.node.store.put(key, value, { ttl, signal })
  }

  async get (key: string, signal?: AbortSignal): Promise<RegValue | undefined> {
    return await this.node.store.get(key, { signal })
  }

  local (key: string): RegValue | undefined {
    const it = this.node.store.local(key)
    return it === undefined || it.deleted ? undefined : it.value
  }

  localSeq (key: string): number | undefined {
    const json = this.node.store.localJson(key)
    if (json === undefined) return undefined
    // the value is JSON.stringify({ c, s }): `s` is the last field, `,"s":<digits>}` (read without
    // allocating: the checkers call this a few times per live key per window)
    let i = json.length - 2
    let s = 0
    let scale = 1
    for (; i >= 0; i--) {
      const d = json.charCodeAt(i) - 48
      if (d < 0 || d > 9) break
      s += d * scale; scale *= 10
    }
    if (scale > 1 && scale <= 1e15 && json.charCodeAt(json.length - 1) === 125 && json.startsWith('"s":', i - 3) && json.charCodeAt(i - 4) === 44) return s
    return (JSON.parse(json) as RegValue).s
  }

  localItems (): number { return this.node.store.getStats().items }
  viewSize (): number { return this.node.ring.size }
  private stored = false
  holdsData (): boolean { return this.stored }
}

export function overlayNodeFactory (f: OverlayFactoryInit): NodeFactory<RegValue> {
  return { create: (id, rng) => new OverlayNodeAdapter(id, rng, f) }
}

type AbortListener = ((ev: { type: 'abort', target: unknown }) => void) | { handleEvent: (ev: { type: 'abort', target: unknown }) => void }

/**
 * A lightweight stand-in for an AbortSignal, for the workload's per-operation deadlines (one per
 * registration and lookup): `aborted`, `reason`, `onabort`, `throwIfAborted()` and
 * `add/removeEventListener('abort', fn | { handleEvent }, { once })` with EventTarget's rules (a
 * listener added twice is called once; one added after the abort is never called). Node's
 * AbortController builds an EventTarget per operation, which cost ≈ 2% of a large run. Not for
 * `AbortSignal.any()` or `dispatchEvent` (nothing under test calls them on a workload signal).
 */
export class Deadline {
  aborted = false
  reason: unknown = undefined
  onabort: ((ev: { type: 'abort', target: unknown }) => void) | null = null
  private listeners: Array<{ l: AbortListener, once: boolean }> | undefined

  /** This object, typed as the AbortSignal it stands in for. */
  get signal (): AbortSignal { return this as unknown as AbortSignal }

  addEventListener (type: string, l: AbortListener | null | undefined, opts?: boolean | { once?: boolean }): void {
    if (type !== 'abort' || l === null || l === undefined || this.aborted) return
    const ls = this.listeners ??= []
    for (const x of ls) if (x.l === l) return
    ls.push({ l, once: typeof opts === 'object' && opts.once === true })
  }

  removeEventListener (type: string, l: AbortListener | null | undefined): void {
    const ls = this.listeners
    if (type !== 'abort' || ls === undefined) return
    for (let i = 0; i < ls.length; i++) if (ls[i]!.l === l) { ls.splice(i, 1); return }
  }

  throwIfAborted (): void { if (this.aborted) throw this.reason }

  /** Abort (once): `reason` is an AbortError, then `onabort` and the listeners run in order. */
  abort (): void {
    if (this.aborted) return
    this.aborted = true
    const err = new Error('This operation was aborted'); err.name = 'AbortError'
    this.reason = err
    const ev = { type: 'abort' as const, target: this }
    this.onabort?.(ev)
    const ls = this.listeners
    this.listeners = undefined
    if (ls !== undefined) for (const { l } of ls) { if (typeof l === 'function') l(ev); else l.handleEvent(ev) }
  }
}
