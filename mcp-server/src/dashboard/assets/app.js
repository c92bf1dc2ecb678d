// The dashboard: live samples from /dashboard/stream (server-sent events), everything
// else from the REST API (/api/v1/...), with the session cookie the login set.
// DOM is built with textContent only; the one HTML string (a rendered incident report)
// comes from markdown.js, which escapes first.

import { LineChart } from '/dashboard/charts.js';
import { renderMarkdown } from '/dashboard/markdown.js';

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ''));
  return e;
}

function showError(message) {
  const p = $('error');
  p.textContent = message;
  p.hidden = !message;
}

async function api(path, options = {}) {
  const resp = await fetch(path, { credentials: 'same-origin', ...options });
  if (resp.status === 401) {
    window.location.assign('/login');
    throw new Error('not logged in');
  }
  let body = null;
  try { body = await resp.json(); } catch { body = null; }
  return { status: resp.status, ok: resp.ok, body };
}

const errorMessage = (r) => r.body?.error?.message ?? r.body?.message ?? `HTTP ${r.status}`;

function fmtUptime(s) {
  if (s == null) return '-';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
const fmtNum = (v, d = 1) => (v == null ? '-' : Number(v).toFixed(d));
const fmtMb = (b) => (b == null ? '-' : `${(b / 1048576).toFixed(0)} MB`);
const fmtTime = (ts) => new Date(ts).toLocaleTimeString();

// ---- live charts and tiles --------------------------------------------------------

const charts = {
  rate: new LineChart($('chart-rate'), { title: 'Request rate', unit: 'req/s' }),
  errors: new LineChart($('chart-errors'), { title: 'Error rate (5xx)', unit: '%' }),
  p95: new LineChart($('chart-p95'), { title: 'Latency p95', unit: 'ms' }),
  pool: new LineChart($('chart-pool'), { title: 'DB pool', unit: 'connections', format: (v) => v.toFixed(0) }),
  cpu: new LineChart($('chart-cpu'), { title: 'CPU per service', unit: '% of a core' }),
  mem: new LineChart($('chart-mem'), { title: 'Memory per service', unit: 'MB', format: (v) => v.toFixed(0) }),
};

function renderTiles(services) {
  const tiles = $('tiles');
  tiles.replaceChildren(...services.map((s) => {
    const cls = s.state === 'running' ? s.health : s.state;
    return el('div', { class: `tile ${cls}`, 'data-testid': `tile-${s.name}`, dataset: { state: s.state, health: s.health } },
      el('h3', {}, s.name),
      el('dl', {},
        el('dt', {}, 'state'), el('dd', { 'data-testid': 'state' }, s.state),
        el('dt', {}, 'health'), el('dd', {}, s.health),
        el('dt', {}, 'uptime'), el('dd', {}, fmtUptime(s.uptime_s)),
        el('dt', {}, 'restarts'), el('dd', {}, String(s.restarts)),
        el('dt', {}, 'CPU'), el('dd', {}, s.cpu_percent == null ? '-' : `${fmtNum(s.cpu_percent)} %`),
        el('dt', {}, 'memory'), el('dd', {}, fmtMb(s.rss_bytes))));
  }));
}

let lastTs = 0;
function onSample(sample) {
  const ts = sample.ts;
  if (ts <= lastTs) return; // history and live overlap by one sample at most
  lastTs = ts;
  charts.rate.push(ts, { 'req/s': sample.request_rate });
  charts.errors.push(ts, { '5xx %': sample.error_rate });
  charts.p95.push(ts, { p95: sample.p95_ms });
  charts.pool.push(ts, { 'in use': sample.pool_in_use, size: sample.pool_size });
  const services = sample.services ?? [];
  charts.cpu.push(ts, Object.fromEntries(services.map((s) => [s.name, s.cpu_percent])));
  charts.mem.push(ts, Object.fromEntries(services.map((s) => [s.name, s.rss_bytes == null ? null : s.rss_bytes / 1048576])));
  if (services.length) renderTiles(services);
  const live = $('live');
  live.textContent = `live · ${fmtTime(ts)}`;
  live.className = 'live on';
}

function connect() {
  const source = new EventSource('/dashboard/stream');
  source.addEventListener('sample', (e) => onSample(JSON.parse(e.data)));
  source.onerror = () => {
    const live = $('live');
    live.textContent = 'stream lost, reconnecting…';
    live.className = 'live';
  };
}

// ---- lists from the REST API ------------------------------------------------------

function table(head, rows, empty) {
  if (!rows.length) return el('p', { class: 'empty' }, empty);
  return el('table', {},
    el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))),
    el('tbody', {}, ...rows));
}

