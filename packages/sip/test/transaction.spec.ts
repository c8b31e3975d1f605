import t from 'tap'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { createResponse, SipRequest, SipResponse, type Source } from '@sipring/sip'
import {
  InviteClientTransaction, NonInviteClientTransaction, InviteServerTransaction, NonInviteServerTransaction,
  TransactionStateError, DEFAULT_TIMERS, type ClientTransaction, type ServerTransaction
} from '../src/transaction/index.js'

const BRANCH = 'z9hG4bKtest1'

function request (method: string, branch = BRANCH): SipRequest {
  return new SipRequest(method, 'sip:bob@example.org')
    .append('via', `SIP/2.0/UDP 10.0.0.1:5060;branch=${branch};rport`)
    .append('max-forwards', '70')
    .append('route', '<sip:p1.example.org;lr>')
    .append('from', '<sip:alice@example.org>;tag=a1')
    .append('to', '<sip:bob@example.org>')
    .append('call-id', 'c1@10.0.0.1')
    .append('cseq', `1 ${method}`)
}

function env (clock: SimClock) {
  return { clock, timers: { ...DEFAULT_TIMERS }, logger: new MemoryLogger() }
}

interface Sent { at: number, text: string }

function harness (reliable = false) {
  const clock = new SimClock(0)
  const sent: Sent[] = []
  const finals: SipResponse[] = []
  const provisionals: SipResponse[] = []
  const extra: SipResponse[] = []
  let terminated = 0
  const send = (b: Buffer): void => { sent.push({ at: clock.now(), text: b.toString() }) }
  const user = {
    onFinal: (r: SipResponse) => { finals.push(r) },
    onProvisional: (r: SipResponse) => { provisionals.push(r) },
    onAdditional2xx: (r: SipResponse) => { extra.push(r) }
  }
  const onTerminated = (): void => { terminated++ }
  return { clock, sent, finals, provisionals, extra, send, user, onTerminated, reliable, env: env(clock), get terminated () { return terminated } }
}

function client (kind: 'invite' | 'non-invite', reliable = false) {
  const h = harness(reliable)
  const req = request(kind === 'invite' ? 'INVITE' : 'OPTIONS')
  const init = { env: h.env, request: req, branch: BRANCH, reliable, send: h.send, user: h.user, onTerminated: h.onTerminated }
  const tx: ClientTransaction = kind === 'invite' ? new InviteClientTransaction(init) : new NonInviteClientTransaction(init)
  tx.start()
  return { h, tx, req }
}

const SOURCE: Source = { protocol: 'udp', address: '10.0.0.1', port: 5060, local: { protocol: 'udp', address: '10.0.0.9', port: 5060 } }

function server (kind: 'invite' | 'non-invite', reliable = false) {
  const h = harness(reliable)
  const req = request(kind === 'invite' ? 'INVITE' : 'REGISTER')
  const init = { env: h.env, request: req, source: SOURCE, reliable, send: h.send, onTerminated: h.onTerminated, onAcceptedAck: (a: SipRequest) => { acks.push(a) } }
  const acks: SipRequest[] = []
  const tx: ServerTransaction = kind === 'invite' ? new InviteServerTransaction(init) : new NonInviteServerTransaction(init)
  return { h, tx, req, acks }
}

const firstLine = (s: Sent): string => s.text.slice(0, s.text.indexOf('\r\n'))

t.test('INVITE client: Timer A doubles (500, 1000, 2000, ...), Timer B at 32 s gives a 408', async t => {
  const { h, tx } = client('invite')
  h.clock.advance(40_000)
  t.same(h.sent.map(s => s.at), [0, 500, 1500, 3500, 7500, 15500, 31500], 'A: 500, 1000, 2000, 4000, 8000, 16000')
  t.equal(h.finals.length, 1)
  t.equal(h.finals[0]!.status, 408)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0, 'no timer left')
})

t.test('INVITE client: reliable transport does not retransmit, still times out with B', async t => {
  const { h } = client('invite', true)
  h.clock.advance(31_999)
  t.equal(h.sent.length, 1)
  t.equal(h.finals.length, 0)
  h.clock.advance(1)
  t.equal(h.finals[0]?.status, 408)
})

