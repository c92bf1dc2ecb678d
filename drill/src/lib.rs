//! The drill harness: scores any agent on real faults.
//!
//! Responsible for: for each trial of a seeded schedule ([`plan`]), bringing the sandbox
//! to a checked steady state, injecting a fault with its auto-revert suspended (or none,
//! for a no-fault trial), running the agent in exam mode (the scripted agent in-process,
//! or any command given the exam MCP endpoint and token), watching the steady state,
//! the diagnoses and the audit log while it works, granting approvals as the on-call
//! human would, checking the fix holds, reverting the fault and looking for leftovers;
//! then scoring ([`score`]) and writing the results ([`report`]).
//!
//! Not responsible for: the agent's decisions. **Invariant:** the agent under test gets
//! only the exam MCP surface (`/exam/mcp` and the exam token, which opens nothing else);
//! the harness alone talks to the chaos and control APIs and reads the ground truth.

pub mod plan;
pub mod report;
pub mod score;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_chaos::{ChaosClient, FaultRecord, InjectRequest};
use aiops_remediation::Remediator;
use aiops_sandbox::control::{DaemonRuntime, Endpoint};
use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::events::EventLog;
use aiops_sandbox::runtime::ServiceState;
use aiops_sandbox::secrets::names as secret;
use aiops_sandbox::topology::names as svc;
use aiops_sandbox::{Runtime, StateDir};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use plan::PlannedTrial;
use score::{ActionSeen, DiagnosisSeen, Summary, TrialResult};

/// Who takes the exam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSpec {
    /// The scripted agent (`aiops-agent`), in-process, over Streamable HTTP.
    Scripted,
    /// Any command, run with `sh -c` in its own process group; it gets `AIOPS_MCP_URL`
    /// (the exam endpoint), `AIOPS_MCP_TOKEN` (the exam token), `AIOPS_DRILL_TRIAL` and
    /// `AIOPS_DRILL_TIMEOUT_S`, and is stopped (SIGTERM, then SIGKILL) at the timeout.
    Command(String),
}

impl AgentSpec {
    pub fn describe(&self) -> String {
        match self {
            Self::Scripted => "scripted".into(),
            Self::Command(c) => format!("command: {c}"),
        }
    }
}

/// How a drill runs.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Catalogue faults to draw from.
    pub faults: Vec<String>,
    /// Rounds: each fault is tried this many times.
    pub trials: usize,
    /// No-fault trials mixed in.
    pub noops: usize,
    pub seed: u64,
    pub agent: AgentSpec,
    /// From the fault taking effect to the end of the agent's run.
    pub timeout: Duration,
    /// How long the steady state must hold after mitigation, the fault still in place.
    pub durable: Duration,
    /// How long the agent watches a healthy system in a no-fault trial.
    pub noop_window: Duration,
    /// Grant the agent's approval requests as the on-call human (counted); otherwise
    /// deny them.
    pub approve: bool,
}

/// A whole drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillResults {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub agent: String,
    pub seed: u64,
    pub faults: Vec<String>,
    pub trials_per_fault: usize,
    pub timeout_s: u64,
    pub durable_s: u64,
    pub results: Vec<TrialResult>,
    pub summary: Summary,
}

/// What the harness reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    TrialStarted { trial: &'a PlannedTrial, of: usize },
    Phase { index: usize, what: String },
    TrialFinished(&'a TrialResult),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DrillError {
    #[error("no sandbox daemon answers for {0}: start one with `aiops up`")]
    NoDaemon(String),
    #[error("unknown fault `{name}`; known: {}", known.join(", "))]
    UnknownFault { name: String, known: Vec<String> },
    #[error("{0}")]
    Other(String),
}

/// `.env` keys a fix may legitimately change for good (rotations): never reset to the
/// baseline and not counted as drift.
const ROTATED_KEYS: &[&str] = &["DATABASE_URL", "JWT_SECRET", "ADMIN_TOKEN"];
/// Each steady-state check samples the target over this window.
const CHECK_WINDOW_S: u64 = 1;
/// Each durability check samples over this window: long enough that a one-second blip
/// (a restart's start-up CPU) is averaged rather than counted as a relapse.
const DURABLE_WINDOW_S: u64 = 2;
/// After the agent is done, how long the harness still waits for the steady state.
const GRACE: Duration = Duration::from_secs(10);
/// After the revert, how long the system may take to settle before it counts as worse.
const SETTLE: Duration = Duration::from_secs(30);
const RESET_LIMIT: Duration = Duration::from_secs(60);

