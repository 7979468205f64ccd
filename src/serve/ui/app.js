/*
 * torrent-actors web UI. Plain JavaScript, no framework, no build step.
 *
 * Structure of this file, top to bottom:
 *   1. Helpers      – DOM builder `h()` (text only through textContent, never innerHTML),
 *                      formatting of sizes, rates, durations.
 *   2. State        – the one `state` object: list data, sort/filter, open detail view.
 *   3. API          – `api()` wraps fetch: token header, JSON body, error → toast.
 *   4. SSE          – EventSource on /api/events (list) and /api/torrents/{id}/events
 *                      (open detail view); status badge; reconnect after a hard close.
 *   5. List         – filtering, sorting, keyed row rendering (table on wide screens,
 *                      cards on phones, via CSS only).
 *   6. Detail       – open/close, actions, one render function per tab
 *                      (overview, files, peers, trackers, pieces, speed, actors).
 *   7. Dialogs      – add (file / magnet / path, inspect), remove, settings, login.
 *   8. Theme, boot  – theme toggle in localStorage, auth check, wiring of events.
 *
 * Data is never polled with a timer: the list and the detail view are driven by the
 * server's one-second SSE pushes. The only one-off GETs happen when something opens.
 */
'use strict';

/* ------------------------------------------------------------------ 1. Helpers */

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Builds an element. `attrs` keys: class, text, dataset (object), on<event>, or any attribute. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Sets textContent only when it changed (keeps the DOM calm at one update per second). */
function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

function formatBytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return '–';
  let v = Math.max(0, Number(n));
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  if (i === 0) return `${Math.round(v)} B`;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[i]}`;
}

function formatRate(n) {
  return `${formatBytes(n)}/s`;
}

/** Progress 0..1 as "42.1%"; exactly "100%" only when complete (never rounds up to it). */
function formatProgress(p) {
  const v = Math.max(0, Math.min(1, Number(p) || 0));
  if (v >= 1) return '100%';
  return `${(Math.floor(v * 1000) / 10).toFixed(1)}%`;
}

/** Seconds as "3m 20s", "2h 5m", "4d 3h"; null → "∞". */
function formatDuration(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return '∞';
  let s = Math.max(0, Math.round(secs));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d > 0) return hr ? `${d}d ${hr}h` : `${d}d`;
  if (hr > 0) return m ? `${hr}h ${m}m` : `${hr}h`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

function formatRatio(r) {
  if (r === null || r === undefined || !isFinite(r)) return '∞';
  return Number(r).toFixed(2);
}

/** Micro-seconds in a readable unit. */
function formatMicros(us) {
  if (us === null || us === undefined || !isFinite(us)) return '–';
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (us >= 1e3) return `${(us / 1e3).toFixed(us >= 1e4 ? 0 : 1)} ms`;
  return `${us.toFixed(us >= 10 ? 0 : 1)} µs`;
}

function formatDate(unixSecs) {
  if (!unixSecs) return '–';
  return new Date(unixSecs * 1000).toLocaleString();
}

const STATE_NAMES = {
  metadata: 'Metadata',
  awaiting_files: 'Choose files',
  checking: 'Checking',
  downloading: 'Downloading',
  seeding: 'Seeding',
  paused: 'Paused',
  finished: 'Finished',
  queued: 'Queued',
  error: 'Error',
};
const stateName = (s) => STATE_NAMES[s] || String(s);

/** A CSS custom property of the current theme (used by the canvases). */
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/* -------------------------------------------------------------------- 2. State */

const state = {
  token: '',
  torrents: [],                 // last [TorrentSummary] from the SSE list stream
  rows: new Map(),              // id → <tr> of the list
  picked: new Set(),            // ids ticked for a bulk action
  sort: { key: 'added', dir: 'desc' },
  peerSort: { key: 'addr', dir: 'asc' },
  filter: { text: '', state: '', label: '' },
  listSource: null,             // EventSource of /api/events
  listOk: false,
  detail: null,                 // see openDetail()
  add: { mode: 'file', base64: null, inspected: null },
  removeTarget: null,
  toastSeq: 0,
};

/* ---------------------------------------------------------------------- 3. API */

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * fetch() wrapper. State-changing methods send the token and a JSON content type.
 * Resolves with the parsed JSON body (or null for 204); rejects with ApiError.
 */
async function api(method, path, body, retried) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin' };
  if (method !== 'GET' && method !== 'HEAD') {
    headers['X-TA-Token'] = state.token;
    headers['Content-Type'] = 'application/json';
    // POST/PUT always carry a JSON body ("{}" when there is nothing to say); DELETE none.
    if (method !== 'DELETE' || body !== undefined) init.body = JSON.stringify(body === undefined ? {} : body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `network error: ${e.message}`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!res.ok) {
    // The token is per server run: after a restart, fetch the new one and try once more.
    if (res.status === 403 && init.headers['X-TA-Token'] !== undefined && !retried && await refreshToken()) {
      return api(method, path, body, true);
    }
    const err = data && data.error ? data.error : {};
    const e = new ApiError(res.status, err.code || `http_${res.status}`, err.message || `${res.status} ${res.statusText}`);
    if (res.status === 401 && path !== '/api/login') showLogin();
    throw e;
  }
  return data;
}

/** Re-reads the token from GET /api/token; true when it changed. */
async function refreshToken() {
  try {
    const res = await fetch('/api/token', { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (!res.ok) return false;
    const { token } = await res.json();
    if (!token || token === state.token) return false;
    state.token = token;
    return true;
  } catch (_) {
    return false;
  }
}

/** Runs an API call and shows a toast on failure; resolves to undefined then. */
async function tryApi(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (e) {
    showError(e);
    return undefined;
  }
}

function showError(e) {
  const code = e && e.code ? `${e.code}: ` : '';
  toast(`${code}${e && e.message ? e.message : String(e)}`, 'error');
}

/** Shows a transient message; errors stay longer and can be dismissed. */
function toast(message, kind = 'info') {
  const box = $('#toasts');
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { text: message }),
    h('button', { type: 'button', class: 'icon', 'aria-label': 'Dismiss', text: '✕', onclick: () => t.remove() }));
  box.append(t);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 3500);
}

const enc = encodeURIComponent;

/* ---------------------------------------------------------------------- 4. SSE */

/**
 * Opens an EventSource. EventSource reconnects by itself after network errors; when
 * the server answers with an error status it gives up (readyState CLOSED), so then
 * we open a new one after a growing delay.
 */
function openStream(url, handlers, onStatus) {
  let es = null;
  let delay = 1000;
  let stopped = false;
  let retryTimer = null;
  const connect = () => {
    es = new EventSource(url, { withCredentials: true });
    es.onopen = () => { delay = 1000; onStatus(true); };
    es.onerror = () => {
      onStatus(false);
      if (es.readyState === EventSource.CLOSED && !stopped) {
        retryTimer = setTimeout(connect, delay);
        delay = Math.min(delay * 2, 30000);
      }
    };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch (_) { return; }
        fn(data);
      });
    }
  };
  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(retryTimer);
      if (es) es.close();
    },
  };
}

function startListStream() {
  if (state.listSource) return;
  state.listSource = openStream('/api/events', {
    torrents: (data) => {
      state.listOk = true;
      updateSseBadge();
      setText($('#total-down'), formatRate(data.download_rate));
      setText($('#total-up'), formatRate(data.upload_rate));
      state.torrents = Array.isArray(data.torrents) ? data.torrents : [];
      renderList();
    },
  }, (ok) => { state.listOk = ok; updateSseBadge(); });
}

function updateSseBadge() {
  const d = state.detail;
  const ok = state.listOk && (!d || d.streamOk);
  const badge = $('#sse-status');
  const status = ok ? 'connected' : 'disconnected';
  document.body.dataset.sse = status;
  if (badge.dataset.status !== status) {
    badge.dataset.status = status;
    badge.textContent = ok ? 'live' : 'disconnected';
    badge.title = ok ? 'Live updates connected' : 'Live updates lost; reconnecting…';
  }
}

/* --------------------------------------------------------------------- 5. List */

const SORT_KEYS = {
  name: (t) => (t.name || '').toLowerCase(),
  size: (t) => t.total_bytes,
  progress: (t) => t.progress,
  state: (t) => t.state,
  down: (t) => t.download_rate,
  up: (t) => t.upload_rate,
  peers: (t) => t.peers,
  ratio: (t) => t.ratio,
  eta: (t) => (t.eta_secs === null || t.eta_secs === undefined ? Infinity : t.eta_secs),
  label: (t) => (t.labels || []).join(',').toLowerCase(),
  added: (t) => t.added_at,
};

function compareTorrents(a, b) {
  const key = SORT_KEYS[state.sort.key] || SORT_KEYS.added;
  const va = key(a);
  const vb = key(b);
  let c = 0;
  if (typeof va === 'string' || typeof vb === 'string') c = String(va).localeCompare(String(vb));
  else c = (va > vb) - (va < vb);
  if (c === 0) c = (a.name || '').localeCompare(b.name || '') || a.id.localeCompare(b.id);
  return state.sort.dir === 'asc' ? c : -c;
}

function matchesFilter(t) {
  const f = state.filter;
  if (f.text && !(t.name || '').toLowerCase().includes(f.text.toLowerCase())) return false;
  if (f.state && t.state !== f.state) return false;
  if (f.label === '\u0000none') return !(t.labels && t.labels.length);
  if (f.label && !(t.labels || []).includes(f.label)) return false;
  return true;
}

/** Creates one list row; its cells are filled by updateRow(). */
function createRow(id) {
  const bar = h('span', { class: 'bar-fill' });
  const pick = h('input', { type: 'checkbox', class: 'row-pick', 'aria-label': 'Select for a bulk action' });
  pick.addEventListener('click', (e) => e.stopPropagation());
  pick.addEventListener('change', () => {
    if (pick.checked) state.picked.add(id); else state.picked.delete(id);
    renderBulkBar();
  });
  const tr = h('tr', { dataset: { id }, tabindex: '0', 'aria-label': 'Open details' },
    h('td', { class: 'check' }, pick),
    h('td', { class: 'col-name', 'data-label': 'Name' }, h('span', { class: 'name' }), h('span', { class: 'row-error' })),
    h('td', { class: 'num size', 'data-label': 'Size' }),
    h('td', { class: 'col-progress', 'data-label': 'Progress' },
      h('span', { class: 'bar' }, bar), h('span', { class: 'progress-text' })),
    h('td', { 'data-label': 'State' }, h('span', { class: 'state' })),
    h('td', { class: 'num down', 'data-label': 'Down' }),
    h('td', { class: 'num up', 'data-label': 'Up' }),
    h('td', { class: 'num peers', 'data-label': 'Peers' }),
    h('td', { class: 'num ratio', 'data-label': 'Ratio' }),
    h('td', { class: 'num eta', 'data-label': 'ETA' }),
    h('td', { class: 'labels', 'data-label': 'Labels' }));
  // A torrent waiting for its file choice opens on the Files tab.
  const open = () => openDetail(id, tr.dataset.state === 'awaiting_files' ? 'files' : undefined);
  tr.addEventListener('click', open);
  tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); open(); } });
  return tr;
}

/** The bulk bar: shown while torrents are picked, with their count. */
function renderBulkBar() {
  for (const id of Array.from(state.picked)) if (!state.rows.has(id)) state.picked.delete(id);
  const n = state.picked.size;
  $('#bulk-bar').hidden = n === 0;
  setText($('#bulk-count'), `${n} selected`);
  for (const [id, tr] of state.rows) {
    const box = $('.row-pick', tr);
    if (box && box.checked !== state.picked.has(id)) box.checked = state.picked.has(id);
  }
  const shown = Array.from(state.rows.values()).filter((tr) => tr.parentNode);
  const all = $('#pick-all');
  all.checked = shown.length > 0 && shown.every((tr) => state.picked.has(tr.dataset.id));
}

/** Pause, resume or remove every picked torrent, one request each. */
async function bulkAction(what) {
  const ids = Array.from(state.picked);
  if (!ids.length) return;
  if (what === 'remove' && !window.confirm(`Remove ${ids.length} torrent(s)? Their files stay on disk.`)) return;
  let ok = 0;
  for (const id of ids) {
    const res = what === 'remove'
      ? await tryApi('DELETE', `/api/torrents/${enc(id)}`)
      : await tryApi('POST', `/api/torrents/${enc(id)}/${what}`);
    if (res !== undefined) ok++;
  }
  if (what === 'remove') state.picked.clear();
  const verb = { pause: 'Paused', resume: 'Resumed', remove: 'Removed' }[what];
  toast(`${verb} ${ok} of ${ids.length}.`);
  renderBulkBar();
}

function updateRow(tr, t) {
  setText($('.name', tr), t.name || t.info_hash);
  tr.title = t.name || t.info_hash;
  setText($('.row-error', tr), t.error ? t.error : '');
  setText($('.size', tr), t.total_bytes ? formatBytes(t.total_bytes) : '–');
  $('.bar-fill', tr).style.width = `${Math.max(0, Math.min(1, t.progress || 0)) * 100}%`;
  setText($('.progress-text', tr), formatProgress(t.progress));
  const st = $('.state', tr);
  setText(st, stateName(t.state));
  st.dataset.state = t.state;
  setText($('.down', tr), formatRate(t.download_rate));
  setText($('.up', tr), formatRate(t.upload_rate));
  setText($('.peers', tr), t.peers);
  setText($('.ratio', tr), formatRatio(t.ratio));
  // An ETA only means something while bytes are coming.
  setText($('.eta', tr), t.state === 'downloading' ? formatDuration(t.eta_secs) : '–');
  const labelsCell = $('.labels', tr);
  const joined = (t.labels || []).join('\u0000');
  if (labelsCell.dataset.key !== joined) {
    labelsCell.dataset.key = joined;
    labelsCell.replaceChildren(...(t.labels || []).map((l) => h('span', { class: 'tag', text: l })));
  }
  tr.classList.toggle('selected', !!(state.detail && state.detail.id === t.id));
  tr.dataset.state = t.state;
}

/** Re-renders the list: keyed rows are reused, reordered, or dropped. */
function renderList() {
  const tbody = $('#torrent-rows');
  const seen = new Set();
  const visible = state.torrents.filter(matchesFilter).sort(compareTorrents);
  for (const t of state.torrents) seen.add(t.id);
  for (const [id, tr] of state.rows) {
    if (!seen.has(id)) { tr.remove(); state.rows.delete(id); state.picked.delete(id); }
  }
  const visibleIds = new Set(visible.map((t) => t.id));
  for (const [id, tr] of state.rows) {
    if (!visibleIds.has(id) && tr.parentNode) tr.remove();
  }
  let prev = null;
  for (const t of visible) {
    let tr = state.rows.get(t.id);
    if (!tr) { tr = createRow(t.id); state.rows.set(t.id, tr); }
    updateRow(tr, t);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  $('#list-empty').hidden = state.torrents.length !== 0;
  $('#list-filtered-empty').hidden = !(state.torrents.length && !visible.length);
  renderChips();
  renderLabelFilter();
  renderSortHeaders();
}

const CHIP_STATES = ['', 'downloading', 'seeding', 'paused', 'queued', 'finished', 'checking', 'metadata', 'awaiting_files', 'error'];

function renderChips() {
  const box = $('#state-chips');
  const counts = {};
  for (const t of state.torrents) counts[t.state] = (counts[t.state] || 0) + 1;
  if (!box.childElementCount) {
    for (const s of CHIP_STATES) {
      box.append(h('button', {
        type: 'button', class: 'chip', dataset: { state: s },
        onclick: () => { state.filter.state = s; renderList(); },
      }, h('span', { class: 'chip-name', text: s ? stateName(s) : 'All' }), ' ', h('span', { class: 'count' })));
    }
  }
  for (const chip of box.children) {
    const s = chip.dataset.state;
    const n = s ? counts[s] || 0 : state.torrents.length;
    setText($('.count', chip), n);
    chip.classList.toggle('active', state.filter.state === s);
    chip.setAttribute('aria-pressed', String(state.filter.state === s));
    // Hide empty rare states to keep the bar short, but never the active one.
    chip.hidden = !!s && n === 0 && state.filter.state !== s && !['downloading', 'seeding', 'paused'].includes(s);
  }
}

function renderLabelFilter() {
  const sel = $('#label-filter');
  const labels = new Set();
  for (const t of state.torrents) for (const l of t.labels || []) labels.add(l);
  const wanted = ['', '\u0000none', ...Array.from(labels).sort()];
  if (state.filter.label && !wanted.includes(state.filter.label)) wanted.push(state.filter.label);
  const have = Array.from(sel.options).map((o) => o.value);
  if (have.join('\u0001') === wanted.join('\u0001')) return;
  sel.replaceChildren(...wanted.map((v) => h('option', {
    value: v, text: v === '' ? 'All labels' : v === '\u0000none' ? '(no label)' : v,
  })));
  sel.value = state.filter.label;
}

function renderSortHeaders() {
  for (const th of $$('#torrent-list th[data-sort]')) {
    const on = th.dataset.sort === state.sort.key;
    th.classList.toggle('sorted', on);
    th.dataset.dir = on ? state.sort.dir : '';
    th.setAttribute('aria-sort', on ? (state.sort.dir === 'asc' ? 'ascending' : 'descending') : 'none');
  }
}

function onSortClick(key) {
  if (state.sort.key === key) state.sort.dir = state.sort.dir === 'asc' ? 'desc' : 'asc';
  else state.sort = { key, dir: ['name', 'state', 'label', 'eta'].includes(key) ? 'asc' : 'desc' };
  renderList();
}

/* ------------------------------------------------------------------- 6. Detail */

const TABS = ['overview', 'files', 'peers', 'trackers', 'pieces', 'speed', 'actors'];
const HISTORY_SECS = 600;

/**
 * Opens the detail view for one torrent. state.detail holds:
 *   id, tab, stream, streamOk, torrent, peers, pieces, trackers, metrics,
 *   history [RateSample], prevMetrics {t, actors}, rates {actor → {msgs, busy, messages}},
 *   files [FileInfo], filesDirty, filesFetchedAt, expanded Set(actor)
 */
async function openDetail(id, tab) {
  if (state.detail && state.detail.id === id) {
    if (tab) selectTab(tab);
    return;
  }
  closeDetail(true);
  const d = {
    id, tab: tab || 'overview', stream: null, streamOk: true,
    torrent: state.torrents.find((t) => t.id === id) || null,
    peers: [], pieces: null, trackers: [], metrics: null, graph: null, graphLoading: false,
    history: [], prevMetrics: null, rates: {}, files: null, filesDirty: false,
    filesFetchedAt: 0, filesKey: '', expanded: new Set(), limitsDirty: false,
  };
  state.detail = d;
  $('#detail').hidden = false;
  document.body.classList.add('detail-open');
  resetDetailForms();
  selectTab(d.tab);
  renderDetail();
  for (const [tid, tr] of state.rows) tr.classList.toggle('selected', tid === id);

  // One-off initial load so the view is filled before the first push arrives.
  const [torrent, history] = await Promise.all([
    tryApi('GET', `/api/torrents/${enc(id)}`),
    api('GET', `/api/torrents/${enc(id)}/history`).catch(() => []),
  ]);
  if (state.detail !== d) return;
  if (!torrent) { closeDetail(); return; }
  d.torrent = torrent;
  d.history = (history || []).slice(-HISTORY_SECS);
  renderDetail();

  d.stream = openStream(`/api/torrents/${enc(id)}/events`, {
    detail: (data) => onDetailEvent(d, data),
    removed: () => {
      if (state.detail !== d) return;
      toast(`“${d.torrent ? d.torrent.name : id}” was removed.`);
      closeDetail();
    },
  }, (ok) => { d.streamOk = ok; updateSseBadge(); });
}

function closeDetail(replacing) {
  const d = state.detail;
  if (!d) return;
  if (d.stream) d.stream.close();
  state.detail = null;
  $('#detail').hidden = true;
  document.body.classList.remove('detail-open');
  for (const tr of state.rows.values()) tr.classList.remove('selected');
  if (!replacing && location.hash) history.replaceState(null, '', location.pathname + location.search);
  updateSseBadge();
}

function onDetailEvent(d, data) {
  if (state.detail !== d) return;
  d.streamOk = true;
  updateSseBadge();
  const prevState = d.torrent ? d.torrent.state : null;
  const prevVerified = d.torrent ? d.torrent.verified_bytes : null;
  if (data.torrent) d.torrent = data.torrent;
  if (data.peers) d.peers = data.peers;
  if (data.pieces) d.pieces = data.pieces;
  if (data.trackers) d.trackers = data.trackers;
  if (data.metrics) updateActorRates(d, data.metrics);
  if (d.tab === 'actors') loadGraph(d);
  if (data.sample) pushSample(d, data.sample);
  // Files are not part of the push: re-read them when they may have changed and
  // the tab is visible (state change, or progress, at most every 3 s).
  if (d.tab === 'files' && d.torrent) {
    const changed = d.torrent.state !== prevState;
    const progressed = d.torrent.verified_bytes !== prevVerified && Date.now() - d.filesFetchedAt > 3000;
    if (changed || progressed || d.files === null) loadFiles(d);
  }
  renderDetail();
}

function pushSample(d, s) {
  const last = d.history[d.history.length - 1];
  if (last && s.t <= last.t) {
    if (s.t === last.t) d.history[d.history.length - 1] = s;
    return;
  }
  d.history.push(s);
  const cutoff = s.t - HISTORY_SECS;
  while (d.history.length && d.history[0].t <= cutoff) d.history.shift();
}

/** Derives msgs/s and busy % from two consecutive metric snapshots. */
function updateActorRates(d, m) {
  const now = performance.now() / 1000;
  const prev = d.prevMetrics;
  d.metrics = m;
  const snap = { wall: now, seconds: m.seconds, actors: {} };
  for (const a of m.actors || []) {
    const msgs = {};
    for (const x of a.messages || []) msgs[x.message] = x.handled;
    const edges = {};
    for (const e of a.senders || []) edges[`${e.from}\u0001${e.message}`] = e.sent;
    snap.actors[a.actor] = { handled: a.handled, busy: a.busy_ms, msgs, edges };
  }
  if (prev) {
    let dt = m.seconds - prev.seconds;
    if (!(dt > 0)) dt = now - prev.wall;
    if (dt > 0) {
      d.rates = {};
      for (const a of m.actors || []) {
        const p = prev.actors[a.actor];
        if (!p) continue;
        const messages = {};
        for (const x of a.messages || []) {
          if (p.msgs[x.message] !== undefined) messages[x.message] = Math.max(0, x.handled - p.msgs[x.message]) / dt;
        }
        const edges = {};
        for (const e of a.senders || []) {
          const key = `${e.from}\u0001${e.message}`;
          edges[key] = Math.max(0, e.sent - (p.edges[key] || 0)) / dt;
        }
        d.rates[a.actor] = {
          msgs: Math.max(0, a.handled - p.handled) / dt,
          busy: Math.max(0, a.busy_ms - p.busy) / (dt * 1000) * 100,
          messages,
          edges,
        };
      }
    }
  }
  d.prevMetrics = snap;
}

function selectTab(tab) {
  if (!TABS.includes(tab)) tab = 'overview';
  const d = state.detail;
  if (d) d.tab = tab;
  for (const b of $$('#detail [data-tab]')) {
    const on = b.dataset.tab === tab;
    b.classList.toggle('active', on);
    b.setAttribute('aria-selected', String(on));
  }
  for (const p of $$('#detail [data-panel]')) p.hidden = p.dataset.panel !== tab;
  if (d) {
    const hash = `#t=${d.id}/${tab}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }
  if (d && tab === 'files' && !d.filesDirty) loadFiles(d);
  if (d && tab === 'actors') loadGraph(d);
  if (d) renderDetail();
}

