/** Test helpers shared by the node specs: a UDP "phone" on a SimNetwork and a request builder. */
import type { Source } from '@sipring/interface'
import type { SimNetwork, SimTransport } from '@sipring/testkit'
import { parseMessage, serialize, SipRequest, type SipMessage } from '@sipring/sip'

/** The super node's SIP endpoint in these specs. */
export const NODE = { protocol: 'udp' as const, address: '10.0.0.1', port: 5060 }

export interface Phone {
  host: string
  t: SimTransport
  inbox: Array<{ msg: SipMessage, source: Source }>
  send: (m: SipMessage) => Promise<void>
}

/** A UDP endpoint at `host:5060` that records every message it receives and sends to {@link NODE}. */
export async function phone (net: SimNetwork, host: string): Promise<Phone> {
  const tr = net.transport({ protocol: 'udp', address: host, port: 5060 })
  await tr.start()
  const inbox: Phone['inbox'] = []
  tr.on('message', (data, source) => { inbox.push({ msg: parseMessage(data), source }) })
  return { host, t: tr, inbox, send: async (m) => { await tr.send(serialize(m), NODE) } }
}

let seq = 0
/** The next sequence number (shared with {@link request}, so branches and CSeqs stay unique). */
export function nextSeq (): number { return ++seq }

/** A request with fresh branch, tags, Call-ID and an increasing CSeq. */
export function request (method: string, uri: string, from: string, to: string, host: string, extra: Array<[string, string]> = []): SipRequest {
  seq++
  const r = new SipRequest(method, uri)
  r.append('via', `SIP/2.0/UDP ${host}:5060;branch=z9hG4bKsim${seq};rport`)
  r.append('max-forwards', '70')
  r.append('from', `<${from}>;tag=f${seq}`)
  r.append('to', `<${to}>`)
  r.append('call-id', `call-${seq}@${host}`)
  r.append('cseq', `${seq} ${method}`)
  for (const [k, v] of extra) r.append(k, v)
  return r
}
