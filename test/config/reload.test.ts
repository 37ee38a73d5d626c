import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { freePort } from '../scale/support.js';
import { RawClient, resp } from '../support/raw-client.js';
import {
  type ConfiguredDaemon,
  configGet,
  redisClient,
  startWithConfig,
  perTest,
  tokenFor,
  writeJson,
} from './support.js';

const SECRET = 'reload-secret-0123456789-0123456789-01234';
const BASE = {
  port: 0,
  'http-port': 0,
  store: 'memory',
  'jwt-secret': SECRET,
  'max-clients': 100,
  'max-event-size': '1kb',
  'publish-rate': 1000,
  'publish-burst': 1000,
  'retention-count': 5,
  'log-level': 'info',
  'http-cors-origin': 'https://old.example',
};

const harness = perTest();
const configFile = (): string => path.join(harness.dir, 'sandbox-events.json');

async function reloadWith(daemon: ConfiguredDaemon, changes: Record<string, unknown>): Promise<void> {
  writeJson(configFile(), { ...BASE, ...changes });
  expect((await daemon.reload()).msg).toBe('config reloaded');
}

function corsOrigin(httpPort: number, origin: string): Promise<string | null> {
  return fetch(`http://127.0.0.1:${httpPort}/healthz`, { headers: { origin } }).then((response) => {
    void response.body?.cancel();
    return response.headers.get('access-control-allow-origin');
  });
}

