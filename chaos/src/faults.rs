//! The fault catalogue. Every fault has the same shape:
//!
//! - `prepare`: read-only; returns the plan (exactly what inject will do) and the undo
//!   data that the ledger stores *before* anything changes;
//! - `apply`: makes the fault real;
//! - `verify`: polls (≤ 15 s) the signals observation tools read — the target's HTTP
//!   answers and error codes, its JSON log, `pg_stat_activity`/`pg_locks`, service states;
//! - `revert`: idempotent, needs only the params, the undo data and (for faults holding
//!   database sessions) the sessions if this process still has them; it cleans up by
//!   `application_name` otherwise, so it also works from a fresh daemon after a SIGKILL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::postgres::{check_identifier, quote_literal};
use aiops_sandbox::runtime::ServiceState;
use aiops_sandbox::topology::names as svc;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::ctx::{Ctx, R, poll};
use crate::params::{ParamSpec, Params, boolean, int, one_of, string};
use crate::{EffectCheck, GroundTruth};

const VERIFY_LIMIT: Duration = Duration::from_secs(15);
const HEALTHY_LIMIT: Duration = Duration::from_secs(45);

// Realistic application names: an agent under test must find the cause from what the
// sessions do, not from a name that says "chaos".
/// `application_name` of the sessions faults hold; reverts terminate by these names.
pub(crate) const POOL_HOG_APP: &str = "report-export";
pub(crate) const LOCKER_APP: &str = "maintenance-reindex";
pub(crate) const LONG_TX_APP: &str = "billing-sync";
/// Where `failed_migration` keeps the dropped column's data until the revert.
pub(crate) const MIGRATION_BACKUP_TABLE: &str = "aiops_chaos_backup_products_description";
/// The version `failed_migration` (mode future_version) records: far beyond any real one.
const FUTURE_MIGRATION_VERSION: i64 = 99_991_231_000_000;

/// Keys `config_corruption` may break: all validated by the target at start.
const CORRUPTIBLE_KEYS: &[&str] = &[
    "POOL_SIZE",
    "POOL_MIN_IDLE",
    "POOL_ACQUIRE_TIMEOUT_MS",
    "POOL_IDLE_TIMEOUT_S",
    "DB_STATEMENT_TIMEOUT_MS",
    "UPSTREAM_MODE",
    "UPSTREAM_TIMEOUT_MS",
    "LOG_LEVEL",
    "RATE_LIMIT_RPS",
    "DATABASE_URL",
    "JWT_SECRET",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PoolExhaustion,
    AuthFailure,
    DbDown,
    LockContention,
    LongTransaction,
    ApiDown,
    Latency,
    HighCpu,
    UpstreamOutage,
    CachePoisoning,
    ConfigCorruption,
    JwtRotation,
    LogStorm,
    CrashLoop,
    FailedMigration,
    MemoryLeak,
    DiskFull,
    RateLimit,
}

pub(crate) const ALL: &[Kind] = &[
    Kind::PoolExhaustion,
    Kind::AuthFailure,
    Kind::DbDown,
    Kind::LockContention,
    Kind::LongTransaction,
    Kind::ApiDown,
    Kind::Latency,
    Kind::HighCpu,
    Kind::UpstreamOutage,
    Kind::CachePoisoning,
    Kind::ConfigCorruption,
    Kind::JwtRotation,
    Kind::LogStorm,
    Kind::CrashLoop,
    Kind::FailedMigration,
    Kind::MemoryLeak,
    Kind::DiskFull,
    Kind::RateLimit,
];

/// The shop's tables (`lock_contention` and `long_transaction` may lock one).
const SHOP_TABLES: &[&str] = &["products", "users", "orders", "order_items", "jobs"];
/// Tables with an integer `id` primary key (row locks by id).
const ID_TABLES: &[&str] = &["products", "users", "orders", "order_items", "jobs"];

/// The file that fills the cache volume: looks like junk a crashed export left behind.
const DISK_FILLER: &str = ".export-spool.tmp";

/// Is the fault's volume (a tmpfs named `aiops-cache`) the topmost mount at `path`? On
/// the Docker runtime the cache dir is itself a (shared) bind mount, so "a mount point"
/// is not enough.
fn has_fault_volume(path: &std::path::Path) -> bool {
    aiops_sandbox::procinfo::mounts()
        .into_iter()
        .rfind(|(point, _, _)| point == path)
        .is_some_and(|(_, fstype, source)| fstype == "tmpfs" && source == "aiops-cache")
}

pub(crate) struct Spec {
    pub id: &'static str,
    pub target: &'static str,
    pub component: &'static str,
    pub description: &'static str,
    pub ttl_s: u64,
    pub params: &'static [ParamSpec],
    /// Faults of one group act on the same thing (the target's `.env` and process) and
    /// cannot be active together: each revert would undo the other.
    pub group: Option<&'static str>,
}

const TARGET_LIFECYCLE: Option<&str> = Some("target-app process and .env");

impl Kind {
    pub fn from_id(id: &str) -> Option<Self> {
        ALL.iter().copied().find(|k| k.spec().id == id)
    }

