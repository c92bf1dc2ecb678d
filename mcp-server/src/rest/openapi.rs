//! The OpenAPI 3.1 document of the REST API, generated from the code, and the `/docs`
//! page that browses it.
//!
//! utoipa builds the operations from the `#[utoipa::path]` attribute on each handler
//! (path, method, path parameters, responses, doc comments). The body schemas come from
//! the same `schemars` derives the MCP tools publish as output schemas: each body type is
//! named in the attributes through a marker in [`doc`] (a `utoipa::ToSchema` that only
//! carries the name), and [`document`] fills `components.schemas` from schemars. Query
//! parameters are listed from the schema of the very type the handler parses the query
//! into (`query::SchemaQuery`), so the document and the parser cannot disagree.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::query::{properties, types_of};

macro_rules! doc_types {
    ($($marker:ident => $ty:ty),* $(,)?) => {
        /// Markers naming body schemas in `#[utoipa::path]` attributes; the schemas
        /// themselves come from schemars (see [`document`](super::document)).
        pub mod doc {
            $(
                pub struct $marker;
                impl utoipa::PartialSchema for $marker {
                    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                        // Replaced by the schemars schema in `document`.
                        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(
                            utoipa::openapi::schema::Object::new(),
                        ))
                    }
                }
                impl utoipa::ToSchema for $marker {
                    fn name() -> std::borrow::Cow<'static, str> {
                        <$ty as schemars::JsonSchema>::schema_name()
                    }
                }
            )*
        }

        /// Every body schema, registered with one generator so shared types appear once.
        fn register_all(generator: &mut schemars::SchemaGenerator) {
            $( generator.subschema_for::<$ty>(); )*
        }
    };
}

doc_types! {
    ErrorBody => crate::rest::error::ErrorBody,
    IncidentSnapshot => aiops_observe::IncidentSnapshot,
    SandboxStatus => aiops_observe::SandboxStatus,
    HealthReport => aiops_observe::HealthReport,
    MetricsReport => aiops_observe::MetricsReport,
    LogQueryResult => aiops_observe::LogQueryResult,
    DbDiagnostics => aiops_observe::DbDiagnostics,
    ProcessStatsReport => aiops_observe::ProcessStatsReport,
    DiskUsageReport => aiops_observe::DiskUsageReport,
    ConfigReport => aiops_observe::ConfigReport,
    EventPage => aiops_observe::EventPage,
    FaultCatalogue => crate::rest::chaos::FaultCatalogue,
    FaultList => crate::rest::chaos::FaultList,
    FaultView => crate::rest::chaos::FaultView,
    InjectView => crate::rest::chaos::InjectView,
    ActionCatalogue => crate::rest::actions::ActionCatalogue,
    ActionOutcome => aiops_remediation::ActionOutcome,
    ApprovalList => crate::rest::actions::ApprovalList,
    Approval => aiops_remediation::Approval,
    AuditPage => crate::rest::actions::AuditPage,
    IncidentList => crate::rest::incidents::IncidentList,
    IncidentDocument => crate::rest::incidents::IncidentDocument,
    IncidentView => crate::rest::incidents::IncidentView,
    ReportIncidentBody => crate::rest::incidents::ReportIncidentBody,
    DiagnosisBody => crate::rest::incidents::DiagnosisBody,
    DiagnosisReceipt => crate::rest::incidents::DiagnosisReceipt,
    BreakQuery => crate::rest::compat::BreakQuery,
    AttackStarted => crate::rest::compat::AttackStarted,
    AttackRecord => crate::rest::compat::AttackRecord,
    ActionServerHealth => crate::rest::compat::ActionServerHealth,
    RestartResult => crate::rest::compat::RestartResult,
    TargetHealth => crate::rest::compat::TargetHealth,
    RemediationResult => crate::rest::compat::RemediationResult,
}

