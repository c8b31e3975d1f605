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

t.test('usrloc events publish the AOR item (TTL = latest expiry); removing the last binding writes a portion tombstone', async t => {
  const { location, r, items, calls } = await setup()
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  await r.settled(); await flush()
  t.same(calls, [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)} ttl=60000`])
  const v = items.get(aorKey(ALICE))!
  t.same(Object.keys(v.nodes), ['me'])
  t.equal(v.nodes.me!.uri, 'sip:10.0.0.1:5060;transport=tcp')
  const wire = v.nodes.me!.b[0]!
  t.equal(wire.contact, 'sip:alice@192.0.2.1')
  t.ok(wire.node === undefined && wire.aor === undefined && wire.contactHeader === undefined, 'aor, node and contactHeader are not published (derived / unused by readers)')
  const read = parseValue(structuredClone(v), DEFAULT_REPLICATION_LIMITS, T0, undefined, ALICE)!.nodes.me!.b[0]!
  t.equal(read.node, 'me', 'readers restore node from the portion id')
  t.equal(read.aor, ALICE, 'readers restore aor from the key')
  t.equal(parseValue(structuredClone(v), DEFAULT_REPLICATION_LIMITS, T0)!.nodes.me!.b.length, 0, 'without the AOR, an aor-less binding is rejected')
  location.remove(ALICE, 'sip:alice@192.0.2.1')
  await r.settled(); await flush()
  // never a delete of the key (that would erase other nodes' portions): an empty own portion kept until x
  t.equal(calls.at(-1), `put ${aorKey(ALICE)} ttl=86400000`)
  t.same(items.get(aorKey(ALICE))!.nodes.me, { uri: 'sip:10.0.0.1:5060;transport=tcp', v: items.get(aorKey(ALICE))!.nodes.me!.v, b: [], x: T0 + 86_400_000 })
  t.equal(r.stats.deleted, 1)
  calls.length = 0
  r.markDirty(ALICE)
  await r.settled(); await flush()
  t.same(calls, [`get ${aorKey(ALICE)}`], 'already a portion tombstone: no second write')
})

t.test('a burst of changes to one AOR is coalesced into few publishes', async t => {
  const { location, r, calls } = await setup()
  for (let i = 1; i <= 20; i++) location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60 }], callId: 'c1', cseq: i })
  await r.settled(); await flush()
  t.ok(calls.filter(c => c.startsWith('put')).length <= 2, `${calls.length} store calls for 20 REGISTERs`)
})

const TCP = { protocol: 'tcp' as const, address: '198.51.100.9', port: 40000, connectionId: 'c9' }

t.test('lookup keeps the plain UDP clients of dead/left/unknown nodes (reached directly), not their flows, connections or NATed contacts', async t => {
  const { r, items } = await setup({ dead1: 'dead', gone: 'left', n2: 'alive' })
  const udp = (host: string, port = 5060) => ({ protocol: 'udp' as const, address: host, port })
  items.set(aorKey(ALICE), {
    v: 1,
    nodes: {
      n2: { uri: 'sip:10.0.0.2', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.2', received: TCP })] },
      dead1: {
        uri: 'sip:10.0.0.3',
        v: [T0, 0],
        b: [
          binding({ contact: 'sip:alice@198.51.100.3', received: udp('198.51.100.3', 5070) }), // Contact on the source IP
          binding({ contact: 'sip:alice@172.16.0.3', received: udp('198.51.100.33') }), // behind NAT
          binding({ contact: 'sip:alice@198.51.100.34;transport=tcp', received: { ...TCP, address: '198.51.100.34' } }),
          binding({ contact: 'sip:alice@198.51.100.35', instance: '<urn:uuid:00000000-0000-0000-0000-000000000035>', regId: 1, received: udp('198.51.100.35') })
        ]
      },
      gone: { uri: 'sip:10.0.0.4', v: [T0, 0], b: [binding({ contact: 'sip:alice@172.16.0.4', path: ['<sip:edge.example;lr>'], received: udp('198.51.100.40') })] },
      stranger: { uri: 'sip:10.0.0.5', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.5' })] }
    }
  })
  const got = await r.lookup(ALICE)
  t.same(got.map(b => `${b.contact} ${b.node}`).sort(), [
    'sip:alice@172.16.0.4 gone', // through its Path
    'sip:alice@198.51.100.2 n2',
    'sip:alice@198.51.100.3 dead1',
    'sip:alice@198.51.100.5 stranger' // no received: registered as sent
  ], 'live node + the dead ones\' plain UDP clients (stamped with their dead node)')
  t.equal(r.liveRoute('n2'), 'sip:10.0.0.2', 'a live node is routed to')
  t.equal(r.liveRoute('dead1'), undefined, 'a dead node is not: the proxy sends to its clients directly')
  t.equal(r.liveRoute('gone'), undefined)
  t.equal(r.liveRoute('me'), 'sip:10.0.0.1:5060;transport=tcp')
})

t.test('lookup = local ∪ other nodes (dead ones skipped); its own portion is taken from usrloc, never from the overlay', async t => {
  const { location, r, items, calls } = await setup({ dead1: 'dead', gone: 'left', n2: 'alive' })
  items.set(aorKey(ALICE), {
    v: 1,
    nodes: {
      me: { uri: 'sip:10.0.0.1', v: [T0, 0], b: [binding({ contact: 'sip:alice@stale.example', node: 'me' })] },
      n2: { uri: 'sip:10.0.0.2:5060;transport=tcp', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.2', node: 'forged' })] },
      // TCP clients: their connections died with their node (plain UDP ones: see the next test)
      dead1: { uri: 'sip:10.0.0.3', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.3', received: TCP })] },
      gone: { uri: 'sip:10.0.0.4', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.4', received: TCP })] },
      stranger: { uri: 'sip:10.0.0.5', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.5', received: TCP })] }
    }
  })
  const got = await r.lookup(ALICE)
  t.same(got.map(b => `${b.contact} ${b.node}`), ['sip:alice@198.51.100.2 n2'], 'only n2 (node forced to the portion owner); not the stale own portion, nor dead, left or unknown members')
  t.equal(r.nodeRoute('n2'), 'sip:10.0.0.2:5060;transport=tcp')
  t.equal(r.nodeRoute('dead1'), undefined)
  await r.settled(); await flush()
  t.equal(r.stats.repairs, 1, 'the stale own portion is repaired')
  t.equal(calls.filter(c => c.startsWith('put')).length, 1)
  // the replicas merge portion by portion, so a writer leaving out a live portion would not remove it:
  // dead and left nodes' portions stay until they expire (readers skip them)
  t.same(Object.keys(items.get(aorKey(ALICE))!.nodes).sort(), ['dead1', 'gone', 'me', 'n2', 'stranger'], 'others kept verbatim')
  t.same(items.get(aorKey(ALICE))!.nodes.me!.b, [], 'own stale portion replaced by a portion tombstone')

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

/**
 * A fake store that is also an owner's replica: `local()` returns the stored item with its version
 * (origin = the writer), like `ReplicatedStore.local` on an owner of the key.
 */
function replicaStore (clock: SimClock, self: string) {
  const items = new Map<string, { value?: AorValue, origin: string, updated: number, deleted: boolean }>()
  const calls: string[] = []
  let owner = true
  let failPuts = false
  const store = {
    maxTtl: 86_400_000,
    owners: () => owner ? [self, 'y', 'z'] : ['x', 'y', 'z'],
    isOwner: () => owner,
    local: (key: string) => {
      const e = items.get(key)
      if (e === undefined) return undefined
      return { key, version: { updated: e.updated, counter: 0, origin: e.origin }, deleted: e.deleted, ...(e.deleted ? {} : { value: e.value }), expires: e.updated + 86_400_000 }
    },
    async get (key: string) { calls.push(`get ${key}`); const e = items.get(key); return e?.deleted === true ? undefined : e?.value },
    async put (key: string, v: AorValue) {
      calls.push(`put ${key}`)
      items.set(key, { value: structuredClone(v), origin: self, updated: clock.now(), deleted: false }) // the owner applies locally first
      if (failPuts) throw new QuorumError(1, 2, `write ${key}`)
    },
    async delete (key: string) { calls.push(`delete ${key}`); items.set(key, { origin: self, updated: clock.now(), deleted: true }) }
  }
  /** Another node writes `key` (as a concurrent writer would, its put reaching this replica). */
  const write = (key: string, value: AorValue, origin: string, updated = clock.now()): void => { items.set(key, { value, origin, updated, deleted: false }) }
  return { store: store as unknown as ReplicatedStore<ReplicaValue>, items, calls, write, setOwner: (o: boolean) => { owner = o }, setFailPuts: (f: boolean) => { failPuts = f } }
}

async function setupReplica (opts: { trustLocalFor?: number, verifyDelay?: number } = {}) {
  const clock = new SimClock(T0)
  const location = new LocationStore({ clock })
  await location.start()
  const f = replicaStore(clock, 'me')
  const r = new LocationReplicator({
    clock, logger: new MemoryLogger(), location, store: f.store, self: 'me', sipUri: 'sip:10.0.0.1:5060;transport=tcp',
    verifyDelay: opts.verifyDelay ?? 1000, retryDelay: 100, maxRetries: 2, ...(opts.trustLocalFor !== undefined ? { trustLocalFor: opts.trustLocalFor } : {})
  })
  r.start()
  await flush()
  f.calls.splice(0)
  const reg = async (cseq: number, expires = 60, contact = 'sip:alice@192.0.2.1'): Promise<void> => {
    location.applyRegister(ALICE, { contacts: [{ contact, expires, node: 'me' }], callId: 'c1', cseq })
    await r.settled(); await flush()
  }
  const tick = async (ms: number): Promise<void> => { clock.advance(ms); await flush(); await r.settled(); await flush() }
  return { clock, location, r, reg, tick, ...f }
}

t.test('owner of the key, AOR written alone: verified against the own replica; a refresh skips the quorum pre-read', async t => {
  const { r, reg, tick, calls, items } = await setupReplica()
  const K = aorKey(ALICE)
  await reg(1)
  t.same(calls.splice(0), [`put ${K}`], 'a new AOR at an owner holding nothing of it: written without the quorum pre-read')
  t.equal(r.stats.blindWrites, 1)
  await tick(1000)
  t.same(calls.splice(0), [], 'verification answered by the own replica')
  t.equal(r.stats.localVerifies, 1)
  await tick(5000)
  await reg(2, 120)
  t.same(calls.splice(0), [`put ${K}`], 'refresh: written without the pre-read')
  t.equal(r.stats.localReads, 1)
  t.equal(items.get(K)!.value!.nodes.me!.b[0]!.expires, T0 + 6000 + 120_000, 'the new expiry is written')
  // an unchanged own portion is not rewritten
  r.markDirty(ALICE)
  await r.settled(); await flush()
  t.same(calls.splice(0), [], 'nothing to write')
  t.equal(r.stats.unchanged, 1)
  await tick(1000)
  // unREGISTER: a portion tombstone (the key is never deleted), written like a refresh
  await reg(3, 0)
  t.same(calls.splice(0), [`put ${K}`])
  t.equal(r.stats.deleted, 1)
  t.same(items.get(K)!.value!.nodes.me!.b, [], 'an empty own portion')
  await tick(1000)
  t.same(calls.splice(0), [], 'the own portion tombstone verifies locally')
  await reg(4, 60, 'sip:alice@192.0.2.9')
  t.same(calls.splice(0), [`put ${K}`], 'after a portion tombstone the item is still this node\'s alone: blind refresh')
  await r.stop()
})

t.test('settled(aor) is resolved by the publish in flight that read the AOR after its last change, whatever other AORs changed since', async t => {
  const { clock, location, r, reg, tick, calls } = await setupReplica()
  const K = aorKey(ALICE)
  await reg(1)
  await tick(5000)
  calls.splice(0)
  // a blind refresh reads usrloc synchronously and is in flight (its put not answered yet) ...
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 2 })
  // ... when another AOR changes (the global change counter moves on) before the REGISTER asks to be acknowledged
  location.applyRegister('sip:bob@example.org', { contacts: [{ contact: 'sip:bob@192.0.2.2', expires: 60, node: 'me' }], callId: 'b1', cseq: 1 })
  let ok: boolean | undefined
  void r.settled(ALICE, { timeoutMs: 2000 }).then(v => { ok = v })
  await flush()
  t.equal(ok, true, 'acknowledged by the write in flight, not after the 2 s timeout')
  t.same(calls.filter(c => c.includes(K)), [`put ${K}`], 'one write of alice')
  // a change made after the in-flight publish read usrloc still waits for the next publish
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 3 })
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 90, node: 'me' }], callId: 'c1', cseq: 4 })
  ok = undefined
  void r.settled(ALICE, { timeoutMs: 2000 }).then(v => { ok = v })
  await flush()
  t.equal(ok, true)
  t.match(JSON.stringify(calls), /put aor\|sip:alice@example.org.*put aor\|sip:alice@example.org/, 'written again with the latest change')
  clock.advance(1); await flush()
  await r.stop()
})

t.test('a concurrent write by another node: the verification goes to the quorum and repairs; the next refresh reads the quorum', async t => {
  const { r, reg, tick, calls, items, write } = await setupReplica()
  const K = aorKey(ALICE)
  await reg(1)
  calls.splice(0)
  // n3 read before our write landed and overwrote it with its own portion only (the lost-race case)
  write(K, { v: 1, nodes: { n3: { uri: 'sip:10.0.0.3', v: [T0, 0], b: [binding({ contact: 'sip:alice@198.51.100.3', node: 'n3' })] } } }, 'n3')
  await tick(1000)
  t.same(calls.splice(0), [`get ${K}`, `get ${K}`, `put ${K}`], 'own replica shows another writer: quorum re-read, repair (read-modify-write)')
  t.equal(r.stats.repairs, 1)
  t.same(Object.keys(items.get(K)!.value!.nodes).sort(), ['me', 'n3'], 'both portions')
  await tick(1000)
  t.same(calls.splice(0), [`get ${K}`], 'two nodes\' portions: the verification stays a quorum read')
  await reg(2, 90)
  t.same(calls.splice(0), [`get ${K}`, `put ${K}`], 'another node has a portion: no blind refresh')
  t.equal(r.stats.localReads, 0)
  t.same(Object.keys(items.get(K)!.value!.nodes).sort(), ['me', 'n3'], 'n3 kept')
  await r.stop()
})

t.test('the own replica is not trusted: when not an owner, for items of a previous run, older than trustLocalFor, or when disabled', async t => {
  {
    const { r, reg, tick, calls, setOwner } = await setupReplica()
    setOwner(false)
    await reg(1); await tick(1000); await reg(2, 90)
    t.same(calls.splice(0), [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`, `get ${aorKey(ALICE)}`, `get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`], 'not an owner: quorum everywhere')
    t.equal(r.stats.localReads + r.stats.localVerifies, 0)
    await r.stop()
  }
  {
    const { r, reg, calls, write } = await setupReplica()
    // an item this node wrote before a restart (version older than start()): someone may have written since
    write(aorKey(ALICE), { v: 1, nodes: { me: { uri: 'sip:10.0.0.1', v: [T0 - 5000, 0], b: [binding({ node: 'me' })] } } }, 'me', T0 - 5000)
    await reg(1)
    t.same(calls.splice(0), [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`], 'own item from before start(): quorum read')
    await r.stop()
  }
  {
    const { r, reg, tick, calls } = await setupReplica({ trustLocalFor: 10_000 })
    await reg(1); await tick(1000); calls.splice(0)
    await tick(20_000)
    await reg(2, 90)
    t.same(calls.splice(0), [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`], 'own item older than trustLocalFor: quorum read')
    await r.stop()
  }
  {
    const { r, reg, tick, calls } = await setupReplica({ trustLocalFor: 0 })
    await reg(1); await tick(1000); await reg(2, 90)
    t.same(calls.splice(0), [`get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`, `get ${aorKey(ALICE)}`, `get ${aorKey(ALICE)}`, `put ${aorKey(ALICE)}`], 'disabled: the previous behaviour')
    await r.stop()
  }
  t.throws(() => new LocationReplicator({ clock: new SimClock(T0), logger: new MemoryLogger(), location: new LocationStore({ clock: new SimClock(T0) }), store: {} as ReplicatedStore<ReplicaValue>, self: 'me', sipUri: 'sip:x', trustLocalFor: -1 }), RangeError)
})