/** The list's columns (all but the name, which is the title) under the detail's title. */
function renderDetailColumns(t) {
  const dl = $('#detail-columns');
  const cols = t ? [
    ['Size', t.total_bytes ? formatBytes(t.total_bytes) : '–'],
    ['Progress', formatProgress(t.progress)],
    ['State', stateName(t.state)],
    ['Down', formatRate(t.download_rate)],
    ['Up', formatRate(t.upload_rate)],
    ['Peers', String(t.peers)],
    ['Ratio', formatRatio(t.ratio)],
    ['ETA', t.state === 'downloading' ? formatDuration(t.eta_secs) : '–'],
    ['Labels', (t.labels || []).join(', ') || '–'],
  ] : [];
  if (dl.childElementCount !== cols.length) {
    dl.replaceChildren(...cols.map(([k]) => h('div', {}, h('dt', { text: k }), h('dd', { dataset: { col: k.toLowerCase() } }))));
  }
  $$('dd', dl).forEach((dd, i) => setText(dd, cols[i][1]));
}

/** Header and action buttons always; only the visible tab's body. */
function renderDetail() {
  const d = state.detail;
  if (!d) return;
  const t = d.torrent;
  setText($('#detail-name'), t ? t.name || t.info_hash : d.id);
  const st = $('#detail-state');
  setText(st, t ? stateName(t.state) : '…');
  st.dataset.state = t ? t.state : '';
  setText($('#detail-progress'), t ? `${formatProgress(t.progress)} · ↓ ${formatRate(t.download_rate)} · ↑ ${formatRate(t.upload_rate)}` : '');
  renderDetailColumns(t);
  const s = t ? t.state : '';
  $('#pause-button').disabled = !t || s === 'paused';
  $('#resume-button').disabled = !t || !['paused', 'finished', 'error', 'awaiting_files'].includes(s);
  $('#recheck-button').disabled = !t || s === 'metadata' || s === 'awaiting_files' || s === 'checking';
  $('#remove-button').disabled = !t;
  switch (d.tab) {
    case 'overview': renderOverview(d); break;
    case 'files': renderFiles(d); break;
    case 'peers': renderPeers(d); break;
    case 'trackers': renderTrackers(d); break;
    case 'pieces': renderPieces(d); break;
    case 'speed': renderSpeed(d); break;
    case 'actors': renderActorGraph(d); renderActors(d); renderTrace(d); break;
    default: break;
  }
}

function resetDetailForms() {
  $('#labels-input').value = '';
  $('#limit-down').value = '';
  $('#limit-up').value = '';
  for (const sel of ['#files-table tbody', '#labels-chips']) {
    const el = $(sel);
    el.replaceChildren();
    delete el.dataset.key;
  }
  $('#actors-table tbody').replaceChildren();
  $('#peers-table tbody').replaceChildren();
  $('#trackers-table tbody').replaceChildren();
}

/* ---- Overview */

function overviewFields(t) {
  const pieces = t.pieces !== null && t.pieces !== undefined
    ? `${t.pieces} × ${t.piece_length ? formatBytes(t.piece_length) : '?'}` : 'unknown (no metadata yet)';
  return [
    ['Name', t.name],
    ['Info-hash', t.info_hash],
    ['State', stateName(t.state)],
    ['Error', t.error || '–'],
    ['Folder', t.dir ? t.dir : '(download root)'],
    ['Size (wanted)', t.total_bytes ? formatBytes(t.total_bytes) : '–'],
    ['Verified', `${formatBytes(t.verified_bytes)} (${formatProgress(t.progress)})`],
    ['Downloaded', formatBytes(t.downloaded)],
    ['Uploaded', formatBytes(t.uploaded)],
    ['Ratio', formatRatio(t.ratio)],
    ['Seeding goal', seedGoalText(t)],
    ['Download rate', formatRate(t.download_rate)],
    ['Upload rate', formatRate(t.upload_rate)],
    ['ETA', t.state === 'seeding' ? '–' : formatDuration(t.eta_secs)],
    ['Peers', t.peers],
    ['Pieces', pieces],
    ['Files', t.files_count],
    ['Private', t.private ? 'yes' : 'no'],
    ['Comment', t.comment || '–'],
    ['Hash failures', t.hash_failures],
    ['Banned peers', t.banned],
    ['Listen port', t.listen_port === null || t.listen_port === undefined ? '–' : t.listen_port],
    ['Download limit', t.download_limit ? formatRate(t.download_limit) : 'unlimited'],
    ['Upload limit', t.upload_limit ? formatRate(t.upload_limit) : 'unlimited'],
    ['Added', formatDate(t.added_at)],
  ];
}

function renderOverview(d) {
  const t = d.torrent;
  if (!t) return;
  const dl = $('#overview-fields');
  const fields = overviewFields(t);
  if (dl.childElementCount !== fields.length * 2) {
    dl.replaceChildren(...fields.flatMap(([k]) => [h('dt', { text: k }), h('dd')]));
  }
  const dds = $$('dd', dl);
  fields.forEach(([, v], i) => {
    setText(dds[i], v === undefined || v === null ? '–' : v);
    dds[i].classList.toggle('error-text', i === 3 && !!t.error);
  });

  const chips = $('#labels-chips');
  const key = (t.labels || []).join('\u0000');
  if (chips.dataset.key !== key) {
    chips.dataset.key = key;
    const items = (t.labels || []).map((l) => h('span', { class: 'tag removable' },
      h('span', { text: l }),
      h('button', {
        type: 'button', class: 'icon', 'aria-label': `Remove label ${l}`, text: '✕',
        onclick: () => {
          const cur = state.detail;
          if (cur && cur.torrent) saveLabels(cur, (cur.torrent.labels || []).filter((x) => x !== l));
        },
      })));
    if (!items.length) items.push(h('span', { class: 'muted small', text: 'no labels' }));
    chips.replaceChildren(...items);
  }

  const ratio = $('#goal-ratio');
  const mins = $('#goal-minutes');
  if (!d.goalDirty && document.activeElement !== ratio && document.activeElement !== mins) {
    ratio.value = t.seed_ratio === null || t.seed_ratio === undefined ? '' : String(t.seed_ratio);
    mins.value = t.seed_time_secs === null || t.seed_time_secs === undefined ? '' : String(Math.round(t.seed_time_secs / 60));
  }

  const down = $('#limit-down');
  const up = $('#limit-up');
  if (!d.limitsDirty && document.activeElement !== down && document.activeElement !== up) {
    down.value = String(Math.round((t.download_limit || 0) / 1024));
    up.value = String(Math.round((t.upload_limit || 0) / 1024));
  }
}

