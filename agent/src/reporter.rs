//! The reporter: before/after figures and the incident report, filed with
//! `report_incident`.
//!
//! Responsible for: turning what the other roles saw and did into a report a person
//! reads. Not responsible for judging recovery (the validator did).

use aiops_runbooks::Runbook;
use serde_json::{Value, json};

use crate::diagnoser::Anomaly;
use crate::mcp::{self, Client};
use crate::validator::Validation;
use crate::{ActionTaken, Hypothesis};

/// The headline figures of a metrics report (`incident_snapshot.metrics` or `get_metrics`).
pub fn figures(metrics: &Value) -> Value {
    json!({
        "error_rate_percent": metrics["error_rate_percent"],
        "p95_ms": metrics["latency"]["p95_ms"],
        "pool_in_use": metrics["pool"]["in_use"],
        "requests": metrics["requests"],
        "window_s": metrics["window_s"],
    })
}

/// The "before" part: the first snapshot's figures and its anomalies.
pub fn before(snapshot: &Value, anomalies: &[Anomaly]) -> Value {
    let mut v = figures(&snapshot["metrics"]);
    v["anomalies"] = json!(anomalies.iter().map(Anomaly::line).collect::<Vec<_>>());
    v
}

/// The "after" part: a fresh 10 s metrics window plus the validator's verdict.
pub async fn after(client: &Client, validation: &Validation) -> Value {
    let mut v = match mcp::call_ok(client, "get_metrics", &json!({"window_s": 10})).await {
        Ok(m) => figures(&m),
        Err(error) => {
            tracing::warn!(message = "get_metrics failed; after has no figures.", %error);
            json!({})
        }
    };
    v["verification_passed"] = json!(validation.passed);
    v["verification_checks"] = validation.checks.clone();
    v
}

/// Everything the report says.
pub struct ReportInput<'a> {
    pub top: Option<&'a Hypothesis>,
    pub runbook: Option<&'a Runbook>,
    pub actions: &'a [ActionTaken],
    pub before: Value,
    pub after: Value,
    pub diagnosis_id: Option<&'a str>,
    pub resolved: bool,
}

/// The arguments of `report_incident`.
pub fn report_args(input: &ReportInput<'_>) -> Value {
    let (title, what_broke, why) = match (input.top, input.runbook) {
        (Some(h), rb) => (
            rb.map(|r| r.title.clone())
                .unwrap_or_else(|| h.fault_class.clone()),
            format!(
                "{} on {}; evidence: {}",
                h.fault_class,
                h.component,
                h.evidence.join("; ")
            ),
            rb.and_then(|r| r.remediation.first())
                .and_then(|s| s.why.clone())
                .map(|w| format!("Runbook {} (score {:.2}): {w}", h.runbook_id, h.confidence))
                .unwrap_or_else(|| format!("Runbook {} matched the anomalies.", h.runbook_id)),
        ),
        (None, _) => (
            "Unexplained incident".to_string(),
            "anomalies no runbook explains".to_string(),
            "No runbook's symptoms matched the anomalies.".to_string(),
        ),
    };
    let what_was_done: Vec<String> = input
        .actions
        .iter()
        .map(|a| {
            format!(
                "{} {} → {}{}{}",
                a.tool,
                a.args,
                a.status,
                if a.verified { ", verified" } else { "" },
                if a.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.message)
                }
            )
        })
        .collect();
    let prevention = input
        .runbook
        .map(|r| r.prevention.clone())
        .unwrap_or_default();
    let mut args = json!({
        "title": title,
        "what_broke": what_broke,
        "what_was_done": what_was_done,
        "why": why,
        "prevention": prevention,
        "before": input.before,
        "after": input.after,
        "resolved": input.resolved,
    });
    if let Some(id) = input.diagnosis_id {
        args["diagnosis_id"] = json!(id);
    }
    args
}

/// File the report; `None` (logged) when the tool is absent or refuses.
pub async fn report(client: &Client, input: &ReportInput<'_>) -> Option<String> {
    match mcp::call_ok(client, "report_incident", &report_args(input)).await {
        Ok(v) => v["id"].as_str().map(String::from),
        Err(error) => {
            tracing::warn!(message = "report_incident failed; continuing without it.", %error);
            None
        }
    }
}
