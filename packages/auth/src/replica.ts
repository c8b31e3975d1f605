/**
 * AccountReplica — the accounts of a core node, replicated among the core nodes.
 *
 * A {@link LevelAccountStore} whose every record (user, group) carries a version (hybrid logical
 * clock: ms + counter + origin) and leaves a tombstone when deleted. A write on any core node is
 * applied locally, then pushed to the other core nodes; periodic anti-entropy (bucket digests of all
 * versions, then a pull and a push of the differences) lets a core node that was down or cut off catch
 * up. Conflicts resolve last-writer-wins by version, so every core node converges on the same records.
 *
 * It serves {@link ACCOUNTS_PROTO} requests: reads (`get-user`, `get-group`, `list-users`,
 * `list-groups`) and writes (`write`) from super nodes and admin tools, and replication (`push`,
 * `digest`, `pull`) from the other core nodes only. Super nodes that read are remembered for
 * `subscriberTtl` and told about changes ({@link ACCOUNTS_NOTIFY_PROTO}) so they drop cached entries.
 *
 * Storage (same db as LevelAccountStore): the records under `auth!user!…` / `auth!group!…` as before,
 * and `auth!ver!<id>` → `{ v, deleted, u, at }` (u = the record's `updated`, to notice offline edits made
 * by `sipring user …` on the db directly: they get a fresh version at start; at = when this node stored
 * the version, by its clock), and `auth!gc!horizon` → the newest version of a tombstone collected here.
 *
 * Tombstone collection (see docs/operations.md, "Deleted accounts"): a tombstone is dropped once
 *  1. it is older than `tombstoneTtl` (by its version's time: the delete), and
 *  2. every other core node has confirmed it: a *complete* anti-entropy round with that peer (every
 *     differing bucket listed, every pull and push done) started after this node stored the tombstone.
 * A core node that is down or cut off therefore holds collection back (however long it is away): when
 * it comes back, anti-entropy gives it the tombstone, which wins over its older live copy.
 * A replica the others did not wait for (removed from `--core-node` and added back, restored from an
 * old backup, inconsistent peer lists) cannot resurrect a collected record either: a live record whose
 * id this node does not know and whose version is not newer than the collection horizon is refused
 * and answered with a tombstone just newer than it, which deletes it on that replica.
 *
 * Writes (`write`) are accepted from the other core nodes only; super nodes may read (and their admin
 * API's writes are refused with `EPERM`): the operator writes through a core node's admin API / CLI.
 */
import { createHash } from 'node:crypto'
import type { Clock, Logger, Startable, Timer } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import {
  ACCOUNT_LIMITS, AccountError, GROUP_PREFIX, LevelAccountStore, USER_PREFIX,
  type Account, type AccountChange, type AccountDb, type Group
} from './accounts.js'
import { ACCOUNTS_NOTIFY_PROTO, ACCOUNTS_PROTO, type AccountRpc } from './rpc.js'
import {
  Hlc, WIRE_LIMITS, checkItem, checkList, checkVersion, compareVersions, idOfKey, keyOfId, parseId, versionText,
  type AccountItem, type AccountVersion
} from './wire.js'

export const VERSION_PREFIX = 'auth!ver!'
/** The collection horizon: the newest version of a tombstone this node has collected. */
export const GC_HORIZON_KEY = 'auth!gc!horizon'

export const TOMBSTONE_TTL = Object.freeze({
  /** Default grace period of a tombstone: 7 days. */
  default: 7 * 86_400_000,
  /** Bounds accepted by {@link AccountReplicaOptions.tombstoneTtl}, ms. */
  min: 1,
  max: 365 * 86_400_000
})

export interface AccountReplicaOptions {
  db: AccountDb
  clock: Clock
  logger?: Logger
  rpc: AccountRpc
  /** The other core nodes (their ids on the rpc network). */
  peers: string[]
  /** Anti-entropy with every peer this often, ms (default 30 s; 0 = only at start and by {@link AccountReplica.syncAll}). */
  antiEntropyInterval?: number
  /** Timeout of one replication request, ms (default 3000). */
  requestTimeout?: number
  /** A super node that read is told about changes for this long after its last read, ms (default 10 min). */
  subscriberTtl?: number
  /** Super nodes remembered for invalidations (oldest dropped beyond; default 1024). */
  maxSubscribers?: number
  /**
   * A tombstone (deleted user or group) is kept at least this long after the delete, ms (default 7
   * days, 1 ms to 365 days), and then until every other core node has confirmed it.
   */
  tombstoneTtl?: number
}

