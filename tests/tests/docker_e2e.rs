//! The Docker runtime on a real dockerd (the test command installs and starts one): up,
//! restart and down with nothing left; an OOM kill under a real memory limit; a crash
//! loop under the container's restart policy; the scripted agent's drill on a subset of
//! faults. Images are the local ones `aiops images build` makes from this machine's
//! files (no registry). Containers use host networking and every service listens on
//! 127.0.0.1 only: no test traffic leaves loopback.

use std::process::Command;
use std::time::Duration;

use aiops_tests::mcp::{call, stdio};
use aiops_tests::{Sandbox, describe};
use serde_json::{Value, json};

fn up_docker(sb: &Sandbox) {
    sb.aiops_ok(&[
        "up",
        "--runtime",
        "docker",
        "--http",
        "127.0.0.1:0",
        "--random-ports",
        "--timeout",
        "120",
    ]);
}

/// The project label of this sandbox's containers.
fn project(sb: &Sandbox) -> String {
    aiops_sandbox::docker::project_id(sb.home())
}

/// `docker` CLI, as a person would check: an independent view of the engine.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {} failed:\n{}",
        args.join(" "),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn containers(sb: &Sandbox) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.aiops.project={}", project(sb)),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// The anomaly signals `incident_snapshot` raised on one component.
fn anomaly_signals(snapshot: &Value, component: &str) -> Vec<String> {
    snapshot["anomalies"]
        .as_array()
        .unwrap_or_else(|| panic!("no anomalies list in {snapshot:#}"))
        .iter()
        .filter(|a| a["component"] == component)
        .filter_map(|a| a["signal"].as_str().map(str::to_string))
        .collect()
}

fn service_view<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {status:#}"))
}

