//! `verify()`: every record against every index, in both directions.
//!
//! Forward, each record's expected entries are looked up one by one. Backward, the tables are
//! not walked entry by entry when they hold exactly as many entries as were found forward:
//! keys are unique, so equal counts mean no extra entries exist. Only when the counts differ is
//! every entry read to name the ones no record accounts for.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::{ReadableTable, ReadableTableMetadata};

use super::read::{Backend, ReadTxn};
use super::timeline::{decode_activity, decode_metrics};
use super::{META_NEXT_ACTIVITY, META_NEXT_ID, META_NEXT_SEQ, Table, read_counter, storage};
use crate::error::{ErrorKind, Result};
use crate::index::{self, Index};
use crate::model::{ActivityId, CustomerId, MetricState, Metrics, Rates, Record, Schema};

/// One inconsistency found by [`crate::Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A stored record does not decode.
    UndecodableRecord {
        /// The key it is stored under.
        id: CustomerId,
        /// Why it does not decode.
        error: ErrorKind,
    },
    /// A record lacks an index entry it should have.
    MissingEntry {
        /// The record.
        id: CustomerId,
        /// The index.
        index: String,
        /// The key's value, readable.
        value: String,
    },
    /// An index entry that no record accounts for.
    OrphanEntry {
        /// The customer id the entry names.
        id: CustomerId,
        /// The index.
        index: String,
        /// The key's value, readable.
        value: String,
    },
    /// A unique key maps to another customer than the one holding it.
    WrongOwner {
        /// The index.
        index: String,
        /// The key's value, readable.
        value: String,
        /// The customer that holds the key.
        expected: CustomerId,
        /// The customer the index names.
        found: CustomerId,
    },
    /// Index entries that cannot be read: a run of postings that is not whole, ascending ids
    /// starting at its key's, or that overlaps the run before it.
    MalformedEntry {
        /// The run's key bytes.
        key: Vec<u8>,
    },
    /// The next id to allocate is not above every stored id, so an id could be reused.
    NextIdBehind {
        /// The next id the store would allocate.
        next_id: u64,
        /// The largest stored id.
        max_id: u64,
    },
    /// A customer's stored metrics differ from a recomputation from its timeline.
    WrongMetrics {
        /// The customer.
        id: CustomerId,
        /// As stored (`None`: no metrics stored).
        stored: Option<Box<Metrics>>,
        /// As recomputed (`None`: it has no activities).
        expected: Option<Box<Metrics>>,
    },
    /// An activity (or one of its lookup entries) that is damaged, belongs to no customer, or
    /// lacks or has an extra lookup entry.
    BadActivity {
        /// The activity, when its id can be read.
        id: Option<ActivityId>,
        /// What is wrong.
        what: &'static str,
    },
    /// A history entry that does not decode, or a per-customer history entry that does not
    /// match the change feed.
    BadHistory {
        /// The sequence number.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// An index value's stored posting count differs from its postings.
    WrongCount {
        /// The index.
        index: String,
        /// The value, readable.
        value: String,
        /// The count stored (0: none).
        stored: u64,
        /// The postings it has.
        actual: u64,
    },
    /// A counter (`next_seq`, `next_activity`) is not above every number it has handed out.
    CounterBehind {
        /// Which counter.
        counter: &'static str,
        /// Its value.
        next: u64,
        /// The largest number in use.
        max: u64,
    },
}

/// The outcome of [`crate::Store::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Non-unique index entries found.
    pub entries: u64,
    /// Unique index entries found.
    pub unique_entries: u64,
    /// Everything that is wrong; empty for a consistent store.
    pub problems: Vec<Problem>,
    /// In an encrypted store, the customers whose data key is wrapped under a master key other
    /// than the key provider's current one: not wrong (rotation has not reached them yet), but
    /// the older master key must not be retired while any are left. Empty for a plain store.
    pub keys_not_current: Vec<CustomerId>,
    /// In an encrypted store, whether the blind index key is wrapped under a master key other
    /// than the current one (the same caution).
    pub blind_key_not_current: bool,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn index_name(tag: u16, schema: &Schema) -> String {
    Index::from_tag(tag, schema).map_or_else(|| format!("#{tag}"), |i| i.name().to_owned())
}

