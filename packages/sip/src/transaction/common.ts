/**
 * Shared pieces of the RFC 3261 §17 transaction state machines (with the RFC 6026 changes).
 */
import type { Clock, Logger, Timer } from '@sipring/interface'
import { SipRequest, SipResponse } from '../message.js'

/** Base timer values (RFC 3261 §17.1.1.1, Table 4). All other timers derive from these. */
export interface TimerValues {
  /** RTT estimate, default 500 ms. */
  t1: number
  /** Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s. */
  t2: number
  /** Maximum duration a message remains in the network, default 5 s. */
  t4: number
}

export const DEFAULT_TIMERS: Readonly<TimerValues> = Object.freeze({ t1: 500, t2: 4000, t4: 5000 })

/** Thrown on an event that is not allowed in the current state (SIP.js style). */
export class TransactionStateError extends Error {
  readonly state: string
  constructor (message: string, state: string) {
    super(message)
    this.name = 'TransactionStateError'
    this.state = state
  }
}

/** What every transaction needs from its environment. */
export interface TransactionEnv {
  clock: Clock
  timers: TimerValues
  logger: Logger
}

/**
 * Sends bytes for a transaction. Must never throw synchronously; an asynchronous failure is reported
 * back by the owner through the transaction's `transportError()`.
 */
export type SendFn = (data: Buffer) => void

/** Timer helper: cancel-safe slot. */
export function cancelTimer (t: Timer | undefined): undefined {
  if (t !== undefined) t.cancel()
  return undefined
}

/**
 * @internal An independent copy of `s`: header values are slices of the whole received message text, and a
 * slice keeps that text alive. Short strings are copied by V8 anyway.
 */
export function ownString (s: string): string {
  // slicing a cons string makes V8 flatten it into a fresh string first; the result points into that
  // copy (an unused `s | 0` can be optimized away, this cannot)
  return s.length < 13 ? s : (' ' + s).slice(1)
}

const SLIM_HEADERS = new Set(['via', 'from', 'to', 'call-id', 'cseq'])

/**
 * A copy of `msg` reduced to what a transaction or a proxy still needs while it waits for a timer
 * after its final response (RFC 6026 Accepted: Timer L/M, 32 s): start line, Via, From, To, Call-ID and
 * CSeq (enough for `createResponse`), strings copied, no body. Keeps memory per call small at high
 * call rates, so those seconds do not hold whole messages (and the scavenger does not copy them).
 */
export function slimMessage<M extends SipRequest | SipResponse> (msg: M): M {
  const out = msg instanceof SipRequest ? new SipRequest(msg.method, ownString(msg.uri)) : new SipResponse((msg as SipResponse).status, (msg as SipResponse).reason)
  for (const h of msg.headers) if (SLIM_HEADERS.has(h.name)) out.headers.push({ name: h.name, value: ownString(h.value) })
  return out as M
}