export interface AccountReplicaStats {
  /** Local writes pushed to a peer / pushes that failed (anti-entropy repairs them). */
  pushes: number
  pushFailures: number
  /** Items received (push or pull) that were newer than ours and applied. */
  applied: number
  /** Items received that were not newer (ignored). */
  stale: number
  /** Anti-entropy rounds completed / failed; items pulled and pushed by them. */
  syncRounds: number
  syncFailures: number
  pulled: number
  pushedBySync: number
  /** Requests refused with an error answer (bad body, replication request from a non-peer). */
  rejected: number
  /** Invalidation messages sent to super nodes / failed. */
  notifications: number
  notifyFailures: number
  /** Account writes refused because they came from a peer that is not a core node. */
  refusedWrites: number
  /** Tombstones collected (dropped after the grace period, confirmed by every core node). */
  tombstonesCollected: number
  /** Live records refused because they were deleted and collected here (a stale replica's copies). */
  resurrectionsRefused: number
}

export interface PeerSyncStatus {
  id: string
  /** ms since epoch of the last successful anti-entropy round with it. */
  lastSync?: number
  /** Start (ms since epoch) of the last complete anti-entropy round with it (confirms tombstones stored before). */
  lastComplete?: number
  lastError?: string
  reachable: boolean
}

export interface AccountReplicaStatus {
  self: string
  users: number
  groups: number
  tombstones: number
  /** Tombstones past the grace period still waiting for a core node's confirmation. */
  tombstonesWaiting: number
  tombstoneTtl: number
  peers: PeerSyncStatus[]
  subscribers: number
  stats: AccountReplicaStats
}

interface Meta { v: AccountVersion, deleted: boolean, u?: number, at?: number }

function isObj (x: unknown): x is Record<string, unknown> { return typeof x === 'object' && x !== null && !Array.isArray(x) }
function bad (msg: string): never { throw new AccountError('EINVAL', msg) }
function optString (x: unknown, what: string): string | undefined {
  if (x === undefined || x === null) return undefined
  if (typeof x !== 'string') bad(`${what} must be a string`)
  return x
}
function optLimit (x: unknown): number | undefined {
  if (x === undefined || x === null) return undefined
  if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > ACCOUNT_LIMITS.maxPageSize) bad(`limit must be an integer from 1 to ${ACCOUNT_LIMITS.maxPageSize}`)
  return x
}

const WRITE_METHODS = ['addUser', 'updateUser', 'deleteUser', 'addGroup', 'updateGroup', 'deleteGroup'] as const
type WriteMethod = typeof WRITE_METHODS[number]

export class AccountReplica extends LevelAccountStore implements Startable {
  readonly self: string
  readonly peers: readonly string[]
  readonly stats: AccountReplicaStats = {
    pushes: 0, pushFailures: 0, applied: 0, stale: 0, syncRounds: 0, syncFailures: 0, pulled: 0, pushedBySync: 0,
    rejected: 0, notifications: 0, notifyFailures: 0, refusedWrites: 0, tombstonesCollected: 0, resurrectionsRefused: 0
  }

  private readonly rpc: AccountRpc
  private readonly log: Logger
  private readonly hlc: Hlc
  private readonly versions = new Map<string, Meta>()
  private readonly peerState = new Map<string, PeerSyncStatus>()
  private readonly subscribers = new Map<string, number>()
  private readonly interval: number
  private readonly timeout: number
  private readonly subscriberTtl: number
  private readonly maxSubscribers: number
  readonly tombstoneTtl: number
  private horizon: AccountVersion | undefined
  private loadedAt = 0
  private lastRefusalLog = Number.NEGATIVE_INFINITY
  private refusalsNotLogged = 0
  private pendingChanges: AccountChange[] = []
  private flushTimer: Timer | undefined
  private syncTimer: Timer | undefined
  private unserve: (() => void) | undefined
  private running = false
  private syncing: Promise<void> | undefined

