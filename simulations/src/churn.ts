/**
 * Churn models: lifetime distributions, session/down-time processes, Poisson arrivals, correlated
 * batch failures and trace-driven churn (.avt availability traces and CSV event lists).
 *
 * Everything draws from an injected {@link Rng}; nothing here reads the wall clock.
 */
import type { Rng } from '@sipring/interface'

export class ScenarioError extends Error {
  constructor (message: string) { super(message); this.name = 'ScenarioError' }
}

// ---------------------------------------------------------------- distributions

export type DistSpec =
  | { dist: 'constant', value: number }
  | { dist: 'uniform', min: number, max: number }
  | { dist: 'exponential', mean: number }
  | { dist: 'weibull', shape: number, scale: number }
  | { dist: 'pareto', shape: number, scale: number }
  /** Piecewise-linear inverse CDF through `points` = [[probability, value ms], ...] from p 0 to p 1. */
  | { dist: 'empirical', points: Array<[number, number]> }

/** A sampler of positive durations (ms) with its analytic mean and median. */
export interface Distribution {
  readonly spec: DistSpec
  sample (rng: Rng): number
  mean (): number
  median (): number
}

/** Lanczos approximation of Γ(x) for x > 0 (relative error < 1e-13). */
export function gamma (x: number): number {
  if (x < 0.5) return Math.PI / (Math.sin(Math.PI * x) * gamma(1 - x))
  const g = 7
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
    -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7]
  x -= 1
  let a = c[0]!
  const t = x + g + 0.5
  for (let i = 1; i < g + 2; i++) a += c[i]! / (x + i)
  return Math.sqrt(2 * Math.PI) * Math.pow(t, x + 0.5) * Math.exp(-t) * a
}

/** A uniform draw in (0, 1] (never 0, so logarithms and powers stay finite). */
function unit (rng: Rng): number { return 1 - rng.next() }

export function makeDistribution (spec: DistSpec): Distribution {
  const pos = (x: number, what: string): void => {
    if (!(typeof x === 'number' && Number.isFinite(x) && x > 0)) throw new ScenarioError(`${spec.dist}: ${what} must be a positive number, got ${String(x)}`)
  }
  switch (spec.dist) {
    case 'constant':
      pos(spec.value, 'value')
      return { spec, sample: () => spec.value, mean: () => spec.value, median: () => spec.value }
    case 'uniform':
      if (!(spec.min >= 0 && spec.max > spec.min)) throw new ScenarioError('uniform: need 0 <= min < max')
      return { spec, sample: r => spec.min + r.next() * (spec.max - spec.min), mean: () => (spec.min + spec.max) / 2, median: () => (spec.min + spec.max) / 2 }
    case 'exponential':
      pos(spec.mean, 'mean')
      return { spec, sample: r => -spec.mean * Math.log(unit(r)), mean: () => spec.mean, median: () => spec.mean * Math.LN2 }
    case 'weibull': {
      pos(spec.shape, 'shape'); pos(spec.scale, 'scale')
      const { shape: k, scale: l } = spec
      return {
        spec,
        sample: r => l * Math.pow(-Math.log(unit(r)), 1 / k),
        mean: () => l * gamma(1 + 1 / k),
        median: () => l * Math.pow(Math.LN2, 1 / k)
      }
    }
    case 'empirical': {
      const pts = spec.points
      const ok = Array.isArray(pts) && pts.length >= 2 && pts[0]![0] === 0 && pts.at(-1)![0] === 1 &&
        pts.every((x, i) => Array.isArray(x) && Number.isFinite(x[0]) && Number.isFinite(x[1]) && x[1] >= 0 &&
          (i === 0 || (x[0] > pts[i - 1]![0] && x[1] >= pts[i - 1]![1])))
      if (!ok) throw new ScenarioError('empirical: points must be [[0, v0], ..., [1, vn]] with increasing probabilities and non-decreasing values >= 0')
      const inv = (u: number): number => {
        let i = 1
        while (i < pts.length - 1 && pts[i]![0] < u) i++
        const [p0, v0] = pts[i - 1]!; const [p1, v1] = pts[i]!
        return v0 + (v1 - v0) * (u - p0) / (p1 - p0)
      }
      let m = 0
      for (let i = 1; i < pts.length; i++) m += (pts[i]![0] - pts[i - 1]![0]) * (pts[i]![1] + pts[i - 1]![1]) / 2
      return { spec, sample: r => inv(r.next()), mean: () => m, median: () => inv(0.5) }
    }
    case 'pareto': {
      pos(spec.shape, 'shape'); pos(spec.scale, 'scale')
      const { shape: a, scale: xm } = spec
      return {
        spec,
        sample: r => xm / Math.pow(unit(r), 1 / a),
        mean: () => a > 1 ? a * xm / (a - 1) : Infinity,
        median: () => xm * Math.pow(2, 1 / a)
      }
    }
  }
}

