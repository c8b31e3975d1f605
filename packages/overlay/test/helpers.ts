import { SimClock, SeededRng, MemoryLogger } from '@sipring/testkit'
import { silentLogger, type Logger } from '@sipring/interface'
import { Membership, SimOverlayHub, drive, type MembershipInit, type PeerId } from '@sipring/overlay'

export { drive }

export interface Cluster {
  clock: SimClock
  rng: SeededRng
  hub: SimOverlayHub
  nodes: Map<PeerId, Membership>
  logger: Logger
}

export function cluster (seed: number, opts: { loss?: number, logger?: Logger } = {}): Cluster {
  const clock = new SimClock()
  const rng = new SeededRng(seed)
  const hub = new SimOverlayHub({ clock, rng: rng.fork('net'), latency: { min: 5, max: 15 }, loss: opts.loss ?? 0 })
  return { clock, rng, hub, nodes: new Map(), logger: opts.logger ?? silentLogger }
}

export async function addMember (c: Cluster, id: PeerId, init: MembershipInit = {}): Promise<Membership> {
  const m = new Membership({ clock: c.clock, rng: c.rng.fork(id), logger: c.logger, network: c.hub.connect(id) }, init)
  await m.start()
  c.nodes.set(id, m)
  return m
}

/** Do all live members' views equal the given set? */
export function agreed (c: Cluster, expected: PeerId[]): boolean {
  const want = [...expected].sort().join()
  for (const id of expected) {
    const m = c.nodes.get(id)
    if (m === undefined || m.view().join() !== want) return false
  }
  return true
}

/** Drive the clock in `step` ms slices until `cond` holds; returns the elapsed sim time, or -1 after `max` ms. */
export async function until (c: Cluster, cond: () => boolean, max: number, step = 50): Promise<number> {
  const t0 = c.clock.now()
  while (!cond()) {
    if (c.clock.now() - t0 > max) return -1
    await drive(c.clock, step)
  }
  return c.clock.now() - t0
}

export { MemoryLogger }

/** Drive the sim clock (in `step` ms slices) until `p` settles; returns its result or throws its error. */
export async function settle<T> (c: { clock: Cluster['clock'] }, p: Promise<T>, max = 600_000, step = 10): Promise<T> {
  let done = false
  const q = p.finally(() => { done = true })
  q.catch(() => {})
  const t0 = c.clock.now()
  while (!done) {
    if (c.clock.now() - t0 > max) throw new Error('settle: promise did not settle in time')
    await drive(c.clock, step)
  }
  return await q
}
