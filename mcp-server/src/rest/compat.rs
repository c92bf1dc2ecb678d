//! Compatibility routes for the original Python system's chaos server (`/api/v1/break/*`,
//! port 8080) and action server (`/health`, `/api/v1/action/*`, port 9000), with their
//! shapes, so their clients and integration test run against this system unchanged.
//!
//! Each route translates to the native path and nothing else: an attack is a fault of
//! the daemon's `ChaosEngine` (the ledger, lease and revert are the engine's; the attack
//! id is the fault id), an action is `Remediator::run` (policy, audit, verification),
//! health is `Observer::check_health`/`get_metrics` plus the target's own pool status, and
//! `remediate-db-pool-exhaustion` runs the `db_pool_exhaustion` runbook's remediation
//! steps through `Remediator::run`.
//!
//! Unlike the original, stopping an attack always undoes it (frees held sessions, starts a
//! stopped API, restores the rate limit), even after its own duration ended.

use std::time::Duration;

use aiops_chaos::{FaultRecord, InjectRequest};
use aiops_observe::{MetricsQuery, OverallHealth, ProbeStatus};
use aiops_remediation::{ActionOutcome, ActionRequest, Status};
use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use super::openapi::doc;
use super::query::{self, NoQuery, SchemaQuery};
use super::{RestState, caller, run_action};

/// The attack kinds of the original chaos server.
pub const KINDS: &[&str] = &[
    "db_pool",
    "long_transactions",
    "migrations",
    "env_vars",
    "api_crash",
    "rate_limit",
];

/// What the original action server offered.
const CAPABILITIES: &[&str] = &[
    "restart-target-api",
    "restart-target-db",
    "verify-target-health",
    "remediate-db-pool-exhaustion",
];

/// `/api/v1/break/*` (without state).
pub fn chaos_routes() -> axum::Router<RestState> {
    axum::Router::new()
        .route("/api/v1/break/{kind}", post(break_start))
        .route("/api/v1/break/{kind}/{attack_id}", get(break_get))
        .route("/api/v1/break/{kind}/{attack_id}/stop", post(break_stop))
}

/// `/health` and `/api/v1/action/*` (without state).
pub fn action_routes() -> axum::Router<RestState> {
    axum::Router::new()
        .route("/health", get(action_health))
        .route(
            "/api/v1/action/restart-target-api",
            post(restart_target_api),
        )
        .route("/api/v1/action/restart-target-db", post(restart_target_db))
        .route(
            "/api/v1/action/verify-target-health",
            get(verify_target_health),
        )
        .route(
            "/api/v1/action/remediate-db-pool-exhaustion",
            post(remediate_db_pool_exhaustion),
        )
}

/// The compatibility listeners (`aiops up --compat-ports`): no token, since the original
/// clients send none, but loopback only — the listener binds 127.0.0.1, the `Origin`
/// (when present) must be a loopback page and `Host` a loopback name (DNS rebinding), and
/// bodies are capped like everywhere else.
pub fn port_router(st: RestState, chaos: bool) -> axum::Router {
    let routes = if chaos {
        chaos_routes().route("/health", get(chaos_health))
    } else {
        action_routes()
    };
    routes
        .with_state(st)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            crate::http::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn(loopback_only))
}

async fn loopback_only(mut req: Request, next: Next) -> Response {
    // Only the main listener's guard may say a request came from the dashboard.
    req.headers_mut().remove(crate::http::VIA_DASHBOARD);
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !crate::http::is_loopback_origin(origin)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "the Origin header names a non-loopback site",
        )
        .into_response();
    }
    let host_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_none_or(|h| {
            let as_origin = format!("http://{h}");
            axum::http::HeaderValue::from_str(&as_origin)
                .is_ok_and(|v| crate::http::is_loopback_origin(&v))
        });
    if !host_ok {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "the Host header is not a loopback name (DNS rebinding protection)",
        )
        .into_response();
    }
    next.run(req).await
}

// ---------------------------------------------------------------- chaos (port 8080)

