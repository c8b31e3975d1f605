import t from 'tap'
import { connect as netConnect, createServer, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { SimClock, MemoryLogger, SeededRng } from '@sipring/testkit'
import { TcpTransport, TlsTransport, TransportError, createTransport, type ConnectionTransport } from '@sipring/sip'
import { CERT, KEY, Collector, closedPort, families, sipRequest, sleep } from './transport-helpers.js'

const fams = await families()

type Proto = 'tcp' | 'tls'
interface Extra { idleTimeoutMs?: number, maxMessageSize?: number, maxConnections?: number }

function make (proto: Proto, address: string, clock: SimClock, extra: Extra = {}, logger = new MemoryLogger()): ConnectionTransport {
  const base = { address, port: 0, clock, logger, ...extra }
  return proto === 'tcp' ? new TcpTransport(base) : new TlsTransport({ ...base, cert: CERT, key: KEY, ca: CERT })
}

/** A raw client socket to a transport, collecting everything it receives. */
async function rawClient (proto: Proto, address: string, port: number): Promise<{ sock: Socket, data: () => string, closed: () => boolean }> {
  const sock: Socket = proto === 'tcp' ? netConnect({ host: address, port }) : tlsConnect({ host: address, port, ca: CERT })
  let buf = ''
  let closed = false
  sock.on('data', d => { buf += d.toString('latin1') })
  sock.on('close', () => { closed = true })
  sock.on('error', () => {})
  await new Promise<void>((resolve, reject) => { sock.once(proto === 'tcp' ? 'connect' : 'secureConnect', resolve); sock.once('error', reject) })
  return { sock, data: () => buf, closed: () => closed }
}

async function waitFor (cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

for (const proto of ['tcp', 'tls'] as const) {
  for (const fam of fams) {
    const name = `${proto.toUpperCase()} ${fam.name}`

    t.test(`${name}: send, receive, reply on the inbound connection, reuse`, async t => {
      const clock = new SimClock()
      const a = make(proto, fam.address, clock)
      const b = make(proto, fam.address, clock)
      await a.start(); await b.start()
      t.teardown(async () => { await a.stop(); await b.stop() })
      t.ok(b.local.port > 0)
      t.equal(a.protocol, proto)
      const ca = new Collector(a); const cb = new Collector(b)
      const to = { protocol: proto, address: fam.address, port: b.local.port }
      // concurrent sends share a single connect
      await Promise.all([1, 2, 3].map(async i => { await a.send(sipRequest({ callId: `c${i}`, body: 'ü' }), to) }))
      await cb.until(() => cb.messages.length === 3, '3 messages')
      t.equal(a.connectionCount, 1, 'one outbound connection')
      t.equal(b.connectionCount, 1, 'one inbound connection')
      const src = cb.messages[0]!.source
      t.equal(src.protocol, proto)
      t.equal(src.address, fam.address)
      t.not(src.port, a.local.port, 'inbound connections come from an ephemeral port')
      t.match(src.connectionId, new RegExp(`^${proto}:\\d+$`))
      t.ok(b.hasConnection(src.connectionId!))
      t.same(src.local, b.local)
      t.same(cb.messages.map(m => m.data.toString()).sort(), [1, 2, 3].map(i => sipRequest({ callId: `c${i}`, body: 'ü' }).toString()).sort())
      // reply over the inbound connection (to.connectionId) — no new connection is opened
      await b.send(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'), src)
      await ca.until(() => ca.messages.length === 1, 'reply')
      const back = ca.messages[0]!.source
      t.equal(back.port, b.local.port, 'the reply arrives on the outbound connection to b')
      t.equal(back.connectionId, a.connectionIds()[0])
      t.equal(b.connectionCount, 1)
      t.equal(a.connectionCount, 1)
      // a request from b to a's ephemeral address reuses the inbound connection too (address:port match)
      await b.send(sipRequest({ callId: 'by-address' }), { protocol: proto, address: src.address, port: src.port })
      await ca.until(() => ca.messages.length === 2, 'request by address')
      t.equal(b.connectionCount, 1, 'inbound connection reused by address:port')
      // a stale connectionId falls back to the address
      await a.send(sipRequest({ callId: 'stale' }), { ...to, connectionId: `${proto}:999999` })
      await cb.until(() => cb.messages.length === 4, 'message with stale id')
      t.equal(a.connectionCount, 1)
      t.same(ca.errors, [])
    })

    t.test(`${name}: framing over a raw socket (split chunks, several per chunk, UTF-8 bytes, ping/pong)`, async t => {
      const clock = new SimClock()
      const b = make(proto, fam.address, clock)
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c = await rawClient(proto, fam.address, b.local.port)
      t.teardown(() => { c.sock.destroy() })
      const m1 = sipRequest({ callId: 'm1', body: '☎ 𝄞 é' })
      const m2 = sipRequest({ callId: 'm2', compact: true, body: 'second' })
      const m3 = sipRequest({ callId: 'm3' })
      // m1 in many small chunks
      for (let i = 0; i < m1.length; i += 7) { c.sock.write(m1.subarray(i, i + 7)); await sleep(0) }
      await cb.until(() => cb.messages.length === 1, 'm1')
      t.same(cb.messages[0]!.data, m1)
      // m2 + m3 in one chunk
      c.sock.write(Buffer.concat([m2, m3]))
      await cb.until(() => cb.messages.length === 3, 'm2 + m3')
      t.same(cb.messages[1]!.data, m2)
      t.same(cb.messages[2]!.data, m3)
      const id = cb.messages[0]!.source.connectionId!
      t.equal(cb.messages[2]!.source.connectionId, id, 'same connection id')
      // RFC 5626 ping → pong
      c.sock.write('\r\n\r\n')
      await cb.until(() => cb.keepalives.length === 1, 'keepalive')
      t.same(cb.keepalives, [id])
      await waitFor(() => c.data() === '\r\n', 'pong')
      t.equal(c.data(), '\r\n', 'single CRLF pong')
      t.equal(c.closed(), false)
    })

    t.test(`${name}: missing Content-Length → 400 then the connection is closed`, async t => {
      const clock = new SimClock()
      const log = new MemoryLogger()
      const b = make(proto, fam.address, clock, {}, log)
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c = await rawClient(proto, fam.address, b.local.port)
      const good = sipRequest({ callId: 'good' })
      c.sock.write(Buffer.concat([good, Buffer.from('OPTIONS sip:x@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKnocl\r\n' +
        'From: <sip:a@b>;tag=9\r\nTo: <sip:x@example.org>\r\nCall-ID: nocl\r\nCSeq: 7 OPTIONS\r\n\r\n')]))
      await waitFor(() => c.closed(), 'connection closed by the transport')
      await cb.until(() => cb.closes.length === 1, 'close event')
      t.equal(cb.messages.length, 1, 'the framed message before the garbage was delivered')
      t.same(cb.messages[0]!.data, good)
      t.match(c.data(), /^SIP\/2\.0 400 Missing Content-Length\r\n/)
      t.match(c.data(), /Call-ID: nocl\r\n/)
      t.match(c.data(), /CSeq: 7 OPTIONS\r\n/)
      t.equal(cb.closes[0], cb.messages[0]!.source.connectionId)
      t.equal(b.connectionCount, 0)
      t.ok(log.records.some(r => r.level === 'warn' && r.reason === 'Missing Content-Length'))
      t.equal(clock.pending, 0, 'no timer left behind')
    })

    t.test(`${name}: oversize message → 413 and close; oversize send rejects`, async t => {
      const clock = new SimClock()
      const b = make(proto, fam.address, clock, { maxMessageSize: 2000 })
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c = await rawClient(proto, fam.address, b.local.port)
      c.sock.write(sipRequest({ callId: 'huge', body: 'x'.repeat(5000) }))
      await waitFor(() => c.closed(), 'closed')
      t.match(c.data(), /^SIP\/2\.0 413 /)
      t.equal(cb.messages.length, 0)
      const err = await b.send(Buffer.alloc(2001, 65), { protocol: proto, address: fam.address, port: 5060 }).catch(e => e)
      t.ok(err instanceof TransportError)
      t.equal(err.code, 'EMSGSIZE')
      // header section without end beyond the limit
      const c2 = await rawClient(proto, fam.address, b.local.port)
      c2.sock.write('OPTIONS sip:x SIP/2.0\r\n' + 'X-Junk: yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\r\n'.repeat(100))
      await waitFor(() => c2.closed(), 'closed after endless header')
      t.equal(cb.messages.length, 0)
    })

    t.test(`${name}: idle connections closed by the injected clock`, async t => {
      const clock = new SimClock()
      const b = make(proto, fam.address, clock, { idleTimeoutMs: 30_000 })
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c = await rawClient(proto, fam.address, b.local.port)
      c.sock.write(sipRequest())
      await cb.until(() => cb.messages.length === 1, 'message')
      const id = cb.messages[0]!.source.connectionId!
      clock.advance(20_000)
      c.sock.write('\r\n\r\n') // traffic (a ping) restarts the idle period
      await cb.until(() => cb.keepalives.length === 1, 'keepalive')
      clock.advance(20_000)
      await sleep(20)
      t.ok(b.hasConnection(id), 'still open 40 s in, 20 s after the last traffic')
      t.equal(c.closed(), false)
      clock.advance(10_000)
      t.notOk(b.hasConnection(id), 'closed 30 s after the last traffic')
      t.same(cb.closes, [id])
      await waitFor(() => c.closed(), 'peer sees the close')
      t.equal(clock.pending, 0)
    })

    t.test(`${name}: maxConnections refuses extra inbound connections`, async t => {
      const clock = new SimClock()
      const log = new MemoryLogger()
      const b = make(proto, fam.address, clock, { maxConnections: 2 }, log)
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c1 = await rawClient(proto, fam.address, b.local.port)
      const c2 = await rawClient(proto, fam.address, b.local.port)
      t.teardown(() => { c1.sock.destroy(); c2.sock.destroy() })
      c1.sock.write(sipRequest({ callId: '1' })); c2.sock.write(sipRequest({ callId: '2' }))
      await cb.until(() => cb.messages.length === 2, 'two messages')
      const c3 = await rawClient(proto, fam.address, b.local.port).catch(() => undefined)
      if (c3 !== undefined) await waitFor(() => c3.closed(), 'third connection refused')
      t.equal(b.connectionCount, 2)
      t.ok(log.records.some(r => /connection limit/.test(r.msg ?? '')))
      // and an outbound connect beyond the limit rejects
      const err = await b.send(sipRequest(), { protocol: proto, address: fam.address, port: await closedPort(fam.address) }).catch(e => e)
      t.equal(err.code, 'ECONNLIMIT')
    })

    t.test(`${name}: send to a closed port rejects (ECONNREFUSED), no crash`, async t => {
      const clock = new SimClock()
      const a = make(proto, fam.address, clock)
      await a.start()
      t.teardown(async () => { await a.stop() })
      const ca = new Collector(a)
      const port = await closedPort(fam.address)
      const err = await a.send(sipRequest(), { protocol: proto, address: fam.address, port }).catch(e => e)
      t.ok(err instanceof TransportError, 'a TransportError')
      t.equal(err.code, 'ECONNREFUSED')
      t.match(err.message, /connect to/)
      t.equal(a.connectionCount, 0)
      t.same(ca.errors, [], 'no error event for a send failure')
    })

    t.test(`${name}: peer resets the connection — sends reject or reconnect, no crash`, async t => {
      const clock = new SimClock()
      const a = make(proto, fam.address, clock)
      const b = make(proto, fam.address, clock)
      await a.start(); await b.start()
      t.teardown(async () => { await a.stop(); await b.stop() })
      const ca = new Collector(a); const cb = new Collector(b)
      const to = { protocol: proto, address: fam.address, port: b.local.port }
      await a.send(sipRequest(), to)
      await cb.until(() => cb.messages.length === 1, 'first')
      const first = a.connectionIds()[0]!
      // b drops the connection abruptly
      for (const id of b.connectionIds()) b.closeConnection(id)
      await ca.until(() => ca.closes.length === 1, 'a sees the close')
      t.same(ca.closes, [first])
      t.notOk(a.hasConnection(first))
      await a.send(sipRequest({ callId: 'again' }), to)
      await cb.until(() => cb.messages.length === 2, 'second over a new connection')
      t.not(a.connectionIds()[0], first, 'a new connection was made')
      // a stopped peer: the send rejects with a code, never throws synchronously
      await b.stop()
      await ca.until(() => ca.closes.length === 2, 'close after peer stop')
      const err = await a.send(sipRequest({ callId: 'dead' }), to).catch(e => e)
      t.ok(err instanceof TransportError)
      t.ok(['ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(err.code), `code ${err.code}`)
    })

    t.test(`${name}: stop() closes everything, emits close, cancels timers, idempotent`, async t => {
      const clock = new SimClock()
      const a = make(proto, fam.address, clock, { idleTimeoutMs: 60_000 })
      const b = make(proto, fam.address, clock, { idleTimeoutMs: 60_000 })
      await a.start(); await b.start()
      const ca = new Collector(a); const cb = new Collector(b)
      await a.send(sipRequest(), { protocol: proto, address: fam.address, port: b.local.port })
      await cb.until(() => cb.messages.length === 1, 'message')
      t.ok(clock.pending >= 2, 'idle timers armed')
      await b.stop()
      t.equal(cb.closes.length, 1, 'close emitted for the inbound connection')
      t.equal(b.connectionCount, 0)
      await b.stop()
      t.equal(cb.closes.length, 1, 'second stop is a no-op')
      await ca.until(() => ca.closes.length === 1, 'a sees it closed')
      await a.stop()
      t.equal(clock.pending, 0, 'every timer cancelled')
      const err = await a.send(sipRequest(), { protocol: proto, address: fam.address, port: b.local.port }).catch(e => e)
      t.equal(err.code, 'ENOTRUNNING')
      // the port is free again
      const again = make(proto, fam.address, clock)
      ;(again as unknown as { bound: { port: number } }).bound.port = b.local.port
      await again.start()
      t.equal(again.local.port, b.local.port)
      await again.stop()
    })
  }
}

t.test('TLS: an untrusted server certificate is refused', async t => {
  const clock = new SimClock()
  const b = new TlsTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger(), cert: CERT, key: KEY })
  const a = new TlsTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger(), cert: CERT, key: KEY }) // no ca
  await a.start(); await b.start()
  t.teardown(async () => { await a.stop(); await b.stop() })
  const cb = new Collector(b)
  const err = await a.send(sipRequest(), { protocol: 'tls', address: '127.0.0.1', port: b.local.port }).catch(e => e)
  t.ok(err instanceof TransportError)
  t.match(err.code, /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/)
  await sleep(20)
  t.equal(cb.messages.length, 0)
  t.equal(a.connectionCount, 0)
})

t.test('TCP: a plain TCP client on the TLS port does not crash the transport', async t => {
  const clock = new SimClock()
  const b = new TlsTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger(), cert: CERT, key: KEY })
  await b.start()
  t.teardown(async () => { await b.stop() })
  const c = await rawClient('tcp', '127.0.0.1', b.local.port)
  c.sock.write(sipRequest())
  await waitFor(() => c.closed(), 'closed')
  t.equal(b.connectionCount, 0)
})

