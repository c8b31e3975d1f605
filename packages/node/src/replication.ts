/**
 * usrloc ↔ overlay glue, in the style of Kamailio's dmq_usrloc: it subscribes to the
 * local LocationStore's events (the registrar knows nothing of it) and publishes every AOR's
 * bindings to the overlay's ReplicatedStore, and it answers the proxy's location lookups with
 * "local bindings ∪ overlay bindings".
 *
 * Data model — one item per AOR, key `aor|<aor>`, so a lookup is one quorum read:
 *
 *   { v: 1, nodes: { <peerId>: { uri: <SIP URI of that super node>, v: [ms, seq], b: PublishedBinding[] } } }
 *
 * A published binding leaves out what a reader derives or never uses (every replica of every AOR
 * is held in RAM by R super nodes): `aor` (the key says it), `node` (the portion's id says it) and
 * `contactHeader` (only the attachment node's registrar answers with it, from its own usrloc).
 * Readers restore `aor` and `node`; values written with them (older writers) are read as before.
 *
 * Each super node writes only its own portion (`nodes[self]`): the bindings its local usrloc holds,
 * i.e. the clients attached to it (their flows/connections live there). Writes are read-modify-write
 * (quorum read, replace the own portion, copy the others' live portions verbatim, write with TTL =
 * the latest expiry; no binding left: a signed empty own portion, the *portion tombstone*, kept until
 * its `x`; the key is never deleted). Versions: the store's HLC version orders whole items, but the
 * replicas do not let the newer item win as a whole: the store's merge hook for `aor|` keys
 * (`mergeValues`) keeps, per node id, the portion with the higher writer's `[ms, seq]` among the live,
 * well-formed and (with a signer) validly signed ones. A portion thus leaves an item only by its own
 * node's newer write or by expiry: a writer leaving it out (a race of two nodes, or a malicious
 * admitted node) erases nothing. RFC 3261 Call-ID/CSeq ordering is enforced where it belongs, by the
 * attachment node's usrloc. Every publish is still re-read `verifyDelay` ms later and re-published
 * when the own portion is not what usrloc holds, and every lookup that sees a stale own portion does
 * the same.
 *
 * Fast paths (throughput; overlay requests per REGISTER 6 → 4 for a new AOR, → 2 for a refresh):
 * - *local verification*: when this node wrote an AOR alone (the pre-read held no other node's
 *   portion) and it is one of the key's owners, the verification reads its own replica instead of
 *   the quorum: a concurrent writer's put reaches every owner, so a replica still holding this
 *   node's write (version origin = self) means nobody wrote since; anything else falls back to the
 *   quorum re-read and its repair. AORs with portions from ≥ 2 nodes always get the quorum re-read.
 * - *blind refresh*: when this node is an owner and its replica holds an item this node wrote in
 *   this run (origin = self, written since `start()`, younger than `trustLocalFor`) with only its own
 *   portion, the quorum pre-read is skipped and the own replica stands in for it. A write that
 *   raced it lands on this replica too and the (local) verification catches it.
 * - *blind write*: when this node is an owner and its replica holds nothing of the AOR (a new AOR),
 *   the pre-read is skipped and only the own portion is written: the replicas merge portion by
 *   portion, so another node's portion held by some replica survives (merged there).
 * - an unchanged own portion (same bindings, same expiries, nothing to drop) is not rewritten: no
 *   put, no db writes (the republish of every AOR after a restart, a repair that someone else did).
 *
 * Why a stale portion can never make a deleted contact reachable: other nodes only learn from the
 * item *which node* to send a request to (`binding.node` → that node's SIP URI, Path semantics);
 * the attachment node then forks to the bindings of its own usrloc only (the proxy's `sr=local`
 * Route). For its own portion a node trusts usrloc, never the overlay. Exception: once the attachment
 * node is dead, its plain UDP clients are reached directly from its last published portion
 * (`directlyReachable`, `liveRoute`), so an un-REGISTER it never published can still be reached.
 */
import type { Binding, Clock, Logger, Timer } from '@sipring/interface'
import { contactKey, type LocationEvent, type LocationStore } from '@sipring/location'
import type { MergeContext, PeerId, ReplicatedStore, ValueMerge, Version, WireItem } from '@sipring/overlay'
import { hostEquals, isIPv4, isIPv6, parseUri } from '@sipring/sip'

/** Key of an AOR's item in the replicated store. */
export const aorKey = (aor: string): string => `aor|${aor}`
/** Key of a super node's record (its SIP URI) in the replicated store. */
export const nodeKey = (id: PeerId): string => `node|${id}`

/** The value stored under `node|<peerId>`: how other super nodes reach that node over SIP. */
export interface NodeRecord {
  v: 1
  sip: string
}

/** Everything the location service keeps in the replicated store. */
export type ReplicaValue = AorValue | NodeRecord

/**
 * A binding as published: without the fields a reader derives (`aor` from the key, `node` from the
 * portion's id) or does not use (`contactHeader`). They are optional, so a full Binding is one too.
 */
export type PublishedBinding = Omit<Binding, 'aor' | 'node' | 'contactHeader'> & Partial<Pick<Binding, 'aor' | 'node' | 'contactHeader'>>

/** One super node's part of an AOR item, as read (parsed: `aor` and `node` restored). */
export interface NodePortion {
  /** SIP URI of that super node (where other nodes send requests for its clients). */
  uri: string
  /** Writer's version of this portion: [ms, sequence]. */
  v: [number, number]
  /** Its bindings (absolute expiry); `node` is the portion's owner. */
  b: Binding[]
}

/** One super node's part of an AOR item, as written. */
export interface PublishedPortion {
  uri: string
  v: [number, number]
  b: PublishedBinding[]
  /** A portion tombstone (no bindings): kept until this time (ms), then dropped. */
  x?: number
}

/** The value stored under `aor|<aor>`. */
export interface AorValue {
  v: 1
  nodes: Record<PeerId, PublishedPortion>
}

/** An AOR value as read: every binding complete (`aor` and `node` restored). */
export interface ParsedAorValue {
  v: 1
  nodes: Record<PeerId, NodePortion>
}

/** Signs as this node; checks a signature of node `id` (an Ed25519 PeerId embeds its public key). */
export interface PortionSigner {
  sign (data: Uint8Array): Uint8Array
  verify (id: PeerId, data: Uint8Array, sig: Uint8Array): boolean
}

/** One super node's part of an AOR item, as written, with its signature when signed (`s`, base64). */
export interface SignedPortion extends PublishedPortion {
  s?: string
}

/**
 * The bytes a portion's signature covers: a domain tag, the AOR, the node id and the portion's `uri`,
 * `v`, `b` as JSON with object keys sorted (so any re-encoding of the same content verifies).
 */
export function portionBytes (aor: string, id: PeerId, p: { uri: unknown, v: unknown, b: unknown, x?: unknown }): Buffer {
  return Buffer.from(`sipring/portion/1\n${aor}\n${id}\n${canonicalJson({ uri: p.uri, v: p.v, b: p.b, x: p.x })}`, 'utf8')
}

/** Key prefix of the AOR items (the store merges them portion by portion: `LocationReplicator.mergeValues`). */
export const AOR_PREFIX = 'aor|'

/**
 * Until when a portion as written matters: its latest binding expiry, or its `x` (a portion
 * tombstone: no bindings, kept until `x` so an older portion of its node cannot come back).
 * -Infinity for a malformed one.
 */
export function portionExpiry (p: unknown): number {
  if (!isObj(p) || !Array.isArray(p.b)) return -Infinity
  let e = isNum(p.x) ? p.x : -Infinity
  for (const b of p.b) if (isObj(b) && isNum(b.expires) && b.expires > e) e = b.expires
  return e
}

