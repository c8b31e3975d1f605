import type { AbortOptions, Clock, Logger, Rng, Startable, Timer } from '@sipring/interface'
import type { AbstractLevel } from 'abstract-level'
import { TypedEmitter } from './events.js'
import {
  MAX_HOPS, OverlayAbortError, OverlayError, QuorumError,
  type OverlayMessage, type OverlayNetwork, type PeerId, type Version, type WireItem
} from './network.js'
import { CoarseArc, type Hasher, type ReplicaRanges, type Ring, type RingArc } from './ring.js'

// ---------------------------------------------------------------- merge rules (pure)

/** Total order on versions: updated, then counter, then origin. */
export function compareVersions (a: Version, b: Version): number {
  if (a.updated !== b.updated) return a.updated < b.updated ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  return a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0
}

/**
 * Total order on whole items of one key: version first; on an equal version a tombstone beats a
 * value, then the later expiry, then the value's JSON. `merge = max` under this order is therefore
 * commutative, associative and idempotent, and a deletion (whose version is assigned above every
 * version its coordinator has seen) beats every older write.
 */
export function compareItems (a: WireItem, b: WireItem): number {
  const v = compareVersions(a.version, b.version)
  if (v !== 0) return v
  if (a.deleted !== b.deleted) return a.deleted ? 1 : -1
  if (a.expires !== b.expires) return a.expires < b.expires ? -1 : 1
  const ja = textOf(a); const jb = textOf(b)
  return ja < jb ? -1 : ja > jb ? 1 : 0
}

/** The value's JSON text of an item carrying `json` or `value` ('' for none). */
function textOf (it: WireItem): string {
  return it.json ?? JSON.stringify(it.value) ?? ''
}

/** The value of an item carrying `json` or `value` (decoded from the text when needed). */
export function itemValue<V> (it: WireItem<V>): V | undefined {
  if (it.deleted) return undefined
  if (it.json !== undefined) return it.json === '' ? undefined : JSON.parse(it.json) as V
  return it.value
}

/** The merge of two states of the same key (undefined = no state). */
export function mergeItem<T extends WireItem> (a: T | undefined, b: T | undefined): T | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return compareItems(a, b) >= 0 ? a : b
}

/**
 * A value-merge hook for the keys under one prefix (see `StoreInit.merge`): the join of two live
 * values of `key`. `newer` is the greater of the two items under `compareItems`. Return `newer`
 * itself when the merge equals it (the store then keeps that item as it is, JSON text and version
 * unchanged); any other result is stored as a new item with a version above both. Must be
 * commutative, associative and idempotent in content (replicas merge in any order) and must not
 * throw (a throw falls back to last-writer-wins).
 */
export interface ValueMerge<V = unknown> {
  (newer: V, older: V, key: string, ctx?: MergeContext<V>): V
  /**
   * Optional fast path, tried before the merge when a live value arrives for a key that holds a live
   * value: true when the join of `incoming` with the stored value (given as its JSON text, not decoded)
   * is `incoming` itself in content (then the store keeps `incoming`'s text without decoding the stored
   * one); false: unknown, the store decodes both and calls the merge. Must never be true when the merge
   * would give anything else; must not throw.
   */
  dominates?: (incoming: V, storedJson: string, key: string, ctx: MergeContext<V>) => boolean
}

/**
 * Where one of the two merged values came from (absent: unknown, check both). The other value is
 * this replica's state, which is always a merge output (a value arriving with no stored state is
 * merged with itself first, so a hook can validate it), unless both are the same incoming value.
 */
export interface MergeContext<V = unknown> {
  /** The value that arrived (`newer` or `older`, by identity). */
  incoming: V
  /**
   * The peer it arrived from, as the network authenticated it: this node for its own writes, the
   * coordinator for a client write it sent itself (not for one a non-owner forwarded), the owner
   * for its own replica in a read answer, the sender for replica traffic (handoff, repair,
   * anti-entropy).
   */
  from: PeerId
}

// ---------------------------------------------------------------- store

export type StoreDb = AbstractLevel<any, string, string>

export interface StoreComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  network: OverlayNetwork
  /** Positions keys on the ring (the same hasher the rings use). */
  hasher: Hasher
  /** Persistence (classic-level in the daemon, memory-level in tests). Optional: memory only. */
  db?: StoreDb
}

export interface StoreInit {
  /**
   * Keep every stored key's ring position, in a dense index of the item map (in its order, a slot
   * per key), for the handoff and anti-entropy walks. Saves hashing every key again at each walk
   * and reading entries outside the arcs walked; costs ≈ 20–40 B per key. Default false (a daemon
   * walks rarely and counts bytes per binding); the simulator turns it on.
   */
  cachePositions?: boolean
  /** Replicas per item (R). Default 3. */
  replicas?: number
  /** Acks needed for a write (W). Default 2. */
  writeQuorum?: number
  /** Answers needed for a read. Default 2. */
  readQuorum?: number
  /** Per-request timeout, ms. Default 1000. */
  requestTimeout?: number
  /** Longest item lifetime, ms (a larger ttl is refused). Default 24 h. */
  maxTtl?: number
  /** Tombstone lifetime, ms; must be >= maxTtl so an older write is expired before its tombstone goes. Default maxTtl. */
  tombstoneTtl?: number
  /** Anti-entropy period, ms (jittered ±25%). 0 disables. Default 30,000. */
  antiEntropyInterval?: number
  /** Digest buckets (a power of two, <= 4096). Default 256. */
  digestBuckets?: number
  /** Items per message (puts, handoff batches, diffs). Default 500. */
  maxItemsPerMessage?: number
  /** Longest key. Default 1024 characters. */
  maxKeyLength?: number
  /** Local capacity: new keys beyond it are refused. Default 1,000,000. */
  maxLocalItems?: number
  /** Versions further in the future than this are refused (clock skew guard). Default 60,000 ms. */
  maxClockSkew?: number
  /** Key prefix in the db (so the db can be shared). Default `ovs!`. */
  dbPrefix?: string
  /**
   * Hop limit of client reads and writes (`store.get`/`store.put` with `hops`): a receiver that does
   * not own the key in its view forwards to the owners it sees, counting `hops` down; at 0 it answers
   * locally, marked as not authoritative. 0 disables forwarding. Integer in [0, 8]. Default 2.
   */
  maxHops?: number
  /**
   * Batch the routed writes (`put`/`delete`) made in the same microtask round into one `store.put`
   * per owner, and the routed reads into one `store.gets` (each item still acknowledged / answered on
   * its own). Default true.
   */
  putBatching?: boolean
  /**
   * An interrupted handoff (a batch not acknowledged) resumes from that batch after `requestTimeout`
   * ms, doubling, at most this many times while the ring is unchanged. Default 5.
   */
  maxHandoffRetries?: number
  /**
   * Db writes are coalesced for this long (ms) into one `db.batch` (one operation per key, the latest
   * state): a batch costs ≈ 6 µs of CPU plus ≈ 2–3 µs per operation with classic-level, so batches of a
   * few operations cost 2–3× as much per write. A crash loses at most this long of replica writes (the
   * other replicas and read repair still hold them); `flush()`/`stop()` write them at once. 0: at the
   * end of the microtask round. Default 5 (as the location store's `writeDelayMs`).
   */
  persistDelay?: number
  /**
   * Value-merge hooks per key prefix (also `store.setMerge`). For a key under such a prefix, two live
   * values meeting anywhere (a write at a replica, read answers, read repair, handoff, anti-entropy)
   * are merged instead of the newer whole item winning; the merged item gets a version above both
   * unless it equals the newer one. Tombstones and expiry keep their meaning, but such keys are not
   * deleted: `delete` is refused, and so are tombstones arriving from other peers (a value carries its
   * own removals, e.g. per-part tombstones). Default: none (last writer wins on every key).
   */
  merge?: Record<string, ValueMerge<any>>
}

export interface GetOptions extends AbortOptions {
  /**
   * Ask only as many remote owners as the read quorum still needs (this node's own replica counts
   * as one answer when it is an owner); the others are asked when one of those fails, or all at
   * once when no quorum came within `requestTimeout / 4`. Read repair covers the owners that
   * answered (anti-entropy the rest). Default false: every owner is asked at once.
   */
  minimal?: boolean
}

export interface PutOptions extends AbortOptions {
  /** Lifetime in ms (default and maximum: maxTtl). */
  ttl?: number
}

/**
 * A local replica, kept compact (RAM per item is what limits how many bindings a node can hold):
 * the version as numbers and an interned origin (no Version object), the value as its JSON text
 * (decoded on read: replicas are written far more often than read), no ring position (hashed on
 * demand), never copied once stored, `deleted` = no value text, and the two timestamps as small
 * integers relative to a process-wide base (V8 keeps those inline; an absolute ms timestamp is a
 * 16-byte heap number each). Values that do not fit exactly are kept absolute (`AbsEntry`).
 */
class Entry {
  constructor (
    readonly key: string,
    /** Interned: one string per origin peer. */
    readonly origin: PeerId,
    readonly counter: number,
    protected readonly u: number,
    protected readonly x: number,
    /** JSON text of the value; undefined for a tombstone, '' for a value JSON cannot encode. */
    readonly json: string | undefined
  ) {}

  get updated (): number { return this.u + timeBase }
  get expires (): number { return this.x + timeBase }
  get deleted (): boolean { return this.json === undefined }
}

class AbsEntry extends Entry {
  override get updated (): number { return this.u }
  override get expires (): number { return this.x }
}

/** Base of the relative timestamps: the first `updated` stored in this process (then fixed). */
let timeBase = NaN
const SMALL = 2 ** 30 - 1
const small = (r: number, abs: number): boolean => Number.isInteger(r) && r >= -SMALL && r <= SMALL && r + timeBase === abs

