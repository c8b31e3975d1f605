/**
 * Server transactions (RFC 3261 §17.2, RFC 6026 §7.1): INVITE (Proceeding/Accepted/Completed/
 * Confirmed/Terminated) and non-INVITE (Trying/Proceeding/Completed/Terminated).
 */
import type { Source, Timer } from '@sipring/interface'
import { createResponse, serialize, type SipRequest, type SipResponse } from '../message.js'
import { cancelTimer, slimMessage, TransactionStateError, type SendFn, type TransactionEnv } from './common.js'

export type InviteServerState = 'proceeding' | 'accepted' | 'completed' | 'confirmed' | 'terminated'
export type NonInviteServerState = 'trying' | 'proceeding' | 'completed' | 'terminated'
export type ServerState = InviteServerState | NonInviteServerState

export interface ServerTransactionInit {
  env: TransactionEnv
  request: SipRequest
  source: Source
  reliable: boolean
  send: SendFn
  /** Called once when the transaction reaches Terminated (the owner removes it from its maps). */
  onTerminated: (tx: ServerTransaction) => void
  /** INVITE: send `100 Trying` if the TU has not sent a provisional within this many ms (default 200). */
  tryingDelay?: number
  /**
   * INVITE: answer `408` and complete when the TU has sent no final response after this many ms (a guard
   * against a stuck TU; a proxy's Timer C acts long before). Default 300,000; 0 disables.
   */
  maxProceeding?: number
  /** INVITE: an ACK received in the Accepted state (passed to the TU per RFC 6026). */
  onAcceptedAck?: (ack: SipRequest, source: Source) => void
  /**
   * non-INVITE over an unreliable transport: when given and returning true, the owner takes over the
   * Completed state (answering request retransmissions with `wire` until Timer J) in a compact form, and
   * this transaction terminates at once, releasing the request and response objects.
   */
  handOffCompleted?: (tx: ServerTransaction, wire: Buffer) => boolean
}

export abstract class ServerTransaction {
  /**
   * The request that created the transaction (top Via already carries received/rport). An INVITE
   * transaction in Accepted keeps only its start line, Via, From, To, Call-ID and CSeq ({@link slimMessage}).
   */
  request: SipRequest
  /** Where the request came from (transport, address, port, connection). */
  readonly source: Source
  readonly reliable: boolean
  abstract readonly kind: 'invite' | 'non-invite'
  abstract state: ServerState
  /** Key in the stack's map; set by the owner. */
  key = ''
  /** INVITE only: called when a CANCEL matched this transaction (the stack already answered it 200). */
  onCancel: ((cancel: SipRequest) => void) | undefined = undefined
  /** The last response sent (undefined before the first); reduced like `request` in Accepted. */
  lastResponse: SipResponse | undefined
  protected readonly env: TransactionEnv
  protected readonly sendFn: SendFn
  private readonly onTerminatedFn: (tx: ServerTransaction) => void
  protected wire: Buffer | undefined

  constructor (init: ServerTransactionInit) {
    this.request = init.request
    this.source = init.source
    this.reliable = init.reliable
    this.env = init.env
    this.sendFn = init.send
    this.onTerminatedFn = init.onTerminated
  }

  /** The method of the request that created the transaction. */
  get method (): string { return this.request.method }

  /** Has a final response been sent? */
  get isFinal (): boolean { return this.lastResponse !== undefined && this.lastResponse.status >= 200 }

  /**
   * Send a response through the transaction (retransmissions and timers handled here).
   * Throws {@link TransactionStateError} when not allowed in the current state (e.g. a second non-2xx final).
   */
  abstract respond (res: SipResponse): void
  /** A retransmission of the request arrived. */
  abstract receiveRequest (req: SipRequest): void
  /** The transport failed to send a response (RFC 3261 §17.2.4 / RFC 6026). */
  abstract transportError (err?: Error): void
  /** Cancel all timers, terminate silently (stack shutdown). */
  abstract dispose (): void

  /** Convenience: `respond(createResponse(request, status, reason, toTag))`. */
  reply (status: number, reason?: string, toTag?: string): SipResponse {
    const res = createResponse(this.request, status, reason, toTag)
    this.respond(res)
    return res
  }

  protected transmit (res: SipResponse): void {
    this.lastResponse = res
    this.wire = serialize(res)
    this.sendFn(this.wire)
  }

  protected terminated (): void {
    this.onTerminatedFn(this)
  }

