//! The dashboard, `/metrics` and the webhook notifier against a real sandbox.
//!
//! The browser part is `tests/clients/dashboard.mjs`: a real headless Chromium (Debian's
//! `chromium`) driven by playwright-core, using the `aiops` CLI beside the page as an
//! operator would. Screenshots go to `target/dashboard-screenshots/` (not committed).
//! The webhook receiver is a small axum server on 127.0.0.1 inside the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_tests::{Sandbox, bin, describe};
use serde_json::{Value, json};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// `target/dashboard-screenshots/NAME`, emptied.
fn shots_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("dashboard-screenshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

/// Runs `dashboard.mjs SCENARIO` against the sandbox; its steps, or the test fails with
/// the script's output and the sandbox's logs.
fn browser(sb: &Sandbox, scenario: &str, shots: &Path) -> Vec<Value> {
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (./scripts/test does)"
    );
    assert!(
        clients_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: `npm ci --prefix tests/clients` (./scripts/test does)"
    );
    let (url, token) = sb.endpoint();
    let out = Command::new("node")
        .arg(clients_dir().join("dashboard.mjs"))
        .arg(scenario)
        .current_dir(clients_dir())
        .env("AIOPS_BIN", bin("aiops"))
        .env("AIOPS_HOME", sb.home())
        .env("AIOPS_TARGET_APP_BIN", bin("target-app"))
        .env("DASH_URL", &url)
        .env("DASH_TOKEN", &token)
        .env("SHOT_DIR", shots)
        .output()
        .expect("run node");
    if !out.status.success() {
        panic!(
            "dashboard.mjs {scenario} failed ({}):\n{}\n{}",
            out.status,
            describe(&out),
            sb.log_tails()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:#?}"))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn metrics(sb: &Sandbox) -> String {
    let (url, token) = sb.endpoint();
    let resp = http()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    resp.text().expect("metrics text")
}

/// Every secret value of the sandbox (tokens, passwords, the JWT secret).
fn secrets(sb: &Sandbox) -> Vec<String> {
    std::fs::read_dir(sb.home().join("secrets"))
        .expect("secrets dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() >= 8)
        .collect()
}

fn up_with_chaos(sb: &Sandbox) {
    sb.aiops_ok(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--allow-chaos",
    ]);
}

#[test]
fn dashboard_shows_every_service_and_its_charts_follow_load() {
    let started = Instant::now();
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let c = http();

    // The guards, before any browser: no token, no data; the cookie only from this origin.
    let r = c.get(format!("{url}/")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let login = c
        .get(format!("{url}/login"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(login.contains("name=\"token\""));
    for s in secrets(&sb) {
        assert!(!login.contains(&s), "the login page holds a secret");
    }
    for path in [
        "/dashboard/stream",
        "/dashboard/app.js",
        "/metrics",
        "/api/v1/status",
    ] {
        let r = c.get(format!("{url}{path}")).send().unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
    }
    let cookie = format!("aiops_session={token}");
    let r = c
        .get(format!("{url}/api/v1/status"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "the cookie opens the REST API");
    for (origin, what) in [
        (None, "no Origin"),
        (Some("http://127.0.0.1:3000"), "another local origin"),
        (Some("http://evil.example"), "a foreign origin"),
    ] {
        let mut req = c
            .post(format!("{url}/api/v1/diagnoses"))
            .header("cookie", &cookie)
            .body("{}");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_eq!(
            req.send().unwrap().status(),
            403,
            "a cookie POST from {what} is refused"
        );
    }
    let r = c
        .post(format!("{url}/mcp"))
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "the cookie does not open MCP");
    let r = c
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // Tool calls over MCP are counted by /metrics.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use rmcp::ServiceExt;
        let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
            rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
                format!("{url}/mcp"),
            )
            .auth_header(token.clone()),
        );
        let client = ().serve(transport).await.expect("MCP over HTTP");
        client
            .call_tool(rmcp::model::CallToolRequestParams::new("check_health"))
            .await
            .expect("check_health");
        assert!(
            client
                .call_tool(rmcp::model::CallToolRequestParams::new("no_such_tool"))
                .await
                .is_err()
        );
        let _ = client.cancel().await;
    });
    let m = metrics(&sb);
    assert!(
        m.contains("aiops_tool_calls_total{tool=\"check_health\",outcome=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("aiops_tool_calls_total{tool=\"(unknown)\",outcome=\"invalid\"} 1"),
        "{m}"
    );
    assert!(m.contains("aiops_faults_active 0"), "{m}");

    // The page itself, in Chromium.
    let shots = shots_dir("live");
    let steps = browser(&sb, "live", &shots);
    let tiles = step(&steps, "tiles");
    let names: Vec<&str> = tiles["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in [
        "postgres",
        "target-app",
        "worker",
        "upstream-primary",
        "upstream-fallback",
    ] {
        assert!(names.contains(&s), "no tile for {s}: {tiles}");
        assert_eq!(tiles["states"][s], "running", "{tiles}");
    }
    let rate = step(&steps, "rate_chart_follows_load")["rate"]
        .as_f64()
        .unwrap();
    assert!(rate >= 5.0, "the chart showed {rate} req/s under load");
    step(&steps, "logged_out");
    let shot = shots.join("dashboard-live.png");
    assert!(
        std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000,
        "{} missing or empty",
        shot.display()
    );

    // The token never reached a log.
    for log in std::fs::read_dir(sb.home().join("logs")).unwrap() {
        let path = log.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains(&token),
            "{} contains the HTTP token",
            path.display()
        );
    }
    eprintln!(
        "dashboard_shows_every_service_and_its_charts_follow_load: {:.1} s; screenshot {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}

#[test]
fn dashboard_stops_a_cli_fault_and_its_approval_lets_the_action_run() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.home()).unwrap();
    std::fs::write(
        sb.home().join("aiops.toml"),
        "[policy.actions]\nrestart_service = \"approve\"\n",
    )
    .unwrap();
    up_with_chaos(&sb);
    let shots = shots_dir("operate");
    let steps = browser(&sb, "operate", &shots);
    let fault = step(&steps, "fault_stopped_in_page")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approval = step(&steps, "approved_in_page")["approval_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The stop button really reverted the fault...
    let (url, token) = sb.endpoint();
    let faults: Value = http()
        .get(format!("{url}/api/v1/chaos"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let record = faults["faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == fault.as_str())
        .unwrap_or_else(|| panic!("{fault} not in {faults:#}"));
    assert_eq!(record["state"], "reverted", "{record:#}");

    // ...and the approval went through the one approval gate, audited as the dashboard's.
    let audit = std::fs::read_to_string(sb.home().join("audit/audit.jsonl")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["event"] == "approval_decided"
            && l["approval_id"] == approval.as_str()
            && l["state"] == "approved"
            && l["decided_by"] == "dashboard"),
        "no approval by the dashboard in the audit log:\n{audit}"
    );
    assert!(
        lines.iter().any(|l| l["event"] == "finished"
            && l["action"] == "restart_service"
            && l["status"] == "executed"
            && l["approval_id"] == approval.as_str()),
        "the approved restart did not run:\n{audit}"
    );
    let m = metrics(&sb);
    assert!(m.contains("aiops_faults_active 0"), "{m}");
    assert!(
        m.contains(
            "aiops_action_duration_seconds_count{action=\"restart_service\",status=\"executed\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("aiops_action_duration_seconds_count{action=\"restart_service\",status=\"pending_approval\"} 1"),
        "{m}"
    );
}

/// What the webhook receiver got: each request's body, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on 127.0.0.1 that answers 500 to its first request, then 200.
fn receiver(rt: &tokio::runtime::Runtime) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let mut v = seen.lock().unwrap();
                v.push(body);
                if v.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn kinds(got: &Received) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter_map(|b| {
            b["blocks"][2]["elements"][0]["text"]
                .as_str()
                .and_then(|t| t.split('`').nth(1))
                .map(str::to_string)
        })
        .collect()
}

/// Waits until `n` requests of `kind` arrived.
fn wait_for_kind(got: &Received, kind: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if kinds(got).iter().filter(|k| *k == kind).count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "fewer than {n} `{kind}` notifications within {timeout:?}; got: {:#?}",
        got.lock().unwrap()
    );
}

#[test]
fn webhook_tells_humans_of_approvals_refusals_escalations_failed_drills() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hook, got) = receiver(&rt);
    let sb = Sandbox::new();

    // A mistyped key is a clear error, and the daemon does not start with it.
    std::fs::write(
        sb.home().join("aiops.toml"),
        format!("[notify]\nwebhook_url = \"{hook}\"\nretry = 3\n"),
    )
    .unwrap();
    let out = sb.aiops(&["up", "--http", "127.0.0.1:0", "--random-ports"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let said = format!(
        "{}{}",
        describe(&out),
        std::fs::read_to_string(sb.home().join("logs/aiops.log")).unwrap_or_default()
    );
    assert!(said.contains("retry"), "the error names the key:\n{said}");
    sb.aiops(&["down"]);

    std::fs::write(
        sb.home().join("aiops.toml"),
        format!(
            "[policy.actions]\nrestart_service = \"approve\"\nkill_process = \"deny\"\n\n\
             [notify]\nwebhook_url = \"{hook}\"\nbackoff_ms = 200\n"
        ),
    )
    .unwrap();
    sb.up();
    let (url, token) = sb.endpoint();

    // Needs approval (and the receiver's first answer is a 500: retried).
    let out = sb.aiops(&[
        "action",
        "restart_service",
        "--param",
        "service=worker",
        "--json",
    ]);
    let asked: Value = serde_json::from_slice(&out.stdout).expect("action JSON");
    assert_eq!(asked["status"], "pending_approval", "{}", describe(&out));
    wait_for_kind(&got, "approval", 2, Duration::from_secs(15));
    {
        let v = got.lock().unwrap();
        assert!(v.len() >= 2, "{v:#?}");
        assert_eq!(v[0], v[1], "the 500 was retried with the same body");
        let text = v[1]["text"].as_str().unwrap();
        assert!(
            text.starts_with("[aiops] Approval needed: restart_service"),
            "{text}"
        );
        let detail = v[1]["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            detail.contains(&format!(
                "aiops approve {}",
                asked["approval_id"].as_str().unwrap()
            )),
            "{detail}"
        );
    }

    // Refused by policy.
    let out = sb.aiops(&["action", "kill_process", "--param", "pid=1", "--json"]);
    assert!(!out.status.success(), "{}", describe(&out));
    wait_for_kind(&got, "refused", 1, Duration::from_secs(15));

    // An agent gives up: a report filed as not resolved.
    let r = http()
        .post(format!("{url}/api/v1/incidents"))
        .bearer_auth(&token)
        .json(&json!({
            "title": "Orders time out",
            "what_broke": "Orders block on a lock held by an unknown session.",
            "what_was_done": ["kill_db_sessions: refused"],
            "why": "Could not find the holder.",
            "resolved": false
        }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    wait_for_kind(&got, "escalation", 1, Duration::from_secs(15));

    // A drill whose agent does nothing fails.
    let out = sb.aiops(&[
        "drill",
        "--faults",
        "latency",
        "--trials",
        "1",
        "--noop",
        "0",
        "--agent-cmd",
        "true",
        "--timeout",
        "5s",
        "--durable",
        "1s",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 / 1 trials passed"),
        "{}",
        describe(&out)
    );
    wait_for_kind(&got, "drill_failed", 1, Duration::from_secs(15));

    // Slack-shaped bodies without a secret in any of them.
    let bodies = got.lock().unwrap().clone();
    let secrets = secrets(&sb);
    assert!(secrets.len() >= 3, "{secrets:?}");
    for b in &bodies {
        assert!(b["text"].as_str().unwrap().starts_with("[aiops] "), "{b:#}");
        assert_eq!(b["blocks"][0]["type"], "header");
        let text = b.to_string();
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "a secret in a webhook body: {b:#}"
            );
        }
        assert!(!text.contains("/hook"), "the webhook URL in a body: {b:#}");
    }
    let m = metrics(&sb);
    for kind in ["approval", "refused", "escalation", "drill_failed"] {
        assert!(
            m.contains(&format!(
                "aiops_notifications_total{{kind=\"{kind}\",outcome=\"sent\"}} 1"
            )),
            "{kind}: {m}"
        );
    }
    assert!(m.contains("aiops_drill_trials 1"), "{m}");
    observability_files_ask_only_for_served_metrics(&m);

    // The page's drill table is the one `aiops drill` prints.
    let d: Value = http()
        .get(format!("{url}/dashboard/drill"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let rows = d["drill"]["rows"].as_array().expect("drill rows");
    assert_eq!(rows.len(), 1, "{d:#}");
    assert_eq!(rows[0][1], "latency", "{d:#}");
    assert_eq!(rows[0].as_array().unwrap().last().unwrap(), "FAIL", "{d:#}");
    // ...and the page shows it.
    let steps = browser(&sb, "drill", &shots_dir("drill"));
    let table = step(&steps, "drill_table");
    assert_eq!(table["rows"][0][1], "latency", "{table:#}");
    assert_eq!(table["rows"][0][10], "FAIL", "{table:#}");
    assert!(
        table["summary"].as_str().unwrap().contains("passed 0/1"),
        "{table:#}"
    );
    assert!(m.contains("aiops_drill_passed_trials 0"), "{m}");
    assert!(
        m.contains("aiops_incident_reports_total{resolved=\"false\"} 1"),
        "{m}"
    );
}

/// The optional Prometheus + Grafana files parse, scrape with the token from a file, and
/// the Grafana dashboard queries only metrics `/metrics` really serves (`served`).
fn observability_files_ask_only_for_served_metrics(served: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/observability");
    let yaml = |f: &str| -> Value {
        serde_norway::from_str(&std::fs::read_to_string(dir.join(f)).unwrap())
            .unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let compose = yaml("docker-compose.observability.yml");
    assert!(compose["services"]["prometheus"].is_object());
    assert!(compose["services"]["grafana"].is_object());
    let prom = yaml("prometheus.yml");
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(job["authorization"]["type"], "Bearer");
    assert!(job["authorization"]["credentials_file"].is_string());
    yaml("grafana/provisioning/datasources/prometheus.yml");
    yaml("grafana/provisioning/dashboards/aiops.yml");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/dashboards/aiops-control-plane.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    let types: Vec<&str> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut asked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("aiops_") {
                    continue;
                }
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    types.contains(&base),
                    "the Grafana panel `{}` asks for {word}, which /metrics does not serve",
                    panel["title"]
                );
                asked += 1;
            }
        }
    }
    assert!(
        asked >= 10,
        "only {asked} metric references in the dashboard"
    );
}
