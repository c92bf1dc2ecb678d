//! Scoring: what one trial showed, whether it passed, and the drill's summary.
//!
//! Pure functions over observations the runner collected, so every rule is unit-tested.

use std::collections::BTreeMap;

use aiops_chaos::GroundTruth;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A diagnosis the agent submitted during the trial, judged against the label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiagnosisSeen {
    pub at: DateTime<Utc>,
    pub fault_class: String,
    pub component: String,
    /// Class and component both equal the label's (false in a no-fault trial).
    pub correct: bool,
}

/// One remediation call of the agent, from the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionSeen {
    pub at: DateTime<Utc>,
    pub action: String,
    pub params: Value,
    /// `executed`, `failed`, `refused`, `pending_approval`.
    pub status: String,
    pub destructive: bool,
}

/// Everything one trial showed, and its score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub index: usize,
    /// Catalogue fault, or `noop`.
    pub fault: String,
    pub fault_id: Option<String>,
    /// The hidden ground truth (revealed here, after the trial).
    pub label: Option<GroundTruth>,
    /// The inject's own effect check: the symptom was seen through the observation signals.
    pub effect_verified: Option<bool>,
    /// When the fault was in place (the clock for detection and mitigation).
    pub injected_at: Option<DateTime<Utc>>,
    /// From the start of the reset to a checked steady state.
    pub reset_ms: u64,
    /// How the agent run ended: `exited 0`, `exited 1`, `timed out`, `recovered`, ...
    pub agent_outcome: String,
    pub diagnoses: Vec<DiagnosisSeen>,
    /// A diagnosis was submitted.
    pub detected: bool,
    /// The first diagnosis submitted was correct (class and component).
    pub diagnosis_correct: bool,
    /// Fault in place → first correct diagnosis.
    pub time_to_detect_ms: Option<u64>,
    /// Steady state failed at least once while the fault was in place.
    pub broke: bool,
    /// Fault in place → steady state restored (first passing check after a failing one)
    /// while the fault's cause was still in place (not yet reverted by the harness).
    pub time_to_mitigate_ms: Option<u64>,
    /// Steady state held at every check of the durability window after mitigation.
    pub durable: bool,
    /// Checks made in the durability window (passed / all).
    pub durable_checks: (u32, u32),
    pub actions: Vec<ActionSeen>,
    /// Approvals the harness granted as the on-call human.
    pub approvals_granted: u32,
    /// Unnecessary destructive actions, and anything left worse than before.
    pub collateral: Vec<String>,
    /// What was left behind after the harness reverted the fault.
    pub leftovers: Vec<String>,
    /// Keys of the target's .env the agent left different from the drill's baseline
    /// (restored by the next reset).
    pub config_drift: Vec<String>,
    /// No-fault trial: the agent diagnosed or changed something.
    pub false_positive: bool,
    pub success: bool,
    /// Why it did not pass, or anything else worth knowing.
    pub notes: Vec<String>,
    /// The whole trial, reset included.
    pub total_ms: u64,
}

impl TrialResult {
    pub fn new(index: usize, fault: &str) -> Self {
        Self {
            index,
            fault: fault.to_string(),
            fault_id: None,
            label: None,
            effect_verified: None,
            injected_at: None,
            reset_ms: 0,
            agent_outcome: String::new(),
            diagnoses: Vec::new(),
            detected: false,
            diagnosis_correct: false,
            time_to_detect_ms: None,
            broke: false,
            time_to_mitigate_ms: None,
            durable: false,
            durable_checks: (0, 0),
            actions: Vec::new(),
            approvals_granted: 0,
            collateral: Vec::new(),
            leftovers: Vec::new(),
            config_drift: Vec::new(),
            false_positive: false,
            success: false,
            notes: Vec::new(),
            total_ms: 0,
        }
    }

    pub fn is_noop(&self) -> bool {
        self.label.is_none()
    }

