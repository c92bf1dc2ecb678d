//! Remediation: safe actions an agent may take to fix the sandbox.
//!
//! Responsible for: every action's one shape — `plan` (the dry-run answer) → policy check
//! (`aiops.toml`, see [`policy`]) → approval gate → audit line written and fsynced
//! *before* acting → `execute` → `verify` (the action's own success condition) → audit
//! line with the result and before/after figures — plus approvals, the restart rate limit
//! and the append-only audit log. All shared state is in files under the state dir
//! (`audit/`, `approvals/`, `remediation/`, `snapshots/`), so the daemon, a stdio MCP
//! server and the `aiops approve` CLI can each hold their own [`Remediator`].
//!
//! **Invariant:** nothing outside the sandbox is touched: services by name from the
//! topology, pids only inside a service's process tree, files only under the state dir,
//! database sessions only of the sandbox's cluster. **Invariant:** no secret value appears
//! in a plan, an outcome, the audit log or a log line.
//!
//! Not responsible for: speaking MCP (that is `mcp-server`), nor injecting faults (that is
//! `aiops-chaos`).

pub mod actions;
mod audit;
mod ctx;
mod params;
pub mod policy;
mod recovery;

use std::sync::Arc;
use std::time::Instant;

use aiops_sandbox::events::EventLog;
use aiops_sandbox::{Runtime, StateDir};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use audit::Approval;
pub use policy::{Mode, Policy};

/// What went wrong. Refusals by policy are not errors: they are an [`ActionOutcome`] with
/// status `refused`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemediationError {
    #[error("unknown action `{name}`; known actions: {}", known.join(", "))]
    UnknownAction { name: String, known: Vec<String> },
    #[error("invalid parameter `{field}`: {message}")]
    InvalidParam { field: String, message: String },
    #[error("outside the sandbox: {0}")]
    OutsideSandbox(String),
    #[error("cannot write the audit log, refusing to act: {0}")]
    Audit(String),
    #[error("unknown approval `{0}`")]
    UnknownApproval(String),
    #[error("{0}")]
    Other(String),
}

/// Static description of one action (one MCP tool each).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ActionInfo {
    pub name: String,
    pub title: String,
    /// Written for a model that never saw the code: what, when, what it changes.
    pub description: String,
    /// JSON schema of `params` (an object, `additionalProperties: false`).
    pub params_schema: Value,
    pub destructive: bool,
    pub read_only: bool,
    pub idempotent: bool,
    /// `auto`, `approve` or `deny` when `aiops.toml` says nothing.
    pub default_policy: String,
}

/// A request to run an action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ActionRequest {
    pub action: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Only plan: say exactly what would be done, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The id of an approved approval, for actions the policy gates.
    #[serde(default)]
    pub approval_id: Option<String>,
}

impl ActionRequest {
    pub fn new(action: impl Into<String>, params: Value) -> Self {
        Self {
            action: action.into(),
            params: params.as_object().cloned().unwrap_or_default(),
            dry_run: false,
            approval_id: None,
        }
    }
}

