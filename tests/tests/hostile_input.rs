//! Hostile input through the real surfaces of a running daemon: the HTTP guards on every
//! route family, sessions used by a client that did not open them, and tool arguments
//! that try to leave the sandbox (`../`, absolute paths, planted symlinks), inject SQL or
//! `.env` lines, name processes or services that are not the sandbox's. Each is refused
//! with a clear error and nothing is touched (checked, not assumed).

use std::time::Duration;

use aiops_tests::Sandbox;
use rmcp::model::{CallToolRequestParams, JsonObject, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

fn init_body() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"hostile","version":"1"}}})
    .to_string()
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<&'a str>,
    origin: Option<&'a str>,
    session: Option<&'a str>,
    body: Option<String>,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            token: None,
            origin: None,
            session: None,
            body: None,
        }
    }
}

/// Send one request; `None` when the server closed the connection before answering (a
/// body refused while it was still being sent).
async fn send(http: &reqwest::Client, base: &str, r: Req<'_>) -> Option<reqwest::Response> {
    let mut req = match r.method {
        "GET" => http.get(format!("{base}{}", r.path)),
        _ => http.post(format!("{base}{}", r.path)),
    }
    .header("content-type", "application/json")
    .header("accept", "application/json, text/event-stream")
    .timeout(Duration::from_secs(20));
    if let Some(t) = r.token {
        req = req.bearer_auth(t);
    }
    if let Some(o) = r.origin {
        req = req.header("origin", o);
    }
    if let Some(s) = r.session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-06-18");
    }
    if let Some(b) = r.body {
        req = req.body(b);
    }
    match req.send().await {
        Ok(resp) => Some(resp),
        Err(e) if (e.is_request() || e.is_body()) && r.method == "POST" => {
            eprintln!("{} {}: {e:?}", r.method, r.path);
            None
        }
        Err(e) => panic!("{} {}: {e}", r.method, r.path),
    }
}

async fn status(http: &reqwest::Client, base: &str, r: Req<'_>) -> u16 {
    let what = format!("{} {}", r.method, r.path);
    send(http, base, r)
        .await
        .unwrap_or_else(|| panic!("{what}: connection closed without an answer"))
        .status()
        .as_u16()
}

/// Initialise a Streamable HTTP session on `path` with `token`; its session id.
async fn open_session(http: &reqwest::Client, base: &str, path: &str, token: &str) -> String {
    let mut r = Req::new("POST", path);
    r.token = Some(token);
    r.body = Some(init_body());
    let resp = send(http, base, r).await.expect("initialize answered");
    assert_eq!(resp.status(), 200, "initialize on {path}");
    resp.headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no session id from {path}"))
        .to_string()
}

/// Use a session: the `initialized` notification (202 when the session is the caller's).
async fn use_session(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    session: &str,
) -> u16 {
    let mut r = Req::new("POST", path);
    r.token = Some(token);
    r.session = Some(session);
    r.body = Some(json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string());
    status(http, base, r).await
}

