/**
 * Structured views of individual header values (RFC 3261 §20, §25.1): name-addr (To, From, Contact,
 * Route, Record-Route, Path, ...), Via, CSeq, generic parameters and Digest credentials/challenges.
 * Each function takes ONE value (already split off a list with `splitList` / `getAll`) and throws
 * `SipParseError(400, reason)` on malformed input.
 */
import { SipParseError, isToken, formatHost, isIPv4, isIPv6 } from './uri.js'

// ---------------------------------------------------------------- low-level scanning

function isWs (c: number): boolean { return c === 32 || c === 9 || c === 13 || c === 10 }

/** Trim SP / HT / CR / LF only (String#trim would also eat U+FEFF, NBSP, ... which are data in SIP). */
export function trimLws (s: string): string {
  let a = 0
  let b = s.length
  while (a < b && isWs(s.charCodeAt(a))) a++
  while (b > a && isWs(s.charCodeAt(b - 1))) b--
  return a === 0 && b === s.length ? s : s.slice(a, b)
}

function skipWs (s: string, i: number): number {
  while (i < s.length && isWs(s.charCodeAt(i))) i++
  return i
}

/** token characters: alphanum - . ! % * _ + ` ' ~ */
function isTokenChar (c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) ||
    c === 45 || c === 46 || c === 33 || c === 37 || c === 42 || c === 95 || c === 43 || c === 96 ||
    c === 39 || c === 126
}

function scanToken (s: string, i: number): number {
  while (i < s.length && isTokenChar(s.charCodeAt(i))) i++
  return i
}

/** `i` is at an opening `"`; returns the index just past the closing `"`. */
function scanQuoted (s: string, i: number, what: string): number {
  for (let j = i + 1; j < s.length; j++) {
    const c = s.charCodeAt(j)
    if (c === 92 /* \ */) { j++; continue }
    if (c === 34) return j + 1
  }
  throw new SipParseError(400, `Unterminated quoted string in ${what}`)
}

/** Remove the quotes and quoted-pair escapes of a quoted-string (`"a\"b"` → `a"b`). */
export function unquote (q: string): string {
  if (q.length < 2 || q.charCodeAt(0) !== 34 || q.charCodeAt(q.length - 1) !== 34) return q
  const inner = q.slice(1, -1)
  if (!inner.includes('\\')) return inner
  let out = ''
  for (let i = 0; i < inner.length; i++) {
    const c = inner[i]!
    if (c === '\\' && i + 1 < inner.length) { out += inner[i + 1]; i++ } else out += c
  }
  return out
}

