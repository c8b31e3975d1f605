import t from 'tap'
import fc from 'fast-check'
import { CoarseArc, createHasher, LiveRing, Ring, RingHandle, type PeerId } from '@sipring/overlay'

const hasher = await createHasher()
const FC = { seed: 0x1ee7, numRuns: 40 }
const V = 8
const R = 3

/** Owners at every token boundary of both rings and at some keys: a complete ownership fingerprint. */
function probes (a: Ring, b: Ring, keys: number): bigint[] {
  const out: bigint[] = []
  for (const r of [a, b]) for (const rg of r.ranges(1)) { out.push(rg.end, rg.end + 1n < (1n << 64n) ? rg.end + 1n : 0n) }
  for (let i = 0; i < keys; i++) out.push(hasher.hash64(`key${i}`))
  return out
}

function sameOwnership (a: Ring, b: Ring): boolean {
  if (a.size !== b.size || a.members.join() !== b.members.join()) return false
  for (const p of probes(a, b, 50)) if (a.ownersAt(p, R).join() !== b.ownersAt(p, R).join()) return false
  const ra = a.ranges(R); const rb = b.ranges(R)
  if (ra.length !== rb.length) return false
  return ra.every((x, i) => x.start === rb[i]!.start && x.end === rb[i]!.end && x.owners.join() === rb[i]!.owners.join())
}

// a sequence of ops on a pool of 40 ids: true = join, false = leave
const opsArb = fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 39 })), { minLength: 1, maxLength: 60 })
const id = (i: number): PeerId => `peer-${i}`

t.test('LiveRing after random joins and leaves owns exactly what a full rebuild owns', async t => {
  fc.assert(fc.property(opsArb, ops => {
    const live = new LiveRing(hasher, { vnodes: V })
    const set = new Set<PeerId>()
    for (const [join, i] of ops) {
      const m = id(i)
      if (join) { if (live.add(m) === set.has(m)) return false; set.add(m) } else { if (live.remove(m) !== set.has(m)) return false; set.delete(m) }
    }
    const full = new Ring(hasher, set, { vnodes: V })
    return sameOwnership(live, full) && [...set].every(m => live.has(m)) && !live.has('nobody')
  }), FC)
  t.pass()
})

t.test('chunks split and empty correctly with many members (vnodes 64 → > 1 chunk)', async t => {
  const live = new LiveRing(hasher, { vnodes: 64 })
  const set = new Set<PeerId>()
  for (let i = 0; i < 60; i++) { live.add(id(i)); set.add(id(i)) }
  for (let i = 0; i < 60; i += 3) { live.remove(id(i)); set.delete(id(i)) }
  for (let i = 60; i < 80; i++) { live.add(id(i)); set.add(id(i)) }
  const full = new Ring(hasher, set, { vnodes: 64 })
  t.ok(sameOwnership(live, full))
  for (const m of [...set]) live.remove(m)
  t.equal(live.size, 0)
  t.same(live.owners('x', 3), [])
  t.same(live.ranges(3), [])
})

t.test('derive / with / without equal a rebuild and leave the base untouched (copy on write)', async t => {
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 30 }), opsArb, (base, ops) => {
    const ring = new Ring(hasher, base.map(id), { vnodes: V })
    const before = ring.ranges(R).map(x => `${x.end}:${x.owners.join()}`).join()
    let cur: Ring = ring
    const set = new Set(base.map(id))
    for (const [join, i] of ops) {
      const m = id(i)
      cur = join ? cur.with(m) : cur.without(m)
      if (join) set.add(m); else set.delete(m)
    }
    const derived = ring.derive(set)
    const full = new Ring(hasher, set, { vnodes: V })
    return sameOwnership(cur, full) && sameOwnership(derived, full) &&
      ring.ranges(R).map(x => `${x.end}:${x.owners.join()}`).join() === before
  }), FC)
  t.pass()
})

