/** Small statistics helpers: quantiles, mean/CV, Student-t confidence intervals. */

/** Quantile by the nearest-rank method on a sorted copy (q in [0, 1]); NaN for no data. */
export function quantile (values: readonly number[], q: number): number {
  if (values.length === 0) return NaN
  const s = [...values].sort((a, b) => a - b)
  return quantileSorted(s, q)
}

export function quantileSorted (s: readonly number[], q: number): number {
  if (s.length === 0) return NaN
  const rank = Math.ceil(q * s.length)
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!
}

export function mean (v: readonly number[]): number {
  if (v.length === 0) return NaN
  let s = 0
  for (const x of v) s += x
  return s / v.length
}

/** Sample standard deviation (n − 1). */
export function stddev (v: readonly number[]): number {
  if (v.length < 2) return 0
  const m = mean(v)
  let s = 0
  for (const x of v) s += (x - m) * (x - m)
  return Math.sqrt(s / (v.length - 1))
}

/** Population coefficient of variation (σ/μ), 0 when μ is 0. */
export function cv (v: readonly number[]): number {
  if (v.length === 0) return NaN
  const m = mean(v)
  if (m === 0) return 0
  let s = 0
  for (const x of v) s += (x - m) * (x - m)
  return Math.sqrt(s / v.length) / m
}

// two-sided 97.5% quantiles of Student's t for df = 1..30
const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
  2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
  2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]

/** t_{0.975, df}: table for df ≤ 30, then a Cornish–Fisher style expansion (→ 1.96). */
export function tQuantile975 (df: number): number {
  if (!(df >= 1)) return NaN
  if (df <= 30) return T975[Math.floor(df) - 1]!
  const z = 1.959964
  return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)
}

export interface Interval { mean: number, ci95: number, n: number, low: number, high: number }

/** Mean with its 95% confidence half-width (Student t, n − 1 degrees of freedom); ci95 = 0 for n = 1. */
export function confidence (v: readonly number[]): Interval {
  const xs = v.filter(x => Number.isFinite(x))
  const m = mean(xs)
  const h = xs.length < 2 ? 0 : tQuantile975(xs.length - 1) * stddev(xs) / Math.sqrt(xs.length)
  return { mean: m, ci95: h, n: xs.length, low: m - h, high: m + h }
}

/** JSON with object keys sorted (a canonical form for hashing). */
export function canonicalJson (x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) => {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>
      return Object.fromEntries(Object.keys(o).sort().map(k => [k, o[k]]))
    }
    return v
  })
}

/** Rounds for stable, readable output (avoids 0.30000000000000004 noise in summaries). */
export function round (x: number, digits = 6): number {
  if (!Number.isFinite(x)) return x
  const f = 10 ** digits
  return Math.round(x * f) / f
}
