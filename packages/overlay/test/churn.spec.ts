import t from 'tap'
import type { PeerId } from '@sipring/overlay'
import { drive, settle } from './helpers.js'
import { addNode, converge, crash, holders, storeCluster } from './store-helpers.js'

t.test('churn: one failure at a time, writes and deletes throughout: no acknowledged write is lost', async t => {
  const c = storeCluster(Number(process.env.CHURN_SEED ?? 21), { store: { antiEntropyInterval: 10_000 } })
  let next = 0
  const live = (): PeerId[] => [...c.nodes.keys()]
  for (let i = 0; i < 7; i++) { await addNode(c, `c${next}`, next === 0 ? undefined : 'c0'); next++ }
  await converge(c)
  const expect = new Map<string, string | undefined>()
  let writes = 0
  const writeSome = async (round: number): Promise<void> => {
    for (let i = 0; i < 30; i++) {
      const key = `sip:u${c.rng.int(80)}@example.org`
      const coord = c.nodes.get(live()[c.rng.int(c.nodes.size)]!)!
      if (c.rng.next() < 0.2 && expect.get(key) !== undefined) {
        await settle(c, coord.store.delete(key)); expect.set(key, undefined)
      } else {
        const v = `r${round}-${i}`
        await settle(c, coord.store.put(key, v)); expect.set(key, v)
      }
      writes++
    }
  }
  for (let round = 0; round < 6; round++) {
    await writeSome(round)
    // alternately crash a random node (no goodbye) and add a fresh one
    if (round % 2 === 0) {
      const victim = live()[1 + c.rng.int(c.nodes.size - 1)]!
      await crash(c, victim)
    } else {
      await addNode(c, `c${next++}`, live()[c.rng.int(c.nodes.size)]!)
    }
    await converge(c)
    await drive(c.clock, 1000)
  }
  await drive(c.clock, 30_000) // a few anti-entropy rounds
  let lost = 0; let resurrected = 0; let misplaced = 0
  const reader = c.nodes.get('c0')!
  for (const [key, v] of expect) {
    const got = await settle(c, reader.store.get(key))
    if (v === undefined && got !== undefined) resurrected++
    if (v !== undefined && got !== v) lost++
  }
  await drive(c.clock, 1000)
  for (const key of expect.keys()) {
    if (holders(c, key).join() !== [...reader.store.owners(key)].sort().join()) { misplaced++; t.comment(`${key}: held by ${holders(c, key).join()} owners ${[...reader.store.owners(key)].sort().join()} item ${JSON.stringify(reader.store.local(key))}`) }
  }
  for (const [id, n] of c.nodes) t.comment(`${id}: ring ${n.ring.members.join()} stats ${JSON.stringify(n.store.getStats())}`)
  t.equal(lost, 0, `no acknowledged write lost (${writes} writes, ${expect.size} keys, 3 crashes, 3 joins)`)
  t.equal(resurrected, 0, 'no deleted key came back')
  t.equal(misplaced, 0, 'every key sits on exactly its R current owners')
  for (const n of c.nodes.values()) await n.stop()
})
