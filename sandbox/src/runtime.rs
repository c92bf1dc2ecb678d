//! The `Runtime` abstraction: what any sandbox runtime (local processes today, Docker
//! through bollard later) must offer to the rest of the system.
//!
//! Observation tools, faults and actions talk to this trait only, so they work on every
//! runtime. A runtime that cannot do something returns [`crate::Error::Other`] saying so.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::topology::Topology;

/// What a service is doing, as the supervisor (or the container engine) sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Spawned; not yet seen healthy.
    Starting,
    Running,
    Stopping,
    /// Stopped on purpose.
    Stopped,
    /// Exited on its own and will not be restarted (policy says so).
    Exited,
    /// Exited on its own; a restart is scheduled.
    Backoff,
    /// Restarted too often in too short a time; the supervisor gave up.
    Failed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Exited => "exited",
            Self::Backoff => "backoff",
            Self::Failed => "failed",
        }
    }

    /// A process exists for the service.
    pub fn is_alive(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Stopping)
    }
}

/// How the last run of a service ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// Signal name (e.g. `SIGKILL`), when a signal ended it.
    pub signal: Option<String>,
    pub at: DateTime<Utc>,
    /// Killed by the kernel's OOM killer (Docker reports it; on processes we infer it from
    /// SIGKILL under a memory limit).
    pub oom_killed: bool,
}

impl ExitInfo {
    pub fn describe(&self) -> String {
        match (&self.code, &self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by {s}"),
            (None, None) => "unknown exit".to_string(),
        }
    }
}

/// Health as probed by the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    /// Why it is unhealthy (probe error or response), empty when healthy.
    pub detail: String,
    pub checked_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            status: HealthStatus::Unknown,
            detail: String::new(),
            checked_at: None,
            latency_ms: None,
        }
    }
}

/// One service's state, as reported by `aiops status` and the observation tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub started_at: Option<DateTime<Utc>>,
    pub uptime_s: Option<u64>,
    /// Restarts since the sandbox came up (automatic and requested).
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub health: Health,
    pub port: Option<u16>,
    pub log_path: String,
}

/// Resource use of one service (its main process and its children).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    pub pid: Option<u32>,
    /// CPU use over the last sampling interval, in percent of one core.
    pub cpu_percent: f64,
    pub cpu_seconds_total: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    /// Processes in the service's process tree, the main one excluded.
    pub children: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Memory the limit counts (a container's cgroup usage, page cache that can be
    /// dropped left out), when the runtime knows it: the Docker runtime, from the stats
    /// API. `rss_bytes` is the process tree's resident memory on every runtime.
    #[serde(default)]
    pub memory_usage_bytes: Option<u64>,
}

/// Which signal to send with [`Runtime::kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KillSignal {
    Term,
    Kill,
    Int,
    Stop,
    Cont,
}

impl KillSignal {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim_start_matches("SIG").to_ascii_uppercase().as_str() {
            "TERM" => Some(Self::Term),
            "KILL" => Some(Self::Kill),
            "INT" => Some(Self::Int),
            "STOP" => Some(Self::Stop),
            "CONT" => Some(Self::Cont),
            _ => None,
        }
    }
    /// The signal to send, for `kill(2)`.
    pub fn to_nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal;
        match self {
            Self::Term => Signal::SIGTERM,
            Self::Kill => Signal::SIGKILL,
            Self::Int => Signal::SIGINT,
            Self::Stop => Signal::SIGSTOP,
            Self::Cont => Signal::SIGCONT,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Term => "SIGTERM",
            Self::Kill => "SIGKILL",
            Self::Int => "SIGINT",
            Self::Stop => "SIGSTOP",
            Self::Cont => "SIGCONT",
        }
    }
}

/// A sandbox runtime. Implemented by the process supervisor (in the `aiops` daemon), by
/// the control-API client (for every other process), and later by the Docker runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// `process` or `docker`.
    fn kind(&self) -> &'static str;
    async fn topology(&self) -> Result<Topology>;
    async fn services(&self) -> Result<Vec<ServiceStatus>>;
    async fn service(&self, name: &str) -> Result<ServiceStatus> {
        let all = self.services().await?;
        let known = all
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        all.iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| crate::Error::UnknownService {
                name: name.to_string(),
                known,
            })
    }
    async fn start(&self, name: &str) -> Result<ServiceStatus>;
    async fn stop(&self, name: &str) -> Result<ServiceStatus>;
    async fn restart(&self, name: &str) -> Result<ServiceStatus>;
    /// Send a signal; what follows (restart or not) is the service's restart policy.
    async fn kill(&self, name: &str, signal: KillSignal) -> Result<ServiceStatus>;
    async fn stats(&self, name: &str) -> Result<ServiceStats>;
    /// The last `tail` lines of the service's main log.
    async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>>;
}

