// Processes of a bench run: redis-server, the broker, the load generator. Everything listens
// on 127.0.0.1 only, and everything started here is registered so that it is stopped (and its
// temp dir removed) however the run ends.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { natsInfo, natsRequest } from './nats.js';
import { command, ReplyScanner } from './resp.js';

const children = new Set();
const tempDirs = new Set();

/** A fresh temp dir, removed by cleanUp(). */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), `sandbox-events-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir) {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Kills every child still running and removes every temp dir. Synchronous: safe in 'exit'. */
export function cleanUp() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ---- file descriptors --------------------------------------------------------------------

let nofileWrapper = [];

/**
 * Makes sure children may open `needed` files: the soft limit is raised for them (through
 * `sh -c ulimit`) when the hard limit allows; otherwise the run stops with what to do.
 */
export function ensureFileLimit(needed) {
  const soft = Number(execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim());
  const hardText = execFileSync('sh', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim();
  const hard = hardText === 'unlimited' ? Infinity : Number(hardText);
  if (soft >= needed) return { soft, raised: false };
  if (hard < needed) {
    throw new Error(
      `the open-files limit is ${soft} (hard limit ${hardText}); cases 5 and 6 need ${needed} sockets in one process. ` +
        `Raise the hard limit (e.g. \`ulimit -Hn ${needed}\` as root, or LimitNOFILE in the service/container) and run again.`,
    );
  }
  nofileWrapper = ['sh', '-c', `ulimit -n ${needed} && exec "$0" "$@"`];
  console.log(
    `open-files limit ${soft} is too low for 10,000 connections: raising it to ${needed} for the bench's children (hard limit ${hardText}).`,
  );
  return { soft, raised: true };
}

function spawnChild(file, args, options) {
  const [cmd, ...cmdArgs] = nofileWrapper.length > 0 ? [...nofileWrapper, file, ...args] : [file, ...args];
  const child = spawn(cmd, cmdArgs, options);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function clockTicksPerSecond() {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

/** Resident set size of a process in bytes (/proc/<pid>/status VmRSS). */
export function rssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (match === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]) * 1024;
}

