// Unit tests of the interop/bench harness itself (no SIP tools needed): SIPp report parsing,
// percentiles, injection files, free ports, and child-process clean-up.
import t from 'tap'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freePort, freePortPair, sipUdpAlive } from '../lib/ports.js'
import { haveTool, runProcess, startProcess, tempDir } from '../lib/proc.js'
import { parseRttCsv, parseStatCsv, percentile, rttStats, runSipp, scenario, userNames, writeUsersCsv } from '../lib/sipp.js'
import { writeToneWav } from '../lib/baresip.js'

t.test('parseStatCsv takes the last row, keyed by the header', async t => {
  const csv = 'StartTime;TotalCallCreated;SuccessfulCall(C);FailedCall(C);\n' +
    '2026-11-22 04:16:54;10;9;1;\n' +
    '2026-11-22 04:16:56;100;97;3;\n'
  const s = parseStatCsv(csv)
  t.equal(s['TotalCallCreated'], '100')
  t.equal(s['SuccessfulCall(C)'], '97')
  t.equal(s['FailedCall(C)'], '3')
  t.same(parseStatCsv(''), {}, 'empty file → no counters')
  t.same(parseStatCsv('only;a;header\n'), {}, 'header only → no counters')
})

t.test('parseRttCsv groups samples by rtd and finds the time span', async t => {
  const r = parseRttCsv('Date_ms;response_time_ms;rtd_no\n1000.5;0;1\n1200;4;1\n1300;8;2\nbogus;line\n;;\n2000;12;1\n')
  t.same(r.byRtd[1], [0, 4, 12])
  t.same(r.byRtd[2], [8])
  t.equal(r.firstMs, 1000.5)
  t.equal(r.lastMs, 2000)
})

t.test('percentiles use the nearest-rank method', async t => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1)
  t.equal(percentile(v, 50), 50)
  t.equal(percentile(v, 99), 99)
  t.equal(percentile(v, 100), 100)
  t.equal(percentile([7], 99), 7)
  t.ok(Number.isNaN(percentile([], 50)), 'empty → NaN')
  const s = rttStats([5, 1, 3, 2, 4])
  t.match(s, { count: 5, p50: 3, max: 5, mean: 3 })
})

t.test('injection files: SEQUENTIAL header then one user per line', async t => {
  const { dir, cleanup } = tempDir('harness')
  t.teardown(cleanup)
  const f = join(dir, 'u.csv')
  writeUsersCsv(f, userNames('u', 3, 9))
  t.equal(readFileSync(f, 'utf8'), 'SEQUENTIAL\nu000009\nu000010\nu000011\n')
})

t.test('free ports are distinct and bindable; port pairs leave p+1 free', async t => {
  const ports = new Set<number>()
  for (let i = 0; i < 5; i++) ports.add(await freePort())
  t.equal(ports.size, 5)
  const p = await freePortPair()
  t.ok(p > 0 && p < 65535)
  t.notOk(await sipUdpAlive('127.0.0.1', p), 'nothing answers SIP on a free port')
})

t.test('a stopped process takes its whole process group with it', async t => {
  const { dir, cleanup } = tempDir('harness-proc')
  t.teardown(cleanup)
  const pidFile = join(dir, 'child.pid')
  const p = await startProcess('sh', 'sh', ['-c', `sleep 30 & echo $! > ${pidFile}; echo started; wait`], {
    ready: () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== ''
  })
  await p.waitFor(/started/, 2000)
  const grandchild = Number(readFileSync(pidFile, 'utf8').trim())
  t.ok(grandchild > 0)
  t.ok(p.running())
  await p.stop(1000)
  t.notOk(p.running(), 'the process exited')
  await new Promise(resolve => setTimeout(resolve, 100))
  // gone, or a zombie waiting for init to reap it
  let state = 'gone'
  try { state = readFileSync(`/proc/${grandchild}/stat`, 'utf8').split(') ')[1]!.slice(0, 1) } catch { /* gone */ }
  t.ok(state === 'gone' || state === 'Z', `its background child was killed too (state ${state})`)
})

