//! # What is measured
//!
//! The activity-timeline workloads, on three engines in the same process:
//!
//! - **customerdb**: `WriteTxn::add_activity`, which validates the activity, writes it to its
//!   three tables (by customer and time, by id, by time), updates the customer's metrics and their
//!   six index entries, and appends a history entry with the activity as JSON — all in the same
//!   transaction. Reads go through `Read::timeline` and `Read::changes`.
//! - **redb**: the same work by hand on redb 4: activities keyed `customer ++ at ++ id` (postcard
//!   values), a by-time table, a metrics table read and rewritten per activity with four
//!   multimap metric indexes (order count, spend, last purchase, last interaction) moved by hand,
//!   and a change table `seq -> postcard(change)` holding what customerdb's history entry holds
//!   (time, actor, customer, operation, the field with before and after as JSON text) plus a
//!   `customer ++ seq` table.
//! - **sqlite**: rusqlite with bundled SQLite, WAL, `synchronous=NORMAL`, cached statements: an
//!   `activities` table indexed on `(customer_id, at)` and on `at`, a `metrics` table updated in
//!   the same transaction with indexes on the same four metrics, and a `changes` table
//!   (`seq INTEGER PRIMARY KEY`, time, actor, customer, operation, field, before and after as JSON
//!   text) indexed on `(customer_id, seq)`.
//!
//! Data: N customers (N = 100,000 unless `CUSTOMERDB_BENCH_N` says otherwise), then 10 N
//! activities across them (70% purchases in EUR, 20% interactions, 10% ticket events), random
//! customers, times spread over two years. Loading the customers and the first 10 N activities
//! is not timed. Caches: 256 MiB.
//!
//! Workloads:
//! - `activity_append`: 100,000 more activities per iteration, in transactions of 1,000
//!   (non-durable but the last; SQLite `synchronous=NORMAL`). Ten iterations append 1,000,000.
//! - `timeline_newest50`: 10,000 random customers per iteration, each read for its 50 newest
//!   activities, decoded.
//! - `change_feed`: the first 10 N activity changes of the feed (at most 1,000,000; customerdb's
//!   feed starts with the customers' inserts, which are skipped), read in pages of 10,000 and
//!   decoded into change structures whose payload (the activity) stays JSON text, as
//!   a consumer forwarding changes would take it.

#![allow(clippy::doc_markdown, clippy::cast_possible_wrap)]

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{CACHE_BYTES, temp_dir};
use criterion::{Criterion, criterion_group, criterion_main};
use customerdb::sample::SplitMix64;
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

const SEED: u64 = 0x7113_1113;
const PER_TXN: usize = 1_000;
const APPEND_PER_ITER: usize = 100_000;
const READS_PER_ITER: usize = 10_000;
const NEWEST: usize = 50;
const FEED: usize = 1_000_000;
const FEED_PAGE: usize = 10_000;
/// 2024-01-01, and two years of seconds after it.
const T0: i64 = 1_704_067_200;
const SPAN: u64 = 2 * 365 * 86_400;

fn n() -> usize {
    common::n(100_000)
}

/// One generated activity, engine-neutral.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Act {
    customer: u64,
    at: i64,
    /// 0 purchase, 1 interaction, 2 ticket event.
    kind: u8,
    amount: i64,
    reference: String,
}

impl Act {
    fn json(&self) -> String {
        serde_json::to_string(self).unwrap()
    }

    fn to_activity(&self) -> customerdb::Activity {
        use customerdb::{Activity, Currency, Direction, InteractionChannel, TicketStatus};
        let at = chrono::DateTime::from_timestamp(self.at, 0).unwrap();
        match self.kind {
            0 => Activity::purchase(at, self.amount, Currency::parse("EUR").unwrap())
                .order_ref(self.reference.clone()),
            1 => Activity::interaction(at, InteractionChannel::Email, Direction::Outbound)
                .subject(self.reference.clone()),
            _ => Activity::ticket(at, self.reference.clone(), TicketStatus::Open),
        }
    }
}

/// An endless, deterministic stream of activities over `n` customers (ids 1..=n).
struct Acts {
    rng: SplitMix64,
    n: u64,
    made: u64,
}

impl Acts {
    fn new(seed: u64, n: usize) -> Acts {
        Acts {
            rng: SplitMix64::new(seed),
            n: n as u64,
            made: 0,
        }
    }

