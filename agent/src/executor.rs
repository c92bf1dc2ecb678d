//! The executor: runs the top hypothesis's runbook (remediation, then escalation), each
//! step followed by its verification, and falls back to the next hypothesis.
//!
//! Responsible for: calling remediation tools with the runbook's arguments, stopping at
//! the first verified recovery, and stopping — never approving — when a tool needs a
//! human (`pending_approval`). A later run passes the granted id in
//! [`AgentOptions::approval_ids`](crate::AgentOptions).
//!
//! Not responsible for: choosing the cause (the diagnoser) nor the final verdict (the
//! validator).

use std::collections::HashMap;
use std::time::Instant;

use aiops_runbooks::{Runbook, Step};
use serde_json::{Value, json};

use crate::mcp::{self, Client};
use crate::{ActionTaken, AgentOptions, Hypothesis, PendingApproval};

/// How the executor ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecOutcome {
    /// A step's verification passed.
    Recovered { runbook_id: String },
    /// Every step of every hypothesis tried; still broken.
    NotRecovered,
    /// A tool needs a human's approval first.
    AwaitingApproval(PendingApproval),
}

#[derive(Debug, Clone)]
pub struct Execution {
    pub outcome: ExecOutcome,
    pub actions: Vec<ActionTaken>,
    /// When a verification first passed.
    pub recovered_at: Option<Instant>,
    /// Runbooks whose steps were run, in order.
    pub runbooks_tried: Vec<String>,
}

/// Run the runbooks of the first `opts.max_hypotheses` hypotheses.
pub async fn execute(
    client: &Client,
    hypotheses: &[Hypothesis],
    runbooks: &HashMap<String, Runbook>,
    opts: &AgentOptions,
) -> Execution {
    let mut approvals = opts.approval_ids.clone();
    let mut exec = Execution {
        outcome: ExecOutcome::NotRecovered,
        actions: Vec::new(),
        recovered_at: None,
        runbooks_tried: Vec::new(),
    };
    for h in hypotheses.iter().take(opts.max_hypotheses.max(1)) {
        let Some(rb) = runbooks.get(&h.runbook_id) else {
            continue;
        };
        exec.runbooks_tried.push(rb.id.clone());
        tracing::info!(message = "Running runbook.", runbook = %rb.id, confidence = h.confidence);
        for step in rb.remediation.iter().chain(&rb.escalation) {
            match run_step(client, step, &mut approvals, opts).await {
                StepResult::Done(action) => {
                    let verified = action.verified;
                    exec.actions.push(action);
                    if verified {
                        exec.recovered_at = Some(Instant::now());
                        exec.outcome = ExecOutcome::Recovered {
                            runbook_id: rb.id.clone(),
                        };
                        return exec;
                    }
                }
                StepResult::Pending(action, pending) => {
                    exec.actions.push(action);
                    exec.outcome = ExecOutcome::AwaitingApproval(pending);
                    return exec;
                }
            }
        }
    }
    exec
}

enum StepResult {
    Done(ActionTaken),
    Pending(ActionTaken, PendingApproval),
}

async fn run_step(
    client: &Client,
    step: &Step,
    approvals: &mut HashMap<String, String>,
    opts: &AgentOptions,
) -> StepResult {
    let mut args = step.args.clone();
    // An approval is used once: the granted id goes with the first call of that tool.
    if let Some(id) = approvals.remove(&step.tool) {
        args.insert("approval_id".into(), Value::String(id));
    }
    let args = Value::Object(args);
    let (status, message, approval_id) = match mcp::call(client, &step.tool, &args).await {
        Ok(answer) => {
            let s = &answer.structured;
            let status = s["status"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| if answer.is_error { "error" } else { "unknown" }.into());
            let message = s["message"]
                .as_str()
                .map(String::from)
                .unwrap_or(answer.text);
            (status, message, s["approval_id"].as_str().map(String::from))
        }
        Err(error) => {
            tracing::warn!(message = "Remediation step failed at the protocol level.", tool = %step.tool, %error);
            ("error".to_string(), error.to_string(), None)
        }
    };
    tracing::info!(message = "Remediation step ran.", tool = %step.tool, %status, detail = %message);
    let mut action = ActionTaken {
        tool: step.tool.clone(),
        args,
        status: status.clone(),
        verified: false,
        message,
        approval_id: approval_id.clone(),
    };
    if status == "pending_approval" {
        let pending = PendingApproval {
            tool: step.tool.clone(),
            approval_id: approval_id.unwrap_or_default(),
        };
        return StepResult::Pending(action, pending);
    }
    let (vtool, vargs) = match &step.verify {
        Some(v) => (v.tool.clone(), Value::Object(v.args.clone())),
        None => ("verify_recovery".to_string(), json!({})),
    };
    action.verified = verify(client, &vtool, &vargs, opts).await;
    StepResult::Done(action)
}

/// Run a verification, retrying a few times: a restarted service or a refilled pool
/// takes seconds to settle, and one unlucky sample must not send the agent into the
/// escalation path.
async fn verify(client: &Client, tool: &str, args: &Value, opts: &AgentOptions) -> bool {
    for attempt in 1..=opts.verify_attempts.max(1) {
        match mcp::call(client, tool, args).await {
            Ok(answer) if answer.structured["verification"]["passed"] == Value::Bool(true) => {
                return true;
            }
            Ok(answer) => {
                tracing::info!(message = "Verification did not pass.", %tool, attempt, detail = %answer.text)
            }
            Err(error) => {
                tracing::warn!(message = "Verification call failed.", %tool, attempt, %error)
            }
        }
        if attempt < opts.verify_attempts {
            tokio::time::sleep(opts.verify_interval).await;
        }
    }
    false
}
