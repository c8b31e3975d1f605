import t from 'tap'
import { createHash } from 'node:crypto'
import { ha1, digestResponse, digestHash, digestEquals, normalizeAlgorithm, SipParseError } from '@sipring/sip'

const md5 = (s: string): string => createHash('md5').update(s).digest('hex')

t.test('RFC 2617 §3.5 example (MD5, qop=auth)', async tt => {
  const h = ha1('MD5', 'Mufasa', 'testrealm@host.com', 'Circle Of Life')
  tt.equal(h, '939e7578ed9e3c518a452acee763bce9')
  tt.equal(digestResponse({
    algorithm: 'MD5', ha1: h, nonce: 'dcd98b7102dd2f0e8b11d0f600bfb0c093', nc: '00000001', cnonce: '0a4f113b',
    qop: 'auth', method: 'GET', uri: '/dir/index.html'
  }), '6629fae49393a05397450978507c4ef1')
})

t.test('RFC 7616 §3.9.1 examples (MD5 and SHA-256)', async tt => {
  const common = {
    nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', nc: '00000001',
    cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ', qop: 'auth', method: 'GET', uri: '/dir/index.html'
  }
  tt.equal(digestResponse({ ...common, algorithm: 'MD5', ha1: ha1('MD5', 'Mufasa', 'http-auth@example.org', 'Circle of Life') }),
    '8ca523f5e9506fed4657c9700eebdbec')
  tt.equal(digestResponse({ ...common, algorithm: 'SHA-256', ha1: ha1('SHA-256', 'Mufasa', 'http-auth@example.org', 'Circle of Life') }),
    '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1')
})

t.test('RFC 2069 compatibility (no qop), auth-int and -sess follow the formulas', async tt => {
  const h = ha1('MD5', 'bob', 'biloxi.com', 'zanzibar')
  tt.equal(h, md5('bob:biloxi.com:zanzibar'))
  const ha2 = md5('REGISTER:sip:biloxi.com')
  tt.equal(digestResponse({ algorithm: 'MD5', ha1: h, nonce: 'n1', method: 'REGISTER', uri: 'sip:biloxi.com' }), md5(`${h}:n1:${ha2}`))
  const body = 'v=0\r\n'
  const ha2i = md5(`INVITE:sip:bob@biloxi.com:${md5(body)}`)
  tt.equal(digestResponse({ algorithm: 'MD5', ha1: h, nonce: 'n1', nc: '00000002', cnonce: 'c1', qop: 'auth-int', method: 'INVITE', uri: 'sip:bob@biloxi.com', body: Buffer.from(body) }),
    md5(`${h}:n1:00000002:c1:auth-int:${ha2i}`))
  const sess = md5(`${h}:n1:c1`)
  tt.equal(digestResponse({ algorithm: 'md5-sess', ha1: h, nonce: 'n1', nc: '00000001', cnonce: 'c1', qop: 'auth', method: 'REGISTER', uri: 'sip:biloxi.com' }),
    md5(`${sess}:n1:00000001:c1:auth:${ha2}`))
  tt.equal(digestHash('SHA-512-256', 'abc'), createHash('sha512-256').update('abc').digest('hex'))
})

t.test('algorithm names, errors, constant-time compare', async tt => {
  tt.equal(normalizeAlgorithm(undefined), 'MD5')
  tt.equal(normalizeAlgorithm('sha-256-SESS'), 'SHA-256-sess')
  tt.equal(normalizeAlgorithm('constructor'), undefined)
  tt.equal(normalizeAlgorithm('SHA-1'), undefined)
  tt.throws(() => ha1('SHA-1', 'a', 'b', 'c'), SipParseError)
  tt.throws(() => digestResponse({ algorithm: 'MD5', ha1: 'x', nonce: 'n', qop: 'auth', method: 'A', uri: 'u' }), SipParseError)
  tt.throws(() => digestResponse({ algorithm: 'MD5', ha1: 'x', nonce: 'n', qop: 'weird', nc: '1', cnonce: 'c', method: 'A', uri: 'u' }), SipParseError)
  tt.throws(() => digestResponse({ algorithm: 'MD5-sess', ha1: 'x', nonce: 'n', method: 'A', uri: 'u' }), SipParseError)
  tt.ok(digestEquals('6629FAE49393A05397450978507C4EF1', '6629fae49393a05397450978507c4ef1'))
  tt.notOk(digestEquals('6629fae49393a05397450978507c4ef1', '6629fae49393a05397450978507c4ef2'))
  tt.notOk(digestEquals('abc', 'abcd'))
})
