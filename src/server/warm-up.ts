import net from 'node:net';
import { mintToken } from '../auth/mint.js';
import type { Connection } from '../connection/connection.js';
import { SandboxEventsError } from '../errors.js';
import { bulkArray } from '../protocol/encode.js';
import type { ServerContext } from '../runtime/context.js';
import { TcpListener } from './server.js';

/** What a finished warm-up reports (the `sandbox-events listening` line's `warmUp`). */
export interface WarmUpReport {
  readonly clients: number;
  readonly ms: number;
}

/**
 * Clients connected at once. Each has its own token and sandbox, used again by its next
 * client: an HS256 token is checked afresh each time (src/auth/verifier.ts), so 100 tokens
 * warm the check as well as one per client would, and the sandbox's channel is made and
 * dropped per client as in a storm.
 */
const CONCURRENCY = 100;
/**
 * No client starts after this long, so the warm-up delays the daemon's ports by at most about
 * this much even on a slow or busy machine (docs/operations.md, "Warm start"); it reports the
 * clients it ran.
 */
const TIME_BUDGET_MS = 1_000;
/** A warm-up client that gets no answer in this time fails the warm-up. */
const CLIENT_TIMEOUT_MS = 5_000;

/**
 * One client: connects, sends AUTH, SUBSCRIBE, UNSUBSCRIBE, PING and QUIT at once, and resolves
 * once the daemon has closed the connection after QUIT's reply. Rejects unless AUTH was
 * answered OK and the connection closed cleanly.
 */
function oneClient(port: number, token: string, sandboxId: string, sockets: Set<net.Socket>): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    sockets.add(socket);
    let first: Buffer | undefined;
    socket.setTimeout(CLIENT_TIMEOUT_MS, () => socket.destroy(new Error('no answer')));
    socket.on('data', (chunk: Buffer) => {
      first ??= chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      sockets.delete(socket);
      if (first?.toString('latin1', 0, 5) === '+OK\r\n') resolve();
      else if (first === undefined) reject(new Error('a client was closed before any reply'));
      else reject(new Error(`AUTH answered ${JSON.stringify(first.toString('latin1', 0, 80))}`));
    });
    socket.write(
      Buffer.concat([
        bulkArray(['AUTH', token]),
        bulkArray(['SUBSCRIBE', sandboxId]),
        bulkArray(['UNSUBSCRIBE', sandboxId]),
        bulkArray(['PING']),
        bulkArray(['QUIT']),
      ]),
    );
  });
}

/**
 * The start-up warm-up (docs/operations.md, "Warm start"): up to `clients` clients through a
 * throwaway listener on 127.0.0.1:0 served from `context`, which the caller makes for it alone
 * (its own memory store, broker, verifier of `secret`, counters and a silent logger) and
 * discards, so the daemon's connection path is compiled before its real listener opens and
 * nothing of the warm-up is seen by its clients. Throws WARM_UP_FAILED on the first client
 * that fails, once every other has stopped and the listener is closed.
 */
export async function warmUp(
  context: ServerContext<Connection>,
  secret: string,
  clients: number,
): Promise<WarmUpReport> {
  const started = performance.now();
  const deadline = started + TIME_BUDGET_MS;
  const workers = Math.min(CONCURRENCY, clients, context.limits.maxClients);
  const sandboxIds = Array.from({ length: workers }, (_, index) => `warm-up-${index}`);
  const tokens = await Promise.all(
    sandboxIds.map((sandboxId) => mintToken({ secret, workspaceId: 1, sandboxId, ttlSeconds: 60 })),
  );
  const listener = await TcpListener.listen(context, { host: '127.0.0.1', port: 0, backlog: CONCURRENCY });
  const sockets = new Set<net.Socket>();
  let begun = 0;
  let failure: unknown;
  const worker = async (index: number): Promise<void> => {
    while (begun < clients && failure === undefined && performance.now() < deadline) {
      begun += 1;
      try {
        await oneClient(listener.port, tokens[index]!, sandboxIds[index]!, sockets);
      } catch (error) {
        failure ??= error;
        for (const socket of sockets) socket.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, index) => worker(index)));
  if (failure !== undefined) for (const connection of context.connections) connection.destroy();
  await listener.close();
  if (failure !== undefined) {
    const reason = failure instanceof Error ? failure.message : String(failure);
    throw new SandboxEventsError('WARM_UP_FAILED', `warm-up failed: ${reason}`, { cause: failure });
  }
  return { clients: begun, ms: Math.round(performance.now() - started) };
}
