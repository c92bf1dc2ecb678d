//! The process runtime: a supervisor that runs every sandbox service as a local child
//! process, captures its output, probes its health and applies its restart policy.
//!
//! It lives in the `aiops` daemon (the process `aiops up` leaves running); every other
//! process drives it through the control API ([`crate::control`]). State is mirrored to
//! `run/services.json` on every change so `aiops status` can still answer, and `aiops
//! down` can still clean up, when the daemon is gone.
//!
//! **Invariant:** a lock on the slot table is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::Notify;

use crate::envfile::EnvFile;
use crate::error::{Error, IoContext, Result};
use crate::events::EventLog;
use crate::paths::write_atomic;
use crate::prepare::Prepared;
use crate::procinfo::{self, CpuSample, SANDBOX_MARKER};
use crate::runtime::{
    ExitInfo, Health, HealthStatus, KillSignal, Runtime, ServiceState, ServiceStats, ServiceStatus,
};
use crate::secrets::{self, names as secret};
use crate::topology::{RestartMode, ServiceKind, ServiceSpec, Topology};

/// How long a service gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Slot {
    spec: ServiceSpec,
    desired_up: bool,
    state: ServiceState,
    pid: Option<u32>,
    started_at: Option<chrono::DateTime<Utc>>,
    started_instant: Option<Instant>,
    restarts: u32,
    /// Automatic restarts inside the policy window, for crash-loop detection.
    recent_restarts: VecDeque<Instant>,
    consecutive_failures: u32,
    last_exit: Option<ExitInfo>,
    health: Health,
    /// Bumped at every spawn, so a stale waiter cannot overwrite a newer run's state.
    generation: u64,
}

impl Slot {
    fn status(&self) -> ServiceStatus {
        ServiceStatus {
            name: self.spec.name.clone(),
            kind: self.spec.kind.as_str().to_string(),
            state: self.state,
            pid: self.pid,
            started_at: self.started_at,
            uptime_s: self
                .started_instant
                .filter(|_| self.state.is_alive())
                .map(|t| t.elapsed().as_secs()),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            health: self.health.clone(),
            port: self.spec.port,
            log_path: self.spec.log_path.display().to_string(),
        }
    }
}

struct Shared {
    prepared: Prepared,
    events: Arc<EventLog>,
    slots: Mutex<BTreeMap<String, Slot>>,
    changed: Notify,
    prober: crate::health::Prober,
    cpu: Mutex<HashMap<String, CpuSample>>,
}

/// The process runtime. Cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    shared: Arc<Shared>,
}

