//! `inspect_config`: the target's `.env` checked against the contract in
//! `docs/target-app.md` (re-implemented here as a table: this crate must not depend on
//! target-app), with secrets redacted, and diffed against the last-known-good copy.
//!
//! **Invariant:** no secret value leaves this module: `DATABASE_URL`'s password,
//! `JWT_SECRET`, `ADMIN_TOKEN` and every key naming SECRET/TOKEN/PASSWORD are shown as
//! `REDACTED`, and in the diff as `<redacted, changed>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::Serialize;

use crate::util::{redact_url_passwords, truncate_chars};
use crate::{ObserveError, Observer, Summary};

pub(crate) const REDACTED: &str = "REDACTED";

/// What a key's value must look like.
#[derive(Debug, Clone, Copy)]
enum Kind {
    PostgresUrl,
    Addr,
    LoopbackAddr,
    /// Secret of at least this many characters.
    Secret(usize),
    Int {
        min: u64,
        max: u64,
    },
    /// Integer from 0 to the value of another key (or that key's default).
    IntUpToKey {
        key: &'static str,
        default: u64,
    },
    ExistingDir,
    HttpUrl,
    Enum(&'static [&'static str]),
}

struct KeySpec {
    key: &'static str,
    required: bool,
    default: Option<&'static str>,
    kind: Kind,
}

const SCHEMA: &[KeySpec] = &[
    KeySpec {
        key: "DATABASE_URL",
        required: true,
        default: None,
        kind: Kind::PostgresUrl,
    },
    KeySpec {
        key: "LISTEN_ADDR",
        required: true,
        default: None,
        kind: Kind::Addr,
    },
    KeySpec {
        key: "ADMIN_LISTEN_ADDR",
        required: true,
        default: None,
        kind: Kind::LoopbackAddr,
    },
    KeySpec {
        key: "ADMIN_TOKEN",
        required: true,
        default: None,
        kind: Kind::Secret(16),
    },
    KeySpec {
        key: "POOL_SIZE",
        required: false,
        default: Some("10"),
        kind: Kind::Int { min: 1, max: 200 },
    },
    KeySpec {
        key: "POOL_MIN_IDLE",
        required: false,
        default: Some("1"),
        kind: Kind::IntUpToKey {
            key: "POOL_SIZE",
            default: 10,
        },
    },
    KeySpec {
        key: "POOL_ACQUIRE_TIMEOUT_MS",
        required: false,
        default: Some("2000"),
        kind: Kind::Int {
            min: 50,
            max: 60_000,
        },
    },
    KeySpec {
        key: "POOL_IDLE_TIMEOUT_S",
        required: false,
        default: Some("300"),
        kind: Kind::Int {
            min: 1,
            max: 86_400,
        },
    },
    KeySpec {
        key: "DB_STATEMENT_TIMEOUT_MS",
        required: false,
        default: Some("5000"),
        kind: Kind::Int {
            min: 0,
            max: 600_000,
        },
    },
    KeySpec {
        key: "JWT_SECRET",
        required: true,
        default: None,
        kind: Kind::Secret(32),
    },
    KeySpec {
        key: "CACHE_DIR",
        required: true,
        default: None,
        kind: Kind::ExistingDir,
    },
    KeySpec {
        key: "UPSTREAM_PRIMARY_URL",
        required: true,
        default: None,
        kind: Kind::HttpUrl,
    },
    KeySpec {
        key: "UPSTREAM_FALLBACK_URL",
        required: true,
        default: None,
        kind: Kind::HttpUrl,
    },
    KeySpec {
        key: "UPSTREAM_MODE",
        required: false,
        default: Some("primary"),
        kind: Kind::Enum(&["primary", "fallback", "auto"]),
    },
    KeySpec {
        key: "UPSTREAM_TIMEOUT_MS",
        required: false,
        default: Some("1000"),
        kind: Kind::Int {
            min: 10,
            max: 60_000,
        },
    },
    KeySpec {
        key: "LOG_DIR",
        required: true,
        default: None,
        kind: Kind::ExistingDir,
    },
    KeySpec {
        key: "LOG_LEVEL",
        required: false,
        default: Some("info"),
        kind: Kind::Enum(&["trace", "debug", "info", "warn", "error"]),
    },
    KeySpec {
        key: "RATE_LIMIT_RPS",
        required: false,
        default: Some("0"),
        kind: Kind::Int {
            min: 0,
            max: 100_000,
        },
    },
    KeySpec {
        key: "WORKER_POLL_MS",
        required: false,
        default: Some("200"),
        kind: Kind::Int {
            min: 10,
            max: 60_000,
        },
    },
];

