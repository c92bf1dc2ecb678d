//! Prompts: ready-made instructions a client can offer its user.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{GetPromptResult, PromptMessage, Role};
use rmcp::{ErrorData, prompt, prompt_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::AiopsServer;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct InvestigateArgs {
    /// What was noticed, in a person's words (e.g. "checkout is slow", "500s on /orders").
    /// Optional: without it, the investigation starts from the snapshot's anomalies.
    #[serde(default)]
    pub symptom: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PostmortemArgs {
    /// One line on what happened (e.g. "DB pool exhausted by foreign sessions").
    pub incident: String,
    /// What was done to fix it, if known.
    #[serde(default)]
    pub actions: Option<String>,
}

#[prompt_router(router = "prompt_router", vis = "pub(crate)")]
impl AiopsServer {
    /// Investigate a problem in the sandbox step by step: observe, diagnose, plan, act,
    /// verify, explain.
    #[prompt(name = "investigate_incident")]
    async fn investigate_incident(
        &self,
        Parameters(args): Parameters<InvestigateArgs>,
    ) -> Result<GetPromptResult, ErrorData> {
        let symptom = args
            .symptom
            .filter(|s| !s.trim().is_empty())
            .map(|s| format!("Reported symptom: {s}\n\n"))
            .unwrap_or_default();
        let text = format!(
            "{symptom}You are the on-call engineer for the aiops sandbox. Work in these steps \
and say which step you are in.\n\
1. Observe: call `incident_snapshot`. Note every anomaly with its evidence.\n\
2. Diagnose: confirm or reject each hypothesis with focused tools: `query_logs` (filter by \
error code), `get_metrics` (error rate, p95 latency, pool use), `db_diagnostics` (sessions \
by application, lock chains, idle-in-transaction), `process_stats`, `disk_usage`, \
`inspect_config` (diff against last-known-good), `list_events` (what changed and when). \
State the root cause as: fault class, component, evidence.\n\
3. Plan: the smallest safe change that removes the cause, what it will affect, and how you \
will know it worked. Prefer a dry run first where a tool offers one.\n\
4. Act: make the change with the server's action tools, one at a time.\n\
5. Verify: `check_health` must be healthy and `get_metrics` must show the error rate and \
latency back to normal over a fresh window; if not, go back to step 2.\n\
6. Explain: in plain words, what broke, why, what you did, before/after figures, and how \
to prevent it."
        );
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description("Step-by-step incident investigation with the aiops tools"),
        )
    }

    /// Write a blameless postmortem for an incident handled in the sandbox.
    #[prompt(name = "write_postmortem")]
    async fn write_postmortem(
        &self,
        Parameters(args): Parameters<PostmortemArgs>,
    ) -> Result<GetPromptResult, ErrorData> {
        let actions = args
            .actions
            .map(|a| format!("Actions taken: {a}\n"))
            .unwrap_or_default();
        let text = format!(
            "Incident: {}\n{actions}\nWrite a blameless postmortem in Markdown with these \
sections: Summary (two sentences), Impact (who and what was affected, for how long), \
Timeline (from `list_events` and the logs, with UTC times), Root cause (the mechanism, with \
evidence from `query_logs`, `db_diagnostics` or `get_metrics`), What was done and why, \
Before/after figures (error rate, p95 latency, pool use: take the 'after' figures from a \
fresh `get_metrics` call), Prevention (concrete changes: alerts, limits, config, runbook \
updates). Use only facts you can show with the tools; mark anything you infer as such.",
            args.incident
        );
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                .with_description("Blameless postmortem from the sandbox's own evidence"),
        )
    }
}
