/**
 * RemoteAccountStore — the super-node side of the core nodes: an {@link AccountStore} that reads
 * accounts and groups from the core nodes over an {@link AccountRpc} (the overlay).
 *
 * - Reads go to one core node at a time: the last one that answered first, the ones that failed
 *   recently (`downFor`) last; a core node that times out or is unreachable is skipped for the next.
 * - Answers are cached (positive for `ttl`, "no such user" for `negativeTtl`, LRU of `maxEntries`);
 *   concurrent reads of one key share one request.
 * - When no core node answers, an expired cache entry younger than `maxStale` is served (the super
 *   node keeps authenticating its users while the core nodes are down); with nothing cached the read
 *   rejects with `AccountError('EUNAVAILABLE')`.
 * - Core nodes push invalidations ({@link ACCOUNTS_NOTIFY_PROTO}, accepted from the configured core
 *   nodes only): the entry is dropped and `onChange` listeners (the digest server's cache) are told.
 * - Writes are forwarded to a core node (the next one on a transport failure; a core node's refusal —
 *   EINVAL, EEXIST, ENOTFOUND, EPERM — is final). A write that timed out may still have been applied.
 *   Core nodes accept writes from the other core nodes only, so a super node's writes are refused with
 *   `EPERM` (the operator writes on a core node); a deployment may allow them in the future.
 * - Listings page (`list-users` / `list-groups` with a cursor): each answer fits in one overlay frame;
 *   `listUsers` / `listGroups` follow the pages up to their limit.
 * No timers of its own: expiry is checked on read.
 */
import type { Clock, Logger } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import {
  AccountError, ACCOUNT_LIMITS, normalizeAor,
  checkPageOptions,
  type Account, type AccountChange, type AccountErrorCode, type AccountStore, type Group, type GroupPolicy, type NewGroup, type NewUser, type Page, type PageOptions, type UserPatch
} from './accounts.js'
import { LruMap } from './limiter.js'
import { ACCOUNTS_NOTIFY_PROTO, ACCOUNTS_PROTO, AccountRpcError, type AccountRpc } from './rpc.js'
import { WIRE_LIMITS, checkAccount, checkGroup, checkList } from './wire.js'

export interface RemoteAccountStoreOptions {
  rpc: AccountRpc
  clock: Clock
  logger?: Logger
  /** The core nodes' ids, in order of preference. */
  cores: string[]
  /** Timeout of one request to one core node, ms (default 1000). */
  timeout?: number
  /** Cache lifetime of a found user/group, ms (default 30 s). */
  ttl?: number
  /** Cache lifetime of "not found", ms (default 5 s). */
  negativeTtl?: number
  /** Serve an expired entry this long after it was fetched when no core node answers, ms (default 24 h). */
  maxStale?: number
  /** Cached entries (LRU; default 100,000). */
  maxEntries?: number
  /** A core node that failed is tried last for this long, ms (default 5 s). */
  downFor?: number
}

export interface RemoteAccountStats {
  hits: number
  misses: number
  /** Reads answered from an expired entry because no core node answered. */
  staleServed: number
  /** Reads that failed: no core node answered and nothing cached. */
  unavailable: number
  /** Requests to a core node that failed (timeout, unreachable) and moved on to the next. */
  failovers: number
  /** Invalidations received from core nodes / ignored (not from a configured core node, or malformed). */
  invalidations: number
  invalidationsIgnored: number
  writes: number
}

interface Entry { value: Account | Group | null, fetched: number, expires: number }

const ACCOUNT_CODES = new Set<AccountErrorCode>(['EINVAL', 'EEXIST', 'ENOTFOUND', 'EPERM'])

function isObj (x: unknown): x is Record<string, unknown> { return typeof x === 'object' && x !== null && !Array.isArray(x) }

export class RemoteAccountStore implements AccountStore {
  readonly stats: RemoteAccountStats = { hits: 0, misses: 0, staleServed: 0, unavailable: 0, failovers: 0, invalidations: 0, invalidationsIgnored: 0, writes: 0 }
  readonly cores: readonly string[]
  private readonly rpc: AccountRpc
  private readonly clock: Clock
  private readonly log: Logger
  private readonly timeout: number
  private readonly ttl: number
  private readonly negativeTtl: number
  private readonly maxStale: number
  private readonly downFor: number
  private readonly cache: LruMap<string, Entry>
  private readonly inflight = new Map<string, Promise<Account | Group | null>>()
  private readonly downUntil = new Map<string, number>()
  private readonly listeners = new Set<(c: AccountChange) => void>()
  /** Users found so far (to announce them when a core node says "drop everything"). */
  private readonly knownUsers: LruMap<string, { user: string, realm: string }>
  private preferred: string | undefined
  private unserve: (() => void) | undefined

