import { Uint8ArrayList } from 'uint8arraylist'
import { DEFAULT_MESSAGE_LIMITS, OverlayProtocolError, validateMessage, type MessageLimits, type OverlayMessage } from '@sipring/overlay'

/**
 * Wire format of the `/sipring/overlay/1.1.0` stream: frames of a 4-byte big-endian payload length
 * followed by the payload, the UTF-8 JSON of `{ id, kind, msg }`. Both ends send requests (`req`) and
 * answer the other's requests (`res`) on the same stream; `id` is chosen by the requester and echoed.
 */
export interface Frame {
  id: number
  kind: 'req' | 'res'
  msg: OverlayMessage
}

export const FRAME_HEADER = 4
export const DEFAULT_MAX_FRAME_SIZE = 1024 * 1024

/** A frame that cannot be decoded at all: its stream cannot be trusted any more. */
export class FrameError extends Error {
  readonly code: string
  constructor (code: 'ERR_FRAME_TOO_LARGE' | 'ERR_BAD_FRAME', message: string) { super(message); this.name = 'FrameError'; this.code = code }
}

/**
 * A frame whose envelope (id, kind) is fine but whose message is not a valid OverlayMessage: the
 * stream goes on and the requester gets `{ type: 'error', code: 'ERR_BAD_MESSAGE' }`.
 */
export interface BadMessage { id: number, kind: 'req' | 'res', error: string }

/**
 * UTF-8 JSON of frozen messages already encoded (a message sent to several peers, e.g. a batch of
 * writes for both remote owners, is encoded once; each frame then copies its bytes). Only frozen
 * messages are cached: their top level cannot change between two sends (their senders do not mutate
 * what they froze).
 */
const encoded = new WeakMap<object, Buffer>()

export function encodeFrame (frame: Frame, maxFrameSize = DEFAULT_MAX_FRAME_SIZE): Uint8Array {
  if (Object.isFrozen(frame.msg)) {
    let m = encoded.get(frame.msg)
    if (m === undefined) { m = Buffer.from(JSON.stringify(frame.msg), 'utf8'); encoded.set(frame.msg, m) }
    // the envelope around the cached bytes, written in place (no string holding the whole frame)
    const head = `{"id":${JSON.stringify(frame.id)},"kind":${JSON.stringify(frame.kind)},"msg":`
    const headLen = Buffer.byteLength(head, 'utf8')
    const len = headLen + m.length + 1
    if (len > maxFrameSize) throw new FrameError('ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds ${maxFrameSize}`)
    const buf = Buffer.allocUnsafe(FRAME_HEADER + len)
    buf.writeUInt32BE(len, 0)
    buf.write(head, FRAME_HEADER, 'utf8')
    m.copy(buf, FRAME_HEADER + headLen)
    buf[FRAME_HEADER + len - 1] = 0x7d // }
    return buf
  }
  const json = JSON.stringify(frame)
  const len = Buffer.byteLength(json, 'utf8')
  if (len > maxFrameSize) throw new FrameError('ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds ${maxFrameSize}`)
  const buf = Buffer.allocUnsafe(FRAME_HEADER + len)
  buf.writeUInt32BE(len, 0)
  buf.write(json, FRAME_HEADER, 'utf8')
  return buf
}

/** Raw bytes of a frame with an arbitrary payload (for tests and tools). */
export function rawFrame (payload: Uint8Array | string): Uint8Array {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  const buf = Buffer.allocUnsafe(FRAME_HEADER + body.length)
  buf.writeUInt32BE(body.length, 0)
  buf.set(body, FRAME_HEADER)
  return buf
}

/**
 * Deepest nesting of arrays/objects accepted in a frame (envelope and message included). JSON.parse
 * copes with any depth, but JSON.stringify and structuredClone overflow the stack on a value nested
 * ~10k deep, so a peer could plant a store value that no node can forward or persist.
 */
export const DEFAULT_MAX_DEPTH = 32

/** Does the JSON text nest arrays/objects deeper than `max`? (A byte scan, strings skipped.) */
export function jsonDepthExceeds (buf: Uint8Array, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]!
    if (inString) {
      if (c === 0x5c) i++ // backslash: skip the escaped byte
      else if (c === 0x22) inString = false
    } else if (c === 0x22) {
      inString = true
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    }
  }
  return false
}

/** Parses and schema-checks one payload. Throws FrameError (bad envelope) or returns a BadMessage. */
export function decodePayload (payload: Uint8Array, limits: MessageLimits = DEFAULT_MESSAGE_LIMITS, maxDepth = DEFAULT_MAX_DEPTH): Frame | BadMessage {
  if (jsonDepthExceeds(payload, maxDepth)) throw new FrameError('ERR_BAD_FRAME', `frame nests deeper than ${maxDepth}`)
  let x: unknown
  try {
    x = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'))
  } catch {
    throw new FrameError('ERR_BAD_FRAME', 'frame is not JSON')
  }
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new FrameError('ERR_BAD_FRAME', 'frame is not an object')
  const f = x as Record<string, unknown>
  const id = f.id
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) throw new FrameError('ERR_BAD_FRAME', 'bad frame id')
  const kind = f.kind
  if (kind !== 'req' && kind !== 'res') throw new FrameError('ERR_BAD_FRAME', 'bad frame kind')
  try {
    return { id, kind, msg: validateMessage(f.msg, limits) }
  } catch (err) {
    return { id, kind, error: err instanceof OverlayProtocolError ? err.message : 'bad message' }
  }
}

/**
 * Incremental decoder: push stream chunks, take complete payloads. The length prefix is checked
 * before anything of the frame is buffered, so an oversized frame costs 4 bytes of memory.
 */
export class FrameDecoder {
  private readonly buf = new Uint8ArrayList()
  constructor (private readonly maxFrameSize = DEFAULT_MAX_FRAME_SIZE) {}

  push (chunk: Uint8Array | Uint8ArrayList): void { this.buf.append(chunk) }

  /** The next complete payload, or undefined when more bytes are needed. Throws FrameError. */
  next (): Uint8Array | undefined {
    if (this.buf.byteLength < FRAME_HEADER) return undefined
    const len = this.buf.getUint32(0)
    if (len > this.maxFrameSize) throw new FrameError('ERR_FRAME_TOO_LARGE', `frame of ${len} bytes exceeds ${this.maxFrameSize}`)
    if (len === 0) throw new FrameError('ERR_BAD_FRAME', 'empty frame')
    if (this.buf.byteLength < FRAME_HEADER + len) return undefined
    const payload = this.buf.subarray(FRAME_HEADER, FRAME_HEADER + len)
    this.buf.consume(FRAME_HEADER + len)
    return payload
  }

  get buffered (): number { return this.buf.byteLength }
}