async function saveLabels(d, labels) {
  const clean = Array.from(new Set(labels.map((l) => l.trim()).filter(Boolean)));
  const res = await tryApi('PUT', `/api/torrents/${enc(d.id)}/labels`, { labels: clean });
  if (res && state.detail === d) {
    d.torrent = Object.assign({}, d.torrent, res);
    renderDetail();
  }
  return res;
}

/** The seeding goal in force, in words. */
function seedGoalText(t) {
  const parts = [];
  if (t.seed_ratio !== null && t.seed_ratio !== undefined) parts.push(`ratio ${formatRatio(t.seed_ratio)}`);
  if (t.seed_time_secs !== null && t.seed_time_secs !== undefined) parts.push(`${formatDuration(t.seed_time_secs)} of seeding`);
  const goal = parts.length ? parts.join(' or ') : 'none (seeds until paused)';
  return t.state === 'finished' ? `${goal}: reached, stopped seeding` : goal;
}

async function saveSeeding(d, useDefault) {
  const ratio = $('#goal-ratio').value.trim();
  const mins = $('#goal-minutes').value.trim();
  const body = useDefault ? { default: true } : {
    seed_ratio: ratio === '' ? null : Math.max(0, Number(ratio) || 0),
    seed_time_secs: mins === '' ? null : Math.max(0, Math.floor(Number(mins) || 0)) * 60,
  };
  const res = await tryApi('PUT', `/api/torrents/${enc(d.id)}/seeding`, body);
  if (res && state.detail === d) {
    d.goalDirty = false;
    d.torrent = Object.assign({}, d.torrent, res);
    toast('Seeding goal saved.');
    renderDetail();
  }
}

async function saveLimits(d) {
  const kib = (el) => Math.max(0, Math.floor(Number(el.value) || 0));
  const body = { download_limit: kib($('#limit-down')) * 1024, upload_limit: kib($('#limit-up')) * 1024 };
  const res = await tryApi('PUT', `/api/torrents/${enc(d.id)}/limits`, body);
  if (res && state.detail === d) {
    d.limitsDirty = false;
    d.torrent = Object.assign({}, d.torrent, res);
    toast('Limits saved.');
    renderDetail();
  }
}

/* ---- Files */

async function loadFiles(d) {
  if (d.filesLoading) return;
  d.filesLoading = true;
  d.filesFetchedAt = Date.now();
  const files = await tryApi('GET', `/api/torrents/${enc(d.id)}/files`);
  d.filesLoading = false;
  if (state.detail !== d || !files) return;
  if (d.filesDirty && d.files && d.files.length === files.length) {
    // Keep the user's unsaved choice; only take the progress.
    const sel = new Map(d.files.map((f) => [f.index, f]));
    d.files = files.map((f) => {
      const mine = sel.get(f.index);
      return Object.assign({}, f, mine ? { selected: mine.selected, priority: mine.priority } : {});
    });
  } else {
    d.files = files;
    d.filesDirty = false;
  }
  renderDetail();
}

function renderFiles(d) {
  const t = d.torrent;
  const files = d.files || [];
  const awaiting = !!t && t.state === 'awaiting_files';
  $('#files-awaiting').hidden = !awaiting;
  $('#files-empty').hidden = d.files === null || files.length !== 0;
  $('#files-toolbar').hidden = files.length === 0;
  $('#files-start').hidden = !awaiting;
  $('#files-apply').hidden = awaiting;
  $('#files-apply').disabled = !d.filesDirty;
  const selected = files.filter((f) => f.selected);
  const bytes = selected.reduce((s, f) => s + f.length, 0);
  setText($('#files-summary'), `${selected.length} of ${files.length} selected · ${formatBytes(bytes)}`);
  $('#files-start').disabled = selected.length === 0;

  const tbody = $('#files-table tbody');
  const key = files.map((f) => `${f.index}:${f.path}`).join('\u0000');
  if (tbody.dataset.key !== key) {
    tbody.dataset.key = key;
    tbody.replaceChildren(...files.map((f) => {
      const box = h('input', { type: 'checkbox', 'aria-label': `Download ${f.path}`, dataset: { index: f.index } });
      box.addEventListener('change', () => {
        const file = d.files.find((x) => x.index === f.index);
        if (file) {
          file.selected = box.checked;
          file.priority = box.checked ? (file.priority === 'high' ? 'high' : 'normal') : 'skip';
        }
        d.filesDirty = true;
        renderFiles(d);
      });
      const prio = h('select', { class: 'priority', 'aria-label': `Priority of ${f.path}` },
        h('option', { value: 'skip', text: 'Skip' }),
        h('option', { value: 'normal', text: 'Normal' }),
        h('option', { value: 'high', text: 'High' }));
      prio.addEventListener('change', () => {
        const file = d.files.find((x) => x.index === f.index);
        if (file) {
          file.priority = prio.value;
          file.selected = prio.value !== 'skip';
        }
        d.filesDirty = true;
        renderFiles(d);
      });
      return h('tr', { dataset: { index: f.index } },
        h('td', { class: 'check' }, box),
        h('td', { class: 'path', text: f.path }),
        h('td', { class: 'prio' }, prio),
        h('td', { class: 'num', text: formatBytes(f.length) }),
        h('td', { class: 'col-progress' }, h('span', { class: 'bar' }, h('span', { class: 'bar-fill' })),
          h('span', { class: 'file-progress' })),
        h('td', { class: 'stream' },
          h('a', {
            class: 'open-stream', target: '_blank', rel: 'noopener',
            href: `/api/torrents/${enc(d.id)}/files/${f.index}/stream`,
            title: 'Play in the browser while it downloads', text: 'open stream',
          }),
          ' ',
          h('button', {
            type: 'button', class: 'link copy-stream', title: 'Copy a signed link for mpv or VLC (valid a day)',
            text: 'copy link', onclick: () => copyStreamLink(d, f.index),
          })));
    }));
  }
  const rows = tbody.children;
  files.forEach((f, i) => {
    const tr = rows[i];
    if (!tr) return;
    const box = $('input', tr);
    if (box.checked !== f.selected) box.checked = f.selected;
    const prio = $('select.priority', tr);
    const want = filePriority(f);
    if (prio.value !== want) prio.value = want;
    tr.dataset.priority = want;
    const p = f.length ? f.verified_bytes / f.length : 1;
    $('.bar-fill', tr).style.width = `${Math.min(1, p) * 100}%`;
    setText($('.file-progress', tr), formatProgress(p));
    tr.classList.toggle('unselected', !f.selected);
  });
}

/** Copies a signed link to file `index`'s stream, which a media player can open without the key. */
async function copyStreamLink(d, index) {
  const link = await tryApi('GET', `/api/torrents/${enc(d.id)}/files/${index}/link`);
  if (!link) return;
  const url = new URL(link.url, window.location.href).href;
  try {
    await navigator.clipboard.writeText(url);
    toast('Stream link copied: open it in mpv or VLC.');
  } catch (_) {
    window.prompt('Stream link for mpv or VLC:', url);
  }
}

/** A file's priority: skip, normal or high (older daemons say only `selected`). */
function filePriority(f) {
  if (!f.selected) return 'skip';
  return f.priority === 'high' ? 'high' : 'normal';
}

function setAllFiles(d, on) {
  if (!d.files) return;
  for (const f of d.files) {
    f.selected = on;
    f.priority = on ? (f.priority === 'high' ? 'high' : 'normal') : 'skip';
  }
  d.filesDirty = true;
  renderFiles(d);
}

async function applyFiles(d, thenResume) {
  const selected = (d.files || []).filter((f) => f.selected).map((f) => f.index);
  const high = (d.files || []).filter((f) => filePriority(f) === 'high').map((f) => f.index);
  if (thenResume && !selected.length) { toast('Select at least one file.', 'error'); return; }
  const res = await tryApi('PUT', `/api/torrents/${enc(d.id)}/files`, { selected, high });
  if (!res || state.detail !== d) return;
  d.files = res;
  d.filesDirty = false;
  if (thenResume) {
    const t = await tryApi('POST', `/api/torrents/${enc(d.id)}/resume`);
    if (t && state.detail === d) d.torrent = Object.assign({}, d.torrent, t);
    if (t) toast('Download started.');
  } else {
    toast('File priorities saved.');
  }
  renderDetail();
}

/* ---- Peers */

function peerFlags(p) {
  let f = '';
  if (p.am_interested && !p.peer_choking) f += 'D';
  else if (p.am_interested && p.peer_choking) f += 'd';
  else if (!p.am_interested && !p.peer_choking) f += 'K';
  if (p.peer_interested && !p.am_choking) f += 'U';
  else if (p.peer_interested && p.am_choking) f += 'u';
  else if (!p.peer_interested && !p.am_choking) f += '?';
  if (!p.outgoing) f += 'I';
  return f;
}

const PEER_SORT_KEYS = {
  addr: (p) => p.addr,
  client: (p) => (p.client || '').toLowerCase(),
  flags: (p) => peerFlags(p),
  down: (p) => p.down_rate,
  up: (p) => p.up_rate,
  progress: (p) => p.progress,
};

