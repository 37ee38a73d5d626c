import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { REDIS7_VECTORS, withToken } from '../fixtures/redis7-replies.js';
import { resp } from '../support/raw-client.js';
import { startTestServer, type TestServer } from '../support/test-server.js';

let broker: TestServer;
let token: string;
/**
 * Each test works in a workspace of its own: workspaces are isolated, so every test sees an
 * empty broker (the vectors were captured on a fresh Redis) while sharing one server.
 */
let workspaceId = 1;

beforeEach(async () => {
  workspaceId += 1;
  token = await broker.token({ workspaceId });
});
beforeAll(async () => {
  broker = await startTestServer();
});
afterAll(() => broker.close());

/** The event JSON the broker builds, with the id and timestamp it assigned. */
const EVENT_PATTERN = (sandboxId: string, type: string, data: string) =>
  new RegExp(
    `^\\{"id":"(\\d+)-(\\d+)","sandboxId":"${sandboxId}","workspaceId":${workspaceId},"type":"${type.replace('.', '\\.')}","data":${data.replace(/[{}]/g, '\\$&')},"timestamp":\\d+\\}$`,
  );

describe('Redis 7 reply vectors, byte for byte', () => {
  for (const vector of REDIS7_VECTORS) {
    it(vector.name, async () => {
      const client = await broker.raw();
      client.send(withToken(vector.sent, token));
      // On purpose: after Redis's WRONGPASS text the broker says why (docs/protocol.md).
      const expected = vector.received.startsWith('-WRONGPASS')
        ? vector.received.replace('\r\n', ' reason: malformed\r\n')
        : vector.received;
      expect(await client.read(expected)).toBe(expected);
      if (vector.name === 'QUIT') expect(await client.closedByServer()).toBe(true);
      client.close();
    });
  }

  it('HELLO 3 with AUTH, then a push on SUBSCRIBE and +PONG', async () => {
    const client = await broker.raw();
    client.send(resp('HELLO', '3', 'AUTH', 'default', token) + resp('SUBSCRIBE', 'a') + resp('PING'));
    const hello = await client.waitFor((received) => received.includes('*0\r\n'));
    const id = /\$2\r\nid\r\n:(\d+)\r\n/.exec(hello.toString())?.[1];
    const expected =
      '%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n' +
      `$2\r\nid\r\n:${id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n` +
      '>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n+PONG\r\n';
    expect(await client.read(expected)).toBe(expected);
  });

  it('HELLO 2 replies a flat array, HELLO with no version keeps the protocol', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(resp('HELLO', '2', 'SETNAME', 'tester') + resp('CLIENT', 'GETNAME'));
    const reply = await client.waitFor((received) => received.includes('$6\r\ntester\r\n'));
    expect(reply.toString()).toMatch(/^\*14\r\n\$6\r\nserver\r\n\$5\r\nredis\r\n/);
    expect(reply.toString()).toMatch(/\$5\r\nproto\r\n:2\r\n/);
  });

  it("HELLO before AUTH without AUTH option is refused with Redis's text", async () => {
    const client = await broker.raw();
    client.send(resp('HELLO', '3'));
    expect(await client.line()).toBe(
      '-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n',
    );
  });

  it('HELLO errors: bad version, bad option, bad token', async () => {
    const client = await broker.raw();
    client.send(resp('HELLO', 'x') + resp('HELLO', '3', 'FOO') + resp('HELLO', '3', 'AUTH', 'default', 'nope'));
    expect(await client.line()).toBe('-ERR Protocol version is not an integer or out of range\r\n');
    expect(await client.line()).toBe("-ERR Syntax error in HELLO option 'FOO'\r\n");
    expect(await client.line()).toBe(
      '-WRONGPASS invalid username-password pair or user is disabled. reason: malformed\r\n',
    );
  });

  it('PING before AUTH is NOAUTH; PING msg unsubscribed is a bulk string', async () => {
    const client = await broker.raw();
    client.send(resp('PING'));
    expect(await client.line()).toBe('-NOAUTH Authentication required.\r\n');
    client.send(resp('AUTH', token) + resp('PING', 'hello') + resp('PING', 'a', 'b'));
    const expected = `+OK\r\n$5\r\nhello\r\n-ERR wrong number of arguments for 'ping' command\r\n`;
    expect(await client.read(expected)).toBe(expected);
  });

  it('AUTH with three arguments is a syntax error; unknown subcommand names the container', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(
      resp('AUTH', 'a', 'b', 'c') + resp('CLIENT', 'NOPE') + resp('PUBSUB', 'shardchannels') + resp('CLIENT'),
    );
    expect(await client.line()).toBe('-ERR syntax error\r\n');
    expect(await client.line()).toBe("-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n");
    expect(await client.line()).toBe("-ERR unknown subcommand 'shardchannels'. Try PUBSUB HELP.\r\n");
    expect(await client.line()).toBe("-ERR wrong number of arguments for 'client' command\r\n");
  });

  it('unknown commands are reported before NOAUTH, as Redis 7 does', async () => {
    const client = await broker.raw();
    client.send(resp('FOO'));
    expect(await client.line()).toBe("-ERR unknown command 'FOO', with args beginning with: \r\n");
  });

  it('CLIENT SETNAME refuses spaces; CLIENT ID is an integer; SELECT x is not an integer', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(resp('CLIENT', 'SETNAME', 'a b') + resp('CLIENT', 'ID') + resp('SELECT', 'x'));
    expect(await client.line()).toBe('-ERR Client names cannot contain spaces, newlines or special characters.\r\n');
    expect(await client.line()).toMatch(/^:\d+\r\n$/);
    expect(await client.line()).toBe('-ERR value is not an integer or out of range\r\n');
  });

  it('RESP3 UNSUBSCRIBE with nothing subscribed carries a RESP3 null', async () => {
    const client = await broker.raw();
    client.send(resp('HELLO', '3', 'AUTH', 'u', token));
    await client.waitFor((received) => received.includes('*0\r\n'));
    await client.take(client.pending.length);
    client.send(resp('UNSUBSCRIBE'));
    const expected = '>3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n';
    expect(await client.read(expected)).toBe(expected);
  });
});

