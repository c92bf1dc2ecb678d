//! Anomaly rules: pure functions from the reports of one incident snapshot to a list of
//! [`Anomaly`]s, each with the figure observed, the threshold it crossed and concrete
//! evidence (log lines, pids and queries, figures).
//!
//! Not responsible for gathering the reports ([`crate::snapshot`]) or for deciding what
//! to do about an anomaly (the agent and `aiops-remediation`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::ConfigReport;
use crate::db::DbDiagnostics;
use crate::disk::DiskUsageReport;
use crate::health::{self, HealthReport, ProbeStatus};
use crate::metrics::MetricsReport;
use crate::snapshot::LogSignal;
use crate::status::SandboxStatus;
use crate::util::{pretty_bytes, truncate_chars};

const MAX_EVIDENCE: usize = 5;
const EVIDENCE_CHARS: usize = 300;
const MAX_ANOMALIES: usize = 30;

pub(crate) const ERROR_RATE_PERCENT: f64 = 5.0;
pub(crate) const MIN_REQUESTS_FOR_RATE: u64 = 10;
pub(crate) const P95_MS: f64 = 1000.0;
pub(crate) const POOL_BUSY_PERCENT: f64 = 90.0;
/// An OLTP transaction idle for this long holds its locks and connection for nothing.
pub(crate) const IDLE_IN_TX_S: f64 = 5.0;
pub(crate) const CPU_PERCENT: f64 = 80.0;
pub(crate) const RSS_GROWTH_BYTES: i64 = 100 * 1024 * 1024;
pub(crate) const RECENT_RESTART_S: i64 = 15 * 60;
/// A crash older than this (the service has run since) is context (info).
pub(crate) const RECENT_CRASH_S: i64 = 120;
/// A log error code whose newest line is older than this is history (info), not an
/// ongoing incident.
pub(crate) const LOG_CODE_STOPPED_S: u64 = 20;
/// A flood whose newest line is older than this has stopped.
pub(crate) const FLOOD_STOPPED_S: u64 = 5;
/// Lines of one code (outside the incident list) in the 2-min log window that make a flood.
pub(crate) const ERROR_FLOOD_LINES: u64 = 300;
/// Application names that belong to the sandbox itself.
const OWN_APPLICATIONS: [&str; 2] = ["target-app", "target-app-worker"];
/// Error codes that point at a fault when they appear in recent logs.
pub(crate) const INCIDENT_CODES: [&str; 13] = [
    "DB_POOL_TIMEOUT",
    "DB_AUTH_FAILED",
    "DB_UNAVAILABLE",
    "DB_SCHEMA_MISMATCH",
    "DB_TIMEOUT",
    "DB_ERROR",
    "UPSTREAM_UNAVAILABLE",
    "CACHE_CORRUPT",
    "AUTH_INVALID_TOKEN",
    "INJECTED_FAILURE",
    "CONFIG_INVALID",
    "CACHE_IO",
    "RATE_LIMITED",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// Something that looks wrong, with the evidence for it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Anomaly {
    /// What was measured, e.g. `service_not_running`, `error_rate`, `blocking_locks`.
    pub signal: String,
    /// The value seen, e.g. `exited`, `12.5 %`, `3 sessions`.
    pub observed: String,
    /// The rule's threshold, e.g. `> 5 %`.
    pub threshold: String,
    pub severity: Severity,
    /// The service or part concerned: `target-app`, `postgres`, `worker`, `disk`, `config`...
    pub component: String,
    /// Concrete items: log lines, pids and queries, figures (at most 5, each ≤ 300 chars).
    pub evidence: Vec<String>,
}

impl Anomaly {
    fn new(
        signal: &str,
        observed: impl Into<String>,
        threshold: impl Into<String>,
        severity: Severity,
        component: &str,
        evidence: Vec<String>,
    ) -> Self {
        Self {
            signal: signal.to_string(),
            observed: truncate_chars(&observed.into(), 200),
            threshold: truncate_chars(&threshold.into(), 200),
            severity,
            component: component.to_string(),
            evidence: evidence
                .into_iter()
                .filter(|e| !e.is_empty())
                .take(MAX_EVIDENCE)
                .map(|e| truncate_chars(&e, EVIDENCE_CHARS))
                .collect(),
        }
    }

