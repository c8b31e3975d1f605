/**
 * Load at the originating node S: the same 50-member ring-all group over 5 super nodes, called once
 * in distributed and once in centralized mode (same seed, same placement): S handles fewer SIP
 * messages when the owners fork.
 */
import t from 'tap'
import { run, until } from './overlay-helpers.js'
import { call, caller, finals, forkCluster, member, node, shutdown, type Member } from './fork-helpers.js'
import type { GroupForking } from '@sipring/proxy'

const u = (n: string): string => `sip:${n}@example.org`
/** `FORK_LOAD=200x8` measures another size (members x nodes); the assertions hold for any. */
const [N, NODES] = (process.env.FORK_LOAD ?? '50x5').split('x').map(Number) as [number, number]

interface Load { proxyIn: number, proxyOut: number, stackIn: number, stackOut: number, branches: number, forks: number, setupMs: number }

async function measure (forking: GroupForking, forkOwnMembers: 'here' | 'replica' = 'here'): Promise<Load> {
  const names = Array.from({ length: N }, (_, i) => `w${i}`)
  const c = await forkCluster(31, NODES, [{ aor: u('big'), members: names.map(u) }], { forking, maxBranches: Math.max(64, N), forkOwnMembers })
  try {
    const ms: Member[] = []
    for (let i = 0; i < N; i++) ms.push(await member(c, names[i]!, c.ids[i % NODES]!))
    const alice = await caller(c, 'n1')
    await run(c, 1000)
    const s = node(c, 'n1')
    const p0 = s.proxy.stats()
    const s0 = s.stack.stats()
    const t0 = c.clock.now()
    await call(alice, u('big'))
    if (await until(c, () => ms.every(m => m.invites.length > 0), 10_000, 5) < 0) throw new Error('not every member rang')
    await ms[7]!.answer(200)
    if (await until(c, () => finals(alice).length > 0 && ms.every((m, i) => i === 7 || m.cancels.length > 0), 10_000, 5) < 0) throw new Error('call did not complete')
    const setupMs = c.clock.now() - t0
    await run(c, 2000) // 487s and ACKs drain
    if (!ms.every(m => m.invites.length === 1)) throw new Error('a member rang twice')
    const p1 = s.proxy.stats()
    const s1 = s.stack.stats()
    return {
      proxyIn: p1.messagesIn - p0.messagesIn,
      proxyOut: p1.messagesOut - p0.messagesOut,
      stackIn: s1.received - s0.received,
      stackOut: s1.sent - s0.sent,
      branches: p1.branches - p0.branches,
      forks: p1.forkRequests - p0.forkRequests,
      setupMs
    }
  } finally {
    await shutdown(c)
  }
}

t.test(`S's message count: distributed < centralized for a ${N}-member group over ${NODES} nodes`, async t => {
  const d = await measure('distributed')
  const cz = await measure('centralized')
  const r = await measure('distributed', 'replica')
  t.comment(`distributed: ${JSON.stringify(d)}`)
  t.comment(`distributed, forkOwnMembers replica: ${JSON.stringify(r)}`)
  t.comment(`centralized: ${JSON.stringify(cz)}`)
  t.comment(`ratio centralized/distributed, SIP messages at S: ${((cz.stackIn + cz.stackOut) / (d.stackIn + d.stackOut)).toFixed(2)} (replica: ${((cz.stackIn + cz.stackOut) / (r.stackIn + r.stackOut)).toFixed(2)})`)
  t.equal(cz.forks, 0, 'centralized sends no fork request')
  t.ok(d.forks >= 1 && d.forks <= NODES - 1, `distributed: one fork per other owner node (${d.forks})`)
  t.ok(d.branches < cz.branches, `branches at S ${d.branches} < ${cz.branches}`)
  t.ok(d.stackIn + d.stackOut < cz.stackIn + cz.stackOut, `SIP messages at S ${d.stackIn + d.stackOut} < ${cz.stackIn + cz.stackOut}`)
  if (N >= 50 && NODES >= 5) t.ok(r.branches < d.branches, `forkOwnMembers replica: fewer branches at S (${r.branches} < ${d.branches})`)
  else t.ok(r.branches <= d.branches, `forkOwnMembers replica: no more branches at S (${r.branches} <= ${d.branches})`)
  t.ok(d.proxyIn + d.proxyOut < cz.proxyIn + cz.proxyOut, `proxy messages at S ${d.proxyIn + d.proxyOut} < ${cz.proxyIn + cz.proxyOut}`)
})
