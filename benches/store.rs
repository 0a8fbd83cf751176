//! # What is measured
//!
//! The foundation workloads of an embedded customer store, run in the same process on three
//! engines so that one `cargo bench --bench store` gives comparable medians:
//!
//! - **customerdb**: the public API (`Store`, `WriteTxn::insert` / `update`, `Read`), which
//!   validates and normalises every value and maintains its 15 secondary indexes.
//! - **redb**: a competent hand-written use of redb 4 — postcard-encoded records in
//!   `TableDefinition<u64, &[u8]>`, one `MultimapTableDefinition<_, u64>` per non-unique index and
//!   a `TableDefinition<&str, u64>` per unique one (email, external id): the same 15 indexes,
//!   maintained by hand (update removes the old entries and adds the new). Keys are computed
//!   before timing (lower-cased names, E.164 phone, Double Metaphone key) and nothing is
//!   validated, so the gap to customerdb is "our overhead": validation, normalisation, the record
//!   codec and the index layer.
//! - **sqlite**: rusqlite with bundled SQLite, WAL, prepared (cached) statements, a `customers`
//!   table with the same columns and keys, the same indexes (UNIQUE on the email key and on
//!   `(ext_system, ext_id)`) and tags in a `customer_tags (customer_id, tag)` table indexed on tag.
//!   Keys are precomputed as for redb. This is what a user would pick instead.
//!
//! Data: `customerdb::sample::generate(SEED, N)`, N = 100,000 unless `CUSTOMERDB_BENCH_N` says
//! otherwise (e.g. `CUSTOMERDB_BENCH_N=10000` for a quick run). Every store lives in a temporary
//! directory under the target directory (a real disk, never tmpfs). Caches: 256 MiB for all three.
//!
//! Workloads (criterion groups; each engine is one function of the group):
//! - `bulk_insert`: N customers into a fresh store in transactions of 10,000. Store creation and
//!   removal are not timed. Commits are non-durable (redb/customerdb `Durability::None`, SQLite
//!   `synchronous=NORMAL`) except the last, which is durable for redb and customerdb.
//! - `lookup_email`: 100,000 random lookups by email in one read transaction on a store loaded with
//!   N customers, each returning the decoded customer (SQLite: the row and its tags).
//! - `update`: updates of random customers, 100 per transaction, each moving index entries:
//!   street, locality, postcode and one tag change, and the phone for every fourth. One iteration
//!   is 10,000 updates (100 transactions, the last durable, the others as in `bulk_insert`);
//!   iterations walk through a fixed sequence of 100,000 random picks, so a run covers at least
//!   100,000 updates. Successive updates of a customer alternate between its original and moved
//!   data, so every update moves entries. `lookup_email` and `update` share one loaded store per
//!   engine; loading is not timed.
//! - `durable_commit`: one customer per transaction, each commit durable (customerdb and redb
//!   `Durability::Immediate`; SQLite `synchronous=FULL`). Criterion gives the median; afterwards
//!   500 more commits per engine are timed one by one and p50 / p99 / max printed to stdout,
//!   since criterion cannot report tail latency.
//!
//! Each bench asserts that it runs what its label says: counts after loading, every lookup found,
//! `PRAGMA journal_mode` = wal and the `synchronous` level in force for the workload.

// "SQLite" is a name, not code: keep it out of backticks.
#![allow(clippy::doc_markdown)]

mod common;

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{CACHE_BYTES, Group, configure, temp_dir};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use customerdb::sample::{self, Generator, SampleCustomer};

const SEED: u64 = 0x00C0_FFEE;
/// Seed of the customers that `update` moves people to.
const MOVE_SEED: u64 = 0x0000_BEEF;
/// Seed of the customers inserted by `durable_commit`, disjoint from the loaded ones.
const DURABLE_SEED: u64 = 0x0000_D00D;
const BATCH: usize = 10_000;
const LOOKUPS: usize = 100_000;
const UPDATES: usize = 100_000;
/// Updates per criterion iteration; successive iterations walk through the `UPDATES` picks.
const UPDATES_PER_ITER: usize = 10_000;
const UPDATES_PER_TXN: usize = 100;
const DURABLE_TIMED: usize = 500;
fn n() -> usize {
    common::n(100_000)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

// ---------------------------------------------------------------------------------------------
// Data

/// Everything the benches need, generated once (not timed).
struct Data {
    customers: Vec<SampleCustomer>,
    /// `moved[i]`: customer `i` with another locality, postcode, one tag and sometimes phone.
    moved: Vec<SampleCustomer>,
    /// Precomputed rows for the baselines, in the same order.
    rows: Vec<Row>,
    moved_rows: Vec<Row>,
    /// Indexes into `customers` of the lookups.
    lookups: Vec<usize>,
    /// Indexes into `customers` of the updates.
    updates: Vec<usize>,
}

fn data() -> &'static Data {
    static DATA: std::sync::OnceLock<Data> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let n = n();
        let started = Instant::now();
        let customers = sample::generate(SEED, n);
        let moved = moved_customers(&customers);
        let rows = customers.iter().map(Row::prepare).collect();
        let moved_rows = moved.iter().map(Row::prepare).collect();
        let mut rng = sample::SplitMix64::new(SEED);
        let mut pick = || rng.below(n as u64) as usize;
        let lookups = (0..LOOKUPS).map(|_| pick()).collect();
        let updates = (0..UPDATES).map(|_| pick()).collect();
        println!("prepared {n} customers in {:.1?}", started.elapsed());
        Data {
            customers,
            moved,
            rows,
            moved_rows,
            lookups,
            updates,
        }
    })
}