describe('SIGHUP applies the reloadable settings live', () => {
  it('limits, rate limits, retention, CORS, log level and claim checks, as clients see them', async () => {
    writeJson(configFile(), BASE);
    // HTTP on (port 0 turns it off): a port free a moment ago.
    const daemon = await startWithConfig(harness.dir, configFile(), ['--http-port', String(await freePort())]);
    const publisher = await harness.authed(daemon.port, await tokenFor(SECRET, { sandboxId: 'sb-r' }));

    // max-event-size: 2 KiB of data is refused at 1 KiB, accepted at 4 KiB.
    const big = JSON.stringify({ type: 'big', data: { blob: 'x'.repeat(2048) } });
    publisher.send(resp('PUBLISH', 'sb-r', big));
    expect(await publisher.line()).toMatch(/^-ERR event too large \(\d+ bytes, limit 1024\)\r\n$/);
    await reloadWith(daemon, { 'max-event-size': '4kb' });
    publisher.send(resp('PUBLISH', 'sb-r', big));
    expect(await publisher.line()).toBe(':0\r\n');

    // retention-count: 5 events kept, then 2 once reloaded (applied at the next append).
    for (let i = 0; i < 4; i += 1) {
      publisher.send(resp('PUBLISH', 'sb-r', '{"type":"kept"}'));
      expect(await publisher.line()).toBe(':0\r\n');
    }
    const reader = redisClient(daemon.port, await tokenFor(SECRET));
    harness.track({ close: () => reader.disconnect() });
    expect(((await reader.call('HISTORY', 'sb-r')) as string[]).length).toBe(5);
    await reloadWith(daemon, { 'max-event-size': '4kb', 'retention-count': 2 });
    publisher.send(resp('PUBLISH', 'sb-r', '{"type":"last"}'));
    expect(await publisher.line()).toBe(':0\r\n');
    expect(((await reader.call('HISTORY', 'sb-r')) as string[]).length).toBe(2);

    // publish-rate and publish-burst: a burst of 2 refuses the third publish at once.
    await reloadWith(daemon, { 'publish-rate': 1, 'publish-burst': 2 });
    publisher.send(resp('PUBLISH', 'sb-r', '{"type":"a"}') + resp('PUBLISH', 'sb-r', '{"type":"b"}'));
    publisher.send(resp('PUBLISH', 'sb-r', '{"type":"c"}'));
    expect([await publisher.line(), await publisher.line(), await publisher.line()]).toEqual([
      ':0\r\n',
      ':0\r\n',
      '-ERR rate limit exceeded\r\n',
    ]);

    // max-output-buffer: INFO reports the limit in force.
    await reloadWith(daemon, { 'max-output-buffer': '2mb' });
    expect(await reader.call('INFO', 'clients')).toContain('client_output_limit_bytes:2097152');

    // max-output-total: INFO reports the budget in force; 0 turns it off.
    await reloadWith(daemon, { 'max-output-total': '64mb' });
    expect(await reader.call('INFO', 'clients')).toContain('client_output_budget_bytes:67108864');
    await reloadWith(daemon, { 'max-output-total': 0 });
    expect(await reader.call('INFO', 'clients')).toContain('client_output_budget_bytes:0\r\n');

    // http-cors-origin.
    expect(await corsOrigin(daemon.httpPort!, 'https://new.example')).toBe(null);
    await reloadWith(daemon, { 'http-cors-origin': 'https://new.example' });
    expect(await corsOrigin(daemon.httpPort!, 'https://new.example')).toBe('https://new.example');

    // log-level: debug lines (a connection opening) appear once reloaded.
    await reloadWith(daemon, { 'log-level': 'debug' });
    const from = daemon.records.length;
    const probe = await RawClient.connect(daemon.port);
    harness.track(probe);
    expect((await daemon.record((record) => record.msg === 'connection opened', from)).level).toBe(20);

    // jwt-issuer (and jwt-audience alike): new AUTHs must carry it.
    await reloadWith(daemon, { 'jwt-issuer': 'issuer-x' });
    expect(await harness.authReply(daemon.port, await tokenFor(SECRET))).toMatch(/^-WRONGPASS/);
    await harness.authed(daemon.port, await tokenFor(SECRET, { issuer: 'issuer-x' }));

    // max-clients: with the connections open now, one more is refused.
    const open = (await reader.call('INFO', 'clients')) as string;
    const connected = Number(/connected_clients:(\d+)/.exec(open)![1]);
    await reloadWith(daemon, { 'jwt-issuer': 'issuer-x', 'max-clients': connected });
    const refused = await RawClient.connect(daemon.port);
    harness.track(refused);
    expect(await refused.line()).toBe('-ERR max number of clients reached\r\n');

    // Settings with no effect a client can observe at once: CONFIG GET shows them in force.
    await reloadWith(daemon, { 'jwt-issuer': 'issuer-x', 'retention-age': '2h', 'tcp-keepalive': 30 });
    const admin = redisClient(daemon.port, await tokenFor(SECRET, { role: 'admin', issuer: 'issuer-x' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await configGet(admin, '*')).toMatchObject({
      'retention-age': String(2 * 3600 * 1000),
      'tcp-keepalive': '30',
      'jwt-issuer': 'issuer-x',
      'max-clients': '100',
    });
  });

  it('leaves restart-only settings as they are, and says so in the log', async () => {
    writeJson(configFile(), BASE);
    const daemon = await startWithConfig(harness.dir, configFile());
    writeJson(configFile(), { ...BASE, store: 'sqlite', 'tcp-backlog': 100, 'max-clients': 90 });
    const from = daemon.records.length;
    expect((await daemon.reload()).msg).toBe('config reloaded');
    const warnings = daemon.records.slice(from).filter((record) => record.level === 40);
    expect(warnings.map((record) => record.setting)).toEqual(['store', 'tcp-backlog']);
    const admin = redisClient(daemon.port, await tokenFor(SECRET, { role: 'admin' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await configGet(admin, '*')).toMatchObject({ store: 'memory', 'tcp-backlog': '4096', 'max-clients': '90' });
  });

  it('keeps flags and environment variables above the file', async () => {
    writeJson(configFile(), BASE);
    const daemon = await startWithConfig(harness.dir, configFile(), ['--max-clients', '30'], {
      SANDBOX_EVENTS_PUBLISH_BURST: '40',
    });
    await reloadWith(daemon, { 'max-clients': 60, 'publish-burst': 70, 'retention-count': 9 });
    const admin = redisClient(daemon.port, await tokenFor(SECRET, { role: 'admin' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await configGet(admin, '*')).toMatchObject({
      'max-clients': '30',
      'publish-burst': '40',
      'retention-count': '9',
    });
  });
});

describe('public keys at reload', () => {
  async function es256(): Promise<{ pem: string; sign: () => Promise<string> }> {
    const keys = await generateKeyPair('ES256', { extractable: true });
    const sign = (): Promise<string> =>
      new SignJWT({ workspace_id: 1, role: 'workspace' })
        .setProtectedHeader({ alg: 'ES256' })
        .setExpirationTime('1h')
        .sign(keys.privateKey);
    return { pem: await exportSPKI(keys.publicKey), sign };
  }

  it('a public key file added, then replaced: its tokens accepted, then their connections closed', async () => {
    const [first, second] = [await es256(), await es256()];
    const pemFile = path.join(harness.dir, 'public.pem');
    writeJson(configFile(), BASE);
    const daemon = await startWithConfig(harness.dir, configFile());
    expect(await harness.authReply(daemon.port, await first.sign())).toMatch(/^-WRONGPASS/);

    writeFileSync(pemFile, first.pem);
    await reloadWith(daemon, { 'jwt-public-key': pemFile });
    const viaFirst = await harness.authed(daemon.port, await first.sign());
    const viaSecret = await harness.authed(daemon.port, await tokenFor(SECRET));

    // Same path, new key: the file is read again at the reload.
    writeFileSync(pemFile, second.pem);
    expect((await daemon.reload()).msg).toBe('config reloaded');
    expect(await viaFirst.line()).toBe('-ERR token expired: send AUTH with a fresh token before exp\r\n');
    expect(await viaFirst.closedByServer()).toBe(true);
    viaSecret.send(resp('PING'));
    expect(await viaSecret.line()).toBe('+PONG\r\n');
    expect(await harness.authReply(daemon.port, await first.sign())).toMatch(/^-WRONGPASS/);
    await harness.authed(daemon.port, await second.sign());
  });
});

describe('a file that fails at reload', () => {
  it.each([
    ['does not parse', '{ "port": 0, '],
    ['has an unknown key', JSON.stringify({ ...BASE, 'jwt-secrets': ['x'] })],
    ['has a wrong type', JSON.stringify({ ...BASE, 'max-clients': 'lots' })],
    ['names a public key file that is not there', JSON.stringify({ ...BASE, 'jwt-public-key': '/nonexistent.pem' })],
    [
      'sets a public key and a JWKS URL',
      JSON.stringify({ ...BASE, 'jwt-public-key': __filename, 'jwks-url': 'http://127.0.0.1:1/jwks' }),
    ],
  ])('%s: changes nothing and says why', async (_, broken) => {
    writeJson(configFile(), BASE);
    const daemon = await startWithConfig(harness.dir, configFile());
    const subscriber = await harness.authed(daemon.port, await tokenFor(SECRET));
    writeFileSync(configFile(), broken);
    const outcome = await daemon.reload();
    expect(outcome.msg).toBe('config reload failed: nothing changed');
    expect(outcome.level).toBe(50);
    expect(String(outcome.err)).not.toBe('');
    // Same keys, same settings, the connection still there.
    subscriber.send(resp('PING'));
    expect(await subscriber.line()).toBe('+PONG\r\n');
    const admin = redisClient(daemon.port, await tokenFor(SECRET, { role: 'admin' }));
    harness.track({ close: () => admin.disconnect() });
    expect(await configGet(admin, 'max-*')).toMatchObject({ 'max-clients': '100', 'max-event-size': '1024' });
  });
});
