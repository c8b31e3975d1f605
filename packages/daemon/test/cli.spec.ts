// End-to-end: spawn the real `sipring` CLI (dist when fresh, else source through tsx), register over UDP (by hand and
// with sipsak when installed), SIGTERM, restart on the same data dir and check the binding is back.
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { createServer } from 'node:net'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fetchJson } from '../src/main.js'

import { CLI, root } from './cli-command.js'

interface Running {
  child: ChildProcess
  stdout: string[]
  stderr: string[]
  listening: { sip: string[], admin: string }
  exit: Promise<number | null>
}

/** Run the CLI to completion (async, so several can run at once). */
function run (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...CLI, ...args], { cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''; let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.stdout!.on('data', (c: Buffer) => { stdout += c.toString() })
    child.stderr!.on('data', (c: Buffer) => { stderr += c.toString() })
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }) })
  })
}

async function start (args: string[]): Promise<Running> {
  const child = spawn(process.execPath, [...CLI, 'start', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  const stdout: string[] = []
  const stderr: string[] = []
  const exit = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  const listening = await new Promise<Running['listening']>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no listening line; stderr: ${stderr.join('')}`)) }, 20_000)
    let buf = ''
    child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString()
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1)
        stdout.push(line)
        try {
          const rec = JSON.parse(line)
          if (Array.isArray(rec.sip) && typeof rec.admin === 'string') { clearTimeout(timer); resolve({ sip: rec.sip, admin: rec.admin }) }
        } catch {}
      }
    })
    child.stderr!.on('data', (c: Buffer) => stderr.push(c.toString()))
    void exit.then(code => { clearTimeout(timer); reject(new Error(`exited ${code} before listening: ${stderr.join('')}`)) })
  })
  return { child, stdout, stderr, listening, exit }
}

function portOf (listener: string): number { return Number(listener.slice(listener.lastIndexOf(':') + 1)) }
function adminOf (r: Running): { host: string, port: number } { const [h, p] = r.listening.admin.split(':'); return { host: h!, port: Number(p) } }

async function udpRegister (port: number, user: string, contactPort: number): Promise<string> {
  const sock = createSocket('udp4')
  await new Promise<void>(resolve => sock.bind(0, '127.0.0.1', resolve))
  try {
    const answer = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer to REGISTER')), 5000)
      sock.on('message', m => { clearTimeout(timer); resolve(m.toString()) })
    })
    const callId = `e2e-${user}-${process.pid}`
    sock.send(Buffer.from([
      `REGISTER sip:127.0.0.1:${port} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${sock.address().port};branch=z9hG4bK${callId};rport`,
      'Max-Forwards: 70',
      `From: <sip:${user}@127.0.0.1>;tag=t1`,
      `To: <sip:${user}@127.0.0.1>`,
      `Call-ID: ${callId}`,
      'CSeq: 1 REGISTER',
      `Contact: <sip:${user}@127.0.0.1:${contactPort}>`,
      'Expires: 300',
      'Content-Length: 0', '', ''
    ].join('\r\n')), port, '127.0.0.1')
    return await answer
  } finally {
    sock.close()
  }
}

async function bindings (r: Running, aor: string): Promise<any[]> {
  const a = adminOf(r)
  const res = await fetchJson(a.host, a.port, '/bindings?aor=' + encodeURIComponent(aor))
  return (res.body as { bindings: any[] }).bindings
}

/** A free port below 10000 (sipsak mangles 5-digit ports in its Request-URI). */
async function freeLowPort (): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = 6000 + Math.floor(Math.random() * 3999)
    const ok = await new Promise<boolean>(resolve => {
      const s = createSocket('udp4')
      s.once('error', () => resolve(false))
      s.bind(p, '127.0.0.1', () => { s.close(); resolve(true) })
    })
    const tcpOk = ok && await new Promise<boolean>(resolve => {
      const srv = createServer()
      srv.once('error', () => resolve(false))
      srv.listen(p, '127.0.0.1', () => srv.close(() => resolve(true)))
    })
    if (tcpOk) return p
  }
  throw new Error('no free port')
}

t.test('a restart keeps registrations (hand-rolled UDP REGISTER, SIGTERM, restart)', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'sipring-e2e-'))
  const args = ['--data', dir, '--sip', 'udp:127.0.0.1:0', '--sip', 'tcp:127.0.0.1:0', '--admin', '127.0.0.1:0']
  const a = await start(args)
  t.equal(a.listening.sip.length, 2)
  const port = portOf(a.listening.sip[0]!)
  const answer = await udpRegister(port, 'alice', 7777)
  t.match(answer, /^SIP\/2\.0 200 OK\r\n/)
  t.equal((await bindings(a, 'sip:alice@127.0.0.1')).length, 1)

  const [status, json] = await Promise.all([run(['status', '--admin', a.listening.admin]), run(['status', '--json'], { SIPRING_ADMIN: a.listening.admin })])
  t.equal(status.status, 0, status.stderr)
  t.match(status.stdout, /^sipring node \S+ \(version \d+\.\d+\.\d+\)/)
  t.match(status.stdout, /AORs\s+1/)
  t.match(status.stdout, /contacts\s+1/)
  t.match(JSON.parse(json.stdout), { counts: { aors: 1, contacts: 1 } })

  a.child.kill('SIGTERM')
  t.equal(await a.exit, 0, 'clean exit on SIGTERM')
  t.ok(a.stdout.some(l => /flushing registrations/.test(l)))

  const b = await start(args)
  t.teardown(async () => { b.child.kill('SIGTERM'); await b.exit })
  const back = await bindings(b, 'sip:alice@127.0.0.1')
  t.equal(back.length, 1, 'the binding is back after the restart')
  t.equal(back[0].contact, 'sip:alice@127.0.0.1:7777')
  b.child.kill('SIGINT')
  t.equal(await b.exit, 0, 'clean exit on SIGINT')
})

t.test('sipsak registers and the binding survives a restart', async t => {
  if (spawnSync('sipsak', ['-V']).error !== undefined) { t.skip('sipsak is not installed (run scripts/setup.mjs --tools)'); return }
  const dir = mkdtempSync(join(tmpdir(), 'sipring-sipsak-'))
  const port = await freeLowPort()
  const args = ['--data', dir, '--sip', `udp:127.0.0.1:${port}`, '--admin', '127.0.0.1:0']
  const a = await start(args)
  const r = spawnSync('sipsak', ['-U', '-C', `sip:bob@127.0.0.1:${port + 1}`, '-s', `sip:bob@127.0.0.1:${port}`, '-x', '300', '-i'], { encoding: 'utf8', timeout: 15_000 })
  t.equal(r.status, 0, `sipsak: ${r.stdout}${r.stderr}`)
  t.equal((await bindings(a, `sip:bob@127.0.0.1:${port}`)).length, 1)
  a.child.kill('SIGTERM')
  t.equal(await a.exit, 0)
  const b = await start(args)
  t.teardown(async () => { b.child.kill('SIGTERM'); await b.exit })
  const back = await bindings(b, `sip:bob@127.0.0.1:${port}`)
  t.equal(back.length, 1)
  t.equal(back[0].contact, `sip:bob@127.0.0.1:${port + 1}`)
})

t.test('configuration errors exit 2 with a precise message', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'sipring-cfg-'))
  const file = join(dir, 'sipring.yaml')
  writeFileSync(file, 'sip:\n  - udp:127.0.0.1:5070\n  - { protocol: tcp, host: 0.0.0.0, port: 70000 }\n')
  const [bad, fromFile, unknown, env] = await Promise.all([
    run(['start', '--sip', 'udp:0.0.0.0:70000']),
    run(['start', '--config', file]),
    run(['start', '--bogus']),
    run(['start'], { SIPRING_LOG_LEVEL: 'chatty' })
  ])
  t.equal(bad.status, 2)
  t.equal(bad.stderr.trim(), 'sipring: invalid config: sip[0].port: expected 1–65535 (0 = any free port), got 70000 (from --sip)')
  t.equal(fromFile.status, 2)
  t.equal(fromFile.stderr.trim(), `sipring: invalid config: sip[1].port: expected 1–65535 (0 = any free port), got 70000 (from config file ${file})`)
  t.equal(unknown.status, 2)
  t.match(unknown.stderr, /unknown option --bogus/)
  t.equal(env.status, 2)
  t.match(env.stderr, /logLevel: expected one of .* got "chatty" \(from SIPRING_LOG_LEVEL\)/)
})

t.test('a SIP port in use exits 1 with a clear message', async t => {
  const busy = createSocket('udp4')
  await new Promise<void>(resolve => busy.bind(0, '127.0.0.1', resolve))
  t.teardown(() => busy.close())
  const port = busy.address().port
  const r = await run(['start', '--data', mkdtempSync(join(tmpdir(), 'sipring-busy-')), '--sip', `udp:127.0.0.1:${port}`, '--admin', 'off'])
  t.equal(r.status, 1)
  t.match(r.stderr, `sipring: cannot listen on udp:127.0.0.1:${port}: address already in use`)
})

t.test('status with no node running, --version, help', async t => {
  const [down, v, h, sh, nope] = await Promise.all([
    run(['status', '--admin', '127.0.0.1:1']), run(['--version']), run(['help']), run(['start', '--help']), run(['frobnicate'])
  ])
  t.equal(down.status, 1)
  t.match(down.stderr, /cannot reach the admin API at http:\/\/127\.0\.0\.1:1\/status \(ECONNREFUSED\)/)
  t.equal(v.status, 0)
  t.match(v.stdout.trim(), /^\d+\.\d+\.\d+$/)
  t.equal(h.status, 0)
  t.match(h.stdout, /sipring start/)
  t.match(h.stdout, /sipring status/)
  t.equal(sh.status, 0)
  t.match(sh.stdout, /--sip PROTO:HOST:PORT/)
  t.match(sh.stdout, /SIPRING_DATA/)
  t.equal(nope.status, 2)
  t.match(nope.stderr, /unknown command "frobnicate"/)
})
