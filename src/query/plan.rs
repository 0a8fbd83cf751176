//! The planner: which parts of a filter to answer from indexes (as sorted id sets, intersected,
//! united and complemented), which to check on decoded records, and when to scan instead.
//!
//! Estimates come from the store's value counts (kept in every write transaction): a scan's
//! share of customers is the postings of the values it spans, summed from the counts when it
//! spans at most a few hundred values. Wider scans, and unique indexes, keep fixed priors per
//! index and operator (the System R defaults: a third for an open range, and a typical share
//! per value for each index), scaled by the number of customers. Conjunctions are then planned
//! adaptively: the cheapest-looking index is read first, and each further one is read only if
//! reading it costs less than checking its test on the candidates already found (whose number
//! is now known exactly).
//! Every set the planner produces is exact, so the answer is the one a full scan gives.

use std::fmt;

use chrono::{DateTime, Utc};

use super::Filter;
use super::eval::{IndexUse, Leaf, Node};
use super::exec::Source;
use crate::error::Result;
use crate::index::{Index, Scan};
use crate::model::{Channel, CustomerId, Metrics, Record};
use crate::store::Ids;

// Relative costs, measured on the segment bench: an index entry streamed by an intersection
// takes about 20 ns since postings are stored as runs of ids (11 ns in (e), 26 ns in (a) at
// 1,000,000 customers; it was 50 ns when each posting was a key of its own), a metrics lookup
// by id about 1 µs, fetching and decoding a record by id several µs. (Sequential scans decode
// records in key order, which costs far less than fetching them one by one.) The costs other
// than an entry's were measured against the 50 ns entry and are scaled to the 20 ns one.

/// Cost of reading one index entry: the unit of the cost model.
const COST_ENTRY: f64 = 1.0;
/// Cost of fetching one record by id, decoding it and testing it.
const COST_FETCH: f64 = 100.0;
/// Cost of decoding and testing one record in a sequential scan.
const COST_SCAN: f64 = 15.0;
/// Cost of looking one customer's metrics up by id.
const COST_METRICS: f64 = 50.0;

/// A set of customer ids: those listed, or every customer but those listed (a complement,
/// kept symbolic so that `not` costs nothing until the set must be listed). Lists are sorted
/// and free of repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdSet {
    Only(Vec<u64>),
    AllBut(Vec<u64>),
}

impl IdSet {
    fn complement(self) -> IdSet {
        match self {
            IdSet::Only(v) => IdSet::AllBut(v),
            IdSet::AllBut(v) => IdSet::Only(v),
        }
    }

    fn intersect(self, other: IdSet) -> IdSet {
        match (self, other) {
            (IdSet::Only(a), IdSet::Only(b)) => IdSet::Only(intersect(&a, &b)),
            (IdSet::Only(a), IdSet::AllBut(b)) | (IdSet::AllBut(b), IdSet::Only(a)) => {
                IdSet::Only(difference(&a, &b))
            }
            (IdSet::AllBut(a), IdSet::AllBut(b)) => IdSet::AllBut(union(&a, &b)),
        }
    }

    fn union(self, other: IdSet) -> IdSet {
        match (self, other) {
            (IdSet::Only(a), IdSet::Only(b)) => IdSet::Only(union(&a, &b)),
            (IdSet::Only(a), IdSet::AllBut(b)) | (IdSet::AllBut(b), IdSet::Only(a)) => {
                IdSet::AllBut(difference(&b, &a))
            }
            (IdSet::AllBut(a), IdSet::AllBut(b)) => IdSet::AllBut(intersect(&a, &b)),
        }
    }

    /// How many customers the set holds, out of `n`.
    pub(crate) fn len(&self, n: u64) -> u64 {
        match self {
            IdSet::Only(v) => v.len() as u64,
            IdSet::AllBut(v) => n.saturating_sub(v.len() as u64),
        }
    }
}

