//! `get_metrics`: turns the sampler's window of scrapes and resource samples into rates,
//! ratios and percentiles.
//!
//! Counters are differenced between consecutive successful scrapes; a value that went
//! down means the target restarted, and the new value counts as the increase (as
//! Prometheus' `increase()` does). Not responsible for collecting samples
//! ([`crate::sampler`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Summary;
use crate::prom;
use crate::sampler::{Scrape, ScrapeEntry, StatsEntry};
use crate::util::{pretty_bytes, round1, round2};

pub(crate) const DEFAULT_WINDOW_S: u64 = 60;
pub(crate) const MIN_WINDOW_S: u64 = 5;
pub(crate) const MAX_WINDOW_S: u64 = 900;

/// Arguments of `get_metrics`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Length of the time window to compute rates over, in seconds, ending now.
    /// Allowed: 5 to 900 (15 minutes, the sampler's retention). Default: 60.
    #[serde(default)]
    pub window_s: Option<u64>,
}

/// Request latency percentiles in milliseconds, estimated from the histogram buckets.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LatencyPercentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The target's database pool, as of the latest scrape.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PoolFigures {
    /// Open connections (in use + idle).
    pub size: u64,
    /// Configured maximum (POOL_SIZE).
    pub max: u64,
    pub in_use: u64,
    pub idle: u64,
    /// in_use / max, in percent.
    pub utilization_percent: f64,
}

/// Resource use of one service over the window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ServiceResources {
    pub name: String,
    /// Average CPU over the window, in percent of one core.
    pub cpu_percent: f64,
    /// Average CPU over the newest samples spanning at least 4 s (what it is doing now),
    /// in percent of one core; `None` until there are such samples.
    pub cpu_percent_recent: Option<f64>,
    /// Resident memory at the latest sample, in bytes.
    pub rss_bytes: u64,
    /// Latest RSS minus the first RSS in the window, in bytes (negative = shrank).
    pub rss_growth_bytes: i64,
    /// Resource samples used.
    pub samples: usize,
}

/// Figures of the target over a recent window.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MetricsReport {
    /// Window asked for, in seconds.
    pub window_s: u64,
    /// Time actually covered by the successful scrapes used, in seconds.
    pub covered_s: f64,
    /// Successful scrapes of /metrics in the window.
    pub samples: usize,
    /// Failed scrapes (target unreachable) in the window.
    pub gaps: usize,
    /// Error of the most recent failed scrape in the window, if any.
    pub last_scrape_error: Option<String>,
    /// User requests per second (health probes and /metrics excluded).
    pub request_rate_per_s: Option<f64>,
    /// User requests in the window.
    pub requests: u64,
    /// Share of 5xx answers among user requests, in percent.
    pub error_rate_percent: Option<f64>,
    pub errors_5xx: u64,
    /// Requests in the window by HTTP status code.
    pub requests_by_status: BTreeMap<String, u64>,
    pub latency: Option<LatencyPercentiles>,
    pub pool: Option<PoolFigures>,
    /// Pool acquisitions that had to wait, in the window.
    pub pool_acquire_waits: u64,
    /// Pool acquisitions that timed out (DB_POOL_TIMEOUT), in the window.
    pub pool_acquire_timeouts: u64,
    /// Product cache hits / lookups in the window (None without lookups).
    pub cache_hit_ratio: Option<f64>,
    pub cache_lookups: u64,
    /// Corrupt cache entries met in the window.
    pub cache_corrupt: u64,
    /// Pending background jobs at the latest scrape.
    pub job_queue_depth: Option<u64>,
    /// Error responses in the window by stable error code.
    pub app_errors_by_code: BTreeMap<String, u64>,
    /// Requests rejected for a bad or missing JWT, in the window.
    pub jwt_rejections: u64,
    /// Upstream calls in the window by `upstream/outcome`.
    pub upstream_requests: BTreeMap<String, u64>,
    /// Requests refused by the rate limiter in the window.
    pub rate_limited: u64,
    /// CPU and memory per service over the window.
    pub services: Vec<ServiceResources>,
}

fn inc(prev: f64, cur: f64) -> f64 {
    if cur >= prev { cur - prev } else { cur }
}

