//! Typed errors of the sandbox crate.

use std::path::PathBuf;

/// What went wrong while preparing, running or controlling the sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown service `{name}`; known services: {known}")]
    UnknownService { name: String, known: String },
    #[error("PostgreSQL binaries not found: {0}")]
    PostgresNotFound(String),
    #[error("command `{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the sandbox is not running ({0}); start it with `aiops up`")]
    NotRunning(String),
    #[error("control API error: {0}")]
    Control(String),
    #[error("invalid state file {path}: {detail}")]
    InvalidState { path: PathBuf, detail: String },
    /// Bad input from a caller (an agent's diagnosis or report): names the field.
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a path to an `io::Error`, so messages say which file failed.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
