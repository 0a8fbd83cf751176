//! Aggregates over a query's customers: summaries of a numeric field, group-by, histograms and
//! RFM scores. They read the customers the planner finds (every one, ignoring the limit and
//! the cursor).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::eval::{self, Val};
use super::exec::{Source, visit};
use super::{Field, Query};
use crate::error::{Error, ErrorKind, Result};
use crate::index::Index;
use crate::model::{AttributeType, CustomerId, Metrics, Record};
use crate::normalize::Reason;

/// Count, sum, minimum and maximum of a numeric field over a set of customers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Customers counted.
    pub customers: u64,
    /// Customers with a value of the field.
    pub values: u64,
    /// The sum of the values (`None` if it overflowed).
    pub sum: Option<Decimal>,
    /// The smallest value.
    pub min: Option<Decimal>,
    /// The largest value.
    pub max: Option<Decimal>,
}

impl Summary {
    fn add(&mut self, value: Option<Decimal>) {
        self.customers += 1;
        let Some(v) = value else { return };
        self.sum = if self.values == 0 {
            Some(v)
        } else {
            self.sum.and_then(|s| s.checked_add(v))
        };
        self.values += 1;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    /// The mean of the values (`None` without values, or if the sum overflowed).
    pub fn mean(&self) -> Option<Decimal> {
        if self.values == 0 {
            return None;
        }
        self.sum?.checked_div(Decimal::from(self.values))
    }
}

/// The customers sharing one value of the group-by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The value in key form (`None`: customers without one).
    pub key: Option<String>,
    /// The group's summary of the measured field (only counts when nothing is measured).
    pub summary: Summary,
}

/// Counts of a numeric field's values in buckets `[edges[i], edges[i + 1])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// The bucket edges, increasing.
    pub edges: Vec<Decimal>,
    /// Customers per bucket: `counts[i]` for `[edges[i], edges[i + 1])`.
    pub counts: Vec<u64>,
    /// Customers below the first edge.
    pub below: u64,
    /// Customers at or above the last edge.
    pub above: u64,
    /// Customers without a value.
    pub missing: u64,
}

/// A customer's RFM scores: quintiles 1 (worst) to 5 (best) of recency, frequency and
/// monetary value among the customers scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmScore {
    /// The customer.
    pub id: CustomerId,
    /// Days since the last purchase (`None`: never bought, which scores worst).
    pub recency_days: Option<i64>,
    /// Orders.
    pub frequency: u64,
    /// Spend in the base currency's minor units (`None`: unknown, which scores as zero).
    pub monetary: Option<i64>,
    /// Recency score: fewer days is better.
    pub r: u8,
    /// Frequency score.
    pub f: u8,
    /// Monetary score.
    pub m: u8,
}

/// The quintile score (1 to 5) of a value that beats `beaten` of `n` values.
fn quintile(beaten: usize, n: usize) -> u8 {
    if n == 0 {
        return 1;
    }
    // beaten < n, so the result is below 5: one of 1 to 5.
    u8::try_from(1 + beaten.saturating_mul(5) / n)
        .unwrap_or(5)
        .min(5)
}

/// Checks that `field` has numbers.
fn check_numeric<S: Source + ?Sized>(tx: &S, field: &Field) -> Result<()> {
    let ty = match field {
        Field::OrderCount | Field::TotalSpend | Field::OpenTickets | Field::RecencyDays => {
            return Ok(());
        }
        Field::Attribute(name) => {
            let schema = tx.schema()?;
            let def = schema.get(name).ok_or_else(|| {
                Error::new(ErrorKind::UnknownAttribute {
                    name: name.clone(),
                    declared: false,
                })
            })?;
            if matches!(def.ty, AttributeType::Integer | AttributeType::Decimal) {
                return Ok(());
            }
            def.ty.as_str()
        }
        _ => "not a number",
    };
    Err(Error::new(ErrorKind::AttributeType {
        name: field.name().to_owned(),
        expected: "integer or decimal",
        found: ty,
    }))
}

