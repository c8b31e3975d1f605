// Group members in one Node process: a UDP socket per member (its registered Contact port) that
// behaves like test/sipp/member-{answer,ring,busy}.xml — INVITE → 180; `answer`: 200 after
// `ringMs` (retransmitted until the ACK), BYE → 200; `ring`: CANCEL → 200 + 487 (retransmitted until
// the ACK); `busy`: 486. For benchmarks with hundreds of members, where one idle SIPp per member costs
// ~0.6 % of a core each. Counts, per member, what a SIPp UAS would: legs created / completed / failed.
import { createSocket, type Socket } from 'node:dgram'
import { createResponse, parseMessage, serialize, SipRequest, SipResponse } from '@sipring/sip'
import type { MemberRole } from './group.js'

export interface FarmLegStats { created: number, successful: number, failed: number, unexpected: number }

interface Leg {
  invite: SipRequest
  tag: string
  peer: { address: string, port: number }
  final?: Buffer
  retrans?: NodeJS.Timeout
  ring?: NodeJS.Timeout
  state: 'ringing' | 'answered' | 'confirmed' | 'terminating' | 'done'
}

export interface FarmMember { user: string, port: number, role: MemberRole }

export class MemberFarm {
  private readonly sockets = new Map<string, Socket>()
  private readonly legs = new Map<string, Leg>()
  readonly stats = new Map<string, FarmLegStats>()
  private seq = 0

  constructor (private readonly ringMs = 300) {}

  async start (members: FarmMember[]): Promise<void> {
    await Promise.all(members.map(async m => {
      const sock = createSocket('udp4')
      this.stats.set(m.user, { created: 0, successful: 0, failed: 0, unexpected: 0 })
      sock.on('message', (buf, rinfo) => { this.onMessage(m, sock, buf, { address: rinfo.address, port: rinfo.port }) })
      await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(m.port, '127.0.0.1', () => { sock.off('error', reject); resolve() }) })
      this.sockets.set(m.user, sock)
    }))
  }

  /** Legs still open count as failed (as a SIPp UAS aborting its calls on stop). */
  async stop (): Promise<Map<string, FarmLegStats>> {
    for (const [key, leg] of this.legs) {
      clearTimeout(leg.retrans); clearTimeout(leg.ring)
      if (leg.state !== 'done') this.stats.get(key.split('|')[0]!)!.failed++
    }
    this.legs.clear()
    await Promise.all([...this.sockets.values()].map(async s => await new Promise<void>(resolve => { s.close(() => { resolve() }) })))
    this.sockets.clear()
    return this.stats
  }

  private send (sock: Socket, msg: SipResponse | Buffer, to: { address: string, port: number }): Buffer {
    const buf = Buffer.isBuffer(msg) ? msg : serialize(msg)
    sock.send(buf, to.port, to.address)
    return buf
  }

  /** Sends `res` now and again after 500, 1000, 2000 … ms (Timer G style) until the leg moves on. */
  private sendFinal (sock: Socket, leg: Leg, res: SipResponse): void {
    leg.final = this.send(sock, res, leg.peer)
    let interval = 500
    const again = (): void => {
      if (leg.state === 'done' || leg.state === 'confirmed' || leg.final === undefined) return
      sock.send(leg.final, leg.peer.port, leg.peer.address)
      interval = Math.min(interval * 2, 4000)
      leg.retrans = setTimeout(again, interval)
    }
    leg.retrans = setTimeout(again, interval)
  }

  private response (req: SipRequest, status: number, tag: string, withRoutes = false): SipResponse {
    const res = createResponse(req, status, undefined, tag)
    if (withRoutes) for (const rr of req.headers.filter(h => h.name === 'record-route')) res.headers.push({ name: 'record-route', value: rr.value })
    return res
  }

  private onMessage (m: FarmMember, sock: Socket, buf: Buffer, peer: { address: string, port: number }): void {
    let msg
    try { msg = parseMessage(buf) } catch { return }
    if (!(msg instanceof SipRequest)) return
    const st = this.stats.get(m.user)!
    const key = `${m.user}|${msg.get('call-id') ?? ''}`
    const leg = this.legs.get(key)
    switch (msg.method) {
      case 'INVITE': {
        if (leg !== undefined) { // retransmission: repeat the last final, if any
          if (leg.final !== undefined) sock.send(leg.final, leg.peer.port, leg.peer.address)
          else if (leg.state === 'ringing') this.send(sock, this.response(leg.invite, 180, leg.tag, true), leg.peer)
          return
        }
        st.created++
        const l: Leg = { invite: msg, tag: `f${++this.seq}`, peer, state: 'ringing' }
        this.legs.set(key, l)
        if (m.role === 'busy') { l.state = 'terminating'; this.sendFinal(sock, l, this.response(msg, 486, l.tag)); return }
        this.send(sock, this.response(msg, 180, l.tag, true), peer)
        if (m.role === 'answer') {
          l.ring = setTimeout(() => {
            if (l.state !== 'ringing') return
            l.state = 'answered'
            const ok = this.response(msg, 200, l.tag, true)
            ok.headers.push({ name: 'contact', value: `<sip:${m.user}@127.0.0.1:${m.port};transport=udp>` })
            this.sendFinal(sock, l, ok)
          }, this.ringMs)
        }
        return
      }
      case 'CANCEL': {
        if (leg === undefined) { this.send(sock, createResponse(msg, 481), peer); st.unexpected++; return }
        this.send(sock, createResponse(msg, 200, undefined, leg.tag), peer)
        if (leg.state !== 'ringing') return
        clearTimeout(leg.ring)
        leg.state = 'terminating'
        this.sendFinal(sock, leg, this.response(leg.invite, 487, leg.tag))
        return
      }
      case 'ACK': {
        if (leg === undefined) return
        clearTimeout(leg.retrans)
        if (leg.state === 'terminating') { leg.state = 'done'; st.successful++; this.finish(key, leg) } else if (leg.state === 'answered') leg.state = 'confirmed'
        return
      }
      case 'BYE': {
        this.send(sock, createResponse(msg, leg === undefined ? 481 : 200), peer)
        if (leg === undefined) { st.unexpected++; return }
        clearTimeout(leg.retrans)
        if (leg.state !== 'done') { leg.state = 'done'; st.successful++; this.finish(key, leg) }
        return
      }
      default:
        this.send(sock, createResponse(msg, 405), peer)
        st.unexpected++
    }
  }

  /** Keep a finished leg 2 s to absorb retransmissions, then forget it. */
  private finish (key: string, leg: Leg): void {
    setTimeout(() => { if (this.legs.get(key) === leg) this.legs.delete(key) }, 2000).unref()
  }
}
