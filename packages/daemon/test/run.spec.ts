import t from 'tap'
import { registerMessage } from './sip-helpers.js'
import { createSocket, type Socket } from 'node:dgram'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SipTransport } from '@sipring/interface'
import { MemoryLogger } from '@sipring/testkit'
import { createTransport } from '@sipring/sip'
import { defaultConfig, type SipringConfig } from '../src/config.js'
import { DaemonError, startDaemon, type DaemonDeps } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { fetchJson } from '../src/main.js'

function config (dataDir: string, over: Partial<SipringConfig> = {}): SipringConfig {
  return { ...defaultConfig(), dataDir, sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, ...over }
}
function deps (logger = new MemoryLogger(), extra: Partial<DaemonDeps> = {}): DaemonDeps {
  return { clock: systemClock, rng: cryptoRng, logger, ...extra }
}
const tmp = (): string => mkdtempSync(join(tmpdir(), 'sipring-run-'))

/** Send one REGISTER over UDP and resolve with the status line of the answer. */
async function register (port: number, user: string): Promise<string> {
  const sock: Socket = createSocket('udp4')
  await new Promise<void>(resolve => sock.bind(0, '127.0.0.1', resolve))
  try {
    const answer = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no answer to REGISTER')), 3000)
      sock.on('message', m => { clearTimeout(timer); resolve(m.toString().split('\r\n')[0]!) })
    })
    sock.send(registerMessage(user, '127.0.0.1', port, sock.address().port, `c${Date.now()}${user}`), port, '127.0.0.1')
    return await answer
  } finally {
    sock.close()
  }
}

t.test('register, stop, start again on the same data dir: the binding is back', async t => {
  const dir = tmp()
  const d1 = await startDaemon(config(dir), deps())
  const port = d1.listeners()[0]!.port
  t.ok(port > 0)
  t.equal(await register(port, 'alice'), 'SIP/2.0 200 OK')
  const admin = d1.adminAddress()!
  const b1 = await fetchJson(admin.host, admin.port, '/bindings?aor=' + encodeURIComponent('sip:alice@127.0.0.1'))
  t.equal(b1.status, 200)
  t.equal((b1.body as any).bindings.length, 1)
  const nodeId = d1.node.nodeId
  await d1.stop()
  await d1.stop()

  const d2 = await startDaemon(config(dir), deps())
  t.teardown(() => d2.stop())
  t.equal(d2.node.nodeId, nodeId, 'node id kept in the data dir')
  const a2 = d2.adminAddress()!
  const b2 = await fetchJson(a2.host, a2.port, '/bindings?aor=' + encodeURIComponent('sip:alice@127.0.0.1'))
  t.equal((b2.body as any).bindings.length, 1, 'binding restored from level')
  t.match((b2.body as any).bindings[0], { contact: /^sip:alice@127\.0\.0\.1:\d+$/, expiresIn: Number })
  const s = await fetchJson(a2.host, a2.port, '/status')
  t.match(s.body, { nodeId, version: String, counts: { aors: 1, contacts: 1 }, listeners: [/^udp:127\.0\.0\.1:\d+$/] })
  const bad = await fetchJson(a2.host, a2.port, '/bindings?aor=' + encodeURIComponent('not a uri'))
  t.equal(bad.status, 400)
  t.match((bad.body as any).error, /aor is not a valid SIP URI/)
})

t.test('an IPv6 listener the host cannot open is skipped with a warning', async t => {
  const logger = new MemoryLogger()
  const noV6 = (l: { protocol: string, host: string, port: number }): SipTransport => {
    if (l.host === '::') {
      const tr = createTransport({ protocol: 'udp', address: '127.0.0.1', port: 0, clock: systemClock, logger })
      return Object.assign(Object.create(tr), { start: async () => { throw Object.assign(new Error('address family not supported'), { code: 'EAFNOSUPPORT' }) } })
    }
    return createTransport({ protocol: 'udp', address: l.host, port: l.port, clock: systemClock, logger })
  }
  const d = await startDaemon(config(tmp(), { sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }, { protocol: 'udp', host: '::', port: 0 }] }),
    deps(logger, { createTransport: noV6 as any }))
  t.teardown(() => d.stop())
  t.equal(d.listeners().length, 1, 'continues with IPv4 only')
  t.ok(logger.records.some(r => r.level === 'warn' && /IPv6 listener .* unavailable/.test(String(r.msg))))
})

t.test('a SIP port in use is a clear error (exit code 1)', async t => {
  const busy = createSocket('udp4')
  await new Promise<void>(resolve => busy.bind(0, '127.0.0.1', resolve))
  t.teardown(() => busy.close())
  const port = busy.address().port
  const dir = tmp()
  const err = await startDaemon(config(dir, { sip: [{ protocol: 'tcp', host: '127.0.0.1', port: 0 }, { protocol: 'udp', host: '127.0.0.1', port }] }), deps())
    .then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof DaemonError)
  t.equal((err as DaemonError).exitCode, 1)
  t.equal((err as Error).message, `cannot listen on udp:127.0.0.1:${port}: address already in use (is another SIP server running? choose another port with --sip)`)
  // everything opened before the failure was released: the same data dir can be used at once
  const d = await startDaemon(config(dir), deps())
  await d.stop()
})

t.test('the admin port in use and a data dir held by another process are clear errors', async t => {
  const dir = tmp()
  const d = await startDaemon(config(dir), deps())
  t.teardown(() => d.stop())
  const other = await startDaemon(config(dir), deps()).then(() => undefined, (e: unknown) => e)
  t.ok(other instanceof DaemonError)
  t.match((other as Error).message, /data dir .* is in use by another sipring process/)
  const admin = d.adminAddress()!
  const clash = await startDaemon(config(tmp(), { admin }), deps()).then(() => undefined, (e: unknown) => e)
  t.ok(clash instanceof DaemonError)
  t.equal((clash as Error).message, `cannot listen on admin 127.0.0.1:${admin.port}: address already in use (choose another with --admin)`)
})
