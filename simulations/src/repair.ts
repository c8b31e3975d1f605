/**
 * Time to repair (used by both modes, `repairProbe` > 0): after a node crashes, how long until every
 * key it owned is back at full replication.
 *
 * At a crash of a node that was up (in the oracle's ring), the tracker records the live keys (latest
 * acknowledged write not expired) of which that node was one of the R owners. Every `repairProbe` ms it
 * checks each still-open key against the oracle's *current* ring of up nodes: the key is repaired when
 * min(R, up nodes) of its current owners hold its latest acknowledged version (or a newer one). The
 * episode's repair time = first probe at which every key is repaired − crash time (a multiple of the
 * probe period). An episode with a key that expired before it was repaired (a lost key, or one
 * that was not repaired within its lifetime) is `abandoned`; episodes still open at the end of the run
 * are `open` (censored); neither is averaged. Only crashes after
 * the warm-up count. Repair includes failure detection (SWIM suspicion), the ring update and the
 * store's re-replication (handoff, read repair, anti-entropy).
 */
import { quantileSorted, round } from './stats.js'

/** What the tracker reads from the engine. */
export interface RepairView {
  /** ms since the run's start. */
  now(): number
  /** Owners (R) of a store key on the oracle's ring of the nodes up now (computed once per call of ring()). */
  ring(): { owners(key: string, n: number): string[], size: number }
  /** Does node `id` hold version ≥ `seq` of workload key `key` locally? */
  holds(id: string, key: string, seq: number): boolean
  /** Latest acknowledged, unexpired sequence number of `key`, or undefined. */
  current(key: string): number | undefined
  /** Workload keys with a live acknowledged write. */
  liveKeys(): Iterable<string>
  /** The store key of a workload key (the AOR item of a super node). */
  storeKey(key: string): string
}

export interface RepairSummary {
  /** Crashes (after the warm-up) of nodes that owned at least one live key. */
  episodes: number
  repaired: number
  /** Episodes not repaired by the end of the run. */
  open: number
  /** Episodes with a key that expired before it was repaired (e.g. lost). */
  abandoned: number
  /** Repair times (ms) of the repaired episodes. */
  mean: number
  p50: number
  p95: number
  max: number
  /** Probe period (the resolution of the times above). */
  probe: number
}

interface Episode { node: string, at: number, keys: Set<string>, expired: boolean }

export class RepairTracker {
  private readonly open = new Set<Episode>()
  private readonly times: number[] = []
  private episodes = 0
  private abandoned = 0

  constructor (private readonly view: RepairView, private readonly opts: { replicas: number, probe: number, from: number }) {}

  /** Call when `id` goes down, while it is still in the oracle's ring. */
  onCrash (id: string): void {
    const now = this.view.now()
    if (now < this.opts.from) return
    const ring = this.view.ring()
    const keys = new Set<string>()
    for (const k of this.view.liveKeys()) {
      if (ring.owners(this.view.storeKey(k), this.opts.replicas).includes(id)) keys.add(k)
    }
    if (keys.size === 0) return
    this.episodes++
    this.open.add({ node: id, at: now, keys, expired: false })
  }

  /** One probe: closes the episodes whose keys are all fully replicated again. */
  probe (): void {
    if (this.open.size === 0) return
    const ring = this.view.ring()
    const want = Math.min(this.opts.replicas, ring.size)
    const now = this.view.now()
    const done = new Map<string, boolean | 'expired'>()
    for (const ep of this.open) {
      for (const k of ep.keys) {
        let ok = done.get(k)
        if (ok === undefined) {
          const seq = this.view.current(k)
          if (seq === undefined) ok = 'expired' // nothing left to repair; the episode is not a repair time
          else {
            let holders = 0
            for (const o of ring.owners(this.view.storeKey(k), this.opts.replicas)) if (this.view.holds(o, k, seq)) holders++
            ok = want > 0 && holders >= want
          }
          done.set(k, ok)
        }
        if (ok === 'expired') ep.expired = true
        if (ok !== false) ep.keys.delete(k)
      }
      if (ep.keys.size === 0) {
        this.open.delete(ep)
        if (ep.expired) this.abandoned++; else this.times.push(now - ep.at)
      }
    }
  }

  summary (): RepairSummary {
    const t = [...this.times].sort((a, b) => a - b)
    return {
      episodes: this.episodes,
      repaired: t.length,
      open: this.open.size,
      abandoned: this.abandoned,
      mean: t.length === 0 ? NaN : round(t.reduce((a, b) => a + b, 0) / t.length),
      p50: quantileSorted(t, 0.5),
      p95: quantileSorted(t, 0.95),
      max: t.length === 0 ? NaN : t[t.length - 1]!,
      probe: this.opts.probe
    }
  }
}
