//! Remediation over REST: every action through `Remediator::run` (params check, plan,
//! policy, approval gate, audit, execute, verify), approvals and the audit log.
//!
//! Status codes follow the outcome: 200 planned or executed, 202 pending approval, 403
//! refused (policy, rate limit, read-only, a precondition), 409 executed but failed or
//! not verified. The body is always the outcome.

use aiops_remediation::{ActionInfo, ActionOutcome, ActionRequest, Approval, Status};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::openapi::doc;
use super::query::{NoQuery, SchemaQuery};
use super::{RestState, body_object, caller, run_action};

#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionCatalogue {
    /// Every action, with its parameter schema and default policy.
    pub actions: Vec<ActionInfo>,
}

/// Query of `POST /api/v1/actions/{action}`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionQuery {
    /// Only return the plan (what, to what, expected effect, risk); change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// For actions the policy gates: the id returned with `pending_approval`, once a
    /// person approved it. Call again with the same body plus this id.
    #[serde(default)]
    pub approval_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalList {
    /// Approvals waiting for a decision.
    pub approvals: Vec<Approval>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// How many of the newest entries (1–1000, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditPage {
    /// Audit lines, oldest first: every action, dry run, refusal and approval decision,
    /// with caller, parameters (secrets redacted), policy decision and result.
    pub entries: Vec<Value>,
}

/// The action catalogue.
///
/// One entry per remediation action (the MCP server has one tool each): what it does,
/// its parameter schema, whether it is read-only or destructive, and its default policy.
#[utoipa::path(get, path = "/api/v1/actions", tag = "actions",
    responses(
        (status = 200, description = "The catalogue", body = doc::ActionCatalogue),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
    ))]
pub async fn catalogue(SchemaQuery(_): SchemaQuery<NoQuery>) -> ApiResult<ActionCatalogue> {
    Ok(Json(ActionCatalogue {
        actions: aiops_remediation::Remediator::actions(),
    }))
}

fn outcome_response(outcome: ActionOutcome) -> Response {
    let code = match outcome.status {
        Status::Planned | Status::Executed => StatusCode::OK,
        Status::PendingApproval => StatusCode::ACCEPTED,
        Status::Refused => StatusCode::FORBIDDEN,
        Status::Failed => StatusCode::CONFLICT,
    };
    (code, Json(outcome)).into_response()
}

/// Run a remediation action.
///
/// The JSON body holds the action's parameters (see `params_schema` in the catalogue).
/// The call takes the same path as the MCP tool of the same name: parameters checked,
/// plan, policy (`aiops.toml`), approval gate, audit line, execute, verify, audit line.
/// `dry_run=true` returns the plan only (still audited).
#[utoipa::path(post, path = "/api/v1/actions/{action}", tag = "actions",
    params(("action" = String, Path, description = "Action name from the catalogue, e.g. `kill_db_sessions`")),
    request_body(content = Object, description = "The action's parameters", content_type = "application/json"),
    responses(
        (status = 200, description = "Planned (dry run) or executed and verified", body = doc::ActionOutcome),
        (status = 202, description = "Waiting for a person's approval (`approval_id`)", body = doc::ActionOutcome),
        (status = 403, description = "Refused by policy, rate limit or a precondition", body = doc::ActionOutcome),
        (status = 409, description = "Executed but failed or not verified", body = doc::ActionOutcome),
        (status = 400, description = "Bad parameter (names the field)", body = doc::ErrorBody),
        (status = 404, description = "Unknown action", body = doc::ErrorBody),
        (status = "5XX", description = "The audit log cannot be written (nothing was done)", body = doc::ErrorBody),
    ))]
pub async fn run(
    State(st): State<RestState>,
    Path(action): Path<String>,
    SchemaQuery(q): SchemaQuery<ActionQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let params = body_object(&body)?;
    let remediator = st.remediator()?;
    let req = ActionRequest {
        action,
        params,
        dry_run: q.dry_run.unwrap_or(false),
        approval_id: q.approval_id,
    };
    let outcome = run_action(remediator, req, caller(&headers)).await?;
    Ok(outcome_response(outcome))
}

/// Approvals waiting for a decision.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "actions",
    responses(
        (status = 200, description = "Pending approvals", body = doc::ApprovalList),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
    ))]
pub async fn approvals(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<ApprovalList> {
    Ok(Json(ApprovalList {
        approvals: st.remediator()?.pending_approvals()?,
    }))
}

/// Approve a pending action (as `aiops approve ID` does); audited.
///
/// The caller then runs the action again with `approval_id`.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "actions",
    params(("id" = String, Path, description = "Approval id")),
    responses(
        (status = 200, description = "The approval, now approved", body = doc::Approval),
        (status = "4XX", description = "Unknown approval (404) or already decided (409)", body = doc::ErrorBody),
    ))]
pub async fn approve(
    State(st): State<RestState>,
    Path(id): Path<String>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
    headers: HeaderMap,
) -> ApiResult<Approval> {
    decide(&st, &id, true, &headers)
}

/// Deny a pending action (as `aiops deny ID` does); audited.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/deny", tag = "actions",
    params(("id" = String, Path, description = "Approval id")),
    responses(
        (status = 200, description = "The approval, now denied", body = doc::Approval),
        (status = "4XX", description = "Unknown approval (404) or already decided (409)", body = doc::ErrorBody),
    ))]
pub async fn deny(
    State(st): State<RestState>,
    Path(id): Path<String>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
    headers: HeaderMap,
) -> ApiResult<Approval> {
    decide(&st, &id, false, &headers)
}

fn decide(st: &RestState, id: &str, approve: bool, headers: &HeaderMap) -> ApiResult<Approval> {
    let by = caller(headers).client;
    Ok(Json(st.remediator()?.decide(id, approve, &by)?))
}

/// The newest audit entries.
///
/// Same lines as the MCP resource `audit://log` and `aiops audit`.
#[utoipa::path(get, path = "/api/v1/audit", tag = "actions",
    responses(
        (status = 200, description = "Audit lines, oldest first", body = doc::AuditPage),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
    ))]
pub async fn audit(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<AuditQuery>,
) -> ApiResult<AuditPage> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is out of range; allowed: 1 to 1000"),
        ));
    }
    Ok(Json(AuditPage {
        entries: st.remediator()?.audit_tail(limit as usize)?,
    }))
}
