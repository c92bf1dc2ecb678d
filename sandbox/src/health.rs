//! Health probes, the same for every runtime: the supervisor of local processes and the
//! Docker runtime probe a service the same way, so "healthy" means the same thing on both
//! and the details an agent reads are worded alike.
//!
//! Also the last-known-good `.env`: whenever the target turns healthy, the `.env` it runs
//! with is kept, for `restore_config` to go back to.

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::events::EventLog;
use crate::paths::{StateDir, write_atomic};
use crate::prepare::Prepared;
use crate::runtime::{Health, HealthStatus};
use crate::secrets::{self, names as secret};
use crate::topology::{ServiceKind, ServiceSpec, names as svc};

/// Probes services of one sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Prober {
    prepared: Prepared,
    http: reqwest::Client,
}

impl Prober {
    pub fn new(prepared: Prepared) -> Self {
        Self {
            prepared,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .expect("HTTP client builds"),
        }
    }

    /// Probe `spec` once. `up_for` is how long its current run has lasted (the worker has
    /// no listener: alive for half a second means it got past start-up).
    pub async fn probe(&self, spec: &ServiceSpec, up_for: Duration) -> Health {
        let started = Instant::now();
        let result: std::result::Result<(), String> = match spec.kind {
            ServiceKind::Postgres => self.probe_postgres().await,
            ServiceKind::Worker => {
                if up_for >= Duration::from_millis(500) {
                    Ok(())
                } else {
                    Err("starting".into())
                }
            }
            ServiceKind::TargetApp | ServiceKind::Upstream => match &spec.health_url {
                Some(url) => match self.http.get(url).send().await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let code = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        Err(format!("{url} answered {code}: {}", truncate(&body, 300)))
                    }
                    Err(e) => Err(format!("{url}: {}", describe_reqwest(&e))),
                },
                None => Ok(()),
            },
        };
        let latency = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => Health {
                status: HealthStatus::Healthy,
                detail: String::new(),
                checked_at: Some(Utc::now()),
                latency_ms: Some(latency),
            },
            Err(detail) => Health {
                status: HealthStatus::Unhealthy,
                detail,
                checked_at: Some(Utc::now()),
                latency_ms: Some(latency),
            },
        }
    }

    async fn probe_postgres(&self) -> std::result::Result<(), String> {
        use sqlx::Connection;
        let p = &self.prepared;
        let pw = secrets::get_or_create(&p.state, secret::PG_ADMIN_PASSWORD, 24)
            .map_err(|e| e.to_string())?;
        let opts = p
            .cluster
            .connect_options(&p.cluster.admin_user, &pw, "postgres")
            .application_name("aiops-probe");
        match tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::postgres::PgConnection::connect_with(&opts),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(format!("connect failed: {e}")),
            Err(_) => Err("connect timed out after 2 s".into()),
        }
    }
}

/// A service's health changed from `before` to `after`: put it on the timeline (the
/// unknown → unhealthy flicker of a starting service is not news), and when the target
/// turns healthy keep its `.env` as last-known-good.
pub fn on_transition(
    state: &StateDir,
    events: &EventLog,
    name: &str,
    (before, after): (HealthStatus, HealthStatus),
    detail: &str,
) {
    if !(before == HealthStatus::Unknown && after == HealthStatus::Unhealthy) {
        events.record(
            "health_changed",
            Some(name),
            format!("{} → {}: {detail}", before.as_str(), after.as_str()),
        );
    }
    if after == HealthStatus::Healthy && name == svc::TARGET_APP {
        remember_good_config(state, events);
    }
}

/// The target is healthy with the current `.env`: keep it as last-known-good.
pub fn remember_good_config(state: &StateDir, events: &EventLog) {
    let Ok(current) = std::fs::read(state.env_file()) else {
        return;
    };
    if std::fs::read(state.env_last_known_good()).ok().as_deref() == Some(&current[..]) {
        return;
    }
    match write_atomic(&state.env_last_known_good(), &current, 0o600) {
        Ok(()) => events.record(
            "config_last_known_good",
            Some(svc::TARGET_APP),
            "target healthy with the current .env; saved as last-known-good",
        ),
        Err(error) => tracing::warn!(message = "Cannot save last-known-good config.", %error),
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.to_string()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
