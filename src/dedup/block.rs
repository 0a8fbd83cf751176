//! Blocking: keys per record, and candidate pairs from records that share a key.
//!
//! Comparing everyone with everyone is quadratic; blocking compares only records that share a
//! *blocking key* under at least one [`BlockingRule`]. Each rule turns a record into keys
//! ([`BlockingRule::keys`]), a public function so that a store can produce the same keys from
//! its indexes. [`Blocker::candidates`] groups records by key in memory, emits every pair
//! within a block once, and reports per rule how many pairs it produced.
//!

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::MatchRecord;
use super::compare::Comparison;
use super::hash::FastHasher;
use crate::error::{Error, Result};
use crate::normalize::Reason;

/// A way of grouping records that may be the same person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BlockingRule {
    /// Records sharing an email match key.
    Email,
    /// Records sharing a phone number (E.164).
    Phone,
    /// Records whose family names share a Double Metaphone code and whose given names share
    /// their first letter.
    FamilyPhoneticGivenInitial,
    /// Records with the same birth date and a shared postcode.
    BirthDatePostcode,
    /// Records with the same birth date and the same given-name initial.
    BirthDateGivenInitial,
    /// Records with the same given and family name keys, in either order.
    GivenFamily,
    /// Records with the same birth date. Broad (tens of records a day in a large store), for
    /// heavily corrupted data where every other field may carry a typo.
    BirthDate,
    /// Records sharing a locality and the given-name initial.
    LocalityGivenInitial,
    /// Records sharing an external id (system and id).
    ExternalId,
    /// Records sharing a value of the named custom attribute.
    Attribute(String),
    /// Records with the same family name key and a shared postcode: a family name typed
    /// alike at one address area, whatever else was mistyped or left blank.
    FamilyPostcode,
}

impl BlockingRule {
    /// The rules for the built-in fields (no custom attribute).
    pub fn defaults() -> Vec<BlockingRule> {
        vec![
            BlockingRule::Email,
            BlockingRule::Phone,
            BlockingRule::FamilyPhoneticGivenInitial,
            BlockingRule::BirthDatePostcode,
            BlockingRule::BirthDateGivenInitial,
            BlockingRule::GivenFamily,
            BlockingRule::FamilyPostcode,
            BlockingRule::ExternalId,
        ]
    }

    /// A stable name (`email`, `birth_date+postcode`, `attribute:tier`).
    pub fn name(&self) -> String {
        match self {
            BlockingRule::Email => "email".into(),
            BlockingRule::Phone => "phone".into(),
            BlockingRule::FamilyPhoneticGivenInitial => "family_phonetic+given_initial".into(),
            BlockingRule::BirthDatePostcode => "birth_date+postcode".into(),
            BlockingRule::BirthDateGivenInitial => "birth_date+given_initial".into(),
            BlockingRule::GivenFamily => "given+family".into(),
            BlockingRule::BirthDate => "birth_date".into(),
            BlockingRule::LocalityGivenInitial => "locality+given_initial".into(),
            BlockingRule::ExternalId => "external_id".into(),
            BlockingRule::Attribute(name) => format!("attribute:{name}"),
            BlockingRule::FamilyPostcode => "family+postcode".into(),
        }
    }

