// baresip with a password against `sipring start --auth true`: alice and bob register through the
// 401 challenge, alice's INVITE is challenged 407 and retried with credentials, bob auto-answers,
// both see the call established and closed; a baresip with a wrong password never registers.
// baresip 1.0 (libre) gives up (ENOSYS) when ANY challenge is not MD5, so the node offers MD5 only.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { requireTools, target } from '../lib/interop.js'
import { startBaresip, type Baresip } from '../lib/baresip.js'
import { freePort, freePortPair } from '../lib/ports.js'
import { sleep } from '../lib/proc.js'
import { DOMAIN, startSipring, type TestServer } from '../lib/servers.js'

if (requireTools(t, ['baresip'])) {
  const kind = target(t)
  if (kind !== 'sipring') {
    t.pass('not applicable', { skip: `runs against sipring only, not ${kind}` })
  } else {
    t.test('baresip alice calls baresip bob with digest authentication', async t => {
      const host = '127.0.0.1'
      const port = await freePort([host])
      const server: TestServer = await startSipring({ listen: [{ proto: 'udp', host, port }], extraArgs: ['--auth', 'true', '--auth-algorithms', 'MD5'] })
      const phones: Baresip[] = []
      t.teardown(async () => { for (const p of phones) await p.stop(); await server.stop() })
      const token = readFileSync(join(server.dataDir!, 'admin-token'), 'utf8').trim()
      for (const [user, password] of [['alice', 'alice-secret'], ['bob', 'bob-secret'], ['eve', 'eve-secret']]) {
        const r = await fetch(`http://127.0.0.1:${server.adminPort!}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) })
        t.equal(r.status, 201, `user ${user} created`)
      }
      const start = async (user: string, password: string): Promise<Baresip> => {
        const sipPort = await freePortPair([host])
        const p = await startBaresip({ user, password, domain: DOMAIN, proxy: `${host}:${port}`, transport: 'udp', listenHost: host, sipPort, ctrlPort: await freePort() })
        phones.push(p)
        return p
      }
      const bob = await start('bob', 'bob-secret')
      const alice = await start('alice', 'alice-secret')
      await bob.waitRegistered(8000)
      await alice.waitRegistered(8000)
      t.equal((await server.bindings('bob')).length, 1, 'bob registered with his password')
      t.equal((await server.bindings('alice')).length, 1, 'alice registered with her password')

      const dial = await alice.command('dial', `sip:bob@${DOMAIN}`)
      t.ok(dial.ok, 'alice: dial accepted')
      await alice.waitEvent('CALL_ESTABLISHED', 10000)
      await bob.waitEvent('CALL_ESTABLISHED', 5000)
      t.pass('call established through the 407 challenge')
      await sleep(300)
      await alice.command('hangup')
      await alice.waitEvent('CALL_CLOSED', 5000)
      await bob.waitEvent('CALL_CLOSED', 5000)
      t.pass('call closed on both sides (BYE in dialog, not challenged)')
      // last: eve's retries with a wrong password get 127.0.0.1 banned (every phone here shares it)
      await start('eve', 'wrong-password')
      await sleep(2000)
      t.same(await server.bindings('eve'), [], 'a wrong password never registers')
      const st = await server.admin!('/status')
      t.ok(st.body.auth.authenticated >= 3, `GET /status counts authentications: ${JSON.stringify(st.body.auth)}`)
      t.ok(st.body.auth.failures >= 1, 'and failures')
    })
  }
}
