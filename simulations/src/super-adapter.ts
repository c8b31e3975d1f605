/**
 * `node: super` — every simulated node is a real `createSuperNode()` (SIP stack, usrloc, registrar,
 * proxy, LocationReplicator, OverlayNode), with its SIP transports on a {@link SimNetwork} and its
 * overlay on the simulator's hub. The workload talks SIP to it:
 *
 * - **put** = a SIP REGISTER from the client's own simulated UA (UDP, at the Contact's address) to the
 *   node; the write counts as acknowledged when the node answers 200 — which it does only once the
 *   AOR's item reached the overlay write quorum (`ackTimeout`, else 503). The workload's sequence
 *   number is the REGISTER's CSeq (one Call-ID per client), so a refresh updates the same binding.
 * - **get** = `replication.lookup(aor)` at the node the workload picked: the proxy's location read
 *   (local usrloc ∪ the overlay's quorum read of `aor|<aor>`). The value read is the binding with the
 *   highest CSeq, i.e. the newest registration.
 * - **local** = the node's own replica of `aor|<aor>`: the highest unexpired CSeq in any portion.
 *
 * Overlay traffic is counted by the engine's InstrumentedHub as in `node: overlay`; SIP traffic
 * (REGISTER + 200) is on the SimNetwork and counted in its own stats, not in `msgs:*`.
 */
import { silentLogger, type Clock, type Logger, type Rng } from '@sipring/interface'
import { OverlayAbortError, OverlayError, OverlayNode, type Hasher, type MembershipService, type OverlayNodeInit, type RingFactory, type SimOverlayHub } from '@sipring/overlay'
import { aorKey, createSuperNode, type AorValue, type ReplicaValue, type SuperNode } from '@sipring/node'
import { parseMessage, serialize, SipRequest, type SipResponse } from '@sipring/sip'
import { SimNetwork, type SimTransport } from '@sipring/testkit'
import type { NodeFactory, RegValue, SimNode } from './adapter.js'
import type { FactoryContext } from './engine.js'
import type { MembershipOracle } from './oracle.js'

/** The SIP domain the simulated super nodes serve (the workload's AORs are `sip:u<i>@sim.sipring`). */
export const SIM_DOMAIN = 'sim.sipring'

export interface SuperFactoryInit {
  clock: Clock
  logger: Logger
  hub: SimOverlayHub
  hasher: Hasher
  rings: RingFactory
  /** Seeds the SIP network (delay jitter). */
  rng: Rng
  /** The overlay node's membership and store settings (store.maxTtl is raised to cover registrations). */
  init: OverlayNodeInit
  /** One-way SIP delay between a client UA and a super node, uniform in [min, max] ms. */
  latency: { min: number, max: number }
  /** Longest registration (ms): the registrar's maxExpires. */
  maxExpires: number
  /** The 200 to a REGISTER waits at most this long for the overlay write quorum (default 2000 ms). */
  ackTimeout?: number
  /** Scale mode: the global membership oracle (instead of one SWIM instance per node). */
  oracle?: MembershipOracle
}

/** The failure of a registration answered with a non-2xx (an overlay-level failure for the engine). */
export class RegisterFailed extends OverlayError {
  constructor (readonly status: number, reason: string) { super('ERR_SIP', `REGISTER answered ${status} ${reason}`); this.name = 'RegisterFailed' }
}

interface Pending { resolve: () => void, reject: (e: Error) => void }

/**
 * The simulated user agents: one UDP transport per client AOR, at the host its Contact names.
 * Shared by every super node of a run (a client may register at another node on its next refresh).
 */
class UaPool {
  private readonly uas = new Map<string, { t: SimTransport, host: string }>()
  private readonly pending = new Map<string, Pending>()
  private branch = 0

  constructor (private readonly net: SimNetwork) {}

  private async ua (aor: string, host: string): Promise<SimTransport> {
    const cur = this.uas.get(aor)
    if (cur !== undefined && cur.host === host) return cur.t
    if (cur !== undefined) await cur.t.stop()
    const t = this.net.transport({ protocol: 'udp', address: host, port: 5060 })
    t.on('message', data => { this.onMessage(data) })
    await t.start()
    this.uas.set(aor, { t, host })
    return t
  }

  private onMessage (data: Buffer): void {
    let msg
    try { msg = parseMessage(data) } catch { return }
    if (msg.isRequest) return
    const res = msg as SipResponse
    const cseq = res.get('cseq') ?? ''
    const key = `${res.get('call-id') ?? ''}|${cseq.split(/\s+/)[0] ?? ''}`
    const p = this.pending.get(key)
    if (p === undefined || res.status < 200) return
    this.pending.delete(key)
    if (res.status < 300) p.resolve()
    else p.reject(new RegisterFailed(res.status, res.reason))
  }

