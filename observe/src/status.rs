//! `sandbox_status` and `process_stats`: what the runtime says about each service.
//!
//! Not responsible for probing the services ourselves (that is [`crate::health`]).

use schemars::JsonSchema;
use serde::Serialize;

use crate::util::{pretty_bytes, truncate_chars};
use crate::{ObserveError, Observer, Summary};

/// How the last run of a service ended.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExitView {
    /// Exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// Signal name (e.g. SIGKILL), when a signal ended it.
    pub signal: Option<String>,
    /// When it ended (RFC 3339).
    pub at: String,
    /// e.g. `exit code 78` or `killed by SIGKILL`.
    pub description: String,
}

/// One service as the runtime sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceView {
    pub name: String,
    /// postgres, target_app, worker or upstream.
    pub kind: String,
    /// starting, running, stopping, stopped, exited, backoff or failed.
    pub state: String,
    pub pid: Option<u32>,
    pub uptime_s: Option<u64>,
    /// Restarts since the sandbox came up.
    pub restarts: u32,
    pub last_exit: Option<ExitView>,
    /// The last exit was the kernel's OOM killer.
    pub oom_killed: bool,
    /// healthy, unhealthy or unknown (the supervisor's own probe).
    pub health: String,
    /// Why it is unhealthy, empty when healthy.
    pub health_detail: String,
    pub port: Option<u16>,
}

/// The sandbox's services.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SandboxStatus {
    /// `process` (local supervised processes) or `docker`.
    pub runtime: String,
    /// The daemon answered (always true when this report exists; an unreachable daemon
    /// is the error SandboxUnavailable).
    pub daemon_reachable: bool,
    pub services: Vec<ServiceView>,
    /// Every service is running.
    pub all_running: bool,
}

impl Summary for SandboxStatus {
    fn summary(&self) -> String {
        let running = self
            .services
            .iter()
            .filter(|s| s.state == "running")
            .count();
        let mut s = format!(
            "{}/{} services running ({} runtime).",
            running,
            self.services.len(),
            self.runtime
        );
        for v in &self.services {
            s.push_str(&format!(
                "\n  {}: {} pid {} health {}{} restarts {}{}",
                v.name,
                v.state,
                v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                v.health,
                if v.health_detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", v.health_detail)
                },
                v.restarts,
                v.last_exit
                    .as_ref()
                    .map(|e| format!(", last exit {} at {}", e.description, e.at))
                    .unwrap_or_default()
            ));
        }
        s
    }
}

pub(crate) async fn sandbox_status(obs: &Observer) -> Result<SandboxStatus, ObserveError> {
    let services = obs.runtime().services().await.map_err(unavailable)?;
    let scrub = obs.scrubber();
    let views: Vec<ServiceView> = services
        .into_iter()
        .map(|s| ServiceView {
            oom_killed: s.last_exit.as_ref().is_some_and(|e| e.oom_killed),
            last_exit: s.last_exit.map(|e| ExitView {
                description: e.describe(),
                code: e.code,
                signal: e.signal,
                at: e.at.to_rfc3339(),
            }),
            name: s.name,
            kind: s.kind,
            state: s.state.as_str().to_string(),
            pid: s.pid,
            uptime_s: s.uptime_s,
            restarts: s.restarts,
            health: s.health.status.as_str().to_string(),
            health_detail: truncate_chars(&scrub.scrub(&s.health.detail), 300),
            port: s.port,
        })
        .collect();
    Ok(SandboxStatus {
        runtime: obs.runtime().kind().to_string(),
        daemon_reachable: true,
        all_running: !views.is_empty() && views.iter().all(|v| v.state == "running"),
        services: views,
    })
}

/// Any runtime failure to list services means we cannot see the sandbox at all.
fn unavailable(e: aiops_sandbox::Error) -> ObserveError {
    match e {
        aiops_sandbox::Error::NotRunning(_) => ObserveError::SandboxUnavailable(e.to_string()),
        other => ObserveError::SandboxUnavailable(format!(
            "the sandbox runtime did not answer ({other}); is the sandbox up? start it with \
             `aiops up`"
        )),
    }
}

/// Resource use of one service.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessStatsEntry {
    pub name: String,
    pub pid: Option<u32>,
    /// CPU over the runtime's last sampling interval, percent of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    /// Processes in the service's tree besides the main one.
    pub children: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Memory the limit counts (the container's usage), on runtimes that enforce one
    /// (Docker): at the limit the kernel OOM-kills the service.
    pub memory_usage_bytes: Option<u64>,
    /// Why the runtime could not say (service stopped, ...).
    pub error: Option<String>,
}

/// Resource use of every service.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessStatsReport {
    pub services: Vec<ProcessStatsEntry>,
}

impl Summary for ProcessStatsReport {
    fn summary(&self) -> String {
        let mut s = format!("Resource use of {} services:", self.services.len());
        for e in &self.services {
            match &e.error {
                Some(err) => s.push_str(&format!("\n  {}: unavailable ({err})", e.name)),
                None => s.push_str(&format!(
                    "\n  {}: pid {} cpu {:.1} % rss {} threads {} fds {} children {}{}",
                    e.name,
                    e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    e.cpu_percent,
                    pretty_bytes(e.rss_bytes),
                    e.threads,
                    e.open_fds,
                    e.children,
                    match (e.memory_usage_bytes, e.memory_limit_bytes) {
                        (Some(u), Some(l)) => format!(
                            " memory {} of limit {} ({:.0} %)",
                            pretty_bytes(u),
                            pretty_bytes(l),
                            u as f64 * 100.0 / l.max(1) as f64
                        ),
                        (_, Some(l)) => format!(" limit {}", pretty_bytes(l)),
                        _ => String::new(),
                    }
                )),
            }
        }
        s
    }
}

pub(crate) async fn process_stats(obs: &Observer) -> Result<ProcessStatsReport, ObserveError> {
    let topo = obs.topology().await?;
    let names: Vec<String> = topo.services.iter().map(|s| s.name.clone()).collect();
    let results = futures::future::join_all(names.iter().map(|n| obs.runtime().stats(n))).await;
    let scrub = obs.scrubber();
    let mut services = Vec::new();
    let mut unreachable = 0;
    for (name, r) in names.into_iter().zip(results) {
        services.push(match r {
            Ok(s) => ProcessStatsEntry {
                name,
                pid: s.pid,
                cpu_percent: s.cpu_percent,
                rss_bytes: s.rss_bytes,
                threads: s.threads,
                open_fds: s.open_fds,
                children: s.children,
                memory_limit_bytes: s.memory_limit_bytes,
                memory_usage_bytes: s.memory_usage_bytes,
                error: None,
            },
            Err(e) => {
                if matches!(e, aiops_sandbox::Error::NotRunning(_)) {
                    unreachable += 1;
                }
                ProcessStatsEntry {
                    name,
                    pid: None,
                    cpu_percent: 0.0,
                    rss_bytes: 0,
                    threads: 0,
                    open_fds: 0,
                    children: 0,
                    memory_limit_bytes: None,
                    memory_usage_bytes: None,
                    error: Some(truncate_chars(&scrub.scrub(&e.to_string()), 300)),
                }
            }
        });
    }
    if unreachable > 0 && unreachable == services.len() {
        return Err(ObserveError::SandboxUnavailable(
            "the sandbox daemon is not reachable; start the sandbox with `aiops up`".into(),
        ));
    }
    Ok(ProcessStatsReport { services })
}
