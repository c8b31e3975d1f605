import t from 'tap'
import { parseNameAddr, parseVia } from '@sipring/sip'
import { BRANCH_MARK, loopHash } from '@sipring/proxy'
import { ALICE_SRC, binding, FakeStack, FakeTx, invite, PROXY_TCP, PROXY_UDP, setup } from './fakes.js'

const BOB = 'sip:bob@example.org'

function vias (m: { getAll: (n: string) => string[] }): string[] { return m.getAll('via') }

t.test('INVITE to a registered AOR: forwarded per §16.6, responses relayed with our Via removed', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.20:5062')])
  const req = invite()
  const tx = new FakeTx(ALICE_SRC, req)
  await proxy.handleRequest(req, tx)
  t.equal(stack.sent.length, 1)
  const out = stack.sent[0]!
  t.equal(out.req.uri, 'sip:bob@192.0.2.20:5062', 'Request-URI = contact')
  t.same(out.dest, { protocol: 'udp', address: '192.0.2.20', port: 5062 })
  t.equal(out.req.get('max-forwards'), '69')
  t.equal(vias(out.req).length, 2)
  t.ok(out.branch.startsWith(BRANCH_MARK + loopHash(req, vias(req)[0]) + '.'), 'branch = loop hash + suffix')
  const rr = out.req.getAll('record-route')
  t.equal(rr.length, 1)
  t.match(rr[0]!, /^<sip:ft\.[^@]+@10\.0\.0\.1:5060;transport=udp;lr>$/)
  t.equal(req.get('max-forwards'), '70', 'the received request is not modified')

  stack.answer(0, 100)
  t.same(tx.statuses, [], '100 is not forwarded')
  stack.answer(0, 180)
  t.same(tx.statuses, [180])
  t.same(vias(tx.last!), vias(req), 'upstream response has exactly the original Vias')
  stack.answer(0, 200)
  t.same(tx.statuses, [180, 200])
  t.equal(tx.last!.get('to'), 'Bob <sip:bob@example.org>;tag=callee0')
  const s = proxy.stats()
  t.equal(s.requestsIn, 1)
  t.equal(s.branches, 1)
  t.equal(s.responsesForwarded, 2)
  t.equal(s.branchResponsesIn, 3)
  t.equal(s.activeContexts, 0)
})

t.test('forking to 3 contacts: first 2xx forwarded, the others CANCELled, their 487 absorbed', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22'), binding('sip:bob@192.0.2.23')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  t.equal(stack.sent.length, 3)
  t.same(new Set(stack.sent.map(s => s.branch)).size, 3, 'distinct branches')
  for (let i = 0; i < 3; i++) stack.answer(i, 180)
  t.same(tx.statuses, [180, 180, 180])
  stack.answer(1, 200)
  t.same(stack.sent.map(s => s.cancels), [1, 0, 1], 'the two other branches are cancelled')
  stack.answer(0, 487)
  stack.answer(2, 487)
  t.same(tx.statuses, [180, 180, 180, 200], 'only the 2xx is final upstream')
  t.equal(proxy.stats().cancelsSent, 2)
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('several 2xx (RFC 6026): each is forwarded', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  stack.answer(0, 200)
  stack.answer(1, 200)
  t.same(tx.statuses, [200, 200])
  stack.sent[0]!.h.onAdditional2xx!(tx.responses[0]!)
  t.same(tx.statuses, [200, 200, 200], 'a retransmitted 2xx passed up by the Accepted client tx goes up too')
})

t.test('486 everywhere → 486; best response waits for all branches', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  stack.answer(0, 486)
  t.same(tx.statuses, [])
  stack.answer(1, 486)
  t.same(tx.statuses, [486])
  t.same(vias(tx.last!), ['SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport=5060'])
})