/// Each customer moved to the address of a customer of the same country from another stream,
/// with its first tag replaced and, for every fourth, that customer's phone.
fn moved_customers(customers: &[SampleCustomer]) -> Vec<SampleCustomer> {
    const NEW_TAGS: [&str; 5] = ["moved", "vip", "newsletter", "churn-risk", "b2b"];
    let mut donors = Generator::new(MOVE_SEED);
    let mut pool: Vec<SampleCustomer> = Vec::new();
    customers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = match pool.iter().position(|d| d.country == c.country) {
                Some(at) => at,
                None => loop {
                    let d = donors.next().unwrap();
                    pool.push(d);
                    if pool.last().unwrap().country == c.country {
                        break pool.len() - 1;
                    }
                },
            };
            let donor = pool.swap_remove(at);
            let mut m = c.clone();
            m.street = donor.street;
            m.locality = donor.locality;
            m.postcode = donor.postcode;
            let tag = NEW_TAGS
                .iter()
                .find(|t| !c.tags.iter().any(|have| have == *t))
                .unwrap();
            if m.tags.is_empty() {
                m.tags.push((*tag).to_string());
            } else {
                m.tags[0] = (*tag).to_string();
            }
            if i % 4 == 0 {
                m.phone = donor.phone;
                m.phone_country = donor.phone_country;
            }
            m
        })
        .collect()
}

/// The baselines' record: the same fields, plus the index keys computed up front.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    given_name: String,
    family_name: String,
    email: String,
    phone: String,
    phone_country: String,
    street: String,
    locality: String,
    postcode: String,
    country: String,
    /// Days from the common era.
    birth_date: i32,
    tags: Vec<String>,
    stage: String,
    owner: String,
    source: String,
    ext_system: String,
    ext_id: String,
    organization: Option<String>,
    job_title: Option<String>,
    created_at: i64,
    updated_at: i64,
    // Index keys.
    email_key: String,
    ext_key: String,
    phone_e164: String,
    family_key: String,
    family_phonetic: String,
    given_key: String,
    postcode_key: String,
    locality_key: String,
}

impl Row {
    fn prepare(c: &SampleCustomer) -> Row {
        use chrono::Datelike;
        use rphonetic::Encoder;
        use unicode_normalization::UnicodeNormalization;
        let region = c.phone_country.parse().unwrap();
        let phone = phonenumber::parse(Some(region), &c.phone).unwrap();
        Row {
            given_name: c.given_name.clone(),
            family_name: c.family_name.clone(),
            email: c.email.clone(),
            phone: c.phone.clone(),
            phone_country: c.phone_country.clone(),
            street: c.street.clone(),
            locality: c.locality.clone(),
            postcode: c.postcode.clone(),
            country: c.country.clone(),
            birth_date: c.birth_date.num_days_from_ce(),
            tags: c.tags.clone(),
            stage: c.stage.to_string(),
            owner: c.owner.clone(),
            source: c.source.clone(),
            ext_system: c.external_id.0.clone(),
            ext_id: c.external_id.1.clone(),
            organization: c.organization.clone(),
            job_title: c.job_title.clone(),
            created_at: 0,
            updated_at: 0,
            email_key: c.email.to_lowercase(),
            ext_key: format!("{}\u{0}{}", c.external_id.0, c.external_id.1),
            phone_e164: phone.format().mode(phonenumber::Mode::E164).to_string(),
            family_key: c.family_name.to_lowercase(),
            // rphonetic 4.0.0 panics on non-ASCII input ("Jiménez"): fold diacritics first.
            family_phonetic: rphonetic::DoubleMetaphone::default().encode(
                &c.family_name
                    .nfd()
                    .filter(char::is_ascii)
                    .collect::<String>(),
            ),
            given_key: c.given_name.to_lowercase(),
            postcode_key: c.postcode.replace(' ', "").to_uppercase(),
            locality_key: c.locality.to_lowercase(),
        }
    }

