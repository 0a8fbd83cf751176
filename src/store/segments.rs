//! Saved segments: named filters kept in the database, and which customers entered or left one
//! since a point in the change feed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::history::{self, Change, Operation, Replay};
use super::read::Backend;
use super::write::WriteTxn;
use super::{Table, codec};
use crate::error::{Error, Result};
use crate::model::{Activity, ActivityId, CustomerId, MetricState, Metrics, Record};
use crate::query::Segment;

/// Who entered and who left a segment between a feed position and now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentChanges {
    /// Members now that were not members at the position.
    pub entered: Vec<CustomerId>,
    /// Members at the position that are not members now (including removed or merged-away
    /// customers).
    pub left: Vec<CustomerId>,
    /// The feed position this answer is as of: pass it as `since` next time.
    pub until: u64,
}

fn key(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

impl WriteTxn {
    /// Saves a segment under its name, replacing one of the same name.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] for an empty name.
    pub fn save_segment(&mut self, segment: &Segment) -> Result<()> {
        let name = segment.name.trim();
        if name.is_empty() {
            return Err(Error::invalid(
                "segment",
                segment.name.as_str(),
                crate::normalize::Reason::Empty,
            ));
        }
        self.put_raw(Table::Segments, key(name), Some(codec::encode(segment)?))
    }

    /// Removes the segment named `name`; whether there was one.
    pub fn remove_segment(&mut self, name: &str) -> Result<bool> {
        let existed = self.get_raw(Table::Segments, &key(name.trim()))?.is_some();
        self.put_raw(Table::Segments, key(name.trim()), None)?;
        Ok(existed)
    }
}

pub(crate) fn segment(b: &impl Backend, name: &str) -> Result<Option<Segment>> {
    b.get_raw(Table::Segments, &key(name.trim()))?
        .map(|v| codec::decode(&v, "segment"))
        .transpose()
}

pub(crate) fn segments(b: &impl Backend) -> Result<Vec<Segment>> {
    let mut out = Vec::new();
    b.scan_raw(
        Table::Segments,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        &mut |_, v| {
            out.push(codec::decode(v, "segment")?);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// A customer and its timeline as they were after change `seq`, rebuilt from history.
struct Past {
    record: Option<Record>,
    activities: BTreeMap<ActivityId, Activity>,
}

fn activity_of(c: &Change, after: bool) -> Result<Option<Activity>> {
    let Some(f) = c.fields.iter().find(|f| f.field == "activity") else {
        return Ok(None);
    };
    let json = if after { &f.after } else { &f.before };
    json.as_ref()
        .map(|j| {
            serde_json::from_str(j.as_str()).map_err(|e| Error::corrupted("history activity", e))
        })
        .transpose()
}

fn past(b: &impl Backend, customer: CustomerId, seq: u64) -> Result<Past> {
    let mut replay = Replay::default();
    let mut activities = BTreeMap::new();
    let (mut created, mut updated, mut revision) = (None, None, 0u64);
    for c in super::timeline::history_until(b, customer, seq)? {
        replay.apply(&c)?;
        match c.operation {
            Operation::Insert | Operation::Snapshot | Operation::Restored => {
                created.get_or_insert(c.at);
                updated = Some(c.at);
                revision += 1;
            }
            Operation::Update | Operation::Merged | Operation::Unmerged => {
                updated = Some(c.at);
                revision += 1;
            }
            Operation::ActivityAdded(id) | Operation::ActivityCorrected(id) => {
                if let Some(a) = activity_of(&c, true)? {
                    activities.insert(id, a);
                }
            }
            Operation::ActivityRemoved(id) => {
                activities.remove(&id);
            }
            Operation::Remove | Operation::MergedInto(_) => activities.clear(),
            _ => {}
        }
    }
    let record = match (replay.customer()?, created, updated) {
        (Some(data), Some(created_at), Some(updated_at)) => Some(Record {
            id: customer,
            created_at,
            updated_at,
            revision,
            customer: data,
        }),
        _ => None,
    };
    Ok(Past { record, activities })
}

/// Whether the past state is a member of `segment` as of `now`.
fn member_then(
    segment: &Segment,
    p: &Past,
    rates: &crate::model::Rates,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    let Some(record) = &p.record else {
        return Ok(false);
    };
    let state = MetricState::of(p.activities.iter().map(|(id, a)| (*id, a)), rates);
    let metrics = if state.metrics.activity_count > 0 {
        state.metrics
    } else {
        Metrics::default()
    };
    segment.matches(record, &metrics, now)
}

/// Who entered and left `segment` between feed position `since` and now: the customers touched
/// by a change after `since` are evaluated as they are now and as history says they were at
/// `since` (their record and their timeline, relative times taken at the time of change
/// `since`). Exact while history back to `since` is kept in full; after compaction a customer's
/// state at `since` is its snapshot's.
pub(crate) fn segment_changes(
    b: &impl Backend,
    segment: &Segment,
    since: u64,
    rates: &crate::model::Rates,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<SegmentChanges> {
    let until = b.last_seq()?;
    let mut touched = BTreeSet::new();
    let mut then_time = None;
    let start = since.to_be_bytes();
    b.scan_raw(
        Table::History,
        (Bound::Included(start.as_slice()), Bound::Unbounded),
        false,
        &mut |k, v| {
            let seq = u64::from_be_bytes(
                k.try_into()
                    .map_err(|_| Error::corrupted("history key", "not 8 bytes"))?,
            );
            let c = history::decode(seq, v, b.crypt().is_some(), &|id| b.data_key(id))?;
            if seq == since {
                then_time = Some(c.at);
            } else if let Some(id) = c.customer {
                touched.insert(id);
            }
            Ok(true)
        },
    )?;
    let then_time = then_time.unwrap_or(now);
    let mut out = SegmentChanges {
        until,
        ..SegmentChanges::default()
    };
    for id in touched {
        let was = member_then(segment, &past(b, id, since)?, rates, then_time)?;
        let is = match b.record(id.as_u64())? {
            Some(rec) => {
                let metrics = super::timeline::metrics(b, id)?;
                segment.matches(&rec, &metrics, now)?
            }
            None => false,
        };
        match (was, is) {
            (false, true) => out.entered.push(id),
            (true, false) => out.left.push(id),
            _ => {}
        }
    }
    Ok(out)
}
