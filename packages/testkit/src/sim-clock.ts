import type { Clock, Timer } from '@sipring/interface'

const NOOP = (): void => {}

/**
 * Slots of the timing wheel (1 ms each, a power of two): a timer due at a whole ms less than this far
 * ahead goes to its slot's FIFO instead of the heap (16.4 s: network delays, request timeouts, retries).
 */
const WHEEL = 16384
const WORDS = WHEEL >>> 5

/** Index of the lowest set bit of a non-zero 32-bit word. */
const ctz = (x: number): number => 31 - Math.clz32(x & -x)

/**
 * A scheduled timer: its own handle (one object per timer). Cancelling drops the callback at once, so
 * whatever it captured (a request's state, its promise) can be collected long before the entry
 * reaches the top of the heap (or its wheel slot); cancelled entries are skipped when reached, and the
 * heap is compacted when they make up most of it.
 */
class Entry implements Timer {
  cancelled = false
  /** Left the heap or wheel (fired): cancelling it now changes nothing. */
  fired = false
  /** The next entry of the same wheel slot (FIFO). */
  next: Entry | undefined = undefined
  constructor (readonly at: number, readonly seq: number, public fn: () => void, private readonly owner: SimClock, readonly inWheel: boolean) {}
  cancel (): void {
    if (this.cancelled || this.fired) return
    this.cancelled = true
    this.fn = NOOP
    this.owner._cancelled(this.inWheel)
  }
}

/**
 * Deterministic discrete-event clock. Timers fire in (time, insertion order); time only moves when
 * the test (or the simulator) calls {@link SimClock.advance} / {@link SimClock.runUntilIdle}.
 *
 * Two queues, merged on (time, insertion order) so the order is exactly that of one queue:
 * - a timing wheel for timers due at a whole ms less than 16.4 s ahead — one FIFO per ms slot: timers
 *   due at the same ms are set in insertion order, so a slot is sorted by appending; a two-level bitmap
 *   finds the next non-empty slot. Most simulated timers are short (message delays, request timeouts,
 *   mostly cancelled): O(1) each instead of a sift through a heap of ~10^6 long timers.
 * - a binary min-heap for the others (fractional times, far deadlines).
 */
export class SimClock implements Clock {
  private t: number
  private seq = 0
  /**
   * Binary min-heap on (at, seq), kept as parallel arrays: the keys in typed arrays (comparisons read
   * contiguous memory, not the entry objects — a simulation keeps ~10^5–10^6 timers pending), the
   * entries beside them.
   */
  private ents: Array<Entry | undefined> = []
  private keyAt = new Float64Array(1024)
  private keySeq = new Float64Array(1024)
  private n = 0
  /** Cancelled entries still in the heap. */
  private dead = 0
  /** Wheel slots (index: due time mod WHEEL): FIFO lists through `Entry.next`, allocated on first use. */
  private heads: Array<Entry | undefined> | undefined
  private tails: Array<Entry | undefined> = []
  /** Bit per non-empty slot, and bit per non-zero word of `bits`. */
  private readonly bits = new Int32Array(WORDS)
  private readonly sum = new Int32Array(WORDS >>> 5)
  /** Entries in the wheel (cancelled ones included) and cancelled ones among them. */
  private wn = 0
  private wdead = 0

  constructor (start = Date.UTC(2026, 0, 1)) { this.t = start }

  now (): number { return this.t }

  setTimer (ms: number, fn: () => void): Timer {
    const at = this.t + Math.max(0, ms)
    if (Number.isInteger(at) && at >= 0 && at - Math.floor(this.t) < WHEEL) {
      const e = new Entry(at, this.seq++, fn, this, true)
      this.wheelPush(e)
      return e
    }
    const e = new Entry(at, this.seq++, fn, this, false)
    this.push(e)
    return e
  }

  /** Number of timers still scheduled (cancelled ones excluded). */
  get pending (): number { return this.n - this.dead + this.wn - this.wdead }

  /** @internal an entry of this clock was cancelled: compact the heap once most of it is dead. */
  _cancelled (inWheel: boolean): void {
    if (inWheel) { this.wdead++; return }
    if (++this.dead > 1024 && this.dead * 2 > this.n) {
      // dropping cancelled entries and re-heapifying keeps the order (time, then insertion seq)
      let k = 0
      for (let i = 0; i < this.n; i++) {
        const e = this.ents[i]!
        if (e.cancelled) continue
        this.ents[k] = e; this.keyAt[k] = e.at; this.keySeq[k] = e.seq; k++
      }
      this.ents.length = k
      this.n = k
      this.dead = 0
      for (let i = (k >> 1) - 1; i >= 0; i--) this.down(i)
    }
  }

  /** Time of the next live timer, or undefined. */
  nextAt (): number | undefined {
    while (this.n > 0 && this.ents[0]!.cancelled) { this.pop(); this.dead-- }
    const w = this.wheelHead()
    if (this.n === 0) return w?.at
    const a = this.keyAt[0]!
    return w !== undefined && w.at < a ? w.at : a
  }

  /** Fire the next due timer (advancing time to it). Returns false when none is left. */
  step (): boolean {
    while (this.n > 0 && this.ents[0]!.cancelled) { this.pop(); this.dead-- }
    const w = this.wheelHead()
    let e: Entry
    if (w !== undefined && (this.n === 0 || w.at < this.keyAt[0]! || (w.at === this.keyAt[0]! && w.seq < this.keySeq[0]!))) {
      this.wheelShift(w)
      e = w
    } else if (this.n > 0) {
      e = this.pop()!
    } else return false
    e.fired = true
    if (e.at > this.t) this.t = e.at
    e.fn()
    return true
  }

