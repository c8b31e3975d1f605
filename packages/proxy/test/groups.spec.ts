import t from 'tap'
import { expandGroup, planGroupTargets } from '@sipring/proxy'
import type { GroupLike, GroupSource } from '@sipring/proxy'
import { MemoryLogger } from '@sipring/testkit'
import { ALICE_SRC, binding, FakeTx, invite, setup } from './fakes.js'

const SALES = 'sip:sales@example.org'
const u = (n: string): string => `sip:${n}@example.org`

/** An in-memory group source; `async` answers through a promise like AccountStore does. */
class Groups implements GroupSource {
  readonly map = new Map<string, GroupLike>()
  readonly asked: string[] = []
  constructor (readonly async = true) {}
  add (aor: string, members: string[], policy: GroupLike['policy'] = 'ring-all'): this {
    this.map.set(aor, { members, policy }); return this
  }

  get (aor: string): Promise<GroupLike | undefined> | GroupLike | undefined {
    this.asked.push(aor)
    const g = this.map.get(aor)
    return this.async ? Promise.resolve(g) : g
  }
}

const tick = async (): Promise<void> => { await new Promise(resolve => { setImmediate(resolve) }) }

/** Members m1..mN each with `contacts` bindings on distinct addresses (192.0.2.<10*i+j>). */
function register (location: ReturnType<typeof setup>['location'], names: string[], contacts = 2): void {
  names.forEach((n, i) => {
    const bs = []
    for (let j = 1; j <= contacts; j++) bs.push(binding(`sip:${n}@192.0.2.${10 * (i + 1) + j}`, { aor: u(n) }))
    location.map.set(u(n), bs)
  })
}

function groupSetup (groups: Groups, over: Parameters<typeof setup>[0] = {}): ReturnType<typeof setup> {
  return setup({ groups, ...over })
}

t.test('ring-all: 3 members × 2 contacts → 6 branches; one 200 → the other 5 CANCELled', async t => {
  const groups = new Groups().add(SALES, [u('m1'), u('m2'), u('m3')])
  const { stack, location, proxy } = groupSetup(groups)
  register(location, ['m1', 'm2', 'm3'])
  const req = invite({ uri: SALES })
  const tx = new FakeTx(ALICE_SRC, req)
  await proxy.handleRequest(req, tx)
  t.equal(stack.sent.length, 6, 'six branches')
  t.same(stack.sent.map(s => s.req.uri).sort(), [
    'sip:m1@192.0.2.11', 'sip:m1@192.0.2.12', 'sip:m2@192.0.2.21', 'sip:m2@192.0.2.22', 'sip:m3@192.0.2.31', 'sip:m3@192.0.2.32'
  ])
  t.ok(stack.sent.every(s => s.req.get('to') === req.get('to')), 'To is not changed')
  t.equal(new Set(stack.sent.map(s => s.branch)).size, 6, 'distinct branches')
  for (let i = 0; i < 6; i++) stack.answer(i, 180)
  stack.answer(3, 200)
  t.same(stack.sent.map(s => s.cancels), [1, 1, 1, 0, 1, 1], 'every other branch gets one CANCEL')
  for (const i of [0, 1, 2, 4, 5]) stack.answer(i, 487)
  t.same(tx.statuses, [180, 180, 180, 180, 180, 180, 200], 'only the 2xx is final upstream')
  t.equal(proxy.stats().activeContexts, 0)
  t.same(location.lookups.sort(), [u('m1'), u('m2'), u('m3')], 'the group AOR itself is not looked up')
})

t.test('ring-all: every member busy → caller gets 486', async t => {
  const { stack, location, proxy } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2'), u('m3')]))
  register(location, ['m1', 'm2', 'm3'])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: SALES }), tx)
  t.equal(stack.sent.length, 6)
  for (let i = 0; i < 5; i++) stack.answer(i, 486)
  t.same(tx.statuses, [], 'waits for the last branch')
  stack.answer(5, 486)
  t.same(tx.statuses, [486])
})

