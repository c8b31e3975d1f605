import type { AbortOptions } from '@sipring/interface'

/** Overlay node identity (a libp2p peer id string in production, any string in simulations). */
export type PeerId = string

export type MemberStatus = 'alive' | 'suspect' | 'dead' | 'left'

/** One SWIM membership fact, disseminated by piggybacking. */
export interface MemberUpdate {
  id: PeerId
  incarnation: number
  status: MemberStatus
}

/** A version, totally ordered by (updated, counter, origin). */
export interface Version {
  /** ms since epoch at the writer (hybrid logical clock: never goes backwards per writer). */
  updated: number
  /** Tie-breaker for writes within the same ms at one writer. */
  counter: number
  /** Id of the node that assigned the version. */
  origin: string
}

/** A stored item as it travels between replicas. A tombstone has `deleted: true` and no value. */
export interface WireItem<V = unknown> {
  key: string
  version: Version
  deleted: boolean
  value?: V
  /**
   * The value as JSON text, in place of `value` (replica traffic: a replica stores, persists and
   * forwards the text without decoding and re-encoding it). Checked to be JSON text
   * ({@link isJsonText}) on arrival; an item carries `value` or `json`, never both.
   */
  json?: string
  /** Absolute expiry, ms since epoch. */
  expires: number
}

export type OverlayMessage =
  | { type: 'swim.ping', updates: MemberUpdate[] }
  | { type: 'swim.ping-req', target: PeerId, updates: MemberUpdate[] }
  | { type: 'swim.ack', updates: MemberUpdate[] }
  | { type: 'swim.nack', updates: MemberUpdate[] }
  | { type: 'swim.join', self: MemberUpdate }
  | { type: 'swim.join-ok', members: MemberUpdate[] }
  | { type: 'swim.leave', update: MemberUpdate }
  /** Push-pull anti-entropy of the member lists (both sides merge the other's full state). */
  | { type: 'swim.sync', members: MemberUpdate[] }
  | { type: 'swim.sync-ok', members: MemberUpdate[] }
  /**
   * Store items. Without `hops`: replica-to-replica traffic (handoff, repair, anti-entropy), stored as
   * is. With `hops` (client writes): routed — a receiver that does not own a key in its view forwards
   * that item to the owners it sees with `hops - 1`, and at 0 keeps it and answers `by: []`. Several
   * routed items (a coordinator's writes to one owner, batched): answered `each` unless the receiver
   * owns every key (then no `by`/`each`: all stored by it).
   */
  | { type: 'store.put', items: WireItem[], hops?: number }
  /**
   * `by` absent: stored by the answering peer (as an owner). `by` present: the owners that stored it (may be empty).
   * `each` (answer to a routed `store.put` of several items): per item, in order, the owners that stored it.
   */
  | { type: 'store.ok', stored: number, by?: PeerId[], each?: PeerId[][] }
  /** A read. With `hops`: routed like a client `store.put`. */
  | { type: 'store.get', key: string, hops?: number }
  /** `by` absent: the answering peer's own replica (as an owner). `by` present: merged answer of these owners (may be empty: not authoritative). */
  | { type: 'store.item', item: WireItem | null, by?: PeerId[] }
  /** Several routed reads in one message (a coordinator's reads to one owner, batched); each key is handled as a routed `store.get`. */
  | { type: 'store.gets', keys: string[], hops: number }
  /** Answer to `store.gets`: per key, in order, the item (or null) and, unless `each` is absent (all from the answering owner's replica), who answered it. */
  | { type: 'store.items', items: Array<WireItem | null>, each?: PeerId[][] }
  /** Anti-entropy: digests of the buckets of the items both `from` and the receiver replicate. */
  | { type: 'store.digest', buckets: string[] }
  /** Answer to a digest: the differing bucket indices and the receiver's items in them. */
  | { type: 'store.diff', buckets: number[], items: WireItem[], more: boolean }
  /**
   * A generic application request (the extension point for protocols other than the store and SWIM,
   * e.g. the accounts of the core nodes): handlers claim it by `proto` (≤ 64 chars of `[a-z0-9./-]`);
   * `body` is any JSON value (bounded by the network's frame size). Answered `app.ok` or `error`.
   */
  | { type: 'app', proto: string, body: unknown }
  | { type: 'app.ok', body: unknown }
  | { type: 'error', code: string, message: string }

