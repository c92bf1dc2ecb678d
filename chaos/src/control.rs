//! The chaos routes of the daemon's control API (`/control/v1/chaos/...`) and
//! [`ChaosClient`], which calls them: the CLI and a stdio MCP server inject and stop
//! faults in the daemon, where session-holding faults can live as long as their lease.
//!
//! Every route needs the bearer token of the state dir (401 otherwise). Errors are JSON
//! `{"error": "...", "kind": "...", "field"?: "...", "known"?: [...]}`: 400 for bad input
//! (naming the field), 404 for an unknown fault or id, 409 for a fault that is not active,
//! 500 for a failed inject or revert.

use std::sync::Arc;
use std::time::Duration;

use aiops_sandbox::StateDir;
use aiops_sandbox::control::{Endpoint, token_matches};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::{ChaosEngine, ChaosError, FaultInfo, FaultRecord, InjectOutcome, InjectRequest};

#[derive(Clone)]
struct Ctx {
    engine: ChaosEngine,
    token: Arc<str>,
}

/// The chaos routes; merge them into the daemon's router.
pub fn router(engine: ChaosEngine, token: String) -> axum::Router {
    axum::Router::new()
        .route("/control/v1/chaos/faults", get(faults))
        .route("/control/v1/chaos/status", get(status))
        .route("/control/v1/chaos/inject", post(inject))
        .route("/control/v1/chaos/stop-all", post(stop_all))
        .route("/control/v1/chaos/leftovers", get(leftovers))
        .route("/control/v1/chaos/{id}/stop", post(stop))
        .route("/control/v1/chaos/{id}/auto-revert", post(auto_revert))
        .with_state(Ctx {
            engine,
            token: token.into(),
        })
}

/// The error body of every chaos route.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// `unauthorized`, `bad_request`, `unknown_fault`, `invalid_param`, `unknown_id`,
    /// `not_active`, `ledger`, `inject`, `revert`, `other`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Vec<String>>,
}

struct ApiError(StatusCode, ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn body(kind: &str, error: String) -> ErrorBody {
    ErrorBody {
        error,
        kind: kind.into(),
        field: None,
        known: None,
    }
}

impl From<ChaosError> for ApiError {
    fn from(e: ChaosError) -> Self {
        let msg = e.to_string();
        match e {
            ChaosError::UnknownFault { known, .. } => ApiError(
                StatusCode::NOT_FOUND,
                ErrorBody {
                    known: Some(known),
                    ..body("unknown_fault", msg)
                },
            ),
            ChaosError::InvalidParam { field, .. } => ApiError(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    field: Some(field),
                    ..body("invalid_param", msg)
                },
            ),
            ChaosError::UnknownId(_) => ApiError(StatusCode::NOT_FOUND, body("unknown_id", msg)),
            ChaosError::NotActive(_) => ApiError(StatusCode::CONFLICT, body("not_active", msg)),
            ChaosError::Ledger(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, body("ledger", msg))
            }
            ChaosError::Inject(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, body("inject", msg))
            }
            ChaosError::Revert(_) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, body("revert", msg))
            }
            ChaosError::Other(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, body("other", msg)),
        }
    }
}

fn auth(ctx: &Ctx, headers: &HeaderMap) -> Result<(), ApiError> {
    if token_matches(headers, &ctx.token) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            body(
                "unauthorized",
                "missing or wrong bearer token (see the state dir's secrets/http-token)".into(),
            ),
        ))
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn leftovers(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Vec<String>> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.engine.leftovers().await?))
}

async fn faults(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Vec<FaultInfo>> {
    auth(&ctx, &h)?;
    Ok(Json(ChaosEngine::catalogue()))
}

async fn status(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Vec<FaultRecord>> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.engine.status().await?))
}

async fn inject(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    req: Result<Json<InjectRequest>, JsonRejection>,
) -> ApiResult<InjectOutcome> {
    auth(&ctx, &h)?;
    // serde's message names the field (`unknown field `ttl`, expected one of ...`).
    let Json(req) = req.map_err(|e| {
        let text = e.body_text();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("field"))
            .map(str::to_string);
        ApiError(
            StatusCode::BAD_REQUEST,
            ErrorBody {
                field,
                ..body("bad_request", text)
            },
        )
    })?;
    Ok(Json(ctx.engine.inject(req).await?))
}

async fn stop(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<FaultRecord> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.engine.stop(&id).await?))
}

async fn stop_all(State(ctx): State<Ctx>, h: HeaderMap) -> ApiResult<Vec<FaultRecord>> {
    auth(&ctx, &h)?;
    Ok(Json(ctx.engine.stop_all().await?))
}

