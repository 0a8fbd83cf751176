//! # What is measured
//!
//! Segment queries ("which customers...") on three engines in the same process, on the same
//! generated data, each answering with the number of members (workload (d): the count per
//! country):
//!
//! - (a) `city_spend`: locality = Manchester and total spend >= the 75th percentile of all
//!   customers' total spend.
//! - (b) `recent_loyal`: a purchase within the last 90 days, at least 3 orders, and consent to
//!   marketing by email in force.
//! - (c) `tag_country`: has tag `vip` and country = DE.
//! - (d) `per_country`: the number of customers per country.
//! - (e) `old_m`: born before 1970 and family name starting with "M".
//!
//! The engines:
//!
//! - **customerdb**: the public query API on a read transaction, `now` fixed with `Query::at`:
//!   `Query::count` for (a), (b), (c), (e) and `Query::group_by(Field::Country)` for (d). Its
//!   planner picks the indexes (the metric indexes maintained by `WriteTxn::add_activity`, the
//!   consent index kept from the records' consent events).
//! - **redb**: a hand-written plan on redb 4, as a competent direct user would write it:
//!   postcard records (consent events inside, decoded zero-copy) in `TableDefinition<u64,
//!   &[u8]>`, a `TableDefinition<u64, (orders, spend, last purchase)>` of metrics, and one
//!   `MultimapTableDefinition<_, u64>` each for locality key, country, tag, birth date, family
//!   name key, total spend, last purchase and order count. (a) reads the city's ids and looks
//!   up each one's spend; (b) marks the ids with 3+ orders in a bitset, walks the last-purchase
//!   range, and decodes the records of the hits to check consent; (c) merges the two sorted id
//!   lists of the tag and the country; (d) reads the length of each country's id list (redb
//!   keeps it); (e) marks the ids of the "m" family-name range in a bitset and walks the
//!   birth-date range below 1970.
//! - **sqlite**: rusqlite with bundled SQLite, WAL, `synchronous=NORMAL`, cached statements, one
//!   `SELECT count(*)` (or `GROUP BY country`) per workload: a `customers` table with the record
//!   columns, the key columns and the metric columns (order count, total spend, last purchase),
//!   indexed on the same eight fields; tags in `customer_tags (customer_id, tag)` indexed on tag;
//!   consent events in `consent_events`, keyed by customer, purpose, channel and time (the event
//!   in force is the latest one at or before `now`, as in customerdb). `ANALYZE` runs after
//!   loading, so its planner has statistics as customerdb's has.
//!
//! Only the indexes the workloads can use exist in the baselines (customerdb keeps its usual
//! ones), and the baselines hold metrics rather than the activities they come from: what a
//! hand-built system that maintains its metrics on write would hold.
//!
//! Data: N customers (N = 1,000,000 unless `CUSTOMERDB_BENCH_N` says otherwise, e.g.
//! `CUSTOMERDB_BENCH_N=100000`) from `customerdb::sample::Generator` with its fixed seed,
//! generated, loaded into all three engines and dropped in chunks of 10,000 (memory stays flat).
//! The sample's countries are weighted GB 22% down to CA 3% (a fixed, realistic weighting,
//! flatter than Zipf); its 30 cities per country are Zipf-Mandelbrot within the country (weight
//! 1/(rank + 2): the largest ~16% of the country, Manchester, rank 3, ~8%); 30 tags, Zipf
//! 1/(rank + 3); birth dates uniform in 1940 to 2006. Added here from a second seeded stream:
//! 25% of customers never buy, the others have 1 + a geometric number of purchases (mean 2.5) at
//! uniform times in the two years before `now`, each amount log-normal (exp of a normal with
//! mean ln 30 EUR, sigma 1, by Box-Muller), written with `WriteTxn::add_activity` for customerdb;
//! 55% granted email marketing consent (15% of those withdrew it later) and 10% refused it, given
//! through `CustomerBuilder::consent`. `now` is fixed at 2026-10-01. Loading is not timed.
//!
//! Before timing, each workload asserts that the three engines give the same answer (and a
//! non-trivial one: neither no customer nor every customer) and prints the counts, customerdb's
//! plan and SQLite's query plan. Caches: 256 MiB for all three. Each timed iteration opens its
//! read transaction (SQLite: the statement's implicit one).

