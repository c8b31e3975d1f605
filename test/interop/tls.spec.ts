// TLS (sips: on a TLS listener) and secure WebSocket (RFC 7118) clients end to end through the
// daemon: `sipring start --sip tls:127.0.0.1:P --sip wss:127.0.0.1:P2 --tls-cert --tls-key` with the
// self-signed fixture certificate (SANs localhost, 127.0.0.1, ::1), driven by scripted clients
// written with node:tls and ws that verify the server certificate against that fixture.
// (a) a TLS client registers a sips: Contact, another TLS client calls it: the INVITE arrives on the
//     callee's own TLS connection (its flow), 180/200/ACK/BYE complete, both directions of BYE.
// (b) a WSS client registers `sip:u@x.invalid;transport=ws`; UDP and TLS callers reach it over its WebSocket.
// (c) the same over IPv6 ([::1]) TLS.
// (d) two baresip softphones call each other over TLS (skipped loudly without baresip).
import t, { type Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { SipRequest } from '@sipring/sip'
import { startBaresip, type Baresip } from '../lib/baresip.js'
import { requireTools } from '../lib/interop.js'
import { freePort, freePortPair, tcpListening } from '../lib/ports.js'
import { runProcess, sleep, tempDir } from '../lib/proc.js'
import { DOMAIN, ROOT, sipringCommand, startSipring, type TestServer } from '../lib/servers.js'
import { ScriptedUA, firstLine, tlsChannel, udpChannel, wsChannel, type Channel } from '../lib/sipua.js'

const FIXTURES = join(ROOT, 'packages', 'sip', 'test', 'fixtures')
const CERT_PATH = join(FIXTURES, 'transport-cert.pem')
const KEY_PATH = join(FIXTURES, 'transport-key.pem')
const CA = readFileSync(CERT_PATH) // self-signed: the certificate is its own CA

let server: TestServer | undefined
let udpPort = 0
let tlsPort = 0
let wssPort = 0
const v6 = await freePort(['::1']).then(() => true, () => false)
const uas: ScriptedUA[] = []

t.teardown(async () => {
  for (const u of uas) u.close()
  await server?.stop()
})

t.before(async () => {
  udpPort = await freePort()
  tlsPort = await freePort()
  wssPort = await freePort()
  const extra = ['--sip', `tls:127.0.0.1:${tlsPort}`, '--sip', `wss:127.0.0.1:${wssPort}`]
  if (v6) extra.push('--sip', `tls:[::1]:${tlsPort}`)
  server = await startSipring({
    listen: [{ proto: 'udp', host: '127.0.0.1', port: udpPort }],
    extraArgs: [...extra, '--tls-cert', CERT_PATH, '--tls-key', KEY_PATH]
  })
  const deadline = Date.now() + 10000
  while (!(await tcpListening('127.0.0.1', tlsPort) && await tcpListening('127.0.0.1', wssPort))) {
    if (Date.now() > deadline) throw new Error(`TLS/WSS listeners not up:\n${server.proc.output()}`)
    await sleep(50)
  }
})

const track = (u: ScriptedUA): ScriptedUA => { uas.push(u); return u }
const aor = (user: string, scheme = 'sip'): string => `${scheme}:${user}@${DOMAIN}`

/** caller calls callee's AOR; the INVITE must arrive on the callee's channel; `hangup` picks who sends BYE. */
async function call (t: Test, caller: ScriptedUA, callee: ScriptedUA, target: string, hangup: 'caller' | 'callee'): Promise<void> {
  const before = callee.received.length
  const inv = caller.invite(target)
  const trying = await caller.response(inv.callId, inv.seq, 'INVITE', { final: false })
  t.equal(trying.status, 100, 'caller: 100 Trying from the proxy')
  const invite = await callee.next((m): m is SipRequest => m instanceof SipRequest && m.method === 'INVITE' && m.get('call-id') === inv.callId, 'INVITE', 5000, before)
  t.pass(`callee got the INVITE on its own ${callee.chan.via} connection: ${invite.uri}`)
  const topVia = invite.getAll('via')[0]!
  t.match(topVia, new RegExp(`^SIP/2\\.0/${callee.chan.via} `, 'i'), `the proxy's Via names the callee's transport (${topVia})`)
  const rr = invite.getAll('record-route')
  t.ok(rr.length >= 1, `the proxy Record-Routes (${rr.join(' , ')})`)
  t.comment(`INVITE at callee: ${invite.uri}\n  Via: ${invite.getAll("via").join("\n  Via: ")}\n  Record-Route: ${rr.join("\n  Record-Route: ")}`)
  if (callee.chan.via === 'WSS') t.match(rr[0], /;transport=ws;/, 'the WSS leg is Record-Routed with transport=ws (RFC 7118 §5.2)')
  if (/^sips:/i.test(target)) t.ok(rr.every(r => /^<sips:/i.test(r)), 'a sips: request is Record-Routed with sips: URIs')
  const calleeTag = 'callee' + inv.callId.slice(0, 6)
  callee.answer(invite, 180, 'Ringing', calleeTag)
  const ringing = await caller.response(inv.callId, inv.seq, 'INVITE', { status: 180 })
  t.equal(ringing.status, 180, 'caller: 180 Ringing relayed')
  const uasDialog = callee.answer(invite, 200, 'OK', calleeTag)
  const ok = await caller.response(inv.callId, inv.seq, 'INVITE')
  t.equal(ok.status, 200, 'caller: 200 OK relayed')
  const uacDialog = caller.dialogFromResponse(ok, inv.seq)
  t.equal(uacDialog.remoteTarget, callee.contact, 'the 200 carries the callee Contact unchanged')

  const ackAt = callee.received.length
  caller.inDialog(uacDialog, 'ACK')
  const ack = await callee.next((m): m is SipRequest => m instanceof SipRequest && m.method === 'ACK' && m.get('call-id') === inv.callId, 'ACK', 5000, ackAt)
  t.equal(ack.uri, callee.contact, 'the ACK for the 2xx reached the callee over its flow, Request-URI = its Contact')

  const [from, to, d] = hangup === 'caller' ? [caller, callee, uacDialog] : [callee, caller, uasDialog]
  const byeAt = to.received.length
  const byeSeq = from.inDialog(d, 'BYE')
  const bye = await to.next((m): m is SipRequest => m instanceof SipRequest && m.method === 'BYE' && m.get('call-id') === inv.callId, 'BYE', 5000, byeAt)
  t.pass(`the ${hangup === 'caller' ? 'callee' : 'caller'} got the BYE (${firstLine(bye)})`)
  to.answer(bye, 200, 'OK', d.remoteTag)
  const byeOk = await from.response(inv.callId, byeSeq, 'BYE')
  t.equal(byeOk.status, 200, `the ${hangup} got 200 to its BYE`)
  t.same([...caller.errors, ...callee.errors], [], 'every message parsed')
}

t.test('the TLS listener presents the configured certificate and refuses nothing to a verifying client', async t => {
  const s = tlsConnect({ host: '127.0.0.1', port: tlsPort, ca: CA, rejectUnauthorized: true })
  await new Promise<void>((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject) })
  t.equal(s.authorized, true, 'certificate verified against the fixture CA (SAN 127.0.0.1)')
  t.equal(s.getPeerCertificate().subject.CN, 'localhost', 'the fixture certificate')
  s.destroy()
})

