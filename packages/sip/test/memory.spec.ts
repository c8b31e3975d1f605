// What transactions keep while they wait for a timer after their final (RFC 6026 Accepted 32 s,
// Completed Timer D/K), the string-copy helper, and the parser → registrar/proxy parse hand-off.
import t from 'tap'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { createResponse, parseMessage, parseNameAddr, parseUri, SipRequest, SipResponse, type Source } from '@sipring/sip'
import {
  DEFAULT_TIMERS, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction, ownString, slimMessage
} from '../src/transaction/index.js'

const SOURCE: Source = { protocol: 'udp', address: '10.0.0.1', port: 5060, local: { protocol: 'udp', address: '10.0.0.9', port: 5060 } }

function request (method: string): SipRequest {
  const r = new SipRequest(method, 'sip:bob@example.org')
    .append('via', 'SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKmem1;rport')
    .append('max-forwards', '70')
    .append('record-route', '<sip:p1.example.org;lr>')
    .append('from', '<sip:alice@example.org>;tag=a1')
    .append('to', '<sip:bob@example.org>')
    .append('call-id', 'c1@10.0.0.1')
    .append('cseq', `1 ${method}`)
    .append('contact', '<sip:alice@10.0.0.1>')
    .append('content-type', 'application/sdp')
  r.body = Buffer.from('v=0\r\n')
  return r
}

const env = (clock: SimClock) => ({ clock, timers: { ...DEFAULT_TIMERS }, logger: new MemoryLogger() })
const names = (m: SipRequest | SipResponse): string[] => m.headers.map(h => h.name)

t.test('ownString / slimMessage', async t => {
  const long = 'SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabcdef'
  t.equal(ownString(long), long)
  t.equal(ownString('short'), 'short')
  const req = request('INVITE')
  const slim = slimMessage(req)
  t.ok(slim instanceof SipRequest)
  t.equal(slim.method, 'INVITE')
  t.equal(slim.uri, 'sip:bob@example.org')
  t.same(names(slim), ['via', 'from', 'to', 'call-id', 'cseq'], 'only what createResponse needs')
  t.equal(slim.body.length, 0, 'no body')
  t.equal(slim.get('to'), req.get('to'))
  t.equal(req.headers.length, 9, 'the original is untouched')
  const res = slimMessage(createResponse(req, 200, 'OK', 'tt'))
  t.ok(res instanceof SipResponse)
  t.equal(res.status, 200)
  t.equal(res.get('to'), '<sip:bob@example.org>;tag=tt')
  // a response built from a slim request is the same as one built from the full request
  t.same(createResponse(slim, 487, undefined, 'x').headers, createResponse(req, 487, undefined, 'x').headers)
})

t.test('INVITE server transaction in Accepted keeps a reduced request and 2xx, and no 2xx bytes', async t => {
  const clock = new SimClock(0)
  const sent: string[] = []
  const tx = new InviteServerTransaction({ env: env(clock), request: request('INVITE'), source: SOURCE, reliable: false, send: b => { sent.push(b.toString()) }, onTerminated: () => {} })
  tx.reply(180, 'Ringing', 'tt')
  t.equal(tx.request.headers.length, 9, 'full request while proceeding')
  const ok = createResponse(tx.request, 200, 'OK', 'tt')
  ok.append('contact', '<sip:bob@10.0.0.2>')
  tx.respond(ok)
  t.equal(tx.state, 'accepted')
  t.same(names(tx.request), ['via', 'from', 'to', 'call-id', 'cseq'])
  t.equal(tx.lastResponse?.status, 200)
  t.equal(tx.isFinal, true)
  t.equal(tx.lastResponse?.get('to'), '<sip:bob@example.org>;tag=tt', 'To tag kept (CANCEL answers use it)')
  t.notOk(tx.lastResponse?.has('contact'))
  tx.receiveRequest(request('INVITE'))
  t.equal(sent.length, 2, 'a retransmitted INVITE is absorbed in Accepted (nothing resent)')
  tx.respond(createResponse(tx.request, 200, 'OK', 'tt'))
  t.equal(sent.length, 3, 'a further 2xx from the TU still goes out')
  t.match(sent[2]!, /^SIP\/2\.0 200 OK\r\n/)
  clock.advance(32_000)
  t.equal(tx.state, 'terminated', 'Timer L')
})

