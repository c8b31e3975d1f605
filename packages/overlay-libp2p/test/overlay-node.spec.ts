import t from 'tap'
import { silentLogger } from '@sipring/interface'
import { SeededRng } from '@sipring/testkit'
import { createHasher, createOverlayNode, type OverlayNode } from '@sipring/overlay'
import type { Libp2pOverlay } from '@sipring/overlay-libp2p'
import { node, realClock, stopAll, waitFor } from './helpers.js'

// The production wiring: @sipring/overlay's OverlayNode (SWIM membership + replicated store) on libp2p.
const nets: Libp2pOverlay[] = []
const overlays: Array<OverlayNode<{ contact: string }>> = []
t.teardown(async () => {
  await Promise.all(overlays.map(async o => { await o.stop() }))
  await stopAll(nets)
})

t.test('four overlay nodes on libp2p: join, replicate, survive a crash', async t => {
  const hasher = await createHasher()
  const rng = new SeededRng(7)
  for (let i = 0; i < 4; i++) {
    const net = await node(nets, i === 0 ? {} : { join: nets[0]!.multiaddrs() })
    const o = createOverlayNode<{ contact: string }>({ clock: realClock, rng: rng.fork(`n${i}`), logger: silentLogger, network: net, hasher },
      { vnodes: 16, ringUpdateDelay: 50, membership: { protocolPeriod: 200, pingTimeout: 100 } })
    await o.start()
    if (i > 0) await o.join([nets[0]!.peerId])
    overlays.push(o)
  }
  await waitFor(() => overlays.every(o => o.membership.view().length === 4), 10_000, 'every node sees 4 members')
  await waitFor(() => overlays.every(o => !o.ringPending && o.ring.size === 4), 5000, 'rings built')
  for (let k = 0; k < 20; k++) await overlays[k % 4]!.store.put(`sip:user${k}@example.org`, { contact: `sip:user${k}@192.0.2.${k}` })
  for (let k = 0; k < 20; k++) t.same(await overlays[(k + 1) % 4]!.store.get(`sip:user${k}@example.org`), { contact: `sip:user${k}@192.0.2.${k}` })
  // writes issued from separate callbacks of one event-loop turn (as REGISTER datagrams are) go to each owner in one message
  const o0 = overlays[0]!.store
  const before = o0.stats.putMessages
  const puts = await new Promise<Array<Promise<unknown>>>(resolve => {
    const ps: Array<Promise<unknown>> = []
    for (let k = 0; k < 8; k++) setImmediate(() => { ps.push(o0.put(`sip:batch${k}@example.org`, { contact: `sip:b${k}@192.0.2.99` })); if (ps.length === 8) resolve(ps) })
  })
  await Promise.all(puts)
  const sent = o0.stats.putMessages - before
  t.ok(sent >= 1 && sent <= 3, `8 writes from 8 callbacks: one store.put per remote owner (${sent} messages, at most 3 owners)`)
  for (let k = 0; k < 8; k++) t.same(await overlays[(k + 2) % 4]!.store.get(`sip:batch${k}@example.org`), { contact: `sip:b${k}@192.0.2.99` })
  const held = overlays.map(o => o.store.localKeys().length - (o.store.localKeys().filter(key => key.startsWith('sip:batch')).length))
  t.same(held.reduce((a, b) => a + b, 0), 60, `3 replicas of each of 20 keys (${held.join('/')})`)
  // crash one node: reads still reach a quorum
  await overlays[3]!.stop(); await nets[3]!.stop()
  for (let k = 0; k < 20; k++) t.same(await overlays[k % 3]!.store.get(`sip:user${k}@example.org`), { contact: `sip:user${k}@192.0.2.${k}` }, `key ${k} after the crash`)
  t.equal(nets.slice(0, 3).reduce((n, x) => n + x.stats().badMessages + x.stats().badFrames, 0), 0, 'no message failed the schema check')
})
