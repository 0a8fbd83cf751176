//! Guards the store's contract: standardised writes, unique keys, indexes that follow updates,
//! rollback on drop, snapshot isolation, custom attributes, and persistence across reopen.

use chrono::NaiveDate;
use customerdb::{
    AddressParts, AttributeType, AttributeValue, Customer, Durability, ErrorKind, Index, Read,
    Result, Scan, Stage, Store, UniqueKey, Upsert,
};

fn ada() -> customerdb::CustomerBuilder {
    Customer::builder()
        .name("Ada Lovelace")
        .email("Ada@Example.com")
        .phone(crate::PHONES[1])
        .address(AddressParts {
            lines: vec!["12 St James's Square".into()],
            locality: Some("London".into()),
            postcode: Some("sw1y 4jh".into()),
            country: Some("gb".into()),
            ..AddressParts::default()
        })
        .birth_date(NaiveDate::from_ymd_opt(1815, 12, 10).unwrap())
        .tag("VIP")
        .stage(Stage::Customer)
        .owner("Ana")
        .external_id("shop", "A-1")
}

#[test]
fn insert_then_lookup_by_every_unique_and_common_key() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let id = tx.insert(ada())?;
    tx.commit()?;
    let tx = store.begin_read()?;
    let rec = tx.get(id)?.expect("inserted");
    assert_eq!(rec.revision, 1);
    assert_eq!(rec.customer.emails[0].original(), "Ada@Example.com");
    assert_eq!(tx.find_by_email("ada@example.com")?.map(|r| r.id), Some(id));
    assert_eq!(
        tx.find_by_external_id("SHOP", "A-1")?.map(|r| r.id),
        Some(id)
    );
    assert_eq!(tx.find_by_phone(crate::PHONES[1])?.len(), 1);
    assert_eq!(tx.ids(&Index::Country, &Scan::eq("gb"))?, vec![id]);
    assert_eq!(tx.ids(&Index::Locality, &Scan::eq("LONDON"))?, vec![id]);
    assert_eq!(tx.ids(&Index::Stage, &Scan::eq(Stage::Customer))?, vec![id]);
    assert_eq!(tx.ids(&Index::Owner, &Scan::eq("ana"))?, vec![id]);
    assert_eq!(tx.ids(&Index::GivenName, &Scan::eq("ada"))?, vec![id]);
    assert_eq!(tx.count()?, 1);
    Ok(())
}

#[test]
fn refused_value_stores_nothing_and_names_the_field() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let err = tx
        .insert(ada().email("not an email"))
        .expect_err("bad email refused");
    match err.kind() {
        ErrorKind::Invalid { field, value, .. } => {
            assert_eq!(field, "emails[1]");
            assert_eq!(value, "not an email");
        }
        other => panic!("unexpected {other:?}"),
    }
    tx.commit()?;
    assert_eq!(store.begin_read()?.count()?, 0);
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn unique_clash_names_the_index_and_the_holder() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let first = tx.insert(ada())?;
    let err = tx
        .insert(Customer::builder().name("Other").email("ADA@example.COM"))
        .expect_err("same email");
    assert!(
        matches!(err.kind(), ErrorKind::Conflict { index: "email", existing, .. } if *existing == first)
    );
    let err = tx
        .insert(Customer::builder().external_id("shop", "A-1"))
        .expect_err("same external id");
    assert!(matches!(
        err.kind(),
        ErrorKind::Conflict {
            index: "external_id",
            ..
        }
    ));
    assert_eq!(tx.count()?, 1);
    Ok(())
}

#[test]
fn update_moves_index_entries() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let id = tx.insert(ada())?;
    tx.commit()?;
    let mut tx = store.begin_write()?;
    let mut c = tx.get(id)?.unwrap().customer;
    c.tags.clear();
    c.tags.insert(customerdb::Tag::parse("gold")?);
    c.emails = vec![customerdb::Email::parse("countess@example.org")?];
    let rec = tx.update(id, c)?;
    assert_eq!(rec.revision, 2);
    tx.commit()?;
    let tx = store.begin_read()?;
    assert!(tx.ids(&Index::Tag, &Scan::eq("vip"))?.is_empty());
    assert_eq!(tx.ids(&Index::Tag, &Scan::eq("gold"))?, vec![id]);
    assert!(tx.find_by_email("ada@example.com")?.is_none());
    assert_eq!(
        tx.find_by_email("countess@example.org")?.map(|r| r.id),
        Some(id)
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn update_of_missing_customer_is_not_found() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let missing = customerdb::CustomerId::from_u64(42);
    let err = tx.update(missing, ada()).expect_err("no such id");
    assert_eq!(err.kind(), &ErrorKind::NotFound(missing));
    Ok(())
}