/// Parameters of `POST /api/v1/break/{kind}`, as query parameters or a JSON body (the
/// original took both). Each kind accepts only its own.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakQuery {
    /// Any kind: roll back automatically after this many seconds (1–3600). Default: the
    /// fault's own lease (db_pool: `hold_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// db_pool: sessions to hold (1–500, default 20; this sandbox's PostgreSQL allows at
    /// most 90 and says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<i64>,
    /// db_pool: how long they are held, in seconds (1–600, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<i64>,
    /// long_transactions: `table_lock`, `row_lock` (default) or `advisory_lock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_type: Option<String>,
    /// long_transactions (table_lock, row_lock): the table, default `products`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_table: Option<String>,
    /// long_transactions (row_lock): rows with id 1..=lock_count are locked (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_count: Option<i64>,
    /// long_transactions (advisory_lock): the advisory lock id (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory_lock_id: Option<i64>,
    /// migrations: `db_behind_code` (default; a column the code needs is dropped while
    /// the migration table says applied), `future_version` (a version the code does not
    /// know is recorded), `missing_version` (the newest applied version's record is
    /// deleted) or `invalid_version` (its recorded checksum is changed). env_vars:
    /// `missing` (default) or `wrong`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_type: Option<String>,
    /// env_vars: the key of the target's .env (default DATABASE_URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_var_name: Option<String>,
    /// env_vars (wrong): the value written (default `not-a-number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrong_value: Option<String>,
    /// api_crash: `stop` (default; stays down) or `restart` (SIGKILL; the supervisor
    /// restarts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_type: Option<String>,
    /// rate_limit: requests allowed per window (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<i64>,
    /// rate_limit: the window in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// rate_limit: flood requests sent in all (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_requests: Option<i64>,
    /// rate_limit: flood requests per second (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_rate: Option<i64>,
}

/// Query of `POST /api/v1/break/{kind}/{attack_id}/stop`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopQuery {
    /// Accepted for the original clients. Here every stop terminates the sessions an
    /// attack holds (and undoes the rest of it), with or without this flag.
    #[serde(default)]
    pub force_kill: Option<bool>,
}

/// `{status: "started", attack_id}` and what was started.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AttackStarted {
    /// Always `started`.
    pub status: String,
    /// Use it to read or stop the attack (the chaos fault id).
    pub attack_id: String,
    pub kind: String,
    /// The chaos fault that implements it.
    pub fault: String,
    /// The fault's parameters, defaults filled in.
    pub parameters: Value,
    pub started_at: DateTime<Utc>,
    /// When it is rolled back automatically.
    pub ends_at: DateTime<Utc>,
    pub duration_seconds: i64,
    /// What was done, step by step.
    pub plan: Vec<String>,
    /// Whether the symptom was observed (bounded wait).
    pub effect_verified: Option<bool>,
    pub effect: Option<String>,
}

/// The attack record.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AttackRecord {
    pub attack_id: String,
    pub kind: String,
    /// `starting`, `running`, `stopping`, `stopped` (by request), `completed` (its
    /// duration ended and it was rolled back) or `failed` (a rollback failed; stop again).
    pub status: String,
    pub fault: String,
    pub parameters: Value,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub error: Option<String>,
}

/// Fault parameter names and the original's names for them: `(ours, original)`.
type Renames = &'static [(&'static str, &'static str)];

