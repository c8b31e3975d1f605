import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { QuorumError, ReplicatedStore, SimOverlayHub, validateMessage, type PeerId } from '@sipring/overlay'
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { drive, settle } from './helpers.js'
import { addNode, converge, crash, hasher, holders, storeCluster, type StoreCluster } from './store-helpers.js'

const ids = (n: number): PeerId[] => Array.from({ length: n }, (_, i) => `s${i}`)
const noAE = { store: { antiEntropyInterval: 0 } }

async function build (seed: number, n: number, init = {}): Promise<StoreCluster> {
  const c = storeCluster(seed, init)
  for (const id of ids(n)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  return c
}
async function stopAll (c: StoreCluster): Promise<void> { for (const n of c.nodes.values()) await n.stop() }
const sorted = (a: PeerId[]): PeerId[] => [...a].sort()

t.test('put/get: the item lands on exactly its R owners; any node can coordinate', async t => {
  const c = await build(1, 6, noAE)
  const a = c.nodes.get('s1')!
  await settle(c, a.store.put('sip:alice@example.org', 'contact-1', { ttl: 60_000 }))
  await drive(c.clock, 100)
  const owners = a.store.owners('sip:alice@example.org')
  t.equal(owners.length, 3)
  t.same(holders(c, 'sip:alice@example.org'), sorted(owners))
  for (const n of c.nodes.values()) t.equal(await settle(c, n.store.get('sip:alice@example.org')), 'contact-1')
  t.equal(await settle(c, a.store.get('sip:nobody@example.org')), undefined)
  await stopAll(c)
})

t.test('a write acknowledged with W=2 survives one replica crash, and is re-replicated to R live owners', async t => {
  const c = await build(2, 6, noAE)
  const key = 'sip:bob@example.org'
  const coord = c.nodes.get('s0')!
  const owners = coord.store.owners(key)
  // cut one owner off so that exactly W=2 replicas ack, then crash one of the two that acked
  const [o1, o2, o3] = owners as [PeerId, PeerId, PeerId]
  const others = ids(6).filter(id => !owners.includes(id))
  const coordinator = others[0] ?? o1
  for (const id of ids(6)) if (id !== o3) c.hub.partition(o3, id)
  await settle(c, c.nodes.get(coordinator)!.store.put(key, 'v1'))
  for (const id of ids(6)) if (id !== o3) c.hub.partition(o3, id, false)
  t.notOk(c.nodes.get(o3)!.store.local(key), 'the third replica missed the write')
  await crash(c, o1)
  t.equal(await settle(c, c.nodes.get(o2)!.store.get(key)), 'v1', 'readable right after the crash')
  await converge(c) // membership declares o1 dead; handoff pushes to the replacement owner
  await drive(c.clock, 1000)
  const now = c.nodes.get(o2)!.store.owners(key)
  t.notOk(now.includes(o1))
  t.same(holders(c, key).filter(h => now.includes(h)).length >= 2, true)
  t.equal(await settle(c, c.nodes.get(coordinator === o1 ? o2 : coordinator)!.store.get(key)), 'v1')
  await drive(c.clock, 1000) // read repair completes
  t.same(holders(c, key), sorted(now), 'every live owner holds it after handoff + read repair')
  await stopAll(c)
})

t.test('a write without its quorum is refused with QuorumError', async t => {
  const c = await build(3, 5, noAE)
  const key = 'sip:carol@example.org'
  const owners = c.nodes.get('s0')!.store.owners(key)
  const coordinator = ids(5).find(id => !owners.includes(id))!
  for (const o of owners) c.hub.partition(coordinator, o)
  await t.rejects(settle(c, c.nodes.get(coordinator)!.store.put(key, 'x')), QuorumError)
  await t.rejects(settle(c, c.nodes.get(coordinator)!.store.get(key)), { code: 'ERR_QUORUM' })
  await stopAll(c)
})

t.test('a deleted item never comes back: stale replica, read repair and anti-entropy', async t => {
  const c = await build(4, 5, { store: { antiEntropyInterval: 5000 } })
  const key = 'sip:dave@example.org'
  const owners = c.nodes.get('s0')!.store.owners(key)
  await settle(c, c.nodes.get('s0')!.store.put(key, 'old'))
  await drive(c.clock, 100)
  t.same(holders(c, key), sorted(owners))
  const stale = owners[2]!
  for (const id of ids(5)) if (id !== stale) c.hub.partition(stale, id)
  await settle(c, c.nodes.get(owners[0]!)!.store.delete(key))
  t.equal(c.nodes.get(stale)!.store.local(key)?.deleted, false, 'the cut-off replica still has the value')
  for (const id of ids(5)) if (id !== stale) c.hub.partition(stale, id, false)
  // anti-entropy rounds (every ~5 s) spread the tombstone; the old value must never win
  let seenValue = false
  for (let i = 0; i < 40; i++) {
    await drive(c.clock, 1000)
    for (const o of owners) if (c.nodes.get(o)!.store.local(key)?.deleted === false && o !== stale) seenValue = true
  }
  t.notOk(seenValue, 'no replica that had the tombstone ever went back to the value')
  for (const o of owners) t.equal(c.nodes.get(o)!.store.local(key)?.deleted, true, `${o} holds the tombstone`)
  t.equal(await settle(c, c.nodes.get(stale)!.store.get(key)), undefined)
  const s = [...c.nodes.values()].reduce((a, n) => a + n.store.getStats().antiEntropyRounds, 0)
  t.ok(s > 10, `anti-entropy ran (${s} rounds)`)
  await stopAll(c)
})

t.test('read repair brings a replica that missed a write up to date', async t => {
  const c = await build(5, 5, noAE)
  const key = 'sip:erin@example.org'
  const owners = c.nodes.get('s0')!.store.owners(key)
  const stale = owners[1]!
  const coord = owners[0]!
  c.hub.partition(coord, stale)
  await settle(c, c.nodes.get(coord)!.store.put(key, 'v'))
  c.hub.partition(coord, stale, false)
  await drive(c.clock, 100)
  t.equal(c.nodes.get(stale)!.store.local(key), undefined)
  t.equal(await settle(c, c.nodes.get(coord)!.store.get(key)), 'v')
  await drive(c.clock, 200)
  t.equal(c.nodes.get(stale)!.store.local(key)?.value, 'v')
  t.ok(c.nodes.get(coord)!.store.getStats().repairs >= 1)
  await stopAll(c)
})

t.test('anti-entropy: digests find the differing buckets and both sides converge', async t => {
  const c = await build(6, 4, noAE)
  const a = c.nodes.get('s0')!; const b = c.nodes.get('s1')!
  const keys = Array.from({ length: 300 }, (_, i) => `k${i}`)
  c.hub.partition('s0', 's1')
  for (const k of keys) await settle(c, (Number(k.slice(1)) % 2 === 0 ? a : b).store.put(k, `v-${k}`))
  c.hub.partition('s0', 's1', false)
  const shared = keys.filter(k => a.store.owners(k).includes('s0') && a.store.owners(k).includes('s1'))
  const differs = (): number => shared.filter(k => JSON.stringify(a.store.local(k)) !== JSON.stringify(b.store.local(k))).length
  t.ok(differs() > 0, `${differs()} shared keys differ before`)
  const moved = await settle(c, a.store.antiEntropyRound('s1'))
  t.ok(moved > 0)
  t.equal(differs(), 0, 'no shared key differs after one round')
  t.equal(await settle(c, a.store.antiEntropyRound('s1')), 0, 'a second round moves nothing')
  await stopAll(c)
})

t.test('a joining node receives its ranges; old owners drop what they no longer own', async t => {
  const c = await build(7, 5, noAE)
  const keys = Array.from({ length: 200 }, (_, i) => `sip:u${i}@example.org`)
  for (const k of keys) await settle(c, c.nodes.get(`s${keys.indexOf(k) % 5}`)!.store.put(k, k))
  await drive(c.clock, 200)
  for (const k of keys.slice(0, 20)) t.same(holders(c, k), sorted(c.nodes.get('s0')!.store.owners(k)))
  await addNode(c, 's5', 's2')
  await converge(c)
  await drive(c.clock, 500)
  let moved = 0; let wrong = 0
  for (const k of keys) {
    const owners = sorted(c.nodes.get('s5')!.store.owners(k))
    if (owners.includes('s5')) moved++
    if (holders(c, k).join() !== owners.join()) wrong++
  }
  t.ok(moved > 50, `${moved} of 200 keys now owned by the joiner`)
  t.equal(wrong, 0, 'every key is held by exactly its new owners')
  t.equal(c.nodes.get('s5')!.store.getStats().items, moved)
  const dropped = [...c.nodes.values()].reduce((a, n) => a + n.store.getStats().handoffDropped, 0)
  t.equal(dropped, moved, 'each moved key was dropped by the one owner it left')
  await stopAll(c)
})

t.test('graceful leave hands the leaver\'s items over', async t => {
  const c = await build(8, 5, noAE)
  const keys = Array.from({ length: 100 }, (_, i) => `key${i}`)
  for (const k of keys) await settle(c, c.nodes.get('s0')!.store.put(k, k))
  const leaver = c.nodes.get('s3')!
  c.nodes.delete('s3')
  await settle(c, leaver.leave())
  await converge(c)
  await drive(c.clock, 500)
  for (const k of keys) if (holders(c, k).length !== 3) t.fail(`${k} on ${holders(c, k).join()}`)
  for (const k of keys.slice(0, 10)) t.equal(await settle(c, c.nodes.get('s1')!.store.get(k)), k)
  await stopAll(c)
})

t.test('persistence: items survive a restart; expired ones are dropped on load', async t => {
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(9) })
  const db = new MemoryLevel<string, string>()
  const mk = (): ReplicatedStore<{ c: string }> => new ReplicatedStore<{ c: string }>({ clock, rng: new SeededRng(1), logger: silentLogger, network: hub.connect('solo'), hasher, db }, { replicas: 1, writeQuorum: 1, readQuorum: 1 })
  const { Ring } = await import('@sipring/overlay')
  const s1 = mk()
  await s1.start(); s1.setRing(new Ring(hasher, ['solo']))
  await s1.put('long', { c: 'a' }, { ttl: 60_000 })
  await s1.put('short', { c: 'b' }, { ttl: 1_000 })
  await s1.put('gone', { c: 'c' })
  await s1.delete('gone')
  await s1.stop()
  clock.advance(5_000)
  await db.put('ovs!junk', '{not json')
  const s2 = mk()
  await s2.start(); s2.setRing(new Ring(hasher, ['solo']))
  t.same(await s2.get('long'), { c: 'a' })
  t.equal(await s2.get('short'), undefined)
  t.equal(s2.local('gone')?.deleted, true, 'the tombstone survived the restart')
  t.equal(await db.get('ovs!short'), undefined, 'expired item removed from the db')
  t.equal(await db.get('ovs!junk'), undefined, 'unreadable entry removed')
  // versions keep increasing after a restart (HLC restored from the db)
  await s2.put('long', { c: 'z' })
  t.same(await s2.get('long'), { c: 'z' })
  await s2.put('tmp', { c: 't' }, { ttl: 1_000 })
  clock.advance(2_000)
  t.equal(s2.local('tmp'), undefined, 'expired items are invisible at once')
  t.equal(s2.sweep(), 1, 'sweep removes the expired item')
  await s2.flush()
  t.equal(await db.get('ovs!tmp'), undefined, 'and deletes it from the db')
  await s2.stop()
})

