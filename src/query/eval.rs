//! Compiling a filter (operands standardised, `now` fixed, index uses worked out) and
//! evaluating it on a decoded record. This evaluator defines what a filter means; the planner
//! may only use an index where the index gives exactly the evaluator's answer.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Bound;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use rust_decimal::Decimal;

use super::{Field, Filter, Op, Operand, Similarity};
use crate::error::{Error, ErrorKind, Result};
use crate::index::{Index, Scan, Value};
use crate::model::{
    AttributeType, AttributeValue, Channel, CountryCode, Email, Gender, Metrics, Phone, Record,
    Schema, Stage,
};
use crate::normalize::{Reason, fold_key, name_key, phonetic_keys, postcode_key};

/// A compiled filter: operands standardised and `now` fixed, ready to test many records.
///
/// ```
/// use chrono::Utc;
/// use customerdb::query::Filter;
/// use customerdb::{Customer, CustomerId, Metrics, Record};
/// let p = Filter::parse(r#"tag = "VIP" or order_count > 0"#)?.compile(None, Utc::now())?;
/// let now = Utc::now();
/// let rec = Record {
///     id: CustomerId::from_u64(1), created_at: now, updated_at: now, revision: 1,
///     customer: Customer::builder().name("Ada").tag("vip").build()?,
/// };
/// assert!(p.matches(&rec, &Metrics::default()));
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Predicate {
    pub(crate) node: Node,
    pub(crate) now: DateTime<Utc>,
}

impl Predicate {
    /// Whether the customer with these metrics matches.
    pub fn matches(&self, record: &Record, metrics: &Metrics) -> bool {
        self.node.matches(record, metrics, self.now)
    }

    /// Whether evaluating needs the customer's metrics (otherwise any may be passed).
    pub fn needs_metrics(&self) -> bool {
        self.node.needs_metrics()
    }
}

/// A compiled filter node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(bool),
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Leaf(Box<Leaf>),
    Consent { channel: Channel, purpose: String },
}

/// One field test, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub(crate) field: Field,
    pub(crate) test: Test,
    /// The test as written, for plans.
    pub(crate) source: Filter,
    /// The index reads that give exactly this test's customers, if there are such.
    pub(crate) index: Option<IndexUse>,
}

/// A compiled test of a field's values.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Cmp(Ordering, bool, Val<'static>),
    In(Vec<Val<'static>>),
    All(Vec<Val<'static>>),
    Prefix(String),
    IsSet,
    Fuzzy(String, Similarity),
    SoundsLike(Vec<String>),
}

/// Index reads equivalent to a leaf: the union (or intersection) of `scans` of `index`.
#[derive(Debug, Clone)]
pub(crate) struct IndexUse {
    pub(crate) index: Index,
    pub(crate) scans: Vec<Scan>,
    pub(crate) intersect: bool,
    /// A metric index: customers without activities have no entry and hold the defaults.
    pub(crate) metric: bool,
}

/// A value of a field or an operand, compared in the field's key form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Val<'a> {
    Text(Cow<'a, str>),
    Int(i64),
    Dec(Decimal),
    Bool(bool),
    Date(NaiveDate),
    Ts(DateTime<Utc>),
}

impl Val<'_> {
    pub(crate) fn into_owned(self) -> Val<'static> {
        match self {
            Val::Text(t) => Val::Text(Cow::Owned(t.into_owned())),
            Val::Int(v) => Val::Int(v),
            Val::Dec(v) => Val::Dec(v),
            Val::Bool(v) => Val::Bool(v),
            Val::Date(v) => Val::Date(v),
            Val::Ts(v) => Val::Ts(v),
        }
    }

    /// The value as an operand (for cursors).
    pub(crate) fn to_operand(&self) -> Operand {
        match self {
            Val::Text(t) => Operand::Text(t.to_string()),
            Val::Int(v) => Operand::Integer(*v),
            Val::Dec(v) => Operand::Decimal(*v),
            Val::Bool(v) => Operand::Boolean(*v),
            Val::Date(v) => Operand::Date(*v),
            Val::Ts(v) => Operand::Timestamp(*v),
        }
    }

    /// The value as a number, for aggregates.
    pub(crate) fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Val::Int(v) => Some(Decimal::from(*v)),
            Val::Dec(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as text, for group keys.
    pub(crate) fn to_text(&self) -> String {
        match self {
            Val::Text(t) => t.to_string(),
            other => other.to_operand().to_string(),
        }
    }
}

