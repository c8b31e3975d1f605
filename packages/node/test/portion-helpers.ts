// Random AOR-item portions for the merge property specs (merge-fast-path, merge-text-path): some with
// a bad URI, some removal markers (`x`), and — signed — mostly valid signatures, some by another node.
import type { SeededRng } from '@sipring/testkit'
import { portionBytes, type SignedPortion } from '../src/index.js'
import { hmacSigner } from './overlay-helpers.js'

export const BOB = 'sip:bob@example.org'

/** An integer in [a, b]. */
export const ri = (rng: SeededRng, a: number, b: number): number => a + rng.int(b - a + 1)

/**
 * A maker of random portions of `BOB`'s item around `now`. `varied`: 0–2 bindings, some with
 * `+sip.instance` (escaped quotes in the JSON text) and a reg-id; else exactly one plain binding.
 */
export function portionMaker (rng: SeededRng, now: number, signed: boolean, varied: boolean): (id: string) => SignedPortion {
  const binding = (): SignedPortion['b'][number] => ({
    contact: `sip:bob@10.9.0.${ri(rng, 1, 3)}`, expires: now + ri(rng, -1000, 600_000), q: 1, callId: 'c', cseq: ri(rng, 1, 3), path: [], updated: now,
    ...(varied && rng.next() < 0.3 ? { instance: '"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>"', regId: 1 } : {})
  })
  return (id: string): SignedPortion => {
    const p: SignedPortion = { uri: rng.next() < 0.05 ? 'http://bad' : `sip:10.0.0.${id.slice(1)}:5060`, v: [now + ri(rng, -2, 2), ri(rng, 0, 2)], b: [] }
    if (rng.next() < 0.15) p.x = now + ri(rng, -5, 60_000)
    else p.b = varied ? Array.from({ length: ri(rng, 0, 2) }, binding) : [binding()]
    if (signed) {
      const r = rng.next()
      if (r < 0.85) p.s = Buffer.from(hmacSigner(id).sign(portionBytes(BOB, id, p))).toString('base64')
      else if (r < 0.95) p.s = Buffer.from(hmacSigner('n9').sign(portionBytes(BOB, id, p))).toString('base64')
    }
    return p
  }
}
