//! Guards `verify()`: each kind of damage planted directly in the redb file (tables as documented
//! in ARCHITECTURE.md) must be reported. Also guards the format-version check on open.

use customerdb::{Customer, ErrorKind, Problem, Read, Result, Store};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("customers");
/// Postings: runs of ids per index value, `tag ++ value ++ first id -> ids (u64 BE each)`.
const POSTINGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("posting_lists");
/// The layout before runs: one key per posting.
const LEGACY_POSTINGS: TableDefinition<&[u8], ()> = TableDefinition::new("postings");
const UNIQUES: TableDefinition<&[u8], u64> = TableDefinition::new("uniques");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VALUE_COUNTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("value_counts");

/// A store file with three customers, closed.
fn seeded() -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v.redb");
    let store = Store::create(&path)?;
    let mut tx = store.begin_write()?;
    for (i, name) in ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
        .iter()
        .enumerate()
    {
        tx.insert(
            Customer::builder()
                .name(*name)
                .email(format!("c{i}@example.com"))
                .phone(crate::PHONES[i])
                .tag("t")
                .external_id("shop", i.to_string()),
        )?;
    }
    tx.commit()?;
    assert!(store.verify()?.is_clean());
    Ok((dir, path))
}

/// Applies `plant` to the raw file, then returns what `verify()` reports.
fn plant(f: impl FnOnce(&redb::WriteTransaction)) -> Result<Vec<Problem>> {
    let (_dir, path) = seeded()?;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        f(&txn);
        txn.commit().unwrap();
    }
    let problems = Store::open(&path)?.verify()?.problems;
    assert!(!problems.is_empty(), "planted damage was not found");
    Ok(problems)
}

/// The key and ids of the first run of postings.
fn first_posting(txn: &redb::WriteTransaction) -> (Vec<u8>, Vec<u8>) {
    let t = txn.open_table(POSTINGS).unwrap();
    let (k, v) = t.first().unwrap().unwrap();
    (k.value().to_vec(), v.value().to_vec())
}

#[test]
fn verify_finds_a_missing_index_entry() -> Result<()> {
    let p = plant(|txn| {
        let (k, _) = first_posting(txn);
        txn.open_table(POSTINGS)
            .unwrap()
            .remove(k.as_slice())
            .unwrap();
    })?;
    assert!(p.iter().any(|p| matches!(p, Problem::MissingEntry { .. })));
    Ok(())
}

#[test]
fn verify_finds_an_orphan_index_entry() -> Result<()> {
    let p = plant(|txn| {
        let (mut k, _) = first_posting(txn);
        let n = k.len();
        k[n - 8..].copy_from_slice(&999u64.to_be_bytes());
        txn.open_table(POSTINGS)
            .unwrap()
            .insert(k.as_slice(), 999u64.to_be_bytes().as_slice())
            .unwrap();
    })?;
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::OrphanEntry { id, .. } if id.as_u64() == 999))
    );
    Ok(())
}

#[test]
fn verify_finds_a_changed_index_value() -> Result<()> {
    let p = plant(|txn| {
        let (k, ids) = first_posting(txn);
        let mut changed = k.clone();
        changed[3] ^= 0x20;
        let mut t = txn.open_table(POSTINGS).unwrap();
        t.remove(k.as_slice()).unwrap();
        t.insert(changed.as_slice(), ids.as_slice()).unwrap();
    })?;
    assert!(p.iter().any(|p| matches!(p, Problem::MissingEntry { .. })));
    assert!(p.iter().any(|p| matches!(p, Problem::OrphanEntry { .. })));
    Ok(())
}

/// Damages the store file at `path`: the run of tag "t" (every seeded customer has it) gets
/// its ids in reverse order.
fn reverse_the_tag_run(path: &std::path::Path) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(POSTINGS).unwrap();
        let (k, v) = t
            .iter()
            .unwrap()
            .map(|i| i.unwrap())
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .find(|(k, v)| k.starts_with(&10u16.to_be_bytes()) && v.len() == 24)
            .expect("the run of tag t");
        let mut ids: Vec<&[u8]> = v.chunks(8).collect();
        ids.reverse();
        t.insert(k.as_slice(), ids.concat().as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn verify_finds_a_malformed_run_of_postings_and_reads_refuse_it() -> Result<()> {
    // The tag run (every customer has tag "t"): its ids reversed.
    let (dir, path) = seeded()?;
    reverse_the_tag_run(&path);
    let store = Store::open(&path)?;
    let problems = store.verify()?.problems;
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::MalformedEntry { .. })),
        "{problems:?}"
    );
    let err = store
        .begin_read()?
        .ids(&customerdb::Index::Tag, &customerdb::Scan::eq("t"))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Corrupted { .. }), "{err}");
    drop(dir);
    Ok(())
}

