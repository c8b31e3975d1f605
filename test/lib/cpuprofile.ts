// Summarizes a V8 .cpuprofile (node --cpu-prof): self time per function and per workspace package.
import { readFileSync } from 'node:fs'

interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number } }
interface Profile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

export interface ProfileSummary {
  totalMs: number
  /** [label, % of samples], highest first. */
  functions: Array<[string, number]>
  /** [package or bucket, %], highest first: sip, registrar, location, proxy, node-internal, (idle), (garbage collector), … */
  packages: Array<[string, number]>
}

export function summarizeProfile (path: string, top = 15): ProfileSummary {
  const prof = JSON.parse(readFileSync(path, 'utf8')) as Profile
  const byId = new Map(prof.nodes.map(n => [n.id, n]))
  const total = prof.timeDeltas.reduce((a, b) => a + b, 0) || 1
  const self = new Map<string, number>()
  const pkgs = new Map<string, number>()
  prof.samples.forEach((id, i) => {
    const n = byId.get(id)
    if (!n) return
    const dt = prof.timeDeltas[i] ?? 0
    const { functionName, url, lineNumber } = n.callFrame
    const where = url.replace(/^.*\/(packages|node_modules)\//, '$1/').replace(/^file:\/\//, '')
    const label = `${functionName || '(anonymous)'}${where ? ` ${where}:${lineNumber + 1}` : ''}`
    self.set(label, (self.get(label) ?? 0) + dt)
    const pkg = /packages\/([\w-]+)\//.exec(url)?.[1] ?? (url.startsWith('node:') ? 'node-internal' : url.includes('node_modules/') ? 'node_modules' : functionName.startsWith('(') ? functionName : 'other')
    pkgs.set(pkg, (pkgs.get(pkg) ?? 0) + dt)
  })
  const pct = (m: Map<string, number>, n: number): Array<[string, number]> =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => [k, 100 * v / total])
  return { totalMs: total / 1000, functions: pct(self, top), packages: pct(pkgs, 20) }
}
