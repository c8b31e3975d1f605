export { SimClock } from './sim-clock.js'
export { SeededRng } from './seeded-rng.js'
export { MemoryLogger } from './memory-logger.js'
