//! Runbooks: Markdown files with YAML front matter that machines execute and people read.
//!
//! Responsible for: the front-matter schema ([`Runbook`]), parsing with clear errors
//! ([`parse`]), the embedded library (every `runbooks/*.md`, built in by `build.rs`), and a
//! BM25 full-text index ([`Index`]) over title, fault classes, symptoms and prose.
//!
//! Not responsible for: running steps (the scripted agent does, through MCP) nor checking
//! that a step's tool exists (the MCP server validates runbooks against its own tools).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// A runbook: its front matter plus the prose after it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// File name without `.md`; lower-case letters, digits and `_`.
    pub id: String,
    pub title: String,
    /// Chaos fault classes this runbook handles (may be empty for failures no fault injects).
    #[serde(default)]
    pub fault_classes: Vec<String>,
    /// The component at fault: postgres, target-app, worker, upstream-primary, config, cache, disk.
    pub component: String,
    /// critical, warning or info.
    pub severity: String,
    /// Hypothesis rules over `incident_snapshot` anomalies.
    pub symptoms: Vec<Symptom>,
    /// Read-only confirmation steps.
    #[serde(default)]
    pub diagnosis: Vec<Step>,
    /// Ordered fix steps, each with its verification.
    pub remediation: Vec<Step>,
    /// What to do when the remediation did not restore steady state.
    #[serde(default)]
    pub escalation: Vec<Step>,
    #[serde(default)]
    pub prevention: Vec<String>,
    /// The Markdown after the front matter.
    #[serde(default, skip_deserializing)]
    pub body: String,
}

/// One hypothesis rule: an anomaly with this signal (and optionally component and text)
/// supports the runbook's cause with this weight.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Symptom {
    /// An anomaly `signal` from `incident_snapshot`, e.g. `readiness_failing`.
    pub signal: String,
    /// Case-insensitive substring looked for in the anomaly's observed value or evidence.
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
    /// The anomaly's component must equal this, when given.
    #[serde(default)]
    pub component: Option<String>,
    /// Support for the hypothesis, in (0, 1].
    pub weight: f64,
    #[serde(default)]
    pub description: String,
}

/// One step: a tool call with arguments, and what to check after.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub tool: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// For diagnosis steps: what confirms the hypothesis.
    #[serde(default)]
    pub look_for: Option<String>,
    /// Why this step fixes the cause.
    #[serde(default)]
    pub why: Option<String>,
    /// When to take this step (escalation).
    #[serde(default)]
    pub when: Option<String>,
    /// The check to run after the step.
    #[serde(default)]
    pub verify: Option<Verify>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub tool: String,
    #[serde(default)]
    pub args: Map<String, Value>,
}

impl Runbook {
    /// Every step, in order: diagnosis, remediation, escalation, and each verification.
    pub fn tool_calls(&self) -> Vec<(&str, &Map<String, Value>)> {
        let mut out = Vec::new();
        for step in self
            .diagnosis
            .iter()
            .chain(&self.remediation)
            .chain(&self.escalation)
        {
            out.push((step.tool.as_str(), &step.args));
            if let Some(v) = &step.verify {
                out.push((v.tool.as_str(), &v.args));
            }
        }
        out
    }
}