  /** REGISTER `contact` for `aor` at `to` with CSeq `seq`; resolves on 2xx. */
  async register (aor: string, contact: string, seq: number, expiresSec: number, to: { address: string, port: number }, signal?: AbortSignal): Promise<void> {
    const host = /@([^:;>]+)/.exec(contact)?.[1] ?? '192.0.2.1'
    const t = await this.ua(aor, host)
    const callId = `reg-${aor.replace(/^sips?:/, '')}`
    const key = `${callId}|${seq}`
    const req = new SipRequest('REGISTER', `sip:${SIM_DOMAIN}`)
    req.append('via', `SIP/2.0/UDP ${host}:5060;branch=z9hG4bKua${++this.branch};rport`)
    req.append('max-forwards', '70')
    req.append('from', `<${aor}>;tag=${seq}`)
    req.append('to', `<${aor}>`)
    req.append('call-id', callId)
    req.append('cseq', `${seq} REGISTER`)
    req.append('contact', `<${contact}>`)
    req.append('expires', String(expiresSec))
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted === true) { reject(new OverlayAbortError()); return }
      const onAbort = (): void => { this.pending.delete(key); reject(new OverlayAbortError()) }
      signal?.addEventListener('abort', onAbort, { once: true })
      const done = (fn: () => void): void => { signal?.removeEventListener('abort', onAbort); fn() }
      this.pending.set(key, { resolve: () => { done(resolve) }, reject: e => { done(() => { reject(e) }) } })
      t.send(serialize(req), { protocol: 'udp', address: to.address, port: to.port }).catch((err: unknown) => {
        this.pending.delete(key)
        done(() => { reject(new OverlayError('ERR_SIP_SEND', `REGISTER not sent: ${String(err)}`)) })
      })
    })
  }
}

/** The SIP address of the k-th distinct node id: 172.16.0.0/12. */
function nodeAddress (k: number): string {
  return `172.${16 + ((k >> 16) & 15)}.${(k >> 8) & 255}.${k & 255}`
}

/** Highest unexpired CSeq of `aor` in an AOR item (every portion), as the workload's value. */
export function newestOf (value: unknown, aor: string, now: number): RegValue | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const nodes = (value as Partial<AorValue>).nodes
  if (typeof nodes !== 'object' || nodes === null) return undefined
  let best: RegValue | undefined
  for (const p of Object.values(nodes)) {
    for (const b of p.b ?? []) {
      if ((b.aor !== undefined && b.aor !== aor) || !(b.expires > now)) continue
      if (best === undefined || b.cseq > best.s) best = { c: b.contact, s: b.cseq }
    }
  }
  return best
}

/** One simulated host running a real super node. */
export class SuperNodeAdapter implements SimNode<RegValue> {
  readonly node: SuperNode
  readonly address: string
  private readonly overlay: OverlayNode<ReplicaValue, MembershipService>

  constructor (readonly id: string, rng: Rng, private readonly f: SuperFactoryInit, private readonly env: { net: SimNetwork, uas: UaPool, address: string }) {
    this.address = env.address
    const store = { ...f.init.store, maxTtl: Math.max(f.init.store?.maxTtl ?? 0, f.maxExpires + 60_000) }
    this.overlay = new OverlayNode<ReplicaValue, MembershipService>({
      clock: f.clock, rng: rng.fork('overlay'), logger: f.logger, network: f.hub.connect(id), hasher: f.hasher, ringFactory: f.rings,
      ...(f.oracle !== undefined ? { membership: f.oracle.member(id) } : {})
    }, { ...f.init, store })
    const off = this.overlay.store.on('change', () => { this.stored = true; off() })
    this.node = createSuperNode({
      clock: f.clock,
      rng,
      logger: f.logger,
      transports: [env.net.transport({ protocol: 'udp', address: env.address, port: 5060 })],
      // the super node uses only the MembershipService part of its overlay's membership (view, get,
      // view:change), so the oracle's member stands in for SWIM here
      overlay: { node: this.overlay as unknown as OverlayNode<ReplicaValue> }
    }, {
      domains: [SIM_DOMAIN],
      minExpires: 1,
      maxExpires: Math.ceil(f.maxExpires / 1000),
      defaultExpires: Math.ceil(f.maxExpires / 1000),
      overlay: { ...(f.ackTimeout !== undefined ? { ackTimeout: f.ackTimeout } : {}) }
    })
    if (f.oracle !== undefined) {
      // SWIM's view:change carries the members, from which the super node learns its peers' SIP routes
      // (one node-record read per new member); the oracle's carries none, so hand the view over here
      const membership = this.overlay.membership
      const replication = this.node.replication!
      this.unwatch = membership.on('view:change', () => { replication.learnNodes(membership.view()) })
    }
  }

