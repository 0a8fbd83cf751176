//! Guards the activity timeline, derived metrics, history, the change feed, subscriptions and
//! history compaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use customerdb::{
    Activity, ActivityQuery, ActivityType, Currency, Customer, CustomerId, Direction, ErrorKind,
    Index, InteractionChannel, Notification, Operation, Read, Result, Scan, Store, TicketStatus,
};

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, d, 12, 0, 0).unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

/// A store whose clock the test sets.
fn clocked() -> Result<(Store, Arc<Mutex<DateTime<Utc>>>)> {
    let now = Arc::new(Mutex::new(day(1)));
    let c = now.clone();
    let store = Store::builder()
        .clock(move || *c.lock().unwrap())
        .in_memory()?;
    Ok((store, now))
}

#[test]
fn timeline_reads_newest_first_by_range_type_and_page() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    let alan = tx.insert(Customer::builder().name("Alan Turing"))?;
    for d in 1..=10 {
        tx.add_activity(ada, Activity::purchase(day(d), 100, eur()))?;
        tx.add_activity(
            ada,
            Activity::interaction(day(d), InteractionChannel::Email, Direction::Outbound),
        )?;
        tx.add_activity(alan, Activity::note(day(d), format!("note {d}")))?;
    }
    tx.commit()?;
    let tx = store.begin_read()?;
    let all = tx.timeline(ada, &ActivityQuery::new())?;
    assert_eq!(all.len(), 20);
    assert!(all.windows(2).all(|w| w[0].activity.at >= w[1].activity.at));
    assert!(all.iter().all(|r| r.customer == ada));

    let ranged = tx.timeline(
        ada,
        &ActivityQuery::new()
            .since(day(3))
            .until(day(5))
            .of_type(ActivityType::Purchase),
    )?;
    let days: Vec<DateTime<Utc>> = ranged.iter().map(|r| r.activity.at).collect();
    assert_eq!(days, [day(4), day(3)]);

    // Paging with a cursor visits every activity once, in order, also oldest first.
    for oldest_first in [false, true] {
        let mut q = ActivityQuery::new().limit(3);
        if oldest_first {
            q = q.oldest_first();
        }
        let mut seen = Vec::new();
        loop {
            let page = tx.timeline(ada, &q)?;
            let Some(last) = page.last() else { break };
            q = q.after(last);
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let mut expected: Vec<_> = all.iter().map(|r| r.id).collect();
        if oldest_first {
            expected.reverse();
        }
        assert_eq!(seen, expected, "oldest_first = {oldest_first}");
    }

    // Store-wide by time: day 5 has three activities across two customers.
    let on_day5 = tx.activities(&ActivityQuery::new().since(day(5)).until(day(6)))?;
    assert_eq!(on_day5.len(), 3);
    let notes = tx.activities(&ActivityQuery::new().of_type(ActivityType::Note).limit(4))?;
    assert_eq!(notes.len(), 4);
    assert!(notes.iter().all(|r| r.customer == alan));
    assert_eq!(
        tx.timeline(CustomerId::from_u64(99), &ActivityQuery::new())
            .unwrap_err()
            .kind(),
        &ErrorKind::NotFound(CustomerId::from_u64(99))
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn metrics_follow_every_change_and_are_indexed() -> Result<()> {
    let store = Store::builder()
        .base_currency("EUR")
        .exchange_rate("USD", rust_decimal::Decimal::new(9, 1))
        .in_memory()?;
    let mut tx = store.begin_write()?;
    let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    let alan = tx.insert(Customer::builder().name("Alan Turing"))?;
    assert_eq!(tx.metrics(ada)?, customerdb::Metrics::default());
    let first = tx.add_activity(ada, Activity::purchase(day(2), 1_000, eur()))?;
    tx.add_activity(
        ada,
        Activity::purchase(day(4), 1_000, Currency::parse("USD")?),
    )?;
    tx.add_activity(ada, Activity::ticket(day(3), "T-1", TicketStatus::Open))?;
    tx.add_activity(
        ada,
        Activity::interaction(day(5), InteractionChannel::Call, Direction::Inbound),
    )?;
    tx.add_activity(alan, Activity::purchase(day(1), 50, eur()))?;
    let m = tx.metrics(ada)?;
    assert_eq!(m.order_count, 2);
    assert_eq!(m.total_spend, Some(1_900));
    assert_eq!(
        (m.first_purchase, m.last_purchase),
        (Some(day(2)), Some(day(4)))
    );
    assert_eq!(m.last_interaction, Some(day(5)));
    assert_eq!(m.open_tickets, 1);

    // Indexed: range scans over the metrics.
    assert_eq!(tx.ids(&Index::OrderCount, &Scan::range(2i64..))?, vec![ada]);
    assert_eq!(
        tx.ids(&Index::TotalSpend, &Scan::range(..100i64))?,
        vec![alan]
    );
    assert_eq!(tx.ids(&Index::OpenTickets, &Scan::eq(1i64))?, vec![ada]);

    // Correcting and removing recompute them.
    tx.correct_activity(first, Activity::purchase(day(6), 3_000, eur()))?;
    let m = tx.metrics(ada)?;
    assert_eq!(
        (m.total_spend, m.last_purchase),
        (Some(3_900), Some(day(6)))
    );
    tx.add_activity(ada, Activity::ticket(day(7), "T-1", TicketStatus::Closed))?;
    assert_eq!(tx.metrics(ada)?.open_tickets, 0);
    assert!(tx.remove_activity(first)?.is_some());
    assert!(tx.remove_activity(first)?.is_none());
    assert_eq!(tx.metrics(ada)?.order_count, 1);
    assert_eq!(
        tx.correct_activity(first, Activity::note(day(1), "x"))
            .unwrap_err()
            .kind(),
        &ErrorKind::ActivityNotFound(first)
    );
    tx.commit()?;
    assert!(store.verify()?.is_clean());

    // Removing the customer removes its timeline and metric entries.
    let mut tx = store.begin_write()?;
    tx.remove(ada)?;
    assert!(
        tx.activities(&ActivityQuery::new())?
            .iter()
            .all(|r| r.customer == alan)
    );
    assert_eq!(tx.ids(&Index::OpenTickets, &Scan::All)?, vec![alan]);
    tx.commit()?;
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_refused_activity_writes_nothing() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    let err = tx
        .add_activity(
            ada,
            Activity::purchase(day(1), 10, eur()).order_ref("A\u{7}"),
        )
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Invalid { field, .. } if field == "activity.order_ref")
    );
    let missing = CustomerId::from_u64(42);
    assert_eq!(
        tx.add_activity(missing, Activity::note(day(1), "x"))
            .unwrap_err()
            .kind(),
        &ErrorKind::NotFound(missing)
    );
    assert_eq!(tx.metrics(ada)?.activity_count, 0);
    assert_eq!(tx.last_seq()?, 1, "only the insert is in history");
    tx.commit()?;
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn history_records_who_changed_what_and_rebuilds_the_past() -> Result<()> {
    let (store, now) = clocked()?;
    let mut tx = store.begin_write_as("alice")?;
    let ada = tx.insert(
        Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com")
            .tag("vip"),
    )?;
    tx.commit()?;
    let v1 = store.begin_read()?.get(ada)?.unwrap().customer;

    *now.lock().unwrap() = day(5);
    let mut tx = store.begin_write_as("bob")?;
    let mut c = v1.clone();
    c.tags.clear();
    c.emails
        .push(customerdb::Email::parse("ada@analytical.org")?);
    tx.update(ada, c.clone())?;
    tx.add_activity(ada, Activity::note(day(5), "moved"))?;
    tx.commit()?;

    let tx = store.begin_read()?;
    let h = tx.history(ada, None, 10)?;
    let ops: Vec<Operation> = h.iter().map(|c| c.operation).collect();
    assert!(matches!(
        ops.as_slice(),
        [
            Operation::ActivityAdded(_),
            Operation::Update,
            Operation::Insert
        ]
    ));
    assert_eq!(h[1].actor.as_deref(), Some("bob"));
    assert_eq!(h[2].actor.as_deref(), Some("alice"));
    let fields: Vec<&str> = h[1].fields.iter().map(|f| f.field.as_ref()).collect();
    assert_eq!(fields, ["emails", "tags"]);
    assert!(h[1].fields[1].after.is_none(), "tags cleared");
    // Paging back from a sequence number.
    assert_eq!(tx.history(ada, Some(h[1].seq), 10)?.len(), 1);

    assert_eq!(
        tx.customer_as_of(ada, day(1) - chrono::Duration::hours(1))?,
        None
    );
    assert_eq!(tx.customer_as_of(ada, day(2))?, Some(v1));
    assert_eq!(tx.customer_as_of(ada, day(6))?, Some(c));

    let feed = tx.changes(0, 100)?;
    assert_eq!(
        feed.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [1, 2, 3],
        "no gaps"
    );
    assert_eq!(tx.changes(2, 100)?.len(), 1);
    assert_eq!(tx.last_seq()?, 3);
    for since in [0, 1, 2, 3, u64::MAX] {
        let streamed = tx.feed(since)?.collect::<Result<Vec<_>>>()?;
        assert_eq!(streamed, tx.changes(since, 100)?, "feed after {since}");
    }
    Ok(())
}

#[test]
fn subscribers_hear_commits_only_and_a_slow_one_is_told_it_lagged() -> Result<()> {
    let store = Store::in_memory()?;
    let fast = store.subscribe(100);
    let slow = store.subscribe(2);

    let mut tx = store.begin_write()?;
    tx.insert(Customer::builder().name("Rolled Back"))?;
    tx.abort()?;
    assert!(
        fast.try_recv().is_none(),
        "nothing for a rolled-back transaction"
    );

    for i in 0..5 {
        let mut tx = store.begin_write()?;
        tx.insert(Customer::builder().name(format!("Person {i}")))?;
        tx.commit()?;
    }
    let mut seqs = Vec::new();
    while let Some(Notification::Change(c)) = fast.recv_timeout(Duration::from_millis(10)) {
        seqs.push(c.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5]);

    assert!(matches!(slow.try_recv(), Some(Notification::Change(c)) if c.seq == 1));
    assert!(matches!(slow.try_recv(), Some(Notification::Change(c)) if c.seq == 2));
    let Some(Notification::Lagged { first, last }) = slow.try_recv() else {
        panic!("expected a lag notice");
    };
    assert_eq!((first, last), (3, 5));
    let missed = store.begin_read()?.changes(first - 1, 100)?;
    assert_eq!(missed.iter().map(|c| c.seq).collect::<Vec<_>>(), [3, 4, 5]);
    // After the notice, delivery resumes.
    let mut tx = store.begin_write()?;
    tx.insert(Customer::builder().name("Late"))?;
    tx.commit()?;
    assert!(matches!(slow.try_recv(), Some(Notification::Change(c)) if c.seq == 6));

    // A subscriber on another thread is woken by a commit.
    assert!(matches!(fast.try_recv(), Some(Notification::Change(c)) if c.seq == 6));
    let waiter = std::thread::spawn(move || fast.recv());
    let mut tx = store.begin_write()?;
    tx.insert(Customer::builder().name("Woken"))?;
    tx.commit()?;
    let got = waiter.join().unwrap();
    assert!(matches!(got, Some(Notification::Change(c)) if c.seq == 7));
    Ok(())
}

/// A subscriber and the change feed tell of an insert alike, whatever its values: with an
/// instant finer than the microsecond the store keeps (a consent given at `Utc::now()`, a
/// timestamp attribute), one by `insert` and one by `insert_many`. (The store's clock is set to
/// a whole second: a change's own time is another matter.)
#[test]
fn subscribers_and_the_feed_tell_of_an_insert_alike() -> Result<()> {
    use customerdb::{AttributeType, Channel, Consent, ConsentStatus};
    let (store, _now) = clocked()?;
    let mut tx = store.begin_write()?;
    tx.declare_attribute("seen", AttributeType::Timestamp, false)?;
    tx.commit()?;
    let sub = store.subscribe(100);
    let fine = Utc.timestamp_nanos(1_772_366_400_123_456_789);
    let customer = |name: &str| {
        Customer::builder()
            .name(name)
            .attribute("seen", fine)
            .consent(Consent::new(
                "marketing",
                Channel::Email,
                ConsentStatus::Granted,
                fine,
                "web_form",
            ))
    };
    let mut tx = store.begin_write()?;
    tx.insert(customer("Ada Lovelace"))?;
    tx.insert_many([customer("Grace Hopper")])?;
    tx.commit()?;
    let mut heard = Vec::new();
    while let Some(Notification::Change(c)) = sub.try_recv() {
        heard.push((*c).clone());
    }
    let feed = store.begin_read()?.changes(1, 100)?;
    assert_eq!(heard.len(), 2);
    assert_eq!(heard, feed);
    Ok(())
}

#[test]
fn compaction_keeps_the_present_and_rebuilds_from_snapshots() -> Result<()> {
    let (store, now) = clocked()?;
    let mut ids = Vec::new();
    for d in 1..=6 {
        *now.lock().unwrap() = day(d);
        let mut tx = store.begin_write()?;
        if d == 1 {
            for name in ["Ada Lovelace", "Alan Turing", "Grace Hopper"] {
                ids.push(tx.insert(Customer::builder().name(name))?);
            }
        } else {
            for &id in &ids {
                let mut c = tx.get(id)?.unwrap().customer;
                c.organization = Some(format!("Org {d}"));
                tx.update(id, c)?;
            }
            tx.add_activity(ids[0], Activity::note(day(d), "hi"))?;
        }
        if d == 3 {
            tx.remove(ids[1])?;
            ids.truncate(1);
        }
        tx.commit()?;
    }
    let before = store.begin_read()?;
    let ada = before.get(CustomerId::from_u64(1))?.unwrap().customer;
    let ada_day4 = before.customer_as_of(CustomerId::from_u64(1), day(4))?;
    let total_before = before.changes(0, usize::MAX)?.len();
    drop(before);

    let done = store.compact_history(day(4))?;
    assert!(done.removed > 0);
    assert_eq!(
        done.snapshots, 2,
        "Ada's and Grace's pasts become snapshots"
    );
    assert!(store.verify()?.is_clean());

    let tx = store.begin_read()?;
    let feed = tx.changes(0, usize::MAX)?;
    assert_eq!(
        feed.len() as u64,
        total_before as u64 - done.removed,
        "compaction reports what it removed"
    );
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    // The removed customer's history is gone; the others replay to the present.
    assert!(tx.history(CustomerId::from_u64(2), None, 10)?.is_empty());
    assert_eq!(
        tx.customer_as_of(CustomerId::from_u64(1), day(30))?,
        Some(ada)
    );
    assert_eq!(
        tx.customer_as_of(CustomerId::from_u64(1), day(4))?,
        ada_day4
    );
    assert!(
        tx.customer_as_of(CustomerId::from_u64(3), day(30))?
            .is_some()
    );
    // Compacting again changes nothing.
    drop(tx);
    assert_eq!(store.compact_history(day(4))?.removed, 0);
    Ok(())
}

#[test]
fn configured_retention_compacts_what_is_older_than_its_horizon() -> Result<()> {
    let now = Arc::new(Mutex::new(day(1)));
    let c = now.clone();
    let store = Store::builder()
        .clock(move || *c.lock().unwrap())
        .history_retention(customerdb::HistoryRetention::CompactOlderThan(
            chrono::Duration::days(7),
        ))
        .in_memory()?;
    let mut tx = store.begin_write()?;
    let id = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    tx.add_activity(id, Activity::note(day(1), "first"))?;
    tx.commit()?;
    *now.lock().unwrap() = day(5);
    assert_eq!(
        store.apply_history_retention()?.unwrap().removed,
        0,
        "nothing is 7 days old"
    );
    *now.lock().unwrap() = day(20);
    let done = store.apply_history_retention()?.unwrap();
    assert_eq!((done.removed, done.snapshots), (1, 1));
    assert!(
        Store::in_memory()?.apply_history_retention()?.is_none(),
        "keep all by default"
    );
    assert!(store.verify()?.is_clean());
    Ok(())
}

/// With the system clock, whose times are finer than the microsecond the store keeps, what
/// a subscriber hears, what `update` returns and what is read back agree to the nanosecond.
#[test]
fn changes_heard_and_records_returned_agree_with_what_is_read_back() -> Result<()> {
    let store = Store::in_memory()?;
    let sub = store.subscribe(100);
    let mut tx = store.begin_write()?;
    let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    let mut moved = tx.get(ada)?.expect("inserted").customer;
    moved.tags.insert(customerdb::Tag::parse("vip")?);
    let returned = tx.update(ada, moved)?;
    tx.add_activity(
        ada,
        Activity::purchase(day(2), 1_250, Currency::parse("EUR")?),
    )?;
    tx.commit()?;
    assert_eq!(store.begin_read()?.get(ada)?, Some(returned));
    let mut heard = Vec::new();
    while let Some(Notification::Change(c)) = sub.try_recv() {
        heard.push((*c).clone());
    }
    assert_eq!(heard.len(), 3);
    assert_eq!(heard, store.begin_read()?.changes(0, 100)?);
    Ok(())
}
