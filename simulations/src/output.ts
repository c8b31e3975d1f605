/** Result files: windows.csv, events.jsonl, summary.json, and small hand-written SVG plots. */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MESSAGE_TYPES, type RunResult, type Summary, type WindowRow } from './engine.js'
import { confidence, round, type Interval } from './stats.js'

const BASE_COLUMNS: Array<keyof WindowRow> = [
  'start', 'end', 'live', 'joins', 'leaves', 'crashes', 'puts', 'putsOk', 'lookups', 'lookupsOk', 'lookupSuccess',
  'latencyP50', 'latencyP95', 'latencyP99', 'liveKeys', 'availability', 'anyOwner', 'replication', 'losses',
  'loadMax', 'loadMean', 'loadCv', 'msgsPerNodeSec', 'bytesPerNodeSec'
]

const cell = (x: unknown): string => typeof x === 'number' ? (Number.isFinite(x) ? String(round(x)) : '') : String(x)

/** One row per window; per-type columns are messages / bytes per live node per second. */
export function windowsCsv (rows: WindowRow[]): string {
  const types = [...MESSAGE_TYPES, 'other']
  const header = [...BASE_COLUMNS.map(String), ...types.flatMap(t => [`msgs:${t}`, `bytes:${t}`])]
  const lines = [header.join(',')]
  for (const r of rows) {
    lines.push([...BASE_COLUMNS.map(c => cell(r[c])), ...types.flatMap(t => [cell(r.byType[t]?.msgs ?? 0), cell(r.byType[t]?.bytes ?? 0)])].join(','))
  }
  return lines.join('\n') + '\n'
}

/** Stable JSON: NaN/Infinity become null (JSON has no NaN), 2-space indent, trailing newline. */
export function stableJson (x: unknown): string {
  return JSON.stringify(x, (_k, v: unknown) => typeof v === 'number' && !Number.isFinite(v) ? null : v, 2) + '\n'
}

// ---------------------------------------------------------------- SVG

interface Series { label: string, points: Array<[number, number]>, color: string }

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const fmt = (x: number): string => Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(1) : x.toFixed(2)