    /// The record's blocking keys under this rule, without repeats; empty when the record
    /// lacks a value the rule needs. Two records are candidates when they share a key.
    ///
    /// Keys are text built from the record's normalised values, parts separated by `|`
    /// (`1971-06-24|SW1A2AA`); a store can build the same keys, or look up the same values
    /// in its indexes.
    ///
    /// ```
    /// use customerdb::Customer;
    /// use customerdb::dedup::{BlockingRule, MatchRecord};
    /// let r = MatchRecord::new(&Customer::builder().name("Ada Lovelace").build()?);
    /// assert_eq!(BlockingRule::GivenFamily.keys(&r), ["ada|lovelace"]);
    /// assert_eq!(BlockingRule::FamilyPhoneticGivenInitial.keys(&r), ["LFLS|a"]);
    /// assert!(BlockingRule::Email.keys(&r).is_empty());
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    pub fn keys(&self, r: &MatchRecord) -> Vec<String> {
        let mut keys = Vec::new();
        self.for_each_key(r, &mut String::new(), &mut |k| keys.push(k.to_owned()));
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// 64-bit hashes of [`BlockingRule::keys`], sorted and without repeats, written into `out`
    /// without allocating per key (`buf` is scratch space). Batch blocking groups by these:
    /// two different keys that collide only add a candidate pair, which comparison then judges.
    pub(crate) fn key_hashes(&self, r: &MatchRecord, buf: &mut String, out: &mut Vec<u64>) {
        out.clear();
        self.for_each_key(r, buf, &mut |k| out.push(key_hash(k)));
        out.sort_unstable();
        out.dedup();
    }

    /// Calls `f` with each key of `r` (possibly repeated), built in `buf`.
    fn for_each_key(&self, r: &MatchRecord, buf: &mut String, f: &mut dyn FnMut(&str)) {
        use std::fmt::Write;
        let date = |d: NaiveDate| IsoDate(d);
        let mut two = |a: &dyn fmt::Display, b: &dyn fmt::Display, f: &mut dyn FnMut(&str)| {
            buf.clear();
            // Writing to a String cannot fail.
            let _ = write!(buf, "{a}|{b}");
            f(buf);
        };
        match self {
            BlockingRule::Email => r.emails().for_each(&mut *f),
            BlockingRule::Phone => r.phones().for_each(&mut *f),
            BlockingRule::FamilyPhoneticGivenInitial => {
                if let Some(i) = r.given_initial() {
                    for code in r.family_phonetic() {
                        two(&code, &i, f);
                    }
                }
            }
            BlockingRule::BirthDatePostcode => {
                if let Some(d) = r.birth_date() {
                    for p in r.postcodes() {
                        two(&date(d), &p, f);
                    }
                }
            }
            BlockingRule::BirthDateGivenInitial => {
                if let (Some(d), Some(i)) = (r.birth_date(), r.given_initial()) {
                    two(&date(d), &i, f);
                }
            }
            BlockingRule::GivenFamily => match (r.given(), r.family()) {
                // In either order, so transposed names share the key.
                (Some(g), Some(fam)) if g <= fam => two(&g, &fam, f),
                (Some(g), Some(fam)) => two(&fam, &g, f),
                _ => {}
            },
            BlockingRule::BirthDate => {
                if let Some(d) = r.birth_date() {
                    buf.clear();
                    let _ = write!(buf, "{}", date(d));
                    f(buf);
                }
            }
            BlockingRule::LocalityGivenInitial => {
                if let Some(i) = r.given_initial() {
                    for l in r.localities() {
                        two(&l, &i, f);
                    }
                }
            }
            BlockingRule::ExternalId => {
                for (system, id) in r.external_ids() {
                    two(&system, &id, f);
                }
            }
            BlockingRule::Attribute(name) => r.attribute(name).iter().for_each(|v| f(v)),
            BlockingRule::FamilyPostcode => {
                if let Some(family) = r.family() {
                    for p in r.postcodes() {
                        two(&family, &p, f);
                    }
                }
            }
        }
    }
}

impl BlockingRule {
    /// The rules whose keys the store keeps in its match-key index
    /// ([`crate::Index::MatchKey`]), each with the prefix that marks its keys there: the
    /// rules that combine two fields. Their blocks are small where each field alone is
    /// large (a common family name, a birth date in a large store), so a lookup by such a
    /// key returns the customers that share it and few others.
    pub(crate) const INDEXED: [(BlockingRule, &'static str); 5] = [
        (BlockingRule::FamilyPhoneticGivenInitial, "fpi"),
        (BlockingRule::GivenFamily, "gf"),
        (BlockingRule::FamilyPostcode, "fpc"),
        (BlockingRule::BirthDateGivenInitial, "bdi"),
        (BlockingRule::BirthDatePostcode, "bdp"),
    ];

    /// Prefix of the match-key entries that are no rule's keys: the family name key and the
    /// given-name initial (`fi:lovelace|a`). A family name spelled rarely can share a very
    /// common Double Metaphone code (`smyth`, `smith`); this finds the few with that spelling
    /// and initial when the phonetic block is too large to read.
    pub(crate) const FAMILY_INITIAL: &'static str = "fi";

    /// This rule's prefix in the match-key index, if the store keeps its keys.
    pub(crate) fn match_key_prefix(&self) -> Option<&'static str> {
        Self::INDEXED
            .iter()
            .find(|(r, _)| r == self)
            .map(|(_, prefix)| *prefix)
    }

