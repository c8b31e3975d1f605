// Interop with a real SIP tool: SIPp sends OPTIONS (UTF-8 bodies) over UDP and TCP to our transports,
// which answer 200 by echoing Via/From/To/Call-ID/CSeq. Skipped (loudly) when sipp is not installed.
import t from 'tap'
import { spawnSync, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type { SipTransport } from '@sipring/interface'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { UdpTransport, TcpTransport } from '@sipring/sip'
import { closedPort } from './transport-helpers.js'

const scenario = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'transport-sipp-options.xml')
const hasSipp = spawnSync('sipp', ['-v'], { stdio: 'ignore' }).error === undefined
if (!hasSipp) console.error('#### WARNING: sipp not installed — SIPp interop tests SKIPPED ####')

function answerAll (tr: SipTransport): { count: () => number } {
  let n = 0
  tr.on('message', (data, src) => {
    const s = data.toString('utf8')
    if (s.startsWith('SIP/2.0') || s.startsWith('ACK ')) return
    n++
    const keep = s.split('\r\n').filter(l => /^(via|from|to|call-id|cseq)\s*:/i.test(l))
      .map(l => /^to\s*:/i.test(l) && !/tag=/.test(l) ? `${l};tag=t1` : l)
    tr.send(Buffer.from(`SIP/2.0 200 OK\r\n${keep.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`), src).catch(() => {})
  })
  return { count: () => n }
}

for (const [flag, proto] of [['u1', 'udp'], ['t1', 'tcp']] as const) {
  t.test(`SIPp → ${proto.toUpperCase()} transport: 300 OPTIONS with UTF-8 bodies all answered`, { skip: !hasSipp }, async t => {
    const opts = { address: '127.0.0.1', port: 0, clock: new SimClock(), logger: new MemoryLogger() }
    const tr = proto === 'udp' ? new UdpTransport(opts) : new TcpTransport(opts)
    await tr.start()
    t.teardown(async () => { await tr.stop() })
    const answered = answerAll(tr)
    const localPort = await closedPort('127.0.0.1')
    const child = spawn('sipp', ['-sf', scenario, '-t', flag, `127.0.0.1:${tr.local.port}`, '-m', '300', '-r', '1000', '-l', '100',
      '-i', '127.0.0.1', '-p', String(localPort), '-nostdin', '-timeout', '20s', '-timeout_error'], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', d => { stderr += String(d) })
    const code = await new Promise<number | null>(resolve => { child.on('close', resolve) })
    if (code !== 0) t.comment(stderr.slice(0, 2000))
    t.equal(code, 0, 'sipp exit code 0 (all 300 calls successful)')
    if (proto === 'tcp') t.equal(answered.count(), 300, 'each OPTIONS framed and delivered exactly once')
    else t.ok(answered.count() >= 300, `every OPTIONS delivered (${answered.count()}, retransmissions allowed)`)
  })
}
