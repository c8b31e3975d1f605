import t from 'tap'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import type { Source } from '@sipring/interface'
import { LocationStore } from '@sipring/location'
import { SipRequest, parseNameAddr, serialize, parseMessage, type SipResponse } from '@sipring/sip'
import { createRegistrar, type RegistrarOptions } from '@sipring/registrar'

const UDP: Source = { protocol: 'udp', address: '192.0.2.10', port: 5062, local: { protocol: 'udp', address: '198.51.100.1', port: 5060 } }
const TCP: Source = { protocol: 'tcp', address: '192.0.2.10', port: 40001, connectionId: 'c-17', local: { protocol: 'tcp', address: '198.51.100.1', port: 5060 } }

function setup (opts: Partial<RegistrarOptions> = {}, limits: { maxContactsPerAor?: number } = {}) {
  const clock = new SimClock()
  const logger = new MemoryLogger()
  const location = new LocationStore({ clock, logger, limits })
  const registrar = createRegistrar({ location, clock, logger, nodeId: 'node-a', ...opts })
  return { clock, location, registrar, logger }
}

interface RegOpts {
  to?: string
  contacts?: string[]
  expires?: string
  callId?: string
  cseq?: number | string
  headers?: Array<[string, string]>
  vias?: number
}
function register (o: RegOpts = {}): SipRequest {
  const r = new SipRequest('REGISTER', 'sip:example.org')
  for (let i = 0; i < (o.vias ?? 1); i++) r.append('via', `SIP/2.0/UDP 192.0.2.${10 + i}:5062;branch=z9hG4bK${i}abc;rport`)
  r.append('max-forwards', '70')
  r.append('to', o.to ?? '<sip:alice@example.org>')
  r.append('from', '<sip:alice@example.org>;tag=ft1')
  r.append('call-id', o.callId ?? 'call-1@ua')
  r.append('cseq', typeof o.cseq === 'string' ? o.cseq : `${o.cseq ?? 1} REGISTER`)
  for (const c of o.contacts ?? []) r.append('contact', c)
  if (o.expires !== undefined) r.append('expires', o.expires)
  for (const [n, v] of o.headers ?? []) r.append(n, v)
  return r
}

function contacts (res: SipResponse): Array<{ uri: string, expires: string | null | undefined, params: Map<string, string | null> }> {
  return res.getAll('contact').map(v => { const na = parseNameAddr(v); return { uri: na.uri, expires: na.params.get('expires'), params: na.params } })
}

t.test('add, refresh, remove one, query', async t => {
  const { registrar, clock, location } = setup()
  let res = await registrar.handle(register({ contacts: ['"Alice" <sip:alice@192.0.2.10:5062;transport=udp>'], headers: [['user-agent', 'Phone/1.0']] }), UDP)
  t.equal(res.status, 200)
  t.match(res.get('to'), /;tag=[0-9a-f]{16}$/)
  t.same(contacts(res).map(c => [c.uri, c.expires]), [['sip:alice@192.0.2.10:5062;transport=udp', '3600']])
  t.match(res.get('date'), /^Thu, 01 Jan 2026 00:00:00 GMT$/)
  const b = location.lookup('sip:alice@example.org')[0]!
  t.same(b.received, { protocol: 'udp', address: '192.0.2.10', port: 5062 })
  t.equal(b.userAgent, 'Phone/1.0')
  t.equal(b.node, 'node-a')
  t.equal(b.callId, 'call-1@ua')
  t.equal(b.cseq, 1)
  // the response serializes and parses back
  t.equal((parseMessage(serialize(res)) as SipResponse).status, 200)

  clock.advance(100_000)
  res = await registrar.handle(register({ contacts: ['<sip:alice@192.0.2.10:5062;transport=UDP>'], expires: '1800', cseq: 2 }), UDP)
  t.equal(res.status, 200)
  t.same(contacts(res).map(c => [c.uri, c.expires]), [['sip:alice@192.0.2.10:5062;transport=UDP', '1800']], 'refreshed, same binding')

  // second device
  res = await registrar.handle(register({ contacts: ['<sip:alice@192.0.2.99>;expires=600'], callId: 'call-2', cseq: 1 }), UDP)
  t.equal(contacts(res).length, 2)

  // query: no Contact, lists the bindings with the time left
  clock.advance(100_000)
  res = await registrar.handle(register({ callId: 'q', cseq: 1 }), UDP)
  t.equal(res.status, 200)
  t.same(contacts(res).map(c => c.expires).sort(), ['1700', '500'])

  // remove one
  res = await registrar.handle(register({ contacts: ['<sip:alice@192.0.2.99>;expires=0'], callId: 'call-2', cseq: 2 }), UDP)
  t.equal(res.status, 200)
  t.same(contacts(res).map(c => c.uri), ['sip:alice@192.0.2.10:5062;transport=UDP'])
})

