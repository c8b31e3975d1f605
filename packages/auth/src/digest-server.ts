/**
 * Digest authentication at the super node (RFC 3261 §22, RFC 7616, RFC 8760).
 *
 * - REGISTER is challenged with `401` + `WWW-Authenticate`, other initial requests with `407` +
 *   `Proxy-Authenticate`; one challenge per offered algorithm (SHA-256 first, then MD5), qop="auth".
 * - Nonces are stateless: `<ts hex>.<random>.<node>.<HMAC-SHA256(secret, ts|random|node|realm)>` where
 *   `<node>` names the issuing node (8 characters of SHA-256 of its node id). Every super node sharing
 *   the secret recognises them, but only the issuer accepts them: the nc (nonce-count) replay window
 *   lives in the issuer's memory, so a request carrying another node's nonce (with a correct response)
 *   is answered with a fresh challenge of our own with `stale=true` (RFC 7616 §3.3: the client retries
 *   with the same credentials and our nonce, without asking its user). No request replayed to another
 *   super node can pass. An expired nonce with a correct response gets `stale=true` as well.
 * - nc values are tracked per nonce (bounded LRU) to refuse replays: a value already used, or more than
 *   `ncWindow` below the highest seen, is refused (`ncWindow: 1` = strictly increasing). A nonce issued
 *   before this server started (a restart) or forgotten by the LRU cannot be tracked: `stale=true`.
 * - ACK, CANCEL (RFC 3261 §9.2: never challenged), in-dialog requests (To tag) and OPTIONS pings to
 *   the server itself (Request-URI without user part) pass unchallenged.
 * - Failed authentications are counted per source IP and per user; past the limit the key is banned
 *   for a while (`403` + Retry-After by default).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import type { Clock, Logger, Rng, Source } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import {
  type SipRequest, type SipResponse, aorOf, createResponse, digestEquals, digestResponse, formatAuthHeader,
  getTag, normalizeAlgorithm, parseAuthHeader, parseNameAddr, parseUri, type AuthHeader
} from '@sipring/sip'
import type { Account, AccountStore } from './accounts.js'
import { FailureLimiter, LruMap } from './limiter.js'

export type ChallengeAlgorithm = 'SHA-256' | 'MD5' | 'SHA-512-256'

export interface DigestLimits {
  /** Failed authentications per source IP within `failureWindowMs` before a ban (default 10; 0 = off). */
  maxFailuresPerSource: number
  /** Failed authentications per username within `failureWindowMs` before a ban (default 20; 0 = off). */
  maxFailuresPerUser: number
  failureWindowMs: number
  /** Ban length (default 300 s). */
  banMs: number
  /** Status answered to a banned source/user (default 403; 429 or 503 also possible), with Retry-After. */
  banStatus: 403 | 429 | 503
  /** Sources/users tracked by the limiters, each (default 100,000). */
  maxTracked: number
  /** Nonces whose nc values are remembered (default 100,000). */
  maxTrackedNonces: number
  /** Accounts (and misses) cached (default 100,000). */
  maxCachedCredentials: number
  /** Longest accepted username / parameter value (default 256 characters). */
  maxParamLength: number
  /**
   * nc values accepted out of order below the highest seen for a nonce (1–32, default 32): a client
   * sending requests in parallel on one nonce may have them arrive reordered. 1 = strictly increasing.
   */
  ncWindow: number
}

export const DEFAULT_DIGEST_LIMITS: Readonly<DigestLimits> = Object.freeze({
  maxFailuresPerSource: 10,
  maxFailuresPerUser: 20,
  failureWindowMs: 60_000,
  banMs: 300_000,
  banStatus: 403,
  maxTracked: 100_000,
  maxTrackedNonces: 100_000,
  maxCachedCredentials: 100_000,
  maxParamLength: 256,
  ncWindow: 32
})

