import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killDaemons } from '../support/daemon.js';
import { cliToken, collectingClient } from '../support/e2e.js';
import { StoreDaemons, STORES_AND_ENGINE } from '../support/engine.js';
import { resp } from '../support/raw-client.js';

/**
 * `--ephemeral-types` (docs/operations.md, "Ephemeral events") through the real daemon, memory,
 * SQLite and the Redis engine: delivered live and counted in PUBLISH's reply, never stored, never evicting what
 * is; a resume from an ephemeral event's id is exact, also across a restart (SQLite).
 */

const daemons = new StoreDaemons();
const EPHEMERAL = ['--retention-count', '20', '--ephemeral-types', 'sandbox.metrics,debug.*'];

afterEach(() => killDaemons());
afterAll(() => daemons.cleanup());

const rawClient = collectingClient;

const count = (text: string, needle: string): number => text.split(needle).length - 1;

describe.each(STORES_AND_ENGINE)('ephemeral types, %s store', (store) => {
  it('delivers them live, counts receivers, stores none, and resumes exactly after one', async () => {
    const { daemon, dir } = await daemons.start(store, EPHEMERAL);
    const [sandbox, workspace] = await Promise.all([
      cliToken(dir, '--workspace', '1', '--sandbox', `sb-${store}`),
      cliToken(dir, '--workspace', '1'),
    ]);
    const channel = `sb-${store}`;
    const subscriber = await rawClient(daemon.port, workspace);
    subscriber.socket.write(resp('SUBSCRIBE', channel));
    await subscriber.until((t) => t.includes(':1\r\n'));
    const publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: sandbox });
    try {
      const lifecycle = await publisher.publish(channel, JSON.stringify({ type: 'execution.completed', data: {} }));
      const replies: number[] = [];
      for (let i = 0; i < 60; i += 1) {
        const type = i % 2 === 0 ? 'sandbox.metrics' : 'debug.trace';
        replies.push(await publisher.publish(channel, JSON.stringify({ type, data: { uptime_seconds: i } })));
      }
      expect(lifecycle).toBe(1);
      expect(replies).toEqual(Array(60).fill(1)); // receivers, as for any event
      await subscriber.until((t) => count(t, '"uptime_seconds":59') === 1);
      expect(count(subscriber.text(), '"type":"sandbox.metrics"')).toBe(30);
      expect(count(subscriber.text(), '"type":"debug.trace"')).toBe(30);

      const history = (await publisher.call('HISTORY', channel)) as string[];
      expect(history.map((line) => (JSON.parse(line) as { type: string }).type)).toEqual(['execution.completed']);
      expect(await publisher.call('HISTORY', channel, 'TYPE', 'execution.completed')).toHaveLength(1);

      // An ephemeral event's id is a resume point like any, even one with later (unretained)
      // ids after it: not `unknown`, and the replay is exactly the stored events after it.
      const ids = [...subscriber.text().matchAll(/"id":"(\d+-\d+)"/g)].map((match) => match[1]!);
      const firstEphemeral = ids[1]!;
      await publisher.publish(channel, JSON.stringify({ type: 'process.exited', data: {} }));
      const resumer = await rawClient(daemon.port, workspace);
      resumer.socket.write(resp('RESUME', channel, firstEphemeral));
      await resumer.until((t) => t.includes('process.exited'));
      expect(resumer.text()).toContain('$8\r\ncomplete\r\n');
      expect(count(resumer.text(), '"type":')).toBe(1);
      resumer.socket.destroy();
    } finally {
      publisher.disconnect();
      subscriber.socket.destroy();
    }
  });
});

describe('ephemeral types across a restart (SQLite)', () => {
  it('an ephemeral id from before the restart still resumes exactly (node-redis)', async () => {
    const first = await daemons.start('sqlite', EPHEMERAL);
    const { dir } = first;
    let daemon = first.daemon;
    const [sandbox, workspace] = await Promise.all([
      cliToken(dir, '--workspace', '1', '--sandbox', 'sb-r'),
      cliToken(dir, '--workspace', '1'),
    ]);
    let publisher = createClient({ socket: { port: daemon.port, host: '127.0.0.1' }, password: sandbox });
    await publisher.connect();
    await publisher.publish('sb-r', JSON.stringify({ type: 'execution.started', data: {} }));
    const subscriber = await rawClient(daemon.port, workspace);
    subscriber.socket.write(resp('SUBSCRIBE', 'sb-r'));
    await subscriber.until((t) => t.includes(':1\r\n'));
    await publisher.publish('sb-r', JSON.stringify({ type: 'sandbox.metrics', data: { uptime_seconds: 1 } }));
    await subscriber.until((t) => t.includes('sandbox.metrics'));
    const ephemeralId = /"id":"(\d+-\d+)"/.exec(subscriber.text())![1]!;
    subscriber.socket.destroy();
    await publisher.publish('sb-r', JSON.stringify({ type: 'execution.progress', data: {} }));
    await publisher.quit();
    daemon.child.kill('SIGTERM');
    await daemon.exited;

    ({ daemon } = await daemons.start('sqlite', EPHEMERAL, dir));
    publisher = createClient({ socket: { port: daemon.port, host: '127.0.0.1' }, password: sandbox });
    await publisher.connect();
    await publisher.publish('sb-r', JSON.stringify({ type: 'execution.completed', data: {} }));
    const resumer = await rawClient(daemon.port, workspace);
    resumer.socket.write(resp('RESUME', 'sb-r', ephemeralId));
    await resumer.until((t) => t.includes('execution.completed'));
    expect(resumer.text()).toContain('$8\r\ncomplete\r\n');
    expect([...resumer.text().matchAll(/"type":"([^"]+)"/g)].map((match) => match[1])).toEqual([
      'execution.progress',
      'execution.completed',
    ]);
    resumer.socket.destroy();
    await publisher.quit();
  });
});
