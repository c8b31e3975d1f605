import t from 'tap'
import { request } from 'node:http'
import { MemoryLogger } from '@sipring/testkit'
import { AdminError, AdminServer } from '../src/admin.js'

interface Reply { status: number, type: string | undefined, body: any, headers: Record<string, unknown> }

function call (port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, res => {
      const chunks: Buffer[] = []
      res.on('data', c => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body: text === '' ? undefined : JSON.parse(text), headers: res.headers })
      })
    })
    req.on('error', reject)
    req.end()
  })
}

const seen: string[] = []
const server = new AdminServer({
  host: '127.0.0.1',
  port: 0,
  logger: new MemoryLogger(),
  source: {
    status: () => ({ nodeId: 'n1', version: '0.1.0', counts: { aors: 1 } }),
    bindings: (aor: string) => {
      seen.push(aor)
      if (aor === 'boom') throw new Error('kaboom')
      if (!aor.startsWith('sip:')) throw new AdminError(400, `not a SIP URI: ${aor}`)
      return { aor, bindings: [{ contact: 'sip:alice@10.0.0.1:5060' }] }
    }
  }
})

t.before(async () => { await server.start() })
t.teardown(async () => { await server.stop() })

t.test('GET /health and /status', async t => {
  const port = server.address().port
  const h = await call(port, '/health')
  t.equal(h.status, 200)
  t.match(h.type, /^application\/json/)
  t.same(h.body, { status: 'ok' })
  const s = await call(port, '/status')
  t.equal(s.status, 200)
  t.same(s.body, { nodeId: 'n1', version: '0.1.0', counts: { aors: 1 } })
})

t.test('GET /bindings', async t => {
  const port = server.address().port
  const r = await call(port, '/bindings?aor=' + encodeURIComponent('sip:alice@example.org'))
  t.equal(r.status, 200)
  t.same(r.body, { aor: 'sip:alice@example.org', bindings: [{ contact: 'sip:alice@10.0.0.1:5060' }] })
  t.equal(seen.at(-1), 'sip:alice@example.org', 'the query is URL-decoded')
})

t.test('bad queries are 400 JSON', async t => {
  const port = server.address().port
  for (const [path, re] of [
    ['/bindings', /missing query parameter aor/],
    ['/bindings?aor=', /missing query parameter aor/],
    ['/bindings?aor=sip:a@b&aor=sip:c@d', /exactly one aor/],
    ['/bindings?aor=mailto:x', /not a SIP URI: mailto:x/],
    ['/bindings?aor=sip:a@b&foo=1', /unknown query parameter "foo"/],
    ['/status?verbose=1', /unknown query parameter "verbose"/],
    ['/bindings?aor=sip:' + 'a'.repeat(3000) + '@b', /longer than 2048/]
  ] as const) {
    const r = await call(port, path)
    t.equal(r.status, 400, path.slice(0, 60))
    t.match(r.type, /^application\/json/)
    t.match(r.body.error, re)
  }
})

t.test('unknown routes are 404 JSON, other methods 405', async t => {
  const port = server.address().port
  const r = await call(port, '/nope')
  t.equal(r.status, 404)
  t.match(r.body.error, /no route \/nope/)
  const root = await call(port, '/')
  t.equal(root.status, 404)
  const p = await call(port, '/status', 'POST')
  t.equal(p.status, 405)
  t.equal(p.headers.allow, 'GET, HEAD')
  t.match(p.body.error, /method POST not allowed/)
  const head = await call(port, '/health', 'HEAD')
  t.equal(head.status, 200)
  t.equal(head.body, undefined)
})

t.test('a failing source is a 500 JSON, not a crash', async t => {
  const port = server.address().port
  const r = await call(port, '/bindings?aor=boom')
  t.equal(r.status, 500)
  t.same(r.body, { error: 'internal error' })
  t.equal((await call(port, '/health')).status, 200, 'still serving')
})

t.test('a port in use rejects start with EADDRINUSE', async t => {
  const other = new AdminServer({ host: '127.0.0.1', port: server.address().port, logger: new MemoryLogger(), source: { status: () => ({}), bindings: () => ({}) } })
  await t.rejects(other.start(), { code: 'EADDRINUSE' })
})