t.test('runProcess enforces its timeout and a failed readiness probe throws', async t => {
  const r = await runProcess('sleep', 'sleep', ['30'], 300)
  t.ok(r.timedOut, 'killed on timeout')
  await t.rejects(startProcess('false', 'sh', ['-c', 'echo bye; exit 3'], { ready: () => false, readyTimeoutMs: 2000 }), /exited \(3\) during start[\s\S]*bye/)
  await t.rejects(startProcess('sleeper', 'sleep', ['30'], { ready: () => false, readyTimeoutMs: 200 }), /not ready within 200 ms/)
})

t.test('the baresip tone is a valid 8 kHz mono 16-bit WAV', async t => {
  const { dir, cleanup } = tempDir('harness-wav')
  t.teardown(cleanup)
  const f = join(dir, 't.wav')
  writeToneWav(f, 1)
  const b = readFileSync(f)
  t.equal(b.toString('latin1', 0, 4), 'RIFF')
  t.equal(b.readUInt32LE(24), 8000)
  t.equal(b.readUInt16LE(22), 1)
  t.equal(b.readUInt16LE(34), 16)
  t.equal(b.length, 44 + 16000)
})

t.test('runSipp reports failures (a REGISTER to a port where nothing listens)', async t => {
  if (!haveTool('sipp')) { console.error('SKIPPED: sipp not installed'); t.pass('sipp missing', { skip: 'sipp not installed' }); return }
  const { dir, cleanup } = tempDir('harness-sipp')
  t.teardown(cleanup)
  const csv = join(dir, 'u.csv')
  writeUsersCsv(csv, ['nobody'])
  const dead = await freePort()
  const r = await runSipp({
    scenario: scenario('register'), remote: `127.0.0.1:${dead}`, calls: 1, inf: csv,
    keys: { domain: 'sipring.test', contact: '127.0.0.1:9', expires: '60' }, recvTimeoutMs: 600, timeoutMs: 10000,
    extraArgs: ['-max_retrans', '1']
  })
  t.equal(r.successful, 0, 'no success')
  t.equal(r.failed, 1, 'one failed call')
  t.not(r.exitCode, 0, 'non-zero exit code')
  t.equal(r.timedOut, false, 'ended on its own, before the hard timeout')
})

t.test('children die with the harness even when it is SIGKILLed (setpriv --pdeathsig)', async t => {
  if (!haveTool('setpriv')) { t.pass('setpriv missing', { skip: 'util-linux setpriv not installed' }); return }
  const { dir, cleanup } = tempDir('harness-pdeath')
  t.teardown(cleanup)
  const pidFile = join(dir, 'sleep.pid')
  const script = join(dir, 'parent.mts')
  const proc = new URL('../lib/proc.ts', import.meta.url).pathname
  writeFileSync(script, `import { startProcess } from ${JSON.stringify(proc)}\n` +
    `import { writeFileSync } from 'node:fs'\n` +
    `const p = await startProcess('sleep', 'sleep', ['30'])\n` +
    `writeFileSync(${JSON.stringify(pidFile)}, String(p.pid))\n` +
    `setInterval(() => {}, 1000)\n`)
  const parent = await startProcess('parent', process.execPath, ['--import', 'tsx', script], {
    ready: () => existsSync(pidFile) && readFileSync(pidFile, 'utf8') !== '', readyTimeoutMs: 10000
  })
  const sleepPid = Number(readFileSync(pidFile, 'utf8'))
  const state = (): string => { try { return readFileSync(`/proc/${sleepPid}/stat`, 'utf8').split(') ')[1]!.slice(0, 1) } catch { return 'gone' } }
  t.not(state(), 'gone', 'the grandchild runs')
  process.kill(parent.pid, 'SIGKILL')
  await parent.exited
  for (let i = 0; i < 40 && !['gone', 'Z'].includes(state()); i++) await new Promise(resolve => setTimeout(resolve, 50))
  t.ok(['gone', 'Z'].includes(state()), `the grandchild died with its SIGKILLed parent (state ${state()})`)
})
