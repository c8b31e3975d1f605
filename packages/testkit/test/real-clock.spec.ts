import t from 'tap'
import { RealClock } from '@sipring/testkit'

t.test('RealClock: scaled now() and timers, runUntil, close()', async t => {
  const c = new RealClock({ epoch: 1_000_000, scale: 10 })
  t.ok(c.now() >= 1_000_000 && c.now() < 1_000_000 + 200, 'starts at the epoch')
  const fired: number[] = []
  const wall0 = Date.now()
  c.setTimer(500, () => { fired.push(c.now()) }) // 500 scaled ms = 50 real ms
  const cancelled = c.setTimer(300, () => { fired.push(-1) })
  cancelled.cancel()
  t.equal(c.pending, 1)
  await c.runUntil(1_000_000 + 800)
  const wall = Date.now() - wall0
  t.ok(wall >= 70 && wall < 1000, `800 scaled ms took ${wall} real ms`)
  t.equal(fired.length, 1, 'the cancelled timer never fired')
  t.ok(fired[0]! >= 1_000_000 + 500, `fired at ${fired[0]! - 1_000_000} ms on the clock`)
  t.equal(c.events(), 1)
  c.setTimer(10, () => { fired.push(-2) })
  c.close()
  t.equal(c.pending, 0)
  c.setTimer(0, () => { fired.push(-3) })
  await new Promise(resolve => { setTimeout(resolve, 30) })
  t.same(fired.length, 1, 'nothing fires after close()')
  t.ok(c.isClosed)
})

t.test('RealClock: bad scale is refused; default epoch is the wall clock', async t => {
  t.throws(() => new RealClock({ scale: 0 }), RangeError)
  t.throws(() => new RealClock({ scale: Number.NaN }), RangeError)
  const c = new RealClock()
  t.ok(Math.abs(c.now() - Date.now()) < 100)
  t.equal(c.clock, c, 'is its own time source clock')
})