    pub fn spec(self) -> Spec {
        use Kind::*;
        match self {
            PoolExhaustion => Spec {
                id: "db_pool_exhaustion",
                target: svc::POSTGRES,
                component: "postgres",
                description: "Opens `connections` sessions as the app role (application_name \
                    report-export) that sit idle in transaction, lowers the role's \
                    CONNECTION LIMIT to that number so they hold every slot, and terminates the \
                    target's own sessions: the target's pool cannot open a connection, requests \
                    and /readyz fail (DB_UNAVAILABLE / DB_POOL_TIMEOUT). Revert: close and \
                    terminate those sessions, restore the role's limit.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[
                        int(
                            "connections",
                            "Sessions to hold (the role's connection limit while the fault lasts).",
                            1,
                            90,
                            40,
                        ),
                        boolean(
                            "terminate_sessions",
                            "Also terminate the target's existing sessions so the effect shows at once.",
                            true,
                        ),
                    ];
                    P
                },
                group: None,
            },
            AuthFailure => Spec {
                id: "db_auth_failure",
                target: svc::POSTGRES,
                component: "postgres",
                description: "Changes the app role's password in PostgreSQL (ALTER ROLE) to a random \
                    value the target does not know: new connections fail with DB_AUTH_FAILED, \
                    /readyz 503. With terminate_sessions the target's pooled sessions are \
                    terminated so the effect shows at once. Revert: set the password back to \
                    the sandbox's secret.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[boolean(
                        "terminate_sessions",
                        "Terminate the app role's existing sessions (target and worker).",
                        true,
                    )];
                    P
                },
                group: None,
            },
            DbDown => Spec {
                id: "db_down",
                target: svc::POSTGRES,
                component: "postgres",
                description: "Stops the PostgreSQL service through the supervisor (no automatic \
                    restart): every database use fails with DB_UNAVAILABLE, /readyz 503. Revert: \
                    start it and wait until it accepts connections.",
                ttl_s: 300,
                params: &[],
                group: None,
            },
            LockContention => Spec {
                id: "lock_contention",
                target: svc::POSTGRES,
                component: "postgres",
                description: "A session of the app role (application_name maintenance-reindex) \
                    takes LOCK TABLE `table` (products by default) IN ACCESS EXCLUSIVE MODE \
                    inside an open transaction: queries on it wait and fail with DB_TIMEOUT \
                    after the statement timeout; pg_locks shows the waiters. Revert: roll \
                    back and terminate that session.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[one_of(
                        "table",
                        "The table to lock.",
                        SHOP_TABLES,
                        "products",
                    )];
                    P
                },
                group: None,
            },
            LongTransaction => Spec {
                id: "long_transaction",
                target: svc::POSTGRES,
                component: "postgres",
                description: "A session of the app role (application_name billing-sync) \
                    locks rows 1..=rows of `table` (products by default) FOR UPDATE and stays \
                    idle in transaction: orders for those products wait and fail with \
                    DB_TIMEOUT; reads still work. With advisory_lock_id > 0 it holds that \
                    transaction-level advisory lock instead of row locks (seen in pg_locks; \
                    it blocks only sessions asking for the same lock). Revert: roll back and \
                    terminate that session.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[
                        int("rows", "Rows with id 1..=rows are locked.", 1, 50, 10),
                        one_of(
                            "table",
                            "The table whose rows are locked.",
                            ID_TABLES,
                            "products",
                        ),
                        int(
                            "advisory_lock_id",
                            "When > 0: hold pg_advisory_xact_lock(advisory_lock_id) instead of row locks.",
                            0,
                            2_147_483_647,
                            0,
                        ),
                    ];
                    P
                },
                group: None,
            },
            ApiDown => Spec {
                id: "api_down",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "mode stop (default): stops the target-app process through the \
                    supervisor (SIGTERM to its process group, SIGKILL after the grace period); \
                    a stop on request is never restarted, so the API refuses connections \
                    until started again. mode kill: SIGKILL to the process, a crash the \
                    supervisor restarts (with backoff). Revert: start it if it is not \
                    running and wait until healthy.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[one_of(
                        "mode",
                        "stop (stays down) or kill (SIGKILL; the supervisor restarts it).",
                        &["stop", "kill"],
                        "stop",
                    )];
                    P
                },
                group: TARGET_LIFECYCLE,
            },
            Latency => Spec {
                id: "latency",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "Sets the target's admin failpoint http.latency = delay(delay_ms): \
                    every /api/v1 request takes that much longer (health probes are not \
                    delayed). Revert: remove the failpoint.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[int(
                        "delay_ms",
                        "Added latency per /api/v1 request.",
                        2000,
                        10000,
                        3000,
                    )];
                    P
                },
                group: None,
            },
            HighCpu => Spec {
                id: "high_cpu",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "Sets the target's failpoint process.cpu_spin = spin(threads): that \
                    many OS threads busy-loop in the target process (CPU ≈ threads × 100 %). \
                    Revert: remove the failpoint.",
                ttl_s: 120,
                params: {
                    const P: &[ParamSpec] = &[int(
                        "threads",
                        "Busy-looping threads (more than the cores, so the burn shows even on a busy machine).",
                        1,
                        8,
                        4,
                    )];
                    P
                },
                group: None,
            },
            UpstreamOutage => Spec {
                id: "upstream_outage",
                target: svc::UPSTREAM_PRIMARY,
                component: "upstream-primary",
                description: "Breaks the primary pricing upstream through its admin failpoints: \
                    mode error = every /v1 request answered 503 (upstream.status), mode hang = \
                    requests never answered (upstream.hang). Price lookups fail with \
                    UPSTREAM_UNAVAILABLE (502) unless the target falls back. Its /healthz is \
                    unaffected. Revert: remove the failpoint.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[one_of(
                        "mode",
                        "error: 503 answers; hang: no answer.",
                        &["error", "hang"],
                        "error",
                    )];
                    P
                },
                group: None,
            },
            CachePoisoning => Spec {
                id: "cache_poisoning",
                target: svc::TARGET_APP,
                component: "cache",
                description: "Overwrites the product cache files product-1.json..product-N.json \
                    in the state dir's cache/ with invalid JSON (originals saved in the \
                    ledger): reads of those products answer 500 CACHE_CORRUPT. Revert: restore \
                    the original files (or remove those that did not exist).",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[int(
                        "entries",
                        "Products 1..=entries are poisoned.",
                        1,
                        50,
                        10,
                    )];
                    P
                },
                group: None,
            },
            ConfigCorruption => Spec {
                id: "config_corruption",
                target: svc::TARGET_APP,
                component: "config",
                description: "Writes an invalid value for `key` into the target's .env (mode \
                    invalid, the default) or removes the key (mode missing); the original \
                    file is saved in the ledger. Then restarts the target: with an invalid \
                    value or a missing required key it exits 78 with CONFIG_INVALID at every \
                    start and crash-loops until the supervisor gives up (state failed); a \
                    missing optional key falls back to its default. Revert: write the saved \
                    .env back, restart, wait until healthy.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[
                        one_of(
                            "key",
                            "The .env key to corrupt.",
                            CORRUPTIBLE_KEYS,
                            "POOL_SIZE",
                        ),
                        string("value", "The invalid value written.", "not-a-number", 200),
                        one_of(
                            "mode",
                            "invalid (write `value`) or missing (remove the key).",
                            &["invalid", "missing"],
                            "invalid",
                        ),
                    ];
                    P
                },
                group: TARGET_LIFECYCLE,
            },
            JwtRotation => Spec {
                id: "jwt_secret_rotation",
                target: svc::TARGET_APP,
                component: "config",
                description: "Replaces JWT_SECRET in the target's .env with a random value and \
                    restarts the target: tokens clients hold (signed with the old secret) are \
                    rejected with 401 AUTH_INVALID_TOKEN. Revert: restore the .env, restart, \
                    wait until healthy.",
                ttl_s: 300,
                params: &[],
                group: TARGET_LIFECYCLE,
            },
            LogStorm => Spec {
                id: "log_storm",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "Sets the target's failpoint log.storm = storm(lines_per_s): ERROR \
                    lines with stack traces (INTERNAL_PANIC_REPORTED) flood its log. Noise, \
                    not a cause of failure. Revert: remove the failpoint.",
                ttl_s: 120,
                params: {
                    const P: &[ParamSpec] =
                        &[int("lines_per_s", "Log lines per second.", 1, 5000, 200)];
                    P
                },
                group: None,
            },
            CrashLoop => Spec {
                id: "crash_loop",
                target: svc::TARGET_APP,
                component: "config",
                description: "Points LISTEN_ADDR in the target's .env at a port already in use \
                    (PostgreSQL's) and restarts the target: it exits 1 (FATAL, address in use) \
                    at every start, the supervisor (on Docker, the container's restart \
                    policy) restarts it with backoff and marks it failed after 5 restarts. Revert: restore the .env, start it, wait \
                    until healthy.",
                ttl_s: 300,
                params: &[],
                group: TARGET_LIFECYCLE,
            },
            FailedMigration => Spec {
                id: "failed_migration",
                target: svc::POSTGRES,
                component: "postgres",
                description: "Makes the schema and the migration record disagree. mode \
                    drop_column (default): as admin, copies products.description to a backup \
                    table and drops the column while _sqlx_migrations still records every \
                    migration as applied: product listings and uncached reads fail with 500 \
                    DB_SCHEMA_MISMATCH. mode future_version: records a migration version the \
                    code does not know (database ahead of code); missing_version: deletes the \
                    newest applied migration's record (the code sees it pending); \
                    checksum_mismatch: changes that record's checksum (as if the migration \
                    was edited after it ran). The last three make /readyz 503 (migrations not \
                    current) and /api/v1/migrations/status show the drift. Revert: undo the \
                    change from the saved rows and data.",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[one_of(
                        "mode",
                        "What disagrees: drop_column, future_version, missing_version or checksum_mismatch.",
                        &[
                            "drop_column",
                            "future_version",
                            "missing_version",
                            "checksum_mismatch",
                        ],
                        "drop_column",
                    )];
                    P
                },
                group: Some("the schema and its migration record"),
            },
            MemoryLeak => Spec {
                id: "memory_leak",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "Sets the target's failpoint process.memory_grow = grow(mb_per_s): \
                    the process allocates and touches that much memory every second (capped \
                    at 8 GiB by the target). The leak is real. On the process runtime nothing \
                    stops it (no memory limit); on the Docker runtime the kernel OOM-kills the \
                    container at its memory limit and the restart policy restarts it. Revert: \
                    remove the failpoint (memory freed).",
                ttl_s: 120,
                params: {
                    const P: &[ParamSpec] =
                        &[int("mb_per_s", "Megabytes allocated per second.", 1, 50, 5)];
                    P
                },
                group: None,
            },
            DiskFull => Spec {
                id: "disk_full",
                target: svc::TARGET_APP,
                component: "disk",
                description: "Mounts a size-limited tmpfs over the target's cache dir and fills \
                    it with a spool file: the volume is 100 % full and every cache write fails \
                    with ENOSPC (CACHE_IO, 'No space left on device'). Needs root (mount); \
                    refused otherwise. Revert: unmount (the original cache files reappear).",
                ttl_s: 300,
                params: {
                    const P: &[ParamSpec] = &[int(
                        "size_mb",
                        "Size of the volume that is filled, in MiB.",
                        1,
                        64,
                        4,
                    )];
                    P
                },
                group: None,
            },
            RateLimit => Spec {
                id: "rate_limit",
                target: svc::TARGET_APP,
                component: "target-app",
                description: "Clamps the target's run-time rate limit (admin API \
                    /admin/rate_limit; the previous limit is saved in the ledger) to \
                    max_requests per window_seconds and floods GET /api/v1/products with \
                    flood_requests requests at flood_rate per second: clients get 429 \
                    RATE_LIMITED. Revert: stop the flood and put the saved limit back.",
                ttl_s: 120,
                params: {
                    const P: &[ParamSpec] = &[
                        int(
                            "max_requests",
                            "Requests allowed per window.",
                            1,
                            10_000,
                            10,
                        ),
                        int("window_seconds", "The window, in seconds.", 1, 3600, 60),
                        int(
                            "flood_requests",
                            "Requests the flood sends in all (0 = no flood).",
                            0,
                            100_000,
                            200,
                        ),
                        int("flood_rate", "Flood requests per second.", 1, 500, 50),
                    ];
                    P
                },
                group: None,
            },
        }
    }

    pub fn label(self, p: &Value) -> GroundTruth {
        use Kind::*;
        let mechanism = match self {
            PoolExhaustion => format!(
                "{n} foreign sessions of role shop_app (application_name {POOL_HOG_APP}) idle in transaction hold every connection slot of the role (CONNECTION LIMIT lowered to {n}); the target's pool cannot open connections",
                n = p.int("connections")
            ),
            AuthFailure => "the password of role shop_app was changed in PostgreSQL; the target's DATABASE_URL still carries the old one, so new connections fail authentication".into(),
            DbDown => "the PostgreSQL server was stopped".into(),
            LockContention => format!("a session ({LOCKER_APP}) holds an ACCESS EXCLUSIVE lock on table {} inside an open transaction; queries on it wait until statement_timeout", p.text("table")),
            LongTransaction if p.int("advisory_lock_id") > 0 => format!("a session ({LONG_TX_APP}) idle in transaction holds advisory lock {}", p.int("advisory_lock_id")),
            LongTransaction => format!("a session ({LONG_TX_APP}) idle in transaction holds FOR UPDATE row locks on {} 1..={}; writes to them wait until statement_timeout", p.text("table"), p.int("rows")),
            ApiDown if p.text("mode") == "kill" => "the target-app process was killed with SIGKILL; the supervisor restarts it".into(),
            ApiDown => "the target-app process was stopped and is not restarted".into(),
            Latency => format!("in-app failpoint http.latency adds {} ms to every /api/v1 request", p.int("delay_ms")),
            HighCpu => format!("in-app failpoint process.cpu_spin busy-loops {} threads in the target process", p.int("threads")),
            UpstreamOutage => match p.text("mode").as_str() {
                "hang" => "the primary pricing upstream never answers /v1 requests (failpoint upstream.hang); the target times out after UPSTREAM_TIMEOUT_MS".into(),
                _ => "the primary pricing upstream answers 503 to every /v1 request (failpoint upstream.status)".into(),
            },
            CachePoisoning => format!("product cache files product-1..{}.json overwritten with invalid JSON", p.int("entries")),
            ConfigCorruption if p.text("mode") == "missing" => format!("{} removed from the target's .env; the target exits 78 (CONFIG_INVALID) at every start when the key is required", p.text("key")),
            ConfigCorruption => format!("{} in the target's .env set to an invalid value; the target exits 78 (CONFIG_INVALID) at every start and crash-loops", p.text("key")),
            JwtRotation => "JWT_SECRET in the target's .env replaced and the target restarted; tokens signed with the previous secret are rejected".into(),
            LogStorm => format!("in-app failpoint log.storm writes {} ERROR lines per second (INTERNAL_PANIC_REPORTED); noise, not a cause of failure", p.int("lines_per_s")),
            CrashLoop => "LISTEN_ADDR in the target's .env points at a port already in use; the target exits 1 at every start and the supervisor restarts it until it gives up".into(),
            FailedMigration => match p.text("mode").as_str() {
                "future_version" => format!("_sqlx_migrations records version {FUTURE_MIGRATION_VERSION}, which the target's code does not know (database ahead of code)"),
                "missing_version" => "the newest applied migration's row was deleted from _sqlx_migrations; the target sees it pending".into(),
                "checksum_mismatch" => "the checksum of the newest applied migration in _sqlx_migrations was changed; the target sees a migration edited after it ran".into(),
                _ => "column products.description dropped while _sqlx_migrations still records every migration as applied; queries reading it fail".into(),
            },
            MemoryLeak => format!("in-app failpoint process.memory_grow allocates {} MB per second in the target process", p.int("mb_per_s")),
            DiskFull => format!("the target's cache volume ({} MiB) is filled by {DISK_FILLER}; cache writes fail with ENOSPC", p.int("size_mb")),
            RateLimit => format!("the target's rate limit was clamped to {} requests per {} s through its admin API and {} requests were sent at {}/s; clients get 429 RATE_LIMITED", p.int("max_requests"), p.int("window_seconds"), p.int("flood_requests"), p.int("flood_rate")),
        };
        GroundTruth {
            class: self.spec().id.to_string(),
            component: self.spec().component.to_string(),
            mechanism,
        }
    }

    /// The target failpoint (name, action) behind in-app faults.
    fn target_failpoint(self, p: &Value) -> Option<(&'static str, String)> {
        match self {
            Kind::Latency => Some(("http.latency", format!("delay({})", p.int("delay_ms")))),
            Kind::HighCpu => Some(("process.cpu_spin", format!("spin({})", p.int("threads")))),
            Kind::LogStorm => Some(("log.storm", format!("storm({})", p.int("lines_per_s")))),
            Kind::MemoryLeak => Some((
                "process.memory_grow",
                format!("grow({})", p.int("mb_per_s")),
            )),
            _ => None,
        }
    }

    fn session_app(self) -> Option<&'static str> {
        match self {
            Kind::PoolExhaustion => Some(POOL_HOG_APP),
            Kind::LockContention => Some(LOCKER_APP),
            Kind::LongTransaction => Some(LONG_TX_APP),
            _ => None,
        }
    }
}