/** Weibull scale for a given median: median = scale · (ln 2)^(1/k). */
export function weibullScaleForMedian (shape: number, median: number): number { return median / Math.pow(Math.LN2, 1 / shape) }
/** Weibull scale for a given mean: mean = scale · Γ(1 + 1/k). */
export function weibullScaleForMean (shape: number, mean: number): number { return mean / gamma(1 + 1 / shape) }
/** Pareto scale (minimum) for a given median: median = xm · 2^(1/α). */
export function paretoScaleForMedian (shape: number, median: number): number { return median / Math.pow(2, 1 / shape) }
/** Pareto scale for a given mean (α > 1): mean = α·xm / (α − 1). */
export function paretoScaleForMean (shape: number, mean: number): number {
  if (!(shape > 1)) throw new ScenarioError('pareto: a mean exists only for shape > 1')
  return mean * (shape - 1) / shape
}

// ---------------------------------------------------------------- durations

const UNITS: Record<string, number> = { ms: 1, s: 1000, sec: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 }

/** Parses `500ms`, `30s`, `1.4min`, `1.4m`, `2h`, `3d`; a plain number is milliseconds. */
export function parseDuration (x: unknown, what = 'duration'): number {
  if (typeof x === 'number') {
    if (Number.isFinite(x) && x >= 0) return x
    throw new ScenarioError(`${what}: must be a non-negative number of ms, got ${x}`)
  }
  if (typeof x !== 'string') throw new ScenarioError(`${what}: expected a duration like "30s" or "1.4min", got ${JSON.stringify(x)}`)
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(ms|s|sec|m|min|h|d)?\s*$/i.exec(x)
  if (m === null) throw new ScenarioError(`${what}: expected a duration like "30s" or "1.4min", got ${JSON.stringify(x)}`)
  const unitName = (m[2] ?? 'ms').toLowerCase()
  return Number(m[1]) * UNITS[unitName]!
}

/** Parses `10%` or `0.1` into a fraction in [0, 1]. */
export function parseFraction (x: unknown, what = 'fraction'): number {
  let v: number
  if (typeof x === 'number') v = x
  else if (typeof x === 'string' && /^\s*[0-9]*\.?[0-9]+\s*%\s*$/.test(x)) v = Number(x.replace('%', '').trim()) / 100
  else throw new ScenarioError(`${what}: expected a fraction (0.1) or a percentage ("10%"), got ${JSON.stringify(x)}`)
  if (!(v >= 0 && v <= 1)) throw new ScenarioError(`${what}: must be within [0, 1], got ${v}`)
  return v
}

/**
 * Builds a distribution from a scenario object, e.g. `{dist: weibull, shape: 0.5, median: 1.4min}`,
 * `{dist: exponential, mean: 10min}`, `{dist: pareto, shape: 2, scale: 1min}`. Durations accept units.
 */
