/**
 * Calibrates the oracle (scale mode) against real SWIM: runs a scenario with `overlay.membership: swim`
 * and records, for every join, graceful leave and crash, when each other live member learnt of it.
 *
 *   npx tsx simulations/src/calibrate.ts [scenario.yaml] [--set nodes=1000 ...]
 *
 * Prints quantiles (ms) and the `overlay.oracle` block to paste into a scenario (and writes them to
 * simulations/out/calibrate/calibration.json). Definitions match oracle.ts:
 *   joinSpread   observer learns of a join − the joiner's join() resolved
 *   leaveSpread  observer learns of a leave − the leave started
 *   crashDetect  first member declares the crashed one dead − the crash
 *   crashSpread  observer declares it dead − that first detection
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { silentLogger, type Rng } from '@sipring/interface'
import { createHasher } from '@sipring/overlay'
import { OverlayNodeAdapter, type NodeFactory, type RegValue, type SimNode } from './adapter.js'
import { runScenario, type FactoryContext } from './engine.js'
import { loadScenario } from './scenario.js'
import { quantileSorted } from './stats.js'

const QS = [0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1]

export interface Calibration {
  samples: Record<string, number>
  quantiles: Record<string, Record<string, number>>
  /** Suggested `overlay.oracle` block: the measured quantiles as an empirical distribution. */
  oracle: Record<string, { dist: 'empirical', points: Array<[number, string]> }>
}

/** Runs the scenario under SWIM and measures membership delays. */
export async function calibrate (file: string, sets: Array<[string, unknown]>): Promise<Calibration> {
  const s = loadScenario(file, { overrides: [...sets, ['overlay.membership', 'swim']] })
  const joinSpread: number[] = []; const leaveSpread: number[] = []; const crashDetect: number[] = []; const crashSpread: number[] = []
  const joined = new Map<string, number>(); const left = new Map<string, number>()
  const crashed = new Map<string, { at: number, first?: number, obs: number[] }>()
  const HORIZON = 120_000
  let now = (): number => 0
  let t0 = 0
  const nodeFactory = (ctx: FactoryContext): NodeFactory<RegValue> => {
    now = () => ctx.clock.now()
    t0 = ctx.clock.now()
    const init = {
      membership: { protocolPeriod: s.overlay.protocolPeriod, pingTimeout: s.overlay.pingTimeout, suspicionMult: s.overlay.suspicionMult },
      store: {
        replicas: s.overlay.replicas, writeQuorum: s.overlay.writeQuorum, readQuorum: s.overlay.readQuorum,
        requestTimeout: s.overlay.requestTimeout, antiEntropyInterval: s.overlay.antiEntropyInterval, maxTtl: Math.max(s.workload.expires, 1000)
      }
    }
    const f = { clock: ctx.clock, logger: silentLogger, hub: ctx.hub, hasher: ctx.hasher, rings: ctx.rings, init }
    return {
      create (id: string, rng: Rng): SimNode<RegValue> {
        const a = new OverlayNodeAdapter(id, rng, f)
        const m = a.node.membership
        m.on('member:join', x => {
          const t = joined.get(x)
          if (t !== undefined && now() - t < HORIZON) joinSpread.push(Math.max(0, now() - t))
        })
        m.on('member:leave', x => {
          const t = left.get(x)
          if (t !== undefined && now() - t < HORIZON) leaveSpread.push(Math.max(0, now() - t))
        })
        m.on('member:dead', x => {
          const c = crashed.get(x)
          if (c === undefined || now() - c.at > HORIZON) return
          c.first ??= now()
          c.obs.push(now())
        })
        const join = a.join.bind(a); const leave = a.leave.bind(a); const crash = a.crash.bind(a)
        // joins of the initial bootstrap (before churn.start) are not steady-state churn: not measured
        a.join = async seeds => { await join(seeds); if (now() - t0 >= s.churn.start) joined.set(id, now()) }
        a.leave = async () => { left.set(id, now()); await leave() }
        a.crash = async () => { flush(id); crashed.set(id, { at: now(), obs: [] }); await crash() }
        return a
      }
    }
  }
  const flush = (id: string): void => {
    const c = crashed.get(id)
    if (c === undefined || c.first === undefined) return
    crashDetect.push(c.first - c.at)
    for (const t of c.obs) crashSpread.push(t - c.first)
    crashed.delete(id)
  }
  const hasher = await createHasher()
  await runScenario(s, { nodeFactory, hasher, recordEvents: false })
  for (const id of [...crashed.keys()]) flush(id)
  const sets2 = { joinSpread, leaveSpread, crashDetect, crashSpread }
  const out: Calibration = { samples: {}, quantiles: {}, oracle: {} }
  for (const [k, v] of Object.entries(sets2)) {
    v.sort((a, b) => a - b)
    out.samples[k] = v.length
    out.quantiles[k] = Object.fromEntries(QS.map(q => [`p${Math.round(q * 100)}`, Math.round(quantileSorted(v, q))]))
    if (v.length > 0) out.oracle[k] = { dist: 'empirical', points: QS.map(q => [q, `${Math.round(quantileSorted(v, q))}ms`]) }
  }
  return out
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2)
  let file = fileURLToPath(new URL('../scenarios/calibrate.yaml', import.meta.url))
  const sets: Array<[string, unknown]> = []
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--set') { const kv = args[++i] ?? ''; const eq = kv.indexOf('='); sets.push([kv.slice(0, eq), parseYaml(kv.slice(eq + 1)) as unknown]) } else file = args[i]!
  }
  const res = await calibrate(file, sets)
  const dir = fileURLToPath(new URL('../out/calibrate', import.meta.url))
  mkdirSync(dir, { recursive: true })
  writeFileSync(`${dir}/calibration.json`, JSON.stringify({ file, sets, ...res }, null, 2) + '\n')
  console.log(JSON.stringify(res, null, 2))
}
