//! The activity timeline and derived metrics, history reads, and history compaction.
//!
//! Writes happen in [`WriteTxn`] methods defined here; reads are free functions over the
//! private [`Backend`] so both transaction kinds share them through [`crate::Read`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::history::{self, Change, FieldChange, Json, Operation, Replay};
use super::read::Backend;
use super::write::WriteTxn;
use super::{Table, codec};
use crate::error::{Error, ErrorKind, Result};
use crate::index::{self, key};
use crate::model::{
    Activity, ActivityId, ActivityRecord, ActivityType, Customer, CustomerId, MetricState, Metrics,
};

/// Which activities to read: a time range, types, a page size and a cursor.
///
/// ```
/// use chrono::{Duration, Utc};
/// use customerdb::{ActivityQuery, ActivityType};
/// let now = Utc::now();
/// let yesterday = ActivityQuery::new()
///     .since(now - Duration::days(1))
///     .until(now)
///     .of_type(ActivityType::Purchase)
///     .limit(100);
/// # let _ = yesterday;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ActivityQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    types: BTreeSet<ActivityType>,
    limit: usize,
    after: Option<(DateTime<Utc>, ActivityId)>,
    oldest_first: bool,
}

impl Default for ActivityQuery {
    fn default() -> Self {
        ActivityQuery::new()
    }
}

impl ActivityQuery {
    /// Every activity, newest first, at most 100.
    pub fn new() -> ActivityQuery {
        ActivityQuery {
            since: None,
            until: None,
            types: BTreeSet::new(),
            limit: 100,
            after: None,
            oldest_first: false,
        }
    }

    /// Only activities at or after `t`.
    pub fn since(mut self, t: DateTime<Utc>) -> Self {
        self.since = Some(t);
        self
    }

    /// Only activities before `t`.
    pub fn until(mut self, t: DateTime<Utc>) -> Self {
        self.until = Some(t);
        self
    }

    /// Only activities of this type (call again to allow several).
    pub fn of_type(mut self, t: ActivityType) -> Self {
        self.types.insert(t);
        self
    }

    /// At most `n` activities.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// The next page: activities after `last` (the last one of the previous page) in this
    /// query's order. Activities added meanwhile elsewhere in the order do not shift the page.
    pub fn after(mut self, last: &ActivityRecord) -> Self {
        self.after = Some((last.activity.at, last.id));
        self
    }

    /// Oldest first instead of newest first.
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    fn wants(&self, t: ActivityType) -> bool {
        self.types.is_empty() || self.types.contains(&t)
    }

    /// The key range for keys `prefix ++ at ++ id`.
    fn range(&self, prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let at_key = |t: DateTime<Utc>| {
            let mut k = prefix.to_vec();
            key::put_timestamp(&mut k, t);
            k
        };
        let mut start = Bound::Included(self.since.map_or_else(|| prefix.to_vec(), at_key));
        let mut end = match (self.until, key::prefix_end(prefix)) {
            (Some(t), _) => Bound::Excluded(at_key(t)),
            (None, Some(e)) if !prefix.is_empty() => Bound::Excluded(e),
            _ => Bound::Unbounded,
        };
        if let Some((at, id)) = self.after {
            let mut cursor = at_key(at);
            key::put_u64(&mut cursor, id.as_u64());
            let cursor_bound = Bound::Excluded(cursor.clone());
            if self.oldest_first {
                if bound_value(&start).is_none_or(|s| cursor.as_slice() >= s) {
                    start = cursor_bound;
                }
            } else if bound_value(&end).is_none_or(|e| cursor.as_slice() < e) {
                end = cursor_bound;
            }
        }
        (start, end)
    }
}

fn bound_value(b: &Bound<Vec<u8>>) -> Option<&[u8]> {
    match b {
        Bound::Included(v) | Bound::Excluded(v) => Some(v),
        Bound::Unbounded => None,
    }
}

fn as_slices(r: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        r.0.as_ref().map(Vec::as_slice),
        r.1.as_ref().map(Vec::as_slice),
    )
}

/// What [`WriteTxn::compact_history`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// History entries removed.
    pub removed: u64,
    /// Snapshots written in their place.
    pub snapshots: u64,
}

/// An activity's stored value (its id and customer are in the key).
#[derive(Serialize, Deserialize)]
struct StoredActivity<A> {
    #[serde(with = "crate::model::wire::timestamp")]
    recorded_at: DateTime<Utc>,
    activity: A,
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// `customer ++ at ++ id`.
fn activity_key(customer: CustomerId, at: DateTime<Utc>, id: ActivityId) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&be(customer.as_u64()));
    key::put_timestamp(&mut k, at);
    key::put_u64(&mut k, id.as_u64());
    k
}

