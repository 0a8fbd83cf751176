//! Guards duplicates inside the store: match-on-insert through the indexes, the review queue
//! and its decisions, batch clusters, merge with survivorship and aliases, and unmerge.

use chrono::{TimeZone, Utc};
use customerdb::dedup::{ClusterSettings, Matcher};
use customerdb::{
    Activity, ActivityQuery, Checked, Currency, Customer, CustomerBuilder, CustomerId, ErrorKind,
    OnDuplicate, Operation, Read, Result, ReviewStatus, Store, Survivorship,
};

fn robert() -> CustomerBuilder {
    Customer::builder()
        .given_name("Robert")
        .family_name("Smith")
        .email("robert.smith@example.com")
        .phone("+442079460018")
        .birth_date(chrono::NaiveDate::from_ymd_opt(1971, 6, 24).unwrap())
}

fn bob() -> CustomerBuilder {
    Customer::builder()
        .given_name("Bob")
        .family_name("Smith")
        .email("bob.smith@work.example.com")
        .phone("+442079460018")
        .birth_date(chrono::NaiveDate::from_ymd_opt(1971, 6, 24).unwrap())
        .tag("newsletter")
}

/// A store with Robert Smith, an unrelated Ada, and a namesake Robert Smith born elsewhere.
fn seeded() -> Result<(Store, CustomerId)> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let robert = tx.insert(robert())?;
    tx.insert(
        Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com"),
    )?;
    tx.insert(
        Customer::builder()
            .given_name("Robert")
            .family_name("Smith")
            .email("r.smith@elsewhere.example.org")
            .birth_date(chrono::NaiveDate::from_ymd_opt(1990, 1, 2).unwrap()),
    )?;
    tx.commit()?;
    Ok((store, robert))
}

