//! Reading: the [`Read`] trait shared by both transaction kinds, and [`ReadTxn`].

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};

use super::{CUSTOMERS, Config, META, META_SCHEMA, POSTINGS, UNIQUES, codec, storage};
use crate::error::{Error, Result};
use crate::index::{self, Index, KeyRange, Scan};
use crate::model::{CountryCode, CustomerId, Email, Record, Schema};

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
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Reads shared by [`ReadTxn`] and [`crate::WriteTxn`]; a write transaction sees its own writes.
///
/// Lookups standardise what they are given the way the store standardised what it holds, so
/// `find_by_email("ADA@Example.com")` finds `ada@example.com`.
pub trait Read: sealed::Sealed {
    /// The customer with this id.
    fn get(&self, id: CustomerId) -> Result<Option<Record>>;

    /// Whether a customer has this id.
    fn contains(&self, id: CustomerId) -> Result<bool>;

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

    /// The custom attribute schema.
    fn schema(&self) -> Result<Schema>;
}

pub(crate) fn get(b: &impl Backend, id: CustomerId) -> Result<Option<Record>> {
    b.record(id.as_u64())
}

pub(crate) fn find_by_email(b: &impl Backend, email: &str) -> Result<Option<Record>> {
    let email = Email::parse(email)?;
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
    match b.unique(key)? {
        Some(id) => b.record(id),
        None => Ok(None),
    }
}

pub(crate) fn ids(b: &impl Backend, index: &Index, scan: &Scan) -> Result<Vec<CustomerId>> {
    let schema = b.schema()?;
    let ranges = index::key_ranges(index, scan, &schema, b.region())?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let single = ranges.len() == 1 && matches!(scan, Scan::Eq(_));
    for r in &ranges {
        b.scan_ids(index.is_unique(), r, &mut |id| {
            // One equality range yields each id once already; others may repeat an id.
            if single || seen.insert(id) {
                out.push(CustomerId::from_u64(id));
            }
        })?;
    }
    Ok(out)
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
                Ok($crate::store::read::Backend::record(self, id.as_u64())?.is_some())
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
            fn schema(&self) -> Result<Schema> {
                Ok((*$crate::store::read::Backend::schema(self)?).clone())
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
    customers: ReadOnlyTable<u64, &'static [u8]>,
    postings: ReadOnlyTable<&'static [u8], ()>,
    uniques: ReadOnlyTable<&'static [u8], u64>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
    schema: OnceLock<Arc<Schema>>,
    region: Option<CountryCode>,
}

impl std::fmt::Debug for ReadTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxn").finish_non_exhaustive()
    }
}

impl ReadTxn {
    pub(crate) fn new(txn: &redb::ReadTransaction, config: &Config) -> Result<ReadTxn> {
        Ok(ReadTxn {
            customers: txn.open_table(CUSTOMERS).map_err(storage)?,
            postings: txn.open_table(POSTINGS).map_err(storage)?,
            uniques: txn.open_table(UNIQUES).map_err(storage)?,
            meta: txn.open_table(META).map_err(storage)?,
            schema: OnceLock::new(),
            region: config.default_region,
        })
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
            inner: self.customers.range::<u64>(r).map_err(storage)?,
        })
    }

    /// How many entries `index` holds (one per customer and value).
    ///
    /// # Errors
    /// [`crate::ErrorKind::UnknownAttribute`] for an attribute that is not indexed.
    pub fn index_len(&self, index: &Index) -> Result<u64> {
        let schema = Backend::schema(self)?;
        let mut n = 0u64;
        for r in index::key_ranges(index, &Scan::All, &schema, self.region)? {
            scan_table_ids(
                &self.postings,
                &self.uniques,
                index.is_unique(),
                &r,
                &mut |_| n += 1,
            )?;
        }
        Ok(n)
    }

    pub(crate) fn raw_customers(&self) -> &ReadOnlyTable<u64, &'static [u8]> {
        &self.customers
    }

    pub(crate) fn raw_postings(&self) -> &ReadOnlyTable<&'static [u8], ()> {
        &self.postings
    }

    pub(crate) fn raw_uniques(&self) -> &ReadOnlyTable<&'static [u8], u64> {
        &self.uniques
    }

    pub(crate) fn raw_meta(&self) -> &ReadOnlyTable<&'static str, &'static [u8]> {
        &self.meta
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

/// Feeds `f` the ids of `range` in a postings or uniques table.
pub(crate) fn scan_table_ids(
    postings: &impl ReadableTable<&'static [u8], ()>,
    uniques: &impl ReadableTable<&'static [u8], u64>,
    unique: bool,
    range: &KeyRange,
    f: &mut dyn FnMut(u64),
) -> Result<()> {
    let bounds = (
        std::ops::Bound::Included(range.start.as_slice()),
        range
            .end
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
    );
    if unique {
        for item in uniques.range::<&[u8]>(bounds).map_err(storage)? {
            let (_, v) = item.map_err(storage)?;
            f(v.value());
        }
    } else {
        for item in postings.range::<&[u8]>(bounds).map_err(storage)? {
            let (k, ()) = item.map_err(storage).map(|(k, v)| (k, v.value()))?;
            let (_, id) = index::split_posting(k.value())
                .ok_or_else(|| Error::corrupted("index entry", "key too short"))?;
            f(id);
        }
    }
    Ok(())
}

impl Backend for ReadTxn {
    fn record(&self, id: u64) -> Result<Option<Record>> {
        match self.customers.get(id).map_err(storage)? {
            Some(v) => decode_record(id, v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn unique(&self, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.uniques.get(key).map_err(storage)?.map(|v| v.value()))
    }

    fn scan_ids(&self, unique: bool, range: &KeyRange, f: &mut dyn FnMut(u64)) -> Result<()> {
        scan_table_ids(&self.postings, &self.uniques, unique, range, f)
    }

    fn record_count(&self) -> Result<u64> {
        self.customers.len().map_err(storage)
    }

    fn schema(&self) -> Result<Arc<Schema>> {
        if let Some(s) = self.schema.get() {
            return Ok(s.clone());
        }
        let s = Arc::new(load_schema(&self.meta)?);
        Ok(self.schema.get_or_init(|| s).clone())
    }

    fn region(&self) -> Option<CountryCode> {
        self.region
    }
}

impl_read!(ReadTxn);

/// The customers of a [`ReadTxn`], read lazily in id order. Yields an error for a record that
/// does not decode, and goes on with the next.
pub struct Customers {
    inner: redb::Range<'static, u64, &'static [u8]>,
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
                .and_then(|(k, v)| decode_record(k.value(), v.value())),
        )
    }
}

impl DoubleEndedIterator for Customers {
    fn next_back(&mut self) -> Option<Self::Item> {
        let item = self.inner.next_back()?;
        Some(
            item.map_err(storage)
                .and_then(|(k, v)| decode_record(k.value(), v.value())),
        )
    }
}
