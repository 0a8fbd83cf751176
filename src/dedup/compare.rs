//! Comparators: for one field of two records, the level of agreement reached.
//!
//! Every [`Comparison`] has a fixed list of levels, best first, the last meaning "different".
//! [`Comparison::compare`] returns the index of the first level the pair reaches, or `None`
//! when either record lacks the value: missing data is neutral (weight 0), not evidence
//! against. Multi-valued fields (emails, phones, addresses, external ids) take the best level
//! over every pair of values, so one shared email is enough.
//!
//! Similarity bands use the textbook Jaro-Winkler (see `jaro.rs` for the convention on short
//! strings and the check against Porter & Winkler 1994).

use serde::{Deserialize, Serialize};

use super::MatchRecord;
use super::jaro::{jaro_winkler, may_reach};
use super::nickname::are_nickname_ids;
use super::record::AddressKey;

/// One field comparison of a model, with graded levels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// Given name: exact, nickname (`Bob`/`Robert`), Jaro-Winkler ≥ 0.92, transposed with
    /// the family name, Jaro-Winkler ≥ 0.80, initial only (`A`/`Ada`), different.
    GivenName,
    /// Family name: exact, Jaro-Winkler ≥ 0.92, transposed with the given name, same Double
    /// Metaphone code, Jaro-Winkler ≥ 0.80, different.
    FamilyName,
    /// Date of birth: exact, one digit off or two adjacent digits swapped (as `yyyymmdd`), day
    /// and month swapped, same year, different.
    BirthDate,
    /// Emails (match keys): a shared address, one character off (a typo), different. A
    /// shared local part or a merely similar address is not a level: local parts are made of
    /// names (`daniel.white@`, `white.daniel@`), so namesakes would look like the same person
    /// twice, once on the name and again on the email.
    Email,
    /// Phones (E.164): a shared number, one digit off, different.
    Phone,
    /// Postal addresses, part by part within each address: the same street (Jaro-Winkler
    /// ≥ 0.90) and postcode; the same street nearby (postcode one character off, or the same
    /// locality, or a postcode missing); the same postcode; the same locality (Jaro-Winkler
    /// ≥ 0.88); different. One comparison rather than three, since street, postcode and
    /// locality agree or disagree together: counted separately, a shared address would weigh
    /// three times.
    Address,
    /// External ids: the same id in a shared system, different ids in a shared system;
    /// missing when the two share no system.
    ExternalId,
    /// A custom attribute, by name: the same value, one character off, different.
    Attribute(String),
}

const GIVEN_LEVELS: &[&str] = &[
    "exact",
    "nickname",
    "Jaro-Winkler >= 0.92",
    "transposed with family name",
    "Jaro-Winkler >= 0.80",
    "initial",
    "different",
];
const FAMILY_LEVELS: &[&str] = &[
    "exact",
    "Jaro-Winkler >= 0.92",
    "transposed with given name",
    "same sound (Double Metaphone)",
    "Jaro-Winkler >= 0.80",
    "different",
];
const DATE_LEVELS: &[&str] = &[
    "exact",
    "one digit off",
    "day and month swapped",
    "same year",
    "different",
];
const EMAIL_LEVELS: &[&str] = &["same address", "one character off", "different"];
const ONE_OFF_LEVELS: &[&str] = &["same", "one character off", "different"];
const ADDRESS_LEVELS: &[&str] = &[
    "same street and postcode",
    "same street nearby",
    "same postcode",
    "same locality",
    "different",
];
const EXTERNAL_LEVELS: &[&str] = &["same id", "different id in the same system"];

impl Comparison {
    /// The default comparisons, over every built-in field (no custom attributes).
    pub fn defaults() -> Vec<Comparison> {
        vec![
            Comparison::GivenName,
            Comparison::FamilyName,
            Comparison::BirthDate,
            Comparison::Email,
            Comparison::Phone,
            Comparison::Address,
            Comparison::ExternalId,
        ]
    }

