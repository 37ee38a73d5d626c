import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bulkString as bulk, resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

/**
 * The first security promise (docs/security.md, "Isolation"): no token of workspace A can publish into, subscribe
 * to, pattern-match, list or read the history of workspace B's sandboxes, whatever names it
 * uses; a sandbox token reaches only its own sandbox.
 */
let broker: TestServer;
const NOPERM = '-NOPERM this user has no permissions to access one of the channels used as arguments\r\n';
/** Redis's text, then the verifier's reason (docs/protocol.md, "Authentication"). */
const WRONGPASS = /^-WRONGPASS invalid username-password pair or user is disabled\. reason: [a-z ]+\r\n$/;

beforeAll(async () => {
  broker = await startTestServer();
});
afterAll(() => broker.close());

async function subscribedVictim(sandboxId: string) {
  const victim = await broker.authed({ workspaceId: 1 });
  victim.send(resp('SUBSCRIBE', sandboxId) + resp('PSUBSCRIBE', '*'));
  await victim.waitFor((received) => received.toString().endsWith(':2\r\n'));
  await victim.take(victim.pending.length);
  return victim;
}

describe('workspace isolation', () => {
  it('workspace 2 publishing to the same sandbox name reaches nobody in workspace 1', async () => {
    const victim = await subscribedVictim('sb-shared');
    const intruder = await broker.authed({ workspaceId: 2 });
    intruder.send(resp('PUBLISH', 'sb-shared', '{"type":"evil"}'));
    expect(await intruder.line()).toBe(':0\r\n');
    // The victim then gets its own workspace's event, and nothing before it.
    const owner = await broker.authed({ workspaceId: 1 });
    owner.send(resp('PUBLISH', 'sb-shared', '{"type":"good"}'));
    expect(await owner.line()).toBe(':2\r\n');
    await victim.waitFor((received) => received.toString().includes('pmessage'));
    expect(victim.pending).toContain('"type":"good"');
    expect(victim.pending).not.toContain('evil');
    expect(victim.pending).toContain('"workspaceId":1');
  });

  it('qualified names of another workspace are refused for non-admins, everywhere', async () => {
    const intruder = await broker.authed({ workspaceId: 2 });
    for (const command of [
      resp('SUBSCRIBE', '{1}sb-shared'),
      resp('PUBLISH', '{1}sb-shared', '{"type":"x"}'),
      resp('HISTORY', '{1}sb-shared'),
      resp('RESUME', '{1}sb-shared', '0'),
      resp('PSUBSCRIBE', '{1}*'),
      resp('PSUBSCRIBE', '{*}*'),
    ]) {
      intruder.send(command);
      expect(await intruder.line()).toBe(NOPERM);
    }
  });

  it('patterns of workspace 2 never match workspace 1 sandboxes', async () => {
    const spy = await broker.authed({ workspaceId: 2 });
    spy.send(resp('PSUBSCRIBE', '*') + resp('PSUBSCRIBE', 'sb-*'));
    await spy.waitFor((received) => received.toString().split('psubscribe').length === 3);
    await spy.take(spy.pending.length);
    const owner = await broker.authed({ workspaceId: 1 });
    owner.send(resp('PUBLISH', 'sb-private', '{"type":"secret"}'));
    await owner.line();
    // A marker event in the spy's own workspace proves its pattern works and arrives later.
    const own = await broker.authed({ workspaceId: 2 });
    own.send(resp('PUBLISH', 'sb-mine', '{"type":"marker"}'));
    expect(await own.line()).toBe(':2\r\n');
    await spy.waitFor((received) => received.toString().includes('marker'));
    expect(spy.pending).not.toContain('secret');
  });

  it("PUBSUB CHANNELS, NUMSUB and NUMPAT show only the token's own workspace", async () => {
    await subscribedVictim('sb-listed');
    const intruder = await broker.authed({ workspaceId: 3 });
    intruder.send(
      resp('PUBSUB', 'CHANNELS') +
        resp('PUBSUB', 'CHANNELS', '*listed*') +
        resp('PUBSUB', 'NUMSUB', 'sb-listed', '{1}sb-listed') +
        resp('PUBSUB', 'NUMPAT'),
    );
    const expected = '*0\r\n*0\r\n*4\r\n$9\r\nsb-listed\r\n:0\r\n$12\r\n{1}sb-listed\r\n:0\r\n:0\r\n';
    expect(await intruder.read(expected)).toBe(expected);
    const owner = await broker.authed({ workspaceId: 1 });
    owner.send(resp('PUBSUB', 'NUMSUB', 'sb-listed'));
    expect(await owner.read('*2\r\n$9\r\nsb-listed\r\n:1\r\n')).toBe('*2\r\n$9\r\nsb-listed\r\n:1\r\n');
  });

  it('history of another workspace is unreachable: same name gives the own (empty) stream', async () => {
    const owner = await broker.authed({ workspaceId: 1 });
    owner.send(resp('PUBLISH', 'sb-hist', '{"type":"mine"}'));
    await owner.line();
    const intruder = await broker.authed({ workspaceId: 4 });
    intruder.send(resp('HISTORY', 'sb-hist'));
    expect(await intruder.line()).toBe('*0\r\n');
  });

  it('an admin reaches another workspace with the qualified name, and sees it in listings', async () => {
    await subscribedVictim('sb-admin');
    const admin = await broker.authed({ workspaceId: 9, role: 'admin' });
    admin.send(resp('SUBSCRIBE', '{1}sb-admin'));
    const subscribed = '*3\r\n$9\r\nsubscribe\r\n$11\r\n{1}sb-admin\r\n:1\r\n';
    expect(await admin.read(subscribed)).toBe(subscribed);
    const inspector = await broker.authed({ workspaceId: 9, role: 'admin' });
    inspector.send(resp('PUBSUB', 'NUMSUB', '{1}sb-admin') + resp('PUBSUB', 'CHANNELS', '*sb-admin'));
    const expected = '*2\r\n$11\r\n{1}sb-admin\r\n:2\r\n*1\r\n$11\r\n{1}sb-admin\r\n';
    expect(await inspector.read(expected)).toBe(expected);
  });

  it('an admin holding the same sandbox name in three workspaces keeps them apart', async () => {
    const admin = await broker.authed({ workspaceId: 9, role: 'admin' });
    const names = ['{31}sb-span', 'sb-span', '{32}sb-span']; // workspaces 31, 9 (its own), 32
    admin.send(resp('SUBSCRIBE', ...names) + resp('SUBSCRIBE', '{31}sb-span', 'sb-span'));
    const confirm = (name: string, count: number) => `*3\r\n$9\r\nsubscribe\r\n${bulk(name)}:${count}\r\n`;
    // Subscribing again counts each channel once, as Redis.
    const subscribed =
      [confirm(names[0]!, 1), confirm(names[1]!, 2), confirm(names[2]!, 3)].join('') +
      confirm(names[0]!, 3) +
      confirm(names[1]!, 3);
    expect(await admin.read(subscribed)).toBe(subscribed);
    for (const [workspaceId, name] of [
      [31, 'x31'],
      [9, 'x9'],
      [32, 'x32'],
    ] as const) {
      const owner = await broker.authed({ workspaceId });
      owner.send(resp('PUBLISH', 'sb-span', `{"type":"${name}"}`));
      expect(await owner.line()).toBe(':1\r\n');
      owner.close();
    }
    await admin.waitFor((received) => received.toString().includes('x32'));
    const frames = admin.pending.split('*3\r\n$7\r\nmessage\r\n').slice(1);
    expect(frames.map((frame) => [frame.split('\r\n')[1], /"type":"(\w+)"/.exec(frame)?.[1]])).toEqual([
      ['{31}sb-span', 'x31'],
      ['sb-span', 'x9'],
      ['{32}sb-span', 'x32'],
    ]);
    await admin.take(admin.pending.length);
    // One UNSUBSCRIBE by name, then the rest newest first; PUBSUB NUMSUB sees each go.
    admin.send(resp('UNSUBSCRIBE', 'sb-span') + resp('UNSUBSCRIBE'));
    const unsubscribed = (name: string, count: number) => `*3\r\n$11\r\nunsubscribe\r\n${bulk(name)}:${count}\r\n`;
    const expected = unsubscribed('sb-span', 2) + unsubscribed('{32}sb-span', 1) + unsubscribed('{31}sb-span', 0);
    expect(await admin.read(expected)).toBe(expected);
    admin.send(resp('PUBSUB', 'NUMSUB', ...names));
    const none = `*6\r\n${names.map((name) => `${bulk(name)}:0\r\n`).join('')}`;
    expect(await admin.read(none)).toBe(none);
    admin.close();
  });
});

