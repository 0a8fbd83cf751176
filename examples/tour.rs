//! The main job: 100,000 generated customers imported into a store on disk, then looked up
//! every way a host application would, a bad record refused, purchases, calls and tickets added
//! to their timelines with the metrics they drive, a change traced through history and the
//! change feed, a duplicate caught on insert, explained, merged and unmerged, and the store
//! verified.
//!
//! `cargo run --release --example tour` (set `TOUR_N` for another size).

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use customerdb::import::{CsvImport, ImportMode};
use customerdb::{
    Activity, ActivityQuery, AttributeType, Currency, Customer, CustomerId, Direction, Durability,
    ErrorKind, Index, InteractionChannel, Notification, Read, Result, Scan, Store, TicketStatus,
    sample,
};

#[allow(clippy::too_many_lines)] // a tour reads best top to bottom, step by step
fn main() -> Result<()> {
    let n: usize = std::env::var("TOUR_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let store = Store::builder()
        .default_region("GB")
        .durability(Durability::None) // bulk load: no fsync per batch...
        .create(dir.path().join("tour.redb"))?;

    // 1. Bulk load: batches of 10,000.
    let people = sample::generate(42, n);
    let t = Instant::now();
    let mut tx = store.begin_write()?;
    tx.declare_attribute("loyalty_points", AttributeType::Integer, true)?;
    for (i, p) in people.iter().enumerate() {
        let points = i64::try_from(i % 5_000).unwrap_or(0);
        tx.insert(p.to_builder().attribute("loyalty_points", points))?;
        if (i + 1) % 10_000 == 0 {
            tx.commit()?;
            tx = store.begin_write()?;
        }
    }
    tx.set_durability(Durability::Immediate); // ...and one at the end makes them all durable
    tx.commit()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "imported {n} customers in {secs:.2} s ({:.0}/s)",
        n as f64 / secs
    );

    // 2. Lookups, each by what a person would type.
    let tx = store.begin_read()?;
    assert_eq!(tx.count()?, n as u64);
    let first = &people[0];
    let by_email = tx
        .find_by_email(&first.email.to_uppercase())?
        .expect("by email");
    println!(
        "by email {:>28}: #{} {}",
        first.email,
        by_email.id,
        by_email.customer.name.as_ref().map_or("", |n| n.display())
    );
    let phone = by_email.customer.phones[0].e164();
    let by_phone = tx.find_by_phone(phone)?;
    println!(
        "by phone {phone:>28}: {} customer(s) share it",
        by_phone.len()
    );
    assert!(by_phone.iter().any(|r| r.id == by_email.id));
    let (system, ext) = &first.external_id;
    assert_eq!(
        tx.find_by_external_id(system, ext)?.map(|r| r.id),
        Some(by_email.id)
    );
    let family = first.family_name.as_str();
    let sounds_like = tx.ids(&Index::FamilyPhonetic, &Scan::eq(family))?.len();
    let exact = tx.ids(&Index::FamilyName, &Scan::eq(family))?.len();
    println!("family name {family}: {exact} exact, {sounds_like} sounding alike");
    assert!(sounds_like >= exact && exact >= 1);
    for country in ["GB", "DE", "US"] {
        println!(
            "customers in {country}: {}",
            tx.ids(&Index::Country, &Scan::eq(country))?.len()
        );
    }
    let d = |y| chrono::NaiveDate::from_ymd_opt(y, 1, 1).expect("valid date");
    let sixties = tx
        .ids(&Index::BirthDate, &Scan::range(d(1960)..d(1970)))?
        .len();
    let loyal = tx
        .ids(
            &Index::Attribute("loyalty_points".into()),
            &Scan::range(4_900i64..),
        )?
        .len();
    println!("born in the 1960s: {sixties}; loyalty points >= 4900: {loyal}");
    drop(tx);

    // 3. A bad record is refused with the field and the reason; nothing of it is stored.
    let mut tx = store.begin_write()?;
    let bad = Customer::builder()
        .name("Mallory Bad")
        .email("mallory@@example")
        .phone("123");
    let err = tx.insert(bad).expect_err("refused");
    println!("refused: {err}");
    assert!(matches!(err.kind(), ErrorKind::Invalid { field, .. } if field == "emails[0]"));
    let dup = Customer::builder()
        .name("Copy Cat")
        .email(first.email.as_str());
    let err = tx.insert(dup).expect_err("duplicate email");
    println!("refused: {err}");
    tx.commit()?;
    assert_eq!(store.begin_read()?.count()?, n as u64);

    // 4. A CSV import goes on past bad lines and reports each.
    let csv = "first_name,last_name,email,phone,country\n\
               Grace,Hopper,grace@navy.example.mil,+1 201 555 0123,US\n\
               Bad,Phone,bad.phone@example.com,555,GB\n\
               Alan,Turing,alan@example.org,020 7946 0991,GB\n";
    let report = CsvImport::new()
        .mode(ImportMode::Strict)
        .run(&store, csv.as_bytes())?;
    println!(
        "csv: read {}, stored {}, rejected {}",
        report.read,
        report.stored,
        report.rejected.len()
    );
    for r in &report.rejected {
        println!("  line {}: {}", r.line, r.errors[0]);
    }
    assert_eq!((report.stored, report.rejected.len()), (2, 1));

    // 5. Timelines: purchases, calls and tickets for the first 20,000 customers, five each,
    //    with their metrics kept (and indexed) in the same transactions.
    let feed_start = store.begin_read()?.last_seq()?;
    let watcher = store.subscribe(1_000);
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("valid time");
    let eur = Currency::parse("EUR")?;
    let mut rng = sample::SplitMix64::new(7);
    let active = n.min(20_000) as u64;
    let t = Instant::now();
    let mut tx = store.begin_write_as("shop-sync")?;
    for i in 0..active * 5 {
        let id = CustomerId::from_u64(1 + i % active);
        let at = now - Duration::hours(i64::try_from(rng.below(24 * 720)).unwrap_or(0));
        let activity = match rng.below(10) {
            0..=5 => {
                Activity::purchase(at, 500 + i64::try_from(rng.below(20_000)).unwrap_or(0), eur)
                    .order_ref(format!("ORD-{i}"))
            }
            6..=8 => Activity::interaction(at, InteractionChannel::Call, Direction::Inbound)
                .subject("order question"),
            _ => Activity::ticket(at, format!("T-{}", i % 3_000), TicketStatus::Open),
        };
        tx.add_activity(id, activity)?;
        if (i + 1) % 10_000 == 0 {
            tx.commit()?;
            tx = store.begin_write_as("shop-sync")?;
        }
    }
    tx.commit()?;
    println!(
        "added {} activities in {:.2} s",
        active * 5,
        t.elapsed().as_secs_f64()
    );
    let tx = store.begin_read()?;
    let ada = CustomerId::from_u64(1);
    let metrics = tx.metrics(ada)?;
    println!(
        "customer #1: {} orders, {} spent, last purchase {}, {} open tickets",
        metrics.order_count,
        metrics
            .total_spend
            .map_or("?".into(), |c| format!("EUR {:.2}", c as f64 / 100.0)),
        metrics
            .last_purchase
            .map_or("never".into(), |t| t.date_naive().to_string()),
        metrics.open_tickets
    );
    for r in tx.timeline(ada, &ActivityQuery::new().limit(3))? {
        println!("  {} {:?}", r.activity.at.date_naive(), r.activity.kind);
    }
    let loyal = tx.ids(&Index::OrderCount, &Scan::range(4i64..))?.len();
    let lapsed = tx
        .ids(
            &Index::LastPurchase,
            &Scan::range(..now - Duration::days(365)),
        )?
        .len();
    let yesterday = tx
        .activities(
            &ActivityQuery::new()
                .since(now - Duration::days(1))
                .until(now)
                .limit(usize::MAX),
        )?
        .len();
    println!(
        "4+ orders: {loyal}; last purchase over a year ago: {lapsed}; activities in the last day: {yesterday}"
    );
    drop(tx);

    // 6. History: support changes a record; who did what is on record, the past can be
    //    rebuilt, and the change feed (and a subscriber) saw every committed change.
    let before_edit = Utc::now();
    let mut tx = store.begin_write_as("support:ana")?;
    let mut edited = tx.get(ada)?.expect("customer 1").customer;
    edited.job_title = Some("Chief Analyst".into());
    edited.tags.clear();
    tx.update(ada, edited)?;
    tx.commit()?;
    let tx = store.begin_read()?;
    let last = &tx.history(ada, None, 1)?[0];
    println!(
        "history of #1: seq {} by {} changed {}",
        last.seq,
        last.actor.as_deref().unwrap_or("?"),
        last.fields
            .iter()
            .map(|f| f.field.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let then = tx.customer_as_of(ada, before_edit)?.expect("existed");
    assert!(then.job_title.is_none() || then.job_title.as_deref() != Some("Chief Analyst"));
    let feed = tx.changes(feed_start, usize::MAX)?;
    println!(
        "change feed since seq {feed_start}: {} changes (activities and the edit)",
        feed.len()
    );
    assert_eq!(feed.len() as u64, active * 5 + 1);
    let mut heard = 0;
    while let Some(note) = watcher.try_recv() {
        match note {
            Notification::Change(_) => heard += 1,
            Notification::Lagged { first, last } => {
                heard += tx
                    .changes(first - 1, usize::try_from(last - first + 1).unwrap_or(0))?
                    .len();
            }
            _ => {}
        }
    }
    println!("subscriber: heard {heard} changes (catching up from the feed when it lagged)");
    assert_eq!(heard, feed.len());
    drop(tx);

    // 7. Duplicates: the model is trained on the store's own data (no labels); a returning
    //    customer typed in again with another email is caught on insert and explained;
    //    merged (activities, metrics and an alias follow) and unmerged.
    let t = Instant::now();
    let mut tx = store.begin_write()?;
    let trained = tx.train_duplicate_model(&customerdb::dedup::Matcher::default())?;
    tx.commit()?;
    println!(
        "duplicate model trained on {} customers ({} candidate pairs) in {:.2} s",
        n,
        trained.candidate_pairs,
        t.elapsed().as_secs_f64()
    );
    let p0 = &people[0];
    let again = Customer::builder()
        .given_name(p0.given_name.as_str())
        .family_name(p0.family_name.as_str())
        .email("someone.else@example.org")
        .phone(p0.phone.as_str())
        .phone_region(p0.phone_country.as_str())
        .birth_date(p0.birth_date)
        .address(customerdb::AddressParts {
            lines: vec![p0.street.clone()],
            locality: Some(p0.locality.clone()),
            postcode: Some(p0.postcode.clone()),
            country: Some(p0.country.clone()),
            ..customerdb::AddressParts::default()
        });
    let mut tx = store.begin_write_as("support:ana")?;
    let customerdb::Checked::Inserted(copy, found) =
        tx.insert_checked(again, customerdb::OnDuplicate::Flag(0.9))?
    else {
        unreachable!("flag never merges");
    };
    let best = found.first().expect("customer #1 is found");
    assert_eq!(best.id, ada);
    println!(
        "insert #{copy}: probably #{} (p = {:.4}, blocked on {}):
{}",
        best.id,
        best.score.probability,
        best.rules.join(", "),
        best.explanation
    );
    let plan = tx.merge_plan(ada, &[copy], &customerdb::Survivorship::MostRecent)?;
    let merge = tx.merge(&plan)?;
    assert_eq!(tx.get(copy)?.map(|r| r.id), Some(ada));
    println!(
        "merged #{copy} into #{ada}: {} emails now, old id resolves to #{}",
        tx.get(ada)?.map_or(0, |r| r.customer.emails.len()),
        tx.resolve(copy)?.map_or(0, CustomerId::as_u64)
    );
    tx.unmerge(merge)?;
    assert_eq!(tx.get(copy)?.map(|r| r.id), Some(copy));
    tx.decide(ada, copy, false, "ana")?;
    tx.commit()?;
    println!("unmerged; a reviewer marked the pair as two people, so it will not come back");

    // 8. Every record against every index, both ways, and every metric against its timeline.
    let t = Instant::now();
    let report = store.verify()?;
    println!(
        "verify: {} records, {} index entries, {} unique entries, {} problems ({:.2} s)",
        report.records,
        report.entries,
        report.unique_entries,
        report.problems.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(report.is_clean());
    Ok(())
}
