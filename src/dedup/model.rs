//! Fellegi-Sunter scoring: match weights per comparison level, learned without labels.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::MatchRecord;
use super::block::{CandidatePair, Candidates};
use super::compare::Comparison;
use super::explain::{Explanation, Term};
use super::hash::FastHash;
use crate::sample::SplitMix64;

/// Level value for a missing comparison in a packed comparison vector.
const MISSING: u8 = u8::MAX;

/// A record's name count when it has no such name (see [`Model::weights_packed`]).
const NO_VALUE: u32 = u32::MAX;

/// Probabilities are kept inside `[FLOOR, 1 - FLOOR]`, so every weight is finite.
const FLOOR: f64 = 1e-9;

/// The `m` and `u` probabilities of one comparison level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelParams {
    /// P(level | same person).
    pub m: f64,
    /// P(level | different people).
    pub u: f64,
}

impl LevelParams {
    /// The level's match weight, `log2(m / u)`.
    pub fn weight(&self) -> f64 {
        (self.m / self.u).log2()
    }
}

/// A comparison and the parameters of each of its levels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonParams {
    /// The comparison.
    pub comparison: Comparison,
    /// One entry per level of [`Comparison::levels`].
    pub levels: Vec<LevelParams>,
}

/// How often each given and family name key occurs among the training records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TermFrequencies {
    records: u64,
    floor: u32,
    given: BTreeMap<String, u32>,
    family: BTreeMap<String, u32>,
}

/// The most values a [`TermFrequencies`] table keeps per field (the most frequent); rarer
/// values count as the rarest value kept, which under-weights them slightly.
pub const MAX_TERMS: usize = 100_000;

impl TermFrequencies {
    /// Counts name keys over `records`.
    pub fn count(records: &[MatchRecord]) -> TermFrequencies {
        let mut given: HashMap<&str, u32, FastHash> = HashMap::default();
        let mut family: HashMap<&str, u32, FastHash> = HashMap::default();
        for r in records {
            if let Some(g) = r.given() {
                *given.entry(g).or_default() += 1;
            }
            if let Some(f) = r.family() {
                *family.entry(f).or_default() += 1;
            }
        }
        let (given, g_floor) = top_terms(given);
        let (family, f_floor) = top_terms(family);
        TermFrequencies {
            records: records.len() as u64,
            floor: g_floor.max(f_floor),
            given,
            family,
        }
    }

    /// The relative frequency of a value of the comparison's field, when the table has one.
    fn frequency(&self, comparison: &Comparison, value: &str) -> Option<f64> {
        let table = match comparison {
            Comparison::GivenName => &self.given,
            Comparison::FamilyName => &self.family,
            _ => return None,
        };
        self.relative(table.get(value).copied())
    }

    fn relative(&self, count: Option<u32>) -> Option<f64> {
        if self.records == 0 {
            return None;
        }
        let count = count.unwrap_or(self.floor).max(1);
        Some(f64::from(count) / self.records as f64)
    }

    /// Both tables in hash maps, for looking up many values at once.
    fn lookup_table(&self) -> [HashMap<&str, u32, FastHash>; 2] {
        fn hashed(t: &BTreeMap<String, u32>) -> HashMap<&str, u32, FastHash> {
            let mut m: HashMap<&str, u32, FastHash> = HashMap::default();
            m.extend(t.iter().map(|(k, &v)| (k.as_str(), v)));
            m
        }
        [hashed(&self.given), hashed(&self.family)]
    }

    /// The count of a value in the table of the comparison's field, through a
    /// [`TermFrequencies::lookup_table`]; `None` when the field has no table or the value is
    /// not in it.
    fn count_in(
        table: &[HashMap<&str, u32, FastHash>; 2],
        comparison: &Comparison,
        value: &str,
    ) -> Option<u32> {
        let table = match comparison {
            Comparison::GivenName => &table[0],
            Comparison::FamilyName => &table[1],
            _ => return None,
        };
        table.get(value).copied()
    }
}

/// The [`MAX_TERMS`] most frequent values (ties by value, for determinism), and the count
/// that values left out are given (1 when none is left out).
fn top_terms(counts: HashMap<&str, u32, FastHash>) -> (BTreeMap<String, u32>, u32) {
    let mut all: Vec<(&str, u32)> = counts.into_iter().collect();
    if all.len() <= MAX_TERMS {
        return (all.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(), 1);
    }
    all.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    all.truncate(MAX_TERMS);
    let floor = all.last().map_or(1, |t| t.1);
    (
        all.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        floor,
    )
}

/// Settings for [`Model::train`].
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// Random pairs for estimating `u` (all pairs when there are fewer).
    pub u_pairs: usize,
    /// Seed of the random pair sample.
    pub seed: u64,
    /// Most expectation-maximisation iterations.
    pub max_iterations: usize,
    /// EM stops when no `m` moves by more than this in an iteration.
    pub tolerance: f64,
}

