import t from 'tap'
import { aorKey } from '../src/index.js'
import {
  addNode, cluster, converged, crash, fourNodes, phone, register, registerAndWait, request, requests, responses, run, send, settle, shutdown, until,
  type Cluster, type Phone
} from './overlay-helpers.js'

const BOB = 'sip:bob@example.org'
/** `OVERLAY_SEED=n` shifts every test's seed (seeds 0–19 pass). */
const SEED = Number(process.env.OVERLAY_SEED ?? 0)

/** Bob on TCP at node 1 behind NAT (his Contact is a private address nobody can reach), alice on UDP at node 4. */
async function bobAndAlice (c: Cluster): Promise<{ bob: Phone, alice: Phone }> {
  const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'tcp', '172.16.99.99')
  const alice = await phone(c, 'alice', '10.9.0.4', 'n4', 'udp')
  return { bob, alice }
}

t.test('a UA registered at node 1 over TCP is called from node 4: INVITE/180/200/ACK/BYE through node 1', async t => {
  const c = await fourNodes(1)
  t.teardown(() => shutdown(c))
  const { bob, alice } = await bobAndAlice(c)
  t.equal(await registerAndWait(c, bob), 200, 'bob registered at n1')
  await run(c, 200)
  const n1 = c.nodes.get('n1')!
  const n4 = c.nodes.get('n4')!
  const owners = n1.overlay!.store.owners(aorKey(BOB))
  t.equal(owners.length, 3, 'R = 3 owners')
  const holding = [...c.nodes.entries()].filter(([, n]) => n.overlay!.store.local(aorKey(BOB)) !== undefined).map(([id]) => id).sort()
  t.ok(holding.filter(id => owners.includes(id)).length >= 2, `the AOR item is on at least W = 2 owners (${holding.join()})`)
  t.equal(n4.location.lookup(BOB).length, 0, 'node 4 keeps no usrloc copy: the client is attached to node 1 only')
  const seen = await settle(c, n4.replication!.lookup(BOB))
  t.equal(seen.length, 1, 'node 4 finds bob in the overlay')
  t.equal(seen[0]!.node, 'n1', 'stamped with the attachment node')
  t.equal(n4.replication!.nodeRoute('n1'), 'sip:10.0.0.1:5060;transport=tcp', 'node 4 knows how to reach node 1')
  const everyone = [...c.nodes.entries()].every(([id, n]) => [...c.nodes.keys()].every(o => n.replication!.nodeRoute(o) === `sip:10.0.0.${o.slice(1)}:5060;transport=tcp` || o === id))
  t.ok(everyone, 'every node learnt every node\'s SIP URI from the node| records')

  const invite = request(alice, 'INVITE', BOB, BOB, [['contact', '<sip:alice@10.9.0.4:5060>'], ['content-type', 'application/sdp']])
  invite.body = Buffer.from('v=0\r\n')
  await send(alice, invite)
  await until(c, () => responses(alice, 'INVITE').some(r => r.status === 200), 5000, 5)
  await run(c, 50) // the 180 may still be in flight (UDP jitter can reorder it behind the 200)
  const inv = requests(bob, 'INVITE')
  t.equal(inv.length, 1, 'bob got the INVITE once')
  t.equal(inv[0]!.source.connectionId !== undefined, true, 'over his own TCP flow')
  t.equal(inv[0]!.source.address, '10.0.0.1', 'from node 1, his attachment node')
  t.equal(inv[0]!.msg.uri, 'sip:bob@172.16.99.99:5060;transport=tcp', 'Request-URI is his Contact (node 1 did the lookup)')
  t.equal(inv[0]!.msg.body.toString(), 'v=0\r\n')
  t.ok(inv[0]!.msg.getAll('via').length >= 3, 'via alice, node 4 and node 1')
  const codes = responses(alice, 'INVITE').map(r => r.status)
  t.ok(codes.includes(180) && codes.includes(200), `alice got 180 and 200 (${codes.join()})`)

  // ACK for the 2xx along the Record-Route set
  const ok = responses(alice, 'INVITE').find(r => r.status === 200)!
  const routes = ok.getAll('record-route').reverse()
  t.ok(routes.length >= 2, 'both nodes record-routed')
  const ack = request(alice, 'ACK', /<([^>]+)>/.exec(ok.get('contact')!)![1]!, BOB, routes.map(r => ['route', r] as [string, string]), ok.get('call-id'))
  ack.set('from', ok.get('from')!); ack.set('to', ok.get('to')!); ack.set('cseq', '1 ACK')
  await send(alice, ack)
  await until(c, () => requests(bob, 'ACK').length > 0, 3000, 5)
  t.equal(requests(bob, 'ACK').length, 1, 'bob got the ACK over his flow')

  // bob hangs up: BYE along the route set he saw in the INVITE
  const bye = request(bob, 'BYE', 'sip:alice@10.9.0.4:5060', 'sip:alice@example.org', inv[0]!.msg.getAll('record-route').map(r => ['route', r] as [string, string]), ok.get('call-id'))
  bye.set('from', ok.get('to')!); bye.set('to', ok.get('from')!)
  await send(bob, bye, { ...bob.proxy, connectionId: inv[0]!.source.connectionId })
  await until(c, () => responses(bob, 'BYE').length > 0, 3000, 5)
  t.equal(requests(alice, 'BYE').length, 1, 'alice got the BYE')
  t.equal(responses(bob, 'BYE')[0]?.status, 200, 'bob got 200 for the BYE')
})

