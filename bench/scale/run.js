// @ts-check
// Delivered messages/s with 1, 2 and 3 broker nodes sharing one Redis (docs/scaling.md). Run by hand:
//
//   npm run build && node bench/scale/run.js [--nodes 1,2,3] [--seconds 5] [--sandboxes 10] [--subscribers 300] [--window 64] [--cluster]
//
// --cluster: the nodes share a private Redis Cluster of 3 masters with a replica each
// (bench/lib/cluster.js) instead of one redis-server.
// Runs the compiled package (dist/), starts a private
// redis-server on a free port (no persistence) and the nodes as child processes
// (`serve --engine redis://...`). This process is the load generator: one publisher
// connection per node keeping `window` PUBLISHes in flight, and `subscribers` subscriber
// connections spread evenly over the nodes and the sandboxes. It counts message frames.
// Everything runs on this machine's cores: see docs/scaling.md for what that limits.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from '../lib/build.js';
import { startCluster } from '../lib/cluster.js';
import { freePort } from '../lib/servers.js';
import { option, flag } from '../lib/args.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const nodeCounts = option('--nodes', '1,2,3').split(',').map(Number);
const seconds = Number(option('--seconds', '5'));
const sandboxes = Number(option('--sandboxes', '10'));
const subscribers = Number(option('--subscribers', '300'));
const window = Number(option('--window', '64'));
// --embedded: also run one node on the embedded memory store (no Redis), as the baseline.
const embedded = flag('--embedded');
const clustered = flag('--cluster');

const children = [];
const tempDirs = [];
function cleanUp() {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanUp);
process.on('SIGINT', () => process.exit(130));

/** The compiled package (`npm run build` first: Node 20 runs no TypeScript). */
function build() {
  const dist = path.join(root, 'dist');
  if (!existsSync(path.join(dist, 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  return dist;
}

async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'se-bench-redis-'));
  tempDirs.push(dir);
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  children.push(child);
  for (let i = 0; i < 100; i++) {
    if (spawnSync('redis-cli', ['-p', String(port), 'PING'], { encoding: 'utf8' }).stdout.trim() === 'PONG')
      return { port, child };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('redis-server did not start');
}

async function startNode(dist, redisUrl, secret) {
  const store = redisUrl === undefined ? ['--store', 'memory'] : ['--engine', redisUrl];
  // Ready once every subscriber connection is (one per master in a cluster).
  const connections = clustered ? 3 : 1;
  const child = spawn(
    process.execPath,
    [
      path.join(dist, 'cli/main.js'),
      'serve',
      ...store,
      '--port',
      '0',
      '--http-port',
      '0',
      '--jwt-secret',
      secret,
      '--log-level',
      'info',
      '--max-clients',
      '50000',
      '--data-dir',
      os.tmpdir(),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  let output = '';
  const port = await new Promise((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      output += chunk;
      const match = /"port":(\d+).*"msg":"sandbox-events listening"/.exec(output);
      const ready = output.split('redis: subscriber ready').length - 1 >= connections;
      if (match && (redisUrl === undefined || ready)) resolve(Number(match[1]));
      if (output.length > 100_000) output = output.slice(-10_000);
    });
    child.on('exit', () => reject(new Error(`node exited: ${output}`)));
  });
  child.stdout.resume();
  return { port, child };
}

function cmd(...args) {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

function connect(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

const MESSAGE = Buffer.from('*3\r\n$7\r\nmessage\r\n');

/** CPU seconds (user + system) a process used so far, from /proc (Linux; 0 elsewhere). */
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}
const cpuOf = (pids) => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
function countOf(haystack, needle) {
  let count = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + needle.length)) count++;
  return count;
}

