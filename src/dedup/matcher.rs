//! The whole matching run over records in memory: block, train, score, cluster.

use std::time::{Duration, Instant};

use super::MatchRecord;
use super::block::{Blocker, BlockingRule, Candidates};
use super::cluster::{ClusterSettings, Clusters, Weighted, cluster_scored};
use super::compare::Comparison;
use super::model::{Model, Score, ScoredPair, TrainReport, Training};
use crate::error::Result;

/// Settings of a matching run: blocking rules, comparisons, training and clustering.
///
/// ```
/// use customerdb::Customer;
/// use customerdb::dedup::{MatchRecord, Matcher};
/// let people = ["Ada Lovelace", "Ada Lovelace", "Charles Babbage"];
/// let records: Vec<MatchRecord> = people
///     .iter()
///     .map(|n| Customer::builder().name(*n).email("ada@example.org").build().map(|c| MatchRecord::new(&c)))
///     .collect::<Result<_, _>>()?;
/// let run = Matcher::default().run(&records)?;
/// assert_eq!(run.candidates.len(), 3); // all share the email
/// assert!(run.model.explain(&records[0], &records[1]).weight > run.model.explain(&records[0], &records[2]).weight);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Matcher {
    /// How candidates are found.
    pub blocker: Blocker,
    /// What is compared.
    pub comparisons: Vec<Comparison>,
    /// How the model is trained.
    pub training: Training,
    /// How pairs become clusters.
    pub clustering: ClusterSettings,
}

impl Default for Matcher {
    fn default() -> Self {
        Matcher {
            blocker: Blocker::default(),
            comparisons: Comparison::defaults(),
            training: Training::default(),
            clustering: ClusterSettings::default(),
        }
    }
}

impl Matcher {
    /// Also blocks on and compares the custom attribute `name` (an identifier such as a tax
    /// number or a loyalty card).
    #[must_use]
    pub fn attribute(mut self, name: &str) -> Matcher {
        self.blocker = self.blocker.rule(BlockingRule::Attribute(name.to_owned()));
        self.comparisons
            .push(Comparison::Attribute(name.to_owned()));
        self
    }

    /// Blocks, trains a model without labels, scores every candidate pair and clusters.
    ///
    /// # Errors
    /// What [`Blocker::candidates`] refuses.
    pub fn run(&self, records: &[MatchRecord]) -> Result<Run> {
        let start = Instant::now();
        let candidates = self.blocker.candidates(records)?;
        let blocked = start.elapsed();
        let (model, training, vectors) = Model::train_packed(
            self.comparisons.clone(),
            records,
            &candidates,
            &self.training,
        );
        let trained = start.elapsed();
        let weights = model.weights_packed(records, candidates.pairs(), &vectors);
        drop(vectors);
        let scored = Weighted {
            pairs: candidates.pairs(),
            weights: &weights,
        };
        let clusters = cluster_scored(records.len(), &scored, &self.clustering, |a, b| {
            match (records.get(a), records.get(b)) {
                (Some(x), Some(y)) => model.score(x, y).probability,
                _ => 0.0,
            }
        });
        let total = start.elapsed();
        Ok(Run {
            candidates,
            model,
            training,
            weights,
            clusters,
            timings: Timings {
                blocking: blocked,
                training: trained.saturating_sub(blocked),
                scoring_and_clustering: total.saturating_sub(trained),
            },
        })
    }
}

impl Run {
    /// Every candidate pair, scored, in candidate order.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = ScoredPair> + '_ {
        self.candidates
            .pairs()
            .iter()
            .zip(&self.weights)
            .map(|(p, &w)| ScoredPair {
                a: p.a(),
                b: p.b(),
                score: Score::from_weight(w),
            })
    }
}

/// Where a run's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Finding candidate pairs.
    pub blocking: Duration,
    /// Estimating `u`, term frequencies and `m`.
    pub training: Duration,
    /// Scoring the candidates and clustering them.
    pub scoring_and_clustering: Duration,
}

/// The outcome of [`Matcher::run`].
#[derive(Debug, Clone)]
pub struct Run {
    /// The candidate pairs and the blocking report.
    pub candidates: Candidates,
    /// The trained model.
    pub model: Model,
    /// What training did.
    pub training: TrainReport,
    /// Every candidate pair's match weight, in candidate order ([`Run::pairs`] pairs them
    /// up): 8 bytes a pair, where a [`ScoredPair`] is 32, which at a million customers is
    /// the difference between 40 and 160 MiB.
    pub weights: Vec<f64>,
    /// The entities.
    pub clusters: Clusters,
    /// Time per stage.
    pub timings: Timings,
}
