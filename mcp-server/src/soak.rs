//! `aiops bench soak`: the whole tool under load at once, bounded in time, printing
//! figures (never asserting them).
//!
//! For `--seconds`: `aiops load` drives the target (open loop, every acknowledged order
//! recorded), `--sessions` MCP sessions over Streamable HTTP and `--sse-sessions` over
//! legacy SSE call observation tools in a loop, and `aiops drill` injects faults and has
//! the scripted agent fix them. Then: MCP latency (p50/p99) and errors per transport, the
//! target's error rate outside fault windows (a fault's window runs from its injection to
//! `--settle-s` after its revert, from the chaos ledger), the daemon's RSS over the run,
//! and whether every order the target acknowledged is in the database.
//!
//! Not responsible for judging the figures: it prints them; docs/reliability.md keeps them.

use std::collections::HashSet;
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use aiops_sandbox::StateDir;
use aiops_sandbox::control::Endpoint;
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::{Stream, StreamExt};
use hdrhistogram::Histogram;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

use crate::cli::BenchSoakArgs;

/// What each session calls, in turn (each session starts at a different place).
const TOOLS: &[(&str, &str)] = &[
    ("sandbox_status", "{}"),
    ("check_health", "{}"),
    ("get_metrics", r#"{"window_s": 20}"#),
    ("query_logs", r#"{"limit": 20}"#),
    ("list_events", r#"{"limit": 50}"#),
    ("db_diagnostics", "{}"),
    ("process_stats", "{}"),
    ("disk_usage", "{}"),
    ("inspect_config", "{}"),
    ("incident_snapshot", "{}"),
];

/// One session's tally.
struct Tally {
    hist: Histogram<u64>,
    calls: u64,
    /// Protocol or transport failures (the call got no answer, or a JSON-RPC error).
    failures: u64,
    /// Answers with `isError: true` (e.g. "database unreachable" during a fault).
    tool_errors: u64,
    connect_failed: bool,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            calls: 0,
            failures: 0,
            tool_errors: 0,
            connect_failed: false,
        }
    }
    fn add(&mut self, o: &Tally) {
        let _ = self.hist.add(&o.hist);
        self.calls += o.calls;
        self.failures += o.failures;
        self.tool_errors += o.tool_errors;
        self.connect_failed |= o.connect_failed;
    }
}

fn args_of(json: &str) -> JsonObject {
    serde_json::from_str(json).unwrap_or_default()
}

async fn http_session(
    url: String,
    token: String,
    start: usize,
    deadline: Instant,
    think: Duration,
) -> Tally {
    let mut t = Tally::new();
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url).auth_header(token),
    );
    let Ok(client) = ().serve(transport).await else {
        t.connect_failed = true;
        return t;
    };
    let mut n = start;
    while Instant::now() < deadline {
        let (tool, args) = TOOLS[n % TOOLS.len()];
        n += 1;
        let p = CallToolRequestParams::new(tool).with_arguments(args_of(args));
        let t0 = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), client.call_tool(p)).await;
        let _ = t.hist.record(t0.elapsed().as_micros().max(1) as u64);
        t.calls += 1;
        match r {
            Ok(Ok(r)) if r.is_error == Some(true) => t.tool_errors += 1,
            Ok(Ok(_)) => {}
            _ => t.failures += 1,
        }
        tokio::time::sleep(think).await;
    }
    let _ = client.cancel().await;
    t
}

/// A minimal legacy-SSE client: the event stream, read event by event.
struct SseReader {
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseReader {
    /// The next `(event, data)`, skipping keep-alives.
    async fn next(&mut self, limit: Duration) -> anyhow::Result<(String, String)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Ok((event, data));
                }
                continue;
            }
            let chunk = tokio::time::timeout(limit, self.stream.next())
                .await
                .context("no SSE event in time")?
                .context("the SSE stream ended")??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Read until the answer to request `id`.
    async fn answer(&mut self, id: u64, limit: Duration) -> anyhow::Result<Value> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let (_, data) = self.next(left).await?;
            let v: Value = serde_json::from_str(&data)?;
            if v["id"] == id {
                return Ok(v);
            }
        }
    }
}