t.test('TLS: handshake timeout from the injected clock', async t => {
  // a listener that never completes the TLS handshake: accept TCP, say nothing
  const silent = createServer(() => {})
  await new Promise<void>(resolve => { silent.listen({ host: '127.0.0.1', port: 0 }, resolve) })
  t.teardown(() => { silent.close() })
  const port = (silent.address() as { port: number }).port
  const clock = new SimClock()
  const a = new TlsTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger(), cert: CERT, key: KEY, ca: CERT, connectTimeoutMs: 5000 })
  await a.start()
  t.teardown(async () => { await a.stop() })
  const p = a.send(sipRequest(), { protocol: 'tls', address: '127.0.0.1', port }).catch(e => e)
  await sleep(50)
  clock.advance(5000)
  const err = await p
  t.equal(err.code, 'ETIMEDOUT')
  t.equal(a.connectionCount, 0)
})

t.test('TCP: IPv4 and IPv6 listeners share a port; wrong-family sends rejected', async t => {
  if (fams.length < 2) { t.skip('no IPv6'); return }
  const clock = new SimClock()
  const v4 = new TcpTransport({ address: '0.0.0.0', port: 0, clock, logger: new MemoryLogger() })
  await v4.start()
  const v6 = new TcpTransport({ address: '::', port: v4.local.port, clock, logger: new MemoryLogger() })
  await v6.start()
  t.teardown(async () => { await v4.stop(); await v6.stop() })
  const c6 = new Collector(v6)
  const s = new TcpTransport({ address: '::1', port: 0, clock, logger: new MemoryLogger() })
  await s.start()
  t.teardown(async () => { await s.stop() })
  await s.send(sipRequest(), { protocol: 'tcp', address: '::1', port: v6.local.port })
  await c6.until(() => c6.messages.length === 1, 'v6 message')
  const err = await s.send(sipRequest(), { protocol: 'tcp', address: '127.0.0.1', port: v4.local.port }).catch(e => e)
  t.equal(err.code, 'EAFNOSUPPORT')
})

