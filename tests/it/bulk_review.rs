//! Review of the prepared bulk insert, unwritten ids and the parallel flush: customers of every
//! shape inserted in bulk equal the same inserted one by one, errors come in `insert`'s order,
//! and large flushes in encrypted, subscribed and fixed-clock stores leave `verify()` clean.

use chrono::{NaiveDate, TimeZone, Utc};
use customerdb::crypt::{Keys, MasterKey};
use customerdb::{
    AddressParts, AttributeType, AttributeValue, Channel, Consent, ConsentStatus, Customer,
    CustomerBuilder, ErrorKind, Notification, Read, Result, Store, WriteTxn,
};

fn declare(tx: &mut WriteTxn) -> Result<()> {
    tx.declare_attribute("tier", AttributeType::Text, true)?;
    tx.declare_attribute("score", AttributeType::Integer, true)?;
    tx.declare_attribute("vip", AttributeType::Boolean, true)?;
    tx.declare_attribute("since", AttributeType::Date, true)?;
    tx.declare_attribute("labels", AttributeType::TextList, true)?;
    tx.declare_attribute("plain", AttributeType::Text, false)
}

/// Customer `i`, of a shape that varies with `i`: several emails, phones and external ids,
/// indexed and unindexed attributes, consent, addresses.
fn shaped(i: usize) -> CustomerBuilder {
    let mut b = Customer::builder().name(format!("Ada{} Lovelace{}", i % 7, i % 3));
    for e in 0..(i % 3) {
        b = b.email(format!("c{i}.{e}@example.com"));
    }
    for p in 0..(i % 3) {
        b = b.phone(crate::PHONES[(i + p) % crate::PHONES.len()]);
    }
    if i % 4 == 1 {
        b = b
            .external_id("shop", i.to_string())
            .external_id("crm", i.to_string());
    }
    if i.is_multiple_of(2) {
        b = b
            .attribute(
                "tier",
                AttributeValue::Text(["gold", "silver"][i % 4 / 2].into()),
            )
            .attribute(
                "score",
                AttributeValue::Integer(i64::try_from(i % 11).unwrap() - 5),
            )
            .attribute("vip", AttributeValue::Boolean(i.is_multiple_of(3)))
            .attribute(
                "since",
                AttributeValue::Date(
                    NaiveDate::from_ymd_opt(2020, 1, 1 + (i % 28) as u32).unwrap(),
                ),
            )
            .attribute(
                "labels",
                AttributeValue::TextList(vec![format!("l{}", i % 5), "all".into(), String::new()]),
            )
            .attribute("plain", AttributeValue::Text("x".into()));
    }
    if !i.is_multiple_of(5) {
        b = b.address(AddressParts {
            locality: Some(["London", "Berlin"][i % 2].into()),
            postcode: Some(["sw1y 4jh", "10115"][i % 2].into()),
            country: Some(["gb", "de"][i % 2].into()),
            ..AddressParts::default()
        });
    }
    if i.is_multiple_of(3) {
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        b = b.consent(Consent::new(
            "marketing",
            Channel::Email,
            ConsentStatus::Granted,
            at,
            "web",
        ));
    }
    b.tag(["vip", "new"][i % 2])
}

#[test]
fn customers_of_every_shape_insert_in_bulk_as_one_by_one() -> Result<()> {
    let t = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let (one, many) = (
        Store::builder().clock(move || t).in_memory()?,
        Store::builder().clock(move || t).in_memory()?,
    );
    for (store, bulk) in [(&one, false), (&many, true)] {
        let mut tx = store.begin_write()?;
        declare(&mut tx)?;
        // Ids of several varint lengths: 1 byte up to 127, 2 from 128.
        let ids = if bulk {
            tx.insert_many((0..300).map(shaped))?
        } else {
            (0..300)
                .map(|i| tx.insert(shaped(i)))
                .collect::<Result<Vec<_>>>()?
        };
        assert_eq!(ids.len(), 300);
        tx.commit()?;
        let report = store.verify()?;
        assert!(report.is_clean(), "bulk {bulk}: {:?}", report.problems);
    }
    let (a, b) = (one.begin_read()?, many.begin_read()?);
    for (x, y) in a.customers()?.zip(b.customers()?) {
        assert_eq!(x?, y?);
    }
    assert_eq!(a.changes(0, usize::MAX)?, b.changes(0, usize::MAX)?);
    Ok(())
}