/** Quote a string as a quoted-string (escaping `"` and `\`). */
export function quote (s: string): string {
  return '"' + s.replace(/[\\"]/g, m => '\\' + m) + '"'
}

// ---------------------------------------------------------------- generic params

/**
 * Parse `;name[=value]` parameters starting at `i` (LWS allowed around `;` and `=`) into `params`
 * (names lowercased; quoted values kept WITH their quotes; `null` for a valueless param).
 * Returns the index where parsing stopped (end of string).
 */
function parseParamsAt (s: string, i: number, params: Map<string, string | null>, what: string): void {
  for (;;) {
    i = skipWs(s, i)
    if (i >= s.length) return
    if (s.charCodeAt(i) !== 59 /* ; */) throw new SipParseError(400, `Invalid parameters in ${what}`)
    i = skipWs(s, i + 1)
    const ns = i
    i = scanToken(s, i)
    if (i === ns) throw new SipParseError(400, `Empty parameter in ${what}`)
    const name = s.slice(ns, i).toLowerCase()
    i = skipWs(s, i)
    let value: string | null = null
    if (i < s.length && s.charCodeAt(i) === 61 /* = */) {
      i = skipWs(s, i + 1)
      const vs = i
      if (i < s.length && s.charCodeAt(i) === 34) {
        i = scanQuoted(s, i, what)
      } else {
        // token, or host (IPv6 with or without brackets: Via received=2001:db8::1, RFC 5118 §4.5)
        while (i < s.length) {
          const c = s.charCodeAt(i)
          if (isTokenChar(c) || c === 58 || c === 91 || c === 93) i++
          else break
        }
      }
      if (i === vs) throw new SipParseError(400, `Empty parameter value in ${what}`)
      value = s.slice(vs, i)
    }
    params.set(name, value)
  }
}

/** Parse `;a=b;c;d="x y"` (leading whitespace allowed). Names lowercase; quoted values keep quotes. */
export function parseParams (s: string): Map<string, string | null> {
  const params = new Map<string, string | null>()
  parseParamsAt(s, 0, params, 'parameters')
  return params
}

/** Format parameters as `;a=b;c`. */
export function formatParams (params: Map<string, string | null>): string {
  let s = ''
  for (const [k, v] of params) s += v === null ? `;${k}` : `;${k}=${v}`
  return s
}

// ---------------------------------------------------------------- name-addr / addr-spec

export interface NameAddr {
  /** Display name, unquoted and unescaped (absent when none). */
  displayName?: string
  /** The URI as written (without `<>`), or `*` for a wildcard Contact. Not validated here. */
  uri: string
  /** Header parameters (after `>` or after a bare URI): tag, expires, q, +sip.instance, ... */
  params: Map<string, string | null>
}

/** One-shot hand-off of name-addr parse results from the message parser (see `offerParsedUri`). */
const nameAddrHandoff = new Map<string, NameAddr>()

/** @internal */
export function offerParsedNameAddr (v: string, na: NameAddr): void {
  if (nameAddrHandoff.size >= 16) nameAddrHandoff.clear()
  nameAddrHandoff.set(v, na)
}

/** @internal */
export function clearNameAddrHandoff (): void {
  if (nameAddrHandoff.size > 0) nameAddrHandoff.clear()
}

/**
 * Parse a name-addr (`"Name" <sip:a@b;uriparam>;tag=x`, `Name <sip:..>`) or a bare addr-spec
 * (`sip:a@b;tag=x`: parameters after a bare URI are header parameters, RFC 3261 §20.10), or `*`.
 */
export function parseNameAddr (v: string): NameAddr {
  if (nameAddrHandoff.size > 0) {
    const offered = nameAddrHandoff.get(v)
    if (offered !== undefined) { nameAddrHandoff.delete(v); return offered }
  }
  const s = trimLws(v)
  const params = new Map<string, string | null>()
  if (s.length === 0) throw new SipParseError(400, 'Empty address')
  if (s.charCodeAt(0) === 42 /* * */) {
    parseParamsAt(s, 1, params, 'address')
    return { uri: '*', params }
  }
  let i = 0
  let displayName: string | undefined
  let lt = -1
  if (s.charCodeAt(0) === 34) {
    const end = scanQuoted(s, 0, 'display name')
    displayName = unquote(s.slice(0, end))
    i = skipWs(s, end)
    if (s.charCodeAt(i) !== 60 /* < */) throw new SipParseError(400, 'Missing <URI> after display name')
    lt = i
  } else {
    // display name as *(token LWS) followed by '<', or a bare URI (stops at ':'). Leniency: non-ASCII
    // (UTF-8) characters are accepted in an unquoted display name, as many UAs send them.
    let j = 0
    while (j < s.length) {
      const c = s.charCodeAt(j)
      if (isTokenChar(c) || isWs(c) || c >= 128) j++
      else break
    }
    if (j < s.length && s.charCodeAt(j) === 60) {
      lt = j
      const dn = trimLws(s.slice(0, j))
      if (dn.length > 0) displayName = dn.replace(/\s+/g, ' ')
    }
  }
  if (lt >= 0) {
    const gt = s.indexOf('>', lt + 1)
    if (gt < 0) throw new SipParseError(400, 'Missing > in address')
    const uri = s.slice(lt + 1, gt)
    if (uri.length === 0) throw new SipParseError(400, 'Empty URI in address')
    parseParamsAt(s, gt + 1, params, 'address')
    const r: NameAddr = { uri, params }
    if (displayName !== undefined) r.displayName = displayName
    return r
  }
  // addr-spec: URI runs to the first ';' or whitespace
  let end = 0
  while (end < s.length) {
    const c = s.charCodeAt(end)
    if (c === 59 || isWs(c)) break
    if (c === 44 /* , */ || c === 63 /* ? */ || c === 60 || c === 62 || c === 34) {
      throw new SipParseError(400, 'URI with , ? or quotes must be enclosed in <>')
    }
    end++
  }
  const uri = s.slice(0, end)
  if (!uri.includes(':')) throw new SipParseError(400, 'Invalid address')
  parseParamsAt(s, end, params, 'address')
  return { uri, params }
}

/** Format as `"Name" <uri>;params` (always angle brackets, so URI parameters stay in the URI). */
export function formatNameAddr (na: NameAddr): string {
  if (na.uri === '*') return '*' + formatParams(na.params)
  const dn = na.displayName !== undefined && na.displayName !== '' ? quote(na.displayName) + ' ' : ''
  return `${dn}<${na.uri}>${formatParams(na.params)}`
}

/** The `tag` parameter of a To/From value, or undefined (also for a malformed value). */
export function getTag (v: string): string | undefined {
  try {
    return parseNameAddr(v).params.get('tag') ?? undefined
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------- Via

export interface Via {
  /** `SIP/2.0` (protocol-name/version as received); formatVia defaults to `SIP/2.0`. */
  protocol?: string
  /** Uppercased transport: UDP, TCP, TLS, SCTP, WS, WSS, ... */
  transport: string
  /** sent-by host WITHOUT IPv6 brackets. */
  host: string
  port?: number
  /**
   * All parameters (names lowercase, values as written). This map is what formatVia writes; the
   * fields below are read-only views taken at parse time.
   */
  params: Map<string, string | null>
  branch?: string
  /** received, without IPv6 brackets. */
  received?: string
  /** `null` when `;rport` is present without a value. */
  rport?: number | null
  maddr?: string
  ttl?: number
}

/** Parse ONE Via value (`SIP/2.0/UDP host:port;branch=...`), LWS tolerated per RFC 3261 §25.1. */
export function parseVia (v: string): Via {
  const s = v
  let i = skipWs(s, 0)
  const pn = i
  i = scanToken(s, i)
  const protoName = s.slice(pn, i)
  i = skipWs(s, i)
  if (protoName.length === 0 || s.charCodeAt(i) !== 47 /* / */) throw new SipParseError(400, 'Invalid Via protocol')
  i = skipWs(s, i + 1)
  const vs = i
  i = scanToken(s, i)
  const version = s.slice(vs, i)
  i = skipWs(s, i)
  if (version.length === 0 || s.charCodeAt(i) !== 47) throw new SipParseError(400, 'Invalid Via protocol')
  i = skipWs(s, i + 1)
  const ts = i
  i = scanToken(s, i)
  const transport = s.slice(ts, i).toUpperCase()
  if (transport.length === 0) throw new SipParseError(400, 'Invalid Via transport')
  const afterT = i
  i = skipWs(s, i)
  if (i === afterT) throw new SipParseError(400, 'Invalid Via sent-by')
  // sent-by: host [ COLON port ]
  let host: string
  const hs = i
  if (s.charCodeAt(i) === 91) {
    const close = s.indexOf(']', i)
    if (close < 0) throw new SipParseError(400, 'Invalid Via sent-by')
    host = s.slice(i + 1, close)
    if (!isIPv6(host)) throw new SipParseError(400, 'Invalid IPv6 address in Via')
    i = close + 1
  } else {
    while (i < s.length) {
      const c = s.charCodeAt(i)
      if ((c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95) i++
      else break
    }
    host = s.slice(hs, i)
    if (host.length === 0) throw new SipParseError(400, 'Invalid Via sent-by')
  }
  let port: number | undefined
  let j = skipWs(s, i)
  if (s.charCodeAt(j) === 58) {
    j = skipWs(s, j + 1)
    const ps = j
    while (j < s.length && s.charCodeAt(j) >= 48 && s.charCodeAt(j) <= 57) j++
    port = Number(s.slice(ps, j))
    if (j === ps || j - ps > 5 || port > 65535) throw new SipParseError(400, 'Invalid Via port')
    i = j
  }
  const params = new Map<string, string | null>()
  parseParamsAt(s, i, params, 'Via')
  const via: Via = { protocol: `${protoName}/${version}`, transport, host, params }
  if (port !== undefined) via.port = port
  const branch = params.get('branch')
  if (branch !== undefined) {
    if (branch === null || !isToken(branch)) throw new SipParseError(400, 'Invalid Via branch')
    via.branch = branch
  }
  const received = params.get('received')
  if (received !== undefined) {
    const r = received === null ? '' : received.charCodeAt(0) === 91 ? received.slice(1, -1) : received
    if (!isIPv4(r) && !isIPv6(r)) throw new SipParseError(400, 'Invalid Via received')
    via.received = r
  }
  const rport = params.get('rport')
  if (rport !== undefined) {
    if (rport === null) via.rport = null
    else {
      const n = /^\d{1,5}$/.test(rport) ? Number(rport) : -1
      if (n < 0 || n > 65535) throw new SipParseError(400, 'Invalid Via rport')
      via.rport = n
    }
  }
  const maddr = params.get('maddr')
  if (maddr !== undefined) {
    if (maddr === null) throw new SipParseError(400, 'Invalid Via maddr')
    via.maddr = maddr.charCodeAt(0) === 91 ? maddr.slice(1, -1) : maddr
  }
  const ttl = params.get('ttl')
  if (ttl !== undefined) {
    const n = ttl !== null && /^\d{1,3}$/.test(ttl) ? Number(ttl) : -1
    if (n < 0 || n > 255) throw new SipParseError(400, 'Invalid Via ttl')
    via.ttl = n
  }
  return via
}

/** Format a Via value from protocol/transport/host/port and the `params` map. */
export function formatVia (v: Pick<Via, 'transport' | 'host' | 'params'> & { protocol?: string, port?: number }): string {
  let s = `${v.protocol ?? 'SIP/2.0'}/${v.transport.toUpperCase()} ${formatHost(v.host)}`
  if (v.port !== undefined) s += ':' + String(v.port)
  return s + formatParams(v.params)
}

// ---------------------------------------------------------------- CSeq

export interface CSeq { seq: number, method: string }

export const MAX_CSEQ = 2 ** 31 - 1

/** `CSeq: 314159 INVITE`; seq must be in 0..2^31-1 (RFC 3261 §8.1.1.5). */
export function parseCSeq (v: string): CSeq {
  const s = trimLws(v)
  let i = 0
  while (i < s.length && s.charCodeAt(i) >= 48 && s.charCodeAt(i) <= 57) i++
  if (i === 0) throw new SipParseError(400, 'Invalid CSeq number')
  let d = 0
  while (d < i - 1 && s.charCodeAt(d) === 48) d++ // leading zeros
  if (i - d > 10) throw new SipParseError(400, 'CSeq number out of range')
  const seq = Number(s.slice(0, i))
  if (seq > MAX_CSEQ) throw new SipParseError(400, 'CSeq number out of range')
  const ms = skipWs(s, i)
  if (ms === i) throw new SipParseError(400, 'Invalid CSeq')
  const method = s.slice(ms)
  if (!isToken(method)) throw new SipParseError(400, 'Invalid CSeq method')
  return { seq, method }
}

// ---------------------------------------------------------------- Authorization & co

export interface AuthHeader {
  /** `Digest`, as written. */
  scheme: string
  /** Parameters: names lowercase, values unquoted. */
  params: Map<string, string>
}

/**
 * Parse Authorization / Proxy-Authorization / WWW-Authenticate / Proxy-Authenticate values:
 * `Digest username="bob", realm="x", nc=00000001, ...`.
 */
export function parseAuthHeader (v: string): AuthHeader {
  const s = trimLws(v)
  let i = scanToken(s, 0)
  const scheme = s.slice(0, i)
  if (scheme.length === 0) throw new SipParseError(400, 'Invalid authentication scheme')
  const params = new Map<string, string>()
  if (i < s.length && !isWs(s.charCodeAt(i))) throw new SipParseError(400, 'Invalid authentication header')
  i = skipWs(s, i)
  let first = true
  while (i < s.length) {
    if (!first) {
      if (s.charCodeAt(i) !== 44) throw new SipParseError(400, 'Invalid authentication parameters')
      i = skipWs(s, i + 1)
      if (i >= s.length) break
    }
    first = false
    const ns = i
    i = scanToken(s, i)
    if (i === ns) throw new SipParseError(400, 'Invalid authentication parameter')
    const name = s.slice(ns, i).toLowerCase()
    i = skipWs(s, i)
    if (s.charCodeAt(i) !== 61) throw new SipParseError(400, 'Invalid authentication parameter')
    i = skipWs(s, i + 1)
    let value: string
    if (s.charCodeAt(i) === 34) {
      const end = scanQuoted(s, i, 'authentication header')
      value = unquote(s.slice(i, end))
      i = end
    } else {
      const vs = i
      while (i < s.length && !isWs(s.charCodeAt(i)) && s.charCodeAt(i) !== 44) i++
      if (i === vs) throw new SipParseError(400, 'Empty authentication parameter')
      value = s.slice(vs, i)
    }
    params.set(name, value)
    i = skipWs(s, i)
  }
  return { scheme, params }
}

/** Parameters written without quotes by {@link formatAuthHeader} unless told otherwise. */
export const UNQUOTED_AUTH_PARAMS = ['algorithm', 'nc', 'stale', 'qop']

/**
 * Format `Digest a="b", c=d`. Values are quoted except for names in `unquoted` (default:
 * algorithm, nc, stale, qop — note that a WWW-Authenticate `qop` list should be quoted:
 * pass `unquoted: ['algorithm', 'stale']` there).
 */
export function formatAuthHeader (a: AuthHeader, unquoted: string[] = UNQUOTED_AUTH_PARAMS): string {
  const parts: string[] = []
  for (const [k, v] of a.params) parts.push(unquoted.includes(k) ? `${k}=${v}` : `${k}=${quote(v)}`)
  return `${a.scheme} ${parts.join(', ')}`
}
