/**
 * Accounts and groups (core-node role): users with precomputed HA1 hashes (never the
 * plain password), enabled flag, per-user limits; groups = a group AOR, member AORs and a policy.
 *
 * {@link AccountStore} is the port the digest server reads through: today a {@link LevelAccountStore}
 * on the local node; later a core-node client over the overlay implements the same interface.
 */
import type { AbstractLevel } from 'abstract-level'
import type { Clock } from '@sipring/interface'
import { aorOf, ha1 } from '@sipring/sip'

/** Any abstract-level database with string keys (classic-level in the daemon, memory-level in tests). */
export type AccountDb = AbstractLevel<any, string, any>

export type GroupPolicy = 'ring-all' | 'hunt'
export const GROUP_POLICIES: readonly GroupPolicy[] = ['ring-all', 'hunt']

/** H(A1) for each algorithm, hex. SHA-512-256 is optional (older records may lack it). */
export interface Ha1Set {
  md5: string
  sha256: string
  sha512_256?: string
}

export interface Account {
  /** Digest username (also the user part of the AOR). */
  user: string
  realm: string
  ha1: Ha1Set
  enabled: boolean
  /** Bindings this user may hold (undefined = the node's maxContactsPerAor). */
  maxContacts?: number
  displayName?: string
  /** ms since epoch. */
  created: number
  updated: number
}

export interface Group {
  /** Normalized group AOR, e.g. `sip:sales@example.org`. */
  aor: string
  /** Normalized member AORs, in order (the hunt order). */
  members: string[]
  policy: GroupPolicy
  created: number
  updated: number
}

export interface NewUser {
  user: string
  realm: string
  password: string
  enabled?: boolean
  maxContacts?: number
  displayName?: string
}

export interface UserPatch {
  /** New password: the HA1 set is recomputed. */
  password?: string
  enabled?: boolean
  /** `null` clears the limit. */
  maxContacts?: number | null
  displayName?: string | null
}

export interface NewGroup {
  aor: string
  members: string[]
  policy?: GroupPolicy
}

export type AccountChange =
  | { kind: 'user', user: string, realm: string }
  | { kind: 'group', aor: string }

/**
 * Read and manage accounts and groups. Every method rejects with {@link AccountError} on bad
 * input (`EINVAL`), duplicates (`EEXIST`) or unknown names (`ENOTFOUND`).
 */
export interface AccountStore {
  getUser(user: string, realm: string): Promise<Account | undefined>
  addUser(u: NewUser): Promise<Account>
  updateUser(user: string, realm: string, patch: UserPatch): Promise<Account>
  /** Resolves false when there was no such user. */
  deleteUser(user: string, realm: string): Promise<boolean>
  listUsers(opts?: { realm?: string, limit?: number }): Promise<Account[]>
  /**
   * One page of users in key order (realm, then user): at most `limit` (default
   * {@link ACCOUNT_LIMITS.defaultPageSize}, at most `maxPageSize`) and at most `maxPageBytes` of JSON.
   * `next` (an opaque cursor, passed back as `after`) is set when more may follow.
   */
  listUsersPage(opts?: PageOptions & { realm?: string }): Promise<Page<Account>>
  getGroup(aor: string): Promise<Group | undefined>
  addGroup(g: NewGroup): Promise<Group>
  /** Replace, add or remove members; change the policy. */
  updateGroup(aor: string, patch: { members?: string[], add?: string[], remove?: string[], policy?: GroupPolicy }): Promise<Group>
  deleteGroup(aor: string): Promise<boolean>
  listGroups(opts?: { limit?: number }): Promise<Group[]>
  /** One page of groups in AOR order (as {@link listUsersPage}). */
  listGroupsPage(opts?: PageOptions): Promise<Page<Group>>
  /** Be told about every change (credential caches invalidate on it). Returns an unsubscribe function. */
  onChange(fn: (c: AccountChange) => void): () => void
}