    fn take(&mut self, count: usize) -> Vec<Act> {
        (0..count)
            .map(|_| {
                self.made += 1;
                let r = self.rng.below(10);
                Act {
                    customer: 1 + self.rng.below(self.n),
                    at: T0 + self.rng.below(SPAN) as i64,
                    kind: match r {
                        0..=6 => 0,
                        7 | 8 => 1,
                        _ => 2,
                    },
                    amount: 100 + self.rng.below(20_000) as i64,
                    reference: format!("R-{}", self.made),
                }
            })
            .collect()
    }
}

/// The three engines behind one interface, so each workload is written once.
trait Engine {
    fn append(&mut self, acts: &[Act], durable_last: bool);
    fn newest(&self, customer: u64, limit: usize) -> usize;
    fn feed(&self, max: usize) -> usize;
}

// ---------------------------------------------------------------------------------------------
// customerdb

mod cdb {
    use super::{Act, CACHE_BYTES, Engine, PER_TXN};
    use customerdb::{ActivityQuery, CustomerId, Durability, Read, Store};

    pub(super) struct Cdb {
        pub(super) store: Store,
        /// The feed's first `customers` changes are the customers' inserts, which the
        /// baselines do not log: the feed workload starts after them.
        customers: u64,
    }

    pub(super) fn create(dir: &std::path::Path, n: usize) -> Cdb {
        let store = Store::builder()
            .cache_size(CACHE_BYTES)
            .durability(Durability::None)
            .create(dir.join("c.redb"))
            .unwrap();
        let people = customerdb::sample::generate(super::SEED, n);
        for chunk in people.chunks(10_000) {
            let mut tx = store.begin_write().unwrap();
            for p in chunk {
                tx.insert(p.to_builder()).unwrap();
            }
            tx.commit().unwrap();
        }
        Cdb {
            store,
            customers: n as u64,
        }
    }

    impl Engine for Cdb {
        fn append(&mut self, acts: &[Act], durable_last: bool) {
            let chunks = acts.len().div_ceil(PER_TXN);
            for (i, chunk) in acts.chunks(PER_TXN).enumerate() {
                let mut tx = self.store.begin_write().unwrap();
                if durable_last && i + 1 == chunks {
                    tx.set_durability(Durability::Immediate);
                }
                for a in chunk {
                    tx.add_activity(CustomerId::from_u64(a.customer), a.to_activity())
                        .unwrap();
                }
                tx.commit().unwrap();
            }
        }

        fn newest(&self, customer: u64, limit: usize) -> usize {
            let tx = self.store.begin_read().unwrap();
            tx.timeline(
                CustomerId::from_u64(customer),
                &ActivityQuery::new().limit(limit),
            )
            .unwrap()
            .len()
        }

        fn feed(&self, max: usize) -> usize {
            // The streaming feed: a consumer handles each change as it comes, resuming from the
            // last seq it handled, as the baselines' pages of FEED_PAGE do.
            let tx = self.store.begin_read().unwrap();
            let mut read = 0;
            for change in tx.feed(self.customers).unwrap().take(max) {
                std::hint::black_box(change.unwrap());
                read += 1;
            }
            read
        }
    }
}

// ---------------------------------------------------------------------------------------------
// raw redb

mod raw {
    use super::{Act, CACHE_BYTES, Engine, FEED_PAGE, PER_TXN};
    use redb::{
        Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableTable,
        TableDefinition,
    };
    use serde::{Deserialize, Serialize};

    const ACTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("acts");
    const BY_TIME: TableDefinition<&[u8], u64> = TableDefinition::new("by_time");
    const METRICS: TableDefinition<u64, &[u8]> = TableDefinition::new("metrics");
    const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
    const CUSTOMER_CHANGES: TableDefinition<&[u8], ()> = TableDefinition::new("customer_changes");
    const IDX: [MultimapTableDefinition<i64, u64>; 4] = [
        MultimapTableDefinition::new("orders"),
        MultimapTableDefinition::new("spend"),
        MultimapTableDefinition::new("last_purchase"),
        MultimapTableDefinition::new("last_interaction"),
    ];

    #[derive(Default, Serialize, Deserialize)]
    struct Metrics {
        orders: i64,
        spend: i64,
        last_purchase: i64,
        last_interaction: i64,
    }

    impl Metrics {
        fn keys(&self) -> [i64; 4] {
            [
                self.orders,
                self.spend,
                self.last_purchase,
                self.last_interaction,
            ]
        }
    }

    /// What customerdb's history entry holds: time, actor, customer, operation, and the
    /// changed field with its before and after values as JSON text.
    #[derive(Serialize, Deserialize)]
    struct Change {
        at: i64,
        actor: Option<String>,
        customer: u64,
        op: u8,
        fields: Vec<(String, Option<String>, Option<String>)>,
    }

