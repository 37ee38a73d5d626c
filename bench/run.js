// @ts-check
// sandbox-events against redis-server, same load generator, same run (docs/performance.md; the store
// figures too). Usage:
//
//   npm run bench                     full run, both stores (about 4 minutes)
//   npm run bench -- --quick          short windows, small fills, default store, no 4b (~35 s)
//   npm run bench -- --cases 1,2      only some cases (1 2 3 4 4b 5 6 pub hist; opt-in growth
//                                     tables: gsubs gsandboxes gpayload, or growth for all three)
//   npm run bench -- --stores memory  only some broker stores (sqlite, memory; both by default,
//                                     sqlite alone with --quick)
//   npm run bench -- --peers nats     peer servers beside Redis PUBLISH in the fan-out cases:
//                                     redis-xadd, redis-lua, nats (default redis-xadd,nats; none)
//   npm run bench -- --profile        run the broker under --cpu-prof (profiles in .bench-out/prof,
//                                     summarise with node bench/profile-summary.js <file>)
//   npm run bench -- --build <dir>    run the broker compiled in <dir> instead of dist/ (A/B runs)
//   npm run bench -- --node-args "--single-threaded-gc"   node flags for the broker's process
//   npm run bench -- --case4-rate 500000   case 4 at this many delivered msg/s instead of half of
//                                     Redis's case-1 rate (A/B runs at the same offered load)
//
// The broker runs from dist/, as users run it: `npm run build` first (the run stops if dist/
// is missing, and warns when src/ changed after it was built).
// Everything listens on 127.0.0.1, every step has a time limit, and the servers, generators
// and temp dirs go away at the end, on an error, and on Ctrl-C. docs/performance.md explains
// the cases and the figures.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModules } from './lib/build.js';
import { channels, fanoutJob, PAYLOAD_BYTES, TOPOLOGY } from './lib/fanout.js';
import { renderTable } from './lib/report.js';
import {
  cleanUp,
  clockTicksPerSecond,
  ensureFileLimit,
  natsServerBinary,
  rssBytes,
  runGenerator,
  startBroker,
  startNats,
  startRedis,
  tempDir,
} from './lib/servers.js';
import { option, flag } from './lib/args.js';
import { eventData } from './lib/event-data.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// ---- options -----------------------------------------------------------------------------

if (flag('--help') || flag('-h')) {
  console.log(
    readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1, 24)
      .join('\n'),
  );
  process.exit(0);
}
const quick = flag('--quick');
const DEFAULT_CASES = ['1', '2', '3', '4', '4b', '5', '6', 'pub', 'hist'];
/** The growth tables: opt-in (a few minutes each), `growth` stands for all three. */
const GROWTH_CASES = ['gsubs', 'gpayload', 'gsandboxes'];
const ALL_CASES = [...DEFAULT_CASES, ...GROWTH_CASES];
// --quick leaves out 4b (light-load latency) unless asked for.
const cases = new Set(
  (option('--cases') ?? DEFAULT_CASES.filter((c) => !(quick && c === '4b')).join(','))
    .split(',')
    .flatMap((c) => (c === 'growth' ? GROWTH_CASES : [c])),
);
const stores = (option('--stores') ?? (quick ? 'sqlite' : 'sqlite,memory')).split(',');
const ALL_PEERS = ['redis-xadd', 'redis-lua', 'nats'];
const peerOption = option('--peers') ?? (quick ? 'none' : 'redis-xadd,nats');
const peers = peerOption === 'none' ? [] : peerOption.split(',');
for (const p of peers) if (!ALL_PEERS.includes(p)) throw new Error(`unknown peer ${p} (${ALL_PEERS.join(', ')})`);
const profile = flag('--profile');
const prebuilt = option('--build');
/** Node/V8 flags put before the broker's script (A/B runs of flags, docs/performance.md "Tenth round: V8 flags"). */
const brokerNodeArgs = (option('--node-args') ?? '').split(' ').filter((arg) => arg !== '');
/** Case 4's offered load in delivered msg/s, fixed (undefined: half of Redis's case-1 rate). */
const case4Rate = option('--case4-rate') === undefined ? undefined : Number(option('--case4-rate'));
if (case4Rate !== undefined && !(case4Rate > 0)) throw new Error('--case4-rate takes delivered msg/s, above 0');
for (const c of cases) if (!ALL_CASES.includes(c)) throw new Error(`unknown case ${c}`);
for (const s of stores) if (!['sqlite', 'memory'].includes(s)) throw new Error(`unknown store ${s}`);