t.test('best final response: lowest class, 6xx precedence with CANCEL, 503 → 500, 408 loses', async t => {
  {
    const { stack, location, proxy } = setup()
    location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22'), binding('sip:bob@192.0.2.23')])
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite(), tx)
    stack.answer(0, 503)
    stack.answer(1, 404)
    stack.answer(2, 302, { headers: [['contact', '<sip:carol@example.org>']] })
    t.same(tx.statuses, [302], '3xx is the lowest class')
  }
  {
    const { stack, location, proxy } = setup()
    location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22'), binding('sip:bob@192.0.2.23')])
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite(), tx)
    stack.answer(0, 180)
    stack.answer(1, 603)
    t.same(stack.sent.map(s => s.cancels), [1, 0, 1], '6xx cancels the pending branches')
    t.same(tx.statuses, [180], '6xx is not forwarded immediately')
    stack.answer(0, 487)
    stack.answer(2, 487)
    t.same(tx.statuses, [180, 603])
  }
  {
    const { stack, location, proxy } = setup()
    location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite(), tx)
    stack.answer(0, 503)
    t.same(tx.statuses, [500], '503 becomes 500')
  }
  {
    const { stack, location, proxy } = setup()
    location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22')])
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite(), tx)
    stack.answer(0, 408)
    stack.answer(1, 480)
    t.same(tx.statuses, [480], 'a timeout ranks below a real 4xx')
  }
})

t.test('401/407 challenges of all branches are aggregated', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22'), binding('sip:bob@192.0.2.23')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  stack.answer(0, 486)
  stack.answer(1, 401, { headers: [['www-authenticate', 'Digest realm="a", nonce="1"']] })
  stack.answer(2, 407, { headers: [['proxy-authenticate', 'Digest realm="b", nonce="2"']] })
  t.same(tx.statuses, [401])
  t.same(tx.last!.getAll('www-authenticate'), ['Digest realm="a", nonce="1"'])
  t.same(tx.last!.getAll('proxy-authenticate'), ['Digest realm="b", nonce="2"'])
})

t.test('CANCEL from the caller cancels every branch; 487 once they are done', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22')])
  const req = invite()
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(req, tx)
  stack.answer(0, 180)
  t.type(tx.onCancel, 'function')
  tx.onCancel!(req)
  t.same(stack.sent.map(s => s.cancels), [1, 1])
  stack.answer(1, 180)
  t.same(tx.statuses, [180], 'provisionals after CANCEL are not forwarded')
  stack.answer(0, 487)
  t.same(tx.statuses, [180])
  stack.answer(1, 487)
  t.same(tx.statuses, [180, 487])
  t.ok(tx.last!.get('to')!.includes('tag='), '487 carries a To tag')
})

t.test('a 2xx racing the caller CANCEL is still forwarded', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  const req = invite()
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(req, tx)
  stack.answer(0, 180)
  tx.onCancel!(req)
  stack.answer(0, 200)
  t.same(tx.statuses, [180, 200])
})

t.test('CANCELled branch that never answers is given up; Timer C cancels a ringing branch', async t => {
  const { stack, location, proxy, clock } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  stack.answer(0, 180)
  clock.advance(180_000)
  stack.answer(0, 183)
  clock.advance(180_000)
  t.equal(stack.sent[0]!.cancels, 0, 'a provisional restarts Timer C')
  clock.advance(1_001)
  t.equal(stack.sent[0]!.cancels, 1, 'Timer C fired: CANCEL')
  t.equal(proxy.stats().timerCFired, 1)
  clock.advance(32_000)
  t.same(tx.statuses, [180, 183, 408], 'no answer to the CANCEL → 408 upstream')
  stack.answer(0, 487)
  t.same(tx.statuses, [180, 183, 408], 'a late final is ignored')
  t.equal(clock.pending, 0, 'no timer left')
})

t.test('404 for an unknown AOR, 480 when every binding is an RFC 5626 flow that is gone', async t => {
  const { stack, location, proxy } = setup()
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  t.same(tx.statuses, [404])
  t.equal(tx.last!.reason, 'Not Found')
  location.map.set(BOB, [binding('sip:bob@h.invalid;transport=ws', { instance: '"<urn:uuid:1>"', regId: 1, received: { protocol: 'tcp', address: '192.0.2.30', port: 40000, connectionId: 'c1' } })])
  const tx2 = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx2)
  t.same(tx2.statuses, [480])
  t.equal(stack.sent.length, 0)
  // the flow is back
  stack.open.add('c1')
  const tx3 = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx3)
  t.equal(stack.sent.length, 1)
  t.same(stack.sent[0]!.dest, { protocol: 'tcp', address: '192.0.2.30', port: 40000, connectionId: 'c1' }, 'sent over the flow')
  t.equal(stack.sent[0]!.req.uri, 'sip:bob@h.invalid;transport=ws')
  t.equal(proxy.stats().activeContexts, 1)
})

