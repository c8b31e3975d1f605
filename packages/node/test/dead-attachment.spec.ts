/**
 * Requirement "killing one super node loses no registration": when a client's attachment node dies, a
 * plain UDP client (no RFC 5626 flow, Contact on its source address) is still reached directly by any
 * node; TCP clients (their connection died with the node) and UDP clients behind NAT (their mapping
 * was opened towards the dead node) are not tried.
 */
import t from 'tap'
import type { Binding } from '@sipring/interface'
import { directlyReachable } from '../src/index.js'
import {
  crash, fourNodes, phone, registerAndWait, reply, request, requests, responses, run, send, settle, shutdown, until,
  type Cluster, type Phone
} from './overlay-helpers.js'

const N3 = { protocol: 'udp' as const, address: '10.0.0.3', port: 5060 }

/** INVITE `aor` from `caller`; resolves with the final status (0 = none in time). */
async function invite (c: Cluster, caller: Phone, aor: string): Promise<number> {
  const n = responses(caller, 'INVITE').filter(r => r.status >= 200).length
  await send(caller, request(caller, 'INVITE', aor, aor, [['contact', `<${caller.contact}>`]]))
  await until(c, () => responses(caller, 'INVITE').filter(r => r.status >= 200).length > n, 10_000, 5)
  return responses(caller, 'INVITE').filter(r => r.status >= 200)[n]?.status ?? 0
}

t.test('directlyReachable: plain UDP with a Contact valid from anywhere only', async t => {
  const b: Binding = { aor: 'sip:a@example.org', contact: 'sip:a@10.9.0.1', expires: 1, q: 1, callId: 'c', cseq: 1, path: [], updated: 0 }
  const udp = { protocol: 'udp' as const, address: '10.9.0.1', port: 5062 }
  t.equal(directlyReachable(b), true, 'no received')
  t.equal(directlyReachable({ ...b, received: udp }), true, 'UDP, Contact on the source IP (any port)')
  t.equal(directlyReachable({ ...b, contact: 'sip:a@[2001:db8::1]', received: { ...udp, address: '2001:db8:0::1' } }), true, 'IPv6 compared as addresses')
  t.equal(directlyReachable({ ...b, contact: 'sip:a@192.168.1.9', received: udp }), false, 'UDP behind NAT')
  t.equal(directlyReachable({ ...b, contact: 'sip:a@phone.example', received: udp }), false, 'host name Contact with a received address')
  t.equal(directlyReachable({ ...b, contact: 'sip:a@192.168.1.9', path: ['<sip:edge.example;lr>'], received: udp }), true, 'behind an edge proxy (Path)')
  t.equal(directlyReachable({ ...b, contact: 'not a uri', received: udp }), false, 'unparsable Contact')
  t.equal(directlyReachable({ ...b, received: { ...udp, protocol: 'tcp', connectionId: 'x' } }), false, 'TCP connection')
  t.equal(directlyReachable({ ...b, received: { ...udp, protocol: 'ws' } }), false, 'WebSocket')
  t.equal(directlyReachable({ ...b, received: { ...udp, connectionId: 'x' } }), false, 'UDP with a connection id')
  t.equal(directlyReachable({ ...b, instance: '<urn:uuid:1>', regId: 1, received: udp }), false, 'RFC 5626 flow')
})

