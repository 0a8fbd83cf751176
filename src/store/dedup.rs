//! Duplicates inside the store: match-on-insert through the indexes, batch clustering, the
//! review queue, merge with survivorship, aliases, and unmerge.
//!
//! The matching itself is [`crate::dedup`]; this module feeds it the store's records, finds a
//! customer's candidates with the same blocking rules by index lookups instead of a pass over
//! everyone, keeps the trained model and human decisions in the database, and writes merges
//! so they can be undone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::{self, Operation};
use super::read::Backend;
use super::timeline::timeline_all;
use super::write::WriteTxn;
use super::{Table, codec};
use crate::dedup::{
    BlockingRule, ClusterSettings, Comparison, Explanation, MatchRecord, Matcher, Model, Score,
    TrainReport, cluster,
};
use crate::error::{Error, ErrorKind, Result};
use crate::index::{Index, Scan};
use crate::model::{AttributeValue, Customer, CustomerId, IntoCustomer, Record};

/// Meta key of the trained duplicate model.
const META_MODEL: &str = "dedup_model";
/// Meta key of the trained model's identity: a number drawn when it was stored, so that a
/// reader can tell whether the model it decoded before is still the one stored without
/// reading the model itself.
const META_MODEL_ID: &str = "dedup_model_id";
/// Meta key of the blocking rules the model was trained with.
const META_RULES: &str = "dedup_rules";
/// Candidates from one index lookup beyond which that lookup is skipped (a very common name).
const MAX_BLOCK: usize = 500;
/// The same for lookups by name (a key of a rule on names in the match-key index, or the
/// family name, its phonetic code and the given name as a family name when a rule needs
/// those): every candidate is decoded and scored, and a name held by more than this many
/// customers is weak evidence of anything. Batch blocking likewise pairs a record of a large
/// block with its next 4 only.
const MAX_NAME_BLOCK: usize = 100;
/// The same for a name rule's key in the match-key index (family phonetic + initial, given +
/// family, family + postcode, family + initial). Unlike the whole family name such a block is
/// read in full, every member sharing the key and so decoded and scored; a key held by more
/// than this many customers (a common name in a large store) is left to the other rules, as
/// batch blocking pairs a record of a block over 10 with its next 4 only.
const MAX_KEY_BLOCK: usize = 25;
/// The prior match probability of the untrained model used before any training.
const UNTRAINED_PRIOR: f64 = 1e-4;

/// An existing customer that a given one probably is.
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// The existing customer.
    pub id: CustomerId,
    /// Match weight and probability.
    pub score: Score,
    /// The blocking rules under which the two met.
    pub rules: Vec<String>,
    /// Every comparison's values, level and weight, summing to the score.
    pub explanation: Explanation,
}

/// What [`WriteTxn::insert_checked`] does when the new customer probably exists already.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum OnDuplicate {
    /// Refuse the insert ([`ErrorKind::Duplicate`]) at or above this probability.
    Refuse(f64),
    /// Insert, and queue pairs at or above this probability for review.
    Flag(f64),
    /// Merge into the best match at or above `auto` (with the default survivorship), queue
    /// pairs between `review` and `auto` for review, insert otherwise.
    Merge {
        /// The probability at or above which the new customer is merged automatically.
        auto: f64,
        /// The probability at or above which a pair is queued for review.
        review: f64,
    },
}

/// What [`WriteTxn::insert_checked`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Checked {
    /// Inserted; the probable duplicates it has (queued for review), best first.
    Inserted(CustomerId, Vec<Duplicate>),
    /// Merged into an existing customer.
    Merged {
        /// The customer it was merged into.
        into: CustomerId,
        /// The merge, for [`WriteTxn::unmerge`].
        merge: MergeId,
    },
}

/// A person's decision on a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Not decided yet.
    Pending,
    /// The same person.
    Same,
    /// Not the same person: the pair never comes back.
    NotSame,
}

/// A pair in the review queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// The lower id.
    pub a: CustomerId,
    /// The higher id.
    pub b: CustomerId,
    /// Match probability when queued.
    pub probability: f64,
    /// The decision, if any.
    pub status: ReviewStatus,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was queued or decided.
    #[serde(with = "crate::model::wire::timestamp")]
    pub at: DateTime<Utc>,
}

/// A cluster of customers that [`crate::ReadTxn::find_duplicates`] thinks are one person.
#[derive(Debug, Clone)]
pub struct DuplicateCluster {
    /// Members, in id order.
    pub ids: Vec<CustomerId>,
    /// The scored pairs inside it, best first.
    pub pairs: Vec<(CustomerId, CustomerId, Score)>,
}