/** Paging of account listings (admin API, CLI, the core nodes' `list-users` / `list-groups`). */
export interface PageOptions {
  /** Cursor: the `next` of the previous page (omit for the first page). */
  after?: string
  /** Items in this page (1 to {@link ACCOUNT_LIMITS.maxPageSize}; default `defaultPageSize`). */
  limit?: number
}

export interface Page<T> {
  items: T[]
  /** Set when more items may follow: pass it as `after` to get them. */
  next?: string
}

/**
 * `EUNAVAILABLE`: no core node answered (a {@link RemoteAccountStore} with nothing cached).
 * `EPERM`: the caller may not do this (an account write sent to a core node by a peer that is not a core node).
 */
export type AccountErrorCode = 'EINVAL' | 'EEXIST' | 'ENOTFOUND' | 'EUNAVAILABLE' | 'EPERM'

export class AccountError extends Error {
  constructor (readonly code: AccountErrorCode, message: string) {
    super(message)
    this.name = 'AccountError'
  }
}

export const ACCOUNT_LIMITS = Object.freeze({
  maxUserLength: 64,
  maxRealmLength: 253,
  minPasswordLength: 4,
  maxPasswordLength: 128,
  maxDisplayNameLength: 128,
  maxGroupMembers: 256,
  maxContacts: 1000,
  maxListLimit: 100_000,
  /** Items in one page of a listing (default / largest). */
  defaultPageSize: 500,
  maxPageSize: 1000,
  /** JSON bytes of the items of one page (well below the overlay's 1 MiB frame; one item always fits). */
  maxPageBytes: 512 * 1024,
  /** Longest paging cursor. */
  maxCursorLength: 600
})

/** Check the paging options; returns the effective limit and cursor. Throws AccountError('EINVAL'). */
export function checkPageOptions (o: PageOptions | undefined): { after: string | undefined, limit: number } {
  const limit = o?.limit ?? ACCOUNT_LIMITS.defaultPageSize
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > ACCOUNT_LIMITS.maxPageSize) throw new AccountError('EINVAL', `page limit must be an integer from 1 to ${ACCOUNT_LIMITS.maxPageSize}`)
  const after = o?.after
  if (after !== undefined && (typeof after !== 'string' || after.length === 0 || after.length > ACCOUNT_LIMITS.maxCursorLength)) throw new AccountError('EINVAL', `bad page cursor (a non-empty string of at most ${ACCOUNT_LIMITS.maxCursorLength} characters)`)
  return { after, limit }
}

// RFC 3261 user = unreserved / escaped / user-unreserved; we accept the unescaped subset that needs
// no quoting in a Digest username or a URI user part.
const USER_RE = /^[A-Za-z0-9._~!$&'()*+=;?/-]+$/
const REALM_RE = /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$/

export function validateUser (user: unknown): string {
  if (typeof user !== 'string' || user.length === 0) throw new AccountError('EINVAL', 'user name is required')
  if (user.length > ACCOUNT_LIMITS.maxUserLength) throw new AccountError('EINVAL', `user name longer than ${ACCOUNT_LIMITS.maxUserLength} characters`)
  if (!USER_RE.test(user)) throw new AccountError('EINVAL', `user name ${JSON.stringify(user)} has characters not allowed (use letters, digits and . _ ~ ! $ & ' ( ) * + = ; ? / -)`)
  return user
}

export function validateRealm (realm: unknown): string {
  if (typeof realm !== 'string' || realm.length === 0) throw new AccountError('EINVAL', 'realm is required')
  if (realm.length > ACCOUNT_LIMITS.maxRealmLength) throw new AccountError('EINVAL', `realm longer than ${ACCOUNT_LIMITS.maxRealmLength} characters`)
  if (!REALM_RE.test(realm)) throw new AccountError('EINVAL', `realm ${JSON.stringify(realm)} is not a host name (e.g. example.org)`)
  return realm.toLowerCase()
}

export function validatePassword (pw: unknown): string {
  if (typeof pw !== 'string') throw new AccountError('EINVAL', 'password is required')
  if (pw.length < ACCOUNT_LIMITS.minPasswordLength) throw new AccountError('EINVAL', `password shorter than ${ACCOUNT_LIMITS.minPasswordLength} characters`)
  if (pw.length > ACCOUNT_LIMITS.maxPasswordLength) throw new AccountError('EINVAL', `password longer than ${ACCOUNT_LIMITS.maxPasswordLength} characters`)
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(pw)) throw new AccountError('EINVAL', 'password contains control characters')
  return pw
}

