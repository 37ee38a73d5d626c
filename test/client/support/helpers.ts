import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { EventEmitter } from 'node:events';
import type { PubSubClient } from '../../../src/client/index.js';
import type { SandboxEvent } from '../../../src/event/event.js';

/**
 * Waits for `predicate` to hold, re-checking whenever `emitter` emits `event` (never on a
 * timer): the test proceeds on what happened, and fails with `what` if it doesn't happen.
 */
export function until(
  emitter: EventEmitter,
  event: string,
  predicate: () => boolean,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!predicate()) return;
      clearTimeout(timer);
      emitter.off(event, check);
      resolve();
    };
    const timer = setTimeout(() => {
      emitter.off(event, check);
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    emitter.on(event, check);
  });
}

/**
 * The next emission of `event`, with its arguments. `timeoutMs` 0 sets no timer (under fake
 * timers, where advancing the clock would fire it; the test's own timeout still applies).
 */
export function next<T extends unknown[]>(emitter: EventEmitter, event: string, timeoutMs = 15_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const listener = (...args: unknown[]): void => {
      if (timer !== undefined) clearTimeout(timer);
      resolve(args as T);
    };
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            emitter.off(event, listener);
            reject(new Error(`timed out waiting for '${event}'`));
          }, timeoutMs)
        : undefined;
    emitter.once(event, listener);
  });
}

/** Every event a client delivers, in order, with a way to wait for a count. */
export class Collector {
  readonly events: SandboxEvent[] = [];

  constructor(private readonly client: PubSubClient) {
    client.on('event', (event) => this.events.push(event));
  }

  get ids(): string[] {
    return this.events.map((event) => event.id);
  }

  waitFor(count: number, timeoutMs = 15_000): Promise<void> {
    return until(
      this.client,
      'event',
      () => this.events.length >= count,
      `${count} events (have ${this.events.length})`,
      timeoutMs,
    );
  }
}

/** A temporary directory, removed by the returned function. */
export async function tempDir(prefix: string): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A port nothing listens on (bound, read, released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Asserts ids are strictly increasing event ids (ordered, no duplicates). */
export function strictlyIncreasing(ids: string[]): boolean {
  for (let i = 1; i < ids.length; i += 1) {
    const [ams, aseq] = ids[i - 1]!.split('-').map(Number);
    const [bms, bseq] = ids[i]!.split('-').map(Number);
    if (!(bms! > ams! || (bms === ams && bseq! > aseq!))) return false;
  }
  return true;
}
