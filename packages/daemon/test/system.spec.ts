import t from 'tap'
import { Writable } from 'node:stream'
import { CryptoRng, cryptoRng, createPinoLogger, systemClock } from '../src/system.js'

t.test('systemClock', async t => {
  // systemClock timers are unref'd: keep the process alive while we wait for them
  const keepAlive = setTimeout(() => {}, 5000)
  t.teardown(() => clearTimeout(keepAlive))
  const before = Date.now()
  t.ok(Math.abs(systemClock.now() - before) < 1000)
  const fired = await new Promise<number>(resolve => { const s = Date.now(); systemClock.setTimer(20, () => resolve(Date.now() - s)) })
  t.ok(fired >= 15, `fired after ${fired} ms`)
  let ran = false
  const timer = systemClock.setTimer(5, () => { ran = true })
  timer.cancel()
  timer.cancel()
  await new Promise(resolve => setTimeout(resolve, 30))
  t.equal(ran, false, 'a cancelled timer does not fire')
})

t.test('cryptoRng', async t => {
  for (let i = 0; i < 1000; i++) {
    const x = cryptoRng.next()
    if (!(x >= 0 && x < 1)) { t.fail(`next out of range: ${x}`); break }
    const n = cryptoRng.int(7)
    if (!(Number.isInteger(n) && n >= 0 && n < 7)) { t.fail(`int out of range: ${n}`); break }
  }
  t.equal(cryptoRng.int(1), 0)
  t.throws(() => cryptoRng.int(0), RangeError)
  t.equal(cryptoRng.bytes(16).length, 16)
  const tok = cryptoRng.token(40)
  t.match(tok, /^[a-z0-9]{40}$/)
  t.not(cryptoRng.token(16), cryptoRng.token(16))
  const child = cryptoRng.fork('x')
  t.ok(child instanceof CryptoRng)
  t.match(child.token(8), /^[a-z0-9]{8}$/)
  const counts = new Array(36).fill(0)
  const big = new CryptoRng().token(36 * 200)
  for (const ch of big) counts['abcdefghijklmnopqrstuvwxyz0123456789'.indexOf(ch)]++
  t.ok(counts.every(c => c > 100 && c < 320), 'token alphabet is roughly uniform')
})

t.test('pino logger adapter writes JSON lines at the configured level', async t => {
  const lines: string[] = []
  const dest = new Writable({ write (chunk, _enc, cb) { lines.push(...chunk.toString().split('\n').filter((l: string) => l !== '')); cb() } })
  const { logger } = createPinoLogger({ level: 'info', destination: dest as any })
  logger.debug('hidden')
  logger.info('plain')
  logger.child({ component: 'x' }).warn({ n: 1 }, 'with object')
  await new Promise(resolve => setImmediate(resolve))
  const recs = lines.map(l => JSON.parse(l))
  t.equal(recs.length, 2)
  t.match(recs[0], { level: 30, msg: 'plain', name: 'sipring' })
  t.match(recs[1], { level: 40, msg: 'with object', component: 'x', n: 1 })
})
