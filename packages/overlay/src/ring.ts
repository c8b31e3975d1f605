import xxhash from 'xxhash-wasm'
import type { PeerId } from './network.js'

/** 2^64: the size of the ring's key space (positions are unsigned 64-bit). */
export const RING_SIZE = 1n << 64n

/** A synchronous 64-bit hash (xxHash64) obtained from {@link createHasher}. */
export interface Hasher {
  hash64 (input: string | Uint8Array): bigint
}

/** Loads xxhash-wasm once (async WebAssembly init) and returns a synchronous xxHash64. */
export async function createHasher (seed = 0n): Promise<Hasher> {
  const api = await xxhash()
  return {
    hash64 (input: string | Uint8Array): bigint {
      return typeof input === 'string' ? api.h64(input, seed) : api.h64Raw(input, seed)
    }
  }
}

/** Half-open clockwise arc `(start, end]` of the ring; `start === end` means the whole ring. */
export interface RingRange {
  start: bigint
  end: bigint
  /** The R members that own it, in replica order (index 0 = primary). */
  owners: PeerId[]
}

export interface RingInit {
  /** Virtual nodes (tokens) per member. */
  vnodes?: number
}

export interface LoadStats {
  members: number
  replicas: number
  /** Fraction of the key space each member stores (replicas counted), summing to `replicas`. */
  load: Map<PeerId, number>
  mean: number
  max: number
  min: number
  /** max / mean */
  ratio: number
}

export const DEFAULT_VNODES = 128

/** Position of member `m`'s token `i`. Derived from the member id only, so every node computes the same ring. */
function tokenOf (hasher: Hasher, member: PeerId, i: number): bigint {
  return hasher.hash64(`${member}\u0000vnode\u0000${i}`)
}

/** The `vnodes` token positions of one member. */
export function memberTokens (hasher: Hasher, member: PeerId, vnodes: number): BigUint64Array {
  const out = new BigUint64Array(vnodes)
  for (let i = 0; i < vnodes; i++) out[i] = tokenOf(hasher, member, i)
  return out
}

/** Gives a member's tokens (lets a factory cache them). */
export type TokenSource = (member: PeerId) => BigUint64Array

/**
 * Immutable consistent-hash ring. Each member owns `vnodes` tokens at hash(member, i); a key at
 * position p is owned by the distinct members met walking clockwise from the first token >= p.
 * Tokens depend only on the member id: adding a member moves only the keys in its new ranges.
 *
 * Memory: one BigUint64Array of positions + one Uint32Array of owner indices (12 bytes per token).
 */
export class Ring {
  readonly hasher: Hasher
  readonly vnodes: number
  private readonly memberList: PeerId[]
  private readonly memberIndex: Map<PeerId, number>
  private readonly positions: BigUint64Array
  private readonly ownerOf: Uint32Array

  constructor (hasher: Hasher, members: Iterable<PeerId>, init: RingInit = {}, tokens?: TokenSource) {
    this.hasher = hasher
    this.vnodes = init.vnodes ?? DEFAULT_VNODES
    if (!Number.isInteger(this.vnodes) || this.vnodes < 1 || this.vnodes > 4096) {
      throw new RangeError(`vnodes must be an integer in [1, 4096], got ${this.vnodes}`)
    }
    this.memberList = [...new Set(members)].sort()
    this.memberIndex = new Map(this.memberList.map((m, i) => [m, i]))
    const tok = tokens ?? ((m: PeerId) => memberTokens(hasher, m, this.vnodes))
    const n = this.memberList.length * this.vnodes
    const toks: Array<{ p: bigint, o: number }> = new Array(n)
    let k = 0
    for (let o = 0; o < this.memberList.length; o++) {
      for (const p of tok(this.memberList[o]!)) toks[k++] = { p, o }
    }
    // ties (astronomically unlikely) are broken by member order so the ring stays a pure function of the set
    toks.sort((a, b) => a.p < b.p ? -1 : a.p > b.p ? 1 : a.o - b.o)
    this.positions = new BigUint64Array(n)
    this.ownerOf = new Uint32Array(n)
    for (let j = 0; j < n; j++) { this.positions[j] = toks[j]!.p; this.ownerOf[j] = toks[j]!.o }
  }

