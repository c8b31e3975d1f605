import { createSocket, type Socket, type RemoteInfo } from 'node:dgram'
import type { Clock, Destination, Endpoint, Logger, SipTransport } from '@sipring/interface'
import {
  DEFAULT_MAX_MESSAGE_SIZE, TransportError, TransportEventsBase, checkDestination, checkPort, familyOf,
  hostPort, stripBrackets, toTransportError
} from './util.js'
import { isStun, stunBindingResponse } from './stun.js'

export interface UdpTransportOptions {
  /** Local address to bind (`0.0.0.0`, `::`, `127.0.0.1`, `::1`, …). An IPv6 address binds `udp6` with ipv6Only. */
  address: string
  /** Local port; 0 → ephemeral (read it from `local.port` after start). */
  port: number
  clock: Clock
  logger: Logger
  /** Largest datagram accepted or sent (bytes). Default 65,535; larger datagrams are dropped and logged. */
  maxMessageSize?: number
  /** SO_RCVBUF / SO_SNDBUF in bytes (the kernel may cap it, see net.core.rmem_max). Default 4 MiB; 0 keeps the OS default. */
  socketBufferSize?: number
}

const DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024

/** SIP over UDP (RFC 3261 §18): one message per datagram. */
export class UdpTransport extends TransportEventsBase implements SipTransport {
  readonly protocol = 'udp' as const
  protected log: Logger
  private readonly opts: UdpTransportOptions
  private readonly maxMessageSize: number
  private socket: Socket | undefined
  private bound: Endpoint
  private starting: Promise<void> | undefined
  private stopping: Promise<void> | undefined
  /** The socket is bound (set once `starting` resolved, cleared by stop). */
  private listening = false
  /** Datagrams dropped because they were too large (for tests and stats). */
  dropped = 0
  /** STUN Binding requests answered (RFC 5626 UDP keep-alives). */
  stunAnswered = 0

  constructor (opts: UdpTransportOptions) {
    super()
    checkPort(opts.port)
    this.opts = opts
    this.maxMessageSize = opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE
    const address = stripBrackets(opts.address)
    this.bound = { protocol: 'udp', address, port: opts.port }
    this.log = opts.logger.child({ transport: 'udp', local: hostPort(address, opts.port) })
  }

  get local (): Endpoint { return this.bound }

  hasConnection (_connectionId: string): boolean { return false }

  async start (): Promise<void> {
    if (this.socket !== undefined) return await (this.starting ?? Promise.resolve())
    const family = familyOf(this.bound.address)
    const bufSize = this.opts.socketBufferSize ?? DEFAULT_SOCKET_BUFFER
    const socket = createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only: family === 6 })
    this.socket = socket
    this.starting = new Promise<void>((resolve, reject) => {
      const onClose = (): void => { reject(new TransportError('udp: stopped before listening', 'ENOTRUNNING', 'udp', this.bound)) }
      const onError = (err: Error): void => {
        socket.off('listening', onListening)
        socket.off('close', onClose)
        this.socket = undefined
        try { socket.close() } catch {}
        reject(toTransportError(err, 'udp', this.bound, 'bind'))
      }
      const onListening = (): void => {
        socket.off('error', onError)
        socket.off('close', onClose)
        const addr = socket.address()
        this.bound = { protocol: 'udp', address: this.bound.address, port: addr.port }
        this.log = this.opts.logger.child({ transport: 'udp', local: hostPort(this.bound.address, addr.port) })
        if (bufSize > 0) {
          try { socket.setRecvBufferSize(bufSize) } catch (err) { this.log.warn({ err }, 'cannot set UDP receive buffer size') }
          try { socket.setSendBufferSize(bufSize) } catch (err) { this.log.warn({ err }, 'cannot set UDP send buffer size') }
        }
        socket.on('error', err => { this.emitEvent('error', toTransportError(err, 'udp', this.bound, 'socket')) })
        socket.on('message', (msg, rinfo) => { this.onDatagram(msg, rinfo) })
        this.log.info({ port: addr.port }, 'UDP transport listening')
        this.listening = true
        resolve()
      }
      socket.once('error', onError)
      socket.once('listening', onListening)
      socket.once('close', onClose)
      socket.bind({ address: this.bound.address, port: this.bound.port, exclusive: true })
    })
    return await this.starting
  }

  private onDatagram (msg: Buffer, rinfo: RemoteInfo): void {
    if (msg.length > this.maxMessageSize) {
      this.dropped++
      this.log.warn({ from: hostPort(rinfo.address, rinfo.port), size: msg.length, max: this.maxMessageSize }, 'oversized UDP datagram dropped')
      return
    }
    if (isOnlyCrlf(msg)) return // keep-alive (or NAT binding refresh): nothing to answer on UDP
    if (msg[0]! < 4) { // STUN (RFC 5626 §4.4.2 keep-alive): answer Binding requests, never pass STUN up as SIP
      const res = stunBindingResponse(msg, rinfo.address, rinfo.port)
      if (res !== undefined) {
        this.stunAnswered++
        this.socket?.send(res, rinfo.port, rinfo.address, err => { if (err != null) this.log.debug({ err }, 'STUN response not sent') })
        return
      }
      if (isStun(msg)) return
    }
    this.emitEvent('message', msg, { protocol: 'udp', address: rinfo.address, port: rinfo.port, local: this.bound })
  }

  send (data: Buffer, to: Destination): Promise<void> {
    const socket = this.socket
    if (socket === undefined || this.starting === undefined) return Promise.reject(new TransportError('udp: transport not started', 'ENOTRUNNING', 'udp', to))
    // hot path (one call per SIP message sent): no async frame and no extra await once listening
    if (!this.listening) return this.starting.then(async () => { await this.send(data, to) })
    const bad = checkDestination('udp', this.bound, to)
    if (bad !== undefined) return Promise.reject(bad)
    if (data.length > this.maxMessageSize) {
      return Promise.reject(new TransportError(`udp: message of ${data.length} bytes exceeds maxMessageSize ${this.maxMessageSize}`, 'EMSGSIZE', 'udp', to))
    }
    return new Promise<void>((resolve, reject) => {
      try {
        socket.send(data, to.port, stripBrackets(to.address), err => {
          if (err == null) resolve()
          else reject(toTransportError(err, 'udp', to, 'send to'))
        })
      } catch (err) {
        reject(toTransportError(err, 'udp', to, 'send to'))
      }
    })
  }

  async stop (): Promise<void> {
    const socket = this.socket
    if (socket === undefined) return await (this.stopping ?? Promise.resolve())
    this.socket = undefined
    this.starting = undefined
    this.listening = false
    this.stopping = new Promise<void>(resolve => {
      try { socket.close(() => { resolve() }) } catch { resolve() }
    })
    await this.stopping
    this.log.info('UDP transport stopped')
  }
}

function isOnlyCrlf (b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]
    if (c !== 13 && c !== 10) return false
  }
  return true
}
