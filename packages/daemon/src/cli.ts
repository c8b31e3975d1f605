#!/usr/bin/env -S node --max-semi-space-size=64
// Entry point of the `sipring` command (compiled to dist/cli.js). The shebang's Node flags are
// NODE_FLAGS in main.ts (npm start and the test/bench harness pass the same).
import { main } from './main.js'

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
  // `start` resolves after a clean stop; make sure nothing left over keeps the process alive.
  if (process.argv[2] === 'start') setImmediate(() => process.exit(code))
}, (err: unknown) => {
  process.stderr.write(`sipring: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exit(1)
})