/// Database sessions held by active faults of this process, by fault id; and the
/// background request floods (`rate_limit`), likewise.
#[derive(Default)]
pub(crate) struct Sessions(
    Mutex<HashMap<String, Vec<PgConnection>>>,
    Mutex<HashMap<String, tokio::task::AbortHandle>>,
);

impl Sessions {
    fn add_flood(&self, id: &str, task: tokio::task::AbortHandle) {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), task);
    }
    /// Stops the flood of fault `id`, if this process runs one.
    fn stop_flood(&self, id: &str) {
        if let Some(task) = self.1.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            task.abort();
        }
    }
    fn add(&self, id: &str, conn: PgConnection) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .push(conn);
    }
    fn take(&self, id: &str) -> Vec<PgConnection> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .unwrap_or_default()
    }
}

pub(crate) struct Prepared {
    pub plan: Vec<String>,
    pub undo: Value,
}

/// Where effect checks start from: the log offset and the time just before `apply`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    pub log: u64,
    pub at: DateTime<Utc>,
}

fn app_user(ctx: &Ctx) -> R<String> {
    let user = ctx.topology.database.app_user.clone();
    check_identifier(&user).map_err(|e| e.to_string())?;
    Ok(user)
}

async fn require_running(ctx: &Ctx, name: &str) -> R<()> {
    let s = ctx.service_state(name).await?;
    if s.state.is_alive() {
        Ok(())
    } else {
        Err(format!(
            "{name} is {}; this fault needs it running",
            s.state.as_str()
        ))
    }
}

async fn sql(conn: &mut PgConnection, q: &str) -> R<()> {
    use sqlx::Executor;
    // Through the `Executor` trait (a boxed `Send` future): `RawSql::execute` is an
    // `async fn` whose executor bound trips rustc's higher-ranked `Send` check in every
    // spawned caller.
    conn.execute(sqlx::raw_sql(q))
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "`{}`: {e}",
                q.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
            )
        })
}