/// Keys whose whole value is secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k.contains("SECRET") || k.contains("TOKEN") || k.contains("PASSWORD") || k.contains("PASSWD")
}

/// The value as it may be shown.
pub(crate) fn display_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        REDACTED.to_string()
    } else if key == "DATABASE_URL" || value.contains("://") {
        truncate_chars(&redact_url_passwords(value), 300)
    } else {
        truncate_chars(value, 300)
    }
}

/// One key of the `.env`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConfigEntry {
    pub key: String,
    /// The value, with secrets replaced by REDACTED (a connection string keeps its shape
    /// with the password redacted). None when the key is missing.
    pub value: Option<String>,
    /// The default the target uses when the key is absent.
    pub default: Option<String>,
    pub required: bool,
    /// The key is absent or empty and has a default (the target uses the default).
    pub uses_default: bool,
    pub valid: bool,
    /// What is wrong and what is allowed.
    pub problem: Option<String>,
    /// The key is not part of the target's schema (the target refuses to start).
    pub unknown: bool,
}

/// How the current `.env` differs from the last-known-good copy.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConfigDiff {
    /// The last-known-good file exists.
    pub baseline_present: bool,
    /// Keys only in the current file: `KEY=value` (secrets redacted).
    pub added: Vec<String>,
    /// Keys only in the last-known-good file.
    pub removed: Vec<String>,
    /// Changed keys: `KEY: old → new`, or `KEY: <redacted, changed>` for secrets.
    pub changed: Vec<String>,
}

/// The target's configuration, validated.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConfigReport {
    pub path: String,
    /// Every key is valid, no required key is missing, no unknown key.
    pub valid: bool,
    pub entries: Vec<ConfigEntry>,
    /// Problems not tied to a key value (malformed lines, duplicates).
    pub file_problems: Vec<String>,
    pub diff: ConfigDiff,
}

impl ConfigReport {
    pub(crate) fn invalid_entries(&self) -> impl Iterator<Item = &ConfigEntry> {
        self.entries.iter().filter(|e| !e.valid)
    }
    pub(crate) fn changed(&self) -> bool {
        !(self.diff.added.is_empty()
            && self.diff.removed.is_empty()
            && self.diff.changed.is_empty())
    }
}

impl Summary for ConfigReport {
    fn summary(&self) -> String {
        let bad: Vec<String> = self
            .invalid_entries()
            .map(|e| format!("{}: {}", e.key, e.problem.as_deref().unwrap_or("invalid")))
            .collect();
        let mut s = if bad.is_empty() && self.file_problems.is_empty() {
            format!(
                "Config {} is valid ({} keys).",
                self.path,
                self.entries.len()
            )
        } else {
            format!(
                "Config {} is INVALID: {}.",
                self.path,
                bad.iter()
                    .chain(&self.file_problems)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        if !self.diff.baseline_present {
            s.push_str(" No last-known-good copy to compare with.");
        } else if self.changed() {
            let mut parts = Vec::new();
            if !self.diff.added.is_empty() {
                parts.push(format!("added {}", self.diff.added.join(", ")));
            }
            if !self.diff.removed.is_empty() {
                parts.push(format!("removed {}", self.diff.removed.join(", ")));
            }
            if !self.diff.changed.is_empty() {
                parts.push(format!("changed {}", self.diff.changed.join(", ")));
            }
            s.push_str(&format!(
                " Differs from last-known-good: {}.",
                parts.join("; ")
            ));
        } else {
            s.push_str(" Same as last-known-good.");
        }
        s
    }
}

/// Parsed `.env`: pairs in order, plus problems. Values of malformed lines are never
/// echoed (they could be secrets); only line numbers are.
pub(crate) fn parse_env(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        match line.split_once('=') {
            Some((k, v)) => {
                let key = k.trim().to_string();
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.push(format!("line {}: malformed key", i + 1));
                    continue;
                }
                let v = v.trim();
                let b = v.as_bytes();
                let value =
                    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
                        v[1..v.len() - 1].to_string()
                    } else {
                        v.to_string()
                    };
                if pairs.iter().any(|(k, _)| *k == key) {
                    problems.push(format!(
                        "line {}: duplicate key {key} (the last one wins)",
                        i + 1
                    ));
                    pairs.retain(|(k, _)| *k != key);
                }
                pairs.push((key, value));
            }
            None => problems.push(format!("line {}: not KEY=VALUE", i + 1)),
        }
    }
    (pairs, problems)
}

