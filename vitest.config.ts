import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // A StoredEvent's `json` is a getter: equality compares it as a field (see the file).
    setupFiles: ['test/support/stored-event-equality.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Two cores: files run in two forks; each file's tests run one after another.
    pool: 'forks',
    maxWorkers: 2,
  },
});
