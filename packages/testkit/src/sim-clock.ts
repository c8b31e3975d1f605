import type { Clock, Timer } from '@sipring/interface'

const NOOP = (): void => {}

/**
 * A scheduled timer: its own handle (one object per timer). Cancelling drops the callback at once, so
 * whatever it captured (a request's state, its promise) can be collected long before the entry
 * reaches the top of the heap; cancelled entries are skipped when popped, and the heap is compacted
 * when they make up most of it.
 */
class Entry implements Timer {
  cancelled = false
  /** Left the heap (fired): cancelling it now changes nothing. */
  fired = false
  constructor (readonly at: number, readonly seq: number, public fn: () => void, private readonly owner: SimClock) {}
  cancel (): void {
    if (this.cancelled || this.fired) return
    this.cancelled = true
    this.fn = NOOP
    this.owner._cancelled()
  }
}

/**
 * Deterministic discrete-event clock. Timers fire in (time, insertion order); time only moves when
 * the test (or the simulator) calls {@link SimClock.advance} / {@link SimClock.runUntilIdle}.
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

  constructor (start = Date.UTC(2026, 0, 1)) { this.t = start }

  now (): number { return this.t }

  setTimer (ms: number, fn: () => void): Timer {
    const e = new Entry(this.t + Math.max(0, ms), this.seq++, fn, this)
    this.push(e)
    return e
  }

  /** Number of timers still scheduled (cancelled ones excluded). */
  get pending (): number { return this.n - this.dead }

  /** @internal an entry of this clock was cancelled: compact the heap once most of it is dead. */
  _cancelled (): void {
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
    return this.n > 0 ? this.keyAt[0] : undefined
  }

  /** Fire the next due timer (advancing time to it). Returns false when none is left. */
  step (): boolean {
    while (this.n > 0) {
      const e = this.pop()!
      if (e.cancelled) { this.dead--; continue }
      e.fired = true
      if (e.at > this.t) this.t = e.at
      e.fn()
      return true
    }
    return false
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