t.test('bad input: refused with typed errors, never a crash', async t => {
  const c = await build(10, 3, noAE)
  const s = c.nodes.get('s0')!.store
  await t.rejects(s.put('', 'x'), { code: 'ERR_BAD_KEY' })
  await t.rejects(s.put('k'.repeat(2000), 'x'), { code: 'ERR_BAD_KEY' })
  await t.rejects(s.put('k', 'x', { ttl: -1 }), { code: 'ERR_BAD_TTL' })
  await t.rejects(s.put('k', 'x', { ttl: 1e12 }), { code: 'ERR_BAD_TTL' })
  await t.rejects(s.put('k', undefined as unknown as string), { code: 'ERR_BAD_VALUE' })
  t.throws(() => new ReplicatedStore({ clock: c.clock, rng: c.rng, logger: silentLogger, network: c.hub.connect('zz'), hasher }, { writeQuorum: 4 }), RangeError)
  t.throws(() => new ReplicatedStore({ clock: c.clock, rng: c.rng, logger: silentLogger, network: c.hub.connect('zz'), hasher }, { tombstoneTtl: 1, maxTtl: 10 }), RangeError)
  // a peer sending items from the far future or with bad keys: counted and ignored
  const net = c.hub.connect('evil')
  const res = await settle(c, net.send('s0', { type: 'store.put', items: [{ key: 'x', version: { updated: c.clock.now() + 1e9, counter: 0, origin: 'evil' }, deleted: false, value: 'x', expires: c.clock.now() + 1000 }] }))
  t.same(res, { type: 'store.ok', stored: 0 })
  t.ok(s.getStats().rejected >= 1)
  const bad = await settle(c, net.send('s0', { type: 'store.digest', buckets: ['1'] }))
  t.equal(bad.type, 'error')
  // validateMessage for untrusted decoded input
  t.throws(() => validateMessage(null), { code: 'ERR_PROTOCOL' })
  t.throws(() => validateMessage({ type: 'nope' }), { code: 'ERR_PROTOCOL' })
  t.throws(() => validateMessage({ type: 'swim.ping', updates: [{ id: 'a', incarnation: -1, status: 'alive' }] }), { code: 'ERR_PROTOCOL' })
  t.throws(() => validateMessage({ type: 'swim.ping', updates: new Array(5000).fill({ id: 'a', incarnation: 1, status: 'alive' }) }), /too many/)
  t.throws(() => validateMessage({ type: 'store.put', items: [{ key: 'k', version: { updated: 1, counter: 0, origin: 'o' }, deleted: false, expires: 5 }] }), /without value/)
  t.same(validateMessage({ type: 'store.get', key: 'k', extra: 1 }), { type: 'store.get', key: 'k' })
  await stopAll(c)
})

