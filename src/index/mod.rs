//! Secondary indexes: which exist, how their keys are laid out, and which entries a record has.
//!
//! This module is pure: it turns records and lookups into key bytes. The store writes and reads
//! those bytes inside its transactions, so every index changes in the same transaction as the
//! record it describes.

pub(crate) mod key;

use std::fmt;
use std::ops::{Bound, RangeBounds};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::crypt::Blinder;
use crate::dedup::{BlockingRule, MatchRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    AttributeType, AttributeValue, Channel, ConsentStatus, CountryCode, Customer, Email, Metrics,
    Phone, Record, Schema, Stage,
};
use crate::normalize::{fold_key, name_key, phonetic_keys, postcode_key};

/// A secondary index.
///
/// [`Index::Email`] and [`Index::ExternalId`] are unique: a key belongs to at most one customer.
/// The others map a key to any number of customers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Index {
    /// Unique: every email's match key ([`Email::match_key`]).
    Email,
    /// Unique: every external id (system and id).
    ExternalId,
    /// Every phone, as E.164.
    Phone,
    /// The family name, case and diacritic folded.
    FamilyName,
    /// The family name's Double Metaphone keys.
    FamilyPhonetic,
    /// The given name, case and diacritic folded.
    GivenName,
    /// Every address's postcode, upper-cased with spaces removed.
    Postcode,
    /// Every address's locality (town or city), folded.
    Locality,
    /// Every address's country (ISO 3166-1 alpha-2).
    Country,
    /// Every tag.
    Tag,
    /// The lifecycle stage.
    Stage,
    /// The owner.
    Owner,
    /// The date of birth.
    BirthDate,
    /// When the customer was inserted.
    CreatedAt,
    /// When the customer was last written.
    UpdatedAt,
    /// Metric: orders ([`Metrics::order_count`]). Customers without activities have no entry.
    OrderCount,
    /// Metric: spend in the base currency ([`Metrics::total_spend`]), when it is known.
    TotalSpend,
    /// Metric: the first purchase.
    FirstPurchase,
    /// Metric: the latest purchase.
    LastPurchase,
    /// Metric: the latest interaction.
    LastInteraction,
    /// Metric: open tickets.
    OpenTickets,
    /// The keys duplicate matching looks candidates up by: each key of the blocking rules
    /// that combine two fields, prefixed by the rule (`gf:ada|lovelace`, `fpi:LFLS|a`,
    /// `bdi:1815-12-10|a`, `bdp:...`, `fpc:...`), and the family name key with the given
    /// initial (`fi:lovelace|a`). Looked up as stored, without standardising.
    MatchKey,
    /// The consent in force: for each purpose and channel a customer has consent events for
    /// (an event for [`crate::Channel::Any`] counts for every channel), the latest of those
    /// events, granted or withdrawn, and its time. Looked up by purpose; the planner reads it
    /// for `consent(channel, purpose)` filters.
    Consent,
    /// A custom attribute declared as indexed.
    Attribute(String),
}

/// Tag of the first custom-attribute index; built-in indexes use 1 to 23.
pub(crate) const FIRST_ATTRIBUTE_TAG: u16 = 0x0100;

impl Index {
    /// The built-in indexes, in tag order.
    pub const BUILTIN: [Index; 23] = [
        Index::Email,
        Index::ExternalId,
        Index::Phone,
        Index::FamilyName,
        Index::FamilyPhonetic,
        Index::GivenName,
        Index::Postcode,
        Index::Locality,
        Index::Country,
        Index::Tag,
        Index::Stage,
        Index::Owner,
        Index::BirthDate,
        Index::CreatedAt,
        Index::UpdatedAt,
        Index::OrderCount,
        Index::TotalSpend,
        Index::FirstPurchase,
        Index::LastPurchase,
        Index::LastInteraction,
        Index::OpenTickets,
        Index::MatchKey,
        Index::Consent,
    ];

    /// The indexes of the derived metrics, kept from the timeline rather than the record.
    pub const METRICS: [Index; 6] = [
        Index::OrderCount,
        Index::TotalSpend,
        Index::FirstPurchase,
        Index::LastPurchase,
        Index::LastInteraction,
        Index::OpenTickets,
    ];