    pub(super) struct Raw {
        db: Database,
        next_act: u64,
        next_seq: u64,
    }

    pub(super) fn create(dir: &std::path::Path) -> Raw {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("r.redb"))
            .unwrap();
        Raw {
            db,
            next_act: 1,
            next_seq: 1,
        }
    }

    fn act_key(a: &Act, id: u64) -> [u8; 24] {
        let mut k = [0u8; 24];
        k[..8].copy_from_slice(&a.customer.to_be_bytes());
        k[8..16].copy_from_slice(&(a.at.cast_unsigned() ^ (1 << 63)).to_be_bytes());
        k[16..].copy_from_slice(&id.to_be_bytes());
        k
    }

    impl Engine for Raw {
        fn append(&mut self, acts: &[Act], durable_last: bool) {
            let chunks = acts.len().div_ceil(PER_TXN);
            for (i, chunk) in acts.chunks(PER_TXN).enumerate() {
                let mut txn = self.db.begin_write().unwrap();
                let last = durable_last && i + 1 == chunks;
                txn.set_durability(if last {
                    Durability::Immediate
                } else {
                    Durability::None
                })
                .unwrap();
                {
                    let mut t_acts = txn.open_table(ACTS).unwrap();
                    let mut t_time = txn.open_table(BY_TIME).unwrap();
                    let mut t_metrics = txn.open_table(METRICS).unwrap();
                    let mut t_changes = txn.open_table(CHANGES).unwrap();
                    let mut t_cc = txn.open_table(CUSTOMER_CHANGES).unwrap();
                    let mut idx: Vec<_> = IDX
                        .iter()
                        .map(|d| txn.open_multimap_table(*d).unwrap())
                        .collect();
                    for a in chunk {
                        let id = self.next_act;
                        self.next_act += 1;
                        let key = act_key(a, id);
                        t_acts
                            .insert(key.as_slice(), postcard::to_allocvec(a).unwrap().as_slice())
                            .unwrap();
                        t_time.insert(&key[8..], a.customer).unwrap();
                        let old: Option<Metrics> = t_metrics
                            .get(a.customer)
                            .unwrap()
                            .map(|v| postcard::from_bytes(v.value()).unwrap());
                        let mut m = old.unwrap_or_default();
                        let before = m.keys();
                        match a.kind {
                            0 => {
                                m.orders += 1;
                                m.spend += a.amount;
                                m.last_purchase = m.last_purchase.max(a.at);
                            }
                            1 => m.last_interaction = m.last_interaction.max(a.at),
                            _ => {}
                        }
                        for ((t, b), k) in idx.iter_mut().zip(before).zip(m.keys()) {
                            if b != k {
                                t.remove(b, a.customer).unwrap();
                            }
                            t.insert(k, a.customer).unwrap();
                        }
                        t_metrics
                            .insert(a.customer, postcard::to_allocvec(&m).unwrap().as_slice())
                            .unwrap();
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let change = Change {
                            at: a.at,
                            actor: None,
                            customer: a.customer,
                            op: 1,
                            fields: vec![("activity".to_owned(), None, Some(a.json()))],
                        };
                        t_changes
                            .insert(seq, postcard::to_allocvec(&change).unwrap().as_slice())
                            .unwrap();
                        let mut ck = a.customer.to_be_bytes().to_vec();
                        ck.extend_from_slice(&seq.to_be_bytes());
                        t_cc.insert(ck.as_slice(), ()).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
        }

        fn newest(&self, customer: u64, limit: usize) -> usize {
            let txn = self.db.begin_read().unwrap();
            let t = txn.open_table(ACTS).unwrap();
            let start = customer.to_be_bytes();
            let end = (customer + 1).to_be_bytes();
            t.range::<&[u8]>(start.as_slice()..end.as_slice())
                .unwrap()
                .rev()
                .take(limit)
                .map(|item| {
                    let (_, v) = item.unwrap();
                    let a: Act = postcard::from_bytes(v.value()).unwrap();
                    std::hint::black_box(a);
                })
                .count()
        }

        fn feed(&self, max: usize) -> usize {
            let txn = self.db.begin_read().unwrap();
            let t = txn.open_table(CHANGES).unwrap();
            let (mut since, mut read) = (0u64, 0usize);
            while read < max {
                let before = read;
                for item in t
                    .range(since + 1..)
                    .unwrap()
                    .take(FEED_PAGE.min(max - read))
                {
                    let (k, v) = item.unwrap();
                    let c: Change = postcard::from_bytes(v.value()).unwrap();
                    std::hint::black_box(c);
                    since = k.value();
                    read += 1;
                }
                if read == before {
                    break;
                }
            }
            read
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

mod sql {
    use super::{Act, Engine, FEED_PAGE, PER_TXN};
    use rusqlite::{Connection, params};

    pub(super) struct Sql {
        conn: Connection,
    }

    pub(super) fn create(dir: &std::path::Path, n: usize) -> Sql {
        let conn = Connection::open(dir.join("s.sqlite")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             PRAGMA cache_size=-262144;
             CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             CREATE TABLE activities (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                 at INTEGER NOT NULL, kind INTEGER NOT NULL, amount INTEGER,
                 reference TEXT, payload TEXT NOT NULL);
             CREATE INDEX activities_customer_at ON activities (customer_id, at);
             CREATE INDEX activities_at ON activities (at);
             CREATE TABLE metrics (customer_id INTEGER PRIMARY KEY, orders INTEGER NOT NULL,
                 spend INTEGER NOT NULL, last_purchase INTEGER, last_interaction INTEGER);
             CREATE INDEX metrics_orders ON metrics (orders);
             CREATE INDEX metrics_spend ON metrics (spend);
             CREATE INDEX metrics_last_purchase ON metrics (last_purchase);
             CREATE INDEX metrics_last_interaction ON metrics (last_interaction);
             CREATE TABLE changes (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT,
                 customer_id INTEGER NOT NULL, op INTEGER NOT NULL, field TEXT NOT NULL,
                 before TEXT, after TEXT);
             CREATE INDEX changes_customer ON changes (customer_id, seq);",
        )
        .unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut ins = tx
                .prepare("INSERT INTO customers (id, name) VALUES (?1, ?2)")
                .unwrap();
            for id in 1..=n as i64 {
                ins.execute(params![id, format!("Customer {id}")]).unwrap();
            }
        }
        tx.commit().unwrap();
        Sql { conn }
    }

    impl Engine for Sql {
        fn append(&mut self, acts: &[Act], _durable_last: bool) {
            for chunk in acts.chunks(PER_TXN) {
                let tx = self.conn.unchecked_transaction().unwrap();
                {
                    let mut ins = tx
                        .prepare_cached(
                            "INSERT INTO activities (customer_id, at, kind, amount, reference,
                             payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )
                        .unwrap();
                    let mut purchase = tx
                        .prepare_cached(
                            "INSERT INTO metrics (customer_id, orders, spend, last_purchase)
                             VALUES (?1, 1, ?2, ?3)
                             ON CONFLICT (customer_id) DO UPDATE SET orders = orders + 1,
                             spend = spend + excluded.spend,
                             last_purchase = max(coalesce(last_purchase, 0), excluded.last_purchase)",
                        )
                        .unwrap();
                    let mut contact = tx
                        .prepare_cached(
                            "INSERT INTO metrics (customer_id, orders, spend, last_interaction)
                             VALUES (?1, 0, 0, ?2)
                             ON CONFLICT (customer_id) DO UPDATE SET last_interaction =
                             max(coalesce(last_interaction, 0), excluded.last_interaction)",
                        )
                        .unwrap();
                    let mut other = tx
                        .prepare_cached(
                            "INSERT INTO metrics (customer_id, orders, spend) VALUES (?1, 0, 0)
                             ON CONFLICT (customer_id) DO NOTHING",
                        )
                        .unwrap();
                    let mut change = tx
                        .prepare_cached(
                            "INSERT INTO changes (at, customer_id, op, field, after)
                             VALUES (?1, ?2, 1, 'activity', ?3)",
                        )
                        .unwrap();
                    for a in chunk {
                        let json = a.json();
                        let c = a.customer as i64;
                        ins.execute(params![c, a.at, a.kind, a.amount, a.reference, json])
                            .unwrap();
                        match a.kind {
                            0 => purchase.execute(params![c, a.amount, a.at]).unwrap(),
                            1 => contact.execute(params![c, a.at]).unwrap(),
                            _ => other.execute(params![c]).unwrap(),
                        };
                        change.execute(params![a.at, c, json]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
        }

        fn newest(&self, customer: u64, limit: usize) -> usize {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT id, at, kind, amount, reference, payload FROM activities
                     WHERE customer_id = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
                )
                .unwrap();
            let rows = st
                .query_map(params![customer as i64, limit as i64], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .unwrap();
            let mut count = 0;
            for r in rows {
                std::hint::black_box(r.unwrap());
                count += 1;
            }
            count
        }

        fn feed(&self, max: usize) -> usize {
            let mut st = self
                .conn
                .prepare_cached(
                    "SELECT seq, at, actor, customer_id, op, field, before, after FROM changes
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .unwrap();
            let (mut since, mut read) = (0i64, 0usize);
            while read < max {
                let before = read;
                let mut rows = st
                    .query(params![since, FEED_PAGE.min(max - read) as i64])
                    .unwrap();
                while let Some(r) = rows.next().unwrap() {
                    since = r.get(0).unwrap();
                    let change: (i64, Option<String>, i64, i64, String, Option<String>) = (
                        r.get(1).unwrap(),
                        r.get(2).unwrap(),
                        r.get(3).unwrap(),
                        r.get(4).unwrap(),
                        r.get(5).unwrap(),
                        r.get(6).unwrap(),
                    );
                    let after: Option<String> = r.get(7).unwrap();
                    std::hint::black_box((change, after));
                    read += 1;
                }
                if read == before {
                    break;
                }
            }
            read
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// The loaded engines (N customers, 10 N activities), built once, kept for every workload.
struct Loaded {
    _dirs: Vec<TempDir>,
    engines: Vec<(&'static str, std::cell::RefCell<Box<dyn Engine>>)>,
    stream: std::cell::RefCell<Acts>,
}

fn loaded() -> &'static Loaded {
    thread_local! {
        // Built on first use by the bench thread and kept for the process's life.
        static LOADED: &'static Loaded = Box::leak(Box::new(load()));
    }
    LOADED.with(|l| *l)
}

fn load() -> Loaded {
    let n = n();
    let mut stream = Acts::new(SEED, n);
    let first = stream.take(10 * n);
    let mut dirs = Vec::new();
    let mut engines: Vec<(&'static str, std::cell::RefCell<Box<dyn Engine>>)> = Vec::new();
    for name in ["customerdb", "redb", "sqlite"] {
        let dir = temp_dir();
        let started = Instant::now();
        let mut e: Box<dyn Engine> = match name {
            "customerdb" => Box::new(cdb::create(dir.path(), n)),
            "redb" => Box::new(raw::create(dir.path())),
            _ => Box::new(sql::create(dir.path(), n)),
        };
        e.append(&first, true);
        println!(
            "{name}: loaded {n} customers and {} activities in {:.1?}; files {} MiB",
            first.len(),
            started.elapsed(),
            common::dir_bytes(dir.path()) >> 20
        );
        dirs.push(dir);
        engines.push((name, std::cell::RefCell::new(e)));
    }
    Loaded {
        _dirs: dirs,
        engines,
        stream: std::cell::RefCell::new(stream),
    }
}

fn activity_append(c: &mut Criterion) {
    let l = loaded();
    let mut group = common::configure(c, "activity_append", 20);
    group.throughput(criterion::Throughput::Elements(APPEND_PER_ITER as u64));
    for (name, engine) in &l.engines {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let acts = l.stream.borrow_mut().take(APPEND_PER_ITER);
                    let start = Instant::now();
                    engine.borrow_mut().append(&acts, true);
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

fn timeline_newest50(c: &mut Criterion) {
    let l = loaded();
    let n = n() as u64;
    let mut group = common::configure(c, "timeline_newest50", 20);
    group.throughput(criterion::Throughput::Elements(READS_PER_ITER as u64));
    for (name, engine) in &l.engines {
        let mut rng = SplitMix64::new(SEED ^ 0x50);
        group.bench_function(*name, |b| {
            b.iter(|| {
                let e = engine.borrow();
                let mut got = 0;
                for _ in 0..READS_PER_ITER {
                    got += e.newest(1 + rng.below(n), NEWEST);
                }
                // About ten activities each: most customers have fewer than 50.
                assert!(got >= READS_PER_ITER, "{name} read {got}");
                black_box(got)
            });
        });
    }
    group.finish();
}

fn change_feed(c: &mut Criterion) {
    let l = loaded();
    let mut group = common::configure(c, "change_feed", 20);
    let expected = (10 * n()).min(FEED);
    group.throughput(criterion::Throughput::Elements(expected as u64));
    for (name, engine) in &l.engines {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let read = engine.borrow().feed(expected);
                assert_eq!(read, expected, "{name}");
                black_box(read)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, activity_append, timeline_newest50, change_feed);
criterion_main!(benches);
