import t from 'tap'
import { SimClock, SeededRng } from '@sipring/testkit'
import { createHasher, RingFactory } from '@sipring/overlay'
import { silentLogger } from '@sipring/interface'
import { Deadline, InstrumentedHub, overlayNodeFactory } from '@sipring/simulations'

t.test('Deadline: an AbortSignal stand-in with EventTarget rules', async t => {
  const d = new Deadline()
  const seen: string[] = []
  const f = (): void => { seen.push('f') }
  const obj = { handleEvent: (ev: { type: string }) => { seen.push(`obj:${ev.type}`) } }
  const gone = (): void => { seen.push('gone') }
  d.signal.addEventListener('abort', f)
  d.signal.addEventListener('abort', f) // twice: called once
  d.signal.addEventListener('abort', obj)
  d.signal.addEventListener('abort', gone, { once: true })
  d.signal.removeEventListener('abort', gone)
  d.signal.addEventListener('other', f)
  d.onabort = () => { seen.push('onabort') }
  t.equal(d.signal.aborted, false)
  t.doesNotThrow(() => { d.signal.throwIfAborted() })
  d.abort()
  d.abort() // once
  t.same(seen, ['onabort', 'f', 'obj:abort'])
  t.equal(d.signal.aborted, true)
  t.match(d.signal.reason, { name: 'AbortError' })
  t.throws(() => { d.signal.throwIfAborted() }, { name: 'AbortError' })
  d.signal.addEventListener('abort', f) // after the abort: never called
  t.same(seen, ['onabort', 'f', 'obj:abort'])
})

t.test('localSeq reads the sequence number of the stored JSON text, falls back to parsing', async t => {
  const clock = new SimClock(0)
  const hasher = await createHasher()
  const hub = new InstrumentedHub({ clock, rng: new SeededRng(1), copy: 'share' })
  const f = overlayNodeFactory({ clock, logger: silentLogger, hub, hasher, rings: new RingFactory(hasher, { vnodes: 4 }), init: {} })
  const n = f.create('n1', new SeededRng(2))
  await n.start()
  const put = async (k: string, v: unknown): Promise<void> => {
    const p = n.put(k, v as never, 60_000)
    for (let i = 0; i < 100; i++) { clock.advance(10); await new Promise(resolve => { setImmediate(resolve) }) }
    await p
  }
  await put('a', { c: 'sip:x@y;s=1', s: 1234567 })
  await put('b', { c: 'x', s: 0 })
  await put('c', { s: 42, c: 'sip:u@h' }) // other field order: parsed
  await put('d', { c: 'x', s: -5 })
  await put('e', { c: 'x', s: 1.5 })
  t.equal(n.localSeq?.('a'), 1234567)
  t.equal(n.localSeq?.('b'), 0)
  t.equal(n.localSeq?.('c'), 42)
  t.equal(n.localSeq?.('d'), -5)
  t.equal(n.localSeq?.('e'), 1.5)
  t.equal(n.localSeq?.('missing'), undefined)
  for (const k of ['a', 'b', 'c', 'd', 'e']) t.equal(n.localSeq?.(k), n.local(k)?.s, `${k}: same as the decoded value`)
})