/// A store written with one key per posting (before runs) is moved into runs when opened, and
/// then reads and verifies as before.
#[test]
fn a_store_with_the_older_postings_layout_is_moved_into_runs() -> Result<()> {
    let (_dir, path) = seeded()?;
    let before = {
        let store = Store::open(&path)?;
        let tx = store.begin_read()?;
        tx.ids(&customerdb::Index::Tag, &customerdb::Scan::eq("t"))?
    };
    assert_eq!(before.len(), 3);
    to_version_1(&path, &[]);
    let store = Store::open(&path)?;
    let report = store.verify()?;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.entries > 10);
    let tx = store.begin_read()?;
    assert_eq!(
        tx.ids(&customerdb::Index::Tag, &customerdb::Scan::eq("t"))?,
        before
    );
    drop(tx);
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(
        txn.open_table(LEGACY_POSTINGS).is_err(),
        "the older table is gone"
    );
    Ok(())
}

#[test]
fn verify_finds_a_unique_key_pointing_elsewhere() -> Result<()> {
    let p = plant(|txn| {
        let mut t = txn.open_table(UNIQUES).unwrap();
        let (k, v) = {
            let first = t.first().unwrap().unwrap();
            (first.0.value().to_vec(), first.1.value())
        };
        t.insert(k.as_slice(), if v == 1 { 2 } else { 1 }).unwrap();
    })?;
    assert!(p.iter().any(|p| matches!(p, Problem::WrongOwner { .. })));
    Ok(())
}

#[test]
fn verify_finds_a_record_without_its_entries_and_entries_without_a_record() -> Result<()> {
    let p = plant(|txn| {
        txn.open_table(CUSTOMERS).unwrap().remove(2).unwrap();
    })?;
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::OrphanEntry { id, .. } if id.as_u64() == 2))
    );
    Ok(())
}

#[test]
fn verify_finds_an_undecodable_record() -> Result<()> {
    let p = plant(|txn| {
        txn.open_table(CUSTOMERS)
            .unwrap()
            .insert(1, [customerdb::FORMAT_VERSION, 0xFF, 0xFF, 0xFF].as_slice())
            .unwrap();
    })?;
    assert!(p.iter().any(|p| matches!(
        p,
        Problem::UndecodableRecord {
            error: ErrorKind::Corrupted { .. },
            ..
        }
    )));
    Ok(())
}

#[test]
fn verify_finds_a_record_under_the_wrong_id() -> Result<()> {
    let p = plant(|txn| {
        let mut t = txn.open_table(CUSTOMERS).unwrap();
        let bytes = t.get(1).unwrap().unwrap().value().to_vec();
        t.insert(3, bytes.as_slice()).unwrap();
    })?;
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::UndecodableRecord { .. }))
    );
    Ok(())
}

#[test]
fn verify_finds_a_next_id_that_would_reuse_ids() -> Result<()> {
    let p = plant(|txn| {
        txn.open_table(META)
            .unwrap()
            .insert("next_id", 2u64.to_le_bytes().as_slice())
            .unwrap();
    })?;
    assert!(p.iter().any(|p| matches!(
        p,
        Problem::NextIdBehind {
            next_id: 2,
            max_id: 3
        }
    )));
    Ok(())
}

#[test]
fn a_store_of_another_format_version_is_refused_on_open() -> Result<()> {
    let (_dir, path) = seeded()?;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", [99u8].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).expect_err("future version");
    assert_eq!(
        err.kind(),
        &ErrorKind::FormatVersion {
            found: 99,
            supported: customerdb::STORE_FORMAT_VERSION
        }
    );
    Ok(())
}

#[test]
fn a_corrupted_record_is_an_error_on_read_not_a_panic() -> Result<()> {
    let (_dir, path) = seeded()?;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(CUSTOMERS)
            .unwrap()
            .insert(2, [customerdb::FORMAT_VERSION, 7].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path)?;
    let tx = store.begin_read()?;
    let err = tx
        .get(customerdb::CustomerId::from_u64(2))
        .expect_err("corrupt");
    assert!(matches!(err.kind(), ErrorKind::Corrupted { .. }));
    let results: Vec<_> = tx.customers()?.collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    Ok(())
}

