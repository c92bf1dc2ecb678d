//! The loop end to end: the scripted agent on the README's scenarios (over stdio and
//! over Streamable HTTP), the exam surface an agent under test gets, and `aiops drill`
//! scoring the scripted agent and an external agent command.

use std::path::Path;

use aiops_tests::{Sandbox, bin, describe};
use rmcp::model::{CallToolRequestParams, JsonObject, ReadResourceRequestParams};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

fn last_json_line(out: &std::process::Output, sb: &Sandbox) -> Value {
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", describe(out), sb.log_tails()))
}

fn tools_called(report: &Value) -> Vec<String> {
    report["actions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["tool"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn incident_json(sb: &Sandbox, id: &str) -> Value {
    let out = sb.aiops_ok(&["incidents", id, "--json"]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("incident {id} is not JSON ({e}):\n{}", describe(&out)))
}

/// The README's scenario, over stdio: an exhausted pool is detected, the foreign sessions
/// terminated, the steady state verified, and a report filed with before/after figures.
#[test]
fn pool_exhaustion_is_fixed_over_stdio_with_a_report() {
    let sb = Sandbox::new();
    sb.up();
    sb.aiops_ok(&["chaos", "inject", "db_pool_exhaustion", "--ttl", "10m"]);
    let out = sb.aiops(&["agent", "run", "--once", "--json"]);
    let report = last_json_line(&out, &sb);
    assert_eq!(report["outcome"], "recovered", "{report:#}");
    assert_eq!(
        report["hypotheses"][0]["fault_class"], "db_pool_exhaustion",
        "{report:#}"
    );
    assert!(
        tools_called(&report).contains(&"kill_db_sessions".to_string()),
        "{report:#}"
    );
    assert_eq!(report["validation"]["passed"], true, "{report:#}");
    let id = report["incident_id"].as_str().expect("a report was filed");
    let inc = incident_json(&sb, id);
    assert_eq!(inc["resolved"], true, "{inc:#}");
    assert!(
        inc["before"].as_object().is_some_and(|o| !o.is_empty())
            && inc["after"].as_object().is_some_and(|o| !o.is_empty()),
        "before/after figures: {inc:#}"
    );
    // The fault's sessions are gone while the fault is still "active" in the ledger.
    let md = String::from_utf8_lossy(&sb.aiops_ok(&["incidents", id]).stdout).to_string();
    assert!(md.contains("kill_db_sessions"), "{md}");
}

/// The classic demo, over Streamable HTTP: broken DB credentials → "DB auth failure" →
/// the rotation waits for a person's approval → approved → rotated and verified → report.
#[test]
fn broken_credentials_are_rotated_over_http_after_approval() {
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let mcp = format!("{url}/mcp");
    sb.aiops_ok(&["chaos", "inject", "db_auth_failure", "--ttl", "10m"]);

    let first = sb.aiops(&[
        "agent", "run", "--once", "--json", "--url", &mcp, "--token", &token,
    ]);
    let report = last_json_line(&first, &sb);
    assert_eq!(
        report["hypotheses"][0]["fault_class"], "db_auth_failure",
        "{report:#}"
    );
    assert_eq!(report["hypotheses"][0]["component"], "postgres");
    assert_eq!(report["outcome"], "awaiting_approval", "{report:#}");
    assert_eq!(first.status.code(), Some(2));
    let pending = &report["pending_approval"];
    assert_eq!(pending["tool"], "rotate_db_credentials", "{report:#}");
    let approval = pending["approval_id"].as_str().unwrap().to_string();

    sb.aiops_ok(&["approve", &approval]);
    let second = sb.aiops(&[
        "agent",
        "run",
        "--once",
        "--json",
        "--url",
        &mcp,
        "--token",
        &token,
        "--approval",
        &format!("rotate_db_credentials={approval}"),
    ]);
    let report = last_json_line(&second, &sb);
    assert_eq!(report["outcome"], "recovered", "{report:#}");
    assert!(
        tools_called(&report).contains(&"rotate_db_credentials".to_string()),
        "{report:#}"
    );
    let id = report["incident_id"].as_str().expect("a report was filed");
    let inc = incident_json(&sb, id);
    assert_eq!(inc["resolved"], true, "{inc:#}");
    let done = inc["what_was_done"].to_string();
    assert!(done.contains("rotate_db_credentials"), "{inc:#}");
    // The new password is nowhere in what the agent saw or filed.
    let password = sb.secret("pg-app-password");
    assert!(!inc.to_string().contains(&password));
    assert!(
        !std::fs::read_to_string(sb.home().join("audit/audit.jsonl"))
            .unwrap()
            .contains(&password)
    );
}

type Client = RunningService<RoleClient, ()>;

async fn connect(url: &str, token: &str) -> Result<Client, String> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string())
            .auth_header(token.to_string()),
    );
    ().serve(transport).await.map_err(|e| e.to_string())
}

