//! The comparison view of a customer: every value matching looks at, normalised once.

use chrono::{Datelike, NaiveDate};

use crate::model::{AttributeValue, CountryCode, Customer};
use crate::normalize::{fold_key, name_key};

/// A customer reduced to the normalised values that blocking and comparison read.
///
/// Built once per customer ([`MatchRecord::new`]) and reused for every pair it is in, so no
/// comparison folds or parses text again. Name parts are [`name_key`]s, places
/// [`fold_key`]s, emails their provider-aware match keys, phones E.164. Empty values are
/// dropped, so "missing" is always an empty list or `None`.
///
/// Compact by design: every text value lives in one buffer per record, so a record is two
/// heap blocks rather than one per value. Batch matching holds a million of them and compares
/// random pairs of them (to learn `u`), where the cost is in cache misses, not in arithmetic.
///
/// ```
/// use customerdb::Customer;
/// use customerdb::dedup::MatchRecord;
/// let c = Customer::builder().name("Dr. Ada Lovelace").email("A.da@GMail.com").build()?;
/// let r = MatchRecord::new(&c);
/// assert_eq!((r.given(), r.family()), (Some("ada"), Some("lovelace")));
/// assert_eq!(r.emails().collect::<Vec<_>>(), ["ada@gmail.com"]);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRecord {
    /// Every text value, back to back, list by list in the order of the `List` constants.
    text: Box<str>,
    /// The end offset in `text` of each value, in the same order.
    ends: Box<[u32]>,
    /// How many values each list has.
    counts: [u16; LISTS],
    birth_date: Option<NaiveDate>,
    /// The given name's id in the nickname list, if it has one.
    nickname: Option<u32>,
    attributes: Vec<(String, Vec<String>)>,
}

// The lists of `MatchRecord::text`, in order. An address is three values (street line,
// locality, postcode; empty when absent), an external id two (system, id).
const GIVEN: usize = 0;
const MIDDLE: usize = 1;
const FAMILY: usize = 2;
const PHONETIC: usize = 3;
const EMAILS: usize = 4;
const PHONES: usize = 5;
const POSTCODES: usize = 6;
const LOCALITIES: usize = 7;
const LINES: usize = 8;
const ADDRESSES: usize = 9;
const COUNTRIES: usize = 10;
const EXTERNAL_IDS: usize = 11;
const LISTS: usize = 12;

/// Builds the text buffer of a record, list by list.
struct Packer {
    text: String,
    ends: Vec<u32>,
    counts: [u16; LISTS],
}

impl Packer {
    /// Appends `values` to list `list`, skipping empty values unless `keep_empty`, repeats
    /// unless `keep_repeats`; a value that would overflow the buffer's offsets is dropped.
    fn push<'v>(&mut self, list: usize, values: impl IntoIterator<Item = &'v str>, keep: bool) {
        for v in values {
            if !keep && (v.is_empty() || self.list(list).any(|have| have == v)) {
                continue;
            }
            let (Some(count), Ok(end)) = (
                self.counts[list].checked_add(1),
                u32::try_from(self.text.len() + v.len()),
            ) else {
                continue;
            };
            self.text.push_str(v);
            self.ends.push(end);
            self.counts[list] = count;
        }
    }

    fn list(&self, list: usize) -> Values<'_> {
        Values::of(&self.text, &self.ends, &self.counts, list)
    }
}

impl MatchRecord {
    /// The comparison view of `c`.
    pub fn new(c: &Customer) -> MatchRecord {
        MatchRecord::build(c, true)
    }

    /// The view without street lines, which no blocking rule reads: enough to tell whether
    /// two records share a blocking key, without folding every street (Unicode normalisation
    /// is the dearest part of building a record).
    pub(crate) fn for_blocking(c: &Customer) -> MatchRecord {
        MatchRecord::build(c, false)
    }

