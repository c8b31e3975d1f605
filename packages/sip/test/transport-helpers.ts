// Shared helpers for the transport tests (not a spec file).
import { createServer } from 'node:net'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import type { SipTransport, Source, TransportEvents } from '@sipring/interface'

const here = dirname(fileURLToPath(import.meta.url))
export const CERT = readFileSync(join(here, 'fixtures', 'transport-cert.pem'))
export const KEY = readFileSync(join(here, 'fixtures', 'transport-key.pem'))

/** Can we bind ::1? (Some CI containers have no IPv6 loopback.) */
export async function ipv6Available (): Promise<boolean> {
  return await new Promise(resolve => {
    const s = createServer()
    s.once('error', () => { resolve(false) })
    s.listen({ host: '::1', port: 0 }, () => { s.close(() => { resolve(true) }) })
  })
}

/** The loopback addresses to test, with a loud message when IPv6 is missing. */
export async function families (): Promise<Array<{ name: string, address: string }>> {
  const out = [{ name: 'IPv4', address: '127.0.0.1' }]
  if (await ipv6Available()) out.push({ name: 'IPv6', address: '::1' })
  else console.error('#### WARNING: cannot bind ::1 — IPv6 transport tests SKIPPED ####')
  return out
}

export function sipRequest (opts: { body?: string | Buffer, callId?: string, method?: string, compact?: boolean, extra?: string } = {}): Buffer {
  const body = typeof opts.body === 'string' ? Buffer.from(opts.body, 'utf8') : (opts.body ?? Buffer.alloc(0))
  const method = opts.method ?? 'MESSAGE'
  const cl = opts.compact === true ? `l: ${body.length}` : `Content-Length: ${body.length}`
  const head = `${method} sip:bob@example.org SIP/2.0\r\n` +
    'Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n' +
    'From: <sip:alice@example.org>;tag=1928301774\r\n' +
    'To: <sip:bob@example.org>\r\n' +
    `Call-ID: ${opts.callId ?? 'a84b4c76e66710'}\r\n` +
    `CSeq: 1 ${method}\r\n` +
    'Max-Forwards: 70\r\n' +
    (opts.extra ?? '') +
    `${cl}\r\n\r\n`
  return Buffer.concat([Buffer.from(head, 'latin1'), body])
}

export interface Received { data: Buffer, source: Source }

/** Collects messages/closes/keepalives of a transport and lets a test await the next ones. */
export class Collector {
  readonly messages: Received[] = []
  readonly closes: string[] = []
  readonly keepalives: string[] = []
  readonly errors: Error[] = []
  private waiters: Array<() => void> = []

  constructor (t: SipTransport) {
    const wake = (): void => { const w = this.waiters; this.waiters = []; for (const f of w) f() }
    const onMessage: TransportEvents['message'] = (data, source) => { this.messages.push({ data, source }); wake() }
    t.on('message', onMessage)
    t.on('close', id => { this.closes.push(id); wake() })
    t.on('keepalive', id => { this.keepalives.push(id); wake() })
    t.on('error', err => { this.errors.push(err); wake() })
  }

  /** Wait until `cond()` holds (real time bound, so a broken transport fails instead of hanging). */
  async until (cond: () => boolean, what = 'condition', ms = 3000): Promise<void> {
    const deadline = Date.now() + ms
    while (!cond()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, Math.min(left, 50))
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }
}

export async function sleep (ms: number): Promise<void> { await new Promise(resolve => setTimeout(resolve, ms)) }

/** A port that nothing listens on (bound then released). */
export async function closedPort (host: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen({ host, port: 0 }, () => {
      const a = s.address()
      const port = typeof a === 'object' && a !== null ? a.port : 0
      s.close(() => { resolve(port) })
    })
  })
}
