//! The live dashboard, served on the daemon's listener: the page and its assets, the
//! login (a pasted token, or a one-time link from `aiops open`), the live sample stream
//! (`/dashboard/stream`, server-sent events) and the last drill's results.
//!
//! The page reads everything else from the REST API (`/api/v1/...`) with the session
//! cookie: services, events, faults, approvals, audit, incidents. It holds no logic the
//! API lacks: approving in the page is `POST /api/v1/approvals/{id}/approve`, the very
//! route (and `Remediator::decide`) `aiops approve` stands beside.
//!
//! Assets are plain ES modules and CSS compiled into the binary (`include_str!`): no build
//! step, nothing fetched from the internet. Charts are hand-written canvas code
//! (`charts.js`), Markdown is rendered by a small escaping renderer (`markdown.js`).
//!
//! Not responsible for: the guards themselves (`crate::http`), the data (library crates
//! through the REST handlers and the observer).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_observe::MetricsQuery;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::http::{SESSION_COOKIE, cookie_matches, guarded, guarded_for_browser};
use crate::rest::RestState;

/// A one-time login link is good for this long.
const LOGIN_CODE_TTL: Duration = Duration::from_secs(120);
/// At most this many unused login links at once (older ones are dropped).
const MAX_LOGIN_CODES: usize = 16;
/// The session cookie lasts this long (then the token is asked for again).
const SESSION_MAX_AGE_S: u64 = 12 * 3600;
/// One live sample per this period.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples a new page gets at once: the charts' three minutes.
const HISTORY: usize = 180;
/// A stream ends after this long; the browser's EventSource reconnects on its own.
const STREAM_MAX: Duration = Duration::from_secs(3600);

const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const CHARTS_JS: &str = include_str!("assets/charts.js");
const MARKDOWN_JS: &str = include_str!("assets/markdown.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// No inline script, nothing from elsewhere: rendered Markdown cannot run code even if
/// the renderer had a hole.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Unused one-time login codes and when they were made.
#[derive(Clone, Default)]
pub struct LoginCodes(Arc<Mutex<HashMap<String, Instant>>>);

impl LoginCodes {
    fn issue(&self) -> String {
        let code = random_hex(24);
        let mut codes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        codes.retain(|_, made| made.elapsed() < LOGIN_CODE_TTL);
        while codes.len() >= MAX_LOGIN_CODES {
            let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, m)| **m)
                .map(|(c, _)| c.clone())
            else {
                break;
            };
            codes.remove(&oldest);
        }
        codes.insert(code.clone(), Instant::now());
        code
    }

    /// True once per issued code, within its lifetime.
    fn redeem(&self, code: &str) -> bool {
        let mut codes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        codes
            .remove(code)
            .is_some_and(|made| made.elapsed() < LOGIN_CODE_TTL)
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
struct Dash {
    rest: RestState,
    token: Arc<str>,
    codes: LoginCodes,
    samples: Samples,
}

/// The dashboard's routes: `/` and `/login` check the token themselves; the assets, the
/// stream and the drill results sit behind the browser guard (bearer or cookie); the
/// login-link route takes the bearer token only (it is what `aiops open` calls).
/// Starts the live sampler, which stops with `cancel`.
pub fn router(rest: RestState, token: String, cancel: CancellationToken) -> Router {
    let dash = Dash {
        samples: Samples::start(rest.clone(), cancel),
        rest,
        token: token.clone().into(),
        codes: LoginCodes::default(),
    };
    let open = Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login_form))
        // The login page's style: public, like the page itself (no data in either).
        .route("/dashboard/style.css", get(|| asset(STYLE_CSS, "text/css")))
        .with_state(dash.clone());
    let browser = Router::new()
        .route(
            "/dashboard/app.js",
            get(|| asset(APP_JS, "text/javascript")),
        )
        .route(
            "/dashboard/charts.js",
            get(|| asset(CHARTS_JS, "text/javascript")),
        )
        .route(
            "/dashboard/markdown.js",
            get(|| asset(MARKDOWN_JS, "text/javascript")),
        )
        .route("/dashboard/stream", get(stream))
        .route("/dashboard/drill", get(drill))
        .route("/dashboard/info", get(info))
        .route("/logout", post(logout))
        .with_state(dash.clone());
    let cli = Router::new()
        .route("/dashboard/login-link", post(login_link))
        .with_state(dash);
    open.merge(guarded_for_browser(browser, token.clone()))
        .merge(guarded(cli, vec![token]))
}

fn page_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The one-time login link must not leak through a Referer to another site.
    // (`no-referrer` would also make Chromium send `Origin: null` with the page's own
    // form posts, which the guards refuse.)
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    page_headers(&mut resp);
    resp
}

