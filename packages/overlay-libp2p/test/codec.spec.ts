import t from 'tap'
import { FrameDecoder, FrameError, decodePayload, encodeFrame, rawFrame, FRAME_HEADER } from '@sipring/overlay-libp2p'

const ok = { id: 7, kind: 'req' as const, msg: { type: 'store.get' as const, key: 'sip:alice@example.org' } }

t.test('encode → decode round trip, frames split across chunks and coalesced', async t => {
  const a = encodeFrame(ok)
  const b = encodeFrame({ id: 8, kind: 'res', msg: { type: 'store.ok', stored: 3 } })
  t.equal(new DataView(a.buffer, a.byteOffset).getUint32(0), a.length - FRAME_HEADER, 'big-endian length prefix')
  const all = Buffer.concat([a, b])
  const d = new FrameDecoder()
  const got = []
  for (let i = 0; i < all.length; i += 3) { // 3-byte chunks
    d.push(all.subarray(i, i + 3))
    for (let p = d.next(); p !== undefined; p = d.next()) got.push(decodePayload(p))
  }
  t.same(got, [ok, { id: 8, kind: 'res', msg: { type: 'store.ok', stored: 3 } }])
  t.equal(d.buffered, 0)
})

t.test('frame size limit is exact, and checked from the header alone', async t => {
  const d = new FrameDecoder(100)
  d.push(rawFrame('x'.repeat(100)))
  t.equal(d.next()?.length, 100, 'a frame of exactly maxFrameSize passes')
  const big = new FrameDecoder(100)
  const hdr = Buffer.alloc(4); hdr.writeUInt32BE(101)
  big.push(hdr) // no payload yet: rejected before buffering it
  t.throws(() => big.next(), { name: 'FrameError', code: 'ERR_FRAME_TOO_LARGE' })
  const huge = new FrameDecoder()
  const h2 = Buffer.alloc(4); h2.writeUInt32BE(0xffffffff)
  huge.push(h2)
  t.throws(() => huge.next(), /exceeds/)
  t.throws(() => encodeFrame({ id: 1, kind: 'req', msg: { type: 'store.get', key: 'k'.repeat(200) } }, 100), /exceeds 100/)
  const empty = new FrameDecoder()
  empty.push(Buffer.alloc(4))
  t.throws(() => empty.next(), /empty frame/)
})

t.test('bad envelopes throw FrameError, bad messages come back as BadMessage', async t => {
  const enc = (x: unknown): Uint8Array => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x))
  for (const bad of ['{nope', '[1,2]', 'null', '"str"', { kind: 'req', msg: {} }, { id: -1, kind: 'req', msg: {} },
    { id: 1.5, kind: 'req', msg: {} }, { id: '1', kind: 'req', msg: {} }, { id: 1, kind: 'push', msg: {} }, { id: 2 ** 60, kind: 'res', msg: {} }]) {
    t.throws(() => decodePayload(enc(bad)), FrameError, `rejects ${JSON.stringify(bad)}`)
  }
  const cases: Array<[unknown, RegExp]> = [
    [{ type: 'nope' }, /unknown message type/],
    [null, /not an object/],
    [{ type: 'store.get', key: 5 }, /bad key/],
    [{ type: 'store.ok', stored: -1 }, /bad stored/],
    [{ type: 'swim.ping', updates: [{ id: 'a', incarnation: 1, status: 'zombie' }] }, /status/],
    [{ type: 'swim.ping', updates: Array.from({ length: 5 }, () => ({ id: 'a', incarnation: 1, status: 'alive' })) }, /too many updates/],
    [{ type: 'store.put', items: [{ key: 'k', version: { updated: 1, counter: 0, origin: 'o' }, deleted: false, expires: 1 }] }, /without value/]
  ]
  const limits = { maxUpdates: 4, maxItems: 4, maxKeyLength: 64, maxIdLength: 64, maxBuckets: 4 }
  for (const [msg, re] of cases) {
    const r = decodePayload(enc({ id: 3, kind: 'req', msg }), limits)
    t.ok('error' in r && re.test(r.error), `${JSON.stringify(msg).slice(0, 60)} → ${'error' in r ? r.error : 'accepted'}`)
    t.equal(r.id, 3)
  }
  const four = decodePayload(enc({ id: 4, kind: 'req', msg: { type: 'swim.ack', updates: Array.from({ length: 4 }, () => ({ id: 'a', incarnation: 1, status: 'alive' })) } }), limits)
  t.notOk('error' in four, 'exactly maxUpdates entries pass')
})

