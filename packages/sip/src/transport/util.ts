import { EventEmitter } from 'node:events'
import { isIP } from 'node:net'
import type { Endpoint, Logger, TransportEvents, TransportProtocol } from '@sipring/interface'

/** Default largest SIP message accepted or sent by a transport (bytes). */
export const DEFAULT_MAX_MESSAGE_SIZE = 65_535

/**
 * Error raised by a transport (a rejected `send`, a refused connection). `code` keeps the system
 * error code (`ECONNREFUSED`, `EPIPE`, `ECONNRESET`, …) or a transport-specific one
 * (`EMSGSIZE`, `EAFNOSUPPORT`, `ENOTRUNNING`, `ECONNLIMIT`, `ETIMEDOUT`, `ENOBUFS`, `ENOTSIP`).
 */
export class TransportError extends Error {
  readonly code: string
  readonly protocol: TransportProtocol
  readonly destination?: { address: string, port: number }
  constructor (message: string, code: string, protocol: TransportProtocol, destination?: { address: string, port: number }, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'TransportError'
    this.code = code
    this.protocol = protocol
    if (destination !== undefined) this.destination = { address: destination.address, port: destination.port }
  }
}

/** Strip IPv6 brackets: `[::1]` → `::1`. */
export function stripBrackets (address: string): string {
  return address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address
}

/** Address family of an address: 6 for an IPv6 literal (with or without brackets), else 4. */
export function familyOf (address: string): 4 | 6 {
  return isIP(stripBrackets(address)) === 6 ? 6 : 4
}

/** `host:port` with IPv6 brackets (`[::1]:5060`). */
export function hostPort (address: string, port: number): string {
  const a = stripBrackets(address)
  return isIP(a) === 6 ? `[${a}]:${port}` : `${a}:${port}`
}

/** Wildcard (any) address? */
export function isWildcard (address: string): boolean {
  const a = stripBrackets(address)
  return a === '0.0.0.0' || a === '::' || a === ''
}

/** Normalized key for an address:port pair (lowercase, no brackets). */
export function endpointKey (address: string, port: number): string {
  return `${stripBrackets(address).toLowerCase()}|${port}`
}

/** Check a port number given in options; throws a TypeError on a bad one. */
export function checkPort (port: number, what = 'port'): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`invalid ${what}: ${String(port)}`)
  return port
}

/** Reject a destination that can never be reached (bad port, wrong IP family). */
export function checkDestination (protocol: TransportProtocol, local: Endpoint, to: { address: string, port: number }): TransportError | undefined {
  if (typeof to.address !== 'string' || to.address === '') {
    return new TransportError(`${protocol}: destination address is empty`, 'EINVAL', protocol, to)
  }
  if (!Number.isInteger(to.port) || to.port < 1 || to.port > 65535) {
    return new TransportError(`${protocol}: invalid destination port ${String(to.port)}`, 'EINVAL', protocol, to)
  }
  const dst = stripBrackets(to.address)
  if (isIP(dst) !== 0 && familyOf(dst) !== familyOf(local.address)) {
    return new TransportError(`${protocol}: cannot send to IPv${familyOf(dst)} ${hostPort(dst, to.port)} from an IPv${familyOf(local.address)} transport (${hostPort(local.address, local.port)})`,
      'EAFNOSUPPORT', protocol, to)
  }
  return undefined
}

/** Wrap any error thrown by node into a TransportError, keeping its code. */
export function toTransportError (err: unknown, protocol: TransportProtocol, to: { address: string, port: number }, what: string): TransportError {
  if (err instanceof TransportError) return err
  const e = err as NodeJS.ErrnoException | undefined
  const code = typeof e?.code === 'string' ? e.code : 'EIO'
  const msg = e?.message ?? String(err)
  return new TransportError(`${protocol}: ${what} ${hostPort(to.address, to.port)} failed: ${msg}`, code, protocol, to, err)
}

/**
 * Typed event plumbing shared by every transport. An `error` event with no listener is logged instead of
 * thrown (EventEmitter would otherwise crash the process).
 */
export abstract class TransportEventsBase {
  protected readonly emitter = new EventEmitter()
  protected abstract log: Logger

  constructor () { this.emitter.setMaxListeners(0) }

  on<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void {
    this.emitter.on(event, listener as (...args: any[]) => void)
  }

  off<E extends keyof TransportEvents>(event: E, listener: TransportEvents[E]): void {
    this.emitter.off(event, listener as (...args: any[]) => void)
  }

  protected emitEvent<E extends keyof TransportEvents>(event: E, ...args: Parameters<TransportEvents[E]>): void {
    if (event === 'error' && this.emitter.listenerCount('error') === 0) {
      this.log.error({ err: args[0] }, 'transport error (no error listener)')
      return
    }
    try {
      this.emitter.emit(event, ...args)
    } catch (err) {
      // a throwing listener must not take the socket machinery down with it
      this.log.error({ err, event }, 'transport event listener threw')
    }
  }
}