describe('delivery frames', () => {
  it('a subscriber of sb-1 and sb-* gets message and pmessage; the publisher gets :2 (RESP2)', async () => {
    const subscriber = await broker.authed({ workspaceId });
    subscriber.send(resp('SUBSCRIBE', 'sb-1') + resp('PSUBSCRIBE', 'sb-*'));
    const confirmations =
      '*3\r\n$9\r\nsubscribe\r\n$4\r\nsb-1\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$4\r\nsb-*\r\n:2\r\n';
    expect(await subscriber.read(confirmations)).toBe(confirmations);

    const publisher = await broker.authed({ workspaceId });
    publisher.send(resp('PUBLISH', 'sb-1', '{"type":"t"}'));
    expect(await publisher.line()).toBe(':2\r\n');

    const message = await readFrame(subscriber, 3);
    expect(message.slice(0, 2)).toEqual(['message', 'sb-1']);
    expect(message[2]).toMatch(EVENT_PATTERN('sb-1', 't', '{}'));
    const pmessage = await readFrame(subscriber, 4);
    expect(pmessage.slice(0, 3)).toEqual(['pmessage', 'sb-*', 'sb-1']);
    expect(pmessage[3]).toBe(message[2]);
  });

  it('the same in RESP3: > pushes', async () => {
    const subscriber = await broker.raw();
    subscriber.send(
      resp('HELLO', '3', 'AUTH', 'default', token) + resp('SUBSCRIBE', 'sb-3') + resp('PSUBSCRIBE', 'sb-*'),
    );
    await subscriber.waitFor((received) => received.includes('$4\r\nsb-*\r\n:2\r\n'));
    await subscriber.take(subscriber.pending.length);

    const publisher = await broker.authed({ workspaceId });
    publisher.send(resp('PUBLISH', 'sb-3', '{"type":"exec.done","data":{"exitCode":0}}'));
    expect(await publisher.line()).toBe(':2\r\n');
    const frames = await subscriber.waitFor((received) => received.toString().split('>').length === 3);
    const text = frames.toString();
    expect(text.startsWith('>3\r\n$7\r\nmessage\r\n$4\r\nsb-3\r\n$')).toBe(true);
    expect(text).toContain('>4\r\n$8\r\npmessage\r\n$4\r\nsb-*\r\n$4\r\nsb-3\r\n$');
    expect(text).toContain('"type":"exec.done","data":{"exitCode":0}');
  });

  it('ids are strictly increasing per sandbox and the event has the documented shape', async () => {
    const subscriber = await broker.authed({ workspaceId });
    subscriber.send(resp('SUBSCRIBE', 'sb-ids'));
    const confirmation = '*3\r\n$9\r\nsubscribe\r\n$6\r\nsb-ids\r\n:1\r\n';
    expect(await subscriber.read(confirmation)).toBe(confirmation);
    const publisher = await broker.authed({ workspaceId });
    let pipeline = '';
    for (let i = 0; i < 200; i += 1) pipeline += resp('PUBLISH', 'sb-ids', JSON.stringify({ type: 'n', data: { i } }));
    publisher.send(pipeline);
    await publisher.waitFor((received) => received.toString().split(':1\r\n').length === 201);
    expect(publisher.pending).toBe(':1\r\n'.repeat(200));
    let previous = [0, -1];
    for (let i = 0; i < 200; i += 1) {
      const [, , json] = await readFrame(subscriber, 3);
      const event = JSON.parse(json!) as Record<string, unknown>;
      expect(Object.keys(event)).toEqual(['id', 'sandboxId', 'workspaceId', 'type', 'data', 'timestamp']);
      expect(event.data).toEqual({ i });
      const [ms, seq] = (event.id as string).split('-').map(Number) as [number, number];
      expect(ms > previous[0]! || (ms === previous[0] && seq > previous[1]!)).toBe(true);
      previous = [ms, seq];
    }
  });

  it('PUBLISH validates the payload and stores nothing when it is bad', async () => {
    const client = await broker.authed({ workspaceId });
    const bad = [
      ['not json', '-ERR invalid event: payload is not valid JSON\r\n'],
      ['[1]', '-ERR invalid event: payload must be a JSON object {"type": "...", "data": {...}}\r\n'],
      ['{"data":{}}', '-ERR invalid event: "type" must be a string of 1 to 128 characters\r\n'],
      ['{"type":""}', '-ERR invalid event: "type" must be a string of 1 to 128 characters\r\n'],
      [
        JSON.stringify({ type: 'x'.repeat(129) }),
        '-ERR invalid event: "type" must be a string of 1 to 128 characters\r\n',
      ],
      ['{"type":"t","data":[1]}', '-ERR invalid event: "data" must be a JSON object\r\n'],
      ['{"type":"t","id":"1-1"}', '-ERR invalid event: unexpected field "id": only "type" and "data" are accepted\r\n'],
      [
        JSON.stringify({ type: 't', data: { blob: 'x'.repeat(70_000) } }),
        /^-ERR event too large \(\d+ bytes, limit 65536\)\r\n$/,
      ],
    ] as const;
    for (const [payload, reply] of bad) {
      client.send(resp('PUBLISH', 'sb-bad', payload));
      const line = await client.line();
      if (typeof reply === 'string') expect(line).toBe(reply);
      else expect(line).toMatch(reply);
    }
    client.send(resp('HISTORY', 'sb-bad'));
    expect(await client.line()).toBe('*0\r\n');
  });

  it('newlines in the published JSON never reach the event line', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(resp('PUBLISH', 'sb-nl', '{\r\n"type": "t",\n"data": {"text": "a\\nb"}\n}'));
    expect(await client.line()).toBe(':0\r\n');
    client.send(resp('HISTORY', 'sb-nl'));
    const reply = await client.waitFor((received) => received.toString().endsWith('}\r\n'));
    const json = reply.toString().split('\r\n')[2]!;
    expect(json).toMatch(EVENT_PATTERN('sb-nl', 't', '{"text":"a\\\\nb"}'));
  });
});

