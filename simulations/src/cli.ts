#!/usr/bin/env -S npx tsx
/**
 * `sipring-sim` entry point. The simulator imports sibling packages from source (the
 * `sipring-source` export condition); when started without it (e.g. `npx tsx simulations/src/cli.ts`)
 * this launcher re-executes Node with the condition and tsx's loader (and 64 MiB semi-spaces), then
 * hands over to main.ts.
 */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const hasCondition = process.execArgv.some(a => a.includes('sipring-source')) || (process.env.NODE_OPTIONS ?? '').includes('sipring-source')
if (hasCondition) {
  const { main } = await import('./main.js')
  process.exitCode = await main(process.argv.slice(2))
} else {
  const tsx = import.meta.resolve('tsx')
  // a larger young generation: the simulator allocates short-lived promises and messages at a high
  // rate, and 16 MiB semi-spaces made scavenges ≈ 20% of the CPU (64 MiB: −18% CPU-s at 10k nodes;
  // 512 MiB: another −9% at 20k nodes, where requests and timers outlive smaller young generations)
  const semi = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some(a => a.includes('max-semi-space-size')) ? [] : ['--max-semi-space-size=512']
  const child = spawn(process.execPath, [...semi, '--import', tsx, '--conditions=sipring-source', fileURLToPath(new URL(import.meta.url)), ...process.argv.slice(2)], { stdio: 'inherit' })
  child.on('exit', (code, signal) => { process.exit(code ?? (signal !== null ? 1 : 0)) })
}
