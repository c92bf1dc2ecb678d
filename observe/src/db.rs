//! `db_diagnostics`: an admin session on the sandbox's PostgreSQL (application_name
//! `aiops-observe`, 3 s connect timeout, 2 s statement timeout) reading
//! `pg_stat_activity`, `pg_locks`, the database size and `_sqlx_migrations`.
//!
//! Read-only: no statement here changes anything. Not responsible for fixing what it
//! finds (terminating sessions is a remediation action).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

use crate::util::{Scrubber, pretty_bytes, round1, truncate_chars};
use crate::{ObserveError, Observer, Summary};

pub(crate) const APPLICATION_NAME: &str = "aiops-observe";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The whole diagnostics call, connect included, must finish in this time.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(8);
const QUERY_CHARS: usize = 300;
const MAX_ITEMS: usize = 50;

/// Arguments of `db_diagnostics`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DbDiagnosticsQuery {
    /// A query running, or a session idle inside a transaction, for longer than this
    /// many seconds is listed as long-running. Allowed: 1 to 86400. Default: 30.
    #[serde(default)]
    pub long_running_threshold_s: Option<u64>,
}

/// Sessions grouped by one attribute.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectionCount {
    /// The state (`active`, `idle`, `idle in transaction`, ...) or application name.
    pub key: String,
    pub count: u64,
}

/// A role's connection limit and its sessions.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RoleLimit {
    pub role: String,
    /// `ALTER ROLE … CONNECTION LIMIT n`.
    pub limit: u64,
    pub sessions: u64,
    /// The role's sessions by application name.
    pub by_application: Vec<ConnectionCount>,
}

/// A session that holds what another waits for.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BlockingSession {
    pub pid: i32,
    pub application: String,
    pub state: String,
    /// Seconds since its transaction began.
    pub xact_age_s: Option<f64>,
    pub query: String,
}

/// One waiting session and who blocks it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BlockingChain {
    pub blocked_pid: i32,
    pub blocked_application: String,
    /// Pids of the sessions it waits for (`pg_blocking_pids`).
    pub blocking_pids: Vec<i32>,
    /// Seconds it has been waiting on its current query.
    pub wait_s: f64,
    /// The waiting query, truncated to 300 characters.
    pub query: String,
    /// Lock mode it asked for, e.g. `AccessShareLock`.
    pub lock_mode: Option<String>,
    /// Table it waits on, if a relation lock.
    pub relation: Option<String>,
    /// What the blockers are doing.
    pub blockers: Vec<BlockingSession>,
}

/// A query running, or a session idle in transaction, longer than the threshold.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LongRunningSession {
    pub pid: i32,
    pub application: String,
    pub state: String,
    /// Seconds: since the query started (active) or since the transaction began (idle in
    /// transaction).
    pub duration_s: f64,
    pub query: String,
}

/// Migrations as recorded in the database, compared with the target's view.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MigrationStatus {
    /// `_sqlx_migrations` exists.
    pub table_present: bool,
    pub applied_versions: Vec<i64>,
    /// Versions recorded with success = false.
    pub failed_versions: Vec<i64>,
    pub latest_version: Option<i64>,
    /// The target's `GET /api/v1/migrations/status` says `current` (None if unreachable).
    pub target_says_current: Option<bool>,
    /// Versions the target knows but the database lacks.
    pub target_pending: Vec<i64>,
    /// Why the target's view is missing, if it is.
    pub target_error: Option<String>,
}

/// Database diagnostics.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DbDiagnostics {
    pub max_connections: u64,
    /// Login roles with a `CONNECTION LIMIT`, and how many sessions each holds now.
    pub role_limits: Vec<RoleLimit>,
    /// Client sessions, this diagnostic session excluded.
    pub total_connections: u64,
    /// total / max_connections, in percent.
    pub utilization_percent: f64,
    pub by_state: Vec<ConnectionCount>,
    pub by_application: Vec<ConnectionCount>,
    pub blocking_chains: Vec<BlockingChain>,
    pub long_running: Vec<LongRunningSession>,
    pub idle_in_transaction: Vec<LongRunningSession>,
    /// Some list was cut at 50 items.
    pub truncated: bool,
    pub long_running_threshold_s: u64,
    pub database_size_bytes: u64,
    pub database_size_pretty: String,
    pub migrations: MigrationStatus,
}