async fn sse_session(
    base: String,
    token: String,
    start: usize,
    deadline: Instant,
    think: Duration,
) -> Tally {
    let mut t = Tally::new();
    let http = reqwest::Client::new();
    let opened = async {
        let resp = http
            .get(format!("{base}/sse"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await?
            .error_for_status()?;
        let mut r = SseReader {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        };
        let (event, path) = r.next(Duration::from_secs(20)).await?;
        if event != "endpoint" {
            bail!("first SSE event is {event}, not endpoint");
        }
        let post_url = format!("{base}{path}");
        http.post(&post_url)
            .bearer_auth(&token)
            .json(
                &json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2024-11-05","capabilities":{},
                "clientInfo":{"name":"aiops-soak","version":"1"}}}),
            )
            .send()
            .await?
            .error_for_status()?;
        r.answer(0, Duration::from_secs(30)).await?;
        http.post(&post_url)
            .bearer_auth(&token)
            .json(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .send()
            .await?
            .error_for_status()?;
        anyhow::Ok((r, post_url))
    }
    .await;
    let Ok((mut reader, post_url)) = opened else {
        t.connect_failed = true;
        return t;
    };
    let mut n = start;
    let mut id = 0u64;
    while Instant::now() < deadline {
        let (tool, args) = TOOLS[n % TOOLS.len()];
        n += 1;
        id += 1;
        let t0 = Instant::now();
        let answer = async {
            http.post(&post_url)
                .bearer_auth(&token)
                .json(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                    "params":{"name":tool,"arguments":args_of(args)}}))
                .send()
                .await?
                .error_for_status()?;
            reader.answer(id, Duration::from_secs(60)).await
        }
        .await;
        let _ = t.hist.record(t0.elapsed().as_micros().max(1) as u64);
        t.calls += 1;
        match answer {
            Ok(v) if v.get("error").is_some() => t.failures += 1,
            Ok(v) if v["result"]["isError"] == true => t.tool_errors += 1,
            Ok(_) => {}
            Err(_) => {
                t.failures += 1;
                break;
            }
        }
        tokio::time::sleep(think).await;
    }
    t
}

/// Resident set size of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn acked_ids(path: &std::path::Path, skip: usize) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(skip)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["order_id"].as_i64())
        .collect()
}

