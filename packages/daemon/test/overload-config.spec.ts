// Overload keys of `sipring start`: overloadMaxInFlight, overloadRetryAfter — defaults,
// file < env < flags, precise errors, help text.
import t from 'tap'
import { configDir, issuesOf } from './config-helpers.js'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { loadConfig, startHelp, START_FLAGS, ENV_VARS } from '../src/config.js'

const { dir } = configDir('sipring-overload-config-')


t.test('defaults 2000 requests in flight, Retry-After 5 s; file < env < flags', async t => {
  let { config } = loadConfig([], {})
  t.equal(config.overloadMaxInFlight, 2000)
  t.equal(config.overloadRetryAfter, 5)
  const yaml = join(dir, 'o.yaml')
  writeFileSync(yaml, 'overloadMaxInFlight: 500\noverloadRetryAfter: 9\n')
  ;({ config } = loadConfig(['--config', yaml], {}))
  t.same([config.overloadMaxInFlight, config.overloadRetryAfter], [500, 9])
  ;({ config } = loadConfig([], { SIPRING_CONFIG: yaml, SIPRING_OVERLOAD_MAX_IN_FLIGHT: '0' }))
  t.same([config.overloadMaxInFlight, config.overloadRetryAfter], [0, 9], 'env beats file; 0 = no bound')
  ;({ config } = loadConfig(['--overload-max-in-flight', '100', '--overload-retry-after=2'], { SIPRING_CONFIG: yaml, SIPRING_OVERLOAD_RETRY_AFTER: '30' }))
  t.same([config.overloadMaxInFlight, config.overloadRetryAfter], [100, 2], 'flags beat env')
})

t.test('bad values are precise errors; documented in the help', async t => {
  t.match(issuesOf(() => loadConfig(['--overload-max-in-flight', '-1'], {})).join('\n'), /overloadMaxInFlight: expected 0–10000000 requests \(0 = no bound\), got -1/)
  t.match(issuesOf(() => loadConfig([], { SIPRING_OVERLOAD_RETRY_AFTER: 'soon' })).join('\n'), /overloadRetryAfter: expected an integer 0–86400 seconds, got "soon"/)
  t.match(issuesOf(() => loadConfig(['--overload-retry-after', '90000'], {})).join('\n'), /overloadRetryAfter/)
  const help = startHelp()
  for (const f of ['--overload-max-in-flight', '--overload-retry-after']) { t.ok(START_FLAGS[f], f); t.match(help, f) }
  for (const e of ['SIPRING_OVERLOAD_MAX_IN_FLIGHT', 'SIPRING_OVERLOAD_RETRY_AFTER']) { t.ok(ENV_VARS[e], e); t.match(help, e) }
})
