//! Posting lists: the entries of the non-unique indexes, the customers of one index value kept
//! together.
//!
//! Every other part of the store speaks of postings as keys, `tag ++ value ++ id`, one per
//! customer and value: that is what [`crate::index`] computes, what the write path stages and
//! what a backup holds. This module is the one place that knows how they lie on disk. The ids
//! of one value (`tag ++ value`, the *prefix*) are stored sorted, in runs of up to [`MAX_IDS`]:
//!
//! ```text
//! key:   tag ++ value ++ first id (u64 BE)     value: id ++ id ++ ... (u64 BE each, ascending)
//! ```
//!
//! A run's key is the posting key of its first id, so the key ranges of [`crate::index`]
//! (which always end at a value boundary) select exactly the runs of the values they cover.
//! The runs of a prefix partition its ids: a run holds the ids from its first up to, not
//! including, the next run's first. Reading a value costs one B-tree step per run instead of
//! one per customer, and a bulk load of a common value rewrites a few runs instead of inserting
//! thousands of keys.

use std::ops::Bound;

use redb::{ReadableTable, TableDefinition};

use super::storage;
use crate::error::{Error, Result};
use crate::index::{KeyRange, sparse};

/// Posting runs: `tag ++ value ++ first id -> ids`.
pub(crate) const POSTINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("posting_lists");

/// The layout before runs (a store without `meta.posting_lists`): one key per posting,
/// `tag ++ value ++ id -> ()`. Opening such a store moves it into [`POSTINGS`].
pub(crate) const LEGACY_POSTINGS: TableDefinition<&[u8], ()> = TableDefinition::new("postings");

/// The most ids a run holds. A run of 64 is 512 bytes: reading a common value costs a B-tree
/// step per 64 ids (a few per cent of what the ids cost to use), and a change to one customer
/// rewrites little. Measured against runs of 256 (separate runs on a noisy machine): the
/// segment bench read about as fast once the machine's drift is allowed for, and an activity
/// append, which rewrites two runs per metric that moves, took 1.17 times raw redb's time
/// instead of 1.48.
pub(crate) const MAX_IDS: usize = 64;

/// Called with a run's prefix (`tag ++ value`) and its ids as stored.
pub(crate) type RunVisitor<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<()>;

/// Called with a value (`tag ++ value`) whose postings changed, by how many, and whether it
/// certainly had none before (see [`apply`]).
pub(crate) type Changed<'a> = &'a mut dyn FnMut(&[u8], i64, bool) -> Result<()>;

/// A writable postings table.
pub(crate) type PostingTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Splits a posting key into its prefix (`tag ++ value`) and id; `None` if it is too short.
pub(crate) fn split(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() < 10 {
        return None;
    }
    let (prefix, id) = key.split_last_chunk::<8>()?;
    Some((prefix, u64::from_be_bytes(*id)))
}

/// The key of the run of `prefix` starting at `first`.
fn run_key(prefix: &[u8], first: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&first.to_be_bytes());
    k
}

/// Whether a stored run is well formed: a key of at least a tag, a value byte and an id;
/// 1 to [`MAX_IDS`] ids, strictly ascending, the first equal to the key's. `Err` names what
/// is wrong.
pub(crate) fn check_run(key: &[u8], value: &[u8]) -> std::result::Result<(), &'static str> {
    let Some((_, first)) = split(key) else {
        return Err("key too short");
    };
    if value.is_empty() || !value.len().is_multiple_of(8) || value.len() / 8 > MAX_IDS {
        return Err("not 1 to MAX_IDS ids");
    }
    let mut prev = None;
    for id in ids(value) {
        if prev.is_some_and(|p| p >= id) {
            return Err("ids not ascending");
        }
        if prev.is_none() && id != first {
            return Err("first id differs from the key");
        }
        prev = Some(id);
    }
    Ok(())
}

/// The ids of a run's value (whole ids only).
pub(crate) fn ids(value: &[u8]) -> impl Iterator<Item = u64> + '_ {
    value
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
}

