import { type Command, InvalidArgumentError } from 'commander';
import { createPubSubClient } from '../client/index.js';
import { parseDuration } from '../auth/duration.js';
import { integerArgument } from './options.js';
import {
  addConnectionOptions,
  type ClientCliIo,
  type ConnectionOptions,
  formatEvent,
  processIo,
  requireToken,
  useColor,
} from './tail.js';

/**
 * `sandbox-events history <sandboxId>`: past events of one sandbox, oldest first, through the
 * package's client (the HISTORY command, docs/protocol.md). Prints one readable line per event,
 * or one JSON line per event with --json, so that `history ... --json | jq` works.
 */

interface HistoryCliOptions extends ConnectionOptions {
  type?: string;
  after?: string;
  since?: number;
  limit?: number;
  newest?: boolean;
  json?: boolean;
}

/**
 * `--since` as a person writes it: Unix milliseconds (`1732361234567`), an ISO 8601 date
 * (`2026-12-07T10:00:00Z`), or a duration back from now (`15m`, `2h`, `7d`).
 */
export function sinceArgument(now: () => number = Date.now) {
  return (text: string): number => {
    const trimmed = text.trim();
    if (/^\d+$/.test(trimmed)) return Number(trimmed);
    if (/^\d+(\.\d+)?\s*[a-z]+$/i.test(trimmed)) {
      try {
        return now() - parseDuration(trimmed);
      } catch (error) {
        throw new InvalidArgumentError((error as Error).message);
      }
    }
    const parsed = Date.parse(trimmed);
    if (Number.isNaN(parsed)) {
      throw new InvalidArgumentError('expected Unix milliseconds, an ISO 8601 date or a duration such as 15m');
    }
    return parsed;
  };
}

export async function runHistory(sandboxId: string, options: HistoryCliOptions, io: ClientCliIo): Promise<void> {
  const token = requireToken(options.token);
  const client = createPubSubClient({
    host: options.host,
    port: options.port,
    accessToken: token,
    autoReconnect: false,
    clientName: 'sandbox-events-history',
  });
  try {
    await client.connect();
    const events = await client.history(sandboxId, {
      ...(options.type === undefined ? {} : { type: options.type }),
      ...(options.after === undefined ? {} : { after: options.after }),
      ...(options.since === undefined ? {} : { since: options.since }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
      ...(options.newest === true ? { newest: true } : {}),
    });
    const color = options.json !== true && useColor(io);
    io.stdout.write(
      events
        .map((event) => (options.json === true ? `${JSON.stringify(event)}\n` : formatEvent(event, color)))
        .join(''),
    );
  } finally {
    await client.disconnect();
  }
}

export function registerHistory(program: Command, io: ClientCliIo = processIo()): void {
  addConnectionOptions(
    program
      .command('history')
      .description('Print past events of a sandbox, oldest first (the HISTORY command)')
      .argument('<sandboxId>', 'the sandbox to read'),
  )
    .option('--type <type>', 'only events of this type')
    .option('--after <id>', 'only events after this event id')
    .option(
      '--since <time>',
      'only events at or after: Unix ms, an ISO 8601 date, or a duration ago (15m)',
      sinceArgument(),
    )
    .option('--limit <n>', 'at most this many events, 1 to 1000 (default 100)', integerArgument(1, 1000))
    .option('--newest', 'the newest events instead of the oldest (still printed oldest first)')
    .option('--json', 'one JSON object per line')
    .action((sandboxId: string, options: HistoryCliOptions) => runHistory(sandboxId, options, io));
}
