//! Guards index consistency under any sequence of writes: random insert / update / upsert /
//! remove / activity add, correct and remove / commit / abort sequences run against the store and
//! an in-memory model; after every step every lookup and every customer's timeline and metrics
//! must match the model, history must replay to the current record, the change feed must hold
//! exactly the committed changes in order, and `verify()` must be clean.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use customerdb::{
    Activity, ActivityId, ActivityQuery, AddressParts, Currency, Customer, CustomerId, Direction,
    ErrorKind, Index, InteractionChannel, Metrics, Read, Scan, Store, TicketStatus, UniqueKey,
    Upsert, WriteTxn,
};
use proptest::prelude::*;

// Small pools so that keys collide often: shared phones, clashing emails, reused tags.
const EMAILS: [&str; 6] = [
    "ada@example.com",
    "ADA@Example.com",
    "alan@example.org",
    "grace@example.net",
    "linus@example.com",
    "edsger@example.org",
];
const FAMILIES: [&str; 4] = ["Lovelace", "Turing", "Hopper", "Müller"];
const GIVENS: [&str; 3] = ["Ada", "Alan", "Grace"];
const TAGS: [&str; 3] = ["vip", "gold", "lapsed"];
const COUNTRIES: [&str; 3] = ["GB", "DE", "FR"];

/// The data of one generated customer, as indexes into the pools.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    given: usize,
    family: usize,
    emails: Vec<usize>,
    phones: Vec<usize>,
    tags: Vec<usize>,
    country: Option<usize>,
    ext: Option<u8>,
}

impl Spec {
    fn build(&self) -> customerdb::CustomerBuilder {
        let mut b = Customer::builder()
            .given_name(GIVENS[self.given])
            .family_name(FAMILIES[self.family]);
        for &e in &self.emails {
            b = b.email(EMAILS[e]);
        }
        for &p in &self.phones {
            b = b.phone(crate::PHONES[p]);
        }
        for &t in &self.tags {
            b = b.tag(TAGS[t]);
        }
        if let Some(c) = self.country {
            b = b.address(AddressParts {
                country: Some(COUNTRIES[c].into()),
                ..AddressParts::default()
            });
        }
        if let Some(x) = self.ext {
            b = b.external_id("shop", x.to_string());
        }
        b
    }

    /// The unique keys this spec claims: email match keys (case folded) and external ids.
    fn unique_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .emails
            .iter()
            .map(|&e| EMAILS[e].to_lowercase())
            .collect();
        keys.extend(self.ext.map(|x| format!("ext:{x}")));
        keys.sort();
        keys.dedup();
        keys
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..GIVENS.len(),
        0..FAMILIES.len(),
        prop::collection::vec(0..EMAILS.len(), 0..3),
        prop::collection::vec(0..crate::PHONES.len(), 0..3),
        prop::collection::vec(0..TAGS.len(), 0..3),
        prop::option::of(0..COUNTRIES.len()),
        prop::option::of(0u8..4),
    )
        .prop_map(|(given, family, emails, phones, tags, country, ext)| Spec {
            given,
            family,
            emails,
            phones,
            tags,
            country,
            ext,
        })
}

/// A generated activity: its day, and what it is.
#[derive(Debug, Clone, PartialEq)]
struct Act {
    day: u32,
    kind: ActKind,
}

#[derive(Debug, Clone, PartialEq)]
enum ActKind {
    /// Amount in minor units (negative: a refund) and whether it is in USD rather than EUR.
    Purchase(i64, bool),
    Interaction,
    /// Ticket number and whether this event closes it.
    Ticket(u8, bool),
    Note,
}

fn day(d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, 12, 0, 0).unwrap()
}

impl Act {
    fn build(&self) -> Activity {
        let at = day(self.day);
        match self.kind {
            ActKind::Purchase(amount, usd) => {
                let cur = Currency::parse(if usd { "USD" } else { "EUR" }).unwrap();
                Activity::purchase(at, amount, cur)
            }
            ActKind::Interaction => {
                Activity::interaction(at, InteractionChannel::Chat, Direction::Inbound)
            }
            ActKind::Ticket(n, closed) => Activity::ticket(
                at,
                format!("T{n}"),
                if closed {
                    TicketStatus::Closed
                } else {
                    TicketStatus::Open
                },
            ),
            ActKind::Note => Activity::note(at, "note"),
        }
    }
}

