//! The remediation policy, read from `$STATE/aiops.toml`.
//!
//! Responsible for: which actions may run on their own (`auto`), which need a person's
//! approval (`approve`) and which never run (`deny`); a global read-only switch; the
//! restart rate limit. Not responsible for counting restarts (the audit log does that, so
//! the limit holds across processes).
//!
//! The file (every key optional; a misspelled key is an error, not a silent default):
//!
//! ```toml
//! [policy]
//! # Refuse every action that changes something; read-only actions still run.
//! read_only = false
//!
//! [policy.actions]
//! # auto | approve | deny, per action name. Defaults: restore_db_snapshot and
//! # rotate_db_credentials need approval, every other action is auto.
//! restore_db_snapshot = "approve"
//! rotate_db_credentials = "approve"
//! kill_process = "deny"
//!
//! [policy.rate_limits]
//! # A restart_service of one service beyond this many within the window is refused.
//! restarts_per_service = 3
//! restart_window_s = 600
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::RemediationError;

/// What the policy says about one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Runs when asked.
    Auto,
    /// Runs only with an approved `approval_id`.
    Approve,
    /// Never runs.
    Deny,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// Restart rate limit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// `restart_service` calls of one service allowed within `restart_window_s`.
    pub restarts_per_service: u32,
    /// Window of the restart limit, in seconds.
    pub restart_window_s: u64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            restarts_per_service: 3,
            restart_window_s: 600,
        }
    }
}

/// The `[policy]` table of `aiops.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Refuse every action that changes something.
    pub read_only: bool,
    /// Per-action mode; actions not listed take their default.
    pub actions: BTreeMap<String, Mode>,
    pub rate_limits: RateLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    policy: Policy,
    /// Read by aiops-sandbox (`[sandbox]`: runtime, service limits); checked there.
    #[serde(default, rename = "sandbox")]
    _sandbox: Option<toml::Value>,
    /// `[notify]`, the daemon's webhook notifier: checked by the daemon (mcp-server's
    /// `notify` module), not here.
    #[serde(default, rename = "notify")]
    _notify: Option<toml::Value>,
}

impl Policy {
    /// A documented example of `aiops.toml`.
    pub fn example_toml() -> &'static str {
        r#"# aiops remediation policy.
[policy]
# Refuse every action that changes something; read-only actions still run.
read_only = false

[policy.actions]
# auto | approve | deny per action. Defaults: restore_db_snapshot and
# rotate_db_credentials = "approve", every other action "auto".
restore_db_snapshot = "approve"
rotate_db_credentials = "approve"

[policy.rate_limits]
# A 4th restart_service of one service within the window is refused (restart loop).
restarts_per_service = 3
restart_window_s = 600
"#
    }

    /// Parse a policy document; unknown keys and unknown action names are errors.
    pub fn from_toml(text: &str) -> Result<Self, RemediationError> {
        let file: PolicyFile = toml::from_str(text)
            .map_err(|e| RemediationError::Other(format!("invalid policy: {e}")))?;
        let known = crate::actions::names();
        for name in file.policy.actions.keys() {
            if !known.contains(&name.as_str()) {
                return Err(RemediationError::Other(format!(
                    "invalid policy: unknown action `{name}` in [policy.actions]; known: {}",
                    known.join(", ")
                )));
            }
        }
        Ok(file.policy)
    }

    /// The policy at `path`, or the defaults when the file does not exist.
    pub fn load(path: &Path) -> Result<Self, RemediationError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text)
                .map_err(|e| RemediationError::Other(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(RemediationError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The mode of `action`: the file's, else the action's default.
    pub fn mode(&self, action: &str) -> Mode {
        self.actions
            .get(action)
            .copied()
            .unwrap_or_else(|| default_mode(action))
    }
}

/// Built-in default per action.
pub fn default_mode(action: &str) -> Mode {
    match action {
        "restore_db_snapshot" | "rotate_db_credentials" => Mode::Approve,
        _ => Mode::Auto,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_defaults_apply() {
        let p = Policy::from_toml(Policy::example_toml()).unwrap();
        assert!(!p.read_only);
        assert_eq!(p.mode("restore_db_snapshot"), Mode::Approve);
        assert_eq!(p.mode("restart_service"), Mode::Auto);
        assert_eq!(p.rate_limits.restarts_per_service, 3);
        let empty = Policy::from_toml("").unwrap();
        assert_eq!(empty.mode("rotate_db_credentials"), Mode::Approve);
    }

    #[test]
    fn typos_are_errors() {
        assert!(Policy::from_toml("[policy]\nread_onyl = true\n").is_err());
        assert!(Policy::from_toml("[policy.actions]\nrestart_servce = \"deny\"\n").is_err());
        assert!(Policy::from_toml("[policy.actions]\nrestart_service = \"maybe\"\n").is_err());
        assert!(Policy::from_toml("[polcy]\n").is_err());
        let p = Policy::from_toml("[policy.actions]\nkill_process = \"deny\"\n").unwrap();
        assert_eq!(p.mode("kill_process"), Mode::Deny);
    }

    #[test]
    fn the_notifier_table_is_left_to_the_daemon() {
        let p = Policy::from_toml(
            "[policy]\nread_only = true\n\n[notify]\nwebhook_url = \"http://127.0.0.1:9/x\"\n",
        )
        .unwrap();
        assert!(p.read_only);
    }
}