#[test]
fn verify_finds_a_wrong_value_count_and_a_store_without_counts_gets_them_on_open() -> Result<()> {
    let p = plant(|txn| {
        // The first run of a counted index: family names (tag 4).
        let k = {
            let t = txn.open_table(POSTINGS).unwrap();
            let mut runs = t.range(4u16.to_be_bytes().as_slice()..).unwrap();
            runs.next().unwrap().unwrap().0.value().to_vec()
        };
        assert_eq!(k[..2], 4u16.to_be_bytes());
        let value = &k[..k.len() - 8];
        txn.open_table(VALUE_COUNTS)
            .unwrap()
            .insert(value, 7u64.to_be_bytes().as_slice())
            .unwrap();
    })?;
    assert!(
        p.iter().any(|p| matches!(
            p,
            Problem::WrongCount {
                stored: 7,
                actual: 1,
                ..
            }
        )),
        "{p:?}"
    );
    // A store written before counts were kept: no counts and no marker. Opening builds them.
    let (_dir, path) = seeded()?;
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(VALUE_COUNTS)
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        txn.open_table(META)
            .unwrap()
            .remove("value_counts")
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path)?;
    assert!(store.verify()?.is_clean());
    let tags = store.begin_read()?.value_counts(&customerdb::Index::Tag)?;
    assert_eq!(tags.values.len(), 1);
    assert_eq!((tags.values[0].1, tags.customers), (3, 3));
    Ok(())
}