  constructor (o: RemoteAccountStoreOptions) {
    if (o.cores.length === 0) throw new TypeError('RemoteAccountStore needs at least one core node')
    this.rpc = o.rpc
    this.clock = o.clock
    this.log = (o.logger ?? silentLogger).child({ component: 'accounts-remote' })
    this.cores = [...new Set(o.cores)]
    this.timeout = o.timeout ?? 1000
    this.ttl = o.ttl ?? 30_000
    this.negativeTtl = o.negativeTtl ?? 5_000
    this.maxStale = o.maxStale ?? 86_400_000
    this.downFor = o.downFor ?? 5_000
    this.cache = new LruMap(o.maxEntries ?? 100_000)
    this.knownUsers = new LruMap(o.maxEntries ?? 100_000)
    this.unserve = this.rpc.serve(ACCOUNTS_NOTIFY_PROTO, (body, from) => this.onNotify(body, from))
  }

  /** Stop accepting invalidations. */
  close (): void { this.unserve?.(); this.unserve = undefined }

  onChange (fn: (c: AccountChange) => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }

  /** Reachability as last seen: `down` until the time a failed core node is tried first again. */
  coreStatus (): Array<{ id: string, preferred: boolean, downUntil?: number }> {
    const now = this.clock.now()
    return this.cores.map(id => {
      const d = this.downUntil.get(id)
      return { id, preferred: id === this.preferred, ...(d !== undefined && d > now ? { downUntil: d } : {}) }
    })
  }

  get cacheSize (): number { return this.cache.size }

  private emit (c: AccountChange): void {
    for (const fn of this.listeners) {
      try { fn(c) } catch {}
    }
  }

  private onNotify (body: unknown, from: string): unknown {
    if (!this.cores.includes(from)) { this.stats.invalidationsIgnored++; throw new AccountError('EINVAL', 'invalidations are accepted from the configured core nodes only') }
    if (!isObj(body)) { this.stats.invalidationsIgnored++; throw new AccountError('EINVAL', 'bad invalidation') }
    if (body.all === true) {
      this.stats.invalidations++
      // everything cached is dropped and the users read so far announced (the digest server drops its copies)
      this.cache.clear()
      this.emitAllCached()
      return { dropped: 'all' }
    }
    const changes = checkList(body.changes, WIRE_LIMITS.maxItems, 'changes')
    let n = 0
    for (const c of changes) {
      if (!isObj(c)) continue
      if (c.kind === 'user' && typeof c.user === 'string' && typeof c.realm === 'string' && c.user.length <= ACCOUNT_LIMITS.maxUserLength && c.realm.length <= ACCOUNT_LIMITS.maxRealmLength) {
        this.cache.delete(userKey(c.user, c.realm))
        this.emit({ kind: 'user', user: c.user, realm: c.realm.toLowerCase() })
        n++
      } else if (c.kind === 'group' && typeof c.aor === 'string' && c.aor.length <= 512) {
        this.cache.delete(groupKey(c.aor))
        this.emit({ kind: 'group', aor: c.aor })
        n++
      }
    }
    this.stats.invalidations += n
    return { dropped: n }
  }

  private emitAllCached (): void {
    for (const u of this.knownUsers.values()) this.emit({ kind: 'user', user: u.user, realm: u.realm })
    this.knownUsers.clear()
  }

  /** The core nodes in the order to try: the preferred one, the others, the ones down recently last. */
  private order (): string[] {
    const now = this.clock.now()
    const up: string[] = []; const down: string[] = []
    const list = this.preferred !== undefined ? [this.preferred, ...this.cores.filter(c => c !== this.preferred)] : [...this.cores]
    for (const c of list) ((this.downUntil.get(c) ?? 0) > now ? down : up).push(c)
    return [...up, ...down]
  }

