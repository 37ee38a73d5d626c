/**
 * Property test: random appends (with the clock jumping back and forth), retention runs,
 * history queries and replays give the same answers from the memory and the SQLite store.
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
  | { op: 'append'; ws: number; sb: string; type: string }
  | { op: 'clock'; delta: number }
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
  | { op: 'replay'; ws: number; sb: string; after: number; bump: number; msBump: number; limit: number };

const ws = fc.constantFrom(1, 2);
const sb = fc.constantFrom('a', 'a', 'b');
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('append' as const), ws, sb, type: fc.constantFrom('x', 'y') }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('clock' as const), delta: fc.integer({ min: -100, max: 150 }) }),
  },
  {
    weight: 2,
    arbitrary: fc.record(
      {
        op: fc.constant('history' as const),
        ws,
        sb,
        type: fc.constantFrom('x', 'y'),
        after: fc.nat(60),
        since: fc.integer({ min: -50, max: 1_500 }),
        limit: fc.integer({ min: 1, max: 6 }),
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
      after: fc.nat(60),
      bump: fc.constantFrom(-1, 0, 0, 0, 1),
      msBump: fc.constantFrom(0, 0, 0, 1),
      limit: fc.integer({ min: 1, max: 8 }),
    }),
  },
);

describe('memory and SQLite stores agree', () => {
  let dir: string;
  let run = 0;
  beforeAll(async () => {
    dir = await tempDir();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('on random operation sequences', async () => {
    const outcomes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 30, maxLength: 80 }), async (ops) => {
        const clock = new Clock();
        const retention: RetentionPolicy = { maxCount: 3, maxAgeMs: 400 };
        const memory = new MemoryStore({ retention, now: clock.now, pruneIntervalMs: 0 });
        const sqlite = SqliteStore.open({
          path: join(dir, `model-${run++}.db`),
          retention,
          now: clock.now,
          pruneIntervalMs: 0,
          pruneBatchSize: 2,
          checkpoint: 'inline', // no worker thread per run: checkpoints do not change answers
        });
        const issued: EventId[] = [{ ms: 0, seq: 0 }];
        const truth = new Map<string, StoredEvent[]>(); // every event ever appended, per stream
        const pick = (i: number): EventId => issued[i % issued.length] as EventId;
        try {
          for (const op of ops) {
            if (op.op === 'append') {
              const input = newEvent(op.sb, op.type, {}, op.ws);
              const [a, b] = await Promise.all([memory.append(input), sqlite.append(input)]);
              expect(b).toEqual(a);
              issued.push(a.id);
              truth.set(`${op.ws}:${op.sb}`, [...(truth.get(`${op.ws}:${op.sb}`) ?? []), a]);
            } else if (op.op === 'clock') {
              clock.advance(op.delta);
            } else {
              // Retention runs in the background in SQLite: compare once both have run it.
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
                const afterId =
                  op.msBump > 0
                    ? { ms: base.ms + op.msBump, seq: 0 }
                    : { ms: base.ms, seq: Math.max(0, base.seq + op.bump) };
                const ref = { workspaceId: op.ws, sandboxId: op.sb };
                const expected = await memory.replayAfter(ref, afterId, op.limit);
                expect(await sqlite.replayAfter(ref, afterId, op.limit)).toEqual(expected);
                outcomes.set(expected.gap ?? 'complete', (outcomes.get(expected.gap ?? 'complete') ?? 0) + 1);
                // "Complete" must mean exactly what the client missed. (Not checked from 0-0:
                // a stream forgotten and started again cannot know what its first life had.)
                if (expected.complete && (afterId.ms > 0 || afterId.seq > 0)) {
                  const missed = (truth.get(`${op.ws}:${op.sb}`) ?? []).filter(
                    (e) => compareEventIds(e.id, afterId) > 0,
                  );
                  expect(expected.events).toEqual(missed.slice(0, op.limit));
                }
              }
            }
          }
        } finally {
          await memory.close();
          await sqlite.close();
        }
      }),
      { numRuns: 100 },
    );
    // The sequences reach every replay outcome.
    expect([...outcomes.keys()].sort()).toEqual(['complete', 'future', 'trimmed', 'unknown']);
  }, 120_000);
});
