import t from 'tap'
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { createHasher, drive, ReplicatedStore, Ring, SimOverlayHub, type PeerId, type RingArc } from '@sipring/overlay'

const hasher = await createHasher()
const R = 3

/**
 * Seven stores hold 400 items on ring A; then every store installs ring B (one member added or removed),
 * told which arcs changed, or not told. Where every item ends up must not depend on the hint.
 */
async function run (seed: number, op: 'add' | 'remove', hinted: boolean, cachePositions: boolean): Promise<{ holders: string, moved: number }> {
  const clock = new SimClock()
  const rng = new SeededRng(seed)
  const hub = new SimOverlayHub({ clock, rng: rng.fork('net'), copy: 'freeze' })
  const ids: PeerId[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']
  const x = 'x'
  const stores = new Map<PeerId, ReplicatedStore<string>>()
  for (const id of [...ids, x]) {
    const s = new ReplicatedStore<string>({ clock, rng: rng.fork(id), logger: silentLogger, network: hub.connect(id), hasher }, { replicas: R, cachePositions })
    await s.start()
    stores.set(id, s)
  }
  const before = new Ring(hasher, op === 'add' ? ids : [...ids, x], { vnodes: 8 })
  const after = op === 'add' ? before.with(x) : before.without(x)
  for (const [id, s] of stores) if (before.has(id) || after.has(id)) s.setRing(before)
  for (let i = 0; i < 400; i++) {
    const p = stores.get(ids[i % ids.length]!)!.put(`k${i}`, `v${i}`, { ttl: 3_600_000 })
    await drive(clock, 50)
    await p
  }
  const arcs: RingArc[] = after.has(x) ? after.changedArcs(x, R) : before.changedArcs(x, R)
  let moved = 0
  for (const [, s] of stores) s.on('handoff:done', e => { moved += e.sent })
  for (const [id, s] of stores) {
    if (!after.has(id) && id !== x) continue
    s.setRing(after.has(id) ? after : before.without(id), hinted ? { changed: arcs } : {})
  }
  await drive(clock, 10_000)
  const holders: string[] = []
  for (let i = 0; i < 400; i++) holders.push([...stores].filter(([, s]) => s.local(`k${i}`) !== undefined).map(([id]) => id).join(''))
  for (const s of stores.values()) await s.stop()
  return { holders: holders.join(' '), moved }
}

t.test('setRing told the changed arcs hands off exactly what a full walk hands off (join and leave)', async t => {
  for (const op of ['add', 'remove'] as const) {
    for (const cache of [false, true]) {
      const full = await run(7, op, false, cache)
      const hinted = await run(7, op, true, cache)
      t.ok(full.moved > 0, `${op}: items moved (${full.moved})`)
      t.equal(hinted.holders, full.holders, `${op}, cachePositions ${cache}: the same holders of every item`)
      t.equal(hinted.moved, full.moved, `${op}: the same number of items sent`)
    }
  }
})

t.test('setRing told that nothing changed keeps the ring it is given and moves nothing', async t => {
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(3) })
  const s = new ReplicatedStore<string>({ clock, rng: new SeededRng(4), logger: silentLogger, network: hub.connect('a'), hasher }, { replicas: R })
  await s.start()
  const one = new Ring(hasher, ['a'], { vnodes: 8 })
  s.setRing(one)
  const p = s.put('k', 'v', { ttl: 60_000 }); await drive(clock, 10); await p
  let sent = 0
  s.on('handoff:done', e => { sent += e.sent })
  const two = one.with('b')
  hub.connect('b')
  s.setRing(two, { changed: [] })
  await drive(clock, 5000)
  t.equal(sent, 0, 'no handoff')
  t.equal(s.owners('k').join(), two.owners('k', R).join(), 'the new ring is in use')
  await s.stop()
})
