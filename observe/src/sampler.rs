//! The background sampler and its ring buffer: every second a scrape of the target's
//! `/metrics` (reduced to the figures the tools use), every two seconds each service's
//! `Runtime::stats`. Fifteen minutes are kept.
//!
//! Not responsible for turning samples into rates (that is [`crate::metrics`]). A failed
//! scrape is stored as a gap with its error, never a panic: the gap itself is evidence.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use aiops_sandbox::runtime::ServiceStats;

use crate::prom::{self, PromSample};

/// How long samples are kept.
pub(crate) const RETENTION: Duration = Duration::from_secs(15 * 60);
pub(crate) const SCRAPE_EVERY: Duration = Duration::from_secs(1);
pub(crate) const STATS_EVERY: Duration = Duration::from_secs(2);

/// Routes hit by health probes and scrapers, not by users: counting them would make an
/// idle shop look busy (the supervisor probes `/readyz` every second).
pub(crate) const PROBE_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The figures of one `/metrics` scrape that the tools use. Counters are raw cumulative
/// values; rates come from deltas between scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scrape {
    /// User requests (probe routes excluded) by HTTP status.
    pub requests_by_status: BTreeMap<u16, f64>,
    /// Latency histogram summed over user routes: (upper bound in seconds, cumulative).
    pub buckets: Vec<(f64, f64)>,
    pub pool_in_use: Option<f64>,
    pub pool_idle: Option<f64>,
    pub pool_max: Option<f64>,
    pub acquire_waits: f64,
    pub acquire_timeouts: f64,
    /// Cache lookups by result (`hit`, `miss`, `corrupt`).
    pub cache: BTreeMap<String, f64>,
    pub job_queue_depth: Option<f64>,
    pub app_errors: BTreeMap<String, f64>,
    pub jwt_rejections: f64,
    /// `upstream/outcome` → count.
    pub upstream: BTreeMap<String, f64>,
    pub rate_limited: f64,
}

impl Scrape {
    pub(crate) fn from_text(text: &str) -> Self {
        Self::from_samples(&prom::parse(text))
    }

