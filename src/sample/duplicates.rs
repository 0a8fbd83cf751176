//! Customers entered more than once, with the slips people make, for measuring duplicate
//! detection on data whose answer is known.
//!
//! [`Duplicates`] wraps a [`Generator`]: each generated person is one *entity*; about one in
//! five is entered again one to three times (as in the reference synthetic data set, where
//! 20% of entities have two to four records), each copy with one to three slips drawn from
//! what the reference data shows: a typo in a name, a street, a locality or a postcode, a
//! given name cut to its initial, given and family name swapped, an email's case changed or a
//! character mistyped, a phone written without its spacing or with one digit wrong, a birth
//! date with a digit wrong or day and month swapped, and fields left blank. Copies follow
//! their original in the stream.

use chrono::{Datelike, NaiveDate};

use super::{Generator, SampleCustomer, SplitMix64};

/// One record of a [`Duplicates`] stream: a person's values as typed this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRecord {
    /// The person: records with the same entity are the same person.
    pub entity: u64,
    /// The values as typed; an empty text field (email, phone, street, locality, postcode,
    /// external id) was left blank. Copies have no external id.
    pub customer: SampleCustomer,
    /// Whether the birth date was left blank.
    pub no_birth_date: bool,
}

impl SampleRecord {
    /// A builder with the fields that were filled in (blank ones left out).
    pub fn to_builder(&self) -> crate::CustomerBuilder {
        self.customer.builder_of(!self.no_birth_date)
    }

    /// The same person typed in again: a copy with one to three slips (see the module docs).
    #[must_use]
    pub fn retype(&self, rng: &mut SplitMix64) -> SampleRecord {
        let mut copy = self.clone();
        // A new entry has no id of the original's, or one of its own.
        copy.customer.external_id.1.clear();
        let slips = 1 + rng.weighted_index(&[55, 30, 15]);
        for _ in 0..slips {
            copy.slip(rng);
        }
        copy
    }

    fn slip(&mut self, rng: &mut SplitMix64) {
        let c = &mut self.customer;
        match rng.weighted_index(&[14, 6, 14, 6, 12, 12, 8, 8, 6, 14]) {
            0 => c.given_name = typo(&c.given_name, rng),
            1 => {
                if let Some(first) = c.given_name.chars().next() {
                    c.given_name = format!("{first}.");
                }
            }
            2 => c.family_name = typo(&c.family_name, rng),
            3 => std::mem::swap(&mut c.given_name, &mut c.family_name),
            4 => {
                c.email = match rng.below(3) {
                    0 => String::new(),
                    1 => upper_first(&c.email),
                    _ => typo(&c.email, rng),
                }
            }
            5 => {
                c.phone = match rng.below(3) {
                    0 => String::new(),
                    1 => c.phone.chars().filter(|ch| !ch.is_whitespace()).collect(),
                    _ => digit_slip(&c.phone, rng),
                }
            }
            6 => {
                c.street = if rng.chance(400) {
                    String::new()
                } else {
                    typo(&c.street, rng)
                }
            }
            7 => c.postcode = swap_adjacent(&c.postcode, rng),
            8 => c.locality = typo(&c.locality, rng),
            _ => match rng.below(3) {
                0 => self.no_birth_date = true,
                1 => c.birth_date = date_digit_slip(c.birth_date, rng),
                _ => {
                    let d = c.birth_date;
                    if let Some(swapped) = NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()) {
                        c.birth_date = swapped;
                    }
                }
            },
        }
    }
}

/// An endless stream of [`SampleRecord`]s: every person of a [`Generator`], and for about one
/// in five, one to three copies typed in again right after it.
///
/// ```
/// use customerdb::sample::Duplicates;
/// let records: Vec<_> = Duplicates::new(7).take(1000).collect();
/// let entities: std::collections::HashSet<u64> = records.iter().map(|r| r.entity).collect();
/// assert!(entities.len() < 900 && entities.len() > 600);
/// assert_eq!(records, Duplicates::new(7).take(1000).collect::<Vec<_>>());
/// ```
#[derive(Debug, Clone)]
pub struct Duplicates {
    people: Generator,
    rng: SplitMix64,
    entity: u64,
    /// The current person and how many copies of it are still to come.
    current: Option<(SampleRecord, usize)>,
}