    fn build(c: &Customer, with_lines: bool) -> MatchRecord {
        let name = c.name.as_ref();
        let addresses = &c.addresses;
        let lines: Vec<String> = addresses
            .iter()
            .map(|a| {
                if with_lines {
                    line_key(a.lines())
                } else {
                    String::new()
                }
            })
            .collect();
        let middle = name.and_then(|n| n.middle()).map(name_key);
        let mut p = Packer {
            text: String::new(),
            ends: Vec::new(),
            counts: [0; LISTS],
        };
        p.push(GIVEN, name.and_then(|n| n.given_key()), false);
        p.push(MIDDLE, middle.as_deref(), false);
        p.push(FAMILY, name.and_then(|n| n.family_key()), false);
        let phonetic = name.map_or(&[][..], |n| n.family_phonetic());
        p.push(PHONETIC, phonetic.iter().map(String::as_str), true);
        p.push(EMAILS, c.emails.iter().map(crate::Email::match_key), true);
        p.push(PHONES, c.phones.iter().map(crate::Phone::e164), true);
        p.push(
            POSTCODES,
            addresses.iter().filter_map(|a| a.postcode_key()),
            false,
        );
        p.push(
            LOCALITIES,
            addresses.iter().filter_map(|a| a.locality_key()),
            false,
        );
        p.push(LINES, lines.iter().map(String::as_str), false);
        for (a, line) in addresses.iter().zip(&lines) {
            let parts = [
                line.as_str(),
                a.locality_key().unwrap_or(""),
                a.postcode_key().unwrap_or(""),
            ];
            if parts.iter().any(|p| !p.is_empty()) {
                p.push(ADDRESSES, parts, true);
            }
        }
        let mut countries: Vec<CountryCode> = addresses
            .iter()
            .filter_map(crate::Address::country)
            .collect();
        countries.dedup();
        p.push(COUNTRIES, countries.iter().map(CountryCode::as_str), true);
        for x in &c.external_ids {
            p.push(EXTERNAL_IDS, [x.system(), x.id()], true);
        }
        let given = name.and_then(|n| n.given_key());
        MatchRecord {
            text: p.text.into_boxed_str(),
            ends: p.ends.into_boxed_slice(),
            counts: p.counts,
            birth_date: c.birth_date,
            nickname: given.and_then(super::nickname::nickname_id),
            attributes: c
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), attribute_keys(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        }
    }

    fn list(&self, list: usize) -> Values<'_> {
        Values::of(&self.text, &self.ends, &self.counts, list)
    }

    fn one(&self, list: usize) -> Option<&str> {
        self.list(list).next()
    }

    /// The given name's key (`ada`).
    pub fn given(&self) -> Option<&str> {
        self.one(GIVEN)
    }

    /// The first letter of the given name's key.
    pub fn given_initial(&self) -> Option<char> {
        self.given().and_then(|g| g.chars().next())
    }

    /// The given name's id in the nickname list.
    pub(crate) fn nickname(&self) -> Option<u32> {
        self.nickname
    }

    /// The middle names' key.
    pub fn middle(&self) -> Option<&str> {
        self.one(MIDDLE)
    }

    /// The family name's key (`lovelace`, `van der berg`).
    pub fn family(&self) -> Option<&str> {
        self.one(FAMILY)
    }

    /// Double Metaphone codes of the family name, primary first.
    pub fn family_phonetic(&self) -> Values<'_> {
        self.list(PHONETIC)
    }

    /// The date of birth.
    pub fn birth_date(&self) -> Option<NaiveDate> {
        self.birth_date
    }

    /// Email match keys, primary first.
    pub fn emails(&self) -> Values<'_> {
        self.list(EMAILS)
    }

    /// Phones in E.164, primary first.
    pub fn phones(&self) -> Values<'_> {
        self.list(PHONES)
    }

    /// Postcode keys of every address (upper case, no spaces), without repeats.
    pub fn postcodes(&self) -> Values<'_> {
        self.list(POSTCODES)
    }

    /// Locality keys of every address, without repeats.
    pub fn localities(&self) -> Values<'_> {
        self.list(LOCALITIES)
    }

    /// One key per address for its street lines: folded, punctuation dropped, lines joined by
    /// a space (`10 downing street`), without repeats.
    pub fn lines(&self) -> Values<'_> {
        self.list(LINES)
    }

    /// Each address's street, locality and postcode keys, kept together so that parts of
    /// one address are compared with parts of one address.
    pub(crate) fn address_keys(&self) -> impl Iterator<Item = AddressKey<'_>> + Clone {
        let mut values = self.list(ADDRESSES);
        std::iter::from_fn(move || {
            let (line, locality, postcode) = (values.next()?, values.next()?, values.next()?);
            let part = |v| Some(v).filter(|v: &&str| !v.is_empty());
            Some(AddressKey {
                line: part(line),
                locality: part(locality),
                postcode: part(postcode),
            })
        })
    }

    /// Countries of the addresses, without adjacent repeats.
    pub fn countries(&self) -> impl Iterator<Item = CountryCode> + '_ {
        self.list(COUNTRIES)
            .filter_map(|c| CountryCode::parse(c).ok())
    }

    /// External ids as `(system, id)`.
    pub fn external_ids(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        let mut values = self.list(EXTERNAL_IDS);
        std::iter::from_fn(move || Some((values.next()?, values.next()?)))
    }

    /// The comparison keys of custom attribute `name`: one for a scalar, one per element
    /// for a text list; empty if the customer has none.
    pub fn attribute(&self, name: &str) -> &[String] {
        self.attributes
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .and_then(|i| self.attributes.get(i))
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The date of birth as `yyyymmdd` digits, for digit-level comparison.
    pub(crate) fn birth_digits(&self) -> Option<[u8; 8]> {
        let d = self.birth_date?;
        let year = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
        let mut out = [b'0'; 8];
        let mut v = year * 10_000 + d.month() * 100 + d.day();
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        Some(out)
    }
}

