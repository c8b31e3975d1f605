import t from 'tap'
import { configDir, issuesOf } from './config-helpers.js'
import { join } from 'node:path'
import {
  UsageError, defaultConfig, envLayer, fileLayer, loadConfig, parseStartArgs, resolveConfig, startHelp, START_FLAGS, ENV_VARS, CONFIG_KEYS
} from '../src/config.js'

const { dir, file } = configDir('sipring-config-')


t.test('embedded defaults', async t => {
  const { config } = loadConfig([], {})
  t.same(config, defaultConfig())
  t.equal(config.dataDir, './data')
  t.same(config.sip.map(l => `${l.protocol}:${l.host}:${l.port}`), ['udp:0.0.0.0:5060', 'tcp:0.0.0.0:5060', 'udp::::5060', 'tcp::::5060'])
  t.same(config.admin, { host: '127.0.0.1', port: 5080 })
  t.same(config.domains, [])
  t.equal(config.minExpires, 60)
  t.equal(config.maxExpires, 3600)
  t.equal(config.defaultExpires, 3600)
  t.equal(config.maxContactsPerAor, 10)
  t.equal(config.logLevel, 'info')
})

t.test('precedence: defaults < file < env < flags', async t => {
  const yaml = file('a.yaml', [
    'dataDir: /from/file',
    'minExpires: 30',
    'maxExpires: 7200',
    'logLevel: debug',
    'domains: [file.example.org]',
    'sip:',
    '  - udp:127.0.0.1:5070',
    '  - { protocol: tcp, host: "::1", port: 5071 }'
  ].join('\n'))
  const env = { SIPRING_CONFIG: yaml, SIPRING_MIN_EXPIRES: '45', SIPRING_LOG_LEVEL: 'warn', SIPRING_DOMAINS: 'a.org, b.org' }
  const { config } = loadConfig(['--log-level', 'error', '--domain', 'c.org'], env)
  t.equal(config.dataDir, '/from/file', 'file beats default')
  t.equal(config.maxExpires, 7200, 'file beats default')
  t.equal(config.minExpires, 45, 'env beats file')
  t.equal(config.logLevel, 'error', 'flag beats env')
  t.same(config.domains, ['c.org'], 'a list flag replaces the list')
  t.same(config.sip, [{ protocol: 'udp', host: '127.0.0.1', port: 5070 }, { protocol: 'tcp', host: '::1', port: 5071 }])
  t.equal(config.defaultExpires, 3600, 'untouched key keeps the default')

  const { config: c2 } = loadConfig(['--config', yaml], { SIPRING_DOMAINS: 'a.org, B.org' })
  t.same(c2.domains, ['a.org', 'b.org'], 'env list is comma separated and lowercased')
  t.equal(c2.minExpires, 30)
})

t.test('JSON file, --flag=value form, repeated --sip, IPv6 brackets', async t => {
  const json = file('b.json', JSON.stringify({ admin: '[::1]:6000', recordRoute: false, maxContactsPerAor: 3 }))
  const { config } = loadConfig([`--config=${json}`, '--sip', 'udp:[::]:0', '--sip=tcp:127.0.0.1:0', '--data', '/tmp/x'], {})
  t.same(config.admin, { host: '::1', port: 6000 })
  t.equal(config.recordRoute, false)
  t.equal(config.maxContactsPerAor, 3)
  t.same(config.sip, [{ protocol: 'udp', host: '::', port: 0 }, { protocol: 'tcp', host: '127.0.0.1', port: 0 }])
  t.equal(config.dataDir, '/tmp/x')
  t.equal(loadConfig(['--admin', 'off'], {}).config.admin, null, 'admin can be disabled')
})

