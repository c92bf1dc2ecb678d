//! `disk_usage`: sizes of the state dir's parts (logs, cache, pgdata, run) and the free
//! space of the file systems that hold them.
//!
//! The walk is bounded (entries and depth) so a directory flooded with files cannot make
//! the call slow; a bounded walk says so. Symlinks are not followed. Runs on a blocking
//! thread.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::util::{pretty_bytes, round1};
use crate::{ObserveError, Observer, Summary};

const MAX_ENTRIES: u64 = 200_000;
const MAX_DEPTH: usize = 32;
/// Below this share of free space a file system is flagged.
pub(crate) const LOW_FREE_PERCENT: f64 = 10.0;

/// Size of one part of the state dir.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DirUsage {
    /// `logs`, `cache`, `pgdata` or `run`.
    pub name: String,
    pub path: String,
    pub exists: bool,
    /// Sum of file sizes (apparent), in bytes.
    pub bytes: u64,
    pub pretty: String,
    pub files: u64,
    /// The walk stopped at its bound (200,000 entries or depth 32): `bytes` is a lower bound.
    pub walk_limited: bool,
    /// Entries that could not be read (permissions).
    pub unreadable: u64,
    /// Largest files (up to 3), `name (size)`.
    pub largest: Vec<String>,
}

/// One file system holding part of the state dir.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FilesystemUsage {
    /// The parts of the state dir on this file system.
    pub holds: Vec<String>,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Free for unprivileged users.
    pub available_bytes: u64,
    pub used_percent: f64,
    pub free_percent: f64,
    /// Free space is below 10 %.
    pub low_space: bool,
}

/// Disk use of the sandbox.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DiskUsageReport {
    pub state_dir: String,
    pub dirs: Vec<DirUsage>,
    pub filesystems: Vec<FilesystemUsage>,
    /// Some file system is below 10 % free.
    pub low_space: bool,
}

impl Summary for DiskUsageReport {
    fn summary(&self) -> String {
        let dirs: Vec<String> = self
            .dirs
            .iter()
            .map(|d| {
                format!(
                    "{} {}{}",
                    d.name,
                    d.pretty,
                    if d.walk_limited { "+" } else { "" }
                )
            })
            .collect();
        let mut s = format!("State dir {}: {}.", self.state_dir, dirs.join(", "));
        for f in &self.filesystems {
            s.push_str(&format!(
                "\n  file system of {}: {} free of {} ({:.1} % used){}",
                f.holds.join(", "),
                pretty_bytes(f.available_bytes),
                pretty_bytes(f.total_bytes),
                f.used_percent,
                if f.low_space { " — LOW SPACE" } else { "" }
            ));
        }
        s
    }
}

pub(crate) async fn disk_usage(obs: &Observer) -> Result<DiskUsageReport, ObserveError> {
    let state = obs.state().clone();
    tokio::task::spawn_blocking(move || {
        if !state.root().is_dir() {
            return Err(ObserveError::SandboxUnavailable(format!(
                "the state dir {} does not exist; start a sandbox with `aiops up`",
                state.root().display()
            )));
        }
        let parts = [
            ("logs", state.logs_dir()),
            ("cache", state.cache_dir()),
            ("pgdata", state.pg_data_dir()),
            ("run", state.run_dir()),
        ];
        let mut dirs = Vec::new();
        let mut filesystems: Vec<(u64, FilesystemUsage)> = Vec::new();
        for (name, path) in parts {
            let mut d = DirUsage {
                name: name.to_string(),
                path: path.display().to_string(),
                exists: path.is_dir(),
                bytes: 0,
                pretty: String::new(),
                files: 0,
                walk_limited: false,
                unreadable: 0,
                largest: Vec::new(),
            };
            let mut largest: Vec<(u64, String)> = Vec::new();
            if d.exists {
                let mut entries = 0u64;
                walk(&path, 0, &mut d, &mut entries, &mut largest);
            }
            largest.sort_by_key(|b| std::cmp::Reverse(b.0));
            d.largest = largest
                .into_iter()
                .take(3)
                .map(|(b, n)| format!("{n} ({})", pretty_bytes(b)))
                .collect();
            d.pretty = pretty_bytes(d.bytes);
            let probe = if d.exists {
                path.clone()
            } else {
                state.root().to_path_buf()
            };
            if let Ok(meta) = std::fs::metadata(&probe) {
                let dev = meta.dev();
                if let Some((_, fs)) = filesystems.iter_mut().find(|(k, _)| *k == dev) {
                    fs.holds.push(name.to_string());
                } else if let Some(fs) = statvfs(&probe, name) {
                    filesystems.push((dev, fs));
                }
            }
            dirs.push(d);
        }
        let filesystems: Vec<FilesystemUsage> = filesystems.into_iter().map(|(_, f)| f).collect();
        Ok(DiskUsageReport {
            state_dir: state.root().display().to_string(),
            low_space: filesystems.iter().any(|f| f.low_space),
            dirs,
            filesystems,
        })
    })
    .await
    .map_err(|e| ObserveError::Other(format!("disk walk failed: {e}")))?
}

fn statvfs(path: &Path, holds: &str) -> Option<FilesystemUsage> {
    let v = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = v.fragment_size() as u64;
    let total = v.blocks() as u64 * frag;
    let free = v.blocks_free() as u64 * frag;
    let avail = v.blocks_available() as u64 * frag;
    Some(usage(holds, total, free, avail))
}

pub(crate) fn usage(holds: &str, total: u64, free: u64, avail: u64) -> FilesystemUsage {
    let free_percent = if total > 0 {
        round1(avail as f64 / total as f64 * 100.0)
    } else {
        100.0
    };
    FilesystemUsage {
        holds: vec![holds.to_string()],
        total_bytes: total,
        free_bytes: free,
        available_bytes: avail,
        used_percent: if total > 0 {
            round1((total - free.min(total)) as f64 / total as f64 * 100.0)
        } else {
            0.0
        },
        free_percent,
        low_space: total > 0 && free_percent < LOW_FREE_PERCENT,
    }
}

fn walk(
    dir: &Path,
    depth: usize,
    d: &mut DirUsage,
    entries: &mut u64,
    largest: &mut Vec<(u64, String)>,
) {
    if depth > MAX_DEPTH {
        d.walk_limited = true;
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        d.unreadable += 1;
        return;
    };
    for entry in rd {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            d.walk_limited = true;
            return;
        }
        let Ok(entry) = entry else {
            d.unreadable += 1;
            continue;
        };
        // symlink_metadata: never follow links out of the state dir.
        let Ok(meta) = entry.path().symlink_metadata() else {
            d.unreadable += 1;
            continue;
        };
        if meta.is_dir() {
            walk(&entry.path(), depth + 1, d, entries, largest);
        } else if meta.is_file() {
            d.files += 1;
            d.bytes += meta.len();
            largest.push((meta.len(), entry.file_name().to_string_lossy().into_owned()));
            if largest.len() > 16 {
                largest.sort_by_key(|b| std::cmp::Reverse(b.0));
                largest.truncate(3);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_space_flag() {
        assert!(usage("logs", 1000, 50, 50).low_space);
        assert!(!usage("logs", 1000, 500, 500).low_space);
        assert_eq!(usage("logs", 1000, 250, 200).used_percent, 75.0);
        assert!(!usage("logs", 0, 0, 0).low_space);
    }
}
