/**
 * SipStack: joins SipTransports to the RFC 3261 §17 transaction layer (RFC 6026 Accepted states),
 * applies RFC 3581 on receive, routes responses per §18.2.2 and adds the top Via on send.
 * Every timer comes from the injected Clock, every branch from the injected Rng.
 */
import { isIP } from 'node:net'
import {
  isReliable,
  type Clock, type Destination, type Logger, type Rng, type Source, type Startable, type SipTransport, type Timer,
  type TransportEvents, type TransportProtocol
} from '@sipring/interface'
import { createResponse, serialize, SipRequest, SipResponse, type SipMessage } from './message.js'
import { parseMessage, type ParserLimits } from './parser.js'
import { parseVia } from './headers.js'
import { parseUri, SipParseError } from './uri.js'
import { cancelTimer, DEFAULT_TIMERS, ownString, type TimerValues, type TransactionEnv } from './transaction/common.js'
import {
  ClientTransaction, InviteClientTransaction, NonInviteClientTransaction, type ClientState, type ClientTransactionUser
} from './transaction/client.js'
import {
  InviteServerTransaction, NonInviteServerTransaction, ServerTransaction
} from './transaction/server.js'
import { MAGIC_COOKIE, readCSeq, readTag, readTopVia, stampReceived, type TopVia } from './transaction/sipmsg.js'

/** Host name → addresses (A/AAAA). Injected; the default only knows IP literals and `localhost`. */
export type Resolver = (host: string) => Promise<string[]>

export interface StackLimits {
  /**
   * Maximum active transactions (server + client, not counting the compact Completed non-INVITE ones)
   * alive at once; beyond, new requests get 503 and new client requests a synthesized 503. Default 1,000,000.
   */
  maxTransactions?: number
  /**
   * Completed non-INVITE UDP transactions kept to answer retransmissions until Timer J (compact, about
   * 0.5 KiB each). Beyond, the oldest is dropped early (a late retransmission then reaches the TU again).
   * Default 2,000,000.
   */
  maxCompleted?: number
  /** Retry-After (seconds) put in the over-limit 503. Default 5. */
  retryAfter?: number
  /** INVITE server transactions still without a final after this many ms answer 408 (default 300,000; 0 = never). */
  maxInviteProceeding?: number
  /** Passed to `parseMessage`. */
  parser?: Partial<ParserLimits>
}

export interface SipStackInit {
  clock: Clock
  rng: Rng
  logger: Logger
  /** The stack starts and stops these. */
  transports: SipTransport[]
  limits?: StackLimits
  timers?: Partial<TimerValues>
  resolver?: Resolver
  /**
   * Host to advertise in Via when a transport listens on an unspecified address (0.0.0.0 / ::): one for
   * all, or per transport (return undefined to keep the bound address). Without it the Via carries the
   * bound address and the next hop relies on `rport`/`received`.
   */
  viaHost?: string | ((transport: SipTransport) => string | undefined)
  /** INVITE server transactions send `100 Trying` after this many ms without a provisional (default 200). */
  tryingDelay?: number
}

export interface SendRequestOptions {
  /** 101–199 responses (and 100 for INVITE). */
  onProvisional?: (res: SipResponse) => void
  /** Exactly once: the final response, or a synthesized 408 (Timer B/F) or 503 (transport error). */
  onFinal: (res: SipResponse) => void
  /**
   * INVITE: further 2xx received while the transaction is Accepted (RFC 6026). When absent they are
   * passed to `stack.onStrayResponse`, which a proxy forwards like any stray 2xx.
   */
  onAdditional2xx?: (res: SipResponse) => void
  /**
   * Branch to use for the Via (e.g. a proxy's §16.6 step 8 branch). Honoured when it starts with the
   * magic cookie, is a token and is not in use by a live client transaction; otherwise a fresh one is drawn.
   */
  branch?: string
}

/** Handle on a client transaction started by {@link SipStack.sendRequest}. */
export interface ClientContext {
  /** Branch of the Via the stack added. */
  readonly branch: string
  /**
   * The request as sent (with the stack's Via on top); once the final response was delivered, a copy
   * reduced to start line, Via, From, To, Call-ID and CSeq (`slimMessage`).
   */
  readonly request: SipRequest
  readonly state: ClientState
  /**
   * INVITE only (no-op otherwise): send a CANCEL per §9.1 — at once if a provisional arrived, else as soon
   * as one does; nothing once a final response arrived.
   */
  cancel: () => void
}

