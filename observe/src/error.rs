//! The one error type of the crate. Every public method returns it; the MCP server maps
//! [`ObserveError::InvalidArgument`] to `invalid_params` and the rest to tool errors a
//! model reads.

/// What went wrong while observing the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// Bad argument: says which field, what was wrong, what is allowed.
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: String, message: String },
    /// No sandbox running / daemon unreachable; the message says how to start one.
    #[error("{0}")]
    SandboxUnavailable(String),
    /// The sandbox's PostgreSQL cannot be reached (returned within ~3 s, never a hang).
    #[error("database unreachable: {0}")]
    DatabaseUnreachable(String),
    #[error("{0}")]
    Other(String),
}

impl ObserveError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<aiops_sandbox::Error> for ObserveError {
    fn from(e: aiops_sandbox::Error) -> Self {
        match e {
            aiops_sandbox::Error::NotRunning(_) => Self::SandboxUnavailable(e.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}
