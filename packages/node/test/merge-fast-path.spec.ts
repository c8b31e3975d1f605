import t from 'tap'
import { SeededRng } from '@sipring/testkit'
import { aorKey, canonicalJson, portionBytes, type AorValue, type LocationReplicator, type ReplicaValue, type SignedPortion } from '../src/index.js'
import { portionVersions } from '../src/replication.js'
import { fourNodes, hmacSigner, phone, registerAndWait, run, settle, shutdown } from './overlay-helpers.js'

// The refresh fast path of the portion-wise merge (`LocationReplicator.dominates`, the store's
// `ValueMerge.dominates`): a replica that holds an AOR item and receives a value whose portions are
// all newer than the stored ones keeps the incoming text without decoding the stored one. It must
// answer true only when `mergeValues` would give the incoming value itself.

const BOB = 'sip:bob@example.org'
/** An integer in [a, b]. */
const ri = (rng: SeededRng, a: number, b: number): number => a + rng.int(b - a + 1)
const K = aorKey(BOB)

t.test('portionVersions reads ids and versions of the compact JSON text, as JSON.parse does; any other form: undefined', async t => {
  const rng = new SeededRng(7)
  const nasty = ['"', '\\', '}', ']', '{', '[', ',', ':', '"v":[9,9]', 'é', '\\"', '\\\\']
  const str = (): string => Array.from({ length: ri(rng, 0, 6) }, () => rng.next() < 0.5 ? nasty[ri(rng, 0, nasty.length - 1)]! : String.fromCharCode(ri(rng, 32, 126))).join('')
  let checked = 0
  for (let i = 0; i < 400; i++) {
    const nodes: Record<string, unknown> = {}
    for (let k = ri(rng, 0, 4); k > 0; k--) {
      const id = rng.next() < 0.8 ? `n${ri(rng, 1, 9)}` : str()
      nodes[id] = { uri: str(), v: [ri(rng, 0, 2 ** 40), ri(rng, 0, 5)], b: Array.from({ length: ri(rng, 0, 2) }, () => ({ contact: str(), v: [1, 2], expires: ri(rng, 0, 1e6), path: [str()], x: { v: str() } })), ...(rng.next() < 0.3 ? { s: str() } : {}) }
    }
    const text = JSON.stringify({ v: 1, nodes })
    const idx = portionVersions(text)
    const ids = Object.keys(nodes)
    if (ids.some(id => id.includes('\\') || id.includes('"'))) { t.equal(idx, undefined, 'escaped id: undefined'); continue }
    t.ok(idx !== undefined, text)
    t.same(idx!.ids, ids)
    t.same(idx!.v, ids.flatMap(id => (nodes[id] as { v: number[] }).v))
    checked++
  }
  t.ok(checked > 300)
  t.same(portionVersions('{"v":1,"nodes":{}}'), { ids: [], v: [] })
  t.same(portionVersions('{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1.5e3,0],"b":[]}}}'), { ids: ['a'], v: [1500, 0] })
  for (const bad of [
    '{"v":1, "nodes":{}}', // white space
    '{"nodes":{},"v":1}', // another key order
    '{"v":1,"nodes":{"a":{"uri":"x","v":[1,2],"b":[]},"a":{"uri":"x","v":[3,4],"b":[]}}}', // duplicate id
    '{"v":1,"nodes":{"a":{"uri":"x","b":[]}}}', // no version
    '{"v":1,"nodes":{"a":{"uri":"x","v":[1,2],"v":[3,4],"b":[]}}}', // two versions
    '{"v":1,"nodes":{"a":{"uri":"x","v":[1,2,3],"b":[]}}}',
    '{"v":1,"nodes":{"a":{"uri":"x","v":["1",2],"b":[]}}}',
    '{"v":1,"nodes":{"a":{"uri":"x","v":[1,2],"b":[]}},"x":1}', // after the nodes
    '{"v":1,"nodes":{"a":5}}',
    '{"v":1,"nodes":{"a":{"uri":"x","v":[1,2],"b":[}}}',
    '{"v":1,"nodes":{"a":{"uri":"x\\"}}}',
    '{"v":1,"nodes":{"a\\u0041":{"uri":"x","v":[1,2],"b":[]}}}',
    '"text"', ''
  ]) t.equal(portionVersions(bad), undefined, bad)
})

