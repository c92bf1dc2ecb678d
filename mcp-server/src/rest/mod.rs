//! The REST API (`/api/v1/...`) for callers that do not speak MCP: workflow tools, shell
//! scripts with curl, and the clients of the original Python servers (the compatibility
//! routes in [`compat`]).
//!
//! Every handler calls the same library function as the matching MCP tool and only
//! translates: `aiops-observe` for observation, the daemon's `ChaosEngine` for chaos,
//! `Remediator::run` for actions (plan, policy, approval gate, audit, execute, verify),
//! `aiops_sandbox::incidents` for diagnoses and reports. No handler holds logic of its own
//! beyond parsing input and choosing a status code.
//!
//! Served on the daemon's listener behind the same guards as MCP (Origin, bearer token,
//! 1 MiB body limit; built from `crate::http`'s pieces). Errors are JSON
//! `{"error": {"code", "message", "field"?, "known"?}}`; bad input is a 4xx naming the
//! field. `/api/openapi.json` (generated from these handlers, [`openapi`]) and `/docs` are
//! served without the token: they describe the API and hold no sandbox data.
//!
//! Not responsible for: the chaos control API the CLI uses (`/control/v1/chaos`, in
//! `aiops-chaos`), nor MCP.

mod actions;
mod chaos;
pub mod compat;
mod error;
mod incidents;
mod observe;
pub mod openapi;
mod query;

use std::sync::Arc;

use aiops_chaos::ChaosEngine;
use aiops_observe::Observer;
use aiops_sandbox::events::EventLog;
use aiops_sandbox::{Runtime, StateDir};
use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;

/// Everything a handler may call.
#[derive(Clone)]
pub struct RestState {
    pub observer: Observer,
    pub state: StateDir,
    pub runtime: Arc<dyn Runtime>,
    pub events: Arc<EventLog>,
    pub chaos: ChaosEngine,
    /// `--allow-chaos`: without it the chaos routes answer 403.
    pub allow_chaos: bool,
    /// For the few direct calls to the target (built once; no proxy: loopback only).
    pub http: reqwest::Client,
}

impl RestState {
    /// The remediation library; the policy file is read at each call, as for MCP.
    fn remediator(
        &self,
    ) -> Result<aiops_remediation::Remediator, aiops_remediation::RemediationError> {
        aiops_remediation::Remediator::new(
            self.state.clone(),
            self.runtime.clone(),
            self.events.clone(),
        )
    }

    fn require_chaos(&self) -> Result<(), ApiError> {
        if self.allow_chaos {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "chaos_disabled",
                "chaos is disabled on this daemon; start the sandbox with `aiops up --allow-chaos`",
            ))
        }
    }
}

/// The `/api/v1` routes and the compatibility routes, guarded, plus the unguarded
/// OpenAPI document and docs page.
pub fn router(st: RestState, token: String) -> Router {
    let api = api_routes()
        .route("/metrics", get(crate::control_metrics::handler))
        .merge(compat::chaos_routes())
        .merge(compat::action_routes())
        .with_state(st);
    // The MCP routes' guards, with the same answers: a non-loopback `Origin` → 403, no
    // or a wrong bearer token → 401, a body over 1 MiB → 413. The dashboard's session
    // cookie opens these routes too, from the dashboard's own origin only.
    crate::http::guarded_for_browser(api, token).merge(openapi::routes())
}

/// The native `/api/v1` routes (without state and guards).
fn api_routes() -> Router<RestState> {
    Router::new()
        .route("/api/v1/snapshot", get(observe::snapshot))
        .route("/api/v1/status", get(observe::status))
        .route("/api/v1/health", get(observe::health))
        .route("/api/v1/metrics", get(observe::metrics))
        .route("/api/v1/logs", get(observe::logs))
        .route("/api/v1/db", get(observe::db))
        .route("/api/v1/processes", get(observe::processes))
        .route("/api/v1/disk", get(observe::disk))
        .route("/api/v1/config", get(observe::config))
        .route("/api/v1/events", get(observe::events))
        .route("/api/v1/chaos", get(chaos::status))
        .route("/api/v1/chaos/faults", get(chaos::faults))
        .route("/api/v1/chaos/stop-all", post(chaos::stop_all))
        .route("/api/v1/chaos/{fault}", post(chaos::inject))
        .route("/api/v1/chaos/{id}/stop", post(chaos::stop))
        .route("/api/v1/actions", get(actions::catalogue))
        .route("/api/v1/actions/{action}", post(actions::run))
        .route("/api/v1/approvals", get(actions::approvals))
        .route("/api/v1/approvals/{id}/approve", post(actions::approve))
        .route("/api/v1/approvals/{id}/deny", post(actions::deny))
        .route("/api/v1/audit", get(actions::audit))
        .route(
            "/api/v1/incidents",
            get(incidents::list).post(incidents::file),
        )
        .route("/api/v1/incidents/{id}", get(incidents::get))
        .route("/api/v1/diagnoses", post(incidents::diagnose))
}

/// A request body that must be a JSON object (parameters); empty means `{}`.
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(other) => Err(ApiError::invalid(
            "body",
            format!("the body must be a JSON object of parameters, got {other}"),
        )),
        Err(e) => Err(ApiError::invalid(
            "body",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// Who calls, for the audit log: `dashboard` for the dashboard's session, else `rest`
/// plus the User-Agent, if any (trimmed, printable).
fn caller(headers: &axum::http::HeaderMap) -> aiops_remediation::Caller {
    if headers.contains_key(crate::http::VIA_DASHBOARD) {
        return aiops_remediation::Caller {
            client: "dashboard".into(),
            session: None,
        };
    }
    let agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty());
    aiops_remediation::Caller {
        client: match agent {
            Some(a) => format!("rest ({a})"),
            None => "rest".into(),
        },
        session: None,
    }
}

/// `Remediator::run` on a blocking-pool thread driving the runtime, as the MCP tools do:
/// the action's future holds sqlx connections across awaits in ways the compiler cannot
/// prove `Send`, so it is never moved between threads.
async fn run_action(
    remediator: aiops_remediation::Remediator,
    req: aiops_remediation::ActionRequest,
    caller: aiops_remediation::Caller,
) -> Result<aiops_remediation::ActionOutcome, ApiError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(remediator.run(req, caller)))
        .await
        .map_err(|e| ApiError::internal("the action", e))?
        .map_err(ApiError::from)
}