/// Why a runbook could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum RunbookError {
    #[error(
        "{file}: no front matter: the file must start with a line `---` and close it with another `---`"
    )]
    NoFrontMatter { file: String },
    #[error("{file}: invalid front matter: {message}")]
    InvalidFrontMatter { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// Parse one runbook. `file` names it in errors (and must be `<id>.md` when given so).
pub fn parse(file: &str, text: &str) -> Result<Runbook, RunbookError> {
    let no_fm = || RunbookError::NoFrontMatter {
        file: file.to_string(),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or_else(no_fm)?;
    let (yaml, body) = split_front_matter(rest).ok_or_else(no_fm)?;
    let mut rb: Runbook =
        serde_norway::from_str(yaml).map_err(|e| RunbookError::InvalidFrontMatter {
            file: file.to_string(),
            message: e.to_string(),
        })?;
    rb.body = body.trim().to_string();
    let invalid = |message: String| RunbookError::Invalid {
        file: file.to_string(),
        message,
    };
    if rb.id.is_empty()
        || !rb
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(format!(
            "id `{}` must be lower-case letters, digits and _",
            rb.id
        )));
    }
    if let Some(stem) = file.strip_suffix(".md")
        && stem != rb.id
    {
        return Err(invalid(format!(
            "id `{}` must match the file name `{stem}`",
            rb.id
        )));
    }
    if !["critical", "warning", "info"].contains(&rb.severity.as_str()) {
        return Err(invalid(format!(
            "severity `{}`: allowed are critical, warning, info",
            rb.severity
        )));
    }
    if rb.symptoms.is_empty() {
        return Err(invalid("at least one symptom is required".into()));
    }
    for s in &rb.symptoms {
        if !(s.weight > 0.0 && s.weight <= 1.0) {
            return Err(invalid(format!(
                "symptom `{}` has weight {}: allowed is (0, 1]",
                s.signal, s.weight
            )));
        }
    }
    if rb.remediation.is_empty() {
        return Err(invalid("at least one remediation step is required".into()));
    }
    Ok(rb)
}

/// The YAML between the opening `---` (already stripped) and the closing `---` line.
fn split_front_matter(rest: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// The embedded library, sorted by id. Panics only if a shipped runbook is invalid, which
/// the crate's tests rule out.
pub fn library() -> Vec<Runbook> {
    embedded::EMBEDDED
        .iter()
        .map(|(file, text)| parse(file, text).unwrap_or_else(|e| panic!("shipped runbook: {e}")))
        .collect()
}

/// The raw Markdown of a shipped runbook.
pub fn raw(id: &str) -> Option<&'static str> {
    embedded::EMBEDDED
        .iter()
        .find(|(file, _)| file.strip_suffix(".md") == Some(id))
        .map(|(_, text)| *text)
}

/// A search hit.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub score: f64,
    /// The line of the runbook that matches the query best.
    pub snippet: String,
    pub fault_classes: Vec<String>,
    /// `runbook://{id}`: read it as an MCP resource.
    pub uri: String,
}

/// BM25 over the runbooks (k1 = 1.2, b = 0.75). Small enough to rebuild on start.
#[derive(Debug, Clone)]
pub struct Index {
    docs: Vec<Doc>,
    df: HashMap<String, usize>,
    avg_len: f64,
}

#[derive(Debug, Clone)]
struct Doc {
    runbook: Runbook,
    tf: HashMap<String, usize>,
    len: usize,
}

/// Lower-case words; an identifier like `db_pool_exhaustion` also yields its parts.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        let w = word.to_lowercase();
        if w.contains('_') {
            out.extend(w.split('_').filter(|p| !p.is_empty()).map(str::to_string));
        }
        out.push(w);
    }
    out
}

impl Index {
    pub fn new(runbooks: Vec<Runbook>) -> Self {
        let mut df: HashMap<String, usize> = HashMap::new();
        let docs: Vec<Doc> = runbooks
            .into_iter()
            .map(|rb| {
                let mut text = String::new();
                // The title and classes weigh more: repeat them.
                for _ in 0..3 {
                    text.push_str(&rb.title);
                    text.push(' ');
                    text.push_str(&rb.fault_classes.join(" "));
                    text.push(' ');
                    text.push_str(&rb.id);
                    text.push(' ');
                }
                for s in &rb.symptoms {
                    text.push_str(&format!(
                        " {} {} {}",
                        s.signal,
                        s.matches.as_deref().unwrap_or(""),
                        s.description
                    ));
                }
                text.push(' ');
                text.push_str(&rb.component);
                text.push(' ');
                text.push_str(&rb.body);
                let tokens = tokenize(&text);
                let mut tf: HashMap<String, usize> = HashMap::new();
                for t in &tokens {
                    *tf.entry(t.clone()).or_default() += 1;
                }
                for t in tf.keys() {
                    *df.entry(t.clone()).or_default() += 1;
                }
                Doc {
                    runbook: rb,
                    len: tokens.len(),
                    tf,
                }
            })
            .collect();
        let avg_len = if docs.is_empty() {
            1.0
        } else {
            docs.iter().map(|d| d.len as f64).sum::<f64>() / docs.len() as f64
        };
        Self { docs, df, avg_len }
    }