/// Feeds `f` the prefix and ids of every run in `range`, in key order, checking as it goes
/// that each value's ids ascend across its runs: a reader may rely on an equality range
/// yielding each id once, in order.
pub(crate) fn for_each_run(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    range: (Bound<&[u8]>, Bound<&[u8]>),
    f: RunVisitor<'_>,
) -> Result<()> {
    // The prefix of the run before and its last id (`None` before the first run).
    let (mut last_prefix, mut last_id) = (Vec::new(), None::<u64>);
    for item in table.range::<&[u8]>(range).map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let (key, value) = (k.value(), v.value());
        let corrupt = |why| Error::corrupted("index entry", why);
        let (prefix, first) = split(key).ok_or_else(|| corrupt("key too short"))?;
        if value.is_empty() || !value.len().is_multiple_of(8) {
            return Err(corrupt("a run of postings is not whole ids"));
        }
        let mut prev = if last_id.is_some() && last_prefix == prefix {
            last_id
        } else {
            last_prefix.clear();
            last_prefix.extend_from_slice(prefix);
            None
        };
        if prev.is_some_and(|p| p >= first) {
            return Err(corrupt("runs of postings overlap"));
        }
        let mut at_first = true;
        for id in ids(value) {
            if prev.is_some_and(|p| p >= id) || (at_first && id != first) {
                return Err(corrupt("postings out of order"));
            }
            at_first = false;
            prev = Some(id);
        }
        last_id = prev;
        f(prefix, value)?;
    }
    Ok(())
}

/// Feeds `f` every id in the runs of `range` (see [`for_each_run`]).
pub(crate) fn scan(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    range: &KeyRange,
    f: &mut dyn FnMut(u64),
) -> Result<()> {
    let bounds = (
        Bound::Included(range.start.as_slice()),
        range
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded),
    );
    for_each_run(table, bounds, &mut |_, value| {
        ids(value).for_each(&mut *f);
        Ok(())
    })
}

/// Feeds `f` every posting key (`prefix ++ id`) of the whole table, in key order.
pub(crate) fn for_each_key(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut key = Vec::new();
    for_each_run(
        table,
        (Bound::Unbounded, Bound::Unbounded),
        &mut |prefix, value| each_key(&mut key, prefix, value, f),
    )
}

/// Feeds `f` the posting key (`prefix ++ id`) of each whole id in `value`, built in `key`.
fn each_key(
    key: &mut Vec<u8>,
    prefix: &[u8],
    value: &[u8],
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    for id in ids(value) {
        key.clear();
        key.extend_from_slice(prefix);
        key.extend_from_slice(&id.to_be_bytes());
        f(key)?;
    }
    Ok(())
}

/// Feeds `f` the posting key (`prefix ++ id`) of every whole id of every run, run by run,
/// without the checks of [`for_each_run`]: for a backup, which copies a damaged store as it
/// is (a restore sorts the keys and writes well-formed runs). A run whose key is too short is
/// skipped.
pub(crate) fn for_each_stored_key(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut key = Vec::new();
    for item in table.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        if let Some((prefix, _)) = split(k.value()) {
            each_key(&mut key, prefix, v.value(), f)?;
        }
    }
    Ok(())
}

