//! # What is measured
//!
//! The cost of encryption at rest: the same workloads on a plain store and on an encrypted one
//! (`StoreBuilder::encryption`, one in-memory master key), in the same run, so the two medians
//! of a group compare directly.
//!
//! Data: `customerdb::sample::generate(SEED, N)`, N = 20,000 unless `CUSTOMERDB_BENCH_N` says
//! otherwise. Stores live in a temporary directory under the target directory; caches 256 MiB.
//!
//! Workloads (criterion groups; `plain` and `encrypted` are the functions of each):
//! - `bulk_insert`: N customers into a fresh store in transactions of 10,000, non-durable
//!   commits but the last. Store creation is not timed. Encrypted: a data key drawn and wrapped
//!   per customer, the record and its history entry sealed, 10 index values blinded.
//! - `lookup_email`: 10,000 lookups by email (random customers, about 7,900 distinct) in one
//!   read transaction, each returning the decoded customer. Encrypted: a blind hash, the
//!   customer's data key (from the store's data key cache, which holds the 7,900 after the
//!   first pass; unwrapped on a miss), a record opened. `encrypted-uncached` is the encrypted
//!   store with the cache off (`data_key_cache(0)`): every lookup unwraps the data key.
//! - `batch_dedup`: `find_duplicates` over 2,000 records of `sample::Duplicates` with the
//!   default matcher. Encrypted: every record decrypted once; blocking and scoring in memory as
//!   for a plain store.
//!
//! Each bench asserts what it runs: counts after loading, every lookup found, duplicates found.

mod common;

use std::hint::black_box;

use common::{CACHE_BYTES, configure, temp_dir};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use customerdb::crypt::{Keys, MasterKey};
use customerdb::dedup::{ClusterSettings, Matcher};
use customerdb::sample::{self, Duplicates, SampleCustomer, SplitMix64};
use customerdb::{Durability, Read, Store, StoreBuilder};

const SEED: u64 = 0x00C0_FFEE;
const TXN: usize = 10_000;

/// A configuration compared: its name and its builder.
type Engine = (&'static str, fn() -> StoreBuilder);

/// The two configurations compared.
fn engines() -> [Engine; 2] {
    fn plain() -> StoreBuilder {
        Store::builder()
            .cache_size(CACHE_BYTES)
            .default_region("GB")
    }
    fn encrypted() -> StoreBuilder {
        let key = MasterKey::from_bytes(&[0x5A; 32]).expect("32 bytes");
        plain().encryption(Keys::new(1, key))
    }
    [("plain", plain), ("encrypted", encrypted)]
}

fn load(store: &Store, people: &[SampleCustomer]) {
    for chunk in people.chunks(TXN) {
        let mut tx = store.begin_write().expect("begin");
        tx.set_durability(Durability::None);
        for p in chunk {
            tx.insert(p.to_builder()).expect("insert");
        }
        tx.commit().expect("commit");
    }
    let mut tx = store.begin_write().expect("begin");
    tx.set_durability(Durability::Immediate);
    tx.commit().expect("commit");
}

fn bulk_insert(c: &mut Criterion) {
    let n = common::n(20_000);
    let people = sample::generate(SEED, n);
    let mut group = configure(c, "bulk_insert", 20);
    for (name, builder) in engines() {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = temp_dir();
                    let store = builder().create(dir.path().join("s.redb")).expect("create");
                    (dir, store)
                },
                |(dir, store)| {
                    load(&store, &people);
                    assert_eq!(
                        store.begin_read().expect("read").count().expect("count"),
                        n as u64
                    );
                    (dir, store)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn lookup_email(c: &mut Criterion) {
    fn uncached() -> StoreBuilder {
        (engines()[1].1)().data_key_cache(0)
    }
    let n = common::n(20_000);
    let people = sample::generate(SEED, n);
    let mut group = configure(c, "lookup_email", 10);
    let with_uncached = engines()
        .into_iter()
        .chain([("encrypted-uncached", uncached as fn() -> StoreBuilder)]);
    for (name, builder) in with_uncached {
        let dir = temp_dir();
        let store = builder().create(dir.path().join("s.redb")).expect("create");
        load(&store, &people);
        let mut rng = SplitMix64::new(7);
        let picks: Vec<&str> = (0..10_000)
            .map(|_| people[rng.below(n as u64) as usize].email.as_str())
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                let tx = store.begin_read().expect("read");
                for email in &picks {
                    black_box(tx.find_by_email(email).expect("lookup").expect("found"));
                }
            });
        });
    }
    group.finish();
}

fn batch_dedup(c: &mut Criterion) {
    let records: Vec<_> = Duplicates::new(SEED).take(2_000).collect();
    let mut group = configure(c, "batch_dedup", 20);
    for (name, builder) in engines() {
        let dir = temp_dir();
        let store = builder().create(dir.path().join("s.redb")).expect("create");
        let mut tx = store.begin_write().expect("begin");
        for r in &records {
            // A copy may repeat an email; the unique index refuses it in both stores.
            let _ = tx.insert(r.to_builder().build_lenient().0);
        }
        tx.commit().expect("commit");
        let matcher = Matcher::default();
        let settings = ClusterSettings::default();
        group.bench_function(name, |b| {
            b.iter(|| {
                let tx = store.begin_read().expect("read");
                let clusters = tx.find_duplicates(&matcher, &settings).expect("dedup");
                assert!(!clusters.is_empty());
                black_box(clusters)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bulk_insert, lookup_email, batch_dedup);
criterion_main!(benches);