export function parseDistribution (x: unknown, what = 'distribution'): Distribution {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new ScenarioError(`${what}: expected an object like {dist: exponential, mean: 10min}`)
  const o = x as Record<string, unknown>
  const known = new Set(['dist', 'mean', 'median', 'scale', 'shape', 'value', 'min', 'max', 'points'])
  for (const k of Object.keys(o)) if (!known.has(k)) throw new ScenarioError(`${what}: unknown field "${k}"`)
  const d = (k: string): number | undefined => o[k] === undefined ? undefined : parseDuration(o[k], `${what}.${k}`)
  const shape = (): number => {
    const s = o.shape
    if (typeof s !== 'number' || !(s > 0)) throw new ScenarioError(`${what}.shape: must be a positive number`)
    return s
  }
  const need = (v: number | undefined, k: string): number => {
    if (v === undefined) throw new ScenarioError(`${what}: ${String(o.dist)} needs ${k}`)
    return v
  }
  try {
    switch (o.dist) {
      case 'constant': return makeDistribution({ dist: 'constant', value: need(d('value') ?? d('mean'), 'value') })
      case 'uniform': return makeDistribution({ dist: 'uniform', min: need(d('min'), 'min'), max: need(d('max'), 'max') })
      case 'empirical': {
        if (!Array.isArray(o.points)) throw new ScenarioError(`${what}: empirical needs points: [[0, 1s], [0.5, 3s], [1, 20s]]`)
        const points = (o.points as unknown[]).map((x, i) => {
          if (!Array.isArray(x) || x.length !== 2 || typeof x[0] !== 'number') throw new ScenarioError(`${what}.points[${i}]: expected [probability, duration]`)
          return [x[0], parseDuration(x[1], `${what}.points[${i}]`)] as [number, number]
        })
        return makeDistribution({ dist: 'empirical', points })
      }
      case 'exponential': {
        const mean = d('mean') ?? (d('median') === undefined ? undefined : d('median')! / Math.LN2)
        return makeDistribution({ dist: 'exponential', mean: need(mean, 'mean or median') })
      }
      case 'weibull': {
        const k = shape()
        const scale = d('scale') ?? (d('median') !== undefined ? weibullScaleForMedian(k, d('median')!) : d('mean') !== undefined ? weibullScaleForMean(k, d('mean')!) : undefined)
        return makeDistribution({ dist: 'weibull', shape: k, scale: need(scale, 'scale, median or mean') })
      }
      case 'pareto': {
        const a = shape()
        const scale = d('scale') ?? (d('median') !== undefined ? paretoScaleForMedian(a, d('median')!) : d('mean') !== undefined ? paretoScaleForMean(a, d('mean')!) : undefined)
        return makeDistribution({ dist: 'pareto', shape: a, scale: need(scale, 'scale, median or mean') })
      }
      default:
        throw new ScenarioError(`${what}.dist: expected one of constant, uniform, exponential, weibull, pareto, empirical; got ${JSON.stringify(o.dist)}`)
    }
  } catch (err) {
    if (err instanceof ScenarioError && !err.message.startsWith(what)) throw new ScenarioError(`${what}: ${err.message}`)
    throw err
  }
}

// ---------------------------------------------------------------- churn events

export type ChurnKind = 'join' | 'leave' | 'crash'

/** One membership event of the simulated population (times in ms from the start of the run). */
export interface ChurnEvent {
  at: number
  node: string
  kind: ChurnKind
}

// ---------------------------------------------------------------- trace readers

/** Limits that keep a malformed trace from exhausting memory. */
export interface TraceLimits { maxNodes: number, maxEvents: number }
export const DEFAULT_TRACE_LIMITS: TraceLimits = { maxNodes: 200_000, maxEvents: 5_000_000 }

export interface TraceOptions {
  /** ms per trace time unit: 1000 when the trace is in seconds (the .avt convention). */
  timeUnit?: number
  /** Events with a departure: `crash` (default; traces cannot tell) or `leave`. */
  departure?: 'crash' | 'leave'
  limits?: TraceLimits
}

/**
 * Reads an availability trace in the `.avt` format of the public availability-trace repository
 * (Godfrey; PlanetLab, Overnet, Skype, KAD): one line per node,
 * `<node-id> <n> <start1> <end1> ... <startn> <endn>` with the n up-intervals in trace time units
 * (seconds). Blank lines and `#` comments are skipped. Throws {@link ScenarioError} with the line number.
 */
