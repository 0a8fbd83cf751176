//! The store: a redb database holding customers and their indexes, with transactions.
//!
//! redb is private to this module: no redb type appears in the public API, and its errors reach
//! callers only as the `source()` of an [`ErrorKind::Storage`] error.

mod backup;
mod bulk;
pub(crate) mod codec;
mod consent;
pub(crate) mod crypt;
mod dedup;
mod history;
mod key_cache;
mod postings;
mod privacy;
mod read;
mod segments;
mod subscribe;
mod timeline;
mod verify;
mod write;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::crypt::KeyProvider;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{CountryCode, Currency, Rates, Schema};

pub use backup::{BACKUP_FORMAT_VERSION, BackupReport, CatchUp, RestoreReport};
pub use dedup::{
    Checked, Duplicate, DuplicateCluster, MergeId, MergePlan, OnDuplicate, ReviewItem,
    ReviewStatus, Survivorship,
};
pub use history::{Change, FieldChange, Json, Operation};
pub use privacy::{
    AccessAction, AccessEntry, Inactive, RetentionPolicy, RetentionReport, Suppress, Tombstone,
};
pub use read::{ChangeFeed, Customers, Read, ReadTxn};
pub(crate) use read::{Ids, counted, for_each_id};
pub use segments::SegmentChanges;
pub use subscribe::{Notification, Subscription};
pub(crate) use timeline::stored_metrics;
pub use timeline::{ActivityQuery, Compaction};
pub use verify::{Problem, VerifyReport};
pub use write::{UniqueKey, Upsert, WriteTxn};

/// Records by id: `u64 -> codec(Record)`.
pub(crate) const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("customers");
pub(crate) use postings::POSTINGS;
/// Unique index entries: `tag ++ value -> id`.
pub(crate) const UNIQUES: TableDefinition<&[u8], u64> = TableDefinition::new("uniques");
/// Store-wide values: format version, next id, schema.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Byte-keyed tables beside the customers (keys are big-endian so they sort numerically).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `customer ++ at ++ activity id -> codec(StoredActivity)`.
    Activities,
    /// `activity id -> activity key`.
    ActivityIds,
    /// `at ++ activity id -> customer`.
    ActivityTime,
    /// `customer -> codec(MetricState)`, for customers with activities.
    Metrics,
    /// `seq -> codec(history entry)`: the change feed.
    History,
    /// `customer ++ seq -> ()`.
    CustomerHistory,
    /// `a ++ b` (a < b) `-> codec(ReviewEntry)`: possible duplicates and decisions.
    Review,
    /// `merged-away id -> survivor id`.
    Aliases,
    /// `merge id -> codec(MergeLog)`: what a merge changed, for unmerge.
    Merges,
    /// `name -> codec(Segment)`: saved segments.
    Segments,
    /// `customer -> codec(Tombstone)`: erased customers, without personal data.
    Tombstones,
    /// `HMAC(key, "email:..." or "phone:...") -> ()`: values erased with suppression.
    Suppressed,
    /// `entry number -> codec(AccessEntry)`: subject exports and erasures, who and when.
    AccessLog,
    /// `tag ++ value -> u64 (big-endian)`: how many postings each index value has, kept in the
    /// transaction that changes the postings. The planner's statistics and count-only
    /// group-bys read it instead of the postings.
    ValueCounts,
}

impl Table {
    pub(crate) const ALL: [Table; 14] = [
        Table::Activities,
        Table::ActivityIds,
        Table::ActivityTime,
        Table::Metrics,
        Table::History,
        Table::CustomerHistory,
        Table::Review,
        Table::Aliases,
        Table::Merges,
        Table::Segments,
        Table::Tombstones,
        Table::Suppressed,
        Table::AccessLog,
        Table::ValueCounts,
    ];

    pub(crate) fn def(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }

    /// The table's name in the database file (and in backups).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Table::Activities => "activities",
            Table::ActivityIds => "activity_ids",
            Table::ActivityTime => "activity_time",
            Table::Metrics => "metrics",
            Table::History => "history",
            Table::CustomerHistory => "customer_history",
            Table::Review => "review",
            Table::Aliases => "aliases",
            Table::Merges => "merges",
            Table::Segments => "segments",
            Table::Tombstones => "tombstones",
            Table::Suppressed => "suppressed",
            Table::AccessLog => "access_log",
            Table::ValueCounts => "value_counts",
        }
    }
}

pub(crate) const META_FORMAT: &str = "format_version";

/// The version of a store file's table layout, kept in its meta table and checked when it is
/// opened (the stored values have their own, [`crate::FORMAT_VERSION`]). 2 since the
/// postings are runs of ids per index value; 3 since an insert's history entry holds the
/// inserted record instead of its fields. An older store is moved to 3 when opened (a store of
/// 2 needs nothing moved: its history entries still read), and a build that knows only an
/// older version refuses a newer store rather than misread it.
pub const STORE_FORMAT_VERSION: u8 = 3;
pub(crate) const META_NEXT_SEQ: &str = "next_seq";
pub(crate) const META_NEXT_ACTIVITY: &str = "next_activity";
pub(crate) const META_NEXT_ID: &str = "next_id";
pub(crate) const META_SCHEMA: &str = "schema";
/// Holds [`VALUE_COUNTS_RULES`] once [`Table::ValueCounts`] agrees with the postings under
/// those rules. A store made before counts were kept, or under other rules, has them rebuilt
/// on open.
pub(crate) const META_VALUE_COUNTS: &str = "value_counts";
/// Which indexes the value counts cover: 2 since the nearly-distinct ones are left out
/// ([`crate::index::counts_values`]), 3 since phone numbers are among them; stores that
/// counted every index held an empty value.
pub(crate) const VALUE_COUNTS_RULES: u8 = 3;
/// Meta key present once the match-key index ([`crate::Index::MatchKey`]) holds every
/// customer's entries. A store written before that index existed lacks it, and gets the index
/// built when next opened.
pub(crate) const META_MATCH_KEYS: &str = "match_key_index";
/// Meta key present once the consent index ([`crate::Index::Consent`]) holds every customer's
/// entries; a store written before that index existed gets it built when next opened.
pub(crate) const META_CONSENT_INDEX: &str = "consent_index";

/// Wraps a redb error as a storage error, keeping it as the source.
pub(crate) fn storage(e: impl Into<redb::Error>) -> Error {
    Error::with_source(ErrorKind::Storage, e.into())
}

/// Reads a little-endian `u64` counter from the meta table (`None` if absent).
pub(crate) fn read_counter(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<Option<u64>> {
    match meta.get(key).map_err(storage)? {
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| Error::corrupted("counter", format!("{key} is not 8 bytes")))?;
            Ok(Some(u64::from_le_bytes(bytes)))
        }
        None => Ok(None),
    }
}

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `commit` returns once the transaction is on disk (fsync): it survives a crash or power
    /// loss.
    #[default]
    Immediate,
    /// `commit` returns without syncing: the transaction is visible to readers at once and
    /// becomes durable with the next immediate commit. A crash before then loses it, never
    /// half of it. For bulk loads.
    None,
}

impl Durability {
    fn to_redb(self) -> redb::Durability {
        match self {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::None => redb::Durability::None,
        }
    }
}

/// How long history is kept in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HistoryRetention {
    /// Every change is kept (the default).
    #[default]
    KeepAll,
    /// [`Store::apply_history_retention`] compacts changes older than this into snapshots.
    CompactOlderThan(chrono::Duration),
}

/// A source of "now" for created and updated timestamps.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// `clock`, its times cut to the microsecond: the store keeps instants to the microsecond, so
/// a time kept finer in memory (a change handed to subscribers, a record returned by
/// `update`) would differ from the same time read back.
fn to_the_microsecond(clock: Clock) -> Clock {
    Arc::new(move || {
        let t = clock();
        t.with_nanosecond(t.nanosecond() / 1_000 * 1_000)
            .unwrap_or(t)
    })
}