    /// One line for a summary.
    pub fn line(&self) -> String {
        let sev = match self.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        };
        format!(
            "{sev} {} {}: {} (threshold {}){}",
            self.component,
            self.signal,
            self.observed,
            self.threshold,
            self.evidence
                .first()
                .map(|e| format!(" — {}", truncate_chars(e, 160)))
                .unwrap_or_default()
        )
    }
}

/// What the rules look at; any part may be missing (it failed).
#[derive(Default)]
pub(crate) struct Inputs<'a> {
    pub status: Option<&'a SandboxStatus>,
    pub health: Option<&'a HealthReport>,
    pub metrics: Option<&'a MetricsReport>,
    pub db: Option<&'a DbDiagnostics>,
    pub disk: Option<&'a DiskUsageReport>,
    pub config: Option<&'a ConfigReport>,
    pub log_signals: &'a [LogSignal],
    /// A database error from db_diagnostics (unreachable).
    pub db_error: Option<&'a str>,
}

pub(crate) fn detect(i: &Inputs<'_>, now: DateTime<Utc>) -> Vec<Anomaly> {
    let mut out = Vec::new();
    services(i, now, &mut out);
    probes(i, &mut out);
    traffic(i, &mut out);
    database(i, &mut out);
    logs(i, &mut out);
    resources(i, &mut out);
    if let Some(c) = i.config {
        config(c, &mut out);
    }
    out.sort_by_key(|a| a.severity);
    out.truncate(MAX_ANOMALIES);
    out
}

fn services(i: &Inputs<'_>, now: DateTime<Utc>, out: &mut Vec<Anomaly>) {
    let Some(st) = i.status else { return };
    for s in &st.services {
        let exit = s
            .last_exit
            .as_ref()
            .map(|e| format!("last exit: {} at {}", e.description, e.at))
            .unwrap_or_default();
        let health = if s.health_detail.is_empty() {
            String::new()
        } else {
            format!("health: {} ({})", s.health, s.health_detail)
        };
        if s.state != "running" {
            let sev = if s.state == "starting" {
                Severity::Warning
            } else {
                Severity::Critical
            };
            out.push(Anomaly::new(
                "service_not_running",
                s.state.clone(),
                "state running",
                sev,
                &s.name,
                vec![
                    format!("{} is {} (restarts {})", s.name, s.state, s.restarts),
                    exit.clone(),
                    health.clone(),
                ],
            ));
        } else if s.health == "unhealthy" {
            out.push(Anomaly::new(
                "service_unhealthy",
                "unhealthy",
                "supervisor health probe passing",
                Severity::Warning,
                &s.name,
                vec![health.clone()],
            ));
        }
        if s.oom_killed {
            out.push(Anomaly::new(
                "oom_killed",
                "killed by the OOM killer",
                "no OOM kill",
                Severity::Critical,
                &s.name,
                vec![exit.clone()],
            ));
        }
        // Only a crash counts: a clean exit (code 0) is a stop or restart someone asked
        // for, not a symptom.
        let crash_age_s = s
            .last_exit
            .as_ref()
            .filter(|e| e.code != Some(0))
            .and_then(|e| DateTime::parse_from_rfc3339(&e.at).ok())
            .map(|t| (now - t.with_timezone(&Utc)).num_seconds())
            .filter(|age| *age < RECENT_RESTART_S);
        if let (true, Some(age)) = (s.restarts > 0, crash_age_s) {
            out.push(Anomaly::new(
                "restarts",
                format!(
                    "{} restarts, the last after a crash {age} s ago",
                    s.restarts
                ),
                "no crash in the last 15 min",
                if age > RECENT_CRASH_S {
                    Severity::Info
                } else if s.restarts >= 3 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                &s.name,
                vec![exit],
            ));
        }
    }
}

