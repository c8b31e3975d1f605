// The super node's Node flags (64 MiB semi-spaces, see NODE_FLAGS) are passed by every documented
// launch: the `sipring` command's shebang, `npm start`, and the harness that starts daemons for the
// interop tests and the SIPp benchmarks (so the benchmarks measure the daemon as deployed).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { NODE_FLAGS, youngGenerationSet } from '../src/main.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

t.test('every launch passes NODE_FLAGS', async t => {
  const shebang = readFileSync(join(ROOT, 'packages', 'daemon', 'src', 'cli.ts'), 'utf8').split('\n')[0]
  t.equal(shebang, `#!/usr/bin/env -S node ${NODE_FLAGS.join(' ')}`, 'the sipring command')
  const start = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.start as string
  t.match(start, `node ${NODE_FLAGS.join(' ')} packages/daemon/dist/cli.js start`, 'npm start')
  const harness = readFileSync(join(ROOT, 'test', 'lib', 'servers.ts'), 'utf8')
  t.match(harness, `const NODE_FLAGS = ${JSON.stringify(NODE_FLAGS).replaceAll('"', "'").replaceAll(',', ', ')}`, 'test/bench harness')
})

t.test('youngGenerationSet', async t => {
  t.equal(youngGenerationSet([], undefined), false)
  t.equal(youngGenerationSet(['--import', 'tsx'], '--max-old-space-size=4096'), false)
  t.equal(youngGenerationSet(NODE_FLAGS, undefined), true)
  t.equal(youngGenerationSet([], '--max-semi-space-size=32'), true)
})

t.test('the flag is one this Node accepts and it sizes the young generation', async t => {
  const r = spawnSync(process.execPath, [...NODE_FLAGS, '-e', "const v8 = require('node:v8'); let a2 = []; for (let i = 0; i < 3e6; i++) { a2.push({ i, s: 'x' + i }); if (a2.length > 2e5) a2 = [] } console.log(v8.getHeapSpaceStatistics().find(s => s.space_name === 'new_space').space_size)"], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.ok(Number(r.stdout) > 32 * 2 ** 20, `new space ${Number(r.stdout) / 2 ** 20} MiB grows past the default's 32 MiB (2 × 16 MiB)`)
})