t.test('MESSAGE from node 3 reaches a UA attached to node 2 through node 2', async t => {
  const c = await fourNodes(2)
  t.teardown(() => shutdown(c))
  const carol = await phone(c, 'carol', '10.9.0.5', 'n2', 'tcp', '192.168.7.7')
  const dave = await phone(c, 'dave', '10.9.0.6', 'n3', 'udp')
  t.equal(await registerAndWait(c, carol), 200)
  await run(c, 100)
  const msg = request(dave, 'MESSAGE', 'sip:carol@example.org', 'sip:carol@example.org', [['content-type', 'text/plain']])
  msg.body = Buffer.from('hello over the ring')
  await send(dave, msg)
  await until(c, () => responses(dave, 'MESSAGE').length > 0, 3000, 5)
  const got = requests(carol, 'MESSAGE')
  t.equal(got.length, 1, 'carol got the MESSAGE')
  t.equal(got[0]!.source.address, '10.0.0.2', 'from her attachment node')
  t.equal(got[0]!.msg.body.toString(), 'hello over the ring')
  t.equal(responses(dave, 'MESSAGE')[0]!.status, 200, 'dave got her 200')
  // an AOR nobody registered is still 404 through the overlay
  await send(dave, request(dave, 'MESSAGE', 'sip:nobody@example.org', 'sip:nobody@example.org'))
  await until(c, () => responses(dave, 'MESSAGE').length > 1, 3000, 5)
  t.equal(responses(dave, 'MESSAGE')[1]!.status, 404)
})


/** Ask `from` for `aor` and INVITE it from a fresh UA attached there; resolves with the callee's INVITE count delta. */
async function call (c: Cluster, caller: Phone, callee: Phone, aor: string): Promise<number> {
  const before = requests(callee, 'INVITE').length
  const n = responses(caller, 'INVITE').length
  await send(caller, request(caller, 'INVITE', aor, aor, [['contact', `<${caller.contact}>`]]))
  await until(c, () => responses(caller, 'INVITE').filter(r => r.status >= 200).length > responses(caller, 'INVITE').slice(0, n).filter(r => r.status >= 200).length, 8000, 5)
  return requests(callee, 'INVITE').length - before
}

