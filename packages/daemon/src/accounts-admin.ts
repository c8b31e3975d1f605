/**
 * Accounts and groups over the admin HTTP API, token protected
 * (`Authorization: Bearer <token>`, the token kept in `<dataDir>/admin-token`):
 *
 *   GET    /users[?realm=R&limit=N&after=C]  → 200 {"users": [...], "next"?: C}  (one page: limit 1–1000,
 *                                          default 1000; pass `next` back as `after` for the next page)
 *   POST   /users  {user, password, realm?, enabled?, maxContacts?, displayName?}  → 201 user
 *   GET    /users/<user>[?realm=R]         → 200 user | 404
 *   PATCH  /users/<user>[?realm=R] {password?, enabled?, maxContacts?, displayName?} → 200 user
 *   DELETE /users/<user>[?realm=R]         → 200 {"deleted": true} | 404
 *   GET    /groups[?limit=N&after=C]       → 200 {"groups": [...], "next"?: C}  (paged as /users)
 *   POST   /groups {group, members, policy?} → 201 group
 *   GET    /groups/<aor>                   → 200 group | 404
 *   PATCH  /groups/<aor> {members?, add?, remove?, policy?} → 200 group
 *   DELETE /groups/<aor>                   → 200 {"deleted": true} | 404
 *   GET    /auth/bans                      → 200 current bans (when authentication is on)
 *
 * Bad input → 400 with `{"error": "..."}`; no/invalid token → 401/403. User views never carry HA1s.
 * On a super node the accounts live on the core nodes: reads are forwarded, writes are refused by the
 * core nodes (403: write on a core node's admin API).
 */
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '@sipring/interface'
import { ACCOUNT_LIMITS, AccountError, publicAccount, type AccountStore, type Group } from '@sipring/auth'

export const MAX_BODY = 64 * 1024

export interface AccountsAdminInit {
  accounts: AccountStore
  /** Bearer token required on every accounts route. */
  token: string
  /** Realm used when a request names none (config auth.realm, else the first domain). */
  defaultRealm: string | undefined
  logger: Logger
  /** Current bans of the digest server, when authentication is on. */
  bans?: () => unknown
}

export interface AccountsAdmin {
  /** Does this path belong to the accounts API? */
  owns(pathname: string): boolean
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void>
}

class HttpError extends Error {
  constructor (readonly status: number, message: string) { super(message) }
}

export function groupView (g: Group): Record<string, unknown> {
  return { group: g.aor, members: g.members, policy: g.policy, created: new Date(g.created).toISOString(), updated: new Date(g.updated).toISOString() }
}

function send (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.statusCode = status
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Content-Length', Buffer.byteLength(text))
  res.setHeader('Cache-Control', 'no-store')
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v)
  res.end(res.req.method === 'HEAD' ? undefined : text)
}

