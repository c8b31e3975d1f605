import t from 'tap'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Stream } from '@libp2p/interface'
import { SeededRng, SimClock } from '@sipring/testkit'
import { OverlayAbortError, OverlayProtocolError, OverlayTimeoutError, OverlayUnreachableError, type OverlayMessage } from '@sipring/overlay'
import { FrameDecoder, OVERLAY_PROTOCOL, OverlayBusyError, decodePayload, encodeFrame, rawFrame, type Frame, type Libp2pOverlay } from '@sipring/overlay-libp2p'
import { node, stopAll, waitFor, sleep } from './helpers.js'

const nodes: Libp2pOverlay[] = []
t.afterEach(async () => { await stopAll(nodes) })

const get = (key: string): OverlayMessage => ({ type: 'store.get', key })
const echo = (n: Libp2pOverlay): void => {
  n.onRequest((msg, from) => msg.type === 'store.get' ? { type: 'store.item', item: { key: `${msg.key}@${n.peerId.slice(-6)}<-${from.slice(-6)}`, version: { updated: 1, counter: 0, origin: n.peerId }, deleted: true, expires: 0 } } : undefined)
}
const keyOf = (m: OverlayMessage): string => m.type === 'store.item' && m.item !== null ? m.item.key : `!${m.type}`

/** A raw `/sipring/overlay/1.1.0` stream from `from` to `to`, collecting decoded frames. */
async function rawStream (from: Libp2pOverlay, to: Libp2pOverlay): Promise<{ stream: Stream, frames: Frame[], closed: () => boolean }> {
  const stream = await from.libp2p.dialProtocol(peerIdFromString(to.peerId), OVERLAY_PROTOCOL)
  const frames: Frame[] = []
  const dec = new FrameDecoder()
  let closed = false
  stream.addEventListener('message', e => {
    dec.push(e.data)
    for (let p = dec.next(); p !== undefined; p = dec.next()) { const f = decodePayload(p); if (!('error' in f)) frames.push(f) }
  })
  stream.addEventListener('close', () => { closed = true })
  return { stream, frames, closed: () => closed }
}

t.test('request/response both ways over one stream per peer pair', async t => {
  const a = await node(nodes); const b = await node(nodes); const c = await node(nodes)
  for (const n of [a, b, c]) echo(n)
  await b.join(a.multiaddrs()); await c.join(a.multiaddrs()); await c.dial(b.multiaddrs()[0]!)
  t.equal(keyOf(await a.send(b.peerId, get('k1'))), `k1@${b.peerId.slice(-6)}<-${a.peerId.slice(-6)}`)
  t.equal(keyOf(await b.send(a.peerId, get('k2'))), `k2@${a.peerId.slice(-6)}<-${b.peerId.slice(-6)}`)
  t.equal(keyOf(await c.send(b.peerId, get('k3'))), `k3@${b.peerId.slice(-6)}<-${c.peerId.slice(-6)}`)
  t.equal(keyOf(await a.send(a.peerId, get('self'))), `self@${a.peerId.slice(-6)}<-${a.peerId.slice(-6)}`, 'a request to self is dispatched locally')
  t.equal(a.stats().streamsOpened, 1, 'a opened one stream (to b)')
  t.equal(b.stats().streamsOpened, 0, 'b answered a over the stream a opened')
  t.equal(b.network.load().streams, 2, 'b holds one stream from a and one from c')
})

t.test('many concurrent requests share one stream and are matched by id', async t => {
  const a = await node(nodes); const b = await node(nodes)
  let concurrent = 0; let peak = 0
  b.onRequest(async (msg) => {
    if (msg.type !== 'store.get') return undefined
    concurrent++; peak = Math.max(peak, concurrent)
    await sleep(Number(msg.key) % 7) // answers come back out of order
    concurrent--
    return { type: 'store.ok', stored: Number(msg.key) }
  })
  await a.dial(b.multiaddrs()[0]!)
  const res = await Promise.all(Array.from({ length: 500 }, async (_, i) => await a.send(b.peerId, get(String(i)))))
  t.same(res.map(r => r.type === 'store.ok' ? r.stored : -1), Array.from({ length: 500 }, (_, i) => i), 'every answer matched its request')
  t.ok(peak > 50, `requests were handled concurrently (peak ${peak})`)
  t.equal(a.stats().streamsOpened, 1)
  t.equal(b.stats().streamsAccepted, 1)
  t.equal(a.network.load().pending, 0)
})

