import t from 'tap'
import { createHmac } from 'node:crypto'
import { MemoryLevel } from 'memory-level'
import { SimClock, SeededRng, MemoryLogger } from '@sipring/testkit'
import type { Source } from '@sipring/interface'
import { digestResponse, formatAuthHeader, parseAuthHeader, parseMessage, type SipRequest, type SipResponse } from '@sipring/sip'
import { DigestServer, LevelAccountStore, type AccountDb, type DigestServerOptions } from '@sipring/auth'

const REALM = 'example.org'

async function setup (opts: Partial<DigestServerOptions> = {}): Promise<{ clock: SimClock, accounts: LevelAccountStore, auth: DigestServer }> {
  const clock = new SimClock(Date.UTC(2026, 0, 1))
  const accounts = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  await accounts.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' })
  await accounts.addUser({ user: 'bob', realm: REALM, password: 'bob-pw' })
  const auth = new DigestServer({ clock, rng: new SeededRng(7), logger: new MemoryLogger(), accounts, realm: REALM, ...opts })
  return { clock, accounts, auth }
}

let cseq = 1
function request (method: string, opts: { from?: string, to?: string, toTag?: string, uri?: string } = {}): SipRequest {
  const from = opts.from ?? 'alice'
  const to = opts.to ?? (method === 'REGISTER' ? from : 'bob')
  const uri = opts.uri ?? (method === 'REGISTER' ? `sip:${REALM}` : `sip:${to}@${REALM}`)
  const text = [
    `${method} ${uri} SIP/2.0`,
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK' + String(cseq),
    'Max-Forwards: 70',
    `From: <sip:${from}@${REALM}>;tag=f${cseq}`,
    `To: <sip:${to}@${REALM}>${opts.toTag !== undefined ? `;tag=${opts.toTag}` : ''}`,
    `Call-ID: c${cseq}@test`,
    `CSeq: ${cseq++} ${method}`,
    'Contact: <sip:alice@192.0.2.1:5060>',
    'Content-Length: 0', '', ''
  ].join('\r\n')
  return parseMessage(Buffer.from(text)) as SipRequest
}

const src = (address = '192.0.2.1'): Source => ({ protocol: 'udp', address, port: 5060, local: { protocol: 'udp', address: '192.0.2.10', port: 5060 } })

/** Answer a challenge like a UAC would. */
function answer (req: SipRequest, challenge: SipResponse, user: string, password: string, o: { alg?: string, nc?: number, realm?: string, cnonce?: string } = {}): SipRequest {
  const hdr = challenge.status === 401 ? 'www-authenticate' : 'proxy-authenticate'
  const chs = challenge.getAll(hdr).map(parseAuthHeader)
  const ch = chs.find(c => (c.params.get('algorithm') ?? 'MD5') === (o.alg ?? 'SHA-256'))!
  const alg = ch.params.get('algorithm')!
  const realm = o.realm ?? ch.params.get('realm')!
  const nonce = ch.params.get('nonce')!
  const nc = (o.nc ?? 1).toString(16).padStart(8, '0')
  const cnonce = o.cnonce ?? 'abcdef0123'
  const { ha1 } = { ha1: digestHa1(alg, user, realm, password) }
  const response = digestResponse({ algorithm: alg, ha1, nonce, nc, cnonce, qop: 'auth', method: req.method, uri: req.uri })
  const r = req.clone()
  r.set(challenge.status === 401 ? 'Authorization' : 'Proxy-Authorization', formatAuthHeader({
    scheme: 'Digest',
    params: new Map([['username', user], ['realm', realm], ['nonce', nonce], ['uri', req.uri], ['response', response], ['algorithm', alg], ['cnonce', cnonce], ['qop', 'auth'], ['nc', nc]])
  }))
  return r
}

import { ha1 as digestHa1 } from '@sipring/sip'

async function respond (auth: DigestServer, req: SipRequest, s = src()): Promise<SipResponse> {
  const o = await auth.authenticate(req, s)
  if (o.action !== 'respond') throw new Error('expected a response, got pass')
  return o.response
}