export function validateMaxContacts (n: unknown): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > ACCOUNT_LIMITS.maxContacts) {
    throw new AccountError('EINVAL', `maxContacts must be an integer from 1 to ${ACCOUNT_LIMITS.maxContacts}`)
  }
  return n
}

export function validateDisplayName (s: unknown): string {
  if (typeof s !== 'string' || s.length > ACCOUNT_LIMITS.maxDisplayNameLength) throw new AccountError('EINVAL', `displayName must be a string of at most ${ACCOUNT_LIMITS.maxDisplayNameLength} characters`)
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f"]/.test(s)) throw new AccountError('EINVAL', 'displayName contains control characters or quotes')
  return s
}

/** Normalize a group or member AOR (`sip:`/`sips:` URI; `user@host` is accepted as `sip:user@host`). */
export function normalizeAor (aor: unknown, what = 'aor'): string {
  if (typeof aor !== 'string' || aor.trim() === '') throw new AccountError('EINVAL', `${what} is required`)
  let s = aor.trim()
  if (!/^(sips?|tel):/i.test(s)) s = 'sip:' + s
  if (s.length > 512) throw new AccountError('EINVAL', `${what} longer than 512 characters`)
  let n: string
  try {
    n = aorOf(s)
  } catch (err) {
    throw new AccountError('EINVAL', `${what} ${JSON.stringify(aor)} is not a valid SIP URI: ${(err as Error).message}`)
  }
  if (!/^sips?:[^@]+@/.test(n)) throw new AccountError('EINVAL', `${what} ${JSON.stringify(aor)} needs a user part (sip:user@domain)`)
  return n
}

export function validatePolicy (p: unknown): GroupPolicy {
  if (typeof p !== 'string' || !(GROUP_POLICIES as readonly string[]).includes(p)) throw new AccountError('EINVAL', `policy must be one of ${GROUP_POLICIES.join(', ')}`)
  return p as GroupPolicy
}

export function validateMembers (m: unknown): string[] {
  if (!Array.isArray(m)) throw new AccountError('EINVAL', 'members must be a list of AORs')
  const out: string[] = []
  for (const x of m) {
    const a = normalizeAor(x, 'member')
    if (!out.includes(a)) out.push(a)
  }
  if (out.length > ACCOUNT_LIMITS.maxGroupMembers) throw new AccountError('EINVAL', `a group has at most ${ACCOUNT_LIMITS.maxGroupMembers} members`)
  return out
}

/** The HA1 set stored for a user: H(user:realm:password) for MD5, SHA-256 and SHA-512-256. */
export function computeHa1 (user: string, realm: string, password: string): Ha1Set {
  return {
    md5: ha1('MD5', user, realm, password),
    sha256: ha1('SHA-256', user, realm, password),
    sha512_256: ha1('SHA-512-256', user, realm, password)
  }
}

export const USER_PREFIX = 'auth!user!'
export const GROUP_PREFIX = 'auth!group!'
export const userKey = (user: string, realm: string): string => `${USER_PREFIX}${realm}!${user}`
export const groupKey = (aor: string): string => `${GROUP_PREFIX}${aor}`

export interface LevelAccountStoreOptions {
  db: AccountDb
  clock: Clock
}

/**
 * Accounts and groups in an abstract-level database under `auth!user!<realm>!<user>` and
 * `auth!group!<aor>` (JSON values). Writes to one key are serialized in-process.
 */
