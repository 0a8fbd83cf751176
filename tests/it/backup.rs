//! Guards backup and restore: a backup taken while a writer thread commits restores to
//! exactly the state at its sequence number and verifies clean; catch-up from the change feed
//! then brings the copy to the source's state (through merges, erasures and a schema change);
//! a damaged or truncated backup gives a typed error and no store; keys never reach a backup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{TimeZone, Utc};
use customerdb::sample::{self, SplitMix64};
use customerdb::{
    Activity, ActivityQuery, ActivityRecord, AttributeType, AttributeValue, Change, Currency,
    CustomerId, ErrorKind, Read, ReadTxn, Record, Result, Store, Suppress, Survivorship, Tombstone,
};

/// Everything a reader can see: records, activities, the whole feed, tombstones, aliases.
#[derive(Debug, PartialEq)]
struct State {
    seq: u64,
    records: Vec<Record>,
    activities: Vec<ActivityRecord>,
    changes: Vec<Change>,
    tombstones: Vec<Option<Tombstone>>,
    resolved: Vec<Option<CustomerId>>,
}

/// Ids the test ever allocates are below this.
const MAX_ID: u64 = 400;

fn state(tx: &ReadTxn) -> Result<State> {
    let ids = (1..MAX_ID).map(CustomerId::from_u64);
    Ok(State {
        seq: tx.last_seq()?,
        records: tx.customers()?.collect::<Result<_>>()?,
        activities: tx.activities(&ActivityQuery::new().limit(usize::MAX).oldest_first())?,
        changes: tx.changes(0, usize::MAX)?,
        tombstones: ids
            .clone()
            .map(|id| tx.tombstone(id))
            .collect::<Result<_>>()?,
        resolved: ids.map(|id| tx.resolve(id)).collect::<Result<_>>()?,
    })
}

/// One random write transaction: inserts, updates, activities, consent, merges, erasures,
/// removals, and once a newly indexed attribute.
fn random_write(
    store: &Store,
    rng: &mut SplitMix64,
    live: &mut Vec<CustomerId>,
    people: &mut impl Iterator<Item = sample::SampleCustomer>,
    round: u64,
) -> Result<()> {
    let eur = Currency::parse("EUR")?;
    let mut tx = store.begin_write_as("writer")?;
    if round == 100 {
        // A newly indexed attribute: index entries for customers no change names.
        tx.declare_attribute("score", AttributeType::Integer, true)?;
        return tx.commit();
    }
    let pick =
        |rng: &mut SplitMix64, live: &[CustomerId]| live[rng.below(live.len() as u64) as usize];
    match rng.below(10) {
        0..=2 => {
            for p in people.take(2) {
                live.push(tx.insert(p.to_builder())?);
            }
        }
        3 | 4 => {
            let id = pick(rng, live);
            let at = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()
                + chrono::Duration::hours(rng.below(1000).cast_signed());
            tx.add_activity(
                id,
                Activity::purchase(at, 100 + rng.below(900).cast_signed(), eur),
            )?;
        }
        5 => {
            let id = pick(rng, live);
            let mut c = tx.get(id)?.unwrap().customer;
            c.job_title = Some(format!("Role {round}"));
            if tx.schema()?.get("score").is_some() {
                c.attributes
                    .insert("score".into(), AttributeValue::Integer(round.cast_signed()));
            }
            tx.update(id, c)?;
        }
        6 if live.len() > 4 => {
            let a = live.swap_remove(rng.below(live.len() as u64) as usize);
            let b = pick(rng, live);
            let plan = tx.merge_plan(b, &[a], &Survivorship::MostRecent)?;
            tx.merge(&plan)?;
        }
        7 if live.len() > 4 => {
            let id = live.swap_remove(rng.below(live.len() as u64) as usize);
            tx.erase(id, "art. 17", Suppress::No)?;
        }
        8 if live.len() > 4 => {
            let id = live.swap_remove(rng.below(live.len() as u64) as usize);
            tx.remove(id)?;
        }
        _ => {
            let id = pick(rng, live);
            tx.set_durability(customerdb::Durability::None);
            let mut c = tx.get(id)?.unwrap().customer;
            c.tags
                .insert(customerdb::Tag::parse(&format!("t{}", rng.below(5)))?);
            tx.update(id, c)?;
        }
    }
    tx.commit()
}

