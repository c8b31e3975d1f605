// REGISTER/s and CPU per REGISTER with digest authentication next to without.
// Runs the daemon twice (auth off / auth on, MD5 challenge first for SIPp 3.6), registers the same
// number of distinct users at fixed rates with SIPp over UDP, and reports for each rate: achieved
// REGISTER/s (one "REGISTER" = the whole exchange: with auth 401 + REGISTER + 200), p50/p99 and the
// server's CPU ms per REGISTER (utime+stime from /proc, all processes of the server).
// With kamailio installed, also Kamailio (test/bench/kamailio/kamailio.cfg, 4 UDP workers) without and
// with pv_www_authenticate (HA1 from an in-memory htable, qop=auth) — the yardstick.
//   node --import tsx test/bench/auth-register.ts [--rates 1000,2000,4000] [--seconds 5] [--no-kamailio]
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KAMAILIO_CFG } from '../lib/kamailio.js'
import { freePort, sipUdpAlive } from '../lib/ports.js'
import { cpuSeconds, haveTool, processTree, startProcess, stopAll, tempDir } from '../lib/proc.js'
import { DOMAIN, startSipring } from '../lib/servers.js'
import { SIPP_DIR, runSipp, scenario, userNames, writeUsersCsv } from '../lib/sipp.js'

const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1]! : dflt }
const rates = arg('--rates', '1000,2000,4000').split(',').map(Number)
const seconds = Number(arg('--seconds', '5'))

interface Row { mode: string, rate: number, achieved: number, ok: number, failed: number, p50: number, p99: number, cpuMsPerReg: number, cpuPct: number }

interface Server { pid: number, stop: () => Promise<void> }