export class LevelAccountStore implements AccountStore {
  protected readonly db: AccountDb
  protected readonly clock: Clock
  private readonly listeners = new Set<(c: AccountChange) => void>()
  private chain: Promise<unknown> = Promise.resolve()

  constructor (opts: LevelAccountStoreOptions) {
    this.db = opts.db
    this.clock = opts.clock
  }

  /** Record times are whole ms (checked as integers when they travel; a simulated clock may have fractions). */
  protected nowMs (): number { return Math.floor(this.clock.now()) }

  /** Open the db if needed (the owner closes it). */
  async open (): Promise<void> {
    if (this.db.status === 'opening' || this.db.status === 'closed') await this.db.open()
  }

  onChange (fn: (c: AccountChange) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  protected emit (c: AccountChange): void {
    for (const fn of this.listeners) {
      try { fn(c) } catch {}
    }
  }

  /** Run read-modify-write operations one at a time (no lost updates between two admin calls). */
  protected serial<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.chain.then(fn, fn)
    this.chain = p.catch(() => {})
    return p
  }

  protected async getJson<T> (key: string): Promise<T | undefined> {
    await this.open()
    const raw = await this.db.get(key, { valueEncoding: 'utf8' }) as string | undefined
    if (raw === undefined || raw === null) return undefined
    try { return JSON.parse(raw) as T } catch { return undefined }
  }

  private async put (key: string, value: unknown): Promise<void> {
    await this.db.put(key, JSON.stringify(value), { valueEncoding: 'utf8' })
  }

  /**
   * Store (or, with `undefined`, delete) the record under `key` (`auth!user!…` / `auth!group!…`).
   * Every write of the store goes through here, inside {@link serial}: a replicated store overrides it
   * to version the record (see AccountReplica).
   */
  protected async write (key: string, value: Account | Group | undefined): Promise<void> {
    if (value === undefined) await this.db.del(key)
    else await this.put(key, value)
  }

  async getUser (user: string, realm: string): Promise<Account | undefined> {
    if (typeof user !== 'string' || typeof realm !== 'string' || user.length > ACCOUNT_LIMITS.maxUserLength || realm.length > ACCOUNT_LIMITS.maxRealmLength) return undefined
    return await this.getJson<Account>(userKey(user, realm.toLowerCase()))
  }

  async addUser (u: NewUser): Promise<Account> {
    const user = validateUser(u?.user)
    const realm = validateRealm(u.realm)
    const password = validatePassword(u.password)
    if (u.enabled !== undefined && typeof u.enabled !== 'boolean') throw new AccountError('EINVAL', 'enabled must be true or false')
    const maxContacts = u.maxContacts !== undefined ? validateMaxContacts(u.maxContacts) : undefined
    const displayName = u.displayName !== undefined ? validateDisplayName(u.displayName) : undefined
    return await this.serial(async () => {
      if (await this.getUser(user, realm) !== undefined) throw new AccountError('EEXIST', `user ${user}@${realm} already exists`)
      const now = this.nowMs()
      const acc: Account = {
        user, realm, ha1: computeHa1(user, realm, password), enabled: u.enabled ?? true,
        ...(maxContacts !== undefined ? { maxContacts } : {}),
        ...(displayName !== undefined ? { displayName } : {}),
        created: now, updated: now
      }
      await this.write(userKey(user, realm), acc)
      this.emit({ kind: 'user', user, realm })
      return acc
    })
  }

