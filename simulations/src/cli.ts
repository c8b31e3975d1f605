#!/usr/bin/env -S npx tsx
/**
 * `sipring-sim` entry point. The simulator imports sibling packages from source (the
 * `sipring-source` export condition); when started without it (e.g. `npx tsx simulations/src/cli.ts`)
 * this launcher re-executes Node with the condition and tsx's loader, then hands over to main.ts.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const hasCondition = process.execArgv.some(a => a.includes('sipring-source')) || (process.env.NODE_OPTIONS ?? '').includes('sipring-source')
if (hasCondition) {
  const { main } = await import('./main.js')
  process.exitCode = await main(process.argv.slice(2))
} else {
  const tsx = import.meta.resolve('tsx')
  const child = spawn(process.execPath, ['--import', tsx, '--conditions=sipring-source', fileURLToPath(new URL(import.meta.url)), ...process.argv.slice(2)], { stdio: 'inherit' })
  child.on('exit', (code, signal) => { process.exit(code ?? (signal !== null ? 1 : 0)) })
}
