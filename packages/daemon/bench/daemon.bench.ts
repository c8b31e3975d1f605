/**
 * Whole-daemon CPU benchmark without sockets and without SIPp (not a test). From the repo root:
 *   node --import tsx --conditions=sipring-source packages/daemon/bench/daemon.bench.ts [register|calls] [N]
 * Runs `startDaemon` (system clock, crypto rng, pino at error level, classic-level in a temp dir) with an
 * in-memory UDP transport, feeds it SIPp-like traffic in bursts of 100 messages per event-loop turn and
 * prints the process CPU time per REGISTER / per call (INVITE-100-180-200-ACK-BYE-200 through the proxy).
 * The fake UAC/UAS work (building the callee's answers) is included in the call figure (it is small:
 * string slicing of the forwarded INVITE/BYE).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Destination, Endpoint, Source, SipTransport, TransportEvents } from '@sipring/interface'
import { defaultConfig, startDaemon, cryptoRng, systemClock, createPinoLogger } from '@sipring/daemon'

const scenario = process.argv[2] ?? 'register'
const N = Number(process.argv[3] ?? (scenario === 'register' ? 100_000 : 20_000))

class FakeUdp implements SipTransport {
  readonly protocol = 'udp' as const
  readonly local: Endpoint = { protocol: 'udp', address: '127.0.0.1', port: 5060 }
  private readonly ls: Array<TransportEvents['message']> = []
  sent = 0
  onSend: (data: Buffer, to: Destination) => void = () => {}
  async start (): Promise<void> {}
  async stop (): Promise<void> {}
  on<E extends keyof TransportEvents> (e: E, l: TransportEvents[E]): void { if (e === 'message') this.ls.push(l as TransportEvents['message']) }
  off<E extends keyof TransportEvents> (e: E, l: TransportEvents[E]): void { if (e === 'message') this.ls.splice(this.ls.indexOf(l as TransportEvents['message']), 1) }
  hasConnection (): boolean { return false }
  async send (data: Buffer, to: Destination): Promise<void> { this.sent++; this.onSend(data, to) }
  private queue: Array<[Buffer, Source]> = []
  /** Deliver like a socket would: on a later event-loop turn, never inside the caller's send(). */
  inject (data: Buffer, from: Source): void {
    if (this.queue.length === 0) setImmediate(() => { this.flush() })
    this.queue.push([data, from])
  }

  private flush (): void {
    const q = this.queue
    this.queue = []
    for (const [data, from] of q) for (const l of this.ls) l(data, from)
  }
}

const udp = new FakeUdp()
const dir = mkdtempSync(join(tmpdir(), 'sipring-bench-'))
const config = { ...defaultConfig(), dataDir: dir, admin: null, domains: ['sipring.test'], sip: [{ protocol: 'udp' as const, host: '127.0.0.1', port: 5060 }] }
const { logger } = createPinoLogger({ level: 'error' })
const daemon = await startDaemon(config as typeof config & { admin: null }, { clock: systemClock, rng: cryptoRng, logger, createTransport: () => udp })
const src = (port: number): Source => ({ protocol: 'udp', address: '127.0.0.1', port, local: udp.local })
const tick = async (): Promise<void> => { await new Promise<void>(resolve => { setImmediate(resolve) }) }

function register (user: string, port: number, i: number): Buffer {
  return Buffer.from(`REGISTER sip:sipring.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-r${i}-${port};rport\r\nMax-Forwards: 70\r\n` +
    `From: <sip:${user}@sipring.test>;tag=${port}r${i}\r\nTo: <sip:${user}@sipring.test>\r\nCall-ID: ${i}-${port}@127.0.0.1\r\nCSeq: 1 REGISTER\r\n` +
    `Contact: <sip:${user}@127.0.0.1:${port};transport=udp>\r\nExpires: 3600\r\nUser-Agent: sipp-sipring-register\r\nContent-Length: 0\r\n\r\n`)
}

async function measure (label: string, n: number, run: () => Promise<void>): Promise<void> {
  // BENCH_HEAP_PROFILE=file: sampling heap profile of everything allocated during the measured round
  const heapFile = process.env.BENCH_HEAP_PROFILE !== undefined && !label.includes('warm') ? process.env.BENCH_HEAP_PROFILE : undefined
  const session = heapFile !== undefined ? new Session() : undefined
  if (session !== undefined) {
    session.connect()
    await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true } as object)
  }
  const gc0 = process.memoryUsage().heapUsed
  const c0 = process.cpuUsage()
  const t0 = performance.now()
  await run()
  const c = process.cpuUsage(c0)
  const wall = performance.now() - t0
  if (session !== undefined) {
    const { profile } = await session.post('HeapProfiler.stopSampling')
    writeFileSync(heapFile!, JSON.stringify(profile))
  }
  const us = (c.user + c.system) / n
  console.log(`${label}: ${n} in ${wall.toFixed(0)} ms wall, ${us.toFixed(1)} CPU-µs each (user ${(c.user / n).toFixed(1)}, sys ${(c.system / n).toFixed(1)}), ${Math.round(1e6 / us).toLocaleString()} per CPU-second; heap +${((process.memoryUsage().heapUsed - gc0) / 1e6).toFixed(0)} MB`)
}

