//! The scripted agent: an MCP client that runs observe → diagnose → act → verify →
//! report with no LLM.
//!
//! Responsible for: one pass of the loop ([`run_once`]) through four roles with a clear
//! hand-off — [`diagnoser`] (snapshot + runbooks → ranked [`Hypothesis`] list, submitted),
//! [`executor`] (runbook steps, each verified; stops at `pending_approval`),
//! [`validator`] (final `verify_recovery`), [`reporter`] (before/after, `report_incident`).
//!
//! Not responsible for: any backdoor into the sandbox. **Invariant:** everything the agent
//! knows and does goes through the MCP tools and resources of the server it is given; it
//! never approves its own actions.

pub mod diagnoser;
pub mod executor;
pub mod mcp;
pub mod reporter;
pub mod validator;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

pub use mcp::{Client, connect_http, connect_stdio};

/// How one run behaves.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Approval ids granted by a human, by tool name (e.g. `rotate_db_credentials`), from
    /// a previous run that ended `awaiting_approval`. Each is used once.
    pub approval_ids: HashMap<String, String>,
    /// How many hypotheses the executor may try (default 2).
    pub max_hypotheses: usize,
    /// Verification attempts after each step (default 3) and the pause between them.
    pub verify_attempts: u32,
    pub verify_interval: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            approval_ids: HashMap::new(),
            max_hypotheses: 2,
            verify_attempts: 3,
            verify_interval: Duration::from_secs(2),
        }
    }
}

/// A candidate cause: a runbook whose symptoms match the anomalies.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hypothesis {
    pub runbook_id: String,
    /// The runbook's first fault class, or its id.
    pub fault_class: String,
    /// The runbook's component.
    pub component: String,
    /// The ranking key: matched symptoms' weights, each divided by how many runbooks
    /// explain its anomaly (see [`diagnoser::score`]).
    pub confidence: f64,
    /// The plain sum of the matched symptoms' weights.
    pub score: f64,
    /// The matched anomalies: observed value and first evidence item.
    pub evidence: Vec<String>,
}

/// One remediation call the executor made.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActionTaken {
    pub tool: String,
    pub args: Value,
    /// The tool's `status` (`executed`, `failed`, `refused`, `pending_approval`), or
    /// `error` when the call failed at the protocol level.
    pub status: String,
    /// Whether the step's verification passed afterwards.
    pub verified: bool,
    pub message: String,
    pub approval_id: Option<String>,
}

/// A tool that waits for a human's `aiops approve ID`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingApproval {
    pub tool: String,
    pub approval_id: String,
}

/// What one run found and did.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// `recovered`, `not_recovered`, `no_incident` or `awaiting_approval`.
    pub outcome: String,
    /// Best first.
    pub hypotheses: Vec<Hypothesis>,
    pub actions: Vec<ActionTaken>,
    pub diagnosis_id: Option<String>,
    pub incident_id: Option<String>,
    /// Set when the outcome is `awaiting_approval`.
    pub pending_approval: Option<PendingApproval>,
    /// The final `verify_recovery` (absent for `no_incident` and `awaiting_approval`).
    pub validation: Option<validator::Validation>,
    /// From the start of the run to a ranked diagnosis.
    pub detect_ms: u64,
    /// From the start of the run to the first passed verification (or to the end of the
    /// run when none passed).
    pub mitigate_ms: u64,
}

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("cannot connect to the MCP server: {0}")]
    Connect(String),
    #[error("tool {tool} failed: {message}")]
    Tool { tool: String, message: String },
    #[error("resource {uri}: {message}")]
    Resource { uri: String, message: String },
    #[error("tool {tool} answered something unexpected: {message}")]
    Unexpected { tool: String, message: String },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One pass of the loop. The only way an `Err` comes back is when the agent cannot even
