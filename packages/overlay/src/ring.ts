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

/** Half-open clockwise arc `(start, end]` of positions; `start === end` means the whole ring. */
export interface RingArc {
  start: bigint
  end: bigint
}

/**
 * A RingArc that also carries its bounds as doubles (`Number(start)`, `Number(end)`), for a first
 * test on doubles (see the store's handoff): made once by {@link Ring.changedArcs}, read by every
 * store the arcs are passed to.
 */
export class CoarseArc implements RingArc {
  readonly s: number
  readonly e: number
  constructor (readonly start: bigint, readonly end: bigint) { this.s = Number(start); this.e = Number(end) }
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

/** Tokens per chunk of the sorted token array (a join/leave touches at most `vnodes` chunks). */
const CHUNK_CAP = 512
/** Fill of the chunks of a ring built at once (room for later inserts before a split). */
const CHUNK_FILL = 384

/** A run of sorted tokens: positions and owner slots. Copied on write when shared with a snapshot. */
interface Chunk {
  pos: BigUint64Array
  own: Uint32Array
  /** `pos` as 32-bit words: a position's double without reading a BigInt (see {@link numAt}). */
  w: Uint32Array
  n: number
  /** Generation of the RingData that may write it in place. */
  gen: number
}

/**
 * Member ids ↔ small integer slots, append-only (a slot is never reused, so rings derived from one
 * another and their snapshots can share chunks that name owners by slot), with each member's tokens.
 */
class MemberTable {
  readonly names: PeerId[] = []
  readonly slots = new Map<PeerId, number>()
  readonly tokens: Array<BigUint64Array | undefined> = []
  constructor (readonly source: TokenSource) {}

  slot (m: PeerId): number {
    let s = this.slots.get(m)
    if (s === undefined) { s = this.names.length; this.names.push(m); this.slots.set(m, s) }
    return s
  }

  tokensOf (s: number): BigUint64Array {
    let t = this.tokens[s]
    if (t === undefined) { t = this.source(this.names[s]!); this.tokens[s] = t }
    return t
  }
}

let nextGen = 1

/** Scratch space of walkNames (replication factors are at most a few dozen). */
const SCRATCH = new Uint32Array(4096)

/** Capacity of a chunk holding n tokens of a small ring: the next power of two (at least 16). */
function capFor (n: number): number {
  let c = 16
  while (c < n && c < CHUNK_CAP) c *= 2
  return c
}

/**
 * A chunk's storage: positions and owner slots in one ArrayBuffer (one backing-store allocation per
 * chunk; a copy is one `slice`).
 */
function newChunk (cap: number, n: number, gen: number): Chunk {
  return chunkOn(new ArrayBuffer(cap * 12), cap, n, gen)
}

function chunkOn (buf: ArrayBuffer, cap: number, n: number, gen: number): Chunk {
  return { pos: new BigUint64Array(buf, 0, cap), own: new Uint32Array(buf, cap * 8, cap), w: new Uint32Array(buf, 0, cap * 2), n, gen }
}

/** 2^64 as a double. */
const RING_SIZE_N = 18446744073709551616

/** Word order of a 64-bit position in memory (little-endian: the low word first). */
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
const HI = LITTLE ? 1 : 0
const LO = LITTLE ? 0 : 1

/**
 * `Number(ch.pos[i])` without making a BigInt: hi · 2^32 is exact and the one rounding of the sum is
 * the round-to-nearest-even of `Number()`. Rounding is monotonic, so a search on these doubles
 * lands on or just before the exact answer (only positions with equal doubles lie between).
 */
function numAt (ch: Chunk, i: number): number {
  return ch.w[2 * i + HI]! * 4294967296 + ch.w[2 * i + LO]!
}

/** Position of a token: (chunk index, index in chunk). */
interface Cursor { c: number, i: number }

/**
 * The token array of a ring as a directory of sorted chunks ("chunked sorted array"): lookups are two
 * binary searches, inserting or removing one member's `vnodes` tokens costs O(vnodes · (log N + chunk)),
 * and a snapshot copies only the directory (chunks are shared and copied on their next write).
 * @internal
 */
export class RingData {
  chunks: Chunk[] = []
  /** Largest position of each chunk (for the directory's binary search). */
  last: bigint[] = []
  /** `last` as doubles (the search runs on these first). */
  lastN: number[] = []
  size = 0
  tokenCount = 0
  gen = nextGen++
  private membersCache: PeerId[] | undefined

  constructor (readonly table: MemberTable, readonly vnodes: number) {}

  clone (): RingData {
    const d = new RingData(this.table, this.vnodes)
    d.chunks = this.chunks.slice(); d.last = this.last.slice(); d.lastN = this.lastN.slice()
    d.size = this.size; d.tokenCount = this.tokenCount
    d.membersCache = this.membersCache
    // both sides now share every chunk: neither may write one in place any more
    this.gen = nextGen++
    return d
  }

  /** Build from tokens already sorted by (position, owner name). */
  fill (pos: BigUint64Array, own: Uint32Array, members: number): void {
    this.chunks = []; this.last = []; this.lastN = []
    for (let k = 0; k < pos.length; k += CHUNK_FILL) {
      const n = Math.min(CHUNK_FILL, pos.length - k)
      const cap = pos.length <= CHUNK_FILL ? capFor(n) : CHUNK_CAP
      const c = newChunk(cap, n, this.gen)
      c.pos.set(pos.subarray(k, k + n)); c.own.set(own.subarray(k, k + n))
      this.chunks.push(c); this.last.push(c.pos[n - 1]!); this.lastN.push(numAt(c, n - 1))
    }
    this.size = members; this.tokenCount = pos.length; this.membersCache = undefined
  }

