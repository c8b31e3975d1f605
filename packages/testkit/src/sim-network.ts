import type {
  Clock, Destination, Endpoint, Rng, SipTransport, Source, TransportEvents, TransportProtocol
} from '@sipring/interface'
import { isReliable } from '@sipring/interface'

export interface LinkProfile {
  /** One-way latency in ms. */
  latencyMs: number
  /** Uniform jitter added to the latency, in ms (reliable transports stay FIFO regardless). */
  jitterMs: number
  /** Loss probability for datagrams (reliable transports never lose, but a partition cuts them). */
  loss: number
}

export interface SimNetworkInit extends Partial<LinkProfile> {
  clock: Clock
  rng: Rng
}

export interface SimNetworkStats {
  sent: number
  delivered: number
  dropped: number
  bytes: number
}

interface Conn {
  id: string
  /** The two ends: a = initiator, b = acceptor. */
  a: SimTransport
  b: SimTransport
  /** Ephemeral endpoint of the initiator as seen by the acceptor. */
  aPort: number
  open: boolean
  /** Last scheduled delivery time per direction, to keep streams FIFO under jitter. */
  lastAB: number
  lastBA: number
}

const key = (protocol: TransportProtocol, address: string, port: number): string => `${protocol}|${address}|${port}`

/**
 * An in-memory IP network for SIP transports, driven by a Clock (SimClock in tests and simulations).
 * Datagrams can be lost; streams are FIFO connections with ids; links can be given their own profile,
 * and hosts can be partitioned. Everything random comes from the injected Rng, so a seed reproduces a run.
 */
export class SimNetwork {
  readonly clock: Clock
  private readonly rng: Rng
  private readonly defaults: LinkProfile
  private readonly links = new Map<string, LinkProfile>()
  private readonly bound = new Map<string, SimTransport>()
  private readonly conns = new Map<string, Conn>()
  private readonly blocked = new Set<string>()
  private nextConn = 1
  private nextEphemeral = 40000
  readonly stats: SimNetworkStats = { sent: 0, delivered: 0, dropped: 0, bytes: 0 }

  constructor (init: SimNetworkInit) {
    this.clock = init.clock
    this.rng = init.rng
    this.defaults = { latencyMs: init.latencyMs ?? 1, jitterMs: init.jitterMs ?? 0, loss: init.loss ?? 0 }
  }

  /** Create (not yet started) a transport bound to `address:port` for `protocol`. */
  transport (spec: { protocol: TransportProtocol, address: string, port: number }): SimTransport {
    return new SimTransport(this, spec.protocol, spec.address, spec.port)
  }

  /** Set the profile of the (symmetric) link between two host addresses. */
  setLink (a: string, b: string, profile: Partial<LinkProfile>): void {
    this.links.set(pairKey(a, b), { ...this.profileOf(a, b), ...profile })
  }

  /** Cut every path between the hosts of group `a` and group `b` (both directions). */
  partition (a: string[], b: string[]): void {
    for (const x of a) for (const y of b) this.blocked.add(pairKey(x, y))
  }

  /** Remove every partition. */
  heal (): void { this.blocked.clear() }

  isBlocked (a: string, b: string): boolean { return this.blocked.has(pairKey(a, b)) }

  /** Close a stream connection (both ends see `close`), e.g. to simulate a NAT dropping a flow. */
  closeConnection (connectionId: string): void {
    const c = this.conns.get(connectionId)
    if (c === undefined || !c.open) return
    c.open = false
    this.conns.delete(connectionId)
    c.a.emit('close', connectionId)
    c.b.emit('close', connectionId)
  }

  /** Open connection ids (for assertions). */
  connections (): string[] { return [...this.conns.keys()] }

  // ---------------------------------------------------------------- used by SimTransport

  /** @internal */
  bind (t: SimTransport): void {
    const k = key(t.protocol, t.local.address, t.local.port)
    if (this.bound.has(k)) throw Object.assign(new Error(`address in use: ${k}`), { code: 'EADDRINUSE' })
    this.bound.set(k, t)
  }

  /** @internal */
  unbind (t: SimTransport): void {
    const k = key(t.protocol, t.local.address, t.local.port)
    if (this.bound.get(k) === t) this.bound.delete(k)
    for (const c of [...this.conns.values()]) if (c.a === t || c.b === t) this.closeConnection(c.id)
  }

  /** @internal */
  ephemeralPort (): number {
    this.nextEphemeral = this.nextEphemeral >= 65000 ? 40000 : this.nextEphemeral + 1
    return this.nextEphemeral
  }

  /** @internal */
  conn (id: string): Conn | undefined { return this.conns.get(id) }

