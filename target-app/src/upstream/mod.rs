//! The pricing/FX dependency: the client the shop uses ([`UpstreamClient`]) and, in
//! [`server`], the service itself (`target-app upstream`).
//!
//! The client picks the upstream by `UPSTREAM_MODE`. In `auto` it tries the primary and
//! falls back on a connection error, a timeout or a 5xx; a 4xx is the caller's fault and
//! is not retried elsewhere. Every call is counted by upstream and outcome.

pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, UpstreamMode};
use crate::metrics::{Metrics, UpstreamLabels};

/// A price conversion as answered by an upstream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Quote {
    pub sku: String,
    pub currency: String,
    pub rate: f64,
    /// The `--name` of the upstream that answered.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{upstream} upstream failed ({outcome}): {detail}")]
pub struct UpstreamError {
    pub upstream: &'static str,
    pub outcome: &'static str,
    pub detail: String,
}

/// Reachability of the upstream in use, for `/api/v1/health` and `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealth {
    /// `ok`, `degraded` (auto mode answered by the fallback) or `down`.
    pub status: &'static str,
    pub mode: &'static str,
    /// Which upstream answered (or was last tried): `primary` or `fallback`.
    pub url_name: &'static str,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    primary: Arc<str>,
    fallback: Arc<str>,
    mode: UpstreamMode,
    metrics: Arc<Metrics>,
}

impl UpstreamClient {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.upstream_timeout)
            .connect_timeout(config.upstream_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            // Only fails when the TLS backend cannot initialise; there is none here.
            .unwrap_or_default();
        UpstreamClient {
            http,
            primary: config.upstream_primary_url.as_str().into(),
            fallback: config.upstream_fallback_url.as_str().into(),
            mode: config.upstream_mode,
            metrics,
        }
    }

    pub fn mode(&self) -> UpstreamMode {
        self.mode
    }

    /// Converts a SKU's price into `currency`.
    pub async fn quote(&self, sku: &str, currency: &str) -> Result<Quote, UpstreamError> {
        match self.mode {
            UpstreamMode::Primary => {
                self.quote_from("primary", &self.primary, sku, currency)
                    .await
            }
            UpstreamMode::Fallback => {
                self.quote_from("fallback", &self.fallback, sku, currency)
                    .await
            }
            UpstreamMode::Auto => {
                match self
                    .quote_from("primary", &self.primary, sku, currency)
                    .await
                {
                    Ok(q) => Ok(q),
                    Err(e) if e.outcome == "status_4xx" => Err(e),
                    Err(e) => {
                        tracing::warn!(
                            message = "Primary upstream failed, using fallback.",
                            code = "UPSTREAM_UNAVAILABLE",
                            upstream = "primary",
                            outcome = e.outcome,
                            error = %e.detail,
                        );
                        self.quote_from("fallback", &self.fallback, sku, currency)
                            .await
                    }
                }
            }
        }
    }

    async fn quote_from(
        &self,
        name: &'static str,
        base: &str,
        sku: &str,
        currency: &str,
    ) -> Result<Quote, UpstreamError> {
        let result = self.fetch_quote(name, base, sku, currency).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome,
        };
        self.metrics
            .upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: name,
                outcome,
            })
            .inc();
        result
    }

    async fn fetch_quote(
        &self,
        name: &'static str,
        base: &str,
        sku: &str,
        currency: &str,
    ) -> Result<Quote, UpstreamError> {
        let fail = |outcome: &'static str, detail: String| UpstreamError {
            upstream: name,
            outcome,
            detail,
        };
        let mut url = reqwest::Url::parse(base).map_err(|e| fail("error", e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| fail("error", "base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["v1", "price", sku]);
        url.query_pairs_mut().append_pair("currency", currency);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(request_outcome(&e), e.to_string()))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(fail("status_5xx", format!("answered {status}")));
        }
        if !status.is_success() {
            return Err(fail("status_4xx", format!("answered {status}")));
        }
        response
            .json::<Quote>()
            .await
            .map_err(|e| fail(request_outcome(&e), e.to_string()))
    }

    /// Checks `/healthz` of the upstream in use (in auto mode: primary, else fallback).
    pub async fn health(&self) -> UpstreamHealth {
        let started = Instant::now();
        let (name, result) = match self.mode {
            UpstreamMode::Primary => ("primary", self.ping(&self.primary).await),
            UpstreamMode::Fallback => ("fallback", self.ping(&self.fallback).await),
            UpstreamMode::Auto => match self.ping(&self.primary).await {
                Ok(()) => ("primary", Ok(())),
                Err(_) => ("fallback", self.ping(&self.fallback).await),
            },
        };
        let status = match (&result, self.mode, name) {
            (Ok(()), UpstreamMode::Auto, "fallback") => "degraded",
            (Ok(()), _, _) => "ok",
            (Err(_), _, _) => "down",
        };
        UpstreamHealth {
            status,
            mode: self.mode.as_str(),
            url_name: name,
            latency_ms: started.elapsed().as_millis() as u64,
            error: result.err(),
        }
    }

    async fn ping(&self, base: &str) -> Result<(), String> {
        let response = self
            .http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", request_outcome(&e)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status()))
        }
    }
}

fn request_outcome(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_decode() || error.is_body() {
        "bad_response"
    } else {
        "error"
    }
}