t.test('a snapshot stays fixed while the live ring changes; handles follow or pin', async t => {
  const live = new LiveRing(hasher, { vnodes: V })
  for (let i = 0; i < 20; i++) live.add(id(i))
  const snap = live.snapshot()
  const following = live.handle()
  const pinned = live.handle()
  pinned.follow(snap)
  t.ok(following.follows(live)); t.ok(pinned.follows(snap)); t.notOk(pinned.follows(live))
  live.remove(id(3)); live.add(id(25))
  const full20 = new Ring(hasher, Array.from({ length: 20 }, (_, i) => id(i)), { vnodes: V })
  const now = new Ring(hasher, [...full20.members.filter(m => m !== id(3)), id(25)], { vnodes: V })
  t.ok(sameOwnership(snap, full20), 'snapshot = state at snapshot time')
  t.ok(sameOwnership(pinned, full20), 'pinned handle = snapshot')
  t.ok(sameOwnership(following, now), 'following handle sees the change')
  t.ok(sameOwnership(live, now))
  t.ok(following instanceof Ring && following instanceof RingHandle)
  pinned.follow(live)
  t.ok(sameOwnership(pinned, now), 're-followed')
})

t.test('LiveRing.plus(m) owns exactly what the ring with m owns, and follows later changes', async t => {
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 0, maxLength: 25 }), fc.integer({ min: 40, max: 45 }), opsArb, (base, j, ops) => {
    const live = new LiveRing(hasher, { vnodes: V })
    for (const i of base) live.add(id(i))
    const m = id(j)
    const plus = live.plus(m)
    const check = (): boolean => {
      const full = new Ring(hasher, [...live.members, m], { vnodes: V })
      if (plus.size !== full.size || !plus.has(m) || plus.members.join() !== full.members.join()) return false
      for (const p of probes(full, full, 60)) for (const r of [1, 3, 5]) if (plus.ownersAt(p, r).join() !== full.ownersAt(p, r).join()) return false
      return plus.replicaPeers(m, 3).join() === full.replicaPeers(m, 3).join()
    }
    if (!check()) return false
    for (const [join, i] of ops.slice(0, 10)) { if (join) live.add(id(i)); else live.remove(id(i)) }
    if (!check()) return false
    live.add(m) // the others learn of it: the view is the live ring itself
    return check()
  }), FC)
  t.pass()
})

t.test('affectedBy: every owner of a range whose owners change on a join/leave is affected (or the member)', async t => {
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 0, max: 39 }), (base, j) => {
    const m = id(j)
    const without = new Ring(hasher, base.map(id).filter(x => x !== m), { vnodes: V })
    const withM = without.with(m)
    // affected computed on either ring (before a join: without m; before a leave: with m)
    for (const ring of [without, withM]) {
      const affected = new Set(ring.affectedBy(m, R))
      if (affected.has(m)) return false
      for (const p of probes(without, withM, 100)) {
        const a = without.ownersAt(p, R); const b = withM.ownersAt(p, R)
        if (a.join() === b.join()) continue
        for (const o of [...a, ...b]) if (o !== m && !affected.has(o)) return false
      }
    }
    return true
  }), FC)
  t.pass()
})

t.test('LiveRing.minus(m) owns exactly what the ring without m owns, and follows later changes', async t => {
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 0, max: 45 }), opsArb, (base, j, ops) => {
    const live = new LiveRing(hasher, { vnodes: V })
    for (const i of base) live.add(id(i))
    const m = id(j)
    live.add(m)
    const minus = live.minus(m)
    const check = (): boolean => {
      const full = new Ring(hasher, live.members.filter(x => x !== m), { vnodes: V })
      if (minus.size !== full.size || minus.has(m) || minus.members.join() !== full.members.join()) return false
      for (const p of probes(full, live, 60)) for (const r of [1, 3, 5]) if (minus.ownersAt(p, r).join() !== full.ownersAt(p, r).join()) return false
      // anti-entropy partners come from the live ring without the missing member: all of them are partners in the view
      const other = full.members[0]
      const exact = other === undefined ? [] : full.replicaPeers(other, 3)
      return other === undefined || minus.replicaPeers(other, 3).every(p => exact.includes(p))
    }
    if (!check()) return false
    for (const [join, i] of ops.slice(0, 10)) { if (id(i) === m) continue; if (join) live.add(id(i)); else live.remove(id(i)) }
    if (!check()) return false
    live.remove(m) // it left: the view is the live ring itself
    return check()
  }), FC)
  t.pass()
})