t.test('REGISTER: 401 with SHA-256 then MD5 challenges, qop=auth; a correct answer passes', async tt => {
  const { auth } = await setup()
  const reg = request('REGISTER')
  const ch = await respond(auth, reg)
  tt.equal(ch.status, 401)
  tt.equal(ch.reason, 'Unauthorized')
  const www = ch.getAll('www-authenticate')
  tt.equal(www.length, 2)
  tt.match(www[0], /^Digest realm="example.org", nonce="[^"]+", algorithm=SHA-256, qop="auth"$/)
  tt.match(www[1], /algorithm=MD5/)
  tt.notOk(ch.has('proxy-authenticate'))
  tt.ok(ch.get('to')!.includes('tag='), 'the challenge carries a To tag')
  for (const alg of ['SHA-256', 'MD5']) {
    const r = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw', { alg })
    const o = await auth.authenticate(r, src())
    tt.equal(o.action, 'pass', alg)
    tt.equal(o.action === 'pass' ? o.account?.user : undefined, 'alice')
    tt.notOk(r.has('authorization'), 'credentials for our realm are stripped')
  }
  tt.equal(auth.stats().authenticated, 2)
})

t.test('INVITE, MESSAGE, SUBSCRIBE, OPTIONS: 407 with Proxy-Authenticate; exempt requests pass', async tt => {
  const { auth } = await setup()
  for (const m of ['INVITE', 'MESSAGE', 'SUBSCRIBE', 'OPTIONS', 'REFER']) {
    const ch = await respond(auth, request(m))
    tt.equal(ch.status, 407, m)
    tt.equal(ch.getAll('proxy-authenticate').length, 2)
    const r = answer(request(m), ch, 'alice', 'alice-pw')
    tt.equal((await auth.authenticate(r, src())).action, 'pass', `${m} with credentials`)
  }
  tt.same(await auth.authenticate(request('OPTIONS', { uri: 'sip:example.org' }), src()), { action: 'pass' }, 'OPTIONS ping to the server itself')
  tt.equal((await respond(auth, request('OPTIONS', { uri: 'sip:bob@example.org' }))).status, 407, 'OPTIONS to a user is challenged')
  for (const m of ['ACK', 'CANCEL']) tt.same(await auth.authenticate(request(m), src()), { action: 'pass' }, `${m} is never challenged`)
  tt.same(await auth.authenticate(request('BYE', { toTag: 'x1' }), src()), { action: 'pass' }, 'in-dialog BYE passes')
  tt.same(await auth.authenticate(request('INVITE', { toTag: 'x1' }), src()), { action: 'pass' }, 're-INVITE passes')
  tt.equal((await respond(auth, request('REGISTER', { toTag: 'x' }))).status, 401, 'a REGISTER with a To tag is still challenged')
  // credentials of another realm are left alone and the request is challenged
  const other = request('INVITE')
  other.append('Proxy-Authorization', 'Digest username="alice", realm="other.net", nonce="x", uri="sip:bob@example.org", response="00"')
  tt.equal((await respond(auth, other)).status, 407)
  tt.ok(other.has('proxy-authorization'))
})

t.test('trusted peers pass; stripping keeps other realms', async tt => {
  const { auth } = await setup({ trusted: (_r, s) => s.address === '10.0.0.2' })
  tt.same(await auth.authenticate(request('INVITE'), src('10.0.0.2')), { action: 'pass' })
  const ch = await respond(auth, request('INVITE'))
  const r = answer(request('INVITE'), ch, 'alice', 'alice-pw')
  r.append('Proxy-Authorization', 'Digest username="alice", realm="upstream.net", nonce="n", uri="sip:bob@example.org", response="00"')
  tt.equal((await auth.authenticate(r, src())).action, 'pass')
  tt.same(r.getAll('proxy-authorization').map(v => parseAuthHeader(v).params.get('realm')), ['upstream.net'])
})

