// Tombstone collection of the core nodes' replicated accounts (AccountReplica): a tombstone is dropped
// once older than tombstoneTtl AND confirmed by every other core node; a replica cut off (for less or
// more than the grace period) or restored from an old backup never brings a deleted account back.
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock } from '@sipring/testkit'
import { AccountReplica, GC_HORIZON_KEY, type AccountDb } from '@sipring/auth'
import { RpcHub, drive, settle } from './rpc-hub.js'

const REALM = 'example.org'
const TTL = 3_600_000 // 1 h grace period
const ALICE = 'user!example.org!alice'

interface Cluster { clock: SimClock, hub: RpcHub, dbs: Map<string, AccountDb>, make: (id: string, peers?: string[], db?: AccountDb) => AccountReplica }

function cluster (ids: string[]): Cluster {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const hub = new RpcHub(clock)
  const dbs = new Map<string, AccountDb>()
  for (const id of ids) dbs.set(id, new MemoryLevel<string, any>() as unknown as AccountDb)
  const make = (id: string, peers = ids.filter(x => x !== id), db = dbs.get(id)!): AccountReplica => new AccountReplica({
    db, clock, rpc: hub.rpc(id), peers, antiEntropyInterval: 0, requestTimeout: 500, tombstoneTtl: TTL
  })
  return { clock, hub, dbs, make }
}

async function rounds (clock: SimClock, rs: AccountReplica[], n = 2): Promise<void> {
  for (let i = 0; i < n; i++) {
    for (const r of rs) await settle(clock, r.syncAll())
    await drive(clock, 10)
  }
}

async function copyDb (db: AccountDb): Promise<AccountDb> {
  const out = new MemoryLevel<string, any>() as unknown as AccountDb
  const ops: Array<{ type: 'put', key: string, value: string }> = []
  for await (const [k, v] of db.iterator({ valueEncoding: 'utf8' })) ops.push({ type: 'put', key: k as string, value: v as string })
  await out.batch(ops, { valueEncoding: 'utf8' })
  return out
}

