// CPU per REGISTER through a 3-node overlay, without SIPp and without separate processes (not a test):
//
//   node --import tsx --conditions=sipring-source test/bench/overlay-cpu.ts [N] [window] [--profile file [--profile-round refresh]] [--signed] [--rounds k] [--spread]
//
// Three `startDaemon`s in this process (system clock, pino at error level, classic-level in temp dirs,
// libp2p TCP on 127.0.0.1, R = 3, W = 2), each with an in-memory UDP transport. N REGISTERs of distinct
// users (new AORs; then a second round refreshing the same users) spread round-robin over the three
// nodes, at most `window` unanswered at once (like SIPp's in-flight calls), every one answered 200 only
// after the overlay write quorum. Prints process CPU (user + sys) per REGISTER — all three nodes summed,
// the figure the 3-node/single-node ratio depends on — and the wall-clock rate (one event loop for
// three nodes, so not a capacity figure). Load-insensitive enough to compare two versions of the code
// minutes apart on a shared machine, which the SIPp harness (test/bench/overlay.ts) is not.
// --signed: a closed overlay (core key, enrolled nodes), so every AOR portion is signed with Ed25519.
// --rounds k: k pairs of rounds (new AORs, refresh), medians printed. --spread: one callback per REGISTER
// (as a UDP socket delivers them); without it a whole turn's REGISTERs arrive in one callback (batches more).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Destination, Endpoint, Source, SipTransport, TransportEvents } from '@sipring/interface'
// the daemon is not a dependency of test/ (and outside its rootDir): loaded at run time, typed by hand
interface Daemon {
  node: { overlay?: { ring: { size: number }, store: { getStats: () => object } }, replication?: { stats: Record<string, number> } }
  overlay?: { multiaddrs: () => string[], stats: () => { requestsSent: number } }
  stop: () => Promise<void>
}
interface DaemonModule {
  defaultConfig: () => Record<string, unknown>
  startDaemon: (config: Record<string, unknown>, deps: Record<string, unknown>) => Promise<Daemon>
  cryptoRng: unknown
  systemClock: unknown
  createPinoLogger: (o: { level: string }) => { logger: unknown }
  main: (argv: string[], env: Record<string, string>, io: { out: (s: string) => void, err: (s: string) => void }) => Promise<number>
}
const daemonSource: string = '../../packages/daemon/src/index.js'
const { defaultConfig, startDaemon, cryptoRng, systemClock, createPinoLogger, main } = await import(daemonSource) as DaemonModule
import { freePort } from '../lib/ports.js'

const N = Number(process.argv[2] ?? 20_000)
const WINDOW = Number(process.argv[3] ?? 300)
const signed = process.argv.includes('--signed')
// --spread: each REGISTER delivered in its own callback (microtasks run in between, as with a real UDP
// socket); default: all REGISTERs injected in one turn delivered in one callback (batches more)
const spread = process.argv.includes('--spread')
const profIdx = process.argv.indexOf('--profile')
const profile = profIdx > 0 ? process.argv[profIdx + 1] : undefined
// --profile-round refresh: profile (and --heap) the first 'refresh' round instead of the first 'new AORs' round
const profRoundIdx = process.argv.indexOf('--profile-round')
const profRound = profRoundIdx > 0 ? process.argv[profRoundIdx + 1] : 'new AORs'
// --heap file: sampling heap profile of everything allocated in the 'new AORs' round (collected objects included)
const heapIdx = process.argv.indexOf('--heap')
const heapFile = heapIdx > 0 ? process.argv[heapIdx + 1] : undefined

class FakeUdp implements SipTransport {
  readonly protocol = 'udp' as const
  readonly local: Endpoint
  private readonly ls: Array<TransportEvents['message']> = []
  onSend: (data: Buffer, to: Destination) => void = () => {}
  constructor (port: number) { this.local = { protocol: 'udp', address: '127.0.0.1', port } }
  async start (): Promise<void> {}
  async stop (): Promise<void> {}
  on<E extends keyof TransportEvents> (e: E, l: TransportEvents[E]): void { if (e === 'message') this.ls.push(l as TransportEvents['message']) }
  off<E extends keyof TransportEvents> (e: E, l: TransportEvents[E]): void { if (e === 'message') this.ls.splice(this.ls.indexOf(l as TransportEvents['message']), 1) }
  hasConnection (): boolean { return false }
  async send (data: Buffer, to: Destination): Promise<void> { this.onSend(data, to) }
  private queue: Array<[Buffer, Source]> = []
  inject (data: Buffer, from: Source): void {
    if (spread) {
      // one callback per datagram, microtasks run between them, as a real UDP socket delivers them
      setImmediate(() => { for (const l of this.ls) l(data, from) })
      return
    }
    if (this.queue.length === 0) setImmediate(() => { this.flush() })
    this.queue.push([data, from])
  }

