//! The action catalogue and each action's `plan`, `execute` and `verify`.
//!
//! `plan` is read-only and is the dry-run answer; it also refuses what lies outside the
//! sandbox before anything is touched. `execute` changes the sandbox. `verify` checks the
//! action's own success condition and returns the after-figures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::postgres::{check_identifier, quote_literal};
use aiops_sandbox::runtime::ServiceState;
use aiops_sandbox::secrets::{self, names as secret};
use aiops_sandbox::topology::names as svc;
use serde_json::{Map, Value, json};
use sqlx::{Connection, Row};

use crate::ctx::{Ctx, OWN_APP, R, check, pg_error};
use crate::params::{ParamSpec, Ty, p};
use crate::{ActionInfo, Plan, RemediationError, Verification};

const SERVICES: &[&str] = &[
    svc::POSTGRES,
    svc::TARGET_APP,
    svc::WORKER,
    svc::UPSTREAM_PRIMARY,
    svc::UPSTREAM_FALLBACK,
];
const SERVICE_TY: Ty = Ty::Enum(SERVICES);
const HEALTHY_LIMIT: Duration = Duration::from_secs(30);
/// Application names of the sandbox's own sessions, spared by `foreign_only`.
const OWN_APPS: &[&str] = &["target-app", "target-app-worker"];
const CONFIG_KEYS: &[&str] = &[
    "POOL_SIZE",
    "POOL_MIN_IDLE",
    "POOL_ACQUIRE_TIMEOUT_MS",
    "POOL_IDLE_TIMEOUT_S",
    "DB_STATEMENT_TIMEOUT_MS",
    "UPSTREAM_TIMEOUT_MS",
    "RATE_LIMIT_RPS",
    "LOG_LEVEL",
];
/// The migrations the target embeds: what `repair_migrations` re-creates when missing.
const MIGRATION_SQL: &[(&str, &str)] = &[(
    "0001_schema.sql",
    include_str!("../../target-app/migrations/0001_schema.sql"),
)];

struct Def {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    params: &'static [ParamSpec],
    destructive: bool,
    read_only: bool,
    idempotent: bool,
}

const fn def(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    params: &'static [ParamSpec],
    (destructive, read_only, idempotent): (bool, bool, bool),
) -> Def {
    Def {
        name,
        title,
        description,
        params,
        destructive,
        read_only,
        idempotent,
    }
}

const SERVICE_PARAM: &[ParamSpec] = &[p(
    "service",
    SERVICE_TY,
    true,
    None,
    "The sandbox service: postgres, target-app, worker, upstream-primary or upstream-fallback.",
)];

const DEFS: &[Def] = &[
    def(
        "restart_service",
        "Restart a service",
        "Stops and starts one sandbox service through the supervisor, then waits (≤ 30 s) until it is running and healthy. Use it to clear in-process state of target-app (failpoints: added latency, CPU spin, memory growth, log storms) or to recover a wedged service. A restart is not a fix for a cause outside the process (bad config, database problems): by default at most 3 restarts of one service per 10 minutes are allowed, more is refused as a restart loop. Changes: the service's process is replaced; in-flight requests fail.",
        SERVICE_PARAM,
        (true, false, true),
    ),
    def(
        "stop_service",
        "Stop a service",
        "Stops one sandbox service (it is not restarted automatically) and verifies it is stopped. Use it only to take a misbehaving component out deliberately; dependants will fail while it is down.",
        SERVICE_PARAM,
        (true, false, true),
    ),
    def(
        "start_service",
        "Start a service",
        "Starts one sandbox service that is stopped, exited or failed (e.g. PostgreSQL after it was stopped, target-app after it was stopped or gave up restarting) and waits (≤ 30 s) until it is running and healthy. Does nothing harmful if it already runs.",
        SERVICE_PARAM,
        (false, false, true),
    ),
    def(
        "kill_db_sessions",
        "Terminate database sessions",
        "Terminates (pg_terminate_backend, as the admin role) sessions of the sandbox database that match ALL given filters; at least one filter is required. Never terminates its own session or the admin role's sessions. Use it for sessions that hold the connection pool or locks: e.g. idle_in_transaction_longer_than_s=1 with foreign_only=true for sessions idle in an open transaction that are not the target's own, or blocking_others=true for the head of a lock chain. A dry run lists exactly the pids, application names and queries that would be terminated. Then verifies none of them remains and the target's /readyz answers 200.",
        &[
            p(
                "application_name",
                Ty::Str { max_len: 64 },
                false,
                None,
                "Only sessions with exactly this application_name.",
            ),
            p(
                "pid",
                Ty::Int {
                    min: 1,
                    max: 4_194_304,
                },
                false,
                None,
                "Only the backend with this pid.",
            ),
            p(
                "idle_in_transaction_longer_than_s",
                Ty::Int {
                    min: 0,
                    max: 86_400,
                },
                false,
                None,
                "Only sessions idle in an open transaction for longer than this many seconds.",
            ),
            p(
                "blocking_others",
                Ty::Bool,
                false,
                None,
                "Only sessions that block at least one other session and are not themselves waiting on a lock (heads of lock chains).",
            ),
            p(
                "foreign_only",
                Ty::Bool,
                false,
                None,
                "Spare the sandbox's own sessions: application_name target-app, target-app-worker and aiops tooling (aiops, aiops-remediation, aiops-probe, ...).",
            ),
        ],
        (true, false, true),
    ),
    def(
        "rotate_db_credentials",
        "Rotate the app database password",
        "Sets a new random password for the app role shop_app (ALTER ROLE as admin), records it in the sandbox's secrets and in the target's .env DATABASE_URL (and in the last-known-good .env), then restarts target-app and worker. Use it when the target cannot log in to PostgreSQL (DB_AUTH_FAILED): it makes the database and the configuration agree again. Verifies a real login with the new password and /readyz 200. Needs approval by default. The password never appears in any output.",
        &[],
        (true, false, true),
    ),
    def(
        "rotate_app_secret",
        "Restore or rotate the JWT signing secret",
        "With restore_recorded=true (default) writes the sandbox's recorded JWT signing secret — the one clients' tokens are signed with — back into the target's .env and restarts target-app: fixes valid clients getting 401 AUTH_INVALID_TOKEN after JWT_SECRET was changed out of band. With restore_recorded=false generates a new secret and records it (every existing token becomes invalid). Verifies that a token signed with the recorded secret is accepted.",
        &[p(
            "restore_recorded",
            Ty::Bool,
            false,
            Some("true"),
            "true: restore the recorded secret; false: generate and record a new one.",
        )],
        (true, false, true),
    ),
    def(
        "clear_cache",
        "Clear the product cache",
        "Deletes the target's product cache files (only regular files inside the sandbox's cache/ directory; refused if a symlink there points outside). Use it when cached entries are corrupt (CACHE_CORRUPT 500s); the target re-fills the cache from the database on the next reads. Reports files and bytes removed and verifies no corrupt entry remains.",
        &[],
        (true, false, true),
    ),
    def(
        "warm_cache",
        "Warm the product cache",
        "Reads GET /api/v1/products/{id} for ids 1..=limit so the target caches them; use after clear_cache to avoid a cold-cache latency spike. Verifies the entries exist and parse.",
        &[p(
            "limit",
            Ty::Int { min: 1, max: 1000 },
            false,
            Some("50"),
            "Highest product id to read.",
        )],
        (false, false, true),
    ),
    def(
        "create_db_snapshot",
        "Snapshot the database",
        "pg_dump -Fc of the shop database (as admin) into the sandbox's snapshots/NAME.dump. Use before a risky change, to be able to go back with restore_db_snapshot. Verifies the dump is readable (pg_restore --list).",
        &[p(
            "name",
            Ty::Str { max_len: 64 },
            false,
            None,
            "Snapshot name, [a-z0-9_-]{1,64}; default: a timestamp.",
        )],
        (false, false, false),
    ),
    def(
        "list_db_snapshots",
        "List database snapshots",
        "Lists the snapshots in the sandbox's snapshots/ directory with size and time. Read-only.",
        &[],
        (false, true, true),
    ),
    def(
        "restore_db_snapshot",
        "Restore a database snapshot",
        "Stops target-app and worker, restores the shop database from snapshots/SNAPSHOT.dump (pg_restore --clean --if-exists, one transaction), starts them again and verifies /readyz 200. Every change since the snapshot is lost. Needs approval by default.",
        &[p(
            "snapshot",
            Ty::Str { max_len: 64 },
            true,
            None,
            "Name of the snapshot (see list_db_snapshots).",
        )],
        (true, false, true),
    ),
    def(
        "run_migrations",
        "Apply pending migrations",
        "Restarts target-app, which applies its embedded migrations at start, and verifies GET /api/v1/migrations/status reports them current. Use when /readyz says migrations are not current.",
        &[],
        (false, false, true),
    ),
    def(
        "repair_migrations",
        "Repair a schema that disagrees with the migration record",
        "Compares the tables and columns the target's migrations create with the live schema (information_schema); re-creates what is missing (CREATE TABLE / ADD COLUMN IF NOT EXISTS with the migration's definition), restores a dropped column's data from a backup table when one exists (aiops_chaos_backup_<table>_<column>), then restarts target-app so no stale statement survives. Use for DB_SCHEMA_MISMATCH errors while migrations look applied. Verifies product reads answer 200.",
        &[],
        (false, false, true),
    ),
    def(
        "switch_upstream",
        "Switch the pricing upstream",
        "Sets UPSTREAM_MODE in the target's .env (primary, fallback, or auto = primary then fallback on error) and restarts target-app. Use when the primary pricing upstream fails (UPSTREAM_UNAVAILABLE on /price). Verifies GET /api/v1/products/1/price answers 200.",
        &[p(
            "to",
            Ty::Enum(&["primary", "fallback", "auto"]),
            true,
            None,
            "primary, fallback or auto.",
        )],
        (false, false, true),
    ),
    def(
        "set_config",
        "Change one target setting",
        "Sets one allow-listed key of the target's .env (POOL_SIZE 1–200, POOL_MIN_IDLE 0–POOL_SIZE, POOL_ACQUIRE_TIMEOUT_MS 50–60000, POOL_IDLE_TIMEOUT_S 1–86400, DB_STATEMENT_TIMEOUT_MS 0–600000, UPSTREAM_TIMEOUT_MS 10–60000, RATE_LIMIT_RPS 0–100000, LOG_LEVEL trace|debug|info|warn|error), validated before writing; the previous value is kept in the outcome and in remediation/config-history.jsonl. Restarts target-app and verifies it is healthy.",
        &[
            p("key", Ty::Enum(CONFIG_KEYS), true, None, "The setting."),
            p(
                "value",
                Ty::Str { max_len: 32 },
                true,
                None,
                "The new value (as text).",
            ),
        ],
        (false, false, true),
    ),
    def(
        "restore_config",
        "Restore the last known good configuration",
        "Copies the target's last-known-good .env (saved whenever it was last healthy) over its current .env and restarts target-app and worker. Use when the target crash-loops or exits with CONFIG_INVALID (exit 78) or FATAL after a configuration change. Refused when no last-known-good file exists. Verifies target-app is healthy and did not exit with CONFIG_INVALID.",
        &[],
        (true, false, true),
    ),
    def(
        "kill_process",
        "Kill a process of a service's tree",
        "Sends SIGKILL to one process that belongs to a sandbox service's process tree (a child, not the service's main process: use restart_service for that). Refused for any other pid. Killing a PostgreSQL backend makes PostgreSQL reset every session; prefer kill_db_sessions for database sessions. Verifies the process is gone.",
        &[p(
            "pid",
            Ty::Int {
                min: 2,
                max: 4_194_304,
            },
            true,
            None,
            "The pid to kill.",
        )],
        (true, false, true),
    ),
    def(
        "free_disk",
        "Free disk space in logs/ and tmp/",
        "Inside the sandbox's state dir only: truncates log files in logs/ over 10 MiB to their last 1 MiB and deletes rotated copies (*.log.N, *.gz, *.old); deletes regular files in tmp/ and temporary files (*.tmp, dot files) left in cache/ (cache entries themselves are kept). Never follows symlinks, never touches anything else. Reports bytes freed and verifies every sandbox file system has at least 10 % free.",
        &[],
        (true, false, true),
    ),
    def(
        "throttle_traffic",
        "Set the target's rate limit",
        "PUTs the target's run-time rate limit (admin API /admin/rate_limit): rps requests per second on /api/v1, 0 = off. Use to shed load during an overload; a target restart resets it to RATE_LIMIT_RPS from the .env. Verifies the admin API reports the new value.",
        &[p(
            "rps",
            Ty::Int {
                min: 0,
                max: 100_000,
            },
            true,
            None,
            "Requests per second; 0 disables the limit.",
        )],
        (false, false, true),
    ),
    def(
        "scale_service",
        "Scale a service",
        "Changes the number of instances of a service. Not supported on either runtime (process or docker): each service is one process or container bound to fixed loopback ports, so it is always refused with that reason.",
        &[
            p("service", SERVICE_TY, true, None, "The service."),
            p(
                "instances",
                Ty::Int { min: 1, max: 16 },
                true,
                None,
                "Wanted instances.",
            ),
        ],
        (false, false, true),
    ),
    def(
        "verify_recovery",
        "Check the sandbox is back to steady state",
        "Read-only steady-state check over a short window: every service running and healthy, /readyz 200, sampled requests (product reads, listings, prices, health, an authenticated order read) with error rate and p95 within limits, no blocked sessions (lock chains), no session idle in transaction for over 5 s, target-app CPU, memory growth and error-log rate normal. Use after a fix to confirm recovery; every condition is a check with its figure.",
        &[
            p(
                "window_s",
                Ty::Int { min: 1, max: 60 },
                false,
                Some("5"),
                "Sampling window in seconds.",
            ),
            p(
                "max_error_rate_percent",
                Ty::Num {
                    min: 0.0,
                    max: 100.0,
                },
                false,
                Some("1.0"),
                "Highest acceptable share of failed sampled requests.",
            ),
            p(
                "max_p95_ms",
                Ty::Int {
                    min: 1,
                    max: 60_000,
                },
                false,
                Some("1000"),
                "Highest acceptable 95th percentile latency of sampled requests.",
            ),
        ],
        (false, true, true),
    ),
];