pub(crate) async fn prepare(kind: Kind, ctx: &Ctx, p: &Value) -> R<Prepared> {
    use Kind::*;
    let db = &ctx.topology.database;
    let undo = json!({});
    let (plan, undo) = match kind {
        PoolExhaustion => {
            let user = app_user(ctx)?;
            ctx.app_password()?;
            let mut admin = ctx.admin_conn().await?;
            let limit: i32 =
                sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
                    .bind(&user)
                    .fetch_one(&mut admin)
                    .await
                    .map_err(|e| format!("read the connection limit of {user}: {e}"))?;
            let _ = admin.close().await;
            let n = p.int("connections");
            let mut plan = vec![
                format!(
                    "open {n} sessions to database {} as role {user} with application_name {POOL_HOG_APP}, each `BEGIN; SELECT 1` and left idle in transaction",
                    db.database
                ),
                format!("ALTER ROLE {user} CONNECTION LIMIT {n} (now {limit}; restored on revert)"),
            ];
            if p.flag("terminate_sessions") {
                plan.push(format!(
                    "pg_terminate_backend every session of {user} with application_name target-app"
                ));
            }
            plan.push(format!("revert: close those sessions, ALTER ROLE {user} CONNECTION LIMIT {limit}, pg_terminate_backend any session named {POOL_HOG_APP}"));
            (plan, json!({"original_conn_limit": limit}))
        }
        AuthFailure => {
            let user = app_user(ctx)?;
            ctx.app_password()?;
            ctx.admin_conn().await?.close().await.ok();
            let mut plan = vec![format!(
                "ALTER ROLE {user} PASSWORD '<random 48 hex chars>' as the admin role"
            )];
            if p.flag("terminate_sessions") {
                plan.push(format!("pg_terminate_backend every session of {user} except sessions other faults hold (target-app, target-app-worker)"));
            }
            plan.push(format!(
                "revert: ALTER ROLE {user} PASSWORD '<the sandbox secret pg-app-password>'"
            ));
            (plan, undo)
        }
        DbDown => {
            require_running(ctx, svc::POSTGRES).await?;
            (vec![
                "stop service postgres through the runtime (fast shutdown; not restarted automatically)".into(),
                "revert: start service postgres, wait until it accepts connections".into(),
            ], undo)
        }
        LockContention | LongTransaction => {
            let user = app_user(ctx)?;
            ctx.app_password()?;
            ctx.admin_conn().await?.close().await.ok();
            let app = kind.session_app().unwrap_or_default();
            let what = lock_statement(kind, p);
            (
                vec![
                    format!(
                        "open one session as role {user} with application_name {app}: `{what}`, then leave it idle in transaction"
                    ),
                    format!(
                        "revert: ROLLBACK and close it, pg_terminate_backend any session named {app}"
                    ),
                ],
                undo,
            )
        }
        DiskFull => {
            if !nix::unistd::geteuid().is_root() {
                return Err(
                    "disk_full needs root: it mounts a size-limited tmpfs over the \
                    target's cache dir (PostgreSQL-style privilege drop is not enough); run \
                    aiops as root to use it"
                        .into(),
                );
            }
            let cache = ctx.state.cache_dir();
            let mb = p.int("size_mb");
            (
                vec![
                    format!(
                        "mount -t tmpfs -o size={mb}m,mode=0755 aiops-cache {}",
                        cache.display()
                    ),
                    format!(
                        "fill it with {} until writes fail with ENOSPC",
                        cache.join(DISK_FILLER).display()
                    ),
                    format!(
                        "revert: umount {} (the original cache files reappear)",
                        cache.display()
                    ),
                ],
                json!({"mount": cache}),
            )
        }
        ApiDown => {
            require_running(ctx, svc::TARGET_APP).await?;
            let first = if p.text("mode") == "kill" {
                "SIGKILL the target-app process through the runtime (a crash: the supervisor restarts it with backoff)"
            } else {
                "stop service target-app through the runtime (SIGTERM to its process group, SIGKILL after the grace period); a requested stop is never restarted"
            };
            (
                vec![
                    first.into(),
                    "revert: start service target-app if it is not running, wait until healthy"
                        .into(),
                ],
                undo,
            )
        }
        RateLimit => {
            let (base, token) = ctx.target_admin()?;
            require_running(ctx, svc::TARGET_APP).await?;
            let current = get_rate_limit(ctx, &base, &token).await?;
            let url = ctx.target_url()?;
            let (max, window) = (p.int("max_requests"), p.int("window_seconds"));
            let (n, rate) = (p.int("flood_requests"), p.int("flood_rate"));
            (
                vec![
                    format!(
                        "save the current limit ({} requests per {} s) in the ledger",
                        current.0, current.1
                    ),
                    format!(
                        "PUT {base}/admin/rate_limit {{\"max_requests\": {max}, \"window_seconds\": {window}}} (bearer ADMIN_TOKEN from the target's .env)"
                    ),
                    format!(
                        "send {n} requests GET {url}/api/v1/products?limit=1 at {rate} per second, in the background"
                    ),
                    format!(
                        "revert: stop the flood, PUT {base}/admin/rate_limit {{\"max_requests\": {}, \"window_seconds\": {}}}",
                        current.0, current.1
                    ),
                ],
                json!({"rate_limit": {"max_requests": current.0, "window_seconds": current.1}}),
            )
        }
        Latency | HighCpu | LogStorm | MemoryLeak => {
            let (name, action) = kind.target_failpoint(p).unwrap_or_default();
            let (base, _) = ctx.target_admin()?;
            require_running(ctx, svc::TARGET_APP).await?;
            (
                vec![
                    format!(
                        "PUT {base}/admin/failpoints/{name} {{\"action\": \"{action}\"}} (bearer ADMIN_TOKEN from the target's .env)"
                    ),
                    format!(
                        "revert: DELETE {base}/admin/failpoints/{name} (a restarted target has no failpoints)"
                    ),
                ],
                json!({"failpoint": name}),
            )
        }
        UpstreamOutage => {
            let (base, _) = ctx.upstream_admin()?;
            require_running(ctx, svc::UPSTREAM_PRIMARY).await?;
            let (name, action) = upstream_failpoint(p);
            (
                vec![
                    format!(
                        "PUT {base}/admin/failpoints/{name} {{\"action\": \"{action}\"}} (bearer: the sandbox secret upstream-admin-token)"
                    ),
                    format!("revert: DELETE {base}/admin/failpoints/{name}"),
                ],
                json!({"failpoint": name}),
            )
        }
        CachePoisoning => {
            let dir = ctx.state.cache_dir();
            let mut originals = serde_json::Map::new();
            for id in 1..=p.int("entries") {
                let path = dir.join(format!("product-{id}.json"));
                let content = match std::fs::read_to_string(&path) {
                    Ok(c) => Value::String(c),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
                    Err(e) => return Err(format!("read {}: {e}", path.display())),
                };
                originals.insert(id.to_string(), content);
            }
            let existing = originals.values().filter(|v| !v.is_null()).count();
            (
                vec![
                    format!(
                        "save {} cache files product-1..{}.json of {} in the ledger ({existing} exist, the others are absent)",
                        originals.len(),
                        p.int("entries"),
                        dir.display()
                    ),
                    "overwrite each with invalid JSON".into(),
                    "revert: write the saved contents back; remove the files that did not exist"
                        .into(),
                ],
                json!({"originals": originals}),
            )
        }
        ConfigCorruption | JwtRotation | CrashLoop => {
            let path = ctx.state.env_file();
            let original = std::fs::read_to_string(&path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            let change = match kind {
                ConfigCorruption if p.text("mode") == "missing" => {
                    format!("remove {} from {}", p.text("key"), path.display())
                }
                ConfigCorruption => format!(
                    "set {}={} in {}",
                    p.text("key"),
                    p.text("value"),
                    path.display()
                ),
                JwtRotation => {
                    format!("set JWT_SECRET=<random 64 hex chars> in {}", path.display())
                }
                _ => {
                    require_running(ctx, svc::POSTGRES).await?;
                    format!(
                        "set LISTEN_ADDR=127.0.0.1:{} (PostgreSQL's port, in use) in {}",
                        ctx.postgres_port(),
                        path.display()
                    )
                }
            };
            let mut plan = vec![
                format!(
                    "save the current {} ({} bytes) in the ledger",
                    path.display(),
                    original.len()
                ),
                change,
                "restart service target-app through the runtime".into(),
            ];
            if kind == JwtRotation {
                plan.push("wait until target-app is healthy".into());
            }
            plan.push(
                "revert: write the saved .env back, restart target-app, wait until healthy".into(),
            );
            (plan, json!({"env": original}))
        }
        FailedMigration if p.text("mode") != "drop_column" => {
            let mode = p.text("mode");
            let mut admin = ctx.admin_conn().await?;
            let newest: Option<(i64, String, bool, String, i64)> = sqlx::query_as(
                "SELECT version, description, success, encode(checksum, 'hex'), execution_time \
                 FROM _sqlx_migrations ORDER BY version DESC LIMIT 1",
            )
            .fetch_optional(&mut admin)
            .await
            .map_err(|e| format!("read _sqlx_migrations: {e}"))?;
            let _ = admin.close().await;
            let (version, description, success, checksum, execution_time) =
                newest.ok_or_else(|| "_sqlx_migrations has no applied migration".to_string())?;
            if version == FUTURE_MIGRATION_VERSION {
                return Err(format!(
                    "_sqlx_migrations already records version {version} (a previous failed_migration was not reverted); stop that fault first"
                ));
            }
            let row = json!({"version": version, "description": description, "success": success,
                             "checksum": checksum, "execution_time": execution_time});
            let (change, revert) = match mode.as_str() {
                "future_version" => (
                    format!(
                        "as the admin role: INSERT INTO _sqlx_migrations version {FUTURE_MIGRATION_VERSION} ('future'), unknown to the code"
                    ),
                    format!(
                        "revert: DELETE FROM _sqlx_migrations WHERE version = {FUTURE_MIGRATION_VERSION}"
                    ),
                ),
                "missing_version" => (
                    format!(
                        "as the admin role: DELETE FROM _sqlx_migrations WHERE version = {version} (the row is saved in the ledger)"
                    ),
                    format!("revert: INSERT the saved row of version {version} back"),
                ),
                _ => (
                    format!(
                        "as the admin role: UPDATE _sqlx_migrations SET checksum = <sha384 of something else> WHERE version = {version}"
                    ),
                    format!("revert: set the saved checksum of version {version} back"),
                ),
            };
            (vec![change, revert], json!({"migration": row}))
        }
        FailedMigration => {
            let mut admin = ctx.admin_conn().await?;
            let backup: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(MIGRATION_BACKUP_TABLE)
                .fetch_one(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            let _ = admin.close().await;
            if backup {
                return Err(format!(
                    "table {MIGRATION_BACKUP_TABLE} already exists (a previous failed_migration was not reverted); stop that fault first"
                ));
            }
            (
                vec![
                    format!(
                        "as the admin role, in one transaction: CREATE TABLE {MIGRATION_BACKUP_TABLE} AS SELECT id, description FROM products; ALTER TABLE products DROP COLUMN description"
                    ),
                    "_sqlx_migrations is left as it is (every migration still recorded as applied)"
                        .into(),
                    format!(
                        "revert: ALTER TABLE products ADD COLUMN description TEXT NOT NULL DEFAULT '', UPDATE it from {MIGRATION_BACKUP_TABLE}, DROP TABLE {MIGRATION_BACKUP_TABLE}"
                    ),
                ],
                undo,
            )
        }
    };
    Ok(Prepared { plan, undo })
}

fn upstream_failpoint(p: &Value) -> (&'static str, String) {
    match p.text("mode").as_str() {
        "hang" => ("upstream.hang", "hang".to_string()),
        _ => ("upstream.status", "status(503)".to_string()),
    }
}

async fn put_failpoint(ctx: &Ctx, base: &str, token: &str, name: &str, action: &str) -> R<()> {
    let resp = ctx
        .http
        .put(format!("{base}/admin/failpoints/{name}"))
        .bearer_auth(token)
        .json(&json!({"action": action}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("PUT failpoint {name}: {}", crate::ctx::describe_reqwest(&e)))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let status = resp.status();
        Err(format!(
            "PUT failpoint {name}: {status} {}",
            resp.text().await.unwrap_or_default()
        ))
    }
}

/// Remove a failpoint; a process that cannot be reached has none (failpoints live in
/// memory and a restart clears them), so that counts as removed.
async fn delete_failpoint(ctx: &Ctx, base: &str, token: &str, name: &str) -> R<()> {
    match ctx
        .http
        .delete(format!("{base}/admin/failpoints/{name}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(resp)
            if resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND =>
        {
            Ok(())
        }
        Ok(resp) => {
            let status = resp.status();
            Err(format!(
                "DELETE failpoint {name}: {status} {}",
                resp.text().await.unwrap_or_default()
            ))
        }
        Err(e) if e.is_connect() => Ok(()),
        Err(e) => Err(format!(
            "DELETE failpoint {name}: {}",
            crate::ctx::describe_reqwest(&e)
        )),
    }
}

/// The statement a lock fault's session runs (identifiers come from a fixed list).
fn lock_statement(kind: Kind, p: &Value) -> String {
    if kind == Kind::LockContention {
        format!(
            "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            p.text("table")
        )
    } else if p.int("advisory_lock_id") > 0 {
        format!(
            "BEGIN; SELECT pg_advisory_xact_lock({})",
            p.int("advisory_lock_id")
        )
    } else {
        format!(
            "BEGIN; SELECT id FROM {} WHERE id <= {} ORDER BY id FOR UPDATE",
            p.text("table"),
            p.int("rows")
        )
    }
}

/// The target's run-time limit: `(max_requests, window_seconds)`.
async fn get_rate_limit(ctx: &Ctx, base: &str, token: &str) -> R<(i64, i64)> {
    let resp = ctx
        .http
        .get(format!("{base}/admin/rate_limit"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| {
            format!(
                "GET /admin/rate_limit: {}",
                crate::ctx::describe_reqwest(&e)
            )
        })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("GET /admin/rate_limit: {status}"));
    }
    // A target that predates windows reports only `rps`.
    let max = body["max_requests"]
        .as_i64()
        .or_else(|| body["rps"].as_i64())
        .ok_or_else(|| format!("GET /admin/rate_limit: unexpected answer {body}"))?;
    Ok((max, body["window_seconds"].as_i64().unwrap_or(1)))
}

/// Sets the target's run-time limit; `Err("connect: ...")` when the target is not there.
async fn put_rate_limit(ctx: &Ctx, base: &str, token: &str, max: i64, window: i64) -> R<()> {
    match ctx
        .http
        .put(format!("{base}/admin/rate_limit"))
        .bearer_auth(token)
        .json(&json!({"max_requests": max, "window_seconds": window}))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status();
            Err(format!(
                "PUT /admin/rate_limit: {status} {}",
                resp.text().await.unwrap_or_default()
            ))
        }
        Err(e) if e.is_connect() => Err(format!(
            "connect: PUT /admin/rate_limit: {}",
            crate::ctx::describe_reqwest(&e)
        )),
        Err(e) => Err(format!(
            "PUT /admin/rate_limit: {}",
            crate::ctx::describe_reqwest(&e)
        )),
    }
}