impl ProcessRuntime {
    /// Build the runtime and start its background tasks (health probes, state file).
    /// Services are not started: call [`ProcessRuntime::start_all`].
    pub fn new(prepared: Prepared) -> Self {
        let slots = prepared
            .topology
            .services
            .iter()
            .map(|spec| {
                (
                    spec.name.clone(),
                    Slot {
                        spec: spec.clone(),
                        desired_up: false,
                        state: ServiceState::Stopped,
                        pid: None,
                        started_at: None,
                        started_instant: None,
                        restarts: 0,
                        recent_restarts: VecDeque::new(),
                        consecutive_failures: 0,
                        last_exit: None,
                        health: Health::default(),
                        generation: 0,
                    },
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            events: Arc::new(EventLog::open(&prepared.state.events_file())),
            prober: crate::health::Prober::new(prepared.clone()),
            prepared,
            slots: Mutex::new(slots),
            changed: Notify::new(),
            cpu: Mutex::new(HashMap::new()),
        });
        let rt = Self { shared };
        tokio::spawn(rt.clone().persist_loop());
        tokio::spawn(rt.clone().probe_loop());
        rt
    }

    /// The sandbox timeline; shared with whoever else records events in this process
    /// (faults, actions).
    pub fn events(&self) -> &Arc<EventLog> {
        &self.shared.events
    }

    pub fn prepared(&self) -> &Prepared {
        &self.shared.prepared
    }

    /// Kill whatever a previous daemon left running for this sandbox (it was SIGKILLed, or
    /// the machine lost it). Returns how many processes were found.
    pub async fn reap_leftovers(&self) -> usize {
        let root = self.shared.prepared.state.root().to_path_buf();
        let pids = procinfo::sandbox_processes(&root);
        if pids.is_empty() {
            return 0;
        }
        self.shared.events.record(
            "reaper",
            None,
            format!(
                "found {} leftover process(es) of this sandbox; stopping them",
                pids.len()
            ),
        );
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !procinfo::sandbox_processes(&root).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for pid in procinfo::sandbox_processes(&root) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        pids.len()
    }

    /// Stop every service, dependants first, then kill anything of the sandbox that is
    /// still alive (PostgreSQL backends, grandchildren).
    pub async fn shutdown_all(&self) {
        let order = self.shared.prepared.topology.stop_order();
        for name in order {
            if let Err(error) = self.stop_service(&name).await {
                tracing::warn!(message = "Stop failed.", service = %name, %error);
            }
        }
        let root = self.shared.prepared.state.root().to_path_buf();
        for pid in procinfo::sandbox_processes(&root) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        self.shared
            .events
            .record("sandbox_down", None, "all services stopped");
        self.write_state_file();
    }

    fn status_of(&self, name: &str) -> Result<ServiceStatus> {
        let slots = self.lock();
        slots
            .get(name)
            .map(Slot::status)
            .ok_or_else(|| self.unknown(name))
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownService {
            name: name.to_string(),
            known: self.shared.prepared.topology.service_names().join(", "),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.shared.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start_service(&self, name: &str) -> Result<ServiceStatus> {
        {
            let mut slots = self.lock();
            let slot = slots.get_mut(name).ok_or_else(|| self.unknown(name))?;
            slot.desired_up = true;
            // A start asked for by a person or an action clears the crash-loop memory.
            slot.recent_restarts.clear();
            slot.consecutive_failures = 0;
            if slot.state.is_alive() || slot.state == ServiceState::Backoff {
                return Ok(slot.status());
            }
        }
        self.spawn(name)?;
        self.status_of(name)
    }

    /// Spawn one run of the service and its waiter task.
    fn spawn(&self, name: &str) -> Result<()> {
        let p = &self.shared.prepared;
        let spec = p.topology.service(name)?.clone();
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.console_log_path)
            .at(&spec.console_log_path)?;
        let console_err = console.try_clone().at(&spec.console_log_path)?;
        let (program, args) = match spec.kind {
            ServiceKind::Postgres => p.cluster.server_command(),
            ServiceKind::TargetApp => (
                p.target_app_bin.clone(),
                vec![
                    "serve".into(),
                    "--env-file".into(),
                    p.state.env_file().display().to_string(),
                ],
            ),
            ServiceKind::Worker => (
                p.target_app_bin.clone(),
                vec![
                    "worker".into(),
                    "--env-file".into(),
                    p.state.env_file().display().to_string(),
                ],
            ),
            ServiceKind::Upstream => (
                p.target_app_bin.clone(),
                vec![
                    "upstream".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", spec.port.unwrap_or(0)),
                    "--name".into(),
                    spec.name.trim_start_matches("upstream-").to_string(),
                ],
            ),
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .env(SANDBOX_MARKER, p.state.root())
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(console_err))
            // Its own process group: signals to the daemon's terminal do not reach it,
            // and a stop can reach its children.
            .process_group(0)
            .kill_on_drop(false);
        if spec.kind == ServiceKind::Upstream {
            cmd.env(
                "UPSTREAM_ADMIN_TOKEN",
                secrets::get_or_create(&p.state, secret::UPSTREAM_ADMIN_TOKEN, 24)?,
            );
        }
        if spec.kind == ServiceKind::Postgres
            && let Some(run_as) = p.cluster.run_as
        {
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
        let mut child = cmd.spawn().map_err(|e| Error::Command {
            command: format!("{} {}", program.display(), args.join(" ")),
            detail: e.to_string(),
        })?;
        let pid = child.id().unwrap_or(0);
        let generation = {
            let mut slots = self.lock();
            let slot = slots.get_mut(name).ok_or_else(|| self.unknown(name))?;
            slot.generation += 1;
            slot.pid = Some(pid);
            slot.state = ServiceState::Starting;
            slot.started_at = Some(Utc::now());
            slot.started_instant = Some(Instant::now());
            slot.health = Health::default();
            slot.generation
        };
        self.shared
            .events
            .record("service_started", Some(name), format!("pid {pid}"));
        self.shared.changed.notify_one();
        let rt = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            rt.on_exit(&name, generation, status).await;
        });
        Ok(())
    }

    async fn on_exit(
        &self,
        name: &str,
        generation: u64,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let exit = match &status {
            Ok(st) => ExitInfo {
                code: st.code(),
                signal: st.signal().map(|s| {
                    Signal::try_from(s)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| s.to_string())
                }),
                at: Utc::now(),
                oom_killed: false,
            },
            Err(e) => ExitInfo {
                code: None,
                signal: Some(format!("wait failed: {e}")),
                at: Utc::now(),
                oom_killed: false,
            },
        };
        let success = exit.code == Some(0);
        let backoff = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(name) else {
                return;
            };
            if slot.generation != generation {
                return;
            }
            let pgid = slot.pid;
            slot.pid = None;
            slot.started_instant = None;
            slot.last_exit = Some(exit.clone());
            slot.health = Health::default();
            // Leftover members of the service's process group go with it.
            if let Some(pgid) = pgid {
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
            }
            if !slot.desired_up {
                slot.state = ServiceState::Stopped;
                None
            } else {
                let policy = slot.spec.restart;
                let restart = match policy.mode {
                    RestartMode::Never => false,
                    RestartMode::OnFailure => !success,
                    RestartMode::Always => true,
                };
                if !restart {
                    slot.state = ServiceState::Exited;
                    None
                } else {
                    let window = Duration::from_secs(policy.window_s);
                    while slot
                        .recent_restarts
                        .front()
                        .is_some_and(|t| t.elapsed() > window)
                    {
                        slot.recent_restarts.pop_front();
                    }
                    if slot.recent_restarts.len() as u32 >= policy.max_restarts {
                        slot.state = ServiceState::Failed;
                        None
                    } else {
                        slot.state = ServiceState::Backoff;
                        let factor = 1u64 << slot.consecutive_failures.min(5);
                        slot.consecutive_failures += 1;
                        Some(Duration::from_millis(
                            (policy.backoff_ms * factor).min(10_000),
                        ))
                    }
                }
            }
        };
        let state = self.status_of(name).map(|s| s.state).ok();
        self.shared.events.record(
            "service_exited",
            Some(name),
            format!(
                "{}; now {}",
                exit.describe(),
                state.map(|s| s.as_str()).unwrap_or("?")
            ),
        );
        if state == Some(ServiceState::Failed) {
            self.shared.events.record(
                "service_failed",
                Some(name),
                "restarted too often in the policy window (crash loop); giving up until started again",
            );
        }
        self.shared.changed.notify_one();
        if let Some(delay) = backoff {
            tokio::time::sleep(delay).await;
            let go = {
                let mut slots = self.lock();
                match slots.get_mut(name) {
                    Some(slot)
                        if slot.desired_up
                            && slot.state == ServiceState::Backoff
                            && slot.generation == generation =>
                    {
                        slot.restarts += 1;
                        slot.recent_restarts.push_back(Instant::now());
                        true
                    }
                    _ => false,
                }
            };
            if go {
                self.shared.events.record(
                    "service_restarting",
                    Some(name),
                    format!("automatic restart after {delay:?} (restart policy)"),
                );
                if let Err(error) = self.spawn(name) {
                    tracing::error!(message = "Restart failed.", service = %name, %error);
                    let mut slots = self.lock();
                    if let Some(slot) = slots.get_mut(name) {
                        slot.state = ServiceState::Failed;
                    }
                }
            }
        }
    }

    async fn stop_service(&self, name: &str) -> Result<ServiceStatus> {
        let (pid, generation, kind) = {
            let mut slots = self.lock();
            let slot = slots.get_mut(name).ok_or_else(|| self.unknown(name))?;
            slot.desired_up = false;
            match slot.pid {
                Some(pid) if slot.state.is_alive() => {
                    slot.state = ServiceState::Stopping;
                    (pid, slot.generation, slot.spec.kind)
                }
                _ => {
                    if slot.state == ServiceState::Backoff || slot.state == ServiceState::Failed {
                        slot.state = ServiceState::Stopped;
                    }
                    return Ok(slot.status());
                }
            }
        };
        self.shared.changed.notify_one();
        let target = Pid::from_raw(pid as i32);
        // PostgreSQL: SIGINT to the postmaster alone is a fast shutdown; the same signal to
        // its backends would only cancel their queries.
        if kind == ServiceKind::Postgres {
            let _ = kill(target, Signal::SIGINT);
        } else {
            let _ = killpg(target, Signal::SIGTERM);
        }
        if !self.wait_exit(name, generation, STOP_GRACE).await {
            tracing::warn!(message = "Service ignored SIGTERM; killing it.", service = %name, pid);
            let _ = killpg(target, Signal::SIGKILL);
            let _ = kill(target, Signal::SIGKILL);
            self.wait_exit(name, generation, Duration::from_secs(5))
                .await;
        }
        self.shared
            .events
            .record("service_stopped", Some(name), "stopped on request");
        self.status_of(name)
    }

    async fn wait_exit(&self, name: &str, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let slots = self.lock();
                match slots.get(name) {
                    Some(s) if s.generation == generation && s.pid.is_some() => {}
                    _ => return true,
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn all_statuses(&self) -> Vec<ServiceStatus> {
        let slots = self.lock();
        // Topology order, not alphabetical: it is the order a person reads.
        self.shared
            .prepared
            .topology
            .services
            .iter()
            .filter_map(|s| slots.get(&s.name).map(Slot::status))
            .collect()
    }

    fn write_state_file(&self) {
        StateFile::write(&self.shared.prepared.state, self.all_statuses());
    }

    async fn persist_loop(self) {
        loop {
            self.write_state_file();
            // Uptimes change even when nothing else does.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.shared.changed.notified()).await;
        }
    }

    async fn probe_loop(self) {
        let mut next_probe: HashMap<String, Instant> = HashMap::new();
        loop {
            let due: Vec<(String, ServiceSpec, u64)> = {
                let slots = self.lock();
                slots
                    .values()
                    .filter(|s| s.state.is_alive() && s.state != ServiceState::Stopping)
                    .filter(|s| {
                        next_probe
                            .get(&s.spec.name)
                            .is_none_or(|t| Instant::now() >= *t)
                    })
                    .map(|s| (s.spec.name.clone(), s.spec.clone(), s.generation))
                    .collect()
            };
            let probes = due.into_iter().map(|(name, spec, generation)| {
                let rt = self.clone();
                async move {
                    let health = rt.probe(&spec).await;
                    (name, generation, health)
                }
            });
            for (name, generation, health) in futures::future::join_all(probes).await {
                let healthy = health.status == HealthStatus::Healthy;
                next_probe.insert(
                    name.clone(),
                    Instant::now()
                        + if healthy {
                            Duration::from_secs(1)
                        } else {
                            Duration::from_millis(100)
                        },
                );
                self.apply_health(&name, generation, health);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn apply_health(&self, name: &str, generation: u64, health: Health) {
        let transition = {
            let mut slots = self.lock();
            let Some(slot) = slots.get_mut(name) else {
                return;
            };
            if slot.generation != generation || !slot.state.is_alive() {
                return;
            }
            let before = slot.health.status;
            let after = health.status;
            if after == HealthStatus::Healthy {
                if slot.state == ServiceState::Starting {
                    slot.state = ServiceState::Running;
                }
                slot.consecutive_failures = 0;
            }
            slot.health = health.clone();
            (before != after).then_some((before, after))
        };
        if let Some((before, after)) = transition {
            crate::health::on_transition(
                &self.shared.prepared.state,
                &self.shared.events,
                name,
                (before, after),
                &health.detail,
            );
            self.shared.changed.notify_one();
        }
    }

    async fn probe(&self, spec: &ServiceSpec) -> Health {
        let up_for = self
            .lock()
            .get(&spec.name)
            .and_then(|s| s.started_instant)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.shared.prober.probe(spec, up_for).await
    }
}

/// What `run/services.json` holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StateFile {
    pub daemon_pid: u32,
    pub written_at: chrono::DateTime<Utc>,
    pub services: Vec<ServiceStatus>,
}

impl StateFile {
    /// Mirror the services' state to `run/services.json`, as this daemon sees it now
    /// (a failure is logged: the file is a convenience for when the daemon is gone).
    pub fn write(state: &crate::StateDir, services: Vec<ServiceStatus>) {
        let json = serde_json::to_vec_pretty(&StateFile {
            daemon_pid: std::process::id(),
            written_at: Utc::now(),
            services,
        })
        .expect("state serializes");
        if let Err(error) = write_atomic(&state.services_file(), &json, 0o644) {
            tracing::warn!(message = "Cannot write the services state file.", %error);
        }
    }

    pub fn read(state: &crate::StateDir) -> Option<Self> {
        let bytes = std::fs::read(state.services_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The last `n` lines of a text file, read from its end (logs can be large).
pub fn tail_lines(path: &std::path::Path, n: usize) -> Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(path),
    };
    let len = f.metadata().at(path)?.len();
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(start)).at(path)?;
        let mut buf = Vec::new();
        f.by_ref()
            .take(len - start)
            .read_to_end(&mut buf)
            .at(path)?;
        let text = String::from_utf8_lossy(&buf);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // partial first line
        }
        if lines.len() >= n || start == 0 {
            let skip = lines.len().saturating_sub(n);
            return Ok(lines[skip..].iter().map(|s| s.to_string()).collect());
        }
        chunk *= 4;
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn topology(&self) -> Result<Topology> {
        Ok(self.shared.prepared.topology.clone())
    }

    async fn services(&self) -> Result<Vec<ServiceStatus>> {
        Ok(self.all_statuses())
    }

    async fn start(&self, name: &str) -> Result<ServiceStatus> {
        self.start_service(name).await
    }

    async fn stop(&self, name: &str) -> Result<ServiceStatus> {
        self.stop_service(name).await
    }

    async fn restart(&self, name: &str) -> Result<ServiceStatus> {
        self.stop_service(name).await?;
        {
            let mut slots = self.lock();
            if let Some(slot) = slots.get_mut(name) {
                slot.restarts += 1;
            }
        }
        self.shared
            .events
            .record("service_restarting", Some(name), "restart requested");
        self.start_service(name).await
    }

    async fn kill(&self, name: &str, signal: KillSignal) -> Result<ServiceStatus> {
        let pid = self
            .status_of(name)?
            .pid
            .ok_or_else(|| Error::Other(format!("{name} has no running process to signal")))?;
        kill(Pid::from_raw(pid as i32), signal.to_nix()).map_err(|e| {
            Error::Other(format!(
                "cannot send {} to {name} (pid {pid}): {e}",
                signal.as_str()
            ))
        })?;
        self.shared.events.record(
            "service_signalled",
            Some(name),
            format!("{} sent to pid {pid}", signal.as_str()),
        );
        if signal == KillSignal::Kill {
            // Let the waiter record the exit before answering.
            let generation = self.lock().get(name).map(|s| s.generation).unwrap_or(0);
            self.wait_exit(name, generation, Duration::from_secs(5))
                .await;
        }
        self.status_of(name)
    }

    async fn stats(&self, name: &str) -> Result<ServiceStats> {
        let status = self.status_of(name)?;
        let spec = self.shared.prepared.topology.service(name)?;
        let limit = spec.memory_limit_mb.map(|mb| mb * 1024 * 1024);
        let Some(pid) = status.pid else {
            return Ok(ServiceStats {
                name: name.to_string(),
                memory_limit_bytes: limit,
                ..Default::default()
            });
        };
        let previous = self
            .shared
            .cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        let previous = match previous {
            // A reading older than a few seconds would average a spike away.
            Some(p) if p.at.elapsed() < Duration::from_secs(5) => p,
            // No recent reading: take two, so the first answer is a real figure.
            _ => {
                let (_, first) = procinfo::tree_stats(name, pid, None);
                tokio::time::sleep(Duration::from_millis(200)).await;
                first
            }
        };
        let (mut stats, sample) = procinfo::tree_stats(name, pid, Some(previous));
        stats.memory_limit_bytes = limit;
        self.shared
            .cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), sample);
        Ok(stats)
    }

    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>> {
        let spec = self.shared.prepared.topology.service(name)?;
        tail_lines(&spec.log_path, tail)
    }
}

/// Read a key of the target's `.env` (for callers that need, say, the listen address).
pub fn read_env_key(state: &crate::StateDir, key: &str) -> Result<Option<String>> {
    Ok(EnvFile::read(&state.env_file())?
        .get(key)
        .map(str::to_string))
}
