//! `aiops status`, `logs`, `start`, `stop`, `restart`, `kill`.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use aiops_sandbox::control::ControlClient;
use aiops_sandbox::runtime::KillSignal;
use aiops_sandbox::supervisor::{StateFile, tail_lines};
use aiops_sandbox::topology::Topology;
use aiops_sandbox::{Runtime, ServiceState, ServiceStatus, StateDir};
use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{KillArgs, LogsArgs, ServiceArg, StatusArgs};
use crate::output::services_table;
use crate::up_down::running_daemon;

pub async fn status(state: &StateDir, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let daemon = running_daemon(state);
    let (services, source) = match &daemon {
        Some(_) => (
            ControlClient::from_state(state)?.services().await?,
            "daemon",
        ),
        None => match StateFile::read(state) {
            // The daemon is gone: report the last state it wrote, with dead pids shown as
            // such rather than as running.
            Some(file) => (
                file.services
                    .into_iter()
                    .map(|mut s| {
                        if s.state.is_alive()
                            && !s.pid.is_some_and(aiops_sandbox::procinfo::is_alive)
                        {
                            s.state = ServiceState::Stopped;
                            s.pid = None;
                            s.uptime_s = None;
                        }
                        s
                    })
                    .collect(),
                "last state file",
            ),
            None => (Vec::new(), "none"),
        },
    };
    let runtime = aiops_sandbox::topology::Topology::load(state)
        .ok()
        .flatten()
        .map(|t| t.runtime)
        .unwrap_or_else(|| "process".into());
    if args.json {
        let out = json!({
            "runtime": runtime,
            "daemon": {
                "running": daemon.is_some(),
                "pid": daemon.as_ref().map(|d| d.pid),
                "url": daemon.as_ref().map(|d| d.url.clone()),
                "source": source,
            },
            "state_dir": state.root(),
            "services": services.iter().map(service_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match &daemon {
            Some(d) => println!(
                "Daemon: running (pid {}, {}); runtime: {runtime}.",
                d.pid, d.url
            ),
            None => println!("Daemon: not running. Start the sandbox with `aiops up`."),
        }
        if !services.is_empty() {
            println!("{}", services_table(&services));
        }
        for s in services
            .iter()
            .filter(|s| !s.health.detail.is_empty() && s.state.is_alive())
        {
            println!("  {}: {}", s.name, s.health.detail);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn service_json(s: &ServiceStatus) -> serde_json::Value {
    json!({
        "name": s.name,
        "kind": s.kind,
        "state": s.state,
        "pid": s.pid,
        "uptime_s": s.uptime_s,
        "restarts": s.restarts,
        "health": s.health.status,
        "health_detail": s.health.detail,
        "last_exit": s.last_exit,
        "port": s.port,
        "log_path": s.log_path,
    })
}

pub async fn operate(state: &StateDir, op: &str, args: ServiceArg) -> anyhow::Result<ExitCode> {
    let client = ControlClient::from_state(state)?;
    let status = match op {
        "start" => client.start(&args.service).await?,
        "stop" => client.stop(&args.service).await?,
        "restart" => client.restart(&args.service).await?,
        _ => bail!("unknown operation {op}"),
    };
    println!("{}", services_table(&[status]));
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(state: &StateDir, args: KillArgs) -> anyhow::Result<ExitCode> {
    let signal = KillSignal::parse(&args.signal).with_context(|| {
        format!(
            "unknown signal `{}`; allowed: TERM, KILL, INT, STOP, CONT",
            args.signal
        )
    })?;
    let client = ControlClient::from_state(state)?;
    let status = client.kill(&args.service, signal).await?;
    println!("{}", services_table(&[status]));
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(state: &StateDir, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let path = if args.service == "aiops" {
        state.daemon_log()
    } else {
        let topology = Topology::load(state)?
            .context("no sandbox here yet (no topology.json); run `aiops up` first")?;
        let spec = topology.service(&args.service)?;
        if args.console {
            spec.console_log_path.clone()
        } else {
            spec.log_path.clone()
        }
    };
    let mut out = std::io::stdout().lock();
    for line in tail_lines(&path, args.lines)? {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow by polling the size: simple, and survives the file being created late.
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() < pos {
            pos = 0; // truncated or rotated
        }
        if meta.len() > pos {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
}
