// @ts-check
// The SQLite store's inserts and commits on the main thread (as writer.ts runs them) against the
// same statements on a worker_thread, SQLite and better-sqlite3 alone (no writer, no sockets), not
// run by tests: docs/performance.md, "Eleventh round: a writer thread (measured, not built)".
//
// Modes:
// - inline: the main thread builds each event's id, line and row values and runs the grouped
//   INSERTs (INSERT_GROUP rows to a statement, then one at a time) and the commit, one
//   transaction per commit, as writeBatch does.
// - array: the main thread builds the same ids, lines and values and posts each commit's values
//   as one flat array (structured clone) to a worker, which runs the same statements and commit
//   on its own connection and posts back an acknowledgement.
// - buffer: the same, the commit's rows encoded into one ArrayBuffer (ROW_HEAD_BYTES of numbers
//   and three UTF-8 strings per row) that is transferred to the worker and back with the ack.
// - array-ack, buffer-ack: as array and buffer, the worker decoding each commit's rows and
//   acknowledging it without writing: what the hand-off alone costs each thread.
// - none: the main thread builds the same ids, lines and values and writes nothing: the script's
//   own JavaScript per event, the same in every mode (what the others add is theirs less this).
// With a worker, at most `inFlight` commits are posted and not yet acknowledged (1 or 2): the
// main thread builds the next commit while the worker writes the previous ones.
//
// Shapes: case2: 100 events per commit to 1 sandbox; case1: 800 per commit over 100 sandboxes.
// A stream's first commit inserts its `sandboxes` row; the row sync, retention and checkpoints
// are left out (the same in every mode: wal_autocheckpoint is off, as with the store's checkpoint
// worker, and nothing checkpoints). A warm-up of WARM_UP_EVENTS comes before the measured events.
//
// Figures per measured event: main thread CPU (its /proc/self/task/<pid>/schedstat, ns on a
// CPU), the worker thread's CPU (the same file of its own thread), whole-process CPU
// (process.cpuUsage(): every thread, V8's and libuv's included), and events/s (wall clock).
//
//   npm run build && node bench/store/writer-thread.mjs [buildDir=dist] [shape=case2]
//     [mode=inline|array|buffer|array-ack|buffer-ack|none] [inFlight=1] [events=100000]
// Compare modes by alternating runs: for m in inline array buffer inline array buffer ...; do ...; done
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { buildModules } from '../lib/build.js';

/** @typedef {{ buildDir: string, file: string, mode: string }} WorkerSetup */

const WORKSPACE = 1;
const WARM_UP_EVENTS = 20_000;
/** Per row in the buffer form: f64 ms, f64 timestamp, f64 order, u32 seq, u32 workspace, then the lengths of sandbox, type, data (u32 each). */
const ROW_HEAD_BYTES = 8 * 3 + 4 * 5;

/**
 * This thread's CPU time in µs: the kernel's ns on a CPU for this one thread (the first field of
 * schedstat; proc(5)), where process.cpuUsage() counts every thread of the process.
 * @param {number} tid
 */
const threadCpuMicros = (tid) =>
  Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'latin1').split(' ')[0]) / 1_000;

/** The Linux thread id of the calling thread (/proc/thread-self names it). */
const ownTid = () => Number(readFileSync('/proc/thread-self/stat', 'latin1').split(' ')[0]);

/**
 * A connection with the store's schema and statements, and a commit that inserts a flat array of
 * row values (EVENT_INSERT_VALUES each) and the rows of the streams the commit starts.
 * @param {string} buildDir
 * @param {string} file
 */
async function openWriter(buildDir, file) {
  const modules = buildModules(buildDir);
  const { configureConnection, migrate } = await modules.sqliteSchema();
  const { prepareStatements, INSERT_GROUP, EVENT_INSERT_VALUES } = await modules.sqliteStatements();
  const db = new Database(file);
  configureConnection(db, 'NORMAL');
  // As with the store's checkpoint worker (checkpointer.ts): no checkpoint inside commits.
  db.pragma('wal_autocheckpoint = 0');
  migrate(db);
  const sql = prepareStatements(db);
  const group = new Array(INSERT_GROUP * EVENT_INSERT_VALUES).fill(0);
  const groupValues = INSERT_GROUP * EVENT_INSERT_VALUES;
  /**
   * @param {unknown[]} values EVENT_INSERT_VALUES per row
   * @param {number} count values used
   * @param {unknown[]} started per new stream: sandbox, last ms, last seq, retained, first ms, first seq, active at, bytes
   */
  const write = (values, count, started) => {
    let at = 0;
    for (; at + groupValues <= count; at += groupValues) {
      for (let i = 0; i < groupValues; i++) group[i] = values[at + i];
      sql.insertEvents.run(group);
    }
    for (; at < count; at += EVENT_INSERT_VALUES) {
      sql.insertEvent.run(
        .../** @type {import('../../src/store/sqlite/statements.js').EventInsert} */ (
          values.slice(at, at + EVENT_INSERT_VALUES)
        ),
      );
    }
    for (let s = 0; s < started.length; s += 8) {
      const [sandbox, lastMs, lastSeq, retained, firstMs, firstSeq, activeAt, bytes] = started.slice(s, s + 8);
      sql.insertSandbox.run(
        WORKSPACE,
        /** @type {string} */ (sandbox),
        /** @type {number} */ (lastMs),
        /** @type {number} */ (lastSeq),
        /** @type {number} */ (retained),
        /** @type {number} */ (firstMs),
        /** @type {number} */ (firstSeq),
        /** @type {number} */ (activeAt),
        /** @type {number} */ (bytes),
      );
    }
    group.fill(0); // holds no payload past its commit
  };
  return { db, commit: db.transaction(write), EVENT_INSERT_VALUES };
}

