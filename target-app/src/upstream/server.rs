//! The pricing/FX service run by `target-app upstream --listen ADDR --name NAME`.
//!
//! It answers `GET /v1/price/{sku}?currency=XXX` with a rate derived from a hash of the
//! SKU and currency, so every instance (primary and fallback) agrees without shared state.
//! Its failpoints (`upstream.status`, `upstream.hang`, `http.latency`) live on the same
//! listener under `/admin/failpoints`, enabled only when an admin token is given. It has no
//! database and logs to stderr only.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::admin::{self, AdminState};
use crate::failpoints::{Failpoints, UPSTREAM_FAILPOINTS};
use crate::upstream::Quote;

#[derive(Clone)]
struct UpstreamState {
    name: String,
    failpoints: Failpoints,
}

/// The upstream service router. `admin_token` enables `/admin/failpoints`; without it
/// those routes answer 404.
pub fn router(name: &str, failpoints: Failpoints, admin_token: Option<String>) -> Router {
    let state = UpstreamState {
        name: name.to_owned(),
        failpoints: failpoints.clone(),
    };
    let v1 = Router::new()
        .route("/v1/price/{sku}", get(price))
        .layer(middleware::from_fn_with_state(state.clone(), v1_failpoints))
        .with_state(state);
    let admin = admin::router(AdminState {
        token: admin_token.map(Into::into),
        failpoints,
        rate_limiter: None,
    });
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(v1)
        .merge(admin)
        .layer(middleware::from_fn(log_request))
}

/// A fresh failpoint registry with the upstream catalogue.
pub fn failpoints() -> Failpoints {
    Failpoints::new(UPSTREAM_FAILPOINTS)
}

#[derive(Deserialize)]
struct PriceQuery {
    currency: Option<String>,
}

async fn price(
    State(state): State<UpstreamState>,
    Path(sku): Path<String>,
    Query(query): Query<PriceQuery>,
) -> Response {
    let currency = query.currency.unwrap_or_else(|| "EUR".to_owned());
    if !is_currency(&currency) {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "currency must be three letters A-Z",
        );
    }
    Json(Quote {
        rate: rate_for(&sku, &currency),
        sku,
        currency,
        source: state.name,
    })
    .into_response()
}

/// Three upper-case ASCII letters, as in ISO 4217.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// A deterministic rate in 0.5..2.0 (four decimals) from FNV-1a of `sku` and `currency`.
pub fn rate_for(sku: &str, currency: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sku.bytes().chain([b'/']).chain(currency.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    0.5 + (hash % 15_000) as f64 / 10_000.0
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn v1_failpoints(State(state): State<UpstreamState>, req: Request, next: Next) -> Response {
    state.failpoints.delay("http.latency").await;
    if state.failpoints.get("upstream.hang").is_some() {
        state.failpoints.wait_while_active("upstream.hang").await;
    }
    if let Some(code) = state.failpoints.status("upstream.status") {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "INJECTED_FAILURE", "injected status");
    }
    next.run(req).await
}

async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    tracing::info!(
        message = "Request handled.",
        method = %method,
        route = %route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_millis() as u64,
    );
    response
}

/// Serves the upstream on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    name: &str,
    admin_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(
        message = "Upstream listening.",
        name = %name,
        addr = %listener.local_addr()?,
        admin = admin_token.is_some(),
    );
    axum::serve(listener, router(name, failpoints(), admin_token))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_deterministic_and_in_range() {
        let a = rate_for("SKU-0001", "EUR");
        assert_eq!(a, rate_for("SKU-0001", "EUR"));
        assert_ne!(a, rate_for("SKU-0002", "EUR"));
        for sku in ["", "a", "SKU-0042", "x".repeat(100).as_str()] {
            let r = rate_for(sku, "USD");
            assert!((0.5..2.0).contains(&r), "{r}");
        }
    }

    #[test]
    fn currency_shape() {
        assert!(is_currency("EUR"));
        assert!(!is_currency("eur"));
        assert!(!is_currency("EURO"));
    }
}
