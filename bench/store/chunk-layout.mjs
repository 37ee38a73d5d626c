// @ts-check
// The SQLite store's events layout against a chunked one, SQLite and better-sqlite3 alone (no
// writer, no sockets), not run by tests: docs/performance.md, "Tenth round: a chunked events
// layout (measured, not built)".
//
// Layouts:
// - rows: the store's own (schema.ts: configureConnection, migrate, prepareStatements from the
//   build), one `events` row per event, 16 rows per INSERT OR ROLLBACK as the writer does, pruned
//   as retention's pruneStep does, read with the store's history and order statements.
// - chunks: one `chunks` row per (stream, commit): that commit's event lines of the stream back to
//   back in one blob behind a table of 24 bytes per event (CHUNK_ENTRY_BYTES), in a rowid table
//   keyed by the chunk's first store order (so new chunks go to the table's right edge), with an
//   index by (workspace, sandbox, last id) for history and retention and one by
//   (workspace, first order) for pattern resume. Retention deletes whole chunks and raises the
//   trimmed-through mark inside a chunk it cannot delete whole; reads skip what is below it.
// - chunks-data: the same, the blob holding each event's `data` text as `events` rows do (reads
//   rebuild the line as toStoredEvents does).
// - log: every event to an arrival-order table (rowid = store order, no other index), moved into
//   chunks (whole lines) every LOG_COMPACT_EVENTS by one compaction transaction. Only for shapes
//   without retention; no reads.
// - none: no event written (the sandboxes rows only): what the script's own JavaScript per event
//   costs (ids, the event line, the stream's state), the same in every layout. No retention, no reads.
//
// Shapes (commits of `perCommit` appends to `sandboxes` sandboxes in turn, as bench/store/append-cpu.mjs):
// - case2: 100 per commit to 1 sandbox, held at 10,000 events by a retention run every 10,000.
// - case1: 800 per commit over 100 sandboxes, the same retention (every sandbox filled first),
//   a run every 1,000 events per sandbox (PRUNE_EVERY).
// - case3: 1,000 per commit over 5,000 sandboxes, no pruning; case3aged: the same on a file that
//   already holds 200 events per sandbox (a young file's pages are shared by several sandboxes).
// - light: 1 per commit over 100 sandboxes, no pruning.
// - per2, per4, per8: 1,000 per commit over 500, 250 or 125 sandboxes (chunks of 2, 4 or 8 events),
//   no pruning, after 200,000 events.
// The file's `sandboxes` rows are inserted by a stream's first commit in every layout and written
// again by the retention run only (the store's row sync, about once a second, is the same for
// every layout and left out). A PASSIVE checkpoint after every 1,000 committed events (the fifth
// argument), and before and after each retention run, on the same connection, with SQLite's own
// checkpoints off as with the store's checkpoint worker: its CPU and the WAL frames it finds are
// counted apart for appends and retention. Every read is checked once against what was appended.
// CPU is process.cpuUsage() (one thread here), per event (per deleted event for retention, per
// compacted event for compaction); reads: CPU per read, on the file the run left.
//
//   npm run build && node bench/store/chunk-layout.mjs [buildDir=dist] [shape=case2]
//     [layout=rows|chunks|chunks-data|log|none] [events=shape's] [events between checkpoints=1000]
// Compare layouts by alternating runs: for l in rows chunks rows chunks rows chunks; do ...; done
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { buildModules } from '../lib/build.js';

const [buildArg = 'dist', shapeArg = 'case2', layoutArg = 'rows', eventsArg, checkpointArg = '1000'] =
  process.argv.slice(2);

/**
 * `fill`: events appended before the measured ones (the JIT's warm-up, and a file of that age);
 * with `prune`, every sandbox is filled to the retention limit and one more run's worth.
 * @type {Record<string, { perCommit: number, sandboxes: number, prune: boolean, events: number, fill: number }>}
 */
const SHAPES = {
  case2: { perCommit: 100, sandboxes: 1, prune: true, events: 200_000, fill: 20_000 },
  case1: { perCommit: 800, sandboxes: 100, prune: true, events: 400_000, fill: 20_000 },
  case3: { perCommit: 1_000, sandboxes: 5_000, prune: false, events: 100_000, fill: 20_000 },
  case3aged: { perCommit: 1_000, sandboxes: 5_000, prune: false, events: 100_000, fill: 1_000_000 },
  light: { perCommit: 1, sandboxes: 100, prune: false, events: 20_000, fill: 20_000 },
  per2: { perCommit: 1_000, sandboxes: 500, prune: false, events: 100_000, fill: 200_000 },
  per4: { perCommit: 1_000, sandboxes: 250, prune: false, events: 100_000, fill: 200_000 },
  per8: { perCommit: 1_000, sandboxes: 125, prune: false, events: 100_000, fill: 200_000 },
};
const shape = SHAPES[shapeArg];
const LAYOUTS = ['rows', 'chunks', 'chunks-data', 'log', 'none'];
if (shape === undefined || !LAYOUTS.includes(layoutArg)) {
  throw new Error(`usage: chunk-layout.mjs [build] [${Object.keys(SHAPES).join('|')}] [${LAYOUTS.join('|')}] [events]`);
}
if (layoutArg === 'log' && shape.prune) throw new Error('the log layout is measured only for shapes without pruning');
const EVENTS = Number(eventsArg ?? shape.events);
const LAYOUT = layoutArg;
const CHUNKED = LAYOUT !== 'rows';
/** Chunk blobs hold whole event lines (chunks, and what the log compacts into) or `data` only. */
const LINES = LAYOUT !== 'chunks-data';

