import t from 'tap'
import { parseUri, formatUri, uriEquals, hostEquals, aorOf, isIPv6, isIPv4, SipParseError } from '@sipring/sip'

function throws400 (tt: typeof t, s: string, reason?: RegExp): void {
  try {
    parseUri(s)
    tt.fail(`should reject ${JSON.stringify(s)}`)
  } catch (e) {
    tt.ok(e instanceof SipParseError, `SipParseError for ${JSON.stringify(s)}`)
    tt.equal((e as SipParseError).status, 400, `400 for ${JSON.stringify(s)}`)
    if (reason) tt.match((e as SipParseError).reason, reason)
  }
}

t.test('basic sip URI', async tt => {
  const u = parseUri('sip:alice:secret@Example.COM:5070;transport=TCP;lr;Maddr=10.0.0.1?Subject=hi&Priority=urgent')
  tt.equal(u.scheme, 'sip')
  tt.equal(u.user, 'alice')
  tt.equal(u.password, 'secret')
  tt.equal(u.host, 'Example.COM')
  tt.equal(u.port, 5070)
  tt.same([...u.params], [['transport', 'TCP'], ['lr', null], ['maddr', '10.0.0.1']])
  tt.same([...u.headers], [['Subject', 'hi'], ['Priority', 'urgent']])
  tt.equal(formatUri(u), 'sip:alice:secret@Example.COM:5070;transport=TCP;lr;maddr=10.0.0.1?Subject=hi&Priority=urgent')
})

t.test('scheme is case-insensitive; sips and tel', async tt => {
  tt.equal(parseUri('SIP:bob@b.example').scheme, 'sip')
  tt.equal(parseUri('sips:bob@b.example').scheme, 'sips')
  const tel = parseUri('tel:+1-201-555-0123;phone-context=example.com')
  tt.equal(tel.scheme, 'tel')
  tt.equal(tel.user, '+1-201-555-0123')
  tt.equal(tel.host, '')
  tt.equal(tel.params.get('phone-context'), 'example.com')
  tt.equal(formatUri(tel), 'tel:+1-201-555-0123;phone-context=example.com')
  tt.equal(formatUri(parseUri('tel:%2B1%23%3B')), 'tel:+1#%3B', 'escapes what the number grammar does not allow')
  tt.ok(uriEquals('tel:+1-201-555-0123', 'tel:+12015550123'))
})

t.test('other schemes: 416, garbage: 400', async tt => {
  try { parseUri('http://example.com'); tt.fail() } catch (e) { tt.equal((e as SipParseError).status, 416) }
  throws400(tt, '')
  throws400(tt, 'sip:')
  throws400(tt, 'alice@example.com', /scheme/)
  throws400(tt, '1sip:a@b', /scheme/)
  throws400(tt, 'sip:@example.com', /Empty user/)
  throws400(tt, 'sip:a b@example.com', /Invalid character/)
  throws400(tt, 'sip:a@exa mple.com')
  throws400(tt, 'sip:a@example.com:', /port/)
  throws400(tt, 'sip:a@example.com:65536', /port/)
  throws400(tt, 'sip:a@example.com:5x', /port/)
  throws400(tt, 'sip:a@example.com;;lr', /Empty URI parameter/)
  throws400(tt, 'sip:a@example.com;=x', /Empty URI parameter name/)
  throws400(tt, 'sip:a@example.com?x', /header/)
  throws400(tt, 'sip:a%zz@example.com', /Bad escape/)
  throws400(tt, 'sip:a%4@example.com', /Bad escape/)
  throws400(tt, 'sip:a@999.1.1.1')
  throws400(tt, 'sip:a@exa..mple.com')
  throws400(tt, 'tel:', /Empty tel/)
  throws400(tt, 'tel:+1 555', /Invalid character in URI tel number/)
  throws400(tt, 'tel:+1&5', /Invalid character/)
})

t.test('IPv6 references: stored without brackets, formatted with them', async tt => {
  const u = parseUri('sip:alice@[2001:db8::1]:5060;transport=udp')
  tt.equal(u.host, '2001:db8::1')
  tt.equal(u.port, 5060)
  tt.equal(formatUri(u), 'sip:alice@[2001:db8::1]:5060;transport=udp')
  const v = parseUri('sip:[::1]')
  tt.equal(v.host, '::1')
  tt.equal(v.user, undefined)
  tt.equal(formatUri(v), 'sip:[::1]')
  tt.equal(parseUri('sip:[2001:db8::10:5070]').port, undefined)
  tt.equal(parseUri('sip:[::ffff:192.0.2.1];maddr=[::1]').params.get('maddr'), '[::1]')
  throws400(tt, 'sip:[2001:db8::1', /Unterminated/)
  throws400(tt, 'sip:[2001:db8:::1]', /IPv6/)
  throws400(tt, 'sip:[1:2:3:4:5:6:7:8:9]', /IPv6/)
  throws400(tt, 'sip:[12345::1]', /IPv6/)
  throws400(tt, 'sip:2001:db8::1', /host|port/)
  throws400(tt, 'sip:a@[::1]x')
})

