// Replica-side CPU per AOR item accepted from a peer (not a test): new AORs, then two rounds of refreshes,
// 20 items per `store.put` as a coordinator batches them; n1's portion written by n1, as a REGISTER at n1 makes it.
//
//   node --import tsx --conditions=sipring-source test/bench/overlay-replica.ts
//
// Four super nodes of the node package's tests (SimClock, in-memory network, memory-level), no libp2p.
import { fourNodes, shutdown } from '../../packages/node/test/overlay-helpers.js'
import { aorKey } from '../../packages/node/src/index.js'
const c = await fourNodes(5, { records: false })
const st = c.nodes.get('n2')!.overlay!.store as unknown as { acceptItems: (items: unknown[], from?: string) => number, getStats: () => Record<string, number> }
const now = c.clock.now()
const id = 'n1'
const item = (i: number, gen: number) => ({
  key: aorKey(`sip:u${i}@example.org`), version: { updated: now + gen, counter: i, origin: id }, deleted: false, expires: now + 3_600_000,
  json: JSON.stringify({ v: 1, nodes: { [id]: { uri: 'sip:10.0.0.1:5060', v: [now + gen, i], b: [{ contact: `sip:u${i}@127.0.0.1:9000;transport=udp`, expires: now + 3_600_000, q: 1, callId: `u${i}-9000@127.0.0.1`, cseq: 1 + gen, path: [], received: { protocol: 'udp', address: '127.0.0.1', port: 9000 }, userAgent: 'sipp-sipring-register', updated: now }] } } })
})
const N = 20000
for (const [label, gen] of [['new', 0], ['refresh', 1], ['refresh', 2]] as const) {
  const items = Array.from({ length: N }, (_, i) => item(i, gen))
  const c0 = process.cpuUsage()
  let n = 0
  for (let i = 0; i < N; i += 20) n += st.acceptItems(items.slice(i, i + 20), id)
  const cu = process.cpuUsage(c0)
  console.log(label, n, 'accepted', ((cu.user + cu.system) / N).toFixed(2), 'CPU-µs per item')
}
await shutdown(c)