    /// A short name for people (`given name`, `attribute tier`).
    pub fn name(&self) -> String {
        match self {
            Comparison::GivenName => "given name".into(),
            Comparison::FamilyName => "family name".into(),
            Comparison::BirthDate => "birth date".into(),
            Comparison::Email => "email".into(),
            Comparison::Phone => "phone".into(),
            Comparison::Address => "address".into(),
            Comparison::ExternalId => "external id".into(),
            Comparison::Attribute(name) => format!("attribute {name}"),
        }
    }

    /// The levels' labels, best first; the last one is the disagreement level.
    pub fn levels(&self) -> &'static [&'static str] {
        match self {
            Comparison::GivenName => GIVEN_LEVELS,
            Comparison::FamilyName => FAMILY_LEVELS,
            Comparison::BirthDate => DATE_LEVELS,
            Comparison::Email => EMAIL_LEVELS,
            Comparison::Phone | Comparison::Attribute(_) => ONE_OFF_LEVELS,
            Comparison::Address => ADDRESS_LEVELS,
            Comparison::ExternalId => EXTERNAL_LEVELS,
        }
    }

    /// The level `a` and `b` reach (an index into [`Comparison::levels`]), or `None` when
    /// either lacks the value. Symmetric: `compare(a, b) == compare(b, a)`.
    pub fn compare(&self, a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
        match self {
            Comparison::GivenName => compare_given(a, b),
            Comparison::FamilyName => compare_family(a, b),
            Comparison::BirthDate => Some(compare_dates(a.birth_digits()?, b.birth_digits()?)),
            Comparison::Email => best(a.emails(), &b.emails(), one_off),
            Comparison::Phone => best(a.phones(), &b.phones(), one_off),
            Comparison::Address => compare_addresses(a.address_keys(), &b.address_keys()),
            Comparison::ExternalId => compare_external(a, b),
            Comparison::Attribute(name) => best(
                a.attribute(name).iter().map(String::as_str),
                &b.attribute(name).iter().map(String::as_str),
                one_off,
            ),
        }
    }

    /// The values this comparison reads from `r`, for an explanation (`-` when missing).
    pub fn values(&self, r: &MatchRecord) -> String {
        fn list<S: AsRef<str>>(v: impl Iterator<Item = S>) -> String {
            let v: Vec<S> = v.collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
            }
        }
        let one = |v: Option<&str>| v.unwrap_or("-").to_owned();
        match self {
            Comparison::GivenName => one(r.given()),
            Comparison::FamilyName => one(r.family()),
            Comparison::BirthDate => r.birth_date().map_or("-".into(), |d| d.to_string()),
            Comparison::Email => list(r.emails()),
            Comparison::Phone => list(r.phones()),
            Comparison::Address => list(r.address_keys().map(|k| {
                [k.line, k.locality, k.postcode]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" / ")
            })),
            Comparison::ExternalId => list(r.external_ids().map(|(s, i)| format!("{s}:{i}"))),
            Comparison::Attribute(name) => list(r.attribute(name).iter()),
        }
    }

    /// Whether an exact match is weighted by the value's frequency ([`Comparison::tf_value`]).
    pub(crate) fn has_term_frequency(&self) -> bool {
        matches!(self, Comparison::GivenName | Comparison::FamilyName)
    }

    /// For a comparison with a term-frequency adjustment, the value whose frequency scales an
    /// exact match (level 0): the given or family name key.
    pub(crate) fn tf_value<'r>(&self, r: &'r MatchRecord) -> Option<&'r str> {
        match self {
            Comparison::GivenName => r.given(),
            Comparison::FamilyName => r.family(),
            _ => None,
        }
    }
}

/// The best (lowest) level over every pair of values; `None` if either list is empty.
fn best<'v>(
    a: impl Iterator<Item = &'v str>,
    b: &(impl Iterator<Item = &'v str> + Clone),
    level: impl Fn(&str, &str) -> u8,
) -> Option<u8> {
    let mut found: Option<u8> = None;
    for x in a {
        for y in b.clone() {
            let l = level(x, y);
            if l == 0 {
                return Some(0);
            }
            found = Some(found.map_or(l, |f| f.min(l)));
        }
    }
    found
}