/// Validate a value against its spec; `None` if fine.
fn check(spec: &KeySpec, value: &str, all: &BTreeMap<String, String>) -> Option<String> {
    let shown = || format!("{:?}", truncate_chars(value, 80));
    match spec.kind {
        Kind::PostgresUrl => (!(value.starts_with("postgres://")
            || value.starts_with("postgresql://"))
            || value.len() <= "postgres://".len())
        .then(|| "allowed: a postgres:// or postgresql:// URL".to_string()),
        Kind::Addr => value
            .parse::<SocketAddr>()
            .err()
            .map(|_| format!("got {}; allowed: IP:PORT, e.g. 127.0.0.1:8080", shown())),
        Kind::LoopbackAddr => match value.parse::<SocketAddr>() {
            Err(_) => Some(format!(
                "got {}; allowed: loopback IP:PORT, e.g. 127.0.0.1:8001",
                shown()
            )),
            Ok(a) if !a.ip().is_loopback() => Some(format!(
                "{a} is not a loopback address; allowed: loopback IP:PORT (127.0.0.0/8 or [::1])"
            )),
            Ok(_) => None,
        },
        Kind::Secret(min) => {
            let n = value.chars().count();
            (n < min)
                .then(|| format!("value has {n} characters; allowed: at least {min} characters"))
        }
        Kind::Int { min, max } => match value.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => None,
            _ => Some(format!(
                "got {}; allowed: an integer from {min} to {max}{}",
                shown(),
                spec.default
                    .map(|d| format!(" (default {d})"))
                    .unwrap_or_default()
            )),
        },
        Kind::IntUpToKey { key, default } => {
            let max = all
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default);
            match value.parse::<u64>() {
                Ok(v) if v <= max => None,
                _ => Some(format!(
                    "got {}; allowed: an integer from 0 to {key} ({max})",
                    shown()
                )),
            }
        }
        Kind::ExistingDir => (!std::path::Path::new(value).is_dir()).then(|| {
            format!(
                "{} is not an existing directory; allowed: an existing directory",
                shown()
            )
        }),
        Kind::HttpUrl => {
            let ok = (value.starts_with("http://") || value.starts_with("https://"))
                && value
                    .split_once("://")
                    .is_some_and(|(_, rest)| !rest.is_empty());
            (!ok).then(|| format!("got {}; allowed: an http:// URL", shown()))
        }
        Kind::Enum(allowed) => (!allowed.contains(&value))
            .then(|| format!("got {}; allowed: {}", shown(), allowed.join(", "))),
    }
}

/// Validate a whole `.env` text (pure; unit-tested).
pub(crate) fn validate(text: &str) -> (Vec<ConfigEntry>, Vec<String>) {
    let (pairs, problems) = parse_env(text);
    let all: BTreeMap<String, String> = pairs.iter().cloned().collect();
    let mut entries = Vec::new();
    for spec in SCHEMA {
        let value = all.get(spec.key).map(String::as_str);
        let present = value.is_some_and(|v| !v.is_empty());
        let (valid, problem, uses_default) = match value {
            Some(v) if !v.is_empty() => match check(spec, v, &all) {
                None => (true, None, false),
                Some(p) => (false, Some(p), false),
            },
            _ if spec.required => (
                false,
                Some("required key is missing or empty".to_string()),
                false,
            ),
            _ => (true, None, true),
        };
        entries.push(ConfigEntry {
            key: spec.key.to_string(),
            value: value
                .filter(|_| present)
                .map(|v| display_value(spec.key, v)),
            default: spec.default.map(str::to_string),
            required: spec.required,
            uses_default,
            valid,
            problem,
            unknown: false,
        });
    }
    for (k, v) in &pairs {
        if !SCHEMA.iter().any(|s| s.key == k) {
            entries.push(ConfigEntry {
                key: truncate_chars(k, 80),
                value: Some(display_value(k, v)),
                default: None,
                required: false,
                uses_default: false,
                valid: false,
                problem: Some("unknown key; the target refuses to start with it".to_string()),
                unknown: true,
            });
        }
    }
    (entries, problems)
}

