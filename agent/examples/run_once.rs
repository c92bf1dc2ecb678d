//! Run the scripted agent once against a running sandbox and print its report as JSON.
//!
//! `cargo run -p aiops-agent --example run_once -- AIOPS_BIN AIOPS_HOME [TOOL=APPROVAL_ID]...`

use std::path::PathBuf;

use aiops_agent::{AgentOptions, connect_stdio, run_once};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(bin), Some(home)) = (args.next(), args.next()) else {
        return Err("usage: run_once AIOPS_BIN AIOPS_HOME [TOOL=APPROVAL_ID]...".into());
    };
    let mut opts = AgentOptions::default();
    for a in args {
        if let Some((tool, id)) = a.split_once('=') {
            opts.approval_ids.insert(tool.to_string(), id.to_string());
        }
    }
    let client = connect_stdio(&PathBuf::from(bin), &PathBuf::from(home)).await?;
    let report = run_once(&client, &opts).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    let _ = client.cancel().await;
    Ok(())
}