t.test('handler errors and unknown types become error replies', async t => {
  const a = await node(nodes); const b = await node(nodes)
  b.onRequest((msg) => { if (msg.type === 'store.get') throw new Error('boom'); return undefined })
  await a.dial(b.multiaddrs()[0]!)
  t.match(await a.send(b.peerId, get('x')), { type: 'error', code: 'ERR_HANDLER', message: 'boom' })
  t.match(await a.send(b.peerId, { type: 'store.ok', stored: 1 }), { type: 'error', code: 'ERR_UNSUPPORTED' })
  const off = b.onRequest(() => ({ type: 'store.ok', stored: 9 }))
  t.match(await a.send(b.peerId, { type: 'store.ok', stored: 1 }), { type: 'store.ok', stored: 9 }, 'a second handler claims what the first leaves')
  off()
  t.match(await a.send(b.peerId, { type: 'store.ok', stored: 1 }), { code: 'ERR_UNSUPPORTED' }, 'unregistered')
})

t.test('malformed messages get ERR_BAD_MESSAGE; undecodable or oversized frames reset the stream; the node survives', async t => {
  const a = await node(nodes)
  const b = await node(nodes, { limits: { maxFrameSize: 1024, message: { maxUpdates: 4, maxItems: 4, maxKeyLength: 1024, maxIdLength: 64, maxBuckets: 4 } } })
  echo(b)
  await a.dial(b.multiaddrs()[0]!)

  const r = await rawStream(a, b)
  r.stream.send(rawFrame(JSON.stringify({ id: 1, kind: 'req', msg: { type: 'no.such', x: 1 } })))
  r.stream.send(rawFrame(JSON.stringify({ id: 2, kind: 'req', msg: { type: 'swim.ping', updates: Array.from({ length: 5 }, () => ({ id: 'p', incarnation: 0, status: 'alive' })) } })))
  r.stream.send(rawFrame(JSON.stringify({ id: 3, kind: 'req', msg: { type: 'store.get', key: 42 } })))
  // exactly maxFrameSize bytes (padded with JSON whitespace) is accepted
  const body = JSON.stringify({ id: 4, kind: 'req', msg: get('ok') })
  r.stream.send(rawFrame(body + ' '.repeat(1024 - body.length)))
  r.stream.send(rawFrame(JSON.stringify({ id: 99, kind: 'res', msg: { type: 'store.ok', stored: 1 } }))) // answer to nothing: ignored
  await waitFor(() => r.frames.length === 4, 3000, '4 replies')
  t.match(r.frames[0], { id: 1, kind: 'res', msg: { type: 'error', code: 'ERR_BAD_MESSAGE', message: /unknown message type/ } })
  t.match(r.frames[1], { id: 2, kind: 'res', msg: { type: 'error', code: 'ERR_BAD_MESSAGE', message: /too many updates/ } })
  t.match(r.frames[2], { id: 3, kind: 'res', msg: { type: 'error', code: 'ERR_BAD_MESSAGE', message: /bad key/ } })
  t.match(r.frames[3], { id: 4, kind: 'res', msg: { type: 'store.item' } })
  t.equal(b.stats().badMessages, 3)
  t.equal(b.stats().unmatched, 1)
  t.notOk(r.closed(), 'schema errors keep the stream open')

  // one byte over the frame limit: stream reset
  const big = await rawStream(a, b)
  big.stream.send(rawFrame('x'.repeat(1025)))
  await waitFor(() => big.closed(), 3000, 'reset after an oversized frame')
  // not JSON: stream reset
  const junk = await rawStream(a, b)
  junk.stream.send(rawFrame('{"id":1,'))
  await waitFor(() => junk.closed(), 3000, 'reset after a non-JSON frame')
  // a length prefix announcing 4 GiB
  const huge = await rawStream(a, b)
  huge.stream.send(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]))
  await waitFor(() => huge.closed(), 3000, 'reset after a 4 GiB length prefix')
  // nested deeper than maxDepth (32)
  const deep = await rawStream(a, b)
  deep.stream.send(rawFrame(`{"id":1,"kind":"req","msg":{"type":"store.get","key":${'['.repeat(40)}${']'.repeat(40)}}}`))
  await waitFor(() => deep.closed(), 3000, 'reset after a too deeply nested frame')
  t.equal(b.stats().badFrames, 4)

  t.equal(keyOf(await a.send(b.peerId, get('after'))).split('@')[0], 'after', 'b still serves requests')
  t.notOk(r.closed(), 'and its other streams are untouched')
})