t.test('crashing an owner of the AOR (not the attachment node) under REGISTER load loses no binding', async t => {
  const c = await fourNodes(3)
  t.teardown(() => shutdown(c))
  const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'tcp', '172.16.99.99')
  t.equal(await registerAndWait(c, bob), 200)
  const owners = c.nodes.get('n1')!.overlay!.store.owners(aorKey(BOB))
  const victim = owners.find(o => o !== 'n1')!
  const callerNode = ['n2', 'n3', 'n4'].find(n => n !== victim)!
  // 40 UAs attached to n1 and n2 (those that survive), refreshing all the time
  const uas: Phone[] = []
  for (let i = 0; i < 40; i++) {
    const at = i % 2 === 0 ? 'n1' : (victim === 'n2' ? 'n3' : 'n2')
    uas.push(await phone(c, `u${i}`, `10.8.${Math.floor(i / 200)}.${(i % 200) + 1}`, at, 'udp'))
  }
  for (const ua of uas) await send(ua, register(ua))
  await run(c, 200)
  let sent = 0
  for (let step = 0; step < 40; step++) {
    for (let k = 0; k < 8; k++) { const ua = uas[(step * 8 + k) % uas.length]!; await send(ua, register(ua)); sent++ }
    if (step === 10) await crash(c, victim)
    await run(c, 250)
  }
  t.ok(sent >= 320, `${sent} refreshes sent around the crash`)
  t.ok(await until(c, () => converged(c), 30_000) >= 0, 'the survivors agree on the view')
  await run(c, 2000)
  const ok = uas.every(ua => responses(ua, 'REGISTER').every(r => r.status === 200))
  t.ok(ok, 'every REGISTER was answered 200: ' + [...new Set(uas.flatMap(ua => responses(ua, 'REGISTER').map(r => `${r.status} ${r.reason}`)))].join())
  const lookFrom = c.nodes.get(callerNode)!
  let found = 0
  for (const ua of [bob, ...uas]) {
    const b = await settle(c, lookFrom.replication!.lookup(`sip:${ua.user}@example.org`))
    if (b.length === 1 && b[0]!.contact === ua.contact) found++
  }
  t.equal(found, 41, `every binding is found from ${callerNode}`)
  for (const ua of [bob, ...uas]) {
    const key = aorKey(`sip:${ua.user}@example.org`)
    const holders = [...c.nodes.values()].filter(n => n.overlay!.store.local(key) !== undefined).length
    if (holders !== 3) t.fail(`${key} is on ${holders} nodes, want 3 (re-replicated)`)
  }
  const alice = await phone(c, 'alice', '10.9.0.4', callerNode, 'udp')
  t.equal(await call(c, alice, bob, BOB), 1, `a call from ${callerNode} still reaches bob through n1`)
  t.equal(responses(alice, 'INVITE').find(r => r.status >= 200)?.status, 200)
})

t.test('a new node joins: items are handed off to it, lookups and calls through it still work', async t => {
  const c = await fourNodes(4)
  t.teardown(() => shutdown(c))
  const uas: Phone[] = []
  for (let i = 0; i < 30; i++) {
    const ua = await phone(c, `j${i}`, `10.7.0.${i + 1}`, `n${(i % 4) + 1}`, i % 3 === 0 ? 'tcp' : 'udp', `192.168.0.${i + 1}`)
    uas.push(ua)
    await send(ua, register(ua))
  }
  await run(c, 1000)
  t.ok(uas.every(ua => responses(ua, 'REGISTER')[0]?.status === 200), 'all registered')
  const n5 = await addNode(c, 'n5', ['n2'])
  t.ok(await until(c, () => converged(c), 30_000) >= 0, 'five nodes agree')
  await run(c, 3000)
  const n5keys = uas.map(ua => aorKey(`sip:${ua.user}@example.org`)).filter(k => n5.overlay!.store.owners(k).includes('n5'))
  t.ok(n5keys.length > 0, `n5 owns ${n5keys.length} of the 30 AORs`)
  t.ok(n5keys.every(k => n5.overlay!.store.local(k) !== undefined), 'n5 received them by handoff')
  for (const ua of uas) {
    const key = aorKey(`sip:${ua.user}@example.org`)
    const holders = [...c.nodes.entries()].filter(([, n]) => n.overlay!.store.local(key) !== undefined).map(([id]) => id).sort()
    const owners = n5.overlay!.store.owners(key).sort()
    if (holders.join() !== owners.join()) t.fail(`${key}: held by ${holders.join()}, owned by ${owners.join()}`)
  }
  let found = 0
  for (const ua of uas) {
    const b = await settle(c, n5.replication!.lookup(`sip:${ua.user}@example.org`))
    if (b.length === 1 && b[0]!.contact === ua.contact) found++
  }
  t.equal(found, 30, 'n5 finds every binding')
  t.ok([...c.nodes.values()].every(n => n.replication!.nodeRoute('n5') === 'sip:10.0.0.5:5060;transport=tcp'), 'every node learnt how to reach n5')
  const erin = await phone(c, 'erin', '10.9.0.9', 'n5', 'udp')
  for (const callee of [uas[0]!, uas[7]!]) {
    t.equal(await call(c, erin, callee, `sip:${callee.user}@example.org`), 1, `a call from n5 reaches ${callee.user} (attached to ${callee.proxy.address})`)
  }
})