    pub fn runbooks(&self) -> impl Iterator<Item = &Runbook> {
        self.docs.iter().map(|d| &d.runbook)
    }

    pub fn get(&self, id: &str) -> Option<&Runbook> {
        self.runbooks().find(|r| r.id == id)
    }

    /// Ranked hits with a positive score, best first, at most `limit`.
    pub fn search(&self, query: &str, limit: usize) -> Vec<Hit> {
        let terms: Vec<String> = {
            let mut t = tokenize(query);
            t.sort();
            t.dedup();
            t
        };
        let n = self.docs.len() as f64;
        let (k1, b) = (1.2, 0.75);
        let mut scored: Vec<(f64, &Doc)> = self
            .docs
            .iter()
            .map(|d| {
                let score = terms
                    .iter()
                    .map(|t| {
                        let tf = *d.tf.get(t).unwrap_or(&0) as f64;
                        if tf == 0.0 {
                            return 0.0;
                        }
                        let df = *self.df.get(t).unwrap_or(&0) as f64;
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        idf * tf * (k1 + 1.0)
                            / (tf + k1 * (1.0 - b + b * d.len as f64 / self.avg_len))
                    })
                    .sum::<f64>();
                (score, d)
            })
            .filter(|(s, _)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(a.1.runbook.id.cmp(&b.1.runbook.id))
        });
        scored
            .into_iter()
            .take(limit)
            .map(|(score, d)| Hit {
                id: d.runbook.id.clone(),
                title: d.runbook.title.clone(),
                score: (score * 1000.0).round() / 1000.0,
                snippet: snippet(&d.runbook, &terms),
                fault_classes: d.runbook.fault_classes.clone(),
                uri: format!("runbook://{}", d.runbook.id),
            })
            .collect()
    }
}