impl Default for Training {
    fn default() -> Self {
        Training {
            u_pairs: 1_000_000,
            seed: 0x5EED,
            max_iterations: 100,
            tolerance: 1e-6,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Pairs `u` was estimated from.
    pub u_pairs: usize,
    /// Candidate pairs EM ran over.
    pub candidate_pairs: usize,
    /// Distinct comparison vectors among them.
    pub patterns: usize,
    /// The EM sessions that estimated `m`, one per blocking rule that produced pairs.
    pub sessions: Vec<EmSession>,
    /// Iterations of the final EM pass over all candidates (estimating λ).
    pub iterations: usize,
    /// Whether that pass met its tolerance before the iteration limit.
    pub converged: bool,
    /// The estimated share of candidate pairs that are matches.
    pub candidate_match_share: f64,
}

/// One EM session of training: the pairs of one blocking rule.
#[derive(Debug, Clone, PartialEq)]
pub struct EmSession {
    /// The blocking rule's name.
    pub rule: String,
    /// Its candidate pairs.
    pub pairs: usize,
    /// Iterations run.
    pub iterations: usize,
    /// Whether EM met its tolerance before the iteration limit.
    pub converged: bool,
    /// The estimated share of matches among its pairs.
    pub match_share: f64,
}

/// A pair's match weight and probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// log2 Bayes factor plus prior weight.
    pub weight: f64,
    /// Match probability, `2^weight / (1 + 2^weight)`.
    pub probability: f64,
}

impl Score {
    pub(crate) fn from_weight(weight: f64) -> Score {
        Score {
            weight,
            probability: probability(weight),
        }
    }
}

/// The match probability of a weight, `2^w / (1 + 2^w)`, computed without overflow.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

/// The weight of a match probability, `log2(p / (1 - p))`; the inverse of [`probability`].
pub fn weight_of(probability: f64) -> f64 {
    let p = probability.clamp(FLOOR, 1.0 - FLOOR);
    (p / (1.0 - p)).log2()
}

/// A scored candidate pair: record indexes `a < b` and the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    /// The first record's index.
    pub a: usize,
    /// The second record's index.
    pub b: usize,
    /// The pair's score.
    pub score: Score,
}

/// A trained Fellegi-Sunter model; serialisable, so a store can keep it.
///
/// For each comparison level `l`, `m` is the probability that a matching pair reaches `l`
/// and `u` the probability that a non-matching pair does. A pair's *match weight* is the log2
/// Bayes factor `Σ log2(m/u)` over its comparisons (a missing value adds 0) plus the prior
/// weight `log2(λ / (1 - λ))`, where `λ` is the probability that two records drawn at random
/// are the same person; its match probability is `2^w / (1 + 2^w)`.
///
/// Training ([`Model::train`]) needs no labels:
///
/// 1. `u` from random pairs (every pair when there are at most [`Training::u_pairs`] of them,
///    otherwise that many drawn with a seeded [`SplitMix64`]): almost all random pairs are
///    different people. Counts get one pseudo-count per level, so no level has `u = 0`.
/// 2. `m` by expectation maximisation with `u` held fixed, in one session per blocking rule
///    over the candidate pairs that rule produced, leaving out the comparisons its keys are
///    made of (pairs that share a family name agree on it whatever `u` says; pairs that share
///    an email agree on names no more than random pairs do, so they teach the names' `m`).
///    Each comparison's `m` is the average of its sessions, weighted by their expected
///    matches. Identical comparison vectors are grouped first, so an iteration costs one pass
///    over the distinct vectors, not over the pairs. A comparison no session could learn is
///    fitted in step 3.
/// 3. One more EM pass over all candidates gives the share of matches among them; `λ` is the
///    expected number of matches among the candidates over the number of all pairs.
///
/// Exact name matches are weighted by term frequency: an exact match on a value of frequency
/// `f` weighs `log2(m / f)` instead of `log2(m / u)`, so a match on a rare family name counts
/// more than one on a common name. Frequencies are counted over the training records.
///
/// Human decisions refine a trained model ([`Model::train_with_labels`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    comparisons: Vec<ComparisonParams>,
    /// λ: the probability that two records drawn at random are the same person.
    prior: f64,
    term_frequencies: TermFrequencies,
    /// How many pairs' worth of evidence stand behind `m` and behind `u`, for blending labels.
    m_evidence: f64,
    u_evidence: f64,
}

impl Model {
    /// An untrained model: `m` falling by half per level from the best; `u` rising fourfold
    /// per level from 0.005 for the best (an exact match of a field is rare between two
    /// random people), the worst level taking the rest; the given prior λ; no term
    /// frequencies. A store matches with it until it has data to train on; train with
    /// [`Model::train`] where data allows.
    pub fn untrained(comparisons: Vec<Comparison>, prior: f64) -> Model {
        let comparisons = comparisons
            .into_iter()
            .map(|comparison| {
                let n = comparison.levels().len();
                let m = initial_m(n);
                let u = initial_u(n);
                let levels = m
                    .into_iter()
                    .zip(u)
                    .map(|(m, u)| LevelParams { m, u })
                    .collect();
                ComparisonParams { comparison, levels }
            })
            .collect();
        Model {
            comparisons,
            prior: prior.clamp(FLOOR, 1.0 - FLOOR),
            term_frequencies: TermFrequencies::default(),
            m_evidence: 0.0,
            u_evidence: 0.0,
        }
    }