/** A minimal line chart (no browser, no dependency). */
export function lineChart (title: string, xLabel: string, yLabel: string, series: Series[], yRange?: [number, number]): string {
  const W = 640; const H = 400; const L = 64; const R = 16; const T = 36; const B = 48
  const pts = series.flatMap(s => s.points).filter(p => Number.isFinite(p[0]) && Number.isFinite(p[1]))
  let x0 = Math.min(...pts.map(p => p[0])); let x1 = Math.max(...pts.map(p => p[0]))
  let y0 = yRange?.[0] ?? Math.min(...pts.map(p => p[1])); let y1 = yRange?.[1] ?? Math.max(...pts.map(p => p[1]))
  if (pts.length === 0) { x0 = 0; x1 = 1; y0 = 0; y1 = 1 }
  if (x1 === x0) x1 = x0 + 1
  if (y1 === y0) { y1 = y0 + 1 }
  const sx = (x: number): number => L + (x - x0) / (x1 - x0) * (W - L - R)
  const sy = (y: number): number => H - B - (y - y0) / (y1 - y0) * (H - T - B)
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`)
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`)
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`)
  for (let i = 0; i <= 5; i++) {
    const y = y0 + (y1 - y0) * i / 5; const x = x0 + (x1 - x0) * i / 5
    out.push(`<line x1="${L}" x2="${W - R}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#ddd"/>`)
    out.push(`<text x="${L - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${fmt(y)}</text>`)
    out.push(`<text x="${sx(x).toFixed(1)}" y="${H - B + 16}" text-anchor="middle">${fmt(x)}</text>`)
  }
  out.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="black"/><line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="black"/>`)
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 10}" text-anchor="middle">${esc(xLabel)}</text>`)
  out.push(`<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(yLabel)}</text>`)
  series.forEach((s, i) => {
    const p = s.points.filter(q => Number.isFinite(q[0]) && Number.isFinite(q[1]))
    if (p.length > 0) out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${p.map(q => `${sx(q[0]).toFixed(1)},${sy(q[1]).toFixed(1)}`).join(' ')}"/>`)
    out.push(`<rect x="${L + 10}" y="${T + 6 + i * 16}" width="12" height="3" fill="${s.color}"/><text x="${L + 28}" y="${T + 11 + i * 16}">${esc(s.label)}</text>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** Availability, any-owner and lookup success per window over time (minutes). */
export function availabilitySvg (rows: WindowRow[], warmup: number): string {
  const x = (r: WindowRow): number => r.end / 60_000
  return lineChart(`Availability over time (warm-up ${fmt(warmup / 60_000)} min)`, 'time (min)', 'fraction', [
    { label: 'binding availability (quorum-readable)', color: '#1f77b4', points: rows.map(r => [x(r), r.availability]) },
    { label: 'held by >= 1 owner', color: '#2ca02c', points: rows.map(r => [x(r), r.anyOwner]) },
    { label: 'lookup success', color: '#d62728', points: rows.map(r => [x(r), r.lookupSuccess]) }
  ], [0, 1])
}

/** Empirical CDF of lookup latency (failures sit at the timeout). */
export function latencyCdfSvg (sorted: number[]): string {
  const n = sorted.length
  const step = Math.max(1, Math.floor(n / 400))
  const pts: Array<[number, number]> = []
  for (let i = 0; i < n; i += step) pts.push([sorted[i]!, (i + 1) / n])
  if (n > 0) pts.push([sorted[n - 1]!, 1])
  return lineChart(`Lookup latency CDF (${n} lookups)`, 'latency (ms)', 'fraction of lookups', [{ label: 'lookup latency', color: '#1f77b4', points: pts }], [0, 1])
}

// ---------------------------------------------------------------- replications

/** Numeric leaves of the summary that are aggregated over replications. */
export const AGGREGATED: Array<[string, (s: Summary) => number]> = [
  ['lookups.success', s => s.lookups.success],
  ['lookups.latency.p50', s => s.lookups.latency.p50],
  ['lookups.latency.p95', s => s.lookups.latency.p95],
  ['lookups.latency.p99', s => s.lookups.latency.p99],
  ['registrations.success', s => s.registrations.success],
  ['availability.mean', s => s.availability.mean],
  ['availability.min', s => s.availability.min],
  ['availability.anyOwner', s => s.availability.anyOwner],
  ['availability.replication', s => s.availability.replication],
  ['losses.measured', s => s.losses.measured],
  ['maintenance.msgsPerNodeSec', s => s.maintenance.msgsPerNodeSec],
  ['maintenance.bytesPerNodeSec', s => s.maintenance.bytesPerNodeSec],
  ['load.maxOverMean', s => s.load.maxOverMean],
  ['load.cv', s => s.load.cv],
  ['churn.meanLive', s => s.churn.meanLive]
]

export function aggregate (sums: Summary[]): Record<string, Interval> {
  const out: Record<string, Interval> = {}
  for (const [k, f] of AGGREGATED) {
    const c = confidence(sums.map(f))
    out[k] = { mean: round(c.mean), ci95: round(c.ci95), n: c.n, low: round(c.low), high: round(c.high) }
  }
  // time to repair, when measured (repairProbe > 0): the mean over replications of each run's mean
  if (sums.some(s => s.repair !== undefined)) {
    for (const k of ['mean', 'p50', 'p95', 'open', 'abandoned'] as const) {
      const c = confidence(sums.map(s => s.repair?.[k] ?? NaN).filter(Number.isFinite))
      out[`repair.${k}`] = { mean: round(c.mean), ci95: round(c.ci95), n: c.n, low: round(c.low), high: round(c.high) }
    }
  }
  return out
}

/** Writes one run's files into `dir` (created). */
export function writeRun (dir: string, r: RunResult, warmup: number): void {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'summary.json'), stableJson(r.summary))
  writeFileSync(join(dir, 'windows.csv'), windowsCsv(r.windows))
  writeFileSync(join(dir, 'events.jsonl'), r.events.length === 0 ? '' : r.events.join('\n') + '\n')
  writeFileSync(join(dir, 'availability.svg'), availabilitySvg(r.windows, warmup))
  writeFileSync(join(dir, 'latency-cdf.svg'), latencyCdfSvg(r.latencies))
}

/** The command that reproduces one run exactly (paths relative to the current directory when inside it). */
export function reproduceCommand (file: string, seed: number, sets: Array<[string, unknown]>): string {
  const q = (s: string): string => /^[\w./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`
  const path = (p: string): string => { const r = relative(process.cwd(), resolve(p)); return r === '' || r.startsWith('..') ? resolve(p) : r }
  const setArgs = sets.map(([k, v]) => ` --set ${q(`${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)}`).join('')
  return `npx tsx ${q(path(fileURLToPath(new URL('./cli.ts', import.meta.url))))} run ${q(path(file))} --seed ${seed}${setArgs}`
}
