/**
 * A simulated cluster of super nodes sharing one location service over a SimOverlayHub, and
 * minimal user agents on a SimNetwork — all on one SimClock, seeded.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import type { Destination, Source, TransportProtocol } from '@sipring/interface'
import { SimClock, SeededRng, SimNetwork, MemoryLogger, type SimTransport } from '@sipring/testkit'
import { parseMessage, serialize, SipRequest, SipResponse, type SipMessage } from '@sipring/sip'
import { createHasher, drive, SimOverlayHub, type PeerId } from '@sipring/overlay'
import { createSuperNode, type PortionSigner, type SuperNode, type SuperNodeOverlayInit } from '../src/index.js'

export const hasher = await createHasher()

export interface Cluster {
  clock: SimClock
  rng: SeededRng
  net: SimNetwork
  hub: SimOverlayHub
  logger: MemoryLogger
  nodes: Map<PeerId, SuperNode>
}

export function cluster (seed: number): Cluster {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const rng = new SeededRng(seed)
  return {
    clock,
    rng,
    net: new SimNetwork({ clock, rng: rng.fork('sip'), latencyMs: 2, jitterMs: 1 }),
    hub: new SimOverlayHub({ clock, rng: rng.fork('overlay'), latency: { min: 2, max: 6 } }),
    logger: new MemoryLogger(),
    nodes: new Map()
  }
}

/** Drive the clock until `p` settles (promise chains run between timers). */
export async function settle<T> (c: Cluster, p: Promise<T>, max = 120_000, step = 5): Promise<T> {
  let done = false
  const q = p.finally(() => { done = true })
  q.catch(() => {})
  const t0 = c.clock.now()
  while (!done) {
    if (c.clock.now() - t0 > max) throw new Error('settle: promise did not settle in time')
    await drive(c.clock, step)
  }
  return await q
}

/** Drive the clock in slices until `cond()` holds; returns the elapsed time, or -1 after `max` ms. */
export async function until (c: Cluster, cond: () => boolean, max = 60_000, step = 20): Promise<number> {
  const t0 = c.clock.now()
  while (!cond()) {
    if (c.clock.now() - t0 > max) return -1
    await drive(c.clock, step)
  }
  return c.clock.now() - t0
}

export async function run (c: Cluster, ms: number): Promise<void> {
  const end = c.clock.now() + ms
  while (c.clock.now() < end) await drive(c.clock, Math.min(20, end - c.clock.now()))
}

export const nodeAddress = (id: PeerId): string => `10.0.0.${Number(id.slice(1))}`

/** The components of super node `id`: the cluster's clock, a forked rng, UDP + TCP at 10.0.0.<i>:5060, its overlay port. */
export function nodeComponents (c: Cluster, id: PeerId): Parameters<typeof createSuperNode>[0] {
  const address = nodeAddress(id)
  return {
    clock: c.clock,
    rng: c.rng.fork(id),
    logger: c.logger.child({ n: id }),
    transports: [c.net.transport({ protocol: 'udp', address, port: 5060 }), c.net.transport({ protocol: 'tcp', address, port: 5060 })],
    overlay: { network: c.hub.connect(id), hasher }
  }
}

/** Start super node `id` (`n1`, `n2`…) at 10.0.0.<i>:5060 (UDP + TCP), joining through `seeds`. */
export async function addNode (c: Cluster, id: PeerId, seeds: PeerId[] = [], overlay: Partial<SuperNodeOverlayInit> = {}): Promise<SuperNode> {
  const node = createSuperNode(nodeComponents(c, id), {
    domains: ['example.org'],
    minExpires: 10,
    overlay: {
      seeds,
      verifyDelay: 500,
      node: {
        vnodes: 64,
        membership: { protocolPeriod: 500, pingTimeout: 100, suspicionMult: 3, syncInterval: 5000 },
        store: { antiEntropyInterval: 5000, requestTimeout: 300 }
      },
      ...overlay
    }
  })
  await settle(c, node.start())
  c.nodes.set(id, node)
  return node
}

/** Every live node sees every live node, and no ring rebuild is pending. */
export function converged (c: Cluster): boolean {
  const want = [...c.nodes.keys()].sort().join()
  return [...c.nodes.values()].every(n => n.overlay!.membership.view().join() === want && !n.overlay!.ringPending)
}

/** Crash a super node: no goodbye (overlay and SIP both vanish). */
export async function crash (c: Cluster, id: PeerId): Promise<void> {
  const n = c.nodes.get(id)!
  c.hub.crash(id)
  await settle(c, n.stop({ leave: false }))
  c.nodes.delete(id)
}

/** Crash every node of the cluster. */
export async function shutdown (c: Cluster): Promise<void> {
  for (const id of [...c.nodes.keys()]) await crash(c, id)
}

/** `OVERLAY_SEED=n` shifts every test's seed (seeds 0–19 pass). */
export const OVERLAY_SEED = Number(process.env.OVERLAY_SEED ?? 0)

/**
 * n1 … n4, n2–n4 joined through n1, converged; with `records` (default) also every node's SIP record
 * (`node|<id>`) learnt by every node. `overlay(id)`: per-node overlay settings (e.g. a signer).
 */
export async function fourNodes (seed: number, opts: { overlay?: (id: PeerId) => Partial<SuperNodeOverlayInit>, records?: boolean } = {}): Promise<Cluster> {
  const c = cluster(seed + OVERLAY_SEED * 100)
  const extra = opts.overlay ?? (() => ({}))
  await addNode(c, 'n1', [], extra('n1'))
  for (const id of ['n2', 'n3', 'n4']) await addNode(c, id, ['n1'], extra(id))
  if (await until(c, () => converged(c), 30_000) < 0) throw new Error('cluster did not converge')
  // node| records are read on view changes (retried while a joiner's record is still being handed off)
  if ((opts.records ?? true) && await until(c, () => [...c.nodes.values()].every(n => [...c.nodes.keys()].every(o => n.replication!.nodeRoute(o) !== undefined)), 5000) < 0) throw new Error('node records not learnt')
  return c
}

