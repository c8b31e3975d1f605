// A tiny scripted SIP user agent for interop tests over TLS, WSS and UDP: it writes requests and
// responses as text, parses what arrives with @sipring/sip's parser, and lets a test wait for the
// next matching message. It keeps just enough dialog state (route set, remote target, tags, CSeq)
// for REGISTER and INVITE → 180/200 → ACK → BYE, either side hanging up (RFC 3261 §12, §13, §15).
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { randomBytes } from 'node:crypto'
import WebSocket from 'ws'
import { parseMessage, SipRequest, SipResponse, parseNameAddr, getTag, type SipMessage } from '@sipring/sip'

export interface Channel {
  /** Via transport token: TLS, WSS, UDP. */
  readonly via: string
  /** sent-by host[:port] for the Via header. */
  readonly sentBy: string
  local: { address: string, port: number }
  send (text: string): void
  close (): void
  onMessage?: (buf: Buffer) => void
  onClose?: () => void
}

const hp = (host: string, port: number): string => host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`

/** Splits a byte stream into SIP messages by Content-Length (RFC 3261 §18.3); CRLF keep-alives are skipped. */
function streamFramer (deliver: (msg: Buffer) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0)
  return chunk => {
    buf = Buffer.concat([buf, chunk])
    for (;;) {
      while (buf.length >= 2 && buf[0] === 13 && buf[1] === 10) buf = buf.subarray(2)
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = buf.subarray(0, end).toString('latin1')
      const m = /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head)
      const len = m ? Number(m[1]) : 0
      if (buf.length < end + 4 + len) return
      deliver(buf.subarray(0, end + 4 + len))
      buf = buf.subarray(end + 4 + len)
    }
  }
}

/** A TLS connection to the server, verifying its certificate against `ca`. */
export async function tlsChannel (host: string, port: number, ca: Buffer, servername?: string): Promise<Channel & { socket: TLSSocket }> {
  const socket = tlsConnect({ host, port, ca, servername: servername ?? (host.includes(':') || /^\d/.test(host) ? undefined : host), rejectUnauthorized: true })
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve)
    socket.once('error', reject)
  })
  const ch: Channel & { socket: TLSSocket } = {
    via: 'TLS',
    local: { address: socket.localAddress!, port: socket.localPort! },
    get sentBy () { return hp(this.local.address, this.local.port) },
    socket,
    send (text) { socket.write(text) },
    close () { socket.end() }
  }
  socket.on('data', streamFramer(m => ch.onMessage?.(m)))
  socket.on('close', () => ch.onClose?.())
  socket.on('error', () => { /* close follows */ })
  return ch
}

/** A WebSocket (RFC 7118, subprotocol `sip`) to `url`, e.g. wss://127.0.0.1:8443. sent-by is a random `.invalid` host. */
export async function wsChannel (url: string, ca?: Buffer): Promise<Channel & { ws: WebSocket }> {
  const ws = new WebSocket(url, 'sip', { ca, rejectUnauthorized: true })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => { resolve() })
    ws.once('error', reject)
  })
  if (ws.protocol !== 'sip') throw new Error(`server selected subprotocol ${JSON.stringify(ws.protocol)}, not sip`)
  const host = `${randomBytes(6).toString('hex')}.invalid`
  const ch: Channel & { ws: WebSocket } = {
    via: url.startsWith('wss:') ? 'WSS' : 'WS',
    sentBy: host,
    local: { address: host, port: 0 },
    ws,
    send (text) { ws.send(text) },
    close () { ws.close(1000) }
  }
  ws.on('message', (data: WebSocket.RawData) => { ch.onMessage?.(Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer)) })
  ws.on('close', () => ch.onClose?.())
  ws.on('error', () => { /* close follows */ })
  return ch
}

/** A UDP socket that sends everything to the server at host:port. */
export async function udpChannel (host: string, port: number): Promise<Channel & { socket: UdpSocket }> {
  const v6 = host.includes(':')
  const socket = createSocket(v6 ? 'udp6' : 'udp4')
  await new Promise<void>(resolve => socket.bind(0, v6 ? '::1' : '127.0.0.1', resolve))
  const a = socket.address()
  const ch: Channel & { socket: UdpSocket } = {
    via: 'UDP',
    local: { address: a.address, port: a.port },
    get sentBy () { return hp(this.local.address, this.local.port) },
    socket,
    send (text) { socket.send(Buffer.from(text), port, host) },
    close () { try { socket.close() } catch { /* closed */ } }
  }
  socket.on('message', m => ch.onMessage?.(m))
  return ch
}

export interface Dialog {
  callId: string
  localTag: string
  remoteTag: string
  localUri: string
  remoteUri: string
  /** Route set, in the order the next request carries it. */
  routes: string[]
  remoteTarget: string
  cseq: number
}

const rand = (): string => randomBytes(8).toString('hex')
const SDP = 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n'

export class ScriptedUA {
  /** Every message received, in order. */
  readonly received: SipMessage[] = []
  private readonly waiters = new Set<() => void>()
  private cseq = 1
  private readonly regCallId = rand()
  closed = false

  /**
   * @param aor e.g. sips:alice@sipring.test
   * @param contact the Contact URI, e.g. sips:alice@127.0.0.1:12345 or sip:u@x.invalid;transport=ws
   */
  constructor (readonly chan: Channel, readonly aor: string, readonly contact: string) {
    chan.onMessage = buf => {
      let msg: SipMessage
      try { msg = parseMessage(buf) } catch (err) { this.errors.push(`unparsable message: ${(err as Error).message}\n${buf.toString()}`); return }
      this.received.push(msg)
      for (const w of [...this.waiters]) w()
    }
    chan.onClose = () => { this.closed = true; for (const w of [...this.waiters]) w() }
  }

  readonly errors: string[] = []

  private via (branch: string): string {
    return `SIP/2.0/${this.chan.via} ${this.chan.sentBy};branch=z9hG4bK${branch};rport`
  }

  /** Resolves with the first message (received from `from` on) matching `pred`. */
  async next<M extends SipMessage> (pred: (m: SipMessage) => m is M, what: string, timeoutMs = 5000, from = 0): Promise<M> {
    return await new Promise<M>((resolve, reject) => {
      let idx = from
      const check = (): void => {
        for (; idx < this.received.length; idx++) {
          const m = this.received[idx]!
          if (pred(m)) { done(); resolve(m); return }
        }
        if (this.closed) { done(); reject(new Error(`${this.aor}: connection closed while waiting for ${what}`)) }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`${this.aor}: no ${what} within ${timeoutMs} ms; received:\n${this.received.map(m => firstLine(m)).join('\n')}`))
      }, timeoutMs)
      const done = (): void => { clearTimeout(timer); this.waiters.delete(check) }
      this.waiters.add(check)
      check()
    })
  }

  /** Waits for a response to the request with this Call-ID and CSeq number whose status passes `final`. */
  async response (callId: string, seq: number, method: string, opts: { final?: boolean, status?: number, timeoutMs?: number } = {}): Promise<SipResponse> {
    const want = opts.final ?? true
    return await this.next((m): m is SipResponse => m instanceof SipResponse && m.get('call-id') === callId &&
      m.get('cseq')?.replace(/\s+/g, ' ') === `${seq} ${method}` &&
      (opts.status !== undefined ? m.status === opts.status : want ? m.status >= 200 : m.status < 200),
    `${opts.status ?? (want ? 'final' : 'provisional')} response to ${method} ${seq}`, opts.timeoutMs)
  }

  async request (method: string, callId?: string, timeoutMs = 5000): Promise<SipRequest> {
    return await this.next((m): m is SipRequest => m instanceof SipRequest && m.method === method && (callId === undefined || m.get('call-id') === callId),
      `${method} request`, timeoutMs)
  }

  async register (registrar: string, expires = 600, extra: string[] = []): Promise<SipResponse> {
    const seq = this.cseq++
    this.chan.send([
      `REGISTER ${registrar} SIP/2.0`,
      `Via: ${this.via(rand())}`,
      'Max-Forwards: 70',
      `From: <${this.aor}>;tag=${rand()}`,
      `To: <${this.aor}>`,
      `Call-ID: ${this.regCallId}`,
      `CSeq: ${seq} REGISTER`,
      `Contact: <${this.contact}>;expires=${expires}`,
      ...extra,
      'Content-Length: 0', '', ''
    ].join('\r\n'))
    return await this.response(this.regCallId, seq, 'REGISTER')
  }

  /** Sends an INVITE to `target`; returns the Call-ID and local tag (the dialog starts with the 2xx). */
  invite (target: string): { callId: string, localTag: string, seq: number, branch: string } {
    const branch = rand()
    const callId = rand()
    const localTag = rand()
    const seq = this.cseq++
    this.chan.send([
      `INVITE ${target} SIP/2.0`,
      `Via: ${this.via(branch)}`,
      'Max-Forwards: 70',
      `From: <${this.aor}>;tag=${localTag}`,
      `To: <${target}>`,
      `Call-ID: ${callId}`,
      `CSeq: ${seq} INVITE`,
      `Contact: <${this.contact}>`,
      'Content-Type: application/sdp',
      `Content-Length: ${Buffer.byteLength(SDP)}`, '', SDP
    ].join('\r\n'))
    return { callId, localTag, seq, branch }
  }

  /** ACK for a non-2xx final response: same branch as the INVITE, hop by hop (RFC 3261 §17.1.1.3). */
  ackNon2xx (target: string, inv: { callId: string, localTag: string, seq: number, branch: string }, res: SipResponse): void {
    this.chan.send([
      `ACK ${target} SIP/2.0`,
      `Via: ${this.via(inv.branch)}`,
      'Max-Forwards: 70',
      `From: <${this.aor}>;tag=${inv.localTag}`,
      `To: ${res.get('to')!}`,
      `Call-ID: ${inv.callId}`,
      `CSeq: ${inv.seq} ACK`,
      'Content-Length: 0', '', ''
    ].join('\r\n'))
  }

  /** The UAC's dialog from a 2xx (route set = Record-Route reversed, remote target = Contact). */
  dialogFromResponse (res: SipResponse, seq: number): Dialog {
    return {
      callId: res.get('call-id')!,
      localTag: getTag(res.get('from')!)!,
      remoteTag: getTag(res.get('to')!)!,
      localUri: this.aor,
      remoteUri: parseNameAddr(res.get('to')!).uri,
      routes: res.getAll('record-route').reverse(),
      remoteTarget: parseNameAddr(res.get('contact')!).uri,
      cseq: seq
    }
  }

  /** Answers `req` with `status` (echoing Via, Record-Route, From, To + our tag, Call-ID, CSeq); a 2xx to INVITE returns the UAS dialog. */
  answer (req: SipRequest, status: number, reason: string, toTag: string): Dialog {
    const body = req.method === 'INVITE' && status === 200 ? SDP : ''
    const to = req.get('to')!
    this.chan.send([
      `SIP/2.0 ${status} ${reason}`,
      ...req.getAll('via').map(v => `Via: ${v}`),
      ...req.getAll('record-route').map(r => `Record-Route: ${r}`),
      `From: ${req.get('from')!}`,
      `To: ${getTag(to) === undefined ? `${to};tag=${toTag}` : to}`,
      `Call-ID: ${req.get('call-id')!}`,
      `CSeq: ${req.get('cseq')!}`,
      ...(req.method === 'INVITE' && status < 300 ? [`Contact: <${this.contact}>`] : []),
      ...(body !== '' ? ['Content-Type: application/sdp'] : []),
      `Content-Length: ${Buffer.byteLength(body)}`, '', body
    ].join('\r\n'))
    return {
      callId: req.get('call-id')!,
      localTag: toTag,
      remoteTag: getTag(req.get('from')!)!,
      localUri: parseNameAddr(to).uri,
      remoteUri: parseNameAddr(req.get('from')!).uri,
      routes: req.getAll('record-route'),
      remoteTarget: req.has('contact') ? parseNameAddr(req.get('contact')!).uri : '',
      cseq: 0
    }
  }

  /** Sends an in-dialog request (ACK keeps the INVITE's CSeq number); returns its CSeq number. */
  inDialog (d: Dialog, method: string): number {
    const seq = method === 'ACK' ? d.cseq : (d.cseq = Math.max(d.cseq, this.cseq++) + 1)
    this.chan.send([
      `${method} ${d.remoteTarget} SIP/2.0`,
      `Via: ${this.via(rand())}`,
      'Max-Forwards: 70',
      ...d.routes.map(r => `Route: ${r}`),
      `From: <${d.localUri}>;tag=${d.localTag}`,
      `To: <${d.remoteUri}>;tag=${d.remoteTag}`,
      `Call-ID: ${d.callId}`,
      `CSeq: ${seq} ${method}`,
      'Content-Length: 0', '', ''
    ].join('\r\n'))
    return seq
  }

  close (): void { this.chan.close() }
}

export function firstLine (m: SipMessage): string {
  return m instanceof SipRequest ? `${m.method} ${m.uri}` : `${(m as SipResponse).status} ${(m as SipResponse).reason}`
}