  /** First chunk whose last position is >= p, or chunks.length (`pn`: `Number(p)`). */
  private chunkFor (p: bigint, pn = Number(p)): number {
    // on doubles first (no BigInt comparison), from where a uniform spread of positions puts it (the
    // positions are hashes: a few probes near one cache line instead of a binary search over the
    // whole directory), then exactly over the few chunks whose last double equals pn
    const a = this.lastN
    const len = a.length
    let lo = 0; let hi = len
    if (len > 8) {
      let g = Math.floor(pn / RING_SIZE_N * len)
      if (g >= len) g = len - 1
      if (g < 0) g = 0
      if (a[g]! < pn) {
        lo = g + 1; hi = lo
        for (let step = 1; hi < len && a[hi]! < pn; step *= 2) { lo = hi + 1; hi = lo + step }
        if (hi > len) hi = len
      } else {
        hi = g; lo = g - 1
        for (let step = 1; lo >= 0 && a[lo]! >= pn; step *= 2) { hi = lo; lo = hi - step }
        lo = lo < 0 ? 0 : lo + 1
      }
    }
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (a[mid]! < pn) lo = mid + 1; else hi = mid }
    const last = this.last
    while (lo < len && a[lo] === pn && last[lo]! < p) lo++
    return lo
  }

  /** The first token with position >= p, wrapping to the first token (undefined on an empty ring). */
  successor (p: bigint): Cursor | undefined {
    if (this.chunks.length === 0) return undefined
    const pn = Number(p)
    const c = this.chunkFor(p, pn)
    if (c === this.chunks.length) return { c: 0, i: 0 }
    const ch = this.chunks[c]!
    const n = ch.n
    let lo = 0; let hi = n
    if (n > 8) {
      // interpolate between the chunk's first and last positions, then gallop from there (the same
      // search as chunkFor's, written out: one helper over both kinds of array measured ≈ 1.5× slower)
      const f = numAt(ch, 0); const l = numAt(ch, n - 1)
      let g = l > f ? Math.floor((pn - f) / (l - f) * (n - 1)) : 0
      if (g >= n) g = n - 1
      if (g < 0) g = 0
      if (numAt(ch, g) < pn) {
        lo = g + 1; hi = lo
        for (let step = 1; hi < n && numAt(ch, hi) < pn; step *= 2) { lo = hi + 1; hi = lo + step }
        if (hi > n) hi = n
      } else {
        hi = g; lo = g - 1
        for (let step = 1; lo >= 0 && numAt(ch, lo) >= pn; step *= 2) { hi = lo; lo = hi - step }
        lo = lo < 0 ? 0 : lo + 1
      }
    }
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (numAt(ch, mid) < pn) lo = mid + 1; else hi = mid }
    // exactly only where the doubles tie (a larger double is a larger position)
    while (lo < n && numAt(ch, lo) === pn && ch.pos[lo]! < p) lo++
    return { c, i: lo }
  }

  next (x: Cursor): void {
    if (++x.i >= this.chunks[x.c]!.n) { x.i = 0; x.c = x.c + 1 === this.chunks.length ? 0 : x.c + 1 }
  }

  prev (x: Cursor): void {
    if (--x.i < 0) { x.c = x.c === 0 ? this.chunks.length - 1 : x.c - 1; x.i = this.chunks[x.c]!.n - 1 }
  }

  ownerAt (x: Cursor): number { return this.chunks[x.c]!.own[x.i]! }
  posAt (x: Cursor): bigint { return this.chunks[x.c]!.pos[x.i]! }

  /** Owner names met walking clockwise from `from`, distinct (at most min(r, size)): the hot path of lookups. */
  walkNames (from: Cursor, r: number): PeerId[] {
    const out: PeerId[] = []
    const want = Math.min(r, this.size)
    if (want === 0) return out
    const names = this.table.names
    if (want > SCRATCH.length) return this.walk(from, r).map(s => names[s]!)
    const k = this.scan(from, want)
    for (let q = 0; q < k; q++) out.push(names[SCRATCH[q]!]!)
    return out
  }

  /** @internal The first `want` (≤ SCRATCH.length) distinct owner slots clockwise from `from`, into SCRATCH; returns how many. */
  scan (from: Cursor, want: number): number {
    let c = from.c; let i = from.i; let k = 0
    let ch = this.chunks[c]!
    for (let j = 0; j < this.tokenCount && k < want; j++) {
      const o = ch.own[i]!
      let dup = false
      for (let q = 0; q < k; q++) if (SCRATCH[q] === o) { dup = true; break }
      if (!dup) SCRATCH[k++] = o
      if (++i >= ch.n) { i = 0; c = c + 1 === this.chunks.length ? 0 : c + 1; ch = this.chunks[c]! }
    }
    return k
  }

  /** Distinct owner slots met walking clockwise from `from` (at most min(r, size)). */
  walk (from: Cursor, r: number): number[] {
    const out: number[] = []
    const want = Math.min(r, this.size)
    if (want === 0) return out
    const x = { c: from.c, i: from.i }
    for (let j = 0; j < this.tokenCount && out.length < want; j++) {
      const o = this.ownerAt(x)
      if (!out.includes(o)) out.push(o)
      this.next(x)
    }
    return out
  }

  /** Add to `out` the distinct owner slots met walking clockwise from `from` (at most min(r, size)); allocates nothing. */
  walkInto (from: Cursor, r: number, out: Set<number>): void {
    if (r > SCRATCH.length) { for (const m of this.walk(from, r)) out.add(m); return }
    const k = this.chunks.length === 0 ? 0 : this.scan(from, Math.min(r, this.size))
    for (let q = 0; q < k; q++) out.add(SCRATCH[q]!)
  }

  /** Does the ring hold member slot `s`? (its first token is present) */
  hasSlot (s: number): boolean {
    if (this.chunks.length === 0) return false
    const p = this.table.tokensOf(s)[0]!
    const c = this.chunkFor(p)
    if (c === this.chunks.length) return false
    const x = this.successor(p)!
    for (let k = 0; k < this.tokenCount && this.posAt(x) === p; k++) {
      if (this.ownerAt(x) === s) return true
      this.next(x)
    }
    return false
  }

  /** A chunk this data may write (copied first when shared). */
  private writable (c: number): Chunk {
    const ch = this.chunks[c]!
    if (ch.gen === this.gen) return ch
    const cap = ch.pos.length
    const copy = chunkOn((ch.pos.buffer as ArrayBuffer).slice(0), cap, ch.n, this.gen)
    this.chunks[c] = copy
    return copy
  }

  /** (position, owner name) order: ties broken by member id, so the ring stays a pure function of the set. */
  private before (p: bigint, s: number, q: bigint, t: number): boolean {
    return p < q || (p === q && this.table.names[s]! < this.table.names[t]!)
  }

  insertToken (p: bigint, s: number): void {
    this.tokenCount++
    if (this.chunks.length === 0) {
      const ch = newChunk(16, 1, this.gen)
      ch.pos[0] = p; ch.own[0] = s
      this.chunks.push(ch); this.last.push(p); this.lastN.push(Number(p))
      return
    }
    let c = this.chunkFor(p)
    if (c === this.chunks.length) c--
    let ch = this.writable(c)
    if (ch.n === ch.pos.length && ch.n < CHUNK_CAP) {
      // a small ring's chunk grows (doubling) up to the chunk size
      const cap = Math.min(CHUNK_CAP, ch.n * 2)
      const grown = newChunk(cap, ch.n, ch.gen)
      grown.pos.set(ch.pos.subarray(0, ch.n)); grown.own.set(ch.own.subarray(0, ch.n))
      ch.pos = grown.pos; ch.own = grown.own; ch.w = grown.w
    }
    if (ch.n === CHUNK_CAP) {
      const half = CHUNK_CAP >>> 1
      const right = newChunk(CHUNK_CAP, ch.n - half, this.gen)
      right.pos.set(ch.pos.subarray(half, ch.n)); right.own.set(ch.own.subarray(half, ch.n))
      ch.n = half
      this.chunks.splice(c + 1, 0, right); this.last.splice(c + 1, 0, right.pos[right.n - 1]!); this.lastN.splice(c + 1, 0, numAt(right, right.n - 1))
      this.last[c] = ch.pos[half - 1]!; this.lastN[c] = numAt(ch, half - 1)
      if (this.before(ch.pos[half - 1]!, ch.own[half - 1]!, p, s)) { c++; ch = right }
    }
    let i = 0; let hi = ch.n
    while (i < hi) { const mid = (i + hi) >>> 1; if (ch.pos[mid]! < p) i = mid + 1; else hi = mid }
    while (i < ch.n && this.before(ch.pos[i]!, ch.own[i]!, p, s)) i++ // ties: by member id
    ch.pos.copyWithin(i + 1, i, ch.n); ch.own.copyWithin(i + 1, i, ch.n)
    ch.pos[i] = p; ch.own[i] = s; ch.n++
    this.last[c] = ch.pos[ch.n - 1]!; this.lastN[c] = numAt(ch, ch.n - 1)
  }

  removeToken (p: bigint, s: number): boolean {
    const c = this.chunkFor(p)
    if (c === this.chunks.length) return false
    // equal positions (ties) may spill into the next chunks
    for (let cc = c; cc < this.chunks.length; cc++) {
      const ro = this.chunks[cc]!
      let lo = 0; let hi = ro.n
      while (lo < hi) { const mid = (lo + hi) >>> 1; if (ro.pos[mid]! < p) lo = mid + 1; else hi = mid }
      for (let i = lo; i < ro.n && ro.pos[i] === p; i++) {
        if (ro.own[i] !== s) continue
        const ch = this.writable(cc)
        ch.pos.copyWithin(i, i + 1, ch.n); ch.own.copyWithin(i, i + 1, ch.n); ch.n--
        this.tokenCount--
        if (ch.n === 0) { this.chunks.splice(cc, 1); this.last.splice(cc, 1); this.lastN.splice(cc, 1) } else { this.last[cc] = ch.pos[ch.n - 1]!; this.lastN[cc] = numAt(ch, ch.n - 1) }
        return true
      }
      if (lo < ro.n) return false
    }
    return false
  }

  /** Add a member's tokens; false when already present. */
  addMember (m: PeerId): boolean {
    const s = this.table.slot(m)
    if (this.hasSlot(s)) return false
    for (const p of this.table.tokensOf(s)) this.insertToken(p, s)
    this.size++; this.membersCache = undefined
    return true
  }

  /** Remove a member's tokens; false when absent. */
  removeMember (m: PeerId): boolean {
    const s = this.table.slots.get(m)
    if (s === undefined || !this.hasSlot(s)) return false
    for (const p of this.table.tokensOf(s)) this.removeToken(p, s)
    this.size--; this.membersCache = undefined
    return true
  }

  members (): PeerId[] {
    if (this.membersCache !== undefined) return this.membersCache
    const seen = new Set<number>()
    for (const ch of this.chunks) for (let i = 0; i < ch.n; i++) seen.add(ch.own[i]!)
    this.membersCache = [...seen].map(s => this.table.names[s]!).sort()
    return this.membersCache
  }
}

