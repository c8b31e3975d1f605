import type { Clock, Endpoint, Logger, Rng, SipTransport, Source, Startable } from '@sipring/interface'
import { SipStack, createResponse, type SipRequest, type SipResponse, type ServerTransaction, type StackStats } from '@sipring/sip'
import { LocationStore, type LocationDb } from '@sipring/location'
import { createRegistrar, type Registrar } from '@sipring/registrar'
import { createProxy, type Proxy, type ProxyStats } from '@sipring/proxy'

export interface SuperNodeComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  /** Listening transports (not necessarily started: `start()` starts them through the stack). */
  transports: SipTransport[]
  /** Persistence for the location service (classic-level in the daemon, memory-level in tests). */
  db?: LocationDb
}

export interface SuperNodeInit {
  /** Domains served; empty or omitted = any. */
  domains?: string[]
  minExpires?: number
  maxExpires?: number
  defaultExpires?: number
  maxContactsPerAor?: number
  /** Node id (default: a random 16-character token from the injected Rng). */
  nodeId?: string
  /** Add Record-Route to dialog-creating requests (default true). */
  recordRoute?: boolean
  /** Host written in Via (and so Record-Route) for transports bound to 0.0.0.0 / ::. */
  viaHost?: string
  /** Extra host names / addresses that mean "this node" (public name, NAT address). */
  aliases?: string[]
}

export interface SuperNodeStatus {
  nodeId: string
  /** ms since epoch when start() completed; undefined before. */
  startedAt: number | undefined
  uptimeMs: number
  running: boolean
  listeners: Endpoint[]
  aors: number
  contacts: number
  transactions: number
  /** REGISTERs handled / registrar failures answered 500. */
  registers: number
  registrarErrors: number
  /** Transaction-layer counters (messages received/sent, parse errors…). */
  stack: StackStats
  /** Proxy counters. */
  proxy: ProxyStats
}

export interface SuperNode extends Startable {
  readonly nodeId: string
  readonly stack: SipStack
  readonly location: LocationStore
  readonly registrar: Registrar
  readonly proxy: Proxy
  status(): SuperNodeStatus
}

export const DEFAULTS = Object.freeze({
  minExpires: 60, maxExpires: 3600, defaultExpires: 3600, maxContactsPerAor: 10, recordRoute: true
})

class SuperNodeImpl implements SuperNode {
  readonly nodeId: string
  readonly stack: SipStack
  readonly location: LocationStore
  readonly registrar: Registrar
  readonly proxy: Proxy
  private readonly clock: Clock
  private readonly log: Logger
  private readonly transports: SipTransport[]
  private readonly tagRng: Rng
  private startedAt: number | undefined
  private running = false
  private registers = 0
  private registrarErrors = 0

  constructor (c: SuperNodeComponents, init: SuperNodeInit) {
    this.clock = c.clock
    this.nodeId = init.nodeId ?? c.rng.fork('node-id').token(16)
    this.log = c.logger.child({ node: this.nodeId })
    this.transports = c.transports
    this.tagRng = c.rng.fork('node-tags')
    const domains = init.domains ?? []
    const aliases = [...(init.aliases ?? []), ...(init.viaHost !== undefined ? [init.viaHost] : [])]
    this.stack = new SipStack({
      clock: c.clock,
      rng: c.rng.fork('stack'),
      logger: this.log,
      transports: c.transports,
      ...(init.viaHost !== undefined ? { viaHost: init.viaHost } : {})
    })
    this.location = new LocationStore({
      clock: c.clock,
      logger: this.log,
      ...(c.db !== undefined ? { db: c.db } : {}),
      limits: { maxContactsPerAor: init.maxContactsPerAor ?? DEFAULTS.maxContactsPerAor }
    })
    this.registrar = createRegistrar({
      location: this.location,
      clock: c.clock,
      logger: this.log,
      domains,
      minExpires: init.minExpires ?? DEFAULTS.minExpires,
      maxExpires: init.maxExpires ?? DEFAULTS.maxExpires,
      defaultExpires: init.defaultExpires ?? DEFAULTS.defaultExpires,
      nodeId: this.nodeId
    })
    this.proxy = createProxy({
      stack: this.stack,
      location: this.location,
      clock: c.clock,
      rng: c.rng.fork('proxy'),
      logger: c.logger, // the proxy adds { component, node } itself
      domains,
      recordRoute: init.recordRoute ?? DEFAULTS.recordRoute,
      aliases,
      nodeId: this.nodeId
    })
    this.stack.onRequest = (req, tx) => { this.onRequest(req, tx) }
    this.stack.onAck = (ack, source) => {
      this.proxy.handleAck(ack, source).catch((err: unknown) => {
        this.log.error({ err: errText(err), callId: ack.get('call-id') }, 'proxy failed on ACK')
      })
    }
    this.stack.onStrayResponse = (res, source) => {
      try {
        this.proxy.handleStrayResponse(res, source)
      } catch (err) {
        this.log.error({ err: errText(err), callId: res.get('call-id') }, 'proxy failed on a stray response')
      }
    }
  }

