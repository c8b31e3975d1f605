import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { SimClock, MemoryLogger } from '@sipring/testkit'
import type { Binding } from '@sipring/interface'
import { LocationStore, LocationError, contactKey, type ContactUpdate, type LocationDb } from '@sipring/location'

const AOR = 'sip:alice@example.org'

function setup (opts: { db?: LocationDb, limits?: { maxContactsPerAor?: number, maxAors?: number } } = {}) {
  const clock = new SimClock()
  const logger = new MemoryLogger()
  const store = new LocationStore({ clock, logger, ...opts })
  return { clock, logger, store }
}

function c (contact: string, expires = 3600, extra: Partial<ContactUpdate> = {}): ContactUpdate {
  return { contact, expires, ...extra }
}

t.test('insert, refresh, remove one contact', async t => {
  const { store, clock } = setup()
  await store.start()
  let r = store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060')], callId: 'c1', cseq: 1 })
  t.ok(r.ok)
  t.equal(r.inserted, 1)
  t.equal(r.bindings.length, 1)
  t.equal(r.bindings[0]!.expires, clock.now() + 3600_000)
  t.equal(r.bindings[0]!.q, 1)
  t.same(store.stats(), { aors: 1, contacts: 1 })

  clock.advance(10_000)
  r = store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060', 600)], callId: 'c1', cseq: 2 })
  t.ok(r.ok)
  t.equal(r.updated, 1)
  t.equal(r.inserted, 0)
  t.equal(r.bindings[0]!.expires, clock.now() + 600_000)
  t.equal(r.bindings[0]!.cseq, 2)

  // different Call-ID, expires 0 → removed (RFC 3261 §10.3 step 7)
  r = store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060', 0)], callId: 'other', cseq: 1 })
  t.ok(r.ok)
  t.equal(r.deleted, 1)
  t.same(r.bindings, [])
  t.same(store.stats(), { aors: 0, contacts: 0 })
  t.same(store.aors(), [])
  await store.stop()
})

t.test('URI equality: host and scheme case, parameter order', async t => {
  t.equal(contactKey('SIP:alice@Example.ORG;transport=TCP;ob'), contactKey('<sip:alice@example.org;ob;transport=tcp>'))
  t.not(contactKey('sip:Alice@example.org'), contactKey('sip:alice@example.org'))
  const { store } = setup()
  store.applyRegister(AOR, { contacts: [c('sip:alice@Host.example;transport=tcp')], callId: 'c1', cseq: 1 })
  const r = store.applyRegister(AOR, { contacts: [c('sip:alice@host.example;transport=TCP', 100)], callId: 'c1', cseq: 2 })
  t.equal(r.updated, 1)
  t.equal(r.bindings.length, 1)
  // a caller-supplied key wins over the default one
  const r2 = store.applyRegister(AOR, { contacts: [c('sip:x@y', 100, { key: contactKey('sip:alice@host.example;transport=tcp') })], callId: 'c1', cseq: 3 })
  t.equal(r2.updated, 1)
  t.equal(r2.bindings[0]!.contact, 'sip:x@y')
})

t.test('Call-ID/CSeq ordering rule aborts the whole update', async t => {
  const { store } = setup()
  store.applyRegister(AOR, { contacts: [c('sip:a@1.1.1.1'), c('sip:b@2.2.2.2')], callId: 'c1', cseq: 5 })
  const events: string[] = []
  store.on('insert', () => events.push('insert'))
  store.on('update', () => events.push('update'))
  store.on('delete', () => events.push('delete'))
  // same Call-ID, equal CSeq → aborted
  let r = store.applyRegister(AOR, { contacts: [c('sip:new@3.3.3.3'), c('sip:a@1.1.1.1', 0)], callId: 'c1', cseq: 5 })
  t.equal(r.ok, false)
  t.equal(r.error, 'out-of-order')
  t.equal(r.bindings.length, 2, 'nothing changed')
  t.same(events, [], 'no event on abort')
  // lower CSeq → aborted
  r = store.applyRegister(AOR, { contacts: [c('sip:b@2.2.2.2', 10)], callId: 'c1', cseq: 4 })
  t.equal(r.error, 'out-of-order')
  t.equal(store.lookup(AOR).find(b => b.contact === 'sip:b@2.2.2.2')!.cseq, 5)
  // different Call-ID with lower CSeq → accepted
  r = store.applyRegister(AOR, { contacts: [c('sip:b@2.2.2.2', 10)], callId: 'c2', cseq: 1 })
  t.ok(r.ok)
  t.same(events, ['update'])
  // duplicate contact inside one REGISTER is not an ordering violation: last one wins
  r = store.applyRegister(AOR, { contacts: [c('sip:d@4.4.4.4', 100), c('sip:d@4.4.4.4', 200)], callId: 'c3', cseq: 1 })
  t.ok(r.ok)
  t.equal(r.inserted, 1)
  t.equal(store.lookup(AOR).find(b => b.contact === 'sip:d@4.4.4.4')!.expires - store.lookup(AOR)[0]!.updated, 200_000)
})