/// Local addresses (host order) of every listening TCP socket on `port`, from
/// /proc/net/tcp and tcp6: reading them sends nothing anywhere.
fn listen_addresses(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // f[1] = local "ADDR:PORT" in hex, f[3] = state (0A = LISTEN).
            let (Some(local), Some(state)) = (f.get(1), f.get(3)) else {
                continue;
            };
            let Some((addr, p)) = local.split_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[test]
fn docker_sandbox_comes_up_restarts_and_goes_down_with_no_container_left() {
    let sb = Sandbox::new();
    up_docker(&sb);
    let status = sb.status_json();
    let services = status["services"].as_array().expect("services");
    assert_eq!(services.len(), 5, "{status:#}");
    for s in services {
        assert_eq!(s["state"], "running", "{status:#}");
        assert_eq!(s["health"], "healthy", "{status:#}");
    }
    let names = containers(&sb);
    assert_eq!(names.len(), 5, "one container per service: {names:?}");
    for name in &names {
        let inspect = docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.NetworkMode}} {{.HostConfig.Memory}} {{index .Config.Labels \"io.aiops.service\"}}",
            name,
        ]);
        let mut f = inspect.split_whitespace();
        assert_eq!(f.next(), Some("host"), "{name}: {inspect}");
        let memory: u64 = f.next().unwrap_or("0").parse().unwrap_or(0);
        assert!(memory > 0, "{name} has a memory limit: {inspect}");
    }
    // Host networking, loopback only: every service port is bound to 127.0.0.1.
    let topology: Value =
        serde_json::from_slice(&std::fs::read(sb.home().join("topology.json")).unwrap()).unwrap();
    assert_eq!(topology["runtime"], "docker");
    for s in topology["services"].as_array().unwrap() {
        if let Some(port) = s["port"].as_u64() {
            let addrs = listen_addresses(port as u16);
            assert!(!addrs.is_empty(), "{} listens on {port}", s["name"]);
            assert!(
                addrs.iter().all(|a| a == "0100007F"),
                "{} must listen on 127.0.0.1 only, found {addrs:?}",
                s["name"]
            );
        }
    }

    // Logs of a container come from the engine's logs API, copied where readers look.
    let out = sb.aiops_ok(&["logs", "postgres", "--lines", "200"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("database system is ready"),
        "{}",
        describe(&out)
    );

    let before = sb.service("target-app");
    sb.aiops_ok(&["restart", "target-app"]);
    let after = sb.wait_service(
        "target-app",
        Duration::from_secs(60),
        "healthy after the restart",
        |s| s["state"] == "running" && s["health"] == "healthy",
    );
    assert_ne!(before["pid"], after["pid"], "a new process: {after:#}");
    assert!(
        after["restarts"].as_u64() > before["restarts"].as_u64(),
        "{after:#}"
    );
    let (code, body) =
        aiops_tests::get_json(&format!("{}/api/v1/products?limit=1", sb.target_url()));
    assert_eq!(code, 200, "{body}");

    let out = sb.aiops_ok(&["down"]);
    assert!(
        containers(&sb).is_empty(),
        "containers left: {}",
        describe(&out)
    );
    assert!(sb.processes().is_empty(), "processes left after down");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_leak_on_docker_is_an_oom_kill_and_the_agent_restores_service() {
    let sb = Sandbox::new();
    up_docker(&sb);
    sb.aiops_ok(&[
        "chaos",
        "inject",
        "memory_leak",
        "--param",
        "mb_per_s=50",
        "--ttl",
        "5m",
    ]);
    // 256 MiB limit at 50 MiB/s: the kernel kills it within seconds.
    sb.wait_service("target-app", Duration::from_secs(60), "OOM-killed", |s| {
        s["last_exit"]["oom_killed"] == true
    });
    let client = stdio(&sb, &[]).await;
    let status = call(&client, "sandbox_status", json!({})).await;
    assert_eq!(status["runtime"], "docker", "{status:#}");
    let target = service_view(&status, "target-app");
    assert_eq!(target["oom_killed"], true, "{status:#}");
    assert_eq!(target["last_exit"]["code"], 137, "{status:#}");
    assert_eq!(target["last_exit"]["signal"], "SIGKILL", "{status:#}");
    // Memory against the container's limit, from the engine's stats API, once the
    // restart policy has the target running again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let stats = call(&client, "process_stats", json!({})).await;
        if service_view(&stats, "target-app")["pid"].is_u64()
            || std::time::Instant::now() > deadline
        {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let target = service_view(&stats, "target-app");
    assert_eq!(
        target["memory_limit_bytes"],
        256u64 * 1024 * 1024,
        "{stats:#}"
    );
    assert!(target["memory_usage_bytes"].as_u64().is_some(), "{stats:#}");
    assert!(target["rss_bytes"].as_u64().unwrap_or(0) > 0, "{stats:#}");
    let snapshot = call(&client, "incident_snapshot", json!({})).await;
    assert!(
        anomaly_signals(&snapshot, "target-app").contains(&"oom_killed".to_string()),
        "the OOM kill is an anomaly: {snapshot:#}"
    );
    client.cancel().await.ok();

    let out = sb.aiops(&["agent", "run", "--once", "--json"]);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let report: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", describe(&out), sb.log_tails()));
    assert_eq!(report["outcome"], "recovered", "{report:#}");
    assert_eq!(
        report["hypotheses"][0]["fault_class"], "memory_leak",
        "{report:#}"
    );
    let target = sb.wait_service(
        "target-app",
        Duration::from_secs(30),
        "running, healthy and no longer marked OOM-killed",
        |s| {
            s["state"] == "running"
                && s["health"] == "healthy"
                && s["last_exit"]["oom_killed"] != true
        },
    );
    assert_eq!(target["state"], "running");
    sb.aiops_ok(&["chaos", "stop", "--all"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loop_on_docker_climbs_the_restart_count_and_restore_config_fixes_it() {
    let sb = Sandbox::new();
    up_docker(&sb);
    sb.aiops_ok(&["chaos", "inject", "crash_loop", "--ttl", "10m"]);
    let looping = sb.wait_service(
        "target-app",
        Duration::from_secs(60),
        "restarted by its restart policy at least 3 times",
        |s| s["restarts"].as_u64().unwrap_or(0) >= 3,
    );
    assert_eq!(looping["last_exit"]["code"], 1, "{looping:#}");
    // The engine's restarts reach the timeline from its event stream, a moment later.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = std::fs::read_to_string(sb.home().join("events.jsonl")).unwrap();
        if events.contains("automatic restart by the engine") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine's restarts are not on the timeline:\n{events}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let client = stdio(&sb, &[]).await;
    let snapshot = call(&client, "incident_snapshot", json!({})).await;
    let signals = anomaly_signals(&snapshot, "target-app");
    assert!(
        signals
            .iter()
            .any(|s| s == "restarts" || s == "service_not_running"),
        "the crash loop is detected: {snapshot:#}"
    );
    let fixed = call(&client, "restore_config", json!({})).await;
    assert_eq!(fixed["status"], "executed", "{fixed:#}");
    assert_eq!(fixed["verification"]["passed"], true, "{fixed:#}");
    client.cancel().await.ok();
    let target = sb.wait_service(
        "target-app",
        Duration::from_secs(60),
        "running and healthy",
        |s| s["state"] == "running" && s["health"] == "healthy",
    );
    assert_eq!(target["health"], "healthy");
    sb.aiops_ok(&["chaos", "stop", "--all"]);
}

#[test]
fn the_scripted_agent_passes_a_drill_on_docker() {
    let sb = Sandbox::new();
    up_docker(&sb);
    let args = [
        "drill",
        "--json",
        "--faults",
        "db_pool_exhaustion,upstream_outage,memory_leak,crash_loop,disk_full",
        "--trials",
        "1",
        "--noop",
        "1",
        "--durable",
        "5s",
        "--seed",
        "11",
    ];
    let out = sb.aiops(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`aiops {}` did not print JSON ({e}):\n{}\n{}",
            args.join(" "),
            describe(&out),
            sb.log_tails()
        )
    });
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 6, "{v:#}");
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
            assert_eq!(r["durable"], true, "{r:#}");
        }
    }
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(containers(&sb).len() == 5, "the sandbox is still whole");
}