t.test('wrong password → 401 again; then a ban after N failures (per source), lifted after banMs', async tt => {
  const { auth, clock } = await setup({ limits: { maxFailuresPerSource: 3, maxFailuresPerUser: 100, banMs: 60_000, failureWindowMs: 10_000 } })
  for (let i = 0; i < 3; i++) {
    const r = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'wrong')
    const res = await respond(auth, r)
    tt.equal(res.status, 401, `failure ${i + 1} re-challenged`)
  }
  const r = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'wrong')
  const ban = await respond(auth, r)
  tt.equal(ban.status, 403)
  tt.match(ban.reason, /too many failed authentications/)
  tt.equal(ban.get('retry-after'), '60')
  // banned: even a correct answer or a bare request from that IP is refused, others are not
  tt.equal((await respond(auth, request('REGISTER'))).status, 403)
  const other = await respond(auth, request('REGISTER'), src('192.0.2.99'))
  tt.equal(other.status, 401, 'another source is still served')
  tt.equal((await auth.authenticate(answer(request('REGISTER'), other, 'alice', 'alice-pw'), src('192.0.2.99'))).action, 'pass')
  clock.advance(30_000)
  tt.equal((await respond(auth, request('REGISTER'))).get('retry-after'), '30', 'Retry-After counts down')
  clock.advance(30_000)
  tt.equal((await respond(auth, request('REGISTER'))).status, 401, 'ban lifted after banMs')
  tt.equal(auth.stats().bans, 1)
  tt.equal(auth.stats().failures, 4)
})

t.test('failures spread over time windows do not ban; per-user bans hit every source; 429/503 configurable', async tt => {
  const { auth, clock } = await setup({ limits: { maxFailuresPerSource: 2, maxFailuresPerUser: 3, failureWindowMs: 10_000, banMs: 5_000, banStatus: 429 } })
  for (let i = 0; i < 6; i++) {
    const r = answer(request('REGISTER'), await respond(auth, request('REGISTER', { from: 'bob' }), src('198.51.100.1')), 'bob', 'nope')
    tt.equal((await respond(auth, r, src('198.51.100.1'))).status, 401)
    clock.advance(6_000)
  }
  tt.equal(auth.stats().bans, 0, 'two failures per window never ban')
  // 4 failures for bob from 4 sources → user ban
  for (let i = 0; i < 4; i++) {
    const s = src(`203.0.113.${i + 1}`)
    const r = answer(request('REGISTER', { from: 'bob' }), await respond(auth, request('REGISTER', { from: 'bob' }), s), 'bob', 'nope')
    const res = await respond(auth, r, s)
    tt.equal(res.status, i < 3 ? 401 : 429, `user failure ${i + 1}`)
    if (i === 3) tt.equal(res.get('retry-after'), '5')
  }
  // bob is banned from anywhere with his username; alice is not
  const s = src('203.0.113.50')
  const r = answer(request('REGISTER', { from: 'bob' }), await respond(auth, request('REGISTER', { from: 'bob' }), s), 'bob', 'bob-pw')
  tt.equal((await respond(auth, r, s)).status, 429, 'a banned user is refused even with the right password')
  const a = answer(request('REGISTER'), await respond(auth, request('REGISTER'), s), 'alice', 'alice-pw')
  tt.equal((await auth.authenticate(a, s)).action, 'pass')
  tt.same(auth.bans().users.map(b => b.key), ['bob'])
  clock.advance(5_000)
  const r2 = answer(request('REGISTER', { from: 'bob' }), await respond(auth, request('REGISTER', { from: 'bob' }), s), 'bob', 'bob-pw')
  tt.equal((await auth.authenticate(r2, s)).action, 'pass', 'user ban lifted')
})

t.test('unknown users count as failures and look like a wrong password', async tt => {
  const { auth } = await setup({ limits: { maxFailuresPerSource: 1 } })
  const r = answer(request('REGISTER', { from: 'mallory' }), await respond(auth, request('REGISTER', { from: 'mallory' })), 'mallory', 'x')
  tt.equal((await respond(auth, r)).status, 401)
  const r2 = answer(request('REGISTER', { from: 'mallory' }), await respond(auth, request('REGISTER', { from: 'mallory' })), 'mallory', 'x')
  tt.equal((await respond(auth, r2)).status, 403)
})

