import t from 'tap'
import { OverlayError, type PeerId, type ValueMerge, type WireItem } from '@sipring/overlay'
import { drive, settle } from './helpers.js'
import { addNode, converge, holders, storeCluster, type StoreCluster } from './store-helpers.js'

// Value-merge hooks: for keys under a merged prefix, two live values meeting anywhere are joined
// instead of the newer whole item winning. The values here are sets written as sorted comma lists;
// the join is the union (returning `newer` itself when the union is what it already holds).

const union: ValueMerge<string> = (newer, older) => {
  const s = new Set([...newer.split(','), ...older.split(',')].filter(x => x !== ''))
  const out = [...s].sort().join(',')
  return out === newer ? newer : out
}
const ids = (n: number): PeerId[] => Array.from({ length: n }, (_, i) => `s${i}`)

async function build (seed: number, n: number, ae = 0): Promise<StoreCluster> {
  const c = storeCluster(seed, { store: { antiEntropyInterval: ae, merge: { 'set|': union } } })
  for (const id of ids(n)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  return c
}
async function stopAll (c: StoreCluster): Promise<void> { for (const n of c.nodes.values()) await n.stop() }
const cmp = (a: WireItem['version'], b: WireItem['version']): number => a.updated - b.updated || a.counter - b.counter || (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : 0)

t.test('a write that leaves a part out does not erase it at any replica: replicas merge, the merged item is versioned above both', async t => {
  const c = await build(1, 5)
  const key = 'set|alice'
  const a = c.nodes.get('s1')!; const b = c.nodes.get('s2')!
  await settle(c, a.store.put(key, 'x', { ttl: 60_000 }))
  await drive(c.clock, 100)
  const owners = a.store.owners(key)
  const before = owners.map(o => c.nodes.get(o)!.store.local(key)!.version)
  const firstExpires = c.nodes.get(owners[0]!)!.store.local(key)!.expires
  // s2 writes the whole item without 'x' (blind, newer version): last-writer-wins would erase 'x'
  await settle(c, b.store.put(key, 'y', { ttl: 30_000 }))
  await drive(c.clock, 100)
  t.same(holders(c, key), [...owners].sort())
  for (const o of owners) {
    const it = c.nodes.get(o)!.store.local(key)!
    t.equal(it.value, 'x,y', `${o} holds the union`)
    t.ok(before.every(v => cmp(it.version, v) > 0), `${o}: the merged version is above the first write`)
    t.equal(it.expires, firstExpires, 'the later expiry of the two')
  }
  for (const n of c.nodes.values()) t.equal(await settle(c, n.store.get(key)), 'x,y', 'every node reads the union')
  // a key outside the merged prefix is still last-writer-wins
  await settle(c, a.store.put('other|k', 'x'))
  await settle(c, b.store.put('other|k', 'y'))
  t.equal(await settle(c, a.store.get('other|k')), 'y')
  await stopAll(c)
})

t.test('merged keys are never deleted: delete() refuses, and a tombstone from a peer is rejected', async t => {
  const c = await build(2, 4)
  const key = 'set|bob'
  const a = c.nodes.get('s0')!
  await settle(c, a.store.put(key, 'x'))
  await drive(c.clock, 100)
  const err = await settle(c, a.store.delete(key)).catch((e: unknown) => e)
  t.ok(err instanceof OverlayError && err.code === 'ERR_BAD_VALUE', 'delete refused with ERR_BAD_VALUE')
  const evil = c.hub.connect('evil')
  const now = c.clock.now()
  const tomb = { key, version: { updated: now + 1000, counter: 0, origin: 'evil' }, deleted: true, expires: now + 86_400_000 }
  for (const o of a.store.owners(key)) {
    const res = await settle(c, evil.send(o, { type: 'store.put', items: [tomb] }))
    t.same(res, { type: 'store.ok', stored: 0 }, `${o} refuses the tombstone`)
    t.equal(c.nodes.get(o)!.store.local(key)?.value, 'x')
    t.ok(c.nodes.get(o)!.store.getStats().rejected >= 1)
  }
  // a tombstone of a plain key is still accepted
  await settle(c, a.store.put('plain|k', 'x'))
  const o0 = a.store.owners('plain|k')[0]!
  const res = await settle(c, evil.send(o0, { type: 'store.put', items: [{ ...tomb, key: 'plain|k' }] }))
  t.same(res, { type: 'store.ok', stored: 1 })
  await stopAll(c)
})

t.test('divergent replicas converge through anti-entropy and read repair to one merged item', async t => {
  const c = await build(3, 5, 2000)
  const key = 'set|carol'
  const a = c.nodes.get('s0')!
  const owners = a.store.owners(key)
  const [o1, o2, o3] = owners as [PeerId, PeerId, PeerId]
  // each owner gets a different write straight into its replica (as a partitioned coordinator would)
  const evil = c.hub.connect('w')
  const now = c.clock.now()
  const item = (v: string, n: number): WireItem => ({ key, version: { updated: now + n, counter: 0, origin: 'w' }, deleted: false, value: v, expires: now + 600_000 })
  await settle(c, evil.send(o1, { type: 'store.put', items: [item('a', 3)] }))
  await settle(c, evil.send(o2, { type: 'store.put', items: [item('b', 2)] }))
  await settle(c, evil.send(o3, { type: 'store.put', items: [item('c', 1)] }))
  t.equal(c.nodes.get(o1)!.store.local(key)!.value, 'a')
  // a quorum read already merges what it sees
  const got = await settle(c, c.nodes.get(o1)!.store.get(key))
  t.ok(got === 'a,b' || got === 'a,c' || got === 'a,b,c', `read merges the answers (${String(got)})`)
  await drive(c.clock, 12_000) // anti-entropy rounds
  const states = owners.map(o => c.nodes.get(o)!.store.local(key)!)
  for (const [i, s] of states.entries()) t.equal(s.value, 'a,b,c', `${owners[i]!} holds the union`)
  t.ok(states.every(s => cmp(s.version, states[0]!.version) === 0), 'and the same version')
  await stopAll(c)
})

t.test('a merge hook that throws falls back to last-writer-wins; setMerge(prefix, undefined) removes a hook', async t => {
  const c = storeCluster(4, { store: { antiEntropyInterval: 0 } })
  for (const id of ids(3)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  for (const n of c.nodes.values()) n.store.setMerge('bad|', () => { throw new Error('boom') })
  const a = c.nodes.get('s0')!
  await settle(c, a.store.put('bad|k', 'x'))
  await settle(c, a.store.put('bad|k', 'y'))
  t.equal(await settle(c, a.store.get('bad|k')), 'y')
  for (const n of c.nodes.values()) { n.store.setMerge('set|', union); n.store.setMerge('set|', undefined) }
  await settle(c, a.store.put('set|k', 'x'))
  await settle(c, a.store.put('set|k', 'y'))
  t.equal(await settle(c, a.store.get('set|k')), 'y', 'no hook: last writer wins')
  t.throws(() => a.store.setMerge('', union), RangeError)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('a value with nothing stored yet is merged with itself (the hook can validate it); the hook learns who sent it', async t => {
  const c = storeCluster(5, { store: { antiEntropyInterval: 0 } })
  for (const id of ids(3)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  const seen: Array<string | undefined> = []
  // drops the parts named 'bad'; records the sender
  const clean: ValueMerge<string> = (newer, older, _key, ctx) => {
    seen.push(ctx?.from)
    const out = union(newer, older).split(',').filter(x => x !== 'bad').join(',')
    return out === newer ? newer : out
  }
  for (const n of c.nodes.values()) n.store.setMerge('set|', clean)
  const evil = c.hub.connect('evil')
  const now = c.clock.now()
  const o = c.nodes.get('s0')!.store.owners('set|d')[0]!
  const res = await settle(c, evil.send(o, { type: 'store.put', items: [{ key: 'set|d', version: { updated: now, counter: 0, origin: 'evil' }, deleted: false, value: 'a,bad', expires: now + 60_000 }] }))
  t.same(res, { type: 'store.ok', stored: 1 })
  const it = c.nodes.get(o)!.store.local('set|d')!
  t.equal(it.value, 'a', 'the invalid part is dropped on arrival')
  t.not(it.version.origin, 'evil', 'stored as a new item (its content differs from what was sent)')
  t.same(seen, ['evil'], 'the hook was told the sender')
  // a node's own write is stored as written (no self-merge)
  seen.length = 0
  await settle(c, c.nodes.get('s1')!.store.put('set|e', 'x'))
  await drive(c.clock, 100)
  t.ok(seen.every(f => f === 's1'), `remote owners were told the coordinator (${seen.join()})`)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('ValueMerge.dominates: a fast "the incoming value is the join" answer skips the merge (stored text not decoded); false falls back to it', async t => {
  const c = storeCluster(6, { store: { antiEntropyInterval: 0 } })
  for (const id of ids(3)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  let merges = 0
  const calls: Array<{ incoming: string, stored: string, from: string }> = []
  // dominates: the incoming set holds every element of the stored one (its JSON text: '"a,b"')
  const hook: ValueMerge<string> = (newer, older, key, ctx) => { merges++; return union(newer, older, key, ctx) }
  hook.dominates = (incoming, storedJson, _key, ctx) => {
    calls.push({ incoming, stored: storedJson, from: ctx.from })
    const stored = (JSON.parse(storedJson) as string).split(',')
    return stored.every(x => incoming.split(',').includes(x))
  }
  for (const n of c.nodes.values()) n.store.setMerge('set|', hook)
  const a = c.nodes.get('s0')!
  await settle(c, a.store.put('set|k', 'x', { ttl: 60_000 }))
  await drive(c.clock, 100)
  const fast0 = [...c.nodes.values()].reduce((s, n) => s + n.store.getStats().fastMerges, 0)
  t.equal(fast0, 0, 'nothing stored yet: no fast path')
  merges = 0; calls.length = 0
  // a superset: every replica stores it as written, no merge call
  await settle(c, a.store.put('set|k', 'x,y', { ttl: 60_000 }))
  await drive(c.clock, 100)
  t.equal(merges, 0, 'the merge hook was not called')
  t.equal(calls.length, 3, 'dominates asked at the 3 replicas')
  t.ok(calls.every(x => x.stored === '"x"' && x.incoming === 'x,y' && x.from === 's0'), 'with the stored JSON text and the sender')
  for (const n of c.nodes.values()) {
    const it = n.store.local('set|k')!
    t.equal(it.value, 'x,y')
    t.equal(it.version.origin, 's0', 'stored as written (no new version)')
    t.equal(n.store.getStats().fastMerges, 1)
  }
  // not a superset: dominates says false, the merge runs (union, new version)
  merges = 0
  await settle(c, c.nodes.get('s1')!.store.put('set|k', 'z', { ttl: 60_000 }))
  await drive(c.clock, 100)
  t.ok(merges >= 3, 'the merge hook ran')
  for (const n of c.nodes.values()) t.equal(n.store.local('set|k')!.value, 'x,y,z')
  // an incoming superset that is older than the stored item: kept in content, versioned above both
  const s2 = c.nodes.get('s2')!
  const cur = s2.store.local('set|k')!
  const evil = c.hub.connect('old')
  const res = await settle(c, evil.send('s2', { type: 'store.put', items: [{ key: 'set|k', version: { updated: cur.version.updated - 50, counter: 0, origin: 'old' }, deleted: false, value: 'w,x,y,z', expires: cur.expires }] }))
  t.same(res, { type: 'store.ok', stored: 1 })
  const it = s2.store.local('set|k')!
  t.equal(it.value, 'w,x,y,z')
  t.ok(cmp(it.version, cur.version) > 0, 'a version above the stored one')
  t.equal(it.version.origin, 's2')
  // a dominates that throws falls back to the merge
  hook.dominates = () => { throw new Error('boom') }
  await settle(c, a.store.put('set|k', 'v', { ttl: 60_000 }))
  await drive(c.clock, 100)
  t.equal(a.store.local('set|k')!.value, 'v,x,y,z', 'merged at s0')
  t.equal(s2.store.local('set|k')!.value, 'v,w,x,y,z', 'merged at s2 (which alone held w)')
  for (const n of c.nodes.values()) await n.stop()
})
