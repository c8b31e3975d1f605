/**
 * Client transactions (RFC 3261 §17.1, RFC 6026 §7.2): INVITE (Calling/Proceeding/Accepted/Completed/
 * Terminated) and non-INVITE (Trying/Proceeding/Completed/Terminated).
 */
import type { Timer } from '@sipring/interface'
import { createResponse, serialize, SipRequest, type SipResponse } from '../message.js'
import { cancelTimer, slimMessage, TransactionStateError, type SendFn, type TransactionEnv } from './common.js'

export type InviteClientState = 'calling' | 'proceeding' | 'accepted' | 'completed' | 'terminated'
export type NonInviteClientState = 'trying' | 'proceeding' | 'completed' | 'terminated'
export type ClientState = InviteClientState | NonInviteClientState

/** Callbacks from a client transaction to its transaction user. */
export interface ClientTransactionUser {
  /** 101–199 responses (100 is absorbed by the transaction for non-INVITE, passed for INVITE). */
  onProvisional?: (res: SipResponse) => void
  /** Fires exactly once: the first final response, or a synthesized 408 (timeout) / 503 (transport error). */
  onFinal: (res: SipResponse) => void
  /** INVITE only: a further 2xx received in the Accepted state (retransmission or another fork). */
  onAdditional2xx?: (res: SipResponse) => void
}

export interface ClientTransactionInit {
  env: TransactionEnv
  request: SipRequest
  /** Branch of the top Via (added by the stack). */
  branch: string
  reliable: boolean
  send: SendFn
  user: ClientTransactionUser
  /** Called once when the transaction reaches Terminated (the owner removes it from its maps). */
  onTerminated: (tx: ClientTransaction) => void
}

export abstract class ClientTransaction {
  /**
   * The request as sent. Once a final response arrived it is reduced to its start line, Via, From, To,
   * Call-ID and CSeq ({@link slimMessage}): nothing retransmits it any more, and the transaction may
   * wait 32 s (Timer D/M) before it terminates.
   */
  request: SipRequest
  readonly branch: string
  readonly reliable: boolean
  /** Transaction key in the stack's map (`branch` + CSeq method); set by the owner. */
  key = ''
  abstract readonly kind: 'invite' | 'non-invite'
  abstract state: ClientState
  protected readonly env: TransactionEnv
  protected readonly sendFn: SendFn
  /** The transaction user (the stack's client context). */
  /** The transaction user; a non-INVITE transaction lets go of it once the final was delivered (Timer K). */
  user: ClientTransactionUser
  private readonly onTerminated: (tx: ClientTransaction) => void
  /** Serialized request, kept for retransmissions. */
  protected wire: Buffer | undefined
  protected finalDelivered = false

  constructor (init: ClientTransactionInit) {
    this.request = init.request
    this.branch = init.branch
    this.reliable = init.reliable
    this.env = init.env
    this.sendFn = init.send
    this.user = init.user
    this.onTerminated = init.onTerminated
  }

  /** Send the request and arm the timers. */
  abstract start (): void
  /** A response matched this transaction. */
  abstract receiveResponse (res: SipResponse): void
  /** The transport failed to send (RFC 3261 §17.1.4): report 503 and terminate. */
  abstract transportError (err?: Error): void
  /** Stop every timer and terminate without telling the user anything (stack shutdown). */
  abstract dispose (): void

  protected deliverFinal (res: SipResponse): void {
    if (this.finalDelivered) return
    this.finalDelivered = true
    this.user.onFinal(res)
  }

  protected synthesize (status: number, reason: string): SipResponse {
    return createResponse(this.request, status, reason)
  }

  protected terminated (): void {
    this.onTerminated(this)
  }

  protected invalid (event: string): never {
    throw new TransactionStateError(`${this.kind} client transaction: ${event} not allowed in state ${this.state}`, this.state)
  }
}

/** RFC 3261 §17.1.1 with RFC 6026 (Accepted state, Timer M). */
export class InviteClientTransaction extends ClientTransaction {
  readonly kind = 'invite' as const
  state: InviteClientState = 'calling'
  private timerA: Timer | undefined
  private timerB: Timer | undefined
  private timerD: Timer | undefined
  private timerM: Timer | undefined
  private intervalA = 0
  private ackWire: Buffer | undefined
  private timerCancel: Timer | undefined

  /**
   * A CANCEL was sent for this INVITE (§9.1): if no final response arrives within 64*T1, give up with a
   * synthesized 408 so the transaction cannot linger in Proceeding.
   */
  cancelSent (): void {
    if (this.state !== 'calling' && this.state !== 'proceeding') return
    this.timerCancel ??= this.env.clock.setTimer(64 * this.env.timers.t1, () => { this.fireCancel() })
  }

