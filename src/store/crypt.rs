//! Encryption at rest inside the store (see [`StoreBuilder::encryption`](super::StoreBuilder)).
//!
//! An encrypted store seals each customer's record and the history entries about the customer
//! under the customer's own data key, kept wrapped under a master key in `customer_keys`, and
//! keeps blind hashes instead of personal values in its indexes. The primitives are in
//! [`crate::crypt`]; this module decides what is sealed where.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use redb::{ReadableTable, TableDefinition};
use zeroize::Zeroizing;

use crate::crypt::{self, Blinder, KeyProvider, SecretKey};
use crate::error::{Error, ErrorKind, KeyProblem, Result};
use crate::index::Entries;
use crate::model::{CustomerId, Record, Schema};

pub(crate) use super::key_cache::Invalidation;
use super::key_cache::KeyCache;
use super::read::Backend as _;
use super::{CUSTOMERS, POSTINGS, Table, UNIQUES, codec, storage};

/// Customers' data keys: `customer id -> key id (u32 BE) ++ nonce ++ sealed data key`. Not in
/// backups; erasure deletes the customer's row (crypto-shredding).
pub(crate) const CUSTOMER_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("customer_keys");

/// Meta key present in an encrypted store: its blind index key, wrapped under a master key as
/// a data key is (`key id (u32 BE) ++ nonce ++ sealed key`).
pub(crate) const META_ENCRYPTION: &str = "encryption";

/// Meta key of the key check of master key `id`: a known block sealed under it.
fn key_check_name(id: u32) -> String {
    format!("key_check:{id}")
}

/// First byte of a sealed history entry (a plain one starts with the format version, or
/// `0xE1` for an insert holding its record).
const SEALED_HISTORY: u8 = 0xEC;

/// The encryption of an opened store as one holder sees it: the store's keys and key cache,
/// and the cache epoch the holder's snapshot began at. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Crypt {
    shared: Arc<Shared>,
    /// The [`KeyCache`] epoch read before the holder's snapshot began; `None` for the store's
    /// own handle, which reads no snapshot of its own and so never adds to the cache.
    epoch: Option<u64>,
}

/// What every holder of an opened store's [`Crypt`] shares.
struct Shared {
    keys: Arc<dyn KeyProvider>,
    blinder: Blinder,
    /// Seals store-level data that holds personal values of many customers (the duplicate
    /// model's name frequencies): derived from the blind index key, so it survives master key
    /// rotation as that key does.
    store_key: SecretKey,
    /// Unwrapped data keys (see [`super::key_cache`]).
    cache: Arc<KeyCache>,
}

impl Crypt {
    /// The blind index key.
    pub(crate) fn blinder(&self) -> &Blinder {
        &self.shared.blinder
    }

    /// This store's encryption for a transaction about to begin its snapshot: call it before
    /// the snapshot begins, never after (the cache epoch must not be newer than the snapshot).
    pub(crate) fn for_snapshot(&self) -> Crypt {
        Crypt {
            shared: self.shared.clone(),
            epoch: Some(self.shared.cache.epoch()),
        }
    }

    /// Keeps the customers a write transaction destroys or re-wraps keys of out of the key
    /// cache until the returned value is dropped (after the commit).
    pub(crate) fn invalidation(&self) -> Invalidation {
        Invalidation::new(Some(self.shared.cache.clone()))
    }

    /// The key cache.
    #[cfg(test)]
    pub(crate) fn cache(&self) -> &KeyCache {
        &self.shared.cache
    }

    /// The key provider.
    fn keys(&self) -> &dyn KeyProvider {
        &*self.shared.keys
    }

    /// A new data key for customer `id` and its wrapped form (for `customer_keys`).
    pub(crate) fn new_data_key(&self, id: u64) -> Result<(SecretKey, Vec<u8>)> {
        let key = SecretKey::generate()?;
        let wrapped = crypt::wrap(self.keys(), &key, id)?;
        Ok((key, wrapped))
    }

    /// Customer `id`'s data key from its wrapped form, `wrapped` as the caller's snapshot
    /// holds it: from the key cache if it holds the key unwrapped from these very bytes,
    /// otherwise unwrapped now (and cached, if the epoch allows).
    pub(crate) fn data_key(&self, id: u64, wrapped: &[u8]) -> Result<SecretKey> {
        if let Some(key) = self.shared.cache.get(id, wrapped) {
            return Ok(key);
        }
        let key = crypt::unwrap(self.keys(), wrapped, id)?;
        self.shared.cache.put(id, wrapped, &key, self.epoch);
        Ok(key)
    }

    /// The entries of `rec` with the personal indexes blinded.
    pub(crate) fn entries(&self, rec: &Record, schema: &Schema) -> Entries {
        let mut e = crate::index::entries(rec, schema);
        e.blind(&self.shared.blinder);
        e
    }
}

