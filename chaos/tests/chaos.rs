//! End-to-end tests of every fault on a real sandbox: steady state → inject → the effect
//! is verified and visible → stop → steady state again with nothing left behind. Plus
//! leases, the suspension of auto-revert, the reaper, dry runs, validation and the HTTP
//! control API. Each test reuses one sandbox for several faults.

mod util;

use std::time::{Duration, Instant};

use aiops_chaos::{ChaosClient, ChaosEngine, ChaosError, InjectRequest};
use serde_json::{Value, json};
use util::Env;

/// Database faults, then the reaper after a dropped engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_faults_break_the_target_and_revert_cleanly() {
    let env = Env::up();
    env.wait_ready(Duration::from_secs(30)).await;

    // Pool exhaustion: 40 idle-in-transaction sessions hold the role's slots.
    let out = env.inject("db_pool_exhaustion", json!({})).await;
    let record = out.record.unwrap();
    assert_eq!(env.sessions_named("report-export").await, 40);
    assert_eq!(env.readyz().await.0, 503);
    assert_eq!(record.label.component, "postgres");
    assert!(record.label.mechanism.contains("40 foreign sessions"));
    assert_eq!(
        env.ledger_entry(&record.id)["undo"]["original_conn_limit"],
        -1
    );
    let (status, code) = env.get("/api/v1/products?limit=1").await;
    assert_eq!(status, 503);
    assert!(
        matches!(code.as_deref(), Some("DB_UNAVAILABLE" | "DB_POOL_TIMEOUT")),
        "{code:?}"
    );
    env.stop_and_check(&record).await;

    // Authentication failure: the role's password changed under the target.
    let out = env.inject("db_auth_failure", json!({})).await;
    let (status, body) = env.readyz().await;
    assert_eq!(status, 503);
    assert!(
        body["checks"]["db"]
            .as_str()
            .unwrap()
            .contains("DB_AUTH_FAILED"),
        "{body}"
    );
    assert!(env.log_has("DB_AUTH_FAILED"));
    env.stop_and_check(&out.record.unwrap()).await;

    // Database down.
    let out = env.inject("db_down", json!({})).await;
    assert_eq!(env.service("postgres").await["state"], "stopped");
    assert_eq!(env.readyz().await.0, 503);
    env.stop_and_check(&out.record.unwrap()).await;
    assert_eq!(env.service("postgres").await["state"], "running");

    // Lock contention: product listings wait on the ACCESS EXCLUSIVE lock.
    let out = env.inject("lock_contention", json!({})).await;
    assert_eq!(env.sessions_named("maintenance-reindex").await, 1);
    let started = Instant::now();
    let (status, code) = env.get("/api/v1/products?limit=1").await;
    assert_eq!((status, code.as_deref()), (503, Some("DB_TIMEOUT")));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the request did not wait"
    );
    env.stop_and_check(&out.record.unwrap()).await;
    assert_eq!(env.get("/api/v1/products?limit=1").await.0, 200);

    // Long transaction: row locks on products 1..=10.
    let out = env.inject("long_transaction", json!({"rows": 10})).await;
    assert_eq!(env.sessions_named("billing-sync").await, 1);
    let mut admin = env.admin().await;
    let state: String = sqlx::query_scalar(
        "SELECT state FROM pg_stat_activity WHERE application_name = 'billing-sync'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(state, "idle in transaction");
    env.stop_and_check(&out.record.unwrap()).await;

    // Failed migration: a column the code reads is gone, migrations still "applied".
    let out = env.inject("failed_migration", json!({})).await;
    let (status, code) = env.get("/api/v1/products?limit=1").await;
    assert_eq!((status, code.as_deref()), (500, Some("DB_SCHEMA_MISMATCH")));
    assert_eq!(env.readyz().await.0, 200, "migrations still look current");
    env.stop_and_check(&out.record.unwrap()).await;
    assert_eq!(env.get("/api/v1/products?limit=1").await.0, 200);

    // Reap: an engine that held sessions disappears without stopping its fault; a new
    // engine (a restarted daemon) reverts what the ledger still shows active.
    let first = Env::engine_for(&env.state);
    let mut req = InjectRequest::new("db_pool_exhaustion");
    req.params = json!({"connections": 5}).as_object().cloned().unwrap();
    req.verify = false;
    let record = first.inject(req).await.unwrap().record.unwrap();
    drop(first);
    assert_eq!(env.ledger_entry(&record.id)["record"]["state"], "active");
    let fresh = Env::engine_for(&env.state);
    let reaped = fresh.reap().await.unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].id, record.id);
    assert_eq!(reaped[0].state, "reverted");
    assert!(
        reaped[0]
            .end_reason
            .as_deref()
            .unwrap()
            .starts_with("reaped")
    );
    assert_eq!(env.ledger_entry(&record.id)["record"]["state"], "reverted");
    assert!(
        fresh.reap().await.unwrap().is_empty(),
        "a second reap found work"
    );
    env.wait_ready(Duration::from_secs(30)).await;
    env.assert_clean().await;
}