/// observe (no snapshot, no runbooks); failed actions are part of the report.
pub async fn run_once(client: &Client, opts: &AgentOptions) -> Result<AgentReport, AgentError> {
    let start = Instant::now();
    let diagnosis = diagnoser::diagnose(client).await?;
    let detect_ms = ms(start.elapsed());
    let mut report = AgentReport {
        outcome: "no_incident".into(),
        hypotheses: diagnosis.hypotheses.clone(),
        actions: Vec::new(),
        diagnosis_id: diagnosis.diagnosis_id.clone(),
        incident_id: None,
        pending_approval: None,
        validation: None,
        detect_ms,
        mitigate_ms: 0,
    };
    if !diagnosis
        .anomalies
        .iter()
        .any(diagnoser::Anomaly::is_actionable)
    {
        return Ok(report);
    }
    tracing::info!(
        message = "Diagnosed.",
        top = ?diagnosis.hypotheses.first().map(|h| (&h.fault_class, h.confidence)),
        detect_ms
    );

    let exec = executor::execute(client, &diagnosis.hypotheses, &diagnosis.runbooks, opts).await;
    report.actions = exec.actions.clone();
    if let executor::ExecOutcome::AwaitingApproval(pending) = &exec.outcome {
        // The incident is not over: the report is filed by the run that finishes it.
        report.outcome = "awaiting_approval".into();
        report.pending_approval = Some(pending.clone());
        report.mitigate_ms = ms(start.elapsed());
        return Ok(report);
    }

    let validation = validator::validate(client).await;
    report.mitigate_ms = ms(exec
        .recovered_at
        .map(|t| t.duration_since(start))
        .unwrap_or_else(|| start.elapsed()));
    report.outcome = if validation.passed {
        "recovered"
    } else {
        "not_recovered"
    }
    .into();

    // The runbook that fixed it, else the top hypothesis's.
    let used = match &exec.outcome {
        executor::ExecOutcome::Recovered { runbook_id } => Some(runbook_id.clone()),
        _ => diagnosis.hypotheses.first().map(|h| h.runbook_id.clone()),
    };
    let top = used
        .as_ref()
        .and_then(|id| diagnosis.hypotheses.iter().find(|h| &h.runbook_id == id));
    let input = reporter::ReportInput {
        top,
        runbook: used.as_ref().and_then(|id| diagnosis.runbooks.get(id)),
        actions: &exec.actions,
        before: reporter::before(&diagnosis.snapshot, &diagnosis.anomalies),
        after: reporter::after(client, &validation).await,
        diagnosis_id: diagnosis.diagnosis_id.as_deref(),
        resolved: validation.passed,
    };
    report.incident_id = reporter::report(client, &input).await;
    report.validation = Some(validation);
    Ok(report)
}

/// How [`watch`] repeats passes and when it stops.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Pause between passes.
    pub interval: Duration,
    /// Stop at this instant (a pass under way finishes first).
    pub deadline: Option<Instant>,
    /// Stop after the first pass whose outcome is `recovered`.
    pub stop_when_recovered: bool,
    /// Stop after this many passes.
    pub max_rounds: Option<u64>,
}

/// Passes of [`run_once`] until a stop condition; `on_report` sees each pass's report
/// (or the error of a pass that could not observe: watching goes on, since the sandbox
/// may be restarting). After `awaiting_approval` the next pass carries the pending
/// approval's id, once: whoever watches the gate (a person with `aiops approve`, or a
/// drill) is expected to decide before then. Returns the last report.
pub async fn watch(
    client: &Client,
    opts: &AgentOptions,
    w: &WatchOptions,
    mut on_report: impl FnMut(Result<&AgentReport, &AgentError>),
) -> Option<AgentReport> {
    let mut opts = opts.clone();
    let mut last = None;
    let mut round = 0u64;
    loop {
        round += 1;
        let carried = std::mem::take(&mut opts.approval_ids);
        let pass = run_once(
            client,
            &AgentOptions {
                approval_ids: carried,
                ..opts.clone()
            },
        )
        .await;
        on_report(pass.as_ref());
        if let Ok(report) = pass {
            if let Some(p) = &report.pending_approval {
                opts.approval_ids
                    .insert(p.tool.clone(), p.approval_id.clone());
            }
            let done = w.stop_when_recovered && report.outcome == "recovered";
            last = Some(report);
            if done {
                break;
            }
        }
        if w.max_rounds.is_some_and(|m| round >= m) {
            break;
        }
        let pause = match w.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                w.interval.min(left)
            }
            None => w.interval,
        };
        tokio::time::sleep(pause).await;
    }
    last
}