  constructor (o: AccountReplicaOptions) {
    super({ db: o.db, clock: o.clock })
    this.rpc = o.rpc
    this.self = o.rpc.self
    this.peers = [...new Set(o.peers.filter(p => p !== o.rpc.self))]
    this.log = (o.logger ?? silentLogger).child({ component: 'accounts-replica' })
    this.hlc = new Hlc(() => o.clock.now(), this.self)
    this.interval = o.antiEntropyInterval ?? 30_000
    this.timeout = o.requestTimeout ?? 3000
    this.subscriberTtl = o.subscriberTtl ?? 600_000
    this.maxSubscribers = o.maxSubscribers ?? 1024
    this.tombstoneTtl = o.tombstoneTtl ?? TOMBSTONE_TTL.default
    if (!Number.isInteger(this.tombstoneTtl) || this.tombstoneTtl < TOMBSTONE_TTL.min || this.tombstoneTtl > TOMBSTONE_TTL.max) {
      throw new TypeError(`tombstoneTtl must be an integer from ${TOMBSTONE_TTL.min} to ${TOMBSTONE_TTL.max} ms`)
    }
    for (const p of this.peers) this.peerState.set(p, { id: p, reachable: false })
  }

  /**
   * Load the versions (giving one to records without, or edited offline), serve requests, then catch
   * up with the peers in the background (see {@link synced}) and every `antiEntropyInterval`.
   */
  async start (): Promise<void> {
    if (this.running) return
    await this.open()
    await this.loadVersions()
    this.unserve = this.rpc.serve(ACCOUNTS_PROTO, async (body, from) => await this.handle(body, from))
    this.running = true
    this.syncing = this.syncAll().finally(() => { this.syncing = undefined })
    this.schedule()
    this.log.info({ self: this.self, peers: this.peers, records: this.versions.size }, 'accounts replica started')
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.syncTimer?.cancel(); this.syncTimer = undefined
    this.flushTimer?.cancel(); this.flushTimer = undefined
    this.unserve?.(); this.unserve = undefined
    await this.syncing?.catch(() => {})
    await this.serial(async () => {}) // let writes in progress finish
  }

  /** Resolves when the start-up catch-up with the peers is over (successful or not). */
  async synced (): Promise<void> { await this.syncing?.catch(() => {}) }

  /** The version of a record (`user!<realm>!<user>` / `group!<aor>`), tombstones included. */
  versionOf (id: string): { v: AccountVersion, deleted: boolean } | undefined {
    const m = this.versions.get(id)
    return m === undefined ? undefined : { v: { ...m.v }, deleted: m.deleted }
  }

  status (): AccountReplicaStatus {
    let users = 0; let groups = 0; let tombstones = 0; let tombstonesWaiting = 0
    const now = this.clock.now()
    for (const [id, m] of this.versions) {
      if (m.deleted) {
        tombstones++
        if (now - m.v.updated >= this.tombstoneTtl) tombstonesWaiting++
      } else if (id.startsWith('user!')) users++
      else groups++
    }
    return {
      self: this.self, users, groups, tombstones, tombstonesWaiting, tombstoneTtl: this.tombstoneTtl,
      peers: [...this.peerState.values()].map(p => ({ ...p })),
      subscribers: this.liveSubscribers().length,
      stats: { ...this.stats }
    }
  }

  // ------------------------------------------------------------------ versions

