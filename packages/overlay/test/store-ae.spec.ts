import t from 'tap'
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger, type Hasher } from '@sipring/interface'
import { createHasher, drive, LiveRing, ReplicatedStore, Ring, SimOverlayHub, type PeerId } from '@sipring/overlay'

const hasher = await createHasher()
const R = 3
const ids: PeerId[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g']

/**
 * Seven stores, two of them (c, e) down while 300 items are written; then every store runs one
 * anti-entropy round with each of its partners. `view`: the stores read the ring through a live view
 * (the live ring without an extra member: the same owners), which cannot give replica ranges, so
 * anti-entropy finds each item's owners with a ring search; otherwise through a plain ring (replica
 * ranges). Both must find the same items to exchange.
 */
async function run (view: boolean, cachePositions: boolean, change = false): Promise<{ holders: string, moved: number[], partners: string, second: number }> {
  const clock = new SimClock()
  const rng = new SeededRng(11)
  const hub = new SimOverlayHub({ clock, rng: rng.fork('net'), copy: 'freeze' })
  let ring: Ring
  if (view) {
    const live = new LiveRing(hasher, { vnodes: 8 })
    for (const id of [...ids, 'zz']) live.add(id)
    ring = live.minus('zz')
  } else {
    ring = new Ring(hasher, ids, { vnodes: 8 })
  }
  t.equal(ring.replicaRanges('a', R) === undefined, view, view ? 'a view gives no replica ranges' : 'a ring gives replica ranges')
  const stores = new Map<PeerId, ReplicatedStore<string>>()
  for (const id of ids) {
    stores.set(id, new ReplicatedStore<string>({ clock, rng: rng.fork(id), logger: silentLogger, network: hub.connect(id), hasher }, { replicas: R, writeQuorum: 1, cachePositions, antiEntropyInterval: 0, digestBuckets: 16 }))
  }
  const late = new Set(['c', 'e'])
  for (const [id, s] of stores) if (!late.has(id)) { await s.start(); s.setRing(ring) }
  for (let i = 0; i < 300; i++) {
    const p = stores.get(ids[i % ids.length]!)!.put(`k${i}`, `v${i}`, { ttl: 3_600_000 }).catch(() => {})
    await drive(clock, 50)
    await p
  }
  for (const id of late) { await stores.get(id)!.start(); stores.get(id)!.setRing(ring) }
  await drive(clock, 5000)
  const moved: number[] = []
  const partners: string[] = []
  const pass = async (): Promise<void> => {
    for (const [id, s] of stores) {
      const peers = ring.replicaPeers(id, R)
      partners.push(`${id}:${peers.join('')}`)
      for (const p of peers) {
        const m = s.antiEntropyRound(p)
        await drive(clock, 2000)
        moved.push(await m)
      }
    }
  }
  await pass()
  const first = moved.length
  if (change) {
    // a member joins: the others are told where owners changed (after a view switch told that nothing
    // changed); then c misses writes and a second pass repairs it
    const h = new ReplicatedStore<string>({ clock, rng: rng.fork('h'), logger: silentLogger, network: hub.connect('h'), hasher }, { replicas: R, writeQuorum: 1, cachePositions, antiEntropyInterval: 0, digestBuckets: 16 })
    await h.start()
    const next = ring.with('h')
    h.setRing(next)
    const arcs = next.changedArcs('h', R)
    for (const s of stores.values()) { s.setRing(new Ring(hasher, ids, { vnodes: 8 }), { changed: [] }); s.setRing(next, { changed: arcs }) }
    stores.set('h', h)
    ring = next
    await drive(clock, 5000)
    // c is down while 100 more items are written (the second pass repairs it)
    await stores.get('c')!.stop()
    for (let i = 300; i < 400; i++) {
      const p = stores.get(ids[i % ids.length]!)!.put(`k${i}`, `v${i}`, { ttl: 3_600_000 }).catch(() => {})
      await drive(clock, 50)
      await p
    }
    await stores.get('c')!.start()
    await drive(clock, 2000)
    await pass()
  }
  const holders: string[] = []
  for (let i = 0; i < 400; i++) holders.push([...stores].filter(([, s]) => s.local(`k${i}`) !== undefined).map(([id]) => id).join(''))
  for (const s of stores.values()) await s.stop()
  return { holders: holders.join(' '), moved, partners: partners.join(' '), second: moved.slice(first).reduce((a, b) => a + b, 0) }
}

t.test('simulator mode (dense position index) across a told ring change: the same anti-entropy as a daemon store', async t => {
  const kept = await run(false, true, true)
  const searched = await run(false, false, true)
  t.ok(kept.second > 0, `the second pass repaired items too (${kept.second})`)
  t.same(kept.moved, searched.moved, 'the same items moved in every round')
  t.equal(kept.holders, searched.holders, 'the same holders of every item')
})

t.test('anti-entropy over replica ranges exchanges exactly what a ring search per item exchanges', async t => {
  for (const cache of [false, true]) {
    const search = await run(true, cache)
    const ranges = await run(false, cache)
    t.ok(search.moved.reduce((a, b) => a + b, 0) > 0, `items repaired (${search.moved.reduce((a, b) => a + b, 0)})`)
    t.equal(ranges.partners, search.partners)
    t.same(ranges.moved, search.moved, `cachePositions ${cache}: the same items moved in every round`)
    t.equal(ranges.holders, search.holders, `cachePositions ${cache}: the same holders of every item`)
    // and the repair is complete: every item on each of its R owners (a coordinator that reached too
    // few owners keeps a copy too, until a rebalance)
    const ring = new Ring(hasher, ids, { vnodes: 8 })
    const held = ranges.holders.split(' ')
    const bad = Array.from({ length: 400 }, (_, i) => `k${i} ${ring.owners(`k${i}`, R).join('')} ${held[i]}`).filter((x, i) => held[i] !== '' && !ring.owners(`k${i}`, R).every(o => held[i]!.includes(o)))
    t.same(bad, [], 'every item written (c and e coordinated none) on all its owners')
  }
})

/** A hasher that counts the keys it hashes (ring tokens excluded). */
function counting (h: Hasher): Hasher & { keys: number } {
  const c = {
    keys: 0,
    hash64 (input: string | Uint8Array): bigint {
      if (typeof input === 'string' && input.startsWith('k')) c.keys++
      return h.hash64(input)
    }
  }
  return c
}

t.test('simulator mode: a refreshed item keeps its memoized position (a handoff after a refresh hashes nothing)', async t => {
  const clock = new SimClock()
  const rng = new SeededRng(5)
  const hub = new SimOverlayHub({ clock, rng: rng.fork('net') })
  const h = counting(hasher)
  const s = new ReplicatedStore<string>({ clock, rng: rng.fork('a'), logger: silentLogger, network: hub.connect('a'), hasher: h }, { replicas: R, writeQuorum: 1, cachePositions: true, antiEntropyInterval: 0 })
  await s.start()
  const one = new Ring(hasher, ['a'], { vnodes: 8 })
  s.setRing(one)
  for (let i = 0; i < 50; i++) { const p = s.put(`k${i}`, 'v1'); await drive(clock, 10); await p }
  // a join told of its arcs: the walk memoizes every position
  const two = one.with('b'); hub.connect('b')
  s.setRing(two, { changed: two.changedArcs('b', R) })
  await drive(clock, 1000)
  const afterFirst = h.keys
  t.ok(afterFirst >= 50, `positions hashed once (${afterFirst} hashes)`)
  // refresh every item (new entries replace the old ones), then another hinted change
  for (let i = 0; i < 50; i++) { const p = s.put(`k${i}`, 'v2'); await drive(clock, 10); await p }
  const beforeSecond = h.keys
  const three = two.with('c'); hub.connect('c')
  s.setRing(three, { changed: three.changedArcs('c', R) })
  await drive(clock, 1000)
  t.equal(h.keys, beforeSecond, 'no key hashed again by the second handoff')
  t.equal(s.local('k7')?.value, 'v2', 'the refreshed value is what is stored')
  await s.stop()
})

t.test('simulator mode: after deletions (slots emptied, index compacted) a hinted handoff moves what a full walk moves and hashes only new keys', async t => {
  async function once (hinted: boolean): Promise<{ sent: string, hashes: number }> {
    const clock = new SimClock()
    const rng = new SeededRng(9)
    const hub = new SimOverlayHub({ clock, rng: rng.fork('net') })
    const h = counting(hasher)
    const s = new ReplicatedStore<string>({ clock, rng: rng.fork('a'), logger: silentLogger, network: hub.connect('a'), hasher: h }, { replicas: 2, writeQuorum: 1, cachePositions: true, antiEntropyInterval: 0 })
    await s.start()
    const one = new Ring(hasher, ['a', 'z'], { vnodes: 8 })
    const z = new ReplicatedStore<string>({ clock, rng: rng.fork('z'), logger: silentLogger, network: hub.connect('z'), hasher }, { replicas: 2, writeQuorum: 1, antiEntropyInterval: 0 })
    await z.start(); z.setRing(one)
    s.setRing(one)
    for (let i = 0; i < 300; i++) { const p = s.put(`k${i}`, 'v', { ttl: i % 3 === 0 ? 60_000_000 : 1000 }); await drive(clock, 5); await p }
    // positions hashed by a first hinted change (nothing leaves: R = 2 and both stay owners)
    const two = one.with('b'); hub.connect('b')
    s.setRing(two, { changed: two.changedArcs('b', 2) })
    await drive(clock, 3000)
    const swept = s.sweep()
    t.ok(swept >= 100, `expired items swept, their slots emptied (${swept})`)
    // (owners that never answer: b holds no store; W = 1 is met by a or z)
    const puts: Array<Promise<unknown>> = []
    for (let i = 300; i < 350; i++) puts.push(s.put(`k${i}`, 'v', { ttl: 60_000_000 }).catch(() => {}))
    await drive(clock, 3000); await Promise.all(puts)
    const before = h.keys
    const got = new Set<string>()
    const c = new ReplicatedStore<string>({ clock, rng: rng.fork('c'), logger: silentLogger, network: hub.connect('c'), hasher }, { replicas: 2, writeQuorum: 1, antiEntropyInterval: 0 })
    await c.start()
    c.on('change', k => { got.add(k) })
    const three = two.with('c')
    c.setRing(three)
    s.setRing(three, hinted ? { changed: three.changedArcs('c', 2) } : {})
    await drive(clock, 3000)
    const hashes = h.keys - before
    for (const x of [s, z, c]) await x.stop()
    return { sent: [...got].sort().join(), hashes }
  }
  const full = await once(false)
  const hinted = await once(true)
  t.ok(full.sent.length > 0, 'items handed to the joiner')
  t.equal(hinted.sent, full.sent, 'the same items handed off')
  t.ok(hinted.hashes <= 50, `only the 50 new keys hashed (${hinted.hashes})`)
})
