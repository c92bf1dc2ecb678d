//! The append-only audit log (`$STATE/audit/audit.jsonl`) and the approval files
//! (`$STATE/approvals/{id}.json`).
//!
//! Responsible for: writing each audit line and fsyncing it before the caller goes on,
//! redacting secrets (by key name and by value: every value found under `secrets/` is
//! replaced wherever it appears), counting recent restarts from the log, and the approval
//! state machine `pending → approved|denied → executed`. Everything is a file, so the
//! daemon, a stdio MCP server and the CLI share it.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RemediationError;

pub(crate) struct AuditLog {
    path: PathBuf,
    secrets_dir: PathBuf,
}

impl AuditLog {
    pub fn new(dir: &Path, secrets_dir: &Path) -> Self {
        Self {
            path: dir.join("audit.jsonl"),
            secrets_dir: secrets_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line and fsync it; any failure means the caller must not act.
    pub fn append(&self, entry: &Value) -> Result<(), RemediationError> {
        let mut line = redact_values(
            &serde_json::to_string(entry).unwrap_or_default(),
            &self.secrets_dir,
        );
        line.push('\n');
        let fail = |e: std::io::Error| {
            RemediationError::Audit(format!("cannot write {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(fail)?;
        // On a full disk a write can land in part: cut the file back to where it was, so
        // the log never holds a torn line that the next entry would be glued onto.
        let len = f.metadata().map_err(fail)?.len();
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
            let _ = f.set_len(len);
            return Err(fail(e));
        }
        Ok(())
    }

    pub fn read_all(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.path)
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tail(&self, n: usize) -> Vec<Value> {
        let all = self.read_all();
        let skip = all.len().saturating_sub(n);
        all.into_iter().skip(skip).collect()
    }

    /// `restart_service` runs of `service` that acted (executed or failed) since `since`,
    /// or since the last `rate_window_reset` line when that is later.
    pub fn restarts_since(&self, service: &str, since: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let all = self.read_all();
        let since = all
            .iter()
            .rev()
            .find(|e| e["event"] == RATE_WINDOW_RESET)
            .and_then(|e| e["time"].as_str()?.parse::<DateTime<Utc>>().ok())
            .map_or(since, |reset| reset.max(since));
        all.into_iter()
            .filter(|e| {
                e["event"] == "finished"
                    && e["action"] == "restart_service"
                    && e["params"]["service"] == service
                    && matches!(e["status"].as_str(), Some("executed" | "failed"))
            })
            .filter_map(|e| e["time"].as_str().and_then(|t| t.parse().ok()))
            .filter(|t: &DateTime<Utc>| *t >= since)
            .collect()
    }
}

/// The audit event that starts the restart rate-limit windows afresh (a drill between
/// trials: the sandbox was reset, earlier restarts say nothing about a restart loop now).
pub const RATE_WINDOW_RESET: &str = "rate_window_reset";

/// Replace every secret value of the sandbox found in `text`.
pub(crate) fn redact_values(text: &str, secrets_dir: &Path) -> String {
    let mut out = text.to_string();
    if let Ok(rd) = std::fs::read_dir(secrets_dir) {
        for e in rd.flatten() {
            if let Ok(v) = std::fs::read_to_string(e.path()) {
                let v = v.trim();
                // Short values would redact ordinary words; generated secrets are long.
                if v.len() >= 12 {
                    out = out.replace(v, "<redacted>");
                }
            }
        }
    }
    out
}

/// Params with secret-looking keys blanked.
pub(crate) fn redact_params(params: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (k, v) in params {
        let lk = k.to_ascii_lowercase();
        let secret = ["password", "secret", "token", "database_url", "key_value"]
            .iter()
            .any(|s| lk.contains(s));
        out.insert(
            k.clone(),
            if secret {
                Value::String("<redacted>".into())
            } else {
                v.clone()
            },
        );
    }
    Value::Object(out)
}

/// One approval request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Approval {
    pub id: String,
    pub action: String,
    /// The action's parameters, secrets redacted.
    pub params: Value,
    /// Who asked (`client` / `session`).
    pub caller: Value,
    pub requested_at: DateTime<Utc>,
    /// `pending`, `approved`, `denied` or `executed`.
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub executed_at: Option<DateTime<Utc>>,
    /// The plan shown to the approver.
    pub plan: Value,
}

pub(crate) struct Approvals {
    dir: PathBuf,
}

impl Approvals {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn file(&self, id: &str) -> Result<PathBuf, RemediationError> {
        // Ids are ours (`ap-` + hex); anything else could walk out of the directory.
        let ok = id.starts_with("ap-")
            && id.len() <= 64
            && id[3..].chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(RemediationError::UnknownApproval(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn save(&self, a: &Approval) -> Result<(), RemediationError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| RemediationError::Other(format!("{}: {e}", self.dir.display())))?;
        let json = serde_json::to_vec_pretty(a).unwrap_or_default();
        aiops_sandbox::paths::write_atomic(&self.file(&a.id)?, &json, 0o600)
            .map_err(|e| RemediationError::Other(e.to_string()))
    }

    pub fn get(&self, id: &str) -> Result<Approval, RemediationError> {
        let path = self.file(id)?;
        let bytes =
            std::fs::read(&path).map_err(|_| RemediationError::UnknownApproval(id.to_string()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RemediationError::Other(format!("{}: {e}", path.display())))
    }

    pub fn all(&self) -> Vec<Approval> {
        let mut out: Vec<Approval> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|a| a.requested_at);
        out
    }

    /// Claim an approval for execution exactly once, across processes: the claim is a
    /// marker file created with `O_EXCL`.
    /// Undo [`Self::claim`] and the `executed` state for an approval whose action never
    /// ran (its `started` audit line could not be written): it may be used again.
    pub fn release(&self, id: &str) -> Result<(), RemediationError> {
        let mut a = self.get(id)?;
        if a.state == "executed" {
            a.state = "approved".into();
            a.executed_at = None;
            self.save(&a)?;
        }
        match std::fs::remove_file(self.dir.join(format!("{id}.executed"))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RemediationError::Other(format!("{id}: {e}"))),
        }
    }

    pub fn claim(&self, id: &str) -> Result<bool, RemediationError> {
        let marker = self.dir.join(format!("{id}.executed"));
        self.file(id)?;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(f) => {
                let _ = f.sync_all();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(RemediationError::Other(format!(
                "{}: {e}",
                marker.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_approval_can_be_claimed_again() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(dir.path().to_path_buf());
        let a = Approval {
            id: "ap-0123abcd".into(),
            action: "restart_service".into(),
            params: serde_json::json!({"service": "worker"}),
            caller: Value::Null,
            requested_at: Utc::now(),
            state: "executed".into(),
            decided_by: Some("op".into()),
            decided_at: Some(Utc::now()),
            executed_at: Some(Utc::now()),
            plan: Value::Null,
        };
        approvals.save(&a).unwrap();
        assert!(approvals.claim(&a.id).unwrap());
        assert!(!approvals.claim(&a.id).unwrap(), "claimed once only");
        approvals.release(&a.id).unwrap();
        let back = approvals.get(&a.id).unwrap();
        assert_eq!(back.state, "approved");
        assert!(back.executed_at.is_none());
        assert!(
            approvals.claim(&a.id).unwrap(),
            "usable again after release"
        );
        assert!(approvals.release("../../etc/passwd").is_err());
    }

    #[test]
    fn redaction_by_key_and_by_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-app-password"), "abcdef0123456789abcd\n").unwrap();
        let t = redact_values("url postgres://u:abcdef0123456789abcd@h", dir.path());
        assert!(!t.contains("abcdef0123456789abcd"), "{t}");
        let mut m = Map::new();
        m.insert("new_password".into(), Value::String("x".into()));
        m.insert("service".into(), Value::String("worker".into()));
        let r = redact_params(&m);
        assert_eq!(r["new_password"], "<redacted>");
        assert_eq!(r["service"], "worker");
    }

    #[test]
    fn approval_ids_cannot_walk_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = Approvals::new(dir.path().to_path_buf());
        assert!(matches!(
            a.get("../../etc/passwd"),
            Err(RemediationError::UnknownApproval(_))
        ));
        assert!(matches!(
            a.get("ap-0000"),
            Err(RemediationError::UnknownApproval(_))
        ));
    }
}