pub(crate) struct Config {
    pub(crate) default_region: Option<CountryCode>,
    pub(crate) durability: Durability,
    pub(crate) clock: Clock,
    pub(crate) rates: Arc<Rates>,
    pub(crate) hub: Arc<subscribe::Hub>,
    pub(crate) retention: HistoryRetention,
    pub(crate) suppression_key: Option<Arc<[u8]>>,
    /// The encryption of an encrypted store (set when it is opened).
    pub(crate) crypt: Option<Arc<crypt::Crypt>>,
    /// How many unwrapped data keys an encrypted store caches.
    key_cache: usize,
}

/// An embedded customer database.
///
/// Cheap to clone (clones share one database) and safe to share across threads: any number of
/// [`ReadTxn`]s run alongside one [`WriteTxn`] at a time; a second writer waits for the first.
///
/// ```
/// use customerdb::{Customer, Read, Store};
/// let store = Store::in_memory()?;
/// let mut tx = store.begin_write()?;
/// let id = tx.insert(Customer::builder().name("Ada Lovelace").email("ADA@example.com"))?;
/// tx.commit()?;
/// let tx = store.begin_read()?;
/// let ada = tx.find_by_email("ada@EXAMPLE.com")?.expect("stored");
/// assert_eq!(ada.id, id);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// The database and its settings, shared by every clone of a [`Store`] and every transaction,
/// so a transaction keeps the database open even if the last `Store` is dropped first.
pub(crate) struct Inner {
    db: redb::Database,
    /// The file, for a file-backed store (compaction rewrites it).
    path: Option<std::path::PathBuf>,
    cache_size: Option<usize>,
    config: Config,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("default_region", &self.inner.config.default_region)
            .field("durability", &self.inner.config.durability)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating it if it does not exist.
    pub fn create(path: impl AsRef<Path>) -> Result<Store> {
        Store::builder().create(path)
    }

