import { existsSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
// @ts-expect-error: plain JavaScript, type-checked by bench/tsconfig.json (npm run typecheck)
import { BUILD_PATHS } from '../../bench/lib/build.js';

const root = path.resolve(import.meta.dirname, '../..');

it('every module the benchmarks load from a build is compiled from a module in src/', async () => {
  const paths = Object.values(BUILD_PATHS as Record<string, string>);
  expect(paths.length).toBeGreaterThan(3);
  for (const file of paths) {
    const source = path.join(root, 'src', file.replace(/\.js$/, '.ts'));
    expect(existsSync(source), source).toBe(true);
  }
});
