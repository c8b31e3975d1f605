import { createHash } from 'node:crypto'
import type { Destination, Endpoint, TransportProtocol } from '@sipring/interface'
import { formatHost, getTag, hostEquals, isIPv4, isIPv6, parseCSeq, parseVia } from '@sipring/sip'
import type { SipRequest, SipUri, Via } from '@sipring/sip'

export const MAGIC = 'z9hG4bK'
/** Our branches: `z9hG4bK` + `P` + loop hash + `.` + branch index (RFC 3261 §16.6 step 8). */
export const BRANCH_MARK = MAGIC + 'P'

export function familyOf (address: string): 4 | 6 {
  return address.includes(':') ? 6 : 4
}

export function isIpLiteral (host: string): boolean {
  const h = host.charCodeAt(0) === 91 ? host.slice(1, -1) : host
  return isIPv4(h) || isIPv6(h)
}

export function isUnspecified (address: string): boolean {
  return address === '0.0.0.0' || address === '::' || address === '[::]'
}

/** SIP transport token (URI `transport` param, Via transport) → our protocol name. */
export function protocolOf (token: string | null | undefined): TransportProtocol | undefined {
  switch ((token ?? '').toLowerCase()) {
    case 'udp': return 'udp'
    case 'tcp': return 'tcp'
    case 'tls': return 'tls'
    case 'ws': return 'ws'
    case 'wss': return 'wss'
    default: return undefined
  }
}

export function defaultPort (p: TransportProtocol): number {
  return p === 'tls' || p === 'wss' ? 5061 : 5060
}

function parseAlias (a: string): { host: string, port?: number } {
  let host = a
  let port: string | undefined
  if (a.startsWith('[')) {
    const c = a.indexOf(']')
    host = a.slice(1, c < 0 ? undefined : c)
    if (c >= 0 && a.charCodeAt(c + 1) === 58) port = a.slice(c + 2)
  } else if (a.indexOf(':') === a.lastIndexOf(':') && a.includes(':')) {
    host = a.slice(0, a.indexOf(':'))
    port = a.slice(a.indexOf(':') + 1)
  }
  const n = Number(port)
  return port !== undefined && Number.isInteger(n) ? { host: host.toLowerCase(), port: n } : { host: host.toLowerCase() }
}

/**
 * Our own addresses: listening endpoints plus configured aliases (`host` or `host:port`). Decides
 * whether a Route / Request-URI / Via sent-by designates this node (RFC 3261 §16.4).
 */
export class SelfMatcher {
  private readonly aliases: Array<{ host: string, port?: number }>

  constructor (private readonly endpoints: () => Endpoint[], aliases: string[]) {
    this.aliases = aliases.map(parseAlias)
  }

  /** Is `host[:port]` (over `protocol` when known) one of ours? An absent port means the default port. */
  matches (host: string, port: number | undefined, protocol: TransportProtocol | undefined, secure = false): boolean {
    for (const a of this.aliases) {
      if (!hostEquals(a.host, host)) continue
      if (a.port === undefined || port === undefined || a.port === port) return true
    }
    for (const e of this.endpoints()) {
      // RFC 7118 §5.2: `transport=ws` names WS and WSS alike
      if (protocol !== undefined && e.protocol !== protocol && !(protocol === 'ws' && e.protocol === 'wss')) continue
      if (!hostEquals(e.address, host)) continue
      const p = port ?? (secure ? 5061 : protocol !== undefined ? defaultPort(protocol) : 5060)
      if (e.port === p) return true
    }
    return false
  }

  /** Is this SIP/SIPS URI one of ours (host, port, transport)? */
  uri (u: SipUri): boolean {
    if (u.scheme === 'tel') return false
    const tp = u.params.get('transport')
    const protocol = tp === undefined ? undefined : protocolOf(tp)
    if (tp !== undefined && protocol === undefined) return false
    return this.matches(u.host, u.port, protocol, u.scheme === 'sips')
  }

  /** Is this parsed Via one we placed (sent-by is ours)? */
  via (v: Via): boolean {
    return this.matches(v.host, v.port, protocolOf(v.transport))
  }

  /** First alias host (advertised name for Record-Route when listening on an unspecified address). */
  get advertised (): string | undefined { return this.aliases[0]?.host }
}

/** `<sip:[user@]host:port;transport=t;lr>` for one of our endpoints (RFC 3261 §16.6 step 4). */
export function recordRouteFor (local: Endpoint, advertised?: string, extra = '', user?: string, sips = false): string {
  const host = isUnspecified(local.address) && advertised !== undefined ? advertised : local.address
  const u = user !== undefined ? `${user}@` : ''
  // RFC 3261 §16.6 step 4: a SIPS Request-URI gets a SIPS Record-Route
  if (sips) return `<sips:${u}${formatHost(host)}:${local.port};lr${extra}>`
  // RFC 7118 §5.2 registers only the `ws` transport parameter value, for WS and WSS alike
  const transport = local.protocol === 'wss' ? 'ws' : local.protocol
  return `<sip:${u}${formatHost(host)}:${local.port};transport=${transport};lr${extra}>`
}

export function sameEndpoint (a: Endpoint, b: Endpoint): boolean {
  return a.protocol === b.protocol && a.port === b.port && hostEquals(a.address, b.address)
}

/** Normalized Via for hashing: transport, sent-by, branch (ignores received/rport added on the way). */
function viaKey (v: string | undefined): string {
  if (v === undefined) return ''
  try {
    const p = parseVia(v)
    return `${p.transport} ${p.host.toLowerCase()}:${p.port ?? ''};${p.branch ?? ''}`
  } catch {
    return v
  }
}

/**
 * Loop-detection hash of RFC 3261 §16.6 step 8 / §16.3 step 4: To tag, From tag, Call-ID,
 * Request-URI as received, the topmost Via of the request as received, CSeq number, Proxy-Require and
 * Proxy-Authorization. Retransmissions and looped copies hash identically; spirals (a changed
 * Request-URI) do not. `topVia` is passed explicitly because on a loop check it is the Via that sat
 * *below* ours.
 */
export function loopHash (req: SipRequest, topVia: string | undefined): string {
  const h = createHash('md5')
  const to = req.get('to')
  const from = req.get('from')
  let seq = ''
  const cseq = req.get('cseq')
  if (cseq !== undefined) {
    try { seq = String(parseCSeq(cseq).seq) } catch { seq = cseq }
  }
  h.update([
    to === undefined ? '' : (getTag(to) ?? ''),
    from === undefined ? '' : (getTag(from) ?? ''),
    req.get('call-id') ?? '',
    req.uri,
    viaKey(topVia),
    seq,
    req.getAll('proxy-require').join(','),
    req.getAll('proxy-authorization').join('\n')
  ].join('\u0000'))
  return h.digest('hex').slice(0, 20)
}

/** Destination of a response per RFC 3261 §18.2.2 / RFC 3581 from a parsed Via. */
export function responseDestination (v: Via): Destination | undefined {
  const protocol = protocolOf(v.transport)
  if (protocol === undefined) return undefined
  const address = v.maddr ?? v.received ?? v.host
  const port = typeof v.rport === 'number' ? v.rport : (v.port ?? defaultPort(protocol))
  return { protocol, address, port }
}
