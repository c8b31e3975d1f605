import t from 'tap'
import { SeededRng } from '@sipring/testkit'
import { aorKey, canonicalJson, type AorValue, type LocationReplicator, type ReplicaValue, type SignedPortion } from '../src/index.js'
import { DEFAULT_REPLICATION_LIMITS, portionExpiry, solePortion } from '../src/replication.js'
import { fourNodes, hmacSigner, phone, registerAndWait, run, settle, shutdown } from './overlay-helpers.js'
import { BOB, portionMaker, ri } from './portion-helpers.js'

// The text path of the portion-wise merge (`LocationReplicator.acceptsText`, the store's
// `ValueMerge.acceptsText`): a replica receiving an AOR value that holds only its sender's portion
// checks that portion on the JSON text (`solePortion`) without decoding it — valid as it is with
// nothing stored, the join with a stored value holding only an older portion of that node. It must
// answer true only when `mergeValues` would give the incoming value itself.

const K = aorKey(BOB)
const L = DEFAULT_REPLICATION_LIMITS

t.test('solePortion reads id, version and expiry of a one-portion compact text as JSON.parse does; other forms: undefined', async t => {
  const rng = new SeededRng(11)
  // quotes and backslashes (escaped in the text) in a fifth of the texts: read when only in skipped values
  const plain = ['}', ']', '{', '[', ',', ':', 'v:[9,9]', 'expires:9e99', 'é', 'b:[', 'uri:sip:']
  const nasty = [...plain, '"', '\\', '"v":[9,9]', '"expires":9e99', '\\"', '\\\\', '"b":[', '"uri":"sip:']
  let esc = false
  const str = (): string => Array.from({ length: ri(rng, 0, 6) }, () => {
    const from = esc ? nasty : plain
    return rng.next() < 0.5 ? from[ri(rng, 0, from.length - 1)]! : String.fromCharCode(ri(rng, 32, 126)).replace(esc ? /^$/ : /["\\]/, '')
  }).join('')
  let read = 0; let escaped = 0
  for (let i = 0; i < 1500; i++) {
    esc = rng.next() < 0.2
    const id = rng.next() < 0.9 ? `n${ri(rng, 1, 9)}` : str()
    const p: Record<string, unknown> = {}
    // members in random order, some missing, some of the wrong type
    const members: Array<[string, () => unknown]> = [
      ['uri', () => rng.next() < 0.8 ? `sip:10.0.0.1:${ri(rng, 1, 9)}` : rng.next() < 0.5 ? str() : 5],
      ['v', () => rng.next() < 0.9 ? [ri(rng, 0, 2 ** 40), ri(rng, 0, 5)] : rng.next() < 0.5 ? [1, 2, 3] : ['1', 2]],
      ['b', () => rng.next() < 0.95
        ? Array.from({ length: ri(rng, 0, 3) }, () => rng.next() < 0.85
          ? { contact: str(), ...(rng.next() < 0.9 ? { expires: rng.next() < 0.9 ? ri(rng, 0, 1e6) : str() } : {}), path: [str()], x: { expires: 9e15, v: str() } }
          : rng.next() < 0.5 ? str() : null)
        : {}],
      ['x', () => rng.next() < 0.8 ? ri(rng, 0, 1e6) : null],
      ['s', () => str()],
      [str(), () => ({ v: [9, 9], expires: 9e15, b: [str()] })]
    ]
    for (const [name, make] of members) if (rng.next() < (name === 'x' || name === 's' ? 0.3 : name.length > 1 && name !== 'uri' ? 0.2 : 0.95)) p[name] = make()
    const nodes: Record<string, unknown> = { [id]: p }
    if (rng.next() < 0.05) nodes[`${id}2`] = p
    const text = JSON.stringify({ v: 1, nodes })
    const r = solePortion(text, L)
    if (r === undefined) continue
    if (text.includes('\\')) escaped++
    read++
    // whatever it reads is what JSON.parse gives, and it reads only well-shaped portions
    const back = JSON.parse(text) as { nodes: Record<string, { uri: unknown, v: unknown, b: unknown, x?: unknown }> }
    t.same(Object.keys(back.nodes), [r.id], text)
    const q = back.nodes[r.id]!
    t.ok(typeof q.uri === 'string' && /^sips?:/i.test(q.uri) && Array.isArray(q.b) && (q.x === undefined || typeof q.x === 'number'), `shape ${text}`)
    t.same(q.v, [r.v0, r.v1], `version ${text}`)
    t.equal(r.expiry, portionExpiry(q), `expiry ${text}`)
  }
  t.ok(read > 500 && escaped > 30, `${read} texts read, ${escaped} of them with escapes`)
  const ok = '{"v":1,"nodes":{"a":{"uri":"SIPS:x","v":[1.5e3,0],"b":[{"expires":7,"q":1},3,{"c":"}],{\\"expires\\":9"}],"x":5,"s":"q"}}}'
  t.same(solePortion(ok, L), { id: 'a', v0: 1500, v1: 0, expiry: 7 }, 'escapes in a skipped value')
  t.same(solePortion('{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[{"instance":"\\"<urn:x>\\"","expires":9,"c":"\\\\"}],"s":"\\\\"}}}', L), { id: 'a', v0: 1, v1: 2, expiry: 9 }, 'an escaped instance')
  t.same(solePortion('{"v":1,"nodes":{"a":{"uri":"SIPS:x","v":[1.5e3,0],"b":[{"expires":7,"q":1},3,{"c":"}],{expires:9"}],"x":5,"s":"q"}}}', L), { id: 'a', v0: 1500, v1: 0, expiry: 7 })
  t.same(solePortion('{"v":1,"nodes":{"a":{"uri":"sip:","v":[1,2],"b":[],"x":3}}}', L), { id: 'a', v0: 1, v1: 2, expiry: 3 })
  t.same(solePortion('{"v":1,"nodes":{"ab":{"uri":"sip:","v":[1,2],"b":[]}}}', L, 'ab'), { id: 'ab', v0: 1, v1: 2, expiry: -Infinity })
  for (const other of ['a', 'abc', 'b', '']) t.equal(solePortion('{"v":1,"nodes":{"ab":{"uri":"sip:","v":[1,2],"b":[]}}}', L, other), undefined, `not ${other}`)
  for (const u of ['sip', 'si:', 'sips', 'sipx:', 'http:', 's:ip', 'sid:x', 'xip:', 'sbp:', 'sIps;x']) t.equal(solePortion(`{"v":1,"nodes":{"a":{"uri":"${u}","v":[1,2],"b":[]}}}`, L), undefined, u)
  for (const bad of [
    '{"v":1, "nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[]}}}', // white space
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[]},"b":{"uri":"sip:x","v":[1,2],"b":[]}}}', // two portions
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[]},"a":{"uri":"sip:x","v":[3,4],"b":[]}}}', // duplicate id
    '{"v":1,"nodes":{"a":{"uri":"sip:x","b":[]}}}', // no version
    '{"v":1,"nodes":{"a":{"v":[1,2],"b":[]}}}', // no uri
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2]}}}', // no bindings
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"v":[3,4],"b":[]}}}', // two versions
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[],"b":[{"expires":9}]}}}', // two binding lists
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[],"x":1,"x":2}}}', // two x
    '{"v":1,"nodes":{"a":{"uri":"sip:x","uri":"http:y","v":[1,2],"b":[]}}}', // two uris
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[{"expires":1,"expires":9}]}}}', // two expiries in a binding
    '{"v":1,"nodes":{"a":{"uri":"http:x","v":[1,2],"b":[]}}}', // not a SIP URI
    '{"v":1,"nodes":{"a":{"uri":"sip:\\u0078","v":[1,2],"b":[]}}}', // escaped uri
    '{"v":1,"nodes":{"a":{"u\\u0072i":"sip:x","v":[1,2],"b":[]}}}', // escaped member name
    '{"v":1,"nodes":{"a\\u0041":{"uri":"sip:x","v":[1,2],"b":[]}}}', // escaped id
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[],"\\u0078":99}}}', // an escaped name spelling x
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[],"\\u0076":[5,6]}}}', // an escaped name spelling v (the last wins)
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[{"\\u0065xpires":99}]}}}', // an escaped name spelling expires
    '{"v":1,"nodes":{"a":{"uri":"sip:x\\"","v":[1,2],"b":[]}}}', // an escaped uri
    '{"v":1,"nodes":{"":{"uri":"sip:x","v":[1,2],"b":[]}}}', // empty id
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2,3],"b":[]}}}',
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":["1",2],"b":[]}}}',
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[],"x":null}}}',
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":{}}}}',
    '{"v":1,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[]}},"x":1}', // after the nodes
    '{"v":2,"nodes":{"a":{"uri":"sip:x","v":[1,2],"b":[]}}}',
    '{"v":1,"nodes":{}}', '{"v":1,"nodes":{"a":{}}}', '{"v":1,"nodes":{"a":5}}', '"text"', ''
  ]) t.equal(solePortion(bad, L), undefined, bad)
  t.equal(solePortion(`{"v":1,"nodes":{"a":{"uri":"sip:${'x'.repeat(L.maxStringLength)}","v":[1,2],"b":[]}}}`, L), undefined, 'uri too long')
})