t.test('republish after a restart: AORs whose item already holds exactly the own portion are not rewritten', async t => {
  const { clock, location, r, items, calls, store } = await setup({ n9: 'dead' })
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  location.applyRegister('sip:bob@example.org', { contacts: [{ contact: 'sip:bob@192.0.2.2', expires: 60, node: 'me' }], callId: 'c2', cseq: 1 })
  await r.settled(); await flush()
  await r.stop()
  // a dead node's portion in bob's item: kept (the replicas would merge it back; it goes when it expires)
  items.get(aorKey('sip:bob@example.org'))!.nodes.n9 = { uri: 'sip:10.0.0.9', v: [T0, 0], b: [binding({ aor: 'sip:bob@example.org', contact: 'sip:bob@198.51.100.9' })] }
  calls.splice(0)
  const r2 = new LocationReplicator({ clock, logger: new MemoryLogger(), location, store, self: 'me', sipUri: 'sip:10.0.0.1:5060;transport=tcp', memberStatus: id => id === 'n9' ? 'dead' : 'alive', verifyDelay: 0 })
  r2.start()
  await r2.settled(); await flush()
  t.same(calls.filter(c => c.startsWith('put aor|')), [], 'alice and bob unchanged: read only')
  t.equal(r2.stats.unchanged, 2)
  t.same(Object.keys(items.get(aorKey('sip:bob@example.org'))!.nodes).sort(), ['me', 'n9'])
  // a changed binding is written again
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 120, node: 'me' }], callId: 'c1', cseq: 2 })
  await r2.settled(); await flush()
  t.equal(calls.filter(c => c === `put ${aorKey(ALICE)} ttl=120000`).length, 1)
  await r2.stop()
})