/// Wait until `name` is probed healthy; fail early, saying why, if it stops trying
/// (failed, exited, stopped), or after `timeout`.
pub async fn wait_healthy(
    rt: &(impl Runtime + ?Sized),
    name: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let status = rt.service(name).await?;
        if status.health.status == HealthStatus::Healthy && status.state.is_alive() {
            return Ok(());
        }
        if matches!(
            status.state,
            ServiceState::Failed | ServiceState::Exited | ServiceState::Stopped
        ) {
            return Err(crate::Error::Other(format!(
                "{name} is {} ({}); see `aiops logs {name}`",
                status.state.as_str(),
                status
                    .last_exit
                    .map(|e| e.describe())
                    .unwrap_or_else(|| "no exit recorded".into())
            )));
        }
        if std::time::Instant::now() >= deadline {
            return Err(crate::Error::Other(format!(
                "{name} not healthy after {timeout:?}: {}",
                status.health.detail
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What the daemon needs of the runtime it owns, beyond [`Runtime`]: the lifecycle of the
/// whole sandbox. Implemented by the process supervisor and the Docker runtime; other
/// processes only ever see [`Runtime`] (through the control API). The order of a start
/// is the same on every runtime, so it is written once here.
#[async_trait::async_trait]
pub trait Lifecycle: Runtime {
    /// The sandbox timeline this runtime records service events on.
    fn events(&self) -> std::sync::Arc<crate::events::EventLog>;
    /// The prepared sandbox the runtime runs.
    fn prepared(&self) -> &crate::prepare::Prepared;
    /// Remove whatever a previous daemon left running for this sandbox; how many.
    async fn reap_leftovers(&self) -> usize;
    /// Stop everything, dependants first, and leave nothing of the sandbox running.
    async fn shutdown_all(&self);

    /// PostgreSQL, healthy, with the app role and database in place. Split from
    /// [`Lifecycle::start_services`] so the daemon can revert leftover faults (some need
    /// the database) before the target starts.
    async fn start_database(&self) -> Result<()> {
        use crate::topology::names::POSTGRES;
        self.start(POSTGRES).await?;
        wait_healthy(self, POSTGRES, std::time::Duration::from_secs(60)).await?;
        crate::prepare::ensure_app_database(self.prepared()).await
    }

    /// Every service but PostgreSQL, in dependency order.
    async fn start_services(&self) -> Result<()> {
        let topology = self.prepared().topology.clone();
        for spec in topology.start_order() {
            if spec.name != crate::topology::names::POSTGRES {
                self.start(&spec.name).await?;
            }
        }
        self.events()
            .record("sandbox_up", None, "all services started");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Lifecycle for crate::supervisor::ProcessRuntime {
    fn events(&self) -> std::sync::Arc<crate::events::EventLog> {
        crate::supervisor::ProcessRuntime::events(self).clone()
    }
    fn prepared(&self) -> &crate::prepare::Prepared {
        crate::supervisor::ProcessRuntime::prepared(self)
    }
    async fn reap_leftovers(&self) -> usize {
        crate::supervisor::ProcessRuntime::reap_leftovers(self).await
    }
    async fn shutdown_all(&self) {
        crate::supervisor::ProcessRuntime::shutdown_all(self).await
    }
}

#[async_trait::async_trait]
impl Lifecycle for crate::docker::DockerRuntime {
    fn events(&self) -> std::sync::Arc<crate::events::EventLog> {
        crate::docker::DockerRuntime::events(self).clone()
    }
    fn prepared(&self) -> &crate::prepare::Prepared {
        crate::docker::DockerRuntime::prepared(self)
    }
    async fn reap_leftovers(&self) -> usize {
        crate::docker::DockerRuntime::reap_leftovers(self).await
    }
    async fn shutdown_all(&self) {
        crate::docker::DockerRuntime::shutdown_all(self).await
    }
}