t.test('replayed nc → 401; increasing nc on one nonce passes; out-of-order within the window passes once', async tt => {
  const { auth } = await setup()
  const ch = await respond(auth, request('REGISTER'))
  const base = request('REGISTER')
  const r1 = answer(base, ch, 'alice', 'alice-pw', { nc: 1 })
  tt.equal((await auth.authenticate(r1.clone(), src())).action, 'pass')
  const replay = await respond(auth, r1.clone())
  tt.equal(replay.status, 401, 'same nonce+nc again is a replay')
  tt.notMatch(replay.get('www-authenticate')!, /stale/)
  tt.equal(auth.stats().replays, 1)
  tt.equal((await auth.authenticate(answer(base, ch, 'alice', 'alice-pw', { nc: 3 }), src())).action, 'pass', 'nc 3')
  tt.equal((await auth.authenticate(answer(base, ch, 'alice', 'alice-pw', { nc: 2 }), src())).action, 'pass', 'nc 2 late but unused')
  tt.equal((await respond(auth, answer(base, ch, 'alice', 'alice-pw', { nc: 2 }))).status, 401, 'nc 2 twice')
  tt.equal((await auth.authenticate(answer(base, ch, 'alice', 'alice-pw', { nc: 100 }), src())).action, 'pass', 'nc jumps')
  tt.equal((await respond(auth, answer(base, ch, 'alice', 'alice-pw', { nc: 50 }))).status, 401, 'nc far behind the window')
  tt.equal(auth.stats().failures, 0, 'replays are not password failures')
})

t.test('nonce tracking is bounded; a forgotten old nonce is refused, not replayable', async tt => {
  const { auth, clock } = await setup({ limits: { maxTrackedNonces: 2 } })
  const chs: SipResponse[] = []
  for (let i = 0; i < 3; i++) { chs.push(await respond(auth, request('REGISTER'))); clock.advance(10) }
  const base = request('REGISTER')
  for (const ch of chs) tt.equal((await auth.authenticate(answer(base, ch, 'alice', 'alice-pw'), src())).action, 'pass')
  tt.equal(auth.stats().trackedNonces, 2)
  tt.equal((await respond(auth, answer(base, chs[0]!, 'alice', 'alice-pw', { nc: 1 }))).status, 401, 'evicted nonce refused')
  tt.equal((await respond(auth, answer(base, chs[0]!, 'alice', 'alice-pw', { nc: 2 }))).status, 401, 'even with a new nc')
  const fresh = await respond(auth, request('REGISTER'))
  tt.equal((await auth.authenticate(answer(base, fresh, 'alice', 'alice-pw'), src())).action, 'pass', 'a fresh nonce works')
})

t.test('stale nonce → 401 stale=true (only with a correct response); forged nonce → plain 401', async tt => {
  const { auth, clock } = await setup({ nonceTtlMs: 30_000 })
  const ch = await respond(auth, request('REGISTER'))
  clock.advance(30_001)
  const stale = await respond(auth, answer(request('REGISTER'), ch, 'alice', 'alice-pw'))
  tt.equal(stale.status, 401)
  tt.match(stale.get('www-authenticate')!, /stale=true/)
  tt.equal(stale.getAll('www-authenticate').length, 2)
  const wrong = await respond(auth, answer(request('REGISTER'), ch, 'alice', 'bad'))
  tt.notMatch(wrong.get('www-authenticate')!, /stale/, 'a wrong password with an old nonce is not stale')
  tt.equal(auth.stats().stale, 1)
  // forged: change one character of the MAC
  const forged = ch.clone()
  const v = forged.get('www-authenticate')!.replace(/nonce="([^"]+)"/, (_m, n: string) => `nonce="${n.slice(0, -1)}${n.endsWith('A') ? 'B' : 'A'}"`)
  forged.set('www-authenticate', v)
  clock.advance(-0)
  const { auth: auth2 } = await setup()
  const other = await respond(auth2, answer(request('REGISTER'), forged, 'alice', 'alice-pw'))
  tt.equal(other.status, 401)
  tt.equal(auth2.stats().badNonces, 1)
})

