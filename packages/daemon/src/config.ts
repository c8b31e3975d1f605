/**
 * sipring daemon configuration: embedded defaults, then a config file (YAML or JSON), then
 * `SIPRING_*` environment variables, then command-line flags. Every value is validated with a
 * precise message (`sip[1].port: expected 1–65535 (0 = any free port), got 70000`); unknown keys,
 * variables and flags are rejected.
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { parse as parseYaml } from 'yaml'
import type { TransportProtocol } from '@sipring/interface'
import { LOG_LEVELS, type LogLevel } from './system.js'

export interface ListenerConfig {
  protocol: TransportProtocol
  /** IP literal to bind, without brackets (`0.0.0.0`, `::`, `127.0.0.1`). */
  host: string
  /** 1–65535, or 0 for any free port. */
  port: number
}

export interface HostPort { host: string, port: number }

export interface SipringConfig {
  /** Directory of the classic-level database (created when missing). */
  dataDir: string
  /** SIP listeners. */
  sip: ListenerConfig[]
  /** Admin HTTP API address, or null when disabled. */
  admin: HostPort | null
  /** Domains this node is responsible for; empty = any. */
  domains: string[]
  minExpires: number
  maxExpires: number
  defaultExpires: number
  maxContactsPerAor: number
  logLevel: LogLevel
  /** Certificate and key (PEM file paths) for `tls` and `wss` listeners. */
  tls: { cert?: string, key?: string }
  /** Node id (default: derived at start and kept in the data dir). */
  nodeId?: string
  /** Insert Record-Route in dialog-creating requests (default true). */
  recordRoute: boolean
  /**
   * Host (IP or name) written in Via / Record-Route for listeners bound to 0.0.0.0 or ::
   * (default: the host's first non-internal IPv4 address, else 127.0.0.1).
   */
  advertise?: string
  /**
   * The overlay (super nodes sharing one location service over libp2p). Enabled by `overlay: true`,
   * or implicitly by `join` or `overlayListen`. Off by default: a single node as before.
   */
  overlay: boolean
  /** libp2p listen multiaddrs (default, when enabled: /ip4/0.0.0.0/tcp/7070 and /ip6/::/tcp/7070). */
  overlayListen: string[]
  /** Multiaddrs announced to peers instead of the listen addresses (port forwarding). */
  overlayAnnounce: string[]
  /** Multiaddrs of running super nodes to join, each ending with /p2p/<peerId>. */
  join: string[]
  /** Replicas per AOR on the ring (R, default 3; write/read quorum = R/2 + 1). */
  replicas: number
  /** ms a REGISTER that changes bindings waits for the overlay write quorum before `503` + Retry-After (default 2000). */
  overlayAckTimeout: number
  /** ms this node trusts its own replica of an AOR only it wrote instead of a quorum pre-read (default 3,600,000; 0 = never). */
  overlayTrustLocalFor: number
  /**
   * The overlay's core PUBLIC key (base64, as printed by `sipring overlay init-ca`, or a file holding it).
   * When set, admission is enforced: only peers with a credential signed by it are admitted. Unset: open overlay.
   */
  overlayCa?: string
  /** This node's credential file (`sipring node enroll`); required with `overlayCa`. */
  overlayCredential?: string
  /** Digest authentication of clients; accounts live in `<dataDir>/accounts`. */
  auth: AuthConfig
  /**
   * `super` (default): a super node (SIP registrar + proxy). `core`: a core node — no SIP listeners; it
   * holds the accounts, replicated with the other core nodes (`coreNodes`), served over the overlay.
   */
  role: NodeRole
  /**
   * Core nodes (multiaddrs ending with /p2p/<peerId>). On a super node: where accounts are read (and
   * admin writes forwarded) instead of the local data dir. On a core node: the other core nodes.
   */
  coreNodes: string[]
  /**
   * How a call to a group AOR is forked: `distributed` (one fork request per owner super node, each
   * forking to its own members) or `centralized` (this node forks to every member contact). Unset: the
   * node's default (distributed with an overlay, else centralized).
   */
  groupForking?: GroupForking
  /** Branches (member contacts) one group call forks to at most (default 64). */
  groupMaxBranches: number
  /** Hunt groups: seconds one member rings before the next (default 20; 0 = until it answers). */
  groupMemberTimeout: number
  /** Nesting depth of groups in groups; the called group is level 1 (default 3). */
  groupMaxDepth: number
  /** Requests processed at once before new ones get 503 + Retry-After (default 2000; 0 = no bound). */
  overloadMaxInFlight: number
  /** Retry-After seconds of that 503 (default 5). */
  overloadRetryAfter: number
  /**
   * Core nodes: seconds a deleted user/group's tombstone is kept at least (default 604800 = 7 days,
   * 3600–31536000); it is then dropped once every other core node has confirmed it.
   */
  accountsTombstoneTtl: number
}

export type GroupForking = 'distributed' | 'centralized'
export const GROUP_FORKING: readonly GroupForking[] = ['distributed', 'centralized']

export interface AuthConfig {
  /** Challenge every initial request (default false). */
  enabled: boolean
  /** Realm challenged and of new users (default: the first domain). */
  realm?: string
  /** Nonce lifetime in seconds (default 300). */
  nonceTtl: number
  /** Failed authentications per source IP / per user within `failureWindow` seconds before a ban (0 = off). */
  maxFailuresPerSource: number
  maxFailuresPerUser: number
  failureWindow: number
  /** Ban length in seconds (default 300). */
  banTime: number
  /** Status sent to a banned source or user: 403 (default), 429 or 503, with Retry-After. */
  banStatus: 403 | 429 | 503
  /** Challenges offered, in order (default SHA-256, MD5; clients such as SIPp 3.6 use only the first). */
  algorithms: AuthAlgorithm[]
}

export type NodeRole = 'super' | 'core'
export const NODE_ROLES: readonly NodeRole[] = ['super', 'core']