  /** Advance time by `ms`, firing every timer due on the way, in order. */
  advance (ms: number): void { this.advanceTo(this.t + ms) }

  advanceTo (target: number): void {
    for (;;) {
      const at = this.nextAt()
      if (at === undefined || at > target) break
      this.step()
    }
    if (target > this.t) this.t = target
  }

  /** Fire timers until none is left or `limit` events ran (guards against self-rescheduling loops). */
  runUntilIdle (limit = 1_000_000): number {
    let n = 0
    while (n < limit && this.step()) n++
    return n
  }

  // ------------------------------------------------------------ timing wheel

  private wheelPush (e: Entry): void {
    const heads = this.heads ??= new Array<Entry | undefined>(WHEEL).fill(undefined)
    if (this.tails.length === 0) this.tails = new Array<Entry | undefined>(WHEEL).fill(undefined)
    const i = e.at % WHEEL
    const h = heads[i]
    if (h === undefined) {
      heads[i] = e
      this.bits[i >>> 5]! |= 1 << (i & 31)
      this.sum[i >>> 10]! |= 1 << ((i >>> 5) & 31)
    } else if (h.at !== e.at) {
      // entries due a multiple of WHEEL earlier: all cancelled (every live entry of a slot is due at
      // the same ms, no earlier than now), left behind when time jumped past them; drop them
      for (let x: Entry | undefined = h; x !== undefined; x = x.next) { this.wn--; this.wdead-- }
      heads[i] = e
    } else {
      this.tails[i]!.next = e
    }
    this.tails[i] = e
    this.wn++
  }

  /** The wheel's first live entry in (time, insertion) order; drops the cancelled ones before it. */
  private wheelHead (): Entry | undefined {
    const heads = this.heads
    if (this.wn === 0 || heads === undefined) return undefined
    const from = Math.floor(this.t) % WHEEL
    for (;;) {
      let i = this.findFrom(from)
      if (i < 0) i = this.findFrom(0)
      if (i < 0) return undefined
      let h = heads[i]
      while (h !== undefined && h.cancelled) { const nx: Entry | undefined = h.next; h.next = undefined; h = nx; this.wn--; this.wdead-- }
      if (h !== undefined) { heads[i] = h; return h }
      this.clearSlot(i)
    }
  }

  /** Remove `e`, the head of its slot. */
  private wheelShift (e: Entry): void {
    const i = e.at % WHEEL
    const nx = e.next
    e.next = undefined
    this.wn--
    if (nx === undefined) this.clearSlot(i); else this.heads![i] = nx
  }

  private clearSlot (i: number): void {
    this.heads![i] = undefined
    this.tails[i] = undefined
    const w = i >>> 5
    const b = (this.bits[w]! &= ~(1 << (i & 31)))
    if (b === 0) this.sum[w >>> 5]! &= ~(1 << (w & 31))
  }

  /** First non-empty slot at index ≥ i, or -1. */
  private findFrom (i: number): number {
    const bits = this.bits; const sum = this.sum
    let w = i >>> 5
    const word = bits[w]! & (-1 << (i & 31))
    if (word !== 0) return (w << 5) + ctz(word)
    w++
    while (w < WORDS) {
      const sw = w >>> 5
      const s = sum[sw]! & (-1 << (w & 31))
      if (s !== 0) { const ww = (sw << 5) + ctz(s); return (ww << 5) + ctz(bits[ww]!) }
      w = (sw + 1) << 5
    }
    return -1
  }

  // ------------------------------------------------------------ heap

  private push (e: Entry): void {
    if (this.n === this.keyAt.length) {
      const at = new Float64Array(this.n * 2); at.set(this.keyAt); this.keyAt = at
      const sq = new Float64Array(this.n * 2); sq.set(this.keySeq); this.keySeq = sq
    }
    const A = this.keyAt; const S = this.keySeq; const E = this.ents
    const a = e.at; const q = e.seq
    let i = this.n++
    // sift up with a hole (no swaps)
    while (i > 0) {
      const p = (i - 1) >> 1
      const pa = A[p]!
      if (pa < a || (pa === a && S[p]! < q)) break
      A[i] = pa; S[i] = S[p]!; E[i] = E[p]!
      i = p
    }
    A[i] = a; S[i] = q; E[i] = e
  }

  private pop (): Entry | undefined {
    if (this.n === 0) return undefined
    const top = this.ents[0]!
    const last = --this.n
    if (last > 0) {
      this.ents[0] = this.ents[last]!; this.keyAt[0] = this.keyAt[last]!; this.keySeq[0] = this.keySeq[last]!
      this.down(0)
    }
    this.ents[last] = undefined // no reference to a fired entry (its callback's captures) stays behind
    return top
  }

  /** Sift the entry at i down to its place. */
  private down (i: number): void {
    const A = this.keyAt; const S = this.keySeq; const E = this.ents
    const n = this.n
    const e = E[i]!; const a = A[i]!; const q = S[i]!
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      let m = l
      if (r < n) { const ra = A[r]!; const la = A[l]!; if (ra < la || (ra === la && S[r]! < S[l]!)) m = r }
      const ma = A[m]!
      if (ma > a || (ma === a && S[m]! > q)) break
      A[i] = ma; S[i] = S[m]!; E[i] = E[m]!
      i = m
    }
    A[i] = a; S[i] = q; E[i] = e
  }
}
