import t from 'tap'
import {
  parseNameAddr, formatNameAddr, parseVia, formatVia, parseCSeq, getTag, parseParams, formatParams,
  parseAuthHeader, formatAuthHeader, SipParseError, splitList
} from '@sipring/sip'

function bad (tt: typeof t, fn: () => unknown, reason: RegExp): void {
  try {
    fn()
    tt.fail('should throw')
  } catch (e) {
    tt.ok(e instanceof SipParseError)
    tt.equal((e as SipParseError).status, 400)
    tt.match((e as SipParseError).reason, reason)
  }
}

t.test('parseNameAddr: quoted display name, URI params vs header params', async tt => {
  const a = parseNameAddr('"Alice \\"A\\" Smith" <sip:alice@a.example;transport=tcp>;tag=1928;expires=60')
  tt.equal(a.displayName, 'Alice "A" Smith')
  tt.equal(a.uri, 'sip:alice@a.example;transport=tcp')
  tt.same([...a.params], [['tag', '1928'], ['expires', '60']])
  tt.equal(formatNameAddr(a), '"Alice \\"A\\" Smith" <sip:alice@a.example;transport=tcp>;tag=1928;expires=60')
})

t.test('parseNameAddr: token display name and no display name', async tt => {
  const a = parseNameAddr('Bob   Smith <sip:bob@b.example>')
  tt.equal(a.displayName, 'Bob Smith')
  tt.equal(a.uri, 'sip:bob@b.example')
  tt.equal(parseNameAddr('Jürgen Müller <sip:j@b.example>').displayName, 'Jürgen Müller', 'lenient: unquoted UTF-8')
  const b = parseNameAddr('<sip:bob@b.example>;tag=x')
  tt.equal(b.displayName, undefined)
  tt.equal(b.params.get('tag'), 'x')
  tt.equal(formatNameAddr(b), '<sip:bob@b.example>;tag=x')
})

t.test('parseNameAddr: bare addr-spec → params are header params', async tt => {
  const a = parseNameAddr('sip:bob@b.example;tag=x;lr')
  tt.equal(a.uri, 'sip:bob@b.example')
  tt.same([...a.params], [['tag', 'x'], ['lr', null]])
  tt.equal(formatNameAddr(a), '<sip:bob@b.example>;tag=x;lr')
  const c = parseNameAddr('  sip:bob@b.example ;  tag  =  y ')
  tt.equal(c.params.get('tag'), 'y')
  bad(tt, () => parseNameAddr('sip:bob@b.example?Route=x'), /enclosed in <>/)
})

t.test('parseNameAddr: Contact *, quoted param values, IPv6', async tt => {
  const s = parseNameAddr('*')
  tt.equal(s.uri, '*')
  tt.equal(formatNameAddr(s), '*')
  const i = parseNameAddr('<sip:a@[2001:db8::1]:5060;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1')
  tt.equal(i.uri, 'sip:a@[2001:db8::1]:5060;ob')
  tt.equal(i.params.get('+sip.instance'), '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"')
  tt.equal(i.params.get('reg-id'), '1')
  const j = parseNameAddr('sip:a@b.example;+sip.instance="<urn:uuid:1>"')
  tt.equal(j.uri, 'sip:a@b.example')
  tt.equal(j.params.get('+sip.instance'), '"<urn:uuid:1>"')
})

t.test('parseNameAddr: errors', async tt => {
  bad(tt, () => parseNameAddr(''), /Empty address/)
  bad(tt, () => parseNameAddr('"unterminated <sip:a@b>'), /Unterminated quoted/)
  bad(tt, () => parseNameAddr('"x" sip:a@b'), /Missing <URI>/)
  bad(tt, () => parseNameAddr('<sip:a@b'), /Missing >/)
  bad(tt, () => parseNameAddr('<>'), /Empty URI/)
  bad(tt, () => parseNameAddr('<sip:a@b>;;'), /Empty parameter/)
  bad(tt, () => parseNameAddr('<sip:a@b>;tag='), /Empty parameter value/)
  bad(tt, () => parseNameAddr('<sip:a@b> junk'), /Invalid parameters/)
  bad(tt, () => parseNameAddr('Bell, Alexander <sip:a@b>'), /enclosed in <>|Invalid address/)
  bad(tt, () => parseNameAddr('justtext'), /Invalid address/)
})

t.test('getTag', async tt => {
  tt.equal(getTag('<sip:a@b>;tag=abc'), 'abc')
  tt.equal(getTag('sip:a@b;TAG=abc'), 'abc')
  tt.equal(getTag('<sip:a@b;tag=inuri>'), undefined)
  tt.equal(getTag('"x'), undefined)
})

t.test('parseParams / formatParams', async tt => {
  const p = parseParams(';A=b ; c ;d="x;y" ;e=[2001:db8::1]')
  tt.same([...p], [['a', 'b'], ['c', null], ['d', '"x;y"'], ['e', '[2001:db8::1]']])
  tt.equal(formatParams(p), ';a=b;c;d="x;y";e=[2001:db8::1]')
  tt.same([...parseParams('')], [])
  bad(tt, () => parseParams('a=b'), /Invalid parameters/)
  bad(tt, () => parseParams(';a="b'), /Unterminated/)
})

