//! # What is measured
//!
//! Duplicate detection at scale, issue 5's two proof targets:
//!
//! - `batch_dedup/customerdb`: `Matcher::default().run` over N generated customers with known
//!   duplicates (`sample::Duplicates`: a fifth of the people entered again one to three times
//!   with typos, blanks and swaps): blocking, training without labels (u from 1,000,000
//!   random pairs, m and λ by EM), scoring every candidate and clustering. The records are
//!   standardised into `MatchRecord`s before timing (that is loading, not matching): the
//!   time is matching alone, from records in memory to clusters, without generating or
//!   standardising the customers (at a million, about a minute on two cores) and without a
//!   store. After the timed runs the bench asserts the run's pairwise F1 against the known
//!   answer, and prints it with the candidate count and the process's peak resident memory
//!   (`VmHWM`, never reset: the whole process, so it includes the records, every timed run,
//!   and standardisation's own peak and leftovers such as the phone-number pattern cache;
//!   `examples/dedup_eval.rs --scale` measures matching's peak separately).
//! - `match_on_insert/customerdb`: `Read::duplicates_of` (candidates through the indexes,
//!   mostly the blocking keys in the match-key index, their records decoded, kept if they
//!   share a blocking key, scored and explained with the stored model) for new customers
//!   against a store of N generated customers with a trained model. Half the new customers
//!   are existing ones typed in again (`SampleRecord::retype`), half are new people.
//!   Criterion gives the mean; afterwards every query is timed one by one and p50 / p99 / max
//!   printed, since the target is a tail latency. The bench asserts that most retyped
//!   customers get their original as best match.
//! - `match_on_insert/sqlite_candidates`: the candidate retrieval alone on SQLite (rusqlite,
//!   bundled, WAL) with an index on each key customerdb used to look up (email match key, E.164
//!   phone, family name key, primary Double Metaphone code, the given name as a family name,
//!   birth date), lists over 100 ids (names) or 500 (others) skipped, then each candidate's
//!   key columns read. These are the broad lookups customerdb made before its match-key index;
//!   customerdb now looks up the combined keys, so this is a reference point rather than a
//!   floor under its figure.
//!
//! No raw-redb variant: candidate retrieval on raw redb is the multimap lookups whose cost
//! `benches/store.rs` already measures, and a hand-built matcher over it would only repeat
//! customerdb's own comparison code.
//!
//! N: `CUSTOMERDB_BENCH_N`, else 100,000 (a few minutes: about a minute to load the store).
//! For the targets run `CUSTOMERDB_BENCH_N=1000000 cargo bench --bench dedup` (about 15
//! minutes, most of it loading the store at about 15,000 customers a second). The store is
//! built once per process and shared by both match-on-insert functions.

// "SQLite" is a name, not code: keep it out of backticks.
#![allow(clippy::doc_markdown)]

mod common;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{CACHE_BYTES, configure, temp_dir};
use criterion::{Criterion, criterion_group, criterion_main};
use customerdb::dedup::{MatchRecord, Matcher, eval};
use customerdb::sample::{Duplicates, Generator, SampleRecord, SplitMix64};
use customerdb::{Customer, Durability, Read, Store};
use rusqlite::{Connection, params};

const SEED: u64 = 0xDED0_0001;
/// Seed of the new people among the queries, and of the slips in the retyped ones.
const QUERY_SEED: u64 = 0xDED0_0002;
const QUERIES: usize = 2_000;
/// A lookup returning more ids than this is skipped, as customerdb does (100 for lookups by
/// name, 500 for the others).
const MAX_BLOCK: usize = 500;
const MAX_NAME_BLOCK: usize = 100;
const BATCH: usize = 10_000;

