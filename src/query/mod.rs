//! Segmentation: filters as data, a text syntax for them, a planner that uses the indexes, and
//! aggregates.
//!
//! A [`Filter`] says which customers belong to a segment. It is plain data (serde-serialisable,
//! so a host can keep segment definitions anywhere) built with combinators or parsed from text:
//!
//! ```
//! use customerdb::query::{Field, Filter, Operand};
//!
//! let built = Field::Country.eq("DE")
//!     & Field::OrderCount.ge(3)
//!     & Field::LastPurchase.lt(Operand::days_ago(90))
//!     & Filter::consent(customerdb::Channel::Email, "marketing");
//! let parsed: Filter = r#"country = "DE" and order_count >= 3 and last_purchase < now - 90d
//!     and consent(email, marketing)"#.parse()?;
//! assert_eq!(built, parsed);
//! assert_eq!(parsed.to_string().parse::<Filter>()?, parsed); // Display writes the syntax back
//! # Ok::<(), customerdb::query::ParseError>(())
//! ```
//!
//! A [`Query`] adds sorting, a limit and keyset paging, and runs inside a transaction:
//!
//! ```
//! use customerdb::query::{Field, Order, Query};
//! use customerdb::{Customer, Store};
//!
//! let store = Store::in_memory()?;
//! let mut tx = store.begin_write()?;
//! for (name, tag) in [("Ada Lovelace", "vip"), ("Alan Turing", "gold"), ("Grace Hopper", "vip")] {
//!     tx.insert(Customer::builder().name(name).tag(tag))?;
//! }
//! tx.commit()?;
//!
//! let tx = store.begin_read()?;
//! let q = Query::filter(Field::Tag.eq("VIP")).sort_by(Field::FamilyName, Order::Desc).limit(1);
//! let first = q.page(&tx)?;
//! assert_eq!(first.records[0].customer.name.as_ref().and_then(|n| n.family()), Some("Lovelace"));
//! let second = q.clone().after(first.next.expect("more")).page(&tx)?;
//! assert_eq!(second.records[0].customer.name.as_ref().and_then(|n| n.family()), Some("Hopper"));
//! assert_eq!(q.count(&tx)?, 2);
//! println!("{}", q.explain(&tx)?); // the plan, with estimated and actual counts
//! # Ok::<(), customerdb::Error>(())
//! ```
//!
//! # Semantics
//!
//! - Text is compared by its matching key, the form the indexes hold: names by
//!   [`name_key`](crate::normalize::name_key), emails by match key, phones as E.164, postcodes
//!   upper case without spaces, countries as ISO codes, other text by
//!   [`fold_key`](crate::normalize::fold_key). An equality operand is standardised like the
//!   field (so an invalid email or country in a filter is an error); an ordering or prefix
//!   operand is folded the way the field's index folds it.
//! - Fields with several values (emails, phones, the addresses' countries, localities and
//!   postcodes, tags, text-list attributes) match when *any* value does; `all (..)` needs every
//!   listed value to be present. `field != v` is `not (field = v)`, so it includes customers
//!   without the field.
//! - A comparison with a missing value is false; `is missing` and `is set` test presence.
//! - Metrics of customers without activities are [`Metrics::default`](crate::Metrics): zero
//!   orders, spend 0, no dates, no open tickets.
//! - `now` is fixed once per query ([`Query::at`]); `now - 90d` on a date field means the UTC
//!   date of that instant, and a date on a timestamp field means its midnight UTC.
//! - Phone operands must be international (`+44...`): a filter does not know the store's
//!   default region.
//!
//! # Planning
//!
//! The planner ([`Query::explain`]) reads indexes for the parts of a filter that have one,
//! intersects and unites sorted id sets, takes complements for `not` when that is cheap, and
//! checks what remains on the decoded records of the candidates, or scans every customer when
//! that is cheaper. Whatever it picks, the answer is the one a full scan gives.

mod aggregate;
mod eval;
mod exec;
mod plan;
mod syntax;

use std::fmt;
use std::ops;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Channel, Metrics, Record, Stage};

pub use aggregate::{Group, Histogram, RfmScore, Summary};
pub use eval::Predicate;
pub use exec::{Cursor, Page, Records, Source};
pub use plan::{Explain, PlanNode, Step};
pub use syntax::ParseError;

