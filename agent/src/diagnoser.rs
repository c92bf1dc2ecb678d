//! The diagnoser: from one `incident_snapshot` and the runbook library (both over MCP) to
//! ranked hypotheses, and the top one submitted with `submit_diagnosis`.
//!
//! Responsible for: deciding whether there is an incident at all, scoring every
//! runbook's symptoms against the anomalies, breaking ties with `search_runbooks`.
//!
//! Not responsible for: acting. It hands the ranked [`Hypothesis`] list and the parsed
//! runbooks to the executor.

use std::collections::HashMap;

use aiops_runbooks::{Runbook, Symptom};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mcp::{self, Client};
use crate::{AgentError, Hypothesis};

/// An anomaly as `incident_snapshot` reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Anomaly {
    pub signal: String,
    pub observed: String,
    pub threshold: String,
    /// `critical`, `warning` or `info`.
    pub severity: String,
    pub component: String,
    pub evidence: Vec<String>,
}

impl Anomaly {
    /// The anomalies that make an incident (info ones are context, not a cause to act on).
    pub fn is_actionable(&self) -> bool {
        self.severity == "critical" || self.severity == "warning"
    }

    /// One line: what and where.
    pub fn line(&self) -> String {
        format!(
            "{} {} {}: {}",
            self.severity, self.component, self.signal, self.observed
        )
    }
}

/// What the diagnoser hands on.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// The full structured `incident_snapshot` answer (the reporter's "before").
    pub snapshot: Value,
    pub anomalies: Vec<Anomaly>,
    /// Best first; empty when there is no incident or no runbook matches.
    pub hypotheses: Vec<Hypothesis>,
    /// Every runbook read, by id.
    pub runbooks: HashMap<String, Runbook>,
    /// The id `submit_diagnosis` answered with, when the tool exists and accepted it.
    pub diagnosis_id: Option<String>,
}

/// Does this symptom match this anomaly? Equal signals, the optional component equal,
/// the optional text found (case-insensitively) in the observed value or any evidence.
pub fn symptom_matches(symptom: &Symptom, anomaly: &Anomaly) -> bool {
    if symptom.signal != anomaly.signal {
        return false;
    }
    if let Some(c) = &symptom.component
        && c != &anomaly.component
    {
        return false;
    }
    if let Some(m) = &symptom.matches {
        let needle = m.to_lowercase();
        let found = anomaly.observed.to_lowercase().contains(&needle)
            || anomaly
                .evidence
                .iter()
                .any(|e| e.to_lowercase().contains(&needle));
        if !found {
            return false;
        }
    }
    true
}

/// How many runbooks have a symptom matching each anomaly (its "commonness").
pub fn commonness<'a>(
    runbooks: impl IntoIterator<Item = &'a Runbook>,
    anomalies: &[Anomaly],
) -> Vec<usize> {
    let runbooks: Vec<&Runbook> = runbooks.into_iter().collect();
    anomalies
        .iter()
        .map(|a| {
            runbooks
                .iter()
                .filter(|rb| rb.symptoms.iter().any(|s| symptom_matches(s, a)))
                .count()
        })
        .collect()
}

/// Score one runbook against the actionable anomalies.
///
/// `score` is the sum of the weights of its symptoms that match at least one actionable
/// anomaly. `confidence`, the ranking key, weighs each matched symptom by how specific
/// its best anomaly is: an anomaly that `n` runbooks explain gives each of them `1/n` of
/// the weight. Why: side effects (CPU, p95 latency, a failing `/readyz`) match many
/// runbooks and discriminate little, while `foreign_db_sessions` or `DB_AUTH_FAILED`
/// point at one cause; a plain sum let a spinning target's CPU outrank an exhausted pool.
/// `commonness` comes from [`commonness`] over the same anomalies.
pub fn score(runbook: &Runbook, anomalies: &[Anomaly], commonness: &[usize]) -> Option<Hypothesis> {
    let mut raw = 0.0;
    let mut confidence = 0.0;
    let mut evidence: Vec<String> = Vec::new();
    for symptom in &runbook.symptoms {
        let matched: Vec<usize> = anomalies
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_actionable() && symptom_matches(symptom, a))
            .map(|(i, _)| i)
            .collect();
        if matched.is_empty() {
            continue;
        }
        raw += symptom.weight;
        let n = matched
            .iter()
            .map(|&i| commonness.get(i).copied().unwrap_or(1).max(1))
            .min()
            .unwrap_or(1);
        confidence += symptom.weight / n as f64;
        for i in matched {
            let a = &anomalies[i];
            let mut line = format!("{} {}: {}", a.component, a.signal, a.observed);
            if let Some(first) = a.evidence.first() {
                line.push_str(" — ");
                line.push_str(first);
            }
            if !evidence.contains(&line) {
                evidence.push(line);
            }
        }
    }
    (raw > 0.0).then(|| Hypothesis {
        runbook_id: runbook.id.clone(),
        fault_class: runbook
            .fault_classes
            .first()
            .cloned()
            .unwrap_or_else(|| runbook.id.clone()),
        component: runbook.component.clone(),
        confidence,
        score: raw,
        evidence,
    })
}

