//! The control API: how every process other than the daemon drives a running sandbox.
//!
//! The daemon mounts [`router`] on its HTTP listener (next to MCP); [`ControlClient`]
//! implements [`Runtime`] over it, so the CLI and a stdio MCP server use the same trait
//! as code inside the daemon. Every route needs the bearer token from the state dir.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::paths::StateDir;
use crate::runtime::{KillSignal, Runtime, ServiceStats, ServiceStatus};
use crate::topology::Topology;

/// Where a running daemon listens, as written to `run/endpoint.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// e.g. `http://127.0.0.1:7300`
    pub url: String,
    pub pid: u32,
}

impl Endpoint {
    pub fn read(state: &StateDir) -> Option<Self> {
        let bytes = std::fs::read(state.endpoint_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
    pub fn write(&self, state: &StateDir) -> Result<()> {
        crate::paths::write_atomic(
            &state.endpoint_file(),
            &serde_json::to_vec_pretty(self).expect("endpoint serializes"),
            0o644,
        )
    }
}

#[derive(Clone)]
struct Ctx {
    runtime: Arc<dyn Runtime>,
    token: Arc<str>,
    shutdown: Arc<dyn Fn() + Send + Sync>,
}

/// The control routes under `/control/v1`. `shutdown` is called by `POST /shutdown`.
pub fn router(
    runtime: Arc<dyn Runtime>,
    token: String,
    shutdown: Arc<dyn Fn() + Send + Sync>,
) -> axum::Router {
    let ctx = Ctx {
        runtime,
        token: token.into(),
        shutdown,
    };
    axum::Router::new()
        .route("/control/v1/services", get(services))
        .route("/control/v1/services/{name}", get(service))
        .route("/control/v1/services/{name}/stats", get(stats))
        .route("/control/v1/services/{name}/logs", get(logs))
        .route("/control/v1/services/{name}/{op}", post(operate))
        .route("/control/v1/topology", get(topology))
        .route("/control/v1/shutdown", post(shutdown_route))
        .with_state(ctx)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::UnknownService { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn auth(ctx: &Ctx, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
    if token_matches(headers, &ctx.token) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (see the state dir's secrets/http-token)".into(),
        ))
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiError>;

async fn services(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Vec<ServiceStatus>> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.runtime.services().await?))
}

async fn service(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<ServiceStatus> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.runtime.service(&name).await?))
}

async fn stats(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<ServiceStats> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.runtime.stats(&name).await?))
}

#[derive(Deserialize)]
struct LogsQuery {
    tail: Option<usize>,
}

async fn logs(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Vec<String>> {
    auth(&ctx, &h)?;
    let tail = q.tail.unwrap_or(100).min(10_000);
    Ok(Json(ctx.runtime.logs(&name, tail).await?))
}

#[derive(Deserialize)]
struct OpQuery {
    signal: Option<String>,
}

async fn operate(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path((name, op)): Path<(String, String)>,
    Query(q): Query<OpQuery>,
) -> ApiResult<ServiceStatus> {
    auth(&ctx, &h)?;
    let rt = &ctx.runtime;
    let status = match op.as_str() {
        "start" => rt.start(&name).await?,
        "stop" => rt.stop(&name).await?,
        "restart" => rt.restart(&name).await?,
        "kill" => {
            let raw = q.signal.as_deref().unwrap_or("KILL");
            let signal = KillSignal::parse(raw).ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("unknown signal `{raw}`; allowed: TERM, KILL, INT, STOP, CONT"),
                )
            })?;
            rt.kill(&name, signal).await?
        }
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown operation `{other}`; allowed: start, stop, restart, kill"),
            ));
        }
    };
    Ok(Json(status))
}

async fn topology(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Topology> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.runtime.topology().await?))
}

async fn shutdown_route(
    State(ctx): State<Ctx>,
    h: HeaderMap,
) -> std::result::Result<StatusCode, ApiError> {
    auth(&ctx, &h)?;
    (ctx.shutdown)();
    Ok(StatusCode::ACCEPTED)
}

/// A [`Runtime`] that forwards to a running daemon.
#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    token: String,
    http: reqwest::Client,
    /// The runtime the daemon runs (from the state dir's topology), for `kind()`.
    kind: &'static str,
}

/// The runtime a state dir's sandbox runs on, as its topology records it.
pub fn runtime_kind(state: &StateDir) -> &'static str {
    match Topology::load(state).ok().flatten().map(|t| t.runtime) {
        Some(r) if r == "docker" => "docker",
        _ => "process",
    }
}

