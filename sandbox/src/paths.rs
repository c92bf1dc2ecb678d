//! The state dir: where a sandbox keeps everything it owns.
//!
//! Default `./.aiops`, overridden by `AIOPS_HOME`. Every other crate asks this module for
//! a path instead of joining strings, so the layout is written down once.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The root of one sandbox's state.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `AIOPS_HOME` if set, else `./.aiops`; always made absolute.
    pub fn from_env() -> Self {
        let raw = std::env::var_os("AIOPS_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".aiops"));
        Self::new(raw)
    }

    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&root))
                .unwrap_or(root)
        };
        Self { root }
    }

    /// Create the directories that must exist before anything starts.
    pub fn create(&self) -> Result<()> {
        for dir in [
            self.root.clone(),
            self.logs_dir(),
            self.run_dir(),
            self.cache_dir(),
            self.secrets_dir(),
        ] {
            std::fs::create_dir_all(&dir).at(&dir)?;
        }
        // Secrets are readable by the operator only.
        set_mode(&self.secrets_dir(), 0o700)?;
        // PostgreSQL runs as an unprivileged user when we are root: it must be able to
        // traverse the root of the state dir to reach its data dir.
        set_mode(&self.root, 0o755)?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn pg_data_dir(&self) -> PathBuf {
        self.root.join("pgdata")
    }
    /// The target's configuration, as the target reads it.
    pub fn env_file(&self) -> PathBuf {
        self.root.join("target-app.env")
    }
    /// The last `.env` with which the target was seen healthy.
    pub fn env_last_known_good(&self) -> PathBuf {
        self.root.join("target-app.env.last-known-good")
    }
    pub fn topology_file(&self) -> PathBuf {
        self.root.join("topology.json")
    }
    /// Live service states, rewritten by the supervisor on every change.
    pub fn services_file(&self) -> PathBuf {
        self.run_dir().join("services.json")
    }
    pub fn daemon_pid_file(&self) -> PathBuf {
        self.run_dir().join("daemon.pid")
    }
    /// Where the daemon says which address it listens on.
    pub fn endpoint_file(&self) -> PathBuf {
        self.run_dir().join("endpoint.json")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.logs_dir().join("aiops.log")
    }
    pub fn events_file(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    /// Bearer token for the HTTP listener (control API and MCP).
    pub fn token_file(&self) -> PathBuf {
        self.secrets_dir().join("http-token")
    }
    pub fn secret_file(&self, name: &str) -> PathBuf {
        self.secrets_dir().join(name)
    }
    pub fn config_file(&self) -> PathBuf {
        self.root.join("aiops.toml")
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).at(path)
}

/// Write a file atomically: temp file in the same dir, fsync, rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(contents).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    Ok(())
}