/// How a merge chooses each single-valued field (name, birth date, gender, organisation, job
/// title, stage, owner, source). Lists (emails, phones, addresses, tags, external ids, consent
/// events) always keep every distinct value, the survivor's first; custom attributes keep the
/// survivor's and add the others' missing ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Survivorship {
    /// The survivor's value when it has one, else the first other's.
    #[default]
    Survivor,
    /// The value of the most recently updated customer that has one.
    MostRecent,
    /// The most complete value (the name with most parts, the longest text).
    MostComplete,
    /// The value from the customer whose `source` comes first in this list (others after).
    TrustedSources(Vec<String>),
}

/// A merge worked out but not written: what the survivor will hold, and where each
/// single-valued field comes from. Apply it with [`WriteTxn::merge`].
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The customer that stays.
    pub survivor: CustomerId,
    /// The customers merged into it (they become its aliases).
    pub merged: Vec<CustomerId>,
    /// The survivor's data after the merge.
    pub result: Customer,
    /// For each single-valued field the merge takes from a merged customer, which one.
    pub taken: BTreeMap<String, CustomerId>,
    /// Activities that will move to the survivor.
    pub activities: usize,
    /// Each participant's revision when planned; the merge is refused if one changed since.
    revisions: Vec<(CustomerId, u64)>,
}

/// A merge's identity: the sequence number of its history entry on the survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MergeId(pub u64);

/// What a merge changed, kept to undo it.
#[derive(Serialize, Deserialize)]
struct MergeLog {
    survivor: CustomerId,
    before: Customer,
    after: Customer,
    merged: Vec<Record>,
    /// Each moved activity and the customer it came from.
    moved: Vec<(u64, CustomerId)>,
    undone: bool,
}

#[derive(Serialize, Deserialize)]
struct ReviewEntry {
    probability: f64,
    status: ReviewStatus,
    decided_by: Option<String>,
    #[serde(with = "crate::model::wire::timestamp")]
    at: DateTime<Utc>,
}

fn pair_key(a: CustomerId, b: CustomerId) -> Vec<u8> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut k = lo.as_u64().to_be_bytes().to_vec();
    k.extend_from_slice(&hi.as_u64().to_be_bytes());
    k
}

fn split_pair(k: &[u8]) -> Result<(CustomerId, CustomerId)> {
    let bad = || Error::corrupted("review key", "not 16 bytes");
    let (a, b) = k.split_at_checked(8).ok_or_else(bad)?;
    let a: [u8; 8] = a.try_into().map_err(|_| bad())?;
    let b: [u8; 8] = b.try_into().map_err(|_| bad())?;
    Ok((
        CustomerId::from_u64(u64::from_be_bytes(a)),
        CustomerId::from_u64(u64::from_be_bytes(b)),
    ))
}

/// The stored model, or an untrained one.
///
/// A trained model carries term frequencies for up to 200,000 names, so decoding it costs
/// milliseconds: more than the whole of a match-on-insert. Decoded models are therefore kept
/// in a small process-wide cache under their identity ([`META_MODEL_ID`]); a store whose
/// model has no identity (trained before it existed) decodes it every time.
pub(crate) fn model(b: &impl Backend) -> Result<Arc<Model>> {
    let id = b
        .get_meta(META_MODEL_ID)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes);
    if let Some(id) = id {
        if let Some(m) = cached_model(id) {
            return Ok(m);
        }
    }
    let model = Arc::new(match b.get_meta(META_MODEL)? {
        Some(bytes) => codec::decode(
            &super::crypt::open_model(b.crypt(), &bytes)?,
            "duplicate model",
        )?,
        None => Model::untrained(Comparison::defaults(), UNTRAINED_PRIOR),
    });
    if let Some(id) = id {
        if let Ok(mut cache) = MODELS.lock() {
            if cache.len() >= MODEL_CACHE {
                cache.remove(0);
            }
            cache.push((id, Arc::clone(&model)));
        }
    }
    Ok(model)
}

/// How many decoded models the process keeps (one per store in use, typically).
const MODEL_CACHE: usize = 4;

/// Decoded models by identity, oldest first.
static MODELS: Mutex<Vec<(u64, Arc<Model>)>> = Mutex::new(Vec::new());

fn cached_model(id: u64) -> Option<Arc<Model>> {
    let cache = MODELS.lock().ok()?;
    cache
        .iter()
        .find(|(have, _)| *have == id)
        .map(|(_, m)| Arc::clone(m))
}

/// A fresh model identity: the time, this process and a counter, mixed. Only uniqueness
/// matters (two models under one identity would share a cache entry).
fn new_model_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = nanos
        ^ u64::from(std::process::id()).rotate_left(32)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48);
    crate::sample::SplitMix64::new(seed).next_u64()
}

