import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock } from '@sipring/testkit'
import { AccountError, AccountReplica, LevelAccountStore, type AccountDb, ACCOUNTS_PROTO, AccountRpcError } from '@sipring/auth'
import { RpcHub, drive, settle } from './rpc-hub.js'

const REALM = 'example.org'

function cluster (ids: string[], opts: { antiEntropyInterval?: number } = {}): { clock: SimClock, hub: RpcHub, dbs: Map<string, AccountDb>, make: (id: string) => AccountReplica } {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const hub = new RpcHub(clock)
  const dbs = new Map<string, AccountDb>()
  for (const id of ids) dbs.set(id, new MemoryLevel<string, any>() as unknown as AccountDb)
  const make = (id: string): AccountReplica => new AccountReplica({
    db: dbs.get(id)!, clock, rpc: hub.rpc(id), peers: ids.filter(x => x !== id), antiEntropyInterval: opts.antiEntropyInterval ?? 0, requestTimeout: 500
  })
  return { clock, hub, dbs, make }
}

async function snapshot (r: AccountReplica): Promise<string> {
  const users = (await r.listUsers()).map(u => `${u.user}@${u.realm}:${u.ha1.md5}:${String(u.enabled)}`)
  const groups = (await r.listGroups()).map(g => `${g.aor}:${g.members.join(',')}:${g.policy}`)
  return JSON.stringify({ users, groups })
}

t.test('a write on one core node is pushed to the others, with the same version', async tt => {
  const { clock, make } = cluster(['a', 'b', 'c'])
  const [a, b, c] = ['a', 'b', 'c'].map(make) as [AccountReplica, AccountReplica, AccountReplica]
  for (const r of [a, b, c]) await r.start()
  await drive(clock, 50)
  await settle(clock, a.addUser({ user: 'alice', realm: REALM, password: 'secret1' }))
  await settle(clock, b.addGroup({ aor: 'sip:sales@example.org', members: ['sip:alice@example.org'], policy: 'hunt' }))
  await drive(clock, 50)
  for (const r of [b, c]) {
    const u = await r.getUser('alice', REALM)
    tt.equal(u?.ha1.md5, (await a.getUser('alice', REALM))?.ha1.md5, `${r.self} has alice's HA1`)
    tt.same(r.versionOf('user!example.org!alice'), a.versionOf('user!example.org!alice'), `${r.self}: same version`)
  }
  tt.equal((await c.getGroup('sip:sales@example.org'))?.policy, 'hunt', 'the group reached c')
  tt.equal(await snapshot(a), await snapshot(c))
  tt.equal(a.status().users, 1)
  tt.equal(a.status().groups, 1)
  for (const r of [a, b, c]) await r.stop()
})

t.test('partition: both sides write, anti-entropy converges them, last writer wins', async tt => {
  const { clock, hub, make } = cluster(['a', 'b'])
  const a = make('a'); const b = make('b')
  await a.start(); await b.start()
  await settle(clock, a.addUser({ user: 'zed', realm: REALM, password: 'zed-old' }))
  await drive(clock, 50)
  hub.cut('a', 'b')
  await settle(clock, a.addUser({ user: 'only-a', realm: REALM, password: 'pw-a1' }))
  await settle(clock, b.addUser({ user: 'only-b', realm: REALM, password: 'pw-b1' }))
  await settle(clock, a.updateUser('zed', REALM, { password: 'zed-from-a' }))
  await drive(clock, 1000)
  await settle(clock, b.updateUser('zed', REALM, { password: 'zed-from-b' })) // later: wins
  await drive(clock, 1000)
  tt.equal(await b.getUser('only-a', REALM), undefined, 'cut: b did not see a\'s write')
  hub.cut('a', 'b', false)
  const r = await settle(clock, a.syncWith('b'))
  tt.ok(r.pulled >= 2 && r.pushed >= 1, `one round pulled ${r.pulled}, pushed ${r.pushed}`)
  await drive(clock, 50)
  tt.equal(await snapshot(a), await snapshot(b), 'converged')
  tt.ok(await a.getUser('only-b', REALM), 'a has only-b')
  tt.ok(await b.getUser('only-a', REALM), 'b has only-a')
  const zed = await a.getUser('zed', REALM)
  tt.equal(zed?.ha1.md5, (await b.getUser('zed', REALM))?.ha1.md5)
  tt.equal(zed?.ha1.md5, (await import('@sipring/auth')).computeHa1('zed', REALM, 'zed-from-b').md5, 'the later write won')
  const again = await settle(clock, a.syncWith('b'))
  tt.same(again, { pulled: 0, pushed: 0 }, 'nothing left to repair')
  await a.stop(); await b.stop()
})

