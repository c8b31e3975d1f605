import t from 'tap'
import { SimClock, SeededRng, MemoryLogger, SimNetwork, type SimTransport } from '@sipring/testkit'
import type { Source, TransportProtocol } from '@sipring/interface'
import {
  SipStack, SipRequest, SipResponse, parseMessage, createResponse, resolveTarget, ResolveError,
  type ServerTransaction, type SipStackInit
} from '@sipring/sip'

const STACK_IP = '10.0.0.9'
const PHONE_IP = '10.0.0.1'

interface Got { msg: SipRequest | SipResponse, source: Source, at: number }

/** A raw endpoint on the SimNetwork that sends text and records what it receives. */
class Phone {
  got: Got[] = []
  unparsed = 0
  constructor (readonly tr: SimTransport, readonly clock: SimClock) {
    tr.on('message', (data, source) => {
      try {
        this.got.push({ msg: parseMessage(data), source, at: clock.now() })
      } catch { this.unparsed++ } // an answer echoing the sender's own broken From/To (fuzz test)
    })
  }

  async send (text: string, to = { protocol: this.tr.protocol, address: STACK_IP, port: 5060 }, connectionId?: string): Promise<void> {
    await this.tr.send(Buffer.from(text.replace(/\n/g, '\r\n')), connectionId !== undefined ? { ...to, connectionId } : to)
  }

  responses (): SipResponse[] { return this.got.map(g => g.msg).filter((m): m is SipResponse => m instanceof SipResponse) }
  requests (): SipRequest[] { return this.got.map(g => g.msg).filter((m): m is SipRequest => m instanceof SipRequest) }
}

async function setup (opts: { protocol?: TransportProtocol, phonePort?: number, stack?: Partial<SipStackInit> } = {}) {
  const protocol = opts.protocol ?? 'udp'
  const clock = new SimClock(0)
  const rng = new SeededRng(7)
  const logger = new MemoryLogger()
  const net = new SimNetwork({ clock, rng: rng.fork('net'), latencyMs: 1 })
  const udp = net.transport({ protocol: 'udp', address: STACK_IP, port: 5060 })
  const tcp = net.transport({ protocol: 'tcp', address: STACK_IP, port: 5060 })
  const stack = new SipStack({ clock, rng: rng.fork('stack'), logger, transports: [udp, tcp], ...opts.stack })
  await stack.start()
  const ptr = net.transport({ protocol, address: PHONE_IP, port: opts.phonePort ?? 5060 })
  await ptr.start()
  const phone = new Phone(ptr, clock)
  const requests: Array<{ req: SipRequest, tx: ServerTransaction }> = []
  stack.onRequest = (req, tx) => { requests.push({ req, tx }) }
  const acks: SipRequest[] = []
  stack.onAck = (ack) => { acks.push(ack) }
  const strays: SipResponse[] = []
  stack.onStrayResponse = (res) => { strays.push(res) }
  /** let the microtasks (async transport sends) run, then advance the clock */
  const run = async (ms: number): Promise<void> => {
    const target = clock.now() + ms
    for (;;) {
      await flush()
      const next = clock.nextAt()
      if (next === undefined || next > target) break
      clock.advanceTo(next)
    }
    clock.advanceTo(target)
    await flush()
  }
  return { clock, rng, logger, net, stack, phone, requests, acks, strays, run, udp, tcp }
}

async function flush (): Promise<void> { for (let i = 0; i < 5; i++) await Promise.resolve() }

function register (via: string, callId = 'reg1', cseq = 1): string {
  return `REGISTER sip:example.org SIP/2.0
Via: ${via}
Max-Forwards: 70
From: <sip:alice@example.org>;tag=f1
To: <sip:alice@example.org>
Call-ID: ${callId}
CSeq: ${cseq} REGISTER
Contact: <sip:alice@${PHONE_IP}:5060>
Content-Length: 0

`
}

function invite (via: string, extra = ''): string {
  return `INVITE sip:bob@example.org SIP/2.0
Via: ${via}
Max-Forwards: 70
From: <sip:alice@example.org>;tag=f1
To: <sip:bob@example.org>
Call-ID: inv1
CSeq: 1 INVITE
${extra}Content-Length: 0

`
}

function cancelOrAck (method: 'CANCEL' | 'ACK', via: string, toTag = ''): string {
  return `${method} sip:bob@example.org SIP/2.0
Via: ${via}
Max-Forwards: 70
From: <sip:alice@example.org>;tag=f1
To: <sip:bob@example.org>${toTag}
Call-ID: inv1
CSeq: 1 ${method}
Content-Length: 0

`
}

