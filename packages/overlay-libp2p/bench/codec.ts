/**
 * Cost of the JSON frame codec (encode + length-prefix decode + schema check) per message.
 *
 *   cd /work/main && node --import tsx --conditions=sipring-source packages/overlay-libp2p/bench/codec.ts
 */
import type { OverlayMessage, WireItem } from '@sipring/overlay'
import { FrameDecoder, decodePayload, encodeFrame } from '@sipring/overlay-libp2p'

/** CPU time of this process in ms (user + system): steadier than the wall clock on a shared machine, and no clock read. */
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }

const id = '12D3KooWJTZWoLVWRuqzWqzzJ9UkUeXZTmuvDiLrvmoBEayU4sK1'
const item = (i: number): WireItem => ({
  key: `sip:user${i}@example.org`,
  version: { updated: 1_790_000_000_000 + i, counter: 0, origin: id },
  deleted: false,
  value: { contact: `sip:user${i}@192.0.2.${i % 250}:5060;transport=udp`, expires: 1_790_000_003_600, q: 1, callId: `c${i}@host`, cseq: 42, node: id },
  expires: 1_790_000_003_600
})
const cases: Array<[string, OverlayMessage]> = [
  ['swim.ping (8 updates)', { type: 'swim.ping', updates: Array.from({ length: 8 }, (_, i) => ({ id: `${id}${i}`, incarnation: i, status: 'alive' as const })) }],
  ['store.put (1 item)', { type: 'store.put', items: [item(1)] }],
  ['store.put (100 items)', { type: 'store.put', items: Array.from({ length: 100 }, (_, i) => item(i)) }]
]
for (const [name, msg] of cases) {
  const dec = new FrameDecoder()
  const N = name.includes('100') ? 2000 : 100_000
  let bytes = 0
  const t0 = cpuMs()
  for (let i = 0; i < N; i++) {
    const f = encodeFrame({ id: i, kind: 'req', msg })
    bytes = f.length
    dec.push(f)
    const r = decodePayload(dec.next()!)
    if ('error' in r) throw new Error(r.error)
  }
  const us = (cpuMs() - t0) * 1000 / N
  console.log(JSON.stringify({ message: name, frameBytes: bytes, usPerRoundTrip: +us.toFixed(2), perSecond: Math.round(1e6 / us) }))
}