    /// Trains a model on `records` without labels: term frequencies and `u` from the records,
    /// `m` and λ by expectation maximisation over `candidates` (see [`Model`]).
    /// Deterministic for a given input and [`Training::seed`].
    pub fn train(
        comparisons: Vec<Comparison>,
        records: &[MatchRecord],
        candidates: &Candidates,
        training: &Training,
    ) -> (Model, TrainReport) {
        let (model, report, _) = Model::train_packed(comparisons, records, candidates, training);
        (model, report)
    }

    /// [`Model::train`], also returning the candidates' packed comparison vectors, so that
    /// scoring them does not compare every pair again.
    pub(crate) fn train_packed(
        comparisons: Vec<Comparison>,
        records: &[MatchRecord],
        candidates: &Candidates,
        training: &Training,
    ) -> (Model, TrainReport, Vec<u8>) {
        let mut model = Model::untrained(comparisons, 0.5);
        model.term_frequencies = TermFrequencies::count(records);
        let u_pairs = model.estimate_u(records, training);
        let k = model.comparisons.len();
        let vectors = model.comparison_vectors(records, candidates.pairs());

        // 1. m, one EM session per blocking rule over the pairs it produced, leaving out the
        //    comparisons its keys are made of: among pairs that share an email, non-matches
        //    agree on names about as often as random pairs do, so `u` holds for the names,
        //    while among pairs blocked on the family name it does not.
        let mut m_sum: Vec<Vec<f64>> = model.zero_levels();
        let mut evidence = vec![0.0; k];
        let mut sessions = Vec::new();
        for (bit, rule) in candidates.report().rules.iter().enumerate() {
            let fit: Vec<bool> = model
                .comparisons
                .iter()
                .map(|c| !rule.rule.uses(&c.comparison))
                .collect();
            let rows = candidates
                .pairs()
                .iter()
                .zip(vectors.chunks_exact(k.max(1)))
                .filter(|(p, _)| p.has_rule(bit))
                .map(|(_, v)| v);
            let patterns = group_patterns(rows, k, &fit);
            let pairs: f64 = patterns.iter().map(|(_, c)| c).sum();
            if pairs == 0.0 || !fit.contains(&true) {
                continue;
            }
            let mut session = model.clone();
            let em = session.expectation_maximisation(&patterns, &fit, training);
            let weight = em.share * pairs;
            for (c, params) in session.comparisons.iter().enumerate() {
                if fit[c] {
                    for (sum, level) in m_sum[c].iter_mut().zip(&params.levels) {
                        *sum += weight * level.m;
                    }
                    evidence[c] += weight;
                }
            }
            sessions.push(EmSession {
                rule: rule.rule.name(),
                pairs: rule.pairs,
                iterations: em.iterations,
                converged: em.converged,
                match_share: em.share,
            });
        }
        for ((params, sums), &w) in model.comparisons.iter_mut().zip(&m_sum).zip(&evidence) {
            if w > 0.0 {
                for (level, sum) in params.levels.iter_mut().zip(sums) {
                    level.m = clamp_p(sum / w);
                }
            }
        }

        // 2. λ over all candidates with those `m` (and the `m` of comparisons no session could
        //    fit, which only this pass estimates).
        let unfitted: Vec<bool> = evidence.iter().map(|&w| w == 0.0).collect();
        let patterns = group_patterns(vectors.chunks_exact(k.max(1)), k, &vec![true; k]);
        let em = model.expectation_maximisation(&patterns, &unfitted, training);
        let n = records.len() as f64;
        let all_pairs = n * (n - 1.0) / 2.0;
        let expected_matches = em.share * candidates.len() as f64;
        model.prior = if all_pairs > 0.0 {
            (expected_matches / all_pairs).clamp(FLOOR, 0.5)
        } else {
            0.5
        };
        model.m_evidence = expected_matches;
        model.u_evidence = u_pairs as f64;
        let report = TrainReport {
            u_pairs,
            candidate_pairs: candidates.len(),
            patterns: patterns.len(),
            sessions,
            iterations: em.iterations,
            converged: em.converged,
            candidate_match_share: em.share,
        };
        (model, report, vectors)
    }

