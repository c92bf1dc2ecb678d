//! The REST API against a real sandbox: every `/api/v1` endpoint with dry run, policy
//! refusal, approvals and audit entries; chaos through REST; the compatibility routes of
//! the original chaos and action servers on their own ports, including the original
//! integration scenario; bad input answered 4xx with a JSON error naming the field; and
//! schemathesis against `/api/openapi.json`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aiops_tests::{Sandbox, describe};
use serde_json::{Value, json};

/// The daemon's base URL and token.
struct Api {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    fn of(sb: &Sandbox) -> Self {
        let ep: Value = serde_json::from_slice(
            &std::fs::read(sb.home().join("run/endpoint.json")).expect("endpoint.json"),
        )
        .expect("endpoint.json parses");
        Self {
            base: ep["url"].as_str().expect("url").to_string(),
            token: std::fs::read_to_string(sb.home().join("secrets/http-token"))
                .expect("token")
                .trim()
                .to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .user_agent("rest-e2e")
                .build()
                .expect("client"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().expect("method"), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }
}

/// A plain client without a token (the compatibility ports, the target itself).
/// POST declaring a 2 MiB body of which only the first KiB is sent, over a raw socket:
/// the server must answer 413 from the `Content-Length` alone. (A client that streams the
/// whole body can see the connection closed under it before it reads the answer, which
/// made this check flaky under load.) Returns the status and the raw response.
fn oversized_post(base: &str, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the daemon");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 * 1024 * 1024
    )
    .expect("send the headers");
    let _ = s.write_all(&[b' '; 1024]);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text.replace(token, "<token>"))
}

