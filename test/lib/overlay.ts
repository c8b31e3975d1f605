// Overlay clusters of real `sipring start --overlay` daemons on loopback (libp2p TCP on 127.0.0.1,
// ephemeral ports, temp data dirs), for test/interop/overlay.spec.ts and test/bench/overlay.ts.
// Each node keeps its ports and data dir, so it can be killed (SIGKILL) and restarted as itself.
import { freePort } from './ports.js'
import { sleep, tempDir } from './proc.js'
import { DOMAIN, startSipring, type Listener, type TestServer } from './servers.js'

export interface OverlayNodeSpec {
  name: string
  sipPort: number
  adminPort: number
  overlayPort: number
  dataDir: string
  replicas: number
  extraArgs: string[]
  /** Extra arguments for node itself, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']. */
  nodeArgs?: string[]
}

export interface OverlayNode {
  spec: OverlayNodeSpec
  server: TestServer
  /** This node's PeerId (from GET /ring). */
  id: string
  /** `/ip4/127.0.0.1/tcp/<port>/p2p/<id>`, to pass to --join. */
  joinAddr: string
  /** host:port of the UDP / TCP SIP listener. */
  udp: string
  tcp: string
}

export interface RingMember { id: string, self: boolean, status: string, inRing: boolean, sipUri?: string, load: number, ranges: number }
export interface RingView { self: string, multiaddrs: string[], replicas: number, members: RingMember[], store: { items: number, tombstones: number, [k: string]: number }, replication: Record<string, number> }
export interface LookupView {
  aor: string
  key: string
  owners: Array<{ id: string, primary: boolean, status: string }>
  error?: string
  nodes: Array<{ node: string, sipUri: string, contacts: Array<{ contact: string, expiresIn: number }> }>
  local: Array<{ contact: string }>
}

/** Ports and a data dir for a node that is not started yet. */
export async function overlayNodeSpec (name: string, opts: { replicas?: number, extraArgs?: string[], nodeArgs?: string[] } = {}): Promise<OverlayNodeSpec & { cleanup: () => void }> {
  const data = tempDir(`overlay-${name}`)
  return {
    name,
    sipPort: await freePort(),
    adminPort: await freePort(),
    overlayPort: await freePort(),
    dataDir: data.dir,
    replicas: opts.replicas ?? 3,
    extraArgs: opts.extraArgs ?? [],
    nodeArgs: opts.nodeArgs,
    cleanup: data.cleanup
  }
}

async function adminJson<T> (server: TestServer, path: string): Promise<T> {
  const r = await server.admin!(path)
  if (r.status !== 200) throw new Error(`GET ${path}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 300)}`)
  return r.body as T
}

/** Starts (or restarts, same ports and data dir) one overlay node joining `join` (multiaddrs). */
export async function startOverlayNode (spec: OverlayNodeSpec, join: string[] = []): Promise<OverlayNode> {
  const listen: Listener[] = [{ proto: 'udp', host: '127.0.0.1', port: spec.sipPort }, { proto: 'tcp', host: '127.0.0.1', port: spec.sipPort }]
  const server = await startSipring({
    listen,
    dataDir: spec.dataDir,
    adminPort: spec.adminPort,
    nodeArgs: spec.nodeArgs,
    extraArgs: ['--overlay', 'true', '--overlay-listen', `/ip4/127.0.0.1/tcp/${spec.overlayPort}`, '--advertise', '127.0.0.1',
      '--replicas', String(spec.replicas), ...join.flatMap(j => ['--join', j]), ...spec.extraArgs]
  })
  const ring = await adminJson<RingView>(server, '/ring')
  const joinAddr = ring.multiaddrs.find(m => m.startsWith('/ip4/127.0.0.1/')) ?? `/ip4/127.0.0.1/tcp/${spec.overlayPort}/p2p/${ring.self}`
  return { spec, server, id: ring.self, joinAddr, udp: `127.0.0.1:${spec.sipPort}`, tcp: `127.0.0.1:${spec.sipPort}` }
}

export const ring = (n: OverlayNode): Promise<RingView> => adminJson<RingView>(n.server, '/ring')

export const lookup = (n: OverlayNode, user: string, domain = DOMAIN): Promise<LookupView> =>
  adminJson<LookupView>(n.server, `/lookup?aor=${encodeURIComponent(`sip:${user}@${domain}`)}`)

/** SIGKILL: no graceful leave, no level flush. Resolves once the process is gone. */
export async function killNode (n: OverlayNode): Promise<void> {
  try { process.kill(-n.server.pid, 'SIGKILL') } catch { try { process.kill(n.server.pid, 'SIGKILL') } catch { /* gone */ } }
  await n.server.proc.exited
  await n.server.proc.stop(100) // forget the process
}

/** Polls `cond` every `everyMs` until true; throws with `what` (and the last detail) after `timeoutMs`. */
export async function waitUntil (what: string, cond: () => Promise<boolean | string>, timeoutMs: number, everyMs = 200): Promise<number> {
  const start = Date.now()
  let last: boolean | string = false
  for (;;) {
    try { last = await cond() } catch (err) { last = `error: ${(err as Error).message}` }
    if (last === true) return Date.now() - start
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${typeof last === 'string' ? ` (${last})` : ''}`)
    await sleep(everyMs)
  }
}

/** Every node's /ring lists exactly `ids` as alive ring members; a string says what is still missing. */
export async function ringAgrees (nodes: OverlayNode[], ids: string[]): Promise<boolean | string> {
  const want = [...ids].sort().join(',')
  for (const n of nodes) {
    const r = await ring(n)
    const got = r.members.filter(m => m.status === 'alive' && m.inRing).map(m => m.id).sort().join(',')
    if (got !== want) return `${n.spec.name} sees ${r.members.map(m => `${m.id.slice(-6)}:${m.status}${m.inRing ? '' : '(not in ring)'}`).join(' ')}`
  }
  return true
}

/**
 * Looks every user up at every node (`concurrency` requests at a time) and returns the failures:
 * a user is found when the lookup names `attachedTo` (a PeerId) with at least one contact.
 */
export async function lookupAll (nodes: OverlayNode[], users: string[], attachedTo: (user: string) => string, concurrency = 16): Promise<string[]> {
  const jobs = nodes.flatMap(n => users.map(u => ({ n, u })))
  const failures: string[] = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, async () => {
    while (next < jobs.length) {
      const { n, u } = jobs[next++]!
      try {
        const l = await lookup(n, u)
        const portion = l.nodes.find(p => p.node === attachedTo(u))
        if (portion === undefined || portion.contacts.length === 0) {
          failures.push(`${u} at ${n.spec.name}: ${l.error ?? 'no contact'} (nodes: ${l.nodes.map(p => `${p.node.slice(-6)}×${p.contacts.length}`).join(',') || 'none'})`)
        }
      } catch (err) { failures.push(`${u} at ${n.spec.name}: ${(err as Error).message}`) }
    }
  }))
  return failures
}
