/**
 * Distributed group forking in the proxy, with a fake stack: fork requests per owner node, the trust
 * rule for `Sipring-Fork`, the branch budget, re-resolution of a failed owner and the fork helpers.
 */
import t from 'tap'
import { chunkMembers, formatForkHeader, parseForkMembers, splitBudget, partitionByOwner, FORK_HEADER } from '@sipring/proxy'
import type { GroupLike, GroupSource, ProxyOptions } from '@sipring/proxy'
import type { Source } from '@sipring/interface'
import { aorOf } from '@sipring/sip'
import { ALICE_SRC, binding, FakeTx, invite, PROXY_TCP, setup } from './fakes.js'

const u = (n: string): string => `sip:${n}@example.org`
const GROUP = u('sales')

class Groups implements GroupSource {
  readonly map = new Map<string, GroupLike>()
  add (aor: string, members: string[], policy: GroupLike['policy'] = 'ring-all'): this { this.map.set(aor, { members, policy }); return this }
  get (aor: string): GroupLike | undefined { return this.map.get(aor) }
}

const nodeUri = (id: string): string => `sip:10.0.0.${id.slice(1)}:5060;transport=tcp`
const PEER_SRC: Source = { protocol: 'tcp', address: '10.0.0.2', port: 40001, connectionId: 'tcp:1', local: PROXY_TCP }

/** Proxy `S` (node n1) with owners per member (`owners[m]` = ring order). */
function forkSetup (groups: Groups, owners: Record<string, string[]>, over: Partial<Omit<ProxyOptions, 'stack'>> = {}): ReturnType<typeof setup> {
  const s = setup({
    groups,
    nodeId: 'n1',
    groupForking: 'distributed',
    owners: aor => owners[aor] ?? [],
    nodeRoute: id => id === 'n9' ? undefined : nodeUri(id),
    forkPeer: src => src.address.startsWith('10.0.0.'),
    ...over
  })
  return s
}

const forkList = (r: { req: { get: (n: string) => string | undefined } }): string | undefined => r.req.get(FORK_HEADER)

t.test('helpers: header format/parse, chunks, budget, partition', async t => {
  t.equal(formatForkHeader([u('a'), u('b')]), '<sip:a@example.org>, <sip:b@example.org>')
  const parsed = parseForkMembers(['<sip:a@example.org>, <sip:B@Example.org>', '<sip:a@example.org>', 'garbage<', '<sip:c@example.org>'], x => aorOf(x), 10)
  t.same(parsed.members, [u('a'), 'sip:B@example.org', u('c')], 'normalized, deduplicated, bad entries skipped')
  t.equal(parsed.skipped, 1)
  t.same(parseForkMembers(['<sip:a@x>, <sip:b@x>, <sip:c@x>'], x => x, 2).members, ['sip:a@x', 'sip:b@x'], 'at most max members')
  const many = Array.from({ length: 300 }, (_, i) => `sip:member${i}@example.org`)
  const chunks = chunkMembers(many, 4096)
  t.ok(chunks.length > 1, 'long lists are split')
  t.same(chunks.flat(), many, 'nothing lost, order kept')
  t.ok(chunks.every(c => formatForkHeader(c).length <= 4096), 'every header within the bound')
  t.same(chunkMembers(['x'.repeat(5000)], 4096), [], 'a member longer than the bound is dropped')
  t.same(chunkMembers(['a', 'b', 'c'], 4096, 2), [['a', 'b'], ['c']], 'member cap per chunk')
  t.same(splitBudget(64, [10, 20, 2]), [10 + 10, 20 + 20, 2 + 2])
  t.ok(splitBudget(10, [3, 3, 3]).reduce((a, b) => a + b) <= 10, 'never above the total')
  t.same(splitBudget(5, [0]), [0])
  t.same([...partitionByOwner(['a', 'b', 'c', 'd'], m => m === 'b' || m === 'd' ? 'x' : 'y')], [['y', ['a', 'c']], ['x', ['b', 'd']]])
})

