//! Reading: the [`Read`] trait shared by both transaction kinds, and [`ReadTxn`].

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};

use std::ops::Bound;

use chrono::{DateTime, Utc};

use super::crypt::{CUSTOMER_KEYS, Crypt, Keyring, data_key_in, decode_stored};
use super::history::Change;
use super::timeline::ActivityQuery;
use super::{CUSTOMERS, Config, META, META_SCHEMA, POSTINGS, Table, UNIQUES, codec, storage};
use crate::crypt::{Blinder, SecretKey};
use crate::error::{Error, ErrorKind, KeyProblem, Result};
use crate::index::{self, Index, KeyRange, Scan};
use crate::model::{
    ActivityId, ActivityRecord, CountryCode, Customer, CustomerId, Email, Metrics, Record, Schema,
};

/// Called with each key and value of a raw table scan; returns whether to go on.
pub(crate) type RawVisitor<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<bool>;

/// The operations a transaction offers its owner, implemented for [`ReadTxn`] and
/// [`crate::WriteTxn`] by one shared code path over a private storage interface.
pub(crate) trait Backend {
    /// The record with this id.
    fn record(&self, id: u64) -> Result<Option<Record>>;
    /// The id a unique key maps to.
    fn unique(&self, key: &[u8]) -> Result<Option<u64>>;
    /// Calls `f` with each id in the key range of the postings (or, if `unique`, the uniques)
    /// table, in key order.
    fn scan_ids(&self, unique: bool, range: &KeyRange, f: &mut dyn FnMut(u64)) -> Result<()>;
    /// How many records there are.
    fn record_count(&self) -> Result<u64>;
    /// The attribute schema.
    fn schema(&self) -> Result<Arc<Schema>>;
    /// The store's default phone region.
    fn region(&self) -> Option<CountryCode>;
    /// Whether a customer has this id (without decoding its record).
    fn has_record(&self, id: u64) -> Result<bool>;
    /// The sequence number of the latest change.
    fn last_seq(&self) -> Result<u64>;
    /// The exchange rates metrics are computed with.
    fn rates(&self) -> &crate::model::Rates;
    /// The time now, by the store's clock.
    fn now(&self) -> DateTime<Utc>;
    /// Calls `f` with every record, in id order.
    fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()>;
    /// A store-wide value from the meta table.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// The value of `key` in a byte-keyed table.
    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Calls `f` with each entry of `range` in a byte-keyed table, in key order (or reversed),
    /// until it returns `false`.
    fn scan_raw(
        &self,
        table: Table,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        f: RawVisitor<'_>,
    ) -> Result<()>;
    /// The store's encryption, if it is encrypted.
    fn crypt(&self) -> Option<&Crypt>;
    /// Customer `id`'s data key in an encrypted store ([`KeyProblem::Shredded`] if erased).
    fn data_key(&self, id: u64) -> Result<SecretKey>;
    /// The blind index key of an encrypted store.
    fn blinder(&self) -> Option<&Blinder> {
        self.crypt().map(Crypt::blinder)
    }
    /// The id a unique key given in plain form maps to (its blind hash in an encrypted store).
    fn lookup_unique(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.blinder() {
            Some(b) => self.unique(&index::blind_key(b, key, false)),
            None => self.unique(key),
        }
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Reads shared by [`ReadTxn`] and [`crate::WriteTxn`]; a write transaction sees its own writes.
///
/// Lookups standardise what they are given the way the store standardised what it holds, so
/// `find_by_email("ADA@Example.com")` finds `ada@example.com`.
pub trait Read: sealed::Sealed {
    /// The customer with this id, or, if it was merged into another, the customer it was
    /// merged into (the record's id then differs from `id`).
    fn get(&self, id: CustomerId) -> Result<Option<Record>>;

    /// Whether a customer has this id (not following merges: see [`Read::resolve`]).
    fn contains(&self, id: CustomerId) -> Result<bool>;

    /// The customer an id stands for now: itself, or the survivor it was merged into.
    fn resolve(&self, id: CustomerId) -> Result<Option<CustomerId>>;

    /// The stored customers that `customer` (stored or not) probably is, best first, at or
    /// above `min_probability`: candidates come from the indexes under the default blocking
    /// rules and are scored with the store's duplicate model (untrained until
    /// [`crate::WriteTxn::train_duplicate_model`]). Pairs a person rejected are left out.
    fn duplicates_of(
        &self,
        customer: &Customer,
        min_probability: f64,
    ) -> Result<Vec<super::dedup::Duplicate>>;

    /// [`Read::duplicates_of`] for a stored customer.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn duplicates_of_id(
        &self,
        id: CustomerId,
        min_probability: f64,
    ) -> Result<Vec<super::dedup::Duplicate>>;

    /// The review queue: pairs queued as possible duplicates and decided pairs, most probable
    /// first (only undecided ones if `pending_only`).
    fn review_queue(&self, pending_only: bool) -> Result<Vec<super::dedup::ReviewItem>>;

    /// Works out (without writing) a merge of `merged` into `survivor` under `rule`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if a participant does not exist.
    fn merge_plan(
        &self,
        survivor: CustomerId,
        merged: &[CustomerId],
        rule: &super::dedup::Survivorship,
    ) -> Result<super::dedup::MergePlan>;

    /// The customer with this email (compared by match key, see [`Email::match_key`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if `email` is not a valid address.
    fn find_by_email(&self, email: &str) -> Result<Option<Record>>;

    /// The customer with this id in another system.
    fn find_by_external_id(&self, system: &str, id: &str) -> Result<Option<Record>>;

    /// The customers with this phone number (parsed with the store's default region if it is
    /// national), in id order.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if `phone` is not a valid number.
    fn find_by_phone(&self, phone: &str) -> Result<Vec<Record>>;

    /// The ids whose keys in `index` fall in `scan`, in key order, each once.
    ///
    /// ```
    /// use customerdb::{Customer, Index, Read, Scan, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// let a = tx.insert(Customer::builder().name("Ada Lovelace").tag("vip"))?;
    /// tx.insert(Customer::builder().name("Alan Turing"))?;
    /// assert_eq!(tx.ids(&Index::Tag, &Scan::eq("VIP"))?, vec![a]);
    /// assert_eq!(tx.ids(&Index::FamilyName, &Scan::prefix("LOVE"))?, vec![a]);
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::UnknownAttribute`] for an attribute that is not indexed;
    /// [`crate::ErrorKind::AttributeType`] if a value does not suit the index.
    fn ids(&self, index: &Index, scan: &Scan) -> Result<Vec<CustomerId>>;

    /// The customers whose keys in `index` fall in `scan`, in key order, each once.
    fn scan(&self, index: &Index, scan: &Scan) -> Result<Vec<Record>>;

    /// How many customers there are.
    fn count(&self) -> Result<u64>;

    /// How many customers have each value of `index`, and how many have any value, read from
    /// counts the store keeps in every write transaction: no record or index entry is read.
    ///
    /// ```
    /// use customerdb::{Customer, Index, Read, Store, Value};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// tx.insert(Customer::builder().name("Ada Lovelace").tag("vip").tag("gold"))?;
    /// tx.insert(Customer::builder().name("Grace Hopper").tag("vip"))?;
    /// tx.insert(Customer::builder().name("Alan Turing"))?;
    /// let tags = tx.value_counts(&Index::Tag)?;
    /// assert_eq!(tags.values, [(Value::from("gold"), 1), (Value::from("vip"), 2)]);
    /// assert_eq!(tags.customers, 2);
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::UnknownAttribute`] for an attribute that is not indexed;
    /// [`crate::ErrorKind::Invalid`] (field `index`, reason `NotCounted`) for a unique index
    /// (email, external id), whose every value belongs to one customer, and for the indexes
    /// whose values are nearly all distinct and so keep no count per value: `created_at`,
    /// `updated_at`, `first_purchase`, `last_purchase`, `last_interaction` and `match_key`.
    fn value_counts(&self, index: &Index) -> Result<crate::index::ValueCounts>;

    /// The custom attribute schema.
    fn schema(&self) -> Result<Schema>;

    /// A customer's activities matching `query`, newest first unless the query says otherwise.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use customerdb::{Activity, ActivityQuery, ActivityType, Currency, Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// let id = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// let eur = Currency::parse("EUR")?;
    /// for day in 1..=3 {
    ///     let at = Utc.with_ymd_and_hms(2026, 5, day, 9, 0, 0).unwrap();
    ///     tx.add_activity(id, Activity::purchase(at, 1_000 * i64::from(day), eur))?;
    /// }
    /// tx.add_activity(id, Activity::note(Utc.with_ymd_and_hms(2026, 5, 4, 9, 0, 0).unwrap(), "VIP"))?;
    /// let newest = tx.timeline(id, &ActivityQuery::new().of_type(ActivityType::Purchase).limit(2))?;
    /// assert_eq!(newest.len(), 2);
    /// assert_eq!(newest[0].activity.at.format("%d").to_string(), "03");
    /// let m = tx.metrics(id)?;
    /// assert_eq!((m.order_count, m.total_spend), (3, Some(6_000)));
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn timeline(&self, customer: CustomerId, query: &ActivityQuery) -> Result<Vec<ActivityRecord>>;

    /// Every customer's activities matching `query` (by time: "everything that happened
    /// yesterday"), newest first unless the query says otherwise.
    fn activities(&self, query: &ActivityQuery) -> Result<Vec<ActivityRecord>>;

    /// The activity with this id.
    fn activity(&self, id: ActivityId) -> Result<Option<ActivityRecord>>;

    /// A customer's derived metrics.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn metrics(&self, customer: CustomerId) -> Result<Metrics>;

    /// A customer's history, newest first: at most `limit` changes with a sequence number
    /// below `before` (`None`: from the latest).
    fn history(
        &self,
        customer: CustomerId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>>;

    /// The customer as it was at `at`, rebuilt from history (`None` if it did not exist then,
    /// or if history retention has compacted away the changes before `at`).
    fn customer_as_of(&self, customer: CustomerId, at: DateTime<Utc>) -> Result<Option<Customer>>;

    /// The change feed: at most `limit` changes with a sequence number above `since`, in order.
    /// A consumer keeps the last `seq` it processed and resumes from it.
    ///
    /// ```
    /// use customerdb::{Customer, Operation, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write_as("import-job")?;
    /// let id = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// tx.commit()?;
    /// let feed = store.begin_read()?.changes(0, 100)?;
    /// assert_eq!(feed.len(), 1);
    /// assert_eq!(feed[0].operation, Operation::Insert);
    /// assert_eq!(feed[0].actor.as_deref(), Some("import-job"));
    /// assert_eq!(feed[0].customer, Some(id));
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    fn changes(&self, since: u64, limit: usize) -> Result<Vec<Change>>;

    /// The sequence number of the latest change (0 if none).
    fn last_seq(&self) -> Result<u64>;

    /// Everything held on customer `id` as one self-describing JSON document (subject access
    /// and portability): the record, the ids merged into it, its metrics, consent history,
    /// activities, history (its own and that of the customers merged into it), and the
    /// duplicate-review entries that name it.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn subject_export(&self, id: CustomerId) -> Result<serde_json::Value>;

    /// Whether customer `id` (or the customer it was merged into) has granted consent for
    /// `purpose` on `channel` at `at`: the latest consent event for that purpose on that
    /// channel (or on [`crate::Channel::Any`]) at or before `at` decides; with none, there is no
    /// consent. The same rule as the query filter `consent(channel, purpose)` at a query's
    /// `now`. In a write transaction, a withdrawal recorded earlier in it already counts.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn has_consent(
        &self,
        id: CustomerId,
        purpose: &str,
        channel: crate::Channel,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// Every consent event of customer `id` (grants and withdrawals with their evidence),
    /// oldest first.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] if there is no such customer.
    fn consent_history(&self, id: CustomerId) -> Result<Vec<crate::Consent>>;

    /// The access log: at most `limit` entries numbered above `since`, oldest first (subject
    /// exports through [`crate::WriteTxn::subject_access`] and erasures).
    fn access_log(&self, since: u64, limit: usize) -> Result<Vec<super::AccessEntry>>;

    /// The tombstone of an erased customer.
    fn tombstone(&self, id: CustomerId) -> Result<Option<super::Tombstone>>;

    /// The saved segment named `name`.
    fn segment(&self, name: &str) -> Result<Option<crate::query::Segment>>;

    /// Every saved segment, by name.
    fn segments(&self) -> Result<Vec<crate::query::Segment>>;

    /// Who entered and who left the saved segment `name` since feed position `since` (a `seq`
    /// from [`Read::last_seq`] or an earlier answer's `until`), for triggering campaigns.
    ///
    /// ```
    /// use customerdb::query::Segment;
    /// use customerdb::{Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// tx.save_segment(&Segment::parse("vip", r#"tag = "vip""#)?)?;
    /// let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// tx.commit()?;
    /// let mark = store.begin_read()?.last_seq()?;
    /// let mut tx = store.begin_write()?;
    /// let mut c = tx.get(ada)?.unwrap().customer;
    /// c.tags.insert(customerdb::Tag::parse("VIP")?);
    /// tx.update(ada, c)?;
    /// tx.commit()?;
    /// let changes = store.begin_read()?.segment_changes("vip", mark)?;
    /// assert_eq!(changes.entered, vec![ada]);
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if there is no segment of that name.
    fn segment_changes(&self, name: &str, since: u64) -> Result<super::SegmentChanges>;
}

pub(crate) fn get(b: &impl Backend, id: CustomerId) -> Result<Option<Record>> {
    if let Some(r) = b.record(id.as_u64())? {
        return Ok(Some(r));
    }
    match super::dedup::resolve(b, id)? {
        Some(survivor) if survivor != id => b.record(survivor.as_u64()),
        _ => Ok(None),
    }
}

pub(crate) fn find_by_email(b: &impl Backend, email: &str) -> Result<Option<Record>> {
    // A plain address is looked up by its key straight away; the full parse (a third of a
    // lookup) runs only on a miss, to tell an unknown address from an invalid one.
    let quick = crate::normalize::quick_match_key(email.trim());
    if let Some(key) = &quick {
        if let Some(found) = by_unique(b, &index::email_key(key))? {
            return Ok(Some(found));
        }
    }
    let email = Email::parse(email)?;
    if quick.as_deref() == Some(email.match_key()) {
        // Valid, and its key was just looked up: no second probe.
        return Ok(None);
    }
    by_unique(b, &index::email_key(email.match_key()))
}

pub(crate) fn find_by_external_id(
    b: &impl Backend,
    system: &str,
    id: &str,
) -> Result<Option<Record>> {
    let x = crate::model::ExternalId::new(system, id)?;
    by_unique(b, &index::external_id_key(x.system(), x.id()))
}

fn by_unique(b: &impl Backend, key: &[u8]) -> Result<Option<Record>> {
    match b.lookup_unique(key)? {
        Some(id) => b.record(id),
        None => Ok(None),
    }
}

pub(crate) fn ids(b: &impl Backend, index: &Index, scan: &Scan) -> Result<Vec<CustomerId>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for_each_id(b, &Ids::Scan(index, scan), &mut |id, single| {
        // One equality range yields each id once already; others may repeat an id.
        if single || seen.insert(id) {
            out.push(CustomerId::from_u64(id));
        }
    })?;
    Ok(out)
}

