import t from 'tap'
import { SimClock, SeededRng } from '@sipring/testkit'
import { SimOverlayHub, type OverlayMessage } from '@sipring/overlay'
import { settle } from './helpers.js'

t.test('sim network: request/response, delay, loss, partition, crash, abort, encoding errors', async t => {
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(3), latency: { min: 10, max: 10 }, defaultTimeout: 500 })
  const a = hub.connect('a'); const b = hub.connect('b')
  b.onRequest(() => undefined) // declines: the next handler answers
  b.onRequest(msg => msg.type === 'store.get' ? { type: 'store.item', item: null } : undefined)
  const c = { clock }
  const t0 = clock.now()
  t.same(await settle(c, a.send('b', { type: 'store.get', key: 'k' }), 10_000, 1), { type: 'store.item', item: null })
  t.equal(clock.now() - t0, 20, 'one round trip = 2 × 10 ms')
  t.same(await settle(c, a.send('b', { type: 'swim.ping', updates: [] })), { type: 'error', code: 'ERR_UNSUPPORTED', message: 'no handler for swim.ping' })
  await t.rejects(a.send('zz', { type: 'swim.ping', updates: [] }), { code: 'ERR_UNREACHABLE' })
  hub.partition('a', 'b')
  await t.rejects(settle(c, a.send('b', { type: 'store.get', key: 'k' }, { timeout: 100 })), { code: 'ERR_TIMEOUT' })
  hub.partition('a', 'b', false)
  const ac = new AbortController()
  const p = a.send('b', { type: 'store.get', key: 'k' }, { signal: ac.signal })
  ac.abort()
  await t.rejects(p, { name: 'AbortError' })
  b.onRequest(() => ({ type: 'store.ok', stored: 1, f: () => 1 } as unknown as OverlayMessage))
  t.match(await settle(c, a.send('b', { type: 'store.put', items: [] })), { type: 'error', code: 'ERR_ENCODE' })
  await t.rejects(settle(c, a.send('b', { type: 'store.get', key: (() => 1) as unknown as string })), { code: 'ERR_PROTOCOL' })
  b.onRequest(() => { throw new Error('boom') })
  hub.crash('b')
  await t.rejects(settle(c, a.send('b', { type: 'store.get', key: 'k' })), { code: 'ERR_TIMEOUT' })
  hub.loss = 1
  hub.connect('b').onRequest(() => ({ type: 'store.ok', stored: 0 }))
  await t.rejects(settle(c, a.send('b', { type: 'store.put', items: [] })), { code: 'ERR_TIMEOUT' })
  t.ok(hub.stats.lost >= 1 && hub.stats.timeouts >= 3)
})

t.test('sim network: a settled request leaves no timer and no abort listener behind; an aborted signal rejects at once', async t => {
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(4), latency: { min: 5, max: 5 }, defaultTimeout: 300 })
  const a = hub.connect('a'); const b = hub.connect('b')
  b.onRequest(() => ({ type: 'store.item', item: null }))
  const c = { clock }
  // a signal that counts its listeners (function or EventListener object)
  const listeners = new Set<unknown>()
  const signal = {
    aborted: false,
    addEventListener: (_: string, l: unknown) => { listeners.add(l) },
    removeEventListener: (_: string, l: unknown) => { listeners.delete(l) }
  } as unknown as AbortSignal
  const p = a.send('b', { type: 'store.get', key: 'k' }, { signal })
  t.equal(listeners.size, 1, 'listening while in flight')
  t.same(await settle(c, p, 1000, 1), { type: 'store.item', item: null })
  t.equal(listeners.size, 0, 'listener removed once answered')
  t.equal(clock.pending, 0, 'timeout cancelled once answered')
  const q = a.send('b', { type: 'store.get', key: 'k' }, { signal, timeout: 50 })
  hub.crash('b')
  await t.rejects(settle(c, q, 1000, 1), { code: 'ERR_TIMEOUT' })
  t.equal(listeners.size, 0, 'listener removed on timeout')
  const ac = new AbortController(); ac.abort()
  await t.rejects(a.send('b', { type: 'store.get', key: 'k' }, { signal: ac.signal }), { name: 'AbortError' })
  t.equal(clock.pending, 0, 'no timer for a request aborted before it left')
})
