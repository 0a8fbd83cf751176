//! Clustering scored pairs into entities, guarded against chains.

use super::block::CandidatePair;
use super::model::{ScoredPair, probability};

/// The clustering rule's parameters (see [`cluster`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterSettings {
    /// Pairs at or above this match probability link records; merges need this average.
    pub threshold: f64,
    /// Merges need at least this mean cross-pair probability.
    pub min_average: f64,
    /// A merge is refused if any cross pair's probability is below this.
    pub min_link: f64,
    /// A merge of clusters with more cross pairs than this is refused.
    pub max_cross_pairs: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            threshold: 0.5,
            min_average: 0.5,
            min_link: 1e-4,
            max_cross_pairs: 10_000,
        }
    }
}

/// An assignment of records to entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clusters {
    labels: Vec<u32>,
    count: usize,
    report: ClusterReport,
}

/// What clustering did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterReport {
    /// Pairs at or above the threshold.
    pub links: usize,
    /// Merges made.
    pub merges: usize,
    /// Merges refused because the average cross-pair probability was under the threshold.
    pub refused_average: usize,
    /// Merges refused because a cross pair was a clear non-match.
    pub refused_min_link: usize,
    /// Merges refused because the clusters were too large.
    pub refused_size: usize,
    /// Cross pairs that had to be scored on demand.
    pub scored_on_demand: usize,
}

impl Clusters {
    /// Each record's cluster number, `0..len()`, numbered in order of first member.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The cluster number of record `i`, if it exists.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.get(i).map(|&l| l as usize)
    }

    /// How many clusters (single records count as clusters of one).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The clusters with two or more records, each sorted, in order of first member.
    pub fn groups(&self) -> Vec<Vec<usize>> {
        let mut all: Vec<Vec<usize>> = vec![Vec::new(); self.count];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(g) = all.get_mut(l as usize) {
                g.push(i);
            }
        }
        all.retain(|g| g.len() > 1);
        all
    }

    /// What clustering did.
    pub fn report(&self) -> ClusterReport {
        self.report
    }
}

fn key(a: usize, b: usize) -> (usize, usize) {
    if a < b { (a, b) } else { (b, a) }
}

/// Groups `n` records into entities from their scored pairs.
///
/// Plain connected components over pairs above a threshold chain unrelated people together:
/// if A looks like B and B looks like C, A and C land in one cluster even when they are
/// clearly different. [`cluster`] grows clusters greedily instead, strongest pair first, and
/// merges the two clusters a pair links only when the merge is supported as a whole:
///
/// 1. **Average linkage**: the mean match probability over *every* cross pair (each member of
///    one cluster with each member of the other) is at least [`ClusterSettings::min_average`]
///    (by default the link threshold, 0.5);
/// 2. **No clear non-match**: no cross pair's probability is below
///    [`ClusterSettings::min_link`];
/// 3. **Bounded work**: the two clusters have at most [`ClusterSettings::max_cross_pairs`]
///    cross pairs; a larger merge is refused (and counted), since an entity that large in a
///    customer database is itself a sign of a runaway chain.
///
/// Cross pairs that were scored already (the candidate pairs given) are looked up; the others
/// are scored on demand through the caller's function, so the rule holds even for pairs that
/// blocking never produced. For two single records the rule is just the pair's own
/// probability against the threshold.
///
/// `score(a, b)` gives the match probability of a cross pair that is not
/// among `pairs`; pass a function returning 0 for pairs a person has rejected to keep them
/// apart. Deterministic: ties are broken by record index.
pub fn cluster(
    n: usize,
    pairs: &[ScoredPair],
    settings: &ClusterSettings,
    score: impl FnMut(usize, usize) -> f64,
) -> Clusters {
    cluster_scored(n, pairs, settings, score)
}

/// Scored pairs as [`cluster`] reads them, by position.
pub(crate) trait PairScores {
    /// How many pairs.
    fn len(&self) -> usize;
    /// The records of pair `i`.
    fn pair(&self, i: usize) -> (usize, usize);
    /// The weight pair `i` is ranked by.
    fn weight(&self, i: usize) -> f64;
    /// The probability pair `i` is judged by.
    fn probability(&self, i: usize) -> f64;
}

impl PairScores for [ScoredPair] {
    fn len(&self) -> usize {
        <[ScoredPair]>::len(self)
    }

    fn pair(&self, i: usize) -> (usize, usize) {
        self.get(i).map_or((0, 0), |p| (p.a, p.b))
    }

    fn weight(&self, i: usize) -> f64 {
        self.get(i).map_or(f64::NEG_INFINITY, |p| p.score.weight)
    }

    fn probability(&self, i: usize) -> f64 {
        self.get(i).map_or(0.0, |p| p.score.probability)
    }
}

