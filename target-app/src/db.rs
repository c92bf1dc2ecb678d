//! The PostgreSQL pool and the one way handlers get a connection from it.
//!
//! sqlx does not expose how often acquisitions waited or timed out, and those are the
//! numbers an operator needs to tell "pool too small" from "database down". So every
//! acquisition goes through [`Db::acquire`], which counts them. This module does not know
//! about failpoints; `AppState::conn` adds the injected latency in front of it.

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::Config;
use crate::error::{AppError, ErrorCode, classify_sqlx};

/// Builds a lazily connecting pool from the configuration. `application_name` tells the
/// processes apart in `pg_stat_activity`; `statement_timeout` is a startup parameter so
/// it holds for every session of the pool.
pub fn build_pool(
    config: &Config,
    application_name: &str,
    max_connections: u32,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.database_url.parse()?;
    let options = options.application_name(application_name).options([(
        "statement_timeout",
        config.db_statement_timeout_ms.to_string(),
    )]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(config.pool_min_idle.min(max_connections))
        .acquire_timeout(config.pool_acquire_timeout)
        .idle_timeout(Some(config.pool_idle_timeout))
        .connect_lazy_with(options))
}

/// Classifies an error from a pool operation. A `PoolTimedOut` while the pool still had
/// room means no new connection could be opened (database down or refusing), not that
/// the pool was exhausted, and is `DB_UNAVAILABLE`.
pub fn classify_pool_error(pool: &PgPool, error: &sqlx::Error) -> ErrorCode {
    match error {
        sqlx::Error::PoolTimedOut if pool.size() < pool.options().get_max_connections() => {
            ErrorCode::DbUnavailable
        }
        other => classify_sqlx(other),
    }
}

/// The pool plus the acquire counters.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    max_size: u32,
    /// Acquisitions that found no idle connection.
    pub acquire_waits: Counter,
    /// Acquisitions that hit the acquire timeout.
    pub acquire_timeouts: Counter,
}

/// A snapshot of the pool, as served by `/api/v1/pool/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolStats {
    pub size: u32,
    pub max_size: u32,
    pub idle: u32,
    pub in_use: u32,
    pub acquire_waits: u64,
    pub acquire_timeouts: u64,
    pub utilization_percent: f64,
    pub health: PoolHealth,
}

/// Pool health band from utilisation (in-use connections over the maximum).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolHealth {
    Healthy,
    Warning,
    Degraded,
    Critical,
}

/// `healthy` < 50 %, `warning` ≥ 50 %, `degraded` ≥ 70 %, `critical` ≥ 90 %.
pub fn pool_health(utilization_percent: f64) -> PoolHealth {
    if utilization_percent >= 90.0 {
        PoolHealth::Critical
    } else if utilization_percent >= 70.0 {
        PoolHealth::Degraded
    } else if utilization_percent >= 50.0 {
        PoolHealth::Warning
    } else {
        PoolHealth::Healthy
    }
}

impl Db {
    pub fn new(pool: PgPool, max_size: u32) -> Self {
        Db {
            pool,
            max_size,
            acquire_waits: Counter::default(),
            acquire_timeouts: Counter::default(),
        }
    }

    /// The underlying pool, for code that does not serve requests (migrations, tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Acquires a connection, counting waits and timeouts. A timeout while the pool still
    /// had room means connecting failed (database down), not that the pool was exhausted,
    /// and is reported as `DB_UNAVAILABLE`.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, AppError> {
        if self.pool.num_idle() == 0 {
            self.acquire_waits.inc();
        }
        let started = Instant::now();
        match self.pool.acquire().await {
            Ok(conn) => Ok(conn),
            Err(error @ sqlx::Error::PoolTimedOut) => {
                self.acquire_timeouts.inc();
                let size = self.pool.size();
                let waited_ms = started.elapsed().as_millis() as u64;
                if size >= self.max_size {
                    Err(AppError::from(error).with_detail(format!(
                        "pool timed out after {waited_ms} ms with all {size} connections in use"
                    )))
                } else {
                    Err(AppError::new(ErrorCode::DbUnavailable, "database unavailable")
                        .with_detail(format!(
                            "could not open a connection within {waited_ms} ms (pool size {size} of {})",
                            self.max_size
                        )))
                }
            }
            Err(error) => {
                let code = classify_sqlx(&error);
                Err(AppError::new(code, code.as_str()).with_detail(error.to_string()))
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = self.pool.num_idle() as u32;
        let in_use = size.saturating_sub(idle);
        let utilization_percent = if self.max_size == 0 {
            0.0
        } else {
            (f64::from(in_use) * 1000.0 / f64::from(self.max_size)).round() / 10.0
        };
        PoolStats {
            size,
            max_size: self.max_size,
            idle,
            in_use,
            acquire_waits: self.acquire_waits.get(),
            acquire_timeouts: self.acquire_timeouts.get(),
            utilization_percent,
            health: pool_health(utilization_percent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_bands() {
        assert_eq!(pool_health(0.0), PoolHealth::Healthy);
        assert_eq!(pool_health(49.9), PoolHealth::Healthy);
        assert_eq!(pool_health(50.0), PoolHealth::Warning);
        assert_eq!(pool_health(69.9), PoolHealth::Warning);
        assert_eq!(pool_health(70.0), PoolHealth::Degraded);
        assert_eq!(pool_health(89.9), PoolHealth::Degraded);
        assert_eq!(pool_health(90.0), PoolHealth::Critical);
        assert_eq!(pool_health(100.0), PoolHealth::Critical);
    }

    #[test]
    fn health_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&PoolHealth::Critical).unwrap(),
            "\"critical\""
        );
    }
}