/// What [`for_each_id`] reads, and what the flag it feeds with each id means. (`pub` but not
/// exported: the query module's sealed transaction trait names it.)
pub enum Ids<'a> {
    /// A scan of an index. The flag: whether the scan is one equality range, whose ids come
    /// once each and in id order. Otherwise an id may come more than once (a customer with
    /// several values in the scan) and out of order.
    Scan(&'a Index, &'a Scan),
    /// The customers the consent index ([`Index::Consent`]) lists for
    /// `consent(channel, purpose)` at `now` (see [`index::consent_ranges`]). The flag: whether
    /// consent is certainly in force; if not, the record must decide. Customers not fed have
    /// no consent in force.
    Consent {
        /// The purpose, standardised as stored.
        purpose: &'a str,
        /// The channel asked about.
        channel: crate::model::Channel,
        /// When consent must be in force.
        now: DateTime<Utc>,
    },
}

/// Feeds `f` every id `ids` reads, in key order, with its flag. Nothing is collected: callers
/// keep only what they need.
pub(crate) fn for_each_id(
    b: &impl Backend,
    ids: &Ids<'_>,
    f: &mut dyn FnMut(u64, bool),
) -> Result<()> {
    match ids {
        Ids::Scan(index, scan) => {
            let schema = b.schema()?;
            let ranges = index::key_ranges(index, scan, &schema, b.region(), b.blinder())?;
            let single = ranges.len() == 1 && matches!(scan, Scan::Eq(_));
            for r in &ranges {
                b.scan_ids(index.is_unique(), r, &mut |id| f(id, single))?;
            }
        }
        Ids::Consent {
            purpose,
            channel,
            now,
        } => {
            let ranges = index::consent_ranges(purpose, *channel, *now);
            b.scan_ids(false, &ranges.certain, &mut |id| f(id, true))?;
            for r in &ranges.check {
                b.scan_ids(false, r, &mut |id| f(id, false))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn scan(b: &impl Backend, index: &Index, scan: &Scan) -> Result<Vec<Record>> {
    ids(b, index, scan)?
        .into_iter()
        .filter_map(|id| b.record(id.as_u64()).transpose())
        .collect()
}

pub(crate) fn find_by_phone(b: &impl Backend, phone: &str) -> Result<Vec<Record>> {
    scan(b, &Index::Phone, &Scan::eq(phone))
}

/// Implements [`Read`] for a type that implements [`Backend`].
macro_rules! impl_read {
    ($t:ty) => {
        impl $crate::store::read::sealed::Sealed for $t {}
        impl $crate::store::Read for $t {
            fn get(&self, id: CustomerId) -> Result<Option<Record>> {
                $crate::store::read::get(self, id)
            }
            fn contains(&self, id: CustomerId) -> Result<bool> {
                $crate::store::read::Backend::has_record(self, id.as_u64())
            }
            fn resolve(&self, id: CustomerId) -> Result<Option<CustomerId>> {
                $crate::store::dedup::resolve(self, id)
            }
            fn duplicates_of(
                &self,
                customer: &$crate::model::Customer,
                min_probability: f64,
            ) -> Result<Vec<$crate::store::Duplicate>> {
                $crate::store::dedup::duplicates_of(self, customer, None, min_probability)
            }
            fn duplicates_of_id(
                &self,
                id: CustomerId,
                min_probability: f64,
            ) -> Result<Vec<$crate::store::Duplicate>> {
                let rec = $crate::store::read::Backend::record(self, id.as_u64())?
                    .ok_or($crate::Error::new($crate::ErrorKind::NotFound(id)))?;
                $crate::store::dedup::duplicates_of(self, &rec.customer, Some(id), min_probability)
            }
            fn review_queue(&self, pending_only: bool) -> Result<Vec<$crate::store::ReviewItem>> {
                $crate::store::dedup::review_queue(self, pending_only)
            }
            fn merge_plan(
                &self,
                survivor: CustomerId,
                merged: &[CustomerId],
                rule: &$crate::store::Survivorship,
            ) -> Result<$crate::store::MergePlan> {
                $crate::store::dedup::merge_plan(self, survivor, merged, rule)
            }
            fn find_by_email(&self, email: &str) -> Result<Option<Record>> {
                $crate::store::read::find_by_email(self, email)
            }
            fn find_by_external_id(&self, system: &str, id: &str) -> Result<Option<Record>> {
                $crate::store::read::find_by_external_id(self, system, id)
            }
            fn find_by_phone(&self, phone: &str) -> Result<Vec<Record>> {
                $crate::store::read::find_by_phone(self, phone)
            }
            fn ids(&self, index: &Index, scan: &Scan) -> Result<Vec<CustomerId>> {
                $crate::store::read::ids(self, index, scan)
            }
            fn scan(&self, index: &Index, scan: &Scan) -> Result<Vec<Record>> {
                $crate::store::read::scan(self, index, scan)
            }
            fn count(&self) -> Result<u64> {
                $crate::store::read::Backend::record_count(self)
            }
            fn value_counts(&self, index: &Index) -> Result<$crate::index::ValueCounts> {
                $crate::store::read::value_counts(self, index)
            }
            fn schema(&self) -> Result<Schema> {
                Ok((*$crate::store::read::Backend::schema(self)?).clone())
            }
            fn timeline(
                &self,
                customer: CustomerId,
                query: &$crate::store::ActivityQuery,
            ) -> Result<Vec<$crate::model::ActivityRecord>> {
                $crate::store::timeline::timeline(self, customer, query)
            }
            fn activities(
                &self,
                query: &$crate::store::ActivityQuery,
            ) -> Result<Vec<$crate::model::ActivityRecord>> {
                $crate::store::timeline::activities(self, query)
            }
            fn activity(
                &self,
                id: $crate::model::ActivityId,
            ) -> Result<Option<$crate::model::ActivityRecord>> {
                $crate::store::timeline::activity(self, id)
            }
            fn metrics(&self, customer: CustomerId) -> Result<$crate::model::Metrics> {
                $crate::store::timeline::metrics(self, customer)
            }
            fn history(
                &self,
                customer: CustomerId,
                before: Option<u64>,
                limit: usize,
            ) -> Result<Vec<$crate::store::Change>> {
                $crate::store::timeline::history(self, customer, before, limit)
            }
            fn customer_as_of(
                &self,
                customer: CustomerId,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<$crate::model::Customer>> {
                $crate::store::timeline::customer_as_of(self, customer, at)
            }
            fn changes(&self, since: u64, limit: usize) -> Result<Vec<$crate::store::Change>> {
                $crate::store::timeline::changes(self, since, limit)
            }
            fn last_seq(&self) -> Result<u64> {
                $crate::store::timeline::last_seq(self)
            }
            fn subject_export(&self, id: CustomerId) -> Result<serde_json::Value> {
                $crate::store::privacy::subject_export(self, id)
            }
            fn has_consent(
                &self,
                id: CustomerId,
                purpose: &str,
                channel: $crate::Channel,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool> {
                $crate::store::consent::has_consent(self, id, purpose, channel, at)
            }
            fn consent_history(&self, id: CustomerId) -> Result<Vec<$crate::Consent>> {
                $crate::store::consent::consent_history(self, id)
            }
            fn access_log(
                &self,
                since: u64,
                limit: usize,
            ) -> Result<Vec<$crate::store::AccessEntry>> {
                $crate::store::privacy::access_log(self, since, limit)
            }
            fn tombstone(&self, id: CustomerId) -> Result<Option<$crate::store::Tombstone>> {
                $crate::store::privacy::tombstone(self, id)
            }
            fn segment(&self, name: &str) -> Result<Option<$crate::query::Segment>> {
                $crate::store::segments::segment(self, name)
            }
            fn segments(&self) -> Result<Vec<$crate::query::Segment>> {
                $crate::store::segments::segments(self)
            }
            fn segment_changes(
                &self,
                name: &str,
                since: u64,
            ) -> Result<$crate::store::SegmentChanges> {
                let segment = $crate::store::segments::segment(self, name)?.ok_or_else(|| {
                    $crate::Error::invalid("segment", name, $crate::normalize::Reason::Malformed)
                })?;
                let rates = $crate::store::read::Backend::rates(self).clone();
                let now = $crate::store::read::Backend::now(self);
                $crate::store::segments::segment_changes(self, &segment, since, &rates, now)
            }
        }
    };
}
pub(crate) use impl_read;

/// Decodes a stored record, checking it is stored under its own id.
pub(crate) fn decode_record(key: u64, bytes: &[u8]) -> Result<Record> {
    let id = CustomerId::from_u64(key);
    let rec: Record = codec::decode(bytes, "customer record").map_err(|e| e.in_record(id))?;
    if rec.id != id {
        return Err(Error::corrupted("customer record", "stored under another id").in_record(id));
    }
    Ok(rec)
}

/// A read transaction: a consistent snapshot of the store.
///
/// It sees every transaction committed before it began and nothing after. Hold it only as long
/// as needed: while it lives, the pages of its snapshot cannot be reused.
pub struct ReadTxn {
    // Tables are opened on first use: a read that touches one table (a timeline page, a
    // lookup) pays for opening that one only.
    customers: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    customer_keys: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    crypt: Option<Arc<Crypt>>,
    postings: OnceLock<ReadOnlyTable<&'static [u8], &'static [u8]>>,
    uniques: OnceLock<ReadOnlyTable<&'static [u8], u64>>,
    meta: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    raw: [OnceLock<ReadOnlyTable<&'static [u8], &'static [u8]>>; Table::ALL.len()],
    txn: redb::ReadTransaction,
    schema: OnceLock<Arc<Schema>>,
    region: Option<CountryCode>,
    rates: Arc<crate::model::Rates>,
    clock: super::Clock,
    /// Keeps the database open while the transaction lives; last, so it is dropped last.
    _store: Arc<super::Inner>,
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").finish_non_exhaustive()
    }
}

impl ReadTxn {
    /// A read transaction of `txn`, with `crypt` made for it before `txn` began
    /// ([`Crypt::for_snapshot`]).
    pub(crate) fn new(
        txn: redb::ReadTransaction,
        config: &Config,
        crypt: Option<Arc<Crypt>>,
        store: Arc<super::Inner>,
    ) -> ReadTxn {
        ReadTxn {
            _store: store,
            customers: OnceLock::new(),
            customer_keys: OnceLock::new(),
            crypt,
            postings: OnceLock::new(),
            uniques: OnceLock::new(),
            meta: OnceLock::new(),
            raw: Default::default(),
            txn,
            schema: OnceLock::new(),
            region: config.default_region,
            rates: config.rates.clone(),
            clock: config.clock.clone(),
        }
    }

    /// Every customer, in id order, read lazily.
    pub fn customers(&self) -> Result<Customers> {
        self.range(..)
    }

    /// The customers whose ids fall in `range`, in id order, read lazily.
    pub fn range(&self, range: impl std::ops::RangeBounds<CustomerId>) -> Result<Customers> {
        let map = |b: std::ops::Bound<&CustomerId>| b.map(|id| id.as_u64());
        let r = (map(range.start_bound()), map(range.end_bound()));
        Ok(Customers {
            inner: self.raw_customers()?.range::<u64>(r).map_err(storage)?,
            keys: self.keyring()?,
        })
    }

    /// The change feed after `since` (a `seq` from [`Read::last_seq`], or the last change a
    /// consumer handled), oldest first, read lazily from this snapshot: the streaming form of
    /// [`Read::changes`] for a consumer that handles one change at a time and never holds a
    /// page of them.
    ///
    /// ```
    /// use customerdb::{Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// tx.insert(Customer::builder().name("Grace Hopper"))?;
    /// tx.commit()?;
    /// let read = store.begin_read()?;
    /// let seqs: Vec<u64> = read.feed(1)?.map(|c| c.map(|c| c.seq)).collect::<Result<_, _>>()?;
    /// assert_eq!(seqs, [2]);
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    pub fn feed(&self, since: u64) -> Result<ChangeFeed> {
        let start = since.saturating_add(1).to_be_bytes();
        let range = (Bound::Included(start.as_slice()), Bound::Unbounded);
        let inner = if since == u64::MAX {
            None
        } else {
            Some(
                self.raw_table(Table::History)?
                    .range::<&[u8]>(range)
                    .map_err(storage)?,
            )
        };
        Ok(ChangeFeed {
            inner,
            keys: self.keyring()?,
        })
    }

    /// Clusters of probable duplicates among all customers: blocking with `matcher`'s rules,
    /// scored with the store's trained model (or, if none is stored, one `matcher` trains now,
    /// without storing it), clustered with `settings`. Pairs a person rejected are never
    /// linked; pairs a person confirmed always are.
    pub fn find_duplicates(
        &self,
        matcher: &crate::dedup::Matcher,
        settings: &crate::dedup::ClusterSettings,
    ) -> Result<Vec<super::dedup::DuplicateCluster>> {
        super::dedup::find_duplicates(self, matcher, settings)
    }

    /// How many entries `index` holds (one per customer and value).
    ///
    /// # Errors
    /// [`crate::ErrorKind::UnknownAttribute`] for an attribute that is not indexed.
    pub fn index_len(&self, index: &Index) -> Result<u64> {
        let schema = Backend::schema(self)?;
        let mut n = 0u64;
        for r in index::key_ranges(index, &Scan::All, &schema, self.region, None)? {
            scan_table_ids(
                self.raw_postings()?,
                self.raw_uniques()?,
                index.is_unique(),
                &r,
                &mut |_| n += 1,
            )?;
        }
        Ok(n)
    }

    pub(crate) fn raw_customers(&self) -> Result<&ReadOnlyTable<u64, &'static [u8]>> {
        opened(&self.customers, || self.txn.open_table(CUSTOMERS))
    }

    pub(crate) fn raw_customer_keys(&self) -> Result<&ReadOnlyTable<u64, &'static [u8]>> {
        opened(&self.customer_keys, || self.txn.open_table(CUSTOMER_KEYS))
    }

    pub(crate) fn raw_postings(&self) -> Result<&ReadOnlyTable<&'static [u8], &'static [u8]>> {
        opened(&self.postings, || self.txn.open_table(POSTINGS))
    }

    pub(crate) fn raw_uniques(&self) -> Result<&ReadOnlyTable<&'static [u8], u64>> {
        opened(&self.uniques, || self.txn.open_table(UNIQUES))
    }

    pub(crate) fn raw_meta(&self) -> Result<&ReadOnlyTable<&'static str, &'static [u8]>> {
        opened(&self.meta, || self.txn.open_table(META))
    }

    pub(crate) fn raw_table(
        &self,
        table: Table,
    ) -> Result<&ReadOnlyTable<&'static [u8], &'static [u8]>> {
        opened(&self.raw[table as usize], || {
            self.txn.open_table(table.def())
        })
    }
}

/// The table in `cell`, opened by `open` the first time.
fn opened<T>(
    cell: &OnceLock<T>,
    open: impl FnOnce() -> std::result::Result<T, redb::TableError>,
) -> Result<&T> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let t = open().map_err(storage)?;
    Ok(cell.get_or_init(|| t))
}

impl ReadTxn {
    /// The data keys of this snapshot, for a lazy reader.
    fn keyring(&self) -> Result<Option<Keyring>> {
        self.crypt
            .as_ref()
            .map(|c| {
                Ok(Keyring {
                    crypt: c.clone(),
                    table: self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?,
                })
            })
            .transpose()
    }

    /// The data keys table of an encrypted store.
    pub(crate) fn keys_table(&self) -> Result<Option<&ReadOnlyTable<u64, &'static [u8]>>> {
        self.crypt
            .as_ref()
            .map(|_| self.raw_customer_keys())
            .transpose()
    }
}