t.test('wildcard removes all, subject to the Call-ID/CSeq rule', async t => {
  const { store } = setup()
  store.applyRegister(AOR, { contacts: [c('sip:a@1.1.1.1')], callId: 'c1', cseq: 5 })
  store.applyRegister(AOR, { contacts: [c('sip:b@2.2.2.2')], callId: 'c2', cseq: 1 })
  let r = store.applyRegister(AOR, { contacts: '*', callId: 'c1', cseq: 5 })
  t.equal(r.error, 'out-of-order')
  t.equal(store.lookup(AOR).length, 2)
  const deleted: string[] = []
  store.on('delete', b => deleted.push(b.contact))
  r = store.applyRegister(AOR, { contacts: '*', callId: 'c1', cseq: 6 })
  t.ok(r.ok)
  t.equal(r.deleted, 2)
  t.same(deleted, ['sip:a@1.1.1.1', 'sip:b@2.2.2.2'])
  t.same(store.lookup(AOR), [])
  t.same(store.stats(), { aors: 0, contacts: 0 })
  // wildcard on an unknown AOR is fine
  t.ok(store.applyRegister('sip:nobody@example.org', { contacts: '*', callId: 'x', cseq: 1 }).ok)
})

t.test('RFC 5626 instance + reg-id replaces the flow even with another contact URI', async t => {
  const { store } = setup()
  const inst = '<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>'
  store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060;ob', 3600, { instance: inst, regId: 1 })], callId: 'c1', cseq: 1 })
  // second flow, same contact URI, reg-id 2: a separate binding
  let r = store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060;ob', 3600, { instance: inst, regId: 2 })], callId: 'c2', cseq: 1 })
  t.equal(r.inserted, 1)
  t.equal(r.bindings.length, 2)
  // reg-id 1 comes back on a new flow with a new Call-ID and a different contact URI: replaces
  r = store.applyRegister(AOR, { contacts: [c('sip:alice@192.0.2.7:40000;ob', 3600, { instance: inst.toLowerCase(), regId: 1 })], callId: 'c3', cseq: 1 })
  t.ok(r.ok)
  t.equal(r.updated, 1)
  t.equal(r.inserted, 0)
  t.same(r.bindings.map(b => [b.contact, b.regId]).sort(), [['sip:alice@10.0.0.1:5060;ob', 2], ['sip:alice@192.0.2.7:40000;ob', 1]])
  // a plain (non-outbound) registration of the same URI is a different binding
  r = store.applyRegister(AOR, { contacts: [c('sip:alice@10.0.0.1:5060;ob')], callId: 'c4', cseq: 1 })
  t.equal(r.inserted, 1)
  t.equal(r.bindings.length, 3)
  // remove one flow by identity
  t.equal(store.remove(AOR, 'sip:alice@192.0.2.7:40000;ob', { instance: inst, regId: 1 }), 1)
  t.equal(store.lookup(AOR).length, 2)
})

t.test('limits: maxContactsPerAor and maxAors', async t => {
  const { store } = setup({ limits: { maxContactsPerAor: 2, maxAors: 2 } })
  t.ok(store.applyRegister(AOR, { contacts: [c('sip:a@1'), c('sip:b@2')], callId: 'c1', cseq: 1 }).ok)
  let r = store.applyRegister(AOR, { contacts: [c('sip:c@3')], callId: 'c1', cseq: 2 })
  t.equal(r.error, 'too-many-contacts')
  t.equal(store.lookup(AOR).length, 2)
  // replacing one contact with another in the same request stays within the limit
  r = store.applyRegister(AOR, { contacts: [c('sip:a@1', 0), c('sip:c@3')], callId: 'c1', cseq: 3 })
  t.ok(r.ok)
  t.same(r.bindings.map(b => b.contact).sort(), ['sip:b@2', 'sip:c@3'])
  // refresh at the limit is fine
  t.ok(store.applyRegister(AOR, { contacts: [c('sip:b@2')], callId: 'c1', cseq: 4 }).ok)
  // too many in one request
  t.equal(store.applyRegister('sip:bob@x', { contacts: [c('sip:1@1'), c('sip:2@2'), c('sip:3@3')], callId: 'z', cseq: 1 }).error, 'too-many-contacts')
  t.ok(store.applyRegister('sip:bob@x', { contacts: [c('sip:1@1')], callId: 'z', cseq: 2 }).ok)
  r = store.applyRegister('sip:carol@x', { contacts: [c('sip:1@1')], callId: 'z', cseq: 1 })
  t.equal(r.error, 'too-many-aors')
  t.same(store.stats(), { aors: 2, contacts: 3 })
  t.throws(() => new LocationStore({ clock: new SimClock(), limits: { maxAors: 0 } }), LocationError)
})