export type OverlayMessageType = OverlayMessage['type']

export interface SendOptions extends AbortOptions {
  /** Reject with {@link OverlayTimeoutError} when no answer came within this many ms (on the network's clock). */
  timeout?: number
}

/**
 * Handles one request. Return a response to claim it, or undefined to let the next handler try
 * (membership and store share one network). Throwing answers `{ type: 'error' }`.
 */
export type RequestHandler = (msg: OverlayMessage, from: PeerId) => OverlayMessage | undefined | Promise<OverlayMessage | undefined>

/** The overlay's message port: request/response between peers. Provided by overlay-libp2p or {@link SimOverlayHub}. */
export interface OverlayNetwork {
  readonly self: PeerId
  /** Send a request and wait for its response. Rejects with OverlayTimeoutError, OverlayUnreachableError or AbortError. */
  send (to: PeerId, msg: OverlayMessage, opts?: SendOptions): Promise<OverlayMessage>
  /** Register a handler; returns a function that unregisters it. */
  onRequest (handler: RequestHandler): () => void
  /**
   * Optional: run `fn` once the events of the current event-loop turn are handled (a real network:
   * after its I/O callbacks, e.g. `setImmediate`). The store batches the routed writes and reads made
   * until then into one message per owner. Absent: at the end of the current microtask round.
   */
  defer? (fn: () => void): void
}

export class OverlayError extends Error {
  readonly code: string
  constructor (code: string, message: string) { super(message); this.code = code; this.name = 'OverlayError' }
}
export class OverlayTimeoutError extends OverlayError {
  constructor (message = 'request timed out') { super('ERR_TIMEOUT', message); this.name = 'OverlayTimeoutError' }
}
export class OverlayUnreachableError extends OverlayError {
  constructor (message = 'peer unreachable') { super('ERR_UNREACHABLE', message); this.name = 'OverlayUnreachableError' }
}
export class OverlayAbortError extends OverlayError {
  constructor (message = 'aborted') { super('ABORT_ERR', message); this.name = 'AbortError' }
}
export class OverlayProtocolError extends OverlayError {
  constructor (message: string) { super('ERR_PROTOCOL', message); this.name = 'OverlayProtocolError' }
}
/** A write or read could not gather its quorum. */
export class QuorumError extends OverlayError {
  readonly acks: number
  readonly needed: number
  constructor (acks: number, needed: number, what: string) {
    super('ERR_QUORUM', `${what}: ${acks} of ${needed} replicas answered`)
    this.name = 'QuorumError'; this.acks = acks; this.needed = needed
  }
}

// ---------------------------------------------------------------- validation of untrusted input

export interface MessageLimits {
  maxUpdates: number
  maxItems: number
  maxKeyLength: number
  maxIdLength: number
  maxBuckets: number
  /** Largest `hops` of a routed store request. Default {@link MAX_HOPS}. */
  maxHops?: number
  /** Longest `by` list of a store answer. Default 64. */
  maxBy?: number
}

/** Upper bound on `hops` accepted on the wire (senders use far less: the store's default is 2). */
export const MAX_HOPS = 8

export const DEFAULT_MESSAGE_LIMITS: MessageLimits = {
  maxUpdates: 4096, maxItems: 1000, maxKeyLength: 1024, maxIdLength: 256, maxBuckets: 4096
}

