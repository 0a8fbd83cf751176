//! Guards atomicity and durability across a crash: a child process writes in a loop and is
//! killed with SIGKILL at random points. After reopening, every transaction it reported as
//! committed is there in full, the one in flight is there entirely or not at all, none after
//! it exists, the change feed is numbered without a gap and holds an entry for every write that
//! committed and none for one that did not, and `verify()` (which recomputes every metric from
//! the timeline) is clean.
//!
//! The child is this same test binary, re-run with `--ignored --exact crash::writer_child` and
//! the store path in `CUSTOMERDB_CRASH_STORE`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use customerdb::{Activity, Currency, Customer, Durability, Operation, Read, Result, Store};

const PER_TXN: u64 = 5;
const ROUNDS: u64 = 24;

fn email(round: u64, txn: u64, i: u64) -> String {
    format!("r{round}-t{txn}-{i}@crash.example.com")
}

/// The child: commits transactions of `PER_TXN` inserts, each with a purchase, plus an update of
/// an earlier customer (so index entries move), printing each transaction's number once
/// `commit` has returned.
#[test]
#[ignore = "run as a child process by crash_at_random_points_loses_no_committed_transaction"]
fn writer_child() -> Result<()> {
    let Ok(path) = std::env::var("CUSTOMERDB_CRASH_STORE") else {
        return Ok(());
    };
    let round: u64 = std::env::var("CUSTOMERDB_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::builder()
        .durability(Durability::Immediate)
        .create(path)?;
    // Load the phone metadata (slow in debug builds) before the parent starts its kill timer.
    customerdb::Phone::parse(crate::PHONES[0], None)?;
    println!("READY");
    for txn in 0.. {
        let mut tx = store.begin_write()?;
        for i in 0..PER_TXN {
            let id = tx.insert(
                Customer::builder()
                    .name(format!("Crash Round{round} Txn{txn}"))
                    .email(email(round, txn, i))
                    .phone(crate::PHONES[(i % 5) as usize])
                    .tag(format!("t{}", txn % 7)),
            )?;
            let at = chrono::DateTime::from_timestamp(1_700_000_000 + (txn * 60).cast_signed(), 0)
                .unwrap_or_default();
            tx.add_activity(
                id,
                Activity::purchase(at, 100 + i.cast_signed(), Currency::parse("EUR")?),
            )?;
        }
        let n = tx.count()?;
        if n > 1 {
            let target = customerdb::CustomerId::from_u64(1 + txn % (n - 1));
            if let Some(rec) = tx.get(target)? {
                let mut c = rec.customer;
                c.tags.clear();
                c.tags
                    .insert(customerdb::Tag::parse(&format!("moved{txn}"))?);
                tx.update(target, c)?;
            }
        }
        tx.commit()?;
        println!("COMMITTED {txn}");
    }
    Ok(())
}

#[test]
fn crash_at_random_points_loses_no_committed_transaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe()?;
    let mut delays = customerdb::sample::SplitMix64::new(0x5EED);
    let mut total_committed = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash::writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CUSTOMERDB_CRASH_STORE", &path)
            .env("CUSTOMERDB_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut committed = Vec::new();
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else if let Some(n) = line
                    .strip_prefix("COMMITTED ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    committed.push(n);
                }
            }
            committed
        });
        ready_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the child did not start");
        std::thread::sleep(Duration::from_millis(10 + delays.below(300)));
        child.kill()?; // SIGKILL on Unix
        child.wait()?;
        let committed = reader.join().expect("reader thread");
        total_committed += committed.len();

        let store = Store::open(&path)?;
        let tx = store.begin_read()?;
        let last = committed.last().copied();
        // Every reported transaction is there in full.
        for &txn in &committed {
            for i in 0..PER_TXN {
                assert!(
                    tx.find_by_email(&email(round, txn, i))?.is_some(),
                    "round {round} txn {txn} lost"
                );
            }
        }
        // The transaction in flight at the kill is all there or not at all.
        let in_flight = last.map_or(0, |l| l + 1);
        let present = (0..PER_TXN)
            .filter(|&i| {
                tx.find_by_email(&email(round, in_flight, i))
                    .ok()
                    .flatten()
                    .is_some()
            })
            .count() as u64;
        assert!(
            present == 0 || present == PER_TXN,
            "round {round}: torn transaction ({present} of {PER_TXN})"
        );
        // Nothing after it was written.
        assert!(tx.find_by_email(&email(round, in_flight + 1, 0))?.is_none());
        // The feed: numbered 1..=n without a gap; an insert and a purchase for every customer
        // there is and none for one that is not.
        let feed = tx.changes(0, usize::MAX)?;
        assert!(
            feed.iter().zip(1..).all(|(c, n)| c.seq == n),
            "round {round}: a gap in the change feed"
        );
        let count = |op: fn(Operation) -> bool| feed.iter().filter(|c| op(c.operation)).count();
        assert_eq!(count(|o| o == Operation::Insert) as u64, tx.count()?);
        assert_eq!(
            count(|o| matches!(o, Operation::ActivityAdded(_))) as u64,
            tx.count()?
        );
        for c in &feed {
            let id = c.customer.expect("every change here is to a customer");
            assert!(
                tx.contains(id)?,
                "round {round}: change {} is for an uncommitted customer",
                c.seq
            );
        }
        let report = store.verify()?;
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
    }
    assert!(
        total_committed > 0,
        "the child never committed: the test proved nothing"
    );
    Ok(())
}