    /// The keys of the nine non-unique string indexes, in `raw::STR_INDEXES` order.
    fn str_keys(&self) -> [&str; 9] {
        [
            &self.phone_e164,
            &self.family_key,
            &self.family_phonetic,
            &self.given_key,
            &self.postcode_key,
            &self.locality_key,
            &self.country,
            &self.stage,
            &self.owner,
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// customerdb

mod cdb {
    use super::{BATCH, CACHE_BYTES, Path, SampleCustomer, UPDATES_PER_TXN};
    use customerdb::{CustomerId, Durability, Read, Store};

    pub fn create(path: &Path) -> Store {
        Store::builder()
            .cache_size(CACHE_BYTES)
            .durability(Durability::Immediate)
            .create(path.join("customers.cdb"))
            .unwrap()
    }

    /// Inserts in batches with `insert_many` (standardising on every core); every commit but
    /// the last is non-durable.
    pub fn load(store: &Store, customers: &[SampleCustomer]) -> Vec<CustomerId> {
        let mut ids = Vec::with_capacity(customers.len());
        let batches = customers.len().div_ceil(BATCH);
        for (i, chunk) in customers.chunks(BATCH).enumerate() {
            let mut tx = store.begin_write().unwrap();
            if i + 1 < batches {
                tx.set_durability(Durability::None);
            }
            ids.extend(
                tx.insert_many(chunk.iter().map(SampleCustomer::to_builder))
                    .unwrap(),
            );
            tx.commit().unwrap();
        }
        ids
    }

    pub fn count(store: &Store) -> u64 {
        store.begin_read().unwrap().count().unwrap()
    }

    /// Returns how many lookups found their customer.
    pub fn lookup(store: &Store, customers: &[SampleCustomer], picks: &[usize]) -> usize {
        let rtx = store.begin_read().unwrap();
        let mut found = 0;
        for &i in picks {
            let record = rtx.find_by_email(&customers[i].email).unwrap();
            found += usize::from(record.is_some());
            std::hint::black_box(record);
        }
        found
    }

    /// `variant(i)` gives the data customer `i` moves to.
    pub fn update<'a>(
        store: &Store,
        ids: &[CustomerId],
        picks: &[usize],
        mut variant: impl FnMut(usize) -> &'a SampleCustomer,
    ) {
        let txns = picks.len().div_ceil(UPDATES_PER_TXN);
        for (t, chunk) in picks.chunks(UPDATES_PER_TXN).enumerate() {
            let mut tx = store.begin_write().unwrap();
            if t + 1 < txns {
                tx.set_durability(Durability::None);
            }
            for &i in chunk {
                tx.update(ids[i], variant(i).to_builder()).unwrap();
            }
            tx.commit().unwrap();
        }
    }

    pub fn insert_durable(store: &Store, customer: &SampleCustomer) {
        let mut tx = store.begin_write().unwrap();
        tx.set_durability(Durability::Immediate);
        tx.insert(customer.to_builder()).unwrap();
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// raw redb

mod raw {
    use super::{BATCH, CACHE_BYTES, Path, Row, UPDATES_PER_TXN, now_micros};
    use redb::{
        Database, Durability, MultimapTable, MultimapTableDefinition, ReadableDatabase,
        ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
    };

    const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("customers");
    const EMAIL: TableDefinition<&str, u64> = TableDefinition::new("email");
    const EXTERNAL_ID: TableDefinition<&str, u64> = TableDefinition::new("external_id");
    /// In `Row::str_keys` order.
    const STR_INDEXES: [MultimapTableDefinition<&str, u64>; 9] = [
        MultimapTableDefinition::new("phone"),
        MultimapTableDefinition::new("family"),
        MultimapTableDefinition::new("family_phonetic"),
        MultimapTableDefinition::new("given"),
        MultimapTableDefinition::new("postcode"),
        MultimapTableDefinition::new("locality"),
        MultimapTableDefinition::new("country"),
        MultimapTableDefinition::new("stage"),
        MultimapTableDefinition::new("owner"),
    ];
    const TAG: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("tag");
    const BIRTH_DATE: MultimapTableDefinition<i32, u64> =
        MultimapTableDefinition::new("birth_date");
    const CREATED_AT: MultimapTableDefinition<i64, u64> =
        MultimapTableDefinition::new("created_at");
    const UPDATED_AT: MultimapTableDefinition<i64, u64> =
        MultimapTableDefinition::new("updated_at");

    pub fn create(path: &Path) -> Database {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path.join("raw.redb"))
            .unwrap()
    }

    /// The tables of one write transaction.
    struct Tables<'t> {
        /// The id the next insert takes, read once when the tables are opened.
        next_id: u64,
        customers: Table<'t, u64, &'static [u8]>,
        email: Table<'t, &'static str, u64>,
        external_id: Table<'t, &'static str, u64>,
        str_indexes: Vec<MultimapTable<'t, &'static str, u64>>,
        tag: MultimapTable<'t, &'static str, u64>,
        birth_date: MultimapTable<'t, i32, u64>,
        created_at: MultimapTable<'t, i64, u64>,
        updated_at: MultimapTable<'t, i64, u64>,
    }

    impl<'t> Tables<'t> {
        fn open(tx: &'t WriteTransaction) -> Self {
            let customers = tx.open_table(CUSTOMERS).unwrap();
            Tables {
                next_id: customers.last().unwrap().map_or(1, |(k, _)| k.value() + 1),
                customers,
                email: tx.open_table(EMAIL).unwrap(),
                external_id: tx.open_table(EXTERNAL_ID).unwrap(),
                str_indexes: STR_INDEXES
                    .iter()
                    .map(|d| tx.open_multimap_table(*d).unwrap())
                    .collect(),
                tag: tx.open_multimap_table(TAG).unwrap(),
                birth_date: tx.open_multimap_table(BIRTH_DATE).unwrap(),
                created_at: tx.open_multimap_table(CREATED_AT).unwrap(),
                updated_at: tx.open_multimap_table(UPDATED_AT).unwrap(),
            }
        }

        fn add_entries(&mut self, id: u64, row: &Row) {
            assert!(
                self.email
                    .insert(row.email_key.as_str(), id)
                    .unwrap()
                    .is_none(),
                "duplicate email"
            );
            assert!(
                self.external_id
                    .insert(row.ext_key.as_str(), id)
                    .unwrap()
                    .is_none(),
                "duplicate id"
            );
            for (table, key) in self.str_indexes.iter_mut().zip(row.str_keys()) {
                table.insert(key, id).unwrap();
            }
            for tag in &row.tags {
                self.tag.insert(tag.as_str(), id).unwrap();
            }
            self.birth_date.insert(row.birth_date, id).unwrap();
            self.created_at.insert(row.created_at, id).unwrap();
            self.updated_at.insert(row.updated_at, id).unwrap();
        }

        fn remove_entries(&mut self, id: u64, row: &Row) {
            self.email.remove(row.email_key.as_str()).unwrap();
            self.external_id.remove(row.ext_key.as_str()).unwrap();
            for (table, key) in self.str_indexes.iter_mut().zip(row.str_keys()) {
                table.remove(key, id).unwrap();
            }
            for tag in &row.tags {
                self.tag.remove(tag.as_str(), id).unwrap();
            }
            self.birth_date.remove(row.birth_date, id).unwrap();
            self.created_at.remove(row.created_at, id).unwrap();
            self.updated_at.remove(row.updated_at, id).unwrap();
        }

        fn insert(&mut self, row: &Row) -> u64 {
            let id = self.next_id;
            self.next_id += 1;
            let mut row = row.clone();
            row.created_at = now_micros();
            row.updated_at = row.created_at;
            self.customers
                .insert(id, postcard::to_allocvec(&row).unwrap().as_slice())
                .unwrap();
            self.add_entries(id, &row);
            id
        }

        /// Replaces the record's data and moves its index entries.
        fn update(&mut self, id: u64, new: &Row) {
            let old: Row =
                postcard::from_bytes(self.customers.get(id).unwrap().unwrap().value()).unwrap();
            self.remove_entries(id, &old);
            let mut row = new.clone();
            row.created_at = old.created_at;
            row.updated_at = now_micros();
            self.customers
                .insert(id, postcard::to_allocvec(&row).unwrap().as_slice())
                .unwrap();
            self.add_entries(id, &row);
        }
    }

    pub fn load(db: &Database, rows: &[Row]) -> Vec<u64> {
        let mut ids = Vec::with_capacity(rows.len());
        let batches = rows.len().div_ceil(BATCH);
        for (i, chunk) in rows.chunks(BATCH).enumerate() {
            let mut tx = db.begin_write().unwrap();
            if i + 1 < batches {
                tx.set_durability(Durability::None).unwrap();
            }
            {
                let mut t = Tables::open(&tx);
                for row in chunk {
                    ids.push(t.insert(row));
                }
            }
            tx.commit().unwrap();
        }
        ids
    }

    pub fn count(db: &Database) -> u64 {
        let rtx = db.begin_read().unwrap();
        let customers = rtx.open_table(CUSTOMERS).unwrap().len().unwrap();
        let emails = rtx.open_table(EMAIL).unwrap().len().unwrap();
        assert_eq!(customers, emails, "every customer has one email entry");
        customers
    }

    pub fn lookup(db: &Database, rows: &[Row], picks: &[usize]) -> usize {
        let rtx = db.begin_read().unwrap();
        let email = rtx.open_table(EMAIL).unwrap();
        let customers = rtx.open_table(CUSTOMERS).unwrap();
        let mut found = 0;
        for &i in picks {
            if let Some(id) = email.get(rows[i].email_key.as_str()).unwrap() {
                let bytes = customers.get(id.value()).unwrap().unwrap();
                let row: Row = postcard::from_bytes(bytes.value()).unwrap();
                std::hint::black_box(row);
                found += 1;
            }
        }
        found
    }

    pub fn update<'a>(
        db: &Database,
        ids: &[u64],
        picks: &[usize],
        mut variant: impl FnMut(usize) -> &'a Row,
    ) {
        let txns = picks.len().div_ceil(UPDATES_PER_TXN);
        for (t, chunk) in picks.chunks(UPDATES_PER_TXN).enumerate() {
            let mut tx = db.begin_write().unwrap();
            if t + 1 < txns {
                tx.set_durability(Durability::None).unwrap();
            }
            {
                let mut tables = Tables::open(&tx);
                for &i in chunk {
                    tables.update(ids[i], variant(i));
                }
            }
            tx.commit().unwrap();
        }
    }

    pub fn insert_durable(db: &Database, row: &Row) {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        Tables::open(&tx).insert(row);
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

mod sql {
    use super::{BATCH, CACHE_BYTES, Path, Row, UPDATES_PER_TXN, now_micros};
    use rusqlite::{Connection, OptionalExtension, ToSql, params};

    const SCHEMA: &str = "
        CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            given_name TEXT NOT NULL, family_name TEXT NOT NULL, email TEXT NOT NULL,
            phone TEXT NOT NULL, phone_country TEXT NOT NULL, street TEXT NOT NULL,
            locality TEXT NOT NULL, postcode TEXT NOT NULL, country TEXT NOT NULL,
            birth_date INTEGER NOT NULL, stage TEXT NOT NULL, owner TEXT NOT NULL,
            source TEXT NOT NULL, ext_system TEXT NOT NULL, ext_id TEXT NOT NULL,
            organization TEXT, job_title TEXT,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            email_key TEXT NOT NULL, phone_e164 TEXT NOT NULL, family_key TEXT NOT NULL,
            family_phonetic TEXT NOT NULL, given_key TEXT NOT NULL, postcode_key TEXT NOT NULL,
            locality_key TEXT NOT NULL
        );
        CREATE TABLE customer_tags (
            customer_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (customer_id, tag)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX customers_email ON customers (email_key);
        CREATE UNIQUE INDEX customers_external_id ON customers (ext_system, ext_id);
        CREATE INDEX customers_phone ON customers (phone_e164);
        CREATE INDEX customers_family ON customers (family_key);
        CREATE INDEX customers_family_phonetic ON customers (family_phonetic);
        CREATE INDEX customers_given ON customers (given_key);
        CREATE INDEX customers_postcode ON customers (postcode_key);
        CREATE INDEX customers_locality ON customers (locality_key);
        CREATE INDEX customers_country ON customers (country);
        CREATE INDEX customers_stage ON customers (stage);
        CREATE INDEX customers_owner ON customers (owner);
        CREATE INDEX customers_birth_date ON customers (birth_date);
        CREATE INDEX customers_created_at ON customers (created_at);
        CREATE INDEX customers_updated_at ON customers (updated_at);
        CREATE INDEX customer_tags_tag ON customer_tags (tag);
    ";

    const INSERT: &str =
        "INSERT INTO customers (given_name, family_name, email, phone, phone_country,
        street, locality, postcode, country, birth_date, stage, owner, source, ext_system, ext_id,
        organization, job_title, created_at, updated_at, email_key, phone_e164, family_key,
        family_phonetic, given_key, postcode_key, locality_key)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
        ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)";
    const UPDATE: &str = "UPDATE customers SET given_name = ?1, family_name = ?2, email = ?3,
        phone = ?4, phone_country = ?5, street = ?6, locality = ?7, postcode = ?8, country = ?9,
        birth_date = ?10, stage = ?11, owner = ?12, source = ?13, ext_system = ?14, ext_id = ?15,
        organization = ?16, job_title = ?17, updated_at = ?18, email_key = ?19, phone_e164 = ?20,
        family_key = ?21, family_phonetic = ?22, given_key = ?23, postcode_key = ?24,
        locality_key = ?25 WHERE id = ?26";
    const INSERT_TAG: &str = "INSERT INTO customer_tags (customer_id, tag) VALUES (?1, ?2)";

    /// `synchronous`: "NORMAL" for bulk work, "FULL" for durable commits.
    pub fn create(path: &Path, synchronous: &str) -> Connection {
        let conn = Connection::open(path.join("customers.sqlite")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA cache_size = -{};",
            CACHE_BYTES / 1024
        ))
        .unwrap();
        assert_synchronous(&conn, synchronous);
        conn.execute_batch(SCHEMA).unwrap();
        conn
    }