describe('the ComputeSDK events client, its exact bytes', () => {
  it('SUBSCRIBE <id> <token> as one inline line: +OK, events as *3 frames, PING, UNSUBSCRIBE', async () => {
    const sandboxToken = await broker.token({ workspaceId, role: 'sandbox', sandboxId: 'sb-sdk' });
    const client = await broker.raw();
    client.send(`SUBSCRIBE sb-sdk ${sandboxToken}\r\n`);
    expect(await client.read('+OK\r\n')).toBe('+OK\r\n');

    const publisher = await broker.authed({ workspaceId, role: 'sandbox', sandboxId: 'sb-sdk' });
    publisher.send(resp('PUBLISH', 'sb-sdk', '{"type":"execution.started","data":{"cmd":"ls"}}'));
    expect(await publisher.line()).toBe(':1\r\n');

    // The client skips lines starting with * and $ and parses each line starting with {.
    const frame = await readFrame(client, 3);
    expect(frame.slice(0, 2)).toEqual(['message', 'sb-sdk']);
    expect(frame[2]).toMatch(EVENT_PATTERN('sb-sdk', 'execution.started', '{"cmd":"ls"}'));

    client.send('PING\r\n');
    expect(await client.read('+PONG\r\n')).toBe('+PONG\r\n');
    client.send('UNSUBSCRIBE\r\n');
    const bye = '*3\r\n$11\r\nunsubscribe\r\n$6\r\nsb-sdk\r\n:0\r\n';
    expect(await client.read(bye)).toBe(bye);
  });

  it('errors on that path start with -ERR', async () => {
    const otherSandbox = await broker.token({ workspaceId, role: 'sandbox', sandboxId: 'sb-other' });
    const client = await broker.raw();
    client.send(`SUBSCRIBE sb-sdk ${otherSandbox}\r\n`);
    expect(await client.line()).toBe(
      '-ERR permission denied: this user has no permissions to access one of the channels used as arguments\r\n',
    );
    const badSignature = `${(await broker.token({ workspaceId, role: 'sandbox', sandboxId: 'sb-sdk' })).slice(0, -4)}AAAA`;
    const second = await broker.raw();
    second.send(`SUBSCRIBE sb-sdk ${badSignature}\r\n`);
    expect(await second.line()).toMatch(/^-ERR authentication failed: /);
  });
});