/// The chaos fault behind a kind, and how the fault's parameter names map back to the
/// original's (for error messages).
fn fault_of(kind: &str, q: &BreakQuery) -> Result<(InjectRequest, Renames), ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            format!("unknown attack kind `{kind}`; known: {}", KINDS.join(", ")),
        )
        .with_field("kind")
        .with_known(KINDS.iter().map(|k| k.to_string()).collect())
    };
    let allowed: &[&str] = match kind {
        "db_pool" => &["connections", "hold_seconds"],
        "long_transactions" => &[
            "lock_type",
            "target_table",
            "lock_count",
            "advisory_lock_id",
        ],
        "migrations" => &["failure_type"],
        "env_vars" => &["env_var_name", "failure_type", "wrong_value"],
        "api_crash" => &["crash_type"],
        "rate_limit" => &[
            "max_requests",
            "window_seconds",
            "flood_requests",
            "flood_rate",
        ],
        _ => return Err(unknown()),
    };
    let given = serde_json::to_value(q).unwrap_or_default();
    if let Some(obj) = given.as_object() {
        for key in obj.keys() {
            if key != "duration_seconds" && !allowed.contains(&key.as_str()) {
                return Err(ApiError::invalid(
                    key,
                    format!(
                        "parameter `{key}` does not apply to kind {kind}; its parameters: {}, duration_seconds",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    let range = |field: &str, v: Option<i64>, min: i64, max: i64, default: i64| {
        let v = v.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(ApiError::invalid(
                field,
                format!("`{field}` must be an integer in {min}..={max}, got {v}"),
            ))
        }
    };
    let choice = |field: &str, v: &Option<String>, allowed: &[&str], default: &str| {
        let v = v.clone().unwrap_or_else(|| default.to_string());
        if allowed.contains(&v.as_str()) {
            Ok(v)
        } else {
            Err(ApiError::invalid(
                field,
                format!("`{field}` must be one of {}, got {v:?}", allowed.join(", ")),
            ))
        }
    };
    let duration = match q.duration_seconds {
        Some(_) => Some(range("duration_seconds", q.duration_seconds, 1, 3600, 0)?),
        None => None,
    };
    let mut params = Map::new();
    let (fault, mut ttl, renames): (&str, Option<i64>, Renames) = match kind {
        "db_pool" => {
            params.insert(
                "connections".into(),
                json!(range("connections", q.connections, 1, 500, 20)?),
            );
            let hold = range("hold_seconds", q.hold_seconds, 1, 600, 60)?;
            (
                "db_pool_exhaustion",
                Some(hold),
                &[("ttl_s", "hold_seconds")],
            )
        }
        "long_transactions" => {
            let lock = choice(
                "lock_type",
                &q.lock_type,
                &["table_lock", "row_lock", "advisory_lock"],
                "row_lock",
            )?;
            let misplaced = |field: &str| {
                ApiError::invalid(
                    field,
                    format!("`{field}` does not apply to lock_type {lock}"),
                )
            };
            match lock.as_str() {
                "table_lock" => {
                    if q.lock_count.is_some() {
                        return Err(misplaced("lock_count"));
                    }
                    if q.advisory_lock_id.is_some() {
                        return Err(misplaced("advisory_lock_id"));
                    }
                    if let Some(t) = &q.target_table {
                        params.insert("table".into(), json!(t));
                    }
                    ("lock_contention", None, &[("table", "target_table")])
                }
                "row_lock" => {
                    if q.advisory_lock_id.is_some() {
                        return Err(misplaced("advisory_lock_id"));
                    }
                    if let Some(t) = &q.target_table {
                        params.insert("table".into(), json!(t));
                    }
                    if let Some(n) = q.lock_count {
                        params.insert("rows".into(), json!(n));
                    }
                    (
                        "long_transaction",
                        None,
                        &[("table", "target_table"), ("rows", "lock_count")],
                    )
                }
                _ => {
                    if q.lock_count.is_some() {
                        return Err(misplaced("lock_count"));
                    }
                    if q.target_table.is_some() {
                        return Err(misplaced("target_table"));
                    }
                    let id = range("advisory_lock_id", q.advisory_lock_id, 1, 2_147_483_647, 1)?;
                    params.insert("advisory_lock_id".into(), json!(id));
                    ("long_transaction", None, &[])
                }
            }
        }
        "migrations" => {
            let t = choice(
                "failure_type",
                &q.failure_type,
                &[
                    "db_behind_code",
                    "invalid_version",
                    "missing_version",
                    "future_version",
                ],
                "db_behind_code",
            )?;
            let mode = match t.as_str() {
                "invalid_version" => "checksum_mismatch",
                "db_behind_code" => "drop_column",
                other => other,
            };
            params.insert("mode".into(), json!(mode));
            ("failed_migration", None, &[])
        }
        "env_vars" => {
            let t = choice(
                "failure_type",
                &q.failure_type,
                &["missing", "wrong"],
                "missing",
            )?;
            if t == "missing" && q.wrong_value.is_some() {
                return Err(ApiError::invalid(
                    "wrong_value",
                    "`wrong_value` applies to failure_type wrong only",
                ));
            }
            params.insert(
                "key".into(),
                json!(
                    q.env_var_name
                        .clone()
                        .unwrap_or_else(|| "DATABASE_URL".into())
                ),
            );
            params.insert(
                "mode".into(),
                json!(if t == "missing" { "missing" } else { "invalid" }),
            );
            if let Some(v) = &q.wrong_value {
                params.insert("value".into(), json!(v));
            }
            (
                "config_corruption",
                None,
                &[("key", "env_var_name"), ("value", "wrong_value")],
            )
        }
        "api_crash" => {
            let t = choice("crash_type", &q.crash_type, &["stop", "restart"], "stop")?;
            params.insert(
                "mode".into(),
                json!(if t == "stop" { "stop" } else { "kill" }),
            );
            ("api_down", None, &[])
        }
        _ => {
            for (k, v) in [
                ("max_requests", q.max_requests),
                ("window_seconds", q.window_seconds),
                ("flood_requests", q.flood_requests),
                ("flood_rate", q.flood_rate),
            ] {
                if let Some(v) = v {
                    params.insert(k.into(), json!(v));
                }
            }
            ("rate_limit", None, &[])
        }
    };
    if let Some(d) = duration {
        ttl = Some(ttl.map_or(d, |t| t.min(d)));
    }
    let mut req = InjectRequest::new(fault);
    req.params = params;
    req.ttl_s = ttl.map(|t| t as u64);
    Ok((req, renames))
}

/// The original's name for a field the engine complained about.
fn rename_error(mut e: ApiError, renames: &[(&str, &str)]) -> ApiError {
    if let Some(field) = e.detail.field.clone()
        && let Some((_, original)) = renames.iter().find(|(ours, _)| *ours == field)
    {
        e.detail.message = format!(
            "{} (the original's `{original}`)",
            e.detail
                .message
                .replace(&format!("`{field}`"), &format!("`{original}`"))
        );
        e.detail.field = Some(original.to_string());
    }
    e
}

fn kind_of_fault(fault: &str) -> Option<&'static str> {
    Some(match fault {
        "db_pool_exhaustion" => "db_pool",
        "lock_contention" | "long_transaction" => "long_transactions",
        "failed_migration" => "migrations",
        "config_corruption" => "env_vars",
        "api_down" => "api_crash",
        "rate_limit" => "rate_limit",
        _ => return None,
    })
}

fn attack_status(state: &str) -> &'static str {
    match state {
        aiops_chaos::states::INJECTING => "starting",
        aiops_chaos::states::ACTIVE => "running",
        aiops_chaos::states::REVERTING => "stopping",
        aiops_chaos::states::REVERTED => "stopped",
        aiops_chaos::states::EXPIRED => "completed",
        _ => "failed",
    }
}

fn attack_record(r: &FaultRecord) -> AttackRecord {
    AttackRecord {
        attack_id: r.id.clone(),
        kind: kind_of_fault(&r.fault).unwrap_or("unknown").to_string(),
        status: attack_status(&r.state).to_string(),
        fault: r.fault.clone(),
        parameters: r.params.clone(),
        started_at: r.injected_at,
        ends_at: r.lease_expires_at,
        ended_at: r.ended_at,
        end_reason: r.end_reason.clone(),
        error: r.error.clone(),
    }
}

/// The record of `attack_id`, which must be an attack of `kind`.
async fn find_attack(st: &RestState, kind: &str, attack_id: &str) -> Result<FaultRecord, ApiError> {
    if !KINDS.contains(&kind) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_kind",
            format!("unknown attack kind `{kind}`; known: {}", KINDS.join(", ")),
        )
        .with_field("kind"));
    }
    st.chaos
        .status()
        .await?
        .into_iter()
        .find(|r| r.id == attack_id && kind_of_fault(&r.fault) == Some(kind))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_attack",
                format!("no {kind} attack `{attack_id}`"),
            )
            .with_field("attack_id")
        })
}

