/**
 * @sipring/auth — accounts, groups and digest authentication.
 */
export * from './accounts.js'
export * from './digest-server.js'
export { FailureLimiter, LruMap, type FailureLimiterOptions } from './limiter.js'
export { contactLimitExceeded, registerAor } from './contacts.js'
export * from './rpc.js'
export {
  Hlc, compareVersions, versionText, parseId, userId, groupId, checkAccount, checkGroup, checkItem, WIRE_LIMITS,
  type AccountVersion, type AccountItem, type ParsedId
} from './wire.js'
export { AccountReplica, VERSION_PREFIX, GC_HORIZON_KEY, TOMBSTONE_TTL, type AccountReplicaOptions, type AccountReplicaStats, type AccountReplicaStatus, type PeerSyncStatus } from './replica.js'
export { RemoteAccountStore, type RemoteAccountStoreOptions, type RemoteAccountStats } from './remote.js'