    /// Calls `f` with each match-key index entry of `r` (`prefix:key`, possibly repeated):
    /// the keys of [`BlockingRule::INDEXED`] and the family-and-initial key.
    pub(crate) fn for_each_match_key(r: &MatchRecord, f: &mut dyn FnMut(&str)) {
        let mut buf = String::new();
        let mut entry = String::new();
        for (rule, prefix) in &Self::INDEXED {
            rule.for_each_key(r, &mut buf, &mut |k| {
                entry.clear();
                entry.push_str(prefix);
                entry.push(':');
                entry.push_str(k);
                f(&entry);
            });
        }
        if let (Some(family), Some(initial)) = (r.family(), r.given_initial()) {
            entry.clear();
            entry.push_str(Self::FAMILY_INITIAL);
            entry.push(':');
            entry.push_str(family);
            entry.push('|');
            entry.push(initial);
            f(&entry);
        }
    }
}

/// A date as `NaiveDate`'s `Display` writes it (`1971-06-24`), written digit by digit for
/// years 0 to 9999: blocking writes a date key per record per rule, and chrono's formatter
/// is the slowest part of that.
struct IsoDate(NaiveDate);

impl fmt::Display for IsoDate {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::Datelike;
        use std::fmt::Write as _;
        let date = self.0;
        match u32::try_from(date.year()) {
            Ok(year) if year <= 9999 => {
                let digit = |v: u32| char::from(b'0' + (v % 10) as u8);
                let (month, day) = (date.month(), date.day());
                let text = [
                    digit(year / 1000),
                    digit(year / 100),
                    digit(year / 10),
                    digit(year),
                    '-',
                    digit(month / 10),
                    digit(month),
                    '-',
                    digit(day / 10),
                    digit(day),
                ];
                text.iter().try_for_each(|&c| out.write_char(c))
            }
            _ => write!(out, "{date}"),
        }
    }
}