/// Seals customer `id`'s record, encoded (`codec::encode`) as `plain`, under its data key.
pub(crate) fn seal_record(key: &SecretKey, id: u64, plain: &[u8]) -> Result<Vec<u8>> {
    crypt::seal(key, &record_aad(id), plain)
}

/// The record sealed by [`seal_record`] under `id`.
pub(crate) fn open_record(key: &SecretKey, id: u64, sealed: &[u8]) -> Result<Record> {
    let plain = crypt::open(key, &record_aad(id), sealed, "customer record")?;
    super::read::decode_record(id, &plain)
}

/// Seals history entry `seq` about customer `id`: `0xEC ++ id (8) ++ sealed entry`.
pub(crate) fn seal_history(key: &SecretKey, id: u64, seq: u64, entry: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![SEALED_HISTORY];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&crypt::seal(key, &history_aad(id, seq), entry)?);
    Ok(out)
}

fn record_aad(id: u64) -> [u8; 16] {
    let mut aad = *b"customer\0\0\0\0\0\0\0\0";
    aad[8..].copy_from_slice(&id.to_be_bytes());
    aad
}

fn history_aad(id: u64, seq: u64) -> [u8; 23] {
    let mut aad = [0u8; 23];
    aad[..7].copy_from_slice(b"history");
    aad[7..15].copy_from_slice(&id.to_be_bytes());
    aad[15..].copy_from_slice(&seq.to_be_bytes());
    aad
}

/// First byte of a sealed merge log (a plain one starts with the format version).
const SEALED_MERGE: u8 = 0xED;

/// Seals merge log `merge` under the survivor's data key: `0xED ++ count (u32 BE) ++ ids (8
/// each, the survivor first, then the merged customers) ++ sealed log`. The ids stay readable
/// (they are no personal data) so erasure finds the logs naming a customer without keys.
pub(crate) fn seal_merge_log(
    key: &SecretKey,
    merge: u64,
    ids: &[u64],
    log: &[u8],
) -> Result<Vec<u8>> {
    let mut out = vec![SEALED_MERGE];
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    let aad = merge_aad(merge, &out);
    out.extend_from_slice(&crypt::seal(key, &aad, log)?);
    Ok(out)
}

fn merge_aad(merge: u64, head: &[u8]) -> Vec<u8> {
    let mut aad = b"merge".to_vec();
    aad.extend_from_slice(&merge.to_be_bytes());
    aad.extend_from_slice(head);
    aad
}

/// The ids a sealed merge log names (survivor first) and where its sealed part starts, or
/// `None` for a plain log.
pub(crate) fn sealed_merge_ids(bytes: &[u8]) -> Option<(Vec<u64>, usize)> {
    let (&SEALED_MERGE, rest) = bytes.split_first()? else {
        return None;
    };
    let (n, rest) = rest.split_first_chunk::<4>()?;
    let n = u32::from_be_bytes(*n) as usize;
    let ids = rest.get(..n.checked_mul(8)?)?;
    let ids = ids
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .collect();
    Some((ids, 5 + n * 8))
}

/// The encoded merge log `merge` inside a sealed one whose head ends at `at`.
pub(crate) fn open_merge_log(
    key: &SecretKey,
    merge: u64,
    bytes: &[u8],
    at: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let (head, sealed) = bytes.split_at_checked(at).unwrap_or((bytes, &[]));
    crypt::open(key, &merge_aad(merge, head), sealed, "merge log")
}

/// The customer a sealed history entry is about, or `None` for a plain entry.
pub(crate) fn sealed_history_owner(bytes: &[u8]) -> Result<Option<u64>> {
    match bytes.split_first() {
        Some((&SEALED_HISTORY, rest)) => {
            let (id, _) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| Error::corrupted("history entry", "sealed entry too short"))?;
            Ok(Some(u64::from_be_bytes(*id)))
        }
        _ => Ok(None),
    }
}

/// The encoded entry `seq` inside a sealed history entry about `id` (see
/// [`sealed_history_owner`]).
pub(crate) fn open_history(
    key: &SecretKey,
    id: u64,
    seq: u64,
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let sealed = bytes.get(9..).unwrap_or_default();
    crypt::open(key, &history_aad(id, seq), sealed, "history entry")
}

/// First byte of a sealed duplicate model (a plain one is never written by an encrypted store).
const SEALED_MODEL: u8 = 0xEE;

const MODEL_AAD: &[u8] = b"customerdb duplicate model";

/// The encoded duplicate model as an encrypted store keeps it: `0xEE ++ sealed model`, under
/// the store key, since its term frequency tables name people. A plain store keeps it as it
/// is.
pub(crate) fn seal_model(crypt: Option<&Crypt>, encoded: Vec<u8>) -> Result<Vec<u8>> {
    let Some(c) = crypt else {
        return Ok(encoded);
    };
    let encoded = Zeroizing::new(encoded);
    let mut out = vec![SEALED_MODEL];
    out.extend_from_slice(&crypt::seal(&c.shared.store_key, MODEL_AAD, &encoded)?);
    Ok(out)
}

