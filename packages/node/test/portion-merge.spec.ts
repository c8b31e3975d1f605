import t from 'tap'
import { aorKey, portionBytes, type AorValue, type ReplicaValue, type SignedPortion } from '../src/index.js'
import type { ReplicatedStore } from '@sipring/overlay'
import { fourNodes as fourNodesOf, hmacSigner, phone, registerAndWait, run, settle, shutdown, type Cluster } from './overlay-helpers.js'

// Binding writes only from the attachment node, part 3: the replicas merge an AOR item portion by
// portion (each node's portion with the higher [ms, seq] among validly signed ones), so an admitted
// node writing the item without another node's portion cannot erase that node's bindings anywhere;
// a node removes its own bindings only by its own signed empty portion (a portion tombstone).

const BOB = 'sip:bob@example.org'
const K = aorKey(BOB)

async function fourNodes (seed: number, signed: boolean): Promise<Cluster> {
  return await fourNodesOf(seed, { records: false, overlay: id => signed ? { signer: hmacSigner(id) } : {} })
}
const store = (c: Cluster, id: string): ReplicatedStore<ReplicaValue> => c.nodes.get(id)!.overlay!.store
/** Bindings of `node`'s portion of bob's item in `holder`'s replica (undefined: no such portion). */
const portionAt = (c: Cluster, holder: string, node: string): SignedPortion | undefined => ((store(c, holder).local(K)?.value as AorValue | undefined)?.nodes[node]) as SignedPortion | undefined

/** Lookups of bob at every node except `skip` (the victim, whose own lookup would repair its portion). */
async function lookups (c: Cluster, skip?: string): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {}
  for (const [id, n] of c.nodes) if (id !== skip) out[id] = (await settle(c, n.replication!.lookup(BOB))).map(b => `${b.node ?? ''} ${b.contact}`)
  return out
}

for (const signed of [true, false]) {
  const mode = signed ? 'signed' : 'unsigned'

  t.test(`${mode}: a node writing bob's item without n1's portion erases nothing, at any replica; n1's un-REGISTER removes it everywhere`, async t => {
    const c = await fourNodes(signed ? 1 : 2, signed)
    t.teardown(() => shutdown(c))
    const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'tcp', '172.16.99.99')
    t.equal(await registerAndWait(c, bob), 200, 'bob registered at n1')
    await run(c, 1000)
    const owners = store(c, 'n1').owners(K)
    const want = `n1 ${bob.contact}`
    t.same(await lookups(c), { n1: [want], n2: [want], n3: [want], n4: [want] })

    // n3 (admitted, malicious) writes the whole item with only a portion of its own: a newer version
    const now = c.clock.now()
    const mine: SignedPortion = { uri: 'sip:10.0.0.3:5060', v: [now, 0], b: [] , x: now + 60_000 }
    if (signed) mine.s = hmacSigner('n3').sign(portionBytes(BOB, 'n3', mine)).toString('base64')
    await settle(c, store(c, 'n3').put(K, { v: 1, nodes: { n3: mine } }, { ttl: 60_000 }))
    await run(c, 100) // well before n1 would re-read anything
    for (const o of owners) t.equal(portionAt(c, o, 'n1')?.b.length, 1, `replica ${o} still holds n1's portion`)
    t.same(await lookups(c, 'n1'), { n2: [want], n3: [want], n4: [want] }, 'every other node still finds bob at n1')
    t.equal([...c.nodes.values()].reduce((s, n) => s + n.replication!.stats.repairs, 0), 0, 'without any repair by n1')
    t.ok(owners.some(o => c.nodes.get(o)!.replication!.stats.merges > 0), 'the replicas merged')

    // n3 deleting the key: refused (merged keys are never deleted)
    const err = await settle(c, store(c, 'n3').delete(K)).catch((e: unknown) => e)
    t.equal((err as { code?: string }).code, 'ERR_BAD_VALUE', 'a delete of an AOR item is refused')

    if (signed) {
      // n3 writes n1's portion as an empty one, newer, signed with its own key: ignored by every replica
      const forged: SignedPortion = { uri: 'sip:10.0.0.1:5060', v: [now + 50, 0], b: [], x: now + 60_000 }
      forged.s = hmacSigner('n3').sign(portionBytes(BOB, 'n1', forged)).toString('base64')
      await settle(c, store(c, 'n3').put(K, { v: 1, nodes: { n1: forged } }, { ttl: 60_000 }))
      await run(c, 100)
      for (const o of owners) t.equal(portionAt(c, o, 'n1')?.b.length, 1, `replica ${o} keeps n1's real portion over the forged one`)
      t.ok(owners.some(o => c.nodes.get(o)!.replication!.stats.mergeRejected > 0), 'the forged portion was rejected by a merge')
      t.same(await lookups(c, 'n1'), { n2: [want], n3: [want], n4: [want] })
    }

    if (signed) {
      // a brand-new AOR item (nothing stored yet) carrying a forged portion of n1: dropped on arrival
      const carol = 'sip:carol@example.org'
      const fake: SignedPortion = { uri: 'sip:10.0.0.1:5060', v: [now, 0], b: [{ contact: 'sip:carol@203.0.113.9', expires: now + 60_000, q: 1, callId: 'x', cseq: 1, path: [], updated: now }] }
      fake.s = hmacSigner('n3').sign(portionBytes(carol, 'n1', fake)).toString('base64')
      await settle(c, store(c, 'n3').put(aorKey(carol), { v: 1, nodes: { n1: fake } }, { ttl: 60_000 }))
      await run(c, 100)
      for (const o of store(c, 'n1').owners(aorKey(carol)).filter(o => o !== 'n3')) {
        t.same(Object.keys((store(c, o).local(aorKey(carol))?.value as AorValue | undefined)?.nodes ?? {}), [], `replica ${o} dropped the forged first write`)
      }
    }

    // n1's own un-REGISTER: a signed empty portion, which wins everywhere
    t.equal(await registerAndWait(c, bob, 0), 200, 'bob unregistered')
    await run(c, 1000)
    for (const o of owners) {
      const p = portionAt(c, o, 'n1')
      t.ok(p !== undefined && p.b.length === 0 && typeof p.x === 'number', `replica ${o}: n1's portion is a portion tombstone`)
      if (signed) t.type(p?.s, 'string', 'signed')
    }
    t.same(await lookups(c), { n1: [], n2: [], n3: [], n4: [] }, 'nobody finds bob any more')
  })

  t.test(`${mode}: two nodes writing one AOR at once converge with both portions, without repairs`, async t => {
    const c = await fourNodes(signed ? 3 : 4, signed)
    t.teardown(() => shutdown(c))
    const desk = await phone(c, 'bob', '10.9.1.1', 'n1', 'tcp', '172.16.1.1')
    const mobile = await phone(c, 'bob', '10.9.1.3', 'n3', 'tcp', '172.16.3.3')
    mobile.callId = 'reg-bob-mobile'
    const [a, b] = await settle(c, Promise.all([registerAndWait(c, desk), registerAndWait(c, mobile)]))
    t.same([a, b], [200, 200])
    await run(c, 2000)
    for (const o of store(c, 'n1').owners(K)) {
      t.same(Object.keys((store(c, o).local(K)!.value as AorValue).nodes).sort(), ['n1', 'n3'], `replica ${o} holds both portions`)
    }
    const all = await lookups(c)
    for (const [id, list] of Object.entries(all)) t.equal(list.length, 2, `${id} finds both devices`)
    t.equal([...c.nodes.values()].reduce((s, n) => s + n.replication!.stats.repairs, 0), 0, 'no repair needed')
  })
}
