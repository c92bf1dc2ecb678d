//! Error codes and the HTTP error response.
//!
//! Every failure a client or an operator can see carries one stable [`ErrorCode`]: it is
//! the `code` field of the JSON body, of the log line and the label of
//! `app_errors_total`. Database errors are classified here, once, from the SQLSTATE or
//! the sqlx error kind. 5xx bodies say little; the detail goes to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The stable error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    DbPoolTimeout,
    DbAuthFailed,
    DbUnavailable,
    DbSchemaMismatch,
    DbTimeout,
    DbError,
    UpstreamUnavailable,
    CacheCorrupt,
    AuthInvalidToken,
    Forbidden,
    RateLimited,
    InjectedFailure,
    NotFound,
    BadRequest,
    OutOfStock,
    ConfigInvalid,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::DbPoolTimeout => "DB_POOL_TIMEOUT",
            ErrorCode::DbAuthFailed => "DB_AUTH_FAILED",
            ErrorCode::DbUnavailable => "DB_UNAVAILABLE",
            ErrorCode::DbSchemaMismatch => "DB_SCHEMA_MISMATCH",
            ErrorCode::DbTimeout => "DB_TIMEOUT",
            ErrorCode::DbError => "DB_ERROR",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::CacheCorrupt => "CACHE_CORRUPT",
            ErrorCode::AuthInvalidToken => "AUTH_INVALID_TOKEN",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InjectedFailure => "INJECTED_FAILURE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::OutOfStock => "OUT_OF_STOCK",
            ErrorCode::ConfigInvalid => "CONFIG_INVALID",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::DbPoolTimeout
            | ErrorCode::DbAuthFailed
            | ErrorCode::DbUnavailable
            | ErrorCode::DbTimeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DbSchemaMismatch
            | ErrorCode::DbError
            | ErrorCode::CacheCorrupt
            | ErrorCode::InjectedFailure
            | ErrorCode::ConfigInvalid
            | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::AuthInvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::OutOfStock => StatusCode::CONFLICT,
        }
    }

    /// What a client is told for a 5xx; the detail stays in the log.
    fn public_message(self) -> &'static str {
        match self {
            ErrorCode::DbPoolTimeout => "the service is overloaded, try again later",
            ErrorCode::DbAuthFailed | ErrorCode::DbUnavailable => "the database is unavailable",
            ErrorCode::DbSchemaMismatch => "the database schema does not match this version",
            ErrorCode::DbTimeout => "the database did not answer in time",
            ErrorCode::UpstreamUnavailable => "the pricing service is unavailable",
            ErrorCode::CacheCorrupt => "a cache entry is corrupt",
            ErrorCode::InjectedFailure => "internal error",
            _ => "internal error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a sqlx error into a stable code.
pub fn classify_sqlx(error: &sqlx::Error) -> ErrorCode {
    match error {
        sqlx::Error::PoolTimedOut => ErrorCode::DbPoolTimeout,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01" | "28000") => ErrorCode::DbAuthFailed,
            Some("42703" | "42P01") => ErrorCode::DbSchemaMismatch,
            Some("57014" | "55P03") => ErrorCode::DbTimeout,
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
            // database does not exist: the server is there but will not serve us.
            Some("57P01" | "57P02" | "57P03" | "53300" | "3D000") => ErrorCode::DbUnavailable,
            Some(code) if code.starts_with("08") => ErrorCode::DbUnavailable,
            _ => ErrorCode::DbError,
        },
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            ErrorCode::DbUnavailable
        }
        sqlx::Error::RowNotFound => ErrorCode::NotFound,
        _ => ErrorCode::DbError,
    }
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    /// Shown to the client for 4xx; for 5xx a generic message is shown instead.
    pub message: String,
    /// Logged, never shown.
    pub detail: Option<String>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        AppError::new(ErrorCode::NotFound, what)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::new(ErrorCode::BadRequest, message)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        let code = classify_sqlx(&error);
        AppError::new(code, code.public_message()).with_detail(error.to_string())
    }
}

/// Attached to error responses so the request middleware can log and count the code.
#[derive(Debug, Clone, Copy)]
pub struct ResponseErrorCode(pub ErrorCode);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let message = if status.is_server_error() {
            self.code.public_message().to_owned()
        } else {
            self.message.clone()
        };
        if status.is_server_error() {
            let error = self.detail.as_deref().unwrap_or(&self.message);
            tracing::error!(message = "Request failed.", code = %self.code, error = %error);
        } else if let Some(error) = &self.detail {
            tracing::warn!(message = "Request rejected.", code = %self.code, error = %error);
        }
        let body = serde_json::json!({
            "error": { "code": self.code.as_str(), "message": message }
        });
        let mut response = (status, Json(body)).into_response();
        response
            .extensions_mut()
            .insert(ResponseErrorCode(self.code));
        response
    }
}
