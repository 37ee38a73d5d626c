export { startServer, type RunningServer, type ServerOptions, type StoreConfig } from './daemon.js';
export { DEFAULT_LIMITS, DEFAULT_PORT, type Limits } from './config.js';
export { SandboxEventsError } from './errors.js';
export type { SandboxEvent, StoredEvent, EventId } from './event/event.js';
export type { EventStore, HistoryQuery, ReplayResult } from './store/types.js';
export { mintToken, type MintOptions } from './auth/mint.js';
export type { Principal, Role } from './auth/principal.js';
export {
  createPubSubClient,
  PubSubClient,
  parseEvent,
  EventsError,
  EventsAuthError,
  EventsNetworkError,
  EventsPubSubError,
  backoffDelay,
  backoffCeiling,
  exponentialBackoff,
  readTokenTiming,
  refreshDelay,
  type PubSubClientConfig,
  type BrokerAddress,
  type PubSubClientEvents,
  type PubSubClientStats,
  type ConnectionState,
  type ClientStatus,
  type EventMeta,
  type GapInfo,
  type GapReason,
  type ReconnectInfo,
  type SubscribeOptions,
  type HistoryOptions,
  type EventsIteratorOptions,
  type ReconnectStrategy,
  type BackoffOptions,
  type AccessToken,
  type TokenTiming,
  type EventsErrorCode,
  type EventsAuthErrorCode,
  type EventsNetworkErrorCode,
  type EventsPubSubErrorCode,
} from './client/index.js';
export {
  createEventsClient,
  EventsClient,
  EventsGapError,
  type EventsClientConfig,
  type StoreEventOptions,
  type StoreEventResult,
  type GetEventsOptions,
  type StreamOptions,
} from './client/http-client.js';
export type { HttpSettings } from './http/host.js';