  private async loadVersions (): Promise<void> {
    const stored = new Map<string, Meta>()
    for await (const [key, raw] of this.db.iterator({ gte: VERSION_PREFIX, lt: VERSION_PREFIX + '\uffff', valueEncoding: 'utf8' })) {
      try {
        const m = JSON.parse(raw as string) as Record<string, unknown>
        stored.set((key as string).slice(VERSION_PREFIX.length), {
          v: checkVersion(m.v), deleted: m.deleted === true, ...(typeof m.u === 'number' ? { u: m.u } : {}), ...(typeof m.at === 'number' ? { at: m.at } : {})
        })
      } catch {}
    }
    this.horizon = undefined
    try {
      const raw = await this.db.get(GC_HORIZON_KEY, { valueEncoding: 'utf8' }) as string | undefined
      if (raw !== undefined && raw !== null) this.horizon = checkVersion(JSON.parse(raw))
    } catch {}
    this.loadedAt = this.clock.now()
    if (this.horizon !== undefined) this.hlc.observe(this.horizon)
    for (const m of stored.values()) this.hlc.observe(m.v)
    const records = new Map<string, number>()
    for (const prefix of [USER_PREFIX, GROUP_PREFIX]) {
      for await (const [key, raw] of this.db.iterator({ gte: prefix, lt: prefix + '\uffff', valueEncoding: 'utf8' })) {
        const id = idOfKey(key as string)
        if (id === undefined) continue
        let updated = 0
        try { updated = Number((JSON.parse(raw as string) as { updated?: unknown }).updated) || 0 } catch {}
        records.set(id, updated)
      }
    }
    const ops: Array<{ type: 'put', key: string, value: string }> = []
    const fresh = (u?: number): Meta => {
      const v = this.hlc.next()
      return u === undefined ? { v, deleted: true, at: this.loadedAt } : { v, deleted: false, u }
    }
    for (const [id, updated] of records) {
      const m = stored.get(id)
      // a record without a version, resurrected or edited while the node was down: a new version
      if (m === undefined || m.deleted || m.u !== updated) stored.set(id, fresh(updated))
      else continue
      ops.push({ type: 'put', key: VERSION_PREFIX + id, value: JSON.stringify(stored.get(id)) })
    }
    for (const [id, m] of stored) {
      if (!m.deleted && !records.has(id)) { // deleted while the node was down: a tombstone
        const t = fresh()
        stored.set(id, t)
        ops.push({ type: 'put', key: VERSION_PREFIX + id, value: JSON.stringify(t) })
      }
    }
    if (ops.length > 0) await this.db.batch(ops, { valueEncoding: 'utf8' })
    this.versions.clear()
    for (const [id, m] of stored) this.versions.set(id, m)
  }

  /** Every local write: version it, store record + version atomically, push it to the peers. */
  protected override async write (key: string, value: Account | Group | undefined): Promise<void> {
    const id = idOfKey(key)
    if (id === undefined) throw new TypeError(`not an account record key: ${key}`)
    const meta: Meta = value === undefined ? { v: this.hlc.next(), deleted: true, at: this.clock.now() } : { v: this.hlc.next(), deleted: false, u: value.updated }
    await this.db.batch([
      value === undefined ? { type: 'del', key } : { type: 'put', key, value: JSON.stringify(value) },
      { type: 'put', key: VERSION_PREFIX + id, value: JSON.stringify(meta) }
    ], { valueEncoding: 'utf8' })
    this.versions.set(id, meta)
    const item: AccountItem = { id, v: meta.v, deleted: meta.deleted, ...(value !== undefined ? { value } : {}) }
    for (const p of this.peers) void this.pushTo(p, [item])
  }

  private async pushTo (peer: string, items: AccountItem[]): Promise<void> {
    this.stats.pushes++
    try {
      await this.rpc.call(peer, ACCOUNTS_PROTO, { op: 'push', items }, { timeout: this.timeout })
    } catch (err) {
      this.stats.pushFailures++
      this.markPeer(peer, err)
      this.log.debug({ peer, err: (err as Error).message }, 'push to a core node failed; anti-entropy will repair it')
    }
  }

