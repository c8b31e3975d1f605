// Overlay replication keys of `sipring start`: overlayAckTimeout, overlayTrustLocalFor — defaults,
// file < env < flags, precise errors, help text, and that the daemon hands them to the super node.
import t from 'tap'
import { configDir, issuesOf } from './config-helpers.js'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MemoryLogger } from '@sipring/testkit'
import { defaultConfig, loadConfig, startHelp, START_FLAGS, ENV_VARS } from '../src/config.js'
import { startDaemon } from '../src/run.js'
import { cryptoRng, systemClock } from '../src/system.js'

const { dir } = configDir('sipring-overlay-config-')


t.test('defaults 2000 ms and 1 h; file < env < flags', async t => {
  let { config } = loadConfig([], {})
  t.equal(config.overlayAckTimeout, 2000)
  t.equal(config.overlayTrustLocalFor, 3_600_000)
  const yaml = join(dir, 'o.yaml')
  writeFileSync(yaml, 'overlayAckTimeout: 500\noverlayTrustLocalFor: 60000\n')
  ;({ config } = loadConfig(['--config', yaml], {}))
  t.same([config.overlayAckTimeout, config.overlayTrustLocalFor], [500, 60_000])
  ;({ config } = loadConfig([], { SIPRING_CONFIG: yaml, SIPRING_OVERLAY_TRUST_LOCAL_FOR: '0' }))
  t.same([config.overlayAckTimeout, config.overlayTrustLocalFor], [500, 0], 'env beats file; 0 = never trust the own replica')
  ;({ config } = loadConfig(['--overlay-ack-timeout', '750', '--overlay-trust-local-for=1000'], { SIPRING_CONFIG: yaml, SIPRING_OVERLAY_ACK_TIMEOUT: '3000' }))
  t.same([config.overlayAckTimeout, config.overlayTrustLocalFor], [750, 1000], 'flags beat env')
})

t.test('bad values are precise errors; documented in the help', async t => {
  t.match(issuesOf(() => loadConfig(['--overlay-ack-timeout', '0'], {})).join('\n'), /overlayAckTimeout: expected 1–60000 ms, got 0/)
  t.match(issuesOf(() => loadConfig(['--overlay-ack-timeout', '60001'], {})).join('\n'), /overlayAckTimeout: expected 1–60000 ms, got 60001/)
  t.match(issuesOf(() => loadConfig([], { SIPRING_OVERLAY_TRUST_LOCAL_FOR: 'an hour' })).join('\n'), /overlayTrustLocalFor: expected an integer 0–86400000 ms \(0 = never\), got "an hour"/)
  t.match(issuesOf(() => loadConfig(['--overlay-trust-local-for', '-5'], {})).join('\n'), /overlayTrustLocalFor/)
  const help = startHelp()
  for (const f of ['--overlay-ack-timeout', '--overlay-trust-local-for']) { t.ok(START_FLAGS[f], f); t.match(help, f) }
  for (const e of ['SIPRING_OVERLAY_ACK_TIMEOUT', 'SIPRING_OVERLAY_TRUST_LOCAL_FOR']) { t.ok(ENV_VARS[e], e); t.match(help, e) }
})

t.test('the daemon passes them to the super node and its replicator', async t => {
  const d = await startDaemon({
    ...defaultConfig(),
    dataDir: mkdtempSync(join(dir, 'd-')),
    sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }],
    admin: null,
    overlay: true,
    overlayListen: ['/ip4/127.0.0.1/tcp/0'],
    advertise: '127.0.0.1',
    overlayAckTimeout: 1234,
    overlayTrustLocalFor: 5678
  }, { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() })
  try {
    // private fields, read to check the wiring (the behaviour itself is tested in packages/node)
    t.equal((d.node as unknown as { overlayInit: { ackTimeout?: number } }).overlayInit.ackTimeout, 1234)
    t.equal((d.node.replication as unknown as { trustLocalFor: number }).trustLocalFor, 5678)
  } finally {
    await d.stop()
  }
})

t.test('a closed overlay signs AOR portions with the libp2p keys; an open one does not', async t => {
  const { main } = await import('../src/main.js')
  const { aorKey } = await import('@sipring/node')
  const cli = async (...argv: string[]): Promise<{ code: number, out: string }> => {
    let out = ''
    const code = await main(argv, {}, { out: s => { out += s + '\n' }, err: () => {} })
    return { code, out: out.trim() }
  }
  const ca = join(dir, 'ca.key')
  t.equal((await cli('overlay', 'init-ca', '--out', ca)).code, 0)
  const enroll = async (name: string): Promise<{ dataDir: string, cred: string }> => {
    const dataDir = join(dir, name)
    const id = (await cli('node', 'id', '--data', dataDir)).out
    const cred = join(dir, `${name}.cred`)
    t.equal((await cli('node', 'enroll', '--ca', ca, '--peer', id, '--out', cred)).code, 0)
    return { dataDir, cred }
  }
  const base = { ...defaultConfig(), sip: [{ protocol: 'udp' as const, host: '127.0.0.1', port: 0 }], admin: null, domains: ['example.org'], overlay: true, overlayListen: ['/ip4/127.0.0.1/tcp/0'], advertise: '127.0.0.1' }
  const deps = { clock: systemClock, rng: cryptoRng, logger: new MemoryLogger() }
  const ea = await enroll('sa'); const eb = await enroll('sb')
  const a = await startDaemon({ ...base, dataDir: ea.dataDir, overlayCa: `${ca}.pub`, overlayCredential: ea.cred }, deps)
  t.teardown(() => a.stop())
  const joinA = a.overlay!.multiaddrs().find(m => m.includes('/127.0.0.1/'))!
  const b = await startDaemon({ ...base, dataDir: eb.dataDir, overlayCa: `${ca}.pub`, overlayCredential: eb.cred, join: [joinA] }, deps)
  t.teardown(() => b.stop())
  const until = Date.now() + 15_000
  while ((a.node.overlay!.ring.size !== 2 || b.node.overlay!.ring.size !== 2) && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(b.node.overlay!.ring.size, 2, 'a ring of two')
  const aor = 'sip:alice@example.org'
  a.node.location.applyRegister(aor, { contacts: [{ contact: 'sip:alice@192.0.2.1', expires: 300, node: a.overlay!.self }], callId: 'c1', cseq: 1 })
  t.equal(await a.node.replication!.settled(aor, { timeoutMs: 5000 }), true, 'written with the quorum')
  const item = b.node.overlay!.store.local(aorKey(aor))?.value as { nodes: Record<string, { s?: string }> } | undefined
  t.type(item?.nodes[a.overlay!.self]?.s, 'string', 'the portion carries a\'s signature')
  const found = await b.node.replication!.lookup(aor)
  t.same(found.map(x => [x.contact, x.node]), [['sip:alice@192.0.2.1', a.overlay!.self]], 'b verified it and routes to a')
  t.equal(b.node.replication!.stats.badSignatures, 0)

  const open = await startDaemon({ ...base, dataDir: join(dir, 'open') }, deps)
  t.teardown(() => open.stop())
  t.equal((open.node.replication as unknown as { signer?: unknown }).signer, undefined, 'open overlay: no signatures')
})
