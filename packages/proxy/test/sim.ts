/**
 * A small simulated world for proxy tests: one proxy node (real SipStack + LocationStore + proxy) and
 * user agents (real SipStacks with a minimal UA core) on a SimNetwork, all on one SimClock.
 */
import type { Destination, Source, TransportProtocol } from '@sipring/interface'
import { LocationStore } from '@sipring/location'
import { createResponse, getTag, parseNameAddr, SipRequest, SipStack } from '@sipring/sip'
import type { ServerTransaction, SipResponse } from '@sipring/sip'
import { MemoryLogger, SeededRng, SimClock, SimNetwork } from '@sipring/testkit'
import { createProxy } from '@sipring/proxy'
import type { Proxy, ProxyOptions } from '@sipring/proxy'

export const flush = async (): Promise<void> => { await new Promise<void>(resolve => { setImmediate(resolve) }) }

export class World {
  readonly clock = new SimClock()
  readonly rng = new SeededRng(42)
  readonly net = new SimNetwork({ clock: this.clock, rng: this.rng.fork('net'), latencyMs: 1 })
  readonly logger = new MemoryLogger()
  readonly location = new LocationStore({ clock: this.clock })
  proxyStack!: SipStack
  proxy!: Proxy
  /** Every message the proxy node received or sent (counted at its transports). */
  readonly proxyAddr = '10.0.0.1'

  async start (opts: Partial<ProxyOptions> = {}, protocols: TransportProtocol[] = ['udp', 'tcp']): Promise<void> {
    this.proxyStack = new SipStack({
      clock: this.clock, rng: this.rng.fork('proxy'), logger: this.logger,
      // loop.example resolves to the proxy itself (for loop tests); nothing else resolves
      resolver: async host => host === 'loop.example' ? [this.proxyAddr] : [],
      transports: protocols.map(protocol => this.net.transport({ protocol, address: this.proxyAddr, port: 5060 }))
    })
    this.proxy = createProxy({ stack: this.proxyStack, location: this.location, clock: this.clock, rng: this.rng.fork('p'), logger: this.logger, domains: ['example.org'], ...opts })
    this.proxyStack.onRequest = (req, tx) => { void this.proxy.handleRequest(req, tx) }
    this.proxyStack.onAck = (ack, source) => { void this.proxy.handleAck(ack, source) }
    this.proxyStack.onStrayResponse = (res, source) => { this.proxy.handleStrayResponse(res, source) }
    await this.proxyStack.start()
    await this.location.start()
  }

  async ua (user: string, address: string, protocol: TransportProtocol = 'udp', port = 5060): Promise<UA> {
    const ua = new UA(this, user, address, protocol, port)
    await ua.stack.start()
    return ua
  }

  register (ua: UA, extra: { received?: Destination, instance?: string, regId?: number, path?: string[], contact?: string } = {}): void {
    const r = this.location.applyRegister(`sip:${ua.user}@example.org`, {
      contacts: [{ contact: extra.contact ?? ua.contact, expires: 3600, ...extra }], callId: `reg-${ua.user}-${ua.regs}`, cseq: ++ua.regs
    })
    if (!r.ok) throw new Error('register failed')
  }

  /** Advance simulated time in 1 ms steps, letting promises settle between steps. */
  async run (ms: number): Promise<void> {
    for (let i = 0; i < ms; i++) { this.clock.advance(1); await flush() }
  }

  async stop (): Promise<void> {
    await this.location.stop()
    await this.proxyStack.stop()
  }
}

export interface Call {
  invite: SipRequest
  responses: SipResponse[]
  final?: SipResponse
  ctx: ReturnType<SipStack['sendRequest']>
}

/** What a UA does with an incoming INVITE. */
export type Behaviour = { ring?: boolean, answer?: number | 'never', status?: number, delay?: number }

/** A minimal UA core: calls out through the proxy, answers INVITEs per its behaviour, ACKs and BYEs. */
export class UA {
  readonly stack: SipStack
  readonly requests: SipRequest[] = []
  readonly acks: SipRequest[] = []
  readonly cancelled: SipRequest[] = []
  behaviour: Behaviour = { ring: true, answer: 200, delay: 10 }
  regs = 0
  private cseq = 1
  private readonly pending = new Map<string, ServerTransaction>()

  constructor (readonly world: World, readonly user: string, readonly address: string, readonly protocol: TransportProtocol, readonly port: number) {
    this.stack = new SipStack({
      clock: world.clock, rng: world.rng.fork(`ua-${user}-${address}`), logger: world.logger,
      transports: [world.net.transport({ protocol, address, port })]
    })
    this.stack.onRequest = (req, tx) => { this.onRequest(req, tx) }
    this.stack.onAck = (ack) => { this.acks.push(ack) }
  }

  get contact (): string { return `sip:${this.user}@${this.address}:${this.port}${this.protocol === 'udp' ? '' : `;transport=${this.protocol}`}` }
  get proxyDest (): Destination { return { protocol: this.protocol, address: this.world.proxyAddr, port: 5060 } }