export interface DigestServerOptions {
  clock: Clock
  rng: Rng
  logger?: Logger
  accounts: Pick<AccountStore, 'getUser'> & Partial<Pick<AccountStore, 'onChange'>>
  /** The realm challenged and checked (usually the served domain). */
  realm: string
  /** Node secret for nonce HMACs (≥ 16 bytes); share it among super nodes. Default: 32 bytes from the Rng. */
  secret?: Uint8Array
  /**
   * This node's id (the overlay id of the super node), bound into every nonce it issues: only this
   * node accepts them, another node answers `stale=true` with its own. Default: a random token.
   */
  nodeId?: string
  /** Challenge algorithms in order of preference (default SHA-256, MD5). */
  algorithms?: ChallengeAlgorithm[]
  /** Nonce lifetime (default 300 s; then `stale=true`). */
  nonceTtlMs?: number
  /** Cached accounts live this long (default 60 s). */
  credentialTtlMs?: number
  /** Check the From (To for REGISTER) user against the authenticated username (default true). */
  checkIdentity?: boolean
  /** Answer OPTIONS addressed to the server itself (Request-URI without user) without a challenge (default true). */
  exemptServerOptions?: boolean
  /** Requests passing without authentication (e.g. from peer super nodes). */
  trusted?: (req: SipRequest, source: Source) => boolean
  limits?: Partial<DigestLimits>
}

export type AuthOutcome =
  /** Go on: `account` is set when the request carried valid credentials, absent for exempt requests. */
  | { action: 'pass', account?: Account }
  /** Answer with this response (challenge, 400, 403, ban). */
  | { action: 'respond', response: SipResponse }

export interface DigestStats {
  challenges: number
  authenticated: number
  exempt: number
  failures: number
  stale: number
  /** Correct credentials on a nonce issued by another node: answered with our own nonce, stale=true. */
  foreignNonces: number
  replays: number
  badNonces: number
  malformed: number
  forbidden: number
  bannedRejects: number
  bans: number
  cacheHits: number
  cacheMisses: number
  trackedNonces: number
}

interface NcState { max: number, mask: number, ts: number }

const NC_WINDOW = 32
/** `<ts>.<rand>.<node>.<mac>`; nonces of earlier versions had no `<node>` (recognised, answered stale). */
const NONCE_RE = /^([0-9a-f]{1,13})\.([0-9a-z]{12})\.(?:([A-Za-z0-9_-]{8})\.)?([A-Za-z0-9_-]{22})$/

/** The 8-character tag of a node id carried in its nonces. */
export function nonceNodeTag (nodeId: string): string {
  return createHash('sha256').update(nodeId).digest().subarray(0, 6).toString('base64url')
}

/** What a nonce says once its MAC checked out. */
interface NonceInfo { ts: number, ours: boolean }

/** Parsed credentials of one Authorization line. */
interface Credentials {
  username: string
  realm: string
  nonce: string
  uri: string
  response: string
  algorithm: ChallengeAlgorithm
  qop: string
  nc: string
  cnonce: string
}

class Refusal {
  constructor (readonly status: number, readonly reason: string) {}
}

export class DigestServer {
  readonly realm: string
  private readonly clock: Clock
  private readonly rng: Rng
  private readonly log: Logger
  private readonly secret: Buffer
  readonly nodeId: string
  private readonly nodeTag: string
  /** Nonces issued before this time (by an earlier run of this node) cannot be tracked: stale. */
  private readonly bootTs: number
  private readonly ncWindow: number
  private readonly algorithms: ChallengeAlgorithm[]
  private readonly nonceTtlMs: number
  private readonly credentialTtlMs: number
  private readonly checkIdentity: boolean
  private readonly exemptServerOptions: boolean
  private readonly trusted: ((req: SipRequest, source: Source) => boolean) | undefined
  readonly limits: Readonly<DigestLimits>
  private readonly accounts: DigestServerOptions['accounts']
  private readonly sources: FailureLimiter
  private readonly users: FailureLimiter
  private readonly ncs: LruMap<string, NcState>
  /** Highest timestamp among nonces evicted from `ncs`: an older unknown nonce may have been used. */
  private evictedTs = -1
  private readonly cache: LruMap<string, { account: Account | undefined, expires: number }>
  private readonly inflight = new Map<string, Promise<Account | undefined>>()
  private readonly unsubscribe: (() => void) | undefined
  private readonly dummyHa1: string
  private readonly counters = {
    challenges: 0, authenticated: 0, exempt: 0, failures: 0, stale: 0, foreignNonces: 0, replays: 0, badNonces: 0,
    malformed: 0, forbidden: 0, bannedRejects: 0, cacheHits: 0, cacheMisses: 0
  }

