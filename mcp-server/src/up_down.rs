//! `aiops up` and `aiops down`.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use aiops_sandbox::control::{ControlClient, Endpoint};
use aiops_sandbox::procinfo;
use aiops_sandbox::runtime::HealthStatus;
use aiops_sandbox::{Runtime, ServiceState, ServiceStatus, StateDir};
use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{DaemonArgs, DownArgs, UpArgs};
use crate::output::services_table;

/// The daemon of this state dir, when one is alive.
pub fn running_daemon(state: &StateDir) -> Option<Endpoint> {
    Endpoint::read(state).filter(|ep| procinfo::is_alive(ep.pid))
}

pub async fn up(state: &StateDir, args: UpArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if args.foreground {
        crate::daemon::run(
            state.clone(),
            DaemonArgs {
                http: args.http,
                random_ports: args.random_ports,
                runtime: args.runtime,
                allow_chaos: args.allow_chaos,
                compat: args.compat.clone(),
            },
        )
        .await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(ep) = running_daemon(state) {
        println!(
            "The sandbox is already up (daemon pid {}, {}).",
            ep.pid, ep.url
        );
        let client = ControlClient::from_state(state)?;
        println!("{}", services_table(&client.services().await?));
        return Ok(ExitCode::SUCCESS);
    }
    state.create()?;
    // A stale endpoint file would make us talk to a dead daemon.
    let _ = std::fs::remove_file(state.endpoint_file());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.daemon_log())
        .with_context(|| format!("opening {}", state.daemon_log().display()))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("daemon")
        .arg("--http")
        .arg(args.http.to_string())
        .env("AIOPS_HOME", state.root())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    if args.random_ports {
        cmd.arg("--random-ports");
    }
    if let Some(runtime) = args.runtime {
        cmd.arg("--runtime").arg(runtime.as_str());
    }
    if args.allow_chaos {
        cmd.arg("--allow-chaos");
    }
    if args.compat.compat_ports {
        cmd.arg("--compat-ports")
            .arg("--compat-chaos-addr")
            .arg(args.compat.compat_chaos_addr.to_string())
            .arg("--compat-actions-addr")
            .arg(args.compat.compat_actions_addr.to_string());
    }
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: Ctrl-C in this terminal must not stop the sandbox.
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().context("starting the aiops daemon")?;
    let daemon_pid = child.id();

    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(Duration::from_millis(100));
    progress.set_message("starting the daemon");
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last: Vec<ServiceStatus> = Vec::new();
    let outcome: Result<(), String> = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the daemon exited ({status}) during start-up"));
        }
        if Instant::now() > deadline {
            break Err(format!("not healthy after {} s", args.timeout));
        }
        if let Ok(client) = ControlClient::from_state(state)
            && let Ok(services) = client.services().await
        {
            progress.set_message(
                services
                    .iter()
                    .map(|s| {
                        let mark = match (s.state, s.health.status) {
                            (_, HealthStatus::Healthy) => "✔",
                            (ServiceState::Failed | ServiceState::Exited, _) => "✘",
                            _ => "…",
                        };
                        format!("{mark} {}", s.name)
                    })
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            let all_healthy = !services.is_empty()
                && services
                    .iter()
                    .all(|s| s.health.status == HealthStatus::Healthy);
            let broken: Vec<&ServiceStatus> = services
                .iter()
                .filter(|s| matches!(s.state, ServiceState::Failed | ServiceState::Exited))
                .collect();
            last = services.clone();
            if all_healthy {
                break Ok(());
            }
            if let Some(b) = broken.first() {
                break Err(format!(
                    "{} is {} ({})",
                    b.name,
                    b.state.as_str(),
                    b.last_exit
                        .as_ref()
                        .map(|e| e.describe())
                        .unwrap_or_default()
                ));
            }
            // A service in backoff keeps crashing: say so rather than wait out the timeout.
            if let Some(b) = services
                .iter()
                .find(|s| s.state == ServiceState::Backoff && s.restarts >= 2)
            {
                break Err(format!(
                    "{} keeps exiting ({}, {} restarts)",
                    b.name,
                    b.last_exit
                        .as_ref()
                        .map(|e| e.describe())
                        .unwrap_or_default(),
                    b.restarts
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    match outcome {
        Ok(()) => {
            let ep = Endpoint::read(state).context("the daemon wrote no endpoint file")?;
            println!("{}", services_table(&last));
            let topology = aiops_sandbox::topology::Topology::load(state)?
                .context("no topology.json after start-up")?;
            println!("Sandbox healthy in {:.2} s.", elapsed.as_secs_f64());
            println!(
                "  target app:   {}",
                topology.target_url().unwrap_or_default()
            );
            println!(
                "  health:       {}/api/v1/health",
                topology.target_url().unwrap_or_default()
            );
            println!(
                "  PostgreSQL:   127.0.0.1:{} (database {}, role {})",
                topology.database.port, topology.database.database, topology.database.app_user
            );
            println!("  aiops HTTP:   {} (daemon pid {daemon_pid})", ep.url);
            println!(
                "  HTTP token:   {} (send as `Authorization: Bearer <token>`)",
                state.token_file().display()
            );
            println!(
                "  dashboard:    {}/ (`aiops open` logs a browser in)",
                ep.url
            );
            println!("  state dir:    {}", state.root().display());
            println!("Stop with `aiops down`.");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!(
                "The sandbox did not become healthy: {why} (after {:.1} s).",
                elapsed.as_secs_f64()
            );
            if !last.is_empty() {
                eprintln!("{}", services_table(&last));
            }
            let tail =
                aiops_sandbox::supervisor::tail_lines(&state.daemon_log(), 15).unwrap_or_default();
            if !tail.is_empty() {
                eprintln!("Last lines of {}:", state.daemon_log().display());
                for l in tail {
                    eprintln!("  {l}");
                }
            }
            eprintln!(
                "The daemon is left running so you can look (`aiops status`, `aiops logs \
                 SERVICE`); `aiops down` stops it."
            );
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn down(state: &StateDir, args: DownArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut notes = Vec::new();
    if let Some(ep) = running_daemon(state) {
        match ControlClient::from_state(state) {
            Ok(client) => {
                if let Err(e) = client.shutdown().await {
                    notes.push(format!("graceful shutdown failed: {e}"));
                }
            }
            Err(e) => notes.push(format!("cannot reach the daemon: {e}")),
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while procinfo::is_alive(ep.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if procinfo::is_alive(ep.pid) {
            notes.push(format!("daemon pid {} did not exit; killed it", ep.pid));
            let _ = kill(Pid::from_raw(ep.pid as i32), Signal::SIGKILL);
        }
    }
    // Whatever is left (the daemon was SIGKILLed, or did not finish) goes now.
    let leftovers = procinfo::sandbox_processes(state.root());
    if !leftovers.is_empty() {
        notes.push(format!("stopped {} leftover process(es)", leftovers.len()));
        for pid in &leftovers {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !procinfo::sandbox_processes(state.root()).is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for pid in procinfo::sandbox_processes(state.root()) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    // On the Docker runtime, containers a SIGKILLed daemon left (their restart policy
    // would bring back any process killed above).
    if let Ok(Some(topology)) = aiops_sandbox::topology::Topology::load(state)
        && topology.runtime == "docker"
    {
        match crate::docker_cmds::remove_containers(state).await {
            Ok(0) => {}
            Ok(n) => notes.push(format!("removed {n} leftover container(s)")),
            Err(e) => notes.push(format!("cannot clean up containers: {e}")),
        }
    }
    let _ = std::fs::remove_file(state.endpoint_file());
    let _ = std::fs::remove_file(state.daemon_pid_file());
    for n in &notes {
        println!("note: {n}");
    }
    if args.purge {
        match std::fs::remove_dir_all(state.root()) {
            Ok(()) => println!("Removed {}.", state.root().display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("removing {}", state.root().display())),
        }
    }
    println!(
        "Sandbox down in {:.2} s; no sandbox process left.",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
