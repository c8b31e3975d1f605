import t from 'tap'
import {
  parseMessage, serialize, SipParseError, SipRequest, SipResponse, DEFAULT_LIMITS, parseVia, type ParserLimits
} from '@sipring/sip'

const CRLF = '\r\n'
const REG_HEADERS = [
  'Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport',
  'Max-Forwards: 70',
  'From: Alice <sip:alice@example.com>;tag=9fxced76sl',
  'To: Alice <sip:alice@example.com>',
  'Call-ID: 3848276298220188511@192.0.2.10',
  'CSeq: 1 REGISTER',
  'Contact: <sip:alice@192.0.2.10:5060>;expires=3600'
]
function msg (start: string, headers: string[], body = '', withCl = true): Buffer {
  const b = Buffer.from(body, 'utf8')
  const hs = withCl ? [...headers, `Content-Length: ${b.length}`] : headers
  return Buffer.concat([Buffer.from(start + CRLF + hs.join(CRLF) + CRLF + CRLF, 'utf8'), b])
}
const REGISTER = (): Buffer => msg('REGISTER sip:example.com SIP/2.0', REG_HEADERS)

function fails (tt: typeof t, buf: Buffer, status: number, reason: RegExp, limits?: Partial<ParserLimits>): SipParseError | undefined {
  try {
    parseMessage(buf, limits)
    tt.fail(`should fail with ${status}`)
    return undefined
  } catch (e) {
    tt.ok(e instanceof SipParseError, 'SipParseError')
    const pe = e as SipParseError
    tt.equal(pe.status, status, `status ${status}`)
    tt.match(pe.reason, reason)
    return pe
  }
}

t.test('parses a REGISTER', async tt => {
  const m = parseMessage(REGISTER())
  tt.ok(m instanceof SipRequest)
  const r = m as SipRequest
  tt.equal(r.method, 'REGISTER')
  tt.equal(r.uri, 'sip:example.com')
  tt.equal(r.get('call-id'), '3848276298220188511@192.0.2.10')
  tt.equal(r.get('CSeq'), '1 REGISTER')
  tt.same(r.headers.map(h => h.name), ['via', 'max-forwards', 'from', 'to', 'call-id', 'cseq', 'contact', 'content-length'])
  tt.equal(r.body.length, 0)
})

t.test('parses a response', async tt => {
  const m = parseMessage(msg('SIP/2.0 180 Ringing', REG_HEADERS)) as SipResponse
  tt.ok(m instanceof SipResponse)
  tt.equal(m.status, 180)
  tt.equal(m.reason, 'Ringing')
  tt.equal((parseMessage(msg('SIP/2.0 200 OK with spaces', REG_HEADERS)) as SipResponse).reason, 'OK with spaces')
})

t.test('round trip parse → serialize → parse', async tt => {
  const body = 'v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n'
  const inputs = [
    REGISTER(),
    msg('INVITE sip:bob@example.org;transport=tcp SIP/2.0', [...REG_HEADERS.slice(0, 5), 'CSeq: 2 INVITE', 'Content-Type: application/sdp',
      'Route: <sip:p1.example.org;lr>, <sip:p2.example.org;lr>', 'Route: <sip:p3.example.org;lr>'], body),
    msg('SIP/2.0 401 Unauthorized', [...REG_HEADERS, 'WWW-Authenticate: Digest realm="example.com", nonce="abc", qop="auth,auth-int"'])
  ]
  for (const b of inputs) {
    const m1 = parseMessage(b)
    const wire = serialize(m1)
    const m2 = parseMessage(wire)
    tt.same(m2.headers, m1.headers)
    tt.same(m2.body, m1.body)
    tt.same(serialize(m2), wire, 'serialization is a fixed point')
    if (m1 instanceof SipRequest) {
      tt.equal((m2 as SipRequest).method, m1.method)
      tt.equal((m2 as SipRequest).uri, m1.uri)
    } else {
      tt.equal((m2 as SipResponse).status, (m1 as SipResponse).status)
    }
  }
})

