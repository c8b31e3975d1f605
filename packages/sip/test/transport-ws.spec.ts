import t from 'tap'
import { createServer as createHttpServer, get as httpGet } from 'node:http'
import { WebSocket } from 'ws'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { WsTransport, TransportError } from '@sipring/sip'
import { CERT, KEY, Collector, closedPort, families, sipRequest, sleep } from './transport-helpers.js'

const fams = await families()

function make (secure: boolean, address: string, clock: SimClock, extra: { idleTimeoutMs?: number, maxMessageSize?: number, path?: string, maxConnections?: number } = {}): WsTransport {
  return new WsTransport({ address, port: 0, clock, logger: new MemoryLogger(), secure, ...(secure ? { cert: CERT, key: KEY, ca: CERT } : {}), ...extra })
}

function url (secure: boolean, address: string, port: number, path = '/'): string {
  return `${secure ? 'wss' : 'ws'}://${address.includes(':') ? `[${address}]` : address}:${port}${path}`
}

/** Open a raw ws client; resolves with the socket or with the HTTP status of a refused handshake. */
async function rawWs (u: string, protocols: string[] | undefined): Promise<{ ws?: WebSocket, status?: number, frames: Array<{ data: Buffer, binary: boolean }> }> {
  const frames: Array<{ data: Buffer, binary: boolean }> = []
  const ws = new WebSocket(u, protocols, { ca: CERT })
  ws.on('message', (data, binary) => { frames.push({ data: data as Buffer, binary }) })
  return await new Promise((resolve, reject) => {
    ws.once('open', () => { resolve({ ws, frames }) })
    ws.once('unexpected-response', (_req, res) => { resolve({ status: res.statusCode, frames }); res.resume(); ws.terminate() })
    ws.once('error', reject)
  })
}

