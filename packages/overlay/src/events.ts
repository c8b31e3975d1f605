/** Minimal typed event emitter (synchronous, listener errors are isolated and reported). */
export class TypedEmitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  private readonly listeners = new Map<keyof E, Array<E[keyof E]>>()
  /** Called when a listener throws; listeners never break the emitter. */
  protected onListenerError: (err: unknown) => void = () => {}

  on<K extends keyof E>(event: K, fn: E[K]): () => void {
    const l = this.listeners.get(event) ?? []
    l.push(fn)
    this.listeners.set(event, l)
    return () => { this.off(event, fn) }
  }

  off<K extends keyof E>(event: K, fn: E[K]): void {
    const l = this.listeners.get(event)
    if (l === undefined) return
    const i = l.indexOf(fn)
    if (i >= 0) l.splice(i, 1)
  }

  /** Is anyone listening to `event`? (Lets an emitter skip building an event nobody receives.) */
  protected hasListeners<K extends keyof E>(event: K): boolean {
    return (this.listeners.get(event)?.length ?? 0) > 0
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const l = this.listeners.get(event)
    if (l === undefined) return
    for (const fn of [...l]) {
      try { (fn as (...a: unknown[]) => void)(...args) } catch (err) { this.onListenerError(err) }
    }
  }
}