t.test('INVITE client transaction: Accepted keeps a reduced request; further 2xx still reach the TU', async t => {
  const clock = new SimClock(0)
  const extra: SipResponse[] = []
  const req = request('INVITE')
  const tx = new InviteClientTransaction({ env: env(clock), request: req, branch: 'z9hG4bKmem1', reliable: false, send: () => {}, user: { onFinal: () => {}, onAdditional2xx: r => { extra.push(r) } }, onTerminated: () => {} })
  tx.start()
  tx.receiveResponse(createResponse(req, 200, 'OK', 'tt'))
  t.equal(tx.state, 'accepted')
  t.same(names(tx.request), ['via', 'from', 'to', 'call-id', 'cseq'])
  tx.receiveResponse(createResponse(req, 200, 'OK', 'tt'))
  t.equal(extra.length, 1)
  clock.advance(40_000)
  t.equal(tx.state, 'terminated')
  t.equal(clock.pending, 0, 'no timer left (Timer A/B were armed before the send and cancelled)')
})

t.test('INVITE client transaction: the ACK for a non-2xx is built from the full request', async t => {
  const clock = new SimClock(0)
  const sent: string[] = []
  const req = request('INVITE')
  const tx = new InviteClientTransaction({ env: env(clock), request: req, branch: 'z9hG4bKmem1', reliable: false, send: b => { sent.push(b.toString()) }, user: { onFinal: () => {} }, onTerminated: () => {} })
  tx.start()
  tx.receiveResponse(createResponse(req, 486, 'Busy Here', 'tt'))
  t.match(sent[1]!, /^ACK sip:bob@example\.org SIP\/2\.0\r\n/)
  t.match(sent[1]!, /\r\nRoute: |\r\nTo: <sip:bob@example\.org>;tag=tt\r\n/)
  t.same(names(tx.request), ['via', 'from', 'to', 'call-id', 'cseq'])
  tx.receiveResponse(createResponse(req, 486, 'Busy Here', 'tt'))
  t.equal(sent.length, 3, 'the ACK is resent for a retransmitted final')
  t.equal(sent[2], sent[1])
})

t.test('non-INVITE client transaction lets go of its TU once the final was delivered', async t => {
  const clock = new SimClock(0)
  const finals: SipResponse[] = []
  const user = { onFinal: (r: SipResponse) => { finals.push(r) } }
  const req = request('BYE')
  const tx = new NonInviteClientTransaction({ env: env(clock), request: req, branch: 'z9hG4bKmem2', reliable: false, send: () => {}, user, onTerminated: () => {} })
  tx.start()
  t.equal(tx.user, user)
  tx.receiveResponse(createResponse(req, 200, 'OK'))
  t.equal(finals.length, 1)
  t.equal(tx.state, 'completed')
  t.not(tx.user, user, 'released while waiting for Timer K')
  tx.receiveResponse(createResponse(req, 200, 'OK'))
  t.equal(finals.length, 1, 'retransmissions absorbed')
  clock.advance(DEFAULT_TIMERS.t4)
  t.equal(tx.state, 'terminated')
  t.equal(clock.pending, 0)
})

t.test('parse hand-off: the parser\'s URIs/name-addrs are taken over once, then parsed afresh', async t => {
  const wire = 'REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKho1\r\n' +
    'From: <sip:alice@example.org>;tag=a\r\nTo: <sip:alice@example.org>\r\nCall-ID: ho1\r\nCSeq: 1 REGISTER\r\n' +
    'Contact: <sip:alice@10.0.0.1;transport=udp>;expires=60\r\nContent-Length: 0\r\n\r\n'
  const msg = parseMessage(Buffer.from(wire)) as SipRequest
  const contact = msg.get('contact')!
  const a = parseNameAddr(contact)
  const b = parseNameAddr(contact)
  t.not(a, b, 'each object is handed out at most once')
  t.same(a, b, 'and equals a fresh parse')
  a.params.set('expires', '0')
  t.equal(parseNameAddr(contact).params.get('expires'), '60', 'mutating a taken-over object changes nothing else')
  const u1 = parseUri('sip:alice@10.0.0.1;transport=udp')
  const u2 = parseUri('sip:alice@10.0.0.1;transport=udp')
  t.not(u1, u2)
  t.same(u1, u2)
  t.same(parseUri(msg.uri), parseUri('sip:example.org'))
  // a new message forgets what the previous one offered
  parseMessage(Buffer.from(wire.replace('ho1', 'ho2').replace('ho1', 'ho2')))
  parseMessage(Buffer.from('OPTIONS sip:x@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKho3\r\nFrom: <sip:a@example.org>;tag=1\r\nTo: <sip:x@example.org>\r\nCall-ID: ho3\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n'))
  t.throws(() => parseUri('sip:'), 'bad input still throws')
})
