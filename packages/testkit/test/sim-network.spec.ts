import t from 'tap'
import type { Source } from '@sipring/interface'
import { SimClock, SeededRng, SimNetwork } from '../src/index.js'

function setup (loss = 0) {
  const clock = new SimClock(0)
  const net = new SimNetwork({ clock, rng: new SeededRng(1), latencyMs: 5, loss })
  return { clock, net }
}

t.test('udp datagrams arrive after the link latency with the sender as source', async t => {
  const { clock, net } = setup()
  const a = net.transport({ protocol: 'udp', address: '10.0.0.1', port: 5060 })
  const b = net.transport({ protocol: 'udp', address: '10.0.0.2', port: 5060 })
  await a.start(); await b.start()
  const got: Array<[string, Source, number]> = []
  b.on('message', (d, s) => got.push([d.toString(), s, clock.now()]))
  await a.send(Buffer.from('hello'), { protocol: 'udp', address: '10.0.0.2', port: 5060 })
  t.equal(got.length, 0, 'not before the latency')
  clock.advance(5)
  t.equal(got.length, 1)
  t.equal(got[0]![0], 'hello')
  t.match(got[0]![1], { protocol: 'udp', address: '10.0.0.1', port: 5060, local: { address: '10.0.0.2', port: 5060 } })
  t.equal(got[0]![2], 5)
})

t.test('udp loss and partitions drop datagrams; a port with no listener drops silently', async t => {
  const { clock, net } = setup(0.5)
  const a = net.transport({ protocol: 'udp', address: '10.0.0.1', port: 5060 })
  const b = net.transport({ protocol: 'udp', address: '10.0.0.2', port: 5060 })
  await a.start(); await b.start()
  let n = 0
  b.on('message', () => n++)
  for (let i = 0; i < 1000; i++) await a.send(Buffer.from('x'), { protocol: 'udp', address: '10.0.0.2', port: 5060 })
  clock.advance(10)
  t.ok(n > 400 && n < 600, `about half delivered (${n})`)
  net.setLink('10.0.0.1', '10.0.0.2', { loss: 0 })
  net.partition(['10.0.0.1'], ['10.0.0.2'])
  await a.send(Buffer.from('x'), { protocol: 'udp', address: '10.0.0.2', port: 5060 })
  clock.advance(10)
  const before = n
  t.equal(n, before)
  net.heal()
  await a.send(Buffer.from('x'), { protocol: 'udp', address: '10.0.0.2', port: 5060 })
  await a.send(Buffer.from('x'), { protocol: 'udp', address: '10.0.0.9', port: 5060 })
  clock.advance(10)
  t.equal(n, before + 1)
})

t.test('streams: connection ids, replies on the same connection, FIFO under jitter, close events', async t => {
  const clock = new SimClock(0)
  const net = new SimNetwork({ clock, rng: new SeededRng(3), latencyMs: 5, jitterMs: 20 })
  const srv = net.transport({ protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  const cli = net.transport({ protocol: 'tcp', address: '10.0.0.1', port: 0 })
  await srv.start(); await cli.start()
  const atSrv: Array<[string, Source]> = []
  const atCli: string[] = []
  srv.on('message', (d, s) => atSrv.push([d.toString(), s]))
  cli.on('message', d => atCli.push(d.toString()))
  for (let i = 0; i < 50; i++) await cli.send(Buffer.from(String(i)), { protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  clock.advance(100)
  t.same(atSrv.map(x => x[0]), Array.from({ length: 50 }, (_, i) => String(i)), 'in order')
  const src = atSrv[0]![1]
  t.ok(src.connectionId, 'has a connection id')
  t.equal(net.connections().length, 1, 'one connection reused')
  t.ok(srv.hasConnection(src.connectionId!))
  await srv.send(Buffer.from('reply'), { protocol: 'tcp', address: src.address, port: src.port, connectionId: src.connectionId })
  clock.advance(100)
  t.same(atCli, ['reply'])
  const closed: string[] = []
  cli.on('close', id => closed.push(id))
  net.closeConnection(src.connectionId!)
  t.same(closed, [src.connectionId])
  t.notOk(srv.hasConnection(src.connectionId!))
  await t.rejects(srv.send(Buffer.from('x'), { protocol: 'tcp', address: src.address, port: src.port, connectionId: src.connectionId }), { code: 'ECONNREFUSED' }, 'no listener at the ephemeral port')
})

t.test('stopping a transport closes its connections and frees the port', async t => {
  const { clock, net } = setup()
  const srv = net.transport({ protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  const cli = net.transport({ protocol: 'tcp', address: '10.0.0.1', port: 0 })
  await srv.start(); await cli.start()
  await cli.send(Buffer.from('a'), { protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  const closed: string[] = []
  cli.on('close', id => closed.push(id))
  await srv.stop()
  t.equal(closed.length, 1)
  clock.advance(10)
  await t.rejects(cli.send(Buffer.from('b'), { protocol: 'tcp', address: '10.0.0.2', port: 5060 }), { code: 'ECONNREFUSED' })
  const again = net.transport({ protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  await again.start()
  t.pass('port can be bound again')
  const dup = net.transport({ protocol: 'tcp', address: '10.0.0.2', port: 5060 })
  await t.rejects(dup.start(), { code: 'EADDRINUSE' })
})