t.test('attachment node dies: its UDP clients are called directly from another node, its TCP and NATed clients are not tried', async t => {
  const c = await fourNodes(7)
  t.teardown(() => shutdown(c))
  const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'udp')
  // behind NAT: Contact on a private address, reachable only at the REGISTER's source address
  const erin = await phone(c, 'erin', '10.9.0.3', 'n1', 'udp', '172.16.5.5')
  const carol = await phone(c, 'carol', '10.9.0.5', 'n1', 'tcp', '192.168.7.7')
  const alice = await phone(c, 'alice', '10.9.0.4', 'n3', 'udp')
  for (const p of [bob, erin, carol]) t.equal(await registerAndWait(c, p), 200, `${p.user} registered at n1`)
  await run(c, 1000)

  await crash(c, 'n1')
  const n3 = c.nodes.get('n3')!
  t.ok(await until(c, () => n3.overlay!.membership.get('n1')?.status === 'dead', 60_000) >= 0, 'n3 declares n1 dead')
  t.equal(n3.replication!.liveRoute('n1'), undefined, 'no route to the dead node')
  t.equal(n3.replication!.nodeRoute('n1'), 'sip:10.0.0.1:5060;transport=tcp', 'its SIP URI is still known (admin view)')
  const seen = await settle(c, n3.replication!.lookup('sip:bob@example.org'))
  t.equal(seen.length, 1, 'n3 still finds bob in the overlay')

  // bob (UDP, Contact on his source address): INVITE/180/200/ACK/BYE, straight from n3
  bob.auto = false // rings first, answers later (UDP jitter must not reorder the 180 behind the 200)
  await send(alice, request(alice, 'INVITE', 'sip:bob@example.org', 'sip:bob@example.org', [['contact', `<${alice.contact}>`]]))
  t.ok(await until(c, () => requests(bob, 'INVITE').length > 0, 10_000, 5) >= 0, 'bob is called')
  const got = requests(bob, 'INVITE')[0]!
  await send(bob, reply(bob, got.msg, 180, 'Ringing'), got.source)
  await run(c, 100)
  await send(bob, reply(bob, got.msg, 200, 'OK'), got.source)
  await until(c, () => responses(alice, 'INVITE').some(r => r.status >= 200), 5000, 5)
  t.equal(responses(alice, 'INVITE').find(r => r.status >= 200)?.status, 200, 'alice gets 200 from bob')
  await run(c, 50)
  const inv = requests(bob, 'INVITE')
  t.equal(inv.length, 1, 'bob got the INVITE once')
  t.equal(inv[0]!.source.address, '10.0.0.3', 'from n3 directly')
  t.equal(inv[0]!.msg.uri, 'sip:bob@10.9.0.2:5060', 'Request-URI is his Contact')
  const codes = responses(alice, 'INVITE').map(r => r.status)
  t.ok(codes.includes(180) && codes.includes(200), `alice got 180 and 200 (${codes.join()})`)
  const ok = responses(alice, 'INVITE').find(r => r.status === 200)!
  const routes = ok.getAll('record-route').reverse()
  const ack = request(alice, 'ACK', /<([^>]+)>/.exec(ok.get('contact')!)![1]!, 'sip:bob@example.org', routes.map(r => ['route', r] as [string, string]), ok.get('call-id'))
  ack.set('from', ok.get('from')!); ack.set('to', ok.get('to')!); ack.set('cseq', `${ok.get('cseq')!.split(' ')[0]} ACK`)
  await send(alice, ack, routes.length > 0 ? N3 : { protocol: 'udp', address: '10.9.0.2', port: 5060 })
  await until(c, () => requests(bob, 'ACK').length > 0, 3000, 5)
  t.equal(requests(bob, 'ACK').length, 1, 'bob got the ACK')
  const bye = request(bob, 'BYE', 'sip:alice@10.9.0.4:5060', 'sip:alice@example.org', inv[0]!.msg.getAll('record-route').map(r => ['route', r] as [string, string]), ok.get('call-id'))
  bye.set('from', ok.get('to')!); bye.set('to', ok.get('from')!)
  await send(bob, bye, N3) // his own node is gone: n3 record-routed
  await until(c, () => responses(bob, 'BYE').length > 0, 3000, 5)
  t.equal(requests(alice, 'BYE').length, 1, 'alice got the BYE')
  t.equal(responses(bob, 'BYE')[0]?.status, 200, 'bob got 200 for the BYE')

  // erin (UDP behind NAT): her mapping was opened towards n1, her Contact is private: not tried
  t.equal(await invite(c, alice, 'sip:erin@example.org'), 404, 'INVITE to erin → 404')
  t.equal(requests(erin, 'INVITE').length, 0, 'erin was not tried')

  // carol (TCP: her connection died with n1): not tried
  const status = await invite(c, alice, 'sip:carol@example.org')
  t.ok(status === 404 || status === 480, `INVITE to carol → ${status} (404/480)`)
  t.equal(requests(carol, 'INVITE').length, 0, 'carol was not tried')
})