if (scenario === 'register') {
  const users = 20_000
  const msgs = Array.from({ length: N }, (_, i) => register(`u${i % users}`, 9, i))
  let ok = 0
  udp.onSend = (d) => { if (d.subarray(8, 11).toString() === '200') ok++ }
  for (const round of [0, 1]) { // round 0 warms the JIT and fills the location table
    const part = round === 0 ? msgs.slice(0, N / 2) : msgs.slice(N / 2)
    ok = 0
    await measure(round === 0 ? 'REGISTER warm-up' : 'REGISTER', part.length, async () => {
      for (let i = 0; i < part.length; i += 100) {
        const end = Math.min(part.length, i + 100)
        for (let j = i; j < end; j++) udp.inject(part[j]!, src(9))
        await tick()
      }
      await daemon.node.location.flush()
    })
    if (ok !== part.length) throw new Error(`only ${ok} of ${part.length} REGISTERs answered 200`)
  }
} else {
  // callee bound at 127.0.0.1:7000, caller at 127.0.0.1:6000
  udp.inject(register('callee', 7000, 0), src(7000))
  await tick()
  let done = 0
  const lines = (d: string): string[] => d.slice(0, d.indexOf('\r\n\r\n')).split('\r\n')
  const answer = (d: string, status: string, tag: string): Buffer => {
    const hs = lines(d).slice(1).filter(l => /^(Via|From|To|Call-ID|CSeq|Record-Route):/i.test(l)).map(l => /^To:/i.test(l) && !l.includes('tag=') ? `${l};tag=${tag}` : l)
    return Buffer.from(`SIP/2.0 ${status}\r\n${hs.join('\r\n')}\r\n${status.startsWith('200') && d.startsWith('INVITE') ? 'Contact: <sip:callee@127.0.0.1:7000>\r\n' : ''}Content-Length: 0\r\n\r\n`)
  }
  udp.onSend = (data, to) => {
    const d = data.toString('latin1')
    if (to.port === 7000) { // callee (UAS)
      if (d.startsWith('INVITE')) {
        const tag = 'uas' + d.length
        udp.inject(answer(d, '100 Trying', tag), src(7000))
        udp.inject(answer(d, '180 Ringing', tag), src(7000))
        udp.inject(answer(d, '200 OK', tag), src(7000))
      } else if (d.startsWith('BYE')) udp.inject(answer(d, '200 OK', 'x'), src(7000))
    } else if (to.port === 6000) { // caller (UAC)
      if (d.startsWith('SIP/2.0 200') && d.includes('INVITE')) {
        const callId = /Call-ID: (\S+)/i.exec(d)![1]!
        const to = /\r\nTo: ([^\r]+)/i.exec(d)![1]!
        const rrs = lines(d).filter(l => /^Record-Route:/i.test(l)).map(l => l.slice(l.indexOf(':') + 1).trim())
        const route = rrs.length > 0 ? `Route: ${rrs.join(', ')}\r\n` : ''
        const base = `From: <sip:caller@sipring.test>;tag=c${callId}\r\nTo: ${to}\r\nCall-ID: ${callId}\r\n${route}Max-Forwards: 70\r\n`
        udp.inject(Buffer.from(`ACK sip:callee@127.0.0.1:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-a${callId};rport\r\n${base}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n`), src(6000))
        udp.inject(Buffer.from(`BYE sip:callee@127.0.0.1:7000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-b${callId};rport\r\n${base}CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n`), src(6000))
      } else if (d.startsWith('SIP/2.0 200') && d.includes(' BYE')) done++
    }
  }
  const invite = (i: number): Buffer => Buffer.from(`INVITE sip:callee@sipring.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-i${i};rport\r\nMax-Forwards: 70\r\n` +
    `From: <sip:caller@sipring.test>;tag=c${i}-6000\r\nTo: <sip:callee@sipring.test>\r\nCall-ID: ${i}-6000\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:6000>\r\n` +
    'Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n')
  for (const round of [0, 1]) {
    const n = round === 0 ? Math.min(5000, N) : N
    const msgs = Array.from({ length: n }, (_, i) => invite(round * 1e7 + i))
    done = 0
    await measure(round === 0 ? 'calls warm-up' : 'calls', n, async () => {
      for (let i = 0; i < n; i += 20) {
        const end = Math.min(n, i + 20)
        for (let j = i; j < end; j++) udp.inject(msgs[j]!, src(6000))
        await tick()
      }
      for (let k = 0; k < 100 && done < n; k++) await tick()
    })
    if (done !== n) throw new Error(`only ${done} of ${n} calls completed`)
    const g = (globalThis as { gc?: () => void }).gc
    if (process.env.BENCH_SNAPSHOT !== undefined) (await import('node:v8')).writeHeapSnapshot(process.env.BENCH_SNAPSHOT)
    if (g !== undefined) { g(); console.log(`  retained after GC: ${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB heap (${daemon.node.stack.stats().serverTransactions} server / ${daemon.node.stack.stats().clientTransactions} client transactions, ${daemon.node.stack.stats().completedTransactions} compact)`) }
  }
}
await daemon.stop()
rmSync(dir, { recursive: true, force: true })
process.exit(0)