function makeEntry (key: string, origin: PeerId, counter: number, updated: number, expires: number, json: string | undefined): Entry {
  if (Number.isNaN(timeBase) && Number.isSafeInteger(updated)) timeBase = updated
  const u = updated - timeBase; const x = expires - timeBase
  return small(u, updated) && small(x, expires) ? new Entry(key, origin, counter, u, x, json) : new AbsEntry(key, origin, counter, updated, expires, json)
}

/** Distinct origin strings interned (beyond this, origins are stored as they come). */
const MAX_INTERNED_ORIGINS = 4096

/** The JSON text of an item's value as compared by `compareItems` ('' for none). */
function valueJson (it: WireItem): string | undefined {
  return it.deleted ? undefined : it.json ?? flat(JSON.stringify(it.value) ?? '')
}

/**
 * V8's JSON.stringify returns a rope (a tree of string parts, ~1/3 larger); reading one character
 * flattens it in place, and the GC then keeps only the flat string.
 */
function flat (s: string | undefined): string | undefined {
  if (s !== undefined) s.charCodeAt(0)
  return s
}

/**
 * A routed write waiting for its write quorum: the distinct owners that stored it (in their own
 * views; a forwarded answer names several, a non-owner's none) and the remote owners not answered yet.
 */
class PendingWrite {
  private readonly acked: PeerId[] = []
  pending = 0
  private done = false
  constructor (
    private readonly key: string,
    private readonly need: number,
    private readonly resolve: () => void,
    private readonly reject: (err: Error) => void
  ) {}

  add (p: PeerId): void { if (!this.acked.includes(p)) this.acked.push(p) }

  /** An owner's answer: `by` the owners it speaks for (undefined: the sender itself; at most R counted). */
  answered (by: PeerId[] | undefined, from: PeerId, replicas: number): void {
    this.pending--
    if (by === undefined) this.add(from)
    else for (let i = 0; i < by.length && i < replicas; i++) this.add(by[i]!)
    this.check()
  }

  failed (): void { this.pending--; this.check() }

  check (): void {
    if (this.done) return
    if (this.acked.length >= this.need) { this.done = true; this.resolve() } else if (this.pending === 0) { this.done = true; this.reject(new QuorumError(this.acked.length, this.need, `write ${this.key}`)) }
  }
}

/** `compareItems` of a stored entry against an item whose value text is `json`. */
function compareEntry (a: Entry, b: WireItem, bJson: string | undefined): number {
  const v = compareVersions(a, b.version)
  if (v !== 0) return v
  const bd = Boolean(b.deleted)
  if (a.deleted !== bd) return a.deleted ? 1 : -1
  if (a.expires !== b.expires) return a.expires < b.expires ? -1 : 1
  const ja = a.json ?? ''; const jb = bJson ?? ''
  return ja < jb ? -1 : ja > jb ? 1 : 0
}

export interface StoreEvents<V> {
  /** A local replica changed (local write, replication, repair, handoff or anti-entropy). */
  change: (key: string, item: WireItem<V>) => void
  /** A batch of a handoff to `to` was acknowledged: `sent` of `total` items handed over so far. */
  'handoff:progress': (p: HandoffProgress) => void
  /** The handoff to `to` is complete (`resumed`: times it resumed after an interruption). */
  'handoff:done': (p: HandoffProgress & { resumed: number }) => void
}

export interface HandoffProgress {
  to: PeerId
  sent: number
  total: number
}

export interface StoreStats {
  items: number
  tombstones: number
  handoffSent: number
  handoffDropped: number
  repairs: number
  antiEntropyRounds: number
  antiEntropyItems: number
  rejected: number
  /** Routed requests this node passed on to the owners in its view (it was not an owner). */
  forwarded: number
  /** Routed requests that reached this non-owner with no hops left (answered locally, not counted). */
  hopLimited: number
  /** `db.batch` calls made (each carries every write queued while the previous one ran). */
  dbBatches: number
  /** Routed `store.put` messages sent by this node as coordinator (batched: fewer than the writes). */
  putMessages: number
  /** Routed read messages (`store.get`/`store.gets`) sent by this node as coordinator (batched: fewer than the reads). */
  getMessages: number
  /** Handoff batches that failed (the handoff to that peer paused, to resume from that batch). */
  handoffInterrupted: number
  /** Handoffs resumed after an interruption. */
  handoffResumed: number
  /** Incoming values of merged keys stored without decoding the stored value (`ValueMerge.dominates`). */
  fastMerges: number
}

/**
 * Replicated keyed store on the consistent-hash ring: an item lives on ring.owners(key, R); writes
 * wait for W acks, reads for a read quorum with read repair; ring changes hand items to new owners
 * (and drop what this node no longer owns); anti-entropy compares range digests with one replica
 * peer per round. Values must be JSON-serialisable.
 */
export class ReplicatedStore<V> extends TypedEmitter<StoreEvents<V>> implements Startable {
  readonly self: PeerId
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly log: Logger
  private readonly net: OverlayNetwork
  private readonly db: StoreDb | undefined
  private readonly hasher: Hasher
  readonly replicas: number
  readonly writeQuorum: number
  readonly readQuorum: number
  private readonly timeout: number
  readonly maxTtl: number
  readonly tombstoneTtl: number
  private readonly aeInterval: number
  private readonly bucketBits: number
  private readonly maxBatch: number
  private readonly maxKeyLength: number
  private readonly maxLocalItems: number
  private readonly maxSkew: number
  private readonly prefix: string
  readonly maxHops: number

  private ring: Ring | undefined
  /** Anti-entropy partners under `ring` (members sharing a replicated range), cached per ring. */
  private peersOf: { ring: Ring, peers: PeerId[] } | undefined
  private readonly items: Map<string, Entry>
  private readonly origins = new Map<string, PeerId>()
  private hlc = { updated: 0, counter: 0 }
  private running = false
  private aeTimer: Timer | undefined
  private unhandle: (() => void) | undefined
  private persistChain: Promise<void> = Promise.resolve()
  /** db writes not yet handed to `db.batch`: key → entry to write (undefined: delete). */
  private readonly dbPending = new Map<string, Entry | undefined>()
  private dbScheduled = false
  /** Pending db writes wait this long (ms) to go out in one `db.batch` (0: at the end of the microtask round). */
  private readonly persistDelay: number
  private persistTimer: Timer | undefined
  /** Routed writes waiting for this microtask round's end, per owner (see `sendPut`). */
  private readonly outbox = new Map<PeerId, Array<{ item: WireItem<V>, w: PendingWrite }>>()
  private outboxScheduled = false
  /** Routed reads waiting for this microtask round's end, per owner (see `sendGet`). */
  private readonly getbox = new Map<PeerId, Array<{ key: string, resolve: (res: OverlayMessage) => void, reject: (err: unknown) => void }>>()
  private readonly putBatching: boolean
  private readonly maxHandoffRetries: number
  /** Interrupted handoffs waiting to resume (one per peer and handoff run). */
  private readonly resuming = new Set<PeerHandoff>()
  /** Value-merge hooks by key prefix (empty: every key is last-writer-wins, the plain path). */
  private readonly merges: Array<[string, ValueMerge<V>]> = []
  private handoffChain: Promise<void> = Promise.resolve()
  readonly stats: StoreStats = { items: 0, tombstones: 0, handoffSent: 0, handoffDropped: 0, repairs: 0, antiEntropyRounds: 0, antiEntropyItems: 0, rejected: 0, forwarded: 0, hopLimited: 0, dbBatches: 0, putMessages: 0, getMessages: 0, handoffInterrupted: 0, handoffResumed: 0, fastMerges: 0 }

  constructor (components: StoreComponents, init: StoreInit = {}) {
    super()
    this.clock = components.clock
    this.rng = components.rng
    this.net = components.network
    this.self = this.net.self
    this.db = components.db
    this.hasher = components.hasher
    this.log = components.logger.child({ component: 'overlay-store', self: this.self })
    this.replicas = init.replicas ?? 3
    this.writeQuorum = init.writeQuorum ?? 2
    this.readQuorum = init.readQuorum ?? 2
    this.timeout = init.requestTimeout ?? 1000
    this.maxTtl = init.maxTtl ?? 86_400_000
    this.tombstoneTtl = init.tombstoneTtl ?? this.maxTtl
    this.aeInterval = init.antiEntropyInterval ?? 30_000
    const buckets = init.digestBuckets ?? 256
    this.bucketBits = Math.log2(buckets)
    this.maxBatch = init.maxItemsPerMessage ?? 500
    this.cachePos = init.cachePositions === true
    this.items = this.cachePos ? new KeyTrackingMap() : new Map<string, Entry>()
    this.maxKeyLength = init.maxKeyLength ?? 1024
    this.maxLocalItems = init.maxLocalItems ?? 1_000_000
    this.maxSkew = init.maxClockSkew ?? 60_000
    this.prefix = init.dbPrefix ?? 'ovs!'
    this.maxHops = init.maxHops ?? 2
    this.putBatching = init.putBatching ?? true
    this.maxHandoffRetries = init.maxHandoffRetries ?? 5
    this.persistDelay = init.persistDelay ?? 5
    if (!(this.persistDelay >= 0)) throw new RangeError('persistDelay must be >= 0')
    const intIn = (x: number, lo: number, hi: number): boolean => Number.isInteger(x) && x >= lo && x <= hi
    if (!intIn(this.replicas, 1, 16)) throw new RangeError('replicas must be an integer in [1, 16]')
    if (!intIn(this.writeQuorum, 1, this.replicas) || !intIn(this.readQuorum, 1, this.replicas)) throw new RangeError('quorums must be in [1, replicas]')
    if (!intIn(this.bucketBits, 0, 12)) throw new RangeError('digestBuckets must be a power of two <= 4096')
    if (this.tombstoneTtl < this.maxTtl) throw new RangeError('tombstoneTtl must be >= maxTtl (or deleted items could come back)')
    if (!intIn(this.maxHops, 0, MAX_HOPS)) throw new RangeError(`maxHops must be an integer in [0, ${MAX_HOPS}]`)
    if (!(this.maxBatch >= 1)) throw new RangeError('maxItemsPerMessage must be >= 1')
    for (const [prefix, fn] of Object.entries(init.merge ?? {})) this.setMerge(prefix, fn)
    this.onListenerError = err => { this.log.error({ err }, 'store listener threw') }
  }

