import t from 'tap'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { ed25519Signer } from '../src/index.js'

t.test('ed25519Signer: signatures verify by PeerId alone; another id, changed bytes or a bad signature fail', async t => {
  const ka = await generateKeyPair('Ed25519')
  const kb = await generateKeyPair('Ed25519')
  const a = ed25519Signer(ka); const b = ed25519Signer(kb)
  const ida = peerIdFromPrivateKey(ka).toString(); const idb = peerIdFromPrivateKey(kb).toString()
  const data = Buffer.from('sipring/portion/1\nsip:alice@example.org\n...')
  const sig = a.sign(data)
  t.equal(sig.length, 64)
  t.ok(b.verify(ida, data, sig), 'b checks a\'s signature from a\'s PeerId')
  t.ok(a.verify(ida, data, sig))
  t.notOk(b.verify(idb, data, sig), 'not b\'s signature')
  t.notOk(b.verify(ida, Buffer.concat([data, Buffer.from('x')]), sig), 'bytes changed')
  const bad = new Uint8Array(sig); bad[0] = bad[0]! ^ 1
  t.notOk(b.verify(ida, data, bad), 'signature changed')
  t.notOk(b.verify(ida, data, sig.subarray(0, 63)), 'short signature')
  t.notOk(b.verify('not-a-peer-id', data, sig), 'bad PeerId: false, no throw')
  t.notOk(b.verify('', data, sig))
  const rsa = await generateKeyPair('secp256k1')
  t.throws(() => ed25519Signer(rsa), TypeError, 'only Ed25519 keys')
  t.notOk(b.verify(peerIdFromPrivateKey(rsa).toString(), data, sig), 'a non-Ed25519 PeerId never verifies')
  // cost per operation (informative)
  const n = 2000
  let c0 = process.cpuUsage()
  for (let i = 0; i < n; i++) a.sign(data)
  let d = process.cpuUsage(c0)
  const signUs = (d.user + d.system) / n
  c0 = process.cpuUsage()
  for (let i = 0; i < n; i++) b.verify(ida, data, sig)
  d = process.cpuUsage(c0)
  const verifyUs = (d.user + d.system) / n
  t.comment(`Ed25519 sign ≈ ${signUs.toFixed(0)} CPU-µs, verify ≈ ${verifyUs.toFixed(0)} CPU-µs`)
})
