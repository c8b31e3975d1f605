/**
 * Shared machinery of the connection-oriented transports (TCP, TLS, WS, WSS): the connection table,
 * reuse of open connections for sends (by `connectionId`, then by remote address:port), de-duplicated
 * outbound connects, connection limits and idle timeouts driven by the injected Clock.
 */
import type { Clock, Destination, Endpoint, Logger, SipTransport, Source, Timer, TransportProtocol } from '@sipring/interface'
import {
  DEFAULT_MAX_MESSAGE_SIZE, TransportError, TransportEventsBase, checkDestination, checkPort, endpointKey, hostPort,
  stripBrackets, toTransportError
} from './util.js'

export interface ConnectionTransportOptions {
  /** Local address to listen on (`0.0.0.0`, `::`, `127.0.0.1`, `::1`, …). IPv6 listeners are ipv6Only. */
  address: string
  /** Local port; 0 → ephemeral (read it from `local.port` after start). */
  port: number
  clock: Clock
  logger: Logger
  /** Close a connection after this long without traffic in either direction (ms). Default 300,000; 0 disables. */
  idleTimeoutMs?: number
  /** Largest SIP message accepted or sent (bytes). Default 65,535. */
  maxMessageSize?: number
  /** Most connections open at once (inbound + outbound). Beyond, inbound ones are refused and sends reject. Default 10,000. */
  maxConnections?: number
  /** Give up an outbound connect (and TLS/WS handshake) after this long (ms). Default 10,000. */
  connectTimeoutMs?: number
  /** Reject a send while this many bytes are still queued on the connection (slow peer). Default 4 MiB. */
  maxWriteBuffer?: number
}

/** One open connection as seen by {@link ConnectionTransport}. */
export interface Connection {
  readonly id: string
  readonly remote: { address: string, port: number }
  readonly inbound: boolean
  /** Write one framed message. */
  write: (data: Buffer) => Promise<void>
  /** Bytes queued but not yet handed to the kernel. */
  readonly pendingBytes: number
  /** Still usable? */
  readonly isOpen: boolean
  /** Close gracefully (after pending writes). */
  end: () => void
  /** Close at once. */
  destroy: () => void
}

interface ConnState {
  conn: Connection
  key: string
  lastActivity: number
  timer: Timer | undefined
  closed: boolean
}

let connectionSeq = 0
/** Process-wide unique connection id, e.g. `tcp:17`, so ids never collide between transports. */
export function nextConnectionId (protocol: TransportProtocol): string {
  return `${protocol}:${++connectionSeq}`
}

export abstract class ConnectionTransport extends TransportEventsBase implements SipTransport {
  abstract readonly protocol: TransportProtocol
  protected log: Logger
  private readonly baseLogger: Logger
  protected readonly clock: Clock
  protected readonly idleTimeoutMs: number
  protected readonly maxMessageSize: number
  protected readonly maxConnections: number
  protected readonly connectTimeoutMs: number
  protected readonly maxWriteBuffer: number
  protected bound: Endpoint
  protected running = false
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined
  private readonly conns = new Map<string, ConnState>()
  private readonly byRemote = new Map<string, Set<string>>()
  private readonly connecting = new Map<string, Promise<ConnState>>()
  private readonly pendingCancels = new Set<() => void>()

  constructor (protocol: TransportProtocol, opts: ConnectionTransportOptions) {
    super()
    checkPort(opts.port)
    this.clock = opts.clock
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 300_000
    this.maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE
    this.maxConnections = opts.maxConnections ?? 10_000
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000
    this.maxWriteBuffer = opts.maxWriteBuffer ?? 4 * 1024 * 1024
    const address = stripBrackets(opts.address)
    this.bound = { protocol, address, port: opts.port }
    this.baseLogger = opts.logger
    this.log = opts.logger.child({ transport: protocol, local: hostPort(address, opts.port) })
  }

  get local (): Endpoint { return this.bound }

  /** Number of open connections. */
  get connectionCount (): number { return this.conns.size }

  /** Ids of the open connections. */
  connectionIds (): string[] { return [...this.conns.keys()] }

  hasConnection (connectionId: string): boolean {
    const s = this.conns.get(connectionId)
    return s !== undefined && !s.closed
  }

  /** Close one connection (gracefully); `close` is emitted when it is gone. Returns false when unknown. */
  closeConnection (connectionId: string): boolean {
    const s = this.conns.get(connectionId)
    if (s === undefined) return false
    s.conn.end()
    return true
  }

  // ------------------------------------------------------------ to implement