fn probes(i: &Inputs<'_>, out: &mut Vec<Anomaly>) {
    let Some(h) = i.health else { return };
    for p in &h.probes {
        if p.status != ProbeStatus::Failed {
            continue;
        }
        let (signal, component, sev) = match p.name.as_str() {
            health::LIVENESS => ("target_not_alive", "target-app", Severity::Critical),
            health::READINESS => ("readiness_failing", "target-app", Severity::Critical),
            health::HEALTH_SUMMARY => ("health_summary_failing", "target-app", Severity::Warning),
            health::DATABASE => ("database_unreachable", "postgres", Severity::Critical),
            other => ("upstream_unhealthy", other, Severity::Warning),
        };
        // The summary endpoint repeats readiness; report it only on its own.
        if p.name == health::HEALTH_SUMMARY
            && h.probe(health::READINESS)
                .is_some_and(|r| r.status == ProbeStatus::Failed)
        {
            continue;
        }
        let mut evidence = vec![format!("{} {}: {}", p.name, p.target, p.detail)];
        if let Some(body) = &p.body {
            if let Some(checks) = body.get("checks") {
                evidence.push(format!("readyz checks: {checks}"));
            }
            for k in ["db", "upstream"] {
                if let Some(v) = body.get(k) {
                    evidence.push(format!("{k}: {v}"));
                }
            }
        }
        out.push(Anomaly::new(
            signal,
            "failed",
            "probe ok within 2 s",
            sev,
            component,
            evidence,
        ));
    }
    if let Some(err) = i.db_error
        && !out.iter().any(|a| a.signal == "database_unreachable")
    {
        out.push(Anomaly::new(
            "database_unreachable",
            "failed",
            "admin connection within 3 s",
            Severity::Critical,
            "postgres",
            vec![err.to_string()],
        ));
    }
}

fn traffic(i: &Inputs<'_>, out: &mut Vec<Anomaly>) {
    let Some(m) = i.metrics else { return };
    let codes: Vec<String> = m
        .app_errors_by_code
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    let statuses: Vec<String> = m
        .requests_by_status
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    if let Some(rate) = m.error_rate_percent
        && rate > ERROR_RATE_PERCENT
        && m.requests >= MIN_REQUESTS_FOR_RATE
    {
        out.push(Anomaly::new(
            "error_rate",
            format!(
                "{rate:.1} % 5xx ({} of {} requests in {:.0} s)",
                m.errors_5xx, m.requests, m.covered_s
            ),
            format!("> {ERROR_RATE_PERCENT} %"),
            if rate > 25.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            "target-app",
            vec![
                format!("by status: {}", statuses.join(", ")),
                format!("app errors by code: {}", codes.join(", ")),
            ],
        ));
    }
    if let Some(l) = &m.latency
        && l.p95_ms > P95_MS
    {
        out.push(Anomaly::new(
            "latency_p95",
            format!("{:.0} ms", l.p95_ms),
            format!("> {P95_MS:.0} ms"),
            Severity::Warning,
            "target-app",
            vec![format!(
                "p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms over {:.0} s",
                l.p50_ms, l.p95_ms, l.p99_ms, m.covered_s
            )],
        ));
    }
    if let Some(p) = &m.pool {
        let busy = p.max > 0 && p.utilization_percent >= POOL_BUSY_PERCENT;
        if busy || m.pool_acquire_timeouts > 0 {
            out.push(Anomaly::new(
                "db_pool_exhausted",
                format!(
                    "{}/{} in use, {} acquire timeouts, {} waits",
                    p.in_use, p.max, m.pool_acquire_timeouts, m.pool_acquire_waits
                ),
                format!("in use < {POOL_BUSY_PERCENT:.0} % of max and 0 acquire timeouts"),
                if m.pool_acquire_timeouts > 0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                "target-app",
                vec![format!(
                    "pool size {} max {} in use {} idle {} over the last {:.0} s",
                    p.size, p.max, p.in_use, p.idle, m.covered_s
                )],
            ));
        }
    }
}