export type AuthAlgorithm = 'SHA-256' | 'MD5' | 'SHA-512-256'
export const AUTH_ALGORITHMS: readonly AuthAlgorithm[] = ['SHA-256', 'MD5', 'SHA-512-256']

export const AUTH_KEYS = ['enabled', 'realm', 'algorithms', 'nonceTtl', 'maxFailuresPerSource', 'maxFailuresPerUser', 'failureWindow', 'banTime', 'banStatus'] as const

export const DEFAULT_OVERLAY_LISTEN: readonly string[] = Object.freeze(['/ip4/0.0.0.0/tcp/7070', '/ip6/::/tcp/7070'])

/** Is the overlay on for this config? */
export function overlayEnabled (c: SipringConfig): boolean {
  return c.overlay || c.join.length > 0 || c.overlayListen.length > 0 || c.coreNodes.length > 0 || c.role === 'core'
}

export const PROTOCOLS: readonly TransportProtocol[] = ['udp', 'tcp', 'tls', 'ws', 'wss']

export function defaultConfig (): SipringConfig {
  return {
    dataDir: './data',
    sip: [
      { protocol: 'udp', host: '0.0.0.0', port: 5060 },
      { protocol: 'tcp', host: '0.0.0.0', port: 5060 },
      { protocol: 'udp', host: '::', port: 5060 },
      { protocol: 'tcp', host: '::', port: 5060 }
    ],
    admin: { host: '127.0.0.1', port: 5080 },
    domains: [],
    minExpires: 60,
    maxExpires: 3600,
    defaultExpires: 3600,
    maxContactsPerAor: 10,
    logLevel: 'info',
    tls: {},
    recordRoute: true,
    overlay: false,
    overlayListen: [],
    overlayAnnounce: [],
    join: [],
    replicas: 3,
    overlayAckTimeout: 2000,
    overlayTrustLocalFor: 3_600_000,
    role: 'super',
    coreNodes: [],
    groupMaxBranches: 64,
    groupMemberTimeout: 20,
    groupMaxDepth: 3,
    overloadMaxInFlight: 2000,
    overloadRetryAfter: 5,
    accountsTombstoneTtl: 604_800,
    auth: { enabled: false, nonceTtl: 300, maxFailuresPerSource: 10, maxFailuresPerUser: 20, failureWindow: 60, banTime: 300, banStatus: 403, algorithms: ['SHA-256', 'MD5'] }
  }
}

/** A configuration problem; `issues` are `path: message` lines, `message` joins them. */
export class ConfigError extends Error {
  constructor (readonly issues: string[]) {
    super(issues.join('; '))
    this.name = 'ConfigError'
  }
}

/** A command-line usage problem (unknown flag, missing value). */
export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

// ------------------------------------------------------------------ value checkers

const MAX_INT32 = 2 ** 31 - 1

type Issues = string[]

function show (v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  return String(v)
}

/** Integer from a number, or from a string of digits (env vars and flags are strings). */
function checkInt (v: unknown, path: string, min: number, max: number, issues: Issues, rangeText?: string): number | undefined {
  let n: number | undefined
  if (typeof v === 'number') n = v
  else if (typeof v === 'string' && /^\s*-?\d+\s*$/.test(v)) n = Number(v.trim())
  const range = rangeText ?? `${min}–${max}`
  if (n === undefined || !Number.isInteger(n)) {
    issues.push(`${path}: expected an integer ${range}, got ${show(v)}`)
    return undefined
  }
  if (n < min || n > max) {
    issues.push(`${path}: expected ${range}, got ${n}`)
    return undefined
  }
  return n
}

function checkPort (v: unknown, path: string, issues: Issues): number | undefined {
  return checkInt(v, path, 0, 65535, issues, '1–65535 (0 = any free port)')
}

function checkString (v: unknown, path: string, issues: Issues): string | undefined {
  if (typeof v !== 'string' || v.trim() === '') {
    issues.push(`${path}: expected a non-empty string, got ${show(v)}`)
    return undefined
  }
  return v.trim()
}

function checkBool (v: unknown, path: string, issues: Issues): boolean | undefined {
  if (typeof v === 'boolean') return v
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase()
    if (['true', '1', 'yes', 'on'].includes(s)) return true
    if (['false', '0', 'no', 'off'].includes(s)) return false
  }
  issues.push(`${path}: expected true or false, got ${show(v)}`)
  return undefined
}

function stripBrackets (h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h
}

function checkIp (v: unknown, path: string, issues: Issues): string | undefined {
  const s = checkString(v, path, issues)
  if (s === undefined) return undefined
  const h = stripBrackets(s)
  if (isIP(h) === 0) {
    issues.push(`${path}: expected an IPv4 or IPv6 address, got ${show(v)}`)
    return undefined
  }
  return h
}

const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i

function checkDomain (v: unknown, path: string, issues: Issues): string | undefined {
  const s = checkString(v, path, issues)
  if (s === undefined) return undefined
  const h = stripBrackets(s)
  if (isIP(h) !== 0) return h.toLowerCase()
  if (!HOSTNAME.test(s)) {
    issues.push(`${path}: expected a domain name or IP address, got ${show(v)}`)
    return undefined
  }
  return s.toLowerCase().replace(/\.$/, '')
}

/** `host:port` with IPv6 in brackets (`[::1]:5080`). */
function splitHostPort (s: string): { host: string, port: string } | undefined {
  const m = /^\[([^\]]+)\]:(\S+)$/.exec(s) ?? /^([^:[\]]+):(\S+)$/.exec(s)
  if (m === null) return undefined
  return { host: m[1]!, port: m[2]! }
}

