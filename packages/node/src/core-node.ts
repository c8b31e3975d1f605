/**
 * The core-node role: holds the accounts and groups, replicated among the core nodes
 * ({@link AccountReplica}), and serves them to super nodes over the overlay network. Core nodes are
 * not members of the location ring (they run no SWIM and no store): super nodes reach them by id.
 *
 * {@link overlayAccountRpc} carries the accounts protocol in the overlay's generic `app` messages.
 */
import type { Clock, Logger, Rng, Startable } from '@sipring/interface'
import { AccountReplica, AccountRpcError, type AccountDb, type AccountReplicaStatus, type AccountRpc } from '@sipring/auth'
import { OverlayError, type OverlayNetwork, type PeerId } from '@sipring/overlay'

/** The {@link AccountRpc} port over an overlay network: requests are `app` messages claimed by `proto`. */
export function overlayAccountRpc (network: OverlayNetwork): AccountRpc {
  return {
    self: network.self,
    async call (peer, proto, body, opts = {}) {
      let res
      try {
        res = await network.send(peer, { type: 'app', proto, body }, {
          ...(opts.timeout !== undefined ? { timeout: opts.timeout } : {}),
          ...(opts.signal !== undefined ? { signal: opts.signal } : {})
        })
      } catch (err) {
        const code = err instanceof OverlayError ? err.code : 'ERR_UNREACHABLE'
        throw new AccountRpcError(code, (err as Error).message, false)
      }
      if (res.type === 'app.ok') return res.body
      if (res.type === 'error') {
        // a peer without the handler (not a core node, or not started) is a transport-level failure
        const remote = res.code !== 'ERR_UNSUPPORTED' && res.code !== 'ERR_BUSY' && res.code !== 'ERR_NOT_ADMITTED'
        throw new AccountRpcError(res.code, res.message, remote)
      }
      throw new AccountRpcError('ERR_PROTOCOL', `unexpected answer ${res.type} to ${proto}`, false)
    },
    serve (proto, handler) {
      return network.onRequest(async (msg, from) => {
        if (msg.type !== 'app' || msg.proto !== proto) return undefined
        try {
          return { type: 'app.ok', body: (await handler(msg.body, from)) ?? null }
        } catch (err) {
          const c = (err as { code?: unknown }).code
          const code = typeof c === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(c) ? c : 'ERR_HANDLER'
          return { type: 'error', code, message: ((err as Error).message ?? String(err)).slice(0, 1000) }
        }
      })
    }
  }
}

export interface CoreNodeComponents {
  clock: Clock
  rng: Rng
  logger: Logger
  /** The overlay network (overlay-libp2p or SimOverlayHub); this node's id is its `self`. */
  network: OverlayNetwork
  /** Where the accounts live (an abstract-level db with string keys). */
  db: AccountDb
}

export interface CoreNodeInit {
  /** The other core nodes. */
  peers: PeerId[]
  /** Anti-entropy with every other core node this often, ms (default 30 s). */
  antiEntropyInterval?: number
  /** Timeout of one replication request, ms (default 3000). */
  requestTimeout?: number
  /** Super nodes that read are told about changes this long after their last read, ms (default 10 min). */
  subscriberTtl?: number
  /**
   * Grace period of account tombstones, ms (default 7 days): a deleted user or group is forgotten
   * once older than this AND confirmed by every other core node (see AccountReplica).
   */
  tombstoneTtl?: number
}

export interface CoreNodeStatus {
  nodeId: PeerId
  running: boolean
  startedAt: number | undefined
  uptimeMs: number
  accounts: AccountReplicaStatus
}

export interface CoreNode extends Startable {
  readonly nodeId: PeerId
  /** The local replica: a full AccountStore (the admin API and CLI write through it). */
  readonly accounts: AccountReplica
  status(): CoreNodeStatus
}

class CoreNodeImpl implements CoreNode {
  readonly nodeId: PeerId
  readonly accounts: AccountReplica
  private readonly clock: Clock
  private readonly log: Logger
  private readonly network: OverlayNetwork
  private unhandle: (() => void) | undefined
  private startedAt: number | undefined
  private running = false

  constructor (c: CoreNodeComponents, init: CoreNodeInit) {
    this.clock = c.clock
    this.network = c.network
    this.nodeId = c.network.self
    this.log = c.logger.child({ node: this.nodeId, role: 'core' })
    this.accounts = new AccountReplica({
      db: c.db,
      clock: c.clock,
      logger: this.log,
      rpc: overlayAccountRpc(c.network),
      peers: init.peers,
      ...(init.antiEntropyInterval !== undefined ? { antiEntropyInterval: init.antiEntropyInterval } : {}),
      ...(init.requestTimeout !== undefined ? { requestTimeout: init.requestTimeout } : {}),
      ...(init.subscriberTtl !== undefined ? { subscriberTtl: init.subscriberTtl } : {}),
      ...(init.tombstoneTtl !== undefined ? { tombstoneTtl: init.tombstoneTtl } : {})
    })
  }

  async start (): Promise<void> {
    if (this.running) return
    await this.accounts.start()
    // a super node given this core node as a --join seed learns at once why it cannot join through it
    this.unhandle = this.network.onRequest(msg => msg.type.startsWith('swim.') || msg.type.startsWith('store.')
      ? { type: 'error', code: 'ERR_CORE_NODE', message: `${this.nodeId} is a core node: it is not in the location ring (join a super node; give core nodes with --core-node)` }
      : undefined)
    this.running = true
    this.startedAt = this.clock.now()
    this.log.info({ peers: this.accounts.peers }, 'core node started')
  }

  async stop (): Promise<void> {
    if (!this.running) return
    this.running = false
    this.unhandle?.(); this.unhandle = undefined
    await this.accounts.stop()
    this.log.info({}, 'core node stopped')
  }

  status (): CoreNodeStatus {
    return {
      nodeId: this.nodeId,
      running: this.running,
      startedAt: this.startedAt,
      uptimeMs: this.startedAt === undefined ? 0 : this.clock.now() - this.startedAt,
      accounts: this.accounts.status()
    }
  }
}

/** Build (not start) a core node. */
export function createCoreNode (components: CoreNodeComponents, init: CoreNodeInit): CoreNode {
  return new CoreNodeImpl(components, init)
}
