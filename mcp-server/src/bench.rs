//! `aiops bench`: benchmarks that print figures, with the comparison run side by side in
//! the same run. Never timed assertions in tests.
//!
//! - `aiops bench mcp`: tools/call round trips for `check_health` and `incident_snapshot`
//!   over stdio and Streamable HTTP, with 1 and 16 concurrent clients: p50, p99, calls/s.
//! - `aiops bench logs`: `query_logs` over a generated log file (1 GiB by default) against
//!   ripgrep on the same file and pattern, in the same run.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_sandbox::StateDir;
use aiops_sandbox::control::Endpoint;
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};

use crate::cli::{BenchArgs, BenchCommand, BenchLogsArgs, BenchMcpArgs};

pub async fn run(state: &StateDir, args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Mcp(a) => mcp(state, a).await,
        BenchCommand::Logs(a) => logs(a).await,
        BenchCommand::Soak(a) => crate::soak::run(state, a).await,
    }
}

type Client = RunningService<RoleClient, ()>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Stdio,
    Http,
}

async fn connect(state: &StateDir, transport: Transport) -> anyhow::Result<Client> {
    match transport {
        Transport::Stdio => {
            let cmd = tokio::process::Command::new(std::env::current_exe()?).configure(|c| {
                c.args(["serve", "--stdio"])
                    .env("AIOPS_HOME", state.root())
                    .env("AIOPS_LOG", "error");
            });
            Ok(().serve(TokioChildProcess::new(cmd)?).await?)
        }
        Transport::Http => {
            let ep = Endpoint::read(state).context("no running daemon: run `aiops up` first")?;
            let token = std::fs::read_to_string(state.token_file())?;
            let t = StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", ep.url))
                    .auth_header(token.trim().to_string()),
            );
            Ok(().serve(t).await?)
        }
    }
}

struct Cell {
    transport: &'static str,
    tool: &'static str,
    clients: usize,
    calls: u64,
    errors: u64,
    hist: Histogram<u64>,
    elapsed: Duration,
}

async fn mcp(state: &StateDir, args: BenchMcpArgs) -> anyhow::Result<ExitCode> {
    if crate::up_down::running_daemon(state).is_none() {
        bail!("the sandbox is not running; start it with `aiops up` first");
    }
    let mut cells = Vec::new();
    for (transport, tname) in [
        (Transport::Stdio, "stdio"),
        (Transport::Http, "streamable HTTP"),
    ] {
        for tool in ["check_health", "incident_snapshot"] {
            for clients in [1usize, 16] {
                eprint!("  {tname:16} {tool:18} {clients:2} client(s) … ");
                let cell = bench_cell(state, transport, tname, tool, clients, &args).await?;
                eprintln!("{} calls", cell.calls);
                cells.push(cell);
            }
        }
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "transport",
        "tool",
        "clients",
        "calls",
        "errors",
        "p50 ms",
        "p99 ms",
        "calls/s",
    ]);
    for c in &cells {
        table.add_row(vec![
            c.transport.to_string(),
            c.tool.to_string(),
            c.clients.to_string(),
            c.calls.to_string(),
            c.errors.to_string(),
            format!("{:.2}", c.hist.value_at_quantile(0.5) as f64 / 1000.0),
            format!("{:.2}", c.hist.value_at_quantile(0.99) as f64 / 1000.0),
            format!("{:.1}", c.calls as f64 / c.elapsed.as_secs_f64()),
        ]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

async fn bench_cell(
    state: &StateDir,
    transport: Transport,
    tname: &'static str,
    tool: &'static str,
    clients: usize,
    args: &BenchMcpArgs,
) -> anyhow::Result<Cell> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(connect(state, transport).await?);
    }
    // Warm up: the first calls pay for connection set-up and the sampler's first scrape.
    for c in &conns {
        for _ in 0..3 {
            c.call_tool(CallToolRequestParams::new(tool)).await?;
        }
    }
    let per_client = if tool == "incident_snapshot" {
        args.calls / 4
    } else {
        args.calls
    }
    .max(1);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let conns = Arc::new(conns);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let conns = conns.clone();
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram");
            let mut errors = 0u64;
            for _ in 0..per_client {
                if Instant::now() > deadline {
                    break;
                }
                let t0 = Instant::now();
                match conns[i].call_tool(CallToolRequestParams::new(tool)).await {
                    Ok(r) if r.is_error != Some(true) => {}
                    _ => errors += 1,
                }
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
            }
            (h, errors)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r?;
        hist.add(h)?;
        errors += e;
    }
    let elapsed = started.elapsed();
    if let Ok(conns) = Arc::try_unwrap(conns) {
        for c in conns {
            let _ = c.cancel().await;
        }
    }
    Ok(Cell {
        transport: tname,
        tool,
        clients,
        calls: hist.len(),
        errors,
        hist,
        elapsed,
    })
}

