/**
 * `sipring user …` and `sipring group …`: manage accounts and groups. When no daemon runs, the
 * commands open the data dir's database directly; when a daemon holds it, they go through its admin
 * API with the token from `<dataDir>/admin-token`.
 */
import { request } from 'node:http'
import { resolve } from 'node:path'
import { ACCOUNT_LIMITS, AccountError, LevelAccountStore, publicAccount, type GroupPolicy } from '@sipring/auth'
import { groupView } from './accounts-admin.js'
import { accountsSublevel, openDataDb, readAdminToken } from './accounts-files.js'
import type { Clock } from '@sipring/interface'
import { systemClock } from './system.js'

export interface AccountsIo {
  out: (s: string) => void
  err: (s: string) => void
  /** All of stdin (for --password-stdin). */
  stdin?: () => Promise<string>
}

type View = Record<string, unknown>

/** What the commands need, implemented on the db directly or over HTTP. */
interface Backend {
  call(method: string, path: string, body?: unknown): Promise<{ status: number, body: any }>
  close(): Promise<void>
}

class CliError extends Error {
  constructor (message: string, readonly code = 1) { super(message) }
}


export function userHelp (): string {
  return [
    'Usage: sipring user <command> [options]',
    '',
    '  add <user> [--password P | --password-stdin] [--realm R] [--max-contacts N] [--disabled]',
    '  passwd <user> [--password P | --password-stdin] [--realm R]',
    '  del <user> [--realm R]',
    '  enable <user> [--realm R] | disable <user> [--realm R]',
    '  show <user> [--realm R] [--json]',
    '  list [--realm R] [--json]',
    '',
    'Common options:',
    '  --data DIR          data directory (default: $SIPRING_DATA, else ./data)',
    '  --admin HOST:PORT   admin API of a running node (default: $SIPRING_ADMIN, else 127.0.0.1:5080)',
    '',
    'Only HA1 hashes (MD5, SHA-256, SHA-512-256) are stored, never the password. The realm defaults to',
    '$SIPRING_AUTH_REALM, else the first of $SIPRING_DOMAINS, else the running node\'s realm.',
    'When sipring runs, the command goes through its admin API (token in <data>/admin-token).'
  ].join('\n')
}

export function groupHelp (): string {
  return [
    'Usage: sipring group <command> [options]',
    '',
    '  add <group> --member AOR [--member AOR …] [--policy ring-all|hunt]',
    '  members <group> [--add AOR …] [--remove AOR …] [--set AOR …] [--policy P] [--json]',
    '                  (no change options: print the members)',
    '  del <group>',
    '  list [--json]',
    '',
    'A group is an AOR (sip:sales@example.org; "sales@example.org" is accepted) whose calls reach its',
    'members: all at once (ring-all, default) or one after the other (hunt).',
    'Options --data and --admin as for `sipring user`.'
  ].join('\n')
}

interface Parsed {
  positional: string[]
  opts: Map<string, string[]>
  flags: Set<string>
}

function parseArgs (args: string[], valued: string[], booleans: string[]): Parsed {
  const out: Parsed = { positional: [], opts: new Map(), flags: new Set() }
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    if (a.startsWith('--')) {
      const eq = a.indexOf('=')
      const name = eq > 0 ? a.slice(0, eq) : a
      if (booleans.includes(name)) { if (eq > 0) throw new CliError(`option ${name} takes no value`, 2); out.flags.add(name); continue }
      if (!valued.includes(name)) throw new CliError(`unknown option ${name}`, 2)
      let v: string | undefined
      if (eq > 0) v = a.slice(eq + 1)
      else { v = args[++i]; if (v === undefined) throw new CliError(`option ${name} needs a value`, 2) }
      const list = out.opts.get(name) ?? []
      list.push(v)
      out.opts.set(name, list)
      continue
    }
    out.positional.push(a)
  }
  return out
}

function one (p: Parsed, name: string): string | undefined {
  const v = p.opts.get(name)
  if (v === undefined) return undefined
  if (v.length > 1) throw new CliError(`option ${name} given more than once`, 2)
  return v[0]
}

function parseAdmin (s: string): { host: string, port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s)
  if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new CliError(`--admin: expected host:port (e.g. 127.0.0.1:5080), got ${JSON.stringify(s)}`, 2)
  return { host: m[1]!, port: Number(m[2]) }
}

