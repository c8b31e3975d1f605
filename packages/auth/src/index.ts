/**
 * @sipring/auth — accounts, groups and digest authentication.
 */
export * from './accounts.js'
export * from './digest-server.js'
export { FailureLimiter, LruMap, type FailureLimiterOptions } from './limiter.js'
export { contactLimitExceeded, registerAor } from './contacts.js'