#[test]
fn a_backup_during_writes_restores_the_state_at_its_seq_and_catches_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::create(dir.path().join("source.redb"))?;
    let mut live = Vec::new();
    let mut tx = store.begin_write()?;
    // One stream: emails and external ids are unique across it.
    let mut people = sample::generate(0xBAC, 300).into_iter();
    for p in people.by_ref().take(40) {
        live.push(tx.insert(p.to_builder())?);
    }
    tx.commit()?;

    let states = Arc::new(Mutex::new(vec![state(&store.begin_read()?)?]));
    let commits = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, states, commits) = (store.clone(), states.clone(), commits.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut rng = SplitMix64::new(0x5EED);
            for round in 0..120 {
                random_write(&store, &mut rng, &mut live, &mut people, round)?;
                // Only this thread writes, so a snapshot now is the state at this commit.
                let s = state(&store.begin_read()?)?;
                states.lock().unwrap().push(s);
                commits.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    while commits.load(Ordering::SeqCst) < 30 && !writer.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let backup = dir.path().join("source.backup");
    let report = store.backup_to(&backup)?;
    let during = commits.load(Ordering::SeqCst);
    writer.join().unwrap()?;
    assert!(
        during < 120,
        "the backup ran while the writer was still writing"
    );

    let expected = {
        let states = states.lock().unwrap();
        let i = states
            .iter()
            .position(|s| s.seq == report.seq)
            .expect("the backup's seq is a commit's");
        let s = &states[i];
        State {
            seq: s.seq,
            records: s.records.clone(),
            activities: s.activities.clone(),
            changes: s.changes.clone(),
            tombstones: s.tombstones.clone(),
            resolved: s.resolved.clone(),
        }
    };
    assert_eq!(report.customers, expected.records.len() as u64);
    assert_eq!(report.bytes, std::fs::metadata(&backup)?.len());

    let copy = Store::restore_from(&backup, dir.path().join("copy.redb"))?;
    assert_eq!(
        state(&copy.begin_read()?)?,
        expected,
        "exactly the state at its seq"
    );
    assert!(copy.verify()?.is_clean());

    // What catch-up has to carry: merges, erasures, removals and a schema change.
    let later: std::collections::BTreeSet<&str> = store
        .begin_read()?
        .changes(report.seq, usize::MAX)?
        .iter()
        .map(|c| c.operation.as_str())
        .collect();
    for op in [
        "merged",
        "erased",
        "remove",
        "attribute_declared",
        "activity_added",
    ] {
        assert!(later.contains(op), "no {op} after the backup: {later:?}");
    }
    let caught = copy.catch_up_from(&store)?;
    assert_eq!(caught.from, report.seq);
    assert_eq!(caught.to, store.begin_read()?.last_seq()?);
    assert!(caught.changes > 0);
    assert_eq!(state(&copy.begin_read()?)?, state(&store.begin_read()?)?);
    let report = copy.verify()?;
    assert!(report.is_clean(), "{:?}", report.problems);
    // Nothing new: a second catch-up changes nothing.
    assert_eq!(copy.catch_up_from(&store)?.changes, 0);
    // A store ahead of its source is not a copy of it.
    let mut tx = copy.begin_write()?;
    tx.insert(customerdb::Customer::builder().name("Only In The Copy"))?;
    tx.commit()?;
    let err = copy.catch_up_from(&store).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Diverged { .. }), "{err}");
    Ok(())
}

