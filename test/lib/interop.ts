// Shared helpers for the interop specs.
import type { Test } from 'tap'
import { haveTool } from './proc.js'
import { targetKind, type ServerKind } from './servers.js'

type Tap = Pick<Test, 'pass' | 'comment'>

/**
 * True when every tool is installed; otherwise skips the whole file LOUDLY (console.error
 * "SKIPPED: <tool> not installed" + a skipped assertion). Nothing else ever skips: a missing or broken sipring
 * fails the tests.
 */
export function requireTools (t: Tap, tools: string[]): boolean {
  const missing = tools.filter(x => !haveTool(x))
  if (missing.length === 0) return true
  const msg = `SKIPPED: ${missing.join(', ')} not installed (run scripts/install-tools.sh)`
  console.error(msg)
  t.pass(msg, { skip: msg })
  return false
}

/** The server kind these interop tests target (sipring unless SIPRING_INTEROP_TARGET=kamailio). */
export function target (t: Tap): ServerKind {
  const k = targetKind()
  t.comment(`interop target: ${k}`)
  return k
}