/** Longest `proto` of an `app` message, and its characters. */
export const MAX_APP_PROTO_LENGTH = 64
const APP_PROTO_RE = /^[a-z0-9./-]+$/
/** Deepest nesting of an `app` body (the libp2p codec also bounds it). */
export const MAX_APP_BODY_DEPTH = 32

/** Is `x` a JSON value (null, boolean, finite number, string, array, plain object) nested at most `depth` deep? */
export function isJsonValue (x: unknown, depth = MAX_APP_BODY_DEPTH): boolean {
  if (x === null || typeof x === 'string' || typeof x === 'boolean') return true
  if (typeof x === 'number') return Number.isFinite(x)
  if (depth <= 0 || typeof x !== 'object') return false
  if (Array.isArray(x)) {
    for (const v of x) if (!isJsonValue(v, depth - 1)) return false
    return true
  }
  const proto = Object.getPrototypeOf(x)
  if (proto !== Object.prototype && proto !== null) return false
  for (const k in x) if (!isJsonValue((x as Record<string, unknown>)[k], depth - 1)) return false
  return true
}

const STATUSES = new Set<string>(['alive', 'suspect', 'dead', 'left'])

function isObj (x: unknown): x is Record<string, unknown> { return typeof x === 'object' && x !== null && !Array.isArray(x) }
function str (x: unknown, max: number, what: string): string {
  if (typeof x !== 'string' || x.length === 0 || x.length > max) throw new OverlayProtocolError(`bad ${what}`)
  return x
}
function nat (x: unknown, what: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new OverlayProtocolError(`bad ${what}`)
  return x
}
function arr (x: unknown, max: number, what: string): unknown[] {
  if (!Array.isArray(x)) throw new OverlayProtocolError(`bad ${what}`)
  if (x.length > max) throw new OverlayProtocolError(`too many ${what} (${x.length} > ${max})`)
  return x
}
function update (x: unknown, l: MessageLimits): MemberUpdate {
  if (!isObj(x)) throw new OverlayProtocolError('bad member update')
  const status = x.status
  if (typeof status !== 'string' || !STATUSES.has(status)) throw new OverlayProtocolError('bad member status')
  return { id: str(x.id, l.maxIdLength, 'member id'), incarnation: nat(x.incarnation, 'incarnation'), status: status as MemberStatus }
}
function item (x: unknown, l: MessageLimits): WireItem {
  if (!isObj(x) || !isObj(x.version)) throw new OverlayProtocolError('bad item')
  const v = x.version
  if (typeof x.deleted !== 'boolean') throw new OverlayProtocolError('bad item deleted flag')
  const out: WireItem = {
    key: str(x.key, l.maxKeyLength, 'item key'),
    version: { updated: nat(v.updated, 'version.updated'), counter: nat(v.counter, 'version.counter'), origin: str(v.origin, l.maxIdLength, 'version.origin') },
    deleted: x.deleted,
    expires: nat(x.expires, 'item expires')
  }
  if (!x.deleted) {
    if (typeof x.json === 'string') {
      if (!isJsonText(x.json)) throw new OverlayProtocolError('item json is not JSON text')
      out.json = x.json
    } else {
      if (!('value' in x) || x.value === undefined) throw new OverlayProtocolError('item without value')
      out.value = x.value
    }
  }
  return out
}

// ---------------------------------------------------------------- JSON text check (no decode)

function skipWs (s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i)
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++
    else return i
  }
}

/** End of the JSON string starting at `i` (a `"`), or -1. Lone surrogates are refused (not UTF-8 encodable). */
function scanString (s: string, i: number): number {
  const n = s.length
  i++
  while (i < n) {
    const c = s.charCodeAt(i)
    if (c === 0x22) return i + 1
    if (c < 0x20) return -1
    if (c === 0x5c) {
      const e = s.charCodeAt(i + 1)
      if (e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) { i += 2; continue }
      if (e !== 0x75) return -1
      for (let k = i + 2; k < i + 6; k++) {
        const h = s.charCodeAt(k)
        if (!((h >= 0x30 && h <= 0x39) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66))) return -1
      }
      i += 6
      continue
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      if (c >= 0xdc00) return -1
      const d = s.charCodeAt(i + 1)
      if (!(d >= 0xdc00 && d <= 0xdfff)) return -1
      i += 2
      continue
    }
    i++
  }
  return -1
}

