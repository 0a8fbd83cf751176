//! The numbering-plan check of a parsed phone number: which region's plan it belongs to and
//! what type of number it is, read from libphonenumber's metadata (as shipped by the
//! `phonenumber` crate) but matched with our own compiled patterns.
//!
//! Why not the crate's own `number_type` and `is_valid`: every pattern match there goes
//! through one process-wide `Mutex` around a cache keyed by the pattern's text (a `SipHash` of
//! a pattern up to a few hundred bytes, then an LRU update), and runs an unanchored search
//! whose match must then start at 0. Classifying one number takes a dozen such matches, which
//! made the check about half of standardising a customer and serialised parallel imports on
//! that lock. Here each region's patterns are compiled once, anchored, into a table keyed by
//! the region's address in the (static) metadata; a lookup is one read lock and a hash of a
//! pointer.
//!
//! Semantics follow libphonenumber: a national number fits a descriptor when its length is one
//! of the descriptor's possible lengths and the *whole* number matches its pattern (the crate
//! accepts a match of any prefix, so `1234567` would fit a pattern `\d{4}` of possible length
//! 7); a region's leading-digits pattern must match at the start.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use phonenumber::metadata::{DATABASE, Descriptor, Descriptors, Metadata};
use phonenumber::{Type, country::Id};
use regex::{Regex, RegexBuilder};

/// The descriptors tested before fixed line and mobile, in libphonenumber's order, with the
/// type each one means.
const SPECIAL: [(DescriptorOf, Type); 8] = [
    (Descriptors::premium_rate, Type::PremiumRate),
    (Descriptors::toll_free, Type::TollFree),
    (Descriptors::shared_cost, Type::SharedCost),
    (Descriptors::voip, Type::Voip),
    (Descriptors::personal_number, Type::PersonalNumber),
    (Descriptors::pager, Type::Pager),
    (Descriptors::uan, Type::Uan),
    (Descriptors::voicemail, Type::Voicemail),
];

/// Reads one descriptor of a region's plan.
type DescriptorOf = fn(&Descriptors) -> Option<&Descriptor>;

/// A descriptor's pattern, compiled to match a whole national number.
struct Pattern {
    /// `^(?:pattern)$`; `None` if it did not compile, when the crate's own regex decides.
    own: Option<Regex>,
    /// The descriptor, for its possible lengths and the fallback.
    descriptor: &'static Descriptor,
}

impl Pattern {
    fn new(descriptor: &'static Descriptor) -> Pattern {
        let source = descriptor.national_number().as_str();
        Pattern {
            own: compile(&format!("^(?:{source}\n)$")),
            descriptor,
        }
    }

    fn fits(&self, national: &str) -> bool {
        let lengths = self.descriptor.possible_length();
        if !lengths.is_empty()
            && !u16::try_from(national.len()).is_ok_and(|len| lengths.contains(&len))
        {
            return false;
        }
        match &self.own {
            Some(re) => re.is_match(national),
            None => self
                .descriptor
                .national_number()
                .find(national)
                .is_some_and(|m| m.start() == 0 && m.end() == national.len()),
        }
    }
}

/// One region's compiled patterns.
struct Region {
    general: Pattern,
    special: Vec<(Pattern, Type)>,
    fixed_line: Option<Pattern>,
    mobile: Option<Pattern>,
    /// Fixed-line and mobile numbers share one pattern, so either is both.
    same_fixed_and_mobile: bool,
    /// `^(?:leading digits)`, for regions that share a country code.
    leading: Option<Regex>,
    /// `^(?:international prefix)`, the digits dialled before a country code.
    idd: Option<Regex>,
}

impl Region {
    fn compile(meta: &'static Metadata) -> Region {
        let d = meta.descriptors();
        Region {
            general: Pattern::new(d.general()),
            special: SPECIAL
                .iter()
                .filter_map(|(get, t)| get(d).map(|d| (Pattern::new(d), *t)))
                .collect(),
            fixed_line: d.fixed_line().map(Pattern::new),
            mobile: d.mobile().map(Pattern::new),
            same_fixed_and_mobile: source_of(d.fixed_line()) == source_of(d.mobile()),
            leading: meta
                .leading_digits()
                .and_then(|re| compile(&format!("^(?:{}\n)", re.as_str()))),
            idd: meta
                .international_prefix()
                .and_then(|re| compile(&format!("^(?:{}\n)", re.as_str()))),
        }
    }

