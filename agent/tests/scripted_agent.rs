//! The scripted agent against a real sandbox with real faults, over stdio MCP: it must
//! leave a healthy system alone, diagnose and fix faults while they are still injected,
//! and stop for a human when a fix needs approval.

use std::collections::HashMap;
use std::time::Duration;

use aiops_agent::{AgentOptions, AgentReport, Client, connect_stdio, run_once};
use aiops_tests::{Sandbox, bin, describe};

async fn client(sb: &Sandbox) -> Client {
    connect_stdio(&bin("aiops"), sb.home())
        .await
        .expect("connect to aiops serve --stdio")
}

async fn run(client: &Client, opts: &AgentOptions, sb: &Sandbox, what: &str) -> AgentReport {
    let report = run_once(client, opts)
        .await
        .unwrap_or_else(|e| panic!("{what}: run_once failed: {e}\n{}", sb.log_tails()));
    println!(
        "{what}: outcome {} detect_ms {} mitigate_ms {} top {:?} actions {:?}",
        report.outcome,
        report.detect_ms,
        report.mitigate_ms,
        report
            .hypotheses
            .first()
            .map(|h| (&h.fault_class, h.confidence)),
        report
            .actions
            .iter()
            .map(|a| (&a.tool, &a.status, a.verified))
            .collect::<Vec<_>>()
    );
    report
}

fn inject(sb: &Sandbox, fault: &str) {
    let out = sb.aiops_ok(&["chaos", "inject", fault, "--ttl", "10m"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{fault} was not verified:\n{}",
        describe(&out)
    );
}

/// The fault must still be held by its lease when the agent says it recovered: the agent
/// fixed it, not the lease's revert.
fn assert_fault_active(sb: &Sandbox, fault: &str) {
    let out = sb.aiops_ok(&["chaos", "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(fault),
        "{fault} is no longer active:\n{}",
        describe(&out)
    );
}

fn pretty(report: &AgentReport) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_sandbox_is_left_alone() {
    let sb = Sandbox::new();
    sb.up();
    let client = client(&sb).await;
    let report = run(&client, &AgentOptions::default(), &sb, "healthy").await;
    assert_eq!(report.outcome, "no_incident", "{}", pretty(&report));
    assert!(report.actions.is_empty(), "{}", pretty(&report));
    assert!(report.diagnosis_id.is_none() && report.incident_id.is_none());
    let audit = sb.aiops_ok(&["audit", "-n", "50"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    for tool in [
        "kill_db_sessions",
        "restart_service",
        "rotate_db_credentials",
    ] {
        assert!(
            !audit.contains(tool),
            "{tool} ran on a healthy sandbox:\n{audit}"
        );
    }
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_exhaustion_is_diagnosed_and_fixed_while_the_fault_is_active() {
    let sb = Sandbox::new();
    sb.up();
    let client = client(&sb).await;
    inject(&sb, "db_pool_exhaustion");
    // The sessions' idle-in-transaction age crosses the snapshot's 30 s threshold before
    // that anomaly shows; without it the evidence for this cause is thin (see the
    // agent's report on early detection).
    tokio::time::sleep(Duration::from_secs(32)).await;
    let report = run(&client, &AgentOptions::default(), &sb, "db_pool_exhaustion").await;
    let top = report.hypotheses.first().expect("a hypothesis");
    assert_eq!(top.fault_class, "db_pool_exhaustion", "{}", pretty(&report));
    assert_eq!(top.component, "postgres");
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.tool == "kill_db_sessions" && a.status == "executed"),
        "{}",
        pretty(&report)
    );
    assert_eq!(report.outcome, "recovered", "{}", pretty(&report));
    assert_fault_active(&sb, "db_pool_exhaustion");
    assert!(report.diagnosis_id.is_some(), "{}", pretty(&report));
    let incident = report.incident_id.clone().expect("a report was filed");
    let listing = std::fs::read_dir(sb.home())
        .expect("state dir")
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>();
    println!("incident {incident}; state dir: {listing:?}");
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failure_waits_for_a_human_then_recovers_with_the_approval() {
    let sb = Sandbox::new();
    sb.up();
    let client = client(&sb).await;
    inject(&sb, "db_auth_failure");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first = run(&client, &AgentOptions::default(), &sb, "db_auth_failure #1").await;
    assert_eq!(
        first.hypotheses.first().map(|h| h.fault_class.as_str()),
        Some("db_auth_failure"),
        "{}",
        pretty(&first)
    );
    assert_eq!(first.outcome, "awaiting_approval", "{}", pretty(&first));
    let pending = first.pending_approval.clone().expect("pending approval");
    assert_eq!(pending.tool, "rotate_db_credentials");
    assert!(!pending.approval_id.is_empty());
    // Still broken: the agent did not approve itself.
    let listed = sb.aiops_ok(&["approvals"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&pending.approval_id),
        "{}",
        describe(&listed)
    );

    sb.aiops_ok(&["approve", &pending.approval_id]);
    let opts = AgentOptions {
        approval_ids: HashMap::from([(pending.tool.clone(), pending.approval_id.clone())]),
        ..AgentOptions::default()
    };
    let second = run(&client, &opts, &sb, "db_auth_failure #2").await;
    assert_eq!(
        second.hypotheses.first().map(|h| h.fault_class.as_str()),
        Some("db_auth_failure"),
        "{}",
        pretty(&second)
    );
    assert!(
        second
            .actions
            .iter()
            .any(|a| a.tool == "rotate_db_credentials" && a.status == "executed"),
        "{}",
        pretty(&second)
    );
    assert_eq!(second.outcome, "recovered", "{}", pretty(&second));
    assert_fault_active(&sb, "db_auth_failure");
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_corruption_is_diagnosed_and_restored() {
    let sb = Sandbox::new();
    sb.up();
    let client = client(&sb).await;
    inject(&sb, "config_corruption");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let report = run(&client, &AgentOptions::default(), &sb, "config_corruption").await;
    assert_eq!(
        report.hypotheses.first().map(|h| h.fault_class.as_str()),
        Some("config_corruption"),
        "{}",
        pretty(&report)
    );
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.tool == "restore_config" && a.status == "executed"),
        "{}",
        pretty(&report)
    );
    assert_eq!(report.outcome, "recovered", "{}", pretty(&report));
    assert_fault_active(&sb, "config_corruption");
    let _ = client.cancel().await;
}