/// Realistic log lines: mostly request logs, some errors with codes, a few multi-field ones.
fn log_line(i: u64) -> String {
    let ts = chrono::DateTime::from_timestamp(
        1_800_000_000 + (i / 500) as i64,
        ((i % 500) * 2_000_000) as u32,
    )
    .unwrap_or_default()
    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    match i % 97 {
        0 => format!(
            r#"{{"timestamp":"{ts}","level":"ERROR","message":"Request failed.","code":"DB_POOL_TIMEOUT","error":"pool timed out while waiting for an open connection","request_id":"{i:032x}","route":"/api/v1/orders","status":503,"target":"target_app::error"}}"#
        ),
        1..=3 => format!(
            r#"{{"timestamp":"{ts}","level":"WARN","message":"Request rejected.","code":"AUTH_INVALID_TOKEN","error":"token rejected: ExpiredSignature","request_id":"{i:032x}","route":"/api/v1/orders","status":401,"target":"target_app::error"}}"#
        ),
        _ => format!(
            r#"{{"timestamp":"{ts}","level":"INFO","message":"Request handled.","request_id":"{i:032x}","method":"GET","route":"/api/v1/products/{{id}}","status":200,"latency_ms":{},"target":"target_app::http"}}"#,
            i % 13
        ),
    }
}

async fn logs(args: BenchLogsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let dir = tempfile_dir()?;
    let state = StateDir::new(&dir);
    state.create()?;
    let topology = aiops_sandbox::topology::Topology::build(
        &state,
        aiops_sandbox::topology::Ports::allocate(true)?,
    );
    topology.save(&state)?;
    let path = state.logs_dir().join("target-app.log");
    let target = args.size_mb * 1024 * 1024;
    eprintln!(
        "Generating {} MiB of JSON-lines logs in {} …",
        args.size_mb,
        path.display()
    );
    let gen_started = Instant::now();
    let mut lines = 0u64;
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut written = 0u64;
        while written < target {
            let mut l = log_line(lines);
            l.push('\n');
            f.write_all(l.as_bytes())?;
            written += l.len() as u64;
            lines += 1;
        }
        f.flush()?;
    }
    eprintln!(
        "  {lines} lines in {:.1} s",
        gen_started.elapsed().as_secs_f64()
    );
    let pattern = "DB_POOL_TIMEOUT";
    let observer = aiops_observe::Observer::new(
        state.clone(),
        Arc::new(aiops_sandbox::control::DaemonRuntime::new(state.clone())),
    );
    // Warm the page cache for both tools alike.
    let _ = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status();
    let mut rows = Vec::new();
    for (label, query) in [
        (
            format!("query_logs code={pattern}, limit 50"),
            serde_json::json!({"service": "target-app", "code": pattern, "limit": 50}),
        ),
        (
            format!("query_logs regex={pattern}, limit 50"),
            serde_json::json!({"service": "target-app", "regex": pattern, "limit": 50}),
        ),
    ] {
        let q: aiops_observe::LogQuery = serde_json::from_value(query)?;
        let t0 = Instant::now();
        let r = observer
            .query_logs(q)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let dt = t0.elapsed();
        let v = serde_json::to_value(&r)?;
        rows.push((
            label,
            dt,
            format!(
                "{} matches in the newest {} lines{}",
                v["total"],
                v["lines_scanned"],
                if v["scan_limited"] == true {
                    " (scan cap reached: counts cover that part of the file)"
                } else {
                    ""
                }
            ),
        ));
    }
    let rg = aiops_sandbox::postgres::which("rg");
    let rg_time = match &rg {
        Some(rg) => {
            let t0 = Instant::now();
            let out = std::process::Command::new(rg)
                .args(["-c", pattern])
                .arg(&path)
                .output()?;
            let dt = t0.elapsed();
            rows.push((
                format!("rg -c {pattern}"),
                dt,
                format!(
                    "{} matching lines in all {lines} lines",
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
            ));
            Some(dt)
        }
        None => None,
    };
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["what", "time", "vs rg", "result"]);
    for (label, dt, result) in &rows {
        table.add_row(vec![
            label.clone(),
            format!("{:.3} s", dt.as_secs_f64()),
            rg_time
                .map(|r| format!("{:.2}×", dt.as_secs_f64() / r.as_secs_f64()))
                .unwrap_or_else(|| "rg not installed".into()),
            result.clone(),
        ]);
    }
    println!("Log file: {} MiB, {lines} lines.", args.size_mb);
    println!("{table}");
    if rg.is_none() {
        println!("ripgrep is not installed (Debian: apt-get install ripgrep); no comparison.");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("aiops-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
