export * from './message.js'