function httpCall (admin: { host: string, port: number }, token: string, method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const req = request({
      host: admin.host, port: admin.port, path, method, timeout: 5000,
      headers: { accept: 'application/json', authorization: `Bearer ${token}`, ...(data !== undefined ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {}) }
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try { resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }) } catch { reject(new Error('the admin API answered something that is not JSON')) }
      })
    })
    req.on('timeout', () => { req.destroy(new Error('no answer from the admin API within 5 s')) })
    req.on('error', reject)
    req.end(data)
  })
}

/** The same REST surface as the admin API, served from the db (no daemon running). */
function directBackend (store: LevelAccountStore, defaultRealm: string | undefined, close: () => Promise<void>): Backend {
  const realmOr = (r: string | null | undefined): string => {
    const realm = r ?? defaultRealm
    if (realm === undefined) throw new CliError('no realm: give --realm (or set SIPRING_AUTH_REALM / SIPRING_DOMAINS)', 2)
    return realm
  }
  return {
    close,
    async call (method, path, body) {
      const url = new URL(path, 'http://x')
      const [, kind, rawName] = url.pathname.split('/')
      const name = rawName !== undefined ? decodeURIComponent(rawName) : undefined
      const b = (body ?? {}) as Record<string, any>
      try {
        if (kind === 'users') {
          if (name === undefined && method === 'GET') {
            const r = url.searchParams.get('realm') ?? undefined
            const page = await store.listUsersPage({ ...(r !== undefined ? { realm: r } : {}), ...pageOf(url) })
            return { status: 200, body: { users: page.items.map(publicAccount), ...(page.next !== undefined ? { next: page.next } : {}) } }
          }
          const realm = realmOr(b.realm ?? url.searchParams.get('realm'))
          if (name === undefined) return { status: 201, body: publicAccount(await store.addUser({ ...b, realm } as never)) }
          if (method === 'GET') {
            const a = await store.getUser(name, realm)
            return a === undefined ? { status: 404, body: { error: `no user ${name}@${realm}` } } : { status: 200, body: publicAccount(a) }
          }
          if (method === 'DELETE') return await store.deleteUser(name, realm) ? { status: 200, body: { deleted: true } } : { status: 404, body: { error: `no user ${name}@${realm}` } }
          return { status: 200, body: publicAccount(await store.updateUser(name, realm, b)) }
        }
        if (name === undefined && method === 'GET') {
          const page = await store.listGroupsPage(pageOf(url))
          return { status: 200, body: { groups: page.items.map(groupView), ...(page.next !== undefined ? { next: page.next } : {}) } }
        }
        if (name === undefined) return { status: 201, body: groupView(await store.addGroup({ aor: b.group, members: b.members, ...(b.policy !== undefined ? { policy: b.policy } : {}) })) }
        if (method === 'GET') {
          const g = await store.getGroup(name)
          return g === undefined ? { status: 404, body: { error: `no group ${name}` } } : { status: 200, body: groupView(g) }
        }
        if (method === 'DELETE') return await store.deleteGroup(name) ? { status: 200, body: { deleted: true } } : { status: 404, body: { error: `no group ${name}` } }
        return { status: 200, body: groupView(await store.updateGroup(name, b)) }
      } catch (err) {
        if (err instanceof AccountError) return { status: err.code === 'EEXIST' ? 409 : err.code === 'ENOTFOUND' ? 404 : 400, body: { error: err.message } }
        throw err
      }
    }
  }
}

function pageOf (url: URL): { limit?: number, after?: string } {
  const l = url.searchParams.get('limit'); const a = url.searchParams.get('after')
  return { ...(l !== null ? { limit: Number(l) } : {}), ...(a !== null ? { after: a } : {}) }
}

/** Every item of a paged listing (`GET /users` / `GET /groups`), following `next` (at most 100,000 items). */
async function listAll (b: Backend, path: string, field: 'users' | 'groups'): Promise<View[]> {
  const out: View[] = []
  let after: string | undefined
  for (;;) {
    const sep = path.includes('?') ? '&' : '?'
    const r = check(await b.call('GET', `${path}${sep}limit=${ACCOUNT_LIMITS.maxPageSize}${after !== undefined ? `&after=${encodeURIComponent(after)}` : ''}`))
    const items = r[field]
    if (!Array.isArray(items)) throw new CliError(`the admin API answered no ${field} list`)
    out.push(...(items as View[]))
    if (typeof r.next !== 'string' || r.next === after || out.length >= ACCOUNT_LIMITS.maxListLimit) return out
    after = r.next
  }
}