/// 0 if equal, then one level per Jaro-Winkler threshold reached (descending thresholds),
/// else the level after the last threshold.
fn banded(x: &str, y: &str, thresholds: &[f64]) -> u8 {
    if x == y {
        return 0;
    }
    let lowest = thresholds.last().copied().unwrap_or(1.0);
    let s = if may_reach(x, y, lowest) {
        jaro_winkler(x, y)
    } else {
        0.0
    };
    let reached = thresholds.iter().position(|t| s >= *t);
    level_u8(reached.map_or(thresholds.len() + 1, |i| i + 1))
}

/// Levels are indexes into lists of at most a dozen labels.
fn level_u8(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

/// Same (0), one edit apart counting an adjacent swap as one edit (1), different (2).
fn one_off(x: &str, y: &str) -> u8 {
    if x == y {
        0
    } else if within_one_edit(x, y) {
        1
    } else {
        2
    }
}

/// Whether `x` becomes `y` by one insertion, deletion, substitution or swap of adjacent
/// characters (optimal string alignment distance at most 1), in linear time.
pub(crate) fn within_one_edit(x: &str, y: &str) -> bool {
    if x.is_ascii() && y.is_ascii() {
        one_edit(x.as_bytes(), y.as_bytes())
    } else {
        let a: Vec<char> = x.chars().collect();
        let b: Vec<char> = y.chars().collect();
        one_edit(&a, &b)
    }
}

fn one_edit<T: PartialEq>(x: &[T], y: &[T]) -> bool {
    if x.len().abs_diff(y.len()) > 1 {
        return false;
    }
    let prefix = x.iter().zip(y).take_while(|(p, q)| p == q).count();
    let (x, y) = (&x[prefix..], &y[prefix..]);
    let suffix = x
        .iter()
        .rev()
        .zip(y.iter().rev())
        .take_while(|(p, q)| p == q)
        .count();
    // What is left between the common prefix and suffix must be one edit.
    match (&x[..x.len() - suffix], &y[..y.len() - suffix]) {
        ([] | [_], [] | [_]) => true,
        ([first, second], [other_first, other_second]) => {
            first == other_second && second == other_first
        }
        _ => false,
    }
}

fn compare_given(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let (x, y) = (a.given()?, b.given()?);
    if x == y {
        return Some(0);
    }
    let single = |s: &str| s.chars().nth(1).is_none();
    let (x1, y1) = (single(x), single(y));
    let nicknames = a
        .nickname()
        .zip(b.nickname())
        .is_some_and(|(left, right)| are_nickname_ids(left, right));
    if !x1 && !y1 && nicknames {
        return Some(1);
    }
    let similarity = similarity_from(x, y, 0.80);
    if similarity >= 0.92 {
        return Some(2);
    }
    if transposed(a, b) {
        return Some(3);
    }
    if similarity >= 0.80 {
        return Some(4);
    }
    let initial = (x1 || y1) && x.chars().next() == y.chars().next();
    Some(if initial { 5 } else { 6 })
}

fn compare_family(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let (x, y) = (a.family()?, b.family()?);
    if x == y {
        return Some(0);
    }
    let similarity = similarity_from(x, y, 0.80);
    if similarity >= 0.92 {
        return Some(1);
    }
    if transposed(a, b) {
        return Some(2);
    }
    let sound = a
        .family_phonetic()
        .any(|c| b.family_phonetic().any(|d| d == c));
    if sound {
        return Some(3);
    }
    Some(if similarity >= 0.80 { 4 } else { 5 })
}

/// Jaro-Winkler similarity where it can reach `lowest`, else 0: below the lowest band the
/// exact value does not matter, and most pairs (random ones, when learning `u`) are there.
fn similarity_from(x: &str, y: &str, lowest: f64) -> f64 {
    if may_reach(x, y, lowest) {
        jaro_winkler(x, y)
    } else {
        0.0
    }
}

/// Given and family names swapped between the records (each within Jaro-Winkler 0.92).
fn transposed(a: &MatchRecord, b: &MatchRecord) -> bool {
    let close = |p: Option<&str>, q: Option<&str>| match (p, q) {
        (Some(p), Some(q)) => p == q || (may_reach(p, q, 0.92) && jaro_winkler(p, q) >= 0.92),
        _ => false,
    };
    close(a.given(), b.family()) && close(a.family(), b.given())
}

fn compare_dates(x: [u8; 8], y: [u8; 8]) -> u8 {
    if x == y {
        return 0;
    }
    let differing: Vec<usize> = (0..8).filter(|&i| x[i] != y[i]).collect();
    let typo = match differing.as_slice() {
        [_] => true,
        [i, j] => *j == i + 1 && x[*i] == y[*j] && x[*j] == y[*i],
        _ => false,
    };
    if typo {
        return 1;
    }
    // yyyy mm dd: months at 4..6, days at 6..8.
    if x[..4] == y[..4] && x[4..6] == y[6..8] && x[6..8] == y[4..6] {
        return 2;
    }
    if x[..4] == y[..4] { 3 } else { 4 }
}

/// The best level over every pair of addresses; `None` when no pair shares a part to compare.
fn compare_addresses<'k>(
    a: impl Iterator<Item = AddressKey<'k>>,
    b: &(impl Iterator<Item = AddressKey<'k>> + Clone),
) -> Option<u8> {
    let mut found: Option<u8> = None;
    for x in a {
        for y in b.clone() {
            if let Some(l) = address_level(&x, &y) {
                if l == 0 {
                    return Some(0);
                }
                found = Some(found.map_or(l, |f| f.min(l)));
            }
        }
    }
    found
}

/// One pair of addresses; `None` when they have no part in common to compare.
fn address_level(x: &AddressKey<'_>, y: &AddressKey<'_>) -> Option<u8> {
    let street = x.line.zip(y.line).map(|(p, q)| banded(p, q, &[0.90]) <= 1);
    let postcode = x.postcode.zip(y.postcode).map(|(p, q)| one_off(p, q));
    let locality = x
        .locality
        .zip(y.locality)
        .map(|(p, q)| banded(p, q, &[0.88]) <= 1);
    if street.is_none() && postcode.is_none() && locality.is_none() {
        return None;
    }
    let same_street = street == Some(true);
    Some(if same_street && postcode == Some(0) {
        0
    } else if same_street
        && (postcode == Some(1) || locality == Some(true) || postcode.is_none())
        && locality != Some(false)
    {
        1
    } else if postcode == Some(0) {
        2
    } else if locality == Some(true) {
        3
    } else {
        4
    })
}

fn compare_external(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let mut found = None;
    for (sa, ia) in a.external_ids() {
        for (sb, ib) in b.external_ids().clone() {
            if sa == sb {
                if ia == ib {
                    return Some(0);
                }
                found = Some(1);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use proptest::prelude::*;

    use super::*;
    use crate::{AddressParts, Customer, CustomerBuilder};

    fn rec(b: CustomerBuilder) -> MatchRecord {
        MatchRecord::new(&b.build().unwrap())
    }

    fn named(given: &str, family: &str) -> MatchRecord {
        rec(Customer::builder().given_name(given).family_name(family))
    }

    fn level(c: &Comparison, a: &MatchRecord, b: &MatchRecord) -> Option<&'static str> {
        let l = c.compare(a, b);
        assert_eq!(l, c.compare(b, a), "{c:?} is not symmetric");
        l.map(|l| c.levels()[usize::from(l)])
    }

    #[test]
    fn given_name_levels() {
        let g = Comparison::GivenName;
        let ada = named("Ada", "Lovelace");
        assert_eq!(level(&g, &ada, &named("ADA", "x")), Some("exact"));
        assert_eq!(
            level(&g, &named("Bob", "Smith"), &named("Robert", "Smith")),
            Some("nickname")
        );
        assert_eq!(
            level(&g, &named("Smith", "John"), &named("John", "Smith")),
            Some("transposed with family name")
        );
        assert_eq!(
            level(&g, &named("Martha", "x"), &named("Marhta", "x")),
            Some("Jaro-Winkler >= 0.92")
        );
        assert_eq!(
            level(&g, &named("Tanya", "x"), &named("Tonya", "x")),
            Some("Jaro-Winkler >= 0.80")
        );
        assert_eq!(level(&g, &named("A", "x"), &ada), Some("initial"));
        assert_eq!(level(&g, &named("Zoe", "x"), &ada), Some("different"));
        assert_eq!(
            level(&g, &rec(Customer::builder().family_name("x")), &ada),
            None
        );
    }

    #[test]
    fn family_name_levels() {
        let f = Comparison::FamilyName;
        let smith = named("John", "Smith");
        assert_eq!(level(&f, &smith, &named("J", "SMITH")), Some("exact"));
        assert_eq!(
            level(&f, &named("Smith", "John"), &smith),
            Some("transposed with given name")
        );
        assert_eq!(
            level(&f, &named("a", "Shackleford"), &named("a", "Shackelford")),
            Some("Jaro-Winkler >= 0.92")
        );
        assert_eq!(
            level(&f, &named("a", "Catherine"), &named("a", "Kathryn")),
            Some("same sound (Double Metaphone)")
        );
        assert_eq!(
            level(&f, &named("a", "Jones"), &named("a", "Johnson")),
            Some("Jaro-Winkler >= 0.80")
        );
        assert_eq!(
            level(&f, &named("a", "Hardin"), &named("a", "Martinez")),
            Some("different")
        );
    }

    fn born(y: i32, m: u32, d: u32) -> MatchRecord {
        rec(Customer::builder()
            .name("x")
            .birth_date(NaiveDate::from_ymd_opt(y, m, d).unwrap()))
    }

    #[test]
    fn birth_date_levels() {
        let c = Comparison::BirthDate;
        let base = born(1971, 6, 24);
        assert_eq!(level(&c, &base, &born(1971, 6, 24)), Some("exact"));
        assert_eq!(level(&c, &base, &born(1971, 5, 24)), Some("one digit off"));
        assert_eq!(level(&c, &base, &born(1917, 6, 24)), Some("one digit off"));
        assert_eq!(
            level(&c, &born(1971, 6, 7), &born(1971, 7, 6)),
            Some("day and month swapped")
        );
        assert_eq!(level(&c, &base, &born(1971, 1, 2)), Some("same year"));
        assert_eq!(level(&c, &base, &born(1980, 1, 2)), Some("different"));
        assert_eq!(level(&c, &base, &named("x", "y")), None);
    }

    #[test]
    fn contact_levels_take_the_best_shared_value() {
        let email = Comparison::Email;
        let ada = rec(Customer::builder()
            .name("x")
            .email("ada@example.org")
            .email("a.lovelace@gmail.com"));
        let gmail = rec(Customer::builder().name("x").email("alovelace@gmail.com"));
        assert_eq!(level(&email, &ada, &gmail), Some("same address"));
        let other = rec(Customer::builder().name("x").email("ada@elsewhere.org"));
        assert_eq!(level(&email, &ada, &other), Some("different"));
        let typo = rec(Customer::builder().name("x").email("ads@example.org"));
        assert_eq!(level(&email, &ada, &typo), Some("one character off"));
        let phone = Comparison::Phone;
        let one = rec(Customer::builder().name("x").phone("+442079460018"));
        let two = rec(Customer::builder().name("x").phone("+442079460019"));
        assert_eq!(level(&phone, &one, &two), Some("one character off"));
        assert_eq!(level(&phone, &one, &ada), None);
    }

    #[test]
    fn partial_addresses_compare_part_by_part() {
        let at = |line: &str, city: &str, pc: &str| {
            rec(Customer::builder().name("x").address(AddressParts {
                lines: vec![line.into()],
                locality: Some(city.into()),
                postcode: Some(pc.into()),
                country: Some("AU".into()),
                ..AddressParts::default()
            }))
        };
        let address = Comparison::Address;
        let a = at("6 Tullaroop Street", "St James", "4011");
        let same = at("6 tullaroop st.", "St James", "4011");
        assert_eq!(level(&address, &a, &same), Some("same street and postcode"));
        let typo = at("6 tullaroop st.", "St. James", "4012");
        assert_eq!(level(&address, &a, &typo), Some("same street nearby"));
        let neighbour = at("12 Other Road", "St James", "4011");
        assert_eq!(level(&address, &a, &neighbour), Some("same postcode"));
        let town = at("12 Other Road", "St James", "4012");
        assert_eq!(level(&address, &a, &town), Some("same locality"));
        let far = at("Flat 2, 99 Other Road", "Perth", "6000");
        assert_eq!(level(&address, &a, &far), Some("different"));
        // Same street name in another town is a different address.
        let elsewhere = at("6 Tullaroop Street", "Perth", "6000");
        assert_eq!(level(&address, &a, &elsewhere), Some("different"));
        let city_only = rec(Customer::builder().name("x").address(AddressParts {
            locality: Some("st james".into()),
            ..AddressParts::default()
        }));
        assert_eq!(level(&address, &a, &city_only), Some("same locality"));
        let postcode_only = rec(Customer::builder().name("x").address(AddressParts {
            postcode: Some("9999".into()),
            country: Some("AU".into()),
            ..AddressParts::default()
        }));
        assert_eq!(level(&address, &city_only, &postcode_only), None);
    }

    #[test]
    fn external_ids_are_missing_without_a_shared_system() {
        let ids = Comparison::ExternalId;
        let shop1 = rec(Customer::builder().name("x").external_id("shop", "1"));
        let shop1_again = rec(Customer::builder().name("x").external_id("SHOP", "1"));
        let shop2 = rec(Customer::builder().name("x").external_id("shop", "2"));
        let billing1 = rec(Customer::builder().name("x").external_id("billing", "1"));
        assert_eq!(level(&ids, &shop1, &shop1_again), Some("same id"));
        assert_eq!(
            level(&ids, &shop1, &shop2),
            Some("different id in the same system")
        );
        assert_eq!(level(&ids, &shop1, &billing1), None);
    }

    #[test]
    fn attributes_compare_by_name() {
        let c = Comparison::Attribute("ssn".into());
        let a = rec(Customer::builder().name("x").attribute("ssn", "1234567"));
        let b = rec(Customer::builder().name("x").attribute("ssn", "1243567"));
        assert_eq!(level(&c, &a, &b), Some("one character off"));
        assert_eq!(level(&c, &a, &named("x", "y")), None);
    }

    #[test]
    fn one_edit_counts_adjacent_swaps() {
        assert!(within_one_edit("4011", "4011"));
        assert!(within_one_edit("4011", "4012"));
        assert!(within_one_edit("4011", "401"));
        assert!(within_one_edit("4011", "40011"));
        assert!(within_one_edit("4011", "4101"));
        assert!(!within_one_edit("4011", "1104"));
        assert!(!within_one_edit("4011", "4022"));
        assert!(within_one_edit("", "a"));
        assert!(!within_one_edit("", "ab"));
    }

    fn any_record() -> impl Strategy<Value = MatchRecord> {
        let name = prop::option::of("[a-cA-C]{1,6}");
        let date = prop::option::of((1900i32..2010, 1u32..13, 1u32..29));
        (name.clone(), name, date, prop::option::of("[0-9]{4}")).prop_map(|(g, f, d, pc)| {
            let mut b = Customer::builder().name("x");
            if let Some(g) = g {
                b = b.given_name(g);
            }
            if let Some(f) = f {
                b = b.family_name(f);
            }
            if let Some((y, m, d)) = d {
                b = b.birth_date(NaiveDate::from_ymd_opt(y, m, d).unwrap());
            }
            if let Some(pc) = pc {
                b = b.address(AddressParts {
                    postcode: Some(pc),
                    country: Some("AU".into()),
                    ..AddressParts::default()
                });
            }
            rec(b)
        })
    }

    proptest! {
        #[test]
        fn comparisons_are_symmetric_and_in_range(a in any_record(), b in any_record()) {
            for c in Comparison::defaults() {
                let l = c.compare(&a, &b);
                prop_assert_eq!(l, c.compare(&b, &a));
                if let Some(l) = l {
                    prop_assert!(usize::from(l) < c.levels().len());
                }
                // A record never disagrees with itself.
                let own = c.compare(&a, &a).map(usize::from);
                prop_assert!(own.is_none_or(|l| l + 1 < c.levels().len()));
            }
        }
    }
}
