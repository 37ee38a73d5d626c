import path from 'node:path';
import type { Command } from 'commander';
import { apiKeysPath, createApiKey, listApiKeys, revokeApiKey } from '../auth/api-keys.js';
import { integerArgument, option } from './options.js';

interface DataDirOptions {
  dataDir: string;
}

/**
 * `sandbox-events apikey create|list|revoke`: opaque API keys for the HTTP API (docs/http.md, "API keys"). The
 * file is `<data-dir>/api-keys.json` (hashes only, mode 0600); a running daemon with the same
 * data dir sees changes without a restart.
 */
export function registerApikey(program: Command): void {
  const apikey = program.command('apikey').description('Create, list and revoke API keys for the HTTP API (X-API-Key)');
  const dataDirOption = () =>
    option('--data-dir <dir>', 'data dir of the broker (the keys live in <data-dir>/api-keys.json)').default('./data');

  apikey
    .command('create')
    .description('Create a key for a workspace; prints the key alone on stdout, once')
    .requiredOption('--workspace <id>', 'workspace id the key reads', integerArgument(1))
    .option('--name <label>', 'a label for people, shown by `apikey list`')
    .addOption(dataDirOption())
    .action(async (options: DataDirOptions & { workspace: number; name?: string }) => {
      const file = apiKeysPath(path.resolve(options.dataDir));
      const { key, record } = await createApiKey(file, { workspaceId: options.workspace, name: options.name });
      process.stdout.write(`${key}\n`);
      process.stderr.write(
        `Created API key ${record.id} for workspace ${record.workspaceId} in ${file}.\n` +
          'The key is shown only this once: only its hash is stored.\n',
      );
    });

  apikey
    .command('list')
    .description('List keys: id, workspace, status, created, name (never the keys themselves)')
    .option('--json', 'one JSON array instead of a table')
    .addOption(dataDirOption())
    .action(async (options: DataDirOptions & { json?: boolean }) => {
      const records = await listApiKeys(apiKeysPath(path.resolve(options.dataDir)));
      const rows = records.map((record) => ({
        id: record.id,
        workspaceId: record.workspaceId,
        status: record.revokedAt === undefined ? 'active' : 'revoked',
        createdAt: record.createdAt,
        ...(record.revokedAt !== undefined ? { revokedAt: record.revokedAt } : {}),
        ...(record.name !== undefined ? { name: record.name } : {}),
      }));
      if (options.json === true) {
        process.stdout.write(`${JSON.stringify(rows)}\n`);
        return;
      }
      const lines = [['ID', 'WORKSPACE', 'STATUS', 'CREATED', 'NAME']];
      for (const row of rows) lines.push([row.id, String(row.workspaceId), row.status, row.createdAt, row.name ?? '']);
      const widths = lines[0]!.map((_, column) => Math.max(...lines.map((line) => line[column]!.length)));
      for (const line of lines) {
        process.stdout.write(
          `${line
            .map((cell, column) => cell.padEnd(widths[column]!))
            .join('  ')
            .trimEnd()}\n`,
        );
      }
    });

  apikey
    .command('revoke')
    .description('Revoke a key, by its id or the key itself; a running daemon refuses it within a second')
    .argument('<id-or-key>', 'the id shown by `apikey list`, or the key')
    .addOption(dataDirOption())
    .action(async (idOrKey: string, options: DataDirOptions) => {
      const { record, alreadyRevoked } = await revokeApiKey(apiKeysPath(path.resolve(options.dataDir)), idOrKey);
      process.stderr.write(
        alreadyRevoked
          ? `API key ${record.id} was already revoked (${record.revokedAt}).\n`
          : `Revoked API key ${record.id} (workspace ${record.workspaceId}).\n`,
      );
    });
}
