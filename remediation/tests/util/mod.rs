//! Harness for the remediation tests: a real sandbox, a `Remediator` and a chaos engine in
//! the test process (both through the daemon's control API), and small checks.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_chaos::ChaosEngine;
use aiops_remediation::{
    ActionOutcome, ActionRequest, Caller, RemediationError, Remediator, Status,
};
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
    pub rem: Remediator,
    pub engine: ChaosEngine,
    pub http: reqwest::Client,
    pub url: String,
    pub topology: Topology,
}

impl Env {
    /// A sandbox; `policy` (TOML) is written to `aiops.toml` first when given.
    pub fn up(policy: Option<&str>) -> Self {
        let sb = Sandbox::new();
        sb.up();
        let state = StateDir::new(sb.home());
        if let Some(p) = policy {
            std::fs::write(state.config_file(), p).unwrap();
        }
        let rem = Self::remediator(&state).unwrap();
        let engine = ChaosEngine::new(
            state.clone(),
            Arc::new(DaemonRuntime::new(state.clone())),
            Arc::new(EventLog::open(&state.events_file())),
        );
        Self {
            url: sb.target_url(),
            topology: Topology::load(&state).unwrap().unwrap(),
            sb,
            state,
            rem,
            engine,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
        }
    }

    pub fn remediator(state: &StateDir) -> Result<Remediator, RemediationError> {
        Remediator::new(
            state.clone(),
            Arc::new(DaemonRuntime::new(state.clone())),
            Arc::new(EventLog::open(&state.events_file())),
        )
    }

    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.sb.log_tails())
    }

    pub fn caller() -> Caller {
        Caller {
            client: "test".into(),
            session: Some("s1".into()),
        }
    }

    pub async fn try_run(
        &self,
        action: &str,
        params: Value,
        dry_run: bool,
    ) -> Result<ActionOutcome, RemediationError> {
        let mut req = ActionRequest::new(action, params);
        req.dry_run = dry_run;
        self.rem.run(req, Self::caller()).await
    }

    /// Run an action and require `want`.
    pub async fn run_expect(&self, action: &str, params: Value, want: Status) -> ActionOutcome {
        let out = self
            .try_run(action, params.clone(), false)
            .await
            .unwrap_or_else(|e| self.fail(&format!("{action} {params}: error {e}")));
        if out.status != want {
            self.fail(&format!(
                "{action} {params}: expected {want:?}, got {:?}: {}",
                out.status,
                serde_json::to_string_pretty(&out).unwrap()
            ));
        }
        out
    }

    /// Run and require executed with a passing verification.
    pub async fn run_ok(&self, action: &str, params: Value) -> ActionOutcome {
        let out = self.run_expect(action, params, Status::Executed).await;
        assert!(out.verification.as_ref().unwrap().passed);
        out
    }

    pub async fn dry(&self, action: &str, params: Value) -> ActionOutcome {
        let out = self
            .try_run(action, params.clone(), true)
            .await
            .unwrap_or_else(|e| self.fail(&format!("dry run {action} {params}: {e}")));
        assert_eq!(out.status, Status::Planned, "{action}");
        assert!(!out.plan.steps.is_empty(), "{action}: empty plan");
        out
    }

    /// `verify_recovery` over a short window.
    pub async fn recovery(&self) -> ActionOutcome {
        self.try_run("verify_recovery", json!({"window_s": 2}), false)
            .await
            .unwrap_or_else(|e| self.fail(&format!("verify_recovery: {e}")))
    }

    /// `verify_recovery` passes within a few attempts.
    pub async fn assert_recovers(&self, what: &str) {
        let mut last = None;
        for _ in 0..5 {
            let out = self.recovery().await;
            if out.status == Status::Executed {
                return;
            }
            last = Some(out);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.fail(&format!(
            "{what}: verify_recovery never passed: {}",
            serde_json::to_string_pretty(&last.unwrap().verification).unwrap()
        ));
    }

    pub async fn readyz(&self) -> u16 {
        match self.http.get(format!("{}/readyz", self.url)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    pub async fn wait_ready(&self, limit: Duration) {
        let started = Instant::now();
        while self.readyz().await != 200 {
            if started.elapsed() > limit {
                self.fail(&format!("/readyz not 200 within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

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

    /// A session as the app role, tagged `app`, left idle in an open transaction.
    pub async fn idle_in_tx_session(&self, app: &str) -> PgConnection {
        let db = &self.topology.database;
        let pw = self.secret("pg-app-password");
        let opts = sqlx::postgres::PgConnectOptions::new()
            .host(&db.host)
            .port(db.port)
            .username(&db.app_user)
            .password(&pw)
            .database(&db.database)
            .application_name(app);
        let mut c = PgConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql("BEGIN; SELECT 1")
            .execute(&mut c)
            .await
            .unwrap();
        c
    }

    pub async fn sessions_named(&self, app: &str) -> i64 {
        let mut c = self.admin().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(app)
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    pub fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.secret_file(name))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn env_text(&self) -> String {
        std::fs::read_to_string(self.state.env_file()).unwrap()
    }

    pub async fn service(&self, name: &str) -> Value {
        let rt = DaemonRuntime::new(self.state.clone());
        let s = aiops_sandbox::Runtime::service(&rt, name).await.unwrap();
        serde_json::to_value(s).unwrap()
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state.root().join("audit/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The `finished` audit line of an outcome.
    pub fn audit_of(&self, out: &ActionOutcome) -> Value {
        self.audit_lines()
            .into_iter()
            .find(|l| l["audit_id"] == out.audit_id.as_str() && l["event"] == "finished")
            .unwrap_or_else(|| self.fail(&format!("no finished audit line for {}", out.audit_id)))
    }
}