    /// The index's name (`email`, `family_name`, ... or the attribute's name).
    pub fn name(&self) -> &str {
        match self {
            Index::Email => "email",
            Index::ExternalId => "external_id",
            Index::Phone => "phone",
            Index::FamilyName => "family_name",
            Index::FamilyPhonetic => "family_phonetic",
            Index::GivenName => "given_name",
            Index::Postcode => "postcode",
            Index::Locality => "locality",
            Index::Country => "country",
            Index::Tag => "tag",
            Index::Stage => "stage",
            Index::Owner => "owner",
            Index::BirthDate => "birth_date",
            Index::CreatedAt => "created_at",
            Index::UpdatedAt => "updated_at",
            Index::OrderCount => "order_count",
            Index::TotalSpend => "total_spend",
            Index::FirstPurchase => "first_purchase",
            Index::LastPurchase => "last_purchase",
            Index::LastInteraction => "last_interaction",
            Index::OpenTickets => "open_tickets",
            Index::MatchKey => "match_key",
            Index::Consent => "consent",
            Index::Attribute(name) => name,
        }
    }

    /// The index named `name`: a built-in one, or else a custom attribute's.
    pub fn from_name(name: &str) -> Index {
        Index::BUILTIN
            .into_iter()
            .find(|i| i.name() == name)
            .unwrap_or_else(|| Index::Attribute(name.to_owned()))
    }

    /// Whether a key belongs to at most one customer.
    pub fn is_unique(&self) -> bool {
        matches!(self, Index::Email | Index::ExternalId)
    }

    /// The tag that starts this index's keys.
    pub(crate) fn tag(&self, schema: &Schema) -> Result<u16> {
        let tag = match self {
            Index::Email => 1,
            Index::ExternalId => 2,
            Index::Phone => 3,
            Index::FamilyName => 4,
            Index::FamilyPhonetic => 5,
            Index::GivenName => 6,
            Index::Postcode => 7,
            Index::Locality => 8,
            Index::Country => 9,
            Index::Tag => 10,
            Index::Stage => 11,
            Index::Owner => 12,
            Index::BirthDate => 13,
            Index::CreatedAt => 14,
            Index::UpdatedAt => 15,
            Index::OrderCount => TAG_ORDER_COUNT,
            Index::TotalSpend => 17,
            Index::FirstPurchase => 18,
            Index::LastPurchase => 19,
            Index::LastInteraction => 20,
            Index::OpenTickets => 21,
            Index::MatchKey => TAG_MATCH_KEY,
            Index::Consent => TAG_CONSENT,
            Index::Attribute(name) => {
                return schema
                    .get(name)
                    .and_then(|d| d.slot)
                    .ok_or_else(|| not_indexed(schema, name));
            }
        };
        Ok(tag)
    }

    /// The index a tag belongs to, for reports.
    pub(crate) fn from_tag(tag: u16, schema: &Schema) -> Option<Index> {
        if let Some(i) = tag
            .checked_sub(1)
            .and_then(|t| Index::BUILTIN.get(usize::from(t)))
        {
            return Some(i.clone());
        }
        schema
            .iter()
            .find(|d| d.slot == Some(tag))
            .map(|d| Index::Attribute(d.name.clone()))
    }

    /// The kind of value this index's keys hold.
    fn value_kind(&self, schema: &Schema) -> Result<AttributeType> {
        Ok(match self {
            Index::BirthDate => AttributeType::Date,
            Index::CreatedAt
            | Index::UpdatedAt
            | Index::FirstPurchase
            | Index::LastPurchase
            | Index::LastInteraction => AttributeType::Timestamp,
            Index::OrderCount | Index::TotalSpend | Index::OpenTickets => AttributeType::Integer,
            Index::Attribute(name) => match schema.get(name) {
                Some(d) if d.is_indexed() => match d.ty {
                    AttributeType::TextList => AttributeType::Text,
                    t => t,
                },
                _ => return Err(not_indexed(schema, name)),
            },
            _ => AttributeType::Text,
        })
    }
}

