//! `aiops action`, `aiops approvals`, `aiops approve`, `aiops deny`, `aiops audit`: the
//! operator's side of remediation. The same library path as the MCP tools: plan → policy
//! → audit → execute → verify.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aiops_remediation::{ActionRequest, Caller, Remediator};
use aiops_sandbox::StateDir;
use aiops_sandbox::control::DaemonRuntime;
use aiops_sandbox::events::EventLog;
use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::{ActionArgs, AuditArgs, DecideArgs, IncidentsArgs};

pub fn remediator(state: &StateDir) -> anyhow::Result<Remediator> {
    Remediator::new(
        state.clone(),
        Arc::new(DaemonRuntime::new(state.clone())),
        Arc::new(EventLog::open(&state.events_file())),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn action(state: &StateDir, args: ActionArgs) -> anyhow::Result<ExitCode> {
    let r = remediator(state)?;
    let req = ActionRequest {
        action: args.action,
        params: crate::chaos_cmds::parse_params(&args.params)?,
        dry_run: args.dry_run,
        approval_id: args.approval_id,
    };
    let outcome = r
        .run(
            req,
            Caller {
                client: "cli".into(),
                session: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let value = serde_json::to_value(&outcome)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", outcome.message);
        println!(
            "Plan ({} risk) on {}:",
            outcome.plan.risk, outcome.plan.target
        );
        for s in &outcome.plan.steps {
            println!("  - {s}");
        }
        println!("Expected effect: {}", outcome.plan.expected_effect);
        println!(
            "Policy: {} ({})",
            outcome.policy.decision, outcome.policy.reason
        );
        if let Some(id) = &outcome.approval_id {
            println!(
                "Approval id: {id} (grant with `aiops approve {id}`, then run again with --approval-id {id})"
            );
        }
        if let Some(v) = &outcome.verification {
            println!(
                "Verification: {}",
                if v.passed { "passed" } else { "FAILED" }
            );
            for c in &v.checks {
                println!(
                    "  {} {}: {} (expected {})",
                    if c.passed { "✔" } else { "✘" },
                    c.name,
                    c.observed,
                    c.expected
                );
            }
        }
    }
    let ok = !matches!(value["status"].as_str(), Some("failed") | Some("refused"));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn approvals(state: &StateDir) -> anyhow::Result<ExitCode> {
    let r = remediator(state)?;
    let pending = r.pending_approvals().map_err(|e| anyhow::anyhow!("{e}"))?;
    if pending.is_empty() {
        println!("No pending approval.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "ID",
        "ACTION",
        "PARAMS",
        "REQUESTED BY",
        "REQUESTED AT",
    ]);
    for a in pending {
        let v = serde_json::to_value(&a)?;
        table.add_row(vec![
            v["id"].as_str().unwrap_or("").to_string(),
            v["action"].as_str().unwrap_or("").to_string(),
            v["params"].to_string(),
            v["caller"].to_string(),
            v["requested_at"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

pub fn decide(state: &StateDir, args: DecideArgs, approve: bool) -> anyhow::Result<ExitCode> {
    let r = remediator(state)?;
    let by = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    let a = r
        .decide(&args.id, approve, &by)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let v = serde_json::to_value(&a)?;
    println!(
        "{} {} ({}): now {}.",
        if approve { "Approved" } else { "Denied" },
        args.id,
        v["action"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or("")
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(state: &StateDir, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let r = remediator(state)?;
    let lines = r
        .audit_tail(args.lines)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for l in &lines {
        println!("{}", serde_json::to_string(l)?);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let path = state.root().join("audit").join("audit.jsonl");
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > pos {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path).context("open the audit log")?;
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = String::new();
            f.read_to_string(&mut buf)?;
            pos += buf.len() as u64;
            print!("{buf}");
        }
    }
}

pub fn incidents(state: &StateDir, args: IncidentsArgs) -> anyhow::Result<ExitCode> {
    use aiops_sandbox::incidents;
    if let Some(id) = args.id {
        let (report, md) = incidents::report(state, &id).with_context(|| {
            format!("no incident report `{id}` (list them with `aiops incidents`)")
        })?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{md}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let all = incidents::reports(state);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        println!("No incident report yet.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["ID", "CREATED", "RESOLVED", "TITLE", "BY"]);
    for r in all {
        table.add_row(vec![
            r.id.clone(),
            r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            if r.resolved { "yes" } else { "no" }.to_string(),
            r.title.clone(),
            r.client.clone(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