/// The encoded duplicate model in `stored` (see [`seal_model`]). An encrypted store refuses a
/// model that is not sealed ([`ErrorKind::Corrupted`]): it never writes one.
pub(crate) fn open_model(crypt: Option<&Crypt>, stored: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let Some(c) = crypt else {
        return Ok(Zeroizing::new(stored.to_vec()));
    };
    match stored.split_first() {
        Some((&SEALED_MODEL, sealed)) => {
            crypt::open(&c.shared.store_key, MODEL_AAD, sealed, "duplicate model")
        }
        _ => Err(Error::corrupted(
            "duplicate model",
            "an encrypted store holds a model that is not sealed",
        )),
    }
}

/// Customer `id`'s data key from `wrapped` (its `customer_keys` row), or
/// [`KeyProblem::Shredded`] if there is none.
pub(crate) fn data_key_of(crypt: &Crypt, id: u64, wrapped: Option<&[u8]>) -> Result<SecretKey> {
    match wrapped {
        Some(w) => crypt.data_key(id, w),
        None => Err(Error::new(ErrorKind::Key(KeyProblem::Shredded(
            CustomerId::from_u64(id),
        )))),
    }
}

/// Decodes a stored record: opened under its customer's data key (read from `keys`) in an
/// encrypted store, decoded as it is in a plain one.
///
/// The key cache is tried first without reading the key row: a key that opens the sealed
/// record is that record's key (the AEAD authenticates it), and a snapshot holding a record
/// holds its key too, since both are written and erased in one commit. A key that does not
/// open it (the customer was anonymised since this snapshot, so the cache holds the new key)
/// falls back to the snapshot's own row.
pub(crate) fn decode_stored(
    crypt: Option<&Crypt>,
    keys: Option<&impl ReadableTable<u64, &'static [u8]>>,
    id: u64,
    bytes: &[u8],
) -> Result<Record> {
    let (Some(c), Some(keys)) = (crypt, keys) else {
        return super::read::decode_record(id, bytes);
    };
    let cached = c.shared.cache.get_any(id);
    if let Some(rec) = cached.and_then(|key| open_record(&key, id, bytes).ok()) {
        return Ok(rec);
    }
    let wrapped = keys.get(id).map_err(storage)?;
    let key = data_key_of(c, id, wrapped.as_ref().map(redb::AccessGuard::value))?;
    open_record(&key, id, bytes)
}

/// Customer `id`'s data key from the data keys table `keys` of the store encrypted with
/// `crypt` ([`KeyProblem::NotEncrypted`] for a plain store).
pub(crate) fn data_key_in(
    crypt: Option<&Crypt>,
    keys: &impl ReadableTable<u64, &'static [u8]>,
    id: u64,
) -> Result<SecretKey> {
    let c = crypt.ok_or_else(|| Error::new(ErrorKind::Key(KeyProblem::NotEncrypted)))?;
    let wrapped = keys.get(id).map_err(storage)?;
    data_key_of(c, id, wrapped.as_ref().map(redb::AccessGuard::value))
}