#[test]
fn counts_leave_out_nearly_distinct_indexes_and_old_rules_are_rebuilt_on_open() -> Result<()> {
    let (_dir, path) = seeded()?;
    {
        let store = Store::open(&path)?;
        let tx = store.begin_read()?;
        for index in [
            customerdb::Index::Phone,
            customerdb::Index::CreatedAt,
            customerdb::Index::MatchKey,
        ] {
            let err = tx.value_counts(&index).expect_err("not counted");
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::Invalid {
                        reason: customerdb::normalize::Reason::NotCounted,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
    // Stores counted under older rules, each with a count the current rules do not keep,
    // which opening drops: the first rules counted every index (an empty marker), rules 2
    // counted phone numbers.
    for (tag, value, marker) in [(14u16, &b"stale"[..], &[][..]), (3, b"+441632960000", &[2])] {
        let tag = tag.to_be_bytes();
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let mut stale = tag.to_vec();
            stale.extend_from_slice(value);
            txn.open_table(VALUE_COUNTS)
                .unwrap()
                .insert(stale.as_slice(), 1u64.to_be_bytes().as_slice())
                .unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("value_counts", marker)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path)?;
        assert!(store.verify()?.is_clean());
        drop(store);
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let counts = txn.open_table(VALUE_COUNTS).unwrap();
        let per_value = counts
            .range(tag.as_slice()..)
            .unwrap()
            .take_while(|e| e.as_ref().unwrap().0.value()[..2] == tag)
            .filter(|e| e.as_ref().unwrap().0.value().len() > 2)
            .count();
        assert_eq!(per_value, 0, "tag {tag:?}");
        // The count of customers with any value of the index is still kept.
        assert!(counts.get(tag.as_slice()).unwrap().is_some());
    }
    Ok(())
}

/// Rewrites the file at `path` as a store of version 1 had it (one key per posting in
/// `postings`), plus the damaged keys `extra`.
fn to_version_1(path: &std::path::Path, extra: &[&[u8]]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let runs = txn.open_table(POSTINGS).unwrap();
        let mut old = txn.open_table(LEGACY_POSTINGS).unwrap();
        for item in runs.iter().unwrap() {
            let (k, v) = item.unwrap();
            let prefix = &k.value()[..k.value().len() - 8];
            for id in v.value().chunks(8) {
                old.insert([prefix, id].concat().as_slice(), ()).unwrap();
            }
        }
        for k in extra {
            old.insert(*k, ()).unwrap();
        }
    }
    txn.delete_table(POSTINGS).unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format_version", [1u8].as_slice())
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_short_key_in_a_version_1_store_does_not_stop_it_opening() -> Result<()> {
    let (_dir, path) = seeded()?;
    to_version_1(&path, &[b"\x00\x0a\x01"]);
    let store = Store::open(&path)?;
    let tx = store.begin_read()?;
    assert_eq!(
        tx.ids(&customerdb::Index::Tag, &customerdb::Scan::eq("t"))?
            .len(),
        3
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_store_with_a_malformed_run_can_still_be_backed_up_and_restored_clean() -> Result<()> {
    let (dir, path) = seeded()?;
    reverse_the_tag_run(&path);
    let store = Store::open(&path)?;
    store.backup_to(dir.path().join("v.backup"))?;
    let copy = Store::restore_from(dir.path().join("v.backup"), dir.path().join("copy.redb"))?;
    assert!(copy.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_transaction_whose_changes_failed_to_apply_cannot_commit() -> Result<()> {
    let (_dir, path) = seeded()?;
    // Damage the run of tag "t", which a new customer with that tag rewrites.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(POSTINGS).unwrap();
            let key = t
                .iter()
                .unwrap()
                .map(|e| e.unwrap().0.value().to_vec())
                .find(|k| k[..2] == 10u16.to_be_bytes())
                .expect("a tag run");
            t.insert(key.as_slice(), [1u8, 2, 3].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path)?;
    let mut tx = store.begin_write()?;
    tx.insert(Customer::builder().name("Dora Damaged").tag("t"))?;
    // A read that needs the tables applies the staged changes and meets the damage.
    let err = tx.count().expect_err("damaged run");
    assert!(matches!(err.kind(), ErrorKind::Corrupted { .. }), "{err}");
    // Part of the changes may be in the tables: the transaction cannot commit.
    let err = tx.count().expect_err("poisoned");
    assert_eq!(err.kind(), &ErrorKind::Poisoned);
    let err = tx.commit().expect_err("poisoned");
    assert_eq!(err.kind(), &ErrorKind::Poisoned);
    assert_eq!(store.begin_read()?.count()?, 3);
    Ok(())
}

const HISTORY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("history");

/// A history entry as a store of version 2 wrote it: every change field by field, as JSON
/// texts (`codec(at, actor, customer, operation, fields)`).
#[derive(serde::Serialize)]
struct Version2Entry<'a> {
    at: i64,
    actor: Option<&'a str>,
    customer: Option<u64>,
    /// Only inserts are rewritten, and `Insert` is the operation's first variant.
    operation: Version2Insert,
    fields: Vec<(&'a str, Option<&'a str>, Option<&'a str>)>,
}

#[derive(serde::Serialize)]
enum Version2Insert {
    Insert,
}

#[test]
fn a_version_2_store_opens_as_version_3_with_its_history_as_it_was() -> Result<()> {
    let (_dir, path) = seeded()?;
    let before = {
        let store = Store::open(&path)?;
        let mut tx = store.begin_write()?;
        let id = tx.find_by_email("c0@example.com")?.unwrap().id;
        let mut moved = tx.get(id)?.unwrap().customer;
        moved.tags.insert(customerdb::Tag::parse("moved")?);
        tx.update(id, moved)?;
        tx.commit()?;
        store.begin_read()?.changes(0, 100)?
    };
    assert_eq!(before.len(), 4);
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut history = txn.open_table(HISTORY).unwrap();
            for c in before
                .iter()
                .filter(|c| c.operation == customerdb::Operation::Insert)
            {
                let entry = Version2Entry {
                    at: c.at.timestamp_micros(),
                    actor: c.actor.as_deref(),
                    customer: c.customer.map(customerdb::CustomerId::as_u64),
                    operation: Version2Insert::Insert,
                    fields: c
                        .fields
                        .iter()
                        .map(|f| {
                            let before = f.before.as_ref().map(customerdb::Json::as_str);
                            let after = f.after.as_ref().map(customerdb::Json::as_str);
                            (f.field.as_ref(), before, after)
                        })
                        .collect(),
                };
                let mut bytes = vec![customerdb::FORMAT_VERSION];
                bytes.extend(postcard::to_allocvec(&entry).unwrap());
                let old = history
                    .insert(c.seq.to_be_bytes().as_slice(), bytes.as_slice())
                    .unwrap()
                    .unwrap();
                // The entry this build wrote is the smaller.
                assert!(old.value().len() < bytes.len());
            }
            txn.open_table(META)
                .unwrap()
                .insert("format_version", [2u8].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path)?;
    assert_eq!(store.begin_read()?.changes(0, 100)?, before);
    assert!(store.verify()?.is_clean());
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(
        meta.get("format_version").unwrap().unwrap().value(),
        [customerdb::STORE_FORMAT_VERSION]
    );
    assert_eq!(customerdb::STORE_FORMAT_VERSION, 3);
    Ok(())
}