/// The index tag a key starts with (0 for a key too short to have one).
fn tag_of(key: &[u8]) -> u16 {
    super::write::posting_tag(key).unwrap_or(0)
}

/// Checks the value counts against the postings: per index value, its postings; per index
/// (a key of the tag alone), the customers with any value.
fn check_counts(tx: &ReadTxn, schema: &Schema, report: &mut VerifyReport) -> Result<()> {
    let mut actual: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut presence: BTreeMap<u16, HashSet<u64>> = BTreeMap::new();
    super::postings::audit(
        tx.raw_postings()?,
        &mut |k| {
            if super::write::posting_tag(k).is_some_and(index::counts_values) {
                *actual
                    .entry(super::write::posting_value(k).to_vec())
                    .or_default() += 1;
            }
            if let Some((tag, id)) = index::split_posting(k) {
                presence.entry(tag).or_default().insert(id);
            }
            Ok(())
        },
        // Reported with the other index checks.
        &mut |_, _| {},
    )?;
    for (tag, ids) in presence {
        actual.insert(tag.to_be_bytes().to_vec(), ids.len() as u64);
    }
    let mut stored: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for item in tx.raw_table(Table::ValueCounts)?.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        stored.insert(k.value().to_vec(), super::write::decode_count(v.value())?);
    }
    let keys: std::collections::BTreeSet<&Vec<u8>> = actual.keys().chain(stored.keys()).collect();
    for key in keys {
        let (s, a) = (
            stored.get(key).copied().unwrap_or(0),
            actual.get(key).copied().unwrap_or(0),
        );
        if s != a {
            report.problems.push(Problem::WrongCount {
                index: index_name(tag_of(key), schema),
                value: if key.len() == 2 {
                    "(customers with any value)".to_owned()
                } else {
                    index::describe_key(key, schema)
                },
                stored: s,
                actual: a,
            });
        }
    }
    Ok(())
}

/// Checks every record's expected entries; returns how many postings and unique entries were
/// found, and the largest id.
fn check_records(
    tx: &ReadTxn,
    schema: &Schema,
    report: &mut VerifyReport,
) -> Result<(u64, u64, u64)> {
    let (mut found_postings, mut found_uniques, mut max_id) = (0u64, 0u64, 0u64);
    for item in tx.raw_customers()?.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let id = k.value();
        max_id = max_id.max(id);
        report.records += 1;
        let rec = match super::crypt::decode_stored(tx.crypt(), tx.keys_table()?, id, v.value()) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem::UndecodableRecord {
                    id: CustomerId::from_u64(id),
                    error: e.into_kind(),
                });
                continue;
            }
        };
        let entries = expected_entries(tx, &rec, schema);
        for p in &entries.postings {
            if super::postings::contains(tx.raw_postings()?, p)? {
                found_postings += 1;
            } else {
                report.problems.push(Problem::MissingEntry {
                    id: rec.id,
                    index: index_name(tag_of(p), schema),
                    value: index::describe_key(&p[..p.len() - 8], schema),
                });
            }
        }
        for u in &entries.uniques {
            match tx.raw_uniques()?.get(u.key.as_slice()).map_err(storage)? {
                Some(owner) if owner.value() == id => found_uniques += 1,
                Some(owner) => {
                    found_uniques += 1;
                    report.problems.push(Problem::WrongOwner {
                        index: u.index.to_owned(),
                        value: u.display.clone(),
                        expected: rec.id,
                        found: CustomerId::from_u64(owner.value()),
                    });
                }
                None => report.problems.push(Problem::MissingEntry {
                    id: rec.id,
                    index: u.index.to_owned(),
                    value: u.display.clone(),
                }),
            }
        }
    }
    Ok((found_postings, found_uniques, max_id))
}

/// The entries a customer should have: its record's, and its stored metrics'. (Whether the
/// metrics themselves are right is checked against the timeline separately.)
fn expected_entries(tx: &ReadTxn, rec: &Record, schema: &Schema) -> index::Entries {
    let mut e = index::entries(rec, schema);
    if let Some(b) = tx.blinder() {
        e.blind(b);
    }
    let key = rec.id.as_u64().to_be_bytes();
    if let Ok(Some(bytes)) = tx.get_raw(Table::Metrics, &key) {
        if let Ok(state) = decode_metrics(&bytes) {
            e.postings
                .extend(index::metric_postings(rec.id.as_u64(), &state.metrics));
            e.postings.sort_unstable();
        }
    }
    e
}

