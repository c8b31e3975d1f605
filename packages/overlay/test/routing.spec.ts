import t from 'tap'
import { MAX_HOPS, QuorumError, ReplicatedStore, Ring, SimOverlayHub, validateMessage, type OverlayMessage, type PeerId, type StoreInit, type WireItem } from '@sipring/overlay'
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { drive, settle } from './helpers.js'
import { hasher } from './store-helpers.js'

// One-hop routing of client reads/writes when views disagree. Views are set by hand (setRing) so the
// disagreement is exact: most nodes see every member, the coordinator misses two recent joins.

interface Net {
  clock: SimClock
  hub: SimOverlayHub
  stores: Map<PeerId, ReplicatedStore<string>>
}

async function net (seed: number, ids: PeerId[], init: StoreInit = {}): Promise<Net> {
  const clock = new SimClock()
  const rng = new SeededRng(seed)
  const hub = new SimOverlayHub({ clock, rng: rng.fork('net'), latency: { min: 5, max: 15 } })
  const stores = new Map<PeerId, ReplicatedStore<string>>()
  for (const id of ids) {
    const s = new ReplicatedStore<string>({ clock, rng: rng.fork(id), logger: silentLogger, network: hub.connect(id), hasher }, { antiEntropyInterval: 0, ...init })
    await s.start()
    stores.set(id, s)
  }
  return { clock, hub, stores }
}
const ring = (members: PeerId[]): Ring => new Ring(hasher, members, { vnodes: 64 })
async function stopAll (n: Net): Promise<void> { for (const s of n.stores.values()) await s.stop() }
const holders = (n: Net, key: string): PeerId[] => [...n.stores].filter(([, s]) => s.local(key) !== undefined).map(([id]) => id).sort()
const sorted = (a: PeerId[]): PeerId[] => [...a].sort()

const ALL = ['s0', 's1', 's2', 's3', 's4', 's5', 's6']
const STALE = ALL.slice(0, 5) // s0's view: it has not seen s5 and s6 join
const full = ring(ALL)
const stale = ring(STALE)

/**
 * A key owned by both unseen joiners: s0's stale view then shares one owner with the true view and
 * targets two non-owners (`misled`). s0 owns it in neither view.
 */
function splitKey (prefix: string): { key: string, staleOwners: PeerId[], trueOwners: PeerId[], misled: PeerId[] } {
  for (let i = 0; i < 100_000; i++) {
    const key = `${prefix}${i}`
    const so = stale.owners(key, 3); const to = full.owners(key, 3)
    if (!so.includes('s0') && !to.includes('s0') && to.includes('s5') && to.includes('s6')) {
      return { key, staleOwners: so, trueOwners: to, misled: so.filter(o => !to.includes(o)) }
    }
  }
  throw new Error('no key found')
}

async function disagreeing (seed: number, init: StoreInit = {}): Promise<Net> {
  const n = await net(seed, ALL, init)
  for (const [id, s] of n.stores) s.setRing(id === 's0' ? stale : full)
  await settle(n, Promise.all([...n.stores.values()].map(s => s.settled())))
  return n
}

t.test('views disagree: a put sent to non-owners is forwarded and lands on the true owners', async t => {
  const n = await disagreeing(1)
  const { key, staleOwners, trueOwners, misled } = splitKey('sip:alice-')
  t.equal(misled.length, 2, 'two of the three targets are not owners')
  const c = n.stores.get('s0')!
  t.same(c.owners(key), staleOwners)
  await settle(n, c.put(key, 'v1'))
  const early = holders(n, key).filter(h => trueOwners.includes(h))
  t.ok(early.length >= 2, `acknowledged after W=2 true owners stored it (${early.join()})`)
  await drive(n.clock, 1000)
  t.same(holders(n, key), sorted(trueOwners), 'exactly the true owners hold it: non-owners kept no copy')
  t.ok(misled.every(o => n.stores.get(o)!.stats.forwarded === 1), 'each non-owner forwarded once')
  t.equal([...n.stores.values()].reduce((a, s) => a + s.stats.hopLimited, 0), 0, 'no hop limit reached')
  // the value is readable from both sides of the disagreement
  t.equal(await settle(n, c.get(key)), 'v1')
  t.equal(await settle(n, n.stores.get('s5')!.get(key)), 'v1')
  await stopAll(n)
})

