//! `incident_snapshot`: every observation at once (concurrently, small windows), trimmed
//! to stay well under 20 KB of JSON, plus the anomalies the rules in [`crate::anomaly`]
//! find. A part that fails is an error string inside the snapshot, never a failed call.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use schemars::JsonSchema;
use serde::Serialize;

use crate::anomaly::{self, Anomaly, Inputs, Severity};
use crate::logs::{self, Filter, LogEntry};
use crate::util::truncate_chars;
use crate::{
    ConfigReport, DbDiagnostics, DbDiagnosticsQuery, DiskUsageReport, EventPage, EventQuery,
    HealthReport, MetricsQuery, MetricsReport, ObserveError, Observer, ProcessStatsReport,
    SandboxStatus, Summary,
};

const SNAPSHOT_LIST_CAP: usize = 5;
const LOG_WINDOW_S: i64 = 120;
/// The metrics window of a snapshot: short, so a fix shows at once and a past incident
/// does not look current.
const SNAPSHOT_METRICS_WINDOW_S: u64 = 20;
const SAMPLE_CHARS: usize = 300;

/// A part of the snapshot that could not be gathered.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PartError {
    /// `status`, `health`, `metrics`, `db`, `processes`, `disk`, `config`, `events` or `logs`.
    pub part: String,
    pub error: String,
}

/// An error code seen in the last 2 minutes of logs (all services).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogSignal {
    pub code: String,
    pub count: u64,
    /// Up to 3 of the newest lines with the code: `service: raw line` (≤ 300 chars).
    pub samples: Vec<String>,
    /// Seconds between the newest line with the code and the snapshot: a code that
    /// stopped appearing is history, not an ongoing incident.
    pub last_seen_s_ago: Option<u64>,
    /// Level of the newest line with the code (`error`, `warn`, ...).
    pub level: Option<String>,
}

/// Everything at once, for the first look at an incident.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct IncidentSnapshot {
    /// RFC 3339.
    pub taken_at: String,
    /// How long gathering took, in milliseconds.
    pub took_ms: u64,
    /// What looks wrong, most severe first.
    pub anomalies: Vec<Anomaly>,
    pub status: Option<SandboxStatus>,
    pub health: Option<HealthReport>,
    /// Over the last 20 s: what is happening now, not a minute ago.
    pub metrics: Option<MetricsReport>,
    /// Lists cut to 5 items.
    pub database: Option<DbDiagnostics>,
    pub processes: Option<ProcessStatsReport>,
    pub disk: Option<DiskUsageReport>,
    /// Only invalid or unknown keys are listed; the diff is complete.
    pub config: Option<ConfigReport>,
    /// The 10 newest events.
    pub recent_events: Option<EventPage>,
    /// Error codes in the last 2 minutes of all logs.
    pub log_signals: Vec<LogSignal>,
    /// Parts that failed.
    pub errors: Vec<PartError>,
}

impl Summary for IncidentSnapshot {
    fn summary(&self) -> String {
        let crit = self
            .anomalies
            .iter()
            .filter(|a| a.severity == Severity::Critical)
            .count();
        let mut s = if self.anomalies.is_empty() {
            "No anomalies found.".to_string()
        } else {
            format!("{} anomalies ({crit} critical):", self.anomalies.len())
        };
        for a in &self.anomalies {
            s.push_str("\n- ");
            s.push_str(&a.line());
        }
        if let Some(h) = &self.health {
            s.push_str(&format!("\n{}", h.summary()));
        }
        for e in &self.errors {
            s.push_str(&format!(
                "\n(part {} unavailable: {})",
                e.part,
                truncate_chars(&e.error, 200)
            ));
        }
        s.push_str(&format!("\nSnapshot took {} ms.", self.took_ms));
        s
    }
}