  /** Apply items from a peer: each one only if newer than ours (last writer wins). */
  async applyItems (items: AccountItem[]): Promise<number> {
    const newest = new Map<string, AccountItem>()
    for (const it of items) {
      const cur = newest.get(it.id)
      if (cur === undefined || compareVersions(it.v, cur.v) > 0) newest.set(it.id, it)
    }
    return await this.serial(async () => {
      const ops: Array<{ type: 'put', key: string, value: string } | { type: 'del', key: string }> = []
      const applied: Array<[string, Meta]> = []
      const now = this.clock.now()
      for (const it of newest.values()) {
        const cur = this.versions.get(it.id)
        if (cur !== undefined && compareVersions(it.v, cur.v) <= 0) { this.stats.stale++; continue }
        const key = keyOfId(it.id)
        if (cur === undefined && this.horizon !== undefined && compareVersions(it.v, this.horizon) <= 0) {
          // unknown here and not newer than what was collected: a deleted record coming back from a stale replica
          if (it.deleted) { this.stats.stale++; continue }
          this.stats.resurrectionsRefused++
          const tomb: Meta = { v: { updated: it.v.updated, counter: it.v.counter + 1, origin: it.v.origin }, deleted: true, at: now }
          ops.push({ type: 'put', key: VERSION_PREFIX + it.id, value: JSON.stringify(tomb) })
          applied.push([it.id, tomb])
          this.log.warn({ id: it.id.slice(0, 200), version: versionText(it.v) }, 'refused a deleted account coming back from a stale core node (collected here); answering with a tombstone')
          continue
        }
        const meta: Meta = it.deleted ? { v: it.v, deleted: true, at: now } : { v: it.v, deleted: false, u: it.value!.updated }
        ops.push(it.deleted ? { type: 'del', key } : { type: 'put', key, value: JSON.stringify(it.value) })
        ops.push({ type: 'put', key: VERSION_PREFIX + it.id, value: JSON.stringify(meta) })
        applied.push([it.id, meta])
      }
      if (ops.length > 0) await this.db.batch(ops, { valueEncoding: 'utf8' })
      for (const [id, meta] of applied) {
        this.versions.set(id, meta)
        this.hlc.observe(meta.v)
        const p = parseId(id)
        this.emit(p.kind === 'user' ? { kind: 'user', user: p.user, realm: p.realm } : { kind: 'group', aor: p.aor })
      }
      this.stats.applied += applied.length
      return applied.length
    })
  }

  private async itemOf (id: string): Promise<AccountItem | undefined> {
    const m = this.versions.get(id)
    if (m === undefined) return undefined
    if (m.deleted) return { id, v: m.v, deleted: true }
    const value = await this.getJson<Account | Group>(keyOfId(id))
    if (value === undefined) return undefined
    return { id, v: m.v, deleted: false, value }
  }

  // ------------------------------------------------------------------ anti-entropy

  /** Bucket digests (XOR of md5 of id + version) and the ids in each bucket. */
  private digest (): { digests: string[], members: string[][] } {
    const n = WIRE_LIMITS.buckets
    const acc = Array.from({ length: n }, () => Buffer.alloc(16))
    const members: string[][] = Array.from({ length: n }, () => [])
    for (const [id, m] of this.versions) {
      const h = createHash('md5').update(`${id}\n${versionText(m.v)}\n${m.deleted ? 'd' : 'l'}`).digest()
      const b = createHash('md5').update(id).digest()[0]! % n
      const a = acc[b]!
      for (let i = 0; i < 16; i++) a[i]! ^= h[i]!
      members[b]!.push(id)
    }
    return { digests: acc.map(a => a.toString('hex')), members }
  }

  private schedule (): void {
    if (!this.running || this.interval <= 0) return
    this.syncTimer = this.clock.setTimer(this.interval, () => {
      this.syncTimer = undefined
      if (!this.running) return
      this.syncing ??= this.syncAll().finally(() => { this.syncing = undefined })
      this.schedule()
    })
  }

  /** One anti-entropy round with every peer (in turn), then tombstone collection. Never rejects. */
  async syncAll (): Promise<void> {
    for (const p of this.peers) {
      if (!this.running) return
      try { await this.syncWith(p) } catch {}
    }
    if (!this.running) return
    try { await this.collectTombstones() } catch (err) { this.log.warn({ err: (err as Error).message }, 'tombstone collection failed') }
  }