export function readAvt (text: string, opts: TraceOptions = {}): ChurnEvent[] {
  const unitMs = opts.timeUnit ?? 1000
  const limits = opts.limits ?? DEFAULT_TRACE_LIMITS
  const departure = opts.departure ?? 'crash'
  const out: ChurnEvent[] = []
  const seen = new Set<string>()
  const lines = text.split(/\r?\n/)
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln]!.trim()
    if (line === '' || line.startsWith('#')) continue
    const f = line.split(/\s+/)
    const where = `avt line ${ln + 1}`
    const node = f[0]!
    if (seen.has(node)) throw new ScenarioError(`${where}: node ${node} appears twice`)
    seen.add(node)
    if (seen.size > limits.maxNodes) throw new ScenarioError(`${where}: more than ${limits.maxNodes} nodes`)
    const n = Number(f[1])
    if (!Number.isSafeInteger(n) || n < 0) throw new ScenarioError(`${where}: interval count must be a non-negative integer, got ${JSON.stringify(f[1])}`)
    if (f.length !== 2 + 2 * n) throw new ScenarioError(`${where}: ${n} intervals need ${2 + 2 * n} fields, found ${f.length}`)
    let prevEnd = -Infinity
    for (let i = 0; i < n; i++) {
      const s = Number(f[2 + 2 * i]); const e = Number(f[3 + 2 * i])
      if (!Number.isFinite(s) || !Number.isFinite(e) || s < 0) throw new ScenarioError(`${where}: interval ${i + 1} has a bad time`)
      if (e < s) throw new ScenarioError(`${where}: interval ${i + 1} ends (${e}) before it starts (${s})`)
      if (s < prevEnd) throw new ScenarioError(`${where}: interval ${i + 1} overlaps the previous one`)
      prevEnd = e
      if (e === s) continue
      out.push({ at: s * unitMs, node, kind: 'join' }, { at: e * unitMs, node, kind: departure })
      if (out.length > limits.maxEvents) throw new ScenarioError(`${where}: more than ${limits.maxEvents} events`)
    }
  }
  return sortEvents(out)
}

/**
 * Reads a CSV churn trace: `time,node,event` with event `join`, `leave` or `crash`; time in trace
 * units (seconds by default). An optional header line (`time,node,event`) and `#` comments are skipped.
 */
export function readChurnCsv (text: string, opts: TraceOptions = {}): ChurnEvent[] {
  const unitMs = opts.timeUnit ?? 1000
  const limits = opts.limits ?? DEFAULT_TRACE_LIMITS
  const out: ChurnEvent[] = []
  const nodes = new Set<string>()
  const lines = text.split(/\r?\n/)
  for (let ln = 0; ln < lines.length; ln++) {
    const line = lines[ln]!.trim()
    if (line === '' || line.startsWith('#')) continue
    const f = line.split(',').map(s => s.trim())
    const where = `csv line ${ln + 1}`
    if (ln === 0 && f[0]!.toLowerCase() === 'time') continue
    if (f.length !== 3) throw new ScenarioError(`${where}: expected time,node,event`)
    const t = Number(f[0])
    if (f[0] === '' || !Number.isFinite(t) || t < 0) throw new ScenarioError(`${where}: bad time ${JSON.stringify(f[0])}`)
    const node = f[1]!
    if (node === '' || node.length > 256) throw new ScenarioError(`${where}: bad node id`)
    const kind = f[2]!.toLowerCase()
    if (kind !== 'join' && kind !== 'leave' && kind !== 'crash') throw new ScenarioError(`${where}: event must be join, leave or crash, got ${JSON.stringify(f[2])}`)
    nodes.add(node)
    if (nodes.size > limits.maxNodes) throw new ScenarioError(`${where}: more than ${limits.maxNodes} nodes`)
    out.push({ at: t * unitMs, node, kind })
    if (out.length > limits.maxEvents) throw new ScenarioError(`${where}: more than ${limits.maxEvents} events`)
  }
  return sortEvents(out)
}

/** Stable sort by time (events of one instant keep their file order). */
export function sortEvents (ev: ChurnEvent[]): ChurnEvent[] {
  return ev.map((e, i) => ({ e, i })).sort((a, b) => a.e.at - b.e.at || a.i - b.i).map(x => x.e)
}

// ---------------------------------------------------------------- process models

