import t from 'tap'
import fc from 'fast-check'
import { compareItems, mergeItem, type WireItem } from '@sipring/overlay'

const FC = { seed: 0xc0ffee, numRuns: 300 }
const itemArb: fc.Arbitrary<WireItem<number>> = fc.record({
  updated: fc.integer({ min: 0, max: 5 }),
  counter: fc.integer({ min: 0, max: 2 }),
  origin: fc.constantFrom('a', 'b', 'c'),
  deleted: fc.boolean(),
  value: fc.integer({ min: 0, max: 3 }),
  expires: fc.integer({ min: 100, max: 103 })
}).map(r => {
  const it: WireItem<number> = { key: 'k', version: { updated: r.updated, counter: r.counter, origin: r.origin }, deleted: r.deleted, expires: r.expires }
  if (!r.deleted) it.value = r.value
  return it
})
const same = (a: WireItem | undefined, b: WireItem | undefined): boolean => JSON.stringify(a) === JSON.stringify(b)

t.test('merge is commutative, associative and idempotent', async t => {
  fc.assert(fc.property(itemArb, itemArb, (a, b) => same(mergeItem(a, b), mergeItem(b, a))), FC)
  fc.assert(fc.property(itemArb, itemArb, itemArb, (a, b, c) => same(mergeItem(mergeItem(a, b), c), mergeItem(a, mergeItem(b, c)))), FC)
  fc.assert(fc.property(itemArb, a => same(mergeItem(a, a), a)), FC)
  t.pass('properties hold')
})

t.test('random op sequences applied in any order (with duplicates) converge', async t => {
  fc.assert(fc.property(fc.array(itemArb, { minLength: 1, maxLength: 15 }), fc.integer(), (ops, seed) => {
    const fold = (xs: Array<WireItem<number>>): WireItem<number> | undefined => xs.reduce<WireItem<number> | undefined>((acc, x) => mergeItem(acc, x), undefined)
    const shuffled = fc.sample(fc.shuffledSubarray(ops, { minLength: ops.length, maxLength: ops.length }), { seed, numRuns: 1 })[0]!
    const dup = [...shuffled, ...ops.slice(0, 3)]
    return same(fold(ops), fold(shuffled)) && same(fold(ops), fold(dup))
  }), FC)
  t.pass('converged')
})

t.test('a deletion wins over every older write, loses to a newer one', async t => {
  fc.assert(fc.property(itemArb, itemArb, (w, d) => {
    const del: WireItem<number> = { key: 'k', version: d.version, deleted: true, expires: d.expires }
    const c = compareItems(del, { ...w, deleted: false, value: 1 })
    const m = mergeItem<WireItem<number>>(del, { ...w, deleted: false, value: 1 })!
    if (c > 0) return m.deleted
    return !m.deleted
  }), FC)
  const write: WireItem<number> = { key: 'k', version: { updated: 5, counter: 0, origin: 'b' }, deleted: false, value: 1, expires: 10 }
  const del: WireItem<number> = { key: 'k', version: { updated: 5, counter: 0, origin: 'b' }, deleted: true, expires: 10 }
  t.ok(mergeItem(write, del)!.deleted, 'a tombstone beats a value of the same version')
})