/// Walks the whole table for `verify()`: feeds `good` every posting key of a well-formed run,
/// and `bad` the key of every run that is not (see [`check_run`]), or that overlaps the run of
/// its value before it, with what is wrong; reading goes on past a bad run.
pub(crate) fn audit(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    good: &mut dyn FnMut(&[u8]) -> Result<()>,
    bad: &mut dyn FnMut(&[u8], &'static str),
) -> Result<()> {
    let mut last: Option<(Vec<u8>, u64)> = None;
    let mut key = Vec::new();
    for item in table.iter().map_err(storage)? {
        let (k, v) = item.map_err(storage)?;
        let (run, value) = (k.value(), v.value());
        if let Err(why) = check_run(run, value) {
            bad(run, why);
            continue;
        }
        let Some((prefix, first)) = split(run) else {
            continue;
        };
        if last
            .as_ref()
            .is_some_and(|(p, l)| p.as_slice() == prefix && first <= *l)
        {
            bad(run, "overlaps the run before it");
            continue;
        }
        each_key(&mut key, prefix, value, good)?;
        // Checked ascending: the last id is the largest.
        let newest = ids(value).last().unwrap_or(first);
        match &mut last {
            Some((p, l)) if p.as_slice() == prefix => *l = newest,
            _ => last = Some((prefix.to_vec(), newest)),
        }
    }
    Ok(())
}

/// A run read for a change: its first id and its ids as stored.
type Run = (u64, Vec<u8>);

/// The first id of the stored run `key`/`value` of `prefix`: `Corrupted` if the key is of
/// another length (another value's, in a table whose values were not prefix-free) or the run
/// is malformed ([`check_run`]). The write path merges what it reads, so it must not read
/// damage as ids.
fn checked_first(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<u64> {
    let corrupt = |why| Error::corrupted("index entry", why);
    match split(key) {
        Some((p, first)) if p == prefix => {
            check_run(key, value).map_err(corrupt)?;
            Ok(first)
        }
        _ => Err(corrupt("a run key inside a value is not of that value")),
    }
}

/// The run of `prefix` that would hold `id`: the last whose first id is at most `id`.
fn floor_run(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    id: u64,
) -> Result<Option<Run>> {
    let (lo, hi) = (run_key(prefix, 0), run_key(prefix, id));
    let mut range = table
        .range::<&[u8]>((
            Bound::Included(lo.as_slice()),
            Bound::Included(hi.as_slice()),
        ))
        .map_err(storage)?;
    match range.next_back() {
        Some(item) => {
            let (k, v) = item.map_err(storage)?;
            let first = checked_first(prefix, k.value(), v.value())?;
            Ok(Some((first, v.value().to_vec())))
        }
        None => Ok(None),
    }
}

/// The first run of `prefix` starting after `id`, and the first id of the run after that
/// (read with one range).
fn runs_after(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    id: u64,
) -> Result<(Option<Run>, Option<u64>)> {
    let (lo, hi) = (run_key(prefix, id), run_key(prefix, u64::MAX));
    let mut range = table
        .range::<&[u8]>((
            Bound::Excluded(lo.as_slice()),
            Bound::Included(hi.as_slice()),
        ))
        .map_err(storage)?;
    let Some(item) = range.next() else {
        return Ok((None, None));
    };
    let (k, v) = item.map_err(storage)?;
    let run = (
        checked_first(prefix, k.value(), v.value())?,
        v.value().to_vec(),
    );
    // Of the run after it only the first id is wanted: it is not read or copied.
    let next = range
        .next()
        .map(|item| first_of(prefix, item.map_err(storage)?.0.value()))
        .transpose()?;
    Ok((Some(run), next))
}

/// The first id of the run of `prefix` starting after `id`, from its key alone.
fn next_first(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    id: u64,
) -> Result<Option<u64>> {
    let (lo, hi) = (run_key(prefix, id), run_key(prefix, u64::MAX));
    table
        .range::<&[u8]>((
            Bound::Excluded(lo.as_slice()),
            Bound::Included(hi.as_slice()),
        ))
        .map_err(storage)?
        .next()
        .map(|item| first_of(prefix, item.map_err(storage)?.0.value()))
        .transpose()
}

/// The first id in the run key `key` of `prefix`; `Corrupted` if the key is another value's.
fn first_of(prefix: &[u8], key: &[u8]) -> Result<u64> {
    match split(key) {
        Some((p, first)) if p == prefix => Ok(first),
        _ => Err(Error::corrupted(
            "index entry",
            "a run key inside a value is not of that value",
        )),
    }
}

/// Whether the posting `key` (`prefix ++ id`) is stored.
pub(crate) fn contains(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<bool> {
    let Some((prefix, id)) = split(key) else {
        return Ok(false);
    };
    // Not checked: `verify()` asks, and reports damaged runs itself.
    let lo = run_key(prefix, 0);
    let mut range = table
        .range::<&[u8]>((Bound::Included(lo.as_slice()), Bound::Included(key)))
        .map_err(storage)?;
    match range.next_back() {
        Some(item) => {
            let (_, v) = item.map_err(storage)?;
            Ok(v.value().chunks_exact(8).any(|c| c == id.to_be_bytes()))
        }
        None => Ok(false),
    }
}

/// Applies posting changes, given in key order with at most one per key (`true` adds the
/// posting, `false` removes it), and calls `changed` with each value (`tag ++ value`) whose
/// postings changed, by how many (a change that finds the posting already there, or already
/// gone, counts nothing), and whether the value certainly had no posting before.
///
/// `unwritten_from`: no posting of an id from here up is stored (the ids the transaction
/// allocated since it last wrote postings). Such an id is above every stored one, so a value
/// without a run at or below it has no run at all, and a run starting at it cannot exist. Two
/// B-tree steps are saved with that, each for one new customer's id added alone to a value:
/// - of a [`sparse`](crate::index::sparse) index, it is written as a run of its own without
///   reading the value's runs;
/// - of any other, a value found without runs is known to be new, which spares its count a
///   read.
///
/// Pass `u64::MAX` to always read.
pub(crate) fn apply<'k>(
    table: &mut PostingTable<'_>,
    ops: impl IntoIterator<Item = (&'k [u8], bool)>,
    unwritten_from: u64,
    changed: Changed<'_>,
) -> Result<()> {
    let mut prefix: Vec<u8> = Vec::new();
    let mut group: Vec<(u64, bool)> = Vec::new();
    for (key, insert) in ops {
        let (p, id) = split(key).ok_or_else(|| Error::corrupted("index entry", "key too short"))?;
        if p != prefix.as_slice() {
            if !group.is_empty() {
                apply_value(table, &prefix, &group, unwritten_from, changed)?;
                group.clear();
            }
            prefix.clear();
            prefix.extend_from_slice(p);
        }
        debug_assert!(
            group.last().is_none_or(|&(last, _)| last < id),
            "changes out of order"
        );
        group.push((id, insert));
    }
    if !group.is_empty() {
        apply_value(table, &prefix, &group, unwritten_from, changed)?;
    }
    Ok(())
}

/// Applies the changes `ops` (ascending ids) to the runs of one value, a run at a time: the
/// run an id falls in is the last starting at or below it (below every run: the first run,
/// which it joins), and holds the ids below the next run's first. Only the runs the changes
/// fall in are read and rewritten (each evenly split if it outgrows [`MAX_IDS`]), so a few
/// changes scattered over a long list cost a few runs.
fn apply_value(
    table: &mut PostingTable<'_>,
    prefix: &[u8],
    ops: &[(u64, bool)],
    unwritten_from: u64,
    changed: Changed<'_>,
) -> Result<()> {
    if let [(id, true)] = *ops {
        if id >= unwritten_from && crate::store::write::posting_tag(prefix).is_some_and(sparse) {
            let key = run_key(prefix, id);
            if table
                .insert(key.as_slice(), id.to_be_bytes().as_slice())
                .map_err(storage)?
                .is_some()
            {
                return Err(Error::corrupted(
                    "index entry",
                    "a run starts at an id the store has not allocated",
                ));
            }
            return changed(prefix, 1, false);
        }
    }
    let mut delta = 0i64;
    // Until a run turns up, or a step does not look where one could be.
    let mut known_new = true;
    let mut rest = ops;
    let mut current: Vec<u64> = Vec::new();
    let mut merged: Vec<u64> = Vec::new();
    while let Some(&(id, insert)) = rest.first() {
        let alone = rest.len() == 1;
        let (base, next) = match floor_run(&*table, prefix, id)? {
            // One change needs no bound: it falls in its floor run.
            Some(run) if alone => (Some(run), None),
            Some(run) => (Some(run), next_first(&*table, prefix, id)?),
            // No run at or below an unwritten id: none above it either.
            None if alone && insert && id >= unwritten_from => (None, None),
            // Nothing to remove; whether runs lie above is not looked at.
            None if alone && !insert => {
                known_new = false;
                (None, None)
            }
            // Below every run: join the first.
            None => runs_after(&*table, prefix, id)?,
        };
        known_new &= base.is_none() && next.is_none();
        let take = if alone {
            1
        } else {
            next.map_or(rest.len(), |n| rest.partition_point(|&(i, _)| i < n))
        };
        let (mine, later) = rest.split_at(take.max(1));
        rest = later;
        current.clear();
        if let Some((_, run)) = &base {
            current.extend(ids(run));
        }
        let Some(d) = merge(&current, mine, &mut merged) else {
            continue;
        };
        delta += d;
        let old = base.as_ref().map(|(first, _)| *first);
        write_runs(table, prefix, old.as_slice(), &merged)?;
    }
    if delta == 0 {
        // As many added as removed (or nothing changed): the value's count stands.
        return Ok(());
    }
    changed(prefix, delta, known_new)
}

/// Merges the sorted changes `ops` into the sorted ids `current`, into `out`; returns how many
/// ids were gained (less those lost), or `None` if no change found anything to do.
fn merge(current: &[u64], ops: &[(u64, bool)], out: &mut Vec<u64>) -> Option<i64> {
    out.clear();
    let (mut delta, mut moved) = (0i64, false);
    let mut existing = current.iter().copied().peekable();
    for &(id, insert) in ops {
        while let Some(e) = existing.next_if(|&e| e < id) {
            out.push(e);
        }
        let present = existing.next_if_eq(&id).is_some();
        if insert {
            out.push(id);
        }
        match (present, insert) {
            (false, true) => delta += 1,
            (true, false) => delta -= 1,
            _ => continue,
        }
        moved = true;
    }
    out.extend(existing);
    moved.then_some(delta)
}

/// Replaces the runs of `prefix` starting at `old_firsts` with `ids` cut into runs of
/// [`MAX_IDS`] at most, evenly filled.
fn write_runs(
    table: &mut PostingTable<'_>,
    prefix: &[u8],
    old_firsts: &[u64],
    ids: &[u64],
) -> Result<()> {
    let runs = ids.len().div_ceil(MAX_IDS);
    let mut new_firsts = Vec::with_capacity(runs);
    let mut bytes = Vec::with_capacity(MAX_IDS * 8);
    let mut start = 0;
    for i in 0..runs {
        // Even sizes: the first `ids.len() % runs` runs take one more.
        let end = start + ids.len() / runs + usize::from(i < ids.len() % runs);
        let run = &ids[start..end];
        bytes.clear();
        for id in run {
            bytes.extend_from_slice(&id.to_be_bytes());
        }
        new_firsts.push(run[0]);
        table
            .insert(run_key(prefix, run[0]).as_slice(), bytes.as_slice())
            .map_err(storage)?;
        start = end;
    }
    for first in old_firsts {
        if new_firsts.binary_search(first).is_err() {
            table
                .remove(run_key(prefix, *first).as_slice())
                .map_err(storage)?;
        }
    }
    Ok(())
}

/// Adds the posting keys `keys` (sorted, any number) to the table.
pub(crate) fn insert_sorted(table: &mut PostingTable<'_>, keys: &[Vec<u8>]) -> Result<()> {
    apply(
        table,
        keys.iter().map(|k| (k.as_slice(), true)),
        u64::MAX,
        &mut |_, _, _| Ok(()),
    )
}

/// Removes every posting whose id `drop` selects.
pub(crate) fn remove_ids(table: &mut PostingTable<'_>, drop: &dyn Fn(u64) -> bool) -> Result<()> {
    let mut gone = Vec::new();
    for_each_key(&*table, &mut |key| {
        if split(key).is_some_and(|(_, id)| drop(id)) {
            gone.push(key.to_vec());
        }
        Ok(())
    })?;
    apply(
        table,
        gone.iter().map(|k| (k.as_slice(), false)),
        u64::MAX,
        &mut |_, _, _| Ok(()),
    )
}

/// Moves the postings of the old layout ([`LEGACY_POSTINGS`]) into runs, and deletes the old
/// table.
pub(crate) fn migrate(txn: &redb::WriteTransaction) -> Result<()> {
    const BATCH: usize = 100_000;
    {
        let old = txn.open_table(LEGACY_POSTINGS).map_err(storage)?;
        let mut new = txn.open_table(POSTINGS).map_err(storage)?;
        let mut keys: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        for item in old.iter().map_err(storage)? {
            let (k, ()) = item.map_err(storage).map(|(k, v)| (k, v.value()))?;
            // A key too short to hold an id is damage no run can keep: `verify()` could only
            // have reported it, and it must not stop the store opening.
            if split(k.value()).is_none() {
                continue;
            }
            keys.push(k.value().to_vec());
            if keys.len() == BATCH {
                insert_sorted(&mut new, &keys)?;
                keys.clear();
            }
        }
        insert_sorted(&mut new, &keys)?;
    }
    txn.delete_table(LEGACY_POSTINGS).map_err(storage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn key(prefix: &[u8], id: u64) -> Vec<u8> {
        run_key(prefix, id)
    }

    fn with_table<T>(f: impl FnOnce(&mut PostingTable<'_>) -> T) -> T {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        let out = {
            let mut t = txn.open_table(POSTINGS).unwrap();
            f(&mut t)
        };
        txn.commit().unwrap();
        let _ = db.begin_read().unwrap();
        out
    }

    fn all(t: &PostingTable<'_>, prefix: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        let range = KeyRange {
            start: prefix.to_vec(),
            end: crate::index::key::prefix_end(prefix),
        };
        scan(t, &range, &mut |id| out.push(id)).unwrap();
        out
    }

    fn check_all(t: &PostingTable<'_>) {
        for item in t.iter().unwrap() {
            let (k, v) = item.unwrap();
            check_run(k.value(), v.value()).unwrap();
        }
    }

    #[test]
    fn runs_follow_a_model_through_random_changes() {
        // The last is a sparse index's value (a match key), written blind when it can be.
        let prefixes: [&[u8]; 4] = [
            b"\x00\x04a\x00\x01",
            b"\x00\x04b\x00\x01",
            b"\x00\x09x",
            b"\x00\x16m\x00\x01",
        ];
        let mut model: [std::collections::BTreeSet<u64>; 4] = Default::default();
        // Ids from here up were never written: each batch adds a few.
        let mut unwritten = 2_000u64;
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        with_table(|t| {
            for _ in 0..60 {
                // A batch of changes to random values and ids, sorted by key, one per key.
                let mut batch = std::collections::BTreeMap::new();
                for _ in 0..(next() % 700) {
                    let p = (next() % 4) as usize;
                    let id = next() % 2_000;
                    batch.insert(key(prefixes[p], id), next() % 3 != 0);
                }
                let fresh = next() % 4;
                for id in unwritten..unwritten + fresh {
                    batch.insert(key(prefixes[(next() % 4) as usize], id), true);
                }
                let mut deltas = std::collections::HashMap::<Vec<u8>, i64>::new();
                apply(
                    t,
                    batch.iter().map(|(k, i)| (k.as_slice(), *i)),
                    unwritten,
                    &mut |p, d, new| {
                        let at = prefixes.iter().position(|q| *q == p).unwrap();
                        assert!(!new || model[at].is_empty(), "a value with ids called new");
                        *deltas.entry(p.to_vec()).or_default() += d;
                        Ok(())
                    },
                )
                .unwrap();
                unwritten += fresh;
                for (p, m) in prefixes.iter().zip(model.iter_mut()) {
                    let before = i64::try_from(m.len()).unwrap();
                    for (k, insert) in batch.range(key(p, 0)..=key(p, u64::MAX)) {
                        let (_, id) = split(k).unwrap();
                        if *insert {
                            m.insert(id);
                        } else {
                            m.remove(&id);
                        }
                    }
                    let d = deltas.get(*p).copied().unwrap_or(0);
                    assert_eq!(i64::try_from(m.len()).unwrap() - before, d);
                    assert_eq!(all(t, p), m.iter().copied().collect::<Vec<_>>());
                    for id in [0, 1, 17, 999, 1_999] {
                        assert_eq!(contains(&*t, &key(p, id)).unwrap(), m.contains(&id));
                    }
                }
                check_all(t);
            }
            let total: usize = model.iter().map(std::collections::BTreeSet::len).sum();
            let mut n = 0;
            for_each_key(&*t, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(n, total);
            // Removing by id leaves exactly the others.
            remove_ids(t, &|id| id % 2 == 0).unwrap();
            for (p, m) in prefixes.iter().zip(&model) {
                let odd: Vec<u64> = m.iter().copied().filter(|id| id % 2 == 1).collect();
                assert_eq!(all(t, p), odd);
            }
            check_all(t);
        });
    }

    #[test]
    fn a_bulk_append_fills_runs_evenly() {
        let p: &[u8] = b"\x00\x09de\x00\x01";
        with_table(|t| {
            let n = 4 * (MAX_IDS as u64 - 6);
            let keys: Vec<Vec<u8>> = (1..=n).map(|id| key(p, id)).collect();
            insert_sorted(t, &keys).unwrap();
            let sizes: Vec<usize> = t
                .iter()
                .unwrap()
                .map(|i| i.unwrap().1.value().len() / 8)
                .collect();
            let s = MAX_IDS - 6;
            assert_eq!(sizes, vec![s; 4]);
            // One more id splits nothing it does not touch: only the last run grows.
            insert_sorted(t, &[key(p, n + 1)]).unwrap();
            let sizes: Vec<usize> = t
                .iter()
                .unwrap()
                .map(|i| i.unwrap().1.value().len() / 8)
                .collect();
            assert_eq!(sizes, vec![s, s, s, s + 1]);
            // Removing a run's first id moves its key.
            apply(
                t,
                [(key(p, 1).as_slice(), false)],
                u64::MAX,
                &mut |_, d, _| {
                    assert_eq!(d, -1);
                    Ok(())
                },
            )
            .unwrap();
            assert!(t.get(key(p, 1).as_slice()).unwrap().is_none());
            assert!(t.get(key(p, 2).as_slice()).unwrap().is_some());
            check_all(t);
        });
    }

    #[test]
    fn scattered_changes_rewrite_only_their_runs() {
        let p: &[u8] = b"\x00\x10\x80\x00\x00\x00\x00\x00\x00\x01";
        with_table(|t| {
            let n = 4 * (MAX_IDS as u64 - 6);
            let keys: Vec<Vec<u8>> = (1..=n).map(|id| key(p, id)).collect();
            insert_sorted(t, &keys).unwrap();
            let s = MAX_IDS - 6;
            let sizes = |t: &PostingTable<'_>| -> Vec<usize> {
                t.iter()
                    .unwrap()
                    .map(|i| i.unwrap().1.value().len() / 8)
                    .collect()
            };
            assert_eq!(sizes(t), vec![s; 4]);
            // One removal in the first run and one in the last: the two between keep theirs.
            let ops = [(key(p, 3), false), (key(p, n - 3), false)];
            let mut total = 0;
            apply(
                t,
                ops.iter().map(|(k, i)| (k.as_slice(), *i)),
                u64::MAX,
                &mut |_, d, _| {
                    total += d;
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(total, -2);
            assert_eq!(sizes(t), vec![s - 1, s, s, s - 1]);
            check_all(t);
        });
    }

    #[test]
    fn the_write_path_refuses_a_malformed_run() {
        let p: &[u8] = b"\x00\x09de\x00\x01";
        let mut partial = 5u64.to_be_bytes().to_vec();
        partial.extend_from_slice(&[0, 0, 0]);
        let descending: Vec<u8> = [5u64, 3].iter().flat_map(|i| i.to_be_bytes()).collect();
        for bad in [partial, descending, Vec::new()] {
            with_table(|t| {
                t.insert(key(p, 5).as_slice(), bad.as_slice()).unwrap();
                for id in [7, 2] {
                    let got = apply(
                        t,
                        [(key(p, id).as_slice(), true)],
                        u64::MAX,
                        &mut |_, _, _| Ok(()),
                    );
                    assert!(
                        got.as_ref()
                            .is_err_and(|e| matches!(e.kind(), crate::ErrorKind::Corrupted { .. })),
                        "run {bad:?}, id {id}: {got:?}"
                    );
                }
            });
        }
    }

    #[test]
    fn a_run_of_a_longer_prefix_is_not_taken_for_one_of_this_prefix() {
        // Index values are prefix-free, but a crafted backup need not be.
        let a: &[u8] = b"\x00\x0a";
        let b: &[u8] = b"\x00\x0a\x00";
        with_table(|t| {
            insert_sorted(t, &[key(b, 0)]).unwrap();
            assert!(!contains(&*t, &key(a, 0)).unwrap());
            let got = insert_sorted(t, &[key(a, 5)]);
            assert!(got.is_err() || !contains(&*t, &key(a, 0)).unwrap());
        });
    }

    #[test]
    fn ids_added_below_the_first_run_join_it() {
        let p: &[u8] = b"\x00\x09de\x00\x01";
        with_table(|t| {
            for id in (1..=512).rev() {
                insert_sorted(t, &[key(p, id)]).unwrap();
            }
            let runs = t.iter().unwrap().count();
            assert!(runs <= 512 / MAX_IDS * 2, "{runs} runs for 512 ids");
            check_all(t);
            apply(t, [(key(p, 0).as_slice(), true)], 513, &mut |_, d, new| {
                assert_eq!((d, new), (1, false));
                Ok(())
            })
            .unwrap();
            assert_eq!(all(t, p), (0..=512).collect::<Vec<_>>());
            let first = t.get(key(p, 0).as_slice()).unwrap().unwrap().value().len() / 8;
            assert!(first > 1, "joined, not a run of its own");
            check_all(t);
        });
    }

    #[test]
    fn an_unwritten_id_alone_joins_the_last_run_unless_the_index_is_sparse() {
        let common: &[u8] = b"\x00\x09de\x00\x01";
        let sparse: &[u8] = b"\x00\x16k\x00\x01";
        with_table(|t| {
            insert_sorted(t, &[key(common, 3), key(sparse, 3)]).unwrap();
            for (p, runs, new) in [(common, 1, false), (sparse, 2, false)] {
                apply(t, [(key(p, 9).as_slice(), true)], 4, &mut |_, d, n| {
                    assert_eq!((d, n), (1, new));
                    Ok(())
                })
                .unwrap();
                assert_eq!(all(t, p), [3, 9]);
                let range = key(p, 0)..=key(p, u64::MAX);
                let stored = t.range::<&[u8]>(range.start().as_slice()..=range.end().as_slice());
                assert_eq!(stored.unwrap().count(), runs);
            }
            // A value without runs is known to be new.
            let other: &[u8] = b"\x00\x09fr\x00\x01";
            apply(
                t,
                [(key(other, 10).as_slice(), true)],
                10,
                &mut |_, d, n| {
                    assert_eq!((d, n), (1, true));
                    Ok(())
                },
            )
            .unwrap();
            // A run at an id said to be unwritten is damage, not overwritten.
            let got = apply(t, [(key(sparse, 9).as_slice(), true)], 9, &mut |_, _, _| {
                Ok(())
            });
            assert!(got.is_err());
            assert_eq!(all(t, sparse), [3, 9]);
            check_all(t);
        });
    }

    #[test]
    fn extreme_ids_and_emptying_a_value() {
        let p: &[u8] = b"\x00\x09de\x00\x01";
        with_table(|t| {
            let ops = |t: &mut PostingTable<'_>, v: &[(u64, bool)]| {
                let keys: Vec<(Vec<u8>, bool)> = v.iter().map(|&(id, i)| (key(p, id), i)).collect();
                let mut d = 0;
                apply(
                    t,
                    keys.iter().map(|(k, i)| (k.as_slice(), *i)),
                    u64::MAX,
                    &mut |_, x, _| {
                        d += x;
                        Ok(())
                    },
                )
                .unwrap();
                check_all(t);
                d
            };
            assert_eq!(ops(t, &[(u64::MAX, true)]), 1);
            assert_eq!(ops(t, &[(u64::MAX, true)]), 0);
            assert_eq!(
                ops(t, &[(0, true), (u64::MAX - 1, true), (u64::MAX, false)]),
                1
            );
            assert_eq!(all(t, p), vec![0, u64::MAX - 1]);
            let many: Vec<(u64, bool)> = (1..600).map(|i| (i * 3, true)).collect();
            assert_eq!(ops(t, &many), 599);
            // Remove the first id of every run, add ids just below each.
            let firsts: Vec<u64> = t
                .iter()
                .unwrap()
                .map(|i| split(i.unwrap().0.value()).unwrap().1)
                .collect();
            let mut v: Vec<(u64, bool)> = Vec::new();
            for f in &firsts {
                if *f > 1 && *f != u64::MAX - 1 {
                    v.push((f - 1, true));
                }
                v.push((*f, false));
            }
            v.sort_unstable();
            v.dedup_by_key(|x| x.0);
            let before = i64::try_from(all(t, p).len()).unwrap();
            let d = ops(t, &v);
            assert_eq!(i64::try_from(all(t, p).len()).unwrap(), before + d);
            let everything: Vec<(u64, bool)> = all(t, p).into_iter().map(|i| (i, false)).collect();
            assert_eq!(
                ops(t, &everything),
                -i64::try_from(everything.len()).unwrap()
            );
            assert!(t.iter().unwrap().next().is_none());
        });
    }

    #[test]
    fn malformed_runs_are_refused_not_read() {
        let p: &[u8] = b"\x00\x09de\x00\x01";
        assert!(check_run(&key(p, 5), &5u64.to_be_bytes()).is_ok());
        assert!(check_run(&key(p, 5), &6u64.to_be_bytes()).is_err());
        assert!(check_run(&key(p, 5), &[]).is_err());
        assert!(check_run(&key(p, 5), &[0; 7]).is_err());
        assert!(check_run(b"\x00\x09", &5u64.to_be_bytes()).is_err());
        let descending: Vec<u8> = [5u64, 3].iter().flat_map(|i| i.to_be_bytes()).collect();
        assert!(check_run(&key(p, 5), &descending).is_err());
        with_table(|t| {
            t.insert(key(p, 5).as_slice(), descending.as_slice())
                .unwrap();
            let range = KeyRange {
                start: p.to_vec(),
                end: None,
            };
            let err = scan(&*t, &range, &mut |_| {}).unwrap_err();
            assert!(matches!(err.kind(), crate::ErrorKind::Corrupted { .. }));
        });
    }
}