t.test('INVITE client: provisional stops retransmissions; non-2xx final → ACK built per §17.1.1.3, Timer D 32 s', async t => {
  const { h, tx, req } = client('invite')
  h.clock.advance(600)
  t.equal(h.sent.length, 2)
  const ringing = createResponse(req, 180, 'Ringing', 'b1')
  tx.receiveResponse(ringing)
  t.equal(tx.state, 'proceeding')
  t.equal(h.provisionals.length, 1)
  h.clock.advance(60_000)
  t.equal(h.sent.length, 2, 'no retransmission in Proceeding, no Timer B')
  t.equal(h.finals.length, 0)
  const busy = createResponse(req, 486, 'Busy Here', 'b1')
  tx.receiveResponse(busy)
  t.equal(tx.state, 'completed')
  t.equal(h.finals[0]!.status, 486)
  const ack = h.sent[2]!.text
  t.match(ack, /^ACK sip:bob@example.org SIP\/2.0\r\n/)
  t.match(ack, /Via: SIP\/2.0\/UDP 10.0.0.1:5060;branch=z9hG4bKtest1;rport\r\n/, 'same branch')
  t.match(ack, /To: <sip:bob@example.org>;tag=b1\r\n/, 'To tag from the response')
  t.match(ack, /CSeq: 1 ACK\r\n/)
  t.match(ack, /Route: <sip:p1.example.org;lr>\r\n/, 'Route copied')
  t.match(ack, /From: <sip:alice@example.org>;tag=a1\r\n/)
  // a retransmitted final → the ACK again, onFinal not called again
  tx.receiveResponse(busy)
  t.equal(h.sent.length, 4)
  t.equal(h.sent[3]!.text, ack)
  t.equal(h.finals.length, 1)
  h.clock.advance(31_999)
  t.equal(tx.state, 'completed')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated', 'Timer D = 32 s on UDP')
  t.equal(h.terminated, 1)
  t.throws(() => { tx.receiveResponse(busy) }, TransactionStateError, 'events after Terminated throw')
})

t.test('INVITE client: reliable → Timer D = 0 (terminated at once after the ACK)', async t => {
  const { h, tx, req } = client('invite', true)
  tx.receiveResponse(createResponse(req, 404, 'Not Found', 'x'))
  t.equal(tx.state, 'terminated')
  t.match(h.sent[1]!.text, /^ACK /)
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
})

t.test('INVITE client: 2xx → Accepted; further 2xx passed up; Timer M = 64*T1 cleans up', async t => {
  const { h, tx, req } = client('invite')
  const ok = createResponse(req, 200, 'OK', 'b1')
  tx.receiveResponse(ok)
  t.equal(tx.state, 'accepted')
  t.equal(h.finals.length, 1)
  t.equal(h.sent.length, 1, 'no ACK for 2xx from the transaction')
  tx.receiveResponse(ok)
  const ok2 = createResponse(req, 200, 'OK', 'b2') // another fork
  tx.receiveResponse(ok2)
  t.equal(h.finals.length, 1, 'onFinal once')
  t.equal(h.extra.length, 2, 'each further 2xx passed up')
  tx.receiveResponse(createResponse(req, 500, 'x', 'b3'))
  t.equal(h.extra.length, 2, 'non-2xx absorbed in Accepted')
  h.clock.advance(31_999)
  t.equal(tx.state, 'accepted')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
})

t.test('INVITE client: transport error in Calling → 503 once', async t => {
  const { h, tx } = client('invite')
  tx.transportError()
  t.equal(h.finals[0]?.status, 503)
  t.equal(tx.state, 'terminated')
  h.clock.advance(100_000)
  t.equal(h.finals.length, 1)
  t.equal(h.clock.pending, 0)
})

t.test('non-INVITE client: Timer E doubles then caps at T2, Timer F at 32 s → 408', async t => {
  const { h, tx } = client('non-invite')
  h.clock.advance(40_000)
  const at = h.sent.map(s => s.at)
  t.same(at.slice(0, 6), [0, 500, 1500, 3500, 7500, 11500], '500, 1000, 2000, 4000, then 4000 (T2)')
  for (let i = 4; i < at.length; i++) t.equal(at[i]! - at[i - 1]!, 4000, `interval ${i} capped at T2`)
  t.equal(at[at.length - 1], 31500)
  t.equal(h.finals[0]?.status, 408)
  t.equal(tx.state, 'terminated')
  t.equal(h.clock.pending, 0)
})

t.test('non-INVITE client: Proceeding retransmits every T2; final → Completed, Timer K = T4 then terminated', async t => {
  const { h, tx, req } = client('non-invite')
  h.clock.advance(600) // sent at 0, 500; next E at 1500
  tx.receiveResponse(createResponse(req, 100, 'Trying'))
  t.equal(tx.state, 'proceeding')
  t.equal(h.provisionals.length, 0, '100 not passed up for non-INVITE')
  tx.receiveResponse(createResponse(req, 183, 'Progress'))
  t.equal(h.provisionals.length, 1)
  h.clock.advance(10_000) // fires at 1500 (interval was set before), then every 4000
  t.same(h.sent.map(s => s.at), [0, 500, 1500, 5500, 9500])
  tx.receiveResponse(createResponse(req, 200, 'OK', 'x'))
  t.equal(tx.state, 'completed')
  t.equal(h.finals[0]?.status, 200)
  tx.receiveResponse(createResponse(req, 200, 'OK', 'x'))
  t.equal(h.finals.length, 1, 'retransmission absorbed')
  h.clock.advance(4_999)
  t.equal(tx.state, 'completed')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.clock.pending, 0)
})

