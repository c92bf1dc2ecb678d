//! What a fault needs to act on the sandbox: the state dir, the runtime, the topology,
//! database connections (admin and app role), the admin APIs and the target's log.
//!
//! Every helper returns `Result<_, String>`: the message is what the operator reads in
//! the fault record's `error`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::runtime::{HealthStatus, ServiceState};
use aiops_sandbox::secrets::{self, names as secret};
use aiops_sandbox::topology::{Topology, names as svc};
use aiops_sandbox::{Runtime, StateDir};
use sqlx::{Connection, PgConnection};

pub(crate) type R<T> = Result<T, String>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct Ctx {
    pub state: StateDir,
    pub runtime: Arc<dyn Runtime>,
    pub topology: Topology,
    pub http: reqwest::Client,
}

/// An HTTP answer reduced to what the checks need.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub code: Option<String>,
    pub elapsed: Duration,
}

impl Ctx {
    pub async fn new(state: StateDir, runtime: Arc<dyn Runtime>, http: reqwest::Client) -> R<Self> {
        let topology = match runtime.topology().await {
            Ok(t) => t,
            // The topology is on disk even when no daemon answers (reap at start).
            Err(e) => Topology::load(&state)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no topology: {e}"))?,
        };
        Ok(Self {
            state,
            runtime,
            topology,
            http,
        })
    }

    pub fn secret(&self, name: &str) -> R<String> {
        secrets::get_or_create(&self.state, name, 24).map_err(|e| e.to_string())
    }

    /// The app role's password as the sandbox generated it (not as a fault may have set it).
    pub fn app_password(&self) -> R<String> {
        let path = self.state.secret_file(secret::PG_APP_PASSWORD);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }

    pub async fn admin_conn(&self) -> R<PgConnection> {
        let url = aiops_sandbox::prepare::admin_database_url(&self.state, &self.topology)
            .map_err(|e| e.to_string())?;
        connect(&url, "aiops-chaos").await
    }

    /// A session of the app role (`shop_app`) tagged with `application_name`.
    pub async fn app_conn(&self, application_name: &str) -> R<PgConnection> {
        connect(&self.app_url()?, application_name).await
    }

    /// The app role's connection string, with the password from the sandbox's secrets.
    pub fn app_url(&self) -> R<String> {
        let db = &self.topology.database;
        Ok(format!(
            "postgres://{}:{}@{}:{}/{}",
            db.app_user,
            self.app_password()?,
            db.host,
            db.port,
            db.database
        ))
    }

    pub fn target_url(&self) -> R<String> {
        self.topology
            .target_url()
            .ok_or_else(|| "the topology has no target-app URL".to_string())
    }

    /// Base URL and token of the target's admin API (token from the `.env` the target read).
    pub fn target_admin(&self) -> R<(String, String)> {
        let spec = self
            .topology
            .service(svc::TARGET_APP)
            .map_err(|e| e.to_string())?;
        let port = spec
            .admin_port
            .ok_or_else(|| "the topology has no admin port for target-app".to_string())?;
        let token = EnvFile::read(&self.state.env_file())
            .ok()
            .and_then(|env| env.get("ADMIN_TOKEN").map(str::to_string))
            .map(Ok)
            .unwrap_or_else(|| self.secret(secret::TARGET_ADMIN_TOKEN))?;
        Ok((format!("http://127.0.0.1:{port}"), token))
    }

    pub fn upstream_admin(&self) -> R<(String, String)> {
        let spec = self
            .topology
            .service(svc::UPSTREAM_PRIMARY)
            .map_err(|e| e.to_string())?;
        let url = spec
            .url
            .clone()
            .ok_or_else(|| "the topology has no URL for upstream-primary".to_string())?;
        Ok((url, self.secret(secret::UPSTREAM_ADMIN_TOKEN)?))
    }

    pub fn postgres_port(&self) -> u16 {
        self.topology.database.port
    }

