/**
 * Small, fast, allocation-light readers for the few header fields the transaction layer needs
 * (top Via, CSeq, tags). Kept private to the transaction layer so the hot path never depends on the
 * full structured parsers.
 */
import type { Header, SipMessage } from '../message.js'

export const MAGIC_COOKIE = 'z9hG4bK'

export interface TopVia {
  /** Upper-case transport token (UDP, TCP, TLS, WS, WSS, SCTP...). */
  transport: string
  /** Host without IPv6 brackets, lower-cased. */
  host: string
  /** Port from sent-by, if present. */
  port: number | undefined
  /** Normalised `host:port` (port omitted when absent), used in transaction keys. */
  sentBy: string
  branch: string | undefined
  /** `rport` present (with or without value). */
  hasRport: boolean
  rport: number | undefined
  received: string | undefined
  maddr: string | undefined
  /** Index of the header line holding the top Via in `msg.headers`. */
  line: number
  /** Length of the first value inside that line (the part before the first top-level comma). */
  valueEnd: number
}

/** Index of the first top-level comma (outside quotes) in a header value, or -1. */
function firstComma (v: string): number {
  let q = false
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i)
    if (q) {
      if (c === 92) i++
      else if (c === 34) q = false
    } else if (c === 34) q = true
    else if (c === 44) return i
  }
  return -1
}

const VIA_RE = /^SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:;[\]]+)(?:\s*:\s*(\d{1,5}))?\s*(;.*)?$/

/** Read the topmost Via of a message. Returns undefined when there is none or it cannot be read. */
export function readTopVia (msg: SipMessage): TopVia | undefined {
  const hs = msg.headers
  for (let i = 0; i < hs.length; i++) {
    const h = hs[i]!
    if (h.name !== 'via') continue
    const comma = firstComma(h.value)
    const valueEnd = comma < 0 ? h.value.length : comma
    const v = h.value.slice(0, valueEnd).trim()
    const m = VIA_RE.exec(v)
    if (m === null) return undefined
    let host = m[2]!.toLowerCase()
    if (host.charCodeAt(0) === 91) host = host.slice(1, -1)
    const port = m[3] !== undefined ? Number(m[3]) : undefined
    if (port !== undefined && port > 65535) return undefined
    const out: TopVia = {
      transport: m[1]!.toUpperCase(),
      host,
      port,
      sentBy: port !== undefined ? `${host}:${port}` : host,
      branch: undefined,
      hasRport: false,
      rport: undefined,
      received: undefined,
      maddr: undefined,
      line: i,
      valueEnd
    }
    const params = m[4]
    if (params !== undefined) {
      for (const p of params.split(';')) {
        if (p === '') continue
        const eq = p.indexOf('=')
        const name = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase()
        const value = eq < 0 ? undefined : p.slice(eq + 1).trim()
        if (name === 'branch') out.branch = value
        else if (name === 'rport') {
          out.hasRport = true
          if (value !== undefined && value !== '') {
            const n = Number(value)
            if (Number.isInteger(n) && n > 0 && n <= 65535) out.rport = n
          }
        } else if (name === 'received') out.received = value
        else if (name === 'maddr') out.maddr = value
      }
    }
    return out
  }
  return undefined
}

/**
 * RFC 3261 §18.2.1 + RFC 3581 §4: add `received` when the source address differs from the sent-by
 * host (or whenever `rport` is present), fill an empty `rport` with the source port. Rewrites the top
 * Via in place (only the first value of its line) and updates `via`. Returns true when changed.
 */
export function stampReceived (msg: SipMessage, via: TopVia, address: string, port: number): boolean {
  const needReceived = via.hasRport || via.host !== address.toLowerCase()
  const fillRport = via.hasRport && via.rport === undefined
  if (!needReceived && !fillRport) return false
  const h: Header = msg.headers[via.line]!
  let first = h.value.slice(0, via.valueEnd).trimEnd()
  const rest = h.value.slice(via.valueEnd)
  if (fillRport) first = first.replace(/;\s*rport\s*(=\s*)?(?=;|$)/i, `;rport=${port}`)
  if (needReceived) {
    if (via.received !== undefined) first = first.replace(/;\s*received\s*=[^;]*/i, '')
    first += `;received=${address}`
  }
  msg.headers[via.line] = { name: 'via', value: first + rest }
  via.valueEnd = first.length
  via.received = needReceived ? address : via.received
  if (fillRport) via.rport = port
  return true
}

/** CSeq number and method, or undefined when unreadable. */
export function readCSeq (msg: SipMessage): { seq: number, method: string } | undefined {
  const v = msg.get('cseq')
  if (v === undefined) return undefined
  const m = /^\s*(\d{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*$/.exec(v)
  if (m === null) return undefined
  const seq = Number(m[1])
  if (seq > 0xffffffff) return undefined
  return { seq, method: m[2]! }
}

/** The `tag` parameter of a From/To value (outside the `<...>` URI), or undefined. */
export function readTag (value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  const gt = value.lastIndexOf('>')
  const params = gt >= 0 ? value.slice(gt + 1) : value
  const m = /;\s*tag\s*=\s*([^;,\s]+)/i.exec(params)
  return m === null ? undefined : m[1]
}
