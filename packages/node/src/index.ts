/**
 * @sipring/node — assembles one super node: SIP stack + location service + registrar + proxy, and
 * optionally the overlay (one location service shared by every super node).
 * No sockets and no libp2p here: the caller (daemon, simulation, test) passes transports, a db and
 * the overlay network.
 */
export {
  createSuperNode, type SuperNode, type SuperNodeComponents, type SuperNodeInit, type SuperNodeStatus,
  type SuperNodeOverlay, type SuperNodeOverlayInit
} from './super-node.js'
export {
  LocationReplicator, aorKey, nodeKey, parseValue, publishedBinding, bindingIdentity, newerBinding, directlyReachable, DEFAULT_REPLICATION_LIMITS,
  portionBytes, canonicalJson, type PortionSigner, type SignedPortion,
  type AorValue, type ParsedAorValue, type NodePortion, type PublishedPortion, type PublishedBinding, type NodeRecord, type ReplicaValue, type ReplicationOptions, type ReplicationStats, type ReplicationLimits
} from './replication.js'
export { OverloadGuard, overloadLimits, DEFAULT_OVERLOAD_LIMITS, type OverloadLimits, type OverloadStats } from './overload.js'
export {
  createCoreNode, overlayAccountRpc, type CoreNode, type CoreNodeComponents, type CoreNodeInit, type CoreNodeStatus
} from './core-node.js'
export { ownerResolver } from './fork.js'
