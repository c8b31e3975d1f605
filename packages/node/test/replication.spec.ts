import t from 'tap'
import type { Binding } from '@sipring/interface'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { LocationStore } from '@sipring/location'
import { OverlayError, QuorumError, type ReplicatedStore } from '@sipring/overlay'
import { LocationReplicator, parseValue, aorKey, DEFAULT_REPLICATION_LIMITS, type AorValue, type ReplicaValue } from '../src/index.js'

const T0 = Date.UTC(2026, 0, 1)
const ALICE = 'sip:alice@example.org'

function binding (over: Partial<Binding> = {}): Binding {
  return { aor: ALICE, contact: 'sip:alice@192.0.2.1', expires: T0 + 60_000, q: 1, callId: 'c1', cseq: 1, path: [], updated: T0, ...over }
}

/** A fake ReplicatedStore: one map, programmable failures, every call recorded. */
function fakeStore () {
  const items = new Map<string, AorValue>()
  const calls: string[] = []
  let fail: Error | undefined
  const store = {
    maxTtl: 86_400_000,
    owners: () => ['x', 'y', 'z'],
    async get (key: string) { calls.push(`get ${key}`); if (fail !== undefined) throw fail; return items.get(key) },
    async put (key: string, v: AorValue, o: { ttl: number }) { calls.push(`put ${key} ttl=${o.ttl}`); if (fail !== undefined) throw fail; items.set(key, structuredClone(v)) },
    async delete (key: string) { calls.push(`delete ${key}`); if (fail !== undefined) throw fail; items.delete(key) }
  }
  return { store: store as unknown as ReplicatedStore<ReplicaValue>, items, calls, setFail: (e?: Error) => { fail = e } }
}

async function setup (status: Record<string, string> = {}) {
  const clock = new SimClock(T0)
  const location = new LocationStore({ clock })
  await location.start()
  const f = fakeStore()
  const r = new LocationReplicator({
    clock, logger: new MemoryLogger(), location, store: f.store, self: 'me', sipUri: 'sip:10.0.0.1:5060;transport=tcp',
    memberStatus: id => status[id], verifyDelay: 0, retryDelay: 100, maxRetries: 2
  })
  r.start()
  await flush()
  const own = f.calls.splice(0) // the node record, written at start
  return { clock, location, r, own, ...f }
}

async function flush (): Promise<void> { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }

t.test('start publishes node|<self>; learnNodes fetches the peers\' records (retrying missing ones)', async t => {
  const { clock, r, own, items, calls } = await setup()
  t.same(own, ['put node|me ttl=86400000'])
  t.same(items.get('node|me'), { v: 1, sip: 'sip:10.0.0.1:5060;transport=tcp' })
  items.set('node|p1', { v: 1, sip: 'sip:10.0.0.2:5060;transport=tcp' } as any)
  items.set('node|evil', { v: 1, sip: 'http://x' } as any)
  r.learnNodes(['me', 'p1', 'p2', 'evil'])
  await flush()
  t.equal(r.nodeRoute('p1'), 'sip:10.0.0.2:5060;transport=tcp')
  t.equal(r.nodeRoute('p2'), undefined, 'not published yet')
  t.equal(r.nodeRoute('evil'), undefined, 'a record that is not a SIP URI is ignored')
  items.set('node|p2', { v: 1, sip: 'sip:10.0.0.3:5060;transport=tcp' } as any)
  clock.advance(1000); await flush()
  t.equal(r.nodeRoute('p2'), 'sip:10.0.0.3:5060;transport=tcp', 'learnt on a retry')
  t.notOk(calls.includes('get node|me'), 'never looks itself up')
  r.setSipUri('sip:192.0.2.9:5060;transport=tcp')
  await flush()
  t.same(items.get('node|me'), { v: 1, sip: 'sip:192.0.2.9:5060;transport=tcp' }, 'republished on change')
  await r.stop()
})

