// (a) SIPp registers 1,000 users over UDP (and 200 over TCP) against the server, 0 failures; then
// the location service (GET /bindings on sipring) holds each spot-checked user's contact.
import t from 'tap'
import { requireTools, target } from '../lib/interop.js'
import { freePort } from '../lib/ports.js'
import { tempDir } from '../lib/proc.js'
import { DOMAIN, startServer, type TestServer } from '../lib/servers.js'
import { describe, runSipp, scenario, userNames, writeUsersCsv } from '../lib/sipp.js'
import { join } from 'node:path'

if (requireTools(t, ['sipp'])) {
  const kind = target(t)
  let server: TestServer | undefined
  const tmp = tempDir('register')
  t.teardown(async () => { await server?.stop(); tmp.cleanup() })

  let port = 0
  t.before(async () => {
    port = await freePort(['127.0.0.1', '::1'])
    server = await startServer(kind, {
      listen: [{ proto: 'udp', host: '127.0.0.1', port }, { proto: 'tcp', host: '127.0.0.1', port }, { proto: 'udp', host: '::1', port }]
    })
  })

  const cases = [
    { transport: 'u1' as const, proto: 'udp', users: 1000, rate: 500, host: '127.0.0.1' },
    { transport: 't1' as const, proto: 'tcp', users: 200, rate: 200, host: '127.0.0.1' },
    // one TCP connection per REGISTER (opened, used once, closed by SIPp at the end of each call)
    { transport: 'tn' as const, proto: 'tcp', users: 200, rate: 100, host: '127.0.0.1' },
    { transport: 'u1' as const, proto: 'udp', users: 200, rate: 200, host: '::1' }
  ]
  let total = 0 // users registered so far on this server (the subtests run in order)
  for (const c of cases) {
    const v6 = c.host.includes(':')
    const tag = `${c.transport}${v6 ? 'v6' : ''}`
    t.test(`REGISTER ${c.users} users over ${c.proto.toUpperCase()}${v6 ? ' IPv6' : ''} (sipp -t ${c.transport})`, async t => {
      const users = userNames(`reg${tag}`, c.users)
      const csv = join(tmp.dir, `${tag}.csv`)
      writeUsersCsv(csv, users)
      const localPort = await freePort([c.host])
      const hostRe = v6 ? '\\[::1\\]' : '127\\.0\\.0\\.1'
      const r = await runSipp({
        scenario: scenario('register'),
        remote: v6 ? `[::1]:${port}` : c.proto === 'udp' ? server!.udp! : server!.tcp!,
        transport: c.transport,
        localIp: c.host,
        localPort,
        calls: c.users,
        rate: c.rate,
        inf: csv,
        keys: { domain: DOMAIN, contact: v6 ? `[::1]:${localPort}` : `127.0.0.1:${localPort}`, expires: '600' },
        recvTimeoutMs: 5000,
        timeoutMs: 60000
      })
      t.comment(describe(r))
      t.equal(r.timedOut, false, 'SIPp finished in time')
      t.equal(r.failed, 0, `no failed REGISTER (${describe(r)})\n${r.errors.slice(0, 1500)}`)
      t.equal(r.successful, c.users, `${c.users} REGISTERs answered 200`)
      t.equal(r.exitCode, 0, 'SIPp exit code 0 (all calls successful)')

      const spot = [0, 1, Math.floor(c.users / 2), c.users - 2, c.users - 1].map(i => users[i]!)
      for (const u of spot) {
        const contacts = await server!.bindings(u)
        t.equal(contacts.length, 1, `${u} has one binding: ${JSON.stringify(contacts)}`)
        t.match(contacts[0] ?? '', new RegExp(`^sip:${u}@${hostRe}:${localPort}`), `${u} is bound to the SIPp contact`)
        t.match(contacts[0] ?? '', new RegExp(`transport=${c.proto}`, 'i'), 'with its transport')
      }
      const none = await server!.bindings(`${tag}nobody`)
      t.same(none, [], 'a user that never registered has no binding')
      total += c.users
      if (server!.admin) {
        const st = await server!.admin('/status')
        t.equal(st.status, 200, 'GET /status answers 200')
        t.match(st.body, { counts: { aors: total, contacts: total } }, `GET /status counts ${total} AORs and contacts`)
      }
    })
  }
}
