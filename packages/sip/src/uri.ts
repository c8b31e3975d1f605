/**
 * SIP / SIPS / tel URIs (RFC 3261 §19.1, §25.1; RFC 3966 for tel), IPv6 references (RFC 5118),
 * %HH escaping and the §19.1.4 comparison rules.
 */
import type { SipMessage } from './message.js'

/**
 * Thrown by every parser in this package on bad input. `status` / `reason` are what a UAS or proxy
 * should answer with (400, 413, 414, 505, ...); `partial` carries what could be parsed of the message
 * (headers up to the error and after it) so that a 400 can still be addressed.
 */
export class SipParseError extends Error {
  readonly status: number
  readonly reason: string
  partial?: SipMessage

  constructor (status: number, reason: string, partial?: SipMessage) {
    super(`${status} ${reason}`)
    this.name = 'SipParseError'
    this.status = status
    this.reason = reason
    if (partial !== undefined) this.partial = partial
  }
}

export type UriScheme = 'sip' | 'sips' | 'tel'

export interface SipUri {
  scheme: UriScheme
  /** Unescaped user part; for `tel:` the number (global or local). */
  user?: string
  /** Unescaped password. */
  password?: string
  /** Host as written (case kept), WITHOUT IPv6 brackets; '' for tel. Compare with {@link hostEquals}. */
  host: string
  port?: number
  /** URI parameters: names lowercase, values unescaped, `null` for a parameter without value. */
  params: Map<string, string | null>
  /** URI headers (`?a=b&c=d`), unescaped. */
  headers: Map<string, string>
}

// ---------------------------------------------------------------- character classes

const enum C {
  ALNUM = 1,
  MARK = 2, // - _ . ! ~ * ' ( )
  USER_UNRES = 4, // & = + $ , ; ? /
  PASS_UNRES = 8, // & = + $ ,
  PARAM_UNRES = 16, // [ ] / : & + $
  HDR_UNRES = 32, // [ ] / ? : + $
  TOKEN = 64, // alphanum - . ! % * _ + ` ' ~
  HOST = 128, // alphanum - . _
  TEL = 256 // + # (beyond unreserved, in a tel number)
}

const CLASS = new Uint16Array(128)
function mark (chars: string, flag: number): void {
  for (let i = 0; i < chars.length; i++) CLASS[chars.charCodeAt(i)]! |= flag
}
{
  let an = ''
  for (let c = 48; c <= 57; c++) an += String.fromCharCode(c)
  for (let c = 65; c <= 90; c++) an += String.fromCharCode(c)
  for (let c = 97; c <= 122; c++) an += String.fromCharCode(c)
  mark(an, C.ALNUM | C.TOKEN | C.HOST)
  mark("-_.!~*'()", C.MARK)
  mark('&=+$,;?/', C.USER_UNRES)
  mark('&=+$,', C.PASS_UNRES)
  mark('[]/:&+$', C.PARAM_UNRES)
  mark('[]/?:+$', C.HDR_UNRES)
  mark("-.!%*_+`'~", C.TOKEN)
  mark('-._', C.HOST)
  mark('+#', C.TEL)
}

/** Is `code` (a char code) in `flags`? */
function is (code: number, flags: number): boolean {
  return code < 128 && (CLASS[code]! & flags) !== 0
}

/** RFC 3261 token. */
export function isToken (s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) if (!is(s.charCodeAt(i), C.TOKEN)) return false
  return true
}

function hexVal (c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 65 && c <= 70) return c - 55
  if (c >= 97 && c <= 102) return c - 87
  return -1
}

/**
 * Check that every character of `s` is allowed (class `flags`, or a valid %HH escape) and return
 * it unescaped (UTF-8 decoded). Throws SipParseError(400) naming `what` otherwise.
 */