/// The entries record `id` should have, from `cache` or computed into it.
fn entries_of<'c>(
    cache: &'c mut HashMap<u64, Option<index::Entries>>,
    tx: &ReadTxn,
    schema: &Schema,
    id: u64,
) -> Option<&'c index::Entries> {
    cache
        .entry(id)
        .or_insert_with(|| {
            tx.record(id)
                .ok()
                .flatten()
                .map(|r| expected_entries(tx, &r, schema))
        })
        .as_ref()
}

/// Checks the timeline: each activity's lookup entries, its customer, and every customer's
/// metrics against a recomputation. Returns the largest activity id.
fn check_timeline(tx: &ReadTxn, rates: &Rates, report: &mut VerifyReport) -> Result<u64> {
    let mut max_id = 0u64;
    let mut states = std::collections::BTreeMap::<u64, MetricState>::new();
    let mut count = 0u64;
    for item in tx.raw_table(Table::Activities)?.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        count += 1;
        let Ok(r) = decode_activity(k.value(), v.value()) else {
            report.problems.push(Problem::BadActivity {
                id: None,
                what: "does not decode",
            });
            continue;
        };
        max_id = max_id.max(r.id.as_u64());
        if !tx.has_record(r.customer.as_u64())? {
            report.problems.push(Problem::BadActivity {
                id: Some(r.id),
                what: "belongs to no customer",
            });
        }
        let by_id = tx.get_raw(Table::ActivityIds, &r.id.as_u64().to_be_bytes())?;
        if by_id.as_deref() != Some(k.value()) {
            report.problems.push(Problem::BadActivity {
                id: Some(r.id),
                what: "its id entry is missing or wrong",
            });
        }
        let mut tkey = Vec::with_capacity(16);
        index::key::put_timestamp(&mut tkey, r.activity.at);
        index::key::put_u64(&mut tkey, r.id.as_u64());
        let by_time = tx.get_raw(Table::ActivityTime, &tkey)?;
        if by_time.as_deref() != Some(&r.customer.as_u64().to_be_bytes()[..]) {
            report.problems.push(Problem::BadActivity {
                id: Some(r.id),
                what: "its time entry is missing or wrong",
            });
        }
        states
            .entry(r.customer.as_u64())
            .or_default()
            .add(r.id, &r.activity, rates);
    }
    for (table, what) in [
        (Table::ActivityIds, "an id entry names no activity"),
        (Table::ActivityTime, "a time entry names no activity"),
    ] {
        if tx.raw_table(table)?.len().map_err(storage)? != count {
            report
                .problems
                .push(Problem::BadActivity { id: None, what });
        }
    }
    // Every stored metrics row against its recomputation, and every recomputation against
    // its row.
    for item in tx.raw_table(Table::Metrics)?.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let id = <[u8; 8]>::try_from(k.value()).map_or(0, u64::from_be_bytes);
        let stored = decode_metrics(v.value()).ok().map(|s| s.metrics);
        let expected = states.remove(&id).map(|s| s.metrics);
        if stored != expected {
            report.problems.push(Problem::WrongMetrics {
                id: CustomerId::from_u64(id),
                stored: stored.map(Box::new),
                expected: expected.map(Box::new),
            });
        }
    }
    for (id, state) in states {
        report.problems.push(Problem::WrongMetrics {
            id: CustomerId::from_u64(id),
            stored: None,
            expected: Some(Box::new(state.metrics)),
        });
    }
    Ok(max_id)
}

