// Load balance of the ring: max/mean stored fraction (replicas counted) over many random member sets.
// Run: node --import tsx --conditions=sipring-source packages/overlay/bench/ring-load.ts [N] [R] [trials]
import { createHasher, Ring } from '../src/ring.js'
import { SeededRng } from '@sipring/testkit'

const N = Number(process.argv[2] ?? 50)
const R = Number(process.argv[3] ?? 3)
const TRIALS = Number(process.argv[4] ?? 200)
const hasher = await createHasher()
for (const V of [16, 32, 64, 128, 256]) {
  const ratios: number[] = []
  const rng = new SeededRng(42)
  for (let t = 0; t < TRIALS; t++) {
    const members = Array.from({ length: N }, () => '12D3KooW' + rng.token(44))
    ratios.push(new Ring(hasher, members, { vnodes: V }).loadStats(R).ratio)
  }
  ratios.sort((a, b) => a - b)
  const mean = ratios.reduce((a, b) => a + b, 0) / ratios.length
  const p = (q: number): string => ratios[Math.min(ratios.length - 1, Math.floor(q * ratios.length))]!.toFixed(3)
  console.log(`N=${N} R=${R} V=${V} trials=${TRIALS}: max/mean mean=${mean.toFixed(3)} p50=${p(0.5)} p95=${p(0.95)} max=${p(1)}`)
}
