// RFC 4475 (SIP torture tests) and RFC 5118 (IPv6 torture tests): every message gets the RFC's verdict.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  parseMessage, parseUri, parseNameAddr, parseVia, parseCSeq, parseAuthHeader, SipParseError,
  SipRequest, SipResponse, type SipMessage
} from '@sipring/sip'

const here = dirname(fileURLToPath(import.meta.url))
const d4475 = join(here, 'data', 'rfc4475')
const d5118 = join(here, 'data', 'rfc5118')
const load = (dir: string, name: string): Buffer => readFileSync(join(dir, `${name}.dat`))

function ok (dir: string, name: string): SipMessage {
  return parseMessage(load(dir, name))
}
function req (dir: string, name: string): SipRequest {
  const m = ok(dir, name)
  if (!(m instanceof SipRequest)) throw new Error(`${name}: not a request`)
  return m
}
function rejects (tt: typeof t, dir: string, name: string, status: number, reason: RegExp): void {
  let err: unknown
  try { parseMessage(load(dir, name)) } catch (e) { err = e }
  tt.ok(err instanceof SipParseError, `${name} rejected with SipParseError`)
  const e = err as SipParseError
  tt.equal(e.status, status, `${name} status`)
  tt.match(e.reason, reason, `${name} reason`)
}

const VALID_4475 = ['wsinv', 'intmeth', 'esc01', 'escnull', 'esc02', 'lwsdisp', 'longreq', 'dblreq', 'semiuri',
  'transports', 'mpart01', 'unreason', 'noreason', 'badbranch', 'unkscm', 'novelsc',
  'unksm2', 'bext01', 'invut', 'regaut01', 'zeromf', 'cparam01', 'cparam02', 'regescrt', 'sdp01', 'inv2543',
  'bcast',
  // 3.1.2.11: non-GMT Date. We never interpret Date, so (as the RFC permits for elements that
  // do not need the Date value) the message is accepted.
  'baddate']

const INVALID_4475: Array<[string, number, RegExp]> = [
  ['badinv01', 400, /Empty parameter in Via/], // 3.1.2.1 ;;,;,, in Via
  ['clerr', 400, /Content-Length mismatch/], // 3.1.2.2 Content-Length larger than the body
  ['scalar02', 400, /CSeq number out of range/], // 3.1.2.3
  ['scalarlg', 400, /CSeq number out of range/], // 3.1.2.4 (a response: discarded)
  ['quotbal', 400, /Unterminated quoted string/], // 3.1.2.5
  ['ltgtruri', 400, /Invalid Request-URI/], // 3.1.2.6 <> around the Request-URI
  ['lwsruri', 400, /whitespace in Request-URI/], // 3.1.2.7
  ['lwsstart', 400, /extra spaces/], // 3.1.2.8
  // 3.1.2.9: trailing SP after SIP/2.0. The RFC allows rejecting with 400; we do (strict request line).
  ['trws', 400, /after version/],
  ['escruri', 400, /Headers not allowed in Request-URI/], // 3.1.2.10
  ['regbadct', 400, /must be enclosed in <>/], // 3.1.2.12
  // 3.1.2.13: SP inside <> of To. The RFC lets a robust element accept it; we reject (URI must start at '<').
  ['badaspec', 400, /Invalid URI in To/],
  ['baddn', 400, /Invalid URI in From|Invalid address|enclosed/], // 3.1.2.14 unquoted display name with a comma
  ['badvers', 505, /Version Not Supported/], // 3.1.2.15
  ['mismatch01', 400, /CSeq method mismatch/], // 3.1.2.16
  ['mismatch02', 400, /CSeq method mismatch/], // 3.1.2.17
  ['bigcode', 400, /Invalid status code/], // 3.1.2.18
  ['insuf', 400, /Missing To header/], // 3.3.1 missing To, From, Call-ID, Max-Forwards
  ['multi01', 400, /Multiple CSeq headers/], // 3.3.8
  ['mcl01', 400, /Multiple Content-Length headers/], // 3.3.9
  ['ncl', 400, /Invalid Content-Length/], // 3.1.2.x negative Content-Length
  // npm-sip extras (not in RFC 4475)
  ['badcseq', 400, /Invalid CSeq/],
  ['test', 400, /Malformed request line/]
]

