#!/usr/bin/env node
// Runs the whole suite with tap and ends with one line `N passed, N failed[, N skipped]`,
// keeping tap's exit code. Extra arguments go to tap (e.g. a file or --grep).
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const tapBin = join(root, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs')
// A directory argument stands for every *.spec.ts below it (tap only takes files matching `include`).
function expand (arg) {
  let st
  try { st = statSync(arg) } catch { return [arg] }
  if (!st.isDirectory()) return [arg]
  return readdirSync(arg, { recursive: true })
    .filter(f => String(f).endsWith('.spec.ts') && !String(f).includes('node_modules'))
    .map(f => join(arg, String(f)))
    .sort()
}
const args = ['--reporter=tap', ...process.argv.slice(2).flatMap(a => a.startsWith('-') ? [a] : expand(a))]
const child = spawn(process.execPath, [tapBin, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })

let summary = null
let tail = ''
child.stdout.on('data', chunk => {
  process.stdout.write(chunk)
  const text = tail + chunk.toString('utf8')
  const lines = text.split('\n')
  tail = lines.pop() ?? ''
  for (const l of lines) {
    const m = /^# \{ (.*) \}\s*$/.exec(l)
    if (m) summary = m[1]
  }
})
child.on('close', (code, signal) => {
  if (tail) { const m = /^# \{ (.*) \}\s*$/.exec(tail); if (m) summary = m[1] }
  const counts = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 }
  if (summary) {
    for (const part of summary.split(',')) {
      const [k, v] = part.split(':').map(s => s.trim())
      if (k in counts) counts[k] = Number(v)
    }
  }
  let failed = counts.fail
  const exit = code ?? (signal ? 1 : 0)
  if (exit !== 0 && failed === 0) failed = 1 // a crash or a timeout counts as a failure
  const skipped = counts.skip + counts.todo
  console.log(`${counts.pass} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`)
  process.exit(exit)
})
