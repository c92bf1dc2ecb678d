//! `aiops load`: realistic open-loop traffic at the target, so metrics carry signal.
//!
//! The mix: product reads (cached), catalogue lists, price look-ups (through the upstream)
//! and authenticated order writes. Open loop: requests are offered at the asked rate
//! whatever the target's latency, the way real users arrive; when too many are in flight
//! the extra ones are counted as dropped instead of silently slowing the offered rate.
//! Every order the target acknowledged (201) is appended to `load/acked-orders.jsonl`, so
//! a later check can prove no acknowledged write was lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aiops_sandbox::StateDir;
use aiops_sandbox::envfile::EnvFile;
use aiops_sandbox::topology::Topology;
use anyhow::{Context, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::json;
use target_app::auth::{Role, mint_token};

use crate::cli::LoadArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    GetProduct,
    ListProducts,
    Price,
    PlaceOrder,
}

impl Kind {
    fn for_tick(i: u64) -> Self {
        match i % 20 {
            0..=10 => Self::GetProduct,
            11..=13 => Self::ListProducts,
            14..=15 => Self::Price,
            _ => Self::PlaceOrder,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::GetProduct => "GET /api/v1/products/{id}",
            Self::ListProducts => "GET /api/v1/products",
            Self::Price => "GET /api/v1/products/{id}/price",
            Self::PlaceOrder => "POST /api/v1/orders",
        }
    }
}

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<String, u64>,
    by_kind: BTreeMap<Kind, (u64, u64)>, // (ok, failed)
    latency_us: Option<Histogram<u64>>,
    completed: u64,
    ok: u64,
    /// Unix second → (ok, failed), for `--timeline`.
    per_second: BTreeMap<i64, (u64, u64)>,
}