/// Candidate pairs and their weights side by side (what [`super::Matcher::run`] keeps), each
/// probability computed from its weight.
pub(crate) struct Weighted<'p> {
    pub pairs: &'p [CandidatePair],
    pub weights: &'p [f64],
}

impl PairScores for Weighted<'_> {
    fn len(&self) -> usize {
        self.pairs.len().min(self.weights.len())
    }

    fn pair(&self, i: usize) -> (usize, usize) {
        self.pairs.get(i).map_or((0, 0), |p| (p.a(), p.b()))
    }

    fn weight(&self, i: usize) -> f64 {
        self.weights.get(i).copied().unwrap_or(f64::NEG_INFINITY)
    }

    fn probability(&self, i: usize) -> f64 {
        self.weights.get(i).map_or(0.0, |&w| probability(w))
    }
}

/// No record: the end of a member list.
const NONE: u32 = u32::MAX;

/// The members of the cluster rooted at `root`, in the order they joined.
fn members(next: &[u32], root: usize) -> impl Iterator<Item = usize> + '_ {
    std::iter::successors(Some(root as u32), |&i| {
        next.get(i as usize).copied().filter(|&j| j != NONE)
    })
    .map(|i| i as usize)
}

/// [`cluster`] over any [`PairScores`].
///
/// Memory: 16 bytes per record (parent, next member, last member, size), 8 per link, and
/// nothing per pair when the pairs come sorted.
pub(crate) fn cluster_scored<S: PairScores + ?Sized>(
    n: usize,
    pairs: &S,
    settings: &ClusterSettings,
    mut score: impl FnMut(usize, usize) -> f64,
) -> Clusters {
    // Record indexes are kept in 32 bits; records past that are left alone.
    let n = n.min(NONE as usize);
    let known = Known::new(pairs);
    let mut links: Vec<usize> = (0..pairs.len())
        .filter(|&i| {
            let (a, b) = pairs.pair(i);
            a < n && b < n && a != b && pairs.probability(i) >= settings.threshold
        })
        .collect();
    links.sort_by(|&x, &y| {
        pairs
            .weight(y)
            .total_cmp(&pairs.weight(x))
            .then(key_of(pairs.pair(x)).cmp(&key_of(pairs.pair(y))))
    });
    let mut report = ClusterReport {
        links: links.len(),
        ..ClusterReport::default()
    };
    // Union-find over u32, and each cluster's members as a list threaded through `next`
    // from its root (which is always its first member) to `last[root]`.
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut next: Vec<u32> = vec![NONE; n];
    let mut last: Vec<u32> = (0..n as u32).collect();
    let mut size: Vec<u32> = vec![1; n];
    for link in links {
        let (a, b) = pairs.pair(link);
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra == rb {
            continue;
        }
        let cross = size[ra] as usize * size[rb] as usize;
        if cross > settings.max_cross_pairs {
            report.refused_size += 1;
            continue;
        }
        let (mut sum, mut min) = (0.0, f64::INFINITY);
        for i in members(&next, ra) {
            for j in members(&next, rb) {
                let p = if let Some(p) = known.get(pairs, key(i, j)) {
                    p
                } else {
                    report.scored_on_demand += 1;
                    score(i, j)
                };
                sum += p;
                min = min.min(p);
            }
        }
        let average = sum / cross as f64;
        if average < settings.min_average {
            report.refused_average += 1;
            continue;
        }
        if min < settings.min_link {
            report.refused_min_link += 1;
            continue;
        }
        // Union by size: the smaller cluster's members move, appended after the larger's.
        let (big, small) = if size[ra] >= size[rb] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        next[last[big] as usize] = small as u32;
        last[big] = last[small];
        size[big] += size[small];
        parent[small] = big as u32;
        report.merges += 1;
    }
    drop((next, last, size));
    // Number clusters by first member.
    let mut labels = vec![u32::MAX; n];
    let mut count = 0usize;
    for i in 0..n {
        let root = find(&mut parent, i);
        if labels[root] == u32::MAX {
            labels[root] = u32::try_from(count).unwrap_or(u32::MAX);
            count += 1;
        }
        labels[i] = labels[root];
    }
    Clusters {
        labels,
        count,
        report,
    }
}

fn key_of((a, b): (usize, usize)) -> (usize, usize) {
    key(a, b)
}

/// The probabilities of the scored pairs by `(low, high)` record index. Pairs as scoring gives
/// them (candidate order: sorted, low index first) are searched in place, which matters at
/// millions of pairs; other input is copied and sorted first.
enum Known {
    InPlace,
    Sorted(Vec<((usize, usize), f64)>),
}

