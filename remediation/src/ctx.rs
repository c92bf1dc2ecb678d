//! What an action needs to act on the sandbox: state dir, runtime, topology, database
//! connections (admin role, tagged `aiops-remediation`), the target's HTTP and admin API,
//! and small polling helpers. Helpers return `Result<_, String>`: the message ends up in
//! the outcome, so it never carries a secret.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::runtime::{HealthStatus, ServiceState};
use aiops_sandbox::secrets::names as secret;
use aiops_sandbox::topology::{Topology, names as svc};
use aiops_sandbox::{Runtime, ServiceStatus, StateDir};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

pub(crate) type R<T> = Result<T, String>;

/// `application_name` of our own database sessions (never terminated by us).
pub(crate) const OWN_APP: &str = "aiops-remediation";

pub(crate) struct Ctx {
    pub state: StateDir,
    pub runtime: Arc<dyn Runtime>,
    pub topology: Topology,
    pub http: reqwest::Client,
}

impl Ctx {
    pub async fn new(state: StateDir, runtime: Arc<dyn Runtime>) -> R<Self> {
        let topology = match runtime.topology().await {
            Ok(t) => t,
            Err(e) => Topology::load(&state)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no topology: {e}"))?,
        };
        Ok(Self {
            state,
            runtime,
            topology,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    pub fn remediation_dir(&self) -> PathBuf {
        self.state.root().join("remediation")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state.root().join("snapshots")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.state.root().join("tmp")
    }

    pub fn secret(&self, name: &str) -> R<String> {
        let path = self.state.secret_file(name);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("cannot read the secret {name}: {}", e.kind()))
    }

    pub fn admin_url(&self) -> R<String> {
        aiops_sandbox::prepare::admin_database_url(&self.state, &self.topology)
            .map_err(|e| e.to_string())
    }

    pub async fn admin_conn(&self) -> R<PgConnection> {
        connect(&self.admin_url()?, OWN_APP).await
    }

    /// Log in as the app role with `password` (a real SCRAM login).
    pub async fn app_login(&self, password: &str) -> R<()> {
        let db = &self.topology.database;
        let opts = sqlx::postgres::PgConnectOptions::new()
            .host(&db.host)
            .port(db.port)
            .username(&db.app_user)
            .password(password)
            .database(&db.database)
            .application_name(OWN_APP);
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await
        {
            Ok(Ok(mut c)) => {
                let one: i32 = sqlx::query_scalar("SELECT 1")
                    .fetch_one(&mut c)
                    .await
                    .map_err(|e| format!("query as {}: {e}", db.app_user))?;
                let _ = c.close().await;
                if one == 1 {
                    Ok(())
                } else {
                    Err("unexpected answer".into())
                }
            }
            Ok(Err(e)) => Err(format!("login as {} failed: {}", db.app_user, pg_error(&e))),
            Err(_) => Err("login timed out".into()),
        }
    }

    pub fn target_url(&self) -> R<String> {
        self.topology
            .target_url()
            .ok_or_else(|| "the topology has no target-app URL".to_string())
    }

    /// Base URL and bearer token of the target's admin API.
    pub fn target_admin(&self) -> R<(String, String)> {
        let port = self
            .topology
            .service(svc::TARGET_APP)
            .ok()
            .and_then(|s| s.admin_port)
            .ok_or_else(|| "the topology has no admin port for target-app".to_string())?;
        let token = self
            .env()
            .ok()
            .and_then(|e| e.get("ADMIN_TOKEN").map(str::to_string))
            .map(Ok)
            .unwrap_or_else(|| self.secret(secret::TARGET_ADMIN_TOKEN))?;
        Ok((format!("http://127.0.0.1:{port}"), token))
    }

    pub fn env(&self) -> R<EnvFile> {
        EnvFile::read(&self.state.env_file()).map_err(|e| e.to_string())
    }

    pub fn write_env(&self, env: &EnvFile) -> R<()> {
        env.write(&self.state.env_file()).map_err(|e| e.to_string())
    }

    /// GET a path of the target: (status, body); Err when unreachable.
    pub async fn get(&self, path: &str, timeout: Duration) -> R<(u16, Value)> {
        let url = format!("{}{path}", self.target_url()?);
        send(self.http.get(url), timeout).await
    }

    pub async fn service(&self, name: &str) -> R<ServiceStatus> {
        self.runtime.service(name).await.map_err(|e| e.to_string())
    }

    /// Wait until `name` runs and is healthy; the last state seen either way.
    pub async fn wait_healthy(&self, name: &str, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match self.service(name).await {
                Ok(s)
                    if s.state == ServiceState::Running
                        && s.health.status == HealthStatus::Healthy =>
                {
                    return (true, format!("{name} running, healthy"));
                }
                Ok(s) => format!(
                    "{name} {} ({}{})",
                    s.state.as_str(),
                    s.health.status.as_str(),
                    if s.health.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.health.detail)
                    }
                ),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return (false, seen);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn wait_state(
        &self,
        name: &str,
        want: ServiceState,
        limit: Duration,
    ) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match self.service(name).await {
                Ok(s) if s.state == want => return (true, format!("{name} {}", want.as_str())),
                Ok(s) => format!("{name} {}", s.state.as_str()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return (false, seen);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Poll `/readyz` until 200 within `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match self.get("/readyz", Duration::from_secs(5)).await {
                Ok((200, _)) => return (true, "/readyz 200".into()),
                Ok((s, b)) => format!("/readyz {s} {}", b.get("checks").cloned().unwrap_or(b)),
                Err(e) => format!("/readyz: {e}"),
            };
            if Instant::now() >= deadline {
                return (false, seen);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Poll a GET until `ok(status)` within `limit`.
    pub async fn wait_get(
        &self,
        path: &str,
        limit: Duration,
        ok: impl Fn(u16) -> bool,
    ) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            let seen = match self.get(path, Duration::from_secs(5)).await {
                Ok((s, _)) if ok(s) => return (true, format!("GET {path} {s}")),
                Ok((s, b)) => format!(
                    "GET {path} {s} {}",
                    b["error"]["code"].as_str().unwrap_or_default()
                ),
                Err(e) => format!("GET {path}: {e}"),
            };
            if Instant::now() >= deadline {
                return (false, seen);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn restart(&self, name: &str) -> R<()> {
        self.runtime
            .restart(name)
            .await
            .map(|_| ())
            .map_err(|e| format!("restart {name}: {e}"))
    }

    /// A pg client tool (`pg_dump`, `pg_restore`): PATH, next to the server binaries,
    /// `/usr/bin`.
    pub fn pg_tool(&self, name: &str) -> R<PathBuf> {
        if let Some(p) = aiops_sandbox::postgres::which(name) {
            return Ok(p);
        }
        if let Ok(bins) = aiops_sandbox::postgres::PgBins::discover()
            && let Some(dir) = bins.postgres.parent()
            && dir.join(name).is_file()
        {
            return Ok(dir.join(name));
        }
        let usr = PathBuf::from("/usr/bin").join(name);
        if usr.is_file() {
            return Ok(usr);
        }
        Err(format!(
            "`{name}` not found on PATH, next to the PostgreSQL server binaries nor in /usr/bin"
        ))
    }

    /// Run a pg client tool against the sandbox database as admin; the password goes in
    /// the child's environment, never on its command line.
    pub async fn run_pg_tool(&self, tool: &str, args: &[String]) -> R<String> {
        let bin = self.pg_tool(tool)?;
        let db = &self.topology.database;
        let pw = self.secret(secret::PG_ADMIN_PASSWORD)?;
        let out = tokio::process::Command::new(&bin)
            .args([
                "-h",
                &db.host,
                "-p",
                &db.port.to_string(),
                "-U",
                &db.admin_user,
            ])
            .args(args)
            .env("PGPASSWORD", pw)
            .env("PGAPPNAME", OWN_APP)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("run {}: {e}", bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.status.success() {
            Ok(stderr)
        } else {
            Err(format!(
                "{tool} failed ({}): {}",
                out.status,
                truncate(&stderr, 600)
            ))
        }
    }

    /// A JWT signed with `secret` for seeded customer 2, valid ten minutes.
    pub fn customer_token(&self, secret: &str) -> R<String> {
        let exp = (chrono::Utc::now() + chrono::Duration::minutes(10)).timestamp();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": 2, "role": "customer", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| e.to_string())
    }

    /// `GET /api/v1/orders/1` with a token signed by the recorded JWT secret.
    pub async fn recorded_token_status(&self) -> R<u16> {
        let token = self.customer_token(&self.secret(secret::JWT_SECRET)?)?;
        let url = format!("{}/api/v1/orders/1", self.target_url()?);
        send(
            self.http.get(url).bearer_auth(token),
            Duration::from_secs(5),
        )
        .await
        .map(|(s, _)| s)
    }
}

pub(crate) async fn send(req: reqwest::RequestBuilder, timeout: Duration) -> R<(u16, Value)> {
    let resp = req.timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection refused".to_string()
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or_default()))
}

pub(crate) async fn connect(url: &str, application_name: &str) -> R<PgConnection> {
    let opts: sqlx::postgres::PgConnectOptions = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|_| "bad database URL".to_string())?
        .application_name(application_name);
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to PostgreSQL: {}", pg_error(&e))),
        Err(_) => Err("PostgreSQL did not accept a connection within 5 s".into()),
    }
}

/// A database error without anything that could carry a secret (no URLs).
pub(crate) fn pg_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => format!(
            "{} ({})",
            d.message(),
            d.code().map(|c| c.to_string()).unwrap_or_default()
        ),
        sqlx::Error::Io(io) => format!("I/O: {io}"),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        other => {
            let s = other.to_string();
            truncate(&s, 200)
        }
    }
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

pub(crate) fn check(
    name: &str,
    passed: bool,
    observed: impl Into<String>,
    expected: impl Into<String>,
) -> crate::Check {
    crate::Check {
        name: name.to_string(),
        passed,
        observed: observed.into(),
        expected: expected.into(),
    }
}
