// Group-call keys of `sipring start`: groupForking, groupMaxBranches, groupMemberTimeout,
// groupMaxDepth — defaults, file < env < flags, precise errors, help text.
import t from 'tap'
import { configDir, issuesOf } from './config-helpers.js'
import { join } from 'node:path'
import { defaultConfig, loadConfig, startHelp, START_FLAGS, ENV_VARS } from '../src/config.js'

const { file } = configDir('sipring-group-config-')


t.test('defaults: forking left to the node, 64 branches, 20 s per hunt member, depth 3', async t => {
  const { config } = loadConfig([], {})
  t.equal(config.groupForking, undefined)
  t.equal(config.groupMaxBranches, 64)
  t.equal(config.groupMemberTimeout, 20)
  t.equal(config.groupMaxDepth, 3)
  t.same(config, defaultConfig())
})

t.test('file < env < flags', async t => {
  const yaml = file('g.yaml', ['groupForking: centralized', 'groupMaxBranches: 300', 'groupMemberTimeout: 15', 'groupMaxDepth: 2'].join('\n'))
  let { config } = loadConfig(['--config', yaml], {})
  t.equal(config.groupForking, 'centralized')
  t.equal(config.groupMaxBranches, 300)
  t.equal(config.groupMemberTimeout, 15)
  t.equal(config.groupMaxDepth, 2)

  ;({ config } = loadConfig([], { SIPRING_CONFIG: yaml, SIPRING_GROUP_FORKING: 'Distributed', SIPRING_GROUP_MAX_BRANCHES: '256', SIPRING_GROUP_MEMBER_TIMEOUT: '0' }))
  t.equal(config.groupForking, 'distributed', 'env beats file (case-insensitive)')
  t.equal(config.groupMaxBranches, 256, 'env beats file')
  t.equal(config.groupMemberTimeout, 0, '0 = ring until answered')
  t.equal(config.groupMaxDepth, 2, 'file value kept')

  ;({ config } = loadConfig(['--group-forking', 'centralized', '--group-max-branches=1', '--group-member-timeout', '5', '--group-max-depth', '16'],
    { SIPRING_CONFIG: yaml, SIPRING_GROUP_FORKING: 'distributed', SIPRING_GROUP_MAX_DEPTH: '4' }))
  t.equal(config.groupForking, 'centralized', 'flag beats env')
  t.equal(config.groupMaxBranches, 1, 'the smallest cap')
  t.equal(config.groupMemberTimeout, 5)
  t.equal(config.groupMaxDepth, 16, 'flag beats env')

  ;({ config } = loadConfig([], { SIPRING_CONFIG: file('g.json', '{"groupForking":"distributed","groupMaxBranches":"64"}') }))
  t.equal(config.groupForking, 'distributed', 'JSON file')
  t.equal(config.groupMaxBranches, 64, 'digits in a string are accepted')
})

t.test('precise errors naming the key and the source', async t => {
  t.same(issuesOf(() => loadConfig(['--group-forking', 'parallel'], {})),
    ['groupForking: expected one of distributed, centralized, got "parallel" (from --group-forking)'])
  t.same(issuesOf(() => loadConfig([], { SIPRING_GROUP_FORKING: '' })),
    ['groupForking: expected one of distributed, centralized, got "" (from SIPRING_GROUP_FORKING)'])
  t.same(issuesOf(() => loadConfig(['--group-max-branches', '0'], {})),
    ['groupMaxBranches: expected 1–10000, got 0 (from --group-max-branches)'])
  t.same(issuesOf(() => loadConfig(['--group-max-branches', '10001'], {})),
    ['groupMaxBranches: expected 1–10000, got 10001 (from --group-max-branches)'])
  t.same(issuesOf(() => loadConfig(['--group-max-branches', '2.5'], {})),
    ['groupMaxBranches: expected an integer 1–10000, got "2.5" (from --group-max-branches)'])
  t.same(issuesOf(() => loadConfig(['--group-member-timeout', '-1'], {})),
    ['groupMemberTimeout: expected 0–86400 seconds (0 = until answered), got -1 (from --group-member-timeout)'])
  t.same(issuesOf(() => loadConfig([], { SIPRING_GROUP_MEMBER_TIMEOUT: '20s' })),
    ['groupMemberTimeout: expected an integer 0–86400 seconds (0 = until answered), got "20s" (from SIPRING_GROUP_MEMBER_TIMEOUT)'])
  t.same(issuesOf(() => loadConfig(['--group-max-depth', '0'], {})),
    ['groupMaxDepth: expected 1–16, got 0 (from --group-max-depth)'])
  t.same(issuesOf(() => loadConfig(['--group-max-depth', '17'], {})),
    ['groupMaxDepth: expected 1–16, got 17 (from --group-max-depth)'])
  const yaml = file('bad.yaml', 'groupForking: [a]\ngroupMaxDepth: true\n')
  t.same(issuesOf(() => loadConfig(['--config', yaml], {})), [
    `groupForking: expected one of distributed, centralized, got an array (from config file ${yaml})`,
    `groupMaxDepth: expected an integer 1–16, got true (from config file ${yaml})`
  ], 'every bad key is reported')
  t.throws(() => loadConfig(['--group-forking'], {}), /option --group-forking needs a value/)
})

t.test('the keys are documented in --help and known to env/flag tables', async t => {
  const help = startHelp()
  for (const flag of ['--group-forking', '--group-max-branches', '--group-member-timeout', '--group-max-depth']) {
    t.ok(START_FLAGS[flag], `${flag} is a flag`)
    t.match(help, flag)
  }
  for (const v of ['SIPRING_GROUP_FORKING', 'SIPRING_GROUP_MAX_BRANCHES', 'SIPRING_GROUP_MEMBER_TIMEOUT', 'SIPRING_GROUP_MAX_DEPTH']) {
    t.ok(ENV_VARS[v], `${v} is known`)
    t.match(help, v)
  }
  t.match(help, /groupForking, groupMaxBranches, groupMemberTimeout, groupMaxDepth/)
})
