/** Scenario files (YAML): parsing, validation with clear errors, defaults, and a canonical hash. */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import {
  ScenarioError, parseDistribution, parseDuration, parseFraction, readAvt, readChurnCsv,
  type BatchFailure, type ChurnModel, type DistSpec, type Distribution
} from './churn.js'
import { canonicalJson } from './stats.js'
import type { OracleDelays } from './oracle.js'

/**
 * Oracle-mode delays: quantiles (p0, 5, 25, 50, 75, 95, 99, 100) measured on SWIM at N = 500
 * (protocolPeriod 1 s, suspicionMult 5, latency 5–15 ms, joins after the bootstrap) with
 * `npx tsx simulations/src/calibrate.ts simulations/scenarios/calibrate.yaml` — see docs/simulation.md
 * "Scale mode". crashDetect grows with log10(N) (SWIM's suspicion timeout): shift it for other sizes.
 */
const Q = [0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1]
const pts = (ms: number[]): Array<[number, string]> => ms.map((v, i) => [Q[i]!, `${v}ms`])
export const ORACLE_DEFAULTS: Record<keyof OracleDelays, Record<string, unknown>> = {
  joinRtt: { dist: 'uniform', min: '10ms', max: '30ms' },
  joinSpread: { dist: 'empirical', points: pts([4, 1724, 2781, 3404, 4010, 19530, 86442, 119925]) },
  leaveSpread: { dist: 'empirical', points: pts([6, 6, 8, 11, 13, 15, 15, 1003]) },
  crashDetect: { dist: 'empirical', points: pts([9134, 13520, 13822, 14294, 15140, 16608, 17428, 17428]) },
  crashSpread: { dist: 'empirical', points: pts([0, 1103, 1909, 2388, 2832, 3433, 3909, 5490]) }
}

export { ScenarioError }

/** A validated scenario: every duration in ms, every distribution resolved. */
export interface Scenario {
  name: string
  seed: number
  /** Simulated run length (ms), warm-up included. */
  duration: number
  /** Metrics before this time are excluded from the summary. */
  warmup: number
  /** Metric window length (ms). */
  window: number
  /** Initial population. */
  nodes: number
  /** The initial nodes join one after another over this span (ms). */
  bootstrapOver: number
  /** Timers are rounded up to a multiple of this (ms); 0 keeps exact times. */
  timeResolution: number
  /** Upper bound on nodes alive at once (guards a runaway Poisson model). */
  maxNodes: number
  network: { latency: { min: number, max: number }, loss: number, requestTimeout: number }
  overlay: {
    vnodes: number
    replicas: number
    writeQuorum: number
    readQuorum: number
    requestTimeout: number
    antiEntropyInterval: number
    protocolPeriod: number
    pingTimeout: number
    suspicionMult: number
  }
  /**
   * `swim`: every node runs SWIM (faithful, ≈N² messages: up to a few thousand nodes). `oracle`: one
   * global membership service with calibrated detection/dissemination delays (scale mode, 10^5 nodes);
   * ring, store, handoff and anti-entropy stay sipring's code. From `overlay.membership`.
   */
  membership: 'swim' | 'oracle'
  /** Oracle-mode delays (from `overlay.oracle`; defaults calibrated on SWIM, docs/simulation.md). */
  oracle: OracleDelays
  /** Digest buckets of anti-entropy (`overlay.digestBuckets`); undefined = the store's default (256). */
  digestBuckets?: number
  churn: ChurnModel & { start: number }
  /** The churn section as written (for the record). */
  churnSpec: Record<string, unknown>
  failures: BatchFailure[]
  workload: {
    clients: number
    /** Registration lifetime (the store TTL), ms. */
    expires: number
    /** Refresh at expires/2 × (1 ± refreshJitter). */
    refreshJitter: number
    /** Lookups per simulated second (whole system). */
    lookupRate: number
    lookupTimeout: number
    /** A registration (store put) not acknowledged within this long counts as failed. */
    registerTimeout: number
    /** A failed registration is retried after this long. */
    retryAfter: number
    /** Registrations are spread over this span at the start (ms); default expires/2. */
    registerOver: number
  }
  /** Thresholds checked on the summary; a miss is a violation (exit code 3). */
  expect: { lookupSuccess?: number, availability?: number, maxLosses?: number }
  /** `sim` (discrete events, SimClock) or `emulation` (real libp2p nodes on loopback, real time-scaled clock). */
  mode: 'sim' | 'emulation'
  /** The node under test: a bare `overlay` node or a full `super` node (createSuperNode, SIP REGISTER workload). */
  node: 'overlay' | 'super'
  /** Emulation: simulated ms per real ms (4 = 10 simulated min in 2.5 real min); libp2p transport. */
  emulation: { timeScale: number, transport: 'tcp' | 'memory' }
  /** Repair-time probe period (ms); 0 = repair time not measured. */
  repairProbe: number
}

