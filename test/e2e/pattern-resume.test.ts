import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type Daemon, killDaemons } from '../support/daemon.js';
import { StoreDaemons, STORES_AND_ENGINE, type StoreKind } from '../support/engine.js';
import { cliToken } from '../support/e2e.js';
import { RawClient, resp } from '../support/raw-client.js';

/**
 * Pattern resume (docs/protocol.md, "Pattern resume"; docs/http.md, "Pattern streams")
 * through the real daemon: an SSE pattern stream carries a store-order cursor in `id:` and a
 * reconnect with Last-Event-ID replays exactly what every matching sandbox got meanwhile;
 * PRESUME does the same over RESP; a trimmed cursor gets the gap signal. On the memory and
 * SQLite stores and the Redis engine (its order per workspace, docs/scaling.md).
 */

interface SseFrame {
  id?: string;
  event: string;
  data: string;
}

const daemons = new StoreDaemons();
const clients: Redis[] = [];
const raws: RawClient[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.disconnect();
  for (const raw of raws.splice(0)) raw.socket.destroy();
  killDaemons();
});
afterAll(() => daemons.cleanup());

/** A daemon on `store` (StoreDaemons.start), a workspace token and a publisher. */
async function start(store: StoreKind, extra: string[] = [], dataDir?: string) {
  const { daemon, dir } = await daemons.start(store, extra, dataDir);
  const token = await cliToken(dir, '--workspace', '1');
  const publisher = new Redis({ port: daemon.port, host: '127.0.0.1', password: token });
  clients.push(publisher);
  return { daemon, dir, token, publisher };
}

/**
 * Opens `GET /events/stream?pattern=` (with Last-Event-ID when given) and reads frames until
 * `count` events arrived; then closes it. Control frames (`gap`) are kept too.
 */
async function readPatternStream(
  daemon: Daemon,
  token: string,
  pattern: string,
  count: number,
  lastEventId?: string,
  whenOpen?: () => Promise<void>,
): Promise<SseFrame[]> {
  const controller = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'text/event-stream' };
  if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
  const url = `http://127.0.0.1:${daemon.httpPort}/events/stream?pattern=${encodeURIComponent(pattern)}`;
  const response = await fetch(url, { headers, signal: controller.signal });
  expect(response.status).toBe(200);
  const frames: SseFrame[] = [];
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  let events = 0;
  let opened = false;
  try {
    while (events < count) {
      if (!opened) {
        opened = true;
        await whenOpen?.();
      }
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const frame: SseFrame = { event: 'message', data: '' };
        let hasData = false;
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) frame.id = line.slice(4);
          else if (line.startsWith('event: ')) frame.event = line.slice(7);
          else if (line.startsWith('data: ')) {
            frame.data = line.slice(6);
            hasData = true;
          }
        }
        if (!hasData) continue; // comments (heartbeats), retry
        frames.push(frame);
        if (frame.event !== 'gap') events += 1;
      }
    }
  } finally {
    controller.abort();
  }
  return frames;
}

/** Publishes `perSandbox` events to each of `sandboxes`, interleaved; returns their tags in order. */
async function publishAcross(
  publisher: Redis,
  sandboxes: string[],
  perSandbox: number,
  tag: string,
): Promise<string[]> {
  const tags: string[] = [];
  for (let round = 0; round < perSandbox; round += 1) {
    for (const sandbox of sandboxes) {
      const name = `${tag}-${sandbox}-${round}`;
      await publisher.publish(sandbox, JSON.stringify({ type: 'step', data: { name } }));
      tags.push(name);
    }
  }
  return tags;
}

function names(frames: SseFrame[]): string[] {
  return frames
    .filter((frame) => frame.event !== 'gap')
    .map((frame) => (JSON.parse(frame.data) as { data: { name: string } }).data.name);
}

