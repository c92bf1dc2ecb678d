//! Alerts to humans: a Slack-compatible webhook the daemon posts to when a person is
//! needed, and the watcher that notices those moments.
//!
//! The watcher follows the state dir's shared files once a second, so it sees what every
//! caller did (MCP over HTTP or stdio, REST, the CLI, a drill in another process):
//! - the audit log's `finished` lines: an action refused (`refused`) or waiting for a
//!   person (`approval`); each line's duration also feeds `/metrics`;
//! - incident reports filed with `resolved: false`: the agent hands the incident to a
//!   person (`escalation`);
//! - a new `drills/latest.json` with a failed trial (`drill_failed`).
//!
//! Posting never blocks the watcher nor anything else: notifications go through a
//! bounded channel to one sender task (a full queue drops and counts), which retries 5xx,
//! 429 and connection errors with exponential backoff, a bounded number of times. Bodies
//! are built from redacted audit lines and scrubbed of every secret value of the state
//! dir; the webhook URL (which is itself a secret for Slack) is never logged nor sent.
//!
//! Configured in `aiops.toml` (`[notify]`, [`NotifyConfig`]), re-read when the file
//! changes; without it nothing is sent.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aiops_sandbox::StateDir;
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control_metrics::METRICS;

/// Notifications waiting to be sent; more are dropped (and counted).
const QUEUE: usize = 64;
/// How often the watcher looks at the files.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent filed an incident report saying it did not resolve the incident.
    Escalation,
    /// The policy refused an action (denied, read-only, rate limit, bad input).
    Refused,
    /// An action waits for a person's approval.
    Approval,
    /// A drill finished with a failed trial.
    DrillFailed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escalation => "escalation",
            Self::Refused => "refused",
            Self::Approval => "approval",
            Self::DrillFailed => "drill_failed",
        }
    }
}

fn all_kinds() -> Vec<Kind> {
    vec![
        Kind::Escalation,
        Kind::Refused,
        Kind::Approval,
        Kind::DrillFailed,
    ]
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_timeout_s() -> u64 {
    5
}

/// The `[notify]` table of `aiops.toml`:
///
/// ```toml
/// [notify]
/// webhook_url = "https://hooks.slack.com/services/T000/B000/XXXX"
/// on = ["escalation", "refused", "approval", "drill_failed"]   # default: all four
/// max_attempts = 5      # per notification, the first included (1-10)
/// backoff_ms = 500      # wait before the first retry, doubled each time (50-60000)
/// timeout_s = 5         # per attempt (1-60)
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// A Slack-compatible incoming webhook (`http` or `https`). It receives
    /// `{"text": ..., "blocks": [...]}`.
    pub webhook_url: String,
    /// Which events notify.
    #[serde(default = "all_kinds")]
    pub on: Vec<Kind>,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// The remediation policy, checked by `aiops-remediation`.
    #[serde(default, rename = "policy")]
    _policy: Option<toml::Value>,
    /// The runtime and service settings, checked by `aiops-sandbox`.
    #[serde(default, rename = "sandbox")]
    _sandbox: Option<toml::Value>,
    #[serde(default)]
    notify: Option<NotifyConfig>,
}

impl NotifyConfig {
    /// Parse `aiops.toml`'s text; `Ok(None)` without a `[notify]` table.
    pub fn from_toml(text: &str) -> anyhow::Result<Option<Self>> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(cfg) = file.notify else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(&cfg.webhook_url)
            .map_err(|e| anyhow::anyhow!("[notify] webhook_url is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("[notify] webhook_url must be an http:// or https:// URL with a host");
        }
        if !(1..=10).contains(&cfg.max_attempts) {
            bail!(
                "[notify] max_attempts = {} is out of range; allowed: 1 to 10",
                cfg.max_attempts
            );
        }
        if !(50..=60_000).contains(&cfg.backoff_ms) {
            bail!(
                "[notify] backoff_ms = {} is out of range; allowed: 50 to 60000",
                cfg.backoff_ms
            );
        }
        if !(1..=60).contains(&cfg.timeout_s) {
            bail!(
                "[notify] timeout_s = {} is out of range; allowed: 1 to 60",
                cfg.timeout_s
            );
        }
        Ok(Some(cfg))
    }

    /// The state dir's `aiops.toml`, if any.
    pub fn load(state: &StateDir) -> anyhow::Result<Option<Self>> {
        let path = state.config_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The URL's scheme and host, for logs (the path of a Slack URL is a secret).
    fn where_to(&self) -> String {
        reqwest::Url::parse(&self.webhook_url)
            .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")))
            .unwrap_or_default()
    }
}

/// One message to people.
#[derive(Debug, Clone)]
pub struct Notification {
    pub kind: Kind,
    /// One line.
    pub title: String,
    /// A few lines of Slack mrkdwn.
    pub detail: String,
}

/// The webhook body: `text` for any Slack-compatible receiver, `blocks` for Slack.
pub fn body(n: &Notification, dashboard: &str) -> Value {
    json!({
        "text": format!("[aiops] {}", n.title),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": n.title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": n.detail}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
                "aiops · `{}` · {} · dashboard: {dashboard}",
                n.kind.as_str(),
                chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            )}]},
        ],
    })
}