function unescapeChecked (s: string, flags: number, what: string): string {
  let hasEsc = false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 37 /* % */) {
      if (i + 2 >= s.length || hexVal(s.charCodeAt(i + 1)) < 0 || hexVal(s.charCodeAt(i + 2)) < 0) {
        throw new SipParseError(400, `Bad escape in URI ${what}`)
      }
      hasEsc = true
      i += 2
    } else if (!is(c, C.ALNUM | C.MARK | flags)) {
      throw new SipParseError(400, `Invalid character in URI ${what}`)
    }
  }
  if (!hasEsc) return s
  const bytes: number[] = []
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 37) {
      bytes.push(hexVal(s.charCodeAt(i + 1)) * 16 + hexVal(s.charCodeAt(i + 2)))
      i += 2
    } else bytes.push(c)
  }
  return Buffer.from(bytes).toString('utf8')
}

const HEX = '0123456789ABCDEF'
/** Escape every character of `s` that is not unreserved or in `flags` (UTF-8 bytes as %HH). */
function escape (s: string, flags: number): string {
  let ok = true
  for (let i = 0; i < s.length; i++) {
    if (!is(s.charCodeAt(i), C.ALNUM | C.MARK | flags)) { ok = false; break }
  }
  if (ok) return s
  let out = ''
  for (const b of Buffer.from(s, 'utf8')) {
    if (is(b, C.ALNUM | C.MARK | flags)) out += String.fromCharCode(b)
    else out += '%' + HEX[b >> 4]! + HEX[b & 15]!
  }
  return out
}

/** Escape a user part in canonical form (only what RFC 3261 requires to be escaped). */
export function escapeUser (s: string): string { return escape(s, C.USER_UNRES) }
export function escapeParam (s: string): string { return escape(s, C.PARAM_UNRES) }

// ---------------------------------------------------------------- hosts

export function isIPv4 (s: string): boolean {
  let parts = 0
  let digits = 0
  let val = 0
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 46
    if (c === 46 /* . */) {
      if (digits === 0 || val > 255) return false
      parts++
      digits = 0
      val = 0
    } else if (c >= 48 && c <= 57) {
      if (++digits > 3) return false
      val = val * 10 + c - 48
    } else return false
  }
  return parts === 4
}

function isHex16 (s: string): boolean {
  if (s.length === 0 || s.length > 4) return false
  for (let i = 0; i < s.length; i++) if (hexVal(s.charCodeAt(i)) < 0) return false
  return true
}

/** RFC 4291 textual IPv6 address (no brackets, no zone id), including an embedded IPv4 tail. */
export function isIPv6 (s: string): boolean {
  if (s.length < 2 || s.length > 45) return false
  const dbl = s.indexOf('::')
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) return false
  const groups = (part: string, allowV4: boolean): number => {
    if (part === '') return 0
    const g = part.split(':')
    let n = 0
    for (let i = 0; i < g.length; i++) {
      const x = g[i]!
      if (allowV4 && i === g.length - 1 && x.includes('.')) {
        if (!isIPv4(x)) return -1
        n += 2
      } else if (isHex16(x)) n++
      else return -1
    }
    return n
  }
  if (dbl < 0) return groups(s, true) === 8
  const left = groups(s.slice(0, dbl), false)
  const right = groups(s.slice(dbl + 2), true)
  return left >= 0 && right >= 0 && left + right <= 7
}

/** A hostname (RFC 3261 `hostname`, leniently allowing `_`) or an IPv4 address. */
function isHostname (s: string): boolean {
  if (s.length === 0 || s.length > 255) return false
  let allNumeric = true
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!is(c, C.HOST)) return false
    if (!(c === 46 || (c >= 48 && c <= 57))) allNumeric = false
  }
  if (s.charCodeAt(0) === 46 || s.includes('..')) return false
  return allNumeric ? isIPv4(s) : true
}

export interface HostPort { host: string, port?: number }

/**
 * Parse `host[:port]` where host may be an IPv6 reference `[..]` (returned without brackets).
 * Throws SipParseError(400) on anything else.
 */
export function parseHostPort (s: string, what = 'host'): HostPort {
  let host: string
  let rest: string
  if (s.charCodeAt(0) === 91 /* [ */) {
    const close = s.indexOf(']')
    if (close < 0) throw new SipParseError(400, `Unterminated IPv6 reference in ${what}`)
    host = s.slice(1, close)
    if (!isIPv6(host)) throw new SipParseError(400, `Invalid IPv6 address in ${what}`)
    rest = s.slice(close + 1)
  } else {
    const colon = s.indexOf(':')
    host = colon < 0 ? s : s.slice(0, colon)
    rest = colon < 0 ? '' : s.slice(colon)
    if (!isHostname(host)) throw new SipParseError(400, `Invalid ${what}`)
  }
  if (rest === '') return { host }
  if (rest.charCodeAt(0) !== 58 /* : */) throw new SipParseError(400, `Invalid ${what}`)
  const port = parsePort(rest.slice(1), what)
  return { host, port }
}

