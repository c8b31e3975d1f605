// `sipring start --role core` in process: two core daemons replicating accounts over libp2p (TCP on
// loopback) and a super node daemon whose account reads are forwarded to them (its writes are refused:
// only core nodes write accounts).
import t from 'tap'
import { MemoryLogger } from '@sipring/testkit'
import { defaultConfig } from '../src/config.js'
import { startCoreDaemon, type CoreDaemon } from '../src/core.js'
import { startDaemon, type Daemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { formatStatus } from '../src/main.js'
import { box, config, http } from './core-helpers.js'

async function waitFor (what: string, cond: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

t.test('two core daemons replicate accounts; a super node reads them, its writes are refused', async t => {
  const [ba, bb, bs] = [await box(), await box(), await box()]
  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const running: Array<CoreDaemon | Daemon> = []
  t.teardown(async () => { for (const d of running.reverse()) await d.stop().catch(() => {}) })
  const a = await startCoreDaemon(config(ba, { role: 'core', coreNodes: [bb.addr] }), deps); running.push(a)
  const b = await startCoreDaemon(config(bb, { role: 'core', coreNodes: [ba.addr] }), deps); running.push(b)
  t.equal(a.node.nodeId, ba.id, 'the core node uses the data dir\'s identity')
  t.same(a.node.accounts.peers, [bb.id])
  t.equal(a.node.accounts.tombstoneTtl, 604_800_000, 'tombstone grace period from the config (accountsTombstoneTtl, 7 days)')

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
  const refused = await http(s, bs.dir, 'POST', '/users', { user: 'bob', password: 'bob-pw' })
  t.equal(refused.status, 403, 'a write through the super node is refused by the core nodes')
  t.match(refused.body.error, /core nodes only/, 'with the reason')
  t.equal((await http(s, bs.dir, 'DELETE', '/users/alice')).status, 403, 'a delete too')
  t.equal((await http(a, ba.dir, 'GET', '/users/alice')).status, 200, 'alice still on core a')
  t.equal(a.node.accounts.stats.refusedWrites + b.node.accounts.stats.refusedWrites, 2, 'counted on the core nodes')
  t.equal((await http(b, bb.dir, 'POST', '/users', { user: 'bob', password: 'bob-pw' })).status, 201, 'written on core b\'s admin API')
  await waitFor('bob on both core nodes', async () =>
    (await http(a, ba.dir, 'GET', '/users/bob')).status === 200 && (await http(b, bb.dir, 'GET', '/users/bob')).status === 200)
  t.pass('bob on both core nodes')
  const list = await http(s, bs.dir, 'GET', '/users')
  t.same(list.body.users.map((u: { user: string }) => u.user).sort(), ['alice', 'bob'], 'the super node lists the core nodes\' users')
  t.equal((await http(a, ba.dir, 'POST', '/users', { user: 'bob', password: 'bob-pw' })).status, 409, 'replicated: a duplicate on core a is refused')
  const sst = await http(s, bs.dir, 'GET', '/status')
  t.same(sst.body.coreNodes.cores.map((c: { id: string }) => c.id), [ba.id, bb.id])
  // both core nodes stopped: reads of unseen users → 503
  await a.stop(); await b.stop()
  const gone = await http(s, bs.dir, 'GET', '/users/nobody')
  t.equal(gone.status, 503, 'no core node: 503')
  t.match(gone.body.error, /no core node answered/)
})