  private flush (): void {
    const q = this.queue
    this.queue = []
    for (const [data, from] of q) for (const l of this.ls) l(data, from)
  }
}

function register (user: string, port: number, i: number, cseq: number): Buffer {
  return Buffer.from(`REGISTER sip:sipring.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK-${user}-${cseq}-${port};rport\r\nMax-Forwards: 70\r\n` +
    `From: <sip:${user}@sipring.test>;tag=${port}r${i}\r\nTo: <sip:${user}@sipring.test>\r\nCall-ID: ${user}-${port}@127.0.0.1\r\nCSeq: ${cseq} REGISTER\r\n` +
    `Contact: <sip:${user}@127.0.0.1:${port};transport=udp>\r\nExpires: 3600\r\nUser-Agent: sipp-sipring-register\r\nContent-Length: 0\r\n\r\n`)
}

const { logger } = createPinoLogger({ level: 'error' })
const dirs: string[] = []
const daemons: Daemon[] = []
const udps: FakeUdp[] = []
let joinAddr: string | undefined
// --signed: a closed overlay (core key, enrolled nodes), so every AOR portion is signed (Ed25519)
const caDir = mkdtempSync(join(tmpdir(), 'sipring-ovcpu-ca-'))
dirs.push(caDir)
const quiet = { out: () => {}, err: (m: string) => { console.error(m) } }
if (signed && await main(['overlay', 'init-ca', '--out', join(caDir, 'ca.key')], {}, quiet) !== 0) throw new Error('init-ca failed')
for (let i = 0; i < 3; i++) {
  const dir = mkdtempSync(join(tmpdir(), 'sipring-ovcpu-'))
  dirs.push(dir)
  const udp = new FakeUdp(5060 + i)
  udps.push(udp)
  const port = await freePort()
  let admission = {}
  if (signed) {
    let id = ''
    await main(['node', 'id', '--data', dir], {}, { out: (m: string) => { id = m.trim() }, err: quiet.err })
    const cred = join(caDir, `n${i}.cred`)
    if (await main(['node', 'enroll', '--ca', join(caDir, 'ca.key'), '--peer', id, '--out', cred], {}, quiet) !== 0) throw new Error('enroll failed')
    admission = { overlayCa: join(caDir, 'ca.key.pub'), overlayCredential: cred }
  }
  const config = {
    ...admission,
    ...defaultConfig(), dataDir: dir, admin: null, domains: ['sipring.test'], sip: [{ protocol: 'udp' as const, host: '127.0.0.1', port: 5060 + i }],
    overlay: true, overlayListen: [`/ip4/127.0.0.1/tcp/${port}`], join: joinAddr !== undefined ? [joinAddr] : [], replicas: 3
  }
  const d = await startDaemon(config, { clock: systemClock, rng: cryptoRng, logger, createTransport: () => udp })
  daemons.push(d)
  joinAddr ??= `${d.overlay!.multiaddrs().find(m => m.startsWith('/ip4/127.0.0.1/'))}`
}
const t0 = Date.now()
while (daemons.some(d => d.node.overlay!.ring.size !== 3)) {
  if (Date.now() - t0 > 30_000) throw new Error('no ring of 3')
  await new Promise(resolve => setTimeout(resolve, 50))
}
await new Promise(resolve => setTimeout(resolve, 1000))

let outstanding = 0
let answered = 0
let failed = 0
const codes = new Map<string, number>()
const sentAt = new Map<string, number>()
let lat: number[] = []
let wake: (() => void) | undefined
for (const u of udps) {
  u.onSend = (d) => {
    if (d.subarray(0, 7).toString() !== 'SIP/2.0') return
    const code = d.subarray(8, 11).toString()
    if (code === '100') return
    const text = d.toString('latin1')
    const m = /\r\nCall-ID: ([^\r]+)/i.exec(text)
    const t = m !== null ? sentAt.get(m[1]!) : undefined
    if (t !== undefined) { lat.push(performance.now() - t); sentAt.delete(m![1]!) }
    outstanding--; answered++
    if (code !== '200') { failed++; codes.set(code, (codes.get(code) ?? 0) + 1) }
    wake?.()
  }
}

