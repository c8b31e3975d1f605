// The compact local replica (RAM per item): versions and expiries of any magnitude survive exactly,
// reads hand out decoded copies, the db form is the wire form, one origin string per peer.
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { ReplicatedStore, Ring, SimOverlayHub, type OverlayMessage, type WireItem } from '@sipring/overlay'
import { SimClock, SeededRng } from '@sipring/testkit'
import { silentLogger } from '@sipring/interface'
import { hasher } from './store-helpers.js'

async function solo (clock: SimClock, db?: MemoryLevel<string, string>) {
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(2) })
  const network = hub.connect('solo')
  let handler: ((m: OverlayMessage, from: string) => unknown) | undefined
  const onRequest = network.onRequest.bind(network)
  network.onRequest = h => { handler = h as typeof handler; return onRequest(h) }
  const s = new ReplicatedStore<unknown>({ clock, rng: new SeededRng(1), logger: silentLogger, network, hasher, db }, { replicas: 1, writeQuorum: 1, readQuorum: 1, antiEntropyInterval: 0 })
  await s.start(); s.setRing(new Ring(hasher, ['solo']))
  const put = async (items: WireItem[]): Promise<unknown> => await handler!({ type: 'store.put', items }, 'peer')
  return { s, put }
}

t.test('versions and expiries of any magnitude (fractional, huge, negative) are kept exactly', async t => {
  const clock = new SimClock(1_795_000_000_000)
  const { s, put } = await solo(clock)
  const now = clock.now()
  const cases: Array<[number, number]> = [[now, now + 60_000], [now + 0.25, now + 1234.5], [now - 2 ** 40, now + 86_000_000], [now + 1e-7, now + 86_000_000.1], [0.5, now + 10]]
  const items = cases.map(([u, e], i) => ({ key: `k${i}`, version: { updated: u, counter: i, origin: 'peer' }, deleted: false, value: { i }, expires: e }))
  t.same(await put(items), { type: 'store.ok', stored: cases.length })
  for (const it of items) t.same(s.local(it.key), it, `${it.key} exact`)
  // an equal-version write with the same value is not newer; a later counter is
  t.same(await put([{ ...items[1]!, value: { i: 1 } }]), { type: 'store.ok', stored: 0 })
  t.same(await put([{ ...items[1]!, version: { ...items[1]!.version, counter: 9 }, value: 'x' }]), { type: 'store.ok', stored: 1 })
  t.equal(s.local('k1')!.value, 'x')
  await s.stop()
})

t.test('reads decode a fresh copy; one origin string per peer; tombstones keep no value', async t => {
  const clock = new SimClock(1000)
  const { s, put } = await solo(clock)
  const origin = ['p', 'e', 'e', 'r', 'X'].join('')
  await put([{ key: 'a', version: { updated: 1000, counter: 0, origin }, deleted: false, value: { n: [1, 2] }, expires: 90_000 }])
  await put([{ key: 'b', version: { updated: 1000, counter: 1, origin: ['peer', 'X'].join('') }, deleted: false, value: 'v', expires: 90_000 }])
  const a1 = s.local('a')!; const a2 = s.local('a')!
  t.not(a1.value, a2.value, 'each read decodes its own copy')
  ;(a1.value as { n: number[] }).n.push(3)
  t.same(s.local('a')!.value, { n: [1, 2] }, 'mutating a read does not touch the replica')
  await put([{ key: 'a', version: { updated: 2000, counter: 0, origin }, deleted: true, value: 'ignored', expires: 90_000 }])
  const tomb = s.local('a')!
  t.equal(tomb.deleted, true)
  t.notOk('value' in tomb, 'a tombstone carries no value')
  t.equal(s.getStats().tombstones, 1)
  await s.stop()
})

t.test('the db holds the wire form and a restart restores it exactly', async t => {
  const clock = new SimClock(1_795_000_000_000)
  const db = new MemoryLevel<string, string>()
  const { s, put } = await solo(clock, db)
  const now = clock.now()
  const it: WireItem = { key: 'k', version: { updated: now + 0.5, counter: 3, origin: 'peer' }, deleted: false, value: { x: 'é\u2028"' }, expires: now + 60_000 }
  const tomb: WireItem = { key: 't', version: { updated: now, counter: 4, origin: 'peer' }, deleted: true, expires: now + 60_000 }
  await put([it, tomb])
  await s.stop()
  t.same(JSON.parse(await db.get('ovs!k') as string), it, 'db value = wire item')
  t.same(JSON.parse(await db.get('ovs!t') as string), tomb)
  const again = await solo(clock, db)
  t.same(again.s.local('k'), it)
  t.same(again.s.local('t'), tomb)
  await again.s.stop()
})

t.test('db writes are coalesced for persistDelay ms into one batch (one op per key); flush and stop write at once', async t => {
  const clock = new SimClock(1_795_000_000_000)
  const db = new MemoryLevel<string, string>()
  const { s, put } = await solo(clock, db)
  const now = clock.now()
  const item = (key: string, counter: number): WireItem => ({ key, version: { updated: now, counter, origin: 'peer' }, deleted: false, value: { counter }, expires: now + 60_000 })
  await put([item('a', 1)])
  clock.advance(2)
  await put([item('b', 2), item('a', 3)])
  await Promise.resolve()
  t.equal(s.stats.dbBatches, 0, 'nothing written before the delay')
  t.equal(await db.get('ovs!a'), undefined)
  clock.advance(3)
  await s.flush()
  t.equal(s.stats.dbBatches, 1, 'one batch after 5 ms')
  t.same(JSON.parse(await db.get('ovs!a') as string).value, { counter: 3 }, 'the latest state of a')
  t.same(JSON.parse(await db.get('ovs!b') as string).value, { counter: 2 })
  await put([item('c', 4)])
  await s.flush()
  t.equal(s.stats.dbBatches, 2, 'flush writes the pending writes at once')
  t.ok(await db.get('ovs!c') !== undefined)
  await put([item('d', 5)])
  await s.stop()
  t.equal(s.stats.dbBatches, 3, 'stop writes them too')
  t.ok(await db.get('ovs!d') !== undefined)
  t.throws(() => new ReplicatedStore<unknown>({ clock, rng: new SeededRng(1), logger: silentLogger, network: new SimOverlayHub({ clock, rng: new SeededRng(2) }).connect('x'), hasher }, { persistDelay: -1 }), RangeError)
})
