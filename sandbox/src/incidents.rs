//! Diagnoses and incident reports that agents file through MCP, kept in the state dir
//! (`incidents/`): diagnoses as fsynced JSON lines (the drill's scorer reads them with
//! their timestamps), each report as JSON plus a rendered Markdown file.
//!
//! Every free-text field is scrubbed of the sandbox's secret values before it is stored:
//! an agent may paste a log line that carries one.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::paths::{StateDir, write_atomic};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Diagnosis {
    pub id: String,
    pub submitted_at: DateTime<Utc>,
    pub fault_class: String,
    pub component: String,
    pub summary: String,
    pub evidence: Vec<String>,
    pub confidence: Option<f64>,
    /// The MCP client that submitted it.
    pub client: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IncidentReport {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub title: String,
    pub what_broke: String,
    pub what_was_done: Vec<String>,
    pub why: String,
    pub prevention: Vec<String>,
    pub before: Value,
    pub after: Value,
    pub diagnosis_id: Option<String>,
    pub resolved: bool,
    pub client: String,
}

fn dir(state: &StateDir) -> PathBuf {
    state.root().join("incidents")
}

fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        Utc::now().format("%Y%m%d-%H%M%S"),
        &crate::secrets::random_hex(3)
    )
}

/// The sandbox's secret values, to remove from free text.
fn secret_values(state: &StateDir) -> Vec<String> {
    std::fs::read_dir(state.secrets_dir())
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| s.len() >= 8)
                .collect()
        })
        .unwrap_or_default()
}

/// Replace every secret value in `text` with `[REDACTED]`.
pub fn scrub(state: &StateDir, text: &str) -> String {
    scrub_with(&secret_values(state), text)
}

/// `scrub` with the secret values read once (a record scrubs many fields).
fn scrub_with(secrets: &[String], text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s, "[REDACTED]");
    }
    out
}

fn scrub_value(secrets: &[String], v: &Value) -> Value {
    match serde_json::to_string(v) {
        Ok(text) => serde_json::from_str(&scrub_with(secrets, &text)).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn invalid(field: &str, message: String) -> Error {
    Error::InvalidArgument {
        field: field.to_string(),
        message,
    }
}

/// Not empty and at most `max` characters.
fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty".into()));
    }
    if value.chars().count() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    Ok(())
}

/// At most `max_items` items of at most `max` characters each.
fn check_list(field: &str, items: &[String], max_items: usize, max: usize) -> Result<()> {
    if items.len() > max_items || items.iter().any(|i| i.chars().count() > max) {
        return Err(invalid(
            field,
            format!("at most {max_items} items of at most {max} characters"),
        ));
    }
    Ok(())
}

/// Record a diagnosis (append + fsync) and return it. The limits on each field are
/// checked here, for every caller (MCP tool, REST route): a bad one is
/// [`Error::InvalidArgument`] naming it.
pub fn submit_diagnosis(
    state: &StateDir,
    fault_class: &str,
    component: &str,
    summary: &str,
    evidence: &[String],
    confidence: Option<f64>,
    client: &str,
) -> Result<Diagnosis> {
    check_text("fault_class", fault_class, 100)?;
    check_text("component", component, 100)?;
    check_text("summary", summary, 2000)?;
    check_list("evidence", evidence, 20, 1000)?;
    if let Some(c) = confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(invalid("confidence", format!("{c} is outside 0..=1")));
    }
    let secrets = secret_values(state);
    let d = Diagnosis {
        id: new_id("dg"),
        submitted_at: Utc::now(),
        fault_class: scrub_with(&secrets, fault_class),
        component: scrub_with(&secrets, component),
        summary: scrub_with(&secrets, summary),
        evidence: evidence.iter().map(|e| scrub_with(&secrets, e)).collect(),
        confidence,
        client: client.to_string(),
    };
    let dir = dir(state);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let path = dir.join("diagnoses.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .at(&path)?;
    let mut line = serde_json::to_string(&d).map_err(|e| Error::Other(e.to_string()))?;
    line.push('\n');
    f.write_all(line.as_bytes()).at(&path)?;
    f.sync_all().at(&path)?;
    Ok(d)
}

