import { createHmac } from 'node:crypto'
import type { Destination, Source } from '@sipring/interface'
import { protocolOf } from './net.js'

/**
 * Dialog flow tokens carried in the user part of our Record-Route URI (in the spirit of RFC 5626
 * §5.3 edge-proxy flow tokens and Kamailio's nathelper aliases): they remember both ends of the
 * dialog-creating request — where it came from (caller side) and where we sent it (callee side) —
 * so that later in-dialog requests (BYE, re-INVITE, ACK …) whose Request-URI is an unreachable
 * Contact (private address, `*.invalid` WebSocket host) go back over the same path. The token is
 * HMAC-signed with a per-proxy key so a UA cannot make us send to an arbitrary address.
 */
const MAC_CACHE_MAX = 4096

export class FlowTokens {
  constructor (private readonly key: Uint8Array) {}

  encode (a: Destination, b: Destination): string {
    const payload = Buffer.from(`${side(a)}|${side(b)}`, 'utf8').toString('base64url')
    return `ft.${payload}.${this.mac(payload)}`
  }

  /** Decode and verify a token; undefined when it is not ours or was tampered with. */
  decode (token: string): { a: Destination, b: Destination } | undefined {
    if (!token.startsWith('ft.')) return undefined
    const dot = token.lastIndexOf('.')
    if (dot <= 3) return undefined
    const payload = token.slice(3, dot)
    if (token.slice(dot + 1) !== this.mac(payload)) return undefined
    const parts = Buffer.from(payload, 'base64url').toString('utf8').split('|')
    if (parts.length !== 2) return undefined
    const a = parseSide(parts[0]!)
    const b = parseSide(parts[1]!)
    return a !== undefined && b !== undefined ? { a, b } : undefined
  }

  /**
   * HMAC per payload, memoized (bounded): a dialog's token is made once for its INVITE and checked again
   * for its ACK, BYE, re-INVITE…, and an HMAC costs a few µs. The MAC is a pure function of the payload
   * under the proxy's key, so a cached value is exactly what recomputing would give.
   */
  private readonly macs = new Map<string, string>()

  private mac (payload: string): string {
    let m = this.macs.get(payload)
    if (m === undefined) {
      m = createHmac('sha256', this.key).update(payload).digest('base64url').slice(0, 12)
      if (this.macs.size >= MAC_CACHE_MAX) this.macs.clear()
      this.macs.set(payload, m)
    }
    return m
  }
}

function side (d: Destination): string {
  return [d.protocol, d.address, String(d.port), d.connectionId ?? ''].join('~')
}

function parseSide (s: string): Destination | undefined {
  const [p, address, port, conn] = s.split('~')
  const protocol = protocolOf(p)
  const n = Number(port)
  if (protocol === undefined || address === undefined || address === '' || !Number.isInteger(n)) return undefined
  const d: Destination = { protocol, address, port: n }
  if (conn !== undefined && conn !== '') d.connectionId = conn
  return d
}

/** Did this message arrive from that side of the dialog (same connection, or same transport address)? */
export function cameFrom (source: Source, d: Destination): boolean {
  if (source.connectionId !== undefined && d.connectionId !== undefined) return source.connectionId === d.connectionId
  return source.protocol === d.protocol && source.port === d.port && source.address.toLowerCase() === d.address.toLowerCase()
}

/** A Destination from a Source (keeping the connection it came on). */
export function destOf (s: Source): Destination {
  const d: Destination = { protocol: s.protocol, address: s.address, port: s.port }
  if (s.connectionId !== undefined) d.connectionId = s.connectionId
  return d
}