type Obj = Record<string, unknown>

function obj (x: unknown, path: string, allowed: string[]): Obj {
  if (x === undefined || x === null) return {}
  if (typeof x !== 'object' || Array.isArray(x)) throw new ScenarioError(`${path}: expected a mapping`)
  const o = x as Obj
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new ScenarioError(`${path}: unknown field "${k}" (allowed: ${allowed.join(', ')})`)
  }
  return o
}

function num (x: unknown, path: string, def: number, lo: number, hi: number, integer = false): number {
  if (x === undefined) return def
  if (typeof x !== 'number' || !Number.isFinite(x)) throw new ScenarioError(`${path}: expected a number, got ${JSON.stringify(x)}`)
  if (integer && !Number.isInteger(x)) throw new ScenarioError(`${path}: expected an integer, got ${x}`)
  if (x < lo || x > hi) throw new ScenarioError(`${path}: must be within [${lo}, ${hi}], got ${x}`)
  return x
}

function dur (x: unknown, path: string, def: number, lo = 0, hi = 365 * 86_400_000): number {
  if (x === undefined) return def
  const v = parseDuration(x, path)
  if (v < lo || v > hi) throw new ScenarioError(`${path}: must be within [${lo} ms, ${hi} ms], got ${v} ms`)
  return v
}

/** `0.5`, `0.5/s`, `30/min`, `2/h` → events per ms. */
export function parseRate (x: unknown, path: string): number {
  if (typeof x === 'number') {
    if (!(Number.isFinite(x) && x >= 0)) throw new ScenarioError(`${path}: must be a non-negative rate`)
    return x / 1000
  }
  if (typeof x === 'string') {
    const m = /^\s*([0-9]*\.?[0-9]+)\s*\/\s*(ms|s|sec|m|min|h|d)\s*$/.exec(x)
    if (m !== null) return Number(m[1]) / parseDuration(`1${m[2]!}`, path)
  }
  throw new ScenarioError(`${path}: expected a rate like 0.5 (per second), "30/min" or "2/h", got ${JSON.stringify(x)}`)
}

export interface LoadOptions {
  /** Base directory for trace files named in the scenario (default: the scenario file's directory). */
  baseDir?: string
  /** Overrides applied before validation, by dotted path: `[['nodes', 1000], ['churn.session.median', '1.4min']]`. */
  overrides?: Array<[string, unknown]>
}

/** Reads and validates a scenario file. Throws {@link ScenarioError} naming the field on bad input. */
export function loadScenario (file: string, opts: LoadOptions = {}): Scenario {
  let text: string
  try { text = readFileSync(file, 'utf8') } catch (err) { throw new ScenarioError(`cannot read scenario ${file}: ${(err as Error).message}`) }
  return parseScenario(text, { ...opts, baseDir: opts.baseDir ?? dirname(resolve(file)) })
}

export function parseScenario (text: string, opts: LoadOptions = {}): Scenario {
  let doc: unknown
  try { doc = parseYaml(text, { maxAliasCount: 100 }) } catch (err) { throw new ScenarioError(`scenario is not valid YAML: ${(err as Error).message}`) }
  if (doc === null || doc === undefined) doc = {}
  for (const [path, value] of opts.overrides ?? []) doc = setPath(doc, path, value)
  return validateScenario(doc, opts.baseDir ?? process.cwd())
}

/** Sets `a.b.c` = value in a copy of `doc`, creating mappings on the way. */
export function setPath (doc: unknown, path: string, value: unknown): unknown {
  const parts = path.split('.')
  if (parts.some(p => p === '' || p === '__proto__' || p === 'constructor' || p === 'prototype')) throw new ScenarioError(`bad override path ${JSON.stringify(path)}`)
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ScenarioError('scenario: expected a mapping at the top level')
  const root: Obj = { ...(doc as Obj) }
  let cur = root
  for (let i = 0; i < parts.length - 1; i++) {
    const k = parts[i]!
    const next = cur[k]
    const copy: Obj = typeof next === 'object' && next !== null && !Array.isArray(next) ? { ...(next as Obj) } : {}
    cur[k] = copy
    cur = copy
  }
  cur[parts.at(-1)!] = value
  return root
}