/// `at ++ id`.
fn time_key(at: DateTime<Utc>, id: ActivityId) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    key::put_timestamp(&mut k, at);
    key::put_u64(&mut k, id.as_u64());
    k
}

/// The customer and activity id of an activity key.
pub(crate) fn split_activity_key(k: &[u8]) -> Result<(CustomerId, ActivityId)> {
    let bad = || Error::corrupted("activity key", "not 24 bytes");
    let arr: &[u8; 24] = k.try_into().map_err(|_| bad())?;
    let (c, rest) = arr.split_first_chunk::<8>().ok_or_else(bad)?;
    let (_, id) = rest.split_last_chunk::<8>().ok_or_else(bad)?;
    Ok((
        CustomerId::from_u64(u64::from_be_bytes(*c)),
        ActivityId::from_u64(u64::from_be_bytes(*id)),
    ))
}

fn u64_of(bytes: &[u8], what: &'static str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::corrupted(what, "not 8 bytes"))?;
    Ok(u64::from_be_bytes(arr))
}

/// Decodes an activity stored under `key`.
pub(crate) fn decode_activity(key: &[u8], bytes: &[u8]) -> Result<ActivityRecord> {
    let (customer, id) = split_activity_key(key)?;
    let s: StoredActivity<Activity> = codec::decode(bytes, "activity")?;
    Ok(ActivityRecord {
        id,
        customer,
        recorded_at: s.recorded_at,
        activity: s.activity,
    })
}

pub(crate) fn decode_metrics(bytes: &[u8]) -> Result<MetricState> {
    codec::decode(bytes, "metrics")
}

fn activity_json(a: &Activity) -> Result<Json> {
    serde_json::to_string(a)
        .map(Json::from_json_text)
        .map_err(|e| Error::corrupted("activity", e))
}

impl WriteTxn {
    /// Adds an activity to a customer's timeline and updates its metrics, in this transaction.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer; [`ErrorKind::Invalid`] for a text
    /// that is refused (the field is named, e.g. `activity.order_ref`). Nothing is written then.
    pub fn add_activity(&mut self, customer: CustomerId, activity: Activity) -> Result<ActivityId> {
        let activity = activity.standardise()?;
        if !self.has_record(customer.as_u64())? {
            return Err(Error::new(ErrorKind::NotFound(customer)));
        }
        let id = ActivityId::from_u64(self.next_activity.peek());
        let now = self.now();
        let after = activity_json(&activity)?;
        let bytes = codec::encode(&StoredActivity {
            recorded_at: now,
            activity: &activity,
        })?;
        let old = self.metric_state(customer)?;
        let mut state = old.clone().unwrap_or_default();
        state.add(id, &activity, &self.rates);
        self.next_activity.take();
        self.put_activity(customer, id, &activity, Some(bytes))?;
        self.put_metrics(customer, old.as_ref(), Some(&state))?;
        self.log(
            now,
            Some(customer),
            Operation::ActivityAdded(id),
            vec![FieldChange {
                field: "activity".into(),
                before: None,
                after: Some(after),
            }],
        );
        Ok(id)
    }

    /// Replaces activity `id` (it stays with its customer), returning what it was. The
    /// customer's metrics are recomputed from its timeline.
    ///
    /// # Errors
    /// [`ErrorKind::ActivityNotFound`] if there is no such activity; [`ErrorKind::Invalid`] as
    /// for [`WriteTxn::add_activity`].
    pub fn correct_activity(
        &mut self,
        id: ActivityId,
        activity: Activity,
    ) -> Result<ActivityRecord> {
        let activity = activity.standardise()?;
        let old = self
            .activity_record(id)?
            .ok_or(Error::new(ErrorKind::ActivityNotFound(id)))?;
        let now = self.now();
        let (before, after) = (activity_json(&old.activity)?, activity_json(&activity)?);
        let bytes = codec::encode(&StoredActivity {
            recorded_at: now,
            activity: &activity,
        })?;
        self.put_activity(old.customer, id, &old.activity, None)?;
        self.put_activity(old.customer, id, &activity, Some(bytes))?;
        self.recompute_metrics(old.customer)?;
        self.log(
            now,
            Some(old.customer),
            Operation::ActivityCorrected(id),
            vec![FieldChange {
                field: "activity".into(),
                before: Some(before),
                after: Some(after),
            }],
        );
        Ok(old)
    }