t.test('Content-Length counts BYTES (UTF-8 body)', async tt => {
  const body = 'Grüße, 你好 — ☃\r\n'
  const bytes = Buffer.byteLength(body)
  tt.not(bytes, body.length)
  const b = msg('MESSAGE sip:bob@example.org SIP/2.0', [...REG_HEADERS.slice(0, 5), 'CSeq: 5 MESSAGE', 'Content-Type: text/plain;charset=utf-8'], body)
  const m = parseMessage(b)
  tt.equal(m.get('content-length'), String(bytes))
  tt.equal(m.body.toString('utf8'), body)
  const wire = serialize(m)
  tt.match(wire.toString('utf8'), new RegExp(`Content-Length: ${bytes}\\r\\n`))
  tt.equal(parseMessage(wire).body.toString('utf8'), body)
  // a UTF-8 display name in a header does not shift the body
  const b2 = msg('MESSAGE sip:bob@example.org SIP/2.0', [...REG_HEADERS.slice(0, 2), 'From: "Jürgen 山田" <sip:j@example.com>;tag=1', ...REG_HEADERS.slice(3, 5), 'CSeq: 5 MESSAGE'], body)
  tt.equal(parseMessage(b2).body.toString('utf8'), body)
})

t.test('body: shorter → 400, longer → truncated, no Content-Length → rest of datagram', async tt => {
  const hs = [...REG_HEADERS.slice(0, 5), 'CSeq: 5 MESSAGE']
  fails(tt, msg('MESSAGE sip:b@example.org SIP/2.0', [...hs, 'Content-Length: 20'], 'short', false), 400, /^Content-Length mismatch$/)
  const m = parseMessage(msg('MESSAGE sip:b@example.org SIP/2.0', [...hs, 'Content-Length: 3'], 'hello', false))
  tt.equal(m.body.toString(), 'hel')
  const n = parseMessage(msg('MESSAGE sip:b@example.org SIP/2.0', hs, 'whole rest', false))
  tt.equal(n.body.toString(), 'whole rest')
  fails(tt, msg('MESSAGE sip:b@example.org SIP/2.0', [...hs, 'Content-Length: abc'], '', false), 400, /Invalid Content-Length/)
  fails(tt, msg('MESSAGE sip:b@example.org SIP/2.0', [...hs, 'Content-Length: 99999999999999'], '', false), 400, /Invalid Content-Length/)
  fails(tt, msg('MESSAGE sip:b@example.org SIP/2.0', [...hs, 'l: 1', 'Content-Length: 1'], 'x', false), 400, /Multiple Content-Length/)
})

t.test('compact forms are canonicalized', async tt => {
  const m = parseMessage(msg('INVITE sip:bob@example.org SIP/2.0', [
    'v: SIP/2.0/UDP h.example.com;branch=z9hG4bKx', 'f: <sip:a@example.com>;tag=1', 't: <sip:bob@example.org>',
    'i: abc@h', 'CSeq: 1 INVITE', 'm: <sip:a@h.example.com>', 'c: text/plain', 'k: path, outbound', 's: hi', 'e: gzip', 'o: presence'
  ], 'x', false))
  tt.same(m.headers.map(h => h.name), ['via', 'from', 'to', 'call-id', 'cseq', 'contact', 'content-type', 'supported', 'subject', 'content-encoding', 'event'])
  tt.same(m.getAll('supported'), ['path', 'outbound'])
  tt.equal(m.get('Contact'), '<sip:a@h.example.com>')
  tt.match(serialize(m).toString(), /\r\nCall-ID: abc@h\r\n/)
})

t.test('header names are case-insensitive, whitespace before colon allowed', async tt => {
  const m = parseMessage(msg('OPTIONS sip:bob@example.org SIP/2.0', [
    'VIA  : SIP/2.0/UDP h.example.com;branch=z9hG4bKx', 'fRoM: <sip:a@example.com>;tag=1', 'TO:<sip:bob@example.org>',
    'call-ID:abc@h', 'cseq:1 OPTIONS', 'X-Custom-Thing:   padded value   '
  ]))
  tt.equal(m.get('via'), 'SIP/2.0/UDP h.example.com;branch=z9hG4bKx')
  tt.equal(m.get('to'), '<sip:bob@example.org>')
  tt.equal(m.get('x-custom-thing'), 'padded value')
})

