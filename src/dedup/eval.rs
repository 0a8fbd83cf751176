//! Evaluation against known answers: pairwise and B-cubed precision, recall and F1, and how
//! well blocking kept the true pairs.
//!
//! Truth and predictions are given as one entity label per record (any hashable type), so
//! counting needs no list of pairs: the pairs within a cluster of size `k` number
//! `k (k - 1) / 2`, and the true positives are the pairs within each cell of the contingency
//! table of (predicted, true) labels.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use super::block::Candidates;

/// Counts of a pairwise comparison with the truth, and the measures derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Pairs predicted the same that are the same.
    pub true_positives: u64,
    /// Pairs predicted the same that are not.
    pub false_positives: u64,
    /// Pairs that are the same but were not predicted so.
    pub false_negatives: u64,
}

impl PairCounts {
    /// `tp / (tp + fp)`; 1 when nothing was predicted.
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// `tp / (tp + fn)`; 1 when there was nothing to find.
    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// The harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        harmonic(self.precision(), self.recall())
    }
}

impl fmt::Display for PairCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precision {:.4} recall {:.4} F1 {:.4} (tp {}, fp {}, fn {})",
            self.precision(),
            self.recall(),
            self.f1(),
            self.true_positives,
            self.false_positives,
            self.false_negatives
        )
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

fn harmonic(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

fn pairs_in(k: u64) -> u64 {
    k * k.saturating_sub(1) / 2
}

/// Pairwise counts of a clustering against the truth: every pair of records in one predicted
/// cluster is a predicted match, every pair in one true entity a true match. Only the first
/// `min(predicted.len(), truth.len())` records are counted.
pub fn pairwise<P: Eq + Hash, T: Eq + Hash>(predicted: &[P], truth: &[T]) -> PairCounts {
    let table = Contingency::new(predicted, truth);
    let tp: u64 = table.cells.values().map(|&k| pairs_in(k)).sum();
    let predicted_pairs: u64 = table.predicted.values().map(|&k| pairs_in(k)).sum();
    let true_pairs: u64 = table.truth.values().map(|&k| pairs_in(k)).sum();
    PairCounts {
        true_positives: tp,
        false_positives: predicted_pairs - tp,
        false_negatives: true_pairs - tp,
    }
}

/// Record counts per (predicted, true) label pair, per predicted label and per true label.
struct Contingency<'l, P, T> {
    cells: HashMap<(&'l P, &'l T), u64>,
    predicted: HashMap<&'l P, u64>,
    truth: HashMap<&'l T, u64>,
    records: usize,
}

impl<'l, P: Eq + Hash, T: Eq + Hash> Contingency<'l, P, T> {
    fn new(predicted: &'l [P], truth: &'l [T]) -> Self {
        let mut table = Contingency {
            cells: HashMap::new(),
            predicted: HashMap::new(),
            truth: HashMap::new(),
            records: predicted.len().min(truth.len()),
        };
        for (p, t) in predicted.iter().zip(truth) {
            *table.cells.entry((p, t)).or_default() += 1;
            *table.predicted.entry(p).or_default() += 1;
            *table.truth.entry(t).or_default() += 1;
        }
        table
    }
}

/// Pairwise counts over a list of labelled pairs only (e.g. clerical decisions): `pairs` are
/// `(a, b, same)`, and a pair is predicted the same when `a` and `b` share a predicted label.
/// Pairs naming a record out of range are skipped.
pub fn labelled_pairs<P: Eq>(predicted: &[P], pairs: &[(usize, usize, bool)]) -> PairCounts {
    let mut c = PairCounts::default();
    for &(a, b, same) in pairs {
        let (Some(pa), Some(pb)) = (predicted.get(a), predicted.get(b)) else {
            continue;
        };
        match (pa == pb, same) {
            (true, true) => c.true_positives += 1,
            (true, false) => c.false_positives += 1,
            (false, true) => c.false_negatives += 1,
            (false, false) => {}
        }
    }
    c
}

/// Cluster-level measures: B-cubed precision, recall and F1 (Bagga & Baldwin 1998).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BCubed {
    /// Mean over records of the share of its predicted cluster that is truly its entity.
    pub precision: f64,
    /// Mean over records of the share of its entity that is in its predicted cluster.
    pub recall: f64,
}

impl BCubed {
    /// The harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        harmonic(self.precision, self.recall)
    }
}

