import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from '../scale/support.js';
import { BIN } from '../support/daemon.js';
import { resp } from '../support/raw-client.js';
import {
  type ConfiguredDaemon,
  configGet,
  redisClient,
  startWithConfig,
  perTest,
  tokenFor,
  writeJson,
} from './support.js';

const SECRET_A = 'secret-a-0123456789-0123456789-0123456789';
const SECRET_B = 'secret-b-9876543210-9876543210-9876543210';
const EXPIRED = '-ERR token expired: send AUTH with a fresh token before exp\r\n';

const harness = perTest();

describe('HS256 key rotation through SIGHUP', () => {
  it('adds a secret without dropping anyone, then removes the old one and closes its connections', async () => {
    // A daemon whose JSON file holds its port and one secret, A.
    const file = path.join(harness.dir, 'sandbox-events.json');
    writeJson(file, { port: 0, 'http-port': 0, store: 'memory', 'jwt-secret': SECRET_A });
    const daemon = await startWithConfig(harness.dir, file);

    const subscriber = await harness.authed(daemon.port, await tokenFor(SECRET_A));
    subscriber.send(resp('SUBSCRIBE', 'sb-1'));
    const subscribed = '*3\r\n$9\r\nsubscribe\r\n$4\r\nsb-1\r\n:1\r\n';
    expect(await subscriber.read(subscribed)).toBe(subscribed);

    // 1. The file gains B; SIGHUP.
    writeJson(file, { port: 0, 'http-port': 0, store: 'memory', 'jwt-secret': [SECRET_A, SECRET_B] });
    expect((await daemon.reload()).msg).toBe('config reloaded');
    expect(subscriber.closed).toBe(false);
    const publisher = await harness.authed(daemon.port, await tokenFor(SECRET_B, { sandboxId: 'sb-1' }));
    publisher.send(resp('PUBLISH', 'sb-1', '{"type":"rotated"}'));
    expect(await publisher.line()).toBe(':1\r\n');
    const delivered = await subscriber.waitFor((received) => received.includes('"type":"rotated"'));
    expect(delivered.toString()).toMatch(/^\*3\r\n\$7\r\nmessage\r\n\$4\r\nsb-1\r\n\$\d+\r\n\{.*"type":"rotated"/);
    await subscriber.take(delivered.length);

    // 2. The file keeps only B; SIGHUP again.
    writeJson(file, { port: 0, 'http-port': 0, store: 'memory', 'jwt-secret': [SECRET_B] });
    expect((await daemon.reload()).msg).toBe('config reloaded');
    expect(await subscriber.line()).toBe(EXPIRED);
    expect(await subscriber.closedByServer()).toBe(true);
    // The publisher authenticated with B stays.
    publisher.send(resp('PING'));
    expect(await publisher.line()).toBe('+PONG\r\n');

    expect(await harness.authReply(daemon.port, await tokenFor(SECRET_A))).toBe(
      '-WRONGPASS invalid username-password pair or user is disabled. reason: bad signature\r\n',
    );
    expect(await harness.authReply(daemon.port, await tokenFor(SECRET_B))).toBe('+OK\r\n');
  });

  it('signs with the first secret given on the command line, and verifies with every one', async () => {
    const file = path.join(harness.dir, 'sandbox-events.toml');
    writeFileSync(file, 'store = "memory"\n');
    const daemon = await startWithConfig(harness.dir, file, [
      '--port',
      '0',
      '--http-port',
      '0',
      '--jwt-secret',
      SECRET_A,
      '--jwt-secret',
      SECRET_B,
    ]);
    await harness.authed(daemon.port, await tokenFor(SECRET_A));
    await harness.authed(daemon.port, await tokenFor(SECRET_B));
    expect(await harness.authReply(daemon.port, await tokenFor('neither-of-them-neither-of-them-0000'))).toMatch(
      /^-WRONGPASS/,
    );
  });

  it('`token --config` signs with the first secret of the file', async () => {
    const file = path.join(harness.dir, 'sandbox-events.toml');
    writeFileSync(file, `store = "memory"\njwt-secret = "${SECRET_A}"\n`);
    const daemon = await startWithConfig(harness.dir, file, ['--port', '0', '--http-port', '0']);
    const mint = (secrets: string[]): string => {
      const minting = path.join(harness.dir, 'minting.yaml');
      writeFileSync(minting, `jwt-secret: [${secrets.join(', ')}]\n`);
      const { SANDBOX_EVENTS_JWT_SECRET: _, ...env } = process.env;
      const run = spawnSync(process.execPath, [BIN, 'token', '--config', minting, '--workspace', '1'], {
        encoding: 'utf8',
        env,
      });
      expect(run.status).toBe(0);
      return run.stdout.trim();
    };
    expect(await harness.authReply(daemon.port, mint([SECRET_A, SECRET_B]))).toBe('+OK\r\n');
    expect(await harness.authReply(daemon.port, mint([SECRET_B, SECRET_A]))).toMatch(/^-WRONGPASS/);
  });
});

describe('event streams and key removal', () => {
  it('a stream authenticated with a removed secret ends with event: close, reason token_expired', async () => {
    const file = path.join(harness.dir, 'sandbox-events.json');
    const settings = { port: 0, store: 'memory', 'http-port': await freePort() };
    writeJson(file, { ...settings, 'jwt-secret': [SECRET_A, SECRET_B] });
    const daemon = await startWithConfig(harness.dir, file);
    const open = async (secret: string): Promise<ReadableStreamDefaultReader<Uint8Array>> => {
      const response = await fetch(`http://127.0.0.1:${daemon.httpPort}/events/sb-1/stream`, {
        headers: { authorization: `Bearer ${await tokenFor(secret)}` },
      });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      harness.track({ close: () => void reader.cancel().catch(() => {}) });
      return reader;
    };
    const readUntil = async (reader: ReadableStreamDefaultReader<Uint8Array>, text: string): Promise<string> => {
      let received = '';
      while (!received.includes(text)) {
        const { done, value } = await reader.read();
        if (done) break;
        received += Buffer.from(value).toString();
      }
      return received;
    };
    const withA = await open(SECRET_A);
    const withB = await open(SECRET_B);
    writeJson(file, { ...settings, 'jwt-secret': [SECRET_B] });
    expect((await daemon.reload()).msg).toBe('config reloaded');
    expect(await readUntil(withA, 'token_expired')).toMatch(/event: close\ndata: \{"reason":"token_expired"\}/);
    expect((await withA.read()).done).toBe(true);
    // The stream of B goes on: an event published now reaches it.
    const publisher = await harness.authed(daemon.port, await tokenFor(SECRET_B, { sandboxId: 'sb-1' }));
    publisher.send(resp('PUBLISH', 'sb-1', '{"type":"after-rotation"}'));
    expect(await publisher.line()).toBe(':1\r\n');
    expect(await readUntil(withB, 'after-rotation')).toContain('"type":"after-rotation"');
  });
});

describe('CONFIG GET and CONFIG RELOAD', () => {
  async function start(): Promise<{ daemon: ConfiguredDaemon; file: string }> {
    const file = path.join(harness.dir, 'sandbox-events.json');
    writeJson(file, {
      port: 0,
      'http-port': 0,
      store: 'memory',
      'jwt-secret': [SECRET_A, SECRET_B],
      'max-clients': 77,
    });
    return { daemon: await startWithConfig(harness.dir, file), file };
  }

  it('answers admins with the settings matching the glob, secrets redacted', async () => {
    const { daemon } = await start();
    const admin = redisClient(daemon.port, await tokenFor(SECRET_A, { role: 'admin' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await configGet(admin, 'max-c*')).toEqual({ 'max-clients': '77' });
    expect(await configGet(admin, 'jwt-secret')).toEqual({ 'jwt-secret': '<redacted>,<redacted>' });
    const everything = await configGet(admin, '*');
    expect(Object.keys(everything)).toContain('retention-count');
    expect(JSON.stringify(everything)).not.toContain(SECRET_A);
    expect(JSON.stringify(everything)).not.toContain(SECRET_B);
    // Several patterns, as Redis 7 takes them.
    const raw = await harness.authed(daemon.port, await tokenFor(SECRET_B, { role: 'admin' }));
    raw.send(resp('CONFIG', 'GET', 'max-clients', 'store'));
    const reply = '*4\r\n$11\r\nmax-clients\r\n$2\r\n77\r\n$5\r\nstore\r\n$6\r\nmemory\r\n';
    expect(await raw.read(reply)).toBe(reply);
  });

  it('refuses tokens other than admin', async () => {
    const { daemon } = await start();
    const workspace = await harness.authed(daemon.port, await tokenFor(SECRET_A));
    workspace.send(resp('CONFIG', 'GET', '*') + resp('CONFIG', 'RELOAD'));
    expect(await workspace.line()).toBe("-NOPERM this token has no permissions to run the 'config|get' command\r\n");
    expect(await workspace.line()).toBe("-NOPERM this token has no permissions to run the 'config|reload' command\r\n");
  });

  it('CONFIG RELOAD re-reads the file as SIGHUP does, and says why when it cannot', async () => {
    const { daemon, file } = await start();
    const admin = await harness.authed(daemon.port, await tokenFor(SECRET_A, { role: 'admin' }));
    writeJson(file, { port: 0, 'http-port': 0, store: 'memory', 'jwt-secret': [SECRET_A], 'max-clients': 78 });
    admin.send(resp('CONFIG', 'RELOAD') + resp('CONFIG', 'GET', 'max-clients'));
    expect(await admin.line()).toBe('+OK\r\n');
    const reply = '*2\r\n$11\r\nmax-clients\r\n$2\r\n78\r\n';
    expect(await admin.read(reply)).toBe(reply);

    writeJson(file, { port: 0, 'max-clientz': 5 });
    admin.send(resp('CONFIG', 'RELOAD') + resp('CONFIG', 'GET', 'max-clients'));
    expect(await admin.line()).toMatch(
      /^-ERR config reload failed, nothing changed: .*unknown key "max-clientz" \(did you mean "max-clients"\?\)\r\n$/,
    );
    expect(await admin.read(reply)).toBe(reply);
  });
});