t.test('precise validation messages', async t => {
  const f = file('bad-port.yaml', 'sip:\n  - udp:0.0.0.0:5060\n  - { protocol: tcp, host: 0.0.0.0, port: 70000 }\n')
  t.same(issuesOf(() => loadConfig(['--config', f], {})), [`sip[1].port: expected 1–65535 (0 = any free port), got 70000 (from config file ${f})`])
  t.same(issuesOf(() => loadConfig(['--sip', 'udp:0.0.0.0:5060', '--sip', 'sctp:1.2.3.4:5'], {})),
    ['sip[1].protocol: expected one of udp, tcp, tls, ws, wss, got "sctp" (from --sip)'])
  t.same(issuesOf(() => loadConfig(['--sip', 'udp:example.org:5060'], {})),
    ['sip[0].host: expected an IPv4 or IPv6 address, got "example.org" (from --sip)'])
  t.same(issuesOf(() => loadConfig(['--sip', 'nonsense'], {})),
    ['sip[0]: expected protocol:host:port (e.g. udp:0.0.0.0:5060 or tcp:[::]:5060), got "nonsense" (from --sip)'])
  t.same(issuesOf(() => loadConfig([], { SIPRING_MIN_EXPIRES: 'abc' })),
    ['minExpires: expected an integer 1–2147483647, got "abc" (from SIPRING_MIN_EXPIRES)'])
  t.same(issuesOf(() => loadConfig(['--max-contacts', '0'], {})),
    ['maxContactsPerAor: expected 1–1000, got 0 (from --max-contacts)'])
  t.same(issuesOf(() => loadConfig(['--log-level', 'loud'], {})),
    ['logLevel: expected one of trace, debug, info, warn, error, fatal, silent, got "loud" (from --log-level)'])
  t.same(issuesOf(() => loadConfig(['--admin', '127.0.0.1'], {})),
    ['admin: expected host:port (e.g. 127.0.0.1:5080 or [::1]:5080), got "127.0.0.1" (from --admin)'])
  t.same(issuesOf(() => loadConfig(['--domain', 'bad_domain!'], {})),
    ['domains[0]: expected a domain name or IP address, got "bad_domain!" (from --domain)'])
  t.same(issuesOf(() => loadConfig(['--record-route', 'maybe'], {})),
    ['recordRoute: expected true or false, got "maybe" (from --record-route)'])
  t.same(issuesOf(() => loadConfig(['--min-expires', '600', '--max-expires', '300'], {})), [
    'minExpires: must not exceed maxExpires (300), got 600',
    'defaultExpires: expected between minExpires (600) and maxExpires (300), got 3600'
  ])
  t.same(issuesOf(() => loadConfig(['--sip', 'tls:0.0.0.0:5061'], {})),
    ['tls: sip[0] is tls and needs both tls.cert and tls.key (--tls-cert/--tls-key)'])
  t.same(issuesOf(() => loadConfig(['--sip', 'udp:0.0.0.0:5060', '--sip', 'udp:0.0.0.0:5060'], {})),
    ['sip[1]: duplicate listener udp:0.0.0.0:5060'])
})

t.test('udp and tcp may share a port number', async t => {
  const { config } = loadConfig(['--sip', 'udp:0.0.0.0:5060', '--sip', 'tcp:0.0.0.0:5060'], {})
  t.equal(config.sip.length, 2)
})

t.test('several issues are all reported', async t => {
  const issues = issuesOf(() => loadConfig(['--min-expires', '-1', '--log-level', 'x'], { SIPRING_MAX_EXPIRES: '1.5' }))
  t.equal(issues.length, 3)
  t.match(issues.join('\n'), /maxExpires: .*got "1.5" \(from SIPRING_MAX_EXPIRES\)/)
  t.match(issues.join('\n'), /minExpires: expected 1–2147483647, got -1 \(from --min-expires\)/)
})

