//! Integration tests at the HTTP boundary, against a real PostgreSQL.
//!
//! Every test gets its own database (`t_<random>`), created through [`admin_database_url`]
//! and dropped when the test ends, pass or fail, so the tests run in parallel. Routers are
//! driven with `tower::ServiceExt::oneshot`; one test goes through a real socket and one
//! runs the real binary.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use target_app::failpoints::Failpoints;
use target_app::{AppState, Config, Role, admin_app, app, migrations, mint_token, worker};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123";
const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789abcdef";
const UPSTREAM_TOKEN: &str = "upstream-admin-token-0123";

/// The superuser URL tests use to create and drop their databases.
fn admin_database_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_PG_ADMIN_URL is not set: these tests need a PostgreSQL superuser URL, \
             e.g. TEST_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres"
        )
    })
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// A private database, dropped on drop (also when the test panics).
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> TestDb {
        let admin = admin_database_url();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to TEST_PG_ADMIN_URL: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        TestDb {
            url: with_database(&admin, &name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a separate
        // thread with its own runtime does the async cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_database_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// An upstream router served on an ephemeral port.
struct UpstreamInstance {
    addr: SocketAddr,
    failpoints: Failpoints,
}

async fn spawn_upstream(name: &str) -> UpstreamInstance {
    let failpoints = target_app::upstream::server::failpoints();
    let router = target_app::upstream::server::router(
        name,
        failpoints.clone(),
        Some(UPSTREAM_TOKEN.to_owned()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    UpstreamInstance { addr, failpoints }
}

/// One app wired to a fresh database, two live upstreams and temporary directories.
struct Harness {
    state: AppState,
    app: Router,
    primary: UpstreamInstance,
    #[allow(dead_code)]
    fallback: UpstreamInstance,
    cache_dir: tempfile::TempDir,
    _log_dir: tempfile::TempDir,
    // Declared last: dropped after the pool above has been released.
    _db: TestDb,
}

fn env_text(
    db_url: &str,
    cache: &str,
    logs: &str,
    primary: &str,
    fallback: &str,
    extra: &str,
) -> String {
    format!(
        "DATABASE_URL={db_url}\n\
         LISTEN_ADDR=127.0.0.1:0\n\
         ADMIN_LISTEN_ADDR=127.0.0.1:0\n\
         ADMIN_TOKEN={ADMIN_TOKEN}\n\
         JWT_SECRET={JWT_SECRET}\n\
         CACHE_DIR={cache}\n\
         LOG_DIR={logs}\n\
         UPSTREAM_PRIMARY_URL={primary}\n\
         UPSTREAM_FALLBACK_URL={fallback}\n\
         UPSTREAM_TIMEOUT_MS=2000\n\
         {extra}\n"
    )
}

async fn harness(extra: &str) -> Harness {
    let db = TestDb::create().await;
    harness_on(db, extra).await
}

async fn harness_on(db: TestDb, extra: &str) -> Harness {
    let cache_dir = tempfile::tempdir().unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    let primary = spawn_upstream("primary").await;
    let fallback = spawn_upstream("fallback").await;
    let text = env_text(
        &db.url,
        cache_dir.path().to_str().unwrap(),
        log_dir.path().to_str().unwrap(),
        &format!("http://{}", primary.addr),
        &format!("http://{}", fallback.addr),
        extra,
    );
    let config = Config::from_env_text(&text).expect("test config is valid");
    let state = AppState::new(config).expect("state");
    migrations::run(state.db.pool())
        .await
        .expect("migrations apply on a fresh database");
    Harness {
        app: app(state.clone()),
        state,
        primary,
        fallback,
        cache_dir,
        _log_dir: log_dir,
        _db: db,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = match body {
        Some(body) => req
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(router: &Router, uri: &str) -> Reply {
    call(router, Method::GET, uri, None, None).await
}

/// The value of one sample line of the Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn metrics(h: &Harness) -> String {
    get(&h.app, "/metrics").await.text
}

fn token(user_id: i64, role: Role) -> String {
    mint_token(JWT_SECRET, user_id, role, Duration::from_secs(300)).unwrap()
}

#[tokio::test]
async fn health_endpoints_report_their_json_shapes() {
    let h = harness("").await;

    let live = get(&h.app, "/healthz").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json(), json!({"status": "ok"}));
    assert!(live.headers.contains_key("x-request-id"));

    let ready = get(&h.app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(
        ready.json(),
        json!({"ready": true, "checks": {"db": "ok", "migrations": "ok", "upstream": "ok"}})
    );

    let health = get(&h.app, "/api/v1/health").await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["db"]["status"], "ok");
    assert!(body["db"]["latency_ms"].is_u64());
    assert_eq!(body["upstream"]["status"], "ok");
    assert_eq!(body["upstream"]["mode"], "primary");
    assert_eq!(body["upstream"]["url_name"], "primary");
    assert!(body["latency_ms"].is_u64());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_s"].is_u64());

    let pool = get(&h.app, "/api/v1/pool/status").await.json();
    for key in [
        "size",
        "max_size",
        "idle",
        "in_use",
        "acquire_waits",
        "acquire_timeouts",
        "utilization_percent",
        "health",
    ] {
        assert!(pool.get(key).is_some(), "pool status lacks {key}: {pool}");
    }
    assert_eq!(pool["max_size"], 10);
    assert_eq!(pool["health"], "healthy");
}

#[tokio::test]
async fn health_is_unhealthy_and_not_ready_when_upstream_and_db_are_down() {
    let cache = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let text = env_text(
        "postgres://app:secret@127.0.0.1:1/shop",
        cache.path().to_str().unwrap(),
        logs.path().to_str().unwrap(),
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "POOL_ACQUIRE_TIMEOUT_MS=200",
    );
    let state = AppState::new(Config::from_env_text(&text).unwrap()).unwrap();
    let router = app(state);
    let health = get(&router, "/api/v1/health").await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        health.text
    );
    let body = health.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["db"]["error_code"], "DB_UNAVAILABLE");
    assert_eq!(body["upstream"]["status"], "down");
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    let products = get(&router, "/api/v1/products").await;
    assert_eq!(products.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(products.error_code(), "DB_UNAVAILABLE");
    // The client is not told anything about the database's address or credentials.
    assert!(!products.text.contains("127.0.0.1"), "{}", products.text);
}

#[tokio::test]
async fn migrations_are_current_and_drift_is_detected() {
    let h = harness("").await;
    let status = get(&h.app, "/api/v1/migrations/status").await;
    assert_eq!(status.status, StatusCode::OK);
    let body = status.json();
    assert_eq!(body["current"], true, "{body}");
    assert_eq!(body["pending"], json!([]));
    let embedded = body["embedded"].as_array().unwrap().len();
    assert!(embedded >= 2);
    assert_eq!(body["applied"].as_array().unwrap().len(), embedded);
    assert_eq!(body["applied"][0]["success"], true);
    assert_eq!(body["applied"][0]["checksum_ok"], true);

    // A version the code does not know: the database is ahead of the code.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20990101000000, 'from a newer release', true, '\\x00'::bytea, 1)",
    )
    .execute(h.state.db.pool())
    .await
    .unwrap();
    let body = get(&h.app, "/api/v1/migrations/status").await.json();
    assert_eq!(body["current"], false);
    assert_eq!(body["db_ahead_of_code"], json!([20990101000000i64]));
    let ready = get(&h.app, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["checks"]["migrations"], "not current");
}

#[tokio::test]
async fn products_are_listed_and_cached_after_the_first_read() {
    let h = harness("").await;
    let list = get(&h.app, "/api/v1/products?limit=5&offset=10").await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["id"], 11);
    assert!(items[0]["price_cents"].is_i64());

    let bad = get(&h.app, "/api/v1/products?limit=1000").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "BAD_REQUEST");

    let first = get(&h.app, "/api/v1/products/3").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(h.cache_dir.path().join("product-3.json").exists());
    let second = get(&h.app, "/api/v1/products/3").await;
    assert_eq!(second.json(), first.json());

    let text = metrics(&h).await;
    assert_eq!(
        metric(&text, r#"cache_requests_total{result="miss"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"cache_requests_total{result="hit"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"http_requests_total{route="/api/v1/products/{id}",method="GET",status="200"}"#
        ),
        2.0,
        "{text}"
    );
    // The raw path never becomes a label.
    assert!(!text.contains("/api/v1/products/3"), "{text}");
    for name in [
        "http_request_duration_seconds_bucket",
        "db_pool_connections{state=\"idle\"}",
        "db_pool_max_connections",
        "db_pool_acquire_waits_total",
        "db_pool_acquire_timeouts_total",
        "job_queue_depth",
        "jwt_rejections_total",
        "rate_limited_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_threads",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    assert!(metric(&text, "process_resident_memory_bytes") > 0.0);

    let missing = get(&h.app, "/api/v1/products/999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "NOT_FOUND");
}

#[tokio::test]
async fn corrupt_cache_entries_are_reported_not_served() {
    let h = harness("").await;
    std::fs::write(
        h.cache_dir.path().join("product-7.json"),
        b"{\"id\": 7, \"sku\": tru",
    )
    .unwrap();
    let reply = get(&h.app, "/api/v1/products/7").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.error_code(), "CACHE_CORRUPT");
    assert!(
        !reply.text.contains("product-7.json"),
        "5xx body leaks detail: {}",
        reply.text
    );

    // A well-formed entry for another product is corrupt too.
    get(&h.app, "/api/v1/products/8").await;
    std::fs::copy(
        h.cache_dir.path().join("product-8.json"),
        h.cache_dir.path().join("product-9.json"),
    )
    .unwrap();
    let reply = get(&h.app, "/api/v1/products/9").await;
    assert_eq!(reply.error_code(), "CACHE_CORRUPT");

    let text = metrics(&h).await;
    assert_eq!(
        metric(&text, r#"cache_requests_total{result="corrupt"}"#),
        2.0
    );
    assert_eq!(
        metric(&text, r#"app_errors_total{code="CACHE_CORRUPT"}"#),
        2.0
    );
}

#[tokio::test]
async fn orders_without_a_valid_token_are_rejected_and_counted() {
    let h = harness("").await;
    let body = json!({"items": [{"product_id": 1, "quantity": 1}]});
    let none = call(
        &h.app,
        Method::POST,
        "/api/v1/orders",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.error_code(), "AUTH_INVALID_TOKEN");
    let forged = mint_token(
        "another-secret-another-secret-12345",
        2,
        Role::Customer,
        Duration::from_secs(60),
    )
    .unwrap();
    let bad = call(
        &h.app,
        Method::POST,
        "/api/v1/orders",
        Some(&forged),
        Some(body),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert_eq!(metric(&metrics(&h).await, "jwt_rejections_total"), 2.0);
}

#[tokio::test]
async fn an_order_decrements_stock_and_the_worker_confirms_it() {
    let h = harness("").await;
    let pool = h.state.db.pool().clone();
    let stock = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT stock FROM products WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (before_1, before_2) = (stock(1).await, stock(2).await);
    let price: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT price_cents FROM products WHERE id = 1), (SELECT price_cents FROM products WHERE id = 2)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    let customer = token(2, Role::Customer);
    let body = json!({"items": [
        {"product_id": 1, "quantity": 2},
        {"product_id": 2, "quantity": 1},
        {"product_id": 1, "quantity": 1},
    ]});
    let placed = call(
        &h.app,
        Method::POST,
        "/api/v1/orders",
        Some(&customer),
        Some(body),
    )
    .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.text);
    let order = placed.json();
    assert_eq!(order["status"], "pending");
    assert_eq!(order["total_cents"], price.0 * 3 + price.1);
    let order_id = order["id"].as_i64().unwrap();
    assert_eq!(stock(1).await, before_1 - 3);
    assert_eq!(stock(2).await, before_2 - 1);

    let job: (String, Value, String) = sqlx::query_as("SELECT kind, payload, status FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(job.0, "confirm_order");
    assert_eq!(job.1, json!({"order_id": order_id}));
    assert_eq!(job.2, "pending");

    let too_many = call(
        &h.app,
        Method::POST,
        "/api/v1/orders",
        Some(&customer),
        Some(json!({"items": [{"product_id": 1, "quantity": 1000}, {"product_id": 1, "quantity": 1000}]})),
    )
    .await;
    assert_eq!(too_many.status, StatusCode::CONFLICT);
    assert_eq!(too_many.error_code(), "OUT_OF_STOCK");
    assert_eq!(
        stock(1).await,
        before_1 - 3,
        "a refused order changes nothing"
    );

    let report = worker::run_once(&pool)
        .await
        .unwrap()
        .expect("a job was due");
    assert_eq!(report.outcome, worker::JobOutcome::Done);
    assert!(worker::run_once(&pool).await.unwrap().is_none());
    let job_status: String = sqlx::query_scalar("SELECT status FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(job_status, "done");

    let uri = format!("/api/v1/orders/{order_id}");
    let mine = call(&h.app, Method::GET, &uri, Some(&customer), None).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["status"], "confirmed");
    assert_eq!(mine.json()["items"].as_array().unwrap().len(), 2);
    let other = call(
        &h.app,
        Method::GET,
        &uri,
        Some(&token(3, Role::Customer)),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let admin = call(
        &h.app,
        Method::GET,
        &uri,
        Some(&token(1, Role::Admin)),
        None,
    )
    .await;
    assert_eq!(admin.status, StatusCode::OK);
}

#[tokio::test]
async fn failing_jobs_are_retried_then_marked_failed() {
    let h = harness("").await;
    let pool = h.state.db.pool().clone();
    sqlx::query(
        "INSERT INTO jobs (kind, payload) VALUES ('confirm_order', '{\"order_id\": 424242}')",
    )
    .execute(&pool)
    .await
    .unwrap();
    for attempt in 1..=worker::MAX_ATTEMPTS {
        // Make the job due again instead of waiting for its backoff.
        sqlx::query("UPDATE jobs SET run_after = now()")
            .execute(&pool)
            .await
            .unwrap();
        let report = worker::run_once(&pool).await.unwrap().unwrap();
        assert_eq!(report.attempts, attempt);
        let last = attempt == worker::MAX_ATTEMPTS;
        assert_eq!(
            matches!(report.outcome, worker::JobOutcome::Failed { .. }),
            last,
            "{report:?}"
        );
    }
    let (status, error): (String, String) = sqlx::query_as("SELECT status, last_error FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("424242"), "{error}");
}

#[tokio::test]
async fn admin_can_create_products_and_customers_cannot() {
    let h = harness("").await;
    let body =
        json!({"sku": "SKU-NEW-1", "name": "Gooseneck Kettle", "price_cents": 4599, "stock": 12});
    let denied = call(
        &h.app,
        Method::POST,
        "/api/v1/products",
        Some(&token(2, Role::Customer)),
        Some(body.clone()),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let admin = token(1, Role::Admin);
    let created = call(
        &h.app,
        Method::POST,
        "/api/v1/products",
        Some(&admin),
        Some(body),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let id = created.json()["id"].as_i64().unwrap();

    // Cache it, update it: the cache entry must not survive the update.
    let uri = format!("/api/v1/products/{id}");
    assert_eq!(get(&h.app, &uri).await.json()["price_cents"], 4599);
    let update =
        json!({"sku": "SKU-NEW-1", "name": "Gooseneck Kettle", "price_cents": 3999, "stock": 12});
    let updated = call(
        &h.app,
        Method::POST,
        "/api/v1/products",
        Some(&admin),
        Some(update),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(get(&h.app, &uri).await.json()["price_cents"], 3999);
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_and_counts_timeouts() {
    let h = harness("POOL_SIZE=2\nPOOL_MIN_IDLE=0\nPOOL_ACQUIRE_TIMEOUT_MS=200").await;
    let held_a = h.state.db.pool().acquire().await.unwrap();
    let held_b = h.state.db.pool().acquire().await.unwrap();

    let reply = get(&h.app, "/api/v1/products").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.error_code(), "DB_POOL_TIMEOUT");

    let pool = get(&h.app, "/api/v1/pool/status").await.json();
    assert_eq!(pool["in_use"], 2);
    assert_eq!(pool["utilization_percent"], 100.0);
    assert_eq!(pool["health"], "critical");
    assert!(pool["acquire_timeouts"].as_u64().unwrap() >= 1, "{pool}");
    assert!(pool["acquire_waits"].as_u64().unwrap() >= 1, "{pool}");
    let text = metrics(&h).await;
    assert!(metric(&text, "db_pool_acquire_timeouts_total") >= 1.0);
    assert_eq!(metric(&text, r#"db_pool_connections{state="in_use"}"#), 2.0);
    assert_eq!(
        metric(&text, r#"app_errors_total{code="DB_POOL_TIMEOUT"}"#),
        1.0
    );

    drop((held_a, held_b));
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_api_requires_its_token_and_controls_failpoints() {
    let h = harness("").await;
    let admin = admin_app(&h.state);
    assert_eq!(
        get(&admin, "/admin/failpoints").await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = call(
        &admin,
        Method::GET,
        "/admin/failpoints",
        Some("not-the-admin-token"),
        None,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_code(), "AUTH_INVALID_TOKEN");

    let set = call(
        &admin,
        Method::PUT,
        "/admin/failpoints/http.error",
        Some(ADMIN_TOKEN),
        Some(json!({"action": "error(100)"})),
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let failed = get(&h.app, "/api/v1/products").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.error_code(), "INJECTED_FAILURE");
    assert_eq!(get(&h.app, "/healthz").await.status, StatusCode::OK);

    let listed = call(
        &admin,
        Method::GET,
        "/admin/failpoints",
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .json();
    assert_eq!(listed["active"][0]["name"], "http.error");
    assert_eq!(listed["active"][0]["action"], "error(100)");

    let bad = call(
        &admin,
        Method::PUT,
        "/admin/failpoints/http.error",
        Some(ADMIN_TOKEN),
        Some(json!({"action": "explode"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("error(PERCENT)"), "{}", bad.text);
    let unknown = call(
        &admin,
        Method::PUT,
        "/admin/failpoints/no.such",
        Some(ADMIN_TOKEN),
        Some(json!({"action": "off"})),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let cleared = call(
        &admin,
        Method::DELETE,
        "/admin/failpoints/http.error",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);

    // db.latency delays handlers by at least the injected amount.
    call(
        &admin,
        Method::PUT,
        "/admin/failpoints/db.latency",
        Some(ADMIN_TOKEN),
        Some(json!({"action": "delay(150)"})),
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(150));
    call(
        &admin,
        Method::PUT,
        "/admin/failpoints/db.latency",
        Some(ADMIN_TOKEN),
        Some(json!({"action": "off"})),
    )
    .await;
    assert!(h.state.failpoints.list().is_empty());
}

#[tokio::test]
async fn rate_limit_refuses_excess_requests_and_is_adjustable() {
    let h = harness("RATE_LIMIT_RPS=1").await;
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
    let limited = get(&h.app, "/api/v1/products").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error_code(), "RATE_LIMITED");
    // Probes and metrics are never limited.
    assert_eq!(get(&h.app, "/healthz").await.status, StatusCode::OK);
    assert_eq!(metric(&metrics(&h).await, "rate_limited_total"), 1.0);

    let admin = admin_app(&h.state);
    let current = call(
        &admin,
        Method::GET,
        "/admin/rate_limit",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(current.json()["rps"], 1);
    let off = call(
        &admin,
        Method::PUT,
        "/admin/rate_limit",
        Some(ADMIN_TOKEN),
        Some(json!({"rps": 0})),
    )
    .await;
    assert_eq!(off.status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
    }

    // N requests per W seconds: a burst of N, then refused (one token every W/N s).
    let window = call(
        &admin,
        Method::PUT,
        "/admin/rate_limit",
        Some(ADMIN_TOKEN),
        Some(json!({"max_requests": 2, "window_seconds": 60})),
    )
    .await;
    assert_eq!(window.status, StatusCode::OK, "{}", window.text);
    assert_eq!(window.json()["previous"]["max_requests"], 0);
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
    assert_eq!(get(&h.app, "/api/v1/products").await.status, StatusCode::OK);
    assert_eq!(
        get(&h.app, "/api/v1/products").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let now = call(
        &admin,
        Method::GET,
        "/admin/rate_limit",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(now.json()["max_requests"], 2);
    assert_eq!(now.json()["window_seconds"], 60);
    for bad in [
        json!({"max_requests": 2}),
        json!({"rps": 1, "max_requests": 2, "window_seconds": 60}),
        json!({"max_requests": 2, "window_seconds": 0}),
        json!({"max_requests": 2, "window_seconds": 60, "burst": 1}),
    ] {
        let r = call(
            &admin,
            Method::PUT,
            "/admin/rate_limit",
            Some(ADMIN_TOKEN),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
}

#[tokio::test]
async fn price_comes_from_the_upstream_and_auto_mode_falls_back() {
    let h = harness("UPSTREAM_MODE=auto").await;
    let price = get(&h.app, "/api/v1/products/1/price?currency=USD").await;
    assert_eq!(price.status, StatusCode::OK, "{}", price.text);
    let body = price.json();
    assert_eq!(body["source"], "primary");
    assert_eq!(body["currency"], "USD");
    let rate = target_app::upstream::server::rate_for("SKU-0001", "USD");
    assert_eq!(body["rate"], rate);

    // Break the primary through its own admin API, over HTTP.
    let client = reqwest::Client::new();
    let admin_url = format!("http://{}/admin/failpoints/upstream.status", h.primary.addr);
    let unauth = client
        .put(&admin_url)
        .json(&json!({"action": "status(503)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    let set = client
        .put(&admin_url)
        .bearer_auth(UPSTREAM_TOKEN)
        .json(&json!({"action": "status(503)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    assert!(h.primary.failpoints.get("upstream.status").is_some());

    let price = get(&h.app, "/api/v1/products/1/price?currency=USD").await;
    assert_eq!(price.status, StatusCode::OK, "{}", price.text);
    assert_eq!(price.json()["source"], "fallback");
    assert_eq!(
        price.json()["rate"],
        rate,
        "both upstreams agree on the rate"
    );
    let text = metrics(&h).await;
    assert_eq!(
        metric(
            &text,
            r#"upstream_requests_total{upstream="primary",outcome="status_5xx"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"upstream_requests_total{upstream="fallback",outcome="ok"}"#
        ),
        1.0,
        "{text}"
    );
    let health = get(&h.app, "/api/v1/health").await.json();
    assert_eq!(health["upstream"]["mode"], "auto");
}

#[tokio::test]
async fn primary_mode_reports_upstream_unavailable() {
    let h = harness("UPSTREAM_MODE=primary").await;
    h.primary
        .failpoints
        .set("upstream.status", "status(500)")
        .unwrap();
    let price = get(&h.app, "/api/v1/products/1/price").await;
    assert_eq!(price.status, StatusCode::BAD_GATEWAY);
    assert_eq!(price.error_code(), "UPSTREAM_UNAVAILABLE");
    let bad = get(&h.app, "/api/v1/products/1/price?currency=euro").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn upstream_service_answers_prices_and_hides_admin_without_token() {
    let open = target_app::upstream::server::router(
        "solo",
        target_app::upstream::server::failpoints(),
        None,
    );
    let reply = get(&open, "/v1/price/SKU-0042?currency=GBP").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["sku"], "SKU-0042");
    assert_eq!(body["currency"], "GBP");
    assert_eq!(body["source"], "solo");
    assert!(body["rate"].as_f64().unwrap() >= 0.5);
    assert_eq!(get(&open, "/healthz").await.status, StatusCode::OK);
    assert_eq!(
        get(&open, "/admin/failpoints").await.status,
        StatusCode::NOT_FOUND
    );

    let fp = target_app::upstream::server::failpoints();
    let guarded =
        target_app::upstream::server::router("solo", fp.clone(), Some(UPSTREAM_TOKEN.into()));
    let hang = call(
        &guarded,
        Method::PUT,
        "/admin/failpoints/upstream.hang",
        Some(UPSTREAM_TOKEN),
        Some(json!({"action": "hang"})),
    )
    .await;
    assert_eq!(hang.status, StatusCode::OK);
    let pending =
        tokio::time::timeout(Duration::from_millis(200), get(&guarded, "/v1/price/SKU-1")).await;
    assert!(pending.is_err(), "a hanging upstream must not answer");
    assert_eq!(get(&guarded, "/healthz").await.status, StatusCode::OK);
    fp.remove("upstream.hang");
    assert_eq!(
        get(&guarded, "/v1/price/SKU-1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_api_serves_over_a_real_socket() {
    let h = harness("").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, h.app.clone())
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let client = reqwest::Client::new();
    let reply = client
        .get(format!("http://{addr}/api/v1/products/5"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    assert!(reply.headers().contains_key("x-request-id"));
    let product: Value = reply.json().await.unwrap();
    assert_eq!(product["id"], 5);
    let unknown = client
        .get(format!("http://{addr}/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn invalid_pool_size_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let text = env_text(
        "postgres://a:b@127.0.0.1/x",
        d,
        d,
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "POOL_SIZE=abc",
    );
    let error = Config::from_env_text(&text).unwrap_err();
    assert_eq!(error.key, "POOL_SIZE");
    assert!(error.message.contains("1 to 200"), "{}", error.message);
}

#[test]
fn the_binary_exits_78_on_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let env_file = dir.path().join("app.env");
    std::fs::write(
        &env_file,
        env_text(
            "postgres://app:hunter2@127.0.0.1/x",
            d,
            d,
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            "POOL_SIZE=abc",
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_target-app"))
        .args(["serve", "--env-file"])
        .arg(&env_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "stderr: {stderr}");
    let line: Value = serde_json::from_str(stderr.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("stderr is not a JSON line ({e}): {stderr}"));
    assert_eq!(line["code"], "CONFIG_INVALID");
    assert_eq!(line["key"], "POOL_SIZE");
    assert_eq!(line["level"], "ERROR");
    assert!(!stderr.contains("hunter2"));
    let logged = std::fs::read_to_string(dir.path().join("target-app.log")).unwrap();
    assert!(logged.contains("\"key\":\"POOL_SIZE\""), "{logged}");
}
