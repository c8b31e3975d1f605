/**
 * The tiny request/response port the accounts of the core nodes travel on. @sipring/auth does not
 * import the overlay (it sits beside it in the package DAG): @sipring/node implements this port over
 * the overlay network's generic `app` messages (`overlayAccountRpc`), tests with an in-memory hub.
 */

export interface AccountRpcOptions {
  /** Reject with code `ERR_TIMEOUT` when no answer came within this many ms. */
  timeout?: number
  signal?: AbortSignal
}

/** Serves one request; the resolved value is the answer body. Throwing an Error with a string `code` answers that code. */
export type AccountRpcHandler = (body: unknown, from: string) => unknown

export interface AccountRpc {
  /** This node's id on the network (a PeerId). */
  readonly self: string
  /**
   * Send `body` to `peer` under `proto`; resolves with the answer body. Rejects with an
   * {@link AccountRpcError}: `remote: true` when the peer's handler threw (its `code` is kept, e.g.
   * an AccountError code), `remote: false` for transport failures (timeout, unreachable, aborted).
   */
  call(peer: string, proto: string, body: unknown, opts?: AccountRpcOptions): Promise<unknown>
  /** Answer requests of `proto`; returns a function that stops serving. */
  serve(proto: string, handler: AccountRpcHandler): () => void
}

export class AccountRpcError extends Error {
  constructor (readonly code: string, message: string, readonly remote: boolean) {
    super(message)
    this.name = 'AccountRpcError'
  }
}

/** Requests to core nodes: reads and writes of super nodes and admin tools, replication between core nodes. */
export const ACCOUNTS_PROTO = 'sipring/accounts/1'
/** Invalidations pushed by core nodes to the super nodes that read from them. */
export const ACCOUNTS_NOTIFY_PROTO = 'sipring/accounts-notify/1'