#[derive(Deserialize)]
struct AutoRevertQuery {
    enabled: Option<String>,
}

async fn auto_revert(
    State(ctx): State<Ctx>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<AutoRevertQuery>,
) -> ApiResult<FaultRecord> {
    auth(&ctx, &h)?;
    let enabled = match q.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    field: Some("enabled".into()),
                    ..body(
                        "bad_request",
                        format!(
                            "query parameter `enabled` must be true or false (got {})",
                            other.unwrap_or("nothing")
                        ),
                    )
                },
            ));
        }
    };
    Ok(Json(ctx.engine.set_auto_revert(&id, enabled).await?))
}

/// The chaos API of a running daemon, over HTTP: the same operations as [`ChaosEngine`].
#[derive(Debug, Clone)]
pub struct ChaosClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ChaosClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            token: token.into(),
            http: reqwest::Client::builder()
                // An inject verifies for up to 15 s; a revert may wait for a restart.
                .timeout(Duration::from_secs(120))
                .build()
                .expect("HTTP client builds"),
        }
    }

    /// The daemon of this state dir: `run/endpoint.json` and `secrets/http-token`.
    pub fn from_state(state: &StateDir) -> Result<Self, ChaosError> {
        let ep = Endpoint::read(state).ok_or_else(|| {
            ChaosError::Other(format!(
                "the sandbox is not running (no {}); start it with `aiops up`",
                state.endpoint_file().display()
            ))
        })?;
        let token = std::fs::read_to_string(state.token_file())
            .map_err(|e| ChaosError::Other(format!("cannot read the HTTP token: {e}")))?;
        Ok(Self::new(ep.url, token.trim()))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        json: Option<&InjectRequest>,
    ) -> Result<T, ChaosError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(j) = json {
            req = req.json(j);
        }
        let resp = req.send().await.map_err(|e| {
            ChaosError::Other(format!("cannot reach the daemon at {}: {e}", self.base))
        })?;
        let status = resp.status();
        if status.is_success() {
            return resp
                .json()
                .await
                .map_err(|e| ChaosError::Other(format!("bad answer from {path}: {e}")));
        }
        let Ok(b) = resp.json::<ErrorBody>().await else {
            return Err(ChaosError::Other(format!("{path}: {status}")));
        };
        Err(match b.kind.as_str() {
            "unknown_fault" => ChaosError::UnknownFault {
                name: b.error.split('`').nth(1).unwrap_or_default().to_string(),
                known: b.known.unwrap_or_default(),
            },
            "invalid_param" | "bad_request" if b.field.is_some() => ChaosError::InvalidParam {
                field: b.field.unwrap_or_default(),
                message: b.error,
            },
            "unknown_id" => ChaosError::UnknownId(b.error),
            "not_active" => ChaosError::NotActive(b.error),
            "ledger" => ChaosError::Ledger(b.error),
            "inject" => ChaosError::Inject(b.error),
            "revert" => ChaosError::Revert(b.error),
            _ => ChaosError::Other(b.error),
        })
    }

    pub async fn catalogue(&self) -> Result<Vec<FaultInfo>, ChaosError> {
        self.call(reqwest::Method::GET, "/control/v1/chaos/faults", None)
            .await
    }
    /// Takes the request by value or by reference.
    pub async fn inject(
        &self,
        req: impl std::borrow::Borrow<InjectRequest>,
    ) -> Result<InjectOutcome, ChaosError> {
        self.call(
            reqwest::Method::POST,
            "/control/v1/chaos/inject",
            Some(req.borrow()),
        )
        .await
    }
    pub async fn stop(&self, id: &str) -> Result<FaultRecord, ChaosError> {
        self.call(
            reqwest::Method::POST,
            &format!("/control/v1/chaos/{id}/stop"),
            None,
        )
        .await
    }
    pub async fn stop_all(&self) -> Result<Vec<FaultRecord>, ChaosError> {
        self.call(reqwest::Method::POST, "/control/v1/chaos/stop-all", None)
            .await
    }
    pub async fn status(&self) -> Result<Vec<FaultRecord>, ChaosError> {
        self.call(reqwest::Method::GET, "/control/v1/chaos/status", None)
            .await
    }
    /// See [`ChaosEngine::leftovers`].
    pub async fn leftovers(&self) -> Result<Vec<String>, ChaosError> {
        self.call(reqwest::Method::GET, "/control/v1/chaos/leftovers", None)
            .await
    }
    pub async fn set_auto_revert(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<FaultRecord, ChaosError> {
        self.call(
            reqwest::Method::POST,
            &format!("/control/v1/chaos/{id}/auto-revert?enabled={enabled}"),
            None,
        )
        .await
    }
}
