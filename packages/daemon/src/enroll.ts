/**
 * Overlay enrollment: `sipring overlay init-ca`, `sipring node enroll`, `sipring node id`,
 * and loading `overlayCa` / `overlayCredential` for `sipring start`.
 */
import { open, readFile, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import {
  CredentialError, MAX_CREDENTIAL_SIZE, createCoreKey, encodePublicKey, issueCredential, loadCoreKey, parseCorePublicKey, parseCredential,
  peerIdOfKeyFile, type OverlayCredential
} from '@sipring/overlay-libp2p'
import type { Clock } from '@sipring/interface'
import type { SipringConfig } from './config.js'

export interface EnrollIo { out: (s: string) => void, err: (s: string) => void }

/** A bad CLI use or an unusable file: exit code 2 with the message. */
class EnrollUsage extends Error {}

const DAY = 86_400_000
/** Longest credential lifetime accepted by `node enroll --days`. */
export const MAX_CREDENTIAL_DAYS = 3650

export function overlayHelp (): string {
  return [
    'Usage: sipring overlay init-ca --out PATH',
    '',
    'Creates the overlay\'s core key (Ed25519) at PATH (mode 0600; an existing file is never replaced)',
    'and its public key at PATH.pub, and prints the public key. Keep the core key offline: it enrolls',
    'super nodes (`sipring node enroll`). Give the public key to every super node as --overlay-ca.'
  ].join('\n')
}

export function nodeHelp (): string {
  return [
    'Usage:',
    '  sipring node id [--data DIR]       print this node\'s overlay PeerId (the key <DIR>/peer.key is created if missing)',
    '  sipring node enroll --ca PATH --peer PEERID [--days N] --out PATH',
    '                                     sign a credential admitting PEERID to the overlay for N days (default 365)',
    '',
    'A super node started with --overlay-ca admits a peer only after the peer shows a credential signed by',
    'that core key, valid now and issued for the PeerId it authenticated with. See docs/operations.md.'
  ].join('\n')
}

function flags (args: string[], known: string[]): Map<string, string> {
  const m = new Map<string, string>()
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!
    const eq = a.indexOf('=')
    const name = eq > 0 ? a.slice(0, eq) : a
    if (!known.includes(name)) throw new EnrollUsage(`unknown argument ${JSON.stringify(a)} (known: ${known.join(', ')})`)
    const value = eq > 0 ? a.slice(eq + 1) : args[++i]
    if (value === undefined || value === '') throw new EnrollUsage(`${name} needs a value`)
    if (m.has(name)) throw new EnrollUsage(`${name} given twice`)
    m.set(name, value)
  }
  return m
}

async function run (io: EnrollIo, fn: () => Promise<void>): Promise<number> {
  try {
    await fn()
    return 0
  } catch (err) {
    if (err instanceof EnrollUsage || err instanceof CredentialError) { io.err(`sipring: ${err.message}`); return 2 }
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') { io.err(`sipring: ${(err as NodeJS.ErrnoException).path ?? 'file'} exists; not replacing it`); return 2 }
    io.err(`sipring: ${(err as Error).message}`)
    return 1
  }
}

/** `sipring overlay …` */
export async function overlayCommand (args: string[], io: EnrollIo): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined || sub === 'help' || sub === '--help') { io.out(overlayHelp()); return 0 }
  if (sub !== 'init-ca') { io.err(`sipring: unknown overlay command ${JSON.stringify(sub)}\n\n${overlayHelp()}`); return 2 }
  return await run(io, async () => {
    const f = flags(rest, ['--out'])
    const out = f.get('--out')
    if (out === undefined) throw new EnrollUsage('overlay init-ca needs --out PATH')
    const key = await createCoreKey(out)
    const pub = encodePublicKey(key.publicKey)
    const fh = await open(`${out}.pub`, 'w', 0o644)
    try { await fh.writeFile(pub + '\n') } finally { await fh.close() }
    io.out(pub)
    io.err(`core key written to ${out} (keep it secret and offline); public key in ${out}.pub: start super nodes with --overlay-ca ${out}.pub`)
  })
}