describe('sandbox tokens', () => {
  it('reach their own sandbox only: subscribe, publish, history, patterns', async () => {
    const sandbox = await broker.authed({ workspaceId: 1, role: 'sandbox', sandboxId: 'sb-a' });
    sandbox.send(resp('PUBLISH', 'sb-a', '{"type":"ok"}'));
    expect(await sandbox.line()).toMatch(/^:\d+\r\n$/);
    for (const command of [
      resp('SUBSCRIBE', 'sb-b'),
      resp('SUBSCRIBE', 'sb-a', 'sb-b'),
      resp('PUBLISH', 'sb-b', '{"type":"x"}'),
      resp('HISTORY', 'sb-b'),
      resp('PSUBSCRIBE', 'sb-a'),
      resp('PSUBSCRIBE', '*'),
    ]) {
      sandbox.send(command);
      expect(await sandbox.line()).toBe(NOPERM);
    }
    // Refused as a whole: SUBSCRIBE sb-a sb-b subscribed to nothing.
    sandbox.send(resp('PUBSUB', 'CHANNELS'));
    expect(await sandbox.line()).toBe('*0\r\n');
  });

  it("a token of workspace 20 naming a sandbox of workspace 1 gets its own workspace's sandbox", async () => {
    const victim = await subscribedVictim('sb-target');
    const forged = await broker.authed({ workspaceId: 20, role: 'sandbox', sandboxId: 'sb-target' });
    forged.send(resp('PUBLISH', 'sb-target', '{"type":"forged"}'));
    expect(await forged.line()).toBe(':0\r\n');
    const owner = await broker.authed({ workspaceId: 1 });
    owner.send(resp('PUBLISH', 'sb-target', '{"type":"real"}'));
    await owner.line();
    await victim.waitFor((received) => received.toString().includes('real'));
    expect(victim.pending).not.toContain('forged');
  });
});

