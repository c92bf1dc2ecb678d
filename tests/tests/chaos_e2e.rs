//! Chaos through the product's surfaces: the `aiops chaos` CLI and the MCP chaos tools
//! (only with `--allow-chaos`), faults living in the daemon, `aiops down` and the start-up
//! reaper reverting what is left.

use std::time::Duration;

use aiops_tests::{Sandbox, bin, describe};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, JsonObject};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};

const CHAOS_TOOLS: &[&str] = &[
    "chaos_list_faults",
    "chaos_inject",
    "chaos_status",
    "chaos_stop",
];

fn ledger_states(sb: &Sandbox) -> Vec<(String, String)> {
    let dir = sb.home().join("chaos/faults");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out; // no fault injected yet
    };
    for e in entries.flatten() {
        let v: Value =
            serde_json::from_slice(&std::fs::read(e.path()).expect("read")).expect("json");
        // One file per fault: {"record": FaultRecord, "undo": ..., "history": [...]}.
        out.push((
            v["record"]["fault"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            v["record"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    out
}

fn wait_ready(sb: &Sandbox, timeout: Duration) {
    let url = format!("{}/readyz", sb.target_url());
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(resp) = reqwest::blocking::get(&url)
            && resp.status() == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "target not ready within {timeout:?}\n{}",
            sb.log_tails()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_tools_exist_only_with_allow_chaos_and_hide_the_label() {
    let sb = Sandbox::new();
    sb.aiops_ok(&[
        "up",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--allow-chaos",
    ]);

    // A stdio server without --allow-chaos has no chaos tool.
    let cmd = tokio::process::Command::new(bin("aiops")).configure(|c| {
        c.args(["serve", "--stdio"])
            .env("AIOPS_HOME", sb.home())
            .env("AIOPS_LOG", "warn");
    });
    let plain = ().serve(TokioChildProcess::new(cmd).expect("spawn")).await.expect("init");
    let names: Vec<String> = plain
        .list_all_tools()
        .await
        .expect("list")
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    for t in CHAOS_TOOLS {
        assert!(
            !names.contains(&t.to_string()),
            "{t} listed without --allow-chaos"
        );
    }
    let _ = plain.cancel().await;

    // The daemon was started with --allow-chaos: its HTTP MCP has them.
    let (url, token) = sb.endpoint();
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp")).auth_header(token),
        ))
        .await
        .expect("init over HTTP");
    let tools = client.list_all_tools().await.expect("list");
    for t in CHAOS_TOOLS {
        let tool = tools
            .iter()
            .find(|x| x.name == *t)
            .unwrap_or_else(|| panic!("{t} missing"));
        let a = tool.annotations.as_ref().expect("annotations");
        let mutating = *t == "chaos_inject" || *t == "chaos_stop";
        assert_eq!(a.destructive_hint, Some(mutating), "{t}");
        assert_eq!(a.read_only_hint, Some(!mutating), "{t}");
    }
    let call = |name: &'static str, args: Value| {
        let mut p = CallToolRequestParams::new(name);
        if let Value::Object(m) = args {
            p = p.with_arguments(JsonObject::from_iter(m));
        }
        client.call_tool(p)
    };

    // Dry run changes nothing.
    let dry = call(
        "chaos_inject",
        json!({"fault": "db_auth_failure", "dry_run": true}),
    )
    .await
    .expect("dry run");
    assert_ne!(dry.is_error, Some(true), "{:?}", dry.content);
    assert!(
        dry.structured_content.as_ref().unwrap()["plan"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    let code = reqwest::get(format!("{}/readyz", sb.target_url()))
        .await
        .expect("GET /readyz")
        .status();
    assert_eq!(code, 200, "a dry run must not break anything");

    // Inject for real; the observation tools see it; the label stays hidden.
    let injected = call(
        "chaos_inject",
        json!({"fault": "db_auth_failure", "ttl_s": 120}),
    )
    .await
    .expect("inject");
    assert_ne!(injected.is_error, Some(true), "{:?}", injected.content);
    let record = injected.structured_content.clone().unwrap()["record"].clone();
    let id = record["id"].as_str().expect("id").to_string();
    assert!(
        record.get("label").is_none(),
        "ground truth leaked: {record:#}"
    );
    let status = call("chaos_status", json!({})).await.expect("status");
    let text = serde_json::to_string(&status.structured_content).unwrap();
    assert!(text.contains(&id) && !text.contains("\"label\""), "{text}");
    let snap = call("incident_snapshot", json!({}))
        .await
        .expect("snapshot");
    let snap_text = serde_json::to_string(&snap.structured_content).unwrap();
    assert!(
        snap_text.contains("DB_AUTH_FAILED") || snap_text.contains("readiness"),
        "{snap_text}"
    );

    // Bad input is a clear protocol error.
    let err = call("chaos_inject", json!({"fault": "no_such_fault"}))
        .await
        .expect_err("unknown fault");
    assert!(
        err.to_string().contains("db_pool_exhaustion"),
        "the error must list known faults: {err}"
    );
    let err = call("chaos_stop", json!({}))
        .await
        .expect_err("neither id nor all");
    assert!(err.to_string().contains("all"), "{err}");

    let stopped = call("chaos_stop", json!({"id": id})).await.expect("stop");
    assert_ne!(stopped.is_error, Some(true), "{:?}", stopped.content);
    tokio::task::block_in_place(|| wait_ready(&sb, Duration::from_secs(30)));
    // Stopping again is harmless.
    let again = call("chaos_stop", json!({"id": id}))
        .await
        .expect("stop again");
    assert_ne!(again.is_error, Some(true), "{:?}", again.content);
    let _ = client.cancel().await;
}

#[test]
fn down_and_the_reaper_revert_faults_left_behind() {
    let sb = Sandbox::new();
    sb.up();

    // CLI dry run: plan printed, nothing changed, nothing recorded as active.
    let out = sb.aiops_ok(&[
        "chaos",
        "inject",
        "latency",
        "--param",
        "delay_ms=2000",
        "--dry-run",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Dry run"),
        "{}",
        describe(&out)
    );
    assert!(!ledger_states(&sb).iter().any(|(_, s)| s == "active"));

    // A session-holding fault lives in the daemon, after the CLI has exited.
    sb.aiops_ok(&["chaos", "inject", "lock_contention", "--ttl", "10m"]);
    let out = sb.aiops_ok(&["chaos", "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("active"),
        "{}",
        describe(&out)
    );
    // An unknown fault or a bad parameter is a clear error.
    let out = sb.aiops(&["chaos", "inject", "nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("db_pool_exhaustion"),
        "{}",
        describe(&out)
    );
    let out = sb.aiops(&["chaos", "inject", "latency", "--param", "delay_ms=1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delay_ms"),
        "{}",
        describe(&out)
    );

    // `aiops down` reverts it.
    sb.aiops_ok(&["down"]);
    assert!(
        ledger_states(&sb).iter().all(|(_, s)| s != "active"),
        "down left a fault active: {:?}",
        ledger_states(&sb)
    );

    // SIGKILL the daemon with a fault active: the next start reverts it.
    sb.up();
    sb.aiops_ok(&["chaos", "inject", "jwt_secret_rotation", "--ttl", "10m"]);
    let env_during = std::fs::read_to_string(sb.home().join("target-app.env")).unwrap();
    let pid: i32 = std::fs::read_to_string(sb.home().join("run/daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sb.up();
    let states = ledger_states(&sb);
    assert!(
        states
            .iter()
            .any(|(f, s)| f == "jwt_secret_rotation" && s == "reverted"),
        "{states:?}"
    );
    let env_after = std::fs::read_to_string(sb.home().join("target-app.env")).unwrap();
    assert_ne!(env_during, env_after, "the reaper must restore the .env");
    wait_ready(&sb, Duration::from_secs(30));
}

#[test]
fn chaos_monkey_injects_a_reproducible_sequence_one_fault_at_a_time() {
    let sb = Sandbox::new();
    sb.up();
    let run = |seed: &str| {
        let out = sb.aiops_ok(&[
            "chaos",
            "monkey",
            "--every",
            "3s",
            "--seed",
            seed,
            "--faults",
            "latency,log_storm,high_cpu",
            "--count",
            "3",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let faults: Vec<String> = text
            .lines()
            .filter_map(|l| l.split("injected ").nth(1))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect();
        assert_eq!(faults.len(), 3, "{text}");
        faults
    };
    let first = run("42");
    // Leases end before the next injection: nothing stays active for long.
    std::thread::sleep(Duration::from_secs(3));
    let states = ledger_states(&sb);
    assert!(states.iter().all(|(_, s)| s != "active"), "{states:?}");
    assert_eq!(
        run("42"),
        first,
        "the same seed must give the same sequence"
    );
    let out = sb.aiops(&["chaos", "monkey", "--faults", "nope", "--count", "1"]);
    assert!(!out.status.success(), "{}", describe(&out));
}
