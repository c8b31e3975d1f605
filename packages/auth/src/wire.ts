/**
 * Versions, record ids and the validation of account records arriving from other nodes (core-node
 * replication and answers to super nodes). Everything that comes off the network is rebuilt field by
 * field: unknown fields are dropped, bad values throw `AccountError('EINVAL')`.
 */
import {
  AccountError, GROUP_PREFIX, USER_PREFIX, normalizeAor, validateDisplayName, validateMaxContacts, validateMembers,
  validatePolicy, validateRealm, validateUser, type Account, type Group
} from './accounts.js'

/** A record version: (updated, counter, origin) totally ordered — a hybrid logical clock per core node. */
export interface AccountVersion {
  updated: number
  counter: number
  origin: string
}

/** One record as it travels between core nodes: a user or group, or a tombstone (`deleted`). */
export interface AccountItem {
  /** `user!<realm>!<user>` or `group!<aor>`. */
  id: string
  v: AccountVersion
  deleted: boolean
  value?: Account | Group
}

export const WIRE_LIMITS = Object.freeze({
  maxIdLength: 600,
  maxOriginLength: 256,
  /** Items in one push or pull answer. */
  maxItems: 500,
  /** Ids in one pull request. */
  maxPullIds: 1000,
  /** Versions listed in one digest answer (`more: true` beyond). */
  maxVersions: 5000,
  /** Anti-entropy buckets. */
  buckets: 64
})

/** < 0 when a is older than b, 0 when equal, > 0 when newer. */
export function compareVersions (a: AccountVersion, b: AccountVersion): number {
  if (a.updated !== b.updated) return a.updated < b.updated ? -1 : 1
  if (a.counter !== b.counter) return a.counter < b.counter ? -1 : 1
  return a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0
}

export function versionText (v: AccountVersion): string { return `${v.updated}.${v.counter}.${v.origin}` }

/** Hybrid logical clock: never goes backwards, even when the wall clock does; observes remote versions. */
export class Hlc {
  private last: AccountVersion
  constructor (private readonly now: () => number, readonly origin: string) {
    this.last = { updated: 0, counter: 0, origin }
  }

  next (): AccountVersion {
    const t = Math.floor(this.now()) // versions are integers on the wire (a simulated clock may have fractions)
    this.last = t > this.last.updated ? { updated: t, counter: 0, origin: this.origin } : { updated: this.last.updated, counter: this.last.counter + 1, origin: this.origin }
    return { ...this.last }
  }

  observe (v: AccountVersion): void {
    if (v.updated > this.last.updated || (v.updated === this.last.updated && v.counter > this.last.counter)) {
      this.last = { updated: v.updated, counter: v.counter, origin: this.origin }
    }
  }
}

/** The record id of a db key (`auth!user!r!u` → `user!r!u`), or undefined for other keys. */
export function idOfKey (key: string): string | undefined {
  return key.startsWith(USER_PREFIX) || key.startsWith(GROUP_PREFIX) ? key.slice('auth!'.length) : undefined
}
export function keyOfId (id: string): string { return 'auth!' + id }
export function userId (user: string, realm: string): string { return `user!${realm}!${user}` }
export function groupId (aor: string): string { return `group!${aor}` }

export type ParsedId = { kind: 'user', user: string, realm: string } | { kind: 'group', aor: string }

function fail (msg: string): never { throw new AccountError('EINVAL', msg) }
function isObj (x: unknown): x is Record<string, unknown> { return typeof x === 'object' && x !== null && !Array.isArray(x) }
function nat (x: unknown, what: string): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) fail(`bad ${what}`)
  return x
}

