// Measures the overlay under SimClock: membership convergence after a join and after a crash,
// and replicated-store throughput (sim ops per CPU second).
// Run: node --import tsx --conditions=sipring-source packages/overlay/bench/overlay.ts [N] [seed] [ops]
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { createHasher, drive, OverlayNode, RingFactory, SimOverlayHub, type PeerId } from '../src/index.js'

/** CPU time of this process in ms (user + system): steadier than the wall clock on a shared machine, and no clock read. */
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }

const N = Number(process.argv[2] ?? 20)
const SEED = Number(process.argv[3] ?? 1)
const OPS = Number(process.argv[4] ?? 2000)
const hasher = await createHasher()
const clock = new SimClock()
const start = clock.now()
const rng = new SeededRng(SEED)
const hub = new SimOverlayHub({ clock, rng: rng.fork('net'), latency: { min: 5, max: 15 } })
const rings = new RingFactory(hasher)
const nodes = new Map<PeerId, OverlayNode<string>>()
const id = (i: number): PeerId => `node-${String(i).padStart(5, '0')}`

async function settle<T> (p: Promise<T>): Promise<T> {
  let done = false
  const q = p.finally(() => { done = true }); q.catch(() => {})
  while (!done) await drive(clock, 10)
  return await q
}
async function add (name: PeerId, seed?: PeerId): Promise<OverlayNode<string>> {
  const n = new OverlayNode<string>({ clock, rng: rng.fork(name), logger: silentLogger, network: hub.connect(name), hasher, ringFactory: rings }, { store: { antiEntropyInterval: 30_000 } })
  await n.start()
  if (seed !== undefined) await settle(n.join([seed]))
  nodes.set(name, n)
  return n
}
const agreed = (): boolean => {
  const want = [...nodes.keys()].sort().join()
  for (const n of nodes.values()) if (n.membership.view().join() !== want) return false
  return true
}
async function until (cond: () => boolean, step = 10): Promise<number> {
  const t0 = clock.now()
  while (!cond()) { if (clock.now() - t0 > 600_000) return -1; await drive(clock, step) }
  return clock.now() - t0
}

let cpu0 = cpuMs()
for (let i = 0; i < N; i++) await add(id(i), i === 0 ? undefined : id(0))
const formed = await until(agreed, 100)
if (formed < 0) {
  const sizes = [...nodes.values()].map(n => n.membership.view().length).sort((a, b) => a - b)
  console.log(`not converged: view sizes min ${sizes[0]} median ${sizes[sizes.length >> 1]} max ${sizes.at(-1)}; gossip queue max ${Math.max(...[...nodes.values()].map(n => n.membership.pendingGossip))}`)
}
console.log(`N=${N}: formed in ${formed} sim ms (${(cpuMs() - cpu0).toFixed(0)} CPU ms), ring load max/mean ${rings.of(nodes.keys()).loadStats(3).ratio.toFixed(3)}`)

const joins: number[] = []; const crashes: number[] = []
for (let r = 0; r < 5; r++) {
  await add(`joiner-${r}`, [...nodes.keys()][rng.int(nodes.size)]) // a live member (earlier victims are gone)
  joins.push(await until(agreed))
  const victim = [...nodes.keys()][1 + rng.int(nodes.size - 1)]!
  await nodes.get(victim)!.stop(); hub.crash(victim); nodes.delete(victim)
  const tc = clock.now(); let firstSuspect = -1; let firstDead = -1
  const offs = [...nodes.values()].flatMap(n => [
    n.membership.on('member:suspect', v => { if (v === victim && firstSuspect < 0) firstSuspect = clock.now() - tc }),
    n.membership.on('member:dead', v => { if (v === victim && firstDead < 0) firstDead = clock.now() - tc })])
  crashes.push(await until(agreed))
  for (const off of offs) off()
  if (process.env.VERBOSE) console.log(`  crash ${victim}: first suspect ${firstSuspect} ms, first dead ${firstDead} ms, all agree ${crashes.at(-1)} ms`)
  await drive(clock, 5_000)
}
const fmt = (a: number[]): string => `min ${Math.min(...a)} / mean ${(a.reduce((x, y) => x + y, 0) / a.length).toFixed(0)} / max ${Math.max(...a)} ms`
console.log(`join convergence (5 joins): ${fmt(joins)}`)
console.log(`crash convergence (5 crashes, suspicion ${nodes.get(id(0))!.membership.suspicionTimeout().toFixed(0)} ms): ${fmt(crashes)}`)
console.log(`messages per node per period: ~${(hub.stats.requests / nodes.size / ((clock.now() - start) / 1000)).toFixed(2)}`)

// store throughput: OPS puts then OPS gets, 50 in flight, from random coordinators
const list = [...nodes.values()]
async function run (kind: 'put' | 'get'): Promise<void> {
  cpu0 = cpuMs()
  const t0 = clock.now()
  let done = 0; let failed = 0
  for (let i = 0; i < OPS; i += 50) {
    const batch = []
    for (let j = i; j < Math.min(OPS, i + 50); j++) {
      const n = list[rng.int(list.length)]!
      const key = `sip:user${j}@example.org`
      batch.push((kind === 'put' ? n.store.put(key, `contact-${j}`, { ttl: 3_600_000 }) : n.store.get(key).then(v => { if (v !== `contact-${j}`) throw new Error('lost') }))
        .then(() => { done++ }, () => { failed++ }))
    }
    await settle(Promise.all(batch))
  }
  const w = cpuMs() - cpu0
  console.log(`${kind}: ${done} ok, ${failed} failed, ${(done / (w / 1000)).toFixed(0)} ops per CPU second (${w.toFixed(0)} CPU ms, ${clock.now() - t0} sim ms)`)
}
await run('put')
await run('get')
for (const n of nodes.values()) await n.stop()