t.test('NAT binding: sent to received; Path → Route and next hop = first Path URI', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [
    binding('sip:bob@10.1.1.1:5060', { received: { protocol: 'udp', address: '198.51.100.7', port: 33333 } }),
    binding('sip:bob@10.2.2.2', { path: ['<sip:edge1.example.net;lr>', '<sip:192.0.2.99:5070;lr>'] })
  ])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(stack.sent[0]!.dest, { protocol: 'udp', address: '198.51.100.7', port: 33333 })
  t.equal(stack.sent[0]!.req.uri, 'sip:bob@10.1.1.1:5060')
  // branch 2: Path → Route, edge1 cannot be resolved (no resolver) → 404 branch result
  const s2 = stack.sent[1]
  t.equal(s2, undefined, 'edge1.example.net does not resolve without a resolver')
  stack.answer(0, 486)
  t.equal(proxy.stats().activeContexts, 0)

  const { stack: st2, location: loc2, proxy: p2 } = setup()
  loc2.map.set(BOB, [binding('sip:bob@10.2.2.2', { path: ['<sip:192.0.2.98:5070;lr>', '<sip:192.0.2.99;lr>'] })])
  await p2.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(st2.sent[0]!.req.getAll('route'), ['<sip:192.0.2.98:5070;lr>', '<sip:192.0.2.99;lr>'])
  t.same(st2.sent[0]!.dest, { protocol: 'udp', address: '192.0.2.98', port: 5070 })
})

t.test('UDP binding whose Contact is on the source IP: sent to the Contact (third-party registration), not the source port', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [
    binding('sip:bob@192.0.2.40:5072', { received: { protocol: 'udp', address: '192.0.2.40', port: 40123 } })
  ])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(stack.sent[0]!.dest, { protocol: 'udp', address: '192.0.2.40', port: 5072 }, 'the registered Contact')
  const { stack: st2, location: loc2, proxy: p2 } = setup()
  loc2.map.set(BOB, [binding('sip:bob@bob-pc.example.net', { received: { protocol: 'udp', address: '192.0.2.41', port: 5060 } })])
  await p2.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(st2.sent[0]!.dest, { protocol: 'udp', address: '192.0.2.41', port: 5060 }, 'a host-name Contact is reached at the source')
})

t.test('maxBranches limits the fork', async t => {
  const { stack, location, proxy } = setup({ limits: { maxBranches: 4 } })
  location.map.set(BOB, Array.from({ length: 10 }, (_, i) => binding(`sip:bob@192.0.2.${100 + i}`)))
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.equal(stack.sent.length, 4)
})

t.test('§16.3 validation', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  const cases: Array<[string, ReturnType<typeof invite>, number, RegExp?]> = [
    ['Max-Forwards 0', invite({ mf: 0 }), 483],
    ['bad Max-Forwards', invite().set('max-forwards', 'abc'), 400, /Max-Forwards/],
    ['Max-Forwards > 255', invite().set('max-forwards', '256'), 400, /Max-Forwards/],
    ['CSeq mismatch', invite().set('cseq', '1 BYE'), 400, /CSeq/],
    ['bad From', invite().set('from', '<sip:a@b'), 400, /From/],
    ['bad Route', invite().set('route', '<sip:x@y;lr'), 400, /Route/],
    ['unknown scheme', invite({ uri: 'mailto:bob@example.org' }), 416],
    ['tel without Route', invite({ uri: 'tel:+15551234' }), 416],
    ['Proxy-Require', invite({ headers: 'Proxy-Require: foo, bar' }), 420],
    ['malformed Request-URI', Object.assign(invite(), { uri: 'sip:bob@exa%mple.org' }), 400, /Request-URI/]
  ]
  for (const [name, req, status, reason] of cases) {
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(req, tx)
    t.same(tx.statuses, [status], name)
    if (reason !== undefined) t.match(tx.last!.reason, reason)
    t.ok(tx.last!.get('to')!.includes('tag='), `${name}: To tag`)
  }
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ headers: 'Proxy-Require: foo, bar' }), tx)
  t.equal(tx.last!.get('unsupported'), 'foo, bar')
  t.equal(stack.sent.length, 0)

  const mf = invite({ mf: null })
  await proxy.handleRequest(mf, new FakeTx(ALICE_SRC))
  t.equal(stack.sent[0]!.req.get('max-forwards'), '69', 'absent Max-Forwards → 70 − 1')
  await proxy.handleRequest(invite({ mf: 200, callId: 'c2' }), new FakeTx(ALICE_SRC))
  t.equal(stack.sent[1]!.req.get('max-forwards'), '69', 'capped to limits.maxForwards')
  t.equal(proxy.stats().activeContexts, 2)
})