// "SQLite" is a name, not code: keep it out of backticks.
#![allow(clippy::doc_markdown)]

mod common;

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{CACHE_BYTES, temp_dir};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use customerdb::sample::{Generator, SampleCustomer, SplitMix64};
use tempfile::TempDir;

/// The seed of `sample::Generator`; the activity stream uses a derived one.
const SEED: u64 = 0x5E6_3E27;
const CHUNK: usize = 10_000;
const DAY: i64 = 86_400;
/// `now` of every query: 2026-10-01T00:00:00Z.
const NOW: i64 = 1_790_812_800;
/// Purchases fall in the two years before `NOW`.
const PURCHASE_SPAN: u64 = 730 * 86_400;
/// Consent events fall in the three years before `NOW`.
const CONSENT_SPAN: u64 = 3 * 365 * 86_400;
const RECENT_DAYS: i64 = 90;
const MIN_ORDERS: u64 = 3;
const PURPOSE: &str = "marketing";
const CITY: &str = "Manchester";
const TAG: &str = "vip";
const COUNTRY: &str = "DE";
const FAMILY_PREFIX: &str = "M";
/// Days from the common era of 1970-01-01: born before it.
const BORN_BEFORE: i32 = 719_163;

fn n() -> usize {
    common::n(1_000_000)
}

fn timestamp(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, 0).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Data

/// One generated customer with everything each engine needs; ids are 1..=N in every engine.
struct Person {
    id: u64,
    customer: SampleCustomer,
    /// `normalize::name_key` of the family name and `fold_key` of the locality: the keys
    /// customerdb compares by, precomputed for the baselines.
    family_key: String,
    locality_key: String,
    birth_days: i32,
    /// (time in Unix seconds, amount in euro cents), in generation order.
    purchases: Vec<(i64, i64)>,
    /// Email marketing consent events (granted, time), oldest first.
    consents: Vec<(bool, i64)>,
    orders: u64,
    spend: i64,
    last_purchase: Option<i64>,
}

/// The customers and their activities, generated lazily in chunks.
struct People {
    customers: Generator,
    rng: SplitMix64,
    next_id: u64,
}

impl People {
    fn new() -> People {
        People {
            customers: Generator::new(SEED),
            rng: SplitMix64::new(SEED ^ 0xAC71_0171),
            next_id: 1,
        }
    }

    /// A uniform float in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal: exp(ln 3000 + z), z standard normal by Box-Muller.
    fn amount(&mut self) -> i64 {
        let (u1, u2) = (self.unit(), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        ((3000f64.ln() + z).exp().round() as i64).clamp(1, 100_000_000)
    }

    fn take(&mut self, count: usize) -> Vec<Person> {
        use chrono::Datelike;
        (0..count)
            .map(|_| {
                let customer = self.customers.next().unwrap();
                let orders = if self.rng.below(100) < 25 {
                    0
                } else {
                    let mut k = 1;
                    while k < 40 && self.rng.below(100) < 60 {
                        k += 1;
                    }
                    k
                };
                let purchases: Vec<(i64, i64)> = (0..orders)
                    .map(|_| {
                        let at = NOW - 1 - self.rng.below(PURCHASE_SPAN).cast_signed();
                        (at, self.amount())
                    })
                    .collect();
                let mut consents = Vec::new();
                let r = self.rng.below(100);
                // Strictly increasing times: two events never tie.
                let at = NOW - 2 - self.rng.below(CONSENT_SPAN).cast_signed();
                if r < 55 {
                    consents.push((true, at));
                    if self.rng.below(100) < 15 {
                        consents.push((
                            false,
                            at + 1 + self.rng.below((NOW - at - 1).cast_unsigned()).cast_signed(),
                        ));
                    }
                } else if r < 65 {
                    consents.push((false, at));
                }
                let id = self.next_id;
                self.next_id += 1;
                Person {
                    id,
                    family_key: customerdb::normalize::name_key(&customer.family_name),
                    locality_key: customerdb::normalize::fold_key(&customer.locality),
                    birth_days: customer.birth_date.num_days_from_ce(),
                    orders: purchases.len() as u64,
                    spend: purchases.iter().map(|p| p.1).sum(),
                    last_purchase: purchases.iter().map(|p| p.0).max(),
                    purchases,
                    consents,
                    customer,
                }
            })
            .collect()
    }
}

/// What the workloads depend on that only the data fixes.
struct Params {
    /// The 75th percentile of total spend over all customers (zero for those who never bought).
    min_spend: i64,
}

#[derive(Debug, Clone, Copy)]
enum Workload {
    CitySpend,
    RecentLoyal,
    TagCountry,
    PerCountry,
    OldM,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::CitySpend,
        Workload::RecentLoyal,
        Workload::TagCountry,
        Workload::PerCountry,
        Workload::OldM,
    ];