/**
 * Consistent-hash ring. Each member owns `vnodes` tokens at hash(member, i); a key at position p is
 * owned by the distinct members met walking clockwise from the first token >= p. Tokens depend only
 * on the member id: adding a member moves only the keys in its new ranges.
 *
 * A `Ring` never changes (except a {@link LiveRing} and the {@link RingHandle}s following one).
 * Storage: a chunked sorted array of the 64-bit token positions with 32-bit owner slots (12 bytes per
 * token); {@link Ring.derive} and the live ring's add/remove work in O(vnodes · (log N + chunk)),
 * sharing untouched chunks with the rings they came from.
 */
export class Ring {
  readonly hasher: Hasher
  readonly vnodes: number
  /** @internal the token storage (a handle switches it; a live ring mutates it). */
  _d: RingData

  constructor (hasher: Hasher, members: Iterable<PeerId>, init: RingInit = {}, tokens?: TokenSource) {
    this.hasher = hasher
    this.vnodes = init.vnodes ?? DEFAULT_VNODES
    if (!Number.isInteger(this.vnodes) || this.vnodes < 1 || this.vnodes > 4096) {
      throw new RangeError(`vnodes must be an integer in [1, 4096], got ${this.vnodes}`)
    }
    const vn = this.vnodes
    const table = new MemberTable(tokens ?? ((m: PeerId) => memberTokens(hasher, m, vn)))
    this._d = Ring.build(table, vn, members)
  }

