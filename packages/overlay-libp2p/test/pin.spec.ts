// Peers reached by address (core nodes): pinned multiaddrs are dialled directly, without the peer
// store or a kad-dht lookup, also when the peer was down at the first attempt and after it restarts.
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { OverlayUnreachableError, type OverlayMessage } from '@sipring/overlay'
import type { Libp2pOverlay } from '@sipring/overlay-libp2p'
import { memAddr, node, stopAll } from './helpers.js'

const nodes: Libp2pOverlay[] = []
t.afterEach(async () => { await stopAll(nodes) })

const ping: OverlayMessage = { type: 'app', proto: 'test/pin', body: { hello: 1 } }

t.test('a pinned peer is dialled at its address: down first, then up, then restarted', async t => {
  const a = await node(nodes)
  const key = await generateKeyPair('Ed25519')
  const id = peerIdFromPrivateKey(key).toString()
  const addr = memAddr('core')
  await t.rejects(a.send(id, ping, { timeout: 2000 }), OverlayUnreachableError, 'unknown peer, nobody to ask: unreachable')
  t.same(a.pinAddresses([`${addr}/p2p/${id}`]), [id])
  await t.rejects(a.send(id, ping, { timeout: 2000 }), OverlayUnreachableError, 'pinned but down: unreachable at once')
  const serve = (n: Libp2pOverlay): void => { n.onRequest(msg => msg.type === 'app' && msg.proto === 'test/pin' ? { type: 'app.ok', body: { from: n.peerId } } : undefined) }
  let b = await node(nodes, { privateKey: key, listen: [addr] })
  serve(b)
  t.same(await a.send(id, ping, { timeout: 2000 }), { type: 'app.ok', body: { from: id } }, 'up: reached at the pinned address')
  await b.stop(); nodes.splice(nodes.indexOf(b), 1)
  b = await node(nodes, { privateKey: key, listen: [addr] })
  serve(b)
  t.same(await a.send(id, ping, { timeout: 3000 }), { type: 'app.ok', body: { from: id } }, 'restarted: reached again')
  t.throws(() => a.pinAddresses(['/memory/x']), TypeError, 'a multiaddr without /p2p/ is refused')
  t.throws(() => a.pinAddresses(['not a multiaddr']), TypeError)
})
