/** Scenario snippets shared by the simulator specs. */

/** Alternating Weibull sessions (median 3 min) and exponential down times (1 min) from `start` on, half of the departures crashes. */
export const moderateChurnFrom = (start: string): string => `
churn:
  model: alternating
  start: ${start}
  session: { dist: weibull, shape: 0.8, median: 3min }
  downtime: { dist: exponential, mean: 1min }
  crashFraction: 50%
`

/** `moderateChurnFrom('30s')`. */
export const moderateChurn = moderateChurnFrom('30s')

/** 24 super nodes (`node: super`) for 3 simulated minutes, measured from 1 min in 20 s windows. */
export const superNodesHead = (name: string): string => `
name: ${name}
duration: 3min
warmup: 1min
window: 20s
nodes: 24
bootstrapOver: 12s
node: super
`
