//! Prometheus metrics of the API process.
//!
//! One [`Metrics`] value owns the registry and every metric handle; handlers hold it in
//! the app state and update it directly. Pool and process gauges are sampled when
//! `/metrics` is scraped; `job_queue_depth` is refreshed by a background task instead
//! (see `server::spawn_queue_depth_refresher`) so a scrape never queries the database.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::db::Db;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~16 s: covers a cache hit as well as a request stuck behind a pool timeout.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of the API process.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub pool_connections: Family<StateLabel, Gauge>,
    pub pool_max: Gauge,
    pub cache_requests: Family<ResultLabel, Counter>,
    pub job_queue_depth: Gauge,
    pub jwt_rejections: Counter,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub app_errors: Family<CodeLabel, Counter>,
    pub rate_limited: Counter,
    process_rss: Gauge,
    process_cpu: Counter<f64, AtomicU64>,
    process_threads: Gauge,
    process_fds: Gauge,
    /// CPU seconds already added to `process_cpu`, to turn the absolute value into
    /// increments.
    cpu_seen: Mutex<f64>,
}

impl Metrics {
    /// Builds the registry; `db` contributes its acquire counters so the pool keeps one
    /// source of truth for them.
    pub fn new(db: &Db) -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by matched route template, method and status",
            http_requests.clone(),
        );
        let http_duration: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by matched route template",
            http_duration.clone(),
        );
        let pool_connections = Family::<StateLabel, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open pool connections by state (idle, in_use)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max_connections",
            "Configured maximum pool size",
            pool_max.clone(),
        );
        registry.register(
            "db_pool_acquire_waits",
            "Connection acquisitions that found no idle connection and had to wait",
            db.acquire_waits.clone(),
        );
        registry.register(
            "db_pool_acquire_timeouts",
            "Connection acquisitions that gave up after the acquire timeout",
            db.acquire_timeouts.clone(),
        );
        let cache_requests = Family::<ResultLabel, Counter>::default();
        registry.register(
            "cache_requests",
            "Product cache lookups by result (hit, miss, corrupt)",
            cache_requests.clone(),
        );
        let job_queue_depth = Gauge::default();
        registry.register(
            "job_queue_depth",
            "Pending background jobs (refreshed every 2 s)",
            job_queue_depth.clone(),
        );
        let jwt_rejections = Counter::default();
        registry.register(
            "jwt_rejections",
            "Requests rejected for a missing, invalid or expired bearer token",
            jwt_rejections.clone(),
        );
        let upstream_requests = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Calls to the pricing upstreams by upstream and outcome",
            upstream_requests.clone(),
        );
        let app_errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "app_errors",
            "Error responses by stable error code",
            app_errors.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by the rate limiter",
            rate_limited.clone(),
        );
        let process_rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process_rss.clone(),
        );
        let process_cpu = Counter::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time in seconds",
            process_cpu.clone(),
        );
        let process_threads = Gauge::default();
        registry.register(
            "process_threads",
            "OS threads of the process",
            process_threads.clone(),
        );
        let process_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            process_fds.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            pool_connections,
            pool_max,
            cache_requests,
            job_queue_depth,
            jwt_rejections,
            upstream_requests,
            app_errors,
            rate_limited,
            process_rss,
            process_cpu,
            process_threads,
            process_fds,
            cpu_seen: Mutex::new(0.0),
        }
    }

    /// Samples pool and process gauges, then renders the OpenMetrics text.
    pub fn render(&self, db: &Db) -> String {
        let stats = db.stats();
        self.pool_connections
            .get_or_create(&StateLabel { state: "idle" })
            .set(i64::from(stats.idle));
        self.pool_connections
            .get_or_create(&StateLabel { state: "in_use" })
            .set(i64::from(stats.in_use));
        self.pool_max.set(i64::from(stats.max_size));
        self.sample_process();

        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn sample_process(&self) {
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        if let Ok(stat) = me.stat() {
            let page = procfs::page_size();
            self.process_rss.set((stat.rss * page) as i64);
            self.process_threads.set(stat.num_threads);
            let ticks = procfs::ticks_per_second().max(1) as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            let mut seen = self.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
            if cpu > *seen {
                self.process_cpu.inc_by(cpu - *seen);
                *seen = cpu;
            }
        }
        if let Ok(fds) = me.fd_count() {
            self.process_fds.set(fds as i64);
        }
    }
}