t.test('(a) TLS: alice registers sips:, bob calls her over TLS, the INVITE uses her TLS connection', async t => {
  const aliceCh = await tlsChannel('127.0.0.1', tlsPort, CA)
  // a Contact naming the client's own ephemeral TLS port (nothing listens there for new connections)
  const alice = track(new ScriptedUA(aliceCh, aor('alice', 'sips'), `sips:alice@${aliceCh.sentBy}`))
  const reg = await alice.register(`sips:${DOMAIN}`)
  t.equal(reg.status, 200, `REGISTER over TLS → 200 (${reg.status} ${reg.reason})`)
  t.match(reg.getAll('contact').join(','), /sips:alice@/, 'the 200 lists the sips: Contact')
  // sips:alice and sip:alice are different AORs (RFC 3261 §19.1.4): the binding is under the sips: AOR
  const r = await server!.admin!(`/bindings?aor=${encodeURIComponent(aor('alice', 'sips'))}`)
  t.equal(r.status, 200, 'GET /bindings for the sips: AOR')
  const bindings = (r.body?.bindings ?? []) as Array<{ contact: string }>
  t.same(bindings.map(b => b.contact), [alice.contact], 'one binding: the sips: Contact')

  const bobCh = await tlsChannel('127.0.0.1', tlsPort, CA)
  const bob = track(new ScriptedUA(bobCh, aor('bob', 'sips'), `sips:bob@${bobCh.sentBy}`))
  await call(t, bob, alice, `sips:alice@${DOMAIN}`, 'caller')
  await call(t, bob, alice, `sips:alice@${DOMAIN}`, 'callee')
})