t.test('non-INVITE client: reliable → no E, K = 0', async t => {
  const { h, tx, req } = client('non-invite', true)
  h.clock.advance(10_000)
  t.equal(h.sent.length, 1)
  tx.receiveResponse(createResponse(req, 200, 'OK'))
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
})

t.test('INVITE server: 100 Trying after 200 ms when the TU is silent', async t => {
  const { h, tx } = server('invite')
  h.clock.advance(199)
  t.equal(h.sent.length, 0)
  h.clock.advance(1)
  t.equal(h.sent.length, 1)
  t.equal(firstLine(h.sent[0]!), 'SIP/2.0 100 Trying')
  t.equal(tx.state, 'proceeding')
})

t.test('INVITE server: no 100 when the TU answers a provisional first; request retransmission → last provisional', async t => {
  const { h, tx, req } = server('invite')
  h.clock.advance(50)
  tx.respond(createResponse(req, 180, 'Ringing', 't1'))
  h.clock.advance(1000)
  t.equal(h.sent.length, 1)
  tx.receiveRequest(req)
  t.equal(h.sent.length, 2)
  t.equal(firstLine(h.sent[1]!), 'SIP/2.0 180 Ringing')
})

t.test('INVITE server: non-2xx → G doubling capped at T2, ACK absorbed → Confirmed, Timer I = T4', async t => {
  const { h, tx, req, acks } = server('invite')
  tx.respond(createResponse(req, 486, 'Busy Here', 't1'))
  t.equal(tx.state, 'completed')
  h.clock.advance(12_000)
  t.same(h.sent.map(s => s.at), [0, 500, 1500, 3500, 7500, 11500], 'G: 500, 1000, 2000, 4000, 4000')
  tx.receiveRequest(req)
  t.equal(firstLine(h.sent[h.sent.length - 1]!), 'SIP/2.0 486 Busy Here', 'request retransmission → final again')
  const n = h.sent.length
  const ack = request('ACK')
  tx.receiveRequest(ack)
  t.equal(tx.state, 'confirmed')
  t.equal(acks.length, 0, 'ACK for non-2xx absorbed, not passed up')
  tx.receiveRequest(ack)
  h.clock.advance(4_999)
  t.equal(h.sent.length, n, 'no retransmission after ACK')
  t.equal(tx.state, 'confirmed')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
})

t.test('INVITE server: Timer H = 64*T1 without ACK', async t => {
  const { h, tx, req } = server('invite')
  tx.respond(createResponse(req, 404, 'Not Found', 't1'))
  h.clock.advance(31_999)
  t.equal(tx.state, 'completed')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.clock.pending, 0)
})

t.test('INVITE server: 2xx → Accepted, TU 2xx retransmissions sent, request absorbed, ACK passed up, Timer L', async t => {
  const { h, tx, req, acks } = server('invite')
  const ok = createResponse(req, 200, 'OK', 't1')
  tx.respond(ok)
  t.equal(tx.state, 'accepted')
  tx.respond(ok)
  t.equal(h.sent.length, 2, 'TU retransmission of the 2xx goes out')
  tx.receiveRequest(req)
  t.equal(h.sent.length, 2, 'INVITE retransmission absorbed in Accepted')
  tx.receiveRequest(request('ACK'))
  t.equal(acks.length, 1, 'ACK in Accepted passed to the TU')
  t.throws(() => { tx.respond(createResponse(req, 486, 'Busy', 't1')) }, TransactionStateError, 'non-2xx after 2xx is invalid')
  h.clock.advance(31_999)
  t.equal(tx.state, 'accepted')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
})

t.test('INVITE server: reliable → no G, ACK terminates at once (I = 0)', async t => {
  const { h, tx, req } = server('invite', true)
  tx.respond(createResponse(req, 486, 'Busy Here', 't1'))
  h.clock.advance(5000)
  t.equal(h.sent.length, 1)
  tx.receiveRequest(request('ACK'))
  t.equal(tx.state, 'terminated')
  t.equal(h.clock.pending, 0)
})