/// Rank hypotheses best first. `search_order` (runbook ids, best first) breaks ties only.
pub fn rank(mut hypotheses: Vec<Hypothesis>, search_order: &[String]) -> Vec<Hypothesis> {
    let pos = |id: &str| {
        search_order
            .iter()
            .position(|s| s == id)
            .unwrap_or(usize::MAX)
    };
    hypotheses.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then_with(|| pos(&a.runbook_id).cmp(&pos(&b.runbook_id)))
            .then_with(|| a.runbook_id.cmp(&b.runbook_id))
    });
    hypotheses
}

/// Two scores this close are a tie (sums of decimal weights are not exact).
fn tied(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Snapshot, decide, read runbooks, rank, submit.
pub async fn diagnose(client: &Client) -> Result<Diagnosis, AgentError> {
    let snapshot = mcp::call_ok(client, "incident_snapshot", &json!({})).await?;
    let anomalies: Vec<Anomaly> =
        serde_json::from_value(snapshot["anomalies"].clone()).map_err(|e| {
            AgentError::Unexpected {
                tool: "incident_snapshot".into(),
                message: format!("anomalies do not parse: {e}"),
            }
        })?;
    let mut diagnosis = Diagnosis {
        snapshot,
        anomalies,
        hypotheses: Vec::new(),
        runbooks: HashMap::new(),
        diagnosis_id: None,
    };
    if !diagnosis.anomalies.iter().any(Anomaly::is_actionable) {
        tracing::info!(message = "No critical or warning anomaly: nothing to do.");
        return Ok(diagnosis);
    }

    for (id, text) in mcp::read_runbooks(client).await? {
        match aiops_runbooks::parse(&format!("{id}.md"), &text) {
            Ok(rb) => {
                diagnosis.runbooks.insert(rb.id.clone(), rb);
            }
            Err(error) => {
                tracing::warn!(message = "Runbook does not parse; skipped.", runbook = %id, %error)
            }
        }
    }
    let common = commonness(diagnosis.runbooks.values(), &diagnosis.anomalies);
    let scored: Vec<Hypothesis> = diagnosis
        .runbooks
        .values()
        .filter_map(|rb| score(rb, &diagnosis.anomalies, &common))
        .collect();
    let mut ranked = rank(scored, &[]);
    if ranked.len() > 1 && tied(ranked[0].confidence, ranked[1].confidence) {
        let order = search_order(client, &diagnosis.anomalies).await;
        ranked = rank(ranked, &order);
    }
    diagnosis.hypotheses = ranked;

    if let Some(top) = diagnosis.hypotheses.first() {
        diagnosis.diagnosis_id = submit(client, top).await;
    }
    Ok(diagnosis)
}

/// Runbook ids for the top anomaly's text, best first (empty when the search fails).
async fn search_order(client: &Client, anomalies: &[Anomaly]) -> Vec<String> {
    let Some(top) = anomalies.iter().find(|a| a.is_actionable()) else {
        return Vec::new();
    };
    let mut query = format!("{} {} {}", top.signal, top.component, top.observed);
    if let Some(e) = top.evidence.first() {
        query.push(' ');
        query.push_str(e);
    }
    let query: String = query.chars().take(480).collect();
    match mcp::call_ok(
        client,
        "search_runbooks",
        &json!({"query": query, "limit": 20}),
    )
    .await
    {
        Ok(v) => v["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| h["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        Err(error) => {
            tracing::warn!(message = "search_runbooks failed; ties stay by id.", %error);
            Vec::new()
        }
    }
}

/// `submit_diagnosis` for the top hypothesis; `None` (logged) when the tool is absent or
/// refuses, so the rest of the loop still runs.
async fn submit(client: &Client, top: &Hypothesis) -> Option<String> {
    let args = json!({
        "fault_class": top.fault_class,
        "component": top.component,
        "summary": format!(
            "{} on {} (runbook {}, score {:.2}, specificity-weighted {:.2})",
            top.fault_class, top.component, top.runbook_id, top.score, top.confidence
        ),
        "evidence": top.evidence,
        "confidence": top.confidence.clamp(0.0, 1.0),
    });
    match mcp::call_ok(client, "submit_diagnosis", &args).await {
        Ok(v) => v["id"].as_str().map(String::from),
        Err(error) => {
            tracing::warn!(message = "submit_diagnosis failed; continuing without it.", %error);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(signal: &str, component: &str, observed: &str, evidence: &[&str]) -> Anomaly {
        Anomaly {
            signal: signal.into(),
            observed: observed.into(),
            threshold: String::new(),
            severity: "critical".into(),
            component: component.into(),
            evidence: evidence.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn library() -> Vec<Runbook> {
        aiops_runbooks::library()
    }

    #[test]
    fn match_needs_signal_component_and_text() {
        let s = Symptom {
            signal: "readiness_failing".into(),
            matches: Some("db_auth_failed".into()),
            component: Some("target-app".into()),
            weight: 0.4,
            description: String::new(),
        };
        let hit = anomaly(
            "readiness_failing",
            "target-app",
            "503",
            &["db: DB_AUTH_FAILED"],
        );
        assert!(symptom_matches(&s, &hit));
        let wrong_component = anomaly("readiness_failing", "worker", "503", &["DB_AUTH_FAILED"]);
        assert!(!symptom_matches(&s, &wrong_component));
        let no_text = anomaly(
            "readiness_failing",
            "target-app",
            "503",
            &["DB_UNAVAILABLE"],
        );
        assert!(!symptom_matches(&s, &no_text));
        let other_signal = anomaly("error_rate", "target-app", "DB_AUTH_FAILED", &[]);
        assert!(!symptom_matches(&s, &other_signal));
    }

    #[test]
    fn info_anomalies_score_nothing() {
        let mut a = anomaly("db_pool_exhausted", "target-app", "12 timeouts", &[]);
        a.severity = "info".into();
        assert!(
            library()
                .iter()
                .all(|rb| score(rb, std::slice::from_ref(&a), &[1]).is_none())
        );
    }

    #[test]
    fn auth_failure_anomalies_rank_the_auth_runbook_first() {
        let anomalies = vec![
            anomaly(
                "readiness_failing",
                "target-app",
                "503",
                &["db: down: DB_AUTH_FAILED"],
            ),
            anomaly(
                "log_error_code",
                "postgres",
                "12 × DB_AUTH_FAILED in the last 2 min",
                &[],
            ),
        ];
        let lib = library();
        let common = commonness(&lib, &anomalies);
        let ranked = rank(
            lib.iter()
                .filter_map(|rb| score(rb, &anomalies, &common))
                .collect(),
            &[],
        );
        assert_eq!(ranked[0].runbook_id, "db_auth_failure", "{ranked:#?}");
        assert!(tied(ranked[0].score, 0.8));
        assert_eq!(ranked[0].evidence.len(), 2);
    }

    #[test]
    fn ties_follow_the_search_order() {
        let h = |id: &str| Hypothesis {
            runbook_id: id.into(),
            fault_class: id.into(),
            component: "x".into(),
            confidence: 0.5,
            score: 0.5,
            evidence: vec![],
        };
        let ranked = rank(vec![h("a"), h("b")], &["b".into(), "a".into()]);
        assert_eq!(ranked[0].runbook_id, "b");
        let ranked = rank(vec![h("b"), h("a")], &[]);
        assert_eq!(ranked[0].runbook_id, "a");
    }
}
