// Group calls end to end: four real `sipring start --overlay` daemons on loopback, a group of
// MEMBERS members registered round-robin at the four nodes, each member a SIPp UAS on its own port
// (forked legs share one Call-ID, so one SIPp per member). The group is defined with
// `sipring group add` (n1) and the admin API (n4) at the node that forks (S). Per forking mode (S = n1 runs
// `--group-forking centralized`, S = n4 `--group-forking distributed`):
//   a) one member answers (the others only ring): the caller gets exactly one 200 and completes the
//      call (ACK, BYE → 200 at the answering member); every other leg that rang saw CANCEL → 487
//   b) the caller CANCELs while the members ring: caller gets 200 (CANCEL) + 487, every leg cancelled
//   c) a group inside a group that shares two members with it: every member rings exactly once
//   d) a hunt group (--group-member-timeout 1): ring 1 s → CANCEL, busy → next, the third answers
//   e) every member answers 486: the caller gets 486 after every member was tried
// and last, n3 (holding members, forking for nobody) is SIGKILLed: calls in both modes still connect.
// Env: SIPRING_GROUP_MEMBERS (default 10), SIPRING_GROUP_MODES (default both, comma separated),
// SIPRING_ECHO=1 (daemon output), SIPP_KEEP=1 (keep SIPp's files).
import t, { type Test } from 'tap'
import { requireTools } from '../lib/interop.js'
import { tempDir } from '../lib/proc.js'
import { DOMAIN } from '../lib/servers.js'
import { describe, runSipp, scenario, type SippResult } from '../lib/sipp.js'
import { killNode, lookupAll, overlayNodeSpec, ringAgrees, startOverlayNode, waitUntil, type OverlayNode, type OverlayNodeSpec } from '../lib/overlay.js'
import { addGroup, aor, disposeMembers, groupScenario, makeMembers, putGroupApi, registerMembers, startMembers, stopMembers, type Member, type MemberRole } from '../lib/group.js'

const MEMBERS = Number(process.env.SIPRING_GROUP_MEMBERS ?? 10)
type Mode = 'centralized' | 'distributed'
const MODES = (process.env.SIPRING_GROUP_MODES ?? 'centralized,distributed').split(',').map(s => s.trim()).filter((m): m is Mode => m === 'centralized' || m === 'distributed')
const GROUP = 'team'
const OUTER = 'dept'
const HUNT = 'desk'