/// Checks that every change decodes and the per-customer history matches the feed. Returns the
/// largest sequence number.
fn check_history(tx: &ReadTxn, report: &mut VerifyReport) -> Result<u64> {
    let mut max_seq = 0u64;
    let mut with_customer = 0u64;
    for item in tx.raw_table(Table::History)?.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let seq = <[u8; 8]>::try_from(k.value()).map_or(0, u64::from_be_bytes);
        max_seq = max_seq.max(seq);
        match super::history::decode(seq, v.value(), tx.crypt().is_some(), &|id| tx.data_key(id)) {
            Ok(c) => {
                if let Some(customer) = c.customer {
                    with_customer += 1;
                    let mut ck = customer.as_u64().to_be_bytes().to_vec();
                    ck.extend_from_slice(&seq.to_be_bytes());
                    if tx.get_raw(Table::CustomerHistory, &ck)?.is_none() {
                        report.problems.push(Problem::BadHistory {
                            seq,
                            what: "missing from its customer's history",
                        });
                    }
                }
            }
            Err(_) => report.problems.push(Problem::BadHistory {
                seq,
                what: "does not decode",
            }),
        }
    }
    if tx
        .raw_table(Table::CustomerHistory)?
        .len()
        .map_err(storage)?
        != with_customer
    {
        report.problems.push(Problem::BadHistory {
            seq: 0,
            what: "a customer history entry names no change of that customer",
        });
    }
    Ok(max_seq)
}

pub(crate) fn verify(tx: &ReadTxn, rates: &Rates) -> Result<VerifyReport> {
    let schema = tx.schema()?;
    let mut report = VerifyReport::default();
    let (found_postings, found_uniques, max_id) = check_records(tx, &schema, &mut report)?;
    let mut entries = 0u64;
    super::postings::audit(
        tx.raw_postings()?,
        &mut |_| {
            entries += 1;
            Ok(())
        },
        &mut |key, _| {
            report
                .problems
                .push(Problem::MalformedEntry { key: key.to_vec() });
        },
    )?;
    report.entries = entries;
    report.unique_entries = tx.raw_uniques()?.len().map_err(storage)?;
    // Expected entries of each record, computed once per record while looking for orphans. A
    // record that is missing or does not decode accounts for nothing (the latter is already
    // reported as undecodable).
    let mut expected: HashMap<u64, Option<index::Entries>> = HashMap::new();
    if report.entries != found_postings {
        let mut orphans = Vec::new();
        super::postings::audit(
            tx.raw_postings()?,
            &mut |key| {
                let Some((tag, id)) = index::split_posting(key) else {
                    return Ok(());
                };
                let accounted = entries_of(&mut expected, tx, &schema, id).is_some_and(|e| {
                    e.postings
                        .binary_search_by(|p| p.as_slice().cmp(key))
                        .is_ok()
                });
                if !accounted {
                    orphans.push(Problem::OrphanEntry {
                        id: CustomerId::from_u64(id),
                        index: index_name(tag, &schema),
                        value: index::describe_key(&key[..key.len() - 8], &schema),
                    });
                }
                Ok(())
            },
            &mut |_, _| {},
        )?;
        report.problems.extend(orphans);
    }
    if report.unique_entries != found_uniques {
        for item in tx.raw_uniques()?.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (key, id) = (k.value(), v.value());
            let accounted = entries_of(&mut expected, tx, &schema, id)
                .is_some_and(|e| e.uniques.iter().any(|u| u.key == key));
            if !accounted {
                report.problems.push(Problem::OrphanEntry {
                    id: CustomerId::from_u64(id),
                    index: index_name(tag_of(key), &schema),
                    value: index::describe_key(key, &schema),
                });
            }
        }
    }
    let next_id = match tx.raw_meta()?.get(META_NEXT_ID).map_err(storage)? {
        Some(v) => <[u8; 8]>::try_from(v.value()).map_or(0, u64::from_le_bytes),
        None => 0,
    };
    if report.records > 0 && next_id <= max_id {
        report
            .problems
            .push(Problem::NextIdBehind { next_id, max_id });
    }
    check_counts(tx, &schema, &mut report)?;
    let max_activity = check_timeline(tx, rates, &mut report)?;
    let max_seq = check_history(tx, &mut report)?;
    for (counter, key, max) in [
        ("next_activity", META_NEXT_ACTIVITY, max_activity),
        ("next_seq", META_NEXT_SEQ, max_seq),
    ] {
        let next = read_counter(tx.raw_meta()?, key)
            .ok()
            .flatten()
            .unwrap_or(1);
        if max > 0 && next <= max {
            report
                .problems
                .push(Problem::CounterBehind { counter, next, max });
        }
    }
    Ok(report)
}
