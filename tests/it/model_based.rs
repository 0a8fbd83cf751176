//! Guards index consistency under any sequence of writes: random insert / update / upsert /
//! remove / commit / abort sequences run against the store and an in-memory model; after every
//! step every lookup must match the model and `verify()` must be clean.

use std::collections::BTreeMap;

use customerdb::{
    AddressParts, Customer, CustomerId, ErrorKind, Index, Read, Scan, Store, UniqueKey, Upsert,
    WriteTxn,
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

#[derive(Debug, Clone)]
enum Op {
    Insert(Spec),
    Update(usize, Spec),
    Upsert(usize, Spec),
    Remove(usize),
    Commit,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => spec().prop_map(Op::Insert),
        3 => (any::<usize>(), spec()).prop_map(|(i, s)| Op::Update(i, s)),
        2 => (0..EMAILS.len(), spec()).prop_map(|(e, s)| Op::Upsert(e, s)),
        2 => any::<usize>().prop_map(Op::Remove),
        2 => Just(Op::Commit),
        1 => Just(Op::Abort),
    ]
}

type Model = BTreeMap<u64, Spec>;

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

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Store::in_memory().unwrap();
    let mut committed = Model::new();
    let mut pending = Model::new();
    let mut tx = store.begin_write().unwrap();
    for op in ops {
        match op {
            Op::Insert(s) => {
                let r = tx.insert(s.build());
                if clashes(&pending, None, &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    pending.insert(r.unwrap().as_u64(), s);
                }
            }
            Op::Update(i, s) => {
                let id = pick(&pending, i);
                let r = tx.update(CustomerId::from_u64(id), s.build());
                if !pending.contains_key(&id) {
                    prop_assert!(
                        matches!(r.map(|_| ()).unwrap_err().kind(), ErrorKind::NotFound(_)),
                        "expected not found"
                    );
                } else if clashes(&pending, Some(id), &s) {
                    prop_assert!(is_conflict(r.map(|_| ())), "expected a conflict");
                } else {
                    r.unwrap();
                    pending.insert(id, s);
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
                if clashes(&pending, holder, &s) {
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
                }
            }
            Op::Remove(i) => {
                let id = pick(&pending, i);
                let removed = tx.remove(CustomerId::from_u64(id)).unwrap();
                prop_assert_eq!(removed.is_some(), pending.remove(&id).is_some());
            }
            Op::Commit => {
                tx.commit().unwrap();
                committed = pending.clone();
                tx = store.begin_write().unwrap();
            }
            Op::Abort => {
                drop(tx);
                pending = committed.clone();
                tx = store.begin_write().unwrap();
            }
        }
        check(&tx, &pending)?;
        let report = store.verify().unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
        prop_assert_eq!(report.records, committed.len() as u64);
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
