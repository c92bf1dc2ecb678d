//! The MCP surface: one server struct whose tool routers are split by area, plus prompts.
//!
//! **Boundary:** this is the only module in the workspace that speaks MCP. Tools call
//! library crates (`aiops-observe` today; chaos and remediation later) and translate
//! their results: structured content with an output schema plus a short text for a person;
//! a malformed argument is a protocol error (`invalid_params`); a failure the model should
//! read and react to (no sandbox running, database unreachable) is a tool result with
//! `isError: true`.

#[cfg(test)]
mod arg_fuzz;
mod chaos_tools;
mod observe_tools;
mod prompts;
mod remediation_tools;
mod report_tools;
mod runbook_tools;

use aiops_observe::{ObserveError, Observer, Summary};
use std::sync::Arc;

use aiops_sandbox::events::EventLog;
use aiops_sandbox::{Runtime, StateDir};
use rmcp::RoleServer;
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, ServerHandler, prompt_handler, tool_handler};

/// What the server tells an agent at initialisation.
pub const INSTRUCTIONS: &str = "\
aiops lets you operate a small production-like system running in a local sandbox: a shop \
API called `target-app` (Rust, axum) backed by a private PostgreSQL database, two pricing \
upstreams (`upstream-primary`, `upstream-fallback`) and a background job `worker`.

How to work:
1. Start every investigation with `incident_snapshot`: one call that gathers service \
states, health probes, metrics over the last 20 s, recent error codes from the logs, \
database sessions and locks, disk and config, and lists anomalies with evidence.
2. Drill down with the focused tools: `check_health`, `get_metrics` (rates, error %, \
latency percentiles, pool use), `query_logs` (filter by service, level, error code, regex, \
time), `db_diagnostics` (sessions by application, blocking lock chains, idle-in-transaction \
sessions, migrations), `process_stats`, `disk_usage`, `inspect_config` (the target's .env \
validated and diffed against last-known-good), `list_events` (timeline of starts, exits, \
restarts and health changes), `sandbox_status`.
3. Name the cause with evidence before acting, and after any change verify with \
`check_health` and `get_metrics` that the system is healthy again.

All observation tools are read-only and safe to call at any time. Lists are paginated: \
when a result says `truncated: true`, pass its `next_cursor` to get more. Secrets \
(passwords, tokens, signing keys) are never shown.";

/// What a server instance may expose.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Register the chaos tools (`--allow-chaos`).
    pub allow_chaos: bool,
    /// Hide every tool that changes anything (`--read-only`).
    pub read_only: bool,
    /// Exam mode, for an agent under test (`aiops drill`, `/exam/mcp`, `serve --exam`):
    /// no chaos tools whatever `allow_chaos` says, and observation that leaves out the
    /// fault-injection machinery ([`Observer::for_exam`]). No tool or resource of this
    /// server returns a fault's ground-truth label in any mode.
    pub exam: bool,
}

/// The `aiops` MCP server.
#[derive(Clone)]
pub struct AiopsServer {
    observer: Observer,
    state: StateDir,
    runtime: Arc<dyn Runtime>,
    events: Arc<EventLog>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl AiopsServer {
    pub fn new(
        observer: Observer,
        state: StateDir,
        runtime: Arc<dyn Runtime>,
        events: Arc<EventLog>,
        options: &ServerOptions,
    ) -> Self {
        let mut tool_router = Self::observe_router()
            + Self::runbook_router()
            + Self::report_router()
            + remediation_tools::remediation_router(options.read_only);
        if options.allow_chaos && !options.read_only && !options.exam {
            tool_router += Self::chaos_router();
        }
        let observer = if options.exam {
            observer.for_exam()
        } else {
            observer
        };
        Self {
            observer,
            state,
            runtime,
            events,
            tool_router,
            prompt_router: Self::prompt_router(),
        }
    }

    /// The remediation library for this sandbox; the policy file is read at each call, so
    /// an edit to `aiops.toml` applies at once (and a broken one is reported, not ignored).
    fn remediator(
        &self,
    ) -> Result<aiops_remediation::Remediator, aiops_remediation::RemediationError> {
        aiops_remediation::Remediator::new(
            self.state.clone(),
            self.runtime.clone(),
            self.events.clone(),
        )
    }

    /// The daemon's chaos API, when a daemon runs.
    fn chaos_client(&self) -> Option<aiops_chaos::ChaosClient> {
        aiops_chaos::ChaosClient::from_state(&self.state).ok()
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for AiopsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("aiops", env!("CARGO_PKG_VERSION"))
                .with_title("aiops: operate a sandboxed mini-production system"),
        )
        .with_instructions(INSTRUCTIONS.to_string())
    }