/// A well-mixed 64-bit hash of a key: [`FastHasher`] over the bytes, then `SplitMix64`'s
/// finaliser, so that keys differing in one byte land far apart.
fn key_hash(key: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = FastHasher::default();
    h.write(key.as_bytes());
    h.write_usize(key.len());
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl BlockingRule {
    /// Whether this rule's keys are built from the field `comparison` compares. Among the
    /// pairs such a rule produces, that comparison agrees far more often than among random
    /// pairs, so training leaves it out when learning from them.
    pub fn uses(&self, comparison: &Comparison) -> bool {
        match (self, comparison) {
            (BlockingRule::Email, Comparison::Email)
            | (BlockingRule::Phone, Comparison::Phone)
            | (
                BlockingRule::FamilyPhoneticGivenInitial | BlockingRule::GivenFamily,
                Comparison::GivenName | Comparison::FamilyName,
            )
            | (BlockingRule::BirthDatePostcode, Comparison::BirthDate | Comparison::Address)
            | (
                BlockingRule::BirthDateGivenInitial,
                Comparison::BirthDate | Comparison::GivenName,
            )
            | (BlockingRule::BirthDate, Comparison::BirthDate)
            | (BlockingRule::LocalityGivenInitial, Comparison::Address | Comparison::GivenName)
            | (BlockingRule::ExternalId, Comparison::ExternalId)
            // Records with one family name at one address are a household whether or not
            // they are one person, and a household shares its phone: among these pairs phone
            // agreement says as little about a match as the family name does.
            | (
                BlockingRule::FamilyPostcode,
                Comparison::FamilyName | Comparison::Address | Comparison::Phone,
            ) => true,
            (BlockingRule::Attribute(a), Comparison::Attribute(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for BlockingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Finds candidate pairs among records held in memory.
///
/// # Large blocks
///
/// A block of `n` records makes `n (n - 1) / 2` pairs, so a common key (a frequent family
/// name with a frequent initial) makes work that grows with the square of the data: a rule
/// whose keys come from a bounded vocabulary, as names do, yields ten times the pairs per
/// record on ten times the records. A block with more than [`Blocker::max_block_size`]
/// records is therefore compared by *sorted neighbourhood* (Hernández & Stolfo 1995): its
/// records are ordered by given name, family name and birth date, and each is paired with the
/// next [`Blocker::window`] records in that order, so its pairs grow linearly with its size.
/// Within one block of a rule, records of one person sit next to each other in that order
/// unless the very fields it sorts by differ; such pairs are usually found by another rule.
/// The report counts those blocks ([`RuleReport::oversized_blocks`]) and the pairs they did
/// not make ([`RuleReport::skipped_pairs`]).
#[derive(Debug, Clone)]
pub struct Blocker {
    rules: Vec<BlockingRule>,
    max_block_size: usize,
    window: usize,
}

/// The default [`Blocker::max_block_size`]: blocks up to this size make every pair (at most
/// 190 from one block).
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 10;

/// The default [`Blocker::window`]: each record of a larger block meets its next 5 records.
pub const DEFAULT_WINDOW: usize = 4;

/// The most rules one [`Blocker`] takes (each pair records its rules in a 32-bit set).
pub const MAX_RULES: usize = 32;

impl Blocker {
    /// A blocker with these rules and the default block size cap and window.
    pub fn new(rules: Vec<BlockingRule>) -> Blocker {
        Blocker {
            rules,
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
            window: DEFAULT_WINDOW,
        }
    }

    /// The largest block that makes every pair; larger ones are compared by sorted
    /// neighbourhood (see [`Blocker`]).
    #[must_use]
    pub fn max_block_size(mut self, n: usize) -> Blocker {
        self.max_block_size = n;
        self
    }

    /// How many following records each record of a block over the size cap is paired with;
    /// 0 skips such blocks whole.
    #[must_use]
    pub fn window(mut self, n: usize) -> Blocker {
        self.window = n;
        self
    }

    /// Adds a rule after the others.
    #[must_use]
    pub fn rule(mut self, rule: BlockingRule) -> Blocker {
        self.rules.push(rule);
        self
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[BlockingRule] {
        &self.rules
    }

    /// Every pair of records that share a key under some rule (within the limits on large
    /// blocks), each pair once, ordered by `(a, b)` with `a < b` (indexes into `records`),
    /// with the rules that produced it.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] (reason [`Reason::TooMany`]) for more than [`MAX_RULES`]
    /// rules or more than `u32::MAX` records.
    pub fn candidates(&self, records: &[MatchRecord]) -> Result<Candidates> {
        if self.rules.len() > MAX_RULES {
            return Err(Error::invalid(
                "blocking rules",
                self.rules.len().to_string(),
                Reason::TooMany { max: MAX_RULES },
            ));
        }
        let n = u32::try_from(records.len()).map_err(|_| {
            Error::invalid(
                "records",
                records.len().to_string(),
                Reason::TooMany {
                    max: u32::MAX as usize,
                },
            )
        })?;
        // Rules are independent: two workers take them in turn (the machine this is sized for
        // has two cores; more would only add memory for the lists in flight).
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(rule) = self.rules.get(i) else {
                    return done;
                };
                done.push((i, self.rule_pairs(rule, records, n)));
            }
        };
        let mut results: Vec<(usize, (Vec<u64>, RuleReport))> = std::thread::scope(|s| {
            let other = s.spawn(work);
            let mut mine = work();
            // A panicking worker is a bug; redo its rules here rather than lose them.
            if let Ok(theirs) = other.join() {
                mine.extend(theirs);
            } else {
                let have: Vec<usize> = mine.iter().map(|(i, _)| *i).collect();
                for (i, rule) in self.rules.iter().enumerate() {
                    if !have.contains(&i) {
                        mine.push((i, self.rule_pairs(rule, records, n)));
                    }
                }
            }
            mine
        });
        results.sort_by_key(|(i, _)| *i);
        let (lists, mut reports): (Vec<Vec<u64>>, Vec<RuleReport>) =
            results.into_iter().map(|(_, r)| r).unzip();
        let pairs = merge_rule_lists(&lists, &mut reports);
        Ok(Candidates {
            report: BlockingReport {
                records: records.len(),
                candidates: pairs.len(),
                max_block_size: self.max_block_size,
                window: self.window,
                rules: reports,
            },
            pairs,
        })
    }

    /// The distinct pairs of one rule as `a << 32 | b`, sorted, and its report.
    fn rule_pairs(
        &self,
        rule: &BlockingRule,
        records: &[MatchRecord],
        n: u32,
    ) -> (Vec<u64>, RuleReport) {
        // (key hash, record) sorted: each block is a run, its records in increasing order.
        let mut keyed: Vec<(u64, u32)> = Vec::with_capacity(records.len());
        let (mut buf, mut hashes) = (String::new(), Vec::new());
        for (i, r) in (0..n).zip(records) {
            rule.key_hashes(r, &mut buf, &mut hashes);
            keyed.extend(hashes.iter().map(|&h| (h, i)));
        }
        keyed.sort_unstable();
        let mut report = RuleReport {
            rule: rule.clone(),
            blocks: 0,
            largest_block: 0,
            pairs: 0,
            new_pairs: 0,
            oversized_blocks: 0,
            skipped_pairs: 0,
        };
        let pair = |a: u32, b: u32| (u64::from(a.min(b)) << 32) | u64::from(a.max(b));
        let mut pairs = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for block in keyed.chunk_by(|x, y| x.0 == y.0).filter(|b| b.len() > 1) {
            ids.clear();
            ids.extend(block.iter().map(|&(_, i)| i));
            report.blocks += 1;
            report.largest_block = report.largest_block.max(ids.len());
            if ids.len() <= self.max_block_size {
                for (k, &a) in ids.iter().enumerate() {
                    pairs.extend(ids[k + 1..].iter().map(|&b| pair(a, b)));
                }
                continue;
            }
            report.oversized_blocks += 1;
            ids.sort_by(|&x, &y| neighbourhood_order(records, x, y));
            let before = pairs.len();
            for (k, &a) in ids.iter().enumerate() {
                pairs.extend(ids[k + 1..].iter().take(self.window).map(|&b| pair(a, b)));
            }
            let len = ids.len() as u64;
            report.skipped_pairs += len * (len - 1) / 2 - (pairs.len() - before) as u64;
        }
        pairs.sort_unstable();
        pairs.dedup();
        report.pairs = pairs.len();
        (pairs, report)
    }
}

/// The order of records within a large block: given name, family name, birth date, index.
fn neighbourhood_order(records: &[MatchRecord], x: u32, y: u32) -> std::cmp::Ordering {
    let (Some(a), Some(b)) = (records.get(x as usize), records.get(y as usize)) else {
        return x.cmp(&y);
    };
    (a.given(), a.family(), a.birth_date(), x).cmp(&(b.given(), b.family(), b.birth_date(), y))
}

/// Merges the rules' sorted pair lists into one list of distinct pairs, each with the set of
/// rules that produced it, and counts for each rule the pairs no earlier rule produced.
fn merge_rule_lists(lists: &[Vec<u64>], reports: &mut [RuleReport]) -> Vec<CandidatePair> {
    let mut heads = vec![0usize; lists.len()];
    // At most the sum of the lists; sized once, since doubling a vector of millions of pairs
    // holds two copies at the peak.
    let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    loop {
        let next = lists
            .iter()
            .zip(&heads)
            .filter_map(|(l, &h)| l.get(h))
            .min()
            .copied();
        let Some(key) = next else { break };
        let mut rules = 0u32;
        for (bit, (l, h)) in lists.iter().zip(heads.iter_mut()).enumerate() {
            if l.get(*h) == Some(&key) {
                rules |= 1 << bit;
                *h += 1;
            }
        }
        // The first rule that produced a pair is the one that brought it in.
        if let Some(r) = reports.get_mut(rules.trailing_zeros() as usize) {
            r.new_pairs += 1;
        }
        out.push(CandidatePair {
            a: (key >> 32) as u32,
            b: key as u32,
            rules,
        });
    }
    out
}

impl Default for Blocker {
    fn default() -> Self {
        Blocker::new(BlockingRule::defaults())
    }
}

/// Two records that share a blocking key: indexes into the record slice, `a < b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CandidatePair {
    a: u32,
    b: u32,
    rules: u32,
}

impl CandidatePair {
    /// The first record's index.
    pub fn a(&self) -> usize {
        self.a as usize
    }

    /// The second record's index (greater than [`CandidatePair::a`]).
    pub fn b(&self) -> usize {
        self.b as usize
    }

    /// The indexes of the rules (in [`Blocker::rules`]) that produced the pair.
    pub fn rules(&self) -> impl Iterator<Item = usize> + use<> {
        let mask = self.rules;
        (0..MAX_RULES).filter(move |i| mask & (1 << i) != 0)
    }

    /// Whether the rule at index `rule` produced the pair.
    pub fn has_rule(&self, rule: usize) -> bool {
        rule < MAX_RULES && self.rules & (1 << rule) != 0
    }

    fn key(&self) -> u64 {
        (u64::from(self.a) << 32) | u64::from(self.b)
    }
}

/// The candidate pairs of a set of records, and how blocking found them.
#[derive(Debug, Clone)]
pub struct Candidates {
    pairs: Vec<CandidatePair>,
    report: BlockingReport,
}

impl Candidates {
    /// The pairs, ordered by `(a, b)`.
    pub fn pairs(&self) -> &[CandidatePair] {
        &self.pairs
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether records `a` and `b` (in either order) are a candidate pair.
    pub fn contains(&self, a: usize, b: usize) -> bool {
        let (a, b) = if a < b { (a, b) } else { (b, a) };
        let (Ok(a), Ok(b)) = (u32::try_from(a), u32::try_from(b)) else {
            return false;
        };
        let key = (u64::from(a) << 32) | u64::from(b);
        self.pairs
            .binary_search_by_key(&key, CandidatePair::key)
            .is_ok()
    }

    /// The per-rule counts.
    pub fn report(&self) -> &BlockingReport {
        &self.report
    }
}

/// What one rule produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    /// The rule.
    pub rule: BlockingRule,
    /// Keys shared by two or more records.
    pub blocks: usize,
    /// Records in the largest block, skipped or not.
    pub largest_block: usize,
    /// Distinct pairs this rule produced.
    pub pairs: usize,
    /// Of those, pairs no earlier rule produced.
    pub new_pairs: usize,
    /// Blocks over the size cap, compared by sorted neighbourhood.
    pub oversized_blocks: usize,
    /// Pairs those blocks would have made in full but did not.
    pub skipped_pairs: u64,
}

/// Candidate counts per rule and in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingReport {
    /// Records blocked.
    pub records: usize,
    /// Distinct candidate pairs over all rules.
    pub candidates: usize,
    /// The block size over which blocks are compared by sorted neighbourhood.
    pub max_block_size: usize,
    /// The neighbourhood window in force.
    pub window: usize,
    /// One report per rule, in rule order.
    pub rules: Vec<RuleReport>,
}

impl fmt::Display for BlockingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>10} {:>10} {:>8} {:>9} {:>10}",
            "rule", "pairs", "new", "blocks", "oversized", "skipped"
        )?;
        for r in &self.rules {
            writeln!(
                f,
                "{:<32} {:>10} {:>10} {:>8} {:>9} {:>10}",
                r.rule.name(),
                r.pairs,
                r.new_pairs,
                r.blocks,
                r.oversized_blocks,
                r.skipped_pairs
            )?;
        }
        write!(
            f,
            "{} candidate pairs from {} records (blocks over {} records: each record with its next {})",
            self.candidates, self.records, self.max_block_size, self.window
        )
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::{AddressParts, Customer};

    fn person(name: &str, email: &str, born: (i32, u32, u32), pc: &str) -> MatchRecord {
        let c = Customer::builder()
            .name(name)
            .email(email)
            .birth_date(NaiveDate::from_ymd_opt(born.0, born.1, born.2).unwrap())
            .address(AddressParts {
                postcode: Some(pc.into()),
                country: Some("GB".into()),
                ..AddressParts::default()
            })
            .build()
            .unwrap();
        MatchRecord::new(&c)
    }

    fn people() -> Vec<MatchRecord> {
        vec![
            person(
                "Ada Lovelace",
                "ada@example.org",
                (1815, 12, 10),
                "SW1A 1AA",
            ),
            person(
                "Ada Lovelace",
                "countess@example.org",
                (1815, 12, 10),
                "SW1A 1AA",
            ),
            person("Lovelace Ada", "ada@example.org", (1900, 1, 1), "EC1A 1BB"),
            person(
                "Charles Babbage",
                "cb@example.org",
                (1791, 12, 26),
                "EC1A 1BB",
            ),
        ]
    }

    #[test]
    fn pairs_are_distinct_and_carry_their_rules() {
        let records = people();
        let blocker = Blocker::new(vec![
            BlockingRule::Email,
            BlockingRule::GivenFamily,
            BlockingRule::BirthDatePostcode,
        ]);
        let c = blocker.candidates(&records).unwrap();
        let got: Vec<(usize, usize, Vec<usize>)> = c
            .pairs()
            .iter()
            .map(|p| (p.a(), p.b(), p.rules().collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, vec![1, 2]),
                (0, 2, vec![0, 1]),
                (1, 2, vec![1]), // transposed names share the given+family key
            ]
        );
        let r = c.report();
        assert_eq!(r.candidates, 3);
        assert_eq!(
            r.rules
                .iter()
                .map(|r| (r.pairs, r.new_pairs))
                .collect::<Vec<_>>(),
            [(1, 1), (3, 2), (1, 0)]
        );
        assert!(c.contains(2, 0));
        assert!(!c.contains(0, 3));
        assert!(r.to_string().contains("given+family"));
    }

    #[test]
    fn oversized_blocks_pair_neighbours_only() {
        let records = people();
        let c = Blocker::new(vec![BlockingRule::GivenFamily])
            .max_block_size(2)
            .window(0)
            .candidates(&records)
            .unwrap();
        assert!(c.is_empty());
        let r = &c.report().rules[0];
        assert_eq!(
            (r.oversized_blocks, r.skipped_pairs, r.largest_block),
            (1, 3, 3)
        );
        // Window 1: sorted by given name, "ada lovelace" (0, 1) then "lovelace ada" (2).
        let c = Blocker::new(vec![BlockingRule::GivenFamily])
            .max_block_size(2)
            .window(1)
            .candidates(&records)
            .unwrap();
        let got: Vec<(usize, usize)> = c.pairs().iter().map(|p| (p.a(), p.b())).collect();
        assert_eq!(got, [(0, 1), (1, 2)]);
        assert_eq!(c.report().rules[0].skipped_pairs, 1);
    }

    #[test]
    fn dates_in_keys_are_written_as_chrono_writes_them() {
        for (y, m, d) in [
            (1971, 6, 24),
            (5, 1, 9),
            (9999, 12, 31),
            (10_000, 1, 1),
            (-44, 3, 15),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(IsoDate(date).to_string(), date.to_string());
        }
    }

    #[test]
    fn key_hashes_agree_with_keys() {
        let records = people();
        for rule in BlockingRule::defaults() {
            for r in &records {
                let mut hashes = Vec::new();
                rule.key_hashes(r, &mut String::new(), &mut hashes);
                let mut expected: Vec<u64> = rule.keys(r).iter().map(|k| key_hash(k)).collect();
                expected.sort_unstable();
                assert_eq!(hashes, expected);
            }
        }
    }

    #[test]
    fn too_many_rules_are_refused() {
        let rules = (0..=MAX_RULES)
            .map(|i| BlockingRule::Attribute(format!("a{i}")))
            .collect();
        assert!(Blocker::new(rules).candidates(&[]).is_err());
    }
}
