import type { IncomingMessage, ServerResponse } from 'node:http';
import type { StoredEvent } from '../event/event.js';
import { TypeFilter } from '../session/type-filter.js';
import type { HttpHost } from './host.js';
import { eventDataText, sseFrameOf } from './sse.js';
import { patternStream, sandboxStream } from './streams.js';

/**
 * The stream endpoints of two seed systems, so that their own client code works unchanged
 * (docs/http.md, "Seed systems' streams"). Each is one of the ordinary streams with a type
 * filter and its own `data:`; credentials, resume and the end of a stream are as there.
 */

/** Each event's frame, built once per event and form. */
function cachedFrame(build: (event: StoredEvent) => Buffer): (event: StoredEvent) => Buffer {
  const frames = new WeakMap<StoredEvent, Buffer>();
  return (event) => {
    let frame = frames.get(event);
    if (frame === undefined) {
      frame = build(event);
      frames.set(event, frame);
    }
    return frame;
  };
}

/** hopx: `data:` is the metrics object itself, the event's `data`. */
const hopxFrame = cachedFrame((event) => sseFrameOf(event, eventDataText(event)));

/**
 * GET /v1/sandboxes/<id>/metrics/stream: the sandbox's events of the metrics type
 * (`--hopx-metrics-type`, default `sandbox.metrics`), `data:` the metrics object, with `id:`
 * and `event:`, resumable by Last-Event-ID as /events/<id>/stream.
 */
export function hopxMetricsStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  sandboxId: string,
): Promise<void> {
  const types = TypeFilter.from([host.settings.metricsType]);
  return sandboxStream(host, req, res, url, sandboxId, { types, frame: hopxFrame });
}

/** Backend.AI's kernel lifecycle types; both spellings its docs use (docs/http.md). */
const KERNEL_TYPES = ['kernel_*', 'kernel-*'];

/** `data:` of a kernel event: Backend.AI's fields, from the event and its data. */
function kernelData(event: StoredEvent): Record<string, unknown> {
  const data = JSON.parse(eventDataText(event)) as Record<string, unknown>;
  return {
    sessionId: data.sessionId ?? event.sandboxId,
    ownerAccessKey: data.ownerAccessKey ?? null,
    reason: data.reason ?? '',
    result: data.result ?? null,
  };
}

/**
 * GET /stream/kernel/_/events?sessionId=<id|*>&group=<name|*>: kernel lifecycle events, `event:`
 * the type and `data:` `{sessionId, ownerAccessKey, reason, result}`. `sessionId=*` (or none)
 * is every sandbox of the credential's workspace (a pattern stream); an id is that sandbox's
 * stream. `group` other than `*` keeps the events whose data names that `group`.
 */
export function backendAiKernelStream(
  host: HttpHost,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
): Promise<void> {
  const sessionId = url.searchParams.get('sessionId') ?? '*';
  const group = url.searchParams.get('group') ?? '*';
  const types = TypeFilter.from(KERNEL_TYPES);
  const frame = cachedFrame((event) => {
    if (group !== '*') {
      const data = JSON.parse(eventDataText(event)) as Record<string, unknown>;
      // Another group's event has no frame: nothing is written for it.
      if (data.group !== group) return Buffer.alloc(0);
    }
    return sseFrameOf(event, JSON.stringify(kernelData(event)));
  });
  if (sessionId === '*') return patternStream(host, req, res, url, '*', { types, frame });
  return sandboxStream(host, req, res, url, sessionId, { types, frame });
}