    /// Removes activity `id`, returning what it was; the customer's metrics are recomputed.
    pub fn remove_activity(&mut self, id: ActivityId) -> Result<Option<ActivityRecord>> {
        let Some(old) = self.activity_record(id)? else {
            return Ok(None);
        };
        let before = activity_json(&old.activity)?;
        self.put_activity(old.customer, id, &old.activity, None)?;
        self.recompute_metrics(old.customer)?;
        let now = self.now();
        self.log(
            now,
            Some(old.customer),
            Operation::ActivityRemoved(id),
            vec![FieldChange {
                field: "activity".into(),
                before: Some(before),
                after: None,
            }],
        );
        Ok(Some(old))
    }

    /// Recomputes a customer's metrics from its timeline (after the store's exchange rates
    /// changed, say), returning them.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer.
    pub fn recompute_metrics(&mut self, customer: CustomerId) -> Result<Metrics> {
        if !self.has_record(customer.as_u64())? {
            return Err(Error::new(ErrorKind::NotFound(customer)));
        }
        let acts = timeline_all(self, customer)?;
        let state = MetricState::of(acts.iter().map(|r| (r.id, &r.activity)), &self.rates);
        let old = self.metric_state(customer)?;
        let new = (state.metrics.activity_count > 0).then_some(&state);
        self.put_metrics(customer, old.as_ref(), new)?;
        Ok(state.metrics)
    }

    /// Removes every activity of `customer` and its metrics (the customer is being removed).
    pub(super) fn remove_timeline(&mut self, customer: CustomerId) -> Result<()> {
        for r in timeline_all(self, customer)? {
            self.put_activity(customer, r.id, &r.activity, None)?;
        }
        let old = self.metric_state(customer)?;
        self.put_metrics(customer, old.as_ref(), None)
    }

    /// Compacts history older than `before`: each customer's changes before then become one
    /// [`Operation::Snapshot`] of its state at its last such change (under that change's
    /// sequence number), and a removed customer's older changes go entirely. Changes from
    /// `before` on are kept as they are, so [`crate::Read::customer_as_of`] stays exact from the
    /// horizon on, and a change-feed consumer that is not behind the horizon sees no difference.
    /// Only the oldest run of changes all older than `before` is compacted (the feed is in
    /// commit order; a clock set back does not make newer changes eligible).
    pub fn compact_history(&mut self, before: DateTime<Utc>) -> Result<Compaction> {
        let mut groups: BTreeMap<Option<CustomerId>, Vec<Change>> = BTreeMap::new();
        let mut scan_err = None;
        self.scan_raw(
            Table::History,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            &mut |k, v| {
                let change = match u64_of(k, "history key").and_then(|s| {
                    history::decode(s, v, self.crypt().is_some(), &|id| self.data_key(id))
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        scan_err = Some(e);
                        return Ok(false);
                    }
                };
                if change.at >= before {
                    return Ok(false);
                }
                groups.entry(change.customer).or_default().push(change);
                Ok(true)
            },
        )?;
        if let Some(e) = scan_err {
            return Err(e);
        }
        let mut done = Compaction::default();
        for (customer, changes) in groups {
            let Some(last) = changes.last() else { continue };
            let keep_as_is = changes.len() == 1
                && matches!(last.operation, Operation::Insert | Operation::Snapshot);
            if keep_as_is && customer.is_some() {
                continue;
            }
            let mut replay = Replay::default();
            for c in &changes {
                replay.apply(c)?;
                self.put_raw(Table::History, be(c.seq).to_vec(), None)?;
                if let Some(id) = customer {
                    self.put_raw(Table::CustomerHistory, customer_seq_key(id, c.seq), None)?;
                }
                done.removed += 1;
            }
            if let (Some(id), Some(state)) = (customer, replay.state) {
                let snapshot = Change {
                    seq: last.seq,
                    at: last.at,
                    actor: None,
                    customer: Some(id),
                    operation: Operation::Snapshot,
                    fields: history::diff(&history::Fields::new(), &state),
                };
                self.put_raw(
                    Table::History,
                    be(last.seq).to_vec(),
                    Some(self.encode_change(&snapshot)?),
                )?;
                self.put_raw(
                    Table::CustomerHistory,
                    customer_seq_key(id, last.seq),
                    Some(Vec::new()),
                )?;
                done.removed -= 1;
                done.snapshots += 1;
            }
        }
        Ok(done)
    }

