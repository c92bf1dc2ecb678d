//! The MCP surface end to end, with a real rmcp client, against a real sandbox: stdio
//! (the server as a child process, as Claude Desktop runs it), Streamable HTTP and the
//! legacy SSE transport (both served by the daemon that `aiops up` started).

use std::time::Duration;

use aiops_tests::{Sandbox, bin};
use futures::StreamExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, GetPromptRequestParams, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const OBSERVATION_TOOLS: &[&str] = &[
    "incident_snapshot",
    "sandbox_status",
    "check_health",
    "get_metrics",
    "query_logs",
    "db_diagnostics",
    "process_stats",
    "disk_usage",
    "inspect_config",
    "list_events",
];

type Client = RunningService<RoleClient, ()>;

async fn stdio_client(sb: &Sandbox) -> Client {
    let cmd = tokio::process::Command::new(bin("aiops")).configure(|c| {
        c.args(["serve", "--stdio"])
            .env("AIOPS_HOME", sb.home())
            .env("AIOPS_LOG", "warn");
    });
    ().serve(TokioChildProcess::new(cmd).expect("spawn aiops serve --stdio"))
        .await
        .expect("MCP initialisation over stdio")
}

async fn http_client(sb: &Sandbox) -> Client {
    let (url, token) = sb.endpoint();
    let transport = StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            format!("{url}/mcp"),
        )
        .auth_header(token),
    );
    ().serve(transport)
        .await
        .expect("MCP initialisation over Streamable HTTP")
}

async fn call(
    client: &Client,
    tool: &str,
    args: Value,
) -> Result<CallToolResult, rmcp::ServiceError> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    if let Value::Object(map) = args {
        params = params.with_arguments(JsonObject::from_iter(map));
    }
    client.call_tool(params).await
}

async fn call_ok(client: &Client, tool: &str, args: Value) -> Value {
    let result = call(client, tool, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool}({args}) failed at the protocol level: {e}"));
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool}({args}) returned an error: {:?}",
        result.content
    );
    let structured = result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("{tool} returned no structured content"));
    let summary = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    assert!(
        !summary.trim().is_empty(),
        "{tool} returned no summary text"
    );
    structured
}

/// Every observation tool is listed with all four annotations and an output schema, and
/// answers with structured content; the prompts are there too.
async fn check_surface(client: &Client) {
    let tools = client.list_all_tools().await.expect("tools/list");
    for name in OBSERVATION_TOOLS {
        let tool = tools
            .iter()
            .find(|t| t.name == *name)
            .unwrap_or_else(|| panic!("tool {name} not listed"));
        let a = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no annotations"));
        assert_eq!(a.read_only_hint, Some(true), "{name} readOnlyHint");
        assert_eq!(a.destructive_hint, Some(false), "{name} destructiveHint");
        assert_eq!(a.idempotent_hint, Some(true), "{name} idempotentHint");
        assert_eq!(a.open_world_hint, Some(false), "{name} openWorldHint");
        assert!(tool.output_schema.is_some(), "{name} has no output schema");
        assert!(
            tool.description.as_deref().unwrap_or("").len() > 80,
            "{name}'s description is too thin for a model that has never seen the code"
        );
    }
    // Every tool, not only the observation ones, declares all four annotations.
    for tool in &tools {
        let a = tool.annotations.as_ref().expect("annotations");
        assert!(
            a.read_only_hint.is_some()
                && a.destructive_hint.is_some()
                && a.idempotent_hint.is_some()
                && a.open_world_hint.is_some(),
            "{} lacks an annotation",
            tool.name
        );
    }
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"investigate_incident"), "{names:?}");
    assert!(names.contains(&"write_postmortem"), "{names:?}");
    let prompt = client
        .get_prompt(GetPromptRequestParams::new("investigate_incident"))
        .await
        .expect("prompts/get");
    assert!(!prompt.messages.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_observation_tools_match_reality() {
    let sb = Sandbox::new();
    sb.up();
    let client = stdio_client(&sb).await;
    check_surface(&client).await;

    let status = call_ok(&client, "sandbox_status", json!({})).await;
    let text = status.to_string();
    for svc in [
        "postgres",
        "target-app",
        "worker",
        "upstream-primary",
        "upstream-fallback",
    ] {
        assert!(
            text.contains(svc),
            "{svc} missing from sandbox_status: {status:#}"
        );
    }
    let health = call_ok(&client, "check_health", json!({})).await;
    assert_eq!(health["overall"], "healthy", "{health:#}");
    for tool in OBSERVATION_TOOLS {
        call_ok(&client, tool, json!({})).await;
    }

    // Stop the target: the tools must see it down, and the exit.
    sb.aiops_ok(&["stop", "target-app"]);
    let health = call_ok(&client, "check_health", json!({})).await;
    assert_ne!(health["overall"], "healthy", "{health:#}");
    let status = call_ok(&client, "sandbox_status", json!({})).await;
    let target = status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "target-app"))
        .cloned()
        .unwrap_or_else(|| panic!("no target-app in {status:#}"));
    assert_eq!(target["state"], "stopped", "{target:#}");
    assert!(target["pid"].is_null(), "{target:#}");
    assert!(
        target["last_exit"].is_object(),
        "the exit must be recorded: {target:#}"
    );
    client.cancel().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread")]