  private onRequest (req: SipRequest, tx: ServerTransaction): void {
    if (req.method === 'REGISTER') {
      void this.onRegister(req, tx)
      return
    }
    this.proxy.handleRequest(req, tx).catch((err: unknown) => {
      this.log.error({ err: errText(err), method: req.method, callId: req.get('call-id') }, 'proxy failed on a request')
      this.respond(tx, createResponse(req, 500, 'Server Internal Error', this.stackTag()))
    })
  }

  private async onRegister (req: SipRequest, tx: ServerTransaction): Promise<void> {
    this.registers++
    let res: SipResponse
    try {
      res = await this.registrar.handle(req, tx.source)
    } catch (err) {
      this.registrarErrors++
      this.log.error({ err: errText(err), callId: req.get('call-id'), to: req.get('to') }, 'registrar failed; answering 500')
      res = createResponse(req, 500, 'Server Internal Error (registrar)', this.stackTag())
    }
    this.respond(tx, res)
  }

  private respond (tx: ServerTransaction, res: SipResponse): void {
    try {
      tx.respond(res)
    } catch (err) {
      this.log.warn({ err: errText(err), status: res.status }, 'could not send a response')
    }
  }

  private stackTag (): string { return this.tagRng.token(10) }

  async start (): Promise<void> {
    if (this.running) return
    await this.location.start()
    try {
      await this.stack.start()
    } catch (err) {
      await this.location.stop().catch(() => {})
      throw err
    }
    this.running = true
    this.startedAt = this.clock.now()
    this.log.info({ listeners: this.listeners().map(fmt) }, 'super node started')
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    let first: unknown
    try { await this.stack.stop() } catch (err) { first = err; this.log.error({ err: errText(err) }, 'stack stop failed') }
    try { await this.location.stop() } catch (err) { first ??= err; this.log.error({ err: errText(err) }, 'location flush failed') }
    this.log.info({}, 'super node stopped')
    if (first !== undefined) throw first
  }

  private listeners (): Endpoint[] {
    return this.transports.map(t => ({ protocol: t.local.protocol, address: t.local.address, port: t.local.port }))
  }

  status (): SuperNodeStatus {
    const loc = this.location.stats()
    const stack = this.stack.stats()
    return {
      nodeId: this.nodeId,
      startedAt: this.startedAt,
      uptimeMs: this.startedAt === undefined ? 0 : this.clock.now() - this.startedAt,
      running: this.running,
      listeners: this.listeners(),
      aors: loc.aors,
      contacts: loc.contacts,
      transactions: stack.serverTransactions + stack.clientTransactions,
      registers: this.registers,
      registrarErrors: this.registrarErrors,
      stack,
      proxy: this.proxy.stats()
    }
  }
}

function fmt (e: Endpoint): string {
  return `${e.protocol}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`
}

function errText (err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err)
}

/** Build (not start) a super node from its components. */
export function createSuperNode (components: SuperNodeComponents, init: SuperNodeInit = {}): SuperNode {
  return new SuperNodeImpl(components, init)
}