t.test('unknown keys, variables and flags are rejected', async t => {
  const f = file('unknown.yaml', 'dataDir: /x\nlistenPort: 5060\n')
  t.same(issuesOf(() => fileLayer(f)), [`listenPort: unknown key (known: ${CONFIG_KEYS.join(', ')}) (in ${f})`])
  const nested = file('nested.yaml', 'sip:\n  - { protocol: udp, host: 0.0.0.0, port: 5060, ttl: 3 }\n')
  t.match(issuesOf(() => loadConfig(['--config', nested], {})), [/^sip\[0\]\.ttl: unknown key/])
  t.match(issuesOf(() => envLayer({ SIPRING_PORT: '5060' })), [/^SIPRING_PORT: unknown environment variable/])
  t.throws(() => parseStartArgs(['--port', '5060']), new UsageError('unknown option --port'))
  t.throws(() => parseStartArgs(['--data']), new UsageError('option --data needs a value (DIR)'))
  t.throws(() => parseStartArgs(['start']), new UsageError('unexpected argument "start"'))
  t.same(envLayer({ PATH: '/bin', HOME: '/root' }).layer.values, {}, 'other variables are ignored')
})

t.test('unreadable or malformed files', async t => {
  t.match(issuesOf(() => loadConfig(['--config', join(dir, 'missing.yaml')], {})), [/^cannot read config file .*missing\.yaml: ENOENT/])
  const bad = file('bad.yaml', 'sip: [udp:0.0.0.0:5060\n')
  t.match(issuesOf(() => loadConfig(['--config', bad], {})), [/^cannot parse config file /])
  const list = file('list.yaml', '- a\n- b\n')
  t.match(issuesOf(() => loadConfig(['--config', list], {})), [/expected a mapping of keys, got an array/])
  const empty = file('empty.yaml', '')
  t.same(loadConfig(['--config', empty], {}).config, defaultConfig(), 'an empty file is all defaults')
})

t.test('tls cert/key come from flags or env', async t => {
  const { config } = loadConfig(['--sip', 'tls:0.0.0.0:5061', '--tls-cert', '/c.pem'], { SIPRING_TLS_KEY: '/k.pem' })
  t.same(config.tls, { cert: '/c.pem', key: '/k.pem' })
  t.same(issuesOf(() => resolveConfig([{ values: { tls: { cert: '/c.pem' } }, origin: {} }])), ['tls: cert and key must be given together'])
})

t.test('--help is parsed and documents every flag and variable', async t => {
  t.equal(loadConfig(['--help'], {}).help, true)
  t.equal(loadConfig(['-h'], {}).help, true)
  const help = startHelp()
  for (const flag of Object.keys(START_FLAGS)) t.match(help, flag)
  for (const name of Object.keys(ENV_VARS)) t.match(help, name)
})

t.test('role and coreNodes: core nodes by multiaddr, the overlay implied', async t => {
  const c1 = '/ip4/10.0.0.1/tcp/7070/p2p/12D3KooWSrDNojNnWgwwv3Y95o4Hyn9QyHuxh1NyQMGTWbYavKTu'
  const { config } = loadConfig(['--role', 'core', '--core-node', c1, '--core-node', c1.replace('10.0.0.1', '10.0.0.2')], {})
  t.equal(config.role, 'core')
  t.equal(config.coreNodes.length, 2)
  t.equal(loadConfig([], {}).config.role, 'super', 'super by default')
  t.same(loadConfig([], {}).config.coreNodes, [])
  t.equal(loadConfig([], { SIPRING_ROLE: 'CORE', SIPRING_CORE_NODES: c1 }).config.coreNodes[0], c1, 'from the environment')
  t.match(issuesOf(() => loadConfig(['--role', 'edge'], {})), [/^role: expected one of super, core, got "edge"/])
  t.match(issuesOf(() => loadConfig(['--core-node', '/ip4/10.0.0.1/tcp/7070'], {})), [/^coreNodes\[0\]: expected a multiaddr ending with \/p2p\/<peerId>/])
})

t.test('core nodes imply the overlay', async t => {
  const { overlayEnabled } = await import('../src/config.js')
  t.ok(overlayEnabled(loadConfig(['--role', 'core'], {}).config), 'a core node runs the overlay network')
  t.ok(overlayEnabled(loadConfig(['--core-node', '/ip4/10.0.0.1/tcp/7070/p2p/12D3KooWSrDNojNnWgwwv3Y95o4Hyn9QyHuxh1NyQMGTWbYavKTu'], {}).config), 'a super node reaching core nodes too')
  t.notOk(overlayEnabled(loadConfig([], {}).config))
})