/// Every action's name.
pub fn names() -> Vec<&'static str> {
    DEFS.iter().map(|d| d.name).collect()
}

/// The sandbox component an action changes: a service, or `config`, `cache`, `disk`
/// (the names fault labels use). `None` for actions that change nothing. A scorer
/// compares it with a fault's component to tell a proportionate fix from collateral
/// damage; kept here, beside the actions, so a new action says what it touches.
pub fn component_changed(action: &str, params: &serde_json::Value) -> Option<String> {
    let service = params["service"].as_str().map(str::to_string);
    Some(match action {
        "restart_service" | "stop_service" | "start_service" | "scale_service" => service?,
        "kill_process" => service.unwrap_or_else(|| "target-app".into()),
        "kill_db_sessions"
        | "rotate_db_credentials"
        | "restore_db_snapshot"
        | "run_migrations"
        | "repair_migrations" => "postgres".into(),
        "rotate_app_secret" | "set_config" | "restore_config" => "config".into(),
        "clear_cache" | "warm_cache" => "cache".into(),
        "free_disk" => "disk".into(),
        "switch_upstream" => "upstream-primary".into(),
        "throttle_traffic" => "target-app".into(),
        _ => return None,
    })
}

pub(crate) fn param_specs(name: &str) -> &'static [ParamSpec] {
    DEFS.iter()
        .find(|d| d.name == name)
        .map(|d| d.params)
        .unwrap_or(&[])
}

pub(crate) fn catalogue() -> Vec<ActionInfo> {
    DEFS.iter()
        .map(|d| ActionInfo {
            name: d.name.into(),
            title: d.title.into(),
            description: d.description.into(),
            params_schema: crate::params::schema(d.params),
            destructive: d.destructive,
            read_only: d.read_only,
            idempotent: d.idempotent,
            default_policy: crate::policy::default_mode(d.name).as_str().into(),
        })
        .collect()
}

pub(crate) enum PlanError {
    /// A precondition says no: an `Ok(refused)` outcome.
    Refuse(String),
    Err(RemediationError),
}

impl From<RemediationError> for PlanError {
    fn from(e: RemediationError) -> Self {
        Self::Err(e)
    }
}

fn other(e: String) -> PlanError {
    PlanError::Err(RemediationError::Other(e))
}

fn invalid(field: &str, message: impl Into<String>) -> PlanError {
    PlanError::Err(RemediationError::InvalidParam {
        field: field.into(),
        message: message.into(),
    })
}

pub(crate) struct Planned {
    pub plan: Plan,
    pub before: Value,
    /// What execute acts on, fixed at plan time (e.g. the pids to terminate).
    pub data: Value,
}

fn planned(
    target: impl Into<String>,
    steps: Vec<String>,
    effect: &str,
    risk: &str,
    before: Value,
    data: Value,
) -> Planned {
    Planned {
        plan: Plan {
            target: target.into(),
            steps,
            expected_effect: effect.into(),
            risk: risk.into(),
        },
        before,
        data,
    }
}

fn s<'a>(params: &'a Map<String, Value>, k: &str) -> &'a str {
    params.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn service_view(st: &aiops_sandbox::ServiceStatus) -> Value {
    json!({"service": st.name, "state": st.state.as_str(), "health": st.health.status.as_str(),
           "pid": st.pid, "restarts": st.restarts})
}

async fn service_before(ctx: &Ctx, name: &str) -> Value {
    ctx.service(name)
        .await
        .map(|s| service_view(&s))
        .unwrap_or_else(|e| json!({"service": name, "error": e}))
}

