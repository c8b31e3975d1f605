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
  type AorValue, type ParsedAorValue, type NodePortion, type PublishedPortion, type PublishedBinding, type NodeRecord, type ReplicaValue, type ReplicationOptions, type ReplicationStats, type ReplicationLimits
} from './replication.js'
