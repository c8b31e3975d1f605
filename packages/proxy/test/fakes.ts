import type { Binding, Destination, Endpoint, Source } from '@sipring/interface'
import { createResponse, parseMessage, resolveTarget, SipRequest, SipResponse } from '@sipring/sip'
import type { SipMessage } from '@sipring/sip'
import { MemoryLogger, SeededRng, SimClock } from '@sipring/testkit'
import { createProxy } from '@sipring/proxy'
import type { BranchHandlers, ClientContextLike, ProxyOptions, ProxyStack, ServerTxLike, TransportLike } from '@sipring/proxy'

export const PROXY_UDP: Endpoint = { protocol: 'udp', address: '10.0.0.1', port: 5060 }
export const PROXY_TCP: Endpoint = { protocol: 'tcp', address: '10.0.0.1', port: 5060 }

export interface Sent {
  req: SipRequest
  dest: Destination
  h: BranchHandlers
  branch: string
  cancels: number
}

/** A fake SipStack: records client transactions and lets the test answer them. */
export class FakeStack implements ProxyStack {
  readonly open = new Set<string>()
  readonly transports: TransportLike[]
  readonly sent: Sent[] = []
  readonly stateless: Array<{ msg: SipMessage, dest: Destination }> = []
  private n = 0

  constructor (endpoints: Endpoint[] = [PROXY_UDP, PROXY_TCP], readonly honourBranch = true) {
    this.transports = endpoints.map(local => ({ protocol: local.protocol, local, hasConnection: (id: string) => this.open.has(id) }))
  }

  sendRequest (req: SipRequest, dest: Destination, h: BranchHandlers): ClientContextLike {
    const branch = this.honourBranch && h.branch !== undefined ? h.branch : `z9hG4bKstack${++this.n}`
    req.prepend('via', this.viaFor(dest, branch))
    const rec: Sent = { req, dest, h, branch, cancels: 0 }
    this.sent.push(rec)
    return { branch, cancel: () => { rec.cancels++ } }
  }

  sendStateless (msg: SipMessage, dest: Destination): Promise<boolean> {
    this.stateless.push({ msg, dest })
    return Promise.resolve(true)
  }

  async resolveTarget (uri: string): Promise<Destination> { return await resolveTarget(uri) }

  viaFor (dest: Destination, branch = 'z9hG4bKx'): string {
    const t = this.transportFor(dest)!
    return `SIP/2.0/${t.protocol.toUpperCase()} ${t.local.address}:${t.local.port};branch=${branch};rport`
  }

  transportFor (dest: Destination): TransportLike | undefined {
    return this.transports.find(t => t.protocol === dest.protocol)
  }

  /** Answer branch `i` with `status`; the response carries the branch's Vias (ours on top). */
  answer (i: number, status: number, opts: { toTag?: string, headers?: Array<[string, string]> } = {}): SipResponse {
    const s = this.sent[i]!
    const res = createResponse(s.req, status, undefined, opts.toTag ?? (status > 100 ? `callee${i}` : undefined))
    for (const [k, v] of opts.headers ?? []) res.append(k, v)
    if (status < 200) s.h.onProvisional?.(res)
    else s.h.onFinal(res)
    return res
  }
}

export class FakeTx implements ServerTxLike {
  readonly responses: SipResponse[] = []
  onCancel: ((cancel: SipRequest) => void) | undefined = undefined
  constructor (readonly source: Source, readonly request?: SipRequest) {}
  respond (res: SipResponse): void { this.responses.push(res) }
  get statuses (): number[] { return this.responses.map(r => r.status) }
  get last (): SipResponse | undefined { return this.responses[this.responses.length - 1] }
}

export const ALICE_SRC: Source = { protocol: 'udp', address: '192.0.2.10', port: 5060, local: PROXY_UDP }

export function msg (text: string): SipRequest {
  const m = parseMessage(Buffer.from(text.replace(/\n/g, '\r\n').replace(/\r\n$/, '') + '\r\n\r\n'))
  if (!(m instanceof SipRequest)) throw new Error('not a request')
  return m
}

export function invite (opts: { uri?: string, method?: string, headers?: string, mf?: number | null, toTag?: string, callId?: string } = {}): SipRequest {
  const method = opts.method ?? 'INVITE'
  const mf = opts.mf === null ? '' : `Max-Forwards: ${opts.mf ?? 70}\n`
  return msg(`${method} ${opts.uri ?? 'sip:bob@example.org'} SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKcaller1;rport=5060
${mf}From: Alice <sip:alice@example.org>;tag=atag
To: Bob <sip:bob@example.org>${opts.toTag !== undefined ? `;tag=${opts.toTag}` : ''}
Call-ID: ${opts.callId ?? 'call-1@192.0.2.10'}
CSeq: 1 ${method}
Contact: <sip:alice@192.0.2.10:5060>
${opts.headers ?? ''}`.replace(/\n\n+/g, '\n').trimEnd())
}

export function binding (contact: string, extra: Partial<Binding> = {}): Binding {
  return { aor: 'sip:bob@example.org', contact, expires: Date.UTC(2026, 0, 1) + 3600_000, q: 1, callId: 'reg', cseq: 1, path: [], updated: 0, ...extra }
}

export class FakeLocation {
  readonly map = new Map<string, Binding[]>()
  readonly lookups: string[] = []
  lookup (aor: string): Binding[] { this.lookups.push(aor); return this.map.get(aor) ?? [] }
}

export function setup (over: Partial<ProxyOptions> & { stack?: FakeStack } = {}): {
  stack: FakeStack, location: FakeLocation, clock: SimClock, logger: MemoryLogger, proxy: ReturnType<typeof createProxy>
} {
  const stack = over.stack ?? new FakeStack()
  const location = new FakeLocation()
  const clock = new SimClock()
  const logger = new MemoryLogger()
  const proxy = createProxy({ stack, location, clock, rng: new SeededRng(1), logger, domains: ['example.org'], ...over })
  return { stack, location, clock, logger, proxy }
}
