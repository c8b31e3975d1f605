// (d) Registrations survive a restart: bob (a SIPp UAS) registers, sipring is stopped with SIGTERM
// and started again on the same data dir and ports, and a call to bob — without re-registering —
// reaches the UAS. Also: sipsak's OPTIONS ping is answered 200 after the restart.
import t from 'tap'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { requireTools, target } from '../lib/interop.js'
import { freeLowPort, freePort } from '../lib/ports.js'
import { haveTool, sleep, tempDir } from '../lib/proc.js'
import { DOMAIN, startServer, type Listener, type TestServer } from '../lib/servers.js'
import { describe, runSipp, scenario, startSippServer, writeUsersCsv } from '../lib/sipp.js'

if (requireTools(t, ['sipp'])) {
  const kind = target(t)
  if (kind !== 'sipring') {
    t.comment(`restart persistence is a sipring property (${kind} keeps usrloc in memory here)`)
    t.pass('not applicable', { skip: `restart test runs against sipring only, not ${kind}` })
  } else {
    t.test('bindings persist across SIGTERM + restart on the same data dir', async t => {
      const data = tempDir('restart-data')
      const tmp = tempDir('restart')
      let server: TestServer | undefined
      t.teardown(async () => { await server?.stop(); data.cleanup(); tmp.cleanup() })
      const port = await freeLowPort() // sipsak truncates 5-digit ports
      const adminPort = await freePort()
      const listen: Listener[] = [{ proto: 'udp', host: '127.0.0.1', port }, { proto: 'tcp', host: '127.0.0.1', port }]
      server = await startServer(kind, { listen, dataDir: data.dir, adminPort })

      const uasPort = await freePort()
      const csv = join(tmp.dir, 'bob.csv')
      writeUsersCsv(csv, ['bob'])
      // bob registers from the port the UAS then listens on (source address = Contact)
      const reg = await runSipp({
        scenario: scenario('register'), remote: server.udp!, calls: 1, inf: csv, localPort: uasPort,
        keys: { domain: DOMAIN, contact: `127.0.0.1:${uasPort}`, expires: '600' }, recvTimeoutMs: 5000, timeoutMs: 15000
      })
      const uas = await startSippServer({ scenario: scenario('uas'), transport: 'u1', localPort: uasPort, maxLifeMs: 90000, rtt: false })
      t.teardown(async () => { await uas.dispose() })
      t.equal(reg.successful, 1, `bob registered (${describe(reg)})`)
      const before = await server.bindings('bob')
      t.equal(before.length, 1, 'one binding before the restart')

      const code = await server.proc.stop(10000)
      t.equal(code, 0, 'sipring exits 0 on SIGTERM')
      server = undefined
      server = await startServer(kind, { listen, dataDir: data.dir, adminPort })
      t.same(await server.bindings('bob'), before, 'the same binding after the restart')

      if (haveTool('sipsak')) {
        const r = spawnSync('sipsak', ['-v', '-s', `sip:127.0.0.1:${port}`], { encoding: 'utf8', timeout: 10000 })
        t.equal(r.status, 0, `sipsak OPTIONS answered 200 after the restart: ${r.stdout}${r.stderr}`)
      } else {
        console.error('SKIPPED: sipsak not installed (OPTIONS ping part)')
      }

      const calls = 5
      const uac = await runSipp({
        scenario: scenario('uac'), remote: server.udp!, service: 'bob', calls, rate: 10,
        keys: { domain: DOMAIN }, recvTimeoutMs: 8000, timeoutMs: 30000
      })
      t.equal(uac.failed, 0, `no failed call after the restart (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      t.equal(uac.successful, calls, `${calls} calls reached bob without re-registering`)
      await sleep(1500)
      const u = await uas.stop()
      t.equal(u.successful, calls, `the UAS answered ${calls} calls (${describe(u)})`)
    })
  }
}