  /**
   * Send one request to the core nodes in turn. A refusal by a core node (an AccountError code) is
   * thrown as AccountError; transport failures move on; all failing → the last error.
   */
  private async call (body: Record<string, unknown>): Promise<Record<string, unknown>> {
    let last: Error | undefined
    for (const core of this.order()) {
      try {
        const res = await this.rpc.call(core, ACCOUNTS_PROTO, body, { timeout: this.timeout })
        this.downUntil.delete(core)
        this.preferred = core
        if (!isObj(res)) throw new AccountError('EINVAL', `core node ${core} answered something that is not an object`)
        return res
      } catch (err) {
        if (err instanceof AccountRpcError && err.remote && ACCOUNT_CODES.has(err.code as AccountErrorCode)) {
          this.downUntil.delete(core)
          throw new AccountError(err.code as AccountErrorCode, err.message)
        }
        if (err instanceof AccountError) throw err
        last = err as Error
        this.stats.failovers++
        this.downUntil.set(core, this.clock.now() + this.downFor)
        if (this.preferred === core) this.preferred = undefined
        this.log.debug({ core, op: body.op, err: last.message }, 'core node did not answer; trying the next')
      }
    }
    throw new AccountError('EUNAVAILABLE', `no core node answered (${this.cores.length} tried): ${last?.message ?? 'no core node'}`)
  }

  private async read<T extends Account | Group> (key: string, body: Record<string, unknown>, parse: (res: Record<string, unknown>) => T | null): Promise<T | undefined> {
    const now = this.clock.now()
    const e = this.cache.get(key)
    if (e !== undefined && e.expires > now) { this.stats.hits++; return (e.value ?? undefined) as T | undefined }
    this.stats.misses++
    let p = this.inflight.get(key)
    if (p === undefined) {
      p = (async () => {
        try {
          const v = parse(await this.call(body))
          const t = this.clock.now()
          this.cache.set(key, { value: v, fetched: t, expires: t + (v === null ? this.negativeTtl : this.ttl) })
          return v
        } catch (err) {
          if (!(err instanceof AccountError) || err.code !== 'EUNAVAILABLE') throw err
          const old = this.cache.peek(key)
          if (old !== undefined && this.clock.now() - old.fetched <= this.maxStale) {
            this.stats.staleServed++
            return old.value
          }
          this.stats.unavailable++
          throw err
        }
      })().finally(() => { this.inflight.delete(key) })
      this.inflight.set(key, p)
    }
    return ((await p) ?? undefined) as T | undefined
  }

  async getUser (user: string, realm: string): Promise<Account | undefined> {
    if (typeof user !== 'string' || typeof realm !== 'string' || user.length === 0 || realm.length === 0 || user.length > ACCOUNT_LIMITS.maxUserLength || realm.length > ACCOUNT_LIMITS.maxRealmLength) return undefined
    const r = realm.toLowerCase()
    const a = await this.read(userKey(user, r), { op: 'get-user', user, realm: r }, res => res.account === null || res.account === undefined ? null : checkAccount(res.account, { user, realm: r }))
    if (a !== undefined) this.knownUsers.set(userKey(user, r), { user, realm: r })
    return a
  }

  async getGroup (aor: string): Promise<Group | undefined> {
    let a: string
    try { a = normalizeAor(aor) } catch { return undefined }
    return await this.read(groupKey(a), { op: 'get-group', aor: a }, res => res.group === null || res.group === undefined ? null : checkGroup(res.group, a))
  }

  /** One page from a core node (`list-users`), checked. */
  async listUsersPage (opts: PageOptions & { realm?: string } = {}): Promise<Page<Account>> {
    const { after, limit } = checkPageOptions(opts)
    const res = await this.call({ op: 'list-users', ...(opts.realm !== undefined ? { realm: opts.realm } : {}), ...(after !== undefined ? { after } : {}), limit })
    return { items: checkList(res.users, ACCOUNT_LIMITS.maxPageSize, 'users').map(u => checkAccount(u)), ...nextOf(res, after) }
  }

  async listGroupsPage (opts: PageOptions = {}): Promise<Page<Group>> {
    const { after, limit } = checkPageOptions(opts)
    const res = await this.call({ op: 'list-groups', ...(after !== undefined ? { after } : {}), limit })
    return { items: checkList(res.groups, ACCOUNT_LIMITS.maxPageSize, 'groups').map(g => checkGroup(g)), ...nextOf(res, after) }
  }

