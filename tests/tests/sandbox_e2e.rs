//! End to end through the `aiops` command line: up → healthy → restart → healthy → down,
//! and a broken `.env` that the target refuses.

use std::time::Duration;

use aiops_tests::{Sandbox, describe, get_json};

#[test]
fn up_restart_down_leaves_no_process() {
    let sb = Sandbox::new();
    let out = sb.up();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Sandbox healthy in"), "{}", describe(&out));

    // Every service is running and healthy.
    let status = sb.status_json();
    let services = status["services"].as_array().expect("services list");
    let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    for want in [
        "postgres",
        "target-app",
        "worker",
        "upstream-primary",
        "upstream-fallback",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for s in services {
        assert_eq!(s["state"], "running", "{s:#}");
        assert_eq!(s["health"], "healthy", "{s:#}");
        assert!(s["pid"].as_u64().is_some(), "{s:#}");
    }

    // The target answers healthy JSON.
    let base = sb.target_url();
    let (code, health) = get_json(&format!("{base}/api/v1/health"));
    assert_eq!(code, 200, "{health:#}");
    assert_eq!(health["status"], "healthy", "{health:#}");
    assert_eq!(health["db"]["status"], "ok", "{health:#}");

    // Restart the target: a new pid, the restart counted, healthy again.
    let before = sb.service("target-app");
    sb.aiops_ok(&["restart", "target-app"]);
    let after = sb.wait_service("target-app", Duration::from_secs(30), "healthy", |s| {
        s["health"] == "healthy"
    });
    assert_ne!(
        before["pid"], after["pid"],
        "restart must start a new process"
    );
    assert_eq!(after["restarts"], 1, "{after:#}");
    let (code, _) = get_json(&format!("{base}/api/v1/health"));
    assert_eq!(code, 200);

    let pids_before_down = sb.processes();
    assert!(
        pids_before_down.len() >= 5,
        "expected the sandbox's processes, got {pids_before_down:?}"
    );
    let out = sb.aiops_ok(&["down"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no sandbox process left"));
    let left = sb.processes();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    for pid in pids_before_down {
        assert!(
            !aiops_sandbox::procinfo::is_alive(pid),
            "pid {pid} still alive"
        );
    }
    let status = sb.status_json();
    assert_eq!(status["daemon"]["running"], false);
}

#[test]
fn invalid_pool_size_makes_the_target_exit_with_the_key_named() {
    let sb = Sandbox::new();
    sb.up();
    let env_path = sb.home().join("target-app.env");
    let env = std::fs::read_to_string(&env_path).expect("read .env");
    let broken: String = env
        .lines()
        .map(|l| {
            if l.starts_with("POOL_SIZE=") {
                "POOL_SIZE=abc"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&env_path, broken + "\n").expect("write .env");

    // The restart itself is accepted; the new process then exits with EX_CONFIG.
    let _ = sb.aiops(&["restart", "target-app"]);
    let s = sb.wait_service(
        "target-app",
        Duration::from_secs(20),
        "exited with code 78",
        |s| s["last_exit"]["code"] == 78,
    );
    assert_ne!(s["state"], "running", "{s:#}");

    let log = std::fs::read_to_string(sb.home().join("logs/target-app.log")).expect("read log");
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("CONFIG_INVALID"))
        .unwrap_or_else(|| panic!("no CONFIG_INVALID line in the log:\n{log}"));
    assert!(
        line.contains("POOL_SIZE"),
        "the log line must name the key: {line}"
    );

    // Human status shows the exit code too.
    let out = sb.aiops_ok(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exit code 78"),
        "{}",
        describe(&out)
    );
}