/// The error for scanning attribute `name`, which has no index.
fn not_indexed(schema: &Schema, name: &str) -> Error {
    Error::new(ErrorKind::UnknownAttribute {
        name: name.to_owned(),
        declared: schema.get(name).is_some(),
    })
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value to look up in an index. Text is standardised the way the index stores it (an email
/// becomes its match key, a phone its E.164 form, a name its folded key), so callers pass values
/// as a person would type them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// An exact decimal.
    Decimal(Decimal),
    /// A boolean.
    Boolean(bool),
    /// A date.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
}

impl Value {
    fn kind_name(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Integer(_) => "integer",
            Value::Decimal(_) => "decimal",
            Value::Boolean(_) => "boolean",
            Value::Date(_) => "date",
            Value::Timestamp(_) => "timestamp",
        }
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<Decimal> for Value {
    fn from(v: Decimal) -> Self {
        Value::Decimal(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}
impl From<NaiveDate> for Value {
    fn from(v: NaiveDate) -> Self {
        Value::Date(v)
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Timestamp(v)
    }
}
impl From<Stage> for Value {
    fn from(v: Stage) -> Self {
        Value::Text(v.as_str().to_owned())
    }
}

/// Which keys of an index to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Scan {
    /// Every key.
    All,
    /// Keys equal to the value.
    Eq(Value),
    /// Keys within the bounds.
    Range(Bound<Value>, Bound<Value>),
    /// Text keys starting with the (standardised) prefix.
    Prefix(String),
}

impl Scan {
    /// Keys equal to `v`.
    pub fn eq(v: impl Into<Value>) -> Scan {
        Scan::Eq(v.into())
    }

    /// Keys within `range`, e.g. `Scan::range(date_a..date_b)`.
    pub fn range<V: Into<Value> + Clone>(range: impl RangeBounds<V>) -> Scan {
        let map = |b: Bound<&V>| match b {
            Bound::Included(v) => Bound::Included(v.clone().into()),
            Bound::Excluded(v) => Bound::Excluded(v.clone().into()),
            Bound::Unbounded => Bound::Unbounded,
        };
        Scan::Range(map(range.start_bound()), map(range.end_bound()))
    }

    /// Text keys starting with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Scan {
        Scan::Prefix(prefix.into())
    }
}

/// A byte range of index keys, start inclusive, end exclusive (`None`: to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) start: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
}

impl KeyRange {
    fn prefix(prefix: Vec<u8>) -> KeyRange {
        let end = key::prefix_end(&prefix);
        KeyRange { start: prefix, end }
    }
}

/// Standardises a text lookup value the way `index` stores its keys; several keys for the
/// phonetic index (primary and alternate codes).
fn standardise_text(index: &Index, s: &str, region: Option<CountryCode>) -> Result<Vec<String>> {
    Ok(match index {
        Index::Email => vec![Email::parse(s)?.match_key().to_owned()],
        Index::Phone => vec![Phone::parse(s, region)?.e164().to_owned()],
        Index::FamilyPhonetic => phonetic_keys(s),
        Index::Country => vec![CountryCode::parse(s)?.as_str().to_owned()],
        Index::Postcode => vec![postcode_key(s)],
        Index::Stage => vec![s.trim().to_ascii_lowercase()],
        Index::ExternalId | Index::MatchKey => vec![s.to_owned()],
        Index::Consent => vec![s.trim().to_lowercase()],
        Index::FamilyName | Index::GivenName => vec![name_key(s)],
        _ => vec![fold_key(s)],
    })
}

/// Appends a lookup value's encoding, checking it suits the index.
fn put_value(out: &mut Vec<u8>, index: &Index, kind: AttributeType, v: &Value) -> Result<()> {
    match (kind, v) {
        (AttributeType::Text, Value::Text(s)) => key::put_text(out, s),
        (AttributeType::Integer, Value::Integer(i)) => key::put_i64(out, *i),
        (AttributeType::Decimal, Value::Decimal(d)) => key::put_decimal(out, *d),
        (AttributeType::Decimal, Value::Integer(i)) => key::put_decimal(out, Decimal::from(*i)),
        (AttributeType::Boolean, Value::Boolean(b)) => key::put_bool(out, *b),
        (AttributeType::Date, Value::Date(d)) => key::put_date(out, *d),
        (AttributeType::Timestamp, Value::Timestamp(t)) => key::put_timestamp(out, *t),
        _ => {
            return Err(Error::new(ErrorKind::AttributeType {
                name: index.name().to_owned(),
                expected: kind.as_str(),
                found: v.kind_name(),
            }));
        }
    }
    Ok(())
}

/// Whether the index with this tag holds personal values, which an encrypted store keeps as
/// blind hashes: email, external id, phone, family and given name, family phonetic, postcode,
/// locality, birth date and the match keys.
pub(crate) fn is_blinded(tag: u16) -> bool {
    matches!(tag, 1..=8 | 13 | TAG_MATCH_KEY)
}

/// `key` (`tag ++ value`, then the id if `with_id`) with its value replaced by the value's
/// blind hash ([`Blinder::blind`], 16 bytes) if its index [`is_blinded`]; otherwise as it is.
pub(crate) fn blind_key(blinder: &Blinder, key: &[u8], with_id: bool) -> Vec<u8> {
    let Some((tag, rest)) = key.split_first_chunk::<2>() else {
        return key.to_vec();
    };
    let t = u16::from_be_bytes(*tag);
    if !is_blinded(t) {
        return key.to_vec();
    }
    let (value, id) = if with_id {
        rest.split_at(rest.len().saturating_sub(8))
    } else {
        (rest, &[][..])
    };
    let mut out = Vec::with_capacity(2 + crate::crypt::BLIND_LEN + id.len());
    out.extend_from_slice(tag);
    out.extend_from_slice(&blinder.blind(t, value));
    out.extend_from_slice(id);
    out
}

/// The key ranges of `index` that `scan` covers; with a `blinder` (an encrypted store), those
/// of its blind hashes, where only equality and a scan of everything can be answered.
pub(crate) fn key_ranges(
    index: &Index,
    scan: &Scan,
    schema: &Schema,
    region: Option<CountryCode>,
    blinder: Option<&Blinder>,
) -> Result<Vec<KeyRange>> {
    let tag = index.tag(schema)?;
    if let Some(b) = blinder.filter(|_| is_blinded(tag)) {
        let refused = |scan| {
            Err(Error::new(ErrorKind::Blinded {
                index: index.name().to_owned(),
                scan,
            }))
        };
        return match scan {
            Scan::Eq(_) => Ok(key_ranges(index, scan, schema, region, None)?
                .into_iter()
                .map(|r| KeyRange::prefix(blind_key(b, &r.start, false)))
                .collect()),
            Scan::All => key_ranges(index, scan, schema, region, None),
            Scan::Prefix(_) => refused("prefix"),
            Scan::Range(..) => refused("range"),
        };
    }
    let kind = index.value_kind(schema)?;
    let head = tag.to_be_bytes().to_vec();
    // Text values are standardised first; other values are encoded as given.
    let encoded = |v: &Value| -> Result<Vec<Vec<u8>>> {
        let values = match v {
            Value::Text(s) if kind == AttributeType::Text => standardise_text(index, s, region)?
                .into_iter()
                .map(Value::Text)
                .collect(),
            other => vec![other.clone()],
        };
        values
            .iter()
            .map(|v| {
                let mut k = head.clone();
                put_value(&mut k, index, kind, v)?;
                Ok(k)
            })
            .collect()
    };
    Ok(match scan {
        Scan::All => vec![KeyRange::prefix(head)],
        Scan::Eq(v) => encoded(v)?.into_iter().map(KeyRange::prefix).collect(),
        Scan::Prefix(p) => {
            if kind != AttributeType::Text {
                return Err(Error::new(ErrorKind::AttributeType {
                    name: index.name().to_owned(),
                    expected: kind.as_str(),
                    found: "text prefix",
                }));
            }
            // A prefix of a folded value is the folded prefix, but email and phone prefixes
            // cannot be parsed, so those are folded only.
            let folded = match index {
                Index::Postcode => postcode_key(p),
                Index::Country => p.trim().to_ascii_uppercase(),
                Index::ExternalId | Index::MatchKey => p.clone(),
                Index::FamilyName | Index::GivenName => name_key(p),
                _ => fold_key(p),
            };
            let mut k = head;
            key::put_text_prefix(&mut k, &folded);
            vec![KeyRange::prefix(k)]
        }
        Scan::Range(lo, hi) => {
            let one = |v: &Value| -> Result<Vec<u8>> {
                encoded(v)?.into_iter().next().ok_or_else(|| {
                    Error::new(ErrorKind::AttributeType {
                        name: index.name().to_owned(),
                        expected: kind.as_str(),
                        found: "value without a key",
                    })
                })
            };
            let start = match lo {
                Bound::Included(v) => one(v)?,
                Bound::Excluded(v) => key::prefix_end(&one(v)?).unwrap_or_else(|| vec![0xFF; 3]),
                Bound::Unbounded => head.clone(),
            };
            let end = match hi {
                Bound::Included(v) => key::prefix_end(&one(v)?),
                Bound::Excluded(v) => Some(one(v)?),
                Bound::Unbounded => key::prefix_end(&head),
            };
            vec![KeyRange { start, end }]
        }
    })
}

/// A unique-index key and what to say about it in a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UniqueEntry {
    pub(crate) key: Vec<u8>,
    pub(crate) index: &'static str,
    pub(crate) display: String,
}

