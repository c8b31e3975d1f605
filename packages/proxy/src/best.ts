import { SipResponse } from '@sipring/sip'

/**
 * 4xx responses that carry information affecting resubmission of the request (RFC 3261 §16.7 step 6),
 * preferred when the 4xx class is chosen (challenges first).
 */
const PREFERRED_4XX = [401, 407, 415, 420, 484]

/** Rank within a class: lower is better. Synthesized/uninformative responses rank last. */
function rank (status: number): number {
  if (status === 401 || status === 407) return 0 // challenges: the first one received, the others aggregated
  if (PREFERRED_4XX.includes(status)) return 1
  if (status === 408 || status === 430 || status === 503) return 20 // timeouts / transport failures
  if (status === 487) return 15 // our own CANCEL results lose to any real answer
  return 10
}

/**
 * Choose the best final response of a response context (RFC 3261 §16.7 step 6): any 6xx wins
 * (the first received); otherwise the lowest class, preferring within 4xx the responses listed in
 * the RFC (401, 407, 415, 420, 484) and ranking timeouts/transport errors last. Among equals the
 * first received wins. Returns undefined for an empty list (the caller answers 408).
 */
export function selectBest (finals: readonly SipResponse[]): SipResponse | undefined {
  let best: SipResponse | undefined
  for (const r of finals) {
    if (r.status < 300) continue // 2xx are forwarded immediately, never "chosen"
    if (best === undefined) { best = r; continue }
    const bc = Math.floor(best.status / 100)
    const rc = Math.floor(r.status / 100)
    if (bc === 6) continue
    if (rc === 6) { best = r; continue }
    if (rc < bc) { best = r; continue }
    if (rc === bc && rank(r.status) < rank(best.status)) best = r
  }
  return best
}

/**
 * Prepare the chosen response for forwarding (§16.7 steps 6–7): a copy; 503 becomes 500 (a 503 would
 * tell upstream that *we* are overloaded); for 401/407 every WWW-Authenticate / Proxy-Authenticate of
 * every 401/407 branch response is collected into it.
 */
export function finalizeBest (best: SipResponse, finals: readonly SipResponse[]): SipResponse {
  let out = best.clone()
  if (out.status === 503) {
    const r = new SipResponse(500, 'Server Internal Error')
    r.headers = out.headers.filter(h => h.name !== 'retry-after')
    r.body = out.body
    out = r
  }
  if (out.status === 401 || out.status === 407) {
    for (const r of finals) {
      if (r === best || (r.status !== 401 && r.status !== 407)) continue
      for (const h of r.headers) {
        if (h.name === 'www-authenticate' || h.name === 'proxy-authenticate') out.append(h.name, h.value)
      }
    }
  }
  return out
}
