// Digest authentication against a real `sipring start --auth true`: users created over the
// token-protected admin API, SIPp registers them with their passwords (401 → REGISTER with
// Authorization → 200, from an -inf CSV holding the credentials), a wrong password never binds, and
// repeated failures from one source end in a ban (403 + Retry-After). SIPp 3.6 answers only the first
// challenge and only MD5, so the node offers MD5 first here (auth.algorithms) and SIPp is given
// -auth_uri (it puts the server address in the digest uri, not the Request-URI).
import t from 'tap'
import { createSocket } from 'node:dgram'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { requireTools, target } from '../lib/interop.js'
import { freePort } from '../lib/ports.js'
import { tempDir } from '../lib/proc.js'
import { DOMAIN, startSipring, type TestServer } from '../lib/servers.js'
import { SIPP_DIR, describe, runSipp, userNames } from '../lib/sipp.js'

const SCENARIO = join(SIPP_DIR, 'register-auth.xml')
const MAX_FAILURES = 5

function credentialsCsv (path: string, users: Array<[string, string]>): void {
  writeFileSync(path, ['SEQUENTIAL', ...users.map(([u, p]) => `${u};[authentication username=${u} password=${p}]`)].join('\n') + '\n')
}

/** One REGISTER over UDP, the first response's status line and headers. */
async function rawRegister (port: number, user: string): Promise<string> {
  const sock = createSocket('udp4')
  await new Promise<void>(resolve => sock.bind(0, '127.0.0.1', resolve))
  const lp = sock.address().port
  const msg = [
    `REGISTER sip:${DOMAIN} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${lp};branch=z9hG4bKraw${lp};rport`, 'Max-Forwards: 70',
    `From: <sip:${user}@${DOMAIN}>;tag=raw${lp}`, `To: <sip:${user}@${DOMAIN}>`, `Call-ID: raw${lp}@127.0.0.1`, 'CSeq: 1 REGISTER',
    `Contact: <sip:${user}@127.0.0.1:${lp}>`, 'Content-Length: 0', '', ''
  ].join('\r\n')
  try {
    return await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => { reject(new Error('no answer to REGISTER')) }, 3000)
      sock.on('message', m => { clearTimeout(timer); resolve(m.toString()) })
      sock.send(msg, port, '127.0.0.1')
    })
  } finally {
    sock.close()
  }
}

