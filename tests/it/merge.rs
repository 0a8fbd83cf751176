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

mod properties {
    //! Merge then unmerge restores everything; no merge loses an email, phone, address, tag
    //! or activity. Random customers and timelines, random participants and rules.

    use std::collections::BTreeSet;

    use chrono::{TimeZone, Utc};
    use customerdb::{
        Activity, ActivityQuery, AddressParts, Currency, Customer, CustomerId, Index, Read,
        ReadTxn, Scan, Store, Survivorship,
    };
    use proptest::prelude::*;

    const GIVEN: [&str; 4] = ["Robert", "Bob", "Ada", "Grace"];
    const FAMILY: [&str; 3] = ["Smith", "Lovelace", "Hopper"];
    const TAGS: [&str; 3] = ["vip", "gold", "lapsed"];
    const TOWNS: [(&str, &str); 3] = [
        ("London", "SW1A 1AA"),
        ("Leeds", "LS1 4AP"),
        ("York", "YO1 7HH"),
    ];

    #[derive(Debug, Clone)]
    struct Person {
        given: usize,
        family: usize,
        phones: Vec<usize>,
        tags: Vec<usize>,
        town: Option<usize>,
        source: bool,
        purchases: Vec<(u32, i64)>,
    }

    fn person() -> impl Strategy<Value = Person> {
        (
            0..GIVEN.len(),
            0..FAMILY.len(),
            prop::collection::vec(0..crate::PHONES.len(), 0..3),
            prop::collection::vec(0..TAGS.len(), 0..3),
            prop::option::of(0..TOWNS.len()),
            any::<bool>(),
            prop::collection::vec((1u32..28, 1i64..10_000), 0..4),
        )
            .prop_map(
                |(given, family, phones, tags, town, source, purchases)| Person {
                    given,
                    family,
                    phones,
                    tags,
                    town,
                    source,
                    purchases,
                },
            )
    }

    /// Everything observable about the store, to compare before and after.
    #[derive(Debug, PartialEq)]
    struct Snapshot {
        customers: Vec<(CustomerId, Customer)>,
        activities: Vec<(u64, CustomerId, String)>,
        indexes: Vec<(String, u64, Vec<CustomerId>)>,
    }

    fn snapshot(tx: &ReadTxn) -> Snapshot {
        let customers = tx
            .customers()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.id, r.customer)
            })
            .collect();
        let mut activities: Vec<_> = tx
            .activities(&ActivityQuery::new().limit(usize::MAX))
            .unwrap()
            .into_iter()
            .map(|r| (r.id.as_u64(), r.customer, format!("{:?}", r.activity)))
            .collect();
        activities.sort();
        let indexes = Index::BUILTIN
            .iter()
            .filter(|i| !matches!(i, Index::UpdatedAt))
            .map(|i| {
                (
                    i.name().to_owned(),
                    tx.index_len(i).unwrap(),
                    tx.ids(i, &Scan::All).unwrap(),
                )
            })
            .collect();
        Snapshot {
            customers,
            activities,
            indexes,
        }
    }

    /// A store holding `people`, each with an email of its own and its purchases.
    fn load(people: &[Person]) -> (Store, Vec<CustomerId>) {
        let store = Store::in_memory().unwrap();
        let mut tx = store.begin_write().unwrap();
        let eur = Currency::parse("EUR").unwrap();
        let mut ids = Vec::new();
        for (i, p) in people.iter().enumerate() {
            let mut b = Customer::builder()
                .given_name(GIVEN[p.given])
                .family_name(FAMILY[p.family])
                .email(format!("person{i}@example.com"))
                .source(if p.source { "crm" } else { "shop" });
            for &ph in &p.phones {
                b = b.phone(crate::PHONES[ph]);
            }
            for &t in &p.tags {
                b = b.tag(TAGS[t]);
            }
            if let Some(t) = p.town {
                b = b.address(AddressParts {
                    locality: Some(TOWNS[t].0.into()),
                    postcode: Some(TOWNS[t].1.into()),
                    country: Some("GB".into()),
                    ..AddressParts::default()
                });
            }
            let id = tx.insert(b).unwrap();
            for &(day, amount) in &p.purchases {
                let at = Utc.with_ymd_and_hms(2026, 2, day, 12, 0, 0).unwrap();
                tx.add_activity(id, Activity::purchase(at, amount, eur))
                    .unwrap();
            }
            ids.push(id);
        }
        tx.commit().unwrap();
        (store, ids)
    }

    fn run(
        people: &[Person],
        survivor: usize,
        others: &[usize],
        rule: u8,
    ) -> Result<(), TestCaseError> {
        let (store, ids) = load(people);
        let before = snapshot(&store.begin_read().unwrap());

        let s = ids[survivor % ids.len()];
        let merged: Vec<CustomerId> = others
            .iter()
            .map(|o| ids[o % ids.len()])
            .filter(|&o| o != s)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let rule = match rule % 4 {
            0 => Survivorship::Survivor,
            1 => Survivorship::MostRecent,
            2 => Survivorship::MostComplete,
            _ => Survivorship::TrustedSources(vec!["crm".into()]),
        };
        let mut tx = store.begin_write().unwrap();
        let plan = tx.merge_plan(s, &merged, &rule).unwrap();
        let id = tx.merge(&plan).unwrap();
        tx.commit().unwrap();

        // Nothing lost: every participant's emails, phones, addresses and tags are on the
        // survivor, and every activity is still there, on the survivor if it was a participant's.
        let tx = store.begin_read().unwrap();
        let after = tx.get(s).unwrap().unwrap().customer;
        for (pid, c) in before
            .customers
            .iter()
            .filter(|(pid, _)| *pid == s || merged.contains(pid))
        {
            for e in &c.emails {
                prop_assert!(
                    after.emails.iter().any(|x| x.match_key() == e.match_key()),
                    "{pid}: email lost"
                );
            }
            for p in &c.phones {
                prop_assert!(
                    after.phones.iter().any(|x| x.e164() == p.e164()),
                    "{pid}: phone lost"
                );
            }
            for a in &c.addresses {
                prop_assert!(after.addresses.contains(a), "{pid}: address lost");
            }
            prop_assert!(c.tags.is_subset(&after.tags), "{pid}: tag lost");
        }
        let moved = tx
            .activities(&ActivityQuery::new().limit(usize::MAX))
            .unwrap();
        prop_assert_eq!(moved.len(), before.activities.len());
        for r in &moved {
            let (_, owner, _) = before
                .activities
                .iter()
                .find(|a| a.0 == r.id.as_u64())
                .unwrap();
            let expected = if merged.contains(owner) { s } else { *owner };
            prop_assert_eq!(r.customer, expected);
        }
        for m in &merged {
            prop_assert_eq!(tx.get(*m).unwrap().map(|r| r.id), Some(s));
        }
        drop(tx);
        prop_assert!(store.verify().unwrap().is_clean());

        // Unmerge restores every record, index entry and activity.
        let mut tx = store.begin_write().unwrap();
        tx.unmerge(id).unwrap();
        tx.commit().unwrap();
        let restored = snapshot(&store.begin_read().unwrap());
        prop_assert_eq!(restored, before);
        prop_assert!(store.verify().unwrap().is_clean());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn merge_then_unmerge_restores_everything_and_merge_loses_nothing(
            people in prop::collection::vec(person(), 2..6),
            survivor in any::<usize>(),
            others in prop::collection::vec(any::<usize>(), 1..4),
            rule in any::<u8>(),
        ) {
            run(&people, survivor, &others, rule)?;
        }
    }
}
