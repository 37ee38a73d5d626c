/**
 * Redis Cluster (docs/scaling.md, "Redis Cluster"): a real cluster of 3 masters with a replica
 * each, started by the test. The engine does not serve a cluster yet, so an address in one is
 * refused at start with a clear error, never half served (MOVED on two thirds of the slots).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN } from '../support/daemon.js';
import { hasRedis, newSecret, startCluster, type RedisCluster } from './support.js';

describe.skipIf(!hasRedis)('Redis Cluster', () => {
  let cluster: RedisCluster;
  const secret = newSecret();

  beforeAll(async () => {
    cluster = await startCluster(3);
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  /** Starts the daemon on `url` and returns its exit code and output. */
  async function serve(url: string): Promise<{ code: number | null; output: string }> {
    const child = spawn(
      process.execPath,
      [BIN, 'serve', '--engine', url, '--port', '0', '--jwt-secret', secret, '--data-dir', tmpdir()],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, output };
  }

  it('is a healthy cluster of 3 masters and 3 replicas', () => {
    const roles = cluster.nodes.map((node) => cluster.role(node)).sort();
    expect(roles).toEqual(['master', 'master', 'master', 'slave', 'slave', 'slave']);
    const info = cluster.nodes[0]!.cli('CLUSTER', 'INFO');
    expect(info).toMatch(/cluster_slots_assigned:16384/);
    expect(info).toMatch(/cluster_known_nodes:6/);
  });

  it('refuses one master of the cluster at start, and a replica, with a clear error', async () => {
    const master = cluster.nodes.find((node) => cluster.role(node) === 'master')!;
    const replica = cluster.nodes.find((node) => cluster.role(node) === 'slave')!;
    for (const node of [master, replica]) {
      const { code, output } = await serve(node.url);
      expect(code).toBe(1);
      expect(output).toMatch(/cannot use this Redis: the address is a node of a Redis Cluster/);
      expect(output).not.toMatch(/MOVED/);
    }
  }, 30_000);
});
