// accountsTombstoneTtl (core nodes): default 7 days, file < env < flags, bounds, passed to the core node.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { configDir, issuesOf } from './config-helpers.js'
import { loadConfig, startHelp, START_FLAGS, ENV_VARS } from '../src/config.js'

const { dir } = configDir('sipring-accounts-config-')

t.test('accountsTombstoneTtl: default 7 days; file < env < flags; bounded', async t => {
  let { config } = loadConfig([], {})
  t.equal(config.accountsTombstoneTtl, 604_800)
  const yaml = join(dir, 'a.yaml')
  writeFileSync(yaml, 'accountsTombstoneTtl: 86400\n')
  ;({ config } = loadConfig(['--config', yaml], {}))
  t.equal(config.accountsTombstoneTtl, 86_400)
  ;({ config } = loadConfig([], { SIPRING_CONFIG: yaml, SIPRING_ACCOUNTS_TOMBSTONE_TTL: '7200' }))
  t.equal(config.accountsTombstoneTtl, 7200, 'env beats file')
  ;({ config } = loadConfig(['--accounts-tombstone-ttl', '3600'], { SIPRING_ACCOUNTS_TOMBSTONE_TTL: '7200' }))
  t.equal(config.accountsTombstoneTtl, 3600, 'flags beat env')
  t.match(issuesOf(() => loadConfig(['--accounts-tombstone-ttl', '60'], {})).join('\n'), /accountsTombstoneTtl: expected 3600–31536000 seconds \(1 hour to 365 days\), got 60/)
  t.match(issuesOf(() => loadConfig([], { SIPRING_ACCOUNTS_TOMBSTONE_TTL: '31536001' })).join('\n'), /accountsTombstoneTtl/)
  t.match(issuesOf(() => loadConfig([], { SIPRING_ACCOUNTS_TOMBSTONE_TTL: 'week' })).join('\n'), /accountsTombstoneTtl/)
  t.ok(START_FLAGS['--accounts-tombstone-ttl'])
  t.ok(ENV_VARS.SIPRING_ACCOUNTS_TOMBSTONE_TTL)
  t.match(startHelp(), '--accounts-tombstone-ttl')
})