    /// Moves an activity to another customer's timeline (a merge or an unmerge), keeping its
    /// id and when it was recorded. Metrics are the caller's to recompute.
    pub(super) fn move_activity(&mut self, r: &ActivityRecord, to: CustomerId) -> Result<()> {
        let bytes = codec::encode(&StoredActivity {
            recorded_at: r.recorded_at,
            activity: &r.activity,
        })?;
        self.put_activity(r.customer, r.id, &r.activity, None)?;
        self.put_activity(to, r.id, &r.activity, Some(bytes))
    }

    /// Whether a customer exists, without decoding it.
    fn has_record(&self, id: u64) -> Result<bool> {
        Backend::has_record(self, id)
    }

    fn metric_state(&self, customer: CustomerId) -> Result<Option<MetricState>> {
        self.get_raw(Table::Metrics, &be(customer.as_u64()))?
            .map(|b| decode_metrics(&b))
            .transpose()
    }

    /// Writes (or, with `None`, removes) a customer's metrics and moves their index entries.
    fn put_metrics(
        &mut self,
        customer: CustomerId,
        old: Option<&MetricState>,
        new: Option<&MetricState>,
    ) -> Result<()> {
        let id = customer.as_u64();
        let postings = |s: Option<&MetricState>| {
            s.map(|s| index::metric_postings(id, &s.metrics))
                .unwrap_or_default()
        };
        self.stage_postings(&postings(old), &postings(new))?;
        let bytes = new.map(codec::encode).transpose()?;
        self.put_raw(Table::Metrics, be(id).to_vec(), bytes)
    }

    /// Writes (`Some`) or removes (`None`) an activity's three entries.
    fn put_activity(
        &mut self,
        customer: CustomerId,
        id: ActivityId,
        activity: &Activity,
        bytes: Option<Vec<u8>>,
    ) -> Result<()> {
        let akey = activity_key(customer, activity.at, id);
        let present = bytes.is_some();
        self.put_raw(
            Table::ActivityTime,
            time_key(activity.at, id),
            present.then(|| be(customer.as_u64()).to_vec()),
        )?;
        self.put_raw(
            Table::ActivityIds,
            be(id.as_u64()).to_vec(),
            present.then(|| akey.clone()),
        )?;
        self.put_raw(Table::Activities, akey, bytes)
    }

    fn activity_record(&self, id: ActivityId) -> Result<Option<ActivityRecord>> {
        activity(self, id)
    }
}

fn customer_seq_key(customer: CustomerId, seq: u64) -> Vec<u8> {
    let mut k = be(customer.as_u64()).to_vec();
    k.extend_from_slice(&be(seq));
    k
}

/// Every activity of `customer`, oldest first.
pub(super) fn timeline_all(b: &impl Backend, customer: CustomerId) -> Result<Vec<ActivityRecord>> {
    let prefix = be(customer.as_u64());
    let q = ActivityQuery::new().limit(usize::MAX).oldest_first();
    collect_timeline(b, &prefix, &q)
}

fn collect_timeline(
    b: &impl Backend,
    prefix: &[u8],
    q: &ActivityQuery,
) -> Result<Vec<ActivityRecord>> {
    let range = q.range(prefix);
    let mut out = Vec::with_capacity(q.limit.min(64));
    if q.limit == 0 {
        return Ok(out);
    }
    b.scan_raw(
        Table::Activities,
        as_slices(&range),
        !q.oldest_first,
        &mut |k, v| {
            let r = decode_activity(k, v)?;
            if q.wants(r.activity.activity_type()) {
                out.push(r);
            }
            Ok(out.len() < q.limit)
        },
    )?;
    Ok(out)
}

fn require_customer(b: &impl Backend, customer: CustomerId) -> Result<()> {
    if b.has_record(customer.as_u64())? {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::NotFound(customer)))
    }
}

pub(crate) fn timeline(
    b: &impl Backend,
    customer: CustomerId,
    q: &ActivityQuery,
) -> Result<Vec<ActivityRecord>> {
    let found = collect_timeline(b, &be(customer.as_u64()), q)?;
    // Activities exist only for stored customers (a verified invariant), so the customer need
    // be looked up only when there are none.
    if found.is_empty() {
        require_customer(b, customer)?;
    }
    Ok(found)
}

pub(crate) fn activities(b: &impl Backend, q: &ActivityQuery) -> Result<Vec<ActivityRecord>> {
    let range = q.range(&[]);
    let mut out = Vec::new();
    if q.limit == 0 {
        return Ok(out);
    }
    b.scan_raw(
        Table::ActivityTime,
        as_slices(&range),
        !q.oldest_first,
        &mut |k, v| {
            let mut akey = be(u64_of(v, "activity time entry")?).to_vec();
            akey.extend_from_slice(k);
            let bytes = b
                .get_raw(Table::Activities, &akey)?
                .ok_or_else(|| Error::corrupted("activity time entry", "names no activity"))?;
            let r = decode_activity(&akey, &bytes)?;
            if q.wants(r.activity.activity_type()) {
                out.push(r);
            }
            Ok(out.len() < q.limit)
        },
    )?;
    Ok(out)
}

