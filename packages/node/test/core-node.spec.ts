/**
 * Core nodes on a SimOverlayHub: 2 core nodes holding the accounts, 2 authenticating super nodes
 * reading them over the overlay. A user added on core 1 authenticates at super node 2; with core 1
 * crashed, registrations keep authenticating through core 2; core 1 restarts and catches up on a user
 * added meanwhile. Core nodes never join the location ring.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader, type SipRequest, type SipResponse } from '@sipring/sip'
import { AccountRpcError, RemoteAccountStore, type AccountDb } from '@sipring/auth'
import type { PeerId } from '@sipring/overlay'
import { createCoreNode, createSuperNode, overlayAccountRpc, type CoreNode, type SuperNode } from '../src/index.js'
import { cluster, converged, hasher, nodeAddress, phone, request, responses, run, send, settle, until, type Cluster, type Phone } from './overlay-helpers.js'

const SECRET = new Uint8Array(32).fill(9)
const CORES = ['core1', 'core2']

function startCore (c: Cluster, id: string, db: AccountDb): CoreNode {
  return createCoreNode({ clock: c.clock, rng: c.rng.fork(id), logger: c.logger.child({ n: id }), network: c.hub.connect(id), db }, { peers: CORES.filter(x => x !== id), antiEntropyInterval: 10_000, requestTimeout: 500 })
}

async function addSuper (c: Cluster, id: PeerId, seeds: PeerId[] = []): Promise<SuperNode> {
  const address = nodeAddress(id)
  const node = createSuperNode({
    clock: c.clock,
    rng: c.rng.fork(id),
    logger: c.logger.child({ n: id }),
    transports: [c.net.transport({ protocol: 'udp', address, port: 5060 })],
    overlay: { network: c.hub.connect(id), hasher }
  }, {
    domains: ['example.org'],
    auth: { enabled: true, secret: SECRET, credentialTtlMs: 5000 },
    coreNodes: CORES,
    coreAccounts: { timeout: 400, ttl: 5000 },
    overlay: { seeds, verifyDelay: 500, node: { vnodes: 64, membership: { protocolPeriod: 500, pingTimeout: 100, suspicionMult: 3, syncInterval: 5000 }, store: { antiEntropyInterval: 5000, requestTimeout: 300 } } }
  })
  await settle(c, node.start())
  c.nodes.set(id, node)
  return node
}

function answer (req: SipRequest, ch: SipResponse, user: string, password: string): SipRequest {
  const p = parseAuthHeader(ch.getAll('www-authenticate')[0]!).params
  const r = req.clone()
  r.set('via', r.get('via')!.replace(/branch=([^;]+)/, '$&a'))
  r.set('cseq', r.get('cseq')!.replace(/^\d+/, n => String(Number(n) + 1)))
  const alg = p.get('algorithm')!
  const response = digestResponse({ algorithm: alg, ha1: ha1(alg, user, 'example.org', password), nonce: p.get('nonce')!, nc: '00000001', cnonce: 'beef', qop: 'auth', method: r.method, uri: r.uri })
  r.set('authorization', formatAuthHeader({ scheme: 'Digest', params: new Map([
    ['username', user], ['realm', 'example.org'], ['nonce', p.get('nonce')!], ['uri', r.uri], ['response', response], ['algorithm', alg], ['cnonce', 'beef'], ['qop', 'auth'], ['nc', '00000001']
  ]) }))
  return r
}

let seq = 0
/** REGISTER with digest (401 → answer); the final status. */
async function register (c: Cluster, p: Phone, user: string, password: string): Promise<number> {
  const base = responses(p, 'REGISTER').filter(r => r.status >= 200).length
  const reg = request(p, 'REGISTER', 'sip:example.org', `sip:${user}@example.org`, [['contact', `<${p.contact}>`], ['expires', '600']], `reg-${user}-${++seq}@test`)
  await send(p, reg)
  if (await until(c, () => responses(p, 'REGISTER').filter(r => r.status >= 200).length > base, 5000, 5) < 0) return 0
  const ch = responses(p, 'REGISTER').filter(r => r.status >= 200)[base]!
  if (ch.status !== 401) return ch.status
  await send(p, answer(reg, ch, user, password))
  if (await until(c, () => responses(p, 'REGISTER').filter(r => r.status >= 200).length > base + 1, 5000, 5) < 0) return 0
  return responses(p, 'REGISTER').filter(r => r.status >= 200)[base + 1]!.status
}