t.test('createTransport builds each protocol', async t => {
  const clock = new SimClock()
  const logger = new MemoryLogger()
  t.equal(createTransport({ protocol: 'udp', address: '127.0.0.1', port: 0, clock, logger }).protocol, 'udp')
  t.equal(createTransport({ protocol: 'tcp', address: '127.0.0.1', port: 0, clock, logger }).protocol, 'tcp')
  t.equal(createTransport({ protocol: 'tls', address: '127.0.0.1', port: 0, clock, logger, cert: CERT, key: KEY }).protocol, 'tls')
  t.equal(createTransport({ protocol: 'ws', address: '127.0.0.1', port: 0, clock, logger }).protocol, 'ws')
  t.equal(createTransport({ protocol: 'wss', address: '::1', port: 0, clock, logger, cert: CERT, key: KEY }).protocol, 'wss')
  t.throws(() => createTransport({ protocol: 'sctp', address: '127.0.0.1', port: 0, clock, logger } as never), /unknown transport protocol: sctp/)
  t.throws(() => createTransport({ protocol: 'tls', address: '127.0.0.1', port: 0, clock, logger } as never), /cert and key/)
  const tcp = createTransport({ protocol: 'tcp', address: '127.0.0.1', port: 0, clock, logger })
  await tcp.start()
  t.ok(tcp.local.port > 0)
  await tcp.stop()
})