const S = quick
  ? {
      warmupMs: 500,
      measureMs: 1_000,
      latencyWarmupMs: 500,
      latencyMeasureMs: 1_000,
      latencyDrainMs: 1_000,
      idleConnections: 5_000,
      idleSettleMs: 700,
      stormClients: 5_000,
      pubEvents: 20_000,
      pubSandboxes: 100,
      historyEvents: 20_000,
      historySandboxes: 200,
      queries: 300,
      growthWarmupMs: 500,
      growthMeasureMs: 1_000,
    }
  : {
      warmupMs: 2_000,
      measureMs: 8_000,
      latencyWarmupMs: 1_000,
      latencyMeasureMs: 8_000,
      latencyDrainMs: 3_000,
      idleConnections: 10_000,
      idleSettleMs: 3_000,
      stormClients: 5_000,
      pubEvents: 200_000,
      pubSandboxes: 100,
      historyEvents: 1_000_000,
      historySandboxes: 1_000,
      queries: 5_000,
      growthWarmupMs: 1_000,
      growthMeasureMs: 4_000,
    };
/** Generator busy % from which a figure is marked as (possibly) limited by the generator. */
const GENERATOR_BOUND = 90;
const PEER_LABELS = {
  'redis-xadd': 'redis XADD+PUBLISH (pipelined)',
  'redis-lua': 'redis XADD+PUBLISH (Lua)',
  nats: 'NATS JetStream',
};
/** Growth table rows: key (`gsubs-0`...) -> the shape's label. */
const growthLabels = {};
/** Case 4: publishes/s at half of Redis's case-1 rate (docs/performance.md); 4b: a light, fixed load. */
const LIGHT_PUBLISHES_PER_SECOND = 1_000;

// ---- clean-up on every way out -------------------------------------------------------------

let interrupted = false;
process.on('exit', cleanUp);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    if (interrupted) process.exit(1);
    interrupted = true;
    console.error(`\n${signal}: stopping servers and generators, removing temp files`);
    cleanUp();
    process.exit(130);
  });
}

// ---- helpers ---------------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const range = (n, f) => Array.from({ length: n }, (_, i) => f(i));
const clkTck = clockTicksPerSecond();
const t0 = Date.now();
const log = (text) =>
  process.stderr.write(
    `${text.startsWith('  ') ? '' : `[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] `}${text}\n`,
  );

/** The broker must be compiled; a build older than the sources measures old code. */
function checkBuild(buildDir) {
  const main = join(buildDir, 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` first`);
  if (prebuilt) return;
  const built = statSync(main).mtimeMs;
  const newer = [];
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith('.ts') && statSync(path).mtimeMs > built) newer.push(path.slice(root.length + 1));
    }
  };
  walk(join(root, 'src'));
  if (newer.length > 0) {
    log(
      `warning: ${newer.length} source file(s) changed after dist/ was built (${newer.slice(0, 3).join(', ')}${newer.length > 3 ? ', ...' : ''}): run \`npm run build\` to measure them`,
    );
  }
}

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let nproc = os.cpus().length;
  try {
    nproc = Number(execFileSync('nproc', { encoding: 'utf8' }).trim());
  } catch {
    // keep os.cpus()
  }
  return { nproc, model, node: process.version, kernel: os.release(), memGiB: (os.totalmem() / 2 ** 30).toFixed(1) };
}

/** Takes RSS a few times, `everyMs` apart, and returns the last (after the heap settled). */
async function settledRss(pid, settleMs) {
  const samples = [];
  const end = Date.now() + settleMs;
  while (Date.now() < end) {
    samples.push(rssBytes(pid));
    await sleep(250);
  }
  samples.push(rssBytes(pid));
  return samples[samples.length - 1];
}

// ---- the cases ---------------------------------------------------------------------------------

/**
 * The growth tables (opt-in cases): one shape varied at a time. Sandboxes get one subscriber
 * each, on min(sandboxes, 1,000) connections (100 sandboxes per connection at 100,000); the
 * memory and CPU per sandbox at rest are bench/ material of their own, not these tables.
 */
const GROWTH = {
  gsubs: [1, 10, 100, 1_000].map((subs) => ({
    label: `1 sandbox × ${subs.toLocaleString('en')} subs`,
    channels: channels(1),
    subsPerChannel: subs,
    publishers: 2,
    depth: 1_024,
    batch: 64,
  })),
  gpayload: [128, 4_096, 65_536].map((bytes) => ({
    label: `100 sandboxes × 10 subs, ${bytes < 1024 ? `${bytes} B` : `${bytes / 1024} KiB`} payload`,
    channels: channels(100),
    subsPerChannel: 10,
    publishers: 10,
    depth: 512,
    batch: 50,
    payloadSize: bytes,
  })),
  gsandboxes: [100, 10_000, 100_000].map((count) => ({
    label: `${count.toLocaleString('en')} sandboxes × 1 sub`,
    channels: channels(count),
    subsPerChannel: 1,
    channelsPerSubscriber: Math.max(1, count / 1_000),
    publishers: 10,
    depth: 512,
    batch: 50,
  })),
};

/** What a fan-out job sends to a target: its dialect (docs/performance.md, "Peers"). */
function speaking(target, server) {
  return { auth: target.auth, dialect: target.dialect, luaSha: server.luaSha };
}