t.test('OPTIONS to the node itself → 200 with Allow/Accept/Supported, also with Max-Forwards 0', async t => {
  const { stack, proxy } = setup()
  for (const mf of [70, 0]) {
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite({ method: 'OPTIONS', uri: 'sip:10.0.0.1', mf }), tx)
    t.same(tx.statuses, [200])
    t.match(tx.last!.get('allow')!, /INVITE.*MESSAGE/)
    t.ok(tx.last!.has('accept'))
    t.ok(tx.last!.has('supported'))
  }
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'OPTIONS', uri: 'sip:10.0.0.1:5080', mf: 0 }), tx)
  t.same(tx.statuses, [483], 'another port is not us')
  t.equal(stack.sent.length, 0)
})

t.test('loop detection §16.3 step 4: looped copy → 482, spiral is forwarded', async t => {
  for (const honour of [true, false]) {
    const { stack, proxy } = setup({ stack: new FakeStack(undefined, honour) })
    const req = invite({ uri: 'sip:carol@elsewhere.example;transport=udp', headers: 'Route: <sip:192.0.2.50;lr>' })
    await proxy.handleRequest(req, new FakeTx(ALICE_SRC))
    t.equal(stack.sent.length, 1)
    const looped = stack.sent[0]!.req.clone()
    const tx = new FakeTx({ protocol: 'udp', address: '192.0.2.50', port: 5060, local: PROXY_UDP })
    await proxy.handleRequest(looped, tx)
    t.same(tx.statuses, [482], `loop detected (stack ${honour ? 'honours' : 'ignores'} the branch)`)
    t.equal(proxy.stats().loopsDetected, 1)
    // a spiral: same request back with a different Request-URI
    const spiral = stack.sent[0]!.req.clone()
    spiral.uri = 'sip:carol@other.example'
    const tx2 = new FakeTx({ protocol: 'udp', address: '192.0.2.50', port: 5060, local: PROXY_UDP })
    await proxy.handleRequest(spiral, tx2)
    t.same(tx2.statuses, [], 'spiral forwarded')
    t.equal(stack.sent.length, 2)
  }
})