/// The values of one list of a [`MatchRecord`] (its emails, its phones, ...), in order.
#[derive(Debug, Clone)]
pub struct Values<'r> {
    text: &'r str,
    /// End offsets of the values still to come.
    ends: &'r [u32],
    /// Where the next value starts.
    start: usize,
}

impl<'r> Values<'r> {
    fn of(text: &'r str, ends: &'r [u32], counts: &[u16; LISTS], list: usize) -> Values<'r> {
        let before: usize = counts.iter().take(list).map(|&c| usize::from(c)).sum();
        let len = counts.get(list).map_or(0, |&c| usize::from(c));
        let start = before
            .checked_sub(1)
            .and_then(|i| ends.get(i))
            .map_or(0, |&e| e as usize);
        Values {
            text,
            ends: ends.get(before..before + len).unwrap_or(&[]),
            start,
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<'r> Iterator for Values<'r> {
    type Item = &'r str;

    fn next(&mut self) -> Option<&'r str> {
        let (&end, rest) = self.ends.split_first()?;
        let value = self.text.get(self.start..end as usize).unwrap_or("");
        self.start = end as usize;
        self.ends = rest;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl ExactSizeIterator for Values<'_> {}

/// The comparison keys of one address; at least one part is present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AddressKey<'r> {
    pub line: Option<&'r str>,
    pub locality: Option<&'r str>,
    pub postcode: Option<&'r str>,
}

impl From<&Customer> for MatchRecord {
    fn from(c: &Customer) -> Self {
        MatchRecord::new(c)
    }
}

/// Street lines as one key: folded, every run of non-alphanumerics one space.
fn line_key(lines: &[String]) -> String {
    let folded = fold_key(&lines.join(" "));
    let mut out = String::with_capacity(folded.len());
    for word in folded.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The comparison keys of an attribute value: text folded, other types in a canonical form.
fn attribute_keys(v: &AttributeValue) -> Vec<String> {
    let keys = match v {
        AttributeValue::Text(s) => vec![fold_key(s)],
        AttributeValue::Integer(i) => vec![i.to_string()],
        AttributeValue::Decimal(d) => vec![d.normalize().to_string()],
        AttributeValue::Boolean(b) => vec![b.to_string()],
        AttributeValue::Date(d) => vec![d.to_string()],
        AttributeValue::Timestamp(t) => vec![t.to_rfc3339()],
        AttributeValue::TextList(items) => items.iter().map(|s| fold_key(s)).collect(),
    };
    let mut keys: Vec<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
    dedup_in_order(&mut keys);
    keys
}

/// Removes repeats, keeping the first of each (lists are a handful of values).
fn dedup_in_order(list: &mut Vec<String>) {
    let mut i = 0;
    while i < list.len() {
        if list[..i].contains(&list[i]) {
            list.remove(i);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AddressParts;

    fn all(v: Values<'_>) -> Vec<&str> {
        v.collect()
    }

    #[test]
    fn keys_are_normalised_once() {
        let c = Customer::builder()
            .name("José  O'Brien-Smith")
            .email("Jose.OBrien+news@googlemail.com")
            .phone("+44 20 7946 0018")
            .address(AddressParts {
                lines: vec!["10, Downing St.".into()],
                locality: Some("  LONDON ".into()),
                postcode: Some("sw1a 2aa".into()),
                country: Some("gb".into()),
                ..AddressParts::default()
            })
            .birth_date(NaiveDate::from_ymd_opt(1971, 6, 24).unwrap())
            .external_id("Shop", "A-1")
            .attribute("tier", "Gold")
            .build()
            .unwrap();
        let r = MatchRecord::new(&c);
        assert_eq!(r.given(), Some("jose"));
        assert_eq!(r.given_initial(), Some('j'));
        assert_eq!(r.family(), Some("obrien smith"));
        assert!(!r.family_phonetic().is_empty());
        assert_eq!(all(r.emails()), ["joseobrien@gmail.com"]);
        assert_eq!(all(r.phones()), ["+442079460018"]);
        assert_eq!(all(r.postcodes()), ["SW1A2AA"]);
        assert_eq!(all(r.localities()), ["london"]);
        assert_eq!(all(r.lines()), ["10 downing st"]);
        assert_eq!(
            r.countries().map(|c| c.to_string()).collect::<Vec<_>>(),
            ["GB"]
        );
        assert_eq!(r.external_ids().collect::<Vec<_>>(), [("shop", "A-1")]);
        assert_eq!(
            r.address_keys().collect::<Vec<_>>(),
            [AddressKey {
                line: Some("10 downing st"),
                locality: Some("london"),
                postcode: Some("SW1A2AA")
            }]
        );
        assert_eq!(r.attribute("tier"), ["gold"]);
        assert!(r.attribute("other").is_empty());
        assert_eq!(r.birth_digits(), Some(*b"19710624"));
    }

    #[test]
    fn an_empty_customer_has_no_values() {
        let r = MatchRecord::new(&Customer::default());
        assert_eq!(r, MatchRecord::default());
        assert_eq!(r.birth_digits(), None);
    }
}
