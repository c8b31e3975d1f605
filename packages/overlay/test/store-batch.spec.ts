import t from 'tap'
import type { PeerId } from '@sipring/overlay'
import { drive, settle } from './helpers.js'
import { addNode, converge, holders, storeCluster, type StoreCluster } from './store-helpers.js'

const ids = (n: number): PeerId[] => Array.from({ length: n }, (_, i) => `s${i}`)

async function build (seed: number, n: number, store: Record<string, unknown> = {}): Promise<StoreCluster> {
  const c = storeCluster(seed, { store: { antiEntropyInterval: 0, ...store } })
  for (const id of ids(n)) await addNode(c, id, id === 's0' ? undefined : 's0')
  await converge(c)
  return c
}
async function stopAll (c: StoreCluster): Promise<void> { for (const n of c.nodes.values()) await n.stop() }
const keys = Array.from({ length: 60 }, (_, i) => `aor|sip:u${i}@example.org`)

t.test('writes made in the same round go to each owner in one store.put, each acknowledged on its own', async t => {
  for (const batching of [true, false]) {
    const c = await build(11, 3, { putBatching: batching })
    const a = c.nodes.get('s0')!.store
    const req0 = c.hub.stats.requests
    await settle(c, Promise.all(keys.map(async (k, i) => { await a.put(k, `v${i}`, { ttl: 60_000 }) })))
    const sent = c.hub.stats.requests - req0
    await drive(c.clock, 200)
    for (const k of keys) t.same(holders(c, k), ['s0', 's1', 's2'], `${k} on its 3 owners (batching ${String(batching)})`)
    if (batching) {
      t.equal(a.getStats().putMessages, 2, '60 writes: one message per remote owner')
      t.equal(sent, 2, 'two requests on the wire')
    } else {
      t.equal(sent, 120, 'one request per write and remote owner')
    }
    // every owner answered for every item: the values are readable at another node
    t.equal(await settle(c, c.nodes.get('s2')!.store.get(keys[7]!)), 'v7')
    await stopAll(c)
  }
})

t.test('reads made in the same round go to each owner in one store.gets, each answered on its own', async t => {
  const c = await build(14, 3)
  const a = c.nodes.get('s0')!.store
  await settle(c, Promise.all(keys.map(async (k, i) => { await a.put(k, `v${i}`, { ttl: 60_000 }) })))
  await drive(c.clock, 100)
  const b = c.nodes.get('s1')!.store
  const req0 = c.hub.stats.requests
  const got = await settle(c, Promise.all([...keys, 'aor|sip:nobody@example.org'].map(async k => await b.get(k))))
  t.same(got, [...keys.map((_, i) => `v${i}`), undefined], 'every value (and a missing key) read correctly')
  t.equal(c.hub.stats.requests - req0, 2, '61 reads: one store.gets per remote owner')
  t.equal(b.getStats().getMessages, 2)
  await stopAll(c)
})

t.test('a batched write whose owner is unreachable still reaches its quorum through the other owner; none reached: QuorumError each', async t => {
  const c = await build(12, 3)
  const a = c.nodes.get('s0')!.store
  c.hub.partition('s0', 's1')
  await settle(c, Promise.all(keys.slice(0, 10).map(async k => { await a.put(k, 'x', { ttl: 60_000 }) })))
  for (const k of keys.slice(0, 10)) t.same(holders(c, k), ['s0', 's2'])
  c.hub.partition('s0', 's2')
  const results = await settle(c, Promise.allSettled(keys.slice(10, 15).map(async k => { await a.put(k, 'y', { ttl: 60_000 }) })))
  t.same(results.map(r => r.status), ['rejected', 'rejected', 'rejected', 'rejected', 'rejected'])
  t.match((results[0] as PromiseRejectedResult).reason, { code: 'ERR_QUORUM' })
  c.hub.partition('s0', 's1', false); c.hub.partition('s0', 's2', false)
  await stopAll(c)
})

