/**
 * SIP message parser (RFC 3261 §7, §18.3; torture cases of RFC 4475 / RFC 5118).
 *
 * One pass over the head: the head is decoded once, split into lines with indexOf, folded lines
 * (LWS continuation, §7.3.1) are joined with a single space, names are canonicalized (compact
 * forms), and one header entry is kept per line. The body is exactly Content-Length BYTES.
 * Only `SipParseError` is ever thrown.
 */
import { SipMessage, SipRequest, SipResponse, canonicalName, splitList } from './message.js'
import { SipParseError, parseUri, isUriScheme, isToken, offerParsedUri, clearUriHandoff } from './uri.js'
import { parseCSeq, parseNameAddr, parseVia, trimLws, offerParsedNameAddr, clearNameAddrHandoff } from './headers.js'

export interface ParserLimits {
  /** Whole message (head + body) in bytes. Over → 413. */
  maxMessageSize: number
  /** Number of header fields (logical, after unfolding). Over → 400 "Too many headers". */
  maxHeaders: number
  /**
   * Characters in one header field (sum of its physical lines, without line terminators), and in
   * the status line. Over → 400 "Header line too long". For a request, a Request-URI longer than
   * this → 414.
   */
  maxLineLength: number
}

export const DEFAULT_LIMITS: Readonly<ParserLimits> = Object.freeze({
  maxMessageSize: 65535,
  maxHeaders: 256,
  maxLineLength: 8192
})

/** Headers that must appear at most once (RFC 3261 §7.3.1: not list headers). */
const SINGLE = ['to', 'from', 'call-id', 'cseq', 'max-forwards', 'content-length']

/** Position of the blank line ending the head: returns [headEnd, bodyStart] or null. */
function findHeadEnd (buf: Buffer, from: number): [number, number] | null {
  const crlf = buf.indexOf('\r\n\r\n', from, 'latin1')
  // bare-LF tolerance: look for \n\n or \n\r\n before the CRLFCRLF (rare path)
  let lf = buf.indexOf(10, from)
  while (lf >= 0 && (crlf < 0 || lf < crlf)) {
    if (buf[lf + 1] === 10) return [lf, lf + 2]
    if (buf[lf + 1] === 13 && buf[lf + 2] === 10) {
      if (buf[lf - 1] === 13) break // that is the CRLFCRLF itself
      return [lf, lf + 3]
    }
    lf = buf.indexOf(10, lf + 1)
  }
  if (crlf >= 0) return [crlf, crlf + 4]
  return null
}

