//! Liveness, readiness, the health summary, pool and migration status, and `/metrics`.
//!
//! `/healthz` only says the process runs. `/readyz` and `/api/v1/health` check what the
//! shop needs to serve: the database (one `SELECT 1` within 1 s, through the same pool
//! as the handlers, so an exhausted pool shows up here too), the migrations and the
//! upstream in use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::AppState;
use crate::db::classify_pool_error;
use crate::error::{AppError, ErrorCode};
use crate::migrations;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// A database answering slower than this makes the service `degraded`.
const DB_SLOW_MS: u64 = 500;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[derive(Debug, Serialize)]
pub struct DbHealth {
    /// `ok`, `slow` or `down`.
    pub status: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'static str>,
}

async fn check_db(state: &AppState) -> DbHealth {
    let started = Instant::now();
    // Which stage the check reached, to name a timeout correctly: stuck acquiring is a pool
    // or connection problem, stuck in the query is a slow database.
    let acquired = AtomicBool::new(false);
    let result = tokio::time::timeout(DB_CHECK_TIMEOUT, async {
        let mut conn = state.conn().await?;
        acquired.store(true, Ordering::Relaxed);
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok::<(), AppError>(())
    })
    .await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (status, error_code) = match result {
        Ok(Ok(())) if latency_ms >= DB_SLOW_MS => ("slow", None),
        Ok(Ok(())) => ("ok", None),
        Ok(Err(e)) => {
            tracing::warn!(message = "Database check failed.", code = %e.code, error = e.detail.as_deref().unwrap_or(&e.message));
            ("down", Some(e.code.as_str()))
        }
        Err(_) => {
            let code = if acquired.load(Ordering::Relaxed) {
                ErrorCode::DbTimeout
            } else {
                classify_pool_error(state.db.pool(), &sqlx::Error::PoolTimedOut)
            };
            tracing::warn!(message = "Database check timed out.", code = %code, timeout_ms = DB_CHECK_TIMEOUT.as_millis() as u64, acquired = acquired.load(Ordering::Relaxed));
            ("down", Some(code.as_str()))
        }
    };
    DbHealth {
        status,
        latency_ms,
        error_code,
    }
}

/// `Ok(current)` or the error code that prevented the comparison.
async fn check_migrations(state: &AppState) -> Result<bool, ErrorCode> {
    let result = tokio::time::timeout(DB_CHECK_TIMEOUT, async {
        let mut conn = state.conn().await?;
        Ok::<_, AppError>(migrations::status(&mut conn).await?)
    })
    .await;
    match result {
        Ok(Ok(status)) => Ok(status.current),
        Ok(Err(e)) => Err(e.code),
        Err(_) => Err(ErrorCode::DbTimeout),
    }
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let (db, migrations, upstream) = tokio::join!(
        check_db(&state),
        check_migrations(&state),
        state.upstream.health()
    );
    let db_ok = db.status != "down";
    let migrations_check = match migrations {
        Ok(true) => "ok".to_owned(),
        Ok(false) => "not current".to_owned(),
        Err(code) => format!("unknown: {code}"),
    };
    let upstream_ok = upstream.status != "down";
    let ready = db_ok && migrations == Ok(true) && upstream_ok;
    let body = json!({
        "ready": ready,
        "checks": {
            "db": if db_ok { "ok".to_owned() } else { format!("down: {}", db.error_code.unwrap_or("DB_ERROR")) },
            "migrations": migrations_check,
            "upstream": if upstream_ok { "ok".to_owned() } else { format!("down: {}", upstream.url_name) },
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub async fn health(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let (db, upstream) = tokio::join!(check_db(&state), state.upstream.health());
    let status = match (db.status, upstream.status) {
        ("down", _) => "unhealthy",
        ("ok", "ok") => "healthy",
        _ => "degraded",
    };
    let body = json!({
        "status": status,
        "db": db,
        "upstream": upstream,
        "latency_ms": started.elapsed().as_millis() as u64,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

pub async fn pool_status(State(state): State<AppState>) -> Json<crate::db::PoolStats> {
    Json(state.db.stats())
}

pub async fn migrations_status(
    State(state): State<AppState>,
) -> Result<Json<migrations::MigrationStatus>, AppError> {
    let mut conn = state.conn().await?;
    Ok(Json(migrations::status(&mut conn).await?))
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.db),
    )
        .into_response()
}