t.test('every RFC 4475 file has a verdict here', async tt => {
  const files = readdirSync(d4475).filter(f => f.endsWith('.dat')).map(f => f.slice(0, -4)).sort()
  const known = [...VALID_4475, ...INVALID_4475.map(x => x[0])].sort()
  tt.same(files, known)
})

t.test('RFC 4475 valid messages parse', async tt => {
  for (const n of VALID_4475) tt.doesNotThrow(() => ok(d4475, n), n)
})

t.test('RFC 4475 invalid messages are rejected with the right status and reason', async tt => {
  for (const [n, status, reason] of INVALID_4475) rejects(tt, d4475, n, status, reason)
})

t.test('3.1.1.1 wsinv: whitespace, folding, unusual header names', async tt => {
  const m = req(d4475, 'wsinv')
  tt.equal(m.method, 'INVITE')
  tt.equal(m.uri, 'sip:vivekg@chair-dnrc.example.com;unknownparam')
  const to = parseNameAddr(m.get('to')!)
  tt.equal(to.uri, 'sip:vivekg@chair-dnrc.example.com')
  tt.equal(to.params.get('tag'), '1918181833n')
  const from = parseNameAddr(m.get('from')!)
  tt.equal(from.displayName, 'J Rosenberg \\"')
  tt.equal(from.params.get('tag'), '98asjd8')
  tt.equal(m.get('max-forwards'), '0068')
  tt.same(parseCSeq(m.get('cseq')!), { seq: 9, method: 'INVITE' })
  tt.equal(m.get('subject'), '') // "s :" compact form, empty value
  tt.equal(m.get('newfangledheader'), 'newfangled value continued newfangled value')
  tt.equal(m.get('UnknownHeaderWithUnusualValue'), ';;,,;;,;')
  const vias = m.getAll('via').map(parseVia)
  tt.equal(vias.length, 3)
  tt.equal(vias[0]!.transport, 'UDP')
  tt.equal(vias[0]!.host, '192.0.2.2')
  tt.equal(vias[0]!.branch, '390skdjuw')
  tt.equal(vias[1]!.transport, 'TCP')
  tt.equal(vias[1]!.host, 'spindle.example.com')
  tt.equal(vias[1]!.branch, 'z9hG4bK9ikj8')
  tt.equal(vias[2]!.host, '192.168.255.111')
  tt.equal(vias[2]!.branch, 'z9hG4bK30239')
  const c = parseNameAddr(m.get('contact')!)
  tt.equal(c.displayName, 'Quoted string ""')
  tt.equal(c.params.get('newparam'), 'newvalue')
  tt.equal(c.params.get('secondparam'), null)
  tt.equal(c.params.get('q'), '0.33')
  tt.equal(m.getAll('route').length, 1)
  tt.equal(m.body.length, 150)
})

