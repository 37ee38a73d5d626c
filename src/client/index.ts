export { parseEvent } from '../event/parse-event.js';
export { createPubSubClient, PubSubClient } from './pubsub-client.js';
export type {
  BrokerAddress,
  ClientStatus,
  ConnectionState,
  EventMeta,
  EventsIteratorOptions,
  GapInfo,
  GapReason,
  HistoryOptions,
  PubSubClientConfig,
  PubSubClientEvents,
  PubSubClientStats,
  ReconnectInfo,
  PatternSubscribeOptions,
  SubscribeOptions,
} from './types.js';
export {
  EventsAuthError,
  EventsError,
  EventsNetworkError,
  EventsPubSubError,
  type EventsAuthErrorCode,
  type EventsErrorCode,
  type EventsNetworkErrorCode,
  type EventsPubSubErrorCode,
} from './errors.js';
export {
  backoffCeiling,
  backoffDelay,
  exponentialBackoff,
  type BackoffOptions,
  type ReconnectStrategy,
} from './backoff.js';
export { readTokenTiming, refreshDelay, type AccessToken, type TokenTiming } from './token.js';
export type { SandboxEvent } from '../event/event.js';
