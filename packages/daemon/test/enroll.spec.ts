import t from 'tap'
import { existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { MemoryLogger } from '@sipring/testkit'
import { parseCorePublicKey, verifyCredential } from '@sipring/overlay-libp2p'
import { defaultConfig, loadConfig, ConfigError, type SipringConfig } from '../src/config.js'
import { startDaemon, DaemonError, admissionView } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'
import { main } from '../src/main.js'
import { loadAdmission } from '../src/enroll.js'

const tmp = (): string => mkdtempSync(join(tmpdir(), 'sipring-enroll-'))

async function cli (...argv: string[]): Promise<{ code: number, out: string, err: string }> {
  let out = ''; let err = ''
  const code = await main(argv, {}, { out: s => { out += s + '\n' }, err: s => { err += s + '\n' } })
  return { code, out: out.trim(), err: err.trim() }
}

t.test('init-ca, node id, node enroll', async t => {
  const dir = tmp()
  const ca = join(dir, 'ca.key')
  const init = await cli('overlay', 'init-ca', '--out', ca)
  t.equal(init.code, 0, init.err)
  const pub = parseCorePublicKey(init.out)
  t.equal(readFileSync(`${ca}.pub`, 'utf8').trim(), init.out, 'public key also in ca.key.pub')
  t.match(await cli('overlay', 'init-ca', '--out', ca), { code: 2, err: /exists; not replacing it/ }, 'never replaces a core key')
  t.match(await cli('overlay', 'init-ca'), { code: 2, err: /needs --out/ })
  t.match(await cli('overlay', 'frobnicate'), { code: 2 })

  const data = join(dir, 'data')
  const id = await cli('node', 'id', '--data', data)
  t.equal(id.code, 0)
  t.match(id.out, /^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/, 'prints a PeerId')
  t.ok(existsSync(join(data, 'peer.key')))
  t.equal((await cli('node', 'id', '--data', data)).out, id.out, 'stable')

  const cred = join(dir, 'node.cred')
  const en = await cli('node', 'enroll', '--ca', ca, '--peer', id.out, '--days', '30', '--out', cred)
  t.equal(en.code, 0, en.err)
  const until = await verifyCredential(readFileSync(cred, 'utf8'), pub, { now: Date.now(), peerId: id.out })
  t.ok(Math.abs(until - (Date.now() + 30 * 86_400_000)) < 60_000, 'valid for 30 days')
  t.match(await cli('node', 'enroll', '--ca', ca, '--peer', id.out, '--out', cred), { code: 2, err: /exists/ }, 'no overwrite')
  t.match(await cli('node', 'enroll', '--ca', ca, '--out', join(dir, 'x')), { code: 2, err: /needs --ca PATH --peer PEERID --out PATH/ })
  t.match(await cli('node', 'enroll', '--ca', ca, '--peer', 'nope', '--out', join(dir, 'x')), { code: 2, err: /not a peer id/ })
  t.match(await cli('node', 'enroll', '--ca', ca, '--peer', id.out, '--days', '0', '--out', join(dir, 'x')), { code: 2, err: /--days/ })
  t.match(await cli('node', 'enroll', '--ca', cred, '--peer', id.out, '--out', join(dir, 'x')), { code: 2, err: /not a private key|not a core key/ }, 'a credential is not a core key')
  t.match(await cli('node', 'enroll', '--bogus', 'x'), { code: 2, err: /unknown argument/ })

  // the config loads the CA as base64 or as a file
  t.same((await loadAdmission({ overlayCa: `${ca}.pub`, overlayCredential: cred }))?.core, init.out)
  t.same((await loadAdmission({ overlayCa: init.out, overlayCredential: cred }))?.credential.peerId, id.out)
  t.equal(await loadAdmission({}), undefined, 'open overlay')
  await t.rejects(loadAdmission({ overlayCa: join(dir, 'missing.pub'), overlayCredential: cred }), { code: 'ERR_BAD_KEY' })
  await t.rejects(loadAdmission({ overlayCa: init.out, overlayCredential: ca }), { code: 'ERR_BAD_CREDENTIAL' })
})

t.test('config: overlayCa and overlayCredential go together', async t => {
  t.throws(() => loadConfig(['--overlay-ca', 'x'], {}), ConfigError)
  t.throws(() => loadConfig(['--overlay-credential', 'x'], {}), ConfigError)
  const { config } = loadConfig(['--overlay-ca', 'k', '--overlay-credential', 'c'], {})
  t.equal(config.overlayCa, 'k'); t.equal(config.overlayCredential, 'c')
  const env = loadConfig([], { SIPRING_OVERLAY_CA: 'k', SIPRING_OVERLAY_CREDENTIAL: 'c' }).config
  t.equal(env.overlayCredential, 'c')
})

t.test('daemons: enrolled super nodes admit each other, an unenrolled one is refused', async t => {
  const dir = tmp()
  const ca = join(dir, 'ca.key')
  t.equal((await cli('overlay', 'init-ca', '--out', ca)).code, 0)
  const enroll = async (name: string): Promise<{ dataDir: string, cred: string }> => {
    const dataDir = join(dir, name)
    const id = (await cli('node', 'id', '--data', dataDir)).out
    const cred = join(dir, `${name}.cred`)
    t.equal((await cli('node', 'enroll', '--ca', ca, '--peer', id, '--out', cred)).code, 0)
    return { dataDir, cred }
  }
  const config = (over: Partial<SipringConfig>): SipringConfig => ({
    ...defaultConfig(),
    sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }],
    admin: null,
    domains: ['example.org'],
    overlay: true,
    overlayListen: ['/ip4/127.0.0.1/tcp/0'],
    advertise: '127.0.0.1',
    ...over
  })
  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const ea = await enroll('a'); const eb = await enroll('b')
  const a = await startDaemon(config({ dataDir: ea.dataDir, overlayCa: `${ca}.pub`, overlayCredential: ea.cred }), deps)
  t.teardown(() => a.stop())
  const joinA = a.overlay!.multiaddrs().find(m => m.includes('/127.0.0.1/'))!
  const b = await startDaemon(config({ dataDir: eb.dataDir, overlayCa: `${ca}.pub`, overlayCredential: eb.cred, join: [joinA] }), deps)
  t.teardown(() => b.stop())
  const until = Date.now() + 10_000
  while (!a.overlay!.admission!.isAdmitted(b.overlay!.peerId) && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  t.ok(a.overlay!.admission!.isAdmitted(b.overlay!.peerId), 'a admitted b')
  t.ok(b.overlay!.admission!.isAdmitted(a.overlay!.peerId), 'b admitted a')

  // an open node joining a closed overlay is refused
  const c = await startDaemon(config({ dataDir: join(dir, 'c'), join: [joinA] }), deps)
  t.teardown(() => c.stop())
  t.match(await c.overlay!.send(a.overlay!.peerId, { type: 'store.get', key: 'x' }, { timeout: 3000 }).catch((e: Error) => e), { code: 'ERR_UNREACHABLE' })
  t.ok(a.overlay!.stats().admissionFailures >= 1, 'a counted the failure')
  t.notOk(a.overlay!.admission!.isAdmitted(c.overlay!.peerId))
  t.match(admissionView(a.overlay), { enforced: true, admitted: 1 }, 'status: b admitted, c not')
  t.ok(admissionView(a.overlay).failures >= 1)
  t.match(admissionView(c.overlay), { enforced: false, admitted: 0 })

  // a credential for another node: refused at start, exit code 2
  const err = await startDaemon(config({ dataDir: join(dir, 'd'), overlayCa: `${ca}.pub`, overlayCredential: ea.cred }), deps).catch((e: unknown) => e)
  t.ok(err instanceof DaemonError && err.exitCode === 2, `refused: ${(err as Error).message}`)
  t.match((err as Error).message, /credential is for/)
})