t.test('RFC 3581: rport filled and received added; the response goes to received:rport', async t => {
  const s = await setup({ phonePort: 5070 })
  await s.phone.send(register('SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKr1;rport'))
  await s.run(5)
  t.equal(s.requests.length, 1)
  const { req, tx } = s.requests[0]!
  t.equal(req.get('via'), `SIP/2.0/UDP 192.168.1.5:5062;branch=z9hG4bKr1;rport=5070;received=${PHONE_IP}`)
  t.equal(tx.source.address, PHONE_IP)
  tx.reply(200, 'OK', 'tt')
  await s.run(5)
  const res = s.phone.responses()
  t.equal(res.length, 1, 'the 200 reached 10.0.0.1:5070 (source port), not the sent-by')
  t.equal(res[0]!.status, 200)
  t.match(res[0]!.get('via')!, /rport=5070;received=10\.0\.0\.1/)
})

t.test('RFC 3261 §18.2.1: received only when the sent-by host differs; no rport → sent-by port', async t => {
  const s = await setup({ phonePort: 5080 })
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5080;branch=z9hG4bKr2`))
  await s.phone.send(register('SIP/2.0/UDP phone.example.org:5080;branch=z9hG4bKr3', 'reg2'))
  await s.run(5)
  t.equal(s.requests.length, 2)
  t.equal(s.requests[0]!.req.get('via'), `SIP/2.0/UDP ${PHONE_IP}:5080;branch=z9hG4bKr2`, 'unchanged')
  t.equal(s.requests[1]!.req.get('via'), `SIP/2.0/UDP phone.example.org:5080;branch=z9hG4bKr3;received=${PHONE_IP}`)
  for (const r of s.requests) r.tx.reply(200)
  await s.run(5)
  t.equal(s.phone.responses().length, 2, 'both answered at received/host : sent-by port')
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5080;branch=z9hG4bKr5;rport`, 'reg3'))
  await s.run(5)
  t.equal(s.requests[2]!.req.get('via'), `SIP/2.0/UDP ${PHONE_IP}:5080;branch=z9hG4bKr5;rport=5080;received=${PHONE_IP}`,
    'RFC 3581 §4: with rport, received is added even when equal to sent-by')
})

t.test('non-INVITE server over the stack: retransmission absorbed then answered again; maps emptied by Timer J', async t => {
  const s = await setup()
  const msg = register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKr4;rport`)
  await s.phone.send(msg)
  await s.run(5)
  await s.phone.send(msg)
  await s.run(5)
  t.equal(s.requests.length, 1, 'retransmission matched the transaction')
  t.equal(s.phone.got.length, 0, 'absorbed in Trying')
  t.equal(s.stack.stats().serverTransactions, 1)
  s.requests[0]!.tx.reply(200)
  await s.run(5)
  await s.phone.send(msg)
  await s.run(5)
  t.equal(s.phone.responses().length, 2, 'final retransmitted on request retransmission')
  t.equal(s.requests.length, 1)
  await s.run(32_000)
  t.equal(s.stack.stats().serverTransactions, 0, 'terminated transaction removed')
  t.equal(s.stack.stats().clientTransactions, 0)
  t.equal(s.clock.pending, 0, 'no timer left')
})

t.test('compact Completed cache (UDP non-INVITE): answers retransmissions until Timer J exactly, then forgets', async t => {
  const s = await setup()
  const msg = register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKj1;rport`)
  await s.phone.send(msg)
  await s.run(1)
  const tx = s.requests[0]!.tx
  tx.reply(200)
  const t0 = s.clock.now()
  t.equal(tx.state, 'terminated', 'the full transaction is released at once')
  t.same([s.stack.stats().serverTransactions, s.stack.stats().completedTransactions], [0, 1])
  await s.run(10_000)
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKj2;rport`, 'reg-j2'))
  await s.run(1)
  s.requests[1]!.tx.reply(200)
  s.clock.advanceTo(t0 + 31_998)
  await s.phone.send(msg) // arrives at t0 + 31 999
  await s.run(5)
  t.equal(s.phone.responses().length, 3, 'retransmission just before J answered from the cache')
  t.equal(s.requests.length, 2)
  t.same([s.stack.stats().completedTransactions], [1], 'first entry expired at J, second still held')
  await s.phone.send(msg)
  await s.run(5)
  t.equal(s.requests.length, 3, 'after J the same request is a new transaction')
  s.requests[2]!.tx.reply(200)
  await s.run(40_000)
  t.equal(s.stack.transactionCount, 0)
  t.equal(s.clock.pending, 0, 'the shared timer is not re-armed when the queue is empty')
})

t.test('compact Completed cache is bounded by limits.maxCompleted (oldest dropped first)', async t => {
  const s = await setup({ stack: { limits: { maxCompleted: 2 } } })
  const msgs = [0, 1, 2].map(i => register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKm${i};rport`, `m${i}`))
  for (const m of msgs) await s.phone.send(m)
  await s.run(1)
  for (const r of s.requests) r.tx.reply(200)
  t.equal(s.stack.stats().completedTransactions, 2)
  await s.phone.send(msgs[1]!)
  await s.phone.send(msgs[0]!)
  await s.run(5)
  t.equal(s.requests.length, 4, 'the evicted (oldest) one reaches the TU again, the other is answered from the cache')
  t.equal(s.requests[3]!.req.get('call-id'), 'm0')
})