/// Compares a field value with an operand; integers and decimals compare as numbers, a
/// timestamp with a date at its midnight, a date with a timestamp's date. `None`: not
/// comparable.
pub(crate) fn compare(value: &Val<'_>, operand: &Val<'_>) -> Option<Ordering> {
    Some(match (value, operand) {
        (Val::Text(a), Val::Text(b)) => a.cmp(b),
        (Val::Int(a), Val::Int(b)) => a.cmp(b),
        (Val::Dec(a), Val::Dec(b)) => a.cmp(b),
        (Val::Int(a), Val::Dec(b)) => Decimal::from(*a).cmp(b),
        (Val::Dec(a), Val::Int(b)) => a.cmp(&Decimal::from(*b)),
        (Val::Bool(a), Val::Bool(b)) => a.cmp(b),
        (Val::Date(a), Val::Date(b)) => a.cmp(b),
        (Val::Ts(a), Val::Ts(b)) => a.cmp(b),
        (Val::Ts(a), Val::Date(b)) => a.cmp(&midnight(*b)),
        (Val::Date(a), Val::Ts(b)) => a.cmp(&b.date_naive()),
        _ => return None,
    })
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(NaiveTime::MIN).and_utc()
}

/// How a text field's values are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    /// `name_key`.
    Name,
    Email,
    Phone,
    Country,
    Postcode,
    Stage,
    Gender,
    /// `fold_key`.
    Fold,
}

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text(TextKind),
    Int,
    Dec,
    Bool,
    Date,
    Ts,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text(_) => "text",
            Kind::Int => "integer",
            Kind::Dec => "decimal",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::Ts => "timestamp",
        }
    }

    fn of_attribute(ty: AttributeType) -> Kind {
        match ty {
            AttributeType::Text | AttributeType::TextList => Kind::Text(TextKind::Fold),
            AttributeType::Integer => Kind::Int,
            AttributeType::Decimal => Kind::Dec,
            AttributeType::Boolean => Kind::Bool,
            AttributeType::Date => Kind::Date,
            AttributeType::Timestamp => Kind::Ts,
        }
    }
}

/// A field's value type (`None`: an attribute with no schema to say), and its index.
fn describe(field: &Field, schema: Option<&Schema>) -> Result<(Option<Kind>, Option<Index>)> {
    use TextKind as T;
    let text = |k| Some(Kind::Text(k));
    Ok(match field {
        Field::GivenName => (text(T::Name), Some(Index::GivenName)),
        Field::FamilyName => (text(T::Name), Some(Index::FamilyName)),
        Field::Email => (text(T::Email), Some(Index::Email)),
        Field::Phone => (text(T::Phone), Some(Index::Phone)),
        Field::Country => (text(T::Country), Some(Index::Country)),
        Field::Locality => (text(T::Fold), Some(Index::Locality)),
        Field::Postcode => (text(T::Postcode), Some(Index::Postcode)),
        Field::Stage => (text(T::Stage), Some(Index::Stage)),
        Field::Owner => (text(T::Fold), Some(Index::Owner)),
        Field::Tag => (text(T::Fold), Some(Index::Tag)),
        Field::Name | Field::Source | Field::Organization | Field::JobTitle => {
            (text(T::Fold), None)
        }
        Field::Gender => (text(T::Gender), None),
        Field::BirthDate => (Some(Kind::Date), Some(Index::BirthDate)),
        Field::CreatedAt => (Some(Kind::Ts), Some(Index::CreatedAt)),
        Field::UpdatedAt => (Some(Kind::Ts), Some(Index::UpdatedAt)),
        Field::OrderCount => (Some(Kind::Int), Some(Index::OrderCount)),
        Field::TotalSpend => (Some(Kind::Int), Some(Index::TotalSpend)),
        Field::FirstPurchase => (Some(Kind::Ts), Some(Index::FirstPurchase)),
        Field::LastPurchase => (Some(Kind::Ts), Some(Index::LastPurchase)),
        Field::LastInteraction => (Some(Kind::Ts), Some(Index::LastInteraction)),
        Field::OpenTickets => (Some(Kind::Int), Some(Index::OpenTickets)),
        Field::RecencyDays => (Some(Kind::Int), None),
        Field::Attribute(name) => match schema {
            None => (None, None),
            Some(s) => {
                let def = s.get(name).ok_or_else(|| {
                    Error::new(ErrorKind::UnknownAttribute {
                        name: name.clone(),
                        declared: false,
                    })
                })?;
                let index = def.is_indexed().then(|| Index::Attribute(name.clone()));
                (Some(Kind::of_attribute(def.ty)), index)
            }
        },
    })
}

