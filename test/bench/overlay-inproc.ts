// In-process parts of the overlay benchmark (run by test/bench/overlay.ts in a child process with
// the flags they need; or directly):
//
//   node --import tsx --conditions=sipring-source test/bench/overlay-inproc.ts lookup [--n 5000]
//   node --import tsx --conditions=sipring-source --expose-gc test/bench/overlay-inproc.ts ram [--n 50000]
//
// lookup: two OverlayNodes (SWIM + ReplicatedStore, production code) on libp2p TCP over 127.0.0.1 in
//   one process, R = 3 (2 owners with 2 members) and read quorum 2, so every `store.get` is a local
//   read plus one request/response to the other node. Times N sequential `get`s of AOR items shaped
//   like the replicator's (one binding each) issued at node A, with process.hrtime.
// ram: one replica's ReplicatedStore fed N AOR items the way a replica receives them (store.put
//   batches of 500 items, each item JSON-decoded from its wire form, so no string is shared with the
//   sender), heap measured with gc() before and after; then the same values without the store, and
//   the keys alone, to split the bytes. The binding is the one the real registrar stores for a SIPp
//   REGISTER (registrar + LocationStore in process).
// Prints one JSON line on stdout.
import { parseArgs } from 'node:util'
import type { Binding, Clock } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import { LocationStore } from '@sipring/location'
import { createHasher, createOverlayNode, createReplicatedStore, type OverlayMessage, type OverlayNetwork, type WireItem } from '@sipring/overlay'
import { libp2pOverlay } from '@sipring/overlay-libp2p'
import { createRegistrar } from '@sipring/registrar'
import { parseMessage, type SipRequest } from '@sipring/sip'
import { SeededRng } from '@sipring/testkit'

const { positionals, values: args } = parseArgs({ allowPositionals: true, options: { n: { type: 'string' } } })
const what = positionals[0] ?? 'lookup'

const clock: Clock = {
  now: () => Date.now(),
  setTimer (ms, fn) { const t = setTimeout(fn, ms); return { cancel: () => { clearTimeout(t) } } }
}

const PEER_A = '12D3KooWS8eKfjnUtMUwrwDHDWHAXfsgmQmeeFW6gFQV9GzeQicr'

/** The Binding the registrar stores for register.xml sent by SIPp over UDP, with `node` set. */
async function realBinding (user: string, node: string): Promise<Binding> {
  const location = new LocationStore({ clock })
  const registrar = createRegistrar({ location, clock, domains: ['sipring.test'], nodeId: node })
  const text = [
    'REGISTER sip:sipring.test SIP/2.0',
    'Via: SIP/2.0/UDP 127.0.0.1:40123;branch=z9hG4bK-12345-1-0;rport',
    'Max-Forwards: 70',
    `From: <sip:${user}@sipring.test>;tag=12345r1`,
    `To: <sip:${user}@sipring.test>`,
    'Call-ID: 1-12345@127.0.0.1',
    'CSeq: 1 REGISTER',
    `Contact: <sip:${user}@127.0.0.1:5999;transport=UDP>`,
    'Expires: 3600',
    'User-Agent: sipp-sipring-register',
    'Content-Length: 0', '', ''
  ].join('\r\n')
  const req = parseMessage(Buffer.from(text)) as SipRequest
  const res = await registrar.handle(req, { protocol: 'udp', address: '127.0.0.1', port: 40123, local: { protocol: 'udp', address: '127.0.0.1', port: 5060 } })
  if (res.status !== 200) throw new Error(`registrar answered ${res.status}`)
  const b = location.lookup(`sip:${user}@sipring.test`)[0]!
  await location.stop?.()
  return { ...b, node }
}

/**
 * The replicator's item value for one AOR with one binding at node `node`. The binding as the
 * replicator publishes it (packages/node/src/replication.ts `publishedBinding`): without `aor`,
 * `node` (derived by readers from the key and the portion id) and `contactHeader`.
 */
