/**
 * A small application written against the ComputeSDK events client, following that package's
 * README ("Real-time Streaming"). The only line changed to move it to this package is the
 * import below; nothing else here knows which client it talks to.
 */
// Was: import { createPubSubClient, type SandboxEvent } from '@computesdk/events';
import { createPubSubClient, type SandboxEvent } from '../../../src/client/index.js';

export interface App {
  received: SandboxEvent[];
  log: string[];
  state(): string;
  /** Resolves once `count` events arrived. */
  waitForEvents(count: number): Promise<void>;
  ping(): Promise<void>;
  stop(): Promise<void>;
}

export async function startApp(options: {
  host: string;
  port: number;
  accessToken: string;
  sandboxId: string;
}): Promise<App> {
  const pubsub = createPubSubClient({
    host: options.host,
    port: options.port,
    accessToken: options.accessToken,
    sandboxId: options.sandboxId,
    reconnectDelay: 20,
  });
  const received: SandboxEvent[] = [];
  const log: string[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];

  // Listen for events
  pubsub.on('event', (event) => {
    log.push(`Received: ${event.type}`);
    received.push(event);
    for (const waiter of [...waiters]) {
      if (received.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  });
  pubsub.on('connect', () => {
    log.push('Connected to event stream');
  });
  pubsub.on('disconnect', () => {
    log.push('Disconnected (will auto-reconnect)');
  });
  pubsub.on('error', (error) => {
    log.push(`Connection error: ${error.message}`);
  });

  // Connect and start receiving events
  await pubsub.connect();

  return {
    received,
    log,
    state: () => pubsub.getState(),
    waitForEvents: (count) =>
      received.length >= count ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ count, resolve })),
    ping: () => pubsub.ping(),
    // Disconnect when done
    stop: () => pubsub.disconnect(),
  };
}
