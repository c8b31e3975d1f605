import type { Clock } from '@sipring/interface'

export interface FailureLimiterOptions {
  clock: Clock
  /** Failures allowed within `windowMs`; the next one starts a ban. 0 disables the limiter. */
  maxFailures: number
  windowMs: number
  banMs: number
  /** Keys tracked at most (oldest dropped first): memory stays bounded under a spray of sources. */
  maxEntries: number
}

interface Entry { count: number, start: number, bannedUntil: number }

/**
 * Counts failures per key (source IP, user) in a fixed window and bans a key for `banMs` once it
 * passes `maxFailures`. Time comes from the injected Clock.
 */
export class FailureLimiter {
  private readonly entries = new Map<string, Entry>()
  bans = 0

  constructor (private readonly o: FailureLimiterOptions) {}

  /** ms left on the key's ban, or 0 when not banned. */
  banned (key: string): number {
    const e = this.entries.get(key)
    if (e === undefined) return 0
    const left = e.bannedUntil - this.o.clock.now()
    return left > 0 ? left : 0
  }

  /** Record one failure. Returns the ban length in ms when this failure started a ban, else 0. */
  fail (key: string): number {
    if (this.o.maxFailures <= 0) return 0
    const now = this.o.clock.now()
    let e = this.entries.get(key)
    if (e !== undefined) this.entries.delete(key) // re-insert: most recent last
    if (e === undefined || (now - e.start >= this.o.windowMs && e.bannedUntil <= now)) e = { count: 0, start: now, bannedUntil: 0 }
    e.count++
    this.entries.set(key, e)
    while (this.entries.size > this.o.maxEntries) {
      const oldest = this.entries.keys().next().value as string
      this.entries.delete(oldest)
    }
    if (e.count > this.o.maxFailures && e.bannedUntil <= now) {
      e.bannedUntil = now + this.o.banMs
      e.count = 0
      e.start = e.bannedUntil
      this.bans++
      return this.o.banMs
    }
    return 0
  }

  /** Forget the key's failures (after a success). A running ban stays. */
  reset (key: string): void {
    const e = this.entries.get(key)
    if (e !== undefined && e.bannedUntil <= this.o.clock.now()) this.entries.delete(key)
  }

  get size (): number { return this.entries.size }

  /** Keys currently banned with their remaining ms. */
  activeBans (): Array<{ key: string, remainingMs: number }> {
    const now = this.o.clock.now()
    const out: Array<{ key: string, remainingMs: number }> = []
    for (const [key, e] of this.entries) if (e.bannedUntil > now) out.push({ key, remainingMs: e.bannedUntil - now })
    return out
  }

  /** Lift a ban (operator action). */
  unban (key: string): boolean { return this.entries.delete(key) }
}

/** A bounded map with least-recently-used eviction. */
export class LruMap<K, V> {
  private readonly map = new Map<K, V>()
  constructor (readonly max: number, private readonly onEvict?: (k: K, v: V) => void) {}

  get (k: K): V | undefined {
    const v = this.map.get(k)
    if (v !== undefined) { this.map.delete(k); this.map.set(k, v) }
    return v
  }

  peek (k: K): V | undefined { return this.map.get(k) }

  set (k: K, v: V): void {
    this.map.delete(k)
    this.map.set(k, v)
    while (this.map.size > this.max) {
      const [ok, ov] = this.map.entries().next().value as [K, V]
      this.map.delete(ok)
      this.onEvict?.(ok, ov)
    }
  }

  delete (k: K): boolean { return this.map.delete(k) }
  clear (): void { this.map.clear() }
  get size (): number { return this.map.size }
  values (): IterableIterator<V> { return this.map.values() }
}
