// Listing many accounts through a super node: the core node answers `list-users` in pages (cursor +
// limit, each answer far below the overlay's 1 MiB frame), so 15,000 users (≈5 MB of records) list
// completely over libp2p — through the super node's admin API page by page and with `sipring user list`.
import t from 'tap'
import { MemoryLogger } from '@sipring/testkit'
import { computeHa1, type Account } from '@sipring/auth'
import { defaultConfig } from '../src/config.js'
import { startCoreDaemon, type CoreDaemon } from '../src/core.js'
import { startDaemon, type Daemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { accountsSublevel, openDataDb } from '../src/accounts-files.js'
import { groupCommand, userCommand } from '../src/accounts-cli.js'
import { box as newBox, config, http as httpFor, type Box } from './core-helpers.js'

const USERS = 15_000
const FRAME = 1024 * 1024

const box = async (): Promise<Box> => await newBox('sipring-corelist-')
const http = async (d: Parameters<typeof httpFor>[0], dir: string, method: string, path: string, body?: unknown): ReturnType<typeof httpFor> => await httpFor(d, dir, method, path, body, 20_000)

t.test(`${USERS} users list completely through a super node (paged over the overlay)`, async t => {
  const [bc, bs] = [await box(), await box()]
  // the core node's accounts, written offline (as `sipring user add` would)
  const db = await openDataDb(bc.dir)
  const store = accountsSublevel(db)
  const now = Date.UTC(2026, 0, 1)
  let bytes = 0
  for (let i = 0; i < USERS; i += 1000) {
    const ops = []
    for (let j = i; j < Math.min(USERS, i + 1000); j++) {
      const user = `user${String(j).padStart(5, '0')}`
      const a: Account = { user, realm: 'example.org', ha1: computeHa1(user, 'example.org', `pw-${j}`), enabled: true, displayName: `User number ${j}`, created: now, updated: now }
      const v = JSON.stringify(a)
      bytes += v.length
      ops.push({ type: 'put' as const, key: `auth!user!example.org!${user}`, value: v })
    }
    await store.batch(ops)
  }
  await db.close()
  t.ok(bytes > 4 * FRAME, `the records (${(bytes / FRAME).toFixed(1)} MiB) are several overlay frames`)

  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const running: Array<CoreDaemon | Daemon> = []
  t.teardown(async () => { for (const d of running.reverse()) await d.stop().catch(() => {}) })
  const core = await startCoreDaemon(config(bc, { role: 'core' }), deps); running.push(core)
  t.equal(core.node.status().accounts.users, USERS)
  const s = await startDaemon(config(bs, { coreNodes: [bc.addr], auth: { ...defaultConfig().auth, enabled: true } }), deps); running.push(s)
  for (const g of ['sales', 'ops', 'dev']) t.equal((await http(core, bc.dir, 'POST', '/groups', { group: `${g}@example.org`, members: ['user00001@example.org'] })).status, 201)

  // the super node's admin API, page by page
  const started = Date.now()
  const seen = new Set<string>()
  let after: string | undefined
  let pages = 0
  for (;;) {
    const r = await http(s, bs.dir, 'GET', `/users${after !== undefined ? `?after=${encodeURIComponent(after)}` : ''}`)
    if (r.status !== 200) { t.fail(`GET /users page ${pages}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`); return }
    pages++
    for (const u of r.body.users as Array<{ user: string, ha1?: unknown }>) { seen.add(u.user); if (u.ha1 !== undefined) t.fail('HA1 exposed') }
    if (r.body.next === undefined) break
    after = r.body.next
    if (pages > 100) { t.fail('too many pages'); return }
  }
  t.equal(seen.size, USERS, `every user listed through the super node (${pages} pages of ≤ 1000, ${Date.now() - started} ms)`)
  t.equal(pages, Math.ceil(USERS / 1000))
  const small = await http(s, bs.dir, 'GET', '/users?limit=10&after=example.org!user00100')
  t.same(small.body.users.map((u: { user: string }) => u.user), Array.from({ length: 10 }, (_, i) => `user${String(101 + i).padStart(5, '0')}`), 'limit and cursor')
  t.equal(small.body.next, 'example.org!user00110')
  const tooBig = await http(s, bs.dir, 'GET', '/users?limit=1001')
  t.equal(tooBig.status, 400, 'explicit maximum page size')
  t.match(tooBig.body.error, /1 to 1000/)
  t.equal((await http(s, bs.dir, 'GET', '/users?after=')).status, 400, 'empty cursor refused')
  const g1 = await http(s, bs.dir, 'GET', '/groups?limit=2')
  t.equal(g1.body.groups.length, 2)
  const g2 = await http(s, bs.dir, 'GET', `/groups?limit=2&after=${encodeURIComponent(g1.body.next)}`)
  t.same([...g1.body.groups, ...g2.body.groups].map((g: { group: string }) => g.group).sort(), ['sip:dev@example.org', 'sip:ops@example.org', 'sip:sales@example.org'], 'groups paged too')
  t.equal(g2.body.next, undefined)

  // `sipring user list` against the running super node follows the pages
  const out: string[] = []; const err: string[] = []
  const io = { out: (x: string) => { out.push(x) }, err: (x: string) => { err.push(x) } }
  const admin = `127.0.0.1:${s.adminAddress()!.port}`
  t.equal(await userCommand(['list', '--data', bs.dir, '--admin', admin], {}, io), 0, err.join('\n'))
  const lines = out.join('\n').split('\n')
  t.equal(lines.length, USERS, '`sipring user list` prints every user')
  t.equal(new Set(lines.map(l => l.split('@')[0])).size, USERS)
  out.length = 0
  t.equal(await groupCommand(['list', '--data', bs.dir, '--admin', admin], {}, io), 0, err.join('\n'))
  t.equal(out.join('\n').split('\n').length, 3, '`sipring group list` lists the groups')
})
