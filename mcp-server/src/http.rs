//! The HTTP listener's MCP side: Streamable HTTP at `/mcp`, the legacy HTTP+SSE transport
//! at `/sse` + `/messages`, and the guards in front of both.
//!
//! Guards, in order: the `Origin` header, when present, must be a loopback origin (DNS
//! rebinding protection, as the MCP spec asks) → 403; the bearer token from the state dir
//! is required → 401; request bodies are capped → 413. rmcp additionally checks `Host`.
//!
//! Routes a browser uses (the dashboard, the REST API, `/metrics`) also accept the token
//! in the HttpOnly, SameSite=Strict session cookie the dashboard's login sets
//! ([`SESSION_COOKIE`]). SameSite ignores ports, so another page on the loopback (a dev
//! server on :3000) would still send the cookie: a request authenticated by the cookie
//! alone must therefore come from this very origin (`Origin` equal to `http://{Host}`,
//! required on anything but GET/HEAD) and not be a cross-site fetch (`Sec-Fetch-Site`),
//! else 403. The MCP, exam and control routes take the bearer header only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use crate::mcp::AiopsServer;

/// The Streamable HTTP session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// Largest request body accepted on the MCP routes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Name of the dashboard's session cookie; its value is the HTTP token.
pub const SESSION_COOKIE: &str = "aiops_session";

#[derive(Clone)]
struct Guard {
    /// Any of these bearer tokens opens the routes.
    tokens: Arc<[String]>,
    /// The session cookie is accepted too (browser routes).
    cookie: bool,
    /// Which token opened each Streamable HTTP session (`Mcp-Session-Id`), when more
    /// than one token opens the routes: a session belongs to the client that opened it.
    owners: Arc<Mutex<SessionOwners>>,
}

/// Session id → index of the token that opened it, oldest forgotten first beyond
/// [`MAX_TRACKED_SESSIONS`] (a forgotten session is refused, never handed to another token).
#[derive(Default)]
struct SessionOwners {
    owner: HashMap<String, usize>,
    order: VecDeque<String>,
    /// Ids dropped from `owner`: refused from then on.
    forgotten: HashSet<String>,
}

const MAX_TRACKED_SESSIONS: usize = 4096;

impl SessionOwners {
    fn record(&mut self, id: String, token: usize) {
        if self.owner.contains_key(&id) {
            return;
        }
        if self.order.len() >= MAX_TRACKED_SESSIONS
            && let Some(old) = self.order.pop_front()
        {
            self.owner.remove(&old);
            if self.forgotten.len() < MAX_TRACKED_SESSIONS * 4 {
                self.forgotten.insert(old);
            }
        }
        self.order.push_back(id.clone());
        self.owner.insert(id, token);
    }

    /// May the client holding token `token` use session `id`?
    fn allows(&self, id: &str, token: usize) -> bool {
        match self.owner.get(id) {
            Some(owner) => *owner == token,
            // Unknown to us: the session manager answers (404) unless we forgot it.
            None => !self.forgotten.contains(id),
        }
    }
}

fn streamable(
    make_server: impl Fn() -> AiopsServer + Send + Sync + 'static,
    cancel: &CancellationToken,
) -> StreamableHttpService<AiopsServer, LocalSessionManager> {
    StreamableHttpService::new(
        move || Ok(make_server()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default()
            .with_cancellation_token(cancel.child_token())
            .with_max_request_body_bytes(MAX_BODY_BYTES),
    )
}

/// `router` behind the guards; any of `tokens` opens it.
pub(crate) fn guarded(router: Router, tokens: Vec<String>) -> Router {
    guard_with(router, tokens, false)
}

/// `router` behind the guards, opened by `token` as a bearer header or, from this origin
/// only, as the session cookie: the dashboard and the API it calls.
pub(crate) fn guarded_for_browser(router: Router, token: String) -> Router {
    guard_with(router, vec![token], true)
}

fn guard_with(router: Router, tokens: Vec<String>, cookie: bool) -> Router {
    let guard = Guard {
        tokens: tokens.into(),
        cookie,
        owners: Arc::default(),
    };
    router
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            MAX_BODY_BYTES,
        ))
        .layer(middleware::from_fn_with_state(guard, check_request))
}

/// The MCP routes, guarded. `make_server` builds one server per MCP session.
pub fn mcp_router(
    make_server: impl Fn() -> AiopsServer + Send + Sync + Clone + 'static,
    token: String,
    cancel: CancellationToken,
) -> Router {
    let router = Router::new()
        .nest_service("/mcp", streamable(make_server.clone(), &cancel))
        .merge(crate::sse::router(make_server, cancel));
    guarded(router, vec![token])
}

