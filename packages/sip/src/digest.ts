/**
 * HTTP Digest math for SIP (RFC 2617, RFC 7616, RFC 8760): H(A1), request-digest, with MD5,
 * SHA-256 and SHA-512-256 and their -sess variants, qop auth / auth-int / none (RFC 2069).
 * Pure functions (node:crypto hashing only, no I/O).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { SipParseError } from './uri.js'

export type DigestAlgorithm = 'MD5' | 'MD5-sess' | 'SHA-256' | 'SHA-256-sess' | 'SHA-512-256' | 'SHA-512-256-sess'

const HASHES: Record<string, string> = { md5: 'md5', 'sha-256': 'sha256', 'sha-512-256': 'sha512-256' }
const CANONICAL: Record<string, DigestAlgorithm> = {
  md5: 'MD5', 'md5-sess': 'MD5-sess', 'sha-256': 'SHA-256', 'sha-256-sess': 'SHA-256-sess',
  'sha-512-256': 'SHA-512-256', 'sha-512-256-sess': 'SHA-512-256-sess'
}

/** Canonical spelling of an algorithm token (case-insensitive; absent → MD5), or undefined if unknown. */
export function normalizeAlgorithm (alg: string | undefined): DigestAlgorithm | undefined {
  if (alg === undefined || alg === '') return 'MD5'
  const k = alg.toLowerCase()
  return Object.hasOwn(CANONICAL, k) ? CANONICAL[k] : undefined
}

function hashName (alg: string): string {
  const a = normalizeAlgorithm(alg)
  if (a === undefined) throw new SipParseError(400, 'Unsupported digest algorithm')
  return HASHES[a.toLowerCase().replace(/-sess$/, '')]!
}

/** Hex digest of `data` with the algorithm's hash function (the `-sess` suffix is ignored). */
export function digestHash (alg: DigestAlgorithm | string, data: string | Buffer): string {
  return createHash(hashName(alg)).update(data).digest('hex')
}

/** H(A1) = H(username:realm:password) — the value a server may store instead of the password. */
export function ha1 (alg: DigestAlgorithm | string, user: string, realm: string, password: string): string {
  return digestHash(alg, `${user}:${realm}:${password}`)
}

export interface DigestParams {
  algorithm: DigestAlgorithm | string
  /** H(username:realm:password) (see {@link ha1}); for `-sess` the session key is derived here. */
  ha1: string
  nonce: string
  /** 8 hex digits, e.g. `00000001` (required with qop). */
  nc?: string
  cnonce?: string
  /** `auth`, `auth-int`, or absent for RFC 2069 compatibility. */
  qop?: 'auth' | 'auth-int' | string
  method: string
  /** digest-uri as sent in the `uri` parameter. */
  uri: string
  /** Message body, for qop=auth-int (empty when absent). */
  body?: Buffer | string
}

/** The `response` value (request-digest) of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1. */
export function digestResponse (p: DigestParams): string {
  const alg = normalizeAlgorithm(p.algorithm)
  if (alg === undefined) throw new SipParseError(400, 'Unsupported digest algorithm')
  let key = p.ha1
  if (alg.endsWith('-sess')) {
    if (p.cnonce === undefined) throw new SipParseError(400, 'cnonce required for -sess algorithm')
    key = digestHash(alg, `${p.ha1}:${p.nonce}:${p.cnonce}`)
  }
  let a2 = `${p.method}:${p.uri}`
  if (p.qop === 'auth-int') a2 += ':' + digestHash(alg, p.body ?? '')
  else if (p.qop !== undefined && p.qop !== 'auth') throw new SipParseError(400, 'Unsupported qop')
  const ha2 = digestHash(alg, a2)
  if (p.qop === undefined) return digestHash(alg, `${key}:${p.nonce}:${ha2}`)
  if (p.nc === undefined || p.cnonce === undefined) throw new SipParseError(400, 'nc and cnonce required with qop')
  return digestHash(alg, `${key}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`)
}

/** Constant-time comparison of two hex digests (case-insensitive). */
export function digestEquals (a: string, b: string): boolean {
  const x = Buffer.from(a.toLowerCase(), 'latin1')
  const y = Buffer.from(b.toLowerCase(), 'latin1')
  return x.length === y.length && timingSafeEqual(x, y)
}
