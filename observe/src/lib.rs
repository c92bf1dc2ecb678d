//! Observation of a running sandbox, for people and for AI agents: service status,
//! health probes, windows of metrics, log search, database diagnostics, resource use,
//! disk, configuration, the event timeline and one-call incident snapshots with
//! anomaly rules.
//!
//! Responsible for: reading (never changing) the sandbox through the [`Runtime`] trait,
//! the state dir, the target's HTTP endpoints and an admin PostgreSQL session; keeping a
//! 15-minute ring of samples ([`Observer::start_sampler`]); bounded, secret-free reports
//! that implement [`Summary`].
//!
//! Not responsible for: speaking MCP (`mcp-server` wraps these calls), changing anything
//! (faults are `aiops-chaos`, fixes `aiops-remediation`), or running the sandbox.
//!
//! **Invariant:** no report contains a secret: the sandbox's secret files' contents and
//! connection-string passwords are scrubbed from every free-text field, and secret
//! configuration values are shown as `REDACTED`.

mod anomaly;
mod config;
mod db;
mod disk;
mod error;
mod events;
mod health;
mod logs;
mod metrics;
mod prom;
mod sampler;
mod snapshot;
mod status;
mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aiops_sandbox::topology::Topology;
use aiops_sandbox::{Runtime, StateDir};

pub use anomaly::{Anomaly, Severity};
pub use config::{ConfigDiff, ConfigEntry, ConfigReport};
pub use db::{
    BlockingChain, BlockingSession, ConnectionCount, DbDiagnostics, DbDiagnosticsQuery,
    LongRunningSession, MigrationStatus,
};
pub use disk::{DirUsage, DiskUsageReport, FilesystemUsage};
pub use error::ObserveError;
pub use events::{EventItem, EventPage, EventQuery};
pub use health::{HealthProbe, HealthReport, OverallHealth, ProbeStatus};
pub use logs::{LogEntry, LogQuery, LogQueryResult};
pub use metrics::{LatencyPercentiles, MetricsQuery, MetricsReport, PoolFigures, ServiceResources};
pub use snapshot::{IncidentSnapshot, LogSignal, PartError};
pub use status::{ExitView, ProcessStatsEntry, ProcessStatsReport, SandboxStatus, ServiceView};

use sampler::{Ring, Scrape, ScrapeEntry, StatsEntry};
use util::Scrubber;

/// Implemented by every report: one or a few lines a person can read (the MCP tool's
/// text content).
pub trait Summary {
    fn summary(&self) -> String;
}

/// Timeout of every HTTP probe and scrape.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The observation facade. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
    /// Exam mode: hide the fault-injection machinery (see [`Observer::for_exam`]).
    exam: bool,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("state", &self.inner.state.root())
            .field("runtime", &self.inner.runtime.kind())
            .field("exam", &self.exam)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) state: StateDir,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) http: reqwest::Client,
    /// A std mutex: it is never held across an `.await`.
    ring: Mutex<Ring>,
    sampler_started: AtomicBool,
}

