/**
 * Who may write accounts, over the overlay (SimOverlayHub, the production code path of the core and
 * super nodes): a super node peer reads and authenticates only — its account writes are refused by
 * every core node with EPERM (and a log line); the other core nodes' writes are accepted.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { AccountRpcError, RemoteAccountStore, type AccountDb } from '@sipring/auth'
import { createCoreNode, createSuperNode, overlayAccountRpc, type CoreNode } from '../src/index.js'
import { cluster, hasher, nodeAddress, run, settle, type Cluster } from './overlay-helpers.js'

const CORES = ['core1', 'core2']
const PROTO = 'sipring/accounts/1'

function startCore (c: Cluster, id: string): CoreNode {
  return createCoreNode({ clock: c.clock, rng: c.rng.fork(id), logger: c.logger.child({ n: id }), network: c.hub.connect(id), db: new MemoryLevel<string, any>() as unknown as AccountDb }, { peers: CORES.filter(x => x !== id), antiEntropyInterval: 10_000, requestTimeout: 500 })
}

t.test('account writes from a super node peer are refused (EPERM, logged); core node peers may write', async t => {
  const c = cluster(31)
  const core1 = startCore(c, 'core1'); const core2 = startCore(c, 'core2')
  await settle(c, core1.start()); await settle(c, core2.start())
  const s1 = createSuperNode({
    clock: c.clock, rng: c.rng.fork('s1'), logger: c.logger.child({ n: 's1' }),
    transports: [c.net.transport({ protocol: 'udp', address: nodeAddress('s1'), port: 5060 })],
    overlay: { network: c.hub.connect('s1'), hasher }
  }, {
    domains: ['example.org'], auth: { enabled: true, secret: new Uint8Array(32).fill(3) }, coreNodes: CORES, coreAccounts: { timeout: 400 },
    overlay: { seeds: [], verifyDelay: 500, node: { vnodes: 16, membership: { protocolPeriod: 500, pingTimeout: 100, suspicionMult: 3, syncInterval: 5000 }, store: { antiEntropyInterval: 5000, requestTimeout: 300 } } }
  })
  await settle(c, s1.start())
  t.teardown(async () => { await settle(c, s1.stop({ leave: false })); await settle(c, core1.stop()); await settle(c, core2.stop()) })

  // a super node (its own overlay network, as a compromised one would) sends account writes
  const fromSuper = overlayAccountRpc(c.hub.connect('s1'))
  const writes: unknown[] = [
    { op: 'write', method: 'addUser', args: [{ user: 'mallory', realm: 'example.org', password: 'mallory-pw' }] },
    { op: 'write', method: 'updateUser', args: ['alice', 'example.org', { password: 'owned!' }] },
    { op: 'write', method: 'deleteUser', args: ['alice', 'example.org'] },
    { op: 'write', method: 'addGroup', args: [{ aor: 'sip:all@example.org', members: ['sip:mallory@example.org'] }] }
  ]
  await settle(c, core1.accounts.addUser({ user: 'alice', realm: 'example.org', password: 'alice-pw' }))
  for (const core of CORES) {
    for (const w of writes) {
      try {
        await settle(c, fromSuper.call(core, PROTO, w, { timeout: 500 }))
        t.fail(`${core} accepted ${JSON.stringify(w)}`)
      } catch (err) {
        t.ok(err instanceof AccountRpcError && err.remote && err.code === 'EPERM' && /core nodes only/.test(err.message), `${core}: ${(w as { method: string }).method} from s1 → EPERM`)
      }
    }
  }
  await settle(c, core1.accounts.synced())
  for (const core of [core1, core2]) {
    t.equal(await settle(c, core.accounts.getUser('mallory', 'example.org')), undefined, `${core.nodeId}: nothing written`)
    t.equal((await settle(c, core.accounts.getUser('alice', 'example.org')))?.enabled, true, `${core.nodeId}: alice untouched`)
    t.equal(core.accounts.stats.refusedWrites, writes.length, `${core.nodeId}: refusals counted`)
  }
  const warn = c.logger.records.find(r => r.level === 'warn' && r.msg === 'refused an account write from a peer that is not a core node')
  t.ok(warn, 'a log line on the core node')
  t.equal(warn?.peer, 's1', 'naming the peer')
  // the super node still reads and authenticates: get-user from it is answered
  const read = await settle(c, fromSuper.call('core1', PROTO, { op: 'get-user', user: 'alice', realm: 'example.org' }, { timeout: 500 })) as { account: { user: string } }
  t.equal(read.account.user, 'alice', 'reads from a super node are served')
  // the store a super node uses: the refusal is final (EPERM), not retried on the other core node
  const remote = new RemoteAccountStore({ rpc: overlayAccountRpc(c.hub.connect('s2')), clock: c.clock, cores: CORES })
  await t.rejects(settle(c, remote.addUser({ user: 'eve', realm: 'example.org', password: 'eve-pw' })), { code: 'EPERM' })
  t.equal(core1.accounts.stats.refusedWrites + core2.accounts.stats.refusedWrites, 2 * writes.length + 1, 'one core node asked')
  // another core node may write (replication and forwarded writes between core nodes)
  const fromCore2 = overlayAccountRpc(c.hub.connect('core2'))
  const res = await settle(c, fromCore2.call('core1', PROTO, { op: 'write', method: 'addUser', args: [{ user: 'bob', realm: 'example.org', password: 'bob-pw' }] }, { timeout: 500 })) as { result: { user: string } }
  t.equal(res.result.user, 'bob', 'a write from core 2 is applied on core 1')
  await run(c, 200)
  t.ok(await settle(c, core2.accounts.getUser('bob', 'example.org')), 'and replicated back to core 2')
})
