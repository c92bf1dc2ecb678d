//! The one error shape of the REST API and the mapping from each library's errors.
//!
//! Bad input is 400 (404 for an unknown name in the path) and names the field; a
//! sandbox that is not running or a database that does not answer is 503; anything else
//! is 500 with a short message, the detail going to the daemon's log.

use aiops_chaos::ChaosError;
use aiops_observe::ObserveError;
use aiops_remediation::RemediationError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// `{"error": {...}}`, the body of every error answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_param`, `unknown_query_param`, `unknown_fault`,
    /// `chaos_disabled`, `unauthorized`, `sandbox_unavailable`.
    pub code: String,
    /// What was wrong and what is allowed.
    pub message: String,
    /// The offending field (body key, query key or path segment), for bad input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The valid names, for an unknown fault, action or attack kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code: code.into(),
                message: message.into(),
                field: None,
                known: None,
            },
        }
    }

    /// 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_param", message);
        e.detail.field = Some(field.into());
        e
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.detail.code = code.into();
        self
    }

    pub fn with_known(mut self, known: Vec<String>) -> Self {
        self.detail.known = Some(known);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.detail.field = Some(field.into());
        self
    }

    /// A 500 whose detail goes to the log only.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(message = "REST request failed.", context, %error);
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed; the daemon log has the detail"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.detail })).into_response()
    }
}

impl From<ObserveError> for ApiError {
    fn from(e: ObserveError) -> Self {
        let msg = e.to_string();
        match e {
            ObserveError::InvalidArgument { field, .. } => ApiError::invalid(field, msg),
            ObserveError::SandboxUnavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sandbox_unavailable", msg)
            }
            ObserveError::DatabaseUnreachable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database_unreachable", msg)
            }
            other => ApiError::internal("observation", other),
        }
    }
}

impl From<ChaosError> for ApiError {
    fn from(e: ChaosError) -> Self {
        let msg = e.to_string();
        match e {
            ChaosError::UnknownFault { known, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_fault", msg)
                    .with_field("fault")
                    .with_known(known)
            }
            ChaosError::InvalidParam { field, .. } => ApiError::invalid(field, msg),
            ChaosError::UnknownId(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_id", msg).with_field("id")
            }
            ChaosError::NotActive(_) => ApiError::new(StatusCode::CONFLICT, "not_active", msg),
            // The engine's own words: what failed to inject or revert (no secrets; the
            // control API returns the same).
            ChaosError::Inject(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inject_failed", msg)
            }
            ChaosError::Revert(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "revert_failed", msg)
            }
            other => ApiError::internal("chaos", other),
        }
    }
}

impl From<RemediationError> for ApiError {
    fn from(e: RemediationError) -> Self {
        let msg = e.to_string();
        match e {
            RemediationError::UnknownAction { known, .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_action", msg)
                    .with_field("action")
                    .with_known(known)
            }
            RemediationError::InvalidParam { field, .. } => ApiError::invalid(field, msg),
            RemediationError::OutsideSandbox(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "outside_sandbox", msg)
            }
            RemediationError::UnknownApproval(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_approval", msg).with_field("id")
            }
            RemediationError::Audit(_) => ApiError::internal("the audit log", msg),
            other => ApiError::new(StatusCode::CONFLICT, "remediation", other.to_string()),
        }
    }
}

/// What every handler returns.
pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// A deserialisation error as a 400 naming the field: the path serde was at, or, for a
/// missing or unknown field (reported at the root), the name serde quotes in backticks.
pub fn from_path_error<E: std::fmt::Display>(
    what: &str,
    e: serde_path_to_error::Error<E>,
) -> ApiError {
    let path = e.path().to_string();
    let field = if path == "." {
        e.inner()
            .to_string()
            .split('`')
            .nth(1)
            .unwrap_or("body")
            .to_string()
    } else {
        path
    };
    ApiError::invalid(field, format!("invalid {what}: {}", e.inner()))
}