/** Peers are sorted by a clicked column (default: address, so rows do not jump every second). */
function renderPeers(d) {
  const { key, dir } = state.peerSort;
  const get = PEER_SORT_KEYS[key] || PEER_SORT_KEYS.addr;
  const peers = (d.peers || []).slice().sort((a, b) => {
    const va = get(a);
    const vb = get(b);
    const c = typeof va === 'string' ? va.localeCompare(vb) : (va > vb) - (va < vb);
    return (dir === 'asc' ? c : -c) || a.addr.localeCompare(b.addr);
  });
  for (const th of $$('#peers-table th[data-peer-sort]')) {
    const on = th.dataset.peerSort === key;
    th.classList.toggle('sorted', on);
    th.dataset.dir = on ? dir : '';
  }
  $('#peers-empty').hidden = peers.length !== 0;
  $('#peers-table tbody').replaceChildren(...peers.map((p) => h('tr', { dataset: { addr: p.addr } },
    h('td', { class: 'mono', text: p.addr }),
    h('td', { class: 'col-client', text: p.client || 'unknown' }),
    h('td', { class: 'mono flags', text: peerFlags(p) }),
    h('td', { class: 'num', text: formatRate(p.down_rate) }),
    h('td', { class: 'num', text: formatRate(p.up_rate) }),
    h('td', { class: 'num col-peer-progress', text: formatProgress(p.progress) }))));
}

function onPeerSortClick(key) {
  const s = state.peerSort;
  if (s.key === key) s.dir = s.dir === 'asc' ? 'desc' : 'asc';
  else state.peerSort = { key, dir: ['addr', 'client', 'flags'].includes(key) ? 'asc' : 'desc' };
  if (state.detail) renderPeers(state.detail);
}

/* ---- Trackers */

function renderTrackers(d) {
  const trackers = (d.trackers || []).slice().sort((a, b) => a.tier - b.tier);
  $('#trackers-empty').hidden = trackers.length !== 0;
  $('#trackers-table tbody').replaceChildren(...trackers.map((t) => {
    let peers = t.peers === null || t.peers === undefined ? '–' : String(t.peers);
    if (t.seeders !== null && t.seeders !== undefined) peers += ` (${t.seeders} S / ${t.leechers === null || t.leechers === undefined ? '?' : t.leechers} L)`;
    return h('tr', null,
      h('td', { class: 'url', text: t.url }),
      h('td', { class: 'num col-tier', text: t.tier }),
      h('td', null, h('span', { class: 'tracker-state', dataset: { state: t.state }, text: t.state })),
      h('td', { class: 'error-text', text: t.last_error || '' }),
      h('td', { class: 'num', text: peers }),
      h('td', { class: 'num col-next', text: t.next_announce_secs === null || t.next_announce_secs === undefined ? '–' : formatDuration(t.next_announce_secs) }));
  }));
}

/* ---- Canvases */

