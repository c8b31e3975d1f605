import t from 'tap'
import { SeededRng } from '@sipring/testkit'
import { parseNameAddr } from '@sipring/sip'
import { ALICE_SRC, binding, FakeStack, FakeTx, invite, setup } from './fakes.js'

const GARBAGE = ['', ' ', '<', '>', ';', ',', '"', 'sip:', 'sip:@', '<sip:x@[::1>', '1', '-1', '99999999999', 'SIP/2.0/XYZ', ';branch=', '\u00ff', 'a=b;c', '<sip:10.0.0.1;lr>']
const HEADERS = ['via', 'from', 'to', 'call-id', 'cseq', 'max-forwards', 'route', 'record-route', 'proxy-require', 'contact']

t.test('mutated requests never crash the proxy: each gets a response or a branch', async t => {
  const rng = new SeededRng(2024)
  const { stack, location, proxy } = setup()
  location.map.set('sip:bob@example.org', [binding('sip:bob@192.0.2.21'), binding('sip:bob@192.0.2.22', { path: ['<sip:192.0.2.9;lr>'] })])
  let answered = 0
  let forwarded = 0
  for (let i = 0; i < 2000; i++) {
    const req = invite({ method: ['INVITE', 'MESSAGE', 'BYE', 'OPTIONS', 'ACK'][rng.int(5)]!, callId: `fz${i}` })
    const n = 1 + rng.int(3)
    for (let k = 0; k < n; k++) {
      const h = HEADERS[rng.int(HEADERS.length)]!
      const g = GARBAGE[rng.int(GARBAGE.length)]!
      switch (rng.int(4)) {
        case 0: req.remove(h); break
        case 1: req.set(h, g); break
        case 2: req.append(h, g); break
        default: req.uri = ['sip:bob@example.org', 'sips:bob@example.org', 'sip:', 'tel:+1', 'x', 'sip:10.0.0.1', 'sip:bob@[::1'][rng.int(7)]!
      }
    }
    const before = stack.sent.length + stack.stateless.length
    const tx = new FakeTx(ALICE_SRC)
    if (req.method === 'ACK') await proxy.handleAck(req, ALICE_SRC)
    else await proxy.handleRequest(req, tx)
    const sent = stack.sent.length + stack.stateless.length - before
    if (tx.responses.length > 0) answered++
    if (sent > 0) forwarded++
    if (req.method !== 'ACK') t.ok(tx.responses.length > 0 || sent > 0 || proxy.stats().activeContexts > 0, `request ${i} handled`)
    for (const r of tx.responses) {
      t.ok(r.status >= 200 && r.status < 700, 'a final status')
      t.ok(r.reason.length > 0, 'with a reason')
    }
    for (const s of stack.sent.slice(before)) for (const rr of s.req.getAll('route')) parseNameAddr(rr)
  }
  t.ok(answered > 100 && forwarded > 100, `both outcomes exercised (${answered} answered, ${forwarded} forwarded)`)
})

t.test('IPv6: our Route recognised with brackets, Record-Route formatted, family change → double RR', async t => {
  const v6 = { protocol: 'udp' as const, address: '2001:db8::1', port: 5060 }
  const v4 = { protocol: 'udp' as const, address: '10.0.0.1', port: 5060 }
  const stack = new FakeStack([v6, v4])
  stack.transportFor = dest => stack.transports.find(t => t.protocol === dest.protocol && t.local.address.includes(':') === dest.address.includes(':'))
  const { location, proxy } = setup({ stack })
  location.map.set('sip:bob@example.org', [binding('sip:bob@[2001:db8::20]:5062')])
  const src6 = { protocol: 'udp' as const, address: '2001:db8::10', port: 5060, local: v6 }
  await proxy.handleRequest(invite({ headers: 'Route: <sip:[2001:DB8:0::1];lr>' }), new FakeTx(src6))
  const out = stack.sent[0]!
  t.notOk(out.req.has('route'), 'our IPv6 Route removed (case/zero-compression insensitive)')
  t.same(out.dest, { protocol: 'udp', address: '2001:db8::20', port: 5062 })
  t.match(out.req.getAll('record-route'), [/@\[2001:db8::1\]:5060;transport=udp;lr>$/])
  // caller on IPv4, callee on IPv6: two Record-Route entries
  await proxy.handleRequest(invite({ callId: 'v4' }), new FakeTx(ALICE_SRC))
  const rr = stack.sent[1]!.req.getAll('record-route')
  t.equal(rr.length, 2)
  t.match(rr[0]!, /\[2001:db8::1\]/)
  t.match(rr[1]!, /10\.0\.0\.1/)
})
