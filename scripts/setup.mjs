#!/usr/bin/env node
// One-step set-up for a fresh machine with only Node and npm: pnpm (pinned), dependencies, build.
// `--tools` also installs the Debian SIP tools used by interop tests and benchmarks (best effort).
import { execSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const pnpmVersion = pkg.packageManager.split('@')[1]
const run = (cmd, opts = {}) => execSync(cmd, { cwd: root, stdio: 'inherit', ...opts })

function pnpmCommand () {
  const r = spawnSync('pnpm', ['--version'], { encoding: 'utf8' })
  if (r.status === 0 && r.stdout.trim() === pnpmVersion) return 'pnpm'
  console.error(`[setup] installing pnpm@${pnpmVersion}`)
  const g = spawnSync('npm', ['i', '-g', `pnpm@${pnpmVersion}`], { stdio: 'inherit' })
  if (g.status === 0) return 'pnpm'
  return `npx -y pnpm@${pnpmVersion}`
}

const lock = join(root, 'pnpm-lock.yaml')
const marker = join(root, 'node_modules', '.modules.yaml')
const needInstall = !existsSync(marker) ||
  (existsSync(lock) && statSync(lock).mtimeMs > statSync(marker).mtimeMs)
if (needInstall) {
  const pnpm = pnpmCommand()
  run(`${pnpm} install ${existsSync(lock) ? '--frozen-lockfile' : ''}`, { env: { ...process.env, CI: 'true' } })
}
if (process.argv.includes('--tools')) {
  const r = spawnSync('bash', [join(root, 'scripts', 'install-tools.sh')], { stdio: 'inherit' })
  if (r.status !== 0) console.error('[setup] WARNING: SIP tools could not all be installed; tests needing them will skip loudly')
}
// tap compiles its plugin set into node_modules; the project's `tap.plugin` list (tsx instead of
// @tapjs/typescript) only takes effect after `tap build`, so a fresh install must build it first.
run('node node_modules/tap/dist/esm/run.mjs build', { stdio: 'ignore' })
run('node node_modules/typescript/bin/tsc -b')
