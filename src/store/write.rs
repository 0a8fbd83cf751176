//! Writing: [`WriteTxn`], which keeps every index consistent with the records it changes.
//!
//! Writes are staged in sorted in-memory buffers and applied to redb in key order when the
//! transaction commits, before a read that needs the tables (a scan or a count), or when the
//! buffers grow large. Point reads (a record by id, a unique key) look in the buffers first, so
//! the transaction always sees its own writes. Applying entries in key order touches each B-tree
//! page once per flush instead of once per entry, which is what makes bulk loads fast.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};

use super::crypt::{CUSTOMER_KEYS, Crypt, Invalidation};
use super::history::{self, Change, FieldChange, Operation};
use super::read::{
    Backend, RawVisitor, decode_record, impl_read, load_schema, scan_raw_table, scan_table_ids,
};
use super::subscribe::Hub;
use super::{
    CUSTOMERS, Clock, Config, Durability, META, META_NEXT_ACTIVITY, META_NEXT_ID, META_NEXT_SEQ,
    META_SCHEMA, POSTINGS, Table, UNIQUES, codec, read_counter, storage,
};
use crate::crypt::SecretKey;
use crate::error::{Error, ErrorKind, Result};
use crate::index::{self, Entries, FIRST_ATTRIBUTE_TAG, Index, KeyRange, Scan};
use crate::model::{
    AttributeDef, AttributeType, CountryCode, Customer, CustomerId, Email, ExternalId,
    IntoCustomer, Rates, Record, Schema,
};

/// Staged entries beyond which the buffers are applied early, bounding memory.
const FLUSH_THRESHOLD: usize = 400_000;

/// Posting changes from which a flush writes the postings on a second thread (see
/// [`WriteTxn::flush`]): about a thousand new customers. Below it a thread would cost more
/// than it saves.
const PARALLEL_FLUSH: usize = 20_000;

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
    /// Posting changes in the order made; sorted when applied (the last change to a key
    /// wins). Nothing reads postings without applying them first.
    postings: PostingLog,
    /// Per index tag, the change in how many customers have any value for it.
    presence: BTreeMap<u16, i64>,
    /// Unique keys, hashed: every insert looks its keys up here, and the flush sorts them.
    uniques: HashMap<Vec<u8>, Option<u64>>,
    /// The byte-keyed tables, by [`Table`] order.
    raw: [BTreeMap<Vec<u8>, Option<Vec<u8>>>; Table::ALL.len()],
    /// History entries not yet written, in sequence order, an insert with the stored record it
    /// holds in place of its fields where it has one (see [`history::encode_insert`]).
    changes: Vec<(Change, Option<Vec<u8>>)>,
}

/// Posting changes, their keys packed in one buffer: a bulk load stages hundreds of thousands,
/// and a heap allocation each made allocating, sorting (by pointer) and freeing them a third of
/// applying them.
#[derive(Default)]
struct PostingLog {
    keys: Vec<u8>,
    ops: Vec<PostingOp>,
}

/// One staged posting change: its key's place in [`PostingLog::keys`], whether it adds or
/// removes the posting, and its order among the changes.
#[derive(Clone, Copy)]
struct PostingOp {
    /// The key's first 8 bytes (zero-padded), big-endian: most comparisons end here.
    head: u64,
    start: usize,
    len: u32,
    order: u32,
    insert: bool,
}

impl PostingLog {
    fn len(&self) -> usize {
        self.ops.len()
    }

    fn push(&mut self, key: &[u8], insert: bool) {
        // Keys are index values of bounded length and the log is applied at
        // `FLUSH_THRESHOLD` changes, far below either bound.
        debug_assert!(key.len() < u32::MAX as usize && self.ops.len() < u32::MAX as usize);
        let mut head = [0u8; 8];
        let n = key.len().min(8);
        head[..n].copy_from_slice(&key[..n]);
        self.ops.push(PostingOp {
            head: u64::from_be_bytes(head),
            start: self.keys.len(),
            len: key.len() as u32,
            order: self.ops.len() as u32,
            insert,
        });
        self.keys.extend_from_slice(key);
    }

    /// The key of `op`, which `push` made from this log: always in bounds.
    fn key(&self, op: PostingOp) -> &[u8] {
        &self.keys[op.start..op.start + op.len as usize]
    }

    /// The changes that stand, in key order: of several to one key, the last made.
    fn settled(&mut self) -> impl Iterator<Item = (&[u8], bool)> {
        let mut ops = std::mem::take(&mut self.ops);
        // Equal heads compare the whole keys: a shorter key padded with zeros may tie.
        ops.sort_unstable_by(|a, b| {
            a.head
                .cmp(&b.head)
                .then_with(|| self.key(*a).cmp(self.key(*b)))
                .then(a.order.cmp(&b.order))
        });
        let this = &*self;
        let mut ops = ops.into_iter().peekable();
        std::iter::from_fn(move || {
            let mut op = ops.next()?;
            while let Some(next) = ops.next_if(|n| this.key(*n) == this.key(op)) {
                op = next;
            }
            Some((this.key(op), op.insert))
        })
    }
}

