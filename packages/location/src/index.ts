export {
  LocationStore, LocationError, DEFAULT_LIMITS,
  type LocationDb, type LocationLimits, type LocationStoreOptions, type ContactUpdate, type RegisterUpdate,
  type RegisterError, type RegisterResult, type LocationEvents, type LocationEvent
} from './store.js'
export { contactKey } from './uri-key.js'
