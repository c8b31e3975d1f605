import type { Binding, Destination, Logger, Source, Timer } from '@sipring/interface'
import { silentLogger } from '@sipring/interface'
import {
  aorOf as defaultAorOf, createResponse, slimMessage, getTag, parseCSeq, parseNameAddr, parseUri, parseVia, SipResponse, hostEquals, isIPv4, isIPv6
} from '@sipring/sip'
import type { SipRequest, SipUri, Via } from '@sipring/sip'
import { finalizeBest, selectBest } from './best.js'
import { cameFrom, destOf, FlowTokens } from './flow.js'
import {
  BRANCH_MARK, isIpLiteral, loopHash, recordRouteFor, responseDestination, sameEndpoint, SelfMatcher
} from './net.js'
import { checkGroupLimits, DEFAULT_GROUP_LIMITS, expandGroup, planGroupTargets } from './groups.js'
import type { GroupExpansion, GroupLimits } from './groups.js'
import {
  chunkMembers, FORK_FROM_PARAM, FORK_HEADER, FORK_MAX_PARAM, FORK_ROUTE_VALUE, formatForkHeader, parseForkMembers, partitionByOwner, splitBudget
} from './fork.js'
import type {
  ClientContextLike, LocationLike, Proxy, ProxyLimits, ProxyOptions, ProxyStats, ProxyTimers, ServerTxLike
} from './types.js'

export const DEFAULT_LIMITS: ProxyLimits = { maxBranches: 16, maxForwards: 70 }
export const DEFAULT_TIMERS: ProxyTimers = { timerC: 181_000, cancelTimeout: 32_000, groupTimeout: 30_000, forkTimeout: 2_000 }

/** Methods that create a dialog and therefore get a Record-Route (RFC 3261 §16.6 step 4). */
const DIALOG_CREATING = new Set(['INVITE', 'SUBSCRIBE', 'REFER', 'NOTIFY'])
export const ALLOW = 'INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, PRACK'
const MAX_MAX_FORWARDS = 255

/** One forwarding target of the target set (RFC 3261 §16.5). */
interface Target {
  uri: string
  /** Route values to put on top (Path of the binding, RFC 3327). */
  routes: string[]
  /** Fixed destination (binding `received` / flow); otherwise resolved from Route or Request-URI. */
  dest?: Destination
  /** q-value of the binding (1 for other targets), for q-ordered / sequential forking. */
  q: number
  /** Extra headers for this branch (the `Sipring-Fork` list of a fork request). */
  headers?: Array<[string, string]>
  /** A fork request to an owner node (distributed group forking). */
  fork?: ForkInfo
}

/** A fork request's member set, its owner node, the owners already tried for it and its branch budget. */
interface ForkInfo {
  owner: string
  members: string[]
  tried: Set<string>
  budget: number
}

interface Branch {
  index: number
  ctx?: ClientContextLike
  done: boolean
  provisional: boolean
  cancelled: boolean
  timerC?: Timer
  cancelTimer?: Timer
  /** The branch of the Via the stack put on this branch's request. */
  viaBranch?: string
  /** Index of the target group (forking step) this branch belongs to. */
  step: number
  /** Fork request: its target (for re-resolution) and its no-provisional timer. */
  fork?: ForkInfo
  forkTimer?: Timer
}

/** Response context of one proxied request (RFC 3261 §16.7). */
interface Context {
  req: SipRequest
  tx: ServerTxLike
  invite: boolean
  branches: Branch[]
  finals: SipResponse[]
  /** A final response went upstream (2xx for INVITE: more 2xx may still follow). */
  finalSent: boolean
  finalWas2xx: boolean
  sixxx: boolean
  callerCancelled: boolean
  closed: boolean
  /** Target groups tried one after the other (one group = parallel forking). */
  groups: Target[][]
  nextGroup: number
  groupTimer?: Timer
  /** Group call (hunt): ring time per step instead of `timers.groupTimeout`. */
  stepTimeout?: number
  fwd: SipRequest
  hash: string
  /** Fork re-resolutions in progress (their branches are not added yet): the context may not complete. */
  pending: number
  /**
   * A fork request we serve: only the first provisional of each status code goes upstream (plus every
   * reliable one), so the originating node does not relay one 180 per member.
   */
  forwardedProvisionals?: Set<number>
}

interface Checked { raw: string[], vias: Via[] }

interface Preprocessed {
  flow?: { a: Destination, b: Destination }
  ruri?: SipUri
  /** The request came from a peer super node for our local bindings only (our Route had `sr=local`). */
  peer: boolean
  /** Our Route had `sr=fork` (a fork request, if the source is a trusted peer), with its `fork-max`. */
  fork: boolean
  forkMax?: number
  /** `fork-from`: the node that sent the fork request (its attached bindings are left out). */
  forkFrom?: string
}

/** Route parameter marking a request forwarded by a peer node to the binding's attachment node. */
const PEER_PARAM = 'sr'

class Reject extends Error {
  constructor (readonly status: number, readonly reason: string, readonly extra: Array<[string, string]> = []) {
    super(`${status} ${reason}`)
  }
}

/**
 * RFC 3261 §16 stateful proxy: validation, Route processing, target set from the location service,
 * parallel forking with a response context, stateless ACK-for-2xx and stray-response forwarding.
 */