t.test('distributed: one fork request per owner node, own members forked here, none for members of no node', async t => {
  const groups = new Groups().add(GROUP, [u('a'), u('b'), u('c'), u('d'), u('e')])
  const owners = { [u('a')]: ['n2', 'n3'], [u('b')]: ['n3', 'n2'], [u('c')]: ['n2', 'n1'], [u('d')]: ['n1', 'n2'], [u('e')]: ['n1'] }
  const { stack, location, proxy } = forkSetup(groups, owners, { forkOwnMembers: 'here' })
  location.map.set(u('d'), [binding('sip:d@192.0.2.40', { aor: u('d') })])
  location.map.set(u('e'), [binding('sip:e@192.0.2.50', { aor: u('e') }), binding('sip:e@192.0.2.51', { aor: u('e') })])
  const req = invite({ uri: GROUP, headers: 'Sipring-Fork: <sip:e@example.org>' }) // a client's list: ignored
  const tx = new FakeTx(ALICE_SRC, req)
  await proxy.handleRequest(req, tx)
  const forks = stack.sent.filter(s => forkList(s) !== undefined)
  t.equal(forks.length, 2, 'two owners → two fork requests')
  t.same(forks.map(forkList), ['<sip:a@example.org>, <sip:c@example.org>', '<sip:b@example.org>'])
  for (const f of forks) {
    t.equal(f.req.uri, GROUP, 'Request-URI kept')
    t.match(f.req.get('route'), /^<sip:10\.0\.0\.[23]:5060;transport=tcp;lr;sr=fork;fork-max=\d+>$/)
  }
  const budgets = forks.map(f => Number(/fork-max=(\d+)/.exec(f.req.get('route')!)![1]))
  t.ok(budgets.reduce((a, b) => a + b) + 3 <= 64, 'budgets within maxBranches with the local branches')
  t.same(stack.sent.filter(s => forkList(s) === undefined).map(s => s.req.uri).sort(), ['sip:d@192.0.2.40', 'sip:e@192.0.2.50', 'sip:e@192.0.2.51'], 'own members direct')
  t.same(location.lookups.sort(), [u('d'), u('e')], 'only own members looked up here')
  t.equal(proxy.stats().forkRequests, 2)
  t.equal(proxy.stats().forksRejected, 1, 'the client header counted as rejected')
  // answer: one 200 from a fork branch → others cancelled
  for (let i = 0; i < stack.sent.length; i++) stack.answer(i, 180)
  stack.answer(stack.sent.indexOf(forks[1]!), 200)
  t.same(stack.sent.map(s => s.cancels), stack.sent.map(s => s === forks[1] ? 0 : 1), 'every other branch CANCELled')
  t.equal(tx.statuses.filter(s => s >= 200).join(), '200')
})

t.test('fork request received: honoured only from a peer with sr=fork; branch budget and dedupe', async t => {
  const groups = new Groups().add(GROUP, [u('a'), u('b'), u('c')])
  const { stack, location, proxy } = forkSetup(groups, {}, { nodeId: 'n1' })
  for (const n of ['a', 'b', 'c']) location.map.set(u(n), [binding(`sip:${n}@192.0.2.1${n.charCodeAt(0) - 96}`, { aor: u(n) }), binding(`sip:${n}@192.0.2.2${n.charCodeAt(0) - 96}`, { aor: u(n) })])
  location.map.set(u('dup'), [binding('sip:a@192.0.2.11', { aor: u('dup') })]) // same contact as a's

  // from a peer node, Route sr=fork with fork-max=3: a (2 contacts) + dup (same contact: skipped) + b (2: over budget → dropped)
  const req = invite({ uri: GROUP, headers: 'Route: <sip:10.0.0.1:5060;transport=tcp;lr;sr=fork;fork-max=3>\nSipring-Fork: <sip:a@example.org>, <sip:dup@example.org>, <sip:b@example.org>' })
  const tx = new FakeTx(PEER_SRC, req)
  await proxy.handleRequest(req, tx)
  t.same(stack.sent.map(s => s.req.uri), ['sip:a@192.0.2.11', 'sip:a@192.0.2.21'], 'listed members only, a contact once, within fork-max')
  t.ok(stack.sent.every(s => !s.req.has(FORK_HEADER) && !s.req.has('route')), 'header and route consumed')
  t.equal(proxy.stats().forksAccepted, 1)
  t.notOk(location.lookups.includes(GROUP), 'the group is not expanded again')

  // the same request from a client address: header removed, the group expanded as an ordinary call
  const s2 = forkSetup(groups, {}, { nodeId: 'n1', groupForking: 'centralized' })
  for (const [k, v] of location.map) s2.location.map.set(k, v)
  const req2 = invite({ uri: GROUP, headers: 'Route: <sip:10.0.0.1:5060;transport=tcp;lr;sr=fork;fork-max=3>\nSipring-Fork: <sip:a@example.org>' })
  await s2.proxy.handleRequest(req2, new FakeTx(ALICE_SRC, req2))
  t.equal(s2.stack.sent.length, 6, 'every member of the group rings (a, b, c × 2)')
  t.equal(s2.proxy.stats().forksRejected, 1)
  t.ok(s2.stack.sent.every(s => !s.req.has(FORK_HEADER)), 'header not forwarded')

  // Sipring-Fork without our sr=fork Route, from a peer: not honoured either
  const s3 = forkSetup(groups, {}, { nodeId: 'n1', groupForking: 'centralized' })
  for (const [k, v] of location.map) s3.location.map.set(k, v)
  const req3 = invite({ uri: u('c'), headers: 'Sipring-Fork: <sip:a@example.org>' })
  await s3.proxy.handleRequest(req3, new FakeTx(PEER_SRC, req3))
  t.same(s3.stack.sent.map(s => s.req.uri), ['sip:c@192.0.2.13', 'sip:c@192.0.2.23'], 'the Request-URI decides')

  // an empty list from a peer: 400
  const req4 = invite({ uri: GROUP, headers: 'Route: <sip:10.0.0.1:5060;transport=tcp;lr;sr=fork>\nSipring-Fork: garbage' })
  const tx4 = new FakeTx(PEER_SRC, req4)
  await proxy.handleRequest(req4, tx4)
  t.same(tx4.statuses, [400])
  // members with no contact: 480
  const req5 = invite({ uri: GROUP, headers: 'Route: <sip:10.0.0.1:5060;transport=tcp;lr;sr=fork>\nSipring-Fork: <sip:nobody@example.org>' })
  const tx5 = new FakeTx(PEER_SRC, req5)
  await proxy.handleRequest(req5, tx5)
  t.same(tx5.statuses, [480])
})

