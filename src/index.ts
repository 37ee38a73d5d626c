export { startServer, type RunningServer, type ServerOptions } from './server/server.js';
export { DEFAULT_LIMITS, DEFAULT_PORT, type Limits } from './config.js';
export { SandboxEventsError } from './errors.js';
export type { SandboxEvent, StoredEvent, EventId } from './event/event.js';
export type { EventStore, HistoryQuery, ReplayResult } from './store/types.js';
export { mintToken, type MintOptions } from './auth/mint.js';
export type { Principal, Role } from './auth/principal.js';
