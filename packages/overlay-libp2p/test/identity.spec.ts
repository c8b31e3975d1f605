import t from 'tap'
import { mkdtemp, readFile, stat, writeFile, chmod, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { MemoryLogger } from '@sipring/testkit'
import { IdentityError, loadOrCreatePrivateKey, libp2pOverlay } from '@sipring/overlay-libp2p'
import { memAddr, realClock } from './helpers.js'

const dir = await mkdtemp(join(tmpdir(), 'sipring-id-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

t.test('first start generates an Ed25519 key stored with mode 0600; later starts load it', async t => {
  const path = join(dir, 'nested', 'dir', 'peer.key')
  const first = await loadOrCreatePrivateKey(path)
  t.equal(first.created, true)
  t.equal(first.key.type, 'Ed25519')
  t.equal((await stat(path)).mode & 0o777, 0o600, 'file mode 0600')
  t.equal((await stat(join(dir, 'nested', 'dir'))).mode & 0o777, 0o700, 'directory mode 0700')
  const onDisk = privateKeyFromProtobuf(new Uint8Array(await readFile(path)))
  t.ok(onDisk.equals(first.key), 'the file holds the protobuf-marshalled key')
  const second = await loadOrCreatePrivateKey(path)
  t.equal(second.created, false)
  t.equal(peerIdFromPrivateKey(second.key).toString(), peerIdFromPrivateKey(first.key).toString())
})

t.test('a corrupt, oversized or non-file identity is an error, never replaced', async t => {
  const bad = join(dir, 'bad.key')
  await writeFile(bad, 'definitely not a key', { mode: 0o600 })
  await t.rejects(loadOrCreatePrivateKey(bad), IdentityError)
  t.equal(await readFile(bad, 'utf8'), 'definitely not a key', 'left untouched')
  const big = join(dir, 'big.key')
  await writeFile(big, Buffer.alloc(20_000), { mode: 0o600 })
  await t.rejects(loadOrCreatePrivateKey(big), /too large/)
  await t.rejects(loadOrCreatePrivateKey(dir), /not a regular file/)
})

t.test('a key file readable by others is tightened to 0600 with a warning', async t => {
  const path = join(dir, 'loose.key')
  await loadOrCreatePrivateKey(path)
  await chmod(path, 0o644)
  const logger = new MemoryLogger()
  const r = await loadOrCreatePrivateKey(path, logger)
  t.equal(r.created, false)
  t.equal((await stat(path)).mode & 0o777, 0o600)
  t.ok(logger.records.some(rec => rec.level === 'warn' && /readable by others/.test(rec.msg ?? '')), 'warned')
})

t.test('a restarted node keeps its PeerId; a node without keyPath gets a fresh one', async t => {
  const keyPath = join(dir, 'node', 'peer.key')
  const n1 = await libp2pOverlay({ clock: realClock, logger: new MemoryLogger(), listen: [memAddr()], keyPath })
  await n1.start(); await n1.stop()
  const n2 = await libp2pOverlay({ clock: realClock, logger: new MemoryLogger(), listen: [memAddr()], keyPath })
  await n2.start(); await n2.stop()
  t.equal(n1.keyCreated, true); t.equal(n2.keyCreated, false)
  t.equal(n2.peerId, n1.peerId, 'same PeerId after restart')
  t.match(n1.peerId, /^12D3KooW/, 'Ed25519 peer id')
  const eph = await libp2pOverlay({ clock: realClock, logger: new MemoryLogger(), listen: [memAddr()] })
  t.not(eph.peerId, n1.peerId)
  await t.rejects(libp2pOverlay({ clock: realClock, logger: new MemoryLogger(), listen: ['/nope/1'] }), TypeError, 'bad listen address')
})