    /// Makes every comparison's weights fall (or stay level) from its best level to its
    /// worst: a closer agreement is never weaker evidence than a looser one. EM can learn the
    /// opposite when the candidates hold few true duplicates (a store with none yet fits its
    /// "match" class to households, say, where given names differ), and a model that counts
    /// an exact name match against a pair must not reach the store. Each level's weight
    /// becomes the largest weight at or below it (a running maximum from the worst level),
    /// then `m` is normalised again.
    ///
    /// The store applies it to every model it keeps; [`Model::train`] leaves it to the
    /// caller, since on data with many true duplicates the unconstrained fit can be the
    /// better one.
    pub fn make_monotone(&mut self) {
        for c in &mut self.comparisons {
            let mut floor = f64::NEG_INFINITY;
            for level in c.levels.iter_mut().rev() {
                let w = level.weight();
                if w < floor {
                    level.m = clamp_p(level.u * floor.exp2());
                }
                floor = floor.max(level.weight());
            }
            let total: f64 = c.levels.iter().map(|l| l.m).sum();
            if total > 0.0 {
                for level in &mut c.levels {
                    level.m = clamp_p(level.m / total);
                }
            }
        }
    }

    fn zero_levels(&self) -> Vec<Vec<f64>> {
        self.comparisons
            .iter()
            .map(|c| vec![0.0; c.levels.len()])
            .collect()
    }

    /// Estimates every `u` from random pairs; returns how many pairs were compared.
    fn estimate_u(&mut self, records: &[MatchRecord], training: &Training) -> usize {
        let n = records.len() as u64;
        let all = n * n.saturating_sub(1) / 2;
        let pairs: Vec<(u32, u32)> = if all <= training.u_pairs as u64 {
            let n = n as u32;
            (0..n)
                .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
                .collect()
        } else {
            let mut rng = SplitMix64::new(training.seed);
            (0..training.u_pairs)
                .map(|_| {
                    loop {
                        let a = rng.below(n) as u32;
                        let b = rng.below(n) as u32;
                        if a != b {
                            break (a.min(b), a.max(b));
                        }
                    }
                })
                .collect()
        };
        let vectors = parallel_vectors(self, records, &pairs);
        let k = self.comparisons.len();
        let mut counts: Vec<Vec<f64>> = self
            .comparisons
            .iter()
            .map(|c| vec![1.0; c.levels.len()])
            .collect();
        for v in vectors.chunks_exact(k.max(1)) {
            for (c, &l) in counts.iter_mut().zip(v) {
                if let Some(slot) = c.get_mut(usize::from(l)) {
                    *slot += 1.0;
                }
            }
        }
        for (params, counts) in self.comparisons.iter_mut().zip(&counts) {
            let total: f64 = counts.iter().sum();
            for (level, count) in params.levels.iter_mut().zip(counts) {
                level.u = clamp_p(count / total);
            }
        }
        pairs.len()
    }

    /// EM over grouped comparison vectors with `u` fixed: estimates the share of matches and
    /// the `m` of the comparisons marked in `fit`; comparisons missing (`MISSING`) in every
    /// pattern add nothing.
    fn expectation_maximisation(
        &mut self,
        patterns: &[(Vec<u8>, f64)],
        fit: &[bool],
        training: &Training,
    ) -> Em {
        let mut share: f64 = 0.1;
        let mut iterations = 0;
        let mut converged = false;
        let total: f64 = patterns.iter().map(|(_, c)| c).sum();
        if total == 0.0 {
            return Em {
                share: 0.0,
                iterations,
                converged: true,
            };
        }
        while iterations < training.max_iterations {
            iterations += 1;
            let prior_weight = weight_of(share);
            let mut m_sums = self.zero_levels();
            let mut matches = 0.0;
            for (levels, count) in patterns {
                let p = probability(prior_weight + self.vector_weight(levels)) * count;
                matches += p;
                for (sums, &l) in m_sums.iter_mut().zip(levels) {
                    if let Some(s) = sums.get_mut(usize::from(l)) {
                        *s += p;
                    }
                }
            }
            let mut delta: f64 = 0.0;
            for ((params, sums), &fit) in self.comparisons.iter_mut().zip(&m_sums).zip(fit) {
                let present: f64 = sums.iter().sum();
                if !fit || present <= 0.0 {
                    continue;
                }
                for (level, s) in params.levels.iter_mut().zip(sums) {
                    let m = clamp_p(s / present);
                    delta = delta.max((m - level.m).abs());
                    level.m = m;
                }
            }
            let new_share = clamp_p(matches / total);
            delta = delta.max((new_share - share).abs());
            share = new_share;
            if delta < training.tolerance {
                converged = true;
                break;
            }
        }
        Em {
            share,
            iterations,
            converged,
        }
    }

    /// The comparisons and their parameters.
    pub fn comparisons(&self) -> &[ComparisonParams] {
        &self.comparisons
    }

    /// λ, the probability that two records drawn at random are the same person.
    pub fn prior(&self) -> f64 {
        self.prior
    }

    /// The prior's weight, `log2(λ / (1 - λ))`.
    pub fn prior_weight(&self) -> f64 {
        weight_of(self.prior)
    }