/// Every route family (`/mcp`, `/sse` + `/messages`, `/exam/mcp`, `/api/v1`,
/// `/control/v1`, the chaos control routes): no token or a wrong one → 401, the exam
/// token outside `/exam/mcp` → 401, a foreign `Origin` → 403, a body over 1 MiB → 413;
/// and a Streamable HTTP session is refused to any client but the one that opened it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_guards_hold_on_every_route() {
    let sb = Sandbox::new();
    sb.up();
    let (base, token) = sb.endpoint();
    let exam = sb.secret("exam-token");
    // No connection reuse: a server refusing a large body closes the connection under it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let routes: &[(&str, &str)] = &[
        ("POST", "/mcp"),
        ("GET", "/sse"),
        ("POST", "/messages?sessionId=0123456789abcdef"),
        ("POST", "/exam/mcp"),
        ("GET", "/api/v1/status"),
        ("GET", "/metrics"),
        ("GET", "/dashboard/info"),
        ("POST", "/api/v1/diagnoses"),
        ("GET", "/control/v1/services"),
        ("POST", "/control/v1/services/worker/restart"),
        ("POST", "/control/v1/chaos/inject"),
    ];
    let mut refused = 0;
    for &(method, path) in routes {
        for (who, t) in [("no token", None), ("a wrong token", Some("x".repeat(43)))] {
            let mut r = Req::new(method, path);
            r.token = t.as_deref();
            r.body = (method == "POST").then(init_body);
            assert_eq!(
                status(&http, &base, r).await,
                401,
                "{method} {path} with {who}"
            );
            refused += 1;
        }
        if path != "/exam/mcp" {
            let mut r = Req::new(method, path);
            r.token = Some(&exam);
            r.body = (method == "POST").then(init_body);
            assert_eq!(
                status(&http, &base, r).await,
                401,
                "{method} {path} with the exam token"
            );
            refused += 1;
        }
        for origin in ["http://evil.example", "null", "http://127.0.0.1.nip.io"] {
            let mut r = Req::new(method, path);
            r.token = Some(&token);
            r.origin = Some(origin);
            r.body = (method == "POST").then(init_body);
            assert_eq!(
                status(&http, &base, r).await,
                403,
                "{method} {path} with Origin {origin}"
            );
            refused += 1;
        }
        if method == "POST" {
            let mut r = Req::new(method, path);
            r.token = Some(&token);
            r.body = Some(format!(
                "{{\"jsonrpc\":\"2.0\",\"pad\":\"{}\"}}",
                "x".repeat(2 << 20)
            ));
            if let Some(resp) = send(&http, &base, r).await {
                assert_eq!(resp.status(), 413, "{method} {path} with a 2 MiB body");
            }
            refused += 1;
        }
    }
    // The worker was not restarted by any of the refused requests.
    assert_eq!(sb.service("worker")["restarts"], 0);

    // Sessions: one opened on /mcp is unknown to /exam/mcp and the other way round; on
    // /exam/mcp (which two tokens open) a session belongs to the token that opened it.
    let main_session = open_session(&http, &base, "/mcp", &token).await;
    assert_eq!(
        use_session(&http, &base, "/mcp", &token, &main_session).await,
        202
    );
    assert_eq!(
        use_session(&http, &base, "/exam/mcp", &exam, &main_session).await,
        404,
        "a /mcp session used on /exam/mcp"
    );
    let exam_session = open_session(&http, &base, "/exam/mcp", &exam).await;
    assert_eq!(
        use_session(&http, &base, "/mcp", &token, &exam_session).await,
        404,
        "an exam session used on /mcp"
    );
    let operator_session = open_session(&http, &base, "/exam/mcp", &token).await;
    assert_eq!(
        use_session(&http, &base, "/exam/mcp", &exam, &operator_session).await,
        404,
        "the operator's exam-surface session used with the exam token"
    );
    assert_eq!(
        use_session(&http, &base, "/exam/mcp", &token, &operator_session).await,
        202
    );
    assert_eq!(
        use_session(&http, &base, "/exam/mcp", &token, &exam_session).await,
        404,
        "the agent's session used with the main token"
    );
    assert_eq!(
        use_session(&http, &base, "/exam/mcp", &exam, &exam_session).await,
        202
    );
    refused += 4;
    eprintln!("refused requests checked: {refused}");
}

type Client = RunningService<RoleClient, ()>;

async fn client(url: &str, token: &str) -> Client {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(token),
    );
    ().serve(transport).await.expect("MCP initialisation")
}

/// What a refused call answered: the protocol error, the error result, or the
/// structured `refused` outcome; `None` when the call was carried out.
async fn refusal(c: &Client, tool: &str, args: &Value) -> Option<String> {
    let mut p = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(m) = args.clone() {
        p = p.with_arguments(JsonObject::from_iter(m));
    }
    let answer = tokio::time::timeout(Duration::from_secs(60), c.call_tool(p))
        .await
        .unwrap_or_else(|_| panic!("{tool}({args}) did not answer within 60 s"));
    match answer {
        Err(e) => Some(e.to_string()),
        Ok(r) if r.is_error == Some(true) => Some(format!("{:?}", r.content)),
        Ok(r) => {
            let s = r.structured_content.unwrap_or(Value::Null);
            (s["status"] == "refused").then(|| s["message"].to_string())
        }
    }
}