fn plain() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn send(req: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn up(sb: &Sandbox, extra: &[&str]) {
    let mut args = vec!["up", "--http", "127.0.0.1:0", "--random-ports"];
    args.extend_from_slice(extra);
    sb.aiops_ok(&args);
}

/// Asserts a 4xx JSON error naming `field`.
#[track_caller]
fn assert_names_field((status, body): (u16, Value), field: &str) {
    assert!(
        (400..500).contains(&status),
        "expected a 4xx naming `{field}`, got {status}: {body:#}"
    );
    assert_eq!(body["error"]["field"], field, "{status}: {body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(field)),
        "{body:#}"
    );
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => {
                panic!("{what} not reached within {limit:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[test]
fn every_rest_endpoint_answers_through_the_libraries_with_dry_run_policy_and_audit() {
    let sb = Sandbox::new();
    up(&sb, &["--allow-chaos"]);
    let api = Api::of(&sb);

    // Observation: the same reports as the MCP tools.
    for (path, key) in [
        ("/api/v1/snapshot", "anomalies"),
        ("/api/v1/status", "services"),
        ("/api/v1/health", "overall"),
        ("/api/v1/metrics?window_s=10", "window_s"),
        ("/api/v1/logs?service=target-app&limit=5", "entries"),
        ("/api/v1/db?long_running_threshold_s=5", "by_application"),
        ("/api/v1/processes", "services"),
        ("/api/v1/disk", "filesystems"),
        ("/api/v1/config", "entries"),
        ("/api/v1/events?limit=5", "events"),
    ] {
        let (status, body) = api.get(path);
        assert_eq!(status, 200, "{path}: {body:#}");
        assert!(
            body.get(key).is_some(),
            "{path} has no `{key}`: {}",
            body.to_string().chars().take(600).collect::<String>()
        );
    }
    assert_eq!(api.get("/api/v1/health").1["overall"], "healthy");

    // The guards: no token, a foreign Origin.
    let (status, body) = send(plain().get(format!("{}/api/v1/status", api.base)));
    assert_eq!(status, 401, "{body:#}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = send(
        plain()
            .get(format!("{}/api/v1/status", api.base))
            .bearer_auth(&api.token)
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(status, 403);
    let (status, text) = oversized_post(&api.base, "/api/v1/diagnoses", &api.token);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("payload_too_large"), "{text}");

    // Bad input: 4xx with a JSON error naming the field.
    assert_names_field(api.get("/api/v1/status?verbose=1"), "verbose");
    assert_names_field(api.get("/api/v1/metrics?window_s=-5"), "window_s");
    assert_names_field(api.get("/api/v1/metrics?window_s=100000"), "window_s");
    assert_names_field(api.get("/api/v1/logs?limit=abc"), "limit");
    assert_names_field(api.get("/api/v1/audit?limit=0"), "limit");
    assert_names_field(
        api.post(
            "/api/v1/actions/restart_service",
            json!({"service": "nginx"}),
        ),
        "service",
    );
    assert_names_field(
        api.post(
            "/api/v1/actions/restart_service",
            json!({"service": "target-app", "force": true}),
        ),
        "force",
    );
    assert_names_field(
        api.post("/api/v1/actions/restart_service?dryrun=true", json!({})),
        "dryrun",
    );
    assert_names_field(
        api.post("/api/v1/actions/verify_recovery", json!([1])),
        "body",
    );
    let (status, body) = api.post("/api/v1/actions/reboot_machine", json!({}));
    assert_eq!(status, 404, "{body:#}");
    assert_eq!(body["error"]["field"], "action");
    assert!(body["error"]["known"].as_array().unwrap().len() > 10);

    // Actions: the catalogue, then a dry run that changes nothing.
    let (status, catalogue) = api.get("/api/v1/actions");
    assert_eq!(status, 200);
    assert!(
        catalogue["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "kill_db_sessions")
    );
    let pid_before = sb.service("target-app")["pid"].clone();
    let (status, plan) = api.post(
        "/api/v1/actions/restart_service?dry_run=true",
        json!({"service": "target-app"}),
    );
    assert_eq!(status, 200, "{plan:#}");
    assert_eq!(plan["status"], "planned", "{plan:#}");
    assert!(!plan["plan"]["steps"].as_array().unwrap().is_empty());
    assert_eq!(
        sb.service("target-app")["pid"],
        pid_before,
        "a dry run restarted"
    );
    let dry_audit = plan["audit_id"].as_str().unwrap().to_string();

    // A read-only action executes and verifies.
    let (status, verified) = api.post("/api/v1/actions/verify_recovery", json!({}));
    assert!(status == 200 || status == 409, "{verified:#}");
    assert!(
        verified["verification"]["checks"].is_array(),
        "{verified:#}"
    );

    // Policy: a denied action is refused (403, nothing done), an approved one waits for a
    // person, who approves over REST; the approval is then used once.
    std::fs::write(
        sb.home().join("aiops.toml"),
        "[policy.actions]\nrestart_service = \"deny\"\nclear_cache = \"approve\"\n",
    )
    .expect("write aiops.toml");
    let (status, refused) = api.post(
        "/api/v1/actions/restart_service",
        json!({"service": "target-app"}),
    );
    assert_eq!(status, 403, "{refused:#}");
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["policy"]["decision"], "deny", "{refused:#}");
    assert_eq!(
        sb.service("target-app")["pid"],
        pid_before,
        "a refusal restarted"
    );
    let refused_audit = refused["audit_id"].as_str().unwrap().to_string();

    let (status, pending) = api.post("/api/v1/actions/clear_cache", json!({}));
    assert_eq!(status, 202, "{pending:#}");
    assert_eq!(pending["status"], "pending_approval");
    let approval = pending["approval_id"].as_str().unwrap().to_string();
    let (status, list) = api.get("/api/v1/approvals");
    assert_eq!(status, 200);
    assert!(
        list["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == approval.as_str()),
        "{list:#}"
    );
    let (status, decided) = api.post(&format!("/api/v1/approvals/{approval}/approve"), json!({}));
    assert_eq!(status, 200, "{decided:#}");
    assert_eq!(decided["state"], "approved");
    let (status, again) = api.post(&format!("/api/v1/approvals/{approval}/approve"), json!({}));
    assert_eq!(status, 409, "deciding twice: {again:#}");
    let (status, ran) = api.post(
        &format!("/api/v1/actions/clear_cache?approval_id={approval}"),
        json!({}),
    );
    assert_eq!(status, 200, "{ran:#}");
    assert_eq!(ran["status"], "executed", "{ran:#}");
    let (status, _) = api.post("/api/v1/approvals/ap-nonexistent/deny", json!({}));
    assert_eq!(status, 404);

    // The audit log has each call, with the REST caller.
    let (status, audit) = api.get("/api/v1/audit?limit=200");
    assert_eq!(status, 200);
    let entries = audit["entries"].as_array().unwrap();
    for id in [&dry_audit, &refused_audit] {
        assert!(
            entries
                .iter()
                .any(|e| e["audit_id"] == id.as_str() && e["event"] == "finished"),
            "no finished line for {id}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["event"] == "approval_decided" && e["approval_id"] == approval.as_str())
    );
    assert!(
        entries
            .iter()
            .any(|e| e["client"].as_str() == Some("rest (rest-e2e)")),
        "no entry names the REST caller"
    );
    std::fs::remove_file(sb.home().join("aiops.toml")).unwrap();

    // Chaos through REST: catalogue, bad input, dry run, inject, status, stop.
    let (status, faults) = api.get("/api/v1/chaos/faults");
    assert_eq!(status, 200);
    let ids: Vec<&str> = faults["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"rate_limit") && ids.contains(&"db_pool_exhaustion"),
        "{ids:?}"
    );
    let (status, body) = api.post("/api/v1/chaos/no_such_fault", json!({}));
    assert_eq!(status, 404, "{body:#}");
    assert_eq!(body["error"]["field"], "fault");
    assert_names_field(
        api.post("/api/v1/chaos/latency", json!({"delay_ms": 1})),
        "delay_ms",
    );
    assert_names_field(
        api.post("/api/v1/chaos/latency", json!({"delay": 3000})),
        "delay",
    );
    assert_names_field(api.post("/api/v1/chaos/latency?ttl=5", json!({})), "ttl");
    assert_names_field(
        api.post("/api/v1/chaos/latency?ttl_s=0", json!({})),
        "ttl_s",
    );
    let (status, plan) = api.post(
        "/api/v1/chaos/db_pool_exhaustion?dry_run=true",
        json!({"connections": 5}),
    );
    assert_eq!(status, 200, "{plan:#}");
    assert_eq!(plan["dry_run"], true);
    assert!(plan["record"].is_null());
    assert_eq!(
        api.get("/api/v1/chaos").1["faults"],
        json!([]),
        "a dry run injected"
    );

    let (status, injected) = api.post("/api/v1/chaos/latency?ttl_s=120", json!({"delay_ms": 2000}));
    assert_eq!(status, 200, "{injected:#}");
    assert_eq!(injected["effect"]["verified"], true, "{injected:#}");
    let id = injected["record"]["id"].as_str().unwrap().to_string();
    assert!(
        injected["record"].get("label").is_none(),
        "the label leaked"
    );
    let (_, listed) = api.get("/api/v1/chaos");
    let active = &listed["faults"][0];
    assert_eq!(active["id"], id.as_str());
    assert_eq!(active["state"], "active");
    assert!(
        active.get("label").is_none(),
        "the label leaked: {active:#}"
    );
    let (status, stopped) = api.post(&format!("/api/v1/chaos/{id}/stop"), json!({}));
    assert_eq!(status, 200, "{stopped:#}");
    assert_eq!(stopped["state"], "reverted");
    let (status, _) = api.post("/api/v1/chaos/f-000000000000/stop", json!({}));
    assert_eq!(status, 404);
    let (status, all) = api.post("/api/v1/chaos/stop-all", json!({}));
    assert_eq!(status, 200, "{all:#}");
    assert_eq!(all["faults"], json!([]), "nothing was left active: {all:#}");

    // Diagnoses and incident reports.
    assert_names_field(
        api.post(
            "/api/v1/diagnoses",
            json!({"fault_class": "latency", "component": "target-app", "summary": "slow", "confidence": 7}),
        ),
        "confidence",
    );
    assert_names_field(
        api.post(
            "/api/v1/diagnoses",
            json!({"component": "target-app", "summary": "slow"}),
        ),
        "fault_class",
    );
    let (status, d) = api.post(
        "/api/v1/diagnoses",
        json!({"fault_class": "latency", "component": "target-app",
               "summary": "every request takes 2 s longer", "evidence": ["p50 2010 ms"], "confidence": 0.8}),
    );
    assert_eq!(status, 200, "{d:#}");
    let (status, report) = api.post(
        "/api/v1/incidents",
        json!({"title": "Latency injected", "what_broke": "2 s added per request",
               "what_was_done": ["stopped the fault"], "why": "the failpoint is gone",
               "resolved": true, "diagnosis_id": d["id"], "before": {"p50_ms": 2010}, "after": {"p50_ms": 4}}),
    );
    assert_eq!(status, 200, "{report:#}");
    let rid = report["id"].as_str().unwrap();
    let (_, list) = api.get("/api/v1/incidents");
    assert_eq!(list["incidents"][0]["id"], rid);
    let (status, one) = api.get(&format!("/api/v1/incidents/{rid}"));
    assert_eq!(status, 200);
    assert!(
        one["markdown"]
            .as_str()
            .unwrap()
            .contains("Latency injected")
    );
    let (status, _) = api.get("/api/v1/incidents/..%2F..%2Fsecrets");
    assert_eq!(status, 404);

    // The OpenAPI document and the docs page need no token and load nothing from outside.
    let (status, doc) = send(plain().get(format!("{}/api/openapi.json", api.base)));
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/health",
        "/api/v1/actions/{action}",
        "/api/v1/chaos/{fault}",
        "/api/v1/break/{kind}",
        "/api/v1/action/verify-target-health",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
    }
    let page = plain()
        .get(format!("{}/docs", api.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("/api/openapi.json"));
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "the page loads from outside"
    );

    // No secret in anything the API answered.
    let secrets: Vec<String> = std::fs::read_dir(sb.home().join("secrets"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() >= 8)
        .collect();
    for path in [
        "/api/v1/config",
        "/api/v1/audit?limit=1000",
        "/api/v1/snapshot",
    ] {
        let text = api.get(path).1.to_string();
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{path} shows a secret");
        }
    }
}

#[test]
fn chaos_routes_answer_403_without_allow_chaos() {
    let sb = Sandbox::new();
    up(&sb, &[]);
    let api = Api::of(&sb);
    for (method, path) in [
        ("GET", "/api/v1/chaos"),
        ("GET", "/api/v1/chaos/faults"),
        ("POST", "/api/v1/chaos/latency"),
        ("POST", "/api/v1/break/db_pool"),
    ] {
        let (status, body) = api.call(method, path, None);
        assert_eq!(status, 403, "{method} {path}: {body:#}");
        assert_eq!(body["error"]["code"], "chaos_disabled");
    }
    // Everything else still works.
    assert_eq!(api.get("/api/v1/status").0, 200);
    assert_eq!(api.get("/health").0, 200);
}

/// The compatibility listeners, from `run/compat.json`.
fn compat_urls(sb: &Sandbox) -> (String, String) {
    let v: Value = serde_json::from_slice(
        &std::fs::read(sb.home().join("run/compat.json")).expect("run/compat.json"),
    )
    .expect("compat.json parses");
    (
        v["chaos_url"].as_str().unwrap().to_string(),
        v["actions_url"].as_str().unwrap().to_string(),
    )
}

fn up_compat(sb: &Sandbox) -> (String, String) {
    up(
        sb,
        &[
            "--allow-chaos",
            "--compat-ports",
            "--compat-chaos-addr",
            "127.0.0.1:0",
            "--compat-actions-addr",
            "127.0.0.1:0",
        ],
    );
    compat_urls(sb)
}

/// Requests against the target from `n` threads until dropped, as real traffic would.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                let url = url.clone();
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let _ = http.get(&url).send();
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The original system's integration test, written here with real assertions.
#[test]
fn original_integration_scenario_pool_exhaustion_fixed_through_the_compat_ports() {
    let sb = Sandbox::new();
    let (chaos, actions) = up_compat(&sb);
    let target = sb.target_url();
    let http = plain();

    // 1. The three health endpoints of the target.
    let (status, health) = send(http.get(format!("{target}/api/v1/health")));
    assert_eq!(status, 200, "{health:#}");
    assert_eq!(health["status"], "healthy");
    let (status, pool) = send(http.get(format!("{target}/api/v1/pool/status")));
    assert_eq!(status, 200);
    assert_eq!(pool["health"], "healthy", "{pool:#}");
    let (status, migrations) = send(http.get(format!("{target}/api/v1/migrations/status")));
    assert_eq!(status, 200);
    assert_eq!(migrations["current"], true, "{migrations:#}");
    // The action server's health lists its capabilities (no token on the compat port).
    let (status, server) = send(http.get(format!("{actions}/health")));
    assert_eq!(status, 200, "{server:#}");
    for c in [
        "restart-target-api",
        "restart-target-db",
        "verify-target-health",
        "remediate-db-pool-exhaustion",
    ] {
        assert!(
            server["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!(c)),
            "{server:#}"
        );
    }
    // Dry runs: the command, estimated downtime and risk; nothing restarted.
    let pid_before = sb.service("target-app")["pid"].clone();
    for (path, service) in [
        ("restart-target-api", "target-app"),
        ("restart-target-db", "postgres"),
    ] {
        let (status, dry) = send(http.post(format!("{actions}/api/v1/action/{path}?dry_run=true")));
        assert_eq!(status, 200, "{dry:#}");
        assert_eq!(dry["dry_run"], true);
        assert_eq!(dry["status"], "planned");
        assert!(
            dry["command"].as_str().unwrap().contains(service),
            "{dry:#}"
        );
        assert!(dry["risk_level"].is_string(), "{dry:#}");
        assert!(
            dry["estimated_downtime_seconds"]
                .as_f64()
                .is_some_and(|s| s > 0.0),
            "{dry:#}"
        );
    }
    assert_eq!(sb.service("target-app")["pid"], pid_before);

    // 2. db_pool with connections=10&hold_seconds=30.
    let (status, started) = send(http.post(format!(
        "{chaos}/api/v1/break/db_pool?connections=10&hold_seconds=30"
    )));
    assert_eq!(status, 200, "{started:#}\n{}", sb.log_tails());
    assert_eq!(started["status"], "started");
    let attack = started["attack_id"].as_str().unwrap().to_string();
    assert_eq!(started["duration_seconds"], 30);

    // 3. Under traffic, within 10 s: the pool is critical and health says the database is
    // unhealthy.
    let load = Load::start(format!("{target}/api/v1/products?limit=1"), 12);
    wait_for(
        "pool critical and database unhealthy",
        Duration::from_secs(10),
        || {
            let (_, pool) = send(http.get(format!("{target}/api/v1/pool/status")));
            let (code, health) = send(http.get(format!("{target}/api/v1/health")));
            if pool["health"] == "critical" && code == 503 && health["db"]["status"] == "down" {
                Ok(())
            } else {
                Err(format!("pool {pool}; health {code} {health}"))
            }
        },
    );
    let (_, verdict) = send(http.get(format!("{actions}/api/v1/action/verify-target-health")));
    assert_eq!(verdict["is_healthy"], false, "{verdict:#}");
    assert_eq!(verdict["database_status"], "unhealthy", "{verdict:#}");
    drop(load);

    // 4. The remediation, while the attack is still holding.
    let (status, fixed) = send(http.post(format!(
        "{actions}/api/v1/action/remediate-db-pool-exhaustion?escalate_to_db_restart=true"
    )));
    assert_eq!(status, 200, "{fixed:#}");
    assert_eq!(
        fixed["remediation_complete"],
        true,
        "{fixed:#}\n{}",
        sb.log_tails()
    );
    assert_eq!(fixed["execution_log"][0]["action"], "kill_db_sessions");
    assert_eq!(fixed["execution_log"][0]["status"], "executed");
    assert_eq!(fixed["final_health"]["is_healthy"], true);
    let (status, verdict) = send(http.get(format!("{actions}/api/v1/action/verify-target-health")));
    assert_eq!(status, 200);
    assert_eq!(verdict["is_healthy"], true, "{verdict:#}");
    assert_eq!(verdict["database_status"], "healthy");
    let (_, record) = send(http.get(format!("{chaos}/api/v1/break/db_pool/{attack}")));
    assert_eq!(
        record["status"], "running",
        "the attack ended early: {record:#}"
    );

    // The remediation is in the audit log, as any action.
    let api = Api::of(&sb);
    let audit_id = fixed["execution_log"][0]["audit_id"].as_str().unwrap();
    let (_, audit) = api.get("/api/v1/audit?limit=50");
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["audit_id"] == audit_id && e["event"] == "finished"),
        "{audit:#}"
    );

    // 5. Stop the attack: nothing left held in pg_stat_activity.
    let (status, stopped) = send(http.post(format!(
        "{chaos}/api/v1/break/db_pool/{attack}/stop?force_kill=true"
    )));
    assert_eq!(status, 200, "{stopped:#}");
    assert_eq!(stopped["status"], "stopped");
    let (status, db) = api.get("/api/v1/db?long_running_threshold_s=1");
    assert_eq!(status, 200, "{db:#}");
    let apps: Vec<&str> = db["by_application"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    assert!(!apps.contains(&"report-export"), "sessions left: {db:#}");
    assert_eq!(db["idle_in_transaction"], json!([]), "{db:#}");
    // Stopping again is harmless.
    let (status, again) = send(http.post(format!("{chaos}/api/v1/break/db_pool/{attack}/stop")));
    assert_eq!(status, 200);
    assert_eq!(again["status"], "stopped");
}

#[test]
fn every_compat_attack_kind_starts_reads_and_is_undone_by_stop_and_bad_input_names_the_field() {
    let sb = Sandbox::new();
    let (chaos, actions) = up_compat(&sb);
    let target = sb.target_url();
    let http = plain();
    let start = |kind: &str, query: &str| -> Value {
        let (status, body) = send(http.post(format!("{chaos}/api/v1/break/{kind}?{query}")));
        assert_eq!(status, 200, "{kind}?{query}: {body:#}\n{}", sb.log_tails());
        assert_eq!(body["status"], "started");
        body
    };
    let stop = |kind: &str, id: &str| -> Value {
        let (status, body) = send(http.post(format!("{chaos}/api/v1/break/{kind}/{id}/stop")));
        assert_eq!(status, 200, "{kind} stop: {body:#}\n{}", sb.log_tails());
        assert_eq!(body["status"], "stopped", "{body:#}");
        body
    };

    // Bad input.
    let post = |q: &str| send(http.post(format!("{chaos}/api/v1/break/{q}")));
    assert_names_field(post("db_pool?connections=-1"), "connections");
    assert_names_field(post("db_pool?connections=0"), "connections");
    assert_names_field(post("db_pool?connections=200"), "connections");
    assert_names_field(post("db_pool?hold_seconds=601"), "hold_seconds");
    assert_names_field(post("db_pool?duration_seconds=4000"), "duration_seconds");
    assert_names_field(post("db_pool?holdseconds=5"), "holdseconds");
    assert_names_field(post("db_pool?crash_type=stop"), "crash_type");
    assert_names_field(post("long_transactions?lock_type=spinlock"), "lock_type");
    assert_names_field(
        post("long_transactions?lock_type=table_lock&lock_count=3"),
        "lock_count",
    );
    assert_names_field(
        post("long_transactions?lock_type=row_lock&target_table=pg_authid"),
        "target_table",
    );
    assert_names_field(post("env_vars?env_var_name=PATH"), "env_var_name");
    assert_names_field(post("rate_limit?max_requests=0"), "max_requests");
    let (status, body) = post("teleport");
    assert_eq!(status, 404, "{body:#}");
    assert_eq!(body["error"]["field"], "kind");
    let (status, body) = send(
        http.post(format!("{chaos}/api/v1/break/db_pool?connections=5"))
            .json(&json!({"connections": 6})),
    );
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(body["error"]["field"], "connections");
    let (status, body) = send(http.get(format!("{chaos}/api/v1/break/db_pool/f-000000000000")));
    assert_eq!(status, 404, "{body:#}");
    // The compat ports refuse foreign pages (no token there, so Origin and Host matter).
    let (status, _) = send(
        http.get(format!("{actions}/health"))
            .header("Origin", "http://evil.example"),
    );
    assert_eq!(status, 403);
    let (status, _) = send(
        http.get(format!("{actions}/health"))
            .header("Host", "evil.example"),
    );
    assert_eq!(status, 403);

    // rate_limit: clamped and flooded, then restored.
    let rl = start(
        "rate_limit",
        "max_requests=3&window_seconds=60&flood_requests=30&flood_rate=20&duration_seconds=120",
    );
    assert_eq!(rl["effect_verified"], true, "{rl:#}");
    let (status, body) = send(http.get(format!("{target}/api/v1/products?limit=1")));
    assert_eq!(status, 429, "{body:#}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    let id = rl["attack_id"].as_str().unwrap();
    let (_, record) = send(http.get(format!("{chaos}/api/v1/break/rate_limit/{id}")));
    assert_eq!(record["status"], "running");
    assert_eq!(record["parameters"]["max_requests"], 3);
    stop("rate_limit", id);
    wait_for(
        "the rate limit restored",
        Duration::from_secs(5),
        || match send(http.get(format!("{target}/api/v1/products?limit=1"))) {
            (200, _) => Ok(()),
            (s, b) => Err(format!("{s} {b}")),
        },
    );

    // long_transactions: an advisory lock held in an open transaction, then released.
    let lt = start(
        "long_transactions",
        "lock_type=advisory_lock&advisory_lock_id=4242",
    );
    assert_eq!(lt["effect_verified"], true, "{lt:#}");
    assert_eq!(lt["fault"], "long_transaction");
    stop("long_transactions", lt["attack_id"].as_str().unwrap());
    // ... and a table lock on another table.
    let tl = start(
        "long_transactions",
        "lock_type=table_lock&target_table=orders",
    );
    assert_eq!(tl["parameters"]["table"], "orders");
    stop("long_transactions", tl["attack_id"].as_str().unwrap());

    // api_crash restart: SIGKILL, the supervisor brings it back; stop waits until healthy.
    let crash = start("api_crash", "crash_type=restart");
    assert_eq!(crash["effect_verified"], true, "{crash:#}");
    stop("api_crash", crash["attack_id"].as_str().unwrap());
    let (status, _) = send(http.get(format!("{target}/api/v1/health")));
    assert_eq!(status, 200);

    // env_vars: a wrong value crash-loops the target; stop restores the .env.
    let env = start(
        "env_vars",
        "env_var_name=POOL_SIZE&failure_type=wrong&wrong_value=lots",
    );
    assert_eq!(env["effect_verified"], true, "{env:#}");
    let envfile = std::fs::read_to_string(sb.home().join("target-app.env")).unwrap();
    assert!(envfile.contains("POOL_SIZE=lots"));
    stop("env_vars", env["attack_id"].as_str().unwrap());
    let envfile = std::fs::read_to_string(sb.home().join("target-app.env")).unwrap();
    assert!(!envfile.contains("lots"));

    // migrations: each failure type breaks the schema/record agreement and is undone.
    for (failure, fault_mode) in [
        ("db_behind_code", "drop_column"),
        ("future_version", "future_version"),
        ("missing_version", "missing_version"),
        ("invalid_version", "checksum_mismatch"),
    ] {
        let mig = start("migrations", &format!("failure_type={failure}"));
        assert_eq!(mig["effect_verified"], true, "{failure}: {mig:#}");
        assert_eq!(mig["parameters"]["mode"], fault_mode);
        if failure != "db_behind_code" {
            let (_, status) = send(http.get(format!("{target}/api/v1/migrations/status")));
            assert_eq!(status["current"], false, "{failure}: {status:#}");
        }
        stop("migrations", mig["attack_id"].as_str().unwrap());
        let (_, status) = send(http.get(format!("{target}/api/v1/migrations/status")));
        assert_eq!(status["current"], true, "{failure} not undone: {status:#}");
    }
    assert_names_field(post("migrations?failure_type=corrupt"), "failure_type");

    // An attack stopped after its own duration ended is still undone (and reads completed).
    let short = start("db_pool", "connections=3&hold_seconds=2");
    let sid = short["attack_id"].as_str().unwrap().to_string();
    wait_for("the lease to end", Duration::from_secs(15), || {
        let (_, r) = send(http.get(format!("{chaos}/api/v1/break/db_pool/{sid}")));
        if r["status"] == "completed" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });
    let (status, body) = send(http.post(format!("{chaos}/api/v1/break/db_pool/{sid}/stop")));
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "completed");

    // Everything healthy at the end.
    wait_for("healthy", Duration::from_secs(30), || {
        let (_, v) = send(http.get(format!("{actions}/api/v1/action/verify-target-health")));
        if v["is_healthy"] == true {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
}

/// schemathesis (PyPI) against `/api/openapi.json`: the read-only operations, a bounded
/// number of generated examples each; no 5xx, every response matches its schema.
#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let sb = Sandbox::new();
    up(&sb, &["--allow-chaos"]);
    let api = Api::of(&sb);
    // Its caches (.schemathesis, .hypothesis) go to a scratch dir, not the checkout.
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = std::process::Command::new("schemathesis")
        .current_dir(scratch.path())
        .args([
            "run",
            &format!("{}/api/openapi.json", api.base),
            "--url",
            &api.base,
            "--header",
            &format!("Authorization: Bearer {}", api.token),
            "--include-method",
            "GET",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "15",
            "--workers",
            "2",
            "--seed",
            "1",
            "--no-color",
        ])
        .output()
        .expect("run schemathesis (scripts/test installs it: pip install schemathesis)");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}\n{}",
        describe(&out),
        sb.log_tails()
    );
}
