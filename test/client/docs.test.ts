import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it, vi } from 'vitest';
import { startTestServer } from '../support/test-server.js';
import { tempDir } from './support/helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The `js` block of docs/client.md's "A runnable example", as published. */
async function docExample(): Promise<string> {
  const doc = await readFile(path.join(ROOT, 'docs/client.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## A runnable example'));
  const match = /```js\n([\s\S]*?)```/.exec(section);
  if (match === null) throw new Error('no js block in "A runnable example"');
  return match[1]!;
}

it('runs the example of docs/client.md against a real broker', async () => {
  const broker = await startTestServer();
  cleanups.push(() => broker.close());
  vi.stubEnv('SANDBOX_EVENTS_PORT', String(broker.port));
  vi.stubEnv('SANDBOX_EVENTS_TOKEN', await broker.token());
  const printed: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void printed.push(args.join(' ')));

  const code = await docExample();
  expect(code).toContain("from 'sandbox-events'");
  const { dir, remove } = await tempDir('sandbox-events-doc-');
  cleanups.push(remove);
  const file = path.join(dir, 'example.mjs');
  // The package name resolves to the built package; here it points at the source.
  await writeFile(
    file,
    code.replace("from 'sandbox-events'", `from ${JSON.stringify(path.join(ROOT, 'src/client/index.ts'))}`),
  );
  await import(/* @vite-ignore */ file);

  expect(printed[0]).toBe('subscribed to sb-1');
  expect(printed[1]).toMatch(/^\d+-\d+ execution\.started \{"cmd":"python main\.py"\}$/);
  expect(printed[2]).toMatch(/^\d+-\d+ execution\.completed \{"exitCode":0\}$/);
  expect(printed[3]).toBe("2 events in sb-1's history");
});
