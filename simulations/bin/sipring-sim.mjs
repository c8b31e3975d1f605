#!/usr/bin/env node
// Runs the simulator from source with tsx and the `sipring-source` export condition.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const main = fileURLToPath(new URL('../src/cli.ts', import.meta.url))
const tsx = import.meta.resolve('tsx')
const semi = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some(a => a.includes('max-semi-space-size')) ? [] : ['--max-semi-space-size=64'] // see src/cli.ts
const child = spawn(process.execPath, [...semi, '--import', tsx, '--conditions=sipring-source', main, ...process.argv.slice(2)], { stdio: 'inherit' })
child.on('exit', (code, signal) => { process.exit(code ?? (signal !== null ? 1 : 0)) })