t.test('changedArcs: outside the arcs the owners with and without the member are the same; inside, they differ somewhere', async t => {
  const inArcs = (p: bigint, arcs: Array<{ start: bigint, end: bigint }>): boolean =>
    arcs.some(a => a.start === a.end || (a.start < a.end ? p > a.start && p <= a.end : p > a.start || p <= a.end))
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 0, max: 39 }), fc.integer({ min: 1, max: 4 }), (base, j, r) => {
    const m = id(j)
    const without = new Ring(hasher, base.map(id).filter(x => x !== m), { vnodes: V })
    const withM = without.with(m)
    const arcs = withM.changedArcs(m, r)
    if (arcs.length === 0 || without.changedArcs(m, r).length !== 0) return false
    let inside = 0; let differ = 0
    for (const p of probes(without, withM, 200)) {
      const same = without.ownersAt(p, r).join() === withM.ownersAt(p, r).join()
      if (!inArcs(p, arcs)) { if (!same) return false } else { inside++; if (!same) differ++ }
    }
    // not the whole ring each time: the arcs are exact, so every probe inside them changes owners
    return inside === differ
  }), FC)
  t.pass()
})

t.test('sweep: owners of ascending positions equal ownersAt (dense and sparse keys, wrap past the last token)', async t => {
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 400 }), (base, r, nkeys) => {
    const ring = new Ring(hasher, base.map(id), { vnodes: V })
    const pos = probes(ring, ring, nkeys).sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
    pos.push((1n << 64n) - 1n)
    const at = ring.sweep(r)
    for (const p of pos) if (at(p).join() !== ring.ownersAt(p, r).join()) return false
    // a smaller position starts over
    return at(0n).join() === ring.ownersAt(0n, r).join()
  }), FC)
  t.pass()
})

t.test('affectedBy is small: about (2R-1)·vnodes members at most, whatever N', async t => {
  const live = new LiveRing(hasher, { vnodes: 16 })
  for (let i = 0; i < 5000; i++) live.add(`n${i}`)
  const a = live.affectedBy('newcomer', 3)
  t.ok(a.length <= (2 * 3 - 1) * 16, `${a.length} affected`)
  t.ok(a.length >= 3)
})

t.test('a live ring with 20,000 members × 16 vnodes: a join or leave costs microseconds, not a rebuild', async t => {
  const live = new LiveRing(hasher, { vnodes: 16 })
  for (let i = 0; i < 20_000; i++) live.add(`n${i}`)
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < 1000; i++) { live.remove(`n${i * 7}`); live.add(`m${i}`) }
  const perOp = Number(process.hrtime.bigint() - t0) / 2000 / 1000
  t.ok(perOp < 500, `${perOp.toFixed(1)} µs per join/leave`)
  t.equal(live.size, 20_000)
  t.equal(live.owners('sip:alice@x', 3).length, 3)
  const t1 = process.hrtime.bigint()
  const snap = live.snapshot(); live.add('late')
  const snapUs = Number(process.hrtime.bigint() - t1) / 1000
  t.ok(snapUs < 20_000, `snapshot + copy-on-write join ${snapUs.toFixed(0)} µs`)
  t.notOk(snap.has('late')); t.ok(live.has('late'))
})

t.test('replicaRanges: the same arcs as rangesOf (sorted by end), owners included, on rings, live rings and handles; views answer undefined', async t => {
  const nonEmpty = (ring: Ring, m: PeerId, r: number): string =>
    ring.rangesOf(m, r).filter(x => x.start !== x.end || ring.ranges(1).length === 1).map(x => `${x.start}:${x.end}:${x.owners.join()}`).join(' ')
  const show = (rs: ReturnType<Ring['replicaRanges']>): string | undefined => rs?.ranges().map(x => `${x.start}:${x.end}:${x.owners.join()}`).join(' ')
  fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 39 }), { minLength: 1, maxLength: 25 }), fc.integer({ min: 0, max: 39 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 8 }), (base, j, r, vnodes) => {
    const ring = new Ring(hasher, base.map(id), { vnodes })
    const live = new LiveRing(hasher, { vnodes })
    for (const i of base) live.add(id(i))
    const handle = new RingHandle(live)
    for (const m of [...base.map(id), id(j), 'nobody']) {
      const want = ring.has(m) ? nonEmpty(ring, m, r) : ''
      for (const x of [ring, live, handle]) if (show(x.replicaRanges(m, r)) !== want) return false
      // replica partners: every other owner of those ranges
      const peers = [...new Set(ring.replicaRanges(m, r)!.ranges().flatMap(x => x.owners))].filter(o => o !== m).sort()
      if (peers.join() !== ring.replicaPeers(m, r).join() || ring.replicaRanges(m, r)!.peers(m).join() !== peers.join()) return false
      // the arcs shared with each other member: those whose owners include it
      for (const q of [...base.map(id), 'nobody']) {
        const rr = ring.replicaRanges(m, r)!
        const want = rr.ranges().filter(x => x.owners.includes(q)).map(x => `${x.start}:${x.end}`).join(' ')
        if (rr.sharedWith(q).map(x => `${x.start}:${x.end}`).join(' ') !== want) return false
      }
    }
    // the ranges hold exactly the positions whose owners include the member
    const m = id(base[0]!)
    const rs = ring.replicaRanges(m, r)!.ranges()
    for (const p of probes(ring, ring, 60)) {
      const inside = rs.some(x => x.start === x.end || (x.start < x.end ? p > x.start && p <= x.end : p > x.start || p <= x.end))
      if (inside !== ring.ownersAt(p, r).includes(m)) return false
      const hit = rs.find(x => x.start === x.end || (x.start < x.end ? p > x.start && p <= x.end : p > x.start || p <= x.end))
      if (hit !== undefined && hit.owners.join() !== ring.ownersAt(p, r).join()) return false
    }
    return live.minus(id(j)).replicaRanges(m, r) === undefined && live.plus('extra').replicaRanges(m, r) === undefined
  }), FC)
  t.pass()
})