function checkHostPort (v: unknown, path: string, issues: Issues): HostPort | undefined {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const o = v as Record<string, unknown>
    const n0 = issues.length
    rejectUnknown(o, ['host', 'port'], path, issues)
    const host = checkIp(o.host, `${path}.host`, issues)
    const port = checkPort(o.port, `${path}.port`, issues)
    if (issues.length > n0 || host === undefined || port === undefined) return undefined
    return { host, port }
  }
  if (typeof v !== 'string') {
    issues.push(`${path}: expected host:port (e.g. 127.0.0.1:5080 or [::1]:5080), got ${show(v)}`)
    return undefined
  }
  const hp = splitHostPort(v.trim())
  if (hp === undefined) {
    issues.push(`${path}: expected host:port (e.g. 127.0.0.1:5080 or [::1]:5080), got ${show(v)}`)
    return undefined
  }
  const host = checkIp(hp.host, `${path}.host`, issues)
  const port = checkPort(hp.port, `${path}.port`, issues)
  if (host === undefined || port === undefined) return undefined
  return { host, port }
}

function checkAdmin (v: unknown, path: string, issues: Issues): HostPort | null | undefined {
  if (v === null || v === false || (typeof v === 'string' && ['off', 'none', 'false', 'disabled'].includes(v.trim().toLowerCase()))) return null
  return checkHostPort(v, path, issues)
}

/** A listener: `udp:0.0.0.0:5060`, `tcp:[::]:5060`, or `{ protocol, host, port }`. */
function checkListener (v: unknown, path: string, issues: Issues): ListenerConfig | undefined {
  let proto: unknown, host: unknown, port: unknown
  if (typeof v === 'string') {
    const s = v.trim()
    const i = s.indexOf(':')
    const hp = i > 0 ? splitHostPort(s.slice(i + 1)) : undefined
    if (hp === undefined) {
      issues.push(`${path}: expected protocol:host:port (e.g. udp:0.0.0.0:5060 or tcp:[::]:5060), got ${show(v)}`)
      return undefined
    }
    proto = s.slice(0, i).toLowerCase(); host = hp.host; port = hp.port
  } else if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const o = v as Record<string, unknown>
    rejectUnknown(o, ['protocol', 'host', 'port'], path, issues)
    proto = o.protocol; host = o.host; port = o.port
  } else {
    issues.push(`${path}: expected protocol:host:port or { protocol, host, port }, got ${show(v)}`)
    return undefined
  }
  let protocol: TransportProtocol | undefined
  if (typeof proto === 'string' && (PROTOCOLS as string[]).includes(proto.toLowerCase())) protocol = proto.toLowerCase() as TransportProtocol
  else issues.push(`${path}.protocol: expected one of ${PROTOCOLS.join(', ')}, got ${show(proto)}`)
  const h = checkIp(host, `${path}.host`, issues)
  const p = checkPort(port, `${path}.port`, issues)
  if (protocol === undefined || h === undefined || p === undefined) return undefined
  return { protocol, host: h, port: p }
}

const MULTIADDR = /^\/(ip4|ip6|dns|dns4|dns6|memory)\/[^\s]+$/
const P2P_SUFFIX = /\/p2p\/[1-9A-HJ-NP-Za-km-z]{20,100}$/

/** A libp2p multiaddr (light syntax check; libp2p parses it fully at start). */
function checkMultiaddr (v: unknown, path: string, issues: Issues): string | undefined {
  const s = checkString(v, path, issues)
  if (s === undefined) return undefined
  if (!MULTIADDR.test(s) || s.length > 1024) {
    issues.push(`${path}: expected a multiaddr such as /ip4/0.0.0.0/tcp/7070 or /ip6/::/tcp/7070, got ${show(v)}`)
    return undefined
  }
  return s
}

/** A join address: a multiaddr ending with the peer's id (`sipring ring` / the start log shows it). */
function checkJoin (v: unknown, path: string, issues: Issues): string | undefined {
  const s = checkMultiaddr(v, path, issues)
  if (s === undefined) return undefined
  if (!P2P_SUFFIX.test(s)) {
    issues.push(`${path}: expected a multiaddr ending with /p2p/<peerId> (e.g. /ip4/192.0.2.10/tcp/7070/p2p/12D3KooW...), got ${show(v)}`)
    return undefined
  }
  return s
}

function checkList<T> (v: unknown, path: string, issues: Issues, item: (x: unknown, p: string, i: Issues) => T | undefined): T[] | undefined {
  const arr = typeof v === 'string' ? v.split(',').map(s => s.trim()).filter(s => s !== '') : v
  if (!Array.isArray(arr)) {
    issues.push(`${path}: expected a list, got ${show(v)}`)
    return undefined
  }
  const out: T[] = []
  let ok = true
  arr.forEach((x, i) => {
    const r = item(x, `${path}[${i}]`, issues)
    if (r === undefined) ok = false
    else out.push(r)
  })
  return ok ? out : undefined
}

function rejectUnknown (o: Record<string, unknown>, known: string[], path: string, issues: Issues): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k)) issues.push(`${path === '' ? '' : path + '.'}${k}: unknown key (known: ${known.join(', ')})`)
  }
}

// ------------------------------------------------------------------ layers

/** The keys of a config file (and of the layers built from env and flags). */
export const CONFIG_KEYS = [
  'dataDir', 'sip', 'admin', 'domains', 'minExpires', 'maxExpires', 'defaultExpires',
  'maxContactsPerAor', 'logLevel', 'tls', 'nodeId', 'recordRoute', 'advertise',
  'overlay', 'overlayListen', 'overlayAnnounce', 'join', 'replicas', 'auth', 'overlayCa', 'overlayCredential', 'role', 'coreNodes',
  'groupForking', 'groupMaxBranches', 'groupMemberTimeout', 'groupMaxDepth',
  'overloadMaxInFlight', 'overloadRetryAfter', 'overlayAckTimeout', 'overlayTrustLocalFor', 'accountsTombstoneTtl'
] as const
type Key = typeof CONFIG_KEYS[number]

/** A partial, not yet validated layer: key → raw value, plus where each key came from. */
export interface Layer {
  values: Partial<Record<Key, unknown>>
  /** e.g. `config file ./sipring.yaml`, `SIPRING_SIP`, `--sip`. Used in messages. */
  origin: Partial<Record<Key, string>>
}

