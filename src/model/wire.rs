//! Serde adapters that keep the stored form compact and the exported form readable.
//!
//! Each adapter asks the serializer whether it is human readable: JSON export gets RFC 3339
//! timestamps, ISO dates and decimal strings; the postcard codec gets integers and fixed bytes.
//! postcard is not self-describing, so none of these may call `deserialize_any`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `DateTime<Utc>` as microseconds since the Unix epoch (binary) or RFC 3339 (readable).
pub(crate) mod timestamp {
    use super::{DateTime, Deserialize, Deserializer, Serialize, Serializer, Utc};
    use serde::de::Error as _;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .serialize(s)
        } else {
            t.timestamp_micros().serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(D::Error::custom)
        } else {
            let micros = i64::deserialize(d)?;
            DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| D::Error::custom("timestamp out of range"))
        }
    }
}

/// `NaiveDate` as days from 0001-01-01 (binary) or `YYYY-MM-DD` (readable).
pub(crate) mod date {
    use super::{Deserialize, Deserializer, NaiveDate, Serialize, Serializer};
    use serde::de::Error as _;

    #[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` hands us `&T`
    pub(crate) fn serialize<S: Serializer>(d: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            d.format("%Y-%m-%d").to_string().serialize(s)
        } else {
            chrono::Datelike::num_days_from_ce(d).serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(D::Error::custom)
        } else {
            let days = i32::deserialize(d)?;
            NaiveDate::from_num_days_from_ce_opt(days)
                .ok_or_else(|| D::Error::custom("date out of range"))
        }
    }
}

/// `Option<NaiveDate>` through [`date`].
pub(crate) mod opt_date {
    use super::{Deserialize, Deserializer, NaiveDate, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wrap(#[serde(with = "super::date")] NaiveDate);

    #[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)] // serde's `with` hands us `&T`
    pub(crate) fn serialize<S: Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        d.map(Wrap).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<NaiveDate>, D::Error> {
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// `Option<DateTime<Utc>>` through [`timestamp`].
pub(crate) mod opt_timestamp {
    use super::{DateTime, Deserialize, Deserializer, Serialize, Serializer, Utc};

    #[derive(Serialize, Deserialize)]
    struct Wrap(#[serde(with = "super::timestamp")] DateTime<Utc>);

    #[allow(clippy::ref_option)] // serde's `with` hands us `&T`
    pub(crate) fn serialize<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        t.map(Wrap).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// `rust_decimal::Decimal` as its 16-byte form (binary) or a decimal string (readable).
pub(crate) mod decimal {
    use super::{Deserialize, Deserializer, Serialize, Serializer};
    use rust_decimal::Decimal;
    use serde::de::Error as _;

    pub(crate) fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.to_string().serialize(s)
        } else {
            v.serialize().serialize(s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let bytes = <[u8; 16]>::deserialize(d)?;
            // `Decimal::deserialize` accepts any bytes but a scale over 28 breaks its invariants.
            if bytes[2] > 28 {
                return Err(D::Error::custom("decimal scale out of range"));
            }
            Ok(Decimal::deserialize(bytes))
        }
    }
}

/// Whether a value is empty, so that its field can be left out of the readable form.
pub(crate) trait IsEmpty {
    fn is_empty_value(&self) -> bool;
}

impl<T> IsEmpty for Option<T> {
    fn is_empty_value(&self) -> bool {
        self.is_none()
    }
}

impl<T> IsEmpty for Vec<T> {
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

impl<K, V> IsEmpty for std::collections::BTreeMap<K, V> {
    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

/// A timestamp serialised through [`timestamp`], for hand-written `Serialize` impls.
pub(crate) struct Timestamp<'a>(pub(crate) &'a DateTime<Utc>);

impl Serialize for Timestamp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        timestamp::serialize(self.0, s)
    }
}

/// Implements `Serialize` for a struct whose readable form (JSON: exports, history, the change
/// feed) leaves out empty optional fields, while the binary form keeps every field in its place,
/// since postcard is positional. Fields are listed in declaration order, each marked `req`
/// (always written), `opt` (left out of the readable form when empty; the field must carry
/// `#[serde(default)]`) or `ts` (a timestamp, through [`timestamp`]).
macro_rules! serialize_skipping_empty {
    ($ty:ident { $($mark:ident $field:ident),* $(,)? }) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct as _;
                #[allow(unused_imports)]
                use $crate::model::wire::IsEmpty as _;
                let readable = s.is_human_readable();
                let mut len = 0;
                $( if !$crate::model::wire::serialize_skipping_empty!(@skip $mark, readable, self.$field) { len += 1; } )*
                let mut st = s.serialize_struct(stringify!($ty), len)?;
                $(
                    if $crate::model::wire::serialize_skipping_empty!(@skip $mark, readable, self.$field) {
                        st.skip_field(stringify!($field))?;
                    } else {
                        $crate::model::wire::serialize_skipping_empty!(@put $mark, st, stringify!($field), self.$field);
                    }
                )*
                st.end()
            }
        }
    };
    (@skip opt, $readable:ident, $v:expr) => { $readable && $v.is_empty_value() };
    (@skip $other:ident, $readable:ident, $v:expr) => { false };
    (@put ts, $st:ident, $name:expr, $v:expr) => {
        $st.serialize_field($name, &$crate::model::wire::Timestamp(&$v))?
    };
    (@put $other:ident, $st:ident, $name:expr, $v:expr) => { $st.serialize_field($name, &$v)? };
}
pub(crate) use serialize_skipping_empty;
