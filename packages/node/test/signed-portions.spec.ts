import t from 'tap'
import { createHmac, timingSafeEqual } from 'node:crypto'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { LocationStore } from '@sipring/location'
import type { ReplicatedStore } from '@sipring/overlay'
import { LocationReplicator, aorKey, canonicalJson, portionBytes, type AorValue, type PortionSigner, type ReplicaValue, type SignedPortion } from '../src/index.js'

// Signed portions: with a signer, each node signs its portion of an AOR item and readers (lookups,
// other writers) ignore portions not signed by the node they name. The signer here is an HMAC keyed
// by the node id (deterministic, no key material); the daemon's Ed25519 signer is tested in overlay-libp2p.

const T0 = Date.UTC(2026, 0, 1)
const ALICE = 'sip:alice@example.org'
const K = aorKey(ALICE)

function hmacSigner (self: string): PortionSigner {
  const mac = (id: string, d: Uint8Array): Buffer => createHmac('sha256', `key-of-${id}`).update(d).digest()
  return {
    sign: d => mac(self, d),
    verify: (id, d, sig) => { const m = mac(id, d); return sig.length === m.length && timingSafeEqual(m, sig) }
  }
}

function fakeStore () {
  const items = new Map<string, ReplicaValue>()
  const calls: string[] = []
  const store = {
    maxTtl: 86_400_000,
    owners: () => ['x', 'y', 'z'],
    async get (key: string) { calls.push(`get ${key}`); const v = items.get(key); return v === undefined ? undefined : structuredClone(v) },
    async put (key: string, v: ReplicaValue) { calls.push(`put ${key}`); items.set(key, structuredClone(v)) },
    async delete (key: string) { calls.push(`delete ${key}`); items.delete(key) }
  }
  return { store: store as unknown as ReplicatedStore<ReplicaValue>, items, calls }
}

async function flush (): Promise<void> { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }

async function setup (signer?: PortionSigner) {
  const clock = new SimClock(T0)
  const location = new LocationStore({ clock })
  await location.start()
  const f = fakeStore()
  const r = new LocationReplicator({
    clock, logger: new MemoryLogger(), location, store: f.store, self: 'me', sipUri: 'sip:10.0.0.1:5060;transport=tcp',
    memberStatus: () => 'alive', verifyDelay: 0, ...(signer !== undefined ? { signer } : {})
  })
  r.start()
  await flush()
  return { clock, location, r, ...f }
}

/** A portion of node `id` for alice, signed by `signAs` (or unsigned). */
function portion (id: string, contact: string, signAs?: string): SignedPortion {
  const p: SignedPortion = { uri: `sip:${id}.example:5060`, v: [T0, 0], b: [{ contact, expires: T0 + 60_000, q: 1, callId: `c-${id}`, cseq: 1, path: [], updated: T0 }] }
  if (signAs !== undefined) p.s = hmacSigner(signAs).sign(portionBytes(ALICE, id, p)).toString('base64')
  return p
}

t.test('canonicalJson sorts keys at every level, so a re-encoded portion verifies', async t => {
  t.equal(canonicalJson({ b: [{ z: 1, a: 'x' }], a: { d: null, c: true }, u: undefined }), '{"a":{"c":true,"d":null},"b":[{"a":"x","z":1}]}')
  const p = portion('p1', 'sip:a@192.0.2.1', 'p1')
  const reordered = JSON.parse(JSON.stringify({ s: p.s, b: p.b.map(x => Object.fromEntries(Object.entries(x).reverse())), v: p.v, uri: p.uri }))
  t.ok(hmacSigner('me').verify('p1', portionBytes(ALICE, 'p1', reordered), Buffer.from(p.s!, 'base64')))
  t.notOk(hmacSigner('me').verify('p1', portionBytes('sip:bob@example.org', 'p1', reordered), Buffer.from(p.s!, 'base64')), 'bound to the AOR')
  t.notOk(hmacSigner('me').verify('p2', portionBytes(ALICE, 'p2', reordered), Buffer.from(p.s!, 'base64')), 'bound to the node')
})