fn review_entry(b: &impl Backend, a: CustomerId, c: CustomerId) -> Result<Option<ReviewEntry>> {
    b.get_raw(Table::Review, &pair_key(a, c))?
        .map(|v| codec::decode(&v, "review entry"))
        .transpose()
}

/// The customer an id now stands for: itself, or the survivor it was merged into.
pub(crate) fn resolve(b: &impl Backend, id: CustomerId) -> Result<Option<CustomerId>> {
    if b.has_record(id.as_u64())? {
        return Ok(Some(id));
    }
    match b.get_raw(Table::Aliases, &id.as_u64().to_be_bytes())? {
        Some(v) => {
            let arr: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::corrupted("alias", "not 8 bytes"))?;
            Ok(Some(CustomerId::from_u64(u64::from_be_bytes(arr))))
        }
        None => Ok(None),
    }
}

/// The blocking rules of the stored model, or the defaults.
fn rules(b: &impl Backend) -> Result<Vec<BlockingRule>> {
    match b.get_meta(META_RULES)? {
        Some(bytes) => codec::decode(&bytes, "blocking rules"),
        None => Ok(BlockingRule::defaults()),
    }
}

/// Candidate ids for `c` (`me` its match record) under `rules`, found through the indexes (a
/// superset: the caller keeps those that share a blocking key).
///
/// Each rule is looked up by its own keys where an index holds them: emails, phones and
/// external ids in theirs, the two-field rules in the match-key index ([`Index::MatchKey`]),
/// so that a lookup returns the customers sharing that key rather than everyone with the same
/// family name or birth date. A rule no index covers (locality with initial) falls back to the
/// broad lookups by name and birth date, whose candidates are then filtered.
fn candidate_ids(
    b: &impl Backend,
    c: &Customer,
    me: &MatchRecord,
    rules: &[BlockingRule],
) -> Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    let mut add = |ids: Vec<CustomerId>, max: usize| {
        if ids.len() <= max {
            out.extend(ids.into_iter().map(CustomerId::as_u64));
        }
    };
    let lookup = |index: Index, scan: Scan| super::read::ids(b, &index, &scan);
    let match_key = |prefix: &str, key: &str| {
        lookup(Index::MatchKey, Scan::Eq(format!("{prefix}:{key}").into()))
    };
    let schema = b.schema()?;
    let mut uncovered = false;
    for rule in rules {
        match rule {
            BlockingRule::Email => {
                for e in &c.emails {
                    add(lookup(Index::Email, Scan::eq(e.match_key()))?, MAX_BLOCK);
                }
            }
            BlockingRule::Phone => {
                for p in &c.phones {
                    add(lookup(Index::Phone, Scan::eq(p.e164()))?, MAX_BLOCK);
                }
            }
            BlockingRule::ExternalId => {
                for x in &c.external_ids {
                    let key = crate::index::external_id_key(x.system(), x.id());
                    add(
                        b.lookup_unique(&key)?
                            .map(CustomerId::from_u64)
                            .into_iter()
                            .collect(),
                        MAX_BLOCK,
                    );
                }
            }
            BlockingRule::BirthDate => {
                if let Some(d) = c.birth_date {
                    add(lookup(Index::BirthDate, Scan::eq(d))?, MAX_BLOCK);
                }
            }
            BlockingRule::Attribute(name) => {
                let (Some(def), Some(value)) = (schema.get(name), c.attributes.get(name)) else {
                    continue;
                };
                if !def.is_indexed() {
                    continue;
                }
                let index = Index::Attribute(name.clone());
                let values: Vec<crate::index::Value> = match value {
                    AttributeValue::Text(t) => vec![t.clone().into()],
                    AttributeValue::TextList(items) => {
                        items.iter().map(|t| t.clone().into()).collect()
                    }
                    AttributeValue::Integer(i) => vec![(*i).into()],
                    _ => Vec::new(),
                };
                for v in values {
                    add(lookup(index.clone(), Scan::Eq(v))?, MAX_BLOCK);
                }
            }
            rule => match rule.match_key_prefix() {
                Some(prefix) => {
                    let max = if rule.uses(&Comparison::BirthDate) {
                        MAX_BLOCK
                    } else {
                        MAX_KEY_BLOCK
                    };
                    for key in rule.keys(me) {
                        add(match_key(prefix, &key)?, max);
                    }
                }
                None => uncovered = true,
            },
        }
    }
    // A rare spelling of a family name with a very common phonetic code (`smyth`): its
    // phonetic block is too large to read, but the same family name and initial is small.
    if rules.contains(&BlockingRule::FamilyPhoneticGivenInitial) {
        if let (Some(family), Some(initial)) = (me.family(), me.given_initial()) {
            let key = format!("{family}|{initial}");
            add(
                match_key(BlockingRule::FAMILY_INITIAL, &key)?,
                MAX_KEY_BLOCK,
            );
        }
    }
    if uncovered {
        if let Some(n) = &c.name {
            if let Some(f) = n.family() {
                add(lookup(Index::FamilyPhonetic, Scan::eq(f))?, MAX_NAME_BLOCK);
                add(lookup(Index::FamilyName, Scan::eq(f))?, MAX_NAME_BLOCK);
            }
            // Transposed names: the given name stored as a family name.
            if let Some(g) = n.given() {
                add(lookup(Index::FamilyName, Scan::eq(g))?, MAX_NAME_BLOCK);
            }
        }
        if let Some(d) = c.birth_date {
            add(lookup(Index::BirthDate, Scan::eq(d))?, MAX_BLOCK);
        }
    }
    Ok(out)
}

