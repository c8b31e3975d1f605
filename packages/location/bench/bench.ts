/**
 * Location store benchmark (not a test). From the repo root:
 *   node --expose-gc --import tsx --conditions=sipring-source packages/location/bench/bench.ts [N]
 * Prints applyRegister/s (memory only and with memory-level write-through), lookup/s, and heap
 * bytes per binding for N single-contact AORs (default 100,000).
 */
import { MemoryLevel } from 'memory-level'
import { SimClock } from '@sipring/testkit'
import { LocationStore, type ContactUpdate } from '@sipring/location'

/** CPU time of this process in ms (user + system): steadier than the wall clock on a shared machine, and no clock read. */
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000 }

const N = Number(process.argv[2] ?? 100_000)
const gc = (globalThis as { gc?: () => void }).gc

function contact (i: number): ContactUpdate {
  const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`
  return {
    contact: `sip:user${i}@${ip}:5060;transport=tcp;ob`,
    contactHeader: `<sip:user${i}@${ip}:5060;transport=tcp;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-${String(i).padStart(12, '0')}>";reg-id=1`,
    instance: `<urn:uuid:00000000-0000-1000-8000-${String(i).padStart(12, '0')}>`,
    regId: 1,
    expires: 3600,
    received: { protocol: 'tcp', address: ip, port: 40000 + (i % 20000), connectionId: `conn-${i}` },
    node: 'node-a',
    userAgent: 'Softphone/1.2.3'
  }
}

function heap (): number { gc?.(); gc?.(); return process.memoryUsage().heapUsed }

async function run (withDb: boolean): Promise<void> {
  const clock = new SimClock()
  const db = withDb ? new MemoryLevel<string, any>() : undefined
  const store = new LocationStore({ clock, db, limits: { maxAors: N * 2 } })
  await store.start()
  const updates = Array.from({ length: N }, (_, i) => contact(i))
  const aors = Array.from({ length: N }, (_, i) => `sip:user${i}@example.org`)
  const h0 = heap()
  let t0 = cpuMs()
  for (let i = 0; i < N; i++) store.applyRegister(aors[i]!, { contacts: [updates[i]!], callId: `call-${i}`, cseq: 1 })
  let dt = cpuMs() - t0
  const h1 = heap()
  console.log(`${withDb ? 'memory-level' : 'memory only '}: insert  ${Math.round(N / dt * 1000).toLocaleString()} applyRegister per CPU-s`)
  if (!withDb) console.log(`heap per binding (incl. AOR string + index): ${Math.round((h1 - h0) / N)} bytes (N=${N})`)
  t0 = cpuMs()
  for (let i = 0; i < N; i++) store.applyRegister(aors[i]!, { contacts: [updates[i]!], callId: `call-${i}`, cseq: 2 })
  dt = cpuMs() - t0
  console.log(`${withDb ? 'memory-level' : 'memory only '}: refresh ${Math.round(N / dt * 1000).toLocaleString()} applyRegister per CPU-s`)
  if (withDb) {
    t0 = cpuMs()
    await store.flush()
    console.log(`memory-level: flush of ${N} coalesced writes ${Math.round(cpuMs() - t0)} CPU ms`)
  } else {
    t0 = cpuMs()
    let n = 0
    for (let r = 0; r < 5; r++) for (let i = 0; i < N; i++) n += store.lookup(aors[i]!).length
    dt = cpuMs() - t0
    console.log(`memory only : lookup  ${Math.round(5 * N / dt * 1000).toLocaleString()} per CPU-s (${n} found)`)
    let expired = 0
    store.on('expire', () => { expired++ })
    clock.advance(3_598_000)
    t0 = cpuMs()
    clock.advance(4_000) // every binding expires within these seconds
    console.log(`memory only : sweep of ${expired} expired bindings ${Math.round(cpuMs() - t0)} CPU ms`)
  }
  await store.stop()
  if (withDb) {
    t0 = cpuMs()
    const s2 = new LocationStore({ clock, db, limits: { maxAors: N * 2 } })
    await s2.start()
    console.log(`memory-level: reload of ${s2.stats().contacts} bindings ${Math.round(cpuMs() - t0)} CPU ms`)
    await s2.stop()
  }
}

if (gc === undefined) console.log('(run with --expose-gc for the heap figure)')
await run(false)
await run(true)
