//! Guards the planner's invariant: a planned query never answers differently from a full scan.
//! Random customers (names, contacts, addresses, tags, stages, typed attributes, consents,
//! purchases, interactions and tickets) and random nested filters over every field kind and
//! operator are run through the planner and compared with a naive filter over every customer,
//! including sort order and paging through cursors; and the same filters, written as SQL over
//! equivalent SQLite tables, must select the same customers.

// Ids, counts and sequence numbers here are small; SQLite stores them as i64.
#![allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use customerdb::AttributeValue as A;
use customerdb::normalize::{fold_key, name_key, postcode_key};
use customerdb::query::{Cursor, Field, Filter, Op, Operand, Order, Query, Segment};
use customerdb::{
    Activity, AddressParts, AttributeType, Channel, Consent, ConsentStatus, CountryCode, Currency,
    Customer, CustomerId, Direction, Email, Gender, InteractionChannel, Metrics, Phone, Read,
    ReadTxn, Record, Result, Stage, Store, TicketStatus,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use rusqlite::params;
use rust_decimal::Decimal;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

const GIVENS: [&str; 6] = ["Ada", "Alan", "Grace", "Jürgen", "Ana", "Bob"];
const FAMILIES: [&str; 8] = [
    "Meyer",
    "Meier",
    "Maier",
    "Müller",
    "Smith",
    "Lovelace",
    "O'Brien",
    "van den Berg",
];
const LOCALS: [&str; 4] = ["ada", "j.meyer", "grace", "bob"];
const DOMAINS: [&str; 3] = ["example.com", "gmail.com", "Example.org"];
/// Countries with postcodes of their shape.
const PLACES: [(&str, &str, &str); 5] = [
    ("DE", "Berlin", "10115"),
    ("DE", "München", "80331"),
    ("GB", "London", "SW1A 1AA"),
    ("FR", "Paris", "75001"),
    ("US", "New York", "10001"),
];
const TAGS: [&str; 4] = ["vip", "gold", "silver", "new"];
const OWNERS: [&str; 3] = ["ana", "Bob", "Cy"];
const SOURCES: [&str; 2] = ["web", "import"];
const ORGS: [&str; 3] = ["Acme", "ACME Corp", "Initech"];
const GENDERS: [&str; 4] = ["f", "male", "x", "Other Thing"];
const TIERS: [&str; 3] = ["Bronze", "silver", "Gold"];
const PURPOSES: [&str; 2] = ["marketing", "profiling"];
const CHANNELS: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Any];

#[derive(Debug, Clone)]
enum Act {
    Purchase {
        days_ago: i64,
        amount: i64,
        usd: bool,
    },
    Interaction {
        days_ago: i64,
    },
    Ticket {
        id: u8,
        open: bool,
        days_ago: i64,
    },
}

/// One generated customer, as choices from the pools.
#[derive(Debug, Clone)]
struct Spec {
    name: Option<(usize, usize)>,
    emails: Vec<(usize, usize)>,
    phone: Option<usize>,
    places: Vec<(Option<usize>, bool)>,
    birth: Option<i64>,
    gender: Option<usize>,
    org: Option<usize>,
    tags: Vec<usize>,
    stage: Option<usize>,
    owner: Option<usize>,
    source: Option<usize>,
    score: Option<i64>,
    ratio: Option<i64>,
    tier: Option<usize>,
    flags: Option<Vec<usize>>,
    active: Option<bool>,
    joined: Option<i64>,
    seen: Option<i64>,
    consents: Vec<(usize, usize, bool, i64)>,
    acts: Vec<Act>,
}

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + TimeDelta::days(n)
}

