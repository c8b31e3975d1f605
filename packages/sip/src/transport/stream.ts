/** SIP over TCP and TLS (RFC 3261 §18.3): Content-Length framing, CRLF keep-alives, connection reuse. */
import { createServer as createNetServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer, connect as tlsConnect, type TLSSocket, type SecureContextOptions } from 'node:tls'
import { isIP } from 'node:net'
import type { Destination, TransportProtocol } from '@sipring/interface'
import { ConnectionTransport, nextConnectionId, type Connection, type ConnectionTransportOptions } from './connection.js'
import { StreamFramer, framingErrorResponse } from './framing.js'
import { familyOf, hostPort, isWildcard, TransportError } from './util.js'

export interface TcpTransportOptions extends ConnectionTransportOptions {
  /** Largest header section accepted (bytes). Default = maxMessageSize. */
  maxHeaderSize?: number
}

export interface TlsTransportOptions extends TcpTransportOptions {
  /** PEM certificate chain and private key presented by this node (server and client side). */
  cert: string | Buffer
  key: string | Buffer
  /** Trusted CAs (PEM) for verifying peers; default: Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>
  /** Ask inbound clients for a certificate (mutual TLS). Default false. */
  requestCert?: boolean
  /**
   * Verify peer certificates: the server's on outbound connections (against the IP or `servername`), and
   * the client's on inbound ones when requestCert is set. Default true.
   */
  rejectUnauthorized?: boolean
  /** SNI / name to verify on outbound connections when the destination is an IP. Default: the IP itself. */
  servername?: string
}

const CRLF = Buffer.from('\r\n')

/** One TCP or TLS socket with its framer. */
class SocketConnection implements Connection {
  readonly framer: StreamFramer
  /** Forced-close timer after a framing error (cancelled when the socket closes). */
  lingerTimer: { cancel: () => void } | undefined
  constructor (
    readonly protocol: TransportProtocol,
    readonly id: string,
    readonly socket: Socket,
    readonly remote: { address: string, port: number },
    readonly inbound: boolean,
    framerOpts: { maxMessageSize: number, maxHeaderSize?: number }
  ) {
    this.framer = new StreamFramer(framerOpts)
  }

  get pendingBytes (): number { return this.socket.writableLength }
  get isOpen (): boolean { return !this.socket.destroyed && this.socket.writable }

  async write (data: Buffer): Promise<void> {
    if (!this.isOpen) throw new TransportError(`${this.protocol}: connection ${this.id} is closed`, 'EPIPE', this.protocol, this.remote)
    await new Promise<void>((resolve, reject) => {
      this.socket.write(data, err => { if (err == null) resolve(); else reject(err) })
    })
  }

  end (): void { this.socket.end() }
  destroy (): void { this.socket.destroy() }
}

abstract class StreamTransport extends ConnectionTransport {
  private server: Server | undefined
  private readonly maxHeaderSize: number | undefined

  constructor (protocol: TransportProtocol, opts: TcpTransportOptions) {
    super(protocol, opts)
    this.maxHeaderSize = opts.maxHeaderSize
  }

  protected abstract createServer (onSocket: (socket: Socket) => void): Server
  protected abstract connectSocket (to: Destination, localAddress: string | undefined): Socket
  /** Event that tells an outbound socket is ready ('connect' for TCP, 'secureConnect' for TLS). */
  protected abstract readonly readyEvent: string

