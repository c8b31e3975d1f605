import t from 'tap'
import { StreamFramer, FramingError, contentLength, framingErrorResponse, type FrameEvent } from '@sipring/sip'
import { SeededRng } from '@sipring/testkit'
import { sipRequest } from './transport-helpers.js'

function messages (evs: FrameEvent[]): Buffer[] {
  return evs.filter((e): e is { type: 'message', data: Buffer } => e.type === 'message').map(e => e.data)
}

t.test('one whole message in one chunk', async t => {
  const f = new StreamFramer()
  const m = sipRequest({ body: 'hello' })
  const evs = f.push(m)
  t.equal(evs.length, 1)
  t.same(messages(evs)[0], m)
  t.equal(f.buffered, 0)
})

t.test('a message split byte by byte, then several messages in one chunk', async t => {
  const f = new StreamFramer()
  const m = sipRequest({ body: 'v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n' })
  const got: Buffer[] = []
  for (let i = 0; i < m.length; i++) {
    const evs = f.push(m.subarray(i, i + 1))
    got.push(...messages(evs))
    if (i < m.length - 1) t.equal(evs.length, 0, 'nothing before the last byte')
  }
  t.equal(got.length, 1)
  t.same(got[0], m)

  const a = sipRequest({ callId: 'a', body: 'one' })
  const b = sipRequest({ callId: 'b', compact: true, body: 'two two' })
  const c = sipRequest({ callId: 'c' })
  const all = Buffer.concat([a, b, c, a.subarray(0, 10)])
  const out = messages(f.push(all))
  t.same(out, [a, b, c])
  t.equal(f.buffered, 10, 'the start of the 4th message waits')
  t.same(messages(f.push(a.subarray(10))), [a])
})

t.test('random chunking of a stream of messages with pings in between', async t => {
  const msgs = [sipRequest({ callId: 'x1', body: 'é'.repeat(50) }), sipRequest({ callId: 'x2' }), sipRequest({ callId: 'x3', compact: true, body: 'zz' })]
  const stream = Buffer.concat([Buffer.from('\r\n\r\n'), msgs[0]!, Buffer.from('\r\n'), msgs[1]!, Buffer.from('\r\n\r\n'), msgs[2]!])
  let seed = 7
  for (let round = 0; round < 200; round++) {
    const f = new StreamFramer()
    const evs: FrameEvent[] = []
    let i = 0
    while (i < stream.length) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      const n = 1 + (seed % 40)
      evs.push(...f.push(stream.subarray(i, i + n)))
      i += n
    }
    const kinds = evs.map(e => e.type).join(',')
    if (kinds !== 'ping,message,message,ping,message') { t.fail(`round ${round}: ${kinds}`); return }
    const got = messages(evs)
    if (!got.every((g, k) => g.equals(msgs[k]!))) { t.fail(`round ${round}: bytes differ`); return }
  }
  t.pass('200 random chunkings framed identically')
})

t.test('UTF-8 multibyte body is framed by bytes, not characters', async t => {
  const body = 'héllo wörld — ☎ 𝄞' // 2-, 3- and 4-byte sequences
  t.not(Buffer.byteLength(body), body.length)
  const m = sipRequest({ body })
  const next = sipRequest({ callId: 'next' })
  const f = new StreamFramer()
  const out = messages(f.push(Buffer.concat([m, next])))
  t.equal(out.length, 2)
  t.same(out[0], m)
  t.equal(out[0]!.subarray(out[0]!.length - Buffer.byteLength(body)).toString('utf8'), body)
  t.same(out[1], next)
})

t.test('CRLFCRLF ping, single CRLFs skipped, split pings', async t => {
  const f = new StreamFramer()
  t.same(f.push(Buffer.from('\r\n\r\n')), [{ type: 'ping' }])
  t.same(f.push(Buffer.from('\r\n\r\n\r\n\r\n')), [{ type: 'ping' }, { type: 'ping' }])
  t.same(f.push(Buffer.from('\r')), [])
  t.same(f.push(Buffer.from('\n')), [])
  t.same(f.push(Buffer.from('\r')), [])
  t.same(f.push(Buffer.from('\n')), [{ type: 'ping' }], 'ping split over 4 chunks')
  const m = sipRequest()
  const evs = f.push(Buffer.concat([Buffer.from('\r\n'), m]))
  t.same(evs.map(e => e.type), ['message'], 'a lone CRLF before a message is skipped')
  t.equal(f.buffered, 0)
})

t.test('Content-Length forms: long, compact, case-insensitive, spaces, folded', async t => {
  const head = (h: string): Buffer => Buffer.from(`OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n${h}\r\n\r\n`)
  t.equal(contentLength(head('Content-Length: 12')), 12)
  t.equal(contentLength(head('content-length:7')), 7)
  t.equal(contentLength(head('CONTENT-LENGTH   :   3')), 3)
  t.equal(contentLength(head('l: 5')), 5)
  t.equal(contentLength(head('L:0')), 0)
  t.equal(contentLength(head('Content-Length:\r\n 9')), 9, 'folded value')
  t.equal(contentLength(head('Content-Length: 4\r\nl: 4')), 4, 'duplicates that agree')
  t.equal(contentLength(head('Content-Length: 4\r\nl: 5')), 'Conflicting Content-Length')
  t.equal(contentLength(head('Content-Length: -1')), 'Invalid Content-Length')
  t.equal(contentLength(head('Content-Length: 1e3')), 'Invalid Content-Length')
  t.equal(contentLength(head('Content-Length: 99999999999')), 'Invalid Content-Length')
  t.equal(contentLength(head('X-Content-Length: 4')), 'Missing Content-Length')
  t.equal(contentLength(head('Subject: l: 4')), 'Missing Content-Length')
})

