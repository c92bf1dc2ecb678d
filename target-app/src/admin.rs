//! The admin API: failpoints and the rate limit, behind a bearer token.
//!
//! The API process serves it on its own loopback listener (`ADMIN_LISTEN_ADDR`); the
//! upstream serves the failpoint part on its public listener. The token is compared in
//! constant time. Without a token the routes do not exist (404), so an unconfigured
//! upstream exposes nothing.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::{AppError, ErrorCode};
use crate::failpoints::{FailpointError, Failpoints};
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AdminState {
    /// `None` disables the admin API.
    pub token: Option<Arc<str>>,
    pub failpoints: Failpoints,
    /// `None` when the process has no rate limiter (the upstream).
    pub rate_limiter: Option<Arc<RateLimiter>>,
}

pub fn router(state: AdminState) -> Router {
    if state.token.is_none() {
        return Router::new();
    }
    let mut router = Router::new()
        .route("/admin/failpoints", get(list_failpoints))
        .route(
            "/admin/failpoints/{name}",
            get(get_failpoint)
                .put(set_failpoint)
                .delete(delete_failpoint),
        );
    if state.rate_limiter.is_some() {
        router = router.route("/admin/rate_limit", get(get_rate_limit).put(set_rate_limit));
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Equal-length byte strings compared without an early exit, so timing does not reveal
/// how much of a guessed token was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (&state.token, presented) {
        (Some(expected), Some(got)) => constant_time_eq(expected.as_bytes(), got.as_bytes()),
        _ => false,
    };
    if ok {
        next.run(req).await
    } else {
        AppError::new(
            ErrorCode::AuthInvalidToken,
            "missing or invalid admin token",
        )
        .with_detail("admin request without a valid bearer token")
        .into_response()
    }
}

async fn list_failpoints(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let available: Vec<_> = state
        .failpoints
        .catalog()
        .iter()
        .map(|s| json!({"name": s.name, "action": s.kind.syntax(), "help": s.help}))
        .collect();
    Json(json!({"active": state.failpoints.list(), "available": available}))
}

async fn get_failpoint(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    known(&state, &name)?;
    let action = state
        .failpoints
        .get(&name)
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    Ok(Json(json!({"name": name, "action": action})))
}

fn known(state: &AdminState, name: &str) -> Result<(), AppError> {
    if state.failpoints.catalog().iter().any(|s| s.name == name) {
        Ok(())
    } else {
        let names: Vec<_> = state.failpoints.catalog().iter().map(|s| s.name).collect();
        Err(AppError::not_found(format!(
            "unknown failpoint {name:?}; known failpoints: {}",
            names.join(", ")
        )))
    }
}

#[derive(Deserialize)]
struct SetFailpoint {
    action: String,
}

async fn set_failpoint(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Result<Json<SetFailpoint>, JsonRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    let Json(body) = body.map_err(|e| {
        AppError::bad_request(format!("expected a JSON body {{\"action\": \"...\"}}: {e}"))
    })?;
    match state.failpoints.set(&name, &body.action) {
        Ok(Some(action)) => Ok(Json(json!({"name": name, "action": action.to_string()}))),
        Ok(None) => Ok(Json(json!({"name": name, "action": "off"}))),
        Err(e @ FailpointError::Unknown { .. }) => Err(AppError::not_found(e.to_string())),
        Err(e @ FailpointError::BadAction { .. }) => Err(AppError::bad_request(e.to_string())),
    }
}

async fn delete_failpoint(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    known(&state, &name)?;
    let removed = state.failpoints.remove(&name);
    Ok(Json(
        json!({"name": name, "action": "off", "removed": removed}),
    ))
}

fn rate_limit_body(rl: &RateLimiter) -> serde_json::Value {
    let (max_requests, window_seconds) = rl.window();
    json!({"rps": rl.rps(), "max_requests": max_requests, "window_seconds": window_seconds})
}

async fn get_rate_limit(State(state): State<AdminState>) -> Response {
    match &state.rate_limiter {
        Some(rl) => Json(rate_limit_body(rl)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `{"rps": N}` (N per second), or `{"max_requests": N, "window_seconds": W}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRateLimit {
    rps: Option<u32>,
    max_requests: Option<u32>,
    window_seconds: Option<u32>,
}

async fn set_rate_limit(
    State(state): State<AdminState>,
    body: Result<Json<SetRateLimit>, JsonRejection>,
) -> Result<Json<serde_json::Value>, AppError> {
    const SHAPE: &str = "expected a JSON body {\"rps\": N} with N in 0..=100000, or \
        {\"max_requests\": N, \"window_seconds\": W} with N in 0..=100000 and W in 1..=3600";
    let Json(body) = body.map_err(|e| AppError::bad_request(format!("{SHAPE}: {e}")))?;
    let (max_requests, window_s) = match (body.rps, body.max_requests, body.window_seconds) {
        (Some(rps), None, None) => (rps, 1),
        (None, Some(max), Some(window)) => (max, window),
        _ => return Err(AppError::bad_request(SHAPE)),
    };
    if max_requests > 100_000 || !(1..=3600).contains(&window_s) {
        return Err(AppError::bad_request(format!(
            "rate limit out of range; {SHAPE} (0 requests = off)"
        )));
    }
    let Some(rl) = &state.rate_limiter else {
        return Err(AppError::not_found("no rate limiter in this process"));
    };
    let previous = rate_limit_body(rl);
    rl.set_window(max_requests, window_s);
    tracing::warn!(
        message = "Rate limit changed.",
        previous = %previous,
        max_requests,
        window_seconds = window_s
    );
    let mut now = rate_limit_body(rl);
    now["previous"] = previous;
    Ok(Json(now))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
    }
}
