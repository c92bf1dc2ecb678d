//! The `.env` configuration: parsing, validation and the exit-code-78 report.
//!
//! This module owns the contract table of `docs/target-app.md`: every key, whether it is
//! required, its allowed range and its default. [`Config::from_env_text`] is pure apart
//! from checking that `CACHE_DIR` and `LOG_DIR` exist, so it is unit-tested directly.
//! It does not read process environment variables: the `.env` file is the only source,
//! so what the sandbox wrote is exactly what the process runs with.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for an invalid configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// Which pricing upstream the API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// Only `UPSTREAM_PRIMARY_URL`.
    Primary,
    /// Only `UPSTREAM_FALLBACK_URL`.
    Fallback,
    /// Primary first; on error, 5xx or timeout, the fallback.
    Auto,
}

impl UpstreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamMode::Primary => "primary",
            UpstreamMode::Fallback => "fallback",
            UpstreamMode::Auto => "auto",
        }
    }
}

/// The validated configuration. Secrets are redacted by the `Debug` impl.
#[derive(Clone)]
pub struct Config {
    /// The app role's connection string (contains a password: never log it).
    pub database_url: String,
    /// Public API listener.
    pub listen_addr: SocketAddr,
    /// Admin API listener; always a loopback address.
    pub admin_listen_addr: SocketAddr,
    /// Bearer token for the admin API (secret).
    pub admin_token: String,
    /// Maximum connections in the pool.
    pub pool_size: u32,
    /// Connections kept open while idle.
    pub pool_min_idle: u32,
    /// How long a handler waits for a pooled connection before `DB_POOL_TIMEOUT`.
    pub pool_acquire_timeout: Duration,
    /// Idle connections above `pool_min_idle` are closed after this long.
    pub pool_idle_timeout: Duration,
    /// `statement_timeout` for app sessions in milliseconds; 0 = off.
    pub db_statement_timeout_ms: u64,
    /// HS256 secret for write endpoints (secret).
    pub jwt_secret: String,
    /// Directory of the product cache (`product-{id}.json`).
    pub cache_dir: PathBuf,
    /// Base URL of the primary pricing upstream.
    pub upstream_primary_url: String,
    /// Base URL of the fallback pricing upstream.
    pub upstream_fallback_url: String,
    pub upstream_mode: UpstreamMode,
    pub upstream_timeout: Duration,
    /// Directory of the JSON-lines log files.
    pub log_dir: PathBuf,
    /// One of trace, debug, info, warn, error.
    pub log_level: String,
    /// Token bucket refill rate on the public API; 0 = off.
    pub rate_limit_rps: u32,
    /// Worker poll interval.
    pub worker_poll: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_database_url(&self.database_url))
            .field("listen_addr", &self.listen_addr)
            .field("admin_listen_addr", &self.admin_listen_addr)
            .field("admin_token", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("pool_min_idle", &self.pool_min_idle)
            .field("pool_acquire_timeout", &self.pool_acquire_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("db_statement_timeout_ms", &self.db_statement_timeout_ms)
            .field("jwt_secret", &"<redacted>")
            .field("cache_dir", &self.cache_dir)
            .field("upstream_primary_url", &self.upstream_primary_url)
            .field("upstream_fallback_url", &self.upstream_fallback_url)
            .field("upstream_mode", &self.upstream_mode)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("log_dir", &self.log_dir)
            .field("log_level", &self.log_level)
            .field("rate_limit_rps", &self.rate_limit_rps)
            .field("worker_poll", &self.worker_poll)
            .finish()
    }
}

/// Replaces the password in a `postgres://user:password@host/db` URL with `***`.
pub fn redact_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable>".to_owned();
    };
    // The userinfo ends at the last '@' before the first '/', so passwords containing '@'
    // (percent-encoded or not) are still cut out.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// Why a configuration was refused. `key` names the offending `.env` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration for {key}: {message}")]
