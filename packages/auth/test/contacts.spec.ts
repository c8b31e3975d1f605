import t from 'tap'
import type { Binding } from '@sipring/interface'
import { parseMessage, type SipRequest } from '@sipring/sip'
import { contactLimitExceeded, registerAor } from '@sipring/auth'

function reg (contacts: string[], expires?: string, to = '<sip:bob@Example.org>'): SipRequest {
  return parseMessage(Buffer.from([
    'REGISTER sip:example.org SIP/2.0', 'Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx', 'From: <sip:bob@example.org>;tag=1',
    `To: ${to}`, 'Call-ID: c', 'CSeq: 1 REGISTER', ...contacts.map(c => `Contact: ${c}`), ...(expires !== undefined ? [`Expires: ${expires}`] : []), 'Content-Length: 0', '', ''
  ].join('\r\n'))) as SipRequest
}
const b = (contact: string, extra: Partial<Binding> = {}): Binding => ({ aor: 'sip:bob@example.org', contact, expires: 0, q: 1, callId: 'x', cseq: 1, path: [], updated: 0, ...extra })

t.test('contact limit per user', async t => {
  t.equal(registerAor(reg([])), 'sip:bob@example.org')
  t.equal(registerAor(reg([]).set('to', 'garbage<')), undefined)
  t.equal(registerAor(reg([]).remove('to')), undefined)
  const two = [b('sip:bob@192.0.2.1'), b('sip:bob@192.0.2.2')]
  t.equal(contactLimitExceeded(reg(['<sip:bob@192.0.2.3>']), two, 2), true, 'a third contact')
  t.equal(contactLimitExceeded(reg(['<sip:bob@192.0.2.3>']), two, 3), false)
  t.equal(contactLimitExceeded(reg(['<sip:bob@192.0.2.1>']), two, 2), false, 'refreshing an existing contact')
  t.equal(contactLimitExceeded(reg(['<sip:bob@192.0.2.1>;expires=0', '<sip:bob@192.0.2.3>']), two, 2), false, 'one removed, one added')
  t.equal(contactLimitExceeded(reg(['<sip:bob@192.0.2.3>'], '0'), two, 2), false, 'Expires: 0 adds nothing')
  t.equal(contactLimitExceeded(reg(['*'], '0'), two, 1), false, 'wildcard left to the registrar')
  const flow = [b('sip:bob@10.0.0.1:5060', { instance: '"<urn:uuid:1>"', regId: 1 })]
  t.equal(contactLimitExceeded(reg(['<sip:bob@10.0.0.9:5060>;+sip.instance="<urn:uuid:1>";reg-id=1']), flow, 1), false, 'same instance and reg-id replaces the flow')
  t.equal(contactLimitExceeded(reg(['<sip:bob@10.0.0.9:5060>;+sip.instance="<urn:uuid:1>";reg-id=2']), flow, 1), true, 'another reg-id is a new flow')
})
