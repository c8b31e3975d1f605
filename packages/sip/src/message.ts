/**
 * SIP message model (RFC 3261 §7). Headers are kept as an ordered list of (canonical name, raw value)
 * pairs, one entry per header *line* as received; list-valued headers are split on demand by
 * {@link SipMessage.getAll}. Structured views (Via, CSeq, name-addr, URI) are parsed on demand by
 * helpers in `headers.ts` / `uri.ts`, so a proxy that only touches Via and Route never parses the rest.
 */

/** Compact forms (RFC 3261 §7.3.3 and extensions) → canonical lowercase long names. */
export const COMPACT_FORMS: Record<string, string> = {
  i: 'call-id', m: 'contact', e: 'content-encoding', l: 'content-length', c: 'content-type',
  f: 'from', s: 'subject', k: 'supported', t: 'to', v: 'via', o: 'event', r: 'refer-to',
  b: 'referred-by', u: 'allow-events', a: 'accept-contact', j: 'reject-contact', d: 'request-disposition',
  x: 'session-expires', y: 'identity', n: 'identity-info'
}

/** Canonical display spelling for well-known headers when serializing. */
const DISPLAY_NAMES: Record<string, string> = {
  'call-id': 'Call-ID', cseq: 'CSeq', 'www-authenticate': 'WWW-Authenticate', via: 'Via', to: 'To',
  from: 'From', contact: 'Contact', 'content-length': 'Content-Length', 'content-type': 'Content-Type',
  'max-forwards': 'Max-Forwards', 'record-route': 'Record-Route', route: 'Route', 'mime-version': 'MIME-Version',
  'proxy-require': 'Proxy-Require', 'rseq': 'RSeq', 'rack': 'RAck', 'sip-etag': 'SIP-ETag', 'sip-if-match': 'SIP-If-Match'
}

// Small memo caches (bounded: header names can come from the network).
const CANONICAL_CACHE = new Map<string, string>()
const DISPLAY_CACHE = new Map<string, string>()
const NAME_CACHE_MAX = 2048

/** Canonical (lowercase, long-form) header name. */
export function canonicalName (name: string): string {
  const cached = CANONICAL_CACHE.get(name)
  if (cached !== undefined) return cached
  const lower = name.toLowerCase()
  // own-property check: `constructor`, `__proto__`, ... are header names, not Object.prototype members
  const r = lower.length === 1 && Object.hasOwn(COMPACT_FORMS, lower) ? COMPACT_FORMS[lower]! : lower
  if (CANONICAL_CACHE.size < NAME_CACHE_MAX) CANONICAL_CACHE.set(name, r)
  return r
}

/** Display form of a canonical header name (`content-length` → `Content-Length`). */
export function displayName (canonical: string): string {
  const cached = DISPLAY_CACHE.get(canonical)
  if (cached !== undefined) return cached
  const r = Object.hasOwn(DISPLAY_NAMES, canonical)
    ? DISPLAY_NAMES[canonical]!
    : canonical.replace(/(^|-)([a-z])/g, (_m, sep: string, ch: string) => sep + ch.toUpperCase())
  if (DISPLAY_CACHE.size < NAME_CACHE_MAX) DISPLAY_CACHE.set(canonical, r)
  return r
}

/**
 * Headers whose value is a comma-separated list (RFC 3261 §7.3.1) and may be split.
 * Headers NOT in this set (e.g. WWW-Authenticate, Date, User-Agent) are never split.
 */
export const LIST_HEADERS = new Set([
  'via', 'contact', 'route', 'record-route', 'path', 'service-route', 'allow', 'supported', 'require',
  'proxy-require', 'unsupported', 'accept', 'accept-encoding', 'accept-language', 'content-encoding',
  'allow-events', 'in-reply-to', 'alert-info', 'call-info', 'error-info', 'warning'
])

export interface Header {
  /** Canonical lowercase long-form name. */
  name: string
  /** Raw value, trimmed, with line folding already replaced by a single space. */
  value: string
}