async fn terminate_by_app(ctx: &Ctx, app: &str) -> R<u64> {
    let mut admin = ctx.admin_conn().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(app)
    .fetch_one(&mut admin)
    .await
    .map_err(|e| format!("terminate sessions named {app}: {e}"))?;
    let _ = admin.close().await;
    Ok(n as u64)
}

async fn close_sessions(conns: Vec<PgConnection>) {
    for mut c in conns {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = sql(&mut c, "ROLLBACK").await;
            let _ = c.close().await;
        })
        .await;
    }
}

fn write_env(ctx: &Ctx, text: &str) -> R<()> {
    aiops_sandbox::paths::write_atomic(&ctx.state.env_file(), text.as_bytes(), 0o600)
        .map_err(|e| e.to_string())
}

pub(crate) async fn apply(
    kind: Kind,
    ctx: &Ctx,
    id: &str,
    p: &Value,
    undo: &Value,
    sessions: &Sessions,
) -> R<()> {
    use Kind::*;
    match kind {
        PoolExhaustion => {
            let user = app_user(ctx)?;
            let n = p.int("connections");
            // Open them concurrently: each login costs a SCRAM exchange.
            let url = ctx.app_url()?;
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let url = url.clone();
                set.spawn(async move {
                    let mut c = crate::ctx::connect(&url, POOL_HOG_APP).await?;
                    sql(&mut c, "BEGIN; SELECT 1").await?;
                    Ok::<_, String>(c)
                });
                // Keep a handful of handshakes in flight, not n.
                if set.len() >= 8
                    && let Some(r) = set.join_next().await
                {
                    sessions.add(id, r.map_err(|e| e.to_string())??);
                }
            }
            while let Some(r) = set.join_next().await {
                sessions.add(id, r.map_err(|e| e.to_string())??);
            }
            let mut admin = ctx.admin_conn().await?;
            sql(
                &mut admin,
                &format!("ALTER ROLE {user} CONNECTION LIMIT {n}"),
            )
            .await?;
            if p.flag("terminate_sessions") {
                sqlx::query(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE usename = $1 AND application_name = 'target-app'",
                )
                .bind(&user)
                .execute(&mut admin)
                .await
                .map_err(|e| format!("terminate the target's sessions: {e}"))?;
            }
            let _ = admin.close().await;
            Ok(())
        }
        AuthFailure => {
            let user = app_user(ctx)?;
            let mut admin = ctx.admin_conn().await?;
            let password = aiops_sandbox::secrets::random_hex(24);
            sql(
                &mut admin,
                &format!("ALTER ROLE {user} PASSWORD {}", quote_literal(&password)),
            )
            .await?;
            if p.flag("terminate_sessions") {
                sqlx::query(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE usename = $1 AND application_name <> ALL($2)",
                )
                .bind(&user)
                .bind(vec![POOL_HOG_APP, LOCKER_APP, LONG_TX_APP])
                .execute(&mut admin)
                .await
                .map_err(|e| format!("terminate the app role's sessions: {e}"))?;
            }
            let _ = admin.close().await;
            Ok(())
        }
        DbDown => ctx
            .runtime
            .stop(svc::POSTGRES)
            .await
            .map(|_| ())
            .map_err(|e| format!("stop postgres: {e}")),
        LockContention | LongTransaction => {
            let app = kind.session_app().unwrap_or_default();
            let mut c = ctx.app_conn(app).await?;
            // Never wait long for the lock itself: inject must not hang behind traffic.
            // One statement per round trip, as a job would send them, so the session's
            // last query (what `pg_stat_activity` shows) is the locking one.
            sql(&mut c, "SET lock_timeout = '5s'").await?;
            for statement in lock_statement(kind, p).split("; ") {
                sql(&mut c, statement).await?;
            }
            sessions.add(id, c);
            Ok(())
        }
        DiskFull => {
            let cache = ctx.state.cache_dir();
            if !has_fault_volume(&cache) {
                let out = tokio::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o"])
                    .arg(format!("size={}m,mode=0755", p.int("size_mb")))
                    .arg("aiops-cache")
                    .arg(&cache)
                    .output()
                    .await
                    .map_err(|e| format!("run mount: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "mount tmpfs over {}: {}",
                        cache.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            let filler = cache.join(DISK_FILLER);
            tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&filler).map_err(|e| e.to_string())?;
                let block = vec![0u8; 64 * 1024];
                loop {
                    match f.write_all(&block) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(28) => return Ok(()),
                        Err(e) => return Err(format!("fill {}: {e}", filler.display())),
                    }
                }
            })
            .await
            .map_err(|e| e.to_string())?
        }
        ApiDown if p.text("mode") == "kill" => ctx
            .runtime
            .kill(svc::TARGET_APP, aiops_sandbox::runtime::KillSignal::Kill)
            .await
            .map(|_| ())
            .map_err(|e| format!("kill target-app: {e}")),
        ApiDown => ctx
            .runtime
            .stop(svc::TARGET_APP)
            .await
            .map(|_| ())
            .map_err(|e| format!("stop target-app: {e}")),
        RateLimit => {
            let (base, token) = ctx.target_admin()?;
            put_rate_limit(
                ctx,
                &base,
                &token,
                p.int("max_requests"),
                p.int("window_seconds"),
            )
            .await?;
            let (n, rate) = (p.int("flood_requests"), p.int("flood_rate"));
            if n > 0 {
                let url = format!("{}/api/v1/products?limit=1", ctx.target_url()?);
                let http = ctx.http.clone();
                let flood = tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                    let mut inflight = tokio::task::JoinSet::new();
                    for _ in 0..n {
                        tick.tick().await;
                        let req = http.get(&url).timeout(Duration::from_secs(5));
                        inflight.spawn(async move {
                            let _ = req.send().await;
                        });
                        // Reap finished requests so the set stays small.
                        while inflight.try_join_next().is_some() {}
                    }
                    while inflight.join_next().await.is_some() {}
                });
                sessions.add_flood(id, flood.abort_handle());
            }
            Ok(())
        }
        Latency | HighCpu | LogStorm | MemoryLeak => {
            let (name, action) = kind.target_failpoint(p).unwrap_or_default();
            let (base, token) = ctx.target_admin()?;
            put_failpoint(ctx, &base, &token, name, &action).await
        }
        UpstreamOutage => {
            let (name, action) = upstream_failpoint(p);
            let (base, token) = ctx.upstream_admin()?;
            put_failpoint(ctx, &base, &token, name, &action).await
        }
        CachePoisoning => {
            let dir = ctx.state.cache_dir();
            for n in 1..=p.int("entries") {
                let path = dir.join(format!("product-{n}.json"));
                let garbage =
                    format!("{{\"id\": {n}, \"sku\": \"SKU-{n:04}\", \"name\": \u{0}corrupt");
                aiops_sandbox::paths::write_atomic(&path, garbage.as_bytes(), 0o644)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        ConfigCorruption | JwtRotation | CrashLoop => {
            let original = undo["env"].as_str().unwrap_or_default();
            let mut env = EnvFile::parse(original);
            match kind {
                ConfigCorruption if p.text("mode") == "missing" => {
                    env.remove(&p.text("key"));
                }
                ConfigCorruption => env.set(&p.text("key"), p.text("value")),
                JwtRotation => env.set("JWT_SECRET", aiops_sandbox::secrets::random_hex(32)),
                _ => env.set("LISTEN_ADDR", format!("127.0.0.1:{}", ctx.postgres_port())),
            }
            write_env(ctx, &env.render())?;
            ctx.restart_target().await?;
            if kind == JwtRotation {
                ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await?;
            }
            Ok(())
        }
        FailedMigration if p.text("mode") != "drop_column" => {
            let row = &undo["migration"];
            let version = row["version"].as_i64().unwrap_or_default();
            let mut admin = ctx.admin_conn().await?;
            let q = match p.text("mode").as_str() {
                "future_version" => sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, 'future', true, sha384('future'::bytea), 0)",
                )
                .bind(FUTURE_MIGRATION_VERSION),
                "missing_version" => {
                    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1").bind(version)
                }
                _ => sqlx::query(
                    "UPDATE _sqlx_migrations SET checksum = sha384(checksum || 'edited'::bytea) WHERE version = $1",
                )
                .bind(version),
            };
            q.execute(&mut admin)
                .await
                .map_err(|e| format!("change _sqlx_migrations: {e}"))?;
            let _ = admin.close().await;
            Ok(())
        }
        FailedMigration => {
            let mut admin = ctx.admin_conn().await?;
            sql(
                &mut admin,
                &format!(
                    "BEGIN; SET LOCAL lock_timeout = '5s'; \
                     CREATE TABLE {MIGRATION_BACKUP_TABLE} AS SELECT id, description FROM products; \
                     ALTER TABLE products DROP COLUMN description; COMMIT"
                ),
            )
            .await?;
            let _ = admin.close().await;
            Ok(())
        }
    }
}