/// Every diagnosis, oldest first.
pub fn diagnoses(state: &StateDir) -> Vec<Diagnosis> {
    std::fs::read_to_string(dir(state).join("diagnoses.jsonl"))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What an agent sends to file a report.
#[derive(Debug, Clone, Default)]
pub struct ReportInput {
    pub title: String,
    pub what_broke: String,
    pub what_was_done: Vec<String>,
    pub why: String,
    pub prevention: Vec<String>,
    pub before: Value,
    pub after: Value,
    pub diagnosis_id: Option<String>,
    pub resolved: bool,
}

/// Store a report as `incidents/{id}.json` and `incidents/{id}.md`, after checking each
/// field's limits ([`Error::InvalidArgument`] names a bad one).
pub fn file_report(state: &StateDir, input: ReportInput, client: &str) -> Result<IncidentReport> {
    check_text("title", &input.title, 200)?;
    check_text("what_broke", &input.what_broke, 4000)?;
    check_text("why", &input.why, 4000)?;
    check_list("what_was_done", &input.what_was_done, 50, 2000)?;
    check_list("prevention", &input.prevention, 20, 1000)?;
    for (field, v) in [("before", &input.before), ("after", &input.after)] {
        if v.to_string().len() > 20_000 {
            return Err(invalid(field, "keep the figures under 20 KB".into()));
        }
    }
    let secrets = secret_values(state);
    let r = IncidentReport {
        id: new_id("inc"),
        created_at: Utc::now(),
        title: scrub_with(&secrets, &input.title),
        what_broke: scrub_with(&secrets, &input.what_broke),
        what_was_done: input
            .what_was_done
            .iter()
            .map(|s| scrub_with(&secrets, s))
            .collect(),
        why: scrub_with(&secrets, &input.why),
        prevention: input
            .prevention
            .iter()
            .map(|s| scrub_with(&secrets, s))
            .collect(),
        before: scrub_value(&secrets, &input.before),
        after: scrub_value(&secrets, &input.after),
        diagnosis_id: input.diagnosis_id,
        resolved: input.resolved,
        client: client.to_string(),
    };
    let dir = dir(state);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let json = serde_json::to_vec_pretty(&r).map_err(|e| Error::Other(e.to_string()))?;
    write_atomic(&dir.join(format!("{}.json", r.id)), &json, 0o644)?;
    write_atomic(
        &dir.join(format!("{}.md", r.id)),
        render_markdown(&r).as_bytes(),
        0o644,
    )?;
    Ok(r)
}

/// Every report, newest first.
pub fn reports(state: &StateDir) -> Vec<IncidentReport> {
    let mut out: Vec<IncidentReport> = std::fs::read_dir(dir(state))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|b| serde_json::from_slice(&b).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    out
}

/// One report and its Markdown. Ids are checked so no path can escape the dir.
pub fn report(state: &StateDir, id: &str) -> Option<(IncidentReport, String)> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return None;
    }
    let dir = dir(state);
    let r: IncidentReport =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{id}.json"))).ok()?).ok()?;
    let md = std::fs::read_to_string(dir.join(format!("{id}.md")))
        .unwrap_or_else(|_| render_markdown(&r));
    Some((r, md))
}

fn figures(v: &Value) -> String {
    match v {
        Value::Object(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("- {k}: {s}"),
                other => format!("- {k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => "- (none given)".into(),
        other => format!("- {other}"),
    }
}

pub fn render_markdown(r: &IncidentReport) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "- (none)".to_string()
        } else {
            items
                .iter()
                .map(|i| format!("- {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    format!(
        "# {title}\n\n{status} · {created} · filed by {client}{diag}\n\n## What broke\n{broke}\n\n\
         ## What was done\n{done}\n\n## Why\n{why}\n\n## Before\n{before}\n\n## After\n{after}\n\n\
         ## How to prevent it\n{prevent}\n",
        title = r.title,
        status = if r.resolved {
            "**Resolved**"
        } else {
            "**Not resolved**"
        },
        created = r.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        client = r.client,
        diag = r
            .diagnosis_id
            .as_ref()
            .map(|d| format!(" · diagnosis {d}"))
            .unwrap_or_default(),
        broke = r.what_broke,
        done = list(&r.what_was_done),
        why = r.why,
        before = figures(&r.before),
        after = figures(&r.after),
        prevent = list(&r.prevention),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_names_the_field_and_stores_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        state.create().unwrap();
        let field = |r: Result<Diagnosis>| match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let long = "x".repeat(2001);
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert_eq!(
            field(submit_diagnosis(
                &state,
                " ",
                "postgres",
                "s",
                &[],
                None,
                "t"
            )),
            "fault_class"
        );
        assert_eq!(
            field(submit_diagnosis(
                &state,
                "c",
                "postgres",
                &long,
                &[],
                None,
                "t"
            )),
            "summary"
        );
        assert_eq!(
            field(submit_diagnosis(
                &state, "c", "postgres", "s", &many, None, "t"
            )),
            "evidence"
        );
        assert_eq!(
            field(submit_diagnosis(
                &state,
                "c",
                "postgres",
                "s",
                &[],
                Some(1.5),
                "t"
            )),
            "confidence"
        );
        assert!(diagnoses(&state).is_empty());
        let r = file_report(&state, ReportInput::default(), "t");
        assert!(
            matches!(r, Err(Error::InvalidArgument { ref field, .. }) if field == "title"),
            "{r:?}"
        );
        assert!(reports(&state).is_empty());
    }

    #[test]
    fn reports_are_stored_rendered_and_scrubbed() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        state.create().unwrap();
        let secret = crate::secrets::get_or_create(&state, "jwt-secret", 16).unwrap();
        let d = submit_diagnosis(
            &state,
            "db_pool_exhaustion",
            "postgres",
            &format!("pool exhausted; leaked {secret}"),
            &["40 sessions idle in transaction".into()],
            Some(0.9),
            "test",
        )
        .unwrap();
        assert!(!d.summary.contains(&secret));
        assert_eq!(diagnoses(&state).len(), 1);
        let r = file_report(
            &state,
            ReportInput {
                title: "Pool exhausted".into(),
                what_broke: "40 foreign sessions held the pool".into(),
                what_was_done: vec!["kill_db_sessions".into()],
                why: "they idled in transaction".into(),
                prevention: vec!["connection limit per role".into()],
                before: serde_json::json!({"p95_ms": 4800, "token": secret}),
                after: serde_json::json!({"p95_ms": 40}),
                diagnosis_id: Some(d.id.clone()),
                resolved: true,
            },
            "test",
        )
        .unwrap();
        let (back, md) = report(&state, &r.id).unwrap();
        assert_eq!(back.title, "Pool exhausted");
        assert!(
            md.contains("## What was done") && md.contains("p95_ms: 4800"),
            "{md}"
        );
        assert!(!md.contains(&secret) && !back.before.to_string().contains(&secret));
        assert!(report(&state, "../../etc/passwd").is_none());
        assert_eq!(reports(&state).len(), 1);
    }
}
