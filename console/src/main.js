import { h, render } from 'preact';
import { useCallback, useEffect, useMemo, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import {
  ApiError,
  api,
  forgetToken,
  formatBytes,
  formatDuration,
  localTime,
  segment,
  storedToken,
  storeToken,
} from './api.js';
import { LineChart } from './chart.js';
import { openStream } from './stream.js';

const html = htm.bind(h);

const VIEWS = [
  { id: 'overview', label: 'Overview' },
  { id: 'sandboxes', label: 'Sandboxes' },
  { id: 'tail', label: 'Live tail' },
  { id: 'history', label: 'History' },
  { id: 'publish', label: 'Publish' },
  { id: 'connections', label: 'Connections' },
];
const CHART_POINTS = 120;

/** `#token=<credential>` signs in; the fragment is never sent to the server, and is dropped at once. */
function takeTokenFromFragment() {
  const match = /^#token=(.+)$/.exec(location.hash);
  if (match === null) return undefined;
  history.replaceState(null, '', `${location.pathname}#overview`);
  return decodeURIComponent(match[1]);
}

function currentView() {
  const id = location.hash.slice(1);
  return VIEWS.some((view) => view.id === id) ? id : 'overview';
}

function App() {
  const [token, setToken] = useState(() => {
    const fromFragment = takeTokenFromFragment();
    if (fromFragment !== undefined) storeToken(fromFragment);
    return storedToken();
  });
  const [credential, setCredential] = useState(undefined);
  const [signInError, setSignInError] = useState('');
  const [view, setView] = useState(currentView);

  useEffect(() => {
    const onHash = () => {
      const fromFragment = takeTokenFromFragment();
      if (fromFragment !== undefined) {
        storeToken(fromFragment);
        setToken(fromFragment);
      }
      setView(currentView());
    };
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  useEffect(() => {
    if (token === '') return;
    let cancelled = false;
    api('/sandboxes', token).then(
      (data) => !cancelled && setCredential(data.credential),
      (error) => {
        if (cancelled) return;
        forgetToken();
        setToken('');
        setSignInError(error instanceof ApiError ? `${error.message} (${error.code})` : String(error));
      },
    );
    return () => {
      cancelled = true;
    };
  }, [token]);

  const signOut = useCallback(() => {
    forgetToken();
    setToken('');
    setCredential(undefined);
    setSignInError('');
  }, []);

  if (token === '')
    return html`<${SignIn} error=${signInError} onToken=${(t) => {
      storeToken(t);
      setToken(t);
    }} />`;
  if (credential === undefined) return html`<p class="loading" role="status">Signing in…</p>`;
  return html`<${Console} token=${token} credential=${credential} view=${view} onSignOut=${signOut} />`;
}

function SignIn({ error, onToken }) {
  const [value, setValue] = useState('');
  return html`<main class="signin">
    <h1>sandbox-events console</h1>
    <form
      onSubmit=${(e) => {
        e.preventDefault();
        if (value.trim() !== '') onToken(value.trim());
      }}
    >
      <label for="signin-token">Token or API key</label>
      <input
        id="signin-token"
        type="password"
        autocomplete="off"
        value=${value}
        onInput=${(e) => setValue(e.currentTarget.value)}
        placeholder="a workspace, admin or sandbox token"
      />
      <button type="submit">Sign in</button>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <p class="hint">
        The credential stays in this tab (sessionStorage) and goes to the daemon only in the Authorization header.
        <code>/console#token=…</code> signs in too.
      </p>
    </form>
  </main>`;
}

function describe(credential) {
  if (credential.role === 'admin') return `admin (workspace ${credential.workspaceId}, sees all)`;
  if (credential.role === 'sandbox') return `sandbox ${credential.sandboxId} (workspace ${credential.workspaceId})`;
  return `workspace ${credential.workspaceId}`;
}

/** The default live source: every sandbox the credential sees, or a sandbox token's own. */
function defaultSource(credential) {
  if (credential.role === 'sandbox') return { mode: 'sandbox', value: credential.sandboxId };
  return { mode: 'pattern', value: credential.role === 'admin' ? '{*' : '*' };
}

function streamUrl(source) {
  return source.mode === 'sandbox'
    ? `/events/${segment(source.value)}/stream`
    : `/events/stream?pattern=${encodeURIComponent(source.value)}`;
}

function useMetrics(token) {
  const [state, setState] = useState({ latest: undefined, history: [], status: 'connecting' });
  useEffect(() => {
    const stream = openStream('/metrics/stream', token, {
      onEvent(event) {
        if (event.type !== 'metrics') return;
        const snapshot = JSON.parse(event.data);
        setState((previous) => ({
          ...previous,
          latest: snapshot,
          history: [...previous.history, snapshot].slice(-CHART_POINTS),
        }));
      },
      onStatus: (status) => setState((previous) => ({ ...previous, status })),
    });
    return () => stream.stop();
  }, [token]);
  return state;
}

/**
 * Rows of a live stream: each event once (a resumed stream never repeats one, docs/http.md
 * "Resume"), gap notices as rows of their own, at most `cap` rows, newest first.
 */
function useLiveRows(token, source, cap, paused) {
  const [rows, setRows] = useState([]);
  // Each status names the stream it is of: until the stream of the current source reports, the
  // page says "connecting", never the previous stream's "open" (an event published meanwhile
  // is not in the new stream, which starts at its subscription).
  const [status, setStatus] = useState({ url: '', text: 'connecting' });
  const held = useRef([]);
  const pausedRef = useRef(paused);
  const capRef = useRef(cap);
  capRef.current = cap;
  const [heldCount, setHeldCount] = useState(0);

  const add = useCallback((newRows) => {
    setRows((previous) => [...newRows.reverse(), ...previous].slice(0, capRef.current));
  }, []);

  useEffect(() => {
    pausedRef.current = paused;
    if (!paused && held.current.length > 0) {
      add(held.current.splice(0));
      setHeldCount(0);
    }
  }, [paused, add]);

  useEffect(() => {
    setRows([]);
    held.current = [];
    setHeldCount(0);
    if (source.value === '') return undefined;
    let sequence = 0;
    const url = streamUrl(source);
    const stream = openStream(url, token, {
      onEvent(event) {
        let row;
        if (event.control) {
          if (event.type === 'close') {
            setStatus({ url, text: `server closed the stream (${JSON.parse(event.data).reason}); resuming` });
            return;
          }
          row = { key: `n${sequence++}`, notice: event.type, data: JSON.parse(event.data) };
        } else {
          const parsed = JSON.parse(event.data);
          row = { key: `e${parsed.workspaceId}:${parsed.sandboxId}:${parsed.id}`, event: parsed };
        }
        if (pausedRef.current) {
          held.current.push(row);
          setHeldCount(held.current.length);
        } else add([row]);
      },
      onStatus: (value, detail) => setStatus({ url, text: detail === undefined ? value : `${value}: ${detail}` }),
    });
    return () => stream.stop();
  }, [token, source.mode, source.value, add]);

  useEffect(() => setRows((previous) => previous.slice(0, cap)), [cap]);
  return { rows, status: status.url === streamUrl(source) ? status.text : 'connecting', heldCount };
}

function Console({ token, credential, view, onSignOut }) {
  const metrics = useMetrics(token);
  const feedSource = useMemo(() => defaultSource(credential), [credential]);
  const feed = useLiveRows(token, feedSource, 20, false);
  const [focus, setFocus] = useState({ sandboxId: '' });

  useEffect(() => {
    // Keys 1 to 6 open the views, unless the reader is typing.
    const onKey = (e) => {
      const target = e.target;
      if (e.altKey || e.ctrlKey || e.metaKey) return;
      if (target instanceof HTMLElement && target.closest('input, textarea, select')) return;
      const index = Number(e.key) - 1;
      if (Number.isInteger(index) && VIEWS[index] !== undefined) location.hash = VIEWS[index].id;
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, []);

  const open = (viewId, sandboxId) => {
    setFocus({ sandboxId });
    location.hash = viewId;
  };

  return html`<div class="shell">
    <header>
      <h1><a href="#overview">sandbox-events</a></h1>
      <nav aria-label="Views">
        <ul>
          ${VIEWS.map(
            (v, i) =>
              html`<li key=${v.id}>
                <a href=${`#${v.id}`} aria-current=${view === v.id ? 'page' : undefined} title=${`${v.label} (key ${i + 1})`}
                  >${v.label}</a
                >
              </li>`,
          )}
        </ul>
      </nav>
      <div class="who">
        <span data-testid="credential">${describe(credential)}</span>
        <button type="button" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <main>
      ${view === 'overview' && html`<${Overview} metrics=${metrics} feed=${feed} credential=${credential} />`}
      ${view === 'sandboxes' && html`<${Sandboxes} token=${token} onOpen=${open} />`}
      <${Tail} token=${token} credential=${credential} active=${view === 'tail'} focus=${focus} />
      ${view === 'history' && html`<${History} token=${token} credential=${credential} focus=${focus} />`}
      ${view === 'publish' && html`<${Publish} token=${token} credential=${credential} />`}
      ${view === 'connections' && html`<${Connections} metrics=${metrics} />`}
    </main>
  </div>`;
}

function Stat({ label, value, testid }) {
  return html`<div class="stat" data-testid=${testid}><dt>${label}</dt><dd>${value}</dd></div>`;
}

function Overview({ metrics, feed, credential }) {
  const { latest, history, status } = metrics;
  const own = latest?.workspaces ?? [];
  const workspaceRate = (snapshot) => (snapshot.workspaces ?? []).reduce((sum, w) => sum + w.published_per_second, 0);
  return html`<section aria-labelledby="overview-title">
    <h2 id="overview-title">Overview</h2>
    <p class="status" role="status">Metrics stream: ${status}${latest ? `, up ${formatDuration(latest.uptime_seconds)}` : ''}</p>
    ${
      latest &&
      html`<dl class="stats">
        <${Stat} label="Connections" testid="connections" value=${latest.connections.tcp + latest.connections.http} />
        <${Stat} label="Subscribers" testid="subscribers" value=${latest.subscriptions.tcp + latest.subscriptions.sse} />
        <${Stat}
          label=${credential.role === 'admin' ? 'Active sandboxes' : 'Your active sandboxes'}
          testid="sandboxes"
          value=${own.reduce((sum, w) => sum + w.active_sandboxes, 0)}
        />
        <${Stat} label="Watched sandboxes (all)" value=${latest.channels} />
        <${Stat} label="Slow-consumer disconnects" value=${latest.errors.slow_consumer_disconnects} />
        <${Stat} label="Store" value=${`${latest.store.kind}, ${formatBytes(latest.store.bytes)}`} />
        <${Stat} label="Engine" testid="engine" value=${latest.store.state === 'ready' ? 'ready' : 'not ready'} />
      </dl>`
    }
    <div class="charts">
      <${LineChart}
        title="Events per second (broker)"
        series=${[
          { label: 'published', values: history.map((s) => s.events.published_per_second), className: 's1' },
          { label: 'delivered', values: history.map((s) => s.events.delivered_per_second), className: 's2' },
        ]}
      />
      <${LineChart}
        title=${credential.role === 'admin' ? 'Published per second (all workspaces)' : 'Published per second (yours)'}
        series=${[{ label: 'published', values: history.map(workspaceRate), className: 's3' }]}
      />
    </div>
    <h3>Latest events</h3>
    <p class="status">Live: ${feed.status}</p>
    <${EventRows} rows=${feed.rows} label="Latest events" />
  </section>`;
}

function EventRows({ rows, label }) {
  const [open, setOpen] = useState(() => new Set());
  if (rows.length === 0) return html`<p class="empty">No events yet.</p>`;
  const toggle = (key) =>
    setOpen((previous) => {
      const next = new Set(previous);
      if (next.has(key)) next.delete(key);
      else next.add(key);
      return next;
    });
  return html`<ol class="events" aria-label=${label}>
    ${rows.map((row) =>
      row.event === undefined
        ? html`<li key=${row.key} class="notice" role="note" data-notice=${row.notice}>
            <strong>${row.notice}</strong> ${describeNotice(row)}
          </li>`
        : html`<li key=${row.key} class="event" data-id=${row.event.id} data-sandbox=${row.event.sandboxId}>
            <button type="button" aria-expanded=${open.has(row.key)} onClick=${() => toggle(row.key)}>
              <time datetime=${new Date(row.event.timestamp).toISOString()}>${localTime(row.event.timestamp)}</time>
              <span class="sandbox">${row.event.sandboxId}</span>
              <span class="type">${row.event.type}</span>
              <span class="id">${row.event.id}</span>
            </button>
            ${open.has(row.key) && html`<pre class="json">${JSON.stringify(row.event, null, 2)}</pre>`}
          </li>`,
    )}
  </ol>`;
}

function describeNotice(row) {
  const data = row.data;
  if (row.notice !== 'gap') return JSON.stringify(data);
  if (data.status === 'not_resumable')
    return 'a pattern stream cannot resume: events published while it was away are not shown (tail one sandbox to resume exactly).';
  if (data.status === 'trimmed')
    return `events after ${data.lastEventId} up to ${data.earliestId} are past retention and gone.`;
  return `resuming after ${data.lastEventId}: ${data.status} (newest ${data.lastId ?? 'none'}).`;
}

function Sandboxes({ token, onOpen }) {
  const [data, setData] = useState(undefined);
  const [error, setError] = useState('');
  const [query, setQuery] = useState('');
  useEffect(() => {
    let cancelled = false;
    const load = () =>
      api('/sandboxes', token).then(
        (reply) => {
          if (cancelled) return;
          setData(reply);
          setError('');
        },
        (e) => !cancelled && setError(e.message),
      );
    load();
    const timer = setInterval(load, 2000);
    return () => {
      cancelled = true;
      clearInterval(timer);
    };
  }, [token]);
  const rows = (data?.sandboxes ?? []).filter((s) => s.sandboxId.toLowerCase().includes(query.toLowerCase()));
  return html`<section aria-labelledby="sandboxes-title">
    <h2 id="sandboxes-title">Sandboxes</h2>
    <div class="controls">
      <label for="sandbox-search">Search</label>
      <input id="sandbox-search" type="search" value=${query} onInput=${(e) => setQuery(e.currentTarget.value)} />
      <span class="status" role="status">${rows.length} of ${data?.count ?? 0} active</span>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <div class="table-wrap">
      <table>
        <thead>
          <tr><th scope="col">Sandbox</th><th scope="col">Workspace</th><th scope="col">Subscribers</th><th scope="col">Events/s</th><th scope="col">Events</th><th scope="col">Last event</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr>
        </thead>
        <tbody>
          ${rows.map(
            (s) => html`<tr key=${s.sandboxId}>
              <th scope="row">${s.sandboxId}</th>
              <td>${s.workspaceId}</td>
              <td>${s.subscribers}</td>
              <td>${s.events_per_second}</td>
              <td>${s.events}</td>
              <td>${s.last_event ? html`<span class="type">${s.last_event.type}</span> <time>${localTime(s.last_event.timestamp)}</time>` : '—'}</td>
              <td class="actions">
                <button type="button" onClick=${() => onOpen('tail', s.sandboxId)} aria-label=${`Tail ${s.sandboxId}`}>Tail</button>
                <button type="button" onClick=${() => onOpen('history', s.sandboxId)} aria-label=${`History of ${s.sandboxId}`}>History</button>
              </td>
            </tr>`,
          )}
        </tbody>
      </table>
    </div>
    ${rows.length === 0 && html`<p class="empty">No active sandbox${query ? ' matches' : ''}.</p>`}
  </section>`;
}

function Tail({ token, credential, active, focus }) {
  const initial = defaultSource(credential);
  const [draft, setDraft] = useState(initial);
  const [source, setSource] = useState(initial);
  const [typeFilter, setTypeFilter] = useState('');
  const [cap, setCap] = useState(500);
  const [paused, setPaused] = useState(false);
  useEffect(() => {
    if (focus.sandboxId !== '') {
      const next = { mode: 'sandbox', value: focus.sandboxId };
      setDraft(next);
      setSource(next);
    }
  }, [focus]);
  const { rows, status, heldCount } = useLiveRows(token, source, cap, paused);
  const shown =
    typeFilter === '' ? rows : rows.filter((row) => row.event === undefined || row.event.type.includes(typeFilter));
  return html`<section aria-labelledby="tail-title" hidden=${!active}>
    <h2 id="tail-title">Live tail</h2>
    <form
      class="controls"
      onSubmit=${(e) => {
        e.preventDefault();
        setSource({ ...draft });
      }}
    >
      <label for="tail-mode">Source</label>
      <select id="tail-mode" value=${draft.mode} onChange=${(e) => setDraft({ ...draft, mode: e.currentTarget.value })}>
        <option value="pattern" disabled=${credential.role === 'sandbox'}>pattern</option>
        <option value="sandbox">sandbox</option>
      </select>
      <label for="tail-source">${draft.mode === 'pattern' ? 'Pattern' : 'Sandbox id'}</label>
      <input id="tail-source" value=${draft.value} onInput=${(e) => setDraft({ ...draft, value: e.currentTarget.value })} />
      <button type="submit">Watch</button>
      <label for="tail-type">Type filter</label>
      <input id="tail-type" value=${typeFilter} placeholder="e.g. execution." onInput=${(e) => setTypeFilter(e.currentTarget.value)} />
      <label for="tail-cap">Rows kept</label>
      <input id="tail-cap" type="number" min="10" max="10000" value=${cap} onChange=${(e) => setCap(Math.max(10, Number(e.currentTarget.value) || 500))} />
      <button type="button" aria-pressed=${paused} onClick=${() => setPaused(!paused)}>${paused ? `Resume (${heldCount} held)` : 'Pause'}</button>
    </form>
    <p class="status" role="status" data-testid="tail-status">${streamUrl(source).split('?')[0]}: ${status}</p>
    <${EventRows} rows=${shown} label="Live events" />
  </section>`;
}

function History({ token, credential, focus }) {
  const [form, setForm] = useState({
    sandboxId: focus.sandboxId || credential.sandboxId || '',
    type: '',
    after: '',
    since: '',
    newest: false,
    limit: 50,
  });
  const [result, setResult] = useState(undefined);
  const [error, setError] = useState('');
  const set = (field) => (e) =>
    setForm({
      ...form,
      [field]: e.currentTarget.type === 'checkbox' ? e.currentTarget.checked : e.currentTarget.value,
    });
  const load = async (query) => {
    const params = new URLSearchParams({ limit: String(query.limit) });
    if (query.type) params.set('type', query.type);
    if (query.after) params.set('after', query.after);
    if (query.since) params.set('since', String(new Date(query.since).getTime()));
    if (query.newest) params.set('newest', '1');
    try {
      setResult(await api(`/events/${segment(query.sandboxId)}?${params}`, token));
      setError('');
    } catch (e) {
      setError(e.message);
    }
  };
  const rows = (result?.events ?? []).map((event) => ({ key: event.id, event })).reverse();
  const last = result?.events.at(-1);
  return html`<section aria-labelledby="history-title">
    <h2 id="history-title">History</h2>
    <form
      class="controls"
      onSubmit=${(e) => {
        e.preventDefault();
        load(form);
      }}
    >
      <label for="history-sandbox">Sandbox id</label>
      <input id="history-sandbox" required value=${form.sandboxId} onInput=${set('sandboxId')} />
      <label for="history-type">Type</label>
      <input id="history-type" value=${form.type} onInput=${set('type')} />
      <label for="history-after">After id</label>
      <input id="history-after" value=${form.after} placeholder="1732361234567-0" onInput=${set('after')} />
      <label for="history-since">Since (local time)</label>
      <input id="history-since" type="datetime-local" step="1" value=${form.since} onInput=${set('since')} />
      <label for="history-limit">Limit</label>
      <input id="history-limit" type="number" min="1" max="1000" value=${form.limit} onInput=${set('limit')} />
      <label class="check"><input type="checkbox" checked=${form.newest} onChange=${set('newest')} /> Newest</label>
      <button type="submit">Load</button>
      <button
        type="button"
        disabled=${last === undefined}
        onClick=${() => {
          const next = { ...form, after: last.id, newest: false };
          setForm(next);
          load(next);
        }}
      >
        Next page
      </button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${result && html`<p class="status" role="status">${result.count} events of ${result.sandboxId}, newest first</p>`}
    ${result && html`<${EventRows} rows=${rows} label="History" />`}
  </section>`;
}

function Publish({ token, credential }) {
  const [form, setForm] = useState({
    token: credential.role === 'sandbox' ? token : '',
    type: 'console.test',
    data: '{\n  "hello": "world"\n}',
  });
  const [result, setResult] = useState(undefined);
  const [error, setError] = useState('');
  const set = (field) => (e) => setForm({ ...form, [field]: e.currentTarget.value });
  return html`<section aria-labelledby="publish-title">
    <h2 id="publish-title">Publish</h2>
    <p class="hint">POST /events stores an event in the sandbox of a <strong>sandbox token</strong> and delivers it to every subscriber.</p>
    <form
      class="stacked"
      onSubmit=${async (e) => {
        e.preventDefault();
        let data;
        try {
          data = form.data.trim() === '' ? undefined : JSON.parse(form.data);
        } catch (parseError) {
          setError(`data is not JSON: ${parseError.message}`);
          return;
        }
        try {
          setResult(
            await api('/events', form.token, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ type: form.type, data }),
            }),
          );
          setError('');
        } catch (publishError) {
          setError(publishError.message);
        }
      }}
    >
      <label for="publish-token">Sandbox token</label>
      <input id="publish-token" type="password" autocomplete="off" required value=${form.token} onInput=${set('token')} />
      <label for="publish-type">Type</label>
      <input id="publish-type" required value=${form.type} onInput=${set('type')} />
      <label for="publish-data">Data (a JSON object)</label>
      <textarea id="publish-data" rows="6" value=${form.data} onInput=${set('data')}></textarea>
      <button type="submit">Publish</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${result && html`<p class="ok" role="status">Published ${result.type} to ${result.sandboxId} as ${result.eventId} at ${localTime(result.timestamp)}</p>`}
  </section>`;
}

function Connections({ metrics }) {
  const { latest, history } = metrics;
  if (latest === undefined)
    return html`<section><h2>Connections</h2><p role="status">Waiting for metrics…</p></section>`;
  const slowRecent =
    history.length > 1 ? latest.errors.slow_consumer_disconnects - history[0].errors.slow_consumer_disconnects : 0;
  return html`<section aria-labelledby="connections-title">
    <h2 id="connections-title">Connections</h2>
    <div class="table-wrap">
      <table>
        <caption>Open connections by transport</caption>
        <thead><tr><th scope="col">Transport</th><th scope="col">Connections</th><th scope="col">Subscriptions</th></tr></thead>
        <tbody>
          <tr><th scope="row">TCP (Redis protocol)</th><td data-testid="tcp">${latest.connections.tcp}</td><td>${latest.subscriptions.tcp}</td></tr>
          <tr><th scope="row">HTTP (all, streams included)</th><td>${latest.connections.http}</td><td>—</td></tr>
          <tr><th scope="row">Server-Sent Events streams</th><td>${latest.connections.sse}</td><td>${latest.subscriptions.sse}</td></tr>
        </tbody>
      </table>
    </div>
    <dl class="stats">
      <${Stat} label="Slow-consumer disconnects (since start)" value=${latest.errors.slow_consumer_disconnects} />
      <${Stat} label=${`Slow-consumer disconnects (last ${history.length} s)`} value=${slowRecent} />
      <${Stat} label="Auth failures" value=${latest.errors.auth_failures} />
      <${Stat} label="Rate limited" value=${latest.errors.rate_limited} />
      <${Stat} label="Protocol errors" value=${latest.errors.protocol_errors} />
      <${Stat} label="Cross-origin requests refused" value=${latest.errors.cors_refused ?? 0} />
    </dl>
    ${
      (latest.errors.cors_refused ?? 0) > 0 &&
      html`<p class="notice" role="status" data-testid="cors-refused">
      ${'A page on another origin called this daemon and its browser was refused: its streams fail with no detail (an EventSource only fires '}<code>error</code>${' and closes). Start the daemon with '}<code>--http-cors-origin</code>${' set to that page\'s origin (the daemon\'s log names it, "cross-origin request refused") to let it read events.'}
    </p>`
    }
    <${LineChart}
      title="Connections"
      series=${[
        { label: 'tcp', values: history.map((s) => s.connections.tcp), className: 's1' },
        { label: 'sse', values: history.map((s) => s.connections.sse), className: 's2' },
      ]}
    />
  </section>`;
}

render(html`<${App} />`, document.getElementById('app'));
