import t from 'tap'
import type { OverlayMessage, PeerId, WireItem } from '@sipring/overlay'
import { drive, settle } from './helpers.js'
import { addNode, converge, storeCluster, type StoreCluster } from './store-helpers.js'

async function build (seed: number, n: number): Promise<StoreCluster> {
  const c = storeCluster(seed, { store: { antiEntropyInterval: 0 } })
  for (let i = 0; i < n; i++) await addNode(c, `s${i}`, i === 0 ? undefined : 's0')
  await converge(c)
  return c
}
/** Records every request the hub carries. */
function tap (c: StoreCluster): Array<{ from: PeerId, to: PeerId, msg: OverlayMessage }> {
  const seen: Array<{ from: PeerId, to: PeerId, msg: OverlayMessage }> = []
  const orig = c.hub.request.bind(c.hub)
  c.hub.request = (from, to, msg, opts) => { seen.push({ from, to, msg }); return orig(from, to, msg, opts) }
  return seen
}

t.test('values travel between replicas as JSON text, encoded once for both remote owners', async t => {
  const c = await build(21, 3)
  const seen = tap(c)
  const a = c.nodes.get('s0')!.store
  const keys = Array.from({ length: 10 }, (_, i) => `aor|sip:t${i}@example.org`)
  await settle(c, Promise.all(keys.map(async (k, i) => { await a.put(k, JSON.stringify({ n: i, s: 'x"y' }), { ttl: 60_000 }) })))
  const puts = seen.filter(x => x.msg.type === 'store.put' && x.from === 's0')
  t.equal(puts.length, 2, 'one store.put per remote owner')
  t.equal(puts[0]!.msg, puts[1]!.msg, 'the same message object for both owners (the network encodes it once)')
  t.ok(Object.isFrozen(puts[0]!.msg), 'frozen, so an encoding can be reused')
  const items = (puts[0]!.msg as { items: WireItem[] }).items
  t.equal(items.length, 10)
  t.ok(items.every(it => typeof it.json === 'string' && !('value' in it)), 'items carry json, no value object')
  t.equal(items[3]!.json, JSON.stringify(JSON.stringify({ n: 3, s: 'x"y' })))
  await drive(c.clock, 100)
  // replicas hand the text on as text (reads), and every reader decodes it
  seen.length = 0
  const b = c.nodes.get('s2')!.store
  t.equal(await settle(c, b.get(keys[3]!)), JSON.stringify({ n: 3, s: 'x"y' }), 'read at another node: decoded value')
  const ans = seen.filter(x => x.msg.type === 'store.get' || x.msg.type === 'store.gets')
  t.ok(ans.length >= 1, 'a remote read was made')
  t.same(c.nodes.get('s1')!.store.local(keys[3]!)?.value, JSON.stringify({ n: 3, s: 'x"y' }), 'local() still returns the decoded value')
  // a delete and a change listener still see values
  const changes: Array<string | undefined> = []
  c.nodes.get('s1')!.store.on('change', (_k, it) => { changes.push(it.value) })
  await settle(c, a.put(keys[0]!, 'new', { ttl: 60_000 }))
  await drive(c.clock, 100)
  t.same(changes, ['new'], 'a replica\'s change event carries the decoded value')
  await settle(c, a.delete(keys[0]!))
  t.equal(await settle(c, b.get(keys[0]!)), undefined)
  for (const n of c.nodes.values()) await n.stop()
})

t.test('isOwner: without hashing on a ring of at most R members, else as owners()', async t => {
  const c = await build(22, 5)
  const keys = Array.from({ length: 200 }, (_, i) => `aor|sip:o${i}@example.org`)
  for (const [id, n] of c.nodes) {
    for (const k of keys) t.equal(n.store.isOwner(k), n.store.owners(k).includes(id), `${id} ${k}`)
  }
  await c.nodes.get('s3')!.stop(); await c.nodes.get('s4')!.stop()
  c.hub.crash('s3'); c.hub.crash('s4')
  await drive(c.clock, 120_000)
  const s0 = c.nodes.get('s0')!.store
  t.ok(keys.every(k => s0.isOwner(k) === s0.owners(k).includes('s0')))
  for (const id of ['s0', 's1', 's2']) await c.nodes.get(id)!.stop()
})