export interface StackStats {
  serverTransactions: number
  clientTransactions: number
  /** Compact Completed non-INVITE server transactions (UDP) waiting for Timer J. */
  completedTransactions: number
  received: number
  sent: number
  parseErrors: number
  rejectedOverLimit: number
}

/** Thrown by {@link resolveTarget} when a URI cannot be turned into a destination. */
export class ResolveError extends Error {
  constructor (message: string) { super(message); this.name = 'ResolveError' }
}

const PROTO_TOKEN: Record<TransportProtocol, string> = { udp: 'UDP', tcp: 'TCP', tls: 'TLS', ws: 'WS', wss: 'WSS' }
const TOKEN_PROTO: Record<string, TransportProtocol> = { UDP: 'udp', TCP: 'tcp', TLS: 'tls', WS: 'ws', WSS: 'wss' }

const BRANCH_RE = /^[A-Za-z0-9.!%*_+`'~-]+$/

function defaultPort (p: TransportProtocol): number { return p === 'tls' || p === 'wss' ? 5061 : 5060 }
function bracket (host: string): string { return host.includes(':') ? `[${host}]` : host }
function familyOf (address: string): 4 | 6 { return isIP(address) === 6 ? 6 : 4 }

interface Listeners {
  message: TransportEvents['message']
  close: TransportEvents['close']
  error: TransportEvents['error']
}

export class SipStack implements Startable {
  /** Every new request except ACK and CANCEL (the stack handles those). Default: 501. */
  onRequest: (req: SipRequest, tx: ServerTransaction) => void = (_req, tx) => { tx.reply(501, 'Not Implemented') }
  /** ACK matching no server transaction (the ACK for a 2xx), or an ACK in an Accepted INVITE transaction. */
  onAck: (ack: SipRequest, source: Source) => void = () => {}
  /** Response matching no client transaction (e.g. 2xx retransmissions for a proxy to forward). */
  onStrayResponse: (res: SipResponse, source: Source) => void = () => {}
  /** A stream connection closed (for RFC 5626 flow bookkeeping). */
  onConnectionClose: ((connectionId: string, transport: SipTransport) => void) | undefined = undefined

  readonly clock: Clock
  readonly rng: Rng
  readonly logger: Logger
  readonly transports: readonly SipTransport[]
  readonly timers: TimerValues
  private readonly env: TransactionEnv
  private readonly maxTransactions: number
  private readonly retryAfter: number
  private readonly parserLimits: Partial<ParserLimits> | undefined
  private readonly resolver: Resolver | undefined
  private readonly viaHost: string | ((transport: SipTransport) => string | undefined) | undefined
  private readonly tryingDelay: number
  private readonly maxInviteProceeding: number
  private readonly server = new Map<string, ServerTransaction>()
  private readonly client = new Map<string, ClientTransaction>()
  /**
   * Completed non-INVITE server transactions over UDP, kept compact (final response bytes + where to
   * send them) until Timer J: they expire in FIFO order, so one Clock timer serves them all.
   */
  private readonly completed = new Map<string, CompletedEntry>()
  private completedQueue: CompletedEntry[] = []
  private completedHead = 0
  private completedTimer: Timer | undefined
  private readonly maxCompleted: number
  private readonly listeners = new Map<SipTransport, Listeners>()
  private running = false
  private readonly counters = { received: 0, sent: 0, parseErrors: 0, rejectedOverLimit: 0 }

  constructor (init: SipStackInit) {
    this.clock = init.clock
    this.rng = init.rng
    this.logger = init.logger.child({ component: 'sip-stack' })
    this.transports = [...init.transports]
    this.timers = { ...DEFAULT_TIMERS, ...init.timers }
    for (const k of ['t1', 't2', 't4'] as const) {
      const v = this.timers[k]
      if (!Number.isFinite(v) || v <= 0) throw new RangeError(`timer ${k} must be a positive number of ms, got ${String(v)}`)
    }
    this.env = { clock: this.clock, timers: this.timers, logger: this.logger }
    this.maxTransactions = init.limits?.maxTransactions ?? 1_000_000
    this.maxCompleted = init.limits?.maxCompleted ?? 2_000_000
    this.retryAfter = init.limits?.retryAfter ?? 5
    this.parserLimits = init.limits?.parser
    this.resolver = init.resolver
    this.viaHost = init.viaHost
    this.tryingDelay = init.tryingDelay ?? 200
    this.maxInviteProceeding = init.limits?.maxInviteProceeding ?? 300_000
  }

  // ---------------------------------------------------------------- lifecycle

  async start (): Promise<void> {
    if (this.running) return
    for (const t of this.transports) {
      if (this.listeners.has(t)) continue
      const l: Listeners = {
        message: (data, source) => { this.receive(data, source, t) },
        close: (id) => {
          try { this.onConnectionClose?.(id, t) } catch (err) { this.logger.error({ err }, 'onConnectionClose threw') }
        },
        error: (err) => { this.logger.warn({ err: err.message, protocol: t.protocol }, 'transport error') }
      }
      t.on('message', l.message)
      t.on('close', l.close)
      t.on('error', l.error)
      this.listeners.set(t, l)
    }
    try {
      await Promise.all(this.transports.map(t => t.start()))
    } catch (err) {
      await this.stop().catch(() => {}) // detach and stop the ones that did start
      throw err
    }
    this.running = true
  }

  async stop (): Promise<void> {
    for (const tx of this.server.values()) tx.dispose()
    for (const tx of this.client.values()) tx.dispose()
    this.server.clear()
    this.client.clear()
    this.completed.clear()
    this.completedQueue = []
    this.completedHead = 0
    this.completedTimer = cancelTimer(this.completedTimer)
    for (const [t, l] of this.listeners) {
      t.off('message', l.message)
      t.off('close', l.close)
      t.off('error', l.error)
    }
    this.listeners.clear()
    this.running = false
    await Promise.all(this.transports.map(t => t.stop()))
  }

  stats (): StackStats {
    return {
      serverTransactions: this.server.size,
      clientTransactions: this.client.size,
      completedTransactions: this.completed.size,
      ...this.counters
    }
  }

  /** Every transaction still held (active server + client + compact Completed ones): 0 when idle. */
  get transactionCount (): number { return this.server.size + this.client.size + this.completed.size }

  private get activeCount (): number { return this.server.size + this.client.size }

  // ---------------------------------------------------------------- addressing

  /**
   * The transport to use for `protocol` towards an address of `family` (4 or 6): the first one whose
   * protocol and local address family match, else the first one of that protocol.
   */
  localFor (protocol: TransportProtocol, family: 4 | 6): SipTransport | undefined {
    let fallback: SipTransport | undefined
    for (const t of this.transports) {
      if (t.protocol !== protocol) continue
      if (familyOf(t.local.address) === family) return t
      fallback ??= t
    }
    return fallback
  }

  /** The transport a message to `dest` leaves through (the connection's owner when pinned to one). */
  transportFor (dest: Destination): SipTransport | undefined {
    if (dest.connectionId !== undefined) {
      for (const t of this.transports) {
        if (t.protocol === dest.protocol && t.hasConnection(dest.connectionId)) return t
      }
    }
    return this.localFor(dest.protocol, familyOf(dest.address))
  }

  /** A fresh RFC 3261 branch: magic cookie + 16 random characters. */
  newBranch (): string { return MAGIC_COOKIE + this.rng.token(16) }

  /**
   * The Via value the stack would add for a request to `dest`:
   * `SIP/2.0/<TRANSPORT> <host>:<port>;branch=z9hG4bK…;rport`. Throws when no transport fits.
   */
  viaFor (dest: Destination, branch?: string): string {
    const t = this.transportFor(dest)
    if (t === undefined) throw new ResolveError(`no ${dest.protocol} transport for ${dest.address}`)
    return this.viaOf(t, branch ?? this.newBranch())
  }

  private viaOf (t: SipTransport, branch: string): string {
    let host = t.local.address
    if (this.viaHost !== undefined && (host === '0.0.0.0' || host === '::')) {
      host = (typeof this.viaHost === 'string' ? this.viaHost : this.viaHost(t)) ?? host
    }
    return `SIP/2.0/${PROTO_TOKEN[t.protocol]} ${bracket(host)}:${t.local.port};branch=${branch};rport`
  }

  /** {@link resolveTarget} with the stack's resolver. */
  resolveTarget (uri: string): Promise<Destination> {
    return resolveTarget(uri, this.resolver !== undefined ? { resolver: this.resolver } : {})
  }

  // ---------------------------------------------------------------- sending

  /**
   * Start a client transaction: prepends the stack's Via (and Max-Forwards: 70 when absent) to `req`
   * (mutated in place), sends it once serialized and drives retransmissions. `onFinal` fires exactly once.
   * ACK cannot be sent this way (use {@link sendStateless}).
   */
  sendRequest (req: SipRequest, dest: Destination, opts: SendRequestOptions): ClientContext {
    if (req.method === 'ACK') throw new TypeError('ACK is not sent in a client transaction; use sendStateless')
    const cseq = readCSeq(req)
    const method = cseq?.method ?? req.method
    const hint = opts.branch
    const branch = hint !== undefined && hint.startsWith(MAGIC_COOKIE) && hint.length <= 128 && BRANCH_RE.test(hint) &&
      !this.client.has(hint + '\0' + method)
      ? hint
      : this.newBranch()
    const ctx = new Context(this, req, branch, opts)
    const t = this.transportFor(dest)
    if (t === undefined) {
      this.logger.warn({ dest }, 'no transport for destination')
      ctx.failLater(createResponse(req, 503, 'No Transport For Destination'))
      return ctx
    }
    req.prepend('via', this.viaOf(t, branch))
    if (!req.has('max-forwards')) req.append('max-forwards', '70')
    if (this.activeCount >= this.maxTransactions) {
      this.counters.rejectedOverLimit++
      ctx.failLater(createResponse(req, 503, 'Too Many Transactions'))
      return ctx
    }
    const reliable = isReliable(t.protocol)
    const tx = req.method === 'INVITE'
      ? new InviteClientTransaction({ env: this.env, request: req, branch, reliable, send: data => { this.transmit(t, data, dest, tx) }, user: ctx, onTerminated: this.removeClient })
      : new NonInviteClientTransaction({ env: this.env, request: req, branch, reliable, send: data => { this.transmit(t, data, dest, tx) }, user: ctx, onTerminated: this.removeClient })
    tx.key = branch + '\0' + method
    ctx.tx = tx
    ctx.dest = dest
    this.client.set(tx.key, tx)
    tx.start()
    return ctx
  }

  /** @internal CANCEL for an INVITE client transaction (§9.1): same branch, Route copied, own transaction. */
  sendCancel (invite: InviteClientTransaction, dest: Destination): void {
    const req = invite.request
    const cancel = new SipRequest('CANCEL', req.uri)
    let seq = ''
    for (const h of req.headers) {
      switch (h.name) {
        case 'via': if (!cancel.has('via')) cancel.headers.push({ name: 'via', value: firstValue(h.value) }); break
        case 'from': case 'to': case 'call-id': case 'route':
          cancel.headers.push({ name: h.name, value: h.value }); break
        case 'cseq': seq = h.value.trim().split(/\s+/)[0] ?? ''; break
        default: break
      }
    }
    cancel.headers.push({ name: 'cseq', value: `${seq} CANCEL` }, { name: 'max-forwards', value: '70' })
    const t = this.transportFor(dest)
    if (t === undefined) return
    const key = invite.branch + '\0CANCEL'
    if (this.client.has(key)) return
    const user: ClientTransactionUser = { onFinal: (res) => { this.logger.debug({ status: res.status }, 'CANCEL answered') } }
    const tx: NonInviteClientTransaction = new NonInviteClientTransaction({
      env: this.env, request: cancel, branch: invite.branch, reliable: isReliable(t.protocol),
      send: data => { this.transmit(t, data, dest, tx) }, user, onTerminated: this.removeClient
    })
    tx.key = key
    this.client.set(key, tx)
    tx.start()
    invite.cancelSent()
  }

  /**
   * Send a message outside any transaction (ACK for 2xx, stateless forwarding, responses forwarded by a
   * proxy). Sent as is: a request gets no Via here (see {@link viaFor}). Resolves false on failure.
   */
  async sendStateless (msg: SipMessage, dest: Destination): Promise<boolean> {
    const t = this.transportFor(dest)
    if (t === undefined) {
      this.logger.warn({ dest }, 'sendStateless: no transport for destination')
      return false
    }
    try {
      this.counters.sent++
      await t.send(serialize(msg), dest)
      return true
    } catch (err) {
      this.logger.debug({ err: (err as Error).message, dest }, 'sendStateless failed')
      return false
    }
  }

  private transmit (t: SipTransport, data: Buffer, dest: Destination, tx: ClientTransaction | ServerTransaction): void {
    this.counters.sent++
    let p: Promise<void>
    try {
      p = t.send(data, dest)
    } catch (err) {
      tx.transportError(err as Error)
      return
    }
    p.then(undefined, (err: Error) => {
      try { tx.transportError(err) } catch (e) { this.logger.error({ err: e }, 'transportError handler threw') }
    })
  }

  private readonly removeClient = (tx: ClientTransaction): void => {
    if (this.client.get(tx.key) === tx) this.client.delete(tx.key)
  }

  private readonly removeServer = (tx: ServerTransaction): void => {
    if (this.server.get(tx.key) === tx) this.server.delete(tx.key)
  }

  private readonly acceptedAck = (ack: SipRequest, source: Source): void => {
    try { this.onAck(ack, source) } catch (err) { this.logger.error({ err }, 'onAck threw') }
  }

  // ---------------------------------------------------------------- receiving

  /** Entry point for one framed message from a transport (public for tests and custom transports). */
  receive (data: Buffer, source: Source, transport: SipTransport): void {
    this.counters.received++
    let msg: SipRequest | SipResponse
    try {
      msg = parseMessage(data, this.parserLimits)
    } catch (err) {
      this.counters.parseErrors++
      if (err instanceof SipParseError) this.answerParseError(err, data, source, transport)
      else this.logger.warn({ err: (err as Error).message, from: source.address }, 'unparseable message dropped')
      return
    }
    try {
      if (msg instanceof SipRequest) this.receiveRequest(msg, source, transport)
      else this.receiveResponse(msg, source)
    } catch (err) {
      this.logger.error({ err: (err as Error).message, stack: (err as Error).stack }, 'error while handling a message')
    }
  }

  private answerParseError (err: SipParseError, data: Buffer, source: Source, transport: SipTransport): void {
    let p = err.partial
    if (p === undefined && (err.status === 413 || err.status === 414 || err.reason.includes('too long') || err.reason.includes('Too many'))) {
      // a limit tripped before any header was kept: re-read the headers without limits (error path only)
      // so that the 413/414/400 can still be routed back
      try {
        p = parseMessage(data, { maxMessageSize: data.length, maxLineLength: data.length, maxHeaders: data.length })
      } catch (e) {
        if (e instanceof SipParseError) p = e.partial
      }
    }
    const looksLikeRequest = p !== undefined ? p.isRequest : data.subarray(0, 8).toString('latin1') !== 'SIP/2.0 '
    if (p === undefined || !looksLikeRequest) {
      this.logger.debug({ status: err.status, reason: err.reason, from: source.address }, 'malformed message dropped')
      return
    }
    const via = readTopVia(p)
    const cseq = readCSeq(p)
    if (via === undefined || cseq === undefined || !p.has('from') || !p.has('to') || !p.has('call-id') || cseq.method === 'ACK') {
      this.logger.debug({ status: err.status, reason: err.reason, from: source.address }, 'malformed request dropped (cannot answer)')
      return
    }
    // the Via set of a broken request may itself be broken: the top Via must parse strictly, and any
    // further Via that does not parse makes the answer carry the top one only
    const vias = p.getAll('via')
    let viasOk = true
    for (let i = 0; i < vias.length; i++) {
      try { parseVia(vias[i]!) } catch {
        if (i === 0) {
          this.logger.debug({ status: err.status, reason: err.reason, from: source.address }, 'malformed request dropped (bad Via)')
          return
        }
        viasOk = false
      }
    }
    if (!viasOk) {
      p.remove('via')
      p.headers.unshift({ name: 'via', value: vias[0]! })
      via.line = 0
      via.valueEnd = vias[0]!.length
    }
    stampReceived(p, via, source.address, source.port)
    const res = new SipResponse(err.status, err.reason)
    for (const h of p.headers) {
      if (h.name === 'via' || h.name === 'from' || h.name === 'to' || h.name === 'call-id' || h.name === 'cseq') res.headers.push({ name: h.name, value: h.value })
    }
    this.logger.debug({ status: err.status, reason: err.reason, from: source.address }, 'malformed request answered')
    this.replyStateless(res, via, source, transport)
  }

  private replyStateless (res: SipResponse, via: TopVia, source: Source, transport: SipTransport): void {
    const dest = responseDestination(via, source)
    this.counters.sent++
    try {
      transport.send(serialize(res), dest).then(undefined, (e: Error) => {
        this.logger.debug({ err: e.message, dest }, 'stateless response not sent')
      })
    } catch (e) {
      this.logger.debug({ err: (e as Error).message, dest }, 'stateless response not sent')
    }
  }

  private receiveRequest (req: SipRequest, source: Source, transport: SipTransport): void {
    const via = readTopVia(req)
    if (via === undefined) {
      this.logger.debug({ from: source.address, method: req.method }, 'request without a readable Via dropped')
      return
    }
    const cseq = readCSeq(req)
    const callId = req.get('call-id')
    const from = req.get('from')
    let bad: string | undefined
    if (cseq === undefined) bad = 'Bad CSeq'
    else if (cseq.method !== req.method) bad = 'CSeq Method Mismatch'
    else if (callId === undefined) bad = 'Missing Call-ID'
    else if (from === undefined) bad = 'Missing From'
    else if (!req.has('to')) bad = 'Missing To'
    const method = req.method
    if (bad !== undefined) {
      if (method === 'ACK') return
      stampReceived(req, via, source.address, source.port)
      this.replyStateless(createResponse(req, 400, bad), via, source, transport)
      return
    }
    // transaction keys are computed on the Via as received (before received/rport are added)
    const branch = via.branch
    let base: string
    if (branch !== undefined && branch.startsWith(MAGIC_COOKIE)) {
      base = branch + '\0' + via.sentBy + '\0'
    } else {
      // RFC 2543 fallback (§17.2.3): Request-URI, From tag, Call-ID, CSeq number, top Via
      const rawVia = req.headers[via.line]!.value.slice(0, via.valueEnd).trim()
      base = '2543\0' + req.uri + '\0' + (readTag(from) ?? '') + '\0' + callId! + '\0' + String(cseq!.seq) + '\0' + rawVia + '\0'
    }
    stampReceived(req, via, source.address, source.port)

    if (method === 'ACK') {
      const tx = this.server.get(base + 'INVITE')
      if (tx instanceof InviteServerTransaction && tx.state !== 'accepted') {
        tx.receiveAck(req) // ACK for a non-2xx final: absorbed
        return
      }
      // no transaction, or RFC 6026 Accepted (a 2xx ACK reusing the INVITE branch): pass up
      try { this.onAck(req, source) } catch (err) { this.logger.error({ err }, 'onAck threw') }
      return
    }

    const key = base + method
    const existing = this.server.get(key)
    if (existing !== undefined) {
      existing.receiveRequest(req)
      return
    }
    const done = this.completed.get(key)
    if (done !== undefined) { // retransmission of a completed non-INVITE request: the final again
      this.counters.sent++
      done.transport.send(done.wire, done.dest).then(undefined, this.logResendError)
      return
    }

    if (method === 'CANCEL') {
      const tx = this.createServer(req, source, transport, via, key)
      const invite = this.server.get(base + 'INVITE')
      if (!(invite instanceof InviteServerTransaction)) {
        tx.reply(481, 'Call/Transaction Does Not Exist')
        return
      }
      const ok = createResponse(req, 200, 'OK')
      const toTag = readTag(invite.lastResponse?.get('to'))
      if (toTag !== undefined && readTag(ok.get('to')) === undefined) ok.set('to', `${ok.get('to')!};tag=${toTag}`)
      tx.respond(ok)
      if (invite.state === 'proceeding') {
        try {
          if (invite.onCancel !== undefined) invite.onCancel(req)
          else invite.reply(487, 'Request Terminated', toTag ?? this.rng.token(10)) // no TU handler: §9.2 default
        } catch (err) { this.logger.error({ err }, 'onCancel threw') }
      }
      return
    }

    if (this.activeCount >= this.maxTransactions) {
      this.counters.rejectedOverLimit++
      const res = createResponse(req, 503, 'Too Many Transactions')
      res.append('retry-after', String(this.retryAfter))
      this.replyStateless(res, via, source, transport)
      return
    }
    const tx = this.createServer(req, source, transport, via, key)
    try {
      this.onRequest(req, tx)
    } catch (err) {
      this.logger.error({ err: (err as Error).message, method }, 'onRequest threw')
      if (!tx.isFinal && tx.state !== 'terminated') {
        try { tx.reply(500, 'Server Internal Error') } catch { /* already answered */ }
      }
    }
  }

  private createServer (req: SipRequest, source: Source, transport: SipTransport, via: TopVia, key: string): ServerTransaction {
    // an INVITE transaction lives on for 32 s after its 2xx (Timer L): its key (also captured by the
    // closures below) must not pin the received text through slices of it
    if (req.method === 'INVITE') key = ownString(key)
    const dest = responseDestination(via, source)
    const reliable = isReliable(source.protocol)
    const send = (data: Buffer): void => { this.transmit(transport, data, dest, tx) }
    const tx: ServerTransaction = req.method === 'INVITE'
      ? new InviteServerTransaction({ env: this.env, request: req, source, reliable, send, onTerminated: this.removeServer, tryingDelay: this.tryingDelay, onAcceptedAck: this.acceptedAck, maxProceeding: this.maxInviteProceeding })
      : new NonInviteServerTransaction({
        env: this.env, request: req, source, reliable, send, onTerminated: this.removeServer,
        handOffCompleted: (_tx, wire) => { this.keepCompleted(key, wire, dest, transport); return true }
      })
    tx.key = key
    this.server.set(key, tx)
    return tx
  }

  private readonly logResendError = (e: Error): void => {
    this.logger.debug({ err: e.message }, 'retransmission of a final response not sent')
  }

  private keepCompleted (key: string, wire: Buffer, dest: Destination, transport: SipTransport): void {
    // flatten the key and copy the address: both may be built from slices of the whole received head,
    // which would otherwise stay in memory until Timer J
    const flatKey = flatten(key)
    const e: CompletedEntry = {
      key: flatKey,
      wire,
      dest: { protocol: dest.protocol, address: flatten(dest.address), port: dest.port },
      transport,
      at: this.clock.now() + 64 * this.timers.t1
    }
    this.completed.set(flatKey, e)
    this.completedQueue.push(e)
    if (this.completed.size > this.maxCompleted) this.expireCompleted(true)
    this.completedTimer ??= this.clock.setTimer(64 * this.timers.t1, this.fireCompleted)
  }

  private readonly fireCompleted = (): void => {
    this.completedTimer = undefined
    this.expireCompleted(false)
  }

  /** Drop the entries whose Timer J is due (or, with `one`, the oldest one); re-arm the shared timer. */
  private expireCompleted (one: boolean): void {
    const q = this.completedQueue
    const now = this.clock.now()
    while (this.completedHead < q.length) {
      const e = q[this.completedHead]!
      if (!one && e.at > now) break
      q[this.completedHead++] = undefined as unknown as CompletedEntry
      if (this.completed.get(e.key) === e) this.completed.delete(e.key)
      if (one) break
    }
    if (this.completedHead > 1024 && this.completedHead * 2 > q.length) {
      this.completedQueue = q.slice(this.completedHead)
      this.completedHead = 0
    }
    if (one) return
    if (this.completedHead < this.completedQueue.length) {
      this.completedTimer = this.clock.setTimer(this.completedQueue[this.completedHead]!.at - now, this.fireCompleted)
    } else {
      this.completedQueue = []
      this.completedHead = 0
    }
  }

  private receiveResponse (res: SipResponse, source: Source): void {
    const via = readTopVia(res)
    const cseq = readCSeq(res)
    if (via !== undefined && via.branch !== undefined && cseq !== undefined) {
      const tx = this.client.get(via.branch + '\0' + cseq.method)
      if (tx !== undefined) {
        if (tx instanceof InviteClientTransaction && tx.state === 'accepted' && res.status >= 200 && res.status < 300) {
          const u = tx.user
          if (u instanceof Context && u.opts.onAdditional2xx === undefined) {
            this.stray(res, source)
            return
          }
        }
        tx.receiveResponse(res)
        return
      }
    }
    this.stray(res, source)
  }

  private stray (res: SipResponse, source: Source): void {
    try { this.onStrayResponse(res, source) } catch (err) { this.logger.error({ err }, 'onStrayResponse threw') }
  }
}

/** A Completed non-INVITE server transaction over UDP, reduced to what a retransmission needs. */
interface CompletedEntry {
  key: string
  wire: Buffer
  dest: Destination
  transport: SipTransport
  /** When Timer J fires (ms, clock time). */
  at: number
}

/** The client-side context: the transaction user of one client transaction; isolates user callbacks. */
class Context implements ClientContext, ClientTransactionUser {
  tx: ClientTransaction | undefined
  dest: Destination | undefined
  private cancelPending = false
  private done = false

  constructor (private readonly stack: SipStack, public request: SipRequest, readonly branch: string, readonly opts: SendRequestOptions) {}

  get state (): ClientState { return this.tx?.state ?? 'terminated' }

  cancel (): void {
    const tx = this.tx
    if (!(tx instanceof InviteClientTransaction) || this.done) return
    if (tx.state === 'proceeding') this.stack.sendCancel(tx, this.dest!)
    else if (tx.state === 'calling') this.cancelPending = true
  }

  /** Deliver a synthesized final without a transaction (no transport, over limit). */
  failLater (res: SipResponse): void {
    queueMicrotask(() => { this.onFinal(res) })
  }

  onProvisional (res: SipResponse): void {
    if (this.cancelPending && this.tx instanceof InviteClientTransaction) {
      this.cancelPending = false
      this.stack.sendCancel(this.tx, this.dest!)
    }
    const f = this.opts.onProvisional
    if (f === undefined) return
    try { f(res) } catch (err) { this.stack.logger.error({ err }, 'onProvisional threw') }
  }

  onFinal (res: SipResponse): void {
    if (this.done) return
    this.done = true
    this.cancelPending = false
    // the transaction reduced its request (see ClientTransaction.request): do not keep the full one here
    if (this.tx !== undefined) this.request = this.tx.request
    try { this.opts.onFinal(res) } catch (err) { this.stack.logger.error({ err }, 'onFinal threw') }
  }

  onAdditional2xx (res: SipResponse): void {
    const f = this.opts.onAdditional2xx
    if (f === undefined) return
    try { f(res) } catch (err) { this.stack.logger.error({ err }, 'onAdditional2xx threw') }
  }
}

/** RFC 3261 §18.2.2 (+ RFC 3581): where a response to a request with this (stamped) top Via goes. */
export function responseDestination (via: TopVia, source: Source): Destination {
  const protocol = source.protocol
  const address = via.received ?? via.host
  if (isReliable(protocol)) {
    const dest: Destination = { protocol, address, port: via.port ?? defaultPort(protocol) }
    if (source.connectionId !== undefined) dest.connectionId = source.connectionId
    return dest
  }
  return { protocol, address, port: via.rport ?? via.port ?? 5060 }
}

/** A copy of `s` that keeps no cons/sliced parent (the whole received head) alive. */
function flatten (s: string): string {
  return ownString(s)
}

function firstValue (v: string): string {
  const i = v.indexOf(',')
  return (i < 0 ? v : v.slice(0, i)).trim()
}

export interface ResolveOptions {
  /** Host name → addresses. Without one only IP literals and `localhost` resolve. */
  resolver?: Resolver
}

/**
 * RFC 3263 subset: `sip:`/`sips:` URI (or `<uri>` name-addr) → Destination. `maddr` overrides the host,
 * `transport` picks the protocol (default UDP, TLS for sips; `sips` + `transport=ws` → WSS), the port
 * defaults to 5060 (5061 for TLS/WSS). IP literals are used directly, `localhost` is 127.0.0.1 and
 * other names go through `resolver`. Throws {@link ResolveError} (or SipParseError for a bad URI).
 */
export async function resolveTarget (uri: string, opts: ResolveOptions = {}): Promise<Destination> {
  let s = uri.trim()
  const lt = s.indexOf('<')
  if (lt >= 0) {
    const gt = s.indexOf('>', lt)
    if (gt < 0) throw new ResolveError(`unterminated <uri> in ${uri}`)
    s = s.slice(lt + 1, gt)
  }
  if (/^tel:/i.test(s)) throw new ResolveError('a tel: URI has no host to route to')
  const u = parseUri(s)
  if (u.scheme === 'tel') throw new ResolveError('a tel: URI has no host to route to')
  const tp = u.params.get('transport')?.toLowerCase()
  let protocol: TransportProtocol
  if (tp === undefined || tp === null) protocol = u.scheme === 'sips' ? 'tls' : 'udp'
  else if (tp in TOKEN_PROTO || tp.toUpperCase() in TOKEN_PROTO) protocol = TOKEN_PROTO[tp.toUpperCase()]!
  else throw new ResolveError(`unsupported transport ${tp}`)
  if (u.scheme === 'sips') {
    if (protocol === 'udp' || protocol === 'tcp') protocol = 'tls'
    else if (protocol === 'ws') protocol = 'wss'
  }
  const maddr = u.params.get('maddr')
  let host = (maddr !== undefined && maddr !== null && maddr !== '' ? maddr : u.host).toLowerCase()
  if (host.charCodeAt(0) === 91) host = host.slice(1, -1)
  const port = u.port ?? defaultPort(protocol)
  if (isIP(host) !== 0) return { protocol, address: host, port }
  if (host === 'localhost') return { protocol, address: '127.0.0.1', port }
  if (opts.resolver === undefined) throw new ResolveError(`cannot resolve ${host}: no resolver`)
  let addrs: string[]
  try {
    addrs = await opts.resolver(host)
  } catch (err) {
    throw new ResolveError(`cannot resolve ${host}: ${(err as Error).message}`)
  }
  const address = addrs.find(a => isIP(a) !== 0)
  if (address === undefined) throw new ResolveError(`cannot resolve ${host}: no address`)
  return { protocol, address, port }
}