t.test('unregister at node 1: nobody reaches the contact any more, even after a partition heals and anti-entropy runs', async t => {
  const c = await fourNodes(5)
  t.teardown(() => shutdown(c))
  const { bob, alice } = await bobAndAlice(c)
  t.equal(await registerAndWait(c, bob), 200)
  await run(c, 1000)
  t.equal(await call(c, alice, bob, BOB), 1, 'reachable while registered')
  const key = aorKey(BOB)
  const owners = c.nodes.get('n1')!.overlay!.store.owners(key)
  // one owner other than n1 is cut off from everybody while bob unregisters: it keeps the old item
  const cut = owners.find(o => o !== 'n1')!
  for (const other of c.nodes.keys()) if (other !== cut) c.hub.partition(cut, other)
  t.equal(await registerAndWait(c, bob, 0), 200, 'unregistered (Expires: 0)')
  await run(c, 500)
  t.equal(c.nodes.get(cut)!.overlay!.store.local(key)?.deleted, false, `${cut} still holds the stale item`)
  for (const other of c.nodes.keys()) if (other !== cut) c.hub.partition(cut, other, false)
  await until(c, () => converged(c), 30_000)
  await run(c, 20_000) // several anti-entropy rounds and SWIM suspicion/refutation
  for (const [id, n] of c.nodes) {
    // n1 removed its portion with a portion tombstone (signed empty portion), never by deleting the key
    const it = n.overlay!.store.local(key)
    const live = it === undefined || it.deleted ? [] : Object.values((it.value as { nodes: Record<string, { b: unknown[] }> }).nodes).flatMap(p => p.b)
    t.equal(live.length, 0, `${id} holds no binding for bob after anti-entropy`)
    const b = await settle(c, n.replication!.lookup(BOB))
    t.equal(b.length, 0, `${id} finds no binding for bob`)
  }
  const before = requests(bob, 'INVITE').length
  await send(alice, request(alice, 'INVITE', BOB, BOB, [['contact', `<${alice.contact}>`]]))
  await until(c, () => responses(alice, 'INVITE').filter(r => r.status >= 400).length > 0, 5000, 5)
  t.equal(responses(alice, 'INVITE').filter(r => r.status >= 400)[0]?.status, 404, 'INVITE → 404')
  t.equal(requests(bob, 'INVITE').length, before, 'bob got nothing')
})

