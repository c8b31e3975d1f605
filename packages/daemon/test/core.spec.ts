// `sipring start --role core` in process: two core daemons replicating accounts over libp2p (TCP on
// loopback) and a super node daemon whose account admin is forwarded to them.
import t from 'tap'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryLogger } from '@sipring/testkit'
import { peerIdOfKeyFile } from '@sipring/overlay-libp2p'
import { defaultConfig, type SipringConfig } from '../src/config.js'
import { startCoreDaemon, type CoreDaemon } from '../src/core.js'
import { startDaemon, type Daemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { formatStatus } from '../src/main.js'

const freePort = async (): Promise<number> => await new Promise((resolve, reject) => {
  const s = createServer()
  s.once('error', reject)
  s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => { resolve(p) }) })
})

interface Box { dir: string, port: number, id: string, addr: string }
async function box (): Promise<Box> {
  const dir = mkdtempSync(join(tmpdir(), 'sipring-core-'))
  const port = await freePort()
  const { peerId } = await peerIdOfKeyFile(join(dir, 'peer.key'))
  return { dir, port, id: peerId, addr: `/ip4/127.0.0.1/tcp/${port}/p2p/${peerId}` }
}

function config (b: Box, over: Partial<SipringConfig>): SipringConfig {
  return {
    ...defaultConfig(),
    dataDir: b.dir,
    sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }],
    admin: { host: '127.0.0.1', port: 0 },
    domains: ['example.org'],
    overlayListen: [`/ip4/127.0.0.1/tcp/${b.port}`],
    advertise: '127.0.0.1',
    ...over
  }
}

async function http (d: { adminAddress: () => { host: string, port: number } | undefined }, dir: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> {
  const a = d.adminAddress()!
  const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim()
  const res = await fetch(`http://127.0.0.1:${a.port}${path}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(10_000)
  })
  return { status: res.status, body: await res.json() }
}

async function waitFor (what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

t.test('two core daemons replicate accounts; a super node forwards account admin to them', async t => {
  const [ba, bb, bs] = [await box(), await box(), await box()]
  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const running: Array<CoreDaemon | Daemon> = []
  t.teardown(async () => { for (const d of running.reverse()) await d.stop().catch(() => {}) })
  const a = await startCoreDaemon(config(ba, { role: 'core', coreNodes: [bb.addr] }), deps); running.push(a)
  const b = await startCoreDaemon(config(bb, { role: 'core', coreNodes: [ba.addr] }), deps); running.push(b)
  t.equal(a.node.nodeId, ba.id, 'the core node uses the data dir\'s identity')
  t.same(a.node.accounts.peers, [bb.id])

  t.equal((await http(a, ba.dir, 'POST', '/users', { user: 'alice', password: 'alice-pw' })).status, 201)
  await waitFor('alice on core b', async () => (await http(b, bb.dir, 'GET', '/users/alice')).status === 200)
  t.pass('alice replicated to core b')
  const st = await http(a, ba.dir, 'GET', '/status')
  t.equal(st.body.role, 'core')
  t.equal(st.body.core.users, 1)
  t.match(formatStatus(st.body), /^sipring core node 12D3KooW/)
  t.match(formatStatus(st.body), /1 user\(s\)/)
  t.equal((await http(a, ba.dir, 'GET', '/bindings?aor=sip:alice@example.org')).status, 404, 'no registrations on a core node')

  const s = await startDaemon(config(bs, { coreNodes: [ba.addr, bb.addr], auth: { ...defaultConfig().auth, enabled: true } }), deps); running.push(s)
  t.equal((await http(s, bs.dir, 'POST', '/users', { user: 'bob', password: 'bob-pw' })).status, 201, 'written through the super node')
  await waitFor('bob on both core nodes', async () =>
    (await http(a, ba.dir, 'GET', '/users/bob')).status === 200 && (await http(b, bb.dir, 'GET', '/users/bob')).status === 200)
  t.pass('bob on both core nodes')
  const list = await http(s, bs.dir, 'GET', '/users')
  t.same(list.body.users.map((u: { user: string }) => u.user).sort(), ['alice', 'bob'], 'the super node lists the core nodes\' users')
  t.equal((await http(s, bs.dir, 'POST', '/users', { user: 'bob', password: 'bob-pw' })).status, 409)
  const sst = await http(s, bs.dir, 'GET', '/status')
  t.same(sst.body.coreNodes.cores.map((c: { id: string }) => c.id), [ba.id, bb.id])
  // both core nodes stopped: reads of unseen users → 503
  await a.stop(); await b.stop()
  const gone = await http(s, bs.dir, 'GET', '/users/nobody')
  t.equal(gone.status, 503, 'no core node: 503')
  t.match(gone.body.error, /no core node answered/)
})
