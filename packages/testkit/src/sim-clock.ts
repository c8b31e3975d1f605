import type { Clock, Timer } from '@sipring/interface'

interface Entry { at: number, seq: number, fn: () => void, cancelled: boolean }

/**
 * Deterministic discrete-event clock. Timers fire in (time, insertion order); time only moves when
 * the test (or the simulator) calls {@link SimClock.advance} / {@link SimClock.runUntilIdle}.
 */
export class SimClock implements Clock {
  private t: number
  private seq = 0
  private heap: Entry[] = []

  constructor (start = Date.UTC(2026, 0, 1)) { this.t = start }

  now (): number { return this.t }

  setTimer (ms: number, fn: () => void): Timer {
    const e: Entry = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false }
    this.push(e)
    return { cancel: () => { e.cancelled = true } }
  }

  /** Number of timers still scheduled (cancelled ones excluded). */
  get pending (): number { return this.heap.filter(e => !e.cancelled).length }

  /** Time of the next live timer, or undefined. */
  nextAt (): number | undefined {
    while (this.heap.length > 0 && this.heap[0]!.cancelled) this.pop()
    return this.heap[0]?.at
  }

  /** Fire the next due timer (advancing time to it). Returns false when none is left. */
  step (): boolean {
    while (this.heap.length > 0) {
      const e = this.pop()!
      if (e.cancelled) continue
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
    const h = this.heap
    h.push(e)
    let i = h.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!less(h[i]!, h[p]!)) break
      ;[h[i], h[p]] = [h[p]!, h[i]!]
      i = p
    }
  }

  private pop (): Entry | undefined {
    const h = this.heap
    if (h.length === 0) return undefined
    const top = h[0]!
    const last = h.pop()!
    if (h.length > 0) {
      h[0] = last
      let i = 0
      for (;;) {
        const l = 2 * i + 1; const r = l + 1
        let m = i
        if (l < h.length && less(h[l]!, h[m]!)) m = l
        if (r < h.length && less(h[r]!, h[m]!)) m = r
        if (m === i) break
        ;[h[i], h[m]] = [h[m]!, h[i]!]
        i = m
      }
    }
    return top
  }
}

function less (a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq)
}
