//! Online backup, restore into a new store, and catch-up from the change feed.
//!
//! A backup is one read transaction streamed to a file: a consistent snapshot that writers
//! never wait for, at the change-feed sequence number the snapshot holds. The file format
//! (`ARCHITECTURE.md`, "Backup and restore") names each table and lists its keys and values
//! as length-prefixed bytes, so it does not depend on redb's page layout, and ends in a
//! SHA-256 checksum that restore checks before it writes anything.
//!
//! No key is in a backup: the suppression key and master keys are the host's configuration,
//! and an encrypted store's data keys (`customer_keys`) are not a backup table; restore and
//! catch-up take them from the live store.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read as _, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use sha2::{Digest, Sha256};

use super::crypt::{CUSTOMER_KEYS, Crypt, Invalidation, decode_stored};
use super::read::{Backend, ReadTxn, decode_record};
use super::{
    CUSTOMERS, META, META_NEXT_SEQ, POSTINGS, Store, StoreBuilder, Table, UNIQUES, codec,
    read_counter, storage,
};
use crate::error::{Error, ErrorKind, Result};
use crate::index;
use crate::model::{Record, Schema};

/// The first bytes of every backup file. The line feed catches a text-mode transfer.
const MAGIC: &[u8; 8] = b"CDBBKUP\n";
/// The backup file layout's version (the stored values keep the store's own format version).
/// 2 since a backup may hold history entries of store format 3 (an insert holding its
/// record), which a build that reads only 1 would restore and then fail to read; such a build
/// refuses it instead. A backup of version 1 is a backup of 2 without them, so both restore.
pub const BACKUP_FORMAT_VERSION: u8 = 2;
/// Header: magic, backup format, store format, seq, taken-at micros.
const HEADER_LEN: u64 = 8 + 1 + 1 + 8 + 8;
const CHECKSUM_LEN: u64 = 32;

/// What [`Store::backup_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The change-feed sequence number of the snapshot: the backup holds every change up to
    /// and including it, and none after. Catch-up resumes from here.
    pub seq: u64,
    /// How many customers it holds.
    pub customers: u64,
    /// How many table entries it holds (records, index entries, activities, history, ...).
    pub entries: u64,
    /// The size of the file.
    pub bytes: u64,
}

/// What [`StoreBuilder::restore_reporting`] did beyond copying the backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The customers of an encrypted backup purged from the restored store, each left as a
    /// tombstone: erased since the backup was taken (their data key is gone from the source of
    /// data keys) or anonymised since (their key there no longer opens the backed-up record).
    /// Empty for a plain backup.
    pub purged: Vec<crate::CustomerId>,
}

/// What [`Store::catch_up_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatchUp {
    /// The sequence number the store was at.
    pub from: u64,
    /// The sequence number it is at now: the source's at the start of the catch-up.
    pub to: u64,
    /// How many changes of the source's feed were applied.
    pub changes: u64,
    /// How many customers were brought up to date.
    pub customers: u64,
}

/// Receives one table entry (key and value bytes) for the backup file.
type Sink<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<()>;
/// Feeds every entry of one table to a [`Sink`].
type Entries<'a> = &'a mut dyn FnMut(Sink<'_>) -> Result<()>;

fn corrupt(why: &'static str) -> Error {
    Error::corrupted("backup file", why)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.hash.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn put_len(&mut self, n: usize) -> Result<()> {
        let n = u32::try_from(n).map_err(|_| corrupt("a key or value is over 4 GiB"))?;
        self.put(&n.to_le_bytes())
    }

    fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        self.put(&[1])?;
        self.put_len(k.len())?;
        self.put(k)?;
        self.put_len(v.len())?;
        self.put(v)
    }
}

/// The tables a backup holds, by their names in the file.
const TYPED: [&str; 4] = ["customers", "postings", "uniques", "meta"];

fn known_table(name: &str) -> bool {
    TYPED.contains(&name) || Table::ALL.iter().any(|t| t.name() == name)
}

