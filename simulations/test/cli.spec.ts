import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { availabilitySvg, latencyCdfSvg, windowsCsv, reproduceCommand, type WindowRow } from '@sipring/simulations'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const cli = join(root, 'simulations', 'src', 'cli.ts')
const sim = (args: string[]): { status: number | null, stdout: string, stderr: string } => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=sipring-source', cli, ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}
const dir = mkdtempSync(join(tmpdir(), 'sipring-sim-'))
const tiny = `name: tiny
duration: 1min
warmup: 20s
window: 10s
nodes: 8
overlay: { vnodes: 8 }
workload: { clients: 20, expires: 5min, lookupRate: 5/s, registerOver: 5s }
`

t.test('run writes every output file; --reps gives confidence intervals', async t => {
  const file = join(dir, 'tiny.yaml')
  writeFileSync(file, tiny)
  const out = join(dir, 'out')
  const r = sim(['run', file, '--out', out, '--quiet', '--reps', '2', '--seed', '5'])
  t.equal(r.status, 0, r.stderr)
  for (const f of ['summary.json', 'perf.json', 'seed-5/summary.json', 'seed-6/windows.csv', 'seed-5/events.jsonl', 'seed-5/availability.svg', 'seed-6/latency-cdf.svg']) {
    t.ok(existsSync(join(out, f)), f)
  }
  const agg = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'))
  t.same(agg.seeds, [5, 6])
  t.equal(agg.aggregate['lookups.success'].n, 2)
  t.type(agg.aggregate['lookups.success'].ci95, 'number')
  t.match(agg.configHash, /^[0-9a-f]{16}$/)
  const one = JSON.parse(readFileSync(join(out, 'seed-5', 'summary.json'), 'utf8'))
  t.equal(one.seed, 5)
  t.equal(one.config.nodes, 8)
  t.match(r.stdout, /2 reps \(95% CI\)/)
})

t.test('a checker violation exits 3 and prints the seed and the command that reproduces it', async t => {
  const file = join(dir, 'strict.yaml')
  // a 1 ms lookup timeout is shorter than one network hop: every lookup fails
  writeFileSync(file, tiny + 'expect: { lookupSuccess: 50% }\n')
  const r = sim(['run', file, '--out', join(dir, 'strict'), '--quiet', '--seed', '77', '--set', 'workload.lookupTimeout=1ms'])
  t.equal(r.status, 3)
  t.match(r.stderr, /VIOLATION in tiny with seed 77/)
  t.match(r.stderr, /expect\.lookupSuccess: 0 < 0\.5/)
  t.match(r.stderr, /reproduce: npx tsx simulations\/src\/cli\.ts run \S*strict\.yaml --seed 77 --set workload\.lookupTimeout=1ms/)
})

t.test('bad scenarios and arguments are clear errors (exit 1)', async t => {
  const file = join(dir, 'bad.yaml')
  writeFileSync(file, 'nodes: many\n')
  let r = sim(['run', file])
  t.equal(r.status, 1)
  t.match(r.stderr, /nodes: expected a number, got "many"/)
  r = sim(['run', file, '--reps', 'x'])
  t.match(r.stderr, /--reps: expected an integer/)
  r = sim(['frobnicate', file])
  t.match(r.stderr, /unknown command/)
  r = sim(['validate', join(root, 'simulations', 'scenarios', 'bamboo.yaml')])
  t.equal(r.status, 0)
  t.match(r.stdout, /"median": 84000/)
})

t.test('CSV and SVG writers', async t => {
  const row: WindowRow = {
    start: 0, end: 10_000, live: 3, joins: 3, leaves: 0, crashes: 0, puts: 1, putsOk: 1, lookups: 0, lookupsOk: 0,
    lookupSuccess: NaN, latencyP50: NaN, latencyP95: NaN, latencyP99: NaN, liveKeys: 1, availability: 1, anyOwner: 1,
    replication: 1, losses: 0, loadMax: 1, loadMean: 1, loadCv: 0, msgsPerNodeSec: 2, bytesPerNodeSec: 100,
    byType: { 'swim.ping': { msgs: 1, bytes: 50 } }
  }
  const csv = windowsCsv([row]).trim().split('\n')
  t.equal(csv.length, 2)
  const h = csv[0]!.split(','); const v = csv[1]!.split(',')
  t.equal(h.length, v.length)
  t.equal(v[h.indexOf('lookupSuccess')], '', 'NaN is an empty cell')
  t.equal(v[h.indexOf('msgs:swim.ping')], '1')
  for (const svg of [availabilitySvg([row, { ...row, start: 10_000, end: 20_000, availability: 0.5 }], 0), latencyCdfSvg([10, 20, 30, 2000]), latencyCdfSvg([])]) {
    t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
    t.match(svg, /<\/svg>\n$/)
    t.notMatch(svg, /NaN|Infinity/)
  }
  t.equal(reproduceCommand('simulations/scenarios/x y.yaml', 3, [['nodes', 10]]), "npx tsx simulations/src/cli.ts run 'simulations/scenarios/x y.yaml' --seed 3 --set nodes=10")
})