async function backend (p: Parsed, env: NodeJS.ProcessEnv, clock: Clock): Promise<{ b: Backend, realm: string | undefined }> {
  const dataDir = resolve(one(p, '--data') ?? env.SIPRING_DATA ?? './data')
  const realm = one(p, '--realm') ?? env.SIPRING_AUTH_REALM ?? env.SIPRING_DOMAINS?.split(',')[0]?.trim()
  try {
    const db = await openDataDb(dataDir)
    const store = new LevelAccountStore({ db: accountsSublevel(db), clock })
    return { b: directBackend(store, realm, async () => { await db.close() }), realm }
  } catch (err) {
    if ((err as { code?: string }).code !== 'LEVEL_LOCKED') throw new CliError(`cannot open the database in ${dataDir}: ${(err as Error).message}`)
  }
  const admin = parseAdmin(one(p, '--admin') ?? env.SIPRING_ADMIN ?? '127.0.0.1:5080')
  const token = readAdminToken(dataDir)
  if (token === undefined) throw new CliError(`the database in ${dataDir} is in use but ${dataDir}/admin-token is missing: is the admin API enabled?`)
  return {
    b: {
      call: async (method, path, body) => {
        try {
          return await httpCall(admin, token, method, path, body)
        } catch (err) {
          throw new CliError(`sipring runs on ${dataDir} but its admin API at ${admin.host}:${admin.port} cannot be reached (${(err as Error).message}); use --admin HOST:PORT`)
        }
      },
      close: async () => {}
    },
    realm
  }
}

async function password (p: Parsed, io: AccountsIo): Promise<string> {
  const given = one(p, '--password')
  if (given !== undefined && p.flags.has('--password-stdin')) throw new CliError('give --password or --password-stdin, not both', 2)
  if (given !== undefined) return given
  if (p.flags.has('--password-stdin')) {
    if (io.stdin === undefined) throw new CliError('stdin is not available', 2)
    return (await io.stdin()).replace(/\r?\n$/, '')
  }
  throw new CliError('a password is required: --password P or --password-stdin', 2)
}

function realmQuery (realm: string | undefined): string {
  return realm !== undefined ? `?realm=${encodeURIComponent(realm)}` : ''
}

function check (r: { status: number, body: any }, ok: number[] = [200, 201]): any {
  if (!ok.includes(r.status)) throw new CliError(typeof r.body?.error === 'string' ? r.body.error : `HTTP ${r.status}`, r.status === 400 ? 2 : 1)
  return r.body
}

function userLine (u: View): string {
  return `${String(u.user)}@${String(u.realm)}  ${u.enabled === true ? 'enabled' : 'DISABLED'}${u.maxContacts !== undefined ? `  maxContacts=${String(u.maxContacts)}` : ''}`
}

function groupLine (g: View): string {
  return `${String(g.group)}  ${String(g.policy)}  ${(g.members as string[]).join(', ')}`
}

async function run (fn: () => Promise<void>, io: AccountsIo): Promise<number> {
  try {
    await fn()
    return 0
  } catch (err) {
    if (err instanceof CliError) { io.err(`sipring: ${err.message}`); return err.code }
    io.err(`sipring: ${(err as Error).message}`)
    return 1
  }
}