/// A field a filter can test and a query can sort by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Field {
    /// The whole name as displayed, folded.
    Name,
    /// The given name, by its matching key (indexed).
    GivenName,
    /// The family name, by its matching key (indexed).
    FamilyName,
    /// Every email, by match key (indexed, unique).
    Email,
    /// Every phone, as E.164 (indexed).
    Phone,
    /// Every address's country (indexed).
    Country,
    /// Every address's locality (indexed).
    Locality,
    /// Every address's postcode (indexed).
    Postcode,
    /// The lifecycle stage, by name (indexed).
    Stage,
    /// The owner (indexed).
    Owner,
    /// Where the customer came from.
    Source,
    /// The organisation.
    Organization,
    /// The job title.
    JobTitle,
    /// The gender: `female`, `male`, `non_binary`, `undisclosed`, or the self-description.
    Gender,
    /// Every tag (indexed).
    Tag,
    /// The date of birth (indexed).
    BirthDate,
    /// When the customer was inserted (indexed).
    CreatedAt,
    /// When the customer was last written (indexed).
    UpdatedAt,
    /// Metric: orders (indexed).
    OrderCount,
    /// Metric: spend in the base currency's minor units (indexed); missing when unknown.
    TotalSpend,
    /// Metric: the first purchase (indexed).
    FirstPurchase,
    /// Metric: the latest purchase (indexed).
    LastPurchase,
    /// Metric: the latest interaction (indexed).
    LastInteraction,
    /// Metric: open tickets (indexed).
    OpenTickets,
    /// RFM recency: whole days from the latest purchase to now; missing if never bought.
    RecencyDays,
    /// A custom attribute, compared by its declared type (indexed if declared so).
    Attribute(String),
}

impl Field {
    /// The built-in fields, in the order of [`Field::name`]'s table.
    pub const BUILTIN: [Field; 25] = [
        Field::Name,
        Field::GivenName,
        Field::FamilyName,
        Field::Email,
        Field::Phone,
        Field::Country,
        Field::Locality,
        Field::Postcode,
        Field::Stage,
        Field::Owner,
        Field::Source,
        Field::Organization,
        Field::JobTitle,
        Field::Gender,
        Field::Tag,
        Field::BirthDate,
        Field::CreatedAt,
        Field::UpdatedAt,
        Field::OrderCount,
        Field::TotalSpend,
        Field::FirstPurchase,
        Field::LastPurchase,
        Field::LastInteraction,
        Field::OpenTickets,
        Field::RecencyDays,
    ];

    /// A custom attribute.
    pub fn attribute(name: impl Into<String>) -> Field {
        Field::Attribute(name.into())
    }

    /// The field's name in the text syntax (`family_name`; an attribute's own name).
    pub fn name(&self) -> &str {
        match self {
            Field::Name => "name",
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::Email => "email",
            Field::Phone => "phone",
            Field::Country => "country",
            Field::Locality => "locality",
            Field::Postcode => "postcode",
            Field::Stage => "stage",
            Field::Owner => "owner",
            Field::Source => "source",
            Field::Organization => "organization",
            Field::JobTitle => "job_title",
            Field::Gender => "gender",
            Field::Tag => "tag",
            Field::BirthDate => "birth_date",
            Field::CreatedAt => "created_at",
            Field::UpdatedAt => "updated_at",
            Field::OrderCount => "order_count",
            Field::TotalSpend => "total_spend",
            Field::FirstPurchase => "first_purchase",
            Field::LastPurchase => "last_purchase",
            Field::LastInteraction => "last_interaction",
            Field::OpenTickets => "open_tickets",
            Field::RecencyDays => "recency_days",
            Field::Attribute(name) => name,
        }
    }

    /// The built-in field called `name`.
    pub fn builtin(name: &str) -> Option<Field> {
        Field::BUILTIN.into_iter().find(|f| f.name() == name)
    }

    /// Whether the field is derived from the timeline rather than the record.
    pub fn is_metric(&self) -> bool {
        matches!(
            self,
            Field::OrderCount
                | Field::TotalSpend
                | Field::FirstPurchase
                | Field::LastPurchase
                | Field::LastInteraction
                | Field::OpenTickets
                | Field::RecencyDays
        )
    }

    fn test(self, op: Op) -> Filter {
        Filter::Test { field: self, op }
    }