impl Known {
    fn new<S: PairScores + ?Sized>(pairs: &S) -> Known {
        let len = pairs.len();
        let in_order = (0..len).all(|i| {
            let (a, b) = pairs.pair(i);
            a < b && (i == 0 || pairs.pair(i - 1) <= (a, b))
        });
        if in_order {
            return Known::InPlace;
        }
        let mut sorted: Vec<((usize, usize), f64)> = (0..len)
            .map(|i| (key_of(pairs.pair(i)), pairs.probability(i)))
            .collect();
        sorted.sort_by_key(|&(k, _)| k);
        Known::Sorted(sorted)
    }

    fn get<S: PairScores + ?Sized>(&self, pairs: &S, k: (usize, usize)) -> Option<f64> {
        match self {
            Known::InPlace => {
                // Binary search over positions: the first pair not before `k`.
                let (mut lo, mut hi) = (0, pairs.len());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if pairs.pair(mid) < k {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                }
                (lo < pairs.len() && pairs.pair(lo) == k).then(|| pairs.probability(lo))
            }
            Known::Sorted(sorted) => sorted
                .binary_search_by_key(&k, |&(k, _)| k)
                .ok()
                .and_then(|i| sorted.get(i))
                .map(|&(_, p)| p),
        }
    }
}

fn find(parent: &mut [u32], i: usize) -> usize {
    let mut i = i as u32;
    while parent[i as usize] != i {
        parent[i as usize] = parent[parent[i as usize] as usize];
        i = parent[i as usize];
    }
    i as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::model::{Score, weight_of};

    fn pair(a: usize, b: usize, p: f64) -> ScoredPair {
        ScoredPair {
            a,
            b,
            score: Score {
                weight: weight_of(p),
                probability: p,
            },
        }
    }

    #[test]
    fn a_chain_does_not_join_clearly_different_ends() {
        // A ~ B and B ~ C, but A and C are clearly different people.
        let pairs = [pair(0, 1, 0.99), pair(1, 2, 0.98), pair(0, 2, 1e-6)];
        let c = cluster(3, &pairs, &ClusterSettings::default(), |_, _| 0.0);
        assert_eq!(c.groups(), vec![vec![0, 1]]);
        assert_eq!(c.report().refused_average, 1);
        // Plain connected components would have joined all three.
        let loose = ClusterSettings {
            threshold: 0.5,
            min_average: 0.0,
            min_link: 0.0,
            max_cross_pairs: usize::MAX,
        };
        let chained = cluster(
            3,
            &[pair(0, 1, 0.99), pair(1, 2, 0.98), pair(0, 2, 0.6)],
            &loose,
            |_, _| 0.0,
        );
        assert_eq!(chained.groups(), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn a_clear_non_match_vetoes_a_merge_that_the_average_allows() {
        // {0, 1, 2} all close; 3 is close to 1 and 2 but clearly not 0.
        let pairs = [
            pair(0, 1, 0.99),
            pair(0, 2, 0.99),
            pair(1, 2, 0.99),
            pair(1, 3, 0.97),
            pair(2, 3, 0.97),
        ];
        let on_demand = |a: usize, b: usize| if key(a, b) == (0, 3) { 1e-7 } else { 0.5 };
        let c = cluster(4, &pairs, &ClusterSettings::default(), on_demand);
        assert_eq!(c.groups(), vec![vec![0, 1, 2]]);
        assert_eq!(c.report().refused_min_link, 2);
        assert_eq!(c.report().scored_on_demand, 2);
    }

    #[test]
    fn unscored_cross_pairs_are_scored_on_demand() {
        let pairs = [pair(0, 1, 0.99), pair(1, 2, 0.99)];
        let c = cluster(3, &pairs, &ClusterSettings::default(), |_, _| 0.9);
        assert_eq!(c.groups(), vec![vec![0, 1, 2]]);
        assert_eq!(c.labels(), [0, 0, 0]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn oversized_merges_are_refused() {
        let pairs = [pair(0, 1, 0.99), pair(2, 3, 0.99), pair(1, 2, 0.98)];
        let settings = ClusterSettings {
            max_cross_pairs: 3,
            ..ClusterSettings::default()
        };
        let c = cluster(4, &pairs, &settings, |_, _| 0.99);
        assert_eq!(c.groups(), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(c.report().refused_size, 1);
    }

    #[test]
    fn singletons_keep_their_own_labels() {
        let c = cluster(
            3,
            &[pair(0, 2, 0.2)],
            &ClusterSettings::default(),
            |_, _| 0.0,
        );
        assert_eq!(c.labels(), [0, 1, 2]);
        assert!(c.groups().is_empty());
        assert_eq!(c.label(5), None);
    }
}
