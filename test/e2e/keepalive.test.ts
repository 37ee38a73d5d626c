import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { mintToken } from '../../src/auth/mint.js';

/**
 * A client that vanishes without FIN (its machine gone, its link cut) is reaped by TCP
 * keepalive (docs/security.md, "Limits"). Two network namespaces joined by a veth pair: the daemon in one, with
 * `--tcp-keepalive 1` and the namespace's own probe interval and count shortened (those
 * sysctls are per network namespace), the subscriber in the other. Then the subscriber's link
 * goes down: no FIN, no RST, nothing; only keepalive can notice.
 */
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/sandbox-events.js');
const tag = randomBytes(3).toString('hex');
const serverNs = `se-srv-${tag}`;
const clientNs = `se-cli-${tag}`;
const serverIf = `se-a-${tag}`;
const clientIf = `se-b-${tag}`;
const octet = 16 + (parseInt(tag, 16) % 200);
const serverIp = `10.231.${octet}.1`;
const clientIp = `10.231.${octet}.2`;
const children: ChildProcess[] = [];

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

function setUpNamespaces(): boolean {
  if (spawnSync('ip', ['netns', 'add', serverNs]).status !== 0) return false;
  ip('netns', 'add', clientNs);
  ip('link', 'add', serverIf, 'type', 'veth', 'peer', 'name', clientIf);
  ip('link', 'set', serverIf, 'netns', serverNs);
  ip('link', 'set', clientIf, 'netns', clientNs);
  ip('-n', serverNs, 'addr', 'add', `${serverIp}/30`, 'dev', serverIf);
  ip('-n', clientNs, 'addr', 'add', `${clientIp}/30`, 'dev', clientIf);
  for (const [ns, dev] of [
    [serverNs, serverIf],
    [clientNs, clientIf],
  ] as const) {
    ip('-n', ns, 'link', 'set', dev, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  // Per-namespace: probe every second, give up after two unanswered probes.
  execFileSync('ip', [
    'netns',
    'exec',
    serverNs,
    'sysctl',
    '-q',
    '-w',
    'net.ipv4.tcp_keepalive_intvl=1',
    'net.ipv4.tcp_keepalive_probes=2',
  ]);
  return true;
}

const ready = process.getuid?.() === 0 && setUpNamespaces();
if (!ready) {
  const message = 'cannot create network namespaces (needs root and iproute2) for the keepalive test';
  if (process.env.SANDBOX_EVENTS_REQUIRE_ALL_TESTS === '1') throw new Error(message);
  console.warn(`\n*** SKIPPING the keepalive test: ${message} ***\n`);
}

afterAll(() => {
  for (const child of children) child.kill('SIGKILL');
  spawnSync('ip', ['netns', 'del', clientNs]);
  spawnSync('ip', ['netns', 'del', serverNs]);
});

/** Runs a small node program inside a namespace; resolves on its first stdout line. */
function inNamespace(
  ns: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; firstLine: string; lines: string[] }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  children.push(child);
  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      if (lines.length === 1) resolve({ child, firstLine: line, lines });
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
}

/**
 * A node one-liner run inside a namespace: AUTH, then the commands; prints what came back once
 * it contains $UNTIL (and exits if $EXIT is set).
 */
const CLIENT = `
const net = require('node:net');
const [host, port, token, ...commands] = process.argv.slice(1);
const resp = (w) => '*' + w.length + '\\r\\n' + w.map((x) => '$' + Buffer.byteLength(x) + '\\r\\n' + x + '\\r\\n').join('');
const socket = net.connect({ host, port: Number(port) }, () => {
  socket.write(resp(['AUTH', token]) + commands.map((c) => resp(c.split(' '))).join(''));
});
let text = '';
socket.on('data', (chunk) => {
  text += chunk;
  if (text.includes(process.env.UNTIL)) { console.log(JSON.stringify(text)); if (process.env.EXIT) process.exit(0); }
});
socket.on('error', () => {});
`;

it.skipIf(!ready)('a subscriber whose link vanishes without FIN is reaped by keepalive', async () => {
  const secret = randomBytes(24).toString('base64url');
  const token = await mintToken({ secret, workspaceId: 1, role: 'workspace', ttlSeconds: 600 });
  const daemon = await inNamespace(serverNs, [
    BIN,
    'serve',
    '--host',
    serverIp,
    '--port',
    '0',
    '--http-port',
    '0',
    '--store',
    'memory',
    '--jwt-secret',
    secret,
    '--tcp-keepalive',
    '1',
    '--log-level',
    'info',
  ]);
  const port = (JSON.parse(daemon.firstLine) as { port: number }).port;

  const clientsNow = async (): Promise<number> => {
    const probe = await inNamespace(serverNs, ['-e', CLIENT, serverIp, String(port), token, 'INFO clients'], {
      UNTIL: 'connected_clients',
      EXIT: '1',
    });
    probe.child.kill();
    return Number(/connected_clients:(\d+)/.exec(JSON.parse(probe.firstLine) as string)?.[1]);
  };

  const subscriber = await inNamespace(clientNs, ['-e', CLIENT, serverIp, String(port), token, 'SUBSCRIBE sb-gone'], {
    UNTIL: ':1\r\n',
  });
  expect(JSON.parse(subscriber.firstLine)).toContain('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-gone\r\n:1\r\n');
  expect(await clientsNow()).toBe(2); // the subscriber and the probe itself

  // The link goes away: nothing reaches the daemon any more, not even a FIN.
  ip('-n', clientNs, 'link', 'set', clientIf, 'down');
  subscriber.child.kill('SIGKILL');

  const deadline = Date.now() + 20_000;
  let count = 2;
  while (count > 1 && Date.now() < deadline) count = await clientsNow();
  expect(count).toBe(1); // only the probe: the vanished subscriber was reaped
});