/// B-cubed precision and recall of a clustering against the truth.
pub fn b_cubed<P: Eq + Hash, T: Eq + Hash>(predicted: &[P], truth: &[T]) -> BCubed {
    let table = Contingency::new(predicted, truth);
    if table.records == 0 {
        return BCubed {
            precision: 1.0,
            recall: 1.0,
        };
    }
    // Each record in cell (p, t) scores |cell| / |p| for precision and |cell| / |t| for recall.
    let (mut precision, mut recall) = (0.0, 0.0);
    for (&(p, t), &k) in &table.cells {
        let k = k as f64;
        precision += k * k / table.predicted.get(p).copied().unwrap_or(1) as f64;
        recall += k * k / table.truth.get(t).copied().unwrap_or(1) as f64;
    }
    BCubed {
        precision: precision / table.records as f64,
        recall: recall / table.records as f64,
    }
}

/// How well blocking kept the true pairs while cutting the comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockingQuality {
    /// Candidate pairs.
    pub candidates: usize,
    /// True pairs among them.
    pub true_candidates: u64,
    /// All true pairs.
    pub true_pairs: u64,
    /// All pairs, `n (n - 1) / 2`.
    pub all_pairs: u64,
}

impl BlockingQuality {
    /// Pair completeness (blocking recall): the share of true pairs that are candidates.
    pub fn pair_completeness(&self) -> f64 {
        ratio(self.true_candidates, self.true_pairs)
    }

    /// Reduction ratio: the share of all pairs that blocking spared comparing.
    pub fn reduction_ratio(&self) -> f64 {
        1.0 - ratio(self.candidates as u64, self.all_pairs.max(1))
    }

    /// Pairs quality: the share of candidates that are true pairs.
    pub fn pairs_quality(&self) -> f64 {
        ratio(self.true_candidates, self.candidates as u64)
    }
}

/// Blocking quality of `candidates` over records whose true entities are `truth`.
pub fn blocking<T: Eq + Hash>(candidates: &Candidates, truth: &[T]) -> BlockingQuality {
    let mut by_truth: HashMap<&T, u64> = HashMap::new();
    for t in truth {
        *by_truth.entry(t).or_default() += 1;
    }
    let true_candidates = candidates
        .pairs()
        .iter()
        .filter(|p| matches!((truth.get(p.a()), truth.get(p.b())), (Some(x), Some(y)) if x == y))
        .count() as u64;
    BlockingQuality {
        candidates: candidates.len(),
        true_candidates,
        true_pairs: by_truth.values().map(|&k| pairs_in(k)).sum(),
        all_pairs: pairs_in(truth.len() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_counts_pairs_within_clusters() {
        // Truth: {0,1,2} {3,4}; predicted: {0,1} {2,3,4}.
        let truth = [1, 1, 1, 2, 2];
        let predicted = ['a', 'a', 'b', 'b', 'b'];
        let c = pairwise(&predicted, &truth);
        // Predicted pairs: 01, 23, 24, 34; true: 01, 02, 12, 34.
        assert_eq!(
            (c.true_positives, c.false_positives, c.false_negatives),
            (2, 2, 2)
        );
        assert!((c.f1() - 0.5).abs() < 1e-12);
        assert!(c.to_string().contains("F1 0.5000"));
    }

    #[test]
    fn perfect_and_empty_predictions() {
        let truth = [1, 1, 2];
        assert!((pairwise(&truth, &truth).f1() - 1.0).abs() < 1e-12);
        let singletons = [0, 1, 2];
        let c = pairwise(&singletons, &truth);
        assert_eq!((c.precision(), c.recall(), c.f1()), (1.0, 0.0, 0.0));
    }

    #[test]
    fn b_cubed_weighs_every_record() {
        let truth = [1, 1, 1, 2, 2];
        let predicted = ['a', 'a', 'b', 'b', 'b'];
        let b = b_cubed(&predicted, &truth);
        // Precision: 0,1 -> 1; 2 -> 1/3; 3,4 -> 2/3. Recall: 0,1 -> 2/3; 2 -> 1/3; 3,4 -> 1.
        assert!((b.precision - (2.0 + 1.0 / 3.0 + 4.0 / 3.0) / 5.0).abs() < 1e-12);
        assert!((b.recall - (4.0 / 3.0 + 1.0 / 3.0 + 2.0) / 5.0).abs() < 1e-12);
        assert!((b_cubed(&truth, &truth).f1() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn labelled_pairs_are_scored_one_by_one() {
        let predicted = [0, 0, 1];
        let c = labelled_pairs(
            &predicted,
            &[(0, 1, true), (0, 2, true), (1, 2, false), (0, 9, true)],
        );
        assert_eq!(
            (c.true_positives, c.false_positives, c.false_negatives),
            (1, 0, 1)
        );
    }
}