pub(crate) async fn revert(
    kind: Kind,
    ctx: &Ctx,
    id: &str,
    p: &Value,
    undo: &Value,
    sessions: &Sessions,
) -> R<()> {
    use Kind::*;
    match kind {
        PoolExhaustion | LockContention | LongTransaction => {
            close_sessions(sessions.take(id)).await;
            if kind == PoolExhaustion {
                let user = app_user(ctx)?;
                // -1 (no limit) when the ledger predates the value, as the sandbox creates it.
                let limit = undo["original_conn_limit"].as_i64().unwrap_or(-1);
                let mut admin = ctx.admin_conn().await?;
                sql(
                    &mut admin,
                    &format!("ALTER ROLE {user} CONNECTION LIMIT {limit}"),
                )
                .await?;
                let _ = admin.close().await;
            }
            // Sessions of another (dead) holder, or ones that did not close cleanly.
            terminate_by_app(ctx, kind.session_app().unwrap_or_default()).await?;
            Ok(())
        }
        AuthFailure => {
            let user = app_user(ctx)?;
            let password = ctx.app_password()?;
            let mut admin = ctx.admin_conn().await?;
            sql(
                &mut admin,
                &format!("ALTER ROLE {user} PASSWORD {}", quote_literal(&password)),
            )
            .await?;
            let _ = admin.close().await;
            Ok(())
        }
        DbDown => {
            ctx.runtime
                .start(svc::POSTGRES)
                .await
                .map_err(|e| format!("start postgres: {e}"))?;
            ctx.wait_postgres(HEALTHY_LIMIT).await?;
            // Reverted means the supervisor sees it healthy too, not only that a login works.
            ctx.wait_healthy(svc::POSTGRES, HEALTHY_LIMIT).await
        }
        DiskFull => {
            let cache = ctx.state.cache_dir();
            if has_fault_volume(&cache) {
                let out = tokio::process::Command::new("umount")
                    .arg("-l")
                    .arg(&cache)
                    .output()
                    .await
                    .map_err(|e| format!("run umount: {e}"))?;
                if !out.status.success() && has_fault_volume(&cache) {
                    return Err(format!(
                        "umount {}: {}",
                        cache.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            // A filler written without the mount (it never is, but be safe) goes too.
            let _ = std::fs::remove_file(cache.join(DISK_FILLER));
            Ok(())
        }
        ApiDown => {
            let alive = ctx
                .service_state(svc::TARGET_APP)
                .await
                .map(|s| s.state.is_alive())
                .unwrap_or(false);
            if alive {
                ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await
            } else {
                target_up(ctx, false).await
            }
        }
        RateLimit => {
            sessions.stop_flood(id);
            let (base, token) = ctx.target_admin()?;
            let saved = &undo["rate_limit"];
            let max = saved["max_requests"].as_i64().unwrap_or(0);
            let window = saved["window_seconds"].as_i64().unwrap_or(1);
            match put_rate_limit(ctx, &base, &token, max, window).await {
                Ok(()) => Ok(()),
                // A target that is not running starts with the limit of its .env.
                Err(e) if e.starts_with("connect:") => Ok(()),
                Err(e) => Err(e),
            }
        }
        Latency | HighCpu | LogStorm | MemoryLeak => {
            let name = undo["failpoint"].as_str().unwrap_or_default();
            let (base, token) = ctx.target_admin()?;
            delete_failpoint(ctx, &base, &token, name).await
        }
        UpstreamOutage => {
            let name = undo["failpoint"].as_str().unwrap_or_default();
            let (base, token) = ctx.upstream_admin()?;
            delete_failpoint(ctx, &base, &token, name).await
        }
        CachePoisoning => {
            let dir = ctx.state.cache_dir();
            let originals = undo["originals"].as_object().cloned().unwrap_or_default();
            for (n, content) in originals {
                let path = dir.join(format!("product-{n}.json"));
                match content.as_str() {
                    Some(c) => aiops_sandbox::paths::write_atomic(&path, c.as_bytes(), 0o644)
                        .map_err(|e| e.to_string())?,
                    None => match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(format!("remove {}: {e}", path.display())),
                    },
                }
            }
            Ok(())
        }
        ConfigCorruption | JwtRotation | CrashLoop => {
            let original = undo["env"]
                .as_str()
                .ok_or_else(|| "the ledger holds no saved .env".to_string())?;
            let current = std::fs::read_to_string(ctx.state.env_file()).unwrap_or_default();
            if current != original {
                write_env(ctx, original)?;
            }
            // Always restart: the running process may still hold the changed values, and
            // a restart also clears a crash loop the supervisor gave up on.
            target_up(ctx, true).await
        }
        FailedMigration if p.text("mode") != "drop_column" => {
            let row = &undo["migration"];
            let version = row["version"]
                .as_i64()
                .ok_or_else(|| "the ledger holds no saved migration row".to_string())?;
            let mut admin = ctx.admin_conn().await?;
            let q = match p.text("mode").as_str() {
                "future_version" => sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
                    .bind(FUTURE_MIGRATION_VERSION),
                "missing_version" => sqlx::query(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                     VALUES ($1, $2, $3, decode($4, 'hex'), $5) ON CONFLICT (version) DO NOTHING",
                )
                .bind(version)
                .bind(row["description"].as_str().unwrap_or_default().to_string())
                .bind(row["success"].as_bool().unwrap_or(true))
                .bind(row["checksum"].as_str().unwrap_or_default().to_string())
                .bind(row["execution_time"].as_i64().unwrap_or(0)),
                _ => sqlx::query(
                    "UPDATE _sqlx_migrations SET checksum = decode($2, 'hex') WHERE version = $1",
                )
                .bind(version)
                .bind(row["checksum"].as_str().unwrap_or_default().to_string()),
            };
            q.execute(&mut admin)
                .await
                .map_err(|e| format!("restore _sqlx_migrations: {e}"))?;
            let _ = admin.close().await;
            Ok(())
        }
        FailedMigration => {
            let mut admin = ctx.admin_conn().await?;
            let has_column: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = 'products' AND column_name = 'description')",
            )
            .fetch_one(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
            let has_backup: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(MIGRATION_BACKUP_TABLE)
                .fetch_one(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            let mut q = String::from("BEGIN; SET LOCAL lock_timeout = '10s'; ");
            if !has_column {
                q.push_str(
                    "ALTER TABLE products ADD COLUMN description TEXT NOT NULL DEFAULT ''; ",
                );
            }
            if has_backup {
                if !has_column {
                    q.push_str(&format!(
                        "UPDATE products p SET description = b.description FROM {MIGRATION_BACKUP_TABLE} b WHERE p.id = b.id; "
                    ));
                }
                q.push_str(&format!("DROP TABLE {MIGRATION_BACKUP_TABLE}; "));
            }
            q.push_str("COMMIT");
            sql(&mut admin, &q).await?;
            let _ = admin.close().await;
            Ok(())
        }
    }
}

/// Start (or restart) the target after a revert and wait until it is healthy — unless a
/// service it depends on is not running: at daemon start the reaper runs before the other
/// services are started, and the supervisor brings the target up with them.
async fn target_up(ctx: &Ctx, restart: bool) -> R<()> {
    if restart {
        ctx.restart_target().await?;
    } else {
        ctx.runtime
            .start(svc::TARGET_APP)
            .await
            .map_err(|e| format!("start target-app: {e}"))?;
    }
    let deps = ctx
        .topology
        .service(svc::TARGET_APP)
        .map(|s| s.depends_on.clone())
        .unwrap_or_default();
    let services = ctx.runtime.services().await.map_err(|e| e.to_string())?;
    let deps_up = deps
        .iter()
        .all(|d| services.iter().any(|s| &s.name == d && s.state.is_alive()));
    if deps_up {
        ctx.wait_healthy(svc::TARGET_APP, HEALTHY_LIMIT).await
    } else {
        Ok(())
    }
}

/// A JWT for seeded user 1 (an admin) signed with `secret`, valid for an hour.
pub(crate) fn token(secret: &str) -> R<String> {
    let exp = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": 1, "role": "admin", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

fn current_jwt_secret(ctx: &Ctx) -> R<String> {
    EnvFile::read(&ctx.state.env_file())
        .map_err(|e| e.to_string())?
        .get("JWT_SECRET")
        .map(str::to_string)
        .ok_or_else(|| "no JWT_SECRET in the .env".into())
}

/// Sessions waiting on a lock held by a session named `app`.
async fn blocked_by(ctx: &Ctx, app: &str) -> R<i64> {
    let mut admin = ctx.admin_conn().await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a WHERE EXISTS (\
           SELECT 1 FROM pg_stat_activity b \
           WHERE b.pid = ANY (pg_blocking_pids(a.pid)) AND b.application_name = $1)",
    )
    .bind(app)
    .fetch_one(&mut admin)
    .await
    .map_err(|e| e.to_string())?;
    let _ = admin.close().await;
    Ok(n)
}

fn fmt_reply(r: &R<crate::ctx::Reply>) -> String {
    match r {
        Ok(r) => format!(
            "HTTP {} {} in {} ms",
            r.status,
            r.code.as_deref().unwrap_or("-"),
            r.elapsed.as_millis()
        ),
        Err(e) => e.clone(),
    }
}

/// Poll until the symptom is observable (≤ 15 s).
pub(crate) async fn verify(
    kind: Kind,
    ctx: &Ctx,
    p: &Value,
    undo: &Value,
    mark: Mark,
) -> EffectCheck {
    use Kind::*;
    let short = Duration::from_secs(5);
    match kind {
        PoolExhaustion | AuthFailure => {
            let codes: &[&str] = if kind == AuthFailure {
                &["DB_AUTH_FAILED"]
            } else {
                &["DB_POOL_TIMEOUT", "DB_UNAVAILABLE"]
            };
            poll(VERIFY_LIMIT, || async move {
                let (status, body) = ctx.readyz().await?;
                let db = body["checks"]["db"].as_str().unwrap_or("?").to_string();
                let (count, _) = ctx.log_codes_since(mark.log, codes);
                let db_matches = codes.iter().any(|c| db.contains(c));
                if status == 503 && db_matches {
                    Ok(format!(
                        "/readyz {status} (db: {db}); {count} log lines with {} since the inject",
                        codes.join("|")
                    ))
                } else {
                    Err(format!("/readyz {status} (db: {db})"))
                }
            })
            .await
        }
        DbDown => {
            poll(VERIFY_LIMIT, || async move {
                let s = ctx.service_state(svc::POSTGRES).await?;
                let (status, body) = ctx.readyz().await?;
                let db = body["checks"]["db"].as_str().unwrap_or("?").to_string();
                if !s.state.is_alive() && status == 503 {
                    Ok(format!(
                        "postgres is {}; /readyz {status} (db: {db})",
                        s.state.as_str()
                    ))
                } else {
                    Err(format!("postgres {}; /readyz {status}", s.state.as_str()))
                }
            })
            .await
        }
        LongTransaction if p.int("advisory_lock_id") > 0 => {
            let lock_id = p.int("advisory_lock_id");
            poll(VERIFY_LIMIT, || async move {
                let mut admin = ctx.admin_conn().await?;
                let held: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                     WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
                )
                .bind(LONG_TX_APP)
                .fetch_one(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                if held > 0 {
                    Ok(format!(
                        "advisory lock {lock_id} granted to {LONG_TX_APP}, idle in transaction (pg_locks)"
                    ))
                } else {
                    Err("no advisory lock held yet".into())
                }
            })
            .await
        }
        LockContention | LongTransaction => {
            // A request that needs the locked rows, sent in the background: it waits.
            let url = ctx.target_url().unwrap_or_default();
            let req = if kind == LockContention {
                ctx.http.get(format!("{url}/api/v1/products?limit=5"))
            } else {
                let token = current_jwt_secret(ctx)
                    .and_then(|s| token(&s))
                    .unwrap_or_default();
                ctx.http
                    .post(format!("{url}/api/v1/orders"))
                    .bearer_auth(token)
                    .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
            };
            let probe = tokio::spawn(req.timeout(Duration::from_secs(10)).send());
            let app = kind.session_app().unwrap_or_default();
            let check = poll(VERIFY_LIMIT, || async move {
                let n = blocked_by(ctx, app).await?;
                if n > 0 {
                    Ok(format!(
                        "{n} session(s) waiting on locks held by {app} (pg_blocking_pids)"
                    ))
                } else {
                    Err("no session waiting on it yet".into())
                }
            })
            .await;
            probe.abort();
            check
        }
        ApiDown if p.text("mode") == "kill" => {
            poll(VERIFY_LIMIT, || async move {
                let s = ctx.service_state(svc::TARGET_APP).await?;
                match s.last_exit.as_ref().filter(|e| e.at >= mark.at) {
                    Some(e) => Ok(format!(
                        "target-app {} ({}); now {}, {} restarts",
                        e.describe(),
                        e.at.format("%H:%M:%S"),
                        s.state.as_str(),
                        s.restarts
                    )),
                    None => Err(format!(
                        "target-app {}; no exit since the inject",
                        s.state.as_str()
                    )),
                }
            })
            .await
        }
        RateLimit => {
            poll(VERIFY_LIMIT, || async move {
                let r = ctx.get("/api/v1/products?limit=1", short).await;
                match &r {
                    Ok(reply)
                        if reply.status == 429 && reply.code.as_deref() == Some("RATE_LIMITED") =>
                    {
                        Ok(format!("GET /api/v1/products: {}", fmt_reply(&r)))
                    }
                    _ => Err(format!("GET /api/v1/products: {}", fmt_reply(&r))),
                }
            })
            .await
        }
        ApiDown => {
            poll(VERIFY_LIMIT, || async move {
                let s = ctx.service_state(svc::TARGET_APP).await?;
                match ctx.get("/healthz", short).await {
                    Err(e) if !s.state.is_alive() => Ok(format!(
                        "target-app is {}; GET /healthz: {e}",
                        s.state.as_str()
                    )),
                    r => Err(format!(
                        "target-app {}; GET /healthz: {}",
                        s.state.as_str(),
                        fmt_reply(&r)
                    )),
                }
            })
            .await
        }
        Latency => {
            let delay = Duration::from_millis(p.int("delay_ms") as u64);
            poll(VERIFY_LIMIT, || async move {
                let r = ctx.get("/api/v1/products/1", delay + short).await;
                match &r {
                    Ok(reply) if reply.elapsed >= delay => {
                        Ok(format!("GET /api/v1/products/1: {}", fmt_reply(&r)))
                    }
                    _ => Err(format!("GET /api/v1/products/1: {}", fmt_reply(&r))),
                }
            })
            .await
        }
        HighCpu => {
            poll(VERIFY_LIMIT, || async move {
                let stats = ctx
                    .runtime
                    .stats(svc::TARGET_APP)
                    .await
                    .map_err(|e| e.to_string())?;
                if stats.cpu_percent >= 50.0 {
                    Ok(format!(
                        "target-app CPU {:.0} % of one core",
                        stats.cpu_percent
                    ))
                } else {
                    Err(format!("target-app CPU {:.0} %", stats.cpu_percent))
                }
            })
            .await
        }
        MemoryLeak => {
            let start = ctx
                .runtime
                .stats(svc::TARGET_APP)
                .await
                .map(|s| s.rss_bytes)
                .unwrap_or(0);
            let want = 2 * p.int("mb_per_s") as u64 * 1024 * 1024;
            poll(VERIFY_LIMIT, || async move {
                let rss = ctx
                    .runtime
                    .stats(svc::TARGET_APP)
                    .await
                    .map_err(|e| e.to_string())?
                    .rss_bytes;
                let grown = rss.saturating_sub(start);
                let text = format!(
                    "target-app RSS {} MiB (+{} MiB since the check started)",
                    rss >> 20,
                    grown >> 20
                );
                if grown >= want { Ok(text) } else { Err(text) }
            })
            .await
        }
        UpstreamOutage => {
            poll(VERIFY_LIMIT, || async move {
                let r = ctx
                    .get("/api/v1/products/1/price?currency=EUR", short)
                    .await;
                match &r {
                    Ok(reply) if reply.code.as_deref() == Some("UPSTREAM_UNAVAILABLE") => {
                        Ok(format!("GET /api/v1/products/1/price: {}", fmt_reply(&r)))
                    }
                    _ => Err(format!("GET /api/v1/products/1/price: {}", fmt_reply(&r))),
                }
            })
            .await
        }
        DiskFull => {
            poll(VERIFY_LIMIT, || async move {
                // A read of an uncached product makes the target try to write its entry.
                let _ = ctx.get("/api/v1/products/7", short).await;
                let cache = ctx.state.cache_dir();
                let st = nix::sys::statvfs::statvfs(&cache).map_err(|e| e.to_string())?;
                let text = format!(
                    "{} has {} KiB available of {} KiB",
                    cache.display(),
                    st.blocks_available() as u64 * st.fragment_size() as u64 / 1024,
                    st.blocks() as u64 * st.fragment_size() as u64 / 1024
                );
                if st.blocks_available() == 0 {
                    Ok(text)
                } else {
                    Err(text)
                }
            })
            .await
        }
        CachePoisoning => {
            poll(VERIFY_LIMIT, || async move {
                let r = ctx.get("/api/v1/products/1", short).await;
                match &r {
                    Ok(reply)
                        if reply.status == 500
                            && reply.code.as_deref() == Some("CACHE_CORRUPT") =>
                    {
                        Ok(format!("GET /api/v1/products/1: {}", fmt_reply(&r)))
                    }
                    _ => Err(format!("GET /api/v1/products/1: {}", fmt_reply(&r))),
                }
            })
            .await
        }
        FailedMigration if p.text("mode") != "drop_column" => {
            poll(VERIFY_LIMIT, || async move {
                let (status, body) = ctx.readyz().await?;
                let m = body["checks"]["migrations"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                if status == 503 && m == "not current" {
                    Ok(format!("/readyz {status} (migrations: {m})"))
                } else {
                    Err(format!("/readyz {status} (migrations: {m})"))
                }
            })
            .await
        }
        FailedMigration => {
            poll(VERIFY_LIMIT, || async move {
                let r = ctx.get("/api/v1/products?limit=5", short).await;
                match &r {
                    Ok(reply) if reply.code.as_deref() == Some("DB_SCHEMA_MISMATCH") => {
                        Ok(format!("GET /api/v1/products: {}", fmt_reply(&r)))
                    }
                    _ => Err(format!("GET /api/v1/products: {}", fmt_reply(&r))),
                }
            })
            .await
        }
        ConfigCorruption | CrashLoop => {
            let (want_code, log_code) = if kind == ConfigCorruption {
                (78, "CONFIG_INVALID")
            } else {
                (1, "FATAL")
            };
            poll(VERIFY_LIMIT, || async move {
                let s = ctx.service_state(svc::TARGET_APP).await?;
                let exit = s.last_exit.as_ref().filter(|e| e.at >= mark.at);
                let (count, _) = ctx.log_codes_since(mark.log, &[log_code]);
                let looping = matches!(s.state, ServiceState::Backoff | ServiceState::Failed | ServiceState::Starting | ServiceState::Exited);
                match exit {
                    Some(e) if e.code == Some(want_code) && looping => Ok(format!(
                        "target-app is {} after {} ({} restarts); {count} {log_code} log lines since the inject",
                        s.state.as_str(), e.describe(), s.restarts
                    )),
                    _ => Err(format!("target-app {}; last exit {}", s.state.as_str(), s.last_exit.as_ref().map(|e| e.describe()).unwrap_or_else(|| "none".into()))),
                }
            })
            .await
        }
        JwtRotation => {
            let old = EnvFile::parse(undo["env"].as_str().unwrap_or_default())
                .get("JWT_SECRET")
                .map(str::to_string)
                .unwrap_or_default();
            let old_token = token(&old).unwrap_or_default();
            let old_token = &old_token;
            poll(VERIFY_LIMIT, || async move {
                let url = ctx.target_url()?;
                let r = ctx
                    .send(
                        ctx.http
                            .get(format!("{url}/api/v1/orders/1"))
                            .bearer_auth(old_token),
                        short,
                    )
                    .await;
                match &r {
                    Ok(reply)
                        if reply.status == 401
                            && reply.code.as_deref() == Some("AUTH_INVALID_TOKEN") =>
                    {
                        Ok(format!(
                            "GET /api/v1/orders/1 with a token signed by the previous secret: {}",
                            fmt_reply(&r)
                        ))
                    }
                    _ => Err(format!(
                        "GET /api/v1/orders/1 with an old token: {}",
                        fmt_reply(&r)
                    )),
                }
            })
            .await
        }
        LogStorm => {
            poll(VERIFY_LIMIT, || async move {
                let (count, _) = ctx.log_codes_since(mark.log, &["INTERNAL_PANIC_REPORTED"]);
                let text = format!(
                    "{count} INTERNAL_PANIC_REPORTED lines in target-app.log since the inject"
                );
                if count >= 5 { Ok(text) } else { Err(text) }
            })
            .await
        }
    }
}

/// What any fault of the catalogue could leave behind, looked for directly (not from the
/// ledger): failpoints still set in the target or the primary upstream, sessions under a
/// fault's application name, a chaos backup table, a mount over the cache dir, a role
/// connection limit still lowered. Each finding is one line; empty means clean. A check
/// that cannot run is a finding too ("cannot check ...").
pub(crate) async fn leftovers(ctx: &Ctx) -> Vec<String> {
    let mut found = Vec::new();
    let admins = [
        (svc::TARGET_APP, ctx.target_admin()),
        (svc::UPSTREAM_PRIMARY, ctx.upstream_admin()),
    ];
    for (service, admin) in admins {
        let (base, token) = match admin {
            Ok(a) => a,
            Err(e) => {
                found.push(format!("cannot check {service} failpoints: {e}"));
                continue;
            }
        };
        let answer = ctx
            .http
            .get(format!("{base}/admin/failpoints"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match answer {
            Ok(resp) if resp.status().is_success() => {
                let v: Value = resp.json().await.unwrap_or_default();
                let active: Vec<String> = v["active"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f["name"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if !active.is_empty() {
                    found.push(format!(
                        "{service} failpoints still set: {}",
                        active.join(", ")
                    ));
                }
            }
            Ok(resp) => found.push(format!(
                "cannot check {service} failpoints: admin API answered {}",
                resp.status()
            )),
            Err(e) => found.push(format!(
                "cannot check {service} failpoints: {}",
                crate::ctx::describe_reqwest(&e)
            )),
        }
    }
    match ctx.admin_conn().await {
        Ok(mut admin) => {
            let apps = [POOL_HOG_APP, LOCKER_APP, LONG_TX_APP];
            let rows: Result<Vec<(String, i64)>, _> = sqlx::query_as(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE application_name = ANY($1) GROUP BY 1 ORDER BY 1",
            )
            .bind(&apps[..])
            .fetch_all(&mut admin)
            .await;
            match rows {
                Ok(rows) => found.extend(
                    rows.into_iter()
                        .map(|(app, n)| format!("{n} database session(s) named {app}")),
                ),
                Err(e) => found.push(format!("cannot check database sessions: {e}")),
            }
            let backup: Result<bool, _> = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(MIGRATION_BACKUP_TABLE)
                .fetch_one(&mut admin)
                .await;
            if let Ok(true) = backup {
                found.push(format!("table {MIGRATION_BACKUP_TABLE} still exists"));
            }
            let user = ctx.topology.database.app_user.clone();
            let limit: Result<i32, _> =
                sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
                    .bind(&user)
                    .fetch_one(&mut admin)
                    .await;
            if let Ok(n) = limit
                && n >= 0
            {
                found.push(format!("role {user} still has CONNECTION LIMIT {n}"));
            }
            let _ = admin.close().await;
        }
        Err(e) => found.push(format!("cannot check the database: {e}")),
    }
    if has_fault_volume(&ctx.state.cache_dir()) {
        found.push(format!(
            "a file system is still mounted over {}",
            ctx.state.cache_dir().display()
        ));
    }
    found
}