    /// The term frequencies exact name matches are weighted by.
    pub fn term_frequencies(&self) -> &TermFrequencies {
        &self.term_frequencies
    }

    /// The level each comparison reaches for `a` and `b` (`None` where a value is missing).
    pub fn levels(&self, a: &MatchRecord, b: &MatchRecord) -> Vec<Option<u8>> {
        self.comparisons
            .iter()
            .map(|c| c.comparison.compare(a, b))
            .collect()
    }

    /// The score of a pair.
    pub fn score(&self, a: &MatchRecord, b: &MatchRecord) -> Score {
        let mut packed = Vec::with_capacity(self.comparisons.len());
        self.pack(a, b, &mut packed);
        Score::from_weight(self.packed_weight(&packed, a, b))
    }

    /// The score of a pair with every term shown: each comparison's values, level and weight,
    /// and the prior, which add up to the score ([`Explanation::weight`]).
    pub fn explain(&self, a: &MatchRecord, b: &MatchRecord) -> Explanation {
        let mut terms = Vec::with_capacity(self.comparisons.len());
        for params in &self.comparisons {
            let c = &params.comparison;
            let level = c.compare(a, b);
            let (weight, tf) = self.term_weight(params, level.unwrap_or(MISSING), a);
            terms.push(Term {
                comparison: c.name(),
                left: c.values(a),
                right: c.values(b),
                level: level.and_then(|l| c.levels().get(usize::from(l)).copied()),
                weight,
                term_frequency: tf,
            });
        }
        Explanation::new(self.prior_weight(), terms)
    }

    /// Scores every candidate pair, in the candidates' order, using every core.
    pub fn score_pairs(&self, records: &[MatchRecord], candidates: &Candidates) -> Vec<ScoredPair> {
        let vectors = self.comparison_vectors(records, candidates.pairs());
        self.score_packed(records, candidates.pairs(), &vectors)
    }

    /// Scores pairs from their packed comparison vectors (as [`Model::train_packed`] returns).
    pub(crate) fn score_packed(
        &self,
        records: &[MatchRecord],
        pairs: &[CandidatePair],
        vectors: &[u8],
    ) -> Vec<ScoredPair> {
        let weights = self.weights_packed(records, pairs, vectors);
        // Sized once: growing a vector of millions of pairs by doubling holds two copies.
        let mut out = Vec::with_capacity(pairs.len());
        out.extend(pairs.iter().zip(weights).map(|(p, w)| ScoredPair {
            a: p.a(),
            b: p.b(),
            score: Score::from_weight(w),
        }));
        out
    }

    /// The match weight of each pair from its packed comparison vector, in the pairs' order:
    /// 8 bytes a pair, where a [`ScoredPair`] is 32 (the probability follows from the weight,
    /// the records from the pair). A pair naming a record out of range weighs the prior alone.
    pub(crate) fn weights_packed(
        &self,
        records: &[MatchRecord],
        pairs: &[CandidatePair],
        vectors: &[u8],
    ) -> Vec<f64> {
        let k = self.comparisons.len().max(1);
        // Each record's name counts, looked up once rather than once per pair: 4 bytes per
        // record and column (`NO_VALUE` when the record has none, 0 when the table lacks it),
        // the frequency computed from the count as `TermFrequencies::relative` does.
        let table = self.term_frequencies.lookup_table();
        let columns: Vec<&Comparison> = self
            .comparisons
            .iter()
            .map(|c| &c.comparison)
            .filter(|c| c.has_term_frequency())
            .collect();
        let t = columns.len();
        let counts: Vec<u32> = records
            .iter()
            .flat_map(|r| {
                columns.iter().map(|c| {
                    c.tf_value(r).map_or(NO_VALUE, |value| {
                        TermFrequencies::count_in(&table, c, value).unwrap_or(0)
                    })
                })
            })
            .collect();
        drop(table);
        let prior = self.prior_weight();
        let mut out = Vec::with_capacity(pairs.len());
        out.extend(pairs.iter().zip(vectors.chunks_exact(k)).map(|(p, v)| {
            let mut w = prior;
            let Some(own) = counts.get(p.a() * t..(p.a() + 1) * t) else {
                return w;
            };
            if records.get(p.b()).is_none() {
                return w;
            }
            let mut column = 0;
            for (params, &l) in self.comparisons.iter().zip(v) {
                let tf = if params.comparison.has_term_frequency() {
                    column += 1;
                    match own.get(column - 1).copied() {
                        None | Some(NO_VALUE) => None,
                        Some(0) => self.term_frequencies.relative(None),
                        Some(count) => self.term_frequencies.relative(Some(count)),
                    }
                } else {
                    None
                };
                w += Model::term_weight_with(params, l, tf).0;
            }
            w
        }));
        out
    }