/// Start an attack (the original chaos server's `POST /api/v1/break/{kind}`).
///
/// Parameters as query parameters (or a JSON body with the same keys). The attack is a
/// chaos fault with a lease: it is rolled back after `duration_seconds` (db_pool:
/// `hold_seconds`) or on stop. Needs `--allow-chaos`.
#[utoipa::path(post, path = "/api/v1/break/{kind}", tag = "compat-chaos",
    params(("kind" = String, Path, description = "Attack kind")),
    request_body(content = doc::BreakQuery, description = "The same parameters as a JSON object (optional)", content_type = "application/json"),
    responses(
        (status = 200, description = "Started", body = doc::AttackStarted),
        (status = "4XX", description = "Unknown kind (404), bad parameter (400, names the field), a conflicting attack, or chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The attack could not be started (and was undone)", body = doc::ErrorBody),
    ))]
pub async fn break_start(
    State(st): State<RestState>,
    Path(kind): Path<String>,
    request: axum::http::Uri,
    body: axum::body::Bytes,
) -> ApiResult<AttackStarted> {
    st.require_chaos()?;
    let q = break_params(request.query().unwrap_or(""), &body)?;
    let (req, renames) = fault_of(&kind, &q)?;
    let outcome = st
        .chaos
        .inject(req)
        .await
        .map_err(|e| rename_error(ApiError::from(e), renames))?;
    let Some(r) = outcome.record else {
        return Err(ApiError::internal("the attack", "no record after inject"));
    };
    Ok(Json(AttackStarted {
        status: "started".into(),
        attack_id: r.id.clone(),
        kind,
        fault: r.fault.clone(),
        parameters: r.params.clone(),
        started_at: r.injected_at,
        ends_at: r.lease_expires_at,
        duration_seconds: (r.lease_expires_at - r.injected_at).num_seconds(),
        plan: outcome.plan,
        effect_verified: outcome.effect.as_ref().map(|e| e.verified),
        effect: outcome.effect.map(|e| e.observed),
    }))
}

