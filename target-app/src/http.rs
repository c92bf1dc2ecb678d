//! The public router and its middleware.
//!
//! Layering, outermost first: request tracking (request id, one log line, metrics) wraps
//! every route; rate limiting and the `http.*` failpoints wrap only `/api/v1`, so the
//! probes (`/healthz`, `/readyz`) and `/metrics` keep answering while the API is being
//! throttled or broken on purpose.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::Instrument;

use crate::AppState;
use crate::error::{AppError, ErrorCode, ResponseErrorCode};
use crate::metrics::{CodeLabel, HttpLabels, RouteLabel};
use crate::{health, shop};

/// The public API router (`LISTEN_ADDR`).
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/pool/status", get(health::pool_status))
        .route("/api/v1/migrations/status", get(health::migrations_status))
        .route(
            "/api/v1/products",
            get(shop::list_products).post(shop::upsert_product),
        )
        .route("/api/v1/products/{id}", get(shop::get_product))
        .route("/api/v1/products/{id}/price", get(shop::get_price))
        .route("/api/v1/orders", post(shop::create_order))
        .route("/api/v1/orders/{id}", get(shop::get_order))
        // Added last = runs first: a refused request costs no injected latency.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            http_failpoints,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .fallback(|| async { AppError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), track_request))
        .with_state(state)
}

async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.rate_limiter.try_acquire() {
        next.run(req).await
    } else {
        state.metrics.rate_limited.inc();
        AppError::new(ErrorCode::RateLimited, "rate limit exceeded, retry later").into_response()
    }
}

async fn http_failpoints(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.failpoints.delay("http.latency").await;
    if state.failpoints.should_fail("http.error") {
        return AppError::new(ErrorCode::InjectedFailure, "internal error")
            .with_detail("failpoint http.error")
            .into_response();
    }
    next.run(req).await
}

/// Gives the request an id, logs one line for it and records its metrics. The route label
/// is the matched template (`/api/v1/products/{id}`), never the raw path, so the metric's
/// cardinality stays bounded.
async fn track_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let mut response = next.run(req).instrument(span).await;

    let status = response.status().as_u16();
    let latency = started.elapsed();
    let code = response
        .extensions()
        .get::<ResponseErrorCode>()
        .map(|c| c.0.as_str());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: route.clone(),
            method: method.clone(),
            status: status.to_string(),
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(latency.as_secs_f64());
    if let Some(code) = code {
        state
            .metrics
            .app_errors
            .get_or_create(&CodeLabel { code })
            .inc();
    }
    let latency_ms = latency.as_millis() as u64;
    match code {
        Some(code) if status >= 500 => tracing::warn!(
            message = "Request handled.", request_id = %request_id, method = %method,
            route = %route, status, latency_ms, code,
        ),
        Some(code) => tracing::info!(
            message = "Request handled.", request_id = %request_id, method = %method,
            route = %route, status, latency_ms, code,
        ),
        None => tracing::info!(
            message = "Request handled.", request_id = %request_id, method = %method,
            route = %route, status, latency_ms,
        ),
    }
    response
}