/**
 * Split a header value on top-level commas: commas inside double quotes or `<...>` do not split.
 * Empty elements are dropped.
 */
export function splitList (value: string): string[] {
  const out: string[] = []
  let start = 0
  let inQuote = false
  let inAngle = false
  for (let i = 0; i < value.length; i++) {
    const ch = value.charCodeAt(i)
    if (inQuote) {
      if (ch === 92 /* \ */) i++
      else if (ch === 34 /* " */) inQuote = false
    } else if (ch === 34) inQuote = true
    else if (ch === 60 /* < */) inAngle = true
    else if (ch === 62 /* > */) inAngle = false
    else if (ch === 44 /* , */ && !inAngle) {
      const part = value.slice(start, i).trim()
      if (part !== '') out.push(part)
      start = i + 1
    }
  }
  const last = value.slice(start).trim()
  if (last !== '') out.push(last)
  return out
}

export abstract class SipMessage {
  headers: Header[] = []
  body: Buffer = EMPTY

  abstract readonly isRequest: boolean

  /** First value of a header line (not split), or undefined. */
  get (name: string): string | undefined {
    const n = canonicalName(name)
    for (const h of this.headers) if (h.name === n) return h.value
    return undefined
  }

  /** All values: one per header line, and list headers (LIST_HEADERS) split on top-level commas. */
  getAll (name: string): string[] {
    const n = canonicalName(name)
    const out: string[] = []
    const split = LIST_HEADERS.has(n)
    for (const h of this.headers) {
      if (h.name !== n) continue
      if (split) out.push(...splitList(h.value))
      else out.push(h.value)
    }
    return out
  }

  has (name: string): boolean {
    const n = canonicalName(name)
    return this.headers.some(h => h.name === n)
  }

  /** Replace every line of `name` with one line holding `value`, at the first line's position. */
  set (name: string, value: string): this {
    const n = canonicalName(name)
    const i = this.headers.findIndex(h => h.name === n)
    if (i < 0) { this.headers.push({ name: n, value }); return this }
    this.headers[i] = { name: n, value }
    this.headers = this.headers.filter((h, j) => j <= i || h.name !== n)
    return this
  }

  /** Add a header line after the existing ones. */
  append (name: string, value: string): this {
    this.headers.push({ name: canonicalName(name), value })
    return this
  }

  /** Add a header line before the first line of the same name (or at the top): for Via, Record-Route. */
  prepend (name: string, value: string): this {
    const n = canonicalName(name)
    const i = this.headers.findIndex(h => h.name === n)
    this.headers.splice(i < 0 ? 0 : i, 0, { name: n, value })
    return this
  }

  /** Remove all lines of `name`. */
  remove (name: string): this {
    const n = canonicalName(name)
    this.headers = this.headers.filter(h => h.name !== n)
    return this
  }

  /**
   * Remove the first *value* of a (list) header: drops the first element of the first line and
   * the line itself when it becomes empty. Returns the removed value. Used for Via and Route.
   */
  shift (name: string): string | undefined {
    const n = canonicalName(name)
    const i = this.headers.findIndex(h => h.name === n)
    if (i < 0) return undefined
    const parts = splitList(this.headers[i]!.value)
    const first = parts.shift()
    if (parts.length === 0) this.headers.splice(i, 1)
    else this.headers[i] = { name: n, value: parts.join(', ') }
    return first
  }

  /** Deep-enough copy: header list and entries copied, body shared (Buffers are treated immutable). */
  abstract clone (): SipMessage
}

const EMPTY = Buffer.alloc(0)

export class SipRequest extends SipMessage {
  readonly isRequest = true
  constructor (public method: string, public uri: string) { super() }

  clone (): SipRequest {
    const m = new SipRequest(this.method, this.uri)
    m.headers = this.headers.map(h => ({ ...h }))
    m.body = this.body
    return m
  }
}

