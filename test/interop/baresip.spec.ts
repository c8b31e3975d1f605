// (c) Two real softphones (baresip) register with the server as alice and bob; alice dials bob, bob
// auto-answers; the call is established on both sides and terminated cleanly — over IPv4 and IPv6
// (UDP), and over TCP.
import t from 'tap'
import { requireTools, target } from '../lib/interop.js'
import { startBaresip, type Baresip } from '../lib/baresip.js'
import { freePort, freePortPair } from '../lib/ports.js'
import { sleep } from '../lib/proc.js'
import { DOMAIN, startServer, type TestServer } from '../lib/servers.js'

if (requireTools(t, ['baresip'])) {
  const kind = target(t)
  const cases = [
    { family: 'IPv4', transport: 'udp' },
    { family: 'IPv6', transport: 'udp' },
    { family: 'IPv4', transport: 'tcp' }
  ] as const
  for (const { family, transport } of cases) {
    t.test(`baresip alice calls baresip bob over ${family} ${transport.toUpperCase()}`, async t => {
      const host = family === 'IPv4' ? '127.0.0.1' : '::1'
      const hp = (p: number): string => family === 'IPv4' ? `${host}:${p}` : `[${host}]:${p}`
      const port = await freePort([host])
      const server: TestServer = await startServer(kind, { listen: [{ proto: transport, host, port }] })
      const phones: Baresip[] = []
      t.teardown(async () => { for (const p of phones) await p.stop(); await server.stop() })

      const start = async (user: string): Promise<Baresip> => {
        const sipPort = await freePortPair([host]) // baresip takes the SIP port and the next one (TLS)
        const p = await startBaresip({ user, domain: DOMAIN, proxy: hp(port), transport, listenHost: host, sipPort, ctrlPort: await freePort() })
        phones.push(p)
        return p
      }
      const bob = await start('bob')
      const alice = await start('alice')
      await bob.waitRegistered(8000)
      await alice.waitRegistered(8000)
      const bound = await server.bindings('bob')
      t.equal(bound.length, 1, `bob has one binding: ${JSON.stringify(bound)}`)
      t.match(bound[0] ?? '', family === 'IPv4' ? /127\.0\.0\.1/ : /\[::1\]/, `bob's contact is on ${family} loopback`)
      if (transport === 'tcp') t.match(bound[0] ?? '', /transport=tcp/i, "bob's contact is a TCP one")

      const dial = await alice.command('dial', `sip:bob@${DOMAIN}`)
      t.ok(dial.ok, 'alice: dial accepted')
      const aEst = await alice.waitEvent('CALL_ESTABLISHED', 10000)
      const bEst = await bob.waitEvent('CALL_ESTABLISHED', 5000)
      t.match(aEst.peeruri ?? '', /sip:bob@/, 'alice is in a call with bob')
      t.match(bEst.peeruri ?? '', /sip:alice@/, 'bob is in a call with alice')
      t.match(bob.proc.output(), /answering call .* from sip:alice@/, 'bob auto-answered')
      await sleep(500) // let media flow a little

      const hang = await alice.command('hangup')
      t.ok(hang.ok, 'alice: hangup accepted')
      const aClosed = await alice.waitEvent('CALL_CLOSED', 5000)
      const bClosed = await bob.waitEvent('CALL_CLOSED', 5000)
      t.equal(aClosed.param, 'Connection reset by user', 'alice closed the call herself')
      // baresip reports a received BYE as "Connection reset by peer"; an error status would show up here
      t.notMatch(bClosed.param ?? '', /^[3-6]\d\d /, `bob's call ended by BYE, not by an error response (${bClosed.param})`)
      await bob.proc.waitFor(/sip:alice@\S+: session closed: Connection reset by peer|Call with sip:alice@\S+ terminated/, 3000)
      t.pass('bob logged the call as closed by the peer')
      t.notOk(alice.events.some(e => e.type === 'CALL_CLOSED' && /^[3-6]\d\d/.test(String(e.param))), 'no error response at alice')
    })
  }
}