t.test('frame limits on the sending side: request too large rejects, response too large becomes an error reply', async t => {
  const a = await node(nodes, { limits: { maxFrameSize: 512 } })
  const b = await node(nodes, { limits: { maxFrameSize: 512 } })
  b.onRequest(msg => msg.type === 'store.get' ? { type: 'store.item', item: { key: 'k'.repeat(600), version: { updated: 1, counter: 0, origin: 'o' }, deleted: true, expires: 0 } } : undefined)
  await a.dial(b.multiaddrs()[0]!)
  await t.rejects(a.send(b.peerId, get('k'.repeat(600))), OverlayProtocolError)
  t.match(await a.send(b.peerId, get('small')), { type: 'error', code: 'ERR_TOO_LARGE' })
})

t.test('timeouts come from the injected clock; a late answer is dropped', async t => {
  const clock = new SimClock()
  const a = await node(nodes, { clock })
  const b = await node(nodes)
  let release: (() => void) | undefined
  let received = 0
  b.onRequest(async () => { received++; await new Promise<void>(resolve => { release = resolve }); return { type: 'store.ok', stored: 1 } })
  await a.dial(b.multiaddrs()[0]!)
  const p = a.send(b.peerId, get('slow'), { timeout: 1000 })
  await waitFor(() => received === 1, 3000, 'b got the request')
  clock.advance(999)
  await sleep(20)
  t.equal(a.network.load().pending, 1, 'still waiting at 999 ms')
  clock.advance(1)
  await t.rejects(p, OverlayTimeoutError)
  t.equal(a.stats().timeouts, 1)
  t.equal(a.network.load().pending, 0)
  release!()
  await waitFor(() => a.stats().unmatched === 1, 3000, 'late answer counted as unmatched')
})

t.test('AbortSignal: already aborted and aborted while waiting', async t => {
  const a = await node(nodes); const b = await node(nodes)
  b.onRequest(async () => await new Promise<OverlayMessage>(() => {}))
  await a.dial(b.multiaddrs()[0]!)
  t.match(await a.send(b.peerId, get('x'), { signal: AbortSignal.abort() }).catch(e => e), { name: 'AbortError', code: 'ABORT_ERR' })
  const ac = new AbortController()
  const p = a.send(b.peerId, get('y'), { signal: ac.signal })
  await waitFor(() => a.network.load().pending === 1, 3000, 'request pending')
  ac.abort()
  const err = await p.catch(e => e)
  t.ok(err instanceof OverlayAbortError, 'OverlayAbortError')
  t.match(err, { name: 'AbortError', code: 'ABORT_ERR' })
  t.equal(a.network.load().pending, 0)
})

