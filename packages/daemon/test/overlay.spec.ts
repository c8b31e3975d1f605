import t from 'tap'
import { registerMessage } from './sip-helpers.js'
import { createSocket, type Socket } from 'node:dgram'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryLogger } from '@sipring/testkit'
import { defaultConfig, loadConfig, ConfigError, type SipringConfig } from '../src/config.js'
import { startDaemon, type Daemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { fetchJson, formatLookup, formatRing, main } from '../src/main.js'

const tmp = (): string => mkdtempSync(join(tmpdir(), 'sipring-overlay-'))

function config (over: Partial<SipringConfig> = {}): SipringConfig {
  return {
    ...defaultConfig(),
    dataDir: tmp(),
    sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }, { protocol: 'tcp', host: '127.0.0.1', port: 0 }],
    admin: { host: '127.0.0.1', port: 0 },
    domains: ['example.org'],
    overlay: true,
    overlayListen: ['/ip4/127.0.0.1/tcp/0'],
    advertise: '127.0.0.1',
    ...over
  }
}

async function get (d: Daemon, path: string): Promise<any> {
  const a = d.adminAddress()!
  return await fetchJson(a.host, a.port, path)
}

async function waitFor (what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

function udpPhone (): Promise<{ sock: Socket, port: number, inbox: string[] }> {
  const sock = createSocket('udp4')
  const inbox: string[] = []
  sock.on('message', m => {
    const text = m.toString()
    inbox.push(text)
    if (text.startsWith('MESSAGE ')) {
      // answer 200 with the request's Via/From/To/Call-ID/CSeq
      const lines = text.split('\r\n')
      const keep = lines.filter(l => /^(via|from|to|call-id|cseq):/i.test(l)).map(l => /^to:/i.test(l) ? `${l};tag=ua` : l)
      const src = /^Via: SIP\/2\.0\/UDP ([^;:]+):(\d+)/im.exec(text)!
      sock.send(Buffer.from(['SIP/2.0 200 OK', ...keep, 'Content-Length: 0', '', ''].join('\r\n')), Number(src[2]), src[1])
    }
  })
  return new Promise(resolve => sock.bind(0, '127.0.0.1', () => { resolve({ sock, port: sock.address().port, inbox }) }))
}

t.test('config: --join needs /p2p/<id>, --overlay-listen a multiaddr; --join turns the overlay on', async t => {
  const id = '12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq'
  const { config: c } = loadConfig(['--join', `/ip4/192.0.2.1/tcp/7070/p2p/${id}`, '--join', `/ip6/2001:db8::1/tcp/7070/p2p/${id}`, '--replicas', '5'], {})
  t.same(c.join.length, 2)
  t.equal(c.replicas, 5)
  t.equal(c.overlay, false, 'not set explicitly…')
  const bad = (args: string[]): string[] => { try { loadConfig(args, {}); return [] } catch (err) { return (err as ConfigError).issues } }
  t.match(bad(['--join', '/ip4/192.0.2.1/tcp/7070']), [/join\[0\]: expected a multiaddr ending with \/p2p\/<peerId>/])
  t.match(bad(['--overlay-listen', '0.0.0.0:7070']), [/overlayListen\[0\]: expected a multiaddr/])
  t.match(bad(['--replicas', '0']), [/replicas: expected 1–16/])
  t.match(bad(['--overlay', 'maybe']), [/overlay: expected true or false/])
  const env = loadConfig([], { SIPRING_OVERLAY: 'on', SIPRING_OVERLAY_LISTEN: '/ip4/0.0.0.0/tcp/7071,/ip6/::/tcp/7071' }).config
  t.same(env.overlayListen, ['/ip4/0.0.0.0/tcp/7071', '/ip6/::/tcp/7071'])
  t.equal(env.overlay, true)
})

t.test('three daemons over libp2p: one ring, a registration at A is found and reached from C', async t => {
  const logger = new MemoryLogger()
  const deps = { clock: systemClock, rng: cryptoRng, logger }
  const a = await startDaemon(config(), deps)
  t.teardown(() => a.stop())
  const joinA = a.overlay!.multiaddrs().find(m => m.includes('/127.0.0.1/'))!
  t.match(joinA, /^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+$/)
  const b = await startDaemon(config({ join: [joinA] }), deps)
  t.teardown(() => b.stop())
  const c = await startDaemon(config({ join: [joinA] }), deps)
  t.teardown(() => c.stop())
  t.equal(a.node.nodeId, a.overlay!.self, 'the node id is the PeerId')

  await waitFor('every ring to have 3 alive members', async () => {
    for (const d of [a, b, c]) {
      const r = await get(d, '/ring')
      if (r.status !== 200 || r.body.members.filter((m: any) => m.status === 'alive' && m.inRing).length !== 3) return false
    }
    return true
  })
  const ring = (await get(c, '/ring')).body
  t.equal(ring.replicas, 3)
  t.equal(ring.members.length, 3)
  t.ok(ring.members.every((m: any) => m.load > 0.99 && m.load < 1.01), 'R = N = 3: everyone stores the whole key space')
  t.match(formatRing(ring), /3 member\(s\), R=3 W=2/)

  const alice = await udpPhone()
  t.teardown(() => alice.sock.close())
  const sipA = a.listeners().find(l => l.protocol === 'udp')!.port
  alice.sock.send(registerMessage('alice', 'example.org', sipA, alice.port, 'reg-alice-1'), sipA, '127.0.0.1')
  await waitFor('the REGISTER answer', async () => alice.inbox.some(m => m.startsWith('SIP/2.0 200')), 5000)

  await waitFor('C to find alice in the overlay', async () => (await get(c, '/lookup?aor=sip:alice@example.org')).body.nodes?.length === 1, 5000)
  const look = (await get(c, '/lookup?aor=' + encodeURIComponent('sip:alice@example.org'))).body
  t.equal(look.owners.length, 3)
  t.equal(look.nodes[0].node, a.node.nodeId, 'held by A, her attachment node')
  t.match(look.nodes[0].sipUri, /^sip:127\.0\.0\.1:\d+;transport=tcp$/)
  t.match(look.nodes[0].contacts[0], { contact: `sip:alice@127.0.0.1:${alice.port}`, expiresIn: Number })
  t.same(look.local, [], 'C keeps no usrloc copy')
  t.match(formatLookup(look), /attached to \w+ \(sip:127\.0\.0\.1/)

  // a MESSAGE sent to C reaches alice through A
  const sipC = c.listeners().find(l => l.protocol === 'udp')!.port
  const bob = await udpPhone()
  t.teardown(() => bob.sock.close())
  bob.sock.send(Buffer.from([
    'MESSAGE sip:alice@example.org SIP/2.0',
    `Via: SIP/2.0/UDP 127.0.0.1:${bob.port};branch=z9hG4bKmsg1;rport`,
    'Max-Forwards: 70', '<sip:bob@example.org>;tag=b1'.replace(/^/, 'From: '), 'To: <sip:alice@example.org>',
    'Call-ID: msg-1', 'CSeq: 1 MESSAGE', 'Content-Type: text/plain', 'Content-Length: 5', '', 'hello'
  ].join('\r\n')), sipC, '127.0.0.1')
  await waitFor('bob to get 200 for the MESSAGE', async () => bob.inbox.some(m => m.startsWith('SIP/2.0 200')), 8000).catch(err => {
    console.error('BOB', bob.inbox, 'ALICE', alice.inbox, logger.records.filter(r => r.level !== 'debug' && r.level !== 'trace').slice(-30))
    throw err
  })
  const got = alice.inbox.find(m => m.startsWith('MESSAGE '))!
  t.ok(got, 'alice got the MESSAGE')
  t.equal((got.match(/^Via:/gim) ?? []).length, 3, 'through two proxies (C then A)')

  // the CLI renders both routes
  const out: string[] = []
  const io = { out: (s: string) => { out.push(s) }, err: (s: string) => { out.push(s) } }
  const adminC = `127.0.0.1:${c.adminAddress()!.port}`
  t.equal(await main(['ring', '--admin', adminC], {}, io), 0)
  t.match(out.join('\n'), /overlay ring seen by/)
  t.equal(await main(['lookup', 'sip:alice@example.org', '--admin', adminC], {}, io), 0)
  t.match(out.join('\n'), new RegExp(`sip:alice@127\\.0\\.0\\.1:${alice.port}`))
  t.equal(await main(['lookup', '--admin', adminC], {}, io), 2, 'lookup without an AOR is a usage error')
  out.length = 0
  t.equal(await main(['status', '--admin', adminC], {}, io), 0)
  t.match(out.join('\n'), /overlay\s+3 member\(s\), SIP sip:127\.0\.0\.1:\d+;transport=tcp/)
  t.match(out.join('\n'), /join with\s+--join \/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
  const st = (await get(c, '/status')).body
  t.match(st.overlay, { self: c.node.nodeId, members: 3, joined: true, replication: { lookups: Number } })
})

t.test('without the overlay, /ring and /lookup answer 404 with a hint', async t => {
  const d = await startDaemon(config({ overlay: false, overlayListen: [] }), { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() })
  t.teardown(() => d.stop())
  t.equal(d.overlay, undefined)
  const r = await get(d, '/ring')
  t.equal(r.status, 404)
  t.match(r.body.error, /overlay is not enabled/)
  t.equal((await get(d, '/lookup?aor=sip:a@example.org')).status, 404)
  t.equal((await get(d, '/lookup')).status, 400)
})

t.test('a restarted node keeps its PeerId (peer.key) and republishes its registrations', async t => {
  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const cfg = config()
  const d1 = await startDaemon(cfg, deps)
  const id = d1.node.nodeId
  const ua = await udpPhone()
  t.teardown(() => ua.sock.close())
  const port = d1.listeners().find(l => l.protocol === 'udp')!.port
  ua.sock.send(registerMessage('carol', 'example.org', port, ua.port, 'reg-carol-1'), port, '127.0.0.1')
  await waitFor('the REGISTER answer', async () => ua.inbox.some(m => m.startsWith('SIP/2.0 200')), 5000)
  await waitFor('the AOR in the overlay', async () => (await get(d1, '/lookup?aor=sip:carol@example.org')).body.nodes?.length === 1, 5000)
  await d1.stop()
  const d2 = await startDaemon({ ...cfg, sip: [{ protocol: 'udp', host: '127.0.0.1', port }, { protocol: 'tcp', host: '127.0.0.1', port: 0 }] }, deps)
  t.teardown(() => d2.stop())
  t.equal(d2.node.nodeId, id, 'same PeerId from <dataDir>/peer.key')
  await waitFor('the AOR back in the overlay', async () => (await get(d2, '/lookup?aor=sip:carol@example.org')).body.nodes?.[0]?.contacts?.length === 1, 5000)
  t.pass('registration republished from the location db')
})
