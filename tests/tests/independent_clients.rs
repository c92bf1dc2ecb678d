//! Independent MCP clients against aiops: the official Python SDK and the MCP Inspector
//! CLI, over stdio, Streamable HTTP and legacy SSE. `./scripts/test` installs both
//! (`pip install mcp`, `npm ci` in tests/clients).

use std::path::{Path, PathBuf};
use std::process::Command;

use aiops_tests::{Sandbox, bin, describe};
use serde_json::Value;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python_client(args: &[&str]) -> Value {
    let out = run(
        Command::new("python3")
            .arg(clients_dir().join("py_client.py"))
            .args(args),
        &format!("python MCP client {}", args[0]),
    );
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("client output is not JSON ({e}): {out}"))
}

#[test]
fn python_sdk_client_over_stdio_http_and_sse() {
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let aiops = bin("aiops");
    let home = sb.home().to_str().expect("utf-8 path");
    for (mode, args) in [
        ("stdio", vec!["stdio", aiops.to_str().expect("utf-8"), home]),
        ("http", vec!["http", &format!("{url}/mcp"), &token]),
        ("sse", vec!["sse", &format!("{url}/sse"), &token]),
    ]
    .iter()
    .map(|(m, a)| (*m, a.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
    .collect::<Vec<_>>()
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let seen = python_client(&args);
        assert_eq!(seen["server"], "aiops", "{mode}: {seen}");
        assert_eq!(seen["health"], "healthy", "{mode}: {seen}");
        assert!(seen["tools"].as_u64().unwrap_or(0) >= 10, "{mode}: {seen}");
    }
}

fn inspector() -> Command {
    let launcher = clients_dir().join("node_modules/.bin/mcp-inspector");
    assert!(
        launcher.exists(),
        "{} is missing: run `npm ci --prefix tests/clients` (./scripts/test does)",
        launcher.display()
    );
    let mut cmd = Command::new(launcher);
    cmd.arg("--cli");
    cmd
}

fn tool_names(json_out: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(json_out.trim())
        .unwrap_or_else(|e| panic!("inspector output is not JSON ({e}): {json_out}"));
    v["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mcp_inspector_cli_over_stdio_http_and_sse() {
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let auth = format!("Authorization: Bearer {token}");

    let out = run(
        inspector()
            .args(["-e", &format!("AIOPS_HOME={}", sb.home().display())])
            .args(["-e", "AIOPS_LOG=warn"])
            .args(["--method", "tools/list"])
            .arg(bin("aiops"))
            .args(["serve", "--stdio"]),
        "inspector tools/list over stdio",
    );
    assert!(
        tool_names(&out).contains(&"incident_snapshot".to_string()),
        "{out}"
    );

    for (transport, path) in [("http", "/mcp"), ("sse", "/sse")] {
        let target = format!("{url}{path}");
        let out = run(
            inspector()
                .arg(&target)
                .args(["--transport", transport, "--header", &auth])
                .args(["--method", "tools/list"]),
            &format!("inspector tools/list over {transport}"),
        );
        assert!(
            tool_names(&out).contains(&"check_health".to_string()),
            "{transport}: {out}"
        );
        let out = run(
            inspector()
                .arg(&target)
                .args(["--transport", transport, "--header", &auth])
                .args(["--method", "tools/call", "--tool-name", "check_health"]),
            &format!("inspector tools/call over {transport}"),
        );
        let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(
            v["structuredContent"]["overall"], "healthy",
            "{transport}: {v:#}"
        );
    }
}

/// Kills the child on drop, so a failing assertion leaves no proxy behind.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Scenarios of the official conformance suite (`server --suite all`) that aiops must
/// pass. The others need the suite's fixture tools, resources and capabilities
/// (`test_simple_text`, `test_image`, resources, logging, completion, sampling,
/// elicitation), which this domain server does not have; README.md lists each with the
/// reason.
const CONFORMANCE_MUST_PASS: &[&str] = &[
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "server-sse-polling",
    "server-sse-multiple-streams",
];

#[test]
fn official_conformance_suite_core_scenarios_pass() {
    use std::io::BufRead;
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let mut proxy = Command::new("python3")
        .arg(clients_dir().join("auth_proxy.py"))
        .args(["0", &url, &token])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the token-adding proxy");
    let stdout = proxy.stdout.take().expect("proxy stdout");
    let proxy = ChildGuard(proxy);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("proxy says ready");
    let port = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("unexpected proxy output: {line}"));
    let launcher = clients_dir().join("node_modules/.bin/conformance");
    assert!(
        launcher.exists(),
        "{} is missing: run `npm ci --prefix tests/clients` (./scripts/test does)",
        launcher.display()
    );
    let workdir = sb.home().join("conformance");
    std::fs::create_dir_all(&workdir).expect("conformance workdir");
    let out = Command::new(launcher)
        .args([
            "server",
            "--url",
            &format!("http://127.0.0.1:{port}/mcp"),
            "--suite",
            "all",
        ])
        .current_dir(&workdir)
        .output()
        .expect("run the conformance suite");
    drop(proxy);
    let text = String::from_utf8_lossy(&out.stdout);
    let passed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("✓ "))
        .filter_map(|l| l.split(':').next())
        .collect();
    for want in CONFORMANCE_MUST_PASS {
        assert!(
            passed.contains(want),
            "conformance scenario {want} did not pass; passed: {passed:?}\n{}",
            describe(&out)
        );
    }
}

/// A client that supports MCP elicitation is asked to approve a high-risk action; its
/// answer decides, and the decision is recorded as the approval.
#[test]
fn approvals_through_mcp_elicitation() {
    let sb = Sandbox::new();
    sb.up();
    let aiops = bin("aiops");
    let home = sb.home().to_str().expect("utf-8 path").to_string();
    let run_client = |answer: &str| -> Value {
        let out = run(
            Command::new("python3")
                .arg(clients_dir().join("py_elicit.py"))
                .args([aiops.to_str().expect("utf-8"), &home, answer]),
            &format!("python elicitation client ({answer})"),
        );
        serde_json::from_str(out.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    let accepted = run_client("accept");
    assert_eq!(accepted["status"], "executed", "{accepted}");
    assert_eq!(accepted["verified"], true, "{accepted}");
    assert!(
        accepted["asked"][0]
            .as_str()
            .unwrap_or("")
            .contains("rotate_db_credentials"),
        "the human must be told what they approve: {accepted}"
    );
    let declined = run_client("decline");
    assert_eq!(declined["status"], "refused", "{declined}");
    let audit = std::fs::read_to_string(sb.home().join("audit/audit.jsonl")).expect("audit log");
    assert!(
        audit.contains("mcp-elicitation"),
        "the approver is recorded"
    );
}