fn small_backup(dir: &std::path::Path) -> Result<(Store, std::path::PathBuf)> {
    let store = Store::builder()
        .suppression_key(b"host-held suppression key 7f3a".to_vec())
        .create(dir.join("s.redb"))?;
    let mut tx = store.begin_write_as("dpo")?;
    let mut ids = Vec::new();
    for p in sample::generate(0x0B, 12) {
        ids.push(tx.insert(p.to_builder())?);
    }
    tx.erase(ids[0], "art. 17", Suppress::Yes)?;
    tx.commit()?;
    let path = dir.join("s.backup");
    store.backup_to(&path)?;
    Ok((store, path))
}

#[test]
fn a_damaged_or_truncated_backup_gives_a_typed_error_and_no_store() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, path) = small_backup(dir.path())?;
    let good = std::fs::read(&path)?;
    let target = dir.path().join("r.redb");
    let bad = dir.path().join("bad.backup");
    let mut tried = 0;
    let mut check = |bytes: &[u8], what: &str| -> Result<()> {
        std::fs::write(&bad, bytes)?;
        let err = Store::restore_from(&bad, &target).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Corrupted { .. }),
            "{what}: {err:?}"
        );
        assert!(!target.exists(), "{what}: a store was left behind");
        tried += 1;
        Ok(())
    };
    for len in [
        0,
        7,
        20,
        40,
        good.len() / 2,
        good.len() - 33,
        good.len() - 1,
    ] {
        check(&good[..len], &format!("truncated to {len}"))?;
    }
    let mut rng = SplitMix64::new(99);
    for _ in 0..60 {
        let mut flipped = good.clone();
        let at = rng.below(good.len() as u64) as usize;
        flipped[at] ^= 1 << rng.below(8);
        check(&flipped, &format!("bit flipped at {at}"))?;
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing");
    check(&longer, "trailing bytes")?;
    assert_eq!(tried, 68);
    // The good one restores; an existing file is never overwritten.
    Store::restore_from(&path, &target)?;
    let err = Store::restore_from(&path, &target).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Io);
    Ok(())
}

/// `good` with its backup format version byte set to `version`, checksum mended.
fn with_backup_version(good: &[u8], version: u8) -> Vec<u8> {
    use sha2::Digest;
    let mut bytes = good[..good.len() - 32].to_vec();
    bytes[8] = version;
    let sum = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    bytes
}

#[test]
fn backups_of_format_1_still_restore_and_newer_ones_are_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, path) = small_backup(dir.path())?;
    let good = std::fs::read(&path)?;
    assert_eq!(good[8], customerdb::BACKUP_FORMAT_VERSION);
    assert_eq!(with_backup_version(&good, good[8]), good);
    // A backup of format 1 is one without inserts holding their records: this one has them,
    // and restores all the same.
    let old = dir.path().join("old.backup");
    std::fs::write(&old, with_backup_version(&good, 1))?;
    let copy = Store::restore_from(&old, dir.path().join("old.redb"))?;
    assert_eq!(state(&copy.begin_read()?)?, state(&store.begin_read()?)?);
    assert!(copy.verify()?.is_clean());
    let newer = dir.path().join("newer.backup");
    let next = customerdb::BACKUP_FORMAT_VERSION + 1;
    std::fs::write(&newer, with_backup_version(&good, next))?;
    let err = Store::restore_from(&newer, dir.path().join("newer.redb")).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::FormatVersion { found, .. } if *found == next),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn keys_stay_out_of_backups_and_come_from_the_host_on_restore() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, path) = small_backup(dir.path())?;
    let bytes = std::fs::read(&path)?;
    let key = b"host-held suppression key 7f3a";
    assert!(
        !bytes.windows(key.len()).any(|w| w == key),
        "the key is in the backup"
    );
    let erased = sample::generate(0x0B, 1).remove(0);
    assert!(
        !bytes
            .windows(erased.email.len())
            .any(|w| w == erased.email.as_bytes()),
        "the erased email is in the backup"
    );
    drop(store);
    // The host gives the key again; suppression works in the copy.
    let copy = Store::builder()
        .suppression_key(key.to_vec())
        .restore_from(&path, dir.path().join("copy.redb"))?;
    let mut tx = copy.begin_write()?;
    let err = tx.insert(erased.to_builder()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Suppressed);
    Ok(())
}
