//! Drill results for people and programs: a terminal table, Markdown, JSON.

use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::DrillResults;
use crate::score::{Spread, Summary, TrialResult};

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |m| format!("{:.1} s", m as f64 / 1000.0))
}

fn diagnosis(r: &TrialResult) -> String {
    match r.diagnoses.first() {
        None => "-".into(),
        Some(d) => format!(
            "{} {}/{}",
            if d.correct { "✓" } else { "✗" },
            d.fault_class,
            d.component
        ),
    }
}

fn verdict(r: &TrialResult) -> String {
    if r.success {
        "PASS".into()
    } else if r.false_positive {
        "FALSE POSITIVE".into()
    } else {
        "FAIL".into()
    }
}

/// One row per trial.
pub fn trial_row(r: &TrialResult) -> Vec<String> {
    vec![
        r.index.to_string(),
        r.fault.clone(),
        diagnosis(r),
        secs(r.time_to_detect_ms),
        secs(r.time_to_mitigate_ms),
        if r.is_noop() {
            "-".into()
        } else if r.durable {
            format!("yes ({})", r.durable_checks.1)
        } else {
            format!("no ({}/{})", r.durable_checks.0, r.durable_checks.1)
        },
        format!("{} ({})", r.acted(), r.refused()),
        r.collateral.len().to_string(),
        r.leftovers.len().to_string(),
        secs(Some(r.reset_ms)),
        verdict(r),
    ]
}

pub const HEADER: [&str; 11] = [
    "#",
    "fault",
    "first diagnosis",
    "detect",
    "mitigate",
    "durable (checks)",
    "actions (refused)",
    "collateral",
    "leftovers",
    "reset",
    "result",
];

fn spread(s: &Spread) -> String {
    format!(
        "median {} · p95 {} · max {}",
        secs(s.median_ms),
        secs(s.p95_ms),
        secs(s.max_ms)
    )
}

/// The summary as lines.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let mut out = vec![
        format!(
            "{} / {} trials passed ({:.0} %): {} fault trials, {} no-fault; {} correct diagnoses, {} mitigated, {} false positives",
            s.passed,
            s.trials,
            s.success_rate_percent,
            s.fault_trials,
            s.noop_trials,
            s.correct_diagnoses,
            s.mitigated,
            s.false_positives
        ),
        format!(
            "pass^k (every trial of a fault passed): {} / {} faults",
            s.pass_k.0, s.pass_k.1
        ),
        format!("time to detect:   {}", spread(&s.detect)),
        format!("time to mitigate: {}", spread(&s.mitigate)),
        format!("reset:            {}", spread(&s.reset)),
    ];
    if let Some((f, m)) = &s.slowest_fault {
        out.push(format!(
            "slowest fault to mitigate (median): {f} {}",
            secs(Some(*m))
        ));
    }
    out
}

/// The results table (trials, then the summary) for a terminal.
pub fn table(results: &DrillResults) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(HEADER);
    for r in &results.results {
        t.add_row(trial_row(r));
    }
    let mut out = t.to_string();
    out.push('\n');
    for l in summary_lines(&results.summary) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The results as Markdown: summary, trials, per fault, and why each failure failed.
pub fn markdown(results: &DrillResults) -> String {
    let mut md = format!(
        "# Drill {}\n\nAgent: {} · seed {} · {} trial(s) per fault · timeout {} s · durability window {} s · {} → {}\n\n## Summary\n\n",
        results.id,
        results.agent,
        results.seed,
        results.trials_per_fault,
        results.timeout_s,
        results.durable_s,
        results.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        results.finished_at.format("%H:%M:%S UTC"),
    );
    for l in summary_lines(&results.summary) {
        md.push_str(&format!("- {l}\n"));
    }
    md.push_str("\n## Trials\n\n| ");
    md.push_str(&HEADER.join(" | "));
    md.push_str(" |\n|");
    md.push_str(&"---|".repeat(HEADER.len()));
    md.push('\n');
    for r in &results.results {
        md.push_str("| ");
        md.push_str(&trial_row(r).join(" | ").replace('\n', " "));
        md.push_str(" |\n");
    }
    md.push_str("\n## Per fault\n\n| fault | trials | passed | pass^k | median detect | median mitigate |\n|---|---|---|---|---|---|\n");
    for (f, p) in &results.summary.per_fault {
        md.push_str(&format!(
            "| {f} | {} | {} | {} | {} | {} |\n",
            p.trials,
            p.passed,
            if p.pass_all { "yes" } else { "no" },
            secs(p.median_detect_ms),
            secs(p.median_mitigate_ms)
        ));
    }
    let notes: Vec<&TrialResult> = results
        .results
        .iter()
        .filter(|r| !r.notes.is_empty())
        .collect();
    if !notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for r in notes {
            md.push_str(&format!(
                "- trial {} ({}): {}\n",
                r.index,
                r.fault,
                r.notes.join("; ")
            ));
        }
    }
    md
}

/// `results.json` and `results.md` in `dir`; `latest.json` in `drills_dir`.
pub fn write(dir: &Path, drills_dir: &Path, results: &DrillResults) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(results).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), &json)?;
    std::fs::write(dir.join("results.md"), markdown(results))?;
    std::fs::write(drills_dir.join("latest.json"), &json)?;
    Ok(())
}
