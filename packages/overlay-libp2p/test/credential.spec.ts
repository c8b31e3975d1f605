import t, { type Test } from 'tap'
import { mkdtemp, readFile, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import {
  CredentialError, createCoreKey, credentialPayload, encodePublicKey, issueCredential, loadCoreKey, parseCorePublicKey, parseCredential,
  peerIdOfKeyFile, verifyCredential
} from '@sipring/overlay-libp2p'

const DAY = 86_400_000
const T0 = Date.UTC(2026, 10, 22)

const setup = async (): Promise<{ core: Awaited<ReturnType<typeof generateKeyPair>>, peer: string, other: string }> => {
  const core = await generateKeyPair('Ed25519')
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  const other = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
  return { core, peer, other }
}

const rejectsCode = async (t: Test, p: Promise<unknown>, code: string, what: string): Promise<void> => {
  await t.rejects(p, { name: 'CredentialError', code }, what)
}

t.test('sign and verify; expiry; not-yet-valid; wrong peer', async t => {
  const { core, peer, other } = await setup()
  const cred = await issueCredential(core, peer, T0, T0 + 30 * DAY)
  t.equal(cred.peerId, peer)
  t.equal(cred.notAfter, new Date(T0 + 30 * DAY).toISOString())
  t.equal(await verifyCredential(cred, core.publicKey, { now: T0 + DAY, peerId: peer }), T0 + 30 * DAY, 'valid: resolves with the expiry')
  t.equal(await verifyCredential(JSON.stringify(cred), core.publicKey, { now: T0 }), T0 + 30 * DAY, 'JSON text accepted; notBefore inclusive')
  await rejectsCode(t, verifyCredential(cred, core.publicKey, { now: T0 + 30 * DAY, peerId: peer }), 'ERR_EXPIRED', 'expired at notAfter exactly')
  await rejectsCode(t, verifyCredential(cred, core.publicKey, { now: T0 - 1, peerId: peer }), 'ERR_NOT_YET_VALID', 'before notBefore')
  await rejectsCode(t, verifyCredential(cred, core.publicKey, { now: T0 + DAY, peerId: other }), 'ERR_WRONG_PEER', 'another peer presenting it')
})

t.test('tampering, another core key, malformed input', async t => {
  const { core, peer, other } = await setup()
  const cred = await issueCredential(core, peer, T0, T0 + DAY)
  const now = T0 + 1000
  await rejectsCode(t, verifyCredential({ ...cred, peerId: other }, core.publicKey, { now, peerId: other }), 'ERR_BAD_SIGNATURE', 'peerId swapped')
  await rejectsCode(t, verifyCredential({ ...cred, notAfter: new Date(T0 + 900 * DAY).toISOString() }, core.publicKey, { now }), 'ERR_BAD_SIGNATURE', 'validity extended')
  const sig = Buffer.from(cred.signature, 'base64'); sig[3]! ^= 1
  await rejectsCode(t, verifyCredential({ ...cred, signature: sig.toString('base64') }, core.publicKey, { now }), 'ERR_BAD_SIGNATURE', 'signature bit flipped')
  await rejectsCode(t, verifyCredential({ ...cred, signature: 'AAAA' }, core.publicKey, { now }), 'ERR_BAD_SIGNATURE', 'short signature')
  const other2 = await generateKeyPair('Ed25519')
  const foreign = await issueCredential(other2, peer, T0, T0 + DAY)
  await rejectsCode(t, verifyCredential(foreign, core.publicKey, { now, peerId: peer }), 'ERR_WRONG_CA', 'signed by another core key')
  await rejectsCode(t, verifyCredential({ ...foreign, issuer: cred.issuer }, core.publicKey, { now, peerId: peer }), 'ERR_BAD_SIGNATURE', 'another key claiming our issuer')
  for (const bad of ['', 'null', '[]', '{"type":"x"}', '{', 'x'.repeat(5000), JSON.stringify({ ...cred, notAfter: 'tomorrow' }), JSON.stringify({ ...cred, peerId: 7 })]) {
    t.throws(() => parseCredential(bad), CredentialError, `rejects ${bad.slice(0, 30)}`)
  }
  await t.rejects(issueCredential(core, 'not-a-peer', T0, T0 + 1), CredentialError)
  await t.rejects(issueCredential(core, peer, T0, T0), CredentialError, 'empty validity')
  t.match(Buffer.from(credentialPayload(cred)).toString(), /^\["sipring\/overlay-credential\/v1",/, 'domain-separated payload')
})

t.test('core public key parsing', async t => {
  const { core } = await setup()
  const b64 = encodePublicKey(core.publicKey)
  t.ok(parseCorePublicKey(`  ${b64}\n`).equals(core.publicKey), 'round trip, whitespace trimmed')
  t.throws(() => parseCorePublicKey('not base64!'), CredentialError)
  t.throws(() => parseCorePublicKey('AAAA'), CredentialError)
  const rsaLike = Buffer.from(encodePublicKey((await generateKeyPair('secp256k1')).publicKey), 'base64').toString('base64')
  t.throws(() => parseCorePublicKey(rsaLike), { code: 'ERR_BAD_KEY' }, 'a non-Ed25519 core key is refused')
})

t.test('core key and node identity files', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'sipring-cred-'))
  const path = join(dir, 'ca.key')
  const key = await createCoreKey(path)
  t.equal((await stat(path)).mode & 0o777, 0o600, 'core key written with mode 0600')
  t.ok((await loadCoreKey(path)).equals(key), 'loads back')
  await t.rejects(createCoreKey(path), { code: 'EEXIST' }, 'never overwrites a core key')
  await t.rejects(loadCoreKey(join(dir, 'missing')), { code: 'ENOENT' })
  const id1 = await peerIdOfKeyFile(join(dir, 'data', 'peer.key'))
  const id2 = await peerIdOfKeyFile(join(dir, 'data', 'peer.key'))
  t.ok(id1.created); t.notOk(id2.created); t.equal(id1.peerId, id2.peerId, 'the same PeerId each time')
  t.match(id1.peerId, /^12D3KooW/)
  t.ok((await readFile(join(dir, 'data', 'peer.key'))).length > 0)
})