export function createProxy (opts: ProxyOptions): Proxy {
  const { stack, location, clock, rng } = opts
  const logger: Logger = (opts.logger ?? silentLogger).child({ component: 'proxy', ...(opts.nodeId !== undefined ? { node: opts.nodeId } : {}) })
  const domains = new Set((opts.domains ?? []).map(d => d.toLowerCase()))
  const recordRoute = opts.recordRoute ?? true
  const aorOf = opts.aorOf ?? ((u: string) => defaultAorOf(u))
  const limits: ProxyLimits = { ...DEFAULT_LIMITS, ...opts.limits }
  const timers: ProxyTimers = { ...DEFAULT_TIMERS, ...opts.timers }
  const forking = opts.forking ?? 'parallel'
  const groupLimits: GroupLimits = { ...DEFAULT_GROUP_LIMITS, ...opts.groupLimits }
  checkGroupLimits(groupLimits)
  if (!Number.isInteger(limits.maxBranches) || limits.maxBranches < 1) throw new RangeError(`limits.maxBranches must be an integer >= 1, got ${String(limits.maxBranches)}`)
  if (!Number.isInteger(limits.maxForwards) || limits.maxForwards < 1 || limits.maxForwards > MAX_MAX_FORWARDS) throw new RangeError(`limits.maxForwards must be an integer in 1..255, got ${String(limits.maxForwards)}`)
  for (const [k, v] of Object.entries(timers)) {
    if (!Number.isFinite(v) || v < 0 || (v === 0 && k !== 'groupTimeout')) throw new RangeError(`timers.${k} must be a positive number of ms, got ${String(v)}`)
  }
  if (!['parallel', 'q', 'sequential'].includes(forking)) throw new RangeError(`forking must be parallel, q or sequential, got ${String(forking)}`)
  const groupForking = opts.groupForking ?? 'centralized'
  if (!['centralized', 'distributed'].includes(groupForking)) throw new RangeError(`groupForking must be centralized or distributed, got ${String(groupForking)}`)
  /** Distributed group forking needs to know the owners and how to reach them. */
  const distributed = groupForking === 'distributed' && opts.owners !== undefined && opts.nodeRoute !== undefined
  const supported = new Set((opts.supported ?? []).map(s => s.toLowerCase()))
  const self = new SelfMatcher(() => stack.transports.map(t => t.local), opts.aliases ?? [])
  const flows = new FlowTokens(rng.bytes(32))
  /** Branch (as put in the Via by the stack) → loop hash, for the branches still running. */
  const liveBranches = new Map<string, string>()

  const st: ProxyStats = {
    requestsIn: 0,
    acksIn: 0,
    strayResponsesIn: 0,
    branchResponsesIn: 0,
    branches: 0,
    cancelsSent: 0,
    responsesForwarded: 0,
    localResponses: 0,
    statelessSent: 0,
    dropped: 0,
    loopsDetected: 0,
    timerCFired: 0,
    activeContexts: 0,
    synthesized: 0,
    messagesIn: 0,
    messagesOut: 0,
    forkRequests: 0,
    forksAccepted: 0,
    forksRejected: 0,
    forkRetries: 0,
    forkFallbacks: 0
  }

  // ------------------------------------------------------------ helpers

  function reply (tx: ServerTxLike, req: SipRequest, status: number, reason?: string, extra: Array<[string, string]> = []): void {
    const to = req.get('to')
    const tag = status > 100 && to !== undefined && getTag(to) === undefined ? rng.token(10) : undefined
    const res = createResponse(req, status, reason, tag)
    for (const [n, v] of extra) res.append(n, v)
    st.localResponses++
    try { tx.respond(res) } catch (err) { logger.warn({ err, status }, 'respond failed') }
  }

  function hasConnection (id: string): boolean {
    for (const t of stack.transports) if (t.hasConnection(id)) return true
    return false
  }

  function isLocalHost (u: SipUri): boolean {
    if (self.uri(u)) return true
    if (domains.size === 0) return !isIpLiteral(u.host)
    return domains.has(u.host.toLowerCase())
  }

  function uriOfRoute (v: string): SipUri {
    return parseUri(parseNameAddr(v).uri)
  }

  /** §16.3 step 1: the headers we need must be there and readable. */
  function checkSyntax (req: SipRequest): Checked {
    const raw = req.getAll('via')
    if (raw.length === 0) throw new Reject(400, 'Missing Via header')
    const vias: Via[] = []
    for (const v of raw) {
      try { vias.push(parseVia(v)) } catch { throw new Reject(400, 'Malformed Via header') }
    }
    for (const h of ['from', 'to', 'call-id', 'cseq']) {
      if (!req.has(h)) throw new Reject(400, `Missing ${h === 'call-id' ? 'Call-ID' : h === 'cseq' ? 'CSeq' : h[0]!.toUpperCase() + h.slice(1)} header`)
    }
    for (const h of ['from', 'to']) {
      try { parseNameAddr(req.get(h)!) } catch { throw new Reject(400, `Malformed ${h === 'from' ? 'From' : 'To'} header`) }
    }
    let cseq
    try { cseq = parseCSeq(req.get('cseq')!) } catch { throw new Reject(400, 'Malformed CSeq header') }
    if (cseq.method !== req.method) throw new Reject(400, 'CSeq method mismatch')
    for (const r of req.getAll('route')) {
      try { parseNameAddr(r) } catch { throw new Reject(400, 'Malformed Route header') }
    }
    return { raw, vias }
  }

  /** Max-Forwards value (added as limits.maxForwards when absent, capped to it). */
  function maxForwardsOf (req: SipRequest): number {
    const raw = req.get('max-forwards')
    if (raw === undefined) return limits.maxForwards
    if (!/^\d{1,3}$/.test(raw.trim())) throw new Reject(400, 'Invalid Max-Forwards')
    const n = Number(raw.trim())
    if (n > MAX_MAX_FORWARDS) throw new Reject(400, 'Invalid Max-Forwards')
    return Math.min(n, limits.maxForwards)
  }

  /** §16.3 step 4: a Via of ours whose branch is the hash this request would get → loop. */
  function isLoop (req: SipRequest, { raw, vias }: Checked): boolean {
    for (let i = 0; i < vias.length; i++) {
      const v = vias[i]!
      if (v.branch === undefined || !self.via(v)) continue
      let hash: string | undefined
      if (v.branch.startsWith(BRANCH_MARK)) {
        const dot = v.branch.indexOf('.', BRANCH_MARK.length)
        hash = v.branch.slice(BRANCH_MARK.length, dot < 0 ? undefined : dot)
      } else {
        hash = liveBranches.get(v.branch) // a stack that chose its own branch
      }
      if (hash !== undefined && hash === loopHash(req, raw[i + 1])) return true
    }
    return false
  }

  /**
   * §16.4 Route processing on the working copy: strict-router previous hop (Request-URI is a
   * Record-Route URI of ours → take the last Route), then remove every top Route that is ours.
   * Returns the decoded flow token of our Route, when there was one.
   */
  function preprocessRoutes (fwd: SipRequest): Preprocessed {
    let ruri: SipUri | undefined
    try { ruri = parseUri(fwd.uri) } catch { ruri = undefined }
    let flow: { a: Destination, b: Destination } | undefined
    let peer = false
    let fork = false
    let forkMax: number | undefined
    let forkFrom: string | undefined
    if (ruri !== undefined && ruri.params.has('lr') && self.uri(ruri) && fwd.has('route')) {
      const routes = fwd.getAll('route')
      const last = routes.pop()!
      if (ruri.user !== undefined) flow = flows.decode(ruri.user)
      fwd.remove('route')
      for (const r of routes) fwd.append('route', r)
      fwd.uri = parseNameAddr(last).uri
      try { ruri = parseUri(fwd.uri) } catch { ruri = undefined }
    }
    for (;;) {
      const top = fwd.getAll('route')[0]
      if (top === undefined) break
      let u: SipUri
      try { u = uriOfRoute(top) } catch { throw new Reject(400, 'Malformed Route header') }
      if (!self.uri(u)) break
      if (u.user !== undefined) flow = flows.decode(u.user) ?? flow
      const sr = u.params.get(PEER_PARAM)
      if (sr === 'local') peer = true
      if (sr === FORK_ROUTE_VALUE) {
        fork = true
        const m = u.params.get(FORK_MAX_PARAM)
        if (typeof m === 'string' && /^\d{1,6}$/.test(m)) forkMax = Number(m)
        const f = u.params.get(FORK_FROM_PARAM)
        if (typeof f === 'string' && f.length > 0 && f.length <= 256) forkFrom = f
      }
      fwd.shift('route')
    }
    const out: Preprocessed = { peer, fork }
    if (forkMax !== undefined) out.forkMax = forkMax
    if (forkFrom !== undefined) out.forkFrom = forkFrom
    if (flow !== undefined) out.flow = flow
    if (ruri !== undefined) out.ruri = ruri
    return out
  }

  /** §16.6 step 6: a strict next hop (top Route without `lr`) → Request-URI moves to the end of Route. */
  function postprocessRoutes (req: SipRequest): boolean {
    const top = req.getAll('route')[0]
    if (top === undefined) return false
    let u: SipUri
    try { u = uriOfRoute(top) } catch { throw new Reject(400, 'Malformed Route header') }
    if (u.params.has('lr')) return false
    req.append('route', `<${req.uri}>`)
    req.uri = parseNameAddr(top).uri
    req.shift('route')
    return true
  }

  /** Next-hop destination of a prepared request: fixed, top Route, or Request-URI. */
  async function nextHop (req: SipRequest, fixed: Destination | undefined, strict: boolean): Promise<Destination> {
    if (fixed !== undefined) return fixed
    const top = strict ? undefined : req.getAll('route')[0]
    const uri = top !== undefined ? parseNameAddr(top).uri : req.uri
    return await stack.resolveTarget(uri)
  }

  /**
   * Where an in-dialog request that came through our Record-Route (with a flow token) goes: the other
   * side of the dialog when it came from one side — its live connection, its UDP address, or (TCP/TLS
   * connection closed) undefined = route on the Request-URI; a WebSocket side that is gone cannot be
   * reached at all ('failed').
   */
  function flowTarget (flow: { a: Destination, b: Destination } | undefined, source: Source): Destination | 'failed' | undefined {
    if (flow === undefined) return undefined
    const fromA = cameFrom(source, flow.a)
    if (!fromA && !cameFrom(source, flow.b)) return undefined
    const other = fromA ? flow.b : flow.a
    if (other.connectionId === undefined || hasConnection(other.connectionId)) return other
    if (other.protocol === 'udp') return { protocol: other.protocol, address: other.address, port: other.port }
    return other.protocol === 'ws' || other.protocol === 'wss' ? 'failed' : undefined
  }

  /** A binding held by another super node (its `received` / connection means nothing here). */
  function isForeign (b: Binding): boolean {
    return b.node !== undefined && opts.nodeId !== undefined && b.node !== opts.nodeId
  }

  /** Destination for a binding: its live flow/connection, its NAT address, or none (resolve). */
  function bindingDest (b: Binding): Destination | 'flow-failed' | undefined {
    const r = b.received
    if (r === undefined) return undefined
    if (r.connectionId !== undefined) {
      if (hasConnection(r.connectionId)) return r
      // RFC 5626 flow gone, or a WebSocket client (nobody can connect to it): unreachable
      if (b.instance !== undefined || b.regId !== undefined || r.protocol === 'ws' || r.protocol === 'wss') return 'flow-failed'
      return undefined // plain TCP/TLS client whose connection closed: connect to its Contact
    }
    if (r.protocol !== 'udp' || b.path.length > 0) return undefined
    // UDP: like Kamailio's nathelper (fix_nated_register), the source address is used only when the
    // client is behind NAT, i.e. its Contact does not name the address the REGISTER came from (a private
    // address, or a host name). A Contact on the source IP is used as registered, so a third-party
    // registration (Contact on another port than the sending socket) reaches the registered socket.
    return contactOnSource(b.contact, r.address) ? undefined : { protocol: r.protocol, address: r.address, port: r.port }
  }

  /**
   * Targets for an AOR's bindings (at most `max`): `uri` is the Request-URI kept on a target reached
   * through the binding's attachment node (overlay), the contact otherwise.
   */
  function bindingTargets (bindings: Binding[], peer: boolean, uri: string, max: number): { targets: Target[], flowFailed: number } {
    const targets: Target[] = []
    let flowFailed = 0
    const viaNode = new Set<string>()
    for (const b of bindings) {
      if (targets.length >= max) break
      const foreign = isForeign(b)
      if (foreign) {
        if (peer) continue // a peer sent it for our own bindings only
        const nodeUri = opts.nodeRoute?.(b.node!)
        if (nodeUri !== undefined) {
          // the client is attached to another super node: let that node reach it (its flows)
          if (!viaNode.has(b.node!)) {
            viaNode.add(b.node!)
            targets.push({ uri, routes: [`<${nodeUri};lr;${PEER_PARAM}=local>`], q: b.q })
          }
          continue
        }
      }
      const d = foreign ? undefined : bindingDest(b) // received/connection ids are node-local
      if (d === 'flow-failed') { flowFailed++; continue }
      const t: Target = { uri: b.contact, routes: [...b.path], q: b.q }
      if (d !== undefined) t.dest = d
      targets.push(t)
    }
    return { targets, flowFailed }
  }

  /**
   * Group call, centralized (the baseline for distributed forking): every member's bindings become targets here, one
   * step per hunt member (or one step for ring-all); a contact is forked to once; at most
   * `groupLimits.maxBranches` branches (members beyond are dropped); nobody reachable → 480.
   */
  async function groupSteps (g: GroupExpansion, peer: boolean): Promise<Target[][]> {
    const steps = await localMemberSteps(g.steps, groupLimits.maxBranches, peer, g.aor)
    if (steps.length === 0) throw new Reject(480, 'Temporarily Unavailable')
    logger.debug({ group: g.aor, policy: g.policy, steps: steps.length }, 'group call')
    return steps
  }

  /** Members' bindings → targets per step, here (a contact once, at most `maxBranches`); empty steps dropped. */
  async function localMemberSteps (
    steps: readonly string[][], maxBranches: number, peer: boolean, label: string, exclude?: (b: Binding) => boolean, lookup: LocationLike['lookup'] = a => location.lookup(a)
  ): Promise<Target[][]> {
    const plan = await planGroupTargets(
      steps,
      async m => {
        try {
          let bs = await lookup(m)
          if (exclude !== undefined) bs = bs.filter(b => !exclude(b))
          return bindingTargets(bs, peer, m, limits.maxBranches).targets // per member as for a direct call
        } catch (err) {
          logger.debug({ err, member: m }, 'group member lookup failed')
          return []
        }
      },
      t => t.uri,
      maxBranches
    )
    if (plan.dropped.length > 0) logger.warn({ group: label, dropped: plan.dropped, maxBranches }, 'group call: members dropped (branch limit)')
    return plan.steps
  }

  // ------------------------------------------------------------ distributed group forking

  const selfId = opts.nodeId ?? '\u0000self'
  const delegateOwn = (opts.forkOwnMembers ?? 'replica') === 'replica'
  if (!['here', 'replica'].includes(opts.forkOwnMembers ?? 'replica')) throw new RangeError(`forkOwnMembers must be here or replica, got ${String(opts.forkOwnMembers)}`)

  /** The node that forks to member `m`: its first live owner not in `tried` that we can reach, else this node. */
  function pickOwner (m: string, tried: ReadonlySet<string>): string {
    let list: readonly string[] = []
    try { list = opts.owners?.(m) ?? [] } catch (err) { logger.debug({ err, member: m }, 'owners lookup failed') }
    for (const o of list) {
      if (tried.has(o)) continue
      if (o === selfId) {
        if (!delegateOwn) return selfId
        continue // 'replica': our own members go to their next owner; we fork to them only as a last resort
      }
      if (opts.nodeRoute?.(o) !== undefined) return o
    }
    return selfId
  }

  /** This node forks to the members' bindings attached here itself (and says so in its fork requests). */
  const attachedHere = opts.localLookup !== undefined && opts.nodeId !== undefined && /^[A-Za-z0-9._~!$*+-]{1,256}$/.test(opts.nodeId)
  const fromParam = attachedHere ? `;${FORK_FROM_PARAM}=${selfId}` : ''

  /** Fork requests to `owner` for `members` (several when the member list does not fit one header). */
  function forkTargets (owner: string, members: string[], tried: Set<string>, budget: number, groupUri: string): Target[] {
    const uri = opts.nodeRoute?.(owner)
    if (uri === undefined) return []
    const chunks = chunkMembers(members)
    const budgets = splitBudget(budget, chunks.map(c => c.length))
    return chunks.map((c, i) => ({
      uri: groupUri,
      routes: [`<${uri};lr;${PEER_PARAM}=${FORK_ROUTE_VALUE};${FORK_MAX_PARAM}=${budgets[i]!}${fromParam}>`],
      q: 1,
      headers: [[FORK_HEADER, formatForkHeader(c)]],
      fork: { owner, members: c, tried, budget: budgets[i]! }
    }))
  }

  /**
   * Group call, distributed: members partitioned by owner node; one fork request per owner and step,
   * members we own forked here; every member counts at least one branch of `groupLimits.maxBranches`
   * (members beyond are dropped), the rest of the budget is shared in proportion.
   */
  async function distributedSteps (g: GroupExpansion, groupUri: string): Promise<Target[][]> {
    let n = 0
    const dropped: string[] = []
    const steps = g.steps.map(step => step.filter(m => {
      if (n < groupLimits.maxBranches) { n++; return true }
      dropped.push(m)
      return false
    }))
    if (dropped.length > 0) logger.warn({ group: g.aor, dropped, maxBranches: groupLimits.maxBranches }, 'group call: members dropped (branch limit)')
    const parts: Array<{ step: number, owner: string, members: string[] }> = []
    steps.forEach((step, i) => {
      for (const [owner, members] of partitionByOwner(step, m => pickOwner(m, new Set()))) parts.push({ step: i, owner, members })
    })
    const budgets = splitBudget(groupLimits.maxBranches, parts.map(p => p.members.length))
    const out: Target[][] = steps.map(() => [])
    await Promise.all(parts.map(async (p, i) => {
      if (p.owner === selfId) {
        out[p.step]!.push(...(await localMemberSteps([p.members], budgets[i]!, false, g.aor)).flat())
        return
      }
      // members owned elsewhere but attached here: forked here, left out by the owner (fork-from)
      let here = 0
      if (attachedHere) {
        const local = (await localMemberSteps([p.members], budgets[i]!, false, g.aor, undefined, a => opts.localLookup!(a))).flat()
        here = local.length
        out[p.step]!.push(...local)
      }
      out[p.step]!.push(...forkTargets(p.owner, p.members, new Set(), Math.max(p.members.length, budgets[i]! - here), groupUri))
    }))
    const result = out.filter(s => s.length > 0)
    if (result.length === 0) throw new Reject(480, 'Temporarily Unavailable')
    logger.debug({ group: g.aor, policy: g.policy, steps: result.length, forks: parts.filter(p => p.owner !== selfId).length }, 'group call (distributed)')
    return result
  }

  /**
   * A fork request failed before any provisional (transport error, timeout, 503): its members go to
   * their next live owner not tried yet (one fork request per new owner), or are forked here.
   * The new branches join the failed one's step.
   */
  function refork (ctx: Context, b: Branch, f: ForkInfo): void {
    st.forkRetries++
    ctx.pending++
    const step = b.step
    void (async () => {
      try {
        const alive = (): boolean => !ctx.closed && !ctx.finalSent && !ctx.callerCancelled && !ctx.sixxx && ctx.nextGroup - 1 === step
        if (!alive()) return
        const tried = new Set([...f.tried, f.owner])
        const parts = [...partitionByOwner(f.members, m => pickOwner(m, tried))]
        const budgets = splitBudget(f.budget, parts.map(([, ms]) => ms.length))
        const targets: Target[] = []
        for (let i = 0; i < parts.length; i++) {
          const [owner, ms] = parts[i]!
          if (owner === selfId) {
            st.forkFallbacks += ms.length
            // the bindings attached here were forked already when the call started
            targets.push(...(await localMemberSteps([ms], budgets[i]!, false, ctx.req.uri, attachedHere ? b => !isForeign(b) : undefined)).flat())
          } else {
            targets.push(...forkTargets(owner, ms, tried, budgets[i]!, ctx.fwd.uri))
          }
        }
        logger.info({ failed: f.owner, members: f.members.length, to: parts.map(([o]) => o === selfId ? 'self' : o) }, 'fork request failed: members re-resolved')
        if (!alive()) return
        if (targets.length === 0) {
          // nobody left to try for these members: "unavailable" unless another branch can still tell more
          if (ctx.branches.every(o => o.done)) ctx.finals.push(synth(ctx.req, 480, 'Temporarily Unavailable'))
          return
        }
        await addBranches(ctx, targets, step)
      } catch (err) {
        logger.warn({ err }, 're-fork failed')
      } finally {
        ctx.pending--
        checkComplete(ctx)
      }
    })()
  }

  function contactOnSource (contact: string, address: string): boolean {
    try {
      const host = parseUri(contact).host
      return (isIPv4(host) || isIPv6(host)) && hostEquals(host, address)
    } catch {
      return false
    }
  }

  function optionsReply (tx: ServerTxLike, req: SipRequest): void {
    reply(tx, req, 200, 'OK', [['allow', ALLOW], ['accept', 'application/sdp'], ['supported', ['path', 'outbound', ...supported].join(', ')]])
  }

  /** Request-URI designating this node (our address, or one of our domains) with no user part. */
  function isSelfNoUser (ruri: SipUri | undefined): boolean {
    return ruri !== undefined && ruri.user === undefined && ruri.scheme !== 'tel' &&
      (self.uri(ruri) || domains.has(ruri.host.toLowerCase()))
  }

  // ------------------------------------------------------------ requests

  async function handleRequest (req: SipRequest, tx: ServerTxLike): Promise<void> {
    st.requestsIn++
    try {
      await proxyRequest(req, tx)
    } catch (err) {
      if (err instanceof Reject) { reply(tx, req, err.status, err.reason, err.extra); return }
      logger.error({ err, method: req.method, callId: req.get('call-id') }, 'proxy failure')
      try { reply(tx, req, 500, 'Server Internal Error') } catch { /* ignore */ }
    }
  }

  async function proxyRequest (req: SipRequest, tx: ServerTxLike): Promise<void> {
    if (req.method === 'ACK') { await handleAck(req, tx.source); return }
    if (req.method === 'CANCEL') throw new Reject(481, 'Call/Transaction Does Not Exist')

    // §16.3 validation
    const checked = checkSyntax(req)
    const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(req.uri)?.[1]?.toLowerCase()
    if (scheme === undefined) throw new Reject(400, 'Malformed Request-URI')
    let ruri: SipUri | undefined
    if (scheme === 'sip' || scheme === 'sips') {
      try { ruri = parseUri(req.uri) } catch { throw new Reject(400, 'Malformed Request-URI') }
    } else if (!req.has('route') || scheme !== 'tel') {
      throw new Reject(416, 'Unsupported URI Scheme')
    }
    const mf = maxForwardsOf(req)
    if (mf === 0) {
      if (req.method === 'OPTIONS' && isSelfNoUser(ruri)) { optionsReply(tx, req); return }
      throw new Reject(483, 'Too Many Hops')
    }
    if (isLoop(req, checked)) { st.loopsDetected++; throw new Reject(482, 'Loop Detected') }
    const unsupported = req.getAll('proxy-require').filter(t => !supported.has(t.toLowerCase()))
    if (unsupported.length > 0) throw new Reject(420, 'Bad Extension', [['unsupported', unsupported.join(', ')]])

    const hash = loopHash(req, checked.raw[0])
    const fwd = req.clone()
    fwd.set('max-forwards', String(mf - 1))

    // §16.4 Route processing
    const pre = preprocessRoutes(fwd)
    ruri = pre.ruri
    const routed = fwd.has('route')

    // distributed group forking: a member list is honoured only in a fork request (our Route with
    // sr=fork) that came from a known peer super node and ends here; otherwise the header goes
    let forkList: string[] | undefined
    if (fwd.has(FORK_HEADER)) {
      if (pre.fork && !routed && opts.forkPeer?.(tx.source) === true) {
        const max = Math.min(groupLimits.maxBranches, pre.forkMax ?? Infinity)
        forkList = parseForkMembers(fwd.getAll(FORK_HEADER), aorOf, max).members
        if (forkList.length === 0) throw new Reject(400, 'Bad Sipring-Fork header')
        st.forksAccepted++
      } else {
        st.forksRejected++
        logger.info({ source: tx.source.address, callId: req.get('call-id') }, 'Sipring-Fork header not honoured (not a fork request from a peer node): removed')
      }
      fwd.remove(FORK_HEADER)
    }

    // the response context exists from here on so that a CANCEL during the lookup is seen
    const ctx: Context = {
      req, tx, invite: req.method === 'INVITE', branches: [], finals: [], finalSent: false,
      finalWas2xx: false, sixxx: false, callerCancelled: false, closed: false, groups: [], nextGroup: 0, fwd, hash, pending: 0
    }
    st.activeContexts++
    if (ctx.invite) tx.onCancel = () => { onCallerCancel(ctx) }
    try {
      // §16.5 target set
      const targets: Target[] = []
      let steps: Target[][] | undefined // group call: targets per step, set by groupSteps()
      const viaFlow = routed ? undefined : flowTarget(pre.flow, tx.source)
      if (viaFlow === 'failed') throw new Reject(430, 'Flow Failed') // RFC 5626 §5.3: that side's flow is gone
      if (routed) {
        targets.push({ uri: fwd.uri, routes: [], q: 1 })
      } else if (viaFlow !== undefined) {
        // in-dialog request through our Record-Route: back over the dialog's other side
        targets.push({ uri: fwd.uri, routes: [], dest: viaFlow, q: 1 })
      } else if (ruri === undefined) {
        throw new Reject(416, 'Unsupported URI Scheme')
      } else if (isSelfNoUser(ruri)) {
        if (req.method === 'OPTIONS') { optionsReply(tx, req); closeCtx(ctx); return }
        throw new Reject(404, 'Not Found')
      } else if (ruri.user !== undefined && isLocalHost(ruri)) {
        let aor: string
        try { aor = aorOf(fwd.uri) } catch { throw new Reject(400, 'Malformed Request-URI') }
        const group = forkList !== undefined || opts.groups === undefined ? undefined : await expandGroup(aor, opts.groups, groupLimits, aorOf, logger)
        if (forkList !== undefined) {
          // a fork request from the group call's originating node: our members only
          const from = pre.forkFrom
          steps = await localMemberSteps([forkList], Math.min(groupLimits.maxBranches, pre.forkMax ?? Infinity), false, aor,
            from === undefined ? undefined : b => b.node === from) // the sender forks to its own clients itself
          if (steps.length === 0) throw new Reject(480, 'Temporarily Unavailable')
          ctx.forwardedProvisionals = new Set()
        } else if (group !== undefined) {
          steps = distributed && !pre.peer ? await distributedSteps(group, fwd.uri) : await groupSteps(group, pre.peer)
        } else {
          const bindings = await location.lookup(aor)
          if (bindings.length === 0) throw new Reject(404, 'Not Found')
          const r = bindingTargets(bindings, pre.peer, fwd.uri, limits.maxBranches)
          targets.push(...r.targets)
          if (targets.length === 0) throw new Reject(480, r.flowFailed > 0 ? 'Temporarily Unavailable (flow failed)' : 'Temporarily Unavailable')
        }
      } else {
        targets.push({ uri: fwd.uri, routes: [], q: 1 })
      }

      if (ctx.callerCancelled) throw new Reject(487, 'Request Terminated')

      // §16.6 forward to every target in parallel
      ctx.groups = steps ?? groupTargets(targets)
      if (steps !== undefined) ctx.stepTimeout = groupLimits.memberTimeout
      await startNextGroup(ctx)
    } catch (err) {
      if (ctx.branches.length === 0) { closeCtx(ctx) }
      throw err
    }
  }

  /** Split the target set per the forking mode (bindings come sorted by q, highest first). */
  function groupTargets (targets: Target[]): Target[][] {
    if (forking === 'parallel' || targets.length < 2) return [targets]
    if (forking === 'sequential') return targets.map(t => [t])
    const groups: Target[][] = []
    for (const t of targets) {
      const last = groups[groups.length - 1]
      if (last !== undefined && last[0]!.q === t.q) last.push(t)
      else groups.push([t])
    }
    return groups
  }

  /** Fork to the next group of targets; for INVITE a group that rings too long is CANCELled and the next one tried. */
  async function startNextGroup (ctx: Context): Promise<void> {
    const step = ctx.nextGroup
    const group = ctx.groups[ctx.nextGroup++]
    if (group === undefined) return
    const groupTimeout = ctx.stepTimeout ?? timers.groupTimeout
    if (ctx.invite && ctx.nextGroup < ctx.groups.length && groupTimeout > 0) {
      ctx.groupTimer?.cancel()
      ctx.groupTimer = clock.setTimer(groupTimeout, () => {
        if (ctx.closed || ctx.finalSent || ctx.callerCancelled || ctx.sixxx) return
        for (const b of ctx.branches) if (b.step === step) cancelBranch(ctx, b, false) // re-forked branches too
        void startNextGroup(ctx)
      })
    }
    await addBranches(ctx, group, step)
  }

  /** Add branches for `targets` to the context (synchronously) and start them. */
  async function addBranches (ctx: Context, targets: Target[], step: number): Promise<void> {
    const mine: Branch[] = targets.map((t, i) => {
      const b: Branch = { index: ctx.branches.length + i, done: false, provisional: false, cancelled: false, step }
      if (t.fork !== undefined) b.fork = t.fork
      return b
    })
    ctx.branches.push(...mine)
    await Promise.all(targets.map(async (t, i) => { await startBranch(ctx, mine[i]!, t) }))
  }

  async function startBranch (ctx: Context, b: Branch, t: Target): Promise<void> {
    const { fwd, hash } = ctx
    const req = fwd.clone()
    let dest: Destination
    try {
      req.uri = t.uri
      for (let i = t.routes.length - 1; i >= 0; i--) req.prepend('route', t.routes[i]!)
      for (const [n, v] of t.headers ?? []) req.append(n, v)
      const strict = postprocessRoutes(req)
      dest = await nextHop(req, t.dest, strict)
    } catch (err) {
      logger.debug({ err, target: t.uri }, 'cannot resolve next hop')
      branchFinal(ctx, b, synth(ctx.req, 404, 'Unresolvable destination'))
      return
    }
    if (ctx.callerCancelled || ctx.sixxx || (ctx.invite && ctx.finalWas2xx)) {
      branchFinal(ctx, b, synth(ctx.req, 487, 'Request Terminated'))
      return
    }
    if (recordRoute && DIALOG_CREATING.has(req.method) && getTag(req.get('to')!) === undefined) {
      addRecordRoute(req, ctx.tx.source, dest)
    }
    st.branches++
    if (t.fork !== undefined) st.forkRequests++
    try {
      b.ctx = stack.sendRequest(req, dest, {
        branch: `${BRANCH_MARK}${hash}.${b.index}`,
        onProvisional: res => { onProvisional(ctx, b, res) },
        onFinal: res => { branchFinal(ctx, b, res) },
        onAdditional2xx: res => { branchFinal(ctx, b, res) }
      })
      b.viaBranch = b.ctx.branch
      if (!b.done) liveBranches.set(b.ctx.branch, hash)
    } catch (err) {
      logger.warn({ err, target: t.uri }, 'sendRequest failed')
      branchFinal(ctx, b, synth(ctx.req, 503, 'Service Unavailable'))
      return
    }
    if (ctx.invite && !b.done) b.timerC = clock.setTimer(timers.timerC, () => { onTimerC(ctx, b) })
    if (ctx.invite && !b.done && !b.provisional && b.fork !== undefined) {
      // an owner node that does not even answer 100 Trying is taken for dead: its members go elsewhere
      b.forkTimer = clock.setTimer(timers.forkTimeout, () => {
        b.forkTimer = undefined
        if (b.done || b.provisional || b.cancelled) return
        try { b.ctx?.cancel() } catch { /* the client transaction ends by itself (Timer B) */ }
        branchFinal(ctx, b, synth(ctx.req, 408, 'Fork Request Timeout'))
      })
    }
  }

  function addRecordRoute (req: SipRequest, source: Source, dest: Destination): void {
    const inbound = source.local
    const outbound = stack.transportFor(dest)?.local ?? inbound
    const token = flows.encode(destOf(source), dest)
    const sips = req.uri.slice(0, 5).toLowerCase() === 'sips:'
    const mk = (e: typeof inbound, extra: string): string => recordRouteFor(e, self.advertised, extra, token, sips)
    if (sameEndpoint(inbound, outbound)) {
      req.prepend('record-route', mk(inbound, ''))
    } else {
      // double Record-Route (Kamailio rr double_rr): inbound side below, outbound side on top
      req.prepend('record-route', mk(inbound, ';r2=on'))
      req.prepend('record-route', mk(outbound, ';r2=on'))
    }
  }

  /** A response synthesized by the proxy for a branch (never sent as is: it goes through upstream()). */
  function synth (req: SipRequest, status: number, reason: string): SipResponse {
    st.synthesized++
    return createResponse(req, status, reason, status > 100 ? rng.token(10) : undefined)
  }

  /** The response to send upstream: the downstream one with exactly the Vias of the original request. */
  function upstream (ctx: Context, res: SipResponse): SipResponse {
    const out = res.clone()
    const vias = ctx.req.headers.filter(h => h.name === 'via').map(h => ({ ...h }))
    out.headers = [...vias, ...out.headers.filter(h => h.name !== 'via')]
    return out
  }

  function send (ctx: Context, res: SipResponse): void {
    st.responsesForwarded++
    try { ctx.tx.respond(upstream(ctx, res)) } catch (err) { logger.warn({ err, status: res.status }, 'respond failed') }
  }

  function onProvisional (ctx: Context, b: Branch, res: SipResponse): void {
    st.branchResponsesIn++
    if (b.done) return
    b.provisional = true
    b.forkTimer?.cancel()
    if (ctx.invite && !b.cancelled) {
      b.timerC?.cancel()
      b.timerC = clock.setTimer(timers.timerC, () => { onTimerC(ctx, b) })
    }
    if (res.status > 100 && !ctx.finalSent && !ctx.callerCancelled) {
      const fp = ctx.forwardedProvisionals
      if (fp !== undefined && fp.has(res.status) && !res.has('rseq')) return // already told upstream (fork request)
      fp?.add(res.status)
      send(ctx, res)
    }
  }

  function branchFinal (ctx: Context, b: Branch, res: SipResponse): void {
    st.branchResponsesIn++
    if (res.status >= 200 && res.status < 300) {
      // every 2xx goes upstream at once (RFC 6026: retransmissions and other branches' 2xx too)
      if (!ctx.finalSent || ctx.finalWas2xx) {
        if (ctx.invite || !ctx.finalSent) send(ctx, res)
        ctx.finalSent = true
        ctx.finalWas2xx = true
      }
      if (!b.done) finishBranch(b)
      if (ctx.invite) for (const o of ctx.branches) cancelBranch(ctx, o, false)
      checkComplete(ctx)
      return
    }
    if (b.done) return
    const reforkIt = b.fork !== undefined && !b.provisional && !b.cancelled && (res.status === 503 || res.status === 408)
    if (reforkIt) refork(ctx, b, b.fork!) // before finishing b: the context must not complete meanwhile
    finishBranch(b)
    ctx.finals.push(res)
    if (res.status >= 600 && !ctx.finalWas2xx) {
      ctx.sixxx = true
      if (ctx.invite) for (const o of ctx.branches) cancelBranch(ctx, o, false)
    }
    checkComplete(ctx)
  }

  function finishBranch (b: Branch): void {
    b.done = true
    if (b.viaBranch !== undefined) liveBranches.delete(b.viaBranch)
    b.timerC?.cancel()
    b.cancelTimer?.cancel()
    b.forkTimer?.cancel()
  }

  function cancelBranch (ctx: Context, b: Branch, byCaller: boolean): void {
    if (b.done || b.cancelled) return
    b.cancelled = true
    b.timerC?.cancel()
    if (b.ctx === undefined) return // not started yet: startBranch sees the flags
    st.cancelsSent++
    try { b.ctx.cancel() } catch (err) { logger.warn({ err }, 'cancel failed') }
    // a CANCELled branch that never answers is given up after 64*T1 (RFC 3261 §9.1)
    b.cancelTimer = clock.setTimer(timers.cancelTimeout, () => {
      if (!b.done) branchFinal(ctx, b, synth(ctx.req, byCaller ? 487 : 408, byCaller ? 'Request Terminated' : 'Request Timeout'))
    })
  }

  function onTimerC (ctx: Context, b: Branch): void {
    if (b.done) return
    st.timerCFired++
    if (b.provisional) cancelBranch(ctx, b, false)
    else branchFinal(ctx, b, synth(ctx.req, 408, 'Request Timeout'))
  }

  function onCallerCancel (ctx: Context): void {
    if (ctx.callerCancelled || ctx.closed) return
    ctx.callerCancelled = true
    for (const b of ctx.branches) cancelBranch(ctx, b, true)
    checkComplete(ctx)
  }

  /** §16.7 step 6: when every branch is done, send the best final response (unless a 2xx went). */
  function checkComplete (ctx: Context): void {
    if (ctx.closed || ctx.branches.length === 0 || ctx.pending > 0) return
    if (!ctx.branches.every(b => b.done)) return
    if (!ctx.finalSent && !ctx.callerCancelled && !ctx.sixxx && ctx.nextGroup < ctx.groups.length) {
      void startNextGroup(ctx) // sequential / q-ordered forking: the next group
      return
    }
    if (!ctx.finalSent) {
      ctx.finalSent = true
      if (ctx.callerCancelled) {
        reply(ctx.tx, ctx.req, 487, 'Request Terminated')
      } else {
        const best = selectBest(ctx.finals)
        if (best === undefined) reply(ctx.tx, ctx.req, 408, 'Request Timeout')
        else send(ctx, finalizeBest(best, ctx.finals))
      }
    }
    closeCtx(ctx)
  }

  function closeCtx (ctx: Context): void {
    if (ctx.closed) return
    ctx.closed = true
    ctx.groupTimer?.cancel()
    st.activeContexts--
    // A closed context may live on for 32 s (an INVITE transaction in RFC 6026 Accepted forwards further
    // 2xx through it, and a late branch final is synthesized from it): from now on it only needs the
    // request's Via/From/To/Call-ID/CSeq (upstream(), synth()), not the whole request, the forwarded
    // copy, the collected finals or the targets.
    ctx.req = slimMessage(ctx.req)
    ctx.fwd = ctx.req
    ctx.finals = []
    ctx.groups = []
  }

  // ------------------------------------------------------------ ACK for 2xx (stateless)

  async function handleAck (ack: SipRequest, source: Source): Promise<void> {
    st.acksIn++
    try {
      const checked = checkSyntax(ack)
      const mf = maxForwardsOf(ack)
      if (mf === 0 || isLoop(ack, checked)) { st.dropped++; return }
      const hash = loopHash(ack, checked.raw[0])
      const fwd = ack.clone()
      fwd.set('max-forwards', String(mf - 1))
      const pre = preprocessRoutes(fwd)
      let fixed: Destination | undefined
      if (!fwd.has('route')) {
        const viaFlow = flowTarget(pre.flow, source)
        if (viaFlow === 'failed') { st.dropped++; return }
        if (viaFlow !== undefined) {
          fixed = viaFlow
        } else if (pre.ruri === undefined || isSelfNoUser(pre.ruri)) {
          st.dropped++
          return
        } else if (pre.ruri.user !== undefined && isLocalHost(pre.ruri)) {
          const bindings = await location.lookup(aorOf(fwd.uri))
          const b = bindings[0]
          if (b === undefined) { st.dropped++; return }
          fwd.uri = b.contact
          for (let i = b.path.length - 1; i >= 0; i--) fwd.prepend('route', b.path[i]!)
          const d = isForeign(b) ? undefined : bindingDest(b)
          if (d === 'flow-failed') { st.dropped++; return }
          fixed = d
        }
      }
      const strict = postprocessRoutes(fwd)
      const dest = await nextHop(fwd, fixed, strict)
      fwd.prepend('via', stack.viaFor(dest, `${BRANCH_MARK}${hash}.a`))
      st.statelessSent++
      await stack.sendStateless(fwd, dest)
    } catch (err) {
      st.dropped++
      logger.debug({ err, callId: ack.get('call-id') }, 'ACK dropped')
    }
  }

  // ------------------------------------------------------------ stray responses (stateless)

  function handleStrayResponse (res: SipResponse, _source: Source): void {
    st.strayResponsesIn++
    try {
      const vias = res.getAll('via')
      if (vias.length < 2) { st.dropped++; return }
      const top = parseVia(vias[0]!)
      if (!self.via(top)) { st.dropped++; return }
      const dest = responseDestination(parseVia(vias[1]!))
      if (dest === undefined) { st.dropped++; return }
      const out = res.clone()
      out.shift('via')
      st.statelessSent++
      const p = stack.sendStateless(out, dest)
      if (p instanceof Promise) p.catch((err: unknown) => { logger.debug({ err }, 'stateless response send failed') })
    } catch (err) {
      st.dropped++
      logger.debug({ err }, 'stray response dropped')
    }
  }

  return {
    handleRequest,
    handleAck,
    handleStrayResponse,
    stats: () => ({
      ...st,
      messagesIn: st.requestsIn + st.acksIn + st.strayResponsesIn + st.branchResponsesIn - st.synthesized,
      messagesOut: st.branches + st.cancelsSent + st.responsesForwarded + st.localResponses + st.statelessSent
    })
  }
}

