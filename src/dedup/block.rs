//! Blocking: keys per record, and candidate pairs from records that share a key.
//!
//! Comparing everyone with everyone is quadratic; blocking compares only records that share a
//! *blocking key* under at least one [`BlockingRule`]. Each rule turns a record into keys
//! ([`BlockingRule::keys`]), a public function so that a store can produce the same keys from
//! its indexes. [`Blocker::candidates`] groups records by key in memory, emits every pair
//! within a block once, and reports per rule how many pairs it produced.
//!

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::MatchRecord;
use super::compare::Comparison;
use super::hash::FastHash;
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
        let mut keys: Vec<String> = match self {
            BlockingRule::Email => r.emails().to_vec(),
            BlockingRule::Phone => r.phones().to_vec(),
            BlockingRule::FamilyPhoneticGivenInitial => match r.given_initial() {
                Some(i) => r
                    .family_phonetic()
                    .iter()
                    .map(|code| format!("{code}|{i}"))
                    .collect(),
                None => Vec::new(),
            },
            BlockingRule::BirthDatePostcode => match r.birth_date() {
                Some(d) => r.postcodes().iter().map(|p| format!("{d}|{p}")).collect(),
                None => Vec::new(),
            },
            BlockingRule::BirthDateGivenInitial => match (r.birth_date(), r.given_initial()) {
                (Some(d), Some(i)) => vec![format!("{d}|{i}")],
                _ => Vec::new(),
            },
            BlockingRule::GivenFamily => match (r.given(), r.family()) {
                // In either order, so transposed names share the key.
                (Some(g), Some(f)) if g <= f => vec![format!("{g}|{f}")],
                (Some(g), Some(f)) => vec![format!("{f}|{g}")],
                _ => Vec::new(),
            },
            BlockingRule::BirthDate => r.birth_date().map(|d| d.to_string()).into_iter().collect(),
            BlockingRule::LocalityGivenInitial => match r.given_initial() {
                Some(i) => r.localities().iter().map(|l| format!("{l}|{i}")).collect(),
                None => Vec::new(),
            },
            BlockingRule::ExternalId => r
                .external_ids()
                .iter()
                .map(|(s, i)| format!("{s}|{i}"))
                .collect(),
            BlockingRule::Attribute(name) => r.attribute(name).to_vec(),
        };
        keys.sort_unstable();
        keys.dedup();
        keys
    }
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
            | (BlockingRule::ExternalId, Comparison::ExternalId) => true,
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
/// # Oversized blocks
///
/// A block of `n` records makes `n (n - 1) / 2` pairs, so one very common key (a family name
/// shared by thousands, a placeholder email) can swamp everything. A block with more than
/// [`Blocker::max_block_size`] records is skipped whole: it produces no pairs, and the report
/// counts it and the pairs it would have made ([`RuleReport::oversized_blocks`],
/// [`RuleReport::skipped_pairs`]). Pairs in it that are duplicates are usually still found by
/// another, more selective rule.
#[derive(Debug, Clone)]
pub struct Blocker {
    rules: Vec<BlockingRule>,
    max_block_size: usize,
}

/// The default [`Blocker::max_block_size`]: at most 124,750 pairs from one block.
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 500;

/// The most rules one [`Blocker`] takes (each pair records its rules in a 32-bit set).
pub const MAX_RULES: usize = 32;

impl Blocker {
    /// A blocker with these rules and the default block size cap.
    pub fn new(rules: Vec<BlockingRule>) -> Blocker {
        Blocker {
            rules,
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
        }
    }

    /// The largest block that still produces pairs; larger ones are skipped and reported (see
    /// [`Blocker`]).
    #[must_use]
    pub fn max_block_size(mut self, n: usize) -> Blocker {
        self.max_block_size = n;
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

    /// Every pair of records that share a key under some rule, each pair once, ordered by
    /// `(a, b)` with `a < b` (indexes into `records`), with the rules that produced it.
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
        let mut reports = Vec::with_capacity(self.rules.len());
        let mut all: Vec<(u64, u32)> = Vec::new();
        for (bit, rule) in self.rules.iter().enumerate() {
            let (pairs, report) = self.rule_pairs(rule, records, n);
            all.extend(pairs.into_iter().map(|p| (p, 1u32 << bit)));
            reports.push(report);
        }
        all.sort_unstable_by_key(|&(p, _)| p);
        let mut pairs: Vec<CandidatePair> = Vec::with_capacity(all.len());
        for (p, mask) in all {
            match pairs.last_mut() {
                Some(last) if last.key() == p => last.rules |= mask,
                _ => pairs.push(CandidatePair {
                    a: (p >> 32) as u32,
                    b: p as u32,
                    rules: mask,
                }),
            }
        }
        for p in &pairs {
            // The first rule that produced a pair is the one that brought it in.
            if let Some(r) = reports.get_mut(p.rules.trailing_zeros() as usize) {
                r.new_pairs += 1;
            }
        }
        Ok(Candidates {
            report: BlockingReport {
                records: records.len(),
                candidates: pairs.len(),
                max_block_size: self.max_block_size,
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
        let mut blocks: HashMap<String, Vec<u32>, FastHash> = HashMap::default();
        for (i, r) in (0..n).zip(records) {
            for key in rule.keys(r) {
                blocks.entry(key).or_default().push(i);
            }
        }
        let mut report = RuleReport {
            rule: rule.clone(),
            blocks: 0,
            largest_block: 0,
            pairs: 0,
            new_pairs: 0,
            oversized_blocks: 0,
            skipped_pairs: 0,
        };
        let mut pairs = Vec::new();
        for ids in blocks.values().filter(|ids| ids.len() > 1) {
            report.blocks += 1;
            report.largest_block = report.largest_block.max(ids.len());
            if ids.len() > self.max_block_size {
                report.oversized_blocks += 1;
                let len = ids.len() as u64;
                report.skipped_pairs += len * (len - 1) / 2;
                continue;
            }
            // Ids were pushed in increasing order, so `a < b` in every pair.
            for (k, &a) in ids.iter().enumerate() {
                pairs.extend(
                    ids[k + 1..]
                        .iter()
                        .map(|&b| (u64::from(a) << 32) | u64::from(b)),
                );
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        report.pairs = pairs.len();
        (pairs, report)
    }
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
    /// Blocks over the size cap, skipped.
    pub oversized_blocks: usize,
    /// Pairs the skipped blocks would have made.
    pub skipped_pairs: u64,
}

/// Candidate counts per rule and in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingReport {
    /// Records blocked.
    pub records: usize,
    /// Distinct candidate pairs over all rules.
    pub candidates: usize,
    /// The block size cap in force.
    pub max_block_size: usize,
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
            "{} candidate pairs from {} records (blocks over {} records skipped)",
            self.candidates, self.records, self.max_block_size
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
    fn oversized_blocks_are_skipped_and_reported() {
        let records = people();
        let c = Blocker::new(vec![BlockingRule::GivenFamily])
            .max_block_size(2)
            .candidates(&records)
            .unwrap();
        assert!(c.is_empty());
        let r = &c.report().rules[0];
        assert_eq!(
            (r.oversized_blocks, r.skipped_pairs, r.largest_block),
            (1, 3, 3)
        );
    }

    #[test]
    fn too_many_rules_are_refused() {
        let rules = (0..=MAX_RULES)
            .map(|i| BlockingRule::Attribute(format!("a{i}")))
            .collect();
        assert!(Blocker::new(rules).candidates(&[]).is_err());
    }
}
