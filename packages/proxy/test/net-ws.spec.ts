// RFC 7118 §5.2: the URI `transport` parameter value is `ws` for WS and WSS alike. Our WSS
// Record-Route says `transport=ws`, and a Route coming back with it is recognised as ours.
import t from 'tap'
import { parseUri } from '@sipring/sip'
import { recordRouteFor, SelfMatcher } from '@sipring/proxy'
import type { Endpoint } from '@sipring/interface'

const wss: Endpoint = { protocol: 'wss', address: '192.0.2.1', port: 8443 }
const ws: Endpoint = { protocol: 'ws', address: '192.0.2.1', port: 8080 }
const tls: Endpoint = { protocol: 'tls', address: '192.0.2.1', port: 5061 }

t.test('Record-Route for a WSS listener uses transport=ws, other listeners their own token', async t => {
  t.equal(recordRouteFor(wss, undefined, ';r2=on', 'ft.x'), '<sip:ft.x@192.0.2.1:8443;transport=ws;lr;r2=on>')
  t.equal(recordRouteFor(ws), '<sip:192.0.2.1:8080;transport=ws;lr>')
  t.equal(recordRouteFor(tls), '<sip:192.0.2.1:5061;transport=tls;lr>')
  t.equal(recordRouteFor(tls, undefined, '', undefined, true), '<sips:192.0.2.1:5061;lr>', 'a sips: request gets a sips: Record-Route')
})

t.test('a Route with transport=ws naming the WSS listener is ours; wrong port or transport is not', async t => {
  const self = new SelfMatcher(() => [wss, tls], [])
  t.ok(self.uri(parseUri('sip:ft.x@192.0.2.1:8443;transport=ws;lr')), 'transport=ws at the WSS port')
  t.ok(self.uri(parseUri('sip:192.0.2.1:8443;transport=wss;lr')), 'transport=wss still accepted')
  t.ok(self.uri(parseUri('sips:192.0.2.1:8443;transport=ws;lr')), 'sips: + transport=ws')
  t.notOk(self.uri(parseUri('sip:192.0.2.1:8443;transport=tcp;lr')), 'another transport at that port')
  t.notOk(self.uri(parseUri('sip:192.0.2.1:5061;transport=ws;lr')), 'transport=ws at the TLS port')
  t.notOk(self.uri(parseUri('sip:192.0.2.1:8444;transport=ws;lr')), 'another port')
  t.notOk(new SelfMatcher(() => [tls], []).uri(parseUri('sip:192.0.2.1:8443;transport=ws;lr')), 'no WS/WSS listener at all')
})
