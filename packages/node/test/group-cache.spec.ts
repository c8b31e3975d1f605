import t from 'tap'
import { SimClock } from '@sipring/testkit'
import { GroupCache } from '../src/group-cache.js'

type Listener = (c: { kind: string, aor?: string }) => void
function store (withChanges = true): { reads: string[], groups: Map<string, { members: string[], policy: 'ring-all' }>, fire: Listener, getGroup: (aor: string) => Promise<{ members: string[], policy: 'ring-all' } | undefined>, onChange?: (fn: Listener) => () => void } {
  const listeners = new Set<Listener>()
  const s = {
    reads: [] as string[],
    groups: new Map<string, { members: string[], policy: 'ring-all' }>(),
    fire: (c: { kind: string, aor?: string }) => { for (const l of listeners) l(c) },
    async getGroup (aor: string) { s.reads.push(aor); return s.groups.get(aor) }
  }
  return withChanges ? Object.assign(s, { onChange: (fn: Listener) => { listeners.add(fn); return () => listeners.delete(fn) } }) : s
}

t.test('groups and non-groups are read once, then served from the cache until the TTL', async t => {
  const clock = new SimClock(1_000)
  const s = store()
  s.groups.set('sip:g@d', { members: ['sip:a@d'], policy: 'ring-all' })
  const c = new GroupCache(s, clock, { ttlMs: 10_000 })
  t.same(await c.get('sip:g@d'), { members: ['sip:a@d'], policy: 'ring-all' })
  t.equal(await c.get('sip:a@d'), undefined)
  await c.get('sip:g@d'); await c.get('sip:a@d')
  t.same(s.reads, ['sip:g@d', 'sip:a@d'], 'second reads come from the cache')
  t.equal(c.hits, 2)
  clock.advance(10_000)
  await c.get('sip:g@d')
  t.same(s.reads, ['sip:g@d', 'sip:a@d', 'sip:g@d'], 'expired entry read again')
})

t.test('a change of a group drops its entry at once; a change during a read is not cached', async t => {
  const clock = new SimClock(1_000)
  const s = store()
  s.groups.set('sip:g@d', { members: ['sip:a@d'], policy: 'ring-all' })
  const c = new GroupCache(s, clock)
  await c.get('sip:g@d')
  s.groups.set('sip:g@d', { members: ['sip:b@d'], policy: 'ring-all' })
  s.fire({ kind: 'user', aor: 'sip:g@d' })
  t.same((await c.get('sip:g@d'))?.members, ['sip:a@d'], 'a user change does not touch groups')
  s.fire({ kind: 'group', aor: 'sip:g@d' })
  t.same((await c.get('sip:g@d'))?.members, ['sip:b@d'], 'group change seen immediately')
  // a notification that arrives while a read is in flight: the answer is used but not cached
  c.close()
  const s2 = store()
  const c2 = new GroupCache(s2, clock)
  const p = c2.get('sip:x@d')
  s2.fire({ kind: 'group', aor: 'sip:x@d' })
  await p
  await c2.get('sip:x@d')
  t.same(s2.reads, ['sip:x@d', 'sip:x@d'])
})

t.test('without change notifications the TTL is short; concurrent reads share one; LRU bound', async t => {
  const clock = new SimClock(1_000)
  const s = store(false)
  const c = new GroupCache(s, clock, { maxEntries: 2 })
  await Promise.all([c.get('sip:a@d'), c.get('sip:a@d'), c.get('sip:a@d')])
  t.same(s.reads, ['sip:a@d'], 'one read for concurrent lookups')
  clock.advance(5_000)
  await c.get('sip:a@d')
  t.equal(s.reads.length, 2, 'default TTL without notifications is 5 s')
  await c.get('sip:b@d'); await c.get('sip:a@d'); await c.get('sip:c@d')
  t.equal(c.size, 2)
  await c.get('sip:a@d')
  t.equal(s.reads.filter(r => r === 'sip:a@d').length, 2, 'recently used a kept')
  await c.get('sip:b@d')
  t.equal(s.reads.filter(r => r === 'sip:b@d').length, 2, 'least recently used b evicted')
  t.throws(() => new GroupCache(s, clock, { maxEntries: 0 }), RangeError)
})
