import type { Connection, Libp2p, PublicKey, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { Clock, Logger } from '@sipring/interface'
import type { PeerId } from '@sipring/overlay'
import { FrameDecoder, rawFrame } from './codec.js'
import { CredentialError, MAX_CREDENTIAL_SIZE, verifyCredential, type OverlayCredential } from './credential.js'

/** The libp2p protocol of the admission exchange. */
export const ADMIT_PROTOCOL = '/sipring/admit/1.0.0'

/** What the overlay network asks before it serves a peer. */
export interface AdmissionGate {
  isAdmitted: (peer: PeerId) => boolean
  /** Resolves once `peer` is admitted (running the exchange on an open connection if needed); rejects otherwise. */
  waitAdmitted: (peer: PeerId, signal?: AbortSignal) => Promise<void>
}

export interface AdmissionInit {
  /** The overlay's core public key: credentials must be signed by it. */
  core: PublicKey
  /** This node's own credential, shown to every peer. */
  credential: OverlayCredential
  /** Longest admission exchange, ms (default 5000). */
  timeout?: number
  /** After a failed admission, connections from/to that peer are refused by the gater for this long, ms (default 60 s). */
  refuseFor?: number
  /** Peers remembered (admitted or refused), each map bounded (default 10,000). */
  maxPeers?: number
}

export interface AdmissionStats { admitted: number, admissionFailures: number }

export type AdmissionHost = Pick<Libp2p, 'handle' | 'unhandle' | 'getConnections' | 'addEventListener' | 'removeEventListener'>

const MAX_ADMIT_FRAME = MAX_CREDENTIAL_SIZE + 512

/**
 * The admission exchange on `/sipring/admit/1.0.0`, run on every new connection (opened by its
 * dialler, or by whichever side first needs to use the connection). The initiator sends
 * `{ credential }`; the responder verifies it (signature by the core key, validity against the clock,
 * PeerId equal to the one noise authenticated) and answers with its own `{ credential }`, or with
 * `{ error }` and closes the connection. A failure on either side closes the connection, is logged and
 * counted (`admissionFailures`), and the peer is refused by the connection gater for `refuseFor` ms.
 * Admitted peers are cached until their credential's `notAfter`.
 */
export class Admission implements AdmissionGate {
  private readonly admitted = new Map<PeerId, number>()
  private readonly refused = new Map<PeerId, number>()
  private readonly pending = new Map<PeerId, Promise<void>>()
  private readonly timeout: number
  private readonly refuseFor: number
  private readonly maxPeers: number
  private running = false
  private readonly onOpen = (e: CustomEvent<Connection>): void => {
    if (!this.running) return
    const conn = e.detail
    if (conn.direction === 'outbound') { void this.exchange(conn).catch(() => {}); return }
    // the dialler runs the exchange; one that stays silent is closed after `timeout` ms
    const peer = conn.remotePeer.toString()
    this.clock.setTimer(this.timeout, () => {
      if (conn.status !== 'open' || this.isAdmitted(peer) || this.pending.has(peer)) return
      void this.fail(conn, peer, new CredentialError('ERR_BAD_CREDENTIAL', `no admission within ${this.timeout} ms`), 'inbound')
    })
  }

  constructor (
    private readonly host: AdmissionHost,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly init: AdmissionInit,
    readonly stats: AdmissionStats = { admitted: 0, admissionFailures: 0 }
  ) {
    this.timeout = init.timeout ?? 5000
    this.refuseFor = init.refuseFor ?? 60_000
    this.maxPeers = init.maxPeers ?? 10_000
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.host.handle(ADMIT_PROTOCOL, (stream, conn) => { void this.respond(stream, conn) }, { maxInboundStreams: 2, maxOutboundStreams: 2 })
    this.host.addEventListener('connection:open', this.onOpen)
    this.running = true
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.host.removeEventListener('connection:open', this.onOpen)
    await this.host.unhandle(ADMIT_PROTOCOL)
  }

  isAdmitted (peer: PeerId): boolean {
    const until = this.admitted.get(peer)
    if (until === undefined) return false
    if (this.clock.now() >= until) { this.admitted.delete(peer); return false }
    return true
  }

  /** Did `peer` fail admission less than `refuseFor` ms ago? (Used by the connection gater.) */
  isRefused (peer: PeerId): boolean {
    const until = this.refused.get(peer)
    if (until === undefined) return false
    if (this.clock.now() >= until) { this.refused.delete(peer); return false }
    return true
  }

  /** Peers currently admitted. */
  admittedPeers (): PeerId[] { return [...this.admitted.keys()].filter(p => this.isAdmitted(p)) }

  async waitAdmitted (peer: PeerId, signal?: AbortSignal): Promise<void> {
    if (this.isAdmitted(peer)) return
    let p = this.pending.get(peer)
    if (p === undefined) {
      let conns: Connection[] = []
      try { conns = this.host.getConnections(peerIdFromString(peer)).filter(c => c.status === 'open') } catch {}
      const conn = conns.at(-1)
      if (conn === undefined) throw new CredentialError('ERR_BAD_CREDENTIAL', `no connection to ${peer} to run the admission on`)
      p = this.exchange(conn)
    }
    await (signal === undefined ? p : Promise.race([p, new Promise<never>((_resolve, reject) => {
      if (signal.aborted) reject(signal.reason as Error)
      signal.addEventListener('abort', () => { reject(signal.reason as Error) }, { once: true })
    })]))
    if (!this.isAdmitted(peer)) throw new CredentialError('ERR_BAD_CREDENTIAL', `peer ${peer} not admitted`)
  }

  /** Runs the exchange as initiator on `conn` (joined with one already running for the peer). */
  private exchange (conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString()
    const cur = this.pending.get(peer)
    if (cur !== undefined) return cur
    const p = this.initiate(conn, peer).finally(() => { if (this.pending.get(peer) === p) this.pending.delete(peer) })
    this.pending.set(peer, p)
    return p
  }

  private async initiate (conn: Connection, peer: PeerId): Promise<void> {
    const ac = new AbortController()
    const timer = this.clock.setTimer(this.timeout, () => { ac.abort(new Error(`admission of ${peer} timed out after ${this.timeout} ms`)) })
    let stream: Stream | undefined
    try {
      stream = await conn.newStream(ADMIT_PROTOCOL, { signal: ac.signal })
      stream.send(rawFrame(JSON.stringify({ credential: this.init.credential })))
      const answer = await readFrame(stream, ac.signal)
      if (typeof answer.error === 'string') throw new Error(`refused by the peer: ${answer.error.slice(0, 200)}`)
      await this.verify(answer.credential, peer)
      await stream.close({ signal: ac.signal }).catch(() => {})
    } catch (err) {
      stream?.abort(err as Error)
      await this.fail(conn, peer, err as Error, 'outbound', ac.signal.aborted)
      throw err
    } finally {
      timer.cancel()
    }
  }

  private async respond (stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString()
    const ac = new AbortController()
    const timer = this.clock.setTimer(this.timeout, () => { ac.abort(new Error(`admission of ${peer} timed out after ${this.timeout} ms`)) })
    let settle: ((err?: Error) => void) | undefined
    if (!this.pending.has(peer)) {
      const p = new Promise<void>((resolve, reject) => { settle = (err) => { if (err === undefined) resolve(); else reject(err) } })
      p.catch(() => {})
      const q = p.finally(() => { if (this.pending.get(peer) === q) this.pending.delete(peer) })
      q.catch(() => {})
      this.pending.set(peer, q)
    }
    try {
      const req = await readFrame(stream, ac.signal)
      try {
        await this.verify(req.credential, peer)
      } catch (err) {
        try { stream.send(rawFrame(JSON.stringify({ error: (err as Error).message.slice(0, 200) }))) } catch {}
        await stream.close({ signal: ac.signal }).catch(() => {})
        throw err
      }
      stream.send(rawFrame(JSON.stringify({ credential: this.init.credential })))
      await stream.close({ signal: ac.signal }).catch(() => {})
      settle?.()
    } catch (err) {
      stream.abort(err as Error)
      settle?.(err as Error)
      await this.fail(conn, peer, err as Error, 'inbound', ac.signal.aborted)
    } finally {
      timer.cancel()
    }
  }

  private async verify (credential: unknown, peer: PeerId): Promise<void> {
    const until = await verifyCredential(credential, this.init.core, { now: this.clock.now(), peerId: peer })
    bounded(this.admitted, this.maxPeers)
    if (!this.admitted.has(peer)) this.stats.admitted++
    this.admitted.set(peer, until)
    this.refused.delete(peer)
    this.logger.debug({ peer, until: new Date(until).toISOString() }, 'overlay peer admitted')
  }

  /** Closes `conn` after a failed admission; the peer is refused for `refuseFor` unless the failure was a timeout. */
  private async fail (conn: Connection, peer: PeerId, err: Error, direction: string, timedOut = false): Promise<void> {
    this.stats.admissionFailures++
    if (!timedOut) {
      bounded(this.refused, this.maxPeers)
      this.refused.set(peer, this.clock.now() + this.refuseFor)
    }
    this.admitted.delete(peer)
    const code = err instanceof CredentialError ? err.code : 'ERR_ADMISSION'
    this.logger.warn({ peer, direction, code, err: err.message, addr: conn.remoteAddr.toString() }, 'overlay admission failed; closing the connection')
    // a graceful close (at most 1 s) lets an `{ error }` answer reach the peer before the connection goes
    const ac = new AbortController()
    const timer = this.clock.setTimer(1000, () => { ac.abort(new Error('close timed out')) })
    try { await conn.close({ signal: ac.signal }) } catch { conn.abort(err) } finally { timer.cancel() }
  }
}

function bounded (m: Map<unknown, unknown>, max: number): void {
  while (m.size >= max) { const k = m.keys().next().value; m.delete(k) }
}

/** Reads one admission frame `{ credential?, error? }` from `stream`. */
function readFrame (stream: Stream, signal: AbortSignal): Promise<{ credential?: unknown, error?: unknown }> {
  return new Promise((resolve, reject) => {
    const dec = new FrameDecoder(MAX_ADMIT_FRAME)
    let done = false
    const finish = (err: Error | undefined, val?: { credential?: unknown, error?: unknown }): void => {
      if (done) return
      done = true
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('close', onClose)
      stream.removeEventListener('remoteCloseWrite', onClose)
      signal.removeEventListener('abort', onAbort)
      if (err !== undefined) reject(err); else resolve(val!)
    }
    const onMessage = (e: { data: Uint8Array | Uint8ArrayList }): void => {
      try {
        dec.push(e.data)
        const p = dec.next()
        if (p === undefined) return
        const x: unknown = JSON.parse(Buffer.from(p).toString('utf8'))
        if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new CredentialError('ERR_BAD_CREDENTIAL', 'admission frame is not an object')
        finish(undefined, x as { credential?: unknown, error?: unknown })
      } catch (err) {
        finish(err instanceof CredentialError ? err : new CredentialError('ERR_BAD_CREDENTIAL', `bad admission frame: ${(err as Error).message}`))
      }
    }
    const onClose = (): void => { finish(new Error('admission stream closed before a credential arrived')) }
    const onAbort = (): void => { finish(signal.reason instanceof Error ? signal.reason : new Error('admission aborted')) }
    if (signal.aborted) { onAbort(); return }
    signal.addEventListener('abort', onAbort, { once: true })
    stream.addEventListener('close', onClose)
    stream.addEventListener('remoteCloseWrite', onClose)
    stream.addEventListener('message', onMessage)
  })
}