t.test('bad arguments throw LocationError', async t => {
  const { store } = setup()
  t.throws(() => store.applyRegister('', { contacts: [], callId: 'a', cseq: 1 }), LocationError)
  t.throws(() => store.applyRegister(AOR, { contacts: [], callId: 'a', cseq: -1 }), LocationError)
  t.throws(() => store.applyRegister(AOR, { contacts: [c('sip:a@b', -5)], callId: 'a', cseq: 1 }), LocationError)
  t.throws(() => store.applyRegister(AOR, { contacts: [c('sip:a@b', 60, { q: 1.5 })], callId: 'a', cseq: 1 }), LocationError)
  t.throws(() => store.applyRegister(AOR, { contacts: [c('', 60)], callId: 'a', cseq: 1 }), LocationError)
  t.throws(() => store.applyRegister(AOR, { contacts: 'all' as any, callId: 'a', cseq: 1 }), LocationError)
  t.same(store.stats(), { aors: 0, contacts: 0 })
})

t.test('lookup order: q descending, then most recent first', async t => {
  const { store, clock } = setup()
  store.applyRegister(AOR, { contacts: [c('sip:low@1', 3600, { q: 0.1 })], callId: 'a', cseq: 1 })
  clock.advance(1000)
  store.applyRegister(AOR, { contacts: [c('sip:old@1', 3600, { q: 0.5 })], callId: 'b', cseq: 1 })
  clock.advance(1000)
  store.applyRegister(AOR, { contacts: [c('sip:new@1', 3600, { q: 0.5 })], callId: 'c', cseq: 1 })
  clock.advance(1000)
  store.applyRegister(AOR, { contacts: [c('sip:top@1', 3600, { q: 1 })], callId: 'd', cseq: 1 })
  t.same(store.lookup(AOR).map(b => b.contact), ['sip:top@1', 'sip:new@1', 'sip:old@1', 'sip:low@1'])
  t.ok(Object.isFrozen(store.lookup(AOR)[0]), 'bindings handed out are frozen')
})

t.test('expiry: lookup hides expired bindings before the sweep; the sweep removes them and emits expire', async t => {
  const { store, clock } = setup()
  await store.start()
  const expired: Binding[] = []
  store.on('expire', b => expired.push(b))
  store.applyRegister(AOR, { contacts: [c('sip:short@1', 60), c('sip:long@1', 120)], callId: 'a', cseq: 1 })
  store.applyRegister('sip:bob@example.org', { contacts: [c('sip:bob@1', 60)], callId: 'b', cseq: 1 })
  clock.advance(59_999)
  t.equal(store.lookup(AOR).length, 2)
  t.equal(expired.length, 0)
  // exactly at expiry: lookup hides it at once, even with no timer having fired yet
  const at = store.lookup(AOR)[0]!.updated + 60_000
  const s2 = new LocationStore({ clock: { now: () => at, setTimer: () => ({ cancel () {} }) } })
  s2.applyRegister(AOR, { contacts: [c('sip:x@1', 60)], callId: 'a', cseq: 1, now: at - 60_000 })
  t.same(s2.lookup(AOR), [], 'expired binding never returned')
  clock.advance(1_001)
  t.same(expired.map(b => b.contact).sort(), ['sip:bob@1', 'sip:short@1'])
  t.same(store.stats(), { aors: 1, contacts: 1 })
  t.same(store.aors(), [AOR])
  clock.advance(60_000)
  t.equal(expired.length, 3)
  t.same(store.stats(), { aors: 0, contacts: 0 })
  // a refreshed binding is not expired by its old wheel slot
  store.applyRegister(AOR, { contacts: [c('sip:r@1', 60)], callId: 'r', cseq: 1 })
  clock.advance(30_000)
  store.applyRegister(AOR, { contacts: [c('sip:r@1', 60)], callId: 'r', cseq: 2 })
  clock.advance(40_000)
  t.equal(store.lookup(AOR).length, 1)
  t.equal(expired.length, 3)
  clock.advance(25_000)
  t.equal(expired.length, 4)
  await store.stop()
  t.equal(clock.pending, 0, 'stop cancels the sweep timer')
})