/// The unique-index key of an email match key.
pub(crate) fn email_key(match_key: &str) -> Vec<u8> {
    let mut k = 1u16.to_be_bytes().to_vec();
    key::put_text(&mut k, match_key);
    k
}

/// The unique-index key of an external id.
pub(crate) fn external_id_key(system: &str, id: &str) -> Vec<u8> {
    let mut k = 2u16.to_be_bytes().to_vec();
    key::put_text(&mut k, system);
    key::put_text(&mut k, id);
    k
}

/// Every index entry a record should have.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Entries {
    /// Non-unique keys: `tag ++ value ++ id`, sorted, no duplicates.
    pub(crate) postings: Vec<Vec<u8>>,
    /// Unique keys: `tag ++ value`, each mapping to the record's id.
    pub(crate) uniques: Vec<UniqueEntry>,
}

impl Entries {
    /// Replaces the values of blinded indexes by their blind hashes ([`blind_key`]).
    pub(crate) fn blind(&mut self, blinder: &Blinder) {
        for p in &mut self.postings {
            *p = blind_key(blinder, p, true);
        }
        self.postings.sort_unstable();
        self.postings.dedup();
        for u in &mut self.uniques {
            u.key = blind_key(blinder, &u.key, false);
        }
        self.uniques.sort_by(|a, b| a.key.cmp(&b.key));
        self.uniques.dedup_by(|a, b| a.key == b.key);
    }
}