for (const signed of [false, true]) {
  const mode = signed ? 'signed' : 'unsigned'
  t.test(`${mode}: dominates is true only when mergeValues gives the incoming value itself (random portions)`, async t => {
    const c = await fourNodes(signed ? 21 : 22, { records: false, overlay: id => signed ? { signer: hmacSigner(id) } : {} })
    t.teardown(() => shutdown(c))
    const rep: LocationReplicator = c.nodes.get('n1')!.replication!
    const rng = new SeededRng(signed ? 3 : 4)
    const now = c.clock.now()
    const portion = (id: string): SignedPortion => {
      const p: SignedPortion = { uri: rng.next() < 0.05 ? 'http://bad' : `sip:10.0.0.${id.slice(1)}:5060`, v: [now + ri(rng, -2, 2), ri(rng, 0, 2)], b: [] }
      if (rng.next() < 0.15) p.x = now + ri(rng, -5, 60_000)
      else p.b = [{ contact: `sip:bob@10.9.0.${ri(rng, 1, 3)}`, expires: now + ri(rng, -1000, 600_000), q: 1, callId: 'c', cseq: ri(rng, 1, 3), path: [], updated: now }]
      if (signed) {
        const r = rng.next()
        if (r < 0.85) p.s = hmacSigner(id).sign(portionBytes(BOB, id, p)).toString('base64')
        else if (r < 0.95) p.s = hmacSigner('n9').sign(portionBytes(BOB, id, p)).toString('base64')
      }
      return p
    }
    const value = (): AorValue => {
      const nodes: Record<string, SignedPortion> = {}
      for (const id of ['n1', 'n2', 'n3', 'n4']) if (rng.next() < 0.5) nodes[id] = portion(id)
      return { v: 1, nodes }
    }
    let yes = 0; let no = 0
    for (let i = 0; i < 3000; i++) {
      const stored = value()
      // often the refresh shape: the incoming value re-writes the stored portions with newer versions
      const incoming: AorValue = rng.next() < 0.5 ? value() : { v: 1, nodes: Object.fromEntries(Object.keys(stored.nodes).map(id => [id, portion(id)])) }
      if (rng.next() < 0.5) for (const id of Object.keys(incoming.nodes)) if (stored.nodes[id] !== undefined) incoming.nodes[id]!.v = [stored.nodes[id]!.v[0] + ri(rng, 0, 1), ri(rng, 0, 3)]
      const from = ['n1', 'n2', 'n3', 'n4'][ri(rng, 0, 3)]!
      const ctx = { incoming: incoming as ReplicaValue, from }
      const d = rep.dominates(incoming, JSON.stringify(stored), K, ctx)
      if (!d) { no++; continue }
      yes++
      const want = canonicalJson(incoming)
      t.equal(canonicalJson(rep.mergeValues(incoming, stored, K, ctx)), want, `merge (incoming newer) ${i}`)
      t.equal(canonicalJson(rep.mergeValues(stored, incoming, K, ctx)), want, `merge (stored newer) ${i}`)
    }
    t.ok(yes > 200 && no > 200, `both answers seen (true ${yes}, false ${no})`)
  })
}

t.test('a refresh through the overlay takes the fast path at every owner and changes nothing else', async t => {
  const c = await fourNodes(23, { records: false })
  t.teardown(() => shutdown(c))
  const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'udp')
  t.equal(await registerAndWait(c, bob), 200)
  await run(c, 2000)
  const owners = c.nodes.get('n1')!.overlay!.store.owners(K)
  const fast = (): number => owners.reduce((s, o) => s + c.nodes.get(o)!.overlay!.store.getStats().fastMerges, 0)
  const before = fast()
  const v1 = (c.nodes.get(owners[0]!)!.overlay!.store.local(K)!.value as AorValue).nodes.n1!.v
  t.equal(await registerAndWait(c, bob), 200, 'refresh')
  await run(c, 2000)
  t.equal(fast() - before, owners.length, 'one fast merge per owner')
  for (const o of owners) {
    const p = (c.nodes.get(o)!.overlay!.store.local(K)!.value as AorValue).nodes
    t.same(Object.keys(p), ['n1'])
    t.ok(p.n1!.v[0] > v1[0] || (p.n1!.v[0] === v1[0] && p.n1!.v[1] > v1[1]), `${o} holds the newer portion`)
  }
  const found = await settle(c, c.nodes.get('n3')!.replication!.lookup(BOB))
  t.same(found.map(b => b.contact), [bob.contact])
})
