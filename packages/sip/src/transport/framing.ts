/**
 * Stream framing for SIP over TCP/TLS (RFC 3261 §18.3, §7.5; RFC 5626 §3.5.1 keep-alives).
 *
 * Bytes arrive in arbitrary chunks; {@link StreamFramer.push} returns the events they complete:
 * whole messages (header section + exactly Content-Length body bytes), CRLFCRLF pings, or one terminal
 * error after which the framer refuses further input (the connection must be closed).
 */
import { DEFAULT_MAX_MESSAGE_SIZE } from './util.js'

export interface StreamFramerOptions {
  /** Largest message (header section + body), in bytes. Default 65,535. */
  maxMessageSize?: number
  /** Largest header section (start line + headers + blank line), in bytes. Default = maxMessageSize. */
  maxHeaderSize?: number
}

/** Why a stream cannot be framed any further. `status`/`reason` are what a SIP server should answer. */
export class FramingError extends Error {
  constructor (
    readonly status: number,
    readonly reason: string,
    /** The header section when it could be read (so a best-effort response can be routed), else undefined. */
    readonly head?: Buffer
  ) {
    super(`${status} ${reason}`)
    this.name = 'FramingError'
  }
}

export type FrameEvent =
  | { type: 'message', data: Buffer }
  /** A CRLFCRLF keep-alive ping: answer with a single CRLF (pong). */
  | { type: 'ping' }
  | { type: 'error', error: FramingError }

const CR = 13
const LF = 10
const EMPTY = Buffer.alloc(0)
const CONTENT_LENGTH_RE = /^(?:content-length|l)[ \t]*:[ \t]*(.*)$/i

export class StreamFramer {
  readonly maxMessageSize: number
  readonly maxHeaderSize: number
  private buf: Buffer = EMPTY
  /** Where to resume the search for the end of the header section. */
  private scan = 0
  /** Total message length once the header section was parsed, else -1. */
  private need = -1
  private failure: FramingError | undefined

  constructor (opts: StreamFramerOptions = {}) {
    this.maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE
    this.maxHeaderSize = Math.min(opts.maxHeaderSize ?? this.maxMessageSize, this.maxMessageSize)
    if (!(this.maxMessageSize > 0) || !(this.maxHeaderSize > 0)) throw new RangeError('StreamFramer limits must be positive')
  }

  /** Bytes held waiting for the rest of a message. Never more than maxMessageSize (plus one chunk's CRLFs). */
  get buffered (): number { return this.buf.length }

  /** The error that stopped this framer, if any. */
  get failed (): FramingError | undefined { return this.failure }

