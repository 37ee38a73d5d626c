import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The package's bin, as a user runs it (compiled by `npm run build`, which `npm test` runs). */
export const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/sandbox-events.js');

/**
 * The compiled package, for child processes (Node 20 runs no TypeScript): the path of a module
 * under dist/, e.g. `distModule('store/sqlite-store.js')`. `npm test` builds dist/ first.
 */
export function distModule(relative: string): string {
  const file = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist', relative);
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npm run build\` first`);
  return file;
}

export interface Daemon {
  child: ChildProcess;
  port: number;
  httpPort: number | undefined;
  /** The `sandbox-events listening` log record. */
  listening: Record<string, unknown>;
  /** stdout (the log, one JSON record a line) so far. */
  stdout(): string;
  /** stderr so far. */
  stderr(): string;
  /** Resolves with stderr once it contains `text`. */
  stderrContaining(text: string): Promise<string>;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

const running = new Set<ChildProcess>();

/**
 * Starts `sandbox-events serve <args>` and resolves once its `sandbox-events listening` log line
 * says which ports it bound (pass `--port 0`, and `--http-port 0` unless the test is about
 * HTTP's port). `nodeArgs` go to node before the bin (`node <nodeArgs> bin/sandbox-events.js`);
 * `fileLimit` lowers the daemon's limit of open files (`ulimit -n`, through sh, which execs node);
 * `stderrClosed` closes the read end of its stderr before it starts (a reader that went away).
 * Every daemon started here is killed by `killDaemons()`.
 */
export function spawnDaemon(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
  { fileLimit, stderrClosed = false }: { fileLimit?: number; stderrClosed?: boolean } = {},
): Promise<Daemon> {
  const command = [process.execPath, ...nodeArgs, BIN, 'serve', ...args];
  const [file, ...fileArgs] =
    fileLimit === undefined ? command : ['sh', '-c', `ulimit -n ${fileLimit} && exec "$0" "$@"`, ...command];
  const child = spawn(file!, fileArgs, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (stderrClosed) child.stderr!.destroy();
  running.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const stderrContaining = (text: string): Promise<string> =>
    new Promise((resolve) => {
      const check = (): void => {
        if (!stderr.includes(text)) return;
        child.stderr!.off('data', check);
        resolve(stderr);
      };
      child.stderr!.on('data', check);
      check();
    });
  let stdout = '';
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      stdout += `${line}\n`;
      let record: { msg?: string; port?: number; httpPort?: number; [field: string]: unknown };
      try {
        record = JSON.parse(line) as typeof record;
      } catch {
        return;
      }
      if (record.msg === 'sandbox-events listening') {
        resolve({
          child,
          port: record.port!,
          httpPort: record.httpPort,
          listening: record,
          stdout: () => stdout,
          stderr: () => stderr,
          stderrContaining,
          exited,
        });
      }
    });
    void exited.then((code) => reject(new Error(`sandbox-events serve exited with ${code}: ${stderr}`)));
  });
}

/** Kills every daemon still running (for afterEach/afterAll). */
export function killDaemons(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}