/// Query and body merged; a key in both is an error.
fn break_params(query_string: &str, body: &[u8]) -> Result<BreakQuery, ApiError> {
    let from_query: BreakQuery = query::parse(query_string)?;
    let from_body = super::body_object(body)?;
    if from_body.is_empty() {
        return Ok(from_query);
    }
    let mut merged = serde_json::to_value(&from_query)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    for (k, v) in from_body {
        if merged.contains_key(&k) {
            return Err(ApiError::invalid(
                &k,
                format!("`{k}` given both in the query and in the body"),
            ));
        }
        merged.insert(k, v);
    }
    serde_path_to_error::deserialize(Value::Object(merged))
        .map_err(|e| super::error::from_path_error("parameter", e))
}

/// The attack record.
#[utoipa::path(get, path = "/api/v1/break/{kind}/{attack_id}", tag = "compat-chaos",
    params(
        ("kind" = String, Path, description = "Attack kind"),
        ("attack_id" = String, Path, description = "From the start answer"),
    ),
    responses(
        (status = 200, description = "The attack", body = doc::AttackRecord),
        (status = "4XX", description = "Unknown kind or attack (404), or chaos disabled (403)", body = doc::ErrorBody),
    ))]
pub async fn break_get(
    State(st): State<RestState>,
    Path((kind, attack_id)): Path<(String, String)>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<AttackRecord> {
    st.require_chaos()?;
    Ok(Json(attack_record(
        &find_attack(&st, &kind, &attack_id).await?,
    )))
}

/// Stop an attack: always undoes it, even after its duration ended.
#[utoipa::path(post, path = "/api/v1/break/{kind}/{attack_id}/stop", tag = "compat-chaos",
    params(
        ("kind" = String, Path, description = "Attack kind"),
        ("attack_id" = String, Path, description = "From the start answer"),
    ),
    responses(
        (status = 200, description = "The attack after its rollback", body = doc::AttackRecord),
        (status = "4XX", description = "Unknown kind or attack (404), or chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The rollback failed (the record says why; stop again)", body = doc::ErrorBody),
    ))]
pub async fn break_stop(
    State(st): State<RestState>,
    Path((kind, attack_id)): Path<(String, String)>,
    SchemaQuery(q): SchemaQuery<StopQuery>,
) -> ApiResult<AttackRecord> {
    st.require_chaos()?;
    find_attack(&st, &kind, &attack_id).await?;
    tracing::info!(
        message = "Attack stop requested.",
        attack_id = %attack_id,
        force_kill = q.force_kill.unwrap_or(false)
    );
    Ok(Json(attack_record(&st.chaos.stop(&attack_id).await?)))
}

/// `GET /health` of the chaos port.
async fn chaos_health(State(st): State<RestState>) -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "service": "aiops chaos (compatibility)",
        "chaos_allowed": st.allow_chaos,
        "kinds": KINDS,
    }))
}

// -------------------------------------------------------------- actions (port 9000)