t.test('a write that failed its quorum (applied only to the own replica) is retried in full, never taken as done', async t => {
  const { r, reg, tick, calls, setFailPuts } = await setupReplica()
  const K = aorKey(ALICE)
  await reg(1); await tick(1000)
  calls.splice(0)
  setFailPuts(true)
  await reg(2, 120)
  t.same(calls.splice(0), [`put ${K}`], 'blind refresh, failed after the local apply')
  setFailPuts(false)
  await tick(100)
  t.same(calls.splice(0), [`get ${K}`, `put ${K}`], 'the retry reads the quorum and writes again (not "unchanged")')
  t.equal(r.stats.unchanged, 0)
  t.equal(r.stats.publishErrors, 1)
  await tick(1000)
  await reg(3, 180)
  t.same(calls.splice(0), [`put ${K}`], 'after a successful write the shortcut is back')
  await r.stop()
})

t.test('settled(aor): true once the AOR state as of the call is written, false on failure, timeout, abort or stop', async t => {
  const { clock, location, r, items, calls, setFail } = await setup()
  t.equal(await r.settled(ALICE, { timeoutMs: 1000 }), true, 'nothing pending: settled at once')

  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 1 })
  let ok: boolean | undefined
  void r.settled(ALICE, { timeoutMs: 1000 }).then(v => { ok = v })
  t.equal(ok, undefined, 'not before the publish')
  await flush()
  t.equal(ok, true, 'resolved by the publish')
  t.ok(items.has(aorKey(ALICE)), 'and the item is written')

  // the write fails: retried (100, 200 ms), then given up → false before the timeout
  setFail(new QuorumError(0, 2, 'write'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 2 })
  ok = undefined
  void r.settled(ALICE, { timeoutMs: 10_000 }).then(v => { ok = v })
  await flush()
  t.equal(ok, undefined, 'waiting while retries are pending')
  clock.advance(100); await flush()
  t.equal(ok, undefined)
  clock.advance(200); await flush()
  t.equal(ok, false, 'given up after maxRetries')
  t.equal(r.stats.abandoned, 1)

  // the last write was given up: settled() publishes again (and succeeds now)
  setFail()
  calls.length = 0
  t.equal(await (async () => { const p = r.settled(ALICE, { timeoutMs: 1000 }); await flush(); return await p })(), true, 'republished on demand')
  t.ok(calls.some(c => c.startsWith(`put ${aorKey(ALICE)}`)), 'by a new put')
  t.match(JSON.stringify(items.get(aorKey(ALICE))), /"cseq":2/, 'carrying the latest state')

  // timeout
  setFail(new QuorumError(0, 2, 'write'))
  location.applyRegister(ALICE, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 60, node: 'me' }], callId: 'c1', cseq: 3 })
  ok = undefined
  void r.settled(ALICE, { timeoutMs: 50 }).then(v => { ok = v })
  await flush()
  clock.advance(49); await flush()
  t.equal(ok, undefined, 'not yet')
  clock.advance(1); await flush()
  t.equal(ok, false, 'false at the timeout')

  // abort, and an already aborted signal
  const ac = new AbortController()
  ok = undefined
  void r.settled(ALICE, { timeoutMs: 10_000, signal: ac.signal }).then(v => { ok = v })
  await flush()
  ac.abort(); await flush()
  t.equal(ok, false, 'false on abort')
  t.equal(await r.settled(ALICE, { timeoutMs: 10_000, signal: ac.signal }), false, 'aborted signal: false at once')

  // stop resolves the waiters
  ok = undefined
  void r.settled(ALICE, { timeoutMs: 10_000 }).then(v => { ok = v })
  await flush()
  await r.stop(); await flush()
  t.equal(ok, false, 'false on stop')
  t.equal(await r.settled(ALICE, { timeoutMs: 10 }), false, 'stopped: false')
})