/** `sipring user …`. Resolves with the exit code (0 ok, 1 failure, 2 usage). */
export async function userCommand (args: string[], env: NodeJS.ProcessEnv, io: AccountsIo, clock: Clock = systemClock): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') { io.out(userHelp()); return sub === undefined ? 2 : 0 }
  return await run(async () => {
    const p = parseArgs(rest, ['--password', '--realm', '--max-contacts', '--data', '--admin'], ['--password-stdin', '--disabled', '--json'])
    const needName = sub !== 'list'
    if (!['add', 'passwd', 'del', 'enable', 'disable', 'show', 'list'].includes(sub)) throw new CliError(`unknown user command ${JSON.stringify(sub)} (see \`sipring user help\`)`, 2)
    if (needName && p.positional.length !== 1) throw new CliError(`sipring user ${sub} needs exactly one user name`, 2)
    if (!needName && p.positional.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(p.positional[0])}`, 2)
    const name = p.positional[0] ?? ''
    const pw = sub === 'add' || sub === 'passwd' ? await password(p, io) : undefined
    const maxText = one(p, '--max-contacts')
    let maxContacts: number | undefined
    if (maxText !== undefined) {
      maxContacts = Number(maxText)
      if (!/^\d+$/.test(maxText)) throw new CliError(`--max-contacts: expected a positive integer, got ${JSON.stringify(maxText)}`, 2)
    }
    const { b, realm } = await backend(p, env, clock)
    try {
      const path = `/users/${encodeURIComponent(name)}${realmQuery(realm)}`
      switch (sub) {
        case 'add': {
          const u = check(await b.call('POST', '/users', { user: name, password: pw, ...(realm !== undefined ? { realm } : {}), ...(maxContacts !== undefined ? { maxContacts } : {}), ...(p.flags.has('--disabled') ? { enabled: false } : {}) }))
          io.out(`added ${userLine(u)}`)
          return
        }
        case 'passwd': io.out(`password changed for ${userLine(check(await b.call('PATCH', path, { password: pw, ...(maxContacts !== undefined ? { maxContacts } : {}) })))}`); return
        case 'enable': case 'disable': io.out(userLine(check(await b.call('PATCH', path, { enabled: sub === 'enable' })))); return
        case 'del': check(await b.call('DELETE', path)); io.out(`deleted ${name}${realm !== undefined ? `@${realm}` : ''}`); return
        case 'show': {
          const u = check(await b.call('GET', path))
          io.out(p.flags.has('--json') ? JSON.stringify(u, null, 2) : Object.entries(u).map(([k, v]) => `${k.padEnd(12)} ${Array.isArray(v) ? v.join(', ') : String(v)}`).join('\n'))
          return
        }
        case 'list': {
          const users = await listAll(b, `/users${realmQuery(realm)}`, 'users')
          io.out(p.flags.has('--json') ? JSON.stringify(users, null, 2) : users.length === 0 ? '(no users)' : users.map(userLine).join('\n'))
        }
      }
    } finally {
      await b.close()
    }
  }, io)
}

/** `sipring group …`. */
export async function groupCommand (args: string[], env: NodeJS.ProcessEnv, io: AccountsIo, clock: Clock = systemClock): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h') { io.out(groupHelp()); return sub === undefined ? 2 : 0 }
  return await run(async () => {
    const p = parseArgs(rest, ['--member', '--policy', '--add', '--remove', '--set', '--data', '--admin'], ['--json'])
    if (!['add', 'members', 'del', 'list'].includes(sub)) throw new CliError(`unknown group command ${JSON.stringify(sub)} (see \`sipring group help\`)`, 2)
    if (sub !== 'list' && p.positional.length !== 1) throw new CliError(`sipring group ${sub} needs exactly one group AOR`, 2)
    if (sub === 'list' && p.positional.length > 0) throw new CliError(`unexpected argument ${JSON.stringify(p.positional[0])}`, 2)
    const policy = one(p, '--policy') as GroupPolicy | undefined
    const { b } = await backend(p, env, clock)
    try {
      const path = `/groups/${encodeURIComponent(p.positional[0] ?? '')}`
      switch (sub) {
        case 'add': {
          const members = p.opts.get('--member') ?? []
          if (members.length === 0) throw new CliError('a group needs at least one --member AOR', 2)
          io.out(`added ${groupLine(check(await b.call('POST', '/groups', { group: p.positional[0], members, ...(policy !== undefined ? { policy } : {}) })))}`)
          return
        }
        case 'members': {
          const patch = {
            ...(p.opts.has('--set') ? { members: p.opts.get('--set') } : {}),
            ...(p.opts.has('--add') ? { add: p.opts.get('--add') } : {}),
            ...(p.opts.has('--remove') ? { remove: p.opts.get('--remove') } : {}),
            ...(policy !== undefined ? { policy } : {})
          }
          const g = Object.keys(patch).length === 0 ? check(await b.call('GET', path)) : check(await b.call('PATCH', path, patch))
          io.out(p.flags.has('--json') ? JSON.stringify(g, null, 2) : [`${String(g.group)} (${String(g.policy)})`, ...(g.members as string[]).map(m => `  ${m}`)].join('\n'))
          return
        }
        case 'del': check(await b.call('DELETE', path)); io.out(`deleted ${p.positional[0]!}`); return
        case 'list': {
          const groups = await listAll(b, '/groups', 'groups')
          io.out(p.flags.has('--json') ? JSON.stringify(groups, null, 2) : groups.length === 0 ? '(no groups)' : groups.map(groupLine).join('\n'))
        }
      }
    } finally {
      await b.close()
    }
  }, io)
}