t.test('Route processing: our Route removed, loose routing to the next Route', async t => {
  const { stack, proxy, location } = setup()
  const bye = invite({ method: 'BYE', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', headers: 'Route: <sip:10.0.0.1;lr>, <sip:192.0.2.77:5080;lr>' })
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(bye, tx)
  const out = stack.sent[0]!
  t.equal(out.req.uri, 'sip:bob@192.0.2.20:5062')
  t.same(out.req.getAll('route'), ['<sip:192.0.2.77:5080;lr>'])
  t.same(out.dest, { protocol: 'udp', address: '192.0.2.77', port: 5080 })
  t.notOk(out.req.has('record-route'), 'no Record-Route on in-dialog requests')
  t.same(location.lookups, [])
  stack.answer(0, 200)
  t.same(tx.statuses, [200])

  // only our Route: forwarded to the Request-URI
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', callId: 'x2', headers: 'Route: <sip:10.0.0.1:5060;transport=udp;lr>' }), new FakeTx(ALICE_SRC))
  t.notOk(stack.sent[1]!.req.has('route'))
  t.same(stack.sent[1]!.dest, { protocol: 'udp', address: '192.0.2.20', port: 5062 })

  // a Route to us over TCP is ours too; a Route with another transport on our address is not
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', callId: 'x3', headers: 'Route: <sip:10.0.0.1;transport=tcp;lr>' }), new FakeTx(ALICE_SRC))
  t.notOk(stack.sent[2]!.req.has('route'))
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', callId: 'x4', headers: 'Route: <sip:10.0.0.1:5070;transport=tcp;lr>' }), new FakeTx(ALICE_SRC))
  t.same(stack.sent[3]!.req.getAll('route'), ['<sip:10.0.0.1:5070;transport=tcp;lr>'], 'another port is not us')
  t.same(stack.sent[3]!.dest, { protocol: 'tcp', address: '10.0.0.1', port: 5070 })
})

t.test('strict-router previous hop: Request-URI is our Record-Route URI → last Route becomes the Request-URI', async t => {
  const { stack, proxy } = setup()
  const bye = invite({ method: 'BYE', uri: 'sip:10.0.0.1:5060;transport=udp;lr', toTag: 'b1', headers: 'Route: <sip:192.0.2.77:5080;lr>, <sip:bob@192.0.2.20:5062>' })
  await proxy.handleRequest(bye, new FakeTx(ALICE_SRC))
  const out = stack.sent[0]!
  t.equal(out.req.uri, 'sip:bob@192.0.2.20:5062')
  t.same(out.req.getAll('route'), ['<sip:192.0.2.77:5080;lr>'])
  t.same(out.dest, { protocol: 'udp', address: '192.0.2.77', port: 5080 })
})

t.test('strict next hop (Route without lr): Request-URI appended to Route', async t => {
  const { stack, proxy } = setup()
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', headers: 'Route: <sip:192.0.2.77:5080>' }), new FakeTx(ALICE_SRC))
  const out = stack.sent[0]!
  t.equal(out.req.uri, 'sip:192.0.2.77:5080')
  t.same(out.req.getAll('route'), ['<sip:bob@192.0.2.20:5062>'])
  t.same(out.dest, { protocol: 'udp', address: '192.0.2.77', port: 5080 })
})

t.test('double Record-Route when inbound and outbound transports differ', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.20:5062;transport=tcp')])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  const rr = stack.sent[0]!.req.getAll('record-route').map(v => parseNameAddr(v).uri)
  t.equal(rr.length, 2)
  t.match(rr[0]!, /@10\.0\.0\.1:5060;transport=tcp;lr;r2=on$/, 'outbound side on top')
  t.match(rr[1]!, /@10\.0\.0\.1:5060;transport=udp;lr;r2=on$/)
  t.same(stack.sent[0]!.dest.protocol, 'tcp')
})

t.test('in-dialog requests through our Record-Route follow the flow token both ways (NAT)', async t => {
  const { stack, location, proxy } = setup()
  const callee = { protocol: 'udp' as const, address: '198.51.100.7', port: 33333 }
  location.map.set(BOB, [binding('sip:bob@10.1.1.1:5060', { received: callee })])
  const caller = { protocol: 'udp' as const, address: '203.0.113.5', port: 40001, local: PROXY_UDP }
  await proxy.handleRequest(invite(), new FakeTx(caller))
  const rr = stack.sent[0]!.req.get('record-route')!
  // BYE from the callee towards the caller's private Contact
  const bye = invite({ method: 'BYE', uri: 'sip:alice@192.168.1.2:5060', toTag: 'b1', headers: `Route: ${rr}` })
  await proxy.handleRequest(bye, new FakeTx({ ...callee, local: PROXY_UDP }))
  t.same(stack.sent[1]!.dest, { protocol: 'udp', address: '203.0.113.5', port: 40001 }, 'to the caller NAT address')
  t.equal(stack.sent[1]!.req.uri, 'sip:alice@192.168.1.2:5060')
  t.notOk(stack.sent[1]!.req.has('route'))
  // re-INVITE from the caller towards the callee
  const re = invite({ uri: 'sip:bob@10.1.1.1:5060', toTag: 'b1', callId: 'c9', headers: `Route: ${rr}` })
  await proxy.handleRequest(re, new FakeTx(caller))
  t.same(stack.sent[2]!.dest, callee, 'to the callee NAT address')
  // a forged token is ignored: plain routing on the Request-URI
  const forged = rr.replace(/ft\.[^.]+\./, 'ft.AAAA.')
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:alice@192.0.2.10:5060', toTag: 'b1', callId: 'c10', headers: `Route: ${forged}` }), new FakeTx(caller))
  t.same(stack.sent[3]!.dest, { protocol: 'udp', address: '192.0.2.10', port: 5060 })
})

t.test('flow token: the other side was a WebSocket connection that is gone → 430 Flow Failed', async t => {
  const { stack, location, proxy } = setup({ stack: new FakeStack([PROXY_UDP, { protocol: 'ws', address: '10.0.0.1', port: 8080 }]) })
  stack.open.add('conn-b')
  const calleeFlow = { protocol: 'ws' as const, address: '198.51.100.8', port: 40000, connectionId: 'conn-b' }
  location.map.set(BOB, [binding('sip:bob@x.invalid;transport=ws', { received: calleeFlow })])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(stack.sent[0]!.dest, calleeFlow)
  const rr = stack.sent[0]!.req.getAll('record-route')
  stack.open.delete('conn-b')
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'BYE', uri: 'sip:bob@x.invalid;transport=ws', toTag: 'b1', callId: 'f2', headers: `Route: ${[...rr].reverse().join(', ')}` }), tx)
  t.same(tx.statuses, [430])
  t.equal(stack.sent.length, 1)
  // a new INVITE: the WebSocket binding without its connection is unreachable → 480
  const tx2 = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ callId: 'f3' }), tx2)
  t.same(tx2.statuses, [480])
})

