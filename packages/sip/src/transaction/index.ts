export * from './common.js'
export * from './client.js'
export * from './server.js'
