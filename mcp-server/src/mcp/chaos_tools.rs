//! Chaos tools: break the sandbox on purpose, with leases. Registered only when the server
//! runs with `--allow-chaos`. Every call goes through the daemon's chaos API, since faults
//! that hold database sessions must live in the long-lived daemon.
//!
//! The ground-truth label of a fault is never shown here: an agent under test must find
//! the cause itself.

use aiops_chaos::{FaultInfo, FaultRecord, InjectRequest};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::AiopsServer;

#[derive(Debug, Serialize, JsonSchema)]
pub struct FaultCatalogue {
    /// Every fault that can be injected, with its parameters and default lease.
    pub faults: Vec<FaultInfo>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FaultStatusList {
    /// Active faults first, then recently ended ones.
    pub faults: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosInjectArgs {
    /// Fault id from `chaos_list_faults`, e.g. `db_pool_exhaustion`, `latency`, `api_down`.
    pub fault: String,
    /// Fault parameters as an object; omitted ones take their defaults (see the fault's
    /// `params_schema` in `chaos_list_faults`).
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Lease in seconds (1–3600). When it expires the fault is reverted automatically.
    /// Default: the fault's own default lease.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    /// When true, only return the exact plan of what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosStopArgs {
    /// The id of the fault to revert (from `chaos_inject` or `chaos_status`).
    #[serde(default)]
    pub id: Option<String>,
    /// Revert every active fault instead of one.
    #[serde(default)]
    pub all: bool,
}

/// The label is ground truth: never shown to an agent.
fn redact(record: &FaultRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("label");
    }
    v
}

fn ok(summary: String, value: serde_json::Value) -> Result<CallToolResult, ErrorData> {
    let mut out = CallToolResult::structured(value.clone());
    out.content = vec![
        ContentBlock::text(summary),
        ContentBlock::text(value.to_string()),
    ];
    Ok(out)
}

fn failed(e: impl std::fmt::Display) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        e.to_string(),
    )]))
}

#[tool_router(router = chaos_router, vis = "pub(crate)")]
impl AiopsServer {
    #[tool(
        description = "List the faults this sandbox can inject: id, class, which service it \
targets, what it does, its parameters (JSON schema with defaults) and its default lease. \
Read-only.",
        output_schema = super::output_schema::<FaultCatalogue>(),
        annotations(
            title = "List chaos faults",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn chaos_list_faults(&self) -> Result<CallToolResult, ErrorData> {
        let faults = aiops_chaos::ChaosEngine::catalogue();
        let summary = format!(
            "{} faults: {}",
            faults.len(),
            faults
                .iter()
                .map(|f| f.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ok(
            summary,
            serde_json::to_value(FaultCatalogue { faults }).unwrap_or_default(),
        )
    }

    #[tool(
        description = "Inject a real, reversible fault into the sandbox (for drills and \
demos): e.g. exhaust the database pool, rotate the app's DB password, stop PostgreSQL, hold \
a table lock, kill the API, add latency. The fault holds a lease and is reverted \
automatically when it expires, or by `chaos_stop`. With `dry_run: true` it only returns the \
exact plan. This breaks the system on purpose: use only when asked to run a drill.",
        output_schema = super::output_schema::<aiops_chaos::InjectOutcome>(),
        annotations(
            title = "Inject a fault",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn chaos_inject(
        &self,
        Parameters(args): Parameters<ChaosInjectArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(client) = self.chaos_client() else {
            return failed("the sandbox is not running; start it with `aiops up`");
        };
        let req = InjectRequest {
            fault: args.fault,
            params: args.params,
            ttl_s: args.ttl_s,
            dry_run: args.dry_run,
            verify: true,
        };
        match client.inject(&req).await {
            Ok(outcome) => {
                let mut value = serde_json::to_value(&outcome).unwrap_or_default();
                if let Some(r) = &outcome.record {
                    value["record"] = redact(r);
                }
                let summary = match (&outcome.record, outcome.dry_run) {
                    (_, true) => format!("Dry run; would do: {}", outcome.plan.join("; ")),
                    (Some(r), false) => format!(
                        "Injected {} as {} (lease until {}).",
                        r.fault, r.id, r.lease_expires_at
                    ),
                    (None, false) => "Nothing injected.".to_string(),
                };
                ok(summary, value)
            }
            Err(e) => match e {
                aiops_chaos::ChaosError::UnknownFault { .. }
                | aiops_chaos::ChaosError::InvalidParam { .. } => {
                    Err(ErrorData::invalid_params(e.to_string(), None))
                }
                other => failed(other),
            },
        }
    }

    #[tool(
        description = "Faults currently injected (and recently ended): id, fault, target \
service, state, when the lease expires, how it ended. Read-only.",
        output_schema = super::output_schema::<FaultStatusList>(),
        annotations(
            title = "Chaos status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn chaos_status(&self) -> Result<CallToolResult, ErrorData> {
        let Some(client) = self.chaos_client() else {
            return failed("the sandbox is not running; start it with `aiops up`");
        };
        match client.status().await {
            Ok(records) => {
                let active = records.iter().filter(|r| r.state == "active").count();
                let summary = format!("{active} active fault(s), {} listed.", records.len());
                let faults = records.iter().map(redact).collect();
                ok(
                    summary,
                    serde_json::to_value(FaultStatusList { faults }).unwrap_or_default(),
                )
            }
            Err(e) => failed(e),
        }
    }

    #[tool(
        description = "Revert an injected fault now (by `id`), or every active fault \
(`all: true`). Safe to repeat: stopping an already reverted fault changes nothing.",
        output_schema = super::output_schema::<FaultStatusList>(),
        annotations(
            title = "Stop a fault",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn chaos_stop(
        &self,
        Parameters(args): Parameters<ChaosStopArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let Some(client) = self.chaos_client() else {
            return failed("the sandbox is not running; start it with `aiops up`");
        };
        let result = match (&args.id, args.all) {
            (Some(_), true) | (None, false) => {
                return Err(ErrorData::invalid_params(
                    "give either `id` (one fault) or `all: true` (every active fault)",
                    None,
                ));
            }
            (Some(id), false) => client.stop(id).await.map(|r| vec![r]),
            (None, true) => client.stop_all().await,
        };
        match result {
            Ok(records) => {
                let summary = format!("{} fault(s) reverted or already ended.", records.len());
                let faults = records.iter().map(redact).collect();
                ok(
                    summary,
                    serde_json::to_value(FaultStatusList { faults }).unwrap_or_default(),
                )
            }
            Err(e @ aiops_chaos::ChaosError::UnknownId(_)) => {
                Err(ErrorData::invalid_params(e.to_string(), None))
            }
            Err(e) => failed(e),
        }
    }
}
