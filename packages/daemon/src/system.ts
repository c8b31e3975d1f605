/**
 * Real-world implementations of the ports in @sipring/interface: wall clock, crypto randomness and
 * pino logging. Only the daemon (and testkit) may touch Date.now / setTimeout / randomness directly.
 */
import { randomBytes, randomInt } from 'node:crypto'
import type { Clock, LogFn, Logger, Rng, Timer } from '@sipring/interface'
import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino'

/** A Node timeout as a `Timer` (a class, not a closure per timer: SIP sets several timers per transaction). */
class SystemTimer implements Timer {
  constructor (private readonly handle: NodeJS.Timeout) {}
  cancel (): void { clearTimeout(this.handle) }
}

/** Wall clock. Timers are unref'd so a pending SIP timer never keeps the process alive on its own. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer (ms: number, fn: () => void): Timer {
    const h = setTimeout(fn, ms > 0 ? ms : 0)
    h.unref()
    return new SystemTimer(h)
  }
}

const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789'
const TWO_48 = 2 ** 48

/** An `Rng` backed by node:crypto. `fork` returns another independent crypto rng (labels are ignored). */
export class CryptoRng implements Rng {
  next (): number {
    return randomBytes(6).readUIntBE(0, 6) / TWO_48
  }

  int (n: number): number {
    if (!Number.isFinite(n) || n <= 0) throw new RangeError(`int(n): n must be a positive number, got ${n}`)
    const m = Math.floor(n)
    if (m <= 1) return 0
    if (m < TWO_48) return randomInt(m)
    return Math.floor(this.next() * m)
  }

  bytes (n: number): Uint8Array {
    return new Uint8Array(randomBytes(n))
  }

  token (len: number): string {
    let s = ''
    while (s.length < len) {
      const buf = randomBytes(Math.max(8, len - s.length + 4))
      for (const b of buf) {
        if (b >= 252) continue // 252 = 7 * 36: reject to keep the alphabet uniform
        s += ALNUM[b % 36]
        if (s.length === len) break
      }
    }
    return s
  }

  fork (_label: string): Rng {
    return new CryptoRng()
  }
}

export const cryptoRng: Rng = new CryptoRng()

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'
export const LOG_LEVELS: readonly LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']

/** Wrap a pino logger as the interface's `Logger`. */
export function fromPino (p: PinoLogger): Logger {
  const wrap = (level: 'trace' | 'debug' | 'info' | 'warn' | 'error'): LogFn => {
    return ((a: string | Record<string, unknown>, b?: string) => {
      if (typeof a === 'string') p[level](a)
      else p[level](a, b)
    }) as LogFn
  }
  return {
    trace: wrap('trace'),
    debug: wrap('debug'),
    info: wrap('info'),
    warn: wrap('warn'),
    error: wrap('error'),
    child: (bindings) => fromPino(p.child(bindings))
  }
}

export interface PinoLoggerOptions {
  level: LogLevel
  /** Where the JSON lines go; default: stdout, written synchronously so nothing is lost on exit. */
  destination?: DestinationStream
}

/** A pino JSON logger (one object per line) adapted to `Logger`, plus the raw pino instance. */
export function createPinoLogger (opts: PinoLoggerOptions): { logger: Logger, pino: PinoLogger } {
  const dest = opts.destination ?? pino.destination({ dest: 1, sync: true })
  const p = pino({ level: opts.level, base: { name: 'sipring', pid: process.pid } }, dest)
  return { logger: fromPino(p), pino: p }
}
