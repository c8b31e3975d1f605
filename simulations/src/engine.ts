/**
 * The simulation engine: one scenario, one seed → one deterministic run of sipring's own overlay
 * code under churn, with a client workload, a global oracle and windowed metrics.
 */
import { execFileSync } from 'node:child_process'
import { silentLogger, type Clock, type Rng, type Timer } from '@sipring/interface'
import { LiveRing, OverlayError, RingFactory, createHasher, yieldToMicrotasks, type Hasher, type Ring } from '@sipring/overlay'
import { SimClock, SeededRng } from '@sipring/testkit'
import {
  Deadline, InstrumentedHub, overlayNodeFactory, quantizedClock, type NodeFactory, type RegValue, type SimNode, type TypeCounter
} from './adapter.js'
import { startBatchFailures, startChurn, type ChurnHost } from './churn.js'
import { configHash, describeScenario, type Scenario } from './scenario.js'
import { MembershipOracle } from './oracle.js'
import { RepairTracker, type RepairSummary } from './repair.js'
import { superNodeFactoryFor } from './super-adapter.js'
import { cv, mean, quantileSorted, round } from './stats.js'

/** Simulated time starts here (2026-01-01T00:00:00Z), so runs never depend on the wall clock. */
export const SIM_EPOCH = Date.UTC(2026, 0, 1)

/**
 * Above this many live nodes the loss check looks for a copy of an ownerless key only near its owners
 * (R + NEAR successors in the truth ring and in the shared view) instead of on every node.
 */
const FULL_SCAN_LIMIT = 20_000
const NEAR = 8

/** Message types reported in windows.csv (anything else is counted under `other`). */
export const MESSAGE_TYPES = [
  'swim.ping', 'swim.ping-req', 'swim.ack', 'swim.nack', 'swim.join', 'swim.join-ok', 'swim.leave',
  'store.put', 'store.ok', 'store.get', 'store.item', 'store.digest', 'store.diff', 'error'
] as const

export interface Progress {
  /** Simulated ms done / total. */
  simTime: number
  duration: number
  /** Timer events fired so far. */
  events: number
  live: number
}

export interface RunOptions {
  /** Overrides the scenario's seed. */
  seed?: number
  /** Called after every window and every 100,000 timer events. */
  onProgress?: (p: Progress) => void
  /** Replace the node under test (default: sipring's OverlayNode). */
  nodeFactory?: (ctx: FactoryContext) => NodeFactory<RegValue>
  /** Keep events.jsonl lines in the result (default true). */
  recordEvents?: boolean
  /** Shared hasher (xxhash-wasm init is async; tests reuse one). */
  hasher?: Hasher
  /** Run on another clock than the discrete-event SimClock (emulation: real time, scaled). */
  timeSource?: (epoch: number) => TimeSource
}

/** A clock that runs by itself (emulation); the engine waits on it instead of stepping a SimClock. */
export interface TimeSource {
  clock: Clock
  /** Resolves once `clock.now()` ≥ `target` (ms since the epoch). */
  runUntil(target: number): Promise<void>
  /** Timers fired so far. */
  events(): number
}

export interface FactoryContext {
  clock: ReturnType<typeof quantizedClock>
  hub: InstrumentedHub
  hasher: Hasher
  rings: RingFactory
  scenario: Scenario
  /** A stream of the master seed for the factory's own use (e.g. the SIP network of `node: super`). */
  rng: Rng
  /** Scale mode (`overlay.membership: oracle`): the global membership service every node takes its member from. */
  oracle?: MembershipOracle
}

export interface WindowRow {
  start: number
  end: number
  live: number
  joins: number
  leaves: number
  crashes: number
  puts: number
  putsOk: number
  lookups: number
  lookupsOk: number
  lookupSuccess: number
  latencyP50: number
  latencyP95: number
  latencyP99: number
  liveKeys: number
  availability: number
  anyOwner: number
  replication: number
  losses: number
  loadMax: number
  loadMean: number
  loadCv: number
  msgsPerNodeSec: number
  bytesPerNodeSec: number
  /** Per message type: messages per live node per second in this window. */
  byType: Record<string, { msgs: number, bytes: number }>
}

