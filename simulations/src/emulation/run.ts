/**
 * `mode: emulation` — the same scenario (churn generator, workload, oracle, metrics, outputs) on real
 * libp2p nodes in this process: every host is sipring's OverlayNode on a `libp2pOverlay()` network
 * (TCP on 127.0.0.1, noise, yamux, kad-dht — the production wiring of overlay-libp2p), and time is a
 * {@link RealClock} scaled by `emulation.timeScale` (see docs/simulation.md, "Validation").
 *
 * - **Member ids**: the overlay runs with the engine's host ids (`n00003`) as member ids, as in the
 *   simulator, so both modes place nodes and keys on the same ring positions. A small directory in the
 *   emulator maps a host id to its current libp2p PeerId and listen addresses (the role of DNS or a
 *   seed list); every message travels over a real libp2p connection to that PeerId.
 * - **Crash** = the engine's crash is effective at once: the node stops answering and sending, every
 *   libp2p connection is aborted (peers see a reset), then the OverlayNode and libp2p stop. A restart is
 *   a new process: a fresh libp2p identity (new PeerId) and an empty store under the same host id.
 * - **Leave** = the overlay's graceful leave, then libp2p stops.
 * - **Traffic**: requests sent by live nodes and responses received, by type, with sampled JSON sizes,
 *   exactly as the simulator's InstrumentedHub counts them (the hub itself carries nothing here).
 *
 * Not deterministic (real time, real sockets): use `--reps` and confidence intervals.
 */
import { silentLogger, type Rng } from '@sipring/interface'
import {
  OverlayAbortError, OverlayNode, OverlayTimeoutError, OverlayUnreachableError,
  type OverlayMessage, type OverlayNetwork, type PeerId, type RequestHandler, type SendOptions
} from '@sipring/overlay'
import { libp2pOverlay, type Libp2pOverlay } from '@sipring/overlay-libp2p'
import { RealClock } from '@sipring/testkit'
import type { NodeFactory, RegValue, SimNode } from '../adapter.js'
import { runScenario, type FactoryContext, type RunOptions, type RunResult } from '../engine.js'
import type { Scenario } from '../scenario.js'

interface DirEntry { peerId: string, addrs: string[] }

type Traffic = FactoryContext['hub']['traffic']

/** Counts one message like InstrumentedHub does (count; JSON bytes of every `every`-th, the others at the running mean). */
function count (traffic: Traffic, every: number, msg: OverlayMessage): void {
  let c = traffic.get(msg.type)
  if (c === undefined) { c = { count: 0, bytes: 0, sampled: 0, sampledBytes: 0 }; traffic.set(msg.type, c) }
  if (c.count % every === 0) {
    const b = Buffer.byteLength(JSON.stringify(msg))
    c.sampled++; c.sampledBytes += b; c.bytes += b
  } else {
    c.bytes += c.sampledBytes / c.sampled
  }
  c.count++
}

/** The shared state of one emulated run. */
class Emulator {
  /** host id → its current libp2p identity and addresses. */
  readonly dir = new Map<string, DirEntry>()
  /** libp2p PeerId → host id (every incarnation). */
  readonly byPeer = new Map<string, string>()
  readonly live = new Map<string, EmuNodeAdapter>()
  /** Set at the end of the run: no node starts any more. */
  closing = false
  private seq = 0
  constructor (readonly ctx: FactoryContext) {}
  listenAddr (id: string): string {
    return this.ctx.scenario.emulation.transport === 'memory' ? `/memory/emu-${process.pid}-${id}-${this.seq++}` : '/ip4/127.0.0.1/tcp/0'
  }

  /** Stop every node still running (end of the run). */
  async closeAll (): Promise<void> {
    this.closing = true
    await Promise.all([...this.live.values()].map(async n => { await n.kill() }))
  }
}

/** The overlay's network port for one emulated host: host ids outside, libp2p PeerIds inside. */
class EmuNetwork implements OverlayNetwork {
  dead = false
  private readonly connected = new Set<string>()
  private readonly dialing = new Map<string, Promise<void>>()