  /** @internal */
  static build (table: MemberTable, vnodes: number, members: Iterable<PeerId>): RingData {
    const list = [...new Set(members)].sort()
    const slots = list.map(m => table.slot(m))
    const n = list.length * vnodes
    const toks: Array<{ p: bigint, o: number }> = new Array(n)
    let k = 0
    for (let o = 0; o < list.length; o++) {
      for (const p of table.tokensOf(slots[o]!)) toks[k++] = { p, o }
    }
    // ties (astronomically unlikely) are broken by member order so the ring stays a pure function of the set
    toks.sort((a, b) => a.p < b.p ? -1 : a.p > b.p ? 1 : a.o - b.o)
    const pos = new BigUint64Array(n); const own = new Uint32Array(n)
    for (let j = 0; j < n; j++) { pos[j] = toks[j]!.p; own[j] = slots[toks[j]!.o]! }
    const d = new RingData(table, vnodes)
    d.fill(pos, own, list.length)
    return d
  }

  /** @internal a Ring over existing data. */
  static wrap (hasher: Hasher, d: RingData): Ring {
    const r = Object.create(Ring.prototype) as Ring
    const w = r as unknown as { hasher: Hasher, vnodes: number, _d: RingData }
    w.hasher = hasher; w.vnodes = d.vnodes; w._d = d
    return r
  }

  /**
   * The ring of `members`, derived from this one by removing and adding only the members that
   * differ (each in O(vnodes · (log N + chunk)); untouched chunks are shared). The result is identical
   * to `new Ring(hasher, members)`. `tokens` is ignored (the member table of this ring is reused).
   */
  derive (members: Iterable<PeerId>, _tokens?: TokenSource): Ring {
    const list = new Set(members)
    const d0 = this._d
    const added: PeerId[] = []
    for (const m of list) { const s = d0.table.slots.get(m); if (s === undefined || !d0.hasSlot(s)) added.push(m) }
    const removed = list.size - added.length === d0.size ? [] : d0.members().filter(m => !list.has(m))
    if (added.length === 0 && removed.length === 0) return this
    if ((added.length + removed.length) * 4 > list.size + 4) return Ring.wrap(this.hasher, Ring.build(d0.table, this.vnodes, list))
    const d = d0.clone()
    for (const m of removed) d.removeMember(m)
    for (const m of added) d.addMember(m)
    return Ring.wrap(this.hasher, d)
  }

  /** Members, sorted. (Computed on first use for a changed ring: O(tokens).) */
  get members (): readonly PeerId[] { return this._d.members() }
  get size (): number { return this._d.size }
  has (m: PeerId): boolean {
    const s = this._d.table.slots.get(m)
    return s !== undefined && this._d.hasSlot(s)
  }

  /** A new ring with `m` added (this ring when present). */
  with (m: PeerId): Ring {
    if (this.has(m)) return this
    const d = this._d.clone(); d.addMember(m)
    return Ring.wrap(this.hasher, d)
  }

  /** A new ring with `m` removed (this ring when absent). */
  without (m: PeerId): Ring {
    if (!this.has(m)) return this
    const d = this._d.clone(); d.removeMember(m)
    return Ring.wrap(this.hasher, d)
  }

  /** An immutable ring of the current members (a plain Ring is its own snapshot). */
  snapshot (): Ring { return this }

  /** Ring position of a key. */
  position (key: string | Uint8Array): bigint { return this.hasher.hash64(key) }

  private names (slots: number[]): PeerId[] {
    const names = this._d.table.names
    return slots.map(s => names[s]!)
  }

  /** The R distinct members owning `key` (primary first, then clockwise successors). */
  owners (key: string | Uint8Array, r: number): PeerId[] {
    return this.ownersAt(this.position(key), r)
  }

  ownersAt (pos: bigint, r: number): PeerId[] {
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    const x = this._d.successor(pos)
    return x === undefined ? [] : this._d.walkNames(x, r)
  }