impl Spec {
    fn build(&self, i: usize) -> customerdb::CustomerBuilder {
        let mut b = Customer::builder();
        if let Some((g, f)) = self.name {
            b = b.given_name(GIVENS[g]).family_name(FAMILIES[f]);
        }
        for (j, (l, d)) in self.emails.iter().enumerate() {
            b = b.email(format!("{}{i}x{j}@{}", LOCALS[*l], DOMAINS[*d]));
        }
        if let Some(p) = self.phone {
            b = b.phone(crate::PHONES[p]);
        }
        for (place, with_postcode) in &self.places {
            b = b.address(match place {
                Some(p) => AddressParts {
                    locality: Some(PLACES[*p].1.into()),
                    postcode: with_postcode.then(|| PLACES[*p].2.into()),
                    country: Some(PLACES[*p].0.into()),
                    ..AddressParts::default()
                },
                None => AddressParts {
                    lines: vec!["1 Nowhere Lane".into()],
                    ..AddressParts::default()
                },
            });
        }
        if let Some(d) = self.birth {
            b = b.birth_date(day(d));
        }
        if let Some(g) = self.gender {
            b = b.gender(GENDERS[g]);
        }
        if let Some(o) = self.org {
            b = b.organization(ORGS[o]).job_title("Engineer");
        }
        for t in &self.tags {
            b = b.tag(TAGS[*t]);
        }
        if let Some(s) = self.stage {
            b = b.stage(Stage::ALL[s]);
        }
        if let Some(o) = self.owner {
            b = b.owner(OWNERS[o]);
        }
        if let Some(s) = self.source {
            b = b.source(SOURCES[s]);
        }
        if let Some(s) = self.score {
            b = b.attribute("score", s);
        }
        if let Some(r) = self.ratio {
            b = b.attribute("ratio", Decimal::new(r, 1));
        }
        if let Some(t) = self.tier {
            b = b.attribute("tier", TIERS[t]);
        }
        if let Some(fl) = &self.flags {
            let items: Vec<String> = fl.iter().map(|t| TAGS[*t].to_uppercase()).collect();
            b = b.attribute("flags", items);
        }
        if let Some(a) = self.active {
            b = b.attribute("active", a);
        }
        if let Some(d) = self.joined {
            b = b.attribute("joined", day(d));
        }
        if let Some(s) = self.seen {
            b = b.attribute("seen", now() + TimeDelta::hours(s));
        }
        for (p, c, granted, days) in &self.consents {
            let status = if *granted {
                ConsentStatus::Granted
            } else {
                ConsentStatus::Withdrawn
            };
            let at = now() - TimeDelta::days(*days);
            b = b.consent(Consent::new(PURPOSES[*p], CHANNELS[*c], status, at, "web"));
        }
        b
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let who = (
        proptest::option::weighted(0.9, (0..GIVENS.len(), 0..FAMILIES.len())),
        proptest::collection::vec((0..LOCALS.len(), 0..DOMAINS.len()), 0..3),
        proptest::option::of(0..crate::PHONES.len()),
        proptest::collection::vec(
            (
                proptest::option::weighted(0.85, 0..PLACES.len()),
                any::<bool>(),
            ),
            0..3,
        ),
        proptest::option::of(-10_000i64..12_000),
        proptest::option::of(0..GENDERS.len()),
        proptest::option::of(0..ORGS.len()),
    );
    let crm = (
        proptest::collection::vec(0..TAGS.len(), 0..3),
        proptest::option::of(0..Stage::ALL.len()),
        proptest::option::of(0..OWNERS.len()),
        proptest::option::of(0..SOURCES.len()),
        proptest::collection::vec((0..2usize, 0..3usize, any::<bool>(), -5i64..200), 0..3),
    );
    let attrs = (
        proptest::option::of(0i64..100),
        proptest::option::of(-50i64..150),
        proptest::option::of(0..TIERS.len()),
        proptest::option::of(proptest::collection::vec(0..TAGS.len(), 0..3)),
        proptest::option::of(any::<bool>()),
        proptest::option::of(15_000i64..21_000),
        proptest::option::of(-2_000i64..500),
    );
    let act = prop_oneof![
        4 => (0i64..400, -500i64..5_000, proptest::bool::weighted(0.1))
            .prop_map(|(days_ago, amount, usd)| Act::Purchase { days_ago, amount, usd }),
        2 => (0i64..400).prop_map(|days_ago| Act::Interaction { days_ago }),
        1 => (0u8..3, any::<bool>(), 0i64..400)
            .prop_map(|(id, open, days_ago)| Act::Ticket { id, open, days_ago }),
    ];
    let acts = proptest::collection::vec(act, 0..5);
    (who, crm, attrs, acts).prop_map(
        |(
            (name, emails, phone, places, birth, gender, org),
            (tags, stage, owner, source, consents),
            (score, ratio, tier, flags, active, joined, seen),
            acts,
        )| Spec {
            name,
            emails,
            phone,
            places,
            birth,
            gender,
            org,
            tags,
            stage,
            owner,
            source,
            score,
            ratio,
            tier,
            flags,
            active,
            joined,
            seen,
            consents,
            acts,
        },
    )
}

/// A store holding the customers, with a clock that ticks an hour per write.
fn load(specs: &[Spec]) -> Result<Store> {
    let tick = Arc::new(AtomicI64::new(0));
    let start = now() - TimeDelta::days(60);
    let store = Store::builder()
        .clock(move || start + TimeDelta::hours(tick.fetch_add(1, AtomicOrdering::Relaxed)))
        .in_memory()?;
    let mut tx = store.begin_write()?;
    tx.declare_attribute("score", AttributeType::Integer, true)?;
    tx.declare_attribute("ratio", AttributeType::Decimal, false)?;
    tx.declare_attribute("tier", AttributeType::Text, true)?;
    tx.declare_attribute("flags", AttributeType::TextList, true)?;
    tx.declare_attribute("active", AttributeType::Boolean, true)?;
    tx.declare_attribute("joined", AttributeType::Date, false)?;
    tx.declare_attribute("seen", AttributeType::Timestamp, true)?;
    let eur = Currency::parse("EUR")?;
    let usd = Currency::parse("USD")?;
    for (i, s) in specs.iter().enumerate() {
        let id = tx.insert(s.build(i))?;
        for a in &s.acts {
            let at = |d: i64| now() - TimeDelta::days(d) - TimeDelta::minutes(i as i64);
            let activity = match a {
                Act::Purchase {
                    days_ago,
                    amount,
                    usd: u,
                } => Activity::purchase(at(*days_ago), *amount, if *u { usd } else { eur }),
                Act::Interaction { days_ago } => Activity::interaction(
                    at(*days_ago),
                    InteractionChannel::Call,
                    Direction::Inbound,
                ),
                Act::Ticket { id, open, days_ago } => {
                    let status = if *open {
                        TicketStatus::Open
                    } else {
                        TicketStatus::Closed
                    };
                    Activity::ticket(at(*days_ago), format!("T{id}"), status)
                }
            };
            tx.add_activity(id, activity)?;
        }
    }
    tx.commit()?;
    Ok(store)
}

// ---------------------------------------------------------------------------------------------
// Random filters

fn text(pool: &'static [&'static str]) -> BoxedStrategy<Operand> {
    proptest::sample::select(pool)
        .prop_map(Operand::from)
        .boxed()
}

/// A test of `field` with operands from `values`; `ordered` allows ranges, `text` the text
/// operators (prefix, fuzzy, sounds-like; fuzzy ones only when `fuzzy`).
fn test_of(
    field: Field,
    values: BoxedStrategy<Operand>,
    prefixes: &'static [&'static str],
    fuzzy: bool,
) -> BoxedStrategy<Filter> {
    let list = proptest::collection::vec(values.clone(), 0..3);
    let ops = if prefixes.is_empty() {
        10
    } else if fuzzy {
        14
    } else {
        11
    };
    (
        0..ops,
        values,
        list,
        proptest::sample::select(PREFIX_POOL),
        0u32..3,
        80u32..96,
    )
        .prop_map(move |(op, v, list, word, k, jw)| {
            let f = field.clone();
            match op {
                0 => f.eq(v),
                1 => f.ne(v),
                2 => f.lt(v),
                3 => f.le(v),
                4 => f.gt(v),
                5 => f.ge(v),
                6 => f.one_of(list),
                7 => f.all_of(list),
                8 => f.is_set(),
                9 => f.is_missing(),
                10 => f.starts_with(prefixes[(k as usize) % prefixes.len()]),
                11 => f.within_edits(word, k),
                12 => f.similar_to(word, f64::from(jw) / 100.0),
                _ => f.sounds_like(word),
            }
        })
        .boxed()
}