for (const init of [{}, { cachePositions: true }] as StoreInit[]) t.test(`views disagree: a put is refused unless W true owners stored it, and is not lost${init.cachePositions === true ? ' (simulator mode: rebalance checks the keys stored since)' : ''}`, async t => {
  const n = await disagreeing(2, init)
  const { key, trueOwners, misled } = splitKey('sip:bob-')
  // the two joiners are cut off: only one true owner can store the write
  for (const j of ['s5', 's6']) for (const id of ALL) if (id !== j) n.hub.partition(j, id)
  const t0 = n.clock.now()
  await t.rejects(settle(n, n.stores.get('s0')!.put(key, 'v1')), QuorumError, 'W non-owners acking is not enough')
  t.ok(n.clock.now() - t0 <= 1100, 'answered within the request timeout')
  const reachable = trueOwners.filter(o => o !== 's5' && o !== 's6')
  t.same(holders(n, key).filter(h => trueOwners.includes(h)), reachable, 'the reachable true owner stored it')
  t.ok(misled.every(o => n.stores.get(o)!.local(key)?.value === 'v1'), 'non-owners that could not reach W owners keep a copy (never lost)')
  // after the partition heals, a rebalance hands the fallback copies to the owners and drops them
  for (const j of ['s5', 's6']) for (const id of ALL) if (id !== j) n.hub.partition(j, id, false)
  await settle(n, Promise.all(misled.map(async o => await n.stores.get(o)!.rebalance())))
  t.same(holders(n, key), sorted(trueOwners))
  await stopAll(n)
})

t.test('views disagree: a get to non-owners returns the owners\' value; a non-owner null never counts', async t => {
  const n = await disagreeing(3)
  const { key, trueOwners, misled } = splitKey('sip:carol-')
  await settle(n, n.stores.get('s5')!.put(key, 'v1')) // written by a node with the true view
  await drive(n.clock, 1000)
  t.same(holders(n, key), sorted(trueOwners))
  const c = n.stores.get('s0')!
  t.equal(await settle(n, c.get(key)), 'v1', 'forwarded reads return the owners\' value')
  t.ok(misled.every(o => n.stores.get(o)!.stats.forwarded >= 1))
  // owners unreachable from the non-owners: their nulls must not make a "not found" quorum
  for (const o of trueOwners) for (const id of ALL) if (id !== o) n.hub.partition(o, id)
  await t.rejects(settle(n, c.get(key)), { code: 'ERR_QUORUM' }, 'no quorum rather than a wrong "not found"')
  // one owner back: still one authoritative answer short (R = 2)
  for (const id of ALL) if (id !== trueOwners[0]) n.hub.partition(trueOwners[0]!, id, false)
  await t.rejects(settle(n, c.get(key)), { code: 'ERR_QUORUM', acks: 1 })
  for (const id of ALL) if (id !== trueOwners[1]) n.hub.partition(trueOwners[1]!, id, false)
  t.equal(await settle(n, c.get(key)), 'v1')
  t.equal(await settle(n, c.get('sip:nobody-1')), undefined, 'a key nobody holds is "not found" once owners answered')
  await stopAll(n)
})

t.test('a forwarding loop between two inconsistent views stops at the hop limit', async t => {
  for (const maxHops of [2, MAX_HOPS]) {
    const n = await net(4, ['c', 'x', 'y'], { replicas: 1, writeQuorum: 1, readQuorum: 1, maxHops })
    // c and y believe x owns everything; x believes y does
    n.stores.get('c')!.setRing(ring(['x']))
    n.stores.get('x')!.setRing(ring(['y']))
    n.stores.get('y')!.setRing(ring(['x']))
    const c = n.stores.get('c')!
    const before = n.hub.stats.requests
    await t.rejects(settle(n, c.put('k', 'v')), { code: 'ERR_QUORUM' }, `put: no owner claims it (maxHops ${maxHops})`)
    const sent = n.hub.stats.requests - before
    t.equal(sent, maxHops + 1, 'one request per hop, then an answer')
    const fx = n.stores.get('x')!.stats; const fy = n.stores.get('y')!.stats
    t.equal(fx.forwarded + fy.forwarded, maxHops)
    t.equal(fx.hopLimited + fy.hopLimited, 1)
    t.ok(n.stores.get('x')!.local('k') !== undefined || n.stores.get('y')!.local('k') !== undefined, 'the write is kept, not lost')
    const b2 = n.hub.stats.requests
    await t.rejects(settle(n, c.get('k')), { code: 'ERR_QUORUM' }, 'get: no authoritative answer')
    t.equal(n.hub.stats.requests - b2, maxHops + 1)
    await drive(n.clock, 5000)
    t.equal(n.hub.stats.requests - b2, maxHops + 1, 'nothing keeps circulating')
    await stopAll(n)
  }
})

