//! `aiops agent run`: the scripted agent (no LLM) over the MCP surface only, as an LLM
//! agent would use it: over stdio (a child `aiops serve --stdio`) or Streamable HTTP.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiops_agent::{AgentOptions, AgentReport, WatchOptions};
use aiops_sandbox::StateDir;
use anyhow::Context;

use crate::cli::AgentRunArgs;

pub async fn run(state: &StateDir, args: AgentRunArgs) -> anyhow::Result<ExitCode> {
    let client = match &args.url {
        Some(url) => {
            let token = match &args.token {
                Some(t) => t.clone(),
                None => std::fs::read_to_string(state.token_file())
                    .with_context(|| {
                        format!(
                            "no --token and cannot read {}",
                            state.token_file().display()
                        )
                    })?
                    .trim()
                    .to_string(),
            };
            aiops_agent::connect_http(url, &token)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => aiops_agent::connect_stdio(&std::env::current_exe()?, state.root())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let mut opts = AgentOptions::default();
    for pair in &args.approvals {
        let (tool, id) = pair
            .split_once('=')
            .with_context(|| format!("bad --approval `{pair}`: use TOOL=APPROVAL_ID"))?;
        opts.approval_ids.insert(tool.to_string(), id.to_string());
    }
    let code_of = |r: &AgentReport| match r.outcome.as_str() {
        "recovered" | "no_incident" => ExitCode::SUCCESS,
        "awaiting_approval" => ExitCode::from(2),
        _ => ExitCode::from(1),
    };
    let code = if !args.watch {
        let report = aiops_agent::run_once(&client, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        print_report(&report, args.json)?;
        code_of(&report)
    } else {
        let w = WatchOptions {
            interval: Duration::from_secs(args.interval_s.max(1)),
            deadline: args
                .timeout_s
                .map(|s| Instant::now() + Duration::from_secs(s)),
            stop_when_recovered: args.until_recovered,
            max_rounds: args.max_rounds,
        };
        let json = args.json;
        let watching = aiops_agent::watch(&client, &opts, &w, |pass| match pass {
            Ok(report) => {
                if let Err(error) = print_report(report, json) {
                    tracing::warn!(message = "Cannot print the report.", %error);
                }
            }
            Err(error) => eprintln!("pass failed (watching on): {error}"),
        });
        tokio::select! {
            last = watching => last.as_ref().map_or(ExitCode::from(1), code_of),
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    };
    let _ = client.cancel().await;
    Ok(code)
}

fn print_report(r: &AgentReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    println!("Outcome: {}", r.outcome);
    for (i, h) in r.hypotheses.iter().take(3).enumerate() {
        println!(
            "  hypothesis {}: {} in {} (confidence {:.2}, runbook {})",
            i + 1,
            h.fault_class,
            h.component,
            h.confidence,
            h.runbook_id
        );
    }
    for a in &r.actions {
        println!(
            "  action {} {} → {}{}",
            a.tool,
            a.args,
            a.status,
            if a.verified { ", verified" } else { "" }
        );
    }
    if let Some(p) = &r.pending_approval {
        println!(
            "  waiting for a human: `aiops approve {}`, then `aiops agent run --approval {}={}`",
            p.approval_id, p.tool, p.approval_id
        );
    }
    if let Some(id) = &r.incident_id {
        println!("  report: incident://{id} (`aiops incidents {id}`)");
    }
    println!(
        "  time to detect {} ms, time to mitigate {} ms",
        r.detect_ms, r.mitigate_ms
    );
    Ok(())
}