/// Query parameters per operation: the type each handler parses its query into.
fn query_types() -> Vec<(&'static str, &'static str, Map<String, Value>)> {
    use super::{actions, chaos, compat};
    vec![
        (
            "/api/v1/metrics",
            "get",
            properties::<aiops_observe::MetricsQuery>(),
        ),
        (
            "/api/v1/logs",
            "get",
            properties::<aiops_observe::LogQuery>(),
        ),
        (
            "/api/v1/db",
            "get",
            properties::<aiops_observe::DbDiagnosticsQuery>(),
        ),
        (
            "/api/v1/events",
            "get",
            properties::<aiops_observe::EventQuery>(),
        ),
        ("/api/v1/audit", "get", properties::<actions::AuditQuery>()),
        (
            "/api/v1/chaos/{fault}",
            "post",
            properties::<chaos::InjectQuery>(),
        ),
        (
            "/api/v1/actions/{action}",
            "post",
            properties::<actions::ActionQuery>(),
        ),
        (
            "/api/v1/break/{kind}",
            "post",
            properties::<compat::BreakQuery>(),
        ),
        (
            "/api/v1/break/{kind}/{attack_id}/stop",
            "post",
            properties::<compat::StopQuery>(),
        ),
        (
            "/api/v1/action/restart-target-api",
            "post",
            properties::<compat::DryRunQuery>(),
        ),
        (
            "/api/v1/action/restart-target-db",
            "post",
            properties::<compat::DryRunQuery>(),
        ),
        (
            "/api/v1/action/remediate-db-pool-exhaustion",
            "post",
            properties::<compat::RemediateQuery>(),
        ),
    ]
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aiops REST API",
        description = "The sandbox's observation, chaos and remediation libraries over plain \
HTTP, for callers that do not speak MCP (workflow tools, curl, the original Python system's \
clients). Every route needs `Authorization: Bearer <token>` (the state dir's \
secrets/http-token, printed by `aiops up`), except this document and /docs; the \
compatibility listeners opened by `aiops up --compat-ports` (chaos on 127.0.0.1:8080, \
actions on 127.0.0.1:9000) accept the original clients without a token. Errors are \
`{\"error\": {\"code\", \"message\", \"field\"?, \"known\"?}}`."
    ),
    paths(
        super::observe::snapshot,
        super::observe::status,
        super::observe::health,
        super::observe::metrics,
        super::observe::logs,
        super::observe::db,
        super::observe::processes,
        super::observe::disk,
        super::observe::config,
        super::observe::events,
        super::chaos::faults,
        super::chaos::status,
        super::chaos::inject,
        super::chaos::stop,
        super::chaos::stop_all,
        super::actions::catalogue,
        super::actions::run,
        super::actions::approvals,
        super::actions::approve,
        super::actions::deny,
        super::actions::audit,
        super::incidents::list,
        super::incidents::get,
        super::incidents::file,
        super::incidents::diagnose,
        super::compat::break_start,
        super::compat::break_get,
        super::compat::break_stop,
        super::compat::action_health,
        super::compat::restart_target_api,
        super::compat::restart_target_db,
        super::compat::verify_target_health,
        super::compat::remediate_db_pool_exhaustion,
    ),
    tags(
        (name = "observe", description = "Read-only observation (the MCP observation tools)"),
        (name = "chaos", description = "Real, reversible faults with leases; only with `--allow-chaos`"),
        (name = "actions", description = "Remediation actions through policy, approvals, audit and verification"),
        (name = "incidents", description = "Diagnoses and incident reports"),
        (name = "compat-chaos", description = "The original chaos server's routes (port 8080 with --compat-ports)"),
        (name = "compat-actions", description = "The original action server's routes (port 9000 with --compat-ports)"),
    )
)]
struct ApiDoc;

/// A query property schema as an OpenAPI parameter: `null` dropped from the type (a
/// missing key is the null), the description moved to the parameter.
fn query_parameter(name: &str, schema: &Value) -> Value {
    let mut schema = schema.clone();
    let mut description = Value::Null;
    if let Some(obj) = schema.as_object_mut() {
        description = obj.remove("description").unwrap_or(Value::Null);
        obj.remove("default");
        let types: Vec<String> = types_of(&Value::Object(obj.clone()))
            .into_iter()
            .filter(|t| t != "null")
            .collect();
        if types.len() == 1 {
            obj.insert("type".into(), json!(types[0]));
        }
    }
    let mut p = json!({"name": name, "in": "query", "required": false, "schema": schema});
    if !description.is_null() {
        p["description"] = description;
    }
    p
}

