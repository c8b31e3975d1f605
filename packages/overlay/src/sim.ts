import type { Clock, Rng, Timer } from '@sipring/interface'
import {
  OverlayAbortError, OverlayProtocolError, OverlayTimeoutError, OverlayUnreachableError,
  type OverlayMessage, type OverlayNetwork, type PeerId, type RequestHandler, type SendOptions
} from './network.js'

export interface SimOverlayInit {
  clock: Clock
  rng: Rng
  /** One-way delay in ms: uniform in [min, max]. Default 5..15. */
  latency?: { min: number, max: number }
  /** Probability that one message (request or response) is lost. Default 0. */
  loss?: number
  /** Default request timeout in ms when the sender gives none. Default 2000. */
  defaultTimeout?: number
  /**
   * How a message crosses the hub. 'clone' (default): deep copy (structuredClone), so nodes never
   * share objects and a message that cannot be encoded fails. 'freeze': no copy, the message is
   * deep-frozen (a receiver or sender that mutates it afterwards throws: use it in tests to check
   * that sharing is safe). 'share': no copy, no check (fastest; the simulator's scale mode — every
   * overlay handler treats messages as read-only, checked with 'freeze' by the overlay tests).
   */
  copy?: 'clone' | 'freeze' | 'share'
}

export interface SimStats { requests: number, delivered: number, lost: number, timeouts: number }

/**
 * In-memory request/response network for overlay nodes, driven by a SimClock and a SeededRng:
 * per-message delay and loss, crashed nodes (never answer) and partitions. Messages are deep-copied
 * (structuredClone) so nodes never share objects, unless `copy` says otherwise.
 */
export class SimOverlayHub {
  readonly clock: Clock
  private readonly rng: Rng
  private readonly latency: { min: number, max: number }
  loss: number
  private readonly defaultTimeout: number
  private readonly copyMode: 'clone' | 'freeze' | 'share'
  /** Every peer ever connected (a crashed one keeps its entry, marked `down`, until it reconnects). */
  private readonly nodes = new Map<PeerId, SimOverlayNetwork>()
  private readonly cuts = new Set<string>()
  readonly stats: SimStats = { requests: 0, delivered: 0, lost: 0, timeouts: 0 }

  constructor (init: SimOverlayInit) {
    this.clock = init.clock
    this.rng = init.rng
    this.latency = init.latency ?? { min: 5, max: 15 }
    this.loss = init.loss ?? 0
    this.defaultTimeout = init.defaultTimeout ?? 2000
    this.copyMode = init.copy ?? 'clone'
  }

  private pass (msg: OverlayMessage): OverlayMessage {
    if (this.copyMode === 'clone') return structuredClone(msg)
    if (this.copyMode === 'freeze') deepFreeze(msg)
    return msg
  }

  /** The network port of peer `id` (created on first call; revives a crashed peer). */
  connect (id: PeerId): SimOverlayNetwork {
    let n = this.nodes.get(id)
    if (n === undefined) { n = new SimOverlayNetwork(this, id); this.nodes.set(id, n) }
    n.down = false
    return n
  }

  /** The peer stops answering and sending; its handlers are dropped (a fresh process must re-register). */
  crash (id: PeerId): void {
    const n = this.nodes.get(id)
    if (n !== undefined) { n.handlers.length = 0; n.down = true }
  }

  isUp (id: PeerId): boolean { const n = this.nodes.get(id); return n !== undefined && !n.down }

  /** Cut (or heal) the link between two peers, both directions. */
  partition (a: PeerId, b: PeerId, cut = true): void {
    const k = a < b ? `${a}\n${b}` : `${b}\n${a}`
    if (cut) this.cuts.add(k); else this.cuts.delete(k)
  }

  private linked (a: PeerId, b: PeerId): boolean {
    return this.cuts.size === 0 || !this.cuts.has(a < b ? `${a}\n${b}` : `${b}\n${a}`)
  }

  private delay (): number {
    const { min, max } = this.latency
    return min + this.rng.next() * (max - min)
  }

  private lost (): boolean { return this.loss > 0 && this.rng.next() < this.loss }

  /** A response reached its requester (before the request's promise resolves): a hook for counting. */
  protected responded (_res: OverlayMessage): void {}

  /** @internal */
  request (from: PeerId, to: PeerId, msg: OverlayMessage, opts: SendOptions): Promise<OverlayMessage> {
    this.stats.requests++
    return new Promise<OverlayMessage>((resolve, reject) => { this.start(new Exchange(from, to, this.nodes.get(from), this.nodes.get(to), msg, opts, resolve, reject)) })
  }

