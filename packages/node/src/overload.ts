import { createResponse, getTag, type SipRequest, type SipResponse } from '@sipring/sip'

/** How much work a super node accepts at once (RFC 3261 §21.5.4 503 + Retry-After beyond it). */
export interface OverloadLimits {
  /**
   * Requests being processed at once: from the transaction layer handing a request to the node until
   * the node answered it or forwarded it (authentication and account lookups, registrar and overlay
   * writes up to the quorum acknowledgement, proxy location lookups and target resolution). A new
   * request beyond it is answered `503 Service Unavailable` with `Retry-After` at once, before any
   * authentication or lookup. In-dialog requests (To tag: BYE, re-INVITE, NOTIFY of established
   * dialogs) get the same headroom again before being refused; ACK and CANCEL never count (the
   * transaction layer handles them). Default 2000; 0 = no bound.
   */
  maxInFlight: number
  /** Seconds in the 503's `Retry-After` (default 5). */
  retryAfter: number
}

export const DEFAULT_OVERLOAD_LIMITS: Readonly<OverloadLimits> = Object.freeze({ maxInFlight: 2000, retryAfter: 5 })

export interface OverloadStats {
  /** Requests being processed now. */
  inFlight: number
  /** Highest `inFlight` seen. */
  peakInFlight: number
  /** Requests answered 503 because of the bound. */
  rejected: number
  maxInFlight: number
  retryAfter: number
}

/** Checks the limits; throws a TypeError naming the bad one. */
export function overloadLimits (l: Partial<OverloadLimits> = {}): OverloadLimits {
  const out = { ...DEFAULT_OVERLOAD_LIMITS, ...l }
  if (!Number.isInteger(out.maxInFlight) || out.maxInFlight < 0) throw new TypeError(`overload.maxInFlight must be an integer ≥ 0, got ${String(out.maxInFlight)}`)
  if (!Number.isInteger(out.retryAfter) || out.retryAfter < 0 || out.retryAfter > 86_400) throw new TypeError(`overload.retryAfter must be an integer in 0..86400 seconds, got ${String(out.retryAfter)}`)
  return out
}

/**
 * Counts the requests a super node is processing and sheds new ones past the bound. Cheap by
 * design: a refusal costs one counter comparison, a To-tag check and a 503 built from the headers
 * the stack already parsed; nothing is looked up, authenticated or stored.
 */
export class OverloadGuard {
  readonly limits: OverloadLimits
  private inFlight = 0
  private peak = 0
  private rejected = 0

  constructor (limits: Partial<OverloadLimits> = {}) {
    this.limits = overloadLimits(limits)
  }

  /**
   * Called for each new request: true = go on (call {@link leave} once it is answered or forwarded);
   * false = overloaded, answer {@link reject}'s response.
   */
  enter (req: SipRequest): boolean {
    const max = this.limits.maxInFlight
    if (max > 0 && this.inFlight >= max && (this.inFlight >= 2 * max || !inDialog(req))) {
      this.rejected++
      return false
    }
    if (++this.inFlight > this.peak) this.peak = this.inFlight
    return true
  }

  leave (): void {
    if (this.inFlight > 0) this.inFlight--
  }

  /** The 503 for a shed request. */
  reject (req: SipRequest, toTag: string | undefined): SipResponse {
    const res = createResponse(req, 503, 'Service Unavailable', toTag)
    if (this.limits.retryAfter > 0) res.set('retry-after', String(this.limits.retryAfter))
    return res
  }

  stats (): OverloadStats {
    return { inFlight: this.inFlight, peakInFlight: this.peak, rejected: this.rejected, maxInFlight: this.limits.maxInFlight, retryAfter: this.limits.retryAfter }
  }
}

function inDialog (req: SipRequest): boolean {
  if (req.method === 'REGISTER') return false
  const to = req.get('to')
  if (to === undefined) return false
  try { return getTag(to) !== undefined } catch { return false }
}
