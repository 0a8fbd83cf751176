//! Running queries: sorting, keyset paging, and the forms results come in (ids, records, a
//! count, a plan).

use std::cmp::Ordering;
use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::eval::{self, Predicate, Val};
use super::plan::{Choice, Explain, Planner, Step};
use super::{Field, Operand, Order, Query};
use crate::error::Result;
use crate::index::{Index, Scan};
use crate::model::{CustomerId, Metrics, Record};
use crate::store::{Read, ReadTxn, WriteTxn};

mod sealed {
    use crate::error::Result;
    use crate::index::{Index, Scan};
    use crate::model::{CustomerId, Metrics};
    use crate::store::Ids;

    pub trait Sealed {
        /// The postings a scan reads, from the store's value counts; `None` if unknown or past
        /// `cap` values (see `store::read::counted`).
        fn counted(&self, index: &Index, scan: &Scan, cap: usize) -> Result<Option<u64>>;
        /// Feeds `f` the ids `ids` reads, as read (see `store::read::for_each_id`).
        fn for_each_id(&self, ids: &Ids<'_>, f: &mut dyn FnMut(u64, bool)) -> Result<()>;
        /// The metrics of a customer known to exist (see `store::stored_metrics`).
        fn stored_metrics(&self, id: CustomerId) -> Result<Metrics>;
    }

    /// Implements `Sealed` for a transaction type by the store's shared functions.
    macro_rules! sealed_for {
        ($t:ty) => {
            impl Sealed for $t {
                fn counted(&self, index: &Index, scan: &Scan, cap: usize) -> Result<Option<u64>> {
                    crate::store::counted(self, index, scan, cap)
                }
                fn for_each_id(&self, ids: &Ids<'_>, f: &mut dyn FnMut(u64, bool)) -> Result<()> {
                    crate::store::for_each_id(self, ids, f)
                }
                fn stored_metrics(&self, id: CustomerId) -> Result<Metrics> {
                    crate::store::stored_metrics(self, id)
                }
            }
        };
    }
    sealed_for!(crate::store::ReadTxn);
    sealed_for!(crate::store::WriteTxn);
}

/// A transaction a query can run in: [`ReadTxn`] (a snapshot) or [`WriteTxn`] (which sees
/// its own writes).
pub trait Source: Read + sealed::Sealed {
    /// Calls `f` with every customer whose id is at least `from`, in id order, until it
    /// returns `false`.
    fn for_each_customer(
        &self,
        from: CustomerId,
        f: &mut dyn FnMut(Record) -> Result<bool>,
    ) -> Result<()>;
}

impl Source for ReadTxn {
    fn for_each_customer(
        &self,
        from: CustomerId,
        f: &mut dyn FnMut(Record) -> Result<bool>,
    ) -> Result<()> {
        for rec in self.range(from..)? {
            if !f(rec?)? {
                break;
            }
        }
        Ok(())
    }
}

impl Source for WriteTxn {
    fn for_each_customer(
        &self,
        from: CustomerId,
        f: &mut dyn FnMut(Record) -> Result<bool>,
    ) -> Result<()> {
        // A write transaction has no public id-ordered cursor; every customer has exactly one
        // `created_at` entry, so that index lists them all.
        let mut ids = self.ids(&Index::CreatedAt, &Scan::All)?;
        ids.retain(|id| *id >= from);
        ids.sort_unstable();
        for id in ids {
            if let Some(rec) = self.get(id)? {
                if !f(rec)? {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// Where a page ended: the last customer's sort key and id. The next page starts after it,
/// so paging stays correct while customers are added, changed or removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort key of the last customer (`None`: it had no value, or the query sorts by id).
    pub key: Option<Operand>,
    /// The last customer's id.
    pub id: CustomerId,
}

impl Cursor {
    /// A cursor after `id` with sort key `key`.
    pub fn new(key: Option<Operand>, id: CustomerId) -> Cursor {
        Cursor { key, id }
    }
}

/// One page of results and the cursor for the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The customers, in query order.
    pub records: Vec<Record>,
    /// Where the next page starts, if there are more customers.
    pub next: Option<Cursor>,
}

/// The customers a query found, read lazily when the plan did not decode them already.
pub struct Records<'t, S: Source + ?Sized> {
    tx: &'t S,
    loaded: VecDeque<Record>,
    ids: std::vec::IntoIter<u64>,
}

impl<S: Source + ?Sized> std::fmt::Debug for Records<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("loaded", &self.loaded.len())
            .field("ids", &self.ids.len())
            .finish_non_exhaustive()
    }
}

impl<S: Source + ?Sized> Iterator for Records<'_, S> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if let Some(r) = self.loaded.pop_front() {
            return Some(Ok(r));
        }
        loop {
            let id = self.ids.next()?;
            match self.tx.get(CustomerId::from_u64(id)) {
                Ok(Some(r)) => return Some(Ok(r)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A selected customer: its sort key, id, and record when decoded on the way.
struct Hit {
    key: Option<Val<'static>>,
    id: u64,
    record: Option<Record>,
}

/// Orders keys: missing first, then by value (numbers across integer and decimal).
fn cmp_keys(a: Option<&Val<'_>>, b: Option<&Val<'_>>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => eval::compare(x, y).unwrap_or_else(|| x.cmp(y)),
    }
}

fn cmp_hits(a: (Option<&Val<'_>>, u64), b: (Option<&Val<'_>>, u64), order: Order) -> Ordering {
    let k = cmp_keys(a.0, b.0);
    let k = if order == Order::Desc { k.reverse() } else { k };
    k.then(a.1.cmp(&b.1))
}

/// A cursor's key in comparable form.
fn cursor_key(key: Option<&Operand>, now: DateTime<Utc>) -> Option<Val<'static>> {
    Some(match key? {
        Operand::Text(s) => Val::Text(s.clone().into()),
        Operand::Integer(i) => Val::Int(*i),
        Operand::Decimal(d) => Val::Dec(*d),
        Operand::Boolean(b) => Val::Bool(*b),
        Operand::Date(d) => Val::Date(*d),
        Operand::Timestamp(t) => Val::Ts(*t),
        Operand::Relative(s) => Val::Ts(
            TimeDelta::try_seconds(*s)
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now),
        ),
    })
}

