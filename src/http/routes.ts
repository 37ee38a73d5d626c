import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Principal } from '../auth/principal.js';
import { channelKey, mayAccess, resolveChannel, visibleName } from '../broker/scope.js';
import { formatEventId, parsePublishPayload, validateEventType } from '../event/event.js';
import { eventIdArgument, historyLimit, historyQuery, historySince } from '../session/query.js';
import { writePacedReply } from '../session/replay.js';
import { recordOutputCut } from '../runtime/context.js';
import { historyPages } from '../store/semantics.js';
import { checkDeclaredLength, readBody } from './body.js';
import { authenticateMetricsReader, authenticateRequest } from './credentials.js';
import { badRequest, forbidden } from './errors.js';
import type { HttpHost } from './host.js';
import { JSON_HEADERS, sendJson, sendText } from './respond.js';
import type { SandboxSummary } from './activity.js';
import { backendAiKernelStream, hopxMetricsStream } from './seed-streams.js';
import { metricsStream, patternStream, sandboxStream } from './streams.js';
import { serveConsole } from './console.js';

/**
 * The HTTP API (docs/http.md; `POST /events` and `GET /events/<id>` are the ComputeSDK client's calls).
 * Paths are matched segment by segment on the raw path, and each segment is then
 * percent-decoded: a sandbox id with `/` in it is written `%2F`.
 */

type Handler = (
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  params: string[],
) => Promise<void> | void;

interface Route {
  /** For metrics labels: the path with its parameters named. */
  name: string;
  methods: Partial<Record<'GET' | 'POST', Handler>>;
}

export interface MatchedRoute {
  name: string;
  /** undefined: the path exists but not with this method. */
  handler: Handler | undefined;
  allowed: string[];
  params: string[];
}

/** Matches a request to a route; undefined for an unknown path. */
export function matchRoute(method: string, rawPath: string): MatchedRoute | undefined {
  const { raw, decoded } = pathSegments(rawPath);
  const found = findRoute(raw, decoded);
  if (found === undefined) return undefined;
  const { route, params } = found;
  const allowed = Object.keys(route.methods);
  // HEAD is GET without the body (node:http drops it), except on streams, which never end.
  const isStream = route.name.endsWith('/stream') || route === routes.backendAiKernel;
  const effective = method === 'HEAD' && !isStream ? 'GET' : method;
  const handler = route.methods[effective as 'GET' | 'POST'];
  return { name: route.name, handler, allowed, params };
}

const routes = {
  health: { name: '/healthz', methods: { GET: health } },
  ready: { name: '/readyz', methods: { GET: ready } },
  metrics: { name: '/metrics', methods: { GET: metrics } },
  metricsStream: {
    name: '/metrics/stream',
    methods: {
      GET: async (host, req, res, url) => {
        const opened = await metricsStream(host, req, res, url);
        if (opened !== undefined) host.addMetricsReader(opened.stream, opened.wholeBroker);
      },
    },
  },
  sandboxes: { name: '/sandboxes', methods: { GET: listSandboxes } },
  console: { name: '/console', methods: { GET: serveConsole } },
  events: { name: '/events', methods: { POST: storeEvent } },
  patternStream: {
    name: '/events/stream',
    methods: { GET: (host, req, res, url) => patternStream(host, req, res, url) },
  },
  history: { name: '/events/:sandboxId', methods: { GET: history } },
  sandboxStream: {
    name: '/events/:sandboxId/stream',
    methods: { GET: (host, req, res, url, params) => sandboxStream(host, req, res, url, params[0]!) },
  },
  hopxMetrics: {
    name: '/v1/sandboxes/:sandboxId/metrics/stream',
    methods: { GET: (host, req, res, url, params) => hopxMetricsStream(host, req, res, url, params[0]!) },
  },
  backendAiKernel: {
    name: '/stream/kernel/_/events',
    methods: { GET: (host, req, res, url) => backendAiKernelStream(host, req, res, url) },
  },
} satisfies Record<string, Route>;

/**
 * Fixed words are compared with the raw segments and parameters taken from the decoded ones,
 * so a sandbox named `stream` still has a history at `/events/%73tream`.
 */