impl Duplicates {
    /// A stream whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Duplicates {
        Duplicates {
            people: Generator::new(seed),
            rng: SplitMix64::new(seed ^ 0xD0_D0_D0_D0),
            entity: 0,
            current: None,
        }
    }
}

impl Iterator for Duplicates {
    type Item = SampleRecord;

    fn next(&mut self) -> Option<SampleRecord> {
        if let Some((original, left)) = &mut self.current {
            if *left > 0 {
                *left -= 1;
                return Some(original.retype(&mut self.rng));
            }
        }
        let record = SampleRecord {
            entity: self.entity,
            customer: self.people.next()?,
            no_birth_date: false,
        };
        self.entity += 1;
        let copies = if self.rng.chance(200) {
            1 + self.rng.below(3) as usize
        } else {
            0
        };
        self.current = Some((record.clone(), copies));
        Some(record)
    }
}

/// One character substituted, deleted, inserted or swapped with its neighbour.
fn typo(s: &str, rng: &mut SplitMix64) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 2 {
        return s.to_owned();
    }
    let at = rng.below(chars.len() as u64) as usize;
    let letter = char::from(b'a' + rng.below(26) as u8);
    match rng.below(4) {
        0 => chars[at] = letter,
        1 => {
            chars.remove(at);
        }
        2 => chars.insert(at, letter),
        _ => {
            let at = at.min(chars.len() - 2);
            chars.swap(at, at + 1);
        }
    }
    chars.into_iter().collect()
}

fn swap_adjacent(s: &str, rng: &mut SplitMix64) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() >= 2 {
        let at = rng.below(chars.len() as u64 - 1) as usize;
        chars.swap(at, at + 1);
    }
    chars.into_iter().collect()
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// One digit replaced by another.
fn digit_slip(s: &str, rng: &mut SplitMix64) -> String {
    let digits: Vec<usize> = s
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    let Some(&at) = digits.get(rng.below(digits.len() as u64) as usize) else {
        return s.to_owned();
    };
    let new = char::from(b'0' + rng.below(10) as u8);
    let mut out = s.to_owned();
    out.replace_range(at..=at, new.encode_utf8(&mut [0; 4]));
    out
}

/// The date with one digit of its day or month changed, when that is still a date.
fn date_digit_slip(d: NaiveDate, rng: &mut SplitMix64) -> NaiveDate {
    let (day, month) = (d.day(), d.month());
    let candidate = match rng.below(3) {
        0 => NaiveDate::from_ymd_opt(d.year(), month, (day / 10) * 10 + (day + 1) % 10),
        1 => NaiveDate::from_ymd_opt(d.year(), month, (day % 10) + 10 * ((day / 10 + 1) % 3)),
        _ => NaiveDate::from_ymd_opt(
            d.year() + if d.year() % 10 == 9 { -1 } else { 1 },
            month,
            day,
        ),
    };
    candidate.filter(|c| *c != d).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_their_entity_and_differ_from_it() {
        let records: Vec<SampleRecord> = Duplicates::new(3).take(2000).collect();
        let mut copies = 0;
        for pair in records.windows(2) {
            if pair[0].entity == pair[1].entity {
                copies += 1;
                assert_ne!(pair[1], records[0]);
            }
        }
        // About 0.2 × 2 copies per person.
        assert!((300..800).contains(&copies), "{copies}");
        for r in &records {
            let (customer, errors) = r.to_builder().build_lenient();
            assert!(customer.name.is_some(), "{r:?}: {errors:?}");
        }
    }
}