t.test('remove all with *; wildcard misuse', async t => {
  const { registrar, location } = setup()
  await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>', '<sip:b@2.2.2.2>'] }), UDP)
  t.equal(location.lookup('sip:alice@example.org').length, 2)
  let res = await registrar.handle(register({ contacts: ['*'], cseq: 2 }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid wildcard: * requires Expires: 0')
  res = await registrar.handle(register({ contacts: ['*'], expires: '10', cseq: 2 }), UDP)
  t.equal(res.status, 400)
  res = await registrar.handle(register({ contacts: ['*', '<sip:c@3.3.3.3>'], expires: '0', cseq: 2 }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid wildcard: * used with other contacts')
  t.equal(location.lookup('sip:alice@example.org').length, 2)
  res = await registrar.handle(register({ contacts: ['*'], expires: '0', cseq: 3 }), UDP)
  t.equal(res.status, 200)
  t.same(res.getAll('contact'), [])
  t.same(location.lookup('sip:alice@example.org'), [])
})

t.test('423 Interval Too Brief with Min-Expires; cap to maxExpires; default expires', async t => {
  const { registrar, location } = setup({ minExpires: 60, maxExpires: 3600, defaultExpires: 1200 })
  let res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>;expires=30'] }), UDP)
  t.equal(res.status, 423)
  t.equal(res.get('min-expires'), '60')
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], expires: '59' }), UDP)
  t.equal(res.status, 423)
  t.same(location.lookup('sip:alice@example.org'), [])
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>;expires=86400'], cseq: 2 }), UDP)
  t.equal(res.status, 200)
  t.equal(contacts(res)[0]!.expires, '3600')
  res = await registrar.handle(register({ contacts: ['<sip:b@1.1.1.1>'], cseq: 3, expires: '99999999999999999' }), UDP)
  t.equal(res.status, 200)
  t.ok(contacts(res).every(c => c.expires === '3600'))
  res = await registrar.handle(register({ contacts: ['<sip:c@1.1.1.1>'], cseq: 4 }), UDP)
  t.equal(contacts(res).find(c => c.uri === 'sip:c@1.1.1.1')!.expires, '1200')
  // contact expires param wins over the header
  res = await registrar.handle(register({ contacts: ['<sip:d@1.1.1.1>;expires=100'], expires: '30', cseq: 5 }), UDP)
  t.equal(res.status, 200)
  t.equal(contacts(res).find(c => c.uri === 'sip:d@1.1.1.1')!.expires, '100')
  res = await registrar.handle(register({ contacts: ['<sip:d@1.1.1.1>;expires=soon'], cseq: 6 }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid expires param in contact')
  res = await registrar.handle(register({ contacts: ['<sip:d@1.1.1.1>'], expires: '-1', cseq: 6 }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid Expires header')
})

t.test('q ordering and bad q', async t => {
  const { registrar } = setup()
  const res = await registrar.handle(register({ contacts: ['<sip:low@1.1.1.1>;q=0.1', '<sip:high@1.1.1.1>;q=0.9', '<sip:mid@1.1.1.1>;q=0.5'] }), UDP)
  t.same(contacts(res).map(c => c.uri), ['sip:high@1.1.1.1', 'sip:mid@1.1.1.1', 'sip:low@1.1.1.1'])
  t.equal(contacts(res)[0]!.params.get('q'), '0.9')
  for (const q of ['1.5', '2', '0.1234', 'x', '-0.1']) {
    const r = await registrar.handle(register({ contacts: [`<sip:x@1.1.1.1>;q=${q}`], cseq: 9 }), UDP)
    t.equal(r.status, 400, `q=${q}`)
    t.equal(r.reason, 'Invalid q param in contact')
  }
})

t.test('Call-ID/CSeq out of order → 400 Invalid CSeq number', async t => {
  const { registrar, location } = setup()
  t.equal((await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], cseq: 10 }), UDP)).status, 200)
  let res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>;expires=0'], cseq: 9 }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid CSeq number')
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>;expires=0'], cseq: 10 }), UDP)
  t.equal(res.status, 400)
  t.equal(location.lookup('sip:alice@example.org').length, 1)
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>;expires=0'], cseq: 11 }), UDP)
  t.equal(res.status, 200)
  t.equal(location.lookup('sip:alice@example.org').length, 0)
})