impl ReadTxn {
    /// Writes this snapshot to a backup file at `path` (see [`Store::backup_to`]).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be written (nothing is left at `path` then);
    /// [`ErrorKind::Storage`] if the snapshot cannot be read.
    pub fn backup_to(&self, path: impl AsRef<Path>) -> Result<BackupReport> {
        let path = path.as_ref();
        let tmp = sibling(path, "partial");
        let result = self.write_backup(&tmp);
        match result {
            Ok(report) => {
                std::fs::rename(&tmp, path)?;
                Ok(report)
            }
            Err(e) => {
                // Best effort: the partial file is useless, and never looks complete.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_backup(&self, path: &Path) -> Result<BackupReport> {
        let file = File::create(path)?;
        let mut w = Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let seq = Backend::last_seq(self)?;
        let taken = Backend::now(self).timestamp_micros();
        w.put(MAGIC)?;
        w.put(&[BACKUP_FORMAT_VERSION, codec::FORMAT_VERSION])?;
        w.put(&seq.to_le_bytes())?;
        w.put(&taken.to_le_bytes())?;
        let mut total = 0u64;
        let mut section =
            |w: &mut Hashing<BufWriter<File>>, name: &str, each: Entries<'_>| -> Result<()> {
                w.put(&[1])?;
                w.put(&[name.len() as u8])?;
                w.put(name.as_bytes())?;
                let mut n = 0u64;
                each(&mut |k, v| {
                    n += 1;
                    w.entry(k, v)
                })?;
                w.put(&[0])?;
                w.put(&n.to_le_bytes())?;
                total += n;
                Ok(())
            };
        section(&mut w, "customers", &mut |f| {
            for item in self.raw_customers()?.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                f(&k.value().to_be_bytes(), v.value())?;
            }
            Ok(())
        })?;
        section(&mut w, "postings", &mut |f| {
            super::postings::for_each_stored_key(self.raw_postings()?, &mut |k| f(k, &[]))
        })?;
        section(&mut w, "uniques", &mut |f| {
            for item in self.raw_uniques()?.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                f(k.value(), &v.value().to_be_bytes())?;
            }
            Ok(())
        })?;
        section(&mut w, "meta", &mut |f| {
            for item in self.raw_meta()?.iter().map_err(storage)? {
                let (k, v) = item.map_err(storage)?;
                f(k.value().as_bytes(), v.value())?;
            }
            Ok(())
        })?;
        for t in Table::ALL {
            section(&mut w, t.name(), &mut |f| {
                for item in self.raw_table(t)?.iter().map_err(storage)? {
                    let (k, v) = item.map_err(storage)?;
                    f(k.value(), v.value())?;
                }
                Ok(())
            })?;
        }
        w.put(&[0])?;
        w.put(&total.to_le_bytes())?;
        let digest = w.hash.clone().finalize();
        w.inner.write_all(&digest)?;
        let file = w
            .inner
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok(BackupReport {
            seq,
            customers: self.raw_customers()?.len().map_err(storage)?,
            entries: total,
            bytes: w.bytes + CHECKSUM_LEN,
        })
    }
}

/// `path` with `.suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// Checks the checksum of the backup at `path`, returning the file and its length.
fn checked(path: &Path) -> Result<(File, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < HEADER_LEN + CHECKSUM_LEN {
        return Err(corrupt("too short to be a backup"));
    }
    let body = len - CHECKSUM_LEN;
    let mut hash = Sha256::new();
    let mut r = BufReader::new(&mut file).take(body);
    std::io::copy(&mut r, &mut hash)?;
    let mut stored = [0u8; 32];
    file.seek(SeekFrom::Start(body))?;
    file.read_exact(&mut stored)?;
    if hash.finalize().as_slice() != stored {
        return Err(corrupt(
            "checksum mismatch: the file is damaged or truncated",
        ));
    }
    file.seek(SeekFrom::Start(0))?;
    Ok((file, body))
}