/// The existing customers `c` probably is, best first: candidates found through the indexes,
/// kept if they share a key with `c` under the stored model's blocking rules (as batch blocking
/// would pair them), scored with the stored model. `exclude` is `c`'s own id, if stored. Pairs a person rejected are left out.
pub(crate) fn duplicates_of(
    b: &impl Backend,
    c: &Customer,
    exclude: Option<CustomerId>,
    min_probability: f64,
) -> Result<Vec<Duplicate>> {
    let model = model(b)?;
    let me = MatchRecord::new(c);
    let rules = rules(b)?;
    // Keys as batch blocking hashes them: the same pairs meet here as there.
    let mut buf = String::new();
    let my_keys: Vec<Vec<u64>> = rules
        .iter()
        .map(|r| {
            let mut keys = Vec::new();
            r.key_hashes(&me, &mut buf, &mut keys);
            keys
        })
        .collect();
    let mut theirs = Vec::new();
    let mut out = Vec::new();
    for id in candidate_ids(b, c, &me, &rules)? {
        let id = CustomerId::from_u64(id);
        if Some(id) == exclude {
            continue;
        }
        if let Some(other) = exclude {
            if review_entry(b, other, id)?.is_some_and(|e| e.status == ReviewStatus::NotSame) {
                continue;
            }
        }
        let Some(rec) = b.record(id.as_u64())? else {
            continue;
        };
        // Most candidates of a name or birth-date lookup share no key: check on the cheap
        // view, build the full one only for those that do.
        let keys_of = MatchRecord::for_blocking(&rec.customer);
        let mut shared = Vec::new();
        for (r, mine) in rules.iter().zip(&my_keys) {
            r.key_hashes(&keys_of, &mut buf, &mut theirs);
            if theirs.iter().any(|k| mine.binary_search(k).is_ok()) {
                shared.push(r.name());
            }
        }
        if shared.is_empty() {
            continue;
        }
        let them = MatchRecord::new(&rec.customer);
        let score = model.score(&me, &them);
        if score.probability >= min_probability {
            out.push(Duplicate {
                id,
                score,
                rules: shared,
                explanation: model.explain(&me, &them),
            });
        }
    }
    out.sort_by(|x, y| {
        y.score
            .weight
            .total_cmp(&x.score.weight)
            .then(x.id.cmp(&y.id))
    });
    Ok(out)
}

pub(crate) fn review_queue(b: &impl Backend, pending_only: bool) -> Result<Vec<ReviewItem>> {
    let mut out = Vec::new();
    b.scan_raw(
        Table::Review,
        (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        false,
        &mut |k, v| {
            let (a, c) = split_pair(k)?;
            let e: ReviewEntry = codec::decode(v, "review entry")?;
            if !pending_only || e.status == ReviewStatus::Pending {
                out.push(ReviewItem {
                    a,
                    b: c,
                    probability: e.probability,
                    status: e.status,
                    decided_by: e.decided_by,
                    at: e.at,
                });
            }
            Ok(true)
        },
    )?;
    out.sort_by(|x, y| y.probability.total_cmp(&x.probability));
    Ok(out)
}

fn completeness(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(m) => m.values().filter(|v| !v.is_null()).count() * 1000,
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Null => 0,
        _ => 1,
    }
}