/** Validate one layer's values into a partial config. Issues are prefixed by the key path. */
function validateLayer (layer: Layer, issues: Issues): Partial<SipringConfig> {
  const out: Partial<SipringConfig> = {}
  const v = layer.values
  for (const key of Object.keys(v) as Key[]) {
    const local: Issues = []
    const raw = v[key]
    switch (key) {
      case 'dataDir': { const s = checkString(raw, key, local); if (s !== undefined) out.dataDir = s; break }
      case 'sip': {
        const l = checkList(raw, key, local, checkListener)
        if (l !== undefined && l.length === 0) local.push('sip: expected at least one listener')
        else if (l !== undefined) out.sip = l
        break
      }
      case 'admin': { const a = checkAdmin(raw, key, local); if (a !== undefined) out.admin = a; break }
      case 'domains': { const d = checkList(raw, key, local, checkDomain); if (d !== undefined) out.domains = d; break }
      case 'minExpires': case 'maxExpires': case 'defaultExpires': {
        const n = checkInt(raw, key, 1, MAX_INT32, local); if (n !== undefined) out[key] = n; break
      }
      case 'maxContactsPerAor': { const n = checkInt(raw, key, 1, 1000, local); if (n !== undefined) out.maxContactsPerAor = n; break }
      case 'logLevel': {
        const s = typeof raw === 'string' ? raw.trim().toLowerCase() : raw
        if (typeof s === 'string' && (LOG_LEVELS as string[]).includes(s)) out.logLevel = s as LogLevel
        else local.push(`logLevel: expected one of ${LOG_LEVELS.join(', ')}, got ${show(raw)}`)
        break
      }
      case 'tls': {
        if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) { local.push(`tls: expected { cert, key }, got ${show(raw)}`); break }
        const o = raw as Record<string, unknown>
        rejectUnknown(o, ['cert', 'key'], 'tls', local)
        const tls: { cert?: string, key?: string } = {}
        if (o.cert !== undefined) { const s = checkString(o.cert, 'tls.cert', local); if (s !== undefined) tls.cert = s }
        if (o.key !== undefined) { const s = checkString(o.key, 'tls.key', local); if (s !== undefined) tls.key = s }
        out.tls = tls
        break
      }
      case 'nodeId': {
        const s = checkString(raw, key, local)
        if (s !== undefined && !/^[A-Za-z0-9._~-]{1,128}$/.test(s)) local.push(`nodeId: expected 1–128 characters of A-Z a-z 0-9 . _ ~ -, got ${show(raw)}`)
        else if (s !== undefined) out.nodeId = s
        break
      }
      case 'advertise': { const d = checkDomain(raw, key, local); if (d !== undefined) out.advertise = d; break }
      case 'recordRoute': { const b = checkBool(raw, key, local); if (b !== undefined) out.recordRoute = b; break }
      case 'overlay': { const b = checkBool(raw, key, local); if (b !== undefined) out.overlay = b; break }
      case 'overlayListen': case 'overlayAnnounce': { const l = checkList(raw, key, local, checkMultiaddr); if (l !== undefined) out[key] = l; break }
      case 'join': { const l = checkList(raw, key, local, checkJoin); if (l !== undefined) out.join = l; break }
      case 'coreNodes': { const l = checkList(raw, key, local, checkJoin); if (l !== undefined) out.coreNodes = l; break }
      case 'role': {
        const s = typeof raw === 'string' ? raw.trim().toLowerCase() : raw
        if (typeof s === 'string' && (NODE_ROLES as string[]).includes(s)) out.role = s as NodeRole
        else local.push(`role: expected one of ${NODE_ROLES.join(', ')}, got ${show(raw)}`)
        break
      }
      case 'replicas': { const n = checkInt(raw, key, 1, 16, local); if (n !== undefined) out.replicas = n; break }
      case 'overlayAckTimeout': { const n = checkInt(raw, key, 1, 60_000, local, '1–60000 ms'); if (n !== undefined) out.overlayAckTimeout = n; break }
      case 'overlayTrustLocalFor': { const n = checkInt(raw, key, 0, 86_400_000, local, '0–86400000 ms (0 = never)'); if (n !== undefined) out.overlayTrustLocalFor = n; break }
      case 'overlayCa': case 'overlayCredential': { const s = checkString(raw, key, local); if (s !== undefined) out[key] = s; break }
      case 'auth': { const a = checkAuth(raw, local); if (a !== undefined) out.auth = a as AuthConfig; break }
      case 'groupForking': {
        const s = typeof raw === 'string' ? raw.trim().toLowerCase() : raw
        if (typeof s === 'string' && (GROUP_FORKING as string[]).includes(s)) out.groupForking = s as GroupForking
        else local.push(`groupForking: expected one of ${GROUP_FORKING.join(', ')}, got ${show(raw)}`)
        break
      }
      case 'groupMaxBranches': { const n = checkInt(raw, key, 1, 10_000, local); if (n !== undefined) out.groupMaxBranches = n; break }
      case 'groupMemberTimeout': { const n = checkInt(raw, key, 0, 86_400, local, '0–86400 seconds (0 = until answered)'); if (n !== undefined) out.groupMemberTimeout = n; break }
      case 'groupMaxDepth': { const n = checkInt(raw, key, 1, 16, local); if (n !== undefined) out.groupMaxDepth = n; break }
      case 'overloadMaxInFlight': { const n = checkInt(raw, key, 0, 10_000_000, local, '0–10000000 requests (0 = no bound)'); if (n !== undefined) out.overloadMaxInFlight = n; break }
      case 'accountsTombstoneTtl': { const n = checkInt(raw, key, 3600, 31_536_000, local, '3600–31536000 seconds (1 hour to 365 days)'); if (n !== undefined) out.accountsTombstoneTtl = n; break }
      case 'overloadRetryAfter': { const n = checkInt(raw, key, 0, 86_400, local, '0–86400 seconds'); if (n !== undefined) out.overloadRetryAfter = n; break }
    }
    const origin = layer.origin[key]
    for (const m of local) issues.push(origin !== undefined ? `${m} (from ${origin})` : m)
  }
  return out
}

