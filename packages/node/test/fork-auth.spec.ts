/**
 * Distributed group forking with digest authentication on every node: an unauthenticated caller of a
 * group is challenged and nothing is forked; an authenticated one rings every member, and the fork
 * requests (sr=fork from a peer node) are not challenged again at the owners.
 */
import t from 'tap'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader, type SipRequest, type SipResponse } from '@sipring/sip'
import { responses, run, send, until } from './overlay-helpers.js'
import { call, caller, finals, forkCluster, member, node, ownersAt, shutdown, type Member } from './fork-helpers.js'

const u = (n: string): string => `sip:${n}@example.org`

function answer (req: SipRequest, ch: SipResponse, user: string, password: string): SipRequest {
  const c = parseAuthHeader(ch.getAll('proxy-authenticate')[0]!).params
  const r = req.clone()
  r.set('via', r.get('via')!.replace(/branch=([^;]+)/, 'branch=$1a'))
  r.set('cseq', r.get('cseq')!.replace(/^\d+/, n => String(Number(n) + 1)))
  const alg = c.get('algorithm')!
  const response = digestResponse({ algorithm: alg, ha1: ha1(alg, user, 'example.org', password), nonce: c.get('nonce')!, nc: '00000001', cnonce: 'c0ffee', qop: 'auth', method: r.method, uri: r.uri })
  r.set('proxy-authorization', formatAuthHeader({ scheme: 'Digest', params: new Map([
    ['username', user], ['realm', 'example.org'], ['nonce', c.get('nonce')!], ['uri', r.uri], ['response', response], ['algorithm', alg], ['cnonce', 'c0ffee'], ['qop', 'auth'], ['nc', '00000001']
  ]) }))
  return r
}

t.test('auth on: unauthenticated group call refused, authenticated one forked without re-challenges', async t => {
  const names = Array.from({ length: 8 }, (_, i) => `a${i}`)
  const c = await forkCluster(21, 4, [{ aor: u('auth-group'), members: names.map(u) }], { auth: true })
  t.teardown(() => shutdown(c))
  await c.accounts.addUser({ user: 'caller', realm: 'example.org', password: 'caller-pw' })
  const ms: Member[] = []
  for (let i = 0; i < names.length; i++) ms.push(await member(c, names[i]!, c.ids[i % 4]!))
  await run(c, 500)
  const alice = await caller(c, 'n1', '10.8.0.1')
  const inv = await call(alice, u('auth-group'))
  t.ok(await until(c, () => finals(alice).length > 0, 3000, 5) >= 0)
  t.same(finals(alice), [407], 'challenged')
  await run(c, 300)
  t.same(ms.map(m => m.invites.length), ms.map(() => 0), 'nobody rang')
  t.equal(node(c, 'n1').proxy.stats().forkRequests, 0, 'no fork request')

  const challenges = c.ids.map(id => node(c, id).status().auth!.challenges)
  const authed = answer(inv, responses(alice, 'INVITE').find(r => r.status === 407)!, 'caller', 'caller-pw')
  await send(alice, authed)
  t.ok(await until(c, () => ms.every(m => m.invites.length === 1), 5000, 5) >= 0, 'every member rings')
  const owners = new Set(names.map(n => ownersAt(c, 'n1', u(n))[0]!).filter(o => o !== 'n1'))
  t.ok(owners.size >= 1)
  for (const id of owners) t.equal(node(c, id).proxy.stats().forksAccepted, 1, `${id} served its fork request`)
  t.same(c.ids.map(id => node(c, id).status().auth!.challenges), challenges, 'no node challenged the relayed requests')
  await ms[3]!.answer(200)
  t.ok(await until(c, () => finals(alice).length > 1, 5000, 5) >= 0)
  t.same(finals(alice), [407, 200])
})