t.test('parseVia / formatVia', async tt => {
  const v = parseVia('SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport;ttl=16;maddr=224.2.0.1')
  tt.equal(v.protocol, 'SIP/2.0')
  tt.equal(v.transport, 'UDP')
  tt.equal(v.host, 'pc33.atlanta.com')
  tt.equal(v.port, 5066)
  tt.equal(v.branch, 'z9hG4bK776asdhds')
  tt.equal(v.received, '192.0.2.1')
  tt.equal(v.rport, null)
  tt.equal(v.ttl, 16)
  tt.equal(v.maddr, '224.2.0.1')
  tt.equal(formatVia(v), 'SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport;ttl=16;maddr=224.2.0.1')
  const w = parseVia(' SIP / 2.0 / TCP  [2001:db8::1] : 5060 ; rport = 1234 ; branch = z9hG4bKx')
  tt.equal(w.host, '2001:db8::1')
  tt.equal(w.port, 5060)
  tt.equal(w.rport, 1234)
  tt.equal(formatVia(w), 'SIP/2.0/TCP [2001:db8::1]:5060;rport=1234;branch=z9hG4bKx')
  tt.equal(formatVia({ transport: 'ws', host: 'df7jal23ls0d.invalid', params: new Map([['branch', 'z9hG4bKabc']]) }),
    'SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKabc')
  bad(tt, () => parseVia('SIP/2.0/UDP'), /sent-by/)
  bad(tt, () => parseVia('SIP/2.0 UDP host'), /protocol/)
  bad(tt, () => parseVia('SIP/2.0/UDP host:99999'), /port/)
  bad(tt, () => parseVia('SIP/2.0/UDP host;rport=abc'), /rport/)
  bad(tt, () => parseVia('SIP/2.0/UDP host;ttl=300'), /ttl/)
  bad(tt, () => parseVia('SIP/2.0/UDP host;received=example.com'), /received/)
  bad(tt, () => parseVia('SIP/2.0/UDP host;branch'), /branch/)
  bad(tt, () => parseVia('SIP/2.0/UDP [::1;branch=x'), /sent-by/)
  bad(tt, () => parseVia('SIP/2.0/UDP [1::2::3]'), /IPv6/)
  bad(tt, () => parseVia('SIP/2.0/UDP host;;'), /Empty parameter/)
})

t.test('parseVia handles a list split by splitList', async tt => {
  const vs = splitList('SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP [::1]:5061;branch=z9hG4bK2').map(parseVia)
  tt.same(vs.map(v => [v.transport, v.host, v.port, v.branch]), [['UDP', 'a.example', undefined, 'z9hG4bK1'], ['TCP', '::1', 5061, 'z9hG4bK2']])
})

t.test('parseCSeq', async tt => {
  tt.same(parseCSeq('314159 INVITE'), { seq: 314159, method: 'INVITE' })
  tt.same(parseCSeq('  0009   ACK '), { seq: 9, method: 'ACK' })
  tt.same(parseCSeq('0 REGISTER'), { seq: 0, method: 'REGISTER' })
  tt.same(parseCSeq('2147483647 BYE'), { seq: 2147483647, method: 'BYE' })
  tt.same(parseCSeq('0000000000002147483647 BYE'), { seq: 2147483647, method: 'BYE' })
  bad(tt, () => parseCSeq('2147483648 BYE'), /out of range/)
  bad(tt, () => parseCSeq('99999999999999999999 BYE'), /out of range/)
  bad(tt, () => parseCSeq('-1 BYE'), /Invalid CSeq number/)
  bad(tt, () => parseCSeq('1'), /Invalid CSeq/)
  bad(tt, () => parseCSeq('1INVITE'), /Invalid CSeq/)
  bad(tt, () => parseCSeq('1 INV ITE'), /Invalid CSeq method/)
})

t.test('parseAuthHeader / formatAuthHeader', async tt => {
  const a = parseAuthHeader('Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41", algorithm=MD5')
  tt.equal(a.scheme, 'Digest')
  tt.equal(a.params.get('username'), 'bob')
  tt.equal(a.params.get('qop'), 'auth')
  tt.equal(a.params.get('nc'), '00000001')
  tt.equal(a.params.get('algorithm'), 'MD5')
  tt.equal(a.params.size, 10)
  const back = parseAuthHeader(formatAuthHeader(a))
  tt.same([...back.params], [...a.params])
  tt.match(formatAuthHeader(a), /nc=00000001/)
  tt.match(formatAuthHeader(a), /username="bob"/)
  const w = parseAuthHeader('Digest realm="a\\"b",qop="auth,auth-int" , stale=TRUE')
  tt.equal(w.params.get('realm'), 'a"b')
  tt.equal(w.params.get('qop'), 'auth,auth-int')
  tt.equal(w.params.get('stale'), 'TRUE')
  tt.equal(formatAuthHeader(w, ['stale']), 'Digest realm="a\\"b", qop="auth,auth-int", stale=TRUE')
  tt.same([...parseAuthHeader('Digest').params], [])
  bad(tt, () => parseAuthHeader(''), /scheme/)
  bad(tt, () => parseAuthHeader('Digest realm'), /parameter/)
  bad(tt, () => parseAuthHeader('Digest realm="x" nonce="y"'), /parameters/)
  bad(tt, () => parseAuthHeader('Digest realm="x'), /Unterminated/)
})