/** The `auth` mapping (partial: layers merge key by key). */
function checkAuth (raw: unknown, issues: Issues): Partial<AuthConfig> | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) { issues.push(`auth: expected { enabled, realm, ... }, got ${show(raw)}`); return undefined }
  const o = raw as Record<string, unknown>
  rejectUnknown(o, [...AUTH_KEYS], 'auth', issues)
  const a: Partial<AuthConfig> = {}
  if (o.enabled !== undefined) { const b = checkBool(o.enabled, 'auth.enabled', issues); if (b !== undefined) a.enabled = b }
  if (o.realm !== undefined) { const d = checkDomain(o.realm, 'auth.realm', issues); if (d !== undefined) a.realm = d }
  if (o.algorithms !== undefined) {
    const l = checkList(o.algorithms, 'auth.algorithms', issues, (x, path, iss) => {
      const v = typeof x === 'string' ? AUTH_ALGORITHMS.find(a => a.toLowerCase() === x.trim().toLowerCase()) : undefined
      if (v === undefined) iss.push(`${path}: expected one of ${AUTH_ALGORITHMS.join(', ')}, got ${show(x)}`)
      return v
    })
    if (l !== undefined && l.length === 0) issues.push('auth.algorithms: expected at least one algorithm')
    else if (l !== undefined) a.algorithms = [...new Set(l)]
  }
  if (o.nonceTtl !== undefined) { const n = checkInt(o.nonceTtl, 'auth.nonceTtl', 10, 86400, issues); if (n !== undefined) a.nonceTtl = n }
  for (const k of ['maxFailuresPerSource', 'maxFailuresPerUser'] as const) {
    if (o[k] !== undefined) { const n = checkInt(o[k], `auth.${k}`, 0, 1_000_000, issues); if (n !== undefined) a[k] = n }
  }
  for (const k of ['failureWindow', 'banTime'] as const) {
    if (o[k] !== undefined) { const n = checkInt(o[k], `auth.${k}`, 1, 604800, issues); if (n !== undefined) a[k] = n }
  }
  if (o.banStatus !== undefined) {
    const n = checkInt(o.banStatus, 'auth.banStatus', 403, 503, issues, '403, 429 or 503')
    if (n !== undefined && n !== 403 && n !== 429 && n !== 503) issues.push(`auth.banStatus: expected 403, 429 or 503, got ${n}`)
    else if (n !== undefined) a.banStatus = n
  }
  return a
}

/** Parse a config file (YAML, which includes JSON) into a layer; unknown keys are issues. */
export function fileLayer (path: string, text?: string): Layer {
  let body: string
  try {
    body = text ?? readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError([`cannot read config file ${path}: ${(err as Error).message}`])
  }
  let doc: unknown
  try {
    doc = parseYaml(body)
  } catch (err) {
    throw new ConfigError([`cannot parse config file ${path}: ${(err as Error).message.split('\n')[0]}`])
  }
  if (doc === null || doc === undefined) doc = {}
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError([`config file ${path}: expected a mapping of keys, got ${show(doc)}`])
  const issues: Issues = []
  rejectUnknown(doc as Record<string, unknown>, [...CONFIG_KEYS], '', issues)
  if (issues.length > 0) throw new ConfigError(issues.map(i => `${i} (in ${path})`))
  const values = doc as Partial<Record<Key, unknown>>
  const origin: Partial<Record<Key, string>> = {}
  for (const k of Object.keys(values) as Key[]) origin[k] = `config file ${path}`
  return { values, origin }
}

/** Environment variables: name → config key. Lists are comma separated. */
export const ENV_VARS: Record<string, Key | 'config' | 'tlsCert' | 'tlsKey' | 'authEnabled' | 'authRealm' | 'authAlgorithms'> = {
  SIPRING_CONFIG: 'config',
  SIPRING_DATA: 'dataDir',
  SIPRING_SIP: 'sip',
  SIPRING_ADMIN: 'admin',
  SIPRING_DOMAINS: 'domains',
  SIPRING_MIN_EXPIRES: 'minExpires',
  SIPRING_MAX_EXPIRES: 'maxExpires',
  SIPRING_DEFAULT_EXPIRES: 'defaultExpires',
  SIPRING_MAX_CONTACTS_PER_AOR: 'maxContactsPerAor',
  SIPRING_LOG_LEVEL: 'logLevel',
  SIPRING_TLS_CERT: 'tlsCert',
  SIPRING_TLS_KEY: 'tlsKey',
  SIPRING_NODE_ID: 'nodeId',
  SIPRING_RECORD_ROUTE: 'recordRoute',
  SIPRING_ADVERTISE: 'advertise',
  SIPRING_OVERLAY: 'overlay',
  SIPRING_OVERLAY_LISTEN: 'overlayListen',
  SIPRING_OVERLAY_ANNOUNCE: 'overlayAnnounce',
  SIPRING_JOIN: 'join',
  SIPRING_REPLICAS: 'replicas',
  SIPRING_OVERLAY_ACK_TIMEOUT: 'overlayAckTimeout',
  SIPRING_OVERLAY_TRUST_LOCAL_FOR: 'overlayTrustLocalFor',
  SIPRING_OVERLAY_CA: 'overlayCa',
  SIPRING_OVERLAY_CREDENTIAL: 'overlayCredential',
  SIPRING_ROLE: 'role',
  SIPRING_CORE_NODES: 'coreNodes',
  SIPRING_GROUP_FORKING: 'groupForking',
  SIPRING_GROUP_MAX_BRANCHES: 'groupMaxBranches',
  SIPRING_GROUP_MEMBER_TIMEOUT: 'groupMemberTimeout',
  SIPRING_GROUP_MAX_DEPTH: 'groupMaxDepth',
  SIPRING_OVERLOAD_MAX_IN_FLIGHT: 'overloadMaxInFlight',
  SIPRING_OVERLOAD_RETRY_AFTER: 'overloadRetryAfter',
  SIPRING_ACCOUNTS_TOMBSTONE_TTL: 'accountsTombstoneTtl',
  SIPRING_AUTH: 'authEnabled',
  SIPRING_AUTH_REALM: 'authRealm',
  SIPRING_AUTH_ALGORITHMS: 'authAlgorithms'
}

