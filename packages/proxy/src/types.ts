import type { Binding, Clock, Destination, Endpoint, Logger, Rng, Source, TransportProtocol } from '@sipring/interface'
import type { SipMessage, SipRequest, SipResponse } from '@sipring/sip'
import type { GroupLimits, GroupSource } from './groups.js'
import type { GroupForking } from './fork.js'

/** Callbacks of one client transaction (a proxy branch). */
export interface BranchHandlers {
  onProvisional?: (res: SipResponse) => void
  /** Fires exactly once: the real final response, or a synthesized 408 (timeout) / 503 (transport error). */
  onFinal: (res: SipResponse) => void
  /** INVITE: further 2xx while the client transaction is Accepted (RFC 6026). */
  onAdditional2xx?: (res: SipResponse) => void
  /** Branch hint for the stack's Via (ignored by stacks that choose their own). */
  branch?: string
}

/** What the proxy needs back from `stack.sendRequest`. */
export interface ClientContextLike {
  /** CANCEL this INVITE client transaction (RFC 3261 §9.1: deferred until a provisional arrived). */
  cancel(): void
  readonly branch: string
}

/** What the proxy needs from a server transaction. */
export interface ServerTxLike {
  readonly request?: SipRequest
  readonly source: Source
  respond(res: SipResponse): void
  onCancel?: ((cancel: SipRequest) => void) | undefined
}

/** The part of a transport the proxy looks at. */
export interface TransportLike {
  readonly protocol: TransportProtocol
  readonly local: Endpoint
  hasConnection(connectionId: string): boolean
}

/**
 * The narrow slice of `SipStack` (@sipring/sip) the proxy uses; the real stack satisfies it
 * structurally. Tests pass a fake.
 */
export interface ProxyStack {
  /** Listening transports: our own endpoints (Route / Via / Request-URI recognition) and open connections. */
  readonly transports: readonly TransportLike[]
  /**
   * Start a client transaction; the stack prepends its Via. `branch` is a hint (RFC 3261 §16.6 step 8
   * branch); the proxy copes with a stack that picks its own and reports it in `ClientContextLike.branch`.
   */
  sendRequest(req: SipRequest, dest: Destination, handlers: BranchHandlers): ClientContextLike
  /** Send without a transaction (ACK for 2xx, stateless forwarding); a request gets no Via here. */
  sendStateless(msg: SipMessage, dest: Destination): unknown
  /** RFC 3263 subset: URI → destination (maddr, transport param, sips → tls, default ports). */
  resolveTarget(uri: string): Promise<Destination>
  /** The full Via value the stack would add on a request to `dest` (with this branch). */
  viaFor(dest: Destination, branch?: string): string
  /** The transport a message to `dest` leaves through. */
  transportFor(dest: Destination): TransportLike | undefined
}

/** What the proxy needs from the location service. */
export interface LocationLike {
  lookup(aor: string): Binding[] | Promise<Binding[]>
}

export interface ProxyLimits {
  /** Maximum number of branches one request forks to (default 16). */
  maxBranches: number
  /** Max-Forwards added when absent, and cap of larger values (default 70). */
  maxForwards: number
}

export interface ProxyTimers {
  /** RFC 3261 §16.6 step 11 Timer C: must be > 3 min (default 181 000 ms). */
  timerC: number
  /** How long a CANCELled branch may take to send its final response before it is given up (64*T1). */
  cancelTimeout: number
  /**
   * Sequential / q-ordered forking of INVITE: how long one group of targets may ring before it is
   * CANCELled and the next group tried (default 30 000 ms; 0 = wait for the group's final responses).
   */
  groupTimeout: number
  /**
   * Distributed group forking: a fork request to an owner node that got no provisional response
   * (not even `100 Trying`) within this many ms is given up and its members re-resolved through the
   * next replica owner (default 2000 ms).
   */
  forkTimeout: number
}

/**
 * How a target set with several contacts is tried (RFC 3261 §16.6 step 1, §16.7 step 3):
 * - `parallel`: every target at once (default);
 * - `q`: groups of equal q-value, highest first, parallel within a group;
 * - `sequential`: one target at a time, in q order.
 * The next group starts when the current one ended without a 2xx/6xx (or after `groupTimeout`).
 */
export type ForkingMode = 'parallel' | 'q' | 'sequential'

