/**
 * Proxy core throughput with a fake stack (no transport; test messages are parsed per call): full calls
 * (INVITE → lookup → fork → 180/… → 200, ACK, BYE → 200) per forking mode, with messages per call.
 * The last contact answers, the others are busy (486) — the worst case for sequential forking.
 * Run: cd /work/main && node --import tsx --conditions=sipring-source packages/proxy/test/proxy.bench.ts
 */
import type { ForkingMode } from '@sipring/proxy'
import { ALICE_SRC, binding, FakeTx, invite, setup } from './fakes.js'

const flush = async (): Promise<void> => { await new Promise<void>(resolve => { setImmediate(resolve) }) }

async function bench (fork: number, forking: ForkingMode, calls: number): Promise<void> {
  const { stack, location, proxy } = setup({ forking })
  location.map.set('sip:bob@example.org', Array.from({ length: fork }, (_, i) => binding(`sip:bob@192.0.2.${20 + i}`, { q: 1 - i / 10 })))
  const winner = `sip:bob@192.0.2.${20 + fork - 1}`
  const t0 = process.cpuUsage()
  for (let c = 0; c < calls; c++) {
    let next = stack.sent.length
    const req = invite({ callId: `call-${c}` })
    await proxy.handleRequest(req, new FakeTx(ALICE_SRC, req))
    while (next < stack.sent.length) {
      const end = stack.sent.length
      for (let i = next; i < end; i++) stack.answer(i, 180)
      for (let i = next; i < end; i++) stack.answer(i, stack.sent[i]!.req.uri === winner ? 200 : 486)
      next = end
      await flush()
    }
    await proxy.handleAck(invite({ method: 'ACK', uri: winner, toTag: 'callee0', callId: `call-${c}`, headers: 'Route: <sip:10.0.0.1;lr>' }), ALICE_SRC)
    const bye = invite({ method: 'BYE', uri: winner, toTag: 'callee0', callId: `call-${c}`, headers: 'Route: <sip:10.0.0.1;lr>' })
    await proxy.handleRequest(bye, new FakeTx(ALICE_SRC, bye))
    stack.answer(stack.sent.length - 1, 200)
    if (stack.sent.length > 500) { stack.sent.length = 0; stack.stateless.length = 0 }
  }
  const d = process.cpuUsage(t0); const ms = (d.user + d.system) / 1000 // CPU time of this process
  const s = proxy.stats()
  console.log(`${forking.padEnd(10)} fork=${fork}: ${Math.round(calls / ms * 1000)} calls per CPU-s; per call: in ${(s.messagesIn / calls).toFixed(1)}, out ${(s.messagesOut / calls).toFixed(1)}, branches ${(s.branches / calls).toFixed(1)}, CANCELs ${(s.cancelsSent / calls).toFixed(1)}`)
}

await bench(1, 'parallel', 10_000)
for (const mode of ['parallel', 'q', 'sequential'] as const) await bench(3, mode, 5_000)
