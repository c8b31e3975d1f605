import { createPrivateKey, createPublicKey, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'

/**
 * Signs as this overlay node and checks other nodes' signatures by their PeerId alone: an Ed25519
 * PeerId embeds its public key, so no key distribution is needed (the replicator's `signer`, used to
 * sign each node's portion of an AOR item; see packages/node/src/replication.ts).
 */
export interface NodeSigner {
  sign (data: Uint8Array): Uint8Array
  /** Does `sig` over `data` verify with the public key of PeerId `id`? False for any bad input, never throws. */
  verify (id: string, data: Uint8Array, sig: Uint8Array): boolean
}

const b64url = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url')

/** Public keys (Node KeyObjects) of the PeerIds seen, kept for this many ids (then cleared). */
const MAX_CACHED_KEYS = 4096

/**
 * A {@link NodeSigner} for this node's libp2p Ed25519 key (Node's crypto, one KeyObject per key, made
 * once). Throws a TypeError for a non-Ed25519 key.
 */
export function ed25519Signer (key: PrivateKey): NodeSigner {
  if (key.type !== 'Ed25519') throw new TypeError(`portion signatures need an Ed25519 key, got ${key.type}`)
  const raw = key.raw
  const priv = createPrivateKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', d: b64url(raw.subarray(0, 32)), x: b64url(key.publicKey.raw) } })
  const keys = new Map<string, KeyObject | null>()
  const publicKeyOf = (id: string): KeyObject | null => {
    let k = keys.get(id)
    if (k !== undefined) return k
    try {
      const pk = peerIdFromString(id).publicKey
      k = pk?.type === 'Ed25519' ? createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x: b64url(pk.raw) } }) : null
    } catch {
      k = null
    }
    if (keys.size >= MAX_CACHED_KEYS) keys.clear()
    keys.set(id, k)
    return k
  }
  return {
    sign: (data) => new Uint8Array(edSign(null, data, priv)),
    verify: (id, data, sig) => {
      if (sig.length !== 64) return false
      const k = publicKeyOf(id)
      if (k === null) return false
      try { return edVerify(null, data, k, sig) } catch { return false }
    }
  }
}