/// The data keys of one read snapshot, for the lazy readers ([`super::Customers`],
/// [`super::ChangeFeed`]) that outlive a borrow of their transaction.
pub(crate) struct Keyring {
    pub(crate) crypt: Arc<Crypt>,
    pub(crate) table: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl Keyring {
    /// Customer `id`'s data key.
    pub(crate) fn data_key(&self, id: u64) -> Result<SecretKey> {
        let wrapped = self.table.get(id).map_err(storage)?;
        data_key_of(
            &self.crypt,
            id,
            wrapped.as_ref().map(redb::AccessGuard::value),
        )
    }

    /// Customer `id`'s stored record.
    pub(crate) fn record(&self, id: u64, bytes: &[u8]) -> Result<Record> {
        decode_stored(Some(&self.crypt), Some(&self.table), id, bytes)
    }
}

/// Sets up or checks encryption when a store is opened: a new store given `keys` becomes
/// encrypted, with a random blind index key wrapped under the current master key; an
/// encrypted one needs `keys` holding the master key its blind index key is wrapped under
/// (checked against the stored key check, so a wrong key is refused here and not found out as
/// garbage later); a plain one refuses `keys`. The current master key gets a key check if it
/// has none yet.
pub(crate) fn initialise(
    meta: &mut redb::Table<&'static str, &'static [u8]>,
    keys: Option<Arc<dyn KeyProvider>>,
    new: bool,
    cache: usize,
) -> Result<Option<Arc<Crypt>>> {
    let stored = meta
        .get(META_ENCRYPTION)
        .map_err(storage)?
        .map(|v| v.value().to_vec());
    let key_error = |p| Err(Error::new(ErrorKind::Key(p)));
    let (keys, wrapped) = match (keys, stored) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return key_error(KeyProblem::Missing),
        (Some(_), None) if !new => return key_error(KeyProblem::NotEncrypted),
        (Some(keys), None) => {
            let wrapped = crypt::wrap_blind_key(&*keys, &SecretKey::generate()?)?;
            meta.insert(META_ENCRYPTION, wrapped.as_slice())
                .map_err(storage)?;
            (keys, wrapped)
        }
        (Some(keys), Some(wrapped)) => (keys, wrapped),
    };
    for id in [crypt::wrapped_key_id(&wrapped)?, keys.current_key_id()] {
        let name = key_check_name(id);
        let check = meta
            .get(name.as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        if let Some(check) = check {
            crypt::verify_key_check(&*keys, id, &check)?;
        } else {
            let check = crypt::key_check(&*keys, id)?;
            meta.insert(name.as_str(), check.as_slice())
                .map_err(storage)?;
        }
    }
    let blind_key = crypt::unwrap_blind_key(&*keys, &wrapped)?;
    let blinder = Blinder::new(&blind_key)?;
    let store_key = blind_key.derive("store data")?;
    Ok(Some(Arc::new(Crypt {
        shared: Arc::new(Shared {
            keys,
            blinder,
            store_key,
            cache: Arc::new(KeyCache::new(cache)),
        }),
        epoch: None,
    })))
}

/// Meta key of a key rotation in progress: the id of the master key it re-wraps under (`u32`
/// BE) ++ the next customer id to re-wrap (`u64` BE). A marker of another target (the current
/// key changed while a rotation was interrupted) or of the older 8-byte form is no progress:
/// the rotation starts again from the first customer.
const META_ROTATION: &str = "key_rotation";

/// Where a rotation to master key `target` goes on, from the marker `stored`.
fn rotation_start(stored: Option<&[u8]>, target: u32) -> u64 {
    let Some((id, next)) = stored.and_then(|s| s.split_first_chunk::<4>()) else {
        return 0;
    };
    match <[u8; 8]>::try_from(next) {
        Ok(next) if u32::from_be_bytes(*id) == target => u64::from_be_bytes(next),
        _ => 0,
    }
}

/// The customers whose data key, and whether the blind index key, is wrapped under a master
/// key other than the current one.
pub(crate) fn keys_not_current(
    c: &Crypt,
    read: &super::ReadTxn,
) -> Result<(Vec<CustomerId>, bool)> {
    let current = c.keys().current_key_id();
    let mut stale = Vec::new();
    for item in read.raw_customer_keys()?.iter().map_err(storage)? {
        let (id, w) = item.map_err(storage)?;
        if crypt::wrapped_key_id(w.value())? != current {
            stale.push(CustomerId::from_u64(id.value()));
        }
    }
    let blind = read
        .raw_meta()?
        .get(META_ENCRYPTION)
        .map_err(storage)?
        .map(|v| crypt::wrapped_key_id(v.value()))
        .transpose()?;
    Ok((stale, blind.is_some_and(|id| id != current)))
}

impl super::Store {
    /// Re-wraps the store's keys (every customer's data key and the blind index key) under
    /// the key provider's current master key, in write transactions of `batch` customers, so
    /// readers and writers go on between batches and data wrapped under either key stays
    /// readable meanwhile. Progress is kept in the store with the master key it rotates to:
    /// after a crash, call it again and it goes on where it stopped, or from the start if the
    /// current master key has changed since. Returns how many data keys it re-wrapped;
    /// [`Store::verify`](super::Store::verify) lists any key not under the current master key
    /// ([`VerifyReport::keys_not_current`](super::VerifyReport::keys_not_current)): retire an
    /// old master key only when that list is empty.
    ///
    /// Once it returns, the store opens with a provider holding only the current master key.
    /// Sealed data is not re-encrypted (its data keys do not change); old wrapped keys may
    /// linger in freed pages until [`Store::compact`](super::Store::compact).
    ///
    /// # Errors
    /// [`KeyProblem::NotEncrypted`] for a plain store; [`ErrorKind::Key`] if the provider
    /// lacks a master key some data key is wrapped under.
    pub fn rotate_keys(&self, batch: usize) -> Result<u64> {
        let c = self
            .inner
            .config
            .crypt
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Key(KeyProblem::NotEncrypted)))?;
        let current = c.keys().current_key_id();
        let mut done = 0;
        loop {
            // Dropped after the commit: re-wrapped keys leave the cache with it.
            let invalidated = c.invalidation();
            let txn = self.inner.db.begin_write().map_err(storage)?;
            let finished = {
                let mut meta = txn.open_table(super::META).map_err(storage)?;
                let marker = meta
                    .get(META_ROTATION)
                    .map_err(storage)?
                    .map(|v| v.value().to_vec());
                let from = rotation_start(marker.as_deref(), current);
                let blind = meta
                    .get(META_ENCRYPTION)
                    .map_err(storage)?
                    .map(|v| v.value().to_vec());
                if let Some(w) = blind.filter(|w| crypt::wrapped_key_id(w).ok() != Some(current)) {
                    let key = crypt::unwrap_blind_key(c.keys(), &w)?;
                    let rewrapped = crypt::wrap_blind_key(c.keys(), &key)?;
                    meta.insert(META_ENCRYPTION, rewrapped.as_slice())
                        .map_err(storage)?;
                }
                let mut keys = txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
                let (mut stale, mut next) = (Vec::new(), None);
                for (n, item) in keys.range(from..).map_err(storage)?.enumerate() {
                    let (id, w) = item.map_err(storage)?;
                    if n == batch.max(1) {
                        next = Some(id.value());
                        break;
                    }
                    if crypt::wrapped_key_id(w.value())? != current {
                        stale.push((id.value(), w.value().to_vec()));
                    }
                }
                for (id, w) in stale {
                    invalidated.add(id);
                    let rewrapped = crypt::wrap(c.keys(), &c.data_key(id, &w)?, id)?;
                    keys.insert(id, rewrapped.as_slice()).map_err(storage)?;
                    done += 1;
                }
                if let Some(n) = next {
                    let mut marker = current.to_be_bytes().to_vec();
                    marker.extend_from_slice(&n.to_be_bytes());
                    meta.insert(META_ROTATION, marker.as_slice())
                        .map_err(storage)?;
                } else {
                    meta.remove(META_ROTATION).map_err(storage)?;
                }
                next.is_none()
            };
            txn.commit().map_err(storage)?;
            if finished {
                return Ok(done);
            }
        }
    }
}

