// (b) A SIPp UAS registers as bob; a SIPp UAC calls bob through the server: N INVITE–ACK–BYE calls
// complete with 0 failures on both sides, over UDP and over TCP.
import t from 'tap'
import { join } from 'node:path'
import { requireTools, target } from '../lib/interop.js'
import { freePort } from '../lib/ports.js'
import { sleep, tempDir } from '../lib/proc.js'
import { DOMAIN, startServer, type TestServer } from '../lib/servers.js'
import { describe, runSipp, scenario, startSippServer, writeUsersCsv, type SippTransport } from '../lib/sipp.js'

const CALLS = Number(process.env.SIPRING_INTEROP_CALLS ?? 200)

if (requireTools(t, ['sipp'])) {
  const kind = target(t)
  let server: TestServer | undefined
  const tmp = tempDir('calls')
  t.teardown(async () => { await server?.stop(); tmp.cleanup() })
  let port = 0
  t.before(async () => {
    port = await freePort(['127.0.0.1', '::1'])
    server = await startServer(kind, {
      listen: [{ proto: 'udp', host: '127.0.0.1', port }, { proto: 'tcp', host: '127.0.0.1', port }, { proto: 'udp', host: '::1', port }]
    })
  })

  // uacTransport: the caller's SIPp mode (un = one UDP socket per call, tn = one TCP connection per call)
  const cases: Array<{ proto: 'udp' | 'tcp', transport: SippTransport, uacTransport: SippTransport, callee: string, calls: number, host: string }> = [
    { proto: 'udp', transport: 'u1', uacTransport: 'u1', callee: 'bobudp', calls: CALLS, host: '127.0.0.1' },
    { proto: 'tcp', transport: 't1', uacTransport: 't1', callee: 'bobtcp', calls: CALLS, host: '127.0.0.1' },
    { proto: 'udp', transport: 'u1', uacTransport: 'un', callee: 'bobun', calls: Math.ceil(CALLS / 2), host: '127.0.0.1' },
    { proto: 'tcp', transport: 't1', uacTransport: 'tn', callee: 'bobtn', calls: Math.ceil(CALLS / 2), host: '127.0.0.1' },
    { proto: 'udp', transport: 'u1', uacTransport: 'u1', callee: 'bobv6', calls: Math.ceil(CALLS / 2), host: '::1' }
  ]
  for (const c of cases) {
    const CALLS = c.calls
    const v6 = c.host.includes(':')
    t.test(`${CALLS} calls to a registered SIPp UAS over ${c.proto.toUpperCase()}${v6 ? ' IPv6' : ''} (caller sipp -t ${c.uacTransport})`, async t => {
      const remote = v6 ? `[::1]:${port}` : c.proto === 'udp' ? server!.udp! : server!.tcp!
      const uasPort = await freePort([c.host])
      const hp = v6 ? `[::1]:${uasPort}` : `127.0.0.1:${uasPort}`
      const csv = join(tmp.dir, `${c.callee}.csv`)
      writeUsersCsv(csv, [c.callee])
      const register = (): ReturnType<typeof runSipp> => runSipp({
        scenario: scenario('register'), remote, transport: c.transport, calls: 1, inf: csv, localIp: c.host,
        // over UDP bob registers from the UAS's own port (source = Contact, like a real phone);
        // over TCP the registering connection is a different one from the UAS's listener
        localPort: c.proto === 'udp' ? uasPort : undefined,
        keys: { domain: DOMAIN, contact: hp, expires: '600' }, recvTimeoutMs: 5000, timeoutMs: 15000
      })
      const reg = c.proto === 'udp' ? await register() : undefined
      const uas = await startSippServer({ scenario: scenario('uas'), transport: c.transport, localIp: c.host, localPort: uasPort, maxLifeMs: 90000, rtt: false })
      t.teardown(async () => { await uas.dispose() })
      const r = reg ?? await register()
      t.equal(r.successful, 1, `${c.callee} registered (${describe(r)})`)
      t.same(await server!.bindings(c.callee), [`sip:${c.callee}@${hp};transport=${c.proto.toUpperCase()}`], 'binding points at the UAS')

      const uac = await runSipp({
        scenario: scenario('uac'), remote, transport: c.uacTransport, localIp: c.host, service: c.callee, calls: CALLS, rate: 100, limit: 100,
        // a 50 ms call: an ACK and a BYE sent back to back may be reordered by a multi-worker proxy
        keys: { domain: DOMAIN }, durationMs: 50, recvTimeoutMs: 8000, timeoutMs: 60000
      })
      t.comment(`uac: ${describe(uac)}`)
      t.equal(uac.timedOut, false, 'UAC finished in time')
      t.equal(uac.failed, 0, `no failed call at the caller (${describe(uac)})\n${uac.errors.slice(0, 2000)}`)
      t.equal(uac.successful, CALLS, `${CALLS} calls completed at the caller`)
      t.equal(uac.exitCode, 0, 'UAC exit code 0')

      await sleep(1500) // the UAS keeps each call 1 s after the BYE (timewait)
      const u = await uas.stop()
      t.comment(`uas: ${describe(u)}`)
      t.equal(u.successful, CALLS, `${CALLS} calls completed at the callee`)
      t.equal(u.failed, 0, `no failed call at the callee\n${u.errors.slice(0, 2000)}`)
    })
  }

  // RFC 3261 §10.2 allows third-party registration: the REGISTER comes from another socket than
  // the Contact it binds. Like Kamailio (nathelper only fixes Contacts that do not name the source
  // address), sipring routes the call to the Contact.
  t.test('third-party registration: the call goes to the registered Contact, not the REGISTER source', async t => {
      const uasPort = await freePort()
      const uas = await startSippServer({ scenario: scenario('uas'), transport: 'u1', localPort: uasPort, maxLifeMs: 30000, rtt: false })
      t.teardown(async () => { await uas.dispose() })
      const csv = join(tmp.dir, 'carol.csv')
      writeUsersCsv(csv, ['carol'])
      const reg = await runSipp({
        scenario: scenario('register'), remote: server!.udp!, calls: 1, inf: csv,
        keys: { domain: DOMAIN, contact: `127.0.0.1:${uasPort}`, expires: '600' }, recvTimeoutMs: 5000, timeoutMs: 15000
      })
      t.equal(reg.successful, 1, 'carol registered by a third party')
      const uac = await runSipp({
        scenario: scenario('uac'), remote: server!.udp!, service: 'carol', calls: 3, rate: 10,
        keys: { domain: DOMAIN }, recvTimeoutMs: 3000, timeoutMs: 20000
      })
      t.equal(uac.successful, 3, `3 calls reached the Contact (${describe(uac)})`)
    })

  t.test('a call to a user that never registered fails with 404/480, not a hang', async t => {
    const r = await runSipp({
      scenario: scenario('uac'), remote: server!.udp!, transport: 'u1', service: 'nobody', calls: 1,
      keys: { domain: DOMAIN }, recvTimeoutMs: 5000, timeoutMs: 15000, extraArgs: ['-trace_error_codes']
    })
    t.equal(r.successful, 0, 'the call does not succeed')
    t.equal(r.failed, 1, 'the call fails')
    t.match(r.errors, /SIP\/2\.0 (404|480)/, `answered 404 or 480:\n${r.errors.slice(0, 600)}`)
  })
}