t.test('the store clamps hops and keeps replica traffic unrouted', async t => {
  const n = await net(5, ['a', 'b', 'c', 'd'], { maxHops: 1 })
  for (const s of n.stores.values()) s.setRing(ring(['a', 'b', 'c']))
  const key = 'sip:dave@example.org'
  const d = n.hub.connect('z') // a raw peer
  const item: WireItem = { key, version: { updated: 1, counter: 0, origin: 'z' }, deleted: false, value: 'v', expires: n.clock.now() + 3_600_000 }
  // 'd' owns nothing: a put without hops (handoff / repair / anti-entropy) is stored as before
  const raw = await settle(n, d.send('d', { type: 'store.put', items: [item] }))
  t.same(raw, { type: 'store.ok', stored: 1 })
  t.equal(n.stores.get('d')!.local(key)?.value, 'v')
  t.equal(n.stores.get('d')!.stats.forwarded, 0)
  // a routed get to the non-owner 'd', with a huge hop count: clamped to maxHops = 1, answered by the owners
  const before = n.hub.stats.requests
  const res = await settle(n, d.send('d', { type: 'store.get', key, hops: 1000 })) as Extract<OverlayMessage, { type: 'store.item' }>
  await drive(n.clock, 1000)
  t.equal(res.type, 'store.item')
  t.equal(res.by?.length, 2, 'a read quorum of owners answered')
  t.ok(res.by!.every(o => ['a', 'b', 'c'].includes(o)))
  t.equal(res.item?.json, '"v"', 'the forwarder merges its stray copy into the owners\' (empty) answers')
  t.equal(n.stores.get('d')!.stats.forwarded, 1)
  t.equal(n.hub.stats.requests - before, 4, 'one request in, three forwards (hops 1000 clamped to maxHops 1), no further')
  await stopAll(n)
})

t.test('routed requests with bad content are answered with errors', async t => {
  const n = await net(6, ['a', 'b'])
  for (const s of n.stores.values()) s.setRing(ring(['b']))
  const z = n.hub.connect('z')
  const it = (key: string): WireItem => ({ key, version: { updated: 1, counter: 0, origin: 'z' }, deleted: false, value: 'v', expires: n.clock.now() + 3_600_000 })
  t.same(await settle(n, z.send('a', { type: 'store.put', items: [it('k1'), it('k2')], hops: 1 })), { type: 'store.ok', stored: 2, each: [['b'], ['b']] }, 'several routed items: each forwarded, answered per item')
  t.match(await settle(n, z.send('b', { type: 'store.put', items: [it('k4'), it('k5')], hops: 1 })), { type: 'store.ok', stored: 2, each: undefined }, 'an owner of every key answers without each')
  t.match(await settle(n, z.send('a', { type: 'store.gets', keys: ['k1', 'k9', 'k'.repeat(2000)], hops: 1 })), { type: 'store.items', items: [{ key: 'k1', json: '"v"' }, null, null], each: [['b'], ['b'], []] }, 'several routed reads at a non-owner: each forwarded; a bad key answered null by nobody')
  t.match(await settle(n, z.send('b', { type: 'store.gets', keys: ['k1', 'k2'], hops: 1 })), { type: 'store.items', items: [{ key: 'k1' }, { key: 'k2' }], each: undefined }, 'an owner of every key answers without each')
  t.match(await settle(n, z.send('a', { type: 'store.put', items: [], hops: 1 })), { type: 'error', code: 'ERR_PROTOCOL' })
  t.match(await settle(n, z.send('a', { type: 'store.get', key: 'k'.repeat(2000), hops: 1 })), { type: 'error', code: 'ERR_BAD_KEY' })
  t.match(await settle(n, z.send('a', { type: 'store.put', items: [it('k1')], hops: 0 })), { type: 'store.ok', by: [] }, 'hops 0 at a non-owner: kept, not authoritative')
  t.match(await settle(n, z.send('a', { type: 'store.put', items: [it('k3')], hops: 1 })), { type: 'store.ok', by: ['b'] }, 'forwarded to the owner')
  t.equal(n.stores.get('b')!.local('k3')?.value, 'v')
  t.equal(n.stores.get('a')!.local('k3'), undefined, 'the forwarder kept no copy')
  t.throws(() => new ReplicatedStore({ clock: n.clock, rng: new SeededRng(1), logger: silentLogger, network: z, hasher }, { maxHops: -1 }), RangeError)
  t.throws(() => new ReplicatedStore({ clock: n.clock, rng: new SeededRng(1), logger: silentLogger, network: z, hasher }, { maxHops: MAX_HOPS + 1 }), RangeError)
  t.throws(() => new ReplicatedStore({ clock: n.clock, rng: new SeededRng(1), logger: silentLogger, network: z, hasher }, { maxHops: 1.5 }), RangeError)
  await stopAll(n)
})

