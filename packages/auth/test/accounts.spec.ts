import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock } from '@sipring/testkit'
import { digestResponse, ha1 } from '@sipring/sip'
import { AccountError, LevelAccountStore, computeHa1, publicAccount, type AccountChange, type AccountDb } from '@sipring/auth'

function store (): { s: LevelAccountStore, db: AccountDb, clock: SimClock } {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const db = new MemoryLevel<string, any>() as unknown as AccountDb
  return { s: new LevelAccountStore({ db, clock }), db, clock }
}

async function rejects (tt: Tap.Test, p: Promise<unknown>, code: string, re: RegExp): Promise<void> {
  try {
    await p
    tt.fail(`expected ${code}`)
  } catch (err) {
    tt.ok(err instanceof AccountError, 'AccountError')
    tt.equal((err as AccountError).code, code)
    tt.match((err as Error).message, re)
  }
}

t.test('RFC 2617 / RFC 7616 vectors through the stored HA1 set', async tt => {
  // RFC 2617 §3.5 (MD5, qop=auth)
  const h = computeHa1('Mufasa', 'testrealm@host.com', 'Circle Of Life')
  tt.equal(digestResponse({ algorithm: 'MD5', ha1: h.md5, nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093', nc: '00000001', cnonce: '0a4f113b', qop: 'auth', method: 'GET', uri: '/dir/index.html' }),
    '6629fae49393a05397450978507c4ef1')
  // RFC 7616 §3.9.1 (MD5 and SHA-256)
  const k = computeHa1('Mufasa', 'http-auth@example.org', 'Circle of Life')
  const common = { nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', nc: '00000001', cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ', qop: 'auth', method: 'GET', uri: '/dir/index.html' }
  tt.equal(digestResponse({ ...common, algorithm: 'MD5', ha1: k.md5 }), '8ca523f5e9506fed4657c9700eebdbec')
  tt.equal(digestResponse({ ...common, algorithm: 'SHA-256', ha1: k.sha256 }), '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1')
  tt.equal(k.sha512_256, ha1('SHA-512-256', 'Mufasa', 'http-auth@example.org', 'Circle of Life'))
})

t.test('users: add, get, never the password, update, delete, list', async tt => {
  const { s, db, clock } = store()
  const changes: AccountChange[] = []
  s.onChange(c => changes.push(c))
  const a = await s.addUser({ user: 'alice', realm: 'Example.ORG', password: 's3cret!', maxContacts: 3 })
  tt.equal(a.realm, 'example.org')
  tt.equal(a.enabled, true)
  tt.equal(a.maxContacts, 3)
  tt.equal(a.ha1.md5, ha1('MD5', 'alice', 'example.org', 's3cret!'))
  tt.equal(a.ha1.sha256, ha1('SHA-256', 'alice', 'example.org', 's3cret!'))
  // the plain password is nowhere in the db
  for await (const [, v] of db.iterator({ valueEncoding: 'utf8' })) tt.notOk(String(v).includes('s3cret'), 'no plain password stored')
  tt.same(await s.getUser('alice', 'example.org'), a)
  tt.equal(await s.getUser('alice', 'other.org'), undefined)
  tt.equal(await s.getUser('Alice', 'example.org'), undefined, 'user names are case-sensitive')
  await rejects(tt, s.addUser({ user: 'alice', realm: 'example.org', password: 'xxxxxx' }), 'EEXIST', /already exists/)

  clock.advance(1000)
  const b = await s.updateUser('alice', 'example.org', { password: 'n3w-pass', enabled: false, maxContacts: null })
  tt.equal(b.ha1.md5, ha1('MD5', 'alice', 'example.org', 'n3w-pass'))
  tt.equal(b.enabled, false)
  tt.equal(b.maxContacts, undefined)
  tt.equal(b.updated, a.created + 1000)
  await rejects(tt, s.updateUser('bob', 'example.org', { enabled: true }), 'ENOTFOUND', /no user bob@example.org/)

  await s.addUser({ user: 'bob', realm: 'example.org', password: 'pw-bob' })
  await s.addUser({ user: 'carol', realm: 'other.org', password: 'pw-carol' })
  tt.same((await s.listUsers()).map(u => `${u.user}@${u.realm}`), ['alice@example.org', 'bob@example.org', 'carol@other.org'])
  tt.same((await s.listUsers({ realm: 'example.org' })).map(u => u.user), ['alice', 'bob'])
  tt.same((await s.listUsers({ limit: 1 })).length, 1)
  tt.equal(await s.deleteUser('bob', 'example.org'), true)
  tt.equal(await s.deleteUser('bob', 'example.org'), false)
  tt.equal(await s.getUser('bob', 'example.org'), undefined)
  tt.same(changes.map(c => c.kind === 'user' ? c.user : c.aor), ['alice', 'alice', 'bob', 'carol', 'bob'])

  const view = publicAccount(b)
  tt.notOk('ha1' in view, 'public view has no HA1')
  tt.equal(view.aor, 'sip:alice@example.org')
})

t.test('users: bad input is refused with a clear message', async tt => {
  const { s } = store()
  await rejects(tt, s.addUser({ user: '', realm: 'example.org', password: 'abcdef' }), 'EINVAL', /user name is required/)
  await rejects(tt, s.addUser({ user: 'a b', realm: 'example.org', password: 'abcdef' }), 'EINVAL', /not allowed/)
  await rejects(tt, s.addUser({ user: 'a"b', realm: 'example.org', password: 'abcdef' }), 'EINVAL', /not allowed/)
  await rejects(tt, s.addUser({ user: 'x'.repeat(65), realm: 'example.org', password: 'abcdef' }), 'EINVAL', /longer than 64/)
  tt.resolves(s.addUser({ user: 'x'.repeat(64), realm: 'example.org', password: 'abcdef' }), '64 characters pass')
  await rejects(tt, s.addUser({ user: 'a', realm: 'bad realm', password: 'abcdef' }), 'EINVAL', /not a host name/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'abc' }), 'EINVAL', /shorter than 4/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'p'.repeat(129) }), 'EINVAL', /longer than 128/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'abc\ndef' }), 'EINVAL', /control/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'abcdef', maxContacts: 0 }), 'EINVAL', /maxContacts/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'abcdef', maxContacts: 1.5 }), 'EINVAL', /maxContacts/)
  await rejects(tt, s.addUser({ user: 'a', realm: 'example.org', password: 'abcdef', enabled: 'yes' as unknown as boolean }), 'EINVAL', /enabled/)
  await rejects(tt, s.addUser(undefined as unknown as { user: string, realm: string, password: string }), 'EINVAL', /user name is required/)
})

