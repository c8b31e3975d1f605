/**
 * A real-time Clock, optionally scaled: `now()` = epoch + (real ms since creation) × `scale`, and a
 * timer of `ms` fires after `ms / scale` real ms. The churn simulator's emulation mode runs real
 * libp2p nodes on it (a scenario of 10 simulated minutes runs in 10 / scale real minutes, while
 * every time the code under test sees — protocol periods, timeouts, TTLs — stays in simulated ms).
 * What the clock does not govern runs at real speed: CPU time and the network, which the code
 * therefore sees `scale` times larger.
 *
 * `close()` cancels every pending timer and turns later ones into no-ops, so nothing of a finished
 * run keeps firing. (testkit, like the daemon, may use the wall clock and setTimeout.)
 */
import type { Clock, Timer } from '@sipring/interface'

const wallMs = (): number => Number(process.hrtime.bigint()) / 1e6

export class RealClock implements Clock {
  /** Itself, so a RealClock is also a simulator time source (`{ clock, runUntil, events }`). */
  readonly clock: Clock = this
  readonly scale: number
  private readonly realStart = wallMs()
  private readonly epoch: number
  private readonly timers = new Set<ReturnType<typeof setTimeout>>()
  private fired = 0
  private closed = false

  /** `epoch`: what now() returns at creation (default: the wall clock). */
  constructor (opts: { epoch?: number, scale?: number } = {}) {
    this.scale = opts.scale ?? 1
    if (!(this.scale > 0) || !Number.isFinite(this.scale)) throw new RangeError(`time scale must be a positive number, got ${this.scale}`)
    this.epoch = opts.epoch ?? Date.now()
  }

  now (): number { return this.epoch + Math.floor((wallMs() - this.realStart) * this.scale) }

  setTimer (ms: number, fn: () => void): Timer {
    if (this.closed) return { cancel: () => {} }
    const h = setTimeout(() => { this.timers.delete(h); this.fired++; fn() }, Math.max(0, ms) / this.scale)
    this.timers.add(h)
    return { cancel: () => { clearTimeout(h); this.timers.delete(h) } }
  }

  /** Resolves once now() ≥ `target` (ms on this clock). Not affected by close(). */
  async runUntil (target: number): Promise<void> {
    for (;;) {
      const d = target - this.now()
      if (d <= 0) return
      await new Promise<void>(resolve => { setTimeout(resolve, Math.max(1, d / this.scale)) })
    }
  }

  /** Timers fired so far. */
  events (): number { return this.fired }

  /** Timers scheduled and not yet fired or cancelled. */
  get pending (): number { return this.timers.size }

  get isClosed (): boolean { return this.closed }

  /** Cancel every pending timer; later setTimer calls do nothing. */
  close (): void {
    this.closed = true
    for (const h of this.timers) clearTimeout(h)
    this.timers.clear()
  }
}