  private unwatch: (() => void) | undefined

  /** Starts the super node as a one-member overlay (the engine joins it next). */
  async start (): Promise<void> { await this.node.start() }
  async join (seeds: string[]): Promise<void> { await this.overlay.join(seeds) }
  async leave (): Promise<void> {
    this.unwatch?.()
    try { await this.node.stop({ leave: true }) } finally { this.f.hub.crash(this.id) }
  }

  async crash (): Promise<void> {
    this.unwatch?.()
    this.f.hub.crash(this.id)
    await this.node.stop({ leave: false })
  }

  async put (key: string, value: RegValue, ttl: number, signal?: AbortSignal): Promise<void> {
    const contact = value.c.replace(/;s=\d+$/, '')
    await this.env.uas.register(key, contact, value.s, Math.max(1, Math.round(ttl / 1000)), { address: this.address, port: 5060 }, signal)
  }

  async get (key: string, signal?: AbortSignal): Promise<RegValue | undefined> {
    const lookup = this.node.replication!.lookup(key)
    const bindings = signal === undefined
      ? await lookup
      : await new Promise<Awaited<typeof lookup>>((resolve, reject) => {
        if (signal.aborted) { reject(new OverlayAbortError()); return }
        const onAbort = (): void => { reject(new OverlayAbortError()) }
        signal.addEventListener('abort', onAbort, { once: true })
        lookup.then(v => { signal.removeEventListener('abort', onAbort); resolve(v) }, (e: unknown) => { signal.removeEventListener('abort', onAbort); reject(e as Error) })
      })
    let best: RegValue | undefined
    for (const b of bindings) if (best === undefined || b.cseq > best.s) best = { c: b.contact, s: b.cseq }
    return best
  }

  local (key: string): RegValue | undefined {
    const it = this.overlay.store.local(aorKey(key))
    return it === undefined || it.deleted ? undefined : newestOf(it.value, key, this.f.clock.now())
  }

  localItems (): number { return this.overlay.store.getStats().items }
  viewSize (): number { return this.overlay.ring.size }
  private stored = false
  holdsData (): boolean { return this.stored }
}

/** The factory of `node: super`: one SIP network and one pool of client UAs per run. */
export function superNodeFactory (f: SuperFactoryInit): NodeFactory<RegValue> & { net: SimNetwork, storeKey: (key: string) => string } {
  const net = new SimNetwork({ clock: f.clock, rng: f.rng, latencyMs: f.latency.min, jitterMs: f.latency.max - f.latency.min })
  const uas = new UaPool(net)
  const addresses = new Map<string, string>()
  return {
    net,
    storeKey: aorKey,
    create: (id, rng) => {
      let address = addresses.get(id)
      if (address === undefined) { address = nodeAddress(addresses.size + 1); addresses.set(id, address) }
      return new SuperNodeAdapter(id, rng, f, { net, uas, address })
    }
  }
}

/** `node: super` with the scenario's settings (what the engine uses when the scenario says so). */
export function superNodeFactoryFor (ctx: FactoryContext): NodeFactory<RegValue> & { storeKey: (key: string) => string } {
  const s = ctx.scenario
  return superNodeFactory({
    clock: ctx.clock,
    logger: silentLogger,
    hub: ctx.hub,
    hasher: ctx.hasher,
    rings: ctx.rings,
    rng: ctx.rng,
    latency: s.network.latency,
    maxExpires: Math.max(s.workload.expires, 1000),
    ackTimeout: Math.min(2000, s.workload.registerTimeout),
    ...(ctx.oracle !== undefined ? { oracle: ctx.oracle } : {}),
    init: {
      vnodes: s.overlay.vnodes,
      membership: { protocolPeriod: s.overlay.protocolPeriod, pingTimeout: s.overlay.pingTimeout, suspicionMult: s.overlay.suspicionMult },
      store: {
        replicas: s.overlay.replicas, writeQuorum: s.overlay.writeQuorum, readQuorum: s.overlay.readQuorum,
        requestTimeout: s.overlay.requestTimeout, antiEntropyInterval: s.overlay.antiEntropyInterval,
        cachePositions: true
      }
    }
  })
}