pub(crate) async fn plan(
    name: &str,
    ctx: &Ctx,
    params: &Map<String, Value>,
) -> Result<Planned, PlanError> {
    match name {
        "restart_service" | "stop_service" | "start_service" => {
            let service = s(params, "service");
            let before = service_before(ctx, service).await;
            let (steps, effect, risk) = match name {
                "restart_service" => (
                    vec![
                        format!(
                            "restart {service} through the supervisor (stop: SIGTERM, SIGKILL after the grace period; then start)"
                        ),
                        format!("wait ≤ 30 s until {service} is running and healthy"),
                    ],
                    "a fresh process: in-process faults (failpoints, leaks, spinning threads) are gone",
                    if service == svc::POSTGRES {
                        "high"
                    } else {
                        "medium"
                    },
                ),
                "stop_service" => (
                    vec![
                        format!(
                            "stop {service} through the supervisor (not restarted automatically)"
                        ),
                        format!("wait ≤ 30 s until {service} is stopped"),
                    ],
                    "the service is down until started; its dependants fail meanwhile",
                    "high",
                ),
                _ => (
                    vec![
                        format!("start {service} through the supervisor"),
                        format!("wait ≤ 30 s until {service} is running and healthy"),
                    ],
                    "the service runs and is healthy",
                    "low",
                ),
            };
            Ok(planned(service, steps, effect, risk, before, Value::Null))
        }
        "kill_db_sessions" => plan_kill_sessions(ctx, params).await,
        "rotate_db_credentials" => {
            let db = &ctx.topology.database;
            Ok(planned(
                format!("role {} of database {}", db.app_user, db.database),
                vec![
                    "generate a random 48-hex-character password (never shown)".into(),
                    format!("as {}: ALTER ROLE {} PASSWORD '<new>'", db.admin_user, db.app_user),
                    "store it in secrets/pg-app-password".into(),
                    "set DATABASE_URL in target-app.env (and in target-app.env.last-known-good, that key only)".into(),
                    "restart target-app and worker".into(),
                    format!("verify: a real login as {} with the new password; /readyz 200 within 30 s", db.app_user),
                ],
                "the database and the target agree on the app password: DB_AUTH_FAILED stops",
                "medium",
                json!({"readyz": readyz_code(ctx).await}),
                Value::Null,
            ))
        }
        "rotate_app_secret" => {
            let restore = params
                .get("restore_recorded")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let env = ctx.env().map_err(other)?;
            let recorded = ctx.secret(secret::JWT_SECRET).map_err(other)?;
            let matches = env.get("JWT_SECRET") == Some(recorded.as_str());
            let steps = if restore {
                vec![
                    format!("write the recorded JWT secret (secrets/jwt-secret) into target-app.env JWT_SECRET (currently {})",
                            if matches { "already the recorded one" } else { "different from the recorded one" }),
                    "restart target-app".into(),
                    "verify: GET /api/v1/orders/1 with a customer token signed by the recorded secret is not 401".into(),
                ]
            } else {
                vec![
                    "generate a new random JWT secret (64 hex characters, never shown)".into(),
                    "store it in secrets/jwt-secret, target-app.env and the last-known-good .env (JWT_SECRET only)".into(),
                    "restart target-app".into(),
                    "verify: a token signed by the new secret is accepted; every older token is now rejected".into(),
                ]
            };
            Ok(planned(
                "target-app JWT_SECRET",
                steps,
                if restore {
                    "tokens clients hold are accepted again"
                } else {
                    "a new signing secret; existing tokens are invalid"
                },
                if restore { "medium" } else { "high" },
                json!({"env_matches_recorded": matches, "recorded_token_status": ctx.recorded_token_status().await.ok()}),
                Value::Null,
            ))
        }
        "clear_cache" => {
            let dir = ctx.state.cache_dir();
            let (files, outside) = cache_files(&dir).map_err(other)?;
            if let Some(bad) = outside.first() {
                return Err(PlanError::Err(RemediationError::OutsideSandbox(format!(
                    "{} is a symlink pointing outside {}; nothing was removed",
                    bad.display(),
                    dir.display()
                ))));
            }
            let stats = cache_stats(&dir);
            Ok(planned(
                dir.display().to_string(),
                vec![
                    format!(
                        "delete {} regular files ({} bytes) in {}; subdirectories and symlinks are left alone",
                        files.len(),
                        stats["bytes"],
                        dir.display()
                    ),
                    "verify: every remaining entry parses as JSON".into(),
                ],
                "no corrupt cache entry remains; the target refills from the database",
                "low",
                stats,
                json!(
                    files
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                ),
            ))
        }
        "warm_cache" => {
            let limit = params.get("limit").and_then(Value::as_i64).unwrap_or(50);
            Ok(planned(
                ctx.state.cache_dir().display().to_string(),
                vec![
                    format!("GET /api/v1/products/{{id}} for id 1..={limit}"),
                    "verify: product-{id}.json exists and parses for every 200 answer".into(),
                ],
                "the product cache holds valid entries",
                "low",
                cache_stats(&ctx.state.cache_dir()),
                Value::Null,
            ))
        }
        "create_db_snapshot" => {
            let name = match params.get("name").and_then(Value::as_str) {
                Some(n) => n.to_string(),
                None => chrono::Utc::now().format("snap-%Y%m%d-%H%M%S").to_string(),
            };
            let path = snapshot_path(ctx, &name)?;
            if path.exists() {
                return Err(invalid(
                    "name",
                    format!("snapshot `{name}` already exists; pick another name"),
                ));
            }
            ctx.pg_tool("pg_dump").map_err(other)?;
            let db = &ctx.topology.database;
            Ok(planned(
                path.display().to_string(),
                vec![
                    format!(
                        "pg_dump -Fc of database {} as {} (password in the child's environment) into {}",
                        db.database,
                        db.admin_user,
                        path.display()
                    ),
                    "verify: pg_restore --list reads it".into(),
                ],
                "a restorable snapshot exists",
                "low",
                json!({"snapshots": list_snapshots(ctx).len()}),
                json!({"name": name}),
            ))
        }
        "list_db_snapshots" => Ok(planned(
            ctx.snapshots_dir().display().to_string(),
            vec!["list snapshots/*.dump".into()],
            "nothing changes",
            "low",
            json!({"snapshots": list_snapshots(ctx)}),
            Value::Null,
        )),
        "restore_db_snapshot" => {
            let name = s(params, "snapshot").to_string();
            let path = snapshot_path(ctx, &name)?;
            if !path.is_file() {
                return Err(invalid(
                    "snapshot",
                    format!(
                        "no snapshot `{name}`; existing: {}",
                        list_snapshots(ctx)
                            .iter()
                            .filter_map(|v| v["name"].as_str().map(str::to_string))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            ctx.pg_tool("pg_restore").map_err(other)?;
            let db = &ctx.topology.database;
            Ok(planned(
                format!("database {}", db.database),
                vec![
                    "stop worker, stop target-app".into(),
                    format!(
                        "pg_restore --clean --if-exists --single-transaction --exit-on-error -d {} {}",
                        db.database,
                        path.display()
                    ),
                    "start target-app, start worker".into(),
                    "verify: /readyz 200 within 30 s".into(),
                ],
                "the database is as it was when the snapshot was taken; later changes are lost",
                "high",
                json!({"readyz": readyz_code(ctx).await}),
                json!({"path": path}),
            ))
        }
        "run_migrations" => Ok(planned(
            svc::TARGET_APP,
            vec![
                "restart target-app (it applies embedded migrations at start)".into(),
                "verify: GET /api/v1/migrations/status says current".into(),
            ],
            "every embedded migration is applied",
            "medium",
            migration_status(ctx).await,
            Value::Null,
        )),
        "repair_migrations" => plan_repair(ctx).await,
        "switch_upstream" => {
            let to = s(params, "to");
            let env = ctx.env().map_err(other)?;
            let now = env.get("UPSTREAM_MODE").unwrap_or("primary").to_string();
            Ok(planned(
                "target-app UPSTREAM_MODE",
                vec![
                    format!("set UPSTREAM_MODE={to} in target-app.env (now {now})"),
                    "restart target-app".into(),
                    "verify: GET /api/v1/products/1/price answers 200 within 30 s".into(),
                ],
                "price lookups are served by the chosen upstream",
                "medium",
                json!({"upstream_mode": now}),
                Value::Null,
            ))
        }
        "set_config" => {
            let key = s(params, "key");
            let value = s(params, "value");
            let env = ctx.env().map_err(other)?;
            validate_config(key, value, &env).map_err(|m| invalid("value", m))?;
            let previous = env.get(key).map(str::to_string);
            Ok(planned(
                format!("target-app {key}"),
                vec![
                    format!(
                        "set {key}={value} in target-app.env (now {})",
                        previous.as_deref().unwrap_or("unset: default")
                    ),
                    "append the change to remediation/config-history.jsonl".into(),
                    "restart target-app".into(),
                    "verify: target-app running and healthy within 30 s".into(),
                ],
                "the target runs with the new setting",
                "medium",
                json!({"key": key, "previous": previous}),
                Value::Null,
            ))
        }
        "restore_config" => {
            let lkg = ctx.state.env_last_known_good();
            if !lkg.is_file() {
                return Err(PlanError::Refuse(format!(
                    "there is no last-known-good configuration ({} does not exist: the target was never seen healthy)",
                    lkg.display()
                )));
            }
            let current = std::fs::read_to_string(ctx.state.env_file()).unwrap_or_default();
            let good = std::fs::read_to_string(&lkg).map_err(|e| other(e.to_string()))?;
            let changed: Vec<String> = diff_keys(&EnvFile::parse(&current), &EnvFile::parse(&good));
            Ok(planned("target-app.env",
                vec![format!("copy {} over {} (keys that differ: {})", lkg.display(), ctx.state.env_file().display(),
                             if changed.is_empty() { "none".to_string() } else { changed.join(", ") }),
                     "restart target-app and worker".into(),
                     "verify: target-app running and healthy within 45 s, no exit 78 (CONFIG_INVALID) since".into()],
                "the target runs with the configuration it was last healthy with", "medium",
                json!({"differing_keys": changed, "target_app": service_before(ctx, svc::TARGET_APP).await}), Value::Null))
        }
        "kill_process" => {
            let pid = params.get("pid").and_then(Value::as_i64).unwrap_or(0) as u32;
            let services = ctx
                .runtime
                .services()
                .await
                .map_err(|e| other(e.to_string()))?;
            let mut owner = None;
            for st in &services {
                let Some(main) = st.pid else { continue };
                if main == pid {
                    return Err(invalid(
                        "pid",
                        format!(
                            "{pid} is the main process of {}; use restart_service",
                            st.name
                        ),
                    ));
                }
                if aiops_sandbox::procinfo::descendants(main).contains(&pid) {
                    owner = Some(st.name.clone());
                }
            }
            // The process tree is the test, not the AIOPS_SANDBOX marker: PostgreSQL
            // overwrites its children's environ area with their process titles.
            let Some(owner) = owner else {
                return Err(PlanError::Err(RemediationError::OutsideSandbox(format!(
                    "pid {pid} is not in the process tree of any sandbox service; nothing was signalled"
                ))));
            };
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            Ok(planned(
                format!("pid {pid} ({owner})"),
                vec![
                    format!(
                        "SIGKILL pid {pid} ({}) of {owner}'s process tree",
                        crate::ctx::truncate(cmd.trim(), 120)
                    ),
                    "verify: the process is gone within 5 s".into(),
                ],
                "that process is gone",
                if owner == svc::POSTGRES {
                    "high"
                } else {
                    "medium"
                },
                json!({"pid": pid, "service": owner, "alive": true}),
                json!({"pid": pid}),
            ))
        }
        "free_disk" => {
            let (work, bytes_before) = disk_work(ctx);
            Ok(planned(
                format!(
                    "{}, {} and temporary files in {}",
                    ctx.state.logs_dir().display(),
                    ctx.tmp_dir().display(),
                    ctx.state.cache_dir().display()
                ),
                work.iter()
                    .map(|w| w.describe())
                    .chain(["verify: no log over 10 MiB, tmp/ empty of regular files".to_string()])
                    .collect(),
                "disk space freed inside the state dir",
                "low",
                json!({"bytes": bytes_before}),
                Value::Null,
            ))
        }
        "throttle_traffic" => {
            let rps = params.get("rps").and_then(Value::as_i64).unwrap_or(0);
            let (base, _) = ctx.target_admin().map_err(other)?;
            Ok(planned(
                "target-app rate limit",
                vec![
                    format!("PUT {base}/admin/rate_limit {{\"rps\": {rps}}} (bearer ADMIN_TOKEN)"),
                    "verify: GET /admin/rate_limit reports it".into(),
                ],
                if rps == 0 {
                    "no rate limit"
                } else {
                    "requests beyond the limit get 429 RATE_LIMITED"
                },
                "medium",
                json!({"rate_limit": get_rate_limit(ctx).await.ok()}),
                Value::Null,
            ))
        }
        "scale_service" => Err(PlanError::Refuse(format!(
            "not supported: the {} runtime runs one instance per service",
            ctx.runtime.kind()
        ))),
        "verify_recovery" => Ok(planned(
            "the whole sandbox",
            vec![
                "services running and healthy; /readyz 200".into(),
                format!(
                    "sample ~20 requests over {} s: error rate and p95",
                    params.get("window_s").and_then(Value::as_i64).unwrap_or(5)
                ),
                "database: blocked sessions, idle-in-transaction > 30 s".into(),
                "target-app CPU, RSS growth and ERROR log rate over the window".into(),
            ],
            "nothing changes",
            "low",
            Value::Null,
            Value::Null,
        )),
        other_name => Err(PlanError::Err(RemediationError::UnknownAction {
            name: other_name.into(),
            known: names().iter().map(|s| s.to_string()).collect(),
        })),
    }
}

pub(crate) async fn execute(
    name: &str,
    ctx: &Ctx,
    params: &Map<String, Value>,
    planned: &Planned,
) -> R<Value> {
    match name {
        "restart_service" => ctx.restart(s(params, "service")).await.map(|_| Value::Null),
        "stop_service" => ctx
            .runtime
            .stop(s(params, "service"))
            .await
            .map(|_| Value::Null)
            .map_err(|e| e.to_string()),
        "start_service" => {
            let service = s(params, "service");
            let st = ctx.service(service).await?;
            if st.state.is_alive() && !matches!(st.state, ServiceState::Stopping) {
                return Ok(json!({"note": "already running"}));
            }
            ctx.runtime
                .start(service)
                .await
                .map(|_| Value::Null)
                .map_err(|e| e.to_string())
        }
        "kill_db_sessions" => {
            let pids: Vec<i32> = serde_json::from_value(planned.data.clone()).unwrap_or_default();
            if pids.is_empty() {
                return Ok(json!({"terminated": 0}));
            }
            let mut admin = ctx.admin_conn().await?;
            let admin_user = ctx.topology.database.admin_user.clone();
            // Re-checked at execution: still ours to kill (never our own or an admin session).
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE pid = ANY($1) AND pid <> pg_backend_pid() AND usename IS DISTINCT FROM $2 AND datname = $3",
            )
            .bind(&pids)
            .bind(&admin_user)
            .bind(&ctx.topology.database.database)
            .fetch_one(&mut admin)
            .await
            .map_err(|e| format!("pg_terminate_backend: {}", pg_error(&e)))?;
            let _ = admin.close().await;
            Ok(json!({"terminated": n}))
        }
        "rotate_db_credentials" => {
            let db = ctx.topology.database.clone();
            check_identifier(&db.app_user).map_err(|e| e.to_string())?;
            let password = secrets::random_hex(24);
            let mut admin = ctx.admin_conn().await?;
            // ALTER ROLE takes no bind parameters: the identifier was checked and the
            // literal (hex only) quoted.
            sqlx::raw_sql(&format!(
                "ALTER ROLE {} PASSWORD {}",
                db.app_user,
                quote_literal(&password)
            ))
            .execute(&mut admin)
            .await
            .map_err(|e| format!("ALTER ROLE: {}", pg_error(&e)))?;
            let _ = admin.close().await;
            secrets::store(&ctx.state, secret::PG_APP_PASSWORD, &password)
                .map_err(|e| e.to_string())?;
            let url = format!(
                "postgres://{}:{}@{}:{}/{}",
                db.app_user, password, db.host, db.port, db.database
            );
            let mut env = ctx.env()?;
            env.set("DATABASE_URL", url.clone());
            ctx.write_env(&env)?;
            let lkg = ctx.state.env_last_known_good();
            if lkg.is_file() {
                let mut good = EnvFile::read(&lkg).map_err(|e| e.to_string())?;
                good.set("DATABASE_URL", url);
                good.write(&lkg).map_err(|e| e.to_string())?;
            }
            ctx.restart(svc::TARGET_APP).await?;
            ctx.restart(svc::WORKER).await?;
            Ok(Value::Null)
        }
        "rotate_app_secret" => {
            let restore = params
                .get("restore_recorded")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let value = if restore {
                ctx.secret(secret::JWT_SECRET)?
            } else {
                let v = secrets::random_hex(32);
                secrets::store(&ctx.state, secret::JWT_SECRET, &v).map_err(|e| e.to_string())?;
                let lkg = ctx.state.env_last_known_good();
                if lkg.is_file() {
                    let mut good = EnvFile::read(&lkg).map_err(|e| e.to_string())?;
                    good.set("JWT_SECRET", v.clone());
                    good.write(&lkg).map_err(|e| e.to_string())?;
                }
                v
            };
            let mut env = ctx.env()?;
            env.set("JWT_SECRET", value);
            ctx.write_env(&env)?;
            ctx.restart(svc::TARGET_APP).await?;
            Ok(Value::Null)
        }
        "clear_cache" => {
            let files: Vec<String> =
                serde_json::from_value(planned.data.clone()).unwrap_or_default();
            let dir = ctx.state.cache_dir();
            let (mut removed, mut bytes) = (0u64, 0u64);
            for f in files {
                let path = PathBuf::from(&f);
                // Only direct children of cache/, and only regular files (checked again).
                if path.parent() != Some(dir.as_path()) {
                    continue;
                }
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_file() => {
                        if std::fs::remove_file(&path).is_ok() {
                            removed += 1;
                            bytes += m.len();
                        }
                    }
                    _ => continue,
                }
            }
            Ok(json!({"files_removed": removed, "bytes_removed": bytes}))
        }
        "warm_cache" => {
            let limit = params.get("limit").and_then(Value::as_i64).unwrap_or(50);
            let mut ok = Vec::new();
            let mut failed = 0;
            for id in 1..=limit {
                match ctx
                    .get(&format!("/api/v1/products/{id}"), Duration::from_secs(5))
                    .await
                {
                    Ok((200, _)) => ok.push(id),
                    _ => failed += 1,
                }
            }
            Ok(json!({"ok_ids": ok, "failed": failed}))
        }
        "create_db_snapshot" => {
            let name = planned.data["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let path = snapshot_path(ctx, &name).map_err(|_| "bad snapshot name".to_string())?;
            std::fs::create_dir_all(ctx.snapshots_dir()).map_err(|e| e.to_string())?;
            let tmp = ctx.snapshots_dir().join(format!(".{name}.dump.partial"));
            let db = ctx.topology.database.database.clone();
            ctx.run_pg_tool(
                "pg_dump",
                &[
                    "-Fc".into(),
                    "-d".into(),
                    db,
                    "-f".into(),
                    tmp.display().to_string(),
                ],
            )
            .await?;
            std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
            Ok(
                json!({"path": path, "bytes": std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)}),
            )
        }
        "list_db_snapshots" => Ok(json!({"snapshots": list_snapshots(ctx)})),
        "restore_db_snapshot" => {
            let path = planned.data["path"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            ctx.runtime
                .stop(svc::WORKER)
                .await
                .map_err(|e| format!("stop worker: {e}"))?;
            ctx.runtime
                .stop(svc::TARGET_APP)
                .await
                .map_err(|e| format!("stop target-app: {e}"))?;
            let db = ctx.topology.database.database.clone();
            let restored = ctx
                .run_pg_tool(
                    "pg_restore",
                    &[
                        "--clean".into(),
                        "--if-exists".into(),
                        "--single-transaction".into(),
                        "--exit-on-error".into(),
                        "-d".into(),
                        db,
                        path,
                    ],
                )
                .await;
            // Start them again whatever happened: a failed restore rolled back.
            let started_target = ctx
                .runtime
                .start(svc::TARGET_APP)
                .await
                .map_err(|e| format!("start target-app: {e}"));
            let started_worker = ctx
                .runtime
                .start(svc::WORKER)
                .await
                .map_err(|e| format!("start worker: {e}"));
            restored?;
            started_target?;
            started_worker?;
            Ok(Value::Null)
        }
        "run_migrations" => ctx.restart(svc::TARGET_APP).await.map(|_| Value::Null),
        "repair_migrations" => {
            let stmts: Vec<String> =
                serde_json::from_value(planned.data["statements"].clone()).unwrap_or_default();
            if !stmts.is_empty() {
                let mut admin = ctx.admin_conn().await?;
                let mut tx = admin.begin().await.map_err(|e| pg_error(&e))?;
                sqlx::raw_sql("SET LOCAL lock_timeout = '10s'")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| pg_error(&e))?;
                for q in &stmts {
                    sqlx::raw_sql(q)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| format!("`{q}`: {}", pg_error(&e)))?;
                }
                tx.commit().await.map_err(|e| pg_error(&e))?;
                let _ = admin.close().await;
            }
            ctx.restart(svc::TARGET_APP).await?;
            Ok(json!({"statements_run": stmts.len()}))
        }
        "switch_upstream" => {
            let mut env = ctx.env()?;
            env.set("UPSTREAM_MODE", s(params, "to"));
            ctx.write_env(&env)?;
            ctx.restart(svc::TARGET_APP).await.map(|_| Value::Null)
        }
        "set_config" => {
            let (key, value) = (s(params, "key"), s(params, "value"));
            let mut env = ctx.env()?;
            validate_config(key, value, &env)?;
            let previous = env.get(key).map(str::to_string);
            env.set(key, value);
            ctx.write_env(&env)?;
            let line = json!({"time": chrono::Utc::now(), "key": key, "previous": previous, "value": value});
            append_line(&ctx.remediation_dir().join("config-history.jsonl"), &line)?;
            ctx.restart(svc::TARGET_APP)
                .await
                .map(|_| json!({"previous": previous}))
        }
        "restore_config" => {
            let good = std::fs::read(ctx.state.env_last_known_good()).map_err(|e| e.to_string())?;
            aiops_sandbox::paths::write_atomic(&ctx.state.env_file(), &good, 0o600)
                .map_err(|e| e.to_string())?;
            ctx.restart(svc::TARGET_APP).await?;
            ctx.restart(svc::WORKER).await?;
            Ok(json!({"since": chrono::Utc::now()}))
        }
        "kill_process" => {
            let pid = planned.data["pid"].as_u64().unwrap_or(0) as i32;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|e| format!("SIGKILL {pid}: {e}"))?;
            Ok(Value::Null)
        }
        "free_disk" => {
            let (work, _) = disk_work(ctx);
            let mut freed = 0u64;
            for w in work {
                freed += w.apply(ctx).unwrap_or(0);
            }
            Ok(json!({"bytes_freed": freed}))
        }
        "throttle_traffic" => {
            let rps = params.get("rps").and_then(Value::as_i64).unwrap_or(0);
            let (base, token) = ctx.target_admin()?;
            let (status, _) = crate::ctx::send(
                ctx.http
                    .put(format!("{base}/admin/rate_limit"))
                    .bearer_auth(token)
                    .json(&json!({"rps": rps})),
                Duration::from_secs(5),
            )
            .await?;
            if (200..300).contains(&status) {
                Ok(Value::Null)
            } else {
                Err(format!("PUT /admin/rate_limit answered {status}"))
            }
        }
        "verify_recovery" => Ok(Value::Null),
        other_name => Err(format!("{other_name} cannot be executed")),
    }
}