function parsePort (s: string, what: string): number {
  if (s.length === 0 || s.length > 5) throw new SipParseError(400, `Invalid port in ${what}`)
  let v = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 48 || c > 57) throw new SipParseError(400, `Invalid port in ${what}`)
    v = v * 10 + c - 48
  }
  if (v > 65535) throw new SipParseError(400, `Invalid port in ${what}`)
  return v
}

/** Format a host for a URI / Via: IPv6 addresses get their brackets back. */
export function formatHost (host: string): string {
  return host.includes(':') && host.charCodeAt(0) !== 91 ? `[${host}]` : host
}

/** Case-insensitive host comparison, ignoring IPv6 brackets and IPv6 zero-compression differences. */
export function hostEquals (a: string, b: string): boolean {
  a = stripBrackets(a).toLowerCase()
  b = stripBrackets(b).toLowerCase()
  if (a === b) return true
  if (a.includes(':') && b.includes(':') && isIPv6(a) && isIPv6(b)) return expandIPv6(a) === expandIPv6(b)
  return false
}

function stripBrackets (h: string): string {
  return h.charCodeAt(0) === 91 && h.charCodeAt(h.length - 1) === 93 ? h.slice(1, -1) : h
}

/** Full 8-group form of a valid IPv6 address (lowercase, no leading zeros), for comparison. */
function expandIPv6 (s: string): string {
  const toGroups = (part: string): string[] => {
    if (part === '') return []
    const out: string[] = []
    for (const g of part.split(':')) {
      if (g.includes('.')) {
        const o = g.split('.').map(Number)
        out.push(((o[0]! << 8) | o[1]!).toString(16), ((o[2]! << 8) | o[3]!).toString(16))
      } else out.push(parseInt(g, 16).toString(16))
    }
    return out
  }
  const dbl = s.indexOf('::')
  if (dbl < 0) return toGroups(s).join(':')
  const l = toGroups(s.slice(0, dbl))
  const r = toGroups(s.slice(dbl + 2))
  return [...l, ...new Array<string>(8 - l.length - r.length).fill('0'), ...r].join(':')
}

// ---------------------------------------------------------------- parse / format

function parseUriParams (s: string, params: Map<string, string | null>): void {
  // s is everything after the first ';' up to '?' (or end)
  let start = 0
  while (start <= s.length) {
    let end = s.indexOf(';', start)
    if (end < 0) end = s.length
    const p = s.slice(start, end)
    if (p.length === 0) throw new SipParseError(400, 'Empty URI parameter')
    const eq = p.indexOf('=')
    const rawName = eq < 0 ? p : p.slice(0, eq)
    if (rawName.length === 0) throw new SipParseError(400, 'Empty URI parameter name')
    const name = unescapeChecked(rawName, C.PARAM_UNRES, 'parameter').toLowerCase()
    const value = eq < 0 ? null : unescapeChecked(p.slice(eq + 1), C.PARAM_UNRES, 'parameter')
    params.set(name, value)
    start = end + 1
  }
}

function parseUriHeaders (s: string, headers: Map<string, string>): void {
  for (const h of s.split('&')) {
    const eq = h.indexOf('=')
    if (eq <= 0) throw new SipParseError(400, 'Invalid URI header')
    headers.set(
      unescapeChecked(h.slice(0, eq), C.HDR_UNRES, 'header'),
      unescapeChecked(h.slice(eq + 1), C.HDR_UNRES, 'header'))
  }
}

/** Max length accepted for one URI (a guard; message limits are stricter). */
export const MAX_URI_LENGTH = 8192