t.test('Path stored (RFC 3327) and echoed only with Supported: path', async t => {
  const { registrar, location } = setup()
  const path = [['path', '<sip:edge1.example.net;lr>'], ['path', '<sip:edge2.example.net;lr>']] as Array<[string, string]>
  let res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], vias: 3, headers: path }), UDP)
  t.equal(res.status, 200)
  t.same(res.getAll('path'), [], 'no echo without Supported: path')
  t.same(location.lookup('sip:alice@example.org')[0]!.path, ['<sip:edge1.example.net;lr>', '<sip:edge2.example.net;lr>'])
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], cseq: 2, vias: 3, headers: [...path, ['supported', 'path']] }), UDP)
  t.same(res.getAll('path'), ['<sip:edge1.example.net;lr>', '<sip:edge2.example.net;lr>'])
  res = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], cseq: 3, headers: [['path', 'garbage<']] }), UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid Path header')
})

t.test('RFC 5626: instance + reg-id replaces the flow; Require: outbound', async t => {
  const { registrar, location } = setup()
  const inst = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
  let res = await registrar.handle(register({
    contacts: [`<sip:alice@192.0.2.10:40001;transport=tcp;ob>;${inst};reg-id=1`],
    headers: [['supported', 'path, outbound']]
  }), TCP)
  t.equal(res.status, 200)
  t.equal(res.get('require'), 'outbound')
  t.equal(res.get('flow-timer'), undefined, 'no Flow-Timer unless configured')
  const c0 = contacts(res)[0]!
  t.equal(c0.params.get('+sip.instance'), '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"')
  t.equal(c0.params.get('reg-id'), '1')
  let b = location.lookup('sip:alice@example.org')[0]!
  t.equal(b.instance, '<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>')
  t.equal(b.regId, 1)
  t.same(b.received, { protocol: 'tcp', address: '192.0.2.10', port: 40001, connectionId: 'c-17' })

  // the UA reconnects (new connection, new source port, new Call-ID) with the same instance/reg-id
  const TCP2: Source = { ...TCP, port: 40002, connectionId: 'c-18' }
  res = await registrar.handle(register({
    contacts: [`<sip:alice@192.0.2.10:40002;transport=tcp;ob>;${inst};reg-id=1`],
    callId: 'call-new', headers: [['supported', 'outbound']]
  }), TCP2)
  t.equal(res.status, 200)
  t.equal(contacts(res).length, 1, 'old flow replaced')
  b = location.lookup('sip:alice@example.org')[0]!
  t.equal(b.contact, 'sip:alice@192.0.2.10:40002;transport=tcp;ob')
  t.equal(b.received?.connectionId, 'c-18')

  // without Supported: outbound: reg-id ignored, no Require
  res = await registrar.handle(register({ to: '<sip:bob@example.org>', contacts: [`<sip:bob@192.0.2.10:40001;transport=tcp>;${inst};reg-id=1`] }), TCP)
  t.equal(res.status, 200)
  t.equal(res.get('require'), undefined)
  t.equal(location.lookup('sip:bob@example.org')[0]!.regId, undefined)
  // via a proxy whose Path lacks `ob`: reg-id ignored too
  res = await registrar.handle(register({ to: '<sip:carol@example.org>', vias: 2, contacts: [`<sip:c@192.0.2.10>;${inst};reg-id=1`], headers: [['supported', 'outbound'], ['path', '<sip:edge.example.net;lr>']] }), TCP)
  t.equal(res.get('require'), undefined)
  // ... and honoured when the edge proxy's Path carries `ob`
  res = await registrar.handle(register({ to: '<sip:dave@example.org>', vias: 2, contacts: [`<sip:d@192.0.2.10>;${inst};reg-id=1`], headers: [['supported', 'outbound, path'], ['path', '<sip:edge.example.net;lr;ob>']] }), TCP)
  t.equal(res.get('require'), 'outbound')
  t.equal(location.lookup('sip:dave@example.org')[0]!.regId, 1)
  // Flow-Timer when configured
  const ft = setup({ flowTimer: 25 })
  res = await ft.registrar.handle(register({ contacts: [`<sip:alice@192.0.2.10:40001;transport=tcp;ob>;${inst};reg-id=1`], headers: [['supported', 'outbound']] }), TCP)
  t.equal(res.get('flow-timer'), '25')
  res = await ft.registrar.handle(register({ to: '<sip:zed@example.org>', contacts: ['<sip:zed@192.0.2.10>'] }), TCP)
  t.equal(res.get('flow-timer'), undefined, 'only with outbound')
  // bad reg-id
  res = await registrar.handle(register({ to: '<sip:dave@example.org>', contacts: [`<sip:d@192.0.2.10>;${inst};reg-id=zero`], cseq: 5 }), TCP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid reg-id param in contact')
})

t.test('too many contacts → 503', async t => {
  const { registrar } = setup({}, { maxContactsPerAor: 2 })
  t.equal((await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>', '<sip:b@1.1.1.1>'] }), UDP)).status, 200)
  const res = await registrar.handle(register({ contacts: ['<sip:c@1.1.1.1>'], cseq: 2 }), UDP)
  t.equal(res.status, 503)
  t.equal(res.reason, 'Too many registered contacts')
})

t.test('To, domain, Require and header validation', async t => {
  const { registrar } = setup({ domains: ['Example.org'] })
  const cases: Array<[RegOpts, number, string | RegExp]> = [
    [{ to: '<tel:+15551234>', contacts: ['<sip:a@1.1.1.1>'] }, 416, /Unsupported URI Scheme/],
    [{ to: '<mailto:a@b.c>', contacts: ['<sip:a@1.1.1.1>'] }, 416, /Unsupported URI Scheme/],
    [{ to: '<sip:alice@other.org>', contacts: ['<sip:a@1.1.1.1>'] }, 403, 'Domain not served'],
    [{ to: '<sip:example.org>', contacts: ['<sip:a@1.1.1.1>'] }, 400, 'No username in To URI'],
    [{ to: '<sip:alice@exa mple.org', contacts: ['<sip:a@1.1.1.1>'] }, 400, 'Invalid To header'],
    [{ contacts: ['<sip:a@1.1.1.1'] }, 400, 'Invalid Contact header'],
    [{ contacts: ['<sip:a@[::1>'] }, 400, 'Invalid Contact URI'],
    [{ contacts: ['<sip:a@1.1.1.1>'], cseq: '1 INVITE' }, 400, 'CSeq method does not match'],
    [{ contacts: ['<sip:a@1.1.1.1>'], cseq: 'x REGISTER' }, 400, /CSeq/],
    [{ contacts: ['<sip:a@1.1.1.1>'], headers: [['require', 'path, gruu, foo']] }, 420, 'Bad Extension']
  ]
  for (const [o, status, reason] of cases) {
    const res = await registrar.handle(register(o), UDP)
    t.equal(res.status, status, JSON.stringify(o))
    if (typeof reason === 'string') t.equal(res.reason, reason); else t.match(res.reason, reason)
    t.match(res.get('to'), /;tag=/, 'error responses carry a To tag')
  }
  const r420 = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], headers: [['require', 'path, gruu, foo']] }), UDP)
  t.equal(r420.get('unsupported'), 'gruu, foo')
  const noCallId = register({ contacts: ['<sip:a@1.1.1.1>'] }).remove('call-id')
  t.equal((await registrar.handle(noCallId, UDP)).status, 400)
  const noTo = register({ contacts: ['<sip:a@1.1.1.1>'] }).remove('to')
  t.equal((await registrar.handle(noTo, UDP)).status, 400)
  // domain match is case-insensitive, Require: path is fine
  t.equal((await registrar.handle(register({ to: '<sip:alice@EXAMPLE.ORG>', contacts: ['<sip:a@1.1.1.1>'], headers: [['require', 'path']] }), UDP)).status, 200)
  const invite = new SipRequest('INVITE', 'sip:alice@example.org')
  t.equal((await registrar.handle(invite, UDP)).status, 405)
})

