// Free loopback ports that are free for BOTH UDP and TCP (SIP listens on both with one number).
import { createSocket } from 'node:dgram'
import { createServer } from 'node:net'

function tcpFree (host: string, port: number): Promise<number> {
  return new Promise(resolve => {
    const s = createServer()
    s.once('error', () => resolve(-1))
    s.listen({ host, port, exclusive: true }, () => {
      const a = s.address()
      const got = typeof a === 'object' && a !== null ? a.port : -1
      s.close(() => resolve(got))
    })
  })
}

function udpFree (host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4')
    s.once('error', () => { s.close(); resolve(false) })
    s.bind({ address: host, port, exclusive: true }, () => s.close(() => resolve(true)))
  })
}

const handedOut = new Set<number>()

/**
 * A port free on TCP and UDP on every given host (default 127.0.0.1), never handed out twice by
 * this process. Ports come from the kernel's ephemeral range, so races with other processes are
 * unlikely but possible; the server start-up probes catch those.
 */
export async function freePort (hosts: string[] = ['127.0.0.1']): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = await tcpFree(hosts[0]!, 0)
    if (port <= 0 || handedOut.has(port)) continue
    let ok = true
    for (const h of hosts) {
      if (!(await udpFree(h, port))) { ok = false; break }
      if (h !== hosts[0] && (await tcpFree(h, port)) !== port) { ok = false; break }
    }
    if (!ok) continue
    handedOut.add(port)
    return port
  }
  throw new Error(`no free UDP+TCP port on ${hosts.join(', ')}`)
}

/** A port p such that p and p + 1 are both free on TCP and UDP (baresip binds SIP on p, TLS on p + 1). */
export async function freePortPair (hosts: string[] = ['127.0.0.1']): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = await freePort(hosts)
    if (p >= 65535 || handedOut.has(p + 1)) continue
    let ok = true
    for (const h of hosts) {
      if ((await tcpFree(h, p + 1)) !== p + 1 || !(await udpFree(h, p + 1))) { ok = false; break }
    }
    if (ok) { handedOut.add(p + 1); return p }
  }
  throw new Error('no free port pair')
}

/**
 * A free UDP+TCP port below 10000 (sipsak 0.9.8 truncates 5-digit ports in the Request-URI it
 * sends: `-s sip:127.0.0.1:17060` goes out as `OPTIONS sip:127.0.0.1:1706`).
 */
export async function freeLowPort (hosts: string[] = ['127.0.0.1']): Promise<number> {
  for (let attempt = 0; attempt < 500; attempt++) {
    const p = 7000 + Math.floor(Math.random() * 2999)
    if (handedOut.has(p)) continue
    let ok = true
    for (const h of hosts) {
      if ((await tcpFree(h, p)) !== p || !(await udpFree(h, p))) { ok = false; break }
    }
    if (ok) { handedOut.add(p); return p }
  }
  throw new Error('no free port in 7000-9999')
}

export async function freePorts (n: number, hosts?: string[]): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) out.push(await freePort(hosts))
  return out
}

/** True when something accepts TCP connections on host:port. */
export function tcpListening (host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    import('node:net').then(({ connect }) => {
      const c = connect({ host, port })
      const t = setTimeout(() => { c.destroy(); resolve(false) }, 500)
      c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true) })
      c.once('error', () => { clearTimeout(t); resolve(false) })
    }, () => resolve(false))
  })
}

/** Sends an OPTIONS over UDP and resolves true when any SIP response comes back within 500 ms. */
export function sipUdpAlive (host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const v6 = host.includes(':')
    const s = createSocket(v6 ? 'udp6' : 'udp4')
    const done = (v: boolean): void => { clearTimeout(t); try { s.close() } catch { /* closed */ } resolve(v) }
    const t = setTimeout(() => done(false), 500)
    s.once('error', () => done(false))
    s.on('message', m => { if (m.toString('latin1').startsWith('SIP/2.0 ')) done(true) })
    s.bind({ address: v6 ? '::1' : '127.0.0.1', port: 0 }, () => {
      const a = s.address()
      const hp = v6 ? `[${host}]` : host
      const lp = v6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
      const branch = `z9hG4bK-probe-${a.port}-${process.hrtime.bigint()}`
      const msg = [
        `OPTIONS sip:${hp}:${port} SIP/2.0`,
        `Via: SIP/2.0/UDP ${lp};branch=${branch};rport`,
        'Max-Forwards: 70',
        `From: <sip:probe@${hp}>;tag=probe${a.port}`,
        `To: <sip:${hp}:${port}>`,
        `Call-ID: probe-${branch}`,
        'CSeq: 1 OPTIONS',
        'Content-Length: 0',
        '', ''
      ].join('\r\n')
      s.send(msg, port, host, err => { if (err) done(false) })
    })
  })
}
