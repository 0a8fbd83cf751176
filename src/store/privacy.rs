//! Subject access and erasure: everything held on a person in one document, and erasure that
//! reaches the record, every index, the timeline, history and the change feed, duplicate
//! review data, aliases and merge logs, leaving a tombstone without personal data.

use std::collections::BTreeSet;
use std::ops::Bound;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::read::Backend;
use super::write::WriteTxn;
use super::{Table, codec};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Customer, CustomerId};
use crate::normalize::Reason;

/// What is left of an erased customer: no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The erased customer's id (never reused).
    pub id: CustomerId,
    /// When it was erased.
    #[serde(with = "crate::model::wire::timestamp")]
    pub at: DateTime<Utc>,
    /// Who erased it (the transaction's actor).
    pub by: Option<String>,
    /// Why (e.g. "GDPR art. 17 request 2026-041").
    pub reason: String,
    /// Other ids erased with it: customers merged into it earlier.
    pub aliases: Vec<CustomerId>,
}

/// What an [`AccessEntry`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AccessAction {
    /// Everything held on the customer was exported ([`WriteTxn::subject_access`]).
    SubjectExport,
    /// The customer was erased ([`WriteTxn::erase`]).
    Erasure,
}

/// One entry of the access log: who exported or erased which customer, and when. It holds no
/// personal data beyond the customer's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// The entry's number: 1, 2, 3... in the order written.
    pub number: u64,
    /// When.
    #[serde(with = "crate::model::wire::timestamp")]
    pub at: DateTime<Utc>,
    /// Who: the transaction's actor, with the role if it was begun with one
    /// (`"ana (support)"`).
    pub by: Option<String>,
    /// What was done.
    pub action: AccessAction,
    /// To which customer.
    pub customer: CustomerId,
    /// The reason given (for an erasure).
    pub reason: Option<String>,
}

const META_NEXT_ACCESS: &str = "next_access";

/// The access log: at most `limit` entries numbered above `since`, oldest first.
pub(crate) fn access_log(b: &impl Backend, since: u64, limit: usize) -> Result<Vec<AccessEntry>> {
    let start = be(since.saturating_add(1));
    let mut out = Vec::new();
    b.scan_raw(
        Table::AccessLog,
        (Bound::Included(start.as_slice()), Bound::Unbounded),
        false,
        &mut |_, v| {
            if out.len() >= limit {
                return Ok(false);
            }
            out.push(codec::decode(v, "access log entry")?);
            Ok(true)
        },
    )?;
    Ok(out)
}

/// Whether [`WriteTxn::erase`] also blocks the person from being inserted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppress {
    /// Erase only.
    No,
    /// Keep a keyed hash of each email match key and phone, so an insert carrying one of them
    /// is refused ([`ErrorKind::Suppressed`]). Needs [`crate::StoreBuilder::suppression_key`].
    Yes,
}