const RETAINED = 10_000;
/**
 * Appends between retention runs: 10,000 (as append-cpu.mjs), and at least 1,000 per sandbox
 * (the store runs retention every 5 s; case 1 brings ~1,000-2,500 events per sandbox meanwhile).
 */
const PRUNE_EVERY = Math.max(10_000, 1_000 * shape.sandboxes);
/** Rows one retention transaction deletes at most (the store's pruneBatchSize default). */
const PRUNE_BATCH = 1_000;
/**
 * Events between checkpoints: the worker is asked for a run 100 ms after 1,000 events, so 1,000
 * is the cadence up to 10,000 events/s; case 2's SQLite broker takes ~100,000 a second, about
 * one run per 10,000 (the fifth argument).
 */
const CHECKPOINT_AFTER_EVENTS = Number(checkpointArg);
/** The log layout compacts when it holds this many events (case 3: 20 per sandbox). */
const LOG_COMPACT_EVENTS = 100_000;
/** Most events of one commit (the writer's maxBatch default): a chunk spans at most that many orders. */
const MAX_BATCH = 1_000;
const WORKSPACE = 1;
/** The type a pruning without rules marks (semantics.ts EVERY_TYPE). */
const EVERY_TYPE = '';
const READ_REPEATS = 200;

const modules = buildModules(buildArg);
const { configureConnection, migrate } = await modules.sqliteSchema();
const { prepareStatements, INSERT_GROUP, EVENT_INSERT_VALUES } = await modules.sqliteStatements();
const { toStoredEvents, toOrderedEvents } = await modules.sqliteEventRows();
const { eventLine, eventLineMiddle, nextEventId, StoredEventRecord, setEventOrder } = await modules.event();

const dir = await mkdtemp(join(tmpdir(), 'chunk-layout-'));
const db = new Database(join(dir, 'events.db'));
configureConnection(db, 'NORMAL');
// As with the store's checkpoint worker (checkpointer.ts): no checkpoint inside commits.
db.pragma('wal_autocheckpoint = 0');
migrate(db);
const sql = prepareStatements(db);

db.exec(`
CREATE TABLE chunks (
  id           INTEGER PRIMARY KEY, -- the chunk's first store order
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  first_ms     INTEGER NOT NULL,
  first_seq    INTEGER NOT NULL,
  last_ms      INTEGER NOT NULL,
  last_seq     INTEGER NOT NULL,
  last_ord     INTEGER NOT NULL,
  count        INTEGER NOT NULL,
  bytes        INTEGER NOT NULL, -- its event lines' bytes, for byte retention
  types        TEXT    NOT NULL, -- its types, each between two \\x01
  body         BLOB    NOT NULL
);
CREATE INDEX chunks_by_stream ON chunks (workspace_id, sandbox_id, last_ms, last_seq);
CREATE INDEX chunks_by_order ON chunks (workspace_id, id);
CREATE TABLE log (
  ord          INTEGER PRIMARY KEY,
  workspace_id INTEGER NOT NULL,
  sandbox_id   TEXT    NOT NULL,
  ms           INTEGER NOT NULL,
  seq          INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  timestamp    INTEGER NOT NULL,
  data         TEXT    NOT NULL
);
`);

/*
 * A chunk's blob: u32 count, then per event CHUNK_ENTRY_BYTES: u32 ms - first_ms, u32 seq,
 * u32 order - first order, i32 timestamp - first_ms, u16 index into the chunk's types, u16 0,
 * u32 end of its text (from the start of the texts); then the texts back to back.
 */
const CHUNK_ENTRY_BYTES = 24;
const CHUNK_HEAD_BYTES = 4;
const SEP = '\u0001';

