// Parser micro-benchmark (not a test): `npx tsx --conditions=sipring-source test/bench/sip-parse.ts`
// Reports parse-only and parse+serialize throughput on one core for a typical REGISTER and INVITE.
import { parseMessage, serialize, parseVia, parseNameAddr, parseUri, aorOf } from '@sipring/sip'

const REGISTER = Buffer.from([
  'REGISTER sip:example.com SIP/2.0',
  'Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPjfb8765652e99468592d8fb9cb7a778ee',
  'Max-Forwards: 70',
  'From: <sip:alice@example.com>;tag=20449c5f331b40df9ef397f36718ec25',
  'To: <sip:alice@example.com>',
  'Call-ID: 25536ca319b24a59835915a2ee246ef7',
  'CSeq: 43598 REGISTER',
  'User-Agent: MicroSIP/3.21.5',
  'Contact: <sip:alice@192.0.2.10:5060;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1',
  'Expires: 300',
  'Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS',
  'Authorization: Digest username="alice", realm="example.com", nonce="9141ed3a3de48a878ba1467f9cfa0a88", uri="sip:example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001',
  'Content-Length: 0', '', ''
].join('\r\n'))

const SDP = 'v=0\r\no=- 3781270165 3781270165 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n'
const INVITE = Buffer.from([
  'INVITE sip:bob@example.com SIP/2.0',
  'Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKPj0c9a1f2e3d4c5b6a7980',
  'Max-Forwards: 70',
  'From: "Alice" <sip:alice@example.com>;tag=a48s',
  'To: <sip:bob@example.com>',
  'Contact: <sip:alice@192.0.2.10:5060;ob>',
  'Call-ID: f81d4fae-7dec-11d0-a765-00a0c91e6bf6',
  'CSeq: 1 INVITE',
  'Route: <sip:edge.example.com;lr>',
  'Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS',
  'Supported: replaces, 100rel, timer, norefersub',
  'Session-Expires: 1800',
  'Min-SE: 90',
  'User-Agent: MicroSIP/3.21.5',
  'Content-Type: application/sdp',
  `Content-Length: ${Buffer.byteLength(SDP)}`, '', SDP
].join('\r\n'))

// Throughput is per CPU-second of this process (process.cpuUsage), so that other load on the
// machine does not distort the figure; wall-clock rate is shown too.
function bench (label: string, fn: () => void, ms = 1500): void {
  for (let i = 0; i < 20000; i++) fn() // warm up
  let n = 0
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  let t1 = t0
  while (t1 - t0 < ms) {
    for (let i = 0; i < 1000; i++) fn()
    n += 1000
    t1 = performance.now()
  }
  const c = process.cpuUsage(c0)
  const cpuRate = n / ((c.user + c.system) / 1e6)
  const wallRate = n / ((t1 - t0) / 1000)
  const f = (x: number): string => Math.round(x).toLocaleString('en-US').padStart(10)
  console.log(`${label.padEnd(44)} ${f(cpuRate)} msg/CPU-s (${(1e6 / cpuRate).toFixed(2)} µs)  wall ${f(wallRate)} msg/s`)
}

bench('REGISTER parse', () => { parseMessage(REGISTER) })
bench('REGISTER parse + serialize', () => { serialize(parseMessage(REGISTER)) })
bench('REGISTER parse + Via/To/Contact views + AOR', () => {
  const m = parseMessage(REGISTER)
  parseVia(m.getAll('via')[0]!)
  aorOf(parseUri(parseNameAddr(m.get('to')!).uri))
  parseUri(parseNameAddr(m.getAll('contact')[0]!).uri)
})
bench('INVITE (SDP body) parse', () => { parseMessage(INVITE) })
bench('INVITE (SDP body) parse + serialize', () => { serialize(parseMessage(INVITE)) })