  async updateUser (user: string, realm: string, patch: UserPatch): Promise<Account> {
    validateUser(user)
    const r = validateRealm(realm)
    if (patch === null || typeof patch !== 'object') throw new AccountError('EINVAL', 'nothing to change')
    const password = patch.password !== undefined ? validatePassword(patch.password) : undefined
    if (patch.enabled !== undefined && typeof patch.enabled !== 'boolean') throw new AccountError('EINVAL', 'enabled must be true or false')
    const maxContacts = patch.maxContacts !== undefined && patch.maxContacts !== null ? validateMaxContacts(patch.maxContacts) : patch.maxContacts
    const displayName = patch.displayName !== undefined && patch.displayName !== null ? validateDisplayName(patch.displayName) : patch.displayName
    return await this.serial(async () => {
      const cur = await this.getUser(user, r)
      if (cur === undefined) throw new AccountError('ENOTFOUND', `no user ${user}@${r}`)
      const next: Account = { ...cur, updated: this.nowMs() }
      if (password !== undefined) next.ha1 = computeHa1(user, r, password)
      if (patch.enabled !== undefined) next.enabled = patch.enabled
      if (maxContacts === null) delete next.maxContacts
      else if (maxContacts !== undefined) next.maxContacts = maxContacts
      if (displayName === null) delete next.displayName
      else if (displayName !== undefined) next.displayName = displayName
      await this.write(userKey(user, r), next)
      this.emit({ kind: 'user', user, realm: r })
      return next
    })
  }

  async deleteUser (user: string, realm: string): Promise<boolean> {
    validateUser(user)
    const r = validateRealm(realm)
    return await this.serial(async () => {
      if (await this.getUser(user, r) === undefined) return false
      await this.write(userKey(user, r), undefined)
      this.emit({ kind: 'user', user, realm: r })
      return true
    })
  }

  async listUsers (opts: { realm?: string, limit?: number } = {}): Promise<Account[]> {
    await this.open()
    const limit = Math.min(opts.limit ?? ACCOUNT_LIMITS.maxListLimit, ACCOUNT_LIMITS.maxListLimit)
    const prefix = opts.realm !== undefined ? `${USER_PREFIX}${validateRealm(opts.realm)}!` : USER_PREFIX
    const out: Account[] = []
    for await (const [, raw] of this.db.iterator({ gte: prefix, lt: prefix + '\uffff', valueEncoding: 'utf8', limit })) {
      try { out.push(JSON.parse(raw as string) as Account) } catch {}
    }
    return out
  }

  async listUsersPage (opts: PageOptions & { realm?: string } = {}): Promise<Page<Account>> {
    const prefix = opts.realm !== undefined ? `${USER_PREFIX}${validateRealm(opts.realm)}!` : USER_PREFIX
    return await this.page<Account>(prefix, USER_PREFIX, opts)
  }

  async listGroupsPage (opts: PageOptions = {}): Promise<Page<Group>> {
    return await this.page<Group>(GROUP_PREFIX, GROUP_PREFIX, opts)
  }

  /** Records under `prefix` after the cursor (a key without `base`), bounded by count and JSON bytes. */
  private async page<T> (prefix: string, base: string, opts: PageOptions): Promise<Page<T>> {
    const { after, limit } = checkPageOptions(opts)
    await this.open()
    const from = after !== undefined && base + after >= prefix ? { gt: base + after } : { gte: prefix }
    const items: T[] = []
    let bytes = 0
    let last: string | undefined
    let more = false
    for await (const [key, raw] of this.db.iterator({ ...from, lt: prefix + '\uffff', valueEncoding: 'utf8', limit: limit + 1 })) {
      const size = Buffer.byteLength(raw as string) + 1
      if (items.length >= limit || (items.length > 0 && bytes + size > ACCOUNT_LIMITS.maxPageBytes)) { more = true; break }
      try { items.push(JSON.parse(raw as string) as T) } catch {}
      bytes += size
      last = (key as string).slice(base.length)
    }
    return more && last !== undefined ? { items, next: last } : { items }
  }

  async getGroup (aor: string): Promise<Group | undefined> {
    let a: string
    try { a = normalizeAor(aor) } catch { return undefined }
    return await this.getJson<Group>(groupKey(a))
  }

