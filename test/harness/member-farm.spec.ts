// The benchmark's in-process group members (lib/member-farm.ts) behave like the SIPp member
// scenarios: ring → CANCEL → 200 + 487 → ACK; answer → 180, 200 after the ring time, ACK, BYE → 200;
// busy → 486; legs left open at stop() count as failed.
import t from 'tap'
import { createSocket, type Socket } from 'node:dgram'
import { parseMessage, SipResponse } from '@sipring/sip'
import { freePort } from '../lib/ports.js'
import { MemberFarm } from '../lib/member-farm.js'

function invite (callId: string, port: number, user: string, local: number, method = 'INVITE', cseq = `1 ${method}`, toTag = ''): string {
  return [
    `${method} sip:${user}@127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${local};branch=z9hG4bK${callId}`,
    'Max-Forwards: 70',
    'From: <sip:alice@x.test>;tag=a1',
    `To: <sip:${user}@x.test>${toTag !== '' ? `;tag=${toTag}` : ''}`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq}`,
    'Record-Route: <sip:127.0.0.1:5999;lr>',
    'Content-Length: 0',
    '', ''
  ].join('\r\n')
}

async function client (): Promise<{ sock: Socket, port: number, next: (timeoutMs?: number) => Promise<SipResponse>, close: () => void }> {
  const sock = createSocket('udp4')
  const queue: SipResponse[] = []
  const waiters: Array<(r: SipResponse) => void> = []
  sock.on('message', buf => {
    const m = parseMessage(buf)
    if (!(m instanceof SipResponse)) return
    const w = waiters.shift()
    if (w !== undefined) w(m); else queue.push(m)
  })
  await new Promise<void>(resolve => { sock.bind(0, '127.0.0.1', resolve) })
  return {
    sock,
    port: sock.address().port,
    next: async (timeoutMs = 2000) => {
      const q = queue.shift()
      if (q !== undefined) return q
      return await new Promise<SipResponse>((resolve, reject) => {
        const timer = setTimeout(() => { reject(new Error('no response')) }, timeoutMs)
        waiters.push(r => { clearTimeout(timer); resolve(r) })
      })
    },
    close: () => { sock.close() }
  }
}

t.test('ring, answer and busy members', async t => {
  const [pr, pa, pb] = [await freePort(), await freePort(), await freePort()]
  const farm = new MemberFarm(100)
  await farm.start([{ user: 'r', port: pr, role: 'ring' }, { user: 'a', port: pa, role: 'answer' }, { user: 'b', port: pb, role: 'busy' }])
  const c = await client()
  t.teardown(() => { c.close() })
  const send = (text: string, port: number): void => { c.sock.send(Buffer.from(text), port, '127.0.0.1') }

  // ring: 180 (Record-Route copied, To tag), CANCEL → 200, 487, ACK
  send(invite('c1', pr, 'r', c.port), pr)
  const ringing = await c.next()
  t.equal(ringing.status, 180)
  t.equal(ringing.get('record-route'), '<sip:127.0.0.1:5999;lr>')
  const tag = /tag=([^;]+)$/.exec(ringing.get('to') ?? '')?.[1]
  t.ok(tag, 'the 180 has a To tag')
  send(invite('c1', pr, 'r', c.port, 'CANCEL', '1 CANCEL'), pr)
  const r1 = await c.next(); const r2 = await c.next()
  t.same([r1.status, r2.status].sort(), [200, 487], 'CANCEL answered 200 and the INVITE 487')
  t.equal((r1.status === 487 ? r1 : r2).get('cseq'), '1 INVITE')
  send(invite('c1', pr, 'r', c.port, 'ACK', '1 ACK', tag), pr)

  // answer: 180, then 200 after the ring time (Contact), ACK, BYE → 200
  send(invite('c2', pa, 'a', c.port), pa)
  t.equal((await c.next()).status, 180)
  const ok = await c.next()
  t.equal(ok.status, 200)
  t.match(ok.get('contact') ?? '', new RegExp(`127\\.0\\.0\\.1:${pa}`))
  const atag = /tag=([^;]+)$/.exec(ok.get('to') ?? '')![1]!
  send(invite('c2', pa, 'a', c.port, 'ACK', '1 ACK', atag), pa)
  send(invite('c2', pa, 'a', c.port, 'BYE', '2 BYE', atag), pa)
  t.equal((await c.next()).status, 200, 'BYE answered')

  // busy: 486 (retransmitted until the ACK); a second INVITE stays open → failed at stop
  send(invite('c3', pb, 'b', c.port), pb)
  t.equal((await c.next()).status, 486)
  send(invite('c3', pb, 'b', c.port, 'ACK', '1 ACK'), pb)
  send(invite('c4', pr, 'r', c.port), pr)
  t.equal((await c.next()).status, 180)

  const stats = await farm.stop()
  t.same(stats.get('r'), { created: 2, successful: 1, failed: 1, unexpected: 0 }, 'ring: one leg cancelled, one left ringing')
  t.same(stats.get('a'), { created: 1, successful: 1, failed: 0, unexpected: 0 }, 'answer: one call completed by its BYE')
  t.same(stats.get('b'), { created: 1, successful: 1, failed: 0, unexpected: 0 }, 'busy: one 486 acknowledged')
})