fn authed(dash: &Dash, headers: &HeaderMap) -> bool {
    aiops_sandbox::control::token_matches(headers, &dash.token)
        || cookie_matches(headers, &dash.token)
}

/// The dashboard when the request carries the token (header or cookie), the login page
/// otherwise.
async fn index(State(dash): State<Dash>, req: Request) -> Response {
    if !authed(&dash, req.headers()) {
        return Redirect::to("/login").into_response();
    }
    let mut resp = Html(INDEX_HTML).into_response();
    page_headers(&mut resp);
    resp
}

fn login_answer(status: StatusCode, message: &str) -> Response {
    let text = LOGIN_HTML.replace("{{message}}", &html_escape(message));
    let mut resp = (status, Html(text)).into_response();
    page_headers(&mut resp);
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn with_session(token: &str, max_age: u64) -> Response {
    let cookie =
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut resp = Redirect::to(if max_age > 0 { "/" } else { "/login" }).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    page_headers(&mut resp);
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /login`: the form, or with `?code=` a one-time link from `aiops open`.
async fn login_page(
    State(dash): State<Dash>,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return login_answer(
            StatusCode::BAD_REQUEST,
            "The only query key this page takes is `code` (from `aiops open`).",
        );
    };
    match q.code {
        None => login_answer(StatusCode::OK, ""),
        Some(code) if dash.codes.redeem(&code) => {
            tracing::info!(message = "Dashboard login with a one-time link.");
            with_session(&dash.token, SESSION_MAX_AGE_S)
        }
        Some(_) => login_answer(
            StatusCode::UNAUTHORIZED,
            "This login link was already used or has expired (links last 2 minutes). Run \
             `aiops open` again, or paste the token below.",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
}

/// `POST /login`: the pasted token. A foreign `Origin` is refused as everywhere else.
async fn login_form(
    State(dash): State<Dash>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN)
        && !crate::http::is_loopback_origin(origin)
    {
        return login_answer(
            StatusCode::FORBIDDEN,
            "This login form only accepts requests from local pages.",
        );
    }
    let Ok(Form(form)) = form else {
        return login_answer(
            StatusCode::BAD_REQUEST,
            "Send the form's one field, `token`.",
        );
    };
    let given = form.token.trim();
    let mut probe = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {given}")) {
        probe.insert(header::AUTHORIZATION, v);
    }
    if !aiops_sandbox::control::token_matches(&probe, &dash.token) {
        tracing::warn!(message = "Dashboard login refused: wrong token.");
        return login_answer(
            StatusCode::UNAUTHORIZED,
            "Wrong token. It is the content of the state dir's secrets/http-token.",
        );
    }
    tracing::info!(message = "Dashboard login with the token.");
    with_session(&dash.token, SESSION_MAX_AGE_S)
}

async fn logout() -> Response {
    with_session("", 0)
}

/// `POST /dashboard/login-link` (bearer token only): a one-time login path for
/// `aiops open`, so the token itself never appears in a URL, a browser history or a log.
async fn login_link(State(dash): State<Dash>) -> Json<Value> {
    let code = dash.codes.issue();
    Json(json!({
        "path": format!("/login?code={code}"),
        "expires_in_s": LOGIN_CODE_TTL.as_secs(),
    }))
}

/// `GET /dashboard/info`: what this daemon allows, so the page does not ask for what
/// it would be refused (the chaos routes answer 403 without `--allow-chaos`).
async fn info(State(dash): State<Dash>) -> Json<Value> {
    Json(json!({
        "allow_chaos": dash.rest.allow_chaos,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// One live sample: the figures of the charts and tiles, now.
async fn sample(rest: &RestState) -> Value {
    let now = chrono::Utc::now();
    let metrics = rest
        .observer
        .get_metrics(MetricsQuery { window_s: Some(5) })
        .await;
    let status = rest.observer.sandbox_status().await;
    let mut out = json!({ "ts": now.timestamp_millis() });
    match &metrics {
        Ok(m) => {
            out["request_rate"] = json!(m.request_rate_per_s);
            out["error_rate"] = json!(m.error_rate_percent);
            out["p95_ms"] = json!(m.latency.as_ref().map(|l| l.p95_ms));
            out["pool_in_use"] = json!(m.pool.as_ref().map(|p| p.in_use));
            out["pool_size"] = json!(m.pool.as_ref().map(|p| p.max));
        }
        Err(e) => out["metrics_error"] = json!(e.to_string()),
    }
    let resources = metrics.as_ref().map(|m| &m.services).ok();
    match status {
        Ok(s) => {
            out["services"] = s
                .services
                .iter()
                .map(|v| {
                    let r = resources.and_then(|rs| rs.iter().find(|r| r.name == v.name));
                    json!({
                        "name": v.name,
                        "state": v.state,
                        "health": v.health,
                        "uptime_s": v.uptime_s,
                        "restarts": v.restarts,
                        "cpu_percent": r.map(|r| r.cpu_percent_recent.unwrap_or(r.cpu_percent)),
                        "rss_bytes": r.map(|r| r.rss_bytes),
                    })
                })
                .collect();
        }
        Err(e) => out["status_error"] = json!(e.to_string()),
    }
    out
}

/// The live samples: one sampler for the whole daemon (every page shares it), the last
/// [`HISTORY`] kept so a page opened now starts with the recent past, not an empty chart.
#[derive(Clone)]
pub struct Samples {
    recent: Arc<Mutex<VecDeque<Arc<str>>>>,
    tx: broadcast::Sender<Arc<str>>,
}

impl Samples {
    /// Starts sampling `rest` every [`SAMPLE_EVERY`] until `cancel`.
    fn start(rest: RestState, cancel: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(16);
        let samples = Self {
            recent: Arc::default(),
            tx,
        };
        let s = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let one: Arc<str> = sample(&rest).await.to_string().into();
                {
                    let mut recent = s.recent.lock().unwrap_or_else(|p| p.into_inner());
                    if recent.len() >= HISTORY {
                        recent.pop_front();
                    }
                    recent.push_back(one.clone());
                }
                // No page listening is fine.
                let _ = s.tx.send(one);
            }
        });
        samples
    }
}

/// `GET /dashboard/stream`: the recent samples, then a `sample` event every second
/// (server-sent events). A page may see one sample twice (history and live overlap by
/// design, so none is lost); it drops samples not newer than its last.
async fn stream(
    State(dash): State<Dash>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    use futures::StreamExt;
    let rx = dash.samples.tx.subscribe();
    let history: Vec<Arc<str>> = dash
        .samples
        .recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    let live = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(one) => return Some((one, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let events = futures::stream::iter(history)
        .chain(live)
        .take_until(tokio::time::sleep(STREAM_MAX))
        .map(|one| Ok(Event::default().event("sample").data(&*one)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// `GET /dashboard/drill`: `{"drill": ...}`, the last drill (`$STATE/drills/latest.json`)
/// as the table `aiops drill` prints plus its summary; `null` before the first drill.
async fn drill(State(dash): State<Dash>) -> Response {
    let path = dash.rest.state.root().join("drills").join("latest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Json(json!({ "drill": null })).into_response();
        }
        Err(error) => {
            tracing::warn!(message = "Cannot read the last drill.", %error);
            return crate::http::refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot read the last drill's results",
            );
        }
    };
    match serde_json::from_str::<aiops_drill::DrillResults>(&text) {
        Ok(r) => Json(json!({ "drill": {
            "id": r.id,
            "agent": r.agent,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "summary": {
                "trials": r.summary.trials,
                "passed": r.summary.passed,
                "success_rate_percent": r.summary.success_rate_percent,
                "pass_k": r.summary.pass_k,
                "false_positives": r.summary.false_positives,
            },
            "header": aiops_drill::report::HEADER,
            "rows": r.results.iter().map(aiops_drill::report::trial_row).collect::<Vec<_>>(),
        }}))
        .into_response(),
        Err(error) => {
            tracing::warn!(message = "The last drill's results do not parse.", %error);
            crate::http::refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the last drill's results cannot be read",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_codes_are_single_use() {
        let codes = LoginCodes::default();
        let a = codes.issue();
        assert_eq!(a.len(), 48);
        assert!(codes.redeem(&a));
        assert!(!codes.redeem(&a), "a code works once");
        assert!(!codes.redeem("nope"));
    }

    #[test]
    fn login_codes_are_bounded() {
        let codes = LoginCodes::default();
        let first = codes.issue();
        for _ in 0..MAX_LOGIN_CODES {
            codes.issue();
        }
        assert!(codes.0.lock().unwrap().len() <= MAX_LOGIN_CODES);
        assert!(!codes.redeem(&first), "the oldest code was dropped");
    }

    #[test]
    fn login_page_escapes_its_message_and_runs_no_script() {
        assert_eq!(
            html_escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(LOGIN_HTML.contains("{{message}}"));
        assert!(
            !LOGIN_HTML.contains("<script"),
            "the login page runs no script"
        );
        let resp = login_answer(StatusCode::UNAUTHORIZED, "x");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