/** One closed-loop fan-out run (bench/lib/fanout.js says how the window is bounded). */
async function fanoutRun(topology, server, target, { warmupMs = S.warmupMs, measureMs = S.measureMs } = {}) {
  return runGenerator(
    fanoutJob(topology, {
      port: server.port,
      pid: server.pid,
      clkTck,
      warmupMs,
      measureMs,
      ...speaking(target, server),
    }),
    { timeoutMs: 300_000 },
  );
}

async function latencyCase(server, target, deliveredRate) {
  const topology = TOPOLOGY[1];
  return runGenerator(
    {
      kind: 'latency',
      port: server.port,
      pid: server.pid,
      clkTck,
      ...speaking(target, server),
      payloadSize: PAYLOAD_BYTES,
      rate: deliveredRate / topology.subsPerChannel,
      warmupMs: S.latencyWarmupMs,
      measureMs: S.latencyMeasureMs,
      drainMs: S.latencyDrainMs,
      ...topology,
    },
    { timeoutMs: 120_000 },
  );
}

/** Case 5: RSS growth per idle subscribed connection, each on its own sandbox. */
async function idleCase(server, auths) {
  // Warm the server's code paths first, so the baseline already has them.
  await runGenerator(
    { kind: 'idle', port: server.port, pid: server.pid, clkTck, auth: auths.slice(0, 200), channels: channels(200) },
    { timeoutMs: 60_000 },
  );
  const before = await settledRss(server.pid, S.idleSettleMs);
  let after;
  const result = await runGenerator(
    {
      kind: 'idle',
      port: server.port,
      pid: server.pid,
      clkTck,
      auth: auths,
      channels: channels(auths.length),
      connectConcurrency: 500,
    },
    {
      timeoutMs: 120_000,
      onReady: async () => {
        after = await settledRss(server.pid, S.idleSettleMs);
      },
    },
  );
  if (after === undefined) throw new Error('the idle connections were never ready');
  return { ...result, before, after, perConnection: (after - before) / auths.length };
}

async function stormCase(server, auths) {
  return runGenerator(
    {
      kind: 'storm',
      port: server.port,
      pid: server.pid,
      clkTck,
      auth: auths,
      channels: channels(auths.length),
      timeoutMs: 30_000,
    },
    { timeoutMs: 60_000 },
  );
}

/**
 * Redis keeping history in one script: the event goes into the sandbox's stream (trimmed to
 * about ARGV[2] entries, as the broker keeps 10,000 per sandbox), and subscribers get it with
 * its stream id in front, so they can resume from it with XRANGE/XREAD.
 */
const HISTORY_SCRIPT = `local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('PUBLISH', KEYS[1], id .. ' ' .. ARGV[1])
return id`;

async function loadHistoryScript(server) {
  const reply = await server.command('SCRIPT', 'LOAD', HISTORY_SCRIPT);
  const sha = /^\$40\r\n([0-9a-f]{40})\r\n/.exec(reply)?.[1];
  if (sha === undefined) throw new Error(`SCRIPT LOAD failed: ${reply.trim()}`);
  return sha;
}

/** A 128-byte event as both servers get it. */
function fillPayload() {
  const text = JSON.stringify({ type: 'bench.fill', data: { p: '' } });
  return JSON.stringify({ type: 'bench.fill', data: { p: 'x'.repeat(PAYLOAD_BYTES - text.length) } });
}

/** Store: one client pipelining appends, round robin over a few sandboxes, fresh store. */
async function publishCase(server, auth, isRedis) {
  const payload = fillPayload();
  const commands = channels(S.pubSandboxes).map((channel) =>
    isRedis ? ['XADD', channel, 'MAXLEN', '~', '10000', '*', 'e', payload] : ['PUBLISH', channel, payload],
  );
  return runGenerator(
    {
      kind: 'pipeline',
      port: server.port,
      pid: server.pid,
      clkTck,
      auth,
      commands,
      total: S.pubEvents,
      depth: 1_000,
      batch: 100,
      warmupFraction: 0.1,
    },
    { timeoutMs: 300_000 },
  );
}

/** Fills a server over TCP for the history case, one sandbox after the other. */
async function fillOverTcp(server, auth, isRedis) {
  const payload = fillPayload();
  const perSandbox = S.historyEvents / S.historySandboxes;
  const commands = channels(S.historySandboxes).map((channel) =>
    isRedis ? ['XADD', channel, '*', 'e', payload] : ['PUBLISH', channel, payload],
  );
  return runGenerator(
    {
      kind: 'pipeline',
      port: server.port,
      pid: server.pid,
      clkTck,
      auth,
      commands,
      total: S.historyEvents,
      depth: 1_000,
      batch: 100,
      repeatEach: perSandbox,
      warmupFraction: 0,
    },
    { timeoutMs: 600_000 },
  );
}

/**
 * Fills a SQLite file through the store class, in this process, before the broker opens it:
 * much faster than over TCP. One sandbox after the other, as a long-running broker's file
 * would be laid out after compaction; ids and timestamps are the store's own.
 */