  /** Every user (up to `limit`, default and at most 100,000), page after page. */
  async listUsers (opts: { realm?: string, limit?: number } = {}): Promise<Account[]> {
    return await allPages(opts.limit, async (after, limit) => await this.listUsersPage({ ...(opts.realm !== undefined ? { realm: opts.realm } : {}), ...(after !== undefined ? { after } : {}), limit }))
  }

  async listGroups (opts: { limit?: number } = {}): Promise<Group[]> {
    return await allPages(opts.limit, async (after, limit) => await this.listGroupsPage({ ...(after !== undefined ? { after } : {}), limit }))
  }

  private async write (method: string, args: unknown[], changed: AccountChange | undefined): Promise<unknown> {
    this.stats.writes++
    const res = await this.call({ op: 'write', method, args })
    if (changed !== undefined) {
      this.cache.delete(changed.kind === 'user' ? userKey(changed.user, changed.realm) : groupKey(changed.aor))
      this.emit(changed)
    }
    return res.result
  }

  async addUser (u: NewUser): Promise<Account> {
    const a = checkAccount(await this.write('addUser', [u], undefined))
    this.cache.delete(userKey(a.user, a.realm)); this.emit({ kind: 'user', user: a.user, realm: a.realm })
    return a
  }

  async updateUser (user: string, realm: string, patch: UserPatch): Promise<Account> {
    const a = checkAccount(await this.write('updateUser', [user, realm, patch], undefined))
    this.cache.delete(userKey(a.user, a.realm)); this.emit({ kind: 'user', user: a.user, realm: a.realm })
    return a
  }

  async deleteUser (user: string, realm: string): Promise<boolean> {
    const r = typeof realm === 'string' ? realm.toLowerCase() : realm
    return (await this.write('deleteUser', [user, r], typeof user === 'string' && typeof r === 'string' ? { kind: 'user', user, realm: r } : undefined)) === true
  }

  async addGroup (g: NewGroup): Promise<Group> {
    const res = checkGroup(await this.write('addGroup', [g], undefined))
    this.cache.delete(groupKey(res.aor)); this.emit({ kind: 'group', aor: res.aor })
    return res
  }

  async updateGroup (aor: string, patch: { members?: string[], add?: string[], remove?: string[], policy?: GroupPolicy }): Promise<Group> {
    const res = checkGroup(await this.write('updateGroup', [aor, patch], undefined))
    this.cache.delete(groupKey(res.aor)); this.emit({ kind: 'group', aor: res.aor })
    return res
  }

  async deleteGroup (aor: string): Promise<boolean> {
    let a: string | undefined
    try { a = normalizeAor(aor, 'group') } catch {}
    return (await this.write('deleteGroup', [aor], a !== undefined ? { kind: 'group', aor: a } : undefined)) === true
  }
}

/** A core node's `next` cursor: a string that moves forward (anything else ends the listing). */
function nextOf (res: Record<string, unknown>, after: string | undefined): { next?: string } {
  const n = res.next
  if (n === undefined || n === null) return {}
  if (typeof n !== 'string' || n.length === 0 || n.length > ACCOUNT_LIMITS.maxCursorLength || (after !== undefined && n <= after)) throw new AccountError('EINVAL', 'a core node answered a bad page cursor')
  return { next: n }
}

/** Follow the pages until the end or `limit` items (default and at most `maxListLimit`). */
async function allPages<T> (limit: number | undefined, page: (after: string | undefined, limit: number) => Promise<Page<T>>): Promise<T[]> {
  const max = Math.min(limit ?? ACCOUNT_LIMITS.maxListLimit, ACCOUNT_LIMITS.maxListLimit)
  const out: T[] = []
  let after: string | undefined
  while (out.length < max) {
    const p = await page(after, Math.min(ACCOUNT_LIMITS.maxPageSize, max - out.length))
    out.push(...p.items)
    if (p.next === undefined) break
    after = p.next
  }
  return out.slice(0, max)
}

const userKey = (user: string, realm: string): string => `u\n${realm.toLowerCase()}\n${user}`
const groupKey = (aor: string): string => `g\n${aor}`