pub(crate) async fn verify(
    name: &str,
    ctx: &Ctx,
    params: &Map<String, Value>,
    planned: &Planned,
    details: &Value,
) -> (Verification, Value) {
    let mut checks = Vec::new();
    let after: Value;
    match name {
        "restart_service" | "start_service" => {
            let service = s(params, "service");
            let (ok, seen) = ctx.wait_healthy(service, HEALTHY_LIMIT).await;
            checks.push(check(
                "service_healthy",
                ok,
                seen,
                format!("{service} running and healthy within 30 s"),
            ));
            after = service_before(ctx, service).await;
        }
        "stop_service" => {
            let service = s(params, "service");
            let (ok, seen) = ctx
                .wait_state(service, ServiceState::Stopped, HEALTHY_LIMIT)
                .await;
            checks.push(check(
                "service_stopped",
                ok,
                seen,
                format!("{service} stopped"),
            ));
            after = service_before(ctx, service).await;
        }
        "kill_db_sessions" => {
            let pids: Vec<i32> = serde_json::from_value(planned.data.clone()).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(5);
            let remaining = loop {
                let left = match ctx.admin_conn().await {
                    Ok(mut c) => {
                        let left: Vec<i32> = sqlx::query_scalar(
                            "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)",
                        )
                        .bind(&pids)
                        .fetch_all(&mut c)
                        .await
                        .unwrap_or_else(|_| pids.clone());
                        let _ = c.close().await;
                        left
                    }
                    Err(_) => pids.clone(),
                };
                if left.is_empty() || Instant::now() >= deadline {
                    break left;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            checks.push(check(
                "sessions_gone",
                remaining.is_empty(),
                format!(
                    "{} of {} still present {:?}",
                    remaining.len(),
                    pids.len(),
                    remaining
                ),
                "none of the matched sessions remains",
            ));
            let (ok, seen) = ctx.wait_ready(Duration::from_secs(15)).await;
            checks.push(check("target_ready", ok, seen, "/readyz 200 within 15 s"));
            after = json!({"terminated": details["terminated"], "remaining": remaining});
        }
        "rotate_db_credentials" => {
            let login = match ctx.secret(secret::PG_APP_PASSWORD) {
                Ok(pw) => ctx.app_login(&pw).await,
                Err(e) => Err(e),
            };
            checks.push(check(
                "app_login",
                login.is_ok(),
                login.clone().err().unwrap_or_else(|| {
                    "login as the app role with the new password succeeded".into()
                }),
                "login succeeds",
            ));
            let (ok, seen) = ctx.wait_ready(HEALTHY_LIMIT).await;
            checks.push(check("target_ready", ok, seen, "/readyz 200 within 30 s"));
            after = json!({"readyz": readyz_code(ctx).await});
        }
        "rotate_app_secret" => {
            let (ok, seen) = ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await;
            checks.push(check(
                "target_healthy",
                ok,
                seen,
                "target-app running and healthy",
            ));
            let status = ctx.recorded_token_status().await;
            let accepted = matches!(status, Ok(s) if s != 401 && s < 500);
            checks.push(check(
                "token_accepted",
                accepted,
                match &status {
                    Ok(s) => format!(
                        "GET /api/v1/orders/1 with a token signed by the recorded secret: {s}"
                    ),
                    Err(e) => e.clone(),
                },
                "not 401 (200, 403 or 404 are fine)",
            ));
            after = json!({"recorded_token_status": status.ok()});
        }
        "clear_cache" | "warm_cache" => {
            let stats = cache_stats(&ctx.state.cache_dir());
            let corrupt = stats["corrupt"].as_u64().unwrap_or(0);
            checks.push(check(
                "no_corrupt_entries",
                corrupt == 0,
                format!("{corrupt} corrupt of {} entries", stats["files"]),
                "0 corrupt entries",
            ));
            if name == "warm_cache" {
                let ids: Vec<i64> =
                    serde_json::from_value(details["ok_ids"].clone()).unwrap_or_default();
                let missing: Vec<i64> = ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        !ctx.state
                            .cache_dir()
                            .join(format!("product-{id}.json"))
                            .is_file()
                    })
                    .collect();
                checks.push(check(
                    "entries_exist",
                    !ids.is_empty() && missing.is_empty(),
                    format!(
                        "{} products read, {} cached, missing {:?}",
                        ids.len(),
                        ids.len() - missing.len(),
                        missing
                    ),
                    "every product read is cached",
                ));
            }
            let mut a = stats;
            a["result"] = details.clone();
            after = a;
        }
        "create_db_snapshot" => {
            let path = details["path"].as_str().unwrap_or_default().to_string();
            let listed = ctx
                .run_pg_tool("pg_restore", &["--list".into(), path.clone()])
                .await;
            let bytes = details["bytes"].as_u64().unwrap_or(0);
            checks.push(check(
                "snapshot_readable",
                listed.is_ok() && bytes > 0,
                match &listed {
                    Ok(_) => format!("{path}: {bytes} bytes, pg_restore --list ok"),
                    Err(e) => e.clone(),
                },
                "a readable dump",
            ));
            after = json!({"snapshots": list_snapshots(ctx).len(), "path": path, "bytes": bytes});
        }
        "list_db_snapshots" => {
            checks.push(check(
                "listed",
                true,
                format!(
                    "{} snapshots",
                    details["snapshots"].as_array().map(Vec::len).unwrap_or(0)
                ),
                "a list",
            ));
            after = details.clone();
        }
        "restore_db_snapshot" => {
            let (ok, seen) = ctx.wait_ready(HEALTHY_LIMIT).await;
            checks.push(check("target_ready", ok, seen, "/readyz 200 within 30 s"));
            after = json!({"readyz": readyz_code(ctx).await});
        }
        "run_migrations" => {
            let (ok, seen) = ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await;
            checks.push(check(
                "target_healthy",
                ok,
                seen,
                "target-app running and healthy",
            ));
            let st = migration_status(ctx).await;
            checks.push(check(
                "migrations_current",
                st["current"] == true,
                st.to_string(),
                "current: true",
            ));
            after = st;
        }
        "repair_migrations" => {
            let (ok, seen) = ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await;
            checks.push(check(
                "target_healthy",
                ok,
                seen,
                "target-app running and healthy",
            ));
            for path in ["/api/v1/products/1", "/api/v1/products?limit=5"] {
                let (ok, seen) = ctx
                    .wait_get(path, Duration::from_secs(15), |s| s == 200)
                    .await;
                checks.push(check(
                    &format!("GET {path}"),
                    ok,
                    seen,
                    "200 (no DB_SCHEMA_MISMATCH)",
                ));
            }
            let missing = match missing_schema(ctx).await {
                Ok((t, c)) => json!({"missing_tables": t, "missing_columns": c}),
                Err(e) => json!({"error": e}),
            };
            let none = missing["missing_tables"]
                .as_array()
                .is_some_and(Vec::is_empty)
                && missing["missing_columns"]
                    .as_array()
                    .is_some_and(Vec::is_empty);
            checks.push(check(
                "schema_matches_migrations",
                none,
                missing.to_string(),
                "nothing missing",
            ));
            after = missing;
        }
        "switch_upstream" => {
            let (ok, seen) = ctx
                .wait_get("/api/v1/products/1/price", HEALTHY_LIMIT, |s| s == 200)
                .await;
            checks.push(check(
                "price_ok",
                ok,
                seen,
                "GET /api/v1/products/1/price 200 within 30 s",
            ));
            after = json!({"upstream_mode": ctx.env().ok().and_then(|e| e.get("UPSTREAM_MODE").map(str::to_string))});
        }
        "set_config" => {
            let (ok, seen) = ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await;
            checks.push(check(
                "target_healthy",
                ok,
                seen,
                "target-app running and healthy within 30 s",
            ));
            let key = s(params, "key");
            after = json!({"key": key, "value": ctx.env().ok().and_then(|e| e.get(key).map(str::to_string)), "previous": details["previous"]});
        }
        "restore_config" => {
            let since: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(details["since"].clone())
                    .unwrap_or_else(|_| chrono::Utc::now());
            let (ok, seen) = ctx
                .wait_healthy(svc::TARGET_APP, Duration::from_secs(45))
                .await;
            checks.push(check(
                "target_healthy",
                ok,
                seen,
                "target-app running and healthy within 45 s",
            ));
            let st = ctx.service(svc::TARGET_APP).await;
            let bad_exit = st
                .as_ref()
                .ok()
                .and_then(|s| s.last_exit.clone())
                .filter(|e| e.at >= since && e.code == Some(78));
            checks.push(check(
                "no_config_invalid_exit",
                bad_exit.is_none(),
                bad_exit
                    .map(|e| format!("exited {} at {}", e.describe(), e.at))
                    .unwrap_or_else(|| "no exit 78 since the restore".into()),
                "no CONFIG_INVALID (78) exit",
            ));
            let (wok, wseen) = ctx.wait_healthy(svc::WORKER, Duration::from_secs(15)).await;
            checks.push(check("worker_healthy", wok, wseen, "worker running"));
            after = json!({"target_app": service_before(ctx, svc::TARGET_APP).await, "differing_keys": diff_keys(
                &ctx.env().unwrap_or_default(), &EnvFile::read(&ctx.state.env_last_known_good()).unwrap_or_default())});
        }
        "kill_process" => {
            let pid = planned.data["pid"].as_u64().unwrap_or(0) as u32;
            let deadline = Instant::now() + Duration::from_secs(5);
            while aiops_sandbox::procinfo::is_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let alive = aiops_sandbox::procinfo::is_alive(pid);
            checks.push(check(
                "process_gone",
                !alive,
                if alive {
                    format!("pid {pid} still alive")
                } else {
                    format!("pid {pid} gone")
                },
                "gone within 5 s",
            ));
            after = json!({"pid": pid, "alive": alive});
        }
        "free_disk" => {
            let (work, bytes) = disk_work(ctx);
            let big: Vec<String> = work
                .iter()
                .filter_map(|w| match w {
                    DiskWork::Truncate { path, .. } => Some(path.display().to_string()),
                    _ => None,
                })
                .collect();
            checks.push(check(
                "no_big_logs",
                big.is_empty(),
                format!("{} log files over 10 MiB", big.len()),
                "none over 10 MiB",
            ));
            for dir in [ctx.state.logs_dir(), ctx.state.cache_dir(), ctx.tmp_dir()] {
                if let Ok(st) = nix::sys::statvfs::statvfs(&dir) {
                    let total = st.blocks() as f64;
                    let free = st.blocks_available() as f64;
                    let pct = if total > 0.0 {
                        100.0 * free / total
                    } else {
                        100.0
                    };
                    checks.push(check(
                        &format!(
                            "free_space_{}",
                            dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir")
                        ),
                        pct >= 10.0,
                        format!("{pct:.1} % free on the file system of {}", dir.display()),
                        ">= 10 % free",
                    ));
                }
            }
            after = json!({"bytes": bytes, "bytes_freed": details["bytes_freed"]});
        }
        "throttle_traffic" => {
            let rps = params.get("rps").and_then(Value::as_i64).unwrap_or(0);
            let got = get_rate_limit(ctx).await;
            let ok = matches!(&got, Ok(v) if v["rps"].as_i64() == Some(rps));
            checks.push(check(
                "rate_limit_set",
                ok,
                format!("{got:?}"),
                format!("rps {rps}"),
            ));
            after = json!({"rate_limit": got.ok()});
        }
        "verify_recovery" => {
            let (c, a) = crate::recovery::verify_recovery(ctx, params).await;
            checks = c;
            after = a;
        }
        _ => after = Value::Null,
    }
    (Verification::of(checks), after)
}