/// Who asks.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// MCP client name, `cli`, `agent`.
    pub client: String,
    pub session: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Dry run: the plan only.
    Planned,
    Executed,
    /// Executed, but it failed or its verification did not pass.
    Failed,
    /// Not run: policy, rate limit, capability or a precondition said no.
    Refused,
    PendingApproval,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planned => "planned",
            Self::Executed => "executed",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::PendingApproval => "pending_approval",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub target: String,
    pub steps: Vec<String>,
    pub expected_effect: String,
    /// `low`, `medium` or `high`.
    pub risk: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PolicyDecision {
    /// `auto`, `approve`, `deny`, `rate_limited` or `read_only`.
    pub decision: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub observed: String,
    pub expected: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Verification {
    pub fn of(checks: Vec<Check>) -> Self {
        Self {
            passed: !checks.is_empty() && checks.iter().all(|c| c.passed),
            checks,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ActionOutcome {
    pub action: String,
    pub status: Status,
    pub plan: Plan,
    pub policy: PolicyDecision,
    pub approval_id: Option<String>,
    pub verification: Option<Verification>,
    pub before: Value,
    pub after: Value,
    /// One line for a person.
    pub message: String,
    pub audit_id: String,
    pub duration_ms: u64,
}

struct Inner {
    state: StateDir,
    runtime: Arc<dyn Runtime>,
    events: Arc<EventLog>,
    policy: Policy,
    audit: audit::AuditLog,
    approvals: audit::Approvals,
}

/// Runs actions on one sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Remediator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Remediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remediator")
            .field("state", &self.inner.state.root())
            .finish()
    }
}

/// The service an action's params name, for the event timeline.
fn service_of(params: &Map<String, Value>) -> Option<String> {
    params
        .get("service")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

impl Remediator {
    /// Loads the policy from `$STATE/aiops.toml` (defaults when absent).
    pub fn new(
        state: StateDir,
        runtime: Arc<dyn Runtime>,
        events: Arc<EventLog>,
    ) -> Result<Self, RemediationError> {
        let policy = Policy::load(&state.config_file())?;
        let audit = audit::AuditLog::new(&state.root().join("audit"), &state.secrets_dir());
        let approvals = audit::Approvals::new(state.root().join("approvals"));
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                runtime,
                events,
                policy,
                audit,
                approvals,
            }),
        })
    }

    /// Every action, with its schema and default policy.
    pub fn actions() -> Vec<ActionInfo> {
        actions::catalogue()
    }

    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Path of the audit log.
    pub fn audit_path(&self) -> std::path::PathBuf {
        self.inner.audit.path().to_path_buf()
    }

    /// The last `n` audit lines, oldest first.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<Value>, RemediationError> {
        Ok(self.inner.audit.tail(n))
    }

    /// Approvals still waiting for a decision.
    pub fn pending_approvals(&self) -> Result<Vec<Approval>, RemediationError> {
        Ok(self
            .inner
            .approvals
            .all()
            .into_iter()
            .filter(|a| a.state == "pending")
            .collect())
    }

    /// Approve or deny a pending approval.
    pub fn decide(
        &self,
        approval_id: &str,
        approve: bool,
        by: &str,
    ) -> Result<Approval, RemediationError> {
        let mut a = self.inner.approvals.get(approval_id)?;
        if a.state != "pending" {
            return Err(RemediationError::Other(format!(
                "approval {approval_id} is already {}",
                a.state
            )));
        }
        a.state = if approve { "approved" } else { "denied" }.into();
        a.decided_by = Some(by.to_string());
        a.decided_at = Some(Utc::now());
        self.inner.approvals.save(&a)?;
        self.inner.audit.append(&json!({
            "time": Utc::now(), "event": "approval_decided", "approval_id": a.id,
            "action": a.action, "state": a.state, "decided_by": by,
        }))?;
        self.inner.events.record(
            "approval_decided",
            None,
            format!("{} {} by {by}", a.action, a.state),
        );
        Ok(a)
    }

    /// The steady-state check of `verify_recovery` over a `window_s` window, for a
    /// scorer watching the sandbox (the drill harness): the same checks, but not an
    /// action, so not audited and invisible to the agent being scored.
    pub async fn steady_state(&self, window_s: u64) -> Verification {
        let ctx = match ctx::Ctx::new(self.inner.state.clone(), self.inner.runtime.clone()).await {
            Ok(c) => c,
            Err(e) => {
                return Verification::of(vec![Check {
                    name: "sandbox".into(),
                    passed: false,
                    observed: e,
                    expected: "the sandbox answers".into(),
                }]);
            }
        };
        let mut params = Map::new();
        params.insert("window_s".into(), json!(window_s.clamp(1, 60)));
        let (checks, _) = recovery::verify_recovery(&ctx, &params).await;
        Verification::of(checks)
    }

    /// Start the restart rate-limit windows afresh, with an audit line saying who and why
    /// (a drill resets the sandbox between trials; earlier trials' restarts are not a
    /// restart loop of this one).
    pub fn reset_rate_windows(&self, by: &str, reason: &str) -> Result<(), RemediationError> {
        self.inner.audit.append(&json!({
            "time": Utc::now(),
            "event": audit::RATE_WINDOW_RESET,
            "client": by,
            "reason": reason,
        }))
    }

    /// Every line of the audit log, oldest first (lines that do not parse are skipped).
    pub fn audit_all(&self) -> Vec<Value> {
        self.inner.audit.read_all()
    }

    /// Run one action through plan → policy → audit → execute → verify.
    pub async fn run(
        &self,
        req: ActionRequest,
        caller: Caller,
    ) -> Result<ActionOutcome, RemediationError> {
        let started = Instant::now();
        let audit_id = new_id("au");
        let inner = &self.inner;
        let caller_json = json!({"client": caller.client, "session": caller.session});
        let redacted = audit::redact_params(&req.params);
        let base = json!({
            "audit_id": audit_id, "client": caller.client, "session": caller.session,
            "action": req.action, "params": redacted, "dry_run": req.dry_run,
            "approval_id": req.approval_id,
        });
        let audit_line = |event: &str, extra: Value| -> Result<(), RemediationError> {
            let mut line = base.clone();
            line["time"] = json!(Utc::now());
            line["event"] = json!(event);
            if let (Some(l), Some(e)) = (line.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    l.insert(k.clone(), v.clone());
                }
            }
            inner.audit.append(&line)
        };
        // Bad input: audited as refused, then the error.
        let refuse_err = |e: RemediationError| -> RemediationError {
            let logged = audit_line(
                "started",
                json!({"policy": {"decision": "refused", "reason": e.to_string()}}),
            )
            .and_then(|_| {
                audit_line(
                    "finished",
                    json!({"status": "refused", "error": e.to_string(),
                           "duration_ms": started.elapsed().as_millis() as u64}),
                )
            });
            match logged {
                Err(a) => a,
                Ok(()) => e,
            }
        };
        let Some(info) = actions::catalogue()
            .into_iter()
            .find(|a| a.name == req.action)
        else {
            return Err(refuse_err(RemediationError::UnknownAction {
                name: req.action.clone(),
                known: actions::names().iter().map(|s| s.to_string()).collect(),
            }));
        };
        let params = match params::validate(actions::param_specs(&info.name), &req.params) {
            Ok(p) => p,
            Err(e) => return Err(refuse_err(e)),
        };
        let ctx = match ctx::Ctx::new(inner.state.clone(), inner.runtime.clone()).await {
            Ok(c) => c,
            Err(e) => return Err(refuse_err(RemediationError::Other(e))),
        };

        // Plan (read-only).
        let planned = match actions::plan(&info.name, &ctx, &params).await {
            Ok(p) => p,
            Err(actions::PlanError::Err(e)) => return Err(refuse_err(e)),
            Err(actions::PlanError::Refuse(reason)) => {
                let decision = PolicyDecision {
                    decision: inner.policy.mode(&info.name).as_str().into(),
                    reason: "allowed by policy".into(),
                };
                return self.finish_without_acting(
                    &audit_line,
                    &info.name,
                    Status::Refused,
                    Plan::default(),
                    decision,
                    None,
                    Value::Null,
                    reason,
                    &audit_id,
                    started,
                );
            }
        };

        // Policy.
        let mode = inner.policy.mode(&info.name);
        let mut decision = PolicyDecision {
            decision: mode.as_str().into(),
            reason: match mode {
                Mode::Auto => "allowed by policy (auto)".into(),
                Mode::Approve => "policy requires a person's approval".into(),
                Mode::Deny => format!(
                    "policy denies {} ([policy.actions] in aiops.toml)",
                    info.name
                ),
            },
        };
        if info.read_only {
            decision = PolicyDecision {
                decision: "auto".into(),
                reason: "read-only action: always allowed".into(),
            };
        }
        if req.dry_run {
            return self.finish_without_acting(
                &audit_line,
                &info.name,
                Status::Planned,
                planned.plan,
                decision,
                None,
                planned.before,
                "dry run: nothing was changed".into(),
                &audit_id,
                started,
            );
        }
        let refusal =
            |decision: PolicyDecision, message: String| (Status::Refused, decision, message);
        let mut blocked = None;
        if !info.read_only {
            if inner.policy.read_only {
                blocked = Some(refusal(
                    PolicyDecision {
                        decision: "read_only".into(),
                        reason: "the policy is read-only ([policy] read_only = true)".into(),
                    },
                    format!(
                        "refused: {} changes the sandbox and the policy is read-only",
                        info.name
                    ),
                ));
            } else if mode == Mode::Deny {
                let msg = format!("refused: {}", decision.reason);
                blocked = Some(refusal(decision.clone(), msg));
            } else if info.name == "restart_service" {
                let service = params["service"].as_str().unwrap_or_default();
                let rl = &inner.policy.rate_limits;
                let since = Utc::now() - chrono::Duration::seconds(rl.restart_window_s as i64);
                let recent = inner.audit.restarts_since(service, since);
                if recent.len() as u32 >= rl.restarts_per_service {
                    let reason = format!(
                        "restart loop: {service} was restarted {} times in the last {} s (limit {}); restarting again will not fix it — diagnose the cause",
                        recent.len(),
                        rl.restart_window_s,
                        rl.restarts_per_service
                    );
                    blocked = Some(refusal(
                        PolicyDecision {
                            decision: "rate_limited".into(),
                            reason: reason.clone(),
                        },
                        format!("refused: {reason}"),
                    ));
                }
            }
        }
        if let Some((status, decision, message)) = blocked {
            return self.finish_without_acting(
                &audit_line,
                &info.name,
                status,
                planned.plan,
                decision,
                None,
                planned.before,
                message,
                &audit_id,
                started,
            );
        }

        // Approval gate.
        let mut approval_used = None;
        if mode == Mode::Approve && !info.read_only {
            match &req.approval_id {
                None => {
                    let a = Approval {
                        id: new_id("ap"),
                        action: info.name.clone(),
                        params: audit::redact_params(&params),
                        caller: caller_json.clone(),
                        requested_at: Utc::now(),
                        state: "pending".into(),
                        decided_by: None,
                        decided_at: None,
                        executed_at: None,
                        plan: serde_json::to_value(&planned.plan).unwrap_or_default(),
                    };
                    inner.approvals.save(&a)?;
                    inner.events.record(
                        "approval_requested",
                        None,
                        format!("{} ({})", a.action, a.id),
                    );
                    let id = a.id.clone();
                    return self.finish_without_acting(
                        &audit_line,
                        &info.name,
                        Status::PendingApproval,
                        planned.plan,
                        decision,
                        Some(id.clone()),
                        planned.before,
                        format!("waiting for approval {id}: approve with `aiops approve {id}`, then call again with approval_id"),
                        &audit_id,
                        started,
                    );
                }
                Some(id) => {
                    let mut a = inner.approvals.get(id)?;
                    let problem = if a.action != info.name
                        || a.params != audit::redact_params(&params)
                    {
                        Some(format!(
                            "approval {id} was given for {} {} , not for this call",
                            a.action, a.params
                        ))
                    } else {
                        match a.state.as_str() {
                            "approved" => {
                                if inner.approvals.claim(id)? {
                                    None
                                } else {
                                    Some(format!("approval {id} was already used"))
                                }
                            }
                            "pending" => Some(format!("approval {id} is still pending")),
                            "denied" => Some(format!(
                                "approval {id} was denied by {}",
                                a.decided_by.as_deref().unwrap_or("someone")
                            )),
                            "executed" => Some(format!(
                                "approval {id} was already used: an approval runs its action once"
                            )),
                            other => Some(format!("approval {id} is {other}")),
                        }
                    };
                    if let Some(reason) = problem {
                        return self.finish_without_acting(
                            &audit_line,
                            &info.name,
                            Status::Refused,
                            planned.plan,
                            PolicyDecision {
                                decision: "approve".into(),
                                reason: reason.clone(),
                            },
                            Some(id.clone()),
                            planned.before,
                            format!("refused: {reason}"),
                            &audit_id,
                            started,
                        );
                    }
                    a.state = "executed".into();
                    a.executed_at = Some(Utc::now());
                    inner.approvals.save(&a)?;
                    decision.reason = format!(
                        "approved by {} ({id})",
                        a.decided_by.as_deref().unwrap_or("?")
                    );
                    approval_used = Some(id.clone());
                }
            }
        }

        // Audit before acting: no line, no action. Nothing ran, so an approval claimed for
        // this call is handed back rather than spent.
        if let Err(e) = audit_line(
            "started",
            json!({"policy": decision, "plan": planned.plan, "before": planned.before}),
        ) {
            if let Some(id) = &approval_used
                && let Err(error) = inner.approvals.release(id)
            {
                tracing::warn!(message = "Could not hand an unused approval back.", approval = %id, %error);
            }
            return Err(e);
        }
        let event_service = service_of(&params);
        inner.events.record(
            "action_started",
            event_service.as_deref(),
            format!("{} on {} ({audit_id})", info.name, planned.plan.target),
        );
        tracing::info!(message = "Action started.", action = %info.name, target = %planned.plan.target, %audit_id);

        let exec = actions::execute(&info.name, &ctx, &params, &planned).await;
        let (status, verification, after, message, error) = match exec {
            Ok(details) => {
                let (verification, after) =
                    actions::verify(&info.name, &ctx, &params, &planned, &details).await;
                let status = if verification.passed {
                    Status::Executed
                } else {
                    Status::Failed
                };
                let message = if verification.passed {
                    format!(
                        "{}: done and verified. {}",
                        info.name, planned.plan.expected_effect
                    )
                } else {
                    let failed: Vec<_> = verification
                        .checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| format!("{} ({})", c.name, c.observed))
                        .collect();
                    format!(
                        "{}: executed but verification failed: {}",
                        info.name,
                        failed.join("; ")
                    )
                };
                (status, Some(verification), after, message, None)
            }
            Err(e) => (
                Status::Failed,
                None,
                Value::Null,
                format!("{} failed: {e}", info.name),
                Some(e),
            ),
        };
        let message = audit::redact_values(&message, &inner.state.secrets_dir());
        let duration_ms = started.elapsed().as_millis() as u64;
        audit_line(
            "finished",
            json!({"status": status.as_str(), "policy": decision, "verification": verification,
                   "before": planned.before, "after": after, "error": error,
                   "duration_ms": duration_ms, "message": message}),
        )?;
        inner.events.record(
            "action_finished",
            event_service.as_deref(),
            format!(
                "{} {} in {duration_ms} ms ({audit_id})",
                info.name,
                status.as_str()
            ),
        );
        tracing::info!(message = "Action finished.", action = %info.name, status = status.as_str(), duration_ms, %audit_id);
        Ok(self.redacted(ActionOutcome {
            action: info.name,
            status,
            plan: planned.plan,
            policy: decision,
            approval_id: approval_used,
            verification,
            before: planned.before,
            after,
            message,
            audit_id,
            duration_ms,
        }))
    }

    /// The outcome with every sandbox secret value replaced, wherever it appears (a
    /// session's query text, an error message): belt and braces over the actions'
    /// own care.
    fn redacted(&self, mut out: ActionOutcome) -> ActionOutcome {
        let dir = self.inner.state.secrets_dir();
        let fix = |v: &Value| -> Value {
            let text = audit::redact_values(&v.to_string(), &dir);
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        out.before = fix(&out.before);
        out.after = fix(&out.after);
        if let Ok(plan) = serde_json::to_value(&out.plan)
            && let Ok(p) = serde_json::from_value(fix(&plan))
        {
            out.plan = p;
        }
        if let Some(v) = &out.verification
            && let Ok(v) = serde_json::to_value(v)
            && let Ok(v) = serde_json::from_value(fix(&v))
        {
            out.verification = Some(v);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_without_acting(
        &self,
        audit_line: &dyn Fn(&str, Value) -> Result<(), RemediationError>,
        action: &str,
        status: Status,
        plan: Plan,
        decision: PolicyDecision,
        approval_id: Option<String>,
        before: Value,
        message: String,
        audit_id: &str,
        started: Instant,
    ) -> Result<ActionOutcome, RemediationError> {
        let message = audit::redact_values(&message, &self.inner.state.secrets_dir());
        audit_line(
            "started",
            json!({"policy": decision, "plan": plan, "before": before}),
        )?;
        let duration_ms = started.elapsed().as_millis() as u64;
        audit_line(
            "finished",
            json!({"status": status.as_str(), "policy": decision, "approval_id": approval_id,
                   "duration_ms": duration_ms, "message": message}),
        )?;
        if status != Status::Planned {
            self.inner.events.record(
                "action_finished",
                None,
                format!("{action} {} ({audit_id})", status.as_str()),
            );
        }
        Ok(self.redacted(ActionOutcome {
            action: action.to_string(),
            status,
            plan,
            policy: decision,
            approval_id,
            verification: None,
            before: before.clone(),
            after: before,
            message,
            audit_id: audit_id.to_string(),
            duration_ms,
        }))
    }
}