    pub fn assert_synchronous(conn: &Connection, expected: &str) {
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let level: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let expected_level = match expected {
            "NORMAL" => 1,
            "FULL" => 2,
            other => panic!("unexpected synchronous level {other}"),
        };
        assert_eq!(level, expected_level, "PRAGMA synchronous");
    }

    /// Parameters ?1 to ?25 of `INSERT` and `UPDATE`; `at` is the created/updated time.
    fn row_params<'r>(row: &'r Row, at: &'r i64) -> [&'r dyn ToSql; 25] {
        [
            &row.given_name,
            &row.family_name,
            &row.email,
            &row.phone,
            &row.phone_country,
            &row.street,
            &row.locality,
            &row.postcode,
            &row.country,
            &row.birth_date,
            &row.stage,
            &row.owner,
            &row.source,
            &row.ext_system,
            &row.ext_id,
            &row.organization,
            &row.job_title,
            at,
            &row.email_key,
            &row.phone_e164,
            &row.family_key,
            &row.family_phonetic,
            &row.given_key,
            &row.postcode_key,
            &row.locality_key,
        ]
    }

    fn insert(conn: &Connection, row: &Row) -> i64 {
        let mut stmt = conn.prepare_cached(INSERT).unwrap();
        stmt.execute(&row_params(row, &now_micros())[..]).unwrap();
        let id = conn.last_insert_rowid();
        insert_tags(conn, id, &row.tags);
        id
    }

    fn insert_tags(conn: &Connection, id: i64, tags: &[String]) {
        let mut stmt = conn.prepare_cached(INSERT_TAG).unwrap();
        for tag in tags {
            stmt.execute(params![id, tag]).unwrap();
        }
    }

    pub fn load(conn: &mut Connection, rows: &[Row]) -> Vec<i64> {
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(BATCH) {
            let tx = conn.transaction().unwrap();
            for row in chunk {
                ids.push(insert(&tx, row));
            }
            tx.commit().unwrap();
        }
        ids
    }

    pub fn count(conn: &Connection) -> u64 {
        let count: i64 = conn
            .query_row("SELECT count(*) FROM customers", [], |r| r.get(0))
            .unwrap();
        u64::try_from(count).unwrap()
    }

    pub fn lookup(conn: &mut Connection, rows: &[Row], picks: &[usize]) -> usize {
        // One deferred read transaction: a snapshot, like the other engines' read transaction.
        let tx = conn.transaction().unwrap();
        let mut by_email = tx
            .prepare_cached(
                "SELECT id, given_name, family_name, email, phone, phone_country, street, locality,
                 postcode, country, birth_date, stage, owner, source, ext_system, ext_id,
                 organization, job_title, created_at, updated_at, email_key, phone_e164,
                 family_key, family_phonetic, given_key, postcode_key, locality_key
                 FROM customers WHERE email_key = ?1",
            )
            .unwrap();
        let mut tags_of = tx
            .prepare_cached("SELECT tag FROM customer_tags WHERE customer_id = ?1")
            .unwrap();
        let mut found = 0;
        for &i in picks {
            let hit = by_email
                .query_row([&rows[i].email_key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Row {
                            given_name: r.get(1)?,
                            family_name: r.get(2)?,
                            email: r.get(3)?,
                            phone: r.get(4)?,
                            phone_country: r.get(5)?,
                            street: r.get(6)?,
                            locality: r.get(7)?,
                            postcode: r.get(8)?,
                            country: r.get(9)?,
                            birth_date: r.get(10)?,
                            tags: Vec::new(),
                            stage: r.get(11)?,
                            owner: r.get(12)?,
                            source: r.get(13)?,
                            ext_system: r.get(14)?,
                            ext_id: r.get(15)?,
                            organization: r.get(16)?,
                            job_title: r.get(17)?,
                            created_at: r.get(18)?,
                            updated_at: r.get(19)?,
                            email_key: r.get(20)?,
                            ext_key: String::new(),
                            phone_e164: r.get(21)?,
                            family_key: r.get(22)?,
                            family_phonetic: r.get(23)?,
                            given_key: r.get(24)?,
                            postcode_key: r.get(25)?,
                            locality_key: r.get(26)?,
                        },
                    ))
                })
                .optional()
                .unwrap();
            if let Some((id, mut row)) = hit {
                row.tags = tags_of
                    .query_map([id], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                std::hint::black_box(row);
                found += 1;
            }
        }
        drop((by_email, tags_of));
        tx.commit().unwrap();
        found
    }

    pub fn update<'a>(
        conn: &mut Connection,
        ids: &[i64],
        picks: &[usize],
        mut variant: impl FnMut(usize) -> &'a Row,
    ) {
        for chunk in picks.chunks(UPDATES_PER_TXN) {
            let tx = conn.transaction().unwrap();
            for &i in chunk {
                let (id, row) = (ids[i], variant(i));
                let mut stmt = tx.prepare_cached(UPDATE).unwrap();
                let at = now_micros();
                let mut params = row_params(row, &at).to_vec();
                params.push(&id);
                let changed = stmt.execute(&params[..]).unwrap();
                assert_eq!(changed, 1);
                tx.prepare_cached("DELETE FROM customer_tags WHERE customer_id = ?1")
                    .unwrap()
                    .execute([id])
                    .unwrap();
                insert_tags(&tx, id, &row.tags);
            }
            tx.commit().unwrap();
        }
    }

    pub fn insert_durable(conn: &mut Connection, row: &Row) {
        let tx = conn.transaction().unwrap();
        insert(&tx, row);
        tx.commit().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Benches

/// Times filling a fresh store, made by `create` outside the timing, with `load`; `check`
/// then asserts the store holds what the label says.
fn bench_load<S>(
    group: &mut Group<'_>,
    engine: &str,
    create: impl Fn(&Path) -> S,
    mut load: impl FnMut(&mut S),
    check: impl Fn(&S),
) {
    group.bench_function(engine, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = temp_dir();
                let mut store = create(dir.path());
                let start = Instant::now();
                load(&mut store);
                total += start.elapsed();
                check(&store);
            }
            total
        });
    });
}