function isDigits (s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

function fail (status: number, reason: string, partial?: SipMessage): never {
  throw new SipParseError(status, reason, partial)
}

/**
 * Parse one SIP message from a datagram or a framed stream message.
 * Leading CRLFs are skipped (§7.5). Body: exactly Content-Length bytes; fewer → 400
 * "Content-Length mismatch"; more → truncated (§18.3); no Content-Length → rest of the buffer.
 */
export function parseMessage (buf: Buffer, limits?: Partial<ParserLimits>): SipRequest | SipResponse {
  try {
    return parse(buf, limits)
  } catch (e) {
    if (e instanceof SipParseError) throw e
    // defensive: nothing else should escape
    throw new SipParseError(400, 'Malformed message')
  }
}

function parse (buf: Buffer, limits?: Partial<ParserLimits>): SipRequest | SipResponse {
  const maxMessageSize = limits?.maxMessageSize ?? DEFAULT_LIMITS.maxMessageSize
  const maxHeaders = limits?.maxHeaders ?? DEFAULT_LIMITS.maxHeaders
  const maxLineLength = limits?.maxLineLength ?? DEFAULT_LIMITS.maxLineLength

  if (!Buffer.isBuffer(buf)) fail(400, 'Not a buffer')
  clearUriHandoff()
  clearNameAddrHandoff()
  if (buf.length > maxMessageSize) fail(413, 'Message Too Large')
  let start = 0
  while (start < buf.length && (buf[start] === 13 || buf[start] === 10)) start++
  if (start >= buf.length) fail(400, 'Empty message')

  const he = findHeadEnd(buf, start)
  if (he === null) fail(400, 'Missing end of headers')
  const [headEnd, bodyStart] = he
  const head = buf.toString('utf8', start, headEnd)

  // ------------------------------------------------------------ start line
  let eol = head.indexOf('\n')
  if (eol < 0) eol = head.length
  let lineEnd = eol > 0 && head.charCodeAt(eol - 1) === 13 ? eol - 1 : eol
  const startLine = head.slice(0, lineEnd)
  let msg: SipRequest | SipResponse
  let startError: SipParseError | undefined
  if (startLine.startsWith('SIP/')) {
    if (startLine.length > maxLineLength) fail(400, 'Status line too long')
    const sp1 = startLine.indexOf(' ')
    if (sp1 < 0) fail(400, 'Malformed status line')
    const version = startLine.slice(0, sp1)
    const sp2 = startLine.indexOf(' ', sp1 + 1)
    const code = sp2 < 0 ? startLine.slice(sp1 + 1) : startLine.slice(sp1 + 1, sp2)
    if (code.length !== 3 || !isDigits(code) || code.charCodeAt(0) < 49 /* 1 */) fail(400, 'Invalid status code')
    if (version !== 'SIP/2.0') fail(505, 'Version Not Supported')
    // lenient: "SIP/2.0 200" without the SP before an empty reason phrase is accepted
    const reason = sp2 < 0 ? '' : startLine.slice(sp2 + 1)
    for (let i = 0; i < reason.length; i++) {
      const c = reason.charCodeAt(i)
      if ((c < 32 && c !== 9) || c === 127) fail(400, 'Invalid reason phrase')
    }
    msg = new SipResponse(Number(code), reason)
  } else {
    const sp1 = startLine.indexOf(' ')
    if (sp1 <= 0) fail(400, 'Malformed request line')
    const method = startLine.slice(0, sp1)
    if (method.length > maxLineLength) fail(400, 'Method too long')
    if (!isToken(method)) fail(400, 'Invalid method')
    const sp2 = startLine.indexOf(' ', sp1 + 1)
    if (sp2 < 0) fail(400, 'Malformed request line')
    const uri = startLine.slice(sp1 + 1, sp2)
    const version = startLine.slice(sp2 + 1)
    // these errors are raised after the headers are read, so that `partial` can address the answer
    try {
      if (uri.length > maxLineLength) fail(414, 'Request-URI Too Long')
      if (uri.length === 0) fail(400, 'Malformed request line: extra spaces')
      if (version.includes(' ')) fail(400, 'Malformed request line: whitespace in Request-URI or after version')
      if (!version.startsWith('SIP/') || version.length < 5) fail(400, 'Malformed request line')
      if (version !== 'SIP/2.0') fail(505, 'Version Not Supported')
      validateRequestUri(uri)
    } catch (e) {
      if (!(e instanceof SipParseError)) throw e
      startError = e
    }
    msg = new SipRequest(method, uri)
  }

  // ------------------------------------------------------------ header lines
  const headers = msg.headers
  let firstError: SipParseError | undefined
  let pos = eol + 1
  let name = ''
  let value = ''
  let len = 0
  let pending = false
  while (pos < head.length) {
    eol = head.indexOf('\n', pos)
    if (eol < 0) eol = head.length
    lineEnd = eol > pos && head.charCodeAt(eol - 1) === 13 ? eol - 1 : eol
    const first = head.charCodeAt(pos)
    if (first === 32 || first === 9) {
      // folded continuation (§7.3.1): replace the line break and leading whitespace by one SP
      const lineLen = lineEnd - pos
      if (!pending) {
        if (lineLen > maxLineLength) fail(400, 'Header line too long', msg)
        firstError ??= new SipParseError(400, 'Continuation line without header')
      } else {
        len += lineLen
        if (len > maxLineLength) fail(400, 'Header line too long', msg)
        const cont = trimLws(head.slice(pos, lineEnd))
        if (cont.length > 0) value = value.length > 0 && !value.endsWith(' ') ? value + ' ' + cont : value + cont
      }
      pos = eol + 1
      continue
    }
    if (pending) {
      pending = false
      if (len > maxLineLength) fail(400, 'Header line too long', msg)
      if (headers.length >= maxHeaders) fail(400, 'Too many headers', msg)
      if (value.includes('\r')) firstError ??= new SipParseError(400, 'Bare CR in header value')
      else headers.push({ name, value: trimLws(value) })
    }
    const lineLen = lineEnd - pos
    if (lineLen > maxLineLength) fail(400, 'Header line too long', msg)
    // bounded to this line (an unbounded indexOf would make colon-less lines quadratic)
    let colon = pos
    while (colon < lineEnd && head.charCodeAt(colon) !== 58) colon++
    if (colon >= lineEnd) {
      firstError ??= new SipParseError(400, 'Malformed header line')
      pos = eol + 1
      continue
    }
    let ne = colon
    while (ne > pos && (head.charCodeAt(ne - 1) === 32 || head.charCodeAt(ne - 1) === 9)) ne--
    const rawName = head.slice(pos, ne)
    if (!isToken(rawName)) {
      firstError ??= new SipParseError(400, 'Invalid header name')
      pos = eol + 1
      continue
    }
    name = canonicalName(rawName)
    value = head.slice(colon + 1, lineEnd)
    len = lineLen
    pending = true
    pos = eol + 1
  }
  if (pending) {
    pending = false
    if (len > maxLineLength) fail(400, 'Header line too long', msg)
    if (headers.length >= maxHeaders) fail(400, 'Too many headers', msg)
    if (value.includes('\r')) firstError ??= new SipParseError(400, 'Bare CR in header value')
    else headers.push({ name, value: trimLws(value) })
  }
  if (startError !== undefined) fail(startError.status, startError.reason, msg)
  if (firstError !== undefined) fail(firstError.status, firstError.reason, msg)

  // ------------------------------------------------------------ validation
  let cl: string | undefined
  let seen = 0
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i]!
    const k = SINGLE.indexOf(h.name)
    if (k >= 0) {
      if ((seen & (1 << k)) !== 0) fail(400, `Multiple ${displayHeader(h.name)} headers`, msg)
      seen |= 1 << k
      if (k === 5) cl = h.value
    }
  }
  try {
    validate(msg, seen)
  } catch (e) {
    if (e instanceof SipParseError) fail(e.status, e.reason, msg)
    throw e
  }

  // ------------------------------------------------------------ body
  let bodyLen = buf.length - bodyStart
  if (cl !== undefined) {
    if (!isDigits(cl) || cl.length > 10) fail(400, 'Invalid Content-Length', msg)
    const n = Number(cl)
    if (n > bodyLen) fail(400, 'Content-Length mismatch', msg)
    bodyLen = n
  }
  if (bodyLen > 0) msg.body = Buffer.from(buf.subarray(bodyStart, bodyStart + bodyLen))
  return msg
}