    fn label(self) -> &'static str {
        match self {
            Workload::CitySpend => "segment_a_city_spend",
            Workload::RecentLoyal => "segment_b_recent_loyal",
            Workload::TagCountry => "segment_c_tag_country",
            Workload::PerCountry => "segment_d_per_country",
            Workload::OldM => "segment_e_old_m",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Count(u64),
    /// (country, customers), ordered by country.
    Groups(Vec<(String, u64)>),
}

/// The three engines behind one interface, so each workload is written once.
trait Engine {
    fn load(&mut self, people: &[Person]);
    /// After the last chunk (SQLite: `ANALYZE`).
    fn loaded(&mut self) {}
    fn run(&self, w: Workload, p: &Params) -> Answer;
    /// The plan, printed once per workload.
    fn plan(&self, _w: Workload, _p: &Params) -> Option<String> {
        None
    }
}

/// Whether the email marketing consent in force at `NOW` is granted: the latest event at or
/// before it decides. `events`: (channel, purpose, granted, time).
fn consented<'a>(events: impl Iterator<Item = (&'a str, &'a str, bool, i64)>) -> bool {
    events
        .filter(|&(channel, purpose, _, at)| {
            purpose == PURPOSE && (channel == "email" || channel == "any") && at <= NOW
        })
        .max_by_key(|e| e.3)
        .is_some_and(|e| e.2)
}

// ---------------------------------------------------------------------------------------------
// customerdb

mod cdb {
    use super::{
        Answer, CACHE_BYTES, CITY, COUNTRY, Engine, FAMILY_PREFIX, MIN_ORDERS, PURPOSE, Params,
        Person, RECENT_DAYS, TAG, Workload, timestamp,
    };
    use customerdb::query::{Field, Operand, Query};
    use customerdb::{
        Activity, Channel, Consent, ConsentStatus, Currency, CustomerId, Durability, Store,
    };

    pub(super) struct Cdb {
        store: Store,
        eur: Currency,
    }

    pub(super) fn create(dir: &std::path::Path) -> Cdb {
        let store = Store::builder()
            .cache_size(CACHE_BYTES)
            .durability(Durability::None)
            .create(dir.join("customers.cdb"))
            .unwrap();
        Cdb {
            store,
            eur: Currency::parse("EUR").unwrap(),
        }
    }

    fn query(w: Workload, p: &Params) -> Query {
        let born_before = chrono::NaiveDate::from_num_days_from_ce_opt(super::BORN_BEFORE).unwrap();
        let filter = match w {
            Workload::CitySpend => Field::Locality.eq(CITY) & Field::TotalSpend.ge(p.min_spend),
            Workload::RecentLoyal => {
                Field::LastPurchase.ge(Operand::days_ago(RECENT_DAYS))
                    & Field::OrderCount.ge(MIN_ORDERS.cast_signed())
                    & customerdb::query::Filter::consent(Channel::Email, PURPOSE)
            }
            Workload::TagCountry => Field::Tag.eq(TAG) & Field::Country.eq(COUNTRY),
            Workload::PerCountry => customerdb::query::Filter::all(),
            Workload::OldM => {
                Field::BirthDate.lt(born_before) & Field::FamilyName.starts_with(FAMILY_PREFIX)
            }
        };
        Query::filter(filter).at(timestamp(super::NOW))
    }

