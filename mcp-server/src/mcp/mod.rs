//! The MCP surface: one server struct whose tool routers are split by area, plus prompts.
//!
//! **Boundary:** this is the only module in the workspace that speaks MCP. Tools call
//! library crates (`aiops-observe` today; chaos and remediation later) and translate
//! their results: structured content with an output schema plus a short text for a person;
//! a malformed argument is a protocol error (`invalid_params`); a failure the model should
//! read and react to (no sandbox running, database unreachable) is a tool result with
//! `isError: true`.

mod chaos_tools;
mod observe_tools;
mod prompts;

use aiops_observe::{ObserveError, Observer, Summary};
use aiops_sandbox::StateDir;
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, prompt_handler, tool_handler};

/// What the server tells an agent at initialisation.
pub const INSTRUCTIONS: &str = "\
aiops lets you operate a small production-like system running in a local sandbox: a shop \
API called `target-app` (Rust, axum) backed by a private PostgreSQL database, two pricing \
upstreams (`upstream-primary`, `upstream-fallback`) and a background job `worker`.

How to work:
1. Start every investigation with `incident_snapshot`: one call that gathers service \
states, health probes, metrics over the last minute, recent error codes from the logs, \
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
}

/// The `aiops` MCP server.
#[derive(Clone)]
pub struct AiopsServer {
    observer: Observer,
    state: StateDir,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl AiopsServer {
    pub fn new(observer: Observer, state: StateDir, options: &ServerOptions) -> Self {
        let mut tool_router = Self::observe_router();
        if options.allow_chaos {
            tool_router += Self::chaos_router();
        }
        Self {
            observer,
            state,
            tool_router,
            prompt_router: Self::prompt_router(),
        }
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
                .build(),
        )
        .with_server_info(
            Implementation::new("aiops", env!("CARGO_PKG_VERSION"))
                .with_title("aiops: operate a sandboxed mini-production system"),
        )
        .with_instructions(INSTRUCTIONS.to_string())
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
