//! Chaos over REST: the daemon's `ChaosEngine` (the engine the `/control/v1/chaos` routes
//! and so the MCP chaos tools drive). Only with `--allow-chaos`; otherwise 403.
//!
//! As with MCP, a fault's ground-truth label is never returned.

use aiops_chaos::{EffectCheck, FaultInfo, FaultRecord, InjectRequest};
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiResult;
use super::openapi::doc;
use super::query::{NoQuery, SchemaQuery};
use super::{RestState, body_object};

/// A fault as REST shows it: the ledger record without its ground-truth label.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FaultView {
    /// Unique id, e.g. `f-3a9c0e12b4d7`; use it to stop the fault.
    pub id: String,
    /// Catalogue name.
    pub fault: String,
    pub target: String,
    /// Parameters with defaults filled in.
    pub params: Value,
    /// `injecting`, `active`, `reverting`, `reverted`, `revert_failed` or `expired`.
    pub state: String,
    pub injected_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    pub auto_revert: bool,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    /// The last error (a failed inject or revert).
    pub error: Option<String>,
}

impl From<&FaultRecord> for FaultView {
    fn from(r: &FaultRecord) -> Self {
        Self {
            id: r.id.clone(),
            fault: r.fault.clone(),
            target: r.target.clone(),
            params: r.params.clone(),
            state: r.state.clone(),
            injected_at: r.injected_at,
            lease_expires_at: r.lease_expires_at,
            auto_revert: r.auto_revert,
            ended_at: r.ended_at,
            end_reason: r.end_reason.clone(),
            error: r.error.clone(),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FaultCatalogue {
    /// Every fault that can be injected, with its parameters and default lease.
    pub faults: Vec<FaultInfo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FaultList {
    /// Active faults first, then recently ended ones (newest first).
    pub faults: Vec<FaultView>,
}

/// What an inject did, or for a dry run would do.
#[derive(Debug, Serialize, JsonSchema)]
pub struct InjectView {
    pub dry_run: bool,
    /// Exactly what is (or would be) done, step by step.
    pub plan: Vec<String>,
    /// The fault; absent for a dry run.
    pub record: Option<FaultView>,
    /// Whether the symptom was observed; absent for a dry run.
    pub effect: Option<EffectCheck>,
}

/// Query of `POST /api/v1/chaos/{fault}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectQuery {
    /// Only return the plan; change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Lease in seconds (1–3600); expiry reverts the fault. Default: the fault's own.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// The fault catalogue.
///
/// Every fault this sandbox can inject: id, target, what it does, its parameters (JSON
/// schema with defaults) and default lease. Same as the MCP tool `chaos_list_faults`.
#[utoipa::path(get, path = "/api/v1/chaos/faults", tag = "chaos",
    responses(
        (status = 200, description = "The catalogue", body = doc::FaultCatalogue),
        (status = "4XX", description = "Bad input, or chaos disabled (403)", body = doc::ErrorBody),
    ))]
pub async fn faults(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<FaultCatalogue> {
    st.require_chaos()?;
    Ok(Json(FaultCatalogue {
        faults: aiops_chaos::ChaosEngine::catalogue(),
    }))
}

/// Faults now injected, and recently ended ones.
///
/// Same as the MCP tool `chaos_status`.
#[utoipa::path(get, path = "/api/v1/chaos", tag = "chaos",
    responses(
        (status = 200, description = "Faults", body = doc::FaultList),
        (status = "4XX", description = "Bad input, or chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The ledger cannot be read", body = doc::ErrorBody),
    ))]
pub async fn status(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<FaultList> {
    st.require_chaos()?;
    let records = st.chaos.status().await?;
    Ok(Json(FaultList {
        faults: records.iter().map(FaultView::from).collect(),
    }))
}

/// Inject a real, reversible fault.
///
/// The JSON body holds the fault's parameters (see its `params_schema`; omitted ones take
/// their defaults; an empty body is fine). The fault holds a lease (`ttl_s`) and is
/// reverted when it expires or on `POST /api/v1/chaos/{id}/stop`. With `dry_run=true`
/// only the plan is returned. Same as the MCP tool `chaos_inject`.
#[utoipa::path(post, path = "/api/v1/chaos/{fault}", tag = "chaos",
    params(("fault" = String, Path, description = "Fault id from the catalogue, e.g. `db_pool_exhaustion`")),
    request_body(content = Object, description = "The fault's parameters", content_type = "application/json"),
    responses(
        (status = 200, description = "Injected (or planned)", body = doc::InjectView),
        (status = "4XX", description = "Unknown fault (404), bad parameter (400, names the field), conflicting fault, or chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The inject failed (and was undone)", body = doc::ErrorBody),
    ))]
pub async fn inject(
    State(st): State<RestState>,
    Path(fault): Path<String>,
    SchemaQuery(q): SchemaQuery<InjectQuery>,
    body: axum::body::Bytes,
) -> ApiResult<InjectView> {
    st.require_chaos()?;
    let params = body_object(&body)?;
    let outcome = st
        .chaos
        .inject(InjectRequest {
            fault,
            params,
            ttl_s: q.ttl_s,
            dry_run: q.dry_run.unwrap_or(false),
            verify: true,
        })
        .await?;
    Ok(Json(InjectView {
        dry_run: outcome.dry_run,
        plan: outcome.plan,
        record: outcome.record.as_ref().map(FaultView::from),
        effect: outcome.effect,
    }))
}

/// Revert one fault now.
///
/// Safe to repeat: stopping an ended fault returns it unchanged. Same as the MCP tool
/// `chaos_stop` with an `id`.
#[utoipa::path(post, path = "/api/v1/chaos/{id}/stop", tag = "chaos",
    params(("id" = String, Path, description = "Fault id, e.g. `f-3a9c0e12b4d7`")),
    responses(
        (status = 200, description = "The fault after its revert", body = doc::FaultView),
        (status = "4XX", description = "Unknown id (404), or chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The revert failed (the record says why)", body = doc::ErrorBody),
    ))]
pub async fn stop(
    State(st): State<RestState>,
    Path(id): Path<String>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<FaultView> {
    st.require_chaos()?;
    Ok(Json(FaultView::from(&st.chaos.stop(&id).await?)))
}

/// Revert every active fault.
///
/// Same as the MCP tool `chaos_stop` with `all: true`.
#[utoipa::path(post, path = "/api/v1/chaos/stop-all", tag = "chaos",
    responses(
        (status = 200, description = "Each fault after its revert", body = doc::FaultList),
        (status = "4XX", description = "Chaos disabled (403)", body = doc::ErrorBody),
        (status = "5XX", description = "The ledger cannot be read", body = doc::ErrorBody),
    ))]
pub async fn stop_all(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<FaultList> {
    st.require_chaos()?;
    let records = st.chaos.stop_all().await?;
    Ok(Json(FaultList {
        faults: records.iter().map(FaultView::from).collect(),
    }))
}
