import { open, readFile, stat } from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf, publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey, PublicKey } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { loadOrCreatePrivateKey } from './identity.js'

/**
 * Overlay enrollment (in the spirit of RELOAD enrollment, RFC 6940 §11.3): the
 * overlay's **core key** (Ed25519) signs, for each admitted super node, a credential binding its
 * libp2p PeerId to a validity window. A node enforcing admission accepts a peer only after the peer
 * has shown a credential signed by the configured core public key, not expired by the node's clock,
 * whose PeerId is the one noise authenticated on the connection.
 */
export const CREDENTIAL_TYPE = 'sipring-overlay-credential'
/** Domain separation: the signature covers this tag, so it can never be replayed as any other signature of the key. */
export const CREDENTIAL_DOMAIN = 'sipring/overlay-credential/v1'
/** Largest credential (JSON) accepted, bytes. */
export const MAX_CREDENTIAL_SIZE = 2048

export interface OverlayCredential {
  type: typeof CREDENTIAL_TYPE
  v: 1
  /** The enrolled super node (a libp2p PeerId string). */
  peerId: string
  /** Validity window, ISO 8601 UTC (the exact strings are signed). */
  notBefore: string
  notAfter: string
  /** The core public key that signed it (base64 protobuf), for a clear "other CA" error. */
  issuer: string
  /** base64 Ed25519 signature over {@link credentialPayload}. */
  signature: string
}

export type CredentialErrorCode = 'ERR_BAD_CREDENTIAL' | 'ERR_WRONG_CA' | 'ERR_BAD_SIGNATURE' | 'ERR_EXPIRED' | 'ERR_NOT_YET_VALID' | 'ERR_WRONG_PEER' | 'ERR_BAD_KEY'

export class CredentialError extends Error {
  readonly code: CredentialErrorCode
  constructor (code: CredentialErrorCode, message: string) { super(message); this.name = 'CredentialError'; this.code = code }
}

/** The bytes signed by the core key. */
export function credentialPayload (c: Pick<OverlayCredential, 'peerId' | 'notBefore' | 'notAfter'>): Uint8Array {
  return Buffer.from(JSON.stringify([CREDENTIAL_DOMAIN, c.peerId, c.notBefore, c.notAfter]), 'utf8')
}

export function encodePublicKey (key: PublicKey): string { return Buffer.from(publicKeyToProtobuf(key)).toString('base64') }

/** Parses a base64 protobuf Ed25519 public key (as printed by `sipring overlay init-ca`). */
export function parseCorePublicKey (b64: string): PublicKey {
  const s = b64.trim()
  if (!/^[A-Za-z0-9+/]+=*$/.test(s) || s.length > 200) throw new CredentialError('ERR_BAD_KEY', 'core public key is not base64')
  let key: PublicKey
  try { key = publicKeyFromProtobuf(Buffer.from(s, 'base64')) } catch (err) { throw new CredentialError('ERR_BAD_KEY', `not a public key: ${(err as Error).message}`) }
  if (key.type !== 'Ed25519') throw new CredentialError('ERR_BAD_KEY', `core key must be Ed25519, not ${key.type}`)
  return key
}

/** Signs a credential for `peerId` valid from `notBefore` to `notAfter` (ms since the epoch). */
export async function issueCredential (core: PrivateKey, peerId: string, notBefore: number, notAfter: number): Promise<OverlayCredential> {
  try { peerIdFromString(peerId) } catch { throw new CredentialError('ERR_BAD_CREDENTIAL', `not a peer id: ${JSON.stringify(peerId.slice(0, 80))}`) }
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter) || notAfter <= notBefore) throw new CredentialError('ERR_BAD_CREDENTIAL', 'notAfter must be after notBefore')
  const c = { peerId, notBefore: new Date(notBefore).toISOString(), notAfter: new Date(notAfter).toISOString() }
  const sig = await core.sign(credentialPayload(c))
  return { type: CREDENTIAL_TYPE, v: 1, ...c, issuer: encodePublicKey(core.publicKey), signature: Buffer.from(sig).toString('base64') }
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

