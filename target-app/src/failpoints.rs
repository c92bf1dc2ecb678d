//! A runtime failpoint registry: named hooks whose behaviour an operator switches on and
//! off through the admin API.
//!
//! The registry is generic: it is built from a catalogue ([`APP_FAILPOINTS`],
//! [`UPSTREAM_FAILPOINTS`]) naming each failpoint and the one action shape it accepts.
//! Request-path hooks (`delay`, `error`, `status`, `hang`) are read by the code that owns
//! the hook point; process-wide effects (`spin`, `grow`, `storm`, `abort`) are started
//! here when set and stopped when removed. Nothing here blocks a tokio worker: delays
//! are `tokio::time::sleep`, and CPU spinning runs on its own OS threads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// The shape of action a failpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `delay(MS)`
    Delay,
    /// `error(PERCENT)`
    Error,
    /// `spin(THREADS)`
    Spin,
    /// `grow(MB_PER_S)`
    Grow,
    /// `abort`
    Abort,
    /// `storm(LINES_PER_S)`
    Storm,
    /// `status(CODE)`
    Status,
    /// `hang`
    Hang,
}

impl ActionKind {
    /// The syntax and range, as told to an operator who sent something else.
    pub fn syntax(self) -> &'static str {
        match self {
            ActionKind::Delay => "delay(MS) with MS in 0..=600000",
            ActionKind::Error => "error(PERCENT) with PERCENT in 0..=100",
            ActionKind::Spin => "spin(THREADS) with THREADS in 1..=64",
            ActionKind::Grow => "grow(MB_PER_S) with MB_PER_S in 1..=1024",
            ActionKind::Abort => "abort",
            ActionKind::Storm => "storm(LINES_PER_S) with LINES_PER_S in 1..=100000",
            ActionKind::Status => "status(CODE) with CODE in 100..=599",
            ActionKind::Hang => "hang",
        }
    }
}

/// One entry of a catalogue.
#[derive(Debug, Clone, Copy)]
pub struct FailpointSpec {
    pub name: &'static str,
    pub kind: ActionKind,
    pub help: &'static str,
}

/// The failpoints of the shop API process.
pub const APP_FAILPOINTS: &[FailpointSpec] = &[
    FailpointSpec {
        name: "http.latency",
        kind: ActionKind::Delay,
        help: "added latency on every /api/v1 request",
    },
    FailpointSpec {
        name: "http.error",
        kind: ActionKind::Error,
        help: "share of /api/v1 requests answered 500 INJECTED_FAILURE",
    },
    FailpointSpec {
        name: "db.latency",
        kind: ActionKind::Delay,
        help: "added latency before each database use in handlers",
    },
    FailpointSpec {
        name: "process.cpu_spin",
        kind: ActionKind::Spin,
        help: "OS threads busy-looping until removed",
    },
    FailpointSpec {
        name: "process.memory_grow",
        kind: ActionKind::Grow,
        help: "memory allocated and touched every second, kept until removed",
    },
    FailpointSpec {
        name: "process.crash",
        kind: ActionKind::Abort,
        help: "abort the process right after replying",
    },
    FailpointSpec {
        name: "log.storm",
        kind: ActionKind::Storm,
        help: "ERROR lines with stack traces per second until removed",
    },
];

/// The failpoints of the pricing upstream.
pub const UPSTREAM_FAILPOINTS: &[FailpointSpec] = &[
    FailpointSpec {
        name: "upstream.status",
        kind: ActionKind::Status,
        help: "answer every /v1 request with this HTTP status",
    },
    FailpointSpec {
        name: "upstream.hang",
        kind: ActionKind::Hang,
        help: "never answer /v1 requests until removed",
    },
    FailpointSpec {
        name: "http.latency",
        kind: ActionKind::Delay,
        help: "added latency on every /v1 request",
    },
];

/// A parsed action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Action {
    Delay(u64),
    Error(u8),
    Spin(u32),
    Grow(u32),
    Abort,
    Storm(u32),
    Status(u16),
    Hang,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Delay(v) => write!(f, "delay({v})"),
            Action::Error(v) => write!(f, "error({v})"),
            Action::Spin(v) => write!(f, "spin({v})"),
            Action::Grow(v) => write!(f, "grow({v})"),
            Action::Abort => write!(f, "abort"),
            Action::Storm(v) => write!(f, "storm({v})"),
            Action::Status(v) => write!(f, "status({v})"),
            Action::Hang => write!(f, "hang"),
        }
    }
}

