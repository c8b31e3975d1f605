/**
 * Round-trip latency and throughput of the overlay stream between two libp2p nodes on loopback TCP.
 *
 *   node --import tsx --conditions=sipring-source test/bench/overlay-rtt.ts [--n 5000] [--inflight 64] [--seconds 3] [--ip6] [--memory]
 *
 * Targets: p50 ≤ 0.3 ms, p99 ≤ 2 ms for a small request over the kept stream.
 */
import { parseArgs } from 'node:util'
import { silentLogger, type Clock } from '@sipring/interface'
import type { OverlayMessage } from '@sipring/overlay'
import { libp2pOverlay } from '@sipring/overlay-libp2p'

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '5000' },
    inflight: { type: 'string', default: '64' },
    seconds: { type: 'string', default: '3' },
    ip6: { type: 'boolean', default: false },
    memory: { type: 'boolean', default: false }
  }
})
const N = Number(args.n); const INFLIGHT = Number(args.inflight); const SECONDS = Number(args.seconds)

const clock: Clock = {
  now: () => Date.now(),
  setTimer (ms, fn) { const t = setTimeout(fn, ms); return { cancel: () => { clearTimeout(t) } } }
}
const listen = args.memory ? ['/memory/bench-a', '/memory/bench-b'] : args.ip6 ? ['/ip6/::1/tcp/0', '/ip6/::1/tcp/0'] : ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/tcp/0']
const a = await libp2pOverlay({ clock, logger: silentLogger, listen: [listen[0]!] })
const b = await libp2pOverlay({ clock, logger: silentLogger, listen: [listen[1]!] })
await a.start(); await b.start()
await a.dial(b.multiaddrs()[0]!)
b.onRequest((msg) => msg.type === 'swim.ping' ? { type: 'swim.ack', updates: [] } : undefined)
const ping: OverlayMessage = { type: 'swim.ping', updates: [{ id: a.peerId, incarnation: 1, status: 'alive' }] }

// warm-up (JIT, stream open)
for (let i = 0; i < 2000; i++) await a.send(b.peerId, ping)

const lat = new Float64Array(N)
for (let i = 0; i < N; i++) {
  const t0 = process.hrtime.bigint()
  await a.send(b.peerId, ping)
  lat[i] = Number(process.hrtime.bigint() - t0) / 1e6
}
lat.sort()
const q = (p: number): number => lat[Math.min(N - 1, Math.floor(p * N))]!

let done = 0
const until = performance.now() + SECONDS * 1000
const t0 = performance.now()
await Promise.all(Array.from({ length: INFLIGHT }, async () => {
  while (performance.now() < until) { await a.send(b.peerId, ping); done++ }
}))
const rps = done / ((performance.now() - t0) / 1000)

console.log(JSON.stringify({
  transport: args.memory ? 'memory' : args.ip6 ? 'tcp6-loopback' : 'tcp4-loopback',
  sequential: { n: N, p50ms: +q(0.5).toFixed(3), p90ms: +q(0.9).toFixed(3), p99ms: +q(0.99).toFixed(3), maxMs: +lat[N - 1]!.toFixed(3) },
  concurrent: { inflight: INFLIGHT, seconds: SECONDS, requests: done, rps: Math.round(rps) },
  streams: a.network.load().streams
}))
await a.stop(); await b.stop()
