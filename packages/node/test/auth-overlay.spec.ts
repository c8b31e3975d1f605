/**
 * Digest authentication across super nodes of one overlay: a nonce issued by one node is recognised by
 * another sharing the secret but answered with its own nonce and stale=true (nc replay windows are per
 * node), and a request relayed by a peer super node is not challenged again.
 */
import t from 'tap'
import { MemoryLevel } from 'memory-level'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader, type SipRequest, type SipResponse } from '@sipring/sip'
import { LevelAccountStore, type AccountDb } from '@sipring/auth'
import type { PeerId } from '@sipring/overlay'
import { createSuperNode, type SuperNode } from '../src/index.js'
import { cluster, converged, nodeAddress, nodeComponents, phone, request, requests, responses, run, send, settle, until, type Cluster, type Phone } from './overlay-helpers.js'

const SECRET = new Uint8Array(32).fill(7)

async function addAuthNode (c: Cluster, id: PeerId, accounts: LevelAccountStore, seeds: PeerId[] = []): Promise<SuperNode> {
  const node = createSuperNode({ ...nodeComponents(c, id), accounts: accounts }, {
    domains: ['example.org'],
    auth: { enabled: true, secret: SECRET },
    overlay: { seeds, verifyDelay: 500, node: { vnodes: 64, membership: { protocolPeriod: 500, pingTimeout: 100, suspicionMult: 3, syncInterval: 5000 }, store: { antiEntropyInterval: 5000, requestTimeout: 300 } } }
  })
  await settle(c, node.start())
  c.nodes.set(id, node)
  return node
}

function answer (req: SipRequest, ch: SipResponse, user: string, password: string, nc = 1): SipRequest {
  const c = parseAuthHeader(ch.getAll(ch.status === 401 ? 'www-authenticate' : 'proxy-authenticate')[0]!).params
  const ncs = nc.toString(16).padStart(8, '0')
  const r = req.clone()
  r.set('via', r.get('via')!.replace(/branch=([^;]+)/, `branch=$1x${nc}`))
  r.set('cseq', r.get('cseq')!.replace(/^\d+/, n => String(Number(n) + 1)))
  const response = digestResponse({ algorithm: c.get('algorithm')!, ha1: ha1(c.get('algorithm')!, user, 'example.org', password), nonce: c.get('nonce')!, nc: ncs, cnonce: 'c0ffee', qop: 'auth', method: r.method, uri: r.uri })
  r.set(ch.status === 401 ? 'authorization' : 'proxy-authorization', formatAuthHeader({ scheme: 'Digest', params: new Map([
    ['username', user], ['realm', 'example.org'], ['nonce', c.get('nonce')!], ['uri', r.uri], ['response', response], ['algorithm', c.get('algorithm')!], ['cnonce', 'c0ffee'], ['qop', 'auth'], ['nc', ncs]
  ]) }))
  return r
}

async function exchange (c: Cluster, p: Phone, req: SipRequest, method: string, to = p.proxy): Promise<SipResponse> {
  const before = responses(p, method).filter(r => r.status >= 200).length
  await send(p, req, to)
  await until(c, () => responses(p, method).filter(r => r.status >= 200).length > before, 5000, 5)
  return responses(p, method).filter(r => r.status >= 200)[before]!
}

t.test('two authenticating super nodes: n1\'s nonce at n2 → stale=true, then n2\'s passes; a MESSAGE relayed n1 → n2 is not challenged again', async t => {
  const c = cluster(11)
  const accounts = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock: c.clock })
  await accounts.addUser({ user: 'alice', realm: 'example.org', password: 'alice-pw' })
  await accounts.addUser({ user: 'bob', realm: 'example.org', password: 'bob-pw' })
  await addAuthNode(c, 'n1', accounts)
  await addAuthNode(c, 'n2', accounts, ['n1'])
  t.teardown(async () => { for (const n of c.nodes.values()) await settle(c, n.stop({ leave: false })) })
  t.not(await until(c, () => converged(c), 30_000), -1, 'overlay converged')
  await run(c, 2000)

  const alice = await phone(c, 'alice', '10.9.0.1', 'n1', 'udp')
  const bob = await phone(c, 'bob', '10.9.0.2', 'n2', 'udp')
  const bobToN1 = { ...bob.proxy, address: nodeAddress('n1') }
  // bob gets his challenge from n1 and answers it at n2 (same secret): n2 hands him its own nonce
  const reg = request(bob, 'REGISTER', 'sip:example.org', 'sip:bob@example.org', [['contact', `<${bob.contact}>`], ['expires', '600']])
  await send(bob, reg, bobToN1)
  await until(c, () => responses(bob, 'REGISTER').length > 0, 3000, 5)
  const ch = responses(bob, 'REGISTER')[0]!
  t.equal(ch.status, 401)
  const first = answer(reg, ch, 'bob', 'bob-pw')
  const stale = await exchange(c, bob, first, 'REGISTER')
  t.equal(stale.status, 401, 'n2 does not take n1\'s nonce')
  t.match(stale.get('www-authenticate')!, /stale=true/, 'stale=true: same credentials, new nonce')
  const second = answer(first, stale, 'bob', 'bob-pw')
  t.equal((await exchange(c, bob, second, 'REGISTER')).status, 200, 'n2 accepts its own nonce')
  t.equal(c.nodes.get('n2')!.status().auth!.foreignNonces, 1)
  // the 200'd REGISTER replayed to n1 (a new transaction, same credentials) does not pass there either
  const replay = second.clone()
  replay.set('via', replay.get('via')!.replace(/branch=([^;]+)/, 'branch=$1replay'))
  replay.set('cseq', replay.get('cseq')!.replace(/^\d+/, n => String(Number(n) + 1)))
  const replayed = await exchange(c, bob, replay, 'REGISTER', bobToN1)
  t.equal(replayed.status, 401, 'n1 refuses the replay of n2\'s authenticated REGISTER')
  t.match(replayed.get('www-authenticate')!, /stale=true/)
  await run(c, 1500)
  const n2Challenges = c.nodes.get('n2')!.status().auth!.challenges

  const msg = request(alice, 'MESSAGE', 'sip:bob@example.org', 'sip:bob@example.org', [['content-type', 'text/plain']])
  msg.body = Buffer.from('hi bob')
  const ch2 = await exchange(c, alice, msg, 'MESSAGE')
  t.equal(ch2.status, 407)
  t.equal(requests(bob, 'MESSAGE').length, 0)
  const ok = await exchange(c, alice, answer(msg, ch2, 'alice', 'alice-pw'), 'MESSAGE')
  t.equal(ok.status, 200, 'alice gets bob\'s 200')
  const got = requests(bob, 'MESSAGE')
  t.equal(got.length, 1, 'bob got the MESSAGE')
  t.equal(got[0]!.source.address, nodeAddress('n2'), 'through his attachment node n2')
  t.notOk(got[0]!.msg.has('proxy-authorization'), 'credentials stripped')
  t.equal(c.nodes.get('n2')!.status().auth!.challenges, n2Challenges, 'n2 challenged nothing more (the relay from n1 is trusted)')
  t.ok(c.nodes.get('n2')!.status().auth!.exempt >= 1)
})
