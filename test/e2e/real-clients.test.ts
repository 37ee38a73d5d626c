import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

const run = promisify(execFile);
let broker: TestServer;
let token: string;

beforeAll(async () => {
  broker = await startTestServer();
  token = await broker.token({ workspaceId: 1 });
});
afterAll(() => broker.close());

const hasRedisCli = requireTool('redis-cli', 'redis-tools');

function once<T>(register: (resolve: (value: T) => void) => void): Promise<T> {
  return new Promise((resolve) => register(resolve));
}

describe('ioredis', () => {
  it('subscribes, receives message and pmessage, publishes, reads history', async () => {
    const subscriber = new Redis({ port: broker.port, host: '127.0.0.1', password: token, lazyConnect: true });
    const publisher = new Redis({
      port: broker.port,
      host: '127.0.0.1',
      username: 'default',
      password: token,
      lazyConnect: true,
    });
    try {
      await subscriber.connect();
      await publisher.connect();
      expect(await subscriber.subscribe('sb-io', 'sb-io-2')).toBe(2);
      expect(await subscriber.psubscribe('sb-io*')).toBe(3);
      const message = once<[string, string]>((resolve) =>
        subscriber.on('message', (channel, text) => resolve([channel, text])),
      );
      const pmessage = once<[string, string, string]>((resolve) =>
        subscriber.on('pmessage', (pattern, channel, text) => resolve([pattern, channel, text])),
      );
      expect(await publisher.publish('sb-io', JSON.stringify({ type: 'process.exited', data: { code: 0 } }))).toBe(2);
      const [channel, text] = await message;
      expect(channel).toBe('sb-io');
      expect(JSON.parse(text)).toMatchObject({
        sandboxId: 'sb-io',
        workspaceId: 1,
        type: 'process.exited',
        data: { code: 0 },
      });
      expect(await pmessage).toEqual(['sb-io*', 'sb-io', text]);
      expect(await publisher.call('HISTORY', 'sb-io')).toEqual([text]);
      expect(await publisher.ping()).toBe('PONG');
      expect(await publisher.pubsub('NUMSUB', 'sb-io')).toEqual(['sb-io', 1]);
    } finally {
      subscriber.disconnect();
      publisher.disconnect();
    }
  });

  it("a wrong token surfaces as ioredis's WRONGPASS error", async () => {
    const client = new Redis({
      port: broker.port,
      host: '127.0.0.1',
      password: 'wrong',
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    const failure = once<Error>((resolve) => client.on('error', resolve));
    await client.connect().catch(() => {});
    expect((await failure).message).toMatch(/^WRONGPASS invalid username-password pair/);
    client.disconnect();
  });
});

describe('node-redis', () => {
  for (const RESP of [2, 3] as const) {
    it(`RESP${RESP}: subscribes, publishes and receives`, async () => {
      const client = createClient({
        socket: { host: '127.0.0.1', port: broker.port, reconnectStrategy: false },
        password: token,
        RESP,
      });
      client.on('error', () => {});
      await client.connect();
      const subscriber = client.duplicate();
      subscriber.on('error', () => {});
      await subscriber.connect();
      try {
        const received = once<[string, string]>((resolve) => {
          void subscriber.subscribe(`sb-node-${RESP}`, (text, channel) => resolve([channel, text]));
        });
        // subscribe() resolves on the confirmation; wait for it before publishing.
        await new Promise<void>((resolve) => {
          const check = async (): Promise<void> => {
            const counts = (await client.sendCommand(['PUBSUB', 'NUMSUB', `sb-node-${RESP}`])) as unknown[];
            if (counts[1] === 1) resolve();
            else setImmediate(() => void check());
          };
          void check();
        });
        expect(
          await client.publish(
            `sb-node-${RESP}`,
            JSON.stringify({ type: 'lifecycle', data: { state: 'kernel_started' } }),
          ),
        ).toBe(1);
        const [channel, text] = await received;
        expect(channel).toBe(`sb-node-${RESP}`);
        expect(JSON.parse(text)).toMatchObject({ type: 'lifecycle', data: { state: 'kernel_started' } });
        expect(await client.ping()).toBe('PONG');
        expect(await client.sendCommand(['HISTORY', `sb-node-${RESP}`])).toEqual([text]);
      } finally {
        await subscriber.close();
        await client.close();
      }
    });
  }
});

describe.skipIf(!hasRedisCli)('redis-cli', () => {
  const cli = (...args: string[]) =>
    run('redis-cli', ['-h', '127.0.0.1', '-p', String(broker.port), '--no-auth-warning', '-a', token, ...args]);

  it('PING, PUBLISH, HISTORY, INFO', async () => {
    expect((await cli('PING')).stdout).toBe('PONG\n');
    expect((await cli('PUBLISH', 'sb-cli', '{"type":"terminal.output","data":{"text":"hi"}}')).stdout).toBe('0\n');
    const history = (await cli('HISTORY', 'sb-cli')).stdout;
    expect(JSON.parse(history)).toMatchObject({ type: 'terminal.output', data: { text: 'hi' }, sandboxId: 'sb-cli' });
    expect((await cli('INFO')).stdout).toMatch(/loading:0/);
  });

  it('SUBSCRIBE in one redis-cli, PUBLISH from another', async () => {
    const subscriber = spawn('redis-cli', [
      '-h',
      '127.0.0.1',
      '-p',
      String(broker.port),
      '--no-auth-warning',
      '-a',
      token,
      'SUBSCRIBE',
      'sb-tour',
    ]);
    let output = '';
    const seen = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (output.includes(text)) resolve();
        };
        subscriber.stdout.on('data', (chunk: Buffer) => {
          output += chunk.toString();
          check();
        });
        subscriber.once('exit', () => reject(new Error(`redis-cli exited; output: ${output}`)));
        check();
      });
    try {
      await seen('subscribe\nsb-tour\n1\n');
      expect((await cli('PUBLISH', 'sb-tour', '{"type":"execution.completed","data":{"exitCode":0}}')).stdout).toBe(
        '1\n',
      );
      await seen('"type":"execution.completed"');
      expect(output).toMatch(
        /message\nsb-tour\n\{"id":"\d+-\d+","sandboxId":"sb-tour","workspaceId":1,"type":"execution.completed"/,
      );
    } finally {
      subscriber.kill();
    }
  });

  it('bad token: redis-cli shows the WRONGPASS error', async () => {
    const result = await run('redis-cli', [
      '-h',
      '127.0.0.1',
      '-p',
      String(broker.port),
      '--no-auth-warning',
      '-a',
      'nope',
      'PING',
    ]).catch((error: { stdout: string; stderr: string }) => error);
    expect(`${result.stdout}${result.stderr}`).toMatch(/WRONGPASS|NOAUTH/);
  });
});
