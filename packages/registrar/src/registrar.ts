/**
 * REGISTER handling (RFC 3261 §10.3, RFC 3327 Path, RFC 5626 outbound) on top of the location
 * store. Like Kamailio's `registrar` module it validates, computes expiries, calls usrloc and builds
 * the reply; it knows nothing of replication or transports.
 *
 * Error mapping (modelled on Kamailio's registrar, reply.c):
 * - Call-ID/CSeq out of order (§10.3 steps 6–7 "the request fails") → `400 Invalid CSeq number`
 * - more than `maxContactsPerAor` bindings → `503 Too many registered contacts`
 * - location table full (`maxAors`) → `503 Location table full`
 * - `*` with other contacts or a non-zero Expires → `400 Invalid wildcard ...`
 * - 0 < expires < minExpires → `423 Interval Too Brief` with `Min-Expires`
 * - bad q / expires / reg-id parameter → `400 Invalid ... param in contact`
 */
import type { Binding, Clock, Destination, Logger, Source } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import type { ContactUpdate, LocationStore, RegisterError } from '@sipring/location'
import {
  SipParseError, SipResponse, createResponse, parseUri, parseNameAddr, parseCSeq, aorOf as sipAorOf,
  formatNameAddr, unquote, getTag, type SipRequest, type SipUri, type NameAddr
} from '@sipring/sip'

export interface RegistrarOptions {
  location: LocationStore
  clock: Clock
  logger?: Logger
  /** Domains served (compared case-insensitively with the To host); empty = any domain. */
  domains?: string[]
  /** Seconds (default 60). 0 < expires < minExpires → 423. */
  minExpires?: number
  /** Seconds (default 3600); longer requests are capped. */
  maxExpires?: number
  /** Seconds (default 3600) when neither the contact nor the request gives one. */
  defaultExpires?: number
  /** Stored in every binding as `node` (the super node holding the client's flow). */
  nodeId?: string
  /** AOR of a To URI; default: `aorOf` from @sipring/sip (`sip:user@host[:port]`, host lowercased). */
  aorOf?: (uri: SipUri) => string
  /** RFC 5626 §5.4: seconds sent as `Flow-Timer` in a 200 that uses outbound (keep-alive interval); unset = none. */
  flowTimer?: number
}

export interface Registrar {
  /** Answer one REGISTER. Never throws: bad input gets a 4xx, an internal failure a 500. */
  handle (req: SipRequest, source: Source): Promise<SipResponse>
}

/** Option tags this registrar understands in Require (RFC 3261 §10.3 step 2). */
const SUPPORTED_TAGS = new Set(['path', 'outbound'])

const MAX_DELTA_SECONDS = 2 ** 32 - 1

class Reject extends Error {
  constructor (readonly status: number, readonly reason: string, readonly headers: Array<[string, string]> = []) {
    super(`${status} ${reason}`)
  }
}

const LOCATION_ERRORS: Record<RegisterError, [number, string]> = {
  'out-of-order': [400, 'Invalid CSeq number'],
  'too-many-contacts': [503, 'Too many registered contacts'],
  'too-many-aors': [503, 'Location table full']
}

/** FNV-1a 32-bit, hex: a deterministic To tag per (node, Call-ID, From tag). */
function fnv1a (s: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) }
  return (h >>> 0).toString(16).padStart(8, '0')
}

/** delta-seconds (RFC 3261 §25.1): digits only; values beyond 2^32-1 are taken as 2^32-1. */
function parseDelta (v: string): number | undefined {
  const s = v.trim()
  if (!/^[0-9]{1,20}$/.test(s)) return undefined
  return Math.min(Number(s), MAX_DELTA_SECONDS)
}

/** RFC 3261 qvalue: 0[.ddd] or 1[.000]. */
function parseQ (v: string): number | undefined {
  const s = v.trim()
  if (!/^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$/.test(s)) return undefined
  return Number(s)
}

/**
 * Equality key of a Contact URI for the location store: scheme, unescaped user/password, host
 * lowercased, port, every parameter (names and values lowercased, order ignored) and headers.
 * Stricter than §19.1.4 for parameters present on one side only (as Kamailio, which compares
 * contact strings): a UA that changes its Contact parameters gets a new binding.
 */