#[test]
fn upsert_inserts_then_updates_by_unique_key() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let key = UniqueKey::Email("ada@example.com".into());
    let first = tx.upsert(&key, ada())?;
    assert!(matches!(first, Upsert::Inserted(_)));
    let second = tx.upsert(&key, ada().tag("gold"))?;
    assert_eq!(second, Upsert::Updated(first.id()));
    assert_eq!(tx.count()?, 1);
    assert_eq!(tx.ids(&Index::Tag, &Scan::eq("gold"))?, vec![first.id()]);
    Ok(())
}

#[test]
fn remove_drops_every_entry() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let id = tx.insert(ada())?;
    tx.commit()?;
    let mut tx = store.begin_write()?;
    assert!(tx.remove(id)?.is_some());
    assert!(tx.remove(id)?.is_none());
    tx.commit()?;
    let report = store.verify()?;
    assert!(report.is_clean());
    assert_eq!((report.entries, report.unique_entries), (0, 0));
    Ok(())
}

#[test]
fn dropping_a_write_transaction_rolls_back() -> Result<()> {
    let store = Store::in_memory()?;
    {
        let mut tx = store.begin_write()?;
        tx.insert(ada())?;
    }
    assert_eq!(store.begin_read()?.count()?, 0);
    let mut tx = store.begin_write()?;
    let id = tx.insert(ada())?;
    tx.commit()?;
    // Ids are never reused, even after a rollback.
    assert_eq!(id.as_u64(), 1);
    Ok(())
}

#[test]
fn a_read_snapshot_does_not_see_later_commits() -> Result<()> {
    let store = Store::in_memory()?;
    let before = store.begin_read()?;
    let mut tx = store.begin_write()?;
    tx.insert(ada())?;
    tx.commit()?;
    assert_eq!(before.count()?, 0);
    assert_eq!(store.begin_read()?.count()?, 1);
    Ok(())
}

#[test]
fn readers_on_other_threads_run_beside_the_writer() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    tx.insert(ada())?;
    tx.commit()?;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<u64> {
                let tx = store.begin_read()?;
                tx.find_by_email("ada@example.com")?;
                tx.count()
            })
        })
        .collect();
    let mut tx = store.begin_write()?;
    tx.insert(
        Customer::builder()
            .name("Alan Turing")
            .email("alan@example.com"),
    )?;
    tx.commit()?;
    for r in readers {
        let n = r.join().unwrap()?;
        assert!(n == 1 || n == 2);
    }
    Ok(())
}

#[test]
fn custom_attributes_are_typed_and_indexed_retroactively() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    tx.declare_attribute("score", AttributeType::Integer, false)?;
    let err = tx
        .insert(Customer::builder().name("X").attribute("score", "high"))
        .expect_err("wrong type");
    assert!(matches!(
        err.kind(),
        ErrorKind::AttributeType {
            expected: "integer",
            found: "text",
            ..
        }
    ));
    let err = tx
        .insert(Customer::builder().name("X").attribute("undeclared", 1i64))
        .expect_err("undeclared");
    assert!(matches!(err.kind(), ErrorKind::UnknownAttribute { .. }));
    let ids: Vec<_> = (0..10)
        .map(|i| {
            tx.insert(
                Customer::builder()
                    .name(format!("C{i}"))
                    .attribute("score", i64::from(i) * 10),
            )
        })
        .collect::<Result<_>>()?;
    tx.commit()?;
    // Not indexed yet: scanning it is refused, not silently empty.
    let err = store
        .begin_read()?
        .ids(&Index::Attribute("score".into()), &Scan::eq(10i64))
        .expect_err("not indexed");
    assert!(matches!(err.kind(), ErrorKind::UnknownAttribute { .. }));
    let mut tx = store.begin_write()?;
    tx.declare_attribute("score", AttributeType::Integer, true)?;
    tx.commit()?;
    let tx = store.begin_read()?;
    let hits = tx.ids(&Index::Attribute("score".into()), &Scan::range(30i64..=50))?;
    assert_eq!(hits, ids[3..=5].to_vec());
    assert!(store.verify()?.is_clean());
    let err = {
        let mut tx = store.begin_write()?;
        tx.declare_attribute("score", AttributeType::Text, true)
            .expect_err("type change")
    };
    assert!(matches!(err.kind(), ErrorKind::SchemaConflict { .. }));
    let _ = AttributeValue::Integer(1);
    Ok(())
}