/// The sorted intersection of two sorted lists; gallops through the longer one when their
/// sizes differ a lot.
pub(crate) fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if small.len().saturating_mul(16) < large.len() {
        let mut rest = large;
        for &x in small {
            match rest.binary_search(&x) {
                Ok(i) => {
                    out.push(x);
                    rest = rest.get(i + 1..).unwrap_or_default();
                }
                Err(i) => rest = rest.get(i..).unwrap_or_default(),
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (small.get(i), large.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The sorted union of two sorted lists.
pub(crate) fn union(left: &[u64], right: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut li, mut ri) = (0, 0);
    loop {
        match (left.get(li), right.get(ri)) {
            (Some(&l), Some(&r)) => {
                out.push(l.min(r));
                li += usize::from(l <= r);
                ri += usize::from(r <= l);
            }
            (Some(&l), None) => {
                out.push(l);
                li += 1;
            }
            (None, Some(&r)) => {
                out.push(r);
                ri += 1;
            }
            (None, None) => return out,
        }
    }
}

/// The members of sorted `a` not in sorted `b`.
pub(crate) fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while b.get(j).is_some_and(|&y| y < x) {
            j += 1;
        }
        if b.get(j) != Some(&x) {
            out.push(x);
        }
    }
    out
}

/// A set of ids below a bound, one bit each: membership in constant time, and listing in id
/// order without sorting.
struct Bits(Vec<u64>);

impl Bits {
    /// Room for the ids up to `max`, if that costs no more words than `len` ids would (dense
    /// enough to beat sorting or searching; a huge id never allocates a huge set).
    fn for_ids(max: u64, len: usize) -> Option<Bits> {
        let words = max / 64 + 1;
        (words <= len as u64 + 64).then(|| Bits(vec![0; usize::try_from(words).unwrap_or(0)]))
    }

    fn insert(&mut self, id: u64) {
        if let Some(w) = usize::try_from(id / 64)
            .ok()
            .and_then(|i| self.0.get_mut(i))
        {
            *w |= 1 << (id % 64);
        }
    }

    fn contains(&self, id: u64) -> bool {
        usize::try_from(id / 64)
            .ok()
            .and_then(|i| self.0.get(i))
            .is_some_and(|w| (w >> (id % 64)) & 1 == 1)
    }

    /// The ids, in order.
    fn to_sorted(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, &w) in self.0.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                out.push(i as u64 * 64 + u64::from(w.trailing_zeros()));
                w &= w - 1;
            }
        }
        out
    }
}