  protected invalid (event: string): never {
    throw new TransactionStateError(`${this.kind} server transaction: ${event} not allowed in state ${this.state}`, this.state)
  }
}

function checkStatus (res: SipResponse): void {
  if (!Number.isInteger(res.status) || res.status < 100 || res.status > 699) {
    throw new RangeError(`invalid response status ${String(res.status)}`)
  }
}

/** RFC 3261 §17.2.1 with RFC 6026 (Accepted state, Timer L). */
export class InviteServerTransaction extends ServerTransaction {
  readonly kind = 'invite' as const
  state: InviteServerState = 'proceeding'
  private timerTrying: Timer | undefined
  private timerGuard: Timer | undefined
  private timerG: Timer | undefined
  private timerH: Timer | undefined
  private timerI: Timer | undefined
  private timerL: Timer | undefined
  private intervalG = 0
  private readonly onAcceptedAck: ((ack: SipRequest, source: Source) => void) | undefined

  constructor (init: ServerTransactionInit) {
    super(init)
    this.onAcceptedAck = init.onAcceptedAck
    this.timerTrying = this.env.clock.setTimer(init.tryingDelay ?? 200, () => { this.fireTrying() })
    const guard = init.maxProceeding ?? 300_000
    if (guard > 0) this.timerGuard = this.env.clock.setTimer(guard, () => { this.fireGuard() })
  }

  private fireGuard (): void {
    this.timerGuard = undefined
    if (this.state !== 'proceeding') return
    this.env.logger.warn({ callId: this.request.get('call-id') }, 'INVITE server transaction: no final response from the TU, answering 408')
    const last = this.lastResponse?.get('to')
    const m = last !== undefined ? /;\s*tag\s*=\s*([^;,\s]+)/i.exec(last.slice(last.lastIndexOf('>') + 1)) : null
    this.respond(createResponse(this.request, 408, 'Request Timeout', m?.[1] ?? 'guard' + String(this.env.clock.now() % 1e9)))
  }

  private fireTrying (): void {
    this.timerTrying = undefined
    if (this.state === 'proceeding' && this.lastResponse === undefined) this.transmit(createResponse(this.request, 100, 'Trying'))
  }

  respond (res: SipResponse): void {
    checkStatus(res)
    const s = res.status
    if (this.state === 'proceeding') {
      this.timerTrying = cancelTimer(this.timerTrying)
      this.transmit(res)
      if (s < 200) return
      this.timerGuard = cancelTimer(this.timerGuard)
      if (s < 300) {
        this.state = 'accepted'
        // Accepted never retransmits by itself (RFC 6026 §7.1): for the 32 s of Timer L keep only what
        // a CANCEL answer or a further 2xx needs, not the whole INVITE, its body and the 2xx bytes
        this.wire = undefined
        this.request = slimMessage(this.request)
        this.lastResponse = slimMessage(res)
        this.timerL = this.env.clock.setTimer(64 * this.env.timers.t1, () => { this.fireL() })
        return
      }
      this.state = 'completed'
      const { clock, timers } = this.env
      if (!this.reliable) {
        this.intervalG = timers.t1
        this.timerG = clock.setTimer(this.intervalG, () => { this.fireG() })
      }
      this.timerH = clock.setTimer(64 * timers.t1, () => { this.fireH() })
      return
    }
    if (this.state === 'accepted' && s >= 200 && s < 300) {
      this.transmit(res) // RFC 6026: the TU may retransmit / forward further 2xx
      this.wire = undefined
      this.lastResponse = slimMessage(res)
      return
    }
    this.invalid(`response ${s}`)
  }

  receiveRequest (req: SipRequest): void {
    if (req.method === 'ACK') { this.receiveAck(req); return }
    switch (this.state) {
      case 'proceeding':
      case 'completed':
        if (this.wire !== undefined) this.sendFn(this.wire) // retransmit last provisional / final
        return
      default:
        return // Accepted: absorbed (RFC 6026 §7.1); Confirmed/Terminated: absorbed
    }
  }

  /** An ACK matched this transaction. */
  receiveAck (ack: SipRequest): void {
    switch (this.state) {
      case 'completed':
        this.timerG = cancelTimer(this.timerG)
        this.timerH = cancelTimer(this.timerH)
        this.state = 'confirmed'
        if (this.reliable) { this.state = 'terminated'; this.terminated(); return }
        this.timerI = this.env.clock.setTimer(this.env.timers.t4, () => { this.fireI() })
        return
      case 'accepted':
        this.onAcceptedAck?.(ack, this.source)
        return
      default:
        return // Confirmed: absorbed; Proceeding: an ACK before any final is meaningless, absorb
    }
  }

