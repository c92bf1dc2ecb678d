//! Chaos: real, reversible faults injected into the sandbox.
//!
//! Responsible for: the fault catalogue ([`ChaosEngine::catalogue`]), each fault's
//! `prepare → inject → verify_effect → revert` shape, leases (TTL) with an auto-revert
//! that a scorer can suspend, the write-ahead ledger (`$STATE/chaos/faults/{id}.json`,
//! written and fsynced *before* a fault is applied, holding what must be undone) and the
//! reaper ([`ChaosEngine::reap`]) that replays it at every daemon start. The HTTP routes
//! ([`control::router`]) and their client ([`control::ChaosClient`]) let the CLI and a
//! stdio MCP server drive the engine that lives in the daemon: faults that hold database
//! sessions must live in a long-lived process.
//!
//! Not responsible for: starting or supervising services (that is `aiops-sandbox`, used
//! through its [`aiops_sandbox::Runtime`] trait), nor fixing what a fault broke (that is
//! `aiops-remediation`).
//!
//! **Invariant:** the blast radius is the sandbox: its own services (through the runtime),
//! its own database (through the sandbox's admin and app roles), its own state dir.

pub mod control;
mod ctx;
mod engine;
mod faults;
mod ledger;
mod params;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use control::ChaosClient;
pub use engine::ChaosEngine;

/// One entry of the fault catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FaultInfo {
    /// The name to pass as `fault` in an inject request, e.g. `db_pool_exhaustion`.
    pub id: String,
    /// The failure class (the first part of the ground-truth label).
    pub class: String,
    /// The sandbox service the fault acts on.
    pub target: String,
    /// What the fault does and what it looks like, for a model choosing one.
    pub description: String,
    /// Lease used when the request names no `ttl_s`; expiry reverts the fault.
    pub default_ttl_s: u64,
    /// JSON schema of `params`.
    pub params_schema: Value,
    /// The value each parameter takes when omitted.
    pub defaults: Value,
}

/// A request to inject one fault.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// Fault name from the catalogue, e.g. `db_pool_exhaustion`.
    pub fault: String,
    /// Fault parameters; see the fault's `params_schema`. Omitted ones take their defaults.
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
    /// Lease in seconds (1..=3600); when it expires the fault is reverted. Default: the
    /// fault's `default_ttl_s`.
    pub ttl_s: Option<u64>,
    /// Only say what would be done; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Check that the symptom is observable before returning (bounded wait, ≤ 15 s).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl InjectRequest {
    /// A request with default parameters, TTL and verification.
    pub fn new(fault: impl Into<String>) -> Self {
        Self {
            fault: fault.into(),
            params: serde_json::Map::new(),
            ttl_s: None,
            dry_run: false,
            verify: true,
        }
    }
}

/// What an inject did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InjectOutcome {
    pub dry_run: bool,
    /// Exactly what is (or would be) done, step by step.
    pub plan: Vec<String>,
    /// The ledger record; `None` for a dry run.
    pub record: Option<FaultRecord>,
    /// The effect check; `None` for a dry run or when `verify` was false.
    pub effect: Option<EffectCheck>,
}

/// Whether a fault's symptom was seen through the signals observation tools read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EffectCheck {
    pub verified: bool,
    /// What was observed (status codes, error codes, service states, lock counts).
    pub observed: String,
    pub waited_ms: u64,
}

/// The hidden ground truth of a fault, for scoring a diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GroundTruth {
    pub class: String,
    /// The component at fault: `postgres`, `target-app`, `upstream-primary`, `cache`, `config`.
    pub component: String,
    pub mechanism: String,
}

/// One fault as the ledger knows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FaultRecord {
    /// Unique id, e.g. `f-3a9c0e12b4d7`.
    pub id: String,
    /// Catalogue name.
    pub fault: String,
    pub class: String,
    pub target: String,
    /// Parameters with defaults filled in.
    pub params: Value,
    /// `injecting`, `active`, `reverting`, `reverted`, `revert_failed` or `expired`.
    pub state: String,
    pub injected_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// Lease expiry reverts the fault; a scorer may suspend this during a scored window.
    pub auto_revert: bool,
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended: `stopped`, `lease expired`, `reaped ...`, `inject failed ...`.
    pub end_reason: Option<String>,
    pub label: GroundTruth,
    /// The last error (a failed inject or revert).
    pub error: Option<String>,
}

/// Record states.
pub mod states {
    pub const INJECTING: &str = "injecting";
    pub const ACTIVE: &str = "active";
    pub const REVERTING: &str = "reverting";
    pub const REVERTED: &str = "reverted";
    pub const REVERT_FAILED: &str = "revert_failed";
    pub const EXPIRED: &str = "expired";
}

impl FaultRecord {
    /// Reverted or expired: nothing is left to undo.
    pub fn is_ended(&self) -> bool {
        self.state == states::REVERTED || self.state == states::EXPIRED
    }
}

/// What can go wrong when injecting, reverting or listing faults.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    #[error("unknown fault `{name}`; known faults: {}", known.join(", "))]
    UnknownFault { name: String, known: Vec<String> },
    #[error("invalid parameter `{field}`: {message}")]
    InvalidParam { field: String, message: String },
    #[error("unknown fault id `{0}`")]
    UnknownId(String),
    #[error("fault `{0}` is not active")]
    NotActive(String),
    #[error("ledger error: {0}")]
    Ledger(String),
    #[error("inject failed: {0}")]
    Inject(String),
    #[error("revert failed: {0}")]
    Revert(String),
    #[error("{0}")]
    Other(String),
}