/// Compiles `filter` (see [`Filter::compile`]).
pub(crate) fn compile(
    filter: &Filter,
    schema: Option<&Schema>,
    now: DateTime<Utc>,
) -> Result<Predicate> {
    let node = Compiler { schema, now }.node(filter)?;
    Ok(Predicate { node, now })
}

struct Compiler<'s> {
    schema: Option<&'s Schema>,
    now: DateTime<Utc>,
}

/// What an operand is standardised for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Equality,
    Order,
}

impl Compiler<'_> {
    fn node(&self, f: &Filter) -> Result<Node> {
        Ok(match f {
            Filter::Const(b) => Node::Const(*b),
            Filter::And(fs) => Node::And(fs.iter().map(|f| self.node(f)).collect::<Result<_>>()?),
            Filter::Or(fs) => Node::Or(fs.iter().map(|f| self.node(f)).collect::<Result<_>>()?),
            Filter::Not(f) => Node::Not(Box::new(self.node(f)?)),
            Filter::Consent { channel, purpose } => Node::Consent {
                channel: *channel,
                purpose: purpose.trim().to_lowercase(),
            },
            Filter::Test { field, op } => match op {
                Op::Ne(v) => Node::Not(Box::new(self.leaf(field, &Op::Eq(v.clone()))?)),
                Op::IsMissing => Node::Not(Box::new(self.leaf(field, &Op::IsSet)?)),
                op => self.leaf(field, op)?,
            },
        })
    }

    fn leaf(&self, field: &Field, op: &Op) -> Result<Node> {
        let (kind, index) = describe(field, self.schema)?;
        let metric = field.is_metric();
        let mut scans = Vec::new();
        let mut intersect = false;
        // Text ranges are indexable only where the index standardises bounds as we do.
        let text_ranges = !matches!(
            kind,
            Some(Kind::Text(
                TextKind::Email | TextKind::Phone | TextKind::Country | TextKind::Gender
            ))
        );
        let mut indexable = index.is_some();
        let test = match op {
            Op::Eq(v) | Op::Lt(v) | Op::Le(v) | Op::Gt(v) | Op::Ge(v) => {
                let (test, scan) = self.comparison(field, kind, op, v)?;
                indexable &= matches!(scan, Scan::Eq(_)) || text_ranges;
                scans.push(scan);
                test
            }
            Op::In(vs) | Op::All(vs) => {
                let mut vals = Vec::with_capacity(vs.len());
                for v in vs {
                    let (val, key) = self.operand(field, kind, v, Purpose::Equality)?;
                    vals.push(val);
                    scans.push(Scan::Eq(key));
                }
                if matches!(op, Op::All(_)) {
                    intersect = true;
                    Test::All(vals)
                } else {
                    Test::In(vals)
                }
            }
            Op::Prefix(p) => {
                let tk = text_kind(field, kind)?;
                scans.push(Scan::Prefix(p.clone()));
                Test::Prefix(prefix_key(tk, p))
            }
            Op::IsSet => {
                scans.push(Scan::All);
                Test::IsSet
            }
            Op::Fuzzy { text, similarity } => {
                let tk = text_kind(field, kind)?;
                indexable = false;
                let key = if tk == TextKind::Name {
                    name_key(text)
                } else {
                    fold_key(text)
                };
                Test::Fuzzy(key, *similarity)
            }
            Op::SoundsLike(text) => {
                text_kind(field, kind)?;
                indexable = *field == Field::FamilyName;
                scans.push(Scan::Eq(Value::Text(text.clone())));
                Test::SoundsLike(phonetic_keys(text))
            }
            // Compiled as `not` of their opposites by `node`.
            Op::Ne(_) | Op::IsMissing => unreachable_op(field)?,
        };
        let index = match index {
            Some(Index::FamilyName) if matches!(op, Op::SoundsLike(_)) => {
                Some(Index::FamilyPhonetic)
            }
            other => other,
        };
        let index = index.filter(|_| indexable).map(|index| IndexUse {
            index,
            scans,
            intersect,
            metric,
        });
        Ok(Node::Leaf(Box::new(Leaf {
            field: field.clone(),
            test,
            source: Filter::Test {
                field: field.clone(),
                op: op.clone(),
            },
            index,
        })))
    }

    /// A comparison's test and the index scan that answers it.
    fn comparison(
        &self,
        field: &Field,
        kind: Option<Kind>,
        op: &Op,
        v: &Operand,
    ) -> Result<(Test, Scan)> {
        let (ord, or_equal) = match op {
            Op::Lt(_) => (Ordering::Less, false),
            Op::Le(_) => (Ordering::Less, true),
            Op::Gt(_) => (Ordering::Greater, false),
            Op::Ge(_) => (Ordering::Greater, true),
            _ => (Ordering::Equal, true),
        };
        let purpose = if ord == Ordering::Equal {
            Purpose::Equality
        } else {
            Purpose::Order
        };
        let (val, key) = self.operand(field, kind, v, purpose)?;
        let scan = match (ord, or_equal) {
            (Ordering::Equal, _) => Scan::Eq(key),
            (Ordering::Less, true) => Scan::Range(Bound::Unbounded, Bound::Included(key)),
            (Ordering::Less, false) => Scan::Range(Bound::Unbounded, Bound::Excluded(key)),
            (Ordering::Greater, true) => Scan::Range(Bound::Included(key), Bound::Unbounded),
            (Ordering::Greater, false) => Scan::Range(Bound::Excluded(key), Bound::Unbounded),
        };
        Ok((Test::Cmp(ord, or_equal, val), scan))
    }

    /// The operand as the evaluator compares it, and as the index is given it.
    fn operand(
        &self,
        field: &Field,
        kind: Option<Kind>,
        v: &Operand,
        purpose: Purpose,
    ) -> Result<(Val<'static>, Value)> {
        let mismatch = |expected: &'static str| {
            Error::new(ErrorKind::AttributeType {
                name: field.name().to_owned(),
                expected,
                found: v.kind_name(),
            })
        };
        let at = |secs: i64| -> Result<DateTime<Utc>> {
            TimeDelta::try_seconds(secs)
                .and_then(|d| self.now.checked_add_signed(d))
                .ok_or_else(|| Error::invalid(field.name(), v.to_string(), Reason::Malformed))
        };
        let val = match (kind, v) {
            (Some(Kind::Text(tk)), Operand::Text(s)) => {
                let key = if purpose == Purpose::Equality {
                    equality_key(field, tk, s)?
                } else {
                    order_key(tk, s)
                };
                // Text goes to the index as given: it standardises it the same way.
                return Ok((Val::Text(Cow::Owned(key)), Value::Text(s.clone())));
            }
            (None, Operand::Text(s)) => Val::Text(Cow::Owned(fold_key(s))),
            (Some(Kind::Int) | None, Operand::Integer(i)) => Val::Int(*i),
            (Some(Kind::Dec), Operand::Integer(i)) => Val::Dec(Decimal::from(*i)),
            (Some(Kind::Dec) | None, Operand::Decimal(d)) => Val::Dec(*d),
            (Some(Kind::Bool) | None, Operand::Boolean(b)) => Val::Bool(*b),
            (Some(Kind::Date) | None, Operand::Date(d)) => Val::Date(*d),
            (Some(Kind::Date), Operand::Timestamp(t)) => Val::Date(t.date_naive()),
            (Some(Kind::Date), Operand::Relative(s)) => Val::Date(at(*s)?.date_naive()),
            (Some(Kind::Ts) | None, Operand::Timestamp(t)) => Val::Ts(*t),
            (Some(Kind::Ts) | None, Operand::Relative(s)) => Val::Ts(at(*s)?),
            (Some(Kind::Ts), Operand::Date(d)) => Val::Ts(midnight(*d)),
            (Some(k), _) => return Err(mismatch(k.name())),
        };
        let value = match &val {
            Val::Text(t) => Value::Text(t.to_string()),
            Val::Int(i) => Value::Integer(*i),
            Val::Dec(d) => Value::Decimal(*d),
            Val::Bool(b) => Value::Boolean(*b),
            Val::Date(d) => Value::Date(*d),
            Val::Ts(t) => Value::Timestamp(*t),
        };
        Ok((val, value))
    }
}