impl Query {
    fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }

    fn compile<S: Source + ?Sized>(&self, tx: &S, now: DateTime<Utc>) -> Result<Predicate> {
        let schema = tx.schema()?;
        self.filter.compile(Some(&schema), now)
    }

    /// How many customers match, ignoring the limit and the cursor.
    ///
    /// # Errors
    /// As [`crate::query::Filter::compile`], and storage errors.
    pub fn count<S: Source + ?Sized>(&self, tx: &S) -> Result<u64> {
        let now = self.now();
        let pred = self.compile(tx, now)?;
        let mut planner = Planner::new(tx, now)?;
        match planner.choose(&pred.node)?.0 {
            Choice::Set(set) => Ok(set.len(planner.n)),
            Choice::Scan => scan_count(tx, &pred),
        }
    }

    /// The plan the query runs with, with estimated and actual counts (the whole filter,
    /// ignoring the limit and the cursor).
    ///
    /// # Errors
    /// As [`Query::count`].
    pub fn explain<S: Source + ?Sized>(&self, tx: &S) -> Result<Explain> {
        let now = self.now();
        let pred = self.compile(tx, now)?;
        let mut planner = Planner::new(tx, now)?;
        let (choice, mut explain) = planner.choose(&pred.node)?;
        if let Choice::Scan = choice {
            explain.root.actual = scan_count(tx, &pred)?;
        }
        debug_assert!(matches!(
            (&choice, &explain.root.step),
            (Choice::Scan, Step::Scan { .. }) | (Choice::Set(_), _)
        ));
        Ok(explain)
    }

    /// The matching ids, in query order, from the cursor, at most the limit.
    ///
    /// # Errors
    /// As [`Query::count`].
    pub fn ids<S: Source + ?Sized>(&self, tx: &S) -> Result<Vec<CustomerId>> {
        let (hits, _) = self.select(tx)?;
        Ok(hits
            .into_iter()
            .map(|h| CustomerId::from_u64(h.id))
            .collect())
    }

    /// The matching customers, in query order, from the cursor, at most the limit; read
    /// lazily where the plan did not decode them already.
    ///
    /// # Errors
    /// As [`Query::count`]; the iterator yields storage errors.
    pub fn run<'t, S: Source + ?Sized>(&self, tx: &'t S) -> Result<Records<'t, S>> {
        let (hits, _) = self.select(tx)?;
        Ok(records(tx, hits))
    }

    /// One page: the matching customers from the cursor, at most the limit, and the cursor
    /// for the next page.
    ///
    /// # Errors
    /// As [`Query::count`].
    pub fn page<S: Source + ?Sized>(&self, tx: &S) -> Result<Page> {
        let (hits, more) = self.select(tx)?;
        let next = if more {
            hits.last().map(|h| Cursor {
                key: h.key.as_ref().map(Val::to_operand),
                id: CustomerId::from_u64(h.id),
            })
        } else {
            None
        };
        let records = records(tx, hits).collect::<Result<Vec<_>>>()?;
        Ok(Page { records, next })
    }

    /// The page's hits and whether more follow.
    fn select<S: Source + ?Sized>(&self, tx: &S) -> Result<(Vec<Hit>, bool)> {
        let now = self.now();
        let pred = self.compile(tx, now)?;
        let mut planner = Planner::new(tx, now)?;
        let (choice, _) = planner.choose(&pred.node)?;
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut hits = match &self.sort {
            None => self.select_by_id(&mut planner, &pred, choice, limit)?,
            Some((field, order)) => {
                self.select_sorted(&mut planner, &pred, choice, field, *order, limit)?
            }
        };
        let more = hits.len() > limit;
        hits.truncate(limit);
        Ok((hits, more))
    }

    /// Up to `limit + 1` hits after the cursor, in id order.
    fn select_by_id<S: Source + ?Sized>(
        &self,
        planner: &mut Planner<'_, S>,
        pred: &Predicate,
        choice: Choice,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let after = self.after.as_ref().map(|c| c.id.as_u64());
        let want = limit.saturating_add(1);
        match choice {
            Choice::Set(set) => {
                let ids = planner.list(set)?;
                let start = after.map_or(0, |a| ids.partition_point(|&i| i <= a));
                Ok(ids
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take(want)
                    .map(|&id| Hit {
                        key: None,
                        id,
                        record: None,
                    })
                    .collect())
            }
            Choice::Scan => {
                let from = after.map_or(0, |a| a.saturating_add(1));
                let mut out = Vec::new();
                if after == Some(u64::MAX) {
                    return Ok(out);
                }
                let metrics = pred.needs_metrics();
                planner
                    .tx
                    .for_each_customer(CustomerId::from_u64(from), &mut |rec| {
                        let m = planner.metrics_of(&rec, metrics)?;
                        if pred.matches(&rec, &m) {
                            out.push(Hit {
                                key: None,
                                id: rec.id.as_u64(),
                                record: Some(rec),
                            });
                        }
                        Ok(out.len() < want)
                    })?;
                Ok(out)
            }
        }
    }

    /// Up to `limit + 1` hits after the cursor, in sort order.
    fn select_sorted<S: Source + ?Sized>(
        &self,
        planner: &mut Planner<'_, S>,
        pred: &Predicate,
        choice: Choice,
        field: &Field,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let now = planner.now;
        let cursor = self
            .after
            .as_ref()
            .map(|c| (cursor_key(c.key.as_ref(), now), c.id.as_u64()));
        let after_cursor = |key: Option<&Val<'_>>, id: u64| {
            cursor.as_ref().is_none_or(|(ck, cid)| {
                cmp_hits((key, id), (ck.as_ref(), *cid), order) == Ordering::Greater
            })
        };
        let mut hits = Vec::new();
        let mut take = |rec: &Record, m: &Metrics| {
            let key = eval::sort_key(field, rec, m, now);
            if after_cursor(key.as_ref(), rec.id.as_u64()) {
                hits.push(Hit {
                    key,
                    id: rec.id.as_u64(),
                    record: None,
                });
            }
        };
        let key_metrics = field.is_metric();
        for_each_match(planner, pred, choice, key_metrics, &mut |rec, m| {
            take(rec, m);
            Ok(())
        })?;
        let want = limit.saturating_add(1);
        let by = |a: &Hit, b: &Hit| cmp_hits((a.key.as_ref(), a.id), (b.key.as_ref(), b.id), order);
        if want < hits.len() {
            hits.select_nth_unstable_by(want, by);
            hits.truncate(want);
        }
        hits.sort_by(by);
        Ok(hits)
    }
}