  async addGroup (g: NewGroup): Promise<Group> {
    const aor = normalizeAor(g?.aor, 'group')
    const members = validateMembers(g.members)
    if (members.length === 0) throw new AccountError('EINVAL', 'a group needs at least one member')
    if (members.includes(aor)) throw new AccountError('EINVAL', 'a group cannot be its own member')
    const policy = g.policy !== undefined ? validatePolicy(g.policy) : 'ring-all'
    return await this.serial(async () => {
      if (await this.getJson(groupKey(aor)) !== undefined) throw new AccountError('EEXIST', `group ${aor} already exists`)
      const now = this.nowMs()
      const group: Group = { aor, members, policy, created: now, updated: now }
      await this.write(groupKey(aor), group)
      this.emit({ kind: 'group', aor })
      return group
    })
  }

  async updateGroup (aor: string, patch: { members?: string[], add?: string[], remove?: string[], policy?: GroupPolicy }): Promise<Group> {
    const a = normalizeAor(aor, 'group')
    if (patch === null || typeof patch !== 'object') throw new AccountError('EINVAL', 'nothing to change')
    const replace = patch.members !== undefined ? validateMembers(patch.members) : undefined
    const add = patch.add !== undefined ? validateMembers(patch.add) : []
    const remove = patch.remove !== undefined ? validateMembers(patch.remove) : []
    const policy = patch.policy !== undefined ? validatePolicy(patch.policy) : undefined
    return await this.serial(async () => {
      const cur = await this.getJson<Group>(groupKey(a))
      if (cur === undefined) throw new AccountError('ENOTFOUND', `no group ${a}`)
      let members = replace ?? [...cur.members]
      for (const m of add) if (!members.includes(m)) members.push(m)
      members = members.filter(m => !remove.includes(m))
      if (members.length === 0) throw new AccountError('EINVAL', 'a group needs at least one member (delete the group instead)')
      if (members.length > ACCOUNT_LIMITS.maxGroupMembers) throw new AccountError('EINVAL', `a group has at most ${ACCOUNT_LIMITS.maxGroupMembers} members`)
      if (members.includes(a)) throw new AccountError('EINVAL', 'a group cannot be its own member')
      const next: Group = { ...cur, members, ...(policy !== undefined ? { policy } : {}), updated: this.nowMs() }
      await this.write(groupKey(a), next)
      this.emit({ kind: 'group', aor: a })
      return next
    })
  }

  async deleteGroup (aor: string): Promise<boolean> {
    const a = normalizeAor(aor, 'group')
    return await this.serial(async () => {
      if (await this.getJson(groupKey(a)) === undefined) return false
      await this.write(groupKey(a), undefined)
      this.emit({ kind: 'group', aor: a })
      return true
    })
  }

  async listGroups (opts: { limit?: number } = {}): Promise<Group[]> {
    await this.open()
    const limit = Math.min(opts.limit ?? ACCOUNT_LIMITS.maxListLimit, ACCOUNT_LIMITS.maxListLimit)
    const out: Group[] = []
    for await (const [, raw] of this.db.iterator({ gte: GROUP_PREFIX, lt: GROUP_PREFIX + '\uffff', valueEncoding: 'utf8', limit })) {
      try { out.push(JSON.parse(raw as string) as Group) } catch {}
    }
    return out
  }
}

/** A view of an account without secrets, for CLIs and HTTP answers. */
export function publicAccount (a: Account): Record<string, unknown> {
  return {
    user: a.user,
    realm: a.realm,
    aor: `sip:${a.user}@${a.realm}`,
    enabled: a.enabled,
    ...(a.maxContacts !== undefined ? { maxContacts: a.maxContacts } : {}),
    ...(a.displayName !== undefined ? { displayName: a.displayName } : {}),
    algorithms: ['SHA-256', 'MD5', ...(a.ha1.sha512_256 !== undefined ? ['SHA-512-256'] : [])],
    created: new Date(a.created).toISOString(),
    updated: new Date(a.updated).toISOString()
  }
}