pub struct ConfigError {
    /// The `.env` key (or `--env-file` when the file itself is unreadable).
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

const KNOWN_KEYS: &[&str] = &[
    "DATABASE_URL",
    "LISTEN_ADDR",
    "ADMIN_LISTEN_ADDR",
    "ADMIN_TOKEN",
    "POOL_SIZE",
    "POOL_MIN_IDLE",
    "POOL_ACQUIRE_TIMEOUT_MS",
    "POOL_IDLE_TIMEOUT_S",
    "DB_STATEMENT_TIMEOUT_MS",
    "JWT_SECRET",
    "CACHE_DIR",
    "UPSTREAM_PRIMARY_URL",
    "UPSTREAM_FALLBACK_URL",
    "UPSTREAM_MODE",
    "UPSTREAM_TIMEOUT_MS",
    "LOG_DIR",
    "LOG_LEVEL",
    "RATE_LIMIT_RPS",
    "WORKER_POLL_MS",
];

/// Splits `.env` text into key/value pairs. Syntax errors name the line's key (or the
/// line number when there is no key).
pub fn parse_env_text(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut map = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::new(
                &format!("line {}", index + 1),
                "expected KEY=VALUE",
            ));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::new(
                &format!("line {}", index + 1),
                format!("invalid key {key:?}: keys are UPPER_SNAKE_CASE"),
            ));
        }
        let value = unquote(value.trim()).map_err(|m| ConfigError::new(key, m))?;
        if map.insert(key.to_owned(), value).is_some() {
            return Err(ConfigError::new(key, "key is set twice"));
        }
    }
    Ok(map)
}

fn unquote(value: &str) -> Result<String, String> {
    for quote in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(quote) {
            let Some(end) = inner.find(quote) else {
                return Err(format!("unterminated {quote} quote"));
            };
            let rest = inner[end + 1..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                return Err("unexpected text after the closing quote".to_owned());
            }
            return Ok(inner[..end].to_owned());
        }
    }
    // Unquoted values may carry a trailing ` # comment`.
    let value = match value.find(" #") {
        Some(pos) => value[..pos].trim_end(),
        None => value,
    };
    Ok(value.to_owned())
}

struct Keys {
    map: BTreeMap<String, String>,
}

impl Keys {
    fn required(&self, key: &str, allowed: &str) -> Result<&str, ConfigError> {
        match self.map.get(key).map(String::as_str) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ConfigError::new(
                key,
                format!("required key is missing or empty; allowed: {allowed}"),
            )),
        }
    }

    fn optional(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn int(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some(raw) = self.optional(key) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(ConfigError::new(
                key,
                format!("got {raw:?}; allowed: an integer from {min} to {max} (default {default})"),
            )),
        }
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.required(key, "IP:PORT")?;
        raw.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                key,
                format!("got {raw:?}; allowed: IP:PORT, e.g. 127.0.0.1:8080"),
            )
        })
    }

    fn existing_dir(&self, key: &str) -> Result<PathBuf, ConfigError> {
        let raw = self.required(key, "an existing directory")?;
        let path = PathBuf::from(raw);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(ConfigError::new(
                key,
                format!("{raw:?} is not an existing directory; allowed: an existing directory"),
            ))
        }
    }

    fn http_url(&self, key: &str) -> Result<String, ConfigError> {
        let raw = self.required(key, "http://HOST:PORT")?;
        if (raw.starts_with("http://") || raw.starts_with("https://"))
            && raw.len() > "http://".len()
        {
            Ok(raw.trim_end_matches('/').to_owned())
        } else {
            Err(ConfigError::new(
                key,
                format!("got {raw:?}; allowed: an http:// URL"),
            ))
        }
    }

    fn secret(&self, key: &str, min_len: usize) -> Result<String, ConfigError> {
        let allowed = format!("at least {min_len} characters");
        let raw = self.required(key, &allowed)?;
        if raw.chars().count() >= min_len {
            Ok(raw.to_owned())
        } else {
            // Never echo the secret itself, only its length.
            Err(ConfigError::new(
                key,
                format!(
                    "value has {} characters; allowed: {allowed}",
                    raw.chars().count()
                ),
            ))
        }
    }
}