/** Sizes a canvas to its CSS box times the device pixel ratio; returns a 2D context in CSS pixels. */
function prepareCanvas(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const width = Math.max(100, Math.floor(canvas.parentElement.clientWidth));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${cssHeight}px`;
  const w = Math.round(width * dpr);
  const hpx = Math.round(cssHeight * dpr);
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== hpx) canvas.height = hpx;
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, cssHeight);
  return { ctx, width, height: cssHeight };
}

/** Decodes the PieceMap bitfield (BEP 3 order: piece 0 is 0x80 of byte 0). */
function decodeBitfield(b64) {
  try {
    const bin = atob(b64 || '');
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  } catch (_) {
    return new Uint8Array(0);
  }
}

const hasPiece = (bytes, i) => ((bytes[i >> 3] || 0) & (0x80 >> (i & 7))) !== 0;

/**
 * Draws the piece map. With few pieces each gets a square; with many, each cell
 * stands for a run of pieces and is shaded by how many of them we have. Cells are
 * batched into one path per colour (and per shade), so thousands of pieces stay cheap.
 */
function renderPieces(d) {
  const map = d.pieces;
  const canvas = $('#pieces-canvas');
  const n = map ? map.pieces || 0 : 0;
  const bytes = decodeBitfield(map ? map.have : '');
  // Pieces only in skipped files: not wanted. Without the field every piece is wanted.
  const wantedBytes = decodeBitfield(map && map.wanted ? map.wanted : '');
  const wanted = (i) => wantedBytes.length === 0 || hasPiece(wantedBytes, i);

  const width = Math.max(100, Math.floor(canvas.parentElement.clientWidth));
  const maxHeight = 320;
  let cell = n ? Math.floor(Math.sqrt((width * maxHeight) / n)) : 12;
  cell = Math.max(2, Math.min(16, cell));
  const cols = Math.max(1, Math.floor(width / cell));
  const cells = Math.min(n, cols * Math.floor(maxHeight / cell));
  const rows = Math.max(1, Math.ceil(cells / cols));
  const cellOf = (i) => Math.floor((i * cells) / n); // piece → cell, same mapping everywhere

  // Count per cell: pieces, pieces we have, pieces not wanted, and whether one is
  // being downloaded.
  const total = new Uint32Array(cells);
  const got = new Uint32Array(cells);
  const skip = new Uint32Array(cells);
  const busy = new Uint8Array(cells);
  let have = 0;
  let unwanted = 0;
  for (let i = 0; i < n; i++) {
    const c = cellOf(i);
    total[c]++;
    if (hasPiece(bytes, i)) { got[c]++; have++; }
    else if (!wanted(i)) { skip[c]++; unwanted++; }
  }
  let dl = 0;
  for (const i of new Set(map ? map.downloading || [] : [])) {
    if (i >= 0 && i < n && !hasPiece(bytes, i)) { busy[cellOf(i)] = 1; dl++; }
  }
  setText($('#pieces-have'), have);
  setText($('#pieces-downloading'), dl);
  setText($('#pieces-missing'), Math.max(0, n - have - dl - unwanted));
  setText($('#pieces-unwanted'), unwanted);
  const per = cells ? n / cells : 1;
  setText($('#pieces-note'), n === 0 ? 'no metadata yet' : per > 1 ? `1 cell ≈ ${per.toFixed(1)} pieces` : `${n} pieces`);

  const { ctx } = prepareCanvas(canvas, rows * cell);
  const gap = cell >= 6 ? 1 : 0;
  const SHADES = 8;
  const paths = { missing: new Path2D(), have: new Path2D(), busy: new Path2D(), unwanted: new Path2D(), shade: [] };
  for (let k = 0; k < SHADES; k++) paths.shade.push(new Path2D());
  for (let c = 0; c < cells; c++) {
    const x = (c % cols) * cell;
    const y = Math.floor(c / cols) * cell;
    const frac = total[c] > skip[c] ? got[c] / (total[c] - skip[c]) : 0;
    if (busy[c]) paths.busy.rect(x, y, cell - gap, cell - gap);
    else if (total[c] > 0 && skip[c] === total[c]) paths.unwanted.rect(x, y, cell - gap, cell - gap);
    else if (frac >= 1) paths.have.rect(x, y, cell - gap, cell - gap);
    else {
      paths.missing.rect(x, y, cell - gap, cell - gap);
      if (frac > 0) paths.shade[Math.min(SHADES - 1, Math.floor(frac * SHADES))].rect(x, y, cell - gap, cell - gap);
    }
  }
  ctx.fillStyle = cssVar('--missing');
  ctx.fill(paths.missing);
  ctx.fillStyle = cssVar('--unwanted');
  ctx.fill(paths.unwanted);
  ctx.fillStyle = cssVar('--have');
  paths.shade.forEach((path, k) => {
    ctx.globalAlpha = 0.25 + (0.7 * (k + 0.5)) / SHADES;
    ctx.fill(path);
  });
  ctx.globalAlpha = 1;
  ctx.fill(paths.have);
  ctx.fillStyle = cssVar('--downloading');
  ctx.fill(paths.busy);

  // Each open stream: its read-ahead window outlined, its read position filled.
  const streams = (map && map.streams) || [];
  setText($('#pieces-streams'), streams.length);
  ctx.strokeStyle = cssVar('--stream');
  ctx.fillStyle = cssVar('--stream');
  ctx.lineWidth = Math.max(1, Math.floor(cell / 6));
  for (const [pos, last] of streams) {
    if (!(pos >= 0 && pos < n)) continue;
    const end = Math.min(n - 1, Math.max(pos, last));
    for (let c = cellOf(pos); c <= cellOf(end); c++) {
      ctx.strokeRect((c % cols) * cell + 0.5, Math.floor(c / cols) * cell + 0.5, cell - gap - 1, cell - gap - 1);
    }
    const p = cellOf(pos);
    ctx.fillRect((p % cols) * cell, Math.floor(p / cols) * cell, cell - gap, cell - gap);
  }
}

/**
 * A round axis step, 1, 2 or 5 × 10^n in the unit the ticks are shown in (B, KiB, MiB…),
 * so that max / step ≈ 4. Past 500 of a unit the step is 1 of the next (1 MiB, not
 * 1000 KiB, whose multiples would read 1.95 MiB, 2.93 MiB).
 */
function niceRateStep(max) {
  const rough = Math.max(max, 1) / 4;
  const unit = Math.pow(1024, Math.max(0, Math.floor(Math.log(rough) / Math.log(1024))));
  const m = rough / unit;
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500];
  const s = steps.find((x) => x >= m);
  return s ? s * unit : 1024 * unit;
}

/** A tick's label: a round value without trailing zeros ("2 MiB/s", not "2.00 MiB/s"). */
function formatTick(v) {
  return formatRate(v).replace(/\.0+ /, ' ');
}

/** Draws the last 10 minutes of rate samples: area for download, line for upload. */
function renderSpeed(d) {
  const canvas = $('#speed-canvas');
  const hist = d.history;
  const last = hist[hist.length - 1];
  setText($('#speed-down'), formatRate(last ? last.down : 0));
  setText($('#speed-up'), formatRate(last ? last.up : 0));
  const { ctx, width, height } = prepareCanvas(canvas, 240);
  const pad = { l: 72, r: 10, t: 10, b: 24 };
  const pw = width - pad.l - pad.r;
  const ph = height - pad.t - pad.b;
  const now = last ? last.t : Math.floor(Date.now() / 1000);
  const t0 = now - HISTORY_SECS;
  let max = 0;
  for (const s of hist) max = Math.max(max, s.down, s.up);
  const step = niceRateStep(max || 1024);
  const top = Math.max(step, Math.ceil((max || 1) / step) * step);
  const X = (t) => pad.l + ((t - t0) / HISTORY_SECS) * pw;
  const Y = (v) => pad.t + ph - (v / top) * ph;

  ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  ctx.lineWidth = 1;
  ctx.strokeStyle = cssVar('--grid');
  ctx.fillStyle = cssVar('--muted');
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let v = 0; v <= top + step / 2; v += step) {
    const y = Math.round(Y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
    ctx.fillText(formatTick(v), pad.l - 6, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 10; m >= 0; m -= 2) {
    const x = Math.round(X(now - m * 60)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, pad.t); ctx.lineTo(x, pad.t + ph); ctx.stroke();
    ctx.fillText(m === 0 ? 'now' : `-${m}m`, Math.min(Math.max(x, pad.l + 12), width - 16), pad.t + ph + 6);
  }
  if (hist.length < 2) return;

  const line = (key) => {
    ctx.beginPath();
    let first = true;
    for (const s of hist) {
      if (s.t < t0) continue;
      const x = X(s.t);
      const y = Y(s[key]);
      if (first) { ctx.moveTo(x, y); first = false; } else ctx.lineTo(x, y);
    }
  };
  const cDown = cssVar('--down');
  const cUp = cssVar('--up');
  line('down');
  const firstT = Math.max(t0, hist.find((s) => s.t >= t0).t);
  ctx.lineTo(X(now), Y(0));
  ctx.lineTo(X(firstT), Y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.18;
  ctx.fillStyle = cDown;
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.lineWidth = 1.75;
  ctx.lineJoin = 'round';
  line('down');
  ctx.strokeStyle = cDown;
  ctx.stroke();
  line('up');
  ctx.strokeStyle = cUp;
  ctx.stroke();
}

/* ---- Actors */

function renderActors(d) {
  const tbody = $('#actors-table tbody');
  const actors = d.metrics ? (d.metrics.actors || []).slice().sort((a, b) => a.actor.localeCompare(b.actor)) : [];
  const rows = [];
  for (const a of actors) {
    const r = d.rates[a.actor];
    const open = d.expanded.has(a.actor);
    const hasMsgs = (a.messages || []).length > 0;
    const tr = h('tr', {
      class: `actor-row${hasMsgs ? ' expandable' : ''}${open ? ' open' : ''}`,
      dataset: { actor: a.actor }, tabindex: hasMsgs ? '0' : null, 'aria-expanded': hasMsgs ? String(open) : null,
    },
    h('td', null, h('span', { class: 'caret', text: hasMsgs ? (open ? '▾' : '▸') : '' }), ' ', a.actor),
    h('td', { class: 'num', text: a.live }),
    h('td', { class: 'num', text: r ? r.msgs.toFixed(r.msgs >= 100 ? 0 : 1) : '…' }),
    h('td', { class: 'num', text: r ? `${r.busy.toFixed(1)}%` : '…' }),
    h('td', { class: 'num', text: `${a.mailbox} / ${a.mailbox_peak}` }),
    h('td', { class: `num${a.backpressure ? ' warn' : ''}`, text: a.backpressure }));
    if (hasMsgs) {
      const toggle = () => {
        if (d.expanded.has(a.actor)) d.expanded.delete(a.actor); else d.expanded.add(a.actor);
        renderActors(d);
      };
      tr.addEventListener('click', toggle);
      tr.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle(); } });
    }
    rows.push(tr);
    if (open) {
      rows.push(h('tr', { class: 'msg-head' },
        h('td', { text: 'message' }), h('td', { class: 'num', text: 'handled' }), h('td', { class: 'num', text: 'msgs/s' }),
        h('td', { class: 'num', text: 'p50 / p99' }), h('td', { class: 'num', text: 'max' }), h('td', { class: 'num', text: 'total time' })));
      const msgs = (a.messages || []).slice().sort((x, y) => y.handled - x.handled);
      for (const m of msgs) {
        const mr = r && r.messages[m.message];
        rows.push(h('tr', { class: 'msg-row', dataset: { actor: a.actor, message: m.message } },
          h('td', { class: 'msg-name', text: m.message }),
          h('td', { class: 'num', text: m.handled }),
          h('td', { class: 'num', text: mr === undefined ? '…' : mr.toFixed(mr >= 100 ? 0 : 1) }),
          h('td', { class: 'num', text: `${formatMicros(m.p50_us)} / ${formatMicros(m.p99_us)}` }),
          h('td', { class: 'num', text: formatMicros(m.max_us) }),
          h('td', { class: 'num', text: formatMicros(m.total_ms * 1000) })));
      }
    }
  }
  if (!actors.length) rows.push(h('tr', null, h('td', { colspan: '6', class: 'muted', text: 'Waiting for metrics…' })));
  // Keep keyboard focus on the same actor row across re-renders.
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('#actors-table tr[data-actor]');
  const focusActor = focused ? focused.dataset.actor : null;
  tbody.replaceChildren(...rows);
  if (focusActor) {
    const again = tbody.querySelector(`tr.actor-row[data-actor="${CSS.escape(focusActor)}"]`);
    if (again) again.focus();
  }
}

/* The actor graph shows instances: the busiest GRAPH_TOP of each type, the rest folded
   into one "N other Peers" node by the server. Columns: the actors that talk to the
   network on the left, the torrent's owners in the middle, disk, hashing and rate actors
   on the right (a type not listed goes right too). */
const GRAPH_TOP = 12;
const GRAPH_COLUMNS = {
  Tracker: 0, Peer: 0, MetadataPeer: 0,
  Coordinator: 1, MetadataFetcher: 1, PieceManager: 1,
  Hasher: 2, FileWriter: 2, FileReader: 2, RateLimiter: 2,
};
const GRAPH_ORDER = ['Tracker', 'Peer', 'MetadataPeer', 'Coordinator', 'MetadataFetcher', 'PieceManager',
  'Hasher', 'FileWriter', 'FileReader', 'RateLimiter'];
/** Edge labels drawn at most (the busiest); every edge has its numbers as a tooltip. */
const GRAPH_LABELS = 14;

function svgEl(tag, attrs, text) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

/** Asks for the actor graph (only while the actors tab is open: asking keeps the
 *  engine counting per instance; nobody asking, it stops). One request at a time. */
async function loadGraph(d) {
  if (d.graphLoading) return;
  d.graphLoading = true;
  try {
    const g = await api('GET', `/api/torrents/${enc(d.id)}/graph?top=${GRAPH_TOP}`);
    if (state.detail !== d) return;
    d.graph = g;
    if (d.tab === 'actors') renderActorGraph(d);
  } catch (e) {
    // The graph is a view: a failed read waits for the next update.
  } finally {
    d.graphLoading = false;
  }
}

function formatMsgRate(r) {
  return r >= 10 ? r.toFixed(0) : r.toFixed(1);
}

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/** The actor graph: a node per actor instance (or folded group), an arrow per sender →
 *  receiver pair, its width and label from the messages per second over the server's
 *  last sample window. */
function renderActorGraph(d) {
  const svg = $('#actors-graph');
  const g = d.graph;
  if (!g) {
    svg.replaceChildren(svgEl('text', { x: 380, y: 40, class: 'node-live' }, 'Waiting for the actor graph…'));
    return;
  }
  const rank = (a) => { const i = GRAPH_ORDER.indexOf(a); return i < 0 ? GRAPH_ORDER.length : i; };
  const cols = [[], [], []];
  const nodes = g.nodes.slice().sort((a, b) => rank(a.actor) - rank(b.actor)
    || (a.instance === null) - (b.instance === null) || b.rate - a.rate);
  for (const n of nodes) cols[GRAPH_COLUMNS[n.actor] ?? 2].push(n);
  const ROW = 40;
  const W = 760;
  const rows = Math.max(3, ...cols.map((c) => c.length));
  const H = rows * ROW + 20;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.style.height = `${Math.min(H, 900)}px`;
  const place = {};
  cols.forEach((col, i) => {
    const x = [90, 380, 670][i];
    // Spread over the height: a column of a few owners stands apart, a column of many
    // peers is one row apart.
    const step = (H - 20) / col.length;
    col.forEach((n, j) => { place[n.id] = [x, 10 + step * (j + 0.5)]; });
  });
  const out = [];
  const labels = [];
  let labelled = 0;
  for (const e of g.edges) {
    if (!place[e.from] || !place[e.to]) continue;
    const [x1, y1] = place[e.from];
    const [x2, y2] = place[e.to];
    const len = Math.hypot(x2 - x1, y2 - y1) || 1;
    // Two-way pairs are drawn side by side; each arrow stops at the node's edge.
    const ox = -(y2 - y1) / len * 5;
    const oy = (x2 - x1) / len * 5;
    const shrinkX = Math.min(0.45, 87 / len);
    const shrinkY = Math.min(0.45, 18 / len);
    const sx = Math.abs(x2 - x1) > Math.abs(y2 - y1) ? shrinkX : shrinkY;
    const ax = x1 + (x2 - x1) * sx + ox;
    const ay = y1 + (y2 - y1) * sx + oy;
    const bx = x2 - (x2 - x1) * sx + ox;
    const by = y2 - (y2 - y1) * sx + oy;
    const busy = e.rate > 0;
    const line = svgEl('line', {
      x1: ax, y1: ay, x2: bx, y2: by, class: `edge${busy ? ' busy' : ''}`, 'marker-end': 'url(#arrow)',
      'stroke-width': busy ? Math.min(6, 1 + Math.log10(1 + e.rate)) : 1,
      'data-from': e.from, 'data-to': e.to, 'data-rate': e.rate,
    });
    line.append(svgEl('title', {}, `${e.from} → ${e.to}: ${e.message}, ${formatMsgRate(e.rate)} msgs/s (${e.sent} sent)`));
    out.push(line);
    // The busiest edges are labelled, a label left out where it would cover another.
    const lx = (ax + bx) / 2 + ox * 2;
    const ly = (ay + by) / 2 + oy * 2 - 2;
    if (busy && labelled < GRAPH_LABELS && !labels.some(([x, y]) => Math.abs(x - lx) < 90 && Math.abs(y - ly) < 12)) {
      labels.push([lx, ly]);
      labelled += 1;
      out.push(svgEl('text', { x: lx, y: ly, class: 'edge-label' }, `${e.message} ${formatMsgRate(e.rate)}/s`));
    }
  }
  const boxes = [];
  for (const n of nodes) {
    const [x, y] = place[n.id];
    const folded = n.instance === null;
    const group = svgEl('g', { class: `node-group${folded ? ' folded' : ''}`, 'data-node': n.id, 'data-actor': n.actor });
    // Line one: the instance (or "N other Peers") and its messages per second, sent and
    // received; line two: its address, if it has one.
    const rate = `${formatMsgRate(n.rate)}/s`;
    const address = !folded && n.label.startsWith(`${n.id} `) ? n.label.slice(n.id.length + 1) : '';
    group.append(
      svgEl('rect', { x: x - 85, y: y - 17, width: 170, height: 34, rx: 7, class: 'node' }),
      svgEl('text', { x, y: y - 3, class: 'node-name' }, `${clip(folded ? n.label : n.id, 16)} · ${rate}`),
      svgEl('text', { x, y: y + 11, class: 'node-live' }, address ? clip(address, 30) : n.actor),
      svgEl('title', {}, `${n.label}: ${rate} messages`));
    boxes.push(group);
  }
  const defs = svgEl('defs');
  const marker = svgEl('marker', {
    id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 8, markerHeight: 8,
    markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse',
  });
  marker.append(svgEl('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrow-head' }));
  defs.append(marker);
  svg.replaceChildren(defs, ...out, ...boxes);
  svg.dataset.edges = String(g.edges.length);
  svg.dataset.nodes = String(g.nodes.length);
  svg.setAttribute('aria-label', `Actor graph: ${g.instances} actor instances, ${g.nodes.length} drawn, `
    + `${g.edges.length} message routes; rates over the last ${g.window_s.toFixed(1)} s`);
}

/** The trace controls: record, or download what is recorded (and stop). */
function renderTrace(d) {
  const t = d.torrent && d.torrent.trace;
  $('#trace-start').hidden = !!t;
  $('#trace-save').hidden = !t;
  $('#trace-stop').hidden = !t;
  const saved = d.traceSaved ? ` Saved ${d.traceSaved}.` : '';
  setText($('#trace-status'), t
    ? `Recording: ${t.events.toLocaleString()} of at most ${t.limit.toLocaleString()} events${t.dropped ? ` (${t.dropped.toLocaleString()} oldest dropped)` : ''}.${saved}`
    : `A trace opens in Perfetto (ui.perfetto.dev) or chrome://tracing.${saved}`);
}