/// Faults through the admin APIs and the cache, plus dry runs, validation, leases and
/// the suspension of auto-revert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_faults_leases_and_validation() {
    let env = Env::up();
    env.wait_ready(Duration::from_secs(30)).await;

    let out = env.inject("latency", json!({"delay_ms": 2000})).await;
    assert_eq!(env.target_failpoints().await[0]["name"], "http.latency");
    let started = Instant::now();
    assert_eq!(env.get("/api/v1/products/2").await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(2000));
    env.stop_and_check(&out.record.unwrap()).await;

    let out = env.inject("high_cpu", json!({"threads": 1})).await;
    assert_eq!(env.target_failpoints().await[0]["name"], "process.cpu_spin");
    env.stop_and_check(&out.record.unwrap()).await;

    for mode in ["error", "hang"] {
        let out = env.inject("upstream_outage", json!({"mode": mode})).await;
        let (status, code) = env.get("/api/v1/products/3/price").await;
        assert_eq!(
            (status, code.as_deref()),
            (502, Some("UPSTREAM_UNAVAILABLE"))
        );
        env.stop_and_check(&out.record.unwrap()).await;
        assert_eq!(env.get("/api/v1/products/3/price").await.0, 200);
    }

    // Cache poisoning: entry 1 exists beforehand (read once), entry 2 does not.
    assert_eq!(env.get("/api/v1/products/1").await.0, 200);
    let cache = env.state.cache_dir();
    let _ = std::fs::remove_file(cache.join("product-2.json"));
    let before_1 = std::fs::read(cache.join("product-1.json")).unwrap();
    let out = env.inject("cache_poisoning", json!({"entries": 3})).await;
    let (status, code) = env.get("/api/v1/products/2").await;
    assert_eq!((status, code.as_deref()), (500, Some("CACHE_CORRUPT")));
    assert!(env.log_has("CACHE_CORRUPT"));
    env.stop_and_check(&out.record.unwrap()).await;
    assert_eq!(
        std::fs::read(cache.join("product-1.json")).unwrap(),
        before_1
    );
    assert!(
        !cache.join("product-2.json").exists(),
        "an entry that did not exist came back"
    );
    assert_eq!(env.get("/api/v1/products/2").await.0, 200);

    let out = env.inject("log_storm", json!({"lines_per_s": 100})).await;
    env.stop_and_check(&out.record.unwrap()).await;

    let out = env.inject("memory_leak", json!({"mb_per_s": 10})).await;
    env.stop_and_check(&out.record.unwrap()).await;

    // Disk full: the cache volume is a filled tmpfs; writes fail with ENOSPC.
    let cache = env.state.cache_dir();
    let out = env.inject("disk_full", json!({"size_mb": 2})).await;
    let st = nix::sys::statvfs::statvfs(&cache).unwrap();
    assert_eq!(st.blocks_available(), 0, "the cache volume must be full");
    assert!(
        std::fs::write(cache.join("probe.json"), vec![0u8; 65536]).is_err(),
        "a write must fail with ENOSPC"
    );
    env.stop_and_check(&out.record.unwrap()).await;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(cache.to_str().unwrap()));
    assert!(!mounted, "the tmpfs must be unmounted after the revert");
    assert!(!cache.join(".export-spool.tmp").exists());

    // Dry runs change nothing and say what would be done.
    let ledger_dir = env.state.root().join("chaos/faults");
    let files = || {
        std::fs::read_dir(&ledger_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = files();
    for fault in [
        "db_pool_exhaustion",
        "latency",
        "cache_poisoning",
        "config_corruption",
        "db_down",
        "failed_migration",
    ] {
        let mut req = InjectRequest::new(fault);
        req.dry_run = true;
        let out = env.engine.inject(req).await.unwrap();
        assert!(out.dry_run);
        assert!(!out.plan.is_empty(), "{fault}: empty plan");
        assert!(out.record.is_none() && out.effect.is_none());
    }
    assert_eq!(files(), before, "a dry run wrote the ledger");
    assert_eq!(env.service("postgres").await["state"], "running");
    env.assert_clean().await;
    assert_eq!(env.readyz().await.0, 200);

    // Validation.
    match env.engine.inject(InjectRequest::new("no_such_fault")).await {
        Err(ChaosError::UnknownFault { known, .. }) => {
            assert!(known.contains(&"db_pool_exhaustion".to_string()));
            assert_eq!(known.len(), ChaosEngine::catalogue().len());
        }
        other => panic!("expected UnknownFault, got {other:?}"),
    }
    for (params, ttl, field) in [
        (json!({"connections": 0}), None, "connections"),
        (json!({"connections": "many"}), None, "connections"),
        (json!({"conections": 3}), None, "conections"),
        (json!({}), Some(0), "ttl_s"),
        (json!({}), Some(3601), "ttl_s"),
    ] {
        let mut req = InjectRequest::new("db_pool_exhaustion");
        req.params = params.as_object().cloned().unwrap();
        req.ttl_s = ttl;
        match env.engine.inject(req).await {
            Err(ChaosError::InvalidParam { field: f, message }) => {
                assert_eq!(f, field, "{message}");
                assert!(message.contains("allowed"), "{message}");
            }
            other => panic!("expected InvalidParam for {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        env.engine.stop("f-000000000000").await,
        Err(ChaosError::UnknownId(_))
    ));

    // Lease expiry reverts.
    env.engine.spawn_lease_keeper();
    let mut req = InjectRequest::new("latency");
    req.ttl_s = Some(2);
    let id = env.engine.inject(req).await.unwrap().record.unwrap().id;
    let rec = wait_state(&env.engine, &id, "expired", Duration::from_secs(8)).await;
    assert_eq!(rec.end_reason.as_deref(), Some("lease expired"));
    assert_eq!(env.target_failpoints().await, json!([]));
    let events = std::fs::read_to_string(env.state.events_file()).unwrap();
    assert!(events.contains("\"fault_injected\"") && events.contains("\"fault_expired\""));

    // Suspended auto-revert: the lease runs out but nothing is reverted until resumed.
    let mut req = InjectRequest::new("latency");
    req.ttl_s = Some(1);
    req.verify = false;
    let id = env.engine.inject(req).await.unwrap().record.unwrap().id;
    let rec = env.engine.set_auto_revert(&id, false).await.unwrap();
    assert!(!rec.auto_revert);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rec = status_of(&env.engine, &id).await;
    assert_eq!(
        rec.state, "active",
        "reverted while auto-revert was suspended"
    );
    assert_eq!(env.target_failpoints().await[0]["name"], "http.latency");
    env.engine.set_auto_revert(&id, true).await.unwrap();
    wait_state(&env.engine, &id, "expired", Duration::from_secs(5)).await;
    assert!(matches!(
        env.engine.set_auto_revert(&id, false).await,
        Err(ChaosError::NotActive(_))
    ));
    env.assert_clean().await;

    // stop_all reverts every open fault.
    let a = env.inject("latency", json!({})).await.record.unwrap();
    let b = env
        .inject("cache_poisoning", json!({"entries": 1}))
        .await
        .record
        .unwrap();
    let stopped = env.engine.stop_all().await.unwrap();
    let ids: Vec<_> = stopped.iter().map(|r| r.id.clone()).collect();
    assert!(ids.contains(&a.id) && ids.contains(&b.id), "{ids:?}");
    assert!(stopped.iter().all(|r| r.state == "reverted"));
    env.assert_clean().await;
}

/// Faults that stop or restart the target, and the write-ahead order of the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_lifecycle_faults_and_write_ahead_ledger() {
    let env = Env::up();
    env.wait_ready(Duration::from_secs(30)).await;

    let out = env.inject("api_down", json!({})).await;
    let record = out.record.unwrap();
    assert_eq!(env.service("target-app").await["state"], "stopped");
    assert_eq!(env.get("/healthz").await.0, 0, "the API still answers");
    // Write-ahead: the ledger said `injecting` before the service was stopped.
    let entry = env.ledger_entry(&record.id);
    let injecting_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(entry["history"][0]["at"].clone()).unwrap();
    let stopped_at = last_event(&env, "service_stopped", "target-app");
    assert!(
        injecting_at <= stopped_at,
        "ledger written at {injecting_at}, service stopped at {stopped_at}"
    );
    env.stop_and_check(&record).await;

    let out = env.inject("config_corruption", json!({})).await;
    let s = env.service("target-app").await;
    assert_eq!(s["last_exit"]["code"], 78, "{s}");
    assert!(env.log_has("CONFIG_INVALID"));
    assert!(
        std::fs::read_to_string(env.state.env_file())
            .unwrap()
            .contains("POOL_SIZE=not-a-number")
    );
    env.stop_and_check(&out.record.unwrap()).await;

    // JWT rotation: a token signed with the original secret is refused, then accepted.
    let token = jwt(&env.secret("jwt-secret"));
    let orders = format!("{}/api/v1/orders/1", env.url);
    let out = env.inject("jwt_secret_rotation", json!({})).await;
    let r = env
        .http
        .get(&orders)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    env.stop_and_check(&out.record.unwrap()).await;
    let r = env
        .http
        .get(&orders)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status().as_u16(),
        401,
        "the original secret was not restored"
    );

    let out = env.inject("crash_loop", json!({})).await;
    let s = env.service("target-app").await;
    assert_eq!(s["last_exit"]["code"], 1, "{s}");
    // Only one fault on the target's lifecycle at a time.
    match env.engine.inject(InjectRequest::new("api_down")).await {
        Err(ChaosError::Inject(m)) => assert!(m.contains("stop it first"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    env.stop_and_check(&out.record.unwrap()).await;

    // Reap of a corrupted .env left by an engine that vanished: restored and healthy.
    let first = Env::engine_for(&env.state);
    let mut req = InjectRequest::new("config_corruption");
    req.params = json!({"key": "LOG_LEVEL", "value": "loud"})
        .as_object()
        .cloned()
        .unwrap();
    req.verify = false;
    let record = first.inject(req).await.unwrap().record.unwrap();
    drop(first);
    let reaped = Env::engine_for(&env.state).reap().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        (reaped[0].id.as_str(), reaped[0].state.as_str()),
        (record.id.as_str(), "reverted")
    );
    env.wait_ready(Duration::from_secs(30)).await;
    env.assert_clean().await;
}

/// The HTTP control API and its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_serves_the_engine_behind_a_token() {
    let dir = tempfile_dir();
    let state = aiops_sandbox::StateDir::new(dir.path());
    let engine = Env::engine_for(&state);
    let app = aiops_chaos::control::router(engine, "secret-token-123".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = ChaosClient::new(&base, "secret-token-123");
    let faults = client.catalogue().await.unwrap();
    assert_eq!(faults.len(), ChaosEngine::catalogue().len());
    let pool = faults
        .iter()
        .find(|f| f.id == "db_pool_exhaustion")
        .unwrap();
    assert_eq!(pool.defaults["connections"], 40);
    assert_eq!(
        pool.params_schema["properties"]["connections"]["maximum"],
        90
    );
    assert!(client.status().await.unwrap().is_empty());

    let wrong = ChaosClient::new(&base, "nope");
    assert!(wrong.status().await.is_err());
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/control/v1/chaos/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    match client.inject(InjectRequest::new("nope")).await {
        Err(ChaosError::UnknownFault { known, .. }) => assert!(!known.is_empty()),
        other => panic!("{other:?}"),
    }
    let mut req = InjectRequest::new("latency");
    req.params = json!({"delay_ms": 1}).as_object().cloned().unwrap();
    match client.inject(req).await {
        Err(ChaosError::InvalidParam { field, .. }) => assert_eq!(field, "delay_ms"),
        other => panic!("{other:?}"),
    }
    let r = http
        .post(format!("{base}/control/v1/chaos/inject"))
        .bearer_auth("secret-token-123")
        .json(&json!({"fault": "latency", "ttl": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["field"], "ttl", "{body}");
    match client.stop("f-0123456789ab").await {
        Err(ChaosError::UnknownId(_)) => {}
        other => panic!("{other:?}"),
    }
    let r = http
        .post(format!(
            "{base}/control/v1/chaos/f-0123456789ab/auto-revert?enabled=maybe"
        ))
        .bearer_auth("secret-token-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(client.stop_all().await.unwrap().is_empty());
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn jwt(secret: &str) -> String {
    let exp = chrono::Utc::now().timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": 1, "role": "admin", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn last_event(env: &Env, kind: &str, service: &str) -> chrono::DateTime<chrono::Utc> {
    aiops_sandbox::events::EventLog::read_all(&env.state.events_file())
        .into_iter()
        .rev()
        .find(|e| e.kind == kind && e.service.as_deref() == Some(service))
        .unwrap_or_else(|| panic!("no {kind} event for {service}"))
        .ts
}

async fn status_of(engine: &ChaosEngine, id: &str) -> aiops_chaos::FaultRecord {
    engine
        .status()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .expect("fault in status")
}

async fn wait_state(
    engine: &ChaosEngine,
    id: &str,
    state: &str,
    limit: Duration,
) -> aiops_chaos::FaultRecord {
    let started = Instant::now();
    loop {
        let rec = status_of(engine, id).await;
        if rec.state == state {
            return rec;
        }
        assert!(
            started.elapsed() < limit,
            "{id} not {state} within {limit:?}: {rec:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
