//! The event timeline: starts, exits, restarts and health transitions, appended as JSON
//! lines to `events.jsonl`. Faults and actions (later issues) append here too, so one
//! timeline shows cause and effect.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub ts: DateTime<Utc>,
    /// e.g. `service_started`, `service_exited`, `health_changed`, `sandbox_up`.
    pub kind: String,
    pub service: Option<String>,
    pub detail: String,
}

/// Appends events; a failed write is logged, never fatal (the timeline is diagnostic).
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl EventLog {
    pub fn open(path: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| tracing::warn!(message = "Cannot open the event log.", path = %path.display(), %error))
            .ok();
        Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        }
    }

    pub fn record(&self, kind: &str, service: Option<&str>, detail: impl Into<String>) {
        let event = Event {
            ts: Utc::now(),
            kind: kind.to_string(),
            service: service.map(str::to_string),
            detail: detail.into(),
        };
        tracing::info!(
            message = "Event.",
            kind = %event.kind,
            service = event.service.as_deref().unwrap_or("-"),
            detail = %event.detail
        );
        let mut line = serde_json::to_string(&event).expect("event serializes");
        line.push('\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = guard.as_mut()
            && let Err(error) = f.write_all(line.as_bytes())
        {
            tracing::warn!(message = "Cannot append to the event log.", path = %self.path.display(), %error);
        }
    }

    /// Read the whole timeline (oldest first); unreadable lines are skipped.
    pub fn read_all(path: &Path) -> Vec<Event> {
        std::fs::read_to_string(path)
            .map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}
