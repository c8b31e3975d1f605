import t from 'tap'
import { createSocket } from 'node:dgram'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import { UdpTransport, TransportError, isStun, stunBindingResponse } from '@sipring/sip'
import { Collector, families, sipRequest, sleep } from './transport-helpers.js'

const fams = await families()

for (const fam of fams) {
  t.test(`UDP ${fam.name}: send and receive between two transports`, async t => {
    const clock = new SimClock()
    const a = new UdpTransport({ address: fam.address, port: 0, clock, logger: new MemoryLogger() })
    const b = new UdpTransport({ address: fam.address, port: 0, clock, logger: new MemoryLogger() })
    await a.start(); await b.start()
    t.teardown(async () => { await a.stop(); await b.stop() })
    t.ok(a.local.port > 0, 'ephemeral port resolved')
    t.equal(a.local.address, fam.address)
    t.equal(a.protocol, 'udp')
    const cb = new Collector(b)
    const ca = new Collector(a)
    const m = sipRequest({ body: 'héllo ☎' })
    await a.send(m, { protocol: 'udp', address: fam.address, port: b.local.port })
    await cb.until(() => cb.messages.length === 1, 'datagram')
    const got = cb.messages[0]!
    t.same(got.data, m)
    t.equal(got.source.protocol, 'udp')
    t.equal(got.source.address, fam.address)
    t.equal(got.source.port, a.local.port, 'source port is the sender transport port')
    t.same(got.source.local, b.local, 'Source.local names the receiving socket')
    t.equal(got.source.connectionId, undefined)
    // reply to the source
    await b.send(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'), got.source)
    await ca.until(() => ca.messages.length === 1, 'reply')
    t.equal(a.hasConnection('udp:1'), false)
  })

  t.test(`UDP ${fam.name}: keep-alive datagrams ignored, oversized dropped with a log`, async t => {
    const clock = new SimClock()
    const log = new MemoryLogger()
    const b = new UdpTransport({ address: fam.address, port: 0, clock, logger: log, maxMessageSize: 1000 })
    await b.start()
    t.teardown(async () => { await b.stop() })
    const cb = new Collector(b)
    const raw = createSocket(fam.address.includes(':') ? 'udp6' : 'udp4')
    t.teardown(() => { raw.close() })
    const sendRaw = async (buf: Buffer): Promise<void> => { await new Promise<void>((resolve, reject) => { raw.send(buf, b.local.port, fam.address, e => { e ? reject(e) : resolve() }) }) }
    await sendRaw(Buffer.from('\r\n\r\n'))
    await sendRaw(Buffer.from('\r\n'))
    await sendRaw(Buffer.alloc(0))
    await sendRaw(sipRequest({ body: 'x'.repeat(1200) }))
    const small = sipRequest({ callId: 'after' })
    await sendRaw(small)
    await cb.until(() => cb.messages.length >= 1, 'the small message')
    await sleep(20)
    t.equal(cb.messages.length, 1, 'only the real, small message is emitted')
    t.same(cb.messages[0]!.data, small)
    t.equal(b.dropped, 1)
    t.ok(log.records.some(r => r.level === 'warn' && /oversized/.test(r.msg ?? '')), 'drop is logged')
    // sending an oversized message rejects
    const err = await b.send(Buffer.alloc(1001, 65), { protocol: 'udp', address: fam.address, port: 9 }).catch(e => e)
    t.ok(err instanceof TransportError)
    t.equal(err.code, 'EMSGSIZE')
  })
}

t.test('UDP: IPv4 and IPv6 sockets bind the same port', async t => {
  if (fams.length < 2) { t.skip('no IPv6'); return }
  const clock = new SimClock()
  const v4 = new UdpTransport({ address: '0.0.0.0', port: 0, clock, logger: new MemoryLogger() })
  await v4.start()
  const v6 = new UdpTransport({ address: '::', port: v4.local.port, clock, logger: new MemoryLogger() })
  await v6.start()
  t.teardown(async () => { await v4.stop(); await v6.stop() })
  t.equal(v6.local.port, v4.local.port)
  const c4 = new Collector(v4); const c6 = new Collector(v6)
  const s = new UdpTransport({ address: '::1', port: 0, clock, logger: new MemoryLogger() })
  const s4 = new UdpTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger() })
  await s.start(); await s4.start()
  t.teardown(async () => { await s.stop(); await s4.stop() })
  await s.send(sipRequest({ callId: 'v6' }), { protocol: 'udp', address: '::1', port: v6.local.port })
  await s4.send(sipRequest({ callId: 'v4' }), { protocol: 'udp', address: '127.0.0.1', port: v4.local.port })
  await c6.until(() => c6.messages.length === 1, 'v6 message')
  await c4.until(() => c4.messages.length === 1, 'v4 message')
  t.match(c6.messages[0]!.data.toString(), /Call-ID: v6/)
  t.match(c4.messages[0]!.data.toString(), /Call-ID: v4/)
  t.equal(c4.messages[0]!.source.address, '127.0.0.1', 'no v4-mapped addresses on the v4 socket')
})