/**
 * Decodes a commit's rows from the buffer form into `values`; returns how many values it set.
 * @param {Buffer} buf
 * @param {unknown[]} values
 */
function decodeRows(buf, values) {
  const rows = buf.readUInt32LE(0);
  let at = 4;
  let v = 0;
  for (let r = 0; r < rows; r++) {
    const ms = buf.readDoubleLE(at);
    const timestamp = buf.readDoubleLE(at + 8);
    const order = buf.readDoubleLE(at + 16);
    const seq = buf.readUInt32LE(at + 24);
    const workspace = buf.readUInt32LE(at + 28);
    const sandboxBytes = buf.readUInt32LE(at + 32);
    const typeBytes = buf.readUInt32LE(at + 36);
    const dataBytes = buf.readUInt32LE(at + 40);
    at += ROW_HEAD_BYTES;
    const sandbox = buf.toString('utf8', at, (at += sandboxBytes));
    const type = buf.toString('utf8', at, (at += typeBytes));
    const data = buf.toString('utf8', at, (at += dataBytes));
    values[v++] = workspace;
    values[v++] = sandbox;
    values[v++] = ms;
    values[v++] = seq;
    values[v++] = type;
    values[v++] = timestamp;
    values[v++] = data;
    values[v++] = order;
  }
  return v;
}