t.test('get({ minimal: true }) asks one remote owner when the own replica is the other answer; falls back when it fails', async t => {
  const c = await build(13, 3)
  const a = c.nodes.get('s0')!.store
  await settle(c, a.put(keys[0]!, 'v', { ttl: 60_000 }))
  await drive(c.clock, 100)
  let req0 = c.hub.stats.requests
  t.equal(await settle(c, a.get(keys[0]!, { minimal: true })), 'v')
  t.equal(c.hub.stats.requests - req0, 1, 'one remote request')
  req0 = c.hub.stats.requests
  t.equal(await settle(c, a.get(keys[0]!)), 'v')
  t.equal(c.hub.stats.requests - req0, 2, 'default: every remote owner is asked')
  // the first remote owner is cut off: the read falls back to the other one (hedge or failure)
  const first = a.owners(keys[0]!).find(o => o !== 's0')!
  c.hub.partition('s0', first)
  t.equal(await settle(c, a.get(keys[0]!, { minimal: true })), 'v', 'still answered by the quorum')
  c.hub.crash('s1'); c.hub.crash('s2')
  await t.rejects(settle(c, a.get(keys[0]!, { minimal: true })), { code: 'ERR_QUORUM' }, 'no remote owner: QuorumError')
  await stopAll(c)
})

t.test('handoff: progress events per batch; a failure interrupts it and it resumes from the batch that failed', async t => {
  const { ReplicatedStore, Ring, SimOverlayHub } = await import('@sipring/overlay')
  const { SimClock, SeededRng } = await import('@sipring/testkit')
  const { silentLogger } = await import('@sipring/interface')
  const { hasher } = await import('./store-helpers.js')
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(5), latency: { min: 5, max: 15 } })
  const c = { clock } as unknown as StoreCluster
  const mk = (id: string): InstanceType<typeof ReplicatedStore<string>> => new ReplicatedStore<string>({ clock, rng: new SeededRng(1), logger: silentLogger, network: hub.connect(id), hasher },
    { replicas: 1, writeQuorum: 1, readQuorum: 1, antiEntropyInterval: 0, maxItemsPerMessage: 20, requestTimeout: 1000 })
  const a = mk('a'); const b = mk('b')
  await a.start(); await b.start()
  const solo = new Ring(hasher, ['a'], { vnodes: 64 })
  a.setRing(solo); b.setRing(solo)
  const many = Array.from({ length: 200 }, (_, i) => `k${i}`)
  for (const k of many) await settle(c, a.put(k, k))
  const both = new Ring(hasher, ['a', 'b'], { vnodes: 64 })
  const moving = many.filter(k => both.owners(k, 1)[0] === 'b')
  t.ok(moving.length > 60, `${moving.length} keys move to b (more than 3 batches)`)
  const progress: number[] = []
  const done: Array<{ sent: number, total: number, resumed: number }> = []
  a.on('handoff:progress', p => {
    t.equal(p.to, 'b'); t.equal(p.total, moving.length)
    progress.push(p.sent)
    if (progress.length === 1) hub.partition('a', 'b') // the next batch is lost
  })
  a.on('handoff:done', p => { done.push(p) })
  b.setRing(both); a.setRing(both)
  await drive(clock, 1200) // the second batch times out: interrupted
  t.same(progress, [20], 'one batch acknowledged before the failure')
  t.equal(a.getStats().handoffInterrupted, 1)
  t.same(a.handoffsPending(), [{ to: 'b', sent: 20, total: moving.length, attempts: 1 }], 'waiting to resume')
  t.equal(done.length, 0)
  hub.partition('a', 'b', false)
  await drive(clock, 2000)
  const expect: number[] = []
  for (let n = 20; n < moving.length; n += 20) expect.push(n)
  expect.push(moving.length)
  t.same(progress, expect, 'resumed from the failed batch: every batch acknowledged once, in order')
  t.same(done, [{ to: 'b', sent: moving.length, total: moving.length, resumed: 1 }])
  t.equal(a.getStats().handoffResumed, 1)
  t.same(a.handoffsPending(), [])
  for (const k of moving) { if (b.local(k)?.value !== k) t.fail(`${k} not on b`); if (a.local(k) !== undefined) t.fail(`${k} still on a`) }
  t.equal(a.getStats().handoffDropped, moving.length, 'the old owner dropped every moved item once b had it')
  await a.stop(); await b.stop()
})