    /// Some value equals `v`.
    pub fn eq(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Eq(v.into()))
    }

    /// No value equals `v` (missing included): `not (field = v)`.
    pub fn ne(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Ne(v.into()))
    }

    /// Some value is below `v`.
    pub fn lt(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Lt(v.into()))
    }

    /// Some value is at most `v`.
    pub fn le(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Le(v.into()))
    }

    /// Some value is above `v`.
    pub fn gt(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Gt(v.into()))
    }

    /// Some value is at least `v`.
    pub fn ge(self, v: impl Into<Operand>) -> Filter {
        self.test(Op::Ge(v.into()))
    }

    /// Some value is in `lo..=hi`: `field >= lo and field <= hi` for a single-valued field.
    pub fn between(self, lo: impl Into<Operand>, hi: impl Into<Operand>) -> Filter {
        self.clone().ge(lo) & self.le(hi)
    }

    /// Some value equals one of `values` (for tags: has any).
    pub fn one_of<V: Into<Operand>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.test(Op::In(values.into_iter().map(Into::into).collect()))
    }

    /// Every one of `values` is among the field's values (for tags: has all).
    pub fn all_of<V: Into<Operand>>(self, values: impl IntoIterator<Item = V>) -> Filter {
        self.test(Op::All(values.into_iter().map(Into::into).collect()))
    }

    /// Some value starts with `prefix` (folded like the field's index).
    pub fn starts_with(self, prefix: impl Into<String>) -> Filter {
        self.test(Op::Prefix(prefix.into()))
    }

    /// The field has a value.
    pub fn is_set(self) -> Filter {
        self.test(Op::IsSet)
    }

    /// The field has no value.
    pub fn is_missing(self) -> Filter {
        self.test(Op::IsMissing)
    }

    /// Some value is within `max_edits` (Levenshtein, on matching keys) of `text`.
    pub fn within_edits(self, text: impl Into<String>, max_edits: u32) -> Filter {
        self.test(Op::Fuzzy {
            text: text.into(),
            similarity: Similarity::EditDistance(max_edits),
        })
    }

    /// Some value has a Jaro-Winkler similarity of at least `threshold` (0 to 1) to `text`.
    pub fn similar_to(self, text: impl Into<String>, threshold: f64) -> Filter {
        self.test(Op::Fuzzy {
            text: text.into(),
            similarity: Similarity::JaroWinkler(threshold),
        })
    }

    /// Some value shares a Double Metaphone key with `text` (indexed for the family name).
    pub fn sounds_like(self, text: impl Into<String>) -> Filter {
        self.test(Op::SoundsLike(text.into()))
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        syntax::write_field(f, self)
    }
}

/// A value in a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operand {
    /// Text, standardised like the field it is compared with.
    Text(String),
    /// An integer.
    Integer(i64),
    /// An exact decimal.
    Decimal(Decimal),
    /// A boolean.
    Boolean(bool),
    /// A calendar date.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
    /// The query's `now` plus this many seconds (negative: in the past).
    Relative(i64),
}

impl Operand {
    /// The query's `now`.
    pub fn now() -> Operand {
        Operand::Relative(0)
    }

    /// `now - days`.
    pub fn days_ago(days: i64) -> Operand {
        Operand::Relative(days.saturating_mul(-86_400))
    }

    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Operand::Text(_) => "text",
            Operand::Integer(_) => "integer",
            Operand::Decimal(_) => "decimal",
            Operand::Boolean(_) => "boolean",
            Operand::Date(_) => "date",
            Operand::Timestamp(_) | Operand::Relative(_) => "timestamp",
        }
    }
}

impl From<&str> for Operand {
    fn from(v: &str) -> Self {
        Operand::Text(v.to_owned())
    }
}
impl From<String> for Operand {
    fn from(v: String) -> Self {
        Operand::Text(v)
    }
}
impl From<i64> for Operand {
    fn from(v: i64) -> Self {
        Operand::Integer(v)
    }
}
impl From<Decimal> for Operand {
    fn from(v: Decimal) -> Self {
        Operand::Decimal(v)
    }
}
impl From<bool> for Operand {
    fn from(v: bool) -> Self {
        Operand::Boolean(v)
    }
}
impl From<NaiveDate> for Operand {
    fn from(v: NaiveDate) -> Self {
        Operand::Date(v)
    }
}
impl From<DateTime<Utc>> for Operand {
    fn from(v: DateTime<Utc>) -> Self {
        Operand::Timestamp(v)
    }
}
impl From<Stage> for Operand {
    fn from(v: Stage) -> Self {
        Operand::Text(v.as_str().to_owned())
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        syntax::write_operand(f, self)
    }
}

/// How close a fuzzy match must be.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// At most this many single-character edits (Levenshtein).
    EditDistance(u32),
    /// A Jaro-Winkler similarity of at least this (0 to 1).
    JaroWinkler(f64),
}