    impl Engine for Cdb {
        fn load(&mut self, people: &[Person]) {
            let mut tx = self.store.begin_write().unwrap();
            tx.set_durability(Durability::None);
            for p in people {
                let mut b = p.customer.to_builder();
                for &(granted, at) in &p.consents {
                    let status = if granted {
                        ConsentStatus::Granted
                    } else {
                        ConsentStatus::Withdrawn
                    };
                    b = b.consent(Consent::new(
                        PURPOSE,
                        Channel::Email,
                        status,
                        timestamp(at),
                        "web_form",
                    ));
                }
                let id = tx.insert(b).unwrap();
                assert_eq!(id, CustomerId::from_u64(p.id), "ids are 1..=N");
                for &(at, amount) in &p.purchases {
                    tx.add_activity(id, Activity::purchase(timestamp(at), amount, self.eur))
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }

        fn run(&self, w: Workload, p: &Params) -> Answer {
            let tx = self.store.begin_read().unwrap();
            let q = query(w, p);
            if let Workload::PerCountry = w {
                let groups = q.group_by(&tx, &Field::Country, None).unwrap();
                Answer::Groups(
                    groups
                        .into_iter()
                        .map(|g| (g.key.unwrap_or_default(), g.summary.customers))
                        .collect(),
                )
            } else {
                Answer::Count(q.count(&tx).unwrap())
            }
        }

        fn plan(&self, w: Workload, p: &Params) -> Option<String> {
            let tx = self.store.begin_read().unwrap();
            Some(query(w, p).explain(&tx).unwrap().to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// raw redb

mod raw {
    use super::{
        Answer, BORN_BEFORE, CACHE_BYTES, CITY, COUNTRY, DAY, Engine, MIN_ORDERS, NOW, PURPOSE,
        Params, Person, RECENT_DAYS, TAG, Workload, consented,
    };
    use redb::{
        Database, Durability, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable,
        TableDefinition,
    };
    use serde::{Deserialize, Serialize};

    const CUSTOMERS: TableDefinition<u64, &[u8]> = TableDefinition::new("customers");
    /// Order count, total spend, last purchase (`i64::MIN`: never).
    const METRICS: TableDefinition<u64, (u64, i64, i64)> = TableDefinition::new("metrics");
    const LOCALITY: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("locality");
    const COUNTRY_IDX: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("country");
    const TAG_IDX: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("tag");
    const BIRTH_DATE: MultimapTableDefinition<i32, u64> =
        MultimapTableDefinition::new("birth_date");
    const FAMILY: MultimapTableDefinition<&str, u64> = MultimapTableDefinition::new("family");
    const SPEND: MultimapTableDefinition<i64, u64> = MultimapTableDefinition::new("spend");
    const LAST_PURCHASE: MultimapTableDefinition<i64, u64> =
        MultimapTableDefinition::new("last_purchase");
    const ORDERS: MultimapTableDefinition<u64, u64> = MultimapTableDefinition::new("orders");

    /// The stored record; strings borrow from the page on decoding.
    #[derive(Serialize, Deserialize)]
    struct Record<'a> {
        given_name: &'a str,
        family_name: &'a str,
        email: &'a str,
        phone: &'a str,
        street: &'a str,
        locality: &'a str,
        postcode: &'a str,
        country: &'a str,
        birth_date: i32,
        #[serde(borrow)]
        tags: Vec<&'a str>,
        stage: &'a str,
        owner: &'a str,
        source: &'a str,
        organization: Option<&'a str>,
        job_title: Option<&'a str>,
        #[serde(borrow)]
        consents: Vec<ConsentEvent<'a>>,
    }

    #[derive(Serialize, Deserialize)]
    struct ConsentEvent<'a> {
        purpose: &'a str,
        channel: &'a str,
        granted: bool,
        at: i64,
    }

    /// A set of ids below a bound, one bit each.
    struct Bits(Vec<u64>);

    impl Bits {
        fn new(max_id: u64) -> Bits {
            Bits(vec![0; (max_id / 64 + 1) as usize])
        }
        fn insert(&mut self, id: u64) {
            self.0[(id / 64) as usize] |= 1 << (id % 64);
        }
        fn contains(&self, id: u64) -> bool {
            (self.0[(id / 64) as usize] >> (id % 64)) & 1 == 1
        }
    }

    pub(super) struct Raw {
        db: Database,
        max_id: u64,
    }

    pub(super) fn create(dir: &std::path::Path) -> Raw {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("raw.redb"))
            .unwrap();
        Raw { db, max_id: 0 }
    }

    impl Engine for Raw {
        fn load(&mut self, people: &[Person]) {
            let mut tx = self.db.begin_write().unwrap();
            tx.set_durability(Durability::None).unwrap();
            {
                let mut customers = tx.open_table(CUSTOMERS).unwrap();
                let mut metrics = tx.open_table(METRICS).unwrap();
                let mut locality = tx.open_multimap_table(LOCALITY).unwrap();
                let mut country = tx.open_multimap_table(COUNTRY_IDX).unwrap();
                let mut tag = tx.open_multimap_table(TAG_IDX).unwrap();
                let mut birth = tx.open_multimap_table(BIRTH_DATE).unwrap();
                let mut family = tx.open_multimap_table(FAMILY).unwrap();
                let mut spend = tx.open_multimap_table(SPEND).unwrap();
                let mut last = tx.open_multimap_table(LAST_PURCHASE).unwrap();
                let mut orders = tx.open_multimap_table(ORDERS).unwrap();
                for p in people {
                    let c = &p.customer;
                    let record = Record {
                        given_name: &c.given_name,
                        family_name: &c.family_name,
                        email: &c.email,
                        phone: &c.phone,
                        street: &c.street,
                        locality: &c.locality,
                        postcode: &c.postcode,
                        country: &c.country,
                        birth_date: p.birth_days,
                        tags: c.tags.iter().map(String::as_str).collect(),
                        stage: c.stage.as_str(),
                        owner: &c.owner,
                        source: &c.source,
                        organization: c.organization.as_deref(),
                        job_title: c.job_title.as_deref(),
                        consents: p
                            .consents
                            .iter()
                            .map(|&(granted, at)| ConsentEvent {
                                purpose: PURPOSE,
                                channel: "email",
                                granted,
                                at,
                            })
                            .collect(),
                    };
                    let id = p.id;
                    customers
                        .insert(id, postcard::to_allocvec(&record).unwrap().as_slice())
                        .unwrap();
                    let last_purchase = p.last_purchase.unwrap_or(i64::MIN);
                    metrics
                        .insert(id, (p.orders, p.spend, last_purchase))
                        .unwrap();
                    locality.insert(p.locality_key.as_str(), id).unwrap();
                    country.insert(c.country.as_str(), id).unwrap();
                    for t in &c.tags {
                        tag.insert(t.as_str(), id).unwrap();
                    }
                    birth.insert(p.birth_days, id).unwrap();
                    family.insert(p.family_key.as_str(), id).unwrap();
                    spend.insert(p.spend, id).unwrap();
                    if let Some(at) = p.last_purchase {
                        last.insert(at, id).unwrap();
                    }
                    orders.insert(p.orders, id).unwrap();
                    self.max_id = self.max_id.max(id);
                }
            }
            tx.commit().unwrap();
        }

        fn run(&self, workload: Workload, params: &Params) -> Answer {
            let tx = self.db.begin_read().unwrap();
            match workload {
                Workload::CitySpend => {
                    // The city's ids (a few percent) drive; each one's spend is a point lookup.
                    let locality = tx.open_multimap_table(LOCALITY).unwrap();
                    let metrics = tx.open_table(METRICS).unwrap();
                    let key = customerdb::normalize::fold_key(CITY);
                    let mut n = 0;
                    for id in locality.get(key.as_str()).unwrap() {
                        let metric = metrics.get(id.unwrap().value()).unwrap().unwrap();
                        n += u64::from(metric.value().1 >= params.min_spend);
                    }
                    Answer::Count(n)
                }
                Workload::RecentLoyal => {
                    let orders = tx.open_multimap_table(ORDERS).unwrap();
                    let last = tx.open_multimap_table(LAST_PURCHASE).unwrap();
                    let customers = tx.open_table(CUSTOMERS).unwrap();
                    let mut loyal = Bits::new(self.max_id);
                    for item in orders.range(MIN_ORDERS..).unwrap() {
                        for id in item.unwrap().1 {
                            loyal.insert(id.unwrap().value());
                        }
                    }
                    let mut n = 0;
                    for item in last.range(NOW - RECENT_DAYS * DAY..).unwrap() {
                        for id in item.unwrap().1 {
                            let id = id.unwrap().value();
                            if !loyal.contains(id) {
                                continue;
                            }
                            let bytes = customers.get(id).unwrap().unwrap();
                            let record: Record = postcard::from_bytes(bytes.value()).unwrap();
                            let events = record
                                .consents
                                .iter()
                                .map(|e| (e.channel, e.purpose, e.granted, e.at));
                            n += u64::from(consented(events));
                        }
                    }
                    Answer::Count(n)
                }
                Workload::TagCountry => {
                    // Both id lists come sorted: merge them.
                    let tag = tx.open_multimap_table(TAG_IDX).unwrap();
                    let country = tx.open_multimap_table(COUNTRY_IDX).unwrap();
                    let mut tagged = tag.get(TAG).unwrap().map(|v| v.unwrap().value());
                    let mut local = country.get(COUNTRY).unwrap().map(|v| v.unwrap().value());
                    let (mut next_tagged, mut next_local) = (tagged.next(), local.next());
                    let mut n = 0;
                    while let (Some(i), Some(j)) = (next_tagged, next_local) {
                        match i.cmp(&j) {
                            std::cmp::Ordering::Less => next_tagged = tagged.next(),
                            std::cmp::Ordering::Greater => next_local = local.next(),
                            std::cmp::Ordering::Equal => {
                                n += 1;
                                next_tagged = tagged.next();
                                next_local = local.next();
                            }
                        }
                    }
                    Answer::Count(n)
                }
                Workload::PerCountry => {
                    let country = tx.open_multimap_table(COUNTRY_IDX).unwrap();
                    Answer::Groups(
                        country
                            .iter()
                            .unwrap()
                            .map(|item| {
                                let (k, ids) = item.unwrap();
                                (k.value().to_owned(), ids.len())
                            })
                            .collect(),
                    )
                }
                Workload::OldM => {
                    let family = tx.open_multimap_table(FAMILY).unwrap();
                    let birth = tx.open_multimap_table(BIRTH_DATE).unwrap();
                    let mut m_names = Bits::new(self.max_id);
                    for item in family.range::<&str>("m".."n").unwrap() {
                        for id in item.unwrap().1 {
                            m_names.insert(id.unwrap().value());
                        }
                    }
                    let mut n = 0;
                    for item in birth.range(..BORN_BEFORE).unwrap() {
                        for id in item.unwrap().1 {
                            n += u64::from(m_names.contains(id.unwrap().value()));
                        }
                    }
                    Answer::Count(n)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

mod sql {
    use super::{
        Answer, BORN_BEFORE, CITY, COUNTRY, DAY, Engine, MIN_ORDERS, NOW, PURPOSE, Params, Person,
        RECENT_DAYS, TAG, Workload,
    };
    use rusqlite::{Connection, params};

    const SCHEMA: &str = "
        CREATE TABLE customers (
            id INTEGER PRIMARY KEY,
            given_name TEXT NOT NULL, family_name TEXT NOT NULL, email TEXT NOT NULL,
            phone TEXT NOT NULL, street TEXT NOT NULL, locality TEXT NOT NULL,
            postcode TEXT NOT NULL, country TEXT NOT NULL, birth_date INTEGER NOT NULL,
            stage TEXT NOT NULL, owner TEXT NOT NULL, source TEXT NOT NULL,
            organization TEXT, job_title TEXT,
            family_key TEXT NOT NULL, locality_key TEXT NOT NULL,
            order_count INTEGER NOT NULL, total_spend INTEGER NOT NULL, last_purchase INTEGER
        );
        CREATE TABLE customer_tags (
            customer_id INTEGER NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (customer_id, tag)
        ) WITHOUT ROWID;
        CREATE TABLE consent_events (
            customer_id INTEGER NOT NULL, purpose TEXT NOT NULL, channel TEXT NOT NULL,
            at INTEGER NOT NULL, granted INTEGER NOT NULL,
            PRIMARY KEY (customer_id, purpose, channel, at)
        ) WITHOUT ROWID;
        CREATE INDEX customers_locality ON customers (locality_key);
        CREATE INDEX customers_country ON customers (country);
        CREATE INDEX customers_birth_date ON customers (birth_date);
        CREATE INDEX customers_family ON customers (family_key);
        CREATE INDEX customers_total_spend ON customers (total_spend);
        CREATE INDEX customers_last_purchase ON customers (last_purchase);
        CREATE INDEX customers_order_count ON customers (order_count);
        CREATE INDEX customer_tags_tag ON customer_tags (tag);
    ";

    const INSERT: &str = "INSERT INTO customers (id, given_name, family_name, email, phone,
        street, locality, postcode, country, birth_date, stage, owner, source, organization,
        job_title, family_key, locality_key, order_count, total_spend, last_purchase)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
        ?19, ?20)";

    /// The statement of each workload; ?1.. as bound by `bind`.
    fn statement(w: Workload) -> &'static str {
        match w {
            Workload::CitySpend => {
                "SELECT count(*) FROM customers WHERE locality_key = ?1 AND total_spend >= ?2"
            }
            Workload::RecentLoyal => {
                "SELECT count(*) FROM customers c
                 WHERE c.last_purchase >= ?1 AND c.order_count >= ?2
                 AND (SELECT e.granted FROM consent_events e
                      WHERE e.customer_id = c.id AND e.purpose = ?3
                      AND e.channel IN ('email', 'any') AND e.at <= ?4
                      ORDER BY e.at DESC LIMIT 1) = 1"
            }
            Workload::TagCountry => {
                "SELECT count(*) FROM customers c JOIN customer_tags t ON t.customer_id = c.id
                 WHERE t.tag = ?1 AND c.country = ?2"
            }
            Workload::PerCountry => {
                "SELECT country, count(*) FROM customers GROUP BY country ORDER BY country"
            }
            Workload::OldM => {
                "SELECT count(*) FROM customers
                 WHERE birth_date < ?1 AND family_key >= ?2 AND family_key < ?3"
            }
        }
    }

    fn bind(w: Workload, p: &Params) -> Vec<rusqlite::types::Value> {
        use rusqlite::types::Value::{Integer, Text};
        match w {
            Workload::CitySpend => vec![
                Text(customerdb::normalize::fold_key(CITY)),
                Integer(p.min_spend),
            ],
            Workload::RecentLoyal => vec![
                Integer(NOW - RECENT_DAYS * DAY),
                Integer(MIN_ORDERS.cast_signed()),
                Text(PURPOSE.to_owned()),
                Integer(NOW),
            ],
            Workload::TagCountry => vec![Text(TAG.to_owned()), Text(COUNTRY.to_owned())],
            Workload::PerCountry => vec![],
            Workload::OldM => vec![
                Integer(i64::from(BORN_BEFORE)),
                Text("m".to_owned()),
                Text("n".to_owned()),
            ],
        }
    }

    pub(super) struct Sql {
        conn: Connection,
    }

    pub(super) fn create(dir: &std::path::Path) -> Sql {
        let conn = super::common::open_sqlite(dir);
        conn.execute_batch(SCHEMA).unwrap();
        Sql { conn }
    }

    impl Engine for Sql {
        fn load(&mut self, people: &[Person]) {
            let tx = self.conn.transaction().unwrap();
            {
                let mut insert = tx.prepare_cached(INSERT).unwrap();
                let mut tag = tx
                    .prepare_cached("INSERT INTO customer_tags (customer_id, tag) VALUES (?1, ?2)")
                    .unwrap();
                let mut consent = tx
                    .prepare_cached(
                        "INSERT INTO consent_events (customer_id, purpose, channel, at, granted)
                         VALUES (?1, ?2, 'email', ?3, ?4)",
                    )
                    .unwrap();
                for p in people {
                    let c = &p.customer;
                    let id = p.id.cast_signed();
                    insert
                        .execute(params![
                            id,
                            c.given_name,
                            c.family_name,
                            c.email,
                            c.phone,
                            c.street,
                            c.locality,
                            c.postcode,
                            c.country,
                            p.birth_days,
                            c.stage.as_str(),
                            c.owner,
                            c.source,
                            c.organization,
                            c.job_title,
                            p.family_key,
                            p.locality_key,
                            p.orders.cast_signed(),
                            p.spend,
                            p.last_purchase,
                        ])
                        .unwrap();
                    for t in &c.tags {
                        tag.execute(params![id, t]).unwrap();
                    }
                    for &(granted, at) in &p.consents {
                        consent.execute(params![id, PURPOSE, at, granted]).unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }

        fn loaded(&mut self) {
            self.conn.execute_batch("ANALYZE").unwrap();
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }

        fn run(&self, w: Workload, p: &Params) -> Answer {
            let mut stmt = self.conn.prepare_cached(statement(w)).unwrap();
            let args = bind(w, p);
            let params = rusqlite::params_from_iter(args.iter());
            if let Workload::PerCountry = w {
                let rows = stmt
                    .query_map(params, |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })
                    .unwrap();
                Answer::Groups(
                    rows.map(|r| {
                        let (k, n) = r.unwrap();
                        (k, u64::try_from(n).unwrap())
                    })
                    .collect(),
                )
            } else {
                let n: i64 = stmt.query_row(params, |r| r.get(0)).unwrap();
                Answer::Count(u64::try_from(n).unwrap())
            }
        }

        fn plan(&self, w: Workload, p: &Params) -> Option<String> {
            let mut stmt = self
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", statement(w)))
                .unwrap();
            let args = bind(w, p);
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap();
            Some(rows.map(Result::unwrap).collect::<Vec<_>>().join("; "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

/// The loaded engines, built once and kept for every workload.
struct Loaded {
    _dirs: Vec<TempDir>,
    engines: Vec<(&'static str, RefCell<Box<dyn Engine>>)>,
    params: Params,
    n: usize,
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
    let dirs: Vec<TempDir> = (0..3).map(|_| temp_dir()).collect();
    let mut engines: Vec<(&'static str, Box<dyn Engine>)> = vec![
        ("customerdb", Box::new(cdb::create(dirs[0].path()))),
        ("redb", Box::new(raw::create(dirs[1].path()))),
        ("sqlite", Box::new(sql::create(dirs[2].path()))),
    ];
    let mut took = [Duration::ZERO; 3];
    let mut people = People::new();
    let (mut spends, mut purchases) = (Vec::with_capacity(n), 0);
    let mut left = n;
    while left > 0 {
        let chunk = people.take(left.min(CHUNK));
        left -= chunk.len();
        spends.extend(chunk.iter().map(|p| p.spend));
        purchases += chunk.iter().map(|p| p.purchases.len()).sum::<usize>();
        for ((_, engine), took) in engines.iter_mut().zip(&mut took) {
            let started = Instant::now();
            engine.load(&chunk);
            *took += started.elapsed();
        }
    }
    for ((name, engine), took) in engines.iter_mut().zip(took) {
        engine.loaded();
        println!("{name}: loaded {n} customers and {purchases} purchases in {took:.1?}");
    }
    spends.sort_unstable();
    let params = Params {
        min_spend: spends[spends.len() * 3 / 4],
    };
    println!(
        "75th percentile of total spend: {} cents (median {})",
        params.min_spend,
        spends[spends.len() / 2]
    );
    Loaded {
        _dirs: dirs,
        engines: engines
            .into_iter()
            .map(|(name, e)| (name, RefCell::new(e)))
            .collect(),
        params,
        n,
    }
}

/// Runs `w` once on every engine, asserts they agree on a non-trivial answer, and prints it
/// with the plans.
fn check(l: &Loaded, w: Workload) {
    let answers: Vec<Answer> = l
        .engines
        .iter()
        .map(|(_, e)| e.borrow().run(w, &l.params))
        .collect();
    for ((name, _), a) in l.engines.iter().zip(&answers) {
        assert_eq!(
            a,
            &answers[0],
            "{}: {name} disagrees with customerdb",
            w.label()
        );
    }
    match &answers[0] {
        Answer::Count(c) => {
            assert!(*c > 0 && *c < l.n as u64, "{}: {c} of {}", w.label(), l.n);
            println!("{}: all three engines count {c} of {}", w.label(), l.n);
        }
        Answer::Groups(g) => {
            assert_eq!(g.iter().map(|(_, c)| c).sum::<u64>(), l.n as u64);
            assert!(g.len() > 1);
            println!("{}: all three engines give {g:?}", w.label());
        }
    }
    for (name, e) in &l.engines {
        if let Some(plan) = e.borrow().plan(w, &l.params) {
            println!("  {name} plan: {}", plan.trim_end().replace('\n', "\n    "));
        }
    }
}

fn segments(c: &mut Criterion) {
    let l = loaded();
    for w in Workload::ALL {
        check(l, w);
        let mut group = c.benchmark_group(w.label());
        group.sample_size(10);
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(5));
        for (name, engine) in &l.engines {
            group.bench_function(*name, |b| {
                b.iter(|| black_box(engine.borrow().run(w, &l.params)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, segments);
criterion_main!(benches);