/// Reads the schema from a meta table.
pub(crate) fn load_schema(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Schema> {
    match meta.get(META_SCHEMA).map_err(storage)? {
        Some(v) => codec::decode(v.value(), "schema"),
        None => Ok(Schema::default()),
    }
}

/// Feeds `f` every record of a customers table, in id order (opened with the data keys in
/// `keys` in an encrypted store).
pub(crate) fn for_each_in(
    table: &impl ReadableTable<u64, &'static [u8]>,
    crypt: Option<&Crypt>,
    keys: Option<&impl ReadableTable<u64, &'static [u8]>>,
    f: &mut dyn FnMut(Record) -> Result<()>,
) -> Result<()> {
    for item in table.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        f(decode_stored(crypt, keys, k.value(), v.value())?)?;
    }
    Ok(())
}

/// Feeds `f` the entries of `range` in a byte-keyed table, until it returns `false`.
pub(crate) fn scan_raw_table(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    reverse: bool,
    f: RawVisitor<'_>,
) -> Result<()> {
    let mut it = table.range::<&[u8]>(range).map_err(storage)?;
    loop {
        let item = if reverse { it.next_back() } else { it.next() };
        let Some(item) = item else { return Ok(()) };
        let (k, v) = item.map_err(storage)?;
        if !f(k.value(), v.value())? {
            return Ok(());
        }
    }
}