impl Buffers {
    /// Staged changes, counted for the flush threshold.
    fn len(&self) -> usize {
        self.records.len()
            + self.postings.len()
            + self.presence.len()
            + self.uniques.len()
            + self.raw.iter().map(BTreeMap::len).sum::<usize>()
            + self.changes.len()
    }
}

/// A counter the transaction advances, written back at commit only if it moved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counter {
    next: u64,
    stored: u64,
}

impl Counter {
    fn new(stored: u64) -> Counter {
        Counter {
            next: stored,
            stored,
        }
    }

    /// Takes the next value.
    pub(super) fn take(&mut self) -> u64 {
        let v = self.next;
        self.next += 1;
        v
    }

    pub(super) fn peek(self) -> u64 {
        self.next
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
    next_id: Counter,
    /// No posting of an id from here up is stored: the next id when postings were last
    /// written (see [`super::postings::apply`]).
    unwritten_from: Cell<u64>,
    /// A flush failed part-way: the tables hold part of the staged changes, so nothing more
    /// is applied and the transaction cannot commit.
    poisoned: Cell<bool>,
    pub(super) next_seq: Counter,
    pub(super) next_activity: Counter,
    schema: RefCell<Option<Arc<Schema>>>,
    schema_dirty: bool,
    durability: Option<Durability>,
    region: Option<CountryCode>,
    clock: Clock,
    pub(super) rates: Arc<Rates>,
    actor: Option<String>,
    suppression_key: Option<Arc<[u8]>>,
    crypt: Option<Arc<Crypt>>,
    /// The customers whose data keys this transaction destroys: out of the key cache until
    /// after the commit. Declared after `txn`, so it is dropped after a rollback too.
    shredded: Invalidation,
    hub: Arc<Hub>,
    /// Committed changes to hand to subscribers, kept only if there were any at begin.
    publish: Option<RefCell<Vec<Change>>>,
    /// Keeps the database open while the transaction lives; last, so it is dropped last.
    _store: Arc<super::Inner>,
}

impl std::fmt::Debug for WriteTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("next_id", &self.next_id.peek())
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl WriteTxn {
    pub(crate) fn new(
        txn: redb::WriteTransaction,
        config: &Config,
        store: Arc<super::Inner>,
    ) -> Result<WriteTxn> {
        let (next_id, next_seq, next_activity) = {
            let meta = txn.open_table(META).map_err(storage)?;
            (
                read_counter(&meta, META_NEXT_ID)?.unwrap_or(1),
                read_counter(&meta, META_NEXT_SEQ)?.unwrap_or(1),
                read_counter(&meta, META_NEXT_ACTIVITY)?.unwrap_or(1),
            )
        };
        // Taken after the write lock: the last commit is in this snapshot, so whatever key it
        // destroyed is not in it to be cached (see `key_cache`).
        let crypt = config.crypt.as_ref().map(|c| Arc::new(c.for_snapshot()));
        let publish = config
            .hub
            .has_subscribers()
            .then(|| RefCell::new(Vec::new()));
        Ok(WriteTxn {
            _store: store,
            txn,
            buf: RefCell::new(Buffers::default()),
            next_id: Counter::new(next_id),
            unwritten_from: Cell::new(next_id),
            poisoned: Cell::new(false),
            next_seq: Counter::new(next_seq),
            next_activity: Counter::new(next_activity),
            schema: RefCell::new(None),
            schema_dirty: false,
            durability: None,
            region: config.default_region,
            clock: config.clock.clone(),
            rates: config.rates.clone(),
            actor: None,
            suppression_key: config.suppression_key.clone(),
            shredded: Invalidation::of(crypt.as_deref()),
            crypt,
            hub: config.hub.clone(),
            publish,
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

    /// Names who makes this transaction's changes from here on, for history.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] if the name is empty, too long or holds control characters.
    pub fn set_actor(&mut self, actor: &str) -> Result<()> {
        let cleaned = crate::normalize::optional_text(Some(actor))
            .map_err(|r| Error::invalid("actor", actor, r))?
            .ok_or_else(|| Error::invalid("actor", actor, crate::normalize::Reason::Empty))?;
        self.actor = Some(cleaned);
        Ok(())
    }

    /// The actor of this transaction's changes.
    pub(super) fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// The store's suppression key.
    pub(super) fn suppression_key(&self) -> Option<&[u8]> {
        self.suppression_key.as_deref()
    }

    /// The time now, by the store's clock.
    pub(super) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    /// Appends a history entry, stamped `at`.
    pub(super) fn log(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        customer: Option<CustomerId>,
        operation: Operation,
        fields: Vec<FieldChange>,
    ) {
        self.log_held(at, customer, operation, fields, None);
    }

    /// [`WriteTxn::log`] of an entry holding `record`, if given, in place of its fields.
    fn log_held(
        &mut self,
        at: chrono::DateTime<chrono::Utc>,
        customer: Option<CustomerId>,
        operation: Operation,
        fields: Vec<FieldChange>,
        record: Option<Vec<u8>>,
    ) {
        let change = Change {
            seq: self.next_seq.take(),
            at,
            actor: self.actor.clone(),
            customer,
            operation,
            fields,
        };
        self.buf.borrow_mut().changes.push((change, record));
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
        let prepared = self.preparer((self.clock)())?.prepare(customer);
        self.insert_prepared(prepared)
    }

    /// What prepares customers for inserting at `now` (see [`Preparer`]).
    pub(super) fn preparer(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Preparer> {
        Ok(Preparer {
            schema: self.schema_arc()?,
            now,
            plain: self.crypt.is_none(),
            suppressing: self.suppression_key().is_some(),
            publishing: self.publish.is_some(),
        })
    }

    /// [`WriteTxn::insert`] of a customer [`Preparer::prepare`] made ready, perhaps on another
    /// thread. The checks run in `insert`'s order, so the error is the one it would give.
    pub(super) fn insert_prepared(&mut self, prepared: Prepared) -> Result<CustomerId> {
        let Prepared {
            customer,
            now,
            checked,
            fields,
        } = prepared;
        if let Some(c) = &customer {
            self.check_suppressed(c)?;
        }
        let id = CustomerId::from_u64(self.next_id.peek());
        // The stored record, and the same unsealed for the history entry, which holds it.
        let (new, bytes, plain) = if let Some((entries, bytes)) = checked? {
            let new = with_id(entries, id);
            self.check_uniques(id, &new, None)?;
            let bytes = codec::with_record_id(&bytes, id.as_u64())?;
            (new, bytes.clone(), bytes)
        } else {
            // An encrypted store blinds the entries and seals the record under a data key
            // made for the id, after the checks. The customer was kept for this.
            let customer = customer.ok_or_else(|| {
                Error::corrupted("customer (while inserting)", "not kept for sealing")
            })?;
            let rec = Record {
                id,
                created_at: now,
                updated_at: now,
                revision: 1,
                customer,
            };
            let new = self.entries(&rec, &*self.schema_arc()?);
            self.check_uniques(id, &new, None)?;
            // Encoded once: sealed for the table, as it is for the history entry.
            let plain = codec::encode(&rec)?;
            (new, self.seal_encoded(id.as_u64(), &plain)?, plain)
        };
        let fields = fields?.unwrap_or_default();
        self.next_id.take();
        self.stage(id, Some(bytes), &Entries::default(), &new)?;
        self.log_held(now, Some(id), Operation::Insert, fields, Some(plain));
        Ok(id)
    }

    /// Replaces the data of customer `id`, keeping its id and creation time. The store moves
    /// the index entries that changed. Consent events are append-only: every event the
    /// customer had is kept even if `customer` leaves it out (see [`WriteTxn::record_consent`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer; otherwise as [`WriteTxn::insert`].
    pub fn update(&mut self, id: CustomerId, customer: impl IntoCustomer) -> Result<Record> {
        let mut customer = customer.into_customer(self.region)?;
        if let Some(old) = self.record(id.as_u64())? {
            super::consent::keep_history(&old.customer, &mut customer);
        }
        self.update_as(id, customer, Operation::Update)
    }

    /// [`WriteTxn::update`], recorded in history as `op`.
    pub(super) fn update_as(
        &mut self,
        id: CustomerId,
        customer: impl IntoCustomer,
        op: Operation,
    ) -> Result<Record> {
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
        let old_entries = self.entries(&old, &schema);
        let new = self.entries(&rec, &schema);
        self.check_uniques(id, &new, Some(&old_entries))?;
        let bytes = self.encode_record(&rec)?;
        let changed = history::diff_texts(
            &history::field_texts(&old.customer)?,
            &history::field_texts(&rec.customer)?,
        );
        self.stage(id, Some(bytes), &old_entries, &new)?;
        self.log(rec.updated_at, Some(id), op, changed);
        Ok(rec)
    }

    /// Writes `rec` back under its own id (a merged-away customer restored by an unmerge),
    /// with a revision one past `rec`'s, recorded in history as `op`.
    pub(super) fn restore(&mut self, mut rec: Record, op: Operation) -> Result<()> {
        let schema = self.schema_arc()?;
        schema.check(&rec.customer.attributes)?;
        rec.revision += 1;
        rec.updated_at = self.now();
        let new = self.entries(&rec, &schema);
        self.check_uniques(rec.id, &new, None)?;
        let bytes = self.encode_record(&rec)?;
        let changed = history::inserted(&rec.customer)?;
        self.stage(rec.id, Some(bytes), &Entries::default(), &new)?;
        self.log(rec.updated_at, Some(rec.id), op, changed);
        Ok(())
    }

    /// The index entries of `rec`, blinded in an encrypted store.
    pub(super) fn entries(&self, rec: &Record, schema: &Schema) -> Entries {
        match &self.crypt {
            Some(c) => c.entries(rec, schema),
            None => index::entries(rec, schema),
        }
    }

    /// The stored form of `rec`: sealed under its customer's data key (made now for a new
    /// customer) in an encrypted store.
    pub(super) fn encode_record(&self, rec: &Record) -> Result<Vec<u8>> {
        let plain = codec::encode(rec)?;
        if self.crypt.is_none() {
            return Ok(plain);
        }
        self.seal_encoded(rec.id.as_u64(), &zeroize::Zeroizing::new(plain))
    }

    /// In an encrypted store, customer `id`'s record encoded as `plain`, sealed under its data
    /// key (made now for a new customer); `plain` itself in a plain store.
    fn seal_encoded(&self, id: u64, plain: &[u8]) -> Result<Vec<u8>> {
        let Some(c) = &self.crypt else {
            return Ok(plain.to_vec());
        };
        let mut keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
        let wrapped = keys.get(id).map_err(storage)?.map(|v| v.value().to_vec());
        let key = if let Some(w) = wrapped {
            c.data_key(id, &w)?
        } else {
            let (key, wrapped) = c.new_data_key(id)?;
            keys.insert(id, wrapped.as_slice()).map_err(storage)?;
            key
        };
        super::crypt::seal_record(&key, id, plain)
    }

    /// Destroys customer `id`'s data key (crypto-shredding): whatever was sealed under it,
    /// here or in any backup, can no longer be read.
    pub(super) fn destroy_data_key(&self, id: u64) -> Result<()> {
        if self.crypt.is_some() {
            self.shredded.add(id);
            let mut keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
            keys.remove(id).map_err(storage)?;
        }
        Ok(())
    }

    /// The stored form of history entry `c`: sealed under its customer's data key in an
    /// encrypted store. An entry about a customer without a data key (the `Erased` entry
    /// written after its key was destroyed) carries no fields and is stored plain.
    pub(super) fn encode_change(&self, c: &Change) -> Result<Vec<u8>> {
        self.encode_change_with(c, None)
    }

    /// [`WriteTxn::encode_change`] of `c`, holding the unsealed stored `record` in place of
    /// its fields if given (see [`history::encode_insert`]).
    fn encode_change_with(&self, c: &Change, record: Option<&[u8]>) -> Result<Vec<u8>> {
        let bytes = match record {
            Some(r) => history::encode_insert(c, r)?,
            None => history::encode(c)?,
        };
        let (Some(crypt), Some(id)) = (&self.crypt, c.customer) else {
            return Ok(bytes);
        };
        let id = id.as_u64();
        let wrapped = {
            let keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
            keys.get(id).map_err(storage)?.map(|v| v.value().to_vec())
        };
        if wrapped.is_none() && c.fields.is_empty() && record.is_none() {
            return Ok(bytes);
        }
        let key = super::crypt::data_key_of(crypt, id, wrapped.as_deref())?;
        super::crypt::seal_history(&key, id, c.seq, &bytes)
    }

    /// Writes a store-wide value to the meta table (in this transaction).
    pub(super) fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let mut meta = self.txn.open_table(META).map_err(storage)?;
        meta.insert(key, value).map_err(storage)?;
        Ok(())
    }

    /// Updates the customer holding `key` if there is one, or inserts a new one.
    pub fn upsert(&mut self, key: &UniqueKey, customer: impl IntoCustomer) -> Result<Upsert> {
        let k = key.key()?;
        match self.lookup_unique(&k)? {
            Some(id) => {
                let id = CustomerId::from_u64(id);
                self.update(id, customer)?;
                Ok(Upsert::Updated(id))
            }
            None => self.insert(customer).map(Upsert::Inserted),
        }
    }

    /// Removes customer `id`, all its index entries and all its activities, returning what it
    /// was.
    pub fn remove(&mut self, id: CustomerId) -> Result<Option<Record>> {
        self.remove_as(id, Operation::Remove)
    }

    /// Removes a customer, its index entries and its timeline without a history entry (erasure
    /// deletes the customer's history itself).
    pub(super) fn remove_silently(&mut self, id: CustomerId) -> Result<()> {
        let Some(old) = self.record(id.as_u64())? else {
            return Ok(());
        };
        let schema = self.schema_arc()?;
        let old_entries = self.entries(&old, &schema);
        self.remove_timeline(id)?;
        self.stage(id, None, &old_entries, &Entries::default())
    }

    /// Replaces a customer's data without a history entry (anonymisation writes its own). In an
    /// encrypted store the customer's data key is destroyed first and the new data sealed under
    /// a new one, so what was sealed before (in freed pages or an older backup) stays
    /// unreadable even to a restore that copies the live store's keys.
    pub(super) fn replace_silently(&mut self, id: CustomerId, customer: Customer) -> Result<()> {
        let old = self
            .record(id.as_u64())?
            .ok_or(Error::new(ErrorKind::NotFound(id)))?;
        let schema = self.schema_arc()?;
        let rec = Record {
            id,
            created_at: old.created_at,
            updated_at: self.now(),
            revision: old.revision + 1,
            customer,
        };
        let old_entries = self.entries(&old, &schema);
        let new = self.entries(&rec, &schema);
        self.destroy_data_key(id.as_u64())?;
        let bytes = self.encode_record(&rec)?;
        self.stage(id, Some(bytes), &old_entries, &new)
    }

    /// [`WriteTxn::remove`], recorded in history as `op`. The timeline goes with the record
    /// (a merge moves it away first).
    pub(super) fn remove_as(&mut self, id: CustomerId, op: Operation) -> Result<Option<Record>> {
        let Some(old) = self.record(id.as_u64())? else {
            return Ok(None);
        };
        let schema = self.schema_arc()?;
        let old_entries = self.entries(&old, &schema);
        let changed = history::diff_texts(
            &history::field_texts(&old.customer)?,
            &history::FieldTexts::new(),
        );
        self.remove_timeline(id)?;
        self.stage(id, None, &old_entries, &Entries::default())?;
        let now = self.now();
        self.log(now, Some(id), op, changed);
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
        let def = AttributeDef {
            name: name.to_owned(),
            ty,
            slot,
        };
        if existing != Some(&def) {
            let after = serde_json::to_value(&def)
                .map(|v| history::Json::from_value(&v))
                .map_err(|e| Error::corrupted("schema", e))?;
            let now = self.now();
            self.log(
                now,
                None,
                Operation::AttributeDeclared,
                vec![FieldChange {
                    field: "attribute".into(),
                    before: None,
                    after: Some(after),
                }],
            );
        }
        schema.insert(def);
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
        let mut with_value = 0;
        {
            let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
            for item in customers.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                let rec = self.decode_record(k.value(), v.value())?;
                if let Some(value) = rec.customer.attributes.get(name) {
                    let before = added.len();
                    index::attribute_postings(k.value(), slot, value, &mut added);
                    with_value += i64::from(added.len() > before);
                }
            }
        }
        let mut buf = self.buf.borrow_mut();
        for k in &added {
            buf.postings.push(k, true);
        }
        if with_value > 0 {
            *buf.presence.entry(slot).or_default() += with_value;
        }
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
            let buf = &mut *buf;
            stage_posting_diff(&mut buf.postings, &old.postings, &new.postings);
            stage_presence(&mut buf.presence, &old.postings, &new.postings);
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

    /// Stages the posting changes from `old` to `new` (both sorted) and flushes if the buffers
    /// grew large.
    pub(super) fn stage_postings(&self, old: &[Vec<u8>], new: &[Vec<u8>]) -> Result<()> {
        let full = {
            let mut buf = self.buf.borrow_mut();
            let buf = &mut *buf;
            stage_posting_diff(&mut buf.postings, old, new);
            stage_presence(&mut buf.presence, old, new);
            buf.len() >= FLUSH_THRESHOLD
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Whether `table` may hold an entry: one is staged, or the table is not empty (its
    /// entries may all be staged for removal). Reads no staged change into the table.
    pub(super) fn may_hold_raw(&self, table: Table) -> Result<bool> {
        if self.buf.borrow().raw[table as usize]
            .values()
            .any(Option::is_some)
        {
            return Ok(true);
        }
        let t = self.txn.open_table(table.def()).map_err(storage)?;
        Ok(!t.is_empty().map_err(storage)?)
    }

    /// Stages a write (`Some`) or removal (`None`) in a byte-keyed table.
    pub(super) fn put_raw(&self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        let full = {
            let mut buf = self.buf.borrow_mut();
            buf.raw[table as usize].insert(key, value);
            buf.len() >= FLUSH_THRESHOLD
        };
        if full { self.flush() } else { Ok(()) }
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

    /// Applies the staged writes to the tables, in key order. A large flush writes the
    /// postings on a second thread while this one writes the records, unique keys and history,
    /// then the value counts as the postings yield them: tables of one redb transaction can be
    /// written from two threads, and a bulk load's flush would otherwise leave the second core
    /// idle while the writer works.
    fn flush(&self) -> Result<()> {
        if self.poisoned.get() {
            return Err(Error::new(ErrorKind::Poisoned));
        }
        let result = self.apply_staged();
        if result.is_err() {
            self.poisoned.set(true);
        }
        result
    }

    /// [`WriteTxn::flush`], which marks the transaction poisoned if this fails: the buffers
    /// are taken first, so a failure leaves part of them applied and the rest lost.
    fn apply_staged(&self) -> Result<()> {
        let mut buf = self.buf.borrow_mut();
        if buf.len() == 0 {
            return Ok(());
        }
        let mut b = std::mem::take(&mut *buf);
        drop(buf);
        let postings = std::mem::take(&mut b.postings);
        // Per index tag, the change in customers with any value of it: counted like values.
        let presence: Vec<Delta> = std::mem::take(&mut b.presence)
            .into_iter()
            .filter(|&(_, d)| d != 0)
            .map(|(tag, d)| (tag.to_be_bytes().to_vec(), d, false))
            .collect();
        // The value counts are written by the writer here, as the postings yield them.
        let apart =
            postings.len() >= PARALLEL_FLUSH && b.raw[Table::ValueCounts as usize].is_empty();
        let (txn, unwritten) = (&self.txn, self.unwritten_from.get());
        if apart {
            let (send, receive) = std::sync::mpsc::channel::<Delta>();
            std::thread::scope(|scope| {
                let side = scope.spawn(move || {
                    write_postings(txn, postings, unwritten, &mut |d| {
                        // The writer stops taking counts only after an error of its own.
                        let _ = send.send(d);
                    })
                });
                let here = self
                    .write_records(&mut b)
                    .and_then(|()| write_counts(txn, presence.into_iter().chain(receive)));
                let there = side
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                here.and(there)
            })?;
        } else {
            let mut deltas = presence;
            write_postings(txn, postings, unwritten, &mut |d| deltas.push(d))?;
            write_counts(txn, deltas.into_iter())?;
            self.write_records(&mut b)?;
        }
        // Every staged posting's id is below the next id.
        self.unwritten_from.set(self.next_id.peek());
        if let Some(publish) = &self.publish {
            // Nothing encodes fields apart while there are subscribers (see `Preparer`).
            publish
                .borrow_mut()
                .extend(b.changes.into_iter().map(|(c, _)| c));
        }
        Ok(())
    }

    /// Writes the staged records, unique keys, history and byte-keyed tables of `b`: every
    /// table but the postings and value counts.
    fn write_records(&self, b: &mut Buffers) -> Result<()> {
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
            let mut uniques = self.txn.open_table(UNIQUES).map_err(storage)?;
            let mut sorted: Vec<_> = b.uniques.iter().collect();
            sorted.sort_unstable_by(|x, y| x.0.cmp(y.0));
            for (k, v) in sorted {
                match v {
                    Some(id) => uniques.insert(k.as_slice(), id).map_err(storage)?,
                    None => uniques.remove(k.as_slice()).map_err(storage)?,
                };
            }
        }
        for (c, record) in &b.changes {
            let bytes = self.encode_change_with(c, record.as_deref())?;
            b.raw[Table::History as usize].insert(c.seq.to_be_bytes().to_vec(), Some(bytes));
            if let Some(customer) = c.customer {
                let mut k = customer.as_u64().to_be_bytes().to_vec();
                k.extend_from_slice(&c.seq.to_be_bytes());
                b.raw[Table::CustomerHistory as usize].insert(k, Some(Vec::new()));
            }
        }
        for (t, entries) in Table::ALL.iter().zip(&b.raw) {
            if entries.is_empty() {
                continue;
            }
            let mut table = self.txn.open_table(t.def()).map_err(storage)?;
            for (k, v) in entries {
                match v {
                    Some(v) => table.insert(k.as_slice(), v.as_slice()).map_err(storage)?,
                    None => table.remove(k.as_slice()).map_err(storage)?,
                };
            }
        }
        Ok(())
    }

    /// Makes every change of this transaction durable (per its durability) and visible.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] if the engine cannot commit; [`ErrorKind::Poisoned`] if applying
    /// staged changes failed earlier in the transaction (a read that needed the tables got
    /// that error). Nothing of the transaction is then visible.
    pub fn commit(self) -> Result<()> {
        self.flush()?;
        let mut txn = self.txn;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            for (key, counter) in [
                (META_NEXT_ID, self.next_id),
                (META_NEXT_SEQ, self.next_seq),
                (META_NEXT_ACTIVITY, self.next_activity),
            ] {
                if counter.next != counter.stored {
                    meta.insert(key, counter.next.to_le_bytes().as_slice())
                        .map_err(storage)?;
                }
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
        txn.commit().map_err(storage)?;
        if let Some(publish) = self.publish {
            self.hub.publish(publish.into_inner());
        }
        Ok(())
    }

    /// Rolls back every change of this transaction (as dropping it does).
    pub fn abort(self) -> Result<()> {
        self.txn.abort().map_err(storage)
    }
}

impl WriteTxn {
    /// A stored record, opened under its data key in an encrypted store.
    fn decode_record(&self, id: u64, bytes: &[u8]) -> Result<Record> {
        if self.crypt.is_none() {
            return decode_record(id, bytes);
        }
        let keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
        super::crypt::decode_stored(self.crypt.as_deref(), Some(&keys), id, bytes)
    }
}

impl Backend for WriteTxn {
    fn record(&self, id: u64) -> Result<Option<Record>> {
        if let Some(staged) = self.buf.borrow().records.get(&id) {
            return staged
                .as_deref()
                .map(|bytes| self.decode_record(id, bytes))
                .transpose();
        }
        let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
        let v = customers.get(id).map_err(storage)?;
        v.map(|v| self.decode_record(id, v.value())).transpose()
    }

    fn crypt(&self) -> Option<&Crypt> {
        self.crypt.as_deref()
    }

    fn data_key(&self, id: u64) -> Result<SecretKey> {
        let keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
        super::crypt::data_key_in(self.crypt(), &keys, id)
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

    fn has_record(&self, id: u64) -> Result<bool> {
        if let Some(staged) = self.buf.borrow().records.get(&id) {
            return Ok(staged.is_some());
        }
        let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
        Ok(customers.get(id).map_err(storage)?.is_some())
    }

    fn last_seq(&self) -> Result<u64> {
        Ok(self.next_seq.peek() - 1)
    }

    fn rates(&self) -> &Rates {
        &self.rates
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.clock)()
    }

    fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        self.flush()?;
        let customers = self.txn.open_table(CUSTOMERS).map_err(storage)?;
        let keys = self.txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
        super::read::for_each_in(&customers, self.crypt.as_deref(), Some(&keys), f)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let meta = self.txn.open_table(META).map_err(storage)?;
        Ok(meta.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    fn get_raw(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if table == Table::History || table == Table::CustomerHistory {
            self.flush()?;
        } else if let Some(staged) = self.buf.borrow().raw[table as usize].get(key) {
            return Ok(staged.clone());
        }
        let t = self.txn.open_table(table.def()).map_err(storage)?;
        Ok(t.get(key).map_err(storage)?.map(|v| v.value().to_vec()))
    }

    fn scan_raw(
        &self,
        table: Table,
        range: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>),
        reverse: bool,
        f: RawVisitor<'_>,
    ) -> Result<()> {
        self.flush()?;
        let t = self.txn.open_table(table.def()).map_err(storage)?;
        scan_raw_table(&t, range, reverse, f)
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

/// Prepares customers for inserting at one time, on any thread: a bulk insert runs it on
/// every core (see `insert_many`), so that the writing thread only checks, stages and writes.
pub(super) struct Preparer {
    schema: Arc<Schema>,
    now: chrono::DateTime<chrono::Utc>,
    /// Not an encrypted store: entries and record can be made without the tables.
    plain: bool,
    /// The store checks inserts against suppressed contacts, which needs the customer.
    suppressing: bool,
    /// Subscribers get the committed changes, which need their fields as made.
    publishing: bool,
}

/// A customer [`Preparer::prepare`] made ready for [`WriteTxn::insert_prepared`].
pub(super) struct Prepared {
    /// Unless nothing more needs it: then it is freed on the thread that made it, which costs
    /// the writing thread nothing (the allocator frees across threads slowly).
    customer: Option<Customer>,
    now: chrono::DateTime<chrono::Utc>,
    /// The schema check's outcome and, in a plain store, the index entries and the stored
    /// record, both made with id 0 for [`with_id`] and [`codec::with_record_id`] to stamp.
    checked: Result<Option<(Entries, Vec<u8>)>>,
    /// The history field changes ([`history::inserted_as_stored`]: as the entry reads back)
    /// if there are subscribers, who get the changes as made: the history entry holds the
    /// record instead, so nothing else needs them.
    fields: Result<Option<Vec<FieldChange>>>,
}

impl Preparer {
    /// Does for `customer` what inserting it needs neither the tables nor its id for.
    pub(super) fn prepare(&self, customer: Customer) -> Prepared {
        let fields = if self.publishing {
            history::inserted_as_stored(&customer).map(Some)
        } else {
            Ok(None)
        };
        let (now, checked) = (self.now, self.schema.check(&customer.attributes));
        if checked.is_err() || !self.plain {
            return Prepared {
                customer: Some(customer),
                now,
                checked: checked.map(|()| None),
                fields,
            };
        }
        let rec = Record {
            id: CustomerId::from_u64(0),
            created_at: now,
            updated_at: now,
            revision: 1,
            customer,
        };
        let entries = index::entries(&rec, &self.schema);
        let checked = codec::encode(&rec).map(|bytes| Some((entries, bytes)));
        Prepared {
            customer: self.suppressing.then_some(rec.customer),
            now,
            checked,
            fields,
        }
    }
}

/// `entries`, made for id 0, for customer `id`: a posting key ends with the id, and with one
/// id for all their order is the same.
fn with_id(mut entries: Entries, id: CustomerId) -> Entries {
    for k in &mut entries.postings {
        if let Some(at) = k.last_chunk_mut::<8>() {
            *at = id.as_u64().to_be_bytes();
        }
    }
    entries
}

/// Stages the posting changes from `old` to `new`: both sorted, so they are walked together and
/// only what differs is staged.
fn stage_posting_diff(out: &mut PostingLog, old: &[Vec<u8>], new: &[Vec<u8>]) {
    let (mut at_old, mut at_new) = (0, 0);
    loop {
        match (old.get(at_old), new.get(at_new)) {
            (Some(gone), Some(kept)) if gone == kept => {
                at_old += 1;
                at_new += 1;
            }
            (Some(gone), next) if next.is_none_or(|n| gone < n) => {
                out.push(gone, false);
                at_old += 1;
            }
            (_, Some(added)) => {
                out.push(added, true);
                at_new += 1;
            }
            _ => break,
        }
    }
}

/// Stages, per index tag, whether a customer whose postings go from `old` to `new` (both
/// sorted, so grouped by tag) gained or lost every value of it.
fn stage_presence(out: &mut BTreeMap<u16, i64>, old: &[Vec<u8>], new: &[Vec<u8>]) {
    let tags = |p: &[Vec<u8>]| -> Vec<u16> {
        let mut t: Vec<u16> = p.iter().filter_map(|k| posting_tag(k)).collect();
        t.dedup();
        t
    };
    let (old, new) = (tags(old), tags(new));
    for t in &old {
        if !new.contains(t) {
            *out.entry(*t).or_default() -= 1;
        }
    }
    for t in &new {
        if !old.contains(t) {
            *out.entry(*t).or_default() += 1;
        }
    }
}

/// The index tag a posting key starts with.
pub(crate) fn posting_tag(k: &[u8]) -> Option<u16> {
    k.first_chunk::<2>().map(|t| u16::from_be_bytes(*t))
}

/// The index value (`tag ++ value`) of a posting key: the key without its id.
pub(crate) fn posting_value(k: &[u8]) -> &[u8] {
    &k[..k.len().saturating_sub(8)]
}

/// Applies the staged posting changes `log` (see [`super::postings::apply`] for
/// `unwritten`), handing each change in a counted value's count to `deltas`. Takes the
/// transaction alone, not the [`WriteTxn`], so that a large flush can run it on another
/// thread.
fn write_postings(
    txn: &redb::WriteTransaction,
    mut log: PostingLog,
    unwritten: u64,
    deltas: &mut dyn FnMut(Delta),
) -> Result<()> {
    let mut postings = txn.open_table(POSTINGS).map_err(storage)?;
    super::postings::apply(
        &mut postings,
        log.settled(),
        unwritten,
        &mut |value, step, new| {
            if posting_tag(value).is_some_and(index::counts_values) {
                deltas((value.to_vec(), step, new));
            }
            Ok(())
        },
    )
}

/// A change in a value count: the counted key (`tag ++ value`, or the tag alone for the
/// customers with any value of it), by how much, and whether the value is new (no count to
/// read).
type Delta = (Vec<u8>, i64, bool);

/// Writes the value-count changes `deltas`, at most one per key.
fn write_counts(txn: &redb::WriteTransaction, deltas: impl Iterator<Item = Delta>) -> Result<()> {
    let mut deltas = deltas.peekable();
    if deltas.peek().is_none() {
        return Ok(());
    }
    let mut counts = txn.open_table(Table::ValueCounts.def()).map_err(storage)?;
    for (value, delta, new) in deltas {
        add_count(&mut counts, &value, delta, new)?;
    }
    Ok(())
}

/// Adds `delta` to the count of `value`, removing the entry when it reaches zero. A `new`
/// value (one that had no posting) has no count to read.
fn add_count(
    counts: &mut redb::Table<&'static [u8], &'static [u8]>,
    value: &[u8],
    delta: i64,
    new: bool,
) -> Result<()> {
    let old = if new {
        0
    } else {
        match counts.get(value).map_err(storage)? {
            Some(v) => decode_count(v.value())?,
            None => 0,
        }
    };
    let new = old
        .checked_add_signed(delta)
        .ok_or_else(|| crate::Error::corrupted("value counts", "a count would fall below zero"))?;
    if new == 0 {
        counts.remove(value).map_err(storage)?;
        Ok(())
    } else {
        put_count(counts, value, new)
    }
}

/// A stored count.
pub(crate) fn decode_count(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| crate::Error::corrupted("value count", "not 8 bytes"))
}

/// Rewrites `counts` from `postings` (for a store made before counts were kept). Damaged
/// runs are left out, for `verify()` to report: a recount runs when a store is opened, which
/// damage to derived data must not stop.
pub(crate) fn rebuild_value_counts(
    postings: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    counts: &mut redb::Table<&'static [u8], &'static [u8]>,
) -> Result<()> {
    counts.retain(|_, _| false).map_err(storage)?;
    let mut presence: BTreeMap<u16, std::collections::HashSet<u64>> = BTreeMap::new();
    let mut current: Option<(Vec<u8>, u64)> = None;
    super::postings::audit(
        postings,
        &mut |key| {
            let Some((tag, id)) = index::split_posting(key) else {
                return Ok(());
            };
            presence.entry(tag).or_default().insert(id);
            if !index::counts_values(tag) {
                return Ok(());
            }
            let value = posting_value(key);
            match &mut current {
                Some((v, n)) if v.as_slice() == value => *n += 1,
                _ => {
                    if let Some(done) = current.take() {
                        put_count(counts, &done.0, done.1)?;
                    }
                    current = Some((value.to_vec(), 1));
                }
            }
            Ok(())
        },
        &mut |_, _| {},
    )?;
    if let Some(done) = current {
        put_count(counts, &done.0, done.1)?;
    }
    for (tag, ids) in presence {
        put_count(counts, &tag.to_be_bytes(), ids.len() as u64)?;
    }
    Ok(())
}

fn put_count(
    counts: &mut redb::Table<&'static [u8], &'static [u8]>,
    value: &[u8],
    n: u64,
) -> Result<()> {
    counts
        .insert(value, n.to_be_bytes().as_slice())
        .map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PostingLog;

    #[test]
    fn the_last_change_to_a_key_stands_in_key_order() {
        let mut log = PostingLog::default();
        log.push(b"k1", true);
        log.push(b"k0", true);
        log.push(b"k1", false);
        log.push(b"k2", false);
        log.push(b"k2", true);
        log.push(b"k0", true);
        let settled: Vec<(Vec<u8>, bool)> = log.settled().map(|(k, i)| (k.to_vec(), i)).collect();
        assert_eq!(
            settled,
            [
                (b"k0".to_vec(), true),
                (b"k1".to_vec(), false),
                (b"k2".to_vec(), true)
            ]
        );
    }
}