t.test('TCP: random garbage on many connections never crashes the transport', async t => {
  const clock = new SimClock()
  const b = new TcpTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger(), maxMessageSize: 4096 })
  await b.start()
  t.teardown(async () => { await b.stop() })
  const cb = new Collector(b)
  const rng = new SeededRng(99)
  const clients = await Promise.all(Array.from({ length: 30 }, async () => await rawClient('tcp', '127.0.0.1', b.local.port)))
  for (const c of clients) {
    for (let k = 0; k < 5; k++) {
      const chunk = Buffer.from(rng.bytes(1 + rng.int(3000)))
      if (rng.next() < 0.3) chunk.write('INVITE sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\n', 0)
      c.sock.write(chunk)
    }
    c.sock.end()
  }
  await waitFor(() => clients.every(c => c.closed()), 'all garbage connections closed')
  await cb.until(() => b.connectionCount === 0, 'connection table empty')
  t.equal(cb.closes.length, 30)
  t.same(cb.errors, [])
  // still serving
  const good = await rawClient('tcp', '127.0.0.1', b.local.port)
  good.sock.write(sipRequest({ callId: 'after-garbage' }))
  await cb.until(() => cb.messages.some(m => m.data.includes('after-garbage')), 'a good message after the garbage')
  good.sock.destroy()
})