  /**
   * Drop the tombstones older than `tombstoneTtl` that every other core node has confirmed (a complete
   * anti-entropy round with it started after the tombstone was stored here). Resolves with how many.
   */
  async collectTombstones (): Promise<number> {
    return await this.serial(async () => {
      const now = this.clock.now()
      const confirmed = this.peers.map(p => this.peerState.get(p)?.lastComplete ?? Number.NEGATIVE_INFINITY)
      const ids: string[] = []
      let horizon = this.horizon
      for (const [id, m] of this.versions) {
        if (!m.deleted || now - m.v.updated < this.tombstoneTtl) continue
        const at = m.at ?? this.loadedAt
        if (!confirmed.every(c => c > at)) continue
        ids.push(id)
        if (horizon === undefined || compareVersions(m.v, horizon) > 0) horizon = m.v
      }
      if (ids.length === 0) return 0
      const ops: Array<{ type: 'put', key: string, value: string } | { type: 'del', key: string }> = ids.map(id => ({ type: 'del', key: VERSION_PREFIX + id }))
      ops.push({ type: 'put', key: GC_HORIZON_KEY, value: JSON.stringify(horizon) })
      await this.db.batch(ops, { valueEncoding: 'utf8' })
      for (const id of ids) this.versions.delete(id)
      this.horizon = horizon
      this.stats.tombstonesCollected += ids.length
      this.log.info({ collected: ids.length, horizon: horizon !== undefined ? versionText(horizon) : undefined }, 'collected account tombstones (past the grace period, confirmed by every core node)')
      return ids.length
    })
  }

  /** The newest version of a tombstone collected here (live records not newer are refused when unknown). */
  collectionHorizon (): AccountVersion | undefined { return this.horizon === undefined ? undefined : { ...this.horizon } }