// ---- helpers ----

async fn readyz_code(ctx: &Ctx) -> Value {
    match ctx.get("/readyz", Duration::from_secs(5)).await {
        Ok((s, _)) => json!(s),
        Err(e) => json!(e),
    }
}

async fn migration_status(ctx: &Ctx) -> Value {
    match ctx
        .get("/api/v1/migrations/status", Duration::from_secs(5))
        .await
    {
        Ok((200, b)) => {
            json!({"current": b["current"], "pending": b["pending"].as_array().map(Vec::len),
                                "failed": b["failed"], "checksum_mismatch": b["checksum_mismatch"]})
        }
        Ok((s, b)) => json!({"status": s, "error": b["error"]["code"]}),
        Err(e) => json!({"error": e}),
    }
}

async fn get_rate_limit(ctx: &Ctx) -> R<Value> {
    let (base, token) = ctx.target_admin()?;
    let (status, body) = crate::ctx::send(
        ctx.http
            .get(format!("{base}/admin/rate_limit"))
            .bearer_auth(token),
        Duration::from_secs(5),
    )
    .await?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("GET /admin/rate_limit answered {status}"))
    }
}

fn append_line(path: &Path, v: &Value) -> R<()> {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    f.write_all(format!("{v}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    f.sync_data().map_err(|e| e.to_string())
}

fn diff_keys(a: &EnvFile, b: &EnvFile) -> Vec<String> {
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .map(|(k, _)| k.to_string())
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

/// The same ranges as the target's own validation (docs/target-app.md).
fn validate_config(key: &str, value: &str, env: &EnvFile) -> Result<(), String> {
    let int = |min: i64, max: i64| -> Result<(), String> {
        match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(format!(
                "{key}={value} is invalid; allowed: an integer {min}–{max}"
            )),
        }
    };
    match key {
        "POOL_SIZE" => {
            int(1, 200)?;
            let min_idle: i64 = env
                .get("POOL_MIN_IDLE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            if value.trim().parse::<i64>().unwrap_or(0) < min_idle {
                return Err(format!(
                    "POOL_SIZE={value} is below POOL_MIN_IDLE={min_idle}; lower POOL_MIN_IDLE first"
                ));
            }
            Ok(())
        }
        "POOL_MIN_IDLE" => {
            let size: i64 = env
                .get("POOL_SIZE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10);
            int(0, size)
        }
        "POOL_ACQUIRE_TIMEOUT_MS" => int(50, 60_000),
        "POOL_IDLE_TIMEOUT_S" => int(1, 86_400),
        "DB_STATEMENT_TIMEOUT_MS" => int(0, 600_000),
        "UPSTREAM_TIMEOUT_MS" => int(10, 60_000),
        "RATE_LIMIT_RPS" => int(0, 100_000),
        "LOG_LEVEL" => {
            if ["trace", "debug", "info", "warn", "error"].contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "LOG_LEVEL={value} is invalid; allowed: trace, debug, info, warn, error"
                ))
            }
        }
        _ => Err(format!(
            "{key} is not a key set_config may change; allowed: {}",
            CONFIG_KEYS.join(", ")
        )),
    }
}

