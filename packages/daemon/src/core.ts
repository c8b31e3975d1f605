/**
 * `sipring start --role core`: a core node. No SIP listeners; the libp2p overlay network (with
 * admission, as for super nodes), the accounts replicated with the other core nodes (`--core-node`),
 * served to super nodes over the overlay, and the admin API (/status, /health, token-protected
 * /users and /groups) on the admin port. Accounts live where `sipring user` finds them offline:
 * the `accounts` sublevel of `<dataDir>/location`.
 */
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { ClassicLevel } from 'classic-level'
import { createCoreNode, type CoreNode } from '@sipring/node'
import type { Libp2pOverlay } from '@sipring/overlay-libp2p'
import { AdminError, AdminServer } from './admin.js'
import { createAccountsAdmin } from './accounts-admin.js'
import { accountsSublevel, adminToken } from './accounts-files.js'
import type { SipringConfig } from './config.js'
import { DaemonError, admissionView, formatEndpoint, joinAddresses, startOverlayNetwork, type DaemonDeps } from './run.js'
import { VERSION } from './version.js'

export interface CoreDaemon {
  readonly role: 'core'
  readonly node: CoreNode
  readonly config: SipringConfig
  readonly overlay: Libp2pOverlay
  adminAddress(): { host: string, port: number } | undefined
  stop(): Promise<void>
}

/** Start a core node from a validated config (`role: core`). Throws DaemonError with a clear message. */
export async function startCoreDaemon (config: SipringConfig, deps: DaemonDeps): Promise<CoreDaemon> {
  const log = deps.logger.child({ role: 'core' })
  const dataDir = resolve(config.dataDir)
  try {
    mkdirSync(dataDir, { recursive: true })
  } catch (err) {
    throw new DaemonError(`cannot create data dir ${dataDir}: ${(err as Error).message}`, 1, { cause: err })
  }
  const db = new ClassicLevel<string, any>(resolve(dataDir, 'location'), { keyEncoding: 'utf8', valueEncoding: 'json' })
  try {
    await db.open()
  } catch (err) {
    const cause = (err as { cause?: { code?: string, message?: string } }).cause
    if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(cause?.message ?? '')) throw new DaemonError(`data dir ${dataDir} is in use by another sipring process`, 1, { cause: err })
    throw new DaemonError(`cannot open the database in ${dataDir}: ${cause?.message ?? (err as Error).message}`, 1, { cause: err })
  }
  let net: Libp2pOverlay
  try {
    net = await startOverlayNetwork(config, deps, dataDir)
  } catch (err) {
    await db.close()
    throw err
  }
  let peers: string[]
  try {
    peers = net.pinAddresses(config.coreNodes).filter(p => p !== net.self)
  } catch (err) {
    await net.stop().catch(() => {}); await db.close()
    throw new DaemonError(`coreNodes: ${(err as Error).message}`, 2, { cause: err })
  }
  void net.join(config.coreNodes.filter(a => !a.endsWith(`/p2p/${net.self}`)))
  const node = createCoreNode({ clock: deps.clock, rng: deps.rng, logger: log, network: net, db: accountsSublevel(db) }, { peers, tombstoneTtl: config.accountsTombstoneTtl * 1000 })
  try {
    await node.start()
  } catch (err) {
    await net.stop().catch(() => {}); await db.close()
    throw new DaemonError(`cannot start the core node: ${(err as Error).message}`, 1, { cause: err })
  }
  const startedAt = deps.clock.now()
  const realm = config.auth.realm ?? config.domains[0]
  let admin: AdminServer | undefined
  if (config.admin !== null) {
    admin = new AdminServer({
      host: config.admin.host,
      port: config.admin.port,
      logger: log.child({ component: 'admin' }),
      accounts: createAccountsAdmin({ accounts: node.accounts, token: adminToken(dataDir, deps.rng), defaultRealm: realm, logger: log.child({ component: 'admin' }) }),
      source: {
        status: () => ({
          nodeId: node.nodeId,
          role: 'core',
          version: VERSION,
          startedAt: new Date(startedAt).toISOString(),
          uptimeSeconds: Math.floor((deps.clock.now() - startedAt) / 1000),
          listeners: [],
          admin: admin !== undefined ? formatEndpoint({ address: admin.address().host, port: admin.address().port }) : undefined,
          dataDir,
          domains: config.domains,
          core: node.status().accounts,
          overlay: { self: net.self, multiaddrs: joinAddresses(net), peers: net.peers().length, admission: admissionView(net) }
        }),
        health: () => ({ status: 'ok', nodeId: node.nodeId, role: 'core' }),
        bindings: () => { throw new AdminError(404, 'this is a core node: it holds accounts, not registrations (ask a super node)') }
      }
    })
    try {
      await admin.start()
    } catch (err) {
      await node.stop().catch(() => {}); await net.stop().catch(() => {}); await db.close()
      const where = formatEndpoint({ address: config.admin.host, port: config.admin.port })
      if ((err as { code?: string }).code === 'EADDRINUSE') throw new DaemonError(`cannot listen on admin ${where}: address already in use (choose another with --admin)`, 1, { cause: err })
      throw new DaemonError(`cannot listen on admin ${where}: ${(err as Error).message}`, 1, { cause: err })
    }
  }
  const addrs = joinAddresses(net)
  const a = admin?.address()
  log.info({ peerId: net.self, multiaddrs: addrs, peers, admin: a !== undefined ? formatEndpoint({ address: a.host, port: a.port }) : 'off', version: VERSION },
    `sipring ${VERSION} core node ${net.self}; super nodes and other core nodes use --core-node ${addrs[0] ?? `/ip4/<this host>/tcp/7070/p2p/${net.self}`}`)
  let stopping: Promise<void> | undefined
  return {
    role: 'core',
    node,
    config,
    overlay: net,
    adminAddress: () => admin?.address(),
    async stop () {
      stopping ??= (async () => {
        log.info({}, 'stopping the core node')
        await admin?.stop().catch((err: unknown) => { log.warn({ err: (err as Error).message }, 'admin stop failed') })
        let failure: unknown
        try { await node.stop() } catch (err) { failure = err }
        try { await net.stop() } catch (err) { log.warn({ err: (err as Error).message }, 'overlay stop failed') }
        await db.close()
        log.info({}, 'stopped')
        if (failure !== undefined) throw failure
      })()
      await stopping
    }
  }
}