const PREFIX_POOL: &[&str] = &[
    "Meyer", "mayer", "Smyth", "Ada", "Berlin", "gold", "ana", "o'brian",
];
const NAME_PREFIXES: &[&str] = &["M", "me", "O'", "van d", ""];
const TEXT_VALUES: &[&str] = &[
    "Meyer",
    "MEIER",
    "Müller",
    "smith",
    "Ada",
    "jurgen",
    "Berlin",
    "munchen",
    "London",
    "vip",
    "Gold",
    "ana",
    "bob",
    "web",
    "acme",
    "Acme Corp",
    "engineer",
    "m",
    "o'brien",
    "van den berg",
    "silver",
    "",
];
const EMAIL_VALUES: &[&str] = &[
    "ada0x0@example.com",
    "jmeyer1x0@gmail.com",
    "J.Meyer1x0@gmail.com",
    "grace2x1@example.org",
    "bob3x0@Example.com",
];
const PHONE_VALUES: &[&str] = &["+12015550123", "+44 20 7946 0018", "+49 30 123456"];
const COUNTRY_VALUES: &[&str] = &["DE", "gb", "fr", "US", "IT"];
const POSTCODE_VALUES: &[&str] = &["10115", "sw1a1aa", "75001", "80331", "1"];
const STAGE_VALUES: &[&str] = &["lead", "Prospect", "customer", "CHURNED"];
const GENDER_VALUES: &[&str] = &["F", "female", "m", "x", "other thing", "n"];

fn int(range: std::ops::Range<i64>) -> BoxedStrategy<Operand> {
    range.prop_map(Operand::Integer).boxed()
}

fn relative_days(range: std::ops::Range<i64>) -> BoxedStrategy<Operand> {
    prop_oneof![
        range.clone().prop_map(Operand::days_ago),
        range.prop_map(|d| Operand::Timestamp(now() - TimeDelta::days(d) + TimeDelta::hours(3))),
    ]
    .boxed()
}

fn dates(range: std::ops::Range<i64>) -> BoxedStrategy<Operand> {
    prop_oneof![
        3 => range.prop_map(|d| Operand::Date(day(d))),
        1 => (0i64..30_000).prop_map(Operand::days_ago),
    ]
    .boxed()
}

fn leaf(fuzzy: bool) -> BoxedStrategy<Filter> {
    let named = |f: Field| test_of(f, text(TEXT_VALUES), NAME_PREFIXES, fuzzy);
    let folded = |f: Field| test_of(f, text(TEXT_VALUES), &["a", "B", "me", "si"], fuzzy);
    let strict = |f: Field, pool: &'static [&'static str], pre: &'static [&'static str]| {
        test_of(f, text(pool), pre, false)
    };
    let number = |f: Field, r: std::ops::Range<i64>| test_of(f, int(r), &[], false);
    let consent = (0..CHANNELS.len(), 0..PURPOSES.len())
        .prop_map(|(c, p)| Filter::consent(CHANNELS[c], PURPOSES[p].to_uppercase()));
    prop_oneof![
        named(Field::FamilyName),
        named(Field::GivenName),
        named(Field::Name),
        folded(Field::Locality),
        folded(Field::Owner),
        folded(Field::Tag),
        folded(Field::Source),
        folded(Field::Organization),
        folded(Field::JobTitle),
        folded(Field::attribute("tier")),
        folded(Field::attribute("flags")),
        strict(Field::Email, EMAIL_VALUES, &["ada", "J.M", "grace2"]),
        strict(Field::Phone, PHONE_VALUES, &["+44", "+1"]),
        strict(Field::Country, COUNTRY_VALUES, &["d", "G"]),
        strict(Field::Postcode, POSTCODE_VALUES, &["SW1", "1"]),
        strict(Field::Stage, STAGE_VALUES, &["c", "L"]),
        strict(Field::Gender, GENDER_VALUES, &["f", "o"]),
        number(Field::OrderCount, -1..6),
        number(Field::OpenTickets, 0..3),
        number(Field::TotalSpend, -600..12_000),
        number(Field::RecencyDays, -1..400),
        number(Field::attribute("score"), -1..101),
        test_of(
            Field::attribute("ratio"),
            prop_oneof![
                int(-6..16),
                (-60i64..160).prop_map(|m| Operand::Decimal(Decimal::new(m, 1)))
            ]
            .boxed(),
            &[],
            false
        ),
        test_of(
            Field::attribute("active"),
            any::<bool>().prop_map(Operand::Boolean).boxed(),
            &[],
            false
        ),
        test_of(Field::BirthDate, dates(-10_000..12_000), &[], false),
        test_of(
            Field::attribute("joined"),
            dates(15_000..21_000),
            &[],
            false
        ),
        test_of(Field::CreatedAt, relative_days(0..70), &[], false),
        test_of(Field::UpdatedAt, relative_days(0..70), &[], false),
        test_of(Field::FirstPurchase, relative_days(0..400), &[], false),
        test_of(Field::LastPurchase, relative_days(0..400), &[], false),
        test_of(Field::LastInteraction, relative_days(0..400), &[], false),
        test_of(Field::attribute("seen"), relative_days(-20..90), &[], false),
        consent,
        any::<bool>().prop_map(Filter::Const),
    ]
    .boxed()
}

fn filter(fuzzy: bool) -> impl Strategy<Value = Filter> {
    leaf(fuzzy).prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::Or),
            inner.prop_map(|f| !f),
        ]
    })
}

const SORTS: [&str; 9] = [
    "family_name",
    "country",
    "order_count",
    "birth_date",
    "created_at",
    "attributes.score",
    "total_spend",
    "last_purchase",
    "tag",
];

// ---------------------------------------------------------------------------------------------
// The naive answers

