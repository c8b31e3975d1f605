/**
 * @sipring/node — assembles one super node: SIP stack + location service + registrar + proxy.
 * No sockets and no libp2p here: the caller (daemon, simulation, test) passes transports and a db.
 */
export { createSuperNode, type SuperNode, type SuperNodeComponents, type SuperNodeInit, type SuperNodeStatus } from './super-node.js'