t.test('AOR hook and normalization; internal errors give 500', async t => {
  const { registrar, location } = setup({ aorOf: u => `sip:${u.user}@single.domain` })
  await registrar.handle(register({ to: '<sip:alice@Whatever.Example;user=phone>', contacts: ['<sip:a@1.1.1.1>'] }), UDP)
  t.equal(location.lookup('sip:alice@single.domain').length, 1)
  const s2 = setup()
  await s2.registrar.handle(register({ to: '"A" <sip:alice@EXAMPLE.org;transport=tcp>', contacts: ['<sip:a@1.1.1.1>'] }), UDP)
  t.equal(s2.location.lookup('sip:alice@example.org').length, 1)
  const bad = setup({ aorOf: () => { throw new Error('boom') } })
  const res = await bad.registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'] }), UDP)
  t.equal(res.status, 500)
  t.ok(bad.logger.records.some(r => r.level === 'error'))
  const garbage = await bad.registrar.handle({ method: 'REGISTER' } as unknown as SipRequest, UDP)
  t.equal(garbage.status, 500, 'a malformed model object still gets an answer')
  t.throws(() => createRegistrar({ location, clock: new SimClock(), minExpires: 100, maxExpires: 50 }), RangeError)
})

t.test('To tag is stable for retransmissions and differs per Call-ID', async t => {
  const { registrar } = setup()
  const a = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'] }), UDP)
  const b = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], cseq: 2 }), UDP)
  const c = await registrar.handle(register({ contacts: ['<sip:a@1.1.1.1>'], callId: 'other' }), UDP)
  t.equal(a.get('to'), b.get('to'))
  t.not(a.get('to'), c.get('to'))
})

