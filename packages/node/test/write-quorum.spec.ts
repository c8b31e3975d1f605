/**
 * Requirement "a write acknowledged to the client is never lost while fewer than R replicas fail at once":
 * a REGISTER that changes bindings is answered 200 only once the AOR's item reached the write quorum
 * (W = 2 of R = 3 owners); without the quorum in `ackTimeout` (2 s) the answer is 503 + Retry-After.
 * The overlay is slow here (20–30 ms per hop, SIP 2 ms), so a 200 sent before the quorum write would
 * arrive long before the item is on the owners.
 */
import t from 'tap'
import { SimClock, SeededRng, SimNetwork, MemoryLogger } from '@sipring/testkit'
import { SimOverlayHub, type PeerId } from '@sipring/overlay'
import { aorKey } from '../src/index.js'
import {
  addNode, converged, crash, phone, register, responses, run, send, settle, shutdown, until, type Cluster
} from './overlay-helpers.js'

const SEED = Number(process.env.OVERLAY_SEED ?? 0)
const AOR = 'sip:alice@example.org'
const KEY = aorKey(AOR)

async function fourNodes (seed: number): Promise<Cluster> {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(seed + SEED * 100)
  const c: Cluster = {
    clock,
    rng,
    net: new SimNetwork({ clock, rng: rng.fork('sip'), latencyMs: 2, jitterMs: 1 }),
    hub: new SimOverlayHub({ clock, rng: rng.fork('overlay'), latency: { min: 20, max: 30 } }),
    logger: new MemoryLogger(),
    nodes: new Map()
  }
  await addNode(c, 'n1')
  for (const id of ['n2', 'n3', 'n4']) await addNode(c, id, ['n1'])
  if (await until(c, () => converged(c), 30_000) < 0) throw new Error('cluster did not converge')
  return c
}

/** Owners of alice's item whose own replica holds her contact. */
function holders (c: Cluster, contact: string): PeerId[] {
  const owners = [...c.nodes.values()][0]!.overlay!.store.owners(KEY)
  return owners.filter(id => {
    const it = c.nodes.get(id)?.overlay!.store.local(KEY)
    return it !== undefined && !it.deleted && JSON.stringify(it.value).includes(contact)
  })
}

/** The attachment node: one that is not an owner of alice's item (its own replica never counts). */
function attachment (c: Cluster): PeerId {
  const owners = c.nodes.get('n1')!.overlay!.store.owners(KEY)
  return [...c.nodes.keys()].find(id => !owners.includes(id))!
}

t.test('the 200 OK to a REGISTER is sent only once the binding is on >= 2 owners', async t => {
  const c = await fourNodes(1)
  t.teardown(() => shutdown(c))
  const a = attachment(c)
  const alice = await phone(c, 'alice', '10.9.0.1', a, 'udp')
  const atAnswer: Array<{ status: number, holders: PeerId[] }> = []
  alice.t.on('message', () => {
    const r = responses(alice, 'REGISTER').at(-1)
    if (r !== undefined && atAnswer.length < responses(alice, 'REGISTER').length) atAnswer.push({ status: r.status, holders: holders(c, alice.contact) })
  })
  const t0 = c.clock.now()
  await send(alice, register(alice))
  t.ok(await until(c, () => atAnswer.length > 0, 5000, 1) >= 0, 'answered')
  t.equal(atAnswer[0]!.status, 200, '200 OK')
  t.ok(atAnswer[0]!.holders.length >= 2, `item on ${atAnswer[0]!.holders.length} owners when the 200 arrives`)
  t.ok(c.clock.now() - t0 >= 40, 'the answer waited for the overlay round trips')

  // a refresh changes the expiry: it too waits for the quorum write of the new state
  await run(c, 1000)
  const before = atAnswer.length
  await send(alice, register(alice, 300))
  t.ok(await until(c, () => atAnswer.length > before, 5000, 1) >= 0, 'refresh answered')
  t.equal(atAnswer[before]!.status, 200)
  const expOnOwners = c.nodes.get(atAnswer[before]!.holders[0]!)!.overlay!.store.local(KEY)
  t.match(JSON.stringify(expOnOwners?.value), /"expires":/, 'item readable')
  t.ok(atAnswer[before]!.holders.length >= 2, 'refreshed item on >= 2 owners at the 200')

  // a query REGISTER (no Contact) needs no overlay write
  const q = register(alice)
  q.remove('contact')
  const n = responses(alice, 'REGISTER').length
  const t1 = c.clock.now()
  await send(alice, q)
  t.ok(await until(c, () => responses(alice, 'REGISTER').length > n, 1000, 1) >= 0)
  t.equal(responses(alice, 'REGISTER')[n]!.status, 200)
  t.ok(c.clock.now() - t1 < 20, 'query answered without waiting for the overlay')
})