/// What a [`Filter::Test`] checks about a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// Some value equals the operand.
    Eq(Operand),
    /// No value equals the operand.
    Ne(Operand),
    /// Some value is below the operand.
    Lt(Operand),
    /// Some value is at most the operand.
    Le(Operand),
    /// Some value is above the operand.
    Gt(Operand),
    /// Some value is at least the operand.
    Ge(Operand),
    /// Some value equals one of the operands.
    In(Vec<Operand>),
    /// Every operand equals some value.
    All(Vec<Operand>),
    /// Some value starts with the text.
    Prefix(String),
    /// The field has a value.
    IsSet,
    /// The field has no value.
    IsMissing,
    /// Some value is close to the text.
    Fuzzy {
        /// The text to compare with, standardised like the field.
        text: String,
        /// How close.
        similarity: Similarity,
    },
    /// Some value shares a Double Metaphone key with the text.
    SoundsLike(String),
}

/// Which customers belong to a segment: data, combined freely with `&`, `|` and `!`
/// (or [`Filter::and`], [`Filter::or`]).
///
/// Its `Display` is the text syntax, which [`Filter::parse`] reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Filter {
    /// Every customer (`true`) or none (`false`).
    Const(bool),
    /// Customers matching every filter (none: every customer).
    And(Vec<Filter>),
    /// Customers matching any filter (none: no customer).
    Or(Vec<Filter>),
    /// Customers not matching the filter.
    Not(Box<Filter>),
    /// A test of one field.
    Test {
        /// The field.
        field: Field,
        /// The test.
        op: Op,
    },
    /// Consent for `purpose` on `channel` is granted at the query's `now`
    /// ([`Customer::has_consent`](crate::Customer::has_consent)).
    Consent {
        /// The channel.
        channel: Channel,
        /// The purpose (`marketing`, ...), compared case-insensitively.
        purpose: String,
    },
}

impl Filter {
    /// Every customer.
    pub fn all() -> Filter {
        Filter::Const(true)
    }

    /// Consent for `purpose` on `channel` is in force and granted.
    pub fn consent(channel: Channel, purpose: impl Into<String>) -> Filter {
        Filter::Consent {
            channel,
            purpose: purpose.into(),
        }
    }

    /// Reads the text syntax.
    ///
    /// ```
    /// use customerdb::query::{Field, Filter};
    /// let f = Filter::parse(r#"tag in ("vip", "gold") and not (stage = "churned")"#)?;
    /// assert_eq!(f, Field::Tag.one_of(["vip", "gold"]) & !Field::Stage.eq("churned"));
    /// let err = Filter::parse("country = ").unwrap_err();
    /// assert_eq!((err.position, err.expected.as_str()), (10, "a value"));
    /// # Ok::<(), customerdb::query::ParseError>(())
    /// ```
    ///
    /// # Errors
    /// A [`ParseError`] with the byte position, what was expected and what was found.
    pub fn parse(text: &str) -> std::result::Result<Filter, ParseError> {
        syntax::parse(text)
    }

    /// Both this and `other` (flattening nested ands).
    #[must_use]
    pub fn and(self, other: Filter) -> Filter {
        Filter::And(self.join(other, false))
    }

    /// This or `other` (flattening nested ors).
    #[must_use]
    pub fn or(self, other: Filter) -> Filter {
        Filter::Or(self.join(other, true))
    }

    /// The parts of `self` and `other`, each unpacked if it is already an or (`or`) or an
    /// and (not `or`).
    fn join(self, other: Filter, or: bool) -> Vec<Filter> {
        let parts = |f: Filter| match (f, or) {
            (Filter::Or(v), true) | (Filter::And(v), false) => v,
            (f, _) => vec![f],
        };
        let mut all = parts(self);
        all.extend(parts(other));
        all
    }

    /// Compiles the filter for evaluation on records, with `now` fixed. Without a schema,
    /// attribute operands are compared with whatever type each record holds; with one, they
    /// are checked against the declared types first.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] for an equality operand that does not standardise (an
    /// invalid email, phone, country or stage); [`crate::ErrorKind::AttributeType`] for an
    /// operand of the wrong type; [`crate::ErrorKind::UnknownAttribute`] for an attribute the
    /// schema does not declare.
    pub fn compile(
        &self,
        schema: Option<&crate::model::Schema>,
        now: DateTime<Utc>,
    ) -> Result<Predicate> {
        eval::compile(self, schema, now)
    }
}

