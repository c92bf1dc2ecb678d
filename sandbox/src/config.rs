//! The `[sandbox]` table of `aiops.toml`: which runtime runs the sandbox, and per-service
//! memory limits and restart policies. Other tables of the file belong to other crates
//! (`[policy]` to remediation) and are not read here.
//!
//! ```toml
//! [sandbox]
//! runtime = "docker"          # or "process" (the default)
//!
//! [sandbox.services.target-app]
//! memory_limit_mb = 256       # enforced by the Docker runtime (the container's limit)
//! restart = "on-failure"      # never | on-failure | always
//! max_restarts = 5            # on-failure: give up (crash loop) after this many
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::paths::StateDir;
use crate::topology::{RestartMode, Topology};

/// Which runtime runs the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Local processes under the daemon's supervisor (no Docker needed).
    #[default]
    Process,
    /// Containers through the Docker engine's API.
    Docker,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Docker => "docker",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "process" => Ok(Self::Process),
            "docker" => Ok(Self::Docker),
            other => Err(Error::Other(format!(
                "unknown runtime `{other}`; the runtimes are `process` (local processes, \
                 the default) and `docker` (containers)"
            ))),
        }
    }
}

/// Overrides for one service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverride {
    /// Memory limit in MiB (the Docker runtime makes it the container's limit; crossing it
    /// is an OOM kill). The process runtime does not enforce it.
    pub memory_limit_mb: Option<u64>,
    /// `never`, `on-failure` or `always`.
    pub restart: Option<RestartMode>,
    /// Automatic restarts before the service is marked failed (a crash loop).
    pub max_restarts: Option<u32>,
}

/// The `[sandbox]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub runtime: Option<RuntimeKind>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceOverride>,
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    sandbox: SandboxConfig,
}

impl SandboxConfig {
    /// The `[sandbox]` table of `$STATE/aiops.toml`; defaults when there is no file.
    pub fn load(state: &StateDir) -> Result<Self> {
        let path = state.config_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::Other(format!("cannot read {}: {e}", path.display()))),
        };
        Self::from_toml(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| format!("invalid [sandbox]: {e}"))?;
        Ok(file.sandbox)
    }

    /// Apply the per-service overrides to `topology`; an unknown service is an error
    /// that names the known ones.
    pub fn apply(&self, topology: &mut Topology) -> Result<()> {
        for (name, o) in &self.services {
            let known = topology.service_names().join(", ");
            let spec = topology
                .services
                .iter_mut()
                .find(|s| &s.name == name)
                .ok_or_else(|| Error::UnknownService {
                    name: name.clone(),
                    known,
                })?;
            if let Some(mb) = o.memory_limit_mb {
                if mb < 16 {
                    return Err(Error::Other(format!(
                        "[sandbox.services.{name}] memory_limit_mb = {mb} is below the minimum \
                         of 16 MiB"
                    )));
                }
                spec.memory_limit_mb = Some(mb);
            }
            if let Some(mode) = o.restart {
                spec.restart.mode = mode;
            }
            if let Some(n) = o.max_restarts {
                spec.restart.max_restarts = n;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Ports;

    #[test]
    fn overrides_apply_and_typos_are_errors() {
        let cfg = SandboxConfig::from_toml(
            "[policy]\nread_only = false\n[sandbox]\nruntime = \"docker\"\n\
             [sandbox.services.target-app]\nmemory_limit_mb = 128\nrestart = \"always\"\n",
        )
        .unwrap();
        assert_eq!(cfg.runtime, Some(RuntimeKind::Docker));
        let state = StateDir::new("/tmp/aiops-config-test");
        let ports = Ports {
            postgres: 1,
            target: 2,
            target_admin: 3,
            upstream_primary: 4,
            upstream_fallback: 5,
        };
        let mut t = Topology::build(&state, ports);
        cfg.apply(&mut t).unwrap();
        let target = t.service("target-app").unwrap();
        assert_eq!(target.memory_limit_mb, Some(128));
        assert_eq!(target.restart.mode, RestartMode::Always);

        let err = SandboxConfig::from_toml("[sandbox]\nruntme = \"docker\"\n").unwrap_err();
        assert!(err.contains("runtme"), "{err}");
        let err = SandboxConfig::from_toml("[sandbox]\nruntime = \"podman\"\n").unwrap_err();
        assert!(err.contains("podman"), "{err}");
        let bad = SandboxConfig::from_toml("[sandbox.services.nope]\nmax_restarts = 1\n").unwrap();
        let msg = bad.apply(&mut t).unwrap_err().to_string();
        assert!(msg.contains("nope") && msg.contains("target-app"), "{msg}");
    }
}