async fn streamable_http_serves_tools_and_refuses_bad_input() {
    let sb = Sandbox::new();
    sb.up();
    let client = http_client(&sb).await;
    check_surface(&client).await;
    let health = call_ok(&client, "check_health", json!({})).await;
    assert_eq!(health["overall"], "healthy", "{health:#}");

    // Malformed calls are protocol errors with a clear message; the server keeps serving.
    let cases = [
        ("no_such_tool", json!({})),
        ("query_logs", json!({"limit": "abc"})),
        ("query_logs", json!({"regex": "(unclosed"})),
        ("query_logs", json!({"since": "2999-01-01T00:00:00Z"})),
        ("query_logs", json!({"limit": 1_000_000})),
        ("query_logs", json!({"service": "no-such-service"})),
        ("get_metrics", json!({"window_s": -5})),
        ("list_events", json!({"unknown_key": 1})),
    ];
    for (tool, args) in cases {
        match call(&client, tool, args.clone()).await {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.len() > 10, "{tool}({args}): unhelpful error `{msg}`");
            }
            Ok(r) => assert_eq!(
                r.is_error,
                Some(true),
                "{tool}({args}) should have been refused: {:?}",
                r.content
            ),
        }
        // Still serving.
        call_ok(&client, "sandbox_status", json!({})).await;
    }
    let regex_error = call(&client, "query_logs", json!({"regex": "(unclosed"}))
        .await
        .expect_err("a bad regex is invalid_params");
    assert!(
        regex_error.to_string().contains("regex"),
        "the error must name the field: {regex_error}"
    );
    client.cancel().await.expect("close");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_guards_token_origin_and_body_size() {
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let post = |auth: Option<&str>, origin: Option<&str>, body: String| {
        let mut req = http
            .post(format!("{url}/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(a) = auth {
            req = req.bearer_auth(a);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let no_token = post(None, None, init.to_string()).await.expect("send");
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().contains_key("www-authenticate"));
    let wrong = post(Some("not-the-token"), None, init.to_string())
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    let foreign = post(Some(&token), Some("http://evil.example"), init.to_string())
        .await
        .expect("send");
    assert_eq!(foreign.status(), 403);
    let huge = post(Some(&token), None, "x".repeat(2 * 1024 * 1024)).await;
    match huge {
        Ok(resp) => assert_eq!(resp.status(), 413),
        // The server may close the connection before reading the whole body.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let ok = post(
        Some(&token),
        Some("http://localhost:3000"),
        init.to_string(),
    )
    .await
    .expect("send");
    assert_eq!(ok.status(), 200, "{:?}", ok.text().await);
    // The control API is guarded too.
    let control = http
        .get(format!("{url}/control/v1/services"))
        .send()
        .await
        .expect("send");
    assert_eq!(control.status(), 401);
}

/// A minimal legacy-SSE client: GET /sse, read the `endpoint` event, POST JSON-RPC there,
/// read answers as `message` events.
#[tokio::test(flavor = "multi_thread")]
async fn legacy_sse_transport_initialises_and_calls_a_tool() {
    let sb = Sandbox::new();
    sb.up();
    let (url, token) = sb.endpoint();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{url}/sse"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET /sse");
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut next_event = async || -> (String, String) {
        loop {
            if let Some(end) = buf.find("\n\n") {
                let raw: String = buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return (event, data);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("an SSE event within 20 s")
                .expect("stream open")
                .expect("chunk");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    let (event, path) = next_event().await;
    assert_eq!(event, "endpoint");
    assert!(path.starts_with("/messages?sessionId="), "{path}");
    let post = |body: Value| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"sse-test","version":"1"}}}))
        .await
        .expect("POST initialize");
    assert_eq!(r.status(), 202);
    let (_, data) = next_event().await;
    let init: Value = serde_json::from_str(&data).expect("JSON-RPC");
    assert_eq!(init["id"], 1, "{init:#}");
    assert_eq!(init["result"]["serverInfo"]["name"], "aiops", "{init:#}");
    assert!(
        init["result"]["instructions"]
            .as_str()
            .is_some_and(|s| s.contains("incident_snapshot"))
    );
    post(json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
        .await
        .expect("POST initialized");
    let r = post(json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"check_health","arguments":{}}}))
        .await
        .expect("POST tools/call");
    assert_eq!(r.status(), 202);
    let (_, data) = next_event().await;
    let answer: Value = serde_json::from_str(&data).expect("JSON-RPC");
    assert_eq!(answer["id"], 2, "{answer:#}");
    assert_eq!(
        answer["result"]["structuredContent"]["overall"], "healthy",
        "{answer:#}"
    );

    // A session id nobody opened is refused.
    let r = http
        .post(format!("{url}/messages?sessionId=deadbeef"))
        .bearer_auth(&token)
        .json(&json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 404);
}