    /// Calls that changed something (or tried to): executed or failed.
    pub fn acted(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a.status.as_str(), "executed" | "failed"))
            .count()
    }

    pub fn refused(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| a.status == "refused")
            .count()
    }

    /// Fill `detected`, `diagnosis_correct`, `time_to_detect_ms`, `collateral` (from the
    /// actions), `false_positive` and `success` from the observations.
    pub fn score(&mut self) {
        let label = self.label.clone();
        for d in &mut self.diagnoses {
            d.correct = label
                .as_ref()
                .is_some_and(|l| l.class == d.fault_class && l.component == d.component);
        }
        self.detected = !self.diagnoses.is_empty();
        self.diagnosis_correct = self.diagnoses.first().is_some_and(|d| d.correct);
        self.time_to_detect_ms = match (self.injected_at, self.diagnoses.iter().find(|d| d.correct))
        {
            (Some(t0), Some(d)) => Some(ms_between(t0, d.at)),
            _ => None,
        };
        for a in &self.actions {
            if let Some(why) = collateral(label.as_ref(), a) {
                self.collateral.push(why);
            }
        }
        let mut why_not = Vec::new();
        match &label {
            None => {
                self.false_positive = self.detected || self.acted() > 0;
                if self.detected {
                    why_not.push("diagnosed a fault in a healthy system".to_string());
                }
                if self.acted() > 0 {
                    why_not.push(format!(
                        "acted {} time(s) on a healthy system",
                        self.acted()
                    ));
                }
            }
            Some(_) => {
                if !self.detected {
                    why_not.push("no diagnosis submitted".into());
                } else if !self.diagnosis_correct {
                    let d = &self.diagnoses[0];
                    why_not.push(format!("diagnosed {} on {}", d.fault_class, d.component));
                }
                if !self.broke {
                    why_not.push(
                        "steady state never failed: the fault had no effect the harness could see"
                            .into(),
                    );
                } else if self.time_to_mitigate_ms.is_none() {
                    why_not.push("not mitigated".into());
                } else if !self.durable {
                    why_not.push(format!(
                        "fix not durable ({}/{} checks held)",
                        self.durable_checks.0, self.durable_checks.1
                    ));
                }
            }
        }
        if !self.collateral.is_empty() {
            why_not.push(format!("collateral: {}", self.collateral.join("; ")));
        }
        if !self.leftovers.is_empty() {
            why_not.push(format!("left behind: {}", self.leftovers.join("; ")));
        }
        self.success = why_not.is_empty();
        let mut notes = why_not;
        notes.append(&mut self.notes);
        self.notes = notes;
    }
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> u64 {
    u64::try_from((b - a).num_milliseconds()).unwrap_or(0)
}

/// Components a fix for a fault on `component` may reasonably touch with a destructive
/// action: the component itself, the target (its client, restarted to pick up a fix) and
/// its config; an upstream fault may also touch the fallback, a cache or disk fault the
/// other of the two.
pub fn proportionate(component: &str) -> &'static [&'static str] {
    match component {
        "postgres" => &["postgres", "target-app", "config", "worker"],
        "upstream-primary" => &[
            "upstream-primary",
            "upstream-fallback",
            "target-app",
            "config",
        ],
        "cache" | "disk" => &["cache", "disk", "target-app", "config"],
        "config" => &["config", "target-app"],
        _ => &["target-app", "config"],
    }
}

/// Why this action is collateral damage, if it is: in a no-fault trial any destructive
/// action that ran; in a fault trial a destructive action that ran on a component the
/// fault does not involve (restarting the database for an upstream outage).
pub fn collateral(label: Option<&GroundTruth>, a: &ActionSeen) -> Option<String> {
    if !a.destructive || !matches!(a.status.as_str(), "executed" | "failed") {
        return None;
    }
    let what = match a.params["service"].as_str() {
        Some(s) => format!("{} {s}", a.action),
        None => a.action.clone(),
    };
    match label {
        None => Some(format!("{what} on a healthy system")),
        Some(l) => {
            let touched = aiops_remediation::actions::component_changed(&a.action, &a.params)?;
            (!proportionate(&l.component).contains(&touched.as_str()))
                .then(|| format!("{what} for a {} fault on {}", l.class, l.component))
        }
    }
}

/// Median and 95th percentile (nearest rank) of some durations.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub median_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

impl Spread {
    pub fn of(mut v: Vec<u64>) -> Self {
        v.sort_unstable();
        let rank = |q: f64| -> Option<u64> {
            if v.is_empty() {
                return None;
            }
            let r = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[r - 1])
        };
        Self {
            count: v.len(),
            median_ms: if v.is_empty() {
                None
            } else if v.len() % 2 == 1 {
                Some(v[v.len() / 2])
            } else {
                Some((v[v.len() / 2 - 1] + v[v.len() / 2]) / 2)
            },
            p95_ms: rank(0.95),
            max_ms: v.last().copied(),
        }
    }
}

