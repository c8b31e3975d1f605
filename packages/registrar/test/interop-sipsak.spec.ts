// Interop: sipsak (a real SIP client) registers against the registrar over real UDP on 127.0.0.1.
import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import type { Clock, Source } from '@sipring/interface'
import { MemoryLogger } from '@sipring/testkit'
import { LocationStore } from '@sipring/location'
import { UdpTransport, parseMessage, serialize, type SipRequest } from '@sipring/sip'
import { createRegistrar } from '@sipring/registrar'

const SIPSAK = '/usr/bin/sipsak'

// the transport needs real time here; tests may use real timers sparingly
const realClock: Clock = {
  now: () => Date.now(),
  setTimer: (ms, fn) => { const h = setTimeout(fn, ms); return { cancel: () => clearTimeout(h) } }
}

function sipsak (args: string[]): Promise<{ code: number, out: string }> {
  return new Promise(resolve => {
    execFile(SIPSAK, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1
      resolve({ code, out: stdout + stderr })
    })
  })
}

t.test('sipsak registers, refreshes and removes a contact', { skip: existsSync(SIPSAK) ? false : 'sipsak not installed' }, async t => {
  const logger = new MemoryLogger()
  const location = new LocationStore({ clock: realClock, logger })
  const registrar = createRegistrar({ location, clock: realClock, logger, minExpires: 10 })
  const udp = new UdpTransport({ address: '127.0.0.1', port: 0, clock: realClock, logger })
  const seen: SipRequest[] = []
  udp.on('message', (data: Buffer, source: Source) => {
    let req: SipRequest
    try { req = parseMessage(data) as SipRequest } catch { return }
    if (!req.isRequest) return
    seen.push(req)
    void registrar.handle(req, source).then(res => udp.send(serialize(res), source))
  })
  await udp.start()
  await location.start()
  t.teardown(async () => { await location.stop(); await udp.stop() })
  const port = udp.local.port
  // the port goes in -r: sipsak 0.9.8.1 truncates a 5-digit port given in -s (sip:a@h:45678 → R-URI and To with :4567)
  const target = 'sip:alice@127.0.0.1'
  const base = ['-r', String(port), '-H', '127.0.0.1', '-s', target]

  let r = await sipsak(['-U', '-C', 'sip:alice@127.0.0.1:5999', '-x', '120', ...base])
  t.equal(r.code, 0, r.out)
  const aor = 'sip:alice@127.0.0.1'
  let b = location.lookup(aor)
  t.equal(b.length, 1)
  t.equal(b[0]!.contact, 'sip:alice@127.0.0.1:5999')
  t.equal(b[0]!.received?.protocol, 'udp')
  t.equal(b[0]!.received?.address, '127.0.0.1')

  // too brief → sipsak sees a non-2xx and fails
  r = await sipsak(['-U', '-C', 'sip:alice@127.0.0.1:5999', '-x', '5', ...base])
  t.not(r.code, 0)

  r = await sipsak(['-U', '-C', 'sip:alice@127.0.0.1:5999', '-x', '0', ...base])
  t.equal(r.code, 0, r.out)
  b = location.lookup(aor)
  t.same(b, [])
  t.ok(seen.length >= 3)
})
