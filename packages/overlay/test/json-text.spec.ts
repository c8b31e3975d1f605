import t from 'tap'
import fc from 'fast-check'
import { isJsonText, validateMessage, OverlayProtocolError, itemValue, compareItems, type WireItem } from '@sipring/overlay'

/** The reference: what JSON.parse accepts, with well-formed strings and nesting ≤ depth. */
function reference (s: string, depth: number): boolean {
  let v: unknown
  try { v = JSON.parse(s) } catch { return false }
  const ok = (x: unknown, d: number): boolean => {
    if (typeof x === 'string') return x.isWellFormed()
    if (x === null || typeof x !== 'object') return true
    if (d <= 0) return false
    if (Array.isArray(x)) return x.every(e => ok(e, d - 1))
    return Object.entries(x).every(([k, e]) => k.isWellFormed() && ok(e, d - 1))
  }
  return ok(v, depth)
}

t.test('isJsonText accepts exactly the JSON texts (fixed cases)', async t => {
  const good = ['0', '-0', '1.5e+3', '-12.25E-2', '"x"', '"\\u00e9\\n\\"\\\\\\/"', 'true', 'false', 'null', '[]', '{}', ' [1, {"a": [null, "b"]}] ',
    '{"v":1,"nodes":{"p":{"uri":"sip:a","v":[1,2],"b":[]}}}', '"😀"', '\t\r\n{}\n']
  const bad = ['', ' ', '01', '1.', '.5', '+1', '1e', '-', '--1', '"x', '"\\x"', '"\\u12g4"', '"a\nb"', '[1,]', '{"a":1,}', '{a:1}', '{"a" 1}',
    '[1 2]', 'tru', 'nul', 'True', 'undefined', 'NaN', 'Infinity', '{} {}', '[', ']', '{"a":}', '"\ud800"', '"\udc00x"', '"\\"']
  for (const s of good) t.ok(isJsonText(s), `accepts ${JSON.stringify(s)}`)
  for (const s of bad) t.notOk(isJsonText(s), `refuses ${JSON.stringify(s)}`)
  t.ok(isJsonText('['.repeat(32) + ']'.repeat(32)), '32 levels pass')
  t.notOk(isJsonText('['.repeat(33) + ']'.repeat(33)), '33 levels are refused')
  t.notOk(isJsonText('['.repeat(100_000)), 'deep garbage: no stack overflow')
})

t.test('isJsonText agrees with JSON.parse on generated and mutated texts (seeded)', async t => {
  let n = 0
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), fc.nat(), fc.integer({ min: 0, max: 0x10ffff }), fc.constantFrom('', ' ', '\n'), (v, pos, code, ws) => {
    const s = ws + JSON.stringify(v) + ws
    if (!isJsonText(s)) return false
    // one mutation: delete, duplicate or replace one character
    const i = s.length === 0 ? 0 : pos % s.length
    const ch = code >= 0xd800 && code <= 0xdfff ? '\ud800' : String.fromCodePoint(code)
    for (const m of [s.slice(0, i) + s.slice(i + 1), s.slice(0, i) + s[i] + s.slice(i), s.slice(0, i) + ch + s.slice(i + 1), s.slice(0, i) + '"]},:0e-'[pos % 9] + s.slice(i + 1)]) {
      n++
      if (isJsonText(m) !== reference(m, 32)) return false
    }
    return true
  }), { seed: 4242, numRuns: 3000 })
  t.ok(n >= 12_000, `${n} mutated texts compared`)
})

t.test('a store item may carry its value as JSON text; bad text is a protocol error', async t => {
  const base = { key: 'k', version: { updated: 1, counter: 0, origin: 'o' }, deleted: false, expires: 10 }
  const m = validateMessage({ type: 'store.put', items: [{ ...base, json: '{"a":[1,2]}' }] })
  t.same(m, { type: 'store.put', items: [{ ...base, json: '{"a":[1,2]}' }] }, 'kept as text, not decoded')
  t.same(itemValue((m as { items: WireItem[] }).items[0]!), { a: [1, 2] })
  for (const json of ['{"a":', '', '[' + '['.repeat(40) + ']'.repeat(41), '"\ud800"']) {
    t.throws(() => validateMessage({ type: 'store.put', items: [{ ...base, json }] }), OverlayProtocolError, `refused: ${JSON.stringify(json.slice(0, 20))}`)
  }
  t.throws(() => validateMessage({ type: 'store.put', items: [{ ...base, json: 5 }] }), OverlayProtocolError, 'json not a string and no value')
  t.same(validateMessage({ type: 'store.put', items: [{ ...base, deleted: true, json: 'garbage' }] }), { type: 'store.put', items: [{ ...base, deleted: true }] }, 'a tombstone ignores json')
  // the merge order is the same for an item as text or as value
  const a: WireItem = { ...base, value: { x: 1 } }
  const b: WireItem = { ...base, json: '{"x":2}' }
  t.equal(compareItems(a, b), -1)
  t.equal(compareItems(b, { ...base, value: { x: 2 } }), 0)
  t.equal(compareItems({ ...base, json: '{"x":1}' }, a), 0)
})