pub(crate) fn activity(b: &impl Backend, id: ActivityId) -> Result<Option<ActivityRecord>> {
    let Some(akey) = b.get_raw(Table::ActivityIds, &be(id.as_u64()))? else {
        return Ok(None);
    };
    let bytes = b
        .get_raw(Table::Activities, &akey)?
        .ok_or_else(|| Error::corrupted("activity id entry", "names no activity"))?;
    decode_activity(&akey, &bytes).map(Some)
}

pub(crate) fn metrics(b: &impl Backend, customer: CustomerId) -> Result<Metrics> {
    require_customer(b, customer)?;
    stored_metrics(b, customer)
}

/// The metrics stored for `customer`, or the defaults if none are, without checking that the
/// customer exists: for ids the caller read from an index (a planner's candidates), which
/// name stored customers, this saves a lookup per customer.
pub(crate) fn stored_metrics(b: &impl Backend, customer: CustomerId) -> Result<Metrics> {
    match b.get_raw(Table::Metrics, &be(customer.as_u64()))? {
        Some(bytes) => Ok(decode_metrics(&bytes)?.metrics),
        None => Ok(Metrics::default()),
    }
}

fn change(b: &impl Backend, seq: u64) -> Result<Change> {
    let bytes = b
        .get_raw(Table::History, &be(seq))?
        .ok_or_else(|| Error::corrupted("customer history entry", "names no change"))?;
    history::decode(seq, &bytes, b.crypt().is_some(), &|id| b.data_key(id))
}

/// The sequence numbers of a customer's changes below `before`, in order or reversed.
fn customer_seqs(
    b: &impl Backend,
    customer: CustomerId,
    before: Option<u64>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<u64>> {
    let start = customer_seq_key(customer, 0);
    let end = match before {
        Some(s) => customer_seq_key(customer, s),
        None => customer_seq_key(customer, u64::MAX),
    };
    let mut seqs = Vec::new();
    if limit == 0 {
        return Ok(seqs);
    }
    b.scan_raw(
        Table::CustomerHistory,
        (Bound::Included(&start), Bound::Excluded(&end)),
        reverse,
        &mut |k, _| {
            let seq = k
                .get(8..)
                .ok_or_else(|| Error::corrupted("customer history key", "too short"))?;
            seqs.push(u64_of(seq, "customer history key")?);
            Ok(seqs.len() < limit)
        },
    )?;
    Ok(seqs)
}

pub(crate) fn history(
    b: &impl Backend,
    customer: CustomerId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Change>> {
    customer_seqs(b, customer, before, true, limit)?
        .into_iter()
        .map(|seq| change(b, seq))
        .collect()
}

/// A customer's changes with a sequence number up to `seq`, oldest first.
pub(crate) fn history_until(
    b: &impl Backend,
    customer: CustomerId,
    seq: u64,
) -> Result<Vec<Change>> {
    customer_seqs(b, customer, seq.checked_add(1), false, usize::MAX)?
        .into_iter()
        .map(|s| change(b, s))
        .collect()
}

pub(crate) fn customer_as_of(
    b: &impl Backend,
    customer: CustomerId,
    at: DateTime<Utc>,
) -> Result<Option<Customer>> {
    let mut replay = Replay::default();
    for seq in customer_seqs(b, customer, None, false, usize::MAX)? {
        let c = change(b, seq)?;
        if c.at > at {
            break;
        }
        replay.apply(&c)?;
    }
    replay.customer()
}

pub(crate) fn changes(b: &impl Backend, since: u64, limit: usize) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    if limit == 0 || since == u64::MAX {
        return Ok(out);
    }
    let start = be(since + 1);
    b.scan_raw(
        Table::History,
        (Bound::Included(&start), Bound::Unbounded),
        false,
        &mut |k, v| {
            out.push(history::decode(
                u64_of(k, "history key")?,
                v,
                b.crypt().is_some(),
                &|id| b.data_key(id),
            )?);
            Ok(out.len() < limit)
        },
    )?;
    Ok(out)
}

pub(crate) fn last_seq(b: &impl Backend) -> Result<u64> {
    b.last_seq()
}
