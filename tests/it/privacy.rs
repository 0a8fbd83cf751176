//! Guards subject access and erasure: erasure reaches the record, every index, activities,
//! history and the change feed, duplicate review data and aliases, leaves a tombstone, can
//! suppress re-insertion, and after compaction none of the erased values is left in the file.

use chrono::{TimeZone, Utc};
use customerdb::sample::{self, SplitMix64};
use customerdb::{
    Activity, ActivityQuery, Currency, CustomerId, ErrorKind, Index, Operation, Read, Result, Scan,
    Store, Suppress, Survivorship,
};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, checked step by step
fn erasure_reaches_everywhere_and_compaction_removes_the_bytes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("p.redb");
    let mut store = Store::builder()
        .suppression_key(b"a secret the host keeps elsewhere".to_vec())
        .create(&path)?;
    let people = sample::generate(0x000E_7A5E, 120);
    let mut rng = SplitMix64::new(7);
    let eur = Currency::parse("EUR")?;
    let mut tx = store.begin_write_as("loader")?;
    let mut ids = Vec::new();
    for p in &people {
        let id = tx.insert(p.to_builder())?;
        for d in 0..rng.below(4) {
            let at = Utc
                .with_ymd_and_hms(2026, 3, 1 + d as u32, 9, 0, 0)
                .unwrap();
            tx.add_activity(
                id,
                Activity::purchase(at, 1_000, eur).order_ref(format!("ORD-{id}-{d}")),
            )?;
        }
        ids.push(id);
    }
    // Some history, a merge and a review decision to reach.
    let mut c = tx.get(ids[1])?.unwrap().customer;
    c.job_title = Some("Analyst".into());
    tx.update(ids[1], c)?;
    let plan = tx.merge_plan(ids[0], &[ids[2]], &Survivorship::Survivor)?;
    tx.merge(&plan)?;
    tx.queue_review(ids[0], ids[3], 0.7)?;
    tx.commit()?;

    // Subject access: everything on customer 0, including what was merged into it.
    let export = store.begin_read()?.subject_export(ids[0])?;
    assert_eq!(export["merged_from"], serde_json::json!([ids[2]]));
    assert!(
        export["activities"]
            .as_array()
            .is_some_and(|a| a.len() >= plan.activities)
    );
    assert!(export["history"].as_array().is_some_and(|h| h.len() >= 2));
    assert_eq!(
        export["duplicate_reviews"].as_array().map(Vec::len),
        Some(1)
    );

    // Erase customer 0 (and with it 2, merged into it), 1, and every tenth.
    let mut erased: Vec<usize> = vec![0, 1, 2];
    erased.extend((10..people.len()).step_by(10));
    let mut tx = store.begin_write_as("dpo")?;
    for &i in erased.iter().filter(|&&i| i != 2) {
        let suppress = if i == 1 { Suppress::Yes } else { Suppress::No };
        let tomb = tx.erase(ids[i], "art. 17 request", suppress)?;
        assert_eq!(tomb.by.as_deref(), Some("dpo"));
    }
    tx.commit()?;

    let tx = store.begin_read()?;
    let gone: Vec<CustomerId> = erased.iter().map(|&i| ids[i]).collect();
    for &id in &gone {
        assert!(tx.get(id)?.is_none(), "{id} still readable");
        assert!(
            tx.history(id, None, 10)?
                .iter()
                .all(|c| c.operation == Operation::Erased)
        );
    }
    assert_eq!(tx.tombstone(ids[0])?.map(|t| t.aliases), Some(vec![ids[2]]));
    for index in Index::BUILTIN {
        assert!(
            tx.ids(&index, &Scan::All)?
                .iter()
                .all(|id| !gone.contains(id)),
            "{index}"
        );
    }
    assert!(
        tx.activities(&ActivityQuery::new().limit(usize::MAX))?
            .iter()
            .all(|a| !gone.contains(&a.customer))
    );
    for c in tx.changes(0, usize::MAX)? {
        if c.customer.is_some_and(|id| gone.contains(&id)) {
            assert_eq!(
                c.operation,
                Operation::Erased,
                "seq {} still holds data",
                c.seq
            );
            assert!(c.fields.is_empty());
        }
    }
    assert!(tx.review_queue(false)?.is_empty());
    drop(tx);
    assert!(store.verify()?.is_clean());

    // Suppression: the erased person cannot be imported again by email or phone.
    let mut tx = store.begin_write()?;
    let again = tx.insert(people[1].to_builder()).unwrap_err();
    assert_eq!(again.kind(), &ErrorKind::Suppressed);
    drop(tx);

    // After compaction the file holds none of their emails, and no name held by them alone.
    store.compact()?;
    drop(store);
    let bytes = std::fs::read(&path)?;
    let kept: Vec<&sample::SampleCustomer> = people
        .iter()
        .enumerate()
        .filter(|(i, _)| !erased.contains(i))
        .map(|(_, p)| p)
        .collect();
    for &i in &erased {
        let p = &people[i];
        assert!(
            !contains(&bytes, p.email.as_bytes()),
            "email of {i} in the file"
        );
        let name = format!("{} {}", p.given_name, p.family_name);
        if !kept
            .iter()
            .any(|k| format!("{} {}", k.given_name, k.family_name) == name)
        {
            assert!(
                !contains(&bytes, name.as_bytes()),
                "name of {i} in the file"
            );
        }
    }
    // And the survivors' data is all still there.
    let store = Store::open(&path)?;
    assert_eq!(
        store.begin_read()?.count()?,
        (people.len() - erased.len()) as u64
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn retention_erases_or_anonymises_the_inactive_and_purges_old_activities() -> Result<()> {
    use customerdb::{Inactive, RetentionPolicy};
    use std::sync::{Arc, Mutex};

    let day =
        |d: i64| Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap() + chrono::Duration::days(d);
    let clock = Arc::new(Mutex::new(day(0)));
    let c = clock.clone();
    let store = Store::builder()
        .clock(move || *c.lock().unwrap())
        .in_memory()?;
    let eur = Currency::parse("EUR")?;
    let mut tx = store.begin_write()?;
    let quiet = tx.insert(
        customerdb::Customer::builder()
            .name("Quiet Quinn")
            .email("quinn@example.com"),
    )?;
    let old_buyer = tx.insert(customerdb::Customer::builder().name("Old Olga"))?;
    let active = tx.insert(customerdb::Customer::builder().name("Active Ada"))?;
    tx.add_activity(old_buyer, Activity::purchase(day(10), 500, eur))?;
    tx.add_activity(active, Activity::purchase(day(10), 700, eur))?;
    tx.add_activity(active, Activity::purchase(day(390), 900, eur))?;
    tx.commit()?;
    *clock.lock().unwrap() = day(400);

    let policy = RetentionPolicy {
        inactive_customers: Some((chrono::Duration::days(365), Inactive::Anonymise)),
        activities_older_than: Some(chrono::Duration::days(730)),
        history_older_than: None,
    };
    let mut tx = store.begin_write()?;
    let dry = tx.apply_retention(&policy, day(400), true)?;
    assert_eq!(dry.anonymised, vec![quiet, old_buyer]);
    assert!(
        tx.get(quiet)?.unwrap().customer.name.is_some(),
        "a dry run writes nothing"
    );
    let done = tx.apply_retention(&policy, day(400), false)?;
    assert_eq!(done.anonymised, dry.anonymised);
    assert!(
        tx.apply_retention(&policy, day(400), false)?
            .anonymised
            .is_empty(),
        "idempotent"
    );
    tx.commit()?;
    let tx = store.begin_read()?;
    assert_eq!(
        tx.get(quiet)?.unwrap().customer,
        customerdb::Customer::default()
    );
    assert!(tx.find_by_email("quinn@example.com")?.is_none());
    assert_eq!(
        tx.metrics(old_buyer)?.total_spend,
        Some(500),
        "aggregates survive"
    );
    assert_eq!(
        tx.history(quiet, None, 10)?.len(),
        1,
        "only the anonymisation is left"
    );
    assert!(tx.get(active)?.unwrap().customer.name.is_some());
    drop(tx);

    // Two years on: old activities go, and erasure replaces anonymisation in the policy.
    *clock.lock().unwrap() = day(1_200);
    let policy = RetentionPolicy {
        inactive_customers: Some((chrono::Duration::days(365), Inactive::Erase)),
        activities_older_than: Some(chrono::Duration::days(730)),
        history_older_than: Some(chrono::Duration::days(365)),
    };
    let mut tx = store.begin_write()?;
    let done = tx.apply_retention(&policy, day(1_200), false)?;
    assert_eq!(done.activities_removed, 3);
    assert_eq!(done.erased.len(), 3);
    tx.commit()?;
    assert_eq!(store.begin_read()?.count()?, 0);
    assert!(store.verify()?.is_clean());
    Ok(())
}
