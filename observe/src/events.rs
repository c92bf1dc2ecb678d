//! `list_events`: the sandbox's event timeline (`events.jsonl`: starts, exits, restarts,
//! health changes, faults, actions), newest first, filtered and paginated.
//!
//! The file is append-only, so a cursor is an index into it: pages stay stable while
//! new events arrive. Not responsible for recording events (the sandbox does).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::util::{decode_cursor, encode_cursor, parse_time_arg, truncate_chars};
use crate::{ObserveError, Observer, Summary};

pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 500;

/// Arguments of `list_events`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events at or after this time: RFC 3339 (`2026-01-02T03:04:05Z`) or a duration
    /// ago (`30s`, `5m`, `2h`, `1d`). Must not be in the future. Default: no limit.
    #[serde(default)]
    pub since: Option<String>,
    /// Only events of this kind, e.g. `service_started`, `service_exited`,
    /// `service_restarted`, `health_changed`, `sandbox_up`, `config_last_known_good`
    /// (exact match, case-insensitive). Default: all kinds.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only events about this service (`postgres`, `target-app`, `worker`,
    /// `upstream-primary`, `upstream-fallback`). Default: all.
    #[serde(default)]
    pub service: Option<String>,
    /// Events per page, newest first. Allowed: 1 to 500. Default: 50.
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` from a previous answer with the same filters, to get the next older
    /// page. Omit for the newest events.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One event.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventItem {
    /// RFC 3339.
    pub ts: String,
    pub kind: String,
    pub service: Option<String>,
    pub detail: String,
}

/// A page of events.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<EventItem>,
    /// Matching events in the whole timeline (as of the first page).
    pub total: u64,
    /// Older matching events exist beyond this page.
    pub truncated: bool,
    /// Pass as `cursor` to get the next older page.
    pub next_cursor: Option<String>,
    /// Matching events by kind.
    pub counts_by_kind: BTreeMap<String, u64>,
}

impl Summary for EventPage {
    fn summary(&self) -> String {
        let mut s = format!(
            "{} of {} matching events{}.",
            self.events.len(),
            self.total,
            if self.truncated {
                " (more: pass next_cursor)"
            } else {
                ""
            }
        );
        for e in self.events.iter().take(20) {
            s.push_str(&format!(
                "\n  {} {} {} {}",
                e.ts,
                e.kind,
                e.service.as_deref().unwrap_or("-"),
                truncate_chars(&e.detail, 120)
            ));
        }
        s
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Timeline length when the first page was taken.
    anchor: usize,
    /// Next page: events with index < pos.
    pos: usize,
}

pub(crate) fn limit_arg(limit: Option<u32>) -> Result<usize, ObserveError> {
    let l = limit.unwrap_or(DEFAULT_LIMIT);
    if l == 0 || l > MAX_LIMIT {
        return Err(ObserveError::invalid(
            "limit",
            format!("{l} is out of range; allowed: 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})"),
        ));
    }
    Ok(l as usize)
}

pub(crate) async fn list_events(obs: &Observer, q: EventQuery) -> Result<EventPage, ObserveError> {
    let limit = limit_arg(q.limit)?;
    let now = Utc::now();
    let since = match q.since.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => {
            let t = parse_time_arg("since", s, now)?;
            if t > now + chrono::Duration::seconds(5) {
                return Err(ObserveError::invalid(
                    "since",
                    "is in the future; allowed: a past time or a duration ago such as 10m",
                ));
            }
            Some(t)
        }
        None => None,
    };
    let cursor: Option<Cursor> = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let path = obs.state().events_file();
    let all = tokio::task::spawn_blocking(move || aiops_sandbox::events::EventLog::read_all(&path))
        .await
        .map_err(|e| ObserveError::Other(format!("reading events failed: {e}")))?;
    let scrub = obs.scrubber();
    let all: Vec<_> = if obs.is_exam() {
        all.into_iter()
            .filter(|e| !is_chaos_event(&e.kind))
            .collect()
    } else {
        all
    };
    Ok(page(
        &all,
        since,
        q.kind.as_deref(),
        q.service.as_deref(),
        limit,
        cursor,
        &scrub,
    ))
}

/// Events the chaos engine records about its own faults (`fault_injected`,
/// `fault_reverted`, ...): hidden from an agent under exam.
pub(crate) fn is_chaos_event(kind: &str) -> bool {
    kind.starts_with("fault_")
}

fn page(
    all: &[aiops_sandbox::events::Event],
    since: Option<DateTime<Utc>>,
    kind: Option<&str>,
    service: Option<&str>,
    limit: usize,
    cursor: Option<Cursor>,
    scrub: &crate::util::Scrubber,
) -> EventPage {
    let anchor = cursor
        .as_ref()
        .map(|c| c.anchor.min(all.len()))
        .unwrap_or(all.len());
    let pos = cursor.as_ref().map(|c| c.pos.min(anchor)).unwrap_or(anchor);
    let matches = |e: &aiops_sandbox::events::Event| {
        since.is_none_or(|s| e.ts >= s)
            && kind.is_none_or(|k| e.kind.eq_ignore_ascii_case(k.trim()))
            && service.is_none_or(|s| e.service.as_deref() == Some(s.trim()))
    };
    let mut total = 0u64;
    let mut counts_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = Vec::new();
    let mut last_idx = pos;
    let mut remaining_after = 0u64;
    for (i, e) in all[..anchor].iter().enumerate().rev() {
        if !matches(e) {
            continue;
        }
        total += 1;
        if counts_by_kind.len() < 100 || counts_by_kind.contains_key(&e.kind) {
            *counts_by_kind
                .entry(truncate_chars(&e.kind, 60))
                .or_default() += 1;
        }
        if i < pos {
            if events.len() < limit {
                events.push(EventItem {
                    ts: e.ts.to_rfc3339(),
                    kind: truncate_chars(&e.kind, 60),
                    service: e.service.clone(),
                    detail: truncate_chars(&scrub.scrub(&e.detail), 500),
                });
                last_idx = i;
            } else {
                remaining_after += 1;
            }
        }
    }
    let truncated = remaining_after > 0;
    EventPage {
        events,
        total,
        truncated,
        next_cursor: truncated.then(|| {
            encode_cursor(&Cursor {
                anchor,
                pos: last_idx,
            })
        }),
        counts_by_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiops_sandbox::events::Event;

    fn ev(i: i64, kind: &str, svc: &str) -> Event {
        Event {
            ts: DateTime::from_timestamp(1_700_000_000 + i, 0).unwrap(),
            kind: kind.into(),
            service: Some(svc.into()),
            detail: format!("event {i}"),
        }
    }

    #[test]
    fn pages_walk_back_without_overlap() {
        let mut all: Vec<Event> = (0..25).map(|i| ev(i, "health_changed", "worker")).collect();
        all.push(ev(25, "service_exited", "target-app"));
        let scrub = crate::util::Scrubber::default();
        let p1 = page(&all, None, Some("health_changed"), None, 10, None, &scrub);
        assert_eq!(p1.total, 25);
        assert_eq!(p1.events[0].detail, "event 24");
        assert!(p1.truncated);
        let c: Cursor = decode_cursor(p1.next_cursor.as_ref().unwrap()).unwrap();
        // A new event after the first page must not shift the pages.
        all.push(ev(26, "health_changed", "worker"));
        let p2 = page(
            &all,
            None,
            Some("health_changed"),
            None,
            10,
            Some(c),
            &scrub,
        );
        assert_eq!(p2.events[0].detail, "event 14");
        assert_eq!(p2.total, 25);
        let c: Cursor = decode_cursor(p2.next_cursor.as_ref().unwrap()).unwrap();
        let p3 = page(
            &all,
            None,
            Some("health_changed"),
            None,
            10,
            Some(c),
            &scrub,
        );
        assert_eq!(p3.events.len(), 5);
        assert_eq!(p3.events[4].detail, "event 0");
        assert!(!p3.truncated && p3.next_cursor.is_none());
        let by_svc = page(&all, None, None, Some("target-app"), 10, None, &scrub);
        assert_eq!(by_svc.total, 1);
    }

    #[test]
    fn limit_bounds() {
        assert!(limit_arg(Some(0)).is_err());
        assert!(limit_arg(Some(501)).is_err());
        assert_eq!(limit_arg(None).unwrap(), 50);
    }
}