t.test('nonces are bound to their node: a replay to node B of a request authenticated at A is refused', async tt => {
  const secret = new Uint8Array(32).fill(9)
  const a = await setup({ secret, nodeId: 'node-A' })
  const b = await setup({ secret, nodeId: 'node-B' })
  const c = await setup({ secret: new Uint8Array(32).fill(1), nodeId: 'node-C' })
  const ch = await respond(a.auth, request('REGISTER'))
  tt.match(ch.get('www-authenticate')!, /nonce="[0-9a-f]+\.[0-9a-z]{12}\.[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{22}"/, 'nonce names its node')
  const signed = answer(request('REGISTER'), ch, 'alice', 'alice-pw')
  tt.equal((await a.auth.authenticate(signed.clone(), src())).action, 'pass', 'A accepts its own nonce')
  // an attacker replays the exact request to B, then with other nc values: never passes
  for (const r of [signed.clone(), answer(request('REGISTER'), ch, 'alice', 'alice-pw', { nc: 2 }), answer(request('REGISTER'), ch, 'alice', 'alice-pw', { nc: 1000 })]) {
    const res = await respond(b.auth, r, src('203.0.113.66'))
    tt.equal(res.status, 401, 'B refuses A\'s nonce')
    tt.match(res.get('www-authenticate')!, /stale=true/, 'with a challenge of its own, stale=true')
    tt.not(parseAuthHeader(res.get('www-authenticate')!).params.get('nonce'), parseAuthHeader(ch.get('www-authenticate')!).params.get('nonce'))
  }
  tt.equal(b.auth.stats().foreignNonces, 3)
  tt.equal(b.auth.stats().authenticated, 0)
  tt.equal(b.auth.stats().failures, 0, 'not counted as password failures')
  // replays at A itself are refused as before
  tt.equal((await respond(a.auth, signed.clone())).status, 401)
  tt.equal(a.auth.stats().replays, 1)
  // a wrong password on A's nonce at B is a failure, not stale
  const wrong = await respond(b.auth, answer(request('REGISTER'), ch, 'alice', 'nope'))
  tt.notMatch(wrong.get('www-authenticate')!, /stale/)
  tt.equal(b.auth.stats().failures, 1)
  // a node with another secret does not recognise the nonce at all
  tt.notMatch((await respond(c.auth, answer(request('REGISTER'), ch, 'alice', 'alice-pw'))).get('www-authenticate')!, /stale/)
  tt.equal(c.auth.stats().badNonces, 1)
  tt.throws(() => new DigestServer({ clock: a.clock, rng: new SeededRng(1), accounts: a.accounts, realm: REALM, secret: new Uint8Array(8) }), /at least 16 bytes/)
})

t.test('a client moving from node A to node B re-authenticates once with stale=true, then passes', async tt => {
  const secret = new Uint8Array(32).fill(9)
  const a = await setup({ secret, nodeId: 'node-A' })
  const b = await setup({ secret, nodeId: 'node-B' })
  const chA = await respond(a.auth, request('REGISTER'))
  tt.equal((await a.auth.authenticate(answer(request('REGISTER'), chA, 'alice', 'alice-pw', { nc: 1 }), src())).action, 'pass')
  tt.equal((await a.auth.authenticate(answer(request('REGISTER'), chA, 'alice', 'alice-pw', { nc: 2 }), src())).action, 'pass')
  // A fails over to B: the client keeps its nonce (nc 3), B answers stale=true with its own nonce
  const stale = await respond(b.auth, answer(request('REGISTER'), chA, 'alice', 'alice-pw', { nc: 3 }))
  tt.equal(stale.status, 401)
  tt.equal(stale.getAll('www-authenticate').length, 2, 'one challenge per algorithm')
  for (const v of stale.getAll('www-authenticate')) tt.match(v, /stale=true/)
  // same credentials, B's nonce, nc restarts at 1 (RFC 7616 §3.4: new nonce)
  const r1 = answer(request('REGISTER'), stale, 'alice', 'alice-pw', { nc: 1 })
  tt.equal((await b.auth.authenticate(r1.clone(), src())).action, 'pass', 'passes with B\'s nonce')
  tt.equal((await b.auth.authenticate(answer(request('REGISTER'), stale, 'alice', 'alice-pw', { nc: 2 }), src())).action, 'pass', 'and keeps passing')
  tt.equal((await respond(b.auth, r1.clone())).status, 401, 'B tracks nc of its own nonce')
  // the way back: B's nonce at A is foreign too
  tt.match((await respond(a.auth, answer(request('REGISTER'), stale, 'alice', 'alice-pw', { nc: 3 }))).get('www-authenticate')!, /stale=true/)
  tt.same({ foreign: b.auth.stats().foreignNonces, challenges: b.auth.stats().challenges }, { foreign: 1, challenges: 2 }, 'one stale challenge, one for the replay')
})