async function prefillSqlite(buildDir, path) {
  const { SqliteStore } = await buildModules(buildDir).sqliteStore();
  const store = SqliteStore.open({ path, retention: { maxCount: 10_000, maxAgeMs: 86_400_000 }, pruneIntervalMs: 0 });
  const perSandbox = S.historyEvents / S.historySandboxes;
  const data = Buffer.from(JSON.stringify(JSON.parse(fillPayload()).data));
  let started = 0;
  let done = 0;
  await /** @type {Promise<void>} */ (
    new Promise((resolve, reject) => {
      const next = () => {
        if (started >= S.historyEvents) return;
        const i = started++;
        store
          .append({
            workspaceId: 1,
            sandboxId: `sb-${Math.floor(i / perSandbox)}`,
            type: 'bench.fill',
            ...eventData(data),
          })
          .then(() => (++done === S.historyEvents ? resolve() : next()), reject);
      };
      for (let k = 0; k < 5_000; k++) next();
    })
  );
  await store.close();
}

async function historyCase(server, auth, isRedis) {
  const commands = channels(S.historySandboxes).map((channel) =>
    isRedis ? ['XRANGE', channel, '-', '+', 'COUNT', '100'] : ['HISTORY', channel, 'LIMIT', '100'],
  );
  return runGenerator(
    { kind: 'query', port: server.port, pid: server.pid, clkTck, auth, commands, count: S.queries, warmup: 200 },
    { timeoutMs: 120_000 },
  );
}