/// `Op::Ne` and `Op::IsMissing` never reach `leaf`; an error rather than a panic if they did.
fn unreachable_op(field: &Field) -> Result<Test> {
    Err(Error::invalid(field.name(), "", Reason::Malformed))
}

/// The field's text kind, or a type error for a text-only test of another kind of field.
fn text_kind(field: &Field, kind: Option<Kind>) -> Result<TextKind> {
    match kind {
        Some(Kind::Text(tk)) => Ok(tk),
        None => Ok(TextKind::Fold),
        Some(k) => Err(Error::new(ErrorKind::AttributeType {
            name: field.name().to_owned(),
            expected: k.name(),
            found: "text",
        })),
    }
}

/// An equality operand standardised like the field's values.
fn equality_key(field: &Field, tk: TextKind, s: &str) -> Result<String> {
    Ok(match tk {
        TextKind::Name => name_key(s),
        TextKind::Email => Email::parse(s)?.match_key().to_owned(),
        TextKind::Phone => Phone::parse(s, None)?.e164().to_owned(),
        TextKind::Country => CountryCode::parse(s)?.as_str().to_owned(),
        TextKind::Postcode => postcode_key(s),
        TextKind::Stage => Stage::parse(s)
            .ok_or_else(|| Error::invalid(field.name(), s, Reason::Malformed))?
            .as_str()
            .to_owned(),
        TextKind::Gender => gender_key(&Gender::parse(s)).into_owned(),
        TextKind::Fold => fold_key(s),
    })
}