  /** One request's way through the hub (timers in the same order as ever: timeout, delivery, answer). */
  private start (x: Exchange): void {
    const { from, to, src, dst, opts } = x
    if (opts.signal?.aborted === true) { x.abort(); return }
    opts.signal?.addEventListener('abort', x)
    x.timer = this.clock.setTimer(opts.timeout ?? this.defaultTimeout, () => {
      this.stats.timeouts++
      if (x.settle()) x.reject(new OverlayTimeoutError(`${from} → ${to}: ${x.msg.type} timed out`))
    })
    if (dst === undefined) { if (x.settle()) x.reject(new OverlayUnreachableError(`unknown peer ${to}`)); return }
    if (src?.down === true) return // a crashed sender's messages go nowhere
    let copy: OverlayMessage
    try { copy = this.pass(x.msg) } catch (err) {
      if (x.settle()) x.reject(new OverlayProtocolError(`request cannot be encoded: ${String(err)}`))
      return
    }
    if (this.lost() || !this.linked(from, to)) { this.stats.lost++; return }
    this.clock.setTimer(this.delay(), () => {
      if (dst.down || !this.linked(from, to)) { this.stats.lost++; return }
      this.stats.delivered++
      void dst.dispatch(copy, from).then(res => { this.answer(x, res) })
    })
  }

  private answer (x: Exchange, res: OverlayMessage): void {
    const { from, to } = x
    if (x.dst!.down || x.src?.down === true) return
    if (this.lost() || !this.linked(from, to)) { this.stats.lost++; return }
    let back: OverlayMessage
    try { back = this.pass(res) } catch (err) {
      back = { type: 'error', code: 'ERR_ENCODE', message: `response cannot be encoded: ${String(err)}` }
    }
    this.clock.setTimer(this.delay(), () => { if (x.settle()) { this.responded(back); x.resolve(back) } })
  }
}

/**
 * The state of one request in flight: settled once (answer, timeout, abort or error). It is its own
 * abort listener (an EventListener object), so a request allocates no closures for that.
 */
class Exchange {
  done = false
  timer: Timer | undefined = undefined
  constructor (
    readonly from: PeerId, readonly to: PeerId,
    /** The sender's and receiver's ports (undefined: not connected; ports are never removed). */
    readonly src: SimOverlayNetwork | undefined, readonly dst: SimOverlayNetwork | undefined,
    readonly msg: OverlayMessage, readonly opts: SendOptions,
    readonly resolve: (m: OverlayMessage) => void, readonly reject: (e: Error) => void
  ) {}

  /** Marks the request settled (false if it already was): cancels its timeout, drops the abort listener. */
  settle (): boolean {
    if (this.done) return false
    this.done = true
    this.timer?.cancel()
    this.opts.signal?.removeEventListener('abort', this)
    return true
  }

  abort (): void { if (this.settle()) this.reject(new OverlayAbortError()) }
  handleEvent (): void { this.abort() }
}

function deepFreeze (v: unknown): void {
  if (typeof v !== 'object' || v === null) return
  Object.freeze(v) // no-op when already (shallowly) frozen; messages are JSON-like trees, no cycles
  for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k])
}

export class SimOverlayNetwork implements OverlayNetwork {
  /** @internal */
  readonly handlers: RequestHandler[] = []
  /** @internal crashed (the hub's flag: its messages go nowhere, none reach it) until reconnected. */
  down = false
  constructor (private readonly hub: SimOverlayHub, readonly self: PeerId) {}

  send (to: PeerId, msg: OverlayMessage, opts: SendOptions = {}): Promise<OverlayMessage> {
    return this.hub.request(this.self, to, msg, opts)
  }

  onRequest (handler: RequestHandler): () => void {
    this.handlers.push(handler)
    return () => { const i = this.handlers.indexOf(handler); if (i >= 0) this.handlers.splice(i, 1) }
  }

  /** @internal */
  async dispatch (msg: OverlayMessage, from: PeerId): Promise<OverlayMessage> {
    for (const h of [...this.handlers]) {
      try {
        const res = await h(msg, from)
        if (res !== undefined) return res
      } catch (err) {
        return { type: 'error', code: 'ERR_HANDLER', message: err instanceof Error ? err.message : String(err) }
      }
    }
    return { type: 'error', code: 'ERR_UNSUPPORTED', message: `no handler for ${msg.type}` }
  }
}

/** Lets pending promise callbacks run (a macrotask turn drains the microtask queue). */
export function yieldToMicrotasks (): Promise<void> {
  return new Promise(resolve => { setImmediate(resolve) })
}

/** A clock that can be stepped timer by timer (SimClock from @sipring/testkit). */
export interface SteppableClock extends Clock {
  nextAt (): number | undefined
  step (): boolean
  advanceTo (t: number): void
}

/**
 * Advance a SimClock by `ms`, firing timers in order and letting promise chains run between
 * timers (SimClock.advance alone is synchronous, so async request/response code would stall).
 */
export async function drive (clock: SteppableClock, ms: number): Promise<void> {
  const target = clock.now() + ms
  await yieldToMicrotasks()
  for (;;) {
    const at = clock.nextAt()
    if (at === undefined || at > target) break
    // fire every timer due at this instant, then let the microtasks they queued run
    while (clock.nextAt() === at) clock.step()
    await yieldToMicrotasks()
  }
  clock.advanceTo(target)
  await yieldToMicrotasks()
}
