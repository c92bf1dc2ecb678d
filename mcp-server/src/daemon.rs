//! The sandbox daemon: owns the runtime (the process supervisor, or the Docker runtime)
//! and the HTTP listener.
//!
//! `aiops up` starts it in the background (or runs it in the foreground); it prepares the
//! sandbox, reaps whatever a previous daemon left behind, starts every service, serves the
//! control API and MCP (Streamable HTTP and legacy SSE) on one listener, and on SIGTERM, SIGINT or `POST /control/v1/shutdown` stops everything.

use std::sync::Arc;

use aiops_chaos::ChaosEngine;
use aiops_observe::Observer;
use aiops_sandbox::control::{self, Endpoint};
use aiops_sandbox::docker::DockerRuntime;
use aiops_sandbox::prepare::{PrepareOptions, prepare};
use aiops_sandbox::runtime::Lifecycle;
use aiops_sandbox::secrets::{self, names as secret};
use aiops_sandbox::supervisor::ProcessRuntime;
use aiops_sandbox::{Runtime, StateDir};
use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cli::DaemonArgs;
use crate::mcp::{AiopsServer, ServerOptions};

pub async fn run(state: StateDir, args: DaemonArgs) -> anyhow::Result<()> {
    init_tracing();
    let prepared = prepare(
        &state,
        &PrepareOptions {
            random_ports: args.random_ports,
            runtime: args.runtime,
        },
    )
    .context("preparing the sandbox")?;
    // A broken `[notify]` stops the start with the reason, as a broken `.env` would.
    let notify_config = crate::notify::NotifyConfig::load(&state)?;
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (another aiops, or something else, holds it; pick \
                 another with --http)",
                args.http
            )
        })?;
    let addr = listener.local_addr()?;
    let token = secrets::get_or_create(&state, secret::HTTP_TOKEN, 32)?;
    let exam_token = secrets::get_or_create(&state, secret::EXAM_TOKEN, 32)?;
    std::fs::write(state.daemon_pid_file(), std::process::id().to_string())?;

    let runtime: Arc<dyn Lifecycle> = match prepared.topology.runtime.as_str() {
        "docker" => Arc::new(
            DockerRuntime::new(prepared)
                .await
                .context("starting the Docker runtime")?,
        ),
        _ => Arc::new(ProcessRuntime::new(prepared)),
    };
    let reaped = runtime.reap_leftovers().await;
    if reaped > 0 {
        tracing::warn!(
            message = "Reaped leftover sandbox processes.",
            count = reaped
        );
    }

    let stop = Arc::new(Notify::new());
    let stop_for_api = stop.clone();
    let dyn_rt: Arc<dyn Runtime> = runtime.clone();
    let observer = Observer::new(state.clone(), dyn_rt.clone());
    observer.start_sampler();
    let chaos = ChaosEngine::new(state.clone(), dyn_rt.clone(), runtime.events());
    let cancel = CancellationToken::new();
    let options = ServerOptions {
        allow_chaos: args.allow_chaos,
        read_only: false,
        exam: false,
    };
    let events = runtime.events();
    let rest = crate::rest::RestState {
        observer: observer.clone(),
        state: state.clone(),
        runtime: dyn_rt.clone(),
        events: events.clone(),
        chaos: chaos.clone(),
        allow_chaos: args.allow_chaos,
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the HTTP client")?,
    };
    let compat = crate::rest::compat::listen(&state, &args.compat, &rest).await?;
    let notifier =
        crate::notify::Notifier::start(notify_config, format!("http://{addr}/"), cancel.clone());
    crate::notify::spawn_watcher(state.clone(), notifier, cancel.clone());
    let mcp_runtime = dyn_rt.clone();
    let server_state = state.clone();
    let exam_server = {
        let (observer, state, runtime, events) = (
            observer.clone(),
            state.clone(),
            dyn_rt.clone(),
            events.clone(),
        );
        let options = ServerOptions {
            exam: true,
            ..ServerOptions::default()
        };
        move || {
            AiopsServer::new(
                observer.clone(),
                state.clone(),
                runtime.clone(),
                events.clone(),
                &options,
            )
        }
    };
    // The control and chaos routes check the token themselves; `guarded` adds what they
    // lacked: the foreign-`Origin` refusal (403) and the body limit (413).
    let control_routes = control::router(
        dyn_rt,
        token.clone(),
        Arc::new(move || stop_for_api.notify_one()),
    )
    .merge(aiops_chaos::control::router(chaos.clone(), token.clone()));
    let app = crate::http::guarded(control_routes, vec![token.clone()])
        .merge(crate::rest::router(rest.clone(), token.clone()))
        .merge(crate::dashboard::router(
            rest,
            token.clone(),
            cancel.clone(),
        ))
        .merge(crate::http::exam_router(
            exam_server,
            exam_token,
            token.clone(),
            cancel.clone(),
        ))
        .merge(crate::http::mcp_router(
            move || {
                AiopsServer::new(
                    observer.clone(),
                    server_state.clone(),
                    mcp_runtime.clone(),
                    events.clone(),
                    &options,
                )
            },
            token,
            cancel.clone(),
        ));
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(message = "HTTP listener failed.", %error);
        }
    });
    Endpoint {
        url: format!("http://{addr}"),
        pid: std::process::id(),
    }
    .write(&state)?;
    tracing::info!(message = "Daemon listening.", %addr);

    let starter = {
        let runtime = runtime.clone();
        let chaos = chaos.clone();
        tokio::spawn(async move {
            if let Err(error) = start(runtime.as_ref(), &chaos).await {
                tracing::error!(message = "Sandbox start failed.", %error);
                runtime
                    .events()
                    .record("sandbox_start_failed", None, error.to_string());
            }
        })
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stop.notified() => tracing::info!(message = "Shutdown requested over the control API."),
        _ = term.recv() => tracing::info!(message = "SIGTERM received."),
        _ = tokio::signal::ctrl_c() => tracing::info!(message = "SIGINT received."),
    }
    starter.abort();
    cancel.cancel();
    // `aiops down` reverts every fault before the services stop.
    match chaos.stop_all().await {
        Ok(reverted) if !reverted.is_empty() => {
            tracing::info!(message = "Reverted active faults.", count = reverted.len())
        }
        Ok(_) => {}
        Err(error) => tracing::error!(message = "Reverting faults failed.", %error),
    }
    runtime.shutdown_all().await;
    server.abort();
    compat.iter().for_each(|t| t.abort());
    let _ = std::fs::remove_file(state.endpoint_file());
    let _ = std::fs::remove_file(state.daemon_pid_file());
    tracing::info!(message = "Daemon stopped.");
    Ok(())
}

/// PostgreSQL first; then revert whatever faults a previous daemon left active (some need
/// the database, and a corrupted .env must be restored before the target starts); then
/// the rest; then leases start expiring.
async fn start(runtime: &dyn Lifecycle, chaos: &ChaosEngine) -> anyhow::Result<()> {
    runtime.start_database().await?;
    match chaos.reap().await {
        Ok(reaped) if !reaped.is_empty() => tracing::warn!(
            message = "Reverted faults left active by a previous run.",
            count = reaped.len()
        ),
        Ok(_) => {}
        Err(error) => tracing::error!(message = "Reaping leftover faults failed.", %error),
    }
    runtime.start_services().await?;
    chaos.spawn_lease_keeper();
    Ok(())
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIOPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
