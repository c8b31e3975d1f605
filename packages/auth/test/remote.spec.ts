import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock } from '@sipring/testkit'
import {
  AccountError, AccountReplica, RemoteAccountStore, computeHa1, ACCOUNTS_NOTIFY_PROTO, type AccountChange, type AccountDb
} from '@sipring/auth'
import { RpcHub, drive, settle } from './rpc-hub.js'

const REALM = 'example.org'

async function setup (opts: { ttl?: number, negativeTtl?: number, maxStale?: number } = {}): Promise<{ clock: SimClock, hub: RpcHub, a: AccountReplica, b: AccountReplica, remote: RemoteAccountStore }> {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const hub = new RpcHub(clock)
  const mk = (id: string, peer: string): AccountReplica => new AccountReplica({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock, rpc: hub.rpc(id), peers: [peer], antiEntropyInterval: 0 })
  const a = mk('core-a', 'core-b'); const b = mk('core-b', 'core-a')
  await a.start(); await b.start()
  await drive(clock, 20)
  const remote = new RemoteAccountStore({ rpc: hub.rpc('super'), clock, cores: ['core-a', 'core-b'], timeout: 300, ttl: 10_000, negativeTtl: 2000, downFor: 5000, ...opts })
  return { clock, hub, a, b, remote }
}