  private fireG (): void {
    this.timerG = undefined
    if (this.state !== 'completed') return
    this.sendFn(this.wire!)
    this.intervalG = Math.min(2 * this.intervalG, this.env.timers.t2)
    this.timerG = this.env.clock.setTimer(this.intervalG, () => { this.fireG() })
  }

  private fireH (): void {
    this.timerH = undefined
    if (this.state !== 'completed') return
    this.timerG = cancelTimer(this.timerG)
    this.env.logger.debug({ branch: this.key }, 'INVITE server transaction: no ACK before Timer H')
    this.state = 'terminated'
    this.terminated()
  }

  private fireI (): void {
    this.timerI = undefined
    this.state = 'terminated'
    this.terminated()
  }

  private fireL (): void {
    this.timerL = undefined
    this.state = 'terminated'
    this.terminated()
  }

  transportError (err?: Error): void {
    if (this.state === 'terminated') return
    this.env.logger.debug({ err: err?.message, state: this.state }, 'INVITE server transaction: transport error')
    if (this.state === 'accepted') return // RFC 6026: stay in Accepted, the TU keeps retransmitting 2xx
    this.dispose()
    this.terminated()
  }

  dispose (): void {
    this.timerTrying = cancelTimer(this.timerTrying)
    this.timerGuard = cancelTimer(this.timerGuard)
    this.timerG = cancelTimer(this.timerG)
    this.timerH = cancelTimer(this.timerH)
    this.timerI = cancelTimer(this.timerI)
    this.timerL = cancelTimer(this.timerL)
    this.state = 'terminated'
  }
}

/**
 * RFC 3261 §17.2.2. RFC 3261 gives Trying/Proceeding no timer; a guard (64*T1 + T4, past the client's
 * Timer F) terminates a transaction whose TU never answered, so a stuck TU cannot leak transactions.
 */
export class NonInviteServerTransaction extends ServerTransaction {
  readonly kind = 'non-invite' as const
  state: NonInviteServerState = 'trying'
  private timerJ: Timer | undefined
  private timerGuard: Timer | undefined

  private readonly handOff: ((tx: ServerTransaction, wire: Buffer) => boolean) | undefined

  constructor (init: ServerTransactionInit) {
    super(init)
    this.handOff = init.handOffCompleted
    this.timerGuard = this.env.clock.setTimer(64 * this.env.timers.t1 + this.env.timers.t4, () => { this.fireGuard() })
  }

  private fireGuard (): void {
    this.timerGuard = undefined
    if (this.state !== 'trying' && this.state !== 'proceeding') return
    this.env.logger.warn({ method: this.request.method, callId: this.request.get('call-id') }, 'non-INVITE server transaction: no final response from the TU, terminated')
    this.state = 'terminated'
    this.terminated()
  }

  respond (res: SipResponse): void {
    checkStatus(res)
    if (this.state !== 'trying' && this.state !== 'proceeding') this.invalid(`response ${res.status}`)
    if (res.status >= 200) this.timerGuard = cancelTimer(this.timerGuard)
    this.transmit(res)
    if (res.status < 200) { this.state = 'proceeding'; return }
    this.state = 'completed'
    if (this.reliable || (this.handOff !== undefined && this.handOff(this, this.wire!))) {
      this.state = 'terminated'
      this.terminated()
      return
    }
    this.timerJ = this.env.clock.setTimer(64 * this.env.timers.t1, () => { this.fireJ() })
  }

  receiveRequest (_req: SipRequest): void {
    // Trying: absorbed; Proceeding/Completed: retransmit the last response.
    if ((this.state === 'proceeding' || this.state === 'completed') && this.wire !== undefined) this.sendFn(this.wire)
  }

  private fireJ (): void {
    this.timerJ = undefined
    this.state = 'terminated'
    this.terminated()
  }

  transportError (err?: Error): void {
    if (this.state === 'terminated') return
    this.env.logger.debug({ err: err?.message, state: this.state }, 'non-INVITE server transaction: transport error')
    this.dispose()
    this.terminated()
  }

  dispose (): void {
    this.timerJ = cancelTimer(this.timerJ)
    this.timerGuard = cancelTimer(this.timerGuard)
    this.state = 'terminated'
  }
}