/// Reads a backup's body, bounded by its length, refusing anything out of shape.
struct Body<R> {
    r: R,
    left: u64,
}

impl<R: std::io::Read> Body<R> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        if n > self.left {
            return Err(corrupt("a length runs past the end"));
        }
        self.left -= n;
        let mut v = vec![0; usize::try_from(n).map_err(|_| corrupt("length too large"))?];
        self.r.read_exact(&mut v)?;
        Ok(v)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.bytes(N as u64)?
            .try_into()
            .map_err(|_| corrupt("short field"))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn sized(&mut self) -> Result<Vec<u8>> {
        let n = u32::from_le_bytes(self.array()?);
        self.bytes(u64::from(n))
    }
}

fn id_of(k: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(
        k.try_into().map_err(|_| corrupt("an id is not 8 bytes"))?,
    ))
}

/// How many posting keys a restore gathers before writing them.
const RESTORE_BATCH: usize = 100_000;

/// Writes the posting keys in `keys` (a backup's, one per posting) into the store's runs, and
/// empties `keys`.
fn restore_postings(txn: &redb::WriteTransaction, keys: &mut Vec<Vec<u8>>) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    if keys.iter().any(|k| k.len() < 10) {
        return Err(corrupt("a posting key is too short"));
    }
    keys.sort_unstable();
    keys.dedup();
    let mut t = txn.open_table(POSTINGS).map_err(storage)?;
    super::postings::insert_sorted(&mut t, keys)?;
    keys.clear();
    Ok(())
}

/// Writes the tables of the checked backup `body` into the empty database `db`; returns the
/// backup's sequence number.
fn load(body: &mut Body<impl std::io::Read>, db: &redb::Database) -> Result<u64> {
    if &body.array::<8>()? != MAGIC {
        return Err(corrupt("not a customerdb backup"));
    }
    let [version, format] = body.array()?;
    if !(1..=BACKUP_FORMAT_VERSION).contains(&version) {
        return Err(Error::new(ErrorKind::FormatVersion {
            found: version,
            supported: BACKUP_FORMAT_VERSION,
        }));
    }
    if format != codec::FORMAT_VERSION {
        return Err(Error::new(ErrorKind::FormatVersion {
            found: format,
            supported: codec::FORMAT_VERSION,
        }));
    }
    let seq = body.u64()?;
    let _taken = body.u64()?;
    let txn = db.begin_write().map_err(storage)?;
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    while body.byte()? == 1 {
        let name_len = body.byte()?;
        let name = String::from_utf8(body.bytes(u64::from(name_len))?)
            .map_err(|_| corrupt("a table name is not UTF-8"))?;
        if !known_table(&name) || !seen.insert(name.clone()) {
            return Err(corrupt("an unknown or repeated table"));
        }
        let mut count = 0u64;
        let mut pending = Vec::new();
        while body.byte()? == 1 {
            let k = body.sized()?;
            let v = body.sized()?;
            count += 1;
            match name.as_str() {
                "customers" => {
                    let id = id_of(&k)?;
                    txn.open_table(CUSTOMERS)
                        .map_err(storage)?
                        .insert(id, v.as_slice())
                        .map_err(storage)?;
                }
                "postings" => {
                    pending.push(k);
                    if pending.len() == RESTORE_BATCH {
                        restore_postings(&txn, &mut pending)?;
                    }
                }
                "uniques" => {
                    let id = id_of(&v)?;
                    txn.open_table(UNIQUES)
                        .map_err(storage)?
                        .insert(k.as_slice(), id)
                        .map_err(storage)?;
                }
                "meta" => {
                    let key =
                        std::str::from_utf8(&k).map_err(|_| corrupt("a meta key is not UTF-8"))?;
                    txn.open_table(META)
                        .map_err(storage)?
                        .insert(key, v.as_slice())
                        .map_err(storage)?;
                }
                other => {
                    let t = Table::ALL
                        .into_iter()
                        .find(|t| t.name() == other)
                        .ok_or_else(|| corrupt("an unknown table"))?;
                    txn.open_table(t.def())
                        .map_err(storage)?
                        .insert(k.as_slice(), v.as_slice())
                        .map_err(storage)?;
                }
            }
        }
        restore_postings(&txn, &mut pending)?;
        if body.u64()? != count {
            return Err(corrupt("a table's entry count does not match"));
        }
        total += count;
    }
    if body.u64()? != total || body.left != 0 {
        return Err(corrupt("the entry total does not match"));
    }
    {
        let meta = txn.open_table(META).map_err(storage)?;
        let next = read_counter(&meta, META_NEXT_SEQ)?.unwrap_or(1);
        if next.checked_sub(1) != Some(seq) {
            return Err(corrupt(
                "the header's sequence number is not the snapshot's",
            ));
        }
    }
    txn.commit().map_err(storage)?;
    Ok(seq)
}