t.test('events are emitted in order with the binding', async t => {
  const { store, clock } = setup()
  await store.start()
  const log: string[] = []
  const on = (e: 'insert' | 'update' | 'delete' | 'expire') => (b: Binding) => log.push(`${e} ${b.contact}`)
  const onInsert = on('insert')
  store.on('insert', onInsert); store.on('update', on('update')); store.on('delete', on('delete')); store.on('expire', on('expire'))
  store.applyRegister(AOR, { contacts: [c('sip:a@1'), c('sip:b@1', 30)], callId: 'x', cseq: 1 })
  store.applyRegister(AOR, { contacts: [c('sip:a@1', 0), c('sip:b@1', 30), c('sip:c@1')], callId: 'x', cseq: 2 })
  clock.advance(31_000)
  store.removeAor(AOR)
  store.off('insert', onInsert)
  store.applyRegister(AOR, { contacts: [c('sip:z@1')], callId: 'x', cseq: 3 })
  t.same(log, [
    'insert sip:a@1', 'insert sip:b@1',
    'delete sip:a@1', 'update sip:b@1', 'insert sip:c@1',
    'expire sip:b@1',
    'delete sip:c@1'
  ])
  // a throwing listener is logged, not propagated
  store.on('update', () => { throw new Error('boom') })
  t.ok(store.applyRegister(AOR, { contacts: [c('sip:z@1')], callId: 'x', cseq: 4 }).ok)
  await store.stop()
})

t.test('persistence round trip with memory-level', async t => {
  const db = new MemoryLevel<string, any>()
  const clock = new SimClock()
  const store = new LocationStore({ clock, db })
  await store.start()
  const received = { protocol: 'tcp' as const, address: '192.0.2.1', port: 40000, connectionId: 'conn-1' }
  store.applyRegister(AOR, {
    contacts: [
      c('sip:alice@10.0.0.1', 3600, { contactHeader: '<sip:alice@10.0.0.1>;+sip.instance="<urn:uuid:1>";reg-id=1', instance: '<urn:uuid:1>', regId: 1, received, path: ['<sip:edge;lr>'], userAgent: 'ua/1', node: 'n1', q: 0.7 }),
      c('sip:alice@10.0.0.2', 60)
    ],
    callId: 'a',
    cseq: 1
  })
  store.applyRegister('sip:bob@example.org', { contacts: [c('sip:bob@1', 3600)], callId: 'b', cseq: 1 })
  store.applyRegister('sip:bob@example.org', { contacts: [c('sip:bob@1', 0)], callId: 'b', cseq: 2 })
  store.applyRegister('sip:carol@example.org', { contacts: [c('sip:carol@1', 3600)], callId: 'b', cseq: 1 })
  await store.stop()
  const before = store.lookup(AOR)

  clock.advance(120_000) // the 60 s binding has expired meanwhile
  const store2 = new LocationStore({ clock, db })
  await store2.start()
  const after = store2.lookup(AOR)
  t.equal(after.length, 1)
  t.same(after[0], before.find(b => b.contact === 'sip:alice@10.0.0.1'))
  t.same(store2.lookup('sip:bob@example.org'), [], 'deleted binding not restored')
  t.equal(store2.lookup('sip:carol@example.org').length, 1)
  t.same(store2.stats(), { aors: 2, contacts: 2 })
  // the reloaded binding keeps its identity (instance + reg-id) and CSeq
  t.equal(store2.applyRegister(AOR, { contacts: [c('sip:other@1', 60, { instance: '<urn:uuid:1>', regId: 1 })], callId: 'a', cseq: 1 }).error, 'out-of-order')
  await store2.stop()
  // expired entries were dropped from the db at load
  const keys: string[] = []
  for await (const k of db.keys()) keys.push(k)
  t.equal(keys.length, 2)
  t.ok(keys.every(k => k.startsWith('b!')))
  t.ok(keys.some(k => k.startsWith(`b!${AOR}!`)))
})