function displayHeader (n: string): string {
  return n === 'call-id' ? 'Call-ID' : n === 'cseq' ? 'CSeq' : n.replace(/(^|-)([a-z])/g, (_m, a: string, b: string) => a + b.toUpperCase())
}

/** Request-URI: sip/sips/tel fully parsed (and no URI headers, RFC 3261 §19.1.5); other schemes only checked for shape. */
function validateRequestUri (uri: string): void {
  const colon = uri.indexOf(':')
  if (colon <= 0 || !isUriScheme(uri.slice(0, colon))) fail(400, 'Invalid Request-URI')
  const scheme = uri.slice(0, colon).toLowerCase()
  if (scheme === 'sip' || scheme === 'sips' || scheme === 'tel') {
    let u
    try {
      u = parseUri(uri)
    } catch (e) {
      fail(400, e instanceof SipParseError ? `Invalid Request-URI: ${e.reason}` : 'Invalid Request-URI')
    }
    if (u.headers.size > 0) fail(400, 'Headers not allowed in Request-URI')
    offerParsedUri(uri, u)
  } else {
    for (let i = colon + 1; i < uri.length; i++) {
      const c = uri.charCodeAt(i)
      if (c <= 32 || c === 127 || c === 60 || c === 62 || c === 34) fail(400, 'Invalid Request-URI')
    }
    if (colon === uri.length - 1) fail(400, 'Invalid Request-URI')
  }
}

