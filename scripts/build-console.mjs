// Builds the browser console (docs/console.md) into dist/console/: the page, its style sheet and
// one bundled, minified script (Preact and htm included), so the daemon serves it offline with
// no CDN and users need no bundler. Run by `npm run build`.
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'console');

await mkdir(out, { recursive: true });
await build({
  entryPoints: [path.join(root, 'console', 'src', 'main.js')],
  outfile: path.join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['chrome110', 'firefox110', 'safari16'],
  legalComments: 'eof',
  logLevel: 'warning',
});
await copyFile(path.join(root, 'console', 'index.html'), path.join(out, 'index.html'));
await copyFile(path.join(root, 'console', 'app.css'), path.join(out, 'app.css'));