  // ------------------------------------------------------------ lifecycle

  /** Load what the db holds (dropping expired items), answer requests, start anti-entropy. */
  async start (): Promise<void> {
    if (this.running) return
    if (this.db !== undefined) {
      if (this.db.status !== 'open') await this.db.open()
      const now = this.clock.now()
      const stale: string[] = []
      for await (const [k, v] of this.db.iterator({ gte: this.prefix, lt: this.prefix + '\xff' })) {
        const key = k.slice(this.prefix.length)
        try {
          const it = JSON.parse(v) as WireItem<V>
          if (it.expires <= now) { stale.push(k); continue }
          if (typeof it.version?.updated !== 'number' || typeof it.version.counter !== 'number' || typeof it.version.origin !== 'string' || typeof it.expires !== 'number') throw new TypeError('bad item')
          this.items.set(key, this.entry({ ...it, key }, valueJson(it)))
          this.observe(it.version)
        } catch {
          this.log.warn({ key }, 'unreadable item in db, dropped')
          stale.push(k)
        }
      }
      for (const k of stale) await this.db.del(k)
    }
    this.running = true
    this.unhandle = this.net.onRequest((msg, from) => this.handle(msg, from))
    this.scheduleAntiEntropy()
  }

  /** Stop timers and handlers and flush pending db writes (the db is left open: its owner closes it). */
  async stop (): Promise<void> {
    this.running = false
    this.aeTimer?.cancel(); this.aeTimer = undefined
    for (const h of this.resuming) h.timer?.cancel()
    this.resuming.clear()
    this.unhandle?.(); this.unhandle = undefined
    await this.handoffChain.catch(() => {})
    await this.flush()
  }

  /** Wait until every db write queued so far is done. */
  async flush (): Promise<void> {
    if (this.persistTimer !== undefined) { this.persistTimer.cancel(); this.persistTimer = undefined; this.writePending() }
    await this.persistChain
  }

  /**
   * Install a new ring (from the membership view); hands items to new owners and drops what moved away.
   * `changed` (optional, from a membership service that knows what changed, e.g. the simulator's oracle):
   * arcs outside which the owner sets of the previous ring and `ring` agree — the handoff then looks
   * only at the items inside them (items this node holds without owning them elsewhere wait for the
   * next {@link rebalance}). Without it every item is checked.
   */
  setRing (ring: Ring, opts: { changed?: readonly RingArc[] | undefined } = {}): void {
    const old = this.ring
    this.ring = ring
    if (old === ring || !this.running) return
    // recomputed for the new ring anyway; dropping it now lets the old ring be collected
    this.peersOf = undefined
    const changed = opts.changed
    // told that no owner changed (a view switch): handoffs under way stay valid, nothing to walk
    if (changed !== undefined && changed.length === 0) return
    this.ownership++
    this.handoffChain = this.handoffChain.then(async () => { await this.handoff(old, ring, changed) }).catch(err => {
      this.log.warn({ err: String(err) }, 'handoff failed')
    })
  }

  /**
   * Push and drop what this node holds but no longer owns under the current ring (e.g. items a
   * replica with a lagging view sent here after our handoff). Runs before every anti-entropy round.
   */
  async rebalance (): Promise<void> {
    const ring = this.ring
    if (ring === undefined || !this.running) return
    const items = this.items
    if (items instanceof KeyTrackingMap) {
      // simulator mode (every ring change either told what changed or walked everything): only the
      // keys stored since the last pass, and the ones it could not move yet, can be out of place
      const only = [...items.added, ...this.orphans]
      items.added.clear(); this.orphans = []
      if (only.length === 0) return
      this.handoffChain = this.handoffChain.then(async () => { await this.handoff(ring, ring, undefined, only) }).catch(err => {
        this.log.warn({ err: String(err) }, 'rebalance failed')
      })
      await this.handoffChain
      return
    }
    // the same ring, no new key since a pass that found nothing to move: nothing can be out of place
    const keys = this.keysAdded
    const epoch = this.ownership
    if (this.rebalancedFor?.epoch === epoch && this.rebalancedFor.keys === keys) return
    this.handoffChain = this.handoffChain.then(async () => {
      const moved = await this.handoff(ring, ring)
      this.rebalancedFor = moved === 0 ? { epoch, keys } : undefined
    }).catch(err => {
      this.log.warn({ err: String(err) }, 'rebalance failed')
    })
    await this.handoffChain
  }

  /** Bumped by every `setRing` that may change owners: handoffs of an older epoch stop. */
  private ownership = 0
  /** Simulator mode: keys the last rebalance found out of place and could not move yet. */
  private orphans: string[] = []
  /** New keys stored so far (a key set change can bring an item this node does not own). */
  private keysAdded = 0
  /** The ownership epoch and key count of the last rebalance that found nothing to move. */
  private rebalancedFor: { epoch: number, keys: number } | undefined

  /** Resolves when the handoffs started so far are finished. */
  async settled (): Promise<void> { await this.handoffChain }

  // ------------------------------------------------------------ public API

  /** Write with the write quorum; resolves with the version the write was given. */
  async put (key: string, value: V, opts: PutOptions = {}): Promise<Version> {
    this.checkKey(key)
    const ttl = opts.ttl ?? this.maxTtl
    if (!(typeof ttl === 'number' && ttl > 0 && ttl <= this.maxTtl)) throw new OverlayError('ERR_BAD_TTL', `ttl must be in (0, ${this.maxTtl}] ms`)
    if (value === undefined) throw new OverlayError('ERR_BAD_VALUE', 'value must not be undefined (use delete)')
    const item: WireItem<V> = { key, version: this.nextVersion(), deleted: false, value, expires: this.clock.now() + ttl }
    await this.replicate(item, opts)
    return item.version
  }

  /** Delete: reads the current version (quorum) so the tombstone's version is above it, then writes the tombstone. */
  async delete (key: string, opts: AbortOptions = {}): Promise<void> {
    this.checkKey(key)
    if (this.mergeOf(key) !== undefined) throw new OverlayError('ERR_BAD_VALUE', 'a key under a merged prefix is not deleted (write a value that removes the part)')
    const cur = await this.read(key, opts).catch(() => undefined)
    const now = this.clock.now()
    const expires = Math.max(now + this.tombstoneTtl, cur?.expires ?? 0)
    const item: WireItem<V> = { key, version: this.nextVersion(), deleted: true, expires }
    await this.replicate(item, opts)
  }

  /** The value, or undefined when absent, deleted or expired. Waits for the read quorum; repairs stale replicas. */
  async get (key: string, opts: GetOptions = {}): Promise<V | undefined> {
    this.checkKey(key)
    const it = await this.read(key, opts)
    return it === undefined ? undefined : itemValue(it)
  }

  /**
   * Install (or with `undefined` remove) the value-merge hook of the keys starting with `prefix`
   * (see `StoreInit.merge`). The longest matching prefix applies.
   */
  setMerge (prefix: string, fn: ValueMerge<V> | undefined): void {
    if (typeof prefix !== 'string' || prefix.length === 0) throw new RangeError('merge prefix must be a non-empty string')
    const i = this.merges.findIndex(([p]) => p === prefix)
    if (i >= 0) this.merges.splice(i, 1)
    if (fn !== undefined) this.merges.push([prefix, fn])
    this.merges.sort((a, b) => b[0].length - a[0].length)
  }

  /** The merge hook of `key`, if any. */
  private mergeOf (key: string): ValueMerge<V> | undefined {
    if (this.merges.length === 0) return undefined
    for (const [p, fn] of this.merges) if (key.startsWith(p)) return fn
    return undefined
  }

  /**
   * The merge of two states of one key: `mergeItem` (last writer wins) unless both are live values
   * of a key with a merge hook; then the hook's join, as the greater item itself when the join
   * equals it, else as a new item with a version above both and the later expiry.
   */
  private join (a: WireItem<V> | undefined, b: WireItem<V> | undefined, from?: PeerId, bValue?: V): WireItem<V> | undefined {
    if (a === undefined) return b
    if (b === undefined) return a
    const fn = a.deleted || b.deleted ? undefined : this.mergeOf(a.key)
    if (fn === undefined) return mergeItem(a, b)
    const c = compareItems(a, b)
    if (c === 0) return a
    const hi = c > 0 ? a : b; const lo = c > 0 ? b : a
    let hv: V | undefined; let m: V
    try {
      // `bValue`: `b`'s value already decoded
      hv = bValue !== undefined && hi === b ? bValue : itemValue(hi); const lv = bValue !== undefined && lo === b ? bValue : itemValue(lo)
      if (hv === undefined || lv === undefined) return hi
      // `b` is the item that arrived (from `from`)
      m = from === undefined ? fn(hv, lv, hi.key) : fn(hv, lv, hi.key, { incoming: b === hi ? hv : lv, from })
    } catch (err) {
      this.log.debug({ key: hi.key, err: String(err) }, 'value merge failed; newer item kept')
      return hi
    }
    if (m === hv) return hi
    const json = flat(JSON.stringify(m))
    if (json === undefined || json === textOf(hi)) return hi
    this.observe(hi.version); this.observe(lo.version)
    return { key: hi.key, version: this.nextVersion(), deleted: false, json, expires: Math.max(hi.expires, lo.expires) }
  }

  /** A read answer as a first state: merged with itself for a merged key (unless from this node's own replica). */
  private admit (it: WireItem<V>, from: PeerId | undefined): WireItem<V> | undefined {
    if (it.deleted || from === this.self || this.merges.length === 0) return it
    const fn = this.mergeOf(it.key)
    return fn === undefined ? it : this.selfMerge(it, fn, from)
  }