  /**
   * The ring of `members`, derived from this one in linear time when only a few members differ
   * (a join or a death), by dropping the removed members' tokens and merging the added ones.
   * The result is identical to `new Ring(hasher, members)`.
   */
  derive (members: Iterable<PeerId>, tokens?: TokenSource): Ring {
    const list = [...new Set(members)].sort()
    const added = list.filter(m => !this.memberIndex.has(m))
    const keep = new Set(list)
    const removed = this.memberList.filter(m => !keep.has(m)).length
    if (added.length === 0 && removed === 0) return this
    const tok = tokens ?? ((m: PeerId) => memberTokens(this.hasher, m, this.vnodes))
    if (added.length * 2 > list.length) return new Ring(this.hasher, list, { vnodes: this.vnodes }, tok)
    const index = new Map(list.map((m, i) => [m, i]))
    const remap = new Int32Array(this.memberList.length)
    for (let i = 0; i < this.memberList.length; i++) remap[i] = index.get(this.memberList[i]!) ?? -1
    const add: Array<{ p: bigint, o: number }> = []
    for (const m of added) { const o = index.get(m)!; for (const p of tok(m)) add.push({ p, o }) }
    add.sort((a, b) => a.p < b.p ? -1 : a.p > b.p ? 1 : a.o - b.o)
    const n = list.length * this.vnodes
    const positions = new BigUint64Array(n)
    const ownerOf = new Uint32Array(n)
    const oldPos = this.positions; const oldOwn = this.ownerOf
    let i = 0; let j = 0; let k = 0
    while (k < n) {
      while (i < oldPos.length && remap[oldOwn[i]!]! < 0) i++
      const oi = i < oldPos.length ? remap[oldOwn[i]!]! : -1
      const a = j < add.length ? add[j]! : undefined
      const takeOld = oi >= 0 && (a === undefined || oldPos[i]! < a.p || (oldPos[i] === a.p && oi < a.o))
      if (takeOld) { positions[k] = oldPos[i]!; ownerOf[k] = oi; i++ } else { positions[k] = a!.p; ownerOf[k] = a!.o; j++ }
      k++
    }
    return Ring.fromParts(this.hasher, this.vnodes, list, index, positions, ownerOf)
  }

  private static fromParts (hasher: Hasher, vnodes: number, list: PeerId[], index: Map<PeerId, number>, positions: BigUint64Array, ownerOf: Uint32Array): Ring {
    const r = Object.create(Ring.prototype) as Ring
    const w = r as unknown as { -readonly [K in keyof Ring]: unknown } & Record<string, unknown>
    w.hasher = hasher; w.vnodes = vnodes
    w.memberList = list; w.memberIndex = index; w.positions = positions; w.ownerOf = ownerOf
    return r
  }

  /** Members, sorted. */
  get members (): readonly PeerId[] { return this.memberList }
  get size (): number { return this.memberList.length }
  has (m: PeerId): boolean { return this.memberIndex.has(m) }

  /** A new ring with `m` added (no-op copy when present). */
  with (m: PeerId): Ring { return this.derive([...this.memberList, m]) }
  /** A new ring with `m` removed. */
  without (m: PeerId): Ring { return this.derive(this.memberList.filter(x => x !== m)) }

  /** Ring position of a key. */
  position (key: string | Uint8Array): bigint { return this.hasher.hash64(key) }

