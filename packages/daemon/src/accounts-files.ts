/**
 * Files of the accounts feature in the data dir: the accounts (an `accounts` sublevel of the location database),
 * the admin API token (`admin-token`) and the digest nonce secret (`auth-secret`), both created once
 * with mode 0600 from the injected Rng.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ClassicLevel } from 'classic-level'
import type { Rng } from '@sipring/interface'
import type { AccountDb } from '@sipring/auth'

export const ACCOUNTS_DIR = 'accounts'
export const TOKEN_FILE = 'admin-token'
export const SECRET_FILE = 'auth-secret'

/** The admin token (kept in `<dataDir>/admin-token`; generated on first use). */
export function adminToken (dataDir: string, rng: Rng): string {
  const file = join(dataDir, TOKEN_FILE)
  try {
    const t = readFileSync(file, 'utf8').trim()
    if (/^[A-Za-z0-9._~-]{16,256}$/.test(t)) return t
  } catch {}
  const t = rng.token(40)
  writeFileSync(file, t + '\n', { mode: 0o600 })
  return t
}

/** Read the admin token without creating it (CLI side), or undefined. */
export function readAdminToken (dataDir: string): string | undefined {
  try {
    const t = readFileSync(join(dataDir, TOKEN_FILE), 'utf8').trim()
    return t === '' ? undefined : t
  } catch {
    return undefined
  }
}

/**
 * The digest nonce secret (32 bytes, hex in `<dataDir>/auth-secret`). Copy this file to every super
 * node of a deployment so that a nonce issued by one is accepted by the others.
 */
export function authSecret (dataDir: string, rng: Rng): Uint8Array {
  const file = join(dataDir, SECRET_FILE)
  try {
    const hex = readFileSync(file, 'utf8').trim()
    if (/^([0-9a-f]{2}){16,128}$/i.test(hex)) return Buffer.from(hex, 'hex')
  } catch {}
  const secret = rng.bytes(32)
  writeFileSync(file, Buffer.from(secret).toString('hex') + '\n', { mode: 0o600 })
  return secret
}

/** The accounts live in the location database of the data dir, in the `accounts` sublevel. */
export function accountsSublevel (db: ClassicLevel<string, any>): AccountDb {
  return db.sublevel<string, string>(ACCOUNTS_DIR, { valueEncoding: 'utf8' }) as unknown as AccountDb
}

/**
 * Open `<dataDir>/location` for the account commands. Rejects with `code: 'LEVEL_LOCKED'` when a
 * running daemon holds it (the CLI then goes through the admin API).
 */
export async function openDataDb (dataDir: string): Promise<ClassicLevel<string, any>> {
  const db = new ClassicLevel<string, any>(join(dataDir, 'location'), { keyEncoding: 'utf8', valueEncoding: 'json' })
  try {
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: string, message?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(cause?.message ?? '')) throw Object.assign(new Error(`the database in ${dataDir} is in use (is sipring running?)`), { code: 'LEVEL_LOCKED' })
    throw err
  }
  return db
}

export type { AccountDb }