t.test('INVITE server over the stack: 100 Trying at 200 ms, CANCEL → 200 + onCancel, TU 487, ACK absorbed', async t => {
  const s = await setup()
  const via = `SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKi1;rport`
  await s.phone.send(invite(via))
  await s.run(150)
  t.equal(s.phone.got.length, 0, 'nothing before 200 ms')
  await s.run(100)
  t.equal(s.phone.responses()[0]?.status, 100)
  const { tx } = s.requests[0]!
  let cancelled: SipRequest | undefined
  tx.onCancel = (c) => { cancelled = c; tx.reply(487, 'Request Terminated', 'totag') }
  await s.phone.send(cancelOrAck('CANCEL', via))
  await s.run(5)
  t.ok(cancelled, 'onCancel called')
  const res = s.phone.responses()
  t.equal(res.length, 3)
  t.equal(res[1]!.status, 200)
  t.match(res[1]!.get('cseq')!, /CANCEL/)
  t.equal(res[2]!.status, 487)
  t.match(res[2]!.get('cseq')!, /INVITE/)
  t.equal(s.requests.length, 1, 'CANCEL not passed to onRequest')
  await s.run(600)
  t.ok(s.phone.responses().length > 3, '487 retransmitted (Timer G) until ACK')
  await s.phone.send(cancelOrAck('ACK', via, ';tag=totag'))
  await s.run(5)
  const n = s.phone.got.length
  t.equal(s.acks.length, 0, 'ACK for the 487 absorbed by the transaction')
  await s.run(40_000)
  t.equal(s.phone.got.length, n, 'no more retransmissions after the ACK')
  t.equal(s.stack.transactionCount, 0, 'all transactions gone (I, J)')
})

t.test('CANCEL with no onCancel handler: the stack answers the INVITE 487 itself', async t => {
  const s = await setup()
  const via = `SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKi9;rport`
  await s.phone.send(invite(via))
  await s.run(5)
  s.requests[0]!.tx.reply(180, 'Ringing', 'r1')
  await s.phone.send(cancelOrAck('CANCEL', via))
  await s.run(5)
  const r = s.phone.responses()
  t.same(r.map(x => x.status), [180, 200, 487])
  t.equal(r[1]!.get('to'), '<sip:bob@example.org>;tag=r1', '200 to CANCEL carries the INVITE response To tag')
  t.equal(r[2]!.get('to'), '<sip:bob@example.org>;tag=r1')
  t.equal(s.requests[0]!.tx.state, 'completed')
})

t.test('CANCEL matching no transaction → 481', async t => {
  const s = await setup()
  await s.phone.send(cancelOrAck('CANCEL', `SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKnone;rport`))
  await s.run(5)
  t.equal(s.phone.responses()[0]?.status, 481)
  t.equal(s.requests.length, 0)
})