/// Diff two `.env` texts (pure; unit-tested).
pub(crate) fn diff(current: &str, baseline: Option<&str>) -> ConfigDiff {
    let Some(baseline) = baseline else {
        return ConfigDiff {
            baseline_present: false,
            added: vec![],
            removed: vec![],
            changed: vec![],
        };
    };
    let cur: BTreeMap<String, String> = parse_env(current).0.into_iter().collect();
    let old: BTreeMap<String, String> = parse_env(baseline).0.into_iter().collect();
    let mut d = ConfigDiff {
        baseline_present: true,
        added: vec![],
        removed: vec![],
        changed: vec![],
    };
    for (k, v) in &cur {
        match old.get(k) {
            None => d.added.push(format!("{k}={}", display_value(k, v))),
            Some(o) if o != v => {
                let (a, b) = (display_value(k, o), display_value(k, v));
                if is_secret_key(k) || a == b {
                    // Same redacted form: only the secret part (e.g. a password) changed.
                    d.changed.push(format!("{k}: <redacted, changed>"));
                } else {
                    d.changed.push(format!("{k}: {a} → {b}"));
                }
            }
            _ => {}
        }
    }
    for k in old.keys() {
        if !cur.contains_key(k) {
            d.removed.push(k.clone());
        }
    }
    for list in [&mut d.added, &mut d.removed, &mut d.changed] {
        list.truncate(50);
    }
    d
}

