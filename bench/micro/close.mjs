// @ts-check
// Server CPU per closing client: `sandbox-events serve --store memory` from one or more build
// directories, `clients` clients connected one by one (each AUTHs with its own HS256 token and
// SUBSCRIBEs to its sandbox, as in bench case 6), then all closed at once, by a reset (RST:
// what bench case 6's generator does, so the daemon reads ECONNRESET) or by an end (FIN: what a
// client that closes its socket sends). The daemon's CPU from the first close to the moment
// INFO reports them all gone comes from /proc/<pid>/stat (all threads) and
// /proc/<pid>/task/<pid>/stat (the event loop). Builds and close kinds alternate, a fresh
// daemon each. Not part of `npm run bench`.
//
//   node bench/micro/close.mjs [buildDirs=dist] [clients=3000] [runs=3] [kinds=reset,end]
// `buildDirs` is a comma-separated list (a copy of an older dist/ compares before/after; it must
// resolve node_modules and ../package.json). Prints each run and, per build and kind, the
// median and range of the CPU per closed client.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { command } from '../lib/resp.js';
import { buildModules } from '../lib/build.js';
import { clockTicksPerSecond, ensureFileLimit, oneCommand, startBroker } from '../lib/servers.js';

const [buildsArg = 'dist', clientsArg = '3000', runsArg = '3', kindsArg = 'reset,end'] = process.argv.slice(2);
const builds = buildsArg.split(',').map((dir) => resolve(dir));
const CLIENTS = Number(clientsArg);
const RUNS = Number(runsArg);
const kinds = kindsArg.split(',');
const clkTck = clockTicksPerSecond();
ensureFileLimit(CLIENTS + 200);

/** utime + stime of a process (`task` false) or of its main thread, in clock ticks. */
function cpuTicks(/** @type {number} */ pid, /** @type {boolean} */ mainThread) {
  const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'latin1');
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** One client, authenticated and subscribed: resolves once the confirmation has arrived. */
function subscribedClient(/** @type {number} */ port, /** @type {string} */ token, /** @type {string} */ channel) {
  return new Promise((resolveClient, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let received = '';
    const onData = (/** @type {Buffer} */ chunk) => {
      received += chunk.toString('latin1');
      if (!received.includes('subscribe')) return;
      socket.off('data', onData);
      resolveClient(socket);
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.write(Buffer.concat([command('AUTH', token), command('SUBSCRIBE', channel)]));
  });
}

/** µs of daemon CPU per client (all threads, main thread) over closing every client by `kind`. */
async function closeRun(/** @type {string} */ build, /** @type {string} */ kind) {
  const secret = randomBytes(32).toString('base64url');
  const { mintToken } = await buildModules(build).mint();
  const broker = await startBroker({ buildDir: build, store: 'memory', secret, maxClients: CLIENTS + 100 });
  const pid = /** @type {number} */ (broker.pid);
  try {
    const adminToken = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3600 });
    /** @type {net.Socket[]} */
    const sockets = [];
    for (let i = 0; i < CLIENTS; i++) {
      const sandboxId = `sb-${i}`;
      const token = await mintToken({ secret, workspaceId: 1, sandboxId, role: 'sandbox', ttlSeconds: 3600 });
      sockets.push(await subscribedClient(broker.port, token, sandboxId));
    }
    for (const socket of sockets) socket.on('error', () => {});
    const total0 = cpuTicks(pid, false);
    const main0 = cpuTicks(pid, true);
    for (const socket of sockets) {
      if (kind === 'reset') socket.resetAndDestroy();
      else socket.end();
    }
    for (;;) {
      const info = await oneCommand(broker.port, ['INFO', 'clients'], adminToken);
      if (/connected_clients:1\r\n/.test(info)) break;
      await new Promise((resolveWait) => setTimeout(resolveWait, 50));
    }
    const perClient = (/** @type {number} */ ticks) => ((ticks / clkTck) * 1e6) / CLIENTS;
    const cost = {
      total: perClient(cpuTicks(pid, false) - total0),
      main: perClient(cpuTicks(pid, true) - main0),
    };
    for (const socket of sockets) socket.destroy();
    return cost;
  } finally {
    await broker.stop();
  }
}

const median = (/** @type {number[]} */ values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const range = (/** @type {number[]} */ values) =>
  `median ${median(values).toFixed(0)} µs (${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)})`;

/** @type {Map<string, { total: number, main: number }[]>} */
const results = new Map();
for (let run = 0; run < RUNS; run++) {
  for (const build of builds) {
    for (const kind of kinds) {
      const cost = await closeRun(build, kind);
      const key = `${build} ${kind}`;
      results.set(key, [...(results.get(key) ?? []), cost]);
      console.log(`run ${run + 1} ${key}: ${cost.total.toFixed(0)} µs/client (main thread ${cost.main.toFixed(0)})`);
    }
  }
}
for (const [key, costs] of results) {
  console.log(
    `${key}: server CPU per closed client ${range(costs.map((c) => c.total))}, main thread ${range(costs.map((c) => c.main))}`,
  );
}