export function validateScenario (doc: unknown, baseDir: string): Scenario {
  const top = obj(doc, 'scenario', ['name', 'seed', 'duration', 'warmup', 'window', 'nodes', 'bootstrapOver', 'timeResolution', 'maxNodes', 'network', 'overlay', 'churn', 'failures', 'workload', 'expect', 'mode', 'node', 'emulation', 'repairProbe'])
  const name = top.name === undefined ? 'unnamed' : String(top.name)
  const duration = dur(top.duration, 'duration', 300_000, 1000)
  const warmup = dur(top.warmup, 'warmup', Math.min(60_000, duration / 5))
  if (warmup >= duration) throw new ScenarioError(`warmup (${warmup} ms) must be shorter than duration (${duration} ms)`)
  const window = dur(top.window, 'window', 30_000, 100)
  const nodes = num(top.nodes, 'nodes', 50, 0, 1_000_000, true)

  const net = obj(top.network, 'network', ['latency', 'loss', 'requestTimeout'])
  const lat = obj(net.latency, 'network.latency', ['min', 'max'])
  const latency = { min: dur(lat.min, 'network.latency.min', 5), max: dur(lat.max, 'network.latency.max', 15) }
  if (latency.max < latency.min) throw new ScenarioError('network.latency: max must be >= min')

  const ov = obj(top.overlay, 'overlay', ['vnodes', 'replicas', 'writeQuorum', 'readQuorum', 'requestTimeout', 'antiEntropyInterval', 'protocolPeriod', 'pingTimeout', 'suspicionMult', 'membership', 'oracle', 'digestBuckets'])
  const replicas = num(ov.replicas, 'overlay.replicas', 3, 1, 16, true)
  const overlay = {
    vnodes: num(ov.vnodes, 'overlay.vnodes', 64, 1, 4096, true),
    replicas,
    writeQuorum: num(ov.writeQuorum, 'overlay.writeQuorum', Math.min(2, replicas), 1, replicas, true),
    readQuorum: num(ov.readQuorum, 'overlay.readQuorum', Math.min(2, replicas), 1, replicas, true),
    requestTimeout: dur(ov.requestTimeout, 'overlay.requestTimeout', 1000, 1),
    antiEntropyInterval: dur(ov.antiEntropyInterval, 'overlay.antiEntropyInterval', 30_000),
    protocolPeriod: dur(ov.protocolPeriod, 'overlay.protocolPeriod', 1000, 10),
    pingTimeout: dur(ov.pingTimeout, 'overlay.pingTimeout', 200, 1),
    suspicionMult: num(ov.suspicionMult, 'overlay.suspicionMult', 5, 0.1, 1000)
  }
  if (overlay.pingTimeout >= overlay.protocolPeriod) throw new ScenarioError('overlay.pingTimeout must be shorter than overlay.protocolPeriod')
  const membership = ov.membership ?? 'swim'
  if (membership !== 'swim' && membership !== 'oracle') throw new ScenarioError(`overlay.membership: expected swim or oracle, got ${JSON.stringify(membership)}`)
  const or = obj(ov.oracle, 'overlay.oracle', Object.keys(ORACLE_DEFAULTS))
  const oracleSpecs: Record<string, unknown> = {}
  const oracleDelays = {} as Record<keyof OracleDelays, Distribution>
  for (const k of Object.keys(ORACLE_DEFAULTS) as Array<keyof OracleDelays>) {
    oracleSpecs[k] = or[k] ?? ORACLE_DEFAULTS[k]
    oracleDelays[k] = parseDistribution(oracleSpecs[k], `overlay.oracle.${k}`)
  }
  const digestBuckets = ov.digestBuckets === undefined ? undefined : num(ov.digestBuckets, 'overlay.digestBuckets', 256, 1, 4096, true)
  if (digestBuckets !== undefined && (digestBuckets & (digestBuckets - 1)) !== 0) throw new ScenarioError('overlay.digestBuckets: must be a power of two in [1, 4096]')

  const ch = obj(top.churn, 'churn', ['model', 'start', 'session', 'downtime', 'crashFraction', 'arrivalRate', 'trace'])
  const start = dur(ch.start, 'churn.start', 0)
  const crashFraction = ch.crashFraction === undefined ? 0.5 : parseFraction(ch.crashFraction, 'churn.crashFraction')
  let churn: ChurnModel
  const model = ch.model ?? (top.churn === undefined ? 'none' : undefined)
  switch (model) {
    case 'none': churn = { model: 'none' }; break
    case 'alternating':
      churn = {
        model: 'alternating',
        session: parseDistribution(ch.session, 'churn.session'),
        downtime: parseDistribution(ch.downtime, 'churn.downtime'),
        crashFraction
      }
      break
    case 'poisson':
      if (ch.arrivalRate === undefined) throw new ScenarioError('churn.arrivalRate: required for the poisson model')
      churn = { model: 'poisson', arrivalRate: parseRate(ch.arrivalRate, 'churn.arrivalRate'), session: parseDistribution(ch.session, 'churn.session'), crashFraction }
      if (churn.arrivalRate <= 0) throw new ScenarioError('churn.arrivalRate: must be > 0')
      break
    case 'trace': {
      const tr = obj(ch.trace, 'churn.trace', ['file', 'format', 'timeUnit', 'departure'])
      if (typeof tr.file !== 'string') throw new ScenarioError('churn.trace.file: required (path to an .avt or .csv file)')
      const file = resolve(baseDir, tr.file)
      const format = tr.format ?? (file.endsWith('.csv') ? 'csv' : 'avt')
      if (format !== 'avt' && format !== 'csv') throw new ScenarioError('churn.trace.format: avt or csv')
      const departure = tr.departure ?? 'crash'
      if (departure !== 'crash' && departure !== 'leave') throw new ScenarioError('churn.trace.departure: crash or leave')
      const timeUnit = dur(tr.timeUnit, 'churn.trace.timeUnit', 1000, 0.001)
      let text: string
      try { text = readFileSync(file, 'utf8') } catch (err) { throw new ScenarioError(`churn.trace.file: cannot read ${file}: ${(err as Error).message}`) }
      const events = format === 'avt' ? readAvt(text, { timeUnit, departure }) : readChurnCsv(text, { timeUnit })
      churn = { model: 'trace', events }
      break
    }
    default:
      throw new ScenarioError(`churn.model: expected none, alternating, poisson or trace; got ${JSON.stringify(model)}`)
  }

  if (top.failures !== undefined && !Array.isArray(top.failures)) throw new ScenarioError('failures: expected a list')
  const failures: BatchFailure[] = ((top.failures ?? []) as unknown[]).map((f, i) => {
    const p = `failures[${i}]`
    const o = obj(f, p, ['at', 'fraction', 'kind', 'recoverAfter', 'label'])
    if (o.at === undefined || o.fraction === undefined) throw new ScenarioError(`${p}: needs at and fraction`)
    const kind = o.kind ?? 'crash'
    if (kind !== 'crash' && kind !== 'leave') throw new ScenarioError(`${p}.kind: crash or leave`)
    const b: BatchFailure = { at: dur(o.at, `${p}.at`, 0), fraction: parseFraction(o.fraction, `${p}.fraction`), kind }
    if (o.recoverAfter !== undefined) b.recoverAfter = dur(o.recoverAfter, `${p}.recoverAfter`, 0)
    if (o.label !== undefined) b.label = String(o.label)
    return b
  })

  const wl = obj(top.workload, 'workload', ['clients', 'expires', 'refreshJitter', 'lookupRate', 'lookupTimeout', 'registerTimeout', 'retryAfter', 'registerOver'])
  const expires = dur(wl.expires, 'workload.expires', 600_000, 1000)
  const workload = {
    clients: num(wl.clients, 'workload.clients', 200, 0, 10_000_000, true),
    expires,
    refreshJitter: wl.refreshJitter === undefined ? 0.1 : parseFraction(wl.refreshJitter, 'workload.refreshJitter'),
    lookupRate: wl.lookupRate === undefined ? 0.01 : parseRate(wl.lookupRate, 'workload.lookupRate'),
    lookupTimeout: dur(wl.lookupTimeout, 'workload.lookupTimeout', 2000, 1),
    registerTimeout: dur(wl.registerTimeout, 'workload.registerTimeout', 4000, 1),
    retryAfter: dur(wl.retryAfter, 'workload.retryAfter', 5000, 1),
    registerOver: dur(wl.registerOver, 'workload.registerOver', Math.min(expires / 2, Math.max(1, warmup)))
  }

  const ex = obj(top.expect, 'expect', ['lookupSuccess', 'availability', 'maxLosses'])
  const expect: Scenario['expect'] = {}
  if (ex.lookupSuccess !== undefined) expect.lookupSuccess = parseFraction(ex.lookupSuccess, 'expect.lookupSuccess')
  if (ex.availability !== undefined) expect.availability = parseFraction(ex.availability, 'expect.availability')
  if (ex.maxLosses !== undefined) expect.maxLosses = num(ex.maxLosses, 'expect.maxLosses', 0, 0, Number.MAX_SAFE_INTEGER, true)

  const mode = top.mode ?? 'sim'
  if (mode !== 'sim' && mode !== 'emulation') throw new ScenarioError(`mode: expected sim or emulation, got ${JSON.stringify(mode)}`)
  const nodeKind = top.node ?? 'overlay'
  if (nodeKind !== 'overlay' && nodeKind !== 'super') throw new ScenarioError(`node: expected overlay or super, got ${JSON.stringify(nodeKind)}`)
  if (mode === 'emulation' && nodeKind !== 'overlay') throw new ScenarioError('node: mode emulation runs overlay nodes only (node: super is simulated)')
  const em = obj(top.emulation, 'emulation', ['timeScale', 'transport'])
  const transport = em.transport ?? 'tcp'
  if (transport !== 'tcp' && transport !== 'memory') throw new ScenarioError(`emulation.transport: expected tcp or memory, got ${JSON.stringify(transport)}`)
  const emulation = { timeScale: num(em.timeScale, 'emulation.timeScale', 4, 0.1, 100), transport: transport as 'tcp' | 'memory' }

  return {
    membership,
    oracle: oracleDelays,
    ...(digestBuckets !== undefined ? { digestBuckets } : {}),
    mode,
    node: nodeKind,
    emulation,
    repairProbe: dur(top.repairProbe, 'repairProbe', 0, 0, 3_600_000),
    name,
    seed: num(top.seed, 'seed', 1, 0, 0xffffffff, true),
    duration,
    warmup,
    window,
    nodes,
    bootstrapOver: dur(top.bootstrapOver, 'bootstrapOver', Math.min(warmup, nodes * 200)),
    timeResolution: dur(top.timeResolution, 'timeResolution', 1, 0, 1000),
    maxNodes: num(top.maxNodes, 'maxNodes', Math.max(nodes * 4, 100), 1, 10_000_000, true),
    network: { latency, loss: top.network === undefined || net.loss === undefined ? 0 : parseFraction(net.loss, 'network.loss'), requestTimeout: overlay.requestTimeout },
    overlay,
    churn: { ...churn, start } as ChurnModel & { start: number },
    churnSpec: ch,
    failures,
    workload,
    expect
  }
}

