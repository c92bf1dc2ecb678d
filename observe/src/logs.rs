//! `query_logs`: search the services' logs, newest first, without loading a file into
//! memory: files are read backwards in 256 KiB chunks from the end, and a scan stops
//! after 1,000,000 lines (flagged `scan_limited`) or, with `since`, once lines are older
//! than it (logs are appended in time order).
//!
//! JSON-lines logs (target-app, worker, upstreams) are parsed for their fields; the
//! PostgreSQL text log is parsed from its `YYYY-MM-DD HH:MM:SS.mmm TZ [pid] LEVEL:` prefix.
//! Not responsible for writing or rotating logs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};
use regex::{Regex, RegexBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::limit_arg;
use crate::util::{Scrubber, decode_cursor, encode_cursor, parse_time_arg, truncate_chars};
use crate::{ObserveError, Observer, Summary};

pub(crate) const SERVICES: [&str; 5] = [
    "target-app",
    "worker",
    "upstream-primary",
    "upstream-fallback",
    "postgres",
];
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "fatal"];
pub(crate) const MAX_SCAN_LINES: u64 = 1_000_000;
const CHUNK: u64 = 256 * 1024;
/// A "line" longer than this without a newline is cut (a binary blob in a log).
const MAX_LINE_BYTES: usize = 1024 * 1024;
pub(crate) const RAW_CHARS: usize = 2000;
/// Lines may be slightly out of order (several writers); stop a `since` scan only once
/// lines are this much older than `since`.
const SINCE_SLACK_S: i64 = 30;
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const MAX_SAMPLES_PER_CODE: usize = 3;