/** Build the env layer; unknown `SIPRING_*` variables are issues. Returns the layer and SIPRING_CONFIG. */
export function envLayer (env: NodeJS.ProcessEnv): { layer: Layer, config?: string } {
  const values: Partial<Record<Key, unknown>> = {}
  const origin: Partial<Record<Key, string>> = {}
  const issues: Issues = []
  let config: string | undefined
  const tls: { cert?: string, key?: string } = {}
  const auth: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('SIPRING_') || value === undefined) continue
    const key = ENV_VARS[name]
    if (key === undefined) { issues.push(`${name}: unknown environment variable (known: ${Object.keys(ENV_VARS).join(', ')})`); continue }
    if (key === 'config') config = value
    else if (key === 'tlsCert') { tls.cert = value; origin.tls = name }
    else if (key === 'tlsKey') { tls.key = value; origin.tls = origin.tls !== undefined ? `${origin.tls}/${name}` : name }
    else if (key === 'authEnabled') { auth.enabled = value; origin.auth = origin.auth !== undefined ? `${origin.auth}/${name}` : name }
    else if (key === 'authRealm') { auth.realm = value; origin.auth = origin.auth !== undefined ? `${origin.auth}/${name}` : name }
    else if (key === 'authAlgorithms') { auth.algorithms = value; origin.auth = origin.auth !== undefined ? `${origin.auth}/${name}` : name }
    else { values[key] = value; origin[key] = name }
  }
  if (tls.cert !== undefined || tls.key !== undefined) values.tls = tls
  if (Object.keys(auth).length > 0) values.auth = auth
  if (issues.length > 0) throw new ConfigError(issues)
  return { layer: { values, origin }, config }
}

export interface StartFlags {
  layer: Layer
  config?: string
  help: boolean
}

interface FlagSpec { key: Key | 'config' | 'tlsCert' | 'tlsKey' | 'authEnabled' | 'authRealm' | 'authAlgorithms' | 'help', arg: string, repeat?: boolean, describe: string }

/** Flags of `sipring start`. Repeatable list flags replace the lower layers' list as a whole. */
export const START_FLAGS: Record<string, FlagSpec> = {
  '--config': { key: 'config', arg: 'PATH', describe: 'config file, YAML or JSON (env SIPRING_CONFIG)' },
  '--sip': { key: 'sip', arg: 'PROTO:HOST:PORT', repeat: true, describe: 'SIP listener, repeatable; PROTO is udp|tcp|tls|ws|wss, IPv6 in brackets: tcp:[::]:5060 (default: udp+tcp on 0.0.0.0:5060 and [::]:5060)' },
  '--data': { key: 'dataDir', arg: 'DIR', describe: 'data directory for the location database (default ./data)' },
  '--admin': { key: 'admin', arg: 'HOST:PORT|off', describe: 'admin HTTP API address (default 127.0.0.1:5080)' },
  '--domain': { key: 'domains', arg: 'DOMAIN', repeat: true, describe: 'domain served, repeatable (default: any)' },
  '--min-expires': { key: 'minExpires', arg: 'SECONDS', describe: 'shortest registration accepted, else 423 (default 60)' },
  '--max-expires': { key: 'maxExpires', arg: 'SECONDS', describe: 'longest registration granted (default 3600)' },
  '--default-expires': { key: 'defaultExpires', arg: 'SECONDS', describe: 'registration time when the client asks none (default 3600)' },
  '--max-contacts': { key: 'maxContactsPerAor', arg: 'N', describe: 'contacts kept per address-of-record (default 10)' },
  '--log-level': { key: 'logLevel', arg: 'LEVEL', describe: `one of ${LOG_LEVELS.join(', ')} (default info)` },
  '--tls-cert': { key: 'tlsCert', arg: 'PATH', describe: 'PEM certificate for tls/wss listeners' },
  '--tls-key': { key: 'tlsKey', arg: 'PATH', describe: 'PEM private key for tls/wss listeners' },
  '--node-id': { key: 'nodeId', arg: 'ID', describe: 'node id (default: generated once and kept in the data dir)' },
  '--record-route': { key: 'recordRoute', arg: 'true|false', describe: 'add Record-Route to dialog-creating requests (default true)' },
  '--advertise': { key: 'advertise', arg: 'HOST', describe: 'address put in Via/Record-Route for 0.0.0.0/:: listeners (default: first non-loopback IPv4)' },
  '--overlay': { key: 'overlay', arg: 'true|false', describe: 'join super nodes into one location service over libp2p (default false; --join/--overlay-listen imply true)' },
  '--overlay-listen': { key: 'overlayListen', arg: 'MULTIADDR', repeat: true, describe: 'overlay (libp2p) listen address, repeatable (default /ip4/0.0.0.0/tcp/7070 and /ip6/::/tcp/7070)' },
  '--overlay-announce': { key: 'overlayAnnounce', arg: 'MULTIADDR', repeat: true, describe: 'overlay address announced to peers instead of the listen ones, repeatable' },
  '--join': { key: 'join', arg: 'MULTIADDR', repeat: true, describe: 'a running super node to join, /ip4/H/tcp/P/p2p/<peerId>, repeatable' },
  '--replicas': { key: 'replicas', arg: 'N', describe: 'replicas of each registration on the ring (default 3)' },
  '--overlay-ack-timeout': { key: 'overlayAckTimeout', arg: 'MS', describe: 'a REGISTER changing bindings waits this long for the overlay write quorum, then 503 + Retry-After (default 2000)' },
  '--overlay-trust-local-for': { key: 'overlayTrustLocalFor', arg: 'MS', describe: 'refresh an AOR only this node wrote from its own replica, without a quorum read, for this long (default 3600000; 0 = never)' },
  '--overlay-ca': { key: 'overlayCa', arg: 'BASE64|PATH', describe: 'core public key of the overlay (`sipring overlay init-ca`): only enrolled super nodes are admitted (default: open overlay)' },
  '--overlay-credential': { key: 'overlayCredential', arg: 'PATH', describe: 'this node\'s credential (`sipring node enroll`), required with --overlay-ca' },
  '--role': { key: 'role', arg: 'super|core', describe: 'super node (default) or core node (accounts replicated among core nodes, no SIP listeners; see docs/operations.md)' },
  '--core-node': { key: 'coreNodes', arg: 'MULTIADDR', repeat: true, describe: 'a core node, /ip4/H/tcp/P/p2p/<peerId>, repeatable: a super node reads accounts from them; a core node replicates with them' },
  '--group-forking': { key: 'groupForking', arg: 'distributed|centralized', describe: 'group calls: one fork request per owner super node (distributed) or every member forked here (centralized); default distributed with --overlay' },
  '--group-max-branches': { key: 'groupMaxBranches', arg: 'N', describe: 'member contacts one group call forks to at most (default 64)' },
  '--group-member-timeout': { key: 'groupMemberTimeout', arg: 'SECONDS', describe: 'hunt groups: how long each member rings before the next (default 20; 0 = until answered)' },
  '--group-max-depth': { key: 'groupMaxDepth', arg: 'N', describe: 'nesting depth of groups in groups, the called group counting 1 (default 3)' },
  '--overload-max-in-flight': { key: 'overloadMaxInFlight', arg: 'N', describe: 'requests processed at once; more are answered 503 + Retry-After before any work (default 2000; 0 = no bound)' },
  '--overload-retry-after': { key: 'overloadRetryAfter', arg: 'SECONDS', describe: 'Retry-After of the overload 503 (default 5)' },
  '--accounts-tombstone-ttl': { key: 'accountsTombstoneTtl', arg: 'SECONDS', describe: 'core nodes: keep a deleted account\'s tombstone at least this long, then until every core node has it (default 604800 = 7 days)' },
  '--auth': { key: 'authEnabled', arg: 'true|false', describe: 'digest authentication of clients with the accounts of the data dir (default false; see `sipring user`)' },
  '--auth-realm': { key: 'authRealm', arg: 'REALM', describe: 'digest realm (default: the first --domain)' },
  '--auth-algorithms': { key: 'authAlgorithms', arg: 'ALG,ALG', describe: 'digest challenges offered, in order: SHA-256, MD5, SHA-512-256 (default SHA-256,MD5)' },
  '--help': { key: 'help', arg: '', describe: 'show this help' }
}