pub async fn run(state: &StateDir, args: LoadArgs) -> anyhow::Result<ExitCode> {
    if args.rps == 0 || args.rps > 20_000 {
        bail!("--rps must be between 1 and 20000 (got {})", args.rps);
    }
    if args.duration == 0 || args.duration > 3600 {
        bail!(
            "--duration must be between 1 and 3600 seconds (got {})",
            args.duration
        );
    }
    let topology = Topology::load(state)?
        .context("no sandbox here (no topology.json); run `aiops up` first")?;
    let base = topology
        .target_url()
        .context("the topology has no target URL")?;
    let env = EnvFile::read(&state.env_file())?;
    let secret = env
        .get("JWT_SECRET")
        .context("the target's .env has no JWT_SECRET")?
        .to_string();
    // Customers 2..=5 are seeded; each gets a token, as four logged-in users would.
    let tokens: Arc<Vec<String>> = Arc::new(
        (2..=5)
            .map(|uid| mint_token(&secret, uid, Role::Customer, Duration::from_secs(3600)))
            .collect::<Result<_, _>>()?,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let products: Vec<i64> = {
        let resp = http
            .get(format!("{base}/api/v1/products?limit=50"))
            .send()
            .await
            .with_context(|| format!("the target at {base} is not reachable"))?;
        if !resp.status().is_success() {
            bail!(
                "listing products failed with {}: is the target healthy?",
                resp.status()
            );
        }
        let body: serde_json::Value = resp.json().await?;
        let items = body
            .get("products")
            .or(body.get("items"))
            .and_then(|v| v.as_array())
            .cloned()
            .or_else(|| body.as_array().cloned())
            .unwrap_or_default();
        items
            .iter()
            .filter_map(|p| p.get("id").and_then(|v| v.as_i64()))
            .collect()
    };
    if products.is_empty() {
        bail!("the target lists no products; cannot build a realistic mix");
    }
    let products = Arc::new(products);
    let acked_path = state.root().join("load").join("acked-orders.jsonl");
    std::fs::create_dir_all(acked_path.parent().expect("has parent"))?;
    let acked = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&acked_path)?,
    ));

    let tally = Arc::new(Mutex::new(Tally {
        latency_us: Some(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        ..Default::default()
    }));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut dropped = 0u64;
    let total = args.rps as u64 * args.duration;
    let progress = indicatif::ProgressBar::new(args.duration);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .expect("template parses"),
    );
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rps as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        if i % args.rps as u64 == 0 {
            let t = tally.lock().expect("tally lock");
            progress.set_position(started.elapsed().as_secs());
            progress.set_message(format!(
                "{} done, {} ok, {} in flight",
                t.completed,
                t.ok,
                in_flight.load(Ordering::Relaxed)
            ));
        }
        if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let kind = Kind::for_tick(i);
        let (http, base, tokens, products, tally, in_flight, acked) = (
            http.clone(),
            base.clone(),
            tokens.clone(),
            products.clone(),
            tally.clone(),
            in_flight.clone(),
            acked.clone(),
        );
        tasks.spawn(async move {
            let (product, token) = {
                let mut rng = rand::rng();
                (
                    products[rng.random_range(0..products.len())],
                    tokens[rng.random_range(0..tokens.len())].clone(),
                )
            };
            let req = match kind {
                Kind::GetProduct => http.get(format!("{base}/api/v1/products/{product}")),
                Kind::ListProducts => http.get(format!("{base}/api/v1/products?limit=20")),
                Kind::Price => http.get(format!(
                    "{base}/api/v1/products/{product}/price?currency=EUR"
                )),
                Kind::PlaceOrder => http
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(token)
                    .json(&json!({"items": [{"product_id": product, "quantity": 1}]})),
            };
            let t0 = Instant::now();
            let result = req.send().await;
            let (label, ok, order_id) = match result {
                Ok(resp) => {
                    let status = resp.status();
                    let order_id = if kind == Kind::PlaceOrder && status.as_u16() == 201 {
                        resp.json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v.get("id").and_then(|i| i.as_i64()))
                    } else {
                        let _ = resp.bytes().await;
                        None
                    };
                    (status.as_u16().to_string(), status.is_success(), order_id)
                }
                Err(e) if e.is_timeout() => ("timeout".to_string(), false, None),
                Err(_) => ("connect error".to_string(), false, None),
            };
            let micros = t0.elapsed().as_micros().max(1) as u64;
            if let Some(id) = order_id {
                let mut f = acked.lock().expect("acked lock");
                let _ = writeln!(
                    f,
                    "{}",
                    json!({"order_id": id, "acked_at": chrono::Utc::now()})
                );
            }
            let mut t = tally.lock().expect("tally lock");
            t.completed += 1;
            if ok {
                t.ok += 1;
            }
            *t.by_status.entry(label).or_default() += 1;
            let e = t.by_kind.entry(kind).or_default();
            if ok {
                e.0 += 1
            } else {
                e.1 += 1
            }
            let second = t
                .per_second
                .entry(chrono::Utc::now().timestamp())
                .or_default();
            if ok {
                second.0 += 1
            } else {
                second.1 += 1
            }
            if let Some(h) = t.latency_us.as_mut() {
                let _ = h.record(micros.min(60_000_000));
            }
            drop(t);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let offered_for = started.elapsed();
    while tasks.join_next().await.is_some() {}
    progress.finish_and_clear();
    let elapsed = started.elapsed();

    let t = tally.lock().expect("tally lock");
    let h = t.latency_us.as_ref().expect("histogram");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let errors = t.completed - t.ok;
    let achieved = t.completed as f64 / elapsed.as_secs_f64();
    let acked_orders = t.by_kind.get(&Kind::PlaceOrder).map(|e| e.0).unwrap_or(0);
    if let Some(path) = &args.timeline {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
        );
        for (second, (ok, failed)) in &t.per_second {
            writeln!(f, "{}", json!({"t": second, "ok": ok, "errors": failed}))?;
        }
        f.flush()?;
    }
    if args.json {
        let out = json!({
            "offered_rps": args.rps,
            "duration_s": offered_for.as_secs_f64(),
            "achieved_rps": achieved,
            "requests": t.completed,
            "ok": t.ok,
            "errors": errors,
            "dropped": dropped,
            "by_status": t.by_status,
            "latency_ms": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": h.max() as f64 / 1000.0},
            "acked_orders": acked_orders,
            "acked_orders_file": acked_path,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let mut table = Table::new();
        table
            .load_preset(UTF8_FULL_CONDENSED)
            .set_header(vec!["figure", "value"]);
        table.add_row(vec![
            "offered rate".into(),
            format!("{} req/s for {:.1} s", args.rps, offered_for.as_secs_f64()),
        ]);
        table.add_row(vec!["achieved rate".into(), format!("{achieved:.1} req/s")]);
        table.add_row(vec!["requests".into(), t.completed.to_string()]);
        table.add_row(vec!["ok (2xx)".into(), t.ok.to_string()]);
        table.add_row(vec![
            "errors".into(),
            format!(
                "{errors} ({:.2} %)",
                100.0 * errors as f64 / t.completed.max(1) as f64
            ),
        ]);
        table.add_row(vec![
            "dropped (too many in flight)".into(),
            dropped.to_string(),
        ]);
        table.add_row(vec![
            "latency p50 / p90 / p99 / max".into(),
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                ms(0.5),
                ms(0.9),
                ms(0.99),
                h.max() as f64 / 1000.0
            ),
        ]);
        table.add_row(vec![
            "orders acknowledged".into(),
            format!("{acked_orders} (→ {})", acked_path.display()),
        ]);
        println!("{table}");
        let mut by = Table::new();
        by.load_preset(UTF8_FULL_CONDENSED)
            .set_header(vec!["request", "ok", "failed"]);
        for (k, (ok, failed)) in &t.by_kind {
            by.add_row(vec![
                k.label().to_string(),
                ok.to_string(),
                failed.to_string(),
            ]);
        }
        println!("{by}");
        let statuses: Vec<String> = t
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        println!("By status: {}", statuses.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