/// Feeds `f` the ids of `range` in a postings or uniques table.
pub(crate) fn scan_table_ids(
    postings: &impl ReadableTable<&'static [u8], &'static [u8]>,
    uniques: &impl ReadableTable<&'static [u8], u64>,
    unique: bool,
    range: &KeyRange,
    f: &mut dyn FnMut(u64),
) -> Result<()> {
    if !unique {
        return super::postings::scan(postings, range, f);
    }
    let bounds = (
        std::ops::Bound::Included(range.start.as_slice()),
        range
            .end
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
    );
    for item in uniques.range::<&[u8]>(bounds).map_err(storage)? {
        let (_, v) = item.map_err(storage)?;
        f(v.value());
    }
    Ok(())
}

impl Backend for ReadTxn {
    fn record(&self, id: u64) -> Result<Option<Record>> {
        match self.raw_customers()?.get(id).map_err(storage)? {
            Some(v) => decode_stored(self.crypt(), self.keys_table()?, id, v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn crypt(&self) -> Option<&Crypt> {
        self.crypt.as_deref()
    }

    fn data_key(&self, id: u64) -> Result<SecretKey> {
        data_key_in(self.crypt(), self.raw_customer_keys()?, id)
    }

    fn unique(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self
            .raw_uniques()?
            .get(key)
            .map_err(storage)?
            .map(|v| v.value()))
    }

    fn scan_ids(&self, unique: bool, range: &KeyRange, f: &mut dyn FnMut(u64)) -> Result<()> {
        scan_table_ids(self.raw_postings()?, self.raw_uniques()?, unique, range, f)
    }

    fn record_count(&self) -> Result<u64> {
        self.raw_customers()?.len().map_err(storage)
    }

    fn schema(&self) -> Result<Arc<Schema>> {
        if let Some(s) = self.schema.get() {
            return Ok(s.clone());
        }
        let s = Arc::new(load_schema(self.raw_meta()?)?);
        Ok(self.schema.get_or_init(|| s).clone())
    }

    fn region(&self) -> Option<CountryCode> {
        self.region
    }

    fn has_record(&self, id: u64) -> Result<bool> {
        Ok(self.raw_customers()?.get(id).map_err(storage)?.is_some())
    }

    fn last_seq(&self) -> Result<u64> {
        Ok(super::read_counter(self.raw_meta()?, super::META_NEXT_SEQ)?.map_or(0, |n| n - 1))
    }

    fn rates(&self) -> &crate::model::Rates {
        &self.rates
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        for_each_in(self.raw_customers()?, self.crypt(), self.keys_table()?, f)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .raw_meta()?
            .get(key)
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .raw_table(table)?
            .get(key)
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }

    fn scan_raw(
        &self,
        table: Table,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        f: RawVisitor<'_>,
    ) -> Result<()> {
        scan_raw_table(self.raw_table(table)?, range, reverse, f)
    }
}

impl_read!(ReadTxn);

/// The change feed of a [`ReadTxn`] ([`ReadTxn::feed`]), read lazily in sequence order. An
/// entry that does not decode yields an error, and the feed goes on with the next.
pub struct ChangeFeed {
    inner: Option<redb::Range<'static, &'static [u8], &'static [u8]>>,
    keys: Option<Keyring>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed").finish_non_exhaustive()
    }
}

impl Iterator for ChangeFeed {
    type Item = Result<Change>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.as_mut()?.next()?;
        Some(item.map_err(storage).and_then(|(k, v)| {
            let seq = <[u8; 8]>::try_from(k.value())
                .map_err(|_| crate::Error::corrupted("history key", "not 8 bytes"))?;
            let keys = self.keys.as_ref();
            super::history::decode(u64::from_be_bytes(seq), v.value(), keys.is_some(), &|id| {
                keys.ok_or_else(|| Error::new(ErrorKind::Key(KeyProblem::Missing)))?
                    .data_key(id)
            })
        }))
    }
}