  /** `item` merged with itself (validation of a value with nothing stored yet); undefined: unusable. */
  private selfMerge (item: WireItem<V>, fn: ValueMerge<V>, from: PeerId | undefined): WireItem<V> | undefined {
    let v: V | undefined; let m: V
    try {
      v = itemValue(item)
      if (v === undefined) return item
      m = fn(v, v, item.key, from === undefined ? undefined : { incoming: v, from })
    } catch (err) {
      this.log.debug({ key: item.key, err: String(err) }, 'value merge failed; item kept')
      return item
    }
    if (m === v) return item
    const json = flat(JSON.stringify(m))
    if (json === undefined) return undefined
    this.observe(item.version)
    return { key: item.key, version: this.nextVersion(), deleted: false, json, expires: item.expires }
  }

  /** This node's local replica of `key` (tombstones included), without network. */
  local (key: string): WireItem<V> | undefined {
    const e = this.items.get(key)
    if (e === undefined || e.expires <= this.clock.now()) return undefined
    return this.toWire(e)
  }

  /** The stored JSON text of `key`'s value (unexpired, not deleted), not decoded (cheap, for checkers). */
  localJson (key: string): string | undefined {
    const e = this.items.get(key)
    if (e === undefined || e.deleted || e.expires <= this.clock.now() || e.json === undefined || e.json === '') return undefined
    return e.json
  }

  /**
   * Does this node's replica hold exactly version `v` of `key` (live)? No decode: answers "has anything
   * been written to this replica since that write" (every write or merge stored here gets a new version).
   */
  holdsVersion (key: string, v: Version): boolean {
    const e = this.items.get(key)
    return e !== undefined && e.expires > this.clock.now() && e.updated === v.updated && e.counter === v.counter && e.origin === v.origin
  }

  /** Keys held locally (unexpired, tombstones included). */
  localKeys (): string[] {
    const now = this.clock.now()
    return [...this.items.values()].filter(e => e.expires > now).map(e => e.key)
  }

  /** Owners of a key under the current ring. */
  owners (key: string): PeerId[] {
    return this.ring === undefined ? [] : this.ring.owners(key, this.replicas)
  }

  /**
   * Is this node one of the key's owners under the current ring? Without hashing the key when the
   * ring has at most R members (then every member owns every key).
   */
  isOwner (key: string): boolean {
    const ring = this.ring
    if (ring === undefined || ring.size === 0) return false
    if (ring.size <= this.replicas) return ring.has(this.self)
    return ring.owners(key, this.replicas).includes(this.self)
  }

  /** Remove expired items and tombstones (memory and db). Returns how many went. */
  sweep (): number {
    const now = this.clock.now()
    let n = 0
    for (const e of [...this.items.values()]) {
      if (e.expires <= now) { this.items.delete(e.key); this.persistDel(e.key); n++ }
    }
    return n
  }

  getStats (): StoreStats {
    const now = this.clock.now()
    let items = 0; let tombstones = 0
    for (const e of this.items.values()) if (e.expires > now) { if (e.deleted) tombstones++; else items++ }
    return { ...this.stats, items, tombstones }
  }

  // ------------------------------------------------------------ replication

  private requireRing (): Ring {
    if (this.ring === undefined || this.ring.size === 0) throw new OverlayError('ERR_NO_RING', 'no ring yet (not joined)')
    return this.ring
  }

  private async replicate (item: WireItem<V>, opts: AbortOptions): Promise<void> {
    if (!this.running) throw new OverlayError('ERR_NOT_STARTED', 'store is not running')
    if (opts.signal?.aborted === true) throw new OverlayAbortError()
    const ring = this.requireRing()
    // a ring of at most R members: every member owns every key (no hashing)
    const owners = ring.size <= this.replicas ? ring.members : ring.owners(item.key, this.replicas)
    const need = Math.min(this.writeQuorum, owners.length)
    await new Promise<void>((resolve, reject) => {
      // one record per write, shared by every owner it goes to (no promise per owner)
      const w = new PendingWrite(item.key, need, resolve, reject)
      // the value is encoded once: the own replica and every remote owner get the same text
      const wire = this.textItem(item)
      for (const o of owners) {
        if (o === this.self) {
          this.applyLocal(wire, item, this.self)
          w.add(o)
          continue
        }
        w.pending++
        this.sendPut(o, wire, w, opts.signal)
      }
      w.check()
    })
  }

  private async read (key: string, opts: GetOptions): Promise<WireItem<V> | undefined> {
    if (!this.running) throw new OverlayError('ERR_NOT_STARTED', 'store is not running')
    if (opts.signal?.aborted === true) throw new OverlayAbortError()
    const owners = this.requireRing().owners(key, this.replicas)
    const need = Math.min(this.readQuorum, owners.length)
    /** Direct answers of owners (their own replicas): the read-repair targets. */
    const answers = new Map<PeerId, WireItem<V> | null>()
    /** Distinct owners (in their own views) whose replica went into `best`: the quorum. */
    const counted = new Set<PeerId>()
    let pending = 0
    let best: WireItem<V> | undefined
    const all: Array<Promise<void>> = []
    /** Remote owners not asked yet (`minimal`: asked when an asked one fails or is slow). */
    const later: PeerId[] = []
    let hedge: Timer | undefined
    const result = await new Promise<WireItem<V> | undefined>((resolve, reject) => {
      let done = false
      const check = (): void => {
        if (done) return
        if (counted.size >= need) { done = true; hedge?.cancel(); resolve(best); return }
        if (pending === 0 && later.length > 0) { askMore(need - counted.size); return }
        if (pending === 0) { done = true; hedge?.cancel(); reject(new QuorumError(counted.size, need, `read ${key}`)) }
      }
      const got = (it: WireItem<V> | null, from?: PeerId): void => {
        if (it === null) return
        this.observe(it.version)
        // `best` only ever holds what the merge hook accepted: a first answer is merged with itself
        best = best === undefined ? this.admit(it, from) : this.join(best, it, from)
      }
      const ask = (o: PeerId): void => {
        pending++
        all.push(this.sendGet(o, key, opts.signal).then(res => {
          pending--
          if (res.type === 'store.item' && (res.item === null || res.item.key === key)) {
            const it = res.item === null || res.item.expires <= this.clock.now() ? null : res.item as WireItem<V>
            got(it, res.by === undefined ? o : undefined)
            if (res.by === undefined) answers.set(o, it)
            for (const p of this.answeredBy(res.by, o)) counted.add(p)
          }
          check()
        }, () => { pending--; check() }))
      }
      const askMore = (n: number): void => { for (const o of later.splice(0, Math.max(1, n))) ask(o) }
      const remote: PeerId[] = []
      for (const o of owners) {
        if (o === this.self) {
          const it = this.localText(key) ?? null
          got(it, this.self); answers.set(o, it); counted.add(o)
        } else remote.push(o)
      }
      if (opts.minimal === true) {
        const first = Math.max(0, need - counted.size)
        later.push(...remote.slice(first))
        for (const o of remote.slice(0, first)) ask(o)
        if (later.length > 0 && counted.size < need) {
          hedge = this.clock.setTimer(Math.max(1, Math.floor(this.timeout / 4)), () => { if (!done) askMore(later.length) })
        }
      } else {
        for (const o of remote) ask(o)
      }
      check()
    })
    // read repair, once every owner answered or failed
    void Promise.allSettled(all).then(() => {
      if (best === undefined || !this.running) return
      for (const [o, it] of answers) {
        if (it !== null && compareItems(it, best) >= 0) continue
        this.stats.repairs++
        if (o === this.self) this.applyLocal(best, undefined, this.self)
        else this.net.send(o, { type: 'store.put', items: [best] }, { timeout: this.timeout }).catch(() => {})
      }
    })
    return result
  }

  /** Who an answer speaks for: the sender itself (no `by`), else the named owners (at most R). */
  private answeredBy (by: PeerId[] | undefined, from: PeerId): PeerId[] {
    return by === undefined ? [from] : by.slice(0, this.replicas)
  }

  /**
   * A routed write of `item` to owner `to`, counted in `w` (the owners that stored it, per the answer).
   * Writes to the same owner queued in the same microtask round go in one `store.put` (up to
   * `maxItemsPerMessage` items; `putBatching: false` or an abort signal: one message per write).
   */
  private sendPut (to: PeerId, item: WireItem<V>, w: PendingWrite, signal: AbortSignal | undefined): void {
    if (!this.putBatching || signal !== undefined) {
      this.net.send(to, { type: 'store.put', items: [item], hops: this.maxHops }, { signal, timeout: this.timeout }).then(res => {
        if (res.type === 'store.ok') w.answered(res.by, to, this.replicas); else w.answered([], to, this.replicas)
      }, () => { w.failed() })
      return
    }
    let q = this.outbox.get(to)
    if (q === undefined) { q = []; this.outbox.set(to, q) }
    q.push({ item, w })
    if (q.length >= this.maxBatch) { this.flushPuts(to); return }
    this.scheduleFlush()
  }

  /**
   * A routed read of `key` at owner `to`, answered as a `store.item`. Reads to the same owner queued in
   * the same microtask round go in one `store.gets` (same rules as `sendPut`).
   */
  private async sendGet (to: PeerId, key: string, signal: AbortSignal | undefined): Promise<OverlayMessage> {
    if (!this.putBatching || signal !== undefined) {
      return await this.net.send(to, { type: 'store.get', key, hops: this.maxHops }, { signal, timeout: this.timeout })
    }
    return await new Promise<OverlayMessage>((resolve, reject) => {
      let q = this.getbox.get(to)
      if (q === undefined) { q = []; this.getbox.set(to, q) }
      q.push({ key, resolve, reject })
      if (q.length >= this.maxBatch) { this.flushGets(to); return }
      this.scheduleFlush()
    })
  }

