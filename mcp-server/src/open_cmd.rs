//! `aiops open`: log a browser into the dashboard without putting the token in a URL.
//!
//! Asks the daemon (with the bearer token from the state dir) for a one-time login link,
//! good for one use within two minutes, and opens it with `xdg-open` (or prints it with
//! `--no-browser`, or when no opener exists). The link sets the session cookie and
//! forwards to the dashboard.

use std::process::ExitCode;
use std::time::Duration;

use aiops_sandbox::StateDir;
use aiops_sandbox::control::Endpoint;
use anyhow::Context;

use crate::cli::OpenArgs;

pub async fn run(state: &StateDir, args: OpenArgs) -> anyhow::Result<ExitCode> {
    let ep = Endpoint::read(state).context("no running daemon: run `aiops up` first")?;
    let token = std::fs::read_to_string(state.token_file())
        .with_context(|| format!("cannot read {}", state.token_file().display()))?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let resp = http
        .post(format!("{}/dashboard/login-link", ep.url))
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("the daemon at {} does not answer", ep.url))?;
    if !resp.status().is_success() {
        anyhow::bail!(
            "the daemon refused a login link ({}); is it this state dir's daemon?",
            resp.status()
        );
    }
    let link: serde_json::Value = resp.json().await.context("the daemon's answer")?;
    let path = link["path"]
        .as_str()
        .context("the daemon's answer has no path")?;
    let url = format!("{}{path}", ep.url);
    let opened = !args.no_browser
        && std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if opened {
        println!("Opened the dashboard in your browser ({}/).", ep.url);
    } else {
        println!("{url}");
        eprintln!(
            "Open this one-time login link within {} s (it works once). Later visits: {}/",
            link["expires_in_s"].as_u64().unwrap_or(120),
            ep.url
        );
    }
    Ok(ExitCode::SUCCESS)
}
