/**
 * Admin HTTP API (node:http), JSON only:
 *   GET /health              → 200 {"status":"ok"}
 *   GET /status              → 200 node status (id, version, uptime, listeners, counts)
 *   GET /bindings?aor=URI    → 200 {"aor", "bindings": [...]}; missing/bad aor → 400
 * Unknown route → 404, other methods → 405, bad query → 400; always a JSON body `{"error": "..."}`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '@sipring/interface'

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
}

export interface AdminServerInit {
  host: string
  port: number
  logger: Logger
  source: AdminSource
}

export const MAX_AOR_LENGTH = 2048

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
    try {
      this.route(req, res)
    } catch (err) {
      if (err instanceof AdminError) { send(res, err.status, { error: err.message }); return }
      this.logger.error({ err: (err as Error).message, url: req.url }, 'admin request failed')
      send(res, 500, { error: 'internal error' })
    }
  }

  private route (req: IncomingMessage, res: ServerResponse): void {
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://admin.invalid')
    } catch {
      send(res, 400, { error: 'malformed request target' }); return
    }
    const routes = ['/health', '/status', '/bindings']
    if (!routes.includes(url.pathname)) {
      send(res, 404, { error: `no route ${url.pathname} (routes: GET ${routes.join(', GET ')})` }); return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD')
      send(res, 405, { error: `method ${String(req.method)} not allowed on ${url.pathname}; use GET` }); return
    }
    const params = [...url.searchParams.keys()]
    const allowed = url.pathname === '/bindings' ? ['aor'] : []
    const unknown = params.filter(p => !allowed.includes(p))
    if (unknown.length > 0) {
      send(res, 400, { error: `unknown query parameter ${JSON.stringify(unknown[0])} on ${url.pathname}${allowed.length > 0 ? ` (allowed: ${allowed.join(', ')})` : ''}` }); return
    }
    switch (url.pathname) {
      case '/health': send(res, 200, this.source.health?.() ?? { status: 'ok' }); return
      case '/status': send(res, 200, this.source.status()); return
      case '/bindings': {
        const aors = url.searchParams.getAll('aor')
        if (aors.length !== 1 || aors[0]!.trim() === '') {
          send(res, 400, { error: aors.length > 1 ? 'give exactly one aor parameter' : 'missing query parameter aor (e.g. /bindings?aor=sip:alice@example.org)' }); return
        }
        const aor = aors[0]!.trim()
        if (aor.length > MAX_AOR_LENGTH) { send(res, 400, { error: `aor longer than ${MAX_AOR_LENGTH} characters` }); return }
        send(res, 200, this.source.bindings(aor))
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