  private scheduleFlush (): void {
    if (this.outboxScheduled) return
    this.outboxScheduled = true
    // a real network batches what the whole event-loop turn queued (every datagram's REGISTER), else the microtask round
    if (typeof this.net.defer === 'function') this.net.defer(this.flushAll)
    else queueMicrotask(this.flushAll)
  }

  /** Send every batch queued (see `scheduleFlush`). */
  private readonly flushAll = (): void => {
    this.outboxScheduled = false
    {
      let prev: { q: Array<{ item: WireItem<V> }>, msg: OverlayMessage } | undefined
      for (const peer of [...this.outbox.keys()]) {
        // the same writes for several owners (R = 3: both remote owners of every key) share one
        // frozen message, which the network may encode once
        const q = this.outbox.get(peer)
        const same = prev !== undefined && q !== undefined && q.length > 1 && q.length === prev.q.length && q.every((x, i) => x.item === prev!.q[i]!.item)
        const msg = this.flushPuts(peer, same ? prev!.msg : undefined)
        if (!same && msg !== undefined && q !== undefined) prev = { q, msg }
      }
      for (const peer of [...this.getbox.keys()]) this.flushGets(peer)
    }
  }

  /** Send the reads queued for `to`: one `store.get`, or one `store.gets` for several. */
  private flushGets (to: PeerId): void {
    const q = this.getbox.get(to)
    this.getbox.delete(to)
    if (q === undefined || q.length === 0) return
    this.stats.getMessages++
    if (q.length === 1) {
      const x = q[0]!
      this.net.send(to, { type: 'store.get', key: x.key, hops: this.maxHops }, { timeout: this.timeout }).then(x.resolve, x.reject)
      return
    }
    this.net.send(to, { type: 'store.gets', keys: q.map(x => x.key), hops: this.maxHops }, { timeout: this.timeout }).then(res => {
      if (res.type !== 'store.items') { for (const x of q) x.resolve(res); return }
      for (let i = 0; i < q.length; i++) {
        const item = res.items[i] ?? null
        q[i]!.resolve(res.each === undefined ? { type: 'store.item', item } : { type: 'store.item', item, by: res.each[i] ?? [] })
      }
    }, (err: unknown) => { for (const x of q) x.reject(err) })
  }

  /** Send the writes queued for `to` as one routed `store.put` (`msg`: already built for the same items). Returns the message. */
  private flushPuts (to: PeerId, msg?: OverlayMessage): OverlayMessage | undefined {
    const q = this.outbox.get(to)
    this.outbox.delete(to)
    if (q === undefined || q.length === 0) return undefined
    this.stats.putMessages++
    msg ??= Object.freeze({ type: 'store.put' as const, items: Object.freeze(q.map(x => x.item)) as WireItem[], hops: this.maxHops })
    this.net.send(to, msg, { timeout: this.timeout }).then(res => {
      const R = this.replicas
      if (res.type !== 'store.ok') { for (const x of q) x.w.answered([], to, R); return }
      const each = q.length > 1 ? res.each : undefined
      for (let i = 0; i < q.length; i++) {
        const by = each !== undefined ? each[i] : res.by
        q[i]!.w.answered(each !== undefined && by === undefined ? [] : by, to, R)
      }
    }, () => { for (const x of q) x.w.failed() })
    return msg
  }

  // ------------------------------------------------------------ local state

  private checkKey (key: string): void {
    if (typeof key !== 'string' || key.length === 0 || key.length > this.maxKeyLength) {
      throw new OverlayError('ERR_BAD_KEY', `key must be a string of 1..${this.maxKeyLength} characters`)
    }
  }

  private position (key: string): bigint {
    return this.hasher.hash64(key)
  }

  private intern (origin: PeerId): PeerId {
    const o = this.origins.get(origin)
    if (o !== undefined) return o
    if (this.origins.size < MAX_INTERNED_ORIGINS) this.origins.set(origin, origin)
    return origin
  }

  private entry (it: WireItem<V>, json: string | undefined): Entry {
    return makeEntry(it.key, this.intern(it.version.origin), it.version.counter, it.version.updated, it.expires, json)
  }

  /** The wire form of a stored entry (a fresh object; the value decoded from its text). */
  private toWire (e: Entry): WireItem<V> {
    const w: WireItem<V> = { key: e.key, version: { updated: e.updated, counter: e.counter, origin: e.origin }, deleted: e.deleted, expires: e.expires }
    if (e.json !== undefined) w.value = e.json === '' ? undefined : JSON.parse(e.json) as V
    return w
  }

  /** The wire form of a stored entry for other replicas: the value as its stored JSON text (no decode). */
  private toWireText (e: Entry): WireItem<V> {
    const w: WireItem<V> = { key: e.key, version: { updated: e.updated, counter: e.counter, origin: e.origin }, deleted: e.deleted, expires: e.expires }
    if (e.json !== undefined) w.json = e.json
    return w
  }

  /** `local(key)` with the value as its stored JSON text (`json`, not decoded), for answers, merges and cheap local checks. */
  localText (key: string): WireItem<V> | undefined {
    const e = this.items.get(key)
    if (e === undefined || e.expires <= this.clock.now()) return undefined
    return this.toWireText(e)
  }

  /** A client write as it goes to the owners: the value encoded once, as `json`. */
  private textItem (item: WireItem<V>): WireItem<V> {
    if (item.deleted || item.json !== undefined) return item
    return { key: item.key, version: item.version, deleted: false, json: valueJson(item), expires: item.expires }
  }

  private nextVersion (): Version {
    const now = this.clock.now()
    if (now > this.hlc.updated) this.hlc = { updated: now, counter: 0 }
    else this.hlc = { updated: this.hlc.updated, counter: this.hlc.counter + 1 }
    return { ...this.hlc, origin: this.self }
  }

  /** Hybrid logical clock: never assign a version below one already seen. */
  private observe (v: Version): void {
    if (v.updated > this.hlc.updated || (v.updated === this.hlc.updated && v.counter > this.hlc.counter)) {
      this.hlc = { updated: v.updated, counter: v.counter }
    }
  }

  /**
   * Merge an item into the local replica; true when it changed something. `orig`: the same write as
   * the writer passed it (its `value` object), for `change` listeners, when `item` carries `json`.
   */
  private applyLocal (item: WireItem<V>, orig?: WireItem<V>, from?: PeerId): boolean {
    const now = this.clock.now()
    if (item.expires <= now) return false
    const cur = this.items.get(item.key)
    let json = valueJson(item)
    if (cur !== undefined && cur.expires > now) {
      const c = compareEntry(cur, item, json)
      if (c === 0) return false
      const fn = this.merges.length === 0 || cur.deleted || item.deleted ? undefined : this.mergeOf(item.key)
      if (fn === undefined) {
        if (c > 0) return false
        // a value of a merged key replacing a tombstone: validated like a first value
        if (cur.deleted && !item.deleted && from !== this.self && this.merges.length > 0) {
          const f = this.mergeOf(item.key)
          const m = f === undefined ? item : this.selfMerge(item, f, from)
          if (m === undefined) return false
          if (m !== item) { item = m; orig = undefined; json = valueJson(m) }
        }
      } else {
        // both live values of a merged key: store their join (unless it is what is stored already)
        let iv: V | undefined
        if (fn.dominates !== undefined && from !== undefined && cur.json !== undefined && cur.json !== '') {
          // fast path: the incoming value alone is the join (e.g. a newer write of the only portion
          // stored): the stored text is not decoded, the incoming value only when the writer's object
          // is not at hand
          try {
            iv = orig !== undefined && orig.json === undefined ? orig.value : itemValue(item)
            if (iv !== undefined && fn.dominates(iv, cur.json, item.key, { incoming: iv, from })) {
              this.stats.fastMerges++
              if (c < 0) return this.storeItem(item, json, cur, orig)
              // the stored item is the greater: the join gets a version above both
              this.observe(item.version); this.observe(cur)
              return this.storeItem({ key: item.key, version: this.nextVersion(), deleted: false, json, expires: Math.max(item.expires, cur.expires) }, json, cur, undefined)
            }
          } catch (err) {
            this.log.debug({ key: item.key, err: String(err) }, 'value merge fast path failed; merging')
          }
        }
        const mine = this.toWireText(cur)
        const m = this.join(mine, item, from, iv)
        if (m === mine || m === undefined) return false
        if (m !== item) { item = m; orig = undefined; json = valueJson(m) }
      }
    } else if (this.merges.length > 0 && from !== this.self && !item.deleted) {
      // no stored state: an incoming value of a merged key is merged with itself (the hook validates it)
      const fn = this.mergeOf(item.key)
      if (fn !== undefined) {
        const m = this.selfMerge(item, fn, from)
        if (m === undefined) return false
        if (m !== item) { item = m; orig = undefined; json = valueJson(m) }
      }
    }
    return this.storeItem(item, json, cur, orig)
  }

  /** Store `item` (value text `json`) over `cur` in the local replica: db, `change` listeners. */
  private storeItem (item: WireItem<V>, json: string | undefined, cur: Entry | undefined, orig: WireItem<V> | undefined): boolean {
    if (cur === undefined && this.items.size >= this.maxLocalItems) throw new OverlayError('ERR_FULL', 'store is full')
    this.observe(item.version)
    const e = this.entry(item, json)
    this.items.set(e.key, e)
    if (cur === undefined) this.keysAdded++
    this.persistPut(e)
    if (this.hasListeners('change')) this.emit('change', e.key, this.changed(e, orig ?? item))
    return true
  }

  /** The item a `change` listener sees: the stored state, the value as the writer passed it (no decode). */
  private changed (e: Entry, item: WireItem<V>): WireItem<V> {
    const w: WireItem<V> = { key: e.key, version: { updated: e.updated, counter: e.counter, origin: e.origin }, deleted: e.deleted, expires: e.expires }
    if (!e.deleted) w.value = item.json !== undefined ? itemValue(item) : item.value
    return w
  }

