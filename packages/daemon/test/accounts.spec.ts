// Accounts in the daemon: auth config keys, the token-protected /users and /groups admin
// routes, `sipring user|group` in direct mode (no daemon) and through the admin API (daemon running),
// and a REGISTER challenged then accepted by a daemon started with auth on.
import t from 'tap'
import { createSocket } from 'node:dgram'
import { mkdtempSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryLogger } from '@sipring/testkit'
import { digestResponse, formatAuthHeader, ha1, parseAuthHeader } from '@sipring/sip'
import { ConfigError, defaultConfig, loadConfig, type SipringConfig } from '../src/config.js'
import { startDaemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { main } from '../src/main.js'

const tmp = (): string => mkdtempSync(join(tmpdir(), 'sipring-acc-'))
function config (dataDir: string, over: Partial<SipringConfig> = {}): SipringConfig {
  return { ...defaultConfig(), dataDir, sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }], admin: { host: '127.0.0.1', port: 0 }, domains: ['example.org'], ...over }
}

async function cli (args: string[], stdin?: string): Promise<{ code: number, out: string, err: string }> {
  let out = ''; let err = ''
  const code = await main(args, {}, { out: s => { out += s + '\n' }, err: s => { err += s + '\n' }, ...(stdin !== undefined ? { stdin: async () => stdin } : {}) })
  return { code, out, err }
}

function issues (fn: () => unknown): string[] {
  try { fn() } catch (err) { if (err instanceof ConfigError) return err.issues; throw err }
  return []
}

t.test('config: auth from file, env and flags; bad values are clear errors', async t => {
  const c = loadConfig(['--auth', 'true', '--domain', 'example.org'], { SIPRING_AUTH_ALGORITHMS: 'md5,sha-256' }).config
  t.match(c.auth, { enabled: true, algorithms: ['MD5', 'SHA-256'], nonceTtl: 300, maxFailuresPerSource: 10, banStatus: 403 })
  t.equal(loadConfig(['--auth-realm', 'Voice.Example.org'], {}).config.auth.realm, 'voice.example.org')
  t.equal(loadConfig([], { SIPRING_AUTH: 'on', SIPRING_AUTH_REALM: 'x.org' }).config.auth.enabled, true)
  t.same(issues(() => loadConfig(['--auth', 'true'], {})), ['auth.realm: authentication needs a realm (--auth-realm) or a domain (--domain)'])
  t.match(issues(() => loadConfig(['--auth', 'maybe'], {})), [/^auth\.enabled: expected true or false, got "maybe" \(from --auth\)/])
  t.match(issues(() => loadConfig(['--auth-algorithms', 'SHA-1'], {})), [/^auth\.algorithms\[0\]: expected one of SHA-256, MD5, SHA-512-256, got "SHA-1"/])
  t.match(issues(() => loadConfig(['--auth-realm', 'bad realm'], {})), [/^auth\.realm: expected a domain name/])
})

t.test('config file: the auth mapping', async t => {
  const dir = tmp()
  const { writeFileSync } = await import('node:fs')
  const f = join(dir, 'c.yaml')
  writeFileSync(f, 'domains: [example.org]\nauth:\n  enabled: true\n  banStatus: 429\n  banTime: 30\n  maxFailuresPerUser: 0\n')
  t.match(loadConfig(['--config', f], {}).config.auth, { enabled: true, banStatus: 429, banTime: 30, maxFailuresPerUser: 0, maxFailuresPerSource: 10 })
  writeFileSync(f, 'auth:\n  enabled: true\n  realm: example.org\n  banStatus: 404\n  password: x\n')
  t.match(issues(() => loadConfig(['--config', f], {})), [/auth\.password: unknown key/, /auth\.banStatus: expected 403, 429 or 503, got 404/])
})

