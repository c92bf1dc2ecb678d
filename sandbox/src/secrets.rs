//! Generated secrets: the PostgreSQL admin and app passwords, the JWT secret, the admin
//! token of the target and the HTTP token of `aiops`.
//!
//! Each lives in its own 0600 file under `secrets/`; it is generated once and then read.
//! Nothing here ever logs a secret's value.

use crate::error::{IoContext, Result};
use crate::paths::{StateDir, write_atomic};

/// A random secret of `bytes` bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Read the secret `name`, generating it on first use.
pub fn get_or_create(state: &StateDir, name: &str, bytes: usize) -> Result<String> {
    let path = state.secret_file(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => create(state, name, bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(state, name, bytes),
        Err(e) => Err(e).at(&path),
    }
}

fn create(state: &StateDir, name: &str, bytes: usize) -> Result<String> {
    let value = random_hex(bytes);
    write_atomic(&state.secret_file(name), value.as_bytes(), 0o600)?;
    Ok(value)
}

/// Overwrite the secret `name` (used when credentials are rotated).
pub fn store(state: &StateDir, name: &str, value: &str) -> Result<()> {
    write_atomic(&state.secret_file(name), value.as_bytes(), 0o600)
}

/// Secret names, written once so callers cannot misspell them.
pub mod names {
    pub const PG_ADMIN_PASSWORD: &str = "pg-admin-password";
    pub const PG_APP_PASSWORD: &str = "pg-app-password";
    pub const JWT_SECRET: &str = "jwt-secret";
    pub const TARGET_ADMIN_TOKEN: &str = "target-admin-token";
    pub const UPSTREAM_ADMIN_TOKEN: &str = "upstream-admin-token";
    pub const HTTP_TOKEN: &str = "http-token";
    /// Opens only the exam MCP surface (`/exam/mcp`): what a drill gives an agent under
    /// test, so it cannot reach the chaos or control APIs.
    pub const EXAM_TOKEN: &str = "exam-token";
}