/// The keyed hash of a suppressed value (`email:` or `phone:` and its normalised form).
pub(crate) fn suppression_hash(key: &[u8], value: &str) -> Result<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| Error::invalid("suppression_key", "", Reason::Malformed))?;
    mac.update(value.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The values of `c` that suppression hashes.
pub(crate) fn suppressible(c: &Customer) -> Vec<String> {
    c.emails
        .iter()
        .map(|e| format!("email:{}", e.match_key()))
        .chain(c.phones.iter().map(|p| format!("phone:{}", p.e164())))
        .collect()
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Every key of `table` whose value passes `keep`.
fn keys_where(
    b: &impl Backend,
    table: Table,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    b.scan_raw(table, range, false, &mut |k, v| {
        if keep(k, v) {
            out.push(k.to_vec());
        }
        Ok(true)
    })?;
    Ok(out)
}

const ALL: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Unbounded, Bound::Unbounded);

/// The ids merged into `id` (its aliases).
fn aliases_of(b: &impl Backend, id: CustomerId) -> Result<Vec<CustomerId>> {
    let target = be(id.as_u64());
    Ok(keys_where(b, Table::Aliases, ALL, |_, v| v == target)?
        .into_iter()
        .filter_map(|k| <[u8; 8]>::try_from(k.as_slice()).ok())
        .map(|k| CustomerId::from_u64(u64::from_be_bytes(k)))
        .collect())
}

/// Everything held on customer `id`, as one self-describing JSON document.
pub(crate) fn subject_export(b: &impl Backend, id: CustomerId) -> Result<serde_json::Value> {
    let rec = b
        .record(id.as_u64())?
        .ok_or(Error::new(ErrorKind::NotFound(id)))?;
    let to_json = |v: &dyn erased::Json| v.json();
    let activities = super::timeline::timeline_all(b, id)?;
    let mut history = Vec::new();
    let aliases = aliases_of(b, id)?;
    for who in std::iter::once(id).chain(aliases.iter().copied()) {
        history.extend(super::timeline::history_until(b, who, u64::MAX - 1)?);
    }
    history.sort_by_key(|c| c.seq);
    let reviews: Vec<_> = super::dedup::review_queue(b, false)?
        .into_iter()
        .filter(|r| r.a == id || r.b == id)
        .collect();
    Ok(json!({
        "format": "customerdb subject export",
        "version": 1,
        "exported_at": b.now().to_rfc3339(),
        "customer": to_json(&rec),
        "merged_from": aliases,
        "metrics": to_json(&super::timeline::metrics(b, id)?),
        "consent_history": to_json(&rec.customer.consents),
        "activities": to_json(&activities),
        "history": to_json(&history),
        "duplicate_reviews": to_json(&reviews),
    }))
}

mod erased {
    /// Serialisation to a JSON value behind a trait object, so one closure serves every type.
    pub(super) trait Json {
        fn json(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

impl WriteTxn {
    /// Appends an entry to the access log, in this transaction.
    fn log_access(
        &mut self,
        action: AccessAction,
        customer: CustomerId,
        reason: Option<String>,
    ) -> Result<()> {
        let number = match self.get_meta(META_NEXT_ACCESS)? {
            Some(v) => u64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::corrupted("counter", "next_access is not 8 bytes"))?,
            ),
            None => 1,
        };
        self.put_meta(META_NEXT_ACCESS, &(number + 1).to_le_bytes())?;
        let entry = AccessEntry {
            number,
            at: self.now(),
            by: self.actor().map(str::to_owned),
            action,
            customer,
            reason,
        };
        self.put_raw(
            Table::AccessLog,
            be(number).to_vec(),
            Some(codec::encode(&entry)?),
        )
    }

    /// Answers a subject access request: [`crate::Read::subject_export`] of customer `id`,
    /// recorded in the access log (who, when, which customer) in this transaction, so the
    /// export is logged if and only if the transaction commits.
    ///
    /// ```
    /// use customerdb::{AccessAction, Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write_as("dpo")?;
    /// let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// let document = tx.subject_access(ada)?;
    /// assert_eq!(document["customer"]["id"], ada.as_u64());
    /// tx.commit()?;
    /// let log = store.begin_read()?.access_log(0, 10)?;
    /// assert_eq!((log[0].action, log[0].customer, log[0].by.as_deref()), (AccessAction::SubjectExport, ada, Some("dpo")));
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer.
    pub fn subject_access(&mut self, id: CustomerId) -> Result<serde_json::Value> {
        let doc = subject_export(self, id)?;
        self.log_access(AccessAction::SubjectExport, id, None)?;
        Ok(doc)
    }

    /// Erases customer `id` and everything about it, in this transaction: the record and its
    /// index entries, its activities and metrics, every history entry (so the change feed no
    /// longer holds its data; one [`crate::Operation::Erased`] entry tells feed consumers to
    /// erase their copies), duplicate review entries, and customers merged into it earlier
    /// with their aliases, history and merge logs. A [`Tombstone`] with no personal data
    /// remains, and an [`AccessEntry`] records who erased it. With [`Suppress::Yes`], keyed hashes of its emails and phones block it from
    /// being inserted again.
    ///
    /// Old pages of the database file can still hold the erased bytes until they are reused;
    /// [`crate::Store::compact`] rewrites the file without them.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer; [`ErrorKind::Invalid`] for an
    /// empty reason, or for [`Suppress::Yes`] without a suppression key.
    pub fn erase(&mut self, id: CustomerId, reason: &str, suppress: Suppress) -> Result<Tombstone> {
        let reason = crate::normalize::optional_text(Some(reason))
            .map_err(|r| Error::invalid("reason", reason, r))?
            .ok_or_else(|| Error::invalid("reason", reason, Reason::Empty))?;
        let rec = self
            .record(id.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(id)))?;
        if suppress == Suppress::Yes {
            let key = self
                .suppression_key()
                .ok_or_else(|| Error::invalid("suppression_key", "", Reason::Empty))?
                .to_vec();
            for v in suppressible(&rec.customer) {
                self.put_raw(
                    Table::Suppressed,
                    suppression_hash(&key, &v)?,
                    Some(Vec::new()),
                )?;
            }
        }
        let aliases = aliases_of(self, id)?;
        let everyone: BTreeSet<CustomerId> =
            std::iter::once(id).chain(aliases.iter().copied()).collect();
        self.remove_silently(id)?;
        for who in &everyone {
            for c in super::timeline::history_until(self, *who, u64::MAX - 1)? {
                self.put_raw(Table::History, be(c.seq).to_vec(), None)?;
                let mut k = be(who.as_u64()).to_vec();
                k.extend_from_slice(&be(c.seq));
                self.put_raw(Table::CustomerHistory, k, None)?;
            }
            self.put_raw(Table::Aliases, be(who.as_u64()).to_vec(), None)?;
            // Crypto-shredding: what is sealed under these keys, in this file's freed pages
            // or in any backup, can no longer be read.
            self.destroy_data_key(who.as_u64())?;
        }
        let split = |k: &[u8]| -> Option<(u64, u64)> {
            let (a, b) = k.split_at_checked(8)?;
            Some((
                u64::from_be_bytes(a.try_into().ok()?),
                u64::from_be_bytes(b.try_into().ok()?),
            ))
        };
        for k in keys_where(self, Table::Review, ALL, |k, _| {
            split(k).is_some_and(|(a, b)| {
                everyone.contains(&CustomerId::from_u64(a))
                    || everyone.contains(&CustomerId::from_u64(b))
            })
        })? {
            self.put_raw(Table::Review, k, None)?;
        }
        for k in keys_where(self, Table::Merges, ALL, |_, v| {
            super::dedup::merge_log_involves(v, &everyone)
        })? {
            self.put_raw(Table::Merges, k, None)?;
        }
        let tomb = Tombstone {
            id,
            at: self.now(),
            by: self.actor().map(str::to_owned),
            reason,
            aliases,
        };
        self.put_raw(
            Table::Tombstones,
            be(id.as_u64()).to_vec(),
            Some(codec::encode(&tomb)?),
        )?;
        self.log(tomb.at, Some(id), crate::Operation::Erased, Vec::new());
        self.log_access(AccessAction::Erasure, id, Some(tomb.reason.clone()))?;
        Ok(tomb)
    }

    /// Refuses `c` if one of its emails or phones was suppressed by an erasure.
    pub(super) fn check_suppressed(&self, c: &Customer) -> Result<()> {
        let Some(key) = self.suppression_key() else {
            return Ok(());
        };
        if !self.has_suppressions()? {
            return Ok(());
        }
        for v in suppressible(c) {
            if self
                .get_raw(Table::Suppressed, &suppression_hash(key, &v)?)?
                .is_some()
            {
                return Err(Error::new(ErrorKind::Suppressed));
            }
        }
        Ok(())
    }

    /// Whether any contact may be suppressed: a cheap test that spares most inserts the
    /// hashing. Looked up without a flush (a scan would flush every insert's staged writes).
    fn has_suppressions(&self) -> Result<bool> {
        self.may_hold_raw(Table::Suppressed)
    }
}

/// What to do with customers that have been inactive too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Inactive {
    /// Erase them ([`WriteTxn::erase`], without suppression).
    Erase,
    /// Remove their identity (every field of the record, and their history), keeping their
    /// activities and metrics for aggregates.
    Anonymise,
}