describe('refused tokens', () => {
  const encoder = new TextEncoder();
  const sign = (claims: Record<string, unknown>, secret = broker.secret) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(encoder.encode(secret));
  const now = () => Math.floor(Date.now() / 1000);

  it.each([
    ['expired', () => sign({ workspace_id: 1, role: 'workspace', exp: now() - 60 })],
    ['not yet valid', () => sign({ workspace_id: 1, role: 'workspace', nbf: now() + 600, exp: now() + 3600 })],
    ['wrongly signed', () => sign({ workspace_id: 1, role: 'workspace', exp: now() + 3600 }, 'another-secret')],
    ['missing exp', () => sign({ workspace_id: 1, role: 'workspace' })],
    [
      'alg none',
      async () => {
        const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
        return `${part({ alg: 'none', typ: 'JWT' })}.${part({ workspace_id: 1, role: 'admin', exp: now() + 3600 })}.`;
      },
    ],
    [
      'tampered payload',
      async () => {
        const [header, , signature] = (
          await sign({ workspace_id: 1, role: 'sandbox', sandbox_id: 'a', exp: now() + 3600 })
        ).split('.');
        const payload = Buffer.from(JSON.stringify({ workspace_id: 1, role: 'admin', exp: now() + 3600 })).toString(
          'base64url',
        );
        return `${header}.${payload}.${signature}`;
      },
    ],
  ])('%s: -WRONGPASS, and the connection stays unauthenticated', async (_name, makeToken) => {
    const client = await broker.raw();
    client.send(resp('AUTH', await makeToken()) + resp('SUBSCRIBE', 'sb-1'));
    expect(await client.line()).toMatch(WRONGPASS);
    expect(await client.line()).toBe('-NOAUTH Authentication required.\r\n');
  });
});