  private fireCancel (): void {
    this.timerCancel = undefined
    if (this.state !== 'calling' && this.state !== 'proceeding') return
    this.timerA = cancelTimer(this.timerA)
    this.timerB = cancelTimer(this.timerB)
    this.state = 'terminated'
    this.deliverFinal(this.synthesize(408, 'Request Timeout'))
    this.terminated()
  }

  start (): void {
    if (this.wire !== undefined) this.invalid('start')
    this.wire = serialize(this.request)
    const { clock, timers } = this.env
    // timers first: a transport that answers synchronously (in-memory) must find them to cancel
    if (!this.reliable) {
      this.intervalA = timers.t1
      this.timerA = clock.setTimer(this.intervalA, () => { this.fireA() })
    }
    this.timerB = clock.setTimer(64 * timers.t1, () => { this.fireB() })
    this.sendFn(this.wire)
  }

  private fireA (): void {
    this.timerA = undefined
    if (this.state !== 'calling') return
    this.sendFn(this.wire!)
    this.intervalA *= 2
    this.timerA = this.env.clock.setTimer(this.intervalA, () => { this.fireA() })
  }

  private fireB (): void {
    this.timerB = undefined
    if (this.state !== 'calling') return
    this.timerA = cancelTimer(this.timerA)
    this.timerCancel = cancelTimer(this.timerCancel)
    this.state = 'terminated'
    this.deliverFinal(this.synthesize(408, 'Request Timeout'))
    this.terminated()
  }

  private fireD (): void {
    this.timerD = undefined
    this.state = 'terminated'
    this.terminated()
  }

  private fireM (): void {
    this.timerM = undefined
    this.state = 'terminated'
    this.terminated()
  }

  receiveResponse (res: SipResponse): void {
    const s = res.status
    switch (this.state) {
      case 'calling':
      case 'proceeding':
        if (s < 200) {
          if (this.state === 'calling') {
            this.state = 'proceeding'
            this.timerA = cancelTimer(this.timerA)
            this.timerB = cancelTimer(this.timerB)
          }
          this.user.onProvisional?.(res)
        } else if (s < 300) {
          this.timerA = cancelTimer(this.timerA)
          this.timerB = cancelTimer(this.timerB)
          this.timerCancel = cancelTimer(this.timerCancel)
          this.state = 'accepted'
          this.wire = RELEASED
          this.request = slimMessage(this.request)
          this.timerM = this.env.clock.setTimer(64 * this.env.timers.t1, () => { this.fireM() })
          this.deliverFinal(res)
        } else {
          this.timerA = cancelTimer(this.timerA)
          this.timerB = cancelTimer(this.timerB)
          this.timerCancel = cancelTimer(this.timerCancel)
          this.state = 'completed'
          this.wire = RELEASED
          this.sendAck(res)
          this.request = slimMessage(this.request) // after the ACK was built from it
          this.deliverFinal(res)
          if (this.reliable) {
            this.state = 'terminated'
            this.terminated()
          } else {
            this.timerD = this.env.clock.setTimer(32000, () => { this.fireD() })
          }
        }
        return
      case 'accepted':
        if (s >= 200 && s < 300) { this.user.onAdditional2xx?.(res); return }
        return // provisional / non-2xx finals after a 2xx are absorbed
      case 'completed':
        if (s >= 300) this.sendFn(this.ackWire!) // retransmitted final: resend ACK
        return
      case 'terminated':
        this.invalid(`response ${s}`)
    }
  }

  /** RFC 3261 §17.1.1.3: ACK for a non-2xx final, same branch, To from the response, Route copied. */
  private sendAck (res: SipResponse): void {
    const req = this.request
    const ack = new SipRequest('ACK', req.uri)
    let seq = ''
    for (const h of req.headers) {
      switch (h.name) {
        case 'via':
          if (!ack.has('via')) ack.headers.push({ name: 'via', value: topValue(h.value) })
          break
        case 'from': case 'call-id': case 'route': case 'max-forwards':
          ack.headers.push({ name: h.name, value: h.value })
          break
        case 'cseq':
          seq = h.value.trim().split(/\s+/)[0] ?? ''
          break
        default: break
      }
    }
    const to = res.get('to') ?? req.get('to')
    if (to !== undefined) ack.headers.push({ name: 'to', value: to })
    ack.headers.push({ name: 'cseq', value: `${seq} ACK` })
    if (!ack.has('max-forwards')) ack.headers.push({ name: 'max-forwards', value: '70' })
    this.ackWire = serialize(ack)
    this.sendFn(this.ackWire)
  }