#[test]
fn birth_date_ranges_and_name_prefixes_use_the_index() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let mut ids = Vec::new();
    for (i, family) in ["Mason", "Miller", "Moore", "Nash"].iter().enumerate() {
        let year = 1960 + i32::try_from(i).unwrap() * 10;
        ids.push(
            tx.insert(
                Customer::builder()
                    .given_name("Sam")
                    .family_name(*family)
                    .birth_date(NaiveDate::from_ymd_opt(year, 6, 1).unwrap()),
            )?,
        );
    }
    tx.commit()?;
    let tx = store.begin_read()?;
    let d = |y| NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
    assert_eq!(
        tx.ids(&Index::BirthDate, &Scan::range(d(1965)..d(1990)))?,
        ids[1..3].to_vec()
    );
    assert_eq!(
        tx.ids(&Index::BirthDate, &Scan::range(..d(1970)))?,
        ids[..1].to_vec()
    );
    let mut m = tx.ids(&Index::FamilyName, &Scan::prefix("M"))?;
    m.sort();
    assert_eq!(m, ids[..3].to_vec());
    Ok(())
}

#[test]
fn a_store_file_persists_across_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("crm.redb");
    let id = {
        let store = Store::builder()
            .durability(Durability::Immediate)
            .create(&path)?;
        let mut tx = store.begin_write()?;
        tx.declare_attribute("tier", AttributeType::Text, true)?;
        let id = tx.insert(ada().attribute("tier", "Gold"))?;
        tx.commit()?;
        id
    };
    let store = Store::open(&path)?;
    let tx = store.begin_read()?;
    assert_eq!(tx.get(id)?.map(|r| r.customer.attributes.len()), Some(1));
    assert_eq!(
        tx.ids(&Index::Attribute("tier".into()), &Scan::eq("gold"))?,
        vec![id]
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn opening_a_missing_file_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(dir.path().join("nope.redb")).expect_err("missing");
    assert_eq!(err.kind(), &ErrorKind::Storage);
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn lenient_build_keeps_valid_fields_and_reports_the_rest() {
    let (c, errors) = ada().email("broken@").phone("12").build_lenient();
    assert_eq!(c.emails.len(), 1);
    assert_eq!(c.phones.len(), 1);
    let fields: Vec<_> = errors
        .iter()
        .filter_map(|e| match e.kind() {
            ErrorKind::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(fields, ["emails[1]", "phones[1]"]);
}

#[test]
fn name_lookups_fold_the_way_names_are_stored() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let id = tx.insert(
        Customer::builder()
            .given_name("Mary-Jane")
            .family_name("O’Brien"),
    )?;
    for typed in ["O'Brien", "OBrien", "o’brien"] {
        assert_eq!(
            tx.ids(&Index::FamilyName, &Scan::eq(typed))?,
            vec![id],
            "{typed}"
        );
    }
    assert_eq!(tx.ids(&Index::FamilyName, &Scan::prefix("O'B"))?, vec![id]);
    assert_eq!(tx.ids(&Index::GivenName, &Scan::eq("mary jane"))?, vec![id]);
    Ok(())
}

#[test]
fn a_transaction_keeps_the_store_open_after_the_last_handle_is_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.redb");
    let mut tx = Store::create(&path)?.begin_write()?;
    let id = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    tx.commit()?;
    let tx = Store::open(&path)?.begin_read()?;
    assert!(tx.get(id)?.is_some());
    assert_eq!(tx.history(id, None, 10)?.len(), 1);
    Ok(())
}

#[test]
fn insert_many_equals_insert_in_encrypted_subscribed_and_suppressing_stores() -> Result<()> {
    use customerdb::crypt::{Keys, MasterKey};
    use customerdb::{Notification, Suppress};
    let sample = customerdb::sample::generate(12, 300);
    let suppressed = "suppressed@example.com";
    let kinds = ["encrypted", "subscribed", "suppressing"];
    for kind in kinds {
        let builder = || match kind {
            "encrypted" => Store::builder().encryption(Keys::new(
                1,
                MasterKey::from_bytes(&[7; 32]).expect("a key"),
            )),
            "suppressing" => Store::builder().suppression_key(b"host-held key".to_vec()),
            _ => Store::builder(),
        };
        let (one, many) = (builder().in_memory()?, builder().in_memory()?);
        let (mut heard, mut many_ids) = (Vec::new(), Vec::new());
        for (store, bulk) in [(&one, false), (&many, true)] {
            let gone = {
                let mut tx = store.begin_write()?;
                let id = tx.insert(Customer::builder().name("Gone").email(suppressed))?;
                if kind == "suppressing" {
                    // Suppressed by this transaction, staged: refused all the same.
                    let other = "staged@example.com";
                    let first = tx.insert(Customer::builder().name("Staged").email(other))?;
                    tx.erase(first, "art. 17", Suppress::Yes)?;
                    let again = tx.insert_many([Customer::builder().email(other)]);
                    assert!(again.is_err_and(|e| matches!(e.kind(), ErrorKind::Suppressed)));
                }
                let how = if kind == "suppressing" {
                    Suppress::Yes
                } else {
                    Suppress::No
                };
                tx.erase(id, "art. 17", how)?;
                tx.commit()?;
                id
            };
            let feed = store.subscribe(10_000);
            let mut tx = store.begin_write()?;
            let builders = sample
                .iter()
                .map(customerdb::sample::SampleCustomer::to_builder);
            let ids = if bulk {
                tx.insert_many(builders)?
            } else {
                builders.map(|b| tx.insert(b)).collect::<Result<Vec<_>>>()?
            };
            assert_eq!(ids.len(), sample.len());
            assert!(ids.iter().all(|id| *id > gone));
            many_ids.clone_from(&ids);
            // A suppressed contact is refused, and only where it is suppressed.
            let again = [Customer::builder().name("Back").email(suppressed)];
            let got = tx.insert_many(again);
            assert_eq!(
                got.is_err_and(|e| matches!(e.kind(), ErrorKind::Suppressed)),
                kind == "suppressing",
                "{kind}"
            );
            tx.commit()?;
            assert!(store.verify()?.is_clean(), "{kind}");
            let mut changes = Vec::new();
            while let Some(Notification::Change(c)) = feed.try_recv() {
                changes.push((c.seq, c.customer, c.operation, c.fields.clone()));
            }
            heard.push(changes);
        }
        let (a, b) = (one.begin_read()?, many.begin_read()?);
        for (x, y) in a.customers()?.zip(b.customers()?) {
            let (x, y) = (x?, y?);
            assert_eq!((x.id, &x.customer), (y.id, &y.customer), "{kind}");
        }
        let without_time = |r: &customerdb::ReadTxn| -> Result<Vec<_>> {
            Ok(r.changes(0, usize::MAX)?
                .into_iter()
                .map(|c| (c.seq, c.customer, c.operation, c.actor, c.fields))
                .collect())
        };
        assert_eq!(without_time(&b)?, without_time(&a)?, "{kind}");
        assert_eq!(heard[0], heard[1], "{kind}");
        let back = usize::from(kind != "suppressing");
        assert_eq!(heard[1].len(), sample.len() + back, "{kind}");
        // The customers of one call share its time.
        let mut times = std::collections::BTreeSet::new();
        for id in &many_ids {
            let r = b.get(*id)?.expect("stored");
            times.insert((r.created_at, r.updated_at));
        }
        assert_eq!(times.len(), 1, "{kind}");
    }
    Ok(())
}

#[test]
fn read_transactions_and_stores_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<customerdb::ReadTxn>();
    send_sync::<Store>();
}

