//! The on-disk encoding of values: one format-version byte, then postcard.
//!
//! Every stored value goes through [`encode`] and [`decode`], so changing the encoding is a
//! change to this module and [`FORMAT_VERSION`] alone. postcard's wire format is specified and
//! stable across its 1.x releases. Decoding never panics: an unknown version is
//! [`ErrorKind::FormatVersion`], anything else that does not decode is [`ErrorKind::Corrupted`].

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// The version of the record encoding this build reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` behind the version byte.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_extend(value, vec![FORMAT_VERSION])
        .map_err(|e| Error::corrupted("value (while encoding)", e))
}

/// Decodes bytes written by [`encode`]. `what` names the value for the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::corrupted(what, "empty value"));
    };
    if version != FORMAT_VERSION {
        return Err(Error::new(ErrorKind::FormatVersion {
            found: version,
            supported: FORMAT_VERSION,
        }));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| Error::corrupted(what, e))?;
    if !rest.is_empty() {
        return Err(Error::corrupted(what, "trailing bytes after the value"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Customer, Record};
    use proptest::prelude::*;

    #[test]
    fn unknown_version_is_a_format_version_error() {
        let mut bytes = encode(&42u32).unwrap();
        bytes[0] = 9;
        let e = decode::<u32>(&bytes, "test").unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::FormatVersion {
                found: 9,
                supported: FORMAT_VERSION
            }
        );
    }

    #[test]
    fn empty_and_trailing_bytes_are_corruption() {
        assert!(matches!(
            decode::<u32>(&[], "t").unwrap_err().kind(),
            ErrorKind::Corrupted { .. }
        ));
        let mut bytes = encode(&1u32).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes, "t").unwrap_err().kind(),
            ErrorKind::Corrupted { .. }
        ));
    }

    #[test]
    fn record_roundtrips() {
        let c = Customer::builder()
            .name("Grace Hopper")
            .email("grace@navy.example.mil")
            .tag("pioneer")
            .build()
            .unwrap();
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 123_000).unwrap();
        let rec = Record {
            id: crate::CustomerId::from_u64(1),
            created_at: t,
            updated_at: t,
            revision: 1,
            customer: c,
        };
        let bytes = encode(&rec).unwrap();
        assert_eq!(decode::<Record>(&bytes, "record").unwrap(), rec);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = bytes;
            if let Some(first) = b.first_mut() { *first = FORMAT_VERSION; }
            let _ = decode::<Record>(&b, "record");
        }
    }
}