function aorValue (b: Binding, user: string, i: number): unknown {
  const { aor: _aor, node: _node, contactHeader: _ch, ...rest } = { ...b, contact: `sip:${user}@127.0.0.1:5999;transport=UDP`, callId: `${i}-12345@127.0.0.1` }
  return { v: 1, nodes: { [b.node!]: { uri: 'sip:127.0.0.1:5060;transport=tcp', v: [b.updated, i], b: [rest] } } }
}

const user = (i: number): string => `load${String(i).padStart(6, '0')}`

async function lookupBench (n: number): Promise<void> {
  const hasher = await createHasher()
  const nets = [await libp2pOverlay({ clock, logger: silentLogger, listen: ['/ip4/127.0.0.1/tcp/0'] }), await libp2pOverlay({ clock, logger: silentLogger, listen: ['/ip4/127.0.0.1/tcp/0'] })]
  for (const net of nets) await net.start()
  const nodes = nets.map((network, i) => createOverlayNode<unknown>({ clock, rng: new SeededRng(i + 1), logger: silentLogger, network, hasher }))
  for (const o of nodes) await o.start()
  await nets[1]!.dial(nets[0]!.multiaddrs()[0]!)
  await nodes[1]!.join([nets[0]!.self])
  const t0 = Date.now()
  while (nodes.some(o => o.ring.size !== 2)) {
    if (Date.now() - t0 > 15000) throw new Error('the two nodes did not form a ring')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  const b = await realBinding('load000000', nets[1]!.self)
  const keys = Array.from({ length: 1000 }, (_, i) => `aor|sip:${user(i)}@sipring.test`)
  for (let i = 0; i < keys.length; i++) await nodes[1]!.store.put(keys[i]!, aorValue(b, user(i), i), { ttl: 3_600_000 })
  const a = nodes[0]!.store
  for (let i = 0; i < 2000; i++) await a.get(keys[i % keys.length]!) // warm-up (JIT, stream)
  const lat = new Float64Array(n)
  let found = 0
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint()
    const v = await a.get(keys[i % keys.length]!)
    lat[i] = Number(process.hrtime.bigint() - t) / 1e6
    if (v !== undefined) found++
  }
  lat.sort()
  const q = (p: number): number => +lat[Math.min(n - 1, Math.floor(p * n))]!.toFixed(3)
  console.log(JSON.stringify({ part: 'lookup-inproc', n, found, owners: a.owners(keys[0]!).length, readQuorum: a.readQuorum, p50ms: q(0.5), p90ms: q(0.9), p99ms: q(0.99), maxMs: q(1) }))
  for (const o of nodes) await o.stop()
  for (const net of nets) await net.stop()
}

function heap (): number {
  const g = (globalThis as { gc?: () => void }).gc
  if (g === undefined) throw new Error('run with --expose-gc')
  g(); g()
  return process.memoryUsage().heapUsed
}

