//! Diagnosis and incident reports over MCP: any agent states what it believes broke
//! (`submit_diagnosis`, timestamped: the drill scores it) and files a report at the end
//! (`report_incident`, then readable as `incident://{id}`).

use aiops_sandbox::incidents::{self, ReportInput};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AiopsServer;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitDiagnosisArgs {
    /// The failure class you believe is the cause, e.g. `db_pool_exhaustion`,
    /// `db_auth_failure`, `upstream_outage` (a runbook's `fault_classes` names them).
    pub fault_class: String,
    /// The component at fault: postgres, target-app, worker, upstream-primary, config, cache, disk.
    pub component: String,
    /// One or two sentences: what is wrong and why you think so.
    pub summary: String,
    /// Concrete evidence: log lines, figures, session pids and queries (at most 20 items).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// How sure you are, from 0 to 1.
    #[serde(default)]
    pub confidence: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportIncidentArgs {
    /// A one-line title, e.g. "Database pool exhausted by foreign sessions".
    pub title: String,
    /// What broke, in plain words, with the mechanism.
    pub what_broke: String,
    /// Each action taken, in order, with its result.
    pub what_was_done: Vec<String>,
    /// Why these actions fix the cause.
    pub why: String,
    /// How to prevent it from happening again.
    #[serde(default)]
    pub prevention: Vec<String>,
    /// Figures before the fix, e.g. {"error_rate_percent": 62, "p95_ms": 4800}.
    #[serde(default)]
    pub before: serde_json::Value,
    /// The same figures after the fix.
    #[serde(default)]
    pub after: serde_json::Value,
    /// The id `submit_diagnosis` returned, if any.
    #[serde(default)]
    pub diagnosis_id: Option<String>,
    /// Whether steady state is back (verify_recovery passed).
    pub resolved: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DiagnosisReceipt {
    pub id: String,
    pub submitted_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ReportReceipt {
    pub id: String,
    /// Read it back as this MCP resource.
    pub uri: String,
    /// The Markdown file in the state dir.
    pub path: String,
}

/// A library error as the tool's answer: bad input is `invalid_params` (naming the
/// field), anything else an internal error.
fn store_error(what: &str, e: aiops_sandbox::Error) -> ErrorData {
    match e {
        aiops_sandbox::Error::InvalidArgument { .. } => {
            ErrorData::invalid_params(e.to_string(), None)
        }
        e => ErrorData::internal_error(format!("cannot store the {what}: {e}"), None),
    }
}

fn client_name(ctx: &RequestContext<RoleServer>) -> String {
    ctx.peer
        .peer_info()
        .map(|i| i.client_info.name.clone())
        .unwrap_or_else(|| "unknown".into())
}

fn ok(summary: String, value: serde_json::Value) -> Result<CallToolResult, ErrorData> {
    let mut out = CallToolResult::structured(value.clone());
    out.content = vec![
        ContentBlock::text(summary),
        ContentBlock::text(value.to_string()),
    ];
    Ok(out)
}

#[tool_router(router = report_router, vis = "pub(crate)")]
impl AiopsServer {
    #[tool(
        description = "State your diagnosis as soon as you have one: the failure class, the \
component at fault, a short summary and the evidence. It is timestamped and kept (a drill \
scores how fast and how correctly the cause was named). Submit again if you change your \
mind; the latest counts. Changes nothing in the system.",
        output_schema = super::output_schema::<DiagnosisReceipt>(),
        annotations(
            title = "Submit diagnosis",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn submit_diagnosis(
        &self,
        Parameters(a): Parameters<SubmitDiagnosisArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let d = incidents::submit_diagnosis(
            &self.state,
            &a.fault_class,
            &a.component,
            &a.summary,
            &a.evidence,
            a.confidence,
            &client_name(&ctx),
        )
        .map_err(|e| store_error("diagnosis", e))?;
        let receipt = DiagnosisReceipt {
            id: d.id.clone(),
            submitted_at: d.submitted_at.to_rfc3339(),
        };
        ok(
            format!(
                "Diagnosis {} recorded: {} in {}.",
                d.id, d.fault_class, d.component
            ),
            serde_json::to_value(receipt).unwrap_or_default(),
        )
    }

    #[tool(
        description = "File the incident report when you are done: what broke, what was done \
(each action and its result), why it fixes the cause, how to prevent it, and figures before \
and after (error rate, p95 latency, pool use...). Stored as Markdown and JSON and readable \
as the resource `incident://{id}`. Changes nothing in the system.",
        output_schema = super::output_schema::<ReportReceipt>(),
        annotations(
            title = "Report incident",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn report_incident(
        &self,
        Parameters(a): Parameters<ReportIncidentArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let r = incidents::file_report(
            &self.state,
            ReportInput {
                title: a.title,
                what_broke: a.what_broke,
                what_was_done: a.what_was_done,
                why: a.why,
                prevention: a.prevention,
                before: a.before,
                after: a.after,
                diagnosis_id: a.diagnosis_id,
                resolved: a.resolved,
            },
            &client_name(&ctx),
        )
        .map_err(|e| ErrorData::internal_error(format!("cannot store the report: {e}"), None))?;
        let receipt = ReportReceipt {
            id: r.id.clone(),
            uri: format!("incident://{}", r.id),
            path: self
                .state
                .root()
                .join("incidents")
                .join(format!("{}.md", r.id))
                .display()
                .to_string(),
        };
        ok(
            format!("Incident report {} filed: {}", r.id, r.title),
            serde_json::to_value(receipt).unwrap_or_default(),
        )
    }
}
