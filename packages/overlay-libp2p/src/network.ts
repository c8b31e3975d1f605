import './polyfill.js'
import type { Libp2p, PeerId as Libp2pPeerId, Stream } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { Clock, Logger, Timer } from '@sipring/interface'
import {
  DEFAULT_MESSAGE_LIMITS, OverlayAbortError, OverlayError, OverlayProtocolError, OverlayTimeoutError, OverlayUnreachableError,
  type MessageLimits, type OverlayMessage, type OverlayNetwork, type PeerId, type RequestHandler, type SendOptions
} from '@sipring/overlay'
import type { AdmissionGate } from './admission.js'
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameError, decodePayload, encodeFrame, type Frame } from './codec.js'

/** The libp2p protocol of the overlay's request/response stream. */
export const OVERLAY_PROTOCOL = '/sipring/overlay/1.1.0'

/** Too many requests to one peer are waiting for an answer (the limit is `maxOutstanding`). */
export class OverlayBusyError extends OverlayError {
  constructor (message = 'too many outstanding requests') { super('ERR_BUSY', message); this.name = 'OverlayBusyError' }
}

export interface OverlayNetworkLimits {
  /** Largest frame accepted or sent, in bytes (payload, without the 4-byte length). */
  maxFrameSize: number
  /** Requests to one peer waiting for their answer; one more rejects with {@link OverlayBusyError}. */
  maxOutstanding: number
  /** Requests from one peer being handled at once; one more is answered `{ type: 'error', code: 'ERR_BUSY' }`. */
  maxInflight: number
  /** Timeout of `send` when the caller gives none, ms. */
  defaultTimeout: number
  /** Longest time spent finding and dialling a peer, ms. */
  dialTimeout: number
  /** kad-dht lookups of an unknown peer before giving up, and the pause between them (ms). */
  lookupAttempts: number
  lookupRetryDelay: number
  /** Bytes queued for sending on one stream before the stream is reset (a peer that does not read). */
  maxWriteBuffer: number
  /** Deepest array/object nesting accepted in a frame; deeper → stream reset. */
  maxDepth: number
  /** Frames written to one stream in the same event-loop turn are sent as one write; past this many bytes queued, at once. */
  coalesceBytes: number
  /** Schema limits of incoming messages (array lengths, string lengths). */
  message: MessageLimits
}

export const DEFAULT_NETWORK_LIMITS: OverlayNetworkLimits = {
  maxFrameSize: DEFAULT_MAX_FRAME_SIZE,
  maxOutstanding: 1024,
  maxInflight: 1024,
  defaultTimeout: 5000,
  dialTimeout: 5000,
  lookupAttempts: 3,
  lookupRetryDelay: 200,
  maxWriteBuffer: 16 * 1024 * 1024,
  maxDepth: DEFAULT_MAX_DEPTH,
  coalesceBytes: 64 * 1024,
  message: DEFAULT_MESSAGE_LIMITS
}

export interface OverlayNetworkStats {
  requestsSent: number
  requestsReceived: number
  responsesReceived: number
  timeouts: number
  /** Streams opened by this node. */
  streamsOpened: number
  /** Streams accepted from peers. */
  streamsAccepted: number
  /** Undecodable frames (not JSON, bad envelope, oversized): the stream was reset. */
  badFrames: number
  /** Well-framed messages failing the schema check. */
  badMessages: number
  /** Responses whose request was no longer waiting (timed out or aborted). */
  unmatched: number
  /** Requests refused because of `maxInflight`. */
  busy: number
  /** Dials that failed on known addresses and were retried after a fresh kad-dht lookup. */
  relookups: number
  /** Peers admitted (credential verified) since start; 0 in an open overlay. */
  admitted: number
  /** Admission exchanges that failed (bad, expired, foreign or missing credential): the connection was closed. */
  admissionFailures: number
  /** Overlay streams or requests refused because their peer was not (or no longer) admitted. */
  unadmitted: number
  /** Streams of the other libp2p protocols (kad-dht, identify, ping) refused: peer not admitted. */
  unadmittedStreams: number
  /** kad-dht / ping streams not opened to a peer because it was not admitted. */
  unadmittedDials: number
}

interface Pending { resolve: (m: OverlayMessage) => void, reject: (e: Error) => void }

/** The minimal libp2p surface the network uses. */
export type OverlayHost = Pick<Libp2p, 'peerId' | 'handle' | 'unhandle' | 'dialProtocol' | 'getConnections' | 'peerStore' | 'peerRouting'>