  /** Feed bytes; returns the complete frames (in order). After an `error` event, returns []. */
  push (chunk: Uint8Array): FrameEvent[] {
    if (this.failure !== undefined) return []
    if (chunk.length === 0) return []
    this.buf = this.buf.length === 0 ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length) : Buffer.concat([this.buf, chunk])
    const out: FrameEvent[] = []
    for (;;) {
      if (this.need < 0) {
        // between messages: skip CRLFs, detect CRLFCRLF pings
        if (!this.skipLeadingCrlf(out)) break
        if (this.buf.length === 0) break
        const end = this.findHeaderEnd()
        if (end < 0) {
          if (this.buf.length > this.maxHeaderSize) return this.fail(out, new FramingError(513, 'Message Too Large'))
          break
        }
        if (end > this.maxHeaderSize) return this.fail(out, new FramingError(513, 'Message Too Large'))
        const head = this.buf.subarray(0, end)
        const len = contentLength(head)
        if (typeof len === 'string') return this.fail(out, new FramingError(400, len, Buffer.from(head)))
        if (end + len > this.maxMessageSize) return this.fail(out, new FramingError(413, 'Request Entity Too Large', Buffer.from(head)))
        this.need = end + len
      }
      if (this.buf.length < this.need) break
      out.push({ type: 'message', data: Buffer.from(this.buf.subarray(0, this.need)) })
      this.buf = this.buf.length === this.need ? EMPTY : this.buf.subarray(this.need)
      this.need = -1
      this.scan = 0
    }
    // keep our own copy of a partial message: never alias (or pin) the caller's chunk
    if (this.buf.length > 0 && this.buf.buffer === chunk.buffer) this.buf = Buffer.from(this.buf)
    return out
  }

  /** Drop any buffered bytes and the failed state. */
  reset (): void {
    this.buf = EMPTY
    this.scan = 0
    this.need = -1
    this.failure = undefined
  }

  private fail (out: FrameEvent[], error: FramingError): FrameEvent[] {
    this.failure = error
    this.buf = EMPTY
    out.push({ type: 'error', error })
    return out
  }

  /**
   * Consume CR/LF bytes before a start line. `\r\n\r\n` → ping; a lone `\r\n` (or bare LF) is skipped.
   * Returns false when more bytes are needed to decide (a trailing `\r`, `\r\n` or `\r\n\r`).
   */
  private skipLeadingCrlf (out: FrameEvent[]): boolean {
    const b = this.buf
    let i = 0
    for (;;) {
      const rest = b.length - i
      if (rest === 0) break
      const c = b[i]
      if (c !== CR && c !== LF) break
      if (c === LF) { i++; continue }
      // c === CR
      if (rest < 2) { this.buf = b.subarray(i); return false }
      if (b[i + 1] !== LF) { i++; continue } // stray CR
      if (rest < 3) { this.buf = b.subarray(i); return false }
      if (b[i + 2] === CR) {
        if (rest < 4) { this.buf = b.subarray(i); return false }
        if (b[i + 3] === LF) { out.push({ type: 'ping' }); i += 4; continue }
        i += 3; continue // CRLF + stray CR
      }
      i += 2 // a lone CRLF (e.g. a pong, or RFC 3261 §7.5 leading CRLF)
    }
    this.buf = i === b.length ? EMPTY : b.subarray(i)
    return true
  }

  /** Index just past the blank line ending the header section (CRLFCRLF or LFLF), or -1. */
  private findHeaderEnd (): number {
    const b = this.buf
    for (let i = this.scan; i < b.length; i++) {
      if (b[i] !== LF) continue
      // a line ended at i: is the next line empty?
      if (i + 1 >= b.length) { this.scan = i; return -1 }
      const n1 = b[i + 1]
      if (n1 === LF) return i + 2
      if (n1 === CR) {
        if (i + 2 >= b.length) { this.scan = i; return -1 }
        if (b[i + 2] === LF) return i + 3
      }
    }
    this.scan = b.length
    return -1
  }
}

/** Content-Length of a header section: a number, or an error reason string. */
export function contentLength (head: Uint8Array): number | string {
  const text = Buffer.from(head.buffer, head.byteOffset, head.length).toString('latin1').replace(/\r?\n[ \t]+/g, ' ')
  const lines = text.split(/\r?\n/)
  let found: number | undefined
  for (let i = 1; i < lines.length; i++) {
    const m = CONTENT_LENGTH_RE.exec(lines[i]!)
    if (m === null) continue
    const v = m[1]!.trim()
    if (!/^\d{1,10}$/.test(v)) return 'Invalid Content-Length'
    const n = Number(v)
    if (found !== undefined && found !== n) return 'Conflicting Content-Length'
    found = n
  }
  if (found === undefined) return 'Missing Content-Length'
  return found
}

const ECHO_HEADERS = /^(?:via|v|from|f|to|t|call-id|i|cseq)[ \t]*:/i

/**
 * Best-effort SIP response to a request whose stream framing failed (RFC 3261 §18.3: a message without
 * Content-Length on a stream is answered 400 when possible, then the connection is closed). Echoes Via,
 * From, To, Call-ID and CSeq lines verbatim. Returns undefined when the head is not a request.
 */
export function framingErrorResponse (err: FramingError): Buffer | undefined {
  if (err.head === undefined) return undefined
  const text = err.head.toString('latin1').replace(/\r?\n[ \t]+/g, ' ')
  const lines = text.split(/\r?\n/)
  const start = lines[0] ?? ''
  if (!/^[A-Za-z!%*_+`'~.-]+ \S+ SIP\/2\.0$/.test(start)) return undefined
  const echoed = lines.slice(1).filter(l => ECHO_HEADERS.test(l))
  if (!echoed.some(l => /^(?:via|v)[ \t]*:/i.test(l))) return undefined
  const reason = err.reason.replace(/[\r\n]/g, ' ')
  return Buffer.from(`SIP/2.0 ${err.status} ${reason}\r\n${echoed.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`, 'latin1')
}
