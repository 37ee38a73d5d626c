/**
 * Replies paced as the client reads (docs/protocol.md, "HISTORY"; docs/http.md, "History"), on
 * the memory and SQLite stores and the Redis engine:
 * 1,000 events of about 63 KiB (64 MB) reach a reading client whole over TCP and HTTP, with the
 * default 8 MiB output limit; 20 TCP and 20 HTTP clients that ask for the same and never read
 * raise the daemon's RSS by less than 400 MB, and a fresh client still gets PONG.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Daemon, killDaemons } from '../support/daemon.js';
import { cliToken } from '../support/e2e.js';
import { StoreDaemons, STORES_AND_ENGINE } from '../support/engine.js';

const EVENTS = 1_000;
const TEXT = 'z'.repeat(63 * 1024 - 200);
const RSS_RISE_BOUND = 400 * 1024 * 1024;

const daemons = new StoreDaemons();
afterAll(() => daemons.cleanup());

for (const store of STORES_AND_ENGINE) {
  describe(store === 'redis' ? '--engine redis://' : `--store ${store}`, () => {
    let dataDir: string;
    let daemon: Daemon;
    let workspaceToken: string;
    const clients: Redis[] = [];
    const sockets: net.Socket[] = [];

    beforeAll(async () => {
      ({ daemon, dir: dataDir } = await daemons.start(store, [
        '--publish-rate',
        '100000',
        '--publish-burst',
        '100000',
      ]));
      workspaceToken = await token('--workspace', '1');
      const publisher = await connect(await token('--workspace', '1', '--sandbox', 'sb-big'));
      for (let start = 0; start < EVENTS; start += 50) {
        const batch = publisher.pipeline();
        for (let n = start; n < start + 50; n++) {
          batch.publish('sb-big', JSON.stringify({ type: 'terminal.output', data: { n, text: TEXT } }));
        }
        const results = await batch.exec();
        expect(results?.every(([error]) => error === null)).toBe(true);
      }
    }, 120_000);

    afterAll(async () => {
      for (const client of clients) client.disconnect();
      for (const socket of sockets) socket.destroy();
      killDaemons();
    });

    function token(...args: string[]): Promise<string> {
      return cliToken(dataDir, ...args);
    }

    async function connect(password: string): Promise<Redis> {
      const client = new Redis({ port: daemon.port, host: '127.0.0.1', password, lazyConnect: true });
      clients.push(client);
      await client.connect();
      return client;
    }

    function expectAllInOrder(lines: string[]): void {
      expect(lines).toHaveLength(EVENTS);
      const ns = lines.map((line) => (JSON.parse(line) as { data: { n: number } }).data.n);
      expect(ns).toEqual(Array.from({ length: EVENTS }, (_, i) => i));
      expect(lines.reduce((sum, line) => sum + line.length, 0)).toBeGreaterThan(60 * 1024 * 1024);
    }

    it('a reading TCP client gets the whole HISTORY LIMIT 1000 (64 MB)', async () => {
      const reader = await connect(workspaceToken);
      expectAllInOrder((await reader.call('HISTORY', 'sb-big', 'LIMIT', '1000')) as string[]);
      // The connection is still usable after the paced reply.
      expect(await reader.ping()).toBe('PONG');
    }, 60_000);

    it('a reading HTTP client gets the whole GET /events/<id>?limit=1000', async () => {
      const response = await fetch(`http://127.0.0.1:${daemon.httpPort}/events/sb-big?limit=1000`, {
        headers: { authorization: `Bearer ${workspaceToken}` },
      });
      expect(response.status).toBe(200);
      const body = (await response.json()) as { data: { events: unknown[]; count: number } };
      expect(body.data.count).toBe(EVENTS);
      expectAllInOrder(body.data.events.map((event) => JSON.stringify(event)));
    }, 60_000);

    it('20 TCP and 20 HTTP clients that never read stay under the RSS bound; PING answers', async () => {
      const before = rss(daemon);
      for (let i = 0; i < 20; i++) {
        const socket = net.connect(daemon.port, '127.0.0.1');
        sockets.push(socket);
        socket.write(resp(['AUTH', workspaceToken]) + resp(['HISTORY', 'sb-big', 'LIMIT', '1000']));
        socket.pause(); // never reads
      }
      for (let i = 0; i < 20; i++) {
        const socket = net.connect(daemon.httpPort!, '127.0.0.1');
        sockets.push(socket);
        socket.write(
          `GET /events/sb-big?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${workspaceToken}\r\n\r\n`,
        );
        socket.pause(); // never reads
      }
      // Every reader is stalled: the daemon's side of each of its sockets has bytes the peer
      // did not take (ss's Send-Q), so the daemon has written all it will before waiting; or
      // it was already cut off (below).
      let cut = 0;
      const slowConsumers = async (): Promise<number> => {
        const info = (await fresh.info('stats')) as string;
        return Number(/slow_consumer_disconnects:(\d+)/.exec(info)?.[1] ?? 0);
      };
      // An admin's INFO: slow_consumer_disconnects is a broker-wide figure (docs/protocol.md, "INFO per tenant").
      const fresh = await connect(await token('--workspace', '1', '--role', 'admin'));
      const cutBefore = await slowConsumers();
      await until(async () => {
        cut = (await slowConsumers()) - cutBefore;
        return stalledSockets(daemon.port) + stalledSockets(daemon.httpPort!) + cut >= 40;
      });
      expect(await fresh.ping()).toBe('PONG');
      const rise = rss(daemon) - before;
      expect(rise, `RSS rose by ${Math.round(rise / 1048576)} MiB`).toBeLessThan(RSS_RISE_BOUND);
      // A reader that takes nothing for the close grace (10 s) is cut off like one over its
      // output limit: no socket of theirs is left holding output.
      await until(async () => (await slowConsumers()) - cutBefore >= 40);
      await until(() => stalledSockets(daemon.port) + stalledSockets(daemon.httpPort!) === 0);
    }, 120_000);
  });
}

function resp(args: string[]): string {
  return `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
}

function rss(daemon: Daemon): number {
  const status = readFileSync(`/proc/${daemon.child.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** Established sockets on the daemon's `port` whose send queue holds unacknowledged bytes. */
function stalledSockets(port: number): number {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.trim() !== '')
    .filter((line) => Number(line.trim().split(/\s+/)[1]) > 0).length;
}

async function until(condition: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 50));
}