/** Parse and check a record id (the realm never holds `!`, the user name may). */
export function parseId (id: unknown): ParsedId {
  if (typeof id !== 'string' || id.length === 0 || id.length > WIRE_LIMITS.maxIdLength) fail('bad record id')
  if (id.startsWith('user!')) {
    const rest = id.slice(5)
    const i = rest.indexOf('!')
    if (i <= 0) fail('bad user record id')
    const realm = rest.slice(0, i)
    const user = rest.slice(i + 1)
    if (validateRealm(realm) !== realm) fail('bad user record id (realm not lowercase)')
    validateUser(user)
    return { kind: 'user', user, realm }
  }
  if (id.startsWith('group!')) {
    const aor = id.slice(6)
    if (normalizeAor(aor, 'group') !== aor) fail('bad group record id (aor not normalized)')
    return { kind: 'group', aor }
  }
  return fail('bad record id (neither user! nor group!)')
}

export function checkVersion (x: unknown): AccountVersion {
  if (!isObj(x)) fail('bad version')
  const origin = x.origin
  if (typeof origin !== 'string' || origin.length === 0 || origin.length > WIRE_LIMITS.maxOriginLength) fail('bad version origin')
  return { updated: nat(x.updated, 'version updated'), counter: nat(x.counter, 'version counter'), origin }
}

const HEX32 = /^[0-9a-f]{32}$/
const HEX64 = /^[0-9a-f]{64}$/

/** Check an account record from the network; `expect` pins its user and realm. */
export function checkAccount (x: unknown, expect?: { user: string, realm: string }): Account {
  if (!isObj(x)) fail('bad account record')
  const user = validateUser(x.user)
  const realm = validateRealm(x.realm)
  if (realm !== x.realm) fail('bad account realm (not lowercase)')
  if (expect !== undefined && (user !== expect.user || realm !== expect.realm)) fail('account record does not match its id')
  const h = x.ha1
  if (!isObj(h) || typeof h.md5 !== 'string' || !HEX32.test(h.md5) || typeof h.sha256 !== 'string' || !HEX64.test(h.sha256)) fail('bad account ha1')
  if (h.sha512_256 !== undefined && (typeof h.sha512_256 !== 'string' || !HEX64.test(h.sha512_256))) fail('bad account ha1 sha512_256')
  if (typeof x.enabled !== 'boolean') fail('bad account enabled flag')
  const a: Account = {
    user,
    realm,
    ha1: { md5: h.md5, sha256: h.sha256, ...(h.sha512_256 !== undefined ? { sha512_256: h.sha512_256 as string } : {}) },
    enabled: x.enabled,
    created: nat(x.created, 'account created'),
    updated: nat(x.updated, 'account updated')
  }
  if (x.maxContacts !== undefined) a.maxContacts = validateMaxContacts(x.maxContacts)
  if (x.displayName !== undefined) a.displayName = validateDisplayName(x.displayName)
  return a
}

/** Check a group record from the network; `expect` pins its AOR. */
export function checkGroup (x: unknown, expect?: string): Group {
  if (!isObj(x)) fail('bad group record')
  const aor = normalizeAor(x.aor, 'group')
  if (aor !== x.aor || (expect !== undefined && aor !== expect)) fail('group record does not match its id')
  const members = validateMembers(x.members)
  if (members.length === 0) fail('bad group record (no members)')
  return { aor, members, policy: validatePolicy(x.policy), created: nat(x.created, 'group created'), updated: nat(x.updated, 'group updated') }
}

/** Check one replicated item. */
export function checkItem (x: unknown): AccountItem {
  if (!isObj(x)) fail('bad item')
  const parsed = parseId(x.id)
  const v = checkVersion(x.v)
  if (typeof x.deleted !== 'boolean') fail('bad item deleted flag')
  const id = x.id as string
  if (x.deleted) return { id, v, deleted: true }
  const value = parsed.kind === 'user' ? checkAccount(x.value, parsed) : checkGroup(x.value, parsed.aor)
  return { id, v, deleted: false, value }
}

export function checkList (x: unknown, max: number, what: string): unknown[] {
  if (!Array.isArray(x)) fail(`bad ${what} (not a list)`)
  if (x.length > max) fail(`too many ${what} (${x.length} > ${max})`)
  return x
}
