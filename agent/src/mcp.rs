//! The agent's only door into the sandbox: MCP tool calls and resource reads.
//!
//! Responsible for: connecting (stdio child or Streamable HTTP), calling a tool and
//! handing back its structured content, reading `runbook://` resources.
//!
//! Not responsible for: deciding anything; callers interpret the answers.

use std::path::Path;

use rmcp::model::{CallToolRequestParams, JsonObject, ReadResourceRequestParams, ResourceContents};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::AgentError;

/// The client type every role uses.
pub type Client = RunningService<RoleClient, ()>;

/// Start `aiops serve --stdio` as a child with `AIOPS_HOME` set and connect to it.
pub async fn connect_stdio(aiops_bin: &Path, aiops_home: &Path) -> Result<Client, AgentError> {
    let home = aiops_home.to_path_buf();
    let cmd = tokio::process::Command::new(aiops_bin).configure(|c| {
        c.args(["serve", "--stdio"])
            .env("AIOPS_HOME", &home)
            .env("AIOPS_LOG", "warn");
    });
    let transport = TokioChildProcess::new(cmd).map_err(|e| AgentError::Connect(e.to_string()))?;
    ().serve(transport)
        .await
        .map_err(|e| AgentError::Connect(e.to_string()))
}

/// Connect to the daemon's Streamable HTTP endpoint (`.../mcp`) with its bearer token.
pub async fn connect_http(url: &str, token: &str) -> Result<Client, AgentError> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(url.to_string())
            .auth_header(token.to_string()),
    );
    ().serve(transport)
        .await
        .map_err(|e| AgentError::Connect(e.to_string()))
}

/// A tool's answer: its structured content (or `Null`), whether the tool flagged an error,
/// and its first text block.
#[derive(Debug, Clone)]
pub struct ToolAnswer {
    pub structured: Value,
    pub is_error: bool,
    pub text: String,
}

/// Call a tool. A protocol error (unknown tool, invalid arguments) is an `Err`.
pub async fn call(client: &Client, tool: &str, args: &Value) -> Result<ToolAnswer, AgentError> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(JsonObject::from_iter(map.clone()));
    }
    let result = client
        .call_tool(params)
        .await
        .map_err(|e| AgentError::Tool {
            tool: tool.to_string(),
            message: e.to_string(),
        })?;
    let text = result
        .content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.clone()))
        .unwrap_or_default();
    Ok(ToolAnswer {
        structured: result.structured_content.unwrap_or(Value::Null),
        is_error: result.is_error == Some(true),
        text,
    })
}

/// Call a tool that must answer with structured content and no error flag.
pub async fn call_ok(client: &Client, tool: &str, args: &Value) -> Result<Value, AgentError> {
    let answer = call(client, tool, args).await?;
    if answer.is_error || answer.structured.is_null() {
        return Err(AgentError::Tool {
            tool: tool.to_string(),
            message: if answer.text.is_empty() {
                "no structured content".into()
            } else {
                answer.text
            },
        });
    }
    Ok(answer.structured)
}

/// Every runbook the server offers: `(id, text)` of each `runbook://` resource.
pub async fn read_runbooks(client: &Client) -> Result<Vec<(String, String)>, AgentError> {
    let resources = client
        .list_all_resources()
        .await
        .map_err(|e| AgentError::Resource {
            uri: "resources/list".into(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for r in resources {
        let Some(id) = r.uri.strip_prefix("runbook://") else {
            continue;
        };
        let read = client
            .read_resource(ReadResourceRequestParams::new(r.uri.clone()))
            .await
            .map_err(|e| AgentError::Resource {
                uri: r.uri.clone(),
                message: e.to_string(),
            })?;
        let text: String = read
            .contents
            .iter()
            .filter_map(|c| match c {
                ResourceContents::TextResourceContents { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        out.push((id.to_string(), text));
    }
    Ok(out)
}