t.test('sipring user/group without a daemon: direct on the data dir', async t => {
  const dir = tmp()
  const d = ['--data', dir, '--realm', 'example.org']
  let r = await cli(['user', 'add', 'alice', '--password', 'alice-pw', ...d])
  t.equal(r.code, 0, r.err)
  t.match(r.out, /added alice@example\.org {2}enabled/)
  r = await cli(['user', 'add', 'bob', '--password-stdin', '--max-contacts', '2', ...d], 'bob-pw\n')
  t.equal(r.code, 0, r.err)
  t.match(r.out, /maxContacts=2/)
  t.equal((await cli(['user', 'add', 'carol', ...d])).code, 2, 'a password is required')
  r = await cli(['user', 'add', 'alice', '--password', 'x1234', ...d])
  t.equal(r.code, 1)
  t.match(r.err, /already exists/)
  r = await cli(['user', 'add', 'bad user', '--password', 'x1234', ...d])
  t.equal(r.code, 2)
  t.match(r.err, /not allowed/)
  r = await cli(['user', 'passwd', 'alice', '--password', 'new-pw', ...d])
  t.equal(r.code, 0)
  r = await cli(['user', 'show', 'alice', '--json', ...d])
  const shown = JSON.parse(r.out)
  t.match(shown, { user: 'alice', realm: 'example.org', enabled: true })
  t.notOk('ha1' in shown)
  t.equal((await cli(['user', 'disable', 'alice', ...d])).code, 0)
  t.match((await cli(['user', 'list', '--data', dir])).out, /alice@example\.org {2}DISABLED\nbob@example\.org/)
  r = await cli(['group', 'add', 'sales@example.org', '--member', 'alice@example.org', '--member', 'bob@example.org', '--policy', 'hunt', '--data', dir])
  t.equal(r.code, 0, r.err)
  r = await cli(['group', 'members', 'sales@example.org', '--remove', 'sip:alice@example.org', '--data', dir])
  t.match(r.out, /sip:sales@example\.org \(hunt\)\n {2}sip:bob@example\.org\n$/)
  r = await cli(['group', 'add', 'g@example.org', '--data', dir])
  t.equal(r.code, 2)
  t.match(r.err, /at least one --member/)
  r = await cli(['group', 'add', 'g@example.org', '--member', 'x@example.org', '--policy', 'random', '--data', dir])
  t.match(r.err, /policy must be one of ring-all, hunt/)
  t.equal((await cli(['group', 'del', 'sales@example.org', '--data', dir])).code, 0)
  t.match((await cli(['group', 'list', '--data', dir])).out, /\(no groups\)/)
  t.equal((await cli(['user', 'del', 'bob', ...d])).code, 0)
  r = await cli(['user', 'del', 'bob', ...d])
  t.equal(r.code, 1)
  t.match(r.err, /no user bob@example\.org/)
  t.equal((await cli(['user', 'frobnicate', 'x'])).code, 2)
})

function register (port: number, user: string, authorization?: string): Promise<string> {
  const sock = createSocket('udp4')
  return new Promise<string>((resolve, reject) => {
    sock.bind(0, '127.0.0.1', () => {
      const lp = sock.address().port
      const msg = [
        `REGISTER sip:example.org SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${lp};branch=z9hG4bKacc${lp};rport`, 'Max-Forwards: 70',
        `From: <sip:${user}@example.org>;tag=t${lp}`, `To: <sip:${user}@example.org>`, `Call-ID: c${lp}`, 'CSeq: 1 REGISTER',
        `Contact: <sip:${user}@127.0.0.1:${lp}>`, ...(authorization !== undefined ? [`Authorization: ${authorization}`] : []), 'Content-Length: 0', '', ''
      ].join('\r\n')
      const timer = setTimeout(() => { sock.close(); reject(new Error('no answer')) }, 3000)
      sock.on('message', m => { clearTimeout(timer); sock.close(); resolve(m.toString()) })
      sock.send(msg, port, '127.0.0.1')
    })
  })
}