impl Store {
    /// Writes a backup of the store to `path` while writers go on: a snapshot (one read
    /// transaction) at the change-feed sequence number the report gives, streamed table by
    /// table into a self-describing file with a checksum. The file is written beside `path`
    /// and renamed into place when complete and synced, so `path` never holds half a backup.
    ///
    /// No key is in it: the suppression key and master keys are the host's configuration,
    /// which the database never stores, and an encrypted store's data keys stay in the store.
    ///
    /// ```
    /// use customerdb::{Customer, Read, Store};
    /// let dir = tempfile::tempdir().expect("temp dir");
    /// let store = Store::create(dir.path().join("crm.redb"))?;
    /// let mut tx = store.begin_write()?;
    /// tx.insert(Customer::builder().name("Ada Lovelace").email("ada@example.com"))?;
    /// tx.commit()?;
    /// let report = store.backup_to(dir.path().join("crm.backup"))?;
    /// assert_eq!((report.seq, report.customers), (1, 1));
    ///
    /// let copy = Store::restore_from(dir.path().join("crm.backup"), dir.path().join("copy.redb"))?;
    /// assert!(copy.begin_read()?.find_by_email("ada@example.com")?.is_some());
    /// assert!(copy.verify()?.is_clean());
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be written; [`ErrorKind::Storage`] if the
    /// snapshot cannot be read.
    pub fn backup_to(&self, path: impl AsRef<Path>) -> Result<BackupReport> {
        self.begin_read()?.backup_to(path)
    }

    /// Restores the backup at `backup` into a new store file at `path`, with default
    /// settings; [`StoreBuilder::restore_from`] takes the host's settings and keys.
    ///
    /// # Errors
    /// As [`StoreBuilder::restore_from`].
    pub fn restore_from(backup: impl AsRef<Path>, path: impl AsRef<Path>) -> Result<Store> {
        Store::builder().restore_from(backup, path)
    }

    /// Brings this store (restored from a backup of `source`, or caught up before) up to
    /// `source`'s current state, from `source`'s change feed: every customer named by a
    /// change since this store's last sequence number is copied as `source` has it now
    /// (record, index entries, activities, metrics, history, tombstone), and the small tables
    /// (aliases, merges, review, segments, suppression, tombstones, access log, meta) are compared whole.
    /// Afterwards this store's last sequence number is `source`'s. Subscribers of this store
    /// are not told of the changes.
    ///
    /// Between encrypted stores (a copy restored with [`StoreBuilder::data_keys_from`], opened
    /// with the master keys of `source`) the sealed bytes are copied as they are, and this
    /// store's data keys are made `source`'s: the keys of customers created since are added,
    /// those of customers erased or anonymised since are destroyed here too, and keys
    /// re-wrapped by a rotation are re-wrapped here.
    ///
    /// # Errors
    /// [`ErrorKind::Diverged`] if this store is ahead of `source`; storage errors;
    /// [`crate::KeyProblem::OtherStore`] if one store is encrypted and the other is not, or
    /// they have different blind index keys (this store was not restored from `source`);
    /// [`crate::KeyProblem::UnknownKeyId`] or [`crate::KeyProblem::WrongKey`] if this store's
    /// key provider lacks, or holds another key under the id of, a master key that `source`'s
    /// keys are wrapped under (nothing is changed then).
    pub fn catch_up_from(&self, source: &Store) -> Result<CatchUp> {
        let ours = self.inner.config.crypt.as_deref();
        super::crypt::same_keys(ours, source.inner.config.crypt.as_deref())?;
        let src = source.begin_read()?;
        catch_up(&self.inner.db, ours, &src)
    }
}

