/**
 * The host's monotonic wall clock in ms, for tools that report how long a run took (the simulator's
 * progress bar and ETA, the emulation comparison). Never feeds a simulation: simulated time comes from
 * SimClock only, so outputs stay identical per seed.
 */
export function wallClockMs (): number {
  return Number(process.hrtime.bigint() / 1000n) / 1000
}
