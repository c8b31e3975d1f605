// Raw SIP messages for daemon specs that talk to a running daemon over UDP.

/** A REGISTER of `user@host` with Contact at 127.0.0.1:`localPort`, sent to the daemon on `port`. */
export function registerMessage (user: string, host: string, port: number, localPort: number, callId: string, expires = 300): Buffer {
  return Buffer.from([
    `REGISTER sip:${host}:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${localPort};branch=z9hG4bK${callId};rport`,
    'Max-Forwards: 70',
    `From: <sip:${user}@${host}>;tag=${callId}`,
    `To: <sip:${user}@${host}>`,
    `Call-ID: ${callId}`,
    'CSeq: 1 REGISTER',
    `Contact: <sip:${user}@127.0.0.1:${localPort}>`,
    `Expires: ${expires}`,
    'Content-Length: 0', '', ''
  ].join('\r\n'))
}
