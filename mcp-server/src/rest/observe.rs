//! Observation over REST: one `GET` per observation tool, each calling the same
//! `Observer` method. Read-only.

use aiops_observe::{
    ConfigReport, DbDiagnostics, DbDiagnosticsQuery, DiskUsageReport, EventPage, EventQuery,
    HealthReport, IncidentSnapshot, LogQuery, LogQueryResult, MetricsQuery, MetricsReport,
    ProcessStatsReport, SandboxStatus,
};
use axum::Json;
use axum::extract::State;

use super::RestState;
use super::error::ApiResult;
use super::openapi::doc;
use super::query::{NoQuery, SchemaQuery};

/// Incident snapshot: everything at once, with anomalies.
///
/// Service states, health probes, metrics over the last minute, recent error codes from
/// the logs, database sessions and lock chains, process use, disk and config, then the
/// anomalies found, each with evidence. Same as the MCP tool `incident_snapshot`.
#[utoipa::path(get, path = "/api/v1/snapshot", tag = "observe",
    responses(
        (status = 200, description = "The snapshot", body = doc::IncidentSnapshot),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn snapshot(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<IncidentSnapshot> {
    Ok(Json(st.observer.incident_snapshot().await?))
}

/// State of every sandbox service.
///
/// running/stopped/exited/backoff/failed, pid, uptime, restarts, last exit, OOM kills and
/// the supervisor's health verdict. Same as the MCP tool `sandbox_status`.
#[utoipa::path(get, path = "/api/v1/status", tag = "observe",
    responses(
        (status = 200, description = "Service states", body = doc::SandboxStatus),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn status(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<SandboxStatus> {
    Ok(Json(st.observer.sandbox_status().await?))
}

/// Probe the system now.
///
/// Target liveness, readiness and health summary, a database login and each upstream,
/// plus an overall healthy/degraded/unhealthy. Same as the MCP tool `check_health`.
#[utoipa::path(get, path = "/api/v1/health", tag = "observe",
    responses(
        (status = 200, description = "Probe results", body = doc::HealthReport),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn health(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<HealthReport> {
    Ok(Json(st.observer.check_health().await?))
}

/// Metrics of the target over a window (default 60 s).
///
/// Request and error rates, latency percentiles, pool use, cache, jobs, error codes and
/// per-service CPU and memory. Same as the MCP tool `get_metrics`.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "observe",
    responses(
        (status = 200, description = "Metrics over the window", body = doc::MetricsReport),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn metrics(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<MetricsQuery>,
) -> ApiResult<MetricsReport> {
    Ok(Json(st.observer.get_metrics(q).await?))
}

/// Search the sandbox's logs, newest first.
///
/// Filter by service, level, time, error code, regex or substring; paginated with
/// `cursor`. Same as the MCP tool `query_logs`.
#[utoipa::path(get, path = "/api/v1/logs", tag = "observe",
    responses(
        (status = 200, description = "Matching lines and counts", body = doc::LogQueryResult),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn logs(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<LogQuery>,
) -> ApiResult<LogQueryResult> {
    Ok(Json(st.observer.query_logs(q).await?))
}

/// Inside PostgreSQL: sessions, lock chains, long transactions, migrations.
///
/// Same as the MCP tool `db_diagnostics`; 503 quickly when the database is unreachable.
#[utoipa::path(get, path = "/api/v1/db", tag = "observe",
    responses(
        (status = 200, description = "Database diagnostics", body = doc::DbDiagnostics),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "Database unreachable, no sandbox, or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn db(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<DbDiagnosticsQuery>,
) -> ApiResult<DbDiagnostics> {
    Ok(Json(st.observer.db_diagnostics(q).await?))
}

/// Resource use of each service's process tree.
///
/// Same as the MCP tool `process_stats`.
#[utoipa::path(get, path = "/api/v1/processes", tag = "observe",
    responses(
        (status = 200, description = "Per-service process figures", body = doc::ProcessStatsReport),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn processes(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<ProcessStatsReport> {
    Ok(Json(st.observer.process_stats().await?))
}

/// Sizes of the sandbox's directories and free space.
///
/// Same as the MCP tool `disk_usage`.
#[utoipa::path(get, path = "/api/v1/disk", tag = "observe",
    responses(
        (status = 200, description = "Disk usage", body = doc::DiskUsageReport),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn disk(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<DiskUsageReport> {
    Ok(Json(st.observer.disk_usage().await?))
}

/// The target's configuration, validated and diffed against last-known-good.
///
/// Secret values are redacted. Same as the MCP tool `inspect_config`.
#[utoipa::path(get, path = "/api/v1/config", tag = "observe",
    responses(
        (status = 200, description = "Configuration report", body = doc::ConfigReport),
        (status = "4XX", description = "Bad input", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn config(
    State(st): State<RestState>,
    SchemaQuery(_): SchemaQuery<NoQuery>,
) -> ApiResult<ConfigReport> {
    Ok(Json(st.observer.inspect_config().await?))
}

/// The sandbox's event timeline, newest first.
///
/// Same as the MCP tool `list_events`.
#[utoipa::path(get, path = "/api/v1/events", tag = "observe",
    responses(
        (status = 200, description = "A page of events", body = doc::EventPage),
        (status = "4XX", description = "Bad input (names the field)", body = doc::ErrorBody),
        (status = "5XX", description = "No sandbox or an internal failure", body = doc::ErrorBody),
    ))]
pub async fn events(
    State(st): State<RestState>,
    SchemaQuery(q): SchemaQuery<EventQuery>,
) -> ApiResult<EventPage> {
    Ok(Json(st.observer.list_events(q).await?))
}