fn n() -> usize {
    common::n(100_000)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Standardises on both cores; refused values are dropped, never the record.
fn standardise<T: Sync>(items: &[T], build: impl Fn(&T) -> Customer + Sync) -> Vec<Customer> {
    let half = items.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(half)
            .map(|c| s.spawn(|| c.iter().map(&build).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn lenient(r: &SampleRecord) -> Customer {
    r.to_builder().build_lenient().0
}

// ---------------------------------------------------------------------------------------------
// Batch

/// The batch data: records made from the `Duplicates` stream, and each one's entity.
fn batch_data(n: usize) -> (Vec<MatchRecord>, Vec<u64>) {
    let started = Instant::now();
    let (mut records, mut truth) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut stream = Duplicates::new(SEED).take(n);
    loop {
        let chunk: Vec<SampleRecord> = stream.by_ref().take(BATCH).collect();
        if chunk.is_empty() {
            break;
        }
        truth.extend(chunk.iter().map(|r| r.entity));
        records.extend(standardise(&chunk, lenient).iter().map(MatchRecord::new));
    }
    println!(
        "batch_dedup: {n} records prepared in {:.1?}",
        started.elapsed()
    );
    (records, truth)
}

fn batch_dedup(c: &mut Criterion) {
    let n = n();
    // Prepared on first use, so that a run filtered to other functions skips it.
    let data = std::cell::OnceCell::new();
    let matcher = Matcher::default();
    let mut group = configure(c, "batch_dedup", 10);
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(n as u64));
    group.bench_function("customerdb", |b| {
        let (records, _) = data.get_or_init(|| batch_data(n));
        b.iter(|| black_box(matcher.run(records).unwrap()));
    });
    group.finish();
    // Nothing ran when a filter left this function out.
    let Some((records, truth)) = data.get() else {
        return;
    };
    // One more run, to check what the timed ones computed (one run in memory at a time).
    let run = matcher.run(records).unwrap();
    let f1 = eval::pairwise(run.clusters.labels(), truth);
    println!(
        "batch_dedup/customerdb: {n} records, {} candidates, {f1}; peak RSS {:.0} MiB; {:?}",
        run.candidates.len(),
        peak_rss_mib(),
        run.timings
    );
    assert_eq!(run.clusters.labels().len(), n);
    assert!(f1.f1() > 0.9, "F1 {}", f1.f1());
}

// ---------------------------------------------------------------------------------------------
// Match on insert

/// The keys customerdb looks candidates up by, precomputed for SQLite.
struct Keys {
    email: Option<String>,
    phone: Option<String>,
    family: Option<String>,
    phonetic: Option<String>,
    given: Option<String>,
    birth: Option<i32>,
}

impl Keys {
    fn of(c: &Customer) -> Keys {
        use chrono::Datelike;
        let name = c.name.as_ref();
        Keys {
            email: c.emails.first().map(|e| e.match_key().to_owned()),
            phone: c.phones.first().map(|p| p.e164().to_owned()),
            family: name.and_then(|n| n.family_key()).map(str::to_owned),
            phonetic: name.and_then(|n| n.family_phonetic().first().cloned()),
            given: name.and_then(|n| n.given_key()).map(str::to_owned),
            birth: c.birth_date.map(|d| d.num_days_from_ce()),
        }
    }
}

struct Loaded {
    store: Store,
    conn: Connection,
    queries: Vec<Customer>,
    query_keys: Vec<Keys>,
    /// For each query, the stored customer (index) it is a retyped copy of.
    originals: Vec<Option<usize>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

const SQLITE_SCHEMA: &str = "
    CREATE TABLE customers (
        id INTEGER PRIMARY KEY, email_key TEXT, phone_e164 TEXT, family_key TEXT,
        family_phonetic TEXT, given_key TEXT, birth_date INTEGER
    );
    CREATE INDEX customers_email ON customers (email_key);
    CREATE INDEX customers_phone ON customers (phone_e164);
    CREATE INDEX customers_family ON customers (family_key);
    CREATE INDEX customers_phonetic ON customers (family_phonetic);
    CREATE INDEX customers_birth_date ON customers (birth_date);
";

/// Builds the store (trained model) and the SQLite table from the same N customers, and the
/// queries. Not timed.
fn load() -> Loaded {
    let n = n();
    let started = Instant::now();
    let (store_dir, sql_dir) = (temp_dir(), temp_dir());
    let store = Store::builder()
        .cache_size(CACHE_BYTES)
        .create(store_dir.path().join("customers.cdb"))
        .unwrap();
    let conn = common::open_sqlite(sql_dir.path());
    conn.execute_batch(SQLITE_SCHEMA).unwrap();

    let mut people = Generator::new(SEED);
    let mut kept: Vec<SampleRecord> = Vec::new();
    let mut rng = SplitMix64::new(QUERY_SEED);
    let mut loaded = 0;
    while loaded < n {
        let chunk: Vec<SampleRecord> = people
            .by_ref()
            .take(BATCH.min(n - loaded))
            .enumerate()
            .map(|(i, customer)| SampleRecord {
                entity: (loaded + i) as u64,
                customer,
                no_birth_date: false,
            })
            .collect();
        let customers = standardise(&chunk, lenient);
        let mut tx = store.begin_write().unwrap();
        tx.set_durability(Durability::None);
        let sql = conn.unchecked_transaction().unwrap();
        {
            let mut insert = sql
                .prepare_cached("INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .unwrap();
            for c in customers {
                let k = Keys::of(&c);
                let id = tx.insert(c).unwrap();
                insert
                    .execute(params![
                        id.as_u64().cast_signed(),
                        k.email,
                        k.phone,
                        k.family,
                        k.phonetic,
                        k.given,
                        k.birth
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        sql.commit().unwrap();
        // Keep a sample of the stored people to retype as queries.
        for r in chunk {
            if kept.len() < QUERIES / 2 {
                kept.push(r);
            } else if rng.below(r.entity + 1) < (QUERIES / 2) as u64 {
                let at = rng.below(kept.len() as u64) as usize;
                kept[at] = r;
            }
        }
        loaded += BATCH.min(n - loaded);
    }
    conn.execute_batch("ANALYZE").unwrap();
    let loaded_in = started.elapsed();
    let mut tx = store.begin_write().unwrap();
    tx.train_duplicate_model(&Matcher::default()).unwrap();
    tx.commit().unwrap();
    println!(
        "match_on_insert: {n} customers loaded in {loaded_in:.1?}, model trained in {:.1?}",
        started.elapsed().saturating_sub(loaded_in)
    );
    assert_eq!(store.begin_read().unwrap().count().unwrap(), n as u64);

    let (queries, originals) = queries(&kept, &mut rng);
    let query_keys = queries.iter().map(Keys::of).collect();
    Loaded {
        store,
        conn,
        queries,
        query_keys,
        originals,
        _dirs: (store_dir, sql_dir),
    }
}

/// The queries: retyped stored customers and new people, alternately, standardised; and for
/// each, the index of the stored customer it is a copy of.
fn queries(kept: &[SampleRecord], rng: &mut SplitMix64) -> (Vec<Customer>, Vec<Option<usize>>) {
    let mut fresh = Generator::new(QUERY_SEED);
    let mut queries = Vec::with_capacity(QUERIES);
    let mut originals = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES {
        if i % 2 == 0 {
            let r = &kept[i / 2 % kept.len()];
            queries.push(r.retype(rng));
            originals.push(usize::try_from(r.entity).ok());
        } else {
            let customer = fresh.next().unwrap();
            queries.push(SampleRecord {
                entity: u64::MAX,
                customer,
                no_birth_date: false,
            });
            originals.push(None);
        }
    }
    (standardise(&queries, lenient), originals)
}

/// SQLite: the candidates' ids through each key's index (lists over `MAX_BLOCK` skipped),
/// then each candidate's key columns. Returns how many candidates there were.
fn sqlite_candidates(conn: &Connection, k: &Keys) -> usize {
    let mut ids = BTreeSet::new();
    let mut by = |column: &str, value: &dyn rusqlite::ToSql, max: usize| {
        let mut stmt = conn
            .prepare_cached(&format!("SELECT id FROM customers WHERE {column} = ?1"))
            .unwrap();
        let found: Vec<i64> = stmt
            .query_map([value], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        if found.len() <= max {
            ids.extend(found);
        }
    };
    if let Some(v) = &k.email {
        by("email_key", v, MAX_BLOCK);
    }
    if let Some(v) = &k.phone {
        by("phone_e164", v, MAX_BLOCK);
    }
    if let Some(v) = &k.family {
        by("family_key", v, MAX_NAME_BLOCK);
    }
    if let Some(v) = &k.phonetic {
        by("family_phonetic", v, MAX_NAME_BLOCK);
    }
    if let Some(v) = &k.given {
        by("family_key", v, MAX_NAME_BLOCK);
    }
    if let Some(v) = &k.birth {
        by("birth_date", v, MAX_BLOCK);
    }
    let mut row = conn
        .prepare_cached(
            "SELECT email_key, phone_e164, family_key, family_phonetic, given_key, birth_date
             FROM customers WHERE id = ?1",
        )
        .unwrap();
    for id in &ids {
        let r: (Option<String>, Option<String>, Option<String>) = row
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        black_box(r);
    }
    ids.len()
}

/// Times every query one by one and prints p50, p99 and max.
fn report_tail(name: &str, mut query: impl FnMut(usize)) {
    let mut times: Vec<Duration> = (0..QUERIES)
        .map(|i| {
            let start = Instant::now();
            query(i);
            start.elapsed()
        })
        .collect();
    times.sort();
    let at = |per_mille: usize| times[(times.len() - 1) * per_mille / 1000];
    println!(
        "match_on_insert/{name}: {QUERIES} queries at N = {}, p50 {:.3?}, p99 {:.3?}, max {:.3?}",
        n(),
        at(500),
        at(990),
        times[times.len() - 1]
    );
}

fn match_on_insert(c: &mut Criterion) {
    let data = load();
    let tx = data.store.begin_read().unwrap();
    // The configuration the label claims: retyped customers find their originals.
    let (mut asked, mut right) = (0, 0);
    for (q, original) in data.queries.iter().zip(&data.originals) {
        if let Some(o) = original {
            asked += 1;
            let best = tx.duplicates_of(q, 0.5).unwrap();
            right += usize::from(best.first().is_some_and(|d| d.id.as_u64() == *o as u64 + 1));
        }
    }
    println!("match_on_insert: {right} of {asked} retyped customers found their original first");
    assert!(right * 10 >= asked * 8, "{right} of {asked}");

    let mut group = configure(c, "match_on_insert", 5);
    group.throughput(criterion::Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("customerdb", |b| {
        b.iter(|| {
            next = (next + 1) % QUERIES;
            black_box(tx.duplicates_of(&data.queries[next], 0.5).unwrap())
        });
    });
    let mut candidates = 0;
    group.bench_function("sqlite_candidates", |b| {
        b.iter(|| {
            next = (next + 1) % QUERIES;
            candidates += black_box(sqlite_candidates(&data.conn, &data.query_keys[next]));
        });
    });
    group.finish();
    assert!(candidates > 0);
    report_tail("customerdb", |i| {
        black_box(tx.duplicates_of(&data.queries[i], 0.5).unwrap());
    });
    report_tail("sqlite_candidates", |i| {
        black_box(sqlite_candidates(&data.conn, &data.query_keys[i]));
    });
}

criterion_group!(benches, batch_dedup, match_on_insert);
criterion_main!(benches);