t.test('limits on outstanding and in-flight requests', async t => {
  const a = await node(nodes, { limits: { maxOutstanding: 3 } })
  const b = await node(nodes)
  const c = await node(nodes)
  const d = await node(nodes, { limits: { maxInflight: 2 } })
  for (const n of [b, d]) n.onRequest(async () => await new Promise<OverlayMessage>(() => {}))
  await a.dial(b.multiaddrs()[0]!); await c.dial(d.multiaddrs()[0]!)
  const stuck = [1, 2, 3].map(i => a.send(b.peerId, get(String(i)), { timeout: 60_000 }))
  for (const s of stuck) s.catch(() => {})
  await waitFor(() => a.network.load().pending === 3, 3000, 'three pending')
  await t.rejects(a.send(b.peerId, get('4')), OverlayBusyError, 'the fourth outstanding request is refused locally')
  const inflight = [1, 2].map(i => c.send(d.peerId, get(`c${i}`), { timeout: 60_000 }))
  for (const s of inflight) s.catch(() => {})
  await waitFor(() => d.network.load().inflight === 2, 3000, 'two in flight at d')
  t.match(await c.send(d.peerId, get('c3')), { type: 'error', code: 'ERR_BUSY' }, 'the third in-flight request from c is refused by d')
  t.equal(d.stats().busy, 1)
  t.equal(d.network.load().inflight, 2)
})

t.test('unreachable peers: bad id, unknown id, stopped peer (pending and new requests)', async t => {
  const a = await node(nodes, { limits: { dialTimeout: 1000 } }); const b = await node(nodes)
  const gone = await node(nodes)
  const goneId = gone.peerId
  await gone.stop()
  await t.rejects(a.send('not-a-peer-id', get('x')), OverlayUnreachableError)
  await t.rejects(a.send(goneId, get('x')), OverlayUnreachableError, 'a peer nobody knows')
  b.onRequest(async () => await new Promise<OverlayMessage>(() => {}))
  await a.dial(b.multiaddrs()[0]!)
  const pending = a.send(b.peerId, get('hang'), { timeout: 30_000 }).catch(e => e)
  await waitFor(() => b.stats().requestsReceived === 1, 3000, 'b got it')
  await b.stop()
  t.ok(await pending instanceof OverlayUnreachableError, 'a pending request fails when the peer stops')
  await t.rejects(a.send(b.peerId, get('again'), { timeout: 30_000 }), OverlayUnreachableError, 'new requests fail fast')
  await a.stop()
  await t.rejects(a.send(b.peerId, get('x')), OverlayUnreachableError, 'sending from a stopped node')
})

t.test('the stream is reopened on demand after it closes', async t => {
  const a = await node(nodes); const b = await node(nodes)
  echo(b)
  await a.dial(b.multiaddrs()[0]!)
  await a.send(b.peerId, get('1'))
  for (const conn of a.libp2p.getConnections()) {
    for (const s of conn.streams) if (s.protocol === OVERLAY_PROTOCOL) s.abort(new Error('test reset'))
  }
  await waitFor(() => a.network.load().streams === 0, 3000, 'stream gone')
  t.equal(keyOf(await a.send(b.peerId, get('2'))).split('@')[0], '2')
  t.equal(a.stats().streamsOpened, 2, 'a second stream was opened')
  // the whole connection closes: reconnect (b's address is in a's peer store)
  await a.libp2p.hangUp(peerIdFromString(b.peerId))
  await waitFor(() => a.peers().length === 0, 3000, 'disconnected')
  t.equal(keyOf(await a.send(b.peerId, get('3'))).split('@')[0], '3')
  t.equal(a.stats().streamsOpened, 3)
})

t.test('peer:connect / peer:disconnect events carry peer id strings', async t => {
  const a = await node(nodes); const b = await node(nodes)
  const events: string[] = []
  a.on('peer:connect', p => events.push(`+${p}`))
  a.on('peer:disconnect', p => events.push(`-${p}`))
  t.equal(await a.dial(b.multiaddrs()[0]!), b.peerId, 'dial returns the remote peer id')
  t.same(a.peers(), [b.peerId])
  await b.stop()
  await waitFor(() => events.length === 2, 3000, 'two events')
  t.same(events, [`+${b.peerId}`, `-${b.peerId}`])
  await t.rejects(a.dial('/not/a/multiaddr'), OverlayUnreachableError)
})