// ---- main ------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  try {
    execFileSync('redis-server', ['--version']);
  } catch {
    throw new Error('redis-server is not installed (Debian: apt-get install redis-server)');
  }
  const needsManySockets = cases.has('5') || cases.has('6');
  ensureFileLimit(needsManySockets ? S.idleConnections + 2_000 : 4_000);

  const buildDir = resolve(root, prebuilt ?? 'dist');
  checkBuild(buildDir);
  const { mintToken } = await buildModules(buildDir).mint();
  const secret = randomBytes(32).toString('base64url');
  const redisPassword = randomBytes(16).toString('hex');
  const workspaceToken = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 3 * 3600 });
  // Cases 5 and 6: every client has its own sandbox token, as real sandbox watchers would.
  const clientCount = Math.max(S.idleConnections, S.stormClients);
  const sandboxTokens = needsManySockets
    ? await Promise.all(
        range(clientCount, (i) =>
          mintToken({ secret, workspaceId: 1, sandboxId: `sb-${i}`, role: 'sandbox', ttlSeconds: 3 * 3600 }),
        ),
      )
    : [];

  // The storm measures token verification too: no two clients share a token, so the broker's
  // cache of verified tokens saves nothing.
  if (new Set(sandboxTokens).size !== sandboxTokens.length) throw new Error('two clients got the same token');

  const profDir = join(root, '.bench-out', 'prof');
  if (profile) mkdirSync(profDir, { recursive: true });
  const brokerOptions = (store) => ({
    buildDir,
    store,
    secret,
    nodeArgs: [...brokerNodeArgs, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [])],
  });
  const natsToken = randomBytes(16).toString('hex');
  if (peers.includes('nats') && natsServerBinary() === undefined) {
    throw new Error(
      'nats-server is not installed (Debian: apt-get install nats-server), or run with --peers redis-xadd',
    );
  }
  const redisTarget = {
    name: 'redis',
    dialect: 'resp',
    start: () => startRedis({ password: redisPassword }),
    auth: redisPassword,
    manyAuth: (n) => range(n, () => redisPassword),
  };
  // The peers: servers that keep history, in the fan-out cases and growth tables only.
  const peerTargets = peers.map((name) =>
    name === 'nats'
      ? { name, peer: true, dialect: 'nats', start: () => startNats({ token: natsToken }), auth: natsToken }
      : {
          name,
          peer: true,
          dialect: name === 'redis-xadd' ? 'resp-xadd' : 'resp-lua',
          start: async () => {
            const server = await startRedis({ password: redisPassword });
            if (name === 'redis-lua') server.luaSha = await loadHistoryScript(server);
            return server;
          },
          auth: redisPassword,
        },
  );
  const brokerTargets = stores.map((store) => ({
    name: store,
    dialect: 'resp',
    start: () => startBroker(brokerOptions(store)),
    auth: workspaceToken,
    manyAuth: (n) => sandboxTokens.slice(0, n),
  }));
  const fanTargets = [redisTarget, ...peerTargets, ...brokerTargets];
  const targets = [redisTarget, ...brokerTargets];

  const info = machine();
  const loadBefore = os.loadavg();
  log(
    `machine: ${info.nproc} cpus, ${info.model}, node ${info.node}, load ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`,
  );
  const results = {}; // results[case][target]
  const warnings = {};
  const put = (key, target, value) => {
    results[key] ??= {};
    results[key][target] = value;
  };
  const fail = (key, target, error) => {
    log(`  ${key} ${target}: FAILED ${error.message.split('\n')[0]}`);
    put(key, target, { error: error.message.split('\n')[0] });
  };
  const noteWarnings = (server, key) => {
    if (!server.log || server.log.warnings.size === 0) return;
    warnings[`${key} ${server.name}`] = Object.fromEntries(server.log.warnings);
    server.log.warnings.clear();
  };
  let redisVersion;
  let natsVersion;

  // Cases 1-4 share one server per target; they run target by target within each case, so
  // background load drifts over all targets alike.
  const fanCases = ['1', '2', '3', '4', '4b'].filter((c) => cases.has(c));
  if (fanCases.length > 0) {
    const servers = {};
    for (const target of fanTargets) {
      servers[target.name] = await target.start();
      if (target.name === 'redis') redisVersion = servers.redis.version;
      if (target.name === 'nats') natsVersion = servers.nats.version;
    }
    for (const c of fanCases) {
      for (const target of fanTargets) {
        const server = servers[target.name];
        log(`case ${c} on ${target.name} ...`);
        try {
          let result;
          if (c === '4') {
            const redisRate = results['1']?.redis?.delivered;
            if (case4Rate === undefined && !redisRate) throw new Error('case 4 needs case 1 on Redis first');
            result = await latencyCase(server, target, case4Rate ?? redisRate / 2);
          } else if (c === '4b') {
            result = await latencyCase(server, target, LIGHT_PUBLISHES_PER_SECOND * TOPOLOGY[1].subsPerChannel);
          } else {
            result = await fanoutRun(TOPOLOGY[c], server, target);
          }
          put(c, target.name, result);
          log(`  ${describe(c, result)}`);
        } catch (error) {
          fail(c, target.name, error);
        }
        noteWarnings(server, `case ${c}`);
      }
    }
    for (const server of Object.values(servers)) await server.stop();
  }

  // Growth tables: one server per target for each table, shapes from small to large.
  for (const g of GROWTH_CASES.filter((c) => cases.has(c))) {
    const servers = {};
    for (const target of fanTargets) {
      servers[target.name] = await target.start();
      if (target.name === 'redis') redisVersion = servers.redis.version;
      if (target.name === 'nats') natsVersion = servers.nats.version;
    }
    for (const [index, shape] of GROWTH[g].entries()) {
      const key = `${g}-${index}`;
      growthLabels[key] = shape.label;
      for (const target of fanTargets) {
        log(`${g}: ${shape.label} on ${target.name} ...`);
        try {
          const result = await fanoutRun(shape, servers[target.name], target, {
            warmupMs: S.growthWarmupMs,
            measureMs: S.growthMeasureMs,
          });
          put(key, target.name, result);
          log(`  ${describe('1', result)}`);
        } catch (error) {
          fail(key, target.name, error);
        }
        noteWarnings(servers[target.name], key);
      }
    }
    for (const server of Object.values(servers)) await server.stop();
  }

  // Cases 5 and 6: a fresh server each, so the baseline and the accept queue are clean.
  for (const c of ['5', '6'].filter((x) => cases.has(x))) {
    for (const target of targets) {
      log(`case ${c} on ${target.name} ...`);
      const server = await target.start();
      redisVersion ??= server.version;
      try {
        const result =
          c === '5'
            ? await idleCase(server, target.manyAuth(S.idleConnections))
            : await stormCase(server, target.manyAuth(S.stormClients));
        put(c, target.name, result);
        log(`  ${describe(c, result)}`);
      } catch (error) {
        fail(c, target.name, error);
      }
      noteWarnings(server, `case ${c}`);
      await server.stop();
    }
  }

  // Store: publish throughput of one pipelining client on a fresh store.
  if (cases.has('pub')) {
    for (const target of targets) {
      log(`store: ${S.pubEvents.toLocaleString('en')} pipelined appends on ${target.name} ...`);
      const server = await target.start();
      redisVersion ??= server.version;
      try {
        const pub = await publishCase(server, target.auth, target.name === 'redis');
        put('pub', target.name, pub);
        log(`  ${describe('pub', pub)}`);
      } catch (error) {
        fail('pub', target.name, error);
      }
      noteWarnings(server, 'store');
      await server.stop();
    }
  }

  // Store: history latency on a full store (1,000,000 events over 1,000 sandboxes).
  if (cases.has('hist')) {
    for (const target of targets) {
      log(
        `history: ${S.historyEvents.toLocaleString('en')} events over ${S.historySandboxes} sandboxes on ${target.name} ...`,
      );
      const isRedis = target.name === 'redis';
      let server;
      try {
        const fillStarted = Date.now();
        if (target.name === 'sqlite') {
          const dir = tempDir('prefill');
          const path = join(dir, 'events.db');
          await prefillSqlite(buildDir, path);
          server = await startBroker({ ...brokerOptions('sqlite'), sqlitePath: path });
        } else {
          server = await target.start();
          await fillOverTcp(server, target.auth, isRedis);
        }
        redisVersion ??= server.version;
        log(`  filled in ${((Date.now() - fillStarted) / 1000).toFixed(1)} s`);
        const hist = await historyCase(server, target.auth, isRedis);
        put('hist', target.name, { ...hist, rss: rssBytes(server.pid) });
        log(`  ${describe('hist', hist)}`);
      } catch (error) {
        fail('hist', target.name, error);
      }
      if (server) {
        noteWarnings(server, 'history');
        await server.stop();
      }
    }
  }

  const loadAfter = os.loadavg();
  const table = renderTable(rows(results), [
    { name: 'redis', label: 'redis PUBLISH' },
    ...peers.map((name) => ({ name, label: PEER_LABELS[name] })),
    ...stores.map((store) => ({
      name: store,
      label: `broker ${store}`,
      // SQLite keeps every event as the history-keeping peers do; the memory store is paired
      // with plain PUBLISH.
      vs:
        store === 'sqlite' && peers.some((p) => p.startsWith('redis-'))
          ? peers.find((p) => p.startsWith('redis-'))
          : 'redis',
    })),
  ]);
  const lines = [
    '',
    `sandbox-events bench (${quick ? 'quick' : 'full'}), ${new Date().toISOString()}`,
    `machine: ${info.nproc} cpus (${info.model}), ${info.memGiB} GiB, Linux ${info.kernel}; node ${info.node}; redis-server ${redisVersion ?? '?'}${natsVersion ? `; nats-server ${natsVersion}` : ''}`,
    `load average before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')}` +
      (loadBefore[0] > 0.5 ? '  (the machine was not idle: figures are noisy)' : ''),
    ...(brokerNodeArgs.length > 0 ? [`broker node flags: ${brokerNodeArgs.join(' ')}`] : []),
    `took ${((Date.now() - started) / 1000).toFixed(0)} s; ratio = broker / its peer (the column named in the header); generator busy > 90 % means the generator, not the server, may be the limit`,
    '',
    table,
    '',
  ];
  if (results['6']) {
    lines.push(
      `storm: ${Object.entries(results['6'])
        .map(
          ([t, r]) =>
            `${t} connected p50 ${r.connectedP50?.toFixed(2)} s / max ${r.connectedMax?.toFixed(2)} s, subscribed p50 ${r.subscribedP50?.toFixed(2)} s`,
        )
        .join('; ')}`,
    );
  }
  if (quick)
    lines.push(
      `--quick: ${S.idleConnections.toLocaleString('en')} idle connections in case 5, short windows; numbers are indicative only`,
    );
  lines.push('');
  if (Object.keys(warnings).length > 0) lines.push(`server warnings: ${JSON.stringify(warnings)}`, '');
  const errors = Object.entries(results).flatMap(([c, byTarget]) =>
    Object.entries(byTarget)
      .filter(([, r]) => r.error || r.lost > 0 || r.dropped > 0 || r.errors > 0 || r.failed > 0)
      .map(
        ([t, r]) =>
          `case ${c} ${t}: ${r.error ?? `lost ${r.lost ?? 0}, dropped ${r.dropped ?? 0}, errors ${r.errors ?? r.failed ?? 0} ${r.firstError ?? ''}`}`,
      ),
  );
  const overloaded = Object.entries(results).flatMap(([c, byTarget]) =>
    Object.entries(byTarget)
      .filter(([, r]) => fellBehind(r))
      .map(
        ([t, r]) =>
          `case ${c} ${t}: offered ${Math.round(r.offered).toLocaleString('en')} msg/s, sent ${Math.round(r.published * TOPOLOGY[1].subsPerChannel).toLocaleString('en')}, ` +
          `delivered ${Math.round(r.delivered).toLocaleString('en')} msg/s, ${r.behind.toLocaleString('en')} still undelivered ${S.latencyDrainMs / 1000} s after the end`,
      ),
  );
  if (Object.values(results).some((byTarget) => Object.values(byTarget).some((r) => r.genBusy >= GENERATOR_BOUND))) {
    lines.push(
      `† the generator was ≥ ${GENERATOR_BOUND} % busy: a throughput marked so is a lower bound of what that server does, a latency includes the generator's own delay`,
      '',
    );
  }
  if (overloaded.length > 0)
    lines.push(
      '‡ could not keep up with the offered rate (its latency is time spent queued):',
      ...overloaded.map((e) => `  ${e}`),
      '',
    );
  if (errors.length > 0) lines.push('problems:', ...errors.map((e) => `  ${e}`), '');
  console.log(lines.join('\n'));
  mkdirSync(join(root, '.bench-out'), { recursive: true });
  const partial =
    option('--cases') !== undefined ||
    option('--stores') !== undefined ||
    option('--peers') !== undefined ||
    prebuilt !== undefined ||
    brokerNodeArgs.length > 0 ||
    case4Rate !== undefined ||
    profile;
  const jsonPath = join(root, '.bench-out', `bench-${quick ? 'quick' : 'full'}${partial ? '-partial' : ''}.json`);
  writeFileSync(
    jsonPath,
    JSON.stringify(
      { machine: info, redisVersion, natsVersion, quick, peers, loadBefore, loadAfter, results, warnings },
      null,
      2,
    ),
  );
  log(`raw results: ${jsonPath}${profile ? `; CPU profiles: ${profDir} (node bench/profile-summary.js <file>)` : ''}`);
}