t.test('header folding (LWS) is replaced by one space', async tt => {
  const m = parseMessage(msg('OPTIONS sip:bob@example.org SIP/2.0', [
    'Via: SIP/2.0/UDP h.example.com', '   ;branch=z9hG4bKx', 'From: <sip:a@example.com>', '\t;tag=1', 'To:', ' <sip:bob@example.org>',
    'Call-ID: abc@h', 'CSeq: 1', '  OPTIONS', 'Subject: one', ' two', '\t three'
  ]))
  tt.equal(m.get('via'), 'SIP/2.0/UDP h.example.com ;branch=z9hG4bKx')
  tt.equal(parseVia(m.get('via')!).branch, 'z9hG4bKx')
  tt.equal(m.get('from'), '<sip:a@example.com> ;tag=1')
  tt.equal(m.get('to'), '<sip:bob@example.org>')
  tt.equal(m.get('cseq'), '1 OPTIONS')
  tt.equal(m.get('subject'), 'one two three')
  fails(tt, Buffer.from('OPTIONS sip:b@example.org SIP/2.0\r\n continuation first\r\n' + REG_HEADERS.join('\r\n') + '\r\n\r\n'), 400, /Continuation line without header/)
})

t.test('multi-valued headers stay one entry per line', async tt => {
  const m = parseMessage(msg('INVITE sip:bob@example.org SIP/2.0', [
    'Via: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/UDP b.example;branch=z9hG4bK2', 'Via: SIP/2.0/TCP c.example;branch=z9hG4bK3',
    ...REG_HEADERS.slice(1, 5), 'CSeq: 1 INVITE'
  ]))
  tt.equal(m.headers.filter(h => h.name === 'via').length, 2)
  tt.same(m.getAll('via').map(v => parseVia(v).host), ['a.example', 'b.example', 'c.example'])
})

t.test('leading CRLFs are skipped; bare LF line ends tolerated', async tt => {
  const m = parseMessage(Buffer.concat([Buffer.from('\r\n\r\n'), REGISTER()]))
  tt.equal((m as SipRequest).method, 'REGISTER')
  const lf = Buffer.from(REGISTER().toString().replace(/\r\n/g, '\n'))
  const n = parseMessage(lf)
  tt.equal(n.get('cseq'), '1 REGISTER')
  tt.equal(n.headers.length, 8)
})

t.test('start line errors', async tt => {
  fails(tt, Buffer.from(''), 400, /Empty message/)
  fails(tt, Buffer.from('\r\n\r\n'), 400, /Empty message/)
  fails(tt, Buffer.from('REGISTER sip:example.com SIP/2.0\r\nVia: x'), 400, /Missing end of headers/)
  fails(tt, msg('REGISTER sip:example.com SIP/3.0', REG_HEADERS), 505, /Version Not Supported/)
  fails(tt, msg('SIP/3.0 200 OK', REG_HEADERS), 505, /Version Not Supported/)
  fails(tt, msg('REGISTER sip:example.com HTTP/1.1', REG_HEADERS), 400, /Malformed request line/)
  fails(tt, msg('REGISTER sip:example.com', REG_HEADERS), 400, /Malformed request line/)
  fails(tt, msg('REG{STER sip:example.com SIP/2.0', REG_HEADERS), 400, /Invalid method/)
  fails(tt, msg('REGISTER sip:exa mple.com SIP/2.0', REG_HEADERS), 400, /whitespace in Request-URI/)
  fails(tt, msg('REGISTER sip:a@b@c SIP/2.0', REG_HEADERS), 400, /Invalid Request-URI/)
  fails(tt, msg('SIP/2.0 20 OK', REG_HEADERS), 400, /Invalid status code/)
  fails(tt, msg('SIP/2.0 099 X', REG_HEADERS), 400, /Invalid status code/)
  fails(tt, msg('SIP/2.0', REG_HEADERS), 400, /Malformed status line/)
  tt.equal((parseMessage(msg('SIP/2.0 200', REG_HEADERS)) as SipResponse).reason, '', 'missing SP before empty reason tolerated')
  fails(tt, msg('SIP/2.0 200 O\u0001K', REG_HEADERS), 400, /Invalid reason phrase/)
})

