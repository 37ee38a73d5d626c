// @ts-check
// What one connected client keeps on the daemon's heap: `sandbox-events serve --store memory`
// from a build directory, a heap snapshot before and after `clients` clients have connected,
// each AUTHed with its own HS256 token and SUBSCRIBEd to its sandbox (what bench case 6 does),
// then the difference per client: objects and bytes, in all and by kind. Objects that live as
// long as their connection are what every young-generation collection during a connection
// storm copies, and then promotes (docs/performance.md, "Seventh round: per-connection cost").
// Not part of `npm run bench`.
//
//   node bench/micro/connection-heap.mjs [buildDir=dist] [clients=2000] [top=25]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildModules } from '../lib/build.js';
import { ensureFileLimit, startBroker } from '../lib/servers.js';

const [buildArg = 'dist', clientsArg = '2000', topArg = '25'] = process.argv.slice(2);
const build = resolve(buildArg);
const CLIENTS = Number(clientsArg);
ensureFileLimit(CLIENTS + 200);
const snapshots = mkdtempSync(join(tmpdir(), 'sandbox-events-heap-'));
const secret = randomBytes(32).toString('base64url');
const { mintToken } = await buildModules(build).mint();
const broker = await startBroker({
  buildDir: build,
  store: 'memory',
  secret,
  maxClients: CLIENTS + 100,
  nodeArgs: ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${snapshots}`],
});

const sleep = (/** @type {number} */ ms) => new Promise((done) => setTimeout(done, ms));

/** Has the daemon write a heap snapshot (a full GC first) and returns its path once complete. */
async function snapshot() {
  const before = new Set(readdirSync(snapshots));
  process.kill(Number(broker.pid), 'SIGUSR2');
  for (;;) {
    await sleep(500);
    const file = readdirSync(snapshots).find((name) => !before.has(name));
    if (file === undefined) continue;
    const path = join(snapshots, file);
    let size = -1;
    for (;;) {
      await sleep(1_000);
      const now = statSync(path).size;
      if (now > 0 && now === size) return path;
      size = now;
    }
  }
}

/** Objects and self bytes by kind (`type|constructor`; strings and code as one kind each). */
function census(/** @type {string} */ path) {
  const heap = JSON.parse(readFileSync(path, 'utf8'));
  const fields = heap.snapshot.meta.node_fields;
  const types = heap.snapshot.meta.node_types[0];
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ['type', 'name', 'self_size'].map((field) => fields.indexOf(field));
  /** @type {Map<string, { count: number, bytes: number }>} */
  const kinds = new Map();
  for (let i = 0; i < heap.nodes.length; i += width) {
    const type = types[heap.nodes[i + typeAt]];
    const name = /string/.test(type) ? '(string)' : type === 'code' ? '(code)' : heap.strings[heap.nodes[i + nameAt]];
    const key = `${type}|${name}`.slice(0, 80);
    const kind = kinds.get(key) ?? { count: 0, bytes: 0 };
    kind.count += 1;
    kind.bytes += heap.nodes[i + sizeAt];
    kinds.set(key, kind);
  }
  return kinds;
}

const sockets = [];
try {
  const idle = await snapshot();
  const frame = (/** @type {string[]} */ args) =>
    `*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`;
  for (let i = 0; i < CLIENTS; i++) {
    const sandboxId = `sb-${i}`;
    const token = await mintToken({ secret, workspaceId: 1, sandboxId, role: 'sandbox', ttlSeconds: 3600 });
    const socket = net.connect({ port: broker.port, host: '127.0.0.1' });
    sockets.push(socket);
    await new Promise((subscribed, failed) => {
      let replies = '';
      socket.on('error', failed);
      socket.on('data', (chunk) => {
        replies += chunk.toString('latin1');
        if (replies.startsWith('-')) failed(new Error(replies));
        else if (replies.endsWith(':1\r\n')) subscribed(undefined);
      });
      socket.write(frame(['AUTH', token]) + frame(['SUBSCRIBE', sandboxId]));
    });
  }
  const loaded = await snapshot();
  const before = census(idle);
  const after = census(loaded);
  const rows = [...after].map(([key, kind]) => {
    const was = before.get(key) ?? { count: 0, bytes: 0 };
    return { key, count: (kind.count - was.count) / CLIENTS, bytes: (kind.bytes - was.bytes) / CLIENTS };
  });
  // JIT code compiled in between is not per client.
  const perClient = rows.filter((row) => row.key !== 'code|(code)');
  const sum = (/** @type {'count' | 'bytes'} */ field) => perClient.reduce((total, row) => total + row[field], 0);
  console.log(`${build}: per connected client ${sum('count').toFixed(1)} objects, ${sum('bytes').toFixed(0)} bytes`);
  for (const row of perClient.sort((a, b) => b.bytes - a.bytes).slice(0, Number(topArg))) {
    console.log(`${row.count.toFixed(2).padStart(7)} objects ${row.bytes.toFixed(0).padStart(6)} B  ${row.key}`);
  }
} finally {
  for (const socket of sockets) socket.destroy();
  await broker.stop();
  rmSync(snapshots, { recursive: true, force: true });
}