/**
 * One-shot hand-off of parse results (internal to the package). The message parser validates the
 * Request-URI and the To/From/Contact URIs by parsing them; it offers the results here, so that the
 * next `parseUri` of the very same string (by the registrar or the proxy, usually right after) takes
 * the object over instead of parsing it again. An offered object is handed out at most once, so every
 * caller still owns what it gets (and may mutate it); the result is the same as a fresh parse.
 */
const uriHandoff = new Map<string, SipUri>()
const HANDOFF_MAX = 16

/** @internal */
export function offerParsedUri (s: string, u: SipUri): void {
  if (uriHandoff.size >= HANDOFF_MAX) uriHandoff.clear()
  uriHandoff.set(s, u)
}

/** @internal Forget every offered object (the parser calls it for each new message). */
export function clearUriHandoff (): void {
  if (uriHandoff.size > 0) uriHandoff.clear()
}

/**
 * Parse a `sip:`, `sips:` or `tel:` URI. The scheme is case-insensitive. Throws
 * `SipParseError(400, reason)` for anything malformed, and `SipParseError(416)` for another scheme.
 */
export function parseUri (s: string): SipUri {
  if (uriHandoff.size > 0) {
    const offered = uriHandoff.get(s)
    if (offered !== undefined) { uriHandoff.delete(s); return offered }
  }
  if (typeof s !== 'string' || s.length === 0) throw new SipParseError(400, 'Empty URI')
  if (s.length > MAX_URI_LENGTH) throw new SipParseError(414, 'Request-URI Too Long')
  const colon = s.indexOf(':')
  if (colon <= 0) throw new SipParseError(400, 'Missing URI scheme')
  const scheme = s.slice(0, colon).toLowerCase()
  if (scheme !== 'sip' && scheme !== 'sips' && scheme !== 'tel') {
    if (!isUriScheme(scheme)) throw new SipParseError(400, 'Invalid URI scheme')
    throw new SipParseError(416, 'Unsupported URI Scheme')
  }
  const params = new Map<string, string | null>()
  const headers = new Map<string, string>()
  let rest = s.slice(colon + 1)

  if (scheme === 'tel') {
    const semi = rest.indexOf(';')
    const num = semi < 0 ? rest : rest.slice(0, semi)
    if (num.length === 0) throw new SipParseError(400, 'Empty tel number')
    const user = unescapeChecked(num, C.TEL, 'tel number')
    if (semi >= 0) parseUriParams(rest.slice(semi + 1), params)
    return { scheme, user, host: '', params, headers }
  }

  const uri: SipUri = { scheme, host: '', params, headers }
  const at = rest.indexOf('@')
  if (at >= 0) {
    const userinfo = rest.slice(0, at)
    const pc = userinfo.indexOf(':')
    const user = pc < 0 ? userinfo : userinfo.slice(0, pc)
    if (user.length === 0) throw new SipParseError(400, 'Empty user in URI')
    uri.user = unescapeChecked(user, C.USER_UNRES, 'user')
    if (pc >= 0) uri.password = unescapeChecked(userinfo.slice(pc + 1), C.PASS_UNRES, 'password')
    rest = rest.slice(at + 1)
  }
  // host[:port] ends at ';' or '?' (not inside an IPv6 reference)
  let hpEnd = rest.length
  const searchFrom = rest.charCodeAt(0) === 91 ? Math.max(0, rest.indexOf(']')) : 0
  for (let i = searchFrom; i < rest.length; i++) {
    const c = rest.charCodeAt(i)
    if (c === 59 || c === 63) { hpEnd = i; break }
  }
  const hp = parseHostPort(rest.slice(0, hpEnd), 'URI host')
  uri.host = hp.host
  if (hp.port !== undefined) uri.port = hp.port
  if (hpEnd < rest.length) {
    let q = rest.indexOf('?', hpEnd)
    if (rest.charCodeAt(hpEnd) === 59) {
      if (q < 0) q = rest.length
      parseUriParams(rest.slice(hpEnd + 1, q), params)
    }
    if (q < rest.length) parseUriHeaders(rest.slice(q + 1), headers)
  }
  return uri
}

/** RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
export function isUriScheme (s: string): boolean {
  if (s.length === 0) return false
  const c0 = s.charCodeAt(0) | 32
  if (c0 < 97 || c0 > 122) return false
  for (let i = 1; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (!(is(c, C.ALNUM) || c === 43 || c === 45 || c === 46)) return false
  }
  return true
}

/** Serialize a URI, escaping user/password/params/headers canonically; IPv6 hosts get brackets. */
export function formatUri (u: SipUri): string {
  let s = u.scheme + ':'
  if (u.scheme === 'tel') {
    s += escape(u.user ?? '', C.TEL)
  } else {
    if (u.user !== undefined) {
      s += escape(u.user, C.USER_UNRES)
      if (u.password !== undefined) s += ':' + escape(u.password, C.PASS_UNRES)
      s += '@'
    }
    s += formatHost(u.host)
    if (u.port !== undefined) s += ':' + String(u.port)
  }
  for (const [k, v] of u.params) {
    s += ';' + escape(k, C.PARAM_UNRES)
    if (v !== null) s += '=' + escape(v, C.PARAM_UNRES)
  }
  if (u.scheme !== 'tel' && u.headers.size > 0) {
    let first = true
    for (const [k, v] of u.headers) {
      s += (first ? '?' : '&') + escape(k, C.HDR_UNRES) + '=' + escape(v, C.HDR_UNRES)
      first = false
    }
  }
  return s
}

const SPECIAL_PARAMS = ['user', 'ttl', 'method', 'maddr', 'transport']

/**
 * URI equality per RFC 3261 §19.1.4: scheme; user and password case-sensitive after unescaping;
 * host case-insensitive; ports must both be absent or equal; user/ttl/method/maddr/transport must
 * match when present in either; other parameters only when present in both; headers must all match.
 * Unparseable strings compare by exact string equality.
 */
export function uriEquals (a: SipUri | string, b: SipUri | string): boolean {
  let ua: SipUri, ub: SipUri
  try {
    ua = typeof a === 'string' ? parseUri(a) : a
    ub = typeof b === 'string' ? parseUri(b) : b
  } catch {
    return typeof a === 'string' && typeof b === 'string' && a === b
  }
  if (ua.scheme !== ub.scheme) return false
  if (ua.scheme !== 'tel' && (ua.user !== ub.user || ua.password !== ub.password)) return false
  if (ua.scheme === 'tel') {
    // RFC 3966 §4: compare numbers without visual separators
    const norm = (x?: string): string => (x ?? '').replace(/[-.()]/g, '').toLowerCase()
    if (norm(ua.user) !== norm(ub.user)) return false
  } else if (!hostEquals(ua.host, ub.host)) return false
  if (ua.port !== ub.port) return false
  for (const p of SPECIAL_PARAMS) {
    const va = ua.params.get(p)
    const vb = ub.params.get(p)
    if (va === undefined && vb === undefined) continue
    if (va === undefined || vb === undefined) return false
    if ((va ?? '').toLowerCase() !== (vb ?? '').toLowerCase()) return false
  }
  for (const [k, va] of ua.params) {
    if (!ub.params.has(k)) continue
    const vb = ub.params.get(k)!
    if ((va ?? '').toLowerCase() !== (vb ?? '').toLowerCase() || (va === null) !== (vb === null)) return false
  }
  if (ua.headers.size !== ub.headers.size) return false
  for (const [k, va] of ua.headers) {
    let found = false
    for (const [kb, vb] of ub.headers) {
      if (kb.toLowerCase() === k.toLowerCase()) { found = vb === va; break }
    }
    if (!found) return false
  }
  return true
}

/**
 * Normalized address-of-record: `scheme:user@host[:port]` (scheme kept, host lowercased, IPv6 in
 * brackets, no params/headers/password, user unescaped then canonically escaped). Throws
 * SipParseError on a bad URI.
 */
export function aorOf (uri: SipUri | string): string {
  const u = typeof uri === 'string' ? parseUri(uri) : uri
  if (u.scheme === 'tel') return 'tel:' + (u.user ?? '').replace(/[-.()]/g, '')
  let s = u.scheme + ':'
  if (u.user !== undefined) s += escape(u.user, C.USER_UNRES) + '@'
  s += formatHost(u.host.toLowerCase())
  if (u.port !== undefined) s += ':' + String(u.port)
  return s
}