/** `sipring node …`; `clock` gives the credential's notBefore. */
export async function nodeCommand (args: string[], env: NodeJS.ProcessEnv, io: EnrollIo, clock: Clock): Promise<number> {
  const [sub, ...rest] = args
  if (sub === undefined || sub === 'help' || sub === '--help') { io.out(nodeHelp()); return 0 }
  if (sub === 'id') {
    return await run(io, async () => {
      const f = flags(rest, ['--data'])
      const dataDir = resolve(f.get('--data') ?? env.SIPRING_DATA ?? './data')
      const { peerId, created } = await peerIdOfKeyFile(join(dataDir, 'peer.key'))
      io.out(peerId)
      if (created) io.err(`created the node key ${join(dataDir, 'peer.key')}`)
    })
  }
  if (sub === 'enroll') {
    return await run(io, async () => {
      const f = flags(rest, ['--ca', '--peer', '--days', '--out'])
      const ca = f.get('--ca'); const peer = f.get('--peer'); const out = f.get('--out')
      if (ca === undefined || peer === undefined || out === undefined) throw new EnrollUsage('node enroll needs --ca PATH --peer PEERID --out PATH')
      const daysRaw = f.get('--days') ?? '365'
      const days = Number(daysRaw)
      if (!/^\d+$/.test(daysRaw) || days < 1 || days > MAX_CREDENTIAL_DAYS) throw new EnrollUsage(`--days: expected an integer 1–${MAX_CREDENTIAL_DAYS}, got ${JSON.stringify(daysRaw)}`)
      const key = await loadCoreKey(ca)
      const now = clock.now()
      // notBefore a little in the past: tolerate clocks of other nodes slightly behind ours
      const cred = await issueCredential(key, peer, now - 5 * 60_000, now + days * DAY)
      const fh = await open(out, 'wx', 0o644)
      try { await fh.writeFile(JSON.stringify(cred, null, 2) + '\n') } finally { await fh.close() }
      io.out(`enrolled ${peer} until ${cred.notAfter}: credential in ${out}`)
    })
  }
  io.err(`sipring: unknown node command ${JSON.stringify(sub)}\n\n${nodeHelp()}`)
  return 2
}

/** The admission settings of `config` (read from their files), or undefined for an open overlay. Throws CredentialError. */
export async function loadAdmission (config: Pick<SipringConfig, 'overlayCa' | 'overlayCredential'>): Promise<{ core: string, credential: OverlayCredential } | undefined> {
  if (config.overlayCa === undefined) return undefined
  let core = config.overlayCa.trim()
  try {
    parseCorePublicKey(core)
  } catch {
    // not a key: a file holding one
    let text: string
    try {
      const st = await stat(core)
      if (!st.isFile() || st.size > 4096) throw new Error('not a public key file')
      text = await readFile(core, 'utf8')
    } catch (err) {
      throw new CredentialError('ERR_BAD_KEY', `overlayCa: neither a base64 core public key nor a readable key file (${(err as Error).message})`)
    }
    try { parseCorePublicKey(text) } catch (err) { throw new CredentialError('ERR_BAD_KEY', `overlayCa ${core}: ${(err as Error).message}`) }
    core = text.trim()
  }
  const path = config.overlayCredential
  if (path === undefined) throw new CredentialError('ERR_BAD_CREDENTIAL', 'overlayCredential is required with overlayCa')
  let text: string
  try {
    const st = await stat(path)
    if (!st.isFile() || st.size > MAX_CREDENTIAL_SIZE * 2) throw new Error('not a credential file')
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new CredentialError('ERR_BAD_CREDENTIAL', `overlayCredential ${path}: ${(err as Error).message}`)
  }
  try {
    return { core, credential: parseCredential(text) }
  } catch (err) {
    throw new CredentialError('ERR_BAD_CREDENTIAL', `overlayCredential ${path}: ${(err as Error).message}`)
  }
}
