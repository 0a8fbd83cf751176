//! Writing: [`WriteTxn`], which keeps every index consistent with the records it changes.
//!
//! Writes are staged in sorted in-memory buffers and applied to redb in key order when the
//! transaction commits, before a read that needs the tables (a scan or a count), or when the
//! buffers grow large. Point reads (a record by id, a unique key) look in the buffers first, so
//! the transaction always sees its own writes. Applying entries in key order touches each B-tree
//! page once per flush instead of once per entry, which is what makes bulk loads fast.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use super::read::{Backend, decode_record, impl_read, load_schema, scan_table_ids};
use super::{
    CUSTOMERS, Clock, Config, Durability, META, META_NEXT_ID, META_SCHEMA, POSTINGS, UNIQUES,
    codec, storage,
};
use crate::error::{Error, ErrorKind, Result};
use crate::index::{self, Entries, FIRST_ATTRIBUTE_TAG, Index, KeyRange, Scan};
use crate::model::{
    AttributeDef, AttributeType, CountryCode, CustomerId, Email, ExternalId, IntoCustomer, Record,
    Schema,
};

/// Staged entries beyond which the buffers are applied early, bounding memory.
const FLUSH_THRESHOLD: usize = 400_000;

/// A key of a unique index, for [`WriteTxn::upsert`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniqueKey {
    /// An email address (compared by match key).
    Email(String),
    /// An id in another system.
    ExternalId {
        /// The other system's name.
        system: String,
        /// The id there.
        id: String,
    },
}

impl UniqueKey {
    fn key(&self) -> Result<Vec<u8>> {
        Ok(match self {
            UniqueKey::Email(e) => index::email_key(Email::parse(e)?.match_key()),
            UniqueKey::ExternalId { system, id } => {
                let x = ExternalId::new(system, id)?;
                index::external_id_key(x.system(), x.id())
            }
        })
    }
}

/// What [`WriteTxn::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// No customer had the key; this one was inserted.
    Inserted(CustomerId),
    /// The customer with the key was updated.
    Updated(CustomerId),
}

impl Upsert {
    /// The customer's id either way.
    pub fn id(self) -> CustomerId {
        match self {
            Upsert::Inserted(id) | Upsert::Updated(id) => id,
        }
    }
}

#[derive(Default)]
struct Buffers {
    records: BTreeMap<u64, Option<Vec<u8>>>,
    /// Posting changes in the order made; sorted (stably, so the last change to a key wins)
    /// when applied. Nothing reads postings without applying them first.
    postings: Vec<(Vec<u8>, bool)>,
    uniques: BTreeMap<Vec<u8>, Option<u64>>,
}

impl Buffers {
    /// Staged changes, counted for the flush threshold.
    fn len(&self) -> usize {
        self.records.len() + self.postings.len() + self.uniques.len()
    }
}

/// The write transaction. Only one exists at a time per store.
///
/// Every change it makes (records and all their index entries) becomes visible to readers
/// together at [`WriteTxn::commit`], or not at all: dropping it without committing rolls
/// everything back. A refused value (a bad email, a duplicate unique key) leaves the transaction
/// as it was before that call, so the caller may go on with other records.
pub struct WriteTxn {
    txn: redb::WriteTransaction,
    buf: RefCell<Buffers>,
    next_id: u64,
    /// `next_id` as stored: written back at commit only if allocation moved it.
    stored_next_id: u64,
    schema: RefCell<Option<Arc<Schema>>>,
    schema_dirty: bool,
    durability: Option<Durability>,
    region: Option<CountryCode>,
    clock: Clock,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl WriteTxn {
    pub(crate) fn new(txn: redb::WriteTransaction, config: &Config) -> Result<WriteTxn> {
        let next_id = {
            let meta = txn.open_table(META).map_err(storage)?;
            let v = meta.get(META_NEXT_ID).map_err(storage)?;
            match v {
                Some(v) => {
                    let bytes: [u8; 8] = v
                        .value()
                        .try_into()
                        .map_err(|_| Error::corrupted("next id", "not 8 bytes"))?;
                    u64::from_le_bytes(bytes)
                }
                None => 1,
            }
        };
        Ok(WriteTxn {
            txn,
            buf: RefCell::new(Buffers::default()),
            next_id,
            stored_next_id: next_id,
            schema: RefCell::new(None),
            schema_dirty: false,
            durability: None,
            region: config.default_region,
            clock: config.clock.clone(),
        })
    }

    /// The store's default phone region.
    pub(crate) fn default_region(&self) -> Option<CountryCode> {
        self.region
    }

    /// Sets this transaction's durability, overriding the store's default.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = Some(durability);
    }