  /** Anti-entropy with one peer: exchange digests, pull what it has newer, push what we have newer. */
  async syncWith (peer: string): Promise<{ pulled: number, pushed: number }> {
    try {
      const started = this.clock.now()
      const mine = this.digest()
      const res = await this.rpc.call(peer, ACCOUNTS_PROTO, { op: 'digest', buckets: mine.digests }, { timeout: this.timeout })
      if (!isObj(res)) bad('bad digest answer')
      const diff = checkList(res.diff, WIRE_LIMITS.buckets, 'buckets').map(b => {
        if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b >= WIRE_LIMITS.buckets) bad('bad bucket index')
        return b
      })
      const more = res.more === true
      const remote = new Map<string, { v: AccountVersion, deleted: boolean }>()
      for (const e of checkList(res.versions, WIRE_LIMITS.maxVersions, 'versions')) {
        if (!Array.isArray(e) || e.length !== 5) bad('bad version entry')
        parseId(e[0])
        remote.set(e[0] as string, { v: checkVersion({ updated: e[1], counter: e[2], origin: e[3] }), deleted: e[4] === 1 })
      }
      const want: string[] = []
      for (const [id, r] of remote) {
        const cur = this.versions.get(id)
        if (cur === undefined || compareVersions(r.v, cur.v) > 0) want.push(id)
      }
      const give: string[] = []
      for (const b of diff) {
        for (const id of mine.members[b] ?? []) {
          const r = remote.get(id)
          const cur = this.versions.get(id)
          if (cur === undefined) continue
          if (r !== undefined ? compareVersions(cur.v, r.v) > 0 : !more) give.push(id)
        }
      }
      let pulled = 0
      for (let i = 0; i < want.length; i += WIRE_LIMITS.maxItems) {
        const ids = want.slice(i, i + WIRE_LIMITS.maxItems)
        const ans = await this.rpc.call(peer, ACCOUNTS_PROTO, { op: 'pull', ids }, { timeout: this.timeout })
        if (!isObj(ans)) bad('bad pull answer')
        const items = checkList(ans.items, WIRE_LIMITS.maxItems, 'items').map(checkItem)
        pulled += await this.applyItems(items)
      }
      let pushed = 0
      for (let i = 0; i < give.length; i += WIRE_LIMITS.maxItems) {
        const items: AccountItem[] = []
        for (const id of give.slice(i, i + WIRE_LIMITS.maxItems)) {
          const it = await this.itemOf(id)
          if (it !== undefined) items.push(it)
        }
        if (items.length === 0) continue
        await this.rpc.call(peer, ACCOUNTS_PROTO, { op: 'push', items }, { timeout: this.timeout })
        pushed += items.length
      }
      this.stats.syncRounds++
      this.stats.pulled += pulled
      this.stats.pushedBySync += pushed
      const st = this.peerState.get(peer)
      if (st !== undefined) {
        st.lastSync = this.clock.now(); st.reachable = true; delete st.lastError
        // every differing bucket was listed and every pull / push done: the peer holds what we held at the start
        if (!more) st.lastComplete = started
      }
      if (pulled + pushed > 0) this.log.info({ peer, pulled, pushed }, 'accounts anti-entropy repaired differences')
      return { pulled, pushed }
    } catch (err) {
      this.stats.syncFailures++
      this.markPeer(peer, err)
      this.log.debug({ peer, err: (err as Error).message }, 'accounts anti-entropy round failed')
      throw err
    }
  }

  private markPeer (peer: string, err: unknown): void {
    const st = this.peerState.get(peer)
    if (st === undefined) return
    st.reachable = false
    st.lastError = (err as Error).message?.slice(0, 200) ?? String(err)
  }

  // ------------------------------------------------------------------ invalidations to super nodes

  private subscribe (peer: string): void {
    if (this.peerState.has(peer) || peer === this.self) return
    this.subscribers.delete(peer)
    this.subscribers.set(peer, this.clock.now() + this.subscriberTtl)
    while (this.subscribers.size > this.maxSubscribers) {
      const oldest = this.subscribers.keys().next().value as string
      this.subscribers.delete(oldest)
    }
  }

  private liveSubscribers (): string[] {
    const now = this.clock.now()
    const out: string[] = []
    for (const [p, until] of this.subscribers) {
      if (until <= now) this.subscribers.delete(p)
      else out.push(p)
    }
    return out
  }

  protected override emit (c: AccountChange): void {
    super.emit(c)
    if (!this.running) return
    this.pendingChanges.push(c)
    this.flushTimer ??= this.clock.setTimer(0, () => { this.flushTimer = undefined; this.flush() })
  }

  private flush (): void {
    const changes = this.pendingChanges
    this.pendingChanges = []
    const subs = this.liveSubscribers()
    if (changes.length === 0 || subs.length === 0) return
    const body = changes.length > WIRE_LIMITS.maxItems ? { all: true } : { changes }
    for (const s of subs) {
      this.stats.notifications++
      this.rpc.call(s, ACCOUNTS_NOTIFY_PROTO, body, { timeout: this.timeout }).catch(() => { this.stats.notifyFailures++ })
    }
  }

  // ------------------------------------------------------------------ serving

  /** Account writes: from the other core nodes only (a super node reads; the operator writes on a core node). */
  private requireWriter (from: string, method: string): void {
    if (this.peerState.has(from)) return
    this.stats.refusedWrites++
    const now = this.clock.now()
    if (now - this.lastRefusalLog >= 10_000) {
      this.log.warn({ peer: from.slice(0, 80), method, notLogged: this.refusalsNotLogged }, 'refused an account write from a peer that is not a core node')
      this.lastRefusalLog = now
      this.refusalsNotLogged = 0
    } else this.refusalsNotLogged++
    throw new AccountError('EPERM', `account writes are accepted from the core nodes only, not from ${from.slice(0, 80)}: write users and groups on a core node (its admin API or \`sipring user\` there)`)
  }

  private requirePeer (from: string): void {
    if (!this.peerState.has(from)) throw new AccountError('EINVAL', `replication requests are accepted from the core nodes only, not from ${from.slice(0, 80)}`)
  }

  /** Answers one {@link ACCOUNTS_PROTO} request; throws AccountError (EINVAL…) on a bad one. */
  async handle (body: unknown, from: string): Promise<unknown> {
    try {
      return await this.dispatch(body, from)
    } catch (err) {
      if (err instanceof AccountError && (err.code === 'EINVAL' || err.code === 'EPERM')) this.stats.rejected++
      throw err
    }
  }

  private async dispatch (body: unknown, from: string): Promise<unknown> {
    if (!isObj(body) || typeof body.op !== 'string') bad('request must be an object with an op')
    switch (body.op) {
      case 'get-user': {
        this.subscribe(from)
        if (typeof body.user !== 'string' || typeof body.realm !== 'string') bad('get-user needs user and realm strings')
        return { account: (await this.getUser(body.user, body.realm)) ?? null }
      }
      case 'get-group': {
        this.subscribe(from)
        if (typeof body.aor !== 'string') bad('get-group needs an aor string')
        return { group: (await this.getGroup(body.aor)) ?? null }
      }
      case 'list-users': {
        // one page (count and bytes bounded, so an answer always fits in one overlay frame)
        const realm = optString(body.realm, 'realm')
        const after = optString(body.after, 'after')
        const limit = optLimit(body.limit)
        const page = await this.listUsersPage({ ...(realm !== undefined ? { realm } : {}), ...(after !== undefined ? { after } : {}), ...(limit !== undefined ? { limit } : {}) })
        return { users: page.items, ...(page.next !== undefined ? { next: page.next } : {}) }
      }
      case 'list-groups': {
        const after = optString(body.after, 'after')
        const limit = optLimit(body.limit)
        const page = await this.listGroupsPage({ ...(after !== undefined ? { after } : {}), ...(limit !== undefined ? { limit } : {}) })
        return { groups: page.items, ...(page.next !== undefined ? { next: page.next } : {}) }
      }
      case 'write': {
        const method = body.method
        if (typeof method !== 'string' || !(WRITE_METHODS as readonly string[]).includes(method)) bad(`write method must be one of ${WRITE_METHODS.join(', ')}`)
        this.requireWriter(from, method)
        const args = checkList(body.args, 3, 'arguments')
        return { result: await this.callWrite(method as WriteMethod, args) }
      }
      case 'push': {
        this.requirePeer(from)
        const items = checkList(body.items, WIRE_LIMITS.maxItems, 'items').map(checkItem)
        return { applied: await this.applyItems(items) }
      }
      case 'digest': {
        this.requirePeer(from)
        const theirs = checkList(body.buckets, WIRE_LIMITS.buckets, 'buckets')
        if (theirs.length !== WIRE_LIMITS.buckets) bad(`digest needs ${WIRE_LIMITS.buckets} buckets`)
        for (const d of theirs) if (typeof d !== 'string' || !/^[0-9a-f]{32}$/.test(d)) bad('bad bucket digest')
        const mine = this.digest()
        const diff: number[] = []
        theirs.forEach((d, i) => { if (d !== mine.digests[i]) diff.push(i) })
        const versions: Array<[string, number, number, string, 0 | 1]> = []
        let more = false
        for (const b of diff) {
          for (const id of mine.members[b]!) {
            if (versions.length >= WIRE_LIMITS.maxVersions) { more = true; break }
            const m = this.versions.get(id)!
            versions.push([id, m.v.updated, m.v.counter, m.v.origin, m.deleted ? 1 : 0])
          }
        }
        const st = this.peerState.get(from)
        if (st !== undefined) st.reachable = true
        return { diff, versions, more }
      }
      case 'pull': {
        this.requirePeer(from)
        const ids = checkList(body.ids, WIRE_LIMITS.maxItems, 'ids')
        const items: AccountItem[] = []
        for (const id of ids) {
          if (typeof id !== 'string') bad('bad id')
          const it = await this.itemOf(id)
          if (it !== undefined) items.push(it)
        }
        return { items }
      }
      default:
        return bad(`unknown op ${JSON.stringify(body.op.slice(0, 40))}`)
    }
  }

  private async callWrite (method: WriteMethod, args: unknown[]): Promise<unknown> {
    const a = args as any[]
    switch (method) {
      case 'addUser': return await this.addUser(a[0])
      case 'updateUser': return await this.updateUser(a[0], a[1], a[2])
      case 'deleteUser': return await this.deleteUser(a[0], a[1])
      case 'addGroup': return await this.addGroup(a[0])
      case 'updateGroup': return await this.updateGroup(a[0], a[1])
      case 'deleteGroup': return await this.deleteGroup(a[0])
    }
  }
}
