import type { AbstractLevel } from 'abstract-level'
import type { Binding, Clock, Destination, Logger, Startable, Timer } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import { contactKey } from './uri-key.js'

/** Any abstract-level database with string keys; values are written with the `json` encoding. */
export type LocationDb = AbstractLevel<any, string, any>

export interface LocationLimits {
  /** Bindings one AOR may hold (default 10). */
  maxContactsPerAor: number
  /** AORs the store may hold (default 1,000,000). */
  maxAors: number
}

export const DEFAULT_LIMITS: Readonly<LocationLimits> = Object.freeze({ maxContactsPerAor: 10, maxAors: 1_000_000 })

export interface LocationStoreOptions {
  clock: Clock
  logger?: Logger
  /** Persistence; omitted = memory only. */
  db?: LocationDb
  limits?: Partial<LocationLimits>
  /** Period of the expiry sweep (default 1000 ms). */
  sweepIntervalMs?: number
  /** Writes are coalesced for this long before one batch goes to the db (default 5 ms). */
  writeDelayMs?: number
}

/** One Contact of a REGISTER, already validated by the registrar. */
export interface ContactUpdate {
  /** Contact URI (without `<>`). */
  contact: string
  /** URI-equality key; default {@link contactKey}(contact). */
  key?: string
  /** Full Contact header value, echoed in the 200 OK. */
  contactHeader?: string
  /** Relative expiry in seconds; 0 removes the binding. */
  expires: number
  q?: number
  path?: string[]
  /** RFC 5626 +sip.instance (angle brackets kept, double quotes stripped). */
  instance?: string
  /** RFC 5626 reg-id: only meaningful together with `instance`. */
  regId?: number
  received?: Destination
  node?: string
  userAgent?: string
}

export interface RegisterUpdate {
  /** The contacts, or `'*'` (wildcard: remove all; the registrar checked Expires: 0). */
  contacts: ContactUpdate[] | '*'
  callId: string
  cseq: number
  /** Override of the clock (ms since epoch). */
  now?: number
}

/**
 * Why an update was refused:
 * - `out-of-order`: a binding with the same Call-ID has a CSeq ≥ the request's (RFC 3261 §10.3 steps
 *   6/7: "the update MUST be aborted and the request fails"). The registrar answers
 *   `400 Invalid CSeq number`, as Kamailio's registrar does (R_INV_CSEQ).
 * - `too-many-contacts`: the AOR would hold more than `maxContactsPerAor` bindings. The registrar
 *   answers `503 Too many registered contacts` (Kamailio R_TOO_MANY).
 * - `too-many-aors`: the store already holds `maxAors` AORs (`503 Location table full`).
 */
export type RegisterError = 'out-of-order' | 'too-many-contacts' | 'too-many-aors'

export interface RegisterResult {
  ok: boolean
  error?: RegisterError
  /** The AOR's current bindings after the update (or unchanged ones on error), lookup order. */
  bindings: Binding[]
  /** Numbers of bindings inserted / updated / deleted by this update. */
  inserted: number
  updated: number
  deleted: number
}

export interface LocationEvents {
  insert: (b: Binding) => void
  update: (b: Binding) => void
  delete: (b: Binding) => void
  expire: (b: Binding) => void
}
export type LocationEvent = keyof LocationEvents

/** Thrown for misuse (bad arguments), never for SIP-level problems (those are RegisterResult errors). */
export class LocationError extends Error {
  constructor (message: string) { super(message); this.name = 'LocationError' }
}

/** One AOR's bindings; `ids[i]` is the identity key of `list[i]`. */
interface AorRecord { ids: string[], list: Binding[] }

interface Stored { k: string, b: Binding }

/** Shared by every binding without Path (saves an array per binding). */
const NO_PATH: string[] = Object.freeze([]) as unknown as string[]

const KEY_PREFIX = 'b!'
const KEY_END = 'b"'

/**
 * Identity of a binding inside its AOR: RFC 5626 bindings (instance + reg-id) are keyed by
 * (instance, reg-id) so one UA may hold several flows with the same Contact URI; the others by
 * the Contact URI equality key.
 */
