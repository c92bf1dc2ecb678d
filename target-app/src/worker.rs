//! `target-app worker`: the background job worker.
//!
//! Jobs live in the `jobs` table. A claim is one `UPDATE … WHERE id = (SELECT … FOR UPDATE
//! SKIP LOCKED)`, so several workers never take the same job and never wait on each
//! other. Processing and marking done share one transaction. A failed job goes back to
//! `pending` with exponential backoff and becomes `failed` after [`MAX_ATTEMPTS`]. A job
//! left `running` by a worker that died is claimed again after [`STALE_AFTER_S`].
//! Database outages are logged with their code and retried; SIGTERM lets the current job
//! finish.

use std::time::{Duration, Instant};

use sqlx::{Acquire, PgPool};
use tokio::sync::watch;

use crate::config::Config;
use crate::db::{build_pool, classify_pool_error};
use crate::logging::{self, LineWriter};

/// Connections in the worker's pool: one claims and records, one runs the job's
/// transaction.
pub const WORKER_POOL_SIZE: u32 = 2;

/// Attempts before a job is marked `failed`.
pub const MAX_ATTEMPTS: i32 = 5;
/// A `running` job not updated for this long is considered abandoned.
pub const STALE_AFTER_S: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Done,
    /// Failed, will be retried.
    Retry {
        error: String,
    },
    /// Failed for the last time.
    Failed {
        error: String,
    },
}

/// What one iteration did with one job.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub id: i64,
    pub kind: String,
    pub attempts: i32,
    pub outcome: JobOutcome,
    pub latency_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot open log file {path}: {source}")]
    LogFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid database URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
}

/// Claims and processes at most one job. `Ok(None)`: nothing was due.
/// An `Err` is a database problem, not a job failure.
pub async fn run_once(pool: &PgPool) -> Result<Option<JobReport>, sqlx::Error> {
    let started = Instant::now();
    let claimed: Option<(i64, String, serde_json::Value, i32)> = sqlx::query_as(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = now() \
         WHERE id = ( \
           SELECT id FROM jobs \
           WHERE (status = 'pending' AND run_after <= now()) \
              OR (status = 'running' AND updated_at < now() - make_interval(secs => $1)) \
           ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) \
         RETURNING id, kind, payload, attempts",
    )
    .bind(STALE_AFTER_S as f64)
    .fetch_optional(pool)
    .await?;
    let Some((id, kind, payload, attempts)) = claimed else {
        return Ok(None);
    };

    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let processed = process(&mut tx, &kind, &payload).await;
    let outcome = match processed {
        Ok(()) => {
            sqlx::query(
                "UPDATE jobs SET status = 'done', last_error = NULL, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            JobOutcome::Done
        }
        Err(JobError::Db(error)) => {
            // The attempt counts. If the database is gone altogether, recording fails too
            // and the job stays `running` until it is reclaimed as stale.
            tx.rollback().await.ok();
            record_failure(pool, id, attempts, &error.to_string()).await?;
            return Err(error);
        }
        Err(JobError::Invalid(error)) => {
            tx.rollback().await?;
            let last = record_failure(pool, id, attempts, &error).await?;
            if last {
                JobOutcome::Failed { error }
            } else {
                JobOutcome::Retry { error }
            }
        }
    };
    Ok(Some(JobReport {
        id,
        kind,
        attempts,
        outcome,
        latency_ms: started.elapsed().as_millis() as u64,
    }))
}

/// Puts a failed job back with backoff (2^attempts s, at most 60 s) or marks it failed.
/// Returns true when this was the last attempt.
async fn record_failure(
    pool: &PgPool,
    id: i64,
    attempts: i32,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let last = attempts >= MAX_ATTEMPTS;
    let backoff_s = 2f64.powi(attempts.clamp(0, 6)).min(60.0);
    sqlx::query(
        "UPDATE jobs SET status = $2, last_error = $3, updated_at = now(), \
         run_after = now() + make_interval(secs => $4) WHERE id = $1",
    )
    .bind(id)
    .bind(if last { "failed" } else { "pending" })
    .bind(error)
    .bind(backoff_s)
    .execute(pool)
    .await?;
    Ok(last)
}

enum JobError {
    /// The job cannot succeed as it is (bad payload, missing order).
    Invalid(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Db(e)
    }
}

async fn process(
    tx: &mut sqlx::PgConnection,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<(), JobError> {
    match kind {
        "confirm_order" => {
            let order_id = payload
                .get("order_id")
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| JobError::Invalid("payload has no integer order_id".into()))?;
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
                    .bind(order_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match status.as_deref() {
                None => Err(JobError::Invalid(format!(
                    "order {order_id} does not exist"
                ))),
                // Idempotent: a job processed twice (after a stale reclaim) is fine.
                Some("confirmed") => Ok(()),
                Some("pending") => {
                    sqlx::query("UPDATE orders SET status = 'confirmed' WHERE id = $1")
                        .bind(order_id)
                        .execute(&mut *tx)
                        .await?;
                    Ok(())
                }
                Some(other) => Err(JobError::Invalid(format!(
                    "order {order_id} is {other}, cannot confirm"
                ))),
            }
        }
        other => Err(JobError::Invalid(format!("unknown job kind {other:?}"))),
    }
}

fn log_report(report: &JobReport) {
    match &report.outcome {
        JobOutcome::Done => tracing::info!(
            message = "Job done.", job_id = report.id, kind = %report.kind,
            attempts = report.attempts, latency_ms = report.latency_ms,
        ),
        JobOutcome::Retry { error } => tracing::warn!(
            message = "Job failed, will retry.", code = "JOB_FAILED", job_id = report.id,
            kind = %report.kind, attempts = report.attempts, error = %error,
        ),
        JobOutcome::Failed { error } => tracing::error!(
            message = "Job failed permanently.", code = "JOB_FAILED", job_id = report.id,
            kind = %report.kind, attempts = report.attempts, error = %error,
        ),
    }
}

/// Waits until the `jobs` table exists (the API applies migrations).
async fn wait_for_schema(pool: &PgPool, poll: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let mut logged = false;
    loop {
        let query = sqlx::query_scalar("SELECT to_regclass('public.jobs')::text").fetch_one(pool);
        let found: Result<Option<String>, sqlx::Error> = tokio::select! {
            found = query => found,
            _ = stop.wait_for(|s| *s) => return false,
        };
        match found {
            Ok(Some(_)) => return true,
            Ok(None) if !logged => {
                tracing::info!(message = "Waiting for the schema to be migrated.");
                logged = true;
            }
            Ok(None) => {}
            Err(error) => {
                let code = classify_pool_error(pool, &error);
                tracing::error!(message = "Cannot check the schema.", code = %code, error = %error);
            }
        }
        if sleep_or_stop(poll.max(Duration::from_secs(1)), stop).await {
            return false;
        }
    }
}

/// Sleeps; true if a stop was requested meanwhile.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.wait_for(|s| *s) => return true,
    }
    *stop.borrow()
}