#[test]
fn a_refused_bulk_customer_gives_insert_s_error_and_stages_nothing() -> Result<()> {
    let bad_type = || Customer::builder().attribute("score", AttributeValue::Text("x".into()));
    let clash = || Customer::builder().email("c1.0@example.com");
    // Each batch: what insert_many refuses, and at which customer.
    let batches: Vec<(Vec<CustomerBuilder>, &str)> = vec![
        (vec![shaped(3), bad_type(), clash()], "schema"),
        (vec![shaped(3), clash(), bad_type()], "conflict"),
        (
            vec![
                shaped(3),
                clash().attribute("score", AttributeValue::Text("x".into())),
            ],
            "schema",
        ),
    ];
    for encrypted in [false, true] {
        for (batch, want) in batches.clone() {
            let store = if encrypted {
                Store::builder()
                    .encryption(Keys::new(1, MasterKey::from_bytes(&[3; 32]).expect("key")))
                    .in_memory()?
            } else {
                Store::in_memory()?
            };
            let mut tx = store.begin_write()?;
            declare(&mut tx)?;
            tx.insert(shaped(1))?;
            let before = tx.count()?;
            let err = tx.insert_many(batch).expect_err("refused");
            let kind = match err.kind() {
                ErrorKind::Conflict { .. } => "conflict",
                ErrorKind::AttributeType { .. } => "schema",
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(kind, want, "encrypted {encrypted}");
            // The customer before the refused one stays; nothing of the refused one.
            assert_eq!(tx.count()?, before + 1);
            let next = tx.insert(shaped(4))?;
            tx.commit()?;
            let report = store.verify()?;
            assert!(report.is_clean(), "{:?}", report.problems);
            // Ids are consecutive: the refused customer took none.
            assert_eq!(next.as_u64(), store.begin_read()?.count()?);
        }
    }
    Ok(())
}

/// A bulk load big enough for the flush to write postings on a second thread, in stores that
/// keep the writer-side path (encrypted, subscribed) and with a clock that never moves (every
/// time one index value, across calls and transactions).
#[test]
fn large_flushes_in_encrypted_subscribed_and_fixed_clock_stores_verify_clean() -> Result<()> {
    let t = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    for kind in ["encrypted", "subscribed", "fixed clock"] {
        let store = match kind {
            "encrypted" => Store::builder()
                .encryption(Keys::new(1, MasterKey::from_bytes(&[9; 32]).expect("key")))
                .in_memory()?,
            _ => Store::builder().clock(move || t).in_memory()?,
        };
        let feed = (kind == "subscribed").then(|| store.subscribe(100_000));
        let n = 1_300;
        for round in 0..2 {
            let mut tx = store.begin_write()?;
            if round == 0 {
                declare(&mut tx)?;
            }
            let first = tx.insert_many((0..n).map(|i| shaped(i + round * n)))?;
            // A read flushes; the next customers are then above the written ids.
            assert_eq!(tx.count()?, ((round + 1) * n + round) as u64);
            tx.update(first[0], shaped(12_000 + 12 * round))?;
            tx.insert(shaped(2 * n + 10 + round))?;
            tx.insert_many([shaped(2 * n + 20 + round)])?;
            tx.remove(first[1])?;
            tx.commit()?;
            let report = store.verify()?;
            assert!(
                report.is_clean(),
                "{kind} round {round}: {:?}",
                report.problems
            );
        }
        if let Some(feed) = feed {
            let mut heard = 0;
            while let Some(Notification::Change(c)) = feed.try_recv() {
                assert!(c.operation.as_str() != "insert" || !c.fields.is_empty());
                heard += 1;
            }
            assert!(heard > 2 * n, "{heard}");
        }
    }
    Ok(())
}
