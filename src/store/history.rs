//! History: every committed change as field-level before and after values, with a store-wide
//! sequence number, and the replay that rebuilds a customer as it was.
//!
//! A change's fields are the customer's top-level fields as they appear in its JSON export
//! (`name`, `emails`, `tags`, ...), with custom attributes one by one (`attributes.score`). An
//! empty value (no name, no emails) is absent: an insert lists only the fields it sets.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{ActivityId, Customer, CustomerId, Record};

/// What a [`Change`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// A customer was inserted; its fields are the values it was given.
    Insert,
    /// A customer's data was replaced; its fields are those that changed.
    Update,
    /// A customer was removed, with its activities; its fields are the values it had.
    Remove,
    /// The customer's state as of this change, standing for older changes that history
    /// retention compacted away.
    Snapshot,
    /// An activity was added; its one field, `activity`, holds it.
    ActivityAdded(ActivityId),
    /// An activity was corrected; `activity` holds it before and after.
    ActivityCorrected(ActivityId),
    /// An activity was removed; `activity` holds what it was.
    ActivityRemoved(ActivityId),
    /// A custom attribute was declared (no customer); `attribute` holds the declaration.
    AttributeDeclared,
    /// Other customers were merged into this one; its fields are those the merge changed.
    Merged,
    /// This customer was merged into another and is now an alias of it; its fields are the
    /// values it had. Its activities moved with it.
    MergedInto(CustomerId),
    /// A merge into this customer was undone; its fields are those that changed back.
    Unmerged,
    /// A merged-away customer was brought back by an unmerge; its fields are its values.
    Restored,
    /// The customer was erased: every earlier change of it is gone from history, and this
    /// entry (no fields) tells a feed consumer to erase its copy.
    Erased,
    /// Retention removed the customer's identity, keeping its activities and metrics: its
    /// earlier changes are gone from history and its data is now empty.
    Anonymised,
}

impl Operation {
    /// The operation's name (`insert`, `activity_added`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Remove => "remove",
            Operation::Snapshot => "snapshot",
            Operation::ActivityAdded(_) => "activity_added",
            Operation::ActivityCorrected(_) => "activity_corrected",
            Operation::ActivityRemoved(_) => "activity_removed",
            Operation::AttributeDeclared => "attribute_declared",
            Operation::Merged => "merged",
            Operation::MergedInto(_) => "merged_into",
            Operation::Unmerged => "unmerged",
            Operation::Restored => "restored",
            Operation::Erased => "erased",
            Operation::Anonymised => "anonymised",
        }
    }
}

/// A JSON value kept as its text, as history stores it: a change-feed consumer that forwards
/// changes (to a search index, a warehouse) never pays for parsing them, and one that needs the
/// value parses it with [`Json::to_value`].
///
/// The text is JSON the store wrote; it is not re-validated on every read (a damaged value
/// shows up as an error from [`Json::to_value`] or when serialising).
#[derive(Clone, PartialEq, Eq)]
pub struct Json(String);

