//! Query strings read against the JSON schema of the library's own query type, so the
//! REST API accepts exactly the keys the MCP tool accepts, and the OpenAPI document lists
//! the same ones (`openapi` reads the same schema).
//!
//! An unknown or repeated key, or a value of the wrong type, is a 400 naming the key.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ApiError;

/// A query string parsed into `T` by its schema.
pub struct SchemaQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for SchemaQuery<T>
where
    T: DeserializeOwned + JsonSchema,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or("")).map(SchemaQuery)
    }
}

/// No query keys at all: any key is a 400.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// The properties of `T`'s schema: name → schema.
pub fn properties<T: JsonSchema>() -> Map<String, Value> {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    schema
        .as_value()
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The JSON types a property schema allows (`"type"` as a string or a list).
pub fn types_of(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

pub fn parse<T: DeserializeOwned + JsonSchema>(query: &str) -> Result<T, ApiError> {
    let props = properties::<T>();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad_query",
            format!("the query string cannot be parsed: {e}"),
        )
    })?;
    let mut object = Map::new();
    for (key, raw) in pairs {
        let Some(schema) = props.get(&key) else {
            let allowed = if props.is_empty() {
                "this endpoint takes no query parameters".to_string()
            } else {
                format!(
                    "allowed: {}",
                    props.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(ApiError::invalid(
                &key,
                format!("unknown query parameter `{key}`; {allowed}"),
            )
            .with_code("unknown_query_param"));
        };
        if object.contains_key(&key) {
            return Err(ApiError::invalid(
                &key,
                format!("query parameter `{key}` given more than once"),
            ));
        }
        let value = coerce(&key, &raw, &types_of(schema))?;
        object.insert(key, value);
    }
    let de = Value::Object(object);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        ApiError::invalid(
            field.clone(),
            format!("invalid query parameter `{field}`: {}", e.inner()),
        )
    })
}

/// A query value as the JSON type the schema wants.
fn coerce(key: &str, raw: &str, types: &[String]) -> Result<Value, ApiError> {
    let has = |t: &str| types.iter().any(|x| x == t);
    if has("integer") {
        return raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<u64>().map(Value::from))
            .map_err(|_| {
                ApiError::invalid(
                    key,
                    format!("query parameter `{key}` must be an integer, got {raw:?}"),
                )
            });
    }
    if has("number") {
        return raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| {
                ApiError::invalid(
                    key,
                    format!("query parameter `{key}` must be a number, got {raw:?}"),
                )
            });
    }
    if has("boolean") {
        return match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(ApiError::invalid(
                key,
                format!("query parameter `{key}` must be true or false, got {raw:?}"),
            )),
        };
    }
    Ok(Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Q {
        limit: Option<u32>,
        dry_run: Option<bool>,
        name: Option<String>,
    }

    #[test]
    fn typed_values_and_named_errors() {
        let q: Q = parse("limit=5&dry_run=true&name=a%20b").unwrap();
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.dry_run, Some(true));
        assert_eq!(q.name.as_deref(), Some("a b"));

        let e = parse::<Q>("limit=5&bogus=1").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("bogus"));
        assert_eq!(e.status, 400);
        let e = parse::<Q>("limit=-1").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("limit"), "{e:?}");
        let e = parse::<Q>("limit=x").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("limit"));
        let e = parse::<Q>("dry_run=yes").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("dry_run"));
        let e = parse::<Q>("limit=1&limit=2").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("limit"));
        let e = parse::<NoQuery>("x=1").unwrap_err();
        assert_eq!(e.detail.field.as_deref(), Some("x"));
        parse::<NoQuery>("").unwrap();
    }
}