export interface ProxyOptions {
  stack: ProxyStack
  location: LocationLike
  clock: Clock
  rng: Rng
  logger?: Logger
  /** Local domains; empty = every domain name (not foreign IP literals) is local. */
  domains?: string[]
  /** Host names / addresses that also mean "this node" (public name, NAT address). */
  aliases?: string[]
  /** Add Record-Route to dialog-creating requests (default true). */
  recordRoute?: boolean
  /** AOR normalisation (default: @sipring/sip `aorOf`). */
  aorOf?: (uri: string) => string
  limits?: Partial<ProxyLimits>
  timers?: Partial<ProxyTimers>
  /** Forking mode (default `parallel`). */
  forking?: ForkingMode
  /** Proxy-Require option tags this proxy understands (default none). */
  supported?: string[]
  /** Id of this node: bindings whose `node` differs were registered at another super node. */
  nodeId?: string
  /**
   * Overlay hook: the SIP URI of another super node (e.g. `sip:10.0.0.2:5060;transport=tcp`), used to
   * reach clients attached there: the request keeps its Request-URI and gets a Route to that node
   * (with `;sr=local`: the node forks to its own bindings only, so nodes never ping-pong). Without it
   * (or when it returns undefined) a foreign binding is reached through its Path / Contact.
   */
  nodeRoute?: (nodeId: string) => string | undefined
  /**
   * Group calls, centralized mode: a request whose Request-URI AOR is a group is forked by
   * this node to the union of its members' bindings (`ring-all`: all at once; `hunt`: member by member
   * in list order, each for `groupLimits.memberTimeout`). Nested groups are expanded (loops cut).
   */
  groups?: GroupSource
  groupLimits?: Partial<GroupLimits>
  /**
   * How a group call is forked (default `centralized`): `centralized` = this node forks to every
   * member's contacts; `distributed` (needs `owners` and `nodeRoute`) = one fork request per owner node
   * of the members (Route `<owner;lr;sr=fork>`, `Sipring-Fork` header), members owned by this node forked here.
   */
  groupForking?: GroupForking
  /**
   * Distributed forking: the live owner nodes of an AOR's location key, in ring order (first = the
   * node that forks to it; the next ones are tried when it fails). May include this node's `nodeId`.
   */
  owners?: (aor: string) => readonly string[]
  /**
   * Distributed forking: is this request's source a known peer super node? Only then is a fork request
   * (`sr=fork` Route + `Sipring-Fork`) honoured; otherwise the header is removed and the request
   * handled as an ordinary one.
   */
  forkPeer?: (source: Source) => boolean
  /**
   * Distributed forking: this node's own registrations of an AOR (usrloc only, no overlay read). The
   * originating node forks to the group members attached to it directly and tells the owners (Route
   * `fork-from=<nodeId>`) to leave those bindings out, so no call goes S → owner → S.
   */
  localLookup?: (aor: string) => Binding[]
  /**
   * Distributed forking: who forks to the members this node owns — `replica` (default: their next
   * live owner, which holds a replica of their bindings: fewer branches here; this node forks to them
   * only when no other owner is left) or `here` (this node).
   */
  forkOwnMembers?: 'here' | 'replica'
}

/** Counters, all monotonic except `activeContexts`. */
export interface ProxyStats {
  /** Requests handed to handleRequest. */
  requestsIn: number
  /** ACKs handed to handleAck. */
  acksIn: number
  /** Stray responses handed to handleStrayResponse. */
  strayResponsesIn: number
  /** Responses received on branches (provisional and final, including synthesized ones). */
  branchResponsesIn: number
  /** Branches created (client transactions started). */
  branches: number
  /** CANCELs requested on branches. */
  cancelsSent: number
  /** Responses forwarded upstream through the server transaction. */
  responsesForwarded: number
  /** Responses generated by the proxy itself (4xx/5xx, OPTIONS 200, 487 …). */
  localResponses: number
  /** Messages sent statelessly (ACK for 2xx, stray 2xx retransmissions). */
  statelessSent: number
  /** Messages dropped (bad ACK, stray response not for us, loop on ACK …). */
  dropped: number
  loopsDetected: number
  timerCFired: number
  /** Response contexts currently alive. */
  activeContexts: number
  /** Branch results made up by the proxy (unresolvable target, Timer C, CANCEL timeout …). */
  synthesized: number
  /**
   * Derived: SIP messages the proxy handled (requests, ACKs, stray responses, branch responses minus
   * synthesized ones) and sent (branch requests, CANCELs, responses, stateless sends). Transaction-layer
   * retransmissions and the stack's own 100 Trying / CANCEL 200 are not included.
   */
  messagesIn: number
  messagesOut: number
  /** Distributed group forking: fork requests sent to owner nodes (re-forks included). */
  forkRequests: number
  /** Fork requests accepted from peer nodes (their member lists forked here). */
  forksAccepted: number
  /** `Sipring-Fork` headers removed without being honoured (untrusted source, no `sr=fork` Route). */
  forksRejected: number
  /** Fork requests given up (transport error / timeout before any provisional) and re-resolved. */
  forkRetries: number
  /** Members forked by this node itself because no untried owner was left. */
  forkFallbacks: number
}

export interface Proxy {
  handleRequest(req: SipRequest, tx: ServerTxLike): Promise<void>
  handleAck(ack: SipRequest, source: Source): Promise<void>
  handleStrayResponse(res: SipResponse, source: Source): void
  stats(): ProxyStats
}