fn act() -> impl Strategy<Value = Act> {
    let kind = prop_oneof![
        (-500i64..5_000, any::<bool>()).prop_map(|(a, usd)| ActKind::Purchase(a, usd)),
        Just(ActKind::Interaction),
        (0u8..3, any::<bool>()).prop_map(|(n, c)| ActKind::Ticket(n, c)),
        Just(ActKind::Note),
    ];
    (1u32..28, kind).prop_map(|(day, kind)| Act { day, kind })
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Spec),
    Update(usize, Spec),
    Upsert(usize, Spec),
    Remove(usize),
    AddActivity(usize, Act),
    CorrectActivity(usize, Act),
    RemoveActivity(usize),
    Commit,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => spec().prop_map(Op::Insert),
        3 => (any::<usize>(), spec()).prop_map(|(i, s)| Op::Update(i, s)),
        2 => (0..EMAILS.len(), spec()).prop_map(|(e, s)| Op::Upsert(e, s)),
        2 => any::<usize>().prop_map(Op::Remove),
        4 => (any::<usize>(), act()).prop_map(|(i, a)| Op::AddActivity(i, a)),
        1 => (any::<usize>(), act()).prop_map(|(i, a)| Op::CorrectActivity(i, a)),
        1 => any::<usize>().prop_map(Op::RemoveActivity),
        2 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

type Model = BTreeMap<u64, Spec>;

/// Activities by id: the customer and the activity.
type Acts = BTreeMap<u64, (u64, Act)>;

