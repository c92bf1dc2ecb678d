//! End-to-end: the observation API against a real sandbox (`aiops up` with a private
//! PostgreSQL, the target, its upstreams and worker), driven through the control API
//! client exactly as the MCP server does.
//!
//! Needs `target/debug/{aiops,target-app}` (`cargo build -p mcp-server -p target-app --bins`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_observe::*;
use aiops_sandbox::StateDir;
use aiops_sandbox::control::ControlClient;
use aiops_tests::Sandbox;
use sqlx::Connection;

fn observer(sb: &Sandbox) -> (Observer, Arc<dyn aiops_sandbox::Runtime>) {
    let state = StateDir::new(sb.home());
    let client = ControlClient::from_state(&state).expect("control client");
    let runtime: Arc<dyn aiops_sandbox::Runtime> = Arc::new(client);
    (Observer::new(state, runtime.clone()), runtime)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every secret the sandbox generated.
fn secrets(sb: &Sandbox) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(sb.home().join("secrets"))
        .expect("secrets dir")
        .flatten()
    {
        let v = std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .trim()
            .to_string();
        if !v.is_empty() {
            out.push((e.file_name().to_string_lossy().into_owned(), v));
        }
    }
    assert!(
        out.len() >= 4,
        "expected the sandbox's secrets, found {out:?}"
    );
    out
}

fn assert_no_secret(what: &str, json: &str, secrets: &[(String, String)]) {
    for (name, value) in secrets {
        assert!(
            !json.contains(value.as_str()),
            "{what} leaks the secret {name}: {json}"
        );
    }
}

async fn traffic(base: &str, n: usize) {
    let http = reqwest::Client::new();
    for i in 0..n {
        let url = if i % 2 == 0 {
            format!("{base}/api/v1/products")
        } else {
            format!("{base}/api/v1/products/{}", 1 + i % 5)
        };
        let r = http.get(&url).send().await.expect("request to the target");
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
    }
}

async fn admin_conn(sb: &Sandbox, app: &str) -> sqlx::PgConnection {
    let state = StateDir::new(sb.home());
    let topo = aiops_sandbox::topology::Topology::load(&state)
        .unwrap()
        .unwrap();
    let url = aiops_sandbox::prepare::admin_database_url(&state, &topo).unwrap();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    sqlx::postgres::PgConnection::connect_with(&opts.application_name(app))
        .await
        .expect("admin connection")
}