t.test('settled(aor) deadlines: one timer serves waiters in deadline order; a shorter deadline after a longer one times out on time', async t => {
  const { clock, location, r, setFail } = await setup()
  setFail(new QuorumError(0, 2, 'write')) // retried 100 and 200 ms later, given up at 300 ms: every waiter below times out first
  const results = new Map<string, boolean>()
  const wait = (label: string, aor: string, ms: number): void => { void r.settled(aor, { timeoutMs: ms }).then(v => { results.set(label, v) }) }
  const reg = (aor: string, cseq: number): void => {
    location.applyRegister(aor, { contacts: [{ contact: `sip:x@192.0.2.${cseq}`, expires: 60, node: 'me' }], callId: `c-${aor}`, cseq })
  }
  const A = 'sip:a@example.org'; const B = 'sip:b@example.org'; const C = 'sip:c@example.org'
  reg(A, 1); reg(B, 1)
  wait('a', A, 150); wait('b', B, 150)
  await flush()
  clock.advance(20); await flush()
  reg(C, 1)
  wait('c', C, 150)
  wait('c-short', C, 30) // deadline before the queued ones: its own timer
  await flush()
  clock.advance(29); await flush()
  t.same([...results.keys()], [], 'nothing due yet')
  clock.advance(1); await flush()
  t.same([...results.entries()], [['c-short', false]], 'the short deadline, on time')
  clock.advance(99); await flush()
  t.same([...results.keys()].sort(), ['c-short'], 'a and b not before 150 ms')
  clock.advance(1); await flush()
  t.same([...results.keys()].sort(), ['a', 'b', 'c-short'], 'a and b at 150 ms')
  clock.advance(19); await flush()
  t.notOk(results.has('c'))
  clock.advance(1); await flush()
  t.equal(results.get('c'), false, 'c at 20 + 150 ms')
  t.ok([...results.values()].every(v => !v))
  await r.stop()
})