/// The index entries of `rec` under `schema`.
pub(crate) fn entries(rec: &Record, schema: &Schema) -> Entries {
    let c = &rec.customer;
    let id = rec.id.as_u64();
    let mut postings = Vec::with_capacity(24);
    let mut text = |tag: u16, s: &str| {
        let mut k = Vec::with_capacity(2 + s.len() + 2 + 8);
        k.extend_from_slice(&tag.to_be_bytes());
        key::put_text(&mut k, s);
        key::put_u64(&mut k, id);
        postings.push(k);
    };
    for p in &c.phones {
        text(3, p.e164());
    }
    if let Some(n) = &c.name {
        if let Some(k) = n.family_key() {
            text(4, k);
        }
        for k in n.family_phonetic() {
            text(5, k);
        }
        if let Some(k) = n.given_key() {
            text(6, k);
        }
    }
    for a in &c.addresses {
        if let Some(k) = a.postcode_key() {
            text(7, k);
        }
        if let Some(k) = a.locality_key() {
            text(8, k);
        }
        if let Some(cc) = a.country() {
            text(9, cc.as_str());
        }
    }
    for t in &c.tags {
        text(10, t.as_str());
    }
    if let Some(s) = c.stage {
        text(11, s.as_str());
    }
    if let Some(o) = &c.owner {
        text(12, o);
    }
    let mut fixed = |tag: u16, put: &dyn Fn(&mut Vec<u8>)| {
        let mut k = tag.to_be_bytes().to_vec();
        put(&mut k);
        key::put_u64(&mut k, id);
        postings.push(k);
    };
    if let Some(d) = c.birth_date {
        fixed(13, &|k| key::put_date(k, d));
    }
    fixed(14, &|k| key::put_timestamp(k, rec.created_at));
    fixed(15, &|k| key::put_timestamp(k, rec.updated_at));
    for (name, value) in &c.attributes {
        if let Some(slot) = schema.get(name).and_then(|d| d.slot) {
            attribute_postings(id, slot, value, &mut postings);
        }
    }
    match_key_postings(id, c, &mut postings);
    consent_postings(id, c, &mut postings);
    postings.sort_unstable();
    postings.dedup();
    let mut uniques: Vec<UniqueEntry> = c
        .emails
        .iter()
        .map(|e| UniqueEntry {
            key: email_key(e.match_key()),
            index: "email",
            display: e.match_key().to_owned(),
        })
        .chain(c.external_ids.iter().map(|x| UniqueEntry {
            key: external_id_key(x.system(), x.id()),
            index: "external_id",
            display: x.to_string(),
        }))
        .collect();
    uniques.sort_by(|a, b| a.key.cmp(&b.key));
    uniques.dedup_by(|a, b| a.key == b.key);
    Entries { postings, uniques }
}

/// Appends the match-key postings ([`Index::MatchKey`]) of customer `id` holding `c`.
pub(crate) fn match_key_postings(id: u64, c: &Customer, out: &mut Vec<Vec<u8>>) {
    let blocking = MatchRecord::for_blocking(c);
    BlockingRule::for_each_match_key(&blocking, &mut |s| {
        let mut k = Vec::with_capacity(2 + s.len() + 2 + 8);
        k.extend_from_slice(&TAG_MATCH_KEY.to_be_bytes());
        key::put_text(&mut k, s);
        key::put_u64(&mut k, id);
        out.push(k);
    });
}

