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
/// ```
/// use customerdb::Customer;
/// use customerdb::dedup::MatchRecord;
/// let c = Customer::builder().name("Dr. Ada Lovelace").email("A.da@GMail.com").build()?;
/// let r = MatchRecord::new(&c);
/// assert_eq!((r.given(), r.family()), (Some("ada"), Some("lovelace")));
/// assert_eq!(r.emails(), ["ada@gmail.com"]);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRecord {
    given: Option<String>,
    middle: Option<String>,
    family: Option<String>,
    family_phonetic: Vec<String>,
    birth_date: Option<NaiveDate>,
    emails: Vec<String>,
    phones: Vec<String>,
    postcodes: Vec<String>,
    localities: Vec<String>,
    lines: Vec<String>,
    addresses: Vec<AddressKey>,
    countries: Vec<CountryCode>,
    external_ids: Vec<(String, String)>,
    attributes: Vec<(String, Vec<String>)>,
}

impl MatchRecord {
    /// The comparison view of `c`.
    pub fn new(c: &Customer) -> MatchRecord {
        let name = c.name.as_ref();
        let addresses = &c.addresses;
        let mut r = MatchRecord {
            given: name.and_then(|n| n.given_key()).map(str::to_owned),
            middle: name
                .and_then(|n| n.middle())
                .map(name_key)
                .filter(|k| !k.is_empty()),
            family: name.and_then(|n| n.family_key()).map(str::to_owned),
            family_phonetic: name
                .map(|n| n.family_phonetic().to_vec())
                .unwrap_or_default(),
            birth_date: c.birth_date,
            emails: c.emails.iter().map(|e| e.match_key().to_owned()).collect(),
            phones: c.phones.iter().map(|p| p.e164().to_owned()).collect(),
            postcodes: addresses
                .iter()
                .filter_map(|a| a.postcode_key().map(str::to_owned))
                .collect(),
            localities: addresses
                .iter()
                .filter_map(|a| a.locality_key().map(str::to_owned))
                .collect(),
            lines: addresses
                .iter()
                .map(|a| line_key(a.lines()))
                .filter(|k| !k.is_empty())
                .collect(),
            addresses: addresses
                .iter()
                .map(|a| AddressKey {
                    line: Some(line_key(a.lines())).filter(|k| !k.is_empty()),
                    locality: a.locality_key().map(str::to_owned),
                    postcode: a.postcode_key().map(str::to_owned),
                })
                .filter(|k| k.line.is_some() || k.locality.is_some() || k.postcode.is_some())
                .collect(),
            countries: addresses
                .iter()
                .filter_map(crate::Address::country)
                .collect(),
            external_ids: c
                .external_ids
                .iter()
                .map(|x| (x.system().to_owned(), x.id().to_owned()))
                .collect(),
            attributes: c
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), attribute_keys(v)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        };
        for list in [&mut r.postcodes, &mut r.localities, &mut r.lines] {
            dedup_in_order(list);
        }
        r.countries.dedup();
        r
    }

    /// The given name's key (`ada`).
    pub fn given(&self) -> Option<&str> {
        self.given.as_deref()
    }

    /// The first letter of the given name's key.
    pub fn given_initial(&self) -> Option<char> {
        self.given.as_deref().and_then(|g| g.chars().next())
    }

    /// The middle names' key.
    pub fn middle(&self) -> Option<&str> {
        self.middle.as_deref()
    }

    /// The family name's key (`lovelace`, `van der berg`).
    pub fn family(&self) -> Option<&str> {
        self.family.as_deref()
    }

    /// Double Metaphone codes of the family name, primary first.
    pub fn family_phonetic(&self) -> &[String] {
        &self.family_phonetic
    }

    /// The date of birth.
    pub fn birth_date(&self) -> Option<NaiveDate> {
        self.birth_date
    }

    /// Email match keys, primary first.
    pub fn emails(&self) -> &[String] {
        &self.emails
    }

    /// Phones in E.164, primary first.
    pub fn phones(&self) -> &[String] {
        &self.phones
    }

    /// Postcode keys of every address (upper case, no spaces), without repeats.
    pub fn postcodes(&self) -> &[String] {
        &self.postcodes
    }

    /// Locality keys of every address, without repeats.
    pub fn localities(&self) -> &[String] {
        &self.localities
    }

    /// One key per address for its street lines: folded, punctuation dropped, lines joined by
    /// a space (`10 downing street`).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Each address's street, locality and postcode keys, kept together so that parts of
    /// one address are compared with parts of one address.
    pub(crate) fn address_keys(&self) -> &[AddressKey] {
        &self.addresses
    }

    /// Countries of the addresses, without adjacent repeats.
    pub fn countries(&self) -> &[CountryCode] {
        &self.countries
    }

    /// External ids as `(system, id)`.
    pub fn external_ids(&self) -> &[(String, String)] {
        &self.external_ids
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

/// The comparison keys of one address; at least one part is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddressKey {
    pub line: Option<String>,
    pub locality: Option<String>,
    pub postcode: Option<String>,
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
        assert_eq!(r.emails(), ["joseobrien@gmail.com"]);
        assert_eq!(r.phones(), ["+442079460018"]);
        assert_eq!(r.postcodes(), ["SW1A2AA"]);
        assert_eq!(r.localities(), ["london"]);
        assert_eq!(r.lines(), ["10 downing st"]);
        assert_eq!(r.countries().len(), 1);
        assert_eq!(r.external_ids(), [("shop".to_owned(), "A-1".to_owned())]);
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
