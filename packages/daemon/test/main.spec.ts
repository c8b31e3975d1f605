import t from 'tap'
import { main, formatStatus, type Io } from '../src/main.js'
import { VERSION } from '../src/version.js'

function io (): Io & { outText: () => string, errText: () => string } {
  const out: string[] = []; const err: string[] = []
  return { out: s => out.push(s), err: s => err.push(s), outText: () => out.join('\n'), errText: () => err.join('\n') }
}

t.test('version and help', async t => {
  let x = io()
  t.equal(await main(['--version'], {}, x), 0)
  t.equal(x.outText(), VERSION)
  x = io()
  t.equal(await main([], {}, x), 0)
  t.match(x.outText(), /Usage:\n {2}sipring start/)
  x = io()
  t.equal(await main(['help', 'status'], {}, x), 0)
  t.match(x.outText(), /Usage: sipring status/)
  x = io()
  t.equal(await main(['help', 'nope'], {}, x), 2)
  t.match(x.errText(), /unknown command "nope"/)
})

t.test('start: configuration and usage errors exit 2 before anything opens', async t => {
  let x = io()
  t.equal(await main(['start', '--max-expires', '10', '--min-expires', '20', '--default-expires', '15'], {}, x), 2)
  t.equal(x.errText(), [
    'sipring: invalid config: minExpires: must not exceed maxExpires (10), got 20',
    'sipring: invalid config: defaultExpires: expected between minExpires (20) and maxExpires (10), got 15'
  ].join('\n'))
  x = io()
  t.equal(await main(['start', '--data'], {}, x), 2)
  t.equal(x.errText(), 'sipring: option --data needs a value (DIR) (see `sipring start --help`)')
  x = io()
  t.equal(await main(['start'], { SIPRING_SIP: 'udp:0.0.0.0:5060,bogus' }, x), 2)
  t.match(x.errText(), /sip\[1\]: expected protocol:host:port .* \(from SIPRING_SIP\)/)
})

t.test('status: argument errors', async t => {
  let x = io()
  t.equal(await main(['status', '--admin', 'localhost'], {}, x), 2)
  t.match(x.errText(), /--admin: expected host:port/)
  x = io()
  t.equal(await main(['status', '--verbose'], {}, x), 2)
  t.match(x.errText(), /unknown option --verbose/)
  x = io()
  t.equal(await main(['status'], { SIPRING_ADMIN: '127.0.0.1:1' }, x), 1, 'SIPRING_ADMIN is used; nothing listens there')
  t.match(x.errText(), /cannot reach the admin API at http:\/\/127\.0\.0\.1:1\/status/)
})

t.test('formatStatus renders every field', async t => {
  const text = formatStatus({
    nodeId: 'abc', version: '1.2.3', uptimeSeconds: 3723, startedAt: '2026-01-01T00:00:00.000Z',
    listeners: ['udp:0.0.0.0:5060', 'tcp:[::]:5060'], admin: '127.0.0.1:5080', dataDir: '/d', domains: [],
    counts: { aors: 2, contacts: 3, transactions: 4 }
  })
  t.equal(text, [
    'sipring node abc (version 1.2.3)',
    '  uptime        1h 2m 3s (since 2026-01-01T00:00:00.000Z)',
    '  listeners     udp:0.0.0.0:5060, tcp:[::]:5060',
    '  admin         127.0.0.1:5080',
    '  data dir      /d',
    '  domains       any',
    '  AORs          2',
    '  contacts      3',
    '  transactions  4'
  ].join('\n'))
})

t.test('admin-client commands share their argument rules (status, ring, lookup)', async t => {
  const cases: Array<[string[], number, RegExp]> = [
    [['status', '--admin'], 2, /^sipring: option --admin needs a value \(HOST:PORT\)$/],
    [['status', 'extra'], 2, /unknown option extra \(see `sipring status --help`\)/],
    [['ring', 'foo'], 2, /unexpected argument foo \(see `sipring ring --help`\)/],
    [['ring', '--bogus'], 2, /unknown option --bogus \(see `sipring ring --help`\)/],
    [['lookup'], 2, /lookup needs an AOR/],
    [['lookup', 'sip:a@b', 'sip:c@d'], 2, /unexpected argument sip:c@d \(see `sipring lookup --help`\)/],
    [['lookup', '--admin=127.0.0.1:1', 'sip:a@b'], 1, /cannot reach the admin API at http:\/\/127\.0\.0\.1:1\//]
  ]
  for (const [argv, code, err] of cases) {
    const x = io()
    t.equal(await main(argv, {}, x), code, argv.join(' '))
    t.match(x.errText(), err, argv.join(' '))
  }
  const x = io()
  t.equal(await main(['ring', '--help'], {}, x), 0)
  t.match(x.outText(), /sipring ring/)
})