impl Config {
    /// Parses and validates `.env` text against the contract table.
    pub fn from_env_text(text: &str) -> Result<Config, ConfigError> {
        let keys = Keys {
            map: parse_env_text(text)?,
        };
        if let Some(unknown) = keys.map.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
            return Err(ConfigError::new(
                unknown,
                format!("unknown key; allowed keys: {}", KNOWN_KEYS.join(", ")),
            ));
        }

        // LOG_DIR first: when it is valid, later errors can also be written to the log file.
        let log_dir = keys.existing_dir("LOG_DIR")?;

        let database_url = keys
            .required("DATABASE_URL", "postgres://USER:PASSWORD@HOST:PORT/DB")?
            .to_owned();
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "allowed: a postgres:// or postgresql:// URL",
            ));
        }

        let listen_addr = keys.addr("LISTEN_ADDR")?;
        let admin_listen_addr = keys.addr("ADMIN_LISTEN_ADDR")?;
        if !admin_listen_addr.ip().is_loopback() {
            return Err(ConfigError::new(
                "ADMIN_LISTEN_ADDR",
                format!(
                    "{admin_listen_addr} is not a loopback address; allowed: loopback IP:PORT (127.0.0.0/8 or [::1])"
                ),
            ));
        }
        let admin_token = keys.secret("ADMIN_TOKEN", 16)?;

        let pool_size = keys.int("POOL_SIZE", 10, 1, 200)? as u32;
        let pool_min_idle = keys.int("POOL_MIN_IDLE", 1, 0, u64::from(pool_size))? as u32;
        let pool_acquire_timeout =
            Duration::from_millis(keys.int("POOL_ACQUIRE_TIMEOUT_MS", 2000, 50, 60_000)?);
        let pool_idle_timeout =
            Duration::from_secs(keys.int("POOL_IDLE_TIMEOUT_S", 300, 1, 86_400)?);
        let db_statement_timeout_ms = keys.int("DB_STATEMENT_TIMEOUT_MS", 5000, 0, 600_000)?;

        let jwt_secret = keys.secret("JWT_SECRET", 32)?;
        let cache_dir = keys.existing_dir("CACHE_DIR")?;

        let upstream_primary_url = keys.http_url("UPSTREAM_PRIMARY_URL")?;
        let upstream_fallback_url = keys.http_url("UPSTREAM_FALLBACK_URL")?;
        let upstream_mode = match keys.optional("UPSTREAM_MODE").unwrap_or("primary") {
            "primary" => UpstreamMode::Primary,
            "fallback" => UpstreamMode::Fallback,
            "auto" => UpstreamMode::Auto,
            other => {
                return Err(ConfigError::new(
                    "UPSTREAM_MODE",
                    format!("got {other:?}; allowed: primary, fallback, auto"),
                ));
            }
        };
        let upstream_timeout =
            Duration::from_millis(keys.int("UPSTREAM_TIMEOUT_MS", 1000, 10, 60_000)?);

        let log_level = keys.optional("LOG_LEVEL").unwrap_or("info").to_owned();
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                format!("got {log_level:?}; allowed: trace, debug, info, warn, error"),
            ));
        }
        let rate_limit_rps = keys.int("RATE_LIMIT_RPS", 0, 0, 100_000)? as u32;
        let worker_poll = Duration::from_millis(keys.int("WORKER_POLL_MS", 200, 10, 60_000)?);

        Ok(Config {
            database_url,
            listen_addr,
            admin_listen_addr,
            admin_token,
            pool_size,
            pool_min_idle,
            pool_acquire_timeout,
            pool_idle_timeout,
            db_statement_timeout_ms,
            jwt_secret,
            cache_dir,
            upstream_primary_url,
            upstream_fallback_url,
            upstream_mode,
            upstream_timeout,
            log_dir,
            log_level,
            rate_limit_rps,
            worker_poll,
        })
    }

    /// Reads and validates an `.env` file. An unreadable file is reported with the key
    /// `--env-file`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new(
                "--env-file",
                format!(
                    "cannot read {}: {error}; allowed: a readable .env file",
                    path.display()
                ),
            )
        })?;
        Config::from_env_text(&text)
    }
}