/// `docker compose` (v2) when the engine has it, else Debian's `docker-compose` (v1).
fn compose_command() -> Command {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// A compose project of one sandbox, taken down (containers removed) when dropped.
struct ComposeProject {
    args: Vec<String>,
}

impl ComposeProject {
    fn new(sb: &Sandbox) -> Self {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/docker-compose.yml");
        Self {
            args: vec![
                "-p".into(),
                format!("aiops-{}", project(sb)),
                "--env-file".into(),
                sb.home().join("compose.env").display().to_string(),
                "-f".into(),
                file.display().to_string(),
            ],
        }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        compose_command()
            .args(&self.args)
            .args(args)
            // No registry: the images `aiops images build` made from this machine's files.
            .env("AIOPS_TARGET_IMAGE", "aiops-target-app:local")
            .env("AIOPS_POSTGRES_IMAGE", "aiops-postgres:local")
            .output()
            .expect("run docker compose")
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--timeout", "5"]);
    }
}

#[test]
fn compose_file_gives_a_sandbox_that_aiops_adopts_and_drives() {
    let sb = Sandbox::new();
    sb.aiops_ok(&["images", "build"]);
    let out = sb.aiops_ok(&["compose-env", "--random-ports"]);
    let env = std::fs::read_to_string(sb.home().join("compose.env")).unwrap();
    assert!(env.contains("AIOPS_PROJECT="), "{env}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&sb.secret("upstream-admin-token")),
        "compose-env prints no secret"
    );
    let compose = ComposeProject::new(&sb);
    let up = compose.run(&["up", "-d", "--no-build"]);
    assert!(up.status.success(), "compose up failed:\n{}", describe(&up));
    assert_eq!(containers(&sb).len(), 5, "compose made the five containers");

    // aiops adopts them (same labels) instead of creating its own.
    up_docker(&sb);
    let names = containers(&sb);
    assert_eq!(names.len(), 5, "no second set of containers: {names:?}");
    for name in &names {
        let managed = docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"io.aiops.managed-by\"}}",
            name,
        ]);
        assert_eq!(managed.trim(), "compose", "{name}");
    }
    let events = std::fs::read_to_string(sb.home().join("events.jsonl")).unwrap();
    assert!(events.contains("container_adopted"), "{events}");
    for s in sb.status_json()["services"].as_array().unwrap() {
        assert_eq!(s["health"], "healthy", "{s:#}");
    }
    sb.aiops_ok(&["restart", "target-app"]);
    sb.wait_service(
        "target-app",
        Duration::from_secs(60),
        "healthy after a restart of compose's container",
        |s| s["state"] == "running" && s["health"] == "healthy",
    );
    let (code, body) =
        aiops_tests::get_json(&format!("{}/api/v1/products?limit=1", sb.target_url()));
    assert_eq!(code, 200, "{body}");

    // `aiops down` stops compose's containers; removing them is compose's job.
    sb.aiops_ok(&["down"]);
    let running = docker(&[
        "ps",
        "--filter",
        &format!("label=io.aiops.project={}", project(&sb)),
        "-q",
    ]);
    assert!(running.trim().is_empty(), "still running: {running}");
    let down = compose.run(&["down", "--timeout", "5"]);
    assert!(down.status.success(), "{}", describe(&down));
    assert!(containers(&sb).is_empty());
}
