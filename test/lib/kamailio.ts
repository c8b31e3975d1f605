// Starts Kamailio (the yardstick) in the foreground with test/bench/kamailio/kamailio.cfg templated
// into a temp dir: usrloc in memory, `children` UDP workers, listening on loopback only.
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { sipUdpAlive, tcpListening } from './ports.js'
import { startProcess, tempDir, type ManagedProcess } from './proc.js'

export const KAMAILIO_CFG = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'kamailio', 'kamailio.cfg')

export interface KamailioOptions {
  /** Listen addresses, e.g. [{ proto: 'udp', host: '127.0.0.1', port: 5070 }]. */
  listen: Array<{ proto: 'udp' | 'tcp', host: string, port: number }>
  domain?: string
  children?: number
  tcpChildren?: number
  /** Shared memory, MB (-m). */
  shmMb?: number
}

export interface RunningServer {
  name: string
  proc: ManagedProcess
  /** host:port (IPv6 bracketed) of the first UDP listener, for SIPp. */
  udp?: string
  tcp?: string
  pid: number
  /** Working directory (config, control socket). */
  dir?: string
  stop (): Promise<void>
}

const hostPort = (host: string, port: number): string => host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`

export async function startKamailio (o: KamailioOptions): Promise<RunningServer> {
  const { dir, cleanup } = tempDir('kamailio')
  const listen = o.listen.map(l => `listen=${l.proto}:${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`).join('\n')
  const cfg = readFileSync(KAMAILIO_CFG, 'utf8')
    .replaceAll('{{CHILDREN}}', String(o.children ?? 4))
    .replaceAll('{{TCP_CHILDREN}}', String(o.tcpChildren ?? 2))
    .replaceAll('{{LISTEN}}', listen)
    .replaceAll('{{DOMAIN}}', o.domain ?? 'sipring.test')
    .replaceAll('{{RUNDIR}}', dir)
  const cfgPath = join(dir, 'kamailio.cfg')
  writeFileSync(cfgPath, cfg)
  const udp = o.listen.find(l => l.proto === 'udp')
  const tcp = o.listen.find(l => l.proto === 'tcp')
  const proc = await startProcess('kamailio', 'kamailio', ['-f', cfgPath, '-DD', '-E', '-Y', dir, '-P', join(dir, 'kamailio.pid'), '-m', String(o.shmMb ?? 1024), '-M', '16'], {
    cwd: dir,
    ready: async () => (udp ? await sipUdpAlive(udp.host, udp.port) : true) && (tcp ? await tcpListening(tcp.host, tcp.port) : true),
    readyTimeoutMs: 15000
  })
  return {
    name: 'kamailio',
    proc,
    pid: proc.pid,
    dir,
    udp: udp ? hostPort(udp.host, udp.port) : undefined,
    tcp: tcp ? hostPort(tcp.host, tcp.port) : undefined,
    async stop () { await proc.stop(3000); cleanup() }
  }
}
