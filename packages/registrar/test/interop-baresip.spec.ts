// Interop: baresip registers with RFC 5626 outbound (+sip.instance, reg-id=1) over real TCP on
// 127.0.0.1, then unregisters when it quits.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Binding, Clock, Source } from '@sipring/interface'
import { MemoryLogger } from '@sipring/testkit'
import { LocationStore } from '@sipring/location'
import { TcpTransport, parseMessage, serialize, type SipRequest, type SipResponse } from '@sipring/sip'
import { createRegistrar } from '@sipring/registrar'

const BARESIP = '/usr/bin/baresip'
const UUID = 'f81d4fae-7dec-11d0-a765-00a0c91e6bf6'

// the transport needs real time here; tests may use real timers sparingly
const realClock: Clock = {
  now: () => Date.now(),
  setTimer: (ms, fn) => { const h = setTimeout(fn, ms); return { cancel: () => clearTimeout(h) } }
}

t.test('baresip registers with outbound over TCP and unregisters on exit', { skip: existsSync(BARESIP) ? false : 'baresip not installed' }, async t => {
  const logger = new MemoryLogger()
  const location = new LocationStore({ clock: realClock, logger })
  const registrar = createRegistrar({ location, clock: realClock, logger, nodeId: 'node-a' })
  const tcp = new TcpTransport({ address: '127.0.0.1', port: 0, clock: realClock, logger })
  const responses: SipResponse[] = []
  const inserted: Binding[] = []
  const deleted: Binding[] = []
  location.on('insert', b => inserted.push(b))
  location.on('delete', b => deleted.push(b))
  tcp.on('message', (data: Buffer, source: Source) => {
    let req: SipRequest
    try { req = parseMessage(data) as SipRequest } catch { return }
    if (!req.isRequest) return
    void registrar.handle(req, source).then(res => { responses.push(res); return tcp.send(serialize(res), source) })
  })
  await tcp.start()
  await location.start()
  const dir = mkdtempSync(join(tmpdir(), 'sipring-baresip-'))
  t.teardown(async () => { await location.stop(); await tcp.stop(); rmSync(dir, { recursive: true, force: true }) })
  writeFileSync(join(dir, 'uuid'), UUID)
  writeFileSync(join(dir, 'config'), [
    'poll_method epoll', 'sip_listen 127.0.0.1:0', 'module_path /usr/lib/baresip/modules',
    'module_tmp uuid.so', 'module_app account.so', 'audio_player none', 'audio_source none', 'audio_alert none', ''
  ].join('\n'))
  writeFileSync(join(dir, 'accounts'),
    `<sip:alice@example.org;transport=tcp>;outbound1="sip:127.0.0.1:${tcp.local.port};transport=tcp";sipnat=outbound;regint=600\n`)

  const out = await new Promise<string>(resolve => {
    execFile(BARESIP, ['-f', dir, '-t', '1'], { timeout: 15_000 }, (_err, stdout, stderr) => resolve(stdout + stderr))
  })
  t.match(out, /200 OK \(\) \[1 binding\]/, 'baresip saw its registration accepted')
  t.equal(inserted.length, 1)
  const b = inserted[0]!
  t.equal(b.aor, 'sip:alice@example.org')
  t.equal(b.instance, `<urn:uuid:${UUID}>`)
  t.equal(b.regId, 1)
  t.equal(b.received?.protocol, 'tcp')
  t.ok(b.received?.connectionId, 'the flow (connection) is recorded')
  t.match(b.userAgent, /^baresip/)
  t.equal(responses[0]?.status, 200)
  t.equal(responses[0]?.get('require'), 'outbound')
  // on quit baresip sends expires=0 on the same flow
  t.equal(deleted.length, 1, 'unregistered on exit')
  t.same(location.lookup('sip:alice@example.org'), [])
})