  /** Open the listening socket; resolve with the bound port. */
  protected abstract listen (): Promise<number>
  /** Close the listening socket (connections are closed by the base class). */
  protected abstract closeListener (): Promise<void>
  /**
   * Open an outbound connection to `to`. Resolve once it is usable (TLS/WS handshake done); the
   * connection must already be hooked to {@link onConnMessage}/{@link onConnClosed}. `cancel` is set to a
   * function that aborts the attempt (used by stop() and the connect timeout).
   */
  protected abstract dial (id: string, to: Destination, setCancel: (cancel: () => void) => void): Promise<Connection>

  // ------------------------------------------------------------ lifecycle

  async start (): Promise<void> {
    if (this.starting !== undefined) return await this.starting
    this.stopping = undefined
    this.starting = (async () => {
      const port = await this.listen()
      this.bound = { ...this.bound, port }
      this.log = this.baseLogger.child({ transport: this.protocol, local: hostPort(this.bound.address, port) })
      this.running = true
      this.log.info({ port }, `${this.protocol.toUpperCase()} transport listening`)
    })()
    try {
      await this.starting
    } catch (err) {
      this.starting = undefined
      throw toTransportError(err, this.protocol, this.bound, 'listen on')
    }
  }

  async stop (): Promise<void> {
    if (this.stopping !== undefined) return await this.stopping
    if (this.starting === undefined) return
    this.stopping = (async () => {
      try { await this.starting } catch {}
      this.running = false
      this.starting = undefined
      for (const cancel of [...this.pendingCancels]) cancel()
      this.pendingCancels.clear()
      const closing = this.closeListener()
      for (const s of [...this.conns.values()]) s.conn.destroy()
      // destroy() is asynchronous for sockets: make sure every close is accounted for now
      for (const s of [...this.conns.values()]) this.onConnClosed(s.conn)
      try { await closing } catch (err) { this.log.warn({ err }, 'error closing listener') }
      this.log.info(`${this.protocol.toUpperCase()} transport stopped`)
    })()
    return await this.stopping
  }

  // ------------------------------------------------------------ connection table

  /** Is there room for one more connection? */
  protected canAccept (): boolean {
    return this.running && this.conns.size + this.connecting.size < this.maxConnections
  }

  /** Register a new (inbound or freshly dialled) connection. */
  protected addConnection (conn: Connection): void {
    const key = endpointKey(conn.remote.address, conn.remote.port)
    const s: ConnState = { conn, key, lastActivity: this.clock.now(), timer: undefined, closed: false }
    this.conns.set(conn.id, s)
    let set = this.byRemote.get(key)
    if (set === undefined) { set = new Set(); this.byRemote.set(key, set) }
    set.add(conn.id)
    this.armIdle(s)
    this.log.debug({ connectionId: conn.id, remote: hostPort(conn.remote.address, conn.remote.port), inbound: conn.inbound }, 'connection open')
  }

  /** A complete SIP message arrived on a connection. */
  protected onConnMessage (conn: Connection, data: Buffer): void {
    const s = this.conns.get(conn.id)
    if (s === undefined || s.closed) return
    s.lastActivity = this.clock.now()
    const source: Source = {
      protocol: this.protocol, address: conn.remote.address, port: conn.remote.port, connectionId: conn.id, local: this.bound
    }
    this.emitEvent('message', data, source)
  }

  /** A keep-alive ping arrived on a connection (the subclass has already answered it). */
  protected onConnKeepalive (conn: Connection): void {
    const s = this.conns.get(conn.id)
    if (s === undefined || s.closed) return
    s.lastActivity = this.clock.now()
    this.emitEvent('keepalive', conn.id)
  }

  /** Any traffic (counts against the idle timeout). */
  protected touch (conn: Connection): void {
    const s = this.conns.get(conn.id)
    if (s !== undefined) s.lastActivity = this.clock.now()
  }

  /** The connection is gone (idempotent): forget it and emit `close` once. */
  protected onConnClosed (conn: Connection): void {
    const s = this.conns.get(conn.id)
    if (s === undefined || s.closed) return
    s.closed = true
    s.timer?.cancel()
    this.conns.delete(conn.id)
    const set = this.byRemote.get(s.key)
    if (set !== undefined) {
      set.delete(conn.id)
      if (set.size === 0) this.byRemote.delete(s.key)
    }
    this.log.debug({ connectionId: conn.id }, 'connection closed')
    this.emitEvent('close', conn.id)
  }