t.test('one AOR registered from two devices at two nodes at once: both bindings survive, the call forks to both', async t => {
  const c = await fourNodes(6)
  t.teardown(() => shutdown(c))
  const desk = await phone(c, 'bob', '10.9.1.1', 'n1', 'tcp', '172.16.1.1')
  const mobile = await phone(c, 'bob', '10.9.1.3', 'n3', 'tcp', '172.16.3.3')
  mobile.callId = 'reg-bob-mobile'
  await Promise.all([send(desk, register(desk)), send(mobile, register(mobile))])
  await run(c, 3000)
  t.equal(responses(desk, 'REGISTER')[0]?.status, 200)
  t.equal(responses(mobile, 'REGISTER')[0]?.status, 200)
  const alice = await phone(c, 'alice', '10.9.0.4', 'n4', 'udp')
  const b = await settle(c, c.nodes.get('n4')!.replication!.lookup(BOB))
  t.same(b.map(x => x.node).sort(), ['n1', 'n3'], 'n4 sees both attachment nodes')
  const r1 = c.nodes.get('n1')!.replication!.stats; const r3 = c.nodes.get('n3')!.replication!.stats
  // the replicas merge the AOR item portion by portion: the race loses nothing, no repair is needed
  t.equal(r1.repairs + r3.repairs, 0, `the two writes raced and both portions survived (repairs n1=${r1.repairs} n3=${r3.repairs})`)
  t.ok([...c.nodes.values()].some(n => n.replication!.stats.merges > 0), 'the replicas merged the two writes')
  await send(alice, request(alice, 'INVITE', BOB, BOB, [['contact', `<${alice.contact}>`]]))
  await until(c, () => requests(desk, 'INVITE').length > 0 && requests(mobile, 'INVITE').length > 0, 5000, 5)
  t.equal(requests(desk, 'INVITE').length, 1, 'the desk phone rings (via n1)')
  t.equal(requests(mobile, 'INVITE').length, 1, 'the mobile rings (via n3)')
})

t.test('a node whose seeds are unreachable serves alone and joins once a seed is up', async t => {
  const c = cluster(7 + SEED * 100)
  t.teardown(() => shutdown(c))
  const n2 = await addNode(c, 'n2', ['n1']) // n1 does not exist yet
  t.equal(n2.status().overlay!.joined, false, 'not joined')
  t.equal(n2.status().overlay!.members, 1)
  const carol = await phone(c, 'carol', '10.9.0.5', 'n2', 'udp')
  t.equal(await registerAndWait(c, carol), 200, 'still a registrar on its own')
  await addNode(c, 'n1')
  t.ok(await until(c, () => converged(c), 20_000) >= 0, 'joined on a retry (every 5 s)')
  t.equal(n2.status().overlay!.joined, true)
  await run(c, 1000)
  const b = await settle(c, c.nodes.get('n1')!.replication!.lookup('sip:carol@example.org'))
  t.equal(b.length, 1, 'what it registered alone is found from the other node')
  t.equal(b[0]!.node, 'n2')
})

/** A node that owns `aor`'s item (its own replica can stand in for the quorum pre-read) and one that does not. */
function ownerAndOther (c: Cluster, aor: string): { owner: string, other: string } {
  const owners = c.nodes.get('n1')!.overlay!.store.owners(aorKey(aor))
  const owner = owners[0]!
  const other = [...c.nodes.keys()].find(id => id !== owner && id !== 'n4') ?? [...c.nodes.keys()].find(id => id !== owner)!
  return { owner, other }
}

t.test('a refresh at an owner node skips the quorum pre-read and the quorum verification; un-REGISTER still deletes everywhere', async t => {
  const c = await fourNodes(8)
  t.teardown(() => shutdown(c))
  const { owner } = ownerAndOther(c, BOB)
  const viewer = [...c.nodes.keys()].find(id => id !== owner)!
  const bob = await phone(c, 'bob', '10.9.2.2', owner, 'tcp', '172.16.2.2')
  const r = c.nodes.get(owner)!.replication!
  t.equal(await registerAndWait(c, bob), 200)
  await run(c, 2000)
  t.equal(r.stats.localReads, 0, 'a new AOR is not read from the own replica')
  t.equal(r.stats.blindWrites, 1, 'a new AOR at an owner holding nothing of it: written without the quorum pre-read')
  t.equal(r.stats.localVerifies, 1, 'written alone at an owner: verified against the own replica')
  const before = c.hub.stats.requests
  t.equal(await registerAndWait(c, bob, 900), 200, 'refresh')
  await until(c, () => r.pending === 0, 2000, 5)
  await run(c, 1500)
  t.equal(r.stats.localReads, 1, 'the refresh used the own replica')
  t.equal(r.stats.published, 2)
  const b = await settle(c, c.nodes.get(viewer)!.replication!.lookup(BOB))
  t.equal(b.length, 1)
  t.ok(b[0]!.expires > c.clock.now() + 850_000, 'the other nodes see the extended expiry')
  t.ok(c.hub.stats.requests - before < 40, `few overlay requests for the refresh (${c.hub.stats.requests - before}, SWIM and the lookup included)`)
  t.equal(await registerAndWait(c, bob, 0), 200, 'un-REGISTER')
  await run(c, 2000)
  for (const id of c.nodes.keys()) {
    const got = await settle(c, c.nodes.get(id)!.replication!.lookup(BOB))
    t.equal(got.length, 0, `${id} finds no binding for bob`)
  }
  t.equal(r.stats.deleted, 1, 'a tombstone was written')
})