/// The records of `hits`, in order.
fn records<S: Source + ?Sized>(tx: &S, hits: Vec<Hit>) -> Records<'_, S> {
    let all_loaded = hits.iter().all(|h| h.record.is_some());
    if all_loaded {
        Records {
            tx,
            loaded: hits.into_iter().filter_map(|h| h.record).collect(),
            ids: Vec::new().into_iter(),
        }
    } else {
        Records {
            tx,
            loaded: VecDeque::new(),
            ids: hits
                .into_iter()
                .map(|h| h.id)
                .collect::<Vec<_>>()
                .into_iter(),
        }
    }
}

/// How many customers a full scan finds matching.
fn scan_count<S: Source + ?Sized>(tx: &S, pred: &Predicate) -> Result<u64> {
    let metrics = pred.needs_metrics();
    let mut n = 0;
    tx.for_each_customer(CustomerId::from_u64(0), &mut |rec| {
        let m = if metrics {
            tx.metrics(rec.id)?
        } else {
            Metrics::default()
        };
        if pred.matches(&rec, &m) {
            n += 1;
        }
        Ok(true)
    })?;
    Ok(n)
}

/// Calls `f` with every matching customer and its metrics (read if the filter or
/// `metrics` needs them), in id order.
pub(crate) fn for_each_match<S: Source + ?Sized>(
    planner: &mut Planner<'_, S>,
    pred: &Predicate,
    choice: Choice,
    metrics: bool,
    f: &mut dyn FnMut(&Record, &Metrics) -> Result<()>,
) -> Result<()> {
    let want_metrics = metrics || pred.needs_metrics();
    match choice {
        Choice::Set(set) => {
            for id in planner.list(set)? {
                if let Some(rec) = planner.tx.get(CustomerId::from_u64(id))? {
                    let m = planner.metrics_of(&rec, want_metrics)?;
                    f(&rec, &m)?;
                }
            }
            Ok(())
        }
        Choice::Scan => planner
            .tx
            .for_each_customer(CustomerId::from_u64(0), &mut |rec| {
                let m = planner.metrics_of(&rec, want_metrics)?;
                if pred.matches(&rec, &m) {
                    f(&rec, &m)?;
                }
                Ok(true)
            }),
    }
}

/// Called with each matching customer, its metrics and the query's `now`.
pub(crate) type Visitor<'a> = &'a mut dyn FnMut(&Record, &Metrics, DateTime<Utc>) -> Result<()>;

/// Plans `query`'s filter and calls `f` with every match (for aggregates).
pub(crate) fn visit<S: Source + ?Sized>(
    query: &Query,
    tx: &S,
    metrics: bool,
    f: Visitor<'_>,
) -> Result<()> {
    let now = query.now();
    let pred = query.compile(tx, now)?;
    let mut planner = Planner::new(tx, now)?;
    let (choice, _) = planner.choose(&pred.node)?;
    for_each_match(&mut planner, &pred, choice, metrics, &mut |r, m| {
        f(r, m, now)
    })
}
