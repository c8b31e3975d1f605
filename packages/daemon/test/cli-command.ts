// How tests run the `sipring` CLI: the built dist/cli.js when it is at least as new as every source
// file of the workspace packages it bundles (fast: no TypeScript at start-up), else src/cli.ts via tsx.
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')

function newestSource (dir: string): number {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p))
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

function distIsFresh (): boolean {
  const dist = join(root, 'packages/daemon/dist/cli.js')
  if (!existsSync(dist)) return false
  for (const pkg of ['interface', 'sip', 'location', 'registrar', 'proxy', 'overlay', 'overlay-libp2p', 'auth', 'node', 'daemon']) {
    // tsc -b rewrites a project's tsbuildinfo whenever it rebuilds anything in it
    const info = join(root, 'packages', pkg, 'tsconfig.tsbuildinfo')
    if (!existsSync(info)) return false
    if (newestSource(join(root, 'packages', pkg, 'src')) > statSync(info).mtimeMs) return false
  }
  return true
}

/** Arguments to `node` that run the CLI. */
export const CLI: string[] = distIsFresh()
  ? [join(root, 'packages/daemon/dist/cli.js')]
  : ['--import', 'tsx', '--conditions=sipring-source', join(root, 'packages/daemon/src/cli.ts')]