/// An ordering operand, folded as the field's index folds range bounds.
fn order_key(tk: TextKind, s: &str) -> String {
    match tk {
        TextKind::Name => name_key(s),
        TextKind::Postcode => postcode_key(s),
        TextKind::Stage => s.trim().to_ascii_lowercase(),
        TextKind::Country => s.trim().to_ascii_uppercase(),
        _ => fold_key(s),
    }
}

/// A prefix, folded as the field's index folds prefixes.
fn prefix_key(tk: TextKind, s: &str) -> String {
    match tk {
        TextKind::Name => name_key(s),
        TextKind::Postcode => postcode_key(s),
        TextKind::Country => s.trim().to_ascii_uppercase(),
        _ => fold_key(s),
    }
}

fn gender_key(g: &Gender) -> Cow<'_, str> {
    Cow::Borrowed(match g {
        Gender::Female => "female",
        Gender::Male => "male",
        Gender::NonBinary => "non_binary",
        Gender::Undisclosed => "undisclosed",
        Gender::Other(s) => return Cow::Owned(fold_key(s)),
    })
}

/// Every value of `field` of a customer, in key form.
pub(crate) fn values<'a>(
    field: &Field,
    rec: &'a Record,
    m: &Metrics,
    now: DateTime<Utc>,
) -> Vec<Val<'a>> {
    let c = &rec.customer;
    let text = |s: &'a str| Val::Text(Cow::Borrowed(s));
    let folded = |s: &Option<String>| -> Vec<Val<'a>> {
        s.as_deref()
            .map(|s| Val::Text(Cow::Owned(fold_key(s))))
            .into_iter()
            .collect()
    };
    let name = c.name.as_ref();
    let count = |n: u64| Val::Int(i64::try_from(n).unwrap_or(i64::MAX));
    match field {
        Field::Name => name
            .map(|n| Val::Text(Cow::Owned(fold_key(n.display()))))
            .into_iter()
            .collect(),
        Field::GivenName => name
            .and_then(|n| n.given_key())
            .map(text)
            .into_iter()
            .collect(),
        Field::FamilyName => name
            .and_then(|n| n.family_key())
            .map(text)
            .into_iter()
            .collect(),
        Field::Email => c.emails.iter().map(|e| text(e.match_key())).collect(),
        Field::Phone => c.phones.iter().map(|p| text(p.e164())).collect(),
        Field::Country => c
            .addresses
            .iter()
            .filter_map(crate::model::Address::country)
            .map(|cc| Val::Text(Cow::Owned(cc.as_str().to_owned())))
            .collect(),
        Field::Locality => c
            .addresses
            .iter()
            .filter_map(|a| a.locality_key())
            .map(text)
            .collect(),
        Field::Postcode => c
            .addresses
            .iter()
            .filter_map(|a| a.postcode_key())
            .map(text)
            .collect(),
        Field::Stage => c.stage.map(|s| text(s.as_str())).into_iter().collect(),
        Field::Owner => c.owner.as_deref().map(text).into_iter().collect(),
        Field::Source => folded(&c.source),
        Field::Organization => folded(&c.organization),
        Field::JobTitle => folded(&c.job_title),
        Field::Gender => c
            .gender
            .as_ref()
            .map(|g| Val::Text(gender_key(g)))
            .into_iter()
            .collect(),
        Field::Tag => c.tags.iter().map(|t| text(t.as_str())).collect(),
        Field::BirthDate => c.birth_date.map(Val::Date).into_iter().collect(),
        Field::CreatedAt => vec![Val::Ts(rec.created_at)],
        Field::UpdatedAt => vec![Val::Ts(rec.updated_at)],
        Field::OrderCount => vec![count(m.order_count)],
        Field::TotalSpend => m.total_spend.map(Val::Int).into_iter().collect(),
        Field::FirstPurchase => m.first_purchase.map(Val::Ts).into_iter().collect(),
        Field::LastPurchase => m.last_purchase.map(Val::Ts).into_iter().collect(),
        Field::LastInteraction => m.last_interaction.map(Val::Ts).into_iter().collect(),
        Field::OpenTickets => vec![count(m.open_tickets)],
        Field::RecencyDays => m.rfm(now).recency_days.map(Val::Int).into_iter().collect(),
        Field::Attribute(name) => match c.attributes.get(name) {
            None => Vec::new(),
            Some(AttributeValue::Text(s)) => vec![Val::Text(Cow::Owned(fold_key(s)))],
            Some(AttributeValue::TextList(items)) => items
                .iter()
                .map(|s| Val::Text(Cow::Owned(fold_key(s))))
                .collect(),
            Some(AttributeValue::Integer(i)) => vec![Val::Int(*i)],
            Some(AttributeValue::Decimal(d)) => vec![Val::Dec(*d)],
            Some(AttributeValue::Boolean(b)) => vec![Val::Bool(*b)],
            Some(AttributeValue::Date(d)) => vec![Val::Date(*d)],
            Some(AttributeValue::Timestamp(t)) => vec![Val::Ts(*t)],
        },
    }
}

