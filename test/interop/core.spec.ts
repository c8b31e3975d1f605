// Core nodes with real daemons: 2 core nodes (`sipring start --role core`, accounts replicated between
// them) and 2 authenticating super nodes reading the accounts from them over the libp2p overlay.
// Users are created on core 1's admin API (a write through a super node is refused: only core nodes write);
// SIPp registers them with digest credentials (-inf CSV) at a steady rate at both super nodes while
// core 1 is SIGKILLed mid-run: 0 failed registrations (the super nodes fail over to core 2).
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { peerIdOfKeyFile } from '@sipring/overlay-libp2p'
import { requireTools, target } from '../lib/interop.js'
import { freePort } from '../lib/ports.js'
import { sleep, tempDir } from '../lib/proc.js'
import { DOMAIN, startSipring, type TestServer } from '../lib/servers.js'
import { SIPP_DIR, describe, runSipp, userNames } from '../lib/sipp.js'
import { waitUntil } from '../lib/overlay.js'

const SCENARIO = join(SIPP_DIR, 'register-auth.xml')
const PER_NODE = 240
const RATE = 30 // REGISTERs per second at each super node (8 s of load)

interface Spec { name: string, dir: string, cleanup: () => void, adminPort: number, overlayPort: number, sipPort: number, id: string, addr: string }

async function spec (name: string): Promise<Spec> {
  const d = tempDir(`core-${name}`)
  const overlayPort = await freePort()
  const { peerId } = await peerIdOfKeyFile(join(d.dir, 'peer.key')) // the identity the daemon will use
  return { name, dir: d.dir, cleanup: d.cleanup, adminPort: await freePort(), overlayPort, sipPort: await freePort(), id: peerId, addr: `/ip4/127.0.0.1/tcp/${overlayPort}/p2p/${peerId}` }
}

function credentialsCsv (path: string, users: Array<[string, string]>): void {
  writeFileSync(path, ['SEQUENTIAL', ...users.map(([u, p]) => `${u};[authentication username=${u} password=${p}]`)].join('\n') + '\n')
}