t.test('tombstones win over older records and are not resurrected', async tt => {
  const { clock, hub, make } = cluster(['a', 'b'])
  const a = make('a'); const b = make('b')
  await a.start(); await b.start()
  await settle(clock, a.addUser({ user: 'bob', realm: REALM, password: 'bob-pw' }))
  await settle(clock, a.addGroup({ aor: 'sip:team@example.org', members: ['sip:bob@example.org'] }))
  await drive(clock, 50)
  tt.ok(await b.getUser('bob', REALM), 'b has bob')
  hub.cut('a', 'b')
  await settle(clock, b.updateUser('bob', REALM, { enabled: false })) // older than the delete below
  await drive(clock, 1000)
  tt.equal(await settle(clock, a.deleteUser('bob', REALM)), true)
  tt.equal(await settle(clock, a.deleteGroup('sip:team@example.org')), true)
  hub.cut('a', 'b', false)
  await settle(clock, b.syncWith('a')) // b pushes its (older) update and pulls the tombstone
  await drive(clock, 50)
  tt.equal(await a.getUser('bob', REALM), undefined, 'a: still deleted')
  tt.equal(await b.getUser('bob', REALM), undefined, 'b: deleted')
  tt.equal(await b.getGroup('sip:team@example.org'), undefined, 'b: group deleted')
  tt.equal(b.versionOf('user!example.org!bob')?.deleted, true, 'b keeps the tombstone')
  tt.equal(a.status().tombstones, 2)
  // a re-add after the delete is newer than the tombstone
  await settle(clock, a.addUser({ user: 'bob', realm: REALM, password: 'bob-again' }))
  await drive(clock, 50)
  tt.ok(await b.getUser('bob', REALM), 're-added bob replicated')
  await a.stop(); await b.stop()
})

t.test('a core node that was down catches up at start (pull) and pushes what it missed', async tt => {
  const { clock, hub, make, dbs } = cluster(['a', 'b'])
  const a = make('a'); let b = make('b')
  await a.start(); await b.start()
  await settle(clock, a.addUser({ user: 'u1', realm: REALM, password: 'pw-u1' }))
  await drive(clock, 50)
  await b.stop(); hub.crash('b')
  await settle(clock, a.addUser({ user: 'u2', realm: REALM, password: 'pw-u2' }))
  await settle(clock, a.deleteUser('u1', REALM))
  tt.ok(a.stats.pushFailures >= 2, 'pushes to the dead node failed')
  // an operator edits b's db directly while it is down (sipring user add on a stopped node)
  const offline = new LevelAccountStore({ db: dbs.get('b')!, clock })
  clock.advance(5000)
  await offline.addUser({ user: 'offline', realm: REALM, password: 'pw-offline' })
  hub.revive('b')
  b = make('b')
  await b.start()
  await settle(clock, b.synced())
  await drive(clock, 50)
  tt.ok(await b.getUser('u2', REALM), 'b pulled u2')
  tt.equal(await b.getUser('u1', REALM), undefined, 'b pulled the tombstone of u1')
  tt.ok(await a.getUser('offline', REALM), 'the offline edit got a version and reached a')
  tt.equal(await snapshot(a), await snapshot(b))
  await a.stop(); await b.stop()
})

t.test('periodic anti-entropy repairs a lost push', async tt => {
  const { clock, hub, make } = cluster(['a', 'b'], { antiEntropyInterval: 10_000 })
  const a = make('a'); const b = make('b')
  await a.start(); await b.start()
  await drive(clock, 100) // the start-up rounds are over
  hub.hung.add('b')
  await settle(clock, a.addUser({ user: 'late', realm: REALM, password: 'pw-late' }))
  await drive(clock, 1000)
  hub.hung.delete('b')
  tt.equal(await b.getUser('late', REALM), undefined, 'the push was lost')
  await drive(clock, 12_000)
  tt.ok(await b.getUser('late', REALM), 'repaired by the next round')
  tt.ok(a.status().peers[0]!.reachable || b.status().peers[0]!.reachable)
  await a.stop(); await b.stop()
})

