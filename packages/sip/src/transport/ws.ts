/**
 * SIP over WebSocket (RFC 7118): the `sip` subprotocol is required on every handshake, one SIP message per
 * text or binary frame, WS and WSS, inbound and outbound connections.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { isIP, type Socket } from 'node:net'
import { isUtf8 } from 'node:buffer'
import { WebSocket, WebSocketServer, type RawData } from 'ws'
import type { Destination } from '@sipring/interface'
import { ConnectionTransport, nextConnectionId, type Connection, type ConnectionTransportOptions } from './connection.js'
import { TransportError, familyOf, hostPort, isWildcard } from './util.js'

export interface WsTransportOptions extends ConnectionTransportOptions {
  /** WSS (WebSocket over TLS): needs cert and key. Default false (plain WS). */
  secure?: boolean
  /** PEM certificate chain and key (WSS server side). */
  cert?: string | Buffer
  key?: string | Buffer
  /** Trusted CAs for outbound WSS connections. */
  ca?: string | Buffer | Array<string | Buffer>
  /** Verify the server certificate on outbound WSS connections. Default true. */
  rejectUnauthorized?: boolean
  /** Only accept handshakes on this request path (e.g. `/sip`), 404 otherwise. Default: any path. */
  path?: string
}

const SUBPROTOCOL = 'sip'
const PING = '\r\n\r\n'

class WsConnection implements Connection {
  constructor (readonly id: string, readonly ws: WebSocket, readonly remote: { address: string, port: number }, readonly inbound: boolean) {}

  get pendingBytes (): number { return this.ws.bufferedAmount }
  get isOpen (): boolean { return this.ws.readyState === WebSocket.OPEN }

  async write (data: Buffer): Promise<void> {
    if (!this.isOpen) throw new TransportError(`ws: connection ${this.id} is closed`, 'EPIPE', 'ws', this.remote)
    // text frames for UTF-8 content (what browsers and SIP.js expect), binary otherwise
    await new Promise<void>((resolve, reject) => {
      this.ws.send(data, { binary: !isUtf8(data) }, err => { if (err == null) resolve(); else reject(err) })
    })
  }

  end (): void { this.ws.close(1000) }
  destroy (): void { this.ws.terminate() }
}

/** SIP over WebSocket (`ws`) or secure WebSocket (`wss`), RFC 7118. */
export class WsTransport extends ConnectionTransport {
  readonly protocol: 'ws' | 'wss'
  private readonly wsOpts: WsTransportOptions
  private http: Server | undefined
  private wss: WebSocketServer | undefined

  constructor (opts: WsTransportOptions) {
    const protocol = opts.secure === true ? 'wss' : 'ws'
    super(protocol, opts)
    this.protocol = protocol
    if (opts.secure === true && (opts.cert === undefined || opts.key === undefined)) throw new TypeError('WsTransport with secure: true needs cert and key')
    this.wsOpts = opts
  }