/// Every customer with its metrics, in id order.
fn everyone(tx: &ReadTxn) -> Result<Vec<(Record, Metrics)>> {
    tx.customers()?
        .map(|r| {
            let r = r?;
            let m = tx.metrics(r.id)?;
            Ok((r, m))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Text(String),
    Int(i64),
    Date(NaiveDate),
    Time(DateTime<Utc>),
}

/// The naive sort key: a field's smallest value.
fn naive_key(sort: &str, r: &Record, m: &Metrics) -> Option<Key> {
    let c = &r.customer;
    match sort {
        "family_name" => c
            .name
            .as_ref()
            .and_then(|n| n.family_key())
            .map(|k| Key::Text(k.to_owned())),
        "country" => c
            .addresses
            .iter()
            .filter_map(customerdb::Address::country)
            .map(|cc| cc.as_str().to_owned())
            .min()
            .map(Key::Text),
        "order_count" => Some(Key::Int(m.order_count as i64)),
        "birth_date" => c.birth_date.map(Key::Date),
        "created_at" => Some(Key::Time(r.created_at)),
        "attributes.score" => match c.attributes.get("score") {
            Some(customerdb::AttributeValue::Integer(i)) => Some(Key::Int(*i)),
            _ => None,
        },
        "total_spend" => m.total_spend.map(Key::Int),
        "last_purchase" => m.last_purchase.map(Key::Time),
        _ => c
            .tags
            .iter()
            .next()
            .map(|t| Key::Text(t.as_str().to_owned())),
    }
}

fn sort_field(sort: &str) -> Field {
    Filter::parse(&format!("{sort} is set"))
        .map(|f| match f {
            Filter::Test { field, .. } => field,
            _ => unreachable!(),
        })
        .unwrap()
}

/// Checks every form of the query's answer against the naive one.
fn check(
    tx: &ReadTxn,
    all: &[(Record, Metrics)],
    filter: &Filter,
    sort: Option<(&str, Order)>,
    page: usize,
) -> std::result::Result<(), TestCaseError> {
    let predicate = filter.compile(None, now()).unwrap();
    let mut expected: Vec<&(Record, Metrics)> = all
        .iter()
        .filter(|(r, m)| predicate.matches(r, m))
        .collect();
    let mut q = Query::filter(filter.clone()).at(now());
    if let Some((s, order)) = sort {
        expected.sort_by(|a, b| {
            let (ka, kb) = (naive_key(s, &a.0, &a.1), naive_key(s, &b.0, &b.1));
            let o = ka.partial_cmp(&kb).unwrap_or(Ordering::Equal);
            let o = if order == Order::Desc { o.reverse() } else { o };
            o.then(a.0.id.cmp(&b.0.id))
        });
        q = q.sort_by(sort_field(s), order);
    }
    let expected: Vec<CustomerId> = expected.iter().map(|(r, _)| r.id).collect();
    let count = q.count(tx).unwrap();
    prop_assert_eq!(count, expected.len() as u64, "count of {}", filter);
    prop_assert_eq!(q.ids(tx).unwrap(), expected.clone(), "ids of {}", filter);
    let explain = q.explain(tx).unwrap();
    prop_assert_eq!(
        explain.root.actual,
        count,
        "plan of {}:\n{}",
        filter,
        explain
    );
    // Page through with cursors.
    let mut paged = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let mut pq = q.clone().limit(page);
        if let Some(c) = cursor.take() {
            pq = pq.after(c);
        }
        let p = pq.page(tx).unwrap();
        prop_assert!(p.records.len() <= page);
        paged.extend(p.records.iter().map(|r| r.id));
        match p.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        prop_assert!(paged.len() <= expected.len(), "paging runs past the end");
    }
    prop_assert_eq!(paged, expected, "pages of {}", filter);
    Ok(())
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0x5e9_3e47),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn planned_queries_equal_a_naive_filter_with_sorting_and_paging(
        specs in proptest::collection::vec(spec(), 10..60),
        filters in proptest::collection::vec(
            (filter(true), proptest::option::of((0..SORTS.len(), any::<bool>())), 1usize..7),
            12,
        ),
    ) {
        let store = load(&specs).unwrap();
        let tx = store.begin_read().unwrap();
        let all = everyone(&tx).unwrap();
        for (f, sort, page) in &filters {
            let sort = sort.map(|(s, desc)| (SORTS[s], if desc { Order::Desc } else { Order::Asc }));
            check(&tx, &all, f, sort, *page)?;
            // Display reads back as the same filter.
            prop_assert_eq!(&Filter::parse(&f.to_string()).unwrap(), f);
        }
    }

    #[test]
    fn group_counts_from_value_counts_equal_counts_from_the_records(
        specs in proptest::collection::vec(spec(), 10..60),
        removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let store = load(&specs).unwrap();
        let mut w = store.begin_write().unwrap();
        let ids: Vec<CustomerId> = Query::all().ids(&w).unwrap();
        for r in &removed {
            // An index may repeat; removing a removed customer is a no-op.
            let _ = w.remove(*r.get(&ids));
        }
        w.commit().unwrap();
        let tx = store.begin_read().unwrap();
        // `not false` selects everyone but is not `all`, so it groups by reading records.
        let by_records = Query::filter(Filter::Not(Box::new(Filter::Const(false))));
        for field in [Field::Country, Field::Tag, Field::Stage, Field::Owner, Field::Locality, Field::Postcode] {
            let counted = Query::all().group_by(&tx, &field, None).unwrap();
            let read = by_records.group_by(&tx, &field, None).unwrap();
            prop_assert_eq!(counted, read, "{:?}", field);
        }
        prop_assert!(store.verify().unwrap().is_clean());
    }

    #[test]
    fn display_round_trips_through_the_parser(f in filter(true)) {
        let text = f.to_string();
        prop_assert_eq!(Filter::parse(&text).unwrap(), f, "{}", text);
    }

    #[test]
    fn sql_over_the_same_data_selects_the_same_customers(
        specs in proptest::collection::vec(spec(), 10..60),
        filters in proptest::collection::vec(filter(false), 16),
    ) {
        let store = load(&specs).unwrap();
        let tx = store.begin_read().unwrap();
        let db = sqlite(&tx).unwrap();
        for f in &filters {
            let planned = Query::filter(f.clone()).at(now()).ids(&tx).unwrap();
            let sql = format!("SELECT c.id FROM c LEFT JOIN m ON m.cid = c.id WHERE {} ORDER BY c.id", to_sql(f));
            let mut stmt = db.prepare(&sql).unwrap();
            let from_sql: Vec<CustomerId> = stmt
                .query_map([], |row| row.get::<_, i64>(0))
                .unwrap()
                .map(|id| CustomerId::from_u64(id.unwrap() as u64))
                .collect();
            prop_assert_eq!(planned, from_sql, "{}\n{}", f, sql);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn gender_key(g: &Gender) -> String {
    match g {
        Gender::Female => "female".into(),
        Gender::Male => "male".into(),
        Gender::NonBinary => "non_binary".into(),
        Gender::Undisclosed => "undisclosed".into(),
        Gender::Other(s) => fold_key(s),
    }
}

/// Tables equivalent to the store: one row per customer, child tables for the fields with
/// several values, and metrics only for customers with activities.
fn sqlite(tx: &ReadTxn) -> Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, name TEXT, given TEXT, family TEXT, stage TEXT,
            owner TEXT, source TEXT, org TEXT, job TEXT, gender TEXT, birth TEXT, created INTEGER,
            updated INTEGER, score INTEGER, ratio REAL, tier TEXT, active INTEGER, joined TEXT,
            seen INTEGER);
         CREATE TABLE emails (cid INTEGER, v TEXT);
         CREATE TABLE phones (cid INTEGER, v TEXT);
         CREATE TABLE addr (cid INTEGER, country TEXT, locality TEXT, postcode TEXT);
         CREATE TABLE tags (cid INTEGER, v TEXT);
         CREATE TABLE flags (cid INTEGER, v TEXT);
         CREATE TABLE consents (cid INTEGER, seq INTEGER, purpose TEXT, channel TEXT,
            granted INTEGER, at INTEGER);
         CREATE TABLE m (cid INTEGER PRIMARY KEY, order_count INTEGER, total_spend INTEGER,
            first_p INTEGER, last_p INTEGER, last_i INTEGER, open_t INTEGER);",
    )
    .unwrap();
    for rec in tx.customers()? {
        insert_customer(&db, tx, &rec?)?;
    }
    Ok(db)
}