#[test]
fn a_probable_duplicate_is_found_explained_flagged_or_refused() -> Result<()> {
    let (store, robert) = seeded()?;
    let tx = store.begin_read()?;
    let found = tx.duplicates_of(&bob().build()?, 0.5)?;
    assert_eq!(found.first().map(|d| d.id), Some(robert), "{found:#?}");
    let best = &found[0];
    assert!(best.rules.iter().any(|r| r == "phone"));
    let total = best
        .explanation
        .terms
        .iter()
        .fold(best.explanation.prior, |w, t| w + t.weight);
    assert!(
        (total - best.score.weight).abs() < 1e-9,
        "the waterfall sums to the score"
    );
    assert!(format!("{}", best.explanation).contains("given"));
    drop(tx);

    let mut tx = store.begin_write()?;
    let err = tx
        .insert_checked(bob(), OnDuplicate::Refuse(0.5))
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Duplicate { existing: robert });
    let Checked::Inserted(bob_id, dups) = tx.insert_checked(bob(), OnDuplicate::Flag(0.5))? else {
        panic!("flag inserts");
    };
    assert_eq!(dups[0].id, robert);
    let queue = tx.review_queue(true)?;
    assert_eq!(queue.len(), 1);
    assert_eq!((queue[0].a, queue[0].b), (robert, bob_id));

    // "Not the same" is final: the pair never comes back.
    tx.decide(robert, bob_id, false, "ana")?;
    assert!(tx.review_queue(true)?.is_empty());
    assert_eq!(tx.review_queue(false)?[0].status, ReviewStatus::NotSame);
    assert!(
        tx.duplicates_of_id(bob_id, 0.0)?
            .iter()
            .all(|d| d.id != robert)
    );
    tx.queue_review(robert, bob_id, 0.99)?;
    assert!(
        tx.review_queue(true)?.is_empty(),
        "a decided pair is not queued again"
    );
    tx.commit()?;
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn merge_moves_everything_to_the_survivor_and_unmerge_undoes_it() -> Result<()> {
    let (store, robert) = seeded()?;
    let at = |d| Utc.with_ymd_and_hms(2026, 2, d, 9, 0, 0).unwrap();
    let eur = Currency::parse("EUR")?;
    let mut tx = store.begin_write_as("support")?;
    let bob = tx.insert(bob())?;
    tx.add_activity(robert, Activity::purchase(at(1), 1_000, eur))?;
    tx.add_activity(bob, Activity::purchase(at(2), 2_500, eur))?;
    tx.add_activity(bob, Activity::note(at(3), "prefers Bob"))?;
    tx.commit()?;
    let count = store.begin_read()?.count()?;

    // The plan is a preview: nothing is written.
    let tx = store.begin_read()?;
    let plan = tx.merge_plan(robert, &[bob], &Survivorship::Survivor)?;
    assert_eq!(plan.activities, 2);
    assert_eq!(plan.result.emails.len(), 2, "both emails are kept");
    assert!(plan.result.tags.iter().any(|t| t.as_str() == "newsletter"));
    assert_eq!(
        plan.result.name.as_ref().and_then(|n| n.given()),
        Some("Robert")
    );
    assert_eq!(tx.count()?, count);
    drop(tx);

    let mut tx = store.begin_write_as("support")?;
    let merge = tx.merge(&plan)?;
    tx.commit()?;
    let tx = store.begin_read()?;
    assert_eq!(tx.count()?, count - 1);
    assert_eq!(
        tx.get(bob)?.map(|r| r.id),
        Some(robert),
        "an old id finds the survivor"
    );
    assert_eq!(tx.resolve(bob)?, Some(robert));
    assert_eq!(
        tx.find_by_email("bob.smith@work.example.com")?
            .map(|r| r.id),
        Some(robert)
    );
    let m = tx.metrics(robert)?;
    assert_eq!((m.order_count, m.total_spend), (2, Some(3_500)));
    assert_eq!(tx.timeline(robert, &ActivityQuery::new())?.len(), 3);
    let last = &tx.history(bob, None, 1)?[0];
    assert_eq!(last.operation, Operation::MergedInto(robert));
    assert_eq!(tx.history(robert, None, 1)?[0].operation, Operation::Merged);
    drop(tx);
    assert!(store.verify()?.is_clean());

    // A plan made before a change is refused.
    let tx = store.begin_read()?;
    let stale = tx.merge_plan(robert, &[CustomerId::from_u64(2)], &Survivorship::Survivor)?;
    drop(tx);
    let mut tx = store.begin_write()?;
    let mut ada = tx.get(CustomerId::from_u64(2))?.unwrap().customer;
    ada.job_title = Some("Analyst".into());
    tx.update(CustomerId::from_u64(2), ada)?;
    assert_eq!(
        tx.merge(&stale).unwrap_err().kind(),
        &ErrorKind::Stale(CustomerId::from_u64(2))
    );
    drop(tx);

    // Unmerge: Bob is back with his email and activities; Robert keeps a later edit.
    let mut tx = store.begin_write()?;
    let mut r = tx.get(robert)?.unwrap().customer;
    r.job_title = Some("Engineer".into());
    tx.update(robert, r)?;
    tx.unmerge(merge)?;
    assert!(tx.unmerge(merge).is_err(), "a merge is undone once");
    tx.commit()?;
    let tx = store.begin_read()?;
    assert_eq!(tx.count()?, count);
    assert_eq!(tx.get(bob)?.map(|r| r.id), Some(bob));
    let r = tx.get(robert)?.unwrap().customer;
    assert_eq!(r.emails.len(), 1);
    assert_eq!(
        r.job_title.as_deref(),
        Some("Engineer"),
        "a later edit survives the unmerge"
    );
    assert_eq!(tx.metrics(robert)?.total_spend, Some(1_000));
    assert_eq!(tx.metrics(bob)?.total_spend, Some(2_500));
    assert_eq!(tx.timeline(bob, &ActivityQuery::new())?.len(), 2);
    assert_eq!(
        tx.find_by_email("bob.smith@work.example.com")?
            .map(|r| r.id),
        Some(bob)
    );
    drop(tx);
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn survivorship_rules_choose_single_values() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let a = tx.insert(Customer::builder().name("R. Smith").source("import"))?;
    let b = tx.insert(
        Customer::builder()
            .name("Dr. Robert James Smith")
            .organization("Acme")
            .source("crm"),
    )?;
    let plan = tx.merge_plan(a, &[b], &Survivorship::Survivor)?;
    assert_eq!(
        plan.result
            .name
            .as_ref()
            .map(customerdb::PersonName::display),
        Some("R. Smith")
    );
    assert_eq!(
        plan.result.organization.as_deref(),
        Some("Acme"),
        "missing values are filled"
    );
    let plan = tx.merge_plan(a, &[b], &Survivorship::MostComplete)?;
    assert_eq!(
        plan.result
            .name
            .as_ref()
            .map(customerdb::PersonName::display),
        Some("Dr. Robert James Smith")
    );
    assert_eq!(plan.taken.get("name"), Some(&b));
    let plan = tx.merge_plan(a, &[b], &Survivorship::MostRecent)?;
    assert_eq!(plan.taken.get("name"), Some(&b), "b was written last");
    let plan = tx.merge_plan(
        b,
        &[a],
        &Survivorship::TrustedSources(vec!["import".into()]),
    )?;
    assert_eq!(plan.result.source.as_deref(), Some("import"));
    Ok(())
}

#[test]
fn merge_on_insert_and_batch_clusters_respect_decisions() -> Result<()> {
    let (store, robert) = seeded()?;
    let mut tx = store.begin_write()?;
    let checked = tx.insert_checked(
        bob(),
        OnDuplicate::Merge {
            auto: 0.5,
            review: 0.1,
        },
    )?;
    let Checked::Merged { into, merge } = checked else {
        panic!("expected an automatic merge, got {checked:?}");
    };
    assert_eq!(into, robert);
    tx.unmerge(merge)?;
    tx.commit()?;

    let matcher = Matcher::default();
    let clusters = store
        .begin_read()?
        .find_duplicates(&matcher, &ClusterSettings::default())?;
    let with_robert = clusters.iter().find(|c| c.ids.contains(&robert));
    assert!(
        with_robert.is_some_and(|c| c.ids.len() == 2),
        "{clusters:#?}"
    );
    let bob = with_robert.unwrap().ids[1];

    let mut tx = store.begin_write()?;
    tx.decide(robert, bob, false, "ana")?;
    tx.train_duplicate_model(&matcher)?;
    tx.commit()?;
    let clusters = store
        .begin_read()?
        .find_duplicates(&matcher, &ClusterSettings::default())?;
    assert!(
        clusters
            .iter()
            .all(|c| !(c.ids.contains(&robert) && c.ids.contains(&bob))),
        "a rejected pair is never linked"
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}