/// Arguments that try to leave the sandbox or reach what is not its own are refused with
/// an error that says why, and nothing outside (a canary file, behind planted symlinks)
/// or inside (the services, the shop's tables) is touched. SQL metacharacters in filters
/// are data, never SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_arguments_are_refused_and_touch_nothing() {
    let sb = Sandbox::new();
    sb.aiops_ok(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--allow-chaos",
    ]);
    let (base, token) = sb.endpoint();
    let c = client(&format!("{base}/mcp"), &token).await;

    // A canary outside the sandbox, and symlinks to it planted where path arguments land.
    let outside = tempfile::tempdir().expect("tempdir");
    let canary = outside.path().join("canary.dump");
    std::fs::write(&canary, b"canary").unwrap();
    let snapshots = sb.home().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    std::os::unix::fs::symlink(&canary, snapshots.join("planted.dump")).unwrap();
    std::os::unix::fs::symlink(&canary, snapshots.join(".fresh.dump.partial")).unwrap();
    std::os::unix::fs::symlink(&canary, sb.home().join("cache/product-999.json")).unwrap();

    let pids_before: Vec<Value> = sb.status_json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["name"], s["pid"]]))
        .collect();
    let target = sb.service("target-app");
    let target_pid = target["pid"].as_u64().unwrap();
    let daemon_pid: u64 = std::fs::read_to_string(sb.home().join("run/daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let me = std::process::id();

    let must_refuse: Vec<(&str, Value)> = vec![
        // Snapshot names and files.
        ("create_db_snapshot", json!({"name": "../../../tmp/evil"})),
        ("create_db_snapshot", json!({"name": "/tmp/evil"})),
        ("create_db_snapshot", json!({"name": "a/b"})),
        ("create_db_snapshot", json!({"name": ".."})),
        ("create_db_snapshot", json!({"name": "x\\..\\y"})),
        ("create_db_snapshot", json!({"name": "planted"})),
        ("create_db_snapshot", json!({"name": "fresh"})),
        (
            "restore_db_snapshot",
            json!({"snapshot": "../../etc/passwd"}),
        ),
        ("restore_db_snapshot", json!({"snapshot": "/etc/passwd"})),
        ("restore_db_snapshot", json!({"snapshot": "planted"})),
        // Log service names.
        ("query_logs", json!({"service": "../secrets/http-token"})),
        ("query_logs", json!({"service": "/etc/passwd"})),
        ("query_logs", json!({"service": "../../../../etc/shadow"})),
        ("query_logs", json!({"service": "target-app/../../secrets"})),
        // Config keys and values (a value must not smuggle in another .env line).
        (
            "set_config",
            json!({"key": "../secrets/http-token", "value": "1"}),
        ),
        (
            "set_config",
            json!({"key": "DATABASE_URL", "value": "postgres://evil"}),
        ),
        ("set_config", json!({"key": "JWT_SECRET", "value": "x"})),
        (
            "set_config",
            json!({"key": "LOG_LEVEL", "value": "info\nJWT_SECRET=pwned"}),
        ),
        (
            "set_config",
            json!({"key": "POOL_SIZE", "value": "5\nDATABASE_URL=postgres://evil"}),
        ),
        // Services that are not the sandbox's.
        ("restart_service", json!({"service": "sshd"})),
        ("restart_service", json!({"service": "../postgres"})),
        ("stop_service", json!({"service": "aiops"})),
        ("start_service", json!({"service": "/bin/sh"})),
        ("scale_service", json!({"service": "nope", "instances": 2})),
        // Pids outside the sandbox's process trees, or its main pids.
        ("kill_process", json!({"pid": 1})),
        ("kill_process", json!({"pid": me})),
        ("kill_process", json!({"pid": daemon_pid})),
        ("kill_process", json!({"pid": target_pid})),
        ("kill_process", json!({"pid": 0})),
        ("kill_process", json!({"pid": -1})),
        ("kill_process", json!({"pid": 4_294_967_296u64})),
        (
            "kill_db_sessions",
            json!({"pid": "1; SELECT pg_terminate_backend(pid) FROM pg_stat_activity"}),
        ),
        // Ids that name files.
        ("chaos_stop", json!({"id": "../../secrets/http-token"})),
        ("chaos_stop", json!({"id": "/etc/passwd"})),
        (
            "rotate_db_credentials",
            json!({"approval_id": "../../secrets/http-token"}),
        ),
        (
            "restore_db_snapshot",
            json!({"snapshot": "nope", "approval_id": "ap-../../x"}),
        ),
        ("chaos_inject", json!({"fault": "../../bin/sh"})),
        (
            "chaos_inject",
            json!({"fault": "lock_contention", "params": {"table": "products; DROP TABLE users"}}),
        ),
    ];
    let mut problems = Vec::new();
    for (tool, args) in &must_refuse {
        match refusal(&c, tool, args).await {
            None => problems.push(format!("{tool}({args}) was carried out")),
            Some(msg) if msg.trim().len() < 15 => {
                problems.push(format!("{tool}({args}): unhelpful error `{msg}`"))
            }
            Some(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Resources by id: same rule.
    for uri in [
        "runbook://../../secrets/http-token",
        "runbook:///etc/passwd",
        "incident://../secrets/http-token",
        "incident:///etc/passwd",
        "incident://..",
        "file:///etc/passwd",
    ] {
        let r = c
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .expect_err(uri);
        assert!(r.to_string().len() > 15, "{uri}: {r}");
    }

    // SQL metacharacters in filters are data: nothing matches, nothing breaks.
    for (tool, args) in [
        (
            "kill_db_sessions",
            json!({"application_name": "x' OR '1'='1"}),
        ),
        (
            "kill_db_sessions",
            json!({"application_name": "'; DROP TABLE products; --"}),
        ),
        ("query_logs", json!({"code": "' OR 1=1 --"})),
        (
            "query_logs",
            json!({"contains": "'; DROP TABLE orders; --"}),
        ),
        (
            "query_logs",
            json!({"service": "all", "regex": "'\\);\\s*DROP"}),
        ),
        ("db_diagnostics", json!({"long_running_threshold_s": 1})),
    ] {
        let mut p = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(m) = args.clone() {
            p = p.with_arguments(JsonObject::from_iter(m));
        }
        let r = tokio::time::timeout(Duration::from_secs(60), c.call_tool(p))
            .await
            .unwrap_or_else(|_| panic!("{tool}({args}) did not answer within 60 s"))
            .unwrap_or_else(|e| panic!("{tool}({args}): {e}"));
        assert_ne!(r.is_error, Some(true), "{tool}({args}): {:?}", r.content);
        if tool == "kill_db_sessions" {
            let s = r.structured_content.clone().unwrap_or(Value::Null);
            let target = s["plan"]["target"].as_str().unwrap_or_default();
            assert!(
                target.starts_with("0 session"),
                "{tool}({args}) matched sessions: {s:#}"
            );
        }
    }

    // The same through the REST and control APIs (paths percent-encoded and not).
    let http = reqwest::Client::new();
    let secret_token = token.clone();
    for (method, path, body) in [
        (
            "GET",
            "/api/v1/incidents/..%2F..%2Fsecrets%2Fhttp-token",
            None,
        ),
        ("GET", "/api/v1/incidents/%2Fetc%2Fpasswd", None),
        (
            "GET",
            "/api/v1/logs?service=..%2Fsecrets%2Fhttp-token",
            None,
        ),
        ("GET", "/api/v1/logs?service=%2Fetc%2Fpasswd", None),
        ("GET", "/control/v1/services/..%2F..%2Fetc/logs", None),
        ("GET", "/control/v1/services/%2Fetc%2Fpasswd", None),
        ("POST", "/control/v1/services/sshd/restart", None),
        (
            "POST",
            "/control/v1/chaos/..%2F..%2Fsecrets%2Fhttp-token/stop",
            None,
        ),
        (
            "POST",
            "/api/v1/approvals/..%2F..%2Fsecrets%2Fhttp-token/approve",
            None,
        ),
        (
            "POST",
            "/api/v1/actions/create_db_snapshot",
            Some(json!({"name": "../../../tmp/evil"})),
        ),
        (
            "POST",
            "/api/v1/actions/kill_process",
            Some(json!({"pid": 1})),
        ),
        (
            "POST",
            "/api/v1/actions/set_config",
            Some(json!({"key": "LOG_LEVEL", "value": "info\nJWT_SECRET=pwned"})),
        ),
        (
            "POST",
            "/api/v1/actions/..%2F..%2Fbin%2Fsh",
            Some(json!({})),
        ),
    ] {
        let mut req = match method {
            "GET" => http.get(format!("{base}{path}")),
            _ => http.post(format!("{base}{path}")),
        }
        .bearer_auth(&secret_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let refused_outcome =
            serde_json::from_str::<Value>(&text).is_ok_and(|v| v["status"] == "refused");
        assert!(
            (400..500).contains(&code) || refused_outcome,
            "{method} {path} answered {code}: {text}"
        );
        assert!(
            text.len() > 15,
            "{method} {path}: unhelpful answer `{text}`"
        );
        assert!(
            !text.contains(&secret_token),
            "{method} {path} leaked the token"
        );
    }

    // Nothing was touched: the canary, the planted links, every service (same pids, no
    // restart), the shop's tables, the target's .env.
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary");
    assert!(
        std::fs::symlink_metadata(snapshots.join("planted.dump"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!std::path::Path::new("/tmp/evil.dump").exists());
    let pids_after: Vec<Value> = sb.status_json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["name"], s["pid"]]))
        .collect();
    assert_eq!(pids_before, pids_after, "a service was restarted or killed");
    let env = std::fs::read_to_string(sb.home().join("target-app.env")).unwrap();
    assert!(!env.contains("pwned") && !env.contains("postgres://evil"));
    let products = format!("{}/api/v1/products?limit=1", sb.target_url());
    let (code, _) = tokio::task::spawn_blocking(move || aiops_tests::get_json(&products))
        .await
        .unwrap();
    assert_eq!(code, 200, "the products table must still be there");
    // The refusals are in the audit log, every line of which parses.
    let audit = std::fs::read_to_string(sb.home().join("audit/audit.jsonl")).unwrap();
    for line in audit.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(audit.contains("\"refused\""));
    let _ = c.cancel().await;
}