impl StoreBuilder {
    /// Restores the backup at `backup` into a new store file at `path`, opened with these
    /// settings (the suppression key, the clock, rates: the backup holds none of them). The
    /// backup's checksum is checked before anything is written; the new file is built beside
    /// `path` and renamed into place only when complete.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupted`] if the file is damaged, truncated or not a backup;
    /// [`ErrorKind::FormatVersion`] if it was written by an incompatible version;
    /// [`ErrorKind::Io`] if it cannot be read, or `path` exists already;
    /// [`crate::KeyProblem::NoDataKeys`] for a backup of an encrypted store without
    /// [`StoreBuilder::data_keys_from`].
    /// [`crate::KeyProblem::OtherStore`] if [`StoreBuilder::data_keys_from`] names a store the
    /// backup was not taken from.
    pub fn restore_from(self, backup: impl AsRef<Path>, path: impl AsRef<Path>) -> Result<Store> {
        self.restore_reporting(backup, path).map(|(store, _)| store)
    }

    /// [`StoreBuilder::restore_from`], also reporting the customers it purged
    /// ([`RestoreReport::purged`]).
    ///
    /// # Errors
    /// As [`StoreBuilder::restore_from`].
    pub fn restore_reporting(
        self,
        backup: impl AsRef<Path>,
        path: impl AsRef<Path>,
    ) -> Result<(Store, RestoreReport)> {
        let path = path.as_ref();
        if path.exists() {
            return Err(Error::with_source(
                ErrorKind::Io,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} exists: restore makes a new store", path.display()),
                ),
            ));
        }
        let (file, len) = checked(backup.as_ref())?;
        let tmp = sibling(path, "restoring");
        let result = (|| {
            if tmp.exists() {
                std::fs::remove_file(&tmp)?;
            }
            let db = redb::Database::create(&tmp).map_err(storage)?;
            let mut body = Body {
                r: BufReader::new(file),
                left: len,
            };
            load(&mut body, &db)?;
            super::crypt::restore_data_keys(&db, self.data_keys_from.as_ref())
        })();
        let purged = match result {
            Ok(purged) => purged,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        std::fs::rename(&tmp, path)?;
        Ok((self.open(path)?, RestoreReport { purged }))
    }
}

type Raw = BTreeMap<Vec<u8>, Vec<u8>>;

/// The index entries a customer has in one database: its record's and its metrics'.
fn index_entries(
    db: &dyn Tables,
    record: Option<&[u8]>,
    metrics: Option<&[u8]>,
    id: u64,
    schema: &Schema,
) -> Result<index::Entries> {
    let Some(bytes) = record else {
        return Ok(index::Entries::default());
    };
    let rec = db.decode(id, bytes)?;
    let mut e = match db.crypt() {
        Some(c) => c.entries(&rec, schema),
        None => index::entries(&rec, schema),
    };
    if let Some(m) = metrics {
        let state = super::timeline::decode_metrics(m)?;
        e.postings
            .extend(index::metric_postings(id, &state.metrics));
    }
    Ok(e)
}

/// What one customer holds in one database, in the per-customer tables.
struct Held {
    record: Option<Vec<u8>>,
    metrics: Option<Vec<u8>>,
    entries: index::Entries,
    /// `activities` entries (keys start with the customer).
    activities: Raw,
    /// The customer's history sequence numbers.
    history: Vec<[u8; 8]>,
}