t.test('(a) a sips: AOR is not the sip: AOR (RFC 3261 §19.1.4): sip:alice is unknown', async t => {
  const ch = await tlsChannel('127.0.0.1', tlsPort, CA)
  const kim = track(new ScriptedUA(ch, aor('kim', 'sips'), `sips:kim@${ch.sentBy}`))
  const inv = kim.invite(`sip:alice@${DOMAIN}`)
  const res = await kim.response(inv.callId, inv.seq, 'INVITE')
  t.equal(res.status, 404, `INVITE sip:alice (alice registered sips:alice) → ${res.status} ${res.reason}`)
  kim.ackNon2xx(`sip:alice@${DOMAIN}`, inv, res)
})

t.test('(a) TLS: a Contact sip:...;transport=tls on an .invalid host is reached over its flow', async t => {
  const ch = await tlsChannel('127.0.0.1', tlsPort, CA)
  const dave = track(new ScriptedUA(ch, aor('dave'), 'sip:dave@dave.invalid;transport=tls'))
  const reg = await dave.register(`sip:${DOMAIN}`)
  t.equal(reg.status, 200, `REGISTER → 200 (${reg.status} ${reg.reason})`)
  const callerCh = await tlsChannel('127.0.0.1', tlsPort, CA)
  const caller = track(new ScriptedUA(callerCh, aor('erin'), 'sip:erin@erin.invalid;transport=tls'))
  await call(t, caller, dave, `sip:dave@${DOMAIN}`, 'caller')
  await call(t, caller, dave, `sip:dave@${DOMAIN}`, 'callee')
})

t.test('(b) WSS: carol registers over a secure WebSocket; UDP and TLS callers reach her over it', async t => {
  const ch = await wsChannel(`wss://127.0.0.1:${wssPort}`, CA)
  const carol = track(new ScriptedUA(ch, aor('carol'), `sip:carol@${ch.sentBy};transport=ws`))
  const reg = await carol.register(`sip:${DOMAIN}`)
  t.equal(reg.status, 200, `REGISTER over WSS → 200 (${reg.status} ${reg.reason})`)
  const bindings = await server!.bindings('carol')
  t.equal(bindings.length, 1, `one binding: ${bindings.join(' ')}`)

  const udp: Channel = await udpChannel('127.0.0.1', udpPort)
  const frank = track(new ScriptedUA(udp, aor('frank'), `sip:frank@${udp.sentBy}`))
  await call(t, frank, carol, `sip:carol@${DOMAIN}`, 'caller')
  await call(t, frank, carol, `sip:carol@${DOMAIN}`, 'callee')

  const tls = await tlsChannel('127.0.0.1', tlsPort, CA)
  const gina = track(new ScriptedUA(tls, aor('gina', 'sips'), `sips:gina@${tls.sentBy}`))
  await call(t, gina, carol, `sip:carol@${DOMAIN}`, 'callee')
})

t.test('(b) WSS refuses a handshake without the sip subprotocol and plain HTTP', async t => {
  const https = await import('node:https')
  const status = await new Promise<number>((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port: wssPort, path: '/', ca: CA }, res => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
  })
  t.equal(status, 426, 'plain HTTPS GET → 426 Upgrade Required')
  await t.rejects(wsChannelNoProto(`wss://127.0.0.1:${wssPort}`), 'a WebSocket without the sip subprotocol is refused')
})

async function wsChannelNoProto (url: string): Promise<void> {
  const { default: WebSocket } = await import('ws')
  const ws = new WebSocket(url, { ca: CA })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => { ws.close(); resolve() })
    ws.once('error', reject)
  })
}

t.test('(c) IPv6 TLS: [::1]', { skip: v6 ? false : 'no IPv6 loopback' }, async t => {
  if (!v6) return
  const ch = await tlsChannel('::1', tlsPort, CA)
  const hana = track(new ScriptedUA(ch, aor('hana', 'sips'), `sips:hana@${ch.sentBy}`))
  const reg = await hana.register(`sips:${DOMAIN}`)
  t.equal(reg.status, 200, `REGISTER over TLS/IPv6 → 200 (${reg.status} ${reg.reason})`)
  const callerCh = await tlsChannel('::1', tlsPort, CA)
  const ivan = track(new ScriptedUA(callerCh, aor('ivan', 'sips'), `sips:ivan@${callerCh.sentBy}`))
  await call(t, ivan, hana, `sips:hana@${DOMAIN}`, 'caller')
  // a v4 TLS caller to the v6 TLS user
  const v4 = await tlsChannel('127.0.0.1', tlsPort, CA)
  const jon = track(new ScriptedUA(v4, aor('jon', 'sips'), `sips:jon@${v4.sentBy}`))
  await call(t, jon, hana, `sips:hana@${DOMAIN}`, 'callee')
})