  protected async listen (): Promise<number> {
    const http = this.wsOpts.secure === true
      ? createHttpsServer({ cert: this.wsOpts.cert, key: this.wsOpts.key })
      : createHttpServer()
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: this.maxMessageSize,
      clientTracking: false,
      handleProtocols: (protocols: Set<string>) => protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false
    })
    this.http = http
    this.wss = wss
    http.on('request', (_req, res) => {
      res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket', Connection: 'close' })
      res.end('SIP over WebSocket only (RFC 7118): use the "sip" subprotocol\n')
    })
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => { this.onUpgrade(req, socket, head) })
    http.on('clientError', (err, socket) => {
      this.log.debug({ err }, 'bad HTTP request on WebSocket listener')
      socket.destroy()
    })
    if (this.wsOpts.secure === true) {
      http.on('tlsClientError', (err: Error) => { this.log.info({ err }, 'TLS handshake failed') })
    }
    return await new Promise<number>((resolve, reject) => {
      http.once('error', reject)
      http.listen({ host: this.bound.address, port: this.bound.port, ipv6Only: familyOf(this.bound.address) === 6, exclusive: true }, () => {
        http.off('error', reject)
        http.on('error', err => { this.emitEvent('error', err) })
        const addr = http.address()
        resolve(typeof addr === 'object' && addr !== null ? addr.port : this.bound.port)
      })
    })
  }

  private onUpgrade (req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', err => { this.log.debug({ err }, 'socket error during WebSocket handshake') })
    const refuse = (status: number, reason: string): void => {
      this.log.info({ remote: hostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0), status, reason }, 'WebSocket handshake refused')
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
      socket.destroySoon?.()
    }
    const wss = this.wss
    if (wss === undefined || !this.running) { socket.destroy(); return }
    const path = (req.url ?? '/').split('?')[0]
    if (this.wsOpts.path !== undefined && path !== this.wsOpts.path) { refuse(404, 'Not Found'); return }
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map(p => p.trim().toLowerCase())
    if (!offered.includes(SUBPROTOCOL)) { refuse(400, 'Missing "sip" WebSocket subprotocol (RFC 7118)'); return }
    if (!this.canAccept()) { refuse(503, 'Service Unavailable'); return }
    const address = socket.remoteAddress
    const port = socket.remotePort
    if (address === undefined || port === undefined) { socket.destroy(); return }
    wss.handleUpgrade(req, socket, head, ws => {
      if (!this.running) { ws.terminate(); return }
      const conn = new WsConnection(nextConnectionId(this.protocol), ws, { address, port }, true)
      this.hook(conn)
      this.addConnection(conn)
    })
  }

  protected async closeListener (): Promise<void> {
    const http = this.http
    const wss = this.wss
    this.http = undefined
    this.wss = undefined
    wss?.close()
    if (http === undefined) return
    http.closeAllConnections?.()
    await new Promise<void>(resolve => { http.close(() => { resolve() }) })
  }

  protected async dial (id: string, to: Destination, setCancel: (cancel: () => void) => void): Promise<Connection> {
    const scheme = this.protocol === 'wss' ? 'wss' : 'ws'
    const url = `${scheme}://${hostPort(to.address, to.port)}${this.wsOpts.path ?? '/'}`
    const local = this.bound.address
    const localAddress = !isWildcard(local) && (isIP(to.address) === 0 || familyOf(to.address) === familyOf(local)) ? local : undefined
    const ws = new WebSocket(url, SUBPROTOCOL, {
      maxPayload: this.maxMessageSize,
      perMessageDeflate: false,
      handshakeTimeout: this.connectTimeoutMs,
      ...(localAddress !== undefined ? { localAddress } : {}),
      ...(this.protocol === 'wss'
        ? {
            rejectUnauthorized: this.wsOpts.rejectUnauthorized ?? true,
            ...(this.wsOpts.ca !== undefined ? { ca: this.wsOpts.ca } : {}),
            ...(this.wsOpts.cert !== undefined && this.wsOpts.key !== undefined ? { cert: this.wsOpts.cert, key: this.wsOpts.key } : {})
          }
        : {})
    })
    // a permanent listener first: ws may emit a second 'error' (e.g. after terminate() mid-handshake)
    ws.on('error', err => { this.log.debug({ err, connectionId: id }, 'WebSocket error') })
    setCancel(() => { ws.terminate() })
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { ws.off('open', onOpen); reject(err) }
      const onUnexpected = (_req: unknown, res: IncomingMessage): void => {
        ws.off('open', onOpen)
        res.resume()
        reject(new TransportError(`${this.protocol}: WebSocket handshake with ${url} refused: HTTP ${res.statusCode ?? '?'} ${res.statusMessage ?? ''}`.trim(),
          'ENOTSIP', this.protocol, to))
        ws.terminate()
      }
      const onOpen = (): void => {
        ws.off('error', onError)
        ws.off('unexpected-response', onUnexpected)
        if (ws.protocol !== SUBPROTOCOL) {
          ws.terminate()
          reject(new TransportError(`${this.protocol}: ${url} did not accept the "sip" subprotocol`, 'ENOTSIP', this.protocol, to))
          return
        }
        resolve()
      }
      ws.once('error', onError)
      ws.once('unexpected-response', onUnexpected)
      ws.once('open', onOpen)
    })
    const conn = new WsConnection(id, ws, { address: to.address, port: to.port }, false)
    this.hook(conn)
    return conn
  }

  private hook (conn: WsConnection): void {
    const ws = conn.ws
    if (conn.inbound) ws.on('error', err => { this.log.debug({ err, connectionId: conn.id }, 'WebSocket error') })
    ws.on('close', () => { this.onConnClosed(conn) })
    ws.on('ping', () => { this.touch(conn) })
    ws.on('pong', () => { this.touch(conn) })
    ws.on('message', (raw: RawData) => {
      const data = Array.isArray(raw) ? Buffer.concat(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw)
      if (isOnlyCrlf(data)) {
        this.touch(conn)
        // SIP.js and others send a CRLFCRLF keep-alive frame and expect a CRLF pong (RFC 5626 §3.5.1 over WS)
        if (data.length === 4 && data.toString('latin1') === PING) {
          if (conn.isOpen) ws.send('\r\n')
          this.onConnKeepalive(conn)
        }
        return
      }
      this.onConnMessage(conn, data)
    })
  }
}

function isOnlyCrlf (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]
    if (c !== 13 && c !== 10) return false
  }
  return true
}