t.test('a crashed node restarts from its db and rejoins: deletions made meanwhile stay deleted', async t => {
  const c = await build(11, 5, noAE)
  const keys = Array.from({ length: 120 }, (_, i) => `sip:r${i}@example.org`)
  for (const k of keys) await settle(c, c.nodes.get('s0')!.store.put(k, 'v1'))
  await drive(c.clock, 200)
  const had = keys.filter(k => c.nodes.get('s2')!.store.local(k) !== undefined)
  t.ok(had.length > 30, `s2 held ${had.length} keys`)
  await crash(c, 's2')
  await converge(c)
  const deleted = had.slice(0, 10)
  for (const k of deleted) await settle(c, c.nodes.get('s1')!.store.delete(k))
  for (const k of had.slice(10, 20)) await settle(c, c.nodes.get('s1')!.store.put(k, 'v2'))
  const stale = JSON.parse((await c.dbs.get('s2')!.get('ovs!' + deleted[0]!))!) as { value: string }
  t.equal(stale.value, 'v1', 'the crashed node\'s db holds the old (stale) copy')
  await addNode(c, 's2', 's0') // same db: its stale copies come back with it
  await converge(c)
  await drive(c.clock, 1000)
  for (const k of deleted) t.equal(await settle(c, c.nodes.get('s3')!.store.get(k)), undefined, `${k} stays deleted`)
  for (const k of had.slice(10, 20)) t.equal(await settle(c, c.nodes.get('s2')!.store.get(k)), 'v2')
  let wrong = 0
  for (const k of keys) {
    const owners = sorted(c.nodes.get('s0')!.store.owners(k))
    if (holders(c, k).join() !== owners.join()) wrong++
    for (const o of owners) if (c.nodes.get(o)!.store.local(k)?.deleted === false && deleted.includes(k)) wrong++
  }
  t.equal(wrong, 0, 'every key on exactly its owners, no stale value on any owner')
  await stopAll(c)
})

t.test('an aborted operation rejects with AbortError', async t => {
  const c = await build(12, 3, noAE)
  const ac = new AbortController(); ac.abort()
  await t.rejects(c.nodes.get('s0')!.store.put('k', 'v', { signal: ac.signal }), { name: 'AbortError' })
  await t.rejects(c.nodes.get('s0')!.store.get('k', { signal: ac.signal }), { name: 'AbortError' })
  await stopAll(c)
})