/// Posts notifications from a background task; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    config: Arc<Mutex<Option<NotifyConfig>>>,
    tx: mpsc::Sender<Notification>,
}

impl Notifier {
    /// Starts the sender task. `dashboard` is the page's URL (no token), for the messages.
    pub fn start(
        config: Option<NotifyConfig>,
        dashboard: String,
        cancel: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let config = Arc::new(Mutex::new(config));
        tokio::spawn(send_loop(rx, config.clone(), dashboard, cancel));
        Self { config, tx }
    }

    fn current(&self) -> Option<NotifyConfig> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, config: Option<NotifyConfig>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Queue `n` if the configuration asks for its kind; never waits.
    pub fn notify(&self, n: Notification) {
        let Some(cfg) = self.current() else { return };
        if !cfg.on.contains(&n.kind) {
            return;
        }
        let kind = n.kind.as_str();
        if self.tx.try_send(n).is_err() {
            METRICS.notification(kind, "dropped");
            tracing::warn!(message = "Notification dropped: the queue is full.", kind);
        }
    }
}

async fn send_loop(
    mut rx: mpsc::Receiver<Notification>,
    config: Arc<Mutex<Option<NotifyConfig>>>,
    dashboard: String,
    cancel: CancellationToken,
) {
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(message = "Cannot build the notifier's HTTP client.", %error);
            return;
        }
    };
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            n = rx.recv() => match n { Some(n) => n, None => return },
        };
        let Some(cfg) = config.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            continue;
        };
        let body = body(&n, &dashboard);
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = deliver(&client, &cfg, &body) => r,
        };
        match outcome {
            Ok(attempts) => {
                METRICS.notification(n.kind.as_str(), "sent");
                tracing::info!(message = "Notification sent.", kind = n.kind.as_str(), attempts, to = %cfg.where_to());
            }
            Err(error) => {
                METRICS.notification(n.kind.as_str(), "failed");
                tracing::warn!(message = "Notification not delivered.", kind = n.kind.as_str(), to = %cfg.where_to(), %error);
            }
        }
    }
}