impl std::str::FromStr for Filter {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Filter, ParseError> {
        syntax::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        syntax::write_filter(f, self)
    }
}

impl ops::BitAnd for Filter {
    type Output = Filter;
    fn bitand(self, rhs: Filter) -> Filter {
        self.and(rhs)
    }
}

impl ops::BitOr for Filter {
    type Output = Filter;
    fn bitor(self, rhs: Filter) -> Filter {
        self.or(rhs)
    }
}

impl ops::Not for Filter {
    type Output = Filter;
    fn not(self) -> Filter {
        Filter::Not(Box::new(self))
    }
}

/// A named filter: what a host saves as a segment.
///
/// ```
/// use chrono::Utc;
/// use customerdb::query::Segment;
/// use customerdb::{Customer, Metrics, Record, CustomerId};
///
/// let lapsed = Segment::parse("lapsed", "order_count >= 1 and last_purchase < now - 90d")?;
/// let json = serde_json::to_string(&lapsed).expect("serialisable");
/// let back: Segment = serde_json::from_str(&json).expect("readable");
/// assert_eq!(back, lapsed);
/// let now = Utc::now();
/// let rec = Record {
///     id: CustomerId::from_u64(1), created_at: now, updated_at: now, revision: 1,
///     customer: Customer::default(),
/// };
/// assert!(!lapsed.matches(&rec, &Metrics::default(), now)?);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// The segment's name.
    pub name: String,
    /// Who belongs to it.
    pub filter: Filter,
}

impl Segment {
    /// A segment.
    pub fn new(name: impl Into<String>, filter: Filter) -> Segment {
        Segment {
            name: name.into(),
            filter,
        }
    }

    /// A segment whose filter is given in the text syntax.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] (field `filter`) with the [`ParseError`] as its source.
    pub fn parse(name: impl Into<String>, filter: &str) -> Result<Segment> {
        Ok(Segment::new(name, Filter::parse(filter)?))
    }

    /// Whether a customer with these metrics belongs to the segment at `now`. To test many
    /// customers, [`Filter::compile`] once and use [`Predicate::matches`].
    ///
    /// # Errors
    /// As [`Filter::compile`].
    pub fn matches(&self, record: &Record, metrics: &Metrics, now: DateTime<Utc>) -> Result<bool> {
        Ok(self.filter.compile(None, now)?.matches(record, metrics))
    }

    /// A query for the segment's members.
    pub fn query(&self) -> Query {
        Query::filter(self.filter.clone())
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Smallest first; missing values first.
    #[default]
    Asc,
    /// Largest first; missing values last.
    Desc,
}

/// A filter with a sort order, a limit and a cursor; run inside a transaction.
///
/// Results are sorted by the sort field (its smallest value when it has several; missing
/// first when ascending), ties broken by id ascending; without a sort field, by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    filter: Filter,
    sort: Option<(Field, Order)>,
    limit: Option<usize>,
    after: Option<Cursor>,
    now: Option<DateTime<Utc>>,
}

impl Query {
    /// The customers matching `filter`.
    pub fn filter(filter: Filter) -> Query {
        Query {
            filter,
            sort: None,
            limit: None,
            after: None,
            now: None,
        }
    }

    /// Every customer.
    pub fn all() -> Query {
        Query::filter(Filter::all())
    }

    /// The filter, parsed from the text syntax.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] (field `filter`) with the [`ParseError`] as its source.
    pub fn parse(filter: &str) -> Result<Query> {
        Ok(Query::filter(Filter::parse(filter)?))
    }

    /// Sorts by `field` in `order` (ties by id).
    #[must_use]
    pub fn sort_by(mut self, field: Field, order: Order) -> Query {
        self.sort = Some((field, order));
        self
    }

    /// Returns at most `n` customers.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Query {
        self.limit = Some(n);
        self
    }

    /// Starts after `cursor` (from [`Page::next`] or [`Cursor::new`]): keyset paging, which
    /// stays correct while customers are added, changed and removed between pages.
    #[must_use]
    pub fn after(mut self, cursor: Cursor) -> Query {
        self.after = Some(cursor);
        self
    }

    /// Fixes `now` for relative times, consent and recency (default: the clock when run).
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>) -> Query {
        self.now = Some(now);
        self
    }

    /// The query's filter.
    pub fn filter_ref(&self) -> &Filter {
        &self.filter
    }

    /// The field the query sorts by, if any.
    pub fn sort_field(&self) -> Option<&Field> {
        self.sort.as_ref().map(|(f, _)| f)
    }
}
