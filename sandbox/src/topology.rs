//! The sandbox's topology: which services exist, their ports, dependencies and logs.
//!
//! Written once to `topology.json` when a sandbox is first prepared, so ports stay stable
//! across restarts and other crates (observation, chaos, remediation) can ask where
//! things are without a running daemon.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::paths::{StateDir, write_atomic};

/// Service names, written once.
pub mod names {
    pub const POSTGRES: &str = "postgres";
    pub const TARGET_APP: &str = "target-app";
    pub const WORKER: &str = "worker";
    pub const UPSTREAM_PRIMARY: &str = "upstream-primary";
    pub const UPSTREAM_FALLBACK: &str = "upstream-fallback";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Postgres,
    TargetApp,
    Worker,
    Upstream,
}

impl ServiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::TargetApp => "target_app",
            Self::Worker => "worker",
            Self::Upstream => "upstream",
        }
    }
}

/// When the supervisor restarts a service that exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Never,
    /// On a non-zero exit code or a signal.
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub mode: RestartMode,
    /// More than this many automatic restarts within `window_s` and the service is
    /// marked `failed` (a crash loop the supervisor will not feed forever).
    pub max_restarts: u32,
    pub window_s: u64,
    /// First backoff; doubles on each consecutive failure, capped at 10 s.
    pub backoff_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::OnFailure,
            max_restarts: 5,
            window_s: 60,
            backoff_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub kind: ServiceKind,
    /// Main port (public API, PostgreSQL, upstream).
    pub port: Option<u16>,
    /// The target's admin listener (failpoints), loopback only.
    pub admin_port: Option<u16>,
    /// Base URL for HTTP services.
    pub url: Option<String>,
    /// Probed by the supervisor; 200 means healthy.
    pub health_url: Option<String>,
    pub depends_on: Vec<String>,
    /// The log the service itself writes (JSON lines for target-app and worker).
    pub log_path: PathBuf,
    /// Captured stdout/stderr of the process.
    pub console_log_path: PathBuf,
    pub restart: RestartPolicy,
    pub memory_limit_mb: Option<u64>,
}

/// The whole sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Topology {
    pub runtime: String,
    pub state_dir: PathBuf,
    pub services: Vec<ServiceSpec>,
    pub database: DatabaseInfo,
}

/// Where the sandbox's database is; no secrets here (they live under `secrets/`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub app_user: String,
    pub admin_user: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub postgres: u16,
    pub target: u16,
    pub target_admin: u16,
    pub upstream_primary: u16,
    pub upstream_fallback: u16,
}

impl Ports {
    /// Preferred ports when free (the original system's target listened on 8000); any
    /// busy one, or all when `random` is set (tests running side by side), is replaced by
    /// a free port chosen by the kernel.
    pub fn allocate(random: bool) -> Result<Self> {
        let mut taken = Vec::new();
        let mut pick = |preferred: u16| -> Result<u16> {
            let port = if !random && port_is_free(preferred) && !taken.contains(&preferred) {
                preferred
            } else {
                free_port(&taken)?
            };
            taken.push(port);
            Ok(port)
        };
        Ok(Self {
            postgres: pick(55432)?,
            target: pick(8000)?,
            target_admin: pick(8001)?,
            upstream_primary: pick(8101)?,
            upstream_fallback: pick(8102)?,
        })
    }
}

pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A free port below the kernel's ephemeral range (32768+ on Linux): a port taken from
/// that range and released can be handed out again as the source port of any outgoing
/// connection before our service binds it, which made parallel sandboxes flaky.
fn free_port(avoid: &[u16]) -> Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(20_000..32_000u16);
        if !avoid.contains(&port) && port_is_free(port) {
            return Ok(port);
        }
    }
    Err(Error::Other(
        "cannot find a free port in 20000–31999 after 200 tries".into(),
    ))
}

pub const DATABASE_NAME: &str = "shop";
pub const APP_USER: &str = "shop_app";
pub const ADMIN_USER: &str = "aiops_admin";