if (requireTools(t, ['sipp'])) {
  const kind = target(t)
  if (kind !== 'sipring') {
    t.pass('not applicable', { skip: `the auth test runs against sipring only, not ${kind}` })
  } else {
    const tmp = tempDir('auth')
    let server: TestServer | undefined
    let token = ''
    let port = 0
    t.teardown(async () => { await server?.stop(); tmp.cleanup() })

    const api = async (method: string, path: string, body?: unknown, auth = `Bearer ${token}`): Promise<{ status: number, body: any }> => {
      const res = await fetch(`http://127.0.0.1:${server!.adminPort!}${path}`, {
        method,
        headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(5000)
      })
      return { status: res.status, body: await res.json() }
    }

    t.before(async () => {
      port = await freePort()
      const cfg = join(tmp.dir, 'sipring.yaml')
      writeFileSync(cfg, [
        'auth:', '  enabled: true', `  realm: ${DOMAIN}`, '  algorithms: [MD5, SHA-256]',
        `  maxFailuresPerSource: ${MAX_FAILURES}`, '  maxFailuresPerUser: 1000', '  banTime: 120', ''
      ].join('\n'))
      server = await startSipring({ listen: [{ proto: 'udp', host: '127.0.0.1', port }, { proto: 'tcp', host: '127.0.0.1', port }], extraArgs: ['--config', cfg] })
      token = readFileSync(join(server.dataDir!, 'admin-token'), 'utf8').trim()
    })

    const users = userNames('auth', 300).map((u, i): [string, string] => [u, `pw-${i}-${u}`])

    t.test('admin API: token required, users created, bad input → 400 with a message', async t => {
      t.equal((await api('GET', '/users', undefined, '')).status, 401, 'no token → 401')
      t.equal((await api('GET', '/users', undefined, 'Bearer nope')).status, 403, 'wrong token → 403')
      for (const [user, password] of users) {
        const r = await api('POST', '/users', { user, password })
        if (r.status !== 201) { t.fail(`POST /users ${user}: ${r.status} ${JSON.stringify(r.body)}`); return }
      }
      const list = await api('GET', '/users')
      t.equal(list.body.users.length, users.length, `${users.length} users listed`)
      t.notOk(JSON.stringify(list.body).includes('ha1'), 'no HA1 in the answers')
      const dup = await api('POST', '/users', { user: users[0]![0], password: 'whatever' })
      t.equal(dup.status, 409)
      const bad = await api('POST', '/users', { user: 'a b', password: 'whatever' })
      t.equal(bad.status, 400)
      t.match(bad.body.error, /not allowed/)
      const extra = await api('POST', '/users', { user: 'x', password: 'whatever', admin: true })
      t.equal(extra.status, 400)
      t.match(extra.body.error, /unknown field "admin"/)
      const g = await api('POST', '/groups', { group: `sales@${DOMAIN}`, members: [`${users[0]![0]}@${DOMAIN}`, `${users[1]![0]}@${DOMAIN}`], policy: 'hunt' })
      t.equal(g.status, 201)
      t.same(g.body.members, [`sip:${users[0]![0]}@${DOMAIN}`, `sip:${users[1]![0]}@${DOMAIN}`])
    })

    t.test(`SIPp registers ${users.length} users with digest credentials (-inf CSV), 0 failures`, async t => {
      const csv = join(tmp.dir, 'users.csv')
      credentialsCsv(csv, users)
      const localPort = await freePort()
      const r = await runSipp({
        scenario: SCENARIO, remote: `127.0.0.1:${port}`, localPort, calls: users.length, rate: 300, inf: csv,
        keys: { domain: DOMAIN, contact: `127.0.0.1:${localPort}`, expires: '600' },
        extraArgs: ['-auth_uri', DOMAIN], recvTimeoutMs: 5000, timeoutMs: 60000
      })
      t.comment(describe(r))
      t.equal(r.failed, 0, `no failed REGISTER (${describe(r)})\n${r.errors.slice(0, 1500)}`)
      t.equal(r.successful, users.length)
      for (const [u] of [users[0]!, users[150]!, users[users.length - 1]!]) {
        t.equal((await server!.bindings(u)).length, 1, `${u} is bound`)
      }
      const st = await server!.admin!('/status')
      t.equal(st.body.counts.aors, users.length)
    })

    t.test('a REGISTER without credentials gets 401 with an MD5 and a SHA-256 challenge', async t => {
      const res = await rawRegister(port, 'someone')
      t.match(res, /^SIP\/2\.0 401 Unauthorized\r\n/)
      t.match(res, /WWW-Authenticate: Digest realm="sipring\.test", nonce="[^"]+", algorithm=MD5, qop="auth"/)
      t.match(res, /WWW-Authenticate: Digest .*algorithm=SHA-256/)
    })

    t.test(`wrong passwords never bind; after ${MAX_FAILURES} failures the source is banned (403 + Retry-After)`, async t => {
      const csv = join(tmp.dir, 'wrong.csv')
      const wrong = userNames('authwrong', 8).map((u): [string, string] => [u, 'not-the-password'])
      for (const [user] of wrong) await api('POST', '/users', { user, password: 'the-real-password' })
      credentialsCsv(csv, wrong)
      const localPort = await freePort()
      const r = await runSipp({
        scenario: SCENARIO, remote: `127.0.0.1:${port}`, localPort, calls: wrong.length, rate: 50, inf: csv,
        keys: { domain: DOMAIN, contact: `127.0.0.1:${localPort}`, expires: '600' },
        extraArgs: ['-auth_uri', DOMAIN], recvTimeoutMs: 3000, timeoutMs: 30000
      })
      t.equal(r.successful, 0, `no REGISTER with a wrong password succeeds (${describe(r)})`)
      t.equal(r.failed, wrong.length)
      for (const [u] of wrong.slice(0, 3)) t.same(await server!.bindings(u), [], `${u} not bound`)
      const res = await rawRegister(port, users[0]![0])
      t.match(res, /^SIP\/2\.0 403 Forbidden \(too many failed authentications\)\r\n/, 'the source is banned')
      t.match(res, /Retry-After: \d+\r\n/)
      const bans = await api('GET', '/auth/bans')
      t.equal(bans.status, 200)
      t.same(bans.body.sources.map((b: { key: string }) => b.key), ['127.0.0.1'])
      const st = await server!.admin!('/status')
      t.equal(st.status, 200)
    })
  }
}