export function contactUriKey (u: SipUri): string {
  let s = `${u.scheme}:${u.user ?? ''}${u.password !== undefined ? ':' + u.password : ''}@${u.host.toLowerCase()}`
  if (u.port !== undefined) s += `:${u.port}`
  if (u.params.size === 1) { // the usual case (`;transport=…` or `;ob`): no array, no sort
    for (const [k, v] of u.params) s += v === null ? `;${k}` : `;${k}=${v.toLowerCase()}`
  } else if (u.params.size > 1) {
    s += ';' + [...u.params].map(([k, v]) => v === null ? k : `${k}=${v.toLowerCase()}`).sort().join(';')
  }
  if (u.headers.size > 0) s += '?' + [...u.headers].map(([k, v]) => `${k.toLowerCase()}=${v}`).sort().join('&')
  return s
}

const NO_TAGS: ReadonlySet<string> = new Set()

function tagsOf (req: SipRequest, header: string): ReadonlySet<string> {
  if (!req.has(header)) return NO_TAGS
  return new Set(req.getAll(header).map(t => t.trim().toLowerCase()).filter(t => t !== ''))
}

export function createRegistrar (opts: RegistrarOptions): Registrar {
  const { location, clock } = opts
  const log = (opts.logger ?? silentLogger).child({ component: 'registrar' })
  const domains = new Set((opts.domains ?? []).map(d => d.toLowerCase()))
  const minExpires = opts.minExpires ?? 60
  const maxExpires = opts.maxExpires ?? 3600
  const defaultExpires = opts.defaultExpires ?? 3600
  for (const [name, v] of [['minExpires', minExpires], ['maxExpires', maxExpires], ['defaultExpires', defaultExpires]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer, got ${String(v)}`)
  }
  if (maxExpires < minExpires) throw new RangeError('maxExpires must be >= minExpires')
  if (opts.flowTimer !== undefined && (!Number.isInteger(opts.flowTimer) || opts.flowTimer < 1)) throw new RangeError('flowTimer must be a positive integer')
  if (defaultExpires < minExpires || defaultExpires > maxExpires) throw new RangeError('defaultExpires must lie in [minExpires, maxExpires]')
  const aorOf = opts.aorOf ?? ((u: SipUri) => sipAorOf(u))
  const nodeTag = fnv1a(opts.nodeId ?? 'sipring')
  let dateSecond = Number.NaN
  let dateValue = ''

  function toTag (req: SipRequest): string {
    const from = req.get('from') ?? ''
    return nodeTag + fnv1a(`${req.get('call-id') ?? ''}|${getTag(from) ?? from}`)
  }

  function reply (req: SipRequest, status: number, reason: string, headers: Array<[string, string]> = []): SipResponse {
    const res = createResponse(req, status, reason, toTag(req))
    for (const [n, v] of headers) res.append(n, v)
    return res
  }

  /** The Contact value echoed in the 200: the registered one, expires set to the time left. */
  function contactValue (b: Binding, now: number): string {
    const left = Math.max(0, Math.ceil((b.expires - now) / 1000))
    let na: NameAddr | undefined
    if (b.contactHeader !== undefined) {
      try { na = parseNameAddr(b.contactHeader) } catch { na = undefined }
    }
    if (na === undefined) {
      na = { uri: b.contact, params: new Map() }
      if (b.q !== 1) na.params.set('q', String(b.q))
      if (b.instance !== undefined) na.params.set('+sip.instance', `"${b.instance}"`)
      if (b.regId !== undefined) na.params.set('reg-id', String(b.regId))
    }
    na.params.set('expires', String(left))
    return formatNameAddr(na)
  }

  async function handle (req: SipRequest, source: Source): Promise<SipResponse> {
    try {
      return handleRegister(req, source)
    } catch (err) {
      try {
        if (err instanceof Reject) return reply(req, err.status, err.reason, err.headers)
        if (err instanceof SipParseError) return reply(req, err.status === 416 ? 416 : 400, err.reason)
        log.error({ err }, 'REGISTER failed')
        return reply(req, 500, 'Server Internal Error')
      } catch (err2) {
        log.error({ err: err2 }, 'REGISTER reply failed')
        return new SipResponse(500, 'Server Internal Error')
      }
    }
  }

  function handleRegister (req: SipRequest, source: Source): SipResponse {
    if (req.method !== 'REGISTER') throw new Reject(405, 'Method Not Allowed', [['allow', 'REGISTER']])

    // §10.3 step 2: Require
    const required = tagsOf(req, 'require')
    const unsupported = [...required].filter(t => !SUPPORTED_TAGS.has(t))
    if (unsupported.length > 0) throw new Reject(420, 'Bad Extension', [['unsupported', unsupported.join(', ')]])
    const supported = tagsOf(req, 'supported')

    const callId = req.get('call-id')?.trim()
    if (callId === undefined || callId === '') throw new Reject(400, 'Missing Call-ID header')
    const cseqValue = req.get('cseq')
    if (cseqValue === undefined) throw new Reject(400, 'Missing CSeq header')
    const cseq = parseCSeq(cseqValue)
    if (cseq.method !== 'REGISTER') throw new Reject(400, 'CSeq method does not match')

    // §10.3 step 5: the AOR from To
    const toValue = req.get('to')
    if (toValue === undefined) throw new Reject(400, 'Missing To header')
    let toUri: SipUri
    try {
      const raw = parseNameAddr(toValue).uri
      const scheme = raw.slice(0, Math.max(0, raw.indexOf(':'))).toLowerCase()
      if (scheme !== 'sip' && scheme !== 'sips' && /^[a-z][a-z0-9+.-]*$/.test(scheme)) throw new SipParseError(416, 'Unsupported URI Scheme')
      toUri = parseUri(raw)
    } catch (err) {
      if (err instanceof SipParseError && err.status === 416) throw new Reject(416, 'Unsupported URI Scheme in To')
      throw new Reject(400, 'Invalid To header')
    }
    if (toUri.scheme !== 'sip' && toUri.scheme !== 'sips') throw new Reject(416, 'Unsupported URI Scheme in To')
    if (toUri.user === undefined || toUri.user === '') throw new Reject(400, 'No username in To URI')
    if (domains.size > 0 && !domains.has(toUri.host.toLowerCase())) throw new Reject(403, 'Domain not served')
    const aor = aorOf(toUri)

    // Expires header
    let headerExpires: number | undefined
    const expiresValue = req.get('expires')
    if (expiresValue !== undefined) {
      headerExpires = parseDelta(expiresValue)
      if (headerExpires === undefined) throw new Reject(400, 'Invalid Expires header')
    }

    // Contacts
    const contactValues = req.getAll('contact')
    const now = clock.now()
    if (contactValues.length === 0) return ok(req, aor, now, false)

    const parsed: NameAddr[] = []
    for (const v of contactValues) {
      try { parsed.push(parseNameAddr(v)) } catch { throw new Reject(400, 'Invalid Contact header') }
    }
    if (parsed.some(na => na.uri === '*')) {
      if (parsed.length > 1) throw new Reject(400, 'Invalid wildcard: * used with other contacts')
      if (headerExpires !== 0) throw new Reject(400, 'Invalid wildcard: * requires Expires: 0')
      const r = location.applyRegister(aor, { contacts: '*', callId, cseq: cseq.seq, now })
      if (!r.ok) throw locationReject(r.error!)
      log.debug({ aor, deleted: r.deleted }, 'REGISTER * removed all bindings')
      return ok(req, aor, now, false)
    }

    // Path (RFC 3327): stored with every binding, echoed when the UA supports it
    const path = req.getAll('path')
    for (const p of path) {
      try { parseUri(parseNameAddr(p).uri) } catch { throw new Reject(400, 'Invalid Path header') }
    }
    // RFC 5626 §6: outbound applies when the UA supports it and the first hop does: the registrar
    // itself (one Via) or an edge proxy that put `ob` in its Path URI. With one proxy the edge's Path
    // is the only one; with several we accept `ob` on the first or the last Path value.
    const viaCount = req.getAll('via').length
    let firstHopOb = viaCount <= 1 && path.length === 0
    if (!firstHopOb && path.length > 0) {
      const hasOb = (p: string): boolean => {
        try { return parseUri(parseNameAddr(p).uri).params.has('ob') } catch { return false }
      }
      firstHopOb = hasOb(path[0]!) || hasOb(path[path.length - 1]!)
    }
    const outboundOk = supported.has('outbound') && firstHopOb
    const userAgent = req.get('user-agent')
    const received: Destination = { protocol: source.protocol, address: source.address, port: source.port }
    if (source.connectionId !== undefined) received.connectionId = source.connectionId

    const updates: ContactUpdate[] = []
    let tooBrief = false
    let usedOutbound = false
    for (const na of parsed) {
      let uri: SipUri
      try { uri = parseUri(na.uri) } catch (err) {
        if (err instanceof SipParseError && err.status === 416) throw new Reject(416, 'Unsupported URI Scheme in Contact')
        throw new Reject(400, 'Invalid Contact URI')
      }
      let expires = headerExpires ?? defaultExpires
      const ep = na.params.get('expires')
      if (ep !== undefined) {
        const e = ep === null ? undefined : parseDelta(unquote(ep))
        if (e === undefined) throw new Reject(400, 'Invalid expires param in contact')
        expires = e
      }
      if (expires > 0 && expires < minExpires) tooBrief = true
      if (expires > maxExpires) expires = maxExpires
      let q = 1
      const qp = na.params.get('q')
      if (qp !== undefined) {
        const v = qp === null ? undefined : parseQ(qp)
        if (v === undefined) throw new Reject(400, 'Invalid q param in contact')
        q = v
      }
      const u: ContactUpdate = { contact: na.uri, key: contactUriKey(uri), contactHeader: formatNameAddr(na), expires, q, path, received }
      const inst = na.params.get('+sip.instance')
      if (inst !== undefined && inst !== null) u.instance = unquote(inst)
      const rp = na.params.get('reg-id')
      if (rp !== undefined && u.instance !== undefined) {
        const regId = rp === null ? undefined : parseDelta(rp)
        if (regId === undefined || regId < 1 || regId > 2 ** 31 - 1) throw new Reject(400, 'Invalid reg-id param in contact')
        // without outbound support on the path the reg-id is ignored: a plain RFC 3261 binding
        if (outboundOk) { u.regId = regId; usedOutbound = true }
      }
      if (opts.nodeId !== undefined) u.node = opts.nodeId
      if (userAgent !== undefined) u.userAgent = userAgent
      updates.push(u)
    }
    if (tooBrief) throw new Reject(423, 'Interval Too Brief', [['min-expires', String(minExpires)]])

    const r = location.applyRegister(aor, { contacts: updates, callId, cseq: cseq.seq, now })
    if (!r.ok) throw locationReject(r.error!)
    log.debug({ aor, inserted: r.inserted, updated: r.updated, deleted: r.deleted }, 'REGISTER applied')
    const res = ok(req, aor, now, usedOutbound && r.bindings.length > 0)
    if (path.length > 0 && supported.has('path')) for (const p of path) res.append('path', p)
    return res
  }

  function locationReject (error: RegisterError): Reject {
    const [status, reason] = LOCATION_ERRORS[error]
    return new Reject(status, reason)
  }

  /** 200 OK listing every current binding of `aor` (§10.3 step 8). */
  function ok (req: SipRequest, aor: string, now: number, outbound: boolean): SipResponse {
    const res = createResponse(req, 200, 'OK', toTag(req))
    for (const b of location.lookup(aor)) res.append('contact', contactValue(b, now))
    if (outbound) {
      res.append('require', 'outbound')
      if (opts.flowTimer !== undefined) res.append('flow-timer', String(opts.flowTimer))
    }
    res.append('supported', 'path, outbound')
    res.append('date', httpDate(now))
    return res
  }

  /** RFC 7231 IMF-fixdate of `now`, formatted once per second (every 200 carries a Date header). */
  function httpDate (now: number): string {
    const second = Math.floor(now / 1000)
    if (second !== dateSecond) { dateSecond = second; dateValue = new Date(second * 1000).toUTCString() }
    return dateValue
  }

  return { handle }
}