/// Why a failpoint could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailpointError {
    #[error("unknown failpoint {name:?}; known failpoints: {known}")]
    Unknown { name: String, known: String },
    #[error("invalid action {got:?} for {name}; allowed: {allowed} or off")]
    BadAction {
        name: String,
        got: String,
        allowed: &'static str,
    },
}

/// Parses `action` for failpoint `name`. `Ok(None)` means `off`.
pub fn parse_action(
    catalog: &[FailpointSpec],
    name: &str,
    action: &str,
) -> Result<Option<Action>, FailpointError> {
    let Some(spec) = catalog.iter().find(|s| s.name == name) else {
        return Err(FailpointError::Unknown {
            name: name.to_owned(),
            known: catalog
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let text = action.trim();
    if text == "off" {
        return Ok(None);
    }
    let bad = || FailpointError::BadAction {
        name: name.to_owned(),
        got: action.to_owned(),
        allowed: spec.kind.syntax(),
    };
    let (word, arg) = match text.split_once('(') {
        Some((word, rest)) => {
            let arg = rest.strip_suffix(')').ok_or_else(bad)?.trim();
            (word.trim(), Some(arg))
        }
        None => (text, None),
    };
    fn num<T: std::str::FromStr + PartialOrd>(arg: Option<&str>, min: T, max: T) -> Option<T> {
        let v: T = arg?.parse().ok()?;
        (v >= min && v <= max).then_some(v)
    }
    let parsed = match (spec.kind, word) {
        (ActionKind::Delay, "delay") => num(arg, 0, 600_000).map(Action::Delay),
        (ActionKind::Error, "error") => num(arg, 0, 100).map(Action::Error),
        (ActionKind::Spin, "spin") => num(arg, 1, 64).map(Action::Spin),
        (ActionKind::Grow, "grow") => num(arg, 1, 1024).map(Action::Grow),
        (ActionKind::Storm, "storm") => num(arg, 1, 100_000).map(Action::Storm),
        (ActionKind::Status, "status") => num(arg, 100, 599).map(Action::Status),
        (ActionKind::Abort, "abort") if arg.is_none() => Some(Action::Abort),
        (ActionKind::Hang, "hang") if arg.is_none() => Some(Action::Hang),
        _ => None,
    };
    parsed.map(Some).ok_or_else(bad)
}

/// Stops a process-wide effect when dropped.
enum Effect {
    Threads(Arc<AtomicBool>),
    Task(tokio::task::AbortHandle),
}

impl Drop for Effect {
    fn drop(&mut self) {
        match self {
            Effect::Threads(stop) => stop.store(true, Ordering::Relaxed),
            Effect::Task(handle) => handle.abort(),
        }
    }
}

struct Active {
    action: Action,
    since: chrono::DateTime<chrono::Utc>,
    _effect: Option<Effect>,
}

/// One active failpoint, as listed by `GET /admin/failpoints`.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFailpoint {
    pub name: String,
    pub action: String,
    pub since: chrono::DateTime<chrono::Utc>,
}

struct Inner {
    catalog: &'static [FailpointSpec],
    active: Mutex<BTreeMap<String, Active>>,
    /// Bumped on every change so `hang` can wake up when removed.
    changed: watch::Sender<u64>,
}

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Failpoints {
    inner: Arc<Inner>,
}

impl Failpoints {
    pub fn new(catalog: &'static [FailpointSpec]) -> Self {
        Failpoints {
            inner: Arc::new(Inner {
                catalog,
                active: Mutex::new(BTreeMap::new()),
                changed: watch::Sender::new(0),
            }),
        }
    }

    pub fn catalog(&self) -> &'static [FailpointSpec] {
        self.inner.catalog
    }

    /// Parses and applies `action` (`off` removes). Must be called inside a tokio runtime:
    /// background effects are spawned on it.
    pub fn set(&self, name: &str, action: &str) -> Result<Option<Action>, FailpointError> {
        let parsed = parse_action(self.inner.catalog, name, action)?;
        match parsed {
            None => {
                self.remove(name);
            }
            Some(action) => {
                // Drop the old entry (and stop its effect) before starting the new one, so
                // replacing spin(4) by spin(2) never runs six threads.
                self.remove_quietly(name);
                let effect = start_effect(name, action);
                self.lock().insert(
                    name.to_owned(),
                    Active {
                        action,
                        since: chrono::Utc::now(),
                        _effect: effect,
                    },
                );
                tracing::warn!(message = "Failpoint set.", failpoint = name, action = %action);
                self.notify();
            }
        }
        Ok(parsed)
    }

    /// Removes a failpoint; returns whether it was active.
    pub fn remove(&self, name: &str) -> bool {
        let was = self.remove_quietly(name);
        if was {
            tracing::warn!(message = "Failpoint removed.", failpoint = name);
            self.notify();
        }
        was
    }

    fn remove_quietly(&self, name: &str) -> bool {
        // Take the entry out under the lock, drop it (stopping the effect) outside.
        let removed = self.lock().remove(name);
        removed.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Active>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|v| *v += 1);
    }

    pub fn get(&self, name: &str) -> Option<Action> {
        self.lock().get(name).map(|a| a.action)
    }

    pub fn list(&self) -> Vec<ActiveFailpoint> {
        self.lock()
            .iter()
            .map(|(name, a)| ActiveFailpoint {
                name: name.clone(),
                action: a.action.to_string(),
                since: a.since,
            })
            .collect()
    }

    /// Sleeps for the failpoint's `delay(MS)`, if active.
    pub async fn delay(&self, name: &str) {
        if let Some(Action::Delay(ms)) = self.get(name)
            && ms > 0
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// True with the failpoint's `error(PERCENT)` probability.
    pub fn should_fail(&self, name: &str) -> bool {
        match self.get(name) {
            Some(Action::Error(percent)) => rand::random_range(0..100u8) < percent,
            _ => false,
        }
    }

    /// The failpoint's `status(CODE)`, if active.
    pub fn status(&self, name: &str) -> Option<u16> {
        match self.get(name) {
            Some(Action::Status(code)) => Some(code),
            _ => None,
        }
    }

    /// Waits while the failpoint is active (used by `hang`); returns at once otherwise.
    pub async fn wait_while_active(&self, name: &str) {
        let mut changes = self.inner.changed.subscribe();
        while self.get(name).is_some() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }
}

fn start_effect(name: &str, action: Action) -> Option<Effect> {
    match action {
        Action::Spin(threads) => {
            let stop = Arc::new(AtomicBool::new(false));
            for i in 0..threads {
                let stop = stop.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name(format!("spin-{i}"))
                        .spawn(move || {
                            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                            while !stop.load(Ordering::Relaxed) {
                                for _ in 0..10_000 {
                                    x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(31));
                                }
                            }
                        });
                if let Err(error) = spawned {
                    tracing::error!(message = "Cannot spawn spin thread.", failpoint = name, error = %error);
                }
            }
            Some(Effect::Threads(stop))
        }
        Action::Grow(mb_per_s) => {
            let task = tokio::spawn(grow_memory(mb_per_s));
            Some(Effect::Task(task.abort_handle()))
        }
        Action::Storm(lines_per_s) => {
            let task = tokio::spawn(log_storm(lines_per_s));
            Some(Effect::Task(task.abort_handle()))
        }
        Action::Abort => {
            // Give the admin handler time to send its reply, then die the way a real
            // crash does: no destructors, no graceful shutdown.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tracing::error!(message = "Aborting process.", code = "PROCESS_ABORT");
                std::process::abort();
            });
            None
        }
        Action::Delay(_) | Action::Error(_) | Action::Status(_) | Action::Hang => None,
    }
}