t.test('3.1.1.2 intmeth: unusual method, URI and header characters', async tt => {
  const m = req(d4475, 'intmeth')
  tt.equal(m.method, "!interesting-Method0123456789_*+`.%indeed'~")
  const u = parseUri(m.uri)
  tt.equal(u.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
  tt.equal(u.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
  tt.equal(u.host, 'example.com')
  tt.equal(m.get("extensionHeader-!.%*+_`'~"), Buffer.from('efbbbfe5a4a7e5819ce99bbb', 'hex').toString('utf8'), 'UTF-8 value kept')
  tt.equal(m.get('call-id'), 'intmeth.word%ZK-!.*_+\'@word`~)(><:\\/"][?}{')
  const from = parseNameAddr(m.get('from')!)
  tt.equal(from.displayName, "token1~` token2'+_ token3*%!.-")
  tt.equal(from.params.get('tag'), "_token~1'+`*%!-.")
})

t.test('3.1.1.3 esc01 / 3.1.1.4 escnull / 3.1.1.5 esc02: escapes', async tt => {
  const m = req(d4475, 'esc01')
  tt.equal(parseUri(m.uri).user, 'sips:user@example.com')
  tt.equal(parseUri(parseNameAddr(m.get('to')!).uri).user, 'user')
  tt.equal(parseUri(parseNameAddr(m.get('from')!).uri).user, 'I have spaces')
  const cu = parseUri(parseNameAddr(m.get('contact')!).uri)
  tt.equal(cu.user, 'caller')
  tt.ok(cu.params.has('lr'))
  tt.equal(cu.params.get('name'), 'value%41')
  tt.equal(m.get('content-type'), 'application/sdp') // compact c:
  const n = req(d4475, 'escnull')
  tt.equal(parseUri(parseNameAddr(n.get('to')!).uri).user, 'null-\u0000-null')
  tt.same(n.getAll('contact').map(c => parseUri(parseNameAddr(c).uri).user), ['\u0000', '\u0000\u0000'])
  const e2 = req(d4475, 'esc02')
  tt.equal(e2.method, 'RE%47IST%45R') // not REGISTER: escapes are not decoded in methods
  tt.equal(parseCSeq(e2.get('cseq')!).method, 'RE%47IST%45R')
})

t.test('3.1.1.6 lwsdisp, 3.1.1.8 dblreq, 3.1.1.9 semiuri, 3.1.1.10 transports', async tt => {
  tt.equal(parseNameAddr(req(d4475, 'lwsdisp').get('from')!).displayName, 'caller')
  const d = req(d4475, 'dblreq')
  tt.equal(d.method, 'REGISTER')
  tt.equal(d.body.length, 0, 'second request in the datagram ignored (Content-Length: 0)')
  const s = req(d4475, 'semiuri')
  const u = parseUri(s.uri)
  tt.equal(u.user, 'user;par=u@example.net')
  tt.equal(u.host, 'example.com')
  tt.equal(u.params.size, 0)
  tt.same(s.getAll('accept'), ['application/sdp', 'application/pkcs7-mime', 'multipart/mixed',
    'multipart/signed', 'message/sip', 'message/sipfrag'])
  tt.same(req(d4475, 'transports').getAll('via').map(v => parseVia(v).transport), ['UDP', 'SCTP', 'TLS', 'UNKNOWN', 'TCP'])
})

t.test('3.1.1.7 longreq, 3.1.1.11 mpart01, 3.1.1.12 unreason, 3.1.1.13 noreason', async tt => {
  const l = req(d4475, 'longreq')
  tt.ok(l.headers.length > 10)
  tt.ok(l.get('to')!.length > 100)
  tt.equal(l.body.length, Number(l.get('content-length')))
  const mp = req(d4475, 'mpart01')
  tt.equal(mp.body.length, Number(mp.get('content-length')))
  const u = ok(d4475, 'unreason') as SipResponse
  tt.equal(u.status, 200)
  tt.match(u.reason, /^= 2\*\*3 \* 5\*\*2 но сто девяносто девять/)
  const nr = ok(d4475, 'noreason') as SipResponse
  tt.equal(nr.status, 100)
  tt.equal(nr.reason, '')
})

t.test('3.3.x: syntactically valid messages an application may refuse', async tt => {
  tt.equal(req(d4475, 'unkscm').uri, 'nobodyKnowsThisScheme:totallyopaquecontent')
  tt.equal(req(d4475, 'novelsc').uri, 'soap.beep://192.0.2.103:3002')
  const u2 = req(d4475, 'unksm2')
  tt.equal(parseNameAddr(u2.get('to')!).uri, 'isbn:2983792873')
  tt.equal(parseNameAddr(u2.get('contact')!).uri, 'name:John_Smith')
  tt.equal(parseAuthHeader(req(d4475, 'regaut01').get('authorization')!).scheme, 'NoOneKnowsThisScheme')
  const c1 = parseNameAddr(req(d4475, 'cparam01').get('contact')!)
  tt.equal(c1.uri, 'sip:+19725552222@gw1.example.net')
  tt.ok(c1.params.has('unknownparam'), 'cparam01: unknownparam is a contact parameter')
  const c2 = parseNameAddr(req(d4475, 'cparam02').get('contact')!)
  tt.ok(parseUri(c2.uri).params.has('unknownparam'), 'cparam02: unknownparam is a URI parameter')
  tt.equal(c2.params.size, 0)
  const rc = parseUri(parseNameAddr(req(d4475, 'regescrt').get('contact')!).uri)
  tt.equal(rc.headers.get('Route'), '<sip:sip.example.com>')
  const inv = req(d4475, 'inv2543')
  tt.equal(inv.has('max-forwards'), false, 'missing Max-Forwards tolerated')
  tt.equal(parseVia(inv.get('via')!).branch, undefined)
  tt.ok(inv.body.length > 0, 'no Content-Length on a datagram: body is the rest')
  tt.equal(req(d4475, 'zeromf').get('max-forwards'), '0')
  tt.equal(parseVia((ok(d4475, 'bcast')).getAll('via')[1]!).host, '255.255.255.255')
})

t.test('errors carry the partial message so a 400 can be routed', async tt => {
  try {
    parseMessage(load(d4475, 'mismatch01'))
    tt.fail('should throw')
  } catch (e) {
    const p = (e as SipParseError).partial
    tt.ok(p instanceof SipRequest)
    tt.equal(p!.get('call-id'), 'mismatch01.dj0234sxdfl3')
    tt.ok(p!.has('via'))
  }
})

// ------------------------------------------------------------ RFC 5118
t.test('RFC 5118 4.1 ipv6-good', async tt => {
  const m = req(d5118, 'ipv6-good')
  const u = parseUri(m.uri)
  tt.equal(u.host, '2001:db8::10')
  tt.equal(u.port, undefined)
  tt.equal(parseVia(m.get('via')!).host, '2001:db8::9:1')
  tt.equal(parseUri(parseNameAddr(m.get('contact')!).uri).host, '2001:db8::1')
})

t.test('RFC 5118 4.2 ipv6-bad and 4.10 3 colons are rejected', async tt => {
  rejects(tt, d5118, 'ipv6-bad', 400, /Invalid Request-URI/)
  rejects(tt, d5118, 'ipv6-bug-abnf-3-colons', 400, /Invalid Request-URI: Invalid IPv6/)
  const m = req(d5118, 'ipv6-correct-abnf-2-colons')
  tt.equal(parseUri(m.uri).host, '2001:db8::192.0.2.1')
  tt.equal(parseVia(m.get('via')!).host, '2001:db8::192.0.2.2')
})

t.test('RFC 5118 4.3/4.4 port ambiguous / unambiguous', async tt => {
  const a = parseUri(req(d5118, 'port-ambiguous').uri)
  tt.equal(a.host, '2001:db8::10:5070')
  tt.equal(a.port, undefined)
  const b = parseUri(req(d5118, 'port-unambiguous').uri)
  tt.equal(b.host, '2001:db8::10')
  tt.equal(b.port, 5070)
})

t.test('RFC 5118 4.5 received with and without IPv6 delimiters', async tt => {
  const a = parseVia(req(d5118, 'via-received-param-with-delim').get('via')!)
  tt.equal(a.received, '2001:db8::9:255')
  tt.equal(a.params.get('received'), '[2001:db8::9:255]')
  const b = parseVia(req(d5118, 'via-received-param-no-delim').get('via')!)
  tt.equal(b.received, '2001:db8::9:255')
  tt.equal(b.branch, 'z9hG4bKas3')
})

t.test('RFC 5118 4.6-4.9', async tt => {
  const s = req(d5118, 'ipv6-in-sdp')
  tt.match(s.body.toString(), /c=IN IP6 2001:db8::20/)
  const mi = req(d5118, 'mult-ip-in-header')
  const vias = mi.getAll('via').map(parseVia)
  tt.same(vias.map(v => [v.host, v.port]), [['2001:db8::9:1', 6050], ['192.0.2.1', undefined], ['2001:db8::9:255', undefined]])
  tt.equal(vias[2]!.received, '192.0.2.200')
  const m4 = req(d5118, 'ipv4-mapped-ipv6')
  tt.same(m4.getAll('via').map(v => parseVia(v).host), ['::ffff:192.0.2.10', '::ffff:192.0.2.2'])
  tt.equal(parseUri(parseNameAddr(m4.get('contact')!).uri).host, '::ffff:192.0.2.2')
})