t.test('writes are coalesced into batches; garbage in the db is dropped', async t => {
  const db = new MemoryLevel<string, any>()
  await db.put('b!sip:x@y!u:bad', 'not json', { valueEncoding: 'utf8' })
  await db.put('b!sip:x@y!u:bad2', { k: 'u:bad2' }, { valueEncoding: 'json' })
  const clock = new SimClock()
  const logger = new MemoryLogger()
  const store = new LocationStore({ clock, db, logger })
  await store.start()
  t.same(store.stats(), { aors: 0, contacts: 0 })
  let batches = 0
  const orig = db.batch.bind(db)
  ;(db as any).batch = (ops: any, opts: any) => { batches++; return orig(ops, opts) }
  for (let i = 0; i < 100; i++) store.applyRegister(`sip:u${i}@example.org`, { contacts: [c(`sip:u${i}@1`)], callId: 'a', cseq: 1 })
  for (let i = 0; i < 100; i++) store.applyRegister(`sip:u${i}@example.org`, { contacts: [c(`sip:u${i}@1`, 0)], callId: 'a', cseq: 2 })
  await store.flush()
  t.equal(batches, 1, 'one batch for 200 updates')
  const keys: string[] = []
  for await (const k of db.keys()) keys.push(k)
  t.same(keys, [], 'insert then delete coalesced; bad entries removed')
  // a failing db is logged and counted, memory stays authoritative
  ;(db as any).batch = () => Promise.reject(new Error('disk full'))
  store.applyRegister(AOR, { contacts: [c('sip:a@1')], callId: 'a', cseq: 1 })
  await store.flush()
  t.equal(store.failedWrites, 1)
  t.equal(store.lookup(AOR).length, 1)
  t.ok(logger.records.some(r => r.level === 'error' && r.msg === 'location write failed'))
  await store.stop()
})

t.test('put() for replication: absolute expiry, events, no CSeq rule', async t => {
  const { store, clock } = setup()
  const seen: string[] = []
  store.on('insert', b => seen.push('insert ' + b.contact))
  store.on('update', b => seen.push('update ' + b.contact))
  const b: Binding = { aor: AOR, contact: 'sip:r@1', expires: clock.now() + 5000, q: 1, callId: 'x', cseq: 9, path: [], updated: clock.now() }
  store.put(b)
  store.put({ ...b, cseq: 1 })
  store.put({ ...b, contact: 'sip:gone@1', expires: clock.now() }) // already expired: ignored
  t.same(seen, ['insert sip:r@1', 'update sip:r@1'])
  t.equal(store.lookup(AOR)[0]!.cseq, 1)
  t.equal(store.remove(AOR, '<SIP:r@1>'), 1)
  t.equal(store.remove(AOR, 'sip:r@1'), 0)
})

t.test('flows: lookupByConnection / removeByConnection, index kept tidy', async t => {
  const { store } = setup()
  const conn = (id: string) => ({ protocol: 'tcp' as const, address: '192.0.2.1', port: 40000, connectionId: id })
  const inst = '<urn:uuid:1>'
  store.applyRegister(AOR, { contacts: [c('sip:a@1;ob', 3600, { instance: inst, regId: 1, received: conn('k1') }), c('sip:b@1', 3600, { received: conn('k1') })], callId: 'x', cseq: 1 })
  store.applyRegister('sip:bob@example.org', { contacts: [c('sip:bob@1', 3600, { received: conn('k1') })], callId: 'y', cseq: 1 })
  store.applyRegister('sip:carol@example.org', { contacts: [c('sip:carol@1', 3600, { received: conn('k2') })], callId: 'z', cseq: 1 })
  t.equal(store.lookupByConnection('k1').length, 3)
  // alice's flow moves to connection k3 (same instance/reg-id): k1 keeps only b and bob
  store.applyRegister(AOR, { contacts: [c('sip:a@1;ob', 3600, { instance: inst, regId: 1, received: conn('k3') })], callId: 'x2', cseq: 1 })
  t.same(store.lookupByConnection('k1').map(b => b.contact).sort(), ['sip:b@1', 'sip:bob@1'])
  t.same(store.lookupByConnection('k3').map(b => b.contact), ['sip:a@1;ob'])
  const deleted: string[] = []
  store.on('delete', b => deleted.push(b.contact))
  t.equal(store.removeByConnection('k1'), 2)
  t.same(deleted.sort(), ['sip:b@1', 'sip:bob@1'])
  t.equal(store.removeByConnection('k1'), 0)
  t.same(store.lookup(AOR).map(b => b.contact), ['sip:a@1;ob'])
  t.same(store.lookup('sip:bob@example.org'), [])
  // removing bindings by other means empties the index too
  store.removeAor('sip:carol@example.org')
  store.applyRegister(AOR, { contacts: '*', callId: 'w', cseq: 1 })
  t.equal((store as unknown as { byConn: Map<string, unknown> }).byConn.size, 0, 'no index entry left behind')
})
