import t from 'tap'
import { SimClock, SeededRng } from '@sipring/testkit'
import { SimOverlayHub, type OverlayMessage } from '@sipring/overlay'
import { settle } from './helpers.js'

type Put = Extract<OverlayMessage, { type: 'store.put' }>

function pair (copy: 'clone' | 'freeze' | 'share'): { hub: SimOverlayHub, clock: SimClock, seen: OverlayMessage[] } {
  const clock = new SimClock()
  const hub = new SimOverlayHub({ clock, rng: new SeededRng(5), latency: { min: 1, max: 1 }, copy })
  hub.connect('a')
  const seen: OverlayMessage[] = []
  hub.connect('b').onRequest(msg => {
    seen.push(msg)
    if (msg.type === 'store.put') (msg as { items: unknown[] }).items.push('x') // a (forbidden) mutating receiver
    return { type: 'store.ok', stored: 1 }
  })
  return { hub, clock, seen }
}

t.test('copy modes: clone isolates, share passes the object, freeze turns a mutation into an error', async t => {
  for (const mode of ['clone', 'share', 'freeze'] as const) {
    const { hub, clock, seen } = pair(mode)
    const msg: Put = { type: 'store.put', items: [] }
    const res = await settle({ clock }, hub.connect('a').send('b', msg))
    if (mode === 'freeze') {
      t.match(res, { type: 'error', code: 'ERR_HANDLER' }, 'freeze: the receiver cannot mutate the message')
      t.ok(Object.isFrozen(msg) && Object.isFrozen(msg.items), 'freeze: deep-frozen')
      t.equal(msg.items.length, 0)
    } else {
      t.same(res, { type: 'store.ok', stored: 1 })
      t.equal(seen[0] === msg, mode === 'share', `${mode}: same object iff share`)
      t.equal(msg.items.length, mode === 'share' ? 1 : 0, `${mode}: sender's message ${mode === 'share' ? 'shared' : 'untouched'}`)
    }
    t.equal(hub.stats.delivered, 1)
  }
})