/**
 * A latency run whose server did not keep up: deliveries lagged what was sent by more than 3 %
 * over the window, or were still outstanding 3 s after it.
 */
function fellBehind(r) {
  if (r.offered === undefined) return false;
  return r.behind > 0 || r.delivered < r.published * TOPOLOGY[1].subsPerChannel * 0.97;
}

/** Server CPU time per delivered message: comparable across runs even when the machine is busy. */
function cpuPerMessage(r) {
  return cpuMicrosPerMessage(r)?.toFixed(2) ?? '?';
}

function writesPerMessage(r) {
  return r.srvWriteCalls === undefined || !r.srvWriteCalls
    ? '?'
    : ((r.delivered * r.seconds) / r.srvWriteCalls).toFixed(1);
}

function describe(c, r) {
  if (c === '4' || c === '4b')
    return `p50 ${r.p50?.toFixed(3)} ms, p99 ${r.p99?.toFixed(3)} ms, max ${r.max?.toFixed(2)} ms, ${Math.round(r.delivered)} msg/s, gen ${Math.round(r.genBusy)} %, srv ${Math.round(r.srvBusy)} %`;
  if (c === '5')
    return `${Math.round(r.perConnection)} B/conn (rss ${(r.before / 2 ** 20).toFixed(1)} -> ${(r.after / 2 ** 20).toFixed(1)} MiB), setup ${r.seconds.toFixed(2)} s`;
  if (c === '6')
    return (
      `${r.seconds.toFixed(2)} s, ${r.subscribed} subscribed, ${r.failed} failed ${r.firstError ?? ''}; ` +
      `connected p50/p90/max ${r.connectedP50?.toFixed(2)}/${r.connectedP90?.toFixed(2)}/${r.connectedMax?.toFixed(2)} s, ` +
      `subscribed p50/p90 ${r.subscribedP50?.toFixed(2)}/${r.subscribedP90?.toFixed(2)} s, ${r.after1s} after 1 s; gen ${Math.round(r.genBusy)} %, srv ${Math.round(r.srvBusy)} %`
    );
  if (c === 'pub')
    return `${Math.round(r.rate)} appends/s, gen ${Math.round(r.genBusy)} %, srv ${Math.round(r.srvBusy)} %`;
  if (c === 'hist') return `p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms, max ${r.max.toFixed(2)} ms`;
  return `${Math.round(r.delivered)} msg/s delivered (${Math.round(r.published)} publishes/s), gen ${Math.round(r.genBusy)} %, srv ${Math.round(r.srvBusy)} % = ${cpuPerMessage(r)} µs server CPU per message, ${writesPerMessage(r)} messages per server write call, lost ${r.lost}, dropped ${r.dropped}`;
}

