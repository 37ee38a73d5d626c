import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { type RunningServer, startServer } from '../../src/daemon.js';
import { requireTool } from '../support/tools.js';

/**
 * Every accepted client gets TCP keepalive after `--tcp-keepalive` seconds of silence (Redis's
 * `tcp-keepalive`; docs/security.md, "Limits"). On Linux the daemon sets it once on the
 * listening socket, whose options each accepted socket inherits; a reload's new value applies
 * to the connections accepted from then on (docs/operations.md). `ss -o` shows the kernel's
 * keepalive timer of each server-side socket.
 */
const servers: RunningServer[] = [];
const sockets: net.Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

/** A client that has had a reply: the daemon has accepted it and read from it. */
async function client(port: number): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.once('data', () => resolve());
    socket.write('PING\r\n'); // -NOAUTH: any reply will do
  });
  return socket;
}

/** Seconds left on the keepalive timer of the daemon's side of `socket`; undefined when it has none. */
function keepaliveSeconds(port: number, socket: net.Socket): number | undefined {
  const line = execFileSync(
    'ss',
    ['-Htno', 'state', 'established', `( sport = :${port} and dport = :${socket.localPort} )`],
    {
      encoding: 'utf8',
    },
  );
  const timer = /timer:\(keepalive,(?:(\d+)min)?(?:(\d+)sec)?(?:(\d+)ms)?/.exec(line);
  if (timer === null) return undefined;
  return Number(timer[1] ?? 0) * 60 + Number(timer[2] ?? 0) + Number(timer[3] ?? 0) / 1000;
}

const canInspect = process.platform === 'linux' && requireTool('ss', 'iproute2');

it.skipIf(!canInspect)('accepted sockets carry the keepalive in force when they were accepted', async () => {
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    auth: { secret: randomBytes(32).toString('base64url') },
    limits: { tcpKeepAliveMs: 100_000 },
  });
  servers.push(server);
  const first = await client(server.port);
  const firstTimer = keepaliveSeconds(server.port, first);
  expect(firstTimer).toBeGreaterThan(90);
  expect(firstTimer).toBeLessThanOrEqual(100);

  // What a reload does (src/config/reload.ts): the limits object changes in place.
  server.context.limits.tcpKeepAliveMs = 300_000;
  const second = await client(server.port);
  expect(keepaliveSeconds(server.port, second)).toBeGreaterThan(290);
  expect(keepaliveSeconds(server.port, first)).toBeLessThanOrEqual(100);

  server.context.limits.tcpKeepAliveMs = 0;
  const third = await client(server.port);
  expect(keepaliveSeconds(server.port, third)).toBeUndefined();
  expect(keepaliveSeconds(server.port, second)).toBeGreaterThan(280);
});
