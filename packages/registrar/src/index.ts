export { createRegistrar, contactUriKey, type Registrar, type RegistrarOptions } from './registrar.js'
