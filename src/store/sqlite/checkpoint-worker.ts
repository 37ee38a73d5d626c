/*
 * The checkpoint worker (a worker thread, started by checkpointer.ts from this file's compiled
 * .js): a PASSIVE checkpoint copies committed WAL pages into the database file and fsyncs it,
 * without blocking the writer (https://www.sqlite.org/pragma.html#pragma_wal_checkpoint). It
 * has its own connection, so the event loop of the writer never waits for it.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { CheckpointReport, CheckpointRequest, CheckpointWorkerData } from './checkpoint-protocol.js';

if (parentPort === null) throw new Error('checkpoint-worker runs as a worker thread (see checkpointer.ts)');
const port = parentPort;
const { path, synchronous } = workerData as CheckpointWorkerData;
const db = new Database(path, { timeout: 1000 });
db.pragma(`synchronous = ${synchronous}`);

function report(message: CheckpointReport): void {
  port.postMessage(message);
}

port.on('message', (message: CheckpointRequest) => {
  if (message === 'close') {
    db.close();
    port.close();
    return;
  }
  try {
    const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    report({ log: row?.log ?? 0, checkpointed: row?.checkpointed ?? 0 });
  } catch (error) {
    report({ error: error instanceof Error ? error.message : String(error) });
  }
});
