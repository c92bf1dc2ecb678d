//! `aiops chaos …`: the operator's side of the fault catalogue. Injection happens in the
//! daemon (faults that hold database sessions must outlive this command), through its
//! chaos API.

use std::process::ExitCode;

use aiops_chaos::{ChaosClient, ChaosEngine, FaultRecord, InjectRequest};
use aiops_sandbox::StateDir;
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::{ChaosArgs, ChaosCommand, ChaosInjectArgs, ChaosStopArgs};

pub async fn run(state: &StateDir, args: ChaosArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ChaosCommand::List => list(),
        ChaosCommand::Inject(a) => inject(state, a).await,
        ChaosCommand::Status => status(state).await,
        ChaosCommand::Stop(a) => stop(state, a).await,
    }
}

fn client(state: &StateDir) -> anyhow::Result<ChaosClient> {
    ChaosClient::from_state(state)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the sandbox is not running; start it with `aiops up`")
}

fn list() -> anyhow::Result<ExitCode> {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_width(140)
        .set_header(vec!["FAULT", "TARGET", "DEFAULT TTL", "WHAT IT DOES"]);
    for f in ChaosEngine::catalogue() {
        table.add_row(vec![
            f.id.clone(),
            f.target.clone(),
            format!("{} s", f.default_ttl_s),
            f.description.clone(),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// `90`, `90s`, `5m`, `1h` → seconds, within 1 s – 1 h.
pub fn parse_ttl(raw: &str) -> anyhow::Result<u64> {
    let raw = raw.trim();
    let (num, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad --ttl `{raw}`: use e.g. 90, 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => bail!("bad --ttl unit `{other}`: use s, m or h"),
    };
    if !(1..=3600).contains(&secs) {
        bail!("--ttl must be between 1 s and 1 h (got {secs} s)");
    }
    Ok(secs)
}

/// `KEY=VALUE` pairs; VALUE as JSON when it parses, else as a string.
pub fn parse_params(
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("bad --param `{pair}`: use KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
        map.insert(k.trim().to_string(), value);
    }
    Ok(map)
}

async fn inject(state: &StateDir, args: ChaosInjectArgs) -> anyhow::Result<ExitCode> {
    let req = InjectRequest {
        fault: args.fault,
        params: parse_params(&args.params)?,
        ttl_s: args.ttl.as_deref().map(parse_ttl).transpose()?,
        dry_run: args.dry_run,
        verify: true,
    };
    let outcome = client(state)?
        .inject(&req)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}",
        if outcome.dry_run {
            "Dry run: nothing changed. Plan:"
        } else {
            "Done:"
        }
    );
    for step in &outcome.plan {
        println!("  - {step}");
    }
    if let Some(r) = &outcome.record {
        println!(
            "Fault {} ({}) active until {}; stop it with `aiops chaos stop {}`.",
            r.id, r.fault, r.lease_expires_at, r.id
        );
    }
    if let Some(e) = &outcome.effect {
        println!(
            "Effect {} after {} ms: {}",
            if e.verified {
                "verified"
            } else {
                "NOT verified"
            },
            e.waited_ms,
            e.observed
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn records_table(records: &[FaultRecord]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "ID",
        "FAULT",
        "TARGET",
        "STATE",
        "LEASE UNTIL",
        "AUTO-REVERT",
        "ENDED",
        "ERROR",
    ]);
    for r in records {
        table.add_row(vec![
            r.id.clone(),
            r.fault.clone(),
            r.target.clone(),
            r.state.clone(),
            r.lease_expires_at.to_string(),
            r.auto_revert.to_string(),
            r.end_reason.clone().unwrap_or_else(|| "-".into()),
            r.error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

async fn status(state: &StateDir) -> anyhow::Result<ExitCode> {
    let records = client(state)?
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if records.is_empty() {
        println!("No faults injected.");
    } else {
        println!("{}", records_table(&records));
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop(state: &StateDir, args: ChaosStopArgs) -> anyhow::Result<ExitCode> {
    let c = client(state)?;
    let records = match args.id {
        Some(id) => vec![c.stop(&id).await.map_err(|e| anyhow::anyhow!("{e}"))?],
        None => c.stop_all().await.map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    if records.is_empty() {
        println!("No active fault.");
    } else {
        println!("{}", records_table(&records));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_params_parse_or_say_why() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("2m").unwrap(), 120);
        assert_eq!(parse_ttl("1h").unwrap(), 3600);
        assert!(parse_ttl("2h").is_err());
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5d").unwrap_err().to_string().contains("unit"));
        let p = parse_params(&["connections=60".into(), "mode=hang".into()]).unwrap();
        assert_eq!(p["connections"], 60);
        assert_eq!(p["mode"], "hang");
        assert!(parse_params(&["novalue".into()]).is_err());
    }
}