fn bulk_insert(c: &mut Criterion) {
    let d = data();
    let n = d.customers.len() as u64;
    let mut group = configure(c, "bulk_insert", 20);
    group.throughput(criterion::Throughput::Elements(n));
    bench_load(
        &mut group,
        "customerdb",
        cdb::create,
        |store| {
            black_box(cdb::load(store, &d.customers));
        },
        |store| assert_eq!(cdb::count(store), n),
    );
    bench_load(
        &mut group,
        "redb",
        raw::create,
        |db| {
            black_box(raw::load(db, &d.rows));
        },
        |db| assert_eq!(raw::count(db), n),
    );
    bench_load(
        &mut group,
        "sqlite",
        |dir| sql::create(dir, "NORMAL"),
        |conn| {
            black_box(sql::load(conn, &d.rows));
        },
        |conn| {
            assert_eq!(sql::count(conn), n);
            sql::assert_synchronous(conn, "NORMAL");
        },
    );
    group.finish();
}

/// Flips customer `i` between its original and moved data; returns the data to write now.
fn flip<'a, T>(
    moved: &RefCell<Vec<bool>>,
    i: usize,
    original: &'a [T],
    moved_to: &'a [T],
) -> &'a T {
    let mut state = moved.borrow_mut();
    state[i] = !state[i];
    if state[i] { &moved_to[i] } else { &original[i] }
}

