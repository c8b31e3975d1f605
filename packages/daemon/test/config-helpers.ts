// Shared by the config specs: the issues of a ConfigError, and a temp dir for config files.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '../src/config.js'

/** The `issues` of the ConfigError `fn` throws (fails when it throws nothing or something else). */
export function issuesOf (fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.issues
    throw err
  }
  throw new Error('expected a ConfigError')
}

/** A temp dir removed at the end of the test file, and a writer of files in it. */
export function configDir (prefix: string): { dir: string, file: (name: string, text: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return {
    dir,
    file (name: string, text: string): string {
      const p = join(dir, name)
      writeFileSync(p, text)
      return p
    }
  }
}
