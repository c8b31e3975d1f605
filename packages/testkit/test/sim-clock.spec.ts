import t from 'tap'
import { SimClock, SeededRng } from '../src/index.js'

t.test('timers fire in time order, ties in insertion order', async t => {
  const c = new SimClock(0)
  const seen: string[] = []
  c.setTimer(20, () => seen.push('b'))
  c.setTimer(10, () => seen.push('a1'))
  c.setTimer(10, () => seen.push('a2'))
  const x = c.setTimer(15, () => seen.push('x'))
  x.cancel()
  c.advance(12)
  t.same(seen, ['a1', 'a2'])
  t.equal(c.now(), 12)
  c.advance(100)
  t.same(seen, ['a1', 'a2', 'b'])
  t.equal(c.pending, 0)
})

t.test('a timer scheduled from a timer runs at the right time', async t => {
  const c = new SimClock(0)
  const at: number[] = []
  c.setTimer(5, () => { at.push(c.now()); c.setTimer(5, () => at.push(c.now())) })
  c.runUntilIdle()
  t.same(at, [5, 10])
})

t.test('seeded rng is deterministic and forks are independent of call order', async t => {
  const a = new SeededRng(42); const b = new SeededRng(42)
  t.same([a.next(), a.int(100), a.token(8)], [b.next(), b.int(100), b.token(8)])
  const f1 = new SeededRng(7).fork('net').next()
  const r = new SeededRng(7); r.next(); r.next()
  t.equal(r.fork('net').next(), f1, 'fork depends on seed and label only')
  t.not(new SeededRng(7).fork('clock').next(), f1)
  const n = new SeededRng(1); let inRange = true
  for (let i = 0; i < 10000; i++) { const v = n.int(10); if (v < 0 || v >= 10) inRange = false }
  t.ok(inRange)
})