/// Inserts one customer's rows.
fn insert_customer(db: &rusqlite::Connection, tx: &ReadTxn, rec: &Record) -> Result<()> {
    let c = &rec.customer;
    let id = rec.id.as_u64() as i64;
    let n = c.name.as_ref();
    let attr = |k: &str| c.attributes.get(k).cloned();
    db.execute(
        "INSERT INTO c VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
        params![
            id,
            n.map(|n| fold_key(n.display())),
            n.and_then(|n| n.given_key()),
            n.and_then(|n| n.family_key()),
            c.stage.map(Stage::as_str),
            c.owner,
            c.source.as_deref().map(fold_key),
            c.organization.as_deref().map(fold_key),
            c.job_title.as_deref().map(fold_key),
            c.gender.as_ref().map(gender_key),
            c.birth_date.map(|d| d.to_string()),
            micros(rec.created_at),
            micros(rec.updated_at),
            match attr("score") {
                Some(A::Integer(i)) => Some(i),
                _ => None,
            },
            match attr("ratio") {
                Some(A::Decimal(d)) => Some(d.to_string().parse::<f64>().unwrap()),
                _ => None,
            },
            match attr("tier") {
                Some(A::Text(t)) => Some(fold_key(&t)),
                _ => None,
            },
            match attr("active") {
                Some(A::Boolean(b)) => Some(b),
                _ => None,
            },
            match attr("joined") {
                Some(A::Date(d)) => Some(d.to_string()),
                _ => None,
            },
            match attr("seen") {
                Some(A::Timestamp(t)) => Some(micros(t)),
                _ => None,
            },
        ],
    )
    .unwrap();
    insert_children(db, id, c);
    let m = tx.metrics(rec.id)?;
    if m.activity_count > 0 {
        db.execute(
            "INSERT INTO m VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                m.order_count as i64,
                m.total_spend,
                m.first_purchase.map(micros),
                m.last_purchase.map(micros),
                m.last_interaction.map(micros),
                m.open_tickets as i64
            ],
        )
        .unwrap();
    }
    Ok(())
}

