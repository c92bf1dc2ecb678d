//! Observation tools: read-only, idempotent, closed-world.

use aiops_observe::{
    ConfigReport, DbDiagnostics, DbDiagnosticsQuery, DiskUsageReport, EventPage, EventQuery,
    HealthReport, IncidentSnapshot, LogQuery, LogQueryResult, MetricsQuery, MetricsReport,
    ProcessStatsReport, SandboxStatus,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{ErrorData, tool, tool_router};

use super::{AiopsServer, tool_result};

#[tool_router(router = observe_router, vis = "pub(crate)")]
impl AiopsServer {
    #[tool(
        description = "One call to start any investigation. Gathers service states, health \
probes, metrics over the last 20 s, recent error codes from the logs, database sessions \
and lock chains, process resource use, disk space and config validity, then lists \
anomalies: each with the signal, the observed value, the threshold it crossed, severity, \
the component involved and concrete evidence (log lines, pids and queries, figures). \
Parts that cannot be gathered are reported as errors inside the snapshot. Read-only.",
        output_schema = super::output_schema::<IncidentSnapshot>(),
        annotations(
            title = "Incident snapshot",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn incident_snapshot(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.incident_snapshot().await)
    }

    #[tool(
        description = "State of every sandbox service (postgres, target-app, worker, \
upstream-primary, upstream-fallback): running/stopped/exited/backoff/failed, pid, uptime, \
restart count, last exit (code or signal), whether the kernel OOM-killed it, and the \
supervisor's health verdict. Use it to see whether something crashed or keeps restarting. \
Read-only.",
        output_schema = super::output_schema::<SandboxStatus>(),
        annotations(
            title = "Sandbox status",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn sandbox_status(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.sandbox_status().await)
    }

    #[tool(
        description = "Probe the system now: target liveness (/healthz), readiness (/readyz: \
database reachable, migrations current, upstream reachable), the target's own health \
report (/api/v1/health), a direct database login, and each upstream. Each probe returns \
ok/failed, latency in ms and the reason when failed; plus an overall healthy, degraded or \
unhealthy. Use after any change to verify it worked. Read-only.",
        output_schema = super::output_schema::<HealthReport>(),
        annotations(
            title = "Check health",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_health(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.check_health().await)
    }

    #[tool(
        description = "Metrics of the target over a time window (default the last 60 s), \
from samples the server takes every second: request rate, error rate (5xx %, and counts by \
status), latency p50/p95/p99 in ms, connection pool size/in use/idle with acquire waits and \
timeouts, cache hit ratio, job queue depth, application errors by code, JWT rejections, and \
CPU % and memory (RSS) per service. Compare windows before and after a change. Read-only.",
        output_schema = super::output_schema::<MetricsReport>(),
        annotations(
            title = "Get metrics",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_metrics(
        &self,
        Parameters(q): Parameters<MetricsQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.get_metrics(q).await)
    }

    #[tool(
        description = "Search the sandbox's logs, newest first. Filter by service \
(target-app by default, worker, upstream-primary, upstream-fallback, postgres, or all), \
level, time (since/until: RFC 3339 or relative like 5m), stable error code (e.g. \
DB_POOL_TIMEOUT, DB_AUTH_FAILED, UPSTREAM_UNAVAILABLE, CACHE_CORRUPT), a regex or a plain \
substring. Returns at most `limit` lines (default 50, max 500) plus counts by error code and \
level over all matches; when `truncated` is true pass `next_cursor` for older lines. \
Read-only.",
        output_schema = super::output_schema::<LogQueryResult>(),
        annotations(
            title = "Query logs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn query_logs(
        &self,
        Parameters(q): Parameters<LogQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.query_logs(q).await)
    }

    #[tool(
        description = "Inside the sandbox's PostgreSQL: connections by state and by \
application name against max_connections, blocking lock chains (who waits on whom, for how \
long, with queries), long-running queries and idle-in-transaction sessions over a \
threshold, database size, and migration status. Use it for pool exhaustion, lock \
contention, long transactions, auth or migration problems. Answers 'database unreachable' \
quickly when PostgreSQL is down. Read-only.",
        output_schema = super::output_schema::<DbDiagnostics>(),
        annotations(
            title = "Database diagnostics",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn db_diagnostics(
        &self,
        Parameters(q): Parameters<DbDiagnosticsQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.db_diagnostics(q).await)
    }

    #[tool(
        description = "Resource use of each sandbox service's process tree: CPU % of one \
core, resident memory, threads, open file descriptors, child processes and memory limit. \
Use it for high CPU, memory leaks and runaway processes. Read-only.",
        output_schema = super::output_schema::<ProcessStatsReport>(),
        annotations(
            title = "Process stats",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn process_stats(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.process_stats().await)
    }

    #[tool(
        description = "Size of the sandbox's directories (logs, cache, database, run) and \
free space on the file systems that hold them, flagging any under 10 % free. Use it when \
writes fail or logs mention no space left on device. Read-only.",
        output_schema = super::output_schema::<DiskUsageReport>(),
        annotations(
            title = "Disk usage",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn disk_usage(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.disk_usage().await)
    }

    #[tool(
        description = "The target app's configuration (.env) validated key by key against \
its schema (required keys, ranges, allowed values), unknown keys flagged, and a diff \
against the last configuration with which the target was healthy (last-known-good). \
Secret values are redacted. Use it when the target will not start or misbehaves after a \
change. Read-only.",
        output_schema = super::output_schema::<ConfigReport>(),
        annotations(
            title = "Inspect config",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn inspect_config(&self) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.inspect_config().await)
    }

    #[tool(
        description = "The sandbox's event timeline, newest first: service starts, exits \
(with code or signal), automatic restarts, crash loops, health transitions and \
configuration saves. Filter by kind, service and time; paginated with `next_cursor`. Use \
it to line up when things changed. Read-only.",
        output_schema = super::output_schema::<EventPage>(),
        annotations(
            title = "List events",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_events(
        &self,
        Parameters(q): Parameters<EventQuery>,
    ) -> Result<CallToolResult, ErrorData> {
        tool_result(self.observer.list_events(q).await)
    }
}
