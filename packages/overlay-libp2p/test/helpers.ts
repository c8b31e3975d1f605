import { silentLogger, type Clock, type Logger } from '@sipring/interface'
import { libp2pOverlay, type Libp2pOverlay, type Libp2pOverlayInit } from '@sipring/overlay-libp2p'

/** Wall clock for tests over real sockets (tests may use timers sparingly). */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimer (ms, fn) { const t = setTimeout(fn, ms); return { cancel: () => { clearTimeout(t) } } }
}

export function sleep (ms: number): Promise<void> { return new Promise(resolve => { setTimeout(resolve, ms) }) }

/** Polls `cond` every 10 ms; rejects after `ms`. */
export async function waitFor (cond: () => boolean | Promise<boolean>, ms = 5000, what = 'condition'): Promise<void> {
  const until = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

let seq = 0
/** A unique in-process memory address. */
export function memAddr (label = 'n'): string { return `/memory/${label}-${process.pid}-${seq++}` }

export type NodeInit = Partial<Libp2pOverlayInit> & { logger?: Logger, clock?: Clock }

/** Creates and starts a node; registers it for {@link stopAll}. */
export async function node (nodes: Libp2pOverlay[], init: NodeInit = {}): Promise<Libp2pOverlay> {
  const n = await libp2pOverlay({ clock: realClock, logger: silentLogger, listen: [memAddr()], ...init })
  await n.start()
  nodes.push(n)
  return n
}

export async function stopAll (nodes: Libp2pOverlay[]): Promise<void> {
  await Promise.all(nodes.splice(0).map(async n => { await n.stop() }))
}