  private armIdle (s: ConnState): void {
    if (this.idleTimeoutMs <= 0) return
    const due = s.lastActivity + this.idleTimeoutMs - this.clock.now()
    s.timer = this.clock.setTimer(Math.max(0, due), () => {
      s.timer = undefined
      if (s.closed) return
      if (this.clock.now() - s.lastActivity >= this.idleTimeoutMs) {
        this.log.debug({ connectionId: s.conn.id, idleMs: this.clock.now() - s.lastActivity }, 'closing idle connection')
        s.conn.destroy()
        this.onConnClosed(s.conn)
      } else {
        this.armIdle(s)
      }
    })
  }

  // ------------------------------------------------------------ sending

  async send (data: Buffer, to: Destination): Promise<void> {
    if (!this.running) throw new TransportError(`${this.protocol}: transport not started`, 'ENOTRUNNING', this.protocol, to)
    if (data.length > this.maxMessageSize) {
      throw new TransportError(`${this.protocol}: message of ${data.length} bytes exceeds maxMessageSize ${this.maxMessageSize}`, 'EMSGSIZE', this.protocol, to)
    }
    let s = to.connectionId !== undefined ? this.conns.get(to.connectionId) : undefined
    if (s === undefined || s.closed) {
      const bad = checkDestination(this.protocol, this.bound, to)
      if (bad !== undefined) throw bad
      s = this.findOpen(to) ?? await this.connect(to)
    }
    if (s.conn.pendingBytes > this.maxWriteBuffer) {
      throw new TransportError(`${this.protocol}: connection ${s.conn.id} to ${hostPort(to.address, to.port)} is congested (${s.conn.pendingBytes} bytes queued)`,
        'ENOBUFS', this.protocol, to)
    }
    s.lastActivity = this.clock.now()
    try {
      await s.conn.write(data)
    } catch (err) {
      throw toTransportError(err, this.protocol, s.conn.remote, `send on ${s.conn.id} to`)
    }
  }

  private findOpen (to: Destination): ConnState | undefined {
    const set = this.byRemote.get(endpointKey(to.address, to.port))
    if (set === undefined) return undefined
    for (const id of set) {
      const s = this.conns.get(id)
      if (s !== undefined && !s.closed) return s
    }
    return undefined
  }

  private async connect (to: Destination): Promise<ConnState> {
    const key = endpointKey(to.address, to.port)
    const pending = this.connecting.get(key)
    if (pending !== undefined) return await pending
    if (!this.canAccept()) {
      throw new TransportError(`${this.protocol}: connection limit (${this.maxConnections}) reached, cannot connect to ${hostPort(to.address, to.port)}`,
        'ECONNLIMIT', this.protocol, to)
    }
    const id = nextConnectionId(this.protocol)
    const attempt = new Promise<ConnState>((resolve, reject) => {
      let cancelDial: (() => void) | undefined
      let done = false
      const finish = (err: TransportError | undefined, conn?: Connection): void => {
        if (done) return
        done = true
        timer.cancel()
        this.pendingCancels.delete(abort)
        this.connecting.delete(key)
        if (err !== undefined) { reject(err); return }
        if (!this.running) {
          conn!.destroy()
          reject(new TransportError(`${this.protocol}: transport stopped while connecting to ${hostPort(to.address, to.port)}`, 'ENOTRUNNING', this.protocol, to))
          return
        }
        if (!conn!.isOpen) {
          reject(new TransportError(`${this.protocol}: connection to ${hostPort(to.address, to.port)} closed during setup`, 'ECONNRESET', this.protocol, to))
          return
        }
        this.addConnection(conn!)
        resolve(this.conns.get(conn!.id)!)
      }
      const abort = (): void => {
        cancelDial?.()
        finish(new TransportError(`${this.protocol}: transport stopped while connecting to ${hostPort(to.address, to.port)}`, 'ENOTRUNNING', this.protocol, to))
      }
      const timer = this.clock.setTimer(this.connectTimeoutMs, () => {
        cancelDial?.()
        finish(new TransportError(`${this.protocol}: connect to ${hostPort(to.address, to.port)} timed out after ${this.connectTimeoutMs} ms`, 'ETIMEDOUT', this.protocol, to))
      })
      this.pendingCancels.add(abort)
      this.dial(id, { ...to, address: stripBrackets(to.address) }, c => { cancelDial = c }).then(
        conn => {
          if (done) { conn.destroy(); return }
          finish(undefined, conn)
        },
        err => { finish(toTransportError(err, this.protocol, to, 'connect to')) }
      )
    })
    this.connecting.set(key, attempt)
    return await attempt
  }
}