t.test('reads go to the first core node, are cached, and fail over to the second', async tt => {
  const { clock, hub, a, b, remote } = await setup()
  await settle(clock, a.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' }))
  await drive(clock, 20)
  const calls0 = hub.calls
  const u = await settle(clock, remote.getUser('alice', REALM))
  tt.equal(u?.ha1.sha256, computeHa1('alice', REALM, 'alice-pw').sha256, 'fetched from a core node')
  tt.same(await remote.getUser('alice', REALM), u, 'second read from the cache')
  tt.equal(hub.calls - calls0, 1, 'one request for two reads')
  tt.equal(remote.stats.hits, 1)
  // concurrent misses share one request
  const calls1 = hub.calls
  const both = Promise.all([remote.getUser('nobody', REALM), remote.getUser('nobody', REALM)])
  tt.same(await settle(clock, both), [undefined, undefined], 'unknown user → undefined')
  tt.equal(hub.calls - calls1, 1, 'coalesced')
  // core a crashes: after the TTL the read goes to b
  hub.crash('core-a')
  await drive(clock, 11_000)
  const t0 = clock.now()
  tt.equal((await settle(clock, remote.getUser('alice', REALM)))?.user, 'alice', 'answered by core b')
  tt.ok(clock.now() - t0 < 100, `unreachable core skipped at once (${clock.now() - t0} ms)`)
  tt.equal(remote.stats.failovers, 1)
  tt.ok(remote.coreStatus().find(c => c.id === 'core-a')?.downUntil !== undefined, 'core a marked down')
  tt.equal(remote.coreStatus().find(c => c.id === 'core-b')?.preferred, true, 'core b preferred now')
  // a hung core (timeout) is skipped too
  hub.revive('core-a')
  hub.hung.add('core-b')
  await drive(clock, 11_000)
  const t1 = clock.now()
  tt.equal((await settle(clock, remote.getUser('alice', REALM)))?.user, 'alice', 'answered by core a after b timed out')
  tt.ok(clock.now() - t1 >= 300 && clock.now() - t1 < 400, `one timeout spent (${clock.now() - t1} ms)`)
  await a.stop(); await b.stop()
})

t.test('every core node down: stale entries are served, nothing cached → EUNAVAILABLE', async tt => {
  const { clock, hub, a, b, remote } = await setup({ maxStale: 60_000 })
  await settle(clock, a.addUser({ user: 'bob', realm: REALM, password: 'bob-pw' }))
  await drive(clock, 20)
  tt.ok(await settle(clock, remote.getUser('bob', REALM)))
  hub.crash('core-a'); hub.crash('core-b')
  await drive(clock, 30_000)
  tt.equal((await settle(clock, remote.getUser('bob', REALM)))?.user, 'bob', 'expired entry served while the core nodes are down')
  tt.equal(remote.stats.staleServed, 1)
  await tt.rejects(settle(clock, remote.getUser('carol', REALM)), { code: 'EUNAVAILABLE', message: /no core node answered/ })
  await tt.rejects(settle(clock, remote.listUsers()), AccountError)
  await drive(clock, 40_000)
  await tt.rejects(settle(clock, remote.getUser('bob', REALM)), { code: 'EUNAVAILABLE' }, 'beyond maxStale: not served')
  await a.stop(); await b.stop()
})

t.test('negative answers are cached for negativeTtl', async tt => {
  const { clock, hub, a, b, remote } = await setup()
  tt.equal(await settle(clock, remote.getUser('dave', REALM)), undefined)
  hub.hung.add('super') // the invalidation is lost
  await settle(clock, a.addUser({ user: 'dave', realm: REALM, password: 'dave-pw' }))
  tt.equal(await settle(clock, remote.getUser('dave', REALM)), undefined, 'still the cached "no"')
  await drive(clock, 2500)
  tt.ok(await settle(clock, remote.getUser('dave', REALM)), 'after negativeTtl: found')
  await a.stop(); await b.stop()
})

t.test('core nodes push invalidations: the entry is dropped and onChange fires', async tt => {
  const { clock, hub, a, b, remote } = await setup()
  await settle(clock, a.addUser({ user: 'erin', realm: REALM, password: 'erin-pw1' }))
  await drive(clock, 20)
  tt.ok(await settle(clock, remote.getUser('erin', REALM)))
  const seen: AccountChange[] = []
  remote.onChange(c => seen.push(c))
  // changed on the OTHER core node: replicated to a, which tells its reader
  await settle(clock, b.updateUser('erin', REALM, { password: 'erin-pw2' }))
  await drive(clock, 50)
  tt.same(seen, [{ kind: 'user', user: 'erin', realm: REALM }], 'told')
  tt.equal((await settle(clock, remote.getUser('erin', REALM)))?.ha1.md5, computeHa1('erin', REALM, 'erin-pw2').md5, 'fresh HA1 read at once')
  tt.ok(remote.stats.invalidations >= 1)
  // invalidations from anyone else are refused
  const x = hub.rpc('intruder')
  await tt.rejects(settle(clock, x.call('super', ACCOUNTS_NOTIFY_PROTO, { all: true }, { timeout: 500 })), { code: 'EINVAL' })
  await tt.rejects(settle(clock, hub.rpc('core-a').call('super', ACCOUNTS_NOTIFY_PROTO, 'junk', { timeout: 500 })), { code: 'EINVAL' })
  tt.equal(remote.stats.invalidationsIgnored, 2)
  await a.stop(); await b.stop()
})

t.test('writes from a super node are refused by the core nodes (EPERM, final, logged); reads still work', async tt => {
  const { clock, hub, a, b, remote } = await setup()
  const calls0 = hub.calls
  await tt.rejects(settle(clock, remote.addUser({ user: 'frank', realm: REALM, password: 'frank-pw' })), { code: 'EPERM', message: /core nodes only/ })
  tt.equal(hub.calls - calls0, 1, 'the refusal is final: the second core node is not asked')
  tt.equal(a.stats.refusedWrites, 1, 'counted on the core node')
  await drive(clock, 20)
  tt.equal(await a.getUser('frank', REALM), undefined, 'nothing written on core a')
  tt.equal(await b.getUser('frank', REALM), undefined, 'nor on core b')
  await settle(clock, a.addUser({ user: 'frank', realm: REALM, password: 'frank-pw' }))
  await tt.rejects(settle(clock, remote.updateUser('frank', REALM, { enabled: false })), { code: 'EPERM' })
  await tt.rejects(settle(clock, remote.deleteUser('frank', REALM)), { code: 'EPERM' })
  await tt.rejects(settle(clock, remote.addGroup({ aor: 'sip:ops@example.org', members: ['frank@example.org'] })), { code: 'EPERM' })
  hub.crash('core-a')
  await tt.rejects(settle(clock, remote.deleteGroup('sip:ops@example.org')), { code: 'EPERM' }, 'core b refuses too')
  tt.equal(b.stats.refusedWrites, 1)
  await settle(clock, b.addGroup({ aor: 'sip:ops@example.org', members: ['frank@example.org'] }))
  tt.same((await settle(clock, remote.listGroups())).map(x => x.aor), ['sip:ops@example.org'], 'listed through core b')
  tt.equal((await settle(clock, remote.listUsers({ realm: REALM }))).length, 1)
  tt.equal((await settle(clock, remote.getUser('frank', REALM)))?.enabled, true, 'the refused update did not apply')
  await a.stop(); await b.stop()
})

t.test('listings page: every user of a core node, each answer bounded, cursors checked', async tt => {
  const { clock, hub, a, b, remote } = await setup()
  const N = 2345
  for (let i = 0; i < N; i++) await a.addUser({ user: `u${String(i).padStart(5, '0')}`, realm: i % 2 === 0 ? REALM : 'other.org', password: 'password' })
  await a.addGroup({ aor: 'sip:g1@example.org', members: ['sip:u00000@example.org'] })
  await a.addGroup({ aor: 'sip:g2@example.org', members: ['sip:u00002@example.org'] })
  // the largest answer of one request, in JSON bytes
  let largest = 0
  const rpc = hub.rpc('probe')
  let after: string | undefined
  let pages = 0
  const seen: string[] = []
  for (;;) {
    const res = await settle(clock, rpc.call('core-a', 'sipring/accounts/1', { op: 'list-users', ...(after !== undefined ? { after } : {}), limit: 1000 })) as { users: Array<{ user: string, realm: string }>, next?: string }
    largest = Math.max(largest, JSON.stringify(res).length)
    pages++
    seen.push(...res.users.map(u => `${u.user}@${u.realm}`))
    if (res.next === undefined) break
    after = res.next
  }
  tt.equal(pages, 3, '2345 users in pages of 1000')
  tt.equal(new Set(seen).size, N, 'every user exactly once')
  tt.ok(largest < 512 * 1024 + 1024, `largest answer ${largest} bytes (≤ maxPageBytes)`)
  const all = await settle(clock, remote.listUsers())
  tt.equal(all.length, N, 'RemoteAccountStore.listUsers follows the pages')
  tt.equal((await settle(clock, remote.listUsers({ realm: 'other.org' }))).length, Math.floor(N / 2), 'with a realm')
  tt.equal((await settle(clock, remote.listUsers({ limit: 1500 }))).length, 1500, 'up to a limit')
  const p1 = await settle(clock, remote.listUsersPage({ limit: 2 }))
  tt.same(p1.items.map(u => u.user), ['u00000', 'u00002'])
  const p2 = await settle(clock, remote.listUsersPage({ limit: 2, after: p1.next! }))
  tt.same(p2.items.map(u => u.user), ['u00004', 'u00006'], 'the cursor continues where the page ended')
  const g = await settle(clock, remote.listGroupsPage({ limit: 1 }))
  tt.same(g.items.map(x => x.aor), ['sip:g1@example.org'])
  tt.same((await settle(clock, remote.listGroupsPage({ limit: 1, after: g.next! }))).items.map(x => x.aor), ['sip:g2@example.org'])
  tt.same((await settle(clock, remote.listGroups())).length, 2)
  await tt.rejects(remote.listUsersPage({ limit: 1001 }), { code: 'EINVAL', message: /1 to 1000/ }, 'explicit maximum page size')
  await tt.rejects(remote.listUsersPage({ after: 'x'.repeat(601) }), { code: 'EINVAL' })
  // a core node that answers a cursor going backwards cannot make the listing loop
  hub.rpc('loop').serve('sipring/accounts/1', () => ({ users: [], next: 'a' }))
  const looping = new RemoteAccountStore({ rpc: hub.rpc('super2'), clock, cores: ['loop'] })
  await tt.rejects(settle(clock, looping.listUsers()), { code: 'EINVAL', message: /cursor/ })
  await a.stop(); await b.stop()
})

t.test('a page is bounded in bytes: large groups come in smaller pages, one at least', async tt => {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const { LevelAccountStore } = await import('@sipring/auth')
  const s = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  const members = Array.from({ length: 256 }, (_, i) => `sip:member-${String(i).padStart(3, '0')}-${'m'.repeat(400)}@example.org`)
  for (let i = 0; i < 12; i++) await s.addGroup({ aor: `sip:big${String(i).padStart(2, '0')}@example.org`, members })
  const sizes: number[] = []
  let after: string | undefined
  let n = 0
  for (;;) {
    const p = await s.listGroupsPage({ limit: 1000, ...(after !== undefined ? { after } : {}) })
    sizes.push(JSON.stringify(p.items).length)
    n += p.items.length
    if (p.next === undefined) break
    after = p.next
  }
  tt.equal(n, 12, 'every group listed')
  tt.ok(sizes.length > 1, `${sizes.length} pages`)
  tt.ok(Math.max(...sizes) <= 512 * 1024 + 2, `largest page ${Math.max(...sizes)} bytes`)
})

t.test('answers that are not valid records are refused', async tt => {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const hub = new RpcHub(clock)
  hub.rpc('evil').serve('sipring/accounts/1', () => ({ account: { user: 'mallory', realm: REALM, ha1: { md5: 'x' }, enabled: true } }))
  const remote = new RemoteAccountStore({ rpc: hub.rpc('super'), clock, cores: ['evil'] })
  await tt.rejects(settle(clock, remote.getUser('mallory', REALM)), { code: 'EINVAL' })
  tt.equal(await remote.getUser('x'.repeat(65), REALM), undefined, 'over-long names never leave the node')
  tt.throws(() => new RemoteAccountStore({ rpc: hub.rpc('s2'), clock, cores: [] }), TypeError)
})