    /// libphonenumber's type of `national` (without leading zeros) in this region's plan.
    fn number_type(&self, national: &str) -> Type {
        if !self.general.fits(national) {
            return Type::Unknown;
        }
        if let Some((_, t)) = self.special.iter().find(|(p, _)| p.fits(national)) {
            return *t;
        }
        let fits = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| p.fits(national));
        if fits(&self.fixed_line) {
            return if self.same_fixed_and_mobile || fits(&self.mobile) {
                Type::FixedLineOrMobile
            } else {
                Type::FixedLine
            };
        }
        if !self.same_fixed_and_mobile && fits(&self.mobile) {
            return Type::Mobile;
        }
        Type::Unknown
    }

    fn leads(&self, meta: &Metadata, national: &str) -> Option<bool> {
        match (&self.leading, meta.leading_digits()) {
            (Some(re), _) => Some(re.is_match(national)),
            (None, Some(re)) => Some(re.find(national).is_some_and(|m| m.start() == 0)),
            (None, None) => None,
        }
    }
}

/// Compiles a metadata pattern as the crate does: whitespace in it is layout, not text.
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// A descriptor's pattern text.
fn source_of(d: Option<&Descriptor>) -> Option<&str> {
    d.map(|d| d.national_number().as_str())
}

/// Hashes a pointer: the keys are addresses of distinct metadata entries.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Compiled = HashMap<usize, Arc<Region>, BuildHasherDefault<AddressHasher>>;

static COMPILED: LazyLock<RwLock<Compiled>> = LazyLock::new(RwLock::default);

/// The compiled patterns of `meta`, compiled on first use.
fn region(meta: &'static Metadata) -> Arc<Region> {
    let key = std::ptr::from_ref(meta) as usize;
    if let Some(r) = COMPILED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return r.clone();
    }
    let compiled = Arc::new(Region::compile(meta));
    COMPILED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_insert(compiled)
        .clone()
}

/// Drops every compiled pattern (and the match caches that grew inside them).
pub(super) fn release() {
    COMPILED
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

/// The type of `national` in `meta`'s plan.
pub(super) fn number_type(meta: &'static Metadata, national: &str) -> Type {
    region(meta).number_type(national)
}

/// The region whose plan a number with country calling code `code` and national number
/// `national` belongs to: the only region of its code, or of several sharing the code, the
/// first whose leading digits start `national` or, if it has none, whose plan the number fits.
/// Non-geographic codes (`001`) give the code's first entry.
pub(super) fn source(code: u16, national: &str) -> Option<&'static Metadata> {
    let db: &'static phonenumber::metadata::Database = &DATABASE;
    let regions = db.region(&code)?;
    if let [only] = regions.as_slice() {
        return if *only == "001" {
            db.by_code(&code)?.into_iter().next()
        } else {
            db.by_id(only.parse::<Id>().ok()?.as_ref())
        };
    }
    for id in regions {
        let Some(meta) = db.by_id(id) else { continue };
        let hit = match region(meta).leads(meta, national) {
            Some(leads) => leads,
            None => number_type(meta, national) != Type::Unknown,
        };
        if hit {
            return db.by_id(id.parse::<Id>().ok()?.as_ref());
        }
    }
    None
}

/// The region an international number (the digits after `+`) will be read in: the one the
/// `phonenumber` parser would look up itself, found here with the compiled patterns. `None`
/// when there is no such region or when the parser, given the region, would read the digits
/// differently (they start with the region's own international prefix); the parser then
/// finds its own way.
pub(super) fn region_of_international(digits: &str) -> Option<Id> {
    let db: &'static phonenumber::metadata::Database = &DATABASE;
    let (code, national) = (1..=3).find_map(|len| {
        let code = digits.get(..len)?.parse::<u16>().ok()?;
        db.by_code(&code).map(|_| (code, digits.get(len..)))
    })?;
    let meta = source(code, national?.trim_start_matches('0'))?;
    let compiled = region(meta);
    let idd = compiled.idd.as_ref().map(|re| re.is_match(digits));
    if idd != Some(false) && meta.international_prefix().is_some() {
        return None;
    }
    meta.id().parse().ok()
}