/// The customer's number in `field`.
fn number(
    field: &Field,
    rec: &Record,
    m: &Metrics,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Decimal> {
    eval::values(field, rec, m, now)
        .iter()
        .find_map(Val::as_decimal)
}

impl Query {
    /// Count, sum, mean, minimum and maximum of a numeric `field` (a metric, or an integer or
    /// decimal attribute) over the matching customers.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use customerdb::query::{Field, Query};
    /// use customerdb::{Activity, Currency, Customer, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// let eur = Currency::parse("EUR")?;
    /// for (name, spend) in [("Ada", 1_000), ("Bob", 3_000)] {
    ///     let id = tx.insert(Customer::builder().name(name))?;
    ///     tx.add_activity(id, Activity::purchase(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(), spend, eur))?;
    /// }
    /// tx.insert(Customer::builder().name("Cy"))?;
    /// tx.commit()?;
    /// let s = Query::all().summary(&store.begin_read()?, &Field::TotalSpend)?;
    /// assert_eq!((s.customers, s.values, s.sum), (3, 3, Some(4_000.into())));
    /// assert_eq!(s.max, Some(3_000.into()));
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::AttributeType`] if `field` does not hold numbers; as [`Query::count`].
    pub fn summary<S: Source + ?Sized>(&self, tx: &S, field: &Field) -> Result<Summary> {
        check_numeric(tx, field)?;
        let mut s = Summary::default();
        visit(self, tx, field.is_metric(), &mut |rec, m, now| {
            s.add(number(field, rec, m, now));
            Ok(())
        })?;
        Ok(s)
    }

    /// The matching customers grouped by their values of `by` (a customer with several, such
    /// as tags, is in each of their groups), with a summary of `measure` per group; ordered by
    /// key, customers without a value first.
    ///
    /// # Errors
    /// [`ErrorKind::AttributeType`] if `measure` does not hold numbers; as [`Query::count`].
    pub fn group_by<S: Source + ?Sized>(
        &self,
        tx: &S,
        by: &Field,
        measure: Option<&Field>,
    ) -> Result<Vec<Group>> {
        if let Some(f) = measure {
            check_numeric(tx, f)?;
        }
        if measure.is_none() && self.filter == super::Filter::all() {
            if let Some(groups) = counted_groups(tx, by)? {
                return Ok(groups);
            }
        }
        let metrics = by.is_metric() || measure.is_some_and(Field::is_metric);
        let mut groups: BTreeMap<Option<String>, Summary> = BTreeMap::new();
        visit(self, tx, metrics, &mut |rec, m, now| {
            let value = measure.and_then(|f| number(f, rec, m, now));
            let mut keys: Vec<String> = eval::values(by, rec, m, now)
                .iter()
                .map(Val::to_text)
                .collect();
            keys.sort_unstable();
            keys.dedup();
            if keys.is_empty() {
                groups.entry(None).or_default().add(value);
            }
            for k in keys {
                groups.entry(Some(k)).or_default().add(value);
            }
            Ok(())
        })?;
        Ok(groups
            .into_iter()
            .map(|(key, summary)| Group { key, summary })
            .collect())
    }

    /// A histogram of numeric `field` over the matching customers, with buckets between
    /// `edges`.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] (field `edges`) unless there are at least two edges, strictly
    /// increasing; [`ErrorKind::AttributeType`] if `field` does not hold numbers.
    pub fn histogram<S: Source + ?Sized>(
        &self,
        tx: &S,
        field: &Field,
        edges: &[Decimal],
    ) -> Result<Histogram> {
        if edges.len() < 2 || edges.windows(2).any(|w| w[0] >= w[1]) {
            let text = edges.iter().map(ToString::to_string).collect::<Vec<_>>();
            return Err(Error::invalid("edges", text.join(", "), Reason::Malformed));
        }
        check_numeric(tx, field)?;
        let mut h = Histogram {
            edges: edges.to_vec(),
            counts: vec![0; edges.len() - 1],
            below: 0,
            above: 0,
            missing: 0,
        };
        visit(self, tx, field.is_metric(), &mut |rec, m, now| {
            match number(field, rec, m, now) {
                None => h.missing += 1,
                Some(v) => {
                    // The number of edges at or below v: 0 is below, len is above.
                    let i = edges.partition_point(|e| *e <= v);
                    match h.counts.get_mut(i.wrapping_sub(1)) {
                        Some(c) if i > 0 => *c += 1,
                        _ if i == 0 => h.below += 1,
                        _ => h.above += 1,
                    }
                }
            }
            Ok(())
        })?;
        Ok(h)
    }

    /// RFM scores of the matching customers by quintiles among them, in id order. Tied
    /// values share a score: a value's score depends on how many values it beats.
    ///
    /// # Errors
    /// As [`Query::count`].
    pub fn rfm<S: Source + ?Sized>(&self, tx: &S) -> Result<Vec<RfmScore>> {
        let mut rows = Vec::new();
        visit(self, tx, true, &mut |rec, m, now| {
            let rfm = m.rfm(now);
            rows.push((rec.id, rfm.recency_days, rfm.frequency, rfm.monetary));
            Ok(())
        })?;
        let n = rows.len();
        // Recency: fewer days is better; never is worst.
        let mut recency: Vec<i64> = rows.iter().map(|r| r.1.unwrap_or(i64::MAX)).collect();
        let mut frequency: Vec<u64> = rows.iter().map(|r| r.2).collect();
        let mut monetary: Vec<i64> = rows.iter().map(|r| r.3.unwrap_or(0)).collect();
        recency.sort_unstable();
        frequency.sort_unstable();
        monetary.sort_unstable();
        Ok(rows
            .into_iter()
            .map(|(id, days, freq, money)| {
                let rk = days.unwrap_or(i64::MAX);
                let worse_recency = n - recency.partition_point(|&d| d <= rk);
                RfmScore {
                    id,
                    recency_days: days,
                    frequency: freq,
                    monetary: money,
                    r: quintile(worse_recency, n),
                    f: quintile(frequency.partition_point(|&x| x < freq), n),
                    m: quintile(monetary.partition_point(|&x| x < money.unwrap_or(0)), n),
                }
            })
            .collect())
    }
}

/// The groups of every customer by `by`, counted from the store's value counts without
/// reading a record, for fields whose index holds the value as grouping shows it; `None` for
/// other fields.
fn counted_groups<S: Source + ?Sized>(tx: &S, by: &Field) -> Result<Option<Vec<Group>>> {
    let index = match by {
        Field::Country => Index::Country,
        Field::Tag => Index::Tag,
        Field::Stage => Index::Stage,
        Field::Owner => Index::Owner,
        Field::Locality => Index::Locality,
        Field::Postcode => Index::Postcode,
        _ => return Ok(None),
    };
    let counts = match tx.value_counts(&index) {
        Ok(c) => c,
        // An encrypted store keeps blind hashes of these values: group the records instead.
        Err(e) if matches!(e.kind(), crate::ErrorKind::Blinded { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let group = |key, customers| Group {
        key,
        summary: Summary {
            customers,
            ..Summary::default()
        },
    };
    let without = tx.count()?.saturating_sub(counts.customers);
    let mut groups: Vec<Group> = (without > 0)
        .then(|| group(None, without))
        .into_iter()
        .collect();
    let mut valued = Vec::with_capacity(counts.values.len());
    for (value, n) in counts.values {
        let crate::index::Value::Text(key) = value else {
            return Ok(None);
        };
        valued.push(group(Some(key), n));
    }
    valued.sort_by(|a, b| a.key.cmp(&b.key));
    groups.extend(valued);
    Ok(Some(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quintiles_spread_ranks_over_one_to_five() {
        let scores: Vec<u8> = (0..10).map(|beaten| quintile(beaten, 10)).collect();
        assert_eq!(scores, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(quintile(0, 1), 1);
        assert_eq!(quintile(0, 0), 1);
    }

    #[test]
    fn summary_tracks_sum_mean_and_extremes() {
        let mut s = Summary::default();
        for v in [Some(3), None, Some(-1), Some(7)] {
            s.add(v.map(Decimal::from));
        }
        assert_eq!((s.customers, s.values), (4, 3));
        assert_eq!(s.sum, Some(Decimal::from(9)));
        assert_eq!(s.mean(), Some(Decimal::from(3)));
        assert_eq!(
            (s.min, s.max),
            (Some(Decimal::from(-1)), Some(Decimal::from(7)))
        );
        let mut big = Summary::default();
        big.add(Some(Decimal::MAX));
        big.add(Some(Decimal::MAX));
        assert_eq!((big.sum, big.mean()), (None, None));
    }
}
