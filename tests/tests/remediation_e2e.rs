//! Remediation through the MCP surface and the CLI: one tool per action with dry run,
//! approvals granted by an operator with `aiops approve`, a real fault fixed while its
//! cause is still in place, the audit log as a resource, and `--read-only`.

use aiops_tests::mcp::{call, stdio};
use aiops_tests::{Sandbox, describe};
use rmcp::model::{CallToolRequestParams, JsonObject, ReadResourceRequestParams};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_fixes_pool_exhaustion_through_mcp_and_everything_is_audited() {
    let sb = Sandbox::new();
    sb.up();
    let client = stdio(&sb, &[]).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    for name in [
        "restart_service",
        "kill_db_sessions",
        "rotate_db_credentials",
        "restore_config",
        "verify_recovery",
    ] {
        let t = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let props = t
            .input_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .expect("properties");
        assert!(props.contains_key("dry_run"), "{name} has no dry_run");
        assert!(t.output_schema.is_some(), "{name} has no output schema");
    }
    let verify = tools.iter().find(|t| t.name == "verify_recovery").unwrap();
    assert_eq!(
        verify.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    let restart = tools.iter().find(|t| t.name == "restart_service").unwrap();
    assert_eq!(
        restart.annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );

    // A real fault, injected by the operator: the pool is exhausted.
    let out = sb.aiops_ok(&["chaos", "inject", "db_pool_exhaustion", "--ttl", "10m"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{}",
        describe(&out)
    );
    let before = call(&client, "verify_recovery", json!({})).await;
    assert_eq!(before["verification"]["passed"], false, "{before:#}");

    // Dry run: the plan names the sessions; nothing is killed.
    let plan = call(
        &client,
        "kill_db_sessions",
        json!({"idle_in_transaction_longer_than_s": 1, "foreign_only": true, "dry_run": true}),
    )
    .await;
    assert_eq!(plan["status"], "planned", "{plan:#}");
    assert!(
        plan["plan"]["steps"].to_string().contains("report-export"),
        "{plan:#}"
    );
    let still = call(&client, "verify_recovery", json!({})).await;
    assert_eq!(
        still["verification"]["passed"], false,
        "a dry run must change nothing"
    );

    // The fix, while the fault's lease is still running.
    let fixed = call(
        &client,
        "kill_db_sessions",
        json!({"idle_in_transaction_longer_than_s": 1, "foreign_only": true}),
    )
    .await;
    assert_eq!(fixed["status"], "executed", "{fixed:#}");
    assert_eq!(fixed["verification"]["passed"], true, "{fixed:#}");
    // Steady state holds: verified as an agent would, a few tries apart (on a loaded
    // 2-core CI machine a single 1 s readiness probe can time out right after the fix).
    let mut after = Value::Null;
    for _ in 0..5 {
        after = call(&client, "verify_recovery", json!({})).await;
        if after["verification"]["passed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    assert_eq!(after["verification"]["passed"], true, "{after:#}");

    // Bad input is a protocol error naming the field; the server keeps serving.
    let mut p = CallToolRequestParams::new("restart_service");
    p = p.with_arguments(JsonObject::from_iter([(
        "service".to_string(),
        json!("nginx"),
    )]));
    let err = client.call_tool(p).await.expect_err("unknown service");
    assert!(err.to_string().contains("service"), "{err}");
    let mut p = CallToolRequestParams::new("kill_process");
    p = p.with_arguments(JsonObject::from_iter([(
        "pid".to_string(),
        json!(std::process::id()),
    )]));
    assert!(
        client.call_tool(p).await.is_err(),
        "a pid outside the sandbox must be refused"
    );

    // The audit log: a resource, every call recorded, no secret in it.
    let audit = client
        .read_resource(ReadResourceRequestParams::new("audit://log"))
        .await
        .expect("audit://log");
    let text = match &audit.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        text.contains("kill_db_sessions") && text.contains("\"dry_run\":true"),
        "{text}"
    );
    for secret in std::fs::read_dir(sb.home().join("secrets"))
        .expect("secrets")
        .flatten()
    {
        let value = std::fs::read_to_string(secret.path()).unwrap();
        assert!(
            !text.contains(value.trim()),
            "a secret ({:?}) leaked into the audit log",
            secret.file_name()
        );
    }
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_go_through_the_operator_and_read_only_hides_mutations() {
    let sb = Sandbox::new();
    sb.up();
    let client = stdio(&sb, &[]).await;
    // rotate_db_credentials needs a human: pending, then `aiops approve`, then it runs once.
    let pending = call(&client, "rotate_db_credentials", json!({})).await;
    assert_eq!(pending["status"], "pending_approval", "{pending:#}");
    let id = pending["approval_id"]
        .as_str()
        .expect("approval id")
        .to_string();
    let listed = sb.aiops_ok(&["approvals"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{}",
        describe(&listed)
    );
    sb.aiops_ok(&["approve", &id]);
    let done = call(&client, "rotate_db_credentials", json!({"approval_id": id})).await;
    assert_eq!(done["status"], "executed", "{done:#}");
    assert_eq!(done["verification"]["passed"], true, "{done:#}");
    let again = call(&client, "rotate_db_credentials", json!({"approval_id": id})).await;
    assert_eq!(
        again["status"], "refused",
        "an approval is used once: {again:#}"
    );

    // Denied: nothing happens.
    let pending = call(&client, "rotate_db_credentials", json!({})).await;
    let id = pending["approval_id"]
        .as_str()
        .expect("approval id")
        .to_string();
    sb.aiops_ok(&["deny", &id]);
    let refused = call(&client, "rotate_db_credentials", json!({"approval_id": id})).await;
    assert_eq!(refused["status"], "refused", "{refused:#}");
    let _ = client.cancel().await;

    // --read-only: no tool that changes anything.
    let ro = stdio(&sb, &["--read-only"]).await;
    let tools = ro.list_all_tools().await.expect("tools/list");
    for t in &tools {
        // Filing a diagnosis or a report writes a record, not the system: allowed.
        if t.name == "submit_diagnosis" || t.name == "report_incident" {
            continue;
        }
        assert_eq!(
            t.annotations.as_ref().and_then(|a| a.read_only_hint),
            Some(true),
            "{} is listed in read-only mode",
            t.name
        );
    }
    for hidden in [
        "restart_service",
        "kill_db_sessions",
        "restore_config",
        "chaos_inject",
    ] {
        assert!(
            !tools.iter().any(|t| t.name == hidden),
            "{hidden} listed in read-only mode"
        );
    }
    assert!(tools.iter().any(|t| t.name == "verify_recovery"));
    let _ = ro.cancel().await;

    // The CLI runs the same actions.
    let out = sb.aiops(&[
        "action",
        "restart_service",
        "--param",
        "service=worker",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Plan"),
        "{}",
        describe(&out)
    );
    let audit = sb.aiops_ok(&["audit", "-n", "5"]);
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("restart_service"),
        "{}",
        describe(&audit)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnoses_and_incident_reports_are_stored_and_served() {
    let sb = Sandbox::new();
    sb.up();
    let client = stdio(&sb, &[]).await;
    let d = call(
        &client,
        "submit_diagnosis",
        json!({"fault_class": "db_pool_exhaustion", "component": "postgres",
               "summary": "40 foreign sessions idle in transaction hold the pool",
               "evidence": ["pool in use 10/10", "DB_POOL_TIMEOUT × 12"], "confidence": 0.9}),
    )
    .await;
    let diag_id = d["id"].as_str().expect("diagnosis id").to_string();
    let r = call(
        &client,
        "report_incident",
        json!({"title": "Pool exhausted by foreign sessions",
               "what_broke": "40 sessions idle in transaction held every connection",
               "what_was_done": ["kill_db_sessions: 40 terminated, verified"],
               "why": "the target's pool could open connections again",
               "prevention": ["a connection limit for batch roles"],
               "before": {"error_rate_percent": 62, "p95_ms": 4800},
               "after": {"error_rate_percent": 0, "p95_ms": 40},
               "diagnosis_id": diag_id, "resolved": true}),
    )
    .await;
    let uri = r["uri"].as_str().expect("uri").to_string();
    assert!(uri.starts_with("incident://"), "{r:#}");
    let resources = client.list_all_resources().await.expect("resources/list");
    assert!(
        resources.iter().any(|x| x.uri == uri),
        "the report is listed"
    );
    let read = client
        .read_resource(ReadResourceRequestParams::new(uri.clone()))
        .await
        .expect("read the report");
    let text = match &read.contents[0] {
        rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        text.contains("Pool exhausted") && text.contains("p95_ms: 4800"),
        "{text}"
    );
    // Bad input names the field.
    let mut p = CallToolRequestParams::new("submit_diagnosis");
    p = p.with_arguments(JsonObject::from_iter([
        ("fault_class".to_string(), json!("x")),
        ("component".to_string(), json!("y")),
        ("summary".to_string(), json!("")),
    ]));
    let err = client.call_tool(p).await.expect_err("empty summary");
    assert!(err.to_string().contains("summary"), "{err}");
    let _ = client.cancel().await;

    let id = uri.trim_start_matches("incident://");
    let out = sb.aiops_ok(&["incidents"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(id),
        "{}",
        describe(&out)
    );
    let out = sb.aiops_ok(&["incidents", id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("## What was done"),
        "{}",
        describe(&out)
    );
}