t.test('ACK for a 2xx (new branch) goes to onAck; an INVITE answered 2xx stays Accepted until Timer L', async t => {
  const s = await setup()
  await s.phone.send(invite(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKi2;rport`))
  await s.run(5)
  const { tx } = s.requests[0]!
  tx.reply(200, 'OK', 'b1')
  t.equal(tx.state, 'accepted')
  await s.phone.send(cancelOrAck('ACK', `SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKack2;rport`, ';tag=b1'))
  await s.run(5)
  t.equal(s.acks.length, 1)
  // an ACK reusing the INVITE's branch while Accepted is passed up too (RFC 6026), with its own source
  await s.phone.send(cancelOrAck('ACK', `SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKi2;rport`, ';tag=b1'))
  await s.run(5)
  t.equal(s.acks.length, 2)
  t.equal(tx.state, 'accepted')
  await s.run(32_000)
  t.equal(tx.state, 'terminated')
  t.equal(s.stack.transactionCount, 0)
})

t.test('§18.2.2: over TCP the response goes back over the request\'s connection; if closed, a new one to sent-by', async t => {
  const s = await setup({ protocol: 'tcp' })
  await s.phone.send(register(`SIP/2.0/TCP ${PHONE_IP}:5060;branch=z9hG4bKt1`))
  await s.run(5)
  const { tx } = s.requests[0]!
  t.ok(tx.source.connectionId, 'source carries the connection')
  t.not(tx.source.port, 5060, 'came from an ephemeral port')
  tx.reply(200)
  await s.run(5)
  t.equal(s.phone.got.length, 1)
  t.equal(s.phone.got[0]!.source.connectionId, tx.source.connectionId, 'same connection')
  t.equal(s.stack.transactionCount, 0, 'reliable: J = 0, removed at once')

  await s.phone.send(register(`SIP/2.0/TCP ${PHONE_IP}:5060;branch=z9hG4bKt2`, 'reg2'))
  await s.run(5)
  const tx2 = s.requests[1]!.tx
  s.net.closeConnection(tx2.source.connectionId!)
  tx2.reply(200)
  await s.run(5)
  t.equal(s.phone.got.length, 2, 'answered over a new connection to received:sent-by port')
  t.not(s.phone.got[1]!.source.connectionId, tx2.source.connectionId)
})

t.test('a response that cannot be delivered (connection gone, connect refused) terminates the server transaction', async t => {
  const s = await setup({ protocol: 'tcp' })
  await s.phone.send(invite(`SIP/2.0/TCP ${PHONE_IP}:5060;branch=z9hG4bKgone`))
  await s.run(5)
  const { tx } = s.requests[0]!
  await s.phone.tr.stop() // closes the connection; nothing listens on the phone's sent-by any more
  tx.reply(486, 'Busy Here', 'g')
  await s.run(5)
  t.equal(tx.state, 'terminated')
  t.equal(s.stack.transactionCount, 0)
  t.equal(s.clock.pending, 0)
})

t.test('RFC 2543 matching (no magic cookie): retransmission and ACK match the INVITE transaction', async t => {
  const s = await setup()
  const via = `SIP/2.0/UDP ${PHONE_IP}:5060;branch=old1`
  await s.phone.send(invite(via))
  await s.run(5)
  await s.phone.send(invite(via))
  await s.run(5)
  t.equal(s.requests.length, 1, 'retransmission matched')
  const { tx } = s.requests[0]!
  tx.reply(486, 'Busy Here', 'b9')
  await s.run(5)
  await s.phone.send(invite(via))
  await s.run(5)
  t.equal(s.phone.responses().filter(r => r.status === 486).length, 2, 'final retransmitted')
  await s.phone.send(cancelOrAck('ACK', via, ';tag=b9'))
  await s.run(5)
  t.equal(tx.state, 'confirmed', 'ACK matched the INVITE transaction')
  t.equal(s.acks.length, 0)
  // a different Call-ID is a different transaction
  await s.phone.send(invite(`SIP/2.0/UDP ${PHONE_IP}:5060`).replace('Call-ID: inv1', 'Call-ID: inv2'))
  await s.run(5)
  t.equal(s.requests.length, 2)
})

t.test('malformed requests: 400 with the parser\'s reason when Via is readable, dropped otherwise', async t => {
  const s = await setup()
  await s.phone.send(`OPTIONS sip:bob@example.org SIP/2.0
Via: SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKbad1;rport
From: <sip:alice@example.org>;tag=f1
To: <sip:bob@example.org>
Call-ID: bad1
CSeq: 1 INVITE
Content-Length: 0

`)
  await s.run(5)
  const r = s.phone.responses()
  t.equal(r.length, 1)
  t.equal(r[0]!.status, 400)
  t.equal(r[0]!.reason, 'CSeq method mismatch')
  t.equal(s.requests.length, 0)
  await s.phone.send('GARBAGE\n\n')
  await s.phone.send(`OPTIONS sip:bob@example.org SIP/2.0
From: <sip:alice@example.org>;tag=f1
To: <sip:bob@example.org>
Call-ID: bad2
CSeq: 1 OPTIONS

`)
  await s.run(5)
  t.equal(s.phone.got.length, 1, 'nothing sent back for unroutable garbage')
  t.equal(s.stack.stats().parseErrors, 3, 'CSeq mismatch, garbage, missing Via')
  t.equal(s.stack.transactionCount, 0)
})

t.test('malformed request with a broken lower Via: 400 carries the (valid) top Via only; broken top Via: dropped', async t => {
  const s = await setup()
  const bad = (top: string): string => `OPTIONS sip:bob@example.org SIP/2.0
Via: ${top}
Via: SIP/2.0/UDP proxy.example.org;branch=z9hG4bKp;;
From: <sip:alice@example.org>;tag=f1
To: <sip:bob@example.org>
Call-ID: badvia
CSeq: 1 OPTIONS

`
  await s.phone.send(bad(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKv1`))
  await s.phone.send(bad(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKv2;;`))
  await s.run(5)
  const r = s.phone.responses()
  t.equal(r.length, 1)
  t.equal(r[0]!.status, 400)
  t.same(r[0]!.getAll('via'), [`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKv1`])
})

t.test('parser limits map to 413 / 414 / 400 with a reason, still routed back', async t => {
  const s = await setup({ stack: { limits: { parser: { maxMessageSize: 1000, maxLineLength: 200 } } } })
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKbig;rport`).replace('Content-Length: 0', ('X-Pad: ' + 'a'.repeat(150) + '\n').repeat(5)))
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKlong;rport`).replace('sip:example.org', 'sip:' + 'x'.repeat(250) + '.org'))
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKline;rport`).replace('Content-Length: 0', 'X-Pad: ' + 'a'.repeat(250)))
  await s.run(5)
  const r = s.phone.responses()
  t.same(r.map(x => x.status), [413, 414, 400])
  t.equal(r[0]!.reason, 'Message Too Large')
  t.equal(r[2]!.reason, 'Header line too long')
  t.match(r[1]!.get('via')!, /branch=z9hG4bKlong;rport=5060;received=10\.0\.0\.1/)
  t.equal(s.requests.length, 0)
})

