import { afterEach, expect, expectTypeOf, it } from 'vitest';
import { createPubSubClient, type SandboxEvent } from '../../src/client/index.js';
import { startTestServer, type TestServer } from '../support/test-server.js';
import { startApp } from './support/computesdk-app.js';
import { FaultProxy } from './support/fault-proxy.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * The ComputeSDK package's public types (packages/events/src/types.ts and the client's
 * methods), restated: our factory must be usable wherever theirs was.
 */
interface ComputeSdkPubSubClientConfig {
  host?: string;
  port?: number;
  accessToken: string;
  sandboxId: string;
  autoReconnect?: boolean;
  reconnectDelay?: number;
}
type ComputeSdkConnectionState = 'disconnected' | 'connecting' | 'connected' | 'error';
interface ComputeSdkPubSubClient {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  getState(): ComputeSdkConnectionState;
  ping(): Promise<void>;
  on(event: 'event', listener: (event: SandboxEvent) => void): unknown;
  on(event: 'connect', listener: () => void): unknown;
  on(event: 'disconnect', listener: () => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

it("has the ComputeSDK client's types", () => {
  expectTypeOf(createPubSubClient).toBeCallableWith({
    accessToken: 't',
    sandboxId: 's',
  } satisfies ComputeSdkPubSubClientConfig);
  const factory: (config: ComputeSdkPubSubClientConfig) => ComputeSdkPubSubClient = createPubSubClient;
  expect(typeof factory).toBe('function');
});

it('runs an app written for the ComputeSDK client after changing only its import', async () => {
  const broker: TestServer = await startTestServer();
  cleanups.push(() => broker.close());
  const proxy = await FaultProxy.start(broker.port);
  cleanups.push(() => proxy.close());
  const app = await startApp({
    host: '127.0.0.1',
    port: proxy.port,
    accessToken: await broker.token(),
    sandboxId: 'sandbox-123',
  });
  cleanups.push(() => app.stop());
  expect(app.state()).toBe('connected');
  await app.ping();

  const publisher = createPubSubClient({
    host: '127.0.0.1',
    port: broker.port,
    accessToken: await broker.token({ role: 'sandbox', sandboxId: 'sandbox-123' }),
  });
  cleanups.push(() => publisher.disconnect());
  await publisher.connect();
  await publisher.publish('sandbox-123', 'execution.started', { cmd: 'python main.py' });
  await app.waitForEvents(1);

  // What the ComputeSDK client would have lost: events published while the connection is down
  // (the app reconnects 20 ms or more after the cut; these reach the broker well before).
  proxy.cutAll();
  await publisher.publish('sandbox-123', 'terminal.output', { text: 'Hello, World!' });
  await publisher.publish('sandbox-123', 'execution.completed', { exitCode: 0 });
  await app.waitForEvents(3);

  expect(app.received.map((event) => event.type)).toEqual([
    'execution.started',
    'terminal.output',
    'execution.completed',
  ]);
  expect(app.received[2]).toMatchObject({ sandboxId: 'sandbox-123', workspaceId: 1, data: { exitCode: 0 } });
  expect(app.log.filter((line) => !line.startsWith('Connection error'))).toEqual([
    'Connected to event stream',
    'Received: execution.started',
    'Disconnected (will auto-reconnect)',
    'Connected to event stream',
    'Received: terminal.output',
    'Received: execution.completed',
  ]);
  await app.stop();
  expect(app.state()).toBe('disconnected');
});