/** The structure `parseValue` requires of a portion (its bindings are checked one by one). */
function portionShapeOk (id: string, p: unknown, limits: ReplicationLimits): p is Record<string, unknown> & { uri: string, v: [number, number], b: unknown[] } {
  return id.length > 0 && id.length <= limits.maxStringLength && isObj(p) && typeof p.uri === 'string' && p.uri.length <= limits.maxStringLength &&
    /^sips?:/i.test(p.uri) && Array.isArray(p.v) && p.v.length === 2 && isNum(p.v[0]) && isNum(p.v[1]) && Array.isArray(p.b) &&
    (p.x === undefined || isNum(p.x))
}

const AOR_HEAD = '{"v":1,"nodes":{'

/**
 * The portions' ids and versions of an AOR value's JSON text, without decoding it: `ids[i]` has
 * version [`v[2i]`, `v[2i+1]`]. Reads the compact form JSON.stringify writes (`{"v":1,"nodes":{…}}`,
 * no white space); any other text — white space, escaped ids, a duplicate id or version, no version,
 * anything after the nodes — gives undefined (the caller decodes it instead).
 */
export function portionVersions (s: string): { ids: string[], v: number[] } | undefined {
  // the last text read, by identity (a coordinator reads its replica's text for the blind refresh,
  // then merges its write into that same text): callers only read the answer
  if (s === lastIndexed.text) return lastIndexed.index
  const index = readPortionVersions(s)
  lastIndexed.text = s; lastIndexed.index = index
  return index
}
const lastIndexed: { text: string | undefined, index: { ids: string[], v: number[] } | undefined } = { text: undefined, index: undefined }

function readPortionVersions (s: string): { ids: string[], v: number[] } | undefined {
  if (!s.startsWith(AOR_HEAD)) return undefined
  const ids: string[] = []; const v: number[] = []
  const len = s.length
  let i = AOR_HEAD.length
  if (s.charCodeAt(i) === 125) i++ // '}': no portion
  else {
    for (;;) {
      if (s.charCodeAt(i) !== 34) return undefined // '"'
      const k = s.indexOf('"', i + 1)
      if (k < 0) return undefined
      const id = s.slice(i + 1, k)
      if (id.includes('\\') || ids.includes(id)) return undefined
      i = k + 1
      if (s.charCodeAt(i) !== 58 || s.charCodeAt(i + 1) !== 123) return undefined // ':{'
      i++
      // the portion object: its "v" member (depth 1) and its end
      let depth = 0; let found = false
      for (; i < len; i++) {
        const c = s.charCodeAt(i)
        if (c === 34) {
          const at = i
          i = closingQuote(s, i)
          if (i < 0) return undefined
          // the key "v" of the portion itself: [ms,seq]
          if (depth === 1 && i === at + 2 && s.charCodeAt(at + 1) === 118 && s.charCodeAt(i + 1) === 58) {
            if (found || s.charCodeAt(i + 2) !== 91) return undefined
            const comma = s.indexOf(',', i + 3); const end = s.indexOf(']', i + 3)
            if (comma < 0 || end < 0 || comma > end) return undefined
            const m = jsonNumber(s, i + 3, comma); const q = jsonNumber(s, comma + 1, end)
            if (Number.isNaN(m) || Number.isNaN(q)) return undefined
            v.push(m, q); found = true
            i = end // its ']' closes the array opened (not counted)
          }
        } else if (c === 123 || c === 91) depth++
        else if (c === 125 || c === 93) {
          if (--depth === 0) { i++; break }
        }
      }
      if (!found || depth !== 0) return undefined
      ids.push(id)
      const c = s.charCodeAt(i)
      if (c === 44) { i++; continue } // ','
      if (c === 125) { i++; break } // '}'
      return undefined
    }
  }
  return i === len - 1 && s.charCodeAt(i) === 125 ? { ids, v } : undefined
}

/** The finite number that `s` spells from `a` to `b` (a JSON number), NaN for anything else. */
function jsonNumber (s: string, a: number, b: number): number {
  if (b <= a) return NaN
  let n = 0
  if (b - a <= 15) {
    // the usual case: digits only (exact below 2^53)
    let i = a
    for (; i < b; i++) {
      const c = s.charCodeAt(i) - 48
      if (c < 0 || c > 9) break
      n = n * 10 + c
    }
    if (i === b) return n
  }
  const t = s.slice(a, b)
  n = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(t) ? Number(t) : NaN
  return Number.isFinite(n) ? n : NaN
}

/** Index of the '"' closing the JSON string that opens at `i`; -1 if none. */
function closingQuote (s: string, i: number): number {
  let e = s.indexOf('"', i + 1)
  while (e > 0 && s.charCodeAt(e - 1) === 92) {
    // preceded by backslashes: escaped when there is an odd number of them
    let n = 0
    for (let j = e - 1; s.charCodeAt(j) === 92; j--) n++
    if (n % 2 === 0) break
    e = s.indexOf('"', e + 1)
  }
  return e
}

/** Order of two portions of one node: version [ms, seq], then (same version, different content) their JSON text. */
function comparePortions (a: { v: [number, number] }, b: { v: [number, number] }): number {
  if (a.v[0] !== b.v[0]) return a.v[0] < b.v[0] ? -1 : 1
  if (a.v[1] !== b.v[1]) return a.v[1] < b.v[1] ? -1 : 1
  if (a === b) return 0
  const ja = JSON.stringify(a); const jb = JSON.stringify(b)
  return ja < jb ? -1 : ja > jb ? 1 : 0
}