t.test('with a signer: the own portion is signed; lookups keep only portions signed by the node they name', async t => {
  const { location, r, items } = await setup(hmacSigner('me'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.9', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  const v = items.get(K) as AorValue
  const mine = v.nodes.me as SignedPortion
  t.type(mine.s, 'string', 'signed')
  t.ok(hmacSigner('x').verify('me', portionBytes(ALICE, 'me', mine), Buffer.from(mine.s!, 'base64')), 'verifiable by any node')

  v.nodes.good = portion('good', 'sip:alice@192.0.2.1', 'good')
  v.nodes.unsigned = portion('unsigned', 'sip:alice@192.0.2.2')
  v.nodes.forged = portion('forged', 'sip:alice@192.0.2.3', 'mallory') // signed by another node's key
  const tampered = portion('tampered', 'sip:alice@192.0.2.4', 'tampered')
  tampered.b[0]!.contact = 'sip:alice@203.0.113.66' // changed after signing
  v.nodes.tampered = tampered
  const got = (await r.lookup(ALICE)).map(b => b.contact).sort()
  t.same(got, ['sip:alice@192.0.2.1', 'sip:alice@192.0.2.9'], 'own (from usrloc) + the validly signed portion only')
  t.equal(r.stats.badSignatures, 3)
  await r.lookup(ALICE)
  t.equal(r.stats.badSignatures, 6, 'counted on every read')
  await r.stop()
})

t.test('a writer copies validly signed portions verbatim and drops the others', async t => {
  const { clock, location, r, items } = await setup(hmacSigner('me'))
  const good = portion('good', 'sip:alice@192.0.2.1', 'good')
  good.b.push({ contact: 'sip:alice@192.0.2.7', expires: T0 + 1000, q: 1, callId: 'c-old', cseq: 1, path: [], updated: T0 })
  good.s = hmacSigner('good').sign(portionBytes(ALICE, 'good', good)).toString('base64') // signed with both bindings
  items.set(K, { v: 1, nodes: { good, forged: portion('forged', 'sip:alice@192.0.2.3', 'me') } })
  clock.advance(2000) // one of good's bindings has expired: still copied (dropping it would break the signature)
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.9', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  const v = items.get(K) as AorValue
  t.same(Object.keys(v.nodes).sort(), ['good', 'me'], 'the forged portion is not copied')
  t.same(v.nodes.good, good, 'the signed portion is copied exactly as signed')
  t.equal(r.stats.badSignatures, 1)
  await r.stop()
})

t.test('an unsigned own portion (written before signing was on) is rewritten, not taken as unchanged', async t => {
  const { location, r, items, calls } = await setup(hmacSigner('me'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.9', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  const v = items.get(K) as AorValue
  delete (v.nodes.me as SignedPortion).s
  calls.length = 0
  r.markDirty(ALICE)
  await r.settled(); await flush()
  t.same(calls, [`get ${K}`, `put ${K}`], 'rewritten')
  t.type((items.get(K) as AorValue).nodes.me && ((items.get(K) as AorValue).nodes.me as SignedPortion).s, 'string', 'signed now')
  await r.stop()
})

t.test('without a signer nothing is signed or checked (unsigned portions are read as before)', async t => {
  const { location, r, items } = await setup()
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.9', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  const v = items.get(K) as AorValue
  t.equal((v.nodes.me as SignedPortion).s, undefined)
  v.nodes.other = portion('other', 'sip:alice@192.0.2.1')
  t.same((await r.lookup(ALICE)).map(b => b.contact).sort(), ['sip:alice@192.0.2.1', 'sip:alice@192.0.2.9'])
  t.equal(r.stats.badSignatures, 0)
  await r.stop()
})

t.test('mergeValues (the store hook for aor| items): per node the newer validly signed live portion; newer returned as is when equal', async t => {
  const { clock, r } = await setup(hmacSigner('me'))
  const at = (id: string, contact: string, v: [number, number], signAs: string | null = id): SignedPortion => {
    const p: SignedPortion = { uri: `sip:${id}.example:5060`, v, b: [{ contact, expires: T0 + 60_000, q: 1, callId: `c-${id}`, cseq: v[0] - T0 + 1, path: [], updated: T0 }] }
    if (signAs !== null) p.s = hmacSigner(signAs).sign(portionBytes(ALICE, id, p)).toString('base64')
    return p
  }
  const tomb = (id: string, v: [number, number], x: number): SignedPortion => {
    const p: SignedPortion = { uri: `sip:${id}.example:5060`, v, b: [], x }
    p.s = hmacSigner(id).sign(portionBytes(ALICE, id, p)).toString('base64')
    return p
  }
  const p1 = at('p1', 'sip:a@192.0.2.1', [T0, 0])
  const p1b = at('p1', 'sip:a@192.0.2.11', [T0 + 5, 0])
  const p2 = at('p2', 'sip:a@192.0.2.2', [T0, 0])
  const A: AorValue = { v: 1, nodes: { p1: p1b } } // newer item without p2
  const B: AorValue = { v: 1, nodes: { p1, p2 } }
  const m = r.mergeValues(A, B, K) as AorValue
  t.same(m.nodes, { p1: p1b, p2 }, 'p1: the newer portion; p2 kept although the newer item left it out')
  t.same((r.mergeValues(B, A, K) as AorValue).nodes, m.nodes, 'commutative')
  t.equal(r.mergeValues(m, B, K), m, 'the newer value itself when the merge equals it')
  t.equal(r.mergeValues(m, structuredClone(m), K), m, 'idempotent')
  t.equal(r.mergeValues(B, { v: 1, nodes: { p1 } }, K), B, 'an older copy adds nothing')

  // a newer portion without a valid signature of its node: the older valid one stays
  const forged = at('p2', 'sip:evil@203.0.113.1', [T0 + 9, 0], 'p1')
  t.same((r.mergeValues({ v: 1, nodes: { p2: forged } }, B, K) as AorValue).nodes, { p1, p2 }, 'forged newer portion ignored')
  t.ok(r.stats.mergeRejected >= 1)
  const unsigned = at('p2', 'sip:evil@203.0.113.1', [T0 + 9, 0], null)
  t.same((r.mergeValues({ v: 1, nodes: { p2: unsigned } }, B, K) as AorValue).nodes, { p1, p2 }, 'unsigned newer portion ignored')

  // a portion tombstone removes the node's older portion, and goes itself once x has passed
  const t2 = tomb('p2', [T0 + 7, 0], T0 + 120_000)
  t.same((r.mergeValues({ v: 1, nodes: { p2: t2 } }, B, K) as AorValue).nodes, { p1, p2: t2 }, 'the portion tombstone wins')
  t.same((r.mergeValues(B, { v: 1, nodes: { p2: t2 } }, K) as AorValue).nodes, { p1, p2: t2 }, 'in either order')
  clock.advance(121_000) // p1's bindings and t2 have expired
  t.same((r.mergeValues({ v: 1, nodes: { p2: t2 } }, B, K) as AorValue).nodes, {}, 'expired portions and tombstones are dropped')

  // malformed values never throw
  t.equal(r.mergeValues('junk' as unknown as AorValue, B, K), B)
  t.equal(r.mergeValues(B, { nodes: 5 } as unknown as AorValue, K), B)
  t.same((r.mergeValues({ v: 1, nodes: { p9: { uri: 'http://x', v: 'no', b: 1 } } } as unknown as AorValue, { v: 1, nodes: {} }, K) as AorValue).nodes, {}, 'a malformed portion is dropped')
  await r.stop()
})

t.test('mergeValues without a signer: unsigned portions merge by version', async t => {
  const { r } = await setup()
  const p = (id: string, v: [number, number]): SignedPortion => ({ uri: `sip:${id}.example`, v, b: [{ contact: `sip:a@${id}.example`, expires: T0 + 60_000, q: 1, callId: 'c', cseq: 1, path: [], updated: T0 }] })
  const m = r.mergeValues({ v: 1, nodes: { a: p('a', [T0 + 1, 0]) } }, { v: 1, nodes: { a: p('a', [T0, 3]), b: p('b', [T0, 0]) } }, K) as AorValue
  t.same(Object.keys(m.nodes).sort(), ['a', 'b'])
  t.same(m.nodes.a!.v, [T0 + 1, 0])
  // the same version with different content (a restarted writer): the same choice in either order
  const x = p('c', [T0, 0]); const y = { ...p('c', [T0, 0]), uri: 'sip:other.example' }
  t.same(r.mergeValues({ v: 1, nodes: { c: x } }, { v: 1, nodes: { c: y } }, K), r.mergeValues({ v: 1, nodes: { c: y } }, { v: 1, nodes: { c: x } }, K))
  await r.stop()
})
