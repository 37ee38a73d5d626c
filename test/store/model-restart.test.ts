/**
 * The memory store against a SQLite store that is closed and reopened between steps,
 * and that gets appends in bursts (several streams per group-commit batch).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareEventIds, type EventId, type StoredEvent } from '../../src/event/event.js';
import { MemoryStore } from '../../src/store/memory-store.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import type { RetentionPolicy } from '../../src/store/types.js';
import { Clock, T0, newEvent, tempDir } from './helpers.js';

type Op =
  | { op: 'burst'; items: { ws: number; sb: string; type: string }[] }
  | { op: 'clock'; delta: number }
  | { op: 'restart' }
  | {
      op: 'history';
      ws: number;
      sb: string;
      type?: string;
      after?: number;
      since?: number;
      limit: number;
      newest: boolean;
    }
  | { op: 'replay'; ws: number; sb: string; after: number; bump: number; limit: number };

const ws = fc.constantFrom(1, 2);
const sb = fc.constantFrom('a', 'b', 'c');
const item = fc.record({ ws, sb, type: fc.constantFrom('x', 'y') });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ op: fc.constant('burst' as const), items: fc.array(item, { minLength: 1, maxLength: 6 }) }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ op: fc.constant('clock' as const), delta: fc.integer({ min: -300, max: 600 }) }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('restart' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        op: fc.constant('history' as const),
        ws,
        sb,
        type: fc.constantFrom('x', 'y'),
        after: fc.nat(200),
        since: fc.integer({ min: -50, max: 3_000 }),
        limit: fc.integer({ min: 1, max: 10 }),
        newest: fc.boolean(),
      },
      { requiredKeys: ['op', 'ws', 'sb', 'limit', 'newest'] },
    ),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('replay' as const),
      ws,
      sb,
      after: fc.nat(200),
      bump: fc.constantFrom(-1, 0, 0, 1),
      limit: fc.integer({ min: 1, max: 10 }),
    }),
  },
);

describe('memory vs SQLite with restarts and bursts', () => {
  let dir: string;
  let run = 0;
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('agree', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 20, maxLength: 60 }), async (ops) => {
        const clock = new Clock();
        const retention: RetentionPolicy = { maxCount: 4, maxAgeMs: 500 };
        const path = join(dir, `m-${run++}.db`);
        const openSqlite = () =>
          SqliteStore.open({
            path,
            retention,
            now: clock.now,
            pruneIntervalMs: 0,
            pruneBatchSize: 3,
            checkpoint: 'inline',
          });
        const memory = new MemoryStore({ retention, now: clock.now, pruneIntervalMs: 0 });
        let sqlite = openSqlite();
        const issued: EventId[] = [{ ms: 0, seq: 0 }];
        const last = new Map<string, EventId>();
        const pick = (i: number): EventId => issued[i % issued.length] as EventId;
        try {
          for (const op of ops) {
            if (op.op === 'burst') {
              const inputs = op.items.map((i) => newEvent(i.sb, i.type, {}, i.ws));
              const m: StoredEvent[] = [];
              for (const input of inputs) m.push(await memory.append(input));
              const s = await Promise.all(inputs.map((input) => sqlite.append(input)));
              expect(s).toEqual(m);
              for (const e of s) {
                const key = `${e.workspaceId}:${e.sandboxId}`;
                const prev = last.get(key);
                if (prev !== undefined) expect(compareEventIds(e.id, prev)).toBeGreaterThan(0);
                last.set(key, e.id);
                issued.push(e.id);
              }
            } else if (op.op === 'clock') {
              clock.advance(op.delta);
            } else if (op.op === 'restart') {
              await sqlite.close();
              sqlite = openSqlite();
            } else {
              await Promise.all([memory.prune(), sqlite.prune()]);
              if (op.op === 'history') {
                const query = {
                  workspaceId: op.ws,
                  sandboxId: op.sb,
                  limit: op.limit,
                  newest: op.newest,
                  ...(op.type === undefined ? {} : { type: op.type }),
                  ...(op.after === undefined ? {} : { afterId: pick(op.after) }),
                  ...(op.since === undefined ? {} : { since: T0 + op.since }),
                };
                expect(await sqlite.history(query)).toEqual(await memory.history(query));
              } else {
                const base = pick(op.after);
                const afterId = { ms: base.ms, seq: Math.max(0, base.seq + op.bump) };
                const ref = { workspaceId: op.ws, sandboxId: op.sb };
                expect(await sqlite.replayAfter(ref, afterId, op.limit)).toEqual(
                  await memory.replayAfter(ref, afterId, op.limit),
                );
              }
            }
          }
        } finally {
          await memory.close();
          await sqlite.close();
        }
      }),
      { numRuns: 60 },
    );
  }, 240_000);
});