  constructor (o: DigestServerOptions) {
    if (typeof o.realm !== 'string' || o.realm.length === 0 || /["\\\r\n]/.test(o.realm)) throw new TypeError('DigestServer: realm must be a non-empty string without quotes')
    this.realm = o.realm
    this.clock = o.clock
    this.rng = o.rng.fork('digest')
    this.log = (o.logger ?? silentLogger).child({ component: 'auth' })
    const secret = o.secret ?? this.rng.bytes(32)
    if (secret.length < 16) throw new TypeError('DigestServer: secret must be at least 16 bytes')
    this.secret = Buffer.from(secret)
    this.nodeId = o.nodeId ?? this.rng.token(16)
    if (typeof this.nodeId !== 'string' || this.nodeId.length === 0) throw new TypeError('DigestServer: nodeId must be a non-empty string')
    this.nodeTag = nonceNodeTag(this.nodeId)
    this.bootTs = Math.floor(o.clock.now())
    this.algorithms = o.algorithms ?? ['SHA-256', 'MD5']
    if (this.algorithms.length === 0) throw new TypeError('DigestServer: at least one algorithm')
    this.nonceTtlMs = o.nonceTtlMs ?? 300_000
    this.credentialTtlMs = o.credentialTtlMs ?? 60_000
    this.checkIdentity = o.checkIdentity ?? true
    this.exemptServerOptions = o.exemptServerOptions ?? true
    this.trusted = o.trusted
    this.limits = Object.freeze({ ...DEFAULT_DIGEST_LIMITS, ...o.limits })
    const w = this.limits.ncWindow
    if (!Number.isInteger(w) || w < 1 || w > NC_WINDOW) throw new TypeError(`DigestServer: limits.ncWindow must be an integer in 1..${NC_WINDOW}`)
    this.ncWindow = w
    this.accounts = o.accounts
    const l = this.limits
    this.sources = new FailureLimiter({ clock: o.clock, maxFailures: l.maxFailuresPerSource, windowMs: l.failureWindowMs, banMs: l.banMs, maxEntries: l.maxTracked })
    this.users = new FailureLimiter({ clock: o.clock, maxFailures: l.maxFailuresPerUser, windowMs: l.failureWindowMs, banMs: l.banMs, maxEntries: l.maxTracked })
    this.ncs = new LruMap(l.maxTrackedNonces, (_k, v) => { if (v.ts > this.evictedTs) this.evictedTs = v.ts })
    this.cache = new LruMap(l.maxCachedCredentials)
    this.dummyHa1 = createHmac('sha256', this.secret).update('dummy-ha1').digest('hex')
    this.unsubscribe = o.accounts.onChange?.(c => {
      if (c.kind === 'user') this.invalidate(c.user, c.realm)
    })
  }

  /** Stop listening to account changes. */
  close (): void { this.unsubscribe?.() }

  /** Drop a cached account (after a password change, a deletion, …). */
  invalidate (user: string, realm: string): void {
    this.cache.delete(`${realm.toLowerCase()}\n${user}`)
  }

  stats (): DigestStats {
    return { ...this.counters, bans: this.sources.bans + this.users.bans, trackedNonces: this.ncs.size }
  }

  /** Current bans (operator view). */
  bans (): { sources: Array<{ key: string, remainingMs: number }>, users: Array<{ key: string, remainingMs: number }> } {
    return { sources: this.sources.activeBans(), users: this.users.activeBans() }
  }

  // ---------------------------------------------------------------- nonces

  /** A fresh nonce bound to the current time, this node and the shared secret. */
  newNonce (): string {
    const ts = Math.max(0, Math.floor(this.clock.now())).toString(16)
    const rand = this.rng.token(12).toLowerCase().replace(/[^0-9a-z]/g, '0').padEnd(12, '0').slice(0, 12)
    return `${ts}.${rand}.${this.nodeTag}.${this.mac(ts, rand, this.nodeTag)}`
  }

  private mac (ts: string, rand: string, node: string | undefined): string {
    const text = node === undefined ? `${ts}|${rand}|${this.realm}` : `${ts}|${rand}|${node}|${this.realm}`
    return createHmac('sha256', this.secret).update(text).digest().subarray(0, 16).toString('base64url')
  }

  /** undefined = no nonce of the overlay (forged, other secret); else its issue time and whether we issued it. */
  private nonceInfo (nonce: string): NonceInfo | undefined {
    const m = NONCE_RE.exec(nonce)
    if (m === null) return undefined
    const expect = Buffer.from(this.mac(m[1]!, m[2]!, m[3]), 'latin1')
    const got = Buffer.from(m[4]!, 'latin1')
    if (expect.length !== got.length || !timingSafeEqual(expect, got)) return undefined
    return { ts: parseInt(m[1]!, 16), ours: m[3] === this.nodeTag }
  }

  /**
   * Record `nc` for `nonce`: 'ok', 'replay' (already used, or too far behind), or 'untracked' (a nonce
   * older than one the LRU forgot, or issued before this server started: it may have been used).
   */
  private useNc (nonce: string, ts: number, nc: number): 'ok' | 'replay' | 'untracked' {
    const st = this.ncs.get(nonce)
    if (st === undefined) {
      if (ts <= this.evictedTs || ts < this.bootTs) return 'untracked'
      this.ncs.set(nonce, { max: nc, mask: 1, ts })
      return 'ok'
    }
    if (nc > st.max) {
      const shift = nc - st.max
      st.mask = shift >= NC_WINDOW ? 1 : ((st.mask << shift) | 1) >>> 0
      st.max = nc
      return 'ok'
    }
    const back = st.max - nc
    if (back >= this.ncWindow) return 'replay'
    const bit = (1 << back) >>> 0
    if ((st.mask & bit) !== 0) return 'replay'
    st.mask = (st.mask | bit) >>> 0
    return 'ok'
  }

  // ---------------------------------------------------------------- responses

  private challengeResponse (req: SipRequest, stale: boolean): SipResponse {
    const register = req.method === 'REGISTER'
    const res = createResponse(req, register ? 401 : 407, register ? 'Unauthorized' : 'Proxy Authentication Required', this.tag(req))
    const name = register ? 'WWW-Authenticate' : 'Proxy-Authenticate'
    const nonce = this.newNonce()
    for (const alg of this.algorithms) {
      const params = new Map<string, string>([['realm', this.realm], ['nonce', nonce], ['algorithm', alg], ['qop', 'auth']])
      if (stale) params.set('stale', 'true')
      res.append(name, formatAuthHeader({ scheme: 'Digest', params }, ['algorithm', 'stale']))
    }
    this.counters.challenges++
    return res
  }

  private tag (req: SipRequest): string | undefined {
    const to = req.get('to')
    if (to !== undefined) {
      try { if (getTag(to) !== undefined) return undefined } catch {}
    }
    return this.rng.token(10)
  }

  private refuse (req: SipRequest, status: number, reason: string, retryAfterMs?: number): AuthOutcome {
    const res = createResponse(req, status, reason, this.tag(req))
    if (retryAfterMs !== undefined) res.set('Retry-After', String(Math.max(1, Math.ceil(retryAfterMs / 1000))))
    return { action: 'respond', response: res }
  }

  private banned (req: SipRequest, ms: number, what: string): AuthOutcome {
    this.counters.bannedRejects++
    const status = this.limits.banStatus
    const reason = status === 429 ? 'Too Many Requests' : status === 503 ? 'Service Unavailable' : `Forbidden (too many failed authentications${what})`
    return this.refuse(req, status, reason, ms)
  }

  // ---------------------------------------------------------------- the check

  /** Is this request exempt from authentication (ACK, CANCEL, in-dialog, OPTIONS ping to the node, trusted)? */
  exempt (req: SipRequest, source: Source): boolean {
    if (req.method === 'ACK' || req.method === 'CANCEL') return true
    // a keep-alive / monitoring OPTIONS to the server itself (no user part) carries nobody's identity
    if (req.method === 'OPTIONS' && this.exemptServerOptions && !/^sips?:[^@;?]+@/i.test(req.uri)) return true
    const to = req.get('to')
    if (to !== undefined && req.method !== 'REGISTER') {
      try { if (getTag(to) !== undefined) return true } catch {}
    }
    return this.trusted?.(req, source) ?? false
  }

  /**
   * Authenticate one request. On `pass` with an account, the credentials for our realm have been
   * removed from the request (they must not be forwarded).
   */
  async authenticate (req: SipRequest, source: Source): Promise<AuthOutcome> {
    if (this.exempt(req, source)) { this.counters.exempt++; return { action: 'pass' } }
    const ip = source.address
    const ipBan = this.sources.banned(ip)
    if (ipBan > 0) return this.banned(req, ipBan, '')

    const headerName = req.method === 'REGISTER' ? 'authorization' : 'proxy-authorization'
    let creds: Credentials | undefined
    try {
      creds = this.findCredentials(req, headerName)
    } catch (err) {
      if (err instanceof Refusal) {
        this.counters.malformed++
        return this.refuse(req, err.status, err.reason)
      }
      throw err
    }
    if (creds === undefined) return { action: 'respond', response: this.challengeResponse(req, false) }

    const userBan = this.users.banned(creds.username)
    if (userBan > 0) return this.banned(req, userBan, ' for this user')

    const nonce = this.nonceInfo(creds.nonce)
    if (nonce === undefined) {
      this.counters.badNonces++
      return { action: 'respond', response: this.challengeResponse(req, false) }
    }
    if (!uriMatches(creds.uri, req.uri)) {
      this.counters.malformed++
      return this.refuse(req, 400, 'Bad Request (digest uri does not match the Request-URI)')
    }

    let account: Account | undefined
    try {
      account = await this.lookup(creds.username)
    } catch {
      // the accounts are out of reach (no core node answered, nothing cached): not the user's fault
      return this.refuse(req, 503, 'Service Unavailable (accounts unreachable)', 5000)
    }
    // an unknown user costs the same hashing as a known one (no timing oracle for user names)
    const ha1 = (account === undefined ? undefined : ha1For(account, creds.algorithm)) ?? this.dummyHa1
    const expected = digestResponse({
      algorithm: creds.algorithm, ha1, nonce: creds.nonce, nc: creds.nc, cnonce: creds.cnonce, qop: creds.qop,
      method: req.method, uri: creds.uri, body: req.body
    })
    const ok = account !== undefined && ha1 !== this.dummyHa1 && digestEquals(expected, creds.response)
    if (!ok) return this.failure(req, ip, creds.username, account === undefined ? 'unknown user' : 'wrong response')

    const now = this.clock.now()
    const ts = nonce.ts
    if (now - ts > this.nonceTtlMs || ts - now > 60_000) {
      this.counters.stale++
      return { action: 'respond', response: this.challengeResponse(req, true) }
    }
    if (!nonce.ours) {
      // another super node's nonce: its nc window lives there, so it is never accepted here (a replay
      // of a request authenticated there would pass); the client retries at once with our nonce
      this.counters.foreignNonces++
      this.log.debug({ user: creds.username, source: ip }, 'digest nonce issued by another node; challenging with stale=true')
      return { action: 'respond', response: this.challengeResponse(req, true) }
    }
    const used = this.useNc(creds.nonce, ts, parseInt(creds.nc, 16))
    if (used === 'untracked') {
      this.counters.stale++
      return { action: 'respond', response: this.challengeResponse(req, true) }
    }
    if (used === 'replay') {
      this.counters.replays++
      this.log.debug({ user: creds.username, source: ip, nc: creds.nc }, 'digest nc replayed; challenging again')
      return { action: 'respond', response: this.challengeResponse(req, false) }
    }
    if (!account!.enabled) {
      this.counters.forbidden++
      return this.refuse(req, 403, 'Forbidden (account disabled)')
    }
    if (this.checkIdentity) {
      const hdr = req.method === 'REGISTER' ? 'to' : 'from'
      const user = identityUser(req.get(hdr))
      if (user !== account!.user) {
        this.counters.forbidden++
        this.log.info({ user: account!.user, [hdr]: req.get(hdr), source: ip }, 'identity does not match the credentials')
        return this.refuse(req, 403, `Forbidden (${hdr === 'to' ? 'To' : 'From'} user does not match the authenticated user)`)
      }
    }
    this.users.reset(account!.user)
    this.counters.authenticated++
    this.strip(req)
    return { action: 'pass', account: account! }
  }

  private failure (req: SipRequest, ip: string, user: string, why: string): AuthOutcome {
    this.counters.failures++
    const ipBan = this.sources.fail(ip)
    const userBan = this.users.fail(user)
    this.log.info({ user, source: ip, why }, 'digest authentication failed')
    if (ipBan > 0) {
      this.log.warn({ source: ip, banMs: ipBan }, 'source banned after repeated authentication failures')
      return this.banned(req, ipBan, '')
    }
    if (userBan > 0) {
      this.log.warn({ user, banMs: userBan }, 'user banned after repeated authentication failures')
      return this.banned(req, userBan, ' for this user')
    }
    return { action: 'respond', response: this.challengeResponse(req, false) }
  }

  /** Credentials for our realm in the request's Authorization / Proxy-Authorization lines. */
  private findCredentials (req: SipRequest, headerName: string): Credentials | undefined {
    const max = this.limits.maxParamLength
    for (const line of req.getAll(headerName)) {
      let h: AuthHeader
      try {
        h = parseAuthHeader(line)
      } catch {
        throw new Refusal(400, `Bad Request (malformed ${headerName === 'authorization' ? 'Authorization' : 'Proxy-Authorization'} header)`)
      }
      if (h.scheme.toLowerCase() !== 'digest') continue
      const realm = h.params.get('realm')
      if (realm === undefined || realm.toLowerCase() !== this.realm.toLowerCase()) continue
      const p = (k: string): string => {
        const v = h.params.get(k)
        if (v === undefined || v.length === 0) throw new Refusal(400, `Bad Request (digest credentials without ${k})`)
        if (v.length > max) throw new Refusal(400, `Bad Request (digest ${k} too long)`)
        return v
      }
      const username = p('username')
      const nonce = p('nonce')
      const uri = p('uri')
      const response = p('response')
      const alg = normalizeAlgorithm(h.params.get('algorithm'))
      if (alg === undefined || !(this.algorithms as string[]).includes(alg)) throw new Refusal(400, `Bad Request (digest algorithm ${h.params.get('algorithm') ?? ''} not offered)`)
      const qop = h.params.get('qop')
      if (qop === undefined) throw new Refusal(400, 'Bad Request (digest credentials without qop; qop=auth is required)')
      if (qop !== 'auth' && qop !== 'auth-int') throw new Refusal(400, 'Bad Request (unsupported qop)')
      const nc = p('nc')
      if (!/^[0-9a-fA-F]{8}$/.test(nc) || parseInt(nc, 16) === 0) throw new Refusal(400, 'Bad Request (digest nc must be 8 hex digits, not 0)')
      const cnonce = p('cnonce')
      if (!/^[0-9a-fA-F]+$/.test(response)) throw new Refusal(400, 'Bad Request (digest response is not hex)')
      return { username, realm, nonce, uri, response, algorithm: alg as ChallengeAlgorithm, qop, nc, cnonce }
    }
    return undefined
  }

  /** Remove our realm's credentials (RFC 3261 §22.3: a proxy consumes the credentials for its realm). */
  private strip (req: SipRequest): void {
    req.headers = req.headers.filter(h => {
      if (h.name !== 'authorization' && h.name !== 'proxy-authorization') return true
      try {
        const a = parseAuthHeader(h.value)
        return (a.params.get('realm') ?? '').toLowerCase() !== this.realm.toLowerCase()
      } catch {
        return true
      }
    })
  }

  private async lookup (user: string): Promise<Account | undefined> {
    const key = `${this.realm.toLowerCase()}\n${user}`
    const now = this.clock.now()
    const c = this.cache.get(key)
    if (c !== undefined && c.expires > now) { this.counters.cacheHits++; return c.account }
    this.counters.cacheMisses++
    let p = this.inflight.get(key)
    if (p === undefined) {
      p = this.accounts.getUser(user, this.realm).then(
        (account) => {
          this.cache.set(key, { account, expires: this.clock.now() + this.credentialTtlMs })
          return account
        },
        (err: unknown) => {
          this.log.error({ user, err: (err as Error).message }, 'account lookup failed')
          if ((err as { code?: unknown }).code === 'EUNAVAILABLE') throw err // answered 503, not counted as a failure
          return undefined
        }
      ).finally(() => { this.inflight.delete(key) })
      this.inflight.set(key, p)
    }
    return await p
  }
}

function ha1For (a: Account, alg: ChallengeAlgorithm): string | undefined {
  switch (alg) {
    case 'MD5': return a.ha1.md5
    case 'SHA-256': return a.ha1.sha256
    case 'SHA-512-256': return a.ha1.sha512_256
  }
}

/** Does the digest `uri` name the Request-URI? (same scheme, user, host and port; parameters ignored) */
function uriMatches (digestUri: string, requestUri: string): boolean {
  if (digestUri === requestUri) return true
  try {
    const a = parseUri(digestUri)
    const b = parseUri(requestUri)
    return aorOf(a) === aorOf(b)
  } catch {
    return false
  }
}

/** User part of a From/To header value, or undefined. */
function identityUser (v: string | undefined): string | undefined {
  if (v === undefined) return undefined
  try {
    return parseUri(parseNameAddr(v).uri).user
  } catch {
    return undefined
  }
}

export function createDigestServer (o: DigestServerOptions): DigestServer {
  return new DigestServer(o)
}
