import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { afterEach, expect, it } from 'vitest';
import { type RunningServer, startServer } from '../../src/daemon.js';
import { DEFAULT_BACKLOG, kernelBacklogCap } from '../../src/server/server.js';
import { BIN, killDaemons, spawnDaemon } from '../support/daemon.js';
import { requireTool } from '../support/tools.js';

/**
 * The listen backlog (Redis's `tcp-backlog`): when many clients connect while the event loop is
 * busy, the kernel holds up to `backlog` finished handshakes for it. Past that, Linux drops
 * them and each client retries after its 1 s initial retransmission timeout: a storm of
 * reconnecting sandbox watchers then takes seconds instead of milliseconds (bench case 6).
 */
const servers: RunningServer[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  killDaemons();
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function start(backlog?: number): Promise<RunningServer> {
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    backlog,
    auth: { secret: randomBytes(32).toString('base64url') },
  });
  servers.push(server);
  return server;
}

/** A listening socket's queue: `ss` shows connections waiting for accept as Recv-Q, the backlog as Send-Q. */
function listenQueue(port: number): { queued: number; backlog: number } | undefined {
  try {
    const [, queued, backlog] = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' })
      .trim()
      .split(/\s+/);
    return { queued: Number(queued), backlog: Number(backlog) };
  } catch {
    return undefined;
  }
}

const somaxconn = kernelBacklogCap();
// Linux only (somaxconn); `ss` (iproute2) reads the listening socket's queue.
const canInspect = somaxconn !== undefined && requireTool('ss', 'iproute2');

it.skipIf(!canInspect)(
  'listens with a backlog of 4096 by default (capped by somaxconn), or the one asked for',
  async () => {
    expect(DEFAULT_BACKLOG).toBe(4096);
    expect(listenQueue((await start()).port)?.backlog).toBe(Math.min(DEFAULT_BACKLOG, somaxconn!));
    expect(listenQueue((await start(77)).port)?.backlog).toBe(77);
  },
);

it.skipIf(!canInspect || somaxconn! < 2_000)(
  '1,500 clients connecting while the event loop is busy are all held by the kernel, then answered',
  async () => {
    const server = await start();
    const count = 1_500;
    let answered = 0;
    for (let i = 0; i < count; i++) {
      const socket = net.connect({ host: '127.0.0.1', port: server.port });
      sockets.push(socket);
      socket.on('error', () => {});
      socket.once('connect', () => socket.write('PING\r\n'));
      socket.once('data', () => (answered += 1));
    }
    // net.connect connects on the next tick: let those run, but not the event loop.
    await new Promise((resolve) => process.nextTick(resolve));
    // Nothing has been accepted yet: the event loop has not polled since, as while it verifies
    // thousands of AUTHs. On loopback every handshake has finished by now, so all
    // 1,500 must be waiting in the accept queue (Recv-Q of the listening socket); with Node's
    // default backlog of 511 only 512 are, and the others wait for a retransmission.
    expect(listenQueue(server.port)?.queued).toBe(count);
    await expect.poll(() => answered, { timeout: 10_000, interval: 20 }).toBe(count);
  },
);

it.skipIf(!canInspect)('serve --tcp-backlog (or SANDBOX_EVENTS_TCP_BACKLOG) sets it', async () => {
  const common = [
    '--port',
    '0',
    '--http-port',
    '0',
    '--store',
    'memory',
    '--jwt-secret',
    'secret-for-the-backlog-test',
  ];
  expect(listenQueue((await spawnDaemon([...common, '--tcp-backlog', '123'])).port)?.backlog).toBe(123);
  expect(listenQueue((await spawnDaemon(common, { SANDBOX_EVENTS_TCP_BACKLOG: '200' })).port)?.backlog).toBe(200);
});

it.skipIf(somaxconn === undefined || somaxconn >= 65_535)(
  'warns, as Redis does, when somaxconn is lower than the backlog asked for',
  async () => {
    const child = spawn(
      process.execPath,
      [
        BIN,
        'serve',
        '--port',
        '0',
        '--http-port',
        '0',
        '--store',
        'memory',
        '--jwt-secret',
        'secret-for-the-backlog-test',
        '--tcp-backlog',
        String(somaxconn! + 1),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const messages: string[] = [];
      for await (const line of createInterface({ input: child.stdout! })) {
        messages.push((JSON.parse(line) as { msg: string }).msg);
        if (messages.length === 2) break;
      }
      // The listening line stays first: scripts wait for it.
      expect(messages[0]).toBe('sandbox-events listening');
      expect(messages[1]).toBe(
        `the TCP backlog of ${somaxconn! + 1} cannot be enforced because /proc/sys/net/core/somaxconn is set to the lower value of ${somaxconn}`,
      );
    } finally {
      child.kill('SIGKILL');
    }
  },
);