t.test('nesting depth is bounded before parsing (exact limit; brackets in strings ignored)', async t => {
  const { jsonDepthExceeds, DEFAULT_MAX_DEPTH } = await import('@sipring/overlay-libp2p')
  const nest = (n: number): string => '['.repeat(n) + ']'.repeat(n)
  t.equal(jsonDepthExceeds(Buffer.from(nest(32)), 32), false, 'depth 32 passes')
  t.equal(jsonDepthExceeds(Buffer.from(nest(33)), 32), true, 'depth 33 does not')
  t.equal(jsonDepthExceeds(Buffer.from(JSON.stringify({ s: '[[[[[{{{{{' })), 2), false, 'brackets inside strings')
  t.equal(jsonDepthExceeds(Buffer.from(JSON.stringify({ s: 'a"[[[[' + '\\' })), 2), false, 'escaped quote and backslash')
  t.equal(jsonDepthExceeds(Buffer.from(JSON.stringify({ s: 'ü€😀', a: [[[1]]] })), 3), true)
  // a store value nested 100k deep fits in 1 MiB, parses, but could never be re-serialized: refused
  const deep = `{"id":1,"kind":"req","msg":{"type":"store.put","items":[{"key":"k","version":{"updated":1,"counter":0,"origin":"o"},"deleted":false,"expires":1,"value":${nest(100_000)}}]}}`
  t.throws(() => decodePayload(Buffer.from(deep)), { name: 'FrameError', message: `frame nests deeper than ${DEFAULT_MAX_DEPTH}` })
  const ok = `{"id":1,"kind":"req","msg":{"type":"store.put","items":[{"key":"k","version":{"updated":1,"counter":0,"origin":"o"},"deleted":false,"expires":1,"value":${nest(20)}}]}}`
  t.notOk('error' in decodePayload(Buffer.from(ok)), 'a value nested 20 deep is fine')
})

t.test('a frozen message is encoded once and reused for every frame that carries it', async t => {
  const item = { key: 'aor|x', version: { updated: 5, counter: 0, origin: 'p' }, deleted: false, json: '{"a":"b\\"c"}', expires: 99 }
  const msg = Object.freeze({ type: 'store.put' as const, items: Object.freeze([item]) as never, hops: 2 })
  const a = encodeFrame({ id: 1, kind: 'req', msg })
  const b = encodeFrame({ id: 2, kind: 'req', msg })
  t.same(decodePayload(a.subarray(FRAME_HEADER)), { id: 1, kind: 'req', msg: { type: 'store.put', items: [item], hops: 2 } })
  t.same(decodePayload(b.subarray(FRAME_HEADER)), { id: 2, kind: 'req', msg: { type: 'store.put', items: [item], hops: 2 } })
  t.equal(Buffer.from(a.subarray(FRAME_HEADER)).toString(), JSON.stringify({ id: 1, kind: 'req', msg }), 'byte-identical to the plain encoding')
  // multi-byte UTF-8 in a cached message: the length prefix counts bytes; the frame limit applies to the whole frame
  const wide = Object.freeze({ type: 'store.put' as const, items: Object.freeze([{ ...item, json: '"é€😀"' }]) as never })
  const w = encodeFrame({ id: 77, kind: 'res', msg: wide })
  t.equal(w.length, FRAME_HEADER + Buffer.byteLength(JSON.stringify({ id: 77, kind: 'res', msg: wide })))
  t.equal(Buffer.from(w).readUInt32BE(0), w.length - FRAME_HEADER)
  t.same(decodePayload(w.subarray(FRAME_HEADER)), { id: 77, kind: 'res', msg: { type: 'store.put', items: [{ ...item, json: '"é€😀"' }] } })
  t.throws(() => encodeFrame({ id: 78, kind: 'res', msg: wide }, w.length - FRAME_HEADER - 1), FrameError, 'one byte over the limit')
  t.doesNotThrow(() => encodeFrame({ id: 78, kind: 'res', msg: wide }, w.length - FRAME_HEADER), 'exactly at the limit')
  // a mutable message is encoded afresh every time
  const m2 = { type: 'store.get' as const, key: 'k1' }
  encodeFrame({ id: 3, kind: 'req', msg: m2 })
  m2.key = 'k2'
  t.match(decodePayload(encodeFrame({ id: 4, kind: 'req', msg: m2 }).subarray(FRAME_HEADER)), { msg: { key: 'k2' } })
  // an item whose json is not JSON text: the message is refused (error reply), the stream goes on
  const bad = rawFrame(JSON.stringify({ id: 5, kind: 'req', msg: { type: 'store.put', items: [{ ...item, json: '{"a":' }] } }))
  t.same(decodePayload(bad.subarray(FRAME_HEADER)), { id: 5, kind: 'req', error: 'item json is not JSON text' })
})
