#!/usr/bin/env node
// The compiled CLI lives in dist/ (built by `npm install` through the prepare script).
import('../dist/cli/main.js').catch((error) => {
  if (error && error.code === 'ERR_MODULE_NOT_FOUND' && /dist[\\/]cli[\\/]main\.js/.test(String(error.message))) {
    console.error('sandbox-events is not built yet: run `npm install` (or `npm run build`) in the package folder.');
    process.exit(1);
  }
  throw error;
});
