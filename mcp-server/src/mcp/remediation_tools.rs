//! Remediation tools: one MCP tool per action of `aiops-remediation`, generated from
//! `Remediator::actions()` so the catalogue is written down once. Every call goes through
//! the same path: plan (dry run) → policy → audit → execute → verify.
//!
//! Each tool takes the action's own parameters plus `dry_run` (return the plan, change
//! nothing) and `approval_id` (re-run an action a human approved).

use std::sync::Arc;

use aiops_remediation::{ActionInfo, ActionOutcome, ActionRequest, Caller, RemediationError};
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use super::AiopsServer;

/// The action's parameter schema, plus the two arguments every action takes.
fn input_schema(info: &ActionInfo) -> JsonObject {
    let mut schema = info.params_schema.as_object().cloned().unwrap_or_default();
    schema.insert("type".into(), json!("object"));
    let props = schema
        .entry("properties")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|p| {
            p.insert(
                "dry_run".into(),
                json!({"type": "boolean", "default": false, "description":
                    "Only return the plan (what would be done, to what, expected effect, risk); change nothing."}),
            );
            p.insert(
                "approval_id".into(),
                json!({"type": "string", "description":
                    "For actions that need a human's approval: the id returned with status \
                     pending_approval, once an operator approved it (`aiops approve ID`). \
                     Call again with the same arguments plus this id."}),
            );
        });
    let _ = props;
    schema
}

pub(crate) fn remediation_router(read_only: bool) -> ToolRouter<AiopsServer> {
    let mut router = ToolRouter::new();
    for info in aiops_remediation::Remediator::actions() {
        if read_only && !info.read_only {
            continue;
        }
        let tool = Tool::new(
            info.name.clone(),
            info.description.clone(),
            Arc::new(input_schema(&info)),
        )
        .with_raw_output_schema(super::output_schema::<ActionOutcome>())
        .with_annotations(ToolAnnotations::from_raw(
            Some(info.title.clone()),
            Some(info.read_only),
            Some(info.destructive),
            Some(info.idempotent),
            Some(false),
        ));
        let name = info.name.clone();
        router.add_route(ToolRoute::new_dyn(
            tool,
            move |ctx: ToolCallContext<'_, AiopsServer>| {
                let name = name.clone();
                Box::pin(async move {
                    ctx.service
                        .run_action(&name, ctx.arguments.clone(), &ctx.request_context)
                        .await
                        .map(Into::into)
                })
            },
        ));
    }
    router
}

/// What the human answers when asked through MCP elicitation.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct ApprovalAnswer {
    /// true to let the action run now, false to refuse it.
    approve: bool,
}
rmcp::elicit_safe!(ApprovalAnswer);

fn client_can_elicit(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.peer
        .peer_info()
        .is_some_and(|i| i.capabilities.elicitation.is_some())
}

/// On a blocking-pool thread driving the runtime: the action's future holds sqlx
/// connections across awaits in ways the compiler cannot prove `Send` for every lifetime
/// (the router's bound), so it is never moved between threads.
async fn run_on_blocking_thread(
    remediator: aiops_remediation::Remediator,
    req: ActionRequest,
    caller: Caller,
) -> Result<Result<ActionOutcome, RemediationError>, ErrorData> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(remediator.run(req, caller)))
        .await
        .map_err(|e| ErrorData::internal_error(format!("the action panicked: {e}"), None))
}

fn caller(ctx: &RequestContext<RoleServer>) -> Caller {
    let client = ctx
        .peer
        .peer_info()
        .map(|i| i.client_info.name.clone())
        .unwrap_or_else(|| "unknown".into());
    let session = ctx
        .extensions
        .get::<axum::http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Caller { client, session }
}

impl AiopsServer {
    async fn run_action(
        &self,
        action: &str,
        arguments: Option<JsonObject>,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let remediator = match self.remediator() {
            Ok(r) => r,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "remediation is unavailable: {e}"
                ))]));
            }
        };
        let mut params = arguments.unwrap_or_default();
        let dry_run = match params.remove("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(ErrorData::invalid_params(
                    format!("invalid argument `dry_run`: expected true or false, got {other}"),
                    None,
                ));
            }
        };
        let approval_id = match params.remove("approval_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(ErrorData::invalid_params(
                    format!("invalid argument `approval_id`: expected a string, got {other}"),
                    None,
                ));
            }
        };
        let req = ActionRequest {
            action: action.to_string(),
            params,
            dry_run,
            approval_id,
        };
        let caller = caller(ctx);
        let mut outcome =
            run_on_blocking_thread(remediator.clone(), req.clone(), caller.clone()).await?;
        // The human approves through the client when it can ask them (MCP elicitation);
        // otherwise the pending id goes back to the agent and an operator uses the CLI.
        if let Ok(pending) = &outcome
            && pending.status.as_str() == "pending_approval"
            && let Some(id) = pending.approval_id.clone()
            && client_can_elicit(ctx)
        {
            let question = format!(
                "The agent asks to run `{action}` ({} risk): {}. Expected effect: {}. Approve?",
                pending.plan.risk,
                pending.plan.steps.join("; "),
                pending.plan.expected_effect
            );
            let answer = ctx
                .peer
                .elicit_with_timeout::<ApprovalAnswer>(
                    question,
                    Some(std::time::Duration::from_secs(300)),
                )
                .await;
            let decision = match answer {
                Ok(Some(a)) => Some(a.approve),
                Err(rmcp::service::ElicitationError::UserDeclined) => Some(false),
                // Cancelled, timed out or unsupported: stays pending for the CLI.
                _ => None,
            };
            if let Some(approve) = decision {
                let by = format!("mcp-elicitation:{}", caller.client);
                if let Err(e) = remediator.decide(&id, approve, &by) {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "recording the approval failed: {e}"
                    ))]));
                }
                let mut again = req.clone();
                again.approval_id = Some(id);
                outcome = run_on_blocking_thread(remediator, again, caller).await?;
            }
        }
        match outcome {
            Ok(outcome) => {
                let value = serde_json::to_value(&outcome)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let failed = matches!(value["status"].as_str(), Some("failed"));
                let mut out = if failed {
                    CallToolResult::structured_error(value.clone())
                } else {
                    CallToolResult::structured(value.clone())
                };
                out.content = vec![
                    ContentBlock::text(outcome.message.clone()),
                    ContentBlock::text(value.to_string()),
                ];
                Ok(out)
            }
            Err(
                e @ (RemediationError::InvalidParam { .. }
                | RemediationError::UnknownAction { .. }
                | RemediationError::OutsideSandbox(_)),
            ) => Err(ErrorData::invalid_params(e.to_string(), None)),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
                e.to_string(),
            )])),
        }
    }
}
