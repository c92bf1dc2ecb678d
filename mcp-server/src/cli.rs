//! Command-line definitions (clap). Each doc comment is the `--help` text.

use std::net::SocketAddr;

use aiops_sandbox::config::RuntimeKind;
use clap::{Args, Parser, Subcommand};

/// Run a sandboxed mini-production system that AI agents can observe, break and fix.
///
/// State lives in ./.aiops (or $AIOPS_HOME).
#[derive(Debug, Parser)]
#[command(name = "aiops", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the sandbox (PostgreSQL, target app, upstreams, worker) and wait until healthy.
    Up(UpArgs),
    /// Stop every sandbox process; data is kept unless --purge.
    Down(DownArgs),
    /// Show each service: state, pid, uptime, restarts, health.
    Status(StatusArgs),
    /// Print a service's log (-f to follow).
    Logs(LogsArgs),
    /// Start a stopped service.
    Start(ServiceArg),
    /// Stop a service (it stays down until started).
    Stop(ServiceArg),
    /// Restart a service.
    Restart(ServiceArg),
    /// Send a signal to a service's main process (its restart policy decides what follows).
    Kill(KillArgs),
    /// Drive realistic traffic at the target (reads and authenticated writes).
    Load(LoadArgs),
    /// Serve MCP: over stdio (what Claude Desktop launches) or Streamable HTTP + legacy SSE.
    Serve(ServeArgs),
    /// Print a claude_desktop_config.json snippet that launches this server over stdio.
    McpConfig,
    /// Open the live dashboard in a browser, logged in by a one-time link.
    Open(OpenArgs),
    /// Benchmarks that print figures (MCP round trips; log queries against ripgrep).
    Bench(BenchArgs),
    /// Inject, list and revert real, reversible faults (each with a lease).
    Chaos(ChaosArgs),
    /// Run a remediation action (plan → policy → audit → execute → verify).
    Action(ActionArgs),
    /// List actions waiting for a human's approval.
    Approvals,
    /// Approve a pending action (the agent then re-runs it with the approval id).
    Approve(DecideArgs),
    /// Deny a pending action.
    Deny(DecideArgs),
    /// Print the audit log (every action, dry run, refusal), -f to follow.
    Audit(AuditArgs),
    /// List incident reports agents filed, or print one.
    Incidents(IncidentsArgs),
    /// The scripted agent (no LLM): observe, diagnose, act by runbook, verify, report.
    Agent(AgentArgs),
    /// Score an agent on real faults: inject, let it fix them in exam mode, check, revert.
    Drill(DrillArgs),
    /// Local Docker images for the Docker runtime, built from this machine's files.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Print the variables `docker compose -f compose/docker-compose.yml` needs for this
    /// state dir (prepares the state dir for the Docker runtime first).
    ComposeEnv(ComposeEnvArgs),
    /// Run the sandbox daemon in this process (what `aiops up` starts in the background).
    #[command(hide = true)]
    Daemon(DaemonArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Stay attached: run the daemon in this terminal until Ctrl-C.
    #[arg(long)]
    pub foreground: bool,
    /// Address of the HTTP listener (control API, later MCP). Loopback by default.
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub http: SocketAddr,
    /// Let the kernel choose every service port instead of 8000, 55432, ... (tests).
    #[arg(long, env = "AIOPS_RANDOM_PORTS", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub random_ports: bool,
    /// Runtime: `process` (local processes, the default) or `docker` (containers through
    /// the Docker engine; images are built locally when missing). Remembered by the state
    /// dir; also `[sandbox] runtime` in aiops.toml.
    #[arg(long, value_parser = parse_runtime)]
    pub runtime: Option<RuntimeKind>,
    /// How long to wait for every service to become healthy, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Expose the chaos tools to MCP clients of the daemon's HTTP listener.
    #[arg(long)]
    pub allow_chaos: bool,
    #[command(flatten)]
    pub compat: CompatArgs,
}

/// The original Python system's ports (chaos 8080, actions 9000), for its clients.
#[derive(Debug, Clone, Args)]
pub struct CompatArgs {
    /// Also listen on 127.0.0.1:8080 (chaos: /api/v1/break/*) and 127.0.0.1:9000
    /// (actions: /health, /api/v1/action/*), the original servers' ports, without a
    /// token, for the original clients (chaos still needs --allow-chaos).
    #[arg(long)]
    pub compat_ports: bool,
    /// Address of the compatibility chaos listener.
    #[arg(long, default_value = "127.0.0.1:8080", requires = "compat_ports")]
    pub compat_chaos_addr: SocketAddr,
    /// Address of the compatibility actions listener.
    #[arg(long, default_value = "127.0.0.1:9000", requires = "compat_ports")]
    pub compat_actions_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub http: SocketAddr,
    #[arg(long)]
    pub random_ports: bool,
    #[arg(long, value_parser = parse_runtime)]
    pub runtime: Option<RuntimeKind>,
    #[arg(long)]
    pub allow_chaos: bool,
    #[command(flatten)]
    pub compat: CompatArgs,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build aiops-target-app:local and aiops-postgres:local without a registry: root
    /// file systems from this machine's target-app and PostgreSQL binaries and their
    /// libraries, imported into the engine. Skips an image whose inputs did not change.
    Build(ImagesBuildArgs),
}

