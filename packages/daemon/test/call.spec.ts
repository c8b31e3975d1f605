// Interop: a real call through the `sipring` CLI with SIPp on both ends. The UAS registers (by hand, from
// its own port), then SIPp's uac calls it through the node: INVITE/100/180/200/ACK/BYE/200.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { CLI, root } from './cli-command.js'

async function freeUdpPort (): Promise<number> {
  const s = createSocket('udp4')
  await new Promise<void>(resolve => s.bind(0, '127.0.0.1', resolve))
  const p = s.address().port
  await new Promise<void>(resolve => s.close(() => resolve()))
  return p
}

t.test('SIPp uac calls a registered SIPp uas through sipring', async t => {
  if (spawnSync('sipp', ['-v']).error !== undefined) { t.skip('sipp is not installed (run scripts/setup.mjs --tools)'); return }
  const dir = mkdtempSync(join(tmpdir(), 'sipring-call-'))
  const node = spawn(process.execPath, [...CLI, 'start', '--data', dir, '--sip', 'udp:127.0.0.1:0', '--admin', 'off', '--log-level', 'info'],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  const exit = new Promise<number | null>(resolve => node.on('exit', code => resolve(code)))
  t.teardown(async () => { if (node.exitCode === null) { node.kill('SIGTERM'); await exit } })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('sipring did not start')), 20_000)
    let buf = ''
    node.stdout!.on('data', (c: Buffer) => {
      buf += c.toString()
      const m = /"sip":\["udp:127\.0\.0\.1:(\d+)"\]/.exec(buf)
      if (m !== null) { clearTimeout(timer); resolve(Number(m[1])) }
    })
  })

  // bob registers from the port his UAS will listen on
  const uasPort = await freeUdpPort()
  const reg = createSocket('udp4')
  await new Promise<void>(resolve => reg.bind(uasPort, '127.0.0.1', resolve))
  const answer = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer to REGISTER')), 5000)
    reg.on('message', m => { clearTimeout(timer); resolve(m.toString().split('\r\n')[0]!) })
  })
  reg.send([
    `REGISTER sip:127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${uasPort};branch=z9hG4bKcallreg;rport`,
    'Max-Forwards: 70',
    `From: <sip:bob@127.0.0.1:${port}>;tag=r1`,
    `To: <sip:bob@127.0.0.1:${port}>`,
    'Call-ID: call-spec-reg',
    'CSeq: 1 REGISTER',
    `Contact: <sip:bob@127.0.0.1:${uasPort}>`,
    'Expires: 300',
    'Content-Length: 0', '', ''
  ].join('\r\n'), port, '127.0.0.1')
  t.equal(await answer, 'SIP/2.0 200 OK')
  await new Promise<void>(resolve => reg.close(() => resolve()))

  const uas = spawn('sipp', ['-sn', 'uas', '-i', '127.0.0.1', '-p', String(uasPort), '-m', '1', '-nostdin', '-timeout', '20s'], { stdio: 'ignore' })
  const uasExit = new Promise<number | null>(resolve => uas.on('exit', code => resolve(code)))
  t.teardown(async () => { if (uas.exitCode === null) { uas.kill('SIGTERM'); await uasExit } })
  await new Promise(resolve => setTimeout(resolve, 300))

  const uacPort = await freeUdpPort()
  const uac = spawnSync('sipp', ['-sn', 'uac', '-s', 'bob', `127.0.0.1:${port}`, '-i', '127.0.0.1', '-p', String(uacPort), '-m', '1', '-nostdin', '-timeout', '15s'],
    { encoding: 'utf8', timeout: 30_000 })
  t.equal(uac.status, 0, 'sipp uac: every call successful')
  t.match(uac.stdout, /Successful call\s+\|\s+\d+\s+\|\s+1\s/)
  t.equal(await uasExit, 0, 'sipp uas: the call completed')

  node.kill('SIGTERM')
  t.equal(await exit, 0)
})