    /// The tool router's call, counted by tool and outcome for `/metrics`.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let tool = request.name.to_string();
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let result = self.tool_router.call(tcc).await;
        let outcome = match &result {
            Ok(rmcp::model::CallToolResponse::Complete(r)) if r.is_error == Some(true) => "error",
            Ok(rmcp::model::CallToolResponse::Complete(_)) => "ok",
            Ok(_) => "input_required",
            Err(_) => "invalid",
        };
        // An unknown tool name is counted under one label, so a client cannot grow the
        // label set at will.
        let known = self.tool_router.has_route(&tool);
        crate::control_metrics::METRICS.tool_call(if known { &tool } else { "(unknown)" }, outcome);
        result
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let mut resources: Vec<Resource> = vec![
            Resource::new("audit://log", "audit-log")
                .with_title("Audit log")
                .with_description(
                    "The last 200 audit entries, JSON lines: every remediation action, dry \
                     run and refusal, with caller, arguments (secrets redacted), policy \
                     decision, result and verification.",
                )
                .with_mime_type("application/jsonl"),
        ];
        resources.extend(
            aiops_sandbox::incidents::reports(&self.state)
                .into_iter()
                .take(200)
                .map(|r| {
                    Resource::new(format!("incident://{}", r.id), r.id.clone())
                        .with_title(r.title.clone())
                        .with_description(format!(
                            "Incident report ({}), {}",
                            if r.resolved {
                                "resolved"
                            } else {
                                "not resolved"
                            },
                            r.created_at.format("%Y-%m-%d %H:%M UTC")
                        ))
                        .with_mime_type("text/markdown")
                }),
        );
        resources.extend(runbook_tools::RUNBOOKS.runbooks().map(|rb| {
            Resource::new(format!("runbook://{}", rb.id), rb.id.clone())
                .with_title(rb.title.clone())
                .with_description(format!(
                    "Runbook ({} severity, component {}) for: {}",
                    rb.severity,
                    rb.component,
                    if rb.fault_classes.is_empty() {
                        rb.id.clone()
                    } else {
                        rb.fault_classes.join(", ")
                    }
                ))
                .with_mime_type("text/markdown")
        }));
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("incident://{id}", "incident")
                .with_title("Incident report by id")
                .with_description("An incident report filed with `report_incident`, in Markdown.")
                .with_mime_type("text/markdown"),
            ResourceTemplate::new("runbook://{id}", "runbook")
                .with_title("Runbook by id")
                .with_description(
                    "A runbook in Markdown with YAML front matter (symptoms, diagnosis, \
                     remediation steps with tool arguments and verification, escalation, \
                     prevention). Find ids with `search_runbooks`.",
                )
                .with_mime_type("text/markdown"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri.as_str();
        if uri == "audit://log" {
            let lines = self
                .remediator()
                .and_then(|r| r.audit_tail(200))
                .map_err(|e| {
                    ErrorData::internal_error(format!("cannot read the audit log: {e}"), None)
                })?;
            let text = lines
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            return Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, uri).with_mime_type("application/jsonl"),
            ])
            .into());
        }
        if let Some(id) = uri.strip_prefix("incident://") {
            return match aiops_sandbox::incidents::report(&self.state, id) {
                Some((_, md)) => Ok(ReadResourceResult::new(vec![
                    ResourceContents::text(md, uri).with_mime_type("text/markdown"),
                ])
                .into()),
                None => Err(ErrorData::resource_not_found(
                    format!("no incident report `{id}`; list them with resources/list"),
                    None,
                )),
            };
        }
        let Some(id) = uri.strip_prefix("runbook://") else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "unknown resource `{uri}`: resources here are audit://log, runbook://{{id}} and incident://{{id}}"
                ),
                None,
            ));
        };
        match aiops_runbooks::raw(id) {
            Some(text) => Ok(ReadResourceResult::new(vec![
                ResourceContents::text(text, uri).with_mime_type("text/markdown"),
            ])
            .into()),
            None => Err(ErrorData::resource_not_found(
                format!(
                    "no runbook `{id}`; known: {}",
                    runbook_tools::RUNBOOKS
                        .runbooks()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            )),
        }
    }
}

/// Turn a library result into a tool result: a person's summary first, then the same
/// data as JSON text (for clients that ignore `structuredContent`), and the structure.
pub(crate) fn tool_result<T>(result: Result<T, ObserveError>) -> Result<CallToolResult, ErrorData>
where
    T: serde::Serialize + Summary,
{
    match result {
        Ok(report) => {
            let value = serde_json::to_value(&report).map_err(|e| {
                ErrorData::internal_error(format!("cannot encode result: {e}"), None)
            })?;
            let mut out = CallToolResult::structured(value.clone());
            out.content = vec![
                ContentBlock::text(report.summary()),
                ContentBlock::text(value.to_string()),
            ];
            Ok(out)
        }
        Err(e @ ObserveError::InvalidArgument { .. }) => {
            Err(ErrorData::invalid_params(e.to_string(), None))
        }
        Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
            e.to_string(),
        )])),
    }
}

/// The output schema of `T`, with boolean sub-schemas (`true`, which schemars emits for a
/// free-form JSON value) written as the equivalent `{}`: some clients validate tool
/// schemas strictly and reject the boolean form.
pub(crate) fn output_schema<T: schemars::JsonSchema + std::any::Any>()
-> Arc<rmcp::model::JsonObject> {
    fn normalize(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    let holds_schemas = matches!(
                        key.as_str(),
                        "properties" | "$defs" | "definitions" | "patternProperties"
                    );
                    if holds_schemas {
                        if let serde_json::Value::Object(schemas) = child {
                            for s in schemas.values_mut() {
                                if s.is_boolean() {
                                    *s = serde_json::json!({});
                                } else {
                                    normalize(s);
                                }
                            }
                        }
                    } else if matches!(key.as_str(), "items" | "additionalProperties")
                        && child.as_bool() == Some(true)
                    {
                        *child = serde_json::json!({});
                    } else {
                        normalize(child);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
            _ => {}
        }
    }
    let mut value = serde_json::Value::Object(
        rmcp::handler::server::common::schema_for_output::<T>()
            .as_ref()
            .clone(),
    );
    normalize(&mut value);
    match value {
        serde_json::Value::Object(map) => Arc::new(map),
        // normalize() never changes the top level's kind.
        _ => rmcp::handler::server::common::schema_for_output::<T>(),
    }
}