function digits (s: string, i: number): number {
  const start = i
  for (;;) {
    const c = s.charCodeAt(i)
    if (c >= 0x30 && c <= 0x39) i++
    else return i > start ? i : -1
  }
}

/** End of the JSON value starting at `i` (after whitespace), or -1; containers at most `depth` deep. */
function scanValue (s: string, i: number, depth: number): number {
  i = skipWs(s, i)
  const c = s.charCodeAt(i)
  if (c === 0x22) return scanString(s, i)
  if (c === 0x7b || c === 0x5b) {
    if (depth <= 0) return -1
    const obj = c === 0x7b
    const close = obj ? 0x7d : 0x5d
    i = skipWs(s, i + 1)
    if (s.charCodeAt(i) === close) return i + 1
    for (;;) {
      if (obj) {
        if (s.charCodeAt(i) !== 0x22) return -1
        i = scanString(s, i)
        if (i < 0) return -1
        i = skipWs(s, i)
        if (s.charCodeAt(i) !== 0x3a) return -1
        i++
      }
      i = scanValue(s, i, depth - 1)
      if (i < 0) return -1
      i = skipWs(s, i)
      const d = s.charCodeAt(i)
      if (d === close) return i + 1
      if (d !== 0x2c) return -1
      i = skipWs(s, i + 1)
    }
  }
  if (c === 0x74) return s.startsWith('true', i) ? i + 4 : -1
  if (c === 0x66) return s.startsWith('false', i) ? i + 5 : -1
  if (c === 0x6e) return s.startsWith('null', i) ? i + 4 : -1
  // number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
  if (c === 0x2d) i++
  const f = s.charCodeAt(i)
  if (f === 0x30) i++
  else if (f >= 0x31 && f <= 0x39) i = digits(s, i)
  else return -1
  if (s.charCodeAt(i) === 0x2e) { i = digits(s, i + 1); if (i < 0) return -1 }
  const e = s.charCodeAt(i)
  if (e === 0x65 || e === 0x45) {
    i++
    const sg = s.charCodeAt(i)
    if (sg === 0x2b || sg === 0x2d) i++
    i = digits(s, i)
  }
  return i
}

/**
 * Is `s` one JSON text (RFC 8259; surrounding whitespace allowed) whose arrays/objects nest at most
 * `maxDepth` deep and whose strings are well-formed UTF-16? A scan without building the value: what
 * `JSON.parse` accepts, minus lone surrogates and deeper nesting.
 */
export function isJsonText (s: string, maxDepth = MAX_APP_BODY_DEPTH): boolean {
  const end = scanValue(s, 0, maxDepth)
  return end >= 0 && skipWs(s, end) === s.length
}

/**
 * Checks that an untrusted decoded object is a well-formed {@link OverlayMessage} within `limits`.
 * Throws {@link OverlayProtocolError} (never anything else) on bad input.
 */