// RFC 4475 REGISTER cases, from the wire
function wire (lines: string[]): SipRequest {
  return parseMessage(Buffer.from(lines.join('\r\n') + '\r\n\r\n')) as SipRequest
}
const HEAD = [
  'REGISTER sip:example.com SIP/2.0',
  'Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw',
  'Max-Forwards: 70',
  'From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe',
  'To: sip:watson@example.com',
  'CSeq: 2 REGISTER'
]

t.test('RFC 4475 cparam01/cparam02: contact parameter vs URI parameter', async t => {
  const { registrar, location } = setup()
  let res = await registrar.handle(wire([...HEAD, 'Call-ID: cparam01.70710@saturn.example.com', 'Contact: sip:+19725552222@gw1.example.net;unknownparam', 'l: 0']), UDP)
  t.equal(res.status, 200)
  t.same(location.lookup('sip:watson@example.com').map(b => b.contact), ['sip:+19725552222@gw1.example.net'])
  res = await registrar.handle(wire([...HEAD, 'Call-ID: cparam02.70710@saturn.example.com', 'Contact: <sip:+19725552222@gw1.example.net;unknownparam>', 'l: 0']), UDP)
  t.equal(res.status, 200)
  t.same(location.lookup('sip:watson@example.com').map(b => b.contact).sort(),
    ['sip:+19725552222@gw1.example.net', 'sip:+19725552222@gw1.example.net;unknownparam'], 'URI parameter makes it another contact')
})

t.test('RFC 4475 regbadct: escaped URI header outside <> is rejected; unksm2: unknown To scheme', async t => {
  const { registrar, location } = setup()
  const lines = [
    'REGISTER sip:example.com SIP/2.0', 'To: sip:user@example.com', 'From: sip:user@example.com;tag=998332',
    'Max-Forwards: 70', 'Call-ID: regbadct.k345asrl3fdbv@10.0.0.1', 'CSeq: 1 REGISTER',
    'Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw', 'Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E', 'l: 0'
  ]
  // the stack's parser already refuses it; the registrar does too when handed the model directly
  t.throws(() => wire(lines), { status: 400 })
  const req = register({ to: 'sip:user@example.com', contacts: ['sip:user@example.com?Route=%3Csip:sip.example.com%3E'] })
  let res = await registrar.handle(req, UDP)
  t.equal(res.status, 400)
  t.equal(res.reason, 'Invalid Contact header')
  t.same(location.aors(), [])
  res = await registrar.handle(wire([
    'REGISTER sip:example.com SIP/2.0', 'To: isbn:2983792873', 'From: <http://www.example.com>;tag=3234233',
    'Call-ID: unksch.342342ekJ23@192.0.2.1', 'CSeq: 234902 REGISTER', 'Max-Forwards: 70',
    'Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw', 'Contact: <name:John_Smith>', 'l: 0'
  ]), UDP)
  t.equal(res.status, 416)
})