/// The customers of a [`ReadTxn`], read lazily in id order. Yields an error for a record that
/// does not decode, and goes on with the next.
pub struct Customers {
    inner: redb::Range<'static, u64, &'static [u8]>,
    keys: Option<Keyring>,
}

impl Customers {
    fn decode(&self, id: u64, bytes: &[u8]) -> Result<Record> {
        match &self.keys {
            Some(k) => k.record(id, bytes),
            None => decode_record(id, bytes),
        }
    }
}

impl std::fmt::Debug for Customers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customers").finish_non_exhaustive()
    }
}

impl Iterator for Customers {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(
            item.map_err(storage)
                .and_then(|(k, v)| self.decode(k.value(), v.value())),
        )
    }
}

impl DoubleEndedIterator for Customers {
    fn next_back(&mut self) -> Option<Self::Item> {
        let item = self.inner.next_back()?;
        Some(
            item.map_err(storage)
                .and_then(|(k, v)| self.decode(k.value(), v.value())),
        )
    }
}

/// [`Read::value_counts`].
pub(crate) fn value_counts(b: &impl Backend, index: &Index) -> Result<index::ValueCounts> {
    let schema = b.schema()?;
    let tag = index.tag(&schema)?;
    if b.blinder().is_some() && index::is_blinded(tag) {
        return Err(Error::new(ErrorKind::Blinded {
            index: index.name().to_owned(),
            scan: "values",
        }));
    }
    let mut out = index::ValueCounts::default();
    let bad = || Error::corrupted("value counts", "a value that does not decode");
    if index.is_unique() || !index::counts_values(tag) {
        return Err(Error::invalid(
            "index",
            index.name(),
            crate::normalize::Reason::NotCounted,
        ));
    }
    let prefix = tag.to_be_bytes();
    let end = crate::index::key::prefix_end(&prefix);
    let range = (
        Bound::Included(prefix.as_slice()),
        end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
    );
    b.scan_raw(Table::ValueCounts, range, false, &mut |k, v| {
        let n = super::write::decode_count(v)?;
        if k.len() == 2 {
            out.customers = n;
        } else {
            out.values
                .push((index::key_value(k, &schema).ok_or_else(bad)?, n));
        }
        Ok(true)
    })?;
    Ok(out)
}

