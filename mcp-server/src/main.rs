//! `aiops`: the command line, the sandbox daemon and the MCP server.
//!
//! A thin binary over library crates: `main` calls `try_main`, maps errors to exit codes,
//! and does nothing else. The work lives in `aiops-sandbox` and friends.

mod agent_cmds;
mod bench;
mod chaos_cmds;
mod cli;
mod control_metrics;
mod daemon;
mod dashboard;
mod docker_cmds;
mod drill_cmds;
mod http;
mod load;
mod mcp;
mod notify;
mod open_cmd;
mod output;
mod remediation_cmds;
mod rest;
mod serve;
mod service_cmds;
mod soak;
mod sse;
mod up_down;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match try_main(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn try_main(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    let state = aiops_sandbox::StateDir::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use cli::Command::*;
        match cli.command {
            Up(args) => up_down::up(&state, args).await,
            Down(args) => up_down::down(&state, args).await,
            Status(args) => service_cmds::status(&state, args).await,
            Logs(args) => service_cmds::logs(&state, args).await,
            Start(args) => service_cmds::operate(&state, "start", args).await,
            Stop(args) => service_cmds::operate(&state, "stop", args).await,
            Restart(args) => service_cmds::operate(&state, "restart", args).await,
            Kill(args) => service_cmds::kill(&state, args).await,
            Load(args) => load::run(&state, args).await,
            Serve(args) => serve::serve(&state, args).await,
            Images(cli::ImagesCommand::Build(args)) => {
                docker_cmds::build_images(&state, args).await
            }
            ComposeEnv(args) => docker_cmds::compose_env(&state, args),
            McpConfig => serve::mcp_config(&state),
            Open(args) => open_cmd::run(&state, args).await,
            Bench(args) => bench::run(&state, args).await,
            Chaos(args) => chaos_cmds::run(&state, args).await,
            Action(args) => remediation_cmds::action(&state, args).await,
            Approvals => remediation_cmds::approvals(&state),
            Approve(args) => remediation_cmds::decide(&state, args, true),
            Deny(args) => remediation_cmds::decide(&state, args, false),
            Audit(args) => remediation_cmds::audit(&state, args).await,
            Incidents(args) => remediation_cmds::incidents(&state, args),
            Agent(args) => match args.command {
                cli::AgentCommand::Run(a) => agent_cmds::run(&state, a).await,
            },
            Drill(args) => drill_cmds::run(&state, args).await,
            Daemon(args) => daemon::run(state, args).await.map(|()| ExitCode::SUCCESS),
        }
    })
}