  constructor (readonly self: PeerId, private readonly lp: Libp2pOverlay, private readonly emu: Emulator) {
    lp.on('peer:connect', p => { this.connected.add(p) })
    lp.on('peer:disconnect', p => { this.connected.delete(p) })
  }

  async send (to: PeerId, msg: OverlayMessage, opts: SendOptions = {}): Promise<OverlayMessage> {
    if (this.dead) throw new OverlayUnreachableError('this node has crashed')
    const hub = this.emu.ctx.hub
    count(hub.traffic, hub.byteSampleEvery, msg)
    const entry = this.emu.dir.get(to)
    if (entry === undefined) throw new OverlayUnreachableError(`unknown peer ${to}`)
    const clock = this.emu.ctx.clock
    const started = clock.now()
    // the same default as the simulator's hub; dialling counts against the request's timeout
    const total = opts.timeout ?? this.emu.ctx.scenario.network.requestTimeout
    if (!this.connected.has(entry.peerId) && to !== this.self) await this.dialWithin(entry, total, msg.type, to, opts.signal)
    const timeout = total - (clock.now() - started)
    if (timeout <= 0) throw new OverlayTimeoutError(`${msg.type} to ${to}: dialling took the whole timeout`)
    const res = await this.lp.send(entry.peerId, msg, { ...opts, timeout })
    if (!this.dead) count(hub.traffic, hub.byteSampleEvery, res)
    return res
  }

  /** The (shared) dial, but this caller gives up after `ms` on the clock or when `signal` aborts. */
  private async dialWithin (entry: DirEntry, ms: number, type: string, to: PeerId, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted === true) throw new OverlayAbortError()
    const dial = this.dial(entry)
    await new Promise<void>((resolve, reject) => {
      let done = false
      const finish = (fn: () => void): void => { if (done) return; done = true; timer.cancel(); signal?.removeEventListener('abort', onAbort); fn() }
      const onAbort = (): void => { finish(() => { reject(new OverlayAbortError()) }) }
      const timer = this.emu.ctx.clock.setTimer(ms, () => { finish(() => { reject(new OverlayTimeoutError(`${type} to ${to}: dialling took the whole timeout`)) }) })
      signal?.addEventListener('abort', onAbort, { once: true })
      dial.then(() => { finish(resolve) }, (err: unknown) => { finish(() => { reject(err as Error) }) })
    })
  }

  private async dial (entry: DirEntry): Promise<void> {
    let p = this.dialing.get(entry.peerId)
    if (p === undefined) {
      p = (async () => {
        let last: unknown
        for (const a of entry.addrs) {
          try { await this.lp.dial(a); this.connected.add(entry.peerId); return } catch (err) { last = err }
        }
        throw last instanceof Error ? last : new OverlayUnreachableError(`no address for ${entry.peerId}`)
      })().finally(() => { this.dialing.delete(entry.peerId) })
      this.dialing.set(entry.peerId, p)
    }
    await p
  }

  onRequest (handler: RequestHandler): () => void {
    return this.lp.onRequest(async (msg, from) => {
      if (this.dead) return { type: 'error', code: 'ERR_UNREACHABLE', message: 'crashed' }
      return await handler(msg, this.emu.byPeer.get(from) ?? from)
    })
  }
}

/** One emulated host: an OverlayNode on a real libp2p node. */
export class EmuNodeAdapter implements SimNode<RegValue> {
  node: OverlayNode<RegValue> | undefined
  private lp: Libp2pOverlay | undefined
  private net: EmuNetwork | undefined
  private stopped = false

  constructor (readonly id: string, private readonly rng: Rng, private readonly emu: Emulator) {}