/// Appends the postings of one indexed attribute value (one per element of a text list) of
/// customer `id`, under the attribute's index tag `slot`.
pub(crate) fn attribute_postings(
    id: u64,
    slot: u16,
    value: &AttributeValue,
    out: &mut Vec<Vec<u8>>,
) {
    let mut put = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut k = slot.to_be_bytes().to_vec();
        f(&mut k);
        key::put_u64(&mut k, id);
        out.push(k);
    };
    match value {
        AttributeValue::Text(s) => put(&|k| key::put_text(k, &fold_key(s))),
        AttributeValue::Integer(i) => put(&|k| key::put_i64(k, *i)),
        AttributeValue::Decimal(d) => put(&|k| key::put_decimal(k, *d)),
        AttributeValue::Boolean(b) => put(&|k| key::put_bool(k, *b)),
        AttributeValue::Date(d) => put(&|k| key::put_date(k, *d)),
        AttributeValue::Timestamp(t) => put(&|k| key::put_timestamp(k, *t)),
        AttributeValue::TextList(items) => {
            for s in items {
                put(&|k| key::put_text(k, &fold_key(s)));
            }
        }
    }
}

/// Tag of the match-key index ([`Index::MatchKey`]), kept from the record like tags 1 to 15.
pub(crate) const TAG_MATCH_KEY: u16 = 22;

/// Tag of the consent index ([`Index::Consent`]), kept from the record's consent events.
pub(crate) const TAG_CONSENT: u16 = 23;

/// Every channel, in the order of their codes in consent keys.
const CHANNELS: [Channel; 5] = [
    Channel::Email,
    Channel::Sms,
    Channel::Phone,
    Channel::Post,
    Channel::Any,
];

/// The byte a channel has in consent keys.
fn channel_code(channel: Channel) -> u8 {
    match channel {
        Channel::Email => 0,
        Channel::Sms => 1,
        Channel::Phone => 2,
        Channel::Post => 3,
        Channel::Any => 4,
    }
}

/// `tag ++ purpose ++ channel ++ granted`: the start of the consent keys of one purpose,
/// channel and status.
fn consent_head(purpose: &str, channel: Channel, granted: bool) -> Vec<u8> {
    let mut k = TAG_CONSENT.to_be_bytes().to_vec();
    key::put_text(&mut k, purpose);
    k.push(channel_code(channel));
    key::put_bool(&mut k, granted);
    k
}

/// Appends the consent postings ([`Index::Consent`]) of customer `id` holding `c`:
/// `tag ++ purpose ++ channel ++ granted ++ time ++ id`, one per purpose and channel with events,
/// for the latest event that counts for the channel (of events at the same time, the later in
/// the list, as [`Customer::consent`] chooses).
///
/// Whether consent is in force at a time `now` follows: if that event is before `now`, it is
/// the one in force (every other event is earlier). If it is after `now`, an earlier event may
/// be in force, which only the record tells ([`consent_ranges`]).
pub(crate) fn consent_postings(id: u64, c: &Customer, out: &mut Vec<Vec<u8>>) {
    let mut purposes: Vec<&str> = c.consents.iter().map(|e| e.purpose.as_str()).collect();
    purposes.sort_unstable();
    purposes.dedup();
    for purpose in purposes {
        for channel in CHANNELS {
            let latest = c
                .consents
                .iter()
                .filter(|e| {
                    e.purpose == purpose && (e.channel == channel || e.channel == Channel::Any)
                })
                .max_by_key(|e| e.at);
            if let Some(e) = latest {
                let mut k = consent_head(purpose, channel, e.status == ConsentStatus::Granted);
                key::put_timestamp(&mut k, e.at);
                key::put_u64(&mut k, id);
                out.push(k);
            }
        }
    }
}

/// The consent postings to read for `consent(channel, purpose)` at `now` (`purpose`
/// standardised as stored): `certain` lists the customers whose latest event is a grant before
/// `now`, so consent is in force; `check` lists those whose latest event is at or after `now`
/// (to the microsecond keys keep), whose records decide. Customers in neither have no event
/// for the purpose and channel, or withdrew before `now`.
pub(crate) struct ConsentRanges {
    pub(crate) certain: KeyRange,
    pub(crate) check: [KeyRange; 2],
}

/// [`ConsentRanges`] for `purpose` on `channel` at `now`.
pub(crate) fn consent_ranges(purpose: &str, channel: Channel, now: DateTime<Utc>) -> ConsentRanges {
    let split = |granted: bool| {
        let head = consent_head(purpose, channel, granted);
        let mut at_now = head.clone();
        key::put_timestamp(&mut at_now, now);
        let before = KeyRange {
            start: head.clone(),
            end: Some(at_now.clone()),
        };
        let after = KeyRange {
            start: at_now,
            end: key::prefix_end(&head),
        };
        (before, after)
    };
    let (certain, granted_later) = split(true);
    let (_, withdrawn_later) = split(false);
    ConsentRanges {
        certain,
        check: [granted_later, withdrawn_later],
    }
}