#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionServerHealth {
    /// `healthy`: the server answers (the target's health is `verify-target-health`).
    pub status: String,
    pub service: String,
    pub version: String,
    /// The actions this server offers.
    pub capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunQuery {
    /// Only return the command, estimated downtime and risk level; change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemediateQuery {
    /// When the pool is still unhealthy after the sessions were terminated, restart
    /// PostgreSQL (through `restart_service`, under the same policy).
    #[serde(default)]
    pub escalate_to_db_restart: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RestartResult {
    /// e.g. `restart-target-api`.
    pub action: String,
    pub dry_run: bool,
    /// Planned (dry run) or executed and verified.
    pub success: bool,
    /// The outcome's status: planned, executed, failed, refused, pending_approval.
    pub status: String,
    /// What is (or would be) done.
    pub command: String,
    /// From the service's last observed start-to-healthy time; `None` when none was seen.
    pub estimated_downtime_seconds: Option<f64>,
    /// How the estimate was made.
    pub estimate_basis: String,
    /// `low`, `medium` or `high`.
    pub risk_level: String,
    pub message: String,
    /// The audit line of this call.
    pub audit_id: String,
    /// The full outcome of the remediation library.
    pub outcome: ActionOutcome,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TargetHealth {
    /// Every probe passed (`health_status` healthy).
    pub is_healthy: bool,
    /// `healthy`, `degraded` or `unhealthy` (all probes: target, database, upstreams).
    pub health_status: String,
    /// `healthy`, `degraded` (slow) or `unhealthy`, as the target sees its database.
    pub database_status: String,
    /// The target's pool band: healthy < 50 %, warning ≥ 50 %, degraded ≥ 70 %,
    /// critical ≥ 90 % (`unknown` when the target does not answer).
    pub pool_health: String,
    /// In-use connections over the pool's maximum, in percent.
    pub pool_utilization: Option<f64>,
    /// 5xx share of user requests over the last 10 s, in percent.
    pub error_rate_percent: Option<f64>,
    /// The median response time over the last 10 s (the sandbox's metrics keep
    /// percentiles, not a mean).
    pub avg_response_time_ms: Option<f64>,
    /// Each failed probe, with its reason.
    pub failed_probes: Vec<String>,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RemediationStep {
    pub step: u32,
    /// The remediation action run, e.g. `kill_db_sessions`.
    pub action: String,
    pub params: Value,
    /// planned, executed, failed, refused or pending_approval.
    pub status: String,
    pub message: String,
    pub audit_id: String,
    pub verified: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RemediationResult {
    /// Every step executed and the target healthy afterwards.
    pub remediation_complete: bool,
    pub execution_log: Vec<RemediationStep>,
    pub initial_health: TargetHealth,
    pub final_health: TargetHealth,
    pub recommendation: String,
}

/// The action server's health and capabilities.
#[utoipa::path(get, path = "/health", tag = "compat-actions",
    responses((status = 200, description = "The server answers", body = doc::ActionServerHealth)))]
pub async fn action_health(SchemaQuery(_): SchemaQuery<NoQuery>) -> ApiResult<ActionServerHealth> {
    Ok(Json(ActionServerHealth {
        status: "healthy".into(),
        service: "aiops actions (compatibility)".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        capabilities: CAPABILITIES.iter().map(|s| s.to_string()).collect(),
    }))
}

/// The last observed time from a start of `service` to it being healthy, in seconds.
async fn downtime_estimate(st: &RestState, service: &str) -> (Option<f64>, String) {
    let page = st
        .observer
        .list_events(aiops_observe::EventQuery {
            service: Some(service.to_string()),
            limit: Some(200),
            ..Default::default()
        })
        .await;
    let Ok(page) = page else {
        return (None, "the event timeline cannot be read".into());
    };
    // Oldest first: each start, then the first health transition after it; the newest
    // start whose first transition was to healthy gives the estimate.
    let parse = |ts: &str| {
        DateTime::parse_from_rfc3339(ts)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    let mut started: Option<DateTime<Utc>> = None;
    let mut last: Option<f64> = None;
    for e in page.events.iter().rev() {
        match e.kind.as_str() {
            "service_started" => started = parse(&e.ts),
            "health_changed" => {
                if let (Some(start), Some(at)) = (started.take(), parse(&e.ts))
                    && e.detail.contains("→ healthy")
                {
                    last = Some((at - start).num_milliseconds() as f64 / 1000.0);
                }
            }
            _ => {}
        }
    }
    if let Some(secs) = last {
        return (
            Some((secs * 10.0).ceil() / 10.0),
            format!(
                "the last observed start of {service} took {secs:.1} s to become healthy \
                 (the stop comes on top)"
            ),
        );
    }
    (
        None,
        format!("no start of {service} followed by healthy in the event timeline"),
    )
}

async fn restart(
    st: &RestState,
    name: &str,
    service: &str,
    dry_run: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let remediator = st.remediator()?;
    let mut req = ActionRequest::new("restart_service", json!({"service": service}));
    req.dry_run = dry_run;
    let outcome = run_action(remediator, req, caller(headers)).await?;
    let (estimate, basis) = downtime_estimate(st, service).await;
    let code = match outcome.status {
        Status::Planned | Status::Executed => StatusCode::OK,
        Status::PendingApproval => StatusCode::ACCEPTED,
        Status::Refused => StatusCode::FORBIDDEN,
        Status::Failed => StatusCode::CONFLICT,
    };
    let body = RestartResult {
        action: name.into(),
        dry_run,
        success: matches!(outcome.status, Status::Planned | Status::Executed),
        status: outcome.status.as_str().into(),
        command: outcome.plan.steps.join("; "),
        estimated_downtime_seconds: estimate,
        estimate_basis: basis,
        risk_level: outcome.plan.risk.clone(),
        message: outcome.message.clone(),
        audit_id: outcome.audit_id.clone(),
        outcome,
    };
    Ok((code, Json(body)).into_response())
}

/// Restart the target API (`restart_service` target-app through policy and audit).
#[utoipa::path(post, path = "/api/v1/action/restart-target-api", tag = "compat-actions",
    responses(
        (status = 200, description = "Planned (dry run) or restarted and healthy", body = doc::RestartResult),
        (status = 202, description = "Waiting for approval", body = doc::RestartResult),
        (status = 403, description = "Refused (policy, restart rate limit)", body = doc::RestartResult),
        (status = 409, description = "Restarted but not healthy", body = doc::RestartResult),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
    ))]
pub async fn restart_target_api(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<DryRunQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    restart(
        &st,
        "restart-target-api",
        "target-app",
        q.dry_run.unwrap_or(false),
        &headers,
    )
    .await
}

/// Restart the target database (`restart_service` postgres through policy and audit).
#[utoipa::path(post, path = "/api/v1/action/restart-target-db", tag = "compat-actions",
    responses(
        (status = 200, description = "Planned (dry run) or restarted and healthy", body = doc::RestartResult),
        (status = 202, description = "Waiting for approval", body = doc::RestartResult),
        (status = 403, description = "Refused (policy, restart rate limit)", body = doc::RestartResult),
        (status = 409, description = "Restarted but not healthy", body = doc::RestartResult),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
    ))]