  private onRequest (req: SipRequest, tx: ServerTransaction): void {
    this.requests.push(req)
    if (req.method !== 'INVITE') {
      const res = createResponse(req, this.behaviour.status ?? 200, undefined, `t-${this.user}`)
      tx.respond(res)
      return
    }
    const tag = `t-${this.user}-${this.address}`
    tx.onCancel = () => {
      this.cancelled.push(req)
      try { tx.respond(createResponse(req, 487, undefined, tag)) } catch { /* already final */ }
    }
    if (this.behaviour.ring !== false) tx.respond(createResponse(req, 180, undefined, tag))
    const answer = this.behaviour.answer ?? 200
    if (answer === 'never') { this.pending.set(req.get('call-id')!, tx); return }
    this.world.clock.setTimer(this.behaviour.delay ?? 10, () => {
      if (this.cancelled.includes(req)) return
      const res = createResponse(req, answer, undefined, tag)
      if (answer >= 200 && answer < 300) {
        for (const rr of req.getAll('record-route')) res.append('record-route', rr)
        res.append('contact', `<${this.contact}>`)
      }
      try { tx.respond(res) } catch { /* cancelled meanwhile */ }
    })
  }

  /** Send an INVITE (or MESSAGE …) to `uri` through the proxy. */
  call (uri: string, method = 'INVITE', headers: Array<[string, string]> = []): Call {
    const req = new SipRequest(method, uri)
    req.append('max-forwards', '70')
    req.append('from', `<sip:${this.user}@example.org>;tag=f-${this.user}-${this.cseq}`)
    req.append('to', `<${uri}>`)
    req.append('call-id', `${this.user}-${this.cseq}-${this.address}`)
    req.append('cseq', `${this.cseq++} ${method}`)
    req.append('contact', `<${this.contact}>`)
    for (const [k, v] of headers) req.append(k, v)
    const call: Call = { invite: req, responses: [], ctx: undefined as unknown as Call['ctx'] }
    call.ctx = this.stack.sendRequest(req, this.proxyDest, {
      onProvisional: r => { call.responses.push(r) },
      onFinal: r => { call.responses.push(r); call.final = r },
      onAdditional2xx: r => { call.responses.push(r) }
    })
    return call
  }

  /** In-dialog request built from the 2xx (Route = reversed Record-Route, Request-URI = remote Contact). */
  private inDialog (call: Call, method: string, ok: SipResponse): SipRequest {
    const remote = parseNameAddr(ok.get('contact')!).uri
    const req = new SipRequest(method, remote)
    const routes = ok.getAll('record-route').reverse()
    for (const r of routes) req.append('route', r)
    req.append('max-forwards', '70')
    req.append('from', call.invite.get('from')!)
    req.append('to', ok.get('to')!)
    req.append('call-id', call.invite.get('call-id')!)
    const seq = Number(call.invite.get('cseq')!.split(' ')[0])
    req.append('cseq', method === 'ACK' ? `${seq} ACK` : `${seq + 1} ${method}`)
    return req
  }

  /** Next hop for an in-dialog request: the top Route (our proxy) or the remote target. */
  private async nextHop (req: SipRequest): Promise<Destination> {
    const top = req.getAll('route')[0]
    return await this.stack.resolveTarget(top !== undefined ? parseNameAddr(top).uri : req.uri)
  }

  async ack (call: Call, ok: SipResponse = call.final!): Promise<SipRequest> {
    const ack = this.inDialog(call, 'ACK', ok)
    const dest = await this.nextHop(ack)
    ack.prepend('via', this.stack.viaFor(dest))
    await this.stack.sendStateless(ack, dest)
    return ack
  }

  async bye (call: Call, ok: SipResponse = call.final!): Promise<Call> {
    const bye = this.inDialog(call, 'BYE', ok)
    const dest = await this.nextHop(bye)
    const c: Call = { invite: bye, responses: [], ctx: undefined as unknown as Call['ctx'] }
    c.ctx = this.stack.sendRequest(bye, dest, { onFinal: r => { c.responses.push(r); c.final = r } })
    return c
  }

  /** BYE sent by the callee of `inv`: Request-URI = caller Contact, Route = Record-Route in order. */
  async byeAsCallee (inv: SipRequest): Promise<Call> {
    const bye = new SipRequest('BYE', parseNameAddr(inv.get('contact')!).uri)
    for (const r of inv.getAll('record-route')) bye.append('route', r)
    bye.append('max-forwards', '70')
    bye.append('from', `${inv.get('to')!};tag=t-${this.user}-${this.address}`)
    bye.append('to', inv.get('from')!)
    bye.append('call-id', inv.get('call-id')!)
    bye.append('cseq', '100 BYE')
    const dest = await this.nextHop(bye)
    const c: Call = { invite: bye, responses: [], ctx: undefined as unknown as Call['ctx'] }
    c.ctx = this.stack.sendRequest(bye, dest, { onFinal: r => { c.responses.push(r); c.final = r } })
    return c
  }

  /** The last request of `method` this UA received. */
  last (method: string): SipRequest | undefined {
    for (let i = this.requests.length - 1; i >= 0; i--) if (this.requests[i]!.method === method) return this.requests[i]
    return undefined
  }
}

export function toTagOf (r: SipResponse): string | undefined { return getTag(r.get('to')!) }
export function statuses (c: Call): number[] { return c.responses.map(r => r.status) }
export type { Source }