t.test('owner fails before any provisional: members re-resolved through the next owner, then here', async t => {
  const groups = new Groups().add(GROUP, [u('a'), u('b')])
  const owners = { [u('a')]: ['n2', 'n3', 'n1'], [u('b')]: ['n2', 'n1'] }
  const { stack, location, proxy, clock } = forkSetup(groups, owners, { forkOwnMembers: 'here' })
  location.map.set(u('b'), [binding('sip:b@192.0.2.20', { aor: u('b') })])
  const req = invite({ uri: GROUP })
  const tx = new FakeTx(ALICE_SRC, req)
  await proxy.handleRequest(req, tx)
  t.equal(stack.sent.length, 1, 'one fork to n2')
  stack.answer(0, 503) // transport error
  await new Promise(resolve => setImmediate(resolve))
  t.equal(stack.sent.length, 3, 'a → n3 (fork), b → here (its next owner is us)')
  t.equal(forkList(stack.sent[1]!), '<sip:a@example.org>')
  t.match(stack.sent[1]!.req.get('route'), /10\.0\.0\.3/)
  t.equal(stack.sent[2]!.req.uri, 'sip:b@192.0.2.20')
  t.same(tx.statuses, [], 'no final upstream yet')
  // n3 silent: no 100 within forkTimeout → given up; n1 is the only owner left → a forked here (no binding)
  clock.advance(1999)
  t.equal(stack.sent.length, 3)
  stack.answer(2, 180)
  clock.advance(1)
  await new Promise(resolve => setImmediate(resolve))
  t.equal(stack.sent[1]!.cancels, 1, 'the silent fork is CANCELled (sent when it answers)')
  t.equal(proxy.stats().forkRetries, 2)
  t.equal(proxy.stats().forkFallbacks, 2, 'b and a forked here in the end')
  t.equal(stack.sent.length, 3, 'a has no binding: nothing more to fork')
  stack.answer(2, 486)
  t.same(tx.statuses.filter(s => s >= 200), [486], 'best final: the real 486, not the failures')
  t.equal(proxy.stats().activeContexts, 0)
})

t.test('a fork that already rang is not re-forked; hunt step timer cancels re-forked branches too', async t => {
  const groups = new Groups().add(GROUP, [u('a'), u('b')], 'hunt')
  const owners = { [u('a')]: ['n2', 'n3'], [u('b')]: ['n3'] }
  const { stack, proxy, clock } = forkSetup(groups, owners, { groupLimits: { memberTimeout: 5000 } })
  const req = invite({ uri: GROUP })
  const tx = new FakeTx(ALICE_SRC, req)
  await proxy.handleRequest(req, tx)
  t.equal(stack.sent.length, 1, 'hunt: first member only')
  stack.answer(0, 503)
  await new Promise(resolve => setImmediate(resolve))
  t.equal(stack.sent.length, 2, 'a re-forked to n3')
  stack.answer(1, 100)
  clock.advance(5000)
  await new Promise(resolve => setImmediate(resolve))
  t.equal(stack.sent[1]!.cancels, 1, 'the re-forked branch is CANCELled at the member timeout')
  t.equal(stack.sent.length, 3, 'next member b')
  t.equal(forkList(stack.sent[2]!), '<sip:b@example.org>')
  stack.answer(2, 100)
  clock.advance(3000)
  t.equal(stack.sent.length, 3, 'no re-fork once a provisional came')
  stack.answer(1, 487)
  stack.answer(2, 603)
  t.same(tx.statuses.filter(s => s >= 200), [603])
})