/// Completes the restore of a backup into `db`. A backup of an encrypted store holds no data
/// keys: they are copied from `live` (the store the backup was taken from, or its successor)
/// for every customer the backup holds, by record or by history. A customer whose key `live`
/// no longer has was erased after the backup was taken, and one whose key does not open its
/// backed-up record was anonymised (given a new key) since: its data is unreadable
/// (crypto-shredding), so it is purged from the restored store and left as a tombstone.
/// Returns the ids purged (not those already tombstoned in the backup). A plain backup needs
/// nothing.
pub(crate) fn restore_data_keys(
    db: &redb::Database,
    live: Option<&super::Store>,
) -> Result<Vec<CustomerId>> {
    let txn = db.begin_write().map_err(storage)?;
    let encrypted = txn
        .open_table(super::META)
        .map_err(storage)?
        .get(META_ENCRYPTION)
        .map_err(storage)?
        .is_some();
    if !encrypted {
        return Ok(Vec::new());
    }
    let live = live.ok_or_else(|| Error::new(ErrorKind::Key(KeyProblem::NoDataKeys)))?;
    same_store(&txn, live)?;
    let src = live.begin_read()?;
    let live_keys = src.raw_customer_keys()?;
    let mut gone = BTreeSet::new();
    {
        let mut held: BTreeSet<u64> = BTreeSet::new();
        for item in txn
            .open_table(CUSTOMERS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            held.insert(item.map_err(storage)?.0.value());
        }
        let history = txn
            .open_table(Table::CustomerHistory.def())
            .map_err(storage)?;
        for item in history.iter().map_err(storage)? {
            held.extend(head_id(item.map_err(storage)?.0.value()));
        }
        let mut keys = txn.open_table(CUSTOMER_KEYS).map_err(storage)?;
        let records = txn.open_table(CUSTOMERS).map_err(storage)?;
        for id in held {
            let Some(w) = live_keys.get(id).map_err(storage)? else {
                gone.insert(id);
                continue;
            };
            // A key that does not open the backed-up record was replaced since the backup
            // (anonymisation issues a new one): the old data is shredded like an erasure's.
            if let Some(sealed) = records.get(id).map_err(storage)? {
                let opens = match &live.inner.config.crypt {
                    Some(c) => open_record(&c.data_key(id, w.value())?, id, sealed.value()),
                    None => Err(Error::new(ErrorKind::Key(KeyProblem::NotEncrypted))),
                };
                match opens {
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.kind(), ErrorKind::Key(KeyProblem::Unauthentic { .. })) =>
                    {
                        gone.insert(id);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            keys.insert(id, w.value()).map_err(storage)?;
        }
    }
    // Customers erased before the backup was taken (tombstoned in it) are purged of what is
    // left of them too, but not reported: the backup had no data of theirs to give.
    let mut purged = Vec::new();
    {
        let tombstones = txn.open_table(Table::Tombstones.def()).map_err(storage)?;
        for &id in &gone {
            if tombstones
                .get(id.to_be_bytes().as_slice())
                .map_err(storage)?
                .is_none()
            {
                purged.push(CustomerId::from_u64(id));
            }
        }
    }
    if !gone.is_empty() {
        purge(&txn, &gone, src.now())?;
    }
    txn.commit().map_err(storage)?;
    Ok(purged)
}

/// A value blinded under both blind index keys by [`same_store`].
const PROBE: &[u8] = b"customerdb store identity";

/// Checks that `live` is the store the backup being restored in `txn` was taken from (or its
/// successor): encrypted, with the same blind index key (the backup's, unwrapped with `live`'s
/// master keys). Otherwise every customer would lack a key there and be purged as erased.
fn same_store(txn: &redb::WriteTransaction, live: &super::Store) -> Result<()> {
    let other = || Error::new(ErrorKind::Key(KeyProblem::OtherStore));
    let c = live.inner.config.crypt.as_ref().ok_or_else(other)?;
    let wrapped = txn
        .open_table(super::META)
        .map_err(storage)?
        .get(META_ENCRYPTION)
        .map_err(storage)?
        .map(|v| v.value().to_vec())
        .ok_or_else(other)?;
    let key = match crypt::unwrap_blind_key(c.keys(), &wrapped) {
        Ok(key) => key,
        Err(e) if matches!(e.kind(), ErrorKind::Key(KeyProblem::Unauthentic { .. })) => {
            return Err(other());
        }
        Err(e) => return Err(e),
    };
    if Blinder::new(&key)?.blind(0, PROBE) != c.blinder().blind(0, PROBE) {
        return Err(other());
    }
    Ok(())
}

/// Checks that a catch-up copies between two stores of one kind: both plain, or both
/// encrypted with the same blind index key (the copy was restored from a backup of the
/// source, or of its predecessor). Otherwise [`KeyProblem::OtherStore`].
pub(crate) fn same_keys(ours: Option<&Crypt>, theirs: Option<&Crypt>) -> Result<()> {
    match (ours, theirs) {
        (None, None) => Ok(()),
        (Some(a), Some(b)) if a.blinder().blind(0, PROBE) == b.blinder().blind(0, PROBE) => Ok(()),
        _ => Err(Error::new(ErrorKind::Key(KeyProblem::OtherStore))),
    }
}

/// One row of `customer_keys` as read: the customer id and the wrapped key.
type KeyRow = (u64, Vec<u8>);

fn next_row(it: &mut redb::Range<'_, u64, &'static [u8]>) -> Result<Option<KeyRow>> {
    it.next()
        .transpose()
        .map_err(storage)
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
}

/// Makes the data keys table in `w` (a catch-up's target, encrypted with `ours`) hold what
/// `src`'s holds, changing only the rows that differ, each added to `invalidated`. First
/// checks that `ours` holds every master key a row it takes (or `src`'s blind index key) is
/// wrapped under, so that the copy is not left with keys it cannot unwrap.
///
/// # Errors
/// [`KeyProblem::UnknownKeyId`] or [`KeyProblem::WrongKey`] for a master key `ours` lacks or
/// holds another key under the id of; storage errors.
pub(crate) fn take_data_keys(
    w: &redb::WriteTransaction,
    ours: &Crypt,
    src: &super::ReadTxn,
    invalidated: &Invalidation,
) -> Result<()> {
    let mut changes: Vec<(u64, Option<Vec<u8>>)> = Vec::new();
    {
        let mine = w.open_table(CUSTOMER_KEYS).map_err(storage)?;
        let mut here = mine.range::<u64>(..).map_err(storage)?;
        let mut there = src.raw_customer_keys()?.range::<u64>(..).map_err(storage)?;
        let (mut x, mut y) = (next_row(&mut here)?, next_row(&mut there)?);
        loop {
            let order = match (&x, &y) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((mine, _)), Some((theirs, _))) => mine.cmp(theirs),
            };
            // Less: a row only here (its customer is gone there); Greater: only there.
            match order {
                Ordering::Less => {
                    changes.extend(x.take().map(|(id, _)| (id, None)));
                    x = next_row(&mut here)?;
                }
                Ordering::Greater => {
                    changes.extend(y.take().map(|(id, w)| (id, Some(w))));
                    y = next_row(&mut there)?;
                }
                Ordering::Equal => {
                    if let (Some((_, mine)), Some((id, theirs))) = (x.take(), y.take()) {
                        if mine != theirs {
                            changes.push((id, Some(theirs)));
                        }
                    }
                    (x, y) = (next_row(&mut here)?, next_row(&mut there)?);
                }
            }
        }
    }
    // Every master key the taken rows and the blind index key are under, with one row each
    // to try if the source has no key check for it.
    let mut under: BTreeMap<u32, (u64, Vec<u8>)> = BTreeMap::new();
    for (id, w) in &changes {
        if let Some(w) = w {
            under
                .entry(crypt::wrapped_key_id(w)?)
                .or_insert_with(|| (*id, w.clone()));
        }
    }
    let meta = src.raw_meta()?;
    let blind = meta
        .get(META_ENCRYPTION)
        .map_err(storage)?
        .map(|v| v.value().to_vec());
    let blind_id = blind.as_deref().map(crypt::wrapped_key_id).transpose()?;
    for key_id in under.keys().copied().chain(blind_id) {
        let check = meta
            .get(key_check_name(key_id).as_str())
            .map_err(storage)?
            .map(|v| v.value().to_vec());
        match (check, under.get(&key_id), &blind) {
            (Some(check), _, _) => crypt::verify_key_check(ours.keys(), key_id, &check)?,
            (None, Some((id, w)), _) => drop(crypt::unwrap(ours.keys(), w, *id)?),
            (None, None, Some(b)) => drop(crypt::unwrap_blind_key(ours.keys(), b)?),
            (None, None, None) => {}
        }
    }
    let mut keys = w.open_table(CUSTOMER_KEYS).map_err(storage)?;
    for (id, w) in changes {
        invalidated.add(id);
        match w {
            Some(w) => keys.insert(id, w.as_slice()).map_err(storage)?,
            None => keys.remove(id).map_err(storage)?,
        };
    }
    Ok(())
}

