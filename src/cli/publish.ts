import type { Command } from 'commander';
import { createPubSubClient } from '../client/index.js';
import { SandboxEventsError } from '../errors.js';
import { isPlainObject } from '../event/event.js';
import { addConnectionOptions, type ClientCliIo, type ConnectionOptions, processIo, requireToken } from './tail.js';

/**
 * `sandbox-events publish <sandboxId> <type> [data-json]`: stores one event and prints the
 * number of subscriptions that received it (PUBLISH's reply), through the package's client.
 */

export function parseData(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new SandboxEventsError('INVALID_ARGUMENT', 'data must be JSON, e.g. \'{"exitCode":0}\'');
  }
  if (!isPlainObject(data)) throw new SandboxEventsError('INVALID_ARGUMENT', 'data must be a JSON object');
  return data;
}

export async function runPublish(
  sandboxId: string,
  type: string,
  dataJson: string | undefined,
  options: ConnectionOptions,
  io: ClientCliIo,
): Promise<void> {
  const token = requireToken(options.token);
  const data = parseData(dataJson);
  const client = createPubSubClient({
    host: options.host,
    port: options.port,
    accessToken: token,
    autoReconnect: false,
    clientName: 'sandbox-events-publish',
  });
  try {
    await client.connect();
    const receivers = await client.publish(sandboxId, type, data);
    io.stdout.write(`${receivers}\n`);
  } finally {
    await client.disconnect();
  }
}

export function registerPublish(program: Command, io: ClientCliIo = processIo()): void {
  addConnectionOptions(
    program
      .command('publish')
      .description('Publish one event {type, data} to a sandbox; prints how many subscriptions received it')
      .argument('<sandboxId>', 'the sandbox to publish to')
      .argument('<type>', 'event type, e.g. execution.completed')
      .argument('[data-json]', 'event data, a JSON object (default {})'),
  ).action((sandboxId: string, type: string, dataJson: string | undefined, options: ConnectionOptions) =>
    runPublish(sandboxId, type, dataJson, options, io),
  );
}