    /// Opens an existing store.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] if there is no store at `path` or it cannot be read;
    /// [`ErrorKind::FormatVersion`] if it was written by an incompatible version.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::builder().open(path)
    }

    /// A store in memory, gone when the last clone is dropped. For tests and examples.
    pub fn in_memory() -> Result<Store> {
        Store::builder().in_memory()
    }

    /// A builder for a store with non-default settings.
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// Begins a read transaction: a consistent snapshot that later commits do not change.
    pub fn begin_read(&self) -> Result<ReadTxn> {
        // The key cache's epoch is taken before the snapshot begins (see `key_cache`).
        let crypt = self
            .inner
            .config
            .crypt
            .as_ref()
            .map(|c| Arc::new(c.for_snapshot()));
        let txn = self.inner.db.begin_read().map_err(storage)?;
        Ok(ReadTxn::new(
            txn,
            &self.inner.config,
            crypt,
            self.inner.clone(),
        ))
    }

    /// Begins the write transaction, waiting while another is open. Dropping it without
    /// [`WriteTxn::commit`] rolls it back.
    pub fn begin_write(&self) -> Result<WriteTxn> {
        let mut txn = self.inner.db.begin_write().map_err(storage)?;
        txn.set_durability(self.inner.config.durability.to_redb())
            .map_err(storage)?;
        WriteTxn::new(txn, &self.inner.config, self.inner.clone())
    }

    /// Begins the write transaction on behalf of `actor` (a user, a process): every change it
    /// makes is recorded in history under that name.
    pub fn begin_write_as(&self, actor: &str) -> Result<WriteTxn> {
        let mut tx = self.begin_write()?;
        tx.set_actor(actor)?;
        Ok(tx)
    }

    /// Subscribes to committed changes. Each is delivered after its transaction commits, never
    /// for one rolled back. At most `capacity` undelivered changes are queued; beyond that the
    /// subscriber gets [`Notification::Lagged`] and reads what it missed from the change feed,
    /// so a slow subscriber neither blocks writers nor grows memory. A transaction begun before
    /// the first subscription publishes nothing.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        self.inner.config.hub.subscribe(capacity)
    }

    /// Applies the configured [`HistoryRetention`] as of the store's clock, in a transaction of
    /// its own: `None` if history is kept in full. Idempotent; run it from a maintenance job.
    pub fn apply_history_retention(&self) -> Result<Option<Compaction>> {
        match self.inner.config.retention {
            HistoryRetention::KeepAll => Ok(None),
            HistoryRetention::CompactOlderThan(age) => {
                let horizon = (self.inner.config.clock)() - age;
                self.compact_history(horizon).map(Some)
            }
        }
    }

    /// Rewrites the database file holding only live data: every table is copied into a new
    /// file that then replaces the old one, so bytes that freed pages still held (erased
    /// customers, overwritten values) are gone from the file, which also shrinks. Needs the
    /// only handle of the store (no clones, no open transactions). An in-memory store is
    /// compacted in place.
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] if the store is shared or the engine fails; [`ErrorKind::Io`] if
    /// the new file cannot replace the old (the old one is then still in use, unchanged).
    pub fn compact(&mut self) -> Result<()> {
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| {
            Error::with_source(
                ErrorKind::Storage,
                "the store is shared: compaction needs its only handle",
            )
        })?;
        let Some(path) = inner.path.clone() else {
            inner.db.compact().map_err(storage)?;
            return Ok(());
        };
        let mut tmp = path.clone().into_os_string();
        tmp.push(".compacting");
        let tmp = std::path::PathBuf::from(tmp);
        let cache = inner.cache_size;
        let builder = || {
            let mut b = redb::Database::builder();
            if let Some(bytes) = cache {
                b.set_cache_size(bytes);
            }
            b
        };
        {
            let fresh = builder().create(&tmp).map_err(storage)?;
            copy_all(&inner.db, &fresh)?;
        }
        std::fs::rename(&tmp, &path)?;
        inner.db = builder().open(&path).map_err(storage)?;
        Ok(())
    }

    /// Compacts history older than `before` (see [`WriteTxn::compact_history`]) in a
    /// transaction of its own.
    pub fn compact_history(&self, before: DateTime<Utc>) -> Result<Compaction> {
        let mut tx = self.begin_write()?;
        let done = tx.compact_history(before)?;
        tx.commit()?;
        Ok(done)
    }

    /// Checks every record against every index, in both directions, on a snapshot; in an
    /// encrypted store also lists the keys not wrapped under the current master key
    /// ([`VerifyReport::keys_not_current`]).
    pub fn verify(&self) -> Result<VerifyReport> {
        let read = self.begin_read()?;
        let mut report = verify::verify(&read, &self.inner.config.rates)?;
        if let Some(c) = &self.inner.config.crypt {
            (report.keys_not_current, report.blind_key_not_current) =
                crypt::keys_not_current(c, &read)?;
        }
        Ok(report)
    }

    fn from_db(
        db: redb::Database,
        mut config: Config,
        keys: Option<Arc<dyn KeyProvider>>,
        path: Option<std::path::PathBuf>,
        cache_size: Option<usize>,
    ) -> Result<Store> {
        config.crypt = initialise(&db, keys, config.key_cache)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                cache_size,
                config,
            }),
        })
    }
}