    /// GET a path of the target; `Err` when it cannot be reached at all.
    pub async fn get(&self, path: &str, timeout: Duration) -> R<Reply> {
        self.send(
            self.http.get(format!("{}{path}", self.target_url()?)),
            timeout,
        )
        .await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder, timeout: Duration) -> R<Reply> {
        let started = Instant::now();
        let resp = req
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| describe_reqwest(&e))?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Ok(Reply {
            status,
            code: body["error"]["code"].as_str().map(str::to_string),
            elapsed: started.elapsed(),
        })
    }

    /// `/readyz`: status and body.
    pub async fn readyz(&self) -> R<(u16, serde_json::Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.target_url()?))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| describe_reqwest(&e))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }

    pub async fn service_state(&self, name: &str) -> R<aiops_sandbox::ServiceStatus> {
        self.runtime.service(name).await.map_err(|e| e.to_string())
    }

    /// Wait until the service runs and its probe says healthy.
    pub async fn wait_healthy(&self, name: &str, timeout: Duration) -> R<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.service_state(name).await {
                Ok(s)
                    if s.state == ServiceState::Running
                        && s.health.status == HealthStatus::Healthy =>
                {
                    return Ok(());
                }
                Ok(s) => format!("{} ({})", s.state.as_str(), s.health.detail),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("{name} not healthy after {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until PostgreSQL accepts an admin connection.
    pub async fn wait_postgres(&self, timeout: Duration) -> R<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let err = match self.admin_conn().await {
                Ok(c) => {
                    let _ = c.close().await;
                    return Ok(());
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "PostgreSQL not accepting connections after {timeout:?}: {err}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Restart the target so it reads its `.env` again (clears a crash loop too).
    pub async fn restart_target(&self) -> R<()> {
        self.runtime
            .restart(svc::TARGET_APP)
            .await
            .map(|_| ())
            .map_err(|e| format!("restart target-app: {e}"))
    }

    pub fn target_log(&self) -> std::path::PathBuf {
        self.topology
            .service(svc::TARGET_APP)
            .map(|s| s.log_path.clone())
            .unwrap_or_else(|_| self.state.logs_dir().join("target-app.log"))
    }

    /// Current size of the target's log: scans for new lines start there.
    pub fn log_mark(&self) -> u64 {
        std::fs::metadata(self.target_log())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Lines of the target's log written after `mark` that carry one of `codes`, counted
    /// per code; the first match is returned for the `observed` text.
    pub fn log_codes_since(&self, mark: u64, codes: &[&str]) -> (usize, Option<String>) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(self.target_log()) else {
            return (0, None);
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // A rotated or truncated log starts over.
        let start = if len < mark { 0 } else { mark };
        if f.seek(SeekFrom::Start(start)).is_err() {
            return (0, None);
        }
        let mut text = String::new();
        let _ = f.take(64 * 1024 * 1024).read_to_string(&mut text);
        let mut count = 0;
        let mut first = None;
        for line in text.lines() {
            if let Some(code) = codes
                .iter()
                .find(|c| line.contains(&format!("\"code\":\"{c}\"")))
            {
                count += 1;
                first.get_or_insert_with(|| code.to_string());
            }
        }
        (count, first)
    }
}

pub(crate) async fn connect(url: &str, application_name: &str) -> R<PgConnection> {
    use sqlx::postgres::PgConnectOptions;
    let opts: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .map_err(|e| format!("bad database URL: {e}"))?
        .application_name(application_name);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to PostgreSQL: {e}")),
        Err(_) => Err(format!(
            "PostgreSQL did not accept a connection within {CONNECT_TIMEOUT:?}"
        )),
    }
}

pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        format!("request failed: {e}")
    }
}

/// Poll `check` every 250 ms until it reports `Some(observed)` or `limit` passes; the
/// last `None`-returning check's note is reported on failure.
pub(crate) async fn poll<F, Fut>(limit: Duration, mut check: F) -> crate::EffectCheck
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let started = Instant::now();
    loop {
        let result = check().await;
        let waited_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(observed) => {
                return crate::EffectCheck {
                    verified: true,
                    observed,
                    waited_ms,
                };
            }
            Err(note) if started.elapsed() >= limit => {
                return crate::EffectCheck {
                    verified: false,
                    observed: format!("not observed within {limit:?}; last seen: {note}"),
                    waited_ms,
                };
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