t.test('nc going backwards is refused: used values, values behind the window, any lower value with ncWindow 1', async tt => {
  const { auth } = await setup({ nodeId: 'n' })
  const ch = await respond(auth, request('REGISTER'))
  const go = async (nc: number): Promise<number | 'pass'> => {
    const o = await auth.authenticate(answer(request('REGISTER'), ch, 'alice', 'alice-pw', { nc }), src())
    return o.action === 'pass' ? 'pass' : o.response.status
  }
  tt.equal(await go(40), 'pass')
  tt.equal(await go(40), 401, 'same nc')
  tt.equal(await go(8), 401, '32 behind: outside the window')
  tt.equal(await go(9), 'pass', '31 behind, unused: reordered parallel request')
  tt.equal(await go(9), 401)
  const strict = await setup({ nodeId: 'n', limits: { ncWindow: 1 } })
  const ch2 = await respond(strict.auth, request('REGISTER'))
  const go2 = async (nc: number): Promise<string> => (await strict.auth.authenticate(answer(request('REGISTER'), ch2, 'alice', 'alice-pw', { nc }), src())).action
  tt.equal(await go2(1), 'pass'); tt.equal(await go2(3), 'pass')
  tt.equal(await go2(2), 'respond', 'ncWindow 1: 2 after 3 refused')
  tt.equal(await go2(3), 'respond')
  tt.equal(await go2(4), 'pass')
  tt.equal(strict.auth.stats().replays, 2)
  for (const w of [0, 33, 1.5]) {
    tt.throws(() => new DigestServer({ clock: strict.clock, rng: new SeededRng(1), accounts: strict.accounts, realm: REALM, limits: { ncWindow: w } }), /ncWindow/)
  }
})

t.test('after a restart (same node id) nonces of the earlier run are stale, not replayable', async tt => {
  const secret = new Uint8Array(32).fill(9)
  const first = await setup({ secret, nodeId: 'node-A' })
  const ch = await respond(first.auth, request('REGISTER'))
  const signed = answer(request('REGISTER'), ch, 'alice', 'alice-pw')
  tt.equal((await first.auth.authenticate(signed.clone(), src())).action, 'pass')
  first.clock.advance(5_000)
  const again = new DigestServer({ clock: first.clock, rng: new SeededRng(8), accounts: first.accounts, realm: REALM, secret, nodeId: 'node-A' })
  const res = await respond(again, signed.clone())
  tt.equal(res.status, 401, 'the captured request is refused by the restarted node')
  tt.match(res.get('www-authenticate')!, /stale=true/)
  tt.equal((await again.authenticate(answer(request('REGISTER'), res, 'alice', 'alice-pw'), src())).action, 'pass')
  // a nonce of the earlier format (no node part, HMAC over ts|rand|realm) is recognised and answered stale
  const ts = Math.floor(first.clock.now()).toString(16)
  const legacy = `${ts}.abcdefghijkl.${createHmac('sha256', Buffer.from(secret)).update(`${ts}|abcdefghijkl|${REALM}`).digest().subarray(0, 16).toString('base64url')}`
  const old = res.clone()
  old.set('www-authenticate', res.get('www-authenticate')!.replace(/nonce="[^"]+"/, `nonce="${legacy}"`).replace(/, stale=true/, ''))
  const lres = await respond(again, answer(request('REGISTER'), old, 'alice', 'alice-pw'))
  tt.match(lres.get('www-authenticate')!, /stale=true/, 'legacy nonce: stale=true')
  tt.equal(again.stats().foreignNonces, 1)
})

t.test('identity: REGISTER To and INVITE From must be the authenticated user (403)', async tt => {
  const { auth } = await setup()
  const reg = request('REGISTER', { from: 'alice', to: 'bob' })
  const r = answer(reg, await respond(auth, reg), 'alice', 'alice-pw')
  const res = await respond(auth, r)
  tt.equal(res.status, 403)
  tt.match(res.reason, /To user does not match/)
  const inv = request('INVITE', { from: 'bob', to: 'alice' })
  const r2 = answer(inv, await respond(auth, inv), 'alice', 'alice-pw')
  const res2 = await respond(auth, r2)
  tt.equal(res2.status, 403)
  tt.match(res2.reason, /From user does not match/)
  const { auth: lax } = await setup({ checkIdentity: false })
  const r3 = answer(reg, await respond(lax, reg), 'alice', 'alice-pw')
  tt.equal((await lax.authenticate(r3, src())).action, 'pass', 'checkIdentity: false')
})

t.test('disabled account → 403; changes reach the credential cache', async tt => {
  const { auth, accounts } = await setup({ credentialTtlMs: 3_600_000 })
  const ok = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw')
  tt.equal((await auth.authenticate(ok, src())).action, 'pass')
  await accounts.updateUser('alice', REALM, { enabled: false })
  const r = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw')
  const res = await respond(auth, r)
  tt.equal(res.status, 403)
  tt.match(res.reason, /disabled/)
  await accounts.updateUser('alice', REALM, { enabled: true, password: 'changed-pw' })
  const old = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw')
  tt.equal((await respond(auth, old)).status, 401, 'old password refused at once')
  const neu = answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'changed-pw')
  tt.equal((await auth.authenticate(neu, src())).action, 'pass')
})

