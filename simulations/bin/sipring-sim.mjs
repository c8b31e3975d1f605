#!/usr/bin/env node
// Runs the simulator from source with tsx and the `sipring-source` export condition.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const main = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
const tsx = import.meta.resolve('tsx')
const child = spawn(process.execPath, ['--import', tsx, '--conditions=sipring-source', main, ...process.argv.slice(2)], { stdio: 'inherit' })
child.on('exit', (code, signal) => { process.exit(code ?? (signal !== null ? 1 : 0)) })