impl Topology {
    pub fn build(state: &StateDir, ports: Ports) -> Self {
        let logs = state.logs_dir();
        let http = |p: u16| format!("http://127.0.0.1:{p}");
        let svc = |name: &str, kind, port: u16, health: Option<String>, deps: &[&str]| {
            let own_log = matches!(kind, ServiceKind::TargetApp | ServiceKind::Worker);
            let log_path = logs.join(format!("{name}.log"));
            ServiceSpec {
                name: name.to_string(),
                kind,
                port: Some(port),
                admin_port: None,
                url: (kind != ServiceKind::Postgres).then(|| http(port)),
                health_url: health,
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                console_log_path: if own_log {
                    logs.join(format!("{name}.console.log"))
                } else {
                    log_path.clone()
                },
                log_path,
                restart: RestartPolicy::default(),
                memory_limit_mb: None,
            }
        };
        use names::*;
        let mut target = svc(
            TARGET_APP,
            ServiceKind::TargetApp,
            ports.target,
            Some(format!("{}/readyz", http(ports.target))),
            &[POSTGRES, UPSTREAM_PRIMARY, UPSTREAM_FALLBACK],
        );
        target.admin_port = Some(ports.target_admin);
        let mut worker = svc(WORKER, ServiceKind::Worker, 0, None, &[POSTGRES]);
        worker.port = None;
        worker.url = None;
        Topology {
            runtime: "process".into(),
            state_dir: state.root().to_path_buf(),
            services: vec![
                svc(POSTGRES, ServiceKind::Postgres, ports.postgres, None, &[]),
                svc(
                    UPSTREAM_PRIMARY,
                    ServiceKind::Upstream,
                    ports.upstream_primary,
                    Some(format!("{}/healthz", http(ports.upstream_primary))),
                    &[],
                ),
                svc(
                    UPSTREAM_FALLBACK,
                    ServiceKind::Upstream,
                    ports.upstream_fallback,
                    Some(format!("{}/healthz", http(ports.upstream_fallback))),
                    &[],
                ),
                target,
                worker,
            ],
            database: DatabaseInfo {
                host: "127.0.0.1".into(),
                port: ports.postgres,
                database: DATABASE_NAME.into(),
                app_user: APP_USER.into(),
                admin_user: ADMIN_USER.into(),
            },
        }
    }

    /// Set the runtime and its defaults: on Docker every service gets a memory limit (the
    /// container's; crossing it is an OOM kill), on local processes none (nothing would
    /// enforce it). Restart policies go back to the default; `aiops.toml` may then
    /// override both ([`crate::config::SandboxConfig::apply`]).
    pub fn apply_runtime_defaults(&mut self, runtime: crate::config::RuntimeKind) {
        use crate::config::RuntimeKind;
        self.runtime = runtime.as_str().to_string();
        for s in &mut self.services {
            s.restart = RestartPolicy::default();
            s.memory_limit_mb = match (runtime, s.kind) {
                (RuntimeKind::Process, _) => None,
                (RuntimeKind::Docker, ServiceKind::Postgres) => Some(512),
                (RuntimeKind::Docker, ServiceKind::TargetApp) => Some(256),
                (RuntimeKind::Docker, ServiceKind::Worker) => Some(128),
                (RuntimeKind::Docker, ServiceKind::Upstream) => Some(64),
            };
        }
    }

    pub fn load(state: &StateDir) -> Result<Option<Self>> {
        let path = state.topology_file();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::InvalidState {
                        path,
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    pub fn save(&self, state: &StateDir) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("topology serializes");
        write_atomic(&state.topology_file(), &json, 0o644)
    }

    pub fn service(&self, name: &str) -> Result<&ServiceSpec> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::UnknownService {
                name: name.to_string(),
                known: self.service_names().join(", "),
            })
    }

    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name.as_str()).collect()
    }

    /// Base URL of the target's public API.
    pub fn target_url(&self) -> Option<String> {
        self.service(names::TARGET_APP).ok()?.url.clone()
    }

    /// Service names in the order to stop them: dependants first.
    pub fn stop_order(&self) -> Vec<String> {
        self.start_order()
            .iter()
            .rev()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Services in an order that respects `depends_on`.
    pub fn start_order(&self) -> Vec<&ServiceSpec> {
        let mut done: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        while out.len() < self.services.len() {
            let before = out.len();
            for s in &self.services {
                if !done.contains(&s.name.as_str())
                    && s.depends_on.iter().all(|d| done.contains(&d.as_str()))
                {
                    done.push(&s.name);
                    out.push(s);
                }
            }
            if out.len() == before {
                // A cycle: append the rest as declared rather than loop forever.
                out.extend(
                    self.services
                        .iter()
                        .filter(|s| !done.contains(&s.name.as_str())),
                );
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_order_puts_dependencies_first() {
        let state = StateDir::new("/tmp/aiops-topology-test");
        let ports = Ports {
            postgres: 1,
            target: 2,
            target_admin: 3,
            upstream_primary: 4,
            upstream_fallback: 5,
        };
        let t = Topology::build(&state, ports);
        let order: Vec<_> = t.start_order().iter().map(|s| s.name.clone()).collect();
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert!(pos("postgres") < pos("target-app"));
        assert!(pos("upstream-primary") < pos("target-app"));
        assert!(pos("postgres") < pos("worker"));
        assert_eq!(order.len(), 5);
    }
}