/** What the engine offers a churn model. */
export interface ChurnHost {
  /** Ids of nodes currently up (joined or joining), in a deterministic order. */
  live (): string[]
  isLive (id: string): boolean
  /** Run `fn` at absolute run time `at` (ms since the run started). */
  at (t: number, fn: () => void): void
  now (): number
  /** Bring node `id` up (fresh process). */
  up (id: string): void
  /** Take node `id` down. */
  down (id: string, kind: 'leave' | 'crash'): void
  /** A new never-used node id. */
  newId (): string
}

export interface AlternatingModel {
  model: 'alternating'
  session: Distribution
  downtime: Distribution
  /** Share of departures that are crashes (the rest are graceful leaves). */
  crashFraction: number
}

export interface PoissonModel {
  model: 'poisson'
  /** New nodes per ms. */
  arrivalRate: number
  session: Distribution
  crashFraction: number
}

export interface TraceModel {
  model: 'trace'
  events: ChurnEvent[]
}

export interface NoChurn { model: 'none' }

export type ChurnModel = AlternatingModel | PoissonModel | TraceModel | NoChurn

/** A correlated batch failure: at `at`, `fraction` of the live nodes crash (or leave), optionally returning after `recoverAfter`. */
export interface BatchFailure {
  at: number
  fraction: number
  kind: 'crash' | 'leave'
  recoverAfter?: number
  label?: string
}

/**
 * Starts a churn model on `host` from time `start`. `rngFor(label)` gives an independent stream per
 * node (`churn:<id>`) so each host's on/off schedule does not depend on any other component.
 */
export function startChurn (model: ChurnModel, host: ChurnHost, start: number, rngFor: (label: string) => Rng): void {
  switch (model.model) {
    case 'none': return
    case 'alternating': {
      // each host alternates session / down time on its own stream; a host that a batch failure
      // already took down skips its departure but still comes back at the end of its down time
      const cycle = (id: string, r: Rng): void => {
        host.at(host.now() + model.session.sample(r), () => {
          const crash = r.next() < model.crashFraction
          if (host.isLive(id)) host.down(id, crash ? 'crash' : 'leave')
          host.at(host.now() + model.downtime.sample(r), () => { if (!host.isLive(id)) host.up(id); cycle(id, r) })
        })
      }
      host.at(start, () => {
        for (const id of host.live()) cycle(id, rngFor(`churn:${id}`))
      })
      return
    }
    case 'poisson': {
      const arrivals = rngFor('churn:arrivals')
      const depart = (id: string): void => {
        const r = rngFor(`churn:${id}`)
        host.at(host.now() + model.session.sample(r), () => {
          const crash = r.next() < model.crashFraction
          if (host.isLive(id)) host.down(id, crash ? 'crash' : 'leave')
        })
      }
      const next = (): void => {
        const gap = -Math.log(1 - arrivals.next()) / model.arrivalRate
        host.at(host.now() + gap, () => {
          const id = host.newId()
          host.up(id); depart(id); next()
        })
      }
      host.at(start, () => {
        for (const id of host.live()) depart(id)
        next()
      })
      return
    }
    case 'trace':
      for (const e of model.events) {
        host.at(start + e.at, () => {
          const isLive = host.isLive(e.node)
          if (e.kind === 'join') { if (!isLive) host.up(e.node) } else if (isLive) host.down(e.node, e.kind)
        })
      }
  }
}

/** Schedules correlated failures: each picks `round(fraction × live)` nodes with `rng`. */
export function startBatchFailures (batches: BatchFailure[], host: ChurnHost, rng: Rng, onBatch?: (b: BatchFailure, ids: string[]) => void): void {
  for (const b of batches) {
    host.at(b.at, () => {
      const live = host.live()
      const n = Math.round(b.fraction * live.length)
      // partial Fisher–Yates: the first n of a random permutation
      const pool = [...live]
      for (let i = 0; i < n; i++) {
        const j = i + rng.int(pool.length - i)
        ;[pool[i], pool[j]] = [pool[j]!, pool[i]!]
      }
      const victims = pool.slice(0, n)
      onBatch?.(b, victims)
      for (const id of victims) host.down(id, b.kind)
      if (b.recoverAfter !== undefined) {
        host.at(host.now() + b.recoverAfter, () => { for (const id of victims) if (!host.isLive(id)) host.up(id) })
      }
    })
  }
}