async function waitFor (cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

for (const secure of [false, true]) {
  const proto = secure ? 'wss' : 'ws'
  for (const fam of fams) {
    const name = `${proto.toUpperCase()} ${fam.name}`

    t.test(`${name}: send, receive, reply on the connection, reuse`, async t => {
      const clock = new SimClock()
      const a = make(secure, fam.address, clock)
      const b = make(secure, fam.address, clock)
      await a.start(); await b.start()
      t.teardown(async () => { await a.stop(); await b.stop() })
      t.equal(a.protocol, proto)
      t.ok(b.local.port > 0)
      const ca = new Collector(a); const cb = new Collector(b)
      const to = { protocol: proto, address: fam.address, port: b.local.port } as const
      await Promise.all([1, 2].map(async i => { await a.send(sipRequest({ callId: `w${i}`, body: '☎ é' }), to) }))
      await cb.until(() => cb.messages.length === 2, 'two messages')
      t.equal(a.connectionCount, 1, 'one outbound connection for concurrent sends')
      const src = cb.messages[0]!.source
      t.equal(src.protocol, proto)
      t.equal(src.address, fam.address)
      t.match(src.connectionId, new RegExp(`^${proto}:\\d+$`))
      t.same(src.local, b.local)
      t.same(cb.messages.map(m => m.data.toString()).sort(), [1, 2].map(i => sipRequest({ callId: `w${i}`, body: '☎ é' }).toString()).sort())
      await b.send(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'), src)
      await ca.until(() => ca.messages.length === 1, 'reply')
      t.equal(ca.messages[0]!.source.connectionId, a.connectionIds()[0])
      t.equal(b.connectionCount, 1)
      t.same([...ca.errors, ...cb.errors], [])
    })

    t.test(`${name}: handshake without the sip subprotocol is refused`, async t => {
      const clock = new SimClock()
      const b = make(secure, fam.address, clock)
      await b.start()
      t.teardown(async () => { await b.stop() })
      const none = await rawWs(url(secure, fam.address, b.local.port), undefined)
      t.equal(none.status, 400, 'no subprotocol → 400')
      const other = await rawWs(url(secure, fam.address, b.local.port), ['xmpp'])
      t.equal(other.status, 400, 'another subprotocol → 400')
      const ok = await rawWs(url(secure, fam.address, b.local.port), ['xmpp', 'sip'])
      t.equal(ok.ws?.protocol, 'sip', 'sip is chosen when offered')
      ok.ws?.close()
      await sleep(10)
      t.equal(b.connectionCount <= 1, true)
    })

    t.test(`${name}: one message per frame (text and binary), CRLFCRLF ping → CRLF pong`, async t => {
      const clock = new SimClock()
      const b = make(secure, fam.address, clock)
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const c = await rawWs(url(secure, fam.address, b.local.port), ['sip'])
      const ws = c.ws!
      t.teardown(() => { ws.terminate() })
      const m1 = sipRequest({ callId: 'text', body: 'ü' })
      const m2 = sipRequest({ callId: 'bin' })
      ws.send(m1.toString('utf8'))
      ws.send(m2, { binary: true })
      await cb.until(() => cb.messages.length === 2, 'two frames')
      t.same(cb.messages[0]!.data, m1)
      t.same(cb.messages[1]!.data, m2)
      ws.send('\r\n\r\n')
      await cb.until(() => cb.keepalives.length === 1, 'keepalive')
      await waitFor(() => c.frames.length === 1, 'pong')
      t.equal(c.frames[0]!.data.toString(), '\r\n')
      // a reply goes out as a text frame
      await b.send(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'), cb.messages[0]!.source)
      await waitFor(() => c.frames.length === 2, 'reply frame')
      t.equal(c.frames[1]!.binary, false, 'UTF-8 SIP goes in a text frame')
    })

    t.test(`${name}: oversize frame closes the connection; idle close by the clock`, async t => {
      const clock = new SimClock()
      const b = make(secure, fam.address, clock, { maxMessageSize: 1000, idleTimeoutMs: 10_000 })
      await b.start()
      t.teardown(async () => { await b.stop() })
      const cb = new Collector(b)
      const big = await rawWs(url(secure, fam.address, b.local.port), ['sip'])
      let code = 0
      big.ws!.on('close', c => { code = c })
      big.ws!.send(sipRequest({ body: 'x'.repeat(2000) }))
      await waitFor(() => code !== 0, 'close of the oversize sender')
      t.equal(code, 1009, 'closed with 1009 Message Too Big')
      t.equal(cb.messages.length, 0)
      await cb.until(() => cb.closes.length === 1, 'close event')
      const err = await b.send(Buffer.alloc(1001, 65), { protocol: proto, address: fam.address, port: 80 }).catch(e => e)
      t.equal(err.code, 'EMSGSIZE')

      const idle = await rawWs(url(secure, fam.address, b.local.port), ['sip'])
      let closed = false
      idle.ws!.on('close', () => { closed = true })
      idle.ws!.send(sipRequest())
      await cb.until(() => cb.messages.length === 1, 'message')
      const id = cb.messages[0]!.source.connectionId!
      clock.advance(9_999)
      t.ok(b.hasConnection(id))
      clock.advance(1)
      t.notOk(b.hasConnection(id), 'idle connection closed after 10 s of simulated time')
      await waitFor(() => closed, 'client sees the close')
      t.equal(clock.pending, 0)
    })

    t.test(`${name}: send to a closed port rejects; stop is clean and idempotent`, async t => {
      const clock = new SimClock()
      const a = make(secure, fam.address, clock)
      await a.start()
      const ca = new Collector(a)
      const err = await a.send(sipRequest(), { protocol: proto, address: fam.address, port: await closedPort(fam.address) }).catch(e => e)
      t.ok(err instanceof TransportError)
      t.equal(err.code, 'ECONNREFUSED')
      const b = make(secure, fam.address, clock, { idleTimeoutMs: 60_000 })
      await b.start()
      const cb = new Collector(b)
      await a.send(sipRequest(), { protocol: proto, address: fam.address, port: b.local.port })
      await cb.until(() => cb.messages.length === 1, 'message')
      await b.stop()
      t.equal(cb.closes.length, 1)
      await b.stop()
      await ca.until(() => ca.closes.length === 1, 'a sees the close')
      await a.stop()
      await a.stop()
      t.equal(clock.pending, 0)
      t.same([...ca.errors, ...cb.errors], [])
    })
  }
}

t.test('WS: path option, plain HTTP gets 426, connection limit', async t => {
  const clock = new SimClock()
  const b = make(false, '127.0.0.1', clock, { path: '/sip', maxConnections: 1 })
  await b.start()
  t.teardown(async () => { await b.stop() })
  const wrong = await rawWs(url(false, '127.0.0.1', b.local.port, '/other'), ['sip'])
  t.equal(wrong.status, 404)
  const status = await new Promise<number | undefined>((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port: b.local.port, path: '/sip' }, res => { res.resume(); resolve(res.statusCode) }).on('error', reject)
  })
  t.equal(status, 426)
  const first = await rawWs(url(false, '127.0.0.1', b.local.port, '/sip'), ['sip'])
  t.ok(first.ws)
  t.teardown(() => { first.ws?.terminate() })
  await waitFor(() => b.connectionCount === 1, 'first registered')
  const second = await rawWs(url(false, '127.0.0.1', b.local.port, '/sip'), ['sip'])
  t.equal(second.status, 503, 'over maxConnections')
})

t.test('WS: a server that does not speak SIP-over-WS is refused with ENOTSIP', async t => {
  const http = createHttpServer((_req, res) => { res.writeHead(200); res.end('hello') })
  await new Promise<void>(resolve => { http.listen({ host: '127.0.0.1', port: 0 }, resolve) })
  t.teardown(() => { http.close() })
  const clock = new SimClock()
  const a = make(false, '127.0.0.1', clock)
  await a.start()
  t.teardown(async () => { await a.stop() })
  const err = await a.send(sipRequest(), { protocol: 'ws', address: '127.0.0.1', port: (http.address() as { port: number }).port }).catch(e => e)
  t.ok(err instanceof TransportError)
  t.equal(err.code, 'ENOTSIP')
  t.equal(a.connectionCount, 0)
})

t.test('WSS: needs cert and key', async t => {
  t.throws(() => new WsTransport({ address: '127.0.0.1', port: 0, clock: new SimClock(), logger: new MemoryLogger(), secure: true }), /cert and key/)
})