fn map_increase<K: Ord + Clone>(
    pairs: &[(&Scrape, &Scrape)],
    get: impl Fn(&Scrape) -> &BTreeMap<K, f64>,
) -> BTreeMap<K, f64> {
    let mut out: BTreeMap<K, f64> = BTreeMap::new();
    for (a, b) in pairs {
        let (ma, mb) = (get(a), get(b));
        for (k, vb) in mb {
            let va = ma.get(k).copied().unwrap_or(0.0);
            *out.entry(k.clone()).or_default() += inc(va, *vb);
        }
    }
    out
}

/// Compute the report from a window of entries (oldest first).
pub(crate) fn compute(
    window_s: u64,
    scrapes: &[ScrapeEntry],
    stats: &[StatsEntry],
) -> MetricsReport {
    let ok: Vec<(&ScrapeEntry, &Scrape)> = scrapes
        .iter()
        .filter_map(|e| e.result.as_ref().ok().map(|s| (e, s)))
        .collect();
    let gaps = scrapes.iter().filter(|e| e.result.is_err()).count();
    let last_scrape_error = scrapes
        .iter()
        .rev()
        .find_map(|e| e.result.as_ref().err().cloned());
    let pairs: Vec<(&Scrape, &Scrape)> = ok.windows(2).map(|w| (w[0].1, w[1].1)).collect();
    let covered_s = match (ok.first(), ok.last()) {
        (Some(a), Some(b)) => b.0.at.duration_since(a.0.at).as_secs_f64(),
        _ => 0.0,
    };
    let scalar = |f: fn(&Scrape) -> f64| -> u64 {
        pairs
            .iter()
            .map(|(a, b)| inc(f(a), f(b)))
            .sum::<f64>()
            .round() as u64
    };

    let by_status = map_increase(&pairs, |s| &s.requests_by_status);
    let requests: f64 = by_status.values().sum();
    let errors_5xx: f64 = by_status
        .iter()
        .filter(|(k, _)| (500..600).contains(*k))
        .map(|(_, v)| v)
        .sum();
    let request_rate_per_s = (covered_s > 0.0).then(|| round2(requests / covered_s));
    let error_rate_percent = (requests > 0.0).then(|| round2(errors_5xx / requests * 100.0));

    // Histogram: per-bound increases, then force monotonic (resets can break it).
    let mut bucket_inc: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (a, b) in &pairs {
        for (bound, cb) in &b.buckets {
            let ca = a
                .buckets
                .iter()
                .find(|(x, _)| x == bound)
                .map(|(_, c)| *c)
                .unwrap_or(0.0);
            let e = bucket_inc.entry(bound.to_bits()).or_insert((*bound, 0.0));
            e.1 += inc(ca, *cb);
        }
    }
    let mut buckets: Vec<(f64, f64)> = bucket_inc.into_values().collect();
    buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut running = 0.0f64;
    for b in &mut buckets {
        running = running.max(b.1);
        b.1 = running;
    }
    let latency = match (
        prom::quantile(&buckets, 0.5),
        prom::quantile(&buckets, 0.95),
        prom::quantile(&buckets, 0.99),
    ) {
        (Some(p50), Some(p95), Some(p99)) => Some(LatencyPercentiles {
            p50_ms: round2(p50 * 1000.0),
            p95_ms: round2(p95 * 1000.0),
            p99_ms: round2(p99 * 1000.0),
        }),
        _ => None,
    };

    let latest = ok.last().map(|(_, s)| *s);
    let pool = latest.and_then(|s| {
        let max = s.pool_max?;
        let in_use = s.pool_in_use.unwrap_or(0.0);
        let idle = s.pool_idle.unwrap_or(0.0);
        Some(PoolFigures {
            size: (in_use + idle) as u64,
            max: max as u64,
            in_use: in_use as u64,
            idle: idle as u64,
            utilization_percent: if max > 0.0 {
                round1(in_use / max * 100.0)
            } else {
                0.0
            },
        })
    });

    let cache = map_increase(&pairs, |s| &s.cache);
    let hits = cache.get("hit").copied().unwrap_or(0.0);
    let cache_lookups: f64 = cache.values().sum();
    let cache_hit_ratio = (cache_lookups > 0.0).then(|| round2(hits / cache_lookups));
    let to_u64_map = |m: BTreeMap<String, f64>| -> BTreeMap<String, u64> {
        m.into_iter()
            .map(|(k, v)| (k, v.round() as u64))
            .filter(|(_, v)| *v > 0)
            .collect()
    };

    MetricsReport {
        window_s,
        covered_s: round1(covered_s),
        samples: ok.len(),
        gaps,
        last_scrape_error,
        request_rate_per_s,
        requests: requests.round() as u64,
        error_rate_percent,
        errors_5xx: errors_5xx.round() as u64,
        requests_by_status: by_status
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.round() as u64))
            .filter(|(_, v)| *v > 0)
            .collect(),
        latency,
        pool,
        pool_acquire_waits: scalar(|s| s.acquire_waits),
        pool_acquire_timeouts: scalar(|s| s.acquire_timeouts),
        cache_hit_ratio,
        cache_lookups: cache_lookups.round() as u64,
        cache_corrupt: cache.get("corrupt").copied().unwrap_or(0.0).round() as u64,
        job_queue_depth: latest.and_then(|s| s.job_queue_depth).map(|v| v as u64),
        app_errors_by_code: to_u64_map(map_increase(&pairs, |s| &s.app_errors)),
        jwt_rejections: scalar(|s| s.jwt_rejections),
        upstream_requests: to_u64_map(map_increase(&pairs, |s| &s.upstream)),
        rate_limited: scalar(|s| s.rate_limited),
        services: service_resources(stats),
    }
}

