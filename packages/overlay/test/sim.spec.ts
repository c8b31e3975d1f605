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