async function ramBench (n: number): Promise<void> {
  const hasher = await createHasher()
  const b = await realBinding('load000000', PEER_A)
  // the wire form of every item, as a replica receives it (built lazily in batches so the
  // encoded strings do not sit in the heap during the measurement)
  const now = Date.now()
  const wire = (i: number): string => JSON.stringify({ key: `aor|sip:${user(i)}@sipring.test`, version: { updated: now, counter: i, origin: PEER_A }, deleted: false, value: aorValue(b, user(i), i), expires: now + 3_600_000 } satisfies WireItem)
  const sampleBytes = Buffer.byteLength(wire(1))
  const BATCH = 500

  // 1. keys alone
  let h0 = heap()
  let keys: string[] | undefined = Array.from({ length: n }, (_, i) => (JSON.parse(wire(i)) as WireItem).key)
  const keyBytes = (heap() - h0) / n
  keys = undefined
  // 1b. the Binding objects alone, then the whole AOR values (portion wrapper + binding)
  const valueJson = (i: number): string => JSON.stringify(aorValue(b, user(i), i))
  h0 = heap()
  let bs: unknown[] | undefined = Array.from({ length: n }, (_, i) => (JSON.parse(valueJson(i)) as { nodes: Record<string, { b: unknown[] }> }).nodes[PEER_A]!.b[0])
  const bindingBytes = (heap() - h0) / n
  bs = undefined
  h0 = heap()
  let vs: unknown[] | undefined = Array.from({ length: n }, (_, i) => JSON.parse(valueJson(i)))
  const valueBytes = (heap() - h0) / n
  vs = undefined
  // what-if: the value kept as its JSON text (one flat string) instead of an object tree
  h0 = heap()
  let texts: string[] | undefined = Array.from({ length: n }, (_, i) => valueJson(i).slice(0))
  const valueTextBytes = (heap() - h0) / n
  texts = undefined
  // what-if: that text without the fields a reader can derive (aor = the key, node = the portion's
  // id) or does not use (contactHeader, userAgent)
  const slimJson = (i: number): string => {
    const v = JSON.parse(valueJson(i)) as { nodes: Record<string, { b: Array<Record<string, unknown>> }> }
    for (const x of v.nodes[PEER_A]!.b) { delete x.aor; delete x.node; delete x.contactHeader; delete x.userAgent }
    return JSON.stringify(v)
  }
  h0 = heap()
  texts = Array.from({ length: n }, (_, i) => slimJson(i))
  const slimTextBytes = (heap() - h0) / n
  texts = undefined
  // 2. decoded items in an array (values, versions, keys: what JSON.parse allocates)
  h0 = heap()
  let items: WireItem[] | undefined = Array.from({ length: n }, (_, i) => JSON.parse(wire(i)) as WireItem)
  const itemBytes = (heap() - h0) / n
  items = undefined
  // 3. the ReplicatedStore of a replica, fed by store.put messages
  let handler: ((msg: OverlayMessage, from: string) => Promise<OverlayMessage | undefined> | OverlayMessage | undefined) | undefined
  const net = {
    self: 'replica',
    send: async () => { throw new Error('no network in this bench') },
    onRequest: (h: typeof handler) => { handler = h; return () => { handler = undefined } }
  } as unknown as OverlayNetwork
  h0 = heap()
  const store = createReplicatedStore<unknown>({ clock, rng: new SeededRng(1), logger: silentLogger, network: net, hasher }, { antiEntropyInterval: 0, maxLocalItems: 10_000_000 })
  await store.start()
  for (let i = 0; i < n; i += BATCH) {
    const batch: WireItem[] = []
    for (let j = i; j < Math.min(n, i + BATCH); j++) batch.push(JSON.parse(wire(j)) as WireItem)
    const res = await handler!({ type: 'store.put', items: batch }, PEER_A)
    if (res?.type !== 'store.ok' || res.stored !== batch.length) throw new Error(`store refused a batch: ${JSON.stringify(res)}`)
  }
  const storeBytes = (heap() - h0) / n
  const stats = store.getStats()
  const rss = process.memoryUsage().rss
  await store.stop()
  console.log(JSON.stringify({
    part: 'ram', n, storedItems: stats.items, wireBytesPerItem: sampleBytes,
    bytesPerBinding: Math.round(storeBytes), keysOnly: Math.round(keyBytes), bindingObject: Math.round(bindingBytes), aorValue: Math.round(valueBytes),
    aorValueAsJsonText: Math.round(valueTextBytes), valueJsonLength: valueJson(1).length, slimValueAsJsonText: Math.round(slimTextBytes), slimJsonLength: slimJson(1).length, decodedItem: Math.round(itemBytes),
    storeOverhead: Math.round(storeBytes - itemBytes), rssMiB: Math.round(rss / 1048576),
    binding: b
  }))
}

if (what === 'lookup') await lookupBench(Number(args.n ?? 5000))
else if (what === 'ram') await ramBench(Number(args.n ?? 50000))
else throw new Error(`unknown part ${what} (lookup | ram)`)
process.exit(0)