/// The span of samples `cpu_percent_recent` averages over, at least.
const RECENT_CPU_SPAN: std::time::Duration = std::time::Duration::from_secs(4);

/// CPU use between the first and last samples, in percent of one core.
fn cpu_rate(series: &[(std::time::Instant, &aiops_sandbox::runtime::ServiceStats)]) -> Option<f64> {
    if series.len() < 2 {
        return None;
    }
    let cpu: f64 = series
        .windows(2)
        .map(|w| inc(w[0].1.cpu_seconds_total, w[1].1.cpu_seconds_total))
        .sum();
    let dt = series[series.len() - 1]
        .0
        .duration_since(series[0].0)
        .as_secs_f64();
    (dt > 0.0).then(|| round1(cpu / dt * 100.0))
}

fn service_resources(stats: &[StatsEntry]) -> Vec<ServiceResources> {
    let mut names: Vec<String> = Vec::new();
    for e in stats {
        for s in &e.stats {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let series: Vec<(std::time::Instant, &aiops_sandbox::runtime::ServiceStats)> = stats
                .iter()
                .filter_map(|e| e.stats.iter().find(|s| s.name == name).map(|s| (e.at, s)))
                .collect();
            let cpu_percent = cpu_rate(&series)
                .unwrap_or_else(|| series.first().map(|s| s.1.cpu_percent).unwrap_or(0.0));
            let cpu_percent_recent = series.last().and_then(|newest| {
                let start = series
                    .iter()
                    .rposition(|(at, _)| newest.0.duration_since(*at) >= RECENT_CPU_SPAN)?;
                cpu_rate(&series[start..])
            });
            let first = series.first().map(|s| s.1.rss_bytes).unwrap_or(0);
            let last = series.last().map(|s| s.1.rss_bytes).unwrap_or(0);
            ServiceResources {
                name,
                cpu_percent,
                cpu_percent_recent,
                rss_bytes: last,
                rss_growth_bytes: last as i64 - first as i64,
                samples: series.len(),
            }
        })
        .collect()
}