function findRoute(raw: string[], decoded: string[]): { route: Route; params: string[] } | undefined {
  // The seed systems' stream paths (seed-streams.ts), exactly as their clients write them.
  if (raw.length === 5 && raw[0] === 'v1' && raw[1] === 'sandboxes' && raw[3] === 'metrics' && raw[4] === 'stream') {
    if (raw[2] === '') return undefined;
    return { route: routes.hopxMetrics, params: [decoded[2]!] };
  }
  if (raw.length === 4 && raw.join('/') === 'stream/kernel/_/events')
    return { route: routes.backendAiKernel, params: [] };
  if (raw.length > 3) return undefined;
  const [first, second, third] = raw;
  const param = decoded[1] ?? '';
  if (third === undefined) {
    if (second === undefined) {
      if (first === 'healthz') return { route: routes.health, params: [] };
      if (first === 'readyz') return { route: routes.ready, params: [] };
      if (first === 'metrics') return { route: routes.metrics, params: [] };
      if (first === 'events') return { route: routes.events, params: [] };
      if (first === 'sandboxes') return { route: routes.sandboxes, params: [] };
      if (first === 'console') return { route: routes.console, params: [] };
      return undefined;
    }
    if (first === 'console') return { route: routes.console, params: [second] };
    if (first === 'metrics' && second === 'stream') return { route: routes.metricsStream, params: [] };
    if (first !== 'events' || second === '') return undefined;
    if (second === 'stream') return { route: routes.patternStream, params: [] };
    return { route: routes.history, params: [param] };
  }
  if (first === 'events' && third === 'stream' && second !== '')
    return { route: routes.sandboxStream, params: [param] };
  return undefined;
}

/** Splits a raw path into percent-decoded segments; `segments[i]` for `/a/b` is a, b. */
export function pathSegments(rawPath: string): { raw: string[]; decoded: string[] } {
  const raw = rawPath.split('/').slice(1);
  try {
    return { raw, decoded: raw.map((segment) => decodeURIComponent(segment)) };
  } catch {
    throw badRequest('BAD_PATH', 'the path is not valid percent-encoding');
  }
}

function health(_host: HttpHost, _req: IncomingMessage, res: ServerResponse): void {
  // Alive: the process answers. Whether it can serve is /readyz's question.
  sendJson(res, 200, '{"status":"ok"}');
}

const READY_PROBE_TIMEOUT_MS = 2_000;