t.test('groups: add, members, policy, delete', async tt => {
  const { s } = store()
  const g = await s.addGroup({ aor: 'sales@Example.org', members: ['sip:alice@example.org', 'bob@example.org', 'sip:alice@example.org'], policy: 'hunt' })
  tt.equal(g.aor, 'sip:sales@example.org')
  tt.same(g.members, ['sip:alice@example.org', 'sip:bob@example.org'], 'normalized, deduplicated, order kept')
  tt.equal(g.policy, 'hunt')
  tt.same(await s.getGroup('sip:sales@example.org'), g)
  await rejects(tt, s.addGroup({ aor: 'sip:sales@example.org', members: ['sip:x@example.org'] }), 'EEXIST', /already exists/)
  const g2 = await s.updateGroup('sip:sales@example.org', { add: ['sip:carol@example.org'], remove: ['sip:alice@example.org'], policy: 'ring-all' })
  tt.same(g2.members, ['sip:bob@example.org', 'sip:carol@example.org'])
  tt.equal(g2.policy, 'ring-all')
  const g3 = await s.updateGroup('sip:sales@example.org', { members: ['sip:dave@example.org'] })
  tt.same(g3.members, ['sip:dave@example.org'])
  await rejects(tt, s.updateGroup('sip:sales@example.org', { remove: ['sip:dave@example.org'] }), 'EINVAL', /at least one member/)
  await rejects(tt, s.updateGroup('sip:none@example.org', { add: ['sip:x@example.org'] }), 'ENOTFOUND', /no group/)
  await rejects(tt, s.addGroup({ aor: 'sip:g@example.org', members: [] }), 'EINVAL', /at least one member/)
  await rejects(tt, s.addGroup({ aor: 'sip:g@example.org', members: ['sip:g@example.org'] }), 'EINVAL', /its own member/)
  await rejects(tt, s.addGroup({ aor: 'sip:g@example.org', members: ['sip:a@example.org'], policy: 'random' as 'hunt' }), 'EINVAL', /policy must be one of ring-all, hunt/)
  await rejects(tt, s.addGroup({ aor: 'sip:example.org', members: ['sip:a@example.org'] }), 'EINVAL', /needs a user part/)
  await rejects(tt, s.addGroup({ aor: 'sip:g@example.org', members: ['sip:<bad'] }), 'EINVAL', /not a valid SIP URI/)
  await rejects(tt, s.addGroup({ aor: 'sip:g@example.org', members: Array.from({ length: 257 }, (_, i) => `sip:u${i}@example.org`) }), 'EINVAL', /at most 256/)
  tt.same((await s.listGroups()).map(x => x.aor), ['sip:sales@example.org'])
  tt.equal(await s.deleteGroup('sales@example.org'), true)
  tt.equal(await s.deleteGroup('sales@example.org'), false)
  tt.equal(await s.getGroup('sip:sales@example.org'), undefined)
  tt.equal(await s.getGroup('::bad::'), undefined, 'a bad AOR reads as absent')
})

t.test('concurrent updates are serialized (no lost update)', async tt => {
  const { s } = store()
  await s.addGroup({ aor: 'sip:g@example.org', members: ['sip:a@example.org'] })
  await Promise.all(Array.from({ length: 20 }, (_, i) => s.updateGroup('sip:g@example.org', { add: [`sip:m${i}@example.org`] })))
  tt.equal((await s.getGroup('sip:g@example.org'))!.members.length, 21)
})
