/**
 * Server-Sent Events read with fetch(), not EventSource: the credential goes in the
 * Authorization header (never in a URL), every event type arrives (EventSource only hands
 * out the names it was told to listen for), and the resume point is the Last-Event-ID header,
 * as EventSource sends it. Parsing follows WHATWG HTML, "Server-sent events",
 * "Interpreting an event stream".
 */

const LINE = /\r\n|\r|\n/;

/**
 * Opens `url` and keeps it open: after the server ends it (a daemon restart sends
 * `event: close`) or the network fails, it reconnects after the server's `retry:` delay,
 * resuming after the last event id seen.
 *
 * @param {string} url
 * @param {string} token
 * @param {{onEvent: (event: {type: string, data: string, id: string | undefined, control: boolean}) => void,
 *          onStatus?: (status: 'connecting' | 'open' | 'reconnecting' | 'failed', detail?: string) => void,
 *          lastEventId?: string}} handlers
 */
export function openStream(url, token, handlers) {
  const { onEvent, onStatus = () => {} } = handlers;
  let stopped = false;
  let controller;
  let retryMs = 2000;
  let lastEventId = handlers.lastEventId;
  let wake;

  async function readOnce() {
    controller = new AbortController();
    const headers = { authorization: `Bearer ${token}`, accept: 'text/event-stream' };
    if (lastEventId !== undefined && lastEventId !== '') headers['last-event-id'] = lastEventId;
    const response = await fetch(url, { headers, signal: controller.signal, cache: 'no-store' });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      // A refused credential or request won't get better by retrying.
      const final = response.status >= 400 && response.status < 500;
      onStatus(final ? 'failed' : 'reconnecting', body.error ?? `HTTP ${response.status}`);
      return final;
    }
    onStatus('open');
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let data = [];
    let type = '';
    let hadId = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value;
      for (;;) {
        const match = LINE.exec(buffer);
        if (match === null) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === '') {
          if (data.length > 0) {
            // Events carry `id:`; the server's own notices (gap, close) never do.
            onEvent({ type: type || 'message', data: data.join('\n'), id: lastEventId, control: !hadId });
          }
          data = [];
          type = '';
          hadId = false;
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        let fieldValue = colon === -1 ? '' : line.slice(colon + 1);
        if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
        if (field === 'data') data.push(fieldValue);
        else if (field === 'event') type = fieldValue;
        else if (field === 'id' && !fieldValue.includes('\0')) {
          lastEventId = fieldValue;
          hadId = true;
        } else if (field === 'retry' && /^\d+$/.test(fieldValue)) retryMs = Number(fieldValue);
      }
    }
  }

  (async () => {
    onStatus('connecting');
    while (!stopped) {
      let final = false;
      try {
        final = await readOnce();
      } catch (error) {
        if (stopped) return;
        onStatus('reconnecting', error instanceof Error ? error.message : String(error));
      }
      if (stopped || final) return;
      onStatus('reconnecting');
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, retryMs);
      });
    }
  })();

  return {
    stop() {
      stopped = true;
      controller?.abort();
      wake?.();
    },
  };
}