/// Whether the value counts keep a count per value of index `tag`. Not for indexes whose values
/// are nearly all distinct ([`sparse`]): phone numbers, the creation and update times, the
/// purchase and interaction times (every activity moves them) and the match keys. A count
/// there is almost always 1, costs a read and a write of its own per posting that moves, and
/// no plan gains from it (a time range spans more values than the planner would sum; the
/// planner's prior for a phone is 2 customers). Nor for the consent index. The count of
/// customers with any value (the key of the tag alone) is kept for every index.
pub(crate) fn counts_values(tag: u16) -> bool {
    !sparse(tag) && tag != TAG_CONSENT
}

/// Whether the values of index `tag` are nearly all distinct: phone numbers (a shared line has
/// a few customers), the times and the match keys (see [`counts_values`]). A new customer's
/// id added alone to such a value is written as a run of its own without reading the value's
/// runs (see `store::postings::apply`): the value seldom has any, and reading them would cost
/// a B-tree step per posting written.
pub(crate) fn sparse(tag: u16) -> bool {
    matches!(tag, 3 | 14 | 15 | 18..=20 | TAG_MATCH_KEY)
}

/// Tag of the first metric index; metric tags run from it to 21.
pub(crate) const TAG_ORDER_COUNT: u16 = 16;

/// The postings of customer `id`'s metrics, sorted. Tags 16 to 21, in [`Index::METRICS`] order.
pub(crate) fn metric_postings(id: u64, m: &Metrics) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(6);
    let mut put = |tag: u16, f: &dyn Fn(&mut Vec<u8>)| {
        let mut k = Vec::with_capacity(2 + 8 + 8);
        k.extend_from_slice(&tag.to_be_bytes());
        f(&mut k);
        key::put_u64(&mut k, id);
        out.push(k);
    };
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    put(TAG_ORDER_COUNT, &|k| key::put_i64(k, count(m.order_count)));
    if let Some(total) = m.total_spend {
        put(17, &|k| key::put_i64(k, total));
    }
    if let Some(t) = m.first_purchase {
        put(18, &|k| key::put_timestamp(k, t));
    }
    if let Some(t) = m.last_purchase {
        put(19, &|k| key::put_timestamp(k, t));
    }
    if let Some(t) = m.last_interaction {
        put(20, &|k| key::put_timestamp(k, t));
    }
    put(21, &|k| key::put_i64(k, count(m.open_tickets)));
    out
}

/// Splits a posting key into its tag and customer id.
pub(crate) fn split_posting(k: &[u8]) -> Option<(u16, u64)> {
    let (tag, _) = k.split_first_chunk::<2>()?;
    let (_, id) = k.split_last_chunk::<8>()?;
    if k.len() < 10 {
        return None;
    }
    Some((u16::from_be_bytes(*tag), u64::from_be_bytes(*id)))
}

/// How many customers have each value of an index ([`crate::Read::value_counts`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueCounts {
    /// Each value the index holds, in index order, with how many customers have it.
    pub values: Vec<(Value, u64)>,
    /// How many customers have at least one value (a customer with several, such as tags, is
    /// counted once here and once per value above).
    pub customers: u64,
}

/// The value of the value part of an index key (`tag ++ value`, without the id).
pub(crate) fn key_value(k: &[u8], schema: &Schema) -> Option<Value> {
    let (tag, body) = k.split_first_chunk::<2>()?;
    let kind = Index::from_tag(u16::from_be_bytes(*tag), schema)?
        .value_kind(schema)
        .ok()?;
    Some(match kind {
        AttributeType::Text | AttributeType::TextList => Value::Text(key::take_text(body)?.0),
        AttributeType::Integer => Value::Integer(key::take_i64(body)?.0),
        AttributeType::Decimal => Value::Decimal(key::take_decimal(body)?.0),
        AttributeType::Boolean => Value::Boolean(*body.first()? != 0),
        AttributeType::Date => Value::Date(key::take_date(body)?.0),
        AttributeType::Timestamp => Value::Timestamp(key::take_timestamp(body)?.0),
    })
}