impl ControlClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            token: token.into(),
            http: reqwest::Client::builder()
                // Stops wait up to 15 s for a service to exit.
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client builds"),
            kind: "process",
        }
    }

    /// Connect to the daemon of this state dir, if one is running.
    pub fn from_state(state: &StateDir) -> Result<Self> {
        let ep = Endpoint::read(state).ok_or_else(|| {
            Error::NotRunning(format!("no {} file", state.endpoint_file().display()))
        })?;
        if !crate::procinfo::is_alive(ep.pid) {
            return Err(Error::NotRunning(format!(
                "the daemon (pid {}) is not running",
                ep.pid
            )));
        }
        let token = std::fs::read_to_string(state.token_file())
            .map_err(|e| Error::NotRunning(format!("cannot read the HTTP token: {e}")))?;
        let mut client = Self::new(ep.url, token.trim());
        client.kind = runtime_kind(state);
        Ok(client)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<T> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                Error::NotRunning(format!("cannot reach the daemon at {}: {e}", self.base))
            })?;
        let status = resp.status();
        if status.is_success() {
            resp.json()
                .await
                .map_err(|e| Error::Control(format!("bad answer from {path}: {e}")))
        } else {
            let body: Option<ErrorBody> = resp.json().await.ok();
            let msg = body.map(|b| b.error).unwrap_or_else(|| status.to_string());
            if status == StatusCode::NOT_FOUND {
                // Known-service lists come back inside the message already.
                return Err(Error::Control(msg));
            }
            Err(Error::Control(msg))
        }
    }

    pub async fn shutdown(&self) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/control/v1/shutdown", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| Error::NotRunning(format!("cannot reach the daemon: {e}")))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Control(format!(
                "shutdown refused: {}",
                resp.status()
            )))
        }
    }

    pub async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        self.call(
            reqwest::Method::GET,
            &format!("/control/v1/services/{name}/logs?tail={tail}"),
        )
        .await
    }
}

#[async_trait::async_trait]
impl Runtime for ControlClient {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn topology(&self) -> Result<Topology> {
        self.call(reqwest::Method::GET, "/control/v1/topology")
            .await
    }
    async fn services(&self) -> Result<Vec<ServiceStatus>> {
        self.call(reqwest::Method::GET, "/control/v1/services")
            .await
    }
    async fn service(&self, name: &str) -> Result<ServiceStatus> {
        self.call(
            reqwest::Method::GET,
            &format!("/control/v1/services/{name}"),
        )
        .await
    }
    async fn start(&self, name: &str) -> Result<ServiceStatus> {
        self.call(
            reqwest::Method::POST,
            &format!("/control/v1/services/{name}/start"),
        )
        .await
    }
    async fn stop(&self, name: &str) -> Result<ServiceStatus> {
        self.call(
            reqwest::Method::POST,
            &format!("/control/v1/services/{name}/stop"),
        )
        .await
    }
    async fn restart(&self, name: &str) -> Result<ServiceStatus> {
        self.call(
            reqwest::Method::POST,
            &format!("/control/v1/services/{name}/restart"),
        )
        .await
    }
    async fn kill(&self, name: &str, signal: KillSignal) -> Result<ServiceStatus> {
        self.call(
            reqwest::Method::POST,
            &format!(
                "/control/v1/services/{name}/kill?signal={}",
                signal.as_str().trim_start_matches("SIG")
            ),
        )
        .await
    }
    async fn stats(&self, name: &str) -> Result<ServiceStats> {
        self.call(
            reqwest::Method::GET,
            &format!("/control/v1/services/{name}/stats"),
        )
        .await
    }
    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        ControlClient::logs(self, name, tail).await
    }
}

/// A [`Runtime`] that finds the daemon of a state dir on every call: it works whether or
/// not the sandbox was up when the caller started (a stdio MCP server launched by Claude
/// Desktop before `aiops up`), and follows a daemon that was restarted.
#[derive(Debug, Clone)]
pub struct DaemonRuntime {
    state: StateDir,
}

impl DaemonRuntime {
    pub fn new(state: StateDir) -> Self {
        Self { state }
    }

    fn client(&self) -> Result<ControlClient> {
        ControlClient::from_state(&self.state)
    }
}

#[async_trait::async_trait]
impl Runtime for DaemonRuntime {
    fn kind(&self) -> &'static str {
        runtime_kind(&self.state)
    }
    async fn topology(&self) -> Result<Topology> {
        match self.client() {
            Ok(c) => c.topology().await,
            // The topology is on disk even when the daemon is down.
            Err(e) => Topology::load(&self.state)?.ok_or(e),
        }
    }
    async fn services(&self) -> Result<Vec<ServiceStatus>> {
        self.client()?.services().await
    }
    async fn service(&self, name: &str) -> Result<ServiceStatus> {
        self.client()?.service(name).await
    }
    async fn start(&self, name: &str) -> Result<ServiceStatus> {
        self.client()?.start(name).await
    }
    async fn stop(&self, name: &str) -> Result<ServiceStatus> {
        self.client()?.stop(name).await
    }
    async fn restart(&self, name: &str) -> Result<ServiceStatus> {
        self.client()?.restart(name).await
    }
    async fn kill(&self, name: &str, signal: KillSignal) -> Result<ServiceStatus> {
        self.client()?.kill(name, signal).await
    }
    async fn stats(&self, name: &str) -> Result<ServiceStats> {
        self.client()?.stats(name).await
    }
    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        match self.client() {
            Ok(c) => c.logs(name, tail).await,
            Err(_) => {
                let topology = Topology::load(&self.state)?
                    .ok_or_else(|| Error::NotRunning("no topology.json".into()))?;
                crate::supervisor::tail_lines(&topology.service(name)?.log_path, tail)
            }
        }
    }
}