t.test('a new AOR written blind at an owner whose replica missed another node\'s portion: that portion survives', async t => {
  const c = await fourNodes(10 + SEED)
  t.teardown(() => shutdown(c))
  const { owner } = ownerAndOther(c, BOB)
  const key = aorKey(BOB)
  const other = [...c.nodes.keys()].find(id => id !== owner)!
  const desk = await phone(c, 'bob', '10.9.4.1', owner, 'tcp', '172.16.4.1')
  const mobile = await phone(c, 'bob', '10.9.4.3', other, 'tcp', '172.16.4.3')
  // the owner is cut off while the mobile registers at another node: its replica never sees that portion
  for (const id of c.nodes.keys()) if (id !== owner) c.hub.partition(owner, id)
  t.equal(await registerAndWait(c, mobile), 200, 'mobile registered (W = 2 without the cut owner)')
  for (const id of c.nodes.keys()) if (id !== owner) c.hub.partition(owner, id, false)
  t.equal(c.nodes.get(owner)!.overlay!.store.local(key), undefined, `${owner} holds nothing of bob`)
  const ro = c.nodes.get(owner)!.replication!.stats
  t.equal(await registerAndWait(c, desk), 200, 'desk registered at the owner')
  t.equal(ro.blindWrites, 1, 'written without the quorum pre-read')
  await run(c, 100) // before any verification (1 s) could repair anything
  for (const id of c.nodes.get(owner)!.overlay!.store.owners(key)) {
    if (id === owner) continue
    const it = c.nodes.get(id)!.overlay!.store.local(key)
    t.same(Object.keys((it?.value as { nodes: Record<string, unknown> } | undefined)?.nodes ?? {}).sort(), [owner, other].sort(), `${id}'s replica merged both portions`)
  }
  t.equal(c.nodes.get(other)!.replication!.stats.repairs, 0, 'no repair was needed')
  await run(c, 1500)
  for (const id of c.nodes.keys()) {
    const b = await settle(c, c.nodes.get(id)!.replication!.lookup(BOB))
    t.same(b.map(x => x.node).sort(), [owner, other].sort(), `${id} sees both attachment nodes`)
  }
})

t.test('a blind refresh racing a second device at another node: both bindings survive', async t => {
  const c = await fourNodes(9)
  t.teardown(() => shutdown(c))
  const { owner, other } = ownerAndOther(c, BOB)
  const desk = await phone(c, 'bob', '10.9.3.1', owner, 'tcp', '172.16.3.1')
  const mobile = await phone(c, 'bob', '10.9.3.3', other, 'tcp', '172.16.3.3')
  mobile.callId = 'reg-bob-mobile-2'
  t.equal(await registerAndWait(c, desk), 200)
  await run(c, 2000)
  await Promise.all([send(desk, register(desk, 900)), send(mobile, register(mobile))])
  await run(c, 3000)
  t.equal(responses(desk, 'REGISTER')[1]?.status, 200)
  t.equal(responses(mobile, 'REGISTER')[0]?.status, 200)
  const ro = c.nodes.get(owner)!.replication!.stats
  t.equal(ro.localReads, 1, 'the desk refresh was written without the quorum pre-read')
  const rx = c.nodes.get(other)!.replication!.stats
  t.comment(`repairs ${owner}=${ro.repairs} ${other}=${rx.repairs}`)
  for (const id of c.nodes.keys()) {
    const b = await settle(c, c.nodes.get(id)!.replication!.lookup(BOB))
    t.same(b.map(x => x.node).sort(), [owner, other].sort(), `${id} sees both attachment nodes`)
  }
})
