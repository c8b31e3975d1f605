/**
 * A bounded cache in front of `AccountStore.getGroup` for group calls: expanding a group asks, for
 * every member, whether it is itself a group — 200 store reads (a level read, or a core-node query)
 * per call to a 200-member group without a cache. Entries (groups and "not a group" answers) are
 * kept at most `ttlMs` and dropped at once when the store reports a change of that group
 * (`onChange`); the least recently used entry goes first past `maxEntries`.
 */
import type { Clock } from '@sipring/interface'
import type { GroupLike, GroupSource } from '@sipring/proxy'

export interface GroupCacheOptions {
  /** Entries kept at most (default 10,000). */
  maxEntries?: number
  /** How long an entry is trusted, ms (default 30,000 with change notifications, 5,000 without). */
  ttlMs?: number
}

export interface GroupStoreLike {
  getGroup(aor: string): Promise<GroupLike | undefined> | GroupLike | undefined
  onChange?(fn: (c: { kind: string, aor?: string }) => void): () => void
}

interface Entry { value: GroupLike | undefined, at: number }

export class GroupCache implements GroupSource {
  private readonly entries = new Map<string, Entry>()
  private readonly inflight = new Map<string, Promise<GroupLike | undefined>>()
  private readonly maxEntries: number
  private readonly ttlMs: number
  private readonly unsubscribe: (() => void) | undefined
  private generation = 0
  hits = 0
  misses = 0

  constructor (private readonly store: GroupStoreLike, private readonly clock: Clock, opts: GroupCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 10_000
    if (!Number.isInteger(this.maxEntries) || this.maxEntries < 1) throw new RangeError(`group cache maxEntries must be an integer >= 1, got ${String(opts.maxEntries)}`)
    const notified = typeof store.onChange === 'function'
    this.ttlMs = opts.ttlMs ?? (notified ? 30_000 : 5_000)
    if (!Number.isFinite(this.ttlMs) || this.ttlMs < 0) throw new RangeError(`group cache ttlMs must be >= 0, got ${String(opts.ttlMs)}`)
    this.unsubscribe = notified
      ? store.onChange!.call(store, c => {
        if (c.kind !== 'group') return
        this.generation++
        if (c.aor !== undefined) this.entries.delete(c.aor); else this.entries.clear()
      })
      : undefined
  }

  get size (): number { return this.entries.size }

  async get (aor: string): Promise<GroupLike | undefined> {
    const now = this.clock.now()
    const e = this.entries.get(aor)
    if (e !== undefined) {
      if (now - e.at < this.ttlMs) {
        this.hits++
        this.entries.delete(aor); this.entries.set(aor, e) // most recently used last
        return e.value
      }
      this.entries.delete(aor)
    }
    this.misses++
    const pending = this.inflight.get(aor)
    if (pending !== undefined) return await pending
    const gen = this.generation
    const p = (async () => await this.store.getGroup(aor))()
    this.inflight.set(aor, p)
    try {
      const value = await p
      // a change notified while the read was in flight may postdate what it returned: do not cache it
      if (gen === this.generation && this.ttlMs > 0) {
        this.entries.set(aor, { value, at: now })
        if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!)
      }
      return value
    } finally {
      this.inflight.delete(aor)
    }
  }

  close (): void { this.unsubscribe?.() }
}
