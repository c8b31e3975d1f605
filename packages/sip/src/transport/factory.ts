import type { SipTransport } from '@sipring/interface'
import { UdpTransport, type UdpTransportOptions } from './udp.js'
import { TcpTransport, TlsTransport, type TcpTransportOptions, type TlsTransportOptions } from './stream.js'
import { WsTransport, type WsTransportOptions } from './ws.js'

/** What {@link createTransport} builds: a protocol and that transport's options. */
export type TransportSpec =
  | ({ protocol: 'udp' } & UdpTransportOptions)
  | ({ protocol: 'tcp' } & TcpTransportOptions)
  | ({ protocol: 'tls' } & TlsTransportOptions)
  | ({ protocol: 'ws' } & Omit<WsTransportOptions, 'secure'>)
  | ({ protocol: 'wss' } & Omit<WsTransportOptions, 'secure'> & { cert: string | Buffer, key: string | Buffer })

/** Build (not start) a transport from a spec; throws a TypeError on an unknown protocol. */
export function createTransport (spec: TransportSpec): SipTransport {
  switch (spec.protocol) {
    case 'udp': return new UdpTransport(spec)
    case 'tcp': return new TcpTransport(spec)
    case 'tls': return new TlsTransport(spec)
    case 'ws': return new WsTransport({ ...spec, secure: false })
    case 'wss': return new WsTransport({ ...spec, secure: true })
    default: throw new TypeError(`unknown transport protocol: ${String((spec as { protocol: unknown }).protocol)}`)
  }
}