/// Per-customer reads from either side of a catch-up.
trait Tables {
    /// The side's encryption, if it is encrypted.
    fn crypt(&self) -> Option<&Crypt>;
    /// A stored record of this side, opened under its data key here if encrypted.
    fn decode(&self, id: u64, bytes: &[u8]) -> Result<Record>;
    fn record(&self, id: u64) -> Result<Option<Vec<u8>>>;
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The entries of `t` whose keys start with `prefix`.
    fn prefixed(&self, t: Table, prefix: &[u8]) -> Result<Raw>;
}

fn prefixed_in(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Raw> {
    let mut out = Raw::new();
    for item in table
        .range::<&[u8]>((Bound::Included(prefix), Bound::Unbounded))
        .map_err(storage)?
    {
        let (k, v) = item.map_err(storage)?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.insert(k.value().to_vec(), v.value().to_vec());
    }
    Ok(out)
}

impl Tables for ReadTxn {
    fn crypt(&self) -> Option<&Crypt> {
        Backend::crypt(self)
    }
    fn decode(&self, id: u64, bytes: &[u8]) -> Result<Record> {
        decode_stored(Backend::crypt(self), self.keys_table()?, id, bytes)
    }
    fn record(&self, id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .raw_customers()?
            .get(id)
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>> {
        Backend::get_raw(self, t, k)
    }
    fn prefixed(&self, t: Table, prefix: &[u8]) -> Result<Raw> {
        prefixed_in(self.raw_table(t)?, prefix)
    }
}

/// The store being caught up: its write transaction and its encryption.
struct Target<'a> {
    w: &'a redb::WriteTransaction,
    crypt: Option<&'a Crypt>,
}

impl Tables for Target<'_> {
    fn crypt(&self) -> Option<&Crypt> {
        self.crypt
    }
    fn decode(&self, id: u64, bytes: &[u8]) -> Result<Record> {
        if self.crypt.is_none() {
            return decode_record(id, bytes);
        }
        let keys = self.w.open_table(CUSTOMER_KEYS).map_err(storage)?;
        decode_stored(self.crypt, Some(&keys), id, bytes)
    }
    fn record(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let t = self.w.open_table(CUSTOMERS).map_err(storage)?;
        Ok(t.get(id).map_err(storage)?.map(|v| v.value().to_vec()))
    }
    fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.w.open_table(t.def()).map_err(storage)?;
        Ok(t.get(k).map_err(storage)?.map(|v| v.value().to_vec()))
    }
    fn prefixed(&self, t: Table, prefix: &[u8]) -> Result<Raw> {
        prefixed_in(&self.w.open_table(t.def()).map_err(storage)?, prefix)
    }
}

fn held_in(db: &dyn Tables, id: u64, schema: &Schema) -> Result<Held> {
    let key = id.to_be_bytes();
    let record = db.record(id)?;
    let metrics = db.get(Table::Metrics, &key)?;
    let entries = index_entries(db, record.as_deref(), metrics.as_deref(), id, schema)?;
    let activities = db.prefixed(Table::Activities, &key)?;
    let history = db
        .prefixed(Table::CustomerHistory, &key)?
        .into_keys()
        .filter_map(|k| k.get(8..16).and_then(|s| <[u8; 8]>::try_from(s).ok()))
        .collect();
    Ok(Held {
        record,
        metrics,
        entries,
        activities,
        history,
    })
}

/// The `activity_ids` and `activity_time` keys of an `activities` key
/// (`customer ++ at ++ activity id`).
fn activity_keys(k: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (id, at) = (k.get(16..24), k.get(8..24));
    match (id, at) {
        (Some(id), Some(at)) if k.len() == 24 => Ok((id.to_vec(), at.to_vec())),
        _ => Err(Error::corrupted("activity key", "not 24 bytes")),
    }
}