t.test('usrloc events publish the AOR item (TTL = latest expiry); removing the last binding writes a tombstone', async t => {
  const { location, r, items, calls } = await setup()
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  t.same(calls, [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)} ttl=60000`])
  const v = items.get(aorKey(ALICE))!
  t.same(Object.keys(v.nodes), ['me'])
  t.equal(v.nodes.me!.uri, 'sip:10.0.0.1:5060;transport=tcp')
  t.equal(v.nodes.me!.b[0]!.node, 'me')
  location.remove(ALICE, 'sip:alice@192.0.2.1')
  await r.settled(); await flush()
  t.equal(calls.at(-1), `delete ${aorKey(ALICE)}`)
  t.equal(r.stats.deleted, 1)
})

t.test('a burst of changes to one AOR is coalesced into few publishes', async t => {
  const { location, r, calls } = await setup()
  for (let i = 1; i <= 20; i++) location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60 }], callId: 'c1', cseq: i })
  await r.settled(); await flush()
  t.ok(calls.filter(c => c.startsWith('put')).length <= 2, `${calls.length} store calls for 20 REGISTERs`)
})

t.test('lookup = local ∪ other nodes (dead ones skipped); its own portion is taken from usrloc, never from the overlay', async t => {
  const { location, r, items, calls } = await setup({ dead1: 'dead', gone: 'left', n2: 'alive' })
  items.set(aorKey(ALICE), {
    v: 1,
    nodes: {
      me: { uri: 'sip:10.0.0.1', v: [T0, 0], b: [binding({ contact: 'sip:alice@stale.example', node: 'me' })] },
      n2: { uri: 'sip:10.0.0.2:5060;transport=tcp', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.2', node: 'forged' })] },
      dead1: { uri: 'sip:10.0.0.3', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.3' })] },
      gone: { uri: 'sip:10.0.0.4', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.4' })] },
      stranger: { uri: 'sip:10.0.0.5', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.5' })] }
    }
  })
  const got = await r.lookup(ALICE)
  t.same(got.map(b => `${b.contact} ${b.node}`), ['sip:alice@198.51.100.2 n2'], 'only n2 (node forced to the portion owner); not the stale own portion, nor dead, left or unknown members')
  t.equal(r.nodeRoute('n2'), 'sip:10.0.0.2:5060;transport=tcp')
  t.equal(r.nodeRoute('dead1'), undefined)
  await r.settled(); await flush()
  t.equal(r.stats.repairs, 1, 'the stale own portion is repaired')
  t.equal(calls.filter(c => c.startsWith('put')).length, 1)
  t.same(Object.keys(items.get(aorKey(ALICE))!.nodes).sort(), ['n2', 'stranger'], 'own stale portion removed, dead and left nodes dropped, the others kept')

  // the same contact registered at two nodes: the newer registration wins
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@198.51.100.2', expires: 30, node: 'me' }], callId: 'c1', cseq: 2, now: T0 + 10 })
  const merged = await r.lookup(ALICE)
  t.equal(merged.length, 1)
  t.equal(merged[0]!.node, 'me', 'cseq 2 here beats cseq 1 at n2 (same Call-ID)')
  location.applyRegister('sip:old@example.org', { contacts: [{ contact: 'sip:old@192.0.2.7', expires: 60, node: 'id-before-the-overlay' }], callId: 'c9', cseq: 1 })
  t.equal((await r.lookup('sip:old@example.org'))[0]!.node, 'me', 'a binding restored under an older node id is ours')
})

t.test('an overlay failure degrades lookups to the local bindings; publishes are retried then abandoned', async t => {
  const { clock, location, r, setFail, calls } = await setup()
  setFail(new QuorumError(0, 2, 'read'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60 }], callId: 'c1', cseq: 1 })
  const got = await r.lookup(ALICE)
  t.equal(got.length, 1, 'local binding still served')
  t.equal(r.stats.lookupErrors, 1)
  await r.settled(); await flush()
  for (let i = 0; i < 10; i++) { clock.advance(500); await r.settled(); await flush() }
  t.equal(r.stats.publishErrors, 3, 'first try + 2 retries')
  t.equal(r.stats.abandoned, 1)
  setFail(new OverlayError('ERR_BAD_KEY', 'too long'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60 }], callId: 'c1', cseq: 2 })
  await r.settled(); await flush()
  t.equal(r.stats.abandoned, 2, 'a non-retryable error is not retried')
  setFail(undefined)
  await r.stop()
  const n = calls.length
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60 }], callId: 'c1', cseq: 3 })
  await flush()
  t.equal(calls.length, n, 'stopped: no more publishes')
})

t.test('parseValue rejects malformed values from the overlay without throwing', async t => {
  const L = DEFAULT_REPLICATION_LIMITS
  let rejected = 0
  const rej = (): void => { rejected++ }
  for (const bad of [42, 'x', [], { nodes: 3 }, { nodes: [] }]) t.equal(parseValue(bad, L, T0, rej), undefined)
  t.equal(rejected, 5)
  rejected = 0
  const v = parseValue({
    v: 1,
    nodes: {
      ok: { uri: 'sip:a', v: [1, 2], b: [binding(), { ...binding(), q: 7 }, { ...binding(), path: 'x' }, binding({ expires: T0 - 1 })] },
      badUri: { uri: 'http://x', v: [1, 2], b: [] },
      badV: { uri: 'sip:b', v: [1], b: [] },
      long: { uri: 'sip:' + 'x'.repeat(5000), v: [1, 2], b: [] }
    }
  }, L, T0, rej)!
  t.same(Object.keys(v.nodes), ['ok'])
  t.equal(v.nodes.ok!.b.length, 1, 'bad q / bad path dropped, expired filtered')
  t.equal(rejected, 5)
  const many: Record<string, unknown> = {}
  for (let i = 0; i < 40; i++) many[`n${i}`] = { uri: 'sip:x', v: [0, 0], b: [] }
  t.equal(Object.keys(parseValue({ nodes: many }, L, T0)!.nodes).length, L.maxNodesPerAor, 'portions capped')
})