  private persistPut (e: Entry): void { this.persist(e.key, e) }

  private persistDel (key: string): void { this.persist(key, undefined) }

  /**
   * Queue a db write (an entry, or undefined to delete). Writes queued while a batch is being
   * written go out together in the next `db.batch`, one operation per key (the latest state).
   */
  private persist (key: string, e: Entry | undefined): void {
    const db = this.db
    if (db === undefined) return
    this.dbPending.set(key, e)
    if (this.dbScheduled) return
    this.dbScheduled = true
    if (this.persistDelay > 0) {
      this.persistTimer = this.clock.setTimer(this.persistDelay, () => { this.persistTimer = undefined; this.writePending() })
    } else this.writePending()
  }

  /** Hand the pending db writes to the next `db.batch` (after the one being written, if any). */
  private writePending (): void {
    const db = this.db
    if (db === undefined) return
    this.persistChain = this.persistChain.then(async () => {
      this.dbScheduled = false
      const ops: Array<{ type: 'put', key: string, value: string } | { type: 'del', key: string }> = []
      for (const [k, x] of this.dbPending) {
        ops.push(x === undefined ? { type: 'del', key: this.prefix + k } : { type: 'put', key: this.prefix + k, value: this.dbValue(x) })
      }
      this.dbPending.clear()
      this.stats.dbBatches++
      try {
        await db.batch(ops)
      } catch (err) {
        this.log.error({ err: String(err), ops: ops.length }, 'db write failed')
      }
    })
  }

  /** The db form of an entry: its wire item as JSON (the value text spliced in, not re-encoded). */
  private dbValue (e: Entry): string {
    return `{"key":${JSON.stringify(e.key)},"version":{"updated":${e.updated},"counter":${e.counter},"origin":${JSON.stringify(e.origin)}},"deleted":${e.deleted ? 'true' : 'false'}${e.json === undefined || e.json === '' ? '' : `,"value":${e.json}`},"expires":${e.expires}}`
  }

  /** Validate and merge incoming items; returns how many were accepted. */
  private acceptItems (items: WireItem[], from?: PeerId): number {
    const limit = this.clock.now() + this.maxSkew
    let n = 0
    for (const it of items) {
      if (typeof it.key !== 'string' || it.key.length === 0 || it.key.length > this.maxKeyLength ||
          it.version.updated > limit || it.expires > limit + this.tombstoneTtl ||
          (it.deleted && this.mergeOf(it.key) !== undefined)) {
        this.stats.rejected++
        continue
      }
      try { if (this.applyLocal(it as WireItem<V>, undefined, from)) n++ } catch { this.stats.rejected++ }
    }
    return n
  }

  // ------------------------------------------------------------ request handling

  private async handle (msg: OverlayMessage, from: PeerId): Promise<OverlayMessage | undefined> {
    if (!this.running) return undefined
    switch (msg.type) {
      case 'store.put':
        if (msg.items.length > this.maxBatch) return { type: 'error', code: 'ERR_TOO_MANY', message: `more than ${this.maxBatch} items` }
        if (msg.hops === undefined) return { type: 'store.ok', stored: this.acceptItems(msg.items, from) }
        // the sender speaks for a routed write only as its coordinator (a forwarder passes on someone else's)
        if (msg.items.length > 1) return await this.routedPutMany(msg.items, msg.hops, msg.hops >= this.maxHops ? from : undefined)
        return await this.routedPut(msg.items, msg.hops, msg.hops >= this.maxHops ? from : undefined)
      case 'store.get':
        if (msg.hops === undefined) return { type: 'store.item', item: typeof msg.key === 'string' ? this.localText(msg.key) ?? null : null }
        return await this.routedGet(msg.key, msg.hops)
      case 'store.gets':
        if (msg.keys.length > this.maxBatch) return { type: 'error', code: 'ERR_TOO_MANY', message: `more than ${this.maxBatch} keys` }
        return await this.routedGetMany(msg.keys, msg.hops)
      case 'store.digest':
        return this.answerDigest(msg.buckets, from)
      default:
        return undefined
    }
  }

  // ------------------------------------------------------------ one-hop routing of client requests

  /** The owners of `key` in this node's view when this node is not one of them; undefined when it owns it (or has no ring). */
  private foreignOwners (key: string): PeerId[] | undefined {
    const ring = this.ring
    if (ring === undefined || ring.size === 0) return undefined
    // a ring of at most R members: every member owns every key (no hashing)
    if (ring.size <= this.replicas && ring.has(this.self)) return undefined
    const owners = ring.owners(key, this.replicas)
    return owners.includes(this.self) ? undefined : owners
  }

  private validKey (key: unknown): key is string {
    return typeof key === 'string' && key.length > 0 && key.length <= this.maxKeyLength
  }

  /**
   * Send `msg` to every target; resolves once `onAnswer` says enough or every send settled. Each
   * level of forwarding gets half the time budget of the level above, so an answer always arrives
   * before the upstream request times out.
   */
  private async fanout (targets: PeerId[], msg: OverlayMessage, hops: number, onAnswer: (res: OverlayMessage, from: PeerId) => boolean): Promise<void> {
    const timeout = Math.max(1, Math.floor(this.timeout / 2 ** (this.maxHops - hops + 1)))
    await new Promise<void>(resolve => {
      let pending = targets.length
      let done = false
      const fin = (enough: boolean): void => {
        pending--
        if (!done && (enough || pending === 0)) { done = true; resolve() }
      }
      if (pending === 0) { resolve(); return }
      for (const t of targets) {
        this.net.send(t, msg, { timeout }).then(res => { fin(!done && onAnswer(res, t)) }, () => { fin(false) })
      }
    })
  }

  /** A client write (`store.put` with `hops`): store it as an owner, else forward to the owners in this view. */
  private async routedPut (items: WireItem[], hops: number, from?: PeerId): Promise<OverlayMessage> {
    const it = items[0]
    if (items.length !== 1 || it === undefined) return { type: 'error', code: 'ERR_PROTOCOL', message: 'a routed store.put carries exactly one item' }
    if (!this.validKey(it.key)) return { type: 'error', code: 'ERR_BAD_KEY', message: `key must be a string of 1..${this.maxKeyLength} characters` }
    const owners = this.foreignOwners(it.key)
    if (owners === undefined) return { type: 'store.ok', stored: this.acceptItems(items, from) }
    const h = Math.min(hops, this.maxHops)
    if (h <= 0) {
      // hop limit: keep it (the next rebalance hands it to its owners) but do not count as an owner
      this.stats.hopLimited++
      return { type: 'store.ok', stored: this.acceptItems(items, from), by: [] }
    }
    this.stats.forwarded++
    const need = Math.min(this.writeQuorum, owners.length)
    const acked = new Set<PeerId>()
    await this.fanout(owners, { type: 'store.put', items: [it], hops: h - 1 }, h, (res, from) => {
      if (res.type === 'store.ok') for (const p of this.answeredBy(res.by, from)) acked.add(p)
      return acked.size >= need
    })
    // not enough owners reached: keep a copy so the write is not lost (rebalance passes it on)
    if (acked.size < need) this.acceptItems(items, from)
    return { type: 'store.ok', stored: acked.size, by: [...acked] }
  }

  /**
   * Several client writes in one `store.put` (a coordinator's batch for this owner): the items this
   * node owns are stored; the others are routed one by one as `routedPut` does. Answered without
   * `each` when every key is owned here (all stored by this node), else with `each`.
   */
  private async routedPutMany (items: WireItem[], hops: number, from?: PeerId): Promise<OverlayMessage> {
    const mine: WireItem[] = []
    const foreign: number[] = []
    items.forEach((it, i) => { if (this.validKey(it.key) && this.foreignOwners(it.key) !== undefined) foreign.push(i); else mine.push(it) })
    if (foreign.length === 0) return { type: 'store.ok', stored: this.acceptItems(items, from) }
    const each: PeerId[][] = items.map(() => [this.self])
    let stored = this.acceptItems(mine, from)
    await Promise.all(foreign.map(async i => {
      const res = await this.routedPut([items[i]!], hops, from)
      if (res.type === 'store.ok') { each[i] = res.by ?? [this.self]; stored += res.stored } else each[i] = []
    }))
    return { type: 'store.ok', stored, each }
  }

  /** Several client reads (`store.gets`): each key answered as `routedGet` would; `each` only when some key is not owned here. */
  private async routedGetMany (keys: string[], hops: number): Promise<OverlayMessage> {
    const items: Array<WireItem | null> = new Array(keys.length).fill(null)
    const each: PeerId[][] = keys.map(() => [this.self])
    let foreign = false
    await Promise.all(keys.map(async (key, i) => {
      if (!this.validKey(key)) { each[i] = []; foreign = true; return }
      if (this.foreignOwners(key) === undefined) { items[i] = this.localText(key) ?? null; return }
      foreign = true
      const res = await this.routedGet(key, hops)
      if (res.type === 'store.item') { items[i] = res.item; each[i] = res.by ?? [this.self] } else each[i] = []
    }))
    return foreign ? { type: 'store.items', items, each } : { type: 'store.items', items }
  }

  /** A client read (`store.get` with `hops`): answer as an owner, else ask the owners in this view and merge. */
  private async routedGet (key: string, hops: number): Promise<OverlayMessage> {
    if (!this.validKey(key)) return { type: 'error', code: 'ERR_BAD_KEY', message: `key must be a string of 1..${this.maxKeyLength} characters` }
    const mine = this.localText(key)
    const owners = this.foreignOwners(key)
    if (owners === undefined) return { type: 'store.item', item: mine ?? null }
    const h = Math.min(hops, this.maxHops)
    if (h <= 0) {
      this.stats.hopLimited++
      return { type: 'store.item', item: mine ?? null, by: [] }
    }
    this.stats.forwarded++
    const need = Math.min(this.readQuorum, owners.length)
    const counted = new Set<PeerId>()
    let best: WireItem<V> | undefined = mine
    await this.fanout(owners, { type: 'store.get', key, hops: h - 1 }, h, (res, from) => {
      if (res.type === 'store.item' && (res.item === null || res.item.key === key)) {
        if (res.item !== null && res.item.expires > this.clock.now()) best = this.join(best, res.item as WireItem<V>, res.by === undefined ? from : undefined)
        for (const p of this.answeredBy(res.by, from)) counted.add(p)
      }
      return counted.size >= need
    })
    return { type: 'store.item', item: best ?? null, by: [...counted] }
  }

