//! `aiops agent run`: the scripted agent (no LLM) over the MCP surface only, as an LLM
//! agent would use it: over stdio (a child `aiops serve --stdio`) or Streamable HTTP.

use std::process::ExitCode;
use std::time::Duration;

use aiops_agent::{AgentOptions, AgentReport};
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
    let interval = Duration::from_secs(args.interval_s.max(1));
    let mut round = 0u64;
    let code = loop {
        round += 1;
        let report = aiops_agent::run_once(&client, &opts)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        print_report(&report, args.json)?;
        let code = match report.outcome.as_str() {
            "recovered" | "no_incident" => ExitCode::SUCCESS,
            "awaiting_approval" => ExitCode::from(2),
            _ => ExitCode::from(1),
        };
        if !args.watch || args.max_rounds.is_some_and(|m| round >= m) {
            break code;
        }
        // Approvals are used once.
        opts.approval_ids.clear();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break code,
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