/** sipring with auth off, or on (MD5 only: SIPp 3.6), the users created over the admin API. */
async function sipringServer (port: number, auth: boolean, dir: string, users: string[]): Promise<Server> {
  const cfg = join(dir, 'c.yaml')
  writeFileSync(cfg, auth ? `auth:\n  enabled: true\n  realm: ${DOMAIN}\n  algorithms: [MD5]\n  maxFailuresPerSource: 0\n  maxFailuresPerUser: 0\n` : '{}\n')
  const server = await startSipring({ listen: [{ proto: 'udp', host: '127.0.0.1', port }], logLevel: 'error', extraArgs: ['--config', cfg] })
  if (auth) {
    const token = readFileSync(join(server.dataDir!, 'admin-token'), 'utf8').trim()
    for (let i = 0; i < users.length; i += 200) {
      await Promise.all(users.slice(i, i + 200).map(async u => {
        const r = await fetch(`http://127.0.0.1:${server.adminPort!}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ user: u, password: `pw-${u}` }) })
        if (r.status !== 201) throw new Error(`POST /users: ${r.status}`)
      }))
    }
  }
  return { pid: server.pid, stop: async () => { await server.stop() } }
}

/**
 * Kamailio with the yardstick config; with auth, REGISTER goes through pv_www_authenticate with the
 * HA1 from an htable loaded in memory at start (from a db_text table): no database on the hot path,
 * like sipring's cached accounts. qop=auth, MD5.
 */
async function kamailioServer (port: number, auth: boolean, dir: string, users: string[]): Promise<Server> {
  const db = join(dir, 'db')
  mkdirSync(db, { recursive: true })
  writeFileSync(join(db, 'version'), 'table_name(str) table_version(int)\nhtable:2\n')
  writeFileSync(join(db, 'htable'), 'id(int,auto) key_name(str) key_type(int) value_type(int) key_value(str) expires(int)\n' +
    (auth ? users.map((u, i) => `${i + 1}:${u}:0:0:${createHash('md5').update(`${u}:${DOMAIN}:pw-${u}`).digest('hex')}:0\n`).join('') : ''))
  let cfg = readFileSync(KAMAILIO_CFG, 'utf8')
    .replaceAll('{{CHILDREN}}', '4').replaceAll('{{TCP_CHILDREN}}', '2')
    .replaceAll('{{LISTEN}}', `listen=udp:127.0.0.1:${port}`).replaceAll('{{DOMAIN}}', DOMAIN).replaceAll('{{RUNDIR}}', dir)
  if (auth) {
    cfg = cfg.replace('loadmodule "corex.so"\n', `loadmodule "corex.so"\nloadmodule "db_text.so"\nloadmodule "htable.so"\nloadmodule "auth.so"\n` +
      `modparam("htable", "db_url", "text://${db}")\nmodparam("htable", "htable", "ha1=>size=16;dbtable=htable;")\n`)
    cfg = cfg.replace('\tif (is_method("REGISTER")) {\n', '\tif (is_method("REGISTER")) {\n\t\tif (!pv_www_authenticate("$td", "$sht(ha1=>$au)", "1")) { www_challenge("$td", "1"); exit; }\n\t\tconsume_credentials();\n')
    if (!cfg.includes('pv_www_authenticate') || !cfg.includes('htable.so')) throw new Error('could not patch the Kamailio config')
  }
  const path = join(dir, 'kamailio.cfg')
  writeFileSync(path, cfg)
  const proc = await startProcess('kamailio', 'kamailio', ['-f', path, '-DD', '-E', '-Y', dir, '-P', join(dir, 'kamailio.pid'), '-m', '1024', '-M', '16'], {
    cwd: dir, ready: async () => await sipUdpAlive('127.0.0.1', port), readyTimeoutMs: 30000
  })
  return { pid: proc.pid, stop: async () => { await proc.stop(3000) } }
}

async function measure (kind: 'sipring' | 'kamailio', auth: boolean): Promise<Row[]> {
  const tmp = tempDir('bench-auth')
  const port = await freePort()
  const users = userNames('b', Math.max(...rates) * seconds)
  const server = kind === 'sipring' ? await sipringServer(port, auth, tmp.dir, users) : await kamailioServer(port, auth, tmp.dir, users)
  const rows: Row[] = []
  try {
    let run = 0
    for (const rate of rates) {
      run++
      const calls = rate * seconds
      const csv = join(tmp.dir, `u${run}.csv`)
      if (auth) writeFileSync(csv, ['SEQUENTIAL', ...users.slice(0, calls).map(u => `${u};[authentication username=${u} password=pw-${u}]`)].join('\n') + '\n')
      else writeUsersCsv(csv, users.slice(0, calls))
      const pids = await processTree(server.pid)
      const cpu0 = await cpuSeconds(pids)
      const t0 = Date.now()
      const r = await runSipp({
        scenario: auth ? join(SIPP_DIR, 'register-auth.xml') : scenario('register'), remote: `127.0.0.1:${port}`, calls, rate, limit: Math.max(1000, rate * 2), inf: csv,
        keys: { domain: DOMAIN, contact: '127.0.0.1:9', expires: '3600' }, extraArgs: auth ? ['-auth_uri', DOMAIN] : [], recvTimeoutMs: 5000, timeoutMs: (seconds + 30) * 1000
      })
      const wall = (Date.now() - t0) / 1000
      if (r.failed > 0 && process.env.BENCH_VERBOSE) console.log(r.errors.slice(0, 3000))
      const cpu = (await cpuSeconds(pids)) - cpu0
      rows.push({
        mode: `${kind} ${auth ? 'digest' : 'no auth'}`, rate, achieved: Math.round(r.achievedRate), ok: r.successful, failed: r.failed,
        p50: r.rtt[1]?.p50 ?? NaN, p99: r.rtt[1]?.p99 ?? NaN, cpuMsPerReg: r.successful > 0 ? 1000 * cpu / r.successful : NaN, cpuPct: 100 * cpu / wall
      })
      console.log(JSON.stringify(rows[rows.length - 1]))
    }
  } finally {
    await server.stop()
    tmp.cleanup()
  }
  return rows
}

const kamailio = !process.argv.includes('--no-kamailio') && haveTool('kamailio')
const rows = [...await measure('sipring', false), ...await measure('sipring', true), ...(kamailio ? [...await measure('kamailio', false), ...await measure('kamailio', true)] : [])]
console.log('\nmode                      target  achieved/s  ok     failed  p50ms  p99ms  cpu ms/REGISTER  cpu %')
for (const r of rows) console.log(`${r.mode.padEnd(25)} ${String(r.rate).padStart(6)}  ${String(r.achieved).padStart(10)}  ${String(r.ok).padStart(6)} ${String(r.failed).padStart(6)}  ${String(r.p50).padStart(5)}  ${String(r.p99).padStart(5)}  ${r.cpuMsPerReg.toFixed(3).padStart(15)}  ${r.cpuPct.toFixed(0).padStart(5)}`)
for (const rate of rates) {
  for (const kind of ['sipring', 'kamailio']) {
    const a = rows.find(r => r.mode === `${kind} no auth` && r.rate === rate)
    const b = rows.find(r => r.mode === `${kind} digest` && r.rate === rate)
    if (a !== undefined && b !== undefined) console.log(`rate ${rate}: ${kind} CPU per REGISTER digest/no-auth = ${(b.cpuMsPerReg / a.cpuMsPerReg).toFixed(2)}x`)
  }
  const s = rows.find(r => r.mode === 'sipring digest' && r.rate === rate)
  const k = rows.find(r => r.mode === 'kamailio digest' && r.rate === rate)
  if (s !== undefined && k !== undefined) console.log(`rate ${rate}: digest CPU per REGISTER sipring/kamailio = ${(s.cpuMsPerReg / k.cpuMsPerReg).toFixed(2)}x`)
}
await stopAll()