t.test('mandatory headers and their syntax', async tt => {
  const without = (n: string): string[] => REG_HEADERS.filter(h => !h.toLowerCase().startsWith(n))
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', without('to:')), 400, /^Missing To header$/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', without('from:')), 400, /^Missing From header$/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', without('call-id:')), 400, /^Missing Call-ID header$/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', without('cseq:')), 400, /^Missing CSeq header$/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', without('via:')), 400, /^Missing Via header$/)
  fails(tt, msg('SIP/2.0 200 OK', without('via:')), 400, /^Missing Via header$/)
  const m = parseMessage(msg('REGISTER sip:example.com SIP/2.0', without('max-forwards:')))
  tt.notOk(m.has('max-forwards'), 'missing Max-Forwards is tolerated')
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('max-forwards:'), 'Max-Forwards: 256']), 400, /Invalid Max-Forwards/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('max-forwards:'), 'Max-Forwards: -1']), 400, /Invalid Max-Forwards/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('cseq:'), 'CSeq: 1 INVITE']), 400, /^CSeq method mismatch$/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('cseq:'), 'CSeq: 2147483648 REGISTER']), 400, /CSeq number out of range/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('call-id:'), 'Call-ID: a b']), 400, /Invalid Call-ID/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('via:'), 'Via: SIP/2.0/UDP']), 400, /Via/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('contact:'), 'Contact: *', 'Contact: <sip:a@b.example>']), 400, /Contact \*/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...without('to:'), 'To: <sip:a@exa mple.com>']), 400, /Invalid URI in To/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, 'To: <sip:b@example.com>']), 400, /Multiple To headers/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, 'Bad Header: x']), 400, /Invalid header name/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, 'NoColonHere']), 400, /Malformed header line/)
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, 'X-Smuggle: a\rInjected: b']), 400, /Bare CR in header value/)
})

t.test('errors carry the partial message (all well-formed headers)', async tt => {
  const e = fails(tt, msg('REGISTER sip:example.com SIP/2.0', ['garbage line', ...REG_HEADERS]), 400, /Malformed header line/)
  const p = e?.partial
  tt.ok(p instanceof SipRequest)
  tt.equal(p!.get('via'), 'SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK74bf9;rport', 'Via after the bad line is kept')
  tt.equal(p!.get('call-id'), '3848276298220188511@192.0.2.10')
  const e2 = fails(tt, msg('INVITE sip:x@example.com SIP/2.0', REG_HEADERS), 400, /CSeq method mismatch/)
  tt.equal((e2!.partial as SipRequest).method, 'INVITE')
  const e3 = fails(tt, msg('REGISTER sip:example.com SIP/9.0', REG_HEADERS), 505, /Version/)
  tt.equal(e3!.partial!.get('cseq'), '1 REGISTER', 'start-line errors still carry the headers')
  const e4 = fails(tt, msg('REGISTER sip:exa mple.com SIP/2.0', REG_HEADERS), 400, /whitespace/)
  tt.ok(e4!.partial!.has('via'))
  const e5 = fails(tt, msg('REG{STER sip:example.com SIP/2.0', REG_HEADERS), 400, /Invalid method/)
  tt.equal(e5!.partial, undefined, 'no partial when the method itself is unreadable')
})

t.test('limits: exactly at each bound passes, one over fails', async tt => {
  tt.same({ ...DEFAULT_LIMITS }, { maxMessageSize: 65535, maxHeaders: 256, maxLineLength: 8192 })

  // maxMessageSize
  const hs = [...REG_HEADERS.slice(0, 5), 'CSeq: 5 MESSAGE']
  const base = msg('MESSAGE sip:b@example.org SIP/2.0', hs, '')
  const fill = (total: number): Buffer => {
    const probe = msg('MESSAGE sip:b@example.org SIP/2.0', hs, 'x'.repeat(total - base.length))
    // Content-Length digits grew: trim the body so the total is exact
    return msg('MESSAGE sip:b@example.org SIP/2.0', hs, 'x'.repeat(total - base.length - (probe.length - total)))
  }
  const atMax = fill(DEFAULT_LIMITS.maxMessageSize)
  tt.equal(atMax.length, 65535)
  tt.doesNotThrow(() => parseMessage(atMax))
  const over = Buffer.concat([atMax, Buffer.from('y')])
  fails(tt, over, 413, /Message Too Large/)
  fails(tt, REGISTER(), 413, /Message Too Large/, { maxMessageSize: REGISTER().length - 1 })
  tt.doesNotThrow(() => parseMessage(REGISTER(), { maxMessageSize: REGISTER().length }))

  // maxHeaders: REGISTER() has 8 header lines (Content-Length included)
  tt.doesNotThrow(() => parseMessage(REGISTER(), { maxHeaders: 8 }))
  fails(tt, REGISTER(), 400, /^Too many headers$/, { maxHeaders: 7 })
  const many = (n: number): Buffer => msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, ...Array.from({ length: n - 8 }, (_, i) => `X-H${i}: v`)])
  tt.doesNotThrow(() => parseMessage(many(256)))
  fails(tt, many(257), 400, /^Too many headers$/)

  // maxLineLength: a header line of exactly N characters (name + ':' + value)
  const line = (n: number): string => 'X-Long: ' + 'a'.repeat(n - 8)
  tt.equal(line(8192).length, 8192)
  tt.doesNotThrow(() => parseMessage(msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, line(8192)])))
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, line(8193)]), 400, /^Header line too long$/)
  // a folded header counts all its physical lines
  fails(tt, msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, line(100), ' ' + 'b'.repeat(99)]), 400, /^Header line too long$/, { maxLineLength: 199 })
  tt.doesNotThrow(() => parseMessage(msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, line(100), ' ' + 'b'.repeat(99)]), { maxLineLength: 200 }))

  // Request-URI length → 414
  const uri = (n: number): string => 'sip:' + 'u'.repeat(n - 4 - '@example.com'.length) + '@example.com'
  tt.equal(uri(8192).length, 8192)
  tt.doesNotThrow(() => parseMessage(msg(`REGISTER ${uri(8192)} SIP/2.0`, REG_HEADERS)))
  fails(tt, msg(`REGISTER ${uri(8193)} SIP/2.0`, REG_HEADERS), 414, /Request-URI Too Long/)
  fails(tt, msg(`REGISTER ${uri(101)} SIP/2.0`, REG_HEADERS), 414, /Request-URI Too Long/, { maxLineLength: 100 })
})