fn invalid_field(e: ObserveError) -> String {
    match e {
        ObserveError::InvalidArgument { field, .. } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn observes_a_healthy_sandbox_and_its_faults() {
    let sb = Sandbox::new();
    sb.up();
    let secrets = secrets(&sb);
    let base = sb.target_url();
    let (obs, _runtime) = observer(&sb);
    rt().block_on(async {
        obs.start_sampler();
        obs.start_sampler(); // idempotent

        // Status: five running services.
        let st = obs.sandbox_status().await.expect("status");
        assert_eq!(st.services.len(), 5, "{}", st.summary());
        assert!(st.all_running, "{}", st.summary());
        assert!(
            st.services
                .iter()
                .all(|s| s.state == "running" && s.pid.is_some())
        );

        // Health.
        let h = obs.check_health().await.expect("health");
        assert_eq!(
            h.overall,
            OverallHealth::Healthy,
            "{}\n{}",
            h.summary(),
            sb.log_tails()
        );
        assert!(h.probes.len() >= 6, "{:?}", h.probes);
        let ready = h
            .probes
            .iter()
            .find(|p| p.name.contains("readiness"))
            .unwrap();
        assert_eq!(ready.body.as_ref().unwrap()["ready"], true);

        // Metrics after some traffic.
        traffic(&base, 40).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let m = loop {
            let m = obs
                .get_metrics(MetricsQuery { window_s: Some(30) })
                .await
                .expect("metrics");
            if m.request_rate_per_s.is_some_and(|r| r > 0.0) || Instant::now() > deadline {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(m.request_rate_per_s.unwrap_or(0.0) > 0.0, "{}", m.summary());
        assert!(m.samples >= 2, "{}", m.summary());
        assert!(m.latency.is_some(), "{}", m.summary());
        assert_eq!(m.pool.as_ref().map(|p| p.max), Some(10), "{}", m.summary());
        assert_eq!(
            invalid_field(
                obs.get_metrics(MetricsQuery { window_s: Some(2) })
                    .await
                    .unwrap_err()
            ),
            "window_s"
        );

        // Logs: a request line, filters, bad arguments, pagination.
        let logs = obs
            .query_logs(LogQuery {
                contains: Some("Request handled".into()),
                ..Default::default()
            })
            .await
            .expect("logs");
        assert!(logs.total >= 40, "{}", logs.summary());
        let e = &logs.entries[0];
        assert_eq!(e.service, "target-app");
        assert!(
            e.route.is_some() && e.status == Some(200) && e.timestamp.is_some(),
            "{e:?}"
        );
        assert_eq!(
            invalid_field(
                obs.query_logs(LogQuery {
                    regex: Some("([a-z".into()),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            ),
            "regex"
        );
        assert_eq!(
            invalid_field(
                obs.query_logs(LogQuery {
                    since: Some("2999-01-01T00:00:00Z".into()),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            ),
            "since"
        );
        assert_eq!(
            invalid_field(
                obs.query_logs(LogQuery {
                    limit: Some(10_000),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            ),
            "limit"
        );
        assert_eq!(
            invalid_field(
                obs.query_logs(LogQuery {
                    service: Some("nginx".into()),
                    ..Default::default()
                })
                .await
                .unwrap_err()
            ),
            "service"
        );
        let q = LogQuery {
            contains: Some("Request handled".into()),
            limit: Some(10),
            ..Default::default()
        };
        let p1 = obs.query_logs(q.clone()).await.unwrap();
        assert_eq!(p1.entries.len(), 10);
        assert!(p1.truncated);
        let p2 = obs
            .query_logs(LogQuery {
                cursor: p1.next_cursor.clone(),
                ..q.clone()
            })
            .await
            .unwrap();
        assert_eq!(p2.entries.len(), 10);
        assert_eq!(p2.total, p1.total, "totals are stable across pages");
        for a in &p2.entries {
            assert!(
                !p1.entries.iter().any(|b| b.raw == a.raw),
                "page 2 repeats a line of page 1: {}",
                a.raw
            );
        }
        assert!(p2.entries[0].timestamp <= p1.entries[9].timestamp);
        let all = obs
            .query_logs(LogQuery {
                service: Some("all".into()),
                since: Some("10m".into()),
                limit: Some(20),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            all.entries.iter().any(|e| e.service == "postgres") || all.total > 0,
            "{}",
            all.summary()
        );
        let pg = obs
            .query_logs(LogQuery {
                service: Some("postgres".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            pg.entries.iter().all(|e| e.level.is_some()),
            "{}",
            pg.summary()
        );

        // Database: the target's connections, then a blocking chain.
        let d = obs
            .db_diagnostics(DbDiagnosticsQuery::default())
            .await
            .expect("db");
        assert!(
            d.by_application
                .iter()
                .any(|c| c.key == "target-app" && c.count > 0),
            "{}",
            d.summary()
        );
        assert!(
            !d.by_application.iter().any(|c| c.key == "aiops-observe"),
            "own session excluded"
        );
        assert_eq!(
            d.migrations.target_says_current,
            Some(true),
            "{}",
            d.summary()
        );
        assert!(d.migrations.latest_version.is_some());

        let mut holder = admin_conn(&sb, "lock-holder").await;
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            .execute(&mut holder)
            .await
            .unwrap();
        let mut waiter = admin_conn(&sb, "lock-waiter").await;
        let blocked = tokio::spawn(async move {
            sqlx::query("SELECT count(*) FROM products")
                .execute(&mut waiter)
                .await
                .map(|_| ())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let d = loop {
            let d = obs
                .db_diagnostics(DbDiagnosticsQuery::default())
                .await
                .expect("db");
            if !d.blocking_chains.is_empty() || Instant::now() > deadline {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let chain = d
            .blocking_chains
            .iter()
            .find(|c| c.blocked_application == "lock-waiter")
            .unwrap_or_else(|| panic!("no blocking chain for the waiter: {}", d.summary()));
        assert_eq!(chain.relation.as_deref(), Some("products"));
        assert!(chain.query.contains("SELECT count(*) FROM products"));
        assert!(
            chain
                .blockers
                .iter()
                .any(|b| b.application == "lock-holder"),
            "{chain:?}"
        );
        assert!(d.summary().contains("products"));
        let snap = obs.incident_snapshot().await.expect("snapshot");
        assert!(
            snap.anomalies.iter().any(|a| a.signal == "blocking_locks"
                && a.evidence.iter().any(|e| e.contains("lock-holder"))),
            "{}",
            snap.summary()
        );
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        blocked
            .await
            .unwrap()
            .expect("the blocked query finishes once the lock is gone");
        drop(holder);

        // Processes and disk.
        let p = obs.process_stats().await.expect("processes");
        assert_eq!(p.services.len(), 5);
        assert!(
            p.services
                .iter()
                .all(|s| s.error.is_none() && s.rss_bytes > 0),
            "{}",
            p.summary()
        );
        let disk = obs.disk_usage().await.expect("disk");
        assert!(
            disk.dirs
                .iter()
                .any(|d| d.name == "pgdata" && d.bytes > 1_000_000),
            "{}",
            disk.summary()
        );
        assert!(!disk.filesystems.is_empty());

        // Events.
        let ev = obs
            .list_events(EventQuery::default())
            .await
            .expect("events");
        assert!(ev.total >= 5, "{}", ev.summary());
        let started = obs
            .list_events(EventQuery {
                kind: Some("service_started".into()),
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(started.events.len(), 2);
        assert!(started.truncated && started.next_cursor.is_some());
        let next = obs
            .list_events(EventQuery {
                kind: Some("service_started".into()),
                limit: Some(2),
                cursor: started.next_cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_ne!(next.events[0].detail, started.events[0].detail);

        // Config: valid, then POOL_SIZE=abc is flagged; no secret anywhere.
        let c = obs.inspect_config().await.expect("config");
        assert!(c.valid, "{}", c.summary());
        let env_path = StateDir::new(sb.home()).env_file();
        let original = std::fs::read_to_string(&env_path).unwrap();
        let mut env = aiops_sandbox::envfile::EnvFile::parse(&original);
        env.set("POOL_SIZE", "abc");
        env.write(&env_path).unwrap();
        let bad = obs.inspect_config().await.expect("config");
        let pool = bad.entries.iter().find(|e| e.key == "POOL_SIZE").unwrap();
        assert!(!bad.valid && !pool.valid, "{}", bad.summary());
        assert!(pool.problem.as_ref().unwrap().contains("1 to 200"));
        assert!(
            bad.diff
                .changed
                .iter()
                .any(|c| c.contains("POOL_SIZE: 10 → abc")),
            "{:?}",
            bad.diff
        );
        let db_url = bad
            .entries
            .iter()
            .find(|e| e.key == "DATABASE_URL")
            .unwrap();
        assert!(db_url.value.as_ref().unwrap().contains("<redacted>"));
        let snap_bad = obs.incident_snapshot().await.expect("snapshot");
        assert!(
            snap_bad
                .anomalies
                .iter()
                .any(|a| a.signal == "config_invalid"),
            "{}",
            snap_bad.summary()
        );
        std::fs::write(&env_path, &original).unwrap();

        // A healthy snapshot: time and size.
        let t = Instant::now();
        let snap = obs.incident_snapshot().await.expect("snapshot");
        let took = t.elapsed();
        let json = serde_json::to_string(&snap).unwrap();
        eprintln!(
            "healthy incident_snapshot: {} ms, {} bytes of JSON, {} anomalies:\n{}",
            took.as_millis(),
            json.len(),
            snap.anomalies.len(),
            snap.summary()
        );
        assert!(
            json.len() < 20_000,
            "snapshot too large: {} bytes",
            json.len()
        );
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        assert!(
            !snap
                .anomalies
                .iter()
                .any(|a| a.severity == Severity::Critical),
            "healthy sandbox has critical anomalies: {}",
            snap.summary()
        );

        // No secret in any report.
        let reports = [
            (
                "status",
                serde_json::to_string(&obs.sandbox_status().await.unwrap()).unwrap(),
            ),
            (
                "health",
                serde_json::to_string(&obs.check_health().await.unwrap()).unwrap(),
            ),
            (
                "metrics",
                serde_json::to_string(&obs.get_metrics(MetricsQuery::default()).await.unwrap())
                    .unwrap(),
            ),
            (
                "logs",
                serde_json::to_string(
                    &obs.query_logs(LogQuery {
                        service: Some("all".into()),
                        limit: Some(500),
                        ..Default::default()
                    })
                    .await
                    .unwrap(),
                )
                .unwrap(),
            ),
            (
                "db",
                serde_json::to_string(
                    &obs.db_diagnostics(DbDiagnosticsQuery::default())
                        .await
                        .unwrap(),
                )
                .unwrap(),
            ),
            (
                "processes",
                serde_json::to_string(&obs.process_stats().await.unwrap()).unwrap(),
            ),
            (
                "disk",
                serde_json::to_string(&obs.disk_usage().await.unwrap()).unwrap(),
            ),
            ("config", serde_json::to_string(&bad).unwrap()),
            (
                "config-ok",
                serde_json::to_string(&obs.inspect_config().await.unwrap()).unwrap(),
            ),
            (
                "events",
                serde_json::to_string(
                    &obs.list_events(EventQuery {
                        limit: Some(500),
                        ..Default::default()
                    })
                    .await
                    .unwrap(),
                )
                .unwrap(),
            ),
            ("snapshot", json.clone()),
            ("snapshot-bad", serde_json::to_string(&snap_bad).unwrap()),
        ];
        for (what, json) in &reports {
            assert_no_secret(what, json, &secrets);
        }
        let summaries = format!("{}{}{}", snap.summary(), bad.summary(), snap_bad.summary());
        assert_no_secret("summaries", &summaries, &secrets);
    });
}

#[test]
fn stopped_target_and_database_are_reported() {
    let sb = Sandbox::new();
    sb.up();
    let (obs, runtime) = observer(&sb);
    rt().block_on(async {
        runtime.stop("target-app").await.expect("stop target-app");
        let h = obs.check_health().await.expect("health");
        assert_eq!(h.overall, OverallHealth::Unhealthy, "{}", h.summary());

        let t = Instant::now();
        let snap = obs.incident_snapshot().await.expect("snapshot");
        let json = serde_json::to_string(&snap).unwrap();
        eprintln!(
            "snapshot with target stopped: {} ms, {} bytes:\n{}",
            t.elapsed().as_millis(),
            json.len(),
            snap.summary()
        );
        assert!(
            json.len() < 20_000,
            "snapshot too large: {} bytes",
            json.len()
        );
        assert!(
            snap.anomalies.iter().any(|a| a.component == "target-app"
                && a.severity == Severity::Critical
                && a.signal == "service_not_running"),
            "{}",
            snap.summary()
        );
        assert!(snap.summary().contains("target-app"));

        runtime.stop("postgres").await.expect("stop postgres");
        let t = Instant::now();
        let err = obs
            .db_diagnostics(DbDiagnosticsQuery::default())
            .await
            .unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(err, ObserveError::DatabaseUnreachable(_)),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("database unreachable"), "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        eprintln!(
            "db_diagnostics with postgres stopped: {} ms: {err}",
            took.as_millis()
        );

        let snap = obs.incident_snapshot().await.expect("snapshot still works");
        assert!(
            snap.errors.iter().any(|e| e.part == "db"),
            "{:?}",
            snap.errors
        );
        assert!(
            snap.anomalies
                .iter()
                .any(|a| a.component == "postgres" && a.severity == Severity::Critical),
            "{}",
            snap.summary()
        );
        let json = serde_json::to_string(&snap).unwrap();
        assert!(
            json.len() < 20_000,
            "snapshot too large: {} bytes",
            json.len()
        );
    });
}

#[test]
fn no_sandbox_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    // A client to a daemon that does not exist.
    let runtime: Arc<dyn aiops_sandbox::Runtime> =
        Arc::new(ControlClient::new("http://127.0.0.1:9", "token"));
    let obs = Observer::new(state, runtime);
    rt().block_on(async {
        let e = obs.sandbox_status().await.unwrap_err();
        assert!(matches!(e, ObserveError::SandboxUnavailable(_)), "{e:?}");
        assert!(e.to_string().contains("aiops up"), "{e}");
        let e = obs.check_health().await.unwrap_err();
        assert!(matches!(e, ObserveError::SandboxUnavailable(_)), "{e:?}");
        let e = obs.query_logs(LogQuery::default()).await.unwrap_err();
        assert!(matches!(e, ObserveError::SandboxUnavailable(_)), "{e:?}");
        let snap = obs
            .incident_snapshot()
            .await
            .expect("snapshot never fails as a whole");
        assert!(snap.errors.len() >= 5, "{:?}", snap.errors);
    });
}