    pub(crate) fn from_samples(samples: &[PromSample]) -> Self {
        let mut s = Scrape::default();
        let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
        for m in samples {
            if !m.value.is_finite() {
                continue;
            }
            let is_probe = m.label("route").is_some_and(|r| PROBE_ROUTES.contains(&r));
            match m.name.as_str() {
                "http_requests_total" if !is_probe => {
                    if let Some(code) = m.label("status").and_then(|c| c.parse::<u16>().ok()) {
                        *s.requests_by_status.entry(code).or_default() += m.value;
                    }
                }
                "http_request_duration_seconds_bucket" if !is_probe => {
                    if let Some(le) = m.label("le") {
                        *buckets.entry(le.to_string()).or_default() += m.value;
                    }
                }
                "db_pool_connections" => match m.label("state") {
                    Some("in_use") => s.pool_in_use = Some(m.value),
                    Some("idle") => s.pool_idle = Some(m.value),
                    _ => {}
                },
                "db_pool_max_connections" => s.pool_max = Some(m.value),
                "db_pool_acquire_waits_total" => s.acquire_waits += m.value,
                "db_pool_acquire_timeouts_total" => s.acquire_timeouts += m.value,
                "cache_requests_total" => {
                    let k = m.label("result").unwrap_or("unknown").to_string();
                    *s.cache.entry(k).or_default() += m.value;
                }
                "job_queue_depth" => s.job_queue_depth = Some(m.value),
                "app_errors_total" => {
                    let k = m.label("code").unwrap_or("UNKNOWN").to_string();
                    *s.app_errors.entry(k).or_default() += m.value;
                }
                "jwt_rejections_total" => s.jwt_rejections += m.value,
                "upstream_requests_total" => {
                    let k = format!(
                        "{}/{}",
                        m.label("upstream").unwrap_or("?"),
                        m.label("outcome").unwrap_or("?")
                    );
                    *s.upstream.entry(k).or_default() += m.value;
                }
                "rate_limited_total" => s.rate_limited += m.value,
                _ => {}
            }
        }
        let mut b: Vec<(f64, f64)> = buckets
            .into_iter()
            .filter_map(|(le, c)| {
                let bound = match le.as_str() {
                    "+Inf" | "Inf" => f64::INFINITY,
                    other => other.parse().ok()?,
                };
                Some((bound, c))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        s.buckets = b;
        s
    }
}

/// One scrape attempt.
#[derive(Debug, Clone)]
pub(crate) struct ScrapeEntry {
    pub at: Instant,
    /// `Err` is a gap: the target did not answer.
    pub result: Result<Scrape, String>,
}

/// One round of `Runtime::stats` for every service.
#[derive(Debug, Clone)]
pub(crate) struct StatsEntry {
    pub at: Instant,
    pub stats: Vec<ServiceStats>,
}

#[derive(Debug, Default)]
pub(crate) struct Ring {
    pub scrapes: VecDeque<ScrapeEntry>,
    pub stats: VecDeque<StatsEntry>,
}

impl Ring {
    pub(crate) fn push_scrape(&mut self, e: ScrapeEntry) {
        self.scrapes.push_back(e);
        let now = Instant::now();
        while self
            .scrapes
            .front()
            .is_some_and(|f| now.duration_since(f.at) > RETENTION)
        {
            self.scrapes.pop_front();
        }
        // Hard cap too, should someone scrape in a tight loop.
        while self.scrapes.len() > 2000 {
            self.scrapes.pop_front();
        }
    }

    pub(crate) fn push_stats(&mut self, e: StatsEntry) {
        self.stats.push_back(e);
        let now = Instant::now();
        while self
            .stats
            .front()
            .is_some_and(|f| now.duration_since(f.at) > RETENTION)
        {
            self.stats.pop_front();
        }
        while self.stats.len() > 1000 {
            self.stats.pop_front();
        }
    }

    /// Entries no older than `window`.
    pub(crate) fn window(&self, window: Duration) -> (Vec<ScrapeEntry>, Vec<StatsEntry>) {
        let now = Instant::now();
        let keep = |at: Instant| now.duration_since(at) <= window;
        (
            self.scrapes
                .iter()
                .filter(|e| keep(e.at))
                .cloned()
                .collect(),
            self.stats.iter().filter(|e| keep(e.at)).cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_sums_user_routes_and_skips_probes() {
        let text = r#"
http_requests_total{route="/readyz",method="GET",status="200"} 7
http_requests_total{route="/a",method="GET",status="200"} 10
http_requests_total{route="/b",method="GET",status="200"} 5
http_requests_total{route="/b",method="GET",status="503"} 2
http_request_duration_seconds_bucket{le="0.1",route="/a"} 4
http_request_duration_seconds_bucket{le="+Inf",route="/a"} 10
http_request_duration_seconds_bucket{le="0.1",route="/b"} 7
http_request_duration_seconds_bucket{le="+Inf",route="/b"} 7
http_request_duration_seconds_bucket{le="0.1",route="/readyz"} 7
db_pool_connections{state="in_use"} 3
db_pool_connections{state="idle"} 2
db_pool_max_connections 10
app_errors_total{code="DB_POOL_TIMEOUT"} 4
upstream_requests_total{upstream="primary",outcome="ok"} 24
"#;
        let s = Scrape::from_text(text);
        assert_eq!(s.requests_by_status.get(&200), Some(&15.0));
        assert_eq!(s.requests_by_status.get(&503), Some(&2.0));
        assert_eq!(s.buckets, vec![(0.1, 11.0), (f64::INFINITY, 17.0)]);
        assert_eq!(s.pool_in_use, Some(3.0));
        assert_eq!(s.pool_max, Some(10.0));
        assert_eq!(s.app_errors.get("DB_POOL_TIMEOUT"), Some(&4.0));
        assert_eq!(s.upstream.get("primary/ok"), Some(&24.0));
    }
}
