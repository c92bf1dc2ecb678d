//! `aiops images build`, `aiops compose-env`, and the container clean-up `aiops down`
//! does on the Docker runtime.

use std::process::ExitCode;

use aiops_sandbox::StateDir;
use aiops_sandbox::config::RuntimeKind;
use aiops_sandbox::docker::{self, images};
use aiops_sandbox::prepare::{PrepareOptions, prepare};
use anyhow::Context;

use crate::cli::{ComposeEnvArgs, ImagesBuildArgs};

pub async fn build_images(state: &StateDir, args: ImagesBuildArgs) -> anyhow::Result<ExitCode> {
    let docker = docker::connect().await?;
    let target_app = aiops_sandbox::prepare::find_target_app()?;
    let pg = aiops_sandbox::postgres::PgBins::discover()?;
    let owner = pg_owner()?;
    let started = std::time::Instant::now();
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    progress.set_message("assembling root file systems and importing them");
    let reports = images::ensure(&docker, &target_app, &pg, owner, args.force).await;
    progress.finish_and_clear();
    let reports = reports?;
    let _ = state;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            if r.outcome == "built" {
                println!(
                    "{:<24} built: {} files, {:.1} MiB",
                    r.image,
                    r.files,
                    r.bytes as f64 / 1048576.0
                );
            } else {
                println!("{:<24} up to date", r.image);
            }
        }
        println!("Done in {:.1} s.", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::SUCCESS)
}

/// The uid/gid that owns (and runs) the PostgreSQL cluster.
fn pg_owner() -> anyhow::Result<Option<(u32, u32)>> {
    Ok(aiops_sandbox::postgres::RunAs::for_postgres()?
        .map(|r| (r.uid, r.gid))
        .or_else(|| {
            Some((
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ))
        }))
}

/// Prepare the state dir for the Docker runtime and write `$STATE/compose.env`: the
/// variables `compose/docker-compose.yml` reads (paths, ports, users, project label).
/// Written 0600 because it carries the upstreams' admin token; nothing secret is printed.
pub fn compose_env(state: &StateDir, args: ComposeEnvArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(
        state,
        &PrepareOptions {
            random_ports: args.random_ports,
            runtime: Some(RuntimeKind::Docker),
        },
    )
    .context("preparing the sandbox")?;
    let t = &prepared.topology;
    let port = |name: &str| -> anyhow::Result<u16> {
        t.service(name)?
            .port
            .with_context(|| format!("{name} has no port"))
    };
    let (pg_uid, pg_gid) = pg_owner()?.unwrap_or((0, 0));
    let root = state.root().display().to_string();
    let token = aiops_sandbox::secrets::get_or_create(
        state,
        aiops_sandbox::secrets::names::UPSTREAM_ADMIN_TOKEN,
        24,
    )?;
    let mem = |name: &str| {
        t.service(name)
            .ok()
            .and_then(|s| s.memory_limit_mb)
            .unwrap_or(256)
    };
    let lines = [
        ("AIOPS_HOME", root.clone()),
        ("AIOPS_PROJECT", docker::project_id(state.root())),
        ("AIOPS_ENV_FILE", state.env_file().display().to_string()),
        (
            "AIOPS_PG_BIN",
            images::postgres_server(&prepared.cluster.bins)
                .display()
                .to_string(),
        ),
        (
            "AIOPS_PG_DATA",
            prepared.cluster.data_dir.display().to_string(),
        ),
        ("AIOPS_PG_PORT", port("postgres")?.to_string()),
        ("AIOPS_PG_USER", format!("{pg_uid}:{pg_gid}")),
        (
            "AIOPS_USER",
            format!(
                "{}:{}",
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw()
            ),
        ),
        ("AIOPS_TARGET_PORT", port("target-app")?.to_string()),
        ("AIOPS_PRIMARY_PORT", port("upstream-primary")?.to_string()),
        (
            "AIOPS_FALLBACK_PORT",
            port("upstream-fallback")?.to_string(),
        ),
        ("AIOPS_PG_MEM", format!("{}m", mem("postgres"))),
        ("AIOPS_TARGET_MEM", format!("{}m", mem("target-app"))),
        ("AIOPS_WORKER_MEM", format!("{}m", mem("worker"))),
        (
            "AIOPS_UPSTREAM_MEM",
            format!("{}m", mem("upstream-primary")),
        ),
        ("UPSTREAM_ADMIN_TOKEN", token),
    ];
    let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let path = state.root().join("compose.env");
    aiops_sandbox::paths::write_atomic(&path, text.as_bytes(), 0o600)?;
    println!("Wrote {} (mode 0600).", path.display());
    println!("Next:");
    println!(
        "  docker compose -p aiops-{} --env-file {} -f compose/docker-compose.yml up -d",
        docker::project_id(state.root()),
        path.display()
    );
    println!("  AIOPS_HOME={root} aiops serve --stdio --runtime docker");
    Ok(ExitCode::SUCCESS)
}

/// Remove this state dir's containers (those `aiops` created; compose's are stopped).
pub async fn remove_containers(state: &StateDir) -> anyhow::Result<usize> {
    let docker = docker::connect().await?;
    let n = docker::remove_project(&docker, &docker::project_id(state.root())).await?;
    docker::release_cache_mount(state);
    Ok(n)
}
