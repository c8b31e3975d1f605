/**
 * Admin HTTP API (node:http), JSON only:
 *   GET /health              → 200 {"status":"ok"}
 *   GET /status              → 200 node status (id, version, uptime, listeners, counts)
 *   GET /bindings?aor=URI    → 200 {"aor", "bindings": [...]}; missing/bad aor → 400
 *   GET /ring                → 200 overlay members, status, SIP address, key ranges and load (overlay only)
 *   GET /lookup?aor=URI      → 200 the AOR in the overlay: owners, each node's contacts with expiry (overlay only)
 * Unknown route → 404, other methods → 405, bad query → 400; always a JSON body `{"error": "..."}`.
 * /users, /groups and /auth/bans (token protected, read-write) are served by accounts-admin.ts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '@sipring/interface'
import type { AccountsAdmin } from './accounts-admin.js'

/** Thrown by an {@link AdminSource} to answer with an HTTP error. */
export class AdminError extends Error {
  constructor (readonly status: number, message: string) {
    super(message)
    this.name = 'AdminError'
  }
}

export interface AdminSource {
  status(): unknown
  health?(): unknown
  /** Bindings of one AOR; throw AdminError(400) for an AOR that does not parse. */
  bindings(aor: string): unknown
  /** Overlay ring view; absent when the overlay is off (404). */
  ring?(): unknown
  /** Overlay lookup of one AOR (may be async); absent when the overlay is off (404). */
  lookup?(aor: string): unknown
}

export interface AdminServerInit {
  host: string
  port: number
  logger: Logger
  source: AdminSource
  /** Token-protected /users, /groups and /auth/bans routes (see accounts-admin.ts). */
  accounts?: AccountsAdmin
}

export const MAX_AOR_LENGTH = 2048

const OVERLAY_OFF = 'the overlay is not enabled on this node (start it with --overlay true or --join <multiaddr>)'

export class AdminServer {
  private readonly server: Server
  private readonly logger: Logger
  private readonly source: AdminSource

  constructor (private readonly init: AdminServerInit) {
    this.logger = init.logger
    this.source = init.source
    this.server = createServer((req, res) => { this.handle(req, res) })
    this.server.requestTimeout = 10_000
    this.server.headersTimeout = 10_000
  }

  /** Listen; rejects with the socket error (e.g. EADDRINUSE). */
  async start (): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { reject(err) }
      this.server.once('error', onError)
      this.server.listen({ host: this.init.host, port: this.init.port }, () => {
        this.server.off('error', onError)
        this.server.on('error', (err) => { this.logger.error({ err: err.message }, 'admin server error') })
        resolve()
      })
    })
  }

  /** Bound address (after start). */
  address (): { host: string, port: number } {
    const a = this.server.address() as AddressInfo | null
    return a === null ? { host: this.init.host, port: this.init.port } : { host: a.address, port: a.port }
  }

  async stop (): Promise<void> {
    if (!this.server.listening) return
    await new Promise<void>((resolve) => {
      this.server.close(() => { resolve() })
      this.server.closeAllConnections()
    })
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const fail = (err: unknown): void => {
      if (err instanceof AdminError) { send(res, err.status, { error: err.message }); return }
      this.logger.error({ err: (err as Error).message, url: req.url }, 'admin request failed')
      send(res, 500, { error: 'internal error' })
    }
    try {
      const p = this.route(req, res)
      if (p !== undefined) p.catch(fail)
    } catch (err) {
      fail(err)
    }
  }

  private route (req: IncomingMessage, res: ServerResponse): Promise<void> | undefined {
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://admin.invalid')
    } catch {
      send(res, 400, { error: 'malformed request target' }); return
    }
    if (this.init.accounts?.owns(url.pathname) === true) return this.init.accounts.handle(req, res, url)
    const routes = ['/health', '/status', '/bindings', '/ring', '/lookup']
    if (!routes.includes(url.pathname)) {
      send(res, 404, { error: `no route ${url.pathname} (routes: GET ${routes.join(', GET ')})` }); return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD')
      send(res, 405, { error: `method ${String(req.method)} not allowed on ${url.pathname}; use GET` }); return
    }
    const params = [...url.searchParams.keys()]
    const allowed = url.pathname === '/bindings' || url.pathname === '/lookup' ? ['aor'] : []
    const unknown = params.filter(p => !allowed.includes(p))
    if (unknown.length > 0) {
      send(res, 400, { error: `unknown query parameter ${JSON.stringify(unknown[0])} on ${url.pathname}${allowed.length > 0 ? ` (allowed: ${allowed.join(', ')})` : ''}` }); return
    }
    switch (url.pathname) {
      case '/health': send(res, 200, this.source.health?.() ?? { status: 'ok' }); return
      case '/status': send(res, 200, this.source.status()); return
      case '/ring': {
        if (this.source.ring === undefined) { send(res, 404, { error: OVERLAY_OFF }); return }
        send(res, 200, this.source.ring()); return
      }
      case '/bindings': case '/lookup': {
        const aors = url.searchParams.getAll('aor')
        if (aors.length !== 1 || aors[0]!.trim() === '') {
          send(res, 400, { error: aors.length > 1 ? 'give exactly one aor parameter' : 'missing query parameter aor (e.g. /bindings?aor=sip:alice@example.org)' }); return
        }
        const aor = aors[0]!.trim()
        if (aor.length > MAX_AOR_LENGTH) { send(res, 400, { error: `aor longer than ${MAX_AOR_LENGTH} characters` }); return }
        if (url.pathname === '/bindings') { send(res, 200, this.source.bindings(aor)); return }
        const lookup = this.source.lookup
        if (lookup === undefined) { send(res, 404, { error: OVERLAY_OFF }); return }
        return Promise.resolve(lookup.call(this.source, aor)).then(body => { send(res, 200, body) })
      }
    }
  }
}

function send (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.statusCode = status
  res.setHeader('Content-Type', 'application/json; charset=utf-8')
  res.setHeader('Content-Length', Buffer.byteLength(text))
  res.setHeader('Cache-Control', 'no-store')
  res.end(res.req.method === 'HEAD' ? undefined : text)
}