  transportError (): void {
    if (this.state !== 'calling') return // the ACK or a late send failed: nothing to report
    this.timerA = cancelTimer(this.timerA)
    this.timerCancel = cancelTimer(this.timerCancel)
    this.timerB = cancelTimer(this.timerB)
    this.state = 'terminated'
    this.deliverFinal(this.synthesize(503, 'Service Unavailable'))
    this.terminated()
  }

  dispose (): void {
    this.timerA = cancelTimer(this.timerA)
    this.timerB = cancelTimer(this.timerB)
    this.timerD = cancelTimer(this.timerD)
    this.timerM = cancelTimer(this.timerM)
    this.timerCancel = cancelTimer(this.timerCancel)
    this.state = 'terminated'
  }
}

/**
 * Replaces a client transaction's request bytes once a final response arrived: they are never
 * retransmitted again, and a transaction may wait up to 32 s (Timer D/M) or T4 (Timer K) before it
 * terminates, so the bytes are released early (memory at high call rates). Non-undefined, so a second
 * `start()` is still refused.
 */
const RELEASED = Buffer.alloc(0)

const NO_USER: ClientTransactionUser = { onFinal: () => {} }

/** RFC 3261 §17.1.2. */
export class NonInviteClientTransaction extends ClientTransaction {
  readonly kind = 'non-invite' as const
  state: NonInviteClientState = 'trying'
  private timerE: Timer | undefined
  private timerF: Timer | undefined
  private timerK: Timer | undefined
  private intervalE = 0

  start (): void {
    if (this.wire !== undefined) this.invalid('start')
    this.wire = serialize(this.request)
    const { clock, timers } = this.env
    // timers first: a transport that answers synchronously (in-memory) must find them to cancel
    if (!this.reliable) {
      this.intervalE = timers.t1
      this.timerE = clock.setTimer(this.intervalE, () => { this.fireE() })
    }
    this.timerF = clock.setTimer(64 * timers.t1, () => { this.fireF() })
    this.sendFn(this.wire)
  }

  private fireE (): void {
    this.timerE = undefined
    if (this.state !== 'trying' && this.state !== 'proceeding') return
    this.sendFn(this.wire!)
    // Trying: double up to T2; Proceeding: always T2 (§17.1.2.2)
    this.intervalE = this.state === 'trying' ? Math.min(2 * this.intervalE, this.env.timers.t2) : this.env.timers.t2
    this.timerE = this.env.clock.setTimer(this.intervalE, () => { this.fireE() })
  }

  private fireF (): void {
    this.timerF = undefined
    if (this.state !== 'trying' && this.state !== 'proceeding') return
    this.timerE = cancelTimer(this.timerE)
    this.state = 'terminated'
    this.deliverFinal(this.synthesize(408, 'Request Timeout'))
    this.terminated()
  }

  private fireK (): void {
    this.timerK = undefined
    this.state = 'terminated'
    this.terminated()
  }

  receiveResponse (res: SipResponse): void {
    const s = res.status
    switch (this.state) {
      case 'trying':
      case 'proceeding':
        if (s < 200) {
          this.state = 'proceeding'
          if (s > 100) this.user.onProvisional?.(res)
          return
        }
        this.timerE = cancelTimer(this.timerE)
        this.timerF = cancelTimer(this.timerF)
        this.state = 'completed'
        this.wire = RELEASED
        this.request = slimMessage(this.request)
        this.deliverFinal(res)
        // Completed only absorbs retransmissions: release the TU (e.g. a proxy's whole response
        // context) now rather than after Timer K
        this.user = NO_USER
        if (this.reliable) {
          this.state = 'terminated'
          this.terminated()
        } else {
          this.timerK = this.env.clock.setTimer(this.env.timers.t4, () => { this.fireK() })
        }
        return
      case 'completed':
        return // retransmissions absorbed
      case 'terminated':
        this.invalid(`response ${s}`)
    }
  }

  transportError (): void {
    if (this.state !== 'trying' && this.state !== 'proceeding') return
    this.timerE = cancelTimer(this.timerE)
    this.timerF = cancelTimer(this.timerF)
    this.state = 'terminated'
    this.deliverFinal(this.synthesize(503, 'Service Unavailable'))
    this.terminated()
  }

  dispose (): void {
    this.timerE = cancelTimer(this.timerE)
    this.timerF = cancelTimer(this.timerF)
    this.timerK = cancelTimer(this.timerK)
    this.state = 'terminated'
  }
}

/** First value of a (possibly comma-joined) Via line. */
function topValue (v: string): string {
  let q = false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (q) { if (c === 92) i++; else if (c === 34) q = false } else if (c === 34) q = true
    else if (c === 44) return v.slice(0, i).trim()
  }
  return v.trim()
}