async function ready(host: HttpHost, _req: IncomingMessage, res: ServerResponse): Promise<void> {
  const checks: Record<string, string> = {};
  checks.listening = host.listening() ? 'ok' : 'not listening';
  let timer: NodeJS.Timeout | undefined;
  try {
    // A real, cheap read: the store answers queries, not merely "was opened".
    await Promise.race([
      host.context.store.history({ workspaceId: 1, sandboxId: 'readyz-probe', limit: 1 }),
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${READY_PROBE_TIMEOUT_MS} ms`)),
          READY_PROBE_TIMEOUT_MS,
        );
      }),
    ]);
    // A shared engine says whether it is connected (and caught up) without a read.
    const readiness = host.context.store.readiness?.() ?? 'ready';
    checks.store = readiness === 'ready' ? 'ok' : readiness;
  } catch (error) {
    checks.store = error instanceof Error ? error.message : 'failed';
  } finally {
    clearTimeout(timer);
  }
  const isReady = Object.values(checks).every((value) => value === 'ok');
  if (isReady) {
    sendJson(res, 200, JSON.stringify({ status: 'ready', checks }));
  } else {
    sendJson(res, 503, JSON.stringify({ error: 'not ready', code: 'NOT_READY', checks }), { 'retry-after': '1' });
  }
}

async function metrics(host: HttpHost, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  await authenticateMetricsReader(host.context, host.apiKeys, host.metricsToken, req, url, true);
  sendText(res, 200, await host.metrics.text(), host.metrics.contentType);
}

/**
 * POST /events: `{"type", "data"}` with a sandbox token, stored and fanned out by the same
 * path as PUBLISH (so TCP subscribers see it, and the same rate limit holds). The sandbox is
 * the token's: the payload never names one (docs/http.md, "POST /events").
 */
async function storeEvent(host: HttpHost, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const { limits, publisher } = host.context;
  // A declared size over the limit is refused before anything else, unread.
  checkDeclaredLength(req, limits.maxEventBytes);
  const { principal } = await authenticateRequest(host.context, host.apiKeys, req, url, false);
  if (principal.sandboxId === undefined) {
    throw forbidden("POST /events needs a sandbox token: the event goes to the token's sandbox");
  }
  const target = resolveChannel(principal, principal.sandboxId);
  const body = await readBody(req, limits.maxEventBytes);
  const { type, data } = parsePublishPayload(body, limits.maxEventBytes);
  const { event } = await publisher.publish(principal, target, type, data);
  sendJson(
    res,
    201,
    `{"success":true,"data":{"eventId":"${formatEventId(event.id)}","sandboxId":${JSON.stringify(event.sandboxId)},` +
      `"type":${JSON.stringify(event.type)},"timestamp":${event.timestamp}}}`,
  );
}

/** A non-negative integer parameter; NaN when it is not one, undefined when absent or empty. */
function integerParam(url: URL, name: string): number | undefined {
  const text = url.searchParams.get(name);
  if (text === null || text === '') return undefined;
  if (!/^\d{1,16}$/.test(text)) return Number.NaN;
  return Number(text);
}

/**
 * GET /events/<sandboxId>?type=&since=&limit=&after=&newest=: the sandbox's retained events,
 * oldest first, as HISTORY. `since` is Unix ms (timestamp >= since), `limit` 1 to 1000
 * (default 100). `after=<id>` pages exactly; `newest=1` takes the newest `limit`.
 */
async function history(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  params: string[],
): Promise<void> {
  const { principal } = await authenticateRequest(host.context, host.apiKeys, req, url, false);
  const name = params[0]!;
  const target = resolveChannel(principal, name);
  const query = historyQuery(target);
  // Checked in this order, whatever the order of the parameters.
  const limit = integerParam(url, 'limit');
  if (limit !== undefined) query.limit = historyLimit(limit);
  const since = integerParam(url, 'since');
  if (since !== undefined) query.since = historySince(since);
  const type = url.searchParams.get('type');
  if (type !== null && type !== '') {
    try {
      query.type = validateEventType(type);
    } catch (error) {
      throw badRequest('INVALID_TYPE', (error as Error).message);
    }
  }
  const after = url.searchParams.get('after');
  if (after !== null && after !== '') query.afterId = eventIdArgument(after);
  const newest = url.searchParams.get('newest');
  if (newest === '1' || newest === 'true') query.newest = true;
  const reply = await historyPages(host.context.store, query);
  // The stored JSON lines are spliced in as they are: encoded once, when each event was made.
  // The body goes out as the client reads it (chunked), paced and bounded like a TCP client's
  // output: a 64 MB history is never held whole (docs/http.md, "History").
  const context = host.context;
  const { maxOutputBytes, closeGraceMs } = context.limits;
  let count = 0;
  res.writeHead(200, JSON_HEADERS);
  await writePacedReply(
    res,
    {
      outputLimit: maxOutputBytes,
      paceBytes: maxOutputBytes / 4,
      closeGraceMs,
      outputBudget: context.outputBudget,
      overflow: (pendingBytes, cause) => {
        recordOutputCut(context, 'response', cause, {
          transport: 'http',
          addr: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
          pendingBytes,
        });
        res.destroy();
      },
    },
    Buffer.from(`{"success":true,"data":{"sandboxId":${JSON.stringify(name)},"events":[`),
    reply.pages(),
    (page) => {
      // Events retention pruned after the count was taken are left out; `count` is what was sent.
      let text = '';
      for (const event of page) {
        if (event === undefined) continue;
        text += count === 0 ? event.json : `,${event.json}`;
        count += 1;
      }
      return Buffer.from(text);
    },
    () => Buffer.from(`],"count":${count}}}`),
  );
}

/**
 * GET /sandboxes: the sandboxes the credential may see (a workspace token or API key: its
 * workspace's; an admin token: every workspace's; a sandbox token: its own) that hold events
 * in the store, each with `lastEventId` (its newest id, a resume point), and the recently
 * active ones, with their event rate, last event and subscriber count (docs/http.md). A store
 * that can't list gives the active ones only, `lastEventId` null.
 */
export async function listSandboxes(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  const { principal } = await authenticateRequest(host.context, host.apiKeys, req, url, false);
  const sandboxes = await withStoredSandboxes(host, principal, host.metrics.activity.visibleSandboxes(principal));
  const own =
    principal.sandboxId !== undefined && mayAccess(principal, principal.workspaceId, principal.sandboxId)
      ? principal.sandboxId
      : null;
  sendJson(
    res,
    200,
    JSON.stringify({
      success: true,
      data: {
        credential: { role: principal.role, workspaceId: principal.workspaceId, sandboxId: own },
        sandboxes,
        count: sandboxes.length,
      },
    }),
  );
}

/** The activity rows, each with `lastEventId`, then the store's sandboxes they lack. */
async function withStoredSandboxes(
  host: HttpHost,
  principal: Principal,
  active: SandboxSummary[],
): Promise<(SandboxSummary & { lastEventId: string | null })[]> {
  const rows = active.map((row) => ({ ...row, lastEventId: null as string | null }));
  const store = host.context.store;
  if (store.listSandboxes === undefined) return rows;
  const byName = new Map(rows.map((row) => [row.sandboxId, row]));
  const listed = await store.listSandboxes(principal.role === 'admin' ? 'all' : principal.workspaceId);
  for (const sandbox of listed) {
    const name = visibleName(principal, sandbox);
    if (name === undefined) continue;
    const lastEventId = formatEventId(sandbox.lastId);
    const row = byName.get(name);
    if (row !== undefined) {
      row.lastEventId = lastEventId;
      continue;
    }
    rows.push({
      sandboxId: name,
      workspaceId: sandbox.workspaceId,
      subscribers: host.context.broker.subscriberCount(channelKey(sandbox.workspaceId, sandbox.sandboxId)),
      events_per_second: 0,
      events: 0,
      last_event: null,
      lastEventId,
    });
  }
  return rows;
}