async function startTrace() {
  const d = state.detail;
  if (!d) return;
  const status = await tryApi('POST', `/api/torrents/${enc(d.id)}/trace`, {});
  if (status === undefined || state.detail !== d) return;
  if (d.torrent) d.torrent.trace = status;
  renderTrace(d);
}

/** Fetches the trace (DELETE stops it too) and saves it as a file. */
async function downloadTrace(stop) {
  const d = state.detail;
  if (!d) return;
  const init = { method: stop ? 'DELETE' : 'GET', credentials: 'same-origin', headers: {} };
  if (stop) init.headers['X-TA-Token'] = state.token;
  let res;
  try {
    res = await fetch(`/api/torrents/${enc(d.id)}/trace`, init);
  } catch (e) {
    showError(new ApiError(0, 'network', `network error: ${e.message}`));
    return;
  }
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    const err = data.error || {};
    showError(new ApiError(res.status, err.code || `http_${res.status}`, err.message || res.statusText));
    return;
  }
  const blob = await res.blob();
  const name = `${d.torrent ? d.torrent.name : d.id}.trace.json`;
  const a = h('a', { href: URL.createObjectURL(blob), download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  if (state.detail !== d) return;
  d.traceSaved = `${name} (${formatBytes(blob.size)})`;
  if (stop && d.torrent) d.torrent.trace = null;
  renderTrace(d);
}

/* ---- Actions */

async function torrentAction(action) {
  const d = state.detail;
  if (!d) return;
  const res = await tryApi('POST', `/api/torrents/${enc(d.id)}/${action}`);
  if (res && state.detail === d) {
    d.torrent = Object.assign({}, d.torrent, res);
    const i = state.torrents.findIndex((t) => t.id === res.id);
    if (i >= 0) { state.torrents[i] = res; renderList(); }
    renderDetail();
    if (action === 'recheck') toast('Recheck started.');
  }
}

/* ------------------------------------------------------------------ 7. Dialogs */

function openDialog(dlg) {
  if (!dlg.open) dlg.showModal();
}

function closeDialog(dlg) {
  if (dlg.open) dlg.close();
}

/* ---- Add */

function openAddDialog() {
  const a = state.add;
  a.base64 = null;
  a.inspected = null;
  $('#add-form').reset();
  $('#add-error').hidden = true;
  $('#add-inspect').hidden = true;
  $('#add-files').replaceChildren();
  setAddMode(a.mode || 'file');
  openDialog($('#add-dialog'));
}

function setAddMode(mode) {
  state.add.mode = mode;
  for (const b of $$('#add-dialog [data-add-tab]')) {
    const on = b.dataset.addTab === mode;
    b.classList.toggle('active', on);
    b.setAttribute('aria-selected', String(on));
  }
  for (const p of $$('#add-dialog [data-add-pane]')) p.hidden = p.dataset.addPane !== mode;
  // The file list belongs to the .torrent / path modes only.
  const showList = state.add.inspected && state.add.inspected.mode === mode;
  $('#add-inspect').hidden = !showList;
}

function addError(msg) {
  const p = $('#add-error');
  p.textContent = msg || '';
  p.hidden = !msg;
}

/** Reads the chosen .torrent as base64 (FileReader data URL without its prefix). */
function readFileBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => {
      const s = String(r.result);
      resolve(s.slice(s.indexOf(',') + 1));
    };
    r.onerror = () => reject(r.error || new Error('could not read the file'));
    r.readAsDataURL(file);
  });
}

async function onAddFileChosen() {
  const input = $('#add-file');
  const file = input.files && input.files[0];
  state.add.base64 = null;
  state.add.inspected = null;
  $('#add-inspect').hidden = true;
  addError('');
  if (!file) return;
  if (file.size > 16 * 1024 * 1024) { addError('That file is too large for a .torrent.'); return; }
  try {
    state.add.base64 = await readFileBase64(file);
  } catch (e) {
    addError(`Could not read the file: ${e.message}`);
    return;
  }
  await inspect({ torrent_base64: state.add.base64 }, 'file');
}

async function inspectPath() {
  const path = $('#add-path').value.trim();
  if (!path) { addError('Enter a path first.'); return; }
  await inspect({ path }, 'path');
}

/** POST /api/inspect and show the file list with checkboxes (all selected). */
async function inspect(body, mode) {
  addError('');
  let info;
  try {
    info = await api('POST', '/api/inspect', body);
  } catch (e) {
    addError(`${e.code}: ${e.message}`);
    return;
  }
  if (state.add.mode !== mode) return;
  state.add.inspected = { mode, info, key: body.path || null };
  setText($('#add-inspect-name'), info.name);
  setText($('#add-inspect-size'), `${formatBytes(info.total_bytes)} · ${info.info_hash}`);
  const list = $('#add-files');
  list.replaceChildren(...(info.files || []).map((f) => {
    const box = h('input', { type: 'checkbox', checked: true, dataset: { index: f.index }, onchange: updateAddSummary });
    return h('li', null, h('label', null, box, h('span', { class: 'path', text: f.path }),
      h('span', { class: 'muted small', text: formatBytes(f.length) })));
  }));
  $('#add-inspect').hidden = false;
  updateAddSummary();
}

function addSelectedIndices() {
  return $$('#add-files input[type=checkbox]').filter((b) => b.checked).map((b) => Number(b.dataset.index));
}

function updateAddSummary() {
  const info = state.add.inspected && state.add.inspected.info;
  if (!info) return;
  const sel = new Set(addSelectedIndices());
  const bytes = (info.files || []).filter((f) => sel.has(f.index)).reduce((s, f) => s + f.length, 0);
  setText($('#add-files-summary'), `${sel.size} of ${(info.files || []).length} selected · ${formatBytes(bytes)}`);
}

function setAllAddFiles(on) {
  for (const b of $$('#add-files input[type=checkbox]')) b.checked = on;
  updateAddSummary();
}

/** Builds the common options of POST /api/torrents. */
function addOptions() {
  const body = {};
  const dir = $('#add-dir').value.trim();
  if (dir) body.dir = dir;
  if ($('#add-paused').checked) body.paused = true;
  const labels = $('#add-labels').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (labels.length) body.labels = Array.from(new Set(labels));
  return body;
}

async function submitAdd(ev) {
  ev.preventDefault();
  addError('');
  const a = state.add;
  const bodies = [];
  if (a.mode === 'magnet') {
    const links = $('#add-magnet').value.split(/\s+/).map((s) => s.trim()).filter(Boolean);
    if (!links.length) { addError('Paste a magnet link.'); return; }
    const bad = links.find((l) => !/^magnet:\?/i.test(l));
    if (bad) { addError('A magnet link starts with “magnet:?”.'); return; }
    for (const magnet of links) {
      const b = Object.assign({ magnet }, addOptions());
      if ($('#add-choose-files').checked) b.choose_files = true;
      bodies.push(b);
    }
  } else {
    const b = addOptions();
    if (a.mode === 'file') {
      if (!a.base64) { addError('Choose a .torrent file.'); return; }
      b.torrent_base64 = a.base64;
    } else {
      const path = $('#add-path').value.trim();
      if (!path) { addError('Enter the path of a .torrent on the server.'); return; }
      b.path = path;
    }
    const insp = a.inspected;
    if (insp && insp.mode === a.mode && (a.mode === 'file' || insp.key === b.path)) {
      const files = addSelectedIndices();
      if (!files.length) { addError('Select at least one file.'); return; }
      if (files.length !== (insp.info.files || []).length) b.files = files;
    }
    bodies.push(b);
  }
  const submit = $('#add-submit');
  submit.disabled = true;
  const added = [];
  const failures = [];
  try {
    for (const b of bodies) {
      try {
        added.push(await api('POST', '/api/torrents', b));
      } catch (e) {
        failures.push(`${e.code}: ${e.message}`);
      }
    }
  } finally {
    submit.disabled = false;
  }
  for (const t of added) {
    if (!state.torrents.some((x) => x.id === t.id)) state.torrents.push(t);
    toast(`Added “${t.name || t.info_hash}”.`);
  }
  if (added.length) renderList();
  if (failures.length) {
    addError(failures.join('\n'));
    return;
  }
  closeDialog($('#add-dialog'));
}