  // ------------------------------------------------------------ handoff / re-replication

  /**
   * Ring positions of stored keys, kept for the handoff and anti-entropy walks when `cachePositions`
   * is set (in a simulation every ring change nearby walks all items; hashing each key again
   * dominated it), in the item map's dense index (KeyTrackingMap).
   */
  private readonly cachePos: boolean

  private walkPosition (e: Entry): bigint {
    const items = this.items
    if (!(items instanceof KeyTrackingMap)) return this.position(e.key)
    // memoized in the map's dense index, in the entry's slot (kept by a replacement of the same key)
    const i = (e as SlotEntry).i
    if (i === undefined || items.slotKeys[i] !== e.key) return this.position(e.key)
    return items.num[i] === items.num[i] ? items.pos[i]! : this.fillSlot(items, i, e.key)
  }

  /**
   * Every unexpired item whose position lies in `arcs`, with that position, in the map's order: the
   * dense index's positions are tested (doubles first) and only the items inside are read.
   */
  private liveInArcs (items: KeyTrackingMap, arcs: readonly RingArc[], coarse: Float64Array, now: number, fn: (e: Entry, pos: bigint) => void): void {
    const { slotKeys, num } = items
    for (let i = 0; i < slotKeys.length; i++) {
      const k = slotKeys[i]
      if (k === undefined) continue
      if (num[i] !== num[i]) this.fillSlot(items, i, k)
      if (!inAnyArcAt(items.pos, i, num[i]!, arcs, coarse)) continue
      const e = items.get(k)!
      if (e.expires > now) fn(e, items.pos[i]!)
    }
  }

  /** Hash the key in slot `i` of the dense index and keep its position there. */
  private fillSlot (items: KeyTrackingMap, i: number, key: string): bigint {
    const p = this.position(key)
    items.pos[i] = p; items.num[i] = Number(p)
    return p
  }

  /** Hands items to their new owners; resolves with the number of items it found to move. */
  private async handoff (old: Ring | undefined, ring: Ring, changed?: readonly RingArc[], only?: readonly string[]): Promise<number> {
    const now = this.clock.now()
    const arcs = old === undefined ? undefined : changed
    const coarse = arcs === undefined ? undefined : coarseArcs(arcs)
    let batches: Map<PeerId, Entry[]> | undefined
    const leaving: Array<{ e: Entry, owners: PeerId[] }> = []
    const add = (p: PeerId, e: Entry): void => {
      batches ??= new Map()
      const b = batches.get(p); if (b === undefined) batches.set(p, [e]); else b.push(e)
    }
    const consider = (e: Entry, pos: bigint): void => {
      const owners = ring.ownersAt(pos, this.replicas)
      const before = old === ring ? owners : old?.ownersAt(pos, this.replicas) ?? [this.self]
      if (!owners.includes(this.self)) {
        // no longer ours: give it to every new owner, drop it once a write quorum of them has it
        for (const o of owners) add(o, e)
        leaving.push({ e, owners })
        return
      }
      // new owners of an item we keep: the first surviving old owner (in replica order) pushes it
      const pusher = owners.find(o => before.includes(o))
      if (pusher !== this.self) return
      for (const o of owners) if (o !== this.self && !before.includes(o)) add(o, e)
    }
    if (only !== undefined) {
      for (const k of only) {
        const e = this.items.get(k)
        if (e !== undefined && e.expires > now) consider(e, this.walkPosition(e))
      }
    } else if (arcs !== undefined && this.items instanceof KeyTrackingMap) {
      // told what changed: the positions in the map's dense index (in the map's order) are tested, and
      // only the items inside the arcs are read
      this.liveInArcs(this.items, arcs, coarse!, now, consider)
    } else {
      for (const e of this.items.values()) {
        if (e.expires <= now) continue
        const pos = this.walkPosition(e)
        if (arcs !== undefined && !inAnyArc(pos, arcs, coarse!)) continue
        consider(e, pos)
      }
    }
    // a new ring replaces the handoffs of older rings still waiting to resume (this one recomputed what is due)
    if (this.resuming.size > 0) for (const h of [...this.resuming]) if (h.run.epoch !== this.ownership) { h.timer?.cancel(); this.resuming.delete(h) }
    if (batches === undefined && leaving.length === 0) return 0 // nothing moves
    const run: HandoffRun = { epoch: this.ownership, leaving, acked: new Map() }
    await Promise.all([...(batches ?? [])].map(async ([peer, list]) => {
      const h: PeerHandoff = { run, peer, list, next: 0, attempts: 0, resumed: 0, timer: undefined }
      run.acked.set(peer, new Set())
      await this.pushHandoff(h)
    }))
    this.dropHandedOff(run)
    if (only !== undefined) for (const l of leaving) if (this.items.get(l.e.key) === l.e) this.orphans.push(l.e.key)
    return leaving.length + (batches?.size ?? 0)
  }

  /**
   * Streams `h.list` to its peer from `h.next` on, in batches, reporting `handoff:progress` after each
   * acknowledged batch and `handoff:done` at the end. A failed batch interrupts it: it resumes from that
   * batch `requestTimeout` ms later (doubling, `maxHandoffRetries` times) while the ring is unchanged;
   * after that, anti-entropy repairs what is left.
   */
  private async pushHandoff (h: PeerHandoff): Promise<void> {
    const ok = h.run.acked.get(h.peer)!
    const total = h.list.length
    while (h.next < total) {
      if (!this.running || this.ownership !== h.run.epoch) return
      const chunk = h.list.slice(h.next, h.next + this.maxBatch)
      let res: OverlayMessage | undefined
      try {
        res = await this.net.send(h.peer, { type: 'store.put', items: chunk.map(e => this.toWireText(e)) }, { timeout: this.timeout })
      } catch { res = undefined }
      if (res?.type !== 'store.ok') {
        this.stats.handoffInterrupted++
        if (h.attempts >= this.maxHandoffRetries) {
          this.log.debug({ peer: h.peer, sent: h.next, total }, 'handoff given up; anti-entropy repairs the rest')
          return
        }
        const delay = this.timeout * 2 ** h.attempts
        h.attempts++
        this.resuming.add(h)
        h.timer = this.clock.setTimer(delay, () => {
          h.timer = undefined
          if (!this.resuming.delete(h)) return
          if (!this.running || this.ownership !== h.run.epoch) return
          h.resumed++
          this.stats.handoffResumed++
          this.handoffChain = this.handoffChain.then(async () => {
            await this.pushHandoff(h)
            this.dropHandedOff(h.run)
          }).catch(err => { this.log.warn({ err: String(err) }, 'handoff resume failed') })
        })
        return
      }
      for (const e of chunk) ok.add(e.key)
      h.next += chunk.length
      this.stats.handoffSent += chunk.length
      this.emit('handoff:progress', { to: h.peer, sent: h.next, total })
    }
    this.emit('handoff:done', { to: h.peer, sent: h.next, total, resumed: h.resumed })
  }

  /** Drop the items of `run` this node no longer owns once a write quorum of their new owners acknowledged them. */
  private dropHandedOff (run: HandoffRun): void {
    if (this.ownership !== run.epoch) return // a newer ring: its handoff decides
    for (const { e, owners } of run.leaving) {
      const cur = this.items.get(e.key)
      if (cur !== e) continue // changed meanwhile, or already dropped
      const need = Math.min(this.writeQuorum, owners.length)
      const have = owners.filter(o => run.acked.get(o)?.has(e.key) === true).length
      if (have >= need) {
        this.items.delete(e.key)
        this.persistDel(e.key)
        this.stats.handoffDropped++
      }
    }
  }

  /** Handoffs interrupted by a failure, waiting to resume (peer → state). */
  handoffsPending (): Array<{ to: PeerId, sent: number, total: number, attempts: number }> {
    return [...this.resuming].map(h => ({ to: h.peer, sent: h.next, total: h.list.length, attempts: h.attempts }))
  }

  // ------------------------------------------------------------ anti-entropy

  private scheduleAntiEntropy (): void {
    if (!this.running || this.aeInterval <= 0) return
    const jitter = this.aeInterval * (0.75 + this.rng.next() * 0.5)
    this.aeTimer = this.clock.setTimer(jitter, () => {
      void this.rebalance().then(() => this.antiEntropyRound()).catch(err => { this.log.debug({ err: String(err) }, 'anti-entropy round failed') })
        .finally(() => { this.scheduleAntiEntropy() })
    })
  }

  private bucketShift: bigint | undefined
  private bucketOf (pos: bigint): number {
    return this.bucketBits === 0 ? 0 : Number(pos >> (this.bucketShift ??= BigInt(64 - this.bucketBits)))
  }