/// The id at the start of a key (`customer ++ ...`).
fn head_id(k: &[u8]) -> Option<u64> {
    k.split_first_chunk::<8>()
        .map(|(id, _)| u64::from_be_bytes(*id))
}

/// The id at the end of a key (`... ++ customer`).
fn tail_id(k: &[u8]) -> Option<u64> {
    k.split_last_chunk::<8>()
        .map(|(_, id)| u64::from_be_bytes(*id))
}

/// Removes everything a restored backup holds of the customers in `gone` (whose data keys are
/// destroyed), from the raw tables, and leaves a tombstone for each.
fn purge(txn: &redb::WriteTransaction, gone: &BTreeSet<u64>, now: DateTime<Utc>) -> Result<()> {
    let has = |id: Option<u64>| id.is_some_and(|id| gone.contains(&id));
    let raw = |t: Table| txn.open_table(t.def()).map_err(storage);
    txn.open_table(CUSTOMERS)
        .map_err(storage)?
        .retain(|id, _| !gone.contains(&id))
        .map_err(storage)?;
    let mut postings = txn.open_table(POSTINGS).map_err(storage)?;
    super::postings::remove_ids(&mut postings, &|id| gone.contains(&id))?;
    txn.open_table(UNIQUES)
        .map_err(storage)?
        .retain(|_, id| !gone.contains(&id))
        .map_err(storage)?;
    raw(Table::Metrics)?
        .retain(|k, _| !has(head_id(k)))
        .map_err(storage)?;
    // Activities (`customer ++ at ++ activity id`) with their by-id and by-time entries.
    let mut activities = Vec::new();
    raw(Table::Activities)?
        .retain(|k, _| {
            let drop = has(head_id(k));
            if drop {
                activities.push(k.to_vec());
            }
            !drop
        })
        .map_err(storage)?;
    let (mut by_id, mut by_time) = (raw(Table::ActivityIds)?, raw(Table::ActivityTime)?);
    for k in activities.iter().filter(|k| k.len() == 24) {
        by_id.remove(&k[16..]).map_err(storage)?;
        by_time.remove(&k[8..]).map_err(storage)?;
    }
    let mut seqs = Vec::new();
    raw(Table::CustomerHistory)?
        .retain(|k, _| {
            let drop = has(head_id(k));
            if drop {
                seqs.extend(k.get(8..).map(<[u8]>::to_vec));
            }
            !drop
        })
        .map_err(storage)?;
    let mut history = raw(Table::History)?;
    for seq in seqs {
        history.remove(seq.as_slice()).map_err(storage)?;
    }
    raw(Table::Review)?
        .retain(|k, _| !has(head_id(k)) && !has(tail_id(k)))
        .map_err(storage)?;
    raw(Table::Aliases)?
        .retain(|k, v| !has(head_id(k)) && !has(head_id(v)))
        .map_err(storage)?;
    let ids: BTreeSet<CustomerId> = gone.iter().copied().map(CustomerId::from_u64).collect();
    raw(Table::Merges)?
        .retain(|_, v| !super::dedup::merge_log_involves(v, &ids))
        .map_err(storage)?;
    let mut tombstones = raw(Table::Tombstones)?;
    for id in &ids {
        let key = id.as_u64().to_be_bytes();
        if tombstones.get(key.as_slice()).map_err(storage)?.is_none() {
            let tomb = super::Tombstone {
                id: *id,
                at: now,
                by: None,
                reason:
                    "erased or anonymised after the backup was taken: its data key is destroyed"
                        .into(),
                aliases: Vec::new(),
            };
            tombstones
                .insert(key.as_slice(), codec::encode(&tomb)?.as_slice())
                .map_err(storage)?;
        }
    }
    let mut counts = raw(Table::ValueCounts)?;
    super::write::rebuild_value_counts(&postings, &mut counts)
}