/// Works out a merge of `merged` into `survivor` without writing anything.
pub(crate) fn merge_plan(
    b: &impl Backend,
    survivor: CustomerId,
    merged: &[CustomerId],
    rule: &Survivorship,
) -> Result<MergePlan> {
    let load = |id: CustomerId| -> Result<Record> {
        b.record(id.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(id)))
    };
    let s = load(survivor)?;
    let mut others = Vec::new();
    for &m in merged {
        if m == survivor || others.iter().any(|o: &Record| o.id == m) {
            continue;
        }
        others.push(load(m)?);
    }
    let all: Vec<&Record> = std::iter::once(&s).chain(&others).collect();
    // Single-valued fields, through their JSON form so one rule serves them all.
    let fields: Vec<history::Fields> = all
        .iter()
        .map(|r| history::fields(&r.customer))
        .collect::<Result<_>>()?;
    let mut result = fields[0].clone();
    let mut taken = BTreeMap::new();
    let rank = |r: &Record| -> usize {
        match rule {
            Survivorship::TrustedSources(list) => r
                .customer
                .source
                .as_deref()
                .and_then(|src| list.iter().position(|t| t.eq_ignore_ascii_case(src)))
                .unwrap_or(list.len()),
            _ => 0,
        }
    };
    for field in [
        "name",
        "birth_date",
        "gender",
        "organization",
        "job_title",
        "stage",
        "owner",
        "source",
    ] {
        let holders: Vec<usize> = (0..all.len())
            .filter(|&i| fields[i].contains_key(field))
            .collect();
        let Some(&first) = holders.first() else {
            continue;
        };
        let best = match rule {
            Survivorship::Survivor => first,
            Survivorship::MostRecent => holders
                .iter()
                .copied()
                .max_by_key(|&i| (all[i].updated_at, std::cmp::Reverse(i)))
                .unwrap_or(first),
            Survivorship::MostComplete => holders
                .iter()
                .copied()
                .max_by_key(|&i| (completeness(&fields[i][field]), std::cmp::Reverse(i)))
                .unwrap_or(first),
            Survivorship::TrustedSources(_) => holders
                .iter()
                .copied()
                .min_by_key(|&i| (rank(all[i]), i))
                .unwrap_or(first),
        };
        if best != 0 {
            result.insert(field.to_owned(), fields[best][field].clone());
            taken.insert(field.to_owned(), all[best].id);
        }
    }
    let mut c = history::Replay {
        state: Some(result),
    }
    .customer()?
    .ok_or_else(|| Error::corrupted("merge", "no state"))?;
    union_lists(&mut c, &others);
    let mut activities = 0;
    for o in &others {
        activities += timeline_all(b, o.id)?.len();
    }
    Ok(MergePlan {
        survivor,
        merged: others.iter().map(|o| o.id).collect(),
        result: c,
        taken,
        activities,
        revisions: all.iter().map(|r| (r.id, r.revision)).collect(),
    })
}

