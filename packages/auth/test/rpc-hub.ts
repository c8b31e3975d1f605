// An in-memory AccountRpc network on a SimClock for the replica / remote-store tests: per-message
// delay, crashed peers (unreachable at once), cut links and hung peers (time out), JSON copies.
import { SimClock } from '@sipring/testkit'
import { AccountRpcError, type AccountRpc, type AccountRpcHandler, type AccountRpcOptions } from '@sipring/auth'

export class RpcHub {
  readonly handlers = new Map<string, Map<string, AccountRpcHandler>>()
  readonly down = new Set<string>()
  readonly hung = new Set<string>()
  private readonly cuts = new Set<string>()
  calls = 0
  constructor (readonly clock: SimClock, readonly delay = 2) {}

  rpc (self: string): AccountRpc {
    if (!this.handlers.has(self)) this.handlers.set(self, new Map())
    return {
      self,
      call: (peer, proto, body, opts) => this.call(self, peer, proto, body, opts),
      serve: (proto, handler) => {
        this.handlers.get(self)!.set(proto, handler)
        return () => { if (this.handlers.get(self)!.get(proto) === handler) this.handlers.get(self)!.delete(proto) }
      }
    }
  }

  crash (id: string): void { this.down.add(id); this.handlers.set(id, new Map()) }
  revive (id: string): void { this.down.delete(id) }
  cut (a: string, b: string, on = true): void { const k = [a, b].sort().join('\n'); if (on) this.cuts.add(k); else this.cuts.delete(k) }
  private isCut (a: string, b: string): boolean { return this.cuts.has([a, b].sort().join('\n')) }

  private call (from: string, to: string, proto: string, body: unknown, opts: AccountRpcOptions = {}): Promise<unknown> {
    this.calls++
    return new Promise((resolve, reject) => {
      let done = false
      const finish = (fn: () => void): void => { if (!done) { done = true; timer.cancel(); fn() } }
      const timer = this.clock.setTimer(opts.timeout ?? 2000, () => { finish(() => { reject(new AccountRpcError('ERR_TIMEOUT', `${proto} to ${to} timed out`, false)) }) })
      if (this.down.has(to) || !this.handlers.has(to)) {
        this.clock.setTimer(this.delay, () => { finish(() => { reject(new AccountRpcError('ERR_UNREACHABLE', `${to} unreachable`, false)) }) })
        return
      }
      if (this.hung.has(to) || this.isCut(from, to)) return
      const copy = JSON.parse(JSON.stringify(body ?? null)) as unknown
      this.clock.setTimer(this.delay, () => {
        const h = this.handlers.get(to)?.get(proto)
        if (h === undefined || this.down.has(to)) { finish(() => { reject(new AccountRpcError('ERR_UNSUPPORTED', `no handler for ${proto}`, true)) }); return }
        Promise.resolve().then(() => h(copy, from)).then(res => {
          const back = JSON.parse(JSON.stringify(res ?? null)) as unknown
          this.clock.setTimer(this.delay, () => { finish(() => { resolve(back) }) })
        }, (err: unknown) => {
          const code = typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : 'ERR_HANDLER'
          this.clock.setTimer(this.delay, () => { finish(() => { reject(new AccountRpcError(code, (err as Error).message, true)) }) })
        })
      })
    })
  }
}

const tick = (): Promise<void> => new Promise(resolve => { setImmediate(resolve) })

/** Advance the SimClock by `ms`, letting promise chains run between timers. */
export async function drive (clock: SimClock, ms: number): Promise<void> {
  const target = clock.now() + ms
  await tick()
  for (;;) {
    const at = clock.nextAt()
    if (at === undefined || at > target) break
    while (clock.nextAt() === at) clock.step()
    await tick()
  }
  clock.advanceTo(target)
  await tick()
}

/** Await `p` while driving the clock (up to `ms`). */
export async function settle<T> (clock: SimClock, p: Promise<T>, ms = 10_000): Promise<T> {
  let done = false
  const q = p.finally(() => { done = true })
  q.catch(() => {})
  for (let waited = 0; !done && waited < ms; waited += 10) await drive(clock, 10)
  return await q
}
