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
    let (value, rest) = decode_prefix(bytes, what)?;
    if !rest.is_empty() {
        return Err(Error::corrupted(what, "trailing bytes after the value"));
    }
    Ok(value)
}

/// Decodes a value written by [`encode`] at the start of `bytes`, which go on after it:
/// the value and the bytes after it.
pub(crate) fn decode_prefix<'a, T: DeserializeOwned>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(T, &'a [u8])> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::corrupted(what, "empty value"));
    };
    if version != FORMAT_VERSION {
        return Err(Error::new(ErrorKind::FormatVersion {
            found: version,
            supported: FORMAT_VERSION,
        }));
    }
    postcard::take_from_bytes(body).map_err(|e| Error::corrupted(what, e))
}

/// `bytes`, a [`Record`](crate::model::Record) [`encode`]d with id 0, as [`encode`] makes it
/// with id `id`. A record's encoding is the version byte, its id (the first field, a postcard
/// varint: 0 is the one byte 0) and the rest, so this is a splice, not a second encoding: a
/// bulk insert encodes its records on other threads before the ids are handed out.
pub(crate) fn with_record_id(bytes: &[u8], id: u64) -> Result<Vec<u8>> {
    let [version, 0, rest @ ..] = bytes else {
        return Err(Error::corrupted(
            "record (while encoding)",
            "not encoded with id 0",
        ));
    };
    let mut out = Vec::with_capacity(bytes.len() + 9);
    out.push(*version);
    let mut out = postcard::to_extend(&id, out)
        .map_err(|e| Error::corrupted("record (while encoding)", e))?;
    out.extend_from_slice(rest);
    Ok(out)
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

    #[test]
    fn a_record_stamped_with_its_id_is_the_record_encoded_with_it() {
        let c = Customer::builder()
            .name("Grace Hopper")
            .email("grace@navy.example.mil")
            .build()
            .unwrap();
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let rec = |id| Record {
            id: crate::CustomerId::from_u64(id),
            created_at: t,
            updated_at: t,
            revision: 1,
            customer: c.clone(),
        };
        let unstamped = encode(&rec(0)).unwrap();
        // Every varint length, its edges included.
        for id in [0, 1, 127, 128, 16_383, 16_384, 1 << 35, u64::MAX] {
            assert_eq!(
                with_record_id(&unstamped, id).unwrap(),
                encode(&rec(id)).unwrap(),
                "id {id}"
            );
        }
        let stamped = encode(&rec(5)).unwrap();
        assert!(with_record_id(&stamped, 6).is_err());
        assert!(with_record_id(&[], 6).is_err());
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