if (requireTools(t, ['sipp'])) {
  const tmp = tempDir('group-spec')
  const specs: Array<OverlayNodeSpec & { cleanup: () => void }> = []
  const nodes: OverlayNode[] = []
  let members: Member[] = []
  t.teardown(async () => {
    await disposeMembers(members)
    await Promise.all(nodes.map(n => n.server.stop()))
    for (const s of specs) s.cleanup()
    tmp.cleanup()
  })
  // S per mode: n1 forks centrally, n4 distributes the fork over the owners of the member keys
  const forker = (mode: Mode): OverlayNode => mode === 'centralized' ? nodes[0]! : nodes[3]!

  t.test(`four daemons, ${MEMBERS} members registered round-robin, group ${GROUP} added with \`sipring group add\``, async t => {
    for (const n of ['n1', 'n2', 'n3', 'n4']) specs.push(await overlayNodeSpec(n))
    // hunt groups: 1 s per member at both forking nodes (the daemon's --group-member-timeout)
    specs[0]!.extraArgs.push('--group-forking', 'centralized', '--group-member-timeout', '1')
    specs[3]!.extraArgs.push('--group-forking', 'distributed', '--group-member-timeout', '1')
    nodes.push(await startOverlayNode(specs[0]!))
    nodes.push(...await Promise.all(specs.slice(1).map(s => startOverlayNode(s, [nodes[0]!.joinAddr]))))
    const ms = await waitUntil('4 alive members in every /ring', () => ringAgrees(nodes, nodes.map(n => n.id)), 45_000)
    t.comment(`ring of 4 agreed ${ms} ms after the last start`)

    members = await makeMembers('m', MEMBERS, nodes)
    const regs = await registerMembers(members, tmp.dir)
    for (const { node, result } of regs) {
      const n = members.filter(m => m.node === node).length
      t.equal(result.successful, n, `${n} members registered at ${node.spec.name} (${describe(result)})`)
    }
    const failures = await waitUntil('every member visible from both forking nodes', async () => {
      const f = await lookupAll([forker('centralized'), forker('distributed')], members.map(m => m.user), u => members.find(m => m.user === u)!.node.id)
      return f.length === 0 || `${f.length} missing, e.g. ${f.slice(0, 2).join('; ')}`
    }, 15_000, 250)
    t.ok(failures >= 0, 'every member found in the overlay')

    // groups live in each node's accounts: the CLI at n1, the admin API (what the CLI calls) at n4
    const out = await addGroup(forker('centralized'), aor(GROUP), members.map(m => aor(m.user)))
    t.match(out, new RegExp(`added sip:${GROUP}@${DOMAIN.replace(/\./g, '\\.')}\\s+ring-all`), `group added at ${forker('centralized').spec.name} by \`sipring group add\``)
    await putGroupApi(forker('distributed'), aor(GROUP), members.map(m => aor(m.user)))
    t.pass(`group added at ${forker('distributed').spec.name} by POST /groups`)
    // a group inside a group, sharing members with it: [team, m001, m002] (every member rings once)
    for (const mode of ['centralized', 'distributed'] as const) await putGroupApi(forker(mode), aor(OUTER), [aor(GROUP), aor(members[0]!.user), aor(members[1]!.user)])
    // a hunt group of the first three members
    for (const mode of ['centralized', 'distributed'] as const) await putGroupApi(forker(mode), aor(HUNT), members.slice(0, 3).map(m => aor(m.user)), 'hunt')
  })

  /** Members' results of one case, checked: no failure, every leg that rang completed (cancelled/answered), at most `calls` each. */
  function checkLegs (t: Test, legs: Member[], results: Map<string, SippResult>, calls: number, what: string): number {
    let rang = 0
    for (const m of legs) {
      const r = results.get(m.user)!
      rang += r.created
      t.equal(r.failed, 0, `${m.user}@${m.node.spec.name}: no failed leg (${describe(r)})${r.errors !== '' ? `\n${r.errors.slice(0, 800)}` : ''}`)
      t.equal(r.successful, r.created, `${m.user}: every leg that rang was ${what} (${r.created} rang, ${r.successful} completed)`)
      t.ok(r.created <= calls, `${m.user} rang at most once per call (${r.created} for ${calls} calls)`)
    }
    return rang
  }

  async function caseRun (roles: (m: Member) => MemberRole, uac: () => Promise<SippResult>): Promise<{ uac: SippResult, legs: Map<string, SippResult> }> {
    await startMembers(members, roles)
    try {
      const r = await uac()
      return { uac: r, legs: await stopMembers(members) }
    } finally {
      await disposeMembers(members)
    }
  }

  /** S's proxy counters (GET /status). */
  async function proxyStats (n: OverlayNode): Promise<{ branches: number, forkRequests: number, forkFallbacks: number }> {
    const r = await n.server.admin!('/status')
    return { branches: Number(r.body?.proxy?.branches ?? 0), forkRequests: Number(r.body?.proxy?.forkRequests ?? 0), forkFallbacks: Number(r.body?.proxy?.forkFallbacks ?? 0) }
  }

  for (const mode of MODES) {
    t.test(`${mode}: one member answers, the others are cancelled`, async t => {
      const S = forker(mode)
      // the answering member is registered at another node than S
      const answerer = members.find(m => m.node !== S && members.indexOf(m) >= 3) ?? members[0]!
      const calls = 2
      const before = await proxyStats(S)
      const { uac, legs } = await caseRun(m => m === answerer ? 'answer' : 'ring', async () => await runSipp({
        scenario: scenario('uac'), remote: S.udp, transport: 'u1', service: GROUP, calls, rate: 10, limit: 1,
        keys: { domain: DOMAIN }, durationMs: 200, recvTimeoutMs: 8000, timeoutMs: 30_000, extraArgs: ['-rtt_freq', '1']
      }))
      t.comment(`caller at ${S.spec.name} → ${GROUP}: ${describe(uac)}`)
      t.equal(uac.successful, calls, `${calls} group calls connected and hung up (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      t.equal(uac.failed, 0, 'no failed call at the caller')
      t.equal(uac.rtt[2]?.count, calls, 'every BYE answered 200 (by the member that answered)')
      t.equal(uac.deadCallMsgs + uac.outOfCallMsgs, 0, 'no second 200 or stray answer reached the caller')
      const a = legs.get(answerer.user)!
      t.equal(a.successful, calls, `${answerer.user}@${answerer.node.spec.name} answered ${calls} calls (${describe(a)})`)
      t.equal(a.failed, 0)
      const others = members.filter(m => m !== answerer)
      const rang = checkLegs(t, others, legs, calls, 'cancelled (CANCEL → 487 → ACK)')
      t.comment(`${mode}: ${rang} of ${others.length * calls} other legs rang and were cancelled`)
      t.ok(rang > 0, 'other members rang while the answerer was ringing')
      const after = await proxyStats(S)
      const branches = (after.branches - before.branches) / calls
      const forks = (after.forkRequests - before.forkRequests) / calls
      const fallbacks = (after.forkFallbacks - before.forkFallbacks) / calls
      t.comment(`${mode}: S (${S.spec.name}) per call: ${branches} branches, ${forks} fork requests`)
      // + 1: the caller's BYE is a branch too
      if (mode === 'centralized') {
        t.equal(branches, members.length + 1, 'centralized: S forks one branch per member')
        t.equal(forks, 0, 'centralized: no fork request')
      } else {
        // S forks itself only to the members attached to it (forkOwnMembers 'replica', the default:
        // members whose key S owns go to their next owner); every owner gets one fork request
        const own = new Set<string>()
        for (const m of members) {
          if (m.node === S) own.add(m.user)
        }
        t.ok(forks >= 1 && forks <= nodes.length - 1, `distributed: one fork request per owner node (${forks} for ${nodes.length - 1} peers)`)
        t.equal(branches, own.size + forks + fallbacks + 1, `distributed: S's branches = its own ${own.size} members + ${forks} fork requests${fallbacks > 0 ? ` + ${fallbacks} members forked here after an owner failed` : ''} + BYE`)
        t.ok(branches < members.length + 1, 'distributed: fewer branches at S than centralized')
      }
    })

    t.test(`${mode}: the caller cancels while the group rings`, async t => {
      const S = forker(mode)
      const { uac, legs } = await caseRun(() => 'ring', async () => await runSipp({
        scenario: groupScenario('uac-cancel'), remote: S.udp, transport: 'u1', service: GROUP, calls: 1, limit: 1,
        keys: { domain: DOMAIN }, recvTimeoutMs: 8000, timeoutMs: 30_000
      }))
      t.comment(`caller at ${S.spec.name} cancels ${GROUP}: ${describe(uac)}`)
      t.equal(uac.successful, 1, `the CANCEL was answered 200 and the INVITE 487 (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      t.equal(uac.failed, 0)
      const rang = checkLegs(t, members, legs, 1, 'cancelled')
      t.comment(`${mode}: ${rang} of ${members.length} members rang before the caller's CANCEL`)
      t.equal(rang, members.length, 'every member rang before the CANCEL (ring-all; the caller cancels 1 s after the last 180)')
    })

    t.test(`${mode}: a group inside a group sharing members: each member rings once, the caller cancels`, async t => {
      const S = forker(mode)
      const { uac, legs } = await caseRun(() => 'ring', async () => await runSipp({
        scenario: groupScenario('uac-cancel'), remote: S.udp, transport: 'u1', service: OUTER, calls: 1, limit: 1,
        keys: { domain: DOMAIN }, recvTimeoutMs: 8000, timeoutMs: 30_000
      }))
      t.comment(`caller at ${S.spec.name} cancels ${OUTER} = [${GROUP}, ${members[0]!.user}, ${members[1]!.user}]: ${describe(uac)}`)
      t.equal(uac.successful, 1, `CANCEL → 200 + 487 (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      // a member ringing twice would get a second INVITE with the same Call-ID: its SIPp fails that leg
      const rang = checkLegs(t, members, legs, 1, 'cancelled')
      t.equal(rang, members.length, `every member of the nested group rang exactly once (${rang} legs for ${members.length} members)`)
    })

    t.test(`${mode}: hunt group: the first member rings 1 s (--group-member-timeout 1) and is cancelled, the second is busy, the third answers`, async t => {
      const S = forker(mode)
      const [first, second, third] = members as [Member, Member, Member]
      const roles = new Map<Member, MemberRole>([[first, 'ring'], [second, 'busy'], [third, 'answer']])
      const { uac, legs } = await caseRun(m => roles.get(m) ?? 'ring', async () => await runSipp({
        scenario: scenario('uac'), remote: S.udp, transport: 'u1', service: HUNT, calls: 1, limit: 1,
        keys: { domain: DOMAIN }, durationMs: 200, recvTimeoutMs: 8000, timeoutMs: 30_000, extraArgs: ['-rtt_freq', '1']
      }))
      t.comment(`caller at ${S.spec.name} → hunt ${HUNT}: ${describe(uac)}`)
      t.equal(uac.successful, 1, `the third member's answer connected (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      const setup = uac.rtt[1]?.p50 ?? NaN
      t.ok(setup >= 1000 && setup < 4000, `INVITE → 200 took ${setup} ms: 1 s for the first member, then the busy one, then 300 ms of ringing (not the 20 s default)`)
      for (const [m, what] of [[first, 'rang and was cancelled'], [second, 'answered 486'], [third, 'answered']] as const) {
        const r = legs.get(m.user)!
        t.equal(r.created === 1 && r.successful === 1 && r.failed === 0, true, `${m.user}@${m.node.spec.name} ${what} (${describe(r)})`)
      }
      for (const m of members.slice(3)) t.equal(legs.get(m.user)!.created, 0, `${m.user} (not in the hunt group) never rang`)
    })

    t.test(`${mode}: every member busy → the caller gets 486`, async t => {
      const S = forker(mode)
      const { uac, legs } = await caseRun(() => 'busy', async () => await runSipp({
        scenario: groupScenario('uac-busy'), remote: S.udp, transport: 'u1', service: GROUP, calls: 1, limit: 1,
        keys: { domain: DOMAIN }, recvTimeoutMs: 8000, timeoutMs: 30_000
      }))
      t.comment(`caller at ${S.spec.name} → all-busy ${GROUP}: ${describe(uac)}`)
      t.equal(uac.successful, 1, `486 Busy Here reached the caller (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      t.equal(uac.failed, 0)
      for (const m of members) {
        const r = legs.get(m.user)!
        t.equal(r.created === 1 && r.successful === 1 && r.failed === 0, true, `${m.user}@${m.node.spec.name} was tried once and answered 486 (${describe(r)})`)
      }
    })
  }

  // last, as it kills a node: members registered at a dead super node
  t.test('n3 (not a forking node) is SIGKILLed: group calls still connect, every leg that rang is cancelled', async t => {
    const n3 = nodes[2]!
    await killNode(n3)
    const live = members.filter(m => m.node !== n3)
    t.comment(`${members.length - live.length} members were attached at n3`)
    for (const mode of MODES) {
      const S = forker(mode)
      const answerer = live.find(m => m.node !== S && members.indexOf(m) >= 3)!
      const { uac, legs } = await caseRun(m => m === answerer ? 'answer' : 'ring', async () => await runSipp({
        scenario: scenario('uac'), remote: S.udp, transport: 'u1', service: GROUP, calls: 1, limit: 1,
        keys: { domain: DOMAIN }, durationMs: 200, recvTimeoutMs: 10_000, timeoutMs: 40_000, extraArgs: ['-rtt_freq', '1']
      }))
      t.comment(`${mode}: caller at ${S.spec.name} → ${GROUP} with n3 dead: ${describe(uac)}`)
      t.equal(uac.successful, 1, `${mode}: the call connected and hung up (${describe(uac)})\n${uac.errors.slice(0, 1500)}`)
      t.equal(legs.get(answerer.user)!.successful, 1, `${mode}: ${answerer.user}@${answerer.node.spec.name} answered`)
      const others = members.filter(m => m !== answerer)
      const rang = checkLegs(t, others, legs, 1, 'cancelled')
      t.comment(`${mode}: ${rang} of ${others.length} other members rang (members attached at the dead n3 are reached directly over UDP or not at all)`)
    }
  })
}
