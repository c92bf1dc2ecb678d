//! Parameter specs of the actions: validation (unknown keys, types, ranges) and the JSON
//! schema generated from the same spec, so the MCP tool schema and the checks agree.

use serde_json::{Map, Value, json};

use crate::RemediationError;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Int { min: i64, max: i64 },
    Num { min: f64, max: f64 },
    Bool,
    Str { max_len: usize },
    Enum(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ParamSpec {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// JSON text of the default, when optional and defaulted.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub(crate) const fn p(
    name: &'static str,
    ty: Ty,
    required: bool,
    default: Option<&'static str>,
    help: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        ty,
        required,
        default,
        help,
    }
}

pub(crate) fn schema(specs: &[ParamSpec]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for s in specs {
        let mut o = match s.ty {
            Ty::Int { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
            Ty::Num { min, max } => json!({"type": "number", "minimum": min, "maximum": max}),
            Ty::Bool => json!({"type": "boolean"}),
            Ty::Str { max_len } => json!({"type": "string", "minLength": 1, "maxLength": max_len}),
            Ty::Enum(values) => json!({"type": "string", "enum": values}),
        };
        o["description"] = Value::String(s.help.to_string());
        if let Some(d) = s.default {
            o["default"] = serde_json::from_str(d).unwrap_or(Value::Null);
        }
        props.insert(s.name.to_string(), o);
        if s.required {
            required.push(s.name);
        }
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// Check `given` against `specs`; returns the params with defaults filled in.
pub(crate) fn validate(
    specs: &[ParamSpec],
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, RemediationError> {
    let allowed = || {
        if specs.is_empty() {
            "this action takes no parameters".to_string()
        } else {
            format!(
                "allowed parameters: {}",
                specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        }
    };
    for k in given.keys() {
        if !specs.iter().any(|s| s.name == k) {
            return Err(RemediationError::InvalidParam {
                field: k.clone(),
                message: format!("unknown parameter; {}", allowed()),
            });
        }
    }
    let mut out = Map::new();
    for s in specs {
        let v = match given.get(s.name) {
            Some(Value::Null) | None => {
                if s.required {
                    return Err(RemediationError::InvalidParam {
                        field: s.name.into(),
                        message: format!("required ({})", s.help),
                    });
                }
                match s.default {
                    Some(d) => serde_json::from_str(d).unwrap_or(Value::Null),
                    None => continue,
                }
            }
            Some(v) => v.clone(),
        };
        let bad = |m: String| RemediationError::InvalidParam {
            field: s.name.into(),
            message: m,
        };
        match s.ty {
            Ty::Int { min, max } => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| bad(format!("must be an integer; allowed {min}..={max}")))?;
                if n < min || n > max {
                    return Err(bad(format!("{n} is out of range; allowed {min}..={max}")));
                }
            }
            Ty::Num { min, max } => {
                let n = v
                    .as_f64()
                    .ok_or_else(|| bad(format!("must be a number; allowed {min}..={max}")))?;
                if n < min || n > max {
                    return Err(bad(format!("{n} is out of range; allowed {min}..={max}")));
                }
            }
            Ty::Bool => {
                if !v.is_boolean() {
                    return Err(bad("must be true or false".into()));
                }
            }
            Ty::Str { max_len } => {
                let t = v.as_str().ok_or_else(|| bad("must be a string".into()))?;
                if t.is_empty() || t.len() > max_len {
                    return Err(bad(format!("length must be 1..={max_len}")));
                }
            }
            Ty::Enum(values) => {
                let t = v.as_str().unwrap_or_default();
                if !values.contains(&t) {
                    return Err(bad(format!(
                        "`{}` is not allowed; allowed: {}",
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                        values.join(", ")
                    )));
                }
            }
        }
        out.insert(s.name.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        p("service", Ty::Enum(&["a", "b"]), true, None, "which"),
        p("n", Ty::Int { min: 1, max: 5 }, false, Some("2"), "count"),
    ];

    #[test]
    fn validates_and_fills_defaults() {
        let ok = validate(SPECS, json!({"service": "a"}).as_object().unwrap()).unwrap();
        assert_eq!(ok["n"], 2);
        for bad in [
            json!({}),
            json!({"service": "c"}),
            json!({"service": "a", "n": 9}),
            json!({"service": "a", "x": 1}),
        ] {
            assert!(validate(SPECS, bad.as_object().unwrap()).is_err(), "{bad}");
        }
        let s = schema(SPECS);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"][0], "service");
    }
}
