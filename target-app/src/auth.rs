//! Bearer-token authentication for the write endpoints (HS256 JWT).
//!
//! [`mint_token`] is public so the load generator and tests can act as a logged-in user
//! without a login endpoint; the shop itself only verifies. Every rejection is counted in
//! `jwt_rejections_total` and answered 401 `AUTH_INVALID_TOKEN`, whatever the reason, so a
//! client cannot probe which part of its token was wrong.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::{AppError, ErrorCode};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

/// The token claims: `{sub, role, exp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: i64,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// A token could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot mint token: {0}")]
pub struct TokenError(#[from] jsonwebtoken::errors::Error);

/// Mints an HS256 token for `user_id` with `role`, valid for `ttl` from now.
pub fn mint_token(
    secret: &str,
    user_id: i64,
    role: Role,
    ttl: Duration,
) -> Result<String, TokenError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let claims = Claims {
        sub: user_id,
        role,
        exp: (now + ttl).as_secs(),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Verifies signature, algorithm and expiry (5 s leeway for clock skew).
pub fn verify_token(secret: &str, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    // `sub` is an integer here, which the library's string check would reject; serde
    // requires it anyway.
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
}

/// An authenticated caller; extracting it rejects the request with 401 otherwise.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let result = match header.and_then(|h| h.strip_prefix("Bearer ")) {
            None => Err("missing bearer token".to_owned()),
            Some(token) => verify_token(&state.config.jwt_secret, token.trim())
                .map_err(|e| format!("token rejected: {e}")),
        };
        match result {
            Ok(claims) => Ok(AuthUser(claims)),
            Err(reason) => {
                state.metrics.jwt_rejections.inc();
                Err(AppError::new(
                    ErrorCode::AuthInvalidToken,
                    "missing, invalid or expired token",
                )
                .with_detail(reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_token_verifies() {
        let token = mint_token(SECRET, 7, Role::Admin, Duration::from_secs(60)).unwrap();
        let claims = verify_token(SECRET, &token).unwrap();
        assert_eq!(claims.sub, 7);
        assert_eq!(claims.role, Role::Admin);
    }

    #[test]
    fn wrong_secret_and_expiry_are_rejected() {
        let token = mint_token(SECRET, 7, Role::Customer, Duration::from_secs(60)).unwrap();
        assert!(verify_token("another-secret-another-secret-xx", &token).is_err());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: 7,
                role: Role::Customer,
                exp: 1_000,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(verify_token(SECRET, &expired).is_err());
    }
}