    /// Refines `m` and `u` with pairs a person has decided on (`true` for the same person).
    ///
    /// Each level's `m` becomes the blend of the current estimate, counted as the number of
    /// matches it was learned from, and the levels reached by the `same` pairs, each counted
    /// `label_weight` times; `u` likewise with the random pairs it was estimated from and the
    /// `different` pairs. So a few decisions nudge the weights and many outweigh the
    /// unsupervised estimate. Returns how many pairs of each kind were used.
    pub fn train_with_labels<'r>(
        &mut self,
        labels: impl IntoIterator<Item = (&'r MatchRecord, &'r MatchRecord, bool)>,
        label_weight: f64,
    ) -> (usize, usize) {
        let label_weight = if label_weight.is_finite() && label_weight > 0.0 {
            label_weight
        } else {
            1.0
        };
        let zero = |s: &Self| -> Vec<Vec<f64>> {
            s.comparisons
                .iter()
                .map(|c| vec![0.0; c.levels.len()])
                .collect()
        };
        let (mut same, mut different) = (zero(self), zero(self));
        let (mut n_same, mut n_diff) = (0, 0);
        let mut packed = Vec::new();
        for (a, b, is_same) in labels {
            self.pack(a, b, &mut packed);
            let sums = if is_same {
                n_same += 1;
                &mut same
            } else {
                n_diff += 1;
                &mut different
            };
            for (s, &l) in sums.iter_mut().zip(&packed) {
                if let Some(slot) = s.get_mut(usize::from(l)) {
                    *slot += label_weight;
                }
            }
        }
        let (m_prior, u_prior) = (self.m_evidence, self.u_evidence);
        for ((params, s), d) in self.comparisons.iter_mut().zip(&same).zip(&different) {
            let (s_total, d_total): (f64, f64) = (s.iter().sum(), d.iter().sum());
            for ((level, s), d) in params.levels.iter_mut().zip(s).zip(d) {
                if s_total > 0.0 {
                    level.m = clamp_p((m_prior * level.m + s) / (m_prior + s_total));
                }
                if d_total > 0.0 {
                    level.u = clamp_p((u_prior * level.u + d) / (u_prior + d_total));
                }
            }
        }
        self.m_evidence += label_weight * n_same as f64;
        self.u_evidence += label_weight * n_diff as f64;
        (n_same, n_diff)
    }

    /// Writes the packed comparison vector of a pair into `out`.
    fn pack(&self, a: &MatchRecord, b: &MatchRecord, out: &mut Vec<u8>) {
        out.clear();
        out.extend(
            self.comparisons
                .iter()
                .map(|c| c.comparison.compare(a, b).unwrap_or(MISSING)),
        );
    }

    /// Packed comparison vectors of `pairs`, concatenated.
    fn comparison_vectors(&self, records: &[MatchRecord], pairs: &[CandidatePair]) -> Vec<u8> {
        parallel_vectors(self, records, pairs)
    }

    /// Σ log2(m/u) over a packed vector, without term frequencies (for EM).
    fn vector_weight(&self, levels: &[u8]) -> f64 {
        self.comparisons
            .iter()
            .zip(levels)
            .filter_map(|(c, &l)| c.levels.get(usize::from(l)))
            .map(LevelParams::weight)
            .sum()
    }

    /// The full weight of a pair from its packed vector: prior, then each term in order (the
    /// same order and arithmetic as [`Model::explain`], so the two agree exactly).
    fn packed_weight(&self, levels: &[u8], a: &MatchRecord, _b: &MatchRecord) -> f64 {
        let mut w = self.prior_weight();
        for (params, &l) in self.comparisons.iter().zip(levels) {
            w += self.term_weight(params, l, a).0;
        }
        w
    }

    /// One comparison's weight at a level, and the term frequency used for it, if any.
    fn term_weight(
        &self,
        params: &ComparisonParams,
        level: u8,
        a: &MatchRecord,
    ) -> (f64, Option<f64>) {
        let tf = if level == 0 {
            params
                .comparison
                .tf_value(a)
                .and_then(|v| self.term_frequencies.frequency(&params.comparison, v))
        } else {
            None
        };
        Model::term_weight_with(params, level, tf)
    }

    /// [`Model::term_weight`] with the frequency of the first record's value (if the
    /// comparison has one) given.
    fn term_weight_with(
        params: &ComparisonParams,
        level: u8,
        tf: Option<f64>,
    ) -> (f64, Option<f64>) {
        let Some(p) = params.levels.get(usize::from(level)) else {
            return (0.0, None);
        };
        if level == 0 {
            if let Some(f) = tf {
                return ((p.m / clamp_p(f)).log2(), Some(f));
            }
        }
        (p.weight(), None)
    }
}

/// What EM ended with.
struct Em {
    share: f64,
    iterations: usize,
    converged: bool,
}

fn clamp_p(p: f64) -> f64 {
    if p.is_nan() {
        FLOOR
    } else {
        p.clamp(FLOOR, 1.0 - FLOOR)
    }
}