async function runCase(dist, mint, nodes, withRedis = true) {
  const redis = !withRedis ? undefined : clustered ? await startCluster(3) : await startRedis();
  const redisUrl = redis === undefined ? undefined : clustered ? redis.url : `redis://127.0.0.1:${redis.port}`;
  const secret = `bench-secret-${Math.random().toString(36).slice(2)}`;
  const token = await mint({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
  const brokers = [];
  for (let i = 0; i < nodes; i++) brokers.push(await startNode(dist, redisUrl, secret));
  let delivered = 0;
  const subs = [];
  for (let i = 0; i < subscribers; i++) {
    const socket = await connect(brokers[i % nodes].port);
    socket.setMaxListeners(0);
    let tail = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      const data = tail.length > 0 ? Buffer.concat([tail, chunk]) : chunk;
      delivered += countOf(data, MESSAGE);
      tail = data.subarray(Math.max(0, data.length - MESSAGE.length + 1));
    });
    socket.write(cmd('AUTH', token) + cmd('SUBSCRIBE', `bench-${Math.floor(i / nodes) % sandboxes}`));
    subs.push(socket);
  }
  await new Promise((resolve) => setTimeout(resolve, 500)); // subscriptions settle
  delivered = 0;
  let published = 0;
  let errors = 0;
  let stop = false;
  const publishers = [];
  for (const broker of brokers) {
    const socket = await connect(broker.port);
    socket.write(cmd('AUTH', token));
    let n = 0;
    let inFlight = 0;
    const payload = JSON.stringify({ type: 'bench', data: { text: 'x'.repeat(100) } });
    const pump = () => {
      let out = '';
      while (!stop && inFlight < window) {
        out += cmd('PUBLISH', `bench-${n++ % sandboxes}`, payload);
        inFlight++;
      }
      if (out) socket.write(out);
    };
    let skipAuth = true;
    let pending = '';
    socket.on('data', (chunk) => {
      pending += chunk.toString('latin1');
      let at;
      while ((at = pending.indexOf('\r\n')) >= 0) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 2);
        if (skipAuth) {
          skipAuth = false;
          continue;
        }
        inFlight--;
        if (line[0] === ':') published++;
        else errors++;
      }
      pump();
    });
    publishers.push({ socket, pump });
  }
  const cpuBefore = process.cpuUsage();
  const brokerPids = brokers.map((b) => b.child.pid);
  const redisPids = redis === undefined ? [] : clustered ? redis.nodes.map((n) => n.child.pid) : [redis.child.pid];
  const brokerCpuBefore = cpuOf(brokerPids);
  const redisCpuBefore = cpuOf(redisPids);
  const startedAt = performance.now();
  for (const p of publishers) p.pump();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  stop = true;
  const elapsed = (performance.now() - startedAt) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const brokerCpu = cpuOf(brokerPids) - brokerCpuBefore;
  const redisCpu = cpuOf(redisPids) - redisCpuBefore;
  const result = {
    nodes: withRedis ? String(nodes) : '1 (memory store, no Redis)',
    published: Math.round(published / elapsed),
    delivered: Math.round(delivered / elapsed),
    errors,
    generatorCpu: ((cpu.user + cpu.system) / 1e6 / elapsed).toFixed(2),
    // CPU per 1,000 delivered messages: what the machine's contention does not change much.
    nodesMsPerK: delivered > 0 ? ((brokerCpu * 1e6) / delivered).toFixed(1) : '-',
    redisMsPerK: delivered > 0 ? ((redisCpu * 1e6) / delivered).toFixed(1) : '-',
    redisMsPerPublish: published > 0 ? ((redisCpu * 1e3) / published).toFixed(3) : '-',
  };
  for (const s of [...subs, ...publishers.map((p) => p.socket)]) s.destroy();
  for (const b of brokers) b.child.kill('SIGKILL');
  if (clustered) redis?.stop();
  else redis?.child.kill('SIGKILL');
  await new Promise((resolve) => setTimeout(resolve, 200));
  return result;
}

const dist = build();
const { mintToken } = await buildModules(dist).mint();
console.log(
  `${clustered ? 'Redis Cluster, 3 masters with a replica each; ' : ''}cores: ${os.cpus().length} (${os.cpus()[0]?.model}); ${sandboxes} sandboxes, ${subscribers} subscribers, window ${window}, ${seconds} s per case`,
);
console.log(
  'nodes | published/s | delivered/s | errors | generator CPU (cores) | nodes CPU ms / 1k delivered | Redis CPU ms / 1k delivered | Redis CPU ms / publish',
);
const cases = nodeCounts.map((nodes) => /** @type {[number, boolean]} */ ([nodes, true]));
if (embedded) cases.unshift([1, false]);
for (const [nodes, withRedis] of cases) {
  const r = await runCase(dist, mintToken, nodes, withRedis);
  console.log(
    `${String(r.nodes).padStart(5)} | ${String(r.published).padStart(11)} | ${String(r.delivered).padStart(11)} | ${String(r.errors).padStart(6)} | ${r.generatorCpu} | ${r.nodesMsPerK} | ${r.redisMsPerK} | ${r.redisMsPerPublish}`,
  );
}
process.exit(0);