if (requireTools(t, ['sipp'])) {
  const kind = target(t)
  if (kind !== 'sipring') {
    t.pass('not applicable', { skip: `core nodes are a sipring feature, not ${kind}'s` })
  } else {
    const specs: Spec[] = []
    const servers = new Map<string, TestServer>()
    t.teardown(async () => {
      await Promise.all([...servers.values()].map(async s => { await s.stop().catch(() => {}) }))
      for (const s of specs) s.cleanup()
    })
    let c1: Spec, c2: Spec, s1: Spec, s2: Spec
    const api = async (s: Spec, method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> => {
      const token = readFileSync(join(s.dir, 'admin-token'), 'utf8').trim()
      const res = await fetch(`http://127.0.0.1:${s.adminPort}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(10_000)
      })
      return { status: res.status, body: await res.json() }
    }

    t.before(async () => {
      c1 = await spec('c1'); c2 = await spec('c2'); s1 = await spec('s1'); s2 = await spec('s2')
      specs.push(c1, c2, s1, s2)
      const cfg = join(s1.dir, 'auth.yaml')
      writeFileSync(cfg, ['auth:', '  enabled: true', `  realm: ${DOMAIN}`, '  algorithms: [MD5, SHA-256]', '  maxFailuresPerSource: 0', '  maxFailuresPerUser: 0', ''].join('\n'))
      const core = (me: Spec, other: Spec): Promise<TestServer> => startSipring({
        listen: [], dataDir: me.dir, adminPort: me.adminPort,
        extraArgs: ['--role', 'core', '--overlay-listen', `/ip4/127.0.0.1/tcp/${me.overlayPort}`, '--core-node', other.addr]
      })
      const sup = (me: Spec, join: Spec[]): Promise<TestServer> => startSipring({
        listen: [{ proto: 'udp', host: '127.0.0.1', port: me.sipPort }, { proto: 'tcp', host: '127.0.0.1', port: me.sipPort }],
        dataDir: me.dir, adminPort: me.adminPort,
        extraArgs: ['--config', cfg, '--overlay-listen', `/ip4/127.0.0.1/tcp/${me.overlayPort}`, '--advertise', '127.0.0.1', '--replicas', '2',
          '--core-node', c1.addr, '--core-node', c2.addr, '--overlay', 'true', ...join.flatMap(j => ['--join', j.addr])]
      })
      const started = await Promise.all([core(c1, c2), core(c2, c1), sup(s1, []), sup(s2, [s1])])
      ;[c1, c2, s1, s2].forEach((s, i) => servers.set(s.name, started[i]!))
    })

    const users = userNames('core', 2 * PER_NODE).map((u, i): [string, string] => [u, `pw-${i}-${u}`])

    t.test('core nodes: status, users created on core 1 replicate to core 2, super nodes may not write', async t => {
      const st = await api(c1, 'GET', '/status')
      t.equal(st.status, 200)
      t.equal(st.body.role, 'core')
      t.equal(st.body.nodeId, c1.id, 'the core node runs with the precomputed identity')
      t.same(st.body.listeners, [], 'no SIP listener on a core node')
      for (const [user, password] of users) {
        const r = await api(c1, 'POST', '/users', { user, password })
        if (r.status !== 201) { t.fail(`POST /users ${user} on core 1: ${r.status} ${JSON.stringify(r.body)}`); return }
      }
      await waitUntil('core 2 has every user', async () => {
        const n = (await api(c2, 'GET', '/users')).body.users.length as number
        return n === users.length || `${n} of ${users.length}`
      }, 20_000)
      t.pass(`${users.length} users on both core nodes`)
      // a super node may read accounts, not write them: the core nodes refuse (403, with the reason)
      const fw = await api(s1, 'POST', '/users', { user: 'forwarded', password: 'forwarded-pw' })
      t.equal(fw.status, 403, 'POST /users on a super node → refused by the core nodes')
      t.match(fw.body.error, /core nodes only/)
      t.equal((await api(c1, 'GET', '/users/forwarded')).status, 404, 'nothing written')
      const listed = await api(s2, 'GET', '/users?limit=100')
      t.equal(listed.body.users.length, 100, 'a super node lists the users, one page at a time')
      t.type(listed.body.next, 'string', 'with a cursor to the next page')
      const sst = await servers.get('s1')!.admin!('/status')
      t.ok(Array.isArray(sst.body.coreNodes?.cores) && sst.body.coreNodes.cores.length === 2, 'super node /status lists its core nodes')
    })

    t.test(`SIPp registers ${users.length} users at 2 super nodes (${RATE}/s each); core 1 SIGKILLed mid-run: 0 failures`, async t => {
      const run = async (node: Spec, list: Array<[string, string]>): Promise<Awaited<ReturnType<typeof runSipp>>> => {
        const csv = join(node.dir, 'users.csv')
        credentialsCsv(csv, list)
        const localPort = await freePort()
        return await runSipp({
          scenario: SCENARIO, remote: `127.0.0.1:${node.sipPort}`, localPort, calls: list.length, rate: RATE, inf: csv,
          keys: { domain: DOMAIN, contact: `127.0.0.1:${localPort}`, expires: '600' },
          extraArgs: ['-auth_uri', DOMAIN], recvTimeoutMs: 8000, timeoutMs: 45_000
        })
      }
      const runs = Promise.all([run(s1, users.slice(0, PER_NODE)), run(s2, users.slice(PER_NODE))])
      await sleep(Math.round(PER_NODE / RATE * 1000 / 2.5))
      const core1 = servers.get('c1')!
      try { process.kill(-core1.pid, 'SIGKILL') } catch { process.kill(core1.pid, 'SIGKILL') }
      await core1.proc.exited
      servers.delete('c1')
      t.comment(`core 1 SIGKILLed at ${Math.round(PER_NODE / RATE / 2.5)} s into the load`)
      const [r1, r2] = await runs
      t.comment(`s1: ${describe(r1)}`)
      t.comment(`s2: ${describe(r2)}`)
      t.equal(r1.failed + r2.failed, 0, `0 failed registrations\n${r1.errors.slice(0, 800)}\n${r2.errors.slice(0, 800)}`)
      t.equal(r1.successful + r2.successful, users.length, 'every user registered')
      for (const [i, [u]] of [[0, users[0]!], [PER_NODE - 1, users[PER_NODE - 1]!], [PER_NODE, users[PER_NODE]!], [users.length - 1, users[users.length - 1]!]] as Array<[number, [string, string]]>) {
        const at = i < PER_NODE ? servers.get('s1')! : servers.get('s2')!
        t.equal((await at.bindings(u)).length, 1, `${u} bound`)
      }
      const st1 = (await servers.get('s1')!.admin!('/status')).body
      const st2 = (await servers.get('s2')!.admin!('/status')).body
      t.comment(`core-node reads: s1 ${JSON.stringify(st1.coreNodes)} s2 ${JSON.stringify(st2.coreNodes)}`)
      t.ok(st1.coreNodes.failovers + st2.coreNodes.failovers >= 1, 'the super nodes failed over to core 2')
      // with core 1 gone, a user added on core 2 registers
      t.equal((await api(c2, 'POST', '/users', { user: 'late', password: 'late-pw' })).status, 201, 'written on core 2')
      const r3 = await run(s1, [['late', 'late-pw']])
      t.equal(r3.successful, 1, `a user added while core 1 is down registers (${describe(r3)})`)
    })
  }
}