  /**
   * Owners of many positions visited in ascending order (a checker's pass over keys sorted by ring
   * position): walks the token array forward instead of searching it for each position, so the pass
   * reads the ring (and the owners' data) in order. Call the returned function with non-decreasing
   * positions (a smaller one starts over with a search); the array it returns is shared between
   * calls with the same successor token and must not be modified. The ring must not change meanwhile.
   */
  sweep (r: number): (pos: bigint) => readonly PeerId[] {
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    const d = this._d
    let cur: Cursor | undefined
    /** Position of the token under `cur`; RING_SIZE once positions wrapped past the last token. */
    let tok = 0n
    let prev = 0n
    let owners: PeerId[] = []
    const seek = (pos: bigint): void => {
      cur = d.successor(pos)!
      const p = d.posAt(cur)
      tok = p >= pos ? p : RING_SIZE // past the last token: the first token owns it, and every larger position
      owners = d.walkNames(cur, r)
    }
    return (pos: bigint): readonly PeerId[] => {
      if (d.tokenCount === 0) return []
      if (cur === undefined || pos < prev) { prev = pos; seek(pos); return owners }
      prev = pos
      if (pos <= tok) return owners
      // a few steps forward, else search
      for (let k = 0; k < 8; k++) {
        if (cur.c === d.chunks.length - 1 && cur.i === d.chunks[cur.c]!.n - 1) { seek(pos); return owners }
        d.next(cur)
        const p = d.posAt(cur)
        if (p >= pos) { tok = p; owners = d.walkNames(cur, r); return owners }
      }
      seek(pos)
      return owners
    }
  }

  /** Every arc of the ring with its R owners (one arc per token). */
  ranges (r: number): RingRange[] {
    const d = this._d
    const out: RingRange[] = []
    if (d.tokenCount === 0) return out
    const x: Cursor = { c: 0, i: 0 }
    const p: Cursor = { c: 0, i: 0 }; d.prev(p)
    for (let j = 0; j < d.tokenCount; j++) {
      out.push({ start: d.posAt(p), end: d.posAt(x), owners: this.names(d.walk(x, r)) })
      d.next(p); d.next(x)
    }
    return out
  }

  /** The arcs `member` holds a replica of (as primary or as one of the R-1 successors). */
  rangesOf (member: PeerId, r: number): RingRange[] {
    return this.ranges(r).filter(x => x.owners.includes(member))
  }

  /** Members that share at least one replicated range with `member` (its anti-entropy partners), sorted. */
  replicaPeers (member: PeerId, r: number): PeerId[] {
    const d = this._d
    const o = d.table.slots.get(member)
    if (o === undefined || !d.hasSlot(o)) return []
    const out = new Set<number>()
    const distinct: number[] = []
    for (const tp of d.table.tokensOf(o)) {
      // this member's token j (first match of its position and owner)
      const j = d.successor(tp)!
      for (let k = 0; k < d.tokenCount && !(d.posAt(j) === tp && d.ownerAt(j) === o); k++) d.next(j)
      // the range ending at token k holds `member` iff tokens k..j carry at most r distinct owners
      distinct.length = 0; distinct.push(o)
      const k = j
      for (let steps = 0; steps < d.tokenCount; steps++, d.prev(k)) {
        const prev = d.ownerAt(k)
        if (steps > 0 && prev === o) break
        if (!distinct.includes(prev)) distinct.push(prev)
        if (distinct.length > r) break
        d.walkInto(k, r, out)
      }
    }
    out.delete(o)
    return this.names([...out]).sort()
  }

  /**
   * Members whose replicated ranges can change when `member` joins or leaves this ring: for each of
   * its tokens, the `r - 1` distinct other members before it and the `r` distinct other members after it.
   * Only these need a handoff; every other member keeps its ranges. Sorted; never includes `member`.
   */
  affectedBy (member: PeerId, r: number): PeerId[] {
    const d = this._d
    if (d.tokenCount === 0) return []
    const s = d.table.slot(member)
    const out = new Set<number>()
    for (const tp of d.table.tokensOf(s)) {
      const start = d.successor(tp)!
      // clockwise: from the first token >= tp (the member's own tokens skipped)
      const fw = { c: start.c, i: start.i }
      const seen: number[] = []
      for (let k = 0; k < d.tokenCount && seen.length < r; k++, d.next(fw)) {
        const o = d.ownerAt(fw)
        if (o !== s && !seen.includes(o)) { seen.push(o); out.add(o) }
      }
      // counter-clockwise: from the token before it (the ranges ending there hold r-1 others at most before it)
      const bw = { c: start.c, i: start.i }; d.prev(bw)
      seen.length = 0
      for (let k = 0; k < d.tokenCount && seen.length < r - 1; k++, d.prev(bw)) {
        const o = d.ownerAt(bw)
        if (o !== s && !seen.includes(o)) { seen.push(o); out.add(o) }
      }
    }
    out.delete(s)
    return this.names([...out]).sort()
  }