t.test('daemon with auth on: token and secret files, admin API, 401 then 200, CLI through the API', async t => {
  const dir = tmp()
  const cfg = config(dir, { auth: { ...defaultConfig().auth, enabled: true } })
  const d = await startDaemon(cfg, { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() })
  t.teardown(() => d.stop())
  const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim()
  t.ok(token.length >= 32)
  t.equal(statSync(join(dir, 'admin-token')).mode & 0o777, 0o600, 'token file is 0600')
  t.equal(statSync(join(dir, 'auth-secret')).mode & 0o777, 0o600, 'secret file is 0600')
  const admin = d.adminAddress()!
  const base = `http://127.0.0.1:${admin.port}`
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = { authorization: `Bearer ${token}` }): Promise<{ status: number, body: any }> => {
    const res = await fetch(base + path, { method, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) })
    return { status: res.status, body: await res.json() }
  }
  t.equal((await call('GET', '/users', undefined, {})).status, 401)
  t.equal((await call('GET', '/users', undefined, { authorization: 'Bearer wrong' })).status, 403)
  t.equal((await call('GET', '/status', undefined, {})).status, 200, 'status stays open')
  let r = await call('POST', '/users', { user: 'alice', password: 'alice-pw' })
  t.equal(r.status, 201)
  t.match(r.body, { user: 'alice', realm: 'example.org', aor: 'sip:alice@example.org', enabled: true })
  r = await call('POST', '/users', '{not json')
  t.equal(r.status, 400)
  t.match(r.body.error, /not valid JSON/)
  const noType = await fetch(base + '/users', { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{}' })
  t.equal(noType.status, 415)
  r = await call('POST', '/users', { user: 'bob' })
  t.equal(r.status, 400)
  t.match(r.body.error, /password is required/)
  t.equal((await call('GET', '/users/nobody')).status, 404)
  t.equal((await call('PUT', '/users/alice', {})).status, 405)
  r = await call('PATCH', '/users/alice', {})
  t.equal(r.status, 400)
  t.match(r.body.error, /nothing to change/)
  t.equal((await call('GET', '/users?realm=example.org&x=1')).status, 400)
  r = await call('POST', '/groups', { group: 'team@example.org', members: ['alice@example.org'] })
  t.equal(r.status, 201)
  r = await call('PATCH', '/groups/' + encodeURIComponent('sip:team@example.org'), { add: ['bob@example.org'], policy: 'hunt' })
  t.match(r.body, { group: 'sip:team@example.org', members: ['sip:alice@example.org', 'sip:bob@example.org'], policy: 'hunt' })
  t.equal((await call('GET', '/auth/bans')).status, 200)

  // SIP: challenge, then credentials
  const port = d.listeners()[0]!.port
  const ch = await register(port, 'alice')
  t.match(ch, /^SIP\/2\.0 401 Unauthorized/)
  const www = /WWW-Authenticate: (.*)\r\n/.exec(ch)![1]!
  const p = parseAuthHeader(www).params
  t.equal(p.get('algorithm'), 'SHA-256')
  const resp = digestResponse({ algorithm: 'SHA-256', ha1: ha1('SHA-256', 'alice', 'example.org', 'alice-pw'), nonce: p.get('nonce')!, nc: '00000001', cnonce: 'abc', qop: 'auth', method: 'REGISTER', uri: 'sip:example.org' })
  const authz = formatAuthHeader({ scheme: 'Digest', params: new Map([['username', 'alice'], ['realm', 'example.org'], ['nonce', p.get('nonce')!], ['uri', 'sip:example.org'], ['response', resp], ['algorithm', 'SHA-256'], ['cnonce', 'abc'], ['qop', 'auth'], ['nc', '00000001']]) })
  t.match(await register(port, 'alice', authz), /^SIP\/2\.0 200 OK/)
  t.match(await register(port, 'alice', authz), /^SIP\/2\.0 401 /, 'the same nc again is refused')

  // the CLI sees the daemon holds the db and goes through the admin API
  const c = await cli(['user', 'add', 'carol', '--password', 'carol-pw', '--data', dir, '--admin', `127.0.0.1:${admin.port}`])
  t.equal(c.code, 0, c.err)
  t.match(c.out, /added carol@example\.org/)
  const l = await cli(['user', 'list', '--data', dir, '--admin', `127.0.0.1:${admin.port}`])
  t.match(l.out, /alice@example\.org.*\ncarol@example\.org/)
  const bad = await cli(['user', 'add', 'x y', '--password', 'abcdef', '--data', dir, '--admin', `127.0.0.1:${admin.port}`])
  t.equal(bad.code, 2)
  t.match(bad.err, /not allowed/)
  const down = await cli(['user', 'list', '--data', dir, '--admin', '127.0.0.1:1'])
  t.equal(down.code, 1)
  t.match(down.err, /admin API at 127\.0\.0\.1:1 cannot be reached/)

  // secret persists across restarts (nonces of one node are recognised by the others sharing it); a
  // nonce from before the restart is answered stale=true: its nc history is gone, so it could be replayed
  const secret = readFileSync(join(dir, 'auth-secret'), 'utf8')
  await d.stop()
  const d2 = await startDaemon(cfg, { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() })
  t.teardown(() => d2.stop())
  t.equal(readFileSync(join(dir, 'auth-secret'), 'utf8'), secret)
  t.equal(readFileSync(join(dir, 'admin-token'), 'utf8').trim(), token)
  const authz2 = authz.replace('nc=00000001', 'nc=00000002').replace(/response="[^"]+"/, `response="${digestResponse({ algorithm: 'SHA-256', ha1: ha1('SHA-256', 'alice', 'example.org', 'alice-pw'), nonce: p.get('nonce')!, nc: '00000002', cnonce: 'abc', qop: 'auth', method: 'REGISTER', uri: 'sip:example.org' })}"`)
  const again = await register(d2.listeners()[0]!.port, 'alice', authz2)
  t.match(again, /^SIP\/2\.0 401 /, 'a nonce from before the restart is not accepted (its nc history is gone)')
  const p2 = parseAuthHeader(/WWW-Authenticate: (.*)\r\n/.exec(again)![1]!).params
  t.equal(p2.get('stale'), 'true', 'stale=true: the phone retries with the new nonce without asking its user')
  const resp3 = digestResponse({ algorithm: 'SHA-256', ha1: ha1('SHA-256', 'alice', 'example.org', 'alice-pw'), nonce: p2.get('nonce')!, nc: '00000001', cnonce: 'abc', qop: 'auth', method: 'REGISTER', uri: 'sip:example.org' })
  const authz3 = formatAuthHeader({ scheme: 'Digest', params: new Map([['username', 'alice'], ['realm', 'example.org'], ['nonce', p2.get('nonce')!], ['uri', 'sip:example.org'], ['response', resp3], ['algorithm', 'SHA-256'], ['cnonce', 'abc'], ['qop', 'auth'], ['nc', '00000001']]) })
  t.match(await register(d2.listeners()[0]!.port, 'alice', authz3), /^SIP\/2\.0 200 OK/, 'same password, new nonce: 200')
})

t.test('help for user and group', async t => {
  const u = await cli(['help', 'user'])
  t.equal(u.code, 0)
  t.match(u.out, /Usage: sipring user <command>/)
  t.match(u.out, /--password-stdin/)
  const g = await cli(['group', '--help'])
  t.equal(g.code, 0)
  t.match(g.out, /--policy ring-all\|hunt/)
  t.equal((await cli(['user'])).code, 2, 'no subcommand is a usage error')
  t.match((await cli(['help'])).out, /sipring user add\|passwd\|del/)
})