t.test('delete → past the grace period and a sync, the tombstone is gone from every replica', async tt => {
  const { clock, make, dbs } = cluster(['a', 'b', 'c'])
  const [a, b, c] = ['a', 'b', 'c'].map(id => make(id)) as [AccountReplica, AccountReplica, AccountReplica]
  for (const r of [a, b, c]) await r.start()
  await settle(clock, a.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' }))
  await settle(clock, a.addUser({ user: 'bob', realm: REALM, password: 'bob-pw' }))
  await drive(clock, 50)
  tt.equal(await settle(clock, a.deleteUser('alice', REALM)), true)
  await drive(clock, 50)
  for (const r of [a, b, c]) tt.equal(r.versionOf(ALICE)?.deleted, true, `${r.self} holds the tombstone`)
  await rounds(clock, [a, b, c])
  for (const r of [a, b, c]) tt.equal(r.status().tombstones, 1, `${r.self}: kept within the grace period`)
  await drive(clock, TTL)
  tt.equal(a.status().tombstonesWaiting, 1, 'past the grace period, waiting for the confirmations')
  await rounds(clock, [a, b, c])
  for (const r of [a, b, c]) {
    tt.equal(r.versionOf(ALICE), undefined, `${r.self}: tombstone collected`)
    tt.equal(r.status().tombstones, 0)
    tt.equal(r.stats.tombstonesCollected, 1)
    tt.equal(await r.getUser('alice', REALM), undefined, `${r.self}: alice stays deleted`)
    tt.ok(await r.getUser('bob', REALM), `${r.self}: bob untouched`)
    tt.ok(r.collectionHorizon(), `${r.self}: collection horizon recorded`)
  }
  await rounds(clock, [a, b, c])
  for (const r of [a, b, c]) tt.equal(r.versionOf(ALICE), undefined, `${r.self}: not brought back by later rounds`)
  // persisted: a restart keeps the horizon and does not recreate the tombstone
  await a.stop()
  tt.ok(await dbs.get('a')!.get(GC_HORIZON_KEY, { valueEncoding: 'utf8' }), 'horizon stored in the db')
  const a2 = make('a')
  await a2.start()
  await settle(clock, a2.synced())
  tt.same(a2.collectionHorizon(), b.collectionHorizon(), 'horizon reloaded')
  tt.equal(a2.versionOf(ALICE), undefined)
  tt.equal(a2.status().tombstones, 0)
  for (const r of [a2, b, c]) await r.stop()
})

/** Three replicas; alice is added, then c is cut off from a and b and alice is deleted on a. */
async function aliceDeletedWhileCCutOff (): Promise<{ clock: ReturnType<typeof cluster>['clock'], hub: ReturnType<typeof cluster>['hub'], a: AccountReplica, b: AccountReplica, c: AccountReplica }> {
  const { clock, hub, make } = cluster(['a', 'b', 'c'])
  const [a, b, c] = ['a', 'b', 'c'].map(id => make(id)) as [AccountReplica, AccountReplica, AccountReplica]
  for (const r of [a, b, c]) await r.start()
  await settle(clock, a.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' }))
  await drive(clock, 50)
  hub.cut('c', 'a'); hub.cut('c', 'b')
  await settle(clock, a.deleteUser('alice', REALM))
  return { clock, hub, a, b, c }
}

t.test('a replica cut off for less than the grace period does not bring the account back', async tt => {
  const { clock, hub, a, b, c } = await aliceDeletedWhileCCutOff()
  await drive(clock, TTL / 2)
  await rounds(clock, [a, b, c])
  tt.ok(await c.getUser('alice', REALM), 'c (cut off) still has its live copy')
  hub.cut('c', 'a', false); hub.cut('c', 'b', false)
  // c syncs first: its live copy is older than the tombstone → c deletes, nobody resurrects
  await rounds(clock, [c, a, b])
  for (const r of [a, b, c]) tt.equal(await r.getUser('alice', REALM), undefined, `${r.self}: alice deleted`)
  tt.equal(c.versionOf(ALICE)?.deleted, true, 'c got the tombstone (still within the grace period)')
  await drive(clock, TTL)
  await rounds(clock, [a, b, c])
  for (const r of [a, b, c]) {
    tt.equal(r.versionOf(ALICE), undefined, `${r.self}: collected after the grace period`)
    tt.equal(await r.getUser('alice', REALM), undefined)
  }
  for (const r of [a, b, c]) await r.stop()
})

t.test('a replica cut off for longer than the grace period holds collection back, then gets the tombstone', async tt => {
  const { clock, hub, a, b, c } = await aliceDeletedWhileCCutOff()
  await settle(clock, c.addUser({ user: 'carol', realm: REALM, password: 'carol-pw' })) // written while cut off
  await drive(clock, 3 * TTL)
  await rounds(clock, [a, b, c])
  for (const r of [a, b]) {
    tt.equal(r.versionOf(ALICE)?.deleted, true, `${r.self}: tombstone kept while c has not confirmed it`)
    tt.equal(r.status().tombstonesWaiting, 1)
    tt.equal(r.status().peers.find(p => p.id === 'c')?.reachable, false, `${r.self}: c shown unreachable`)
  }
  tt.ok(await c.getUser('alice', REALM), 'c still has its live copy')
  hub.cut('c', 'a', false); hub.cut('c', 'b', false)
  await rounds(clock, [c, a, b], 3)
  for (const r of [a, b, c]) {
    tt.equal(await r.getUser('alice', REALM), undefined, `${r.self}: alice not resurrected`)
    tt.equal(r.versionOf(ALICE), undefined, `${r.self}: tombstone collected once c confirmed it`)
    tt.ok(await r.getUser('carol', REALM), `${r.self}: carol (written on c while cut off) kept`)
  }
  for (const r of [a, b, c]) await r.stop()
})

t.test('a replica restored from an old backup cannot resurrect a collected account', async tt => {
  const { clock, make, dbs } = cluster(['a', 'b', 'c'])
  const [a, b] = ['a', 'b'].map(id => make(id)) as [AccountReplica, AccountReplica]
  let c = make('c')
  for (const r of [a, b, c]) await r.start()
  await settle(clock, a.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' }))
  await drive(clock, 50)
  const backup = await copyDb(dbs.get('c')!) // c's disk with alice alive
  await settle(clock, a.deleteUser('alice', REALM))
  await drive(clock, TTL + 1000)
  await rounds(clock, [a, b, c])
  for (const r of [a, b, c]) tt.equal(r.versionOf(ALICE), undefined, `${r.self}: collected`)
  // c comes back from the backup: alice alive, an old version, no horizon
  await c.stop()
  c = make('c', ['a', 'b'], backup)
  await c.start()
  tt.ok(await c.getUser('alice', REALM), 'the restored replica has alice')
  await rounds(clock, [c, a, b], 3)
  for (const r of [a, b, c]) tt.equal(await r.getUser('alice', REALM), undefined, `${r.self}: alice not resurrected`)
  tt.ok(a.stats.resurrectionsRefused + b.stats.resurrectionsRefused >= 1, 'refused as a collected deletion')
  await drive(clock, 10)
  await rounds(clock, [a, b, c], 3)
  for (const r of [a, b, c]) {
    tt.equal(r.status().tombstones, 0, `${r.self}: the answering tombstone was collected in turn`)
    tt.equal(await r.getUser('alice', REALM), undefined)
  }
  // a genuinely new account with the same name is accepted
  await settle(clock, c.addUser({ user: 'alice', realm: REALM, password: 'new-pw' }))
  await drive(clock, 50)
  for (const r of [a, b]) tt.ok(await r.getUser('alice', REALM), `${r.self}: a new alice replicates`)
  for (const r of [a, b, c]) await r.stop()
})

t.test('a single core node collects after the grace period; tombstoneTtl is bounded', async tt => {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const hub = new RpcHub(clock)
  const db = new MemoryLevel<string, any>() as unknown as AccountDb
  const r = new AccountReplica({ db, clock, rpc: hub.rpc('solo'), peers: [], antiEntropyInterval: 60_000, tombstoneTtl: TTL })
  await r.start()
  await settle(clock, r.addGroup({ aor: 'sip:g@example.org', members: ['sip:x@example.org'] }))
  await settle(clock, r.deleteGroup('sip:g@example.org'))
  await drive(clock, TTL - 60_000)
  tt.equal(r.status().tombstones, 1, 'kept within the grace period')
  await drive(clock, 120_000)
  tt.equal(r.status().tombstones, 0, 'collected by the periodic round')
  await r.stop()
  for (const bad of [0, -1, 1.5, 366 * 86_400_000]) {
    tt.throws(() => new AccountReplica({ db, clock, rpc: hub.rpc('x'), peers: [], tombstoneTtl: bad }), TypeError, `tombstoneTtl ${bad} refused`)
  }
  const d = new AccountReplica({ db, clock, rpc: hub.rpc('y'), peers: [] })
  tt.equal(d.tombstoneTtl, 7 * 86_400_000, 'default: 7 days')
})