/// Makes `target` (encrypted with `crypt`, if at all, with the same blind index key as `src`)
/// hold what `src` holds, for the customers its feed names since `target`'s last change, and
/// in an encrypted store the same data keys.
#[allow(clippy::too_many_lines)] // one transaction's steps, in the order they must run
fn catch_up(target: &redb::Database, crypt: Option<&Crypt>, src: &ReadTxn) -> Result<CatchUp> {
    let to = Backend::last_seq(src)?;
    // Data keys the catch-up replaces or destroys leave the target's key cache with its
    // commit: declared before `w`, so dropped after it.
    let invalidated = Invalidation::of(crypt);
    let w = target.begin_write().map_err(storage)?;
    let from = {
        let meta = w.open_table(META).map_err(storage)?;
        read_counter(&meta, META_NEXT_SEQ)?.unwrap_or(1) - 1
    };
    if from > to {
        return Err(Error::new(ErrorKind::Diverged {
            ours: from,
            theirs: to,
        }));
    }
    // Who changed, from the feed's public form only: its storage format is not ours to read.
    let mut ids = BTreeSet::new();
    let mut changes = 0u64;
    let mut schema_changed = false;
    let mut since = from;
    loop {
        let page = crate::Read::changes(src, since, 4096)?;
        let Some(last) = page.last() else { break };
        since = last.seq;
        for c in &page {
            changes += 1;
            if let Some(id) = c.customer {
                ids.insert(id.as_u64());
            } else {
                schema_changed = true;
            }
            if let crate::Operation::MergedInto(other) = c.operation {
                ids.insert(other.as_u64());
            }
        }
        if since >= to {
            break;
        }
    }
    // Customers merged into a named one go with it (an erasure deletes their history too).
    {
        let aliases = w.open_table(Table::Aliases.def()).map_err(storage)?;
        let mut merged = Vec::new();
        for item in aliases.iter().map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            if ids.contains(&id_of(v.value())?) {
                merged.push(id_of(k.value())?);
            }
        }
        ids.extend(merged);
    }
    let old_schema = super::read::load_schema(&w.open_table(META).map_err(storage)?)?;
    let new_schema = Backend::schema(src)?;
    schema_changed |= old_schema != *new_schema;

    // What each customer holds on both sides, read before anything is written.
    let mut pairs = Vec::new();
    for &id in &ids {
        let ours = held_in(&Target { w: &w, crypt }, id, &old_schema)?;
        let theirs = held_in(src, id, &new_schema)?;
        pairs.push((id, ours, theirs));
    }
    // Removals first, then insertions: a unique key or an activity can move between two of
    // the customers.
    {
        let mut customers = w.open_table(CUSTOMERS).map_err(storage)?;
        let mut postings = w.open_table(POSTINGS).map_err(storage)?;
        let (mut gone, mut added): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        let mut apply = |keys: &mut Vec<Vec<u8>>, insert: bool| -> Result<()> {
            keys.sort_unstable();
            keys.dedup();
            let ops = keys.iter().map(|k| (k.as_slice(), insert));
            super::postings::apply(&mut postings, ops, u64::MAX, &mut |_, _, _| Ok(()))
        };
        let mut uniques = w.open_table(UNIQUES).map_err(storage)?;
        let mut metrics = w.open_table(Table::Metrics.def()).map_err(storage)?;
        let mut activities = w.open_table(Table::Activities.def()).map_err(storage)?;
        let mut activity_ids = w.open_table(Table::ActivityIds.def()).map_err(storage)?;
        let mut activity_time = w.open_table(Table::ActivityTime.def()).map_err(storage)?;
        let mut history = w.open_table(Table::History.def()).map_err(storage)?;
        let mut customer_history = w
            .open_table(Table::CustomerHistory.def())
            .map_err(storage)?;
        for (id, ours, _) in &pairs {
            let key = id.to_be_bytes();
            customers.remove(id).map_err(storage)?;
            metrics.remove(key.as_slice()).map_err(storage)?;
            if !schema_changed {
                gone.extend(ours.entries.postings.iter().cloned());
                for u in &ours.entries.uniques {
                    let held = uniques
                        .get(u.key.as_slice())
                        .map_err(storage)?
                        .map(|v| v.value());
                    if held == Some(*id) {
                        uniques.remove(u.key.as_slice()).map_err(storage)?;
                    }
                }
            }
            for k in ours.activities.keys() {
                let (aid, time) = activity_keys(k)?;
                activities.remove(k.as_slice()).map_err(storage)?;
                activity_ids.remove(aid.as_slice()).map_err(storage)?;
                activity_time.remove(time.as_slice()).map_err(storage)?;
            }
            for seq in &ours.history {
                history.remove(seq.as_slice()).map_err(storage)?;
                let mut k = key.to_vec();
                k.extend_from_slice(seq);
                customer_history.remove(k.as_slice()).map_err(storage)?;
            }
        }
        apply(&mut gone, false)?;
        let src_history = src.raw_table(Table::History)?;
        for (id, _, theirs) in &pairs {
            let key = id.to_be_bytes();
            if let Some(r) = &theirs.record {
                customers.insert(id, r.as_slice()).map_err(storage)?;
            }
            if let Some(m) = &theirs.metrics {
                metrics
                    .insert(key.as_slice(), m.as_slice())
                    .map_err(storage)?;
            }
            if !schema_changed {
                added.extend(theirs.entries.postings.iter().cloned());
                for u in &theirs.entries.uniques {
                    uniques.insert(u.key.as_slice(), id).map_err(storage)?;
                }
            }
            for (k, v) in &theirs.activities {
                let (aid, time) = activity_keys(k)?;
                activities
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(storage)?;
                activity_ids
                    .insert(aid.as_slice(), k.as_slice())
                    .map_err(storage)?;
                activity_time
                    .insert(time.as_slice(), key.as_slice())
                    .map_err(storage)?;
            }
            for seq in &theirs.history {
                if let Some(v) = src_history.get(seq.as_slice()).map_err(storage)? {
                    history.insert(seq.as_slice(), v.value()).map_err(storage)?;
                }
                let mut k = key.to_vec();
                k.extend_from_slice(seq);
                customer_history
                    .insert(k.as_slice(), [].as_slice())
                    .map_err(storage)?;
            }
        }
        apply(&mut added, true)?;
        // Changes about no customer (schema declarations) in the feed's new range.
        let start = (from + 1).to_be_bytes();
        for item in src_history
            .range::<&[u8]>((Bound::Included(start.as_slice()), Bound::Unbounded))
            .map_err(storage)?
        {
            let (k, v) = item.map_err(storage)?;
            history.insert(k.value(), v.value()).map_err(storage)?;
        }
    }
    if schema_changed {
        // A newly indexed attribute adds entries for customers the feed does not name.
        replace_all(&w, POSTINGS, src.raw_postings()?)?;
        replace_all(&w, UNIQUES, src.raw_uniques()?)?;
    }
    for t in [
        Table::Aliases,
        Table::Merges,
        Table::Review,
        Table::Segments,
        Table::Tombstones,
        Table::Suppressed,
        Table::AccessLog,
        // Postings were moved above without counting; the copy now holds the source's.
        Table::ValueCounts,
    ] {
        replace_all(&w, t.def(), src.raw_table(t)?)?;
    }
    replace_all(&w, META, src.raw_meta()?)?;
    if let Some(c) = crypt {
        super::crypt::take_data_keys(&w, c, src, &invalidated)?;
    }
    w.commit().map_err(storage)?;
    Ok(CatchUp {
        from,
        to,
        changes,
        customers: ids.len() as u64,
    })
}

/// Makes table `def` of `w` hold exactly what `src` holds.
fn replace_all<K, V>(
    w: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
    src: &impl ReadableTable<K, V>,
) -> Result<()>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    w.delete_table(def).map_err(storage)?;
    let mut t = w.open_table(def).map_err(storage)?;
    for item in src.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        t.insert(k.value(), v.value()).map_err(storage)?;
    }
    Ok(())
}
