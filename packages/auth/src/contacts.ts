/**
 * Per-user contact limit (`Account.maxContacts`), checked before the registrar applies a REGISTER.
 */
import type { Binding } from '@sipring/interface'
import { aorOf, parseNameAddr, parseUri, uriEquals, type SipRequest } from '@sipring/sip'

/** AOR of a REGISTER's To, or undefined when it does not parse (the registrar answers that). */
export function registerAor (req: SipRequest): string | undefined {
  const to = req.get('to')
  if (to === undefined) return undefined
  try { return aorOf(parseUri(parseNameAddr(to).uri)) } catch { return undefined }
}

/**
 * Would this REGISTER leave more than `max` contacts? Counts existing bindings, minus the ones it
 * removes (expires=0), plus new contacts (not equal to an existing one, not replacing an RFC 5626 flow
 * of the same instance and reg-id). A wildcard or unparseable Contact is left to the registrar.
 */
export function contactLimitExceeded (req: SipRequest, existing: Binding[], max: number): boolean {
  const headerExpires = req.get('expires')
  let count = existing.length
  const remaining = [...existing]
  for (const v of req.getAll('contact')) {
    let na
    try { na = parseNameAddr(v) } catch { return false }
    if (na.uri === '*') return false
    const exp = na.params.get('expires') ?? headerExpires
    const removing = exp !== undefined && exp !== null && Number(exp) === 0
    const inst = na.params.get('+sip.instance') ?? undefined
    const regId = na.params.get('reg-id') ?? undefined
    const i = remaining.findIndex(b => uriEquals(b.contact, na.uri) ||
      (inst !== undefined && b.instance !== undefined && b.instance === inst && String(b.regId) === String(regId)))
    if (i >= 0) {
      remaining.splice(i, 1)
      if (removing) count--
    } else if (!removing) {
      count++
    }
  }
  return count > max
}