/** Server CPU time per delivered message, in µs: comparable across runs when the machine is busy. */
function cpuMicrosPerMessage(r) {
  return r.srvBusy === undefined || !r.delivered ? undefined : (r.srvBusy / 100 / r.delivered) * 1e6;
}

function rows(results) {
  const pick = (key, f) => {
    const out = { values: {}, gen: {}, srv: {}, marks: {} };
    for (const [target, r] of Object.entries(results[key] ?? {})) {
      out.values[target] = r.error ? undefined : f(r);
      // † the generator was the limit; ‡ the server fell behind the offered rate.
      out.marks[target] = (r.genBusy >= GENERATOR_BOUND && key !== '5' ? '†' : '') + (fellBehind(r) ? '‡' : '');
      out.gen[target] = r.genBusy;
      out.srv[target] = r.srvBusy;
    }
    return out;
  };
  const atLeast = (times) => ({ text: `≥ ${times.toFixed(1)}x`, check: (v, peer) => v >= peer * times });
  const atMost = (times) => ({ text: `≤ ${times.toFixed(1)}x`, check: (v, peer) => v <= peer * times });
  const cpuRow = (key, id, target) => ({
    key,
    id,
    name: '↳ server CPU per delivered message',
    unit: 'µs',
    format: 'cpu',
    f: cpuMicrosPerMessage,
    target,
  });
  const list = [
    {
      key: '1',
      id: '1',
      name: 'fan-out, 1,000 subs over 100 sandboxes, 128 B',
      unit: 'msg/s',
      format: 'int',
      f: (r) => r.delivered,
      target: atLeast(1),
    },
    cpuRow('1', '1', atMost(1)),
    {
      key: '2',
      id: '2',
      name: 'fan-out, 10 subs of 1 sandbox',
      unit: 'msg/s',
      format: 'int',
      f: (r) => r.delivered,
      target: atLeast(1),
    },
    cpuRow('2', '2', atMost(1)),
    {
      key: '3',
      id: '3',
      name: '5,000 sandboxes, 1 sub each',
      unit: 'msg/s',
      format: 'int',
      f: (r) => r.delivered,
      target: atLeast(0.8),
    },
    cpuRow('3', '3'),
    {
      key: '4',
      id: '4',
      name: `latency p50 at ${case4Rate === undefined ? '½ redis case-1 rate' : `${case4Rate.toLocaleString('en')} msg/s`}`,
      unit: 'ms',
      format: 'ms',
      f: (r) => r.p50,
    },
    { key: '4', id: '4', name: 'latency p99', unit: 'ms', format: 'ms', f: (r) => r.p99, target: atMost(1) },
    { key: '4', id: '4', name: 'latency max', unit: 'ms', format: 'ms', f: (r) => r.max },
    cpuRow('4', '4'),
    {
      key: '4b',
      id: '4b',
      name: `latency p50 at ${LIGHT_PUBLISHES_PER_SECOND.toLocaleString('en')} publishes/s (case-1 layout)`,
      unit: 'ms',
      format: 'ms',
      f: (r) => r.p50,
    },
    { key: '4b', id: '4b', name: 'latency p99', unit: 'ms', format: 'ms', f: (r) => r.p99 },
    { key: '4b', id: '4b', name: 'latency max', unit: 'ms', format: 'ms', f: (r) => r.max },
    cpuRow('4b', '4b', {
      text: 'sqlite ≤ 1.5x memory',
      check: (v, _peer, row, column) =>
        column !== 'sqlite' || row.values.memory === undefined ? undefined : v <= row.values.memory * 1.5,
    }),
    {
      key: '5',
      id: '5',
      name: `RSS per idle subscribed conn, ${S.idleConnections.toLocaleString('en')} conns`,
      unit: 'bytes',
      format: 'int',
      f: (r) => r.perConnection,
      target: atMost(1),
    },
    {
      key: '6',
      id: '6',
      name: `storm: ${S.stormClients.toLocaleString('en')} connect+auth+subscribe, own token each`,
      unit: 's',
      format: 'sec',
      f: (r) => r.seconds,
      target: atMost(1.2),
    },
    {
      key: '6',
      id: '6',
      name: '↳ server CPU per client',
      unit: 'ms',
      format: 'cpu',
      f: (r) =>
        r.srvBusy === undefined || !r.subscribed ? undefined : ((r.srvBusy / 100) * r.seconds * 1000) / r.subscribed,
    },
    {
      key: 'pub',
      id: 'i3',
      name: `one client pipelining appends over ${S.pubSandboxes} sandboxes (redis: XADD)`,
      unit: 'events/s',
      format: 'int',
      f: (r) => r.rate,
      target: {
        text: 'sqlite ≥ ½ memory and ≥ 50,000/s',
        check: (v, _peer, row, column) =>
          column !== 'sqlite'
            ? undefined
            : v >= 50_000 && (row.values.memory === undefined || v >= row.values.memory / 2),
      },
    },
    {
      key: 'pub',
      id: 'i3',
      name: '↳ server CPU per append',
      unit: 'µs',
      format: 'cpu',
      f: (r) => (r.srvBusy === undefined || !r.rate ? undefined : (r.srvBusy / 100 / r.rate) * 1e6),
    },
    {
      key: 'hist',
      id: 'i3',
      name: `history LIMIT 100 p50, ${S.historyEvents.toLocaleString('en')} events / ${S.historySandboxes.toLocaleString('en')} sandboxes (redis: XRANGE)`,
      unit: 'ms',
      format: 'ms',
      f: (r) => r.p50,
    },
    {
      key: 'hist',
      id: 'i3',
      name: 'history LIMIT 100 p99',
      unit: 'ms',
      format: 'ms',
      f: (r) => r.p99,
      target: { text: '< 2 ms', check: (v) => v < 2 },
    },
    ...Object.keys(growthLabels).flatMap((key) => [
      {
        key,
        id: key.replace(/-\d+$/, ''),
        name: growthLabels[key],
        unit: 'msg/s',
        format: 'int',
        f: (r) => r.delivered,
      },
      cpuRow(key, key.replace(/-\d+$/, '')),
    ]),
  ];
  return list
    .filter((row) => results[row.key] !== undefined)
    .map((row) => /** @type {import('./lib/report.js').Row} */ ({ ...row, ...pick(row.key, row.f) }));
}

main().then(
  () => {
    cleanUp();
    process.exit(0);
  },
  (error) => {
    console.error(error instanceof Error ? error.stack : error);
    cleanUp();
    process.exit(1);
  },
);