t.test('2 core nodes + 2 super nodes: accounts from the core nodes, failover, catch-up', async t => {
  const c = cluster(21)
  const dbs = new Map(CORES.map(id => [id, new MemoryLevel<string, any>() as unknown as AccountDb]))
  let core1 = startCore(c, 'core1', dbs.get('core1')!)
  const core2 = startCore(c, 'core2', dbs.get('core2')!)
  await settle(c, core1.start()); await settle(c, core2.start())
  const s1 = await addSuper(c, 's1')
  const s2 = await addSuper(c, 's2', ['s1'])
  t.teardown(async () => {
    for (const n of c.nodes.values()) await settle(c, n.stop({ leave: false }))
    await settle(c, core1.stop()); await settle(c, core2.stop())
  })
  t.not(await until(c, () => converged(c), 30_000), -1, 'super nodes converged')
  t.same(s1.overlay!.membership.view().sort(), ['s1', 's2'], 'core nodes are not members of the location ring')

  // a user added on core 1 authenticates at super node 2
  await settle(c, core1.accounts.addUser({ user: 'alice', realm: 'example.org', password: 'alice-pw' }))
  await run(c, 200)
  t.ok(await settle(c, core2.accounts.getUser('alice', 'example.org')), 'replicated to core 2')
  const alice = await phone(c, 'alice', '10.9.0.1', 's2', 'udp')
  t.equal(await register(c, alice, 'alice', 'alice-pw'), 200, 'alice registers at s2 with the password set on core 1')
  t.not(await register(c, alice, 'alice', 'wrong-pw'), 200, 'a wrong password is refused')

  // core 1 crashes: registrations keep authenticating (through core 2 once the caches expire)
  c.hub.crash('core1')
  await run(c, 6000) // past every TTL
  const bob = await phone(c, 'bob', '10.9.0.2', 's1', 'udp')
  await settle(c, core2.accounts.addUser({ user: 'bob', realm: 'example.org', password: 'bob-pw' }))
  t.equal(await register(c, bob, 'bob', 'bob-pw'), 200, 'bob (added on core 2 while core 1 is down) registers at s1')
  t.equal(await register(c, alice, 'alice', 'alice-pw'), 200, 'alice still registers at s2')
  await settle(c, core2.accounts.updateUser('alice', 'example.org', { password: 'alice-pw2' }))
  await run(c, 100)
  t.equal(await register(c, alice, 'alice', 'alice-pw2'), 200, 'a password change on core 2 applies at once (invalidation pushed)')

  // core 1 restarts on its db and catches up with what was added meanwhile
  c.hub.connect('core1')
  core1 = startCore(c, 'core1', dbs.get('core1')!)
  await settle(c, core1.start())
  await settle(c, core1.accounts.synced())
  t.ok(await settle(c, core1.accounts.getUser('bob', 'example.org')), 'core 1 caught up on bob')
  t.equal((await settle(c, core1.accounts.getUser('alice', 'example.org')))?.ha1.md5, ha1('MD5', 'alice', 'example.org', 'alice-pw2'), 'and on alice\'s new password')
  t.equal(core1.status().accounts.users, 2)
  t.ok(core1.status().accounts.stats.pulled >= 2)

  // now core 2 dies: core 1 serves
  c.hub.crash('core2')
  await run(c, 6000)
  const carol = await phone(c, 'carol', '10.9.0.3', 's2', 'udp')
  await settle(c, core1.accounts.addUser({ user: 'carol', realm: 'example.org', password: 'carol-pw' }))
  t.equal(await register(c, carol, 'carol', 'carol-pw'), 200, 'carol (added on core 1 while core 2 is down) registers at s2')

  // every core node down: users seen before keep registering (stale cache), a user never seen gets 503
  await settle(c, core1.accounts.addUser({ user: 'dave', realm: 'example.org', password: 'dave-pw' }))
  c.hub.crash('core1')
  await run(c, 6000)
  t.equal(await register(c, carol, 'carol', 'carol-pw'), 200, 'carol still registers with no core node up')
  const dave = await phone(c, 'dave', '10.9.0.4', 's2', 'udp')
  const failuresBefore = s2.status().auth!.failures
  t.equal(await register(c, dave, 'dave', 'dave-pw'), 503, 'dave (never read by s2) → 503, accounts unreachable')
  t.match(responses(dave, 'REGISTER').at(-1)!.get('retry-after'), /^\d+$/, 'with Retry-After')
  t.equal(s2.status().auth!.failures, failuresBefore, 'not counted as an authentication failure')
})

