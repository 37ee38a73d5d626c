import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { BIN } from './daemon.js';
import { resp } from './raw-client.js';

const run = promisify(execFile);

/** A token from `sandbox-events token --data-dir <dir> <args>`, as a user mints one. */
export async function cliToken(dataDir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [BIN, 'token', '--data-dir', dataDir, ...args]);
  return stdout.trim();
}

/** A port that was free a moment ago (the OS picks it, then it is released). */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** A raw RESP connection, authenticated with `token`, that collects every byte it receives. */
export async function collectingClient(port: number, token: string) {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  let wake: () => void = () => {};
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    wake();
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  /** Resolves once what was received passes `test` (a substring, or a predicate). */
  const until = async (test: string | ((text: string) => boolean)): Promise<void> => {
    const passes = typeof test === 'string' ? (t: string) => t.includes(test) : test;
    while (!passes(text)) await new Promise<void>((resolve) => (wake = resolve));
  };
  socket.write(resp('AUTH', token));
  await until('+OK\r\n');
  return { socket, text: () => text, until };
}