for (const signed of [false, true]) {
  const mode = signed ? 'signed' : 'unsigned'
  t.test(`${mode}: acceptsText is true only when mergeValues gives the incoming value itself (random portions)`, async t => {
    const c = await fourNodes(signed ? 31 : 32, { records: false, overlay: id => signed ? { signer: hmacSigner(id) } : {} })
    t.teardown(() => shutdown(c))
    const rep: LocationReplicator = c.nodes.get('n1')!.replication!
    const rng = new SeededRng(signed ? 5 : 6)
    const now = c.clock.now()
    const portion = portionMaker(rng, now, signed, true)
    const value = (max: number): AorValue => {
      const nodes: Record<string, SignedPortion> = {}
      for (const id of ['n1', 'n2', 'n3', 'n4']) if (Object.keys(nodes).length < max && rng.next() < 0.4) nodes[id] = portion(id)
      return { v: 1, nodes }
    }
    let yes = 0; let no = 0; let alone = 0
    for (let i = 0; i < 3000; i++) {
      const from = ['n1', 'n2', 'n3', 'n4'][ri(rng, 0, 3)]!
      // usually the sender's own portion alone (a REGISTER at the sender), sometimes anything
      const incoming: AorValue = rng.next() < 0.8 ? { v: 1, nodes: { [rng.next() < 0.9 ? from : 'n1']: portion(from) } } : value(4)
      const stored: AorValue | undefined = rng.next() < 0.3 ? undefined : rng.next() < 0.6 ? { v: 1, nodes: { [from]: portion(from) } } : value(3)
      if (stored !== undefined && rng.next() < 0.5) for (const id of Object.keys(incoming.nodes)) if (stored.nodes[id] !== undefined) incoming.nodes[id]!.v = [stored.nodes[id]!.v[0] + ri(rng, 0, 1), ri(rng, 0, 3)]
      const ctx = { incoming: incoming as ReplicaValue, from }
      const a = rep.acceptsText(JSON.stringify(incoming), stored === undefined ? undefined : JSON.stringify(stored), K, from)
      if (!a) { no++; continue }
      yes++
      const want = canonicalJson(incoming)
      if (stored === undefined) {
        alone++
        t.equal(canonicalJson(rep.mergeValues(incoming, incoming, K, ctx)), want, `valid as it is ${i}`)
        continue
      }
      t.equal(canonicalJson(rep.mergeValues(incoming, stored, K, ctx)), want, `merge (incoming newer) ${i}`)
      t.equal(canonicalJson(rep.mergeValues(stored, incoming, K, ctx)), want, `merge (stored newer) ${i}`)
    }
    t.ok(yes > 300 && no > 300 && alone > 100, `both answers seen (true ${yes}, ${alone} of them with nothing stored; false ${no})`)
  })
}

t.test('through the overlay: new AORs and refreshes are accepted on their texts at the other owners', async t => {
  const c = await fourNodes(33, { records: false })
  t.teardown(() => shutdown(c))
  const owners = c.nodes.get('n1')!.overlay!.store.owners(K)
  const text = (): number => owners.reduce((s, o) => s + c.nodes.get(o)!.overlay!.store.getStats().textMerges, 0)
  const remote = owners.filter(o => o !== 'n1').length
  const bob = await phone(c, 'bob', '10.9.0.2', 'n1', 'udp')
  const t0 = text()
  t.equal(await registerAndWait(c, bob), 200)
  await run(c, 2000)
  t.equal(text() - t0, remote, 'the new AOR: one text merge per remote owner')
  t.equal(await registerAndWait(c, bob), 200, 'refresh')
  await run(c, 2000)
  t.equal(text() - t0, 2 * remote, 'the refresh: one more per remote owner')
  for (const o of owners) t.same(Object.keys((c.nodes.get(o)!.overlay!.store.local(K)!.value as AorValue).nodes), ['n1'], `${o} holds n1's portion`)
  const found = await settle(c, c.nodes.get('n3')!.replication!.lookup(BOB))
  t.same(found.map(b => b.contact), [bob.contact])
})
