//! The trial schedule: which fault (or none) each trial gets, chosen by the seed.
//!
//! Each round holds every requested fault once, in an order shuffled by the seed; no-fault
//! trials are spread among them at seeded positions. The same inputs give the same
//! schedule, so a drill can be replayed.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// The name a no-fault trial carries in results.
pub const NOOP: &str = "noop";

/// One trial to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedTrial {
    /// 1-based position in the drill.
    pub index: usize,
    /// A catalogue fault, or [`NOOP`].
    pub fault: String,
}

impl PlannedTrial {
    pub fn is_noop(&self) -> bool {
        self.fault == NOOP
    }
}

/// `faults` × `trials` rounds, each shuffled, plus `noops` no-fault trials at seeded
/// positions (never first, so the first trial always exercises a fault when there is one).
pub fn schedule(faults: &[String], trials: usize, noops: usize, seed: u64) -> Vec<PlannedTrial> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut names: Vec<String> = Vec::with_capacity(faults.len() * trials + noops);
    for _ in 0..trials {
        let mut round = faults.to_vec();
        round.shuffle(&mut rng);
        names.extend(round);
    }
    for _ in 0..noops {
        let lo = usize::from(!names.is_empty());
        let at = rand::Rng::random_range(&mut rng, lo..=names.len());
        names.insert(at, NOOP.to_string());
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, fault)| PlannedTrial {
            index: i + 1,
            fault,
        })
        .collect()
}

/// The default number of no-fault trials: one per six fault trials, at least one.
pub fn default_noops(fault_trials: usize) -> usize {
    (fault_trials / 6).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_fault_once_per_round_and_the_noops() {
        let f = names(&["a", "b", "c", "d"]);
        let s = schedule(&f, 3, 2, 7);
        assert_eq!(s.len(), 14);
        for name in &f {
            assert_eq!(s.iter().filter(|t| &t.fault == name).count(), 3);
        }
        assert_eq!(s.iter().filter(|t| t.is_noop()).count(), 2);
        assert!(!s[0].is_noop());
        assert_eq!(
            s.iter().map(|t| t.index).collect::<Vec<_>>(),
            (1..=14).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_seed_decides() {
        let f = names(&["a", "b", "c", "d", "e", "f"]);
        assert_eq!(schedule(&f, 2, 1, 42), schedule(&f, 2, 1, 42));
        let orders: std::collections::HashSet<Vec<String>> = (0..10)
            .map(|seed| {
                schedule(&f, 1, 0, seed)
                    .into_iter()
                    .map(|t| t.fault)
                    .collect()
            })
            .collect();
        assert!(
            orders.len() > 1,
            "different seeds must give different orders"
        );
    }

    #[test]
    fn noops_alone() {
        let s = schedule(&[], 1, 2, 1);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(PlannedTrial::is_noop));
    }
}
