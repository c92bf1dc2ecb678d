//! `target-app`: a small shop service (users, products, orders) on axum and PostgreSQL,
//! with a file cache, a pricing upstream, a background worker, metrics and an admin API.
//!
//! One binary, three modes (see `docs/target-app.md`): [`server::serve`] (the API and its
//! admin listener), [`worker::run`] (the job worker) and [`upstream::server::serve`] (the
//! pricing service). The routers are plain functions of their state — [`app`],
//! [`admin_app`], [`upstream::server::router`] — so tests drive them without a socket.
//!
//! **Invariant:** this crate knows nothing about the sandbox that runs it. Its failpoints
//! are a generic operator facility, like those of many production services.

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod failpoints;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod migrations;
pub mod ratelimit;
pub mod server;
pub mod shop;
pub mod upstream;
pub mod worker;

use std::sync::Arc;
use std::time::Instant;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;

pub use auth::{Claims, Role, mint_token};
pub use config::{Config, ConfigError, UpstreamMode};
pub use error::{AppError, ErrorCode};
pub use http::app;

use cache::ProductCache;
use db::Db;
use failpoints::{APP_FAILPOINTS, Failpoints};
use metrics::Metrics;
use ratelimit::RateLimiter;
use upstream::UpstreamClient;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub failpoints: Failpoints,
    pub rate_limiter: Arc<RateLimiter>,
    pub cache: ProductCache,
    pub upstream: UpstreamClient,
    pub started: Instant,
}

impl AppState {
    /// Builds the state with a lazily connecting pool: nothing touches the network here.
    pub fn new(config: Config) -> Result<AppState, sqlx::Error> {
        let pool = db::build_pool(&config, "target-app", config.pool_size)?;
        let db = Db::new(pool, config.pool_size);
        let metrics = Arc::new(Metrics::new(&db));
        Ok(AppState {
            upstream: UpstreamClient::new(&config, metrics.clone()),
            cache: ProductCache::new(&config.cache_dir),
            rate_limiter: Arc::new(RateLimiter::new(config.rate_limit_rps)),
            failpoints: Failpoints::new(APP_FAILPOINTS),
            config: Arc::new(config),
            db,
            metrics,
            started: Instant::now(),
        })
    }

    /// A pooled connection for a handler, after any injected `db.latency`.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>, AppError> {
        self.failpoints.delay("db.latency").await;
        self.db.acquire().await
    }
}

/// The admin router (`ADMIN_LISTEN_ADDR`): failpoints and rate limit.
pub fn admin_app(state: &AppState) -> axum::Router {
    admin::router(admin::AdminState {
        token: Some(state.config.admin_token.as_str().into()),
        failpoints: state.failpoints.clone(),
        rate_limiter: Some(state.rate_limiter.clone()),
    })
}
