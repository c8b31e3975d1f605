/**
 * REGISTERs through the overlay in the simulator: N super nodes, U user agents (UDP) spread over
 * them, every UA registers once then refreshes once. Prints overlay requests per REGISTER, the
 * CPU time, and the simulated time until every publish is done.
 *   node --import tsx --conditions=sipring-source packages/node/bench/overlay-register.ts [N] [U] [seed]
 */
import { addNode, cluster, converged, phone, register, responses, run, send, until, type Phone } from '../test/overlay-helpers.js'

/** CPU time of this process in ms (user + system): steadier than the wall clock on a shared machine, and no clock read. */
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }

const N = Number(process.argv[2] ?? 4)
const U = Number(process.argv[3] ?? 1000)
const seed = Number(process.argv[4] ?? 1)
const c = cluster(seed)
await addNode(c, 'n1')
for (let i = 2; i <= N; i++) await addNode(c, `n${i}`, ['n1'])
await until(c, () => converged(c), 60_000)
await run(c, 2000)
const uas: Phone[] = []
for (let i = 0; i < U; i++) uas.push(await phone(c, `u${i}`, `10.${100 + Math.floor(i / 60000)}.${Math.floor(i / 250) % 240}.${(i % 250) + 1}`, `n${(i % N) + 1}`, 'udp'))
for (const round of [1, 2]) {
  const req0 = c.hub.stats.requests
  const t0 = cpuMs(); const s0 = c.clock.now()
  // 100 REGISTERs per simulated 100 ms
  for (let i = 0; i < U; i += 100) {
    for (const ua of uas.slice(i, i + 100)) await send(ua, register(ua))
    await run(c, 100)
  }
  await until(c, () => [...c.nodes.values()].every(n => n.replication!.pending === 0) && uas.every(ua => responses(ua, 'REGISTER').length >= round), 120_000, 50)
  const cpu = cpuMs() - t0
  const ok = uas.filter(ua => responses(ua, 'REGISTER')[round - 1]?.status === 200).length
  const reqs = c.hub.stats.requests - req0
  const st = [...c.nodes.values()].map(n => n.replication!.stats)
  console.log(`round ${round}: ${ok}/${U} REGISTER 200, ${(reqs / U).toFixed(1)} overlay requests per REGISTER (incl. SWIM), ` +
    `sim ${((c.clock.now() - s0) / 1000).toFixed(1)} s, CPU ${(cpu / 1000).toFixed(2)} s (${Math.round(U / (cpu / 1000))} REGISTER per CPU-s), ` +
    `published ${st.reduce((a, s) => a + s.published, 0)}, repairs ${st.reduce((a, s) => a + s.repairs, 0)}, errors ${st.reduce((a, s) => a + s.publishErrors, 0)}`)
}
process.exit(0)