t.test('changedArcs carries its bounds as doubles (CoarseArc)', async t => {
  const ring = new Ring(hasher, ['a', 'b', 'c', 'd', 'e'], { vnodes: 4 })
  const arcs = ring.changedArcs('c', 3)
  t.equal(arcs.length, 4)
  for (const a of arcs) {
    t.ok(a instanceof CoarseArc)
    t.equal((a as CoarseArc).s, Number(a.start)); t.equal((a as CoarseArc).e, Number(a.end))
  }
  t.ok(new Ring(hasher, ['a', 'b'], { vnodes: 4 }).changedArcs('a', 3)[0] instanceof CoarseArc, 'the whole-ring arc too')
})

t.test('lookups where positions tie as doubles (tokens closer than a double can tell apart) match a naive walk', async t => {
  // tokens packed around a few bases, 0..4095 apart (a double near 2^63 cannot tell 2048 apart), and
  // probes next to them: the search on doubles must fall back to exact comparisons there
  const bases = [0n, 1n << 40n, (1n << 63n) - 5000n, 1n << 63n, (1n << 64n) - 3000n]
  fc.assert(fc.property(fc.integer({ min: 2, max: 30 }), fc.oneof(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 100, max: 200 })), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 1, max: 4 }), (n, vnodes, salt, r) => {
    const tokens = (m: PeerId): BigUint64Array => {
      const out = new BigUint64Array(vnodes)
      for (let i = 0; i < vnodes; i++) {
        const h = hasher.hash64(`${m}/${i}/${salt}`)
        out[i] = (bases[Number(h % BigInt(bases.length))]! + (h >> 52n)) % (1n << 64n)
      }
      return out
    }
    const members = Array.from({ length: n }, (_, i) => id(i))
    const ring = new Ring(hasher, members, { vnodes }, tokens)
    const live = new LiveRing(hasher, { vnodes }, tokens)
    for (const m of members) live.add(m)
    // naive: all tokens sorted by (position, member), first r distinct owners from the first >= p
    const all = members.flatMap(m => [...tokens(m)].map(p => ({ p, m }))).sort((a, b) => a.p < b.p ? -1 : a.p > b.p ? 1 : a.m < b.m ? -1 : a.m > b.m ? 1 : 0)
    const naive = (p: bigint): string => {
      let i = all.findIndex(x => x.p >= p); if (i < 0) i = 0
      const out: PeerId[] = []
      for (let k = 0; k < all.length && out.length < Math.min(r, n); k++) { const o = all[(i + k) % all.length]!.m; if (!out.includes(o)) out.push(o) }
      return out.join()
    }
    // (many chunks when vnodes is large: the directory's search is exercised too; every k-th token probed)
    const stride = Math.max(1, Math.floor(all.length / 150))
    for (let q = 0; q < all.length; q += stride) {
      const x = all[q]!
      for (const d of [-2049n, -1n, 0n, 1n, 2047n]) {
        const p = ((x.p + d) % (1n << 64n) + (1n << 64n)) % (1n << 64n)
        const want = naive(p)
        if (ring.ownersAt(p, r).join() !== want || live.ownersAt(p, r).join() !== want) return false
      }
    }
    return true
  }), { seed: 0x5eed, numRuns: 60 })
  t.pass()
})