export interface Summary {
  name: string
  seed: number
  configHash: string
  commit: string
  config: Record<string, unknown>
  measured: { from: number, to: number, windows: number }
  churn: { joins: number, leaves: number, crashes: number, batchFailures: number, meanLive: number, finalLive: number }
  lookups: { total: number, ok: number, success: number, latency: { p50: number, p95: number, p99: number, mean: number } }
  registrations: { total: number, ok: number, success: number }
  availability: { mean: number, min: number, anyOwner: number, replication: number }
  losses: { measured: number, total: number }
  maintenance: { msgsPerNodeSec: number, bytesPerNodeSec: number, byType: Record<string, { msgsPerNodeSec: number, bytesPerNodeSec: number }> }
  load: { maxOverMean: number, cv: number, meanItems: number }
  violations: string[]
  /** Time to repair after crashes (with `repairProbe` > 0). */
  repair?: RepairSummary
}

export interface RunResult {
  summary: Summary
  windows: WindowRow[]
  /** events.jsonl lines. */
  events: string[]
  /** Post-warm-up lookup latencies (failures at the timeout), sorted, for the CDF plot. */
  latencies: number[]
  /** Timer events fired (a measure of simulation work). */
  simEvents: number
}

/** A failure the engine hit that is not the simulated system's fault (a bug): carries the seed. */
export class SimulationCrash extends Error {
  constructor (message: string, readonly seed: number, override readonly cause?: unknown) { super(message); this.name = 'SimulationCrash' }
}

interface Host {
  id: string
  inc: number
  status: 'joining' | 'up' | 'leaving' | 'down'
  /** The churn model's latest wish (a failed join is retried only while it still wants the node up). */
  wantUp: boolean
  node?: SimNode<RegValue>
  busy: Promise<void>
}

interface Client {
  key: string
  /** Highest sequence number issued. */
  issued: number
  registered: boolean
  /** The oracle: highest acknowledged sequence number (0: none) and when that registration expires. */
  seq: number
  expires: number
}

interface Win {
  joins: number, leaves: number, crashes: number, puts: number, putsOk: number,
  lookups: number, lookupsOk: number, latencies: number[], losses: number
}
const newWin = (): Win => ({ joins: 0, leaves: 0, crashes: 0, puts: 0, putsOk: 0, lookups: 0, lookupsOk: 0, latencies: [], losses: 0 })

