import { createServer, type Server } from 'node:net';
import { Cluster } from 'ioredis';
import { afterEach, expect, it, vi } from 'vitest';
import { INTEREST_PERIOD_MS, PatternInterest } from '../../src/store/redis/pattern-interest.js';

// A cluster client that is not ready (its one seed accepts nothing and is closed): every
// refresh of the registry fails the same way, as at a node's start or in a failover.
let interest: PatternInterest | undefined;
let cluster: Cluster | undefined;
let closedPort: Server | undefined;

afterEach(async () => {
  interest?.close();
  cluster?.disconnect();
  vi.useRealTimers();
  await new Promise<void>((resolve) => (closedPort?.listening ? closedPort.close(() => resolve()) : resolve()));
});

async function unusedPort(): Promise<number> {
  closedPort = createServer();
  await new Promise<void>((resolve) => closedPort!.listen(0, '127.0.0.1', resolve));
  const { port } = closedPort.address() as { port: number };
  await new Promise<void>((resolve) => closedPort!.close(() => resolve()));
  return port;
}

it('logs a refresh that keeps failing once, not once a period', async () => {
  const port = await unusedPort();
  cluster = new Cluster([{ host: '127.0.0.1', port }], { lazyConnect: true, enableOfflineQueue: false });
  cluster.on('error', () => {}); // "Failed to refresh slots cache": expected here
  // Each refresh is one MULTI; its answers (here: refusals) are kept to wait for each refresh's end.
  const answers: Promise<unknown>[] = [];
  const multi = cluster.multi.bind(cluster);
  cluster.multi = ((...args: Parameters<Cluster['multi']>) => {
    const transaction = multi(...args);
    const exec = transaction.exec.bind(transaction);
    transaction.exec = () => {
      const answer = exec();
      answers.push(answer.catch(() => undefined));
      return answer;
    };
    return transaction;
  }) as Cluster['multi'];
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  const statuses: string[] = [];
  interest = new PatternInterest(
    cluster,
    'node-1',
    async () => {},
    () => {},
    (status) => statuses.push(status),
  );
  for (let period = 1; period <= 4; period++) {
    await vi.advanceTimersByTimeAsync(INTEREST_PERIOD_MS);
    expect(answers).toHaveLength(period);
    await Promise.all(answers);
    await new Promise((resolve) => setImmediate(resolve)); // the refresh's catch and finally
  }
  expect(statuses).toEqual([expect.stringMatching(/^pattern interest refresh failed/)]);
});

it('puts every workspace on its channel until it has read the registry', async () => {
  // The others wait only for nodes they count as live, which this one is not before its first
  // read: leaving the channel out then could lose events to a pattern registered meanwhile.
  const port = await unusedPort();
  cluster = new Cluster([{ host: '127.0.0.1', port }], { lazyConnect: true, enableOfflineQueue: false });
  cluster.on('error', () => {});
  interest = new PatternInterest(
    cluster,
    'node-1',
    async () => {},
    () => {},
    () => {},
  );
  expect([interest.wanted(1), interest.wanted(2)]).toEqual([true, true]);
  interest.readNow(); // refused: the cluster client is not ready
  await new Promise((resolve) => setImmediate(resolve));
  expect(interest.wanted(1)).toBe(true);
});
