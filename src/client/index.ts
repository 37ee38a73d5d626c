export {
  createPubSubClient,
  parseEvent,
  PubSubClient,
  type BrokerAddress,
  type ClientStatus,
  type ConnectionState,
  type EventMeta,
  type EventsIteratorOptions,
  type GapInfo,
  type GapReason,
  type HistoryOptions,
  type PubSubClientConfig,
  type PubSubClientEvents,
  type PubSubClientStats,
  type ReconnectInfo,
  type SubscribeOptions,
} from './pubsub-client.js';
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