    /// Inserts a new customer and returns the id the store allocated.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] for a refused value, [`ErrorKind::Conflict`] if an email or
    /// external id belongs to another customer, [`ErrorKind::UnknownAttribute`] or
    /// [`ErrorKind::AttributeType`] for an attribute the schema does not allow. Nothing is
    /// written then.
    pub fn insert(&mut self, customer: impl IntoCustomer) -> Result<CustomerId> {
        let customer = customer.into_customer(self.region)?;
        let schema = self.schema_arc()?;
        schema.check(&customer.attributes)?;
        let id = CustomerId::from_u64(self.next_id);
        let now = (self.clock)();
        let rec = Record {
            id,
            created_at: now,
            updated_at: now,
            revision: 1,
            customer,
        };
        let new = index::entries(&rec, &schema);
        self.check_uniques(id, &new, None)?;
        let bytes = codec::encode(&rec)?;
        self.next_id += 1;
        self.stage(id, Some(bytes), &Entries::default(), &new)?;
        Ok(id)
    }

    /// Replaces the data of customer `id`, keeping its id and creation time. The store moves
    /// the index entries that changed.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer; otherwise as [`WriteTxn::insert`].
    pub fn update(&mut self, id: CustomerId, customer: impl IntoCustomer) -> Result<Record> {
        let customer = customer.into_customer(self.region)?;
        let old = self
            .record(id.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(id)))?;
        let schema = self.schema_arc()?;
        schema.check(&customer.attributes)?;
        let rec = Record {
            id,
            created_at: old.created_at,
            updated_at: (self.clock)(),
            revision: old.revision + 1,
            customer,
        };
        let old_entries = index::entries(&old, &schema);
        let new = index::entries(&rec, &schema);
        self.check_uniques(id, &new, Some(&old_entries))?;
        let bytes = codec::encode(&rec)?;
        self.stage(id, Some(bytes), &old_entries, &new)?;
        Ok(rec)
    }

    /// Updates the customer holding `key` if there is one, or inserts a new one.
    pub fn upsert(&mut self, key: &UniqueKey, customer: impl IntoCustomer) -> Result<Upsert> {
        let k = key.key()?;
        match self.unique(&k)? {
            Some(id) => {
                let id = CustomerId::from_u64(id);
                self.update(id, customer)?;
                Ok(Upsert::Updated(id))
            }
            None => self.insert(customer).map(Upsert::Inserted),
        }
    }

    /// Removes customer `id` and all its index entries, returning what it was.
    pub fn remove(&mut self, id: CustomerId) -> Result<Option<Record>> {
        let Some(old) = self.record(id.as_u64())? else {
            return Ok(None);
        };
        let schema = self.schema_arc()?;
        let old_entries = index::entries(&old, &schema);
        self.stage(id, None, &old_entries, &Entries::default())?;
        Ok(Some(old))
    }

    /// Declares a custom attribute. Declaring an attribute again with the same type is allowed
    /// and can turn its index on: the index is then built for every stored customer, in this
    /// transaction.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] for a bad name; [`ErrorKind::SchemaConflict`] if the attribute is
    /// declared with another type.
    pub fn declare_attribute(
        &mut self,
        name: &str,
        ty: AttributeType,
        indexed: bool,
    ) -> Result<()> {
        if !crate::model::attribute_name_is_valid(name) {
            return Err(Error::invalid(
                "attribute",
                name,
                crate::normalize::Reason::Malformed,
            ));
        }
        let mut schema = (*self.schema_arc()?).clone();
        let existing = schema.get(name);
        if existing.is_some_and(|d| d.ty != ty) {
            return Err(Error::new(ErrorKind::SchemaConflict {
                name: name.to_owned(),
            }));
        }
        let old_slot = existing.and_then(|d| d.slot);
        let slot = match old_slot {
            Some(s) => Some(s),
            None if indexed => Some(
                schema
                    .max_slot()
                    .map_or(Some(FIRST_ATTRIBUTE_TAG), |s| s.checked_add(1))
                    .ok_or_else(|| {
                        Error::new(ErrorKind::SchemaConflict {
                            name: name.to_owned(),
                        })
                    })?,
            ),
            None => None,
        };
        // Values can exist only if the attribute was declared before; newly indexed, they need
        // their entries now.
        let build = existing.is_some() && old_slot.is_none() && slot.is_some();
        schema.insert(AttributeDef {
            name: name.to_owned(),
            ty,
            slot,
        });
        *self.schema.borrow_mut() = Some(Arc::new(schema));
        self.schema_dirty = true;
        if let (true, Some(slot)) = (build, slot) {
            self.build_attribute_index(name, slot)?;
        }
        Ok(())
    }

    /// Adds the entries of a newly indexed attribute, tag `slot`, for every stored customer.
    fn build_attribute_index(&mut self, name: &str, slot: u16) -> Result<()> {
        self.flush()?;
        let mut added = Vec::new();
        {
            let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
            for item in customers.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                let rec = decode_record(k.value(), v.value())?;
                if let Some(value) = rec.customer.attributes.get(name) {
                    index::attribute_postings(k.value(), slot, value, &mut added);
                }
            }
        }
        self.buf
            .borrow_mut()
            .postings
            .extend(added.into_iter().map(|k| (k, true)));
        Ok(())
    }

    /// Refuses unique keys of `new` held by another customer. `old` keys are the customer's own.
    fn check_uniques(&self, id: CustomerId, new: &Entries, old: Option<&Entries>) -> Result<()> {
        for u in &new.uniques {
            if old.is_some_and(|o| o.uniques.iter().any(|ou| ou.key == u.key)) {
                continue;
            }
            if let Some(existing) = self.unique(&u.key)? {
                if existing != id.as_u64() {
                    return Err(Error::new(ErrorKind::Conflict {
                        index: u.index,
                        key: u.display.clone(),
                        existing: CustomerId::from_u64(existing),
                    }));
                }
            }
        }
        Ok(())
    }

    /// Stages a record write (or removal) and the index changes from `old` to `new`.
    fn stage(
        &mut self,
        id: CustomerId,
        bytes: Option<Vec<u8>>,
        old: &Entries,
        new: &Entries,
    ) -> Result<()> {
        {
            let mut buf = self.buf.borrow_mut();
            buf.records.insert(id.as_u64(), bytes);
            // Both lists are sorted: walk them together, staging only what differs.
            let (mut at_old, mut at_new) = (0, 0);
            loop {
                match (old.postings.get(at_old), new.postings.get(at_new)) {
                    (Some(gone), Some(kept)) if gone == kept => {
                        at_old += 1;
                        at_new += 1;
                    }
                    (Some(gone), next) if next.is_none_or(|n| gone < n) => {
                        buf.postings.push((gone.clone(), false));
                        at_old += 1;
                    }
                    (_, Some(added)) => {
                        buf.postings.push((added.clone(), true));
                        at_new += 1;
                    }
                    _ => break,
                }
            }
            for u in &old.uniques {
                if !new.uniques.iter().any(|nu| nu.key == u.key) {
                    buf.uniques.insert(u.key.clone(), None);
                }
            }
            for u in &new.uniques {
                buf.uniques.insert(u.key.clone(), Some(id.as_u64()));
            }
            if buf.len() < FLUSH_THRESHOLD {
                return Ok(());
            }
        }
        self.flush()
    }

    fn schema_arc(&self) -> Result<Arc<Schema>> {
        if let Some(s) = self.schema.borrow().as_ref() {
            return Ok(s.clone());
        }
        let meta = self.txn.open_table(META).map_err(storage)?;
        let s = Arc::new(load_schema(&meta)?);
        *self.schema.borrow_mut() = Some(s.clone());
        Ok(s)
    }

    /// Applies the staged writes to the tables, in key order.
    fn flush(&self) -> Result<()> {
        let mut buf = self.buf.borrow_mut();
        if buf.len() == 0 {
            return Ok(());
        }
        let mut b = std::mem::take(&mut *buf);
        drop(buf);
        b.postings.sort_by(|x, y| x.0.cmp(&y.0));
        {
            let mut customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
            for (id, bytes) in &b.records {
                match bytes {
                    Some(v) => customers.insert(id, v.as_slice()).map_err(storage)?,
                    None => customers.remove(id).map_err(storage)?,
                };
            }
        }
        {
            let mut postings = self.txn.open_table(POSTINGS).map_err(storage)?;
            let mut i = 0;
            while i < b.postings.len() {
                // Of several changes to one key, the last made is the one that stands.
                let mut last = i;
                while b
                    .postings
                    .get(last + 1)
                    .is_some_and(|n| n.0 == b.postings[i].0)
                {
                    last += 1;
                }
                let (k, insert) = &b.postings[last];
                i = last + 1;
                if *insert {
                    postings.insert(k.as_slice(), ()).map_err(storage)?;
                } else {
                    postings.remove(k.as_slice()).map_err(storage)?;
                }
            }
        }
        {
            let mut uniques = self.txn.open_table(UNIQUES).map_err(storage)?;
            for (k, v) in &b.uniques {
                match v {
                    Some(id) => uniques.insert(k.as_slice(), id).map_err(storage)?,
                    None => uniques.remove(k.as_slice()).map_err(storage)?,
                };
            }
        }
        Ok(())
    }

    /// Makes every change of this transaction durable (per its durability) and visible.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] if the engine cannot commit; nothing of the transaction is then
    /// visible.
    pub fn commit(self) -> Result<()> {
        self.flush()?;
        let mut txn = self.txn;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            if self.next_id != self.stored_next_id {
                meta.insert(META_NEXT_ID, self.next_id.to_le_bytes().as_slice())
                    .map_err(storage)?;
            }
            if self.schema_dirty {
                if let Some(s) = self.schema.borrow().as_ref() {
                    meta.insert(META_SCHEMA, codec::encode(&**s)?.as_slice())
                        .map_err(storage)?;
                }
            }
        }
        if let Some(d) = self.durability {
            txn.set_durability(d.to_redb()).map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }

    /// Rolls back every change of this transaction (as dropping it does).
    pub fn abort(self) -> Result<()> {
        self.txn.abort().map_err(storage)
    }
}

