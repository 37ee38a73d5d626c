import { Command } from 'commander';
import { SandboxEventsError } from '../errors.js';
import { PACKAGE_VERSION } from '../version.js';
import { registerApikey } from './apikey.js';
import { registerHistory } from './history.js';
import { registerPublish } from './publish.js';
import { registerConfig } from './config.js';
import { registerServe } from './serve.js';
import { registerTail } from './tail.js';
import { registerToken } from './token.js';

const program = new Command()
  .name('sandbox-events')
  .description('Event broker for sandboxes: Redis-protocol pub/sub with JWT auth, history and exact resume')
  .version(PACKAGE_VERSION);

registerServe(program);
registerConfig(program);
registerToken(program);
registerApikey(program);
registerTail(program);
registerPublish(program);
registerHistory(program);

program.parseAsync(process.argv).catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  const code = error instanceof SandboxEventsError ? ` [${error.code}]` : '';
  process.stderr.write(`sandbox-events: ${message}${code}\n`);
  process.exit(1);
});
