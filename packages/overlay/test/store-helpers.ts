import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { MemoryLevel } from 'memory-level'
import { createHasher, OverlayNode, RingFactory, SimOverlayHub, type Hasher, type OverlayNodeInit, type PeerId, type StoreDb } from '@sipring/overlay'
import { settle, until } from './helpers.js'

export interface StoreCluster {
  clock: SimClock
  rng: SeededRng
  hub: SimOverlayHub
  hasher: Hasher
  rings: RingFactory
  nodes: Map<PeerId, OverlayNode<string>>
  dbs: Map<PeerId, StoreDb>
  init: OverlayNodeInit
}

export const hasher = await createHasher()

export function storeCluster (seed: number, init: OverlayNodeInit = {}): StoreCluster {
  const clock = new SimClock()
  const rng = new SeededRng(seed)
  return {
    clock, rng, hasher, init,
    hub: new SimOverlayHub({ clock, rng: rng.fork('net'), latency: { min: 5, max: 15 } }),
    rings: new RingFactory(hasher, { vnodes: 64 }),
    nodes: new Map(),
    dbs: new Map()
  }
}

export async function addNode (c: StoreCluster, id: PeerId, seed?: PeerId, db?: StoreDb): Promise<OverlayNode<string>> {
  const d = db ?? c.dbs.get(id) ?? new MemoryLevel<string, string>()
  c.dbs.set(id, d)
  const n = new OverlayNode<string>({ clock: c.clock, rng: c.rng.fork(id), logger: silentLogger, network: c.hub.connect(id), hasher: c.hasher, ringFactory: c.rings, db: d }, c.init)
  await n.start()
  if (seed !== undefined) await settle(c, n.join([seed]))
  c.nodes.set(id, n)
  return n
}

export function viewsAgree (c: StoreCluster): boolean {
  const want = [...c.nodes.keys()].sort().join()
  return [...c.nodes.values()].every(n => n.membership.view().join() === want)
}

export async function converge (c: StoreCluster, max = 120_000): Promise<number> {
  const took = await until(c, () => viewsAgree(c) && [...c.nodes.values()].every(n => !n.ringPending), max)
  if (took < 0) throw new Error('views did not converge')
  await settle(c, Promise.all([...c.nodes.values()].map(n => n.store.settled())))
  return took
}

/** Crash a node: no goodbye, its db survives (for restart tests). */
export async function crash (c: StoreCluster, id: PeerId): Promise<void> {
  const n = c.nodes.get(id)!
  await n.stop()
  c.hub.crash(id)
  c.nodes.delete(id)
}

/** Which live nodes hold `key` locally (tombstones included). */
export function holders (c: StoreCluster, key: string): PeerId[] {
  return [...c.nodes.entries()].filter(([, n]) => n.store.local(key) !== undefined).map(([id]) => id).sort()
}
