export { createProxy, DEFAULT_LIMITS, DEFAULT_TIMERS, ALLOW } from './proxy.js'
export { selectBest, finalizeBest } from './best.js'
export { loopHash, BRANCH_MARK, SelfMatcher, recordRouteFor, responseDestination } from './net.js'
export { FlowTokens } from './flow.js'
export type {
  Proxy, ProxyOptions, ProxyStack, ProxyStats, ProxyLimits, ProxyTimers, LocationLike, ServerTxLike,
  ClientContextLike, BranchHandlers, TransportLike, ForkingMode
} from './types.js'
export { expandGroup, planGroupTargets, checkGroupLimits, DEFAULT_GROUP_LIMITS } from './groups.js'
export type { GroupLike, GroupSource, GroupLimits, GroupExpansion, GroupPlan, GroupCallPolicy } from './groups.js'
export {
  FORK_HEADER, FORK_ROUTE_VALUE, FORK_MAX_PARAM, FORK_FROM_PARAM, MAX_FORK_HEADER, formatForkHeader, parseForkMembers, chunkMembers, splitBudget, partitionByOwner
} from './fork.js'
export type { GroupForking } from './fork.js'