t.test('initial INVITE with a preloaded Route to us (outbound proxy) is routed on its Request-URI', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  await proxy.handleRequest(invite({ headers: 'Route: <sip:10.0.0.1;lr>' }), new FakeTx(ALICE_SRC))
  t.equal(stack.sent[0]!.req.uri, 'sip:bob@192.0.2.21')
  t.notOk(stack.sent[0]!.req.has('route'))
  t.equal(stack.sent[0]!.req.getAll('record-route').length, 1)
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'OPTIONS', uri: 'sip:example.org' }), tx)
  t.same(tx.statuses, [200], 'OPTIONS to our domain is answered by the node')
  const s = proxy.stats()
  t.equal(s.messagesIn, 2)
  t.equal(s.messagesOut, 2)
})

t.test('in-dialog request without Route to a local AOR is routed like an initial one', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  await proxy.handleRequest(invite({ method: 'INFO', toTag: 'x' }), new FakeTx(ALICE_SRC))
  t.equal(stack.sent[0]!.req.uri, 'sip:bob@192.0.2.21')
  t.same(location.lookups, [BOB])
})

t.test('MESSAGE: forked, 2xx forwarded at once, no CANCEL, later finals absorbed', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'MESSAGE', headers: 'Content-Type: text/plain' }), tx)
  t.equal(stack.sent.length, 2)
  t.notOk(stack.sent[0]!.req.has('record-route'), 'MESSAGE is not record-routed')
  stack.answer(1, 202)
  t.same(tx.statuses, [202])
  t.same(stack.sent.map(s => s.cancels), [0, 0])
  stack.answer(0, 200)
  t.same(tx.statuses, [202], 'one final for a non-INVITE')
  t.equal(proxy.stats().activeContexts, 0)

  const tx2 = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'MESSAGE', callId: 'm2' }), tx2)
  stack.answer(2, 480)
  stack.answer(3, 415)
  t.same(tx2.statuses, [415], 'best non-INVITE final (415 is preferred)')
})