/** Validate an address header value: name-addr shape, and the URI when sip/sips/tel. */
function validateAddress (v: string, what: string): void {
  const na = parseNameAddr(v)
  if (na.uri === '*') {
    if (what !== 'Contact') throw new SipParseError(400, `Invalid ${what}`)
    return
  }
  const colon = na.uri.indexOf(':')
  if (colon <= 0 || !isUriScheme(na.uri.slice(0, colon))) throw new SipParseError(400, `Invalid URI in ${what}`)
  const scheme = na.uri.slice(0, colon).toLowerCase()
  if (scheme === 'sip' || scheme === 'sips' || scheme === 'tel') {
    let u
    try {
      u = parseUri(na.uri)
    } catch (e) {
      throw new SipParseError(400, `Invalid URI in ${what}${e instanceof SipParseError ? ': ' + e.reason : ''}`)
    }
    // hand the parsed objects over to the registrar / proxy, which parse the same strings next
    offerParsedUri(na.uri, u)
    offerParsedNameAddr(v, na)
  } else {
    for (let i = 0; i < na.uri.length; i++) {
      const c = na.uri.charCodeAt(i)
      if (c <= 32 || c === 127) throw new SipParseError(400, `Invalid URI in ${what}`)
    }
  }
}

const MANDATORY_REQ: Array<[number, string]> = [[0, 'To'], [1, 'From'], [2, 'Call-ID'], [3, 'CSeq']]

function validate (msg: SipRequest | SipResponse, seen: number): void {
  // mandatory headers (Max-Forwards tolerated when missing: proxies add it, RFC 3261 §16.6 step 3)
  for (const [bit, n] of MANDATORY_REQ) {
    if ((seen & (1 << bit)) === 0) throw new SipParseError(400, `Missing ${n} header`)
  }
  let hasVia = false
  let contactStar = false
  let contacts = 0
  for (const h of msg.headers) {
    switch (h.name) {
      case 'via': {
        if (!h.value.includes(',')) parseVia(h.value)
        else {
          const vias = splitList(h.value)
          if (vias.length === 0) throw new SipParseError(400, 'Empty Via header')
          for (const v of vias) parseVia(v)
        }
        hasVia = true
        break
      }
      case 'to':
      case 'from':
        validateAddress(h.value, h.name === 'to' ? 'To' : 'From')
        break
      case 'contact': {
        const list = h.value.includes(',') ? splitList(h.value) : [h.value]
        if (list.length === 0 || list[0] === '') throw new SipParseError(400, 'Empty Contact header')
        for (const c of list) {
          validateAddress(c, 'Contact')
          if (c.charCodeAt(0) === 42) contactStar = true
          contacts++
        }
        break
      }
      case 'call-id':
        if (h.value.length === 0 || /\s/.test(h.value)) throw new SipParseError(400, 'Invalid Call-ID')
        break
      case 'cseq': {
        const cseq = parseCSeq(h.value)
        if (msg instanceof SipRequest && cseq.method !== msg.method) throw new SipParseError(400, 'CSeq method mismatch')
        break
      }
      case 'max-forwards': {
        const v = h.value
        if (!isDigits(v) || v.length > 10 || Number(v) > 255) throw new SipParseError(400, 'Invalid Max-Forwards')
        break
      }
      default:
        break
    }
  }
  if (!hasVia) throw new SipParseError(400, 'Missing Via header')
  if (contactStar && contacts > 1) throw new SipParseError(400, 'Contact * mixed with other contacts')
}
