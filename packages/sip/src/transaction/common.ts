/**
 * Shared pieces of the RFC 3261 §17 transaction state machines (with the RFC 6026 changes).
 */
import type { Clock, Logger, Timer } from '@sipring/interface'

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
