import t from 'tap'
import { SipResponse } from '@sipring/sip'
import { finalizeBest, selectBest } from '@sipring/proxy'

function r (status: number, headers: Array<[string, string]> = []): SipResponse {
  const res = new SipResponse(status, `S${status}`)
  for (const [k, v] of headers) res.append(k, v)
  return res
}

t.test('selectBest: §16.7 step 6', async t => {
  t.equal(selectBest([]), undefined)
  t.equal(selectBest([r(200)]), undefined, '2xx are never chosen (forwarded at once)')
  t.equal(selectBest([r(486), r(404)])!.status, 486, 'same class: first received')
  t.equal(selectBest([r(500), r(486), r(302)])!.status, 302, 'lowest class')
  t.equal(selectBest([r(302), r(603), r(404)])!.status, 603, '6xx wins')
  t.equal(selectBest([r(600), r(603)])!.status, 600, 'first 6xx')
  t.equal(selectBest([r(486), r(407), r(401)])!.status, 407, 'challenges preferred (first of the preferred)')
  t.equal(selectBest([r(404), r(484)])!.status, 484, '484 preferred')
  t.equal(selectBest([r(408), r(480)])!.status, 480, 'timeout loses')
  t.equal(selectBest([r(487), r(486)])!.status, 486, '487 of our own CANCEL loses')
  t.equal(selectBest([r(503), r(500)])!.status, 500)
})

t.test('finalizeBest: 503 → 500, challenge aggregation, input untouched', async t => {
  const s503 = r(503, [['retry-after', '10'], ['call-id', 'x']])
  const f = finalizeBest(s503, [s503])
  t.equal(f.status, 500)
  t.notOk(f.has('retry-after'))
  t.equal(f.get('call-id'), 'x')
  t.equal(s503.status, 503)

  const a = r(401, [['www-authenticate', 'Digest realm="a"']])
  const b = r(401, [['www-authenticate', 'Digest realm="b"']])
  const c = r(407, [['proxy-authenticate', 'Digest realm="c"']])
  const d = r(486, [['www-authenticate', 'Digest realm="ignored"']])
  const out = finalizeBest(a, [a, b, c, d])
  t.equal(out.status, 401)
  t.same(out.getAll('www-authenticate'), ['Digest realm="a"', 'Digest realm="b"'])
  t.same(out.getAll('proxy-authenticate'), ['Digest realm="c"'])
  t.same(a.getAll('www-authenticate'), ['Digest realm="a"'], 'the branch response is not modified')
})
