/**
 * In a closed overlay every libp2p protocol is gated by admission, not only the overlay stream:
 * an unenrolled peer can neither query the kad-dht, nor ping, nor identify, nor open the overlay
 * stream, never enters a routing table, and is disconnected; enrolled peers use all of it.
 * Real libp2p nodes over the in-process memory transport.
 */
import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey, Stream } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { ADMIT_PROTOCOL, DHT_PROTOCOL, OVERLAY_PROTOCOL, encodePublicKey, gateService, issueCredential, type AdmissionGate, type GateStats, type Libp2pOverlay } from '@sipring/overlay-libp2p'
import { MemoryLogger, SimClock } from '@sipring/testkit'
import { node, sleep, stopAll, waitFor } from './helpers.js'

const nodes: Libp2pOverlay[] = []
t.afterEach(async () => { await stopAll(nodes) })

const DAY = 86_400_000
let core: PrivateKey
t.before(async () => { core = await generateKeyPair('Ed25519') })

async function enrolled (): Promise<{ privateKey: PrivateKey, admission: { core: string, credential: string, timeout: number } }> {
  const privateKey = await generateKeyPair('Ed25519')
  const now = Date.now()
  const cred = await issueCredential(core, peerIdFromPrivateKey(privateKey).toString(), now - DAY, now + DAY)
  return { privateKey, admission: { core: encodePublicKey(core.publicKey), credential: JSON.stringify(cred), timeout: 1000 } }
}

type Pinger = { ping: (peer: ReturnType<typeof peerIdFromString>, o?: { signal?: AbortSignal }) => Promise<number> }
const pinger = (n: Libp2pOverlay): Pinger => n.libp2p.services.ping as Pinger

/** Opens `protocol` on `to`, writes `bytes`, and collects what comes back for `ms`: the bytes received, or why it failed. */
async function probe (from: Libp2pOverlay, to: Libp2pOverlay, protocol: string, bytes: Uint8Array, ms = 400): Promise<{ received: number, error?: string }> {
  let stream: Stream
  try {
    stream = await from.libp2p.dialProtocol(multiaddr(to.multiaddrs()[0]!), protocol, { signal: AbortSignal.timeout(2000) })
  } catch (err) {
    return { received: 0, error: (err as Error).message }
  }
  let received = 0
  stream.addEventListener('message', (e) => { received += e.data.byteLength })
  try { stream.send(bytes) } catch (err) { return { received, error: (err as Error).message } }
  await sleep(ms)
  return { received }
}