async function act(button, path, after) {
  button.disabled = true;
  const r = await api(path, { method: 'POST' });
  if (!r.ok) showError(`${path}: ${errorMessage(r)}`); else showError('');
  await after();
}

let info = null;
async function refreshFaults() {
  const box = $('faults');
  if (!info) info = (await api('/dashboard/info')).body;
  if (!info?.allow_chaos) {
    box.replaceChildren(el('p', { class: 'empty' }, 'Chaos is disabled on this daemon (aiops up --allow-chaos).'));
    return;
  }
  const r = await api('/api/v1/chaos');
  if (!r.ok) { box.replaceChildren(el('p', { class: 'error' }, errorMessage(r))); return; }
  const active = r.body.faults.filter((f) => ['injecting', 'active', 'reverting'].includes(f.state));
  box.replaceChildren(table(['fault', 'state', 'since', 'lease until', ''], active.map((f) =>
    el('tr', { 'data-testid': `fault-${f.fault}`, dataset: { id: f.id } },
      el('td', {}, f.fault), el('td', {}, f.state), el('td', {}, fmtTime(f.injected_at)),
      el('td', {}, fmtTime(f.lease_expires_at)),
      el('td', {}, el('button', { class: 'danger', 'data-testid': 'stop', onclick: (e) => act(e.target, `/api/v1/chaos/${encodeURIComponent(f.id)}/stop`, refreshAll) }, 'Stop')))),
    'No active fault.'));
}

async function refreshApprovals() {
  const r = await api('/api/v1/approvals');
  const box = $('approvals');
  if (!r.ok) { box.replaceChildren(el('p', { class: 'error' }, errorMessage(r))); return; }
  box.replaceChildren(table(['action', 'parameters', 'asked by', 'at', ''], r.body.approvals.map((a) =>
    el('tr', { 'data-testid': `approval-${a.id}`, dataset: { action: a.action } },
      el('td', {}, a.action), el('td', {}, el('code', {}, JSON.stringify(a.params))),
      el('td', {}, a.caller?.client ?? ''), el('td', {}, fmtTime(a.requested_at)),
      el('td', {},
        el('button', { class: 'go', 'data-testid': 'approve', onclick: (e) => act(e.target, `/api/v1/approvals/${encodeURIComponent(a.id)}/approve`, refreshAll) }, 'Approve'),
        ' ',
        el('button', { class: 'danger', 'data-testid': 'deny', onclick: (e) => act(e.target, `/api/v1/approvals/${encodeURIComponent(a.id)}/deny`, refreshAll) }, 'Deny')))),
    'Nothing waits for a decision.'));
}

const markerKind = (kind) => (kind.startsWith('fault_') ? 'fault' : kind.startsWith('action_') ? 'action' : null);

async function refreshEvents() {
  const r = await api('/api/v1/events?since=10m&limit=200');
  if (!r.ok) return;
  const events = r.body.events ?? [];
  const markers = events.filter((e) => markerKind(e.kind)).map((e) => ({ ts: Date.parse(e.ts), kind: markerKind(e.kind), label: e.kind }));
  for (const c of Object.values(charts)) c.setMarkers(markers);
  $('events').replaceChildren(table(['time', 'kind', 'service', 'detail'], events.map((e) =>
    el('tr', { class: markerKind(e.kind) ? `kind-${markerKind(e.kind)}` : '' },
      el('td', {}, fmtTime(e.ts)), el('td', {}, e.kind), el('td', {}, e.service ?? ''), el('td', {}, e.detail))),
    'No events in the last 10 minutes.'));
}

