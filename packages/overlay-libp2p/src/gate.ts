import type { Connection, PeerId as Libp2pPeerId, Stream, StreamHandler, StreamHandlerOptions, Topology } from '@libp2p/interface'
import type { Clock, Logger } from '@sipring/interface'
import type { PeerId } from '@sipring/overlay'
import type { AdmissionGate } from './admission.js'

/** Counters of the gate (merged into the overlay network's stats). */
export interface GateStats {
  /** Streams of libp2p protocols (kad-dht, identify, ping) refused because their peer was not admitted. */
  unadmittedStreams: number
  /** kad-dht / ping streams this node did not open because the peer was not admitted. */
  unadmittedDials: number
}

export interface ServiceGateInit {
  /** The admission (set once the node is built: services are created before it). */
  gate: () => AdmissionGate | undefined
  clock: Clock
  logger: Logger
  /** Counts one refusal. */
  count: (what: keyof GateStats) => void
  /** Longest wait for an admission before a stream is refused, ms. */
  timeout: () => number
}

interface RegistrarLike {
  handle: (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions) => Promise<void>
  register: (protocol: string, topology: Topology) => Promise<string>
}

interface ConnectionManagerLike {
  openConnection: (peer: Libp2pPeerId | unknown, options?: { signal?: AbortSignal }) => Promise<Connection>
}

/**
 * Wraps a libp2p service factory so that everything the service does with peers waits for their
 * admission (`/sipring/admit/1.0.0`):
 * - its stream handlers (`registrar.handle`) serve a stream only once the remote peer is admitted
 *   (an exchange is started if none is running; it fails and closes the connection for an unenrolled
 *   peer), else the stream is aborted unread;
 * - its topologies (`registrar.register`: how kad-dht fills its routing table) hear of a peer only
 *   once admitted, so an unenrolled peer never enters the routing table;
 * - the streams it opens (`connectionManager.openStream`: kad-dht queries, ping) go to admitted peers only.
 * Identify opens its streams on the connection directly: it only reads the peer's identify message,
 * which updates the peer store, whose protocol changes reach kad-dht through the (gated) topology.
 */
export function gateService<C extends object, S> (factory: (components: C) => S, init: ServiceGateInit): (components: C) => S {
  return (components: C): S => factory(gatedComponents(components, init))
}

function gatedComponents<C extends object> (components: C, init: ServiceGateInit): C {
  let registrar: RegistrarLike | undefined
  let cm: object | undefined
  return new Proxy(components, {
    get (target, prop) {
      const v: unknown = Reflect.get(target, prop)
      if (prop === 'registrar' && typeof v === 'object' && v !== null) return (registrar ??= gatedRegistrar(v as RegistrarLike, init))
      if (prop === 'connectionManager' && typeof v === 'object' && v !== null) return (cm ??= gatedConnectionManager(v as ConnectionManagerLike, init))
      return v
    }
  })
}

/** Resolves true once `peer` is admitted (at most `timeout` ms), false otherwise. */
async function admitted (init: ServiceGateInit, peer: PeerId, signal?: AbortSignal): Promise<boolean> {
  const gate = init.gate()
  if (gate === undefined || gate.isAdmitted(peer)) return true
  const ac = new AbortController()
  const timer = init.clock.setTimer(init.timeout(), () => { ac.abort(new Error('admission wait timed out')) })
  const onAbort = (): void => { ac.abort(signal?.reason) }
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    await gate.waitAdmitted(peer, ac.signal)
    return true
  } catch {
    return false
  } finally {
    timer.cancel()
    signal?.removeEventListener('abort', onAbort)
  }
}

function bindAll<T extends object> (target: T, overrides: Partial<Record<string | symbol, unknown>>): T {
  return new Proxy(target, {
    get (t, prop) {
      if (Object.prototype.hasOwnProperty.call(overrides, prop)) return overrides[prop]
      const v: unknown = Reflect.get(t, prop)
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v
    }
  })
}

function gatedRegistrar (real: RegistrarLike, init: ServiceGateInit): RegistrarLike {
  const handle = async (protocol: string, handler: StreamHandler, options?: StreamHandlerOptions): Promise<void> => {
    const gated = async (stream: Stream, connection: Connection): Promise<void> => {
      const gate = init.gate()
      const peer = connection.remotePeer.toString()
      if (gate !== undefined && !gate.isAdmitted(peer)) {
        // nothing is read from the stream (libp2p buffers it) until the peer is admitted
        if (!(await admitted(init, peer))) {
          init.count('unadmittedStreams')
          init.logger.debug({ peer, protocol }, 'stream from a peer not admitted: refused')
          stream.abort(new Error(`${protocol}: peer not admitted to the overlay`))
          return
        }
      }
      await handler(stream, connection)
    }
    await real.handle(protocol, gated, options)
  }
  const register = async (protocol: string, topology: Topology): Promise<string> => {
    const onConnect = topology.onConnect
    const wrapped: Topology = {
      ...topology,
      ...(onConnect !== undefined
        ? {
            onConnect: async (peerId: Libp2pPeerId, conn: Connection): Promise<void> => {
              const peer = peerId.toString()
              if (!(await admitted(init, peer))) {
                init.logger.debug({ peer, protocol }, 'peer not admitted: hidden from the service')
                return
              }
              await onConnect.call(topology, peerId, conn)
            }
          }
        : {})
    }
    return await real.register(protocol, wrapped)
  }
  return bindAll(real, { handle, register })
}

function gatedConnectionManager (real: ConnectionManagerLike, init: ServiceGateInit): object {
  const openStream = async (peer: Libp2pPeerId | unknown, protocol: string | string[], options: { signal?: AbortSignal } = {}): Promise<Stream> => {
    const conn = await real.openConnection(peer, options)
    const id = conn.remotePeer.toString()
    if (!(await admitted(init, id, options.signal))) {
      init.count('unadmittedDials')
      throw new Error(`peer ${id} not admitted to the overlay`)
    }
    return await conn.newStream(protocol, options)
  }
  return bindAll(real, { openStream })
}