#[test]
fn insert_many_equals_inserting_one_by_one_and_stops_at_the_first_refusal() -> Result<()> {
    let sample = customerdb::sample::generate(11, 1_500);
    let (one, many) = (Store::in_memory()?, Store::in_memory()?);
    let mut tx = one.begin_write()?;
    let one_ids: Vec<_> = sample
        .iter()
        .map(|c| tx.insert(c.to_builder()))
        .collect::<Result<_>>()?;
    tx.commit()?;
    let mut tx = many.begin_write()?;
    let many_ids = tx.insert_many(
        sample
            .iter()
            .map(customerdb::sample::SampleCustomer::to_builder),
    )?;
    tx.commit()?;
    assert_eq!(one_ids, many_ids);
    let (a, b) = (one.begin_read()?, many.begin_read()?);
    for id in &one_ids {
        let (x, y) = (a.get(*id)?.expect("stored"), b.get(*id)?.expect("stored"));
        assert_eq!(x.customer, y.customer);
    }
    assert!(many.verify()?.is_clean());
    // The same history, but for the times (two stores, two clocks).
    let without_time = |r: &customerdb::ReadTxn| -> Result<Vec<_>> {
        Ok(r.changes(0, usize::MAX)?
            .into_iter()
            .map(|c| (c.seq, c.customer, c.operation, c.actor, c.fields))
            .collect())
    };
    assert_eq!(without_time(&b)?, without_time(&a)?);

    // A refused customer in the middle: the error is its error, the ones before it stay
    // staged and none after it is inserted.
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let builders = sample.iter().enumerate().map(|(i, c)| {
        if i == 700 {
            customerdb::Customer::builder().email("not an address")
        } else {
            c.to_builder()
        }
    });
    let err = tx.insert_many(builders).expect_err("refused");
    assert!(matches!(err.kind(), ErrorKind::Invalid { .. }), "{err}");
    assert_eq!(tx.count()?, 700);
    Ok(())
}
