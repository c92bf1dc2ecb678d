//! The legacy HTTP+SSE transport (MCP 2024-11-05), built on axum over rmcp's transport
//! traits, since rmcp 3 ships only Streamable HTTP on the server side.
//!
//! `GET /sse` opens an event stream whose first event, `endpoint`, names
//! `/messages?sessionId=…`; the client POSTs JSON-RPC messages there (202 Accepted) and
//! reads every answer as a `message` event on the stream. Each stream is one MCP session,
//! served by its own server instance over a pair of channels; the session ends when the
//! stream is dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use rmcp::ServiceExt;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::mcp::AiopsServer;

type Sessions = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ClientJsonRpcMessage>>>>;

#[derive(Clone)]
struct Ctx<F> {
    make_server: F,
    sessions: Sessions,
    cancel: CancellationToken,
}

pub fn router(
    make_server: impl Fn() -> AiopsServer + Send + Sync + Clone + 'static,
    cancel: CancellationToken,
) -> Router {
    let ctx = Ctx {
        make_server,
        sessions: Arc::default(),
        cancel,
    };
    Router::new()
        .route("/sse", get(open_stream))
        .route("/messages", post(post_message))
        .with_state(ctx)
}

/// Removes the session when the event stream is dropped (client gone).
struct SessionGuard {
    id: String,
    sessions: Sessions,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        tracing::debug!(message = "SSE session closed.", session = %self.id);
    }
}

async fn open_stream<F>(
    State(ctx): State<Ctx<F>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> AiopsServer + Send + Sync + Clone + 'static,
{
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server, from_client) = mpsc::unbounded::<ClientJsonRpcMessage>();
    let (to_client, from_server) = mpsc::unbounded::<ServerJsonRpcMessage>();
    ctx.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), to_server);
    let server = (ctx.make_server)();
    let cancel = ctx.cancel.clone();
    let session = id.clone();
    tokio::spawn(async move {
        match server.serve((to_client, from_client)).await {
            Ok(running) => {
                tokio::select! {
                    _ = running.waiting() => {}
                    _ = cancel.cancelled() => {}
                }
            }
            Err(error) => {
                tracing::warn!(message = "SSE session failed to initialise.", session = %session, %error)
            }
        }
    });
    let guard = SessionGuard {
        id: id.clone(),
        sessions: ctx.sessions.clone(),
    };
    let endpoint = futures::stream::once(async move {
        Ok(Event::default()
            .event("endpoint")
            .data(format!("/messages?sessionId={id}")))
    });
    let messages = from_server.map(move |msg| {
        let _keep = &guard;
        let data = serde_json::to_string(&msg).unwrap_or_else(|_| "{}".into());
        Ok(Event::default().event("message").data(data))
    });
    Sse::new(endpoint.chain(messages))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Deserialize)]
struct SessionQuery {
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
}

async fn post_message<F>(
    State(ctx): State<Ctx<F>>,
    Query(q): Query<SessionQuery>,
    body: axum::body::Bytes,
) -> Response
where
    F: Fn() -> AiopsServer + Send + Sync + Clone + 'static,
{
    let Some(id) = q.session_id else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing `sessionId` query parameter (take it from the SSE `endpoint` event)",
        );
    };
    let sender = ctx
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    let Some(sender) = sender else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown or closed session; open a new stream with GET /sse",
        );
    };
    let message: ClientJsonRpcMessage = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("body is not a JSON-RPC message: {e}"),
            );
        }
    };
    if sender.unbounded_send(message).is_err() {
        return error(StatusCode::GONE, "the session has ended");
    }
    StatusCode::ACCEPTED.into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"message": message}})),
    )
        .into_response()
}
