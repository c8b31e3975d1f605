import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { OverlayUnreachableError, type OverlayMessage } from '@sipring/overlay'
import type { Libp2pOverlay } from '@sipring/overlay-libp2p'
import { node, stopAll, waitFor } from './helpers.js'

const nodes: Libp2pOverlay[] = []
t.afterEach(async () => { await stopAll(nodes) })
const dir = await mkdtemp(join(tmpdir(), 'sipring-tcp-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

const ask = (n: number): OverlayMessage => ({ type: 'store.ok', stored: n })
function answer (n: Libp2pOverlay, tag: number): void {
  n.onRequest((msg) => msg.type === 'store.ok' ? { type: 'store.ok', stored: msg.stored * 10 + tag } : undefined)
}

for (const [family, host, proto] of [['IPv4', '127.0.0.1', 'ip4'], ['IPv6', '::1', 'ip6']] as const) {
  t.test(`three nodes over TCP on ${host}: join through one, everyone talks to everyone`, async t => {
    const listen = [`/${proto}/${host}/tcp/0`]
    const a = await node(nodes, { listen })
    const b = await node(nodes, { listen, join: a.multiaddrs() })
    const c = await node(nodes, { listen, join: a.multiaddrs() })
    const all = [a, b, c]
    all.forEach((n, i) => { answer(n, i + 1) })
    t.match(a.multiaddrs()[0], new RegExp(`^/${proto}/${host.replace(/\./g, '\\.')}/tcp/\\d+/p2p/${a.peerId}$`), `${family} listen address`)
    await waitFor(() => a.routingTableSize() >= 2, 5000, 'a knows b and c')
    const replies = await Promise.all(all.flatMap((from, i) => all.map(async (to, j) => {
      const r = await from.send(to.peerId, ask(i))
      return r.type === 'store.ok' ? r.stored - (i * 10 + j + 1) : -1
    })))
    t.same(replies, Array(9).fill(0), 'all 9 requests (incl. to self) answered by the right node')
    const opened = b.stats().streamsOpened
    const burst = await Promise.all(Array.from({ length: 200 }, async (_, i) => await b.send(c.peerId, ask(i))))
    t.same(burst.map(r => r.type === 'store.ok' ? r.stored : -1), Array.from({ length: 200 }, (_, i) => i * 10 + 3))
    t.equal(b.stats().streamsOpened, opened, 'the burst reused the open stream')
    t.ok(b.network.load().streams <= 4, `b holds at most 2 streams per peer (${b.network.load().streams})`)
    // c stops: a and b see it as unreachable
    const cid = c.peerId
    await c.stop()
    await t.rejects(b.send(cid, ask(1)), OverlayUnreachableError)
    await t.rejects(a.send(cid, ask(1)), OverlayUnreachableError)
  })
}

t.test('dual-stack node on 0.0.0.0 and ::, dialled on 127.0.0.1 and ::1', async t => {
  const s = await node(nodes, { listen: ['/ip4/0.0.0.0/tcp/0', '/ip6/::/tcp/0'] })
  answer(s, 7)
  const addrs = s.multiaddrs()
  const v4 = addrs.find(a => a.startsWith('/ip4/127.0.0.1/tcp/'))
  const v6 = addrs.find(a => a.startsWith('/ip6/::1/tcp/'))
  t.ok(v4 !== undefined && v6 !== undefined, `loopback addresses of both families announced (${addrs.join(' ')})`)
  const x = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'] })
  const y = await node(nodes, { listen: ['/ip6/::1/tcp/0'] })
  t.equal(await x.dial(v4!), s.peerId)
  t.equal(await y.dial(v6!), s.peerId)
  t.match(await x.send(s.peerId, ask(1)), { stored: 17 })
  t.match(await y.send(s.peerId, ask(2)), { stored: 27 })
  t.match(s.libp2p.getConnections().map(c => c.remoteAddr.toString()).sort().join(' '), /\/ip4\/127\.0\.0\.1\/.*\/ip6\/::1\//, 'one connection per family')
})

t.test('restart with the same key and port: same PeerId, peers reconnect on the next request', async t => {
  const keyPath = join(dir, 'b.key')
  const a = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'] })
  const b1 = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'], keyPath })
  answer(b1, 1)
  await a.dial(b1.multiaddrs()[0]!)
  t.match(await a.send(b1.peerId, ask(5)), { stored: 51 })
  const port = b1.multiaddrs()[0]!.split('/')[4]
  await b1.stop()
  nodes.splice(nodes.indexOf(b1), 1)
  await t.rejects(a.send(b1.peerId, ask(5)), OverlayUnreachableError, 'down')
  const b2 = await node(nodes, { listen: [`/ip4/127.0.0.1/tcp/${port!}`], keyPath })
  answer(b2, 2)
  t.equal(b2.peerId, b1.peerId, 'same PeerId')
  t.match(await a.send(b2.peerId, ask(6)), { stored: 62 }, 'a reaches the restarted node through its peer store')
  t.equal(a.stats().streamsOpened, 2, 'a new stream after the restart')
})

t.test('a peer restarted on another port is found again through the DHT', async t => {
  const keyPath = join(dir, 'moved.key')
  const c = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'] }) // bootstrap
  const a = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'], join: c.multiaddrs() })
  const b1 = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'], join: c.multiaddrs(), keyPath })
  answer(b1, 1)
  await a.dial(b1.multiaddrs()[0]!)
  t.match(await a.send(b1.peerId, ask(1)), { stored: 11 })
  const oldAddr = b1.multiaddrs()[0]!
  await b1.stop()
  nodes.splice(nodes.indexOf(b1), 1)
  const b2 = await node(nodes, { listen: ['/ip4/127.0.0.1/tcp/0'], join: c.multiaddrs(), keyPath })
  answer(b2, 2)
  t.not(b2.multiaddrs()[0], oldAddr, 'new port')
  await waitFor(() => c.routingTableSize() >= 2 && c.peers().includes(b2.peerId), 5000, 'c knows the new b')
  // whatever a may have learned meanwhile (DHT self-queries), make it know only b's old address
  const bid = peerIdFromString(b2.peerId)
  await a.libp2p.hangUp(bid)
  await a.libp2p.peerStore.patch(bid, { multiaddrs: [multiaddr(oldAddr).decapsulateCode(421)] })
  t.match(await a.send(b2.peerId, ask(2)), { stored: 22 }, 'a reached b at its new address')
  t.equal(a.stats().relookups, 1, 'after one fresh lookup')
})