/// Adds the others' distinct list values (and missing attributes) to `c`, the survivor's first.
fn union_lists(c: &mut Customer, others: &[Record]) {
    for o in others {
        let oc = &o.customer;
        extend_distinct(&mut c.emails, &oc.emails, |e| e.match_key().to_owned());
        extend_distinct(&mut c.phones, &oc.phones, |p| p.e164().to_owned());
        extend_distinct(&mut c.addresses, &oc.addresses, |a| format!("{a:?}"));
        extend_distinct(&mut c.external_ids, &oc.external_ids, ToString::to_string);
        extend_distinct(&mut c.consents, &oc.consents, |x| format!("{x:?}"));
        c.tags.extend(oc.tags.iter().cloned());
        for (k, v) in &oc.attributes {
            c.attributes.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    c.consents.sort_by_key(|x| x.at);
}

/// Whether a stored merge log names one of `ids` (as survivor or merged customer).
pub(crate) fn merge_log_involves(bytes: &[u8], ids: &BTreeSet<CustomerId>) -> bool {
    if let Some((named, _)) = super::crypt::sealed_merge_ids(bytes) {
        return named
            .into_iter()
            .any(|id| ids.contains(&CustomerId::from_u64(id)));
    }
    codec::decode::<MergeLog>(bytes, "merge log").is_ok_and(|log| {
        ids.contains(&log.survivor) || log.merged.iter().any(|r| ids.contains(&r.id))
    })
}

fn extend_distinct<T: Clone, K: PartialEq>(into: &mut Vec<T>, from: &[T], key: impl Fn(&T) -> K) {
    for x in from {
        let k = key(x);
        if !into.iter().any(|y| key(y) == k) {
            into.push(x.clone());
        }
    }
}

impl WriteTxn {
    /// Trains the duplicate model on every stored customer (blocking, u from random pairs, m by
    /// expectation maximisation), makes its weights monotone ([`Model::make_monotone`]: a
    /// store with no duplicates yet must not learn that an exact match is evidence against),
    /// refines it with the review decisions, and stores it: later matching in this store uses
    /// it.
    pub fn train_duplicate_model(&mut self, matcher: &Matcher) -> Result<TrainReport> {
        let (ids, records) = all_match_records(self)?;
        let run = matcher.run(&records)?;
        let mut model = run.model;
        let index: HashMap<CustomerId, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let labels: Vec<(usize, usize, bool)> = review_queue(self, false)?
            .into_iter()
            .filter(|r| r.status != ReviewStatus::Pending)
            .filter_map(|r| {
                Some((
                    *index.get(&r.a)?,
                    *index.get(&r.b)?,
                    r.status == ReviewStatus::Same,
                ))
            })
            .collect();
        model.make_monotone();
        model.train_with_labels(
            labels
                .iter()
                .map(|&(a, b, same)| (&records[a], &records[b], same)),
            10.0,
        );
        let stored = super::crypt::seal_model(self.crypt(), codec::encode(&model)?)?;
        self.put_meta(META_MODEL, &stored)?;
        self.put_meta(META_MODEL_ID, &new_model_id().to_be_bytes())?;
        self.put_meta(
            META_RULES,
            &codec::encode(&matcher.blocker.rules().to_vec())?,
        )?;
        Ok(run.training)
    }

    /// Inserts a customer after looking for who it probably is already, acting as `policy`
    /// says.
    ///
    /// # Errors
    /// [`ErrorKind::Duplicate`] under [`OnDuplicate::Refuse`]; otherwise as
    /// [`WriteTxn::insert`].
    pub fn insert_checked(
        &mut self,
        customer: impl IntoCustomer,
        policy: OnDuplicate,
    ) -> Result<Checked> {
        let c = customer.into_customer(self.default_region())?;
        let floor = match policy {
            OnDuplicate::Refuse(p) | OnDuplicate::Flag(p) => p,
            OnDuplicate::Merge { auto, review } => auto.min(review),
        };
        let found = duplicates_of(self, &c, None, floor)?;
        match (policy, found.first()) {
            (OnDuplicate::Refuse(_), Some(best)) => {
                Err(Error::new(ErrorKind::Duplicate { existing: best.id }))
            }
            (OnDuplicate::Merge { auto, .. }, Some(best)) if best.score.probability >= auto => {
                let into = best.id;
                let id = self.insert(c)?;
                let plan = merge_plan(self, into, &[id], &Survivorship::Survivor)?;
                let merge = self.merge(&plan)?;
                Ok(Checked::Merged { into, merge })
            }
            _ => {
                let id = self.insert(c)?;
                for d in &found {
                    self.queue_review(id, d.id, d.score.probability)?;
                }
                Ok(Checked::Inserted(id, found))
            }
        }
    }

    /// Queues a pair for review (unless a person already decided on it).
    pub fn queue_review(&mut self, a: CustomerId, b: CustomerId, probability: f64) -> Result<()> {
        if a == b || review_entry(self, a, b)?.is_some_and(|e| e.status != ReviewStatus::Pending) {
            return Ok(());
        }
        let entry = ReviewEntry {
            probability,
            status: ReviewStatus::Pending,
            decided_by: None,
            at: self.now(),
        };
        self.put_raw(Table::Review, pair_key(a, b), Some(codec::encode(&entry)?))
    }

    /// Records a person's decision on a pair: `same` or not. A pair decided "not the same"
    /// never comes back from matching; decisions are labels for
    /// [`WriteTxn::train_duplicate_model`].
    pub fn decide(&mut self, a: CustomerId, b: CustomerId, same: bool, by: &str) -> Result<()> {
        let probability = review_entry(self, a, b)?.map_or(f64::NAN, |e| e.probability);
        let entry = ReviewEntry {
            probability,
            status: if same {
                ReviewStatus::Same
            } else {
                ReviewStatus::NotSame
            },
            decided_by: Some(by.to_owned()),
            at: self.now(),
        };
        self.put_raw(Table::Review, pair_key(a, b), Some(codec::encode(&entry)?))
    }

    /// Applies a merge plan: the survivor takes the planned data, the others' activities move
    /// to it (metrics recomputed), the others are removed and become aliases of the survivor
    /// ([`crate::Read::get`] of an old id finds the survivor), and history records it all.
    ///
    /// # Errors
    /// [`ErrorKind::Stale`] if a participant changed since the plan was made;
    /// [`ErrorKind::Conflict`] if the merged data clashes with a unique key held elsewhere.
    pub fn merge(&mut self, plan: &MergePlan) -> Result<MergeId> {
        for &(id, revision) in &plan.revisions {
            match self.record(id.as_u64())? {
                Some(r) if r.revision == revision => {}
                _ => return Err(Error::new(ErrorKind::Stale(id))),
            }
        }
        let before = self
            .record(plan.survivor.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(plan.survivor)))?
            .customer;
        let mut merged = Vec::new();
        let mut moved = Vec::new();
        for &m in &plan.merged {
            for r in timeline_all(self, m)? {
                self.move_activity(&r, plan.survivor)?;
                moved.push((r.id.as_u64(), m));
            }
            if let Some(rec) = self.remove_as(m, Operation::MergedInto(plan.survivor))? {
                merged.push(rec);
            }
            self.put_raw(
                Table::Aliases,
                m.as_u64().to_be_bytes().to_vec(),
                Some(plan.survivor.as_u64().to_be_bytes().to_vec()),
            )?;
        }
        self.repoint_aliases(&plan.merged, plan.survivor)?;
        let merge = MergeId(self.next_seq.peek());
        self.update_as(plan.survivor, plan.result.clone(), Operation::Merged)?;
        self.recompute_metrics(plan.survivor)?;
        for m in &merged {
            self.drop_reviews_of(m.id)?;
        }
        let log = MergeLog {
            survivor: plan.survivor,
            before,
            after: plan.result.clone(),
            merged,
            moved,
            undone: false,
        };
        let bytes = self.encode_merge_log(merge.0, &log)?;
        self.put_raw(Table::Merges, merge.0.to_be_bytes().to_vec(), Some(bytes))?;
        Ok(merge)
    }

    /// Undoes a merge: the merged-away customers come back under their ids with their
    /// activities, their aliases go, and each survivor field the merge changed returns to its
    /// value before the merge unless it has been changed since.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if the survivor is gone; [`ErrorKind::Invalid`] if there is no
    /// such merge or it was undone already; [`ErrorKind::Conflict`] if a restored unique key
    /// is now held by another customer.
    pub fn unmerge(&mut self, merge: MergeId) -> Result<()> {
        let key = merge.0.to_be_bytes();
        let mut log: MergeLog = self
            .get_raw(Table::Merges, &key)?
            .map(|v| self.decode_merge_log(merge.0, &v))
            .transpose()?
            .filter(|l: &MergeLog| !l.undone)
            .ok_or_else(|| {
                Error::invalid(
                    "merge",
                    merge.0.to_string(),
                    crate::normalize::Reason::Malformed,
                )
            })?;
        let now = self
            .record(log.survivor.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(log.survivor)))?;
        // Field by field: back to `before` where the survivor still holds what the merge set.
        let (before, after) = (history::fields(&log.before)?, history::fields(&log.after)?);
        let mut state = history::fields(&now.customer)?;
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for f in names {
            if state.get(f) == after.get(f) {
                match before.get(f) {
                    Some(v) => state.insert(f.clone(), v.clone()),
                    None => state.remove(f),
                };
            }
        }
        let restored = history::Replay { state: Some(state) }
            .customer()?
            .ok_or_else(|| Error::corrupted("merge log", "no state"))?;
        self.update_as(log.survivor, restored, Operation::Unmerged)?;
        for rec in std::mem::take(&mut log.merged) {
            let id = rec.id;
            self.restore(rec, Operation::Restored)?;
            self.put_raw(Table::Aliases, id.as_u64().to_be_bytes().to_vec(), None)?;
        }
        let mut touched = BTreeSet::from([log.survivor]);
        for &(activity, from) in &log.moved {
            if let Some(r) = self.activity(crate::model::ActivityId::from_u64(activity))? {
                if r.customer == log.survivor {
                    self.move_activity(&r, from)?;
                    touched.insert(from);
                }
            }
        }
        for id in touched {
            self.recompute_metrics(id)?;
        }
        log.undone = true;
        let bytes = self.encode_merge_log(merge.0, &log)?;
        self.put_raw(Table::Merges, key.to_vec(), Some(bytes))
    }

    /// The stored form of merge log `merge`: sealed under the survivor's data key in an
    /// encrypted store, since it holds the merged records.
    fn encode_merge_log(&self, merge: u64, log: &MergeLog) -> Result<Vec<u8>> {
        let bytes = codec::encode(log)?;
        if self.crypt().is_none() {
            return Ok(bytes);
        }
        let survivor = log.survivor.as_u64();
        let ids: Vec<u64> = std::iter::once(survivor)
            .chain(log.merged.iter().map(|r| r.id.as_u64()))
            .collect();
        super::crypt::seal_merge_log(&self.data_key(survivor)?, merge, &ids, &bytes)
    }

    /// A stored merge log, opened under its survivor's data key if sealed.
    fn decode_merge_log(&self, merge: u64, bytes: &[u8]) -> Result<MergeLog> {
        match super::crypt::sealed_merge_ids(bytes) {
            Some((ids, at)) => {
                let survivor = ids.first().copied().unwrap_or_default();
                let plain =
                    super::crypt::open_merge_log(&self.data_key(survivor)?, merge, bytes, at)?;
                codec::decode(&plain, "merge log")
            }
            // An encrypted store seals every merge log it writes: a plain one was planted,
            // and unmerge would write records from it.
            None if self.crypt().is_some() => Err(Error::corrupted(
                "merge log",
                format!("merge log {merge} is not sealed in an encrypted store"),
            )),
            None => codec::decode(bytes, "merge log"),
        }
    }

    fn activity(&self, id: crate::model::ActivityId) -> Result<Option<crate::ActivityRecord>> {
        super::timeline::activity(self, id)
    }

    /// Aliases that pointed at a now merged-away customer point at its survivor.
    fn repoint_aliases(&mut self, merged: &[CustomerId], survivor: CustomerId) -> Result<()> {
        let targets: BTreeSet<[u8; 8]> = merged.iter().map(|m| m.as_u64().to_be_bytes()).collect();
        let mut repoint = Vec::new();
        self.scan_raw(
            Table::Aliases,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            &mut |k, v| {
                if v.try_into().is_ok_and(|t: [u8; 8]| targets.contains(&t)) {
                    repoint.push(k.to_vec());
                }
                Ok(true)
            },
        )?;
        for k in repoint {
            self.put_raw(
                Table::Aliases,
                k,
                Some(survivor.as_u64().to_be_bytes().to_vec()),
            )?;
        }
        Ok(())
    }

    /// Removes the review entries of a customer that no longer exists.
    fn drop_reviews_of(&mut self, id: CustomerId) -> Result<()> {
        let mut keys = Vec::new();
        self.scan_raw(
            Table::Review,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
            &mut |k, _| {
                if split_pair(k).is_ok_and(|(a, b)| a == id || b == id) {
                    keys.push(k.to_vec());
                }
                Ok(true)
            },
        )?;
        for k in keys {
            self.put_raw(Table::Review, k, None)?;
        }
        Ok(())
    }
}

