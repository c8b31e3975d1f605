/**
 * @sipring/interface — types and ports only. No runtime behaviour beyond tiny helpers.
 *
 * Every component receives its Clock, Rng and Logger through these ports so that the same
 * code runs under the real system (daemon) and under the deterministic simulator (testkit).
 */

// ---------------------------------------------------------------- time

/** A cancellable timer returned by {@link Clock.setTimer}. */
export interface Timer {
  /** Cancel the timer; calling it twice or after it fired is a no-op. */
  cancel(): void
}

export interface Clock {
  /** Current time in milliseconds since the Unix epoch (simulated under SimClock). */
  now(): number
  /** Run `fn` once after `ms` milliseconds. */
  setTimer(ms: number, fn: () => void): Timer
}

// ---------------------------------------------------------------- randomness

export interface Rng {
  /** Uniform float in [0, 1). */
  next(): number
  /** Uniform integer in [0, n). */
  int(n: number): number
  /** `n` random bytes. */
  bytes(n: number): Uint8Array
  /** Random lowercase hex/alnum token of `len` characters (for branches, tags, Call-IDs, nonces). */
  token(len: number): string
  /** An independent child stream, deterministically derived from this one and `label`. */
  fork(label: string): Rng
}

// ---------------------------------------------------------------- logging (pino-compatible subset)

export interface LogFn {
  (msg: string): void
  (obj: Record<string, unknown>, msg?: string): void
}

export interface Logger {
  trace: LogFn
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
  child(bindings: Record<string, unknown>): Logger
}

const noop: LogFn = (() => {}) as LogFn
/** A logger that discards everything. */
export const silentLogger: Logger = {
  trace: noop, debug: noop, info: noop, warn: noop, error: noop,
  child () { return silentLogger }
}

// ---------------------------------------------------------------- lifecycle

export interface Startable {
  start(): Promise<void>
  /** Stop cleanly: flush what must be persisted, close sockets, cancel timers. */
  stop(): Promise<void>
}

export interface AbortOptions {
  signal?: AbortSignal
}

// ---------------------------------------------------------------- transports

export type TransportProtocol = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss'

/** Is this transport reliable (stream based)? UDP is the only unreliable one. */
export function isReliable (p: TransportProtocol): boolean {
  return p !== 'udp'
}

/** A network endpoint as seen by a SIP transport. `address` never carries IPv6 brackets. */
export interface Endpoint {
  protocol: TransportProtocol
  address: string
  port: number
}

/**
 * Where a message came from. For connection-oriented transports `connectionId` names the
 * connection so that responses and later requests (RFC 5626 flows) can go back over it.
 */
export interface Source extends Endpoint {
  connectionId?: string
  /** The local endpoint that received the message (which listening socket). */
  local: Endpoint
}

/** Outbound target: an endpoint, optionally pinned to an existing connection (a flow). */
export interface Destination extends Endpoint {
  connectionId?: string
}

export interface TransportEvents {
  /** A complete SIP message (already framed for streams). */
  message: (data: Buffer, source: Source) => void
  /** A connection closed (streams only). */
  close: (connectionId: string) => void
  /** A CRLF keep-alive ping arrived on a stream connection (RFC 5626 §3.5.1). */
  keepalive: (connectionId: string) => void
  error: (err: Error) => void
}

/**
 * One listening transport (one protocol on one local address/port). Implementations live in
 * @sipring/sip (UDP, TCP, TLS, WS/WSS) and in @sipring/testkit (SimNetwork).
 */
export interface SipTransport extends Startable {
  readonly protocol: TransportProtocol
  /** Bound local endpoint (valid after start; port resolved when 0 was asked). */
  readonly local: Endpoint
  /**
   * Send one serialized SIP message. For streams: reuse `connectionId` if given and still open,
   * otherwise reuse an open connection to the endpoint, otherwise connect. Rejects when the
   * destination cannot be reached (the transaction layer turns that into a 503 / transport error).
   */
  send(data: Buffer, to: Destination): Promise<void>
  on<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void
  off<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void
  /** Is this connection still open? (always false for UDP) */
  hasConnection(connectionId: string): boolean
}

// ---------------------------------------------------------------- location service ("usrloc")

/**
 * One AOR → contact binding (RFC 3261 §10.3), with the RFC 3327 Path and RFC 5626 outbound
 * data needed to reach the contact again.
 */
export interface Binding {
  /** Normalized address-of-record, e.g. `sip:alice@example.org` (no params, lowercase host). */
  aor: string
  /** Contact URI exactly as registered (without the surrounding name-addr). */
  contact: string
  /** Full Contact header value as received (name-addr with params), for the 200 OK echo. */
  contactHeader?: string
  /** Absolute expiry, ms since epoch. */
  expires: number
  /** q-value in [0, 1] (default 1). */
  q: number
  callId: string
  cseq: number
  /** Path header values (RFC 3327), in order, as received. */
  path: string[]
  /** RFC 5626: +sip.instance value (e.g. `"<urn:uuid:...>"`) and reg-id. */
  instance?: string
  regId?: number
  /**
   * Where the REGISTER came from (transport, source address/port after rport/received and the
   * connection that carried it). Requests for this contact go back here when the contact itself is
   * not reachable (NAT) or when an outbound flow exists.
   */
  received?: Destination
  /** Id of the super node holding the client's connection/flow (its attachment node). */
  node?: string
  userAgent?: string
  /** ms since epoch when this binding was last written. */
  updated: number
}
