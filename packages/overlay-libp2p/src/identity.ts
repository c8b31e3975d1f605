import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from '@sipring/interface'

/** The identity file exists but cannot be used (unreadable, corrupt, not a private key). */
export class IdentityError extends Error {
  readonly code = 'ERR_IDENTITY'
  readonly path: string
  constructor (path: string, message: string) { super(`${path}: ${message}`); this.name = 'IdentityError'; this.path = path }
}

/** Largest identity file accepted (an Ed25519 key is 68 bytes; RSA 4096 about 2.4 KiB). */
const MAX_KEY_FILE = 16 * 1024

/**
 * Loads the node's private key from `path` (a protobuf-marshalled libp2p private key), or generates an
 * Ed25519 key and stores it there (directories created with mode 0700, the file written with mode 0600
 * through a temporary file and a rename). A corrupt file is an {@link IdentityError}: it is never
 * silently replaced, since that would change the node's PeerId. A file readable by group or others is
 * tightened to 0600 with a warning.
 */
export async function loadOrCreatePrivateKey (path: string, logger?: Logger): Promise<{ key: PrivateKey, created: boolean }> {
  let buf: Buffer | undefined
  try {
    const st = await stat(path)
    if (!st.isFile()) throw new IdentityError(path, 'not a regular file')
    if (st.size > MAX_KEY_FILE) throw new IdentityError(path, `too large (${st.size} bytes) for a private key`)
    if ((st.mode & 0o077) !== 0) {
      logger?.warn({ path, mode: (st.mode & 0o777).toString(8) }, 'identity key file readable by others; setting mode 0600')
      await chmod(path, 0o600)
    }
    buf = await readFile(path)
  } catch (err) {
    if (err instanceof IdentityError) throw err
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new IdentityError(path, `cannot read: ${(err as Error).message}`)
  }
  if (buf !== undefined) {
    try {
      return { key: privateKeyFromProtobuf(new Uint8Array(buf)), created: false }
    } catch (err) {
      throw new IdentityError(path, `not a protobuf-marshalled private key (${(err as Error).message})`)
    }
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  const tmp = `${path}.tmp-${process.pid}`
  const fh = await open(tmp, 'wx', 0o600)
  try {
    await fh.writeFile(privateKeyToProtobuf(key))
    await fh.sync()
  } finally {
    await fh.close()
  }
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw new IdentityError(path, `cannot store: ${(err as Error).message}`)
  }
  logger?.info({ path }, 'generated a new Ed25519 identity')
  return { key, created: true }
}