pub async fn run(state: &StateDir, args: BenchSoakArgs) -> anyhow::Result<ExitCode> {
    if crate::up_down::running_daemon(state).is_none() {
        bail!("the sandbox is not running; start it with `aiops up` first");
    }
    if args.seconds == 0 || args.seconds > 3600 {
        bail!("--seconds must be between 1 and 3600");
    }
    let ep = Endpoint::read(state).context("no daemon endpoint")?;
    let token = std::fs::read_to_string(state.token_file())?
        .trim()
        .to_string();
    let daemon_pid: u32 = std::fs::read_to_string(state.daemon_pid_file())?
        .trim()
        .parse()
        .context("run/daemon.pid")?;
    let exe = std::env::current_exe()?;
    let acked_path = state.root().join("load").join("acked-orders.jsonl");
    let acked_before = acked_ids(&acked_path, 0).len();
    let timeline_path = state.root().join("load").join("soak-timeline.jsonl");
    let started_at = chrono::Utc::now();
    let rss_start = rss_mib(daemon_pid);
    eprintln!(
        "Soak: {} s, {} Streamable HTTP + {} SSE sessions, load {} req/s, drill faults: {}",
        args.seconds,
        args.sessions,
        args.sse_sessions,
        args.rps,
        if args.faults.is_empty() {
            "none"
        } else {
            &args.faults
        }
    );

    let child = |a: &[String]| {
        tokio::process::Command::new(&exe)
            .args(a)
            .env("AIOPS_HOME", state.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    };
    let load = child(&[
        "load".into(),
        "--rps".into(),
        args.rps.to_string(),
        "--duration".into(),
        args.seconds.to_string(),
        "--json".into(),
        "--timeline".into(),
        timeline_path.display().to_string(),
    ])
    .context("starting aiops load")?;
    let drill_started = Instant::now();
    let drill = if args.faults.trim().is_empty() {
        None
    } else {
        Some(
            child(&[
                "drill".into(),
                "--json".into(),
                "--faults".into(),
                args.faults.clone(),
                "--trials".into(),
                "1".into(),
                "--noop".into(),
                "0".into(),
                "--durable".into(),
                "5s".into(),
                "--timeout".into(),
                "60s".into(),
            ])
            .context("starting aiops drill")?,
        )
    };

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let think = Duration::from_millis(args.think_ms);
    let mut http_tasks = tokio::task::JoinSet::new();
    for i in 0..args.sessions {
        http_tasks.spawn(http_session(
            format!("{}/mcp", ep.url),
            token.clone(),
            i,
            deadline,
            think,
        ));
    }
    let mut sse_tasks = tokio::task::JoinSet::new();
    for i in 0..args.sse_sessions {
        sse_tasks.spawn(sse_session(
            ep.url.clone(),
            token.clone(),
            i * 3,
            deadline,
            think,
        ));
    }
    // The daemon's RSS every 2 s while the sessions run.
    let mut rss_samples = Vec::new();
    while Instant::now() < deadline {
        if let Some(r) = rss_mib(daemon_pid) {
            rss_samples.push(r);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut http_tally = Tally::new();
    let mut http_connect_failed = 0;
    while let Some(t) = http_tasks.join_next().await {
        let t = t?;
        http_connect_failed += usize::from(t.connect_failed);
        http_tally.add(&t);
    }
    let mut sse_tally = Tally::new();
    let mut sse_connect_failed = 0;
    while let Some(t) = sse_tasks.join_next().await {
        let t = t?;
        sse_connect_failed += usize::from(t.connect_failed);
        sse_tally.add(&t);
    }
    let load_out = tokio::time::timeout(Duration::from_secs(60), load.wait_with_output())
        .await
        .context("aiops load did not finish")??;
    let load_json: Value = serde_json::from_slice(&load_out.stdout).unwrap_or(Value::Null);
    let drill_json: Value = match drill {
        Some(d) => {
            eprintln!("Sessions done; waiting for the drill to finish …");
            // Bounded: each trial is bounded by its own timeout, reset and durability.
            let limit = Duration::from_secs(180 * args.faults.split(',').count() as u64);
            match tokio::time::timeout(limit, d.wait_with_output()).await {
                Ok(Ok(out)) => serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
                _ => json!({"error": "the drill did not finish in time"}),
            }
        }
        None => Value::Null,
    };
    let drill_time = drill_started.elapsed();
    // Memory once the sessions are gone and the daemon has settled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_after = rss_mib(daemon_pid);

    // Fault windows, from the chaos ledger.
    let faults = match aiops_chaos::ChaosClient::from_state(state) {
        Ok(c) => c.status().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let settle = chrono::Duration::seconds(args.settle_s as i64);
    let windows: Vec<(String, i64, i64)> = faults
        .iter()
        .filter(|f| f.injected_at >= started_at - chrono::Duration::seconds(1))
        .map(|f| {
            (
                f.fault.clone(),
                f.injected_at.timestamp(),
                (f.ended_at.unwrap_or_else(chrono::Utc::now) + settle).timestamp(),
            )
        })
        .collect();
    let (mut in_ok, mut in_err, mut out_ok, mut out_err) = (0u64, 0u64, 0u64, 0u64);
    for line in std::fs::read_to_string(&timeline_path)
        .unwrap_or_default()
        .lines()
    {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let t = v["t"].as_i64().unwrap_or(0);
        let (ok, err) = (
            v["ok"].as_u64().unwrap_or(0),
            v["errors"].as_u64().unwrap_or(0),
        );
        if windows.iter().any(|(_, a, b)| (*a..=*b).contains(&t)) {
            in_ok += ok;
            in_err += err;
        } else {
            out_ok += ok;
            out_err += err;
        }
    }

    // Every acknowledged order of this run, looked up in the database.
    let acked = acked_ids(&acked_path, acked_before);
    let found = match lookup_orders(state, &acked).await {
        Ok(found) => Some(found),
        Err(e) => {
            eprintln!("Cannot check the acknowledged orders: {e:#}");
            None
        }
    };
    let missing: Vec<i64> = match &found {
        Some(f) => acked.iter().filter(|id| !f.contains(id)).copied().collect(),
        None => Vec::new(),
    };

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let pct = |e: u64, ok: u64| 100.0 * e as f64 / (e + ok).max(1) as f64;
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["figure", "value"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row(
        "run",
        format!(
            "{} s; {} Streamable HTTP + {} SSE sessions, {} ms between calls",
            args.seconds, args.sessions, args.sse_sessions, args.think_ms
        ),
    );
    for (name, t, failed) in [
        ("MCP Streamable HTTP", &http_tally, http_connect_failed),
        ("MCP legacy SSE", &sse_tally, sse_connect_failed),
    ] {
        row(
            name,
            format!(
                "{} calls ({:.1}/s), p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} protocol/transport errors, {} tool error results, {} sessions failed to open",
                t.calls,
                t.calls as f64 / args.seconds as f64,
                ms(&t.hist, 0.5),
                ms(&t.hist, 0.99),
                t.hist.max() as f64 / 1000.0,
                t.failures,
                t.tool_errors,
                failed
            ),
        );
    }
    row(
        "target load",
        format!(
            "offered {} req/s, achieved {:.1} req/s, {} requests, p50 {} ms, p99 {} ms, {} dropped",
            args.rps,
            load_json["achieved_rps"].as_f64().unwrap_or(0.0),
            load_json["requests"],
            load_json["latency_ms"]["p50"],
            load_json["latency_ms"]["p99"],
            load_json["dropped"]
        ),
    );
    row(
        "target errors outside fault windows",
        format!(
            "{out_err} of {} ({:.2} %)",
            out_ok + out_err,
            pct(out_err, out_ok)
        ),
    );
    row(
        "target errors inside fault windows",
        format!(
            "{in_err} of {} ({:.2} %)",
            in_ok + in_err,
            pct(in_err, in_ok)
        ),
    );
    row(
        "fault windows",
        if windows.is_empty() {
            "none".into()
        } else {
            windows
                .iter()
                .map(|(f, a, b)| format!("{f} {} s", b - a))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    let summary = &drill_json["summary"];
    row(
        "drill",
        if drill_json.is_null() {
            "none".into()
        } else if let Some(e) = drill_json["error"].as_str() {
            e.to_string()
        } else {
            format!(
                "{} of {} trials passed, {:.0} s wall time",
                summary["passed"],
                summary["trials"],
                drill_time.as_secs_f64()
            )
        },
    );
    let fmt = |r: Option<f64>| r.map_or("?".to_string(), |r| format!("{r:.1} MiB"));
    let (first_half, second_half) = rss_samples.split_at(rss_samples.len() / 2);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    row(
        "daemon RSS",
        format!(
            "before {}, peak {}, last in run {}, 5 s after {}; mean first half {:.1} MiB, second half {:.1} MiB ({} samples)",
            fmt(rss_start),
            fmt(rss_samples.iter().copied().reduce(f64::max)),
            fmt(rss_samples.last().copied()),
            fmt(rss_after),
            mean(first_half),
            mean(second_half),
            rss_samples.len()
        ),
    );
    row(
        "acknowledged orders",
        match &found {
            Some(f) => format!(
                "{} acknowledged, {} in the database, {} missing{}",
                acked.len(),
                acked.iter().filter(|id| f.contains(id)).count(),
                missing.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (first: {:?})",
                        missing.iter().take(10).collect::<Vec<_>>()
                    )
                }
            ),
            None => format!("{} acknowledged, not checked", acked.len()),
        },
    );
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// The ids among `ids` that exist in the shop's `orders` table (as the admin role).
async fn lookup_orders(state: &StateDir, ids: &[i64]) -> anyhow::Result<HashSet<i64>> {
    use sqlx::Connection;
    let topology = aiops_sandbox::topology::Topology::load(state)?.context("no topology")?;
    let url = aiops_sandbox::prepare::admin_database_url(state, &topology)?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&url))
        .await
        .context("PostgreSQL did not accept a connection within 10 s")??;
    let rows: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(rows.into_iter().collect())
}