/// `LOG_DIR` from `.env` text when it names an existing directory, even if other keys are
/// invalid; used to also write the configuration error to the log file.
pub fn probe_log_dir(text: &str) -> Option<PathBuf> {
    let map = parse_env_text(text).ok()?;
    let dir = PathBuf::from(map.get("LOG_DIR")?);
    dir.is_dir().then_some(dir)
}

/// Writes the `CONFIG_INVALID` JSON line to stderr and, when `log_file` is given, appends
/// it to that file. Called before logging is set up, so it formats the line itself.
pub fn report_invalid(error: &ConfigError, log_file: Option<&Path>) {
    let line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": "ERROR",
        "target": "target_app::config",
        "code": "CONFIG_INVALID",
        "key": error.key,
        "message": format!("Invalid configuration for {}: {}.", error.key, error.message),
    })
    .to_string();
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(path) = log_file
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(extra: &str) -> String {
        let dir = std::env::temp_dir();
        let dir = dir.display();
        format!(
            "# a comment\n\
             DATABASE_URL=postgres://app:s3cret@127.0.0.1:5432/shop\n\
             LISTEN_ADDR=127.0.0.1:8080\n\
             ADMIN_LISTEN_ADDR=127.0.0.1:8081\n\
             ADMIN_TOKEN=\"admin-token-0123456789\"\n\
             JWT_SECRET='0123456789abcdef0123456789abcdef'\n\
             CACHE_DIR={dir}\n\
             LOG_DIR={dir}\n\
             \n\
             UPSTREAM_PRIMARY_URL=http://127.0.0.1:9001\n\
             UPSTREAM_FALLBACK_URL=http://127.0.0.1:9002/\n\
             {extra}\n"
        )
    }

    fn err_key(extra: &str) -> String {
        Config::from_env_text(&base(extra)).unwrap_err().key
    }

    #[test]
    fn valid_file_gets_defaults() {
        let c = Config::from_env_text(&base("")).unwrap();
        assert_eq!(c.pool_size, 10);
        assert_eq!(c.pool_min_idle, 1);
        assert_eq!(c.pool_acquire_timeout, Duration::from_millis(2000));
        assert_eq!(c.pool_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.db_statement_timeout_ms, 5000);
        assert_eq!(c.upstream_mode, UpstreamMode::Primary);
        assert_eq!(c.upstream_timeout, Duration::from_millis(1000));
        assert_eq!(c.log_level, "info");
        assert_eq!(c.rate_limit_rps, 0);
        assert_eq!(c.worker_poll, Duration::from_millis(200));
        assert_eq!(c.admin_token, "admin-token-0123456789");
        assert_eq!(c.upstream_fallback_url, "http://127.0.0.1:9002");
    }

    #[test]
    fn explicit_values_are_used() {
        let c = Config::from_env_text(&base(
            "POOL_SIZE=3\nPOOL_MIN_IDLE=3\nUPSTREAM_MODE=auto # comment\nRATE_LIMIT_RPS=50\nDB_STATEMENT_TIMEOUT_MS=0",
        ))
        .unwrap();
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.pool_min_idle, 3);
        assert_eq!(c.upstream_mode, UpstreamMode::Auto);
        assert_eq!(c.rate_limit_rps, 50);
        assert_eq!(c.db_statement_timeout_ms, 0);
    }

    #[test]
    fn each_invalid_value_names_its_key() {
        let cases = [
            ("POOL_SIZE=abc", "POOL_SIZE"),
            ("POOL_SIZE=0", "POOL_SIZE"),
            ("POOL_SIZE=201", "POOL_SIZE"),
            ("POOL_MIN_IDLE=11", "POOL_MIN_IDLE"),
            ("POOL_ACQUIRE_TIMEOUT_MS=49", "POOL_ACQUIRE_TIMEOUT_MS"),
            ("POOL_IDLE_TIMEOUT_S=0", "POOL_IDLE_TIMEOUT_S"),
            ("DB_STATEMENT_TIMEOUT_MS=-1", "DB_STATEMENT_TIMEOUT_MS"),
            ("UPSTREAM_MODE=random", "UPSTREAM_MODE"),
            ("UPSTREAM_TIMEOUT_MS=5", "UPSTREAM_TIMEOUT_MS"),
            ("LOG_LEVEL=verbose", "LOG_LEVEL"),
            ("RATE_LIMIT_RPS=100001", "RATE_LIMIT_RPS"),
            ("WORKER_POLL_MS=1", "WORKER_POLL_MS"),
            ("POLL_SIZE=3", "POLL_SIZE"),
        ];
        for (extra, key) in cases {
            assert_eq!(err_key(extra), key, "for {extra}");
        }
    }

    #[test]
    fn error_message_says_what_is_allowed() {
        let e = Config::from_env_text(&base("POOL_SIZE=abc")).unwrap_err();
        assert!(e.message.contains("1 to 200"), "{}", e.message);
    }

    #[test]
    fn required_keys_and_shapes_are_checked() {
        let text = base("");
        for key in [
            "DATABASE_URL",
            "LISTEN_ADDR",
            "JWT_SECRET",
            "CACHE_DIR",
            "UPSTREAM_PRIMARY_URL",
        ] {
            let without: String = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{key}=")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(Config::from_env_text(&without).unwrap_err().key, key);
        }
        let replace =
            |from: &str, to: &str| Config::from_env_text(&text.replace(from, to)).unwrap_err();
        assert_eq!(
            replace("ADMIN_LISTEN_ADDR=127.0.0.1", "ADMIN_LISTEN_ADDR=0.0.0.0").key,
            "ADMIN_LISTEN_ADDR"
        );
        assert_eq!(
            replace("\"admin-token-0123456789\"", "short").key,
            "ADMIN_TOKEN"
        );
        assert_eq!(
            replace("'0123456789abcdef0123456789abcdef'", "tooshort").key,
            "JWT_SECRET"
        );
        assert_eq!(replace("postgres://app", "mysql://app").key, "DATABASE_URL");
        assert_eq!(
            replace("http://127.0.0.1:9001", "ftp://x").key,
            "UPSTREAM_PRIMARY_URL"
        );
        assert_eq!(
            replace("LISTEN_ADDR=127.0.0.1:8080", "LISTEN_ADDR=localhost").key,
            "LISTEN_ADDR"
        );
        let missing_dir = replace("CACHE_DIR=", "CACHE_DIR=/definitely/not/here");
        assert_eq!(missing_dir.key, "CACHE_DIR");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert_eq!(
            Config::from_env_text(&base("JUST_A_WORD")).unwrap_err().key,
            "line 12"
        );
        assert_eq!(err_key("POOL_SIZE=\"5"), "POOL_SIZE");
        assert_eq!(err_key("POOL_SIZE=5\nPOOL_SIZE=6"), "POOL_SIZE");
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Config::from_env_text(&base("")).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("admin-token-0123456789"), "{shown}");
        assert!(
            !shown.contains("0123456789abcdef0123456789abcdef"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://app:***@127.0.0.1:5432/shop"),
            "{shown}"
        );
    }

    #[test]
    fn redaction_handles_urls_without_password() {
        assert_eq!(
            redact_database_url("postgres://app@h/db"),
            "postgres://app@h/db"
        );
        assert_eq!(redact_database_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_database_url("postgres://a:p@ss@h/db"),
            "postgres://a:***@h/db"
        );
    }

    #[test]
    fn probe_finds_log_dir_despite_other_errors() {
        let text = base("POOL_SIZE=abc");
        assert_eq!(probe_log_dir(&text), Some(std::env::temp_dir()));
        assert_eq!(probe_log_dir("LOG_DIR=/definitely/not/here"), None);
    }
}