t.test('isIPv6 / isIPv4', async tt => {
  for (const a of ['::', '::1', '1::', '2001:db8::1', '1:2:3:4:5:6:7:8', '::ffff:1.2.3.4', '1:2:3:4:5:6:1.2.3.4', 'fe80::1:2']) tt.ok(isIPv6(a), a)
  for (const a of ['', ':', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '2001:db8:::1', 'g::1', '1.2.3.4::', '::1.2.3', '1:2:3:4:5:6:7:1.2.3.4', '12345::']) tt.notOk(isIPv6(a), a)
  tt.ok(isIPv4('192.0.2.1'))
  tt.ok(isIPv4('255.255.255.255'))
  for (const a of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.4 ', '0001.2.3.4']) tt.notOk(isIPv4(a), a)
})

t.test('escaping: unescape on parse, canonical escape on format', async tt => {
  const u = parseUri('sip:%61lice%20smith@example.com;n%61me=v%61lue%25')
  tt.equal(u.user, 'alice smith')
  tt.equal(u.params.get('name'), 'value%')
  tt.equal(formatUri(u), 'sip:alice%20smith@example.com;name=value%25')
  const utf = parseUri('sip:%C3%A9l%C3%A8ve@example.com')
  tt.equal(utf.user, 'élève')
  tt.equal(formatUri(utf), 'sip:%C3%A9l%C3%A8ve@example.com')
  // characters allowed unescaped in user stay as they are
  tt.equal(formatUri(parseUri("sip:a&b=c+d$e,f;g?h/i~'@example.com")), "sip:a&b=c+d$e,f;g?h/i~'@example.com")
  const h = parseUri('sip:a@b.example?Route=%3Csip:x.example%3E')
  tt.equal(h.headers.get('Route'), '<sip:x.example>')
  tt.equal(formatUri(h), 'sip:a@b.example?Route=%3Csip:x.example%3E')
})

t.test('round trip of a few URIs', async tt => {
  for (const s of ['sip:a@b.example', 'sips:a@b.example:5061', 'sip:b.example;lr', 'sip:+1555@gw.example;user=phone',
    'sip:a@[2001:db8::1]:5060;transport=tcp;ob', 'sip:a:p@h.example?X=1', 'tel:+15551234;ext=12']) {
    tt.equal(formatUri(parseUri(s)), s, s)
  }
})

t.test('uriEquals: RFC 3261 §19.1.4 examples', async tt => {
  const eq: Array<[string, string]> = [
    ['sip:%61lice@atlanta.com;transport=TCP', 'sip:alice@AtLanTa.CoM;Transport=tcp'],
    ['sip:carol@chicago.com', 'sip:carol@chicago.com;newparam=5'],
    ['sip:carol@chicago.com', 'sip:carol@chicago.com;security=on'],
    ['sip:carol@chicago.com;newparam=5', 'sip:carol@chicago.com;security=on'],
    ['sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com', 'sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com'],
    ['sip:alice@atlanta.com?subject=project%20x&priority=urgent', 'sip:alice@atlanta.com?priority=urgent&subject=project%20x'],
    ['sip:a@[2001:db8::1]', 'sip:a@[2001:DB8:0:0::1]']
  ]
  for (const [a, b] of eq) tt.ok(uriEquals(a, b), `${a} == ${b}`)
  const ne: Array<[string, string]> = [
    ['SIP:ALICE@AtLanTa.CoM;Transport=udp', 'sip:alice@AtLanTa.CoM;Transport=UDP'],
    ['sip:bob@biloxi.com', 'sip:bob@biloxi.com:5060'],
    ['sip:bob@biloxi.com', 'sip:bob@biloxi.com;transport=udp'],
    ['sip:bob@biloxi.com', 'sip:bob@biloxi.com:6000;transport=tcp'],
    ['sip:carol@chicago.com', 'sip:carol@chicago.com?Subject=next%20meeting'],
    ['sip:bob@phone21.boxesbybob.com', 'sip:bob@192.0.2.4'],
    ['sip:carol@chicago.com;security=on', 'sip:carol@chicago.com;security=off'],
    ['sip:a@b.example', 'sips:a@b.example'],
    ['sip:a:x@b.example', 'sip:a:y@b.example']
  ]
  for (const [a, b] of ne) tt.notOk(uriEquals(a, b), `${a} != ${b}`)
  tt.notOk(uriEquals('garbage', 'sip:a@b'))
  tt.ok(uriEquals('garbage', 'garbage'))
})

t.test('hostEquals', async tt => {
  tt.ok(hostEquals('Example.COM', 'example.com'))
  tt.ok(hostEquals('[2001:db8::1]', '2001:DB8::0:1'))
  tt.ok(hostEquals('::ffff:192.0.2.1', '::ffff:c000:201'))
  tt.notOk(hostEquals('example.com', 'example.org'))
  tt.notOk(hostEquals('2001:db8::1', '2001:db8::2'))
})

t.test('aorOf', async tt => {
  tt.equal(aorOf('sip:Alice@Example.COM:5060;transport=tcp?x=y'), 'sip:Alice@example.com:5060')
  tt.equal(aorOf('sips:bob:pw@b.example'), 'sips:bob@b.example')
  tt.equal(aorOf('sip:%61lice@a.example'), 'sip:alice@a.example')
  tt.equal(aorOf('sip:a%20b@a.example'), 'sip:a%20b@a.example')
  tt.equal(aorOf('sip:a%2fb@a.example'), 'sip:a/b@a.example')
  tt.equal(aorOf(parseUri('sip:x@[2001:DB8::1]')), 'sip:x@[2001:db8::1]')
  tt.equal(aorOf('sip:example.com'), 'sip:example.com')
  tt.equal(aorOf('tel:+1-555-123'), 'tel:+1555123')
  tt.throws(() => aorOf('sip:a b@c'), SipParseError)
})