export interface Libp2pOverlayNetworkComponents {
  libp2p: OverlayHost
  clock: Clock
  logger: Logger
}

/** One long-lived `/sipring/overlay/1.1.0` stream to a peer, carrying requests both ways. */
class Channel {
  readonly pending = new Map<number, Pending>()
  inflight = 0
  closed = false
  private nextId = 1
  private readonly decoder: FrameDecoder

  constructor (private readonly net: Libp2pOverlayNetwork, readonly peer: PeerId, readonly stream: Stream) {
    this.decoder = new FrameDecoder(net.limits.maxFrameSize)
    stream.maxWriteBufferLength = net.limits.maxWriteBuffer
    stream.addEventListener('message', (e) => { this.onData(e.data) })
    stream.addEventListener('close', (e) => { this.onClose(e.error) })
    stream.addEventListener('remoteCloseWrite', () => {
      this.onClose(undefined)
      stream.close().catch(() => { stream.abort(new Error('close failed')) })
    })
  }

  newId (): number { return this.nextId++ }

  /** Frames encoded since the last flush (sent together: one stream write, one noise/yamux frame). */
  private out: Uint8Array[] = []
  private outBytes = 0
  private flushScheduled = false

  /**
   * Queues one frame; every frame written in the same event-loop turn leaves in one stream write
   * (one yamux frame, one noise encryption, one socket write instead of one per frame), flushed at
   * the end of the turn (`setImmediate`) or at once past `coalesceBytes`.
   * Throws FrameError (too large) or OverlayUnreachableError (stream no longer writable).
   */
  write (frame: Frame): void {
    const bytes = encodeFrame(frame, this.net.limits.maxFrameSize)
    if (this.closed || this.stream.writeStatus !== 'writable') throw new OverlayUnreachableError(`stream to ${this.peer} is closed`)
    this.out.push(bytes)
    this.outBytes += bytes.length
    if (this.outBytes >= this.net.limits.coalesceBytes) { this.flush(); return }
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => { this.flushScheduled = false; this.flush() })
    }
  }

  /** Sends the queued frames as one write; a failed write closes the channel (its requests reject as unreachable). */
  flush (): void {
    if (this.out.length === 0) return
    const parts = this.out
    const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.outBytes)
    this.out = []
    this.outBytes = 0
    if (this.closed) return
    try {
      if (this.stream.writeStatus !== 'writable') throw new Error('stream is not writable')
      this.stream.send(bytes)
    } catch (err) {
      this.abort(new OverlayUnreachableError(`stream to ${this.peer}: ${(err as Error).message}`))
    }
  }

  abort (err: Error): void {
    this.onClose(err)
    this.stream.abort(err)
  }

  private onData (chunk: Uint8Array | Uint8ArrayList): void {
    if (this.closed) return
    this.decoder.push(chunk)
    try {
      for (let payload = this.decoder.next(); payload !== undefined; payload = this.decoder.next()) {
        const f = decodePayload(payload, this.net.limits.message, this.net.limits.maxDepth)
        if ('error' in f) {
          this.net.stats.badMessages++
          this.net.logger.debug({ peer: this.peer, id: f.id, kind: f.kind, error: f.error }, 'bad overlay message')
          if (f.kind === 'req') this.reply(f.id, { type: 'error', code: 'ERR_BAD_MESSAGE', message: f.error })
          else this.settle(f.id, undefined, new OverlayProtocolError(`bad response from ${this.peer}: ${f.error}`))
        } else if (f.kind === 'req') {
          this.net.serve(this, f.id, f.msg)
        } else {
          this.net.stats.responsesReceived++
          this.settle(f.id, f.msg)
        }
        if (this.closed) return
      }
    } catch (err) {
      // an exception escaping a stream event listener would be an uncaughtException: never let one out
      this.net.stats.badFrames++
      const code = err instanceof FrameError ? err.code : 'ERR_INTERNAL'
      this.net.logger.warn({ peer: this.peer, code, err: (err as Error).message }, 'bad overlay frame; resetting the stream')
      this.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  private settle (id: number, msg: OverlayMessage | undefined, err?: Error): void {
    const p = this.pending.get(id)
    if (p === undefined) { this.net.stats.unmatched++; return }
    this.pending.delete(id)
    if (err !== undefined) p.reject(err)
    else p.resolve(msg!)
  }

  reply (id: number, msg: OverlayMessage): void {
    if (this.closed) return
    try {
      this.write({ id, kind: 'res', msg })
    } catch (err) {
      if (err instanceof OverlayUnreachableError) return // the requester learns it from the stream's close
      const code = err instanceof FrameError ? 'ERR_TOO_LARGE' : 'ERR_ENCODE'
      this.net.logger.warn({ peer: this.peer, type: msg.type, code, err: (err as Error).message }, 'cannot send overlay response')
      try { this.write({ id, kind: 'res', msg: { type: 'error', code, message: (err as Error).message.slice(0, 200) } }) } catch {}
    }
  }

  private onClose (err: Error | undefined): void {
    if (this.closed) return
    this.closed = true
    this.net.forget(this)
    const reason = new OverlayUnreachableError(`stream to ${this.peer} closed${err !== undefined ? `: ${err.message}` : ''}`)
    const pending = [...this.pending.values()]
    this.pending.clear()
    for (const p of pending) p.reject(reason)
  }
}

/**
 * {@link OverlayNetwork} over libp2p: one long-lived stream per peer (reopened on demand), many
 * requests multiplexed on it by id, timeouts from the injected clock, every incoming message
 * schema-checked. Peers unknown to the peer store are looked up with the peer routing (kad-dht).
 */
export class Libp2pOverlayNetwork implements OverlayNetwork {
  readonly self: PeerId
  readonly limits: OverlayNetworkLimits
  readonly logger: Logger
  readonly stats: OverlayNetworkStats = {
    requestsSent: 0, requestsReceived: 0, responsesReceived: 0, timeouts: 0, streamsOpened: 0, streamsAccepted: 0,
    badFrames: 0, badMessages: 0, unmatched: 0, busy: 0, relookups: 0, admitted: 0, admissionFailures: 0, unadmitted: 0,
    unadmittedStreams: 0, unadmittedDials: 0
  }

  /** When set (a closed overlay), only admitted peers' streams are accepted and their requests served. */
  admission: AdmissionGate | undefined

  private readonly libp2p: OverlayHost
  private readonly clock: Clock
  private readonly handlers: RequestHandler[] = []
  /** The stream used to send to each peer. */
  private readonly channels = new Map<PeerId, Channel>()
  /** Every open stream (a peer may have opened one to us while we opened one to it). */
  private readonly all = new Set<Channel>()
  private readonly opening = new Map<PeerId, Promise<Channel>>()
  /** Addresses dialled directly for some peers (core nodes given by address): no peer-store or kad-dht lookup. */
  private readonly pinned = new Map<PeerId, Multiaddr[]>()
  private running = false

  constructor (components: Libp2pOverlayNetworkComponents, limits: Partial<OverlayNetworkLimits> = {}) {
    this.libp2p = components.libp2p
    this.clock = components.clock
    this.logger = components.logger
    this.limits = { ...DEFAULT_NETWORK_LIMITS, ...limits }
    this.self = this.libp2p.peerId.toString()
  }

  /** Registers the stream handler (before or after libp2p is started). */
  async start (): Promise<void> {
    if (this.running) return
    await this.libp2p.handle(OVERLAY_PROTOCOL, (stream, connection) => {
      if (!this.running) { stream.abort(new Error('overlay stopped')); return }
      const peer = connection.remotePeer.toString()
      const gate = this.admission
      if (gate === undefined || gate.isAdmitted(peer)) {
        this.stats.streamsAccepted++
        this.adopt(stream, peer, false)
        return
      }
      // nothing is read from the stream (libp2p buffers it) until the peer is admitted
      gate.waitAdmitted(peer).then(() => {
        if (!this.running) { stream.abort(new Error('overlay stopped')); return }
        this.stats.streamsAccepted++
        this.adopt(stream, peer, false)
      }, (err: Error) => {
        this.stats.unadmitted++
        this.logger.debug({ peer, err: err.message }, 'overlay stream from a peer not admitted: refused')
        stream.abort(new OverlayUnreachableError(`not admitted: ${err.message}`))
      })
    }, { maxInboundStreams: 4, maxOutboundStreams: 4 })
    this.running = true
  }

  /** Closes every stream; pending requests reject with OverlayUnreachableError. */
  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    await this.libp2p.unhandle(OVERLAY_PROTOCOL)
    for (const ch of [...this.all]) ch.abort(new OverlayUnreachableError('overlay network stopped'))
  }

  /** Runs `fn` after this event-loop turn's I/O callbacks (`setImmediate`): the store's batching window. */
  defer (fn: () => void): void { setImmediate(fn) }

  onRequest (handler: RequestHandler): () => void {
    this.handlers.push(handler)
    return () => { const i = this.handlers.indexOf(handler); if (i >= 0) this.handlers.splice(i, 1) }
  }

  /**
   * Always reach `peer` at these multiaddrs (each ending with its `/p2p/<id>`) when not connected: for
   * peers known by address and not by the ring (core nodes), so a dial after their restart needs no lookup.
   */
  pin (peer: PeerId, addrs: Multiaddr[]): void {
    if (addrs.length === 0) this.pinned.delete(peer)
    else this.pinned.set(peer, [...addrs])
  }

  /** Number of open overlay streams and of requests waiting for an answer. */
  load (): { streams: number, pending: number, inflight: number } {
    let pending = 0; let inflight = 0
    for (const ch of this.all) { pending += ch.pending.size; inflight += ch.inflight }
    return { streams: this.all.size, pending, inflight }
  }

  send (to: PeerId, msg: OverlayMessage, opts: SendOptions = {}): Promise<OverlayMessage> {
    return new Promise<OverlayMessage>((resolve, reject) => {
      let done = false
      let timer: Timer | undefined
      let ch: Channel | undefined
      let id = 0
      const signal = opts.signal
      const finish = (fn: () => void): void => {
        if (done) return
        done = true
        timer?.cancel()
        signal?.removeEventListener('abort', onAbort)
        if (ch !== undefined && id !== 0) ch.pending.delete(id)
        fn()
      }
      const onAbort = (): void => { finish(() => { reject(new OverlayAbortError()) }) }
      if (signal?.aborted === true) { onAbort(); return }
      if (!this.running) { finish(() => { reject(new OverlayUnreachableError('overlay network is not running')) }); return }
      signal?.addEventListener('abort', onAbort)
      const timeout = opts.timeout ?? this.limits.defaultTimeout
      timer = this.clock.setTimer(timeout, () => {
        this.stats.timeouts++
        finish(() => { reject(new OverlayTimeoutError(`${msg.type} to ${to} timed out after ${timeout} ms`)) })
      })
      this.stats.requestsSent++
      if (to === this.self) {
        void this.dispatch(structuredClone(msg), this.self).then(res => { finish(() => { resolve(res) }) })
        return
      }
      this.channelTo(to).then(c => {
        if (done) return
        if (c.pending.size >= this.limits.maxOutstanding) {
          finish(() => { reject(new OverlayBusyError(`${c.pending.size} requests to ${to} outstanding`)) })
          return
        }
        ch = c
        id = c.newId()
        c.pending.set(id, {
          resolve: (m) => { finish(() => { resolve(m) }) },
          reject: (e) => { finish(() => { reject(e) }) }
        })
        try {
          c.write({ id, kind: 'req', msg })
        } catch (err) {
          const e = err instanceof FrameError ? new OverlayProtocolError(err.message) : err as Error
          finish(() => { reject(e) })
        }
      }, (err: Error) => { finish(() => { reject(err) }) })
    })
  }

  /** @internal Handles one incoming request on `ch`. */
  serve (ch: Channel, id: number, msg: OverlayMessage): void {
    this.stats.requestsReceived++
    if (this.admission !== undefined && !this.admission.isAdmitted(ch.peer)) {
      // admitted when the stream was accepted, but the credential has expired since
      this.stats.unadmitted++
      ch.reply(id, { type: 'error', code: 'ERR_NOT_ADMITTED', message: 'peer not admitted to the overlay' })
      return
    }
    if (ch.inflight >= this.limits.maxInflight) {
      this.stats.busy++
      ch.reply(id, { type: 'error', code: 'ERR_BUSY', message: `${ch.inflight} requests in progress` })
      return
    }
    ch.inflight++
    void this.dispatch(msg, ch.peer).then(res => {
      ch.inflight--
      ch.reply(id, res)
    })
  }

  /** Runs the handlers in order; the first one that returns a message answers. Never rejects. */
  private async dispatch (msg: OverlayMessage, from: PeerId): Promise<OverlayMessage> {
    for (const h of [...this.handlers]) {
      try {
        const res = await h(msg, from)
        if (res !== undefined) return res
      } catch (err) {
        return { type: 'error', code: 'ERR_HANDLER', message: err instanceof Error ? err.message : String(err) }
      }
    }
    return { type: 'error', code: 'ERR_UNSUPPORTED', message: `no handler for ${msg.type}` }
  }

  /** @internal */
  forget (ch: Channel): void {
    this.all.delete(ch)
    if (this.channels.get(ch.peer) === ch) {
      this.channels.delete(ch.peer)
      for (const other of this.all) {
        if (other.peer === ch.peer && !other.closed) { this.channels.set(ch.peer, other); break }
      }
    }
  }

  private adopt (stream: Stream, peer: PeerId, outbound: boolean): Channel {
    const ch = new Channel(this, peer, stream)
    this.all.add(ch)
    const cur = this.channels.get(peer)
    if (outbound || cur === undefined || cur.closed) this.channels.set(peer, ch)
    return ch
  }

  private channelTo (peer: PeerId): Promise<Channel> {
    const cur = this.channels.get(peer)
    if (cur !== undefined && !cur.closed) return Promise.resolve(cur)
    let p = this.opening.get(peer)
    if (p === undefined) {
      p = this.open(peer).finally(() => { this.opening.delete(peer) })
      this.opening.set(peer, p)
    }
    return p
  }

  private async open (peer: PeerId): Promise<Channel> {
    let pid: Libp2pPeerId
    try {
      pid = peerIdFromString(peer)
    } catch {
      throw new OverlayUnreachableError(`not a peer id: ${JSON.stringify(peer.slice(0, 80))}`)
    }
    const ac = new AbortController()
    const timer = this.clock.setTimer(this.limits.dialTimeout, () => { ac.abort(new OverlayTimeoutError(`dialling ${peer} timed out`)) })
    try {
      const connected = this.libp2p.getConnections(pid).length > 0
      const pinned = connected ? undefined : this.pinned.get(peer)
      let looked = false
      if (!connected && pinned === undefined && !(await this.knowsAddresses(pid))) {
        // kad-dht holds its queries until it has a peer: with no connection at all there is nobody to ask
        if (this.libp2p.getConnections().length === 0) throw new OverlayUnreachableError(`peer ${peer} unknown and no peers to ask`)
        await this.lookup(pid, ac.signal, this.limits.lookupAttempts, true)
        looked = true
      }
      let stream: Stream
      try {
        stream = await this.libp2p.dialProtocol(pinned ?? pid, OVERLAY_PROTOCOL, { signal: ac.signal })
      } catch (err) {
        if (pinned !== undefined || looked || connected || ac.signal.aborted || this.libp2p.getConnections().length === 0) throw err
        // the addresses we knew failed: the peer may have restarted elsewhere; ask the DHT (not our cache) once
        this.stats.relookups++
        await this.lookup(pid, ac.signal, 1, false)
        stream = await this.libp2p.dialProtocol(pid, OVERLAY_PROTOCOL, { signal: ac.signal })
      }
      if (this.admission !== undefined && !this.admission.isAdmitted(peer)) {
        try {
          await this.admission.waitAdmitted(peer, ac.signal)
        } catch (err) {
          this.stats.unadmitted++
          stream.abort(err as Error)
          throw new OverlayUnreachableError(`peer ${peer} not admitted: ${(err as Error).message}`)
        }
      }
      if (!this.running) { stream.abort(new Error('overlay stopped')); throw new OverlayUnreachableError('overlay network stopped') }
      this.stats.streamsOpened++
      return this.adopt(stream, peer, true)
    } catch (err) {
      if (err instanceof OverlayUnreachableError) throw err
      throw new OverlayUnreachableError(`cannot reach ${peer}: ${(err as Error).message}`)
    } finally {
      timer.cancel()
    }
  }

  /**
   * kad-dht `findPeer`, retried `lookupAttempts` times `lookupRetryDelay` ms apart: right after a
   * join the routing tables fill in as identify completes, so a first miss is often transient.
   */
  private async lookup (pid: Libp2pPeerId, signal: AbortSignal, attempts: number, useCache: boolean): Promise<void> {
    let last: Error = new Error('not found')
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        await new Promise<void>(resolve => {
          const timer = this.clock.setTimer(this.limits.lookupRetryDelay, () => { signal.removeEventListener('abort', onAbort); resolve() })
          const onAbort = (): void => { timer.cancel(); resolve() }
          signal.addEventListener('abort', onAbort, { once: true })
        })
      }
      if (signal.aborted) break
      try {
        const info = await this.libp2p.peerRouting.findPeer(pid, { signal, useCache })
        if (info.multiaddrs.length > 0) await this.libp2p.peerStore.merge(pid, { multiaddrs: info.multiaddrs })
        return
      } catch (err) {
        last = err as Error
      }
    }
    throw new OverlayUnreachableError(`peer ${pid.toString()} not found: ${signal.aborted ? 'lookup timed out' : last.message}`)
  }

  private async knowsAddresses (pid: Libp2pPeerId): Promise<boolean> {
    try {
      const p = await this.libp2p.peerStore.get(pid)
      return p.addresses.length > 0
    } catch {
      return false
    }
  }
}