#[cfg(test)]
mod tests {
    use crate::crypt::{Keys, MasterKey};
    use crate::{Customer, CustomerId, Read, Store, Suppress};

    fn store() -> Store {
        let keys = Keys::new(1, MasterKey::from_bytes(&[3; 32]).unwrap());
        Store::builder().encryption(keys).in_memory().unwrap()
    }

    fn add(store: &Store, name: &str, email: &str) -> CustomerId {
        let mut tx = store.begin_write().unwrap();
        let id = tx
            .insert(Customer::builder().name(name).email(email))
            .unwrap();
        tx.commit().unwrap();
        id
    }

    /// Customer `id`'s wrapped data key as `tx`'s snapshot holds it.
    fn wrapped(tx: &crate::ReadTxn, id: CustomerId) -> Vec<u8> {
        let keys = tx.raw_customer_keys().unwrap();
        redb::ReadableTable::get(keys, id.as_u64())
            .unwrap()
            .unwrap()
            .value()
            .to_vec()
    }

    fn cache(store: &Store) -> &super::KeyCache {
        store.inner.config.crypt.as_ref().unwrap().cache()
    }

    /// The cache must not outlive crypto-shredding: once an erasure has committed, its key is
    /// gone from the cache, and a reader whose older snapshot still holds the wrapped key
    /// neither gets the key from the cache nor puts it back there.
    #[test]
    fn an_erased_key_never_comes_from_the_cache_even_to_an_older_snapshot() {
        let store = store();
        let ada = add(&store, "Ada Lovelace", "ada@example.com");
        let bob = add(&store, "Bob Bobbins", "bob@example.com");
        let warm = store.begin_read().unwrap();
        assert!(warm.find_by_email("ada@example.com").unwrap().is_some());
        assert!(warm.get(bob).unwrap().is_some());
        let old_wrap = wrapped(&warm, ada);
        assert!(cache(&store).get(ada.as_u64(), &old_wrap).is_some());
        drop(warm);

        let old = store.begin_read().unwrap();
        let mut tx = store.begin_write().unwrap();
        tx.erase(ada, "request", Suppress::No).unwrap();
        // From the erasure on, before the commit too, the key is out and stays out.
        assert!(!cache(&store).holds(ada.as_u64()));
        assert!(old.get(ada).unwrap().is_some());
        assert!(!cache(&store).holds(ada.as_u64()));
        tx.commit().unwrap();

        // The older snapshot still reads Ada (snapshot isolation: it unwraps her key from its
        // own pages), but never through the cache, and leaves nothing there.
        assert_eq!(wrapped(&old, ada), old_wrap);
        assert!(old.get(ada).unwrap().is_some());
        assert!(old.find_by_email("ada@example.com").unwrap().is_some());
        assert!(cache(&store).get(ada.as_u64(), &old_wrap).is_none());
        assert!(!cache(&store).holds(ada.as_u64()));
        drop(old);
        let new = store.begin_read().unwrap();
        assert!(new.get(ada).unwrap().is_none());
        // Other customers' keys are cached again by readers begun after the erasure.
        assert!(new.get(bob).unwrap().is_some());
        assert!(cache(&store).holds(bob.as_u64()));
    }

