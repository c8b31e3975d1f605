/**
 * Micro-benchmark: REGISTER requests through SipStack (parse → RFC 3581 → server transaction → TU →
 * 200 serialized → transport.send) with an in-memory transport. Not a tap test.
 *   node --import tsx --conditions=sipring-source test/bench/sip-stack.ts [udp|tcp] [count]
 * SNAP=/tmp/x.heapsnapshot writes a heap snapshot at the end (UDP: the compact Completed entries).
 */
import type { Clock, Destination, Endpoint, SipTransport, TransportEvents, TransportProtocol } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import { SeededRng } from '@sipring/testkit'
import { SipStack, createResponse } from '@sipring/sip'

const protocol = (process.argv[2] ?? 'udp') as TransportProtocol
const count = Number(process.argv[3] ?? 200_000)

class MemTransport implements SipTransport {
  readonly local: Endpoint
  sent = 0
  private handler: TransportEvents['message'] | undefined
  constructor (readonly protocol: TransportProtocol) { this.local = { protocol, address: '10.0.0.9', port: 5060 } }
  async start (): Promise<void> {}
  async stop (): Promise<void> {}
  send (_d: Buffer, _to: Destination): Promise<void> { this.sent++; return RESOLVED }
  on<E extends keyof TransportEvents>(e: E, l: TransportEvents[E]): void { if (e === 'message') this.handler = l as TransportEvents['message'] }
  off (): void {}
  hasConnection (): boolean { return true }
  deliver (b: Buffer, i: number): void {
    this.handler!(b, { protocol: this.protocol, address: '10.1.0.1', port: 5060 + (i & 1023), connectionId: 'c1', local: this.local })
  }
}
const RESOLVED = Promise.resolve()

const clock: Clock = {
  now: () => Date.now(),
  setTimer (ms, fn) { const h = setTimeout(fn, ms); h.unref(); return { cancel: () => { clearTimeout(h) } } }
}

const tr = new MemTransport(protocol)
const stack = new SipStack({ clock, rng: new SeededRng(1), logger: silentLogger, transports: [tr] })
stack.onRequest = (req, tx) => { tx.respond(createResponse(req, 200, 'OK', 'srvtag')) }
await stack.start()

const T = protocol.toUpperCase()
const msgs: Buffer[] = []
const warm = Math.min(20_000, count)
for (let i = 0; i < count + warm; i++) {
  msgs.push(Buffer.from(
    `REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/${T} 192.168.1.${i & 255}:5060;branch=z9hG4bK${i}x${(i * 7919) % 100000};rport\r\n` +
    'Max-Forwards: 70\r\nFrom: <sip:user' + i + '@example.org>;tag=' + i + '\r\nTo: <sip:user' + i + '@example.org>\r\n' +
    `Call-ID: ${i}-reg@192.168.1.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:user${i}@192.168.1.${i & 255}:5060>;expires=3600\r\n` +
    'User-Agent: bench\r\nContent-Length: 0\r\n\r\n'))
}
// warm-up
for (let i = count; i < count + warm; i++) tr.deliver(msgs[i]!, i) // distinct requests
const start = process.hrtime.bigint()
for (let i = 0; i < count; i++) tr.deliver(msgs[i]!, i)
const ns = Number(process.hrtime.bigint() - start)
console.log(`${protocol}: ${count} REGISTER in ${(ns / 1e6).toFixed(0)} ms → ${Math.round(count / (ns / 1e9))}/s; responses sent ${tr.sent}; held transactions ${stack.transactionCount}`)
if (process.env.SNAP !== undefined) (await import('node:v8')).writeHeapSnapshot(process.env.SNAP)
await stack.stop()