fn snapshot_path(ctx: &Ctx, name: &str) -> Result<PathBuf, PlanError> {
    if name.contains('/') || name.contains("..") || name.contains('\\') {
        return Err(PlanError::Err(RemediationError::OutsideSandbox(format!(
            "snapshot name `{name}` would leave {}; use [a-z0-9_-]{{1,64}}",
            ctx.snapshots_dir().display()
        ))));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err(invalid(
            "snapshot",
            format!("`{name}` is not a valid snapshot name; allowed: [a-z0-9_-]{{1,64}}"),
        ));
    }
    let path = ctx.snapshots_dir().join(format!("{name}.dump"));
    // A symlink planted in snapshots/ would make pg_restore read, or the rename replace,
    // something outside it; the partial file pg_dump writes through is checked too.
    for p in [
        path.clone(),
        ctx.snapshots_dir().join(format!(".{name}.dump.partial")),
    ] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(PlanError::Err(RemediationError::OutsideSandbox(format!(
                "{} is a symlink; snapshots are regular files inside {}",
                p.display(),
                ctx.snapshots_dir().display()
            ))));
        }
    }
    Ok(path)
}

fn list_snapshots(ctx: &Ctx) -> Vec<Value> {
    let mut out: Vec<Value> = std::fs::read_dir(ctx.snapshots_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let path = e.path();
                    let name = path
                        .file_name()?
                        .to_str()?
                        .strip_suffix(".dump")?
                        .to_string();
                    if name.starts_with('.') {
                        return None;
                    }
                    let m = e.metadata().ok()?;
                    let at: chrono::DateTime<chrono::Utc> = m.modified().ok()?.into();
                    Some(json!({"name": name, "bytes": m.len(), "created_at": at}))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    out
}

/// Regular files directly in the cache dir, and symlinks that point outside it.
fn cache_files(dir: &Path) -> R<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut outside = Vec::new();
    let canon_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((files, outside)),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for e in rd.flatten() {
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.file_type().is_symlink() {
            let inside = path
                .canonicalize()
                .map(|t| t.starts_with(&canon_dir))
                .unwrap_or(false);
            if !inside {
                outside.push(path);
            }
        } else if m.file_type().is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok((files, outside))
}

fn cache_stats(dir: &Path) -> Value {
    let (files, _) = cache_files(dir).unwrap_or_default();
    let mut bytes = 0;
    let mut corrupt = 0;
    for f in &files {
        let content = std::fs::read(f).unwrap_or_default();
        bytes += content.len() as u64;
        if serde_json::from_slice::<Value>(&content).is_err() {
            corrupt += 1;
        }
    }
    json!({"files": files.len(), "bytes": bytes, "corrupt": corrupt})
}

enum DiskWork {
    Truncate { path: PathBuf, size: u64 },
    Delete { path: PathBuf, size: u64 },
}

const BIG_LOG: u64 = 10 * 1024 * 1024;
const KEEP_LOG: u64 = 1024 * 1024;

impl DiskWork {
    fn describe(&self) -> String {
        match self {
            Self::Truncate { path, size } => format!(
                "truncate {} ({size} bytes) to its last 1 MiB",
                path.display()
            ),
            Self::Delete { path, size } => format!("delete {} ({size} bytes)", path.display()),
        }
    }
    fn apply(&self, ctx: &Ctx) -> R<u64> {
        match self {
            Self::Truncate { path, size } => {
                use std::io::{Read, Seek, SeekFrom, Write};
                if path.parent() != Some(ctx.state.logs_dir().as_path()) {
                    return Ok(0);
                }
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| e.to_string())?;
                let len = f.metadata().map_err(|e| e.to_string())?.len();
                let mut tail = Vec::new();
                f.seek(SeekFrom::Start(len.saturating_sub(KEEP_LOG)))
                    .map_err(|e| e.to_string())?;
                (&mut f)
                    .take(KEEP_LOG)
                    .read_to_end(&mut tail)
                    .map_err(|e| e.to_string())?;
                // Start at a line boundary.
                let start = tail
                    .iter()
                    .position(|b| *b == b'\n')
                    .map(|i| i + 1)
                    .unwrap_or(0);
                f.set_len(0).map_err(|e| e.to_string())?;
                f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
                f.write_all(&tail[start..]).map_err(|e| e.to_string())?;
                Ok(size.saturating_sub((tail.len() - start) as u64))
            }
            Self::Delete { path, size } => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let cache_leftover = path.parent() == Some(ctx.state.cache_dir().as_path())
                    && (name.ends_with(".tmp") || name.starts_with('.'));
                let inside = path.parent() == Some(ctx.state.logs_dir().as_path())
                    || path.parent() == Some(ctx.tmp_dir().as_path())
                    || cache_leftover;
                if !inside {
                    return Ok(0);
                }
                std::fs::remove_file(path)
                    .map(|_| *size)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// What free_disk would do, and the bytes used by logs/ and tmp/ now.
fn disk_work(ctx: &Ctx) -> (Vec<DiskWork>, u64) {
    let mut work = Vec::new();
    let mut total = 0;
    let cache = ctx.state.cache_dir();
    for (dir, is_tmp) in [
        (ctx.state.logs_dir(), false),
        (ctx.tmp_dir(), true),
        (cache.clone(), false),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            // symlink_metadata: never follow a link out of the state dir.
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !m.file_type().is_file() {
                continue;
            }
            total += m.len();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if dir == cache {
                // Only leftovers: cache entries are product-{id}.json and stay.
                if name.ends_with(".tmp") || name.starts_with('.') {
                    work.push(DiskWork::Delete {
                        path,
                        size: m.len(),
                    });
                }
                continue;
            }
            let rotated = name.ends_with(".gz")
                || name.ends_with(".old")
                || name
                    .rsplit_once(".log.")
                    .is_some_and(|(_, n)| n.chars().all(|c| c.is_ascii_digit()));
            if is_tmp || rotated {
                work.push(DiskWork::Delete {
                    path,
                    size: m.len(),
                });
            } else if m.len() > BIG_LOG {
                work.push(DiskWork::Truncate {
                    path,
                    size: m.len(),
                });
            }
        }
    }
    (work, total)
}

async fn plan_kill_sessions(ctx: &Ctx, params: &Map<String, Value>) -> Result<Planned, PlanError> {
    let app = params
        .get("application_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let pid = params.get("pid").and_then(Value::as_i64).map(|p| p as i32);
    let idle = params
        .get("idle_in_transaction_longer_than_s")
        .and_then(Value::as_i64)
        .map(|n| n as f64);
    let blocking = params
        .get("blocking_others")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let foreign = params
        .get("foreign_only")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if app.is_none() && pid.is_none() && idle.is_none() && !blocking {
        return Err(invalid(
            "application_name",
            "at least one filter is required: application_name, pid, idle_in_transaction_longer_than_s or blocking_others (foreign_only only narrows)",
        ));
    }
    let mut admin = ctx.admin_conn().await.map_err(other)?;
    let db = &ctx.topology.database;
    // Every filter is a bound parameter; NULL means "not filtered".
    let rows = sqlx::query(
        "SELECT a.pid, coalesce(a.application_name, '') AS app, coalesce(a.usename::text, '') AS usr, \
                coalesce(a.state, '') AS state, left(coalesce(a.query, ''), 200) AS query, \
                coalesce(extract(epoch FROM now() - a.state_change), 0)::float8 AS state_age_s \
         FROM pg_stat_activity a \
         WHERE a.datname = $1 AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() \
           AND a.usename IS DISTINCT FROM $2 AND a.application_name IS DISTINCT FROM $3 \
           AND ($4::text IS NULL OR a.application_name = $4) \
           AND ($5::int IS NULL OR a.pid = $5) \
           AND ($6::float8 IS NULL OR (a.state = 'idle in transaction' AND now() - a.state_change > make_interval(secs => $6))) \
           AND (NOT $7 OR (cardinality(pg_blocking_pids(a.pid)) = 0 AND EXISTS ( \
                 SELECT 1 FROM pg_stat_activity b WHERE a.pid = ANY (pg_blocking_pids(b.pid))))) \
           AND (NOT $8 OR NOT (coalesce(a.application_name, '') = ANY ($9) \
                 OR a.application_name LIKE 'aiops%')) \
         ORDER BY a.pid",
    )
    .bind(&db.database)
    .bind(&db.admin_user)
    .bind(OWN_APP)
    .bind(&app)
    .bind(pid)
    .bind(idle)
    .bind(blocking)
    .bind(foreign)
    .bind(OWN_APPS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    .fetch_all(&mut admin)
    .await
    .map_err(|e| other(format!("list sessions: {}", pg_error(&e))))?;
    let _ = admin.close().await;
    let sessions: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "pid": r.get::<i32, _>("pid"), "application_name": r.get::<String, _>("app"),
                "user": r.get::<String, _>("usr"), "state": r.get::<String, _>("state"),
                "state_age_s": (r.get::<f64, _>("state_age_s") * 10.0).round() / 10.0,
                "query": redact_query(&r.get::<String, _>("query")),
            })
        })
        .collect();
    let pids: Vec<i32> = rows.iter().map(|r| r.get::<i32, _>("pid")).collect();
    let mut steps: Vec<String> = sessions
        .iter()
        .map(|s| {
            format!(
                "pg_terminate_backend({}) — {} as {}, {} for {} s: {}",
                s["pid"],
                s["application_name"].as_str().unwrap_or(""),
                s["user"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["state_age_s"],
                s["query"].as_str().unwrap_or("")
            )
        })
        .collect();
    if steps.is_empty() {
        steps.push("no session matches: nothing to terminate".into());
    }
    steps.push("verify: none of them remains; /readyz 200 within 15 s".into());
    Ok(planned(
        format!("{} session(s) of database {}", pids.len(), db.database),
        steps,
        "the matched sessions are gone and release their connections and locks",
        if pids.is_empty() { "low" } else { "medium" },
        json!({"matching_sessions": sessions}),
        json!(pids),
    ))
}

/// A session's query text, unless it could carry a credential.
fn redact_query(q: &str) -> String {
    let l = q.to_ascii_lowercase();
    if ["password", "secret", "token"]
        .iter()
        .any(|w| l.contains(w))
    {
        "<query text withheld: it mentions a credential>".into()
    } else {
        q.to_string()
    }
}

/// Tables and columns the migrations define, with their DDL.
/// One table of the migrations: name, its `CREATE TABLE IF NOT EXISTS` statement, and
/// its columns as (name, definition).
type TableDef = (String, String, Vec<(String, String)>);

struct Expected {
    tables: Vec<TableDef>,
    indexes: Vec<String>,
}

fn expected_schema() -> Expected {
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for (_, sql) in MIGRATION_SQL {
        let mut lines = sql.lines().peekable();
        while let Some(line) = lines.next() {
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("CREATE TABLE ") {
                let name = rest.trim_end_matches('(').trim().to_string();
                let mut ddl = format!("CREATE TABLE IF NOT EXISTS {name} (\n");
                let mut cols = Vec::new();
                for l in lines.by_ref() {
                    let lt = l.trim();
                    if lt.starts_with(");") {
                        ddl.push_str(");");
                        break;
                    }
                    ddl.push_str(l);
                    ddl.push('\n');
                    let def = lt.trim_end_matches(',');
                    let first = def.split_whitespace().next().unwrap_or_default();
                    let is_constraint =
                        ["PRIMARY", "CONSTRAINT", "UNIQUE", "CHECK", "FOREIGN"].contains(&first);
                    if !first.is_empty() && !is_constraint && !first.starts_with("--") {
                        cols.push((first.to_string(), def.to_string()));
                    }
                }
                tables.push((name, ddl, cols));
            } else if t.starts_with("CREATE INDEX ") {
                indexes.push(t.replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1));
            }
        }
    }
    Expected { tables, indexes }
}

