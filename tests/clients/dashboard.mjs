// Drives the aiops dashboard in a real headless Chromium (Debian's `chromium`) with
// playwright-core, for tests/tests/dashboard_e2e.rs. The sandbox is already up; this
// script logs in, watches, and uses the `aiops` CLI the way an operator would beside it.
//
//   node dashboard.mjs live|operate|drill
//
// Environment: AIOPS_BIN (the aiops binary), AIOPS_HOME (the sandbox), DASH_URL (the
// daemon's base URL), DASH_TOKEN (for the pasted-token login), SHOT_DIR (screenshots).
// Prints one JSON object per finished step on stdout; exits 1 with the reason on failure.

import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const AIOPS = env('AIOPS_BIN');
const BASE = env('DASH_URL');
const SHOTS = env('SHOT_DIR');
const scenario = process.argv[2];

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `aiops ARGS`, synchronously, with the sandbox's environment; its stdout. */
function aiops(...args) {
  try {
    return execFileSync(AIOPS, args, { encoding: 'utf8', timeout: 120_000, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    // `aiops action` exits 2 for refused/failed; the caller reads the JSON.
    if (e.stdout) return e.stdout;
    throw new Error(`aiops ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}`);
  }
}

/** Poll `check` until it returns a truthy value, or fail after `ms` naming `what`. */
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function launch() {
  const profile = mkdtempSync(join(tmpdir(), 'aiops-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 1800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const errors = [];
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${m.text()} (${m.location().url})`); });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
  return { context, page, errors, close: async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); } };
}

async function checkCookie(context) {
  const cookies = await context.cookies(BASE);
  const c = cookies.find((x) => x.name === 'aiops_session');
  if (!c) throw new Error(`no session cookie after login: ${JSON.stringify(cookies.map((x) => x.name))}`);
  if (!c.httpOnly || c.sameSite !== 'Strict') throw new Error(`session cookie not HttpOnly+Strict: ${JSON.stringify({ ...c, value: '…' })}`);
}

async function serviceNames() {
  const status = JSON.parse(aiops('status', '--json'));
  return status.services.map((s) => s.name);
}

const dataset = (page, testid, key) => page.getAttribute(`[data-testid="${testid}"]`, `data-${key}`);

async function live() {
  const b = await launch();
  try {
    // Unauthenticated: the login page, and no data.
    await b.page.goto(`${BASE}/`);
    if (!b.page.url().endsWith('/login')) throw new Error(`without a cookie / should lead to /login, got ${b.page.url()}`);
    step('login_page_without_cookie');

    // `aiops open`'s one-time link logs the browser in.
    const link = aiops('open', '--no-browser').trim().split('\n').pop();
    if (!link.startsWith(`${BASE}/login?code=`)) throw new Error(`unexpected link from aiops open: ${link}`);
    await b.page.goto(link);
    if (b.page.url() !== `${BASE}/`) throw new Error(`the login link should forward to /, got ${b.page.url()}`);
    await checkCookie(b.context);
    step('logged_in_with_aiops_open');

    const names = await serviceNames();
    await until('every service tile', 15_000, async () => {
      for (const n of names) if (!(await b.page.isVisible(`[data-testid="tile-${n}"]`))) return false;
      return true;
    });
    const states = {};
    for (const n of names) states[n] = await dataset(b.page, `tile-${n}`, 'state');
    step('tiles', { services: names, states });
    // This daemon runs without --allow-chaos: the page says so rather than failing.
    await until('the chaos-disabled note', 10_000, async () => /Chaos is disabled/.test(await b.page.textContent('[data-testid="faults"]')));

    // A page opens on the recent past (the daemon has been sampling for a while)...
    const history = await until('the recent samples at once', 5_000, async () => {
      const n = Number(await dataset(b.page, 'chart-rate', 'samples'));
      return n >= 3 ? n : false;
    });
    step('history', { samples: history });
    // ...and the charts move on their own (one sample a second)...
    const s0 = Number(await dataset(b.page, 'chart-rate', 'samples'));
    await until('two more samples', 10_000, async () => Number(await dataset(b.page, 'chart-rate', 'samples')) >= s0 + 2);
    step('stream_ticks');

    // ...and the request rate rises while `aiops load` runs.
    const load = spawn(AIOPS, ['load', '--rps', '30', '--duration', '15'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let loadOut = '';
    load.stdout.on('data', (d) => { loadOut += d; });
    load.stderr.on('data', (d) => { loadOut += d; });
    const loadDone = new Promise((r) => load.on('exit', r));
    const rate = await until('the request-rate chart to show the load', 20_000, async () => {
      const v = Number(await dataset(b.page, 'chart-rate', 'last'));
      return v >= 5 ? v : false;
    });
    const cpu = await dataset(b.page, 'chart-cpu', 'samples');
    step('rate_chart_follows_load', { rate, cpu_samples: Number(cpu) });
    await b.page.screenshot({ path: join(SHOTS, 'dashboard-live.png'), fullPage: true });
    const code = await loadDone;
    if (code !== 0) throw new Error(`aiops load exited ${code}: ${loadOut}`);
    step('screenshot', { path: join(SHOTS, 'dashboard-live.png') });

    // Logging out clears the cookie: the page is the login page again.
    await b.page.click('header form button[type=submit]');
    await b.page.waitForURL(`${BASE}/login`, { timeout: 10_000 });
    if ((await b.context.cookies(BASE)).some((c) => c.name === 'aiops_session' && c.value)) {
      throw new Error('the session cookie survived the logout');
    }
    await b.page.goto(`${BASE}/`);
    if (!b.page.url().endsWith('/login')) throw new Error(`after logout / should lead to /login, got ${b.page.url()}`);
    step('logged_out');

    if (b.errors.length) throw new Error(`the page logged errors: ${b.errors.join(' | ')}`);
  } finally {
    await b.close();
  }
}

async function operate() {
  const b = await launch();
  try {
    // Log in by pasting the token into the form; a wrong one is refused first.
    await b.page.goto(`${BASE}/login`);
    await b.page.fill('#token', 'not-the-token');
    await b.page.click('button[type=submit]');
    const message = await b.page.textContent('[data-testid="login-message"]');
    if (!/Wrong token/.test(message)) throw new Error(`a wrong token should be refused, page says: ${message}`);
    b.errors.length = 0; // that 401 was the point
    await b.page.fill('#token', env('DASH_TOKEN'));
    await b.page.click('button[type=submit]');
    await b.page.waitForURL(`${BASE}/`, { timeout: 10_000 });
    await checkCookie(b.context);
    step('logged_in_with_pasted_token');

    // A fault injected through the CLI appears, with a marker on the charts...
    const injected = aiops('chaos', 'inject', 'latency', '--ttl', '300s');
    const id = /Fault (f-[0-9a-f]+)/.exec(injected)?.[1];
    if (!id) throw new Error(`no fault id in: ${injected}`);
    const row = `[data-testid="fault-latency"][data-id="${id}"]`;
    await b.page.waitForSelector(row, { timeout: 15_000 });
    await until('a fault marker on the charts', 15_000, async () => Number(await dataset(b.page, 'chart-p95', 'markers')) > 0);
    step('fault_shown', { id });
    // ...and its stop button reverts it.
    await b.page.click(`${row} [data-testid="stop"]`);
    await b.page.waitForSelector(row, { state: 'detached', timeout: 30_000 });
    step('fault_stopped_in_page', { id });

    // An action the policy gates waits for a person...
    const asked = JSON.parse(aiops('action', 'restart_service', '--param', 'service=worker', '--json'));
    if (asked.status !== 'pending_approval' || !asked.approval_id) {
      throw new Error(`restart_service should wait for approval: ${JSON.stringify(asked)}`);
    }
    const approval = `[data-testid="approval-${asked.approval_id}"]`;
    await b.page.waitForSelector(approval, { timeout: 15_000 });
    await b.page.screenshot({ path: join(SHOTS, 'dashboard-approval.png'), fullPage: true });
    // ...is approved in the page...
    await b.page.click(`${approval} [data-testid="approve"]`);
    await b.page.waitForSelector(approval, { state: 'detached', timeout: 15_000 });
    step('approved_in_page', { approval_id: asked.approval_id });
    // ...and then runs.
    const ran = JSON.parse(aiops('action', 'restart_service', '--param', 'service=worker', '--approval-id', asked.approval_id, '--json'));
    if (ran.status !== 'executed') throw new Error(`the approved action should run: ${JSON.stringify(ran)}`);
    step('approved_action_ran', { status: ran.status });
    // The audit table shows it.
    await until('the executed action in the audit table', 15_000, async () => /executed/.test(await b.page.textContent('[data-testid="audit"]')));

    // An incident report is rendered from Markdown, with its text escaped: filed from the
    // page's own origin with the session cookie, as any same-origin script could.
    const filed = await b.page.evaluate(async () => {
      const r = await fetch('/api/v1/incidents', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          title: 'Slow products <img src=x onerror="window.pwned=1">',
          what_broke: 'A **lock** on `products`.',
          what_was_done: ['kill_db_sessions: 1 session'],
          why: 'The holder was idle in transaction.',
          resolved: true,
        }),
      });
      return { status: r.status, body: await r.json() };
    });
    if (filed.status !== 200) throw new Error(`filing a report from the page: ${JSON.stringify(filed)}`);
    const incident = `[data-testid="incident"][data-id="${filed.body.id}"]`;
    await b.page.waitForSelector(incident, { timeout: 20_000 });
    const rendered = await b.page.evaluate((sel) => {
      const a = document.querySelector(sel);
      return { h1: a.querySelector('h1')?.textContent, strong: [...a.querySelectorAll('strong')].map((e) => e.textContent),
               code: a.querySelector('code')?.textContent, imgs: a.querySelectorAll('img').length,
               items: a.querySelectorAll('li').length, pwned: window.pwned ?? null };
    }, incident);
    if (!rendered.h1?.includes('<img src=x') || rendered.imgs !== 0 || rendered.pwned !== null
        || !rendered.strong.includes('lock') || rendered.code !== 'products' || rendered.items < 1) {
      throw new Error(`the report is not rendered safely: ${JSON.stringify(rendered)}`);
    }
    step('incident_rendered', rendered);
    await b.page.screenshot({ path: join(SHOTS, 'dashboard-operate.png'), fullPage: true });
    step('screenshot', { path: join(SHOTS, 'dashboard-operate.png') });

    if (b.errors.length) throw new Error(`the page logged errors: ${b.errors.join(' | ')}`);
  } finally {
    await b.close();
  }
}

async function drill() {
  const b = await launch();
  try {
    const link = aiops('open', '--no-browser').trim().split('\n').pop();
    await b.page.goto(link);
    await checkCookie(b.context);
    // The last drill's table, as `aiops drill` printed it.
    const rows = await until('the drill table', 20_000, async () => {
      const r = await b.page.$$eval('[data-testid="drill"] tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      return r.length ? r : false;
    });
    const summary = await b.page.textContent('[data-testid="drill"] p');
    await b.page.screenshot({ path: join(SHOTS, 'dashboard-drill.png'), fullPage: true });
    step('drill_table', { rows, summary });
    if (b.errors.length) throw new Error(`the page logged errors: ${b.errors.join(' | ')}`);
  } finally {
    await b.close();
  }
}

const scenarios = { live, operate, drill };
if (!scenarios[scenario]) {
  console.error(`usage: node dashboard.mjs ${Object.keys(scenarios).join('|')}`);
  process.exit(2);
}
const watchdog = setTimeout(() => { console.error('dashboard.mjs: overall timeout (180 s)'); process.exit(1); }, 180_000);
try {
  await scenarios[scenario]();
  clearTimeout(watchdog);
} catch (e) {
  console.error(`dashboard.mjs ${scenario}: ${e.stack ?? e}`);
  process.exit(1);
}
