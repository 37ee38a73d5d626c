// Layer rules for src/ (run: npm run deps). A module may import its own layer and the layers
// below it, never one above; no import cycles, counting type-only imports; no orphan modules.
// dependency-cruiser's rule format: https://github.com/sverweij/dependency-cruiser/blob/main/doc/rules-reference.md

/** Lowest first. Each entry is a list of path patterns (regular expressions over the path from the repo root). */
const LAYERS = [
  { name: 'foundation', paths: ['^src/errors\\.ts$', '^src/version\\.ts$', '^src/config\\.ts$'] },
  { name: 'protocol-event', paths: ['^src/protocol/', '^src/event/'] },
  { name: 'auth-store', paths: ['^src/auth/', '^src/store/'] },
  { name: 'broker', paths: ['^src/broker/'] },
  // The context every transport shares (limits, broker, publisher, store, verifier, stats and
  // the registry of connected clients, by interface): below all of its users.
  { name: 'runtime', paths: ['^src/runtime/'] },
  { name: 'session', paths: ['^src/session/'] },
  { name: 'commands', paths: ['^src/commands/'] },
  { name: 'transports', paths: ['^src/connection/', '^src/http/'] },
  { name: 'server', paths: ['^src/server/'] },
  // The settings table, config files and reload sit with the daemon they configure and the CLI.
  { name: 'composition-root', paths: ['^src/daemon\\.ts$', '^src/config/', '^src/cli/', '^src/index\\.ts$'] },
];

const upwardRules = LAYERS.slice(0, -1).map((layer, index) => ({
  name: `layer-${layer.name}`,
  comment: `${layer.name} may import only its own layer and the ones below it`,
  severity: 'error',
  from: { path: layer.paths },
  to: { path: LAYERS.slice(index + 1).flatMap((higher) => higher.paths) },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'an import cycle ties modules that should be understood (and changed) one at a time',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-orphans',
      comment: 'a module nothing imports and that imports nothing is dead code',
      severity: 'error',
      from: { orphan: true, path: '^src/', pathNot: ['\\.d\\.ts$'] },
      to: {},
    },
    ...upwardRules,
    {
      name: 'client-standalone',
      comment: 'the client ships to apps: it may use the event format and the base error, nothing of the daemon',
      severity: 'error',
      from: { path: '^src/client/' },
      to: { path: '^src/', pathNot: ['^src/client/', '^src/event/', '^src/errors\\.ts$'] },
    },
    {
      name: 'no-unlayered',
      comment: 'every module under src/ belongs to a layer (add a new folder to LAYERS)',
      severity: 'error',
      from: { path: '^src/', pathNot: [...LAYERS.flatMap((layer) => layer.paths), '^src/client/'] },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    // Type-only imports count: a cycle through `import type` still ties the modules together.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default'] },
  },
};