t.test('UDP: errors are clear rejections, never crashes', async t => {
  const clock = new SimClock()
  const a = new UdpTransport({ address: '127.0.0.1', port: 0, clock, logger: new MemoryLogger() })
  const notStarted = await a.send(sipRequest(), { protocol: 'udp', address: '127.0.0.1', port: 5060 }).catch(e => e)
  t.equal(notStarted.code, 'ENOTRUNNING')
  await a.start()
  const wrongFamily = await a.send(sipRequest(), { protocol: 'udp', address: '::1', port: 5060 }).catch(e => e)
  t.equal(wrongFamily.code, 'EAFNOSUPPORT')
  t.match(wrongFamily.message, /IPv6/)
  const badPort = await a.send(sipRequest(), { protocol: 'udp', address: '127.0.0.1', port: 0 }).catch(e => e)
  t.equal(badPort.code, 'EINVAL')
  // a port already bound exclusively by us
  const b = new UdpTransport({ address: '127.0.0.1', port: a.local.port, clock, logger: new MemoryLogger() })
  const inUse = await b.start().catch(e => e)
  t.ok(inUse instanceof TransportError)
  t.equal(inUse.code, 'EADDRINUSE')
  // sending to a closed port succeeds at the socket level (ICMP is not reported for unconnected UDP)
  await a.send(sipRequest(), { protocol: 'udp', address: '127.0.0.1', port: 9 })
  await a.stop()
  await a.stop() // idempotent
  const afterStop = await a.send(sipRequest(), { protocol: 'udp', address: '127.0.0.1', port: 5060 }).catch(e => e)
  t.equal(afterStop.code, 'ENOTRUNNING')
  t.throws(() => new UdpTransport({ address: '127.0.0.1', port: 70000, clock, logger: new MemoryLogger() }), TypeError)
})

// RFC 5769 §2.2/§2.3 test vectors: transaction id and the XOR-MAPPED-ADDRESS attributes of the sample responses
const TXID = Buffer.from('b7e7a701bc34d686fa87dfae', 'hex')
function bindingRequest (txid = TXID): Buffer {
  const b = Buffer.alloc(20)
  b.writeUInt16BE(0x0001, 0); b.writeUInt16BE(0, 2); b.writeUInt32BE(0x2112a442, 4); txid.copy(b, 8)
  return b
}

t.test('STUN binding response matches the RFC 5769 vectors', async t => {
  const v4 = stunBindingResponse(bindingRequest(), '192.0.2.1', 32853)!
  t.equal(v4.subarray(0, 4).toString('hex'), '0101000c', 'Binding success, 12 bytes of attributes')
  t.equal(v4.subarray(4, 20).toString('hex'), '2112a442' + TXID.toString('hex'))
  t.equal(v4.subarray(20).toString('hex'), '002000080001a147e112a643')
  const v6 = stunBindingResponse(bindingRequest(), '2001:db8:1234:5678:11:2233:4455:6677', 32853)!
  t.equal(v6.subarray(20).toString('hex'), '002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9')
  t.equal(stunBindingResponse(bindingRequest(), '2001:db8:1234:5678:11:2233:4455:6677', 32853)?.length, 44)
  t.equal(stunBindingResponse(Buffer.from('OPTIONS sip:x SIP/2.0\r\n\r\n'), '192.0.2.1', 1), undefined)
  const resp = Buffer.from(v4)
  t.ok(isStun(resp))
  t.equal(stunBindingResponse(resp, '192.0.2.1', 1), undefined, 'a response is not answered')
  const bad = bindingRequest(); bad.writeUInt32BE(0, 4)
  t.notOk(isStun(bad), 'no magic cookie → not STUN')
})

for (const fam of fams) {
  t.test(`UDP ${fam.name}: answers STUN keep-alives (RFC 5626 §4.4.2), never passes them up`, async t => {
    const b = new UdpTransport({ address: fam.address, port: 0, clock: new SimClock(), logger: new MemoryLogger() })
    await b.start()
    t.teardown(async () => { await b.stop() })
    const cb = new Collector(b)
    const raw = createSocket(fam.address.includes(':') ? 'udp6' : 'udp4')
    await new Promise<void>(resolve => { raw.bind(0, fam.address, resolve) })
    t.teardown(() => { raw.close() })
    const reply = new Promise<Buffer>(resolve => { raw.once('message', m => { resolve(m) }) })
    raw.send(bindingRequest(), b.local.port, fam.address)
    const res = await reply
    t.equal(res.readUInt16BE(0), 0x0101)
    t.same(res.subarray(8, 20), TXID)
    t.same(res, stunBindingResponse(bindingRequest(), fam.address, raw.address().port), 'XOR-MAPPED-ADDRESS is the sender address')
    t.equal(b.stunAnswered, 1)
    await sleep(10)
    t.equal(cb.messages.length, 0)
  })
}