/// The next `UPDATES_PER_ITER` picks of the `UPDATES` sequence, wrapping around.
fn next_picks<'a>(cursor: &Cell<usize>, updates: &'a [usize]) -> &'a [usize] {
    let start = cursor.get();
    cursor.set((start + UPDATES_PER_ITER) % updates.len());
    &updates[start..start + UPDATES_PER_ITER]
}

/// Times `UPDATES_PER_ITER` updates per iteration through `update`, each customer flipping
/// between its `original` and `moved` data so every update moves index entries.
fn bench_updates<'d, T>(
    group: &mut Group<'_>,
    engine: &str,
    original: &'d [T],
    moved: &'d [T],
    mut update: impl FnMut(&[usize], &mut dyn FnMut(usize) -> &'d T),
) {
    let updates = &data().updates;
    let (state, cursor) = (RefCell::new(vec![false; original.len()]), Cell::new(0));
    group.bench_function(engine, |b| {
        b.iter(|| {
            let picks = next_picks(&cursor, updates);
            update(picks, &mut |i| flip(&state, i, original, moved));
        });
    });
}

/// `lookup_email`, then `update`, on one loaded store per engine (loading is not timed).
fn lookup_and_update(c: &mut Criterion) {
    let d = data();
    let n = d.customers.len();

    let cdb_dir = temp_dir();
    let store = cdb::create(cdb_dir.path());
    let cdb_ids = cdb::load(&store, &d.customers);
    let raw_dir = temp_dir();
    let db = raw::create(raw_dir.path());
    let raw_ids = raw::load(&db, &d.rows);
    let sql_dir = temp_dir();
    let mut conn = sql::create(sql_dir.path(), "NORMAL");
    let sql_ids = sql::load(&mut conn, &d.rows);
    assert_eq!(cdb::count(&store), n as u64);
    assert_eq!(raw::count(&db), n as u64);
    assert_eq!(sql::count(&conn), n as u64);

    let mut group = configure(c, "lookup_email", 10);
    group.throughput(criterion::Throughput::Elements(LOOKUPS as u64));
    group.bench_function("customerdb", |b| {
        b.iter(|| assert_eq!(cdb::lookup(&store, &d.customers, &d.lookups), LOOKUPS));
    });
    group.bench_function("redb", |b| {
        b.iter(|| assert_eq!(raw::lookup(&db, &d.rows, &d.lookups), LOOKUPS));
    });
    group.bench_function("sqlite", |b| {
        b.iter(|| assert_eq!(sql::lookup(&mut conn, &d.rows, &d.lookups), LOOKUPS));
    });
    group.finish();

    let mut group = configure(c, "update", 15);
    group.throughput(criterion::Throughput::Elements(UPDATES_PER_ITER as u64));
    bench_updates(
        &mut group,
        "customerdb",
        &d.customers,
        &d.moved,
        |picks, variant| {
            cdb::update(&store, &cdb_ids, picks, variant);
        },
    );
    bench_updates(
        &mut group,
        "redb",
        &d.rows,
        &d.moved_rows,
        |picks, variant| {
            raw::update(&db, &raw_ids, picks, variant);
        },
    );
    bench_updates(
        &mut group,
        "sqlite",
        &d.rows,
        &d.moved_rows,
        |picks, variant| {
            sql::update(&mut conn, &sql_ids, picks, variant);
        },
    );
    group.finish();

    assert_eq!(cdb::count(&store), n as u64);
    assert_eq!(raw::count(&db), n as u64);
    assert_eq!(sql::count(&conn), n as u64);
    sql::assert_synchronous(&conn, "NORMAL");
}