/** The scenario as a plain, JSON-able record (distributions as their specs, trace events counted). */
export function describeScenario (s: Scenario): Record<string, unknown> {
  const churn: Record<string, unknown> = { model: s.churn.model, start: s.churn.start }
  const spec = (d: { spec: DistSpec, mean(): number, median(): number }): Record<string, unknown> => ({ ...d.spec, mean: d.mean(), median: d.median() })
  if (s.churn.model === 'alternating') Object.assign(churn, { session: spec(s.churn.session), downtime: spec(s.churn.downtime), crashFraction: s.churn.crashFraction })
  if (s.churn.model === 'poisson') Object.assign(churn, { arrivalRatePerSecond: s.churn.arrivalRate * 1000, session: spec(s.churn.session), crashFraction: s.churn.crashFraction })
  if (s.churn.model === 'trace') Object.assign(churn, { trace: s.churnSpec.trace, events: s.churn.events.length, tracehash: configHash(s.churn.events) })
  return {
    name: s.name, seed: s.seed, duration: s.duration, warmup: s.warmup, window: s.window, nodes: s.nodes,
    bootstrapOver: s.bootstrapOver, timeResolution: s.timeResolution, maxNodes: s.maxNodes,
    network: s.network, overlay: s.overlay, churn, failures: s.failures,
    workload: { ...s.workload, lookupRate: undefined, lookupRatePerSecond: s.workload.lookupRate * 1000 },
    expect: s.expect,
    // scale-mode fields: recorded only when used, so existing configurations keep their hash
    ...(s.membership !== 'swim' ? { membership: s.membership, oracle: Object.fromEntries(Object.entries(s.oracle).map(([k, d]) => [k, d.spec])) } : {}),
    ...(s.digestBuckets !== undefined ? { digestBuckets: s.digestBuckets } : {}),
    // recorded only when not the default, so existing configurations keep their hash
    ...(s.mode !== 'sim' ? { mode: s.mode, emulation: s.emulation } : {}),
    ...(s.node !== 'overlay' ? { node: s.node } : {}),
    ...(s.repairProbe > 0 ? { repairProbe: s.repairProbe } : {})
  }
}

/** sha256 (first 16 hex digits) of the canonical JSON of `x`. */
export function configHash (x: unknown): string {
  return createHash('sha256').update(canonicalJson(x)).digest('hex').slice(0, 16)
}