/// The length of `meta`'s international prefix at the start of `dialable`, if it starts with
/// one.
pub(super) fn international_prefix_len(meta: &'static Metadata, dialable: &str) -> Option<usize> {
    match &region(meta).idd {
        Some(re) => re.find(dialable).map(|m| m.end()),
        None => meta
            .international_prefix()?
            .find(dialable)
            .filter(|m| m.start() == 0)
            .map(|m| m.end()),
    }
}

/// Whether the number fits its region's plan at all (libphonenumber's `isValidNumber`).
pub(super) fn is_valid(code: u16, national: &str) -> bool {
    source(code, national).is_some_and(|meta| number_type(meta, national) != Type::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_of(code: u16, national: &str) -> Option<Type> {
        source(code, national).map(|m| number_type(m, national))
    }

    #[test]
    fn regions_sharing_a_code_are_told_apart() {
        // +1: the US and Canada share the code; 416 is Toronto.
        let ca = source(1, "4165550123").map(Metadata::id);
        assert_eq!(ca, Some("CA"));
        let us = source(1, "2015550123").map(Metadata::id);
        assert_eq!(us, Some("US"));
        // +44 7781 (Guernsey mobiles) by leading digits.
        assert_eq!(source(44, "7781123456").map(Metadata::id), Some("GG"));
    }

    #[test]
    fn types_follow_the_plan() {
        assert_eq!(type_of(44, "7400123456"), Some(Type::Mobile));
        assert_eq!(type_of(44, "2079460123"), Some(Type::FixedLine));
        assert_eq!(type_of(44, "8001234567"), Some(Type::TollFree));
        assert_eq!(type_of(1, "2015550123"), Some(Type::FixedLineOrMobile));
    }

    #[test]
    fn the_whole_number_must_match_not_a_prefix() {
        // Croatia's fixed-line example with a ninth digit: nine digits is a possible length
        // and the pattern matches its first eight, which the crate's check accepts.
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        let fixed = db.by_id("HR").and_then(|m| m.descriptors().fixed_line());
        let fixed = fixed.expect("HR has a fixed-line plan");
        assert!(fixed.is_match("123456780"), "the crate's prefix match");
        assert!(!Pattern::new(fixed).fits("123456780"));
        assert!(Pattern::new(fixed).fits("12345678"));
        assert!(is_valid(385, "12345678"));
        assert!(!is_valid(385, "123456780"));
    }

    /// The region hint for `+` numbers is the region the parser would pick itself, for
    /// every example number of the metadata (the parser's own lookup is the crate's).
    #[test]
    fn the_international_region_hint_is_the_parsers_own_choice() {
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        let mut checked = 0;
        for meta in db.iter() {
            let d = meta.descriptors();
            let examples = [Some(d.general()), d.fixed_line(), d.mobile(), d.toll_free()];
            for example in examples
                .into_iter()
                .flatten()
                .filter_map(Descriptor::example)
            {
                let digits = format!("{}{example}", meta.country_code());
                let Ok(number) = phonenumber::parse(None, format!("+{digits}")) else {
                    continue;
                };
                let crates = number.metadata(db).map(Metadata::id);
                let ours = region_of_international(&digits);
                if let (Some(crates), Some(ours)) = (crates, ours) {
                    assert_eq!(ours.as_ref(), crates, "+{digits}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "only {checked} examples compared");
    }

    /// The crate's own regex is only a fallback for a pattern that does not compile here,
    /// where its leftmost-first `find` is not quite a whole-number match: none may need it.
    #[test]
    fn every_pattern_of_the_metadata_compiles_anchored() {
        let db: &'static phonenumber::metadata::Database = &DATABASE;
        for meta in db.iter() {
            let r = Region::compile(meta);
            let patterns = [Some(&r.general), r.fixed_line.as_ref(), r.mobile.as_ref()];
            let all = patterns
                .into_iter()
                .flatten()
                .chain(r.special.iter().map(|(p, _)| p));
            assert!(all.into_iter().all(|p| p.own.is_some()), "{}", meta.id());
            assert_eq!(r.leading.is_some(), meta.leading_digits().is_some());
            assert_eq!(r.idd.is_some(), meta.international_prefix().is_some());
        }
    }

    #[test]
    fn release_forgets_and_recompiles() {
        assert!(is_valid(49, "30123456"));
        release();
        assert!(is_valid(49, "30123456"));
    }
}