function identity (key: string, instance: string | undefined, regId: number | undefined): string {
  if (instance !== undefined && regId !== undefined) return `o:${instance.toLowerCase()}:${regId}`
  return `u:${key}`
}

function byLookupOrder (a: Binding, b: Binding): number {
  return b.q - a.q || b.updated - a.updated
}

function freezeBinding (b: Binding): Binding {
  Object.freeze(b.path)
  if (b.received !== undefined) Object.freeze(b.received)
  return Object.freeze(b)
}

function isValidStored (v: unknown): v is Stored {
  if (typeof v !== 'object' || v === null) return false
  const s = v as Partial<Stored>
  const b = s.b as Partial<Binding> | undefined
  return typeof s.k === 'string' && typeof b === 'object' && b !== null &&
    typeof b.aor === 'string' && typeof b.contact === 'string' && typeof b.expires === 'number' &&
    typeof b.q === 'number' && typeof b.callId === 'string' && typeof b.cseq === 'number' &&
    Array.isArray(b.path) && typeof b.updated === 'number'
}

/**
 * The location service ("usrloc"): AOR → bindings in memory, written through to an abstract-level
 * db in coalesced batches, expired by a periodic sweep on the injected Clock.
 *
 * Bindings handed out (lookup results, events) are frozen objects: a change replaces the object.
 */
export class LocationStore implements Startable {
  readonly limits: Readonly<LocationLimits>
  private readonly clock: Clock
  private readonly log: Logger
  private readonly db: LocationDb | undefined
  private readonly sweepIntervalMs: number
  private readonly writeDelayMs: number

  private readonly records = new Map<string, AorRecord>()
  /**
   * connectionId → AOR(s) holding a binding received over that connection (RFC 5626 flows); a plain
   * string for the usual single AOR, a Set beyond (saves ~150 bytes per connection).
   */
  private readonly byConn = new Map<string, string | Set<string>>()
  private contactCount = 0
  /** Expiry wheel: second → AORs holding a binding that expires within that second. */
  private readonly wheel = new Map<number, string[]>()
  private nextSecond = -1
  private sweepTimer: Timer | undefined
  private running = false

  /** Pending db writes: db key → value (or null for a delete), coalesced until the batch goes. */
  private pending = new Map<string, Stored | null>()
  private writeTimer: Timer | undefined
  private writing: Promise<void> = Promise.resolve()
  private writeErrors = 0

  private readonly listeners: { [E in LocationEvent]: Array<LocationEvents[E]> } =
    { insert: [], update: [], delete: [], expire: [] }