t.test('a peer known only to a third node is found through kad-dht', async t => {
  const c = await node(nodes) // the bootstrap node
  const a = await node(nodes, { join: c.multiaddrs() })
  const b = await node(nodes, { join: c.multiaddrs() })
  echo(b)
  await waitFor(() => c.routingTableSize() >= 2 && a.routingTableSize() >= 1 && b.routingTableSize() >= 1, 5000, 'routing tables filled')
  await sleep(200) // the initial self-queries (which may make a and b meet) are over
  // make a forget whatever it learned about b from those queries: only c knows where b is
  const bid = peerIdFromString(b.peerId)
  await a.libp2p.hangUp(bid)
  await a.libp2p.peerStore.delete(bid)
  t.notOk(await a.libp2p.peerStore.has(bid), 'a has no address of b')
  t.notOk(a.peers().includes(b.peerId), 'a is not connected to b')
  t.equal(keyOf(await a.send(b.peerId, get('via-dht'))).split('@')[0], 'via-dht', 'a reached b by id alone')
  t.ok(a.peers().includes(b.peerId), 'a is now connected to b directly')
  const addrs = await a.findPeer(b.peerId)
  t.ok(addrs.some(x => b.multiaddrs()[0]!.startsWith(x)), `findPeer gives b's address (${addrs.join(', ')})`)
})

t.test('right after joining, a peer known only through the DHT is reached (lookups are retried)', async t => {
  const c = await node(nodes)
  const a = await node(nodes, { join: c.multiaddrs() })
  const b = await node(nodes, { join: c.multiaddrs() })
  echo(b)
  t.equal(keyOf(await a.send(b.peerId, get('early'))).split('@')[0], 'early')
  const ghost = await node(nodes)
  const gid = ghost.peerId
  await ghost.stop()
  const t0 = Date.now()
  await t.rejects(a.send(gid, get('x')), OverlayUnreachableError, 'a peer that does not exist: unreachable after the retries')
  t.ok(Date.now() - t0 < 3000, `gave up after ${Date.now() - t0} ms`)
})

t.test('send to an unknown id with no routing table rejects quickly with OverlayUnreachableError', async t => {
  const a = await node(nodes, { limits: { dialTimeout: 500 } })
  const ghost = await node(nodes)
  const id = ghost.peerId
  await ghost.stop()
  const t0 = Date.now()
  await t.rejects(a.send(id, get('x'), { timeout: 5000 }), OverlayUnreachableError)
  t.ok(Date.now() - t0 < 2000, `failed within ${Date.now() - t0} ms`)
})

t.test('both ends may open a stream at once; both stay usable', async t => {
  const a = await node(nodes); const b = await node(nodes)
  echo(a); echo(b)
  await a.dial(b.multiaddrs()[0]!)
  const [x, y] = await Promise.all([a.send(b.peerId, get('ab')), b.send(a.peerId, get('ba'))])
  t.equal(keyOf(x).split('@')[0], 'ab'); t.equal(keyOf(y).split('@')[0], 'ba')
  const more = await Promise.all(Array.from({ length: 20 }, async (_, i) => i % 2 === 0 ? await a.send(b.peerId, get(`m${i}`)) : await b.send(a.peerId, get(`m${i}`))))
  t.same(more.map(m => keyOf(m).split('@')[0]), Array.from({ length: 20 }, (_, i) => `m${i}`))
  t.ok(a.stats().streamsOpened + b.stats().streamsOpened <= 2)
})

