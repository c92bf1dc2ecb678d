//! The sandbox's private PostgreSQL cluster.
//!
//! Responsible for finding the server binaries (PATH, then `/usr/lib/postgresql/*/bin`),
//! `initdb` of a cluster inside the state dir, the command line that runs it on its own
//! loopback port, and creating the app role and database. PostgreSQL refuses to run as
//! root, so when we are root the cluster belongs to, and runs as, the `postgres` user (or
//! `nobody` when there is none).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::error::{Error, IoContext, Result};
use crate::paths::{StateDir, write_atomic};

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct PgBins {
    pub initdb: PathBuf,
    pub postgres: PathBuf,
}

impl PgBins {
    pub fn discover() -> Result<Self> {
        if let (Some(initdb), Some(postgres)) = (which("initdb"), which("postgres")) {
            return Ok(Self { initdb, postgres });
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        versions.sort_by_key(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        });
        for dir in versions.iter().rev() {
            let bin = dir.join("bin");
            if bin.join("initdb").is_file() && bin.join("postgres").is_file() {
                return Ok(Self {
                    initdb: bin.join("initdb"),
                    postgres: bin.join("postgres"),
                });
            }
        }
        Err(Error::PostgresNotFound(
            "no `initdb`/`postgres` on PATH nor under /usr/lib/postgresql/*/bin; \
             install PostgreSQL server binaries (Debian: apt-get install postgresql)"
                .into(),
        ))
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The unprivileged user that owns and runs the cluster, when we are root.
#[derive(Debug, Clone, Copy)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `None` when not root: the cluster runs as the current user.
    pub fn for_postgres() -> Result<Option<Self>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = nix::unistd::User::from_name(name) {
                return Ok(Some(Self {
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                }));
            }
        }
        Err(Error::Other(
            "running as root, and neither a `postgres` nor a `nobody` user exists to run \
             PostgreSQL (it refuses to run as root)"
                .into(),
        ))
    }

    pub fn apply(self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        cmd.uid(self.uid).gid(self.gid);
    }

    pub fn chown(self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).at(path)
    }
}

/// The cluster in `state/pgdata`.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub bins: PgBins,
    pub data_dir: PathBuf,
    pub port: u16,
    pub run_as: Option<RunAs>,
    pub admin_user: String,
}

impl Cluster {
    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").is_file()
    }

    /// `initdb` with scram-sha-256 on every connection and the admin password from the
    /// secrets dir. Does nothing when the cluster exists.
    pub fn init(&self, state: &StateDir, admin_password: &str) -> Result<bool> {
        if self.is_initialized() {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.data_dir).at(&self.data_dir)?;
        crate::paths::set_mode(&self.data_dir, 0o700)?;
        if self.run_as.is_some() {
            check_traversable(&self.data_dir)?;
        }
        // initdb reads the password from a file the cluster's owner can read.
        let pwfile = state.run_dir().join("initdb-pw");
        write_atomic(&pwfile, admin_password.as_bytes(), 0o600)?;
        if let Some(run_as) = self.run_as {
            run_as.chown(&self.data_dir)?;
            run_as.chown(&pwfile)?;
        }
        let mut cmd = Command::new(&self.bins.initdb);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-U")
            .arg(&self.admin_user)
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            // initdb's own temporary server must not try sockets in /var/run.
            .env_remove("PGHOST");
        if let Some(run_as) = self.run_as {
            run_as.apply(&mut cmd);
        }
        let out = cmd.output();
        let _ = std::fs::remove_file(&pwfile);
        let out = out.map_err(|e| Error::Command {
            command: format!(
                "{} -D {}",
                self.bins.initdb.display(),
                self.data_dir.display()
            ),
            detail: e.to_string(),
        })?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("initdb -D {}", self.data_dir.display()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(true)
    }

    /// The server's command line: loopback TCP only, no Unix socket, logs to stderr.
    pub fn server_command(&self) -> (PathBuf, Vec<String>) {
        let args = vec![
            "-D".to_string(),
            self.data_dir.display().to_string(),
            "-p".to_string(),
            self.port.to_string(),
            "-c".to_string(),
            "listen_addresses=127.0.0.1".to_string(),
            "-c".to_string(),
            "unix_socket_directories=".to_string(),
            "-c".to_string(),
            "max_connections=100".to_string(),
            "-c".to_string(),
            "logging_collector=off".to_string(),
            "-c".to_string(),
            "log_line_prefix=%m [%p] %q%u@%d ".to_string(),
            "-c".to_string(),
            "fsync=on".to_string(),
        ];
        (self.bins.postgres.clone(), args)
    }

    pub fn connect_options(&self, user: &str, password: &str, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(user)
            .password(password)
            .database(db)
            .application_name("aiops")
    }
}

/// PostgreSQL runs as another user: every parent of its data dir must let others
/// through (x bit), or initdb fails with an obscure "permission denied".
fn check_traversable(data_dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for dir in data_dir.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o001 == 0
        {
            return Err(Error::Other(format!(
                "PostgreSQL runs as an unprivileged user and cannot reach {}: {} is not \
                 traversable by others; run `chmod o+x {}` or put the state dir elsewhere \
                 (AIOPS_HOME=/tmp/aiops, for example)",
                data_dir.display(),
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Connect as the admin, with a bounded wait.
pub async fn admin_connect(
    cluster: &Cluster,
    admin_password: &str,
    timeout: Duration,
) -> Result<PgConnection> {
    let opts = cluster.connect_options(&cluster.admin_user, admin_password, "postgres");
    match tokio::time::timeout(timeout, PgConnection::connect_with(&opts)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(Error::Other(format!(
            "PostgreSQL on 127.0.0.1:{} did not accept a connection within {timeout:?}",
            cluster.port
        ))),
    }
}

/// Create the app role and database when missing. The role's password is set only at
/// creation: a later mismatch is a fault to diagnose, not something to paper over here.
pub async fn ensure_app_database(
    conn: &mut PgConnection,
    app_user: &str,
    app_password: &str,
    database: &str,
) -> Result<()> {
    check_identifier(app_user)?;
    check_identifier(database)?;
    let role_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(app_user)
            .fetch_one(&mut *conn)
            .await?;
    if !role_exists {
        // DDL takes no bind parameters; the identifier was checked and the literal quoted.
        sqlx::query(&format!(
            "CREATE ROLE {app_user} LOGIN PASSWORD {}",
            quote_literal(app_password)
        ))
        .execute(&mut *conn)
        .await?;
    }
    let db_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut *conn)
            .await?;
    if !db_exists {
        sqlx::query(&format!("CREATE DATABASE {database} OWNER {app_user}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Only plain lower-case identifiers are used for roles and databases we create.
pub fn check_identifier(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "invalid SQL identifier `{name}`: use lower-case letters, digits and _"
        )))
    }
}

/// A SQL string literal: single quotes doubled.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untraversable_parent_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let private = tmp.path().join("private");
        let data = private.join("state/pgdata");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_traversable(&data).unwrap_err().to_string();
        assert!(err.contains(&private.display().to_string()), "{err}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            private.join("state"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Ancestors above the temp dir (/tmp, /) are traversable on any sane machine.
        assert!(check_traversable(&data).is_ok());
    }

    #[test]
    fn identifiers_and_literals() {
        assert!(check_identifier("shop_app").is_ok());
        assert!(check_identifier("Shop").is_err());
        assert!(check_identifier("a;drop").is_err());
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
