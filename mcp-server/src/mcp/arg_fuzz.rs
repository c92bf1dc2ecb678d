//! Property tests of every tool's argument handling, through a real MCP client and
//! server connected in memory: whatever the arguments (hostile strings, wrong types,
//! unknown keys, nesting), each call answers within a bound with a result or a clear
//! error, and the server keeps serving. The server has no sandbox behind it (an empty
//! state dir, no daemon), so a call that gets past argument checking fails cleanly
//! instead of acting: nothing here can touch the machine.

use std::sync::Arc;
use std::time::Duration;

use aiops_observe::Observer;
use aiops_sandbox::control::DaemonRuntime;
use aiops_sandbox::events::EventLog;
use aiops_sandbox::{Runtime, StateDir};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rmcp::model::{CallToolRequestParams, JsonObject, Tool};
use rmcp::service::{RunningService, ServiceError};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};

use super::{AiopsServer, ServerOptions};

/// Strings an attacker would try in any argument.
const HOSTILE: &[&str] = &[
    "",
    "../../../../etc/passwd",
    "/etc/shadow",
    "..",
    "target-app/../../secrets/http-token",
    "'; DROP TABLE products; --",
    "x' OR '1'='1",
    "$(touch /tmp/aiops-pwned)",
    "`id`",
    "a\nJWT_SECRET=pwned",
    "\0",
    "%00../",
    "${HOME}",
    "(((((((((((((((((((((",
    "\\\\?\\C:\\",
    "🦀\u{202e}",
    "-1",
    "9999999999999999999999",
    "NaN",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        prop::sample::select(HOSTILE).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        "[a-z_-]{1,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

type Client = RunningService<RoleClient, ()>;

async fn connect(state: &StateDir) -> (Client, Vec<Tool>) {
    let runtime: Arc<dyn Runtime> = Arc::new(DaemonRuntime::new(state.clone()));
    let observer = Observer::new(state.clone(), runtime.clone());
    let events = Arc::new(EventLog::open(&state.events_file()));
    let server = AiopsServer::new(
        observer,
        state.clone(),
        runtime,
        events,
        &ServerOptions {
            allow_chaos: true,
            ..ServerOptions::default()
        },
    );
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = ().serve(client_io).await.expect("client initialises");
    let tools = client.list_all_tools().await.expect("tools/list");
    (client, tools)
}

fn properties(tool: &Tool) -> Vec<String> {
    tool.input_schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Call a tool; `Err` says what was wrong with the answer.
async fn check_call(client: &Client, tool: &str, args: Map<String, Value>) -> Result<(), String> {
    let params =
        CallToolRequestParams::new(tool.to_string()).with_arguments(JsonObject::from_iter(args));
    let answer = tokio::time::timeout(Duration::from_secs(20), client.call_tool(params))
        .await
        .map_err(|_| "no answer within 20 s".to_string())?;
    match answer {
        Ok(r) => {
            if r.is_error == Some(true) {
                let text: String = r
                    .content
                    .iter()
                    .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                    .collect();
                if text.trim().len() < 10 {
                    return Err(format!("an error result without a clear message: {r:?}"));
                }
            }
            Ok(())
        }
        Err(ServiceError::McpError(e)) if e.message.trim().len() >= 10 => Ok(()),
        Err(ServiceError::McpError(e)) => Err(format!("unhelpful protocol error: {e:?}")),
        Err(other) => Err(format!("the connection broke: {other}")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every tool × every argument it declares × every hostile string, plus wrong types.
#[test]
fn every_tool_refuses_hostile_values_in_every_argument_clearly() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    rt.block_on(async {
        let (client, tools) = connect(&state).await;
        assert!(tools.len() >= 30, "{} tools", tools.len());
        let mut problems = Vec::new();
        let mut calls = 0;
        let wrong_types = [
            json!(null),
            json!(-1),
            json!(1e300),
            json!([]),
            json!({"a": 1}),
        ];
        for tool in &tools {
            for prop in properties(tool) {
                let values = HOSTILE
                    .iter()
                    .map(|s| json!(s))
                    .chain(wrong_types.iter().cloned());
                for v in values {
                    let mut args = Map::new();
                    args.insert(prop.clone(), v.clone());
                    calls += 1;
                    if let Err(p) = check_call(&client, &tool.name, args).await {
                        problems.push(format!("{}({prop}={v}): {p}", tool.name));
                    }
                }
            }
            let mut unknown = Map::new();
            unknown.insert("no_such_argument".into(), json!(1));
            if let Err(p) = check_call(&client, &tool.name, unknown).await {
                problems.push(format!("{}(no_such_argument): {p}", tool.name));
            }
        }
        assert!(calls > 300, "only {calls} calls");
        eprintln!("{calls} calls over {} tools", tools.len());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        // Still serving, and no argument reached a shell.
        client.list_all_tools().await.expect("still serving");
        assert!(!std::path::Path::new("/tmp/aiops-pwned").exists());
    });
}

/// Random argument maps (keys the tool declares mixed with others, values of any shape)
/// for random tools.
#[test]
fn any_arguments_to_any_tool_get_a_result_or_a_clear_error() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::new(dir.path());
    let (client, tools) = rt.block_on(connect(&state));
    let mut runner = TestRunner::new(Config {
        cases: 2048,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        any::<prop::sample::Index>(),
        prop::collection::vec(
            (
                any::<bool>(),
                any::<prop::sample::Index>(),
                "[a-z_]{1,12}",
                value(),
            ),
            0..5,
        ),
    );
    runner
        .run(&strategy, |(which, entries)| {
            let tool = which.get(&tools);
            let props = properties(tool);
            let mut args = Map::new();
            for (declared, idx, other, v) in entries {
                let key = if declared && !props.is_empty() {
                    idx.get(&props).clone()
                } else {
                    other
                };
                args.insert(key, v);
            }
            let shown = Value::Object(args.clone());
            let outcome = rt.block_on(check_call(&client, &tool.name, args));
            prop_assert!(outcome.is_ok(), "{}({}): {:?}", tool.name, shown, outcome);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async { client.list_all_tools().await.expect("still serving") });
}
