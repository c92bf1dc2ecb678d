//! Runbooks over MCP: `search_runbooks` (BM25) here; the `runbook://{id}` resources are
//! served by the `ServerHandler` impl in `mod.rs`.

use std::sync::LazyLock;

use aiops_runbooks::{Hit, Index};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AiopsServer;

/// The shipped runbooks, indexed once per process.
pub(crate) static RUNBOOKS: LazyLock<Index> =
    LazyLock::new(|| Index::new(aiops_runbooks::library()));

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRunbooksArgs {
    /// What you are seeing or suspect, in words or error codes, e.g. "DB_POOL_TIMEOUT pool
    /// exhausted" or "upstream 503 prices failing". 1–500 characters.
    pub query: String,
    /// How many runbooks to return, best first (default 5, at most 20).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunbookSearchResult {
    pub query: String,
    /// Best first. Read one in full as the resource `runbook://{id}`.
    pub hits: Vec<Hit>,
    /// Runbooks in the library.
    pub library_size: usize,
}

#[tool_router(router = runbook_router, vis = "pub(crate)")]
impl AiopsServer {
    #[tool(
        description = "Full-text search (BM25) over the operational runbooks: one per failure \
class (database pool exhausted, authentication failure, database down, lock contention, \
long transaction, API down, crash loop, high latency, high CPU, memory leak, disk full, \
config corruption, cache poisoning, upstream outage, failed migration, log storm, token \
rejections). Returns ranked runbooks with a matching snippet; read the chosen one in full as \
the resource `runbook://{id}`: its front matter lists symptoms, diagnosis steps, the \
remediation steps (tool + arguments + verification), escalation and prevention. Read-only.",
        output_schema = super::output_schema::<RunbookSearchResult>(),
        annotations(
            title = "Search runbooks",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn search_runbooks(
        &self,
        Parameters(args): Parameters<SearchRunbooksArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let query = args.query.trim();
        if query.is_empty() || query.chars().count() > 500 {
            return Err(ErrorData::invalid_params(
                "invalid argument `query`: give 1 to 500 characters",
                None,
            ));
        }
        let limit = args.limit.unwrap_or(5);
        if !(1..=20).contains(&limit) {
            return Err(ErrorData::invalid_params(
                format!("invalid argument `limit`: {limit} is outside 1..=20"),
                None,
            ));
        }
        let hits = RUNBOOKS.search(query, limit as usize);
        let summary = if hits.is_empty() {
            format!("No runbook matches `{query}`.")
        } else {
            format!(
                "{} runbook(s) for `{query}`: {}",
                hits.len(),
                hits.iter()
                    .map(|h| format!("{} ({:.2})", h.id, h.score))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let result = RunbookSearchResult {
            query: query.to_string(),
            hits,
            library_size: RUNBOOKS.runbooks().count(),
        };
        let value = serde_json::to_value(&result)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let mut out = CallToolResult::structured(value.clone());
        out.content = vec![
            ContentBlock::text(summary),
            ContentBlock::text(value.to_string()),
        ];
        Ok(out)
    }
}
