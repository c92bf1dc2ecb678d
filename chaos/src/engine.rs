//! The engine: validates requests, writes the ledger ahead of every change, applies and
//! reverts faults, keeps leases and reaps what a previous process left active.
//!
//! Operations that change a fault's state are serialised by one async mutex, so the lease
//! keeper, a stop and a reap never revert the same fault twice at once. The effect check
//! of an inject runs outside that mutex: it only observes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use aiops_sandbox::events::EventLog;
use aiops_sandbox::{Runtime, StateDir};
use chrono::Utc;

use crate::ctx::Ctx;
use crate::faults::{self, Kind, Mark, Sessions};
use crate::ledger::{Entry, Ledger, Transition};
use crate::params;
use crate::{ChaosError, FaultInfo, FaultRecord, InjectOutcome, InjectRequest, states};

/// How many ended faults `status` returns besides the active ones.
const RECENT_ENDED: usize = 50;
const MAX_TTL_S: u64 = 3600;

/// Injects, tracks and reverts faults. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ChaosEngine {
    inner: Arc<Inner>,
}

struct Inner {
    state: StateDir,
    runtime: Arc<dyn Runtime>,
    events: Arc<EventLog>,
    ledger: Ledger,
    sessions: Sessions,
    op: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ChaosEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosEngine")
            .field("state", &self.inner.state.root())
            .finish_non_exhaustive()
    }
}

impl ChaosEngine {
    /// `runtime`: the daemon's process supervisor. `events`: the sandbox timeline; faults
    /// and reverts are recorded there (`fault_injected`, `fault_reverted`,
    /// `fault_expired`, `fault_revert_failed`).
    pub fn new(state: StateDir, runtime: Arc<dyn Runtime>, events: Arc<EventLog>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client builds");
        Self {
            inner: Arc::new(Inner {
                ledger: Ledger::new(&state),
                state,
                runtime,
                events,
                sessions: Sessions::default(),
                op: tokio::sync::Mutex::new(()),
                http,
            }),
        }
    }

    /// Every fault this engine can inject.
    pub fn catalogue() -> Vec<FaultInfo> {
        faults::ALL
            .iter()
            .map(|k| {
                let s = k.spec();
                FaultInfo {
                    id: s.id.to_string(),
                    class: s.id.to_string(),
                    target: s.target.to_string(),
                    description: s.description.to_string(),
                    default_ttl_s: s.ttl_s,
                    params_schema: params::schema(s.params),
                    defaults: params::defaults(s.params),
                }
            })
            .collect()
    }

    async fn ctx(&self) -> Result<Ctx, ChaosError> {
        Ctx::new(
            self.inner.state.clone(),
            self.inner.runtime.clone(),
            self.inner.http.clone(),
        )
        .await
        .map_err(ChaosError::Other)
    }

    /// Validate, then (unless `dry_run`) write the ledger entry, apply the fault, mark it
    /// active and, if asked, check its effect.
    pub async fn inject(&self, req: InjectRequest) -> Result<InjectOutcome, ChaosError> {
        let kind = Kind::from_id(&req.fault).ok_or_else(|| ChaosError::UnknownFault {
            name: req.fault.clone(),
            known: faults::ALL
                .iter()
                .map(|k| k.spec().id.to_string())
                .collect(),
        })?;
        let spec = kind.spec();
        let params = params::resolve(spec.params, &req.params)?;
        let ttl_s = req.ttl_s.unwrap_or(spec.ttl_s);
        if !(1..=MAX_TTL_S).contains(&ttl_s) {
            return Err(ChaosError::InvalidParam {
                field: "ttl_s".into(),
                message: format!("got {ttl_s}; allowed: an integer in 1..={MAX_TTL_S} (seconds)"),
            });
        }
        let ctx = self.ctx().await?;

        let _op = self.inner.op.lock().await;
        if !req.dry_run {
            self.check_conflicts(kind)?;
        }
        let prepared = faults::prepare(kind, &ctx, &params)
            .await
            .map_err(ChaosError::Inject)?;
        if req.dry_run {
            return Ok(InjectOutcome {
                dry_run: true,
                plan: prepared.plan,
                record: None,
                effect: None,
            });
        }

        let now = Utc::now();
        let id = format!("f-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut entry = Entry {
            record: FaultRecord {
                id: id.clone(),
                fault: spec.id.to_string(),
                class: spec.id.to_string(),
                target: spec.target.to_string(),
                params: params.clone(),
                state: states::INJECTING.to_string(),
                injected_at: now,
                lease_expires_at: now + chrono::Duration::seconds(ttl_s as i64),
                auto_revert: true,
                ended_at: None,
                end_reason: None,
                label: kind.label(&params),
                error: None,
            },
            undo: prepared.undo,
            history: vec![Transition {
                at: now,
                state: states::INJECTING.to_string(),
            }],
        };
        // Write-ahead: on disk (fsynced) before anything changes.
        self.inner.ledger.write(&entry)?;

        let mark = Mark {
            log: ctx.log_mark(),
            at: Utc::now(),
        };
        if let Err(error) =
            faults::apply(kind, &ctx, &id, &params, &entry.undo, &self.inner.sessions).await
        {
            // Undo whatever part was applied; the record tells what happened.
            let reverted =
                faults::revert(kind, &ctx, &id, &params, &entry.undo, &self.inner.sessions).await;
            entry.record.ended_at = Some(Utc::now());
            entry.record.end_reason = Some("inject failed".into());
            match &reverted {
                Ok(()) => {
                    entry.record.error = Some(error.clone());
                    entry.set_state(states::REVERTED);
                }
                Err(revert_error) => {
                    entry.record.error = Some(format!(
                        "{error}; the revert of the partial inject failed too: {revert_error}"
                    ));
                    entry.set_state(states::REVERT_FAILED);
                }
            }
            self.inner.ledger.write(&entry)?;
            self.inner.events.record(
                if reverted.is_ok() {
                    "fault_reverted"
                } else {
                    "fault_revert_failed"
                },
                Some(spec.target),
                format!("fault {id} ({}) failed to inject: {error}", spec.id),
            );
            return Err(ChaosError::Inject(error));
        }
        // The lease runs from the moment the fault is in place.
        let active_at = Utc::now();
        entry.record.injected_at = active_at;
        entry.record.lease_expires_at = active_at + chrono::Duration::seconds(ttl_s as i64);
        entry.set_state(states::ACTIVE);
        self.inner.ledger.write(&entry)?;
        self.inner.events.record(
            "fault_injected",
            Some(spec.target),
            format!("fault {id} ({}) injected, lease {ttl_s} s", spec.id),
        );
        drop(_op);

        let effect = if req.verify {
            Some(faults::verify(kind, &ctx, &params, &entry.undo, mark).await)
        } else {
            None
        };
        let record = self
            .inner
            .ledger
            .load(&id)?
            .map(|e| e.record)
            .unwrap_or(entry.record);
        Ok(InjectOutcome {
            dry_run: false,
            plan: prepared.plan,
            record: Some(record),
            effect,
        })
    }