/// Creates missing tables in a new store; checks the format version of an existing one; sets
/// up or checks its encryption ([`crypt::initialise`]).
fn initialise(
    db: &redb::Database,
    keys: Option<Arc<dyn KeyProvider>>,
    key_cache: usize,
) -> Result<Option<Arc<crypt::Crypt>>> {
    let txn = db.begin_write().map_err(storage)?;
    let crypt;
    {
        txn.open_table(CUSTOMERS).map_err(storage)?;
        txn.open_table(crypt::CUSTOMER_KEYS).map_err(storage)?;
        txn.open_table(POSTINGS).map_err(storage)?;
        txn.open_table(UNIQUES).map_err(storage)?;
        for t in Table::ALL {
            txn.open_table(t.def()).map_err(storage)?;
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        let found = meta
            .get(META_FORMAT)
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        crypt = crypt::initialise(&mut meta, keys, found.is_none(), key_cache)?;
        match found.as_deref() {
            None => {
                meta.insert(META_FORMAT, [STORE_FORMAT_VERSION].as_slice())
                    .map_err(storage)?;
                meta.insert(META_NEXT_ID, 1u64.to_le_bytes().as_slice())
                    .map_err(storage)?;
                meta.insert(META_SCHEMA, codec::encode(&Schema::default())?.as_slice())
                    .map_err(storage)?;
                meta.insert(META_VALUE_COUNTS, [VALUE_COUNTS_RULES].as_slice())
                    .map_err(storage)?;
                meta.insert(META_MATCH_KEYS, [1u8].as_slice())
                    .map_err(storage)?;
                meta.insert(META_CONSENT_INDEX, [1u8].as_slice())
                    .map_err(storage)?;
            }
            Some([v]) if *v == STORE_FORMAT_VERSION => {}
            // Version 1 kept a key per posting: move them into runs first, since the index
            // builds below write runs. Version 2 differs only in what new history entries
            // may hold.
            Some([v @ (1 | 2)]) => {
                if *v == 1 {
                    postings::migrate(&txn)?;
                }
                meta.insert(META_FORMAT, [STORE_FORMAT_VERSION].as_slice())
                    .map_err(storage)?;
            }
            Some([v]) => {
                return Err(Error::new(ErrorKind::FormatVersion {
                    found: *v,
                    supported: STORE_FORMAT_VERSION,
                }));
            }
            Some(_) => return Err(Error::corrupted("format version", "not one byte")),
        }
        let mut recount = meta
            .get(META_VALUE_COUNTS)
            .map_err(storage)?
            .is_none_or(|v| v.value() != [VALUE_COUNTS_RULES]);
        if meta.get(META_MATCH_KEYS).map_err(storage)?.is_none() {
            build_match_keys(&txn)?;
            meta.insert(META_MATCH_KEYS, [1u8].as_slice())
                .map_err(storage)?;
            // The build wrote postings directly, without counting them.
            recount = true;
        }
        if meta.get(META_CONSENT_INDEX).map_err(storage)?.is_none() {
            build_postings(&txn, crypt.as_deref(), crate::index::consent_postings)?;
            meta.insert(META_CONSENT_INDEX, [1u8].as_slice())
                .map_err(storage)?;
            recount = true;
        }
        if recount {
            let postings = txn.open_table(POSTINGS).map_err(storage)?;
            let mut counts = txn.open_table(Table::ValueCounts.def()).map_err(storage)?;
            write::rebuild_value_counts(&postings, &mut counts)?;
            meta.insert(META_VALUE_COUNTS, [VALUE_COUNTS_RULES].as_slice())
                .map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)?;
    Ok(crypt)
}

/// Adds every stored customer's match-key postings ([`crate::Index::MatchKey`]), for a store
/// written before that index existed.
fn build_match_keys(txn: &redb::WriteTransaction) -> Result<()> {
    build_postings(txn, None, crate::index::match_key_postings)
}

/// Adds every stored customer's postings of one index that `add` computes from the record, for
/// a store written before that index existed; records are opened with `crypt` in an encrypted
/// store. Postings are written a batch of customers at a time, sorted, so that the build costs
/// about what loading the index with the customers would.
fn build_postings(
    txn: &redb::WriteTransaction,
    crypt: Option<&crypt::Crypt>,
    add: fn(u64, &crate::model::Customer, &mut Vec<Vec<u8>>),
) -> Result<()> {
    const BATCH: usize = 50_000;
    let customers = txn.open_table(CUSTOMERS).map_err(storage)?;
    let data_keys = txn.open_table(crypt::CUSTOMER_KEYS).map_err(storage)?;
    let mut postings = txn.open_table(POSTINGS).map_err(storage)?;
    let mut keys = Vec::new();
    let mut write = |keys: &mut Vec<Vec<u8>>| -> Result<()> {
        keys.sort_unstable();
        keys.dedup();
        postings::insert_sorted(&mut postings, keys)?;
        keys.clear();
        Ok(())
    };
    for (n, item) in customers.iter().map_err(storage)?.enumerate() {
        let (k, v) = item.map_err(storage)?;
        // A record that does not decode has no entries to build; verify() reports it.
        let Ok(rec) = crypt::decode_stored(crypt, Some(&data_keys), k.value(), v.value()) else {
            continue;
        };
        add(rec.id.as_u64(), &rec.customer, &mut keys);
        if (n + 1) % BATCH == 0 {
            write(&mut keys)?;
        }
    }
    write(&mut keys)
}

/// Copies every table of `from` into the empty database `to`, in one durable transaction.
fn copy_all(from: &redb::Database, to: &redb::Database) -> Result<()> {
    fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
        r: &redb::ReadTransaction,
        w: &redb::WriteTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<()> {
        let src = r.open_table(def).map_err(storage)?;
        let mut dst = w.open_table(def).map_err(storage)?;
        for item in src.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            dst.insert(k.value(), v.value()).map_err(storage)?;
        }
        Ok(())
    }
    let r = from.begin_read().map_err(storage)?;
    let w = to.begin_write().map_err(storage)?;
    copy(&r, &w, CUSTOMERS)?;
    copy(&r, &w, POSTINGS)?;
    copy(&r, &w, UNIQUES)?;
    copy(&r, &w, META)?;
    copy(&r, &w, crypt::CUSTOMER_KEYS)?;
    for t in Table::ALL {
        copy(&r, &w, t.def())?;
    }
    w.commit().map_err(storage)
}

/// Settings for opening a [`Store`].
///
/// ```
/// use customerdb::{Durability, Store};
/// let store = Store::builder()
///     .default_region("GB")
///     .durability(Durability::Immediate)
///     .cache_size(64 << 20)
///     .in_memory()?;
/// # Ok::<(), customerdb::Error>(())
/// ```
#[must_use]
pub struct StoreBuilder {
    cache_size: Option<usize>,
    default_region: Option<String>,
    durability: Durability,
    clock: Option<Clock>,
    base_currency: Option<String>,
    rates: Vec<(String, rust_decimal::Decimal)>,
    retention: HistoryRetention,
    suppression_key: Option<Vec<u8>>,
    keys: Option<Arc<dyn KeyProvider>>,
    key_cache: usize,
    data_keys_from: Option<Store>,
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            cache_size: None,
            default_region: None,
            durability: Durability::Immediate,
            clock: None,
            base_currency: None,
            rates: Vec::new(),
            retention: HistoryRetention::KeepAll,
            suppression_key: None,
            keys: None,
            key_cache: key_cache::DEFAULT_CAPACITY,
            data_keys_from: None,
        }
    }
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("cache_size", &self.cache_size)
            .field("default_region", &self.default_region)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl StoreBuilder {
    /// Bytes of page cache (redb's default is 1 GiB).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_size = Some(bytes);
        self
    }

    /// The region (ISO 3166-1 alpha-2) for phone numbers written in national form when the
    /// record has no address country and no phone region of its own.
    pub fn default_region(mut self, region: impl Into<String>) -> Self {
        self.default_region = Some(region.into());
        self
    }

    /// The durability of commits unless a transaction says otherwise.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Where created and updated timestamps come from (default: the system clock). Its times
    /// are kept to the microsecond, as the store keeps every instant.
    pub fn clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The secret key of erasure suppression lists ([`crate::Suppress::Yes`]): a keyed hash of
    /// each suppressed email and phone is kept, never the value. Keep the key outside the
    /// database file (a backup of the file alone cannot be searched for a known email).
    pub fn suppression_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.suppression_key = Some(key.into());
        self
    }

    /// Encrypts the store at rest with master keys from `keys` (see [`crate::crypt`]).
    ///
    /// Chosen when the store is created: a store created with keys is encrypted for good and
    /// opens only with a provider holding its keys ([`ErrorKind::Key`] otherwise, checked on
    /// open against a sealed known block, never found out later as garbage); a store created
    /// without them refuses them ([`crate::KeyProblem::NotEncrypted`]: encrypting an existing
    /// store means exporting and importing it).
    ///
    /// What is encrypted: each record (every field), each history entry about a customer and
    /// each merge log, sealed with XChaCha20-Poly1305 under the customer's own random data key
    /// (a merge log under the survivor's); the data keys are wrapped under the current master
    /// key and are never in a backup. The indexes of personal values (email, external id,
    /// phone, names, phonetic code, postcode, locality, birth date, match keys) hold keyed
    /// hashes, so lookups by equality, uniqueness and duplicate blocking work, while range and
    /// prefix scans of them are refused with [`ErrorKind::Blinded`]. Country, tags, stage, owner, dates, metrics, indexed custom
    /// attributes and activities are not encrypted. Master keys rotate with
    /// [`Store::rotate_keys`].
    ///
    /// ```
    /// use customerdb::crypt::{Keys, MasterKey};
    /// use customerdb::{Customer, Read, Store};
    /// let keys = Keys::new(1, MasterKey::from_bytes(&[7; 32])?);
    /// let store = Store::builder().encryption(keys).in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// tx.insert(Customer::builder().name("Ada Lovelace").email("ada@example.com"))?;
    /// tx.commit()?;
    /// assert!(store.begin_read()?.find_by_email("ADA@example.com")?.is_some());
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    pub fn encryption(mut self, keys: impl KeyProvider + 'static) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// How many unwrapped data keys an encrypted store keeps in memory (default 16,384, about
    /// 3 MB; 0 turns the cache off), so that reading a customer again does not unwrap the
    /// customer's data key again. Erasure, anonymisation and key rotation drop a customer's
    /// key from the cache in the transaction that destroys or re-wraps it, and no reader gets
    /// it from the cache after that commit, whatever snapshot it reads (`ARCHITECTURE.md`,
    /// "Encryption at rest"). A plain store ignores it.
    pub fn data_key_cache(mut self, entries: usize) -> Self {
        self.key_cache = entries;
        self
    }

    /// Where [`StoreBuilder::restore_from`] takes the data keys of an encrypted backup from
    /// (backups hold none): `live`, the store the backup was taken from. Customers erased in
    /// `live` since the backup was taken have no key there any more, so their data in the
    /// backup is unreadable; the restore drops it and leaves a tombstone.
    pub fn data_keys_from(mut self, live: &Store) -> Self {
        self.data_keys_from = Some(live.clone());
        self
    }

    /// How long history is kept in full (see [`Store::apply_history_retention`]).
    pub fn history_retention(mut self, retention: HistoryRetention) -> Self {
        self.retention = retention;
        self
    }

    /// The currency [`crate::Metrics::total_spend`] is counted in (ISO 4217).
    pub fn base_currency(mut self, currency: &str) -> Self {
        self.base_currency = Some(currency.to_owned());
        self
    }

    /// How many whole units of the base currency one whole unit of `currency` is worth, for
    /// [`crate::Metrics::total_spend`]. Rates are configuration, not data: reopening with other
    /// rates leaves stored totals as they were until the customers' metrics are recomputed
    /// ([`WriteTxn::recompute_metrics`]); `verify()` reports the difference meanwhile.
    pub fn exchange_rate(mut self, currency: &str, rate: rust_decimal::Decimal) -> Self {
        self.rates.push((currency.to_owned(), rate));
        self
    }

    #[allow(clippy::type_complexity)]
    fn config(self) -> Result<(redb::Builder, Config, Option<Arc<dyn KeyProvider>>)> {
        let default_region = self
            .default_region
            .as_deref()
            .map(|r| CountryCode::parse(r).map_err(|e| e.within("country", "default_region")))
            .transpose()?;
        let base = self
            .base_currency
            .as_deref()
            .map(|c| Currency::parse(c).map_err(|e| e.within("currency", "base_currency")))
            .transpose()?;
        let mut rates = Rates {
            base,
            rates: std::collections::BTreeMap::new(),
        };
        for (cur, rate) in &self.rates {
            let c = Currency::parse(cur).map_err(|e| e.within("currency", "exchange_rate"))?;
            rates.rates.insert(c, *rate);
        }
        let mut builder = redb::Database::builder();
        if let Some(bytes) = self.cache_size {
            builder.set_cache_size(bytes);
        }
        let config = Config {
            default_region,
            durability: self.durability,
            clock: to_the_microsecond(self.clock.unwrap_or_else(|| Arc::new(Utc::now))),
            rates: Arc::new(rates),
            hub: Arc::new(subscribe::Hub::default()),
            retention: self.retention,
            suppression_key: self.suppression_key.map(Arc::from),
            crypt: None,
            key_cache: self.key_cache,
        };
        Ok((builder, config, self.keys))
    }

    /// Opens the store at `path`, creating it if needed.
    pub fn create(self, path: impl AsRef<Path>) -> Result<Store> {
        let cache = self.cache_size;
        let (builder, config, keys) = self.config()?;
        let db = builder.create(path.as_ref()).map_err(storage)?;
        Store::from_db(db, config, keys, Some(path.as_ref().to_owned()), cache)
    }

    /// Opens an existing store.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Store> {
        let cache = self.cache_size;
        let (builder, config, keys) = self.config()?;
        let db = builder.open(path.as_ref()).map_err(storage)?;
        Store::from_db(db, config, keys, Some(path.as_ref().to_owned()), cache)
    }

    /// A store in memory.
    pub fn in_memory(self) -> Result<Store> {
        let (builder, config, keys) = self.config()?;
        let db = builder
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Store::from_db(db, config, keys, None, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Customer, Read};

    /// A store at `path` holding `customer`, made to look written before the index of `tag`
    /// existed (no postings of it, no meta `marker`), reopened, and verified clean.
    fn reopened_without(
        path: &std::path::Path,
        customer: impl crate::IntoCustomer,
        tag: u16,
        marker: &str,
    ) -> Store {
        {
            let store = Store::create(path).unwrap();
            let mut tx = store.begin_write().unwrap();
            tx.insert(customer).unwrap();
            tx.commit().unwrap();
        }
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut postings = txn.open_table(POSTINGS).unwrap();
            let (start, end) = (tag.to_be_bytes(), (tag + 1).to_be_bytes());
            postings
                .retain_in(start.as_slice()..end.as_slice(), |_, _| false)
                .unwrap();
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(marker).unwrap();
        }
        txn.commit().unwrap();
        drop(db);
        let store = Store::open(path).unwrap();
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store
    }

    /// A store written before the match-key index existed (no postings of it, no marker) gets
    /// the index built when opened, and then verifies clean and matches by it.
    #[test]
    fn match_key_index_is_built_for_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.cdb");
        let ada = || {
            Customer::builder()
                .name("Ada Lovelace")
                .birth_date(chrono::NaiveDate::from_ymd_opt(1815, 12, 10).unwrap())
                .build()
                .unwrap()
        };
        let store = reopened_without(&path, ada(), crate::index::TAG_MATCH_KEY, META_MATCH_KEYS);
        let tx = store.begin_read().unwrap();
        assert_eq!(
            tx.ids(&crate::Index::MatchKey, &crate::Scan::eq("gf:ada|lovelace"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(tx.duplicates_of(&ada(), 0.0).unwrap().len(), 1);
    }

    /// A store written before the consent index existed gets it built when opened: it then
    /// verifies clean, and consent segments (planned on the index) find the customer.
    #[test]
    fn consent_index_is_built_for_an_older_store() {
        use crate::query::{Filter, Query};
        use crate::{Channel, Consent, ConsentStatus};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.cdb");
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let granted = Consent::new("Marketing", Channel::Any, ConsentStatus::Granted, at, "web");
        let ada = Customer::builder().name("Ada Lovelace").consent(granted);
        let store = reopened_without(&path, ada, crate::index::TAG_CONSENT, META_CONSENT_INDEX);
        let tx = store.begin_read().unwrap();
        let q = Query::filter(Filter::consent(Channel::Email, "marketing"))
            .at(at + chrono::TimeDelta::days(1));
        assert_eq!(q.count(&tx).unwrap(), 1);
        assert!(
            q.explain(&tx)
                .unwrap()
                .to_string()
                .contains("index consent")
        );
    }
}
