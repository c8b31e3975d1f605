/**
 * Group calls, centralized mode (the baseline for distributed forking): the super node that receives a request for a group
 * AOR expands the group itself and forks to every member's contacts.
 *
 * Pure helpers, no I/O of their own: {@link expandGroup} turns a group AOR into ordered *steps* (sets
 * of member AORs that ring together: one step for `ring-all`, one step per member for `hunt`), with
 * nested groups expanded recursively, loops cut, a depth limit and a bound on the group lookups;
 * {@link planGroupTargets} resolves the members of each step to targets, dropping duplicates (a member
 * reached twice, a contact shared by two members) and capping the total number of branches.
 */
import type { Logger } from '@sipring/interface'

export type GroupCallPolicy = 'ring-all' | 'hunt'

/** What the proxy needs to know about a group (the auth package's `Group` satisfies it). */
export interface GroupLike {
  /** Member AORs in order (the hunt order); a member may itself be a group. */
  readonly members: readonly string[]
  readonly policy: GroupCallPolicy
}

/** Where groups come from (`AccountStore.getGroup` in the node); undefined = not a group. */
export interface GroupSource {
  get(aor: string): Promise<GroupLike | undefined> | GroupLike | undefined
}

export interface GroupLimits {
  /** Nesting depth: the called group is level 1; a group nested deeper is not expanded (default 3). */
  maxDepth: number
  /** Branches (contacts) one group call forks to at most; members beyond are dropped (default 64). */
  maxBranches: number
  /** Hunt: how long one member rings before the next is tried, ms (default 20 000; 0 = until it answers). */
  memberTimeout: number
  /** Group lookups (member entries visited) during one expansion (default 1024). */
  maxVisited: number
}

export const DEFAULT_GROUP_LIMITS: GroupLimits = { maxDepth: 3, maxBranches: 64, memberTimeout: 20_000, maxVisited: 1024 }

export function checkGroupLimits (l: GroupLimits): void {
  for (const k of ['maxDepth', 'maxBranches', 'maxVisited'] as const) {
    if (!Number.isInteger(l[k]) || l[k] < 1) throw new RangeError(`groupLimits.${k} must be an integer >= 1, got ${String(l[k])}`)
  }
  if (!Number.isFinite(l.memberTimeout) || l.memberTimeout < 0) throw new RangeError(`groupLimits.memberTimeout must be a number of ms >= 0, got ${String(l.memberTimeout)}`)
}

export interface GroupExpansion {
  aor: string
  policy: GroupCallPolicy
  /** Member AORs (users, not groups) per step, in order; every AOR appears once overall. */
  steps: string[][]
  /** Loops cut: `[group, member]` edges that led back to a group on the current path. */
  loops: Array<[string, string]>
  /** Nested groups not expanded because of `maxDepth`. */
  tooDeep: string[]
  /** Members met again (second path to the same AOR) and skipped. */
  duplicates: string[]
  /** True when `maxVisited` stopped the expansion early. */
  truncated: boolean
}

type Norm = (aor: string) => string

/**
 * Expand `aor` when it is a group, else undefined. `normalize` maps a member AOR to the location key
 * (members that do not normalize are skipped); a `source.get` that throws means "not a group".
 */