pub(crate) async fn inspect_config(obs: &Observer) -> Result<ConfigReport, ObserveError> {
    let path = obs.state().env_file();
    let lkg = obs.state().env_last_known_good();
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ObserveError::SandboxUnavailable(format!(
                "no target configuration at {}; start a sandbox with `aiops up`",
                path.display()
            )));
        }
        Err(e) => {
            return Err(ObserveError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let baseline = tokio::fs::read_to_string(&lkg).await.ok();
    let (entries, file_problems) = validate(&text);
    let diff = diff(&text, baseline.as_deref());
    let valid = file_problems.is_empty() && entries.iter().all(|e| e.valid);
    // Belt and braces: a secret value that slipped into a problem text is scrubbed.
    let scrub = obs.scrubber();
    let entries = entries
        .into_iter()
        .map(|mut e| {
            e.value = scrub.scrub_opt(e.value.as_deref());
            e.problem = scrub.scrub_opt(e.problem.as_deref());
            e
        })
        .collect();
    Ok(ConfigReport {
        path: path.display().to_string(),
        valid,
        entries,
        file_problems,
        diff: ConfigDiff {
            added: diff.added.iter().map(|s| scrub.scrub(s)).collect(),
            changed: diff.changed.iter().map(|s| scrub.scrub(s)).collect(),
            ..diff
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(dir: &str) -> String {
        format!(
            "# comment\nDATABASE_URL=postgres://shop_app:pw-secret-123@127.0.0.1:5432/shop\n\
             LISTEN_ADDR=127.0.0.1:8000\nADMIN_LISTEN_ADDR=127.0.0.1:8001\n\
             ADMIN_TOKEN=0123456789abcdef0123\nPOOL_SIZE=10\nPOOL_MIN_IDLE=1\n\
             JWT_SECRET=0123456789abcdef0123456789abcdef0123\nCACHE_DIR={dir}\n\
             UPSTREAM_PRIMARY_URL=http://127.0.0.1:1\nUPSTREAM_FALLBACK_URL=http://127.0.0.1:2\n\
             LOG_DIR={dir}\n"
        )
    }

    #[test]
    fn valid_file_passes_and_hides_secrets() {
        let dir = std::env::temp_dir().display().to_string();
        let (entries, problems) = validate(&good(&dir));
        assert!(problems.is_empty());
        assert!(entries.iter().all(|e| e.valid), "{entries:#?}");
        let json = serde_json::to_string(&entries).unwrap();
        assert!(!json.contains("pw-secret-123"));
        assert!(!json.contains("0123456789abcdef0123"));
        assert!(json.contains("postgres://shop_app:<redacted>@127.0.0.1:5432/shop"));
        let pool = entries.iter().find(|e| e.key == "UPSTREAM_MODE").unwrap();
        assert!(pool.uses_default);
    }

    #[test]
    fn bad_values_are_flagged_with_allowed_ranges() {
        let dir = std::env::temp_dir().display().to_string();
        let text = good(&dir)
            .replace("POOL_SIZE=10", "POOL_SIZE=abc")
            .replace(
                "ADMIN_LISTEN_ADDR=127.0.0.1:8001",
                "ADMIN_LISTEN_ADDR=0.0.0.0:8001",
            )
            .replace("POOL_MIN_IDLE=1", "POOL_MIN_IDLE=50")
            + "UPSTREAM_MODE=random\nBOGUS_KEY=1\nJUNK LINE\nLOG_LEVEL=loud\n";
        let (entries, problems) = validate(&text);
        let get = |k: &str| entries.iter().find(|e| e.key == k).unwrap();
        assert!(!get("POOL_SIZE").valid);
        assert!(
            get("POOL_SIZE")
                .problem
                .as_ref()
                .unwrap()
                .contains("1 to 200")
        );
        assert!(!get("ADMIN_LISTEN_ADDR").valid);
        // POOL_SIZE is invalid, so the bound falls back to its default (10).
        assert!(!get("POOL_MIN_IDLE").valid);
        assert!(!get("UPSTREAM_MODE").valid);
        assert!(!get("LOG_LEVEL").valid);
        assert!(get("BOGUS_KEY").unknown);
        assert_eq!(problems, vec!["line 15: not KEY=VALUE".to_string()]);
        let short = good(&dir).replace(
            "JWT_SECRET=0123456789abcdef0123456789abcdef0123",
            "JWT_SECRET=short",
        );
        let (entries, _) = validate(&short);
        let jwt = entries.iter().find(|e| e.key == "JWT_SECRET").unwrap();
        assert!(!jwt.valid && jwt.problem.as_ref().unwrap().contains("at least 32"));
        assert_eq!(jwt.value.as_deref(), Some(REDACTED));
        let missing = good(&dir).replace("LISTEN_ADDR=127.0.0.1:8000\n", "");
        let (entries, _) = validate(&missing);
        assert!(
            !entries
                .iter()
                .find(|e| e.key == "LISTEN_ADDR")
                .unwrap()
                .valid
        );
    }

    #[test]
    fn diff_redacts_secret_changes() {
        let dir = "/tmp";
        let old = good(dir);
        let new = old
            .replace("pw-secret-123", "pw-other-456")
            .replace(
                "JWT_SECRET=0123456789abcdef0123456789abcdef0123",
                "JWT_SECRET=ffffffffffffffffffffffffffffffffffff",
            )
            .replace("POOL_SIZE=10", "POOL_SIZE=2")
            .replace("LOG_DIR=/tmp\n", "")
            + "RATE_LIMIT_RPS=5\n";
        let d = diff(&new, Some(&old));
        assert!(
            d.changed
                .contains(&"DATABASE_URL: <redacted, changed>".to_string()),
            "{d:?}"
        );
        assert!(
            d.changed
                .contains(&"JWT_SECRET: <redacted, changed>".to_string())
        );
        assert!(d.changed.contains(&"POOL_SIZE: 10 → 2".to_string()));
        assert_eq!(d.removed, vec!["LOG_DIR".to_string()]);
        assert_eq!(d.added, vec!["RATE_LIMIT_RPS=5".to_string()]);
        let json = serde_json::to_string(&d).unwrap();
        assert!(!json.contains("pw-other-456") && !json.contains("ffffffff"));
        assert!(!diff(&old, None).baseline_present);
    }
}