/// The exam surface at `/exam/mcp` (Streamable HTTP): `make_server` must build exam-mode
/// servers. Opened by the exam token (which opens nothing else) or the main token.
pub fn exam_router(
    make_server: impl Fn() -> AiopsServer + Send + Sync + 'static,
    exam_token: String,
    main_token: String,
    cancel: CancellationToken,
) -> Router {
    let router = Router::new().nest_service("/exam/mcp", streamable(make_server, &cancel));
    guarded(router, vec![exam_token, main_token])
}

/// Set by the guard (and only by it: a client's own is removed) on requests the session
/// cookie opened, so the audit log can say `dashboard` rather than a browser's User-Agent.
pub(crate) const VIA_DASHBOARD: &str = "x-aiops-via-dashboard";

async fn check_request(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    req.headers_mut().remove(VIA_DASHBOARD);
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !is_loopback_origin(origin)
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "the Origin header names a non-loopback site; this server only accepts requests \
             from local pages (DNS rebinding protection)",
        );
    }
    let bearer = guard
        .tokens
        .iter()
        .position(|t| aiops_sandbox::control::token_matches(req.headers(), t));
    let cookie = if bearer.is_none() && guard.cookie {
        guard
            .tokens
            .iter()
            .position(|t| cookie_matches(req.headers(), t))
    } else {
        None
    };
    if cookie.is_some()
        && let Err(why) = same_origin(&req)
    {
        return refuse(StatusCode::FORBIDDEN, "cross_origin", why);
    }
    if cookie.is_some() {
        req.headers_mut()
            .insert(VIA_DASHBOARD, HeaderValue::from_static("1"));
    }
    let Some(token) = bearer.or(cookie) else {
        let mut resp = refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send `Authorization: Bearer <token>` with the \
             token from the state dir's secrets/http-token (printed by `aiops up`)",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };
    // With one token there is one client identity; with several (the exam surface), a
    // session opened with one token is refused to the others.
    let bind_sessions = guard.tokens.len() > 1;
    if bind_sessions
        && let Some(id) = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        && !guard
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allows(id, token)
    {
        return refuse(
            StatusCode::NOT_FOUND,
            "session_not_yours",
            "this session was opened by another client; initialise your own session",
        );
    }
    let resp = next.run(req).await;
    if bind_sessions
        && let Some(id) = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        guard
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(id.to_string(), token);
    }
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("request body over the {MAX_BODY_BYTES}-byte limit"),
        );
    }
    resp
}

/// Whether the request carries the session cookie holding `token` (constant time).
pub(crate) fn cookie_matches(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let mut found = false;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, given)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
            {
                let (a, b) = (given.as_bytes(), token.as_bytes());
                found |= a.len() == b.len()
                    && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
            }
        }
    }
    found
}

/// A cookie-authenticated request must come from this origin: the cookie is sent by the
/// browser whoever made the page, so without this any local page could act with it.
pub(crate) fn same_origin(req: &Request) -> Result<(), &'static str> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err("a cross-site request cannot use the session cookie; send the bearer token");
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => match host {
            Some(host) if origin == format!("http://{host}") => Ok(()),
            _ => Err(
                "the Origin header does not match this server: the session cookie only \
                      works for the dashboard's own pages",
            ),
        },
        None if matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) =>
        {
            Ok(())
        }
        None => Err(
            "a state-changing request with the session cookie must carry the \
                     dashboard's Origin header (or use the bearer token)",
        ),
    }
}

pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// `http(s)://localhost|127.x.x.x|[::1](:port)`; `null` (a sandboxed page) is not loopback.
pub fn is_loopback_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, _)) => h,
            None => return false,
        }
    } else {
        rest.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_belongs_to_the_token_that_opened_it() {
        let mut owners = SessionOwners::default();
        owners.record("s1".into(), 0);
        assert!(owners.allows("s1", 0));
        assert!(!owners.allows("s1", 1));
        // A second response naming the session does not change its owner.
        owners.record("s1".into(), 1);
        assert!(!owners.allows("s1", 1));
        assert!(owners.allows("unknown", 1));
        for i in 0..MAX_TRACKED_SESSIONS {
            owners.record(format!("x{i}"), 1);
        }
        // Forgotten, so refused to everyone rather than handed over.
        assert!(!owners.allows("s1", 0) && !owners.allows("s1", 1));
        assert_eq!(owners.owner.len(), MAX_TRACKED_SESSIONS);
    }

    #[test]
    fn loopback_origins() {
        for ok in [
            "http://localhost:7300",
            "http://127.0.0.1",
            "https://127.0.0.2:8443",
            "http://[::1]:7300",
        ] {
            assert!(is_loopback_origin(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "http://[::2]:80",
        ] {
            assert!(!is_loopback_origin(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