// (d) two real softphones over TLS: baresip verifies the server certificate (sip_cafile = the fixture)
t.test('(d) baresip alice calls baresip bob over TLS', async t => {
  if (!requireTools(t, ['baresip'])) return
  const phones: Baresip[] = []
  t.teardown(async () => { for (const p of phones) await p.stop() })
  const start = async (user: string): Promise<Baresip> => {
    const p = await startBaresip({
      user, domain: DOMAIN, proxy: `127.0.0.1:${tlsPort}`, transport: 'tls', cafile: CERT_PATH,
      listenHost: '127.0.0.1', sipPort: await freePortPair(), ctrlPort: await freePort()
    })
    phones.push(p)
    return p
  }
  const bob = await start('bob')
  const alice = await start('alice')
  await bob.waitRegistered(8000)
  await alice.waitRegistered(8000)
  t.match(bob.proc.output(), /bob@\S+: \{\d+\/TLS\/v4\} 200 OK/, 'bob registered over TLS')
  const bound = await server!.bindings('bob')
  t.equal(bound.length, 1, `bob has one binding: ${JSON.stringify(bound)}`)
  t.match(bound[0] ?? '', /transport=tls/i, "bob's contact is a TLS one")

  const dial = await alice.command('dial', `sip:bob@${DOMAIN}`)
  t.ok(dial.ok, 'alice: dial accepted')
  const aEst = await alice.waitEvent('CALL_ESTABLISHED', 10000)
  const bEst = await bob.waitEvent('CALL_ESTABLISHED', 5000)
  t.match(aEst.peeruri ?? '', /sip:bob@/, 'alice is in a call with bob')
  t.match(bEst.peeruri ?? '', /sip:alice@/, 'bob is in a call with alice')
  await sleep(300)
  t.ok((await alice.command('hangup')).ok, 'alice: hangup accepted')
  const aClosed = await alice.waitEvent('CALL_CLOSED', 5000)
  const bClosed = await bob.waitEvent('CALL_CLOSED', 5000)
  t.equal(aClosed.param, 'Connection reset by user', 'alice closed the call herself')
  t.notMatch(bClosed.param ?? '', /^[3-6]\d\d /, `bob's call ended by BYE, not by an error response (${bClosed.param})`)
})

t.test('start-up errors: a missing, non-PEM or mismatched certificate/key exits 1; a tls listener without a key exits 2', async t => {
  const tmp = tempDir('tls-bad')
  t.teardown(() => { tmp.cleanup() })
  let n = 0
  const run = async (args: string[]): Promise<{ code: number | string, output: string }> => {
    const { SIPRING_CLI: _cli, ...env } = process.env
    return await runProcess('sipring-bad-tls', process.execPath, [...sipringCommand('source'), 'start', '--data', join(tmp.dir, `data${++n}`), '--admin', 'off',
      '--sip', `tls:127.0.0.1:${await freePort()}`, ...args], 20000, { cwd: ROOT, env })
  }
  const garbage = join(tmp.dir, 'garbage.pem')
  writeFileSync(garbage, 'not a certificate\n')
  const otherKey = join(tmp.dir, 'other-key.pem')
  writeFileSync(otherKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }))
  const [missing, noKey, bad, mismatch] = await Promise.all([
    run(['--tls-cert', join(tmp.dir, 'nope.pem'), '--tls-key', KEY_PATH]),
    run(['--tls-cert', CERT_PATH]),
    run(['--tls-cert', garbage, '--tls-key', KEY_PATH]),
    run(['--tls-cert', CERT_PATH, '--tls-key', otherKey])
  ])
  t.equal(missing.code, 1, 'exit 1')
  t.match(missing.output, /cannot read TLS certificate\/key/, `clear message: ${missing.output.trim().split('\n').pop()}`)
  t.equal(noKey.code, 2, 'exit 2')
  t.match(noKey.output, /needs both tls\.cert and tls\.key/, `clear message: ${noKey.output.trim().split('\n').pop()}`)
  t.equal(bad.code, 1, 'a file that is not PEM: exit 1')
  t.match(bad.output, /invalid TLS certificate\/key .*garbage\.pem/, `clear message: ${bad.output.trim().split('\n').pop()}`)
  t.equal(mismatch.code, 1, 'a key that does not match the certificate: exit 1')
  t.match(mismatch.output, /invalid TLS certificate\/key .*mismatch/, `clear message: ${mismatch.output.trim().split('\n').pop()}`)
})
