//! `aiops chaos …`: the operator's side of the fault catalogue. Injection happens in the
//! daemon (faults that hold database sessions must outlive this command), through its
//! chaos API.

use std::process::ExitCode;

use aiops_chaos::{ChaosClient, ChaosEngine, FaultRecord, InjectRequest};
use aiops_sandbox::StateDir;
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::cli::{ChaosArgs, ChaosCommand, ChaosInjectArgs, ChaosMonkeyArgs, ChaosStopArgs};

pub async fn run(state: &StateDir, args: ChaosArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ChaosCommand::List => list(),
        ChaosCommand::Inject(a) => inject(state, a).await,
        ChaosCommand::Status => status(state).await,
        ChaosCommand::Stop(a) => stop(state, a).await,
        ChaosCommand::Monkey(a) => monkey(state, a).await,
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
    parse_secs("--ttl", raw, 1)
}

/// `90`, `90s`, `5m`, `1h` → seconds, within `min` s – 1 h; errors name `flag`.
pub fn parse_secs(flag: &str, raw: &str, min: u64) -> anyhow::Result<u64> {
    let raw = raw.trim();
    let (num, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad {flag} `{raw}`: use e.g. 90, 90s, 5m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => bail!("bad {flag} unit `{other}`: use s, m or h"),
    };
    if !(min..=3600).contains(&secs) {
        bail!("{flag} must be between {min} s and 1 h (got {secs} s)");
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

/// The faults a monkey draws from, in catalogue order (so a seed means the same thing on
/// every machine), or an error naming the unknown ones.
pub fn monkey_allow_list(requested: &[String]) -> anyhow::Result<Vec<String>> {
    let catalogue: Vec<String> = ChaosEngine::catalogue().into_iter().map(|f| f.id).collect();
    if requested.is_empty() {
        return Ok(catalogue);
    }
    let unknown: Vec<&String> = requested
        .iter()
        .filter(|f| !catalogue.contains(f))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "unknown fault(s) {unknown:?} in --faults; known: {}",
            catalogue.join(", ")
        );
    }
    Ok(catalogue
        .into_iter()
        .filter(|f| requested.contains(f))
        .collect())
}

/// The sequence of faults a seed gives.
pub fn monkey_sequence(allow: &[String], seed: u64, n: usize) -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| allow[rng.random_range(0..allow.len())].clone())
        .collect()
}

async fn monkey(state: &StateDir, args: ChaosMonkeyArgs) -> anyhow::Result<ExitCode> {
    let every = parse_ttl(&args.every)?;
    let allow = monkey_allow_list(&args.faults)?;
    let c = client(state)?;
    let defaults: std::collections::HashMap<String, u64> = ChaosEngine::catalogue()
        .into_iter()
        .map(|f| (f.id, f.default_ttl_s))
        .collect();
    println!(
        "Chaos monkey: one fault every {every} s from [{}], seed {}{}. Ctrl-C stops it (active faults keep their lease).",
        allow.join(", "),
        args.seed,
        args.count
            .map(|n| format!(", {n} injections"))
            .unwrap_or_default()
    );
    let total = args.count.unwrap_or(u64::MAX);
    let mut round = 0u64;
    // Drawn lazily so an endless monkey needs no endless list.
    let mut sequence = monkey_sequence(&allow, args.seed, 64).into_iter();
    while round < total {
        let fault = match sequence.next() {
            Some(f) => f,
            None => {
                sequence = monkey_sequence(&allow, args.seed.wrapping_add(round), 64).into_iter();
                continue;
            }
        };
        round += 1;
        // The lease ends before the next injection: one fault at a time.
        let ttl = defaults
            .get(&fault)
            .copied()
            .unwrap_or(every)
            .min(every.saturating_sub(1).max(1));
        let req = InjectRequest {
            fault: fault.clone(),
            params: serde_json::Map::new(),
            ttl_s: Some(ttl),
            dry_run: false,
            verify: true,
        };
        let started = std::time::Instant::now();
        match c.inject(&req).await {
            Ok(outcome) => {
                let id = outcome
                    .record
                    .as_ref()
                    .map(|r| r.id.clone())
                    .unwrap_or_default();
                let effect = outcome
                    .effect
                    .map(|e| {
                        if e.verified {
                            "effect verified"
                        } else {
                            "effect NOT verified"
                        }
                    })
                    .unwrap_or("no effect check");
                println!(
                    "[{}] round {round}: injected {fault} as {id} (lease {ttl} s, {effect})",
                    chrono::Utc::now().format("%H:%M:%S")
                );
            }
            Err(e) => println!(
                "[{}] round {round}: {fault} not injected: {e}",
                chrono::Utc::now().format("%H:%M:%S")
            ),
        }
        if round < total {
            let wait = std::time::Duration::from_secs(every).saturating_sub(started.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tokio::signal::ctrl_c() => {
                    println!("Stopped; active faults revert when their lease ends (or `aiops chaos stop --all`).");
                    break;
                }
            }
        }
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

    #[test]
    fn a_monkey_seed_gives_the_same_sequence() {
        let allow =
            monkey_allow_list(&["latency".into(), "api_down".into(), "high_cpu".into()]).unwrap();
        assert_eq!(allow, ["api_down", "latency", "high_cpu"]);
        let a = monkey_sequence(&allow, 7, 20);
        assert_eq!(a, monkey_sequence(&allow, 7, 20));
        assert_ne!(a, monkey_sequence(&allow, 8, 20));
        assert!(a.iter().all(|f| allow.contains(f)));
        let err = monkey_allow_list(&["nope".into()]).unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("db_pool_exhaustion"),
            "{err}"
        );
    }
}