  /**
   * The arcs in which adding or removing `member` changes the owner set (at replication factor `r`):
   * for each of its tokens t, `(u, t]` where u is the token, walking counter-clockwise from t, of the
   * r-th distinct other member. Outside these arcs `ownersAt` is the same with and without `member`,
   * so a store told of them (`setRing(ring, { changed })`) walks only the items inside. Computed on a
   * ring that holds `member` (after an add, before a remove); one arc `(t, t]` (the whole ring) when
   * fewer than r other members exist. Empty when `member` is not in this ring.
   */
  changedArcs (member: PeerId, r: number): RingArc[] {
    const d = this._d
    const s = d.table.slots.get(member)
    if (s === undefined || !d.hasSlot(s)) return []
    const toks = d.table.tokensOf(s)
    if (d.size - 1 < r) return [new CoarseArc(toks[0]!, toks[0]!)]
    const out: RingArc[] = []
    const seen: number[] = []
    for (const tp of toks) {
      const x = d.successor(tp)!
      // counter-clockwise from the token before t until the r-th distinct other owner
      d.prev(x)
      seen.length = 0
      for (let k = 0; k < d.tokenCount; k++, d.prev(x)) {
        const o = d.ownerAt(x)
        if (o === s || seen.includes(o)) continue
        seen.push(o)
        if (seen.length === r) break
      }
      out.push(new CoarseArc(d.posAt(x), tp))
    }
    return out
  }

  /**
   * The arcs `member` holds a replica of, as {@link rangesOf} gives them (sorted by end; empty arcs
   * between tokens at equal positions left out), computed from the member's own tokens in
   * O(vnodes · (log N + r)) instead of walking the whole ring; owners are kept as member slots and
   * named only on demand. Undefined when this ring cannot answer that cheaply (a live view such as
   * {@link RingPlus}: use `ownersAt`). Lets a store find which of its items it shares with a peer
   * without a ring search per item (anti-entropy).
   */
  replicaRanges (member: PeerId, r: number): ReplicaRanges | undefined {
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    const d = this._d
    const table = d.table
    const o = table.slots.get(member)
    if (o === undefined || d.chunks.length === 0) return new ReplicaRanges(table, r, [], [], new Uint32Array(0))
    // ranges walking back from each of the member's tokens, keyed by their end token's place
    const keys: number[] = []; const starts: bigint[] = []; const ends: bigint[] = []
    const own: number[] = []
    const distinct: number[] = []
    const single = d.tokenCount === 1
    const want = Math.min(r, d.size)
    for (const tp of table.tokensOf(o)) {
      // this member's token j (the first match of its position and owner; none: not a member)
      const j = d.successor(tp)!
      let found = false
      for (let k = 0; k < d.tokenCount && d.posAt(j) === tp; k++, d.next(j)) if (d.ownerAt(j) === o) { found = true; break }
      if (!found) return new ReplicaRanges(table, r, [], [], new Uint32Array(0))
      // the range ending at token k holds `member` iff tokens k..j carry at most r distinct owners
      distinct.length = 0; distinct.push(o)
      let end = tp
      for (let steps = 0; steps < d.tokenCount; steps++) {
        const prev = d.ownerAt(j)
        if (steps > 0 && prev === o) break
        if (!distinct.includes(prev)) distinct.push(prev)
        if (distinct.length > r) break
        const key = j.c * CHUNK_CAP + j.i
        const big = want > SCRATCH.length ? d.walk(j, r) : undefined
        const n = big !== undefined ? big.length : d.scan(j, want)
        d.prev(j)
        const start = d.posAt(j)
        if (start !== end || single) {
          keys.push(key); starts.push(start); ends.push(end)
          for (let q = 0; q < r; q++) own.push(q < n ? (big !== undefined ? big[q]! : SCRATCH[q]!) : NO_SLOT)
        }
        end = start
      }
    }
    // in ring order (a range per token: the same key twice only for tied positions)
    const order = keys.map((_, i) => i).sort((a, b) => keys[a]! - keys[b]!)
    const s: bigint[] = []; const e: bigint[] = []; const w: number[] = []
    for (let q = 0; q < order.length; q++) {
      const i = order[q]!
      if (q > 0 && keys[i] === keys[order[q - 1]!]) continue
      s.push(starts[i]!); e.push(ends[i]!)
      for (let x = 0; x < r; x++) w.push(own[i * r + x]!)
    }
    return new ReplicaRanges(table, r, s, e, Uint32Array.from(w))
  }

  /** Fraction of the key space every member stores, replicas counted. */
  loadStats (r: number): LoadStats {
    const memberList = this.members
    const load = new Map<PeerId, number>(memberList.map(m => [m, 0]))
    for (const rg of this.ranges(r)) {
      const len = arcLength(rg.start, rg.end)
      const f = Number(len) / Number(RING_SIZE)
      for (const o of rg.owners) load.set(o, load.get(o)! + f)
    }
    const vals = [...load.values()]
    const replicas = Math.min(r, memberList.length)
    const mean = vals.length === 0 ? 0 : replicas / vals.length
    let max = vals.length === 0 ? 0 : -Infinity; let min = vals.length === 0 ? 0 : Infinity
    for (const v of vals) { if (v > max) max = v; if (v < min) min = v }
    return { members: vals.length, replicas, load, mean, max, min, ratio: mean === 0 ? 0 : max / mean }
  }
}

/** No owner (a range of a ring with fewer than r members). */
const NO_SLOT = 0xffffffff

/**
 * The arcs one member holds a replica of ({@link Ring.replicaRanges}): `starts`/`ends` sorted by end,
 * owners kept as member slots (named on demand: naming every owner reads member data all over memory).
 */
export class ReplicaRanges {
  /** @internal */
  constructor (
    private readonly table: MemberTable,
    private readonly r: number,
    readonly starts: readonly bigint[],
    readonly ends: readonly bigint[],
    private readonly own: Uint32Array
  ) {}

  get length (): number { return this.starts.length }