t.test('credential cache: hits within the TTL, refetch after', async tt => {
  let reads = 0
  const clock = new SimClock(0)
  const store = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock })
  await store.addUser({ user: 'alice', realm: REALM, password: 'alice-pw' })
  const accounts = { getUser: async (u: string, r: string) => { reads++; return await store.getUser(u, r) } }
  const auth = new DigestServer({ clock, rng: new SeededRng(3), accounts, realm: REALM, credentialTtlMs: 1000 })
  const go = async (): Promise<string> => (await auth.authenticate(answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw'), src())).action
  tt.equal(await go(), 'pass'); tt.equal(await go(), 'pass')
  tt.equal(reads, 1)
  clock.advance(1001)
  tt.equal(await go(), 'pass')
  tt.equal(reads, 2)
  // concurrent lookups coalesce
  clock.advance(1001)
  const reqs = await Promise.all([1, 2, 3].map(async () => answer(request('REGISTER'), await respond(auth, request('REGISTER')), 'alice', 'alice-pw')))
  await Promise.all(reqs.map(async r => await auth.authenticate(r, src())))
  tt.equal(reads, 3)
})

t.test('malformed or incomplete credentials → 400 with a reason, never a crash', async tt => {
  const { auth } = await setup()
  const ch = await respond(auth, request('REGISTER'))
  const good = answer(request('REGISTER'), ch, 'alice', 'alice-pw')
  const p = parseAuthHeader(good.get('authorization')!)
  const cases: Array<[string, (m: Map<string, string>) => void, RegExp]> = [
    ['no username', m => { m.delete('username') }, /without username/],
    ['no qop', m => { m.delete('qop') }, /qop=auth is required/],
    ['bad nc', m => { m.set('nc', '1') }, /nc must be 8 hex/],
    ['nc 0', m => { m.set('nc', '00000000') }, /nc must be/],
    ['bad qop', m => { m.set('qop', 'foo') }, /unsupported qop/],
    ['algorithm not offered', m => { m.set('algorithm', 'SHA-512-256') }, /not offered/],
    ['unknown algorithm', m => { m.set('algorithm', 'XYZ') }, /not offered/],
    ['no cnonce', m => { m.delete('cnonce') }, /without cnonce/],
    ['long username', m => { m.set('username', 'a'.repeat(257)) }, /too long/],
    ['response not hex', m => { m.set('response', 'zz') }, /not hex/],
    ['uri mismatch', m => { m.set('uri', 'sip:evil.example.com') }, /does not match the Request-URI/]
  ]
  for (const [name, edit, re] of cases) {
    const params = new Map(p.params)
    edit(params)
    const r = request('REGISTER')
    r.set('Authorization', formatAuthHeader({ scheme: 'Digest', params }))
    const res = await respond(auth, r)
    tt.equal(res.status, 400, name)
    tt.match(res.reason, re, name)
  }
  const r = request('REGISTER')
  r.set('Authorization', 'Digest username="unterminated')
  const res = await respond(auth, r)
  tt.equal(res.status, 400)
  tt.match(res.reason, /malformed Authorization header/)
  const basic = request('REGISTER')
  basic.set('Authorization', 'Basic YWxpY2U6eA==')
  tt.equal((await respond(auth, basic)).status, 401, 'other schemes are ignored (challenged)')
  // a uri with extra parameters naming the same resource is fine
  const reqT = request('REGISTER', { uri: 'sip:example.org;transport=tcp' })
  const chT = await respond(auth, reqT)
  const ansT = answer(request('REGISTER'), chT, 'alice', 'alice-pw')
  ansT.uri = 'sip:example.org;transport=tcp'
  const pp = parseAuthHeader(ansT.get('authorization')!).params
  pp.set('response', digestResponse({ algorithm: 'SHA-256', ha1: digestHa1('SHA-256', 'alice', REALM, 'alice-pw'), nonce: pp.get('nonce')!, nc: '00000001', cnonce: pp.get('cnonce')!, qop: 'auth', method: 'REGISTER', uri: 'sip:example.org' }))
  ansT.set('Authorization', formatAuthHeader({ scheme: 'Digest', params: pp }))
  tt.equal((await auth.authenticate(ansT, src())).action, 'pass')
})