async function readJson (req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\b/i.test(type)) throw new HttpError(415, 'send a JSON body with Content-Type: application/json')
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > MAX_BODY) throw new HttpError(413, `body larger than ${MAX_BODY} bytes`)
    chunks.push(c as Buffer)
  }
  let v: unknown
  try {
    v = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch (err) {
    throw new HttpError(400, `body is not valid JSON: ${(err as Error).message}`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new HttpError(400, 'body must be a JSON object')
  return v as Record<string, unknown>
}

function only (body: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(body)) if (!allowed.includes(k)) throw new HttpError(400, `unknown field ${JSON.stringify(k)} (allowed: ${allowed.join(', ')})`)
}

function query (url: URL, allowed: string[]): void {
  for (const k of url.searchParams.keys()) if (!allowed.includes(k)) throw new HttpError(400, `unknown query parameter ${JSON.stringify(k)}${allowed.length > 0 ? ` (allowed: ${allowed.join(', ')})` : ''}`)
}

/** `limit` and `after` of a listing page. */
function pageQuery (url: URL): { limit: number, after?: string } {
  const limitText = url.searchParams.get('limit')
  const limit = limitText === null ? ACCOUNT_LIMITS.maxPageSize : Number(limitText)
  if (!/^\d+$/.test(limitText ?? '1') || !Number.isInteger(limit) || limit < 1 || limit > ACCOUNT_LIMITS.maxPageSize) {
    throw new HttpError(400, `limit must be an integer from 1 to ${ACCOUNT_LIMITS.maxPageSize} (page with after=<next>)`)
  }
  const after = url.searchParams.get('after')
  if (after !== null && (after === '' || after.length > ACCOUNT_LIMITS.maxCursorLength)) throw new HttpError(400, 'after must be the "next" cursor of the previous page')
  return { limit, ...(after !== null ? { after } : {}) }
}

function stringList (v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined
  if (!Array.isArray(v) || v.some(x => typeof x !== 'string')) throw new HttpError(400, `${name} must be a list of AOR strings`)
  return v as string[]
}

export function createAccountsAdmin (init: AccountsAdminInit): AccountsAdmin {
  const { accounts } = init
  const token = Buffer.from(init.token, 'utf8')

  const realmOf = (url: URL, body?: Record<string, unknown>): string => {
    const r = body?.realm ?? url.searchParams.get('realm') ?? init.defaultRealm
    if (r === undefined || r === null || r === '') throw new HttpError(400, 'no realm: give "realm" (no auth.realm or domain is configured)')
    if (typeof r !== 'string') throw new HttpError(400, 'realm must be a string')
    return r
  }

  const authorized = (req: IncomingMessage): void => {
    const h = req.headers.authorization
    if (h === undefined || h.trim() === '') throw new HttpError(401, 'missing Authorization: Bearer <token> (the token is in <dataDir>/admin-token)')
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
    const got = Buffer.from(m?.[1] ?? '', 'utf8')
    if (m === null || got.length !== token.length || !timingSafeEqual(got, token)) throw new HttpError(403, 'invalid admin token')
  }

  async function route (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET'
    const parts = url.pathname.split('/').slice(1)
    let name: string | undefined
    try {
      name = parts[1] !== undefined ? decodeURIComponent(parts[1]) : undefined
    } catch {
      throw new HttpError(400, 'malformed percent-encoding in the path')
    }
    if (parts.length > 2 || name === '') throw new HttpError(404, `no route ${url.pathname}`)
    const allow = (methods: string[]): void => {
      if (!methods.includes(method)) {
        res.setHeader('Allow', methods.join(', '))
        throw new HttpError(405, `method ${method} not allowed on ${url.pathname}; use ${methods.join(', ')}`)
      }
    }

    if (parts[0] === 'auth' && name === 'bans') {
      allow(['GET'])
      query(url, [])
      if (init.bans === undefined) throw new HttpError(404, 'authentication is not enabled on this node (auth.enabled)')
      send(res, 200, init.bans()); return
    }

    if (parts[0] === 'users') {
      if (name === undefined) {
        allow(['GET', 'POST'])
        if (method === 'GET') {
          query(url, ['realm', 'limit', 'after'])
          const realm = url.searchParams.get('realm') ?? undefined
          const page = await accounts.listUsersPage({ ...(realm !== undefined ? { realm } : {}), ...pageQuery(url) })
          send(res, 200, { users: page.items.map(publicAccount), ...(page.next !== undefined ? { next: page.next } : {}) }); return
        }
        query(url, [])
        const body = await readJson(req)
        only(body, ['user', 'password', 'realm', 'enabled', 'maxContacts', 'displayName'])
        const a = await accounts.addUser({
          user: body.user as string,
          realm: realmOf(url, body),
          password: body.password as string,
          ...(body.enabled !== undefined ? { enabled: body.enabled as boolean } : {}),
          ...(body.maxContacts !== undefined ? { maxContacts: body.maxContacts as number } : {}),
          ...(body.displayName !== undefined ? { displayName: body.displayName as string } : {})
        })
        init.logger.info({ user: a.user, realm: a.realm }, 'user added')
        send(res, 201, publicAccount(a)); return
      }
      allow(['GET', 'PATCH', 'DELETE'])
      query(url, ['realm'])
      if (method === 'GET') {
        const a = await accounts.getUser(name, realmOf(url).toLowerCase())
        if (a === undefined) throw new HttpError(404, `no user ${name}@${realmOf(url)}`)
        send(res, 200, publicAccount(a)); return
      }
      if (method === 'DELETE') {
        const realm = realmOf(url)
        if (!await accounts.deleteUser(name, realm)) throw new HttpError(404, `no user ${name}@${realm}`)
        init.logger.info({ user: name, realm }, 'user deleted')
        send(res, 200, { deleted: true }); return
      }
      const body = await readJson(req)
      only(body, ['password', 'enabled', 'maxContacts', 'displayName'])
      if (Object.keys(body).length === 0) throw new HttpError(400, 'nothing to change (fields: password, enabled, maxContacts, displayName)')
      const a = await accounts.updateUser(name, realmOf(url), body as never)
      init.logger.info({ user: a.user, realm: a.realm, fields: Object.keys(body) }, 'user updated')
      send(res, 200, publicAccount(a)); return
    }

    if (parts[0] === 'groups') {
      if (name === undefined) {
        allow(['GET', 'POST'])
        if (method === 'GET') {
          query(url, ['limit', 'after'])
          const page = await accounts.listGroupsPage(pageQuery(url))
          send(res, 200, { groups: page.items.map(groupView), ...(page.next !== undefined ? { next: page.next } : {}) }); return
        }
        query(url, [])
        const body = await readJson(req)
        only(body, ['group', 'members', 'policy'])
        const g = await accounts.addGroup({
          aor: body.group as string,
          members: stringList(body.members, 'members') ?? [],
          ...(body.policy !== undefined ? { policy: body.policy as 'hunt' } : {})
        })
        init.logger.info({ group: g.aor, members: g.members.length }, 'group added')
        send(res, 201, groupView(g)); return
      }
      allow(['GET', 'PATCH', 'DELETE'])
      query(url, [])
      if (method === 'GET') {
        const g = await accounts.getGroup(name)
        if (g === undefined) throw new HttpError(404, `no group ${name}`)
        send(res, 200, groupView(g)); return
      }
      if (method === 'DELETE') {
        if (!await accounts.deleteGroup(name)) throw new HttpError(404, `no group ${name}`)
        send(res, 200, { deleted: true }); return
      }
      const body = await readJson(req)
      only(body, ['members', 'add', 'remove', 'policy'])
      if (Object.keys(body).length === 0) throw new HttpError(400, 'nothing to change (fields: members, add, remove, policy)')
      const members = stringList(body.members, 'members')
      const add = stringList(body.add, 'add')
      const remove = stringList(body.remove, 'remove')
      const g = await accounts.updateGroup(name, {
        ...(members !== undefined ? { members } : {}),
        ...(add !== undefined ? { add } : {}),
        ...(remove !== undefined ? { remove } : {}),
        ...(body.policy !== undefined ? { policy: body.policy as 'hunt' } : {})
      })
      send(res, 200, groupView(g)); return
    }
    throw new HttpError(404, `no route ${url.pathname}`)
  }

  return {
    owns: (p: string) => p === '/users' || p.startsWith('/users/') || p === '/groups' || p.startsWith('/groups/') || p === '/auth/bans',
    async handle (req, res, url) {
      try {
        authorized(req)
        await route(req, res, url)
      } catch (err) {
        if (err instanceof HttpError) {
          send(res, err.status, { error: err.message }, err.status === 401 ? { 'WWW-Authenticate': 'Bearer realm="sipring-admin"' } : {})
          return
        }
        if (err instanceof AccountError) {
          if (err.code === 'EPERM') init.logger.warn({ url: url.pathname, method: req.method, err: err.message }, 'account write refused by the core nodes')
          send(res, err.code === 'EEXIST' ? 409 : err.code === 'ENOTFOUND' ? 404 : err.code === 'EUNAVAILABLE' ? 503 : err.code === 'EPERM' ? 403 : 400, { error: err.message }, err.code === 'EUNAVAILABLE' ? { 'Retry-After': '5' } : {}); return
        }
        init.logger.error({ err: (err as Error).message, url: url.pathname }, 'accounts admin request failed')
        send(res, 500, { error: 'internal error' })
      }
    }
  }
}