  /** The arcs among these whose owners include `peer` (as {@link CoarseArc}s). */
  sharedWith (peer: PeerId): CoarseArc[] {
    const s = this.table.slots.get(peer)
    const out: CoarseArc[] = []
    if (s === undefined) return out
    const r = this.r
    for (let i = 0; i < this.starts.length; i++) {
      for (let q = 0; q < r; q++) if (this.own[i * r + q] === s) { out.push(new CoarseArc(this.starts[i]!, this.ends[i]!)); break }
    }
    return out
  }

  /** Every owner of these arcs but `member`, sorted: {@link Ring.replicaPeers}. */
  peers (member: PeerId): PeerId[] {
    const self = this.table.slots.get(member)
    const seen: number[] = []
    for (const o of this.own) if (o !== NO_SLOT && o !== self && !seen.includes(o)) seen.push(o)
    return seen.map(o => this.table.names[o]!).sort()
  }

  /** The arcs with their owners named (`rangesOf`'s form). */
  ranges (): RingRange[] {
    const out: RingRange[] = []
    for (let i = 0; i < this.starts.length; i++) {
      const owners: PeerId[] = []
      for (let q = 0; q < this.r; q++) { const o = this.own[i * this.r + q]!; if (o !== NO_SLOT) owners.push(this.table.names[o]!) }
      out.push({ start: this.starts[i]!, end: this.ends[i]!, owners })
    }
    return out
  }
}

/**
 * A ring changed in place, one member at a time (O(vnodes · (log N + chunk)) per join or leave), for a
 * simulator's global membership with 10^5 members. `snapshot()` freezes the current state in
 * O(N · vnodes / chunk) (chunks are shared, copied on write), and {@link RingHandle}s follow it.
 */
export class LiveRing extends Ring {
  constructor (hasher: Hasher, init: RingInit = {}, tokens?: TokenSource) {
    super(hasher, [], init, tokens)
  }

  /** Changes so far (views cache their copies per version). */
  version = 0
  /** Add a member; false when it was already there. */
  add (m: PeerId): boolean { this.version++; return this._d.addMember(m) }
  /** Remove a member; false when it was not there. */
  remove (m: PeerId): boolean { this.version++; return this._d.removeMember(m) }

  override with (m: PeerId): Ring { return this.snapshot().with(m) }
  override without (m: PeerId): Ring { return this.snapshot().without(m) }
  override derive (members: Iterable<PeerId>, tokens?: TokenSource): Ring { return this.snapshot().derive(members, tokens) }

  /** An immutable copy of the current state. */
  override snapshot (): Ring { return Ring.wrap(this.hasher, this._d.clone()) }

  /** An immutable copy of the current state with `m` added (a joiner's own view before the others know it). */
  snapshotWith (m: PeerId): Ring { const d = this._d.clone(); d.addMember(m); return Ring.wrap(this.hasher, d) }

  /** An immutable copy of the current state without `m` (a leaver's view). */
  snapshotWithout (m: PeerId): Ring { const d = this._d.clone(); d.removeMember(m); return Ring.wrap(this.hasher, d) }

  /**
   * A view of this live ring with `m` added, without copying anything: follows every later change
   * (see {@link RingPlus}). A joiner's own view before the others know of it.
   */
  plus (m: PeerId): Ring { return this.has(m) ? this.handle() : new RingPlus(this, m) }

  /**
   * A view of this live ring without `m`, copying nothing: follows every later change (see
   * {@link RingMinus}). A member that has not learnt of `m`'s join yet.
   */
  minus (m: PeerId): Ring { return new RingMinus(this, m) }

  /** A handle following this live ring (see {@link RingHandle}). */
  handle (): RingHandle { return new RingHandle(this) }
}

/**
 * A view of a {@link LiveRing} that differs from it by one member and follows its changes: lookups
 * are computed on the fly by the subclass; the rarely used whole-ring queries work on a copy made
 * once per change of the live ring.
 */
abstract class LiveView extends Ring {
  private cached: { version: number, ring: Ring } | undefined
  constructor (protected readonly live: LiveRing) {
    super(live.hasher, [], { vnodes: live.vnodes })
    this._d = live._d
  }

  /** A copy of the view as it is now. */
  protected abstract copy (): Ring

  protected materialize (): Ring {
    if (this.cached?.version !== this.live.version) this.cached = { version: this.live.version, ring: this.copy() }
    return this.cached.ring
  }

  override ranges (r: number): RingRange[] { return this.materialize().ranges(r) }
  override replicaPeers (member: PeerId, r: number): PeerId[] { return this.materialize().replicaPeers(member, r) }
  override affectedBy (member: PeerId, r: number): PeerId[] { return this.materialize().affectedBy(member, r) }
  override changedArcs (member: PeerId, r: number): RingArc[] { return this.materialize().changedArcs(member, r) }
  /** Not answered by a view (it would need a copy): undefined, use `ownersAt`. */
  override replicaRanges (_member: PeerId, _r: number): ReplicaRanges | undefined { return undefined }
  override sweep (r: number): (pos: bigint) => readonly PeerId[] { return this.materialize().sweep(r) }
  override with (m: PeerId): Ring { return this.materialize().with(m) }
  override without (m: PeerId): Ring { return this.materialize().without(m) }
  override derive (members: Iterable<PeerId>, tokens?: TokenSource): Ring { return this.materialize().derive(members, tokens) }
  override snapshot (): Ring { return this.materialize() }
}

/**
 * A live ring plus one member that is not in it (yet): lookups (`ownersAt`, `owners`, `has`, `size`)
 * merge the member's tokens into the live ring's walk on the fly; the rarely used whole-ring queries
 * (ranges, replicaPeers, members, ...) work on a copy made for the call.
 */