/// The whole model: customers, activities, and the change feed as (customer, operation name).
#[derive(Debug, Clone, Default)]
struct World {
    customers: Model,
    acts: Acts,
    feed: Vec<(Option<u64>, &'static str)>,
}

/// A customer's metrics, recomputed from the model's activities by the rules documented on
/// [`Metrics`], independently of the store's code.
fn model_metrics(acts: &Acts, customer: u64) -> Metrics {
    let mut m = Metrics::default();
    let mut spend: BTreeMap<bool, i64> = BTreeMap::new();
    let mut tickets: BTreeMap<u8, (u32, u64, bool)> = BTreeMap::new();
    for (&id, (c, a)) in acts {
        if *c != customer {
            continue;
        }
        m.activity_count += 1;
        let at = day(a.day);
        match a.kind {
            ActKind::Purchase(amount, usd) => {
                *spend.entry(usd).or_default() += amount;
                if amount >= 0 {
                    m.order_count += 1;
                    m.first_purchase = Some(m.first_purchase.map_or(at, |t| t.min(at)));
                    m.last_purchase = Some(m.last_purchase.map_or(at, |t| t.max(at)));
                }
            }
            ActKind::Interaction => {
                m.last_interaction = Some(m.last_interaction.map_or(at, |t| t.max(at)));
            }
            ActKind::Ticket(n, closed) => {
                let e = tickets.entry(n).or_insert((a.day, id, closed));
                if (a.day, id) >= (e.0, e.1) {
                    *e = (a.day, id, closed);
                }
            }
            ActKind::Note => {}
        }
    }
    for (usd, total) in spend {
        if total != 0 {
            let cur = Currency::parse(if usd { "USD" } else { "EUR" }).unwrap();
            m.spend.insert(cur, total);
        }
    }
    m.total_spend = match m.spend.len() {
        0 => Some(0),
        1 => m.spend.values().next().copied(),
        _ => None,
    };
    m.open_tickets = tickets.values().filter(|t| !t.2).count() as u64;
    m
}

fn pick_act(acts: &Acts, i: usize) -> u64 {
    if acts.is_empty() || i.is_multiple_of(7) {
        return 5000 + (i % 5) as u64;
    }
    *acts.keys().nth(i % acts.len()).unwrap_or(&0)
}

fn is_conflict(r: customerdb::Result<()>) -> bool {
    matches!(
        r.map_err(customerdb::Error::into_kind),
        Err(ErrorKind::Conflict { .. })
    )
}

/// The model's answer to "may `spec` be written as customer `id`?": no unique key of another.
fn clashes(model: &Model, id: Option<u64>, spec: &Spec) -> bool {
    let mine = spec.unique_keys();
    model
        .iter()
        .filter(|(other, _)| Some(**other) != id)
        .any(|(_, s)| s.unique_keys().iter().any(|k| mine.contains(k)))
}

fn pick(model: &Model, i: usize) -> u64 {
    // Mostly an existing id; sometimes one that does not exist.
    if model.is_empty() || i.is_multiple_of(7) {
        return 1000 + (i % 5) as u64;
    }
    *model.keys().nth(i % model.len()).unwrap_or(&0)
}

fn sorted(mut v: Vec<CustomerId>) -> Vec<u64> {
    v.sort();
    v.into_iter().map(CustomerId::as_u64).collect()
}

fn expect(model: &Model, f: impl Fn(&Spec) -> bool) -> Vec<u64> {
    model
        .iter()
        .filter(|(_, s)| f(s))
        .map(|(id, _)| *id)
        .collect()
}

/// Every lookup of `tx` agrees with `model`.
fn check(tx: &WriteTxn, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(tx.count().unwrap(), model.len() as u64);
    for e in EMAILS {
        let want = model
            .iter()
            .find(|(_, s)| s.emails.iter().any(|&i| EMAILS[i].eq_ignore_ascii_case(e)))
            .map(|(id, _)| *id);
        prop_assert_eq!(
            tx.find_by_email(e).unwrap().map(|r| r.id.as_u64()),
            want,
            "email {}",
            e
        );
    }
    for (p, phone) in crate::PHONES.iter().enumerate() {
        let got: Vec<_> = tx
            .find_by_phone(phone)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        prop_assert_eq!(sorted(got), expect(model, |s| s.phones.contains(&p)));
    }
    for (t, tag) in TAGS.iter().enumerate() {
        let got = tx.ids(&Index::Tag, &Scan::eq(*tag)).unwrap();
        prop_assert_eq!(sorted(got), expect(model, |s| s.tags.contains(&t)));
    }
    for (f, family) in FAMILIES.iter().enumerate() {
        let got = tx.ids(&Index::FamilyName, &Scan::eq(*family)).unwrap();
        prop_assert_eq!(sorted(got), expect(model, |s| s.family == f));
    }
    for (c, country) in COUNTRIES.iter().enumerate() {
        let got = tx.ids(&Index::Country, &Scan::eq(*country)).unwrap();
        prop_assert_eq!(sorted(got), expect(model, |s| s.country == Some(c)));
    }
    for x in 0u8..4 {
        let got = tx
            .find_by_external_id("shop", &x.to_string())
            .unwrap()
            .map(|r| r.id.as_u64());
        let want = expect(model, |s| s.ext == Some(x)).first().copied();
        prop_assert_eq!(got, want);
    }
    for (id, s) in model {
        let rec = tx.get(CustomerId::from_u64(*id)).unwrap();
        prop_assert!(rec.is_some());
        let rec = rec.unwrap();
        prop_assert_eq!(
            rec.customer.name.as_ref().and_then(|n| n.family()),
            Some(FAMILIES[s.family])
        );
    }
    Ok(())
}

/// Every timeline and metric agrees with the model, and every customer's history replays to its
/// current record.
fn check_timeline(tx: &WriteTxn, world: &World) -> Result<(), TestCaseError> {
    let far = day(1) + chrono::Duration::days(36_500);
    for &id in world.customers.keys() {
        let cid = CustomerId::from_u64(id);
        let got: Vec<u64> = tx
            .timeline(cid, &ActivityQuery::new().limit(usize::MAX))
            .unwrap()
            .into_iter()
            .map(|r| r.id.as_u64())
            .collect();
        let mut want: Vec<(DateTime<Utc>, u64)> = world
            .acts
            .iter()
            .filter(|(_, (c, _))| *c == id)
            .map(|(aid, (_, a))| (day(a.day), *aid))
            .collect();
        want.sort_unstable_by(|x, y| y.cmp(x));
        prop_assert_eq!(got, want.iter().map(|w| w.1).collect::<Vec<_>>());
        prop_assert_eq!(tx.metrics(cid).unwrap(), model_metrics(&world.acts, id));
        let now = tx.get(cid).unwrap().map(|r| r.customer);
        prop_assert_eq!(tx.customer_as_of(cid, far).unwrap(), now);
    }
    let n = tx
        .activities(&ActivityQuery::new().limit(usize::MAX))
        .unwrap()
        .len();
    prop_assert_eq!(n, world.acts.len());
    Ok(())
}

#[allow(clippy::too_many_lines)] // one arm per operation, each with its model update
fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Store::in_memory().unwrap();
    let mut committed_world = World::default();
    let mut world = World::default();
    let mut tx = store.begin_write().unwrap();
    for op in ops {
        let pending = &mut world.customers;
        match op {
            Op::Insert(s) => {
                let r = tx.insert(s.build());
                if clashes(pending, None, &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    let id = r.unwrap().as_u64();
                    pending.insert(id, s);
                    world.feed.push((Some(id), "insert"));
                }
            }
            Op::Update(i, s) => {
                let id = pick(pending, i);
                let r = tx.update(CustomerId::from_u64(id), s.build());
                if !pending.contains_key(&id) {
                    prop_assert!(
                        matches!(r.map(|_| ()).unwrap_err().kind(), ErrorKind::NotFound(_)),
                        "expected not found"
                    );
                } else if clashes(pending, Some(id), &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    r.unwrap();
                    pending.insert(id, s);
                    world.feed.push((Some(id), "update"));
                }
            }
            Op::Upsert(e, mut s) => {
                if !s.emails.contains(&e) {
                    s.emails.insert(0, e);
                }
                let key = EMAILS[e].to_lowercase();
                let holder = pending
                    .iter()
                    .find(|(_, o)| o.unique_keys().contains(&key))
                    .map(|(id, _)| *id);
                let r = tx.upsert(&UniqueKey::Email(EMAILS[e].into()), s.build());
                if clashes(pending, holder, &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    match (r.unwrap(), holder) {
                        (Upsert::Updated(id), Some(h)) => prop_assert_eq!(id.as_u64(), h),
                        (Upsert::Inserted(_), None) => {}
                        (got, want) => {
                            prop_assert!(false, "upsert gave {:?}, holder {:?}", got, want);
                        }
                    }
                    let id = holder.unwrap_or_else(|| {
                        tx.find_by_email(EMAILS[e]).unwrap().unwrap().id.as_u64()
                    });
                    pending.insert(id, s);
                    let op = if holder.is_some() { "update" } else { "insert" };
                    world.feed.push((Some(id), op));
                }
            }
            Op::Remove(i) => {
                let id = pick(pending, i);
                let removed = tx.remove(CustomerId::from_u64(id)).unwrap();
                prop_assert_eq!(removed.is_some(), pending.remove(&id).is_some());
                if removed.is_some() {
                    world.acts.retain(|_, (c, _)| *c != id);
                    world.feed.push((Some(id), "remove"));
                }
            }
            Op::AddActivity(i, a) => {
                let id = pick(pending, i);
                let r = tx.add_activity(CustomerId::from_u64(id), a.build());
                if pending.contains_key(&id) {
                    world.acts.insert(r.unwrap().as_u64(), (id, a));
                    world.feed.push((Some(id), "activity_added"));
                } else {
                    prop_assert!(matches!(r.unwrap_err().kind(), ErrorKind::NotFound(_)));
                }
            }
            Op::CorrectActivity(j, a) => {
                let aid = pick_act(&world.acts, j);
                let r = tx.correct_activity(ActivityId::from_u64(aid), a.build());
                if let Some((c, old)) = world.acts.get_mut(&aid) {
                    prop_assert_eq!(r.unwrap().activity, old.build());
                    *old = a;
                    world.feed.push((Some(*c), "activity_corrected"));
                } else {
                    prop_assert!(matches!(
                        r.unwrap_err().kind(),
                        ErrorKind::ActivityNotFound(_)
                    ));
                }
            }
            Op::RemoveActivity(j) => {
                let aid = pick_act(&world.acts, j);
                let r = tx.remove_activity(ActivityId::from_u64(aid)).unwrap();
                prop_assert_eq!(
                    r.as_ref().map(|r| r.id.as_u64()),
                    world.acts.remove(&aid).map(|_| aid)
                );
                if let Some(c) = r.map(|r| r.customer) {
                    world.feed.push((Some(c.as_u64()), "activity_removed"));
                }
            }
            Op::Commit => {
                tx.commit().unwrap();
                committed_world = world.clone();
                tx = store.begin_write().unwrap();
            }
            Op::Abort => {
                drop(tx);
                world = committed_world.clone();
                tx = store.begin_write().unwrap();
            }
        }
        check(&tx, &world.customers)?;
        check_timeline(&tx, &world)?;
        let report = store.verify().unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
        prop_assert_eq!(report.records, committed_world.customers.len() as u64);
        // The feed since 0 is exactly the committed changes, in order, numbered 1, 2, 3...
        let feed = store.begin_read().unwrap().changes(0, usize::MAX).unwrap();
        let got: Vec<(Option<u64>, &str)> = feed
            .iter()
            .map(|c| (c.customer.map(CustomerId::as_u64), c.operation.as_str()))
            .collect();
        prop_assert_eq!(&got, &committed_world.feed);
        prop_assert!(feed.iter().zip(1..).all(|(c, n)| c.seq == n));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_write_sequences_keep_every_index_consistent(ops in prop::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

/// Operations for [`run_bulk`]: bulk inserts mixed with single writes and reads in one
/// transaction, checked only at commit, so that staged changes of ids allocated before and
/// after a flush meet in one flush.
#[derive(Debug, Clone)]
enum BulkOp {
    /// A batch of customers, and how many customers without unique keys to add to it (enough
    /// for the flush at commit to write the postings on a second thread).
    InsertMany(Vec<Spec>, usize),
    Insert(Spec),
    Update(usize, Spec),
    Remove(usize),
    /// A read that flushes the staged writes.
    Count,
    Commit,
    Abort,
}

fn bulk_op() -> impl Strategy<Value = BulkOp> {
    let filler = prop_oneof![6 => Just(0usize), 1 => Just(2_500usize), 2 => 1usize..40];
    prop_oneof![
        4 => (prop::collection::vec(spec(), 0..6), filler)
            .prop_map(|(s, n)| BulkOp::InsertMany(s, n)),
        2 => spec().prop_map(BulkOp::Insert),
        4 => (any::<usize>(), spec()).prop_map(|(i, s)| BulkOp::Update(i, s)),
        2 => any::<usize>().prop_map(BulkOp::Remove),
        2 => Just(BulkOp::Count),
        2 => Just(BulkOp::Commit),
        1 => Just(BulkOp::Abort),
    ]
}

/// Filler customer `i`: no unique key, and values shared with the generated ones.
fn filler(i: usize) -> Spec {
    Spec {
        given: i % GIVENS.len(),
        family: (i / 3) % FAMILIES.len(),
        emails: Vec::new(),
        phones: if i.is_multiple_of(4) {
            Vec::new()
        } else {
            vec![i % crate::PHONES.len()]
        },
        tags: vec![i % TAGS.len()],
        country: (!i.is_multiple_of(5)).then_some(i % COUNTRIES.len()),
        ext: None,
    }
}

fn run_bulk(ops: Vec<BulkOp>) -> Result<(), TestCaseError> {
    let store = Store::in_memory().unwrap();
    let mut committed = Model::new();
    let mut pending = Model::new();
    let mut tx = store.begin_write().unwrap();
    for op in ops {
        match op {
            BulkOp::InsertMany(specs, n) => {
                // Only what inserts cleanly, so that every id comes back.
                let mut batch: Vec<Spec> = Vec::new();
                let mut model = pending.clone();
                for (k, s) in specs.into_iter().chain((0..n).map(filler)).enumerate() {
                    if !clashes(&model, None, &s) {
                        model.insert(u64::MAX - k as u64, s.clone());
                        batch.push(s);
                    }
                }
                let ids = tx.insert_many(batch.iter().map(Spec::build)).unwrap();
                prop_assert_eq!(ids.len(), batch.len());
                for (id, s) in ids.into_iter().zip(batch) {
                    pending.insert(id.as_u64(), s);
                }
            }
            BulkOp::Insert(s) => {
                let r = tx.insert(s.build());
                if clashes(&pending, None, &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    pending.insert(r.unwrap().as_u64(), s);
                }
            }
            BulkOp::Update(i, s) => {
                let id = pick(&pending, i);
                let r = tx.update(CustomerId::from_u64(id), s.build());
                if !pending.contains_key(&id) {
                    prop_assert!(r.is_err());
                } else if clashes(&pending, Some(id), &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    r.unwrap();
                    pending.insert(id, s);
                }
            }
            BulkOp::Remove(i) => {
                let id = pick(&pending, i);
                let removed = tx.remove(CustomerId::from_u64(id)).unwrap();
                prop_assert_eq!(removed.is_some(), pending.remove(&id).is_some());
            }
            BulkOp::Count => {
                prop_assert_eq!(tx.count().unwrap(), pending.len() as u64);
            }
            BulkOp::Commit => {
                tx.commit().unwrap();
                committed = pending.clone();
                let report = store.verify().unwrap();
                prop_assert!(report.is_clean(), "{:?}", report.problems);
                tx = store.begin_write().unwrap();
            }
            BulkOp::Abort => {
                drop(tx);
                pending = committed.clone();
                tx = store.begin_write().unwrap();
            }
        }
    }
    check(&tx, &pending)?;
    tx.commit().unwrap();
    let report = store.verify().unwrap();
    prop_assert!(report.is_clean(), "{:?}", report.problems);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn bulk_inserts_mixed_with_writes_and_reads_keep_postings_and_counts(
        ops in prop::collection::vec(bulk_op(), 1..16)
    ) {
        run_bulk(ops)?;
    }
}