t.test('the overlay rpc: bad bodies answered with an error, non-core peers get ERR_UNSUPPORTED', async t => {
  const c = cluster(22)
  const core = startCore(c, 'core1', new MemoryLevel<string, any>() as unknown as AccountDb)
  await settle(c, core.start())
  const rpc = overlayAccountRpc(c.hub.connect('x'))
  await t.rejects(settle(c, rpc.call('core1', 'sipring/accounts/1', { op: 'bogus' }, { timeout: 500 })), { code: 'EINVAL', remote: true })
  await t.rejects(settle(c, rpc.call('core1', 'sipring/accounts/1', { op: 'push', items: [] }, { timeout: 500 })), { code: 'EINVAL', message: /core nodes only/ })
  const other = overlayAccountRpc(c.hub.connect('y'))
  try {
    await settle(c, other.call('x', 'sipring/accounts/1', { op: 'get-user', user: 'a', realm: 'example.org' }, { timeout: 500 }))
    t.fail('answered')
  } catch (err) {
    t.ok(err instanceof AccountRpcError && !err.remote, 'a peer without the handler is a transport failure (the next core is tried)')
  }
  t.ok(await settle(c, rpc.call('core1', 'sipring/accounts/1', { op: 'list-users' }, { timeout: 500 })), 'still serving')
  t.match(await settle(c, c.hub.connect('x').send('core1', { type: 'swim.join', self: { id: 'x', incarnation: 0, status: 'alive' } })), { type: 'error', code: 'ERR_CORE_NODE', message: /is a core node/ }, 'a core node refuses to join the ring, with a reason')
  // a remote store whose first core is not a core node fails over to the real one
  const remote = new RemoteAccountStore({ rpc: overlayAccountRpc(c.hub.connect('z')), clock: c.clock, cores: ['y', 'core1'] })
  await settle(c, core.accounts.addUser({ user: 'dan', realm: 'example.org', password: 'dan-pw' }))
  t.equal((await settle(c, remote.getUser('dan', 'example.org')))?.user, 'dan')
  await settle(c, core.stop())
})

t.test('overlay app messages: validateMessage checks proto and body', async t => {
  const { validateMessage, OverlayProtocolError } = await import('@sipring/overlay')
  t.same(validateMessage({ type: 'app', proto: 'sipring/accounts/1', body: { op: 'x', n: [1, null, 'a'] } }), { type: 'app', proto: 'sipring/accounts/1', body: { op: 'x', n: [1, null, 'a'] } })
  t.same(validateMessage({ type: 'app.ok', body: null }), { type: 'app.ok', body: null })
  const bad: unknown[] = [
    { type: 'app', proto: 'Upper', body: 1 }, { type: 'app', proto: '', body: 1 }, { type: 'app', proto: 'a'.repeat(65), body: 1 },
    { type: 'app', proto: 'a b', body: 1 }, { type: 'app', proto: 'ok' }, { type: 'app', proto: 'ok', body: undefined },
    { type: 'app', proto: 'ok', body: { f: () => 1 } }, { type: 'app', proto: 'ok', body: Number.NaN }, { type: 'app', proto: 'ok', body: new Date() },
    { type: 'app.ok' }, { type: 'app', proto: 'ok', body: JSON.parse('['.repeat(40) + ']'.repeat(40)) }
  ]
  for (const m of bad) t.throws(() => validateMessage(m), OverlayProtocolError, JSON.stringify(m)?.slice(0, 60))
  t.ok(validateMessage({ type: 'app', proto: 'a'.repeat(64), body: 'x' }), '64 characters pass')
})
