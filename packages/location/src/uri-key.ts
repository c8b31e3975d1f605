/**
 * Default contact-URI equality key used when the caller gives none (the location package must not
 * depend on the SIP parser). It approximates RFC 3261 §19.1.4: scheme and host compared
 * case-insensitively, user part case-sensitively, URI parameters compared regardless of order
 * and case. The registrar passes a key computed with the real parser when it has one.
 */
export function contactKey (uri: string): string {
  let s = uri.trim()
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1).trim()
  const colon = s.indexOf(':')
  if (colon <= 0) return s
  const scheme = s.slice(0, colon).toLowerCase()
  let rest = s.slice(colon + 1)
  let headers = ''
  const q = rest.indexOf('?')
  if (q >= 0) { headers = rest.slice(q); rest = rest.slice(0, q) }
  // userinfo ends at the last '@' (user parts may carry ';' for user params)
  const at = rest.lastIndexOf('@')
  const user = at >= 0 ? rest.slice(0, at + 1) : ''
  const hostAndParams = at >= 0 ? rest.slice(at + 1) : rest
  const semi = hostAndParams.indexOf(';')
  const host = (semi >= 0 ? hostAndParams.slice(0, semi) : hostAndParams).toLowerCase()
  const params = semi >= 0
    ? hostAndParams.slice(semi + 1).split(';').map(p => p.trim().toLowerCase()).filter(p => p !== '').sort()
    : []
  return `${scheme}:${user}${host}${params.length > 0 ? ';' + params.join(';') : ''}${headers}`
}