/// Inserts the rows of a customer's fields with several values.
fn insert_children(db: &rusqlite::Connection, id: i64, c: &Customer) {
    for e in &c.emails {
        db.execute(
            "INSERT INTO emails VALUES (?1, ?2)",
            params![id, e.match_key()],
        )
        .unwrap();
    }
    for p in &c.phones {
        db.execute("INSERT INTO phones VALUES (?1, ?2)", params![id, p.e164()])
            .unwrap();
    }
    for a in &c.addresses {
        db.execute(
            "INSERT INTO addr VALUES (?1, ?2, ?3, ?4)",
            params![
                id,
                a.country().map(|c| c.as_str().to_owned()),
                a.locality_key(),
                a.postcode_key()
            ],
        )
        .unwrap();
    }
    for t in &c.tags {
        db.execute("INSERT INTO tags VALUES (?1, ?2)", params![id, t.as_str()])
            .unwrap();
    }
    if let Some(A::TextList(items)) = c.attributes.get("flags") {
        for t in items {
            db.execute(
                "INSERT INTO flags VALUES (?1, ?2)",
                params![id, fold_key(t)],
            )
            .unwrap();
        }
    }
    for (seq, k) in c.consents.iter().enumerate() {
        db.execute(
            "INSERT INTO consents VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                seq as i64,
                k.purpose,
                k.channel.as_str(),
                k.status == ConsentStatus::Granted,
                micros(k.at)
            ],
        )
        .unwrap();
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Where a field's values are in SQL: a column of `c` (or a metric expression), or a child
/// table's `v` column.
enum Col {
    One(String),
    Many(&'static str, &'static str),
}

fn column(field: &Field) -> Col {
    let one = |s: &str| Col::One(s.to_owned());
    match field {
        Field::Name => one("c.name"),
        Field::GivenName => one("c.given"),
        Field::FamilyName => one("c.family"),
        Field::Email => Col::Many("emails", "v"),
        Field::Phone => Col::Many("phones", "v"),
        Field::Country => Col::Many("addr", "country"),
        Field::Locality => Col::Many("addr", "locality"),
        Field::Postcode => Col::Many("addr", "postcode"),
        Field::Tag => Col::Many("tags", "v"),
        Field::Stage => one("c.stage"),
        Field::Owner => one("c.owner"),
        Field::Source => one("c.source"),
        Field::Organization => one("c.org"),
        Field::JobTitle => one("c.job"),
        Field::Gender => one("c.gender"),
        Field::BirthDate => one("c.birth"),
        Field::CreatedAt => one("c.created"),
        Field::UpdatedAt => one("c.updated"),
        Field::OrderCount => one("COALESCE(m.order_count, 0)"),
        Field::OpenTickets => one("COALESCE(m.open_t, 0)"),
        Field::TotalSpend => one("(CASE WHEN m.cid IS NULL THEN 0 ELSE m.total_spend END)"),
        Field::FirstPurchase => one("m.first_p"),
        Field::LastPurchase => one("m.last_p"),
        Field::LastInteraction => one("m.last_i"),
        Field::RecencyDays => Col::One(format!("(({} - m.last_p) / 86400000000)", micros(now()))),
        Field::Attribute(a) if a == "flags" => Col::Many("flags", "v"),
        Field::Attribute(a) => Col::One(format!("c.{a}")),
        _ => unreachable!(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Use {
    Equality,
    Order,
    Prefix,
}

/// An operand as an SQL literal in the form the column holds.
fn literal(field: &Field, v: &Operand, usage: Use) -> String {
    let date_field = matches!(field, Field::BirthDate) || *field == Field::attribute("joined");
    let instant = |t: DateTime<Utc>| {
        if date_field {
            quote(&t.date_naive().to_string())
        } else {
            micros(t).to_string()
        }
    };
    match v {
        Operand::Text(s) => quote(&text_key(field, s, usage)),
        Operand::Integer(i) => i.to_string(),
        Operand::Decimal(d) => d.to_string(),
        Operand::Boolean(b) => i64::from(*b).to_string(),
        Operand::Date(d) if date_field => quote(&d.to_string()),
        Operand::Date(d) => micros(d.and_hms_opt(0, 0, 0).unwrap().and_utc()).to_string(),
        Operand::Timestamp(t) => instant(*t),
        Operand::Relative(s) => instant(now() + TimeDelta::seconds(*s)),
        _ => unreachable!(),
    }
}

fn text_key(field: &Field, s: &str, usage: Use) -> String {
    let names = matches!(field, Field::GivenName | Field::FamilyName);
    match (field, usage) {
        (_, Use::Equality) if names => name_key(s),
        (Field::Email, Use::Equality) => Email::parse(s).unwrap().match_key().to_owned(),
        (Field::Phone, Use::Equality) => Phone::parse(s, None).unwrap().e164().to_owned(),
        (Field::Country, Use::Equality) => CountryCode::parse(s).unwrap().as_str().to_owned(),
        (Field::Stage, Use::Equality) => Stage::parse(s).unwrap().as_str().to_owned(),
        (Field::Gender, Use::Equality) => gender_key(&Gender::parse(s)),
        (Field::Postcode, _) => postcode_key(s),
        (Field::Country, _) => s.trim().to_ascii_uppercase(),
        (Field::Stage, Use::Order) => s.trim().to_ascii_lowercase(),
        _ if names => name_key(s),
        _ => fold_key(s),
    }
}

/// A predicate on the value expression `x`.
fn value_sql(field: &Field, op: &Op, x: &str) -> String {
    let cmp = |sym: &str, v: &Operand| {
        let usage = if sym == "=" {
            Use::Equality
        } else {
            Use::Order
        };
        format!("{x} {sym} {}", literal(field, v, usage))
    };
    match op {
        Op::Eq(v) => cmp("=", v),
        Op::Lt(v) => cmp("<", v),
        Op::Le(v) => cmp("<=", v),
        Op::Gt(v) => cmp(">", v),
        Op::Ge(v) => cmp(">=", v),
        Op::In(vs) if vs.is_empty() => "0".into(),
        Op::In(vs) => format!(
            "{x} IN ({})",
            vs.iter()
                .map(|v| literal(field, v, Use::Equality))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Op::Prefix(p) => {
            let p = quote(&text_key(field, p, Use::Prefix));
            format!("substr({x}, 1, length({p})) = {p}")
        }
        Op::IsSet => format!("{x} IS NOT NULL"),
        _ => unreachable!(),
    }
}

/// A field test: any value passes (`EXISTS` for several values), as 0 or 1, never NULL.
fn test_sql(field: &Field, op: &Op) -> String {
    let any = |op: &Op| match column(field) {
        Col::One(x) => format!("COALESCE(({}), 0)", value_sql(field, op, &x)),
        Col::Many(t, col) => format!(
            "EXISTS (SELECT 1 FROM {t} WHERE {t}.cid = c.id AND {})",
            value_sql(field, op, &format!("{t}.{col}"))
        ),
    };
    match op {
        Op::Ne(v) => format!("NOT {}", any(&Op::Eq(v.clone()))),
        Op::IsMissing => format!("NOT {}", any(&Op::IsSet)),
        Op::All(vs) if vs.is_empty() => "1".into(),
        Op::All(vs) => vs
            .iter()
            .map(|v| any(&Op::Eq(v.clone())))
            .collect::<Vec<_>>()
            .join(" AND "),
        op => any(op),
    }
}

fn to_sql(f: &Filter) -> String {
    let join = |fs: &[Filter], word: &str, empty: &str| {
        if fs.is_empty() {
            return empty.to_owned();
        }
        let parts: Vec<String> = fs.iter().map(|f| format!("({})", to_sql(f))).collect();
        parts.join(word)
    };
    match f {
        Filter::Const(b) => i64::from(*b).to_string(),
        Filter::And(fs) => join(fs, " AND ", "1"),
        Filter::Or(fs) => join(fs, " OR ", "0"),
        Filter::Not(inner) => format!("NOT ({})", to_sql(inner)),
        Filter::Test { field, op } => test_sql(field, op),
        Filter::Consent { channel, purpose } => format!(
            "COALESCE((SELECT granted FROM consents k WHERE k.cid = c.id AND k.purpose = {}
                AND (k.channel = {} OR k.channel = 'any') AND k.at <= {}
                ORDER BY k.at DESC, k.seq DESC LIMIT 1), 0)",
            quote(&purpose.trim().to_lowercase()),
            quote(channel.as_str()),
            micros(now())
        ),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour

fn sample_store(n: usize) -> Result<Store> {
    let specs: Vec<Spec> = {
        let mut runner = proptest::test_runner::TestRunner::new(config(1));
        let tree = proptest::collection::vec(spec(), n)
            .new_tree(&mut runner)
            .unwrap();
        proptest::strategy::ValueTree::current(&tree)
    };
    load(&specs)
}

#[test]
fn cursor_paging_stays_correct_while_customers_change() -> Result<()> {
    let store = sample_store(40)?;
    let q = Query::parse("order_count >= 0")?
        .at(now())
        .sort_by(Field::FamilyName, Order::Asc)
        .limit(10);
    let first = q.page(&store.begin_read()?)?;
    let cursor = first.next.clone().expect("more than one page");
    let last = first.records.last().expect("a full page").clone();
    // Between pages: remove a customer already shown and one not yet shown, add one that
    // sorts before the cursor and one after it.
    let mut tx = store.begin_write()?;
    tx.remove(first.records[0].id)?;
    let later = store.begin_read()?.customers()?.last().expect("some")?.id;
    tx.remove(later)?;
    tx.insert(Customer::builder().name("Zed Aaron"))?;
    let zz = tx.insert(Customer::builder().name("Ada Zzyzx"))?;
    tx.commit()?;
    let tx = store.begin_read()?;
    let rest = q.clone().limit(1_000).after(cursor).ids(&tx)?;
    let everyone = Query::all()
        .at(now())
        .sort_by(Field::FamilyName, Order::Asc)
        .ids(&tx)?;
    let at = everyone
        .iter()
        .position(|id| *id == last.id)
        .expect("still there");
    assert_eq!(rest, everyone[at + 1..].to_vec());
    assert!(rest.contains(&zz) && !rest.contains(&later));
    Ok(())
}

#[test]
fn write_transactions_see_their_own_writes() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let a = tx.insert(Customer::builder().name("Ada Lovelace").tag("vip"))?;
    tx.insert(Customer::builder().name("Alan Turing").tag("gold"))?;
    let q = Query::parse(r#"tag = "vip" or family_name ~ "Turin" within 1"#)?;
    assert_eq!(q.count(&tx)?, 2);
    tx.remove(a)?;
    assert_eq!(q.ids(&tx)?.len(), 1);
    assert_eq!(Query::parse("not (tag = \"gold\")")?.count(&tx)?, 0);
    Ok(())
}

#[test]
fn segments_match_records_as_queries_find_them() -> Result<()> {
    let store = sample_store(50)?;
    let tx = store.begin_read()?;
    let seg = Segment::parse(
        "lapsed buyers",
        "order_count >= 1 and last_purchase < now - 90d and consent(email, marketing)",
    )?;
    let members = seg.query().at(now()).ids(&tx)?;
    for (rec, m) in everyone(&tx)? {
        assert_eq!(seg.matches(&rec, &m, now())?, members.contains(&rec.id));
    }
    Ok(())
}

/// The consent index answers for customers whose latest event is before `now`; those with an
/// event at or after it (dated ahead, or the query looking back) are decided by their records,
/// so each query time gives the event then in force, alone and inside an intersection, and in
/// a write transaction that has just changed the events.
#[test]
fn consent_segments_use_the_index_and_the_event_in_force_at_any_time() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let day = |d: i64| now() + TimeDelta::days(d);
    let event = |channel, granted, d| {
        let status = if granted {
            ConsentStatus::Granted
        } else {
            ConsentStatus::Withdrawn
        };
        Consent::new("marketing", channel, status, day(d), "web")
    };
    // (events, consented at now - 20d, now, now + 20d)
    let people: [(Vec<Consent>, [bool; 3]); 5] = [
        (vec![event(Channel::Email, true, -30)], [true, true, true]),
        (
            vec![
                event(Channel::Email, true, -30),
                event(Channel::Email, false, 10),
            ],
            [true, true, false],
        ),
        (
            vec![
                event(Channel::Email, false, -30),
                event(Channel::Any, true, -10),
            ],
            [false, true, true],
        ),
        (vec![event(Channel::Email, true, 0)], [false, true, true]),
        (vec![event(Channel::Sms, true, -30)], [false, false, false]),
    ];
    let mut ids = Vec::new();
    for (i, (events, _)) in people.iter().enumerate() {
        let mut b = Customer::builder().name(GIVENS[i]).tag("vip");
        for e in events {
            b = b.consent(e.clone());
        }
        ids.push(tx.insert(b)?);
    }
    tx.insert(Customer::builder().name("Bob").tag("vip"))?;
    tx.commit()?;
    let tx = store.begin_read()?;
    for (k, at) in [day(-20), now(), day(20)].into_iter().enumerate() {
        let expected: Vec<CustomerId> = ids
            .iter()
            .zip(&people)
            .filter(|(_, (_, when))| when[k])
            .map(|(id, _)| *id)
            .collect();
        let alone = Query::filter(Filter::consent(Channel::Email, "Marketing")).at(at);
        let both =
            Query::filter(Field::Tag.eq("vip") & Filter::consent(Channel::Email, "marketing"))
                .at(at);
        for q in [&alone, &both] {
            assert_eq!(q.ids(&tx)?, expected, "at {at}");
            let plan = q.explain(&tx)?.to_string();
            assert!(plan.contains("index consent"), "{plan}");
        }
    }
    // A withdrawal dated now takes effect for a query at now, in the transaction that wrote it.
    let mut tx = store.begin_write()?;
    let mut first = tx.get(ids[0])?.unwrap().customer;
    first.consents.push(event(Channel::Email, false, 0));
    tx.update(ids[0], first)?;
    let q = Query::filter(Filter::consent(Channel::Email, "marketing")).at(now());
    assert!(!q.ids(&tx)?.contains(&ids[0]));
    Ok(())
}

#[test]
fn planner_reads_indexes_for_selective_tests_and_scans_for_fuzzy_ones() -> Result<()> {
    let store = sample_store(200)?;
    let tx = store.begin_read()?;
    let indexed = Query::parse(r#"postcode = "10115" and tag = "vip""#)?.explain(&tx)?;
    let text = indexed.to_string();
    assert!(text.contains("index postcode"), "{text}");
    assert!(!text.contains("scan:"), "{text}");
    let fuzzy = Query::parse(r#"family_name ~ "Meyer" within 1"#)?.explain(&tx)?;
    assert!(fuzzy.to_string().contains("scan:"), "{fuzzy}");
    let not = Query::parse(r#"not (country = "DE")"#)?.explain(&tx)?;
    assert!(not.to_string().contains("complement"), "{not}");
    // Equality and narrow ranges are estimated from the value counts: exactly.
    for text in [
        r#"country = "DE""#,
        r#"tag = "vip""#,
        "order_count >= 2",
        r#"stage = "customer""#,
    ] {
        let e = Query::parse(text)?.at(now()).explain(&tx)?;
        let leaf = if e.root.children.is_empty() {
            &e.root
        } else {
            &e.root.children[0]
        };
        assert_eq!(leaf.estimated, leaf.actual, "{text}: {e}");
    }
    // Metric tests passed by customers without activities still count them.
    let few = Query::parse("order_count < 1")?.at(now());
    let naive = everyone(&tx)?
        .iter()
        .filter(|(_, m)| m.order_count < 1)
        .count() as u64;
    assert_eq!(few.count(&tx)?, naive);
    Ok(())
}

#[test]
fn aggregates_agree_with_naive_sums_and_groups() -> Result<()> {
    let store = sample_store(120)?;
    let tx = store.begin_read()?;
    let all = everyone(&tx)?;
    let q = Query::parse(r#"country in ("DE", "GB")"#)?.at(now());
    let members: Vec<_> = q.ids(&tx)?;
    let chosen: Vec<&(Record, Metrics)> = all
        .iter()
        .filter(|(r, _)| members.contains(&r.id))
        .collect();
    let s = q.summary(&tx, &Field::TotalSpend)?;
    let known: Vec<i64> = chosen.iter().filter_map(|(_, m)| m.total_spend).collect();
    assert_eq!(s.customers, chosen.len() as u64);
    assert_eq!(s.values, known.len() as u64);
    assert_eq!(s.sum, Some(Decimal::from(known.iter().sum::<i64>())));
    assert_eq!(s.max, known.iter().max().map(|v| Decimal::from(*v)));
    let groups = q.group_by(&tx, &Field::Stage, Some(&Field::OrderCount))?;
    assert_eq!(
        groups.iter().map(|g| g.summary.customers).sum::<u64>(),
        chosen.len() as u64
    );
    for g in &groups {
        let n = chosen
            .iter()
            .filter(|(r, _)| r.customer.stage.map(|s| s.as_str().to_owned()) == g.key)
            .count();
        assert_eq!(g.summary.customers, n as u64, "{:?}", g.key);
    }
    let tags = Query::all().group_by(&tx, &Field::Tag, None)?;
    for g in tags.iter().filter(|g| g.key.is_some()) {
        let n = all
            .iter()
            .filter(|(r, _)| {
                r.customer
                    .tags
                    .iter()
                    .any(|t| Some(t.as_str()) == g.key.as_deref())
            })
            .count();
        assert_eq!(g.summary.customers, n as u64);
    }
    let edges = [0, 1, 3, 100].map(Decimal::from);
    let h = Query::all().histogram(&tx, &Field::OrderCount, &edges)?;
    assert_eq!(
        h.counts[0],
        all.iter().filter(|(_, m)| m.order_count == 0).count() as u64
    );
    assert_eq!(
        h.counts.iter().sum::<u64>() + h.below + h.above + h.missing,
        all.len() as u64
    );
    assert!(
        Query::all()
            .histogram(&tx, &Field::OrderCount, &[Decimal::ONE])
            .is_err()
    );
    assert!(Query::all().summary(&tx, &Field::Country).is_err());
    let rfm = Query::all().at(now()).rfm(&tx)?;
    assert_eq!(rfm.len(), all.len());
    for a in &rfm {
        for b in &rfm {
            if a.frequency > b.frequency {
                assert!(a.f >= b.f);
            }
            if a.recency_days.is_some()
                && (b.recency_days.is_none() || a.recency_days < b.recency_days)
            {
                assert!(a.r >= b.r);
            }
        }
    }
    assert!(rfm.iter().any(|s| s.f == 5) && rfm.iter().all(|s| (1..=5).contains(&s.m)));
    Ok(())
}

#[test]
fn filter_errors_name_the_problem() -> Result<()> {
    let store = sample_store(5)?;
    let tx = store.begin_read()?;
    let kind = |text: &str| {
        Query::parse(text)
            .and_then(|q| q.count(&tx))
            .unwrap_err()
            .into_kind()
    };
    assert!(matches!(
        kind("attributes.nope = 1"),
        customerdb::ErrorKind::UnknownAttribute { .. }
    ));
    assert!(matches!(
        kind("attributes.score = \"x\""),
        customerdb::ErrorKind::AttributeType { .. }
    ));
    assert!(matches!(
        kind(r#"country = "Germany""#),
        customerdb::ErrorKind::Invalid { .. }
    ));
    let err = Query::parse("country = ").unwrap_err();
    let source = std::error::Error::source(&err).expect("the parse error");
    assert!(source.to_string().contains("byte 10"), "{source}");
    Ok(())
}

#[test]
fn saved_segments_report_who_entered_and_left_since_a_feed_position() -> customerdb::Result<()> {
    use chrono::TimeZone;
    use customerdb::query::Segment;
    use customerdb::{Activity, Currency, Customer, Read, Store};

    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    tx.save_segment(&Segment::parse(
        "buyers",
        "order_count >= 1 and country = \"DE\"",
    )?)?;
    tx.save_segment(&Segment::parse("all", "order_count >= 0")?)?;
    let de = || {
        Customer::builder().address(customerdb::AddressParts {
            country: Some("DE".into()),
            ..customerdb::AddressParts::default()
        })
    };
    let ada = tx.insert(de().name("Ada Lovelace"))?;
    let alan = tx.insert(de().name("Alan Turing"))?;
    let at = chrono::Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap();
    let eur = Currency::parse("EUR")?;
    let first = tx.add_activity(alan, Activity::purchase(at, 500, eur))?;
    tx.commit()?;
    let mark = store.begin_read()?.last_seq()?;

    let mut tx = store.begin_write()?;
    tx.add_activity(ada, Activity::purchase(at, 900, eur))?; // Ada enters
    tx.remove_activity(first)?; // Alan leaves
    let grace = tx.insert(de().name("Grace Hopper"))?; // no purchase: not a buyer
    tx.commit()?;

    let tx = store.begin_read()?;
    assert_eq!(
        tx.segments()?
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["all", "buyers"]
    );
    let changes = tx.segment_changes("buyers", mark)?;
    assert_eq!(changes.entered, vec![ada]);
    assert_eq!(changes.left, vec![alan]);
    assert_eq!(changes.until, tx.last_seq()?);
    assert_eq!(tx.segment_changes("all", mark)?.entered, vec![grace]);
    assert!(
        tx.segment_changes("buyers", changes.until)?
            .entered
            .is_empty()
    );
    assert!(tx.segment_changes("nope", 0).is_err());
    drop(tx);
    let mut tx = store.begin_write()?;
    assert!(tx.remove_segment("all")?);
    assert!(!tx.remove_segment("all")?);
    tx.commit()?;
    assert_eq!(store.begin_read()?.segments()?.len(), 1);
    Ok(())
}