fn database(i: &Inputs<'_>, out: &mut Vec<Anomaly>) {
    let Some(d) = i.db else { return };
    let foreign: Vec<String> = d
        .by_application
        .iter()
        .filter(|c| !OWN_APPLICATIONS.contains(&c.key.as_str()) && !c.key.starts_with("aiops"))
        .map(|c| format!("{} holds {} connection(s)", c.key, c.count))
        .collect();
    if !foreign.is_empty() {
        let n: u64 = d
            .by_application
            .iter()
            .filter(|c| !OWN_APPLICATIONS.contains(&c.key.as_str()) && !c.key.starts_with("aiops"))
            .map(|c| c.count)
            .sum();
        out.push(Anomaly::new(
            "foreign_db_sessions",
            format!("{n} sessions from other applications"),
            "only target-app, target-app-worker, aiops*",
            if d.utilization_percent >= 80.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            "postgres",
            foreign,
        ));
    }
    for l in &d.role_limits {
        if l.limit > 0 && l.sessions >= l.limit {
            out.push(Anomaly::new(
                "db_role_connection_limit",
                format!(
                    "role {} holds {} of its {} connections",
                    l.role, l.sessions, l.limit
                ),
                "sessions < the role's CONNECTION LIMIT",
                Severity::Critical,
                "postgres",
                std::iter::once(format!(
                    "new connections as {} fail: too many connections for role",
                    l.role
                ))
                .chain(
                    l.by_application
                        .iter()
                        .map(|c| format!("{} holds {}", c.key, c.count)),
                )
                .collect(),
            ));
        }
    }
    if d.utilization_percent >= 90.0 {
        out.push(Anomaly::new(
            "db_connections_near_max",
            format!(
                "{} of {} ({:.0} %)",
                d.total_connections, d.max_connections, d.utilization_percent
            ),
            "< 90 % of max_connections",
            Severity::Critical,
            "postgres",
            d.by_application
                .iter()
                .map(|c| format!("{}: {}", c.key, c.count))
                .collect(),
        ));
    }
    let idle: Vec<_> = d
        .idle_in_transaction
        .iter()
        .filter(|s| s.duration_s > IDLE_IN_TX_S)
        .collect();
    if !idle.is_empty() {
        out.push(Anomaly::new(
            "idle_in_transaction",
            format!(
                "{} session(s), oldest {:.0} s",
                idle.len(),
                idle[0].duration_s
            ),
            format!("none idle in transaction > {IDLE_IN_TX_S:.0} s"),
            Severity::Warning,
            "postgres",
            idle.iter()
                .map(|s| {
                    format!(
                        "pid {} ({}) {:.0} s: {}",
                        s.pid, s.application, s.duration_s, s.query
                    )
                })
                .collect(),
        ));
    }
    if !d.blocking_chains.is_empty() {
        let max_wait = d
            .blocking_chains
            .iter()
            .map(|c| c.wait_s)
            .fold(0.0, f64::max);
        out.push(Anomaly::new(
            "blocking_locks",
            format!(
                "{} blocked session(s), longest wait {max_wait:.0} s",
                d.blocking_chains.len()
            ),
            "no session blocked by another",
            if max_wait > 5.0 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            "postgres",
            d.blocking_chains
                .iter()
                .map(|c| {
                    let blockers: Vec<String> = c
                        .blockers
                        .iter()
                        .map(|b| {
                            format!(
                                "pid {} ({}, {}): {}",
                                b.pid,
                                b.application,
                                b.state,
                                truncate_chars(&b.query, 100)
                            )
                        })
                        .collect();
                    format!(
                        "pid {} ({}) waits {:.0} s for {} on {}: {} — blocked by {}",
                        c.blocked_pid,
                        c.blocked_application,
                        c.wait_s,
                        c.lock_mode.as_deref().unwrap_or("a lock"),
                        c.relation.as_deref().unwrap_or("?"),
                        truncate_chars(&c.query, 80),
                        blockers.join("; ")
                    )
                })
                .collect(),
        ));
    }
    if !d.long_running.is_empty() {
        out.push(Anomaly::new(
            "long_running_queries",
            format!(
                "{} query(ies), longest {:.0} s",
                d.long_running.len(),
                d.long_running[0].duration_s
            ),
            format!("none running > {} s", d.long_running_threshold_s),
            Severity::Warning,
            "postgres",
            d.long_running
                .iter()
                .map(|s| {
                    format!(
                        "pid {} ({}) {:.0} s: {}",
                        s.pid, s.application, s.duration_s, s.query
                    )
                })
                .collect(),
        ));
    }
    let m = &d.migrations;
    if m.target_says_current == Some(false) || !m.failed_versions.is_empty() || !m.table_present {
        out.push(Anomaly::new(
            "migrations_not_current",
            format!(
                "latest {:?}, failed {:?}, pending per target {:?}",
                m.latest_version, m.failed_versions, m.target_pending
            ),
            "all embedded migrations applied successfully",
            Severity::Critical,
            "postgres",
            vec![format!(
                "applied versions {:?}; table present: {}",
                m.applied_versions, m.table_present
            )],
        ));
    }
}