/** Parse `sipring start` arguments (`--flag value` or `--flag=value`). */
export function parseStartArgs (args: string[]): StartFlags {
  const values: Partial<Record<Key, unknown>> = {}
  const origin: Partial<Record<Key, string>> = {}
  let config: string | undefined
  let help = false
  const tls: { cert?: string, key?: string } = {}
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a === '-h' || a === '--help') { help = true; continue }
    const eq = a.indexOf('=')
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a
    const spec = START_FLAGS[name]
    if (spec === undefined) {
      throw new UsageError(a.startsWith('-') ? `unknown option ${name}` : `unexpected argument ${JSON.stringify(a)}`)
    }
    let value: string
    if (name !== a) value = a.slice(eq + 1)
    else {
      const next = args[i + 1]
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new UsageError(`option ${name} needs a value (${spec.arg})`)
      value = next
      i++
    }
    if (spec.key === 'config') config = value
    else if (spec.key === 'tlsCert') { tls.cert = value; origin.tls = name }
    else if (spec.key === 'tlsKey') { tls.key = value; origin.tls = origin.tls !== undefined ? `${origin.tls}/${name}` : name }
    else if (spec.key === 'help') help = true
    else if (spec.key === 'authEnabled' || spec.key === 'authRealm' || spec.key === 'authAlgorithms') {
      const cur = (values.auth ?? {}) as Record<string, string>
      cur[spec.key === 'authEnabled' ? 'enabled' : spec.key === 'authRealm' ? 'realm' : 'algorithms'] = value
      values.auth = cur
      origin.auth = name
    }
    else if (spec.repeat === true) {
      const list = (values[spec.key] as string[] | undefined) ?? []
      list.push(value)
      values[spec.key] = list
      origin[spec.key] = name
    } else { values[spec.key] = value; origin[spec.key] = name }
  }
  if (tls.cert !== undefined || tls.key !== undefined) values.tls = tls
  return { layer: { values, origin }, config, help }
}