impl Summary for MetricsReport {
    fn summary(&self) -> String {
        let mut s = format!(
            "Last {:.0} s ({} samples, {} gaps): {} req/s, errors {}, latency {}",
            self.covered_s,
            self.samples,
            self.gaps,
            self.request_rate_per_s
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "n/a".into()),
            self.error_rate_percent
                .map(|r| format!("{r:.1} %"))
                .unwrap_or_else(|| "n/a".into()),
            self.latency
                .as_ref()
                .map(|l| format!(
                    "p50 {:.0} ms / p95 {:.0} ms / p99 {:.0} ms",
                    l.p50_ms, l.p95_ms, l.p99_ms
                ))
                .unwrap_or_else(|| "n/a".into()),
        );
        if let Some(p) = &self.pool {
            s.push_str(&format!(
                "; pool {}/{} in use ({} timeouts)",
                p.in_use, p.max, self.pool_acquire_timeouts
            ));
        }
        if !self.app_errors_by_code.is_empty() {
            let codes: Vec<String> = self
                .app_errors_by_code
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect();
            s.push_str(&format!("; app errors {}", codes.join(", ")));
        }
        if let Some(e) = &self.last_scrape_error {
            s.push_str(&format!("; last scrape failed: {e}"));
        }
        s.push('.');
        for r in &self.services {
            s.push_str(&format!(
                "\n  {}: cpu {:.1} %, rss {}",
                r.name,
                r.cpu_percent,
                pretty_bytes(r.rss_bytes)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn scrape(ok200: f64, err500: f64, fast: f64, slow: f64, timeouts: f64) -> Scrape {
        let mut s = Scrape::default();
        s.requests_by_status.insert(200, ok200);
        s.requests_by_status.insert(500, err500);
        s.buckets = vec![
            (0.01, fast),
            (1.0, fast + slow),
            (f64::INFINITY, fast + slow),
        ];
        s.acquire_timeouts = timeouts;
        s.pool_max = Some(10.0);
        s.pool_in_use = Some(9.0);
        s.pool_idle = Some(1.0);
        s
    }

    #[test]
    fn rates_and_percentiles_over_window_with_reset() {
        let t0 = Instant::now();
        let e = |i: u64, s: Result<Scrape, String>| ScrapeEntry {
            at: t0 + Duration::from_secs(i),
            result: s,
        };
        let entries = vec![
            e(0, Ok(scrape(100.0, 0.0, 100.0, 0.0, 0.0))),
            e(1, Err("connection refused".into())),
            e(2, Ok(scrape(180.0, 20.0, 180.0, 20.0, 1.0))),
            // Restart: counters start again from zero.
            e(4, Ok(scrape(0.0, 0.0, 0.0, 0.0, 0.0))),
            e(5, Ok(scrape(50.0, 50.0, 50.0, 50.0, 2.0))),
        ];
        let r = compute(60, &entries, &[]);
        assert_eq!(r.samples, 4);
        assert_eq!(r.gaps, 1);
        assert_eq!(r.requests, 200);
        assert_eq!(r.errors_5xx, 70);
        assert_eq!(r.error_rate_percent, Some(35.0));
        assert_eq!(r.request_rate_per_s, Some(40.0));
        assert_eq!(r.pool_acquire_timeouts, 3);
        assert_eq!(r.pool.as_ref().unwrap().utilization_percent, 90.0);
        let l = r.latency.clone().unwrap();
        // 130 fast (≤ 10 ms), 70 slow (≤ 1 s): p50 in the first bucket, p95 in the second.
        assert!(l.p50_ms <= 10.0, "{l:?}");
        assert!(l.p95_ms > 500.0 && l.p95_ms <= 1000.0, "{l:?}");
        assert!(r.summary().contains("req/s"));
    }

    #[test]
    fn empty_window_has_no_figures() {
        let r = compute(60, &[], &[]);
        assert_eq!(r.samples, 0);
        assert!(r.request_rate_per_s.is_none());
        assert!(r.latency.is_none());
    }

    #[test]
    fn cpu_from_cpu_seconds() {
        let t0 = Instant::now();
        let st = |i: u64, cpu: f64, rss: u64| StatsEntry {
            at: t0 + Duration::from_secs(i),
            stats: vec![aiops_sandbox::runtime::ServiceStats {
                name: "target-app".into(),
                cpu_seconds_total: cpu,
                rss_bytes: rss,
                ..Default::default()
            }],
        };
        let r = compute(
            60,
            &[],
            &[st(0, 1.0, 100), st(2, 2.0, 300), st(4, 3.8, 500)],
        );
        assert_eq!(r.services[0].cpu_percent, 70.0);
        assert_eq!(r.services[0].rss_growth_bytes, 400);
    }
}