const chunkSql = {
  insert: db.prepare(
    `INSERT OR ROLLBACK INTO chunks (id, workspace_id, sandbox_id, first_ms, first_seq, last_ms, last_seq, last_ord,
     count, bytes, types, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ),
  insertGroup: db.prepare(
    `INSERT OR ROLLBACK INTO chunks (id, workspace_id, sandbox_id, first_ms, first_seq, last_ms, last_seq, last_ord,
     count, bytes, types, body) VALUES ${new Array(INSERT_GROUP).fill('(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
  ),
  oldest: db
    .prepare(
      `SELECT id, first_ms, first_seq, last_ms, last_seq, last_ord, count, bytes FROM chunks
       WHERE workspace_id = ? AND sandbox_id = ? ORDER BY last_ms, last_seq LIMIT ?`,
    )
    .raw(),
  body: db.prepare('SELECT body, types FROM chunks WHERE id = ?'),
  deleteThrough: db.prepare(
    'DELETE FROM chunks WHERE workspace_id = ? AND sandbox_id = ? AND (last_ms, last_seq) <= (?, ?)',
  ),
  newestFirst: db
    .prepare(
      `SELECT id, first_ms, types, body FROM chunks WHERE workspace_id = ? AND sandbox_id = ?
       ORDER BY last_ms DESC, last_seq DESC`,
    )
    .raw(),
  newestFirstOfType: db
    .prepare(
      `SELECT id, first_ms, types, body FROM chunks WHERE workspace_id = ? AND sandbox_id = ? AND instr(types, ?) > 0
       ORDER BY last_ms DESC, last_seq DESC`,
    )
    .raw(),
  fromId: db
    .prepare(
      `SELECT id, first_ms, types, body FROM chunks WHERE workspace_id = ? AND sandbox_id = ? AND (last_ms, last_seq) >= (?, ?)
       ORDER BY last_ms, last_seq`,
    )
    .raw(),
  byOrder: db
    .prepare(
      `SELECT id, first_ms, types, body, sandbox_id FROM chunks WHERE workspace_id = ? AND id > ? AND last_ord > ?
       ORDER BY id`,
    )
    .raw(),
};
const logSql = {
  insert: db.prepare(
    'INSERT OR ROLLBACK INTO log (ord, workspace_id, sandbox_id, ms, seq, type, timestamp, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  ),
  insertGroup: db.prepare(
    `INSERT OR ROLLBACK INTO log (ord, workspace_id, sandbox_id, ms, seq, type, timestamp, data) VALUES ${new Array(
      INSERT_GROUP,
    )
      .fill('(?, ?, ?, ?, ?, ?, ?, ?)')
      .join(', ')}`,
  ),
  through: db
    .prepare('SELECT ord, sandbox_id, ms, seq, type, timestamp, data FROM log WHERE ord <= ? ORDER BY ord')
    .raw(),
  deleteThrough: db.prepare('DELETE FROM log WHERE ord <= ?'),
};

/**
 * @typedef {{ ms: number, seq: number }} Id
 * @typedef {{ id: Id, timestamp: number, order: number, type: string, text: string, lineBytes: number }} Pending
 * @typedef {[order: number, sandboxId: string, ms: number, seq: number, type: string, timestamp: number, data: string]} LogRow
 * @typedef {[id: number, firstMs: number, firstSeq: number, lastMs: number, lastSeq: number, lastOrder: number,
 *   count: number, bytes: number]} ChunkHead
 * @typedef {{ sandboxId: string, middle: string, lastId: Id | undefined, firstId: Id | undefined,
 *   retained: number, bytes: number, trimmed: Id | undefined, trimmedInOldest: number, trimmedBytes: number,
 *   existed: boolean, commit: number, pending: Pending[] }} Stream
 */

/** @type {Map<string, Stream>} */
const streams = new Map();
/** @type {Id | undefined} */
let highWater;
let order = 0;
/** Store orders of sb-0's events, oldest first (the reads pick their cursors from them). */
/** @type {{ id: Id, order: number }[]} */
const firstStreamEvents = [];

/** @type {Map<string, string>} */
const quotedTypes = new Map();
const quoted = (/** @type {string} */ type) => {
  let q = quotedTypes.get(type);
  if (q === undefined) quotedTypes.set(type, (q = JSON.stringify(type)));
  return q;
};

let counter = 0;
/** Case-2-like events: mostly output, a status in ten, a file change in a hundred. */
function input(/** @type {number} */ sandbox) {
  const n = counter++;
  const type = n % 100 === 0 ? 'file.changed' : n % 10 === 5 ? 'process.status' : 'terminal.output';
  return {
    sandboxId: `sb-${sandbox}`,
    type,
    data: JSON.stringify({ n, output: `line ${n} of output text `.repeat(4) }),
  };
}

const rowValues = new Array(INSERT_GROUP * EVENT_INSERT_VALUES).fill(0);
const logValues = new Array(INSERT_GROUP * 8).fill(0);
/**
 * Where the blobs of the chunks waiting for their INSERT are built, one after the other (SQLite
 * copies the bound bytes when the statement runs); `scratchAt` is where the next one goes.
 */
let scratch = Buffer.alloc(1 << 22);
let scratchAt = 0;
/** Values chunks bind, and those of the chunks waiting to go INSERT_GROUP to a statement. */
const CHUNK_VALUES = 12;
/** @type {unknown[]} */
const chunkValues = [];
/** Events in the log layout's table. */
let logged = 0;

/**
 * One chunk's blob from its events (texts: lines or data), into `scratch`.
 * @param {Pending[]} events
 * @returns {{ body: Buffer, types: string, textBytes: number }}
 */
function chunkBody(events) {
  const first = events[0];
  if (first === undefined) throw new Error('empty chunk');
  /** @type {string[]} */
  const types = [];
  let textBytes = 0;
  for (const e of events) textBytes += e.text.length * 3; // at most, in UTF-8
  const most = CHUNK_HEAD_BYTES + events.length * CHUNK_ENTRY_BYTES + textBytes;
  if (scratchAt + most > scratch.length) {
    insertWaitingChunks();
    if (most > scratch.length) scratch = Buffer.alloc(2 * most);
  }
  const base = scratchAt;
  const textStart = base + CHUNK_HEAD_BYTES + events.length * CHUNK_ENTRY_BYTES;
  scratch.writeUInt32LE(events.length, base);
  let at = textStart;
  for (let i = 0; i < events.length; i++) {
    const e = /** @type {Pending} */ (events[i]);
    let t = types.indexOf(e.type);
    if (t < 0) t = types.push(e.type) - 1;
    at += scratch.write(e.text, at);
    const entry = base + CHUNK_HEAD_BYTES + i * CHUNK_ENTRY_BYTES;
    scratch.writeUInt32LE(e.id.ms - first.id.ms, entry);
    scratch.writeUInt32LE(e.id.seq, entry + 4);
    scratch.writeUInt32LE(e.order - first.order, entry + 8);
    scratch.writeInt32LE(e.timestamp - first.id.ms, entry + 12);
    scratch.writeUInt16LE(t, entry + 16);
    scratch.writeUInt16LE(0, entry + 18);
    scratch.writeUInt32LE(at - textStart, entry + 20);
  }
  scratchAt = at;
  return { body: scratch.subarray(base, at), types: `${SEP}${types.join(SEP)}${SEP}`, textBytes: at - textStart };
}

/** Inserts the chunks waiting for a full group, one statement each (the end of a commit). */
function insertWaitingChunks() {
  for (let at = 0; at < chunkValues.length; at += CHUNK_VALUES)
    chunkSql.insert.run(.../** @type {[]} */ (/** @type {unknown} */ (chunkValues.slice(at, at + CHUNK_VALUES))));
  chunkValues.length = 0;
  scratchAt = 0;
}

/**
 * Inserts a stream's pending events as one chunk.
 * @param {Stream} stream
 * @param {Pending[]} events
 */
function insertChunk(stream, events, /** @type {boolean} */ lines) {
  const first = /** @type {Pending} */ (events[0]);
  const last = /** @type {Pending} */ (events[events.length - 1]);
  const { body, types, textBytes } = chunkBody(events);
  let bytes = textBytes; // the lines' bytes, as byte retention counts them (chunks)
  if (!lines) {
    bytes = 0;
    for (const e of events) bytes += e.lineBytes;
  }
  chunkValues.push(
    first.order,
    WORKSPACE,
    stream.sandboxId,
    first.id.ms,
    first.id.seq,
    last.id.ms,
    last.id.seq,
    last.order,
    events.length,
    bytes,
    types,
    body,
  );
  // As the writer groups rows: INSERT_GROUP chunks to a statement (case 3's are one event each).
  if (chunkValues.length === INSERT_GROUP * CHUNK_VALUES) {
    chunkSql.insertGroup.run(chunkValues);
    chunkValues.length = 0;
    scratchAt = 0;
  }
}

/** @param {Stream} stream @param {Pending} e */
const lineOf = (stream, e) => eventLine(e.id, stream.middle, quoted(e.type), e.text, e.timestamp);

/** One commit's appends, in one transaction, as the writer's writeBatch. */
let commits = 0;
const commit = db.transaction((/** @type {{ sandboxId: string, type: string, data: string }[]} */ inputs) => {
  commits++;
  /** @type {Stream[]} */
  const touched = [];
  let rows = 0;
  for (const each of inputs) {
    let stream = streams.get(each.sandboxId);
    if (stream === undefined) {
      stream = {
        sandboxId: each.sandboxId,
        middle: eventLineMiddle(WORKSPACE, each.sandboxId),
        lastId: undefined,
        firstId: undefined,
        retained: 0,
        bytes: 0,
        trimmed: undefined,
        trimmedInOldest: 0,
        trimmedBytes: 0,
        existed: false,
        commit: 0,
        pending: [],
      };
      streams.set(each.sandboxId, stream);
    }
    if (stream.commit !== commits) {
      stream.commit = commits;
      touched.push(stream);
    }
    const now = Date.now();
    const id = nextEventId(stream.lastId ?? highWater, now);
    // The writer builds every event's line (the fan-out frames it) whatever the layout.
    const line = eventLine(id, stream.middle, quoted(each.type), each.data, now);
    order += 1;
    stream.lastId = id;
    stream.firstId ??= id;
    stream.retained++;
    const lineBytes = Buffer.byteLength(line);
    stream.bytes += lineBytes;
    if (highWater === undefined || id.ms > highWater.ms || (id.ms === highWater.ms && id.seq > highWater.seq))
      highWater = id;
    if (each.sandboxId === 'sb-0') firstStreamEvents.push({ id, order });
    if (LAYOUT === 'rows' || LAYOUT === 'log') {
      const values = LAYOUT === 'rows' ? rowValues : logValues;
      const at = rows * (LAYOUT === 'rows' ? EVENT_INSERT_VALUES : 8);
      if (LAYOUT === 'rows') {
        values[at] = WORKSPACE;
        values[at + 1] = each.sandboxId;
        values[at + 2] = id.ms;
        values[at + 3] = id.seq;
        values[at + 4] = each.type;
        values[at + 5] = now;
        values[at + 6] = each.data;
        values[at + 7] = order;
      } else {
        values[at] = order;
        values[at + 1] = WORKSPACE;
        values[at + 2] = each.sandboxId;
        values[at + 3] = id.ms;
        values[at + 4] = id.seq;
        values[at + 5] = each.type;
        values[at + 6] = now;
        values[at + 7] = each.data;
      }
      if (++rows === INSERT_GROUP) {
        (LAYOUT === 'rows' ? sql.insertEvents : logSql.insertGroup).run(values);
        rows = 0;
      }
    } else if (LAYOUT !== 'none') {
      stream.pending.push({ id, timestamp: now, order, type: each.type, text: LINES ? line : each.data, lineBytes });
    }
  }
  if (LAYOUT === 'rows' || LAYOUT === 'log') {
    const width = LAYOUT === 'rows' ? EVENT_INSERT_VALUES : 8;
    const one = /** @type {{ run(...values: unknown[]): unknown }} */ (
      LAYOUT === 'rows' ? sql.insertEvent : logSql.insert
    );
    for (let row = 0; row < rows; row++)
      one.run(...(LAYOUT === 'rows' ? rowValues : logValues).slice(row * width, (row + 1) * width));
    if (LAYOUT === 'log') logged += inputs.length;
  }
  for (const stream of touched) {
    if (LAYOUT === 'chunks' || LAYOUT === 'chunks-data') insertChunk(stream, stream.pending, LINES);
    stream.pending = [];
    if (!stream.existed) {
      const last = /** @type {Id} */ (stream.lastId);
      const first = /** @type {Id} */ (stream.firstId);
      sql.insertSandbox.run(
        WORKSPACE,
        stream.sandboxId,
        last.ms,
        last.seq,
        stream.retained,
        first.ms,
        first.seq,
        0,
        stream.bytes,
      );
      stream.existed = true;
    }
  }
  insertWaitingChunks();
});

/** The log layout's compaction: every logged event into chunks, one per stream, in one transaction. */
const compact = db.transaction(() => {
  /** @type {Map<string, Pending[]>} */
  const byStream = new Map();
  for (const [ord, sandboxId, ms, seq, type, timestamp, data] of /** @type {LogRow[]} */ (logSql.through.all(order))) {
    const stream = /** @type {Stream} */ (streams.get(sandboxId));
    let events = byStream.get(sandboxId);
    if (events === undefined) byStream.set(sandboxId, (events = []));
    const id = { ms, seq };
    const text = eventLine(id, stream.middle, quoted(type), data, timestamp);
    events.push({ id, timestamp, order: ord, type, text, lineBytes: 0 }); // counted as the blob is built
  }
  for (const [sandboxId, events] of byStream) insertChunk(/** @type {Stream} */ (streams.get(sandboxId)), events, true);
  insertWaitingChunks();
  logSql.deleteThrough.run(order);
  logged = 0;
});

function cpuMicros() {
  const { user, system } = process.cpuUsage();
  return user + system;
}

const figures = {
  appendCpu: 0,
  appended: 0,
  checkpointCpu: 0,
  appendFrames: 0,
  pruneCpu: 0,
  pruned: 0,
  pruneFrames: 0,
  compactCpu: 0,
  compacted: 0,
  compactMaxMs: 0,
};
let sinceCheckpoint = 0;
/** A write since the last checkpoint: else the WAL still holds the frames that one counted. */
let wrote = false;

/** A PASSIVE checkpoint: its CPU, and the frames the WAL held (all written since the last one). */
function checkpoint() {
  const c0 = cpuMicros();
  const [result] = /** @type {{ busy: number, log: number, checkpointed: number }[]} */ (
    db.pragma('wal_checkpoint(PASSIVE)')
  );
  figures.checkpointCpu += cpuMicros() - c0;
  sinceCheckpoint = 0;
  const frames = wrote ? (result?.log ?? 0) : 0;
  wrote = false;
  return frames;
}

/** The pruned marks of a step that removed events of `stream` up to `through` (store order `order`), as pruneStep writes them without rules. */
function notePruned(/** @type {Stream} */ stream, /** @type {number} */ order, /** @type {Id} */ through) {
  sql.notePruned.run(WORKSPACE, order);
  sql.notePrunedOrderType.run(WORKSPACE, EVERY_TYPE, order);
  sql.notePrunedType.run(WORKSPACE, stream.sandboxId, EVERY_TYPE, through.ms, through.seq);
}

/**
 * The stream's row after a prune step deleted `deleted` events of `freed` bytes through `through`
 * (`first`: the oldest id left); true while it still holds more than RETAINED.
 */
function recordPruned(
  /** @type {Stream} */ stream,
  /** @type {import('../../src/store/sqlite/statements.js').SandboxRow} */ row,
  /** @type {number} */ deleted,
  /** @type {number} */ freed,
  /** @type {Id | undefined} */ first,
  /** @type {Id} */ through,
) {
  const retained = row.retained - deleted;
  sql.updatePruned.run(
    retained,
    row.bytes - freed,
    first?.ms ?? null,
    first?.seq ?? null,
    through.ms,
    through.seq,
    WORKSPACE,
    stream.sandboxId,
  );
  figures.pruned += deleted;
  stream.retained = retained;
  stream.bytes = row.bytes - freed;
  return retained > RETAINED;
}

/** Retention on a stream held at RETAINED, as the store's pruneStep without rules, in steps. */
function pruneRows(/** @type {Stream} */ stream) {
  const ws = WORKSPACE;
  const sb = stream.sandboxId;
  const step = db.transaction(() => {
    const row = /** @type {import('../../src/store/sqlite/statements.js').SandboxRow} */ (sql.getSandbox.get(ws, sb));
    const excess = row.retained - RETAINED;
    if (excess <= 0) return false;
    const through = /** @type {Id} */ (sql.nthOldestId.get(ws, sb, Math.min(excess, PRUNE_BATCH) - 1));
    const doomed = /** @type {{ bytes: number, ord: number }} */ (
      sql.bytesAndOrderThrough.get(ws, sb, through.ms, through.seq)
    );
    notePruned(stream, doomed.ord, through);
    const deleted = sql.deleteThrough.run(ws, sb, through.ms, through.seq).changes;
    const first = /** @type {Id | undefined} */ (sql.oldestId.get(ws, sb));
    return recordPruned(stream, row, deleted, doomed.bytes, first, through);
  });
  while (step.immediate()) {}
}

/**
 * The events of a chunk blob, as [index, id, timestamp, order, type index, text start, text end].
 * @param {Buffer} body
 * @param {number} firstMs
 * @param {number} firstOrder
 */
function entryOf(body, i, firstMs, firstOrder) {
  const count = body.readUInt32LE(0);
  const entry = CHUNK_HEAD_BYTES + i * CHUNK_ENTRY_BYTES;
  const textStart = CHUNK_HEAD_BYTES + count * CHUNK_ENTRY_BYTES;
  return {
    id: { ms: firstMs + body.readUInt32LE(entry), seq: body.readUInt32LE(entry + 4) },
    order: firstOrder + body.readUInt32LE(entry + 8),
    timestamp: firstMs + body.readInt32LE(entry + 12),
    type: body.readUInt16LE(entry + 16),
    start: textStart + (i === 0 ? 0 : body.readUInt32LE(entry - CHUNK_ENTRY_BYTES + 20)),
    end: textStart + body.readUInt32LE(entry + 20),
  };
}

/** Retention on chunks: whole chunks go; a chunk it cannot delete whole gets the trimmed mark. */
function pruneChunks(/** @type {Stream} */ stream) {
  const ws = WORKSPACE;
  const sb = stream.sandboxId;
  const step = db.transaction(() => {
    const row = /** @type {import('../../src/store/sqlite/statements.js').SandboxRow} */ (sql.getSandbox.get(ws, sb));
    const excess = row.retained - RETAINED;
    if (excess <= 0) return false;
    let budget = Math.min(excess, PRUNE_BATCH);
    let deleted = 0;
    let freed = 0;
    /** @type {Id | undefined} */
    let wholeThrough;
    let maxOrder = 0;
    /** @type {Id | undefined} */
    let through;
    /** @type {Id | undefined} */
    let first;
    for (const [id, firstMs, firstSeq, lastMs, lastSeq, lastOrd, count, bytes] of /** @type {ChunkHead[]} */ (
      chunkSql.oldest.all(ws, sb, 64)
    )) {
      const visible = count - stream.trimmedInOldest;
      if (budget === 0) {
        if (first === undefined) first = stream.trimmedInOldest === 0 ? { ms: firstMs, seq: firstSeq } : undefined;
        break;
      }
      if (visible <= budget) {
        // The whole chunk goes (with what was trimmed of it before: its bytes were freed then).
        budget -= visible;
        deleted += visible;
        freed += bytes - stream.trimmedBytes;
        wholeThrough = { ms: lastMs, seq: lastSeq };
        through = wholeThrough;
        maxOrder = lastOrd;
        stream.trimmedInOldest = 0;
        stream.trimmedBytes = 0;
        continue;
      }
      // Part of it: the mark moves into it; reads skip what is at or below the mark.
      const { body, types } = /** @type {{ body: Buffer, types: string }} */ (chunkSql.body.get(id));
      const typeNames = types.slice(1, -1).split(SEP);
      const upTo = stream.trimmedInOldest + budget;
      for (let i = stream.trimmedInOldest; i < upTo; i++) {
        const e = entryOf(body, i, firstMs, id);
        const text = body.toString('latin1', e.start, e.end);
        const lineBytes = LINES
          ? e.end - e.start
          : lineOf(stream, {
              id: e.id,
              timestamp: e.timestamp,
              order: e.order,
              type: typeNames[e.type] ?? '',
              text,
              lineBytes: 0,
            }).length;
        freed += lineBytes;
        stream.trimmedBytes += lineBytes;
        through = e.id;
        maxOrder = e.order;
      }
      first = entryOf(body, upTo, firstMs, id).id;
      deleted += budget;
      stream.trimmedInOldest = upTo;
      budget = 0;
      break;
    }
    if (through === undefined) return false;
    notePruned(stream, maxOrder, through);
    if (wholeThrough !== undefined) chunkSql.deleteThrough.run(ws, sb, wholeThrough.ms, wholeThrough.seq);
    if (first === undefined) {
      const [next] = /** @type {ChunkHead[]} */ (chunkSql.oldest.all(ws, sb, 1));
      first = next === undefined ? undefined : { ms: next[1], seq: next[2] };
    }
    stream.trimmed = through;
    return recordPruned(stream, row, deleted, freed, first, through);
  });
  while (step.immediate()) {}
}

/** A retention run over every stream above the limit, its rows brought in step first (the row sync). */
function prune() {
  if (LAYOUT === 'none') return;
  figures.appendFrames += checkpoint();
  const c0 = cpuMicros();
  for (const stream of streams.values()) {
    if (stream.retained <= RETAINED) continue;
    const last = /** @type {Id} */ (stream.lastId);
    sql.updateSandbox.run(last.ms, last.seq, stream.retained, 0, stream.bytes, WORKSPACE, stream.sandboxId);
    (CHUNKED ? pruneChunks : pruneRows)(stream);
  }
  figures.pruneCpu += cpuMicros() - c0;
  wrote = true;
  const c1 = cpuMicros();
  figures.pruneFrames += checkpoint();
  figures.pruneCpu += cpuMicros() - c1;
  figures.checkpointCpu -= cpuMicros() - c1; // counted with retention
}

/** Appends `total` events in commits of perCommit, checkpointing and pruning as the store does. */
function appendRounds(/** @type {number} */ total, /** @type {boolean} */ measured) {
  let sandbox = 0;
  for (let done = 0; done < total; ) {
    const round = Math.min(shape.perCommit, total - done);
    const inputs = [];
    for (let i = 0; i < round; i++) {
      inputs.push(input(sandbox));
      sandbox = (sandbox + 1) % shape.sandboxes;
    }
    const c0 = cpuMicros();
    commit.immediate(inputs);
    wrote = LAYOUT !== 'none';
    if (measured) {
      figures.appendCpu += cpuMicros() - c0;
      figures.appended += round;
    }
    done += round;
    sinceCheckpoint += round;
    if (sinceCheckpoint >= CHECKPOINT_AFTER_EVENTS) {
      const frames = checkpoint();
      if (measured) figures.appendFrames += frames;
    }
    if (LAYOUT === 'log' && logged >= LOG_COMPACT_EVENTS) {
      figures.appendFrames += checkpoint();
      const c1 = cpuMicros();
      const t1 = performance.now();
      const events = logged;
      compact.immediate();
      wrote = true;
      figures.compactMaxMs = Math.max(figures.compactMaxMs, performance.now() - t1);
      figures.compactCpu += cpuMicros() - c1;
      figures.compacted += events;
      const c2 = cpuMicros();
      figures.appendFrames += checkpoint(); // the compaction's frames count with the appends
      figures.compactCpu += cpuMicros() - c2;
      figures.checkpointCpu -= cpuMicros() - c2;
    }
    if (shape.prune && Math.floor(done / PRUNE_EVERY) !== Math.floor((done - round) / PRUNE_EVERY)) prune();
  }
}

/**
 * A history read of sb-0 on chunks: newest first (`desc`) or from an id up, of one type or all,
 * `limit` events, as StoredEventRecords.
 * @param {{ desc: boolean, type?: string, from?: Id, limit: number }} query
 */
function chunkHistory(query) {
  const stream = /** @type {Stream} */ (streams.get('sb-0'));
  const typeTag = query.type === undefined ? undefined : `${SEP}${query.type}${SEP}`;
  const rows = query.desc
    ? typeTag === undefined
      ? chunkSql.newestFirst.iterate(WORKSPACE, 'sb-0')
      : chunkSql.newestFirstOfType.iterate(WORKSPACE, 'sb-0', typeTag)
    : chunkSql.fromId.iterate(WORKSPACE, 'sb-0', query.from?.ms ?? 0, query.from?.seq ?? 0);
  /** @type {InstanceType<typeof StoredEventRecord>[]} */
  const events = [];
  const trimmed = stream.trimmed;
  const compare = (/** @type {Id} */ a, /** @type {Id} */ b) => a.ms - b.ms || a.seq - b.seq;
  let below = false;
  for (const [firstOrder, firstMs, types, body] of /** @type {Iterable<[number, number, string, Buffer]>} */ (rows)) {
    const typeNames = types.slice(1, -1).split(SEP);
    const count = body.readUInt32LE(0);
    const wanted = query.type === undefined ? -1 : typeNames.indexOf(query.type);
    for (let k = 0; k < count && events.length < query.limit; k++) {
      const i = query.desc ? count - 1 - k : k;
      if (wanted >= 0 && body.readUInt16LE(CHUNK_HEAD_BYTES + i * CHUNK_ENTRY_BYTES + 16) !== wanted) continue;
      const e = entryOf(body, i, firstMs, firstOrder);
      if (trimmed !== undefined && compare(e.id, trimmed) <= 0) {
        below = query.desc; // newest first: everything after this is trimmed too
        if (below) break;
        continue;
      }
      if (query.from !== undefined && compare(e.id, query.from) < 0) continue;
      const type = /** @type {string} */ (typeNames[e.type]);
      const text = body.toString('utf8', e.start, e.end);
      const json = LINES ? text : eventLine(e.id, stream.middle, quoted(type), text, e.timestamp);
      events.push(new StoredEventRecord(e.id, WORKSPACE, 'sb-0', type, e.timestamp, json));
    }
    if (events.length >= query.limit || below) break;
  }
  return events;
}

/** A pattern resume over the workspace on chunks: `limit` events above a store order, in order. */
function chunkResume(/** @type {number} */ cursor, /** @type {number} */ limit) {
  /** @type {{ order: number, event: InstanceType<typeof StoredEventRecord> }[]} */
  const found = [];
  let sorted = 0;
  // A chunk holds one commit's events of a stream, so one that spans the cursor began at most
  // MAX_BATCH orders below it.
  const rows = chunkSql.byOrder.iterate(WORKSPACE, cursor - MAX_BATCH, cursor);
  for (const [
    firstOrder,
    firstMs,
    types,
    body,
    sandboxId,
  ] of /** @type {Iterable<[number, number, string, Buffer, string]>} */ (rows)) {
    if (found.length >= limit) {
      // Every event below this chunk's first order is found: stop once `limit` of them are.
      if (sorted !== found.length) {
        found.sort((a, b) => a.order - b.order);
        sorted = found.length;
      }
      if (/** @type {{ order: number }} */ (found[limit - 1]).order < firstOrder) break;
    }
    const stream = /** @type {Stream} */ (streams.get(sandboxId));
    const typeNames = types.slice(1, -1).split(SEP);
    const count = body.readUInt32LE(0);
    for (let i = 0; i < count; i++) {
      const e = entryOf(body, i, firstMs, firstOrder);
      if (e.order <= cursor) continue;
      const type = /** @type {string} */ (typeNames[e.type]);
      const text = body.toString('utf8', e.start, e.end);
      const json = LINES ? text : eventLine(e.id, stream.middle, quoted(type), text, e.timestamp);
      const event = new StoredEventRecord(e.id, WORKSPACE, sandboxId, type, e.timestamp, json);
      setEventOrder(event, e.order);
      found.push({ order: e.order, event });
    }
  }
  found.sort((a, b) => a.order - b.order);
  return found.slice(0, limit).map((f) => f.event);
}

/** CPU µs per call of `read`, over READ_REPEATS calls after a few unmeasured ones; and its result's length. */
function perRead(/** @type {() => unknown[]} */ read) {
  for (let i = 0; i < 20; i++) read();
  const c0 = cpuMicros();
  let length = 0;
  for (let i = 0; i < READ_REPEATS; i++) length = read().length;
  return { us: (cpuMicros() - c0) / READ_REPEATS, length };
}

function reads() {
  const ref = { workspaceId: WORKSPACE, sandboxId: 'sb-0' };
  const stream = /** @type {Stream} */ (streams.get('sb-0'));
  const kept = firstStreamEvents.slice(firstStreamEvents.length - Math.min(stream.retained, firstStreamEvents.length));
  const middleAt = Math.floor(kept.length / 2);
  const middle = /** @type {{ id: Id, order: number }} */ (kept[middleAt]);
  const rows = LAYOUT === 'rows';
  /** @param {unknown[]} r */
  const asRows = (r) => /** @type {import('../../src/store/sqlite/statements.js').EventRow[]} */ (r);
  /** @type {Record<string, () => { id: Id, json: string, type: string }[]>} */
  const read = {
    last100: () =>
      rows
        ? toStoredEvents(ref, asRows(sql.historyDesc.all(WORKSPACE, 'sb-0', 0, 0, 0, 100)))
        : chunkHistory({ desc: true, limit: 100 }),
    from100: () =>
      rows
        ? toStoredEvents(ref, asRows(sql.historyAsc.all(WORKSPACE, 'sb-0', middle.id.ms, middle.id.seq, 0, 100)))
        : chunkHistory({ desc: false, from: middle.id, limit: 100 }),
    type100: () =>
      rows
        ? toStoredEvents(ref, asRows(sql.historyTypeDesc.all(WORKSPACE, 'sb-0', 'file.changed', 0, 0, 0, 100)))
        : chunkHistory({ desc: true, type: 'file.changed', limit: 100 }),
    typeAbsent: () =>
      rows
        ? toStoredEvents(ref, asRows(sql.historyTypeDesc.all(WORKSPACE, 'sb-0', 'never.sent', 0, 0, 0, 100)))
        : chunkHistory({ desc: true, type: 'never.sent', limit: 100 }),
    resume1000: () =>
      rows
        ? toOrderedEvents(
            /** @type {import('../../src/store/sqlite/statements.js').OrderedEventRow[]} */ (
              sql.eventsByOrder.all(WORKSPACE, middle.order, 1000)
            ),
          )
        : chunkResume(middle.order, 1000),
  };
  // What each read must return, checked once before it is timed: a layout that reads wrong
  // would measure nothing.
  const idText = (/** @type {Id} */ id) => `${id.ms}-${id.seq}`;
  const expect = (/** @type {boolean} */ ok, /** @type {string} */ what) => {
    if (!ok) throw new Error(`${LAYOUT}: ${what}`);
  };
  const lines = (/** @type {{ id: Id, json: string }[]} */ events) =>
    events.every((e) => JSON.parse(e.json).id === idText(e.id));
  const ids = (/** @type {{ id: Id }[]} */ events) => events.map((e) => idText(e.id)).join();
  const last = read.last100();
  expect(lines(last) && ids(last) === ids(kept.slice(-100).reverse()), 'last 100');
  const from = read.from100();
  expect(lines(from) && ids(from) === ids(kept.slice(middleAt, middleAt + 100)), 'from an id');
  const typed = read.type100();
  expect(lines(typed) && typed.length > 0 && typed.every((e) => e.type === 'file.changed'), 'type filter');
  expect(read.typeAbsent().length === 0, 'absent type');
  const resumed = /** @type {{ id: Id, json: string, order?: number }[]} */ (read.resume1000());
  const sb0 = resumed.filter((e) => JSON.parse(e.json).sandboxId === 'sb-0');
  expect(lines(resumed) && resumed.length === 1000, 'resume by order');
  expect(ids(sb0) === ids(kept.slice(middleAt + 1, middleAt + 1 + sb0.length)), 'resume by order, one stream');
  return Object.fromEntries(Object.entries(read).map(([name, r]) => [name, perRead(r)]));
}

try {
  // Warm-up: the JIT, and (with pruning) every sandbox at the retention limit.
  appendRounds(Math.max(shape.fill, shape.prune ? RETAINED * shape.sandboxes + PRUNE_EVERY : 0), false);
  figures.appendFrames = 0;
  figures.pruneCpu = 0;
  figures.pruned = 0;
  figures.pruneFrames = 0;
  figures.checkpointCpu = 0;
  figures.compactCpu = 0;
  figures.compacted = 0;
  figures.compactMaxMs = 0;
  figures.appendFrames = 0;
  checkpoint();
  figures.checkpointCpu = 0;
  appendRounds(EVENTS, true);
  figures.appendFrames += checkpoint();
  const per = (/** @type {number} */ n, /** @type {number} */ d) => (d === 0 ? '-' : (n / d).toFixed(2));
  const pageCount = /** @type {number} */ (db.pragma('page_count', { simple: true }));
  const pageSize = /** @type {number} */ (db.pragma('page_size', { simple: true }));
  const line = [
    `${shapeArg} ${LAYOUT}: append+commit ${per(figures.appendCpu, figures.appended)} µs/event`,
    `checkpoint ${per(figures.checkpointCpu, figures.appended)} µs/event`,
    `WAL ${per(figures.appendFrames, figures.appended)} frames/event`,
  ];
  if (shape.prune) {
    line.push(
      `retention ${per(figures.pruneCpu, figures.pruned)} µs/deleted (${figures.pruned} deleted)`,
      `${per(figures.pruneFrames, figures.pruned)} frames/deleted`,
    );
  }
  if (LAYOUT === 'log') {
    line.push(
      `compaction ${per(figures.compactCpu, figures.compacted)} µs/event (${figures.compacted} compacted, longest ${figures.compactMaxMs.toFixed(0)} ms)`,
    );
  }
  const total = figures.appendCpu + figures.checkpointCpu + figures.pruneCpu + figures.compactCpu;
  line.push(
    `all ${per(total, figures.appended)} µs/event`,
    `file ${((pageCount * pageSize) / 2 ** 20).toFixed(1)} MiB`,
  );
  console.log(line.join('; '));
  if (LAYOUT !== 'log' && LAYOUT !== 'none') {
    const r = reads();
    console.log(
      `  reads (µs CPU each): last 100 ${r.last100.us.toFixed(1)} (${r.last100.length}); from an id 100 ${r.from100.us.toFixed(1)} (${r.from100.length}); ` +
        `type 1 % newest 100 ${r.type100.us.toFixed(1)} (${r.type100.length}); absent type ${r.typeAbsent.us.toFixed(1)} (${r.typeAbsent.length}); ` +
        `resume by order 1,000 ${r.resume1000.us.toFixed(1)} (${r.resume1000.length})`,
    );
  }
} finally {
  db.close();
  await rm(dir, { recursive: true, force: true });
}
