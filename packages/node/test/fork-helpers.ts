/**
 * Group-call clusters for the distributed forking specs: N super nodes on one SimClock + SimNetwork +
 * SimOverlayHub sharing one accounts store (the groups), and member UAs that ring, answer, are busy,
 * and answer CANCEL like a real UAS.
 */
import { MemoryLevel } from 'memory-level'
import type { Destination, Source } from '@sipring/interface'
import { parseMessage, serialize, SipRequest, type SipMessage, type SipResponse } from '@sipring/sip'
import { LevelAccountStore, type AccountDb } from '@sipring/auth'
import type { GroupForking } from '@sipring/proxy'
import type { PeerId } from '@sipring/overlay'
import { createSuperNode, type SuperNode } from '../src/index.js'
import { ownerResolver } from '../src/fork.js'
import {
  cluster, converged, nodeAddress, nodeComponents, phone, registerAndWait, reply, request, responses, send, settle, until,
  type Cluster, type Phone
} from './overlay-helpers.js'

export interface GroupDef { aor: string, members: string[], policy?: 'ring-all' | 'hunt' }

export interface ForkInit {
  forking?: GroupForking
  memberTimeout?: number
  maxBranches?: number
  forkTimeout?: number
  /** Nodes reach each other over UDP (a silent peer is then only noticed by the fork timeout). */
  udpRoutes?: boolean
  forkOwnMembers?: 'here' | 'replica'
  /** Digest authentication on every node (shared secret); members' addresses (10.9.0.x) trusted. */
  auth?: boolean
}

export interface ForkCluster extends Cluster {
  accounts: LevelAccountStore
  ids: PeerId[]
}

/** `n` super nodes n1..n<n>, joined and converged, with `groups` in their shared accounts store. */
export async function forkCluster (seed: number, n: number, groups: GroupDef[], init: ForkInit = {}): Promise<ForkCluster> {
  const c = cluster(seed)
  const accounts = new LevelAccountStore({ db: new MemoryLevel<string, any>() as unknown as AccountDb, clock: c.clock })
  for (const g of groups) await settle(c, accounts.addGroup(g))
  const fc: ForkCluster = { ...c, accounts, ids: [] }
  for (let i = 1; i <= n; i++) {
    const id = `n${i}`
    await addForkNode(fc, id, i === 1 ? [] : ['n1'], init)
    fc.ids.push(id)
  }
  if (await until(c, () => converged(c), 30_000) < 0) throw new Error('cluster did not converge')
  if (await until(c, () => [...c.nodes.values()].every(x => [...c.nodes.keys()].every(o => x.replication!.nodeRoute(o) !== undefined)), 10_000) < 0) throw new Error('node records not learnt')
  return fc
}

async function addForkNode (c: ForkCluster, id: PeerId, seeds: PeerId[], init: ForkInit): Promise<SuperNode> {
  const node = createSuperNode({ ...nodeComponents(c, id), accounts: c.accounts }, {
    domains: ['example.org'],
    minExpires: 10,
    ...(init.auth === true ? { auth: { enabled: true, secret: new Uint8Array(32).fill(7), trustedSources: Array.from({ length: 200 }, (_, i) => `10.9.0.${i + 1}`) } } : {}),
    ...(init.forking !== undefined ? { groupForking: init.forking } : {}),
    ...(init.forkTimeout !== undefined ? { forkTimeout: init.forkTimeout } : {}),
    ...(init.forkOwnMembers !== undefined ? { forkOwnMembers: init.forkOwnMembers } : {}),
    groups: { ...(init.memberTimeout !== undefined ? { memberTimeout: init.memberTimeout } : {}), ...(init.maxBranches !== undefined ? { maxBranches: init.maxBranches } : {}) },
    overlay: {
      seeds,
      verifyDelay: 500,
      ...(init.udpRoutes === true ? { sipUri: `sip:${nodeAddress(id)}:5060` } : {}),
      node: {
        vnodes: 64,
        membership: { protocolPeriod: 500, pingTimeout: 100, suspicionMult: 3, syncInterval: 5000 },
        store: { antiEntropyInterval: 5000, requestTimeout: 300 }
      }
    }
  })
  await settle(c, node.start())
  c.nodes.set(id, node)
  return node
}

export function node (c: Cluster, id: PeerId): SuperNode { return c.nodes.get(id)! }

/** Owners of `aor` as node `id` sees them (ring order, live only). */
export function ownersAt (c: Cluster, id: PeerId, aor: string): PeerId[] {
  return ownerResolver(node(c, id).overlay!)(aor)
}