export class SipResponse extends SipMessage {
  readonly isRequest = false
  constructor (public status: number, public reason: string) { super() }

  clone (): SipResponse {
    const m = new SipResponse(this.status, this.reason)
    m.headers = this.headers.map(h => ({ ...h }))
    m.body = this.body
    return m
  }
}

export function isRequest (m: SipMessage): m is SipRequest { return m.isRequest }
export function isResponse (m: SipMessage): m is SipResponse { return !m.isRequest }

/**
 * Serialize to wire bytes. Content-Length is always (re)computed from the body's byte length.
 * Header names use their display form (long form).
 */
export function serialize (m: SipMessage): Buffer {
  let head = m instanceof SipRequest
    ? `${m.method} ${m.uri} SIP/2.0\r\n`
    : `SIP/2.0 ${(m as SipResponse).status} ${(m as SipResponse).reason}\r\n`
  for (const h of m.headers) {
    if (h.name === 'content-length') continue
    head += `${displayName(h.name)}: ${h.value}\r\n`
  }
  head += `Content-Length: ${m.body.length}\r\n\r\n`
  if (m.body.length === 0) return Buffer.from(head, 'utf8')
  const headBuf = Buffer.from(head, 'utf8')
  return Buffer.concat([headBuf, m.body], headBuf.length + m.body.length)
}

/** Default reason phrases (RFC 3261 §21 and common extensions). */
export const REASON_PHRASES: Record<number, string> = {
  100: 'Trying', 180: 'Ringing', 181: 'Call Is Being Forwarded', 182: 'Queued', 183: 'Session Progress',
  200: 'OK', 202: 'Accepted', 300: 'Multiple Choices', 301: 'Moved Permanently', 302: 'Moved Temporarily',
  305: 'Use Proxy', 380: 'Alternative Service', 400: 'Bad Request', 401: 'Unauthorized',
  402: 'Payment Required', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  406: 'Not Acceptable', 407: 'Proxy Authentication Required', 408: 'Request Timeout', 410: 'Gone',
  413: 'Request Entity Too Large', 414: 'Request-URI Too Long', 415: 'Unsupported Media Type',
  416: 'Unsupported URI Scheme', 420: 'Bad Extension', 421: 'Extension Required', 423: 'Interval Too Brief',
  429: 'Too Many Requests', 430: 'Flow Failed', 439: 'First Hop Lacks Outbound Support',
  480: 'Temporarily Unavailable', 481: 'Call/Transaction Does Not Exist', 482: 'Loop Detected',
  483: 'Too Many Hops', 484: 'Address Incomplete', 485: 'Ambiguous', 486: 'Busy Here',
  487: 'Request Terminated', 488: 'Not Acceptable Here', 491: 'Request Pending', 493: 'Undecipherable',
  500: 'Server Internal Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Server Time-out', 505: 'Version Not Supported', 513: 'Message Too Large',
  600: 'Busy Everywhere', 603: 'Decline', 604: 'Does Not Exist Anywhere', 606: 'Not Acceptable'
}

/**
 * Build a response to `req` per RFC 3261 §8.2.6: copies Via (all), From, To, Call-ID, CSeq;
 * adds a To tag when `toTag` is given and the To has none (never for 100).
 */
export function createResponse (req: SipRequest, status: number, reason?: string, toTag?: string): SipResponse {
  const res = new SipResponse(status, reason ?? REASON_PHRASES[status] ?? 'Unknown')
  for (const h of req.headers) {
    if (h.name === 'via' || h.name === 'from' || h.name === 'call-id' || h.name === 'cseq') {
      res.headers.push({ name: h.name, value: h.value })
    } else if (h.name === 'to') {
      let v = h.value
      if (toTag !== undefined && status > 100 && !/;\s*tag=/i.test(v)) v += `;tag=${toTag}`
      res.headers.push({ name: 'to', value: v })
    }
  }
  return res
}