impl Summary for DbDiagnostics {
    fn summary(&self) -> String {
        let apps: Vec<String> = self
            .by_application
            .iter()
            .map(|c| format!("{}={}", c.key, c.count))
            .collect();
        let mut s = format!(
            "{} of {} connections used ({:.0} %), by application: {}; database {}; migrations {}",
            self.total_connections,
            self.max_connections,
            self.utilization_percent,
            if apps.is_empty() {
                "-".into()
            } else {
                apps.join(", ")
            },
            self.database_size_pretty,
            match (
                self.migrations.latest_version,
                self.migrations.target_says_current
            ) {
                (_, Some(false)) => "NOT current".to_string(),
                (Some(v), _) if !self.migrations.failed_versions.is_empty() =>
                    format!("latest {v}, FAILED {:?}", self.migrations.failed_versions),
                (Some(v), _) => format!("latest {v}"),
                (None, _) => "none applied".to_string(),
            }
        );
        s.push('.');
        for c in &self.blocking_chains {
            s.push_str(&format!(
                "\n  pid {} ({}) waits {:.0} s for {:?} on {} held by pids {:?}",
                c.blocked_pid,
                c.blocked_application,
                c.wait_s,
                c.lock_mode.as_deref().unwrap_or("lock"),
                c.relation.as_deref().unwrap_or("?"),
                c.blocking_pids
            ));
        }
        for l in self.long_running.iter().chain(&self.idle_in_transaction) {
            s.push_str(&format!(
                "\n  pid {} ({}) {} for {:.0} s: {}",
                l.pid,
                l.application,
                l.state,
                l.duration_s,
                truncate_chars(&l.query, 80)
            ));
        }
        s
    }
}

/// Connect as the admin role; any failure or a 3 s silence is `DatabaseUnreachable`.
pub(crate) async fn connect(
    obs: &Observer,
    topo: &aiops_sandbox::topology::Topology,
    timeout: Duration,
) -> Result<PgConnection, ObserveError> {
    let url = aiops_sandbox::prepare::admin_database_url(obs.state(), topo)
        .map_err(|e| ObserveError::Other(format!("cannot build the admin connection: {e}")))?;
    let opts = PgConnectOptions::from_str(&url)
        .map_err(|_| ObserveError::Other("the admin connection string is malformed".into()))?
        .application_name(APPLICATION_NAME)
        .options([("statement_timeout", "2000"), ("lock_timeout", "1000")])
        .disable_statement_logging();
    let scrub = obs.scrubber();
    match tokio::time::timeout(timeout, opts.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(ObserveError::DatabaseUnreachable(format!(
            "{}:{}: {}",
            topo.database.host,
            topo.database.port,
            scrub.scrub(&e.to_string())
        ))),
        Err(_) => Err(ObserveError::DatabaseUnreachable(format!(
            "{}:{}: no answer within {} s",
            topo.database.host,
            topo.database.port,
            timeout.as_secs()
        ))),
    }
}

pub(crate) async fn db_diagnostics(
    obs: &Observer,
    q: DbDiagnosticsQuery,
) -> Result<DbDiagnostics, ObserveError> {
    let threshold = q.long_running_threshold_s.unwrap_or(30);
    if !(1..=86_400).contains(&threshold) {
        return Err(ObserveError::invalid(
            "long_running_threshold_s",
            format!("{threshold} is out of range; allowed: 1 to 86400 seconds (default 30)"),
        ));
    }
    let topo = obs.topology().await?;
    let mut conn = connect(obs, &topo, CONNECT_TIMEOUT).await?;
    let scrub = obs.scrubber();
    let result = tokio::time::timeout(TOTAL_TIMEOUT, gather(&mut conn, threshold, &scrub)).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), conn.close()).await;
    let mut diag = match result {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            return Err(ObserveError::DatabaseUnreachable(format!(
                "a diagnostic query failed: {}",
                scrub.scrub(&e.to_string())
            )));
        }
        Err(_) => {
            return Err(ObserveError::DatabaseUnreachable(format!(
                "diagnostic queries did not finish within {} s",
                TOTAL_TIMEOUT.as_secs()
            )));
        }
    };
    // The target's own view of migrations, if it answers.
    if let Some(url) = topo.target_url() {
        match obs
            .http()
            .get(format!("{url}/api/v1/migrations/status"))
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => {
                match resp.json::<serde_json::Value>().await {
                    Ok(v) => {
                        diag.migrations.target_says_current = v["current"].as_bool();
                        diag.migrations.target_pending = v["pending"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|p| p["version"].as_i64().or_else(|| p.as_i64()))
                                    .take(MAX_ITEMS)
                                    .collect()
                            })
                            .unwrap_or_default();
                    }
                    Err(e) => diag.migrations.target_error = Some(format!("bad JSON: {e}")),
                }
            }
            Ok(resp) => {
                diag.migrations.target_error = Some(format!("HTTP {}", resp.status().as_u16()))
            }
            Err(e) => diag.migrations.target_error = Some(crate::describe_reqwest(&e)),
        }
    }
    Ok(diag)
}

