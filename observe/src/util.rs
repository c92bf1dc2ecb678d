//! Small pure helpers shared by the tools: time arguments (`5m` or RFC 3339), opaque
//! cursors, safe truncation and secret scrubbing.
//!
//! Not responsible for deciding *what* is secret beyond the sandbox's own secret files
//! and connection-string passwords; callers pass every free-text string through
//! [`Scrubber::scrub`] before it leaves the crate.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use crate::error::ObserveError;

/// Parse a time argument: RFC 3339 (`2026-01-02T03:04:05Z`) or a relative duration ago
/// (`30s`, `5m`, `2h`, `1d`, optionally followed by ` ago`).
pub(crate) fn parse_time_arg(
    field: &str,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ObserveError> {
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(d) = parse_relative(s) {
        return Ok(now - d);
    }
    Err(ObserveError::invalid(
        field,
        format!(
            "cannot parse {:?}; allowed: an RFC 3339 time (e.g. 2026-01-02T03:04:05Z) or a \
             duration ago such as 30s, 5m, 2h, 1d",
            truncate_chars(s, 60)
        ),
    ))
}

/// `30s`, `5m`, `2h`, `1d`, `10m ago` → a duration (at most 365 days).
pub(crate) fn parse_relative(s: &str) -> Option<Duration> {
    let s = s.trim();
    let s = s.strip_suffix("ago").unwrap_or(s).trim();
    let s = s.strip_prefix('-').unwrap_or(s);
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n.checked_mul(60)?,
        "h" | "hour" | "hours" => n.checked_mul(3600)?,
        "d" | "day" | "days" => n.checked_mul(86_400)?,
        _ => return None,
    };
    if secs > 365 * 86_400 {
        return None;
    }
    Some(Duration::seconds(secs))
}

/// Truncate to at most `max` characters (on a char boundary), marking the cut with `…`.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((idx, _)) => format!("{}…", &s[..idx]),
    }
}

/// Cursors are hex-encoded JSON: opaque to a model, trivial to decode and validate here.
pub(crate) fn encode_cursor<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let mut out = String::with_capacity(json.len() * 2);
    for b in json {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(crate) fn decode_cursor<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ObserveError> {
    let bad = || {
        ObserveError::invalid(
            "cursor",
            "not a cursor returned by this tool; pass the `next_cursor` of a previous answer \
             unchanged, or omit it to start from the newest entries",
        )
    };
    let raw = raw.trim();
    if !raw.len().is_multiple_of(2) || raw.len() > 64 * 1024 {
        return Err(bad());
    }
    let bytes = (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(raw.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Human-readable byte count.
pub(crate) fn pretty_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Removes secret values from free text (log lines, queries, event details, errors).
///
/// Secrets are the contents of every file under the state dir's `secrets/` (read fresh on
/// each call, so rotated credentials are covered) plus any password inside a
/// `scheme://user:password@host` URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    pub(crate) fn load(secrets_dir: &Path) -> Self {
        let mut secrets = Vec::new();
        if let Ok(rd) = std::fs::read_dir(secrets_dir) {
            for entry in rd.flatten().take(64) {
                if let Ok(text) = std::fs::read_to_string(entry.path()) {
                    let v = text.trim();
                    // Very short values would redact ordinary words; real secrets are long.
                    if v.len() >= 8 && v.len() <= 4096 {
                        secrets.push(v.to_string());
                    }
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    #[cfg(test)]
    pub(crate) fn with(secrets: &[&str]) -> Self {
        Self {
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub(crate) fn scrub(&self, s: &str) -> String {
        let mut out = redact_url_passwords(s);
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "<redacted>");
            }
        }
        out
    }

    pub(crate) fn scrub_opt(&self, s: Option<&str>) -> Option<String> {
        s.map(|s| self.scrub(s))
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:<redacted>@host/db`, anywhere in `s`.
pub(crate) fn redact_url_passwords(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":<redacted>");
                        out.push_str(&authority[at..]);
                    }
                    None => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_parse() {
        assert_eq!(parse_relative("30s"), Some(Duration::seconds(30)));
        assert_eq!(parse_relative("5m"), Some(Duration::minutes(5)));
        assert_eq!(parse_relative("2h ago"), Some(Duration::hours(2)));
        assert_eq!(parse_relative("1d"), Some(Duration::days(1)));
        assert_eq!(parse_relative("5"), None);
        assert_eq!(parse_relative("m"), None);
        assert_eq!(parse_relative("5y"), None);
        assert_eq!(parse_relative("99999999999999999999s"), None);
        assert_eq!(parse_relative("400d"), None);
    }

    #[test]
    fn time_args_accept_rfc3339_and_reject_garbage() {
        let now = Utc::now();
        let t = parse_time_arg("since", "2026-01-02T03:04:05Z", now).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(
            parse_time_arg("since", "10m", now).unwrap(),
            now - Duration::minutes(10)
        );
        let err = parse_time_arg("since", "yesterday", now).unwrap_err();
        assert!(matches!(err, ObserveError::InvalidArgument { ref field, .. } if field == "since"));
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let c = encode_cursor(&vec![1u64, 2, 3]);
        let back: Vec<u64> = decode_cursor(&c).unwrap();
        assert_eq!(back, vec![1, 2, 3]);
        assert!(decode_cursor::<Vec<u64>>("zz").is_err());
        assert!(decode_cursor::<Vec<u64>>("abc").is_err());
        assert!(decode_cursor::<Vec<u64>>(&encode_cursor(&"text")).is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }

    #[test]
    fn scrubber_removes_secrets_and_url_passwords() {
        let s = Scrubber::with(&["supersecretvalue"]);
        let out = s.scrub("token=supersecretvalue url=postgres://app:pw123@127.0.0.1:5432/shop x");
        assert!(!out.contains("supersecretvalue"));
        assert!(!out.contains("pw123"));
        assert!(out.contains("postgres://app:<redacted>@127.0.0.1:5432/shop"));
        assert_eq!(redact_url_passwords("http://h:80/x"), "http://h:80/x");
    }
}
