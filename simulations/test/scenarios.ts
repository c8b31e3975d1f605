/** Scenario snippets shared by the simulator specs. */

/** Alternating Weibull sessions (median 3 min) and exponential down times (1 min) from 30 s on, half of the departures crashes. */
export const moderateChurn = `
churn:
  model: alternating
  start: 30s
  session: { dist: weibull, shape: 0.8, median: 3min }
  downtime: { dist: exponential, mean: 1min }
  crashFraction: 50%
`
