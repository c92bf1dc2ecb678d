//! `target-app serve`: start-up, background tasks and graceful shutdown of the API.
//!
//! Start-up order: logging, state, migrations, listeners. A database that is down at
//! start does not stop the process: migrations are retried in the background and
//! `/readyz` answers 503 until they are applied, as an orchestrator expects. A schema the
//! code does not match (edited or unknown migrations) is logged as `DB_SCHEMA_MISMATCH`
//! and not retried. SIGTERM or SIGINT stop both listeners gracefully.

use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::db::classify_pool_error;
use crate::error::ErrorCode;
use crate::logging::{self, LineWriter};
use crate::{AppState, admin_app, app, migrations};

/// How long in-flight requests get after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open log file {path}: {source}")]
    LogFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid database URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!(message = "Shutdown signal received.");
}

/// Runs the API until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let log_path = config.log_dir.join("target-app.log");
    let writer = LineWriter::with_file(&log_path).map_err(|source| ServeError::LogFile {
        path: log_path.display().to_string(),
        source,
    })?;
    logging::init(&config.log_level, writer);
    tracing::info!(
        message = "Starting target-app.",
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.listen_addr,
        admin_listen = %config.admin_listen_addr,
        pool_size = config.pool_size,
        upstream_mode = config.upstream_mode.as_str(),
        rate_limit_rps = config.rate_limit_rps,
    );

    let state = AppState::new(config.clone()).map_err(ServeError::DatabaseUrl)?;
    let public = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let admin = TcpListener::bind(config.admin_listen_addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.admin_listen_addr,
            source,
        })?;

    // First attempt inline so a healthy start is ready as soon as it listens; if the
    // database is not there yet, keep trying in the background.
    let migration_retry = if apply_migrations_once(state.db.pool()).await {
        None
    } else {
        Some(tokio::spawn(retry_migrations(state.db.pool().clone())))
    };
    spawn_queue_depth_refresher(&state);

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let public_server = axum::serve(public, app(state.clone()))
        .with_graceful_shutdown(wait(stop_rx.clone()))
        .into_future();
    let admin_server = axum::serve(admin, admin_app(&state))
        .with_graceful_shutdown(wait(stop_rx.clone()))
        .into_future();
    tracing::info!(message = "Listening.", listen = %config.listen_addr, admin_listen = %config.admin_listen_addr);

    let servers = async { tokio::try_join!(public_server, admin_server) };
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => { result?; }
        () = shutdown_signal() => {
            let _ = stop_tx.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut servers).await {
                Ok(result) => { result?; }
                Err(_) => tracing::warn!(message = "Requests still running after the grace period, stopping anyway.", grace_s = SHUTDOWN_GRACE.as_secs()),
            }
        }
    }
    if let Some(task) = migration_retry {
        task.abort();
    }
    // Closing waits for checked-out connections; do not let a stuck one hold the exit.
    let _ = tokio::time::timeout(Duration::from_secs(2), state.db.pool().close()).await;
    tracing::info!(message = "Stopped.");
    Ok(())
}

/// True when the schema is settled (applied, or permanently mismatched and logged).
async fn apply_migrations_once(pool: &PgPool) -> bool {
    match migrations::run(pool).await {
        Ok(()) => {
            tracing::info!(
                message = "Migrations applied.",
                embedded = migrations::MIGRATOR.iter().count()
            );
            true
        }
        Err(error) => {
            let code = migrations::classify_migrate_error(pool, &error);
            tracing::error!(message = "Cannot apply migrations.", code = %code, error = %error);
            // Retrying cannot fix a schema that disagrees with the code.
            code == ErrorCode::DbSchemaMismatch
        }
    }
}

async fn retry_migrations(pool: PgPool) {
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::time::sleep(delay).await;
        if apply_migrations_once(&pool).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

/// Refreshes `job_queue_depth` every 2 s, so scrapes never touch the database.
pub fn spawn_queue_depth_refresher(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let depth: Result<i64, sqlx::Error> = async {
                let mut conn = state.db.pool().acquire().await?;
                sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'pending'")
                    .fetch_one(&mut *conn)
                    .await
            }
            .await;
            match depth {
                Ok(depth) => {
                    state.metrics.job_queue_depth.set(depth);
                }
                Err(error) => {
                    let code = classify_pool_error(state.db.pool(), &error);
                    tracing::debug!(message = "Cannot read job queue depth.", code = %code, error = %error);
                }
            }
        }
    });
}
