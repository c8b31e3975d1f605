// Group calls with real daemons: group members as SIPp UAS processes (one per member — forked legs
// share the caller's Call-ID, and SIPp matches calls by Call-ID, so one SIPp cannot be two members),
// registered at chosen overlay nodes, and the group defined with `sipring group add`.
// Used by test/interop/group.spec.ts and test/bench/fork.ts.
import { join } from 'node:path'
import { createSocket } from 'node:dgram'
import { readFileSync, writeFileSync } from 'node:fs'
import { freePort } from './ports.js'
import { runProcess } from './proc.js'
import { DOMAIN, ROOT, sipringCommand } from './servers.js'
import { runSipp, SIPP_DIR, startSippServer, type SippResult, type SippServer } from './sipp.js'
import type { OverlayNode } from './overlay.js'

/** The group scenarios of test/sipp/. */
export const groupScenario = (name: 'member-answer' | 'member-ring' | 'member-busy' | 'uac-cancel' | 'uac-busy' | 'uac-group' | 'register-contacts'): string =>
  join(SIPP_DIR, `${name}.xml`)

export type MemberRole = 'answer' | 'ring' | 'busy'

export interface Member {
  user: string
  /** The UDP port its UAS listens on (its registered Contact). */
  port: number
  /** The overlay node it is registered at. */
  node: OverlayNode
  uas?: SippServer
}

export const aor = (user: string, domain = DOMAIN): string => `sip:${user}@${domain}`

/** `n` members named `<prefix>NN`, member i registered at `nodes[i % nodes.length]`, each with a free UDP port. */
export async function makeMembers (prefix: string, n: number, nodes: OverlayNode[]): Promise<Member[]> {
  const out: Member[] = []
  for (let i = 0; i < n; i++) {
    out.push({ user: `${prefix}${String(i + 1).padStart(3, '0')}`, port: await freePort(), node: nodes[i % nodes.length]! })
  }
  return out
}

/**
 * Registers every member at its node (one SIPp run per node, Contact = 127.0.0.1:<member port>).
 * Resolves with the runs' results; the caller checks `successful`.
 */
export async function registerMembers (members: Member[], dir: string, expires = 900): Promise<Array<{ node: OverlayNode, result: SippResult }>> {
  const byNode = new Map<OverlayNode, Member[]>()
  for (const m of members) byNode.set(m.node, [...(byNode.get(m.node) ?? []), m])
  return await Promise.all([...byNode].map(async ([node, ms]) => {
    const csv = join(dir, `members-${node.spec.name}-${ms[0]!.user}.csv`)
    writeFileSync(csv, ['SEQUENTIAL', ...ms.map(m => `${m.user};127.0.0.1:${m.port}`)].join('\n') + '\n')
    const result = await runSipp({
      scenario: groupScenario('register-contacts'), remote: node.udp, transport: 'u1', calls: ms.length, rate: 500, limit: 50, inf: csv,
      keys: { domain: DOMAIN, expires: String(expires) }, recvTimeoutMs: 5000, timeoutMs: 30_000, rtt: false
    })
    return { node, result }
  }))
}

async function udpFree (port: number): Promise<boolean> {
  const s = createSocket('udp4')
  return await new Promise<boolean>(resolve => {
    s.once('error', () => { s.close(); resolve(false) })
    s.bind(port, '127.0.0.1', () => { s.close(() => { resolve(true) }) })
  })
}

/** Next block of the SIPp port range (below the kernel's ephemeral range, so freePort never hands these out). */
let nextBlock = 20000 + (process.pid % 500) * 16

/**
 * `-mp P -cp P+1` for one SIPp: its own media ports (SIPp binds P and P + 2) and control port, from
 * 20000–29999. By default every SIPp binds 6000/6002 and 8888, trying a few next ones when taken:
 * with tens of SIPp processes that runs out (`Unable to bind audio RTP socket ... errno = 98`).
 */
export async function sippPortArgs (): Promise<string[]> {
  for (let i = 0; i < 2500; i++) {
    const b = nextBlock
    nextBlock = nextBlock + 4 > 29996 ? 20000 : nextBlock + 4
    if (await udpFree(b) && await udpFree(b + 1) && await udpFree(b + 2)) return ['-mp', String(b), '-cp', String(b + 1)]
  }
  throw new Error('no free SIPp media/control ports in 20000-29999')
}

/** Starts (or restarts) each member's UAS with the scenario of its role. */
export async function startMembers (members: Member[], role: (m: Member) => MemberRole, maxLifeMs = 120_000, extraArgs: string[] = []): Promise<void> {
  // ports first (freePort is sequential), then the SIPp processes at once
  const ports = new Map<Member, string[]>()
  for (const m of members) ports.set(m, await sippPortArgs())
  await Promise.all(members.map(async m => {
    m.uas = await startSippServer({
      scenario: groupScenario(`member-${role(m)}`), transport: 'u1', localPort: m.port, maxLifeMs, rtt: false, extraArgs: [...ports.get(m)!, ...extraArgs]
    })
  }))
}

/** Stops every member's UAS and returns its result (by user). */
export async function stopMembers (members: Member[]): Promise<Map<string, SippResult>> {
  const out = new Map<string, SippResult>()
  await Promise.all(members.map(async m => {
    if (m.uas === undefined) return
    const u = m.uas
    m.uas = undefined
    out.set(m.user, await u.stop())
  }))
  return out
}

/** Kills every member's UAS (teardown). */
export async function disposeMembers (members: Member[]): Promise<void> {
  await Promise.all(members.map(async m => { const u = m.uas; m.uas = undefined; await u?.dispose() }))
}

/**
 * Runs the sipring CLI (`sipring <args>`) from source against a node's data dir and admin API;
 * rejects with its output when it exits non-zero.
 */
export async function sipringCli (node: OverlayNode, args: string[], timeoutMs = 30_000): Promise<string> {
  const { SIPRING_CLI: _cli, ...env } = process.env
  const r = await runProcess('sipring-cli', process.execPath, [...sipringCommand('source'), ...args,
    '--data', node.spec.dataDir, '--admin', `127.0.0.1:${node.spec.adminPort}`], timeoutMs, { cwd: ROOT, env })
  if (r.code !== 0) throw new Error(`sipring ${args.join(' ')} exited ${String(r.code)}${r.timedOut ? ' (timeout)' : ''}: ${r.output.slice(-2000)}`)
  return r.output
}

/** POST /groups on a node's admin API (token from `<dataDir>/admin-token`); replaces an existing group. */
export async function putGroupApi (node: OverlayNode, group: string, members: string[], policy: 'ring-all' | 'hunt' = 'ring-all'): Promise<void> {
  const token = readFileSync(join(node.spec.dataDir, 'admin-token'), 'utf8').trim()
  const base = `http://127.0.0.1:${node.spec.adminPort}`
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
  await fetch(`${base}/groups/${encodeURIComponent(group)}`, { method: 'DELETE', headers, signal: AbortSignal.timeout(5000) })
  const r = await fetch(`${base}/groups`, { method: 'POST', headers, body: JSON.stringify({ group, members, policy }), signal: AbortSignal.timeout(5000) })
  if (r.status !== 201) throw new Error(`POST /groups at ${node.spec.name}: HTTP ${r.status} ${await r.text()}`)
}

/** `sipring group add <group> --member … [--policy P]` at `node`. */
export async function addGroup (node: OverlayNode, group: string, members: string[], policy?: 'ring-all' | 'hunt'): Promise<string> {
  return await sipringCli(node, ['group', 'add', group, ...members.flatMap(m => ['--member', m]), ...(policy !== undefined ? ['--policy', policy] : [])])
}
