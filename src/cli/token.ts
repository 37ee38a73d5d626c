import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { mintToken } from '../auth/mint.js';
import { readSettingsFile } from '../config/load.js';
import type { Role } from '../auth/principal.js';
import { durationArgument, envName, integerArgument, option } from './options.js';

interface TokenOptions {
  secret?: string;
  config?: string;
  dataDir: string;
  workspace: number;
  sandbox?: string;
  role?: Role;
  ttl: number;
  issuer?: string;
  audience?: string;
}

const ROLES: readonly Role[] = ['sandbox', 'workspace', 'admin'];

export function registerToken(program: Command): void {
  program
    .command('token')
    .description("Mint a token signed with the broker's secret; prints it alone on stdout")
    .addOption(
      option(
        '--secret <secret>',
        "HS256 secret (default: SANDBOX_EVENTS_JWT_SECRET, else the --config file's first jwt-secret, else the data dir's secret)",
      ),
    )
    .addOption(
      option('--config <file>', "the broker's config file: its first jwt-secret signs (as `serve --config` reads it)"),
    )
    .addOption(option('--data-dir <dir>', 'data dir of the broker whose development secret to use').default('./data'))
    .requiredOption('--workspace <id>', 'workspace id (the tenant)', integerArgument(1))
    .option('--sandbox <id>', 'sandbox id (required for the sandbox role)')
    .option(
      '--role <role>',
      'sandbox, workspace or admin (default: sandbox with --sandbox, else workspace)',
      (text: string) => {
        if (!ROLES.includes(text as Role)) throw new InvalidArgumentError(`expected one of ${ROLES.join(', ')}`);
        return text as Role;
      },
    )
    .addOption(
      option('--ttl <duration>', 'lifetime, e.g. 1h, 30m, 7d')
        .default(3600 * 1000, '1h')
        .argParser(durationArgument),
    )
    .addOption(option('--issuer <iss>', '`iss` claim'))
    .addOption(option('--audience <aud>', '`aud` claim'))
    .action(async (options: TokenOptions, command: Command) => {
      const file = options.config === undefined ? {} : readSettingsFile(path.resolve(options.config));
      // Of several secrets, the first signs; the broker verifies with each (docs/operations.md).
      const fileSecret = (file.jwtSecret as string[] | undefined)?.[0];
      const dataDir =
        command.getOptionValueSource('dataDir') === 'default' && typeof file.dataDir === 'string'
          ? file.dataDir
          : options.dataDir;
      const secret = options.secret ?? process.env[envName('--jwt-secret')] ?? fileSecret ?? readDataDirSecret(dataDir);
      const token = await mintToken({
        secret,
        workspaceId: options.workspace,
        sandboxId: options.sandbox,
        role: options.role ?? (options.sandbox === undefined ? 'workspace' : 'sandbox'),
        ttlSeconds: Math.max(1, Math.round(options.ttl / 1000)),
        issuer: options.issuer,
        audience: options.audience,
      });
      process.stdout.write(`${token}\n`);
    });
}

function readDataDirSecret(dataDir: string): string {
  const file = path.resolve(dataDir, 'jwt-secret');
  if (!existsSync(file)) {
    throw new InvalidArgumentError(
      `no secret: pass --secret, set SANDBOX_EVENTS_JWT_SECRET, or start \`sandbox-events serve\` once so that ${file} exists`,
    );
  }
  return readFileSync(file, 'utf8').trim();
}
