// A private Redis Cluster for the scale benches (docs/scaling.md, "Redis Cluster"): `masters`
// masters with one replica each, from `redis-server --cluster-enabled yes` on free ports (no
// persistence), joined by `redis-cli --cluster create`. `stop()` kills every process and removes
// every directory; a process exit does too.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './servers.js';

/** A free port whose cluster bus port (port + 10000) is free too. */
async function freeClusterPort(taken) {
  for (;;) {
    const port = await freePort();
    if (port > 55_535 || taken.has(port) || taken.has(port + 10_000)) continue;
    const bus = net.createServer();
    const ok = await new Promise((resolve) => {
      bus.once('error', () => resolve(false));
      bus.listen(port + 10_000, '127.0.0.1', () => resolve(true));
    });
    if (!ok) continue;
    await new Promise((resolve) => bus.close(resolve));
    taken.add(port);
    taken.add(port + 10_000);
    return port;
  }
}

export const cli = (port, ...args) =>
  spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();

export async function startCluster(masters = 3) {
  const taken = new Set();
  const nodes = [];
  const stop = () => {
    for (const node of nodes) {
      if (node.child.exitCode === null) node.child.kill('SIGKILL');
      rmSync(node.dir, { recursive: true, force: true });
    }
  };
  process.on('exit', stop);
  for (let i = 0; i < masters * 2; i++) {
    const port = await freeClusterPort(taken);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'se-bench-cluster-'));
    const child = spawn(
      'redis-server',
      [
        ...['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
        ...['--cluster-enabled', 'yes', '--cluster-node-timeout', '2000'],
      ],
      { stdio: 'ignore' },
    );
    nodes.push({ port, dir, child });
    for (let k = 0; k < 100 && cli(port, 'PING') !== 'PONG'; k++) await new Promise((r) => setTimeout(r, 50));
  }
  const create = spawnSync(
    'redis-cli',
    ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (create.status !== 0) {
    stop();
    throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
  }
  // Healthy, every master's replica in sync (so that the engine's WAIT has one to count), and
  // every replica in every node's slot map: a client reads it from any node, and one that lists
  // a master without its replica makes the engine skip the WAIT for that master's slots.
  const masterPorts = () => nodes.filter((n) => cli(n.port, 'ROLE').split('\n')[0] === 'master').map((n) => n.port);
  const slotMapComplete = (port) => {
    const lines = new Set(cli(port, 'CLUSTER', 'SLOTS').split('\n'));
    return nodes.every((n) => lines.has(String(n.port)));
  };
  for (let k = 0; k < 600; k++) {
    const ok = nodes.every((n) => /cluster_state:ok/.test(cli(n.port, 'CLUSTER', 'INFO')) && slotMapComplete(n.port));
    if (ok && masterPorts().every((port) => /slave0:.*state=online/.test(cli(port, 'INFO', 'replication')))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    nodes,
    /** The seeds URL the engine takes: every node. */
    url: `redis://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    masters: () => nodes.filter((n) => cli(n.port, 'ROLE').split('\n')[0] === 'master'),
    stop,
  };
}