export type Behaviour = 'ring' | 'answer' | 'busy' | 'decline'

/** A member UA: rings on INVITE (180), then per `behaviour`; CANCEL → 200 + 487. */
export class Member {
  readonly invites: Array<{ msg: SipRequest, source: Source }> = []
  readonly cancels: SipRequest[] = []
  behaviour: Behaviour = 'ring'
  constructor (readonly p: Phone) {
    p.auto = false
    p.t.on('message', (data, source) => {
      const msg = parseMessage(data)
      if (!(msg instanceof SipRequest)) return
      const back: Destination = { protocol: source.protocol, address: source.address, port: source.port, ...(source.connectionId !== undefined ? { connectionId: source.connectionId } : {}) }
      if (msg.method === 'INVITE') {
        this.invites.push({ msg, source })
        void p.t.send(serialize(reply(p, msg, 180, 'Ringing')), back)
        const final = { answer: 200, busy: 486, decline: 603, ring: 0 }[this.behaviour]
        if (final > 0) void p.t.send(serialize(reply(p, msg, final, final === 200 ? 'OK' : final === 486 ? 'Busy Here' : 'Decline')), back)
      } else if (msg.method === 'CANCEL') {
        this.cancels.push(msg)
        void p.t.send(serialize(reply(p, msg, 200, 'OK')), back)
        const inv = this.invites.find(i => i.msg.get('via') === msg.get('via'))
        if (inv !== undefined) void p.t.send(serialize(reply(p, inv.msg, 487, 'Request Terminated')), back)
      } else if (msg.method === 'BYE') {
        void p.t.send(serialize(reply(p, msg, 200, 'OK')), back)
      }
    })
  }

  get user (): string { return this.p.user }
  /** Answer the last INVITE now. */
  async answer (status = 200): Promise<void> {
    const inv = this.invites[this.invites.length - 1]!
    const res = reply(this.p, inv.msg, status, status === 200 ? 'OK' : 'Busy Here')
    await this.p.t.send(serialize(res), { protocol: inv.source.protocol, address: inv.source.address, port: inv.source.port, ...(inv.source.connectionId !== undefined ? { connectionId: inv.source.connectionId } : {}) })
  }
}

let host = 0
/** Register member `user` attached to node `at` (UDP, or TCP behind NAT when `nat`). */
export async function member (c: Cluster, user: string, at: PeerId, nat = false): Promise<Member> {
  host++
  const address = `10.9.${Math.floor(host / 250)}.${(host % 250) + 1}`
  const p = await phone(c, user, address, at, nat ? 'tcp' : 'udp', nat ? '192.168.1.2' : address)
  const status = await registerAndWait(c, p)
  if (status !== 200) throw new Error(`${user} could not register at ${at}: ${status}`)
  return new Member(p)
}

export async function caller (c: Cluster, at: PeerId, address?: string): Promise<Phone> {
  host++
  const p = await phone(c, 'caller', address ?? `10.9.${Math.floor(host / 250)}.${(host % 250) + 1}`, at, 'udp')
  p.auto = false
  return p
}

/** Send an INVITE from `p` to `uri` (extra headers allowed); returns it. */
export async function call (p: Phone, uri: string, extra: Array<[string, string]> = []): Promise<SipRequest> {
  const inv = request(p, 'INVITE', uri, uri, [['contact', `<${p.contact}>`], ...extra])
  await send(p, inv)
  return inv
}

export async function cancel (p: Phone, inv: SipRequest): Promise<void> {
  const cl = new SipRequest('CANCEL', inv.uri)
  for (const h of ['via', 'from', 'to', 'call-id']) cl.append(h, inv.get(h)!)
  cl.append('max-forwards', '70')
  cl.append('cseq', inv.get('cseq')!.replace('INVITE', 'CANCEL'))
  await send(p, cl)
}

export function finals (p: Phone, callId?: string): number[] {
  return responses(p, 'INVITE').filter(r => r.status >= 200 && (callId === undefined || r.get('call-id') === callId)).map(r => r.status)
}

export function provisionals (p: Phone): SipResponse[] {
  return responses(p, 'INVITE').filter(r => r.status > 100 && r.status < 200)
}

export async function shutdown (c: Cluster): Promise<void> {
  for (const id of [...c.nodes.keys()]) {
    const n = c.nodes.get(id)!
    c.hub.crash(id)
    await settle(c, n.stop({ leave: false }))
    c.nodes.delete(id)
  }
}

export type { SipMessage }
