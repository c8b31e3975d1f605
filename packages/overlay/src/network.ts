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
   * is. With `hops` (a client write, exactly one item): routed — a receiver that does not own the key
   * in its view forwards it to the owners it sees with `hops - 1`, and at 0 keeps it and answers `by: []`.
   */
  | { type: 'store.put', items: WireItem[], hops?: number }
  /** `by` absent: stored by the answering peer (as an owner). `by` present: the owners that stored it (may be empty). */
  | { type: 'store.ok', stored: number, by?: PeerId[] }
  /** A read. With `hops`: routed like a client `store.put`. */
  | { type: 'store.get', key: string, hops?: number }
  /** `by` absent: the answering peer's own replica (as an owner). `by` present: merged answer of these owners (may be empty: not authoritative). */
  | { type: 'store.item', item: WireItem | null, by?: PeerId[] }
  /** Anti-entropy: digests of the buckets of the items both `from` and the receiver replicate. */
  | { type: 'store.digest', buckets: string[] }
  /** Answer to a digest: the differing bucket indices and the receiver's items in them. */
  | { type: 'store.diff', buckets: number[], items: WireItem[], more: boolean }
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
    if (!('value' in x) || x.value === undefined) throw new OverlayProtocolError('item without value')
    out.value = x.value
  }
  return out
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
    case 'store.ok':
      return { type: x.type, stored: nat(x.stored, 'stored'), ...by(x) }
    case 'store.get':
      return { type: x.type, key: str(x.key, l.maxKeyLength, 'key'), ...hops(x) }
    case 'store.item':
      return { type: x.type, item: x.item === null ? null : item(x.item, l), ...by(x) }
    case 'store.digest':
      return { type: x.type, buckets: arr(x.buckets, l.maxBuckets, 'buckets').map(b => str(b, 32, 'bucket digest')) }
    case 'store.diff':
      if (typeof x.more !== 'boolean') throw new OverlayProtocolError('bad more flag')
      return { type: x.type, buckets: arr(x.buckets, l.maxBuckets, 'buckets').map(b => nat(b, 'bucket index')), items: its(x.items), more: x.more }
    case 'error':
      return { type: x.type, code: str(x.code, 64, 'error code'), message: typeof x.message === 'string' ? x.message.slice(0, 1024) : '' }
    default:
      throw new OverlayProtocolError(`unknown message type ${JSON.stringify(String(x.type).slice(0, 64))}`)
  }
}