// ---------------------------------------------------------------- user agents

export interface Phone {
  user: string
  t: SimTransport
  /** Where requests go (the super node it is attached to). */
  proxy: Destination
  /** Contact URI it registers. */
  contact: string
  inbox: Array<{ msg: SipMessage, source: Source }>
  /** Answer INVITEs automatically (180 then 200) and BYE/MESSAGE with 200. */
  auto: boolean
  cseq: number
  callId: string
}

let seq = 0

/**
 * A UA at `address` attached to super node `node` over `protocol`. Its Contact names `contactHost`
 * (e.g. a private address behind NAT that nobody can reach): only its flow reaches it.
 */
export async function phone (c: Cluster, user: string, address: string, node: PeerId, protocol: TransportProtocol, contactHost = address): Promise<Phone> {
  const t = c.net.transport({ protocol, address, port: 5060 })
  await t.start()
  const p: Phone = {
    user,
    t,
    proxy: { protocol, address: nodeAddress(node), port: 5060 },
    contact: `sip:${user}@${contactHost}:5060${protocol === 'udp' ? '' : `;transport=${protocol}`}`,
    inbox: [],
    auto: true,
    cseq: 0,
    callId: `reg-${user}-${++seq}`
  }
  t.on('message', (data, source) => {
    const msg = parseMessage(data)
    p.inbox.push({ msg, source })
    if (msg.isRequest && p.auto) autoAnswer(p, msg as SipRequest, source)
  })
  return p
}

function autoAnswer (p: Phone, req: SipRequest, source: Source): void {
  const back: Destination = { protocol: source.protocol, address: source.address, port: source.port, ...(source.connectionId !== undefined ? { connectionId: source.connectionId } : {}) }
  if (req.method === 'INVITE') {
    void p.t.send(serialize(reply(p, req, 180, 'Ringing')), back)
    void p.t.send(serialize(reply(p, req, 200, 'OK')), back)
  } else if (req.method === 'BYE' || req.method === 'MESSAGE') {
    void p.t.send(serialize(reply(p, req, 200, 'OK')), back)
  }
}

/** A UAS response to `req` (Record-Route copied for dialog-creating answers; To tag added). */
export function reply (p: Phone, req: SipRequest, status: number, reason: string): SipResponse {
  const res = new SipResponse(status, reason)
  for (const h of req.headers) if (['via', 'from', 'to', 'call-id', 'cseq'].includes(h.name)) res.append(h.name, h.value)
  if (req.method === 'INVITE') for (const rr of req.getAll('record-route')) res.append('record-route', rr)
  if (!/;\s*tag=/i.test(res.get('to') ?? '')) res.set('to', `${res.get('to')!};tag=${p.user}-tag`)
  res.append('contact', `<${p.contact}>`)
  return res
}

export function request (p: Phone, method: string, uri: string, to: string, extra: Array<[string, string]> = [], callId?: string): SipRequest {
  seq++
  const r = new SipRequest(method, uri)
  r.append('via', `SIP/2.0/${p.proxy.protocol.toUpperCase()} ${p.t.local.address}:5060;branch=z9hG4bKua${seq};rport`)
  r.append('max-forwards', '70')
  r.append('from', `<sip:${p.user}@example.org>;tag=${p.user}-${seq}`)
  r.append('to', `<${to}>`)
  r.append('call-id', callId ?? `call-${seq}@${p.t.local.address}`)
  r.append('cseq', `${++p.cseq} ${method}`)
  for (const [k, v] of extra) r.append(k, v)
  return r
}

export async function send (p: Phone, m: SipMessage, to: Destination = p.proxy): Promise<void> {
  await p.t.send(serialize(m), to)
}

export function register (p: Phone, expires = 600): SipRequest {
  const aor = `sip:${p.user}@example.org`
  return request(p, 'REGISTER', 'sip:example.org', aor, [['contact', `<${p.contact}>`], ['expires', String(expires)]], p.callId)
}

export function responses (p: Phone, method?: string): SipResponse[] {
  return p.inbox.map(e => e.msg).filter((m): m is SipResponse => !m.isRequest && (method === undefined || (m.get('cseq') ?? '').endsWith(` ${method}`)))
}

export function requests (p: Phone, method?: string): Array<{ msg: SipRequest, source: Source }> {
  return p.inbox.filter((e): e is { msg: SipRequest, source: Source } => e.msg.isRequest && (method === undefined || (e.msg as SipRequest).method === method))
}

/** REGISTER and wait for the final answer; returns its status. */
export async function registerAndWait (c: Cluster, p: Phone, expires = 600): Promise<number> {
  const before = responses(p, 'REGISTER').length
  await send(p, register(p, expires))
  await until(c, () => responses(p, 'REGISTER').length > before, 5000, 5)
  return responses(p, 'REGISTER')[before]?.status ?? 0
}

/** HMAC keyed by the node id: a deterministic portion signer without key material (the Ed25519 signer is tested in overlay-libp2p). */
export function hmacSigner (self: string): PortionSigner {
  const mac = (id: string, d: Uint8Array): Buffer => createHmac('sha256', `key-of-${id}`).update(d).digest()
  return {
    sign: d => mac(self, d),
    verify: (id, d, sig) => { const m = mac(id, d); return sig.length === m.length && timingSafeEqual(m, sig) }
  }
}