t.test('bad requests are answered with an error, never a crash', async tt => {
  const { clock, hub, make } = cluster(['a', 'b'])
  const a = make('a'); const b = make('b')
  await a.start(); await b.start()
  const x = hub.rpc('stranger')
  const bad: unknown[] = [
    null, 42, 'x', [], {}, { op: 7 }, { op: 'nope' }, { op: 'get-user', user: 1, realm: REALM },
    { op: 'write', method: 'constructor', args: [] },
    { op: 'list-users', limit: -1 }, { op: 'list-users', limit: 1001 }, { op: 'list-users', realm: 5 }, { op: 'list-users', after: 7 }, { op: 'list-groups', after: '' }
  ]
  for (const body of bad) {
    try {
      await settle(clock, x.call('a', ACCOUNTS_PROTO, body, { timeout: 500 }))
      tt.fail(`accepted ${JSON.stringify(body)}`)
    } catch (err) {
      tt.ok(err instanceof AccountRpcError && err.remote && err.code === 'EINVAL', `${JSON.stringify(body)} → EINVAL: ${(err as Error).message}`)
    }
  }
  // malformed writes: refused (EPERM) from a stranger before their arguments are looked at, EINVAL from a core node
  const badWrites = [
    { op: 'write', method: 'addUser', args: 'x' }, { op: 'write', method: 'addUser', args: [null] },
    { op: 'write', method: 'addUser', args: [{ user: 'a b', realm: REALM, password: 'xxxxx' }] }
  ]
  for (const body of badWrites) {
    await tt.rejects(settle(clock, x.call('a', ACCOUNTS_PROTO, body, { timeout: 500 })), { code: 'EPERM', remote: true }, `stranger: ${JSON.stringify(body).slice(0, 60)} → EPERM`)
    await tt.rejects(a.handle(body, 'b'), { code: 'EINVAL' }, `core node: ${JSON.stringify(body).slice(0, 60)} → EINVAL`)
  }
  // replication requests only from the core nodes
  const item = { id: 'user!example.org!evil', v: { updated: 9e12, counter: 0, origin: 'stranger' }, deleted: false, value: { user: 'evil', realm: REALM, ha1: { md5: '0'.repeat(32), sha256: '0'.repeat(64) }, enabled: true, created: 1, updated: 1 } }
  await tt.rejects(settle(clock, x.call('a', ACCOUNTS_PROTO, { op: 'push', items: [item] }, { timeout: 500 })), { code: 'EINVAL', message: /core nodes only/ })
  await tt.rejects(settle(clock, x.call('a', ACCOUNTS_PROTO, { op: 'digest', buckets: [] }, { timeout: 500 })), { code: 'EINVAL' })
  tt.equal(await a.getUser('evil', REALM), undefined, 'nothing injected')
  // malformed items from a real peer
  const peer = hub.rpc('b')
  const broken = [
    { ...item, id: 'user!EXAMPLE.org!evil' },
    { ...item, id: 'user!example.org!other' },
    { ...item, value: { ...item.value, ha1: { md5: 'zz', sha256: '0'.repeat(64) } } },
    { ...item, v: { updated: -1, counter: 0, origin: 'b' } },
    { ...item, deleted: 'yes' },
    { id: 'group!sip:g@example.org', v: item.v, deleted: false, value: { aor: 'sip:g@example.org', members: [], policy: 'ring-all', created: 1, updated: 1 } },
    { id: 'other!x', v: item.v, deleted: true }
  ]
  for (const it of broken) {
    await tt.rejects(a.handle({ op: 'push', items: [it] }, 'b'), AccountError, `rejected ${JSON.stringify(it).slice(0, 60)}`)
  }
  await tt.rejects(a.handle({ op: 'push', items: Array.from({ length: 501 }, () => item) }, 'b'), { code: 'EINVAL', message: /too many items/ })
  await tt.rejects(a.handle({ op: 'digest', buckets: Array(64).fill(1) }, 'b'), { code: 'EINVAL', message: /bad bucket digest/ })
  await tt.rejects(a.handle({ op: 'pull', ids: [{}] }, 'b'), { code: 'EINVAL' })
  tt.equal(await a.getUser('evil', REALM), undefined)
  tt.ok(a.stats.rejected >= bad.length, `rejected counter ${a.stats.rejected}`)
  // the node still works
  await settle(clock, peer.call('a', ACCOUNTS_PROTO, { op: 'push', items: [item] }, { timeout: 500 }))
  tt.ok(await a.getUser('evil', REALM), 'a well-formed push from a core node is applied')
  await a.stop(); await b.stop()
})
