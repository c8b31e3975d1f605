import t from 'tap'
import fc from 'fast-check'
import { createHasher, Ring, RingFactory, inArc, arcLength, RING_SIZE } from '@sipring/overlay'

const hasher = await createHasher()
const FC = { seed: 0x5eed, numRuns: 60 }
const peerArb = fc.stringMatching(/^[a-z0-9]{4,12}$/)
const membersArb = fc.uniqueArray(peerArb, { minLength: 1, maxLength: 12 })

t.test('hasher is xxHash64 and deterministic', async t => {
  // reference value of XXH64("", seed 0)
  t.equal(hasher.hash64(''), 0xef46db3751d8e999n)
  t.equal(hasher.hash64('sip:alice@example.org'), hasher.hash64(new TextEncoder().encode('sip:alice@example.org')))
  t.not(hasher.hash64('a'), hasher.hash64('b'))
})

t.test('owners: R distinct members, primary first, fewer when the ring is small', async t => {
  fc.assert(fc.property(membersArb, fc.string(), fc.integer({ min: 1, max: 5 }), (members, key, r) => {
    const ring = new Ring(hasher, members, { vnodes: 8 })
    const o = ring.owners(key, r)
    return o.length === Math.min(r, members.length) && new Set(o).size === o.length && o.every(m => members.includes(m))
  }), FC)
  const empty = new Ring(hasher, [])
  t.same(empty.owners('x', 3), [])
  t.throws(() => new Ring(hasher, ['a']).owners('x', 0), RangeError)
  t.throws(() => new Ring(hasher, ['a'], { vnodes: 0 }), RangeError)
})

t.test('owners are a prefix-stable list: owners(k, r) is a prefix of owners(k, r+1)', async t => {
  fc.assert(fc.property(membersArb, fc.string(), (members, key) => {
    const ring = new Ring(hasher, members, { vnodes: 8 })
    const a = ring.owners(key, 2); const b = ring.owners(key, 3)
    return a.every((m, i) => b[i] === m)
  }), FC)
})

t.test('ring is a pure function of the member set (order and duplicates do not matter)', async t => {
  fc.assert(fc.property(membersArb, fc.array(fc.string(), { maxLength: 20 }), (members, keys) => {
    const a = new Ring(hasher, members, { vnodes: 8 })
    const b = new Ring(hasher, [...members].reverse().concat(members), { vnodes: 8 })
    return keys.every(k => a.owners(k, 3).join() === b.owners(k, 3).join())
  }), FC)
})

t.test('a join only moves keys into the joiner: every other owner set changes only by the joiner', async t => {
  fc.assert(fc.property(membersArb, peerArb, fc.array(fc.string(), { minLength: 1, maxLength: 40 }), (members, joiner, keys) => {
    fc.pre(!members.includes(joiner))
    const before = new Ring(hasher, members, { vnodes: 8 })
    const after = before.with(joiner)
    for (const k of keys) {
      const o1 = before.owners(k, 3); const o2 = after.owners(k, 3)
      if (!o2.includes(joiner)) { if (o1.join() !== o2.join()) return false; continue }
      // joiner entered: the others keep their relative order, at most one old owner drops out (the last)
      const rest = o2.filter(m => m !== joiner)
      if (rest.some((m, i) => o1[i] !== m)) return false
    }
    return true
  }), FC)
})

t.test('a leave only moves the leaver\'s keys', async t => {
  fc.assert(fc.property(fc.uniqueArray(peerArb, { minLength: 2, maxLength: 12 }), fc.array(fc.string(), { minLength: 1, maxLength: 40 }), (members, keys) => {
    const before = new Ring(hasher, members, { vnodes: 8 })
    const after = before.without(members[0]!)
    return keys.every(k => before.owners(k, 3).includes(members[0]!) || before.owners(k, 3).join() === after.owners(k, 3).join())
  }), FC)
})

t.test('ranges partition the ring; rangesOf covers exactly the keys a member owns', async t => {
  const ring = new Ring(hasher, ['a', 'b', 'c', 'd', 'e'], { vnodes: 16 })
  const ranges = ring.ranges(3)
  let total = 0n
  for (const r of ranges) total += arcLength(r.start, r.end)
  t.equal(total, RING_SIZE, 'arcs sum to the whole ring')
  const mine = ring.rangesOf('c', 3)
  for (let i = 0; i < 300; i++) {
    const key = `k${i}`
    const p = ring.position(key)
    const inMine = mine.some(r => inArc(p, r.start, r.end))
    t.equal(inMine, ring.owners(key, 3).includes('c'), key)
  }
  t.equal(ring.loadStats(3).load.size, 5)
})

t.test('load: max/mean <= 1.25 at N=50, R=3 with the default vnodes (10 random member sets)', async t => {
  const rng = fc.sample(fc.uniqueArray(fc.stringMatching(/^[a-z0-9]{20}$/), { minLength: 50, maxLength: 50 }), { seed: 7, numRuns: 10 })
  for (const members of rng) {
    const s = new Ring(hasher, members).loadStats(3)
    t.ok(s.ratio <= 1.25, `ratio ${s.ratio.toFixed(3)}`)
    t.ok(Math.abs([...s.load.values()].reduce((a, b) => a + b, 0) - 3) < 1e-9, 'loads sum to R')
  }
})

t.test('derive (incremental) gives exactly the ring a full build gives', async t => {
  fc.assert(fc.property(membersArb, membersArb, fc.array(fc.string(), { minLength: 1, maxLength: 30 }), (a, b, keys) => {
    const base = new Ring(hasher, a, { vnodes: 8 })
    const target = [...a.slice(0, Math.ceil(a.length / 2)), ...b.slice(0, 3)]
    const derived = base.derive(target); const full = new Ring(hasher, target, { vnodes: 8 })
    return derived.members.join() === full.members.join() &&
      keys.every(k => derived.owners(k, 3).join() === full.owners(k, 3).join()) &&
      derived.ranges(2).map(r => `${r.start}-${r.end}-${r.owners.join()}`).join() === full.ranges(2).map(r => `${r.start}-${r.end}-${r.owners.join()}`).join()
  }), FC)
  const r = new Ring(hasher, ['a', 'b'], { vnodes: 8 })
  t.equal(r.derive(['b', 'a', 'a']), r, 'same set: same object')
  t.equal(r.without('a').with('a').owners('k', 2).join(), r.owners('k', 2).join())
})

t.test('RingFactory interns rings by member set', async t => {
  const f = new RingFactory(hasher, { vnodes: 4, cacheSize: 2 })
  const a = f.of(['x', 'y'])
  t.equal(f.of(['y', 'x', 'x']), a)
  f.of(['z']); f.of(['w'])
  t.not(f.of(['x', 'y']), a, 'evicted (LRU)')
})

t.test('replicaPeers: exactly the members that co-own some key with the member', async t => {
  fc.assert(fc.property(fc.uniqueArray(peerArb, { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 16 }), (members, r, vnodes) => {
    const ring = new Ring(hasher, members, { vnodes })
    const m = members[0]!
    const expected = new Set<string>()
    for (const rg of ring.ranges(r)) if (rg.owners.includes(m)) for (const o of rg.owners) if (o !== m) expected.add(o)
    return ring.replicaPeers(m, r).join() === [...expected].sort().join()
  }), { ...FC, numRuns: 200 })
  t.same(new Ring(hasher, ['a']).replicaPeers('zz', 3), [])
})
