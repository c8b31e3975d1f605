// Differential test against the npm `sip` package's parser (kirm/sip.js 0.0.6) on a generated corpus
// of VALID, ASCII, IPv4, unfolded messages (npm sip's known quirks — Content-Length counted in
// characters, malformed headers silently dropped, folding kept in values — only show on other inputs).
import t from 'tap'
import { createRequire } from 'node:module'
import { SeededRng } from '@sipring/testkit'
import {
  parseMessage, SipRequest, SipResponse, parseVia, parseNameAddr, parseCSeq, parseUri, parseAuthHeader, unquote,
  canonicalName, LIST_HEADERS
} from '@sipring/sip'

const require = createRequire(import.meta.url)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const npmSip = require('sip') as { parse: (b: Buffer) => any }

const METHODS = ['INVITE', 'REGISTER', 'OPTIONS', 'BYE', 'CANCEL', 'ACK', 'MESSAGE', 'SUBSCRIBE', 'NOTIFY', 'INFO']
const HOSTS = ['example.com', 'a.example.org', 'pbx-1.example.net', '192.0.2.7', '198.51.100.23']
const USERS = ['alice', 'bob', '+15551234567', 'carol.smith', 'user_1']
const TRANSPORTS = ['UDP', 'TCP', 'TLS', 'WS', 'WSS']

function gen (rng: SeededRng): string {
  const pick = <T>(a: T[]): T => a[rng.int(a.length)]!
  const tok = (n = 8): string => rng.token(n)
  const hostport = (): string => pick(HOSTS) + (rng.int(2) === 0 ? '' : ':' + String(1024 + rng.int(60000)))
  const uri = (): string => `sip:${pick(USERS)}@${hostport()}` + (rng.int(3) === 0 ? `;transport=${pick(TRANSPORTS).toLowerCase()}` : '') + (rng.int(4) === 0 ? ';lr' : '')
  const dn = (): string => { const r = rng.int(3); return r === 0 ? '' : r === 1 ? `"${pick(['Alice', 'Bob Smith', 'A. B'])}" ` : `${pick(['Alice', 'Bob', 'Carol'])} ` }
  const addr = (tag: boolean): string => `${dn()}<${uri()}>` + (tag ? `;tag=${tok(10)}` : '')
  const via = (): string => `SIP/2.0/${pick(TRANSPORTS)} ${hostport()};branch=z9hG4bK${tok(12)}` + (rng.int(2) === 0 ? ';rport' : '') + (rng.int(3) === 0 ? ';received=192.0.2.' + String(rng.int(255)) : '')
  const isReq = rng.int(3) !== 0
  const method = pick(METHODS)
  const lines: string[] = [isReq ? `${method} ${uri()} SIP/2.0` : `SIP/2.0 ${pick([100, 180, 200, 202, 302, 401, 404, 486, 503])} ${pick(['OK', 'Ringing', 'Not Found', 'Some Reason'])}`]
  const hs: string[] = []
  const vias = 1 + rng.int(3)
  if (rng.int(2) === 0) hs.push(`${pick(['Via', 'v', 'VIA'])}: ${Array.from({ length: vias }, via).join(', ')}`)
  else for (let i = 0; i < vias; i++) hs.push(`Via: ${via()}`)
  hs.push(`Max-Forwards: ${rng.int(71)}`)
  hs.push(`${pick(['From', 'f'])}: ${addr(true)}`)
  hs.push(`${pick(['To', 't'])}: ${addr(!isReq)}`)
  hs.push(`${pick(['Call-ID', 'i', 'call-id'])}: ${tok(16)}@${pick(HOSTS)}`)
  hs.push(`CSeq: ${rng.int(100000)} ${method}`)
  if (rng.int(2) === 0) hs.push(`${pick(['Contact', 'm'])}: ${Array.from({ length: 1 + rng.int(2) }, () => `<${uri()}>;expires=${rng.int(7200)}`).join(', ')}`)
  if (rng.int(3) === 0) hs.push(`Record-Route: <sip:${pick(HOSTS)};lr>`)
  if (rng.int(3) === 0) hs.push(`Route: <sip:${pick(HOSTS)};lr>, <sip:${pick(HOSTS)};lr>`)
  if (rng.int(3) === 0) hs.push(`User-Agent: sipring-test/${rng.int(10)}.${rng.int(10)}`)
  if (rng.int(3) === 0) hs.push(`Allow: INVITE, ACK, CANCEL, BYE`)
  if (rng.int(4) === 0) hs.push(`Supported: path, outbound`)
  if (rng.int(4) === 0) hs.push(`X-Custom-${tok(3)}: value ${tok(5)}`)
  if (rng.int(4) === 0) hs.push(`Expires: ${rng.int(3600)}`)
  if (rng.int(4) === 0) hs.push(`Authorization: Digest username="${pick(USERS)}", realm="example.com", nonce="${tok(16)}", uri="sip:example.com", response="${tok(32)}", algorithm=MD5, qop=auth, nc=0000000${rng.int(9)}, cnonce="${tok(8)}"`)
  if (rng.int(4) === 0) hs.push(`WWW-Authenticate: Digest realm="example.com", nonce="${tok(16)}", algorithm=MD5, qop="auth"`)
  // shuffle the non-Via headers a bit
  for (let i = hs.length - 1; i > 1; i--) { const j = 1 + rng.int(i); [hs[i], hs[j]] = [hs[j]!, hs[i]!] }
  const body = rng.int(2) === 0 ? '' : `v=0\r\no=- ${rng.int(99999)} 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio ${rng.int(60000)} RTP/AVP 0\r\n`
  if (body !== '') hs.push('Content-Type: application/sdp')
  hs.push(`${pick(['Content-Length', 'l'])}: ${body.length}`)
  return [...lines, ...hs].join('\r\n') + '\r\n\r\n' + body
}