/** A port that was free a moment ago (redis-server can't be asked for port 0). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Sends one command on a fresh connection and returns the raw reply text. */
export function oneCommand(port, args, auth) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const scanner = new ReplyScanner();
    const chunks = [];
    const expected = auth === undefined ? 1 : 2;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply to ${args[0]} on port ${port}`));
    }, 5_000);
    socket.on('connect', () => {
      socket.write(auth === undefined ? command(...args) : Buffer.concat([command('AUTH', auth), command(...args)]));
    });
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      scanner.feed(chunk, 0, chunk.length, 0);
      if (scanner.frames >= expected) {
        clearTimeout(timer);
        socket.destroy();
        const text = Buffer.concat(chunks).toString('utf8');
        resolve(auth === undefined ? text : text.slice(text.indexOf('\r\n') + 2));
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

// ---- redis-server --------------------------------------------------------------------------

export async function startRedis({ password }) {
  const dir = tempDir('redis');
  const port = await freePort();
  const child = spawnChild(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--requirepass',
      password,
      '--maxclients',
      '15000',
      '--dir',
      dir,
      '--loglevel',
      'warning',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const log = collect(child);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${log.text()}`);
    try {
      const reply = await oneCommand(port, ['PING'], password);
      if (reply.startsWith('+PONG')) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`redis-server did not start: ${log.text()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const version = (await oneCommand(port, ['INFO', 'server'], password)).match(/redis_version:(\S+)/)?.[1];
  return {
    name: 'redis',
    pid: child.pid,
    port,
    version,
    auth: password,
    log,
    info: (section) => oneCommand(port, ['INFO', section], password),
    command: (...args) => oneCommand(port, args, password),
    async stop() {
      child.kill('SIGTERM');
      await waitExit(child, 3_000);
      removeTempDir(dir);
    },
  };
}

// ---- nats-server with JetStream -----------------------------------------------------------

/** Where Debian's nats-server package puts it (it is not on a user's PATH). */
const NATS_SERVER_CANDIDATES = ['/usr/sbin/nats-server', '/usr/bin/nats-server', 'nats-server'];

/** The nats-server binary, or undefined when none is installed. */
export function natsServerBinary() {
  for (const candidate of NATS_SERVER_CANDIDATES) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // next
    }
  }
  return undefined;
}

/**
 * Starts nats-server with JetStream (file storage in a temp dir) and one stream, `BENCH`, over
 * the subjects `ev.*`: a sandbox's events go to `ev.<sandbox>` and the stream keeps up to
 * `maxPerSubject` of them per subject, as the broker keeps 10,000 per sandbox. Token auth, as
 * Redis gets a password. The write deadline and pending limit are raised above what the
 * generator's bounded in-flight window can reach, so no subscriber is cut as a slow consumer.
 */
export async function startNats({ token, maxPerSubject = 10_000 }) {
  const binary = natsServerBinary();
  if (binary === undefined) throw new Error('nats-server is not installed (Debian: apt-get install nats-server)');
  const dir = tempDir('nats');
  const port = await freePort();
  const config = join(dir, 'nats.conf');
  writeFileSync(
    config,
    [
      `listen: "127.0.0.1:${port}"`,
      `authorization { token: "${token}" }`,
      'max_connections: 150000',
      'max_payload: 1MB',
      'max_pending: 256MB',
      'write_deadline: "30s"',
      `jetstream { store_dir: "${join(dir, 'js')}", max_file_store: 8GB, max_memory_store: 256MB }`,
      '',
    ].join('\n'),
  );
  const child = spawnChild(binary, ['-c', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log = collect(child);
  const deadline = Date.now() + 10_000;
  let info;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nats-server exited: ${log.text()}`);
    try {
      info = await natsInfo(port);
      break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`nats-server did not start: ${log.text()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (info.jetstream !== true) throw new Error(`nats-server started without JetStream: ${JSON.stringify(info)}`);
  const stream = {
    name: 'BENCH',
    subjects: ['ev.*'],
    storage: 'file',
    retention: 'limits',
    discard: 'old',
    max_msgs_per_subject: maxPerSubject,
    num_replicas: 1,
  };
  const reply = JSON.parse(await natsRequest(port, token, '$JS.API.STREAM.CREATE.BENCH', JSON.stringify(stream)));
  if (reply.error) throw new Error(`nats-server refused the stream: ${JSON.stringify(reply.error)}`);
  return {
    name: 'nats',
    pid: child.pid,
    port,
    version: String(info.version),
    auth: token,
    log,
    /** Messages the stream holds (JetStream's STREAM.INFO). */
    async streamMessages() {
      const answer = JSON.parse(await natsRequest(port, token, '$JS.API.STREAM.INFO.BENCH', ''));
      return answer.state?.messages;
    },
    async stop() {
      child.kill('SIGTERM');
      await waitExit(child, 5_000);
      removeTempDir(dir);
    },
  };
}

// ---- the broker ----------------------------------------------------------------------------

/**
 * Starts `sandbox-events serve` from `buildDir` with the given store ('sqlite' puts a fresh
 * file in a temp dir, 'memory'), on port 0, reading the port from its "listening" log line.
 */
/**
 * @param {{ buildDir: string, store: string, secret: string, maxClients?: number, nodeArgs?: string[],
 *   extraArgs?: string[], sqlitePath?: string }} options
 */
export async function startBroker({
  buildDir,
  store,
  secret,
  maxClients = 20_000,
  nodeArgs = [],
  extraArgs = [],
  sqlitePath,
}) {
  const dir = tempDir(`broker-${store}`);
  const storeSpec = store === 'memory' ? 'memory' : `sqlite:${sqlitePath ?? join(dir, 'events.db')}`;
  const child = spawnChild(
    process.execPath,
    [
      ...nodeArgs,
      join(buildDir, 'cli', 'main.js'),
      'serve',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--store',
      storeSpec,
      '--jwt-secret',
      secret,
      // info: the "listening" line carries the port; per-connection lines are debug.
      '--log-level',
      'info',
      '--data-dir',
      dir,
      '--max-clients',
      String(maxClients),
      // RESP only: the HTTP listener (fixed port 8080 by default) is off.
      '--http-port',
      '0',
      ...extraArgs,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
  );
  const log = collect(child);
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the broker did not start: ${log.text()}`)), 20_000);
    log.onLine = (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.msg === 'sandbox-events listening') {
          clearTimeout(timer);
          resolve(entry.port);
        }
      } catch {
        // not JSON
      }
    };
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the broker exited with ${code}: ${log.text()}`));
    });
  });
  log.onLine = undefined;
  return {
    name: `broker-${store}`,
    store,
    pid: child.pid,
    port,
    dir,
    log,
    async stop() {
      child.kill('SIGTERM');
      await waitExit(child, 5_000);
      removeTempDir(dir);
    },
  };
}

/** Keeps a child's output: the last lines, and warnings (pino level >= 40) counted by message. */
function collect(child) {
  const lines = [];
  const warnings = new Map();
  const log = {
    onLine: undefined,
    warnings,
    text: () => lines.join('\n'),
  };
  const take = (line) => {
    lines.push(line);
    if (lines.length > 40) lines.shift();
    if (line.startsWith('{')) {
      try {
        const entry = JSON.parse(line);
        if (entry.level >= 40) warnings.set(entry.msg, (warnings.get(entry.msg) ?? 0) + 1);
      } catch {
        // partial line
      }
    }
    log.onLine?.(line);
  };
  createInterface({ input: child.stdout }).on('line', take);
  createInterface({ input: child.stderr }).on('line', take);
  return log;
}

// ---- the load generator ------------------------------------------------------------------

/**
 * Runs one job in a fresh generator process. `onReady` handles an intermediate 'ready'
 * message (idle connections) and returns when the generator may release them.
 */
/**
 * @param {Record<string, unknown> & { kind: string }} job
 * @param {{ timeoutMs?: number, onReady?: (message: unknown) => Promise<void>, nodeArgs?: string[] }} [options]
 * @returns {Promise<any>}
 */
export function runGenerator(job, { timeoutMs, onReady, nodeArgs = [] } = {}) {
  const child = spawnChild(process.execPath, [...nodeArgs, new URL('./generator.js', import.meta.url).pathname], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (fn, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn(value);
      if (child.exitCode === null) setTimeout(() => child.kill('SIGKILL'), 2_000).unref();
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle(reject, new Error(`the ${job.kind} job did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs ?? 120_000);
    child.on('message', async (message) => {
      if (message.type === 'result') settle(resolve, message.result);
      else if (message.type === 'error') settle(reject, new Error(message.message));
      else if (message.type === 'ready') {
        try {
          await onReady?.(message);
          child.send({ type: 'release' });
        } catch (error) {
          settle(reject, error);
        }
      }
    });
    child.on('exit', (code, signal) =>
      settle(reject, new Error(`the generator exited (${signal ?? code}) without a result`)),
    );
    child.send({ type: 'job', job });
  });
}