/// Times `DURABLE_TIMED` single commits one by one and prints p50, p99 and max.
fn report_tail(engine: &str, mut commit: impl FnMut()) {
    let mut times: Vec<Duration> = (0..DURABLE_TIMED)
        .map(|_| {
            let start = Instant::now();
            commit();
            start.elapsed()
        })
        .collect();
    times.sort();
    let at = |per_mille: usize| times[(times.len() - 1) * per_mille / 1000];
    println!(
        "durable_commit/{engine}: {DURABLE_TIMED} commits, p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        at(500),
        at(990),
        times[times.len() - 1]
    );
}

/// Times single durable commits of customers from the `DURABLE_SEED` stream, each turned into
/// the engine's input by `prepare` outside the timing: criterion's median, then the tail.
fn bench_durable<S, T>(
    group: &mut Group<'_>,
    engine: &str,
    store: &mut S,
    prepare: impl Fn(SampleCustomer) -> T,
    mut commit: impl FnMut(&mut S, &T),
    count: impl Fn(&S) -> u64,
) {
    let mut stream = Generator::new(DURABLE_SEED).map(prepare);
    group.bench_function(engine, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let item = stream.next().unwrap();
                let start = Instant::now();
                commit(store, &item);
                total += start.elapsed();
            }
            total
        });
    });
    let before = count(store);
    let next: Vec<T> = stream.by_ref().take(DURABLE_TIMED).collect();
    let mut next = next.iter();
    report_tail(engine, || commit(store, next.next().unwrap()));
    assert_eq!(count(store), before + DURABLE_TIMED as u64);
}

fn durable_commit(c: &mut Criterion) {
    let mut group = configure(c, "durable_commit", 5);
    group.sampling_mode(SamplingMode::Auto);
    group.throughput(criterion::Throughput::Elements(1));
    let row = |c: SampleCustomer| Row::prepare(&c);

    let dir = temp_dir();
    let mut store = cdb::create(dir.path());
    bench_durable(
        &mut group,
        "customerdb",
        &mut store,
        |c| c,
        |s, c| cdb::insert_durable(s, c),
        cdb::count,
    );
    let dir = temp_dir();
    let mut db = raw::create(dir.path());
    bench_durable(
        &mut group,
        "redb",
        &mut db,
        row,
        |db, r| raw::insert_durable(db, r),
        raw::count,
    );
    let dir = temp_dir();
    let mut conn = sql::create(dir.path(), "FULL");
    bench_durable(
        &mut group,
        "sqlite",
        &mut conn,
        row,
        sql::insert_durable,
        sql::count,
    );
    sql::assert_synchronous(&conn, "FULL");
    group.finish();
}

criterion_group!(benches, bulk_insert, lookup_and_update, durable_commit);
criterion_main!(benches);
