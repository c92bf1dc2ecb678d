//! The scripted agent through the CLI: `aiops agent run` speaks MCP to a stdio server,
//! finds nothing to do on a healthy sandbox, and fixes a real fault while it is active.

use aiops_tests::{Sandbox, describe};
use serde_json::Value;

fn agent_once(sb: &Sandbox) -> (i32, Value) {
    let out = sb.aiops(&["agent", "run", "--once", "--json"]);
    let code = out.status.code().unwrap_or(-1);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "agent output is not JSON ({e}):\n{}\n{}",
            describe(&out),
            sb.log_tails()
        )
    });
    (code, report)
}

#[test]
fn the_scripted_agent_leaves_a_healthy_system_alone_and_fixes_a_broken_config() {
    let sb = Sandbox::new();
    sb.up();
    let (code, report) = agent_once(&sb);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["outcome"], "no_incident", "{report:#}");
    assert!(
        report["actions"].as_array().is_some_and(|a| a.is_empty()),
        "{report:#}"
    );

    sb.aiops_ok(&["chaos", "inject", "config_corruption", "--ttl", "10m"]);
    let (code, report) = agent_once(&sb);
    assert_eq!(report["outcome"], "recovered", "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(
        report["hypotheses"][0]["fault_class"], "config_corruption",
        "{report:#}"
    );
    let tools: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["tool"].as_str())
        .collect();
    assert!(tools.contains(&"restore_config"), "{report:#}");
    let id = report["incident_id"].as_str().expect("a report was filed");
    let out = sb.aiops_ok(&["incidents", id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("restore_config"),
        "{}",
        describe(&out)
    );
}