/// Runbooks are served as resources (listed, with a template), searchable, and every tool
/// and argument they name exists on the server: a runbook that names a tool or argument
/// the server does not have fails this test.
#[tokio::test(flavor = "multi_thread")]
async fn runbooks_are_resources_searchable_and_name_only_real_tools() {
    use rmcp::model::ReadResourceRequestParams;
    let sb = Sandbox::new();
    sb.up();
    let client = stdio_client(&sb).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let resources = client.list_all_resources().await.expect("resources/list");
    let runbook_uris: Vec<String> = resources
        .iter()
        .map(|r| r.uri.clone())
        .filter(|u| u.starts_with("runbook://"))
        .collect();
    assert!(runbook_uris.len() >= 15, "{runbook_uris:?}");
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("resources/templates/list");
    assert!(
        templates.iter().any(|t| t.uri_template == "runbook://{id}"),
        "{templates:?}"
    );

    let mut problems = Vec::new();
    for uri in &runbook_uris {
        let read = client
            .read_resource(ReadResourceRequestParams::new(uri.clone()))
            .await
            .unwrap_or_else(|e| panic!("read {uri}: {e}"));
        let text = match &read.contents[0] {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => panic!("{uri} is not text: {other:?}"),
        };
        let id = uri.trim_start_matches("runbook://");
        let rb = aiops_runbooks::parse(&format!("{id}.md"), &text)
            .unwrap_or_else(|e| panic!("{uri} does not parse: {e}"));
        for (tool, args) in rb.tool_calls() {
            let Some(t) = tools.iter().find(|t| t.name == tool) else {
                problems.push(format!("{id}: tool `{tool}` does not exist"));
                continue;
            };
            let props = t
                .input_schema
                .get("properties")
                .and_then(|p| p.as_object())
                .cloned()
                .unwrap_or_default();
            for key in args.keys() {
                if !props.contains_key(key) {
                    problems.push(format!("{id}: `{tool}` has no argument `{key}`"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "runbooks name what the server lacks:\n{}",
        problems.join("\n")
    );

    let hits = call_ok(
        &client,
        "search_runbooks",
        json!({"query": "DB_POOL_TIMEOUT pool exhausted"}),
    )
    .await;
    assert_eq!(hits["hits"][0]["id"], "db_pool_exhaustion", "{hits:#}");
    let err = call(&client, "search_runbooks", json!({"query": ""})).await;
    assert!(err.is_err(), "an empty query is invalid_params");
    let missing = client
        .read_resource(ReadResourceRequestParams::new("runbook://no_such_runbook"))
        .await;
    assert!(missing.is_err(), "an unknown runbook is an error");
    let _ = client.cancel().await;
}