t.test('missing Content-Length is a terminal 400 error with the head kept', async t => {
  const f = new StreamFramer()
  const raw = 'INVITE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n' +
    'To: <sip:bob@example.org>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nSubject: hi\r\n\r\nbody'
  const evs = f.push(Buffer.from(raw))
  t.equal(evs.length, 1)
  const ev = evs[0]!
  t.equal(ev.type, 'error')
  if (ev.type !== 'error') return
  t.ok(ev.error instanceof FramingError)
  t.equal(ev.error.status, 400)
  t.equal(ev.error.reason, 'Missing Content-Length')
  t.ok(f.failed)
  t.same(f.push(sipRequest()), [], 'a failed framer accepts nothing more')
  const answer = framingErrorResponse(ev.error)?.toString('latin1')
  t.ok(answer?.startsWith('SIP/2.0 400 Missing Content-Length\r\n'))
  t.match(answer, /\r\nVia: SIP\/2.0\/TCP 192.0.2.1;branch=z9hG4bKx\r\n/)
  t.match(answer, /\r\nCall-ID: c1\r\n/)
  t.match(answer, /\r\nCSeq: 1 INVITE\r\n/)
  t.notMatch(answer, /Subject/)
  t.ok(answer?.endsWith('Content-Length: 0\r\n\r\n'))
  f.reset()
  t.equal(messages(f.push(sipRequest())).length, 1, 'reset() makes it usable again')
})

t.test('no best-effort answer for a response or a head without Via', async t => {
  t.equal(framingErrorResponse(new FramingError(400, 'Missing Content-Length', Buffer.from('SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h\r\n\r\n'))), undefined)
  t.equal(framingErrorResponse(new FramingError(400, 'Missing Content-Length', Buffer.from('OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\n'))), undefined)
  t.equal(framingErrorResponse(new FramingError(513, 'Message Too Large')), undefined)
})

t.test('limits: header section and whole message', async t => {
  const f = new StreamFramer({ maxMessageSize: 1000, maxHeaderSize: 300 })
  // header without end grows past maxHeaderSize → 513
  const evs = f.push(Buffer.from('OPTIONS sip:a@b SIP/2.0\r\n' + 'X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(10)))
  t.same(evs.map(e => e.type), ['error'])
  if (evs[0]?.type === 'error') t.equal(evs[0].error.status, 513)
  t.equal(f.buffered, 0, 'buffer released')

  const g = new StreamFramer({ maxMessageSize: 1000 })
  const big = sipRequest({ body: 'x'.repeat(1000) })
  const ev2 = g.push(big.subarray(0, 300))
  t.same(ev2.map(e => e.type), ['error'], 'body over the limit is refused as soon as the head is read')
  if (ev2[0]?.type === 'error') { t.equal(ev2[0].error.status, 413); t.ok(ev2[0].error.head) }

  const h = new StreamFramer({ maxMessageSize: 1000 })
  const ok = sipRequest({ body: 'y'.repeat(1000 - sipRequest({ body: 'y'.repeat(100) }).length + 100) })
  t.equal(ok.length, 1000)
  t.same(messages(h.push(ok)), [ok], 'exactly maxMessageSize is accepted')

  // the buffer never exceeds the limit however the bytes are chunked
  const k = new StreamFramer({ maxMessageSize: 2000 })
  let peak = 0
  const stream = Buffer.concat(Array.from({ length: 20 }, (_, i) => sipRequest({ callId: `c${i}`, body: 'z'.repeat(500) })))
  for (let i = 0; i < stream.length; i += 333) { k.push(stream.subarray(i, i + 333)); peak = Math.max(peak, k.buffered) }
  t.ok(peak <= 2000, `peak buffer ${peak} <= 2000`)
  t.throws(() => new StreamFramer({ maxMessageSize: 0 }), RangeError)
})

t.test('LF-only line endings are framed too', async t => {
  const f = new StreamFramer()
  const m = Buffer.from('OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 2\n\nokNEXT')
  const out = messages(f.push(m))
  t.equal(out.length, 1)
  t.equal(out[0]!.toString(), 'OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\nContent-Length: 2\n\nok')
  t.equal(f.buffered, 4)
})

t.test('the framer does not alias the caller chunk it keeps', async t => {
  const f = new StreamFramer()
  const m = sipRequest({ body: 'abc' })
  const chunk = Buffer.from(m.subarray(0, 20))
  f.push(chunk)
  chunk.fill(0)
  t.same(messages(f.push(m.subarray(20))), [m])
})

t.test('garbage never throws and never grows the buffer past the limit', async t => {
  const rng = new SeededRng(4475)
  const alphabet = Buffer.from('\r\n\r\n:lL0123456789 Content-Length: SIP/2.0 INVITE \r\n\r\n\t')
  let events = 0
  for (let round = 0; round < 500; round++) {
    const f = new StreamFramer({ maxMessageSize: 512 })
    for (let k = 0; k < 20; k++) {
      const n = 1 + rng.int(200)
      const chunk = Buffer.alloc(n)
      for (let i = 0; i < n; i++) chunk[i] = rng.next() < 0.7 ? alphabet[rng.int(alphabet.length)]! : rng.int(256)
      const evs = f.push(chunk)
      events += evs.length
      for (const e of evs) if (e.type === 'message' && e.data.length > 512) { t.fail('message over the limit'); return }
      if (f.buffered > 512 + 200) { t.fail(`buffer ${f.buffered}`); return }
    }
  }
  t.ok(events > 0, `${events} events from 10,000 random chunks, no throw`)
})