/// `u` before training: 0.005 for the best level, four times more per level below it, the
/// worst level taking what is left (at least a quarter).
fn initial_u(levels: usize) -> Vec<f64> {
    let mut u: Vec<f64> = std::iter::successors(Some(0.005f64), |w| Some(w * 4.0))
        .take(levels.saturating_sub(1))
        .collect();
    let used: f64 = u.iter().sum();
    u.push((1.0 - used).max(0.25));
    let total: f64 = u.iter().sum();
    u.into_iter().map(|x| x / total).collect()
}

/// `m` before training: halving per level from the best, normalised.
fn initial_m(levels: usize) -> Vec<f64> {
    let raw: Vec<f64> = std::iter::successors(Some(1.0f64), |w| Some(w / 2.0))
        .take(levels)
        .collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|m| m / total).collect()
}

/// A pair of record indexes, as the comparison loop reads it.
trait PairOf: Sync {
    fn records(&self) -> (usize, usize);
}

impl PairOf for (u32, u32) {
    fn records(&self) -> (usize, usize) {
        (self.0 as usize, self.1 as usize)
    }
}

impl PairOf for CandidatePair {
    fn records(&self) -> (usize, usize) {
        (self.a(), self.b())
    }
}

/// Distinct comparison vectors with their counts, sorted so that EM sums in a fixed order;
/// comparisons not marked in `keep` are set missing first.
fn group_patterns<'v>(
    vectors: impl Iterator<Item = &'v [u8]>,
    k: usize,
    keep: &[bool],
) -> Vec<(Vec<u8>, f64)> {
    let mut counts: HashMap<Vec<u8>, f64, FastHash> = HashMap::default();
    let mut masked = Vec::with_capacity(k);
    for v in vectors {
        masked.clear();
        masked.extend(
            v.iter()
                .zip(keep)
                .map(|(&l, &keep)| if keep { l } else { MISSING }),
        );
        if let Some(c) = counts.get_mut(masked.as_slice()) {
            *c += 1.0;
        } else {
            counts.insert(masked.clone(), 1.0);
        }
    }
    let mut patterns: Vec<(Vec<u8>, f64)> = counts.into_iter().collect();
    patterns.sort_unstable_by(|x, y| x.0.cmp(&y.0));
    patterns
}

/// Pairs below this many are compared on the calling thread.
const PARALLEL_MIN: usize = 20_000;