impl Backend for WriteTxn {
    fn record(&self, id: u64) -> Result<Option<Record>> {
        if let Some(staged) = self.buf.borrow().records.get(&id) {
            return staged
                .as_deref()
                .map(|bytes| decode_record(id, bytes))
                .transpose();
        }
        let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
        let v = customers.get(id).map_err(storage)?;
        v.map(|v| decode_record(id, v.value())).transpose()
    }

    fn unique(&self, key: &[u8]) -> Result<Option<u64>> {
        if let Some(staged) = self.buf.borrow().uniques.get(key) {
            return Ok(*staged);
        }
        let uniques = self.txn.open_table(UNIQUES).map_err(storage)?;
        Ok(uniques.get(key).map_err(storage)?.map(|v| v.value()))
    }

    fn scan_ids(&self, unique: bool, range: &KeyRange, f: &mut dyn FnMut(u64)) -> Result<()> {
        self.flush()?;
        let postings = self.txn.open_table(POSTINGS).map_err(storage)?;
        let uniques = self.txn.open_table(UNIQUES).map_err(storage)?;
        scan_table_ids(&postings, &uniques, unique, range, f)
    }

    fn record_count(&self) -> Result<u64> {
        self.flush()?;
        let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
        customers.len().map_err(storage)
    }

    fn schema(&self) -> Result<Arc<Schema>> {
        self.schema_arc()
    }

    fn region(&self) -> Option<CountryCode> {
        self.region
    }
}

impl_read!(WriteTxn);