t.test('2 of the 3 owners partitioned away: 503 + Retry-After after the timeout, binding kept, published after the heal', async t => {
  const c = await fourNodes(2)
  t.teardown(() => shutdown(c))
  const a = attachment(c)
  const owners = c.nodes.get(a)!.overlay!.store.owners(KEY)
  const cut = owners.slice(0, 2)
  for (const o of cut) c.hub.partition(a, o)
  const alice = await phone(c, 'alice', '10.9.0.1', a, 'udp')
  const t0 = c.clock.now()
  await send(alice, register(alice))
  t.ok(await until(c, () => responses(alice, 'REGISTER').length > 0, 10_000, 5) >= 0, 'answered')
  const res = responses(alice, 'REGISTER')[0]!
  const waited = c.clock.now() - t0
  t.equal(res.status, 503, '503')
  t.equal(res.reason, 'Overlay write quorum not reached')
  t.equal(res.get('retry-after'), '5', 'Retry-After: 5')
  t.ok(waited >= 2000 && waited < 2200, `answered after the 2 s timeout (${waited} ms)`)
  t.equal(holders(c, alice.contact).length < 2, true, 'the item did not reach the quorum')
  t.equal(c.nodes.get(a)!.location.lookup(AOR).length, 1, 'the local binding stays')

  for (const o of cut) c.hub.partition(a, o, false)
  t.ok(await until(c, () => holders(c, alice.contact).length >= 2, 30_000) >= 0, 'the replicator keeps retrying: published after the heal')
  const n = responses(alice, 'REGISTER').length
  await send(alice, register(alice))
  t.ok(await until(c, () => responses(alice, 'REGISTER').length > n, 5000, 5) >= 0)
  t.equal(responses(alice, 'REGISTER')[n]!.status, 200, 'the retry gets 200')
})

t.test('the attachment node crashes right after the 200: the binding is found via another node', async t => {
  const c = await fourNodes(3)
  t.teardown(() => shutdown(c))
  const a = attachment(c)
  const alice = await phone(c, 'alice', '10.9.0.1', a, 'udp')
  let crashedAt = -1
  alice.t.on('message', () => {
    if (crashedAt < 0 && responses(alice, 'REGISTER').some(r => r.status === 200)) { c.hub.crash(a); crashedAt = c.clock.now() }
  })
  await send(alice, register(alice))
  t.ok(await until(c, () => crashedAt >= 0, 5000, 1) >= 0, '200 received, attachment node crashed at once')
  const other = [...c.nodes.values()].find(n => n.nodeId !== a)!
  const found = await settle(c, other.replication!.lookup(AOR))
  t.equal(found.length, 1, `${other.nodeId} finds alice`)
  t.equal(found[0]?.contact, alice.contact)
  t.equal(found[0]?.node, a, 'attached to the crashed node')
  await crash(c, a)
  t.ok(await until(c, () => other.overlay!.membership.get(a)?.status === 'dead', 60_000) >= 0, `${a} declared dead`)
  const later = await settle(c, other.replication!.lookup(AOR))
  t.equal(later.length, 1, 'still found once the node is dead (plain UDP client, reached directly)')
})