fn component_for_code(code: &str) -> &'static str {
    match code {
        "DB_UNAVAILABLE" | "DB_AUTH_FAILED" | "DB_SCHEMA_MISMATCH" | "DB_TIMEOUT" | "DB_ERROR" => {
            "postgres"
        }
        "UPSTREAM_UNAVAILABLE" => "upstream",
        "CONFIG_INVALID" => "config",
        "CACHE_IO" => "disk",
        _ => "target-app",
    }
}

fn logs(i: &Inputs<'_>, out: &mut Vec<Anomaly>) {
    for s in i.log_signals {
        if !INCIDENT_CODES.contains(&s.code.as_str()) {
            error_flood(s, out);
            continue;
        }
        let stopped = s.last_seen_s_ago.filter(|&a| a > LOG_CODE_STOPPED_S);
        let sev = match s.code.as_str() {
            _ if stopped.is_some() => Severity::Info,
            "AUTH_INVALID_TOKEN" if s.count < 50 => Severity::Info,
            _ if s.count >= 10 => Severity::Critical,
            _ => Severity::Warning,
        };
        out.push(Anomaly::new(
            "log_error_code",
            match stopped {
                Some(ago) => format!(
                    "{} × {} in the last 2 min, none in the last {ago} s (stopped)",
                    s.count, s.code
                ),
                None => format!("{} × {} in the last 2 min", s.count, s.code),
            },
            "0",
            sev,
            component_for_code(&s.code),
            s.samples.clone(),
        ));
    }
}

/// A code outside the incident list flooding the log at ERROR level right now: noise that
/// costs disk and CPU (and hides real errors), whatever else is going on. Client errors
/// (a 404 is logged at warn) are traffic, not a flood.
fn error_flood(s: &LogSignal, out: &mut Vec<Anomaly>) {
    // A flood is continuous: a few seconds without a line means it stopped.
    let ongoing = s.last_seen_s_ago.is_some_and(|a| a <= FLOOD_STOPPED_S);
    let error_level = matches!(s.level.as_deref(), Some("error" | "fatal"));
    if s.count < ERROR_FLOOD_LINES || !ongoing || !error_level {
        return;
    }
    let service = s
        .samples
        .first()
        .and_then(|l| l.split_once(": "))
        .map_or("target-app", |(svc, _)| svc);
    out.push(Anomaly::new(
        "error_log_flood",
        format!("{} × {} in the last 2 min", s.count, s.code),
        format!("< {ERROR_FLOOD_LINES} lines of one code"),
        Severity::Warning,
        service,
        s.samples.clone(),
    ));
}

fn resources(i: &Inputs<'_>, out: &mut Vec<Anomaly>) {
    if let Some(m) = i.metrics {
        for r in &m.services {
            // What it does now counts first: a spin shows in seconds, and a past spike
            // does not linger for the whole window.
            let (cpu, over) = match r.cpu_percent_recent {
                Some(now) => (now, "the last few seconds".to_string()),
                None => (r.cpu_percent, format!("{:.0} s", m.covered_s)),
            };
            if cpu > CPU_PERCENT {
                out.push(Anomaly::new(
                    "cpu",
                    format!("{cpu:.0} % of a core"),
                    format!("≤ {CPU_PERCENT:.0} %"),
                    Severity::Warning,
                    &r.name,
                    vec![format!(
                        "average over {over} ({:.0} % over the {:.0} s window, {} samples)",
                        r.cpu_percent, m.covered_s, r.samples
                    )],
                ));
            }
            let grew_half = r.rss_bytes > 0
                && r.rss_growth_bytes > 20 * 1024 * 1024
                && r.rss_growth_bytes as f64
                    > 0.5 * (r.rss_bytes as i64 - r.rss_growth_bytes).max(1) as f64;
            if r.rss_growth_bytes >= RSS_GROWTH_BYTES || grew_half {
                out.push(Anomaly::new(
                    "rss_growth",
                    format!(
                        "+{} to {}",
                        pretty_bytes(r.rss_growth_bytes.max(0) as u64),
                        pretty_bytes(r.rss_bytes)
                    ),
                    "< +100 MiB (or +50 %) in the window",
                    Severity::Warning,
                    &r.name,
                    vec![format!("over {:.0} s ({} samples)", m.covered_s, r.samples)],
                ));
            }
        }
    }
    if let Some(d) = i.disk {
        for f in d.filesystems.iter().filter(|f| f.low_space) {
            out.push(Anomaly::new(
                "disk_low_free",
                format!(
                    "{:.1} % free ({})",
                    f.free_percent,
                    pretty_bytes(f.available_bytes)
                ),
                "≥ 10 % free",
                Severity::Critical,
                "disk",
                std::iter::once(format!("file system holding {}", f.holds.join(", ")))
                    .chain(
                        d.dirs.iter().map(|x| {
                            format!("{}: {} ({})", x.name, x.pretty, x.largest.join(", "))
                        }),
                    )
                    .collect(),
            ));
        }
    }
}