t.test('options: groupForking checked; distributed without owners behaves centralized', async t => {
  t.throws(() => setup({ groupForking: 'both' as never }), RangeError)
  t.throws(() => setup({ timers: { forkTimeout: 0 } }), RangeError)
  const groups = new Groups().add(GROUP, [u('a')])
  const { stack, location, proxy } = setup({ groups, groupForking: 'distributed' })
  location.map.set(u('a'), [binding('sip:a@192.0.2.1', { aor: u('a') })])
  const req = invite({ uri: GROUP })
  await proxy.handleRequest(req, new FakeTx(ALICE_SRC, req))
  t.same(stack.sent.map(s => s.req.uri), ['sip:a@192.0.2.1'])
  t.equal(proxy.stats().forkRequests, 0)
})

t.test('attached here: S forks to its own clients of members owned elsewhere and says fork-from; forkOwnMembers replica', async t => {
  const groups = new Groups().add(GROUP, [u('a'), u('d')])
  const owners = { [u('a')]: ['n2', 'n1'], [u('d')]: ['n1', 'n3'] }
  const local = new Map([[u('a'), [binding('sip:a@192.0.2.99', { aor: u('a'), node: 'n1' })]]])
  const { stack, location, proxy } = forkSetup(groups, owners, { localLookup: aor => local.get(aor) ?? [], forkOwnMembers: 'here' })
  location.map.set(u('d'), [binding('sip:d@192.0.2.40', { aor: u('d') })])
  const req = invite({ uri: GROUP })
  await proxy.handleRequest(req, new FakeTx(ALICE_SRC, req))
  t.same(stack.sent.map(s => s.req.uri).sort(), ['sip:a@192.0.2.99', 'sip:d@192.0.2.40', GROUP], 'a\'s local client, d (ours), one fork')
  const fork = stack.sent.find(s => s.req.uri === GROUP)!
  t.match(fork.req.get('route'), /;fork-from=n1>$/, 'the owner is told to leave n1\'s clients out')
  t.equal(forkList(fork), '<sip:a@example.org>')

  const r = forkSetup(groups, owners, { localLookup: () => [], forkOwnMembers: 'replica' })
  r.location.map.set(u('d'), [binding('sip:d@192.0.2.40', { aor: u('d') })])
  const req2 = invite({ uri: GROUP })
  await r.proxy.handleRequest(req2, new FakeTx(ALICE_SRC, req2))
  t.same(r.stack.sent.map(forkList), ['<sip:a@example.org>', '<sip:d@example.org>'], 'd goes to its replica n3: forks only')
  t.match(r.stack.sent[1]!.req.get('route'), /10\.0\.0\.3/)
  t.equal(r.location.lookups.length, 0, 'nothing looked up here')
  t.throws(() => setup({ forkOwnMembers: 'nobody' as never }), RangeError)
})

t.test('fork request served: fork-from bindings left out; one provisional per status code upstream', async t => {
  const groups = new Groups()
  const { stack, location, proxy } = forkSetup(groups, {})
  location.map.set(u('a'), [binding('sip:a@192.0.2.1', { aor: u('a'), node: 'n1' }), binding('sip:a@192.0.2.2', { aor: u('a'), node: 'n1' }), binding('sip:a@192.0.2.3', { aor: u('a'), node: 'n7' })])
  location.map.set(u('b'), [binding('sip:b@192.0.2.4', { aor: u('b'), node: 'n1' })])
  const req = invite({ uri: GROUP, headers: 'Route: <sip:10.0.0.1:5060;transport=tcp;lr;sr=fork;fork-from=n7>\nSipring-Fork: <sip:a@example.org>, <sip:b@example.org>' })
  const tx = new FakeTx(PEER_SRC, req)
  await proxy.handleRequest(req, tx)
  t.same(stack.sent.map(s => s.req.uri), ['sip:a@192.0.2.1', 'sip:a@192.0.2.2', 'sip:b@192.0.2.4'], 'n7\'s client of a is left to n7')
  stack.answer(0, 180); stack.answer(1, 180); stack.answer(2, 183); stack.answer(2, 180)
  stack.answer(1, 180, { headers: [['rseq', '1'], ['require', '100rel']] })
  t.same(tx.statuses, [180, 183, 180], 'first 180, first 183, and the reliable 180')
  stack.answer(2, 200)
  t.same(tx.statuses.filter(s => s >= 200), [200])
  t.same(stack.sent.map(s => s.cancels), [1, 1, 0])
})