/// The worker loop until `stop` turns true. Jobs are drained back to back; an empty queue
/// waits `poll`; a database error waits at least a second and doubles up to 30 s.
pub async fn run_loop(pool: &PgPool, poll: Duration, mut stop: watch::Receiver<bool>) {
    if !wait_for_schema(pool, poll, &mut stop).await {
        return;
    }
    tracing::info!(
        message = "Worker polling.",
        poll_ms = poll.as_millis() as u64
    );
    let mut error_backoff = Duration::from_secs(1);
    while !*stop.borrow() {
        // A job in progress is never cancelled: the stop flag is only read between jobs.
        let wait = match run_once(pool).await {
            Ok(Some(report)) => {
                log_report(&report);
                error_backoff = Duration::from_secs(1);
                continue;
            }
            Ok(None) => {
                error_backoff = Duration::from_secs(1);
                poll
            }
            Err(error) => {
                let code = classify_pool_error(pool, &error);
                tracing::error!(message = "Job polling failed.", code = %code, error = %error, retry_in_ms = error_backoff.as_millis() as u64);
                let wait = error_backoff.max(poll);
                error_backoff = (error_backoff * 2).min(Duration::from_secs(30));
                wait
            }
        };
        if sleep_or_stop(wait, &mut stop).await {
            break;
        }
    }
}

/// `target-app worker`: logs to `LOG_DIR/worker.log`, runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), WorkerError> {
    let log_path = config.log_dir.join("worker.log");
    let writer = LineWriter::with_file(&log_path).map_err(|source| WorkerError::LogFile {
        path: log_path.display().to_string(),
        source,
    })?;
    logging::init(&config.log_level, writer);
    tracing::info!(
        message = "Starting worker.",
        version = env!("CARGO_PKG_VERSION"),
        poll_ms = config.worker_poll.as_millis() as u64
    );

    let pool = build_pool(&config, "target-app-worker", WORKER_POOL_SIZE)
        .map_err(WorkerError::DatabaseUrl)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    run_loop(&pool, config.worker_poll, stop_rx).await;
    pool.close().await;
    tracing::info!(message = "Worker stopped.");
    Ok(())
}