/** Schema check of an untrusted credential (JSON text or parsed value). Throws CredentialError. */
export function parseCredential (x: unknown): OverlayCredential {
  if (typeof x === 'string' || x instanceof Uint8Array) {
    const text = typeof x === 'string' ? x : Buffer.from(x).toString('utf8')
    if (Buffer.byteLength(text) > MAX_CREDENTIAL_SIZE) throw new CredentialError('ERR_BAD_CREDENTIAL', `credential larger than ${MAX_CREDENTIAL_SIZE} bytes`)
    try { x = JSON.parse(text) } catch { throw new CredentialError('ERR_BAD_CREDENTIAL', 'credential is not JSON') }
  }
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new CredentialError('ERR_BAD_CREDENTIAL', 'credential is not an object')
  const o = x as Record<string, unknown>
  if (o.type !== CREDENTIAL_TYPE || o.v !== 1) throw new CredentialError('ERR_BAD_CREDENTIAL', `not a ${CREDENTIAL_TYPE} v1`)
  for (const f of ['peerId', 'notBefore', 'notAfter', 'issuer', 'signature'] as const) {
    if (typeof o[f] !== 'string' || (o[f] as string).length === 0 || (o[f] as string).length > 512) throw new CredentialError('ERR_BAD_CREDENTIAL', `credential field ${f} missing or malformed`)
  }
  for (const f of ['notBefore', 'notAfter'] as const) {
    if (!ISO.test(o[f] as string) || Number.isNaN(Date.parse(o[f] as string))) throw new CredentialError('ERR_BAD_CREDENTIAL', `credential field ${f} is not an ISO 8601 UTC time`)
  }
  return { type: CREDENTIAL_TYPE, v: 1, peerId: o.peerId as string, notBefore: o.notBefore as string, notAfter: o.notAfter as string, issuer: o.issuer as string, signature: o.signature as string }
}

/**
 * Verifies `cred` against the core public key, the clock (`now`, ms) and, when given, the PeerId the
 * transport authenticated. Resolves with the expiry (ms); rejects with a CredentialError.
 */
export async function verifyCredential (cred: unknown, core: PublicKey, opts: { now: number, peerId?: string }): Promise<number> {
  const c = parseCredential(cred)
  if (c.issuer !== encodePublicKey(core)) throw new CredentialError('ERR_WRONG_CA', 'credential issued by another core key')
  const sig = Buffer.from(c.signature, 'base64')
  if (sig.length !== 64 || !(await core.verify(credentialPayload(c), sig))) throw new CredentialError('ERR_BAD_SIGNATURE', 'credential signature does not verify')
  if (opts.peerId !== undefined && c.peerId !== opts.peerId) throw new CredentialError('ERR_WRONG_PEER', `credential is for ${c.peerId}, not ${opts.peerId}`)
  const nb = Date.parse(c.notBefore); const na = Date.parse(c.notAfter)
  if (opts.now < nb) throw new CredentialError('ERR_NOT_YET_VALID', `credential not valid before ${c.notBefore}`)
  if (opts.now >= na) throw new CredentialError('ERR_EXPIRED', `credential expired at ${c.notAfter}`)
  return na
}

/** Creates a new core key at `path` (mode 0600; refuses to overwrite). Returns it. */
export async function createCoreKey (path: string): Promise<PrivateKey> {
  const key = await generateKeyPair('Ed25519')
  const fh = await open(path, 'wx', 0o600) // EEXIST when the file exists: never replace a CA key
  try { await fh.writeFile(privateKeyToProtobuf(key)); await fh.sync() } finally { await fh.close() }
  return key
}

/** Loads a core (private) key written by {@link createCoreKey}. */
export async function loadCoreKey (path: string): Promise<PrivateKey> {
  const st = await stat(path)
  if (!st.isFile() || st.size > 1024) throw new CredentialError('ERR_BAD_KEY', `${path}: not a core key file`)
  let key: PrivateKey
  try { key = privateKeyFromProtobuf(new Uint8Array(await readFile(path))) } catch (err) { throw new CredentialError('ERR_BAD_KEY', `${path}: not a private key (${(err as Error).message})`) }
  if (key.type !== 'Ed25519') throw new CredentialError('ERR_BAD_KEY', `${path}: core key must be Ed25519`)
  return key
}

/** The PeerId of the identity at `path` (created there when missing, as the daemon would on first start). */
export async function peerIdOfKeyFile (path: string): Promise<{ peerId: string, created: boolean }> {
  const { key, created } = await loadOrCreatePrivateKey(path)
  return { peerId: peerIdFromPrivateKey(key).toString(), created }
}