/// The key a customer sorts by on `field`: its smallest value.
pub(crate) fn sort_key(
    field: &Field,
    rec: &Record,
    m: &Metrics,
    now: DateTime<Utc>,
) -> Option<Val<'static>> {
    values(field, rec, m, now)
        .into_iter()
        .min()
        .map(Val::into_owned)
}

impl Node {
    pub(crate) fn matches(&self, rec: &Record, m: &Metrics, now: DateTime<Utc>) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::And(ns) => ns.iter().all(|n| n.matches(rec, m, now)),
            Node::Or(ns) => ns.iter().any(|n| n.matches(rec, m, now)),
            Node::Not(n) => !n.matches(rec, m, now),
            Node::Consent { channel, purpose } => rec.customer.has_consent(purpose, *channel, now),
            Node::Leaf(leaf) => leaf.matches(rec, m, now),
        }
    }

    /// Whether testing `self` reads the customer record (not only its metrics).
    pub(crate) fn needs_record(&self) -> bool {
        match self {
            Node::Const(_) => false,
            Node::Consent { .. } => true,
            Node::And(ns) | Node::Or(ns) => ns.iter().any(Node::needs_record),
            Node::Not(n) => n.needs_record(),
            Node::Leaf(leaf) => !leaf.field.is_metric(),
        }
    }

    pub(crate) fn needs_metrics(&self) -> bool {
        match self {
            Node::Const(_) | Node::Consent { .. } => false,
            Node::And(ns) | Node::Or(ns) => ns.iter().any(Node::needs_metrics),
            Node::Not(n) => n.needs_metrics(),
            Node::Leaf(leaf) => leaf.field.is_metric(),
        }
    }
}