impl Json {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parsed value.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupted`] if the text is not JSON (it always is when written by
    /// the store).
    pub fn to_value(&self) -> Result<Value> {
        serde_json::from_str(self.as_str()).map_err(|e| Error::corrupted("history value", e))
    }

    pub(crate) fn from_value(v: &Value) -> Json {
        Json(v.to_string())
    }

    /// Wraps text known to be JSON (`serde_json`'s output).
    pub(crate) fn from_json_text(text: String) -> Json {
        Json(text)
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Json {
    /// Embeds the value itself (not a string holding it) in the output.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|r| Json(r.get().to_owned()))
    }
}

/// One field's value before and after a change (`None`: absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field (`emails`, `attributes.score`, `activity`). The names of the customer's own
    /// fields are borrowed, so reading the change feed allocates no name.
    pub field: Cow<'static, str>,
    /// Its value before, as in the JSON export.
    pub before: Option<Json>,
    /// Its value after.
    pub after: Option<Json>,
}

/// One committed change: the unit of history and of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Store-wide sequence number: 1, 2, 3... in commit order, with no gaps except where history
    /// retention compacted changes into snapshots.
    pub seq: u64,
    /// When the change was made, by the store's clock.
    #[serde(with = "crate::model::wire::timestamp")]
    pub at: DateTime<Utc>,
    /// Who made it: the write transaction's actor ([`crate::Store::begin_write_as`]).
    pub actor: Option<String>,
    /// The customer changed (`None` for a schema change).
    pub customer: Option<CustomerId>,
    /// What was done.
    pub operation: Operation,
    /// The fields it changed.
    pub fields: Vec<FieldChange>,
}

/// The names a change can carry besides custom attributes: the customer's top-level JSON
/// fields, `activity` and `attribute`.
const FIELD_NAMES: [&str; 16] = [
    "activity",
    "addresses",
    "attribute",
    "birth_date",
    "consents",
    "emails",
    "external_ids",
    "gender",
    "job_title",
    "name",
    "organization",
    "owner",
    "phones",
    "source",
    "stage",
    "tags",
];

/// `name`, borrowed from [`FIELD_NAMES`] when it is one of them.
fn field_name(name: &str) -> Cow<'static, str> {
    match FIELD_NAMES.iter().find(|&&n| n == name) {
        Some(&n) => Cow::Borrowed(n),
        None => Cow::Owned(name.to_owned()),
    }
}

/// The stored form: values as JSON text, since postcard cannot carry a self-describing value.
/// Each field is the tuple `(name, before, after)`.
#[derive(Serialize)]
struct Stored<'a> {
    #[serde(with = "crate::model::wire::timestamp")]
    at: DateTime<Utc>,
    actor: Option<&'a str>,
    customer: Option<CustomerId>,
    operation: Operation,
    fields: StoredFields<'a>,
}

/// The stored form read back: the same layout as [`Stored`], each field decoded straight into
/// a [`FieldChange`] (the change feed decodes one entry per change it yields).
#[derive(Deserialize)]
struct StoredOwned {
    #[serde(with = "crate::model::wire::timestamp")]
    at: DateTime<Utc>,
    actor: Option<String>,
    customer: Option<CustomerId>,
    operation: Operation,
    fields: Vec<StoredField>,
}

struct StoredField(FieldChange);

impl<'de> Deserialize<'de> for StoredField {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Name(Cow<'static, str>);
        impl<'de> Deserialize<'de> for Name {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = Name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: serde::de::Error>(
                        self,
                        v: &str,
                    ) -> std::result::Result<Name, E> {
                        Ok(Name(field_name(v)))
                    }
                }
                d.deserialize_str(V)
            }
        }
        let (Name(field), before, after) =
            <(Name, Option<String>, Option<String>)>::deserialize(d)?;
        Ok(StoredField(FieldChange {
            field,
            before: before.map(Json),
            after: after.map(Json),
        }))
    }
}

pub(crate) fn encode(c: &Change) -> Result<Vec<u8>> {
    super::codec::encode(&Stored {
        at: c.at,
        actor: c.actor.as_deref(),
        customer: c.customer,
        operation: c.operation,
        fields: stored_fields(&c.fields),
    })
}

/// The first byte of an insert entry that holds the inserted record in place of its fields
/// (see [`encode_insert`]). Any other entry starts with its format version (a small number)
/// or, sealed, with `0xEC`.
const INSERT_OF_RECORD: u8 = 0xE1;

/// What an entry of [`INSERT_OF_RECORD`] form holds besides the record: a [`Stored`] without
/// the operation (an insert) and the fields (the record's).
#[derive(Serialize, Deserialize)]
struct InsertHead<'a> {
    #[serde(with = "crate::model::wire::timestamp")]
    at: DateTime<Utc>,
    actor: Option<Cow<'a, str>>,
    customer: CustomerId,
}

/// The stored form of `c`, the insert of a customer whose stored record (as
/// [`codec::encode`](super::codec::encode) makes it, unsealed) is `record`:
/// `0xE1 ++ codec(at, actor, customer) ++ record`. The fields are not stored but made from the
/// record when the entry is read ([`inserted`]); any `c` has (made for subscribers) are not
/// looked at.
///
/// Describing an insert field by field, as JSON texts, made the entry more than twice the size
/// of the record, and the history table the largest in the store; this form is the record's
/// size and costs a copy to write.
pub(crate) fn encode_insert(c: &Change, record: &[u8]) -> Result<Vec<u8>> {
    let Some(customer) = c.customer.filter(|_| c.operation == Operation::Insert) else {
        return Err(Error::corrupted(
            "history entry (while encoding)",
            "only an insert holds its record",
        ));
    };
    let head = super::codec::encode(&InsertHead {
        at: c.at,
        actor: c.actor.as_deref().map(Cow::Borrowed),
        customer,
    })?;
    let mut out = Vec::with_capacity(1 + head.len() + record.len());
    out.push(INSERT_OF_RECORD);
    out.extend_from_slice(&head);
    out.extend_from_slice(record);
    Ok(out)
}

type StoredFields<'a> = Vec<(&'a str, Option<&'a str>, Option<&'a str>)>;

fn stored_fields(fields: &[FieldChange]) -> StoredFields<'_> {
    fn text(v: Option<&Json>) -> Option<&str> {
        v.map(Json::as_str)
    }
    fields
        .iter()
        .map(|f| {
            (
                f.field.as_ref(),
                text(f.before.as_ref()),
                text(f.after.as_ref()),
            )
        })
        .collect()
}

/// Decodes history entry `seq`, opening a sealed one (an encrypted store's entry about a
/// customer) under the customer's key from `data_key`.
///
/// An `encrypted` store accepts a plain entry only where it writes one, where no personal data
/// is: an entry about no customer, or an `Erased` entry without fields. Any other plain entry
/// was not written by it (someone able to write the file could otherwise inject
/// unauthenticated changes), so it is [`ErrorKind::Corrupted`](crate::ErrorKind::Corrupted).
pub(crate) fn decode(
    seq: u64,
    bytes: &[u8],
    encrypted: bool,
    data_key: &dyn Fn(u64) -> Result<crate::crypt::SecretKey>,
) -> Result<Change> {
    if let Some(id) = super::crypt::sealed_history_owner(bytes)? {
        let plain = super::crypt::open_history(&data_key(id)?, id, seq, bytes)?;
        return decode_plain(seq, &plain);
    }
    let c = decode_plain(seq, bytes)?;
    let personal =
        c.customer.is_some() && !(c.operation == Operation::Erased && c.fields.is_empty());
    if encrypted && personal {
        return Err(crate::Error::corrupted(
            "history entry",
            format!("entry {seq} about a customer is not sealed in an encrypted store"),
        ));
    }
    Ok(c)
}

fn decode_plain(seq: u64, bytes: &[u8]) -> Result<Change> {
    if let Some((&INSERT_OF_RECORD, rest)) = bytes.split_first() {
        return decode_insert(seq, rest);
    }
    let s: StoredOwned = super::codec::decode(bytes, "history entry")?;
    Ok(Change {
        seq,
        at: s.at,
        actor: s.actor,
        customer: s.customer,
        operation: s.operation,
        fields: s.fields.into_iter().map(|f| f.0).collect(),
    })
}

/// Decodes the entry [`encode_insert`] made, without its first byte.
fn decode_insert(seq: u64, bytes: &[u8]) -> Result<Change> {
    let (head, record) = super::codec::decode_prefix::<InsertHead>(bytes, "history entry")?;
    let rec: Record = super::codec::decode(record, "history entry's record")?;
    if rec.id != head.customer {
        return Err(Error::corrupted(
            "history entry",
            format!("entry {seq} holds the record of another customer"),
        ));
    }
    Ok(Change {
        seq,
        at: head.at,
        actor: head.actor.map(Cow::into_owned),
        customer: Some(head.customer),
        operation: Operation::Insert,
        fields: inserted(&rec.customer)?,
    })
}

/// A customer as a flat map of field to value, empty values left out.
pub(crate) type Fields = BTreeMap<String, Value>;

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The fields of `c`.
pub(crate) fn fields(c: &Customer) -> Result<Fields> {
    let Value::Object(map) =
        serde_json::to_value(c).map_err(|e| Error::corrupted("customer", e))?
    else {
        return Err(Error::corrupted("customer", "not a JSON object"));
    };
    let mut out = Fields::new();
    for (k, v) in map {
        if k == "attributes" {
            if let Value::Object(attrs) = v {
                for (name, value) in attrs {
                    out.insert(format!("attributes.{name}"), value);
                }
            }
        } else if !is_empty(&v) {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// A customer as a flat map of field to its JSON text, empty values left out: what a write
/// compares and records.
pub(crate) type FieldTexts = BTreeMap<String, Json>;

fn is_empty_text(t: &str) -> bool {
    matches!(t, "null" | "[]" | "{}")
}

/// The fields of `c` as JSON text, made from one serialisation of the customer without
/// building a value tree (this runs on every insert and update).
pub(crate) fn field_texts(c: &Customer) -> Result<FieldTexts> {
    with_field_texts(c, |fields| {
        fields
            .into_iter()
            .map(|(k, v)| (k.into_owned(), Json(v.to_owned())))
            .collect()
    })
}

/// The field changes of inserting `c`: every field it has, from nothing
/// (`diff_texts(&FieldTexts::new(), &field_texts(c)?)`), made from one serialisation.
pub(crate) fn inserted(c: &Customer) -> Result<Vec<FieldChange>> {
    with_field_texts(c, |fields| {
        fields
            .into_iter()
            .map(|(field, text)| FieldChange {
                field,
                before: None,
                after: Some(Json(text.to_owned())),
            })
            .collect()
    })
}

/// [`inserted`] of `c` as its stored record holds it: the fields the history entry of its
/// insert reads back as ([`encode_insert`]), for subscribers, who must hear the change the feed
/// tells. The codec keeps instants to the microsecond, so a finer one in `c` (a consent given
/// at `Utc::now()`) would otherwise read differently.
pub(crate) fn inserted_as_stored(c: &Customer) -> Result<Vec<FieldChange>> {
    let stored: Customer = super::codec::decode(&super::codec::encode(c)?, "customer")?;
    inserted(&stored)
}

/// Calls `f` with the fields of `c` as JSON text, by name, in field order, leaving out empty
/// ones (attributes are fields of their own, `attributes.name`). The names of the customer's
/// own fields are borrowed: encoding an insert's fields allocates none.
fn with_field_texts<R>(
    c: &Customer,
    f: impl FnOnce(Vec<(Cow<'static, str>, &str)>) -> R,
) -> Result<R> {
    let bad = |e: serde_json::Error| Error::corrupted("customer", e);
    let mut fields = FieldCapture::default();
    c.serialize(&mut fields).map_err(bad)?;
    let mut out = Vec::with_capacity(fields.0.len());
    for (k, v) in &fields.0 {
        if *k == "attributes" {
            let attrs: BTreeMap<String, &RawValue> = serde_json::from_str(v).map_err(bad)?;
            for (name, value) in attrs {
                out.push((Cow::Owned(format!("attributes.{name}")), value.get()));
            }
        } else if !is_empty_text(v) {
            out.push((Cow::Borrowed(*k), v.as_str()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(f(out))
}

/// Serialises a struct as its fields' JSON texts, `(name, text)` each: what `serde_json` would
/// write for each field inside the struct's object, without writing the object and parsing
/// it back (which cost a third of describing an insert for the history). Anything but a
/// struct is refused.
#[derive(Default)]
struct FieldCapture(Vec<(&'static str, String)>);

impl serde::ser::SerializeStruct for &mut FieldCapture {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> std::result::Result<(), Self::Error> {
        self.0.push((key, serde_json::to_string(value)?));
        Ok(())
    }

    fn end(self) -> std::result::Result<(), Self::Error> {
        Ok(())
    }
}

/// What [`FieldCapture`] gives for anything but a struct.
fn not_a_struct() -> serde_json::Error {
    serde::ser::Error::custom("not a struct")
}

/// The methods of [`FieldCapture`]'s serializer for scalars: each refuses.
macro_rules! not_a_struct {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name(self, $(_: $arg),*) -> std::result::Result<(), Self::Error> {
            Err(not_a_struct())
        })*
    };
}

impl<'a> serde::Serializer for &'a mut FieldCapture {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = serde::ser::Impossible<(), Self::Error>;
    type SerializeTuple = serde::ser::Impossible<(), Self::Error>;
    type SerializeTupleStruct = serde::ser::Impossible<(), Self::Error>;
    type SerializeTupleVariant = serde::ser::Impossible<(), Self::Error>;
    type SerializeMap = serde::ser::Impossible<(), Self::Error>;
    type SerializeStruct = &'a mut FieldCapture;
    type SerializeStructVariant = serde::ser::Impossible<(), Self::Error>;

    not_a_struct! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> std::result::Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> std::result::Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> std::result::Result<(), Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_seq(
        self,
        _: Option<usize>,
    ) -> std::result::Result<Self::SerializeSeq, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple(self, _: usize) -> std::result::Result<Self::SerializeTuple, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleStruct, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeTupleVariant, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_map(
        self,
        _: Option<usize>,
    ) -> std::result::Result<Self::SerializeMap, Self::Error> {
        Err(not_a_struct())
    }

    fn serialize_struct(
        self,
        _: &'static str,
        fields: usize,
    ) -> std::result::Result<Self::SerializeStruct, Self::Error> {
        self.0.reserve(fields);
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> std::result::Result<Self::SerializeStructVariant, Self::Error> {
        Err(not_a_struct())
    }
}

/// The field changes from `old` to `new` (either may be empty), in field order.
pub(crate) fn diff_texts(old: &FieldTexts, new: &FieldTexts) -> Vec<FieldChange> {
    let mut out: Vec<FieldChange> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, v)| FieldChange {
            field: field_name(k),
            before: Some(v.clone()),
            after: new.get(k).cloned(),
        })
        .chain(
            new.iter()
                .filter(|(k, _)| !old.contains_key(*k))
                .map(|(k, v)| FieldChange {
                    field: field_name(k),
                    before: None,
                    after: Some(v.clone()),
                }),
        )
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// The field changes from `old` to `new` (either may be absent), in field order.
pub(crate) fn diff(old: &Fields, new: &Fields) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for (k, v) in old {
        match new.get(k) {
            Some(n) if n == v => {}
            n => out.push(FieldChange {
                field: field_name(k),
                before: Some(Json::from_value(v)),
                after: n.map(Json::from_value),
            }),
        }
    }
    for (k, v) in new {
        if !old.contains_key(k) {
            out.push(FieldChange {
                field: field_name(k),
                before: None,
                after: Some(Json::from_value(v)),
            });
        }
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

/// Rebuilds customer fields by replaying changes, oldest first. `None`: absent (not yet
/// inserted, or removed).
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub(crate) state: Option<Fields>,
}

impl Replay {
    pub(crate) fn apply(&mut self, c: &Change) -> Result<()> {
        match c.operation {
            Operation::Insert | Operation::Snapshot | Operation::Restored => {
                let mut state = Fields::new();
                for f in &c.fields {
                    if let Some(v) = &f.after {
                        state.insert(f.field.to_string(), v.to_value()?);
                    }
                }
                self.state = Some(state);
            }
            Operation::Update | Operation::Merged | Operation::Unmerged => {
                if let Some(state) = &mut self.state {
                    for f in &c.fields {
                        match &f.after {
                            Some(v) => state.insert(f.field.to_string(), v.to_value()?),
                            None => state.remove(f.field.as_ref()),
                        };
                    }
                }
            }
            Operation::Remove | Operation::MergedInto(_) | Operation::Erased => self.state = None,
            Operation::Anonymised => self.state = Some(Fields::new()),
            Operation::ActivityAdded(_)
            | Operation::ActivityCorrected(_)
            | Operation::ActivityRemoved(_)
            | Operation::AttributeDeclared => {}
        }
        Ok(())
    }

    /// The customer the fields describe.
    pub(crate) fn customer(&self) -> Result<Option<Customer>> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let mut map = Map::new();
        let mut attrs = Map::new();
        for (k, v) in state {
            match k.strip_prefix("attributes.") {
                Some(name) => attrs.insert(name.to_owned(), v.clone()),
                None => map.insert(k.clone(), v.clone()),
            };
        }
        // Fields left out as empty come back as their empty values.
        let Value::Object(base) = serde_json::to_value(Customer::default())
            .map_err(|e| Error::corrupted("history", e))?
        else {
            return Err(Error::corrupted("history", "not a JSON object"));
        };
        for (k, v) in base {
            map.entry(k).or_insert(v);
        }
        map.insert("attributes".to_owned(), Value::Object(attrs));
        serde_json::from_value(Value::Object(map))
            .map(Some)
            .map_err(|e| Error::corrupted("history", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttributeValue;

    fn change(seq: u64, operation: Operation, fields: Vec<FieldChange>) -> Change {
        Change {
            seq,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            actor: Some("test".into()),
            customer: Some(CustomerId::from_u64(1)),
            operation,
            fields,
        }
    }

    /// The fields' texts as the whole customer's JSON holds them, read back from it: what
    /// `FieldCapture` must equal.
    fn field_texts_by_parsing(c: &Customer) -> FieldTexts {
        let text = serde_json::to_string(c).unwrap();
        let map: BTreeMap<String, &RawValue> = serde_json::from_str(&text).unwrap();
        let mut out = FieldTexts::new();
        for (k, v) in map {
            if k == "attributes" {
                let attrs: BTreeMap<String, &RawValue> = serde_json::from_str(v.get()).unwrap();
                for (name, value) in attrs {
                    out.insert(format!("attributes.{name}"), Json(value.get().to_owned()));
                }
            } else if !is_empty_text(v.get()) {
                out.insert(k, Json(v.get().to_owned()));
            }
        }
        out
    }

    #[test]
    fn captured_field_texts_are_those_of_the_whole_json() {
        let mut people = people();
        people.push(
            Customer::builder()
                .name("Zoë \"Quote\" O'Brien")
                .attribute("n", AttributeValue::Integer(-3))
                .build()
                .unwrap(),
        );
        for c in &people {
            assert_eq!(field_texts(c).unwrap(), field_texts_by_parsing(c));
        }
        let mut not_a_struct = FieldCapture::default();
        assert!(42u8.serialize(&mut not_a_struct).is_err());
    }

    /// Sample customers, and some whose fields need care: escapes, attributes (fields of their
    /// own, sorted among the others), empty values, and no fields at all.
    fn people() -> Vec<Customer> {
        let mut people: Vec<Customer> = crate::sample::generate(5, 40)
            .iter()
            .map(|s| s.to_builder().build().unwrap())
            .collect();
        people.push(
            Customer::builder()
                .name("Ada \"the Countess\" Lovelace")
                .attribute("tier", AttributeValue::Text("gold \u{1F600}".into()))
                .attribute("b_2", AttributeValue::Integer(3))
                .attribute("zz", AttributeValue::TextList(vec![]))
                .build()
                .unwrap(),
        );
        people.push(Customer::builder().build().unwrap());
        people
    }

    fn record(id: u64, customer: Customer) -> Record {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Record {
            id: CustomerId::from_u64(id),
            created_at: at,
            updated_at: at,
            revision: 1,
            customer,
        }
    }

    #[test]
    fn inserted_is_every_field_from_nothing() {
        for c in &people() {
            let made = diff_texts(&FieldTexts::new(), &field_texts(c).unwrap());
            assert_eq!(inserted(c).unwrap(), made);
        }
    }

    #[test]
    fn an_insert_holding_its_record_reads_back_with_its_fields() {
        for (i, c) in people().into_iter().enumerate() {
            let fields = inserted(&c).unwrap();
            let rec = record(1, c);
            let held = encode_insert(
                &change(7, Operation::Insert, Vec::new()),
                &crate::store::codec::encode(&rec).unwrap(),
            )
            .unwrap();
            let whole = change(7, Operation::Insert, fields);
            assert_eq!(decode(7, &held, false, &|_| unreachable!()).unwrap(), whole);
            if i < 40 {
                // The point of the form: a sample customer's entry is well under the size of
                // its fields as JSON texts.
                let as_fields = encode(&whole).unwrap().len();
                assert!(
                    held.len() * 3 < as_fields * 2,
                    "{} vs {as_fields}",
                    held.len()
                );
            }
            // Fields made for subscribers are not stored.
            let with_fields = encode_insert(&whole, &crate::store::codec::encode(&rec).unwrap());
            assert_eq!(with_fields.unwrap(), held);
        }
        let mut anonymous = change(7, Operation::Insert, Vec::new());
        anonymous.actor = None;
        let rec = crate::store::codec::encode(&record(1, Customer::default())).unwrap();
        let held = encode_insert(&anonymous, &rec).unwrap();
        assert_eq!(
            decode(7, &held, false, &|_| unreachable!()).unwrap(),
            anonymous
        );
    }

    #[test]
    fn only_an_insert_holds_a_record() {
        let rec = crate::store::codec::encode(&record(1, Customer::default())).unwrap();
        assert!(encode_insert(&change(7, Operation::Update, Vec::new()), &rec).is_err());
        let mut schema = change(7, Operation::Insert, Vec::new());
        schema.customer = None;
        assert!(encode_insert(&schema, &rec).is_err());
    }

    #[test]
    fn a_damaged_insert_holding_its_record_is_an_error() {
        let corrupted = |bytes: &[u8]| {
            matches!(
                decode(7, bytes, false, &|_| unreachable!())
                    .unwrap_err()
                    .kind(),
                crate::ErrorKind::Corrupted { .. }
            )
        };
        let c = people().swap_remove(0);
        let held = |id: u64| {
            encode_insert(
                &change(7, Operation::Insert, Vec::new()),
                &crate::store::codec::encode(&record(id, c.clone())).unwrap(),
            )
            .unwrap()
        };
        // Customer 1's entry holding customer 2's record.
        assert!(corrupted(&held(2)));
        let good = held(1);
        for cut in [1, 3, good.len() / 2, good.len() - 1] {
            assert!(corrupted(&good[..cut]), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(corrupted(&longer));
        // A record of an unknown format version.
        let mut other_version = good;
        let at = other_version.len() - crate::store::codec::encode(&record(1, c)).unwrap().len();
        other_version[at] = 9;
        assert!(matches!(
            decode(7, &other_version, false, &|_| unreachable!())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::FormatVersion { found: 9, .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_insert_entries_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            let mut entry = vec![INSERT_OF_RECORD];
            entry.extend(bytes);
            let _ = decode(7, &entry, false, &|_| unreachable!());
        }
    }

    #[test]
    fn replay_of_the_diffs_gives_back_every_version() {
        let v1 = Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com")
            .phone("+442079460018")
            .tag("vip")
            .birth_date(chrono::NaiveDate::from_ymd_opt(1815, 12, 10).unwrap())
            .build()
            .unwrap();
        let mut v2 = v1.clone();
        v2.tags.clear();
        v2.emails
            .push(crate::Email::parse("ada@analytical.org").unwrap());
        v2.attributes
            .insert("score".into(), AttributeValue::Integer(7));
        let f0 = Fields::new();
        let f1 = fields(&v1).unwrap();
        let f2 = fields(&v2).unwrap();
        let d1 = diff(&f0, &f1);
        assert!(d1.iter().all(|f| f.before.is_none()));
        assert!(!d1.iter().any(|f| f.field == "tags" && f.after.is_none()));
        let d2 = diff(&f1, &f2);
        let names: Vec<&str> = d2.iter().map(|f| f.field.as_ref()).collect();
        assert_eq!(names, ["attributes.score", "emails", "tags"]);
        let mut r = Replay::default();
        r.apply(&change(1, Operation::Insert, d1)).unwrap();
        assert_eq!(r.customer().unwrap(), Some(v1));
        r.apply(&change(2, Operation::Update, d2)).unwrap();
        assert_eq!(r.customer().unwrap(), Some(v2));
        r.apply(&change(3, Operation::Remove, vec![])).unwrap();
        assert_eq!(r.customer().unwrap(), None);
    }

    #[test]
    fn text_fields_agree_with_value_fields() {
        let mut c = Customer::builder()
            .name("Zoë O'Brien")
            .email("zoe@example.com")
            .phone("+442079460018")
            .tag("vip")
            .build()
            .unwrap();
        c.attributes
            .insert("score".into(), AttributeValue::Integer(7));
        let texts = field_texts(&c).unwrap();
        let values = fields(&c).unwrap();
        assert_eq!(texts.len(), values.len());
        for (k, v) in &values {
            assert_eq!(texts[k].to_value().unwrap(), *v, "{k}");
        }
        assert_eq!(
            diff_texts(&FieldTexts::new(), &texts),
            diff(&Fields::new(), &values)
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let c = change(
            9,
            Operation::ActivityAdded(ActivityId::from_u64(4)),
            vec![FieldChange {
                field: "activity".into(),
                before: None,
                after: Some(Json::from_value(&serde_json::json!({"a": [1, "x"]}))),
            }],
        );
        let no_keys = |_| {
            Err(crate::Error::new(crate::ErrorKind::Key(
                crate::KeyProblem::Missing,
            )))
        };
        assert_eq!(decode(9, &encode(&c).unwrap(), false, &no_keys).unwrap(), c);
        assert!(decode(9, &[1, 0xFF, 0xFF], false, &no_keys).is_err());
    }
}
