//! Preparing a sandbox before anything runs: state dir, secrets, PostgreSQL cluster,
//! topology (ports) and the target's `.env`. Idempotent: a second call reuses all of it.

use std::path::PathBuf;

use crate::config::{RuntimeKind, SandboxConfig};
use crate::envfile::EnvFile;
use crate::error::{Error, Result};
use crate::paths::StateDir;
use crate::postgres::{Cluster, PgBins, RunAs};
use crate::secrets::{self, names as secret};
use crate::topology::{self, Ports, Topology, names as svc};

/// Everything the supervisor needs to run the sandbox.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub state: StateDir,
    pub topology: Topology,
    pub cluster: Cluster,
    pub target_app_bin: PathBuf,
}

/// Options for [`prepare`].
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Ignore the preferred ports (8000, 55432, ...) and let the kernel choose; for tests
    /// that run several sandboxes side by side. Also set by `AIOPS_RANDOM_PORTS=1`.
    pub random_ports: bool,
    /// The runtime asked for on the command line; else `[sandbox] runtime` of
    /// `aiops.toml`, else the one this state dir last ran with, else `process`.
    pub runtime: Option<RuntimeKind>,
}

pub fn prepare(state: &StateDir, opts: &PrepareOptions) -> Result<Prepared> {
    state.create()?;
    let random = opts.random_ports || std::env::var("AIOPS_RANDOM_PORTS").is_ok_and(|v| v == "1");
    let config = SandboxConfig::load(state)?;
    let (mut topology, fresh) = match Topology::load(state)? {
        Some(t) => (t, false),
        None => (Topology::build(state, Ports::allocate(random)?), true),
    };
    let runtime = opts
        .runtime
        .or(config.runtime)
        .or_else(|| {
            (!fresh)
                .then(|| RuntimeKind::parse(&topology.runtime).ok())
                .flatten()
        })
        .unwrap_or_default();
    let before = serde_json::to_string(&topology).unwrap_or_default();
    topology.apply_runtime_defaults(runtime);
    config.apply(&mut topology)?;
    if fresh || serde_json::to_string(&topology).unwrap_or_default() != before {
        topology.save(state)?;
    }
    let admin_password = secrets::get_or_create(state, secret::PG_ADMIN_PASSWORD, 24)?;
    let cluster = Cluster {
        bins: PgBins::discover()?,
        data_dir: state.pg_data_dir(),
        port: topology.database.port,
        run_as: RunAs::for_postgres()?,
        admin_user: topology.database.admin_user.clone(),
    };
    cluster.init(state, &admin_password)?;
    if !state.env_file().exists() {
        write_initial_env(state, &topology)?;
    }
    Ok(Prepared {
        state: state.clone(),
        topology,
        cluster,
        target_app_bin: find_target_app()?,
    })
}

/// The app role and database in place (created, or their password brought back to the
/// recorded one), once PostgreSQL answers. Every runtime calls it after starting it.
pub async fn ensure_app_database(p: &Prepared) -> Result<()> {
    let admin_pw = secrets::get_or_create(&p.state, secret::PG_ADMIN_PASSWORD, 24)?;
    let app_pw = secrets::get_or_create(&p.state, secret::PG_APP_PASSWORD, 24)?;
    let mut conn =
        crate::postgres::admin_connect(&p.cluster, &admin_pw, std::time::Duration::from_secs(10))
            .await?;
    crate::postgres::ensure_app_database(
        &mut conn,
        &p.topology.database.app_user,
        &app_pw,
        &p.topology.database.database,
    )
    .await
}

/// The `.env` the target starts with. Written once; afterwards only changed on purpose.
fn write_initial_env(state: &StateDir, t: &Topology) -> Result<()> {
    let app_password = secrets::get_or_create(state, secret::PG_APP_PASSWORD, 24)?;
    let jwt = secrets::get_or_create(state, secret::JWT_SECRET, 32)?;
    let admin_token = secrets::get_or_create(state, secret::TARGET_ADMIN_TOKEN, 24)?;
    let target = t.service(svc::TARGET_APP)?;
    let primary = t.service(svc::UPSTREAM_PRIMARY)?;
    let fallback = t.service(svc::UPSTREAM_FALLBACK)?;
    let db = &t.database;
    let mut env = EnvFile::parse(
        "# target-app configuration, written by `aiops up` at first start.\n\
         # Edit freely; `aiops restart target-app` applies a change.\n",
    );
    env.set(
        "DATABASE_URL",
        format!(
            "postgres://{}:{}@{}:{}/{}",
            db.app_user, app_password, db.host, db.port, db.database
        ),
    );
    env.set(
        "LISTEN_ADDR",
        format!("127.0.0.1:{}", target.port.unwrap_or(8000)),
    );
    env.set(
        "ADMIN_LISTEN_ADDR",
        format!("127.0.0.1:{}", target.admin_port.unwrap_or(8001)),
    );
    env.set("ADMIN_TOKEN", admin_token);
    env.set("POOL_SIZE", "10");
    env.set("POOL_MIN_IDLE", "1");
    env.set("POOL_ACQUIRE_TIMEOUT_MS", "2000");
    env.set("POOL_IDLE_TIMEOUT_S", "300");
    env.set("DB_STATEMENT_TIMEOUT_MS", "5000");
    env.set("JWT_SECRET", jwt);
    env.set("CACHE_DIR", state.cache_dir().display().to_string());
    env.set(
        "UPSTREAM_PRIMARY_URL",
        primary.url.clone().unwrap_or_default(),
    );
    env.set(
        "UPSTREAM_FALLBACK_URL",
        fallback.url.clone().unwrap_or_default(),
    );
    env.set("UPSTREAM_MODE", "primary");
    env.set("UPSTREAM_TIMEOUT_MS", "1000");
    env.set("LOG_DIR", state.logs_dir().display().to_string());
    env.set("LOG_LEVEL", "info");
    env.set("RATE_LIMIT_RPS", "0");
    env.set("WORKER_POLL_MS", "200");
    env.write(&state.env_file())?;
    Ok(())
}

/// The `target-app` binary: `AIOPS_TARGET_APP_BIN`, else next to the running executable
/// (how `cargo build` lays them out), else on PATH.
pub fn find_target_app() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AIOPS_TARGET_APP_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for candidate in [dir.join("target-app"), dir.join("../target-app")] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    crate::postgres::which("target-app").ok_or_else(|| {
        Error::Other(
            "the `target-app` binary was not found next to `aiops` nor on PATH; build it \
             with `cargo build --release --workspace --bins` (or set AIOPS_TARGET_APP_BIN)"
                .into(),
        )
    })
}

/// Connection string for the admin role (never logged, never shown to agents).
pub fn admin_database_url(state: &StateDir, topology: &Topology) -> Result<String> {
    let pw = secrets::get_or_create(state, secret::PG_ADMIN_PASSWORD, 24)?;
    let db = &topology.database;
    Ok(format!(
        "postgres://{}:{}@{}:{}/{}",
        db.admin_user, pw, db.host, db.port, db.database
    ))
}

pub use topology::{APP_USER, DATABASE_NAME};
