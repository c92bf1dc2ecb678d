//! `aiops drill`: score an agent on real faults (see `aiops-drill`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use aiops_drill::{AgentSpec, Drill, DrillOptions, Progress, report};
use aiops_sandbox::StateDir;
use anyhow::bail;

use crate::chaos_cmds::{monkey_allow_list, parse_secs};
use crate::cli::DrillArgs;

pub async fn run(state: &StateDir, args: DrillArgs) -> anyhow::Result<ExitCode> {
    let requested: Vec<String> = if args.faults.trim() == "all" {
        Vec::new()
    } else {
        args.faults
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let faults = monkey_allow_list(&requested)?;
    if args.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let agent = match (&args.agent_cmd, args.agent.as_str()) {
        (Some(cmd), _) if cmd.trim().is_empty() => bail!("--agent-cmd is empty"),
        (Some(cmd), _) => AgentSpec::Command(cmd.clone()),
        (None, "scripted") => AgentSpec::Scripted,
        (None, other) => bail!(
            "unknown --agent `{other}`: the built-in agent is `scripted`; run any other with --agent-cmd \"...\""
        ),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let opts = DrillOptions {
        noops: args
            .noop
            .unwrap_or_else(|| aiops_drill::plan::default_noops(faults.len() * args.trials)),
        faults,
        trials: args.trials,
        seed,
        agent,
        timeout: Duration::from_secs(parse_secs("--timeout", &args.timeout, 5)?),
        durable: Duration::from_secs(parse_secs("--durable", &args.durable, 1)?),
        noop_window: Duration::from_secs(parse_secs("--noop-window", &args.noop_window, 1)?),
        approve: !args.deny_approvals,
    };
    let drill = Drill::connect(state.clone()).await?;
    eprintln!(
        "Drill: {} fault(s) × {} + {} no-fault trial(s), seed {}, agent {}; results in {}",
        opts.faults.len(),
        opts.trials,
        opts.noops,
        opts.seed,
        opts.agent.describe(),
        drill.dir().display()
    );
    let json = args.json;
    let results = drill
        .run(&opts, |p| {
            if json {
                return;
            }
            let mut err = std::io::stderr();
            let _ = match p {
                Progress::TrialStarted { trial, of } => {
                    write!(err, "[{}/{of}] {:<22}", trial.index, trial.fault)
                }
                Progress::Phase { what, .. } => write!(err, " {what}…"),
                Progress::TrialFinished(r) => writeln!(
                    err,
                    " {} (detect {}, mitigate {}{})",
                    if r.success { "PASS" } else { "FAIL" },
                    r.time_to_detect_ms
                        .map_or("-".into(), |m| format!("{:.1} s", m as f64 / 1000.0)),
                    r.time_to_mitigate_ms
                        .map_or("-".into(), |m| format!("{:.1} s", m as f64 / 1000.0)),
                    if r.notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", r.notes.join("; "))
                    }
                ),
            };
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{}", report::table(&results));
        println!(
            "Results: {}/results.md and results.json",
            drill.dir().display()
        );
    }
    Ok(if results.summary.passed == results.summary.trials {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