t.test('validateMessage checks hops and by', async t => {
  const item = { key: 'k', version: { updated: 1, counter: 0, origin: 'o' }, deleted: true, expires: 5 }
  for (const hops of [-1, 1.5, MAX_HOPS + 1, 1e9, Number.NaN, Infinity, '2', null, true]) {
    t.throws(() => validateMessage({ type: 'store.get', key: 'k', hops }), { code: 'ERR_PROTOCOL', message: /bad hops/ }, `get hops ${String(hops)}`)
    t.throws(() => validateMessage({ type: 'store.put', items: [item], hops }), { code: 'ERR_PROTOCOL', message: /bad hops/ }, `put hops ${String(hops)}`)
  }
  t.same(validateMessage({ type: 'store.get', key: 'k', hops: 0 }), { type: 'store.get', key: 'k', hops: 0 })
  t.throws(() => validateMessage({ type: 'store.gets', keys: ['k'] }), { code: 'ERR_PROTOCOL', message: /bad hops/ }, 'store.gets needs hops')
  t.throws(() => validateMessage({ type: 'store.gets', keys: [''], hops: 1 }), { code: 'ERR_PROTOCOL' }, 'empty key')
  t.throws(() => validateMessage({ type: 'store.gets', keys: Array.from({ length: 1001 }, (_, i) => `k${i}`), hops: 1 }), { code: 'ERR_PROTOCOL', message: /too many keys/ })
  t.same(validateMessage({ type: 'store.items', items: [item, null], each: [['a'], []] }), { type: 'store.items', items: [item, null], each: [['a'], []] })
  t.throws(() => validateMessage({ type: 'store.items', items: [item], each: [[7]] }), { code: 'ERR_PROTOCOL' }, 'each ids are strings')
  t.throws(() => validateMessage({ type: 'store.ok', stored: 1, each: 'x' }), { code: 'ERR_PROTOCOL' }, 'each is an array')
  t.same(validateMessage({ type: 'store.ok', stored: 2, each: [['a'], ['b', 'c']] }), { type: 'store.ok', stored: 2, each: [['a'], ['b', 'c']] })
  t.same(validateMessage({ type: 'store.put', items: [item], hops: 2 }), { type: 'store.put', items: [item], hops: 2 })
  t.notOk('hops' in validateMessage({ type: 'store.get', key: 'k' }), 'absent stays absent')
  t.throws(() => validateMessage({ type: 'store.get', key: 'k', hops: 3 }, { maxUpdates: 1, maxItems: 1, maxKeyLength: 8, maxIdLength: 8, maxBuckets: 1, maxHops: 2 }), /bad hops/)
  t.same(validateMessage({ type: 'store.ok', stored: 2, by: ['a', 'b'] }), { type: 'store.ok', stored: 2, by: ['a', 'b'] })
  t.same(validateMessage({ type: 'store.item', item: null, by: [] }), { type: 'store.item', item: null, by: [] })
  t.notOk('by' in validateMessage({ type: 'store.ok', stored: 1 }))
  t.throws(() => validateMessage({ type: 'store.ok', stored: 1, by: 'a' }), /bad by/)
  t.throws(() => validateMessage({ type: 'store.item', item: null, by: [1] }), /bad by id/)
  t.throws(() => validateMessage({ type: 'store.item', item: null, by: [''] }), /bad by id/)
  t.throws(() => validateMessage({ type: 'store.ok', stored: 1, by: Array.from({ length: 65 }, (_, i) => `p${i}`) }), /too many by/)
})