  /**
   * Items both this node and `peer` replicate (by this node's ring), unexpired, with their digest
   * buckets. `mine`: this node's replica ranges on the current ring when already computed.
   */
  private sharedWith (peer: PeerId, mine?: ReplicaRanges): Shared {
    const ring = this.ring
    const out: Shared = { entries: [], buckets: [] }
    if (ring === undefined) return out
    const now = this.clock.now()
    const items = this.items
    const ranges = mine ?? ring.replicaRanges(this.self, this.replicas)
    if (ranges !== undefined) {
      // the ranges this node holds that `peer` holds too: an item is shared iff it lies in one of them
      // (the same as its owners including both, without a ring search per item)
      const arcs = ranges.sharedWith(peer)
      if (arcs.length === 0) return out
      const coarse = coarseArcs(arcs)
      if (items instanceof KeyTrackingMap) {
        this.liveInArcs(items, arcs, coarse, now, (e, pos) => { out.entries.push(e); out.buckets.push(this.bucketOf(pos)) })
        return out
      }
      for (const e of items.values()) {
        if (e.expires <= now) continue
        const pos = this.position(e.key)
        if (inAnyArc(pos, arcs, coarse)) { out.entries.push(e); out.buckets.push(this.bucketOf(pos)) }
      }
      return out
    }
    for (const e of this.items.values()) {
      if (e.expires <= now) continue
      const pos = this.walkPosition(e)
      const owners = ring.ownersAt(pos, this.replicas)
      if (owners.includes(peer) && owners.includes(this.self)) { out.entries.push(e); out.buckets.push(this.bucketOf(pos)) }
    }
    return out
  }

  private digest (items: Shared): bigint[] {
    const d = new Array<bigint>(1 << this.bucketBits).fill(0n)
    const h = this.hasher
    for (let i = 0; i < items.entries.length; i++) {
      const e = items.entries[i]!
      const b = items.buckets[i]!
      d[b] = d[b]! ^ h.hash64(`${e.key}\u0000${e.updated}.${e.counter}.${e.origin}\u0000${e.deleted ? 1 : 0}\u0000${e.expires}`)
    }
    return d
  }

  /** One round with one random peer: exchange digests, then the items of the differing buckets both ways. */
  async antiEntropyRound (peer?: PeerId): Promise<number> {
    const ring = this.ring
    if (ring === undefined || !this.running) return 0
    const ranges = ring.replicaRanges(this.self, this.replicas)
    if (this.peersOf?.ring !== ring) {
      this.peersOf = { ring, peers: ranges !== undefined ? ranges.peers(this.self) : ring.replicaPeers(this.self, this.replicas) }
    }
    const others = this.peersOf.peers
    const p = peer ?? others[this.rng.int(others.length)]
    if (p === undefined) return 0
    this.stats.antiEntropyRounds++
    const mine = this.sharedWith(p, ranges)
    const res = await this.net.send(p, { type: 'store.digest', buckets: this.digest(mine).map(x => x.toString(16)) }, { timeout: this.timeout })
    if (res.type !== 'store.diff') return 0
    const theirs = new Map<string, WireItem>()
    for (const it of res.items) theirs.set(it.key, it)
    let moved = this.acceptItems(res.items, p)
    const diff = new Set(res.buckets)
    const push: WireItem[] = []
    for (let i = 0; i < mine.entries.length; i++) {
      if (!diff.has(mine.buckets[i]!)) continue
      // the current entry: accepting their items may have merged it into a new one above theirs
      const e0 = mine.entries[i]!
      const cur = this.items.get(e0.key)
      const e = cur !== undefined && cur.expires > this.clock.now() ? cur : e0
      const t = theirs.get(e.key)
      if (t === undefined ? !res.more : compareEntry(e, t, valueJson(t)) > 0) push.push(this.toWireText(e))
    }
    for (let i = 0; i < push.length; i += this.maxBatch) {
      const r = await this.net.send(p, { type: 'store.put', items: push.slice(i, i + this.maxBatch) }, { timeout: this.timeout })
      if (r.type === 'store.ok') moved += r.stored
    }
    this.stats.antiEntropyItems += moved
    return moved
  }

  private answerDigest (buckets: string[], from: PeerId): OverlayMessage {
    if (this.ring === undefined) return { type: 'error', code: 'ERR_NO_RING', message: 'no ring yet' }
    if (buckets.length !== 1 << this.bucketBits) return { type: 'error', code: 'ERR_BUCKETS', message: `expected ${1 << this.bucketBits} buckets` }
    const mine = this.sharedWith(from)
    const d = this.digest(mine)
    const diff: number[] = []
    for (let i = 0; i < d.length; i++) if (d[i]!.toString(16) !== buckets[i]) diff.push(i)
    const set = new Set(diff)
    const items: WireItem[] = []
    let more = false
    for (let i = 0; i < mine.entries.length; i++) {
      if (!set.has(mine.buckets[i]!)) continue
      if (items.length >= this.maxBatch) { more = true; break }
      items.push(this.toWireText(mine.entries[i]!))
    }
    return { type: 'store.diff', buckets: diff, items, more }
  }
}

/** One handoff (for one ring): what leaves this node, and which keys each new owner acknowledged. */
interface HandoffRun {
  /** The store's ownership epoch it was computed for (a ring change that moves owners starts a new one). */
  epoch: number
  leaving: Array<{ e: Entry, owners: PeerId[] }>
  acked: Map<PeerId, Set<string>>
}

/** The part of a handoff going to one peer: the entries, how far it got, its retries. */
interface PeerHandoff {
  run: HandoffRun
  peer: PeerId
  list: Entry[]
  /** Entries acknowledged so far (the next batch starts here). */
  next: number
  attempts: number
  resumed: number
  timer: Timer | undefined
}

/** Entries with their digest buckets (parallel arrays). */
interface Shared {
  entries: Entry[]
  buckets: number[]
}

export function createReplicatedStore<V> (components: StoreComponents, init?: StoreInit): ReplicatedStore<V> {
  return new ReplicatedStore<V>(components, init)
}

/** Is `pos` inside one of the arcs `(start, end]` (start === end: the whole ring)? */
function inAnyArc (pos: bigint, arcs: readonly RingArc[], coarse: Float64Array, pn = Number(pos)): boolean {
  // a first test on doubles (BigInt comparisons are calls; Number() rounds monotonically, so a position
  // inside an arc always passes it), the exact one only for the arcs that pass
  for (let i = 0; i < arcs.length; i++) {
    const s = coarse[2 * i]!; const e = coarse[2 * i + 1]!
    if (s < e ? (pn < s || pn > e) : (s !== e && pn < s && pn > e)) continue
    const a = arcs[i]!
    if (a.start < a.end ? (pos > a.start && pos <= a.end) : (a.start === a.end || pos > a.start || pos <= a.end)) return true
  }
  return false
}

/** The arcs' bounds as doubles, [start0, end0, start1, …], for {@link inAnyArc}'s first test (taken from a {@link CoarseArc}). */
function coarseArcs (arcs: readonly RingArc[]): Float64Array {
  const out = new Float64Array(arcs.length * 2)
  for (let i = 0; i < arcs.length; i++) {
    const a = arcs[i]!
    if (a instanceof CoarseArc) { out[2 * i] = a.s; out[2 * i + 1] = a.e } else { out[2 * i] = Number(a.start); out[2 * i + 1] = Number(a.end) }
  }
  return out
}

/** Is `pos[i]` (its double: `n`) inside one of the arcs? {@link inAnyArc} reading the BigInt only when a double test passes. */
function inAnyArcAt (pos: BigUint64Array, i: number, n: number, arcs: readonly RingArc[], coarse: Float64Array): boolean {
  for (let j = 0; j < arcs.length; j++) {
    const s = coarse[2 * j]!; const e = coarse[2 * j + 1]!
    if (s < e ? (n < s || n > e) : (s !== e && n < s && n > e)) continue
    return inAnyArc(pos[i]!, arcs, coarse, n)
  }
  return false
}

/** An entry of a {@link KeyTrackingMap}, with its slot in the map's dense index. */
type SlotEntry = Entry & { i?: number }

/**
 * The entries of a store with `cachePositions`: remembers the keys added (for `rebalance`) and keeps
 * a dense index of the keys in the map's own order (insertion order: a slot per key, emptied on
 * delete, compacted when half empty) with their ring positions, hashed when first needed (NaN until
 * then). An entry replacing one of the same key takes its slot: a refresh hashes nothing, and no
 * change of the key set rebuilds anything. Each entry carries its slot (`i`).
 */
class KeyTrackingMap extends Map<string, Entry> {
  /** Keys added since the owner last cleared it. */
  readonly added = new Set<string>()
  /** The key of each slot (undefined: deleted), in insertion order. */
  slotKeys: Array<string | undefined> = []
  /** Ring position of each slot's key (valid where `num` is not NaN). */
  pos = new BigUint64Array(8)
  /** The position as a double; NaN: not hashed yet. */
  num = new Float64Array(8).fill(NaN)
  private holes = 0

  override set (k: string, v: Entry): this {
    const old = super.get(k) as SlotEntry | undefined
    if (old === undefined) {
      this.added.add(k)
      const i = this.slotKeys.length
      if (i === this.num.length) this.grow(i * 2)
      this.slotKeys.push(k); this.num[i] = NaN
      ;(v as SlotEntry).i = i
    } else {
      (v as SlotEntry).i = old.i
    }
    return super.set(k, v)
  }

  override delete (k: string): boolean {
    const old = super.get(k) as SlotEntry | undefined
    if (old === undefined) return false
    this.slotKeys[old.i!] = undefined
    this.holes++
    super.delete(k)
    if (this.holes >= 16 && this.holes * 2 >= this.slotKeys.length) this.compact()
    return true
  }

  override clear (): void {
    super.clear()
    this.slotKeys = []; this.holes = 0
  }

  private grow (cap: number): void {
    const pos = new BigUint64Array(cap); pos.set(this.pos)
    const num = new Float64Array(cap).fill(NaN); num.set(this.num)
    this.pos = pos; this.num = num
  }

  /** Drop the empty slots (order kept), renumbering the entries. */
  private compact (): void {
    const keys = this.slotKeys
    let j = 0
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]
      if (k === undefined) continue
      if (j !== i) { keys[j] = k; this.pos[j] = this.pos[i]!; this.num[j] = this.num[i]! }
      (super.get(k) as SlotEntry).i = j
      j++
    }
    keys.length = j
    this.holes = 0
  }
}