async fn call(client: &Client, tool: &str, args: Value) -> Result<Value, String> {
    let mut p = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(m) = args {
        p = p.with_arguments(JsonObject::from_iter(m));
    }
    let r = client.call_tool(p).await.map_err(|e| e.to_string())?;
    Ok(r.structured_content.unwrap_or(Value::Null))
}

/// Exam mode: with chaos allowed on the daemon, an agent on `/exam/mcp` still cannot see
/// or call a chaos tool, read the ledger or a label through any tool or resource, or
/// find the injected fault named in events or logs; the exam token opens nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exam_mode_hides_chaos_and_ground_truth() {
    let sb = Sandbox::new();
    sb.aiops_ok(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--allow-chaos",
    ]);
    let (url, token) = sb.endpoint();
    let exam_token = sb.secret("exam-token");
    sb.aiops_ok(&["chaos", "inject", "latency", "--ttl", "10m"]);
    let status = control_get(&sb, "/control/v1/chaos/status");
    let fault_id = status[0]["id"].as_str().expect("a fault id").to_string();

    // The full surface has the chaos tools and names the fault; the exam one does not.
    let full = connect(&format!("{url}/mcp"), &token).await.unwrap();
    let full_tools: Vec<String> = full
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        full_tools.iter().any(|t| t == "chaos_inject"),
        "{full_tools:?}"
    );
    let events = call(&full, "list_events", json!({"limit": 500}))
        .await
        .unwrap();
    assert!(events.to_string().contains("fault_injected"), "{events}");
    let logs = call(
        &full,
        "query_logs",
        json!({"service": "target-app", "contains": "Failpoint set"}),
    )
    .await
    .unwrap();
    assert!(logs["total"].as_u64().unwrap_or(0) > 0, "{logs}");
    let _ = full.cancel().await;

    let exam = connect(&format!("{url}/exam/mcp"), &exam_token)
        .await
        .unwrap();
    let tools = exam.list_all_tools().await.unwrap();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for chaos_tool in [
        "chaos_inject",
        "chaos_status",
        "chaos_stop",
        "chaos_list_faults",
    ] {
        assert!(
            !names.iter().any(|n| n == chaos_tool),
            "{chaos_tool} visible in exam: {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("fault") || n.contains("chaos")),
        "{names:?}"
    );
    assert!(
        call(&exam, "chaos_inject", json!({"fault": "db_down"}))
            .await
            .is_err()
    );

    // Nothing an agent can read names the fault, its id, its label or the ledger.
    let mut seen = String::new();
    for tool in &tools {
        let required = tool
            .input_schema
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| !r.is_empty());
        if tool.annotations.as_ref().and_then(|a| a.read_only_hint) == Some(true)
            && !required
            && let Ok(v) = call(&exam, &tool.name, json!({})).await
        {
            seen.push_str(&v.to_string());
        }
    }
    for extra in [
        ("list_events", json!({"limit": 500})),
        ("query_logs", json!({"contains": "ailpoint", "limit": 500})),
        ("query_logs", json!({"service": "target-app", "limit": 500})),
    ] {
        seen.push_str(&call(&exam, extra.0, extra.1).await.unwrap().to_string());
    }
    for r in exam.list_all_resources().await.unwrap() {
        let read = exam
            .read_resource(ReadResourceRequestParams::new(r.uri.clone()))
            .await
            .unwrap();
        seen.push_str(&format!("{}\n{:?}", r.uri, read.contents));
    }
    for leak in [
        "fault_injected",
        fault_id.as_str(),
        "Failpoint set",
        "in-app failpoint http.latency",
        "chaos/faults",
        "\"label\"",
    ] {
        assert!(!seen.contains(leak), "the exam surface shows `{leak}`");
    }
    // The symptom itself stays visible.
    assert!(
        seen.contains("latency") || seen.contains("p95"),
        "symptoms must stay visible"
    );
    let _ = exam.cancel().await;

    // The exam token opens the exam surface only.
    let http = reqwest::Client::new();
    for path in ["/control/v1/chaos/status", "/control/v1/services", "/mcp"] {
        let code = http
            .get(format!("{url}{path}"))
            .bearer_auth(&exam_token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(code.as_u16(), 401, "{path} with the exam token");
    }
    assert!(connect(&format!("{url}/exam/mcp"), "wrong").await.is_err());
}