/// POST `body` until a 2xx, at most `max_attempts` times; 5xx, 429 and transport errors
/// are retried after `backoff_ms`, doubled each time (capped at 30 s); any other answer
/// is final. Returns the attempts used.
pub async fn deliver(
    client: &reqwest::Client,
    cfg: &NotifyConfig,
    body: &Value,
) -> anyhow::Result<u32> {
    let mut wait = Duration::from_millis(cfg.backoff_ms);
    let mut last = String::new();
    for attempt in 1..=cfg.max_attempts {
        let sent = client
            .post(&cfg.webhook_url)
            .timeout(Duration::from_secs(cfg.timeout_s))
            .json(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(attempt),
            Ok(resp) => {
                let status = resp.status();
                last = format!("the webhook answered {status}");
                if !(status.is_server_error() || status.as_u16() == 429) {
                    bail!("{last} (not retried)");
                }
            }
            // Without the URL: reqwest's message would carry it.
            Err(e) => last = format!("cannot reach the webhook: {}", e.without_url()),
        }
        if attempt < cfg.max_attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
    bail!("{last}, after {} attempts", cfg.max_attempts)
}

/// New complete lines appended to a file since the last look.
struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the file's current end: what happened before the daemon is not news.
    fn at_end(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Self {
            path,
            offset,
            partial: Vec::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        // At most 4 MiB a look; the rest next time.
        let mut buf = Vec::new();
        let read = f
            .by_ref()
            .take(4 * 1024 * 1024)
            .read_to_end(&mut buf)
            .unwrap_or(0);
        self.offset += read as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// What an audit `finished` line means for people, if anything.
fn from_audit(line: &Value) -> Option<Notification> {
    if line["event"] != "finished" {
        return None;
    }
    let action = line["action"].as_str().unwrap_or("?");
    let client = line["client"].as_str().unwrap_or("?");
    let params = match &line["params"] {
        Value::Object(m) if !m.is_empty() => Value::Object(m.clone()).to_string(),
        _ => "{}".into(),
    };
    match line["status"].as_str()? {
        "refused" => {
            let reason = line["policy"]["reason"]
                .as_str()
                .or(line["error"].as_str())
                .or(line["message"].as_str())
                .unwrap_or("refused");
            Some(Notification {
                kind: Kind::Refused,
                title: format!("Action refused: {action}"),
                detail: format!(
                    "*{action}* asked by `{client}` with `{params}` was refused: {reason}"
                ),
            })
        }
        "pending_approval" => {
            let id = line["approval_id"].as_str().unwrap_or("?");
            Some(Notification {
                kind: Kind::Approval,
                title: format!("Approval needed: {action}"),
                detail: format!(
                    "*{action}* asked by `{client}` with `{params}` waits for a person. \
                     Approve in the dashboard or with `aiops approve {id}` (deny: `aiops deny {id}`)."
                ),
            })
        }
        _ => None,
    }
}

/// Feeds `/metrics` with an audit `finished` line's duration.
fn count_action(line: &Value) {
    if line["event"] != "finished" {
        return;
    }
    if let (Some(action), Some(status), Some(ms)) = (
        line["action"].as_str(),
        line["status"].as_str(),
        line["duration_ms"].as_u64(),
    ) {
        METRICS.action(action, status, ms as f64 / 1000.0);
    }
}

struct Watcher {
    state: StateDir,
    notifier: Notifier,
    audit: Follower,
    reports_seen: HashSet<String>,
    incidents_mtime: Option<SystemTime>,
    drill_seen: Option<String>,
    drill_mtime: Option<SystemTime>,
    config_mtime: Option<SystemTime>,
}

impl Watcher {
    fn new(state: StateDir, notifier: Notifier) -> Self {
        let drill = state.root().join("drills").join("latest.json");
        let drill_seen = std::fs::read_to_string(&drill)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["id"].as_str().map(str::to_string));
        Self {
            audit: Follower::at_end(state.root().join("audit").join("audit.jsonl")),
            reports_seen: aiops_sandbox::incidents::reports(&state)
                .into_iter()
                .map(|r| r.id)
                .collect(),
            incidents_mtime: mtime(&state.root().join("incidents")),
            drill_mtime: mtime(&drill),
            drill_seen,
            config_mtime: mtime(&state.config_file()),
            state,
            notifier,
        }
    }

    fn send(&self, mut n: Notification) {
        // Audit lines are redacted already; scrub every secret value again regardless.
        n.title = aiops_sandbox::incidents::scrub(&self.state, &n.title);
        n.detail = aiops_sandbox::incidents::scrub(&self.state, &n.detail);
        self.notifier.notify(n);
    }

    fn look(&mut self) {
        let config = mtime(&self.state.config_file());
        if config != self.config_mtime {
            self.config_mtime = config;
            match NotifyConfig::load(&self.state) {
                Ok(cfg) => {
                    tracing::info!(
                        message = "Notifier configuration read.",
                        webhook = cfg.is_some()
                    );
                    self.notifier.set(cfg);
                }
                Err(error) => tracing::error!(
                    message = "Invalid notifier configuration; keeping the previous one.",
                    error = format!("{error:#}")
                ),
            }
        }
        for line in self.audit.new_lines() {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            count_action(&v);
            if let Some(n) = from_audit(&v) {
                self.send(n);
            }
        }
        let incidents = mtime(&self.state.root().join("incidents"));
        if incidents != self.incidents_mtime {
            self.incidents_mtime = incidents;
            for r in aiops_sandbox::incidents::reports(&self.state) {
                if !self.reports_seen.insert(r.id.clone()) || r.resolved {
                    continue;
                }
                self.send(Notification {
                    kind: Kind::Escalation,
                    title: format!("Escalation: {}", r.title),
                    detail: format!(
                        "`{}` filed incident *{}* as *not resolved*: a person has to take over.\n\
                         What broke: {}\nDone so far: {}",
                        r.client,
                        r.id,
                        clip(&r.what_broke, 500),
                        clip(&r.what_was_done.join("; "), 500),
                    ),
                });
            }
        }
        let drill_path = self.state.root().join("drills").join("latest.json");
        let drill = mtime(&drill_path);
        if drill != self.drill_mtime {
            self.drill_mtime = drill;
            let results = std::fs::read_to_string(&drill_path)
                .ok()
                .and_then(|t| serde_json::from_str::<aiops_drill::DrillResults>(&t).ok());
            if let Some(d) = results
                && self.drill_seen.as_deref() != Some(d.id.as_str())
            {
                self.drill_seen = Some(d.id.clone());
                let failed: Vec<String> = d
                    .results
                    .iter()
                    .filter(|r| !r.success)
                    .map(|r| format!("#{} {}", r.index, r.fault))
                    .collect();
                if !failed.is_empty() {
                    self.send(Notification {
                        kind: Kind::DrillFailed,
                        title: format!("Drill {} failed", d.id),
                        // Not the agent's command line: it may carry an API key.
                        detail: format!(
                            "The agent passed {}/{} trials ({:.0} %). Failed: {}. \
                             The table is in the dashboard and under drills/{}/.",
                            d.summary.passed,
                            d.summary.trials,
                            d.summary.success_rate_percent,
                            clip(&failed.join(", "), 800),
                            d.id
                        ),
                    });
                }
            }
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Watches the state dir until `cancel`, once a second, on a blocking thread per look.
pub fn spawn_watcher(state: StateDir, notifier: Notifier, cancel: CancellationToken) {
    tokio::spawn(async move {
        let watcher = Arc::new(Mutex::new(Watcher::new(state, notifier)));
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let w = watcher.clone();
            let _ = tokio::task::spawn_blocking(move || {
                w.lock().unwrap_or_else(|p| p.into_inner()).look();
            })
            .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn config_is_checked() {
        assert!(NotifyConfig::from_toml("").unwrap().is_none());
        assert!(
            NotifyConfig::from_toml("[policy]\nread_only = true\n")
                .unwrap()
                .is_none()
        );
        let c = NotifyConfig::from_toml("[notify]\nwebhook_url = \"http://127.0.0.1:9/x\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(c.on.len(), 4);
        assert_eq!(c.max_attempts, 5);
        let e = NotifyConfig::from_toml("[notify]\nwebhook_url = \"http://h/\"\nretries = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retries"), "{e}");
        let e = NotifyConfig::from_toml("[notify]\nwebhook_url = \"ftp://h/\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http"), "{e}");
        let e = NotifyConfig::from_toml(
            "[notify]\nwebhook_url = \"http://h/\"\non = [\"everything\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("everything"), "{e}");
        let e =
            NotifyConfig::from_toml("[notify]\nwebhook_url = \"http://h/\"\nmax_attempts = 0\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("max_attempts"), "{e}");
        assert!(
            NotifyConfig::from_toml("[sandbox]\nruntime = \"docker\"\n")
                .unwrap()
                .is_none()
        );
        let e = NotifyConfig::from_toml("[notfy]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notfy"), "{e}");
    }

    #[test]
    fn audit_lines_become_notifications() {
        let pending = json!({"event": "finished", "status": "pending_approval", "action": "restart_service",
            "client": "rest", "params": {"service": "worker"}, "approval_id": "ap-1", "duration_ms": 3});
        let n = from_audit(&pending).unwrap();
        assert_eq!(n.kind, Kind::Approval);
        assert!(n.detail.contains("aiops approve ap-1"), "{}", n.detail);
        let refused = json!({"event": "finished", "status": "refused", "action": "kill_process",
            "client": "cli", "policy": {"reason": "denied by policy"}});
        let n = from_audit(&refused).unwrap();
        assert_eq!(n.kind, Kind::Refused);
        assert!(n.detail.contains("denied by policy"));
        assert!(from_audit(&json!({"event": "started", "status": "refused"})).is_none());
        assert!(from_audit(&json!({"event": "finished", "status": "executed"})).is_none());
    }

    #[test]
    fn follower_returns_only_complete_new_lines() {
        let dir = tempfile_dir();
        let path = dir.join("a.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = Follower::at_end(path.clone());
        assert!(f.new_lines().is_empty());
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        w.write_all(b"one\ntw").unwrap();
        assert_eq!(f.new_lines(), vec!["one".to_string()]);
        w.write_all(b"o\n").unwrap();
        assert_eq!(f.new_lines(), vec!["two".to_string()]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(f.new_lines(), vec!["new".to_string()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("aiops-notify-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A receiver on 127.0.0.1 answering the given statuses in turn (then 200).
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |_body: axum::body::Bytes| {
                let h = h.clone();
                let statuses = statuses.clone();
                async move {
                    let i = h.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::from_u16(statuses.get(i).copied().unwrap_or(200))
                        .unwrap()
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, hits)
    }

    fn cfg(url: String, attempts: u32) -> NotifyConfig {
        NotifyConfig {
            webhook_url: url,
            on: all_kinds(),
            max_attempts: attempts,
            backoff_ms: 50,
            timeout_s: 2,
        }
    }

    #[tokio::test]
    async fn delivery_retries_server_errors_and_stops_at_client_errors() {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = json!({"text": "x"});
        let (url, hits) = receiver(vec![500, 503]).await;
        assert_eq!(deliver(&client, &cfg(url, 5), &body).await.unwrap(), 3);
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        let (url, hits) = receiver(vec![404]).await;
        let e = deliver(&client, &cfg(url, 5), &body).await.unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a 404 is not retried");

        let (url, hits) = receiver(vec![500; 10]).await;
        let e = deliver(&client, &cfg(url.clone(), 3), &body)
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 3, "bounded attempts");
        assert!(
            !e.to_string().contains(&url),
            "the URL is not in the error: {e}"
        );
    }
}
