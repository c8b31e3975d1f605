/**
 * Minimal STUN Binding responder (RFC 5389) for RFC 5626 §4.4.2 / §8 UDP keep-alives: a SIP outbound
 * client sends STUN Binding requests to the SIP port of its edge proxy and checks the mapped address.
 * SIP messages never start with a byte below 0x40, so STUN is told apart by its first byte and magic cookie.
 */
import { isIP } from 'node:net'

const MAGIC = 0x2112a442
const BINDING_REQUEST = 0x0001
const BINDING_SUCCESS = 0x0101
const XOR_MAPPED_ADDRESS = 0x0020

/** Is this datagram a STUN message (RFC 5389 header with the magic cookie)? */
export function isStun (b: Uint8Array): boolean {
  if (b.length < 20 || (b[0]! & 0xc0) !== 0) return false
  const view = Buffer.from(b.buffer, b.byteOffset, b.length)
  return view.readUInt32BE(4) === MAGIC && view.readUInt16BE(2) + 20 === b.length && (view.readUInt16BE(2) & 3) === 0
}

/** Binding success response with XOR-MAPPED-ADDRESS for a Binding request; undefined for anything else. */
export function stunBindingResponse (req: Uint8Array, address: string, port: number): Buffer | undefined {
  if (!isStun(req)) return undefined
  const view = Buffer.from(req.buffer, req.byteOffset, req.length)
  if (view.readUInt16BE(0) !== BINDING_REQUEST) return undefined
  const family = isIP(address)
  if (family === 0) return undefined
  const txid = view.subarray(8, 20)
  const addr = family === 4 ? ipv4Bytes(address) : ipv6Bytes(address)
  const xorKey = Buffer.concat([Buffer.from([0x21, 0x12, 0xa4, 0x42]), txid])
  const xaddr = Buffer.alloc(addr.length)
  for (let i = 0; i < addr.length; i++) xaddr[i] = addr[i]! ^ xorKey[i]!
  const attr = Buffer.alloc(4 + 4 + addr.length)
  attr.writeUInt16BE(XOR_MAPPED_ADDRESS, 0)
  attr.writeUInt16BE(4 + addr.length, 2)
  attr.writeUInt8(0, 4)
  attr.writeUInt8(family === 4 ? 1 : 2, 5)
  attr.writeUInt16BE(port ^ (MAGIC >>> 16), 6)
  xaddr.copy(attr, 8)
  const head = Buffer.alloc(20)
  head.writeUInt16BE(BINDING_SUCCESS, 0)
  head.writeUInt16BE(attr.length, 2)
  head.writeUInt32BE(MAGIC, 4)
  txid.copy(head, 8)
  return Buffer.concat([head, attr])
}

function ipv4Bytes (a: string): Buffer {
  return Buffer.from(a.split('.').map(Number))
}

function ipv6Bytes (a: string): Buffer {
  let s = a
  const pct = s.indexOf('%')
  if (pct >= 0) s = s.slice(0, pct)
  // an embedded IPv4 tail (::ffff:1.2.3.4)
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s)
  let tail: number[] = []
  if (v4 !== null) {
    const b = ipv4Bytes(v4[1]!)
    tail = [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!]
    s = s.slice(0, -v4[1]!.length) + '0:0'
  }
  const [l, r] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined]
  const left = l === '' ? [] : l.split(':').map(h => parseInt(h, 16))
  const right = r === undefined ? [] : r === '' ? [] : r.split(':').map(h => parseInt(h, 16))
  const words = r === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
  if (tail.length === 2) { words[6] = tail[0]!; words[7] = tail[1]! }
  const out = Buffer.alloc(16)
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i] ?? 0, i * 2)
  return out
}