fn build() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    register_all(&mut generator);
    let schemas = generator.take_definitions(true);
    doc["components"]["schemas"] = Value::Object(schemas);
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "The token in the state dir's secrets/http-token"}
    });
    doc["security"] = json!([{"bearer": []}]);
    // The guards answer before any handler: every operation may get these.
    let guard_answers = [
        ("401", "Missing or wrong bearer token"),
        ("403", "A non-loopback Origin, or (chaos) chaos disabled"),
        ("413", "Request body over 1 MiB"),
    ];
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(responses) = op["responses"].as_object_mut() else {
                    continue;
                };
                for (code, description) in guard_answers {
                    responses.entry(code).or_insert_with(|| {
                        json!({"description": description, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
                    });
                }
            }
        }
    }
    for (path, method, props) in query_types() {
        let Some(op) = doc["paths"][path][method].as_object_mut() else {
            continue;
        };
        let params = op
            .entry("parameters")
            .or_insert_with(|| json!([]))
            .as_array_mut();
        if let Some(params) = params {
            for (name, schema) in &props {
                params.push(query_parameter(name, schema));
            }
        }
    }
    // Enumerate the names a path segment accepts, from the catalogues.
    let faults: Vec<String> = aiops_chaos::ChaosEngine::catalogue()
        .into_iter()
        .map(|f| f.id)
        .collect();
    let actions: Vec<String> = aiops_remediation::Remediator::actions()
        .into_iter()
        .map(|a| a.name)
        .collect();
    let kinds: Vec<&str> = super::compat::KINDS.to_vec();
    for (path, method, param, names) in [
        ("/api/v1/chaos/{fault}", "post", "fault", json!(faults)),
        ("/api/v1/actions/{action}", "post", "action", json!(actions)),
        ("/api/v1/break/{kind}", "post", "kind", json!(kinds)),
        (
            "/api/v1/break/{kind}/{attack_id}",
            "get",
            "kind",
            json!(kinds),
        ),
        (
            "/api/v1/break/{kind}/{attack_id}/stop",
            "post",
            "kind",
            json!(kinds),
        ),
    ] {
        if let Some(params) = doc["paths"][path][method]["parameters"].as_array_mut() {
            for p in params.iter_mut() {
                if p["name"] == param && p["in"] == "path" {
                    p["schema"] = json!({"type": "string", "enum": names});
                }
            }
        }
    }
    doc
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `/api/openapi.json` and `/docs`: no token needed (they describe the API and hold no
/// sandbox data), GET only.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/api/openapi.json",
            get(|| async { axum::Json(document().clone()) }),
        )
        .route(
            "/docs",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    DOCS_PAGE,
                )
                    .into_response()
            }),
        )
}

/// A small self-contained page (no CDN: nothing is loaded from the internet) that lists
/// every operation of `/api/openapi.json` and can try the GET ones with a token.
const DOCS_PAGE: &str = include_str!("docs.html");

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    if k == "$ref"
                        && let Some(s) = child.as_str()
                    {
                        out.push(s.to_string());
                    }
                    refs(child, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| refs(i, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_no_placeholder_is_left() {
        let doc = document();
        assert_eq!(doc["openapi"].as_str().map(|s| &s[..2]), Some("3."));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(schemas.contains_key(name), "dangling $ref {r}");
        }
        for (name, s) in schemas {
            assert_ne!(s, &json!({"type": "object"}), "{name} is a placeholder");
        }
        let metrics = &doc["paths"]["/api/v1/metrics"]["get"]["parameters"];
        assert_eq!(metrics[0]["name"], "window_s", "{metrics:#}");
        assert_eq!(metrics[0]["schema"]["type"], "integer", "{metrics:#}");
        let fault = &doc["paths"]["/api/v1/chaos/{fault}"]["post"]["parameters"][0];
        assert!(
            fault["schema"]["enum"]
                .as_array()
                .unwrap()
                .contains(&json!("db_pool_exhaustion")),
            "{fault:#}"
        );
    }

    #[test]
    fn schemars_names_do_not_collide() {
        // Two different types with one name would share a component; schemars then
        // suffixes one of them, and a marker would point at the wrong schema.
        let schemas = document()["components"]["schemas"].as_object().unwrap();
        for name in schemas.keys() {
            assert!(
                !name.chars().last().unwrap().is_ascii_digit(),
                "schema name {name} looks like a collision suffix"
            );
        }
    }
}