/// How many postings the scan of `index` would read, summed from the value counts, or `None`
/// for a unique index or when the scan spans more than `cap` values (reading them would cost
/// more than the estimate saves). `Scan::All` counts the customers with any value.
pub(crate) fn counted(
    b: &impl Backend,
    index: &Index,
    scan: &Scan,
    cap: usize,
) -> Result<Option<u64>> {
    if index.is_unique() {
        return Ok(None);
    }
    let schema = b.schema()?;
    if matches!(scan, Scan::All) {
        let tag = index.tag(&schema)?.to_be_bytes();
        return b
            .get_raw(Table::ValueCounts, &tag)?
            .map(|v| super::write::decode_count(&v))
            .transpose()
            .map(|n| Some(n.unwrap_or(0)));
    }
    if !index::counts_values(index.tag(&schema)?) {
        return Ok(None);
    }
    let mut total = 0u64;
    let mut values = 0usize;
    for r in index::key_ranges(index, scan, &schema, b.region(), b.blinder())? {
        let range = (
            Bound::Included(r.start.as_slice()),
            r.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        b.scan_raw(Table::ValueCounts, range, false, &mut |k, v| {
            if k.len() > 2 {
                total += super::write::decode_count(v)?;
                values += 1;
            }
            Ok(values <= cap)
        })?;
        if values > cap {
            return Ok(None);
        }
    }
    Ok(Some(total))
}