/* ---- Remove */

function openRemoveDialog() {
  const d = state.detail;
  if (!d) return;
  state.removeTarget = d.id;
  setText($('#remove-name'), d.torrent ? d.torrent.name || d.id : d.id);
  $('#remove-delete-data').checked = false;
  openDialog($('#remove-dialog'));
}

async function confirmRemove(ev) {
  ev.preventDefault();
  const id = state.removeTarget;
  if (!id) return;
  const deleteData = $('#remove-delete-data').checked;
  try {
    await api('DELETE', `/api/torrents/${enc(id)}?delete_data=${deleteData ? 'true' : 'false'}`);
  } catch (e) {
    showError(e);
    return;
  }
  closeDialog($('#remove-dialog'));
  state.removeTarget = null;
  state.torrents = state.torrents.filter((t) => t.id !== id);
  if (state.detail && state.detail.id === id) closeDetail();
  renderList();
  toast(deleteData ? 'Torrent and data removed.' : 'Torrent removed.');
}

/* ---- Settings */

async function openSettings() {
  const s = await tryApi('GET', '/api/settings');
  if (!s) return;
  $('#settings-download-limit').value = String(Math.round((s.download_limit || 0) / 1024));
  $('#settings-upload-limit').value = String(Math.round((s.upload_limit || 0) / 1024));
  setText($('#settings-root'), s.download_root || '–');
  setText($('#settings-port'), s.listen_port === undefined || s.listen_port === null ? '–' : s.listen_port);
  openDialog($('#settings-dialog'));
}

async function saveSettings(ev) {
  ev.preventDefault();
  const kib = (sel) => Math.max(0, Math.floor(Number($(sel).value) || 0)) * 1024;
  const res = await tryApi('PUT', '/api/settings', {
    upload_limit: kib('#settings-upload-limit'),
    download_limit: kib('#settings-download-limit'),
  });
  if (!res) return;
  closeDialog($('#settings-dialog'));
  toast('Settings saved.');
}

/* ---- Login */

function showLogin() {
  document.body.classList.add('logged-out');
  $('#login').hidden = false;
  $('#app').hidden = true;
  closeDetail();
  $('#login-key').focus();
}

async function submitLogin(ev) {
  ev.preventDefault();
  const err = $('#login-error');
  err.hidden = true;
  try {
    await api('POST', '/api/login', { key: $('#login-key').value });
  } catch (e) {
    err.textContent = e.status === 401 ? 'Wrong key.' : e.status === 429 ? 'Too many attempts; wait a little and try again.' : e.message;
    err.hidden = false;
    return;
  }
  $('#login-key').value = '';
  // The page was served without the token to a visitor not logged in yet (login
  // itself needs none); now that the session cookie is set, fetch it.
  await refreshToken();
  $('#login').hidden = true;
  document.body.classList.remove('logged-out');
  startApp();
}

/* --------------------------------------------------------------- 8. Theme, boot */

function currentTheme() {
  let stored = null;
  try { stored = localStorage.getItem('ta-theme'); } catch (_) { stored = null; }
  if (stored === 'dark' || stored === 'light') return stored;
  return window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

/** The colours hang on `data-theme` alone: the stored choice, else the system's. */
function applyTheme() {
  document.documentElement.dataset.theme = currentTheme();
  const btn = $('#theme-toggle');
  const next = currentTheme() === 'dark' ? 'light' : 'dark';
  btn.title = `Switch to the ${next} theme`;
  btn.setAttribute('aria-label', btn.title);
  renderDetail(); // canvases read their colours from the theme
}

function toggleTheme() {
  const next = currentTheme() === 'dark' ? 'light' : 'dark';
  try { localStorage.setItem('ta-theme', next); } catch (_) { /* private mode: theme for this page only */ }
  document.documentElement.dataset.theme = next;
  applyTheme();
}

function startApp() {
  $('#app').hidden = false;
  renderList();
  startListStream();
  // A link to a detail view: #t=<info-hash>[/<tab>]
  const m = /^#t=([0-9a-f]{40})(?:\/([a-z]+))?$/.exec(location.hash);
  if (m) openDetail(m[1], m[2]);
}

function wireEvents() {
  $('#add-button').addEventListener('click', openAddDialog);
  $('#settings-button').addEventListener('click', openSettings);
  $('#theme-toggle').addEventListener('click', toggleTheme);
  $('#filter-text').addEventListener('input', (e) => { state.filter.text = e.target.value; renderList(); });
  $('#label-filter').addEventListener('change', (e) => { state.filter.label = e.target.value; renderList(); });
  for (const th of $$('#torrent-list th[data-sort]')) {
    th.tabIndex = 0;
    th.addEventListener('click', () => onSortClick(th.dataset.sort));
    th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSortClick(th.dataset.sort); } });
  }

  for (const th of $$('#peers-table th[data-peer-sort]')) {
    th.tabIndex = 0;
    th.addEventListener('click', () => onPeerSortClick(th.dataset.peerSort));
    th.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onPeerSortClick(th.dataset.peerSort); } });
  }
  $('#detail-close').addEventListener('click', () => closeDetail());
  for (const b of $$('#detail [data-tab]')) b.addEventListener('click', () => selectTab(b.dataset.tab));
  $('#pause-button').addEventListener('click', () => torrentAction('pause'));
  $('#resume-button').addEventListener('click', () => torrentAction('resume'));
  $('#recheck-button').addEventListener('click', () => torrentAction('recheck'));
  $('#remove-button').addEventListener('click', openRemoveDialog);
  $('#bulk-pause').addEventListener('click', () => bulkAction('pause'));
  $('#bulk-resume').addEventListener('click', () => bulkAction('resume'));
  $('#bulk-remove').addEventListener('click', () => bulkAction('remove'));
  $('#trace-start').addEventListener('click', startTrace);
  $('#trace-save').addEventListener('click', () => downloadTrace(false));
  $('#trace-stop').addEventListener('click', () => downloadTrace(true));
  $('#bulk-clear').addEventListener('click', () => { state.picked.clear(); renderBulkBar(); });
  $('#pick-all').addEventListener('change', (e) => {
    for (const tr of state.rows.values()) {
      if (!tr.parentNode) continue;
      if (e.target.checked) state.picked.add(tr.dataset.id); else state.picked.delete(tr.dataset.id);
    }
    renderBulkBar();
  });
  $('#labels-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const d = state.detail;
    const input = $('#labels-input');
    const add = input.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (!d || !d.torrent || !add.length) return;
    saveLabels(d, [...(d.torrent.labels || []), ...add]).then((res) => { if (res) input.value = ''; });
  });
  $('#limits-form').addEventListener('submit', (e) => { e.preventDefault(); if (state.detail) saveLimits(state.detail); });
  $('#goal-form').addEventListener('submit', (e) => { e.preventDefault(); if (state.detail) saveSeeding(state.detail, false); });
  $('#goal-default').addEventListener('click', () => state.detail && saveSeeding(state.detail, true));
  for (const el of [$('#goal-ratio'), $('#goal-minutes')]) el.addEventListener('input', () => { if (state.detail) state.detail.goalDirty = true; });
  for (const sel of ['#limit-down', '#limit-up']) {
    $(sel).addEventListener('input', () => { if (state.detail) state.detail.limitsDirty = true; });
  }
  $('#files-all').addEventListener('click', () => state.detail && setAllFiles(state.detail, true));
  $('#files-none').addEventListener('click', () => state.detail && setAllFiles(state.detail, false));
  $('#files-apply').addEventListener('click', () => state.detail && applyFiles(state.detail, false));
  $('#files-start').addEventListener('click', () => state.detail && applyFiles(state.detail, true));

  for (const b of $$('#add-dialog [data-add-tab]')) b.addEventListener('click', () => { addError(''); setAddMode(b.dataset.addTab); });
  $('#add-file').addEventListener('change', onAddFileChosen);
  $('#add-path-inspect').addEventListener('click', inspectPath);
  $('#add-path').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); inspectPath(); } });
  $('#add-files-all').addEventListener('click', () => setAllAddFiles(true));
  $('#add-files-none').addEventListener('click', () => setAllAddFiles(false));
  $('#add-form').addEventListener('submit', submitAdd);
  $('#add-cancel').addEventListener('click', () => closeDialog($('#add-dialog')));

  $('#remove-form').addEventListener('submit', confirmRemove);
  $('#remove-cancel').addEventListener('click', () => closeDialog($('#remove-dialog')));
  $('#settings-form').addEventListener('submit', saveSettings);
  $('#settings-cancel').addEventListener('click', () => closeDialog($('#settings-dialog')));
  $('#login-form').addEventListener('submit', submitLogin);

  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && state.detail && !document.querySelector('dialog[open]')) closeDetail();
  });
  // Redraw the canvases on resize (layout only, not a data refresh).
  let resizeQueued = false;
  window.addEventListener('resize', () => {
    if (resizeQueued) return;
    resizeQueued = true;
    requestAnimationFrame(() => { resizeQueued = false; renderDetail(); });
  });
  if (window.matchMedia) {
    const mq = window.matchMedia('(prefers-color-scheme: dark)');
    if (mq.addEventListener) mq.addEventListener('change', applyTheme);
  }
}

async function boot() {
  const meta = document.querySelector('meta[name="ta-token"]');
  state.token = meta ? meta.getAttribute('content') || '' : '';
  applyTheme();
  wireEvents();
  let auth = { required: false, authenticated: true };
  try {
    auth = await api('GET', '/api/auth');
  } catch (e) {
    showError(e);
  }
  if (auth && auth.required && !auth.authenticated) showLogin();
  else startApp();
}

document.addEventListener('DOMContentLoaded', boot);