  /** Index of the first token with position >= p (wrapping to 0). */
  private successorIndex (p: bigint): number {
    const a = this.positions
    let lo = 0; let hi = a.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (a[mid]! < p) lo = mid + 1; else hi = mid
    }
    return lo === a.length ? 0 : lo
  }

  private walk (start: number, r: number): PeerId[] {
    const out: PeerId[] = []
    const n = this.positions.length
    if (n === 0) return out
    const want = Math.min(r, this.memberList.length)
    const seen = new Set<number>()
    for (let j = 0; j < n && out.length < want; j++) {
      const o = this.ownerOf[(start + j) % n]!
      if (!seen.has(o)) { seen.add(o); out.push(this.memberList[o]!) }
    }
    return out
  }

  /** The R distinct members owning `key` (primary first, then clockwise successors). */
  owners (key: string | Uint8Array, r: number): PeerId[] {
    return this.ownersAt(this.position(key), r)
  }

  ownersAt (pos: bigint, r: number): PeerId[] {
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    return this.walk(this.successorIndex(pos), r)
  }

  /** Every arc of the ring with its R owners (one arc per token). */
  ranges (r: number): RingRange[] {
    const n = this.positions.length
    const out: RingRange[] = []
    for (let j = 0; j < n; j++) {
      const start = this.positions[(j - 1 + n) % n]!
      out.push({ start, end: this.positions[j]!, owners: this.walk(j, r) })
    }
    return out
  }

  /** The arcs `member` holds a replica of (as primary or as one of the R-1 successors). */
  rangesOf (member: PeerId, r: number): RingRange[] {
    return this.ranges(r).filter(x => x.owners.includes(member))
  }

  /** Members that share at least one replicated range with `member` (its anti-entropy partners), sorted. */
  replicaPeers (member: PeerId, r: number): PeerId[] {
    const o = this.memberIndex.get(member)
    if (o === undefined) return []
    const n = this.positions.length
    const out = new Set<PeerId>()
    for (let j = 0; j < n; j++) {
      if (this.ownerOf[j] !== o) continue
      // the range ending at token k holds `member` iff tokens k..j carry at most r distinct owners
      // (j = this token of the member; an earlier token of the member is handled by its own pass)
      const distinct = new Set<number>([o])
      for (let steps = 0, k = j; steps < n; steps++, k = (k - 1 + n) % n) {
        const prev = this.ownerOf[k]!
        if (steps > 0 && prev === o) break
        distinct.add(prev)
        if (distinct.size > r) break
        for (const m of this.walk(k, r)) out.add(m)
      }
    }
    out.delete(member)
    return [...out].sort()
  }

  /** Fraction of the key space every member stores, replicas counted. */
  loadStats (r: number): LoadStats {
    const load = new Map<PeerId, number>(this.memberList.map(m => [m, 0]))
    for (const rg of this.ranges(r)) {
      const len = arcLength(rg.start, rg.end)
      const f = Number(len) / Number(RING_SIZE)
      for (const o of rg.owners) load.set(o, load.get(o)! + f)
    }
    const vals = [...load.values()]
    const replicas = Math.min(r, this.memberList.length)
    const mean = vals.length === 0 ? 0 : replicas / vals.length
    const max = vals.length === 0 ? 0 : Math.max(...vals)
    const min = vals.length === 0 ? 0 : Math.min(...vals)
    return { members: vals.length, replicas, load, mean, max, min, ratio: mean === 0 ? 0 : max / mean }
  }
}

/** Clockwise length of `(start, end]`; the full ring when start === end. */
export function arcLength (start: bigint, end: bigint): bigint {
  return end > start ? end - start : RING_SIZE - start + end
}

/** Is position p inside the clockwise arc `(start, end]`? */
export function inArc (p: bigint, start: bigint, end: bigint): boolean {
  if (start === end) return true
  return start < end ? (p > start && p <= end) : (p > start || p <= end)
}

export interface RingFactoryInit extends RingInit {
  /** How many distinct rings to keep (LRU). Nodes of one process whose views agree share one ring. */
  cacheSize?: number
}

/**
 * Builds rings and interns them by member set, so thousands of simulated nodes with converged
 * views share one Ring object instead of one each.
 */
export class RingFactory {
  readonly hasher: Hasher
  readonly vnodes: number
  private readonly cacheSize: number
  private readonly cache = new Map<string, Ring>()

  constructor (hasher: Hasher, init: RingFactoryInit = {}) {
    this.hasher = hasher
    this.vnodes = init.vnodes ?? DEFAULT_VNODES
    this.cacheSize = init.cacheSize ?? 32
  }

  private readonly tokenCache = new Map<PeerId, BigUint64Array>()
  private readonly tokens: TokenSource = m => {
    let t = this.tokenCache.get(m)
    if (t === undefined) {
      if (this.tokenCache.size >= 100_000) this.tokenCache.clear()
      t = memberTokens(this.hasher, m, this.vnodes)
      this.tokenCache.set(m, t)
    }
    return t
  }

  /** The ring of `members` (interned); derived from `base` in linear time when given and close. */
  of (members: Iterable<PeerId>, base?: Ring): Ring {
    const list = [...new Set(members)].sort()
    const key = list.join('\n')
    const hit = this.cache.get(key)
    if (hit !== undefined) { this.cache.delete(key); this.cache.set(key, hit); return hit }
    const ring = base !== undefined && base.vnodes === this.vnodes
      ? base.derive(list, this.tokens)
      : new Ring(this.hasher, list, { vnodes: this.vnodes }, this.tokens)
    this.cache.set(key, ring)
    if (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!)
    return ring
  }
}