t.test('over the transaction limit → 503 with Retry-After', async t => {
  const s = await setup({ stack: { limits: { maxTransactions: 2, retryAfter: 7 } } })
  for (let i = 0; i < 3; i++) await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKl${i};rport`, `c${i}`))
  await s.run(5)
  t.equal(s.requests.length, 2)
  const r = s.phone.responses()
  t.equal(r.length, 1)
  t.equal(r[0]!.status, 503)
  t.equal(r[0]!.get('retry-after'), '7')
  t.equal(s.stack.stats().rejectedOverLimit, 1)
})

t.test('onRequest throwing → 500, the stack survives', async t => {
  const s = await setup()
  s.stack.onRequest = () => { throw new Error('boom') }
  await s.phone.send(register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKthrow;rport`))
  await s.run(5)
  t.equal(s.phone.responses()[0]?.status, 500)
})

// ---------------------------------------------------------------- client side

function options (): SipRequest {
  return new SipRequest('OPTIONS', `sip:bob@${PHONE_IP}`)
    .append('from', '<sip:alice@example.org>;tag=c1')
    .append('to', `<sip:bob@${PHONE_IP}>`)
    .append('call-id', 'opt1')
    .append('cseq', '1 OPTIONS')
}

function inviteReq (): SipRequest {
  return new SipRequest('INVITE', `sip:bob@${PHONE_IP}`)
    .append('route', '<sip:edge.example.org;lr>')
    .append('from', '<sip:alice@example.org>;tag=c1')
    .append('to', `<sip:bob@${PHONE_IP}>`)
    .append('call-id', 'inv-c1')
    .append('cseq', '5 INVITE')
}