t.test('ring-all: caller CANCEL during ringing → every branch cancelled, caller gets 487', async t => {
  const { stack, location, proxy } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2'), u('m3')]))
  register(location, ['m1', 'm2', 'm3'])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: SALES }), tx)
  for (let i = 0; i < 6; i++) stack.answer(i, 180)
  tx.onCancel!(invite({ method: 'CANCEL', uri: SALES }))
  t.same(stack.sent.map(s => s.cancels), [1, 1, 1, 1, 1, 1])
  for (let i = 0; i < 6; i++) stack.answer(i, 487)
  t.equal(tx.last!.status, 487)
  t.equal(tx.statuses.filter(s => s >= 200).length, 1, 'one final response')
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('hunt: member 2 rings only after member 1 answers 486; a member\'s contacts ring together', async t => {
  const { stack, location, proxy } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2'), u('m3')], 'hunt'))
  register(location, ['m1', 'm2', 'm3'])
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: SALES }), tx)
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m1@192.0.2.12'], 'member 1 only, both contacts')
  stack.answer(0, 180)
  stack.answer(0, 486)
  await tick()
  t.equal(stack.sent.length, 2, 'member 2 waits while member 1 still has a ringing contact')
  stack.answer(1, 486)
  await tick()
  t.same(stack.sent.slice(2).map(s => s.req.uri), ['sip:m2@192.0.2.21', 'sip:m2@192.0.2.22'], 'then member 2')
  stack.answer(3, 200)
  await tick()
  t.equal(stack.sent.length, 4, 'member 3 never rings')
  t.equal(stack.sent[2]!.cancels, 1, 'member 2\'s other contact is cancelled')
  t.same(tx.statuses, [180, 200])
})

t.test('hunt: a member that rings past memberTimeout is CANCELled and the next tried', async t => {
  const { stack, location, proxy, clock } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2')], 'hunt'), { groupLimits: { memberTimeout: 5_000 } })
  register(location, ['m1', 'm2'], 1)
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: SALES }), tx)
  stack.answer(0, 180)
  clock.advance(4_999)
  await tick()
  t.equal(stack.sent.length, 1, 'still member 1 at 4.999 s')
  clock.advance(1)
  await tick()
  t.equal(stack.sent[0]!.cancels, 1, 'member 1 cancelled at 5 s')
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m2@192.0.2.21'])
  stack.answer(0, 487)
  stack.answer(1, 486)
  await tick()
  t.same(tx.statuses, [180, 486], 'best final over both members (487 of the timed-out one loses to 486)')
  t.equal(clock.pending, 0, 'timers cleaned up')
})

t.test('hunt: the default per-member timeout is 20 s', async t => {
  const { stack, location, proxy, clock } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2')], 'hunt'))
  register(location, ['m1', 'm2'], 1)
  await proxy.handleRequest(invite({ uri: SALES }), new FakeTx(ALICE_SRC))
  clock.advance(19_999)
  await tick()
  t.equal(stack.sent.length, 1)
  clock.advance(1)
  await tick()
  t.equal(stack.sent.length, 2)
})

t.test('nested groups: expanded; loop A→B→A cut and logged, not an error', async t => {
  const A = u('groupa'); const B = u('groupb')
  const groups = new Groups().add(A, [u('m1'), B]).add(B, [u('m2'), A])
  const { stack, location, proxy, logger } = groupSetup(groups)
  register(location, ['m1', 'm2'], 1)
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: A }), tx)
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m2@192.0.2.21'])
  t.ok(logger.records.some(r => r.msg === 'group loop cut' && r.group === B && r.member === A), 'loop logged')
  t.same(tx.statuses, [], 'no error response')
})

t.test('same member in two nested groups (and a contact shared by two members) rings once', async t => {
  const groups = new Groups()
    .add(SALES, [u('support'), u('billing'), u('m3')])
    .add(u('support'), [u('m1'), u('m2')])
    .add(u('billing'), [u('m2'), u('m1')])
  const { stack, location, proxy } = groupSetup(groups)
  register(location, ['m1', 'm2', 'm3'], 1)
  location.map.get(u('m3'))!.push(binding('sip:m1@192.0.2.11', { aor: u('m3') })) // m3 also registered m1's phone
  await proxy.handleRequest(invite({ uri: SALES }), new FakeTx(ALICE_SRC))
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m2@192.0.2.21', 'sip:m3@192.0.2.31'])
  t.same(location.lookups, [u('m1'), u('m2'), u('m3')], 'each member looked up once')
})