pub async fn restart_target_db(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<DryRunQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    restart(
        &st,
        "restart-target-db",
        "postgres",
        q.dry_run.unwrap_or(false),
        &headers,
    )
    .await
}

/// The target's pool status (`/api/v1/pool/status`), as the target reports it.
async fn pool_status(st: &RestState) -> Option<Value> {
    let url = st.runtime.topology().await.ok()?.target_url()?;
    let resp = st
        .http
        .get(format!("{url}/api/v1/pool/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

async fn target_health(st: &RestState) -> Result<TargetHealth, ApiError> {
    let (health, metrics, pool) = tokio::join!(
        st.observer.check_health(),
        st.observer.get_metrics(MetricsQuery { window_s: Some(10) }),
        pool_status(st)
    );
    let health = health?;
    let metrics = metrics.ok();
    let health_status = match health.overall {
        OverallHealth::Healthy => "healthy",
        OverallHealth::Degraded => "degraded",
        OverallHealth::Unhealthy => "unhealthy",
    };
    // The target's own view of its database (through its pool), else the direct login.
    let summary_db = health
        .probes
        .iter()
        .find(|p| p.name == "target-app health")
        .and_then(|p| p.body.as_ref())
        .and_then(|b| b["db"]["status"].as_str().map(str::to_string));
    let database_status = match summary_db.as_deref() {
        Some("ok") => "healthy",
        Some("slow") => "degraded",
        Some(_) => "unhealthy",
        None => match health.probes.iter().find(|p| p.name == "database") {
            Some(p) if p.status == ProbeStatus::Ok => "healthy",
            _ => "unhealthy",
        },
    };
    let failed_probes = health
        .probes
        .iter()
        .filter(|p| p.status == ProbeStatus::Failed)
        .map(|p| format!("{}: {}", p.name, p.detail))
        .collect();
    Ok(TargetHealth {
        is_healthy: health.overall == OverallHealth::Healthy,
        health_status: health_status.into(),
        database_status: database_status.into(),
        pool_health: pool
            .as_ref()
            .and_then(|p| p["health"].as_str())
            .unwrap_or("unknown")
            .into(),
        pool_utilization: pool
            .as_ref()
            .and_then(|p| p["utilization_percent"].as_f64()),
        error_rate_percent: metrics.as_ref().and_then(|m| m.error_rate_percent),
        avg_response_time_ms: metrics
            .as_ref()
            .and_then(|m| m.latency.as_ref())
            .map(|l| l.p50_ms),
        failed_probes,
        checked_at: Utc::now(),
    })
}

/// The target's health in the original's shape.
#[utoipa::path(get, path = "/api/v1/action/verify-target-health", tag = "compat-actions",
    responses(
        (status = 200, description = "Health now", body = doc::TargetHealth),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox", body = doc::ErrorBody),
    ))]
pub async fn verify_target_health(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<TargetHealth> {
    Ok(Json(target_health(&st).await?))
}

/// Healthy within `limit`, polled; the last reading either way.
async fn wait_healthy(st: &RestState, limit: Duration) -> Result<TargetHealth, ApiError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let h = target_health(st).await?;
        if h.is_healthy || tokio::time::Instant::now() >= deadline {
            return Ok(h);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Fix database pool exhaustion: the `db_pool_exhaustion` runbook's remediation steps.
///
/// Each step runs through `Remediator::run` (policy, audit, verification): terminate the
/// foreign sessions idle in transaction that hold the role's connection slots; then wait
/// (≤ 15 s) for the target to be healthy. With `escalate_to_db_restart=true`, a target
/// still unhealthy gets PostgreSQL restarted (`restart_service`).
#[utoipa::path(post, path = "/api/v1/action/remediate-db-pool-exhaustion", tag = "compat-actions",
    responses(
        (status = 200, description = "What was done and the health after", body = doc::RemediationResult),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox, or the audit log cannot be written", body = doc::ErrorBody),
    ))]
pub async fn remediate_db_pool_exhaustion(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<RemediateQuery>,
    headers: HeaderMap,
) -> ApiResult<RemediationResult> {
    let runbook = aiops_runbooks::library()
        .into_iter()
        .find(|r| r.id == "db_pool_exhaustion")
        .ok_or_else(|| ApiError::internal("the runbook", "db_pool_exhaustion is missing"))?;
    let initial_health = target_health(&st).await?;
    let who = caller(&headers);
    let mut log = Vec::new();
    let mut all_ok = true;
    let run = |action: String, params: Map<String, Value>| {
        let st = st.clone();
        let who = who.clone();
        async move {
            let remediator = st.remediator()?;
            let req = ActionRequest {
                action,
                params,
                dry_run: false,
                approval_id: None,
            };
            run_action(remediator, req, who).await
        }
    };
    for step in &runbook.remediation {
        let outcome = run(step.tool.clone(), step.args.clone()).await?;
        all_ok &= outcome.status == Status::Executed;
        log.push(step_entry(log.len() as u32 + 1, &outcome, &step.args));
    }
    let mut final_health = wait_healthy(&st, Duration::from_secs(15)).await?;
    if !final_health.is_healthy && q.escalate_to_db_restart.unwrap_or(false) {
        let args = json!({"service": "postgres"});
        let args = args.as_object().cloned().unwrap_or_default();
        let outcome = run("restart_service".into(), args.clone()).await?;
        all_ok &= outcome.status == Status::Executed;
        log.push(step_entry(log.len() as u32 + 1, &outcome, &args));
        final_health = wait_healthy(&st, Duration::from_secs(30)).await?;
    }
    let complete = all_ok && final_health.is_healthy;
    let recommendation = if complete {
        "The pool is healthy again. Find what opened the sessions (db_diagnostics: \
         connections by application) and give it its own role with a connection limit; \
         set idle_in_transaction_session_timeout on the app role."
            .to_string()
    } else if !all_ok {
        format!(
            "A step did not execute (see execution_log: refused by policy, waiting for \
             approval or failed); handle it, then call again. Runbook escalation: {}",
            runbook
                .escalation
                .iter()
                .map(|s| format!("{} {}", s.tool, Value::Object(s.args.clone())))
                .collect::<Vec<_>>()
                .join("; ")
        )
    } else if q.escalate_to_db_restart.unwrap_or(false) {
        "Still unhealthy after the database restart: check failed_probes and escalate to \
         a person."
            .to_string()
    } else {
        "Still unhealthy: call again with escalate_to_db_restart=true, or restart the \
         target API (restart-target-api) if its pool stays broken."
            .to_string()
    };
    Ok(Json(RemediationResult {
        remediation_complete: complete,
        execution_log: log,
        initial_health,
        final_health,
        recommendation,
    }))
}

fn step_entry(step: u32, o: &ActionOutcome, params: &Map<String, Value>) -> RemediationStep {
    RemediationStep {
        step,
        action: o.action.clone(),
        params: Value::Object(params.clone()),
        status: o.status.as_str().into(),
        message: o.message.clone(),
        audit_id: o.audit_id.clone(),
        verified: o.verification.as_ref().map(|v| v.passed),
    }
}

/// Where the compatibility listeners are (`run/compat.json`), for clients and tests.
#[derive(Debug, Serialize, Deserialize)]
pub struct CompatEndpoints {
    pub chaos_url: String,
    pub actions_url: String,
}

/// With `--compat-ports`: bind the two compatibility listeners (loopback addresses only)
/// and serve them; returns their tasks. Without it: nothing.
pub async fn listen(
    state: &aiops_sandbox::StateDir,
    args: &crate::cli::CompatArgs,
    st: &RestState,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let file = state.root().join("run").join("compat.json");
    let _ = std::fs::remove_file(&file);
    if !args.compat_ports {
        return Ok(Vec::new());
    }
    let mut tasks = Vec::new();
    let mut urls = Vec::new();
    for (addr, chaos) in [
        (args.compat_chaos_addr, true),
        (args.compat_actions_addr, false),
    ] {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "--compat-{}-addr must be a loopback address (the compatibility ports take no token), got {addr}",
            if chaos { "chaos" } else { "actions" }
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for --compat-ports"))?;
        let bound = listener.local_addr()?;
        urls.push(format!("http://{bound}"));
        let app = port_router(st.clone(), chaos);
        tasks.push(tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(message = "Compatibility listener failed.", %error);
            }
        }));
        tracing::info!(
            message = "Compatibility listener up.",
            addr = %bound,
            role = if chaos { "chaos" } else { "actions" }
        );
    }
    let endpoints = CompatEndpoints {
        chaos_url: urls[0].clone(),
        actions_url: urls[1].clone(),
    };
    aiops_sandbox::paths::write_atomic(&file, &serde_json::to_vec_pretty(&endpoints)?, 0o644)?;
    Ok(tasks)
}