/// `ids` sorted and without repeats: as they are if already so (one equality scan reads
/// them in id order), through a bitset if they are dense, else by sorting.
fn sorted_ids(mut ids: Vec<u64>) -> Vec<u64> {
    if ids.windows(2).all(|w| w[0] < w[1]) {
        return ids;
    }
    let max = ids.iter().copied().max().unwrap_or(0);
    if let Some(mut bits) = Bits::for_ids(max, ids.len()) {
        for &id in &ids {
            bits.insert(id);
        }
        return bits.to_sorted();
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Membership in a sorted id list: a bitset when the list is dense, else binary search.
enum Members<'a> {
    Bits(Bits),
    Sorted(&'a [u64]),
}

impl<'a> Members<'a> {
    fn of(sorted: &'a [u64]) -> Members<'a> {
        let max = sorted.last().copied().unwrap_or(0);
        match Bits::for_ids(max, sorted.len()) {
            Some(mut bits) => {
                for &id in sorted {
                    bits.insert(id);
                }
                Members::Bits(bits)
            }
            None => Members::Sorted(sorted),
        }
    }

    fn contains(&self, id: u64) -> bool {
        match self {
            Members::Bits(b) => b.contains(id),
            Members::Sorted(s) => s.binary_search(&id).is_ok(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Explanations

/// What a plan step does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Step {
    /// Reads an index: the customers passing `test`. Inside an intersection, every read after
    /// the first checks each id against the customers found so far as it reads it, keeping no
    /// list of its own; its actual count is then the entries it read.
    Index {
        /// The index.
        index: String,
        /// The test it answers, in the text syntax.
        test: String,
    },
    /// Customers in every child's set.
    Intersect,
    /// Customers in any child's set.
    Union,
    /// Customers not in the child's set (listing them needs every id).
    Complement,
    /// Checks `test` on the decoded records of the child's customers.
    Filter {
        /// The test, in the text syntax.
        test: String,
    },
    /// Decodes every customer and checks `test`.
    Scan {
        /// The test, in the text syntax.
        test: String,
    },
    /// Every customer or none.
    Constant(bool),
}

/// One step of a plan, with the planner's estimate of how many customers it yields and the
/// number it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanNode {
    /// What the step does.
    pub step: Step,
    /// Estimated customers out.
    pub estimated: u64,
    /// Customers out when run.
    pub actual: u64,
    /// The steps it reads from.
    pub children: Vec<PlanNode>,
}

/// A query's plan, as run: [`crate::query::Query::explain`].
#[derive(Debug, Clone, PartialEq)]
pub struct Explain {
    /// The root step.
    pub root: PlanNode,
    /// How many customers the store holds.
    pub customers: u64,
    /// The cost the planner estimated for the chosen plan, in index entries read.
    pub cost: f64,
    /// The cost it estimated for a full scan.
    pub scan_cost: f64,
}

impl fmt::Display for PlanNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl PlanNode {
    fn write(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        let what = match &self.step {
            Step::Index { index, test } => format!("index {index}: {test}"),
            Step::Intersect => "intersect".to_owned(),
            Step::Union => "union".to_owned(),
            Step::Complement => "complement".to_owned(),
            Step::Filter { test } => format!("filter: {test}"),
            Step::Scan { test } => format!("scan: {test}"),
            Step::Constant(b) => format!("constant {b}"),
        };
        writeln!(
            f,
            "{pad}{what}  (estimated {}, actual {})",
            self.estimated, self.actual
        )?;
        for c in &self.children {
            c.write(f, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} customers; estimated cost {:.0}, of a full scan {:.0}",
            self.customers, self.cost, self.scan_cost
        )?;
        write!(f, "{}", self.root)
    }
}

// ---------------------------------------------------------------------------------------------
// Estimates

/// Values a scan may span for its count to be summed when planning; wider scans keep the prior.
const COUNTED_VALUES: usize = 256;

/// The shares of customers the scans of one filter yield, counted from the store's value
/// counts before planning; scans it does not know keep the priors of [`scan_fraction`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Stats {
    known: std::collections::HashMap<String, f64>,
}

impl Stats {
    fn key(index: &Index, scan: &Scan) -> String {
        format!("{index:?}|{scan:?}")
    }

    fn get(&self, index: &Index, scan: &Scan) -> Option<f64> {
        self.known.get(&Stats::key(index, scan)).copied()
    }

    /// Counts every indexed scan of `node` that is not yet known.
    fn gather<S: Source + ?Sized>(&mut self, tx: &S, node: &Node, n: f64) -> Result<()> {
        match node {
            Node::Leaf(leaf) => {
                let Some(u) = &leaf.index else { return Ok(()) };
                for scan in &u.scans {
                    let key = Stats::key(&u.index, scan);
                    if self.known.contains_key(&key) || n <= 0.0 {
                        continue;
                    }
                    if let Some(count) = tx.counted(&u.index, scan, COUNTED_VALUES)? {
                        #[allow(clippy::cast_precision_loss)] // a share, not an exact count
                        self.known.insert(key, (count as f64 / n).min(1.0));
                    }
                }
                Ok(())
            }
            Node::And(ns) | Node::Or(ns) => ns.iter().try_for_each(|c| self.gather(tx, c, n)),
            Node::Not(c) => self.gather(tx, c, n),
            Node::Const(_) | Node::Consent { .. } => Ok(()),
        }
    }
}

/// The share of customers one scan of `index` is expected to yield: counted ([`Stats`]) when
/// known, else a prior.
fn scan_fraction(index: &Index, scan: &Scan, n: f64, st: &Stats) -> f64 {
    if let Some(f) = st.get(index, scan) {
        return f;
    }
    let one_value = match index {
        Index::Email | Index::ExternalId => 1.0 / n,
        Index::Phone => 2.0 / n,
        Index::Postcode => 0.002,
        Index::FamilyName | Index::GivenName | Index::FamilyPhonetic => 0.005,
        Index::Locality => 0.01,
        Index::BirthDate
        | Index::CreatedAt
        | Index::UpdatedAt
        | Index::FirstPurchase
        | Index::LastPurchase
        | Index::LastInteraction => 0.001,
        Index::Country | Index::OrderCount | Index::OpenTickets | Index::TotalSpend => 0.1,
        Index::Stage => 0.25,
        _ => 0.05,
    };
    match scan {
        Scan::All => 0.9,
        Scan::Eq(_) => one_value,
        Scan::Range(..) => 1.0 / 3.0,
        Scan::Prefix(p) => (0.3 / (p.chars().count() as f64 + 1.0)).max(one_value),
    }
}

/// The share of customers a residual test is expected to pass.
const RESIDUAL_FRACTION: f64 = 1.0 / 3.0;

fn index_fraction(u: &IndexUse, n: f64, st: &Stats) -> f64 {
    let parts = u.scans.iter().map(|s| scan_fraction(&u.index, s, n, st));
    let f: f64 = if u.intersect {
        parts.product()
    } else {
        parts.sum()
    };
    f.clamp(0.0, 1.0)
}

/// The expected share of customers matching `node`.
fn fraction(node: &Node, n: f64, st: &Stats) -> f64 {
    match node {
        Node::Const(b) => f64::from(u8::from(*b)),
        Node::And(ns) => ns.iter().map(|c| fraction(c, n, st)).product(),
        Node::Or(ns) => ns.iter().map(|c| fraction(c, n, st)).sum::<f64>().min(1.0),
        Node::Not(c) => 1.0 - fraction(c, n, st),
        Node::Leaf(leaf) => leaf
            .index
            .as_ref()
            .map_or(RESIDUAL_FRACTION, |u| index_fraction(u, n, st)),
        Node::Consent { .. } => RESIDUAL_FRACTION,
    }
}

/// The expected number of customers, from a share of `n`.
#[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)] // clamped to 0..=n first
fn estimate(share: f64, n: f64) -> u64 {
    (share * n).round().clamp(0.0, n) as u64
}

/// Whether `node`'s customers can be found from indexes (with residual tests on candidates).
fn settable(node: &Node) -> bool {
    match node {
        Node::Const(_) | Node::Consent { .. } => true,
        Node::Leaf(leaf) => leaf.index.is_some(),
        Node::And(ns) => ns.is_empty() || ns.iter().any(settable),
        Node::Or(ns) => ns.iter().all(settable),
        Node::Not(c) => settable(c),
    }
}

/// The cost of checking `residual` on one candidate: fetching its record and its metrics as
/// the tests need them (metric tests alone are checked without the record).
fn fetch_cost(residual: &[&Node]) -> f64 {
    let record = if residual.iter().any(|n| n.needs_record()) {
        COST_FETCH
    } else {
        0.0
    };
    let metrics = if residual.iter().any(|n| n.needs_metrics()) {
        COST_METRICS
    } else {
        0.0
    };
    record + metrics
}

/// The estimated cost of listing `node`'s customers (infinite if it is not settable).
fn cost(node: &Node, n: f64, now: DateTime<Utc>, st: &Stats) -> f64 {
    match node {
        Node::Const(_) => 0.0,
        Node::Leaf(leaf) => match &leaf.index {
            Some(u) => {
                let read = index_fraction(u, n, st) * n * COST_ENTRY;
                // A metric test passed by the defaults also reads every customer with metrics.
                let defaults = if u.metric && leaf.matches_default_metrics(now) {
                    n * COST_ENTRY
                } else {
                    0.0
                };
                read + defaults
            }
            None => f64::INFINITY,
        },
        Node::And(ns) => {
            let (sets, residual) = split_and(ns, n, now, None, st);
            let mut total: f64 = sets.iter().map(|c| cost(c, n, now, st)).sum();
            if !residual.is_empty() {
                let candidates: f64 = sets.iter().map(|c| fraction(c, n, st)).product::<f64>() * n;
                total += candidates * fetch_cost(&residual);
            }
            total
        }
        Node::Or(ns) => ns.iter().map(|c| cost(c, n, now, st)).sum(),
        Node::Not(c) => cost(c, n, now, st),
        // The consent index holds about one entry per customer with events (records are
        // checked only for events dated after `now`, which are rare).
        Node::Consent { .. } => fraction(node, n, st) * n * COST_ENTRY,
    }
}

/// Splits a conjunction into the children to read as sets (cheapest first) and those to check
/// on candidates: a child is read only while reading it costs less than checking it on the
/// candidates so far (`known`: the exact count after the first set, when it has been read).
fn split_and<'a>(
    ns: &'a [Node],
    n: f64,
    now: DateTime<Utc>,
    known: Option<f64>,
    st: &Stats,
) -> (Vec<&'a Node>, Vec<&'a Node>) {
    let mut sets: Vec<(&Node, f64)> = ns
        .iter()
        .filter(|c| settable(c))
        .map(|c| (c, cost(c, n, now, st)))
        .collect();
    sets.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut residual: Vec<&Node> = ns.iter().filter(|c| !settable(c)).collect();
    let mut chosen = Vec::new();
    let mut candidates = n;
    for (i, (c, c_cost)) in sets.into_iter().enumerate() {
        let check = candidates * fetch_cost(&[c]);
        if i == 0 || c_cost < check {
            candidates = if i == 0 {
                known.unwrap_or(fraction(c, n, st) * n)
            } else {
                candidates * fraction(c, n, st)
            };
            chosen.push(c);
        } else {
            residual.push(c);
        }
    }
    (chosen, residual)
}

/// The estimated cost of a full scan testing `node`.
fn scan_cost(node: &Node, n: f64) -> f64 {
    n * (COST_SCAN
        + if node.needs_metrics() {
            COST_METRICS
        } else {
            0.0
        })
}

/// A compiled node written back as a filter, for plans.
fn to_filter(node: &Node) -> Filter {
    match node {
        Node::Const(b) => Filter::Const(*b),
        Node::And(ns) => Filter::And(ns.iter().map(to_filter).collect()),
        Node::Or(ns) => Filter::Or(ns.iter().map(to_filter).collect()),
        Node::Not(c) => Filter::Not(Box::new(to_filter(c))),
        Node::Leaf(leaf) => leaf.source.clone(),
        Node::Consent { channel, purpose } => Filter::Consent {
            channel: *channel,
            purpose: purpose.clone(),
        },
    }
}

/// The plan step of a test read from an index.
fn index_plan(index: &str, test: String, estimated: u64, actual: u64) -> PlanNode {
    PlanNode {
        step: Step::Index {
            index: index.to_owned(),
            test,
        },
        estimated,
        actual,
        children: Vec::new(),
    }
}

/// The plan step of a leaf read from its index.
fn leaf_plan(leaf: &Leaf, estimated: u64, actual: u64) -> PlanNode {
    let index = leaf.index.as_ref().map_or("", |u| u.index.name());
    index_plan(index, leaf.source.to_string(), estimated, actual)
}

/// The plan step of a consent test read from the consent index.
fn consent_plan(node: &Node, estimated: u64, actual: u64) -> PlanNode {
    index_plan(
        Index::Consent.name(),
        to_filter(node).to_string(),
        estimated,
        actual,
    )
}

fn describe(nodes: &[&Node]) -> String {
    match nodes {
        [one] => to_filter(one).to_string(),
        many => Filter::And(many.iter().map(|n| to_filter(n)).collect()).to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Execution

/// What the planner chose for a whole filter.
pub(crate) enum Choice {
    /// The exact set, found from indexes.
    Set(IdSet),
    /// A full scan is cheaper; the caller runs it with the predicate.
    Scan,
}

/// Plans and runs filters inside one transaction.
pub(crate) struct Planner<'t, S: Source + ?Sized> {
    pub(crate) tx: &'t S,
    pub(crate) n: u64,
    pub(crate) now: DateTime<Utc>,
    all: Option<Vec<u64>>,
    has_metrics: Option<Vec<u64>>,
    stats: std::rc::Rc<Stats>,
}

impl<'t, S: Source + ?Sized> Planner<'t, S> {
    pub(crate) fn new(tx: &'t S, now: DateTime<Utc>) -> Result<Self> {
        Ok(Planner {
            n: tx.count()?,
            tx,
            now,
            all: None,
            has_metrics: None,
            stats: std::rc::Rc::default(),
        })
    }

    /// Chooses between index sets and a scan for `root`, running the index part; returns the
    /// choice and its plan (a scan's actual count is filled in by the caller).
    pub(crate) fn choose(&mut self, root: &Node) -> Result<(Choice, Explain)> {
        let n = self.n as f64;
        let mut stats = std::mem::take(&mut self.stats);
        std::rc::Rc::make_mut(&mut stats).gather(self.tx, root, n)?;
        self.stats = stats;
        let stats = std::rc::Rc::clone(&self.stats);
        let st = &*stats;
        let scan = scan_cost(root, n);
        let set_cost = if settable(root) {
            cost(root, n, self.now, st)
        } else {
            f64::INFINITY
        };
        let estimated = estimate(fraction(root, n, st), n);
        if set_cost <= scan {
            let (set, node) = self.run(root)?;
            let explain = Explain {
                root: node,
                customers: self.n,
                cost: set_cost,
                scan_cost: scan,
            };
            return Ok((Choice::Set(set), explain));
        }
        let node = PlanNode {
            step: Step::Scan {
                test: to_filter(root).to_string(),
            },
            estimated,
            actual: 0,
            children: Vec::new(),
        };
        let explain = Explain {
            root: node,
            customers: self.n,
            cost: scan,
            scan_cost: scan,
        };
        Ok((Choice::Scan, explain))
    }

    /// Every customer id, sorted.
    pub(crate) fn all_ids(&mut self) -> Result<&[u64]> {
        if self.all.is_none() {
            self.all = Some(self.read_ids(&Index::CreatedAt, &Scan::All)?);
        }
        Ok(self.all.as_deref().unwrap_or_default())
    }

    fn customers_with_metrics(&mut self) -> Result<Vec<u64>> {
        if self.has_metrics.is_none() {
            // Every customer with a metrics row has an order count entry.
            self.has_metrics = Some(self.read_ids(&Index::OrderCount, &Scan::All)?);
        }
        Ok(self.has_metrics.clone().unwrap_or_default())
    }

    /// The ids of a set, listed.
    pub(crate) fn list(&mut self, set: IdSet) -> Result<Vec<u64>> {
        Ok(match set {
            IdSet::Only(v) => v,
            IdSet::AllBut(v) => difference(self.all_ids()?, &v),
        })
    }

    /// The exact set of `node`, which must be settable, and its plan.
    fn run(&mut self, node: &Node) -> Result<(IdSet, PlanNode)> {
        let n = self.n as f64;
        let stats = std::rc::Rc::clone(&self.stats);
        let st = &*stats;
        let estimated = estimate(fraction(node, n, st), n);
        let (set, step, children) = match node {
            Node::Const(b) => {
                let set = if *b {
                    IdSet::AllBut(Vec::new())
                } else {
                    IdSet::Only(Vec::new())
                };
                (set, Step::Constant(*b), Vec::new())
            }
            Node::Leaf(leaf) => {
                let set = self.read_leaf(leaf)?;
                let actual = set.len(self.n);
                return Ok((set, leaf_plan(leaf, estimated, actual)));
            }
            Node::Or(ns) => {
                let mut set = IdSet::Only(Vec::new());
                let mut children = Vec::new();
                for c in ns {
                    let (s, p) = self.run(c)?;
                    set = set.union(s);
                    children.push(p);
                }
                (set, Step::Union, children)
            }
            Node::Not(c) => {
                let (s, p) = self.run(c)?;
                (s.complement(), Step::Complement, vec![p])
            }
            Node::And(ns) => return self.run_and(ns, estimated),
            Node::Consent { channel, purpose } => {
                let (found, _) = self.read_consent(node, *channel, purpose, None)?;
                let actual = found.len() as u64;
                return Ok((IdSet::Only(found), consent_plan(node, estimated, actual)));
            }
        };
        let actual = set.len(self.n);
        Ok((
            set,
            PlanNode {
                step,
                estimated,
                actual,
                children,
            },
        ))
    }

    fn run_and(&mut self, ns: &[Node], estimated: u64) -> Result<(IdSet, PlanNode)> {
        let n = self.n as f64;
        let stats = std::rc::Rc::clone(&self.stats);
        let st = &*stats;
        let (first, _) = split_and(ns, n, self.now, None, st);
        let Some(first) = first.first() else {
            return self.filter_candidates(
                IdSet::AllBut(Vec::new()),
                &ns.iter().collect::<Vec<_>>(),
                None,
                estimated,
            );
        };
        let (mut set, first_plan) = self.run(first)?;
        // Re-plan the rest with the first set's exact size.
        let (sets, residual) = split_and(ns, n, self.now, Some(set.len(self.n) as f64), st);
        let sets_estimate = estimate(sets.iter().map(|c| fraction(c, n, st)).product(), n);
        let mut plans = vec![first_plan];
        for c in sets.into_iter().skip(1) {
            match (c, set) {
                (Node::Leaf(leaf), IdSet::Only(within)) if self.reads_exactly(leaf) => {
                    let estimated = estimate(fraction(c, n, st), n);
                    let (found, p) = self.stream_leaf(leaf, within, estimated)?;
                    set = IdSet::Only(found);
                    plans.push(p);
                }
                (Node::Consent { channel, purpose }, IdSet::Only(within)) => {
                    let estimated = estimate(fraction(c, n, st), n);
                    let (found, read) = self.read_consent(c, *channel, purpose, Some(&within))?;
                    set = IdSet::Only(found);
                    plans.push(consent_plan(c, estimated, read));
                }
                (c, before) => {
                    let (s, p) = self.run(c)?;
                    set = before.intersect(s);
                    plans.push(p);
                }
            }
        }
        let input = if plans.len() == 1 {
            plans.pop()
        } else {
            let actual = set.len(self.n);
            Some(PlanNode {
                step: Step::Intersect,
                estimated: sets_estimate,
                actual,
                children: plans,
            })
        };
        if residual.is_empty() {
            let mut node = input.unwrap_or(PlanNode {
                step: Step::Constant(true),
                estimated,
                actual: set.len(self.n),
                children: Vec::new(),
            });
            node.estimated = estimated;
            return Ok((set, node));
        }
        self.filter_candidates(set, &residual, input, estimated)
    }

    /// The members of `within` that `leaf` (read exactly from its index) passes, read by
    /// [`Planner::read_within`], and the step's plan; its actual count is the entries read.
    fn stream_leaf(
        &self,
        leaf: &Leaf,
        within: Vec<u64>,
        estimated: u64,
    ) -> Result<(Vec<u64>, PlanNode)> {
        let Some(u) = &leaf.index else {
            return Ok((Vec::new(), leaf_plan(leaf, estimated, 0)));
        };
        let (found, read) = self.read_within(u, within)?;
        Ok((found, leaf_plan(leaf, estimated, read)))
    }

    /// The customers passing `node`, `consent(channel, purpose)`, among `within` if given
    /// (else among all), and how many index entries were read. The consent index answers for
    /// customers whose latest event is before `now`; the records of the others it lists (a
    /// latest event at or after `now`) decide.
    fn read_consent(
        &self,
        node: &Node,
        channel: Channel,
        purpose: &str,
        within: Option<&[u64]>,
    ) -> Result<(Vec<u64>, u64)> {
        let members = within.map(Members::of);
        let mut read = 0u64;
        let (mut found, mut check) = (Vec::new(), Vec::new());
        let ids = Ids::Consent {
            purpose,
            channel,
            now: self.now,
        };
        self.tx.for_each_id(&ids, &mut |id, certain| {
            read += 1;
            if members.as_ref().is_none_or(|m| m.contains(id)) {
                if certain {
                    found.push(id);
                } else {
                    check.push(id);
                }
            }
        })?;
        for id in sorted_ids(check) {
            if let Some(rec) = self.tx.get(CustomerId::from_u64(id))? {
                if node.matches(&rec, &Metrics::default(), self.now) {
                    found.push(id);
                }
            }
        }
        Ok((sorted_ids(found), read))
    }

    /// Checks `residual` on the records of `candidates`.
    fn filter_candidates(
        &mut self,
        candidates: IdSet,
        residual: &[&Node],
        input: Option<PlanNode>,
        estimated: u64,
    ) -> Result<(IdSet, PlanNode)> {
        let ids = self.list(candidates)?;
        let test = Node::And(residual.iter().map(|n| (*n).clone()).collect());
        let metrics = test.needs_metrics();
        let mut out = Vec::new();
        if test.needs_record() {
            for id in ids {
                let Some(rec) = self.tx.get(CustomerId::from_u64(id))? else {
                    continue;
                };
                let m = self.metrics_of(&rec, metrics)?;
                if test.matches(&rec, &m, self.now) {
                    out.push(id);
                }
            }
        } else {
            // Metric tests only: the candidates (ids from indexes, so stored customers) are
            // tested on their metrics, without fetching and decoding their records.
            let mut rec = Record {
                id: CustomerId::from_u64(0),
                created_at: DateTime::UNIX_EPOCH,
                updated_at: DateTime::UNIX_EPOCH,
                revision: 0,
                customer: crate::model::Customer::default(),
            };
            for id in ids {
                rec.id = CustomerId::from_u64(id);
                let m = if metrics {
                    self.tx.stored_metrics(rec.id)?
                } else {
                    Metrics::default()
                };
                if test.matches(&rec, &m, self.now) {
                    out.push(id);
                }
            }
        }
        let node = PlanNode {
            step: Step::Filter {
                test: describe(residual),
            },
            estimated,
            actual: out.len() as u64,
            children: input.into_iter().collect(),
        };
        Ok((IdSet::Only(out), node))
    }

    /// The customer's metrics if `needed`, else the defaults (unused).
    pub(crate) fn metrics_of(&self, rec: &Record, needed: bool) -> Result<Metrics> {
        if needed {
            self.tx.metrics(rec.id)
        } else {
            Ok(Metrics::default())
        }
    }

    /// The ids a scan of `index` reads, sorted and without repeats.
    fn read_ids(&self, index: &Index, scan: &Scan) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        self.tx
            .for_each_id(&Ids::Scan(index, scan), &mut |id, _| ids.push(id))?;
        Ok(sorted_ids(ids))
    }

    /// Whether `leaf`'s customers are exactly those its index reads list (not a metric test
    /// that customers without metrics pass, whose set is a complement).
    fn reads_exactly(&self, leaf: &Leaf) -> bool {
        leaf.index
            .as_ref()
            .is_some_and(|u| !(u.metric && leaf.matches_default_metrics(self.now)))
    }

    /// The members of sorted `within` that `u`'s reads list, and how many entries it read.
    /// The index's ids are checked against `within` as they stream by, so they are neither
    /// kept nor sorted: the cost is the entries read.
    fn read_within(&self, u: &IndexUse, within: Vec<u64>) -> Result<(Vec<u64>, u64)> {
        let mut read = 0u64;
        let mut current = within;
        let mut hits = Vec::new();
        for scan in &u.scans {
            {
                let members = Members::of(&current);
                self.tx
                    .for_each_id(&Ids::Scan(&u.index, scan), &mut |id, _| {
                        read += 1;
                        if members.contains(id) {
                            hits.push(id);
                        }
                    })?;
            }
            if u.intersect {
                current = sorted_ids(std::mem::take(&mut hits));
            }
        }
        let out = if u.intersect {
            current
        } else {
            sorted_ids(hits)
        };
        Ok((out, read))
    }

    fn read_leaf(&mut self, leaf: &Leaf) -> Result<IdSet> {
        let Some(u) = &leaf.index else {
            return Ok(IdSet::Only(Vec::new()));
        };
        let mut acc: Option<Vec<u64>> = None;
        for scan in &u.scans {
            let ids = self.read_ids(&u.index, scan)?;
            acc = Some(match acc {
                None => ids,
                Some(a) if u.intersect => intersect(&a, &ids),
                Some(a) => union(&a, &ids),
            });
        }
        let set = match acc {
            Some(v) => IdSet::Only(v),
            None if u.intersect => IdSet::AllBut(Vec::new()),
            None => IdSet::Only(Vec::new()),
        };
        if u.metric && leaf.matches_default_metrics(self.now) {
            // Customers without activities have no entry but pass: every customer but those
            // with metrics that fail.
            let with = self.customers_with_metrics()?;
            let passing = self.list(set)?;
            return Ok(IdSet::AllBut(difference(&with, &passing)));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra_matches_naive_sets() {
        let a = vec![1, 3, 5, 7, 9];
        let b = vec![3, 4, 5, 10];
        assert_eq!(intersect(&a, &b), vec![3, 5]);
        assert_eq!(union(&a, &b), vec![1, 3, 4, 5, 7, 9, 10]);
        assert_eq!(difference(&a, &b), vec![1, 7, 9]);
        let big: Vec<u64> = (0..1000).collect();
        assert_eq!(intersect(&[5, 500, 2000], &big), vec![5, 500]);
    }

    #[test]
    fn complements_combine_without_listing_every_id() {
        let only = IdSet::Only(vec![1, 2, 3]);
        let but = IdSet::AllBut(vec![2, 9]);
        assert_eq!(only.clone().intersect(but.clone()), IdSet::Only(vec![1, 3]));
        assert_eq!(only.union(but.clone()), IdSet::AllBut(vec![9]));
        assert_eq!(
            but.clone().intersect(IdSet::AllBut(vec![4])),
            IdSet::AllBut(vec![2, 4, 9])
        );
        assert_eq!(but.len(10), 8);
    }
}