/** Reads one RESP2/RESP3 array-of-bulks frame with `count` elements. */
async function readFrame(client: Awaited<ReturnType<TestServer['raw']>>, count: number): Promise<string[]> {
  const header = await client.line();
  expect(header).toMatch(new RegExp(`^[*>]${count}\\r\\n$`));
  const items: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const length = Number(/^\$(\d+)\r\n$/.exec(await client.line())?.[1]);
    const body = Buffer.from(await client.take(length + 2), 'latin1');
    items.push(body.subarray(0, length).toString('utf8'));
  }
  return items;
}

describe('INFO and COMMAND', () => {
  it('INFO has loading:0, clients, pub/sub and event counters that move', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(resp('SUBSCRIBE', 'sb-info'));
    await client.read('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-info\r\n:1\r\n');
    const publisher = await broker.authed({ workspaceId });
    publisher.send(resp('PUBLISH', 'sb-info', '{"type":"t"}') + resp('INFO'));
    expect(await publisher.line()).toBe(':1\r\n');
    const length = Number(/^\$(\d+)\r\n$/.exec(await publisher.line())?.[1]);
    const info = Buffer.from(await publisher.take(length + 2), 'latin1').toString('utf8');
    const fields = Object.fromEntries(
      info
        .split('\r\n')
        .filter((line) => line.includes(':'))
        .map((line) => line.split(':', 2) as [string, string]),
    );
    expect(fields).toMatchObject({ loading: '0', redis_version: '7.0.15', pubsub_channels: '1', pubsub_patterns: '0' });
    expect(Number(fields.connected_clients)).toBeGreaterThanOrEqual(2);
    expect(Number(fields.events_published)).toBeGreaterThanOrEqual(1);
    expect(Number(fields.events_delivered)).toBeGreaterThanOrEqual(1);
    expect(info).toMatch(/^# Server\r\n/);
    publisher.send(resp('INFO', 'persistence'));
    const section = await publisher.waitFor((received) => received.toString().includes('store:'));
    expect(section.toString()).toMatch(/^\$\d+\r\n# Persistence\r\nloading:0\r\nstore:memory\r\n\r\n$/);
  });

  it("INFO for a workspace or sandbox token counts only its workspace; an admin's counts the whole broker", async () => {
    const infoOf = async (client: Awaited<ReturnType<typeof broker.authed>>): Promise<Record<string, string>> => {
      client.send(resp('INFO'));
      const length = Number(/^\$(\d+)\r\n$/.exec(await client.line())?.[1]);
      const text = Buffer.from(await client.take(length + 2), 'latin1').toString('utf8');
      return Object.fromEntries(
        text
          .split('\r\n')
          .filter((line) => line.includes(':'))
          .map((line) => line.split(':', 2) as [string, string]),
      );
    };
    // Workspace 71 is busy: two subscribers, three events. Workspace 72 has one quiet client.
    const busy = 71;
    const quiet = 72;
    for (let i = 0; i < 2; i++) {
      const subscriber = await broker.authed({ workspaceId: busy });
      subscriber.send(resp('SUBSCRIBE', 'sb-busy'));
      await subscriber.read('*3\r\n$9\r\nsubscribe\r\n$7\r\nsb-busy\r\n:1\r\n');
    }
    const publisher = await broker.authed({ workspaceId: busy });
    for (let i = 0; i < 3; i++) {
      publisher.send(resp('PUBLISH', 'sb-busy', '{"type":"t"}'));
      expect(await publisher.line()).toBe(':2\r\n');
    }
    const other = await infoOf(await broker.authed({ workspaceId: quiet }));
    expect(other).toMatchObject({ connected_clients: '1', events_published: '0', events_delivered: '0' });
    expect(other).toMatchObject({ pubsub_channels: '0', loading: '0' });
    for (const brokerWide of ['used_memory_rss', 'total_connections_received', 'total_commands_processed']) {
      expect(other).not.toHaveProperty(brokerWide);
    }
    for (const brokerWide of [
      'rejected_connections',
      'auth_failures',
      'protocol_errors',
      'slow_consumer_disconnects',
      'evicted_clients',
      'client_output_total_bytes',
    ]) {
      expect(other).not.toHaveProperty(brokerWide);
    }
    // The budget is configuration, the same for everyone.
    expect(Number(other.client_output_budget_bytes)).toBeGreaterThan(0);
    const own = await infoOf(await broker.authed({ workspaceId: busy, sandboxId: 'sb-busy', role: 'sandbox' }));
    expect(own).toMatchObject({ connected_clients: '4', events_published: '3', events_delivered: '6' });

    const admin = await infoOf(await broker.authed({ workspaceId: 1, role: 'admin' }));
    expect(Number(admin.connected_clients)).toBeGreaterThanOrEqual(6);
    expect(Number(admin.events_published)).toBeGreaterThanOrEqual(3);
    expect(Number(admin.events_delivered)).toBeGreaterThanOrEqual(6);
    expect(Number(admin.used_memory_rss)).toBeGreaterThan(0);
    expect(admin).toHaveProperty('total_commands_processed');
    expect(admin).toMatchObject({ evicted_clients: '0' });
    expect(Number(admin.client_output_total_bytes)).toBeGreaterThanOrEqual(0);
  });

  it('COMMAND DOCS is a map of every command with summary, since and group; COMMAND COUNT matches', async () => {
    const client = await broker.authed({ workspaceId });
    client.send(resp('COMMAND', 'COUNT') + resp('COMMAND', 'DOCS', 'publish') + resp('COMMAND', 'INFO', 'nope'));
    const count = Number(/^:(\d+)\r\n$/.exec(await client.line())?.[1]);
    expect(count).toBe(20); // 7 connection, 6 pub/sub, 3 server (CONFIG among them), 4 stream commands (HISTORY, RESUME, PRESUME, SANDBOXES)
    const docs =
      '*2\r\n$7\r\npublish\r\n*6\r\n$7\r\nsummary\r\n$60\r\nStore an event {"type","data"} and deliver it to subscribers\r\n' +
      '$5\r\nsince\r\n$5\r\n2.0.0\r\n$5\r\ngroup\r\n$6\r\npubsub\r\n';
    expect(await client.read(docs)).toBe(docs);
    expect(await client.read('*1\r\n*-1\r\n')).toBe('*1\r\n*-1\r\n');
  });
});