export async function expandGroup (
  aor: string, source: GroupSource, limits: Pick<GroupLimits, 'maxDepth' | 'maxVisited'>, normalize: Norm = a => a, logger?: Logger
): Promise<GroupExpansion | undefined> {
  const root = await getGroup(source, aor, logger)
  if (root === undefined) return undefined
  const out: GroupExpansion = { aor, policy: root.policy, steps: [], loops: [], tooDeep: [], duplicates: [], truncated: false }
  let visited = 0

  /** Steps of group `g` (already fetched) at nesting level `depth`, `path` = groups above and itself. */
  async function walk (gAor: string, g: GroupLike, depth: number, path: string[]): Promise<string[][]> {
    const members: string[] = []
    for (const raw of g.members) {
      if (visited >= limits.maxVisited) { out.truncated = true; break }
      visited++
      let m: string
      try { m = normalize(raw) } catch (err) { logger?.warn({ err, group: gAor, member: raw }, 'group member is not a valid AOR: skipped'); continue }
      if (path.includes(m)) {
        out.loops.push([gAor, m])
        logger?.warn({ group: gAor, member: m, path }, 'group loop cut')
        continue
      }
      members.push(m)
    }
    // one group lookup per member, all at once (a db read or a core-node query each)
    const subs = await Promise.all(members.map(async m => await getGroup(source, m, logger)))
    const children: string[][][] = []
    for (let i = 0; i < members.length; i++) {
      const m = members[i]!
      const sub = subs[i]
      if (sub === undefined) { children.push([[m]]); continue }
      if (depth + 1 > limits.maxDepth) {
        out.tooDeep.push(m)
        logger?.warn({ group: gAor, member: m, maxDepth: limits.maxDepth }, 'nested group too deep: skipped')
        continue
      }
      children.push(await walk(m, sub, depth + 1, [...path, m]))
    }
    // ring-all: everything below rings at once; hunt: the children's steps one after the other
    // (a nested ring-all group is one hunt step, a nested hunt group contributes its own steps)
    if (g.policy === 'hunt') return children.flat()
    return [children.flat(2)]
  }

  const raw = await walk(aor, root, 1, [aor])
  const seen = new Set<string>()
  for (const step of raw) {
    const s: string[] = []
    for (const m of step) {
      if (seen.has(m)) { out.duplicates.push(m); continue }
      seen.add(m)
      s.push(m)
    }
    if (s.length > 0) out.steps.push(s)
  }
  if (out.truncated) logger?.warn({ group: aor, maxVisited: limits.maxVisited }, 'group expansion stopped: too many members')
  return out
}

async function getGroup (source: GroupSource, aor: string, logger?: Logger): Promise<GroupLike | undefined> {
  try {
    const g = await source.get(aor)
    if (g === undefined || g === null || !Array.isArray(g.members)) return undefined
    return g
  } catch (err) {
    logger?.debug({ err, aor }, 'group lookup failed: treated as not a group')
    return undefined
  }
}

export interface GroupPlan<T> {
  /** Targets per step (empty steps removed), in order. */
  steps: T[][]
  /** Members that had no usable binding. */
  unreachable: string[]
  /** Members dropped because the branch cap was reached. */
  dropped: string[]
  /** Targets skipped because another member already had the same one. */
  duplicateTargets: number
}

/**
 * Resolve each member of each step to its targets (`targetsOf`, e.g. location lookup → targets), in
 * order, keeping a member's targets together: a target whose `keyOf` was already used is skipped; a
 * member whose remaining targets would exceed `maxBranches` is dropped whole.
 */
export async function planGroupTargets<T> (
  steps: readonly string[][], targetsOf: (aor: string) => Promise<T[]> | T[], keyOf: (t: T) => string, maxBranches: number
): Promise<GroupPlan<T>> {
  const plan: GroupPlan<T> = { steps: [], unreachable: [], dropped: [], duplicateTargets: 0 }
  const used = new Set<string>()
  let total = 0
  // every member's lookup at once (location over the overlay is a network round trip), then in order
  const resolved = await Promise.all(steps.map(async step => await Promise.all(step.map(async m => await targetsOf(m)))))
  for (let si = 0; si < steps.length; si++) {
    const step = steps[si]!
    const out: T[] = []
    for (let mi = 0; mi < step.length; mi++) {
      const m = step[mi]!
      const mine: T[] = []
      const keys = new Set<string>()
      let dup = 0
      for (const t of resolved[si]![mi]!) {
        const k = keyOf(t)
        if (used.has(k) || keys.has(k)) { dup++; continue }
        keys.add(k)
        mine.push(t)
      }
      plan.duplicateTargets += dup
      if (mine.length === 0) { if (dup === 0) plan.unreachable.push(m); continue }
      if (total + mine.length > maxBranches) { plan.dropped.push(m); continue }
      total += mine.length
      for (const k of keys) used.add(k)
      out.push(...mine)
    }
    if (out.length > 0) plan.steps.push(out)
  }
  return plan
}