    /// Anonymisation replaces the data key and rotation re-wraps it: after either commits, the
    /// cache holds no key under the wrapped bytes an older snapshot has.
    #[test]
    fn anonymised_and_rotated_keys_leave_the_cache_with_their_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let one = || MasterKey::from_bytes(&[3; 32]).unwrap();
        let store = Store::builder()
            .encryption(Keys::new(1, one()))
            .create(&path)
            .unwrap();
        let ada = add(&store, "Ada Lovelace", "ada@example.com");
        let read = store.begin_read().unwrap();
        assert!(read.get(ada).unwrap().is_some());
        let before = wrapped(&read, ada);
        let mut tx = store.begin_write().unwrap();
        tx.replace_silently(ada, Customer::default()).unwrap();
        tx.commit().unwrap();
        assert!(read.get(ada).unwrap().is_some());
        assert!(cache(&store).get(ada.as_u64(), &before).is_none());
        // A newer reader caches the new key; the older one, whose record is sealed under the
        // destroyed key, still reads it (from its own key row), without caching that key.
        let newer = store.begin_read().unwrap();
        assert_eq!(
            newer.get(ada).unwrap().unwrap().customer,
            Customer::default()
        );
        let now = wrapped(&newer, ada);
        assert!(cache(&store).get(ada.as_u64(), &now).is_some());
        assert!(read.get(ada).unwrap().unwrap().customer.name.is_some());
        assert!(cache(&store).get(ada.as_u64(), &before).is_none());
        assert!(cache(&store).get(ada.as_u64(), &now).is_some());
        drop((read, newer, store));

        let keys = Keys::new(1, one()).with(2, MasterKey::from_bytes(&[4; 32]).unwrap());
        let store = Store::builder().encryption(keys).open(&path).unwrap();
        let read = store.begin_read().unwrap();
        assert!(read.get(ada).unwrap().is_some());
        let under_one = wrapped(&read, ada);
        assert!(cache(&store).get(ada.as_u64(), &under_one).is_some());
        assert_eq!(store.rotate_keys(10).unwrap(), 1);
        assert!(cache(&store).get(ada.as_u64(), &under_one).is_none());
        assert!(read.get(ada).unwrap().is_some());
        assert!(!cache(&store).holds(ada.as_u64()));
    }
}