t.test('CANCEL during the location lookup → 487 without any branch', async t => {
  const { stack, location, proxy } = setup()
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  ;(location as { lookup: unknown }).lookup = async () => { await gate; return [binding('sip:bob@192.0.2.21')] }
  const req = invite()
  const tx = new FakeTx(ALICE_SRC)
  const p = proxy.handleRequest(req, tx)
  tx.onCancel!(req)
  release()
  await p
  t.same(tx.statuses, [487])
  t.equal(stack.sent.length, 0)
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('ACK for 2xx: routed statelessly with our Via', async t => {
  const { stack, proxy } = setup()
  const ack = invite({ method: 'ACK', uri: 'sip:bob@192.0.2.20:5062', toTag: 'b1', headers: 'Route: <sip:10.0.0.1;lr>' })
  await proxy.handleAck(ack, ALICE_SRC)
  t.equal(stack.stateless.length, 1)
  const out = stack.stateless[0]!
  t.same(out.dest, { protocol: 'udp', address: '192.0.2.20', port: 5062 })
  const v = vias(out.msg)
  t.equal(v.length, 2)
  t.ok(parseVia(v[0]!).branch!.startsWith(BRANCH_MARK))
  t.equal(out.msg.get('max-forwards'), '69')
  t.notOk(out.msg.has('route'))
  // retransmission: same branch
  await proxy.handleAck(ack, ALICE_SRC)
  t.equal(vias(stack.stateless[1]!.msg)[0], v[0])
  // Max-Forwards 0 → dropped; ACK for us → dropped
  await proxy.handleAck(invite({ method: 'ACK', mf: 0, toTag: 'b1' }), ALICE_SRC)
  await proxy.handleAck(invite({ method: 'ACK', uri: 'sip:10.0.0.1', toTag: 'b1' }), ALICE_SRC)
  t.equal(stack.stateless.length, 2)
  t.equal(proxy.stats().dropped, 2)
})

t.test('stray 2xx: our Via removed, sent to the next Via (received/rport)', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.21')])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  const res = stack.answer(0, 200)
  proxy.handleStrayResponse(res, { protocol: 'udp', address: '192.0.2.21', port: 5060, local: PROXY_UDP })
  t.equal(stack.stateless.length, 1)
  t.same(vias(stack.stateless[0]!.msg), vias(invite()))
  t.same(stack.stateless[0]!.dest, { protocol: 'udp', address: '192.0.2.10', port: 5060 })
  // not ours → dropped
  const other = res.clone()
  other.shift('via')
  proxy.handleStrayResponse(other, ALICE_SRC)
  t.equal(stack.stateless.length, 1)
  t.equal(proxy.stats().strayResponsesIn, 2)
})

t.test('a transport on TCP: Record-Route uses tcp when both sides are tcp', async t => {
  const { stack, location, proxy } = setup()
  location.map.set(BOB, [binding('sip:bob@192.0.2.20;transport=tcp')])
  await proxy.handleRequest(invite(), new FakeTx({ protocol: 'tcp', address: '192.0.2.10', port: 40000, connectionId: 'k', local: PROXY_TCP }))
  t.match(stack.sent[0]!.req.getAll('record-route'), [/transport=tcp;lr>$/])
})

t.test('unresolvable next hop → 404 branch result; a throwing location → 500, never a crash', async t => {
  const { location, proxy, stack } = setup()
  location.map.set(BOB, [binding('sip:bob@unknown.host.example')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  t.same(tx.statuses, [404])
  t.equal(stack.sent.length, 0)
  ;(location as { lookup: unknown }).lookup = () => { throw new Error('db down') }
  const tx2 = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx2)
  t.same(tx2.statuses, [500])
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('sequential forking: one contact at a time in q order; 2xx stops it', async t => {
  const { stack, location, proxy } = setup({ forking: 'sequential' })
  location.map.set(BOB, [binding('sip:bob@192.0.2.21', { q: 1 }), binding('sip:bob@192.0.2.22', { q: 0.5 }), binding('sip:bob@192.0.2.23', { q: 0.1 })])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  t.equal(stack.sent.length, 1)
  stack.answer(0, 486)
  await new Promise(resolve => { setImmediate(resolve) })
  t.equal(stack.sent.length, 2, 'next contact after a failure')
  t.equal(stack.sent[1]!.req.uri, 'sip:bob@192.0.2.22')
  t.same(tx.statuses, [])
  stack.answer(1, 200)
  await new Promise(resolve => { setImmediate(resolve) })
  t.same(tx.statuses, [200])
  t.equal(stack.sent.length, 2, 'the third contact is never tried')
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('q-ordered forking: equal q in parallel, next group after all failed; best over all groups', async t => {
  const { stack, location, proxy } = setup({ forking: 'q' })
  location.map.set(BOB, [binding('sip:bob@192.0.2.21', { q: 1 }), binding('sip:bob@192.0.2.22', { q: 1 }), binding('sip:bob@192.0.2.23', { q: 0.2 })])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ method: 'MESSAGE' }), tx)
  t.equal(stack.sent.length, 2)
  stack.answer(0, 480)
  stack.answer(1, 302)
  await new Promise(resolve => { setImmediate(resolve) })
  t.equal(stack.sent.length, 3)
  stack.answer(2, 404)
  t.same(tx.statuses, [302], 'best response over every group')
})

t.test('sequential forking: a group that rings too long is CANCELled, a 6xx ends the search', async t => {
  const { stack, location, proxy, clock } = setup({ forking: 'sequential', timers: { groupTimeout: 20_000 } })
  location.map.set(BOB, [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22'), binding('sip:bob@192.0.2.23')])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite(), tx)
  stack.answer(0, 180)
  clock.advance(20_000)
  await new Promise(resolve => { setImmediate(resolve) })
  t.equal(stack.sent[0]!.cancels, 1, 'first contact cancelled after groupTimeout')
  t.equal(stack.sent.length, 2, 'second contact tried')
  stack.answer(0, 487)
  stack.answer(1, 603)
  await new Promise(resolve => { setImmediate(resolve) })
  t.equal(stack.sent.length, 2, '6xx: no further contact')
  t.same(tx.statuses, [180, 603])
  t.equal(clock.pending, 0, 'timers cleaned up')
})

t.test('invalid options are rejected at creation', async t => {
  t.throws(() => setup({ limits: { maxBranches: 0 } }), RangeError)
  t.throws(() => setup({ limits: { maxBranches: 1.5 } }), RangeError)
  t.throws(() => setup({ limits: { maxForwards: 256 } }), RangeError)
  t.throws(() => setup({ timers: { timerC: -1 } }), RangeError)
  t.throws(() => setup({ forking: 'random' as never }), RangeError)
  t.doesNotThrow(() => setup({ limits: { maxBranches: 1, maxForwards: 255 }, timers: { groupTimeout: 0 } }))
})

t.test('a SIPS Request-URI gets a SIPS Record-Route', async t => {
  const tls = { protocol: 'tls' as const, address: '10.0.0.1', port: 5061 }
  const { stack, location, proxy } = setup({ stack: new FakeStack([tls]) })
  location.map.set('sips:bob@example.org', [binding('sips:bob@192.0.2.21')])
  await proxy.handleRequest(invite({ uri: 'sips:bob@example.org' }), new FakeTx({ protocol: 'tls', address: '192.0.2.10', port: 40000, connectionId: 'c', local: tls }))
  const out = stack.sent[0]!
  t.same(out.dest, { protocol: 'tls', address: '192.0.2.21', port: 5061 })
  t.match(out.req.getAll('record-route'), [/^<sips:ft\.[^@]+@10\.0\.0\.1:5061;lr>$/])
  // and that Route is recognised as ours later
  const bye = invite({ method: 'BYE', uri: 'sips:bob@192.0.2.21', toTag: 'x', callId: 's2', headers: `Route: ${out.req.get('record-route')!}` })
  await proxy.handleRequest(bye, new FakeTx({ protocol: 'tls', address: '192.0.2.10', port: 40000, connectionId: 'c', local: tls }))
  t.notOk(stack.sent[1]!.req.has('route'))
})

t.test('overlay hook: bindings of another super node are reached through that node, which forks locally only', async t => {
  const nodeB = { protocol: 'udp' as const, address: '10.0.0.2', port: 5060 }
  const a = setup({ nodeId: 'A', nodeRoute: id => id === 'B' ? 'sip:10.0.0.2:5060' : undefined })
  const onB = binding('sip:bob@x.invalid;transport=ws', { node: 'B', received: { protocol: 'ws', address: '198.51.100.9', port: 50000, connectionId: 'ws1' } })
  const onB2 = binding('sip:bob@y.invalid;transport=ws', { node: 'B', q: 0.5, received: { protocol: 'ws', address: '198.51.100.9', port: 50001, connectionId: 'ws2' } })
  const onA = binding('sip:bob@192.0.2.21', { node: 'A' })
  a.location.map.set(BOB, [onB, onA, onB2])
  await a.proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.equal(a.stack.sent.length, 2, 'one branch to node B (for both of its bindings), one local')
  const toB = a.stack.sent[0]!
  t.equal(toB.req.uri, BOB, 'Request-URI kept: node B does the lookup')
  t.same(toB.req.getAll('route'), ['<sip:10.0.0.2:5060;lr;sr=local>'])
  t.same(toB.dest, nodeB)
  t.equal(a.stack.sent[1]!.req.uri, 'sip:bob@192.0.2.21')

  const ws = { protocol: 'ws' as const, address: '10.0.0.2', port: 8080 }
  const b = setup({ nodeId: 'B', nodeRoute: () => 'sip:10.0.0.1:5060', stack: new FakeStack([nodeB, ws]) })
  b.stack.open.add('ws1')
  b.location.map.set(BOB, [onB, onA, onB2].map(x => x.node === 'B' ? x : { ...x }))
  const fromA = toB.req.clone()
  await b.proxy.handleRequest(fromA, new FakeTx({ protocol: 'udp', address: '10.0.0.1', port: 5060, local: nodeB }))
  t.equal(b.stack.sent.length, 1, 'node B forks to its live local flow only (not back to A)')
  t.same(b.stack.sent[0]!.dest, { protocol: 'ws', address: '198.51.100.9', port: 50000, connectionId: 'ws1' })
  t.equal(b.stack.sent[0]!.req.uri, 'sip:bob@x.invalid;transport=ws')

  // without a nodeRoute, a foreign binding's received/connection is ignored: its Contact is used
  const c = setup({ nodeId: 'C' })
  c.stack.open.add('ws1')
  c.location.map.set(BOB, [binding('sip:bob@192.0.2.77', { node: 'B', received: { protocol: 'udp', address: '198.51.100.1', port: 1 } })])
  await c.proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(c.stack.sent[0]!.dest, { protocol: 'udp', address: '192.0.2.77', port: 5060 })
})