async function round (label: string, prefix: string, cseq: number): Promise<number> {
  answered = 0; failed = 0; codes.clear(); lat = []
  const session = profile !== undefined && label === profRound && prefix === 'n' ? new Session() : undefined
  if (session !== undefined) { session.connect(); await session.post('Profiler.enable'); await session.post('Profiler.start') }
  const heapSession = heapFile !== undefined && label === profRound && prefix === 'n' ? new Session() : undefined
  if (heapSession !== undefined) {
    heapSession.connect()
    await heapSession.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMinorGC: true, includeObjectsCollectedByMajorGC: true } as object)
  }
  const c0 = process.cpuUsage()
  const w0 = performance.now()
  for (let i = 0; i < N; i++) {
    while (outstanding >= WINDOW) await new Promise<void>(resolve => { wake = resolve })
    wake = undefined
    const k = i % 3
    outstanding++
    sentAt.set(`${prefix}${i}-${9000 + k}@127.0.0.1`, performance.now())
    udps[k]!.inject(register(`${prefix}${i}`, 9000 + k, i, cseq), { protocol: 'udp', address: '127.0.0.1', port: 9000 + k, local: udps[k]!.local })
  }
  while (answered < N) await new Promise<void>(resolve => { wake = resolve })
  const c = process.cpuUsage(c0)
  const wall = performance.now() - w0
  if (heapSession !== undefined) {
    const { profile: hp } = await heapSession.post('HeapProfiler.stopSampling')
    writeFileSync(heapFile!, JSON.stringify(hp))
  }
  if (session !== undefined) {
    const { profile: p } = await session.post('Profiler.stop')
    writeFileSync(profile!, JSON.stringify(p))
  }
  const us = (c.user + c.system) / N
  lat.sort((a, b) => a - b)
  const q = (x: number): string => (lat[Math.min(lat.length - 1, Math.floor(x * lat.length))] ?? NaN).toFixed(0)
  console.log(`${label}: ${N} REGISTERs (window ${WINDOW}) in ${wall.toFixed(0)} ms wall (${Math.round(N / (wall / 1000))}/s), ${failed} not 200${failed > 0 ? ` (${[...codes].map(([k, v]) => `${k}×${v}`).join(' ')})` : ''}, ` +
    `${us.toFixed(0)} CPU-µs per REGISTER, 3 nodes summed (user ${(c.user / N).toFixed(0)}, sys ${(c.system / N).toFixed(0)}); latency p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms`)
  return us
}

await round('warm-up (new AORs)', 'w', 1)
// --rounds k: k pairs of rounds (new AORs, then their refresh); the summary gives the medians
const roundsIdx = process.argv.indexOf('--rounds')
const ROUNDS = roundsIdx > 0 ? Number(process.argv[roundsIdx + 1]) : 1
const perRound: Record<string, number[]> = { 'new AORs': [], refresh: [] }
for (let k = 0; k < ROUNDS; k++) {
  perRound['new AORs']!.push(await round('new AORs', k === 0 ? 'n' : `n${k}-`, 1))
  perRound.refresh!.push(await round('refresh', k === 0 ? 'n' : `n${k}-`, 2))
}
if (ROUNDS > 1) {
  const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }
  console.log(`median of ${ROUNDS} rounds: new AORs ${median(perRound['new AORs']!).toFixed(0)} CPU-µs per REGISTER (min ${Math.min(...perRound['new AORs']!).toFixed(0)}), refresh ${median(perRound.refresh!).toFixed(0)} (min ${Math.min(...perRound.refresh!).toFixed(0)})`)
}
const st = daemons.map(d => ({ r: d.node.replication?.stats, s: d.node.overlay?.store.getStats() as unknown as Record<string, number>, n: d.overlay }))
console.log(`per node: ${JSON.stringify(st.map(({ r, s, n }) => ({ published: r?.published, localReads: r?.localReads, blindWrites: r?.blindWrites, localVerifies: r?.localVerifies, repairs: r?.repairs, publishErrors: r?.publishErrors, putMessages: s.putMessages, fastMerges: s.fastMerges, merges: r?.merges, getMessages: s.getMessages, dbBatches: s.dbBatches, overlayRequestsSent: n?.stats().requestsSent })))}`)
await Promise.all(daemons.map(async d => { await d.stop() }))
for (const d of dirs) rmSync(d, { recursive: true, force: true })
process.exit(0)