/// Arguments of `query_logs`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Which service's log to search: `target-app` (the shop API), `worker` (background
    /// jobs), `upstream-primary`, `upstream-fallback` (pricing dependencies), `postgres`
    /// (the database server) or `all` (every one, merged by time). Default: `target-app`.
    #[serde(default)]
    pub service: Option<String>,
    /// Minimum severity: `trace`, `debug`, `info`, `warn`, `error` or `fatal`; e.g.
    /// `warn` returns warn, error and fatal lines. Default: every level.
    #[serde(default)]
    pub level: Option<String>,
    /// Only lines at or after this time: RFC 3339 (`2026-01-02T03:04:05Z`) or a duration
    /// ago (`30s`, `5m`, `2h`, `1d`). Must not be in the future. Default: no limit.
    #[serde(default)]
    pub since: Option<String>,
    /// Only lines at or before this time, same formats as `since`. Default: now.
    #[serde(default)]
    pub until: Option<String>,
    /// Only lines with this stable error code, e.g. `DB_POOL_TIMEOUT`, `DB_AUTH_FAILED`,
    /// `DB_UNAVAILABLE`, `UPSTREAM_UNAVAILABLE`, `CACHE_CORRUPT`, `AUTH_INVALID_TOKEN`,
    /// `INJECTED_FAILURE`, `CONFIG_INVALID` (case-insensitive). Default: any.
    #[serde(default)]
    pub code: Option<String>,
    /// Only lines whose raw text matches this regular expression (Rust `regex` syntax,
    /// no look-around; size-limited). Default: none.
    #[serde(default)]
    pub regex: Option<String>,
    /// Only lines whose raw text contains this substring (case-insensitive). Default: none.
    #[serde(default)]
    pub contains: Option<String>,
    /// Lines per page, newest first. Allowed: 1 to 500. Default: 50.
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` from a previous answer with the same service, to get the next older
    /// page. Omit to start at the newest lines.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One log line.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogEntry {
    pub service: String,
    /// As written in the log (RFC 3339 for JSON logs).
    pub timestamp: Option<String>,
    /// Normalised: trace, debug, info, warn, error or fatal.
    pub level: Option<String>,
    /// Stable error code, if the line has one.
    pub code: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The line as written, truncated to 2000 characters, secrets removed.
    pub raw: String,
}

/// A page of matching log lines plus counts over all matches.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogQueryResult {
    /// Services searched.
    pub services: Vec<String>,
    /// Matching lines, newest first.
    pub entries: Vec<LogEntry>,
    /// All matching lines (not only this page), as of the first page.
    pub total: u64,
    /// Matches by error code (all matches, not only this page).
    pub counts_by_code: BTreeMap<String, u64>,
    /// Matches by level (all matches).
    pub counts_by_level: BTreeMap<String, u64>,
    /// More matching lines exist beyond this page.
    pub truncated: bool,
    /// Pass as `cursor` (same service) to get the next older page.
    pub next_cursor: Option<String>,
    /// The scan stopped after 1,000,000 lines: counts cover only the newest lines.
    pub scan_limited: bool,
    pub lines_scanned: u64,
}

impl Summary for LogQueryResult {
    fn summary(&self) -> String {
        let codes: Vec<String> = self
            .counts_by_code
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        let mut s = format!(
            "{} matching lines in {} ({} shown{}{}){}.",
            self.total,
            self.services.join(", "),
            self.entries.len(),
            if self.truncated {
                ", more with next_cursor"
            } else {
                ""
            },
            if self.scan_limited {
                ", scan limited to the newest 1,000,000 lines"
            } else {
                ""
            },
            if codes.is_empty() {
                String::new()
            } else {
                format!("; codes: {}", codes.join(", "))
            }
        );
        for e in self.entries.iter().take(10) {
            s.push_str(&format!(
                "\n  {} {} {} {}{}",
                e.timestamp.as_deref().unwrap_or("-"),
                e.service,
                e.level.as_deref().unwrap_or("-"),
                e.code
                    .as_deref()
                    .map(|c| format!("[{c}] "))
                    .unwrap_or_default(),
                truncate_chars(&e.message, 160)
            ));
        }
        s
    }
}

/// Validated filters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub min_level: Option<u8>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub code: Option<String>,
    pub regex: Option<Regex>,
    pub contains: Option<Regex>,
    /// Exam mode: skip the target's failpoint bookkeeping lines (a `"failpoint"` field).
    pub hide_failpoints: bool,
}

/// A parsed line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parsed {
    pub ts: Option<DateTime<Utc>>,
    pub ts_raw: Option<String>,
    pub level: Option<&'static str>,
    pub code: Option<String>,
    pub message: String,
    pub error: Option<String>,
    pub request_id: Option<String>,
    pub route: Option<String>,
    pub status: Option<u16>,
}

fn level_rank(l: &str) -> Option<u8> {
    LEVELS.iter().position(|x| *x == l).map(|p| p as u8)
}

fn normalize_level(l: &str) -> Option<&'static str> {
    let up = l.trim().to_ascii_uppercase();
    Some(match up.as_str() {
        "TRACE" => "trace",
        "DEBUG" | "DEBUG1" | "DEBUG2" | "DEBUG3" | "DEBUG4" | "DEBUG5" => "debug",
        "INFO" | "LOG" | "NOTICE" | "STATEMENT" | "DETAIL" | "HINT" | "CONTEXT" | "QUERY"
        | "LOCATION" => "info",
        "WARN" | "WARNING" => "warn",
        "ERROR" => "error",
        "FATAL" | "PANIC" | "CRITICAL" => "fatal",
        _ => return None,
    })
}

#[derive(Deserialize)]
struct JsonLine {
    timestamp: Option<String>,
    level: Option<String>,
    message: Option<String>,
    code: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    request_id: Option<String>,
    route: Option<String>,
    status: Option<serde_json::Value>,
}

fn value_str(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parse one line: JSON log, PostgreSQL text log, or plain text.
pub(crate) fn parse_line(line: &str) -> Parsed {
    let t = line.trim_start();
    if t.starts_with('{')
        && let Ok(j) = serde_json::from_str::<JsonLine>(t)
    {
        return Parsed {
            ts: j
                .timestamp
                .as_deref()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc)),
            ts_raw: j.timestamp,
            level: j.level.as_deref().and_then(normalize_level),
            code: j.code.as_ref().map(value_str),
            message: j.message.unwrap_or_default(),
            error: j.error.as_ref().map(value_str),
            request_id: j.request_id,
            route: j.route,
            status: j
                .status
                .as_ref()
                .and_then(|s| {
                    s.as_u64()
                        .or_else(|| s.as_str().and_then(|x| x.parse().ok()))
                })
                .and_then(|s| u16::try_from(s).ok()),
        };
    }
    if let Some(p) = parse_postgres(line) {
        return p;
    }
    Parsed {
        message: line.to_string(),
        ..Default::default()
    }
}

/// `2026-12-07 03:08:17.686 UTC [18269] LOG:  message`
fn parse_postgres(line: &str) -> Option<Parsed> {
    let bracket = line.find(" [")?;
    let head = &line[..bracket];
    if head.len() < 19 || !head.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let close = line[bracket..].find("] ")? + bracket;
    let mut rest = &line[close + 2..];
    // `log_line_prefix` is `%m [%p] %q%u@%d `: session lines carry `user@db ` first.
    if let Some((first, after)) = rest.split_once(' ')
        && first.contains('@')
        && !first.ends_with(':')
    {
        rest = after;
    }
    let colon = rest.find(':')?;
    let level_word = &rest[..colon];
    let level = normalize_level(level_word)?;
    let message = rest[colon + 1..].trim_start().to_string();
    let (dt_part, tz) = head.rsplit_once(' ').unwrap_or((head, ""));
    let ts = NaiveDateTime::parse_from_str(dt_part, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .filter(|_| tz == "UTC" || tz == "GMT")
        .map(|n| n.and_utc());
    Some(Parsed {
        ts,
        ts_raw: Some(head.to_string()),
        level: Some(level),
        code: None,
        message,
        ..Default::default()
    })
}

/// Reads a file's lines backwards, from `end` towards the start; yields (offset, line).
pub(crate) struct RevLines {
    file: File,
    buf: Vec<u8>,
    buf_start: u64,
}

impl RevLines {
    pub(crate) fn open(path: &std::path::Path, end: u64) -> std::io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            buf: Vec::new(),
            buf_start: end,
        })
    }

    pub(crate) fn next_line(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            let end = if self.buf.last() == Some(&b'\n') {
                self.buf.len() - 1
            } else {
                self.buf.len()
            };
            if let Some(i) = self.buf[..end].iter().rposition(|b| *b == b'\n') {
                let line = self.buf[i + 1..end].to_vec();
                let offset = self.buf_start + i as u64 + 1;
                self.buf.truncate(i + 1);
                return Ok(Some((offset, line)));
            }
            if self.buf_start == 0 || self.buf.len() > MAX_LINE_BYTES {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = self.buf[..end].to_vec();
                let offset = self.buf_start;
                self.buf.clear();
                return Ok(Some((offset, line)));
            }
            let n = CHUNK.min(self.buf_start);
            let start = self.buf_start - n;
            self.file.seek(SeekFrom::Start(start))?;
            let mut chunk = Vec::with_capacity(n as usize + self.buf.len());
            (&mut self.file).take(n).read_to_end(&mut chunk)?;
            if chunk.len() as u64 != n {
                // The file shrank under us: stop here rather than loop.
                self.buf_start = 0;
                continue;
            }
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            self.buf_start = start;
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct FilePos {
    pub service: String,
    /// File length when the first page was taken: lines after it are ignored.
    pub anchor: u64,
    /// Next page: lines starting before this offset.
    pub pos: u64,
}

/// What a scan found.
#[derive(Debug, Default)]
pub(crate) struct ScanOutput {
    pub entries: Vec<LogEntry>,
    pub total: u64,
    pub counts_by_code: BTreeMap<String, u64>,
    pub counts_by_level: BTreeMap<String, u64>,
    pub samples_by_code: BTreeMap<String, Vec<LogEntry>>,
    pub truncated: bool,
    pub next: Option<Vec<FilePos>>,
    pub scan_limited: bool,
    pub lines_scanned: u64,
}

fn to_entry(service: &str, raw: &str, p: &Parsed, scrub: &Scrubber) -> LogEntry {
    LogEntry {
        service: service.to_string(),
        timestamp: p.ts_raw.clone(),
        level: p.level.map(str::to_string),
        code: p.code.as_deref().map(|c| truncate_chars(c, 60)),
        message: truncate_chars(&scrub.scrub(&p.message), 500),
        error: p
            .error
            .as_deref()
            .map(|e| truncate_chars(&scrub.scrub(e), 500)),
        request_id: p.request_id.as_deref().map(|r| truncate_chars(r, 60)),
        route: p.route.as_deref().map(|r| truncate_chars(r, 200)),
        status: p.status,
        raw: truncate_chars(&scrub.scrub(raw), RAW_CHARS),
    }
}

struct Collected {
    offset: u64,
    ts: Option<DateTime<Utc>>,
    entry: LogEntry,
}

/// Scan the given files (service, path, start position) newest first. Blocking.
pub(crate) fn scan(
    files: &[(String, PathBuf, Option<FilePos>)],
    filter: &Filter,
    limit: usize,
    scrub: &Scrubber,
) -> Result<ScanOutput, ObserveError> {
    scan_bounded(files, filter, limit, scrub, MAX_SCAN_LINES)
}

fn scan_bounded(
    files: &[(String, PathBuf, Option<FilePos>)],
    filter: &Filter,
    limit: usize,
    scrub: &Scrubber,
    max_lines: u64,
) -> Result<ScanOutput, ObserveError> {
    let mut out = ScanOutput::default();
    let code_upper = filter.code.as_ref().map(|c| c.to_ascii_uppercase());
    let mut per_service: Vec<(FilePos, Vec<Collected>, u64)> = Vec::new();
    for (service, path, start) in files {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let pos = match start {
            Some(p) if p.anchor > len => {
                return Err(ObserveError::invalid(
                    "cursor",
                    format!(
                        "the {service} log shrank since this cursor was issued (rotated or \
                         truncated); start again without a cursor"
                    ),
                ));
            }
            Some(p) => p.clone(),
            None => FilePos {
                service: service.clone(),
                anchor: len,
                pos: len,
            },
        };
        let mut collected: Vec<Collected> = Vec::new();
        let mut below = 0u64;
        if len > 0 {
            let mut reader = RevLines::open(path, pos.anchor)
                .map_err(|e| ObserveError::Other(format!("cannot read the {service} log: {e}")))?;
            loop {
                if out.lines_scanned >= max_lines {
                    out.scan_limited = true;
                    break;
                }
                let Some((offset, bytes)) = reader.next_line().map_err(|e| {
                    ObserveError::Other(format!("cannot read the {service} log: {e}"))
                })?
                else {
                    break;
                };
                out.lines_scanned += 1;
                let raw = String::from_utf8_lossy(&bytes);
                let raw = raw.trim_end_matches('\r');
                if raw.trim().is_empty() {
                    continue;
                }
                if filter.hide_failpoints && raw.contains("\"failpoint\"") {
                    continue;
                }
                if let Some(c) = &filter.contains
                    && !c.is_match(raw)
                {
                    continue;
                }
                if let Some(r) = &filter.regex
                    && !r.is_match(raw)
                {
                    continue;
                }
                // Codes are upper-case constants in every log line that has one: a cheap
                // substring test spares parsing the lines that cannot match.
                if let Some(code) = &code_upper
                    && !raw.contains(code.as_str())
                {
                    continue;
                }
                let p = parse_line(raw);
                if let Some(since) = filter.since {
                    match p.ts {
                        Some(ts) if ts < since - chrono::Duration::seconds(SINCE_SLACK_S) => break,
                        Some(ts) if ts < since => continue,
                        None => continue,
                        _ => {}
                    }
                }
                if let Some(until) = filter.until
                    && p.ts.is_none_or(|ts| ts > until)
                {
                    continue;
                }
                if let Some(min) = filter.min_level
                    && p.level.and_then(level_rank).is_none_or(|r| r < min)
                {
                    continue;
                }
                if let Some(code) = &filter.code
                    && !p
                        .code
                        .as_deref()
                        .is_some_and(|c| c.eq_ignore_ascii_case(code))
                {
                    continue;
                }
                out.total += 1;
                if let Some(l) = p.level {
                    *out.counts_by_level.entry(l.to_string()).or_default() += 1;
                }
                if let Some(c) = &p.code {
                    let key = truncate_chars(c, 60);
                    if out.counts_by_code.len() < 100 || out.counts_by_code.contains_key(&key) {
                        *out.counts_by_code.entry(key.clone()).or_default() += 1;
                    }
                    let samples = out.samples_by_code.entry(key).or_default();
                    if samples.len() < MAX_SAMPLES_PER_CODE {
                        samples.push(to_entry(service, raw, &p, scrub));
                    }
                }
                if offset < pos.pos {
                    if collected.len() < limit {
                        collected.push(Collected {
                            offset,
                            ts: p.ts,
                            entry: to_entry(service, raw, &p, scrub),
                        });
                    }
                    below += 1;
                }
            }
        }
        per_service.push((pos, collected, below));
    }

    // k-way merge, newest first; each service's list is already newest first, so what is
    // taken from a service is a prefix of its list and its next position is well defined.
    let mut heads = vec![0usize; per_service.len()];
    while out.entries.len() < limit {
        let mut best: Option<usize> = None;
        for (i, (_, list, _)) in per_service.iter().enumerate() {
            let Some(c) = list.get(heads[i]) else {
                continue;
            };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let cb = &per_service[b].1[heads[b]];
                    if c.ts.unwrap_or(DateTime::<Utc>::MIN_UTC)
                        > cb.ts.unwrap_or(DateTime::<Utc>::MIN_UTC)
                    {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        let Some(b) = best else { break };
        out.entries.push(per_service[b].1[heads[b]].entry.clone());
        heads[b] += 1;
    }
    let mut next = Vec::new();
    let mut remaining = 0u64;
    for (i, (pos, list, below)) in per_service.into_iter().enumerate() {
        let taken = heads[i];
        remaining += below.saturating_sub(taken as u64);
        let new_pos = if taken > 0 {
            list[taken - 1].offset
        } else {
            pos.pos
        };
        next.push(FilePos {
            pos: new_pos,
            ..pos
        });
    }
    out.truncated = remaining > 0;
    out.next = out.truncated.then_some(next);
    Ok(out)
}

/// Build a filter from query arguments.
pub(crate) fn build_filter(q: &LogQuery, now: DateTime<Utc>) -> Result<Filter, ObserveError> {
    let nonempty = |o: &Option<String>| {
        o.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut f = Filter::default();
    if let Some(l) = nonempty(&q.level) {
        let norm = normalize_level(&l)
            .filter(|n| {
                LEVELS.contains(n)
                    && !matches!(
                        l.to_ascii_uppercase().as_str(),
                        "LOG"
                            | "NOTICE"
                            | "STATEMENT"
                            | "DETAIL"
                            | "HINT"
                            | "CONTEXT"
                            | "QUERY"
                            | "LOCATION"
                            | "PANIC"
                            | "CRITICAL"
                            | "DEBUG1"
                            | "DEBUG2"
                            | "DEBUG3"
                            | "DEBUG4"
                            | "DEBUG5"
                    )
            })
            .ok_or_else(|| {
                ObserveError::invalid(
                    "level",
                    format!(
                        "unknown level {:?}; allowed: {}",
                        truncate_chars(&l, 40),
                        LEVELS.join(", ")
                    ),
                )
            })?;
        f.min_level = level_rank(norm);
    }
    if let Some(s) = nonempty(&q.since) {
        let t = parse_time_arg("since", &s, now)?;
        if t > now + chrono::Duration::seconds(5) {
            return Err(ObserveError::invalid(
                "since",
                format!(
                    "{} is in the future; allowed: a past time or a duration ago such as 10m",
                    t.to_rfc3339()
                ),
            ));
        }
        f.since = Some(t);
    }
    if let Some(s) = nonempty(&q.until) {
        f.until = Some(parse_time_arg("until", &s, now)?);
    }
    if let (Some(a), Some(b)) = (f.since, f.until)
        && a > b
    {
        return Err(ObserveError::invalid(
            "until",
            "is before `since`; allowed: a time after `since`",
        ));
    }
    f.code = nonempty(&q.code).map(|c| truncate_chars(&c, 80));
    if let Some(r) = nonempty(&q.regex) {
        if r.len() > 1000 {
            return Err(ObserveError::invalid(
                "regex",
                "longer than 1000 characters",
            ));
        }
        f.regex = Some(
            RegexBuilder::new(&r)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    ObserveError::invalid("regex", format!("not a valid regular expression: {e}"))
                })?,
        );
    }
    if let Some(c) = nonempty(&q.contains) {
        if c.len() > 1000 {
            return Err(ObserveError::invalid(
                "contains",
                "longer than 1000 characters",
            ));
        }
        f.contains = Some(
            RegexBuilder::new(&regex::escape(&c))
                .case_insensitive(true)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ObserveError::invalid("contains", e.to_string()))?,
        );
    }
    Ok(f)
}

/// The services named by the `service` argument.
pub(crate) fn services_arg(s: Option<&str>) -> Result<Vec<String>, ObserveError> {
    let s = s
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("target-app");
    if s.eq_ignore_ascii_case("all") {
        return Ok(SERVICES.iter().map(|s| s.to_string()).collect());
    }
    if SERVICES.contains(&s) {
        return Ok(vec![s.to_string()]);
    }
    Err(ObserveError::invalid(
        "service",
        format!(
            "unknown service {:?}; allowed: {}, all",
            truncate_chars(s, 40),
            SERVICES.join(", ")
        ),
    ))
}

/// Log files of `services`, from the topology (or the default layout).
pub(crate) async fn log_files(obs: &Observer, services: &[String]) -> Vec<(String, PathBuf)> {
    let topo = obs.topology().await.ok();
    services
        .iter()
        .map(|s| {
            let path = topo
                .as_ref()
                .and_then(|t| t.service(s).ok())
                .map(|spec| spec.log_path.clone())
                .unwrap_or_else(|| obs.state().logs_dir().join(format!("{s}.log")));
            (s.clone(), path)
        })
        .collect()
}

pub(crate) async fn query_logs(
    obs: &Observer,
    q: LogQuery,
) -> Result<LogQueryResult, ObserveError> {
    let limit = limit_arg(q.limit)?;
    let services = services_arg(q.service.as_deref())?;
    let mut filter = build_filter(&q, Utc::now())?;
    filter.hide_failpoints = obs.is_exam();
    let cursor: Option<Vec<FilePos>> = q.cursor.as_deref().map(decode_cursor).transpose()?;
    if let Some(c) = &cursor {
        let names: Vec<&str> = c.iter().map(|p| p.service.as_str()).collect();
        if names != services.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(ObserveError::invalid(
                "cursor",
                format!(
                    "this cursor belongs to a query on {}; pass the same `service` or omit the cursor",
                    names.join(", ")
                ),
            ));
        }
    }
    if !obs.state().logs_dir().is_dir() {
        return Err(ObserveError::SandboxUnavailable(format!(
            "no logs directory at {}; start a sandbox with `aiops up`",
            obs.state().logs_dir().display()
        )));
    }
    let files: Vec<(String, PathBuf, Option<FilePos>)> = log_files(obs, &services)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, (s, p))| (s, p, cursor.as_ref().map(|c| c[i].clone())))
        .collect();
    let scrub = obs.scrubber();
    let out = tokio::task::spawn_blocking(move || scan(&files, &filter, limit, &scrub))
        .await
        .map_err(|e| ObserveError::Other(format!("log scan failed: {e}")))??;
    Ok(LogQueryResult {
        services,
        entries: out.entries,
        total: out.total,
        counts_by_code: out.counts_by_code,
        counts_by_level: out.counts_by_level,
        truncated: out.truncated,
        next_cursor: out.next.as_ref().map(encode_cursor),
        scan_limited: out.scan_limited,
        lines_scanned: out.lines_scanned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_json_lines() {
        let p = parse_line(
            r#"{"timestamp":"2026-12-07T03:08:24.867209Z","level":"WARN","message":"Request failed.","code":"DB_POOL_TIMEOUT","error":"pool timed out","request_id":"r1","route":"/api/v1/products","status":503}"#,
        );
        assert_eq!(p.level, Some("warn"));
        assert_eq!(p.code.as_deref(), Some("DB_POOL_TIMEOUT"));
        assert_eq!(p.status, Some(503));
        assert_eq!(p.route.as_deref(), Some("/api/v1/products"));
        assert_eq!(p.error.as_deref(), Some("pool timed out"));
        assert!(p.ts.is_some());
    }

    #[test]
    fn parses_postgres_lines() {
        let p = parse_line(
            "2026-12-07 03:08:17.686 UTC [18269] FATAL:  password authentication failed for user \"shop_app\"",
        );
        assert_eq!(p.level, Some("fatal"));
        assert!(p.message.starts_with("password authentication failed"));
        assert_eq!(p.ts.unwrap().to_rfc3339(), "2026-12-07T03:08:17.686+00:00");
        let p = parse_line(
            "2026-12-07 03:27:39.745 UTC [28074] aiops_admin@postgres FATAL:  the database system is starting up",
        );
        assert_eq!(p.level, Some("fatal"));
        assert_eq!(p.message, "the database system is starting up");
        let p = parse_line(
            "2026-12-07 03:27:39.745 UTC [28074] [unknown]@[unknown] LOG:  connection received",
        );
        assert_eq!(p.level, Some("info"));
        let p = parse_line("2026-12-07 03:08:17.686 UTC [18269] LOG:  database system is ready");
        assert_eq!(p.level, Some("info"));
        let p = parse_line(
            "2026-12-07 03:08:17.686 UTC [1] ERROR:  canceling statement due to lock timeout",
        );
        assert_eq!(p.level, Some("error"));
        let plain = parse_line("just text [x] y: z");
        assert_eq!(plain.level, None);
        assert_eq!(plain.message, "just text [x] y: z");
        assert_eq!(parse_line("{not json").message, "{not json");
    }

    fn write_log(lines: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for i in 0..lines {
            let (level, code) = if i % 10 == 0 {
                ("ERROR", ",\"code\":\"DB_POOL_TIMEOUT\"")
            } else {
                ("INFO", "")
            };
            writeln!(
                f,
                r#"{{"timestamp":"2026-12-07T03:{:02}:{:02}Z","level":"{level}","message":"line {i}"{code}}}"#,
                (i / 60) % 60,
                i % 60
            )
            .unwrap();
        }
        f
    }

    #[test]
    fn rev_lines_reads_every_line_backwards_across_chunks() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let long = "x".repeat(300_000);
        writeln!(f, "first").unwrap();
        writeln!(f, "{long}").unwrap();
        write!(f, "last-without-newline").unwrap();
        let len = f.as_file().metadata().unwrap().len();
        let mut r = RevLines::open(f.path(), len).unwrap();
        let mut got = Vec::new();
        while let Some((off, l)) = r.next_line().unwrap() {
            got.push((off, String::from_utf8(l).unwrap()));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, "last-without-newline");
        assert_eq!(got[1].1.len(), 300_000);
        assert_eq!(got[2], (0, "first".to_string()));
        assert_eq!(got[1].0, 6);
    }

    #[test]
    fn scan_pages_and_counts() {
        let f = write_log(3000);
        let files = vec![("target-app".to_string(), f.path().to_path_buf(), None)];
        let scrub = Scrubber::default();
        let filter = Filter::default();
        let p1 = scan(&files, &filter, 100, &scrub).unwrap();
        assert_eq!(p1.total, 3000);
        assert_eq!(p1.counts_by_code.get("DB_POOL_TIMEOUT"), Some(&300));
        assert_eq!(p1.counts_by_level.get("error"), Some(&300));
        assert_eq!(p1.entries[0].message, "line 2999");
        assert_eq!(p1.entries[99].message, "line 2900");
        assert!(p1.truncated);
        let next = p1.next.unwrap();
        let files2 = vec![(
            "target-app".to_string(),
            f.path().to_path_buf(),
            Some(next[0].clone()),
        )];
        let p2 = scan(&files2, &filter, 100, &scrub).unwrap();
        assert_eq!(p2.entries[0].message, "line 2899");
        assert_eq!(p2.total, 3000);
        // Code filter and level filter.
        let q = LogQuery {
            code: Some("db_pool_timeout".into()),
            level: Some("error".into()),
            ..Default::default()
        };
        let filter = build_filter(&q, Utc::now()).unwrap();
        let p = scan(&files, &filter, 5, &scrub).unwrap();
        assert_eq!(p.total, 300);
        assert_eq!(p.entries[0].message, "line 2990");
        assert_eq!(p.samples_by_code["DB_POOL_TIMEOUT"].len(), 3);
        let q = LogQuery {
            regex: Some("line 1[0-9]$|line 1\"".into()),
            ..Default::default()
        };
        let filter = build_filter(&q, Utc::now()).unwrap();
        let p = scan(&files, &filter, 500, &scrub).unwrap();
        // `line 1[0-9]$` never matches (lines end with `}`); `line 1"` matches once.
        assert_eq!(p.total, 1);
        assert_eq!(p.entries[0].message, "line 1");
        let q = LogQuery {
            contains: Some("LINE 5\"".into()),
            ..Default::default()
        };
        let filter = build_filter(&q, Utc::now()).unwrap();
        let p = scan(&files, &filter, 500, &scrub).unwrap();
        assert_eq!(p.total, 1);
        assert!(!p.truncated && p.next.is_none());
    }

    #[test]
    fn scan_is_bounded() {
        let f = write_log(3000);
        let files = vec![("worker".to_string(), f.path().to_path_buf(), None)];
        let p = scan_bounded(&files, &Filter::default(), 10, &Scrubber::default(), 1000).unwrap();
        assert!(p.scan_limited);
        assert_eq!(p.lines_scanned, 1000);
        assert_eq!(p.total, 1000);
        assert_eq!(p.entries[0].message, "line 2999");
    }

    #[test]
    fn since_stops_the_scan_early() {
        let f = write_log(3000);
        let files = vec![("worker".to_string(), f.path().to_path_buf(), None)];
        let since = DateTime::parse_from_rfc3339("2026-12-07T03:49:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let filter = Filter {
            since: Some(since),
            ..Default::default()
        };
        let p = scan(&files, &filter, 10, &Scrubber::default()).unwrap();
        // Lines 2940..=2999 match (03:49:00..03:49:59); the scan stops 30 s before since.
        assert_eq!(p.total, 60);
        assert!(p.lines_scanned < 200, "{}", p.lines_scanned);
    }

    #[test]
    fn bad_arguments_are_invalid() {
        let now = Utc::now();
        let bad = |q: LogQuery, field: &str| match build_filter(&q, now) {
            Err(ObserveError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        };
        bad(
            LogQuery {
                regex: Some("(".into()),
                ..Default::default()
            },
            "regex",
        );
        bad(
            LogQuery {
                regex: Some("a{1000}{1000}".into()),
                ..Default::default()
            },
            "regex",
        );
        bad(
            LogQuery {
                level: Some("loud".into()),
                ..Default::default()
            },
            "level",
        );
        bad(
            LogQuery {
                since: Some("2999-01-01T00:00:00Z".into()),
                ..Default::default()
            },
            "since",
        );
        bad(
            LogQuery {
                since: Some("whenever".into()),
                ..Default::default()
            },
            "since",
        );
        assert!(services_arg(Some("nginx")).is_err());
        assert_eq!(services_arg(None).unwrap(), vec!["target-app"]);
        assert_eq!(services_arg(Some("all")).unwrap().len(), 5);
        assert!(
            build_filter(
                &LogQuery {
                    level: Some("WARN".into()),
                    ..Default::default()
                },
                now
            )
            .is_ok()
        );
    }
}
