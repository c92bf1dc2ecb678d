//! Diagnoses and incident reports over REST: `aiops_sandbox::incidents`, as the MCP tools
//! `submit_diagnosis` and `report_incident` and the `incident://{id}` resources use it.
//! Free text is scrubbed of secret values by the library.

use aiops_sandbox::incidents::{self, ReportInput};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::openapi::doc;
use super::query::{NoQuery, SchemaQuery};
use super::{RestState, caller};

/// An incident report as filed (the library's own type).
pub use aiops_sandbox::incidents::IncidentReport as IncidentView;

#[derive(Debug, Serialize, JsonSchema)]
pub struct IncidentList {
    /// Reports, newest first (at most 200).
    pub incidents: Vec<IncidentView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct IncidentDocument {
    pub report: IncidentView,
    /// The report in Markdown (the `incident://{id}` resource).
    pub markdown: String,
}

/// Body of `POST /api/v1/incidents` (the MCP tool `report_incident`'s arguments).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportIncidentBody {
    /// A one-line title (≤ 200 characters).
    pub title: String,
    /// What broke, with the mechanism (≤ 4000).
    pub what_broke: String,
    /// Each action taken, in order, with its result (≤ 50 items).
    pub what_was_done: Vec<String>,
    /// Why these actions fix the cause (≤ 4000).
    pub why: String,
    /// How to prevent it (≤ 20 items).
    #[serde(default)]
    pub prevention: Vec<String>,
    /// Figures before the fix.
    #[serde(default)]
    pub before: Value,
    /// The same figures after the fix.
    #[serde(default)]
    pub after: Value,
    #[serde(default)]
    pub diagnosis_id: Option<String>,
    /// Whether steady state is back.
    pub resolved: bool,
}

/// Body of `POST /api/v1/diagnoses` (the MCP tool `submit_diagnosis`'s arguments).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiagnosisBody {
    /// The failure class believed to be the cause, e.g. `db_pool_exhaustion`.
    pub fault_class: String,
    /// The component at fault, e.g. `postgres`.
    pub component: String,
    /// One or two sentences (≤ 2000 characters).
    pub summary: String,
    /// Concrete evidence (≤ 20 items).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiagnosisReceipt {
    pub id: String,
    pub submitted_at: DateTime<Utc>,
}

/// A library error as an answer: bad input is a 400 naming the field.
fn store_error(what: &str, e: aiops_sandbox::Error) -> ApiError {
    match e {
        aiops_sandbox::Error::InvalidArgument { ref field, .. } => {
            ApiError::invalid(field.clone(), e.to_string())
        }
        e => ApiError::internal(what, e),
    }
}

/// A JSON body into `T`, a 400 naming the field otherwise.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| super::error::from_path_error("body", e))
}

/// Incident reports, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents",
    responses(
        (status = 200, description = "Reports", body = doc::IncidentList),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
    ))]
pub async fn list(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<IncidentList> {
    Ok(Json(IncidentList {
        incidents: incidents::reports(&st.state)
            .into_iter()
            .take(200)
            .collect(),
    }))
}

/// One incident report, with its Markdown.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "Report id, e.g. `inc-20260101-120000-a1b2c3`")),
    responses(
        (status = 200, description = "The report", body = doc::IncidentDocument),
        (status = "4XX", description = "Unknown report (404)", body = doc::ErrorBody),
    ))]
pub async fn get(
    State(st): State<RestState>,
    Path(id): Path<String>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<IncidentDocument> {
    match incidents::report(&st.state, &id) {
        Some((report, markdown)) => Ok(Json(IncidentDocument { report, markdown })),
        None => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_incident",
            format!("no incident report `{id}`; list them with GET /api/v1/incidents"),
        )
        .with_field("id")),
    }
}

/// File an incident report.
///
/// Same as the MCP tool `report_incident`; changes nothing in the system.
#[utoipa::path(post, path = "/api/v1/incidents", tag = "incidents",
    request_body(content = doc::ReportIncidentBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The report as stored", body = doc::IncidentView),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "The report cannot be stored", body = doc::ErrorBody),
    ))]
pub async fn file(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<IncidentView> {
    let a: ReportIncidentBody = json_body(&body)?;
    let r = incidents::file_report(
        &st.state,
        ReportInput {
            title: a.title,
            what_broke: a.what_broke,
            what_was_done: a.what_was_done,
            why: a.why,
            prevention: a.prevention,
            before: a.before,
            after: a.after,
            diagnosis_id: a.diagnosis_id,
            resolved: a.resolved,
        },
        &caller(&headers).client,
    )
    .map_err(|e| store_error("storing the report", e))?;
    Ok(Json(r))
}

/// State a diagnosis.
///
/// Same as the MCP tool `submit_diagnosis`: timestamped and kept; the latest counts.
#[utoipa::path(post, path = "/api/v1/diagnoses", tag = "incidents",
    request_body(content = doc::DiagnosisBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded", body = doc::DiagnosisReceipt),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "The diagnosis cannot be stored", body = doc::ErrorBody),
    ))]
pub async fn diagnose(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<DiagnosisReceipt> {
    let a: DiagnosisBody = json_body(&body)?;
    let d = incidents::submit_diagnosis(
        &st.state,
        &a.fault_class,
        &a.component,
        &a.summary,
        &a.evidence,
        a.confidence,
        &caller(&headers).client,
    )
    .map_err(|e| store_error("storing the diagnosis", e))?;
    Ok(Json(DiagnosisReceipt {
        id: d.id,
        submitted_at: d.submitted_at,
    }))
}
