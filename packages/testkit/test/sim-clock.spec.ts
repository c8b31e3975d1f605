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

t.test('pending counts live timers only: cancelling a fired or cancelled timer changes nothing; order survives compaction', async t => {
  const c = new SimClock(0)
  const fired: number[] = []
  const a = c.setTimer(10, () => { fired.push(0) })
  c.setTimer(20, () => { fired.push(1) })
  c.advance(15)
  t.equal(c.pending, 1)
  a.cancel(); a.cancel()
  t.equal(c.pending, 1, 'cancelling a timer that already fired')
  // many cancelled timers force a compaction of the heap; the live ones still fire in (time, insertion) order
  const many = Array.from({ length: 3000 }, (_, i) => c.setTimer(100 + (i % 7), () => { fired.push(2 + i) }))
  for (let i = 0; i < many.length; i++) if (i % 3 !== 0) many[i]!.cancel()
  t.equal(c.pending, 1 + 1000)
  c.advance(1000)
  t.equal(c.pending, 0)
  const rest = fired.slice(2)
  const want = Array.from({ length: 3000 }, (_, i) => i).filter(i => i % 3 === 0).sort((x, y) => (x % 7) - (y % 7) || x - y).map(i => 2 + i)
  t.same(rest, want, 'fired in time order, ties by insertion')
  t.same(fired.slice(0, 2), [0, 1])
})

t.test('timing wheel and heap together fire in exactly (time, insertion) order: random timers against a reference', async t => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rng = new SeededRng(seed)
    const c = new SimClock(seed === 5 ? 0.5 : 1_000_000) // a fractional start puts every timer in the heap
    /** Live timers: id → due time (ids are in insertion order). */
    const ref = new Map<number, number>()
    const handles = new Map<number, { cancel: () => void }>()
    let last = { at: -Infinity, id: -1 }
    let bad = ''
    let next = 0
    let fires = 0
    const cancelOne = (): void => {
      if (handles.size === 0) return
      const victim = [...handles.keys()][rng.int(handles.size)]!
      handles.get(victim)!.cancel(); handles.get(victim)!.cancel()
      ref.delete(victim); handles.delete(victim)
    }
    const add = (depth: number): void => {
      const id = next++
      const r = rng.next()
      // short whole-ms delays (wheel), fractional and far ones (heap), the wheel's span, whole wheel turns
      const ms = r < 0.5 ? rng.int(40) : r < 0.65 ? rng.next() * 50 : r < 0.8 ? 16_000 + rng.int(800) : r < 0.9 ? 16_384 : rng.int(3) * 16_384 + rng.int(5)
      const at = c.now() + Math.max(0, ms)
      ref.set(id, at)
      handles.set(id, c.setTimer(ms, () => {
        fires++
        if (!ref.has(id)) bad ||= `cancelled timer ${id} fired`
        if (c.now() !== at) bad ||= `timer ${id} due at ${at} fired at ${c.now()}`
        if (at < last.at || (at === last.at && id < last.id)) bad ||= `timer ${id} (${at}) fired after ${last.id} (${last.at})`
        last = { at, id }
        ref.delete(id); handles.delete(id)
        if (depth < 3 && rng.next() < 0.5) add(depth + 1)
        if (rng.next() < 0.2) cancelOne()
      }))
    }
    for (let round = 0; round < 60; round++) {
      for (let i = 0; i < 50; i++) add(0)
      for (let i = 0; i < 10; i++) cancelOne()
      t.equal(c.pending, ref.size, `seed ${seed} round ${round}: pending`)
      const target = c.now() + (rng.next() < 0.2 ? 40_000 : rng.int(60))
      c.advanceTo(target)
      t.equal(c.now(), target)
      t.equal([...ref.values()].every(at => at > target), true, `seed ${seed} round ${round}: every timer due by the target fired`)
      t.equal(bad, '', `seed ${seed} round ${round}: ${bad}`)
      if (bad !== '') return
    }
    c.runUntilIdle()
    t.equal(bad, '')
    t.equal(c.pending, 0, `seed ${seed}: drained`)
    t.equal(ref.size, 0)
    t.ok(fires > 3000, `seed ${seed}: ${fires} timers fired`)
  }
})