  protected async listen (): Promise<number> {
    const server = this.createServer(socket => { this.onInbound(socket) })
    this.server = server
    return await new Promise<number>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host: this.bound.address, port: this.bound.port, ipv6Only: familyOf(this.bound.address) === 6, exclusive: true }, () => {
        server.off('error', reject)
        server.on('error', err => { this.emitEvent('error', err) })
        const addr = server.address()
        resolve(typeof addr === 'object' && addr !== null ? addr.port : this.bound.port)
      })
    })
  }

  protected async closeListener (): Promise<void> {
    const server = this.server
    this.server = undefined
    if (server === undefined) return
    await new Promise<void>(resolve => { server.close(() => { resolve() }) })
  }

  private onInbound (socket: Socket): void {
    socket.on('error', err => { this.log.debug({ err }, 'inbound socket error') })
    if (!this.canAccept()) {
      this.log.warn({ remote: hostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0), max: this.maxConnections }, 'connection limit reached: inbound connection refused')
      socket.destroy()
      return
    }
    if (socket.remoteAddress === undefined || socket.remotePort === undefined) { socket.destroy(); return } // already gone
    const conn = new SocketConnection(this.protocol, nextConnectionId(this.protocol), socket,
      { address: socket.remoteAddress, port: socket.remotePort }, true, { maxMessageSize: this.maxMessageSize, maxHeaderSize: this.maxHeaderSize })
    this.hook(conn)
    this.addConnection(conn)
  }

  protected async dial (id: string, to: Destination, setCancel: (cancel: () => void) => void): Promise<Connection> {
    const local = this.bound.address
    const localAddress = !isWildcard(local) && (isIP(to.address) === 0 || familyOf(to.address) === familyOf(local)) ? local : undefined
    const socket = this.connectSocket(to, localAddress)
    // a permanent listener first: a stray second 'error' must never become an uncaught exception
    socket.on('error', err => { this.log.debug({ err, connectionId: id }, 'socket error') })
    setCancel(() => { socket.destroy() })
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { socket.off(this.readyEvent, onReady); reject(err) }
      const onClose = (): void => { reject(new TransportError(`connection to ${hostPort(to.address, to.port)} closed during setup`, 'ECONNRESET', this.protocol, to)) }
      const onReady = (): void => { socket.off('error', onError); socket.off('close', onClose); resolve() }
      socket.once('error', onError)
      socket.once('close', onClose)
      socket.once(this.readyEvent, onReady)
    })
    const conn = new SocketConnection(this.protocol, id, socket, { address: to.address, port: to.port }, false,
      { maxMessageSize: this.maxMessageSize, maxHeaderSize: this.maxHeaderSize })
    this.hook(conn)
    return conn
  }

  private hook (conn: SocketConnection): void {
    const socket = conn.socket
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => { this.onData(conn, chunk) })
    socket.on('close', () => {
      conn.lingerTimer?.cancel()
      this.onConnClosed(conn)
    })
  }

  private onData (conn: SocketConnection, chunk: Buffer): void {
    this.touch(conn)
    for (const ev of conn.framer.push(chunk)) {
      if (ev.type === 'message') {
        this.onConnMessage(conn, ev.data)
      } else if (ev.type === 'ping') {
        if (conn.isOpen) conn.socket.write(CRLF) // RFC 5626 §3.5.1 pong
        this.onConnKeepalive(conn)
      } else {
        const err = ev.error
        this.log.warn({ connectionId: conn.id, remote: hostPort(conn.remote.address, conn.remote.port), status: err.status, reason: err.reason },
          'unframeable SIP stream: closing connection')
        const answer = framingErrorResponse(err)
        if (answer !== undefined && conn.isOpen) conn.socket.end(answer)
        else conn.socket.end()
        conn.socket.pause()
        // do not wait for the peer forever
        const s = conn.socket
        if (!s.destroyed) conn.lingerTimer = this.clock.setTimer(2_000, () => { s.destroy() })
        return
      }
    }
  }
}

/** SIP over TCP. */
export class TcpTransport extends StreamTransport {
  readonly protocol = 'tcp' as const
  protected readonly readyEvent = 'connect'

  constructor (opts: TcpTransportOptions) { super('tcp', opts) }

  protected createServer (onSocket: (socket: Socket) => void): Server {
    return createNetServer({ noDelay: true }, onSocket)
  }

  protected connectSocket (to: Destination, localAddress: string | undefined): Socket {
    return netConnect({ host: to.address, port: to.port, ...(localAddress !== undefined ? { localAddress } : {}) })
  }
}

/** SIP over TLS (RFC 3261 §26.2, `sips:`). */
export class TlsTransport extends StreamTransport {
  readonly protocol = 'tls' as const
  protected readonly readyEvent = 'secureConnect'
  private readonly tls: TlsTransportOptions

  constructor (opts: TlsTransportOptions) {
    super('tls', opts)
    if (opts.cert === undefined || opts.key === undefined) throw new TypeError('TlsTransport needs cert and key')
    this.tls = opts
  }

  private context (): SecureContextOptions {
    return { cert: this.tls.cert, key: this.tls.key, ...(this.tls.ca !== undefined ? { ca: this.tls.ca } : {}) }
  }

  protected createServer (onSocket: (socket: Socket) => void): Server {
    const server = createTlsServer({
      ...this.context(),
      requestCert: this.tls.requestCert ?? false,
      rejectUnauthorized: this.tls.requestCert === true ? (this.tls.rejectUnauthorized ?? true) : false,
      handshakeTimeout: this.connectTimeoutMs
    }, (socket: TLSSocket) => { onSocket(socket) })
    server.on('tlsClientError', (err, socket) => {
      this.log.info({ err, remote: hostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0) }, 'TLS handshake failed')
    })
    return server
  }

  protected connectSocket (to: Destination, localAddress: string | undefined): Socket {
    const servername = this.tls.servername ?? (isIP(to.address) === 0 ? to.address : undefined)
    return tlsConnect({
      ...this.context(),
      host: to.address,
      port: to.port,
      rejectUnauthorized: this.tls.rejectUnauthorized ?? true,
      ...(servername !== undefined ? { servername } : {}),
      ...(localAddress !== undefined ? { localAddress } : {})
    })
  }
}