  constructor (opts: LocationStoreOptions) {
    this.clock = opts.clock
    this.log = (opts.logger ?? silentLogger).child({ component: 'location' })
    this.db = opts.db
    const limits = { ...DEFAULT_LIMITS, ...opts.limits }
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isInteger(v) || v < 1) throw new LocationError(`limit ${k} must be a positive integer, got ${String(v)}`)
    }
    this.limits = Object.freeze(limits)
    this.sweepIntervalMs = opts.sweepIntervalMs ?? 1000
    this.writeDelayMs = opts.writeDelayMs ?? 5
    if (!(this.sweepIntervalMs > 0)) throw new LocationError('sweepIntervalMs must be > 0')
    if (!(this.writeDelayMs >= 0)) throw new LocationError('writeDelayMs must be >= 0')
  }

  // ------------------------------------------------------------ lifecycle

  /** Load the db (dropping expired bindings) and start the expiry sweep. */
  async start (): Promise<void> {
    if (this.running) return
    if (this.db !== undefined) await this.load(this.db)
    this.running = true
    this.nextSecond = Math.floor(this.clock.now() / 1000)
    this.scheduleSweep()
  }

  /** Cancel timers and flush pending writes. The db itself is left open (its owner closes it). */
  async stop (): Promise<void> {
    this.running = false
    this.sweepTimer?.cancel()
    this.sweepTimer = undefined
    await this.flush()
  }

  /** Resolve once every write issued so far reached the db. */
  async flush (): Promise<void> {
    this.writeTimer?.cancel()
    this.writeTimer = undefined
    this.startBatch()
    await this.writing
  }

  /** Number of failed db batches since start (they are logged; memory stays authoritative). */
  get failedWrites (): number { return this.writeErrors }

  private async load (db: LocationDb): Promise<void> {
    if (db.status === 'opening' || db.status === 'closed') await db.open()
    const now = this.clock.now()
    const drop: string[] = []
    let loaded = 0
    for await (const [key, raw] of db.iterator({ gte: KEY_PREFIX, lt: KEY_END, valueEncoding: 'utf8' })) {
      let value: unknown
      try { value = JSON.parse(raw as string) } catch { value = undefined }
      if (!isValidStored(value) || value.b.expires <= now) { drop.push(key); continue }
      const b = freezeBinding({ ...value.b, path: value.b.path.length === 0 ? NO_PATH : [...value.b.path] })
      let rec = this.records.get(b.aor)
      if (rec === undefined) { rec = { ids: [], list: [] }; this.records.set(b.aor, rec) }
      const i = rec.ids.indexOf(value.k)
      if (i >= 0) { rec.list[i] = b; continue }
      rec.ids.push(value.k); rec.list.push(b)
      this.contactCount++
      this.schedule(b)
      this.index(b)
      loaded++
    }
    for (const rec of this.records.values()) { rec.ids = rec.ids.slice(); rec.list = rec.list.slice() }
    if (drop.length > 0) await db.batch(drop.map(key => ({ type: 'del' as const, key })))
    this.log.info({ loaded, dropped: drop.length, aors: this.records.size }, 'location loaded')
  }

  // ------------------------------------------------------------ events

  on<E extends LocationEvent>(event: E, fn: LocationEvents[E]): void {
    (this.listeners[event] as Array<LocationEvents[E]>).push(fn)
  }

  off<E extends LocationEvent>(event: E, fn: LocationEvents[E]): void {
    const l = this.listeners[event] as Array<LocationEvents[E]>
    const i = l.indexOf(fn)
    if (i >= 0) l.splice(i, 1)
  }

  private emit (event: LocationEvent, b: Binding): void {
    for (const fn of this.listeners[event]) {
      try { fn(b) } catch (err) { this.log.error({ err, event }, 'location listener threw') }
    }
  }

  // ------------------------------------------------------------ queries

  /** Unexpired bindings of `aor`, q descending then most recently updated first. */
  lookup (aor: string): Binding[] {
    const rec = this.records.get(aor)
    if (rec === undefined) return []
    const now = this.clock.now()
    const out: Binding[] = []
    for (const b of rec.list) if (b.expires > now) out.push(b)
    if (out.length > 1) out.sort(byLookupOrder)
    return out
  }

  /** Same as {@link lookup}. */
  get (aor: string): Binding[] { return this.lookup(aor) }

  /** AORs that hold at least one binding (expired ones may linger until the next sweep). */
  aors (): string[] { return [...this.records.keys()] }

  stats (): { aors: number, contacts: number } {
    return { aors: this.records.size, contacts: this.contactCount }
  }

  // ------------------------------------------------------------ updates

  /**
   * RFC 3261 §10.3 steps 6–8 for one REGISTER, atomically: either every change is committed or none.
   */
  applyRegister (aor: string, update: RegisterUpdate): RegisterResult {
    if (typeof aor !== 'string' || aor === '') throw new LocationError('aor must be a non-empty string')
    if (!Number.isInteger(update.cseq) || update.cseq < 0) throw new LocationError('cseq must be a non-negative integer')
    const now = update.now ?? this.clock.now()
    this.purgeExpired(aor, now)
    const rec = this.records.get(aor)
    const before: Stored[] = rec === undefined ? [] : rec.list.map((b, i) => ({ k: rec.ids[i]!, b }))
    const fail = (error: RegisterError): RegisterResult =>
      ({ ok: false, error, bindings: this.lookup(aor), inserted: 0, updated: 0, deleted: 0 })

    // Tentative state: identity → binding; `fresh` marks entries written by this request.
    const work = new Map<string, Binding>()
    for (const s of before) work.set(s.k, s.b)
    const fresh = new Set<string>()
    const { callId, cseq } = update

    if (update.contacts !== '*' && !Array.isArray(update.contacts)) throw new LocationError("contacts must be an array or '*'")
    if (update.contacts === '*') {
      for (const s of before) if (s.b.callId === callId && s.b.cseq >= cseq) return fail('out-of-order')
      work.clear()
    } else {
      for (const c of update.contacts) {
        if (typeof c.contact !== 'string' || c.contact === '') throw new LocationError('contact must be a non-empty string')
        if (!Number.isFinite(c.expires) || c.expires < 0) throw new LocationError(`bad expires ${String(c.expires)}`)
        const q = c.q ?? 1
        if (!(q >= 0 && q <= 1)) throw new LocationError(`bad q ${String(c.q)}`)
        const id = identity(c.key ?? contactKey(c.contact), c.instance, c.regId)
        const existing = work.get(id)
        if (existing !== undefined && !fresh.has(id) && existing.callId === callId && existing.cseq >= cseq) {
          return fail('out-of-order')
        }
        if (c.expires === 0) { work.delete(id); fresh.delete(id); continue }
        const b: Binding = {
          aor,
          contact: c.contact,
          expires: now + Math.round(c.expires * 1000),
          q,
          callId,
          cseq,
          path: c.path === undefined || c.path.length === 0 ? NO_PATH : [...c.path],
          updated: now
        }
        if (c.contactHeader !== undefined) b.contactHeader = c.contactHeader
        if (c.instance !== undefined) b.instance = c.instance
        if (c.regId !== undefined) b.regId = c.regId
        if (c.received !== undefined) b.received = { ...c.received }
        if (c.node !== undefined) b.node = c.node
        if (c.userAgent !== undefined) b.userAgent = c.userAgent
        work.set(id, b)
        fresh.add(id)
      }
    }

    // Limits (only a request that grows the AOR can break them).
    const inserts = [...fresh].filter(id => !before.some(s => s.k === id)).length
    if (inserts > 0 && work.size > this.limits.maxContactsPerAor) return fail('too-many-contacts')
    if (before.length === 0 && work.size > 0 && this.records.size >= this.limits.maxAors) return fail('too-many-aors')

    // Commit; events: deletions first, then updates and inserts, each in storage order (existing
    // bindings keep their place, new ones are appended in request order).
    let inserted = 0; let updated = 0; let deleted = 0
    const events: Array<[LocationEvent, Binding]> = []
    for (const s of before) {
      if (!work.has(s.k)) { events.push(['delete', s.b]); this.queueWrite(aor, s.k, null); deleted++ }
    }
    // exact-size arrays: push() would reserve room for 17 entries per AOR (~250 bytes per binding)
    const ids = new Array<string>(work.size)
    const list = new Array<Binding>(work.size)
    const beforeIds = new Set(before.map(s => s.k))
    let n = 0
    for (const [id, b] of work) {
      if (fresh.has(id)) {
        freezeBinding(b)
        events.push([beforeIds.has(id) ? 'update' : 'insert', b])
        if (beforeIds.has(id)) updated++; else inserted++
        this.queueWrite(aor, id, b)
        this.schedule(b)
      }
      ids[n] = id; list[n] = b; n++
    }
    this.contactCount += list.length - before.length
    if (list.length === 0) this.records.delete(aor)
    else this.records.set(aor, { ids, list })
    for (const s of before) if (work.get(s.k) !== s.b) this.unindex(s.b, list)
    for (const id of fresh) this.index(work.get(id)!)
    for (const [e, b] of events) this.emit(e, b)
    return { ok: true, bindings: this.lookup(aor), inserted, updated, deleted }
  }

  /**
   * Insert or replace one binding as is (absolute expiry, no Call-ID/CSeq rule, no limits):
   * for replication and administration. Emits `insert` or `update`.
   */
  put (binding: Binding, key?: string): void {
    if (binding.expires <= this.clock.now()) return
    const b = freezeBinding({ ...binding, path: binding.path.length === 0 ? NO_PATH : [...binding.path], ...(binding.received !== undefined ? { received: { ...binding.received } } : {}) })
    const id = identity(key ?? contactKey(b.contact), b.instance, b.regId)
    let rec = this.records.get(b.aor)
    if (rec === undefined) { rec = { ids: [], list: [] }; this.records.set(b.aor, rec) }
    const i = rec.ids.indexOf(id)
    const old = i >= 0 ? rec.list[i] : undefined
    if (i >= 0) rec.list[i] = b
    else { rec.ids.push(id); rec.list.push(b); this.contactCount++ }
    if (old !== undefined) this.unindex(old, rec.list)
    this.index(b)
    this.queueWrite(b.aor, id, b)
    this.schedule(b)
    this.emit(i >= 0 ? 'update' : 'insert', b)
  }

  /**
   * Remove the binding(s) of `aor` whose Contact URI is `contact` (compared with {@link contactKey}),
   * or whose RFC 5626 identity is given by `instance`/`regId`. Returns how many were removed.
   */
  remove (aor: string, contact: string, opts?: { instance?: string, regId?: number }): number {
    const rec = this.records.get(aor)
    if (rec === undefined) return 0
    const key = contactKey(contact)
    const want = opts?.instance !== undefined && opts.regId !== undefined ? identity(key, opts.instance, opts.regId) : undefined
    return this.removeWhere(aor, rec, (id, b) => want !== undefined ? id === want : (id === `u:${key}` || contactKey(b.contact) === key), 'delete')
  }

  /** Remove every binding of `aor`; returns how many were removed. */
  removeAor (aor: string): number {
    const rec = this.records.get(aor)
    if (rec === undefined) return 0
    return this.removeWhere(aor, rec, () => true, 'delete')
  }

  /**
   * Remove every binding whose REGISTER arrived over connection `connectionId` (call it when the
   * transport reports the connection closed, as Kamailio's usrloc `handle_lost_tcp`). Emits `delete`.
   */
  removeByConnection (connectionId: string): number {
    const entry = this.byConn.get(connectionId)
    if (entry === undefined) return 0
    this.byConn.delete(connectionId)
    let n = 0
    for (const aor of typeof entry === 'string' ? [entry] : entry) {
      const rec = this.records.get(aor)
      if (rec !== undefined) n += this.removeWhere(aor, rec, (_id, b) => b.received?.connectionId === connectionId, 'delete')
    }
    return n
  }

  /** Unexpired bindings whose REGISTER arrived over connection `connectionId`. */
  lookupByConnection (connectionId: string): Binding[] {
    const entry = this.byConn.get(connectionId)
    if (entry === undefined) return []
    const out: Binding[] = []
    for (const aor of typeof entry === 'string' ? [entry] : entry) for (const b of this.lookup(aor)) if (b.received?.connectionId === connectionId) out.push(b)
    return out
  }

  private index (b: Binding): void {
    const conn = b.received?.connectionId
    if (conn === undefined) return
    const entry = this.byConn.get(conn)
    if (entry === undefined || entry === b.aor) this.byConn.set(conn, b.aor)
    else if (typeof entry === 'string') this.byConn.set(conn, new Set([entry, b.aor]))
    else entry.add(b.aor)
  }

  /** `b` left its AOR; drop the AOR from b's connection index unless `remaining` still uses it. */
  private unindex (b: Binding, remaining: Binding[]): void {
    const conn = b.received?.connectionId
    if (conn === undefined) return
    if (remaining.some(r => r.received?.connectionId === conn)) return
    const entry = this.byConn.get(conn)
    if (entry === undefined) return
    if (typeof entry === 'string') {
      if (entry === b.aor) this.byConn.delete(conn)
      return
    }
    entry.delete(b.aor)
    if (entry.size === 1) this.byConn.set(conn, entry.values().next().value!)
    else if (entry.size === 0) this.byConn.delete(conn)
  }

  private removeWhere (aor: string, rec: AorRecord, pred: (id: string, b: Binding) => boolean, event: 'delete' | 'expire'): number {
    const gone: Binding[] = []
    const ids: string[] = []
    const list: Binding[] = []
    for (let i = 0; i < rec.list.length; i++) {
      const id = rec.ids[i]!; const b = rec.list[i]!
      if (pred(id, b)) { gone.push(b); this.queueWrite(aor, id, null) } else { ids.push(id); list.push(b) }
    }
    if (gone.length === 0) return 0
    this.contactCount -= gone.length
    if (list.length === 0) this.records.delete(aor)
    else { rec.ids = ids.slice(); rec.list = list.slice() }
    for (const b of gone) this.unindex(b, list)
    for (const b of gone) this.emit(event, b)
    return gone.length
  }

  private purgeExpired (aor: string, now: number): number {
    const rec = this.records.get(aor)
    if (rec === undefined || !rec.list.some(b => b.expires <= now)) return 0
    return this.removeWhere(aor, rec, (_id, b) => b.expires <= now, 'expire')
  }

  // ------------------------------------------------------------ expiry

  private schedule (b: Binding): void {
    const second = Math.max(Math.floor(b.expires / 1000), this.nextSecond)
    const slot = this.wheel.get(second)
    if (slot === undefined) this.wheel.set(second, [b.aor])
    else if (slot[slot.length - 1] !== b.aor) slot.push(b.aor)
  }

  private scheduleSweep (): void {
    if (!this.running) return
    this.sweepTimer = this.clock.setTimer(this.sweepIntervalMs, () => {
      this.sweepTimer = undefined
      try { this.sweep() } catch (err) { this.log.error({ err }, 'location sweep failed') }
      this.scheduleSweep()
    })
  }

  /** Remove every binding expired by now and emit `expire` for each. Returns how many were removed. */
  sweep (): number {
    const now = this.clock.now()
    const last = Math.floor(now / 1000)
    let removed = 0
    const visit = (second: number): void => {
      const slot = this.wheel.get(second)
      if (slot === undefined) return
      // A slot's bindings expire within [second, second+1): only take it when the whole second has passed.
      if ((second + 1) * 1000 > now) {
        for (const aor of slot) removed += this.purgeExpired(aor, now)
        return
      }
      this.wheel.delete(second)
      for (const aor of slot) removed += this.purgeExpired(aor, now)
    }
    if (this.nextSecond < 0 || last - this.nextSecond > this.wheel.size) {
      for (const second of [...this.wheel.keys()]) if (second <= last) visit(second)
    } else {
      for (let s = this.nextSecond; s <= last; s++) visit(s)
    }
    // the current second's slot may still hold bindings expiring later within it: revisit next time
    this.nextSecond = last
    return removed
  }

  // ------------------------------------------------------------ persistence

  private queueWrite (aor: string, id: string, b: Binding | null): void {
    if (this.db === undefined) return
    this.pending.set(`${KEY_PREFIX}${aor}!${id}`, b === null ? null : { k: id, b })
    if (this.writeTimer === undefined) {
      this.writeTimer = this.clock.setTimer(this.writeDelayMs, () => {
        this.writeTimer = undefined
        this.startBatch()
      })
    }
  }

  private startBatch (): void {
    const db = this.db
    if (db === undefined || this.pending.size === 0) return
    const batch = this.pending
    this.pending = new Map()
    this.writing = this.writing.then(async () => {
      const ops = []
      for (const [key, value] of batch) {
        ops.push(value === null ? { type: 'del' as const, key } : { type: 'put' as const, key, value })
      }
      try {
        await db.batch(ops, { valueEncoding: 'json' })
      } catch (err) {
        this.writeErrors++
        this.log.error({ err, ops: ops.length }, 'location write failed')
      }
    })
  }
}