/// Packed comparison vectors of `pairs`, concatenated in order, computed on every core.
/// A pair naming a record out of range gets an all-missing vector. Each worker writes its
/// share of the one output buffer, so the vectors are held once, not once in the workers'
/// buffers and again in the result.
fn parallel_vectors<P: PairOf>(model: &Model, records: &[MatchRecord], pairs: &[P]) -> Vec<u8> {
    let k = model.comparisons.len();
    let run = |chunk: &[P], out: &mut [u8]| {
        let mut packed = Vec::with_capacity(k);
        for (p, slot) in chunk.iter().zip(out.chunks_exact_mut(k.max(1))) {
            let (a, b) = p.records();
            match (records.get(a), records.get(b)) {
                (Some(ra), Some(rb)) => {
                    model.pack(ra, rb, &mut packed);
                    slot.copy_from_slice(&packed);
                }
                _ => slot.fill(MISSING),
            }
        }
    };
    let mut out = vec![MISSING; pairs.len() * k];
    if k == 0 {
        return out;
    }
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if threads < 2 || pairs.len() < PARALLEL_MIN {
        run(pairs, &mut out);
        return out;
    }
    let chunk = pairs.len().div_ceil(threads);
    let failed: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * k))
            .map(|(c, o)| s.spawn(move || run(c, o)))
            .collect();
        (0..handles.len())
            .zip(handles)
            .filter_map(|(i, h)| h.join().is_err().then_some(i))
            .collect()
    });
    // A panicking comparator is a bug; recompute that chunk here rather than lose it.
    for i in failed {
        if let (Some(c), Some(o)) = (pairs.chunks(chunk).nth(i), out.chunks_mut(chunk * k).nth(i)) {
            run(c, o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::Customer;
    use crate::dedup::{Blocker, BlockingRule};

    /// 60 people, a third of them entered twice with a typo in the family name.
    fn population() -> Vec<MatchRecord> {
        let given = [
            "ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jo",
        ];
        let family = ["smith", "jones", "brown", "taylor", "wilson", "davies"];
        let mut out = Vec::new();
        for i in 0..60u32 {
            let g = given[(i % 10) as usize];
            let f = family[(i / 10) as usize];
            let born =
                NaiveDate::from_ymd_opt(1950 + i.cast_signed(), 1 + i % 12, 1 + i % 28).unwrap();
            let c = |fam: &str| {
                Customer::builder()
                    .given_name(g)
                    .family_name(fam)
                    .birth_date(born)
                    .email(format!("{g}.{fam}{i}@example.org"))
                    .build()
                    .unwrap()
            };
            out.push(MatchRecord::new(&c(f)));
            if i % 3 == 0 {
                let typo = format!("{f}e");
                out.push(MatchRecord::new(&c(&typo)));
            }
        }
        out
    }

    fn trained() -> (Vec<MatchRecord>, Model, TrainReport) {
        let records = population();
        let blocker = Blocker::new(vec![
            BlockingRule::FamilyPhoneticGivenInitial,
            BlockingRule::BirthDateGivenInitial,
        ]);
        let candidates = blocker.candidates(&records).unwrap();
        let (model, report) = Model::train(
            vec![
                Comparison::GivenName,
                Comparison::FamilyName,
                Comparison::BirthDate,
                Comparison::Email,
            ],
            &records,
            &candidates,
            &Training::default(),
        );
        (records, model, report)
    }

    #[test]
    fn em_converges_and_separates_matches() {
        let (records, model, report) = trained();
        assert!(report.converged, "{report:?}");
        assert!(report.iterations > 1);
        // The 20 typo pairs: same birth date, similar family name.
        let dupes = model.score(&records[0], &records[1]);
        assert!(dupes.probability > 0.95, "{dupes:?}");
        // Same given name and family, other birth date and email: not the same person.
        let other = model.score(&records[0], &records[2 + 8]);
        assert!(other.probability < 0.05, "{other:?}");
        // Birth date exact is learned as strong evidence.
        let date = &model.comparisons()[2].levels[0];
        assert!(date.m > 0.8 && date.weight() > 5.0, "{date:?}");
    }

    #[test]
    fn training_is_deterministic() {
        let (_, a, _) = trained();
        let (_, b, _) = trained();
        assert_eq!(a, b);
    }

    #[test]
    fn rarer_family_names_weigh_more() {
        let mk = |g: &str, f: &str| {
            MatchRecord::new(
                &Customer::builder()
                    .given_name(g)
                    .family_name(f)
                    .build()
                    .unwrap(),
            )
        };
        let mut records: Vec<MatchRecord> =
            (0..20).map(|i| mk(&format!("p{i}"), "smith")).collect();
        records.push(mk("a", "zadok"));
        records.push(mk("b", "zadok"));
        let candidates = Blocker::new(vec![BlockingRule::FamilyPhoneticGivenInitial])
            .candidates(&records)
            .unwrap();
        let (model, _) = Model::train(
            vec![Comparison::FamilyName],
            &records,
            &candidates,
            &Training::default(),
        );
        let common = model.explain(&records[0], &records[1]);
        let rare = model.explain(&records[20], &records[21]);
        assert!(rare.terms[0].weight > common.terms[0].weight + 2.0);
        assert!(rare.terms[0].term_frequency.is_some());
    }

    #[test]
    fn explanation_sums_to_the_score() {
        let (records, model, _) = trained();
        for (a, b) in [(0, 1), (0, 10), (3, 4), (5, 5)] {
            let e = model.explain(&records[a], &records[b]);
            let s = model.score(&records[a], &records[b]);
            let sum = e.terms.iter().fold(e.prior, |w, t| w + t.weight);
            assert_eq!(sum.to_bits(), s.weight.to_bits());
            assert_eq!(e.weight.to_bits(), s.weight.to_bits());
            assert_eq!(e.probability.to_bits(), s.probability.to_bits());
        }
    }

    #[test]
    fn scored_pairs_agree_with_single_scores() {
        let (records, model, _) = trained();
        let candidates = Blocker::default().candidates(&records).unwrap();
        for p in model.score_pairs(&records, &candidates) {
            assert_eq!(p.score, model.score(&records[p.a], &records[p.b]));
        }
    }

    #[test]
    fn labels_move_the_weights_towards_the_decisions() {
        let (records, mut model, _) = trained();
        let before = model.score(&records[0], &records[2]).weight;
        // A person says pairs with the same given name but another family name are the same.
        let labels: Vec<(&MatchRecord, &MatchRecord, bool)> = (0..10)
            .map(|i| (&records[i], &records[i + 2], true))
            .collect();
        let (same, different) = model.train_with_labels(labels, 5.0);
        assert_eq!((same, different), (10, 0));
        assert!(model.score(&records[0], &records[2]).weight > before);
        let (_, d) = model.train_with_labels([(&records[0], &records[1], false)], 1.0);
        assert_eq!(d, 1);
    }

    #[test]
    fn a_model_round_trips_through_json_and_postcard() {
        let (records, model, _) = trained();
        let json = serde_json::to_string(&model).unwrap();
        let back: Model = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.score(&records[0], &records[1]),
            model.score(&records[0], &records[1])
        );
        let bytes = postcard::to_allocvec(&model).unwrap();
        let back: Model = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn probability_and_weight_are_inverse() {
        for w in [-20.0, -1.0, 0.0, 3.5, 20.0] {
            assert!((weight_of(probability(w)) - w).abs() < 1e-6);
        }
        assert!((probability(0.0) - 0.5).abs() < 1e-12);
    }
}