fn config(c: &ConfigReport, out: &mut Vec<Anomaly>) {
    if !c.valid {
        out.push(Anomaly::new(
            "config_invalid",
            format!(
                "{} invalid key(s)",
                c.invalid_entries().count() + c.file_problems.len()
            ),
            "every key valid",
            Severity::Critical,
            "config",
            c.invalid_entries()
                .map(|e| {
                    format!(
                        "{}={}: {}",
                        e.key,
                        e.value.as_deref().unwrap_or("(missing)"),
                        e.problem.as_deref().unwrap_or("")
                    )
                })
                .chain(c.file_problems.iter().cloned())
                .collect(),
        ));
    }
    if c.diff.baseline_present && c.changed() {
        out.push(Anomaly::new(
            "config_changed",
            format!(
                "{} added, {} removed, {} changed",
                c.diff.added.len(),
                c.diff.removed.len(),
                c.diff.changed.len()
            ),
            "same as last-known-good",
            if c.valid {
                Severity::Info
            } else {
                Severity::Warning
            },
            "config",
            c.diff
                .changed
                .iter()
                .cloned()
                .chain(c.diff.added.iter().map(|a| format!("added {a}")))
                .chain(c.diff.removed.iter().map(|r| format!("removed {r}")))
                .collect(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{
        BlockingChain, BlockingSession, ConnectionCount, LongRunningSession, MigrationStatus,
    };
    use crate::health::{HealthProbe, OverallHealth};
    use crate::status::{ExitView, ServiceView};

    fn svc(name: &str, state: &str, restarts: u32, exit_at: Option<DateTime<Utc>>) -> ServiceView {
        ServiceView {
            name: name.into(),
            kind: "x".into(),
            state: state.into(),
            pid: None,
            uptime_s: None,
            restarts,
            last_exit: exit_at.map(|at| ExitView {
                code: Some(78),
                signal: None,
                at: at.to_rfc3339(),
                description: "exit code 78".into(),
            }),
            oom_killed: false,
            health: "healthy".into(),
            health_detail: String::new(),
            port: None,
        }
    }

    fn metrics() -> MetricsReport {
        crate::metrics::compute(60, &[], &[])
    }

    #[test]
    fn healthy_inputs_yield_nothing() {
        let st = SandboxStatus {
            runtime: "process".into(),
            daemon_reachable: true,
            services: vec![svc("target-app", "running", 0, None)],
            all_running: true,
        };
        let m = metrics();
        let a = detect(
            &Inputs {
                status: Some(&st),
                metrics: Some(&m),
                ..Default::default()
            },
            Utc::now(),
        );
        assert!(a.is_empty(), "{a:#?}");
    }

    #[test]
    fn stopped_service_and_restarts() {
        let now = Utc::now();
        let st = SandboxStatus {
            runtime: "process".into(),
            daemon_reachable: true,
            services: vec![
                svc("target-app", "exited", 1, Some(now)),
                svc(
                    "worker",
                    "running",
                    4,
                    Some(now - chrono::Duration::seconds(30)),
                ),
                svc(
                    "postgres",
                    "running",
                    2,
                    Some(now - chrono::Duration::hours(2)),
                ),
                {
                    // Restarted on request: a clean exit is not a symptom.
                    let mut clean = svc("upstream-primary", "running", 3, Some(now));
                    if let Some(e) = clean.last_exit.as_mut() {
                        e.code = Some(0);
                    }
                    clean
                },
            ],
            all_running: false,
        };
        let a = detect(
            &Inputs {
                status: Some(&st),
                ..Default::default()
            },
            now,
        );
        assert_eq!(a[0].signal, "service_not_running");
        assert_eq!(a[0].component, "target-app");
        assert!(a[0].evidence.iter().any(|e| e.contains("exit code 78")));
        assert!(a.iter().any(|x| x.signal == "restarts"
            && x.component == "worker"
            && x.severity == Severity::Critical));
        assert!(
            !a.iter().any(|x| x.component == "postgres"),
            "old restarts are not anomalies"
        );
        assert!(
            !a.iter().any(|x| x.component == "upstream-primary"),
            "requested restarts are not anomalies"
        );
    }

    #[test]
    fn traffic_rules() {
        let mut m = metrics();
        m.requests = 100;
        m.errors_5xx = 30;
        m.error_rate_percent = Some(30.0);
        m.latency = Some(crate::metrics::LatencyPercentiles {
            p50_ms: 5.0,
            p95_ms: 1500.0,
            p99_ms: 2000.0,
        });
        m.pool = Some(crate::metrics::PoolFigures {
            size: 10,
            max: 10,
            in_use: 10,
            idle: 0,
            utilization_percent: 100.0,
        });
        m.pool_acquire_timeouts = 3;
        m.services.push(crate::metrics::ServiceResources {
            name: "worker".into(),
            cpu_percent: 95.0,
            cpu_percent_recent: None,
            rss_bytes: 300 << 20,
            rss_growth_bytes: 200 << 20,
            samples: 10,
        });
        let a = detect(
            &Inputs {
                metrics: Some(&m),
                ..Default::default()
            },
            Utc::now(),
        );
        // What the service does now decides: a spike the window still averages in does not.
        let mut calm = m.clone();
        calm.services[0].cpu_percent_recent = Some(3.0);
        let b = detect(
            &Inputs {
                metrics: Some(&calm),
                ..Default::default()
            },
            Utc::now(),
        );
        assert!(!b.iter().any(|x| x.signal == "cpu"), "{b:#?}");
        let sig: Vec<&str> = a.iter().map(|x| x.signal.as_str()).collect();
        for s in [
            "error_rate",
            "latency_p95",
            "db_pool_exhausted",
            "cpu",
            "rss_growth",
        ] {
            assert!(sig.contains(&s), "{s} missing from {sig:?}");
        }
        // Few requests: no error-rate anomaly.
        m.requests = 3;
        let a = detect(
            &Inputs {
                metrics: Some(&m),
                ..Default::default()
            },
            Utc::now(),
        );
        assert!(!a.iter().any(|x| x.signal == "error_rate"));
    }

    #[test]
    fn database_rules() {
        let d = DbDiagnostics {
            max_connections: 100,
            role_limits: vec![
                crate::db::RoleLimit {
                    role: "shop_app".into(),
                    limit: 85,
                    sessions: 85,
                    by_application: vec![ConnectionCount {
                        key: "psql".into(),
                        count: 85,
                    }],
                },
                crate::db::RoleLimit {
                    role: "other".into(),
                    limit: 10,
                    sessions: 2,
                    by_application: vec![],
                },
            ],
            total_connections: 95,
            utilization_percent: 95.0,
            by_state: vec![],
            by_application: vec![
                ConnectionCount {
                    key: "target-app".into(),
                    count: 10,
                },
                ConnectionCount {
                    key: "psql".into(),
                    count: 85,
                },
                ConnectionCount {
                    key: "aiops-observe".into(),
                    count: 1,
                },
            ],
            blocking_chains: vec![BlockingChain {
                blocked_pid: 2,
                blocked_application: "target-app".into(),
                blocking_pids: vec![1],
                wait_s: 12.0,
                query: "SELECT * FROM products".into(),
                lock_mode: Some("AccessShareLock".into()),
                relation: Some("products".into()),
                blockers: vec![BlockingSession {
                    pid: 1,
                    application: "psql".into(),
                    state: "idle in transaction".into(),
                    xact_age_s: Some(40.0),
                    query: "LOCK TABLE products".into(),
                }],
            }],
            long_running: vec![],
            idle_in_transaction: vec![LongRunningSession {
                pid: 1,
                application: "psql".into(),
                state: "idle in transaction".into(),
                duration_s: 40.0,
                query: "LOCK TABLE products".into(),
            }],
            truncated: false,
            long_running_threshold_s: 30,
            database_size_bytes: 1,
            database_size_pretty: "1 B".into(),
            migrations: MigrationStatus {
                table_present: true,
                applied_versions: vec![1],
                failed_versions: vec![],
                latest_version: Some(1),
                target_says_current: Some(false),
                target_pending: vec![2],
                target_error: None,
            },
        };
        let a = detect(
            &Inputs {
                db: Some(&d),
                ..Default::default()
            },
            Utc::now(),
        );
        let get = |s: &str| {
            a.iter()
                .find(|x| x.signal == s)
                .unwrap_or_else(|| panic!("{s} missing: {a:#?}"))
        };
        assert!(get("foreign_db_sessions").evidence[0].contains("psql holds 85"));
        assert!(
            !get("foreign_db_sessions")
                .evidence
                .iter()
                .any(|e| e.contains("aiops-observe"))
        );
        let limit: Vec<_> = a
            .iter()
            .filter(|x| x.signal == "db_role_connection_limit")
            .collect();
        assert_eq!(limit.len(), 1, "only the role at its limit");
        assert!(limit[0].observed.contains("shop_app holds 85 of its 85"));
        assert!(get("blocking_locks").evidence[0].contains("pid 2"));
        assert!(get("blocking_locks").evidence[0].contains("LOCK TABLE products"));
        assert_eq!(get("idle_in_transaction").severity, Severity::Warning);
        get("db_connections_near_max");
        get("migrations_not_current");
    }

    #[test]
    fn probe_log_disk_config_rules() {
        let h = HealthReport {
            overall: OverallHealth::Unhealthy,
            probes: vec![HealthProbe {
                name: health::READINESS.into(),
                target: "GET /readyz".into(),
                status: ProbeStatus::Failed,
                latency_ms: 3,
                detail: "HTTP 503".into(),
                body: Some(
                    serde_json::json!({"ready": false, "checks": {"db": "down: DB_AUTH_FAILED"}}),
                ),
            }],
        };
        let logs = vec![
            LogSignal {
                code: "DB_AUTH_FAILED".into(),
                count: 12,
                samples: vec!["line".into()],
                last_seen_s_ago: Some(1),
                level: Some("error".into()),
            },
            LogSignal {
                code: "DB_POOL_TIMEOUT".into(),
                count: 40,
                samples: vec!["old line".into()],
                last_seen_s_ago: Some(90),
                level: Some("warn".into()),
            },
            LogSignal {
                code: "NOT_FOUND".into(),
                count: 2000,
                samples: vec!["target-app: 404".into()],
                last_seen_s_ago: Some(0),
                level: Some("warn".into()),
            },
            LogSignal {
                code: "INTERNAL_PANIC_REPORTED".into(),
                count: 4000,
                samples: vec!["target-app: {\"level\":\"ERROR\"}".into()],
                last_seen_s_ago: Some(0),
                level: Some("error".into()),
            },
        ];
        let disk = DiskUsageReport {
            state_dir: "/x".into(),
            dirs: vec![],
            filesystems: vec![crate::disk::usage("logs", 100, 5, 5)],
            low_space: true,
        };
        let a = detect(
            &Inputs {
                health: Some(&h),
                log_signals: &logs,
                disk: Some(&disk),
                ..Default::default()
            },
            Utc::now(),
        );
        let r = a.iter().find(|x| x.signal == "readiness_failing").unwrap();
        assert!(r.evidence.iter().any(|e| e.contains("DB_AUTH_FAILED")));
        let l = a.iter().find(|x| x.signal == "log_error_code").unwrap();
        assert_eq!(l.component, "postgres");
        assert_eq!(l.severity, Severity::Critical);
        assert!(
            !a.iter().any(|x| x.observed.contains("NOT_FOUND")),
            "{a:#?}"
        );
        assert!(a.iter().any(|x| x.signal == "disk_low_free"));
        // A code that stopped appearing is history: info, and said so.
        let old = a
            .iter()
            .find(|x| x.observed.contains("DB_POOL_TIMEOUT"))
            .unwrap();
        assert_eq!(old.severity, Severity::Info);
        assert!(old.observed.contains("stopped"), "{}", old.observed);
        let flood = a.iter().find(|x| x.signal == "error_log_flood").unwrap();
        assert_eq!(flood.component, "target-app");
        assert!(flood.observed.contains("INTERNAL_PANIC_REPORTED"));
    }
}