t.test('SHA-512-256 when offered', async tt => {
  const { auth } = await setup({ algorithms: ['SHA-512-256', 'SHA-256', 'MD5'] })
  const ch = await respond(auth, request('REGISTER'))
  tt.equal(ch.getAll('www-authenticate').length, 3)
  tt.match(ch.get('www-authenticate')!, /algorithm=SHA-512-256/)
  tt.equal((await auth.authenticate(answer(request('REGISTER'), ch, 'alice', 'alice-pw', { alg: 'SHA-512-256' }), src())).action, 'pass')
})

t.test('limiter memory stays bounded under a spray of sources', async tt => {
  const { auth } = await setup({ limits: { maxTracked: 100, maxFailuresPerSource: 2, maxFailuresPerUser: 0 } })
  const ch = await respond(auth, request('REGISTER'))
  for (let i = 0; i < 1000; i++) {
    const s = src(`10.${(i >> 8) & 255}.${i & 255}.1`)
    await respond(auth, answer(request('REGISTER'), ch, 'alice', 'bad', { cnonce: `c${i}` }), s)
  }
  const internals = auth as unknown as { sources: { size: number }, users: { size: number } }
  tt.equal(internals.sources.size, 100)
  tt.equal(internals.users.size, 0, 'maxFailuresPerUser 0 disables the per-user limiter')
})

t.test('fuzz: mutated credentials never throw, always a SIP answer or a pass', async tt => {
  const { auth } = await setup({ limits: { maxFailuresPerSource: 0, maxFailuresPerUser: 0 } })
  const rng = new SeededRng(99)
  const ch = await respond(auth, request('REGISTER'))
  const good = answer(request('REGISTER'), ch, 'alice', 'alice-pw').get('authorization')!
  const alphabet = 'abcdefABCDEF0123456789",=\\ \t;:@<>%'
  let answered = 0
  for (let i = 0; i < 2000; i++) {
    let v = good
    const edits = 1 + rng.int(4)
    for (let e = 0; e < edits; e++) {
      const at = rng.int(v.length + 1)
      const op = rng.int(3)
      if (op === 0) v = v.slice(0, at) + v.slice(at + 1)
      else if (op === 1) v = v.slice(0, at) + alphabet[rng.int(alphabet.length)] + v.slice(at)
      else v = v.slice(0, at) + alphabet[rng.int(alphabet.length)] + v.slice(at + 1)
    }
    const r = request('REGISTER')
    r.set('Authorization', v)
    const o = await auth.authenticate(r, src())
    if (o.action === 'pass') tt.comment(`passed: ${v}`)
    if (o.action === 'respond') { answered++; if (![400, 401, 403].includes(o.response.status)) tt.fail(`unexpected ${o.response.status} for ${v}`) }
  }
  tt.ok(answered > 1900, `${answered} of 2000 mutations refused`)
})