/// A readable form of the value part of an index key (`tag ++ value`), for reports.
pub(crate) fn describe_key(k: &[u8], schema: &Schema) -> String {
    let Some((tag, body)) = k.split_first_chunk::<2>() else {
        return hex(k);
    };
    let kind =
        Index::from_tag(u16::from_be_bytes(*tag), schema).and_then(|i| i.value_kind(schema).ok());
    let described = match kind {
        Some(AttributeType::Text) => key::take_text(body).map(|(s, _)| s),
        Some(AttributeType::Integer) => key::take_i64(body).map(|(v, _)| v.to_string()),
        Some(AttributeType::Date) => key::take_date(body).map(|(v, _)| v.to_string()),
        Some(AttributeType::Timestamp) => key::take_timestamp(body).map(|(v, _)| v.to_rfc3339()),
        Some(AttributeType::Boolean) => body.first().map(|b| (*b != 0).to_string()),
        _ => None,
    };
    described.unwrap_or_else(|| hex(body))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Customer, CustomerId};

    fn record(c: Customer) -> Record {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Record {
            id: CustomerId::from_u64(7),
            created_at: t,
            updated_at: t,
            revision: 1,
            customer: c,
        }
    }

    #[test]
    fn every_posting_ends_with_the_id_and_starts_with_its_tag() {
        let c = Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com")
            .tag("vip")
            .stage(Stage::Lead)
            .external_id("shop", "1")
            .build()
            .unwrap();
        let e = entries(&record(c), &Schema::default());
        assert!(e.postings.len() >= 6);
        for p in &e.postings {
            let (tag, id) = split_posting(p).unwrap();
            assert!(
                (1..=15).contains(&tag) || tag == TAG_MATCH_KEY,
                "record postings use tags 1 to 15 and the match-key tag"
            );
            assert_eq!(id, 7);
        }
        assert_eq!(e.uniques.len(), 2);
    }

    #[test]
    fn equality_range_covers_exactly_one_value() {
        let schema = Schema::default();
        let r = &key_ranges(&Index::Tag, &Scan::eq("VIP"), &schema, None, None).unwrap()[0];
        let mut inside = 10u16.to_be_bytes().to_vec();
        key::put_text(&mut inside, "vip");
        key::put_u64(&mut inside, 99);
        let mut outside = 10u16.to_be_bytes().to_vec();
        key::put_text(&mut outside, "vipx");
        key::put_u64(&mut outside, 1);
        let within = |k: &Vec<u8>| *k >= r.start && r.end.as_ref().is_none_or(|e| k < e);
        assert!(within(&inside));
        assert!(!within(&outside));
    }

    /// The consent postings hold the latest event per purpose and channel (an `any` event
    /// counting for every channel), and the ranges split them at `now`: a grant before it is
    /// certain, an event at or after it is left to the record.
    #[test]
    fn consent_postings_keep_the_latest_event_and_ranges_split_at_now() {
        use crate::model::Consent;
        let t = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let event = |channel, granted, at| {
            let status = if granted {
                ConsentStatus::Granted
            } else {
                ConsentStatus::Withdrawn
            };
            Consent::new("marketing", channel, status, at, "web")
        };
        let c = Customer::builder()
            .name("Ada")
            .consent(event(Channel::Email, true, t(0)))
            .consent(event(Channel::Any, false, t(10)))
            .consent(event(Channel::Sms, true, t(20)))
            .build()
            .unwrap();
        let mut keys = Vec::new();
        consent_postings(7, &c, &mut keys);
        // Email, phone, post and any: the `any` withdrawal; sms: its later grant.
        assert_eq!(keys.len(), 5);
        let in_range = |r: &KeyRange, k: &Vec<u8>| {
            k.as_slice() >= r.start.as_slice() && r.end.as_ref().is_none_or(|e| k < e)
        };
        let count = |r: &KeyRange| keys.iter().filter(|k| in_range(r, k)).count();
        let sms = consent_ranges("marketing", Channel::Sms, t(30));
        assert_eq!((count(&sms.certain), count(&sms.check[0])), (1, 0));
        let sms_early = consent_ranges("marketing", Channel::Sms, t(20));
        assert_eq!(
            (count(&sms_early.certain), count(&sms_early.check[0])),
            (0, 1)
        );
        let email = consent_ranges("marketing", Channel::Email, t(30));
        assert_eq!(count(&email.certain), 0);
        assert_eq!((count(&email.check[0]), count(&email.check[1])), (0, 0));
        let email_early = consent_ranges("marketing", Channel::Email, t(5));
        assert_eq!(
            (count(&email_early.certain), count(&email_early.check[1])),
            (0, 1)
        );
    }

    #[test]
    fn index_names_roundtrip() {
        for i in Index::BUILTIN {
            assert_eq!(Index::from_name(i.name()), i);
            assert_eq!(
                Index::from_tag(i.tag(&Schema::default()).unwrap(), &Schema::default()),
                Some(i)
            );
        }
    }
}