fn drill(sb: &Sandbox, args: &[&str]) -> (std::process::Output, Value) {
    let mut all = vec!["drill", "--json"];
    all.extend_from_slice(args);
    let out = sb.aiops(&all);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`aiops {}` did not print JSON ({e}):\n{}\n{}",
            all.join(" "),
            describe(&out),
            sb.log_tails()
        )
    });
    (out, v)
}

/// GET a control-API path with the main token (blocking; for use outside async tests).
fn control_get(sb: &Sandbox, path: &str) -> Value {
    let (url, token) = sb.endpoint();
    let sb_home = sb.home().to_path_buf();
    let path = path.to_string();
    std::thread::spawn(move || {
        let resp = reqwest::blocking::Client::new()
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .unwrap_or_else(|e| panic!("GET {path} ({}): {e}", sb_home.display()));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json::<Value>().expect("JSON")
    })
    .join()
    .expect("control request")
}

fn nothing_left(sb: &Sandbox) {
    let leftovers = control_get(sb, "/control/v1/chaos/leftovers");
    assert_eq!(leftovers, json!([]), "{leftovers:#}");
    let faults = control_get(sb, "/control/v1/chaos/status");
    assert!(
        faults
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["state"] == "reverted" || f["state"] == "expired"),
        "{faults:#}"
    );
}

/// `aiops drill` on a small fault list: the scripted agent, in exam mode, diagnoses and
/// mitigates every fault, the fixes hold, the no-fault trial stays quiet, nothing is left,
/// and the results are written as JSON and Markdown.
#[test]
fn the_drill_scores_the_scripted_agent() {
    let sb = Sandbox::new();
    sb.up();
    let (out, v) = drill(
        &sb,
        &[
            "--faults",
            "db_pool_exhaustion,upstream_outage,api_down",
            "--trials",
            "1",
            "--noop",
            "1",
            "--durable",
            "5s",
            "--seed",
            "7",
        ],
    );
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{v:#}");
    for r in results {
        assert_eq!(
            r["success"],
            true,
            "trial failed: {r:#}\n{}",
            sb.log_tails()
        );
        assert!(r["leftovers"].as_array().unwrap().is_empty(), "{r:#}");
        if r["fault"] != "noop" {
            assert_eq!(r["diagnosis_correct"], true, "{r:#}");
            assert!(r["time_to_detect_ms"].as_u64().is_some(), "{r:#}");
            assert!(r["time_to_mitigate_ms"].as_u64().is_some(), "{r:#}");
            assert_eq!(r["durable"], true, "{r:#}");
            assert_eq!(r["label"]["class"], r["fault"], "{r:#}");
        } else {
            assert_eq!(r["false_positive"], false, "{r:#}");
        }
    }
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(v["summary"]["passed"], 4);
    assert_eq!(v["summary"]["pass_k"], json!([3, 3]));
    let dir = sb.home().join("drills").join(v["id"].as_str().unwrap());
    let md = std::fs::read_to_string(dir.join("results.md")).expect("results.md");
    assert!(
        md.contains("| db_pool_exhaustion |") || md.contains("db_pool_exhaustion"),
        "{md}"
    );
    assert!(dir.join("results.json").is_file());
    assert!(sb.home().join("drills/latest.json").is_file());
    nothing_left(&sb);
    no_secret_written(&sb);
}

/// The sandbox's secret values (every file under `secrets/`, at least 12 characters: the
/// generated ones), named by file.
fn secret_values(sb: &Sandbox) -> Vec<(String, String)> {
    std::fs::read_dir(sb.home().join("secrets"))
        .expect("secrets dir")
        .flatten()
        .filter_map(|e| {
            let v = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
            (v.len() >= 12).then(|| (e.file_name().to_string_lossy().to_string(), v))
        })
        .collect()
}

/// After a drill (faults, fixes, reports, audit, logs), no secret of the sandbox appears
/// in any file of the state dir outside the places meant to hold it: `secrets/`, the
/// target's `.env` (and its last-known-good copy), the database's own files.
fn no_secret_written(sb: &Sandbox) {
    no_secret_in_files(sb, &secret_values(sb));
}

/// `no_secret_written` for a given set of values (also ones rotated out since). The
/// chaos ledger's entries are checked for being operator-only (0600 in a 0700 dir)
/// instead: by design they hold a fault's undo data (the `.env` it replaced), never
/// served by any tool or route.
fn no_secret_in_files(sb: &Sandbox, secrets: &[(String, String)]) {
    assert!(secrets.len() >= 4, "{secrets:?}");
    let mut stack = vec![sb.home().to_path_buf()];
    let mut scanned = 0;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if matches!(name.as_str(), "secrets" | "pgdata" | "cache")
                || name.starts_with("target-app.env")
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if dir.ends_with("chaos/faults") {
                use std::os::unix::fs::PermissionsExt;
                let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
                assert_eq!(mode(&path) & 0o077, 0, "{} is not 0600", path.display());
                let chaos = dir.parent().unwrap();
                assert_eq!(mode(chaos) & 0o077, 0, "{} is not 0700", chaos.display());
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            scanned += 1;
            for (secret, value) in secrets {
                assert!(
                    !text.contains(value.as_str()),
                    "the value of secrets/{secret} is written in {}",
                    path.display()
                );
            }
        }
    }
    assert!(scanned > 10, "only {scanned} files scanned");
}