#[derive(Debug, Args)]
pub struct ImagesBuildArgs {
    /// Rebuild even when the inputs did not change.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ComposeEnvArgs {
    /// Let the kernel choose every service port (only when the state dir is new).
    #[arg(long)]
    pub random_ports: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the state dir (database, logs, secrets).
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output: {"daemon": {...}, "services": [...]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// postgres, target-app, worker, upstream-primary, upstream-fallback, or aiops.
    pub service: String,
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,
    /// How many lines from the end to start with.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// The captured stdout/stderr instead of the service's own log file.
    #[arg(long)]
    pub console: bool,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// postgres, target-app, worker, upstream-primary or upstream-fallback.
    pub service: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    pub service: String,
    /// TERM, KILL, INT, STOP or CONT.
    #[arg(long, short, default_value = "KILL")]
    pub signal: String,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Requests per second to offer (open loop: the rate does not drop when the target slows).
    #[arg(long, default_value_t = 50)]
    pub rps: u32,
    /// Duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests in flight at most; beyond it a request is counted as dropped.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write, per second of wall-clock time, how many requests completed ok and how
    /// many failed (JSON lines `{"t": UNIX_SECONDS, "ok": N, "errors": N}`) to this file.
    #[arg(long)]
    pub timeline: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Speak MCP on stdin/stdout (the default when --http is not given). Logs go to stderr.
    #[arg(long, conflicts_with = "http")]
    pub stdio: bool,
    /// Serve Streamable HTTP at /mcp and legacy SSE at /sse on this address instead.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Start the sandbox first if it is not running (as `aiops up` would).
    #[arg(long)]
    pub up: bool,
    /// Start the sandbox on this runtime when it is not running (implies --up). With
    /// `docker`, containers that `docker compose -f compose/docker-compose.yml up` made
    /// for this state dir are adopted.
    #[arg(long, value_parser = parse_runtime)]
    pub runtime: Option<RuntimeKind>,
    /// Also expose the chaos tools (inject, status, stop faults) to the MCP client.
    #[arg(long)]
    pub allow_chaos: bool,
    /// Hide every tool that changes anything (remediation and chaos): observe only.
    #[arg(long, conflicts_with = "allow_chaos")]
    pub read_only: bool,
    /// Exam mode, for an agent under test: no chaos tools, and nothing in events or logs
    /// that names an injected fault (what `aiops drill` gives the agent it scores).
    #[arg(long, conflicts_with = "allow_chaos")]
    pub exam: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// tools/call round trips over stdio and Streamable HTTP, 1 and 16 clients (needs `aiops up`).
    Mcp(BenchMcpArgs),
    /// query_logs over a generated log file, side by side with ripgrep.
    Logs(BenchLogsArgs),
    /// Soak: target load, many MCP sessions (Streamable HTTP and legacy SSE) and a drill at
    /// once, bounded in time; prints latency, errors, memory and lost writes (needs `aiops up`).
    Soak(BenchSoakArgs),
}

#[derive(Debug, Args)]
pub struct BenchSoakArgs {
    /// How long the MCP sessions and the target load run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Concurrent MCP sessions over Streamable HTTP.
    #[arg(long, default_value_t = 50)]
    pub sessions: usize,
    /// Concurrent MCP sessions over legacy SSE.
    #[arg(long, default_value_t = 5)]
    pub sse_sessions: usize,
    /// Pause between two calls of one session, in milliseconds (an agent reads answers).
    #[arg(long, default_value_t = 100)]
    pub think_ms: u64,
    /// Requests per second `aiops load` offers the target.
    #[arg(long, default_value_t = 40)]
    pub rps: u32,
    /// Faults the concurrent drill injects and has the scripted agent fix (empty: none).
    #[arg(long, default_value = "latency,db_pool_exhaustion,api_down")]
    pub faults: String,
    /// Seconds after a fault's revert still counted inside its window (recovery).
    #[arg(long, default_value_t = 10)]
    pub settle_s: u64,
}

#[derive(Debug, Args)]
pub struct BenchMcpArgs {
    /// Calls per client for check_health (incident_snapshot gets a quarter of it).
    #[arg(long, default_value_t = 200)]
    pub calls: u64,
    /// Upper bound on each measurement, in seconds.
    #[arg(long, default_value_t = 20)]
    pub max_seconds: u64,
}

#[derive(Debug, Args)]
pub struct BenchLogsArgs {
    /// Size of the generated log file in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    pub command: ChaosCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// The fault catalogue.
    List,
    /// Inject a fault: `aiops chaos inject db_pool_exhaustion --param connections=60 --ttl 2m`.
    Inject(ChaosInjectArgs),
    /// Active and recently ended faults.
    Status,
    /// Revert one fault by id, or every active one with --all.
    Stop(ChaosStopArgs),
    /// Inject random faults from an allow-list, one at a time, each with its lease;
    /// the same seed gives the same sequence.
    Monkey(ChaosMonkeyArgs),
}

#[derive(Debug, Args)]
pub struct ChaosMonkeyArgs {
    /// Time between injections: `90s`, `5m`, `1h`. Each fault's lease ends by then.
    #[arg(long, default_value = "5m")]
    pub every: String,
    /// Seed of the random choice; the same seed and allow-list give the same sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Comma-separated allow-list of faults (default: the whole catalogue).
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Stop after this many injections (default: until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ChaosInjectArgs {
    /// Fault id (see `aiops chaos list`).
    pub fault: String,
    /// Fault parameter as KEY=VALUE (repeatable); VALUE is read as JSON when it parses
    /// (numbers, true/false), else as a string.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Lease: `90`, `90s`, `5m` or `1h` (1 s – 1 h). Default: the fault's own.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Print exactly what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChaosStopArgs {
    /// Fault id (from `aiops chaos status`).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Revert every active fault.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Action name, e.g. restart_service, kill_db_sessions, restore_config.
    pub action: String,
    /// Parameter as KEY=VALUE (repeatable); VALUE is JSON when it parses, else a string.
    #[arg(long = "param", short = 'p')]
    pub params: Vec<String>,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run an action a human approved.
    #[arg(long)]
    pub approval_id: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval id (from `aiops approvals` or the tool's answer).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many entries from the end.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// Keep printing new entries.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    /// Print this report (Markdown) instead of the list.
    pub id: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the loop over MCP only: incident_snapshot → hypotheses from the runbooks'
    /// symptoms → submit_diagnosis → the runbook's steps, each verified → verify_recovery
    /// → report_incident. Exit code 0 recovered or nothing to do, 2 waiting for an
    /// approval, 1 not recovered.
    Run(AgentRunArgs),
}

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// One pass (the default).
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,
    /// Keep watching: a pass every --interval-s seconds until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Talk to the server over stdio (a child `aiops serve --stdio`; the default).
    #[arg(long, conflicts_with = "url")]
    pub stdio: bool,
    /// Talk to a Streamable HTTP server instead, e.g. http://127.0.0.1:7300/mcp (what
    /// `aiops drill --agent-cmd` passes in AIOPS_MCP_URL).
    #[arg(long, env = "AIOPS_MCP_URL")]
    pub url: Option<String>,
    /// Bearer token for --url (default: the state dir's secrets/http-token).
    #[arg(long, env = "AIOPS_MCP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An approval a human granted, as TOOL=APPROVAL_ID (repeatable; used once).
    #[arg(long = "approval")]
    pub approvals: Vec<String>,
    /// Seconds between passes with --watch.
    #[arg(long, default_value_t = 10)]
    pub interval_s: u64,
    /// Stop after this many passes with --watch.
    #[arg(long)]
    pub max_rounds: Option<u64>,
    /// With --watch: stop after the first pass that ends `recovered`.
    #[arg(long, requires = "watch")]
    pub until_recovered: bool,
    /// With --watch: stop after this many seconds.
    #[arg(long, requires = "watch")]
    pub timeout_s: Option<u64>,
    /// One JSON report per pass.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Faults to draw from: `all` or a comma-separated list of catalogue names.
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// Trials per fault (pass^k needs k ≥ 2).
    #[arg(long, default_value_t = 1)]
    pub trials: usize,
    /// Seed of the schedule (fault order, no-fault positions); default: from the clock,
    /// printed so the drill can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No-fault trials mixed in (default: one per six fault trials, at least one).
    #[arg(long)]
    pub noop: Option<usize>,
    /// The agent under test: `scripted` (built in).
    #[arg(long, default_value = "scripted", conflicts_with = "agent_cmd")]
    pub agent: String,
    /// Run any agent instead: a shell command that gets AIOPS_MCP_URL and AIOPS_MCP_TOKEN
    /// (the exam endpoint), AIOPS_DRILL_TRIAL and AIOPS_DRILL_TIMEOUT_S; stopped at the
    /// timeout.
    #[arg(long)]
    pub agent_cmd: Option<String>,
    /// Per trial, from the fault taking effect to the end of the agent's run (e.g. 120s, 2m).
    #[arg(long, default_value = "120s")]
    pub timeout: String,
    /// How long the fix must hold, the fault still in place.
    #[arg(long, default_value = "30s")]
    pub durable: String,
    /// How long the agent watches a healthy system in a no-fault trial.
    #[arg(long, default_value = "15s")]
    pub noop_window: String,
    /// Deny the agent's approval requests instead of granting them as the on-call human.
    #[arg(long)]
    pub deny_approvals: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_runtime(s: &str) -> Result<RuntimeKind, String> {
    RuntimeKind::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Print the one-time login link instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
}
