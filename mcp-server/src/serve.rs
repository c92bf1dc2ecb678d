//! `aiops serve` and `aiops mcp-config`.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use aiops_observe::Observer;
use aiops_sandbox::control::DaemonRuntime;
use aiops_sandbox::events::EventLog;
use aiops_sandbox::secrets::{self, names as secret};
use aiops_sandbox::{Runtime, StateDir};
use anyhow::Context;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::mcp::{AiopsServer, ServerOptions};

pub async fn serve(state: &StateDir, args: ServeArgs) -> anyhow::Result<ExitCode> {
    // stdout may carry the protocol: every log goes to stderr.
    crate::daemon::init_tracing();
    if (args.up || args.runtime.is_some()) && crate::up_down::running_daemon(state).is_none() {
        start_sandbox(state, args.runtime).await?;
    }
    let runtime: Arc<dyn Runtime> = Arc::new(DaemonRuntime::new(state.clone()));
    let observer = Observer::new(state.clone(), runtime.clone());
    state.create()?;
    let events = Arc::new(EventLog::open(&state.events_file()));
    let options = ServerOptions {
        allow_chaos: args.allow_chaos,
        read_only: args.read_only,
        exam: args.exam,
    };
    let server_state = state.clone();
    observer.start_sampler();
    match args.http {
        None => {
            tracing::info!(message = "Serving MCP over stdio.", state_dir = %state.root().display());
            let running = AiopsServer::new(observer, state.clone(), runtime, events, &options)
                .serve(rmcp::transport::stdio())
                .await
                .context("MCP initialisation over stdio failed")?;
            running.waiting().await?;
        }
        Some(addr) => {
            state.create()?;
            let token = secrets::get_or_create(state, secret::HTTP_TOKEN, 32)?;
            let cancel = CancellationToken::new();
            let app = crate::http::mcp_router(
                move || {
                    AiopsServer::new(
                        observer.clone(),
                        server_state.clone(),
                        runtime.clone(),
                        events.clone(),
                        &options,
                    )
                },
                token,
                cancel.clone(),
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            eprintln!(
                "MCP on http://{local}/mcp (Streamable HTTP) and http://{local}/sse (legacy SSE); \
                 bearer token in {}",
                state.token_file().display()
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                })
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `aiops up` as a child whose output goes to our stderr (stdout is the protocol).
async fn start_sandbox(
    state: &StateDir,
    runtime: Option<aiops_sandbox::config::RuntimeKind>,
) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("up");
    if let Some(r) = runtime {
        cmd.arg("--runtime").arg(r.as_str());
    }
    let status = cmd
        .env("AIOPS_HOME", state.root())
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(std::io::stderr())
        .status()
        .await?;
    if !status.success() {
        tracing::warn!(
            message = "The sandbox did not come up healthy; serving anyway so the tools can show why.",
            %status
        );
    }
    Ok(())
}

pub fn mcp_config(state: &StateDir) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?
        .canonicalize()
        .context("locating the aiops binary")?;
    let snippet = serde_json::json!({
        "mcpServers": {
            "aiops": {
                "command": exe,
                "args": ["serve", "--stdio", "--up"],
                "env": { "AIOPS_HOME": state.root() }
            }
        }
    });
    println!("{}", serde_json::to_string_pretty(&snippet)?);
    Ok(ExitCode::SUCCESS)
}