/// Missing tables, and missing columns as (table, column, definition).
async fn missing_schema(ctx: &Ctx) -> R<(Vec<String>, Vec<(String, String, String)>)> {
    let exp = expected_schema();
    let mut admin = ctx.admin_conn().await?;
    let live: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns WHERE table_schema = 'public'",
    )
    .fetch_all(&mut admin)
    .await
    .map_err(|e| pg_error(&e))?;
    let _ = admin.close().await;
    let mut tables = Vec::new();
    let mut cols = Vec::new();
    for (t, _, c) in &exp.tables {
        if !live.iter().any(|(lt, _)| lt == t) {
            tables.push(t.clone());
            continue;
        }
        for (name, def) in c {
            if !live.iter().any(|(lt, lc)| lt == t && lc == name) {
                cols.push((t.clone(), name.clone(), def.clone()));
            }
        }
    }
    Ok((tables, cols))
}

async fn plan_repair(ctx: &Ctx) -> Result<Planned, PlanError> {
    let exp = expected_schema();
    let (tables, cols) = missing_schema(ctx).await.map_err(other)?;
    let mut admin = ctx.admin_conn().await.map_err(other)?;
    let mut stmts = Vec::new();
    for t in &tables {
        if let Some((_, ddl, _)) = exp.tables.iter().find(|(n, _, _)| n == t) {
            stmts.push(ddl.clone());
        }
    }
    let mut restores = Vec::new();
    for (t, c, def) in &cols {
        check_identifier(t).map_err(|e| other(e.to_string()))?;
        check_identifier(c).map_err(|e| other(e.to_string()))?;
        stmts.push(format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {def}"));
        let backup = format!("aiops_chaos_backup_{t}_{c}");
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name = $1 AND column_name = $2) AND EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 AND column_name = 'id')",
        )
        .bind(&backup)
        .bind(c)
        .fetch_one(&mut admin)
        .await
        .map_err(|e| other(pg_error(&e)))?;
        if exists && check_identifier(&backup).is_ok() {
            stmts.push(format!(
                "UPDATE {t} AS x SET {c} = b.{c} FROM {backup} AS b WHERE x.id = b.id"
            ));
            restores.push(backup);
        }
    }
    if !stmts.is_empty() {
        stmts.extend(exp.indexes.iter().cloned());
    }
    let _ = admin.close().await;
    let mut steps: Vec<String> = if stmts.is_empty() {
        vec!["the schema already has every table and column the migrations define: nothing to re-create".into()]
    } else {
        vec![format!(
            "as admin, in one transaction: {}",
            stmts.join("; ")
        )]
    };
    if !restores.is_empty() {
        steps.push(format!(
            "data restored from {} (left in place)",
            restores.join(", ")
        ));
    }
    steps.push("restart target-app (drops statements prepared against the broken schema)".into());
    steps.push("verify: GET /api/v1/products/1 and /api/v1/products?limit=5 answer 200".into());
    Ok(planned(
        "schema of database shop",
        steps,
        "the schema matches the migration record again: DB_SCHEMA_MISMATCH stops",
        "medium",
        json!({"missing_tables": tables, "missing_columns": cols.iter().map(|(t, c, _)| format!("{t}.{c}")).collect::<Vec<_>>(), "backup_tables": restores}),
        json!({"statements": stmts}),
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_destructive_action_says_what_it_changes() {
        let service = serde_json::json!({"service": "worker"});
        for d in DEFS.iter().filter(|d| d.destructive) {
            assert!(
                component_changed(d.name, &service).is_some(),
                "{} is destructive but component_changed does not name what it changes",
                d.name
            );
        }
    }

    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        let all = catalogue();
        assert_eq!(all.len(), DEFS.len());
        for a in &all {
            assert_eq!(a.params_schema["additionalProperties"], false, "{}", a.name);
            assert!(a.description.len() > 60, "{}", a.name);
        }
        assert_eq!(
            all.iter()
                .find(|a| a.name == "restore_db_snapshot")
                .unwrap()
                .default_policy,
            "approve"
        );
    }

    #[test]
    fn migrations_are_parsed() {
        let e = expected_schema();
        let products = e.tables.iter().find(|(n, _, _)| n == "products").unwrap();
        let desc = products.2.iter().find(|(c, _)| c == "description").unwrap();
        assert_eq!(desc.1, "description  TEXT NOT NULL DEFAULT ''");
        assert!(!products.2.iter().any(|(c, _)| c == "PRIMARY"));
        assert_eq!(e.tables.len(), 5);
        assert!(e.indexes.iter().all(|i| i.contains("IF NOT EXISTS")));
        let order_items = e
            .tables
            .iter()
            .find(|(n, _, _)| n == "order_items")
            .unwrap();
        assert_eq!(order_items.2.len(), 4);
    }

    #[test]
    fn config_validation_uses_target_ranges() {
        let env = EnvFile::parse("POOL_SIZE=10\nPOOL_MIN_IDLE=1\n");
        assert!(validate_config("POOL_SIZE", "20", &env).is_ok());
        assert!(validate_config("POOL_SIZE", "0", &env).is_err());
        assert!(validate_config("POOL_SIZE", "abc", &env).is_err());
        assert!(validate_config("POOL_MIN_IDLE", "11", &env).is_err());
        assert!(validate_config("LOG_LEVEL", "loud", &env).is_err());
        assert!(validate_config("DATABASE_URL", "x", &env).is_err());
    }
}