async function refreshAudit() {
  const r = await api('/api/v1/audit?limit=50');
  if (!r.ok) return;
  const lines = [...(r.body.entries ?? [])].reverse();
  $('audit').replaceChildren(table(['time', 'event', 'action', 'by', 'result', 'ms'], lines.map((l) =>
    el('tr', {},
      el('td', {}, l.time ? fmtTime(l.time) : ''), el('td', {}, l.event ?? ''), el('td', {}, l.action ?? l.approval_id ?? ''),
      el('td', {}, l.client ?? l.decided_by ?? l.by ?? ''), el('td', {}, l.status ?? l.state ?? l.policy?.decision ?? ''),
      el('td', { class: 'num' }, l.duration_ms == null ? '' : String(l.duration_ms)))),
    'The audit log is empty.'));
}

let shownIncident = null;
let incidentPicked = false; // once a person picks one, new reports do not replace it
async function showIncident(id) {
  const r = await api(`/api/v1/incidents/${encodeURIComponent(id)}`);
  if (!r.ok) return;
  shownIncident = id;
  const box = $('incident');
  box.innerHTML = renderMarkdown(r.body.markdown);
  box.dataset.id = id;
}

async function refreshIncidents() {
  const r = await api('/api/v1/incidents');
  if (!r.ok) return;
  const list = r.body.incidents ?? [];
  $('incidents').replaceChildren(table(['filed', 'title', 'resolved'], list.map((i) =>
    el('tr', { class: 'pick', onclick: () => { incidentPicked = true; showIncident(i.id); }, 'data-testid': `incident-${i.id}` },
      el('td', {}, fmtTime(i.created_at)), el('td', {}, i.title),
      el('td', { class: i.resolved ? 'pass' : 'fail' }, i.resolved ? 'yes' : 'no'))),
    'No incident reports yet.'));
  if (list.length && (!incidentPicked || !list.some((i) => i.id === shownIncident)) && list[0].id !== shownIncident) {
    await showIncident(list[0].id);
  }
}

async function refreshDrill() {
  const r = await api('/dashboard/drill');
  const box = $('drill');
  if (!r.ok) { box.replaceChildren(el('p', { class: 'error' }, errorMessage(r))); return; }
  const d = r.body.drill;
  if (!d) { box.replaceChildren(el('p', { class: 'empty' }, 'No drill has run yet (aiops drill).')); return; }
  box.replaceChildren(
    el('p', {}, `${d.id} · agent ${d.agent} · ${new Date(d.finished_at).toLocaleString()} · passed ${d.summary.passed}/${d.summary.trials} (${fmtNum(d.summary.success_rate_percent, 0)} %) · pass^k ${d.summary.pass_k[0]}/${d.summary.pass_k[1]} faults`),
    table(d.header, d.rows.map((row) => el('tr', {}, ...row.map((c, i) =>
      el('td', { class: i === row.length - 1 ? (c === 'PASS' ? 'pass' : 'fail') : '' }, c)))), 'No trials.'));
}

let slow = 0;
let busy = false; // a slow answer must not pile refreshes up
async function refreshAll() {
  if (busy) return;
  busy = true;
  try {
    await Promise.all([refreshFaults(), refreshApprovals(), refreshEvents(), refreshAudit()]);
    if (slow++ % 5 === 0) await Promise.all([refreshIncidents(), refreshDrill()]);
  } catch (e) {
    showError(String(e));
  } finally {
    busy = false;
  }
}

connect();
refreshAll();
setInterval(refreshAll, 2000);
