//! `/metrics`: the control plane's own figures in the Prometheus text format (0.0.4).
//!
//! Counted in this process: MCP tool calls by tool and outcome (every server the daemon
//! runs: `/mcp`, `/exam/mcp`, `/sse`), action durations (from the audit log's `finished`
//! lines, which every caller writes: MCP, REST, the CLI, a stdio server), notifications.
//! Read at each scrape from the state dir: active faults (the chaos ledger), diagnoses and
//! incident reports filed, the last drill's scores. Counters start at zero with the
//! daemon, as Prometheus expects of a restarted process.
//!
//! Guarded like the REST API (bearer token or the dashboard's cookie); no label or value
//! holds a secret: tool and action names, outcomes, fault catalogue names.
//!
//! Not responsible for: the target's own metrics (the target serves those; `get_metrics`
//! reads them).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::rest::RestState;

/// Upper bounds of the action-duration buckets, in seconds.
const BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default, Clone)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`] (not cumulative here).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The process's counters.
#[derive(Default)]
pub struct ControlMetrics {
    tool_calls: Mutex<BTreeMap<(String, &'static str), u64>>,
    actions: Mutex<BTreeMap<(String, String), Histogram>>,
    notifications: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// The one set of counters of this process.
pub static METRICS: LazyLock<ControlMetrics> = LazyLock::new(ControlMetrics::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ControlMetrics {
    /// One MCP tool call: `ok`, `error` (a result with `isError`), `invalid` (a protocol
    /// error: unknown tool, bad arguments) or `input_required`.
    pub fn tool_call(&self, tool: &str, outcome: &'static str) {
        *lock(&self.tool_calls)
            .entry((tool.to_string(), outcome))
            .or_default() += 1;
    }

    /// One finished action (an audit `finished` line).
    pub fn action(&self, action: &str, status: &str, seconds: f64) {
        lock(&self.actions)
            .entry((action.to_string(), status.to_string()))
            .or_default()
            .observe(seconds);
    }

    /// One notification: `sent`, `failed` (retries exhausted or refused), `dropped`
    /// (queue full).
    pub fn notification(&self, kind: &str, outcome: &'static str) {
        *lock(&self.notifications)
            .entry((kind.to_string(), outcome))
            .or_default() += 1;
    }
}

/// A label value as the text format wants it.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

/// The counters of this process in the text format.
fn render_counters(m: &ControlMetrics, out: &mut String) {
    header(
        out,
        "aiops_tool_calls_total",
        "counter",
        "MCP tool calls served by this daemon, by tool and outcome (ok, error, invalid, input_required).",
    );
    for ((tool, outcome), n) in lock(&m.tool_calls).iter() {
        let _ = writeln!(
            out,
            "aiops_tool_calls_total{{tool=\"{}\",outcome=\"{outcome}\"}} {n}",
            esc(tool)
        );
    }
    header(
        out,
        "aiops_action_duration_seconds",
        "histogram",
        "Remediation actions finished since the daemon started (any caller, from the audit log), by action and status.",
    );
    for ((action, status), h) in lock(&m.actions).iter() {
        let labels = format!("action=\"{}\",status=\"{}\"", esc(action), esc(status));
        let mut cumulative = 0;
        for (bound, c) in BUCKETS.iter().zip(h.counts) {
            cumulative += c;
            let _ = writeln!(
                out,
                "aiops_action_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "aiops_action_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "aiops_action_duration_seconds_sum{{{labels}}} {}",
            num(h.sum)
        );
        let _ = writeln!(
            out,
            "aiops_action_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    header(
        out,
        "aiops_notifications_total",
        "counter",
        "Webhook notifications by kind and outcome (sent, failed, dropped).",
    );
    for ((kind, outcome), n) in lock(&m.notifications).iter() {
        let _ = writeln!(
            out,
            "aiops_notifications_total{{kind=\"{}\",outcome=\"{outcome}\"}} {n}",
            esc(kind)
        );
    }
}

/// The figures read from the state dir at scrape time.
async fn render_state(rest: &RestState, out: &mut String) {
    header(
        out,
        "aiops_faults_active",
        "gauge",
        "Faults injected and not yet reverted (the chaos ledger).",
    );
    match rest.chaos.status().await {
        Ok(records) => {
            let active = records
                .iter()
                .filter(|r| matches!(r.state.as_str(), "injecting" | "active" | "reverting"))
                .count();
            let _ = writeln!(out, "aiops_faults_active {active}");
        }
        Err(error) => tracing::warn!(message = "Cannot read the chaos ledger.", %error),
    }
    let state = rest.state.clone();
    let (diagnoses, reports) = tokio::task::spawn_blocking(move || {
        (
            aiops_sandbox::incidents::diagnoses(&state).len(),
            aiops_sandbox::incidents::reports(&state),
        )
    })
    .await
    .unwrap_or_default();
    header(
        out,
        "aiops_diagnoses_submitted_total",
        "counter",
        "Diagnoses agents submitted (submit_diagnosis), over the sandbox's life.",
    );
    let _ = writeln!(out, "aiops_diagnoses_submitted_total {diagnoses}");
    header(
        out,
        "aiops_incident_reports_total",
        "counter",
        "Incident reports filed (report_incident), by whether the agent says it resolved the incident.",
    );
    let resolved = reports.iter().filter(|r| r.resolved).count();
    let _ = writeln!(
        out,
        "aiops_incident_reports_total{{resolved=\"true\"}} {resolved}"
    );
    let _ = writeln!(
        out,
        "aiops_incident_reports_total{{resolved=\"false\"}} {}",
        reports.len() - resolved
    );
    let latest = rest.state.root().join("drills").join("latest.json");
    let drill = std::fs::read_to_string(latest)
        .ok()
        .and_then(|t| serde_json::from_str::<aiops_drill::DrillResults>(&t).ok());
    if let Some(d) = drill {
        let s = &d.summary;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "aiops_drill_trials",
                "Trials in the last drill.",
                s.trials as f64,
            ),
            (
                "aiops_drill_passed_trials",
                "Trials the agent passed in the last drill.",
                s.passed as f64,
            ),
            (
                "aiops_drill_success_rate_percent",
                "Passed trials / trials of the last drill, in percent.",
                s.success_rate_percent,
            ),
            (
                "aiops_drill_pass_k_faults",
                "Faults whose every trial passed in the last drill (pass^k).",
                s.pass_k.0 as f64,
            ),
            (
                "aiops_drill_false_positives",
                "No-fault trials in which the agent diagnosed or acted, in the last drill.",
                s.false_positives as f64,
            ),
            (
                "aiops_drill_finished_timestamp_seconds",
                "When the last drill finished (Unix time).",
                d.finished_at.timestamp() as f64,
            ),
        ];
        for (name, help, v) in gauges {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", num(v));
        }
        header(
            out,
            "aiops_drill_time_seconds",
            "gauge",
            "The last drill's times to detect and to mitigate, median and p95.",
        );
        for (phase, spread) in [("detect", &s.detect), ("mitigate", &s.mitigate)] {
            for (q, ms) in [("0.5", spread.median_ms), ("0.95", spread.p95_ms)] {
                if let Some(ms) = ms {
                    let _ = writeln!(
                        out,
                        "aiops_drill_time_seconds{{phase=\"{phase}\",quantile=\"{q}\"}} {}",
                        num(ms as f64 / 1000.0)
                    );
                }
            }
        }
        header(
            out,
            "aiops_drill_fault_passed_ratio",
            "gauge",
            "Per fault of the last drill: passed trials / trials.",
        );
        for (fault, pf) in &s.per_fault {
            let ratio = if pf.trials == 0 {
                0.0
            } else {
                pf.passed as f64 / pf.trials as f64
            };
            let _ = writeln!(
                out,
                "aiops_drill_fault_passed_ratio{{fault=\"{}\"}} {}",
                esc(fault),
                num(ratio)
            );
        }
    }
}

/// `GET /metrics`.
pub async fn handler(State(rest): State<RestState>) -> Response {
    let mut out = String::new();
    render_counters(&METRICS, &mut out);
    render_state(&rest, &mut out).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let m = ControlMetrics::default();
        m.tool_call("check_health", "ok");
        m.tool_call("check_health", "ok");
        m.tool_call("restart_service", "error");
        m.action("restart_service", "executed", 0.3);
        m.action("restart_service", "executed", 7.0);
        m.notification("refused", "sent");
        let mut out = String::new();
        render_counters(&m, &mut out);
        assert!(out.contains("aiops_tool_calls_total{tool=\"check_health\",outcome=\"ok\"} 2"));
        assert!(
            out.contains("aiops_tool_calls_total{tool=\"restart_service\",outcome=\"error\"} 1")
        );
        let b =
            "aiops_action_duration_seconds_bucket{action=\"restart_service\",status=\"executed\"";
        assert!(out.contains(&format!("{b},le=\"0.25\"}} 0")), "{out}");
        assert!(out.contains(&format!("{b},le=\"0.5\"}} 1")), "{out}");
        assert!(out.contains(&format!("{b},le=\"10\"}} 2")), "{out}");
        assert!(out.contains(&format!("{b},le=\"+Inf\"}} 2")), "{out}");
        assert!(out.contains(
            "aiops_action_duration_seconds_sum{action=\"restart_service\",status=\"executed\"} 7.3"
        ));
        assert!(out.contains("aiops_notifications_total{kind=\"refused\",outcome=\"sent\"} 1"));
        assert!(out.contains("# TYPE aiops_action_duration_seconds histogram"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