const paramsObj = (m: Map<string, string | null>): Record<string, string | null> => Object.fromEntries(m)

t.test('agrees with npm sip on 1000 generated valid messages', async tt => {
  const rng = new SeededRng(7)
  const diffs: string[] = []
  let checked = 0
  for (let n = 0; n < 1000; n++) {
    const text = gen(rng)
    const buf = Buffer.from(text, 'latin1')
    const ours = parseMessage(buf)
    const theirs = npmSip.parse(buf)
    const d = (what: string, a: unknown, b: unknown): void => {
      const ja = JSON.stringify(a); const jb = JSON.stringify(b)
      if (ja !== jb) diffs.push(`#${n} ${what}: ours ${ja} npm ${jb}\n${text}`)
      else checked++
    }
    if (ours instanceof SipRequest) {
      d('method', ours.method, theirs.method)
      d('uri', ours.uri, theirs.uri)
    } else {
      d('status', (ours as SipResponse).status, theirs.status)
      d('reason', (ours as SipResponse).reason, theirs.reason)
    }
    d('body', ours.body.toString('latin1'), theirs.content)
    const names = new Set(ours.headers.map(h => h.name))
    d('header names', [...names].sort(), Object.keys(theirs.headers).map(canonicalName).sort())
    for (const name of names) {
      const th = theirs.headers[name]
      switch (name) {
        case 'via':
          d('via', ours.getAll('via').map(v => { const x = parseVia(v); return { protocol: x.transport, host: x.host, port: x.port, params: paramsObj(x.params) } }),
            th.map((x: any) => ({ protocol: x.protocol, host: x.host, port: x.port, params: x.params })))
          break
        case 'to': case 'from': {
          const na = parseNameAddr(ours.get(name)!)
          d(name, { name: na.displayName, uri: na.uri, params: paramsObj(na.params) },
            { name: th.name === undefined ? undefined : unquote(th.name), uri: th.uri, params: th.params })
          break
        }
        case 'contact':
          d('contact', ours.getAll('contact').map(c => { const na = parseNameAddr(c); return { uri: na.uri, params: paramsObj(na.params) } }),
            th.map((x: any) => ({ uri: x.uri, params: x.params })))
          break
        case 'route': case 'record-route':
          d(name, ours.getAll(name).map(c => { const u = parseUri(parseNameAddr(c).uri); return { host: u.host, user: u.user, params: paramsObj(u.params) } }),
            th.map((x: any) => ({ host: x.uri.host, user: x.uri.user, params: x.uri.params })))
          break
        case 'cseq':
          d('cseq', parseCSeq(ours.get('cseq')!), th)
          break
        case 'content-length':
          d('content-length', Number(ours.get('content-length')), th)
          break
        case 'authorization': case 'www-authenticate': {
          const a = parseAuthHeader(ours.get(name)!)
          const { scheme, ...rest } = th[0]
          d(name, { scheme: a.scheme, params: paramsObj(a.params as Map<string, string | null>) },
            { scheme, params: Object.fromEntries(Object.entries(rest as Record<string, string>).map(([k, v]) => [k, unquote(v)])) })
          break
        }
        default:
          // generic headers: npm sip joins repeated lines with ','
          d(name, LIST_HEADERS.has(name) ? ours.getAll(name).join(', ') : ours.get(name), th)
      }
    }
  }
  tt.same(diffs.slice(0, 5), [], 'no differences')
  tt.ok(checked > 10000, `${checked} fields compared`)
})
