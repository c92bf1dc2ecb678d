//! `check_health`: active probes, run concurrently with a 2 s timeout each: the target's
//! liveness, readiness (with its reasons) and health summary, the database (admin
//! `SELECT 1`) and each upstream's `/healthz`.
//!
//! Not responsible for the supervisor's own health view (reported by `sandbox_status`).

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::util::truncate_chars;
use crate::{ObserveError, Observer, Summary, describe_reqwest};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    Ok,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverallHealth {
    /// Every probe passed.
    Healthy,
    /// The target is alive and the database answers, but something else failed
    /// (readiness, an upstream, the health summary).
    Degraded,
    /// The target is not alive or the database does not answer.
    Unhealthy,
}

/// One probe's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthProbe {
    /// e.g. `target-app liveness`, `database`, `upstream-primary`.
    pub name: String,
    /// What was probed, e.g. `GET /readyz`.
    pub target: String,
    pub status: ProbeStatus,
    pub latency_ms: u64,
    /// Response body (trimmed) or the error.
    pub detail: String,
    /// Parsed JSON body, for `/readyz` (its `checks` reasons) and `/api/v1/health`
    /// (`db` and `upstream` fields).
    pub body: Option<serde_json::Value>,
}

/// Result of all probes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HealthReport {
    pub overall: OverallHealth,
    pub probes: Vec<HealthProbe>,
}

impl HealthReport {
    pub(crate) fn probe(&self, name: &str) -> Option<&HealthProbe> {
        self.probes.iter().find(|p| p.name == name)
    }
}

impl Summary for HealthReport {
    fn summary(&self) -> String {
        let failed: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.status == ProbeStatus::Failed)
            .map(|p| format!("{} ({})", p.name, truncate_chars(&p.detail, 160)))
            .collect();
        let overall = match self.overall {
            OverallHealth::Healthy => "healthy",
            OverallHealth::Degraded => "degraded",
            OverallHealth::Unhealthy => "unhealthy",
        };
        if failed.is_empty() {
            format!(
                "Sandbox {overall}: all {} probes passed.",
                self.probes.len()
            )
        } else {
            format!(
                "Sandbox {overall}: {} of {} probes failed: {}.",
                failed.len(),
                self.probes.len(),
                failed.join("; ")
            )
        }
    }
}

pub(crate) const LIVENESS: &str = "target-app liveness";
pub(crate) const READINESS: &str = "target-app readiness";
pub(crate) const HEALTH_SUMMARY: &str = "target-app health";
pub(crate) const DATABASE: &str = "database";

pub(crate) async fn check_health(obs: &Observer) -> Result<HealthReport, ObserveError> {
    let topo = obs.topology().await?;
    let target = topo.target_url().unwrap_or_default();
    let mut http_probes = vec![
        (LIVENESS.to_string(), format!("{target}/healthz")),
        (READINESS.to_string(), format!("{target}/readyz")),
        (
            HEALTH_SUMMARY.to_string(),
            format!("{target}/api/v1/health"),
        ),
    ];
    for s in &topo.services {
        if s.kind == aiops_sandbox::topology::ServiceKind::Upstream
            && let Some(h) = &s.health_url
        {
            http_probes.push((s.name.clone(), h.clone()));
        }
    }
    let http_futs = http_probes
        .iter()
        .map(|(name, url)| http_probe(obs, name, url));
    let (mut probes, db) = tokio::join!(futures::future::join_all(http_futs), db_probe(obs, &topo));
    probes.insert(3, db);
    let scrub = obs.scrubber();
    for p in &mut probes {
        p.detail = scrub.scrub(&p.detail);
        // The bodies are the target's own JSON; scrub them as text all the same.
        if let Some(body) = &p.body {
            let text = scrub.scrub(&body.to_string());
            p.body = serde_json::from_str(&text).ok();
        }
    }
    let failed = |name: &str| {
        probes
            .iter()
            .any(|p| p.name == name && p.status == ProbeStatus::Failed)
    };
    let overall = if failed(LIVENESS) || failed(DATABASE) {
        OverallHealth::Unhealthy
    } else if probes.iter().any(|p| p.status == ProbeStatus::Failed) {
        OverallHealth::Degraded
    } else {
        OverallHealth::Healthy
    };
    Ok(HealthReport { overall, probes })
}

async fn http_probe(obs: &Observer, name: &str, url: &str) -> HealthProbe {
    let started = Instant::now();
    let path = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[i + 3 + j..]))
        .unwrap_or(url);
    let target = format!("GET {path}");
    let result = obs.http().get(url).timeout(PROBE_TIMEOUT).send().await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(resp) => {
            let code = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let body = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .filter(|_| text.len() <= 4096);
            let ok = code.is_success();
            HealthProbe {
                name: name.to_string(),
                target,
                status: if ok {
                    ProbeStatus::Ok
                } else {
                    ProbeStatus::Failed
                },
                latency_ms,
                detail: format!(
                    "HTTP {}: {}",
                    code.as_u16(),
                    truncate_chars(text.trim(), 300)
                ),
                body: if name == READINESS || name == HEALTH_SUMMARY {
                    body
                } else {
                    None
                },
            }
        }
        Err(e) => HealthProbe {
            name: name.to_string(),
            target,
            status: ProbeStatus::Failed,
            latency_ms,
            detail: describe_reqwest(&e),
            body: None,
        },
    }
}

async fn db_probe(obs: &Observer, topo: &aiops_sandbox::topology::Topology) -> HealthProbe {
    let started = Instant::now();
    let r = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut conn = crate::db::connect(obs, topo, PROBE_TIMEOUT).await?;
        sqlx::query("SELECT 1")
            .execute(&mut conn)
            .await
            .map_err(|e| ObserveError::DatabaseUnreachable(e.to_string()))?;
        use sqlx::Connection;
        let _ = conn.close().await;
        Ok::<(), ObserveError>(())
    })
    .await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (status, detail) = match r {
        Ok(Ok(())) => (ProbeStatus::Ok, "SELECT 1 ok".to_string()),
        Ok(Err(e)) => (ProbeStatus::Failed, e.to_string()),
        Err(_) => (
            ProbeStatus::Failed,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ),
    };
    HealthProbe {
        name: DATABASE.to_string(),
        target: format!(
            "{}:{} SELECT 1 as admin",
            topo.database.host, topo.database.port
        ),
        status,
        latency_ms,
        detail,
        body: None,
    }
}