t.test('header names that are Object.prototype members are plain headers', async tt => {
  const m = parseMessage(msg('REGISTER sip:example.com SIP/2.0', [...REG_HEADERS, 'constructor: a', '__proto__: b', 'toString: c', 'HasOwnProperty: d']))
  tt.equal(m.get('constructor'), 'a')
  tt.equal(m.get('__proto__'), 'b')
  tt.equal(m.get('tostring'), 'c')
  tt.same(m.headers.slice(-5).map(h => h.name), ['constructor', '__proto__', 'tostring', 'hasownproperty', 'content-length'])
  tt.match(serialize(m).toString(), /\r\nConstructor: a\r\n__proto__: b\r\nTostring: c\r\nHasownproperty: d\r\n/)
})

t.test('pathological inputs stay linear', async tt => {
  // 30k colon-less lines followed by one colon: each line must not search the rest of the head
  const head = 'REGISTER sip:example.com SIP/2.0\r\n' + 'a\r\n'.repeat(16000) + 'X: ' + ':'.repeat(10) + '\r\n\r\n'
  const t0 = performance.now()
  let err: unknown
  try { parseMessage(Buffer.from(head)) } catch (e) { err = e }
  tt.ok(err instanceof SipParseError)
  tt.ok(performance.now() - t0 < 500, 'fast')
  const folded = 'REGISTER sip:example.com SIP/2.0\r\n' + REG_HEADERS.join('\r\n') + '\r\nX: a\r\n' + ' b\r\n'.repeat(10000) + '\r\n'
  const e2 = (() => { try { parseMessage(Buffer.from(folded)) } catch (e) { return e } })()
  tt.equal((e2 as SipParseError).reason, 'Header line too long')
})

t.test('messages captured from real tools (sipsak, sipp) parse', async tt => {
  const { readFileSync } = await import('node:fs')
  const dir = new URL('./data/tools/', import.meta.url)
  const reg = parseMessage(readFileSync(new URL('sipsak-register.dat', dir))) as SipRequest
  tt.equal(reg.method, 'REGISTER')
  tt.equal(reg.get('expires'), '15')
  const v = parseVia(reg.get('via')!)
  tt.equal(v.rport, null)
  tt.ok(v.params.has('alias'))
  const opt = parseMessage(readFileSync(new URL('sipsak-options.dat', dir))) as SipRequest
  tt.equal(opt.method, 'OPTIONS')
  const inv = parseMessage(readFileSync(new URL('sipp-uac-invite.dat', dir))) as SipRequest
  tt.equal(inv.method, 'INVITE')
  tt.equal(inv.body.length, 129)
  tt.equal(inv.get('content-length'), '129')
  const noCl = (h: Array<{ name: string }>): unknown => h.filter(x => x.name !== 'content-length')
  for (const m of [reg, opt, inv]) tt.same(noCl(parseMessage(serialize(m)).headers), noCl(m.headers), 'round trip (serialize moves Content-Length last)')
})