/// Upper bound on memory held by `grow`, so a forgotten failpoint degrades the process
/// without taking the whole machine down.
const GROW_CAP_BYTES: usize = 8 << 30;

async fn grow_memory(mb_per_s: u32) {
    let step = (mb_per_s as usize) << 20; // per second
    let chunk = (step / 10).max(4096);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if total + chunk > GROW_CAP_BYTES {
            continue;
        }
        // A non-zero fill forces every page to be written, so the memory is resident and
        // not just reserved.
        held.push(vec![0xA5u8; chunk]);
        total += chunk;
    }
}

const STORM_FRAMES: &[&str] = &[
    "target_app::shop::orders::apply_discount",
    "target_app::shop::orders::price_lines",
    "target_app::shop::catalog::load_variant",
    "target_app::cache::ProductCache::decode",
    "target_app::upstream::PricingClient::convert",
];

async fn log_storm(lines_per_s: u32) {
    let per_tick = f64::from(lines_per_s) / 10.0;
    let mut owed = 0.0f64;
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            n += 1;
            let frame = STORM_FRAMES[(n as usize) % STORM_FRAMES.len()];
            let line = 40 + (n % 300);
            let backtrace = format!(
                "thread 'tokio-runtime-worker' panicked at src/shop/orders.rs:{line}:17:\n\
                 called `Option::unwrap()` on a `None` value\n\
                 stack backtrace:\n\
                 \x20  0: rust_begin_unwind\n\
                 \x20  1: core::panicking::panic_fmt\n\
                 \x20  2: core::panicking::panic\n\
                 \x20  3: core::option::unwrap_failed\n\
                 \x20  4: {frame}\n\
                 \x20  5: target_app::shop::orders::create_order::{{{{closure}}}}\n\
                 \x20  6: <axum::handler::future::IntoServiceFuture<F> as core::future::future::Future>::poll\n\
                 \x20  7: tokio::runtime::task::core::Core<T,S>::poll\n\
                 \x20  8: tokio::runtime::task::harness::Harness<T,S>::poll\n\
                 \x20  9: tokio::runtime::scheduler::multi_thread::worker::Context::run_task"
            );
            tracing::error!(
                message = "Panic in request handler recovered.",
                code = "INTERNAL_PANIC_REPORTED",
                error = "called `Option::unwrap()` on a `None` value",
                location = %frame,
                occurrence = n,
                backtrace = %backtrace,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, action: &str) -> Result<Option<Action>, FailpointError> {
        parse_action(APP_FAILPOINTS, name, action)
    }

    #[test]
    fn valid_actions_parse() {
        assert_eq!(
            app("http.latency", "delay(250)"),
            Ok(Some(Action::Delay(250)))
        );
        assert_eq!(
            app("http.latency", " delay( 0 ) "),
            Ok(Some(Action::Delay(0)))
        );
        assert_eq!(
            app("http.error", "error(100)"),
            Ok(Some(Action::Error(100)))
        );
        assert_eq!(app("db.latency", "delay(5)"), Ok(Some(Action::Delay(5))));
        assert_eq!(
            app("process.cpu_spin", "spin(2)"),
            Ok(Some(Action::Spin(2)))
        );
        assert_eq!(
            app("process.memory_grow", "grow(64)"),
            Ok(Some(Action::Grow(64)))
        );
        assert_eq!(app("process.crash", "abort"), Ok(Some(Action::Abort)));
        assert_eq!(app("log.storm", "storm(500)"), Ok(Some(Action::Storm(500))));
        assert_eq!(app("log.storm", "off"), Ok(None));
        let up = |n, a| parse_action(UPSTREAM_FAILPOINTS, n, a);
        assert_eq!(
            up("upstream.status", "status(503)"),
            Ok(Some(Action::Status(503)))
        );
        assert_eq!(up("upstream.hang", "hang"), Ok(Some(Action::Hang)));
        assert_eq!(up("http.latency", "delay(10)"), Ok(Some(Action::Delay(10))));
    }

    #[test]
    fn bad_actions_name_what_is_allowed() {
        for (name, action) in [
            ("http.error", "error(101)"),
            ("http.error", "delay(10)"),
            ("http.latency", "delay(-1)"),
            ("http.latency", "delay(abc)"),
            ("http.latency", "delay(10"),
            ("process.cpu_spin", "spin(0)"),
            ("process.crash", "abort(1)"),
            ("log.storm", ""),
        ] {
            let err = app(name, action).unwrap_err();
            let FailpointError::BadAction { allowed, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(!allowed.is_empty());
            assert!(err.to_string().contains("allowed"), "{err}");
        }
    }

    #[test]
    fn unknown_failpoint_lists_known_ones() {
        let err = app("db.explode", "abort").unwrap_err();
        assert!(err.to_string().contains("http.latency"), "{err}");
        // Upstream failpoints are not part of the app catalogue.
        assert!(app("upstream.hang", "hang").is_err());
    }

    #[tokio::test]
    async fn registry_sets_lists_and_removes() {
        let fp = Failpoints::new(APP_FAILPOINTS);
        fp.set("http.error", "error(100)").unwrap();
        assert!(fp.should_fail("http.error"));
        assert_eq!(fp.list().len(), 1);
        assert_eq!(fp.list()[0].action, "error(100)");
        fp.set("http.error", "off").unwrap();
        assert!(!fp.should_fail("http.error"));
        assert!(!fp.remove("http.error"));
    }

    #[tokio::test]
    async fn hang_wakes_up_when_removed() {
        let fp = Failpoints::new(UPSTREAM_FAILPOINTS);
        fp.set("upstream.hang", "hang").unwrap();
        let waiter = {
            let fp = fp.clone();
            tokio::spawn(async move { fp.wait_while_active("upstream.hang").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        fp.remove("upstream.hang");
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