async fn log_signals(obs: &Observer) -> Result<Vec<LogSignal>, ObserveError> {
    let services: Vec<String> = logs::SERVICES.iter().map(|s| s.to_string()).collect();
    let files: Vec<_> = logs::log_files(obs, &services)
        .await
        .into_iter()
        .map(|(s, p)| (s, p, None))
        .collect();
    let now = Utc::now();
    let filter = Filter {
        since: Some(now - chrono::Duration::seconds(LOG_WINDOW_S)),
        hide_failpoints: obs.is_exam(),
        ..Default::default()
    };
    let scrub = obs.scrubber();
    let out = tokio::task::spawn_blocking(move || logs::scan(&files, &filter, 1, &scrub))
        .await
        .map_err(|e| ObserveError::Other(format!("log scan failed: {e}")))??;
    let mut signals: Vec<LogSignal> = out
        .counts_by_code
        .iter()
        .map(|(code, count)| LogSignal {
            level: out
                .samples_by_code
                .get(code)
                .and_then(|v: &Vec<LogEntry>| v.first()?.level.clone()),
            last_seen_s_ago: out.samples_by_code.get(code).and_then(|v: &Vec<LogEntry>| {
                v.iter()
                    .filter_map(|e| {
                        e.timestamp
                            .as_deref()?
                            .parse::<chrono::DateTime<Utc>>()
                            .ok()
                    })
                    .max()
                    .map(|t| u64::try_from((now - t).num_seconds()).unwrap_or(0))
            }),
            code: code.clone(),
            count: *count,
            samples: out
                .samples_by_code
                .get(code)
                .map(|v: &Vec<LogEntry>| {
                    v.iter()
                        .map(|e| format!("{}: {}", e.service, truncate_chars(&e.raw, SAMPLE_CHARS)))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    signals.sort_by_key(|b| std::cmp::Reverse(b.count));
    // Codes of the incident list first, then the rest, at most 10 in all.
    signals.sort_by_key(|s| !anomaly::INCIDENT_CODES.contains(&s.code.as_str()));
    signals.truncate(10);
    Ok(signals)
}

fn part<T>(name: &str, r: Result<T, ObserveError>, errors: &mut Vec<PartError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(PartError {
                part: name.to_string(),
                error: truncate_chars(&e.to_string(), 500),
            });
            None
        }
    }
}

pub(crate) async fn incident_snapshot(obs: &Observer) -> Result<IncidentSnapshot, ObserveError> {
    let started = Instant::now();
    let taken_at = Utc::now();
    let (status, health, metrics, db, processes, disk, config, events, signals) = tokio::join!(
        obs.sandbox_status(),
        obs.check_health(),
        obs.get_metrics(MetricsQuery {
            window_s: Some(SNAPSHOT_METRICS_WINDOW_S),
        }),
        obs.db_diagnostics(DbDiagnosticsQuery {
            // The idle-in-transaction rule looks at sessions from 5 s on.
            long_running_threshold_s: Some(anomaly::IDLE_IN_TX_S as u64),
        }),
        obs.process_stats(),
        obs.disk_usage(),
        obs.inspect_config(),
        obs.list_events(EventQuery {
            limit: Some(10),
            ..Default::default()
        }),
        log_signals(obs),
    );
    let mut errors = Vec::new();
    let db_error = match &db {
        Err(e @ ObserveError::DatabaseUnreachable(_)) => Some(e.to_string()),
        _ => None,
    };
    let status = part("status", status, &mut errors);
    let health = part("health", health, &mut errors);
    let metrics = part("metrics", metrics, &mut errors);
    let mut db = part("db", db, &mut errors);
    let processes = part("processes", processes, &mut errors);
    let disk = part("disk", disk, &mut errors);
    let mut config = part("config", config, &mut errors);
    let mut recent_events = part("events", events, &mut errors);
    let log_signals = part("logs", signals, &mut errors).unwrap_or_default();

    let anomalies = anomaly::detect(
        &Inputs {
            status: status.as_ref(),
            health: health.as_ref(),
            metrics: metrics.as_ref(),
            db: db.as_ref(),
            disk: disk.as_ref(),
            config: config.as_ref(),
            log_signals: &log_signals,
            db_error: db_error.as_deref(),
        },
        taken_at,
    );

    // Trim for size once the rules have seen everything.
    if let Some(d) = &mut db {
        for list in [&mut d.long_running, &mut d.idle_in_transaction] {
            if list.len() > SNAPSHOT_LIST_CAP {
                list.truncate(SNAPSHOT_LIST_CAP);
                d.truncated = true;
            }
        }
        if d.blocking_chains.len() > SNAPSHOT_LIST_CAP {
            d.blocking_chains.truncate(SNAPSHOT_LIST_CAP);
            d.truncated = true;
        }
        d.by_application.truncate(10);
        d.migrations.applied_versions.truncate(10);
    }
    if let Some(c) = &mut config {
        c.entries.retain(|e| !e.valid);
    }
    if let Some(e) = &mut recent_events {
        e.counts_by_kind = BTreeMap::new();
        for ev in &mut e.events {
            ev.detail = truncate_chars(&ev.detail, 200);
        }
    }
    Ok(IncidentSnapshot {
        taken_at: taken_at.to_rfc3339(),
        took_ms: started.elapsed().as_millis() as u64,
        anomalies,
        status,
        health,
        metrics,
        database: db,
        processes,
        disk,
        config,
        recent_events,
        log_signals,
        errors,
    })
}