/** Run one scenario with one seed. Deterministic: same scenario + seed ⇒ identical result. */
export async function runScenario (s: Scenario, opts: RunOptions = {}): Promise<RunResult> {
  if (s.mode === 'emulation' && opts.timeSource === undefined) {
    const { runEmulation } = await import('./emulation/run.js')
    return await runEmulation(s, opts)
  }
  const seed = (opts.seed ?? s.seed) >>> 0
  const record = opts.recordEvents ?? true
  const simClock = new SimClock(SIM_EPOCH)
  const ts = opts.timeSource?.(SIM_EPOCH)
  const base: Clock = ts?.clock ?? simClock
  const t0 = base.now()
  const clock = quantizedClock(base, s.timeResolution)
  const master = new SeededRng(seed)
  const churnRng = master.fork('churn')
  const workRng = master.fork('workload')
  const nodeRngs = master.fork('nodes')
  const failRng = master.fork('failures')
  const joinRng = master.fork('join')
  // messages cross the hub uncopied: every overlay handler treats them as read-only (the overlay and
  // simulation suites pass with copy: 'freeze', which throws on any mutation)
  const hub = new InstrumentedHub({ clock, rng: master.fork('network'), latency: s.network.latency, loss: s.network.loss, defaultTimeout: s.network.requestTimeout, copy: 'share' })
  const hasher = opts.hasher ?? await createHasher()
  // scale mode: one global membership service with modeled detection delays (see oracle.ts)
  const oracleMs = s.membership === 'oracle'
    ? new MembershipOracle({ clock, rng: master.fork('oracle'), hasher, vnodes: s.overlay.vnodes, replicas: s.overlay.replicas, delays: s.oracle, isUp: id => hub.isUp(id), hasData: id => { const n = hosts.get(id)?.node; return n === undefined ? false : n.holdsData?.() ?? n.localItems() > 0 } })
    : undefined
  /** The ring of the nodes that are really up (the checker's truth), kept incrementally. */
  const truth = new LiveRing(hasher, { vnodes: s.overlay.vnodes })
  // rings are interned by member set; under churn many views coexist, so keep as many as ~256 MiB of tokens allow
  const ringBytes = Math.max(1, s.nodes) * s.overlay.vnodes * 12
  const rings = new RingFactory(hasher, { vnodes: s.overlay.vnodes, cacheSize: Math.max(64, Math.min(4096, Math.floor(256 * 1048576 / ringBytes))) })
  const ctx: FactoryContext = { clock, hub, hasher, rings, scenario: s, rng: master.fork('factory'), ...(oracleMs !== undefined ? { oracle: oracleMs } : {}) }
  const factory = opts.nodeFactory?.(ctx) ?? (s.node === 'super' ? superNodeFactoryFor(ctx) : undefined) ?? overlayNodeFactory({
    clock, logger: silentLogger, hub, hasher, rings, ...(oracleMs !== undefined ? { oracle: oracleMs } : {}),
    init: {
      membership: { protocolPeriod: s.overlay.protocolPeriod, pingTimeout: s.overlay.pingTimeout, suspicionMult: s.overlay.suspicionMult },
      store: {
        replicas: s.overlay.replicas, writeQuorum: s.overlay.writeQuorum, readQuorum: s.overlay.readQuorum,
        requestTimeout: s.overlay.requestTimeout, antiEntropyInterval: s.overlay.antiEntropyInterval,
        maxTtl: Math.max(s.workload.expires, 1000),
        cachePositions: true,
        ...(s.digestBuckets !== undefined ? { digestBuckets: s.digestBuckets } : {})
      }
    }
  })

  const events: string[] = []
  const violations: string[] = []
  const rel = (): number => base.now() - t0
  const storeKey = factory.storeKey ?? ((k: string): string => k)
  const log = (ev: string, fields: Record<string, unknown> = {}): void => {
    if (record) events.push(JSON.stringify({ t: rel(), ev, ...fields }))
  }
  const violation = (msg: string): void => {
    if (violations.length < 100) violations.push(`t=${rel()}ms: ${msg}`)
    log('violation', { msg })
  }
  /** An exception that is not an overlay-level failure is a bug in the code under test (or here). */
  const unexpected = (where: string, err: unknown): void => {
    if (err instanceof OverlayError || (err instanceof Error && err.name === 'AbortError')) return
    violation(`exception in ${where}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  }

  // ------------------------------------------------------------ population

  const hosts = new Map<string, Host>()
  const upList: string[] = []
  const upIndex = new Map<string, number>()
  const leaving = new Set<string>()
  let liveCount = 0
  let nodeMs = 0
  let lastLiveT = rel()
  const tickLive = (): void => { const t = rel(); nodeMs += liveCount * (t - lastLiveT); lastLiveT = t }
  let win = newWin()
  const totals = { joins: 0, leaves: 0, crashes: 0, batches: 0 }
  let nextId = 0

  // with nobody up, the first node to start forms the overlay alone; nodes starting at the same
  // moment wait for it instead of each forming a one-node overlay of their own
  let bootstrapper: string | undefined
  let upWaiters: Array<() => void> = []
  const wakeWaiters = (): void => { const w = upWaiters; upWaiters = []; for (const f of w) f() }
  const addUp = (id: string): void => { upIndex.set(id, upList.length); upList.push(id); truth.add(id); wakeWaiters() }
  const removeUp = (id: string): void => {
    const i = upIndex.get(id)
    if (i === undefined) return
    const last = upList.pop()!
    if (last !== id) { upList[i] = last; upIndex.set(last, i) }
    upIndex.delete(id)
    truth.remove(id)
  }
  const pickUp = (rng: Rng): SimNode<RegValue> | undefined => {
    if (upList.length === 0) return undefined
    return hosts.get(upList[rng.int(upList.length)]!)!.node
  }

  const at = (t: number, fn: () => void): Timer => clock.setTimer(Math.max(0, t - rel()), fn)

  const up = (id: string): void => {
    let h = hosts.get(id)
    if (h === undefined) { h = { id, inc: 0, status: 'down', wantUp: true, busy: Promise.resolve() }; hosts.set(id, h) }
    h.wantUp = true
    if (h.status === 'joining' || h.status === 'up') return
    if (liveCount >= s.maxNodes) { log('refused', { node: id, reason: 'maxNodes' }); return }
    const host = h
    host.status = 'joining'
    const inc = ++host.inc
    tickLive(); liveCount++
    log('start', { node: id, inc })
    host.busy = host.busy.then(async () => {
      if (host.status !== 'joining' || host.inc !== inc) return
      const node = factory.create(id, nodeRngs.fork(`${id}#${inc}`))
      host.node = node
      await node.start()
      while (upList.length === 0 && bootstrapper !== undefined && bootstrapper !== id && hosts.get(bootstrapper)?.status === 'joining') {
        await new Promise<void>(resolve => { upWaiters.push(resolve) })
      }
      if (host.status !== 'joining' || host.inc !== inc) return
      if (upList.length === 0) bootstrapper = id
      const seeds: string[] = []
      for (let i = 0; i < 3 && upList.length > 0; i++) {
        const sid = upList[joinRng.int(upList.length)]!
        if (!seeds.includes(sid)) seeds.push(sid)
      }
      if (seeds.length > 0 && host.status === 'joining') await node.join(seeds)
      if (host.status !== 'joining' || host.inc !== inc) return
      host.status = 'up'
      addUp(id)
      win.joins++; totals.joins++
      log('join', { node: id, inc, seeds: seeds.length })
    }).catch(err => {
      unexpected(`join of ${id}`, err)
      if (host.status === 'joining' && host.inc === inc) {
        // could not join (seeds died meanwhile): the process gives up and retries later as a fresh start
        log('join-failed', { node: id, err: String(err) })
        host.status = 'down'; tickLive(); liveCount--
        void host.node?.crash().catch(e => { unexpected(`crash of ${id}`, e) })
        at(rel() + s.workload.retryAfter, () => { if (host.wantUp) up(id) })
      }
    })
  }

  const down = (id: string, kind: 'leave' | 'crash'): void => {
    const host = hosts.get(id)
    if (host !== undefined) host.wantUp = false
    if (host === undefined || (host.status !== 'joining' && host.status !== 'up')) return
    if (kind === 'crash' && upIndex.has(id)) repair?.onCrash(id)
    removeUp(id)
    if (id === bootstrapper) wakeWaiters()
    tickLive(); liveCount--
    const node = host.node
    if (kind === 'crash') {
      host.status = 'down'
      win.crashes++; totals.crashes++
      log('crash', { node: id })
      hub.crash(id) // effective at once, even if the process is still starting
      host.busy = host.busy.then(async () => { await (host.node ?? node)?.crash() }).catch(err => { unexpected(`crash of ${id}`, err) })
    } else {
      host.status = 'leaving'
      leaving.add(id)
      win.leaves++; totals.leaves++
      log('leave', { node: id })
      host.busy = host.busy.then(async () => { await (host.node ?? node)?.leave() })
        .catch(err => { unexpected(`leave of ${id}`, err); hub.crash(id) })
        .then(() => { leaving.delete(id); if (host.status === 'leaving') host.status = 'down' })
    }
  }

  const churnHost: ChurnHost = {
    live: () => [...hosts.values()].filter(h => h.status === 'joining' || h.status === 'up').map(h => h.id),
    isLive: id => { const st = hosts.get(id)?.status; return st === 'joining' || st === 'up' },
    at: (t, fn) => { at(t, fn) },
    now: rel,
    up,
    down,
    newId: () => `p${String(nextId++).padStart(6, '0')}`
  }

  // ------------------------------------------------------------ workload and oracle

  const W = s.workload
  const clients: Client[] = Array.from({ length: W.clients }, (_, i) => ({ key: `sip:u${i}@sim.sipring`, issued: 0, registered: false, seq: 0, expires: 0 }))
  const registered: number[] = []
  /** The oracle's entry of a workload key (`sip:u<i>@sim.sipring`). */
  const clientOf = (key: string): Client | undefined => clients[Number(key.slice(5, key.indexOf('@')))]
  const totalsW = { puts: 0, putsOk: 0 }

  const withTimeout = <T>(ms: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T> => {
    const d = new Deadline()
    const timer = clock.setTimer(ms, () => { d.abort() })
    return fn(d.signal).finally(() => { timer.cancel() })
  }

  const register = (ci: number): void => {
    const c = clients[ci]!
    const node = pickUp(workRng)
    if (node === undefined) { at(rel() + W.retryAfter, () => { register(ci) }); return }
    const seq = ++c.issued
    const started = rel()
    const value: RegValue = { c: `sip:u${ci}@10.${(ci >> 16) & 255}.${(ci >> 8) & 255}.${ci & 255}:5060;s=${seq}`, s: seq }
    const w = win
    w.puts++; totalsW.puts++
    withTimeout(W.registerTimeout, signal => node.put(c.key, value, W.expires, signal)).then(() => {
      w.putsOk++; totalsW.putsOk++
      if (c.seq < seq) { c.seq = seq; c.expires = started + W.expires; if (rankOf !== undefined) { const j = rankOf[ci]!; rSeq[j] = seq; rExp[j] = c.expires } }
      if (!c.registered) { c.registered = true; registered.push(ci) }
      const refresh = W.expires / 2 * (1 + W.refreshJitter * (2 * workRng.next() - 1))
      at(started + refresh, () => { register(ci) })
    }, err => {
      unexpected(`register ${c.key}`, err)
      at(rel() + W.retryAfter, () => { register(ci) })
    })
  }

  const lookup = (): void => {
    if (registered.length === 0) return
    const ci = registered[workRng.int(registered.length)]!
    const c = clients[ci]!
    const expectSeq = c.seq
    const node = pickUp(workRng)
    const w = win
    if (c.seq === 0 || c.expires <= rel()) return // nothing acknowledged is live: not a valid lookup
    w.lookups++
    if (node === undefined) { w.latencies.push(W.lookupTimeout); return }
    const started = rel()
    withTimeout(W.lookupTimeout, signal => node.get(c.key, signal)).then(v => {
      if (v !== undefined && v.s > c.issued) violation(`lookup of ${c.key} returned seq ${v.s} never written`)
      if (v !== undefined && v.s >= expectSeq) { w.lookupsOk++; w.latencies.push(rel() - started) } else w.latencies.push(W.lookupTimeout)
    }, err => {
      unexpected(`lookup ${c.key}`, err)
      w.latencies.push(W.lookupTimeout)
    })
  }

  const scheduleLookups = (): void => {
    if (!(W.lookupRate > 0)) return
    const next = (): void => {
      const gap = -Math.log(1 - workRng.next()) / W.lookupRate
      at(rel() + gap, () => { lookup(); next() })
    }
    next()
  }

  // ------------------------------------------------------------ sampling

  let oracleRing: Ring | undefined
  /** The write sequence number of node `id`'s local replica of `key`. */
  const seqAt = (id: string, key: string): number | undefined => {
    const n = hosts.get(id)?.node
    return n === undefined ? undefined : n.localSeq !== undefined ? n.localSeq(key) : n.local(key)?.s
  }
  const lostSeen = new Set<string>()
  /**
   * Client indices in the ring order of their store keys (the sample walks the ring once, in order),
   * with the oracle's state of each client copied in that order (`rSeq`, `rExp`, `rKey`; kept up to
   * date by `register`), so the walk reads memory in sequence instead of one client object at random
   * per key.
   */
  let ringOrder: Uint32Array | undefined
  /** Rank in ring order of each client index (set with `ringOrder`). */
  let rankOf: Uint32Array | undefined
  let rSeq = new Float64Array(0)
  let rExp = new Float64Array(0)
  let rKey: string[] = []
  const inRingOrder = (): Uint32Array => {
    if (ringOrder !== undefined) return ringOrder
    const pos = new BigUint64Array(clients.length)
    for (let i = 0; i < clients.length; i++) pos[i] = hasher.hash64(storeKey(clients[i]!.key))
    const idx = Array.from({ length: clients.length }, (_, i) => i)
    idx.sort((a, b) => pos[a]! < pos[b]! ? -1 : pos[a]! > pos[b]! ? 1 : a - b)
    ringOrder = Uint32Array.from(idx)
    ringPos = BigUint64Array.from(idx, i => pos[i]!)
    rankOf = new Uint32Array(clients.length)
    for (let j = 0; j < idx.length; j++) rankOf[idx[j]!] = j
    rSeq = Float64Array.from(idx, i => clients[i]!.seq)
    rExp = Float64Array.from(idx, i => clients[i]!.expires)
    rKey = idx.map(i => clients[i]!.key)
    return ringOrder
  }
  let ringPos: BigUint64Array = new BigUint64Array(0)
  const sample = (): { liveKeys: number, availability: number, anyOwner: number, replication: number, losses: number, loadMax: number, loadMean: number, loadCv: number } => {
    const now = rel()
    const R = s.overlay.replicas
    const safe = R - s.overlay.readQuorum + 1
    oracleRing = truth
    let liveKeys = 0; let avail = 0; let any = 0; let repl = 0; let losses = 0
    const order = inRingOrder()
    const ownersAt = truth.sweep(R)
    // the sweep hands out one owners array per run of consecutive keys with the same owners: look
    // their nodes up once per run
    let runOwners: readonly string[] | undefined
    const runNodes: Array<SimNode<RegValue> | undefined> = []
    for (let j = 0; j < order.length; j++) {
      const seq = rSeq[j]!
      if (seq === 0 || rExp[j]! <= now) continue
      const key = rKey[j]!
      liveKeys++
      const owners = ownersAt(ringPos[j]!)
      if (owners !== runOwners) {
        runOwners = owners
        runNodes.length = owners.length
        for (let k = 0; k < owners.length; k++) runNodes[k] = hosts.get(owners[k]!)?.node
      }
      let holders = 0
      for (let k = 0; k < owners.length; k++) {
        const n = runNodes[k]
        if (n === undefined) continue
        const v = n.localSeq !== undefined ? n.localSeq(key) : n.local(key)?.s
        if (v !== undefined && v >= seq) holders++
      }
      if (holders >= Math.min(safe, owners.length) && owners.length > 0) avail++
      if (holders > 0) any++
      repl += owners.length === 0 ? 0 : holders / Math.min(R, owners.length)
      const tag = holders === 0 ? `${key}#${seq}` : ''
      if (holders === 0 && !lostSeen.has(tag)) {
        const holds = (id: string): boolean => { const v = seqAt(id, key); return v !== undefined && v >= seq }
        let somewhere = false
        // a node that is leaving still holds (and is handing over) its items: not lost yet
        for (const id of leaving) if (holds(id)) { somewhere = true; break }
        if (!somewhere && upList.length <= FULL_SCAN_LIMIT) {
          for (const id of upList) if (holds(id)) { somewhere = true; break }
        } else if (!somewhere) {
          // large overlays: the copies that can exist are near the key's owners (old owners not yet
          // handed off, successors that got it early), in the truth ring or in the nodes' shared view
          const k = storeKey(key)
          for (const id of truth.owners(k, R + NEAR)) if (holds(id)) { somewhere = true; break }
          if (!somewhere && oracleMs !== undefined) for (const id of oracleMs.ring.owners(k, R + NEAR)) if (holds(id)) { somewhere = true; break }
        }
        if (!somewhere) {
          lostSeen.add(tag); losses++
          log('loss', { key, seq })
        }
      }
    }
    const loads = upList.map(id => hosts.get(id)!.node!.localItems())
    const lm = loads.length === 0 ? 0 : mean(loads)
    let loadMax = 0
    for (const x of loads) if (x > loadMax) loadMax = x
    return {
      liveKeys,
      availability: liveKeys === 0 ? 1 : avail / liveKeys,
      anyOwner: liveKeys === 0 ? 1 : any / liveKeys,
      replication: liveKeys === 0 ? 1 : repl / liveKeys,
      losses,
      loadMax,
      loadMean: lm,
      loadCv: loads.length === 0 ? 0 : cv(loads)
    }
  }

  // ------------------------------------------------------------ repair time (repairProbe > 0)

  const repair = s.repairProbe > 0
    ? new RepairTracker({
      now: rel,
      ring: () => (oracleRing = truth),
      holds: (id, key, seq) => { const v = seqAt(id, key); return v !== undefined && v >= seq },
      current: key => { const c = clientOf(key); return c === undefined || c.seq === 0 || c.expires <= rel() ? undefined : c.seq },
      liveKeys: function * () { for (const ci of registered) { const c = clients[ci]!; if (c.seq > 0 && c.expires > rel()) yield c.key } },
      storeKey
    }, { replicas: s.overlay.replicas, probe: s.repairProbe, from: s.warmup })
    : undefined
  if (repair !== undefined) {
    const tick = (): void => { repair.probe(); at(rel() + s.repairProbe, tick) }
    at(s.repairProbe, tick)
  }

  // ------------------------------------------------------------ schedule and run

  for (let i = 0; i < s.nodes; i++) {
    const id = `n${String(i).padStart(5, '0')}`
    at(s.nodes <= 1 ? 0 : (i * s.bootstrapOver) / s.nodes, () => { up(id) })
  }
  startChurn(s.churn, churnHost, s.churn.start, label => churnRng.fork(label))
  startBatchFailures(s.failures, churnHost, failRng, (b, ids) => {
    totals.batches++
    log('batch', { kind: b.kind, fraction: b.fraction, label: b.label, nodes: ids.length })
  })
  for (let i = 0; i < clients.length; i++) {
    const when = s.bootstrapOver + workRng.next() * W.registerOver
    at(when, () => { register(i) })
  }
  at(s.bootstrapOver, scheduleLookups)

  let simEvents = 0
  let nextProgress = 100_000
  const runUntil = async (target: number): Promise<void> => {
    if (ts !== undefined) { await ts.runUntil(target); simEvents = ts.events(); return }
    await yieldToMicrotasks()
    for (;;) {
      const next = simClock.nextAt()
      if (next === undefined || next > target) break
      while (simClock.nextAt() === next) { simClock.step(); simEvents++ }
      await yieldToMicrotasks()
      if (simEvents >= nextProgress) {
        nextProgress = simEvents + 100_000
        opts.onProgress?.({ simTime: rel(), duration: s.duration, events: simEvents, live: liveCount })
      }
    }
    simClock.advanceTo(target)
    await yieldToMicrotasks()
  }

  const windows: WindowRow[] = []
  const latAll: number[] = []
  let prevTraffic = hub.snapshot()
  let prevNodeMs = 0
  let measuredNodeMs = 0
  const measuredTraffic = new Map<string, TypeCounter>()
  const liveSamples: number[] = []
  const availSamples: { a: number, any: number, r: number }[] = []
  const loadSamples: { ratio: number, cv: number, mean: number }[] = []
  let measuredLosses = 0
  let totalLosses = 0
  let measuredWindows = 0
  let measuredFrom = -1

  try {
    for (let start = 0; start < s.duration; start += s.window) {
      const end = Math.min(s.duration, start + s.window)
      await runUntil(t0 + end)
      tickLive()
      const w = win
      win = newWin()
      const smp = sample()
      w.losses += smp.losses
      totalLosses += smp.losses
      const traffic = hub.snapshot()
      const dNodeMs = nodeMs - prevNodeMs
      prevNodeMs = nodeMs
      const nodeSec = dNodeMs / 1000
      const byType: WindowRow['byType'] = {}
      let msgs = 0; let bytes = 0
      for (const [type, c] of traffic) {
        const p = prevTraffic.get(type) ?? { count: 0, bytes: 0 }
        const dc = c.count - p.count; const db = c.bytes - p.bytes
        msgs += dc; bytes += db
        const key = (MESSAGE_TYPES as readonly string[]).includes(type) ? type : 'other'
        const b = byType[key] ?? { msgs: 0, bytes: 0 }
        b.msgs += nodeSec > 0 ? dc / nodeSec : 0; b.bytes += nodeSec > 0 ? db / nodeSec : 0
        byType[key] = b
      }
      const lat = [...w.latencies].sort((a, b) => a - b)
      const row: WindowRow = {
        start, end, live: liveCount,
        joins: w.joins, leaves: w.leaves, crashes: w.crashes,
        puts: w.puts, putsOk: w.putsOk, lookups: w.lookups, lookupsOk: w.lookupsOk,
        lookupSuccess: w.lookups === 0 ? NaN : w.lookupsOk / w.lookups,
        latencyP50: quantileSorted(lat, 0.5), latencyP95: quantileSorted(lat, 0.95), latencyP99: quantileSorted(lat, 0.99),
        liveKeys: smp.liveKeys, availability: smp.availability, anyOwner: smp.anyOwner, replication: smp.replication,
        losses: w.losses, loadMax: smp.loadMax, loadMean: smp.loadMean, loadCv: smp.loadCv,
        msgsPerNodeSec: nodeSec > 0 ? msgs / nodeSec : 0, bytesPerNodeSec: nodeSec > 0 ? bytes / nodeSec : 0,
        byType
      }
      windows.push(row)
      if (start >= s.warmup) {
        if (measuredFrom < 0) measuredFrom = start
        measuredWindows++
        for (const x of w.latencies) latAll.push(x)
        measuredLosses += w.losses
        measuredNodeMs += dNodeMs
        for (const [type, c] of traffic) {
          const p = prevTraffic.get(type) ?? { count: 0, bytes: 0 }
          const m = measuredTraffic.get(type) ?? { count: 0, bytes: 0 }
          m.count += c.count - p.count; m.bytes += c.bytes - p.bytes
          measuredTraffic.set(type, m)
        }
        liveSamples.push(liveCount)
        availSamples.push({ a: smp.availability, any: smp.anyOwner, r: smp.replication })
        if (smp.loadMean > 0) loadSamples.push({ ratio: smp.loadMax / smp.loadMean, cv: smp.loadCv, mean: smp.loadMean })
      }
      prevTraffic = traffic
      opts.onProgress?.({ simTime: end, duration: s.duration, events: simEvents, live: liveCount })
    }
  } catch (err) {
    throw new SimulationCrash(`simulation crashed at t=${rel()}ms: ${err instanceof Error ? err.message : String(err)}`, seed, err)
  }

  // ------------------------------------------------------------ summary

  latAll.sort((a, b) => a - b)
  const measuredLookups = windows.filter(w => w.start >= s.warmup)
  const lk = measuredLookups.reduce((a, w) => ({ n: a.n + w.lookups, ok: a.ok + w.lookupsOk, p: a.p + w.puts, pok: a.pok + w.putsOk }), { n: 0, ok: 0, p: 0, pok: 0 })
  const mSec = measuredNodeMs / 1000
  const byType: Summary['maintenance']['byType'] = {}
  let tm = 0; let tb = 0
  for (const [type, c] of [...measuredTraffic].sort((a, b) => a[0] < b[0] ? -1 : 1)) {
    tm += c.count; tb += c.bytes
    byType[type] = { msgsPerNodeSec: round(mSec > 0 ? c.count / mSec : 0), bytesPerNodeSec: round(mSec > 0 ? c.bytes / mSec : 0) }
  }
  const config = describeScenario({ ...s, seed })
  const { seed: _omit, ...configNoSeed } = config
  void _omit
  const summary: Summary = {
    name: s.name,
    seed,
    configHash: configHash(configNoSeed),
    commit: gitCommit(),
    config,
    measured: { from: measuredFrom, to: s.duration, windows: measuredWindows },
    churn: { ...totals, batchFailures: totals.batches, meanLive: round(mean(liveSamples)), finalLive: liveCount },
    lookups: {
      total: lk.n, ok: lk.ok, success: round(lk.n === 0 ? NaN : lk.ok / lk.n),
      latency: { p50: quantileSorted(latAll, 0.5), p95: quantileSorted(latAll, 0.95), p99: quantileSorted(latAll, 0.99), mean: round(mean(latAll)) }
    },
    registrations: { total: lk.p, ok: lk.pok, success: round(lk.p === 0 ? NaN : lk.pok / lk.p) },
    availability: {
      mean: round(mean(availSamples.map(x => x.a))),
      min: round(availSamples.length === 0 ? NaN : Math.min(...availSamples.map(x => x.a))),
      anyOwner: round(mean(availSamples.map(x => x.any))),
      replication: round(mean(availSamples.map(x => x.r)))
    },
    losses: { measured: measuredLosses, total: totalLosses },
    maintenance: { msgsPerNodeSec: round(mSec > 0 ? tm / mSec : 0), bytesPerNodeSec: round(mSec > 0 ? tb / mSec : 0), byType },
    load: { maxOverMean: round(mean(loadSamples.map(x => x.ratio))), cv: round(mean(loadSamples.map(x => x.cv))), meanItems: round(mean(loadSamples.map(x => x.mean))) },
    violations
  }
  // fix the key order of churn totals for stable output
  summary.churn = { joins: totals.joins, leaves: totals.leaves, crashes: totals.crashes, batchFailures: totals.batches, meanLive: round(mean(liveSamples)), finalLive: liveCount }
  if (repair !== undefined) summary.repair = repair.summary()
  checkExpectations(s, summary)
  return { summary, windows, events, latencies: latAll, simEvents }
}

/** Adds a violation for every `expect` threshold the summary misses. */
export function checkExpectations (s: Scenario, sum: Summary): void {
  const e = s.expect
  if (e.lookupSuccess !== undefined && !(sum.lookups.success >= e.lookupSuccess)) sum.violations.push(`expect.lookupSuccess: ${sum.lookups.success} < ${e.lookupSuccess}`)
  if (e.availability !== undefined && !(sum.availability.mean >= e.availability)) sum.violations.push(`expect.availability: ${sum.availability.mean} < ${e.availability}`)
  if (e.maxLosses !== undefined && sum.losses.measured > e.maxLosses) sum.violations.push(`expect.maxLosses: ${sum.losses.measured} > ${e.maxLosses}`)
}

let commitCache: string | undefined
/** `git rev-parse HEAD` of the working tree, or "unknown" (no git, not a repository). */
export function gitCommit (): string {
  if (commitCache !== undefined) return commitCache
  try {
    commitCache = execFileSync('git', ['rev-parse', 'HEAD'], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).toString().trim() || 'unknown'
  } catch { commitCache = 'unknown' }
  return commitCache
}