if (!isMainThread) {
  // The worker: one connection, one transaction per message, an ack per commit.
  const setup = /** @type {WorkerSetup} */ (workerData);
  const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
  const writer = await openWriter(setup.buildDir, setup.file);
  const tid = ownTid();
  const writes = !setup.mode.endsWith('-ack');
  /** @type {unknown[]} */
  const decoded = [];
  port.on(
    'message',
    (/** @type {{ values?: unknown[], rows?: ArrayBuffer, started: unknown[] } | 'cpu' | 'close'} */ m) => {
      if (m === 'cpu') {
        port.postMessage({ cpu: threadCpuMicros(tid) });
        return;
      }
      if (m === 'close') {
        writer.db.close();
        port.close();
        return;
      }
      if (m.rows !== undefined) {
        const count = decodeRows(Buffer.from(m.rows), decoded);
        if (writes) writer.commit(decoded, count, m.started);
        decoded.fill(0, 0, count);
        port.postMessage({ rows: m.rows }, [m.rows]);
      } else {
        const values = /** @type {unknown[]} */ (m.values);
        if (writes) writer.commit(values, values.length, m.started);
        port.postMessage({});
      }
    },
  );
} else {
  const [buildArg = 'dist', shapeArg = 'case2', modeArg = 'inline', inFlightArg = '1', eventsArg = '100000'] =
    process.argv.slice(2);
  /** @type {Record<string, { perCommit: number, sandboxes: number }>} */
  const SHAPES = { case2: { perCommit: 100, sandboxes: 1 }, case1: { perCommit: 800, sandboxes: 100 } };
  const shape = SHAPES[shapeArg];
  const MODES = ['inline', 'array', 'buffer', 'array-ack', 'buffer-ack', 'none'];
  if (shape === undefined || !MODES.includes(modeArg)) {
    throw new Error(
      `usage: writer-thread.mjs [build] [${Object.keys(SHAPES).join('|')}] [${MODES.join('|')}] [inFlight] [events]`,
    );
  }
  const IN_FLIGHT = Number(inFlightArg);
  const EVENTS = Number(eventsArg);
  const modules = buildModules(buildArg);
  const { eventLine, eventLineMiddle, nextEventId } = await modules.event();
  const { EVENT_INSERT_VALUES } = await modules.sqliteStatements();

  const dir = await mkdtemp(join(tmpdir(), 'writer-thread-'));
  const file = join(dir, 'events.db');
  const mainTid = process.pid;

  /** @typedef {{ sandboxId: string, middle: string, lastId: { ms: number, seq: number } | undefined, retained: number, bytes: number }} Stream */
  /** @type {Map<string, Stream>} */
  const streams = new Map();
  /** @type {Map<string, string>} */
  const quotedTypes = new Map();
  let order = 0;
  let counter = 0;
  /** The lines a commit built, kept until the next one as the fan-out would hold them. */
  let lines = /** @type {string[]} */ ([]);

  /**
   * One commit's rows as the writer builds them: ids, the event lines (the fan-out frames them),
   * the values to bind; and the rows of the streams it starts.
   * @param {number} round events in the commit
   * @param {number} first the first event's sandbox
   */
  function buildCommit(round, first) {
    /** @type {unknown[]} */
    const values = new Array(round * EVENT_INSERT_VALUES);
    /** @type {unknown[]} */
    const started = [];
    lines = new Array(round);
    let sandbox = first;
    for (let i = 0; i < round; i++) {
      const n = counter++;
      const sandboxId = `sb-${sandbox}`;
      sandbox = (sandbox + 1) % shape.sandboxes;
      // Case-2-like events: mostly output, a status in ten, a file change in a hundred.
      const type = n % 100 === 0 ? 'file.changed' : n % 10 === 5 ? 'process.status' : 'terminal.output';
      const data = JSON.stringify({ n, output: `line ${n} of output text `.repeat(4) });
      let stream = streams.get(sandboxId);
      const isNew = stream === undefined;
      if (stream === undefined) {
        stream = { sandboxId, middle: eventLineMiddle(WORKSPACE, sandboxId), lastId: undefined, retained: 0, bytes: 0 };
        streams.set(sandboxId, stream);
      }
      let quoted = quotedTypes.get(type);
      if (quoted === undefined) quotedTypes.set(type, (quoted = JSON.stringify(type)));
      const now = Date.now();
      const id = nextEventId(stream.lastId, now);
      const line = eventLine(id, stream.middle, quoted, data, now);
      lines[i] = line;
      stream.lastId = id;
      stream.retained++;
      stream.bytes += Buffer.byteLength(line);
      order += 1;
      const at = i * EVENT_INSERT_VALUES;
      values[at] = WORKSPACE;
      values[at + 1] = sandboxId;
      values[at + 2] = id.ms;
      values[at + 3] = id.seq;
      values[at + 4] = type;
      values[at + 5] = now;
      values[at + 6] = data;
      values[at + 7] = order;
      if (isNew) started.push(sandboxId, id.ms, id.seq, 1, id.ms, id.seq, now, stream.bytes);
    }
    return { values, started, next: sandbox };
  }

  /** @type {Buffer[]} */
  const pool = [];
  /**
   * A commit's values in the buffer form (a pooled buffer the worker hands back).
   * @param {unknown[]} values
   */
  function encodeRows(values) {
    const rows = values.length / EVENT_INSERT_VALUES;
    let most = 4;
    for (let r = 0; r < rows; r++) {
      const at = r * EVENT_INSERT_VALUES;
      const text = (/** @type {number} */ i) => /** @type {string} */ (values[at + i]).length;
      most += ROW_HEAD_BYTES + 3 * (text(1) + text(4) + text(6)); // UTF-8 takes at most 3 bytes a UTF-16 unit
    }
    let buf = pool.pop();
    if (buf === undefined || buf.length < most) buf = Buffer.from(new ArrayBuffer(Math.max(most, 1 << 20)));
    buf.writeUInt32LE(rows, 0);
    let pos = 4;
    for (let r = 0; r < rows; r++) {
      const at = r * EVENT_INSERT_VALUES;
      const head = pos;
      pos += ROW_HEAD_BYTES;
      const sandboxBytes = buf.write(/** @type {string} */ (values[at + 1]), pos);
      pos += sandboxBytes;
      const typeBytes = buf.write(/** @type {string} */ (values[at + 4]), pos);
      pos += typeBytes;
      const dataBytes = buf.write(/** @type {string} */ (values[at + 6]), pos);
      pos += dataBytes;
      buf.writeDoubleLE(/** @type {number} */ (values[at + 2]), head);
      buf.writeDoubleLE(/** @type {number} */ (values[at + 5]), head + 8);
      buf.writeDoubleLE(/** @type {number} */ (values[at + 7]), head + 16);
      buf.writeUInt32LE(/** @type {number} */ (values[at + 3]), head + 24);
      buf.writeUInt32LE(/** @type {number} */ (values[at + 0]), head + 28);
      buf.writeUInt32LE(sandboxBytes, head + 32);
      buf.writeUInt32LE(typeBytes, head + 36);
      buf.writeUInt32LE(dataBytes, head + 40);
    }
    return buf;
  }

  /** @type {Awaited<ReturnType<typeof openWriter>> | undefined} */
  let inline;
  /** @type {Worker | undefined} */
  let worker;
  /** Acks awaited, oldest first. */
  /** @type {((m: { rows?: ArrayBuffer, cpu?: number }) => void)[]} */
  const waiting = [];
  let inFlight = 0;
  if (modeArg === 'inline') {
    inline = await openWriter(buildArg, file);
  } else if (modeArg !== 'none') {
    worker = new Worker(new URL(import.meta.url), {
      workerData: /** @type {WorkerSetup} */ ({ buildDir: buildArg, file, mode: modeArg }),
    });
    worker.on('message', (/** @type {{ rows?: ArrayBuffer, cpu?: number }} */ m) => {
      if (m.rows !== undefined) pool.push(Buffer.from(m.rows));
      /** @type {(m: { rows?: ArrayBuffer, cpu?: number }) => void} */ (waiting.shift())(m);
    });
    worker.on('error', (e) => {
      throw e;
    });
  }
  const ack = () => new Promise((resolve) => waiting.push(resolve));
  const workerCpu = async () => {
    if (worker === undefined) return 0;
    const answer = ack();
    worker.postMessage('cpu');
    return /** @type {number} */ ((await answer).cpu);
  };

  /** Appends `total` events in commits of perCommit; resolves when every commit is acknowledged. */
  async function appendRounds(/** @type {number} */ total) {
    let sandbox = 0;
    /** @type {Promise<unknown>[]} */
    const acks = [];
    for (let done = 0; done < total; ) {
      const round = Math.min(shape.perCommit, total - done);
      const { values, started, next } = buildCommit(round, sandbox);
      sandbox = next;
      done += round;
      if (modeArg === 'none') continue;
      if (inline !== undefined) {
        inline.commit(values, values.length, started);
        continue;
      }
      const w = /** @type {Worker} */ (worker);
      if (inFlight >= IN_FLIGHT) await acks.shift();
      inFlight++;
      acks.push(ack().then(() => inFlight--));
      if (modeArg.startsWith('array')) {
        w.postMessage({ values, started });
      } else {
        const rows = /** @type {ArrayBuffer} */ (encodeRows(values).buffer); // a whole ArrayBuffer, never shared
        w.postMessage({ rows, started }, [rows]);
      }
    }
    await Promise.all(acks);
  }

  /** Closes the writer's connection (the worker's with the worker); true the first time. */
  let closed = false;
  const closeWriter = async () => {
    if (closed) return;
    closed = true;
    if (worker !== undefined) {
      const exited = new Promise((resolve) => worker?.once('exit', resolve));
      worker.postMessage('close');
      await exited;
    }
    inline?.db.close();
  };
  try {
    await appendRounds(WARM_UP_EVENTS);
    const cpu0 = process.cpuUsage();
    const main0 = threadCpuMicros(mainTid);
    const worker0 = await workerCpu();
    const t0 = performance.now();
    await appendRounds(EVENTS);
    const wallMs = performance.now() - t0;
    const mainUs = threadCpuMicros(mainTid) - main0;
    const workerUs = (await workerCpu()) - worker0;
    const cpu = process.cpuUsage(cpu0);
    await closeWriter();
    // Every event written, once: a mode that lost or doubled commits would measure nothing.
    if (modeArg !== 'none' && !modeArg.endsWith('-ack')) {
      const check = new Database(file, { readonly: true });
      const { rows } = /** @type {{ rows: number }} */ (check.prepare('SELECT count(*) AS rows FROM events').get());
      check.close();
      if (rows !== WARM_UP_EVENTS + EVENTS)
        throw new Error(`${modeArg}: ${rows} events written, not ${WARM_UP_EVENTS + EVENTS}`);
    }
    const per = (/** @type {number} */ us) => (us / EVENTS).toFixed(2);
    console.log(
      [
        `${shapeArg} ${modeArg}${worker === undefined ? '' : ` inFlight ${IN_FLIGHT}`}: main ${per(mainUs)} µs/event`,
        `worker ${per(workerUs)} µs/event`,
        `process ${per(cpu.user + cpu.system)} µs/event`,
        `${Math.round(EVENTS / (wallMs / 1_000))} events/s`,
        `(${EVENTS} events)`,
      ].join('; '),
    );
  } finally {
    await closeWriter();
    await rm(dir, { recursive: true, force: true });
  }
}