t.test('non-INVITE server: Trying absorbs, Proceeding/Completed retransmit, J = 64*T1; invalid transitions throw', async t => {
  const { h, tx, req } = server('non-invite')
  tx.receiveRequest(req)
  t.equal(h.sent.length, 0, 'Trying absorbs retransmissions')
  tx.respond(createResponse(req, 100, 'Trying'))
  t.equal(tx.state, 'proceeding')
  tx.receiveRequest(req)
  t.equal(h.sent.length, 2)
  tx.respond(createResponse(req, 200, 'OK', 'x'))
  t.equal(tx.state, 'completed')
  tx.receiveRequest(req)
  t.equal(firstLine(h.sent[3]!), 'SIP/2.0 200 OK')
  t.throws(() => { tx.respond(createResponse(req, 200, 'OK', 'x')) }, TransactionStateError)
  t.throws(() => { tx.respond(new SipResponse(99, 'bad')) }, RangeError)
  h.clock.advance(31_999)
  t.equal(tx.state, 'completed')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
})

t.test('non-INVITE server: reliable → J = 0', async t => {
  const { h, tx, req } = server('non-invite', true)
  tx.respond(createResponse(req, 200, 'OK', 'x'))
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
})

t.test('timers follow a configured T1/T2', async t => {
  const h = harness()
  h.env.timers.t1 = 100
  h.env.timers.t2 = 300
  const tx = new NonInviteClientTransaction({ env: h.env, request: request('OPTIONS'), branch: BRANCH, reliable: false, send: h.send, user: h.user, onTerminated: h.onTerminated })
  tx.start()
  h.clock.advance(10_000)
  t.same(h.sent.slice(0, 5).map(s => s.at), [0, 100, 300, 600, 900])
  t.equal(h.finals[0]?.status, 408)
  t.equal(h.finals.length, 1)
  t.equal(h.clock.now(), 10_000)
})

t.test('non-INVITE server: a TU that never answers cannot leak the transaction (guard at 64*T1 + T4)', async t => {
  const { h, tx, req } = server('non-invite')
  tx.respond(createResponse(req, 100, 'Trying'))
  h.clock.advance(36_999)
  t.equal(tx.state, 'proceeding')
  h.clock.advance(1)
  t.equal(tx.state, 'terminated')
  t.equal(h.terminated, 1)
  t.equal(h.clock.pending, 0)
  t.throws(() => { tx.respond(createResponse(req, 200, 'OK')) }, TransactionStateError, 'a late answer is refused')
})

t.test('INVITE client: no final within 64*T1 after a CANCEL → synthesized 408, terminated', async t => {
  const { h, tx, req } = client('invite')
  tx.receiveResponse(createResponse(req, 180, 'Ringing', 'b'))
  h.clock.advance(100_000)
  t.equal(tx.state, 'proceeding', 'Proceeding has no timer of its own')
  ;(tx as InviteClientTransaction).cancelSent()
  h.clock.advance(31_999)
  t.equal(h.finals.length, 0)
  h.clock.advance(1)
  t.equal(h.finals[0]?.status, 408)
  t.equal(tx.state, 'terminated')
  t.equal(h.clock.pending, 0)
})

t.test('INVITE client: the CANCEL guard is disarmed by the final response', async t => {
  const { h, tx, req } = client('invite', true)
  tx.receiveResponse(createResponse(req, 180, 'Ringing', 'b'))
  ;(tx as InviteClientTransaction).cancelSent()
  tx.receiveResponse(createResponse(req, 487, 'Request Terminated', 'b'))
  t.equal(h.finals[0]?.status, 487)
  t.equal(h.clock.pending, 0)
})

t.test('INVITE server: a TU that never answers gets a 408 sent for it after maxProceeding', async t => {
  const h = harness()
  const req = request('INVITE')
  const tx = new InviteServerTransaction({ env: h.env, request: req, source: SOURCE, reliable: false, send: h.send, onTerminated: h.onTerminated, maxProceeding: 10_000 })
  tx.respond(createResponse(req, 180, 'Ringing', 'rr'))
  h.clock.advance(9_999)
  t.equal(tx.state, 'proceeding')
  h.clock.advance(1)
  t.equal(tx.state, 'completed')
  t.equal(firstLine(h.sent[h.sent.length - 1]!), 'SIP/2.0 408 Request Timeout')
  t.match(h.sent[h.sent.length - 1]!.text, /To: <sip:bob@example.org>;tag=rr\r\n/, 'same To tag as the provisional')
  h.clock.advance(40_000)
  t.equal(tx.state, 'terminated', 'then Timer H')
  t.equal(h.clock.pending, 0)
})
