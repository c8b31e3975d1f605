/** @sipring/daemon — the `sipring` CLI and the real-world adapters (clock, rng, pino, level, sockets). */
export { systemClock, cryptoRng, CryptoRng, createPinoLogger, fromPino, LOG_LEVELS, type LogLevel, type PinoLoggerOptions } from './system.js'
export {
  defaultConfig, loadConfig, resolveConfig, fileLayer, envLayer, parseStartArgs, startHelp, ConfigError, UsageError,
  CONFIG_KEYS, ENV_VARS, START_FLAGS, PROTOCOLS, type SipringConfig, type ListenerConfig, type HostPort, type Layer
} from './config.js'
export { AdminServer, AdminError, MAX_AOR_LENGTH, type AdminSource, type AdminServerInit } from './admin.js'
export { startDaemon, DaemonError, formatEndpoint, type Daemon, type DaemonDeps } from './run.js'
export { main, mainHelp, statusHelp, formatStatus, fetchJson, NODE_FLAGS, youngGenerationSet, type Io } from './main.js'
export { VERSION } from './version.js'
export { overlayCommand, nodeCommand, overlayHelp, nodeHelp, loadAdmission, MAX_CREDENTIAL_DAYS } from './enroll.js'
export { startCoreDaemon, type CoreDaemon } from './core.js'