export function validateMessage (x: unknown, limits: MessageLimits = DEFAULT_MESSAGE_LIMITS): OverlayMessage {
  if (!isObj(x) || typeof x.type !== 'string') throw new OverlayProtocolError('message is not an object with a type')
  const l = limits
  const ups = (v: unknown): MemberUpdate[] => arr(v, l.maxUpdates, 'updates').map(u => update(u, l))
  const its = (v: unknown): WireItem[] => arr(v, l.maxItems, 'items').map(i => item(i, l))
  const hops = (m: Record<string, unknown>): { hops?: number } => {
    const h = m.hops
    if (h === undefined) return {}
    if (typeof h !== 'number' || !Number.isInteger(h) || h < 0 || h > (l.maxHops ?? MAX_HOPS)) throw new OverlayProtocolError('bad hops')
    return { hops: h }
  }
  const by = (m: Record<string, unknown>): { by?: PeerId[] } =>
    m.by === undefined ? {} : { by: arr(m.by, l.maxBy ?? 64, 'by').map(p => str(p, l.maxIdLength, 'by id')) }
  switch (x.type) {
    case 'swim.ping': case 'swim.ack': case 'swim.nack':
      return { type: x.type, updates: ups(x.updates) }
    case 'swim.ping-req':
      return { type: x.type, target: str(x.target, l.maxIdLength, 'target'), updates: ups(x.updates) }
    case 'swim.join':
      return { type: x.type, self: update(x.self, l) }
    case 'swim.join-ok': case 'swim.sync': case 'swim.sync-ok':
      return { type: x.type, members: arr(x.members, l.maxUpdates, 'members').map(u => update(u, l)) }
    case 'swim.leave':
      return { type: x.type, update: update(x.update, l) }
    case 'store.put':
      return { type: x.type, items: its(x.items), ...hops(x) }
    case 'store.ok': {
      const each = x.each === undefined ? {} : { each: arr(x.each, l.maxItems, 'each').map(e => arr(e, l.maxBy ?? 64, 'each ids').map(p => str(p, l.maxIdLength, 'each id'))) }
      return { type: x.type, stored: nat(x.stored, 'stored'), ...by(x), ...each }
    }
    case 'store.get':
      return { type: x.type, key: str(x.key, l.maxKeyLength, 'key'), ...hops(x) }
    case 'store.item':
      return { type: x.type, item: x.item === null ? null : item(x.item, l), ...by(x) }
    case 'store.gets': {
      const h = hops(x).hops
      if (h === undefined) throw new OverlayProtocolError('bad hops')
      return { type: x.type, keys: arr(x.keys, l.maxItems, 'keys').map(k => str(k, l.maxKeyLength, 'key')), hops: h }
    }
    case 'store.items': {
      const each = x.each === undefined ? {} : { each: arr(x.each, l.maxItems, 'each').map(e => arr(e, l.maxBy ?? 64, 'each ids').map(p => str(p, l.maxIdLength, 'each id'))) }
      return { type: x.type, items: arr(x.items, l.maxItems, 'items').map(i => i === null ? null : item(i, l)), ...each }
    }
    case 'store.digest':
      return { type: x.type, buckets: arr(x.buckets, l.maxBuckets, 'buckets').map(b => str(b, 32, 'bucket digest')) }
    case 'store.diff':
      if (typeof x.more !== 'boolean') throw new OverlayProtocolError('bad more flag')
      return { type: x.type, buckets: arr(x.buckets, l.maxBuckets, 'buckets').map(b => nat(b, 'bucket index')), items: its(x.items), more: x.more }
    case 'app': {
      const proto = x.proto
      if (typeof proto !== 'string' || proto.length === 0 || proto.length > MAX_APP_PROTO_LENGTH || !APP_PROTO_RE.test(proto)) throw new OverlayProtocolError('bad app proto')
      if (!('body' in x) || !isJsonValue(x.body)) throw new OverlayProtocolError('bad app body (not a JSON value)')
      return { type: x.type, proto, body: x.body }
    }
    case 'app.ok':
      if (!('body' in x) || !isJsonValue(x.body)) throw new OverlayProtocolError('bad app body (not a JSON value)')
      return { type: x.type, body: x.body }
    case 'error':
      return { type: x.type, code: str(x.code, 64, 'error code'), message: typeof x.message === 'string' ? x.message.slice(0, 1024) : '' }
    default:
      throw new OverlayProtocolError(`unknown message type ${JSON.stringify(String(x.type).slice(0, 64))}`)
  }
}