t.test('frames written by encodeFrame are what the network reads (interop)', async t => {
  const a = await node(nodes); const b = await node(nodes)
  echo(b)
  await a.dial(b.multiaddrs()[0]!)
  const r = await rawStream(a, b)
  r.stream.send(encodeFrame({ id: 5, kind: 'req', msg: get('raw') }))
  await waitFor(() => r.frames.length === 1, 3000, 'reply')
  t.match(r.frames[0], { id: 5, kind: 'res', msg: { type: 'store.item' } })
})

t.test('a stopped node can be started again (same object)', async t => {
  const a = await node(nodes); const b = await node(nodes)
  echo(b)
  await a.dial(b.multiaddrs()[0]!)
  await a.send(b.peerId, get('1'))
  await b.stop()
  t.equal(b.isStarted, false)
  await b.start()
  t.equal(b.isStarted, true)
  await a.dial(b.multiaddrs()[0]!)
  t.equal(keyOf(await a.send(b.peerId, get('2'))).split('@')[0], '2')
})

t.test('fuzz: random frames and mutated messages never crash a node', async t => {
  const rng = new SeededRng(42)
  const a = await node(nodes)
  const b = await node(nodes, { limits: { maxFrameSize: 4096 } })
  b.onRequest((msg) => { if (msg.type === 'store.get') return { type: 'store.ok', stored: msg.key.length }; if (msg.type === 'store.ok') return { type: 'store.ok', stored: 10n as unknown as number }; return undefined })
  await a.dial(b.multiaddrs()[0]!)
  const pick = <T>(xs: T[]): T => xs[rng.int(xs.length)]!
  const junk = (depth: number): unknown => {
    switch (rng.int(depth > 2 ? 5 : 8)) {
      case 0: return rng.int(2 ** 31) - 2 ** 30
      case 1: return rng.token(rng.int(20))
      case 2: return pick([null, true, false, -0.5, 1e300, ''])
      case 3: return pick(['swim.ping', 'swim.ping-req', 'swim.ack', 'swim.join', 'swim.join-ok', 'swim.leave', 'store.put', 'store.get', 'store.item', 'store.digest', 'store.diff', 'error'])
      case 4: return pick(['alive', 'dead', 'x'])
      case 5: case 6: return Array.from({ length: rng.int(4) }, () => junk(depth + 1))
      default: {
        const o: Record<string, unknown> = {}
        for (let i = rng.int(5); i > 0; i--) o[pick(['type', 'updates', 'items', 'key', 'id', 'incarnation', 'status', 'version', 'value', 'deleted', 'expires', 'self', 'members', 'buckets', 'more', 'item', 'target', 'stored', 'code'])] = junk(depth + 1)
        return o
      }
    }
  }
  let resets = 0
  for (let round = 0; round < 20; round++) {
    const r = await rawStream(a, b)
    for (let i = 0; i < 50 && !r.closed(); i++) {
      const kind = i === 49 ? rng.int(3) : 2 // each stream ends with garbage 2 times in 3
      try {
        if (kind === 0) r.stream.send(rng.bytes(1 + rng.int(64))) // raw garbage
        else if (kind === 1) r.stream.send(rawFrame(rng.bytes(1 + rng.int(64))))
        else r.stream.send(rawFrame(JSON.stringify({ id: i, kind: 'req', msg: { type: pick(['swim.ping', 'store.put', 'store.get', 'store.diff', 'swim.join']), ...(junk(0) as object) } })))
      } catch { break }
    }
    await waitFor(() => r.closed() || r.frames.length >= 49, 3000, 'replies')
    await sleep(2)
    if (r.closed()) resets++
    r.stream.abort(new Error('done'))
  }
  t.ok(resets > 0, `some streams were reset (${resets}/20)`)
  t.ok(b.stats().badMessages > 500, `bad messages answered (${b.stats().badMessages})`)
  t.match(await a.send(b.peerId, get('alive')), { type: 'store.ok', stored: 5 }, 'b still serves')
  t.match(await a.send(b.peerId, { type: 'store.ok', stored: 1 }), { type: 'error', code: 'ERR_ENCODE' }, 'an unencodable response becomes an error reply')
})