/** JSON with object keys sorted, recursively (undefined members left out, as JSON.stringify does). */
export function canonicalJson (x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(e => e === undefined ? 'null' : canonicalJson(e)).join(',')}]`
  if (typeof x === 'object' && x !== null) {
    const o = x as Record<string, unknown>
    return `{${Object.keys(o).filter(k => o[k] !== undefined).sort().map(k => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`
  }
  return JSON.stringify(x) ?? 'null'
}

export interface ReplicationLimits {
  /** Portions (super nodes) kept per AOR item (default 16). */
  maxNodesPerAor: number
  /** Bindings accepted per portion read from the overlay (default 64). */
  maxBindingsPerNode: number
  /** Longest SIP URI / string field accepted from the overlay (default 2048). */
  maxStringLength: number
}

export const DEFAULT_REPLICATION_LIMITS: Readonly<ReplicationLimits> = Object.freeze({ maxNodesPerAor: 16, maxBindingsPerNode: 64, maxStringLength: 2048 })

export interface ReplicationOptions {
  clock: Clock
  logger: Logger
  location: LocationStore
  store: ReplicatedStore<ReplicaValue>
  /** This node's overlay id (stamped as `binding.node` by the registrar). */
  self: PeerId
  /** This node's SIP URI as other super nodes reach it, e.g. `sip:10.0.0.1:5060;transport=tcp`. */
  sipUri: string
  /** Membership state of a node: lookups route through alive/suspect members only (a dead/left/unknown one's plain UDP clients are returned for direct sending, see `directlyReachable`); writes drop dead/left ones. */
  memberStatus?: (id: PeerId) => string | undefined
  /** Publishes running at once (default 512: their overlay requests are batched per owner, so more in flight costs little and keeps up when round trips grow under load). */
  concurrency?: number
  /** Re-read a published AOR this long after the write and re-publish it if it lost a race (ms, 0 = never; default 1000). */
  verifyDelay?: number
  /** First retry after a failed publish (ms, doubled each time, default 500); attempts: `maxRetries` (default 8). */
  retryDelay?: number
  maxRetries?: number
  /** Use this node's own replica instead of a quorum pre-read for an AOR only it wrote, this recently (ms, 0 = never; default 3,600,000). */
  trustLocalFor?: number
  /**
   * Sign this node's portion of every AOR item and accept other nodes' portions only with a valid
   * signature of the node they name (binding writes only from the super node the client is attached
   * to, i.e. the one that authenticated it). Unsigned or badly signed portions are ignored by readers
   * and not copied by writers (`stats.badSignatures`). The daemon passes an Ed25519 signer built from
   * the libp2p key when the overlay is closed (admission on). Default: none (portions unsigned, not checked).
   */
  signer?: PortionSigner
  /**
   * Lifetime of a portion tombstone (the signed empty portion a node writes when its last binding of an
   * AOR goes, so an older portion of it cannot come back through a stale replica), ms. Default: the
   * store's maxTtl (the longest a binding can live).
   */
  portionTombstoneTtl?: number
  limits?: Partial<ReplicationLimits>
}

export interface ReplicationStats {
  /** Items written (puts) and deleted (tombstones). */
  published: number
  deleted: number
  /** Failed publish attempts (each is retried up to maxRetries). */
  publishErrors: number
  /** Publishes given up after maxRetries (the next REGISTER refresh publishes again). */
  abandoned: number
  lookups: number
  /** Lookups whose overlay read failed (answered from local usrloc only). */
  lookupErrors: number
  /** Re-publishes because a read showed a stale own portion (lost write race). */
  repairs: number
  /** Malformed portions/bindings read from the overlay and ignored. */
  rejected: number
  /** Publishes whose pre-read was answered by this node's own replica (no network). */
  localReads: number
  /** Verifications answered by this node's own replica (no network). */
  localVerifies: number
  /** Publishes of an AOR this node owns and whose replica held nothing of it: written without the quorum pre-read (own portion only). */
  blindWrites: number
  /** Publishes skipped because the overlay already held exactly the own portion. */
  unchanged: number
  /** Portions of other nodes read without a valid signature (with a signer only): ignored. */
  badSignatures: number
  /** Value merges of AOR items done by this node's store replica (store hook). */
  merges: number
  /** Portions dropped by those merges: without a valid signature of their node (with a signer only). */
  mergeRejected: number
}

const NON_RETRYABLE = new Set(['ERR_BAD_KEY', 'ERR_BAD_TTL', 'ERR_BAD_VALUE'])
/** Publish pre-reads and verifications ask only the remote owners the read quorum needs (see GetOptions.minimal). */
const MINIMAL = Object.freeze({ minimal: true })

/** Identity of a binding across nodes: RFC 5626 instance + reg-id, else the Contact URI. */
export function bindingIdentity (b: Binding): string {
  if (b.instance !== undefined && b.regId !== undefined) return `o:${b.instance.toLowerCase()}:${b.regId}`
  return `u:${contactKey(b.contact)}`
}

/** Is `a` a newer registration of the same contact than `b`? Same Call-ID: higher CSeq; else the later write. */
export function newerBinding (a: Binding, b: Binding): boolean {
  if (a.callId === b.callId && a.cseq !== b.cseq) return a.cseq > b.cseq
  return a.updated > b.updated
}

function byLookupOrder (a: Binding, b: Binding): number {
  return b.q - a.q || b.updated - a.updated
}

/** Fingerprint of a set of bindings (what must match between usrloc and the own portion). */
function fingerprint (list: readonly Binding[]): string {
  return list.map(b => `${bindingIdentity(b)}|${b.expires}|${b.callId}|${b.cseq}`).sort().join('\n')
}

/** The value of a store item carrying it decoded (`value`) or as JSON text (`json`); undefined for none or bad text. */
function itemValueOf (it: WireItem<ReplicaValue>): ReplicaValue | undefined {
  if (it.json === undefined) return it.value
  if (it.json === '') return undefined
  try { return JSON.parse(it.json) as ReplicaValue } catch { return undefined }
}

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)
const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x)

/**
 * Subscribes to usrloc, publishes to the overlay, and serves `lookup(aor)` (the proxy's
 * `LocationLike`) and `nodeRoute(peerId)` (the proxy's overlay hook).
 */
export class LocationReplicator {
  readonly self: PeerId
  private uri: string
  private readonly clock: Clock
  private readonly log: Logger
  private readonly location: LocationStore
  private readonly store: ReplicatedStore<ReplicaValue>
  private readonly memberStatus: ((id: PeerId) => string | undefined) | undefined
  private readonly concurrency: number
  private readonly verifyDelay: number
  private readonly retryDelay: number
  private readonly maxRetries: number
  private readonly trustLocalFor: number
  private readonly signer: PortionSigner | undefined
  /** Portions whose signature verified (canonical bytes + signature), so a copy read again is not re-verified. */
  private readonly verified = new Set<string>()
  /** Clock time of `start()`: own items older than this were written by a previous run. */
  private startedAt = 0
  private readonly limits: ReplicationLimits

  /** PeerId → SIP URI of that super node, learnt from the portions read. */
  private readonly routes = new Map<PeerId, string>()
  private readonly dirty = new Set<string>()
  private readonly queued = new Set<string>()
  private queue: string[] = []
  private head = 0
  private readonly active = new Set<string>()
  private readonly attempts = new Map<string, number>()
  /** AORs whose last write failed (it may sit in some replicas only): no shortcut until a write succeeds. */
  private readonly unsure = new Set<string>()
  private readonly timers = new Set<Timer>()
  private idleWaiters: Array<() => void> = []
  /** Incremented on every markDirty: orders local changes against the local state a publish read. */
  private changeSeq = 0
  /** `settled(aor)` callers: resolved once a publish that read local state at seq >= `target` is written. */
  private readonly aorWaiters = new Map<string, AorWaiter[]>()
  /** `settled(aor)` waiters with a deadline, in deadline order (one timer for all). */
  private deadlines: AorWaiter[] = []
  private deadlineHead = 0
  private deadlineTimer: Timer | undefined
  /** AORs being published whose publish has read usrloc: the `changeSeq` of that read. */
  private readonly reading = new Map<string, number>()
  /** Verifications due, in time order (one delay for all), served by one timer. */
  private verifyQueue: Array<{ at: number, aor: string, alone: boolean, version: Version | undefined }> = []
  private verifyHead = 0
  private verifyTimer: Timer | undefined
  private seq = { ms: 0, n: 0 }
  private selfTimer: Timer | undefined
  /** Members whose `node|` record is being fetched. */
  private readonly learning = new Set<PeerId>()
  private running = false
  private readonly onEvent = (b: Binding): void => { this.markDirty(b.aor) }
  readonly stats: ReplicationStats = { published: 0, deleted: 0, publishErrors: 0, abandoned: 0, lookups: 0, lookupErrors: 0, repairs: 0, rejected: 0, localReads: 0, blindWrites: 0, localVerifies: 0, unchanged: 0, badSignatures: 0, merges: 0, mergeRejected: 0 }
  private readonly tombstoneTtl: number

  constructor (opts: ReplicationOptions) {
    this.clock = opts.clock
    this.log = opts.logger.child({ component: 'replication' })
    this.location = opts.location
    this.store = opts.store
    this.self = opts.self
    this.uri = opts.sipUri
    this.memberStatus = opts.memberStatus
    this.concurrency = opts.concurrency ?? 512
    this.verifyDelay = opts.verifyDelay ?? 1000
    this.retryDelay = opts.retryDelay ?? 500
    this.maxRetries = opts.maxRetries ?? 8
    this.trustLocalFor = opts.trustLocalFor ?? 3_600_000
    this.signer = opts.signer
    this.limits = { ...DEFAULT_REPLICATION_LIMITS, ...opts.limits }
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new RangeError('concurrency must be an integer >= 1')
    if (!(this.verifyDelay >= 0) || !(this.retryDelay > 0)) throw new RangeError('verifyDelay must be >= 0 and retryDelay > 0')
    if (!Number.isInteger(this.maxRetries) || this.maxRetries < 0) throw new RangeError('maxRetries must be an integer >= 0')
    if (!(this.trustLocalFor >= 0)) throw new RangeError('trustLocalFor must be >= 0')
    this.tombstoneTtl = opts.portionTombstoneTtl ?? this.store.maxTtl
    if (!(this.tombstoneTtl > 0)) throw new RangeError('portionTombstoneTtl must be > 0')
    this.routes.set(this.self, this.uri)
    // the replicas merge AOR items portion by portion: a write without some node's portion cannot erase it
    if (typeof this.store.setMerge === 'function') {
      const merge: ValueMerge<ReplicaValue> = (a, b, key, ctx) => this.mergeValues(a, b, key, ctx)
      merge.dominates = (incoming, storedJson, key, ctx) => this.dominates(incoming, storedJson, key, ctx)
      this.store.setMerge(AOR_PREFIX, merge)
    }
  }

  /**
   * The store's merge of two AOR items (`newer` is the greater under the store's order): per node id,
   * the portion with the higher version [ms, seq] among the live ones (`portionExpiry` in the future)
   * that are well formed and, with a signer, carry a valid signature of that node; at most
   * `maxNodesPerAor` portions (the most recent). A portion therefore leaves an item only by its own
   * node's newer write (a portion tombstone) or by expiry, never because some writer left it out.
   * Returns `newer` itself when the merge equals it. Pure in content (commutative, associative,
   * idempotent at a given time); never throws.
   *
   * Signatures checked (`ctx`, see the store's MergeContext): none for the replica's own state (a
   * merge output: already checked) nor for this node's own writes (their other portions were checked
   * when read); in an incoming value, none for the sender's own portion (the network authenticated
   * the sender, which could sign it anyway); every other portion that would win is verified (memoized).
   */
  mergeValues (newer: ReplicaValue, older: ReplicaValue, key: string, ctx?: MergeContext<ReplicaValue>): ReplicaValue {
    this.stats.merges++
    const an = isObj(newer) && isObj((newer as { nodes?: unknown }).nodes) ? (newer as AorValue).nodes as Record<PeerId, unknown> : undefined
    const bn = isObj(older) && isObj((older as { nodes?: unknown }).nodes) ? (older as AorValue).nodes as Record<PeerId, unknown> : undefined
    if (bn === undefined) return newer
    if (an === undefined) return older
    const aor = key.startsWith(AOR_PREFIX) ? key.slice(AOR_PREFIX.length) : key
    const now = this.clock.now()
    if (an === bn) {
      // one value merged with itself (the store validating a value that arrived with nothing stored):
      // the value itself when every portion is usable and valid (the common case), else the merge below.
      if (this.allValid(an, aor, ctx !== undefined && ctx.incoming === newer ? ctx.from : undefined, now)) return newer
    }
    const usable = (id: string, p: unknown): p is PublishedPortion & Record<string, unknown> =>
      p !== undefined && portionShapeOk(id, p, this.limits) && portionExpiry(p) > now
    // which side is the replica's checked state, which arrived (and from whom)
    const inc = ctx === undefined ? undefined : ctx.incoming === newer ? an : ctx.incoming === older ? bn : undefined
    const localSide = inc === undefined || newer === older ? undefined : inc === an ? bn : an
    const trustAll = ctx !== undefined && ctx.from === this.self
    const signed = (id: string, p: PublishedPortion & Record<string, unknown>): boolean => {
      if (this.signer === undefined) return true
      if (localSide !== undefined && localSide[id] === p) return true
      if (inc !== undefined && inc[id] === p && (trustAll || id === ctx!.from)) return true
      return this.verifyPortion(aor, id, p)
    }
    const valid = (id: string, p: PublishedPortion & Record<string, unknown>): boolean => {
      if (signed(id, p)) return true
      this.stats.mergeRejected++
      return false
    }
    const out: Record<PeerId, PublishedPortion> = {}
    let isA = true; let isB = true
    let n = 0
    for (const id of new Set([...Object.keys(an), ...Object.keys(bn)])) {
      const pa = an[id]; const pb = bn[id]
      const ua = usable(id, pa) ? pa : undefined
      const ub = usable(id, pb) ? pb : undefined
      // the newer portion of this node wins if valid, else the other one
      const order = ua !== undefined && ub !== undefined ? comparePortions(ua, ub) : 0
      // on the same content prefer the replica's own (already checked) copy
      const first = ua !== undefined && (ub === undefined || order > 0 || (order === 0 && localSide !== bn)) ? ua : ub
      const second = first === ua ? ub : ua
      let pick: PublishedPortion | undefined
      if (first !== undefined && valid(id, first)) pick = first
      else if (second !== undefined && valid(id, second)) pick = second
      if (pick === undefined) {
        if (pa !== undefined) isA = false
        if (pb !== undefined) isB = false
        continue
      }
      const same = ua !== undefined && ub !== undefined && order === 0 // same content in both
      if (pick !== pa && !(same && pick === ub)) isA = false
      if (pick !== pb && !(same && pick === ua)) isB = false
      out[id] = pick
      n++
    }
    if (n > this.limits.maxNodesPerAor) {
      // keep the most recently written portions
      const keep = new Set(Object.keys(out).sort((x, y) => comparePortions(out[y]!, out[x]!) || (x < y ? -1 : x > y ? 1 : 0)).slice(0, this.limits.maxNodesPerAor))
      for (const id of Object.keys(out)) if (!keep.has(id)) Reflect.deleteProperty(out, id)
      isA = false; isB = false
    }
    if (isA) return newer
    if (isB) return older
    return { v: 1, nodes: out }
  }

  /**
   * Is every portion of `nodes` (a value that arrived from `from`) usable and valid: at most
   * `maxNodesPerAor`, well formed, live, and with a signer validly signed — the sender's own portion
   * (all of them for this node's own writes) is taken on the network's authentication, the others
   * are verified (as in `mergeValues`).
   */
  private allValid (nodes: Record<PeerId, unknown>, aor: string, from: PeerId | undefined, now: number): boolean {
    let n = 0
    for (const id in nodes) {
      const p = nodes[id]
      if (++n > this.limits.maxNodesPerAor || p === undefined || !portionShapeOk(id, p, this.limits) || !(portionExpiry(p) > now) ||
          (this.signer !== undefined && !(from !== undefined && (from === this.self || id === from)) && !this.verifyPortion(aor, id, p))) return false
    }
    return true
  }

  /**
   * The store's fast path before `mergeValues` (`ValueMerge.dominates`): is the merge of `incoming`
   * (arrived from `ctx.from`) with the stored value, given as its JSON text, `incoming` itself? True
   * when every portion stored has a strictly newer version in `incoming` and every portion of
   * `incoming` is usable and valid (`allValid`): then `mergeValues` picks every incoming portion and
   * nothing else. The stored text is not decoded: only its portions' ids and versions are read
   * (`portionVersions`); a text of another shape answers false (the full merge decides).
   */
  dominates (incoming: ReplicaValue, storedJson: string, key: string, ctx: MergeContext<ReplicaValue>): boolean {
    const an = isObj(incoming) && isObj((incoming as { nodes?: unknown }).nodes) ? (incoming as AorValue).nodes as Record<PeerId, unknown> : undefined
    if (an === undefined) return false
    const idx = portionVersions(storedJson)
    // no portion stored (rare): the full merge (it keeps the stored item when both are empty)
    if (idx === undefined || idx.ids.length === 0) return false
    for (let i = 0; i < idx.ids.length; i++) {
      const p = an[idx.ids[i]!]
      if (!isObj(p) || !Array.isArray(p.v) || p.v.length !== 2) return false
      const m = p.v[0] as unknown; const q = p.v[1] as unknown
      const sm = idx.v[2 * i]!; const sq = idx.v[2 * i + 1]!
      if (!isNum(m) || !isNum(q) || !(m > sm || (m === sm && q > sq))) return false
    }
    const aor = key.startsWith(AOR_PREFIX) ? key.slice(AOR_PREFIX.length) : key
    if (!this.allValid(an, aor, ctx.from, this.clock.now())) return false
    this.stats.merges++
    return true
  }

  /** Does `p` carry a valid signature of node `id` for `aor`? Memoized (8,192 entries). */
  private verifyPortion (aor: string, id: PeerId, p: Record<string, unknown>): boolean {
    const signer = this.signer
    if (signer === undefined) return true
    const sig = p.s
    if (typeof sig !== 'string' || sig.length > 128) return false
    const bytes = portionBytes(aor, id, p as { uri: unknown, v: unknown, b: unknown, x?: unknown })
    const memo = `${sig}\n${bytes.toString('latin1')}`
    if (this.verified.has(memo)) return true
    if (!signer.verify(id, bytes, Buffer.from(sig, 'base64'))) return false
    if (this.verified.size >= 8192) this.verified.clear()
    this.verified.add(memo)
    return true
  }

  /** This node's SIP URI as published. */
  get sipUri (): string { return this.uri }

  /** Change the published SIP URI (e.g. once the listeners' ports are known); republishes. */
  setSipUri (uri: string): void {
    if (uri === this.uri) return
    this.uri = uri
    this.routes.set(this.self, uri)
    if (!this.running) return
    for (const aor of this.location.aors()) this.markDirty(aor)
    void this.publishSelf()
  }

  private static readonly EVENTS: LocationEvent[] = ['insert', 'update', 'delete', 'expire']

  /** Subscribe to usrloc, publish this node's record and every AOR usrloc already holds (restart from the db). */
  start (): void {
    if (this.running) return
    this.running = true
    this.startedAt = this.clock.now()
    for (const e of LocationReplicator.EVENTS) this.location.on(e, this.onEvent)
    for (const aor of this.location.aors()) this.markDirty(aor)
    void this.publishSelf()
  }

  /** Write `node|<self>` (TTL maxTtl, refreshed every maxTtl/2; retried on failure). */
  private async publishSelf (): Promise<void> {
    if (!this.running) return
    this.selfTimer?.cancel()
    try {
      await this.store.put(nodeKey(this.self), { v: 1, sip: this.uri }, { ttl: this.store.maxTtl })
      this.selfTimer = this.clock.setTimer(this.store.maxTtl / 2, () => { void this.publishSelf() })
    } catch (err) {
      this.log.debug({ err: String(err) }, 'publishing the node record failed; retrying')
      this.selfTimer = this.clock.setTimer(this.retryDelay * 4, () => { void this.publishSelf() })
    }
  }

  /**
   * Learn how to reach these members over SIP (their `node|<id>` records), so requests they relay
   * can be recognised and clients attached to them reached before any of their AORs was read.
   * Missing records (a member that just joined) are retried a few times.
   */
  learnNodes (ids: PeerId[]): void {
    for (const id of ids) {
      if (id === this.self || this.routes.has(id) || this.learning.has(id)) continue
      this.learning.add(id)
      void this.learnNode(id, 0)
    }
  }

  private async learnNode (id: PeerId, attempt: number): Promise<void> {
    let rec: ReplicaValue | undefined
    try { rec = await this.store.get(nodeKey(id)) } catch { rec = undefined }
    if (!this.running) { this.learning.delete(id); return }
    const sip = isObj(rec) && typeof rec.sip === 'string' && rec.sip.length <= this.limits.maxStringLength && /^sips?:/i.test(rec.sip) ? rec.sip : undefined
    if (sip !== undefined) {
      this.routes.set(id, sip)
      this.learning.delete(id)
      return
    }
    if (attempt >= 10) { this.learning.delete(id); return }
    this.later(this.retryDelay * 2, () => { void this.learnNode(id, attempt + 1) })
  }

  /** Unsubscribe, cancel retries, and wait for the publishes in flight. */
  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    for (const e of LocationReplicator.EVENTS) this.location.off(e, this.onEvent)
    for (const t of this.timers) t.cancel()
    this.verifyTimer?.cancel(); this.verifyTimer = undefined
    this.verifyQueue = []; this.verifyHead = 0
    this.timers.clear()
    this.selfTimer?.cancel(); this.selfTimer = undefined
    this.learning.clear()
    this.unsure.clear()
    this.dirty.clear(); this.queued.clear(); this.queue = []; this.head = 0
    for (const aor of [...this.aorWaiters.keys()]) this.resolveWaiters(aor, Infinity, false)
    this.deadlineTimer?.cancel(); this.deadlineTimer = undefined
    this.deadlines = []; this.deadlineHead = 0
    await this.settled()
  }

  /**
   * Without arguments: resolves when nothing is queued or being published (retries and
   * verifications pending may still come).
   *
   * With an AOR: resolves true once `aor`'s local state as of this call has been written to the
   * overlay with the write quorum (by the publish in flight when it read usrloc after the call's
   * changes, else by the next one: the usual coalesced, retried publishes), false on timeout, abort,
   * stop, or when the publish is given up. The local binding stays either way.
   */
  async settled (): Promise<void>
  async settled (aor: string, opts: { signal?: AbortSignal, timeoutMs: number }): Promise<boolean>
  async settled (aor?: string, opts?: { signal?: AbortSignal, timeoutMs: number }): Promise<boolean | void> {
    if (aor === undefined) {
      if (this.active.size === 0 && this.queued.size === 0) return
      await new Promise<void>(resolve => { this.idleWaiters.push(resolve) })
      return
    }
    if (!this.running || opts?.signal?.aborted === true) return false
    const pending = this.dirty.has(aor) || this.active.has(aor) || this.queued.has(aor) || this.attempts.has(aor)
    if (!pending) {
      if (!this.unsure.has(aor)) return true
      this.markDirty(aor) // the last write failed and was given up: write again
    }
    // the publish in flight covers this AOR's state when it read usrloc after the AOR's last change
    // (no change since: not dirty); `changeSeq` is global, so other AORs' changes made since that read
    // must not make this waiter wait for a publish that will never come
    const read = this.reading.get(aor)
    const target = read !== undefined && !this.dirty.has(aor) ? read : this.changeSeq
    return await new Promise<boolean>(resolve => {
      const ms = opts?.timeoutMs ?? 2000
      const w = new AorWaiter(this, aor, target, resolve, Number.isFinite(ms) && ms >= 0 ? this.clock.now() + ms : Infinity, opts?.signal)
      let list = this.aorWaiters.get(aor)
      if (list === undefined) { list = []; this.aorWaiters.set(aor, list) }
      list.push(w)
      if (w.deadline !== Infinity) this.addDeadline(w, ms)
    })
  }

  /**
   * Time out `w` at its deadline: waiters are queued in deadline order and served by one timer (the
   * usual case: every REGISTER waits the same `ackTimeout`); one whose deadline comes before the last
   * queued gets its own timer.
   */
  private addDeadline (w: AorWaiter, ms: number): void {
    const q = this.deadlines
    const last = q.length > this.deadlineHead ? q[q.length - 1]! : undefined
    if (last !== undefined && last.deadline > w.deadline) {
      w.timer = this.clock.setTimer(ms, () => { w.finish(false) })
      return
    }
    q.push(w)
    if (this.deadlineTimer === undefined) this.armDeadlines()
  }

  private armDeadlines (): void {
    const q = this.deadlines
    while (this.deadlineHead < q.length && q[this.deadlineHead]!.finished) this.deadlineHead++
    if (this.deadlineHead >= q.length) { this.deadlines = []; this.deadlineHead = 0; return }
    if (this.deadlineHead > 1024 && this.deadlineHead * 2 > q.length) { this.deadlines = q.slice(this.deadlineHead); this.deadlineHead = 0 }
    const next = this.deadlines[this.deadlineHead]!
    this.deadlineTimer = this.clock.setTimer(Math.max(0, next.deadline - this.clock.now()), () => {
      this.deadlineTimer = undefined
      const now = this.clock.now()
      const list = this.deadlines
      while (this.deadlineHead < list.length && list[this.deadlineHead]!.deadline <= now) list[this.deadlineHead++]!.finish(false)
      this.armDeadlines()
    })
  }

  /** @internal Remove a finished waiter from its AOR's list. */
  dropWaiter (w: AorWaiter): void {
    const list = this.aorWaiters.get(w.aor)
    if (list === undefined) return
    const i = list.indexOf(w)
    if (i >= 0) list.splice(i, 1)
    if (list.length === 0) this.aorWaiters.delete(w.aor)
  }

  /** Resolve `aor`'s waiters whose target is <= `upTo` (all of them when `upTo` is Infinity). */
  private resolveWaiters (aor: string, upTo: number, ok: boolean): void {
    const list = this.aorWaiters.get(aor)
    if (list === undefined) return
    for (const w of list.filter(x => x.target <= upTo)) w.finish(ok)
  }

  /** AORs waiting for or in publication. */
  get pending (): number { return this.queued.size + this.active.size }

  // ------------------------------------------------------------ proxy side

  /** The SIP URI of super node `id` (the proxy's `nodeRoute` hook). */
  nodeRoute (id: PeerId): string | undefined {
    return this.routes.get(id)
  }

  /**
   * The proxy's `nodeRoute` hook: the SIP URI of super node `id` while it is a live member
   * (alive/suspect); undefined for a dead/left/unknown one, so the proxy sends to that node's
   * remaining (plain UDP) clients directly instead of routing to a node that is gone.
   */
  liveRoute (id: PeerId): string | undefined {
    if (id !== this.self && this.memberStatus !== undefined) {
      const status = this.memberStatus(id)
      if (status !== 'alive' && status !== 'suspect') return undefined
    }
    return this.routes.get(id)
  }

  /** Known super nodes and their SIP URIs. */
  knownNodes (): Map<PeerId, string> { return new Map(this.routes) }

  /**
   * Local bindings ∪ the overlay's bindings held by other (live) super nodes — plus the plain UDP
   * clients of dead ones (see `directlyReachable`), newest registration of each contact kept, sorted
   * by q then recency. An overlay failure degrades to the local bindings.
   */
  async lookup (aor: string): Promise<Binding[]> {
    this.stats.lookups++
    let value: ReplicaValue | undefined
    try {
      value = await this.store.get(aorKey(aor))
    } catch (err) {
      this.stats.lookupErrors++
      this.log.debug({ aor, err: String(err) }, 'overlay lookup failed; local bindings only')
      return this.localBindings(aor)
    }
    const local = this.localBindings(aor) // read after the await: the freshest local state
    const remote = this.remoteBindings(aor, value, local)
    return merge(local, remote)
  }

  /**
   * usrloc's bindings of `aor`, stamped with this node's id: bindings restored from a db written
   * under another node id (before the overlay was enabled) are this node's clients all the same.
   */
  private localBindings (aor: string): Binding[] {
    return this.location.lookup(aor).map(b => b.node === undefined || b.node === this.self ? b : { ...b, node: this.self })
  }

  /** With a signer: the portion check of `parseValue` for `aor` (other nodes' portions must carry their node's signature). */
  private portionCheck (aor: string): ((id: PeerId, p: Record<string, unknown>) => boolean) | undefined {
    const signer = this.signer
    if (signer === undefined) return undefined
    return (id, p) => {
      if (id === this.self) return true // the own portion is never trusted anyway: usrloc is
      const sig = p.s
      const ok = this.verifyPortion(aor, id, p)
      if (!ok) {
        this.stats.badSignatures++
        if (this.stats.badSignatures <= 10 || this.stats.badSignatures % 1000 === 0) {
          this.log.warn({ aor, node: id, signed: typeof sig === 'string', count: this.stats.badSignatures }, 'ignoring an AOR portion without a valid signature of its node')
        }
      }
      return ok
    }
  }

  /** Overlay view of one AOR for the admin API: owners, and every portion with its bindings. */
  async inspect (aor: string): Promise<{ key: string, owners: PeerId[], nodes: Record<PeerId, NodePortion>, error?: string }> {
    const key = aorKey(aor)
    const owners = this.store.owners(key)
    try {
      const value = parseValue(await this.store.get(key), this.limits, this.clock.now(), () => { this.stats.rejected++ }, aor, this.portionCheck(aor))
      return { key, owners, nodes: value?.nodes ?? {} }
    } catch (err) {
      return { key, owners, nodes: {}, error: err instanceof Error ? err.message : String(err) }
    }
  }

  private remoteBindings (aor: string, raw: unknown, local: Binding[]): Binding[] {
    const value = parseValue(raw, this.limits, this.clock.now(), () => { this.stats.rejected++ }, aor, this.portionCheck(aor))
    const out: Binding[] = []
    const own = value?.nodes[this.self]
    // self-heal: the overlay must say what usrloc says about this node's clients
    if (fingerprint(own?.b ?? []) !== fingerprint(local) && !this.dirty.has(aor) && !this.active.has(aor)) {
      this.stats.repairs++
      this.markDirty(aor)
    }
    if (value === undefined) return out
    for (const [id, p] of Object.entries(value.nodes)) {
      if (id === this.self) continue
      // only members in the view route their clients: dead/left ones (and ones forgotten after SWIM's
      // deadRetention) cannot reach them any more. Their plain UDP clients (no RFC 5626 flow, no
      // connection, Contact valid from anywhere: see directlyReachable) can be reached by any node: kept,
      // still stamped with the dead node (foreign: never relayed by a peer's `sr=local` fork), and the
      // proxy, which gets no route for a node that is not live (see `liveRoute`), sends to them directly.
      if (this.memberStatus !== undefined) {
        const status = this.memberStatus(id)
        if (status !== 'alive' && status !== 'suspect') {
          for (const b of p.b) if (b.aor === aor && directlyReachable(b)) out.push(b)
          continue
        }
      }
      this.routes.set(id, p.uri)
      for (const b of p.b) if (b.aor === aor) out.push(b)
    }
    return out
  }

  // ------------------------------------------------------------ publishing

  /** Queue `aor` for publication (coalesced: one publish carries every change made meanwhile). */
  markDirty (aor: string): void {
    if (!this.running) return
    this.changeSeq++
    this.dirty.add(aor)
    if (this.active.has(aor) || this.queued.has(aor)) return
    this.queued.add(aor)
    this.queue.push(aor)
    this.pump()
  }

  private pump (): void {
    while (this.running && this.active.size < this.concurrency && this.head < this.queue.length) {
      const aor = this.queue[this.head++]!
      if (this.head > 1024 && this.head * 2 > this.queue.length) { this.queue = this.queue.slice(this.head); this.head = 0 }
      this.queued.delete(aor)
      if (!this.dirty.delete(aor)) continue
      this.active.add(aor)
      void this.publish(aor).finally(() => {
        this.active.delete(aor)
        this.reading.delete(aor)
        if (this.dirty.has(aor) && this.running) { this.queued.add(aor); this.queue.push(aor) }
        this.pump()
        this.checkIdle()
      })
    }
    this.checkIdle()
  }

  private checkIdle (): void {
    if (this.active.size > 0 || this.queued.size > 0) return
    const w = this.idleWaiters
    this.idleWaiters = []
    for (const fn of w) fn()
  }

  private later (ms: number, fn: () => void): void {
    const t = this.clock.setTimer(ms, () => { this.timers.delete(t); if (this.running) fn() })
    this.timers.add(t)
  }

  /** Re-read `aor` `verifyDelay` ms from now (queued; one timer for every verification due). */
  private scheduleVerify (aor: string, alone: boolean, version: Version | undefined): void {
    this.verifyQueue.push({ at: this.clock.now() + this.verifyDelay, aor, alone, version: typeof version === 'object' ? version : undefined })
    if (this.verifyTimer === undefined) this.armVerify()
  }

  private armVerify (): void {
    const next = this.verifyQueue[this.verifyHead]
    if (next === undefined || !this.running) return
    this.verifyTimer = this.clock.setTimer(Math.max(0, next.at - this.clock.now()), () => {
      this.verifyTimer = undefined
      if (!this.running) return
      const now = this.clock.now()
      const q = this.verifyQueue
      while (this.verifyHead < q.length && q[this.verifyHead]!.at <= now) {
        const v = q[this.verifyHead++]!
        // settled without a read (no promise) in the usual case: the own replica still holds this write alone
        if (this.dirty.has(v.aor) || this.active.has(v.aor)) continue
        if (v.alone && this.stillOwnWrite(aorKey(v.aor), v.version)) { this.stats.localVerifies++; continue }
        void this.verify(v.aor, false)
      }
      if (this.verifyHead > 1024 && this.verifyHead * 2 > q.length) { this.verifyQueue = q.slice(this.verifyHead); this.verifyHead = 0 }
      this.armVerify()
    })
  }

  private nextVersion (): [number, number] {
    const now = this.clock.now()
    this.seq = now > this.seq.ms ? { ms: now, n: 0 } : { ms: this.seq.ms, n: this.seq.n + 1 }
    return [this.seq.ms, this.seq.n]
  }

  /** One read-modify-write of `aor`'s item; failures are retried with backoff. */
  private async publish (aor: string): Promise<void> {
    const key = aorKey(aor)
    let seen = -1
    try {
      const sure = !this.unsure.has(aor)
      const cached = sure ? this.soleOwnItem(key, true) : undefined
      // a key this node owns and holds nothing of (a new AOR): written blind, with the own portion only
      const blind = cached === undefined && sure && this.ownsNothing(key)
      if (cached !== undefined) this.stats.localReads++
      if (blind) this.stats.blindWrites++
      let local = cached !== undefined ? this.location.lookup(aor) : undefined
      // a refresh of an AOR held alone: the own replica's text need not be decoded when it cannot hold
      // exactly what usrloc holds (some binding's expiry is not in it): no other portion to copy, no
      // unchanged check to make
      const changed = cached?.json !== undefined && local !== undefined && local.length > 0 && !local.every(b => cached.json!.includes(`"expires":${b.expires}`))
      const raw = changed ? undefined : cached !== undefined ? itemValueOf(cached) : blind ? undefined : await this.store.get(key, MINIMAL)
      const now = this.clock.now()
      const cur = raw === undefined ? undefined : parseValue(raw, this.limits, now, () => { this.stats.rejected++ }, aor, this.portionCheck(aor))
      const rawNodes = isObj(raw) && isObj((raw as { nodes?: unknown }).nodes) ? (raw as AorValue).nodes as Record<PeerId, SignedPortion> : undefined
      if (local === undefined) local = this.location.lookup(aor)
      seen = this.changeSeq // every change up to here is in `local`
      this.reading.set(aor, seen)
      const nodes: Record<PeerId, PublishedPortion> = {}
      let others = false
      let dropped = false
      let expires = 0
      for (const id of Object.keys(cur?.nodes ?? {})) {
        if (id === this.self) continue
        // copied exactly as its node wrote (and signed) it, expired bindings and portion tombstones
        // included, as long as it lives: the replicas merge portion by portion, so leaving a live
        // portion out would not remove it anyway (a dead node's portion goes when it expires;
        // readers skip dead nodes)
        const p = rawNodes?.[id]
        const pe = portionExpiry(p)
        if (p === undefined || pe <= now) { dropped = true; continue }
        others = true
        nodes[id] = p
        expires = Math.max(expires, pe)
      }
      const own = cur?.nodes[this.self]
      if (sure && !dropped && local.length > 0 && own !== undefined && own.uri === this.uri && fingerprint(own.b) === fingerprint(local) &&
          (this.signer === undefined || typeof rawNodes?.[this.self]?.s === 'string')) {
        // the overlay already says exactly what usrloc says (e.g. the republish after a restart): no write
        this.stats.unchanged++
        this.attempts.delete(aor)
        this.resolveWaiters(aor, seen, true)
        return
      }
      if (local.length === 0 && (own === undefined || own.b.length === 0)) {
        // nothing of ours to remove (never published, expired, or a portion tombstone already): no write
        this.attempts.delete(aor); this.unsure.delete(aor); this.resolveWaiters(aor, seen, true)
        return
      }
      // no binding left: a portion tombstone (signed, empty), never a delete of the key, so that only this
      // node's own write removes its portion at every replica (a whole-item tombstone would erase the
      // other nodes' portions too)
      const mine: SignedPortion = local.length > 0
        ? { uri: this.uri, v: this.nextVersion(), b: local.map(publishedBinding) }
        : { uri: this.uri, v: this.nextVersion(), b: [], x: now + this.tombstoneTtl }
      if (this.signer !== undefined) {
        const bytes = portionBytes(aor, this.self, mine)
        mine.s = Buffer.from(this.signer.sign(bytes)).toString('base64')
        // the own replica's merge need not verify what this node just signed
        if (this.verified.size >= 8192) this.verified.clear()
        this.verified.add(`${mine.s}\n${bytes.toString('latin1')}`)
      }
      nodes[this.self] = mine
      expires = Math.max(expires, portionExpiry(mine))
      const ids = Object.keys(nodes)
      if (ids.length > this.limits.maxNodesPerAor) {
        // keep ourselves and the most recently written portions
        ids.filter(id => id !== this.self).sort((a, b) => nodes[b]!.v[0] - nodes[a]!.v[0] || nodes[b]!.v[1] - nodes[a]!.v[1])
          .slice(this.limits.maxNodesPerAor - 1).forEach(id => { Reflect.deleteProperty(nodes, id) })
      }
      const ttl = Math.min(Math.max(1, expires - now), this.store.maxTtl)
      const version = await this.store.put(key, { v: 1, nodes }, { ttl })
      if (local.length > 0) this.stats.published++
      else this.stats.deleted++
      this.attempts.delete(aor)
      this.unsure.delete(aor)
      this.resolveWaiters(aor, seen, true)
      // alone: no other node's portion was seen; its verification may use the own replica
      if (this.verifyDelay > 0) this.scheduleVerify(aor, !others, version)
    } catch (err) {
      this.stats.publishErrors++
      this.unsure.add(aor)
      const code = (err as { code?: unknown }).code
      const n = (this.attempts.get(aor) ?? 0) + 1
      if ((typeof code === 'string' && NON_RETRYABLE.has(code)) || n > this.maxRetries) {
        this.attempts.delete(aor)
        this.stats.abandoned++
        this.resolveWaiters(aor, Infinity, false)
        this.log.warn({ aor, err: String(err), attempts: n }, 'publishing an AOR to the overlay failed; giving up until its next change')
        return
      }
      this.attempts.set(aor, n)
      this.log.debug({ aor, err: String(err), attempt: n }, 'publishing an AOR to the overlay failed; retrying')
      this.later(this.retryDelay * 2 ** (n - 1), () => { this.markDirty(aor) })
    }
  }

  /**
   * This node's own replica of `key`, when this node is one of its owners and the replica holds an
   * item this node wrote in this run (origin = self, not older than `trustLocalFor` when `fresh`)
   * that is a tombstone or holds no portion but this node's. Else undefined (ask the quorum).
   */
  private soleOwnItem (key: string, fresh: boolean): WireItem<ReplicaValue> | undefined {
    if (this.trustLocalFor <= 0 || typeof this.store.local !== 'function') return undefined
    // the stored text when the store gives it (its portion ids read without decoding it), else the value
    const it = typeof this.store.localText === 'function' ? this.store.localText(key) : this.store.local(key)
    if (it === undefined || it.version.origin !== this.self || it.version.updated < this.startedAt) return undefined
    if (fresh && (it.deleted || this.clock.now() - it.version.updated > this.trustLocalFor)) return undefined
    if (!it.deleted) {
      const idx = it.json !== undefined ? portionVersions(it.json) : undefined
      if (idx !== undefined) {
        for (const id of idx.ids) if (id !== this.self) return undefined
      } else {
        const v = itemValueOf(it)
        if (!isObj(v) || !isObj(v.nodes)) return undefined
        for (const id in v.nodes) if (id !== this.self) return undefined
      }
    }
    if (!(typeof this.store.isOwner === 'function' ? this.store.isOwner(key) : this.store.owners(key).includes(this.self))) return undefined
    return it
  }

  /**
   * The own replica still holds this node's write of `key` alone: exactly the version it wrote
   * (`version`, nothing written or merged here since: no decode), else an item of this node with no
   * other node's portion (`soleOwnItem`).
   */
  private stillOwnWrite (key: string, version: Version | undefined): boolean {
    if (version !== undefined && this.trustLocalFor > 0 && typeof this.store.holdsVersion === 'function' && this.store.holdsVersion(key, version) &&
        version.origin === this.self && version.updated >= this.startedAt && this.store.isOwner(key)) return true
    return this.soleOwnItem(key, false) !== undefined
  }

  /**
   * Is this node an owner of `key` whose own replica holds nothing for it (no item, or an expired one)?
   * Then a publish skips the quorum pre-read and writes only its own portion: the replicas merge AOR
   * items portion by portion (`mergeValues`), so a write without another node's portion erases
   * nothing; the replicas that hold other portions keep them (their merged item gets a version above
   * both), and the verification finds them (a quorum re-read, unless the own replica still holds
   * this write alone).
   */
  private ownsNothing (key: string): boolean {
    if (this.trustLocalFor <= 0 || typeof this.store.local !== 'function' || typeof this.store.isOwner !== 'function') return false
    return this.store.isOwner(key) && this.store.local(key) === undefined
  }

  /**
   * Re-read a published item; re-publish when the own portion lost a concurrent write. `alone`:
   * the publish saw no other node's portion, so this node's own replica (when it is an owner)
   * still holding its write proves no other write came since.
   */
  private async verify (aor: string, alone: boolean, version?: Version): Promise<void> {
    if (this.dirty.has(aor) || this.active.has(aor)) return
    if (alone && this.stillOwnWrite(aorKey(aor), version)) { this.stats.localVerifies++; return }
    let raw: ReplicaValue | undefined
    try { raw = await this.store.get(aorKey(aor), MINIMAL) } catch { return }
    this.remoteBindings(aor, raw, this.location.lookup(aor))
  }
}

/** A `settled(aor)` call waiting for the publish that covers its AOR's state (or its deadline, or its signal). */
class AorWaiter {
  finished = false
  timer: Timer | undefined
  private readonly onAbort: (() => void) | undefined
  constructor (
    private readonly owner: LocationReplicator,
    readonly aor: string,
    readonly target: number,
    private readonly resolve: (ok: boolean) => void,
    readonly deadline: number,
    private readonly signal: AbortSignal | undefined
  ) {
    if (signal !== undefined) {
      this.onAbort = () => { this.finish(false) }
      signal.addEventListener('abort', this.onAbort, { once: true })
    }
  }

  finish (ok: boolean): void {
    if (this.finished) return
    this.finished = true
    this.timer?.cancel()
    if (this.onAbort !== undefined) this.signal?.removeEventListener('abort', this.onAbort)
    this.owner.dropWaiter(this)
    this.resolve(ok)
  }
}

/**
 * Can any super node reach this client without its attachment node? Only a plain UDP registration
 * (no RFC 5626 flow: instance + reg-id clients re-register through another flow; no connection:
 * TCP/TLS/WS connections died with the node) whose Contact is valid from anywhere: registered
 * through a Path (the edge proxy reaches it), or a Contact on the REGISTER's source IP (sent to as
 * registered, like the proxy's `contactOnSource`). A client behind NAT (Contact on another address)
 * is skipped: its NAT mapping was opened towards the dead node only.
 */
export function directlyReachable (b: Binding): boolean {
  if (b.instance !== undefined || b.regId !== undefined) return false
  const r = b.received
  if (r === undefined) return true
  if (r.protocol !== 'udp' || r.connectionId !== undefined) return false
  if (b.path.length > 0) return true
  try {
    const host = parseUri(b.contact).host
    return (isIPv4(host) || isIPv6(host)) && hostEquals(host, r.address)
  } catch {
    return false
  }
}

/** A binding as published: no aor/node/contactHeader (see PublishedBinding), frozen arrays copied. */
export function publishedBinding (b: Binding): PublishedBinding {
  // one object, the fields in the binding's order (as `{ ...rest }` would)
  const w: Record<string, unknown> = {}
  for (const k in b) {
    if (k === 'aor' || k === 'node' || k === 'contactHeader') continue
    const x = (b as unknown as Record<string, unknown>)[k]
    w[k] = k === 'path' ? [...b.path] : k === 'received' && b.received !== undefined ? { ...b.received } : x
  }
  return w as unknown as PublishedBinding
}

/** Local ∪ remote, one binding per contact identity (the newer registration wins), lookup order. */
function merge (local: Binding[], remote: Binding[]): Binding[] {
  if (remote.length === 0) return local
  const by = new Map<string, Binding>()
  for (const b of [...local, ...remote]) {
    const id = bindingIdentity(b)
    const cur = by.get(id)
    if (cur === undefined || newerBinding(b, cur)) by.set(id, b)
  }
  return [...by.values()].sort(byLookupOrder)
}

/**
 * Validate a value read from the overlay (untrusted: any peer may have written it). Malformed
 * portions or bindings are dropped (`reject` is called for each), expired bindings are filtered,
 * `binding.node` is forced to the portion's owner. `check` (signatures): a portion it refuses is
 * dropped too. Never throws.
 */
export function parseValue (x: unknown, limits: ReplicationLimits, now: number, reject: () => void = () => {}, aor?: string,
  check?: (id: PeerId, portion: Record<string, unknown>) => boolean): ParsedAorValue | undefined {
  if (x === undefined || x === null) return undefined
  if (!isObj(x) || !isObj(x.nodes)) { reject(); return undefined }
  const nodes: Record<PeerId, NodePortion> = {}
  let n = 0
  for (const [id, p] of Object.entries(x.nodes)) {
    if (n >= limits.maxNodesPerAor) { reject(); break }
    if (!portionShapeOk(id, p, limits)) { reject(); continue }
    if (check !== undefined && !check(id, p)) continue
    const b: Binding[] = []
    for (const raw of p.b.slice(0, limits.maxBindingsPerNode)) {
      const bb = parseBinding(raw, id, limits, aor)
      if (bb === undefined) { reject(); continue }
      if (bb.expires > now) b.push(bb)
    }
    if (p.b.length > limits.maxBindingsPerNode) reject()
    nodes[id] = { uri: p.uri, v: [p.v[0] as number, p.v[1] as number], b }
    n++
  }
  return { v: 1, nodes }
}

/** `aor`: the item's AOR (from its key), for bindings published without one; a binding naming another AOR is kept as it says (lookups ignore it). */
function parseBinding (x: unknown, node: PeerId, limits: ReplicationLimits, aor?: string): Binding | undefined {
  if (!isObj(x)) return undefined
  const s = (v: unknown): v is string => typeof v === 'string' && v.length <= limits.maxStringLength
  const bAor = x.aor === undefined ? aor : x.aor
  if (!s(bAor) || !s(x.contact) || x.contact === '' || !isNum(x.expires) || !isNum(x.q) || x.q < 0 || x.q > 1 ||
      !s(x.callId) || !isNum(x.cseq) || !isNum(x.updated) || !Array.isArray(x.path) || x.path.length > 16 || !x.path.every(s)) return undefined
  const b: Binding = { aor: bAor, contact: x.contact, expires: x.expires, q: x.q, callId: x.callId, cseq: x.cseq, path: [...x.path as string[]], updated: x.updated, node }
  if (s(x.contactHeader)) b.contactHeader = x.contactHeader
  if (s(x.instance)) b.instance = x.instance
  if (isNum(x.regId)) b.regId = x.regId
  if (s(x.userAgent)) b.userAgent = x.userAgent
  if (isObj(x.received) && s(x.received.protocol) && s(x.received.address) && isNum(x.received.port)) {
    const r = x.received
    b.received = { protocol: r.protocol as NonNullable<Binding['received']>['protocol'], address: r.address as string, port: r.port as number }
    if (s(r.connectionId)) b.received.connectionId = r.connectionId
  }
  return b
}