t.test('depth limit: a group nested deeper than maxDepth is skipped', async t => {
  const groups = new Groups()
    .add(u('g1'), [u('m1'), u('g2')])
    .add(u('g2'), [u('m2'), u('g3')])
    .add(u('g3'), [u('m3'), u('g4')])
    .add(u('g4'), [u('m4')])
  const { stack, location, proxy, logger } = groupSetup(groups)
  register(location, ['m1', 'm2', 'm3', 'm4'], 1)
  await proxy.handleRequest(invite({ uri: u('g1') }), new FakeTx(ALICE_SRC))
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m2@192.0.2.21', 'sip:m3@192.0.2.31'], 'g4 (level 4) not expanded')
  t.ok(logger.records.some(r => r.msg === 'nested group too deep: skipped' && r.member === u('g4')))
  const two = groupSetup(groups, { groupLimits: { maxDepth: 4 } })
  register(two.location, ['m1', 'm2', 'm3', 'm4'], 1)
  await two.proxy.handleRequest(invite({ uri: u('g1') }), new FakeTx(ALICE_SRC))
  t.equal(two.stack.sent.length, 4, 'maxDepth 4 reaches m4')
})

t.test('branch cap: members that do not fit are dropped with a log line; none fits → 480', async t => {
  const groups = new Groups().add(SALES, [u('m1'), u('m2'), u('m3')])
  const { stack, location, proxy, logger } = groupSetup(groups, { groupLimits: { maxBranches: 3 } })
  register(location, ['m1', 'm2'], 2)
  location.map.set(u('m3'), [binding('sip:m3@192.0.2.31', { aor: u('m3') })])
  await proxy.handleRequest(invite({ uri: SALES }), new FakeTx(ALICE_SRC))
  t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11', 'sip:m1@192.0.2.12', 'sip:m3@192.0.2.31'], 'm2 (2 contacts) does not fit, m3 does')
  const rec = logger.records.find(r => r.msg === 'group call: members dropped (branch limit)')
  t.same(rec?.dropped, [u('m2')])

  const one = groupSetup(groups, { groupLimits: { maxBranches: 1 } })
  register(one.location, ['m1', 'm2', 'm3'], 2)
  const tx = new FakeTx(ALICE_SRC)
  await one.proxy.handleRequest(invite({ uri: SALES }), tx)
  t.equal(one.stack.sent.length, 0)
  t.same(tx.statuses, [480])
})

t.test('the default branch cap is 64', async t => {
  const names = Array.from({ length: 40 }, (_, i) => `m${i}`)
  const groups = new Groups().add(SALES, names.map(u))
  const { stack, location, proxy } = groupSetup(groups)
  names.forEach((n, i) => { location.map.set(u(n), [binding(`sip:${n}@10.1.${i}.1`, { aor: u(n) }), binding(`sip:${n}@10.1.${i}.2`, { aor: u(n) })]) })
  await proxy.handleRequest(invite({ uri: SALES }), new FakeTx(ALICE_SRC))
  t.equal(stack.sent.length, 64, '32 members × 2 contacts')
})

t.test('empty or unreachable group → 480; members without bindings are skipped', async t => {
  const groups = new Groups().add(SALES, []).add(u('nobody'), [u('x1'), u('x2')]).add(u('some'), [u('x1'), u('m1')])
  {
    const { stack, proxy } = groupSetup(groups)
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite({ uri: SALES }), tx)
    t.same(tx.statuses, [480], 'empty group')
    t.equal(stack.sent.length, 0)
    t.equal(proxy.stats().activeContexts, 0)
  }
  {
    const { proxy } = groupSetup(groups)
    const tx = new FakeTx(ALICE_SRC)
    await proxy.handleRequest(invite({ uri: u('nobody') }), tx)
    t.same(tx.statuses, [480], 'no member registered')
  }
  {
    const { stack, location, proxy } = groupSetup(groups)
    register(location, ['m1'], 1)
    await proxy.handleRequest(invite({ uri: u('some') }), new FakeTx(ALICE_SRC))
    t.same(stack.sent.map(s => s.req.uri), ['sip:m1@192.0.2.11'], 'x1 skipped')
  }
})

t.test('a non-group AOR is proxied as before; a failing group source means "not a group"', async t => {
  const groups = new Groups(false).add(SALES, [u('m1')])
  const { stack, location, proxy } = groupSetup(groups)
  location.map.set(u('bob'), [binding('sip:bob@192.0.2.99')])
  await proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.same(stack.sent.map(s => s.req.uri), ['sip:bob@192.0.2.99'])
  t.same(groups.asked, [u('bob')])

  const failing: GroupSource = { get: () => { throw new Error('db down') } }
  const f = setup({ groups: failing })
  f.location.map.set(u('bob'), [binding('sip:bob@192.0.2.99')])
  await f.proxy.handleRequest(invite(), new FakeTx(ALICE_SRC))
  t.equal(f.stack.sent.length, 1)
})

