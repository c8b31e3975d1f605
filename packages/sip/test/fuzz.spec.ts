// Mutation fuzzing: whatever the bytes, the parser and the header helpers throw only SipParseError,
// and whatever parses serializes to something that parses to the same thing.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SeededRng } from '@sipring/testkit'
import {
  parseMessage, serialize, SipParseError, SipRequest, parseVia, parseNameAddr, parseUri, parseCSeq,
  parseAuthHeader, formatUri, formatNameAddr, formatVia, aorOf, uriEquals
} from '@sipring/sip'

const here = dirname(fileURLToPath(import.meta.url))
// every torture message (valid or not), plus the valid ones again so that mutants often still parse
const corpus: Buffer[] = []
for (const sub of ['rfc4475', 'rfc5118']) {
  const dir = join(here, 'data', sub)
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.dat')) continue
    const b = readFileSync(join(dir, f))
    corpus.push(b)
    try { parseMessage(b); corpus.push(b, b) } catch {}
  }
}

const TOKENS = [':', ';', ',', '<', '>', '"', '\\', '[', ']', '%', '@', '=', ' ', '\t', '\r\n', '\r\n ', '\n', '\r\n\r\n',
  '\0', 'SIP/2.0', 'sip:', 'Content-Length: ', '99999999999', '-1', '\u00ff', '\u{1F600}', '%zz', '[::1]', '?', '&']
const STATUSES = new Set([400, 413, 414, 505])

function mutate (rng: SeededRng, src: Buffer): Buffer {
  let b = Buffer.from(src)
  const n = rng.int(4) === 0 ? 2 + rng.int(3) : 1
  for (let k = 0; k < n; k++) {
    const pos = rng.int(b.length + 1)
    switch (rng.int(6)) {
      case 0: // flip a byte
        if (b.length > 0) b[Math.min(pos, b.length - 1)] = rng.int(256)
        break
      case 1: { // insert a token
        const tok = Buffer.from(TOKENS[rng.int(TOKENS.length)]!, 'utf8')
        b = Buffer.concat([b.subarray(0, pos), tok, b.subarray(pos)])
        break
      }
      case 2: { // delete a range
        const len = 1 + rng.int(20)
        b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + len)])
        break
      }
      case 3: { // duplicate a range
        const len = 1 + rng.int(60)
        b = Buffer.concat([b.subarray(0, pos + len), b.subarray(pos, pos + len), b.subarray(pos + len)])
        break
      }
      case 4: // truncate
        b = b.subarray(0, pos)
        break
      default: { // random bytes
        const r = Buffer.from(rng.bytes(1 + rng.int(8)))
        b = Buffer.concat([b.subarray(0, pos), r, b.subarray(pos)])
      }
    }
  }
  return b
}

const flat = (u: object): string => JSON.stringify(u, (_k, v: unknown) => v instanceof Map ? [...v] : v)

function onlyParseErrors (fn: () => void): unknown {
  try { fn() } catch (e) {
    if (!(e instanceof SipParseError)) return e
    if (typeof e.reason !== 'string' || e.reason.length === 0) return new Error('empty reason')
  }
  return undefined
}

t.test('random mutations of valid and invalid messages', async tt => {
  const rng = new SeededRng(0x5eed)
  const N = 6000
  let parsed = 0
  let rejected = 0
  const problems: string[] = []
  for (let i = 0; i < N; i++) {
    const input = mutate(rng, corpus[rng.int(corpus.length)]!)
    let m
    try {
      m = parseMessage(input)
      parsed++
    } catch (e) {
      if (!(e instanceof SipParseError)) { problems.push(`non-SipParseError ${String(e)} for ${JSON.stringify(input.toString('latin1'))}`); continue }
      if (!STATUSES.has(e.status)) problems.push(`status ${e.status}`)
      if (e.reason.length === 0 || /[\r\n]/.test(e.reason)) problems.push(`bad reason ${JSON.stringify(e.reason)}`)
      rejected++
      continue
    }
    // the parsed message re-serializes to something equivalent
    try {
      const m2 = parseMessage(serialize(m))
      if (JSON.stringify(m2.headers.filter(h => h.name !== 'content-length')) !== JSON.stringify(m.headers.filter(h => h.name !== 'content-length')) ||
        !m2.body.equals(m.body)) problems.push(`round trip changed ${JSON.stringify(input.toString('latin1'))}`)
      if (m instanceof SipRequest && (m2 as SipRequest).uri !== m.uri) problems.push('round trip changed uri')
    } catch (e) {
      problems.push(`round trip failed: ${String(e)} for ${JSON.stringify(input.toString('latin1'))}`)
    }
    // the lazily used helpers never throw anything but SipParseError
    for (const h of m.headers) {
      const err = onlyParseErrors(() => {
        switch (h.name) {
          case 'via': for (const v of m.getAll('via')) formatVia(parseVia(v)); break
          case 'to': case 'from': case 'contact': case 'route': case 'record-route': {
            for (const v of m.getAll(h.name)) {
              const na = parseNameAddr(v)
              formatNameAddr(na)
              if (/^(sips?|tel):/i.test(na.uri)) {
                const u = parseUri(na.uri)
                aorOf(u)
                const u2 = parseUri(formatUri(u))
                if (flat(u2) !== flat(u) || !uriEquals(u, u2)) problems.push(`URI round trip changed ${na.uri} → ${formatUri(u)}`)
                const na2 = parseNameAddr(formatNameAddr(na))
                if (na2.uri !== na.uri || JSON.stringify([...na2.params]) !== JSON.stringify([...na.params])) problems.push(`name-addr round trip changed ${v}`)
              }
            }
            break
          }
          case 'cseq': parseCSeq(h.value); break
          case 'authorization': case 'www-authenticate': parseAuthHeader(h.value); break
        }
      })
      if (err !== undefined) problems.push(`helper threw ${String(err)} on ${h.name}: ${JSON.stringify(h.value)}`)
    }
  }
  tt.same(problems.slice(0, 10), [], 'no problems')
  tt.equal(parsed + rejected, N)
  tt.ok(parsed > N / 10, `a fair share still parses (${parsed})`)
  tt.ok(rejected > N / 10, `a fair share is rejected (${rejected})`)
})

t.test('random garbage and random headers', async tt => {
  const rng = new SeededRng(42)
  const problems: string[] = []
  for (let i = 0; i < 2000; i++) {
    const b = Buffer.from(rng.bytes(rng.int(400)))
    const err = onlyParseErrors(() => parseMessage(b))
    if (err !== undefined) problems.push(String(err))
    const s = b.toString('latin1')
    for (const fn of [parseUri, parseNameAddr, parseVia, parseCSeq, parseAuthHeader]) {
      const e2 = onlyParseErrors(() => { fn(s); fn('sip:' + s); fn('SIP/2.0/UDP ' + s) })
      if (e2 !== undefined) problems.push(`${fn.name}: ${String(e2)}`)
    }
  }
  tt.same(problems.slice(0, 10), [])
})