impl Observer {
    /// `runtime`: the process supervisor in the daemon, a `ControlClient` elsewhere.
    pub fn new(state: StateDir, runtime: Arc<dyn Runtime>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(HTTP_TIMEOUT)
            // Probes go to loopback services; a proxy from the environment must not
            // intercept them.
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            inner: Arc::new(Inner {
                state,
                runtime,
                http,
                ring: Mutex::new(Ring::default()),
                sampler_started: AtomicBool::new(false),
            }),
            exam: false,
        }
    }

    /// The same observer (same sampler, same history) in exam mode, for an agent under
    /// test: the event timeline leaves out the chaos engine's own events (`fault_*`) and
    /// the logs leave out the target's failpoint bookkeeping lines (`"failpoint"` field),
    /// so nothing an agent reads names an injected fault. Symptoms stay visible.
    pub fn for_exam(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            exam: true,
        }
    }

    /// Whether this handle hides the fault-injection machinery.
    pub fn is_exam(&self) -> bool {
        self.exam
    }

    /// Spawn the background sampler (a tokio task): every 1 s a scrape of the target's
    /// `/metrics`, every 2 s each service's `Runtime::stats`; 15 minutes kept.
    /// Idempotent. Outside a tokio runtime it logs a warning and does nothing. The task
    /// ends when the last clone of the `Observer` is dropped.
    pub fn start_sampler(&self) {
        if self.inner.sampler_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(message = "No tokio runtime; the metrics sampler is not started.");
            self.inner.sampler_started.store(false, Ordering::SeqCst);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        handle.spawn(async move {
            let mut tick = tokio::time::interval(sampler::SCRAPE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last_stats: Option<Instant> = None;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let obs = Observer { inner, exam: false };
                let due_stats = last_stats.is_none_or(|t| {
                    t.elapsed() + Duration::from_millis(100) >= sampler::STATS_EVERY
                });
                if due_stats {
                    last_stats = Some(Instant::now());
                    let (scrape, stats) = tokio::join!(obs.scrape_once(), obs.stats_once());
                    obs.push_scrape(scrape);
                    if let Some(s) = stats {
                        obs.push_stats(s);
                    }
                } else {
                    let scrape = obs.scrape_once().await;
                    obs.push_scrape(scrape);
                }
            }
        });
    }

    pub async fn sandbox_status(&self) -> Result<SandboxStatus, ObserveError> {
        status::sandbox_status(self).await
    }

    pub async fn check_health(&self) -> Result<HealthReport, ObserveError> {
        health::check_health(self).await
    }

    pub async fn get_metrics(&self, q: MetricsQuery) -> Result<MetricsReport, ObserveError> {
        let window_s = q.window_s.unwrap_or(metrics::DEFAULT_WINDOW_S);
        if !(metrics::MIN_WINDOW_S..=metrics::MAX_WINDOW_S).contains(&window_s) {
            return Err(ObserveError::invalid(
                "window_s",
                format!(
                    "{window_s} is out of range; allowed: {} to {} seconds (default {})",
                    metrics::MIN_WINDOW_S,
                    metrics::MAX_WINDOW_S,
                    metrics::DEFAULT_WINDOW_S
                ),
            ));
        }
        let window = Duration::from_secs(window_s);
        let enough = |obs: &Self| {
            let (scrapes, stats) = obs.window(window);
            (scrapes.iter().filter(|e| e.result.is_ok()).count() >= 2 && stats.len() >= 2)
                .then_some((scrapes, stats))
        };
        let (scrapes, stats) = match enough(self) {
            Some(w) => w,
            None => {
                // Without a running sampler (or right after start) take two rounds one
                // second apart now, so the first call already has rates.
                self.topology().await?;
                for round in 0..2 {
                    if round > 0 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    let (scrape, stats) = tokio::join!(self.scrape_once(), self.stats_once());
                    self.push_scrape(scrape);
                    if let Some(s) = stats {
                        self.push_stats(s);
                    }
                }
                self.window(window)
            }
        };
        let mut report = metrics::compute(window_s, &scrapes, &stats);
        let scrub = self.scrubber();
        report.last_scrape_error = scrub.scrub_opt(report.last_scrape_error.as_deref());
        Ok(report)
    }

    pub async fn query_logs(&self, q: LogQuery) -> Result<LogQueryResult, ObserveError> {
        logs::query_logs(self, q).await
    }

    pub async fn db_diagnostics(
        &self,
        q: DbDiagnosticsQuery,
    ) -> Result<DbDiagnostics, ObserveError> {
        db::db_diagnostics(self, q).await
    }

    pub async fn process_stats(&self) -> Result<ProcessStatsReport, ObserveError> {
        status::process_stats(self).await
    }

    pub async fn disk_usage(&self) -> Result<DiskUsageReport, ObserveError> {
        disk::disk_usage(self).await
    }

    pub async fn inspect_config(&self) -> Result<ConfigReport, ObserveError> {
        config::inspect_config(self).await
    }

    pub async fn list_events(&self, q: EventQuery) -> Result<EventPage, ObserveError> {
        events::list_events(self, q).await
    }

    pub async fn incident_snapshot(&self) -> Result<IncidentSnapshot, ObserveError> {
        snapshot::incident_snapshot(self).await
    }

    // ---- shared plumbing for the tool modules ----

    pub(crate) fn state(&self) -> &StateDir {
        &self.inner.state
    }

    pub(crate) fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn scrubber(&self) -> Scrubber {
        Scrubber::load(&self.inner.state.secrets_dir())
    }

    /// The topology: from `topology.json` (no daemon needed), else from the runtime.
    pub(crate) async fn topology(&self) -> Result<Topology, ObserveError> {
        match Topology::load(&self.inner.state) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => match self.inner.runtime.topology().await {
                Ok(t) => Ok(t),
                Err(e) => Err(ObserveError::SandboxUnavailable(format!(
                    "no sandbox in {} (no topology.json and the runtime says: {e}); start \
                     one with `aiops up`",
                    self.inner.state.root().display()
                ))),
            },
            Err(e) => Err(ObserveError::Other(e.to_string())),
        }
    }

    async fn scrape_once(&self) -> ScrapeEntry {
        let at = Instant::now();
        let result = async {
            let topo = self.topology().await.map_err(|e| e.to_string())?;
            let url = topo
                .target_url()
                .ok_or_else(|| "the topology has no target-app URL".to_string())?;
            let resp = self
                .http()
                .get(format!("{url}/metrics"))
                .send()
                .await
                .map_err(|e| format!("GET /metrics failed: {}", describe_reqwest(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("GET /metrics answered {}", resp.status()));
            }
            let text = resp
                .text()
                .await
                .map_err(|e| format!("reading /metrics failed: {e}"))?;
            Ok(Scrape::from_text(&text))
        }
        .await;
        ScrapeEntry { at, result }
    }

    /// One round of `stats` for every service; `None` when the topology is unknown.
    async fn stats_once(&self) -> Option<StatsEntry> {
        let topo = self.topology().await.ok()?;
        let at = Instant::now();
        let futs = topo
            .services
            .iter()
            .map(|s| self.inner.runtime.stats(&s.name));
        let stats = futures::future::join_all(futs)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        Some(StatsEntry { at, stats })
    }

    fn push_scrape(&self, e: ScrapeEntry) {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.push_scrape(e);
    }

    fn push_stats(&self, e: StatsEntry) {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.push_stats(e);
    }

    fn window(&self, window: Duration) -> (Vec<ScrapeEntry>, Vec<StatsEntry>) {
        let ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.window(window)
    }
}

/// A reqwest error in one short phrase (its Display nests sources inconsistently).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or unreachable".to_string()
    } else {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    }
}
