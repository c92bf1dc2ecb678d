//! Facts about local processes, read from `/proc`: resource use of a process tree, and
//! the processes that belong to a sandbox.
//!
//! Every process the supervisor spawns carries `AIOPS_SANDBOX=<state dir>` in its
//! environment, and children inherit it (PostgreSQL backends included). That marker is how
//! `aiops down` and the start-up reaper find every process of *this* sandbox, even after
//! the daemon was SIGKILLed, without touching anything else on the machine.

use std::collections::HashMap;
use std::path::Path;

use crate::runtime::ServiceStats;

/// Environment variable that marks a sandbox's processes.
pub const SANDBOX_MARKER: &str = "AIOPS_SANDBOX";

/// All pids whose environment says they belong to the sandbox at `root`.
pub fn sandbox_processes(root: &Path) -> Vec<u32> {
    let want = root.as_os_str().as_encoded_bytes();
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = std::process::id();
    all.filter_map(|p| p.ok())
        .filter(|p| p.pid as u32 != me)
        .filter(|p| {
            p.environ()
                .ok()
                .and_then(|env| {
                    env.get(std::ffi::OsStr::new(SANDBOX_MARKER))
                        .map(|v| v.as_encoded_bytes() == want)
                })
                .unwrap_or(false)
        })
        .map(|p| p.pid as u32)
        .collect()
}

/// Whether a process exists (and is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) {
        Ok(stat) => stat.state != 'Z' && stat.state != 'X',
        Err(_) => false,
    }
}

/// A CPU-time reading, to turn two readings into a percentage.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    pub cpu_seconds: f64,
    pub at: std::time::Instant,
}

/// Resource use of `pid` and its descendants.
pub fn tree_stats(name: &str, pid: u32, previous: Option<CpuSample>) -> (ServiceStats, CpuSample) {
    let tps = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let tree = descendants(pid);
    let mut stats = ServiceStats {
        name: name.to_string(),
        pid: Some(pid),
        children: tree.len().saturating_sub(1) as u64,
        ..Default::default()
    };
    let mut cpu_seconds = 0.0;
    for p in &tree {
        let Ok(proc_) = procfs::process::Process::new(*p as i32) else {
            continue;
        };
        if let Ok(stat) = proc_.stat() {
            cpu_seconds += (stat.utime + stat.stime) as f64 / tps;
            stats.rss_bytes += stat.rss * page;
            stats.threads += stat.num_threads.max(0) as u64;
        }
        if let Ok(n) = proc_.fd_count() {
            stats.open_fds += n as u64;
        }
    }
    let now = CpuSample {
        cpu_seconds,
        at: std::time::Instant::now(),
    };
    stats.cpu_seconds_total = cpu_seconds;
    if let Some(prev) = previous {
        let dt = now.at.duration_since(prev.at).as_secs_f64();
        if dt > 0.0 {
            stats.cpu_percent =
                ((cpu_seconds - prev.cpu_seconds).max(0.0) / dt * 100.0 * 10.0).round() / 10.0;
        }
    }
    (stats, now)
}

/// `pid` followed by all its descendants.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(all) = procfs::process::all_processes() {
        for p in all.filter_map(|p| p.ok()) {
            if let Ok(stat) = p.stat() {
                children
                    .entry(stat.ppid as u32)
                    .or_default()
                    .push(p.pid as u32);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied());
        }
        i += 1;
    }
    out
}

/// Every mount point of this process's mount namespace (field 5 of
/// `/proc/self/mountinfo`), in mount order.
pub fn mount_points() -> Vec<std::path::PathBuf> {
    mounts().into_iter().map(|(point, _, _)| point).collect()
}

/// Every mount as (mount point, file system type, source), in mount order.
pub fn mounts() -> Vec<(std::path::PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let point = l.split(' ').nth(4)?;
            // After the " - " separator: fs type, source, super options.
            let (_, tail) = l.split_once(" - ")?;
            let mut t = tail.split(' ');
            let fstype = t.next()?.to_string();
            let source = t.next().unwrap_or_default().to_string();
            Some((std::path::PathBuf::from(point), fstype, source))
        })
        .collect()
}
