/**
 * Manual interop check (not a tap test): the proxy on real UDP sockets between two SIPp instances.
 * SIPp UAS listens on 127.0.0.1:5092 and is registered as sip:bob@127.0.0.1:5091 (the AOR SIPp's
 * default UAC dials); the SIPp UAC places N calls through the proxy (INVITE/180/200/ACK/BYE/200).
 * Run: cd /work/main && node --import tsx --conditions=sipring-source packages/proxy/test/interop-sipp.ts [calls]
 */
import { spawn } from 'node:child_process'
import { silentLogger } from '@sipring/interface'
import type { Clock } from '@sipring/interface'
import { LocationStore } from '@sipring/location'
import { SipStack, UdpTransport } from '@sipring/sip'
import { SeededRng } from '@sipring/testkit'
import { createProxy } from '@sipring/proxy'

const calls = Number(process.argv[2] ?? 20)
const clock: Clock = {
  now: () => Date.now(),
  setTimer (ms, fn) { const h = setTimeout(fn, ms); h.unref(); return { cancel: () => { clearTimeout(h) } } }
}
const rng = new SeededRng(7)
const udp = new UdpTransport({ address: '127.0.0.1', port: 5091, clock, logger: silentLogger })
const stack = new SipStack({ clock, rng, logger: silentLogger, transports: [udp] })
const location = new LocationStore({ clock })
const proxy = createProxy({ stack, location, clock, rng: rng.fork('p'), domains: [] })
stack.onRequest = (req, tx) => { void proxy.handleRequest(req, tx) }
stack.onAck = (ack, source) => { void proxy.handleAck(ack, source) }
stack.onStrayResponse = (res, source) => { proxy.handleStrayResponse(res, source) }
await stack.start()
await location.start()
location.applyRegister('sip:bob@127.0.0.1:5091', { contacts: [{ contact: 'sip:bob@127.0.0.1:5092', expires: 3600 }], callId: 'r', cseq: 1 })

const children: Array<ReturnType<typeof spawn>> = []
function run (args: string[]): Promise<{ code: number | null, out: string }> {
  return new Promise(resolve => {
    const p = spawn('sipp', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(p)
    let out = ''
    p.stdout.on('data', d => { out += String(d) })
    p.stderr.on('data', d => { out += String(d) })
    p.on('close', code => { resolve({ code, out }) })
  })
}

const uas = run(['-sn', 'uas', '-i', '127.0.0.1', '-p', '5092', '-m', String(calls), '-nostdin', '-timeout', '30s'])
void uas
await new Promise(resolve => setTimeout(resolve, 500))
const t0 = Date.now()
const uac = await run(['-sn', 'uac', '127.0.0.1:5091', '-s', 'bob', '-i', '127.0.0.1', '-p', '5093', '-m', String(calls), '-r', String(Number(process.argv[3] ?? 50)), '-nostdin', '-timeout', '30s', '-trace_stat', '-stf', '/tmp/sipp-uac-stats.csv'])
console.log(`sipp uac exit ${uac.code} after ${Date.now() - t0} ms (0 = every call succeeded)`)
console.log(JSON.stringify(proxy.stats()))
for (const c of children) if (c.exitCode === null) c.kill() // only the SIPp processes this script started
if (uac.code !== 0) console.log(uac.out.slice(-3000))
await stack.stop()
await location.stop()
process.exit(uac.code === 0 ? 0 : 1)