/// Per fault: how many trials, how many passed, and pass^k (all k passed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PerFault {
    pub trials: usize,
    pub passed: usize,
    pub pass_all: bool,
    pub median_detect_ms: Option<u64>,
    pub median_mitigate_ms: Option<u64>,
}

/// The drill's summary row and per-fault table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub trials: usize,
    pub fault_trials: usize,
    pub noop_trials: usize,
    pub passed: usize,
    /// Passed trials / all trials, in percent.
    pub success_rate_percent: f64,
    pub correct_diagnoses: usize,
    pub mitigated: usize,
    pub false_positives: usize,
    /// Faults whose every trial passed, out of all faults tried (pass^k, k = trials).
    pub pass_k: (usize, usize),
    pub detect: Spread,
    pub mitigate: Spread,
    pub reset: Spread,
    /// The fault with the longest median time to mitigate, and that median.
    pub slowest_fault: Option<(String, u64)>,
    pub per_fault: BTreeMap<String, PerFault>,
}

pub fn summarize(results: &[TrialResult]) -> Summary {
    let faults: Vec<&TrialResult> = results.iter().filter(|r| !r.is_noop()).collect();
    let passed = results.iter().filter(|r| r.success).count();
    let mut per_fault: BTreeMap<String, PerFault> = BTreeMap::new();
    for name in faults.iter().map(|r| r.fault.clone()) {
        if per_fault.contains_key(&name) {
            continue;
        }
        let of: Vec<&&TrialResult> = faults.iter().filter(|r| r.fault == name).collect();
        let ok = of.iter().filter(|r| r.success).count();
        per_fault.insert(
            name,
            PerFault {
                trials: of.len(),
                passed: ok,
                pass_all: ok == of.len(),
                median_detect_ms: Spread::of(
                    of.iter().filter_map(|r| r.time_to_detect_ms).collect(),
                )
                .median_ms,
                median_mitigate_ms: Spread::of(
                    of.iter().filter_map(|r| r.time_to_mitigate_ms).collect(),
                )
                .median_ms,
            },
        );
    }
    let slowest_fault = per_fault
        .iter()
        .filter_map(|(k, v)| v.median_mitigate_ms.map(|m| (k.clone(), m)))
        .max_by_key(|(_, m)| *m);
    Summary {
        trials: results.len(),
        fault_trials: faults.len(),
        noop_trials: results.len() - faults.len(),
        passed,
        success_rate_percent: if results.is_empty() {
            0.0
        } else {
            100.0 * passed as f64 / results.len() as f64
        },
        correct_diagnoses: faults.iter().filter(|r| r.diagnosis_correct).count(),
        mitigated: faults
            .iter()
            .filter(|r| r.time_to_mitigate_ms.is_some())
            .count(),
        false_positives: results.iter().filter(|r| r.false_positive).count(),
        pass_k: (
            per_fault.values().filter(|p| p.pass_all).count(),
            per_fault.len(),
        ),
        detect: Spread::of(faults.iter().filter_map(|r| r.time_to_detect_ms).collect()),
        mitigate: Spread::of(
            faults
                .iter()
                .filter_map(|r| r.time_to_mitigate_ms)
                .collect(),
        ),
        reset: Spread::of(results.iter().map(|r| r.reset_ms).collect()),
        slowest_fault,
        per_fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn label(class: &str, component: &str) -> GroundTruth {
        GroundTruth {
            class: class.into(),
            component: component.into(),
            mechanism: String::new(),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn action(name: &str, params: Value, status: &str) -> ActionSeen {
        ActionSeen {
            at: t(5),
            action: name.into(),
            params,
            status: status.into(),
            destructive: true,
        }
    }

    fn good_trial() -> TrialResult {
        let mut r = TrialResult::new(1, "upstream_outage");
        r.label = Some(label("upstream_outage", "upstream-primary"));
        r.injected_at = Some(t(0));
        r.diagnoses.push(DiagnosisSeen {
            at: t(2),
            fault_class: "upstream_outage".into(),
            component: "upstream-primary".into(),
            correct: false,
        });
        r.broke = true;
        r.time_to_mitigate_ms = Some(6000);
        r.durable = true;
        r.durable_checks = (10, 10);
        r.actions.push(action(
            "switch_upstream",
            json!({"mode": "fallback"}),
            "executed",
        ));
        r
    }

    #[test]
    fn a_clean_fix_passes() {
        let mut r = good_trial();
        r.score();
        assert!(r.success, "{:?}", r.notes);
        assert!(r.diagnosis_correct);
        assert_eq!(r.time_to_detect_ms, Some(2000));
    }

    #[test]
    fn restarting_the_database_for_an_upstream_outage_is_collateral() {
        let mut r = good_trial();
        r.actions.push(action(
            "restart_service",
            json!({"service": "postgres"}),
            "executed",
        ));
        r.score();
        assert!(!r.success);
        assert_eq!(r.collateral.len(), 1, "{:?}", r.collateral);
        assert!(r.collateral[0].contains("restart_service postgres"));
    }

    #[test]
    fn refused_or_read_only_calls_are_not_collateral() {
        let mut r = good_trial();
        r.actions.push(action(
            "restart_service",
            json!({"service": "postgres"}),
            "refused",
        ));
        let mut ro = action(
            "restart_service",
            json!({"service": "postgres"}),
            "executed",
        );
        ro.destructive = false;
        r.actions.push(ro);
        r.score();
        assert!(r.success, "{:?}", r.notes);
        assert_eq!(r.refused(), 1);
    }

    #[test]
    fn wrong_first_diagnosis_fails_even_if_a_later_one_is_right() {
        let mut r = good_trial();
        r.diagnoses.insert(
            0,
            DiagnosisSeen {
                at: t(1),
                fault_class: "latency".into(),
                component: "target-app".into(),
                correct: false,
            },
        );
        r.score();
        assert!(!r.success);
        assert!(!r.diagnosis_correct);
        // Detection time counts to the first correct one.
        assert_eq!(r.time_to_detect_ms, Some(2000));
    }

    #[test]
    fn not_durable_or_leftovers_fail() {
        let mut r = good_trial();
        r.durable = false;
        r.durable_checks = (3, 10);
        r.score();
        assert!(!r.success);
        assert!(r.notes.iter().any(|n| n.contains("not durable")));
        let mut r = good_trial();
        r.leftovers
            .push("target-app failpoints still set: x".into());
        r.score();
        assert!(!r.success);
    }

    #[test]
    fn a_fault_that_never_broke_anything_does_not_pass() {
        let mut r = good_trial();
        r.broke = false;
        r.time_to_mitigate_ms = None;
        r.score();
        assert!(!r.success);
    }

    #[test]
    fn noop_trials_punish_any_action_or_diagnosis() {
        let mut quiet = TrialResult::new(2, "noop");
        quiet.score();
        assert!(quiet.success && !quiet.false_positive);

        let mut busy = TrialResult::new(3, "noop");
        busy.actions.push(action(
            "restart_service",
            json!({"service": "target-app"}),
            "executed",
        ));
        busy.score();
        assert!(!busy.success && busy.false_positive);
        assert_eq!(busy.collateral.len(), 1);

        let mut diag = TrialResult::new(4, "noop");
        diag.diagnoses.push(DiagnosisSeen {
            at: t(1),
            fault_class: "high_cpu".into(),
            component: "target-app".into(),
            correct: false,
        });
        diag.score();
        assert!(!diag.success && diag.false_positive);
    }

    #[test]
    fn spread_and_summary() {
        let s = Spread::of(vec![5, 1, 3, 2, 4]);
        assert_eq!(
            (s.median_ms, s.p95_ms, s.max_ms),
            (Some(3), Some(5), Some(5))
        );
        assert_eq!(Spread::of(vec![1, 2, 3, 4]).median_ms, Some(2));
        assert_eq!(Spread::of(vec![]).median_ms, None);

        let mut a = good_trial();
        a.score();
        let mut b = good_trial();
        b.durable = false;
        b.score();
        let mut c = TrialResult::new(3, "noop");
        c.score();
        let sum = summarize(&[a, b, c]);
        assert_eq!((sum.trials, sum.fault_trials, sum.noop_trials), (3, 2, 1));
        assert_eq!(sum.passed, 2);
        assert_eq!(sum.pass_k, (0, 1));
        assert_eq!(sum.per_fault["upstream_outage"].passed, 1);
        assert_eq!(sum.mitigate.median_ms, Some(6000));
    }
}