t.test('gateService: handlers, topologies and outgoing streams of a service wait for admission', async t => {
  const clock = new SimClock(0)
  const admitted = new Set<string>(['good'])
  const waits = new Map<string, { resolve: () => void, reject: (e: Error) => void }>()
  const gate: AdmissionGate = {
    isAdmitted: p => admitted.has(p),
    waitAdmitted: async (p, signal) => await new Promise<void>((resolve, reject) => {
      waits.set(p, { resolve: () => { admitted.add(p); resolve() }, reject })
      signal?.addEventListener('abort', () => { reject(new Error('aborted')) })
    })
  }
  const counts: GateStats = { unadmittedStreams: 0, unadmittedDials: 0 }
  const handlers = new Map<string, (s: unknown, c: unknown) => Promise<void>>()
  const topologies: Array<{ onConnect?: (p: unknown, c: unknown) => Promise<void> }> = []
  const conn = (peer: string): any => ({ remotePeer: { toString: () => peer }, newStream: async (proto: string) => ({ proto, peer }) })
  const components = {
    registrar: {
      handle: async (p: string, h: (s: unknown, c: unknown) => Promise<void>) => { handlers.set(p, h) },
      register: async (_p: string, topo: any) => { topologies.push(topo); return 'id' },
      getProtocols: () => [...handlers.keys()]
    },
    connectionManager: { openConnection: async (peer: string) => conn(peer) },
    other: 42
  }
  const served: string[] = []
  const connected: string[] = []
  const service = gateService((c: typeof components) => ({
    async start () {
      await c.registrar.handle('/p/1', async (_s, cn: any) => { served.push(cn.remotePeer.toString()) })
      await c.registrar.register('/p/1', { onConnect: async (p: any) => { connected.push(p.toString()) } })
    },
    open: async (peer: string) => await (c.connectionManager as any).openStream(peer, '/p/1', {}),
    c
  }), { gate: () => gate, clock, logger: new MemoryLogger(), count: w => { counts[w]++ }, timeout: () => 1000 })(components)
  await service.start()
  t.equal(service.c.other, 42, 'other components pass through')
  t.same(service.c.registrar.getProtocols(), ['/p/1'], 'other registrar methods pass through (bound)')
  const h = handlers.get('/p/1')!
  const aborted: string[] = []
  const stream = (who: string): any => ({ abort: () => { aborted.push(who) } })

  await h(stream('good'), conn('good'))
  t.same(served, ['good'], 'an admitted peer is served at once')
  // a peer being admitted: served once the exchange succeeds
  const pending = h(stream('late'), conn('late'))
  await Promise.resolve()
  t.same(served, ['good'], 'not before admission')
  waits.get('late')!.resolve()
  await pending
  t.same(served, ['good', 'late'], 'served after admission')
  // an unenrolled peer: refused, unread
  const bad = h(stream('bad'), conn('bad'))
  await Promise.resolve()
  waits.get('bad')!.reject(new Error('ERR_WRONG_CA'))
  await bad
  t.same(served, ['good', 'late'], 'never served')
  t.same(aborted, ['bad'], 'its stream aborted')
  // a peer that never finishes admission: refused after the timeout
  const silent = h(stream('silent'), conn('silent'))
  clock.advance(1000)
  await silent
  t.same(aborted, ['bad', 'silent'])
  t.equal(counts.unadmittedStreams, 2)

  // topologies (kad-dht's routing table) hear of admitted peers only
  const topo = topologies[0]!
  await topo.onConnect!({ toString: () => 'good' }, conn('good'))
  const tb = topo.onConnect!({ toString: () => 'bad2' }, conn('bad2'))
  await Promise.resolve()
  waits.get('bad2')!.reject(new Error('no'))
  await tb
  t.same(connected, ['good'])
  // outgoing streams (kad-dht queries, ping) only to admitted peers
  t.match(await service.open('good'), { proto: '/p/1', peer: 'good' })
  const ob = service.open('bad3')
  await new Promise(resolve => setImmediate(resolve))
  waits.get('bad3')!.reject(new Error('no'))
  await t.rejects(ob, /not admitted/)
  t.equal(counts.unadmittedDials, 1)
  // no gate (open overlay): everything passes
  const open = gateService((c: typeof components) => c, { gate: () => undefined, clock, logger: new MemoryLogger(), count: () => {}, timeout: () => 1000 })(components)
  await open.registrar.handle('/q/1', async (_s, cn: any) => { served.push(`open:${String(cn.remotePeer.toString())}`) })
  await handlers.get('/q/1')!(stream('x'), conn('x'))
  t.ok(served.includes('open:x'), 'without admission (open overlay) every peer is served')
})

