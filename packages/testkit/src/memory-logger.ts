import type { Logger, LogFn } from '@sipring/interface'

export interface LogRecord { level: string, msg?: string, [k: string]: unknown }

/** A Logger that keeps records in memory so tests can assert on what was logged. */
export class MemoryLogger implements Logger {
  constructor (readonly records: LogRecord[] = [], private readonly bindings: Record<string, unknown> = {}) {}
  private make (level: string): LogFn {
    return ((a: string | Record<string, unknown>, b?: string) => {
      if (typeof a === 'string') this.records.push({ level, ...this.bindings, msg: a })
      else this.records.push({ level, ...this.bindings, ...a, msg: b })
    }) as LogFn
  }

  trace = this.make('trace')
  debug = this.make('debug')
  info = this.make('info')
  warn = this.make('warn')
  error = this.make('error')
  child (bindings: Record<string, unknown>): Logger {
    return new MemoryLogger(this.records, { ...this.bindings, ...bindings })
  }
}
