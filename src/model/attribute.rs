//! Custom attributes: typed values whose names and types a store declares in its schema.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The type of a custom attribute, as declared in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    /// Free text.
    Text,
    /// A signed 64-bit integer.
    Integer,
    /// An exact decimal number (up to 28 fractional digits), e.g. a score or an amount.
    Decimal,
    /// True or false.
    Boolean,
    /// A calendar date.
    Date,
    /// An instant in time, in UTC.
    Timestamp,
    /// A list of texts; indexed, each element gets its own entry.
    TextList,
}

impl AttributeType {
    /// The type's name, as used in errors and the text query syntax.
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeType::Text => "text",
            AttributeType::Integer => "integer",
            AttributeType::Decimal => "decimal",
            AttributeType::Boolean => "boolean",
            AttributeType::Date => "date",
            AttributeType::Timestamp => "timestamp",
            AttributeType::TextList => "text_list",
        }
    }

    /// The type named `s` (as [`AttributeType::as_str`] spells it).
    pub fn parse(s: &str) -> Option<AttributeType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "text" => AttributeType::Text,
            "integer" | "int" => AttributeType::Integer,
            "decimal" => AttributeType::Decimal,
            "boolean" | "bool" => AttributeType::Boolean,
            "date" => AttributeType::Date,
            "timestamp" => AttributeType::Timestamp,
            "text_list" | "list" => AttributeType::TextList,
            _ => return None,
        })
    }
}

impl fmt::Display for AttributeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A custom attribute's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeValue {
    /// Free text.
    Text(String),
    /// A signed 64-bit integer.
    Integer(i64),
    /// An exact decimal.
    Decimal(#[serde(with = "super::wire::decimal")] Decimal),
    /// True or false.
    Boolean(bool),
    /// A calendar date.
    Date(#[serde(with = "super::wire::date")] NaiveDate),
    /// An instant in UTC.
    Timestamp(#[serde(with = "super::wire::timestamp")] DateTime<Utc>),
    /// A list of texts.
    TextList(Vec<String>),
}

impl AttributeValue {
    /// The value's type.
    pub fn attribute_type(&self) -> AttributeType {
        match self {
            AttributeValue::Text(_) => AttributeType::Text,
            AttributeValue::Integer(_) => AttributeType::Integer,
            AttributeValue::Decimal(_) => AttributeType::Decimal,
            AttributeValue::Boolean(_) => AttributeType::Boolean,
            AttributeValue::Date(_) => AttributeType::Date,
            AttributeValue::Timestamp(_) => AttributeType::Timestamp,
            AttributeValue::TextList(_) => AttributeType::TextList,
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        AttributeValue::Text(v.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::Text(v)
    }
}
impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Integer(v)
    }
}
impl From<Decimal> for AttributeValue {
    fn from(v: Decimal) -> Self {
        AttributeValue::Decimal(v)
    }
}
impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Boolean(v)
    }
}
impl From<NaiveDate> for AttributeValue {
    fn from(v: NaiveDate) -> Self {
        AttributeValue::Date(v)
    }
}
impl From<DateTime<Utc>> for AttributeValue {
    fn from(v: DateTime<Utc>) -> Self {
        AttributeValue::Timestamp(v)
    }
}
impl From<Vec<String>> for AttributeValue {
    fn from(v: Vec<String>) -> Self {
        AttributeValue::TextList(v)
    }
}

/// The declaration of one custom attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeDef {
    /// The attribute's name: 1 to 64 characters of ASCII letters, digits, `_` and `-`.
    pub name: String,
    /// The type every value must have.
    pub ty: AttributeType,
    /// The index tag the store allocated when the attribute was declared indexed; `None` while
    /// it is not indexed.
    pub(crate) slot: Option<u16>,
}

impl AttributeDef {
    /// Whether a secondary index is kept on the attribute.
    pub fn is_indexed(&self) -> bool {
        self.slot.is_some()
    }
}

/// The custom attributes a store declares, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    attributes: BTreeMap<String, AttributeDef>,
}

impl Schema {
    /// The declaration of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&AttributeDef> {
        self.attributes.get(name)
    }

    /// Every declaration, by name.
    pub fn iter(&self) -> impl Iterator<Item = &AttributeDef> {
        self.attributes.values()
    }

    /// How many attributes are declared.
    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    /// Whether no attribute is declared.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    pub(crate) fn insert(&mut self, def: AttributeDef) {
        self.attributes.insert(def.name.clone(), def);
    }

    /// Checks that every value in `attrs` is declared and has its declared type.
    pub(crate) fn check(&self, attrs: &BTreeMap<String, AttributeValue>) -> Result<()> {
        for (name, value) in attrs {
            let def = self.get(name).ok_or_else(|| {
                Error::new(ErrorKind::UnknownAttribute {
                    name: name.clone(),
                    declared: false,
                })
            })?;
            if def.ty != value.attribute_type() {
                return Err(Error::new(ErrorKind::AttributeType {
                    name: name.clone(),
                    expected: def.ty.as_str(),
                    found: value.attribute_type().as_str(),
                }));
            }
        }
        Ok(())
    }

    /// The highest index slot in use.
    pub(crate) fn max_slot(&self) -> Option<u16> {
        self.attributes.values().filter_map(|d| d.slot).max()
    }
}

/// Whether `name` is an acceptable attribute name.
pub(crate) fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_refuses_undeclared_and_mistyped_values() {
        let mut schema = Schema::default();
        schema.insert(AttributeDef {
            name: "score".into(),
            ty: AttributeType::Integer,
            slot: None,
        });
        let mut attrs = BTreeMap::new();
        attrs.insert("score".to_owned(), AttributeValue::Integer(3));
        assert!(schema.check(&attrs).is_ok());
        attrs.insert("score".to_owned(), AttributeValue::Text("3".into()));
        let e = schema.check(&attrs).unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::AttributeType {
                expected: "integer",
                found: "text",
                ..
            }
        ));
        attrs.clear();
        attrs.insert("nope".to_owned(), AttributeValue::Boolean(true));
        assert!(matches!(
            schema.check(&attrs).unwrap_err().kind(),
            ErrorKind::UnknownAttribute { .. }
        ));
    }

    #[test]
    fn attribute_names_are_restricted() {
        assert!(is_valid_name("loyalty_tier"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("has space"));
        assert!(!is_valid_name(&"x".repeat(65)));
    }
}
