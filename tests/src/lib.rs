//! Test harness for end-to-end tests: locate the built binaries, run `aiops` against a
//! private state dir, and make sure nothing is left running when a test ends, passes or
//! panics.
//!
//! Failure messages carry what a person needs to see why: the command, its output, and
//! the tails of the sandbox's logs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A built binary of the workspace (`aiops`, `target-app`). The test command builds them
/// first (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (./scripts/test does)",
        path.display()
    );
    path
}

/// One sandbox in its own temporary state dir, torn down on drop.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        // Under the system temp dir: PostgreSQL runs as an unprivileged user and must be
        // able to traverse every parent of its data dir, which a checkout under a private
        // directory (CI clones into one) may not allow. `StateDir::create` opens the
        // sandbox root itself to traversal.
        let base = std::env::temp_dir().join("aiops-e2e");
        std::fs::create_dir_all(&base).expect("create the e2e base dir");
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755));
        }
        let dir = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir_in(&base)
            .expect("create a state dir");
        Self { dir }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// Run `aiops ARGS` with this sandbox's state dir.
    pub fn aiops(&self, args: &[&str]) -> Output {
        Command::new(bin("aiops"))
            .args(args)
            .env("AIOPS_HOME", self.home())
            .env("AIOPS_TARGET_APP_BIN", bin("target-app"))
            .output()
            .expect("run aiops")
    }

    /// Run `aiops ARGS` and fail the test, with everything a person needs, if it fails.
    pub fn aiops_ok(&self, args: &[&str]) -> Output {
        let out = self.aiops(args);
        if !out.status.success() {
            panic!(
                "`aiops {}` failed ({}):\n{}\n{}",
                args.join(" "),
                out.status,
                describe(&out),
                self.log_tails()
            );
        }
        out
    }

    /// `aiops up` on a loopback port the kernel picks, with random service ports.
    pub fn up(&self) -> Output {
        self.aiops_ok(&["up", "--http", "127.0.0.1:0", "--random-ports"])
    }

    /// The daemon's base URL (`http://127.0.0.1:PORT`) and the main bearer token.
    pub fn endpoint(&self) -> (String, String) {
        let ep: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.home().join("run/endpoint.json")).expect("run/endpoint.json"),
        )
        .expect("endpoint.json parses");
        (
            ep["url"].as_str().expect("url").to_string(),
            self.secret("http-token"),
        )
    }

    /// A generated secret of this sandbox (`secrets/NAME`), trimmed.
    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.home().join("secrets").join(name))
            .unwrap_or_else(|e| panic!("secrets/{name}: {e}"))
            .trim()
            .to_string()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.aiops_ok(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`aiops status --json` is not JSON ({e}):\n{}",
                describe(&out)
            )
        })
    }

    /// The status entry of one service.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let status = self.status_json();
        status["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no service {name} in status: {status:#}"))
    }

    /// Poll until `cond` holds for the named service, or fail with its last status.
    pub fn wait_service(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if cond(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} never became {what} within {timeout:?}; last status: {s:#}\n{}",
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The target's base URL, from the topology.
    pub fn target_url(&self) -> String {
        let topo: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.home().join("topology.json")).expect("read topology.json"),
        )
        .expect("topology.json parses");
        topo["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "target-app"))
            .and_then(|s| s["url"].as_str())
            .expect("target-app url in topology")
            .to_string()
    }

    /// Pids of every process that carries this sandbox's marker.
    pub fn processes(&self) -> Vec<u32> {
        aiops_sandbox::procinfo::sandbox_processes(self.home())
    }

    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let logs = self.home().join("logs");
        if let Ok(rd) = std::fs::read_dir(&logs) {
            let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let tail = aiops_sandbox::supervisor::tail_lines(&p, 15).unwrap_or_default();
                out.push_str(&format!(
                    "--- {} (last {} lines)\n",
                    p.display(),
                    tail.len()
                ));
                for l in tail {
                    out.push_str(&l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.aiops(&["down"]);
        // Belt and braces: nothing of this sandbox may outlive the test, processes nor
        // mounts (a disk_full fault whose test failed before its revert).
        let home = self.home().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            for point in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
                if point.starts_with(&home) {
                    let _ = Command::new("umount").arg("-l").arg(point).status();
                }
            }
        }
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// GET a URL, returning status and parsed JSON body (or `Null`).
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .get(url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
    let status = resp.status().as_u16();
    let body = resp.json().unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// An MCP client of a sandbox, over stdio (`aiops serve --stdio`), for the end-to-end
/// tests that drive the tools the way an agent would.
pub mod mcp {
    use rmcp::RoleClient;
    use rmcp::ServiceExt;
    use rmcp::model::{CallToolRequestParams, JsonObject};
    use rmcp::service::RunningService;
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use serde_json::Value;

    use crate::{Sandbox, bin};

    pub type Client = RunningService<RoleClient, ()>;

    /// `aiops serve --stdio EXTRA...` on this sandbox's state dir, initialised.
    pub async fn stdio(sb: &Sandbox, extra: &[&str]) -> Client {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let cmd = tokio::process::Command::new(bin("aiops")).configure(|c| {
            c.args(["serve", "--stdio"])
                .args(&extra)
                .env("AIOPS_HOME", sb.home())
                .env("AIOPS_LOG", "warn");
        });
        ().serve(TokioChildProcess::new(cmd).expect("spawn aiops serve --stdio"))
            .await
            .expect("MCP initialisation")
    }

    /// Call `tool` with `args`; its structured result (a protocol error fails the test).
    pub async fn call(client: &Client, tool: &str, args: Value) -> Value {
        let mut p = CallToolRequestParams::new(tool.to_string());
        if let Value::Object(m) = args.clone() {
            p = p.with_arguments(JsonObject::from_iter(m));
        }
        let r = client
            .call_tool(p)
            .await
            .unwrap_or_else(|e| panic!("{tool}({args}) protocol error: {e}"));
        r.structured_content
            .unwrap_or_else(|| panic!("{tool}({args}) gave no structured content: {:?}", r.content))
    }
}