    fn check_conflicts(&self, kind: Kind) -> Result<(), ChaosError> {
        let spec = kind.spec();
        for e in self.inner.ledger.all()? {
            if e.record.is_ended() {
                continue;
            }
            let Some(other) = Kind::from_id(&e.record.fault) else {
                continue;
            };
            let same_group = spec.group.is_some() && spec.group == other.spec().group;
            if other == kind || same_group {
                return Err(ChaosError::Inject(format!(
                    "fault {} ({}) is {} and acts on the same thing{}; stop it first",
                    e.record.id,
                    e.record.fault,
                    e.record.state,
                    spec.group.map(|g| format!(" ({g})")).unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Revert one fault. Stopping an ended fault returns it unchanged; a fault whose
    /// revert failed is retried.
    pub async fn stop(&self, id: &str) -> Result<FaultRecord, ChaosError> {
        let _op = self.inner.op.lock().await;
        let entry = self
            .inner
            .ledger
            .load(id)?
            .ok_or_else(|| ChaosError::UnknownId(id.to_string()))?;
        if entry.record.is_ended() {
            return Ok(entry.record);
        }
        let record = self
            .revert_entry(entry, "stopped", states::REVERTED)
            .await?;
        match &record.error {
            Some(e) if record.state == states::REVERT_FAILED => Err(ChaosError::Revert(e.clone())),
            _ => Ok(record),
        }
    }

    /// Revert every fault that is not ended. Failures do not stop the others: each
    /// record says how its revert went (`revert_failed` with `error`).
    pub async fn stop_all(&self) -> Result<Vec<FaultRecord>, ChaosError> {
        self.revert_all("stopped (stop all)").await
    }

    /// Revert everything the ledger shows not ended (called at every daemon start: the
    /// process that injected those faults is gone).
    pub async fn reap(&self) -> Result<Vec<FaultRecord>, ChaosError> {
        self.revert_all("reaped: the ledger showed it active when the daemon started")
            .await
    }

    async fn revert_all(&self, reason: &str) -> Result<Vec<FaultRecord>, ChaosError> {
        let _op = self.inner.op.lock().await;
        let mut out = Vec::new();
        // Newest first: a later fault may depend on an earlier one being in place.
        let mut open: Vec<Entry> = self
            .inner
            .ledger
            .all()?
            .into_iter()
            .filter(|e| !e.record.is_ended())
            .collect();
        open.reverse();
        for entry in open {
            out.push(self.revert_entry(entry, reason, states::REVERTED).await?);
        }
        self.inner.ledger.prune();
        Ok(out)
    }

    /// What is left behind: ledger records not ended, plus whatever any fault of the
    /// catalogue could leave, looked for directly in the sandbox (failpoints, sessions
    /// under a fault's application name, a lowered connection limit, a mount over the
    /// cache dir...). Empty means clean. A drill calls it after reverting a trial's fault.
    pub async fn leftovers(&self) -> Result<Vec<String>, ChaosError> {
        let mut found: Vec<String> = self
            .inner
            .ledger
            .all()?
            .into_iter()
            .map(|e| e.record)
            .filter(|r| !r.is_ended())
            .map(|r| format!("fault {} ({}) is still {}", r.id, r.fault, r.state))
            .collect();
        let ctx = self.ctx().await?;
        found.extend(faults::leftovers(&ctx).await);
        Ok(found)
    }

    /// Active faults plus the most recently ended ones, newest first.
    pub async fn status(&self) -> Result<Vec<FaultRecord>, ChaosError> {
        let all = self.inner.ledger.all()?;
        let (mut ended, mut out): (Vec<_>, Vec<_>) = all
            .into_iter()
            .map(|e| e.record)
            .partition(FaultRecord::is_ended);
        ended.sort_by_key(|r| std::cmp::Reverse(r.ended_at));
        ended.truncate(RECENT_ENDED);
        out.extend(ended);
        out.sort_by_key(|r| std::cmp::Reverse(r.injected_at));
        Ok(out)
    }

    /// Suspend (`false`) or resume (`true`) the revert on lease expiry. A fault whose lease
    /// ran out while suspended is reverted at the next tick once resumed.
    pub async fn set_auto_revert(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<FaultRecord, ChaosError> {
        let _op = self.inner.op.lock().await;
        let mut entry = self
            .inner
            .ledger
            .load(id)?
            .ok_or_else(|| ChaosError::UnknownId(id.to_string()))?;
        if entry.record.state != states::ACTIVE && entry.record.state != states::INJECTING {
            return Err(ChaosError::NotActive(format!(
                "{id} ({})",
                entry.record.state
            )));
        }
        entry.record.auto_revert = enabled;
        self.inner.ledger.write(&entry)?;
        Ok(entry.record)
    }

    /// Start a task that reverts expired leases every 500 ms. It ends when the last clone
    /// of the engine is dropped.
    pub fn spawn_lease_keeper(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let engine = ChaosEngine { inner };
                if let Err(error) = engine.expire_leases().await {
                    tracing::warn!(message = "Lease check failed.", %error);
                }
            }
        });
    }

    async fn expire_leases(&self) -> Result<(), ChaosError> {
        let now = Utc::now();
        let due: Vec<String> = self
            .inner
            .ledger
            .all()?
            .into_iter()
            .filter(|e| {
                e.record.state == states::ACTIVE
                    && e.record.auto_revert
                    && e.record.lease_expires_at <= now
            })
            .map(|e| e.record.id)
            .collect();
        for id in due {
            let _op = self.inner.op.lock().await;
            // Re-read under the lock: a stop or a suspension may have come first.
            let Some(entry) = self.inner.ledger.load(&id)? else {
                continue;
            };
            if entry.record.state == states::ACTIVE
                && entry.record.auto_revert
                && entry.record.lease_expires_at <= Utc::now()
            {
                self.revert_entry(entry, "lease expired", states::EXPIRED)
                    .await?;
            }
        }
        Ok(())
    }

    /// Revert under the op lock (held by the caller); the ledger says `reverting` first.
    async fn revert_entry(
        &self,
        mut entry: Entry,
        reason: &str,
        final_state: &str,
    ) -> Result<FaultRecord, ChaosError> {
        let id = entry.record.id.clone();
        let Some(kind) = Kind::from_id(&entry.record.fault) else {
            return Err(ChaosError::Ledger(format!(
                "entry {id} names an unknown fault `{}`",
                entry.record.fault
            )));
        };
        entry.set_state(states::REVERTING);
        self.inner.ledger.write(&entry)?;
        let result = match self.ctx().await {
            Ok(ctx) => {
                faults::revert(
                    kind,
                    &ctx,
                    &id,
                    &entry.record.params,
                    &entry.undo,
                    &self.inner.sessions,
                )
                .await
            }
            Err(e) => Err(e.to_string()),
        };
        let target = entry.record.target.clone();
        match result {
            Ok(()) => {
                entry.record.ended_at = Some(Utc::now());
                entry.record.end_reason = Some(reason.to_string());
                entry.record.error = None;
                entry.set_state(final_state);
                self.inner.ledger.write(&entry)?;
                let kind = if final_state == states::EXPIRED {
                    "fault_expired"
                } else {
                    "fault_reverted"
                };
                self.inner.events.record(
                    kind,
                    Some(&target),
                    format!("fault {id} ({}) reverted: {reason}", entry.record.fault),
                );
            }
            Err(error) => {
                entry.record.error = Some(error.clone());
                entry.set_state(states::REVERT_FAILED);
                self.inner.ledger.write(&entry)?;
                self.inner.events.record(
                    "fault_revert_failed",
                    Some(&target),
                    format!("fault {id} ({}) revert failed: {error}", entry.record.fault),
                );
                tracing::warn!(message = "Fault revert failed.", id = %id, %error);
            }
        }
        Ok(entry.record)
    }
}
