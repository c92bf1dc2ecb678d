//! The write-ahead ledger: one JSON file per fault under `$STATE/chaos/faults/`, rewritten
//! atomically (temp file, fsync, rename, fsync of the directory) on every state change.
//!
//! An entry is written with state `injecting` and everything needed to undo the fault
//! (`undo`) *before* the fault touches anything, so a SIGKILL at any point leaves enough
//! on disk for [`crate::ChaosEngine::reap`] to put things back. `history` keeps every
//! state transition with its time, which makes the write-ahead order checkable.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ChaosError, FaultRecord};

/// Ended entries kept on disk; older ones are deleted.
const KEEP_ENDED: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Transition {
    pub at: DateTime<Utc>,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub record: FaultRecord,
    /// Fault-specific data needed to revert (original `.env`, cache files, limits...).
    pub undo: Value,
    pub history: Vec<Transition>,
}

impl Entry {
    pub fn set_state(&mut self, state: &str) {
        self.record.state = state.to_string();
        self.history.push(Transition {
            at: Utc::now(),
            state: state.to_string(),
        });
    }
}

#[derive(Debug)]
pub(crate) struct Ledger {
    dir: PathBuf,
    /// Serialises writers: `write_atomic` names its temp file after the pid only.
    write_lock: std::sync::Mutex<()>,
}

impl Ledger {
    pub fn new(state: &aiops_sandbox::StateDir) -> Self {
        Self {
            dir: state.root().join("chaos").join("faults"),
            write_lock: std::sync::Mutex::new(()),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn write(&self, entry: &Entry) -> Result<(), ChaosError> {
        use std::os::unix::fs::PermissionsExt;
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let err = |e: &dyn std::fmt::Display| {
            ChaosError::Ledger(format!("cannot write {}: {e}", self.dir.display()))
        };
        if !self.dir.exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| err(&e))?;
            // The undo data holds the original `.env` (with credentials): operator only.
            if let Some(parent) = self.dir.parent() {
                let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
            }
        }
        let json = serde_json::to_vec_pretty(entry).map_err(|e| err(&e))?;
        aiops_sandbox::paths::write_atomic(&self.path(&entry.record.id), &json, 0o600)
            .map_err(|e| err(&e))?;
        // The rename is durable only once the directory itself is synced.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(&e))?;
        Ok(())
    }

    pub fn load(&self, id: &str) -> Result<Option<Entry>, ChaosError> {
        // Ids are ours (`f-` + hex); anything else cannot name a file of the ledger.
        if !id.starts_with("f-") || !id[2..].chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        match std::fs::read(self.path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ChaosError::Ledger(format!("ledger entry {id} is unreadable: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ChaosError::Ledger(format!("cannot read entry {id}: {e}"))),
        }
    }

    /// Every readable entry, oldest first.
    pub fn all(&self) -> Result<Vec<Entry>, ChaosError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ChaosError::Ledger(format!(
                    "cannot list {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut out = Vec::new();
        for item in rd.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(e) => out.push(e),
                Err(error) => {
                    tracing::warn!(message = "Skipping an unreadable ledger entry.", path = %path.display(), %error)
                }
            }
        }
        out.sort_by_key(|e| e.record.injected_at);
        Ok(out)
    }

    /// Delete the oldest ended entries beyond [`KEEP_ENDED`].
    pub fn prune(&self) {
        let Ok(all) = self.all() else { return };
        let mut ended: Vec<_> = all.into_iter().filter(|e| e.record.is_ended()).collect();
        if ended.len() <= KEEP_ENDED {
            return;
        }
        ended.sort_by_key(|e| e.record.ended_at);
        let excess = ended.len() - KEEP_ENDED;
        for e in &ended[..excess] {
            let _ = std::fs::remove_file(self.path(&e.record.id));
        }
    }
}