async fn gather(
    conn: &mut PgConnection,
    threshold: u64,
    scrub: &Scrubber,
) -> Result<DbDiagnostics, sqlx::Error> {
    let max_connections: i32 = sqlx::query_scalar("SELECT current_setting('max_connections')::int")
        .fetch_one(&mut *conn)
        .await?;

    let rows = sqlx::query(
        "SELECT pid, coalesce(application_name, '') AS app, coalesce(state, '') AS state, \
                extract(epoch FROM now() - xact_start)::float8 AS xact_age, \
                extract(epoch FROM now() - query_start)::float8 AS query_age, \
                left(coalesce(query, ''), 1000) AS query \
         FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_all(&mut *conn)
    .await?;
    struct Act {
        pid: i32,
        app: String,
        state: String,
        xact_age: Option<f64>,
        query_age: Option<f64>,
        query: String,
    }
    let acts: Vec<Act> = rows
        .iter()
        .map(|r| Act {
            pid: r.try_get("pid").unwrap_or_default(),
            app: r.try_get("app").unwrap_or_default(),
            state: r.try_get("state").unwrap_or_default(),
            xact_age: r.try_get("xact_age").ok().flatten(),
            query_age: r.try_get("query_age").ok().flatten(),
            query: truncate_chars(
                &scrub.scrub(&r.try_get::<String, _>("query").unwrap_or_default()),
                QUERY_CHARS,
            ),
        })
        .collect();
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_app: BTreeMap<String, u64> = BTreeMap::new();
    for a in &acts {
        *by_state
            .entry(if a.state.is_empty() {
                "unknown".into()
            } else {
                a.state.clone()
            })
            .or_default() += 1;
        *by_app
            .entry(if a.app.is_empty() {
                "(none)".into()
            } else {
                a.app.clone()
            })
            .or_default() += 1;
    }
    let to_counts = |m: BTreeMap<String, u64>| -> Vec<ConnectionCount> {
        let mut v: Vec<ConnectionCount> = m
            .into_iter()
            .map(|(key, count)| ConnectionCount { key, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.cmp(&b.key)));
        v.truncate(MAX_ITEMS);
        v
    };
    let mut truncated = false;
    let t = threshold as f64;
    let mut long_running: Vec<LongRunningSession> = acts
        .iter()
        .filter(|a| a.state == "active" && a.query_age.is_some_and(|d| d > t))
        .map(|a| LongRunningSession {
            pid: a.pid,
            application: a.app.clone(),
            state: a.state.clone(),
            duration_s: round1(a.query_age.unwrap_or(0.0)),
            query: a.query.clone(),
        })
        .collect();
    let mut idle_in_transaction: Vec<LongRunningSession> = acts
        .iter()
        .filter(|a| a.state.starts_with("idle in transaction") && a.xact_age.is_some_and(|d| d > t))
        .map(|a| LongRunningSession {
            pid: a.pid,
            application: a.app.clone(),
            state: a.state.clone(),
            duration_s: round1(a.xact_age.unwrap_or(0.0)),
            query: a.query.clone(),
        })
        .collect();
    for list in [&mut long_running, &mut idle_in_transaction] {
        list.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
        if list.len() > MAX_ITEMS {
            list.truncate(MAX_ITEMS);
            truncated = true;
        }
    }

    let chain_rows = sqlx::query(
        "SELECT a.pid, coalesce(a.application_name, '') AS app, pg_blocking_pids(a.pid) AS blockers, \
                coalesce(extract(epoch FROM now() - a.query_start)::float8, 0) AS wait_s, \
                left(coalesce(a.query, ''), 1000) AS query, \
                (SELECT l.mode FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted LIMIT 1) AS mode, \
                (SELECT l.relation::regclass::text FROM pg_locks l \
                  WHERE l.pid = a.pid AND NOT l.granted AND l.relation IS NOT NULL LIMIT 1) AS relation \
         FROM pg_stat_activity a \
         WHERE a.pid <> pg_backend_pid() AND cardinality(pg_blocking_pids(a.pid)) > 0 \
         ORDER BY wait_s DESC LIMIT 51",
    )
    .fetch_all(&mut *conn)
    .await?;
    if chain_rows.len() > MAX_ITEMS {
        truncated = true;
    }
    let blocking_chains: Vec<BlockingChain> = chain_rows
        .iter()
        .take(MAX_ITEMS)
        .map(|r| {
            let blocking_pids: Vec<i32> = r.try_get("blockers").unwrap_or_default();
            let blockers = blocking_pids
                .iter()
                .take(10)
                .map(|pid| {
                    let a = acts.iter().find(|a| a.pid == *pid);
                    BlockingSession {
                        pid: *pid,
                        application: a.map(|a| a.app.clone()).unwrap_or_default(),
                        state: a.map(|a| a.state.clone()).unwrap_or_default(),
                        xact_age_s: a.and_then(|a| a.xact_age).map(round1),
                        query: a.map(|a| a.query.clone()).unwrap_or_default(),
                    }
                })
                .collect();
            BlockingChain {
                blocked_pid: r.try_get("pid").unwrap_or_default(),
                blocked_application: r.try_get("app").unwrap_or_default(),
                blocking_pids,
                wait_s: round1(r.try_get("wait_s").unwrap_or_default()),
                query: truncate_chars(
                    &scrub.scrub(&r.try_get::<String, _>("query").unwrap_or_default()),
                    QUERY_CHARS,
                ),
                lock_mode: r.try_get("mode").ok().flatten(),
                relation: r.try_get("relation").ok().flatten(),
                blockers,
            }
        })
        .collect();

    let size_row = sqlx::query(
        "SELECT pg_database_size(current_database()) AS size, \
                pg_size_pretty(pg_database_size(current_database())) AS pretty",
    )
    .fetch_one(&mut *conn)
    .await?;
    let database_size_bytes = size_row.try_get::<i64, _>("size").unwrap_or(0).max(0) as u64;

    let table_present: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    let mut migrations = MigrationStatus {
        table_present,
        applied_versions: Vec::new(),
        failed_versions: Vec::new(),
        latest_version: None,
        target_says_current: None,
        target_pending: Vec::new(),
        target_error: None,
    };
    if table_present {
        let rows = sqlx::query(
            "SELECT version, success FROM _sqlx_migrations ORDER BY version LIMIT 1000",
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let v: i64 = r.try_get("version").unwrap_or_default();
            let ok: bool = r.try_get("success").unwrap_or(true);
            if ok {
                migrations.applied_versions.push(v);
            } else {
                migrations.failed_versions.push(v);
            }
        }
        migrations.latest_version = migrations
            .applied_versions
            .iter()
            .chain(&migrations.failed_versions)
            .max()
            .copied();
        migrations.applied_versions.truncate(MAX_ITEMS);
    }

    let limit_rows = sqlx::query(
        "SELECT r.rolname AS role, r.rolconnlimit::int8 AS lim, \
                coalesce(a.application_name, '') AS app, count(a.pid)::int8 AS n \
         FROM pg_roles r LEFT JOIN pg_stat_activity a \
           ON a.usename = r.rolname AND a.pid <> pg_backend_pid() \
         WHERE r.rolcanlogin AND r.rolconnlimit >= 0 \
         GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC LIMIT 200",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut role_limits: Vec<RoleLimit> = Vec::new();
    for r in limit_rows {
        let role: String = r.try_get("role").unwrap_or_default();
        let limit = r.try_get::<i64, _>("lim").unwrap_or(0).max(0) as u64;
        let n = r.try_get::<i64, _>("n").unwrap_or(0).max(0) as u64;
        let app: String = r.try_get("app").unwrap_or_default();
        if role_limits.last().is_none_or(|l| l.role != role) {
            role_limits.push(RoleLimit {
                role,
                limit,
                sessions: 0,
                by_application: Vec::new(),
            });
        }
        if let Some(l) = role_limits.last_mut()
            && n > 0
        {
            l.sessions += n;
            l.by_application.push(ConnectionCount {
                key: if app.is_empty() { "(none)".into() } else { app },
                count: n,
            });
        }
    }

    let total = acts.len() as u64;
    let max = max_connections.max(0) as u64;
    Ok(DbDiagnostics {
        max_connections: max,
        role_limits,
        total_connections: total,
        utilization_percent: if max > 0 {
            round1(total as f64 / max as f64 * 100.0)
        } else {
            0.0
        },
        by_state: to_counts(by_state),
        by_application: to_counts(by_app),
        blocking_chains,
        long_running,
        idle_in_transaction,
        truncated,
        long_running_threshold_s: threshold,
        database_size_pretty: size_row
            .try_get::<String, _>("pretty")
            .unwrap_or_else(|_| pretty_bytes(database_size_bytes)),
        database_size_bytes,
        migrations,
    })
}