export class RingPlus extends LiveView {
  private readonly toks: bigint[]
  constructor (live: LiveRing, readonly extra: PeerId) {
    super(live)
    this.toks = [...memberTokens(live.hasher, extra, live.vnodes)].sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
  }

  protected copy (): Ring { return this.merged ? this.live.snapshotWith(this.extra) : this.live.snapshot() }
  private mergedAt = -1
  private mergedNow = false
  /** Is the extra member still missing from the live ring (checked once per live change)? */
  private get merged (): boolean {
    if (this.mergedAt !== this.live.version) { this.mergedAt = this.live.version; this.mergedNow = !this.live.has(this.extra) }
    return this.mergedNow
  }

  override get size (): number { return this._d.size + (this.merged ? 1 : 0) }
  override get members (): readonly PeerId[] { return this.merged ? this.materialize().members : this._d.members() }
  override has (m: PeerId): boolean { return m === this.extra || this.live.has(m) }

  override ownersAt (pos: bigint, r: number): PeerId[] {
    if (!this.merged) return super.ownersAt(pos, r)
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    const d = this._d
    // the extra member's first token at or after pos (cyclic); clockwise order from pos compares
    // (wrapped past 2^64, position) pairs, so no distance arithmetic is needed
    const t = this.toks
    let qi = 0
    while (qi < t.length && t[qi]! < pos) qi++
    const qWrapped = qi === t.length
    const q = t[qWrapped ? 0 : qi]!
    const out: PeerId[] = []
    let placed = false
    const x = d.successor(pos)
    if (x !== undefined) {
      const seen: number[] = []
      const want = Math.min(r, d.size)
      for (let k = 0; k < d.tokenCount && seen.length < want && out.length < r; k++, d.next(x)) {
        const o = d.ownerAt(x)
        if (seen.includes(o)) continue
        if (!placed) {
          const p = d.posAt(x)
          const pWrapped = p < pos
          if (pWrapped !== qWrapped ? pWrapped : p > q || (p === q && d.table.names[o]! > this.extra)) { out.push(this.extra); placed = true; if (out.length >= r) break }
        }
        seen.push(o); out.push(d.table.names[o]!)
      }
    }
    if (!placed && out.length < r) out.push(this.extra)
    return out.length > r ? out.slice(0, r) : out
  }

  /** Anti-entropy partners of another member: the live ring's (no copy); of the extra member: exact. */
  override replicaPeers (member: PeerId, r: number): PeerId[] {
    return member === this.extra && this.merged ? super.replicaPeers(member, r) : this.live.replicaPeers(member, r)
  }

}

/**
 * A live ring without one of its members: lookups (`ownersAt`, `owners`, `has`, `size`) skip the
 * member's tokens on the fly (while it is in the live ring; after it left, the view equals the live
 * ring); the rarely used whole-ring queries work on a copy made once for the view.
 */
export class RingMinus extends LiveView {
  constructor (live: LiveRing, readonly missing: PeerId) { super(live) }

  private slot (): number | undefined {
    if (this.slotAt !== this.live.version) {
      this.slotAt = this.live.version
      const s = this._d.table.slots.get(this.missing)
      this.slotNow = s !== undefined && this._d.hasSlot(s) ? s : undefined
    }
    return this.slotNow
  }

  private slotAt = -1
  private slotNow: number | undefined

  protected copy (): Ring { return this.live.has(this.missing) ? this.live.snapshotWithout(this.missing) : this.live.snapshot() }

  override get size (): number { return this._d.size - (this.slot() !== undefined ? 1 : 0) }
  override get members (): readonly PeerId[] { return this.slot() !== undefined ? this.materialize().members : this._d.members() }

  /**
   * Anti-entropy partners: the live ring's, without the missing member (no copy of the ring; a member
   * that the missing one displaced from a range is not among them — a partner is picked from these).
   */
  override replicaPeers (member: PeerId, r: number): PeerId[] {
    return member === this.missing ? [] : this.live.replicaPeers(member, r).filter(p => p !== this.missing)
  }
  override has (m: PeerId): boolean { return m !== this.missing && this.live.has(m) }

  override ownersAt (pos: bigint, r: number): PeerId[] {
    const s = this.slot()
    if (s === undefined) return super.ownersAt(pos, r)
    if (!Number.isInteger(r) || r < 1) throw new RangeError(`replication factor must be a positive integer, got ${r}`)
    const d = this._d
    const out: PeerId[] = []
    const want = Math.min(r, d.size - 1)
    const x = d.successor(pos)
    if (x === undefined || want <= 0) return out
    const seen: number[] = []
    for (let k = 0; k < d.tokenCount && seen.length < want; k++, d.next(x)) {
      const o = d.ownerAt(x)
      if (o === s || seen.includes(o)) continue
      seen.push(o); out.push(d.table.names[o]!)
    }
    return out
  }

}

/**
 * A Ring that shows another ring's data: it follows a {@link LiveRing} (seeing every change at once)
 * or is pinned to a snapshot. Give each simulated node its own handle: pin it before a change the node
 * has not learnt of yet, and install a fresh handle (store.setRing) once it has, so the store's
 * handoff compares the pinned old state with the live new one.
 */
export class RingHandle extends Ring {
  constructor (target: Ring) {
    super(target.hasher, [], { vnodes: target.vnodes })
    this._d = target._d
  }

  /** Show `target`'s data from now on (a live ring's data stays live, a snapshot's stays fixed). */
  follow (target: Ring): void { this._d = target._d }
  /** Does this handle currently show `target`'s data? */
  follows (target: Ring): boolean { return this._d === target._d }

  override snapshot (): Ring { return Ring.wrap(this.hasher, this._d.clone()) }
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
