//! Embedded schema migrations and the comparison with what the database has applied.
//!
//! The SQL lives in `target-app/migrations` and is compiled into the binary, so a binary
//! always knows exactly which schema it expects. [`status`] compares that with
//! `_sqlx_migrations` and reports the three ways they drift apart: pending migrations,
//! checksum mismatches (a migration edited after it was applied) and versions the database
//! has but the code does not know ("database ahead of code", typically after a rollback).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{PgConnection, PgPool};

use crate::db::classify_pool_error;
use crate::error::ErrorCode;

/// The migrations compiled into this binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Serialize)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
    pub success: bool,
    /// False when the checksum differs from the embedded one, or the code does not know
    /// this version at all.
    pub checksum_ok: bool,
    /// False when the version is not embedded in this binary.
    pub known: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddedMigration {
    pub version: i64,
    pub description: String,
}

/// The answer of `GET /api/v1/migrations/status`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    pub applied: Vec<AppliedMigration>,
    pub embedded: Vec<EmbeddedMigration>,
    pub pending: Vec<EmbeddedMigration>,
    pub checksum_mismatch: Vec<i64>,
    /// Versions in the database that this binary does not know.
    pub db_ahead_of_code: Vec<i64>,
    pub failed: Vec<i64>,
    /// True when every embedded migration is applied successfully with a matching
    /// checksum and the database has nothing unknown.
    pub current: bool,
}

/// Applies pending migrations.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// The stable code for a migration failure on `pool`.
pub fn classify_migrate_error(pool: &PgPool, error: &MigrateError) -> ErrorCode {
    match error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            classify_pool_error(pool, e)
        }
        MigrateError::VersionMissing(_)
        | MigrateError::VersionMismatch(_)
        | MigrateError::VersionNotPresent(_)
        | MigrateError::VersionTooOld(_, _)
        | MigrateError::VersionTooNew(_, _)
        | MigrateError::Dirty(_) => ErrorCode::DbSchemaMismatch,
        _ => ErrorCode::DbError,
    }
}

/// Compares the embedded migrations with `_sqlx_migrations`.
pub async fn status(conn: &mut PgConnection) -> Result<MigrationStatus, sqlx::Error> {
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations')::text")
            .fetch_one(&mut *conn)
            .await?;
    let rows: Vec<(i64, String, bool, Vec<u8>)> = if table.is_some() {
        sqlx::query_as(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    Ok(compare(&rows))
}

fn compare(rows: &[(i64, String, bool, Vec<u8>)]) -> MigrationStatus {
    let embedded: BTreeMap<i64, &sqlx::migrate::Migration> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (m.version, m))
        .collect();

    let mut applied = Vec::new();
    let mut checksum_mismatch = Vec::new();
    let mut db_ahead_of_code = Vec::new();
    let mut failed = Vec::new();
    for (version, description, success, checksum) in rows {
        let known = embedded.get(version);
        let checksum_ok = known.is_some_and(|m| m.checksum.as_ref() == checksum.as_slice());
        if known.is_none() {
            db_ahead_of_code.push(*version);
        } else if !checksum_ok {
            checksum_mismatch.push(*version);
        }
        if !success {
            failed.push(*version);
        }
        applied.push(AppliedMigration {
            version: *version,
            description: description.clone(),
            success: *success,
            checksum_ok,
            known: known.is_some(),
        });
    }
    let to_embedded = |m: &&sqlx::migrate::Migration| EmbeddedMigration {
        version: m.version,
        description: m.description.to_string(),
    };
    let pending: Vec<EmbeddedMigration> = embedded
        .values()
        .filter(|m| !rows.iter().any(|(v, ..)| *v == m.version))
        .map(to_embedded)
        .collect();
    let current = pending.is_empty()
        && checksum_mismatch.is_empty()
        && db_ahead_of_code.is_empty()
        && failed.is_empty();
    MigrationStatus {
        applied,
        embedded: embedded.values().map(to_embedded).collect(),
        pending,
        checksum_mismatch,
        db_ahead_of_code,
        failed,
        current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied_rows() -> Vec<(i64, String, bool, Vec<u8>)> {
        MIGRATOR
            .iter()
            .map(|m| {
                (
                    m.version,
                    m.description.to_string(),
                    true,
                    m.checksum.to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn fresh_database_has_everything_pending() {
        let s = compare(&[]);
        assert!(!s.current);
        assert_eq!(s.pending.len(), MIGRATOR.iter().count());
    }

    #[test]
    fn fully_applied_is_current() {
        let s = compare(&applied_rows());
        assert!(s.current, "{s:?}");
        assert!(s.pending.is_empty());
    }

    #[test]
    fn drift_is_detected() {
        let mut rows = applied_rows();
        rows[0].3 = vec![0; 48];
        rows.push((99_999_999, "from the future".into(), true, vec![1; 48]));
        let s = compare(&rows);
        assert!(!s.current);
        assert_eq!(s.checksum_mismatch, vec![rows[0].0]);
        assert_eq!(s.db_ahead_of_code, vec![99_999_999]);
        assert!(!s.applied.last().unwrap().known);
    }
}
