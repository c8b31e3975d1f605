// Fixtures for the specs that start core and super daemons over libp2p on loopback: a data dir with a
// persisted peer key and a free overlay port per daemon, their config, and an admin API client.
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { peerIdOfKeyFile } from '@sipring/overlay-libp2p'
import { defaultConfig, type SipringConfig } from '../src/config.js'

export const freePort = async (): Promise<number> => await new Promise((resolve, reject) => {
  const s = createServer()
  s.once('error', reject)
  s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => { resolve(p) }) })
})

export interface Box { dir: string, port: number, id: string, addr: string }
export async function box (prefix = 'sipring-core-'): Promise<Box> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const port = await freePort()
  const { peerId } = await peerIdOfKeyFile(join(dir, 'peer.key'))
  return { dir, port, id: peerId, addr: `/ip4/127.0.0.1/tcp/${port}/p2p/${peerId}` }
}

export function config (b: Box, over: Partial<SipringConfig>): SipringConfig {
  return {
    ...defaultConfig(),
    dataDir: b.dir,
    sip: [{ protocol: 'udp', host: '127.0.0.1', port: 0 }],
    admin: { host: '127.0.0.1', port: 0 },
    domains: ['example.org'],
    overlayListen: [`/ip4/127.0.0.1/tcp/${b.port}`],
    advertise: '127.0.0.1',
    ...over
  }
}

export async function http (d: { adminAddress: () => { host: string, port: number } | undefined }, dir: string, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<{ status: number, body: any }> {
  const a = d.adminAddress()!
  const token = readFileSync(join(dir, 'admin-token'), 'utf8').trim()
  const res = await fetch(`http://127.0.0.1:${a.port}${path}`, {
    method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs)
  })
  return { status: res.status, body: await res.json() }
}

