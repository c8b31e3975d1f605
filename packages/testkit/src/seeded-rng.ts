import type { Rng } from '@sipring/interface'

const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789'

/** FNV-1a 32-bit hash of a string, for deriving child seeds from labels. */
function fnv1a (s: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) }
  return h >>> 0
}

/**
 * Deterministic RNG (xoshiro128**), seeded from a number. `fork(label)` derives an independent
 * stream so that adding a component does not shift every other component's random sequence.
 */
export class SeededRng implements Rng {
  private s0: number; private s1: number; private s2: number; private s3: number
  readonly seed: number

  constructor (seed: number) {
    this.seed = seed >>> 0
    // splitmix32 to fill the state
    let x = this.seed
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
      return (z ^ (z >>> 16)) >>> 0
    }
    this.s0 = next(); this.s1 = next(); this.s2 = next(); this.s3 = next()
  }

  private u32 (): number {
    const r = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0
    const t = this.s1 << 9
    this.s2 ^= this.s0; this.s3 ^= this.s1; this.s1 ^= this.s2; this.s0 ^= this.s3
    this.s2 ^= t; this.s3 = rotl(this.s3, 11)
    return r
  }

  next (): number { return this.u32() / 4294967296 }

  int (n: number): number { return Math.floor(this.next() * n) }

  bytes (n: number): Uint8Array {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff
    return out
  }

  token (len: number): string {
    let s = ''
    for (let i = 0; i < len; i++) s += ALNUM[this.u32() % ALNUM.length]
    return s
  }

  fork (label: string): SeededRng {
    return new SeededRng((Math.imul(this.seed ^ 0x9e3779b9, 0x85ebca6b) ^ fnv1a(label)) >>> 0)
  }
}

function rotl (x: number, k: number): number { return ((x << k) | (x >>> (32 - k))) >>> 0 }