t.test('sendRequest adds the Via, retransmits over UDP and gets the final', async t => {
  const s = await setup()
  const finals: SipResponse[] = []
  const req = options()
  const ctx = s.stack.sendRequest(req, { protocol: 'udp', address: PHONE_IP, port: 5060 }, { onFinal: r => finals.push(r) })
  t.match(ctx.branch, /^z9hG4bK[a-z0-9]{16}$/)
  t.equal(req.get('via'), `SIP/2.0/UDP ${STACK_IP}:5060;branch=${ctx.branch};rport`)
  t.equal(req.get('max-forwards'), '70')
  await s.run(600)
  const got = s.phone.requests()
  t.equal(got.length, 2, 'sent and retransmitted (Timer E)')
  s.phone.tr.send(Buffer.from(serializeRes(createResponse(got[0]!, 200, 'OK', 'x'))), { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  t.equal(finals.length, 1)
  t.equal(finals[0]!.status, 200)
  t.equal(ctx.state, 'completed')
  await s.run(5000)
  t.equal(s.stack.transactionCount, 0, 'removed after Timer K')
})

function serializeRes (r: SipResponse): string {
  let s = `SIP/2.0 ${r.status} ${r.reason}\r\n`
  for (const h of r.headers) s += `${h.name}: ${h.value}\r\n`
  return s + 'Content-Length: 0\r\n\r\n'
}

t.test('sendRequest honours a valid, unused branch hint', async t => {
  const s = await setup()
  const dest = { protocol: 'udp' as const, address: PHONE_IP, port: 5060 }
  const a = s.stack.sendRequest(options(), dest, { onFinal: () => {}, branch: 'z9hG4bKproxy.1' })
  t.equal(a.branch, 'z9hG4bKproxy.1')
  t.match(a.request.get('via')!, /;branch=z9hG4bKproxy\.1;rport$/)
  const b = s.stack.sendRequest(options(), dest, { onFinal: () => {}, branch: 'z9hG4bKproxy.1' })
  t.not(b.branch, 'z9hG4bKproxy.1', 'in use → fresh branch')
  const c = s.stack.sendRequest(options(), dest, { onFinal: () => {}, branch: 'nocookie' })
  t.match(c.branch, /^z9hG4bK[a-z0-9]{16}$/)
  const d = s.stack.sendRequest(options(), dest, { onFinal: () => {}, branch: 'z9hG4bK;evil=1' })
  t.match(d.branch, /^z9hG4bK[a-z0-9]{16}$/, 'not a token → fresh branch')
})

t.test('sendRequest: no answer over UDP → 408 at 32 s; TCP refused → 503', async t => {
  const s = await setup()
  const finals: SipResponse[] = []
  s.stack.sendRequest(options(), { protocol: 'udp', address: '10.9.9.9', port: 5060 }, { onFinal: r => finals.push(r) })
  await s.run(31_990)
  t.equal(finals.length, 0)
  await s.run(20)
  t.equal(finals[0]?.status, 408)
  s.stack.sendRequest(options(), { protocol: 'tcp', address: '10.9.9.9', port: 5060 }, { onFinal: r => finals.push(r) })
  await s.run(2)
  t.equal(finals[1]?.status, 503)
  s.stack.sendRequest(options(), { protocol: 'tls', address: '10.9.9.9', port: 5061 }, { onFinal: r => finals.push(r) })
  await s.run(1)
  t.equal(finals[2]?.status, 503, 'no TLS transport at all → 503')
  t.equal(finals.length, 3)
  t.equal(s.stack.transactionCount, 0)
})

t.test('INVITE client over the stack: 180, 486 → ACK sent by the transaction; cancel() waits for a provisional', async t => {
  const s = await setup()
  const prov: SipResponse[] = []
  const finals: SipResponse[] = []
  const ctx = s.stack.sendRequest(inviteReq(), { protocol: 'udp', address: PHONE_IP, port: 5060 }, { onProvisional: r => prov.push(r), onFinal: r => finals.push(r) })
  ctx.cancel() // nothing received yet: CANCEL deferred
  await s.run(5)
  const inv = s.phone.requests()[0]!
  t.equal(s.phone.requests().length, 1, 'no CANCEL before a provisional')
  await s.phone.tr.send(Buffer.from(serializeRes(createResponse(inv, 180, 'Ringing', 'tb'))), { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  t.equal(prov.length, 1)
  const cancel = s.phone.requests()[1]!
  t.equal(cancel.method, 'CANCEL')
  t.equal(cancel.get('via'), inv.get('via'), 'CANCEL has the INVITE branch')
  t.equal(cancel.get('route'), '<sip:edge.example.org;lr>')
  t.equal(cancel.get('cseq'), '5 CANCEL')
  await s.phone.tr.send(Buffer.from(serializeRes(createResponse(cancel, 200, 'OK', 'tb'))), { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.phone.tr.send(Buffer.from(serializeRes(createResponse(inv, 487, 'Request Terminated', 'tb'))), { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  t.equal(finals.length, 1)
  t.equal(finals[0]!.status, 487)
  const ack = s.phone.requests()[2]!
  t.equal(ack.method, 'ACK')
  t.equal(ack.get('via'), inv.get('via'))
  t.equal(ack.get('to'), `<sip:bob@${PHONE_IP}>;tag=tb`)
  await s.run(33_000)
  t.equal(s.stack.transactionCount, 0)
})

t.test('INVITE client: extra 2xx in Accepted go to onStrayResponse when no onAdditional2xx', async t => {
  const s = await setup()
  const finals: SipResponse[] = []
  s.stack.sendRequest(inviteReq(), { protocol: 'udp', address: PHONE_IP, port: 5060 }, { onFinal: r => finals.push(r) })
  await s.run(5)
  const inv = s.phone.requests()[0]!
  const ok = Buffer.from(serializeRes(createResponse(inv, 200, 'OK', 'tb')))
  await s.phone.tr.send(ok, { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  await s.phone.tr.send(ok, { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  t.equal(finals.length, 1)
  t.equal(s.strays.length, 1)
  t.equal(s.phone.requests().length, 1, 'no ACK for 2xx from the transaction')
  // a response for nobody
  await s.phone.tr.send(Buffer.from(serializeRes(createResponse(options().prepend('via', 'SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bKother'), 200, 'OK'))), { protocol: 'udp', address: STACK_IP, port: 5060 })
  await s.run(5)
  t.equal(s.strays.length, 2, 'response with a foreign Via → onStrayResponse')
  await s.run(32_000)
  t.equal(s.stack.transactionCount, 0, 'Timer M removed it')
})

t.test('onFinal throwing does not crash the timer path', async t => {
  const s = await setup()
  s.stack.sendRequest(options(), { protocol: 'udp', address: '10.9.9.9', port: 5060 }, { onFinal: () => { throw new Error('user bug') } })
  await s.run(33_000)
  t.ok(s.logger.records.some(r => r.msg === 'onFinal threw'))
})

t.test('sendStateless, viaFor and localFor (IPv4/IPv6)', async t => {
  const clock = new SimClock(0)
  const rng = new SeededRng(1)
  const net = new SimNetwork({ clock, rng })
  const v4 = net.transport({ protocol: 'udp', address: '10.0.0.9', port: 5060 })
  const v6 = net.transport({ protocol: 'udp', address: 'fd00::9', port: 5062 })
  const tcp6 = net.transport({ protocol: 'tcp', address: 'fd00::9', port: 5060 })
  const stack = new SipStack({ clock, rng, logger: new MemoryLogger(), transports: [v4, v6, tcp6], viaHost: 'sbc.example.org' })
  await stack.start()
  t.equal(stack.localFor('udp', 6), v6)
  t.equal(stack.localFor('udp', 4), v4)
  t.equal(stack.localFor('tcp', 4), tcp6, 'falls back to the protocol when the family has none')
  t.equal(stack.localFor('tls', 4), undefined)
  t.match(stack.viaFor({ protocol: 'udp', address: 'fd00::1', port: 5060 }), /^SIP\/2\.0\/UDP \[fd00::9\]:5062;branch=z9hG4bK[a-z0-9]{16};rport$/)
  t.equal(stack.viaFor({ protocol: 'tcp', address: '10.1.1.1', port: 5060 }, 'z9hG4bKfixed'), 'SIP/2.0/TCP [fd00::9]:5060;branch=z9hG4bKfixed;rport')
  t.throws(() => stack.viaFor({ protocol: 'wss', address: '10.1.1.1', port: 443 }), ResolveError)
  const peer = net.transport({ protocol: 'udp', address: 'fd00::1', port: 5060 })
  await peer.start()
  const got: string[] = []
  peer.on('message', d => got.push(d.toString()))
  t.equal(await stack.sendStateless(new SipResponse(200, 'OK').append('via', 'SIP/2.0/UDP x'), { protocol: 'udp', address: 'fd00::1', port: 5060 }), true)
  t.equal(await stack.sendStateless(new SipResponse(200, 'OK'), { protocol: 'tls', address: 'fd00::1', port: 5061 }), false)
  clock.advance(10)
  t.equal(got.length, 1)
  t.match(got[0]!, /^SIP\/2\.0 200 OK\r\n/)
  await stack.stop()
})

t.test('viaHost for wildcard listeners (string or per transport); a failed start detaches everything', async t => {
  const clock = new SimClock(0)
  const rng = new SeededRng(5)
  const net = new SimNetwork({ clock, rng })
  const v4 = net.transport({ protocol: 'udp', address: '0.0.0.0', port: 5060 })
  const v6 = net.transport({ protocol: 'udp', address: '::', port: 5060 })
  const stack = new SipStack({ clock, rng, logger: new MemoryLogger(), transports: [v4, v6], viaHost: tr => tr === v4 ? '192.0.2.1' : undefined })
  t.match(stack.viaFor({ protocol: 'udp', address: '10.0.0.1', port: 5060 }), /^SIP\/2\.0\/UDP 192\.0\.2\.1:5060;/)
  t.match(stack.viaFor({ protocol: 'udp', address: 'fd00::1', port: 5060 }), /^SIP\/2\.0\/UDP \[::\]:5060;/)
  const s2 = new SipStack({ clock, rng, logger: new MemoryLogger(), transports: [v4], viaHost: 'sip.example.org' })
  t.match(s2.viaFor({ protocol: 'udp', address: '10.0.0.1', port: 5060 }), /^SIP\/2\.0\/UDP sip\.example\.org:5060;/)
  const taken = net.transport({ protocol: 'udp', address: '10.0.0.50', port: 5060 })
  await taken.start()
  const clash = net.transport({ protocol: 'udp', address: '10.0.0.50', port: 5060 })
  const ok = net.transport({ protocol: 'tcp', address: '10.0.0.50', port: 5060 })
  const s3 = new SipStack({ clock, rng, logger: new MemoryLogger(), transports: [ok, clash] })
  await t.rejects(s3.start(), /address in use/)
  t.equal(ok.running, false, 'the transport that did start was stopped again')
})

t.test('resolveTarget: RFC 3263 subset', async t => {
  t.same(await resolveTarget('sip:alice@10.0.0.1'), { protocol: 'udp', address: '10.0.0.1', port: 5060 })
  t.same(await resolveTarget('sip:alice@10.0.0.1:5080;transport=TCP'), { protocol: 'tcp', address: '10.0.0.1', port: 5080 })
  t.same(await resolveTarget('sips:alice@[2001:db8::1]'), { protocol: 'tls', address: '2001:db8::1', port: 5061 })
  t.same(await resolveTarget('sips:alice@[2001:db8::1];transport=ws'), { protocol: 'wss', address: '2001:db8::1', port: 5061 })
  t.same(await resolveTarget('"Bob" <sip:bob@example.org;maddr=10.1.2.3>'), { protocol: 'udp', address: '10.1.2.3', port: 5060 })
  t.same(await resolveTarget('sip:localhost;transport=tcp'), { protocol: 'tcp', address: '127.0.0.1', port: 5060 })
  await t.rejects(resolveTarget('sip:bob@example.org'), ResolveError)
  await t.rejects(resolveTarget('tel:+123'), ResolveError)
  await t.rejects(resolveTarget('sip:bob@10.0.0.1;transport=sctp'), ResolveError)
  await t.rejects(resolveTarget('sip:bob@[::1'))
  t.same(await resolveTarget('sip:bob@example.org', { resolver: async h => h === 'example.org' ? ['192.0.2.7'] : [] }), { protocol: 'udp', address: '192.0.2.7', port: 5060 })
  await t.rejects(resolveTarget('sip:bob@nowhere.org', { resolver: async () => [] }), ResolveError)
  await t.rejects(resolveTarget('sip:bob@nowhere.org', { resolver: async () => { throw new Error('NXDOMAIN') } }), /NXDOMAIN/)
})

t.test('constructor validates timers', async t => {
  t.throws(() => new SipStack({ clock: new SimClock(0), rng: new SeededRng(1), logger: new MemoryLogger(), transports: [], timers: { t1: 0 } }), RangeError)
})

t.test('a request pinned to a connection (flow) leaves over that connection', async t => {
  const s = await setup({ protocol: 'tcp' })
  await s.phone.send(register(`SIP/2.0/TCP ${PHONE_IP}:5060;branch=z9hG4bKf1`))
  await s.run(5)
  const { tx } = s.requests[0]!
  tx.reply(200)
  const flow = { protocol: 'tcp' as const, address: tx.source.address, port: tx.source.port, connectionId: tx.source.connectionId! }
  t.equal(s.stack.transportFor(flow), s.tcp)
  const finals: SipResponse[] = []
  s.stack.sendRequest(options(), flow, { onFinal: r => finals.push(r) })
  await s.run(5)
  const got = s.phone.got.filter(g => g.msg instanceof SipRequest)
  t.equal(got.length, 1)
  t.equal(got[0]!.source.connectionId, tx.source.connectionId, 'same connection as the REGISTER')
  t.match((got[0]!.msg as SipRequest).get('via')!, /^SIP\/2\.0\/TCP 10\.0\.0\.9:5060;branch=z9hG4bK/)
})

t.test('IPv6: received without brackets, response to [addr]:rport', async t => {
  const clock = new SimClock(0)
  const rng = new SeededRng(3)
  const net = new SimNetwork({ clock, rng })
  const stack = new SipStack({ clock, rng, logger: new MemoryLogger(), transports: [net.transport({ protocol: 'udp', address: 'fd00::9', port: 5060 })] })
  await stack.start()
  const ptr = net.transport({ protocol: 'udp', address: 'fd00::1', port: 5099 })
  await ptr.start()
  const phone = new Phone(ptr, clock)
  let via = ''
  stack.onRequest = (req, tx) => { via = req.get('via')!; tx.reply(200) }
  await phone.send(register('SIP/2.0/UDP [fd00::1]:5062;branch=z9hG4bK6;rport'), { protocol: 'udp', address: 'fd00::9', port: 5060 })
  clock.advance(5); await flush(); clock.advance(5)
  t.equal(via, 'SIP/2.0/UDP [fd00::1]:5062;branch=z9hG4bK6;rport=5099;received=fd00::1')
  t.equal(phone.responses()[0]?.status, 200)
  await stack.stop()
})

t.test('fuzz: mutated messages never throw out of the stack and leave no transactions behind', async t => {
  const s = await setup()
  s.stack.onRequest = (req, tx) => { if (req.method !== 'ACK') tx.reply(req.method === 'INVITE' ? 486 : 200, undefined, 'z') }
  const rng = new SeededRng(42)
  const seeds = [
    register(`SIP/2.0/UDP ${PHONE_IP}:5060;branch=z9hG4bKfz;rport`),
    invite(`SIP/2.0/UDP [fd00::1]:5060;branch=z9hG4bKfz2;rport;received=1.2.3.4`),
    cancelOrAck('CANCEL', `SIP/2.0/UDP ${PHONE_IP};branch=old`),
    cancelOrAck('ACK', `SIP/2.0/TCP ${PHONE_IP}:5060;branch=z9hG4bKfz2`, ';tag=z'),
    'SIP/2.0 200 OK\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKzz\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>\nCall-ID: x\nCSeq: 1 OPTIONS\n\n'
  ].map(m => Buffer.from(m.replace(/\n/g, '\r\n')))
  const alphabet = Buffer.from(' ;:,<>[]"\r\n\t=@0123456789abcdefzZ/\\.%\u00ff')
  const source: Source = { protocol: 'udp', address: PHONE_IP, port: 5060, local: { protocol: 'udp', address: STACK_IP, port: 5060 } }
  let threw = 0
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(seeds[rng.int(seeds.length)]!)
    const edits = 1 + rng.int(4)
    for (let e = 0; e < edits; e++) b[rng.int(b.length)] = alphabet[rng.int(alphabet.length)]!
    const cut = rng.next() < 0.1 ? b.subarray(0, rng.int(b.length)) : b
    try { s.stack.receive(cut, source, s.udp) } catch { threw++ }
  }
  t.equal(threw, 0, 'receive never throws')
  await s.run(70_000)
  t.ok(s.phone.got.length + s.phone.unparsed > 100, `and answered many of them (${s.phone.got.length}+${s.phone.unparsed})`)
  t.equal(s.stack.transactionCount, 0, 'every transaction terminated and removed')
  t.equal(s.logger.records.filter(r => r.level === 'error').length, 0, 'no internal error logged')
})