t.test('group members reached through their attachment node keep the member AOR as Request-URI', async t => {
  const groups = new Groups().add(SALES, [u('m1'), u('m2')])
  const { stack, location, proxy } = groupSetup(groups, { nodeId: 'S', nodeRoute: (id: string) => `sip:${id === 'N2' ? '10.0.0.2' : '10.0.0.3'}:5060` })
  location.map.set(u('m1'), [binding('sip:m1@192.168.1.5', { aor: u('m1'), node: 'N2' })])
  location.map.set(u('m2'), [binding('sip:m2@192.168.1.6', { aor: u('m2'), node: 'N2' })])
  await proxy.handleRequest(invite({ uri: SALES }), new FakeTx(ALICE_SRC))
  t.same(stack.sent.map(s => s.req.uri), [u('m1'), u('m2')])
  t.same(stack.sent.map(s => s.req.getAll('route')[0]), ['<sip:10.0.0.2:5060;lr;sr=local>', '<sip:10.0.0.2:5060;lr;sr=local>'])
})

t.test('MESSAGE to a group is forked too', async t => {
  const { stack, location, proxy } = groupSetup(new Groups().add(SALES, [u('m1'), u('m2')]))
  register(location, ['m1', 'm2'], 1)
  const tx = new FakeTx(ALICE_SRC)
  await proxy.handleRequest(invite({ uri: SALES, method: 'MESSAGE' }), tx)
  t.equal(stack.sent.length, 2)
  stack.answer(0, 404)
  stack.answer(1, 202)
  t.same(tx.statuses, [202])
})

t.test('invalid group limits are rejected at creation', async t => {
  t.throws(() => setup({ groupLimits: { maxDepth: 0 } }), RangeError)
  t.throws(() => setup({ groupLimits: { maxBranches: 1.5 } }), RangeError)
  t.throws(() => setup({ groupLimits: { memberTimeout: -1 } }), RangeError)
  t.throws(() => setup({ groupLimits: { maxVisited: Number.NaN } }), RangeError)
})

t.test('expandGroup: steps per policy, nested ring-all is one hunt step, duplicates and loops reported', async t => {
  const groups = new Groups()
    .add('H', ['a', 'R', 'b', 'H2'], 'hunt')
    .add('R', ['c', 'a', 'd'])
    .add('H2', ['e', 'H'], 'hunt')
  const log = new MemoryLogger()
  const x = await expandGroup('H', groups, { maxDepth: 3, maxVisited: 100 }, a => a, log)
  t.same(x?.steps, [['a'], ['c', 'd'], ['b'], ['e']])
  t.same(x?.duplicates, ['a'])
  t.same(x?.loops, [['H2', 'H']])
  t.equal(x?.policy, 'hunt')
  t.equal(await expandGroup('a', groups, { maxDepth: 3, maxVisited: 100 }), undefined, 'not a group')

  const r = await expandGroup('R2', new Groups().add('R2', ['x', 'H']).add('H', ['y', 'z'], 'hunt'), { maxDepth: 3, maxVisited: 100 })
  t.same(r?.steps, [['x', 'y', 'z']], 'ring-all flattens a nested hunt group')

  const big = new Groups().add('G', Array.from({ length: 10 }, (_, i) => `m${i}`))
  const cut = await expandGroup('G', big, { maxDepth: 3, maxVisited: 4 }, a => a, log)
  t.equal(cut?.truncated, true)
  t.same(cut?.steps, [['m0', 'm1', 'm2', 'm3']])

  const bad = await expandGroup('G', new Groups().add('G', ['ok', 'bad']), { maxDepth: 3, maxVisited: 100 }, a => { if (a === 'bad') throw new Error('x'); return a }, log)
  t.same(bad?.steps, [['ok']], 'a member that does not normalize is skipped')
})

t.test('planGroupTargets: dedupe by key across members, whole members dropped at the cap', async t => {
  const targets: Record<string, string[]> = { a: ['1', '2'], b: ['2', '3'], c: ['4', '5'], d: [], e: ['1'] }
  const p = await planGroupTargets([['a', 'b'], ['c', 'd', 'e']], m => targets[m]!, x => x, 4)
  t.same(p.steps, [['1', '2', '3'], []].filter(s => s.length > 0))
  t.same(p.dropped, ['c'])
  t.same(p.unreachable, ['d'], 'e (only a duplicate) is not unreachable')
  t.equal(p.duplicateTargets, 2)
})