t.test('the enrolled node uses kad-dht, ping and the overlay; an unenrolled one can\'t and is disconnected', async t => {
  const a = await node(nodes, await enrolled())
  const b = await node(nodes, await enrolled())
  const c = await node(nodes, await enrolled())
  a.onRequest(() => ({ type: 'store.ok', stored: 1 }))
  await b.join(a.multiaddrs())
  await c.join(a.multiaddrs())
  await waitFor(() => a.routingTableSize() >= 2 && b.routingTableSize() >= 1 && c.routingTableSize() >= 1, 5000, 'routing tables filled')

  // enrolled: kad-dht finds c for b, ping answers, overlay requests are served
  const cid = peerIdFromString(c.peerId)
  await b.libp2p.hangUp(cid).catch(() => {})
  await b.libp2p.peerStore.delete(cid).catch(() => {})
  const found = await b.findPeer(c.peerId)
  t.ok(found.length > 0, `enrolled b finds c through a's DHT (${found.join(', ')})`)
  t.ok(await pinger(b).ping(peerIdFromString(a.peerId)) >= 0, 'enrolled b pings a')
  t.match(await b.send(a.peerId, { type: 'store.get', key: 'k' }), { type: 'store.ok' }, 'enrolled b is served on the overlay')

  // unenrolled: same calls all fail
  const u = await node(nodes)
  await u.dial(a.multiaddrs()[0]!).catch(() => '')
  await t.rejects(u.findPeer(c.peerId, { signal: AbortSignal.timeout(1000) }), 'unenrolled u cannot query the DHT')
  await t.rejects(pinger(u).ping(peerIdFromString(a.peerId), { signal: AbortSignal.timeout(3000) }), 'nor ping')
  await t.rejects(u.send(a.peerId, { type: 'store.get', key: 'k' }, { timeout: 3000 }), { code: 'ERR_UNREACHABLE' }, 'nor open the overlay stream')
  await waitFor(() => a.libp2p.getConnections(peerIdFromString(u.peerId)).length === 0, 3000, 'u disconnected')
  t.notOk(a.admission!.isAdmitted(u.peerId))
  const inRt = async (n: Libp2pOverlay, id: string): Promise<boolean> => {
    const rt = (n.libp2p.services.dht as unknown as { routingTable: { find: (p: unknown) => Promise<unknown> } }).routingTable
    return (await rt.find(peerIdFromString(id))) !== undefined
  }
  t.notOk(await inRt(a, u.peerId), 'u never entered a\'s routing table')
  t.ok(await inRt(a, b.peerId) && await inRt(a, c.peerId), 'b and c are in it')
  const up = await u.libp2p.peerStore.get(peerIdFromString(a.peerId)).catch(() => undefined)
  t.notOk(up?.protocols.includes(DHT_PROTOCOL) ?? false, 'u did not even learn a\'s protocols through identify')
  t.ok(u.routingTableSize() === 0, 'u\'s routing table is empty')
  // refused for refuseFor: it cannot come back at once
  await t.rejects(u.dial(a.multiaddrs()[0]!), 'u cannot reconnect at once')
  // the enrolled ones keep working
  t.match(await c.send(a.peerId, { type: 'store.get', key: 'k2' }), { type: 'store.ok' })
  t.ok(a.stats().unadmittedStreams + a.stats().unadmitted >= 1, `a counted refused streams (${a.stats().unadmittedStreams}, ${a.stats().unadmitted})`)
})

t.test('every protocol but /sipring/admit refuses an unadmitted peer\'s stream unread', async t => {
  const a = await node(nodes, await enrolled())
  a.onRequest(() => ({ type: 'store.ok', stored: 1 }))
  const protocols = a.libp2p.getProtocols()
  t.ok(protocols.includes(DHT_PROTOCOL) && protocols.includes(OVERLAY_PROTOCOL) && protocols.includes(ADMIT_PROTOCOL), protocols.join(' '))
  t.ok(protocols.some(p => p.includes('/id/')) && protocols.some(p => p.includes('/ping/')), 'identify and ping are served')
  // an open node's ping gets an echo: the probe can see a served stream
  const o1 = await node(nodes)
  const o2 = await node(nodes)
  const pingProto = protocols.find(p => p.includes('/ping/'))!
  t.equal((await probe(o1, o2, pingProto, new Uint8Array(32).fill(7))).received, 32, 'control: an open node echoes a ping')
  for (const proto of protocols.filter(p => p !== ADMIT_PROTOCOL)) {
    const u = await node(nodes) // a fresh unenrolled peer per protocol (a refused one cannot reconnect)
    const r = await probe(u, a, proto, new Uint8Array(32).fill(7))
    t.equal(r.received, 0, `${proto}: nothing served to the unadmitted peer${r.error !== undefined ? ` (${r.error.slice(0, 60)})` : ''}`)
    await waitFor(() => a.libp2p.getConnections(peerIdFromString(u.peerId)).length === 0, 3000, `${proto}: disconnected`)
  }
  t.equal(a.stats().admitted, 0)
  t.ok(a.stats().admissionFailures >= protocols.length - 1, `one failed admission per peer (${a.stats().admissionFailures})`)
})

t.test('an enrolled node dialling an unenrolled one closes the connection at once; the peer never enters its routing table', async t => {
  const a = await node(nodes, await enrolled())
  const u = await node(nodes)
  // a dials u: a runs the exchange at once (it is the dialler), u fails it, a closes
  await a.dial(u.multiaddrs()[0]!).catch(() => '')
  await waitFor(() => a.libp2p.getConnections(peerIdFromString(u.peerId)).length === 0, 3000, 'closed')
  t.equal(a.routingTableSize(), 0, 'u never entered a\'s routing table')
  t.ok(a.stats().admissionFailures >= 1)
})