/** Merge validated layers over the defaults, then check cross-field rules. Throws ConfigError. */
export function resolveConfig (layers: Layer[]): SipringConfig {
  const issues: Issues = []
  const cfg = defaultConfig()
  for (const layer of layers) {
    const part = validateLayer(layer, issues)
    const { tls, auth, ...rest } = part
    Object.assign(cfg, rest)
    if (tls !== undefined) cfg.tls = { ...cfg.tls, ...tls }
    if (auth !== undefined) cfg.auth = { ...cfg.auth, ...auth }
  }
  if (issues.length > 0) throw new ConfigError(issues)
  if (cfg.minExpires > cfg.maxExpires) issues.push(`minExpires: must not exceed maxExpires (${cfg.maxExpires}), got ${cfg.minExpires}`)
  if (cfg.defaultExpires < cfg.minExpires || cfg.defaultExpires > cfg.maxExpires) {
    issues.push(`defaultExpires: expected between minExpires (${cfg.minExpires}) and maxExpires (${cfg.maxExpires}), got ${cfg.defaultExpires}`)
  }
  const seen = new Set<string>()
  cfg.sip.forEach((l, i) => {
    const k = `${l.protocol === 'udp' ? 'udp' : 'stream'}|${l.host}|${l.port}`
    if (l.port !== 0 && seen.has(k)) issues.push(`sip[${i}]: duplicate listener ${l.protocol}:${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`)
    seen.add(k)
  })
  const secure = cfg.sip.findIndex(l => l.protocol === 'tls' || l.protocol === 'wss')
  if (secure >= 0 && (cfg.tls.cert === undefined || cfg.tls.key === undefined)) {
    issues.push(`tls: sip[${secure}] is ${cfg.sip[secure]!.protocol} and needs both tls.cert and tls.key (--tls-cert/--tls-key)`)
  }
  if ((cfg.tls.cert === undefined) !== (cfg.tls.key === undefined)) issues.push('tls: cert and key must be given together')
  if (cfg.auth.enabled && cfg.auth.realm === undefined && cfg.domains.length === 0) issues.push('auth.realm: authentication needs a realm (--auth-realm) or a domain (--domain)')
  if (cfg.overlayCa !== undefined && cfg.overlayCredential === undefined) issues.push('overlayCredential: an enforcing overlay (overlayCa) needs this node\'s credential (--overlay-credential; see `sipring node enroll`)')
  if (cfg.overlayCredential !== undefined && cfg.overlayCa === undefined) issues.push('overlayCa: a credential (overlayCredential) is only used with the core public key (--overlay-ca)')
  if (issues.length > 0) throw new ConfigError(issues)
  return cfg
}

/** The whole chain for `sipring start`: defaults < file < env < flags. */
export function loadConfig (args: string[], env: NodeJS.ProcessEnv): { config: SipringConfig, help: boolean } {
  const flags = parseStartArgs(args)
  if (flags.help) return { config: defaultConfig(), help: true }
  const e = envLayer(env)
  const path = flags.config ?? e.config
  const layers: Layer[] = []
  if (path !== undefined) layers.push(fileLayer(path))
  layers.push(e.layer, flags.layer)
  return { config: resolveConfig(layers), help: false }
}

/** `sipring start --help`. */
export function startHelp (): string {
  const lines = [
    'Usage: sipring start [options]',
    '',
    'Starts one super node (SIP registrar + stateful proxy) and its admin HTTP API.',
    'Settings come from embedded defaults, then the config file, then SIPRING_* environment',
    'variables, then these options (each later source wins; list options replace the whole list).',
    '',
    'Options:'
  ]
  for (const [flag, spec] of Object.entries(START_FLAGS)) {
    const left = spec.arg === '' ? flag : `${flag} ${spec.arg}`
    lines.push(`  ${left.padEnd(32)} ${spec.describe}`)
  }
  lines.push('', 'Environment variables:')
  const envDoc: Record<string, string> = {
    SIPRING_CONFIG: 'config file', SIPRING_DATA: 'data directory', SIPRING_SIP: 'listeners, comma separated',
    SIPRING_ADMIN: 'admin address or off', SIPRING_DOMAINS: 'domains, comma separated', SIPRING_MIN_EXPIRES: 'seconds',
    SIPRING_MAX_EXPIRES: 'seconds', SIPRING_DEFAULT_EXPIRES: 'seconds', SIPRING_MAX_CONTACTS_PER_AOR: 'count',
    SIPRING_LOG_LEVEL: 'log level', SIPRING_TLS_CERT: 'PEM path', SIPRING_TLS_KEY: 'PEM path', SIPRING_NODE_ID: 'node id',
    SIPRING_RECORD_ROUTE: 'true or false', SIPRING_ADVERTISE: 'host for Via/Record-Route',
    SIPRING_OVERLAY: 'true or false', SIPRING_OVERLAY_LISTEN: 'multiaddrs, comma separated',
    SIPRING_OVERLAY_ANNOUNCE: 'multiaddrs, comma separated', SIPRING_JOIN: 'multiaddrs with /p2p/<id>, comma separated',
    SIPRING_REPLICAS: 'count', SIPRING_ROLE: 'super or core', SIPRING_CORE_NODES: 'core node multiaddrs with /p2p/<id>, comma separated',
    SIPRING_GROUP_FORKING: 'distributed or centralized', SIPRING_GROUP_MAX_BRANCHES: 'count',
    SIPRING_GROUP_MEMBER_TIMEOUT: 'seconds', SIPRING_GROUP_MAX_DEPTH: 'count',
    SIPRING_OVERLOAD_MAX_IN_FLIGHT: 'count (0 = no bound)', SIPRING_OVERLOAD_RETRY_AFTER: 'seconds',
    SIPRING_AUTH: 'true or false (digest authentication)', SIPRING_AUTH_REALM: 'digest realm', SIPRING_AUTH_ALGORITHMS: 'challenge algorithms, comma separated'
  }
  for (const name of Object.keys(ENV_VARS)) lines.push(`  ${name.padEnd(32)} ${envDoc[name] ?? ''}`)
  lines.push('', 'Config file keys (YAML or JSON): ' + CONFIG_KEYS.join(', ') + '.',
    'Example:',
    '  dataDir: /var/lib/sipring',
    '  sip: [ "udp:0.0.0.0:5060", "tcp:0.0.0.0:5060", "udp:[::]:5060", "tcp:[::]:5060" ]',
    '  admin: 127.0.0.1:5080',
    '  domains: [ example.org ]',
    '  minExpires: 60',
    '  maxExpires: 3600',
    '  defaultExpires: 3600',
    '  maxContactsPerAor: 10',
    '  logLevel: info',
    '',
    'A bad value exits with code 2 and a message naming the key; a port in use exits with code 1.',
    'SIGTERM or SIGINT stops cleanly (registrations are flushed to the data dir); a second one forces exit.',
    'See docs/operations.md for the full reference.')
  return lines.join('\n')
}
