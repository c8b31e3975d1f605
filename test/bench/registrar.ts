/**
 * Registrar benchmark (not a test). From the repo root:
 *   node --import tsx --conditions=sipring-source test/bench/registrar.ts [N]
 * Parses N REGISTERs from wire bytes, handles them and serializes the 200 (the registrar's share of
 * a super node's REGISTER path, without transactions and sockets).
 */
import { SimClock } from '@sipring/testkit'
import type { Source } from '@sipring/interface'
import { LocationStore } from '@sipring/location'
import { parseMessage, serialize, type SipRequest } from '@sipring/sip'
import { createRegistrar } from '@sipring/registrar'

const N = Number(process.argv[2] ?? 50_000)
const clock = new SimClock()
const location = new LocationStore({ clock, limits: { maxAors: N * 2 } })
const registrar = createRegistrar({ location, clock, nodeId: 'bench' })
const source: Source = { protocol: 'tcp', address: '192.0.2.1', port: 40000, connectionId: 'c1', local: { protocol: 'tcp', address: '198.51.100.1', port: 5060 } }

function wire (i: number, cseq: number): Buffer {
  return Buffer.from([
    'REGISTER sip:example.org SIP/2.0',
    `Via: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK${i}x${cseq};rport`,
    'Max-Forwards: 70',
    `From: <sip:user${i}@example.org>;tag=f${i}`,
    `To: <sip:user${i}@example.org>`,
    `Call-ID: reg-${i}@192.0.2.1`,
    `CSeq: ${cseq} REGISTER`,
    'Supported: outbound, path',
    `Contact: <sip:user${i}@192.0.2.1:40000;transport=tcp;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-${String(i).padStart(12, '0')}>";reg-id=1`,
    'Expires: 600',
    'User-Agent: bench/1',
    'Content-Length: 0',
    '', ''
  ].join('\r\n'))
}

for (const cseq of [1, 2]) {
  const bufs = Array.from({ length: N }, (_, i) => wire(i, cseq))
  const t0 = performance.now()
  let bytes = 0
  for (const b of bufs) {
    const res = await registrar.handle(parseMessage(b) as SipRequest, source)
    if (res.status !== 200) throw new Error(`unexpected ${res.status} ${res.reason}`)
    bytes += serialize(res).length
  }
  const dt = performance.now() - t0
  console.log(`${cseq === 1 ? 'initial' : 'refresh'}: ${Math.round(N / dt * 1000).toLocaleString()} REGISTER/s (parse + handle + serialize), ${Math.round(bytes / N)} B per 200 OK`)
}
