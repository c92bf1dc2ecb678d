//! The validator: one final `verify_recovery`, whatever the executor believed.
//!
//! Responsible for: the pass/fail verdict and its figures. Not responsible for acting.

use serde_json::{Value, json};

use crate::mcp::{self, Client};

/// The final steady-state check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Validation {
    pub passed: bool,
    /// The `verification.checks` of `verify_recovery` (name, passed, observed, expected).
    pub checks: Value,
    pub message: String,
}

pub async fn validate(client: &Client) -> Validation {
    match mcp::call(client, "verify_recovery", &json!({})).await {
        Ok(answer) => Validation {
            passed: answer.structured["verification"]["passed"] == Value::Bool(true),
            checks: answer.structured["verification"]["checks"].clone(),
            message: answer.structured["message"]
                .as_str()
                .map(String::from)
                .unwrap_or(answer.text),
        },
        Err(error) => Validation {
            passed: false,
            checks: Value::Null,
            message: error.to_string(),
        },
    }
}
