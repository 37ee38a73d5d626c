// Micro-benchmark of token verification: CPU microseconds per HS256 token, each token distinct
// and the verified-token cache off, as in a connection storm where every client has its own
// token. Not part of `npm run bench`.
//
//   node bench/micro/verify.js [buildDir=dist] [tokens=2000]
// (`npm run build` first; a copy of an older dist/ as buildDir compares before/after. The copy
// must sit where node_modules resolves, e.g. inside the repository.)
// @ts-check
import { buildModules } from '../lib/build.js';

const [buildArg = 'dist', tokensArg = '2000'] = process.argv.slice(2);
const modules = buildModules(buildArg);
const { TokenVerifier } = await modules.verifier();
const { mintToken } = await modules.mint();

const secret = 'bench-secret-0123456789abcdef';
const verifier = new TokenVerifier({ secret, cacheSize: 0 });
const tokens = [];
for (let i = 0; i < Number(tokensArg); i++) {
  tokens.push(await mintToken({ secret, workspaceId: 1, sandboxId: `sb-${i}`, ttlSeconds: 3600 }));
}
for (const token of tokens) await verifier.verify(token); // warm-up (JIT)
const results = [];
for (let round = 0; round < 7; round++) {
  const cpu0 = process.cpuUsage();
  for (const token of tokens) await verifier.verify(token);
  const cpu = process.cpuUsage(cpu0);
  results.push((cpu.user + cpu.system) / tokens.length);
}
results.sort((a, b) => a - b);
console.log(
  `${modules.dir}: ${results[0].toFixed(1)} µs (best) / ${results[3].toFixed(1)} µs (median) CPU per HS256 verification`,
);