  /** @internal */
  async send (from: SimTransport, data: Buffer, to: Destination): Promise<void> {
    this.stats.sent++
    this.stats.bytes += data.length
    const copy = Buffer.from(data)
    if (!isReliable(from.protocol)) {
      const dst = this.bound.get(key(from.protocol, to.address, to.port))
      const profile = this.profileOf(from.local.address, to.address)
      if (dst === undefined || this.isBlocked(from.local.address, to.address) || (profile.loss > 0 && this.rng.next() < profile.loss)) {
        this.stats.dropped++
        return // datagrams vanish silently, as on a real network
      }
      const delay = profile.latencyMs + (profile.jitterMs > 0 ? this.rng.next() * profile.jitterMs : 0)
      const source: Source = { protocol: from.protocol, address: from.local.address, port: from.local.port, local: { ...dst.local } }
      this.clock.setTimer(delay, () => {
        if (!dst.running) { this.stats.dropped++; return }
        this.stats.delivered++
        dst.emit('message', copy, source)
      })
      return
    }
    // stream: pick or open a connection
    let c: Conn | undefined
    if (to.connectionId !== undefined) {
      const named = this.conns.get(to.connectionId)
      if (named !== undefined && named.open && (named.a === from || named.b === from)) c = named
    }
    if (c === undefined) {
      for (const x of this.conns.values()) {
        if (!x.open) continue
        if (x.a === from && x.b.local.address === to.address && x.b.local.port === to.port) { c = x; break }
        if (x.b === from && x.a.local.address === to.address && x.aPort === to.port) { c = x; break }
      }
    }
    if (c === undefined) {
      const dst = this.bound.get(key(from.protocol, to.address, to.port))
      if (dst === undefined || !dst.running || this.isBlocked(from.local.address, to.address)) {
        this.stats.dropped++
        throw Object.assign(new Error(`connect ECONNREFUSED ${to.address}:${to.port}`), { code: 'ECONNREFUSED' })
      }
      c = { id: `${from.protocol}:sim${this.nextConn++}`, a: from, b: dst, aPort: this.ephemeralPort(), open: true, lastAB: 0, lastBA: 0 }
      this.conns.set(c.id, c)
    }
    if (this.isBlocked(c.a.local.address, c.b.local.address)) {
      this.stats.dropped++
      throw Object.assign(new Error('connection timed out (partition)'), { code: 'ETIMEDOUT' })
    }
    const forward = c.a === from
    const dst = forward ? c.b : c.a
    const profile = this.profileOf(c.a.local.address, c.b.local.address)
    let at = this.clock.now() + profile.latencyMs + (profile.jitterMs > 0 ? this.rng.next() * profile.jitterMs : 0)
    if (forward) { at = Math.max(at, c.lastAB); c.lastAB = at } else { at = Math.max(at, c.lastBA); c.lastBA = at }
    const source: Source = forward
      ? { protocol: from.protocol, address: from.local.address, port: c.aPort, connectionId: c.id, local: { ...dst.local } }
      : { protocol: from.protocol, address: from.local.address, port: from.local.port, connectionId: c.id, local: { ...dst.local } }
    const conn = c
    this.clock.setTimer(at - this.clock.now(), () => {
      if (!conn.open) { this.stats.dropped++; return }
      this.stats.delivered++
      dst.emit('message', copy, source)
    })
  }

  private profileOf (a: string, b: string): LinkProfile {
    return this.links.get(pairKey(a, b)) ?? this.defaults
  }
}

function pairKey (a: string, b: string): string { return a < b ? `${a}#${b}` : `${b}#${a}` }

type Listeners = { [E in keyof TransportEvents]: Set<TransportEvents[E]> }

/** A `SipTransport` on a {@link SimNetwork}. */
export class SimTransport implements SipTransport {
  readonly protocol: TransportProtocol
  readonly local: Endpoint
  running = false
  private readonly listeners: Listeners = { message: new Set(), close: new Set(), keepalive: new Set(), error: new Set() }

  constructor (private readonly net: SimNetwork, protocol: TransportProtocol, address: string, port: number) {
    this.protocol = protocol
    this.local = { protocol, address, port: port === 0 ? net.ephemeralPort() : port }
  }

  async start (): Promise<void> {
    if (this.running) return
    this.net.bind(this)
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.net.unbind(this)
  }

  async send (data: Buffer, to: Destination): Promise<void> {
    if (!this.running) throw Object.assign(new Error('transport not started'), { code: 'ERR_NOT_RUNNING' })
    await this.net.send(this, data, to)
  }

  hasConnection (connectionId: string): boolean {
    const c = this.net.conn(connectionId)
    return c !== undefined && c.open && (c.a === this || c.b === this)
  }

  on<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void {
    (this.listeners[event] as Set<TransportEvents[E]>).add(listener)
  }

  off<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void {
    (this.listeners[event] as Set<TransportEvents[E]>).delete(listener)
  }

  /** @internal */
  emit<E extends keyof TransportEvents>(event: E, ...args: Parameters<TransportEvents[E]>): void {
    for (const l of this.listeners[event] as Set<(...a: Parameters<TransportEvents[E]>) => void>) l(...args)
  }
}
