//! Fault parameters: declared once per fault, validated strictly (types, ranges, unknown
//! names), defaults filled in, and rendered as a JSON schema for the catalogue.

use serde_json::{Map, Value, json};

use crate::ChaosError;

#[derive(Debug, Clone, Copy)]
pub(crate) enum ParamKind {
    Int {
        min: i64,
        max: i64,
        default: i64,
    },
    Bool {
        default: bool,
    },
    Enum {
        values: &'static [&'static str],
        default: &'static str,
    },
    Str {
        default: &'static str,
        max_len: usize,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ParamSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: ParamKind,
}

pub(crate) const fn int(
    name: &'static str,
    help: &'static str,
    min: i64,
    max: i64,
    default: i64,
) -> ParamSpec {
    ParamSpec {
        name,
        help,
        kind: ParamKind::Int { min, max, default },
    }
}

pub(crate) const fn boolean(name: &'static str, help: &'static str, default: bool) -> ParamSpec {
    ParamSpec {
        name,
        help,
        kind: ParamKind::Bool { default },
    }
}

pub(crate) const fn one_of(
    name: &'static str,
    help: &'static str,
    values: &'static [&'static str],
    default: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        help,
        kind: ParamKind::Enum { values, default },
    }
}

pub(crate) const fn string(
    name: &'static str,
    help: &'static str,
    default: &'static str,
    max_len: usize,
) -> ParamSpec {
    ParamSpec {
        name,
        help,
        kind: ParamKind::Str { default, max_len },
    }
}

impl ParamSpec {
    fn default_value(&self) -> Value {
        match self.kind {
            ParamKind::Int { default, .. } => json!(default),
            ParamKind::Bool { default } => json!(default),
            ParamKind::Enum { default, .. } => json!(default),
            ParamKind::Str { default, .. } => json!(default),
        }
    }

    fn allowed(&self) -> String {
        match self.kind {
            ParamKind::Int { min, max, .. } => format!("an integer in {min}..={max}"),
            ParamKind::Bool { .. } => "true or false".into(),
            ParamKind::Enum { values, .. } => format!("one of {}", values.join(", ")),
            ParamKind::Str { max_len, .. } => {
                format!("a string of 1 to {max_len} printable characters without newlines")
            }
        }
    }

    fn check(&self, v: &Value) -> Result<Value, ChaosError> {
        let bad = || ChaosError::InvalidParam {
            field: self.name.to_string(),
            message: format!("got {v}; allowed: {}", self.allowed()),
        };
        match self.kind {
            ParamKind::Int { min, max, .. } => {
                let n = v.as_i64().ok_or_else(bad)?;
                if (min..=max).contains(&n) {
                    Ok(json!(n))
                } else {
                    Err(bad())
                }
            }
            ParamKind::Bool { .. } => v.as_bool().map(Value::Bool).ok_or_else(bad),
            ParamKind::Enum { values, .. } => {
                let s = v.as_str().ok_or_else(bad)?;
                if values.contains(&s) {
                    Ok(json!(s))
                } else {
                    Err(bad())
                }
            }
            ParamKind::Str { max_len, .. } => {
                let s = v.as_str().ok_or_else(bad)?;
                if s.is_empty() || s.len() > max_len || s.chars().any(|c| c.is_control()) {
                    Err(bad())
                } else {
                    Ok(json!(s))
                }
            }
        }
    }
}

/// Validate `given` against `specs`, returning every parameter with defaults filled in.
pub(crate) fn resolve(
    specs: &[ParamSpec],
    given: &Map<String, Value>,
) -> Result<Value, ChaosError> {
    if let Some(unknown) = given.keys().find(|k| !specs.iter().any(|s| s.name == *k)) {
        let allowed = if specs.is_empty() {
            "this fault takes no parameters".to_string()
        } else {
            format!(
                "allowed parameters: {}",
                specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        };
        return Err(ChaosError::InvalidParam {
            field: unknown.clone(),
            message: format!("unknown parameter; {allowed}"),
        });
    }
    let mut out = Map::new();
    for spec in specs {
        let value = match given.get(spec.name) {
            Some(v) => spec.check(v)?,
            None => spec.default_value(),
        };
        out.insert(spec.name.to_string(), value);
    }
    Ok(Value::Object(out))
}

pub(crate) fn defaults(specs: &[ParamSpec]) -> Value {
    Value::Object(
        specs
            .iter()
            .map(|s| (s.name.to_string(), s.default_value()))
            .collect(),
    )
}

pub(crate) fn schema(specs: &[ParamSpec]) -> Value {
    let mut props = Map::new();
    for s in specs {
        let p = match s.kind {
            ParamKind::Int { min, max, default } => json!({
                "type": "integer", "minimum": min, "maximum": max, "default": default,
                "description": s.help,
            }),
            ParamKind::Bool { default } => json!({
                "type": "boolean", "default": default, "description": s.help,
            }),
            ParamKind::Enum { values, default } => json!({
                "type": "string", "enum": values, "default": default, "description": s.help,
            }),
            ParamKind::Str { default, max_len } => json!({
                "type": "string", "minLength": 1, "maxLength": max_len, "default": default,
                "description": s.help,
            }),
        };
        props.insert(s.name.to_string(), p);
    }
    json!({
        "type": "object",
        "properties": props,
        "additionalProperties": false,
    })
}

/// Typed accessors on resolved parameters (validated, so present and well-typed).
pub(crate) trait Params {
    fn int(&self, name: &str) -> i64;
    fn flag(&self, name: &str) -> bool;
    fn text(&self, name: &str) -> String;
}

impl Params for Value {
    fn int(&self, name: &str) -> i64 {
        self.get(name).and_then(Value::as_i64).unwrap_or_default()
    }
    fn flag(&self, name: &str) -> bool {
        self.get(name).and_then(Value::as_bool).unwrap_or_default()
    }
    fn text(&self, name: &str) -> String {
        self.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        int("connections", "", 1, 90, 40),
        boolean("terminate_sessions", "", true),
        one_of("mode", "", &["error", "hang"], "error"),
    ];

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_are_filled_and_values_checked() {
        let p = resolve(SPECS, &map(json!({"connections": 5}))).unwrap();
        assert_eq!(p.int("connections"), 5);
        assert!(p.flag("terminate_sessions"));
        assert_eq!(p.text("mode"), "error");
    }

    #[test]
    fn errors_name_the_field_and_what_is_allowed() {
        let e = resolve(SPECS, &map(json!({"connections": 91}))).unwrap_err();
        assert!(
            matches!(&e, ChaosError::InvalidParam { field, message } if field == "connections" && message.contains("1..=90")),
            "{e}"
        );
        let e = resolve(SPECS, &map(json!({"conections": 1}))).unwrap_err();
        assert!(
            matches!(&e, ChaosError::InvalidParam { field, message } if field == "conections" && message.contains("connections, terminate_sessions, mode")),
            "{e}"
        );
        let e = resolve(SPECS, &map(json!({"mode": "slow"}))).unwrap_err();
        assert!(e.to_string().contains("error, hang"), "{e}");
        let e = resolve(SPECS, &map(json!({"connections": "5"}))).unwrap_err();
        assert!(e.to_string().contains("integer"), "{e}");
    }

    #[test]
    fn schema_lists_every_parameter() {
        let s = schema(SPECS);
        assert_eq!(s["properties"]["connections"]["maximum"], 90);
        assert_eq!(s["additionalProperties"], false);
    }
}