  async start (): Promise<void> {
    const { clock, hasher, rings, scenario: s } = this.emu.ctx
    if (this.emu.closing) throw new OverlayUnreachableError('the emulation is over')
    const lp = await libp2pOverlay({ clock, logger: silentLogger, listen: [this.emu.listenAddr(this.id)], closeTimeout: 200 })
    this.lp = lp
    this.emu.live.set(this.id, this)
    await lp.start()
    if (this.stopped) { await this.kill(); throw new OverlayUnreachableError('crashed while starting') }
    this.net = new EmuNetwork(this.id, lp, this.emu)
    this.emu.dir.set(this.id, { peerId: lp.peerId, addrs: lp.multiaddrs() })
    this.emu.byPeer.set(lp.peerId, this.id)
    this.node = new OverlayNode<RegValue>({ clock, rng: this.rng, logger: silentLogger, network: this.net, hasher, ringFactory: rings }, {
      membership: { protocolPeriod: s.overlay.protocolPeriod, pingTimeout: s.overlay.pingTimeout, suspicionMult: s.overlay.suspicionMult },
      store: {
        replicas: s.overlay.replicas, writeQuorum: s.overlay.writeQuorum, readQuorum: s.overlay.readQuorum,
        requestTimeout: s.overlay.requestTimeout, antiEntropyInterval: s.overlay.antiEntropyInterval,
        maxTtl: Math.max(s.workload.expires, 1000)
      }
    })
    await this.node.start()
  }

  async join (seeds: string[]): Promise<void> { await this.node!.join(seeds) }

  async leave (): Promise<void> {
    try { await this.node?.leave() } finally { await this.kill() }
  }

  async crash (): Promise<void> { await this.kill() }

  /** Silent at once (no answers, no sends, connections reset); then everything stops. Idempotent. */
  halt (): void {
    this.stopped = true
    if (this.net !== undefined) this.net.dead = true
    for (const c of this.lp?.libp2p.getConnections() ?? []) c.abort(new Error('crash'))
  }

  async kill (): Promise<void> {
    this.halt()
    if (this.emu.live.get(this.id) === this) this.emu.live.delete(this.id)
    const lp = this.lp
    this.lp = undefined
    try { await this.node?.stop() } catch { /* a crash: whatever the overlay was doing is gone */ }
    await lp?.stop().catch(() => {})
  }

  async put (key: string, value: RegValue, ttl: number, signal?: AbortSignal): Promise<void> {
    if (this.node === undefined) throw new OverlayUnreachableError('not started')
    await this.node.store.put(key, value, { ttl, signal })
  }

  async get (key: string, signal?: AbortSignal): Promise<RegValue | undefined> {
    if (this.node === undefined) throw new OverlayUnreachableError('not started')
    return await this.node.store.get(key, { signal })
  }

  local (key: string): RegValue | undefined {
    const it = this.node?.store.local(key)
    return it === undefined || it.deleted ? undefined : it.value
  }

  localItems (): number { return this.node?.store.getStats().items ?? 0 }
  viewSize (): number { return this.node?.ring.size ?? 0 }
}

/** The node factory of the emulation; `hub.crash(id)` (the engine's "crash now") halts the libp2p node too. */
export function emulationFactory (ctx: FactoryContext): NodeFactory<RegValue> & { emulator: Emulator } {
  const emu = new Emulator(ctx)
  const crash = ctx.hub.crash.bind(ctx.hub)
  ctx.hub.crash = (id: string): void => { crash(id); emu.live.get(id)?.halt() }
  return { emulator: emu, create: (id, rng) => new EmuNodeAdapter(id, rng, emu) }
}

/**
 * Runs a scenario in emulation: real libp2p nodes, a RealClock at `emulation.timeScale`. Every node
 * and timer is stopped before this resolves.
 */
export async function runEmulation (s: Scenario, opts: RunOptions = {}): Promise<RunResult> {
  let clock: RealClock | undefined
  let emu: Emulator | undefined
  try {
    return await runScenario(s, {
      ...opts,
      timeSource: epoch => (clock = new RealClock({ epoch, scale: s.emulation.timeScale })),
      nodeFactory: ctx => { const f = emulationFactory(ctx); emu = f.emulator; return f }
    })
  } finally {
    // nodes first (their close timeouts run on the clock), then every timer left
    await emu?.closeAll()
    clock?.close()
  }
}