/// A declarative retention policy for [`WriteTxn::apply_retention`]. Every part is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Customers with no activity (and no write to their record) for this long, and what to
    /// do with them.
    pub inactive_customers: Option<(chrono::Duration, Inactive)>,
    /// Activities older than this are removed (metrics are recomputed).
    pub activities_older_than: Option<chrono::Duration>,
    /// History older than this is compacted into snapshots.
    pub history_older_than: Option<chrono::Duration>,
}

/// What [`WriteTxn::apply_retention`] did, or with `dry_run` would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Customers erased.
    pub erased: Vec<CustomerId>,
    /// Customers anonymised.
    pub anonymised: Vec<CustomerId>,
    /// Activities removed.
    pub activities_removed: u64,
    /// History compaction (zero in a dry run).
    pub history: super::Compaction,
}

fn has_identity(c: &Customer) -> bool {
    c != &Customer::default()
}

impl WriteTxn {
    /// Applies a retention policy as of `now`: erases or anonymises customers inactive longer
    /// than the policy allows, removes old activities, compacts old history. Idempotent: run
    /// again with the same `now` it does nothing more. With `dry_run` it writes nothing and
    /// reports what it would do (history compaction is not estimated).
    pub fn apply_retention(
        &mut self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<RetentionReport> {
        let mut report = RetentionReport {
            dry_run,
            ..RetentionReport::default()
        };
        if let Some(age) = policy.activities_older_than {
            let old = super::timeline::activities(
                self,
                &super::ActivityQuery::new()
                    .until(now - age)
                    .limit(usize::MAX)
                    .oldest_first(),
            )?;
            report.activities_removed = old.len() as u64;
            if !dry_run {
                for a in old {
                    self.remove_activity(a.id)?;
                }
            }
        }
        if let Some((age, action)) = policy.inactive_customers {
            let horizon = now - age;
            let mut inactive = Vec::new();
            self.for_each_record(&mut |rec| {
                if rec.updated_at < horizon {
                    inactive.push(rec);
                }
                Ok(())
            })?;
            for rec in inactive {
                let newest =
                    super::timeline::timeline(self, rec.id, &super::ActivityQuery::new().limit(1))?;
                if newest.first().is_some_and(|a| a.activity.at >= horizon) {
                    continue;
                }
                match action {
                    Inactive::Erase => {
                        report.erased.push(rec.id);
                        if !dry_run {
                            self.erase(rec.id, "retention: inactive", Suppress::No)?;
                        }
                    }
                    Inactive::Anonymise if has_identity(&rec.customer) => {
                        report.anonymised.push(rec.id);
                        if !dry_run {
                            self.anonymise(&rec)?;
                        }
                    }
                    Inactive::Anonymise => {}
                }
            }
        }
        if let (Some(age), false) = (policy.history_older_than, dry_run) {
            report.history = self.compact_history(now - age)?;
        }
        Ok(report)
    }

    /// Empties a customer's record and deletes its history, keeping its activities.
    fn anonymise(&mut self, rec: &crate::model::Record) -> Result<()> {
        for c in super::timeline::history_until(self, rec.id, u64::MAX - 1)? {
            self.put_raw(Table::History, be(c.seq).to_vec(), None)?;
            let mut k = be(rec.id.as_u64()).to_vec();
            k.extend_from_slice(&be(c.seq));
            self.put_raw(Table::CustomerHistory, k, None)?;
        }
        self.replace_silently(rec.id, Customer::default())?;
        let at = self.now();
        self.log(at, Some(rec.id), crate::Operation::Anonymised, Vec::new());
        Ok(())
    }
}

/// The tombstone of an erased customer.
pub(crate) fn tombstone(b: &impl Backend, id: CustomerId) -> Result<Option<Tombstone>> {
    b.get_raw(Table::Tombstones, &be(id.as_u64()))?
        .map(|v| codec::decode(&v, "tombstone"))
        .transpose()
}
