// Loopback throughput of the UDP and TCP transports (not a test).
// Run: node --import tsx --conditions=sipring-source test/bench/sip-transport.ts [count] [window]
import { performance } from 'node:perf_hooks'
import { silentLogger, type Clock, type SipTransport } from '@sipring/interface'
import { UdpTransport, TcpTransport } from '@sipring/sip'

const N = Number(process.argv[2] ?? 200_000)
const WINDOW = Number(process.argv[3] ?? 256)
const clock: Clock = { now: () => Date.now(), setTimer: (ms, fn) => { const h = setTimeout(fn, ms); return { cancel: () => { clearTimeout(h) } } } }

async function run (name: string, make: () => SipTransport): Promise<void> {
  const a = make(); const b = make()
  await a.start(); await b.start()
  const msg = sipRequest({ body: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n', method: 'INVITE' })
  // closed loop: at most WINDOW messages sent but not yet received (so the measure is end to end, not
  // how fast the kernel drops datagrams while the one-process receiver waits for the event loop)
  let received = 0
  let lost = 0
  let wake: (() => void) | undefined
  b.on('message', () => { received++; const w = wake; wake = undefined; w?.() })
  const to = { protocol: a.protocol, address: '127.0.0.1', port: b.local.port }
  const t0 = performance.now()
  let sent = 0
  while (sent < N) {
    if (sent - received >= WINDOW) {
      const ok = await new Promise<boolean>(resolve => { const h = setTimeout(() => { resolve(false) }, 200); wake = () => { clearTimeout(h); resolve(true) } })
      if (!ok) { lost += sent - received; sent = received } // UDP loss: count it, resynchronize the window
      continue
    }
    const batch = Math.min(WINDOW - (sent - received), N - sent)
    const ps: Array<Promise<void>> = []
    for (let i = 0; i < batch; i++) ps.push(a.send(msg, to))
    sent += batch
    await Promise.all(ps)
  }
  while (received < sent) {
    const ok = await new Promise<boolean>(resolve => { const h = setTimeout(() => { resolve(false) }, 200); wake = () => { clearTimeout(h); resolve(true) } })
    if (!ok) break
  }
  const secs = (performance.now() - t0) / 1000
  console.log(`${name}: ${N} x ${msg.length} B, window ${WINDOW}: ${received} received, ${lost} lost, ${Math.round(received / secs).toLocaleString('en')} msg/s (${(received * msg.length * 8 / secs / 1e6).toFixed(0)} Mbit/s)`)
  await a.stop(); await b.stop()
}

await run('udp', () => new UdpTransport({ address: '127.0.0.1', port: 0, clock, logger: silentLogger }))
await run('tcp', () => new TcpTransport({ address: '127.0.0.1', port: 0, clock, logger: silentLogger }))

/** A minimal SIP request (same shape as the sip package's transport test helper). */
function sipRequest (opts: { body?: string | Buffer, callId?: string, method?: string } = {}): Buffer {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : (opts.body ?? Buffer.alloc(0))
  const method = opts.method ?? 'MESSAGE'
  const head = `${method} sip:bob@example.org SIP/2.0\r\n` +
    'Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n' +
    'From: <sip:alice@example.org>;tag=1928301774\r\n' +
    'To: <sip:bob@example.org>\r\n' +
    `Call-ID: ${opts.callId ?? 'a84b4c76e66710'}\r\n` +
    `CSeq: 1 ${method}\r\n` +
    'Max-Forwards: 70\r\n' +
    `Content-Length: ${body.length}\r\n\r\n`
  return Buffer.concat([Buffer.from(head, 'latin1'), body])
}