/// Arguments that satisfy a tool's schema: its required properties filled from their
/// types (first enum value, minimum, empty list, a word), `dry_run` set when it has one,
/// so every tool runs once and none changes anything.
fn schema_args(tool: &rmcp::model::Tool) -> Value {
    let schema = &tool.input_schema;
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut args = serde_json::Map::new();
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        let p = &props[req];
        let ty = p["type"]
            .as_str()
            .or_else(|| p["type"][0].as_str())
            .unwrap_or("string");
        let v = if let Some(first) = p["enum"].get(0) {
            first.clone()
        } else {
            match ty {
                "integer" | "number" => p.get("minimum").cloned().unwrap_or(json!(1)),
                "boolean" => json!(false),
                "array" => json!(["scan"]),
                "object" => json!({}),
                _ => json!("secret scan"),
            }
        };
        args.insert(req.to_string(), v);
    }
    if props.contains_key("dry_run") {
        args.insert("dry_run".into(), json!(true));
    }
    Value::Object(args)
}

/// Every answer of every tool (each called once, mutating ones as dry runs), every
/// resource, the logs of every service and the timeline, over the main and the exam
/// surface and the REST API, as one text.
async fn everything_served(sb: &Sandbox) -> String {
    let (url, token) = sb.endpoint();
    let mut seen = String::new();
    for (path, tok) in [
        ("/mcp", token.clone()),
        ("/exam/mcp", sb.secret("exam-token")),
    ] {
        let c = connect(&format!("{url}{path}"), &tok).await.unwrap();
        let tools = c.list_all_tools().await.unwrap();
        assert!(tools.len() >= 20, "{path}: {} tools", tools.len());
        for t in &tools {
            let args = schema_args(t);
            let mut p = CallToolRequestParams::new(t.name.to_string());
            if let Value::Object(m) = args.clone() {
                p = p.with_arguments(JsonObject::from_iter(m));
            }
            match c.call_tool(p).await {
                Ok(r) => seen.push_str(&format!(
                    "{} {:?} {}\n",
                    t.name,
                    r.content,
                    r.structured_content.unwrap_or(Value::Null)
                )),
                Err(e) => seen.push_str(&format!("{} {e}\n", t.name)),
            }
        }
        for svc in [
            "postgres",
            "target-app",
            "worker",
            "upstream-primary",
            "upstream-fallback",
            "all",
        ] {
            for q in [
                json!({"service": svc, "limit": 500}),
                json!({"service": svc, "level": "warn", "limit": 500}),
            ] {
                seen.push_str(
                    &call(&c, "query_logs", q)
                        .await
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        seen.push_str(
            &call(&c, "list_events", json!({"limit": 500}))
                .await
                .unwrap_or_default()
                .to_string(),
        );
        for r in c.list_all_resources().await.unwrap() {
            let read = c
                .read_resource(ReadResourceRequestParams::new(r.uri.clone()))
                .await
                .unwrap();
            seen.push_str(&format!("{}\n{:?}\n", r.uri, read.contents));
        }
        let _ = c.cancel().await;
    }
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/snapshot",
        "/api/v1/status",
        "/api/v1/health",
        "/api/v1/logs?service=all&limit=500",
        "/api/v1/db",
        "/api/v1/config",
        "/api/v1/events",
        "/api/v1/audit",
        "/api/v1/incidents",
        "/api/v1/approvals",
        "/api/v1/chaos",
        "/control/v1/topology",
        "/control/v1/services",
        "/control/v1/chaos/status",
        "/control/v1/services/target-app/logs",
        "/control/v1/services/postgres/logs",
    ] {
        let body = http
            .get(format!("{url}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push_str(&body);
    }
    seen
}

/// No secret, current or rotated out during the drill (database passwords, JWT secret,
/// tokens), appears in anything served (every tool's answer, resource, log line, event,
/// REST and control answer) or written (audit, reports, drill results, logs) after a
/// drill of the faults that touch secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_after_a_drill_of_the_secret_faults() {
    let sb = Sandbox::new();
    sb.aiops_ok(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--allow-chaos",
    ]);
    let mut secrets = secret_values(&sb);
    let drill_out = tokio::task::block_in_place(|| {
        sb.aiops(&[
            "drill",
            "--json",
            "--faults",
            "db_auth_failure,jwt_secret_rotation,config_corruption",
            "--trials",
            "1",
            "--noop",
            "0",
            "--durable",
            "5s",
            "--seed",
            "3",
        ])
    });
    let v: Value = serde_json::from_slice(&drill_out.stdout)
        .unwrap_or_else(|e| panic!("drill JSON ({e}): {}", describe(&drill_out)));
    assert_eq!(v["results"].as_array().map(Vec::len), Some(3), "{v:#}");
    // Values rotated during the drill count too.
    for s in secret_values(&sb) {
        if !secrets.contains(&s) {
            secrets.push(s);
        }
    }
    let seen = everything_served(&sb).await;
    let mut seen_all = seen;
    seen_all.push_str(&String::from_utf8_lossy(&drill_out.stdout));
    seen_all.push_str(&String::from_utf8_lossy(&drill_out.stderr));
    assert!(
        seen_all.len() > 50_000,
        "too little served: {}",
        seen_all.len()
    );
    for (name, value) in &secrets {
        assert!(
            !seen_all.contains(value.as_str()),
            "the value of secrets/{name} was served"
        );
    }
    tokio::task::block_in_place(|| no_secret_in_files(&sb, &secrets));
    eprintln!(
        "secret values checked: {}, bytes served scanned: {}",
        secrets.len(),
        seen_all.len()
    );
}

/// `--agent-cmd` scores any agent the same way: the scripted agent run as an external
/// command passes; a command that does nothing fails with "no diagnosis submitted".
#[test]
fn the_drill_scores_an_external_agent_command() {
    let sb = Sandbox::new();
    sb.up();
    let aiops = bin("aiops");
    let good = format!(
        "{} agent run --watch --until-recovered --interval-s 1 --timeout-s 60",
        aiops.display()
    );
    let common = ["--faults", "latency", "--noop", "0", "--durable", "3s"];
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--timeout", "60s", "--agent-cmd", &good]);
    let (out, v) = drill(&sb, &args);
    let r = &v["results"][0];
    assert_eq!(
        r["success"],
        true,
        "{r:#}\n{}\n{}",
        describe(&out),
        sb.log_tails()
    );
    let log = Path::new(sb.home())
        .join("drills")
        .join(v["id"].as_str().unwrap())
        .join("trial-001-latency.log");
    let text = std::fs::read_to_string(&log).expect("the agent's log");
    assert!(text.contains("recovered"), "{text}");

    let mut args: Vec<&str> = common.to_vec();
    args.extend(["--agent-cmd", "sleep 1", "--timeout", "10s"]);
    let (out, v) = drill(&sb, &args);
    let r = &v["results"][0];
    assert_eq!(r["success"], false, "{r:#}");
    assert_eq!(r["detected"], false, "{r:#}");
    assert!(
        r["notes"].to_string().contains("no diagnosis submitted"),
        "{r:#}"
    );
    assert_eq!(out.status.code(), Some(1));
    nothing_left(&sb);
}