describe.each(STORES_AND_ENGINE)('pattern resume (%s store)', (store) => {
  it('an SSE pattern stream reconnecting with Last-Event-ID gets exactly the 15 events it missed', async () => {
    const { daemon, token, publisher } = await start(store);
    const sandboxes = ['p-1', 'p-2', 'p-3'];
    const before = await readPatternStream(daemon, token, 'p-*', 1, undefined, async () => {
      await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    });
    expect(names(before)).toEqual(['seen']);
    const cursor = before[0]!.id!;
    expect(cursor).toMatch(/^w[0-9]+$/);

    // While the stream is away: 15 events over 3 matching sandboxes, and one that does not match.
    const missed = await publishAcross(publisher, sandboxes, 5, 'away');
    await publisher.publish('q-1', JSON.stringify({ type: 'step', data: { name: 'other' } }));

    // Reconnect; one live event after the replay shows nothing else came in between.
    const after = await readPatternStream(daemon, token, 'p-*', 16, cursor, async () => {
      await publisher.publish('p-2', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    });
    expect(after.filter((frame) => frame.event === 'gap')).toEqual([]);
    expect(names(after)).toEqual([...missed, 'live']);
    const ids = after.map((frame) => frame.id!);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('events published during the replay come once each, after it, each sandbox in order', async () => {
    const { daemon, token, publisher } = await start(store);
    const first = await readPatternStream(daemon, token, 'p-*', 1, undefined, async () => {
      await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    });
    // More than a few replay pages (64 events each), so live events meet the replay's seam.
    const missed = await publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 70, 'away');
    let during: Promise<string[]> = Promise.resolve([]);
    const after = await readPatternStream(daemon, token, 'p-*', 210 + 30, first[0]!.id!, async () => {
      during = publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 10, 'during');
    });
    const live = await during;
    expect(after.filter((frame) => frame.event === 'gap')).toEqual([]);
    const got = names(after);
    expect(got.slice(0, 210)).toEqual(missed);
    expect(new Set(got).size).toBe(got.length);
    for (const sandbox of ['p-1', 'p-2', 'p-3']) {
      const ofSandbox = (list: string[]): string[] => list.filter((name) => name.includes(`-${sandbox}-`));
      expect(ofSandbox(got)).toEqual([...ofSandbox(missed), ...ofSandbox(live)]);
    }
  });

  it('a cursor whose events were trimmed gets a trimmed gap, then what is retained', async () => {
    const { daemon, token, publisher } = await start(store, ['--retention-count', '3']);
    const first = await readPatternStream(daemon, token, 'p-*', 1, undefined, async () => {
      await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    });
    const cursor = first[0]!.id!;
    await publishAcross(publisher, ['p-1', 'p-2'], 5, 'away');
    // SQLite applies the count limit just after the commit (docs/operations.md, "Retention"):
    // wait until it did, by what HISTORY answers.
    for (const sandbox of ['p-1', 'p-2']) {
      while (((await publisher.call('HISTORY', sandbox)) as unknown[]).length > 3);
    }
    const after = await readPatternStream(daemon, token, 'p-*', 6, cursor);
    expect(after[0]!.event).toBe('gap');
    expect(JSON.parse(after[0]!.data)).toMatchObject({ pattern: 'p-*', lastEventId: cursor, status: 'trimmed' });
    // 3 retained per sandbox, in store order.
    expect(names(after)).toEqual(['away-p-1-2', 'away-p-2-2', 'away-p-1-3', 'away-p-2-3', 'away-p-1-4', 'away-p-2-4']);
  });

  it('PRESUME <pattern> <cursor> replays as pmessage frames, from a raw RESP client', async () => {
    const { daemon, token, publisher } = await start(store);
    const first = await readPatternStream(daemon, token, 'p-*', 1, undefined, async () => {
      await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    });
    const missed = await publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 2, 'away');
    const raw = await RawClient.connect(daemon.port);
    raws.push(raw);
    raw.send(resp('AUTH', token));
    raw.send(resp('PRESUME', 'p-*', first[0]!.id!));
    await raw.waitFor((text) => text.includes('presume'));
    await publisher.publish('p-3', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    const text = (await raw.waitFor((bytes) => bytes.includes('live'))).toString();
    expect(text).toMatch(
      /^\+OK\r\n\*6\r\n\$7\r\npresume\r\n\$3\r\np-\*\r\n:1\r\n\$8\r\ncomplete\r\n\$-1\r\n\$2\r\nw7\r\n/,
    );
    const received = [
      ...text.matchAll(/\$8\r\npmessage\r\n\$3\r\np-\*\r\n\$3\r\np-[0-9]\r\n\$[0-9]+\r\n([^\r]*)\r\n/g),
    ].map((match) => (JSON.parse(match[1]!) as { data: { name: string } }).data.name);
    expect(received).toEqual([...missed, 'live']);
  });
});

describe.each(STORES_AND_ENGINE.filter((store) => store !== 'memory'))(
  'pattern resume across a restart (%s)',
  (store) => {
    it('a cursor from before the restart replays exactly what was published after it', async () => {
      const { daemon, dir, token, publisher } = await start(store);
      const first = await readPatternStream(daemon, token, 'p-*', 1, undefined, async () => {
        await publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
      });
      const cursor = first[0]!.id!;
      const beforeRestart = await publishAcross(publisher, ['p-1', 'p-2', 'p-3'], 2, 'old');
      publisher.disconnect();
      daemon.child.kill('SIGTERM');
      await daemon.exited;
      const restarted = await start(store, [], dir);
      const afterRestart = await publishAcross(restarted.publisher, ['p-1', 'p-2', 'p-3'], 3, 'new');
      const after = await readPatternStream(restarted.daemon, token, 'p-*', 15, cursor);
      expect(after.filter((frame) => frame.event === 'gap')).toEqual([]);
      expect(names(after)).toEqual([...beforeRestart, ...afterRestart]);
      // A cursor the new process issued resumes too: after the last event, nothing is replayed.
      const last = after[after.length - 1]!.id!;
      const tail = await readPatternStream(restarted.daemon, token, 'p-*', 1, last, async () => {
        await restarted.publisher.publish('p-2', JSON.stringify({ type: 'step', data: { name: 'live' } }));
      });
      expect(names(tail)).toEqual(['live']);
    });
  },
);

describe.runIf(STORES_AND_ENGINE.includes('redis'))('pattern resume with the Redis engine, across nodes', () => {
  it('a cursor from node A resumes at node B, exactly; an admin pattern over every workspace is not resumable', async () => {
    const a = await start('redis');
    const b = await start('redis', [], a.dir);
    const first = await readPatternStream(a.daemon, a.token, 'p-*', 1, undefined, async () => {
      await a.publisher.publish('p-1', JSON.stringify({ type: 'step', data: { name: 'seen' } }));
    });
    // Published at both nodes while the reader is away: one order, kept in Redis.
    const atA = await publishAcross(a.publisher, ['p-1', 'p-2'], 2, 'a');
    const atB = await publishAcross(b.publisher, ['p-2', 'p-3'], 2, 'b');
    const after = await readPatternStream(b.daemon, a.token, 'p-*', 9, first[0]!.id!, async () => {
      await a.publisher.publish('p-3', JSON.stringify({ type: 'step', data: { name: 'live' } }));
    });
    expect(after.filter((frame) => frame.event === 'gap')).toEqual([]);
    expect(names(after)).toEqual([...atA, ...atB, 'live']);

    const admin = await cliToken(a.dir, '--workspace', '1', '--role', 'admin');
    const raw = await RawClient.connect(b.daemon.port);
    raws.push(raw);
    raw.send(resp('AUTH', admin));
    raw.send(resp('PRESUME', '{*}p-*', first[0]!.id!));
    const text = (await raw.waitFor((bytes) => bytes.includes('presume'))).toString();
    expect(text).toContain('$13\r\nnot_resumable\r\n');
  });
});