/// Every stored customer as a match record, with its id, in id order.
fn all_match_records(b: &impl Backend) -> Result<(Vec<CustomerId>, Vec<MatchRecord>)> {
    let mut ids = Vec::new();
    let mut records = Vec::new();
    b.for_each_record(&mut |rec| {
        ids.push(rec.id);
        records.push(MatchRecord::new(&rec.customer));
        Ok(())
    })?;
    Ok((ids, records))
}

/// Clusters of probable duplicates among all stored customers, with the stored model (or one
/// trained now if none is stored), leaving out pairs a person rejected and keeping pairs a
/// person confirmed.
pub(crate) fn find_duplicates(
    b: &impl Backend,
    matcher: &Matcher,
    settings: &ClusterSettings,
) -> Result<Vec<DuplicateCluster>> {
    let (ids, records) = all_match_records(b)?;
    let candidates = matcher.blocker.candidates(&records)?;
    let model = match b.get_meta(META_MODEL)? {
        Some(bytes) => codec::decode(
            &super::crypt::open_model(b.crypt(), &bytes)?,
            "duplicate model",
        )?,
        None => matcher.run(&records)?.model,
    };
    let index: HashMap<CustomerId, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut decided: HashMap<(usize, usize), bool> = HashMap::new();
    for r in review_queue(b, false)? {
        if let (Some(&x), Some(&y)) = (index.get(&r.a), index.get(&r.b)) {
            match r.status {
                ReviewStatus::Same => decided.insert((x.min(y), x.max(y)), true),
                ReviewStatus::NotSame => decided.insert((x.min(y), x.max(y)), false),
                ReviewStatus::Pending => None,
            };
        }
    }
    let mut pairs = model.score_pairs(&records, &candidates);
    for p in &mut pairs {
        if let Some(&same) = decided.get(&(p.a.min(p.b), p.a.max(p.b))) {
            p.score.probability = if same { 1.0 } else { 0.0 };
        }
    }
    let clusters = cluster(records.len(), &pairs, settings, |x, y| {
        match decided.get(&(x.min(y), x.max(y))) {
            Some(&same) => f64::from(u8::from(same)),
            None => model.score(&records[x], &records[y]).probability,
        }
    });
    let mut out = Vec::new();
    for group in clusters.groups() {
        if group.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = group.iter().copied().collect();
        let mut inside: Vec<(CustomerId, CustomerId, Score)> = pairs
            .iter()
            .filter(|p| members.contains(&p.a) && members.contains(&p.b))
            .map(|p| (ids[p.a], ids[p.b], p.score))
            .collect();
        inside.sort_by(|x, y| y.2.probability.total_cmp(&x.2.probability));
        out.push(DuplicateCluster {
            ids: members.iter().map(|&i| ids[i]).collect(),
            pairs: inside,
        });
    }
    Ok(out)
}