/// The harness, bound to one running sandbox.
pub struct Drill {
    state: StateDir,
    chaos: ChaosClient,
    remediator: Remediator,
    /// What the agent sees (exam mode), for the reset's quiet check.
    observer: aiops_observe::Observer,
    runtime: Arc<dyn Runtime>,
    exam_url: String,
    exam_token: String,
    baseline_env: EnvFile,
    /// Action name → (destructive, read_only), from the catalogue.
    actions: HashMap<String, (bool, bool)>,
    dir: PathBuf,
    id: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Drill {
    /// Bind to the sandbox of `state` (its daemon must run). The target's current `.env`
    /// is the baseline every reset returns to.
    pub async fn connect(state: StateDir) -> Result<Self, DrillError> {
        let endpoint = Endpoint::read(&state)
            .ok_or_else(|| DrillError::NoDaemon(state.root().display().to_string()))?;
        let chaos = ChaosClient::from_state(&state)
            .map_err(|e| DrillError::NoDaemon(format!("{}: {e}", state.root().display())))?;
        let runtime: Arc<dyn Runtime> = Arc::new(DaemonRuntime::new(state.clone()));
        let events = Arc::new(EventLog::open(&state.events_file()));
        let remediator = Remediator::new(state.clone(), runtime.clone(), events)
            .map_err(|e| DrillError::Other(e.to_string()))?;
        let exam_token = std::fs::read_to_string(state.secret_file(secret::EXAM_TOKEN))
            .map_err(|e| {
                DrillError::Other(format!(
                    "cannot read the exam token (a daemon older than the drill? restart it with `aiops down && aiops up`): {e}"
                ))
            })?
            .trim()
            .to_string();
        let baseline_env = EnvFile::read(&state.env_file())
            .map_err(|e| DrillError::Other(format!("cannot read the target's .env: {e}")))?;
        let observer = aiops_observe::Observer::new(state.clone(), runtime.clone()).for_exam();
        observer.start_sampler();
        let actions = Remediator::actions()
            .into_iter()
            .map(|a| (a.name.clone(), (a.destructive, a.read_only)))
            .collect();
        let id = format!("drill-{}", Utc::now().format("%Y%m%dT%H%M%SZ"));
        let dir = state.root().join("drills").join(&id);
        Ok(Self {
            exam_url: format!("{}/exam/mcp", endpoint.url.trim_end_matches('/')),
            state,
            chaos,
            remediator,
            observer,
            runtime,
            exam_token,
            baseline_env,
            actions,
            dir,
            id,
        })
    }

    /// Where this drill writes its results and the agent's logs.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Run every trial of the schedule, then write `results.json` and `results.md` into
    /// [`Drill::dir`] (and `drills/latest.json`).
    pub async fn run(
        &self,
        opts: &DrillOptions,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<DrillResults, DrillError> {
        let known: Vec<String> = aiops_chaos::ChaosEngine::catalogue()
            .into_iter()
            .map(|f| f.id)
            .collect();
        for f in &opts.faults {
            if !known.contains(f) {
                return Err(DrillError::UnknownFault {
                    name: f.clone(),
                    known,
                });
            }
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| DrillError::Other(format!("cannot create {}: {e}", self.dir.display())))?;
        let started_at = Utc::now();
        let schedule = plan::schedule(&opts.faults, opts.trials, opts.noops, opts.seed);
        let mut results = Vec::with_capacity(schedule.len());
        for trial in &schedule {
            progress(Progress::TrialStarted {
                trial,
                of: schedule.len(),
            });
            let result = self.trial(trial, opts, &mut progress).await;
            progress(Progress::TrialFinished(&result));
            results.push(result);
        }
        // Leave the sandbox as the drill found it.
        if let Err(e) = self.reset(0).await {
            tracing::warn!(message = "The final reset did not reach a steady state.", error = %e);
        }
        let out = DrillResults {
            id: self.id.clone(),
            started_at,
            finished_at: Utc::now(),
            agent: opts.agent.describe(),
            seed: opts.seed,
            faults: opts.faults.clone(),
            trials_per_fault: opts.trials,
            timeout_s: opts.timeout.as_secs(),
            durable_s: opts.durable.as_secs(),
            summary: score::summarize(&results),
            results,
        };
        report::write(&self.dir, &self.state.root().join("drills"), &out)
            .map_err(|e| DrillError::Other(format!("cannot write the results: {e}")))?;
        Ok(out)
    }

    async fn trial(
        &self,
        planned: &PlannedTrial,
        opts: &DrillOptions,
        progress: &mut impl FnMut(Progress<'_>),
    ) -> TrialResult {
        let began = Instant::now();
        let mut r = TrialResult::new(planned.index, &planned.fault);
        let mut phase = |what: &str| {
            progress(Progress::Phase {
                index: planned.index,
                what: what.to_string(),
            })
        };
        phase("reset");
        let reset_began = Instant::now();
        let reset = self.reset(planned.index).await;
        r.reset_ms = ms(reset_began.elapsed());
        if let Err(e) = reset {
            r.notes.push(format!("reset failed, trial not run: {e}"));
            r.agent_outcome = "not started".into();
            r.score();
            r.success = false;
            r.total_ms = ms(began.elapsed());
            return r;
        }
        let mark = Utc::now();

        // The fault: in place (t0) before the agent starts; its effect check goes on
        // concurrently so the agent is not kept waiting.
        let mut inject_task = None;
        let mut record: Option<FaultRecord> = None;
        if !planned.is_noop() {
            phase("inject");
            let ttl = opts.timeout + opts.durable + GRACE + SETTLE + Duration::from_secs(60);
            let req = InjectRequest {
                ttl_s: Some(ttl.as_secs().min(3600)),
                ..InjectRequest::new(planned.fault.clone())
            };
            let chaos = self.chaos.clone();
            let task = tokio::spawn(async move { chaos.inject(req).await });
            match self.wait_active(&planned.fault, mark, &task).await {
                Ok(rec) => {
                    if let Err(e) = self.chaos.set_auto_revert(&rec.id, false).await {
                        r.notes
                            .push(format!("could not suspend the auto-revert: {e}"));
                    }
                    r.fault_id = Some(rec.id.clone());
                    r.label = Some(rec.label.clone());
                    r.injected_at = Some(rec.injected_at);
                    record = Some(rec);
                    inject_task = Some(task);
                }
                Err(e) => {
                    task.abort();
                    r.notes.push(format!("inject failed, trial not run: {e}"));
                    r.agent_outcome = "not started".into();
                    let _ = self.chaos.stop_all().await;
                    r.score();
                    r.success = false;
                    r.total_ms = ms(began.elapsed());
                    return r;
                }
            }
        }

        // The agent, watched.
        phase("agent");
        let window = if planned.is_noop() {
            opts.noop_window
        } else {
            opts.timeout
        };
        let deadline = Instant::now() + window;
        let agent = self.start_agent(planned, opts, deadline);
        tokio::pin!(agent);
        let mut watch = Watch::default();
        let mut agent_outcome: Option<String> = None;
        let mut granted = 0u32;
        loop {
            // A passing check counts when it ends: its window may have begun before the
            // fix (a growth or rate check passes once the end state is good), so the end
            // is the moment the steady state is known to be back.
            if agent_outcome.is_none() {
                tokio::select! {
                    outcome = &mut agent => { agent_outcome = Some(outcome); continue; }
                    v = self.remediator.steady_state(CHECK_WINDOW_S) => watch.saw(v.passed, Utc::now(), &v),
                }
            } else {
                // The agent is done: a short grace for a restart under way to turn healthy.
                if watch.mitigated_at.is_some() || planned.is_noop() {
                    break;
                }
                if watch.grace_started.is_none() {
                    watch.grace_started = Some(Instant::now());
                }
                if watch.grace_started.is_some_and(|g| g.elapsed() > GRACE) {
                    break;
                }
                let v = self.remediator.steady_state(CHECK_WINDOW_S).await;
                watch.saw(v.passed, Utc::now(), &v);
            }
            granted += self.decide_approvals(mark, opts.approve);
        }
        r.agent_outcome = agent_outcome.unwrap_or_default();
        r.approvals_granted = granted;
        if let Some(task) = inject_task {
            match task.await {
                Ok(Ok(outcome)) => {
                    r.effect_verified = outcome.effect.as_ref().map(|e| e.verified);
                    if let Some(e) = outcome.effect.filter(|e| !e.verified) {
                        r.notes.push(format!(
                            "the inject's effect check did not see the symptom: {}",
                            e.observed
                        ));
                    }
                }
                Ok(Err(e)) => r.notes.push(format!("inject reported: {e}")),
                Err(e) => r.notes.push(format!("inject task: {e}")),
            }
        }
        r.broke = watch.broke;
        let mut mitigated_at = watch.mitigated_at;
        if !watch.broke && r.effect_verified == Some(true) && !planned.is_noop() {
            // The inject saw the symptom, but the agent fixed it before a steady-state
            // check could fail: mitigated when its first action completed, provided every
            // check since passed.
            r.broke = true;
            mitigated_at = self
                .actions_since(mark)
                .into_iter()
                .find(|a| a.status == "executed")
                .map(|a| a.at);
            if mitigated_at.is_some() {
                r.notes.push(
                    "fixed before a steady-state check could fail: mitigation counted to the completion of the first action".into(),
                );
            }
        }
        if let (Some(t0), Some(at)) = (r.injected_at, mitigated_at) {
            r.time_to_mitigate_ms = Some(u64::try_from((at - t0).num_milliseconds()).unwrap_or(0));
        }
        if !planned.is_noop()
            && mitigated_at.is_none()
            && let Some(last) = &watch.last_failure
        {
            r.notes.push(format!("steady state at the end: {last}"));
        }

        // Durability: the fix must hold with the fault still in place.
        if mitigated_at.is_some() && !planned.is_noop() {
            phase("durable");
            let until = Instant::now() + opts.durable;
            let (mut ok, mut all) = (0u32, 0u32);
            let mut first_failure = None;
            while Instant::now() < until {
                let v = self.remediator.steady_state(DURABLE_WINDOW_S).await;
                all += 1;
                if v.passed {
                    ok += 1;
                } else if first_failure.is_none() {
                    first_failure = Some(failed_checks(&v));
                }
                granted += self.decide_approvals(mark, opts.approve);
            }
            r.durable_checks = (ok, all);
            r.durable = all > 0 && ok == all;
            if let Some(f) = first_failure {
                r.notes.push(format!("durability check failed: {f}"));
            }
            r.approvals_granted = granted;
        }

        // Revert, settle, look for what is left.
        phase("revert");
        if let Some(rec) = &record {
            match self.chaos.stop(&rec.id).await {
                Ok(_) => {}
                Err(aiops_chaos::ChaosError::NotActive(_)) => {}
                Err(e) => r
                    .leftovers
                    .push(format!("revert of {} failed: {e}", rec.id)),
            }
        }
        let settle_until = Instant::now() + SETTLE;
        loop {
            let v = self.remediator.steady_state(CHECK_WINDOW_S).await;
            if v.passed {
                break;
            }
            if Instant::now() > settle_until {
                r.collateral.push(format!(
                    "left worse than before: steady state fails {} s after the revert ({})",
                    SETTLE.as_secs(),
                    failed_checks(&v)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match self.chaos.leftovers().await {
            Ok(found) => r.leftovers.extend(found),
            Err(e) => r.leftovers.push(format!("cannot check for leftovers: {e}")),
        }
        r.config_drift = self.config_drift();
        r.diagnoses = aiops_sandbox::incidents::diagnoses(&self.state)
            .into_iter()
            .filter(|d| d.submitted_at >= mark)
            .map(|d| DiagnosisSeen {
                at: d.submitted_at,
                fault_class: d.fault_class,
                component: d.component,
                correct: false,
            })
            .collect();
        r.actions = self.actions_since(mark);
        r.score();
        r.total_ms = ms(began.elapsed());
        r
    }

    /// Poll the ledger until this trial's fault is active; the inject's error if it fails.
    async fn wait_active(
        &self,
        fault: &str,
        since: DateTime<Utc>,
        task: &tokio::task::JoinHandle<Result<aiops_chaos::InjectOutcome, aiops_chaos::ChaosError>>,
    ) -> Result<FaultRecord, String> {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            // Whether the inject had ended before this look: then the look is the last.
            let ended = task.is_finished();
            if let Ok(all) = self.chaos.status().await
                && let Some(rec) = all.into_iter().find(|r| {
                    r.fault == fault
                        && r.state == aiops_chaos::states::ACTIVE
                        && r.injected_at >= since
                })
            {
                return Ok(rec);
            }
            if ended {
                return Err(
                    "the inject ended without an active fault (see `aiops chaos status`)".into(),
                );
            }
            if Instant::now() > until {
                return Err("no active fault after 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run the agent until it stops or the deadline; how it ended.
    async fn start_agent(
        &self,
        planned: &PlannedTrial,
        opts: &DrillOptions,
        deadline: Instant,
    ) -> String {
        match &opts.agent {
            AgentSpec::Scripted => {
                let client = match aiops_agent::connect_http(&self.exam_url, &self.exam_token).await
                {
                    Ok(c) => c,
                    Err(e) => return format!("cannot connect: {e}"),
                };
                let w = aiops_agent::WatchOptions {
                    interval: Duration::from_secs(1),
                    deadline: Some(deadline),
                    stop_when_recovered: !planned.is_noop(),
                    max_rounds: None,
                };
                let agent_opts = aiops_agent::AgentOptions {
                    verify_interval: Duration::from_millis(500),
                    ..Default::default()
                };
                let last = tokio::time::timeout(
                    deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(30),
                    aiops_agent::watch(&client, &agent_opts, &w, |_| {}),
                )
                .await;
                let _ = client.cancel().await;
                match last {
                    Ok(Some(report)) => report.outcome,
                    Ok(None) => "no pass completed".into(),
                    Err(_) => "timed out".into(),
                }
            }
            AgentSpec::Command(cmd) => self.run_command(cmd, planned, deadline).await,
        }
    }

    async fn run_command(&self, cmd: &str, planned: &PlannedTrial, deadline: Instant) -> String {
        let log = self
            .dir
            .join(format!("trial-{:03}-{}.log", planned.index, planned.fault));
        let (out, err) = match std::fs::File::create(&log).and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(pair) => pair,
            Err(e) => return format!("cannot create {}: {e}", log.display()),
        };
        let timeout_s = deadline.saturating_duration_since(Instant::now()).as_secs();
        let mut child = match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("AIOPS_MCP_URL", &self.exam_url)
            .env("AIOPS_MCP_TOKEN", &self.exam_token)
            .env("AIOPS_DRILL_TRIAL", planned.index.to_string())
            .env("AIOPS_DRILL_TIMEOUT_S", timeout_s.to_string())
            // The agent under test gets the exam endpoint, not the state dir.
            .env_remove("AIOPS_HOME")
            .env_remove("AIOPS_TOKEN")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return format!("cannot start `{cmd}`: {e}"),
        };
        let pid = child.id();
        match tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            child.wait(),
        )
        .await
        {
            Ok(Ok(status)) => match status.code() {
                Some(c) => format!("exited {c}"),
                None => format!("ended by {status}"),
            },
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let pg = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGTERM);
                    if tokio::time::timeout(Duration::from_secs(3), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
                        let _ = child.wait().await;
                    }
                }
                "timed out (stopped)".into()
            }
        }
    }

    /// Decide the approvals requested since `mark`; how many were granted.
    fn decide_approvals(&self, mark: DateTime<Utc>, approve: bool) -> u32 {
        let Ok(pending) = self.remediator.pending_approvals() else {
            return 0;
        };
        let mut granted = 0;
        for a in pending.into_iter().filter(|a| a.requested_at >= mark) {
            if self
                .remediator
                .decide(&a.id, approve, "drill (on-call)")
                .is_ok()
                && approve
            {
                granted += 1;
            }
        }
        granted
    }

    /// Every remediation call since `mark` that tried to change something, from the
    /// audit log (dry runs and read-only actions left out).
    fn actions_since(&self, mark: DateTime<Utc>) -> Vec<ActionSeen> {
        self.remediator
            .audit_all()
            .into_iter()
            .filter(|e| e["event"] == "finished" && e["dry_run"] != Value::Bool(true))
            .filter_map(|e| {
                let at: DateTime<Utc> = e["time"].as_str()?.parse().ok()?;
                let action = e["action"].as_str()?.to_string();
                let (destructive, read_only) =
                    self.actions.get(&action).copied().unwrap_or((false, false));
                (at >= mark && !read_only).then(|| ActionSeen {
                    at,
                    params: e["params"].clone(),
                    status: e["status"].as_str().unwrap_or_default().to_string(),
                    destructive,
                    action,
                })
            })
            .collect()
    }

    /// Non-rotated `.env` keys that differ from the baseline.
    fn config_drift(&self) -> Vec<String> {
        let Ok(now) = EnvFile::read(&self.state.env_file()) else {
            return vec!["the target's .env cannot be read".into()];
        };
        let mut keys: Vec<String> = self
            .baseline_env
            .keys()
            .map(|(k, _)| k.to_string())
            .chain(now.keys().map(|(k, _)| k.to_string()))
            .filter(|k| !ROTATED_KEYS.contains(&k.as_str()))
            .filter(|k| self.baseline_env.get(k) != now.get(k))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Back to the baseline: no fault, the baseline config, every service running, the
    /// restart rate windows afresh, and a steady state checked.
    async fn reset(&self, index: usize) -> Result<(), String> {
        if let Ok(all) = self.chaos.status().await
            && all.iter().any(|r| !r.is_ended())
        {
            self.chaos
                .stop_all()
                .await
                .map_err(|e| format!("reverting faults: {e}"))?;
        }
        let drift = self.config_drift();
        if !drift.is_empty() {
            let mut env = EnvFile::read(&self.state.env_file()).map_err(|e| e.to_string())?;
            for k in &drift {
                match self.baseline_env.get(k) {
                    Some(v) => env.set(k, v),
                    None => {
                        env.remove(k);
                    }
                }
            }
            env.write(&self.state.env_file())
                .map_err(|e| e.to_string())?;
            self.runtime.restart(svc::TARGET_APP).await.map_err(|e| {
                format!(
                    "restarting target-app after restoring {}: {e}",
                    drift.join(", ")
                )
            })?;
        }
        if let Ok(services) = self.runtime.services().await {
            for s in services.iter().filter(|s| s.state != ServiceState::Running) {
                if let Err(e) = self.runtime.start(&s.name).await {
                    tracing::warn!(message = "Reset could not start a service.", service = %s.name, error = %e);
                }
            }
        }
        self.remediator
            .reset_rate_windows("drill", &format!("reset before trial {index}"))
            .map_err(|e| e.to_string())?;
        let until = Instant::now() + RESET_LIMIT;
        loop {
            let v = self.remediator.steady_state(CHECK_WINDOW_S).await;
            // Steady, and quiet as the agent will see it: no critical or warning anomaly
            // left over from the previous trial (error codes still fresh in the logs,
            // a metrics window that still holds the last incident).
            let noise = if v.passed {
                self.anomalies().await
            } else {
                Vec::new()
            };
            if v.passed && noise.is_empty() {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(if v.passed {
                    format!(
                        "steady, but still not quiet after {} s: {}",
                        RESET_LIMIT.as_secs(),
                        noise.join("; ")
                    )
                } else {
                    format!(
                        "no steady state after {} s: {}",
                        RESET_LIMIT.as_secs(),
                        failed_checks(&v)
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The critical and warning anomalies an agent would see now, one line each.
    async fn anomalies(&self) -> Vec<String> {
        match self.observer.incident_snapshot().await {
            Ok(s) => s
                .anomalies
                .iter()
                .filter(|a| a.severity != aiops_observe::Severity::Info)
                .map(|a| a.line())
                .collect(),
            Err(e) => vec![format!("incident_snapshot: {e}")],
        }
    }
}

/// The failing checks of a verification, one line.
fn failed_checks(v: &aiops_remediation::Verification) -> String {
    v.checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {} (want {})", c.name, c.observed, c.expected))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the steady-state checks showed during the agent's run.
#[derive(Default)]
struct Watch {
    broke: bool,
    /// The first passing check after the latest failing one.
    mitigated_at: Option<DateTime<Utc>>,
    last_failure: Option<String>,
    grace_started: Option<Instant>,
}

impl Watch {
    fn saw(&mut self, passed: bool, at: DateTime<Utc>, v: &aiops_remediation::Verification) {
        if passed {
            if self.broke && self.mitigated_at.is_none() {
                self.mitigated_at = Some(at);
            }
        } else {
            self.broke = true;
            self.mitigated_at = None;
            self.last_failure = Some(failed_checks(v));
        }
    }
}
