/**
 * Distributed forking of group calls: pure helpers (no I/O).
 *
 * The originating super node S expands a group, partitions the members by *owner* super node (the
 * first live owner of the member's location key on the ring) and sends one **fork request** per owner:
 * a copy of the request with the Request-URI kept (the group AOR), a Route `<owner;lr;sr=fork;fork-max=N>`
 * and a `Sipring-Fork` header listing that owner's members:
 *
 *     Sipring-Fork: <sip:alice@example.org>, <sip:bob@example.org>
 *
 * The owner forks to those members' contacts only (at most N branches). The header is honoured only
 * on a request whose Route names the receiving node with `sr=fork` and that came from a known peer super
 * node; otherwise it is removed.
 */
import { parseNameAddr, splitList } from '@sipring/sip'

/** Canonical (lowercase) name of the header listing the members of a fork request. */
export const FORK_HEADER = 'sipring-fork'
/** Route parameter value (`sr=fork`) marking a fork request. */
export const FORK_ROUTE_VALUE = 'fork'
/** Route URI parameter carrying the branch budget of a fork request. */
export const FORK_MAX_PARAM = 'fork-max'
/** Route URI parameter naming the node that sent the fork request (it forks to its own attached bindings itself). */
export const FORK_FROM_PARAM = 'fork-from'
/**
 * Bound on one `Sipring-Fork` header value, in characters (well below the parser's 8,192-character
 * header line limit); the members of one owner that do not fit go in a further fork request.
 */
export const MAX_FORK_HEADER = 4096

export type GroupForking = 'centralized' | 'distributed'

/** `Sipring-Fork` value for `members` (AORs). */
export function formatForkHeader (members: readonly string[]): string {
  return members.map(m => `<${m}>`).join(', ')
}

/**
 * Split `members` into chunks whose `Sipring-Fork` value stays within `maxChars` (a member longer than
 * that on its own is dropped: it cannot be a valid AOR here) and `maxMembers` entries.
 */
export function chunkMembers (members: readonly string[], maxChars = MAX_FORK_HEADER, maxMembers = Infinity): string[][] {
  const out: string[][] = []
  let cur: string[] = []
  let len = 0
  for (const m of members) {
    const l = m.length + 2
    if (l > maxChars) continue
    const add = cur.length === 0 ? l : l + 2
    if (cur.length > 0 && (len + add > maxChars || cur.length >= maxMembers)) {
      out.push(cur); cur = []; len = 0
    }
    len += cur.length === 0 ? l : l + 2
    cur.push(m)
  }
  if (cur.length > 0) out.push(cur)
  return out
}

/**
 * Members listed by `Sipring-Fork` header values (one per header line; split on top-level commas), normalized by `normalize`
 * (entries that do not parse or normalize are skipped), duplicates removed, at most `max` kept.
 */
export function parseForkMembers (values: readonly string[], normalize: (uri: string) => string, max: number): { members: string[], skipped: number } {
  const members: string[] = []
  const seen = new Set<string>()
  let skipped = 0
  for (const line of values) {
    for (const v of splitList(line)) {
      let aor: string
      try { aor = normalize(parseNameAddr(v).uri) } catch { skipped++; continue }
      if (seen.has(aor)) continue
      if (members.length >= max) { skipped++; continue }
      seen.add(aor)
      members.push(aor)
    }
  }
  return { members, skipped }
}

/**
 * Share a branch budget between member sets: each set gets one branch per member plus its
 * proportional part of the spare (`total - Σ counts`, floored), so the sum never exceeds `total`
 * when `Σ counts ≤ total`.
 */
export function splitBudget (total: number, counts: readonly number[]): number[] {
  const sum = counts.reduce((a, b) => a + b, 0)
  if (sum === 0) return counts.map(() => 0)
  const spare = Math.max(0, total - sum)
  return counts.map(k => k + Math.floor(spare * k / sum))
}

/**
 * Partition members by owner: `ownerOf(member)` names the node that forks to it (or `self`).
 * Keeps the members' order within each owner and the owners in order of first appearance.
 */
export function partitionByOwner (members: readonly string[], ownerOf: (m: string) => string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const m of members) {
    const o = ownerOf(m)
    const l = out.get(o)
    if (l === undefined) out.set(o, [m]); else l.push(m)
  }
  return out
}
