// baresip as a real softphone peer: a generated config + accounts file in a temp dir, audio from a
// generated 8 kHz WAV (aufile; no sound card), no audio player, driven over the ctrl_tcp module
// (netstring JSON commands and events), auto-answer via the account's answermode=auto.
import { connect, type Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startProcess, tempDir, type ManagedProcess } from './proc.js'
import { tcpListening } from './ports.js'

export interface BaresipOptions {
  user: string
  domain: string
  /** Outbound proxy URI host:port (IPv6 bracketed), e.g. 127.0.0.1:5060 or [::1]:5060. */
  proxy: string
  transport?: 'udp' | 'tcp' | 'tls'
  /** CA file (PEM) to verify the server's TLS certificate (`sip_cafile`). */
  cafile?: string
  /** Local address to listen on (127.0.0.1 or ::1) and SIP port (baresip also takes port+1 for TLS). */
  listenHost: string
  sipPort: number
  ctrlPort: number
  answer?: 'auto' | 'manual'
  /** Digest password (auth_user is the user name). */
  password?: string
}

export interface BaresipEvent { type: string, class?: string, param?: string, peeruri?: string, id?: string, [k: string]: unknown }

export interface Baresip {
  proc: ManagedProcess
  dir: string
  events: BaresipEvent[]
  /** Sends a ctrl_tcp command and resolves with its response. */
  command (command: string, params?: string): Promise<{ ok: boolean, data: string }>
  /** Resolves with the first event of `type` (already received or future), or rejects after timeoutMs. */
  waitEvent (type: string, timeoutMs: number): Promise<BaresipEvent>
  /** Resolves once baresip logged a 2xx to its REGISTER (registration may finish before ctrl_tcp connects). */
  waitRegistered (timeoutMs: number): Promise<void>
  stop (): Promise<void>
}

/** A mono 16-bit 8 kHz sine WAV (PCM), `seconds` long. */
export function writeToneWav (path: string, seconds: number): void {
  const rate = 8000; const n = rate * seconds
  const b = Buffer.alloc(44 + n * 2)
  b.write('RIFF', 0); b.writeUInt32LE(36 + n * 2, 4); b.write('WAVE', 8); b.write('fmt ', 12)
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(rate, 24)
  b.writeUInt32LE(rate * 2, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); b.write('data', 36); b.writeUInt32LE(n * 2, 40)
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(6000 * Math.sin(2 * Math.PI * 440 * i / rate)), 44 + i * 2)
  writeFileSync(path, b)
}

function netstring (o: unknown): string {
  const s = JSON.stringify(o)
  return `${Buffer.byteLength(s)}:${s},`
}

export async function startBaresip (o: BaresipOptions): Promise<Baresip> {
  const { dir, cleanup } = tempDir(`baresip-${o.user}`)
  const wav = join(dir, 'tone.wav')
  writeToneWav(wav, 20)
  const listen = o.listenHost.includes(':') ? `[${o.listenHost}]:${o.sipPort}` : `${o.listenHost}:${o.sipPort}`
  writeFileSync(join(dir, 'config'), [
    'poll_method poll',
    'call_local_timeout 30',
    'call_max_calls 4',
    `sip_listen ${listen}`,
    ...(o.cafile !== undefined ? [`sip_cafile ${o.cafile}`] : []),
    `net_interface ${o.listenHost}`,
    `audio_source aufile,${wav}`,
    'audio_player nothing,nothing',
    'audio_alert nothing,nothing',
    'audio_level no',
    'rtp_stats no',
    'module_path /usr/lib/baresip/modules',
    'module g711.so',
    'module aufile.so',
    'module_tmp uuid.so',
    'module_tmp account.so',
    'module_app menu.so', // provides the dial / hangup / accept commands
    'module_app ctrl_tcp.so',
    `ctrl_tcp_listen 127.0.0.1:${o.ctrlPort}`,
    ''
  ].join('\n'))
  const transport = o.transport ?? 'udp'
  writeFileSync(join(dir, 'accounts'),
    `<sip:${o.user}@${o.domain};transport=${transport}>;outbound="sip:${o.proxy};transport=${transport}";regint=600;` +
    `answermode=${o.answer ?? 'auto'};audio_codecs=PCMU,PCMA${o.password !== undefined ? `;auth_user=${o.user};auth_pass=${o.password}` : ''}\n`)

  const proc = await startProcess(`baresip-${o.user}`, 'baresip', ['-f', dir, ...(o.listenHost.includes(':') ? ['-6'] : ['-4'])], {
    cwd: dir,
    ready: () => tcpListening('127.0.0.1', o.ctrlPort),
    readyTimeoutMs: 10000
  })

  const events: BaresipEvent[] = []
  const waiters = new Set<() => void>()
  const pending = new Map<string, (r: { ok: boolean, data: string }) => void>()
  let buf = ''
  const sock: Socket = connect({ host: '127.0.0.1', port: o.ctrlPort })
  await new Promise<void>((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject) })
  sock.on('error', () => { /* baresip exited */ })
  sock.on('data', d => {
    buf += d.toString('utf8')
    for (;;) {
      const colon = buf.indexOf(':')
      if (colon < 0) break
      const len = Number(buf.slice(0, colon))
      if (!Number.isInteger(len) || buf.length < colon + 1 + len + 1) break
      const body = buf.slice(colon + 1, colon + 1 + len)
      buf = buf.slice(colon + 1 + len + 1)
      let msg: any
      try { msg = JSON.parse(body) } catch { continue }
      if (msg.response === true) {
        const r = pending.get(String(msg.token)); pending.delete(String(msg.token))
        r?.({ ok: msg.ok === true, data: String(msg.data ?? '') })
      } else if (msg.event === true) {
        events.push(msg as BaresipEvent)
        for (const w of waiters) w()
      }
    }
  })
  let token = 0
  return {
    proc,
    dir,
    events,
    command (command, params) {
      const tk = String(++token)
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => { pending.delete(tk); reject(new Error(`baresip ${o.user}: no response to ${command}`)) }, 5000)
        pending.set(tk, r => { clearTimeout(t); resolve(r) })
        sock.write(netstring({ command, params, token: tk }))
      })
    },
    waitEvent (type, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const e = events.find(x => x.type === type)
          if (e) { done(); resolve(e) }
        }
        const t = setTimeout(() => {
          done()
          reject(new Error(`baresip ${o.user}: no ${type} event within ${timeoutMs} ms; events: ${events.map(e => `${e.type}(${e.param ?? ''})`).join(' ')}\n--- log ---\n${proc.output().slice(-3000)}`))
        }, timeoutMs)
        const done = (): void => { clearTimeout(t); waiters.delete(check) }
        waiters.add(check)
        check()
      })
    },
    async waitRegistered (timeoutMs) {
      const re = new RegExp(`${o.user}@${o.domain.replace(/\./g, '\\.')}: \\{[^}]*\\} 2\\d\\d `)
      await proc.waitFor(re, timeoutMs)
    },
    async stop () {
      sock.destroy()
      await proc.stop(2000)
      cleanup()
    }
  }
}