impl Leaf {
    pub(crate) fn matches(&self, rec: &Record, m: &Metrics, now: DateTime<Utc>) -> bool {
        let vals = values(&self.field, rec, m, now);
        self.test_values(&vals, rec)
    }

    /// Whether a customer without activities (default metrics) passes this metric test.
    pub(crate) fn matches_default_metrics(&self, now: DateTime<Utc>) -> bool {
        let rec = Record {
            id: crate::model::CustomerId::from_u64(0),
            created_at: now,
            updated_at: now,
            revision: 0,
            customer: crate::model::Customer::default(),
        };
        self.matches(&rec, &Metrics::default(), now)
    }

    fn test_values(&self, vals: &[Val<'_>], rec: &Record) -> bool {
        let equal = |x: &Val<'_>, v: &Val<'_>| compare(x, v) == Some(Ordering::Equal);
        match &self.test {
            Test::Cmp(ord, or_equal, v) => vals.iter().any(|x| {
                compare(x, v).is_some_and(|o| o == *ord || (*or_equal && o == Ordering::Equal))
            }),
            Test::In(list) => vals.iter().any(|x| list.iter().any(|v| equal(x, v))),
            Test::All(list) => list.iter().all(|v| vals.iter().any(|x| equal(x, v))),
            Test::Prefix(p) => vals
                .iter()
                .any(|x| matches!(x, Val::Text(t) if t.starts_with(p.as_str()))),
            Test::IsSet => !vals.is_empty(),
            Test::Fuzzy(text, sim) => vals.iter().any(|x| match (x, sim) {
                (Val::Text(t), Similarity::EditDistance(k)) => {
                    strsim::levenshtein(t, text) <= usize::try_from(*k).unwrap_or(usize::MAX)
                }
                (Val::Text(t), Similarity::JaroWinkler(min)) => {
                    strsim::jaro_winkler(t, text) >= *min
                }
                _ => false,
            }),
            Test::SoundsLike(keys) => {
                if self.field == Field::FamilyName {
                    rec.customer
                        .name
                        .as_ref()
                        .is_some_and(|n| n.family_phonetic().iter().any(|k| keys.contains(k)))
                } else {
                    vals.iter().any(|x| match x {
                        Val::Text(t) => phonetic_keys(t).iter().any(|k| keys.contains(k)),
                        _ => false,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddressParts, Customer, CustomerId};

    fn rec(c: Customer) -> Record {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Record {
            id: CustomerId::from_u64(1),
            created_at: t,
            updated_at: t,
            revision: 1,
            customer: c,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).unwrap()
    }

    fn check(filter: &str, c: &Customer, m: &Metrics) -> bool {
        Filter::parse(filter)
            .unwrap()
            .compile(None, now())
            .unwrap()
            .matches(&rec(c.clone()), m)
    }

    fn meyer() -> Customer {
        Customer::builder()
            .name("Jürgen Meyer")
            .email("J.Meyer@Example.com")
            .tag("VIP")
            .tag("gold")
            .stage(Stage::Customer)
            .address(AddressParts {
                locality: Some("München".into()),
                postcode: Some("80331".into()),
                country: Some("de".into()),
                ..AddressParts::default()
            })
            .build()
            .unwrap()
    }

    #[test]
    fn text_compares_by_matching_key() {
        let c = meyer();
        let m = Metrics::default();
        assert!(check(r#"family_name = "MEYER""#, &c, &m));
        assert!(check(r#"locality = "munchen""#, &c, &m));
        assert!(check(r#"email = "j.meyer@example.com""#, &c, &m));
        assert!(check(
            r#"country = "de" and postcode starts_with "803""#,
            &c,
            &m
        ));
        assert!(check(
            r#"tag all ("vip", "Gold") and not (tag = "silver")"#,
            &c,
            &m
        ));
        assert!(!check(r#"tag all ("vip", "silver")"#, &c, &m));
    }

    #[test]
    fn fuzzy_and_phonetic_names_match_near_spellings() {
        let c = meyer();
        let m = Metrics::default();
        assert!(check(r#"family_name ~ "Meier" within 1"#, &c, &m));
        assert!(!check(r#"family_name ~ "Mayr" within 1"#, &c, &m));
        assert!(check(r#"family_name ~ "Meyers" jaro_winkler 0.9"#, &c, &m));
        assert!(check(r#"family_name sounds_like "Maier""#, &c, &m));
    }

    #[test]
    fn missing_values_fail_comparisons_and_pass_inequality() {
        let c = Customer::builder().name("Ada").build().unwrap();
        let m = Metrics::default();
        assert!(!check(r#"owner = "ana""#, &c, &m));
        assert!(check(r#"owner != "ana""#, &c, &m));
        assert!(check("owner is missing and email is missing", &c, &m));
        assert!(!check("attributes.score > 70", &c, &m));
    }

    #[test]
    fn default_metrics_are_zero_orders_and_no_dates() {
        let c = Customer::default();
        let m = Metrics::default();
        assert!(check("order_count < 3 and total_spend = 0", &c, &m));
        assert!(check(
            "last_purchase is missing and recency_days is missing",
            &c,
            &m
        ));
        assert!(!check("last_purchase < now", &c, &m));
    }

    #[test]
    fn relative_times_are_fixed_at_now() {
        let c = Customer::default();
        let m = Metrics {
            order_count: 4,
            last_purchase: Some(now() - TimeDelta::days(100)),
            ..Metrics::default()
        };
        assert!(check(
            "last_purchase < now - 90d and order_count >= 3",
            &c,
            &m
        ));
        assert!(check("recency_days >= 100 and recency_days < 101", &c, &m));
        assert!(!check("last_purchase >= now - 90d", &c, &m));
    }

    #[test]
    fn invalid_equality_operands_are_refused() {
        for bad in [
            r#"country = "Germany""#,
            r#"email = "not an email""#,
            r#"stage = "sleeping""#,
            r#"order_count = "three""#,
            "tag > 3",
        ] {
            let f = Filter::parse(bad).unwrap();
            assert!(f.compile(None, now()).is_err(), "{bad}");
        }
        let far = Filter::parse(&format!("created_at < now + {}d", i64::MAX / 86_400)).unwrap();
        assert!(far.compile(None, now()).is_err());
    }

    #[test]
    fn attributes_compare_across_integer_and_decimal() {
        let c = Customer::builder()
            .name("Ada")
            .attribute("score", Decimal::new(705, 1))
            .build()
            .unwrap();
        let m = Metrics::default();
        assert!(check("attributes.score > 70", &c, &m));
        assert!(check("attributes.score = 70.50", &c, &m));
        assert!(!check("attributes.score >= 71", &c, &m));
    }

    #[test]
    fn consent_uses_the_event_in_force_at_now() {
        use crate::model::{Consent, ConsentStatus};
        let at = |d: i64| now() - TimeDelta::days(d);
        let c = Customer::builder()
            .name("Ada")
            .consent(Consent::new(
                "Marketing",
                Channel::Email,
                ConsentStatus::Granted,
                at(10),
                "web",
            ))
            .consent(Consent::new(
                "marketing",
                Channel::Any,
                ConsentStatus::Withdrawn,
                at(-5),
                "web",
            ))
            .build()
            .unwrap();
        let m = Metrics::default();
        assert!(check("consent(email, marketing)", &c, &m));
        assert!(!check("consent(sms, marketing)", &c, &m));
    }
}
