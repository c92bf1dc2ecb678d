//! Harness for the chaos tests: a real sandbox, an engine in the test process, and the
//! checks that the sandbox is back to its steady state with nothing left behind.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_chaos::{ChaosEngine, FaultRecord, InjectOutcome, InjectRequest};
use aiops_sandbox::StateDir;
use aiops_sandbox::control::DaemonRuntime;
use aiops_sandbox::events::EventLog;
use aiops_sandbox::topology::Topology;
use aiops_tests::Sandbox;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

pub struct Env {
    pub sb: Sandbox,
    pub state: StateDir,
    pub engine: ChaosEngine,
    pub http: reqwest::Client,
    pub url: String,
    pub topology: Topology,
    /// The `.env` as the sandbox wrote it.
    pub env_text: String,
}

impl Env {
    pub fn up() -> Self {
        let sb = Sandbox::new();
        sb.up();
        let state = StateDir::new(sb.home());
        let engine = Self::engine_for(&state);
        let topology = Topology::load(&state).unwrap().unwrap();
        Self {
            url: sb.target_url(),
            env_text: std::fs::read_to_string(state.env_file()).unwrap(),
            sb,
            state,
            engine,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            topology,
        }
    }

    /// A fresh engine on this sandbox (as a new daemon would build it).
    pub fn engine_for(state: &StateDir) -> ChaosEngine {
        ChaosEngine::new(
            state.clone(),
            Arc::new(DaemonRuntime::new(state.clone())),
            Arc::new(EventLog::open(&state.events_file())),
        )
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.sb.log_tails())
    }

    pub async fn readyz(&self) -> (u16, Value) {
        match self.http.get(format!("{}/readyz", self.url)).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or_default())
            }
            Err(e) => (0, json!(e.to_string())),
        }
    }

    /// Steady state: `/readyz` 200 within `limit`.
    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let (s, body) = self.readyz().await;
            if s == 200 {
                return;
            }
            if started.elapsed() > limit {
                self.fail(&format!("/readyz not 200 within {limit:?}: {s} {body}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET a target path: status and `error.code`.
    pub async fn get(&self, path: &str) -> (u16, Option<String>) {
        match self.http.get(format!("{}{path}", self.url)).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or_default();
                (s, body["error"]["code"].as_str().map(str::to_string))
            }
            Err(e) => (0, Some(e.to_string())),
        }
    }

    pub async fn admin(&self) -> PgConnection {
        let url = aiops_sandbox::prepare::admin_database_url(&self.state, &self.topology).unwrap();
        PgConnection::connect(&url).await.unwrap()
    }

    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.secret_file(name))
            .unwrap()
            .trim()
            .to_string()
    }

    pub async fn chaos_sessions(&self) -> i64 {
        let mut c = self.admin().await;
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('report-export', 'maintenance-reindex', 'billing-sync')",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    }

    pub async fn sessions_named(&self, app: &str) -> i64 {
        let mut c = self.admin().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    pub async fn target_failpoints(&self) -> Value {
        let port = self
            .topology
            .service("target-app")
            .unwrap()
            .admin_port
            .unwrap();
        let token = self.secret("target-admin-token");
        self.http
            .get(format!("http://127.0.0.1:{port}/admin/failpoints"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["active"]
            .clone()
    }

    pub async fn upstream_failpoints(&self) -> Value {
        let url = self
            .topology
            .service("upstream-primary")
            .unwrap()
            .url
            .clone()
            .unwrap();
        self.http
            .get(format!("{url}/admin/failpoints"))
            .bearer_auth(self.secret("upstream-admin-token"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["active"]
            .clone()
    }

    /// Nothing left behind: no chaos session, the app password works, the role has no
    /// connection limit, no backup table, no failpoint, the `.env` as written, no corrupt
    /// cache entry.
    pub async fn assert_clean(&self) {
        assert_eq!(self.chaos_sessions().await, 0, "chaos sessions left behind");
        let db = &self.topology.database;
        let app_url = format!(
            "postgres://{}:{}@{}:{}/{}",
            db.app_user,
            self.secret("pg-app-password"),
            db.host,
            db.port,
            db.database
        );
        let mut app = PgConnection::connect(&app_url)
            .await
            .unwrap_or_else(|e| self.fail(&format!("the app password no longer works: {e}")));
        let desc: String = sqlx::query_scalar("SELECT description FROM products WHERE id = 1")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(desc, "Seeded catalogue item number 1.");
        app.close().await.unwrap();
        let mut admin = self.admin().await;
        let limit: i32 =
            sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'shop_app'")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert_eq!(
            limit, -1,
            "the app role's connection limit was not restored"
        );
        let backup: bool = sqlx::query_scalar(
            "SELECT to_regclass('aiops_chaos_backup_products_description') IS NOT NULL",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(!backup, "the backup table was left behind");
        assert_eq!(self.target_failpoints().await, json!([]));
        assert_eq!(self.upstream_failpoints().await, json!([]));
        assert_eq!(
            std::fs::read_to_string(self.state.env_file()).unwrap(),
            self.env_text,
            ".env differs from the original"
        );
        for e in std::fs::read_dir(self.state.cache_dir()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("product-") {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    serde_json::from_slice::<Value>(&bytes).is_ok(),
                    "cache entry {name} is corrupt"
                );
            }
        }
        for r in self.engine.status().await.unwrap() {
            assert!(
                r.is_ended(),
                "fault still open: {}",
                serde_json::to_string(&r).unwrap()
            );
        }
    }

    pub async fn inject(&self, fault: &str, params: Value) -> InjectOutcome {
        let mut req = InjectRequest::new(fault);
        req.params = params.as_object().cloned().unwrap_or_default();
        let out = self
            .engine
            .inject(req)
            .await
            .unwrap_or_else(|e| self.fail(&format!("inject {fault}: {e}")));
        let effect = out.effect.clone().expect("an effect check");
        if !effect.verified {
            self.fail(&format!(
                "{fault}: effect not verified: {}",
                effect.observed
            ));
        }
        let record = out.record.clone().expect("a record");
        assert_eq!(record.state, "active");
        assert!(!out.plan.is_empty());
        // The ledger entry is on disk while the fault is active.
        let entry = self.ledger_entry(&record.id);
        assert_eq!(entry["record"]["state"], "active");
        assert_eq!(entry["history"][0]["state"], "injecting");
        eprintln!(
            "{fault}: {} (after {} ms)",
            effect.observed, effect.waited_ms
        );
        out
    }

    pub fn ledger_entry(&self, id: &str) -> Value {
        let path = self
            .state
            .root()
            .join("chaos/faults")
            .join(format!("{id}.json"));
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }

    /// Stop, then stop again (harmless), then wait for the steady state and check that
    /// nothing is left.
    pub async fn stop_and_check(&self, record: &FaultRecord) {
        let stopped = self
            .engine
            .stop(&record.id)
            .await
            .unwrap_or_else(|e| self.fail(&format!("stop {}: {e}", record.fault)));
        assert_eq!(stopped.state, "reverted", "{stopped:?}");
        assert_eq!(stopped.end_reason.as_deref(), Some("stopped"));
        let again = self.engine.stop(&record.id).await.unwrap();
        assert_eq!(again.state, "reverted");
        assert_eq!(
            again.ended_at, stopped.ended_at,
            "a second stop changed the record"
        );
        self.wait_ready(Duration::from_secs(30)).await;
        self.assert_clean().await;
    }

    pub async fn service(&self, name: &str) -> Value {
        self.sb.service(name)
    }

    pub fn log_has(&self, code: &str) -> bool {
        std::fs::read_to_string(self.state.logs_dir().join("target-app.log"))
            .unwrap_or_default()
            .contains(&format!("\"code\":\"{code}\""))
    }
}