fn snippet(rb: &Runbook, terms: &[String]) -> String {
    let best = rb
        .body
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .max_by_key(|l| {
            let toks = tokenize(l);
            terms.iter().filter(|t| toks.contains(t)).count()
        })
        .unwrap_or(&rb.title);
    let s = best.trim();
    match s.char_indices().nth(240) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "---\nid: demo\ntitle: Demo outage\nfault_classes: [demo]\ncomponent: postgres\nseverity: critical\nsymptoms:\n  - signal: readiness_failing\n    match: DB_UNAVAILABLE\n    weight: 0.5\nremediation:\n  - tool: restart_service\n    args: {service: postgres}\n    verify: {tool: verify_recovery, args: {}}\n---\n## What is happening\nThe database is down.\n";

    #[test]
    fn parses_front_matter_and_body() {
        let rb = parse("demo.md", GOOD).unwrap();
        assert_eq!(rb.id, "demo");
        assert_eq!(rb.symptoms[0].matches.as_deref(), Some("DB_UNAVAILABLE"));
        assert_eq!(rb.remediation[0].args["service"], "postgres");
        assert!(rb.body.starts_with("## What is happening"));
        assert_eq!(rb.tool_calls().len(), 2);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(
            parse("x.md", "no front matter"),
            Err(RunbookError::NoFrontMatter { .. })
        ));
        assert!(matches!(
            parse("x.md", "---\nid: x\n"),
            Err(RunbookError::NoFrontMatter { .. })
        ));
        let e = parse("other.md", GOOD).unwrap_err().to_string();
        assert!(e.contains("must match the file name"), "{e}");
        let e = parse("demo.md", &GOOD.replace("weight: 0.5", "weight: 3"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("(0, 1]"), "{e}");
        let e = parse(
            "demo.md",
            &GOOD.replace("severity: critical", "severity: huge"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("allowed"), "{e}");
        let e = parse("demo.md", &GOOD.replace("title:", "titel:"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("titel"), "unknown keys are named: {e}");
    }

    #[test]
    fn every_shipped_runbook_parses_and_ids_are_unique() {
        let lib = library();
        assert!(
            lib.len() >= 15,
            "expected the full library, got {}",
            lib.len()
        );
        let mut ids: Vec<_> = lib.iter().map(|r| r.id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), lib.len());
        for rb in &lib {
            assert!(raw(&rb.id).is_some());
            assert!(!rb.body.is_empty(), "{} has no prose", rb.id);
        }
    }

    #[test]
    fn search_ranks_the_obvious_runbook_first() {
        let idx = Index::new(library());
        for (query, want) in [
            (
                "connection pool exhausted DB_POOL_TIMEOUT",
                "db_pool_exhaustion",
            ),
            (
                "password authentication failed DB_AUTH_FAILED",
                "db_auth_failure",
            ),
            ("corrupt cache entries CACHE_CORRUPT", "cache_poisoning"),
            ("upstream pricing service 503", "upstream_outage"),
        ] {
            let hits = idx.search(query, 3);
            assert_eq!(
                hits.first().map(|h| h.id.as_str()),
                Some(want),
                "{query}: {hits:?}"
            );
            assert!(!hits[0].snippet.is_empty());
        }
        assert!(idx.search("zzzz qqqq", 5).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Whatever the input, parsing answers (Ok or a clear error) and never panics.
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = parse("fuzz.md", &s);
            let _ = parse("fuzz.md", &format!("---\n{s}\n---\nbody"));
        }

        /// Real runbooks, mutated where the parser works hardest (the front matter):
        /// lines dropped, duplicated or swapped, text spliced in, the file cut short.
        /// Parsing never panics; a failure is an error that names the file and says what
        /// is wrong; a success still satisfies the schema (an id, tool calls with names).
        #[test]
        fn mutated_runbooks_parse_or_fail_clearly(
            which in 0usize..64,
            edits in proptest::collection::vec(
                (0u8..5, 0usize..400, 0usize..400, "\\PC{0,30}"), 1..6),
            cut in proptest::option::of(0usize..4000),
        ) {
            let files = embedded::EMBEDDED;
            let (file, text) = files[which % files.len()];
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (op, a, b, splice) in edits {
                let n = lines.len().max(1);
                let (a, b) = (a % n, b % n);
                match op {
                    0 if !lines.is_empty() => { lines.remove(a); }
                    1 if !lines.is_empty() => { let l = lines[a].clone(); lines.insert(b, l); }
                    2 if !lines.is_empty() => lines.swap(a, b),
                    3 if !lines.is_empty() => lines[a].insert_str(0, &splice),
                    _ => lines.insert(a.min(lines.len()), splice),
                }
            }
            let mut mutated = lines.join("\n");
            if let Some(c) = cut {
                let mut c = c.min(mutated.len());
                while !mutated.is_char_boundary(c) { c -= 1; }
                mutated.truncate(c);
            }
            match parse(file, &mutated) {
                Ok(rb) => {
                    proptest::prop_assert!(!rb.id.is_empty());
                    for (tool, _) in rb.tool_calls() {
                        proptest::prop_assert!(!tool.is_empty());
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    proptest::prop_assert!(msg.contains(file), "error does not name the file: {}", msg);
                    proptest::prop_assert!(msg.len() > file.len() + 10, "unhelpful error: {}", msg);
                }
            }
        }

        #[test]
        fn search_never_panics(q in "\\PC{0,200}") {
            let idx = Index::new(Vec::new());
            let _ = idx.search(&q, 5);
        }
    }
}
